//! The modern (virtio 1.x) PCI transport and PCI discovery.
//!
//! Works the same on QEMU `q35` (`virtio-net-pci`, capabilities in a 64-bit
//! BAR 4) and uhyve 0.10 (one function at 00:00.0 whose configuration space,
//! capabilities and registers all sit in a 64-bit BAR 0 at 0xfe00_0000).
//! Two uhyve habits shape the code: its PCI status register holds the
//! *virtio* device status, so the capability-list bit is not trusted and the
//! capability pointer is followed whenever it is plausible; and some of its
//! registers accept only their natural width, so every register is accessed
//! with exactly its width and 64-bit queue addresses as two 32-bit halves.

use crate::error::{Result, VirtioError};
use crate::hal::Hal;
use crate::io::Registers;
use crate::transport::{InterruptAck, QueueLayout, Transport};

/// Access to PCI configuration space, implemented by the kernel (ports
/// 0xcf8/0xcfc on QEMU and uhyve, or ECAM).
///
/// Offsets are byte offsets into the function's configuration space and are
/// always multiples of 4 here. A function that does not exist reads as all
/// ones.
pub trait PciConfig {
    /// Reads the 32-bit register at `offset`.
    fn read32(&self, bus: u8, device: u8, function: u8, offset: u16) -> u32;
    /// Writes the 32-bit register at `offset`.
    fn write32(&self, bus: u8, device: u8, function: u8, offset: u16, value: u32);
}

/// A PCI bus/device/function triple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PciAddress {
    /// Bus number, 0..=255.
    pub bus: u8,
    /// Device (slot) number, 0..32.
    pub device: u8,
    /// Function number, 0..8.
    pub function: u8,
}

impl PciAddress {
    fn read32<C: PciConfig + ?Sized>(self, config: &C, offset: u16) -> u32 {
        config.read32(self.bus, self.device, self.function, offset)
    }

    fn write32<C: PciConfig + ?Sized>(self, config: &C, offset: u16, value: u32) {
        config.write32(self.bus, self.device, self.function, offset, value);
    }

    fn read8<C: PciConfig + ?Sized>(self, config: &C, offset: u8) -> u8 {
        let word = self.read32(config, u16::from(offset & !3));
        (word >> (8 * (offset & 3))) as u8
    }
}

/// A virtio network function found by [`find_net_devices`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciFunction {
    /// Where it sits.
    pub address: PciAddress,
    /// Always [`VIRTIO_VENDOR_ID`].
    pub vendor_id: u16,
    /// [`DEVICE_ID_NET_MODERN`] or [`DEVICE_ID_NET_TRANSITIONAL`].
    pub device_id: u16,
    /// The interrupt line register (offset 0x3c) as firmware or the
    /// hypervisor left it: the legacy PIC/IOAPIC input that INTx is wired to
    /// (uhyve: 11; 0xff or 0 when nobody filled it in).
    pub interrupt_line: u8,
    /// The interrupt pin register (offset 0x3d): 0 none, 1 INTA# .. 4 INTD#.
    pub interrupt_pin: u8,
}

/// The PCI vendor id of virtio devices.
pub const VIRTIO_VENDOR_ID: u16 = 0x1af4;
/// Device id of a modern-only virtio network card (0x1040 + 1).
pub const DEVICE_ID_NET_MODERN: u16 = 0x1041;
/// Device id of a transitional (legacy + modern) virtio network card.
pub const DEVICE_ID_NET_TRANSITIONAL: u16 = 0x1000;

mod config_reg {
    pub(super) const ID: u16 = 0x00;
    pub(super) const COMMAND: u16 = 0x04;
    pub(super) const HEADER_TYPE: u16 = 0x0c;
    pub(super) const BAR0: u16 = 0x10;
    /// Type 1 (bridge) header: primary, secondary, subordinate bus.
    pub(super) const BRIDGE_BUSES: u16 = 0x18;
    pub(super) const CAPABILITIES: u8 = 0x34;
    pub(super) const INTERRUPT: u16 = 0x3c;

    pub(super) const COMMAND_MEMORY: u32 = 1 << 1;
    pub(super) const COMMAND_BUS_MASTER: u32 = 1 << 2;
    pub(super) const COMMAND_INTX_DISABLE: u32 = 1 << 10;
    pub(super) const CAP_ID_VENDOR: u8 = 0x09;
}

