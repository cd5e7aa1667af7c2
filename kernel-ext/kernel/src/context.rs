//! What kind of code runs on this CPU right now: a hard-IRQ handler, a
//! real-time thread, or ordinary process context. Policy checks (no heap in
//! RT threads, no blocking in interrupt context) ask here.
//!
//! The preempt-count-like counters live here, one block per CPU indexed by
//! the CPU's index: the hard-IRQ nesting depth (the trap entry and exit
//! move it) and whether a real-time thread runs (the scheduler sets it at
//! each switch). The bottom-half depth is softirq's; the running thread is
//! the scheduler's.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::cpu_local::{self, MAX_CPUS};

/// One CPU's context counters, on a cache line of their own (only that CPU
/// writes them).
#[repr(align(64))]
pub struct CpuContext {
    /// Hard-IRQ nesting depth (0 = not in an interrupt handler).
    irq_depth: AtomicU32,
    /// Set while a real-time thread runs on this CPU.
    realtime: AtomicBool,
}

impl CpuContext {
    const fn new() -> Self {
        Self { irq_depth: AtomicU32::new(0), realtime: AtomicBool::new(false) }
    }

    /// Whether a real-time thread runs on this CPU.
    #[inline(always)]
    pub fn in_realtime_thread(&self) -> bool {
        self.realtime.load(Ordering::Relaxed)
    }

    /// Whether this CPU is inside a hard-IRQ handler.
    #[inline(always)]
    pub fn in_interrupt(&self) -> bool {
        self.irq_depth.load(Ordering::Relaxed) != 0
    }

    /// Enters a hard-IRQ handler (the trap entry, on this CPU's block).
    #[inline(always)]
    pub fn irq_enter(&self) {
        self.irq_depth.fetch_add(1, Ordering::Relaxed);
    }

    /// Leaves a hard-IRQ handler; whether it was the outermost one (its
    /// exit may then run softirqs and reschedule).
    #[inline(always)]
    pub fn irq_exit(&self) -> bool {
        self.irq_depth.fetch_sub(1, Ordering::Relaxed) == 1
    }

    /// Records whether the thread now running on this CPU is a real-time
    /// one (the scheduler, at each switch and at a class change of the
    /// running thread, on this CPU's block).
    #[inline(always)]
    pub fn set_realtime(&self, realtime: bool) {
        self.realtime.store(realtime, Ordering::Release);
    }
}

static CPUS: [CpuContext; MAX_CPUS] = [const { CpuContext::new() }; MAX_CPUS];

/// The counters of CPU `cpu` (an index below `MAX_CPUS`, as
/// [`cpu_local::current_index`] gives; only that CPU may change them).
#[inline(always)]
pub fn on(cpu: usize) -> &'static CpuContext {
    &CPUS[cpu]
}

/// This CPU's counters (the block is installed).
#[inline(always)]
pub fn here() -> &'static CpuContext {
    &CPUS[cpu_local::current_index()]
}

/// Whether a real-time thread is running on this CPU.
#[inline]
pub fn in_realtime_thread() -> bool {
    cpu_local::is_installed() && here().in_realtime_thread()
}

/// Whether this CPU is inside a hard-IRQ handler.
#[inline]
pub fn in_interrupt() -> bool {
    cpu_local::is_installed() && here().in_interrupt()
}

/// The running CPU's index, or 0 before per-CPU data exists.
#[inline]
pub fn cpu_index() -> u32 {
    if cpu_local::is_installed() { cpu_local::current().index() } else { 0 }
}
