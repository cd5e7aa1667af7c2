//! Tasklet disable against a running handler (issue 11, defect 6).
//!
//! Rule `tasklet::disable_waits_for_a_running_handler`: when `disable`
//! returns, the handler is not running on any CPU and does not start until
//! the matching enable. One thread is the TASKLET softirq taking the
//! tasklet off its queue and running it; the other disables it.
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use rtedge_engine::tasklet::{RunDecision, ScheduleOutcome, TaskletCell};

/// The softirq side: take the queued tasklet and run its handler, which
/// marks itself inside while it runs.
fn softirq(cell: &TaskletCell, inside: &AtomicBool) {
    if cell.begin_run() == RunDecision::Run {
        inside.store(true, Ordering::Release);
        loom::thread::yield_now();
        inside.store(false, Ordering::Release);
        cell.end_run();
    }
}

fn run_model(disable: fn(&TaskletCell)) {
    loom::model(move || {
        let cell = Arc::new(TaskletCell::new(0));
        let inside = Arc::new(AtomicBool::new(false));
        assert_eq!(cell.schedule(), ScheduleOutcome::Queue);
        let handler = {
            let (cell, inside) = (cell.clone(), inside.clone());
            loom::thread::spawn(move || softirq(&cell, &inside))
        };
        disable(&cell);
        let (inside_now, running_now) = (inside.load(Ordering::Acquire), cell.load().is_running());
        assert!(!inside_now && !running_now, "the handler runs after disable returned (inside {inside_now}, RUN bit {running_now})");
        handler.join().unwrap();
        assert!(!inside.load(Ordering::Acquire));
    });
}

/// Today's `Tasklet::disable` (before the fix) only raised the count: the
/// model finds the handler still running after it returned.
#[test]
#[should_panic(expected = "the handler runs after disable returned")]
fn old_disable_returns_while_the_handler_runs() {
    run_model(|cell| {
        cell.disable_nosync();
    });
}

/// The fixed `disable` waits for the running handler.
#[test]
fn disable_waits_for_a_running_handler() {
    run_model(|cell| {
        cell.disable(loom::thread::yield_now);
    });
}

/// A disabled tasklet scheduled on one CPU while another enables it runs
/// exactly once, never while still disabled.
#[test]
fn enable_racing_schedule_gives_exactly_one_run() {
    loom::model(|| {
        let cell = Arc::new(TaskletCell::new(1));
        let runs = Arc::new(loom::sync::atomic::AtomicU32::new(0));
        let scheduler = {
            let cell = cell.clone();
            loom::thread::spawn(move || cell.schedule())
        };
        let queue_on_enable = cell.enable() == Some(true);
        let outcome = scheduler.join().unwrap();
        // Whoever got "queue" runs it, once.
        let queued = usize::from(queue_on_enable) + usize::from(outcome == ScheduleOutcome::Queue);
        assert_eq!(queued, 1, "schedule {outcome:?}, enable queued {queue_on_enable}");
        if cell.begin_run() == RunDecision::Run {
            runs.fetch_add(1, Ordering::AcqRel);
            cell.end_run();
        }
        assert_eq!(runs.load(Ordering::Acquire), 1);
        assert_eq!(cell.load().0, 0);
    });
}