/// Every virtio network function reachable from bus 0, in bus order.
///
/// Buses are scanned as the topology says they exist: bus 0, then the bus
/// ranges behind each PCI-to-PCI bridge found (a bridge firmware has not
/// numbered is skipped). This stops early on flat machines (q35 with
/// devices on `pcie.0`, uhyve) and avoids uhyve's aliasing of function 0 of
/// device 0 onto other bus and function numbers; functions 1..8 are probed
/// only on multi-function devices.
pub fn find_net_devices<C: PciConfig + ?Sized>(config: &C) -> impl Iterator<Item = PciFunction> + '_ {
    PciScan::new(config).filter_map(|(address, id)| {
        let vendor_id = id as u16;
        let device_id = (id >> 16) as u16;
        let is_net = vendor_id == VIRTIO_VENDOR_ID && matches!(device_id, DEVICE_ID_NET_MODERN | DEVICE_ID_NET_TRANSITIONAL);
        is_net.then(|| {
            let interrupt = address.read32(config, config_reg::INTERRUPT);
            PciFunction { address, vendor_id, device_id, interrupt_line: interrupt as u8, interrupt_pin: (interrupt >> 8) as u8 }
        })
    })
}

/// Walks present functions, yielding each with its id register.
struct PciScan<'a, C: PciConfig + ?Sized> {
    config: &'a C,
    /// Buses still to scan (bit per bus).
    pending: [u64; 4],
    bus: u8,
    device: u8,
    function: u8,
    multi_function: bool,
    done: bool,
}

impl<'a, C: PciConfig + ?Sized> PciScan<'a, C> {
    fn new(config: &'a C) -> Self {
        Self { config, pending: [1, 0, 0, 0], bus: 0, device: 0, function: 0, multi_function: false, done: false }
    }

    fn mark_bus(&mut self, bus: u8) {
        self.pending[usize::from(bus / 64)] |= 1 << (bus % 64);
    }

    fn is_pending(&self, bus: u8) -> bool {
        self.pending[usize::from(bus / 64)] & (1 << (bus % 64)) != 0
    }

    /// Moves to the next function to probe; false when the scan is over.
    fn advance(&mut self) -> bool {
        if self.multi_function && self.function < 7 {
            self.function += 1;
            return true;
        }
        self.function = 0;
        self.multi_function = false;
        if self.device < 31 {
            self.device += 1;
            return true;
        }
        self.device = 0;
        loop {
            if self.bus == u8::MAX {
                return false;
            }
            self.bus += 1;
            if self.is_pending(self.bus) {
                return true;
            }
        }
    }
}

impl<C: PciConfig + ?Sized> Iterator for PciScan<'_, C> {
    type Item = (PciAddress, u32);

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let address = PciAddress { bus: self.bus, device: self.device, function: self.function };
            let id = address.read32(self.config, config_reg::ID);
            let present = !matches!(id as u16, 0xffff | 0x0000);
            let mut found = None;
            if present {
                let header_type = (address.read32(self.config, config_reg::HEADER_TYPE) >> 16) as u8;
                if self.function == 0 {
                    self.multi_function = header_type & 0x80 != 0;
                }
                if header_type & 0x7f == 1 {
                    let buses = address.read32(self.config, config_reg::BRIDGE_BUSES);
                    let secondary = (buses >> 8) as u8;
                    let subordinate = (buses >> 16) as u8;
                    // Only buses above this one: a bridge that firmware left
                    // unnumbered (0) or that loops back is ignored.
                    if secondary > self.bus {
                        for bus in secondary..=subordinate.max(secondary) {
                            self.mark_bus(bus);
                        }
                    }
                }
                found = Some((address, id));
            } else if self.function == 0 {
                self.multi_function = false;
            }
            if !self.advance() {
                self.done = true;
            }
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

/// Offsets in the common configuration structure (virtio 1.2, 4.1.4.3).
mod common {
    pub(super) const DEVICE_FEATURE_SELECT: usize = 0x00;
    pub(super) const DEVICE_FEATURE: usize = 0x04;
    pub(super) const DRIVER_FEATURE_SELECT: usize = 0x08;
    pub(super) const DRIVER_FEATURE: usize = 0x0c;
    pub(super) const DEVICE_STATUS: usize = 0x14;
    pub(super) const CONFIG_GENERATION: usize = 0x15;
    pub(super) const QUEUE_SELECT: usize = 0x16;
    pub(super) const QUEUE_SIZE: usize = 0x18;
    pub(super) const QUEUE_ENABLE: usize = 0x1c;
    pub(super) const QUEUE_NOTIFY_OFF: usize = 0x1e;
    pub(super) const QUEUE_DESC: usize = 0x20;
    pub(super) const QUEUE_DRIVER: usize = 0x28;
    pub(super) const QUEUE_DEVICE: usize = 0x30;
    /// Size of the structure up to and including `queue_device`.
    pub(super) const MIN_LEN: u32 = 0x38;
}

