//! What the kernel provides: DMA memory and device mappings.

use core::ptr::NonNull;

/// Size of a DMA page, in bytes.
pub const PAGE_SIZE: usize = 4096;

/// Memory services the kernel gives the driver.
///
/// The functions take no `self`: a kernel has one physical memory, and the
/// driver is generic over `H: Hal` so that the host tests can supply their
/// own.
///
/// # Safety
///
/// The driver hands the addresses returned here to a device and accesses the
/// memory through the returned pointers, so an implementation must guarantee:
/// - [`Hal::dma_alloc`] returns `pages * PAGE_SIZE` bytes that are zeroed,
///   page aligned, physically contiguous, not used by anything else until
///   [`Hal::dma_free`], mapped at the returned pointer (cache-coherent with
///   the device, as all memory is on x86_64), and whose device-visible
///   address is the returned `u64`;
/// - [`Hal::map_mmio`] returns a pointer through which `size` bytes of the
///   device region starting exactly at `phys` (which need not be page
///   aligned) can be read and written with volatile accesses, uncached, for
///   as long as the driver lives;
/// - [`Hal::virt_to_phys`] returns the device-visible address of a pointer
///   into memory from [`Hal::dma_alloc`].
pub unsafe trait Hal {
    /// Allocates `pages` zeroed, physically contiguous, page-aligned pages.
    /// Returns the device-visible (physical) address and the virtual address.
    fn dma_alloc(pages: usize) -> Option<(u64, NonNull<u8>)>;

    /// Returns memory from [`Hal::dma_alloc`].
    ///
    /// # Safety
    ///
    /// `phys`, `virt` and `pages` must be exactly what one earlier
    /// `dma_alloc` call returned and was asked for, freed once, and no device
    /// may access the memory any more.
    unsafe fn dma_free(phys: u64, virt: NonNull<u8>, pages: usize);

    /// The device-visible address of `ptr`, which points into DMA memory.
    fn virt_to_phys(ptr: NonNull<u8>) -> u64;

    /// Maps `size` bytes of device registers at physical address `phys`
    /// uncached, and returns the address that `phys` is mapped at.
    fn map_mmio(phys: u64, size: usize) -> Option<NonNull<u8>>;
}
