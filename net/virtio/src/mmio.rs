//! The virtio-mmio transport, version 2 (virtio 1.x) and legacy version 1
//! (QEMU `microvm`'s default, `force-legacy=true`), and discovery from the
//! kernel command line.

use core::ptr::NonNull;

use crate::error::{Result, VirtioError};
use crate::hal::{Hal, PAGE_SIZE};
use crate::io::Registers;
use crate::transport::{InterruptAck, QueueLayout, Transport};

/// Register offsets (virtio 1.2, 4.2.2 and 4.2.4).
pub(crate) mod reg {
    pub(crate) const MAGIC: usize = 0x000;
    pub(crate) const VERSION: usize = 0x004;
    pub(crate) const DEVICE_ID: usize = 0x008;
    pub(crate) const VENDOR_ID: usize = 0x00c;
    pub(crate) const DEVICE_FEATURES: usize = 0x010;
    pub(crate) const DEVICE_FEATURES_SEL: usize = 0x014;
    pub(crate) const DRIVER_FEATURES: usize = 0x020;
    pub(crate) const DRIVER_FEATURES_SEL: usize = 0x024;
    /// Legacy only.
    pub(crate) const GUEST_PAGE_SIZE: usize = 0x028;
    pub(crate) const QUEUE_SEL: usize = 0x030;
    pub(crate) const QUEUE_NUM_MAX: usize = 0x034;
    pub(crate) const QUEUE_NUM: usize = 0x038;
    /// Legacy only.
    pub(crate) const QUEUE_ALIGN: usize = 0x03c;
    /// Legacy only.
    pub(crate) const QUEUE_PFN: usize = 0x040;
    /// Version 2 only.
    pub(crate) const QUEUE_READY: usize = 0x044;
    pub(crate) const QUEUE_NOTIFY: usize = 0x050;
    pub(crate) const STATUS: usize = 0x070;
    pub(crate) const QUEUE_DESC_LOW: usize = 0x080;
    pub(crate) const QUEUE_DRIVER_LOW: usize = 0x090;
    pub(crate) const QUEUE_DEVICE_LOW: usize = 0x0a0;
    pub(crate) const CONFIG_GENERATION: usize = 0x0fc;
    pub(crate) const CONFIG: usize = 0x100;
}

/// `virt` in little endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// The virtio device id of a network card.
pub const DEVICE_ID_NET: u32 = 1;

/// Where a virtio-mmio device sits, from `virtio_mmio.device=<size>@<base>:<irq>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDeviceInfo {
    /// Physical address of the register block.
    pub base: u64,
    /// Size of the register block in bytes.
    pub size: usize,
    /// The interrupt line (an IOAPIC GSI on `microvm`).
    pub irq: u32,
}

/// The `virtio_mmio.device=` items of a kernel command line, in order.
/// Items that do not parse are skipped.
///
/// The syntax is Linux's: `<size>@<base>:<irq>[:<id>]`, where size and base
/// take a `0x` prefix for hexadecimal and size a `K`, `M` or `G` suffix,
/// e.g. `virtio_mmio.device=512@0xfeb00e00:12` or `4K@0xd0000000:5`.
pub fn parse_mmio_devices(cmdline: &str) -> impl Iterator<Item = MmioDeviceInfo> + '_ {
    cmdline.split_ascii_whitespace().filter_map(|item| item.strip_prefix("virtio_mmio.device=")).filter_map(parse_device)
}

fn parse_device(value: &str) -> Option<MmioDeviceInfo> {
    let (size, rest) = value.split_once('@')?;
    let (base, rest) = rest.split_once(':')?;
    // An optional `:<id>` (Linux's first platform device id) may follow.
    let irq = rest.split_once(':').map_or(rest, |(irq, _)| irq);
    let size = usize::try_from(parse_size(size)?).ok()?;
    let base = parse_number(base)?;
    let irq = u32::try_from(parse_number(irq)?).ok()?;
    if size == 0 || base.checked_add(size as u64).is_none() {
        return None;
    }
    Some(MmioDeviceInfo { base, size, irq })
}

