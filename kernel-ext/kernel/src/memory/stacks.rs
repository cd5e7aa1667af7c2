//! Guarded stacks for threads and per-CPU exception stacks.
//!
//! Each stack gets a 1 MiB slot in a virtual window of its own
//! ([`STACK_WINDOW`]); the slot's lowest page is never mapped, so
//! running off the bottom of a stack faults on that guard page instead of
//! overwriting whatever lies below. Frames come from the heap. A freed stack
//! keeps its mapping and goes to a free list for reuse, so no mapping is ever
//! removed and no other CPU can hold a stale translation of a stack.

use alloc::vec::Vec;
use core::alloc::Layout;

use rtedge_arch::paging::{Access, PAGE_SIZE, STACK_SLOT_SIZE, STACK_WINDOW};

use super::{HeapFrames, MemoryError, Result, with_kernel_space};
use crate::sync::IrqSpinLock;

/// Largest stack a slot holds (the slot minus its guard page).
pub const MAX_STACK_SIZE: u64 = STACK_SLOT_SIZE - PAGE_SIZE;
/// Number of slots in the window (bounds how many stacks can exist).
pub const MAX_SLOTS: u64 = 4096;

/// A stack in the window. Dropping it returns it for reuse.
#[derive(Debug)]
pub struct Stack {
    slot: u64,
    size: u64,
}

impl Stack {
    /// The lowest usable address.
    pub fn bottom(&self) -> u64 {
        slot_base(self.slot) + PAGE_SIZE
    }

    /// The initial stack pointer (16-byte aligned).
    pub fn top(&self) -> u64 {
        self.bottom() + self.size
    }

    /// Usable bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The unmapped guard page below the stack.
    pub fn guard_page(&self) -> u64 {
        slot_base(self.slot)
    }

    /// How many bytes at the bottom were never written (stack high-water
    /// mark, from the fill pattern laid down at allocation).
    pub fn untouched_bytes(&self) -> u64 {
        // SAFETY: the range is this live stack's.
        unsafe { untouched_bytes_in(self.bottom(), self.top()) }
    }
}

/// [`Stack::untouched_bytes`] of the stack that spans `[bottom, top)`,
/// for callers that read it without holding the stack (a scan is long:
/// it must not run with interrupts off). If the stack was freed
/// meanwhile, the figure is that of its slot's next user, or of nobody.
///
/// # Safety
/// `[bottom, top)` must be a range that a [`Stack`] spanned: stack slots
/// stay mapped once created (see the module doc), so reading it never
/// faults.
pub unsafe fn untouched_bytes_in(bottom: u64, top: u64) -> u64 {
    let mut address = bottom;
    while address < top {
        // SAFETY: per the contract, the range is mapped stack memory.
        if unsafe { core::ptr::read_volatile(address as *const u64) } != FILL_PATTERN {
            break;
        }
        address += 8;
    }
    address - bottom
}

const FILL_BYTE: u8 = 0xa5;
const FILL_PATTERN: u64 = 0xa5a5_a5a5_a5a5_a5a5;

fn slot_base(slot: u64) -> u64 {
    STACK_WINDOW + slot * STACK_SLOT_SIZE
}

struct Slots {
    next_slot: u64,
    /// Freed stacks, by (slot, size), reused for requests of the same size.
    free: Vec<(u64, u64)>,
    live: u64,
}

static SLOTS: IrqSpinLock<Slots> = IrqSpinLock::new(Slots { next_slot: 0, free: Vec::new(), live: 0 });

/// Allocates a stack of at least `size` bytes (rounded up to 16 KiB).
/// Must not be called from real-time context (it may allocate).
pub fn allocate(size: u64) -> Result<Stack> {
    let size = size.max(PAGE_SIZE).next_multiple_of(16 * 1024);
    if size > MAX_STACK_SIZE {
        return Err(MemoryError::TooLarge);
    }
    {
        let mut slots = SLOTS.lock();
        if let Some(position) = slots.free.iter().position(|&(_, free_size)| free_size == size) {
            let (slot, _) = slots.free.swap_remove(position);
            slots.live += 1;
            drop(slots);
            let stack = Stack { slot, size };
            fill(&stack);
            return Ok(stack);
        }
    }
    let slot = {
        let mut slots = SLOTS.lock();
        if slots.next_slot >= MAX_SLOTS {
            return Err(MemoryError::TooLarge);
        }
        slots.next_slot += 1;
        // Room for this stack on the free list later, so freeing never allocates.
        let needed = slots.next_slot as usize;
        let additional = needed.saturating_sub(slots.free.len());
        slots.free.reserve(additional);
        slots.next_slot - 1
    };
    let layout = Layout::from_size_align(size as usize, PAGE_SIZE as usize).map_err(|_| MemoryError::TooLarge)?;
    // SAFETY: the layout has a non-zero size.
    let frames = unsafe { alloc::alloc::alloc(layout) };
    if frames.is_null() {
        return Err(MemoryError::OutOfMemory);
    }
    let stack = Stack { slot, size };
    with_kernel_space(|space| space.map(stack.bottom(), frames as u64, size, Access::Data, &mut HeapFrames))?;
    SLOTS.lock().live += 1;
    fill(&stack);
    Ok(stack)
}

fn fill(stack: &Stack) {
    // SAFETY: the stack is mapped and not yet in use. One `memset` (a single
    // REP STOS) rather than a loop: cheap even under instruction emulation.
    unsafe { core::ptr::write_bytes(stack.bottom() as *mut u8, FILL_BYTE, stack.size() as usize) };
}

impl Drop for Stack {
    fn drop(&mut self) {
        let mut slots = SLOTS.lock();
        slots.live -= 1;
        // Capacity was reserved at allocation, so this push never allocates.
        slots.free.push((self.slot, self.size));
    }
}

/// If `address` is the guard page of a window stack, the slot's range.
pub fn guard_hit(address: u64) -> Option<(u64, u64)> {
    let window_end = STACK_WINDOW + MAX_SLOTS * STACK_SLOT_SIZE;
    if !(STACK_WINDOW..window_end).contains(&address) {
        return None;
    }
    let slot = (address - STACK_WINDOW) / STACK_SLOT_SIZE;
    let base = slot_base(slot);
    (address < base + PAGE_SIZE).then_some((base + PAGE_SIZE, base + STACK_SLOT_SIZE))
}

/// Live stacks and slots ever used.
pub fn counts() -> (u64, u64) {
    let slots = SLOTS.lock();
    (slots.live, slots.next_slot)
}

/// Whether the window address is mapped (tests).
pub fn is_mapped(address: u64) -> bool {
    crate::memory::kernel_space().and_then(|space| space.translate(address)).is_some()
}