/// Virtio PCI capability types (virtio 1.2, 4.1.4).
mod cfg_type {
    pub(super) const COMMON: u8 = 1;
    pub(super) const NOTIFY: u8 = 2;
    pub(super) const ISR: u8 = 3;
    pub(super) const DEVICE: u8 = 4;
}

/// One virtio vendor capability: a window `offset..offset + length` in BAR `bar`.
#[derive(Clone, Copy, Debug)]
struct CapabilityWindow {
    bar: u8,
    offset: u32,
    length: u32,
}

/// Queues the network driver uses: receive 0 and transmit 1.
const MAX_QUEUES: usize = 2;
/// Longest capability list walked; a config space holds at most 48 capabilities.
const MAX_CAPABILITIES: usize = 48;
/// Largest BAR window mapped; the virtio structures are a few pages (QEMU
/// 16 KiB), so anything larger is a malformed capability.
const MAX_WINDOW: u64 = 1 << 24;
/// Bounds the busy-wait for a device reset.
const RESET_SPINS: u32 = 1_000_000;

/// A modern virtio-net PCI function with its register windows mapped.
#[derive(Debug)]
pub struct PciTransport {
    function: PciFunction,
    common: Registers,
    isr: Registers,
    notify: Registers,
    notify_multiplier: u32,
    device: Option<Registers>,
    queue_notify: [Option<usize>; MAX_QUEUES],
}

impl PciTransport {
    /// Parses the virtio capabilities of `function`, maps their BAR windows
    /// with `H`, and enables memory decoding and bus mastering.
    ///
    /// Fails with [`VirtioError::LegacyOnly`] for a transitional device
    /// without modern capabilities, [`VirtioError::BadCapability`] for a
    /// missing or malformed capability, [`VirtioError::BarUnassigned`] if a
    /// BAR holds no address (the driver assigns none: QEMU's firmware and
    /// uhyve do), [`VirtioError::MapFailed`] if `H` cannot map a window.
    ///
    /// # Safety
    ///
    /// `config` must access real configuration space; `function` must be a
    /// function that no other code drives, and its BARs must be programmed
    /// to device memory (not RAM), as firmware or the hypervisor left them.
    /// The mappings `H` makes must stay valid for as long as the transport,
    /// the [`crate::VirtioNet`] built on it, or any [`crate::InterruptAck`]
    /// taken from them is used.
    pub unsafe fn new<C: PciConfig + ?Sized, H: Hal>(config: &C, function: &PciFunction) -> Result<Self> {
        let address = function.address;
        let id = address.read32(config, config_reg::ID);
        if id as u16 != VIRTIO_VENDOR_ID {
            return Err(VirtioError::NotFound);
        }
        let device_id = (id >> 16) as u16;
        if !matches!(device_id, DEVICE_ID_NET_MODERN | DEVICE_ID_NET_TRANSITIONAL) {
            return Err(VirtioError::WrongDeviceType(u32::from(device_id)));
        }
        let caps = read_capabilities(config, address);
        let (Some(common_cap), Some((notify_cap, notify_multiplier)), Some(isr_cap)) = (caps.common, caps.notify, caps.isr) else {
            return Err(if device_id == DEVICE_ID_NET_TRANSITIONAL && caps.common.is_none() {
                VirtioError::LegacyOnly
            } else {
                VirtioError::BadCapability
            });
        };
        if common_cap.length < common::MIN_LEN || notify_cap.length < 2 || isr_cap.length < 1 {
            return Err(VirtioError::BadCapability);
        }

        let windows = [Some(common_cap), Some(notify_cap), Some(isr_cap), caps.device];
        // Every BAR must hold an address before decoding is switched on: an
        // unassigned BAR would decode at 0, over RAM.
        for window in windows.iter().flatten() {
            read_bar(config, address, window.bar)?;
        }
        let command = address.read32(config, config_reg::COMMAND) & 0xffff;
        // Memory decoding and bus mastering on, INTx not masked. The upper
        // half (status) is written as 0: its bits are write-one-to-clear, and
        // uhyve keeps virtio state there.
        let command = (command | config_reg::COMMAND_MEMORY | config_reg::COMMAND_BUS_MASTER) & !config_reg::COMMAND_INTX_DISABLE;
        address.write32(config, config_reg::COMMAND, command);

        let mut mapped: [Option<Registers>; 4] = [None; 4];
        for (index, window) in windows.iter().enumerate() {
            let Some(window) = window else { continue };
            if mapped[index].is_some() {
                continue;
            }
            // One mapping per BAR, spanning every window in it.
            let in_bar = || windows.iter().flatten().filter(|w| w.bar == window.bar);
            let start = in_bar().map(|w| u64::from(w.offset)).min().unwrap_or(0);
            let end = in_bar().map(|w| u64::from(w.offset) + u64::from(w.length)).max().unwrap_or(0);
            if end - start > MAX_WINDOW {
                return Err(VirtioError::BadCapability);
            }
            let bar = read_bar(config, address, window.bar)?;
            let phys = bar.checked_add(start).ok_or(VirtioError::BadCapability)?;
            let span = (end - start) as usize;
            let base = H::map_mmio(phys, span).ok_or(VirtioError::MapFailed)?;
            // SAFETY: `Hal::map_mmio` maps `span` bytes at `phys`, which the
            // caller guarantees is this function's device memory, and that
            // the mapping outlives every user of these registers.
            let bar_regs = unsafe { Registers::new(base, span) };
            for (slot, other) in windows.iter().enumerate() {
                if let Some(other) = other
                    && other.bar == window.bar
                {
                    let offset = (u64::from(other.offset) - start) as usize;
                    let base = base.as_ptr().wrapping_add(offset);
                    let base = core::ptr::NonNull::new(base).ok_or(VirtioError::MapFailed)?;
                    debug_assert!(offset + other.length as usize <= bar_regs.len());
                    // SAFETY: `offset..offset + length` lies inside the
                    // `span`-byte mapping (start is the minimum offset and
                    // end the maximum end of the windows in this BAR).
                    mapped[slot] = Some(unsafe { Registers::new(base, other.length as usize) });
                }
            }
        }
        let [Some(common), Some(notify), Some(isr), device] = mapped else {
            return Err(VirtioError::BadCapability);
        };
        log::debug!(
            "virtio-net PCI {:02x}:{:02x}.{} id {device_id:#x} line {} pin {}",
            address.bus,
            address.device,
            address.function,
            function.interrupt_line,
            function.interrupt_pin
        );
        Ok(Self { function: *function, common, isr, notify, notify_multiplier, device, queue_notify: [None; MAX_QUEUES] })
    }