fn parse_size(text: &str) -> Option<u64> {
    let (digits, shift) = match text.as_bytes().last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 10),
        b'm' | b'M' => (&text[..text.len() - 1], 20),
        b'g' | b'G' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    parse_number(digits)?.checked_mul(1 << shift)
}

fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Which virtio-mmio register layout the device speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioVersion {
    /// Version 1: legacy virtio (guest page size, queue PFN).
    Legacy,
    /// Version 2: virtio 1.x.
    Modern,
}

/// A virtio-mmio network device's register block.
#[derive(Debug)]
pub struct MmioTransport {
    regs: Registers,
    version: MmioVersion,
    vendor_id: u32,
}

/// Bounds the busy-wait for a device reset; QEMU completes it synchronously.
const RESET_SPINS: u32 = 1_000_000;

impl MmioTransport {
    /// Checks the register block at `base` and claims it.
    ///
    /// Fails with [`VirtioError::BadMagic`], [`VirtioError::UnsupportedVersion`],
    /// [`VirtioError::NotFound`] (device id 0, an empty slot) or
    /// [`VirtioError::WrongDeviceType`].
    ///
    /// # Safety
    ///
    /// `base..base + size` must be an uncached mapping of a virtio-mmio
    /// register block (for example from [`Hal::map_mmio`] of an address that
    /// [`parse_mmio_devices`] reported), valid for as long as the transport,
    /// the [`crate::VirtioNet`] built on it, or any [`crate::InterruptAck`]
    /// taken from them is used (a kernel that never unmaps device memory
    /// meets this), and no other code may drive that device.
    pub unsafe fn new(base: NonNull<u8>, size: usize) -> Result<Self> {
        if size < reg::CONFIG {
            return Err(VirtioError::BadCapability);
        }
        // SAFETY: the caller guarantees the mapping and its size.
        let regs = unsafe { Registers::new(base, size) };
        if regs.read32(reg::MAGIC) != MMIO_MAGIC {
            return Err(VirtioError::BadMagic);
        }
        let version = match regs.read32(reg::VERSION) {
            1 => MmioVersion::Legacy,
            2 => MmioVersion::Modern,
            other => return Err(VirtioError::UnsupportedVersion(other)),
        };
        match regs.read32(reg::DEVICE_ID) {
            0 => return Err(VirtioError::NotFound),
            DEVICE_ID_NET => {}
            other => return Err(VirtioError::WrongDeviceType(other)),
        }
        let vendor_id = regs.read32(reg::VENDOR_ID);
        Ok(Self { regs, version, vendor_id })
    }

    /// Maps the device `info` describes with `H` and calls [`Self::new`].
    ///
    /// # Safety
    ///
    /// `info` must describe a real virtio-mmio register block (as QEMU puts
    /// on the command line), which no other code drives.
    pub unsafe fn map<H: Hal>(info: &MmioDeviceInfo) -> Result<Self> {
        let base = H::map_mmio(info.base, info.size).ok_or(VirtioError::MapFailed)?;
        // SAFETY: `Hal::map_mmio` maps `info.size` bytes of the block at
        // `info.base`, which the caller says is a virtio-mmio device we own.
        unsafe { Self::new(base, info.size) }
    }

    /// The register layout version.
    pub fn version(&self) -> MmioVersion {
        self.version
    }

    /// The vendor id register (QEMU: 0x554d4551, "QEMU").
    pub fn vendor_id(&self) -> u32 {
        self.vendor_id
    }
}

impl Transport for MmioTransport {
    fn is_legacy(&self) -> bool {
        self.version == MmioVersion::Legacy
    }

    fn reset(&mut self) {
        self.regs.write32(reg::STATUS, 0);
        for _ in 0..RESET_SPINS {
            if self.regs.read32(reg::STATUS) == 0 {
                break;
            }
            core::hint::spin_loop();
        }
    }

