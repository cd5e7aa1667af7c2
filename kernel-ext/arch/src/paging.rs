//! Four-level page tables. RAM is identity mapped (virtual == physical), so a
//! table's physical address is also where the kernel reads and writes it.
//!
//! The kernel image is mapped with 4 KiB pages so that text is read-only and
//! executable, read-only data is neither writable nor executable, and data is
//! not executable; the rest of RAM uses 2 MiB pages, not executable. Stacks
//! live in a separate virtual window ([`STACK_WINDOW`]) where each stack has an
//! unmapped guard page below it.

use core::fmt;

use crate::cpu;

pub const PAGE_SIZE: u64 = 4096;
pub const LARGE_PAGE_SIZE: u64 = 2 * 1024 * 1024;

/// The virtual window holding kernel-created stacks (one slot each, lowest
/// page of a slot left unmapped as the guard).
pub const STACK_WINDOW: u64 = 0x0000_4000_0000_0000;
/// Size of one stack slot in the window (guard page included).
pub const STACK_SLOT_SIZE: u64 = 1024 * 1024;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const HUGE: u64 = 1 << 7;
const GLOBAL: u64 = 1 << 8;
const NO_EXECUTE: u64 = 1 << 63;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// How a range is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Kernel text: read and execute.
    Text,
    /// Read-only data.
    ReadOnly,
    /// Read-write data, not executable.
    Data,
    /// Device registers: read-write, uncached, not executable.
    Device,
    /// Code copied to run from here (the SMP trampoline): read, write, execute.
    Trampoline,
}

impl Access {
    fn bits(self) -> u64 {
        match self {
            Access::Text => PRESENT | GLOBAL,
            Access::ReadOnly => PRESENT | GLOBAL | NO_EXECUTE,
            Access::Data => PRESENT | WRITABLE | GLOBAL | NO_EXECUTE,
            Access::Device => PRESENT | WRITABLE | CACHE_DISABLE | WRITE_THROUGH | NO_EXECUTE,
            Access::Trampoline => PRESENT | WRITABLE,
        }
    }
}

/// Errors while changing mappings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingError {
    /// No frame for a new page table.
    OutOfFrames,
    /// The address or size is not aligned to the page size used.
    Misaligned,
}

impl fmt::Display for PagingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PagingError::OutOfFrames => f.write_str("no free frame for a page table"),
            PagingError::Misaligned => f.write_str("address not page aligned"),
        }
    }
}

pub type Result<T> = core::result::Result<T, PagingError>;

/// Supplies zeroed 4 KiB frames (identity mapped) for page tables.
pub trait FrameSource {
    fn allocate_frame(&mut self) -> Option<u64>;
}

/// A set of page tables, named by its top-level table's physical address.
#[derive(Clone, Copy, Debug)]
pub struct AddressSpace {
    root: u64,
}

fn table(physical: u64) -> &'static mut [u64; 512] {
    // SAFETY: page-table frames are identity mapped RAM owned by the paging
    // code; callers hold the kernel's mapping lock, so no two writers race.
    unsafe { &mut *(physical as *mut [u64; 512]) }
}

fn index(virtual_address: u64, level: u32) -> usize {
    ((virtual_address >> (12 + 9 * level)) & 0x1ff) as usize
}

impl AddressSpace {
    /// Creates an empty address space.
    pub fn new(frames: &mut dyn FrameSource) -> Result<Self> {
        let root = frames.allocate_frame().ok_or(PagingError::OutOfFrames)?;
        Ok(Self { root })
    }

    /// The address space currently loaded in CR3 on this CPU.
    pub fn active() -> Self {
        Self { root: cpu::read_cr3() & ADDRESS_MASK }
    }

