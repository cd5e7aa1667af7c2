//! An owned DMA allocation, returned to the [`Hal`] on drop.

use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::error::{Result, VirtioError};
use crate::hal::{Hal, PAGE_SIZE};

/// `pages` pages of DMA memory from `H`, freed when dropped.
///
/// Invariant: `virt..virt + len()` is valid, zero-initialised at creation,
/// exclusively ours (and the device's) until drop, and `phys` is its
/// device-visible address.
pub(crate) struct DmaRegion<H: Hal> {
    phys: u64,
    virt: NonNull<u8>,
    pages: usize,
    _hal: PhantomData<H>,
}

// SAFETY: the region is exclusively owned memory (plus the device, which is
// not a thread); moving the owner to another CPU moves sole ownership.
unsafe impl<H: Hal> Send for DmaRegion<H> {}

impl<H: Hal> DmaRegion<H> {
    pub(crate) fn new(pages: usize) -> Result<Self> {
        let (phys, virt) = H::dma_alloc(pages).ok_or(VirtioError::OutOfDmaMemory)?;
        debug_assert_eq!(H::virt_to_phys(virt), phys, "Hal::virt_to_phys disagrees with dma_alloc");
        Ok(Self { phys, virt, pages, _hal: PhantomData })
    }

    /// Pages needed to hold `bytes` bytes.
    pub(crate) fn pages_for(bytes: usize) -> usize {
        bytes.div_ceil(PAGE_SIZE)
    }

    pub(crate) fn phys(&self) -> u64 {
        self.phys
    }

    pub(crate) fn len(&self) -> usize {
        self.pages * PAGE_SIZE
    }

    /// Pointer to byte `offset`; `offset` must be at most `len()`.
    pub(crate) fn ptr(&self, offset: usize) -> *mut u8 {
        assert!(offset <= self.len(), "DMA offset out of range");
        // In bounds of (or one past) the allocation, by the assert above.
        self.virt.as_ptr().wrapping_add(offset)
    }

    /// The bytes `offset..offset + len` as a shared slice.
    ///
    /// The device may only write into buffers the driver has handed it; the
    /// callers (the rx/tx pools) never take a slice of a buffer the device
    /// owns, so no device write races with this borrow.
    pub(crate) fn slice(&self, offset: usize, len: usize) -> &[u8] {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len()), "DMA slice out of range");
        // SAFETY: in bounds by the assert; the memory is initialised (zeroed
        // at allocation, then written only as bytes) and valid per the type's
        // invariant; `&self` prevents a simultaneous `slice_mut`.
        unsafe { core::slice::from_raw_parts(self.virt.as_ptr().add(offset), len) }
    }

    /// The bytes `offset..offset + len` as a mutable slice; see [`Self::slice`].
    pub(crate) fn slice_mut(&mut self, offset: usize, len: usize) -> &mut [u8] {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len()), "DMA slice out of range");
        // SAFETY: as in `slice`, and `&mut self` makes the borrow exclusive
        // on the driver side.
        unsafe { core::slice::from_raw_parts_mut(self.virt.as_ptr().add(offset), len) }
    }
}

impl<H: Hal> Drop for DmaRegion<H> {
    fn drop(&mut self) {
        // SAFETY: exactly what `dma_alloc` returned for `pages`, freed once
        // (drop runs once). The owner resets the device before dropping DMA
        // memory, so the device no longer accesses it.
        unsafe { H::dma_free(self.phys, self.virt, self.pages) };
    }
}