    fn status(&self) -> u8 {
        self.regs.read32(reg::STATUS) as u8
    }

    fn set_status(&mut self, status: u8) {
        self.regs.write32(reg::STATUS, u32::from(status));
    }

    fn device_features(&mut self) -> u64 {
        self.regs.write32(reg::DEVICE_FEATURES_SEL, 0);
        let low = u64::from(self.regs.read32(reg::DEVICE_FEATURES));
        if self.is_legacy() {
            return low;
        }
        self.regs.write32(reg::DEVICE_FEATURES_SEL, 1);
        let high = u64::from(self.regs.read32(reg::DEVICE_FEATURES));
        high << 32 | low
    }

    fn set_driver_features(&mut self, features: u64) {
        self.regs.write32(reg::DRIVER_FEATURES_SEL, 0);
        self.regs.write32(reg::DRIVER_FEATURES, features as u32);
        if !self.is_legacy() {
            self.regs.write32(reg::DRIVER_FEATURES_SEL, 1);
            self.regs.write32(reg::DRIVER_FEATURES, (features >> 32) as u32);
        }
    }

    fn max_queue_size(&mut self, queue: u16) -> u16 {
        self.regs.write32(reg::QUEUE_SEL, u32::from(queue));
        let in_use = match self.version {
            MmioVersion::Legacy => self.regs.read32(reg::QUEUE_PFN) != 0,
            MmioVersion::Modern => self.regs.read32(reg::QUEUE_READY) != 0,
        };
        if in_use {
            return 0;
        }
        u16::try_from(self.regs.read32(reg::QUEUE_NUM_MAX)).unwrap_or(u16::MAX)
    }

    fn setup_queue(&mut self, queue: u16, layout: &QueueLayout) -> Result<()> {
        self.regs.write32(reg::QUEUE_SEL, u32::from(queue));
        self.regs.write32(reg::QUEUE_NUM, u32::from(layout.size));
        match self.version {
            MmioVersion::Legacy => {
                // The legacy device derives the rings from one page frame
                // number; the layout must be exactly the legacy one.
                let (avail, used, _) = QueueLayout::offsets(layout.size);
                let contiguous = layout.avail == layout.desc + avail as u64
                    && layout.used == layout.desc + used as u64
                    && layout.desc.is_multiple_of(PAGE_SIZE as u64);
                if !contiguous {
                    return Err(VirtioError::QueueUnavailable);
                }
                let pfn = u32::try_from(layout.desc / PAGE_SIZE as u64).map_err(|_| VirtioError::DmaAddressTooHigh)?;
                self.regs.write32(reg::GUEST_PAGE_SIZE, PAGE_SIZE as u32);
                self.regs.write32(reg::QUEUE_ALIGN, QueueLayout::LEGACY_ALIGN as u32);
                self.regs.write32(reg::QUEUE_PFN, pfn);
            }
            MmioVersion::Modern => {
                self.regs.write64_split(reg::QUEUE_DESC_LOW, layout.desc);
                self.regs.write64_split(reg::QUEUE_DRIVER_LOW, layout.avail);
                self.regs.write64_split(reg::QUEUE_DEVICE_LOW, layout.used);
                self.regs.write32(reg::QUEUE_READY, 1);
            }
        }
        Ok(())
    }

    fn notify(&self, queue: u16) {
        self.regs.write32(reg::QUEUE_NOTIFY, u32::from(queue));
    }

    fn interrupt_ack(&self) -> InterruptAck {
        InterruptAck::mmio(self.regs)
    }

    fn read_config_u8(&self, offset: usize) -> u8 {
        match reg::CONFIG.checked_add(offset) {
            Some(at) if at < self.regs.len() => self.regs.read8(at),
            _ => 0xff,
        }
    }

    fn config_generation(&self) -> u32 {
        match self.version {
            MmioVersion::Legacy => 0,
            MmioVersion::Modern => self.regs.read32(reg::CONFIG_GENERATION),
        }
    }
}