    /// The physical address of the top-level table (for CR3).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Returns the table at `level` (2 = PDPT .. 0 = PT) covering `address`,
    /// creating it if needed; splits a 2 MiB mapping into 4 KiB ones when a
    /// 4 KiB table is wanted where a large page is.
    fn walk(&self, address: u64, to_level: u32, frames: &mut dyn FrameSource) -> Result<&'static mut [u64; 512]> {
        let mut current = table(self.root);
        let mut level = 3;
        while level > to_level {
            let entry = &mut current[index(address, level)];
            if *entry & PRESENT == 0 {
                let frame = frames.allocate_frame().ok_or(PagingError::OutOfFrames)?;
                *entry = frame | PRESENT | WRITABLE;
            } else if *entry & HUGE != 0 {
                // Split a 2 MiB page (level 1 entry) into 512 small ones with the same rights.
                let frame = frames.allocate_frame().ok_or(PagingError::OutOfFrames)?;
                let base = *entry & ADDRESS_MASK & !(LARGE_PAGE_SIZE - 1);
                let rights = *entry & !(ADDRESS_MASK | HUGE);
                let small = table(frame);
                for (i, slot) in small.iter_mut().enumerate() {
                    *slot = (base + i as u64 * PAGE_SIZE) | rights;
                }
                *entry = frame | PRESENT | WRITABLE;
            }
            current = table(*entry & ADDRESS_MASK);
            level -= 1;
        }
        Ok(current)
    }

    /// Whether this address space is loaded on the current CPU. Changes to
    /// an inactive one need no TLB invalidation (INVLPG traps to the
    /// hypervisor under software virtualisation, so skipping it matters).
    fn is_active(&self) -> bool {
        cpu::read_cr3() & ADDRESS_MASK == self.root
    }

    /// Maps `[virtual_address, +size)` to `[physical, +size)` with 4 KiB pages.
    pub fn map(&self, virtual_address: u64, physical: u64, size: u64, access: Access, frames: &mut dyn FrameSource) -> Result<()> {
        if (virtual_address | physical | size) & (PAGE_SIZE - 1) != 0 {
            return Err(PagingError::Misaligned);
        }
        let active = self.is_active();
        let mut offset = 0;
        while offset < size {
            let page = virtual_address + offset;
            let leaf = self.walk(page, 0, frames)?;
            leaf[index(page, 0)] = (physical + offset) | access.bits();
            if active {
                cpu::invalidate_page(page);
            }
            offset += PAGE_SIZE;
        }
        Ok(())
    }

    /// Maps `[virtual_address, +size)` to `[physical, +size)` with 2 MiB pages
    /// where both are aligned, 4 KiB pages elsewhere.
    pub fn map_large(&self, virtual_address: u64, physical: u64, size: u64, access: Access, frames: &mut dyn FrameSource) -> Result<()> {
        if (virtual_address | physical | size) & (PAGE_SIZE - 1) != 0 {
            return Err(PagingError::Misaligned);
        }
        let active = self.is_active();
        let mut offset = 0;
        while offset < size {
            let page = virtual_address + offset;
            let frame = physical + offset;
            if page.is_multiple_of(LARGE_PAGE_SIZE) && frame.is_multiple_of(LARGE_PAGE_SIZE) && size - offset >= LARGE_PAGE_SIZE {
                let directory = self.walk(page, 1, frames)?;
                directory[index(page, 1)] = frame | access.bits() | HUGE;
                if active {
                    cpu::invalidate_page(page);
                }
                offset += LARGE_PAGE_SIZE;
            } else {
                self.map(page, frame, PAGE_SIZE, access, frames)?;
                offset += PAGE_SIZE;
            }
        }
        Ok(())
    }

    /// Removes the 4 KiB mapping of `page` (splitting a large page if needed).
    /// Only this CPU's TLB is flushed; callers unmap only pages no other CPU
    /// has touched (fresh guard pages).
    pub fn unmap(&self, page: u64, frames: &mut dyn FrameSource) -> Result<()> {
        if page & (PAGE_SIZE - 1) != 0 {
            return Err(PagingError::Misaligned);
        }
        let leaf = self.walk(page, 0, frames)?;
        leaf[index(page, 0)] = 0;
        if self.is_active() {
            cpu::invalidate_page(page);
        }
        Ok(())
    }

    /// The physical address `virtual_address` maps to, and whether it is
    /// writable and executable.
    pub fn translate(&self, virtual_address: u64) -> Option<Translation> {
        let mut current = table(self.root);
        let mut level = 3;
        loop {
            let entry = current[index(virtual_address, level)];
            if entry & PRESENT == 0 {
                return None;
            }
            let page_size_bits = 12 + 9 * level;
            if level == 0 || (entry & HUGE != 0) {
                let base = entry & ADDRESS_MASK & !((1u64 << page_size_bits) - 1);
                return Some(Translation {
                    physical: base + (virtual_address & ((1u64 << page_size_bits) - 1)),
                    writable: entry & WRITABLE != 0,
                    executable: entry & NO_EXECUTE == 0,
                    uncached: entry & CACHE_DISABLE != 0,
                });
            }
            current = table(entry & ADDRESS_MASK);
            level -= 1;
        }
    }

    /// Loads this address space on the current CPU.
    ///
    /// # Safety
    /// The tables must map the running code, the current stack and every
    /// live object at the addresses they already have.
    pub unsafe fn activate(&self) {
        // SAFETY: per the caller.
        unsafe { cpu::write_cr3(self.root) };
    }
}

