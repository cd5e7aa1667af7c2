//! The virtio-net driver of rtedge: one virtio core (split virtqueues, feature
//! negotiation, the `virtio_net_hdr`) on two transports — modern PCI (QEMU
//! `q35` with `virtio-net-pci`, uhyve 0.10) and virtio-mmio version 2 and
//! legacy version 1 (QEMU `microvm`) — exposed to the network stack as a
//! [`smoltcp::phy::Device`]. It knows nothing of the kernel: the kernel hands
//! it DMA memory and MMIO mappings through [`Hal`] and PCI configuration
//! access through [`PciConfig`].
//!
//! What it must never do: allocate or block in the interrupt, receive or
//! transmit paths (all rings and buffers are allocated once, in
//! [`VirtioNet::new`]); and never trust a length, index or ring position that
//! the device wrote — every one is bounds-checked against what the driver
//! itself posted, so a buggy or hostile device costs a counted error
//! ([`NetStats::rx_errors`], [`NetStats::tx_errors`]), never a panic or an
//! out-of-bounds access.
//!
//! Discovery: for PCI, [`pci::find_net_devices`] walks the configuration
//! space and [`PciTransport::new`] maps the virtio capabilities; for MMIO,
//! [`parse_mmio_devices`] reads the `virtio_mmio.device=` items of the kernel
//! command line and [`MmioTransport::new`] checks the register block. Either
//! transport goes into [`VirtioNet::new`].
//!
//! ```text
//! // QEMU microvm: the command line names the devices and their IRQs.
//! for info in parse_mmio_devices(cmdline) {
//!     let transport = unsafe { MmioTransport::map::<KernelHal>(&info) }?; // IRQ: info.irq
//!     let net = VirtioNet::<_, KernelHal>::new(transport)?;
//! }
//! // q35 / uhyve: PCI, INTx line and pin from configuration space.
//! let function = pci::find_net_devices(&PortConfig).next().ok_or(VirtioError::NotFound)?;
//! let transport = unsafe { PciTransport::new::<_, KernelHal>(&PortConfig, &function) }?;
//! let net = VirtioNet::<_, KernelHal>::new(transport)?; // IRQ: function.interrupt_line
//! ```

#![cfg_attr(not(test), no_std)]

extern crate alloc;

mod dma;
mod error;
mod hal;
mod io;
pub mod mmio;
mod net;
pub mod pci;
mod queue;
mod transport;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use error::{Result, VirtioError};
pub use hal::{Hal, PAGE_SIZE};
pub use mmio::{MmioDeviceInfo, MmioTransport, MmioVersion, parse_mmio_devices};
pub use net::{MAX_FRAME_LEN, NetConfig, NetStats, VirtioNet, VirtioNetRxToken, VirtioNetTxToken};
pub use pci::{PciAddress, PciConfig, PciFunction, PciTransport};
pub use transport::{InterruptAck, InterruptStatus, QueueLayout, Transport, status};
