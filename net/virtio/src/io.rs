//! Bounds-checked volatile access to one mapped register region.
//!
//! All device register traffic of both transports goes through [`Registers`].
//! In host tests the accesses are routed to the simulated device
//! (`crate::fake::bus`) when they fall into a region it registered; the
//! kernel build has only the volatile access.

use core::ptr::NonNull;

/// A mapped region of device registers, `len` bytes long.
///
/// Invariant (from [`Registers::new`]): `base..base + len` is valid for
/// volatile reads and writes for the life of the value. Every access checks
/// its offset against `len`, so no offset — including one derived from a
/// device-supplied capability — can reach outside the region.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Registers {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is device memory, not Rust-owned data; sharing the
// pointer between CPUs is as safe as the device makes it (registers are
// accessed with single volatile loads and stores). The owning transport
// decides who may access it.
unsafe impl Send for Registers {}

impl Registers {
    /// # Safety
    ///
    /// `base..base + len` must be mapped device registers (or memory), valid
    /// for volatile reads and writes of 1, 2 and 4 bytes at naturally aligned
    /// offsets for as long as the value or any copy of it is used.
    pub(crate) unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        Self { base, len }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The address of `offset`, if an access of `width` bytes there stays
    /// inside the region and is naturally aligned.
    fn at(&self, offset: usize, width: usize) -> Option<*mut u8> {
        let end = offset.checked_add(width)?;
        if end > self.len || !(self.base.as_ptr() as usize).wrapping_add(offset).is_multiple_of(width) {
            return None;
        }
        // `offset < len`, and the invariant says the region is valid, so the
        // pointer stays inside one allocation/mapping.
        Some(self.base.as_ptr().wrapping_add(offset))
    }

    /// Reads `width` (1, 2 or 4) bytes; all-ones if out of bounds, as a
    /// missing device would answer.
    fn read(&self, offset: usize, width: usize) -> u32 {
        let Some(ptr) = self.at(offset, width) else {
            return u32::MAX >> (32 - 8 * width);
        };
        #[cfg(test)]
        if let Some(value) = crate::fake::bus::read(ptr as usize, width) {
            return value;
        }
        // SAFETY: `at` checked that `ptr..ptr + width` lies inside the region
        // and is naturally aligned; the constructor's contract makes the
        // region valid for volatile reads.
        unsafe {
            match width {
                1 => u32::from(ptr.read_volatile()),
                2 => u32::from(ptr.cast::<u16>().read_volatile()),
                _ => ptr.cast::<u32>().read_volatile(),
            }
        }
    }

    fn write(&self, offset: usize, width: usize, value: u32) {
        let Some(ptr) = self.at(offset, width) else {
            return;
        };
        #[cfg(test)]
        if crate::fake::bus::write(ptr as usize, width, value) {
            return;
        }
        // SAFETY: as in `read`; the region is valid for volatile writes.
        // Truncating `value` to the access width is intended.
        unsafe {
            match width {
                1 => ptr.write_volatile(value as u8),
                2 => ptr.cast::<u16>().write_volatile(value as u16),
                _ => ptr.cast::<u32>().write_volatile(value),
            }
        }
    }

    pub(crate) fn read8(&self, offset: usize) -> u8 {
        self.read(offset, 1) as u8
    }

    pub(crate) fn read16(&self, offset: usize) -> u16 {
        self.read(offset, 2) as u16
    }

    pub(crate) fn read32(&self, offset: usize) -> u32 {
        self.read(offset, 4)
    }

    pub(crate) fn write8(&self, offset: usize, value: u8) {
        self.write(offset, 1, u32::from(value));
    }

    pub(crate) fn write16(&self, offset: usize, value: u16) {
        self.write(offset, 2, u32::from(value));
    }

    pub(crate) fn write32(&self, offset: usize, value: u32) {
        self.write(offset, 4, value);
    }

    /// Writes a 64-bit register as two 32-bit halves, low first, as the
    /// virtio spec allows drivers to and as uhyve requires.
    pub(crate) fn write64_split(&self, offset: usize, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
}
