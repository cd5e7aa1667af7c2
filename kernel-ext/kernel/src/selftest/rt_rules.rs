//! The real-time rules of the sleeping locks and the scheduler: priority
//! inheritance (classic inversion, chains), wake order by priority, a
//! cancelled RT waiter that does not livelock its CPU, run-time priority
//! change, and kthread_stop of a thread that never started. Each test
//! asserts an exact order of events, never elapsed time; the clock bounds
//! are hang guards only.

use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use rtedge_arch::cpu;

use crate::ktest::{Outcome, Test};
use crate::sync::{self, IrqSpinLock, SpinLock};
use crate::thread::{self, Builder, Kind, State, ThreadId};
use crate::thread::{Mutex, Semaphore};
use crate::{check, check_eq, time};

use super::{MILLISECOND, SECOND, error};

pub const TESTS: &[Test] = &[
    Test { name: "rt_rules::priority_inversion_is_bounded_by_inheritance", run: priority_inversion },
    Test { name: "rt_rules::mutex_wakes_the_most_urgent_waiter_first", run: mutex_wake_order },
    Test { name: "rt_rules::semaphore_wakes_the_most_urgent_waiter_first", run: semaphore_wake_order },
    Test { name: "rt_rules::kthread_stop_of_a_never_started_thread_skips_its_function", run: stop_never_started },
    Test { name: "rt_rules::cancelled_rt_mutex_waiter_does_not_livelock_its_cpu", run: cancelled_waiter },
    Test { name: "rt_rules::inheritance_follows_a_chain_of_owners", run: chain_inheritance },
    Test { name: "rt_rules::raised_priority_preempts_at_once", run: raised_preempts },
    Test { name: "rt_rules::lowered_running_thread_yields_at_once", run: lowered_yields },
    Test { name: "rt_rules::spin_lock_from_an_rt_thread_is_caught", run: rt_spin_lock_check },
];

static TRACE: IrqSpinLock<Vec<&'static str>> = IrqSpinLock::new(Vec::new());

/// Records an event. Capacity is reserved first, so RT threads never allocate.
fn trace(event: &'static str) {
    let mut trace = TRACE.lock();
    if trace.len() < trace.capacity() {
        trace.push(event);
    }
}

fn start_trace() {
    let mut trace = TRACE.lock();
    trace.clear();
    trace.reserve(32);
}

fn take_trace() -> Vec<&'static str> {
    core::mem::take(&mut *TRACE.lock())
}

/// Sleeps in 1 ms steps until `done` holds (20 s hang guard). Sleeping, not
/// yielding: a yield lets only equal priorities run. Never allocates, so
/// RT orchestrators may call it.
fn sleep_until(what: &'static str, mut done: impl FnMut() -> bool) -> Result<(), &'static str> {
    let give_up = time::now_ns() + 20 * SECOND;
    while !done() {
        if time::now_ns() > give_up || thread::sleep_ns(MILLISECOND).is_err() {
            return Err(what);
        }
    }
    Ok(())
}

fn is_state(id: ThreadId, state: State) -> bool {
    thread::get(id).is_some_and(|thread| thread.state() == state)
}

/// Runs `body` in an RT orchestrator of `priority` on the RT CPU, where the
/// scenario's threads (created stopped by the caller, with no CPU named) run
/// too. RT threads may not create threads or allocate: the orchestrator only
/// starts, waits and reports a static reason.
fn orchestrate(priority: u8, body: impl FnOnce() -> Result<(), &'static str> + Send + 'static) -> Outcome {
    static RESULT: IrqSpinLock<Option<Result<(), &'static str>>> = IrqSpinLock::new(None);
    *RESULT.lock() = None;
    let orchestrator = Builder::new("t-orchestrator")
        .realtime(priority)
        .spawn(move || {
            let outcome = body();
            *RESULT.lock() = Some(outcome);
            0
        })
        .map_err(error)?;
    thread::join(orchestrator, Some(60 * SECOND)).map_err(error)?;
    match RESULT.lock().take() {
        Some(Ok(())) => Ok(()),
        Some(Err(reason)) => Err(format!("orchestrator: {reason}")),
        None => Err("the orchestrator left no outcome".into()),
    }
}

fn start(id: ThreadId) -> Result<(), &'static str> {
    thread::start(id).map_err(|_| "a thread of the scenario did not start")
}

