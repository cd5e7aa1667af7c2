//! What the virtio core needs from a transport (PCI or MMIO).

use crate::error::Result;
use crate::io::Registers;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    /// The driver has noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The driver knows how to drive the device.
    pub const DRIVER: u8 = 2;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete (modern devices only).
    pub const FEATURES_OK: u8 = 8;
    /// The device has hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 128;
}

/// Feature bits the driver knows about (virtio 1.2, 5.1.3 and 6).
pub(crate) mod feature {
    /// The device has a MAC address in its configuration space.
    pub(crate) const NET_MAC: u64 = 1 << 5;
    /// The configuration space has a link status field.
    pub(crate) const NET_STATUS: u64 = 1 << 16;
    /// Legacy: the device accepts any descriptor layout (header and frame in
    /// one descriptor).
    pub(crate) const ANY_LAYOUT: u64 = 1 << 27;
    /// The device is a modern (virtio 1.x) device.
    pub(crate) const VERSION_1: u64 = 1 << 32;
    /// The device goes through the platform's DMA translation; rtedge gives
    /// it bus (physical) addresses, which is what that means without an IOMMU.
    pub(crate) const ACCESS_PLATFORM: u64 = 1 << 33;
}

/// The device-visible addresses of one split virtqueue, laid out as legacy
/// devices require (descriptor table, available ring right after it, used
/// ring at the next [`QueueLayout::LEGACY_ALIGN`] boundary), which modern
/// devices accept too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLayout {
    /// Number of descriptors (a power of two).
    pub size: u16,
    /// Descriptor table.
    pub desc: u64,
    /// Available (driver) ring.
    pub avail: u64,
    /// Used (device) ring.
    pub used: u64,
}

impl QueueLayout {
    /// Alignment of the used ring in the legacy layout.
    pub const LEGACY_ALIGN: usize = 4096;

    /// Byte offsets of the available and used rings from the descriptor
    /// table, and the total size, for `size` descriptors.
    pub(crate) fn offsets(size: u16) -> (usize, usize, usize) {
        let n = usize::from(size);
        let avail = 16 * n;
        let avail_end = avail + 6 + 2 * n;
        let used = avail_end.next_multiple_of(Self::LEGACY_ALIGN);
        let used_end = used + 6 + 8 * n;
        (avail, used, used_end.next_multiple_of(Self::LEGACY_ALIGN))
    }
}

/// Pending interrupt causes, read (and acknowledged) from the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterruptStatus(pub u8);

impl InterruptStatus {
    /// A virtqueue has new used buffers.
    pub fn queue(self) -> bool {
        self.0 & 1 != 0
    }

    /// The device configuration changed (e.g. link status).
    pub fn config(self) -> bool {
        self.0 & 2 != 0
    }

    /// Anything pending at all.
    pub fn any(self) -> bool {
        self.0 != 0
    }
}

/// The interrupt-acknowledge register(s) of one device, detached from the
/// driver so that a top half can acknowledge the device without taking the
/// lock that guards the [`crate::VirtioNet`] (which a bottom half on the same
/// CPU may hold when the interrupt arrives).
///
/// It only reads the ISR (PCI) or reads `InterruptStatus` and writes
/// `InterruptACK` (MMIO), which is safe to do concurrently with the
/// driver's other register accesses. Valid while the transport's mapping
/// is (see the transports' `new`).
#[derive(Clone, Copy, Debug)]
pub struct InterruptAck {
    kind: AckKind,
}

#[derive(Clone, Copy, Debug)]
enum AckKind {
    /// The PCI ISR byte: reading it acknowledges.
    PciIsr(Registers),
    /// The virtio-mmio register block.
    Mmio(Registers),
}

/// virtio-mmio `InterruptStatus` and `InterruptACK`.
const MMIO_INTERRUPT_STATUS: usize = 0x060;
const MMIO_INTERRUPT_ACK: usize = 0x064;

impl InterruptAck {
    pub(crate) fn pci_isr(isr: Registers) -> Self {
        Self { kind: AckKind::PciIsr(isr) }
    }

    pub(crate) fn mmio(registers: Registers) -> Self {
        Self { kind: AckKind::Mmio(registers) }
    }

    /// Reads and acknowledges the pending causes; no allocation, no lock.
    pub fn ack(&self) -> InterruptStatus {
        match self.kind {
            AckKind::PciIsr(isr) => InterruptStatus(isr.read8(0) & 0b11),
            AckKind::Mmio(registers) => {
                let pending = registers.read32(MMIO_INTERRUPT_STATUS);
                if pending != 0 {
                    registers.write32(MMIO_INTERRUPT_ACK, pending);
                }
                InterruptStatus((pending & 0b11) as u8)
            }
        }
    }
}

// SAFETY: the handle only performs single volatile register accesses that
// the device accepts from any CPU at any time (ISR read; status read and
// acknowledge write), so sharing it between CPUs is sound.
unsafe impl Sync for InterruptAck {}

/// A virtio transport: how the core reaches the device's registers.
///
/// Implemented by [`crate::PciTransport`] and [`crate::MmioTransport`]. The
/// methods follow the initialisation sequence of virtio 1.2, 3.1.1.
pub trait Transport {
    /// Whether the device runs the legacy (pre-1.0) interface. Decides the
    /// status sequence (no `FEATURES_OK`) and the `virtio_net_hdr` length.
    fn is_legacy(&self) -> bool;

    /// Resets the device (status 0) and waits for the reset to complete.
    fn reset(&mut self);

    /// Reads the device status.
    fn status(&self) -> u8;

    /// Writes the device status.
    fn set_status(&mut self, status: u8);

    /// The feature bits the device offers (legacy devices: the low 32).
    fn device_features(&mut self) -> u64;

    /// Writes the feature bits the driver accepts.
    fn set_driver_features(&mut self, features: u64);

    /// Maximum size of virtqueue `queue`; 0 if the queue does not exist or
    /// is already in use.
    fn max_queue_size(&mut self, queue: u16) -> u16;

    /// Hands virtqueue `queue` to the device and enables it.
    fn setup_queue(&mut self, queue: u16, layout: &QueueLayout) -> Result<()>;

    /// Tells the device that virtqueue `queue` has new available buffers.
    fn notify(&self, queue: u16);

    /// The interrupt-acknowledge handle of this device.
    fn interrupt_ack(&self) -> InterruptAck;

    /// Reads and acknowledges the interrupt status. Must not allocate.
    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.interrupt_ack().ack()
    }

    /// Reads one byte of the device-specific configuration space; 0xff if
    /// `offset` lies outside it.
    fn read_config_u8(&self, offset: usize) -> u8;

    /// The configuration generation counter (0 for legacy devices).
    fn config_generation(&self) -> u32;
}
