//! The workqueue's rules (issue 11, defects 1, 2, 3, 9 and 11), each a test
//! named after the rule it proves, with the race window widened where the
//! old code had one (handlers that sleep, a hook between a worker taking an
//! item and running it). The same rules are loom models in
//! `engine/tests/loom_work.rs`. The cross-CPU tests need two CPUs (the SMP
//! profiles); on one CPU they say so and prove the cross-queue form only.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::ktest::{Outcome, Test};
use crate::thread::{self, State};
use crate::workqueue::{self, DelayedWorkItem, FnDelayedWork, FnWork, Work, WorkItem, Workqueue};
use crate::{check, check_eq, time};

use super::{MILLISECOND, SECOND, error};

pub const TESTS: &[Test] = &[
    Test { name: "work::a_work_item_never_runs_twice_at_once_across_cpus", run: non_reentrant_across_cpus },
    Test { name: "work::a_work_item_never_runs_twice_at_once_across_queues", run: non_reentrant_across_queues },
    Test { name: "work::cancel_work_sync_waits_for_an_item_a_worker_has_just_taken", run: cancel_after_take },
    Test { name: "work::delayed_work_is_pending_while_its_timer_is_armed", run: delayed_pending },
    Test { name: "work::cancel_delayed_work_takes_it_off_its_timer_without_waiting", run: cancel_delayed_nosync },
    Test { name: "work::mod_delayed_work_moves_the_expiry_of_a_pending_item", run: mod_delayed },
    Test { name: "work::schedule_delayed_work_on_runs_on_that_cpu", run: delayed_on_cpu },
    Test { name: "work::a_worker_stopped_from_outside_closes_its_list_and_flush_returns", run: stopped_worker },
    Test { name: "work::dropping_a_workqueue_destroys_it", run: drop_destroys },
    Test { name: "work::a_found_queue_is_not_freed_until_its_reference_is_dropped", run: found_outlives_destroy },
];

/// Handler instances now, overlaps seen, runs, and the CPU of each run.
static INSTANCES: AtomicU32 = AtomicU32::new(0);
static OVERLAPS: AtomicU32 = AtomicU32::new(0);
static STARTED: AtomicU32 = AtomicU32::new(0);
static FINISHED: AtomicU32 = AtomicU32::new(0);
static RUN_CPUS: AtomicU64 = AtomicU64::new(0);

fn reset() {
    for counter in [&INSTANCES, &OVERLAPS, &STARTED, &FINISHED] {
        counter.store(0, Ordering::SeqCst);
    }
    RUN_CPUS.store(0, Ordering::SeqCst);
}

/// A handler that stays inside for 20 ms (the window for a second instance).
fn slow_handler(_: &'static FnWork) {
    if INSTANCES.fetch_add(1, Ordering::SeqCst) != 0 {
        OVERLAPS.fetch_add(1, Ordering::SeqCst);
    }
    let run = STARTED.fetch_add(1, Ordering::SeqCst);
    if run < 8 {
        // Four bits per run: the CPU it ran on.
        RUN_CPUS.fetch_or(u64::from(thread::current_cpu() & 0xf) << (4 * run), Ordering::SeqCst);
    }
    let _ = thread::sleep_ns(20 * MILLISECOND);
    INSTANCES.fetch_sub(1, Ordering::SeqCst);
    FINISHED.fetch_add(1, Ordering::SeqCst);
}

/// Sleeps in 1 ms steps until `condition` holds, at most `steps` times.
fn wait_for(steps: u32, condition: impl Fn() -> bool) -> bool {
    for _ in 0..steps {
        if condition() {
            return true;
        }
        let _ = thread::sleep_ns(MILLISECOND);
    }
    condition()
}

/// Two online CPUs to queue on: the first and the last.
fn two_cpus() -> Option<(u32, u32)> {
    let online = thread::online_mask();
    (online.count_ones() > 1).then(|| (online.trailing_zeros(), 63 - online.leading_zeros()))
}