fn join_all(ids: &[ThreadId]) -> Outcome {
    for &id in ids {
        thread::join(id, Some(30 * SECOND)).map_err(error)?;
    }
    Ok(())
}

static INVERSION_MUTEX: Mutex<u32> = Mutex::new(0);
static GO: AtomicBool = AtomicBool::new(false);
static HIGH_GOT_IT: AtomicBool = AtomicBool::new(false);

/// The classic inversion on one CPU: low (10) holds the mutex, high (30)
/// blocks on it, medium (20) is CPU-bound. With inheritance, low runs at 30,
/// releases, and high gets the mutex before medium finishes; without it,
/// medium runs to its end (a 5 s hang guard) before low can release.
fn priority_inversion() -> Outcome {
    GO.store(false, Ordering::SeqCst);
    HIGH_GOT_IT.store(false, Ordering::SeqCst);
    *INVERSION_MUTEX.lock() = 0;
    start_trace();
    let low = Builder::new("t-pi-low")
        .realtime(10)
        .create(|| {
            let mut guard = INVERSION_MUTEX.lock();
            let give_up = time::now_ns() + 20 * SECOND;
            while !GO.load(Ordering::SeqCst) && time::now_ns() < give_up {
                cpu::pause();
            }
            *guard += 1;
            trace("low releases");
            drop(guard);
            0
        })
        .map_err(error)?;
    let high = Builder::new("t-pi-high")
        .realtime(30)
        .create(|| {
            let mut guard = INVERSION_MUTEX.lock();
            *guard += 1;
            HIGH_GOT_IT.store(true, Ordering::SeqCst);
            trace("high got the mutex");
            0
        })
        .map_err(error)?;
    let medium = Builder::new("t-pi-medium")
        .realtime(20)
        .create(|| {
            let give_up = time::now_ns() + 5 * SECOND;
            while !HIGH_GOT_IT.load(Ordering::SeqCst) && time::now_ns() < give_up {
                cpu::pause();
            }
            trace("medium finished");
            0
        })
        .map_err(error)?;
    orchestrate(50, move || {
        start(low)?;
        sleep_until("low to take the mutex", || INVERSION_MUTEX.is_locked())?;
        start(high)?;
        sleep_until("high to block", || is_state(high, State::Blocked))?;
        start(medium)?;
        GO.store(true, Ordering::SeqCst);
        Ok(())
    })?;
    join_all(&[high, medium, low])?;
    check_eq!(take_trace(), alloc::vec!["low releases", "high got the mutex", "medium finished"]);
    check_eq!(*INVERSION_MUTEX.lock(), 2);
    Ok(())
}

const WAITERS: [(u8, &str); 4] = [(10, "10"), (30, "30"), (20, "20"), (30, "30b")];
const BY_PRIORITY: [&str; 4] = ["30", "30b", "20", "10"];

static ORDER_MUTEX: Mutex<()> = Mutex::new(());

/// Waiters arrive as 10, 30, 20, 30b while the orchestrator (50) holds the
/// mutex; they get it as 30, 30b, 20, 10.
fn mutex_wake_order() -> Outcome {
    start_trace();
    let mut ids = Vec::new();
    for (priority, name) in WAITERS {
        ids.push(
            Builder::new("t-mutex-waiter")
                .realtime(priority)
                .create(move || {
                    let guard = ORDER_MUTEX.lock();
                    trace(name);
                    drop(guard);
                    0
                })
                .map_err(error)?,
        );
    }
    let waiters: [ThreadId; 4] = [ids[0], ids[1], ids[2], ids[3]];
    orchestrate(50, move || {
        let guard = ORDER_MUTEX.lock();
        for id in waiters {
            start(id)?;
            sleep_until("a waiter to block", || is_state(id, State::Blocked))?;
        }
        drop(guard);
        Ok(())
    })?;
    join_all(&ids)?;
    check_eq!(take_trace(), BY_PRIORITY.to_vec());
    Ok(())
}

