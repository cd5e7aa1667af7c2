//! One split virtqueue (virtio 1.2, 2.7) in DMA memory, driver side.
//!
//! The queue only moves descriptor ids through the rings; which buffer an id
//! names, and whether the device may return it, is the owner's business
//! (`net.rs` checks every id and length the device reports).

use core::sync::atomic::{Ordering, fence};

use crate::dma::DmaRegion;
use crate::error::Result;
use crate::hal::Hal;
use crate::transport::QueueLayout;

/// Descriptor flag: the buffer continues in `next`.
#[cfg_attr(not(test), allow(dead_code, reason = "named for completeness; the driver posts single descriptors"))]
pub(crate) const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the device writes into the buffer (receive).
pub(crate) const DESC_F_WRITE: u16 = 2;
/// Available-ring flag: the driver does not want interrupts.
pub(crate) const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Used-ring flag: the device does not want notifications.
pub(crate) const USED_F_NO_NOTIFY: u16 = 1;

const DESC_SIZE: usize = 16;

/// What the used ring holds next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Used {
    /// Nothing new.
    Empty,
    /// The device returned descriptor `id` having written `len` bytes. Both
    /// are as the device wrote them: unchecked.
    Element { id: u32, len: u32 },
    /// The device's used index ran further ahead than the ring is long; the
    /// entries in between were skipped.
    Corrupt,
}

/// A split virtqueue: descriptor table, available ring, used ring in one
/// DMA region laid out by [`QueueLayout::offsets`].
pub(crate) struct SplitQueue<H: Hal> {
    memory: DmaRegion<H>,
    size: u16,
    avail: usize,
    used: usize,
    /// Driver's shadow of `avail.idx`.
    next_avail: u16,
    /// Next used-ring index the driver has not consumed yet.
    last_used: u16,
    /// Notify even when the device says it needs none (for devices that
    /// can miss a buffer added while their "no notify" flag was set).
    always_notify: bool,
}

impl<H: Hal> SplitQueue<H> {
    /// Allocates a zeroed queue of `size` descriptors (a power of two).
    pub(crate) fn new(size: u16) -> Result<Self> {
        debug_assert!(size.is_power_of_two());
        let (avail, used, total) = QueueLayout::offsets(size);
        let memory = DmaRegion::new(DmaRegion::<H>::pages_for(total))?;
        Ok(Self { memory, size, avail, used, next_avail: 0, last_used: 0, always_notify: false })
    }

    pub(crate) fn size(&self) -> u16 {
        self.size
    }

    pub(crate) fn layout(&self) -> QueueLayout {
        let base = self.memory.phys();
        QueueLayout { size: self.size, desc: base, avail: base + self.avail as u64, used: base + self.used as u64 }
    }

    fn write16(&self, offset: usize, value: u16) {
        let ptr = self.memory.ptr(offset);
        debug_assert!(offset + 2 <= self.memory.len() && offset.is_multiple_of(2));
        // Every caller computes `offset` from the fixed layout and an index
        // below `size` (`ptr` asserts the start).
        // SAFETY: so it is inside the region and 2-byte aligned in a page-aligned region.
        unsafe { ptr.cast::<u16>().write_volatile(value) }
    }

    fn read16(&self, offset: usize) -> u16 {
        let ptr = self.memory.ptr(offset);
        debug_assert!(offset + 2 <= self.memory.len() && offset.is_multiple_of(2));
        // SAFETY: as in `write16`; the device may write the value at any
        // time, hence the volatile read of plain integer memory.
        unsafe { ptr.cast::<u16>().read_volatile() }
    }

    fn read32(&self, offset: usize) -> u32 {
        let ptr = self.memory.ptr(offset);
        debug_assert!(offset + 4 <= self.memory.len() && offset.is_multiple_of(4));
        // SAFETY: as in `read16`; used-ring entries are 4-byte aligned.
        unsafe { ptr.cast::<u32>().read_volatile() }
    }

    /// Fills descriptor `id` (which must be below `size`).
    pub(crate) fn set_descriptor(&mut self, id: u16, addr: u64, len: u32, flags: u16) {
        assert!(id < self.size, "descriptor id out of range");
        let offset = usize::from(id) * DESC_SIZE;
        let ptr = self.memory.ptr(offset);
        // SAFETY: `id < size`, so the 16-byte descriptor lies inside the
        // table at the start of the region, 16-byte aligned.
        unsafe {
            ptr.cast::<u64>().write_volatile(addr);
            ptr.add(8).cast::<u32>().write_volatile(len);
            ptr.add(12).cast::<u16>().write_volatile(flags);
            ptr.add(14).cast::<u16>().write_volatile(0);
        }
    }

    /// Makes descriptor `id` available to the device. The caller then asks
    /// [`Self::should_notify`] whether to kick.
    pub(crate) fn push_available(&mut self, id: u16) {
        let slot = usize::from(self.next_avail % self.size);
        self.write16(self.avail + 4 + 2 * slot, id);
        self.next_avail = self.next_avail.wrapping_add(1);
        // The ring entry (and the descriptor) must be visible before the index.
        fence(Ordering::Release);
        self.write16(self.avail + 2, self.next_avail);
    }

    /// Whether the device wants a notification for what was just published.
    pub(crate) fn set_always_notify(&mut self, on: bool) {
        self.always_notify = on;
    }

    pub(crate) fn should_notify(&self) -> bool {
        if self.always_notify {
            return true;
        }
        // Order the avail.idx store before the used.flags load (a full
        // barrier: otherwise the device could miss the new entry while the
        // driver sees a stale "no notify" flag).
        fence(Ordering::SeqCst);
        self.read16(self.used) & USED_F_NO_NOTIFY == 0
    }

    /// Whether the device has returned anything not yet consumed.
    pub(crate) fn has_used(&self) -> bool {
        self.read16(self.used + 2) != self.last_used
    }

    /// Takes the next used element, without trusting it.
    pub(crate) fn pop_used(&mut self) -> Used {
        let device_idx = self.read16(self.used + 2);
        let pending = device_idx.wrapping_sub(self.last_used);
        if pending == 0 {
            return Used::Empty;
        }
        if pending > self.size {
            // A device cannot have returned more than the ring holds.
            self.last_used = device_idx;
            return Used::Corrupt;
        }
        // Read the entry only after seeing the index that covers it.
        fence(Ordering::Acquire);
        let slot = usize::from(self.last_used % self.size);
        let entry = self.used + 4 + 8 * slot;
        let id = self.read32(entry);
        let len = self.read32(entry + 4);
        self.last_used = self.last_used.wrapping_add(1);
        Used::Element { id, len }
    }

    /// Asks the device to interrupt (or not) when it returns buffers.
    pub(crate) fn set_interrupts(&mut self, enabled: bool) {
        self.write16(self.avail, if enabled { 0 } else { AVAIL_F_NO_INTERRUPT });
    }
}