fn non_reentrant_across_cpus() -> Outcome {
    static ITEM: FnWork = FnWork::new(slow_handler, 0);
    let Some((first, second)) = two_cpus() else {
        crate::console_line!("ktest-note: one CPU: the cross-CPU form needs two");
        return Ok(());
    };
    reset();
    check!(workqueue::schedule_work_on(first, &ITEM).map_err(error)?);
    check!(wait_for(5000, || STARTED.load(Ordering::SeqCst) == 1), "the first run never started");
    // It runs on `first`; queued for `second` it must wait for that run and
    // then run on `first`'s worker.
    check!(workqueue::schedule_work_on(second, &ITEM).map_err(error)?, "a running item must be queueable");
    check!(wait_for(5000, || FINISHED.load(Ordering::SeqCst) == 2), "the second run never finished");
    check_eq!(OVERLAPS.load(Ordering::SeqCst), 0);
    let cpus = RUN_CPUS.load(Ordering::SeqCst);
    check_eq!((cpus & 0xf, (cpus >> 4) & 0xf), (u64::from(first), u64::from(first)));
    check_eq!(ITEM.work().runs(), 2);
    Ok(())
}

fn non_reentrant_across_queues() -> Outcome {
    static ITEM: FnWork = FnWork::new(slow_handler, 0);
    reset();
    let one = Workqueue::create_single_thread("wq_rule_one").map_err(error)?;
    let two = Workqueue::create_single_thread("wq_rule_two").map_err(error)?;
    check!(one.queue(&ITEM));
    check!(wait_for(5000, || STARTED.load(Ordering::SeqCst) == 1), "the first run never started");
    // Queued on another queue while it runs: it follows the run on the
    // worker that has it, so `one`'s flush covers it.
    check!(two.queue(&ITEM), "a running item must be queueable");
    one.flush();
    check_eq!(FINISHED.load(Ordering::SeqCst), 2);
    check_eq!(OVERLAPS.load(Ordering::SeqCst), 0);
    check_eq!(two.backlog(), 0);
    two.destroy();
    one.destroy();
    Ok(())
}

static TAKEN: AtomicBool = AtomicBool::new(false);
static CANCEL_RETURNED: AtomicBool = AtomicBool::new(false);
static RAN_AFTER_CANCEL: AtomicBool = AtomicBool::new(false);
static RAN: AtomicBool = AtomicBool::new(false);

/// The widened window: the worker has taken the item and waits 20 ms before
/// running it.
fn hold_after_take(_: &Work) {
    TAKEN.store(true, Ordering::SeqCst);
    let _ = thread::sleep_ns(20 * MILLISECOND);
}

fn note_run(_: &'static FnWork) {
    RAN.store(true, Ordering::SeqCst);
    if CANCEL_RETURNED.load(Ordering::SeqCst) {
        RAN_AFTER_CANCEL.store(true, Ordering::SeqCst);
    }
}

fn cancel_after_take() -> Outcome {
    static ITEM: FnWork = FnWork::new(note_run, 0);
    for flag in [&TAKEN, &CANCEL_RETURNED, &RAN_AFTER_CANCEL, &RAN] {
        flag.store(false, Ordering::SeqCst);
    }
    let queue = Workqueue::create_single_thread("wq_rule_take").map_err(error)?;
    workqueue::widen_take_window(Some(hold_after_take));
    let queued = queue.queue(&ITEM);
    let taken = wait_for(5000, || TAKEN.load(Ordering::SeqCst));
    // The worker holds the item between taking and running it: the cancel
    // must see it (running) and wait, so the handler runs before it returns.
    let was_pending = workqueue::cancel_work_sync(&ITEM);
    CANCEL_RETURNED.store(true, Ordering::SeqCst);
    workqueue::widen_take_window(None);
    queue.flush();
    queue.destroy();
    check!(queued && taken, "the worker never took the item");
    check!(!was_pending, "a taken item is no longer pending");
    check!(!RAN_AFTER_CANCEL.load(Ordering::SeqCst), "the handler ran after cancel_work_sync returned");
    check!(RAN.load(Ordering::SeqCst), "the handler never ran");
    Ok(())
}