static ORDER_SEMAPHORE: Semaphore = Semaphore::new(0);

/// Waiters arrive as 10, 30, 20, 30b; each `up` wakes the most urgent. The
/// orchestrator (5) is below every waiter: each started waiter runs and
/// blocks at once, and each `up` hands the CPU to the one it woke, so the
/// wait queue alone decides the order.
fn semaphore_wake_order() -> Outcome {
    start_trace();
    let mut ids = Vec::new();
    for (priority, name) in WAITERS {
        ids.push(
            Builder::new("t-sem-waiter")
                .realtime(priority)
                .create(move || {
                    if ORDER_SEMAPHORE.down().is_ok() {
                        trace(name);
                    }
                    0
                })
                .map_err(error)?,
        );
    }
    let waiters: [ThreadId; 4] = [ids[0], ids[1], ids[2], ids[3]];
    orchestrate(5, move || {
        for id in waiters {
            start(id)?;
            if !is_state(id, State::Blocked) {
                return Err("a waiter did not run and block at once");
            }
        }
        for _ in 0..4 {
            ORDER_SEMAPHORE.up();
        }
        Ok(())
    })?;
    join_all(&ids)?;
    check_eq!(take_trace(), BY_PRIORITY.to_vec());
    Ok(())
}

/// kthread_stop of a thread created but never started: its function never
/// runs (Linux returns -EINTR), and its captured state is dropped.
fn stop_never_started() -> Outcome {
    static RAN: AtomicBool = AtomicBool::new(false);
    static DROPPED: AtomicU32 = AtomicU32::new(0);
    struct Witness;
    impl Drop for Witness {
        fn drop(&mut self) {
            DROPPED.fetch_add(1, Ordering::SeqCst);
        }
    }
    RAN.store(false, Ordering::SeqCst);
    DROPPED.store(0, Ordering::SeqCst);
    let witness = Witness;
    let id = Builder::new("t-never-started")
        .create(move || {
            let _witness = &witness;
            RAN.store(true, Ordering::SeqCst);
            0
        })
        .map_err(error)?;
    let code = thread::stop(id, 10 * SECOND).map_err(error)?;
    check!(!RAN.load(Ordering::SeqCst), "kthread_stop ran the function of a never-started thread");
    check_eq!(code, thread::STOPPED_BEFORE_START);
    check_eq!(DROPPED.load(Ordering::SeqCst), 1);
    Ok(())
}

static CANCEL_MUTEX: Mutex<()> = Mutex::new(());
static RELEASE_OWNER: AtomicBool = AtomicBool::new(false);

