//! Memory: the kernel's own page tables, the general heap over the free RAM
//! of the memory map, and guarded stacks.
//!
//! Free RAM is every usable range above the kernel image, minus the files
//! the loader handed over and any region reserved on the command line.
//! A few frames are taken first, by a bump allocator, for the page tables
//! themselves; the rest goes to the heap.

pub mod heap;
pub mod raw;
pub mod stacks;

use core::fmt;

use rtedge_arch::boot::{BootInfo, MemoryKind};
use rtedge_arch::paging::{self, Access, AddressSpace, FrameSource, PAGE_SIZE};

use crate::sync::IrqSpinLock;

/// Errors of the memory layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryError {
    /// The loader gave no usable RAM above the kernel.
    NoFreeMemory,
    /// Page tables could not be built or changed.
    Paging(paging::PagingError),
    /// The heap has no block of the requested size.
    OutOfMemory,
    /// The request is larger than the facility allows.
    TooLarge,
}

impl From<paging::PagingError> for MemoryError {
    fn from(error: paging::PagingError) -> Self {
        MemoryError::Paging(error)
    }
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryError::NoFreeMemory => f.write_str("no free RAM above the kernel image"),
            MemoryError::Paging(error) => write!(f, "paging: {error}"),
            MemoryError::OutOfMemory => f.write_str("out of memory"),
            MemoryError::TooLarge => f.write_str("request too large"),
        }
    }
}

pub type Result<T> = core::result::Result<T, MemoryError>;

const MAX_FREE_RANGES: usize = 32;

/// Physical ranges `[start, end)`, page aligned.
#[derive(Clone, Copy, Debug)]
struct Ranges {
    ranges: [(u64, u64); MAX_FREE_RANGES],
    count: usize,
}

impl Ranges {
    const fn new() -> Self {
        Self { ranges: [(0, 0); MAX_FREE_RANGES], count: 0 }
    }

    fn push(&mut self, start: u64, end: u64) {
        let start = start.next_multiple_of(PAGE_SIZE);
        let end = end & !(PAGE_SIZE - 1);
        if end > start && self.count < MAX_FREE_RANGES {
            self.ranges[self.count] = (start, end);
            self.count += 1;
        }
    }