static DELAYED_RUNS: AtomicU32 = AtomicU32::new(0);
static DELAYED_CPU: AtomicU32 = AtomicU32::new(u32::MAX);

fn count_delayed(_: &'static FnDelayedWork) {
    DELAYED_CPU.store(thread::current_cpu(), Ordering::SeqCst);
    DELAYED_RUNS.fetch_add(1, Ordering::SeqCst);
}

fn delayed_pending() -> Outcome {
    static ITEM: FnDelayedWork = FnDelayedWork::new(count_delayed, 0);
    DELAYED_RUNS.store(0, Ordering::SeqCst);
    check!(workqueue::schedule_delayed_work(&ITEM, 30).map_err(error)?);
    // Pending from the moment the timer is armed (unless the host stalled
    // 30 ms and it ran already: then it ran exactly once so far).
    let early = DELAYED_RUNS.load(Ordering::SeqCst);
    let queued_now = workqueue::schedule_work(&ITEM);
    if early == 0 {
        check!(!queued_now, "queue_work on a delayed item whose timer is armed was accepted");
    }
    check!(wait_for(5000, || DELAYED_RUNS.load(Ordering::SeqCst) >= 1), "it never ran");
    // Past the expiry and a flush: the timer did not queue it a second time.
    let _ = thread::sleep_ns(40 * MILLISECOND);
    workqueue::flush_scheduled_work();
    check_eq!(DELAYED_RUNS.load(Ordering::SeqCst), 1 + u32::from(queued_now));
    check!(!ITEM.work().is_pending() && !ITEM.delayed().timer_pending());
    Ok(())
}

fn cancel_delayed_nosync() -> Outcome {
    static ITEM: FnDelayedWork = FnDelayedWork::new(count_delayed, 0);
    DELAYED_RUNS.store(0, Ordering::SeqCst);
    check!(workqueue::schedule_delayed_work(&ITEM, 200).map_err(error)?);
    // Seed 004's order: cancel_delayed_work, then flush_scheduled_work.
    let cancelled = workqueue::cancel_delayed_work(&ITEM);
    workqueue::flush_scheduled_work();
    let ran = DELAYED_RUNS.load(Ordering::SeqCst);
    // Only a 200 ms host stall lets it run before the cancel.
    check_eq!(cancelled, ran == 0);
    check!(!ITEM.work().is_pending(), "pending after cancel_delayed_work");
    check!(!ITEM.delayed().timer_pending(), "timer armed after cancel_delayed_work");
    let _ = thread::sleep_ns(250 * MILLISECOND);
    check_eq!(DELAYED_RUNS.load(Ordering::SeqCst), ran);
    check!(!workqueue::cancel_delayed_work(&ITEM), "an idle item reported pending");
    Ok(())
}

fn mod_delayed() -> Outcome {
    static ITEM: FnDelayedWork = FnDelayedWork::new(count_delayed, 0);
    DELAYED_RUNS.store(0, Ordering::SeqCst);
    // Armed for 100 s, moved to 5 ms: it runs soon, once.
    check!(workqueue::schedule_delayed_work(&ITEM, 100_000).map_err(error)?);
    check!(workqueue::mod_delayed_work(&ITEM, 5).map_err(error)?, "it was pending");
    check!(wait_for(5000, || DELAYED_RUNS.load(Ordering::SeqCst) == 1), "the moved expiry never fired");
    workqueue::flush_scheduled_work();
    check!(!ITEM.delayed().timer_pending(), "the old expiry is still armed");
    // On an idle item it queues (and says it was not pending).
    check!(!workqueue::mod_delayed_work(&ITEM, 1).map_err(error)?, "an idle item reported pending");
    check!(wait_for(5000, || DELAYED_RUNS.load(Ordering::SeqCst) == 2), "it never ran again");
    check!(workqueue::cancel_delayed_work_sync(&ITEM) == ITEM.work().is_pending());
    Ok(())
}