/// An RT thread blocked on a mutex whose owner is a kernel thread on its
/// CPU is cancelled. The mutex is not a cancellation point, so it keeps
/// waiting, but asleep: the owner runs, releases, the RT thread takes the
/// mutex, and acts on the cancel at its next cancellation point. (Spinning
/// on the request instead would starve the owner on that CPU forever.)
fn cancelled_waiter() -> Outcome {
    RELEASE_OWNER.store(false, Ordering::SeqCst);
    let cpu = Builder::new("probe").realtime(1).spawn(|| thread::current_cpu() as i32).map_err(error)?;
    let cpu = thread::join(cpu, Some(SECOND)).map_err(error)? as u32;
    let owner = Builder::new("t-cancel-owner")
        .cpu(cpu)
        .spawn(|| {
            let guard = CANCEL_MUTEX.lock();
            while !RELEASE_OWNER.load(Ordering::SeqCst) {
                if thread::sleep_ns(MILLISECOND).is_err() {
                    break;
                }
            }
            drop(guard);
            5
        })
        .map_err(error)?;
    sleep_until("the owner to take the mutex", || CANCEL_MUTEX.is_locked())?;
    let waiter = Builder::new("t-cancel-waiter")
        .realtime(10)
        .cpu(cpu)
        .spawn(|| {
            let guard = CANCEL_MUTEX.lock();
            drop(guard);
            thread::test_cancel();
            1
        })
        .map_err(error)?;
    sleep_until("the RT waiter to block", || is_state(waiter, State::Blocked))?;
    thread::cancel(waiter).map_err(error)?;
    thread::sleep_ns(5 * MILLISECOND).map_err(error)?;
    RELEASE_OWNER.store(true, Ordering::SeqCst);
    check_eq!(thread::join(owner, Some(10 * SECOND)).map_err(error)?, 5);
    check_eq!(thread::join(waiter, Some(10 * SECOND)).map_err(error)?, thread::CANCELED);
    Ok(())
}

/// A thread's effective class as a number for atomics: 1000 for a kernel
/// thread, the priority for a real-time one (0 for none).
fn effective_code(id: ThreadId) -> u32 {
    match thread::get(id).map(|thread| thread.effective_kind()) {
        Some(Kind::Realtime { priority }) => u32::from(priority),
        Some(_) => 1000,
        None => 0,
    }
}

fn own_effective_code() -> u32 {
    effective_code(thread::current_id())
}

static CHAIN_M1: Mutex<()> = Mutex::new(());
static CHAIN_M2: Mutex<()> = Mutex::new(());
static CHAIN_RELEASE: Semaphore = Semaphore::new(0);
/// Effective priorities seen: C with B waiting, C and B with A waiting too,
/// C after releasing M2, B after releasing M2, B after releasing M1, and C
/// once the blocked A was raised to 45 (`set_scheduling`).
static CHAIN_SEEN: [AtomicU32; 7] = [const { AtomicU32::new(0) }; 7];

/// A (40) waits on M1 owned by B (20), which waits on M2 owned by C (10):
/// C runs at 40, and at 45 once A is raised to 45 while it waits; each
/// drops back as it releases what lent it priority.
fn chain_inheritance() -> Outcome {
    for seen in &CHAIN_SEEN {
        seen.store(0, Ordering::SeqCst);
    }
    start_trace();
    let c = Builder::new("t-chain-c")
        .realtime(10)
        .create(|| {
            let m2 = CHAIN_M2.lock();
            let _ = CHAIN_RELEASE.down();
            drop(m2);
            CHAIN_SEEN[3].store(own_effective_code(), Ordering::SeqCst);
            0
        })
        .map_err(error)?;
    let b = Builder::new("t-chain-b")
        .realtime(20)
        .create(|| {
            let m1 = CHAIN_M1.lock();
            let m2 = CHAIN_M2.lock();
            trace("b got m2");
            drop(m2);
            CHAIN_SEEN[4].store(own_effective_code(), Ordering::SeqCst);
            drop(m1);
            CHAIN_SEEN[5].store(own_effective_code(), Ordering::SeqCst);
            0
        })
        .map_err(error)?;
    let a = Builder::new("t-chain-a")
        .realtime(40)
        .create(|| {
            let m1 = CHAIN_M1.lock();
            trace("a got m1");
            drop(m1);
            0
        })
        .map_err(error)?;
    orchestrate(50, move || {
        start(c)?;
        sleep_until("c to take m2", || CHAIN_M2.is_locked())?;
        start(b)?;
        sleep_until("b to block on m2", || is_state(b, State::Blocked))?;
        CHAIN_SEEN[0].store(effective_code(c), Ordering::SeqCst);
        start(a)?;
        sleep_until("a to block on m1", || is_state(a, State::Blocked))?;
        CHAIN_SEEN[1].store(effective_code(c), Ordering::SeqCst);
        CHAIN_SEEN[2].store(effective_code(b), Ordering::SeqCst);
        thread::set_scheduling(a, Kind::Realtime { priority: 45 }).map_err(|_| "set_scheduling failed")?;
        CHAIN_SEEN[6].store(effective_code(c), Ordering::SeqCst);
        CHAIN_RELEASE.up();
        Ok(())
    })?;
    join_all(&[a, b, c])?;
    let seen: Vec<u32> = CHAIN_SEEN.iter().map(|seen| seen.load(Ordering::SeqCst)).collect();
    check_eq!(seen, alloc::vec![20, 40, 40, 10, 45, 20, 45]);
    check_eq!(take_trace(), alloc::vec!["b got m2", "a got m1"]);
    Ok(())
}