    /// The function this transport drives, with its interrupt line and pin.
    pub fn function(&self) -> &PciFunction {
        &self.function
    }

    /// The interrupt line register: the PIC/IOAPIC input INTx is wired to.
    pub fn interrupt_line(&self) -> u8 {
        self.function.interrupt_line
    }

    /// The interrupt pin: 0 none, 1 INTA# .. 4 INTD#.
    pub fn interrupt_pin(&self) -> u8 {
        self.function.interrupt_pin
    }
}

#[derive(Default)]
struct Capabilities {
    common: Option<CapabilityWindow>,
    notify: Option<(CapabilityWindow, u32)>,
    isr: Option<CapabilityWindow>,
    device: Option<CapabilityWindow>,
}

/// Collects the first usable virtio capability of each type.
fn read_capabilities<C: PciConfig + ?Sized>(config: &C, address: PciAddress) -> Capabilities {
    let mut caps = Capabilities::default();
    let mut pointer = address.read8(config, config_reg::CAPABILITIES) & 0xfc;
    for _ in 0..MAX_CAPABILITIES {
        // Capabilities live after the 64-byte standard header.
        if pointer < 0x40 {
            break;
        }
        let word0 = address.read32(config, u16::from(pointer));
        let id = word0 as u8;
        let next = (word0 >> 8) as u8 & 0xfc;
        let length = (word0 >> 16) as u8;
        let kind = (word0 >> 24) as u8;
        if id == config_reg::CAP_ID_VENDOR && length >= 16 && u16::from(pointer) + u16::from(length) <= 0x100 {
            let bar = address.read32(config, u16::from(pointer) + 4) as u8;
            let window = CapabilityWindow {
                bar,
                offset: address.read32(config, u16::from(pointer) + 8),
                length: address.read32(config, u16::from(pointer) + 12),
            };
            // BAR numbers above 5 are reserved; such a capability is skipped.
            if bar <= 5 {
                match kind {
                    cfg_type::COMMON if caps.common.is_none() => caps.common = Some(window),
                    cfg_type::NOTIFY if caps.notify.is_none() && length >= 20 => {
                        let multiplier = address.read32(config, u16::from(pointer) + 16);
                        caps.notify = Some((window, multiplier));
                    }
                    cfg_type::ISR if caps.isr.is_none() => caps.isr = Some(window),
                    cfg_type::DEVICE if caps.device.is_none() => caps.device = Some(window),
                    _ => {}
                }
            }
        }
        pointer = next;
    }
    caps
}

