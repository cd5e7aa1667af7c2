//! What the virtio driver needs from the kernel: DMA memory (heap pages,
//! identity mapped, so the device address is the virtual address), device
//! register mappings, and PCI configuration space through ports 0xCF8/0xCFC.

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use core::ptr::NonNull;

use rtedge_arch::cpu;
use rtedge_virtio::{Hal, PAGE_SIZE, PciConfig};

use rtedge_kernel::memory;
use rtedge_kernel::sync::IrqSpinLock;

/// The kernel's side of the virtio driver's [`Hal`].
#[derive(Debug)]
pub struct KernelHal;

fn dma_layout(pages: usize) -> Option<Layout> {
    Layout::from_size_align(pages.checked_mul(PAGE_SIZE)?, PAGE_SIZE).ok()
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned, physically contiguous
// memory owned by the caller until `dma_free` (one heap allocation; the heap
// is identity mapped, so physical == virtual); `map_mmio` maps the exact
// physical address uncached at the same virtual address.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize) -> Option<(u64, NonNull<u8>)> {
        let layout = dma_layout(pages.max(1))?;
        // SAFETY: the layout has a non-zero size.
        let pointer = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        Some((pointer.as_ptr() as u64, pointer))
    }

    unsafe fn dma_free(_phys: u64, virt: NonNull<u8>, pages: usize) {
        if let Some(layout) = dma_layout(pages.max(1)) {
            // SAFETY: per the trait contract, this is an earlier `dma_alloc`.
            unsafe { dealloc(virt.as_ptr(), layout) };
        }
    }

    fn virt_to_phys(pointer: NonNull<u8>) -> u64 {
        pointer.as_ptr() as u64
    }

    fn map_mmio(phys: u64, size: usize) -> Option<NonNull<u8>> {
        memory::map_device(phys, size as u64).ok()?;
        NonNull::new(phys as *mut u8)
    }
}

/// PCI configuration access through the legacy port mechanism (q35, uhyve).
#[derive(Debug)]
pub struct PortPciConfig;

static PCI_LOCK: IrqSpinLock<()> = IrqSpinLock::new(());

fn address(bus: u8, device: u8, function: u8, offset: u16) -> u32 {
    0x8000_0000 | (u32::from(bus) << 16) | (u32::from(device & 0x1f) << 11) | (u32::from(function & 0x7) << 8) | u32::from(offset & 0xfc)
}

impl PciConfig for PortPciConfig {
    fn read32(&self, bus: u8, device: u8, function: u8, offset: u16) -> u32 {
        let _guard = PCI_LOCK.lock();
        // SAFETY: ports 0xCF8/0xCFC are the PCI configuration mechanism #1,
        // serialised by PCI_LOCK.
        unsafe {
            cpu::outl(0xcf8, address(bus, device, function, offset));
            cpu::inl(0xcfc)
        }
    }

    fn write32(&self, bus: u8, device: u8, function: u8, offset: u16, value: u32) {
        let _guard = PCI_LOCK.lock();
        // SAFETY: as in `read32`.
        unsafe {
            cpu::outl(0xcf8, address(bus, device, function, offset));
            cpu::outl(0xcfc, value);
        }
    }
}