/// A ready RT thread (10) raised to 40 by the orchestrator (30) runs before
/// the orchestrator's next statement.
fn raised_preempts() -> Outcome {
    start_trace();
    let raised = Builder::new("t-raised")
        .realtime(10)
        .create(|| {
            trace("raised thread ran");
            0
        })
        .map_err(error)?;
    orchestrate(30, move || {
        start(raised)?;
        if !is_state(raised, State::Ready) {
            return Err("the priority-10 thread ran before the raise");
        }
        thread::set_scheduling(raised, Kind::Realtime { priority: 40 }).map_err(|_| "set_scheduling failed")?;
        trace("after the raise");
        Ok(())
    })?;
    join_all(&[raised])?;
    check_eq!(take_trace(), alloc::vec!["raised thread ran", "after the raise"]);
    Ok(())
}

/// A running RT thread (40) that lowers itself to 20 below the ready
/// orchestrator (30) gives it the CPU before its own next statement.
fn lowered_yields() -> Outcome {
    start_trace();
    let lowered = Builder::new("t-lowered")
        .realtime(40)
        .create(|| {
            let me = thread::current_id();
            if thread::set_scheduling(me, Kind::Realtime { priority: 20 }).is_err() {
                trace("set_scheduling failed");
            }
            trace("lowered thread continued");
            0
        })
        .map_err(error)?;
    orchestrate(30, move || {
        start(lowered)?;
        trace("orchestrator resumed");
        Ok(())
    })?;
    join_all(&[lowered])?;
    check_eq!(take_trace(), alloc::vec!["orchestrator resumed", "lowered thread continued"]);
    Ok(())
}

static SHARED_WITH_THREADS: SpinLock<u32> = SpinLock::new(0);
static SHARED_WITH_IRQS: IrqSpinLock<u32> = IrqSpinLock::new(0);
static SHARED_SLEEPING: Mutex<u32> = Mutex::new(0);

/// With strict mode off (only counted): an RT thread's `spin_lock` and
/// `spin_lock_bh` are the two violations; its `IrqSpinLock` and `Mutex` are
/// none, nor is a kernel thread's `spin_lock_bh`.
fn rt_spin_lock_check() -> Outcome {
    sync::set_strict_realtime_check(false);
    let before = sync::realtime_violations();
    *SHARED_WITH_THREADS.lock_bh() += 1;
    let kernel_thread_takes = sync::realtime_violations() - before;
    let rt = Builder::new("t-rt-spin").realtime(10).spawn(|| {
        *SHARED_WITH_THREADS.lock() += 1;
        *SHARED_WITH_THREADS.lock_bh() += 1;
        *SHARED_WITH_IRQS.lock() += 1;
        *SHARED_SLEEPING.lock() += 1;
        0
    });
    let joined = rt.map_err(error).and_then(|id| thread::join(id, Some(10 * SECOND)).map_err(error));
    sync::set_strict_realtime_check(true);
    joined?;
    check_eq!(kernel_thread_takes, 0);
    check_eq!(sync::realtime_violations() - before, 2);
    Ok(())
}
