//! `ksoftirqd/N`: the per-CPU thread that takes over a softirq flood (the
//! budget ran out) or work raised from thread context, so the fair
//! scheduler shares it with everything else.
//!
//! Here lives the scheduler's side of the knot with `softirq`: this file
//! starts the daemons and registers the hooks softirq calls up through
//! (wake a daemon, preempt after `bh_enable`, sleep), so `softirq` itself
//! imports nothing of threads.

use alloc::string::String;
use core::fmt::Write;

use crate::cpu_local::MAX_CPUS;
use crate::softirq::{self, SchedulerHooks};
use crate::sync::IrqSpinLock;

use super::{Builder, ThreadError, ThreadId};

/// Each CPU's daemon, once started.
static DAEMONS: IrqSpinLock<[Option<ThreadId>; MAX_CPUS]> = IrqSpinLock::new([None; MAX_CPUS]);

static HOOKS: SchedulerHooks = SchedulerHooks { wake_daemon: wake, preempt_if_needed: super::preempt_if_needed, sleep_ns };

/// Registers the scheduler's side with softirq (when scheduling starts).
pub(super) fn register_hooks() {
    softirq::set_scheduler_hooks(&HOOKS);
}

fn wake(cpu_index: u32) {
    let daemon = DAEMONS.lock().get(cpu_index as usize).copied().flatten();
    if let Some(daemon) = daemon {
        let _ = super::wake_up(daemon);
    }
}

fn sleep_ns(ns: u64) {
    let _ = super::sleep_ns(ns);
}

fn main(cpu_index: u32) -> i32 {
    loop {
        if super::should_stop() {
            return 0;
        }
        // Sleeps only if nothing is pending, in the same step that ends
        // the deferral (see `softirq::daemon_try_sleep`).
        if softirq::daemon_try_sleep(cpu_index) {
            super::suspend_self();
            softirq::daemon_awake(cpu_index);
            continue;
        }
        // One budget's worth, then let the fair scheduler run others.
        softirq::run_budget();
        super::yield_cpu();
    }
}

/// Starts `ksoftirqd/N` on CPU `cpu_index`.
pub fn start_ksoftirqd(cpu_index: u32) -> Result<(), ThreadError> {
    let mut name = String::from("ksoftirqd/");
    let _ = write!(name, "{cpu_index}");
    let id = Builder::new(&name).cpu(cpu_index).spawn(move || main(cpu_index))?;
    if let Some(slot) = DAEMONS.lock().get_mut(cpu_index as usize) {
        *slot = Some(id);
    }
    Ok(())
}
