//! The general heap: `talc` over the free RAM, behind an interrupt-safe
//! spinlock, as the global allocator.
//!
//! Real-time threads must never allocate from it (its worst case is not
//! bounded): every allocation checks the running context and counts, logs
//! and (in strict mode, the default) panics on an allocation from an RT
//! thread. RT code uses memory taken at creation or the rt-pool.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use talc::DefaultBinning;
use talc::base::Talc;
use talc::source::Manual;

use crate::sync::IrqSpinLock;

struct KernelHeap {
    talc: IrqSpinLock<Talc<Manual, DefaultBinning>>,
}

// SAFETY: all access to the talc state goes through the spinlock.
unsafe impl Sync for KernelHeap {}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap { talc: IrqSpinLock::new(Talc::new(Manual)) };

/// Allocations refused or attempted from real-time context.
static RT_VIOLATIONS: AtomicU64 = AtomicU64::new(0);
static FAILED_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LAST_ALLOCATION_FAILED: AtomicBool = AtomicBool::new(false);
/// Whether an RT-context allocation panics (true) or is only counted.
static STRICT_RT_CHECK: AtomicBool = AtomicBool::new(true);

fn check_context(layout: Layout) {
    if crate::context::in_realtime_thread() {
        RT_VIOLATIONS.fetch_add(1, Ordering::Relaxed);
        if STRICT_RT_CHECK.load(Ordering::Relaxed) {
            panic!(
                "heap allocation of {} bytes from a real-time thread (RT threads must use memory taken at creation or the rt-pool)",
                layout.size()
            );
        }
    }
}

// SAFETY: talc returns blocks that satisfy the layout and are not in use;
// deallocation passes back exactly what was allocated.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check_context(layout);
        // SAFETY: the layout is non-zero sized per GlobalAlloc's contract.
        let block = unsafe { self.talc.lock().allocate(layout) };
        match block {
            Some(block) => {
                LAST_ALLOCATION_FAILED.store(false, Ordering::Relaxed);
                block.as_ptr()
            }
            None => {
                FAILED_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
                LAST_ALLOCATION_FAILED.store(true, Ordering::Relaxed);
                core::ptr::null_mut()
            }
        }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        check_context(layout);
        // SAFETY: the pointer came from `alloc` with this layout.
        unsafe { self.talc.lock().deallocate(pointer, layout) };
    }
}

/// Gives `[start, start + size)` to the heap. Returns false if it was too
/// small to use.
///
/// # Safety
/// The range must be free, mapped RAM, given exactly once, never used
/// otherwise.
pub unsafe fn add_region(start: u64, size: u64) -> bool {
    // SAFETY: per the caller.
    unsafe { HEAP.talc.lock().claim(start as *mut u8, size as usize) }.is_some()
}

/// A zeroed, page-aligned 4 KiB block (for page tables), never freed.
pub fn allocate_zeroed_page() -> Option<*mut u8> {
    let layout = Layout::from_size_align(4096, 4096).ok()?;
    // SAFETY: the layout is valid and non-zero sized.
    let block = unsafe { alloc::alloc::alloc_zeroed(layout) };
    NonNull::new(block).map(NonNull::as_ptr)
}

/// Heap figures for `INFO memory` and leak checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStatistics {
    pub allocated_bytes: usize,
    pub allocation_count: usize,
    pub available_bytes: usize,
    pub claimed_bytes: usize,
    pub total_allocations: u64,
    pub failed_allocations: u64,
    pub realtime_violations: u64,
}

/// The heap's current figures.
pub fn statistics() -> HeapStatistics {
    let talc = HEAP.talc.lock();
    let counters = talc.counters();
    HeapStatistics {
        allocated_bytes: counters.allocated_bytes,
        allocation_count: counters.allocation_count,
        available_bytes: counters.available_bytes,
        claimed_bytes: counters.claimed_bytes,
        total_allocations: counters.total_allocation_count,
        failed_allocations: FAILED_ALLOCATIONS.load(Ordering::Relaxed),
        realtime_violations: RT_VIOLATIONS.load(Ordering::Relaxed),
    }
}

/// Whether the most recent allocation failed (the panic handler uses this
/// to report out-of-memory with its own exit code).
pub fn last_allocation_failed() -> bool {
    LAST_ALLOCATION_FAILED.load(Ordering::Relaxed)
}

/// Chooses whether an RT-context allocation panics (default) or is counted.
pub fn set_strict_realtime_check(strict: bool) {
    STRICT_RT_CHECK.store(strict, Ordering::Relaxed);
}