/// What an address translates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub physical: u64,
    pub writable: bool,
    pub executable: bool,
    pub uncached: bool,
}

unsafe extern "C" {
    static __kernel_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __kernel_end: u8;
}

/// The image's sections, from the linker script.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    pub start: u64,
    pub text_end: u64,
    pub rodata_start: u64,
    pub rodata_end: u64,
    pub data_start: u64,
    pub end: u64,
}

/// Where the linker put the kernel's sections.
pub fn image_layout() -> ImageLayout {
    ImageLayout {
        start: &raw const __kernel_start as u64,
        text_end: &raw const __text_end as u64,
        rodata_start: &raw const __rodata_start as u64,
        rodata_end: &raw const __rodata_end as u64,
        data_start: &raw const __data_start as u64,
        end: &raw const __kernel_end as u64,
    }
}

/// Builds the kernel's own tables: RAM `[0, ram_end)` identity mapped, the
/// image with per-section rights, page 0 and the guard pages in `guards`
/// unmapped. Does not load them.
pub fn build_kernel_space(ram_end: u64, guards: &[u64], frames: &mut dyn FrameSource) -> Result<AddressSpace> {
    let space = AddressSpace::new(frames)?;
    let layout = image_layout();
    let ram_end = ram_end.next_multiple_of(PAGE_SIZE);
    // Below the image: data (page 0 left out to catch null pointers).
    space.map(PAGE_SIZE, PAGE_SIZE, layout.start - PAGE_SIZE, Access::Data, frames)?;
    space.map(layout.start, layout.start, layout.text_end - layout.start, Access::Text, frames)?;
    space.map(layout.rodata_start, layout.rodata_start, layout.rodata_end - layout.rodata_start, Access::ReadOnly, frames)?;
    let data_end = layout.end.next_multiple_of(PAGE_SIZE);
    space.map(layout.data_start, layout.data_start, data_end - layout.data_start, Access::Data, frames)?;
    // Up to the next 2 MiB boundary with small pages, then large pages.
    let large_start = data_end.next_multiple_of(LARGE_PAGE_SIZE).min(ram_end.max(data_end));
    if large_start > data_end {
        space.map(data_end, data_end, large_start - data_end, Access::Data, frames)?;
    }
    if ram_end > large_start {
        space.map_large(large_start, large_start, ram_end - large_start, Access::Data, frames)?;
    }
    for &guard in guards {
        space.unmap(guard, frames)?;
    }
    Ok(space)
}