    /// Removes `[start, end)` from every range, splitting where needed.
    fn remove(&mut self, start: u64, end: u64) {
        let start = start & !(PAGE_SIZE - 1);
        let end = end.next_multiple_of(PAGE_SIZE);
        let old = *self;
        self.count = 0;
        for &(a, b) in &old.ranges[..old.count] {
            if end <= a || start >= b {
                self.push(a, b);
            } else {
                self.push(a, start.max(a).min(b));
                self.push(end.min(b).max(a), b);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges[..self.count].iter().copied()
    }
}

/// Frames taken from the start of the free ranges before the heap exists.
struct BumpFrames {
    ranges: Ranges,
    taken: u64,
}

impl FrameSource for BumpFrames {
    fn allocate_frame(&mut self) -> Option<u64> {
        let (start, end) = self.ranges.ranges.get(..self.ranges.count)?.first().copied()?;
        if start >= end {
            return None;
        }
        let frame = start;
        self.ranges.ranges[0].0 += PAGE_SIZE;
        if self.ranges.ranges[0].0 >= end {
            self.ranges.remove(start, end);
        }
        // SAFETY: the frame is free RAM, identity mapped by the boot tables.
        unsafe { core::ptr::write_bytes(frame as *mut u8, 0, PAGE_SIZE as usize) };
        self.taken += 1;
        Some(frame)
    }
}

/// Frames for page tables once the heap exists (4 KiB aligned, zeroed).
pub struct HeapFrames;

impl FrameSource for HeapFrames {
    fn allocate_frame(&mut self) -> Option<u64> {
        heap::allocate_zeroed_page().map(|page| page as u64)
    }
}

/// What memory setup found and did, for the banner and `INFO memory`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryReport {
    pub usable_bytes: u64,
    pub heap_bytes: u64,
    pub heap_ranges: usize,
    pub page_table_frames: u64,
    pub ram_end: u64,
    pub reserved_region: Option<(u64, u64)>,
}

static REPORT: IrqSpinLock<MemoryReport> = IrqSpinLock::new(MemoryReport {
    usable_bytes: 0,
    heap_bytes: 0,
    heap_ranges: 0,
    page_table_frames: 0,
    ram_end: 0,
    reserved_region: None,
});

static KERNEL_SPACE: IrqSpinLock<Option<AddressSpace>> = IrqSpinLock::new(None);

/// The memory report from boot.
pub fn report() -> MemoryReport {
    *REPORT.lock()
}

/// Builds and loads the kernel's page tables and starts the heap.
/// `guards` are pages to leave unmapped (static stacks' guard pages);
/// `reserve` is a raw region to keep out of the heap, by size (taken from
/// the top of the highest free range).
pub fn init(info: &BootInfo, guards: &[u64], reserve_bytes: u64) -> Result<MemoryReport> {
    let layout = paging::image_layout();
    let image_end = layout.end.next_multiple_of(PAGE_SIZE);
    let mut free = Ranges::new();
    for region in info.regions().iter().filter(|r| r.kind == MemoryKind::Usable) {
        free.push(region.start.max(image_end), region.end);
    }
    for module in info.modules() {
        free.remove(module.start, module.start + module.size);
    }
    let mut reserved_region = None;
    if reserve_bytes > 0 {
        let size = reserve_bytes.next_multiple_of(PAGE_SIZE);
        if let Some((_, end)) = free.iter().filter(|(a, b)| b - a >= size).max_by_key(|&(a, _)| a) {
            reserved_region = Some((end - size, end));
            free.remove(end - size, end);
        }
    }
    if free.count == 0 {
        return Err(MemoryError::NoFreeMemory);
    }
    let ram_end = info.ram_end();
    let mut bump = BumpFrames { ranges: free, taken: 0 };
    let space = paging::build_kernel_space(ram_end, guards, &mut bump)?;
    // SAFETY: the new tables identity map all RAM and the image with the
    // addresses already in use; guard pages are unused by construction.
    unsafe { space.activate() };
    *KERNEL_SPACE.lock() = Some(space);
    let mut heap_bytes = 0;
    let mut heap_ranges = 0;
    for (start, end) in bump.ranges.iter() {
        // SAFETY: the range is free RAM, mapped, and handed over exactly once.
        if unsafe { heap::add_region(start, end - start) } {
            heap_bytes += end - start;
            heap_ranges += 1;
        }
    }
    let report = MemoryReport {
        usable_bytes: info.usable_bytes(),
        heap_bytes,
        heap_ranges,
        page_table_frames: bump.taken,
        ram_end,
        reserved_region,
    };
    *REPORT.lock() = report;
    Ok(report)
}

/// Maps a device register range (uncached) at its physical address.
pub fn map_device(physical: u64, size: u64) -> Result<()> {
    let start = physical & !(PAGE_SIZE - 1);
    let end = (physical + size).next_multiple_of(PAGE_SIZE);
    with_kernel_space(|space| space.map(start, start, end - start, Access::Device, &mut HeapFrames))
}

/// Maps `[physical, +size)` at its own address with the given rights.
pub fn map_identity(physical: u64, size: u64, access: Access) -> Result<()> {
    let start = physical & !(PAGE_SIZE - 1);
    let end = (physical + size).next_multiple_of(PAGE_SIZE);
    with_kernel_space(|space| space.map(start, start, end - start, access, &mut HeapFrames))
}

/// Runs `f` on the kernel's page tables under the mapping lock.
pub fn with_kernel_space<T>(f: impl FnOnce(&AddressSpace) -> core::result::Result<T, paging::PagingError>) -> Result<T> {
    let guard = KERNEL_SPACE.lock();
    let space = guard.as_ref().ok_or(MemoryError::NoFreeMemory)?;
    Ok(f(space)?)
}

/// The kernel's page tables, once built.
pub fn kernel_space() -> Option<AddressSpace> {
    *KERNEL_SPACE.lock()
}
