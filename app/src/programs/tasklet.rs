//! Program 1: a tasklet scheduled from a real-time thread.
//!
//! A 500 ms periodic RT thread (`tasklet-rt`, priority 1) writes a message
//! into a shared buffer (the shared static `tasklet.message`) and
//! hi-schedules the tasklet `tasklet`; the tasklet, in HI softirq context,
//! logs the message with a wall-clock timestamp and the delay from the RT
//! thread's schedule call to its own start. `init` also schedules it once
//! (with "Linux tasklet called in init_module"), as the seed did.
//!
//! Observe: `tasklet.runs`, `tasklet.last_delay_ns`, `tasklet.periods`,
//! `tasklet.message` (shared statics), `LATENCY tasklet.delay`, `TASKLET
//! HI|DISABLE|ENABLE tasklet`, and a console line every tenth run (each run
//! at `log=debug`).

use alloc::string::String;
use core::fmt::Write;

use rtedge_engine::histogram::LatencyHistogram;
use rtedge_kernel::latency;
use rtedge_kernel::modules::Module;
use rtedge_kernel::shared::{Access, SharedInt, SharedText, SharedValue};
use rtedge_kernel::sync::IrqSpinLock;
use rtedge_kernel::tasklet::Tasklet;
use rtedge_kernel::thread;
use rtedge_kernel::time;

use super::{OwnedThread, TextBuffer};

const PERIOD_NS: u64 = 500_000_000;
const PRIORITY: u8 = 1;
/// The argument the RT thread reports (the seed printed its thread arg).
const THREAD_ARG: usize = 0x2a;
/// One console line per this many runs (each run logs at debug level).
const LOG_EVERY: i64 = 10;
const THREAD_NAME: &str = "tasklet-rt";

static MESSAGE: SharedText = SharedText::new("tasklet.message", Access::ReadOnly);
static RUNS: SharedInt = SharedInt::new("tasklet.runs", Access::ReadOnly, 0);
static PERIODS: SharedInt = SharedInt::new("tasklet.periods", Access::ReadOnly, 0);
static LAST_DELAY_NS: SharedInt = SharedInt::new("tasklet.last_delay_ns", Access::ReadOnly, 0);
static STATICS: [&dyn SharedValue; 4] = [&MESSAGE, &RUNS, &PERIODS, &LAST_DELAY_NS];

/// RT thread to tasklet delay, for `LATENCY tasklet.delay`.
static DELAY: latency::Source = IrqSpinLock::new(LatencyHistogram::new());
const DELAY_SOURCE: &str = "tasklet.delay";

static TASKLET: Tasklet = Tasklet::new("tasklet", tasklet_function, 0);
static RT_THREAD: OwnedThread = OwnedThread::new();

/// Seconds and microseconds of the wall clock (do_gettimeofday), or of the
/// time since boot when no wall clock was found.
fn timestamp() -> (u64, u64) {
    let ns = time::realtime_ns().unwrap_or_else(time::now_ns);
    (ns / 1_000_000_000, (ns % 1_000_000_000) / 1000)
}

/// Runs in HI softirq context: no allocation, no blocking.
fn tasklet_function(_: usize) {
    let delay = time::now_ns().saturating_sub(TASKLET.scheduled_at_ns());
    let runs = RUNS.add(1);
    LAST_DELAY_NS.set(delay as i64);
    latency::record(&DELAY, delay);
    let message = MESSAGE.load();
    let (seconds, micros) = timestamp();
    if runs == 1 || runs % LOG_EVERY == 0 {
        log::info!("tasklet: {} at {seconds}.{micros:06} (run {runs}, RT->tasklet {} us)", message.as_str(), delay / 1000);
    } else {
        log::debug!("tasklet: {} at {seconds}.{micros:06} (run {runs}, RT->tasklet {delay} ns)", message.as_str());
    }
}

/// The RT thread: runs without touching the heap.
fn rt_thread(arg: usize) -> i32 {
    // The first release one period from now: the run `init` scheduled
    // shows its own message first.
    if thread::make_periodic(time::now_ns() + PERIOD_NS, PERIOD_NS).is_err() {
        return 1;
    }
    loop {
        if thread::wait_next_period().is_err() {
            return 0;
        }
        let period = PERIODS.add(1);
        log::debug!("{THREAD_NAME}: RT-Thread; my arg is {arg:x}");
        let mut text = TextBuffer::<64>::new();
        let _ = write!(text, "Linux tasklet received RT-Thread arg \"{arg:x}\" ({period})");
        MESSAGE.set(text.as_str());
        TASKLET.hi_schedule();
    }
}

pub struct TaskletProgram;

pub static MODULE: TaskletProgram = TaskletProgram;

impl Module for TaskletProgram {
    fn name(&self) -> &'static str {
        "tasklet"
    }

    fn description(&self) -> &'static str {
        "500 ms RT thread hi-schedules a tasklet that logs its message and the RT->tasklet delay"
    }

    fn init(&'static self) -> Result<(), String> {
        RUNS.set(0);
        PERIODS.set(0);
        LAST_DELAY_NS.set(0);
        DELAY.lock().reset();
        // A fresh load starts enabled, whatever an earlier TASKLET DISABLE left.
        while TASKLET.disable_count() > 0 {
            TASKLET.enable();
        }
        super::register_statics(&STATICS);
        latency::register(DELAY_SOURCE, &DELAY);
        TASKLET.register();
        MESSAGE.set("Linux tasklet called in init_module");
        TASKLET.schedule();
        // A failed start undoes what init did so far.
        RT_THREAD.start_realtime(THREAD_NAME, PRIORITY, || rt_thread(THREAD_ARG)).inspect_err(|_| self.exit())
    }

    fn exit(&'static self) {
        RT_THREAD.delete(THREAD_NAME);
        // Waits for a scheduled run to finish: nothing of ours runs after this.
        TASKLET.kill();
        TASKLET.unregister();
        latency::unregister(DELAY_SOURCE);
        super::unregister_statics(&STATICS);
        log::info!("tasklet: unloaded after {} runs", RUNS.load());
    }

    fn threads(&self) -> usize {
        RT_THREAD.live_count()
    }
}
