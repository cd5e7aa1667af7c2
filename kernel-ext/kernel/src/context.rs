//! What kind of code runs on this CPU right now: a hard-IRQ handler, a
//! real-time thread, or ordinary process context. Policy checks (no heap in
//! RT threads, no blocking in interrupt context) ask here.

use core::sync::atomic::Ordering;

use crate::cpu_local;

/// Whether a real-time thread is running on this CPU.
pub fn in_realtime_thread() -> bool {
    cpu_local::is_installed() && cpu_local::current().realtime.load(Ordering::Relaxed) != 0
}

/// Whether this CPU is inside a hard-IRQ handler.
pub fn in_interrupt() -> bool {
    cpu_local::is_installed() && cpu_local::current().irq_depth.load(Ordering::Relaxed) != 0
}

/// The name of the running thread, for reports (a copy: a slot's name
/// changes when the slot is reused).
pub fn current_name() -> crate::thread::ThreadName {
    match crate::thread::try_current() {
        Some(thread) => thread.name(),
        None => crate::thread::ThreadName::new("boot"),
    }
}

/// The running CPU's index, or 0 before per-CPU data exists.
pub fn cpu_index() -> u32 {
    if cpu_local::is_installed() { cpu_local::current().index } else { 0 }
}
