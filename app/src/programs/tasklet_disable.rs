//! Program 1, second variant: an RT thread disables its tasklet and a
//! cleanup handler re-enables it.
//!
//! A 500 ms periodic RT thread (`tasklet-disable-rt`) hi-schedules the
//! tasklet `tasklet-disable` every period. On its 20th period
//! (`tasklet_disable_at=N` changes that) it disables the tasklet first: that
//! schedule and every later one park a single pending run. The thread
//! pushed a cleanup handler that re-enables the tasklet; it runs when the
//! thread is cancelled (`KILL tasklet-disable-rt`, `MODULE UNLOAD
//! tasklet-disable`), and the pending run then happens exactly once.
//!
//! Observe: `tasklet_disable.runs` stops at `tasklet_disable.runs_at_disable`
//! while disabled, then grows by one; `tasklet_disable.runs_after_enable`
//! becomes 1; an event `tasklet-pending-run` on channel `events`.

use alloc::string::String;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rtedge_kernel::modules::Module;
use rtedge_kernel::shared::{Access, SharedBool, SharedInt, SharedValue};
use rtedge_kernel::tasklet::Tasklet;
use rtedge_kernel::{thread, time};

use super::OwnedThread;

const PERIOD_NS: u64 = 500_000_000;
const PRIORITY: u8 = 1;
const DEFAULT_DISABLE_AT: u64 = 20;
const THREAD_NAME: &str = "tasklet-disable-rt";
const TASKLET_NAME: &str = "tasklet-disable";

static RUNS: SharedInt = SharedInt::new("tasklet_disable.runs", Access::ReadOnly, 0);
static PERIODS: SharedInt = SharedInt::new("tasklet_disable.periods", Access::ReadOnly, 0);
static DISABLED: SharedBool = SharedBool::new("tasklet_disable.disabled", Access::ReadOnly, false);
static RUNS_AT_DISABLE: SharedInt = SharedInt::new("tasklet_disable.runs_at_disable", Access::ReadOnly, -1);
static RUNS_AFTER_ENABLE: SharedInt = SharedInt::new("tasklet_disable.runs_after_enable", Access::ReadOnly, 0);
static STATICS: [&dyn SharedValue; 5] = [&RUNS, &PERIODS, &DISABLED, &RUNS_AT_DISABLE, &RUNS_AFTER_ENABLE];

static TASKLET: Tasklet = Tasklet::new(TASKLET_NAME, tasklet_function, 0);
static RT_THREAD: OwnedThread = OwnedThread::new();
/// The period on which the thread disables the tasklet.
static DISABLE_AT: AtomicU64 = AtomicU64::new(DEFAULT_DISABLE_AT);
/// Set by the thread when it disabled the tasklet; the cleanup handler
/// enables only then (an unmatched enable would be a bug).
static DISABLED_BY_THREAD: AtomicBool = AtomicBool::new(false);
/// Set by the cleanup handler: later runs are the pending one.
static REENABLED: AtomicBool = AtomicBool::new(false);

fn tasklet_function(_: usize) {
    let runs = RUNS.add(1);
    if REENABLED.load(Ordering::Acquire) {
        let after = RUNS_AFTER_ENABLE.add(1);
        log::info!("{TASKLET_NAME}: the pending run happened after the re-enable (run {runs}, {after} since the enable)");
        super::event("tasklet-pending-run", &[("runs", runs), ("since_enable", after)], "tasklet", TASKLET_NAME);
    } else {
        log::debug!("{TASKLET_NAME}: run {runs}");
    }
}

/// The cleanup handler: runs in the RT thread as it is cancelled.
fn tasklet_cleanup(_: usize) {
    if DISABLED_BY_THREAD.swap(false, Ordering::AcqRel) {
        REENABLED.store(true, Ordering::Release);
        DISABLED.set(false);
        TASKLET.enable();
        log::info!("{THREAD_NAME}: cleanup handler: re-enabled the tasklet");
    } else {
        log::debug!("{THREAD_NAME}: cleanup handler: the tasklet was not disabled");
    }
}

fn rt_thread(disable_at: u64) -> i32 {
    if thread::make_periodic(time::now_ns(), PERIOD_NS).is_err() {
        return 1;
    }
    thread::cleanup_push(tasklet_cleanup, 0);
    let mut period = 0u64;
    loop {
        if thread::wait_next_period().is_err() {
            break;
        }
        period += 1;
        PERIODS.set(period as i64);
        if period == disable_at {
            let runs = RUNS.load();
            RUNS_AT_DISABLE.set(runs);
            DISABLED_BY_THREAD.store(true, Ordering::Release);
            DISABLED.set(true);
            // An RT thread: it must not wait for a handler it may have
            // preempted, and it needs no such guarantee here.
            TASKLET.disable_nosync();
            log::info!(
                "{THREAD_NAME}: disabled the tasklet on period {period} after {runs} runs; its next run waits for the cleanup handler"
            );
        }
        TASKLET.hi_schedule();
    }
    thread::cleanup_pop(true);
    0
}

/// After an unload: `Some(pending runs after the re-enable)` if the thread
/// had disabled the tasklet (must be `Some(1)`), `None` if it never did.
pub fn pending_runs_after_enable() -> Option<i64> {
    (RUNS_AT_DISABLE.load() >= 0).then(|| RUNS_AFTER_ENABLE.load())
}

pub struct TaskletDisableProgram;

pub static MODULE: TaskletDisableProgram = TaskletDisableProgram;

impl Module for TaskletDisableProgram {
    fn name(&self) -> &'static str {
        "tasklet-disable"
    }

    fn description(&self) -> &'static str {
        "RT thread disables its tasklet on period 20; a cleanup handler re-enables it on cancel (one pending run)"
    }

    fn init(&'static self) -> Result<(), String> {
        RUNS.set(0);
        PERIODS.set(0);
        DISABLED.set(false);
        RUNS_AT_DISABLE.set(-1);
        RUNS_AFTER_ENABLE.set(0);
        DISABLED_BY_THREAD.store(false, Ordering::Release);
        REENABLED.store(false, Ordering::Release);
        while TASKLET.disable_count() > 0 {
            TASKLET.enable();
        }
        let disable_at = super::setting_u64("tasklet_disable_at", DEFAULT_DISABLE_AT).max(1);
        DISABLE_AT.store(disable_at, Ordering::Relaxed);
        super::register_statics(&STATICS);
        TASKLET.register();
        // A failed start undoes what init did so far.
        RT_THREAD.start_realtime(THREAD_NAME, PRIORITY, move || rt_thread(disable_at)).inspect_err(|_| self.exit())
    }

    fn exit(&'static self) {
        // Cancelling the thread runs its cleanup handler, which re-enables
        // the tasklet; `kill` then waits for the pending run to happen.
        RT_THREAD.delete(THREAD_NAME);
        TASKLET.kill();
        TASKLET.unregister();
        super::unregister_statics(&STATICS);
        let at = DISABLE_AT.load(Ordering::Relaxed);
        match RUNS_AT_DISABLE.load() {
            -1 => log::info!("{TASKLET_NAME}: unloaded after {} runs (before period {at}: never disabled)", RUNS.load()),
            disabled => log::info!(
                "{TASKLET_NAME}: unloaded: {disabled} runs before the disable, {} pending run(s) after the re-enable",
                RUNS_AFTER_ENABLE.load()
            ),
        }
    }

    fn threads(&self) -> usize {
        RT_THREAD.live_count()
    }
}