/// The address a memory BAR decodes; both halves of a 64-bit BAR.
fn read_bar<C: PciConfig + ?Sized>(config: &C, address: PciAddress, index: u8) -> Result<u64> {
    let offset = config_reg::BAR0 + 4 * u16::from(index);
    let low = address.read32(config, offset);
    if low & 1 != 0 {
        // An I/O BAR cannot hold the modern structures.
        return Err(VirtioError::BadCapability);
    }
    let base = match (low >> 1) & 0b11 {
        0b00 => u64::from(low & !0xf),
        0b10 if index < 5 => {
            let high = address.read32(config, offset + 4);
            u64::from(high) << 32 | u64::from(low & !0xf)
        }
        _ => return Err(VirtioError::BadCapability),
    };
    if base == 0 {
        return Err(VirtioError::BarUnassigned);
    }
    Ok(base)
}

impl Transport for PciTransport {
    fn is_legacy(&self) -> bool {
        false
    }

    fn reset(&mut self) {
        self.common.write8(common::DEVICE_STATUS, 0);
        for _ in 0..RESET_SPINS {
            if self.common.read8(common::DEVICE_STATUS) == 0 {
                break;
            }
            core::hint::spin_loop();
        }
        self.queue_notify = [None; MAX_QUEUES];
    }

    fn status(&self) -> u8 {
        self.common.read8(common::DEVICE_STATUS)
    }

    fn set_status(&mut self, status: u8) {
        self.common.write8(common::DEVICE_STATUS, status);
    }

    fn device_features(&mut self) -> u64 {
        self.common.write32(common::DEVICE_FEATURE_SELECT, 0);
        let low = u64::from(self.common.read32(common::DEVICE_FEATURE));
        self.common.write32(common::DEVICE_FEATURE_SELECT, 1);
        let high = u64::from(self.common.read32(common::DEVICE_FEATURE));
        high << 32 | low
    }

    fn set_driver_features(&mut self, features: u64) {
        self.common.write32(common::DRIVER_FEATURE_SELECT, 0);
        self.common.write32(common::DRIVER_FEATURE, features as u32);
        self.common.write32(common::DRIVER_FEATURE_SELECT, 1);
        self.common.write32(common::DRIVER_FEATURE, (features >> 32) as u32);
    }

    fn max_queue_size(&mut self, queue: u16) -> u16 {
        // queue_enable is not consulted: the device was just reset, and
        // uhyve reports one enable flag for all queues.
        self.common.write16(common::QUEUE_SELECT, queue);
        self.common.read16(common::QUEUE_SIZE)
    }

    fn setup_queue(&mut self, queue: u16, layout: &QueueLayout) -> Result<()> {
        let slot = usize::from(queue);
        if slot >= MAX_QUEUES {
            return Err(VirtioError::QueueUnavailable);
        }
        self.common.write16(common::QUEUE_SELECT, queue);
        // Written only when it changes: uhyve's queue_size is read-only.
        if self.common.read16(common::QUEUE_SIZE) != layout.size {
            self.common.write16(common::QUEUE_SIZE, layout.size);
        }
        self.common.write64_split(common::QUEUE_DESC, layout.desc);
        self.common.write64_split(common::QUEUE_DRIVER, layout.avail);
        self.common.write64_split(common::QUEUE_DEVICE, layout.used);
        let notify_off = usize::from(self.common.read16(common::QUEUE_NOTIFY_OFF));
        let offset = notify_off
            .checked_mul(self.notify_multiplier as usize)
            .filter(|offset| offset.checked_add(2).is_some_and(|end| end <= self.notify.len()))
            .ok_or(VirtioError::BadCapability)?;
        self.queue_notify[slot] = Some(offset);
        self.common.write16(common::QUEUE_ENABLE, 1);
        Ok(())
    }

    fn notify(&self, queue: u16) {
        if let Some(Some(offset)) = self.queue_notify.get(usize::from(queue)) {
            self.notify.write16(*offset, queue);
        }
    }

    fn interrupt_ack(&self) -> InterruptAck {
        // Reading the ISR byte acknowledges it and deasserts INTx.
        InterruptAck::pci_isr(self.isr)
    }

    fn read_config_u8(&self, offset: usize) -> u8 {
        self.device.map_or(0xff, |device| device.read8(offset))
    }

    fn config_generation(&self) -> u32 {
        u32::from(self.common.read8(common::CONFIG_GENERATION))
    }
}
