//! The driver's one error type.

use core::fmt;

/// Why a virtio device could not be found or brought up.
///
/// Only initialisation returns errors; once a [`crate::VirtioNet`] runs,
/// device misbehaviour is counted in [`crate::NetStats`] instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioError {
    /// No device where one was looked for (empty MMIO slot, no PCI function).
    NotFound,
    /// The device speaks only the legacy PCI (I/O port) interface; run QEMU
    /// with `disable-legacy=on` or use a modern device.
    LegacyOnly,
    /// The MMIO block does not start with the magic value `virt`.
    BadMagic,
    /// The MMIO version register holds something other than 1 or 2.
    UnsupportedVersion(u32),
    /// The device is a virtio device, but not a network card.
    WrongDeviceType(u32),
    /// A PCI capability or BAR is missing, malformed or points outside its BAR.
    BadCapability,
    /// A BAR that a capability needs has not been assigned an address.
    BarUnassigned,
    /// The device lacks a feature the driver requires, or refused `FEATURES_OK`.
    FeaturesRejected,
    /// The device reports a virtqueue as unavailable (size 0) or already in use.
    QueueUnavailable,
    /// A DMA address does not fit the register it must be written to
    /// (legacy MMIO takes a 32-bit page frame number).
    DmaAddressTooHigh,
    /// [`crate::Hal::dma_alloc`] returned nothing.
    OutOfDmaMemory,
    /// [`crate::Hal::map_mmio`] returned nothing.
    MapFailed,
    /// The driver configuration is not usable (zero buffers, buffers too small).
    BadConfig,
}

/// The driver's result type.
pub type Result<T> = core::result::Result<T, VirtioError>;

impl fmt::Display for VirtioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => f.write_str("no virtio device found"),
            Self::LegacyOnly => f.write_str("legacy-only device not supported (use a modern device, e.g. QEMU disable-legacy=on)"),
            Self::BadMagic => f.write_str("virtio-mmio magic value missing"),
            Self::UnsupportedVersion(v) => write!(f, "unsupported virtio-mmio version {v}"),
            Self::WrongDeviceType(id) => write!(f, "virtio device type {id} is not a network card"),
            Self::BadCapability => f.write_str("malformed or missing virtio PCI capability"),
            Self::BarUnassigned => f.write_str("PCI BAR needed by the device is unassigned"),
            Self::FeaturesRejected => f.write_str("virtio feature negotiation failed"),
            Self::QueueUnavailable => f.write_str("virtqueue unavailable"),
            Self::DmaAddressTooHigh => f.write_str("DMA address too high for the device register"),
            Self::OutOfDmaMemory => f.write_str("out of DMA memory"),
            Self::MapFailed => f.write_str("could not map device registers"),
            Self::BadConfig => f.write_str("invalid driver configuration"),
        }
    }
}

impl core::error::Error for VirtioError {}
