//! Locks: spinlocks safe across CPUs and with interrupts. The sleeping
//! locks (`Mutex`, `Semaphore`) block, so they live with the threads
//! (`thread::mutex`, `thread::semaphore`); `lock_bh` lives beside the
//! bottom halves (`softirq`).
//!
//! Lock order (outermost first); never take an earlier lock while holding a
//! later one:
//! 1. sleeping locks (`Mutex`, semaphores): never held across an
//!    interrupt-disabled section's blocking wait
//!    1a. the priority-inheritance lock (`thread::pi`, inside `Mutex`)
//! 2. subsystem registries (IRQ handler table, thread table, timer registry)
//! 3. wait-queue lists
//! 4. per-CPU run queues (`scheduler`), then per-CPU alarm queues
//! 5. a thread's own statistics lock
//! 6. the heap
//! 7. the console
//!
//! The console lock is innermost: anything may log while holding a lock.
//!
//! From a real-time thread only `IrqSpinLock`, `Mutex` (it lends the RT
//! thread's priority to the owner) and `Semaphore` may be used; taking a
//! `SpinLock` there is caught in strict mode (see `spin`).

mod spin;

pub(crate) use spin::check_realtime_context;
pub use spin::{
    IrqSpinLock, IrqSpinLockGuard, IrqsOffReport, LONG_SECTION_NS, SpinLock, SpinLockGuard, irqs_off_report, irqs_off_timing,
    realtime_violations, reset_irqs_off, set_irqs_off_timing, set_strict_realtime_check,
};
