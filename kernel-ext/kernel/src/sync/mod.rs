//! Locks: spinlocks safe across CPUs and with interrupts.
//!
//! Lock order (outermost first); never take an earlier lock while holding a
//! later one:
//! 1. subsystem registries (IRQ handler table, timer registry)
//! 2. per-CPU alarm queues
//! 3. the heap
//! 4. the console
//!
//! The console lock is innermost: anything may log while holding a lock.

mod spin;

pub use spin::{IrqSpinLock, IrqSpinLockGuard};