fn delayed_on_cpu() -> Outcome {
    static ITEM: FnDelayedWork = FnDelayedWork::new(count_delayed, 0);
    DELAYED_RUNS.store(0, Ordering::SeqCst);
    let online = thread::online_mask();
    let cpu = 63 - online.leading_zeros();
    check!(workqueue::schedule_delayed_work_on(cpu, &ITEM, 2).map_err(error)?);
    check!(wait_for(5000, || DELAYED_RUNS.load(Ordering::SeqCst) == 1), "it never ran");
    check_eq!(DELAYED_CPU.load(Ordering::SeqCst), cpu);
    check!(workqueue::schedule_delayed_work_on(64, &ITEM, 2).is_err(), "CPU 64 accepted");
    Ok(())
}

fn stopped_worker() -> Outcome {
    static ITEM: FnWork = FnWork::new(slow_handler, 0);
    reset();
    let queue = Workqueue::create_single_thread("wq_rule_stop").map_err(error)?;
    let worker = thread::find("wq_rule_stop").ok_or("no worker thread")?;
    check!(workqueue::is_worker_thread(worker.id()), "the worker is not known as one (the control plane would let KILL stop it)");
    // A stop that bypasses the control plane's protection: the worker
    // closes its list and ends.
    thread::request_stop(worker.id()).map_err(error)?;
    check!(wait_for(5000, || worker.state() == State::Exited), "the worker did not end");
    check!(queue.queue_on(None, &ITEM).is_err(), "queued on a worker that has ended");
    // Every wait on it is bounded: the flush returns at once, well before
    // its deadline.
    check_eq!(queue.flush_until(Some(time::now_ns().saturating_add(10 * SECOND))), Ok(()));
    queue.destroy();
    check!(thread::find("wq_rule_stop").is_none_or(|thread| thread.state() == State::Exited || thread.state() == State::Free));
    Ok(())
}

fn drop_destroys() -> Outcome {
    static ITEM: FnWork = FnWork::new(slow_handler, 0);
    reset();
    {
        let queue = Workqueue::create_single_thread("wq_rule_drop").map_err(error)?;
        check!(queue.queue(&ITEM));
        // Dropped without destroy: it flushes, stops and frees.
    }
    check_eq!(FINISHED.load(Ordering::SeqCst), 1);
    check!(workqueue::find("wq_rule_drop").is_none(), "still registered after drop");
    let alive = thread::list().into_iter().filter(|info| info.state != State::Exited && info.name == "wq_rule_drop").count();
    check_eq!(alive, 0);
    Ok(())
}

static DESTROYED: AtomicBool = AtomicBool::new(false);

fn found_outlives_destroy() -> Outcome {
    DESTROYED.store(false, Ordering::SeqCst);
    let queue = Workqueue::create_single_thread("wq_rule_find").map_err(error)?;
    let found = workqueue::find("wq_rule_find").ok_or("not registered")?;
    let destroyer = thread::Builder::new("wq-destroyer")
        .spawn(move || {
            queue.destroy();
            DESTROYED.store(true, Ordering::SeqCst);
            0
        })
        .map_err(error)?;
    // destroy unregisters it at once, then waits (up to 5 s) for `found`.
    check!(wait_for(5000, || workqueue::find("wq_rule_find").is_none()), "still registered during destroy");
    let _ = thread::sleep_ns(20 * MILLISECOND);
    check!(!DESTROYED.load(Ordering::SeqCst), "destroyed while a found reference was out");
    check_eq!(found.name(), "wq_rule_find");
    drop(found);
    thread::join(destroyer, Some(10 * SECOND)).map_err(error)?;
    check!(DESTROYED.load(Ordering::SeqCst));
    Ok(())
}
