//! Tests of threads and the real-time scheduler: each proves one rule with
//! an exact order or count.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use rtedge_arch::cpu;

use crate::ktest::{Outcome, Test};
use crate::sync::IrqSpinLock;
use crate::thread::{self, Builder, State, ThreadId, WaitError, WaitQueue};
use crate::thread::{Mutex, Semaphore};
use crate::{check, check_eq, clockevent, memory, time};

pub const TESTS: &[Test] = &[
    Test { name: "threads::create_stopped_then_start_and_join_exit_code", run: create_start_join },
    Test { name: "threads::rt_preempts_from_interrupt_before_interrupted_resumes", run: preempt_from_interrupt },
    Test { name: "threads::rt_fifo_among_equals_and_yield_to_tail", run: fifo_among_equals },
    Test { name: "threads::rt_above_every_kernel_thread", run: rt_above_kernel },
    Test { name: "threads::periodic_every_release_is_accounted", run: periodic_every_release },
    Test { name: "threads::periodic_overrun_counts_misses", run: periodic_overrun },
    Test { name: "threads::suspend_and_wake_including_early_wake", run: suspend_wake },
    Test { name: "threads::cancel_runs_cleanup_handlers_lifo", run: cancel_cleanup },
    Test { name: "threads::testcancel_is_a_cancellation_point", run: testcancel_point },
    Test { name: "threads::kernel_thread_on_semaphore_woken_by_rt_thread", run: semaphore_rt_wakes_kernel },
    Test { name: "threads::stop_request_with_bounded_wait", run: stop_bounded },
    Test { name: "threads::cpu_bound_kernel_threads_share_by_nice", run: fair_share },
    Test { name: "threads::event_list_kthread_pattern", run: event_list },
    Test { name: "threads::wait_queue_timeout_and_sleep_until", run: wait_timeout },
    Test { name: "threads::mutex_serialises_threads", run: mutex_contention },
    Test { name: "threads::sse_state_survives_switches", run: sse_state },
    Test { name: "threads::rt_heap_allocation_is_caught", run: rt_heap_check },
    Test { name: "threads::thread_list_shows_every_thread", run: thread_list },
];

use super::{MILLISECOND, SECOND, error};

/// Waits until `id` reaches `state`, yielding meanwhile; with several CPUs
/// the test thread runs beside the threads it watches. The bound (20 s on
/// the clock) is a hang guard only: a count of yields ran out whenever the
/// host left the watched thread's vCPU unscheduled for a while.
pub(super) fn wait_for_state(id: ThreadId, state: State) -> Outcome {
    let give_up = time::now_ns() + 20 * SECOND;
    loop {
        match thread::get(id) {
            Some(thread) if thread.state() == state => return Ok(()),
            Some(_) if time::now_ns() < give_up => thread::yield_cpu(),
            Some(thread) => return Err(format!("thread {id} never reached {state:?} (still {:?})", thread.state())),
            None => return Err(format!("thread {id} vanished while waiting for {state:?}")),
        }
    }
}

fn create_start_join() -> Outcome {
    static RAN: AtomicBool = AtomicBool::new(false);
    RAN.store(false, Ordering::SeqCst);
    let id = Builder::new("t-created")
        .create(|| {
            RAN.store(true, Ordering::SeqCst);
            42
        })
        .map_err(error)?;
    let thread = thread::get(id).ok_or("created thread not found")?;
    check_eq!(thread.state(), State::Created);
    thread::sleep_ns(2 * MILLISECOND).map_err(error)?;
    check!(!RAN.load(Ordering::SeqCst), "a created thread ran before start");
    thread::start(id).map_err(error)?;
    check_eq!(thread::join(id, Some(SECOND)).map_err(error)?, 42);
    check!(RAN.load(Ordering::SeqCst));
    check!(thread::get(id).is_none(), "joined thread still listed");
    check_eq!(thread::start(id), Err(thread::ThreadError::NoSuchThread));
    Ok(())
}

static TRACE: IrqSpinLock<Vec<&'static str>> = IrqSpinLock::new(Vec::new());

fn trace(event: &'static str) {
    // Capacity is reserved before each test, so RT threads do not allocate.
    TRACE.lock().push(event);
}

fn take_trace() -> Vec<&'static str> {
    core::mem::take(&mut *TRACE.lock())
}

fn reserve_trace() {
    TRACE.lock().reserve(64);
}

static HIGH: IrqSpinLock<Option<ThreadId>> = IrqSpinLock::new(None);
static HIGH_RAN: AtomicBool = AtomicBool::new(false);
static LOW_SPINNING: AtomicBool = AtomicBool::new(false);

fn wake_high(_: clockevent::AlarmId, _: u64) {
    if let Some(high) = *HIGH.lock() {
        let _ = thread::wake_up(high);
    }
}

fn preempt_from_interrupt() -> Outcome {
    take_trace();
    reserve_trace();
    HIGH_RAN.store(false, Ordering::SeqCst);
    LOW_SPINNING.store(false, Ordering::SeqCst);
    let high = Builder::new("t-high")
        .realtime(20)
        .spawn(|| {
            thread::suspend_self();
            // Runs from the interrupt's exit, while the low thread is mid-spin.
            trace(if LOW_SPINNING.load(Ordering::SeqCst) { "high ran while low was spinning" } else { "high ran late" });
            HIGH_RAN.store(true, Ordering::SeqCst);
            0
        })
        .map_err(error)?;
    *HIGH.lock() = Some(high);
    let alarm = clockevent::register(wake_high, 0);
    let low = Builder::new("t-low")
        .realtime(10)
        .spawn(move || {
            LOW_SPINNING.store(true, Ordering::SeqCst);
            clockevent::arm(alarm, time::now_ns() + 2 * MILLISECOND);
            // A hang guard, not a window: the interrupt comes 2 ms on, however
            // late the host delivers it.
            let deadline = time::now_ns() + 20 * SECOND;
            // Never yields: only preemption can let the high thread run.
            while !HIGH_RAN.load(Ordering::SeqCst) && time::now_ns() < deadline {
                cpu::pause();
            }
            LOW_SPINNING.store(false, Ordering::SeqCst);
            trace("low resumed");
            0
        })
        .map_err(error)?;
    let low_thread = thread::get(low).ok_or("low thread vanished")?;
    let low_preemptions_before = low_thread.involuntary_switches();
    thread::join(low, Some(30 * SECOND)).map_err(error)?;
    thread::join(high, Some(SECOND)).map_err(error)?;
    clockevent::unregister(alarm);
    *HIGH.lock() = None;
    check_eq!(take_trace(), alloc::vec!["high ran while low was spinning", "low resumed"]);
    let _ = low_preemptions_before;
    Ok(())
}

fn fifo_among_equals() -> Outcome {
    take_trace();
    reserve_trace();
    // Three equal threads are created stopped; a higher-priority RT starter
    // starts them (starting never allocates), so they queue in start order
    // and run FIFO once it exits; each yields once and goes to the tail.
    let mut ids = [None; 3];
    for (index, (first, second)) in [("a", "a2"), ("b", "b2"), ("c", "c2")].into_iter().enumerate() {
        ids[index] = Some(
            Builder::new("t-fifo")
                .realtime(15)
                .create(move || {
                    trace(first);
                    thread::yield_cpu();
                    trace(second);
                    0
                })
                .map_err(error)?,
        );
    }
    let starter = Builder::new("t-starter")
        .realtime(40)
        .spawn(move || {
            for id in ids.into_iter().flatten() {
                if thread::start(id).is_err() {
                    trace("start failed");
                }
            }
            trace("starter done");
            0
        })
        .map_err(error)?;
    thread::join(starter, Some(SECOND)).map_err(error)?;
    for id in ids.into_iter().flatten() {
        thread::join(id, Some(SECOND)).map_err(error)?;
    }
    check_eq!(take_trace(), alloc::vec!["starter done", "a", "b", "c", "a2", "b2", "c2"]);
    Ok(())
}

fn rt_above_kernel() -> Outcome {
    take_trace();
    reserve_trace();
    // A nice -20 kernel thread spins; an RT thread of the lowest priority
    // started meanwhile runs first anyway.
    static STOP: AtomicBool = AtomicBool::new(false);
    STOP.store(false, Ordering::SeqCst);
    let hog = Builder::new("t-hog")
        .nice(-20)
        .cpu(thread::current_cpu())
        .spawn(|| {
            while !STOP.load(Ordering::SeqCst) {
                cpu::pause();
            }
            0
        })
        .map_err(error)?;
    thread::sleep_ns(MILLISECOND).map_err(error)?;
    // Same CPU as this (creating) thread, which does not sleep from here on.
    let here = thread::current_cpu();
    let rt = Builder::new("t-lowest-rt")
        .realtime(0)
        .cpu(here)
        .spawn(|| {
            trace("rt ran");
            0
        })
        .map_err(error)?;
    trace("creator continued");
    thread::join(rt, Some(SECOND)).map_err(error)?;
    STOP.store(true, Ordering::SeqCst);
    thread::join(hog, Some(SECOND)).map_err(error)?;
    check_eq!(take_trace(), alloc::vec!["rt ran", "creator continued"]);
    Ok(())
}

/// One wait for the next period, as the periodic thread saw it.
#[derive(Clone, Copy, Debug)]
struct Job {
    /// Clock time just before the wait: when the previous job ended.
    ended_ns: u64,
    /// What the wait returned: this job's release and the verdict on the
    /// previous job.
    release: thread::Release,
    /// Clock time just after the wait: when this job began.
    began_ns: u64,
}

/// Filled by the periodic thread; room for every job is reserved before it
/// starts, so it never allocates.
static JOBS: IrqSpinLock<Vec<Job>> = IrqSpinLock::new(Vec::new());

/// What `run_periodic` saw: every job, and the kernel's counters.
struct PeriodicRun {
    jobs: Vec<Job>,
    misses: u64,
    skipped: u64,
    max_latency_ns: u64,
}

/// Runs `periods` releases at `period_ns` in an RT thread. Job `k` runs
/// until `overrun(k, period_ns)` past its own release (0: it ends at once).
/// Checks every job against the clock and the kernel's counters against the
/// jobs; none of it depends on how fast the host runs the guest.
fn run_periodic(periods: u32, period_ns: u64, overrun: fn(u32, u64) -> u64) -> Result<PeriodicRun, alloc::string::String> {
    *JOBS.lock() = Vec::with_capacity(periods as usize);
    let start = time::now_ns() + period_ns;
    let id = Builder::new("t-periodic")
        .realtime(30)
        .spawn(move || {
            if thread::make_periodic(start, period_ns).is_err() {
                return -2;
            }
            for job in 0..periods {
                let ended_ns = time::now_ns();
                let Ok(release) = thread::wait_next_period() else { return -3 };
                let began_ns = time::now_ns();
                {
                    let mut jobs = JOBS.lock();
                    if jobs.len() < jobs.capacity() {
                        jobs.push(Job { ended_ns, release, began_ns });
                    }
                }
                let busy = overrun(job, period_ns);
                if busy != 0 {
                    // Until a point on the release grid, not for a duration:
                    // a stalled vCPU makes the job end later, never earlier.
                    let until = release.release_ns + busy;
                    while time::now_ns() < until {
                        cpu::pause();
                    }
                }
            }
            0
        })
        .map_err(error)?;
    let thread = thread::get(id).ok_or("periodic thread vanished")?;
    // Read the statistics before joining frees the slot.
    let mut stats = thread.realtime_stats();
    while thread.state() != State::Exited {
        thread::sleep_ns(10 * MILLISECOND).map_err(error)?;
        stats = thread.realtime_stats();
    }
    let code = thread::join(id, Some(SECOND)).map_err(error)?;
    check_eq!(code, 0);
    let jobs = core::mem::take(&mut *JOBS.lock());
    check_eq!(jobs.len(), periods as usize);
    let first = jobs[0].release;
    check_eq!((first.release_ns, first.missed, first.skipped), (start, false, 0));
    for (index, pair) in jobs.windows(2).enumerate() {
        let (previous, job) = (pair[0].release, pair[1]);
        let release = job.release;
        // The kernel read the clock inside the wait, between `ended_ns` and
        // `began_ns`: a miss is counted iff the job ended after its deadline
        // (the next release), as far as the two readings can tell.
        let deadline = previous.release_ns + period_ns;
        check!(
            job.ended_ns <= deadline || release.missed,
            "job {index} ended at {} ns, after its deadline {deadline}, and no miss was counted",
            job.ended_ns
        );
        check!(release.missed || release.skipped == 0, "job {index}: releases skipped without a miss: {release:?}");
        check!(
            !release.missed || job.began_ns > deadline,
            "job {index}: a miss counted, but the clock was not past the deadline {deadline} even after the wait ({} ns)",
            job.began_ns
        );
        // Every release is accounted: run, or skipped and counted; an
        // overrun gets one release, the latest due, not a burst of late ones.
        check_eq!(release.release_ns, deadline + release.skipped * period_ns);
        check!(job.ended_ns < release.release_ns + period_ns, "job {index}: stale release {release:?} at {} ns", job.ended_ns);
        check!(job.began_ns >= release.release_ns, "job {} began at {} ns, before its release {release:?}", index + 1, job.began_ns);
    }
    let periodic = stats.periodic.ok_or("not periodic")?;
    check_eq!(periodic.releases(), u64::from(periods));
    check_eq!(stats.latency.count(), u64::from(periods));
    let missed: u64 = jobs.iter().map(|job| u64::from(job.release.missed) + job.release.skipped).sum();
    let skipped: u64 = jobs.iter().map(|job| job.release.skipped).sum();
    check_eq!((periodic.misses(), periodic.skipped()), (missed, skipped));
    Ok(PeriodicRun { jobs, misses: periodic.misses(), skipped: periodic.skipped(), max_latency_ns: stats.latency.max().unwrap_or(0) })
}

/// The mean cost of one switch between two RT threads (yield ping-pong).
fn switch_cost_ns() -> Result<u64, alloc::string::String> {
    static START: AtomicU64 = AtomicU64::new(0);
    static END: AtomicU64 = AtomicU64::new(0);
    const ROUNDS: u64 = 200;
    let body = || {
        for _ in 0..ROUNDS {
            thread::yield_cpu();
        }
        END.store(time::now_ns(), Ordering::SeqCst);
        0
    };
    let a = Builder::new("t-switch").realtime(55).cpu(0).create(body).map_err(error)?;
    let b = Builder::new("t-switch").realtime(55).cpu(0).create(body).map_err(error)?;
    let starter = Builder::new("t-switch-start")
        .realtime(56)
        .cpu(0)
        .spawn(move || {
            START.store(time::now_ns(), Ordering::SeqCst);
            let _ = thread::start(a);
            let _ = thread::start(b);
            0
        })
        .map_err(error)?;
    thread::join(starter, Some(SECOND)).map_err(error)?;
    thread::join(a, Some(10 * SECOND)).map_err(error)?;
    thread::join(b, Some(10 * SECOND)).map_err(error)?;
    Ok(END.load(Ordering::SeqCst).saturating_sub(START.load(Ordering::SeqCst)) / (2 * ROUNDS))
}

fn periodic_every_release() -> Outcome {
    // The property: every period of a periodic thread is released, measured
    // and accounted, at 1 kHz. Where the CPU itself is emulated instruction
    // by instruction (uhyve on the nested build machines), one switch costs
    // tens of microseconds or more and 1 kHz cannot be met by any kernel;
    // the platform is classified by that switch cost, measured separately,
    // and the rate lowered to 100 Hz there (said in a note line). What is
    // checked (run_periodic): each release on the grid, each one run or
    // skipped and counted, each late finish counted as a miss and no other,
    // latency samples = releases, the kernel's miss and skip counters = the
    // sums of what the thread was told. Whether deadlines were met depends on
    // the host as much as on the guest (a shared host stalls the whole VM
    // for milliseconds, which no guest can hide), so misses are reported,
    // not judged: up to three runs, stopping at the first clean one, each
    // printed. `make bench` measures the latency distribution.
    let switch_ns = switch_cost_ns()?;
    let (hz, periods) = if switch_ns > 20_000 { (100u64, 50u32) } else { (1000, 200) };
    if hz != 1000 {
        crate::console_line!(
            "ktest-note: a context switch costs {} us here (emulated CPU); periodic test at {hz} Hz instead of 1 kHz",
            switch_ns / 1000
        );
    }
    let period = SECOND / hz;
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let run = run_periodic(periods, period, |_, _| 0)?;
        attempts.push((run.misses, run.skipped, run.max_latency_ns));
        if run.misses == 0 {
            break;
        }
    }
    let clean = attempts.iter().any(|&(misses, _, _)| misses == 0);
    crate::console_line!(
        "ktest-note: {hz} Hz x {periods}: {}, switch {} ns, attempts (misses, skipped, max latency ns) {:?}",
        if clean { "a run without misses" } else { "every run missed deadlines (host contention?)" },
        switch_ns,
        attempts
    );
    Ok(())
}

/// Job 2 runs a quarter period past its deadline; job 5 half a period past
/// the release after its deadline (see `periodic_overrun`).
fn overrun_plan(job: u32, period: u64) -> u64 {
    match job {
        2 => period + period / 4,
        5 => 2 * period + period / 2,
        _ => 0,
    }
}

fn periodic_overrun() -> Outcome {
    // Period 10 ms. Job 2 ends a quarter period after its deadline: a late
    // finish, one miss, and its successor released at once (the release it
    // overran is still due). Job 5 ends half a period after the release that
    // follows its deadline: it slept through that release, which is skipped
    // and counted as a miss too, and it is released once, at the latest due
    // release. Both overruns are measured against the jobs' own releases,
    // so they happen however slowly the host runs the guest; a stall can
    // only make them longer (job 2 may then skip a release too, job 5 skip
    // more) and add misses elsewhere, which run_periodic checks job by job
    // against the clock. A kernel that missed a miss, lost or repeated a
    // release, or released an overrun thread in a burst fails here.
    let period = 10 * MILLISECOND;
    let run = run_periodic(8, period, overrun_plan)?;
    let late = run.jobs[3].release;
    let overran = run.jobs[6].release;
    check!(late.missed, "job 2 overran its deadline and no miss was counted: {late:?}");
    check!(overran.missed && overran.skipped >= 1, "job 5 overran a whole release and it was not skipped: {overran:?}");
    // On a quiet host the two overruns alone: 1 + (1 + 1) misses, 1 skipped.
    if (run.misses, run.skipped) != (3, 1) {
        crate::console_line!(
            "ktest-note: periodic overrun: (misses, skipped) = ({}, {}), not (3, 1): the host stalled the guest",
            run.misses,
            run.skipped
        );
    }
    Ok(())
}

fn suspend_wake() -> Outcome {
    static WAKES: AtomicU32 = AtomicU32::new(0);
    WAKES.store(0, Ordering::SeqCst);
    let id = Builder::new("t-suspender")
        .realtime(25)
        .spawn(|| {
            for _ in 0..2 {
                thread::suspend_self();
                WAKES.fetch_add(1, Ordering::SeqCst);
            }
            // A wake-up sent before the suspend is kept: this returns at once.
            let _ = thread::wake_up(thread::current_id());
            thread::suspend_self();
            WAKES.fetch_add(1, Ordering::SeqCst);
            0
        })
        .map_err(error)?;
    wait_for_state(id, State::Suspended)?;
    check_eq!(WAKES.load(Ordering::SeqCst), 0);
    thread::wake_up(id).map_err(error)?;
    wait_for_state(id, State::Suspended)?;
    check_eq!(WAKES.load(Ordering::SeqCst), 1);
    // An RT thread wakes it from RT context.
    let waker = Builder::new("t-waker")
        .realtime(5)
        .spawn(move || {
            let _ = thread::wake_up(id);
            0
        })
        .map_err(error)?;
    thread::join(waker, Some(SECOND)).map_err(error)?;
    check_eq!(thread::join(id, Some(SECOND)).map_err(error)?, 0);
    check_eq!(WAKES.load(Ordering::SeqCst), 3);
    Ok(())
}

static CLEANUP_ORDER: IrqSpinLock<Vec<usize>> = IrqSpinLock::new(Vec::new());

fn record_cleanup(argument: usize) {
    CLEANUP_ORDER.lock().push(argument);
}

fn cancel_cleanup() -> Outcome {
    CLEANUP_ORDER.lock().clear();
    CLEANUP_ORDER.lock().reserve(8);
    let id = Builder::new("t-cancelled")
        .realtime(22)
        .spawn(|| {
            thread::cleanup_push(record_cleanup, 1);
            thread::cleanup_push(record_cleanup, 2);
            thread::cleanup_push(record_cleanup, 3);
            thread::cleanup_push(record_cleanup, 4);
            // pop one without running it: it must not run at cancellation
            thread::cleanup_pop(false);
            loop {
                thread::suspend_self();
            }
        })
        .map_err(error)?;
    wait_for_state(id, State::Suspended)?;
    let code = thread::delete(id, SECOND).map_err(error)?;
    check_eq!(code, thread::CANCELED);
    check_eq!(*CLEANUP_ORDER.lock(), alloc::vec![3, 2, 1]);
    Ok(())
}

fn testcancel_point() -> Outcome {
    static LOOPS: AtomicU64 = AtomicU64::new(0);
    static AFTER: AtomicBool = AtomicBool::new(false);
    LOOPS.store(0, Ordering::SeqCst);
    AFTER.store(false, Ordering::SeqCst);
    // A kernel thread that never blocks: only testcancel ends it.
    let id = Builder::new("t-testcancel")
        .spawn(|| {
            loop {
                LOOPS.fetch_add(1, Ordering::SeqCst);
                thread::test_cancel();
                thread::yield_cpu();
                if LOOPS.load(Ordering::SeqCst) > 1_000_000_000 {
                    AFTER.store(true, Ordering::SeqCst);
                    return 1;
                }
            }
        })
        .map_err(error)?;
    while LOOPS.load(Ordering::SeqCst) < 3 {
        thread::yield_cpu();
    }
    thread::cancel(id).map_err(error)?;
    check_eq!(thread::join(id, Some(5 * SECOND)).map_err(error)?, thread::CANCELED);
    check!(!AFTER.load(Ordering::SeqCst));
    Ok(())
}

static SEMAPHORE: Semaphore = Semaphore::new(0);

fn semaphore_rt_wakes_kernel() -> Outcome {
    static WOKEN: AtomicU32 = AtomicU32::new(0);
    WOKEN.store(0, Ordering::SeqCst);
    while SEMAPHORE.try_down() {}
    let sleeper = Builder::new("t-sem-waiter")
        .spawn(|| {
            for _ in 0..2 {
                if SEMAPHORE.down().is_err() {
                    return -1;
                }
                WOKEN.fetch_add(1, Ordering::SeqCst);
            }
            0
        })
        .map_err(error)?;
    wait_for_state(sleeper, State::Blocked)?;
    check_eq!(SEMAPHORE.waiters(), 1);
    // An RT thread posts twice, from RT context (no allocation, no blocking).
    let poster = Builder::new("t-sem-poster")
        .realtime(12)
        .spawn(|| {
            SEMAPHORE.up();
            SEMAPHORE.up();
            0
        })
        .map_err(error)?;
    thread::join(poster, Some(SECOND)).map_err(error)?;
    check_eq!(thread::join(sleeper, Some(SECOND)).map_err(error)?, 0);
    check_eq!(WOKEN.load(Ordering::SeqCst), 2);
    check_eq!(SEMAPHORE.count(), 0);
    Ok(())
}

fn stop_bounded() -> Outcome {
    static RELEASE: AtomicBool = AtomicBool::new(false);
    RELEASE.store(false, Ordering::SeqCst);
    // One sleep of an hour: only the stop request can end it within the
    // stop's bound (30 s, a hang guard), whatever the host's speed. It ends
    // early by the request (Interrupted), not by its time.
    let polite = Builder::new("t-polite")
        .spawn(|| match thread::sleep_ns(3600 * SECOND) {
            Err(WaitError::Interrupted) if thread::should_stop() => 7,
            Err(_) => -1,
            Ok(()) => -2,
        })
        .map_err(error)?;
    wait_for_state(polite, State::Sleeping)?;
    check_eq!(thread::stop(polite, 30 * SECOND).map_err(error)?, 7);
    // One that ignores the request: the bounded wait reports a timeout. It
    // must have started first: a stop before a thread's first run skips
    // its function (kthread_stop's -EINTR).
    static STARTED: AtomicBool = AtomicBool::new(false);
    STARTED.store(false, Ordering::SeqCst);
    let stubborn = Builder::new("t-stubborn")
        .spawn(|| {
            STARTED.store(true, Ordering::SeqCst);
            while !RELEASE.load(Ordering::SeqCst) {
                thread::yield_cpu();
            }
            9
        })
        .map_err(error)?;
    let deadline = crate::time::now_ns() + 30 * SECOND;
    while !STARTED.load(Ordering::SeqCst) {
        check!(crate::time::now_ns() < deadline, "t-stubborn never started");
        let _ = thread::sleep_ns(MILLISECOND);
    }
    check_eq!(thread::stop(stubborn, 20 * MILLISECOND), Err(thread::ThreadError::Timeout));
    RELEASE.store(true, Ordering::SeqCst);
    check_eq!(thread::join(stubborn, Some(SECOND)).map_err(error)?, 9);
    Ok(())
}

/// Whether run times of two nice-0 threads and one nice-10 thread match
/// their weights (1024, 1024, 110): the equals within a factor 1.5 of each
/// other, the nice-10 one between a 20th and a quarter of either (1:9.3).
fn shares_match_nice(ra: u64, rb: u64, rc: u64) -> bool {
    let equal = ra * 2 < rb * 3 && rb * 2 < ra * 3;
    let weighted = rc * 4 < ra.min(rb) && rc * 20 > ra.max(rb);
    equal && weighted
}

fn fair_share() -> Outcome {
    // The shares are the scheduler's own accounting (run time on the guest
    // clock). A host stall while one thread runs is charged to that thread
    // (no guest can tell a stall from work), and the scheduler pays the
    // others back afterwards (least weighted run time runs first), so the
    // shares since the start converge on the weights however the host
    // behaves; only how soon depends on the host. So the window grows until
    // they match: 300 ms at first, then every 100 ms, with 30 s as a hang
    // guard. A scheduler that ignores nice (1:1:1), runs by nice strictly
    // (starving nice 10) or favours one of two equals never matches and
    // fails at the guard; the window it took is printed.
    static STOP: AtomicBool = AtomicBool::new(false);
    STOP.store(false, Ordering::SeqCst);
    let spin = || {
        while !STOP.load(Ordering::SeqCst) {
            cpu::pause();
        }
        0
    };
    // All on one CPU, so they compete (with several CPUs they would spread).
    let started = time::now_ns();
    let a = Builder::new("t-nice0-a").cpu(0).spawn(spin).map_err(error)?;
    let b = Builder::new("t-nice0-b").cpu(0).spawn(spin).map_err(error)?;
    let c = Builder::new("t-nice10").cpu(0).nice(10).spawn(spin).map_err(error)?;
    let runtime = |id| thread::get(id).map_or(0, |t| t.runtime_ns());
    let mut sleep = thread::sleep_ns(300 * MILLISECOND);
    let mut shares = (0, 0, 0);
    let mut matched = false;
    while sleep.is_ok() {
        shares = (runtime(a), runtime(b), runtime(c));
        matched = shares_match_nice(shares.0, shares.1, shares.2);
        if matched || time::now_ns() - started > 30 * SECOND {
            break;
        }
        sleep = thread::sleep_ns(100 * MILLISECOND);
    }
    let window_ms = (time::now_ns() - started) / MILLISECOND;
    STOP.store(true, Ordering::SeqCst);
    for id in [a, b, c] {
        thread::join(id, Some(SECOND)).map_err(error)?;
    }
    sleep.map_err(error)?;
    let (ra, rb, rc) = shares;
    crate::console_line!(
        "ktest-note: fair share after {window_ms} ms: nice 0 {} ms, nice 0 {} ms, nice 10 {} ms (nice 10 / nice 0 = 1/{}, weights give 1/9.3)",
        ra / MILLISECOND,
        rb / MILLISECOND,
        rc / MILLISECOND,
        if rc == 0 { 0 } else { (ra + rb) / (2 * rc) }
    );
    check!(matched, "run times never matched the weights in {window_ms} ms: {ra} {rb} {rc} ns");
    Ok(())
}

struct EventList {
    lock: IrqSpinLock<VecDeque<u32>>,
    ready: Semaphore,
}

static EVENTS: EventList = EventList { lock: IrqSpinLock::new(VecDeque::new()), ready: Semaphore::new(0) };
const STOP_EVENT: u32 = u32::MAX;

fn event_list() -> Outcome {
    // The seeds' kthread pattern: a thread sleeping on a semaphore drains a
    // spinlock-protected list; one event asks it to end.
    static SUM: AtomicU64 = AtomicU64::new(0);
    static PROCESSED: AtomicU32 = AtomicU32::new(0);
    SUM.store(0, Ordering::SeqCst);
    PROCESSED.store(0, Ordering::SeqCst);
    EVENTS.lock.lock().reserve(64);
    let worker = Builder::new("t-event-worker")
        .spawn(|| {
            loop {
                if EVENTS.ready.down().is_err() {
                    return -1;
                }
                loop {
                    let event = EVENTS.lock.lock().pop_front();
                    let Some(event) = event else { break };
                    if event == STOP_EVENT {
                        return 0;
                    }
                    // Events must arrive in order: each is one more than the last.
                    let expected = PROCESSED.load(Ordering::SeqCst) + 1;
                    if event != expected {
                        return -2;
                    }
                    SUM.fetch_add(u64::from(event), Ordering::SeqCst);
                    PROCESSED.store(event, Ordering::SeqCst);
                }
            }
        })
        .map_err(error)?;
    for event in 1..=20u32 {
        EVENTS.lock.lock().push_back(event);
        EVENTS.ready.up();
        if event % 5 == 0 {
            thread::yield_cpu();
        }
    }
    EVENTS.lock.lock().push_back(STOP_EVENT);
    EVENTS.ready.up();
    check_eq!(thread::join(worker, Some(SECOND)).map_err(error)?, 0);
    check_eq!(PROCESSED.load(Ordering::SeqCst), 20);
    check_eq!(SUM.load(Ordering::SeqCst), 210);
    Ok(())
}

static QUEUE: WaitQueue = WaitQueue::new();

fn wait_timeout() -> Outcome {
    let start = time::now_ns();
    let result = QUEUE.wait_until(Some(start + 3 * MILLISECOND), || false);
    check_eq!(result, Err(WaitError::Timeout));
    check!(time::now_ns() >= start + 3 * MILLISECOND, "timed out early");
    check_eq!(QUEUE.waiters(), 0);
    let deadline = time::now_ns() + 2 * MILLISECOND;
    thread::sleep_until(deadline).map_err(error)?;
    check!(time::now_ns() >= deadline, "woke before the absolute deadline");
    Ok(())
}

static COUNTER: Mutex<u64> = Mutex::new(0);

fn mutex_contention() -> Outcome {
    *COUNTER.lock() = 0;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            Builder::new("t-mutex")
                .spawn(|| {
                    for _ in 0..200 {
                        let mut guard = COUNTER.lock();
                        let value = *guard;
                        thread::yield_cpu(); // invite a race inside the critical section
                        *guard = value + 1;
                    }
                    0
                })
                .map_err(error)?,
        );
    }
    // 800 contended hand-overs: under a loaded host with 4 vCPUs on 2
    // cores (uhyve, nested KVM) they took more than 10 s once (clean-clone
    // run, load 17: every thread still making progress). A deadlock still
    // fails here.
    for id in ids {
        thread::join(id, Some(60 * SECOND)).map_err(error)?;
    }
    check_eq!(*COUNTER.lock(), 800);
    Ok(())
}

fn sse_state() -> Outcome {
    static FAILURES: AtomicU32 = AtomicU32::new(0);
    FAILURES.store(0, Ordering::SeqCst);
    let mut ids = Vec::new();
    for seed in [11u64, 22] {
        ids.push(
            Builder::new("t-sse")
                .realtime(35)
                .create(move || {
                    for _ in 0..50 {
                        cpu::fill_vector_registers(seed);
                        thread::yield_cpu(); // the other thread fills its own values
                        if !cpu::check_vector_registers(seed) {
                            FAILURES.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    0
                })
                .map_err(error)?,
        );
    }
    let starter_ids = [ids[0], ids[1]];
    let starter = Builder::new("t-sse-starter")
        .realtime(45)
        .spawn(move || {
            for id in starter_ids {
                let _ = thread::start(id);
            }
            0
        })
        .map_err(error)?;
    thread::join(starter, Some(SECOND)).map_err(error)?;
    for id in ids {
        thread::join(id, Some(SECOND)).map_err(error)?;
    }
    check_eq!(FAILURES.load(Ordering::SeqCst), 0);
    Ok(())
}

fn rt_heap_check() -> Outcome {
    let before = memory::heap::statistics().realtime_violations;
    memory::heap::set_strict_realtime_check(false);
    let id = Builder::new("t-rt-alloc").realtime(10).spawn(|| {
        // black_box: the optimiser may otherwise elide the allocation.
        let boxed = core::hint::black_box(Box::new(5u64));
        i32::from(*boxed == 5)
    });
    let result = id.map_err(error).and_then(|id| thread::join(id, Some(SECOND)).map_err(error));
    memory::heap::set_strict_realtime_check(true);
    check_eq!(result?, 1);
    let after = memory::heap::statistics().realtime_violations;
    check_eq!(after - before, 2); // the allocation and the free
    Ok(())
}

fn thread_list() -> Outcome {
    let sleeper = Builder::new("t-listed")
        .realtime(3)
        .spawn(|| {
            thread::suspend_self();
            0
        })
        .map_err(error)?;
    // With several CPUs it runs beside this thread: wait for its suspend.
    wait_for_state(sleeper, State::Suspended)?;
    print_list();
    let list = thread::list();
    let names: Vec<&str> = list.iter().map(|info| info.name.as_str()).collect();
    for expected in ["idle/0", "ksoftirqd/0", "main", "t-listed"] {
        check!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    let listed = list.iter().find(|info| info.name == "t-listed").ok_or("t-listed missing")?;
    check_eq!(listed.state, State::Suspended);
    check_eq!(listed.kind, thread::Kind::Realtime { priority: 3 });
    let main = list.iter().find(|info| info.name == "main").ok_or("main missing")?;
    check_eq!(main.state, State::Running);
    check!(main.switches > 0 && main.runtime_ns > 0);
    thread::wake_up(sleeper).map_err(error)?;
    thread::join(sleeper, Some(SECOND)).map_err(error)?;
    Ok(())
}

/// Prints the thread list on the console.
fn print_list() {
    let online = thread::online_mask();
    crate::console_line!(
        "{:>4} {:<20} {:<6} {:>5} {:<9} {:>3} {:<5} {:>12} {:>8} {:>6}",
        "ID",
        "NAME",
        "KIND",
        "PRIO",
        "STATE",
        "CPU",
        "AFF",
        "RUNTIME(us)",
        "SWITCH",
        "MISSES"
    );
    for info in thread::list() {
        let priority = match info.kind {
            thread::Kind::Realtime { priority } => alloc::format!("{priority}"),
            thread::Kind::Kernel { nice } => alloc::format!("n{nice}"),
            thread::Kind::Idle => alloc::string::String::from("-"),
        };
        crate::console_line!(
            "{:>4} {:<20} {:<6} {:>5} {:<9} {:>3} {:<5} {:>12} {:>8} {:>6}",
            info.id,
            info.name,
            info.kind.name(),
            priority,
            info.state.name(),
            info.cpu,
            thread::format_cpu_mask(info.affinity, online),
            info.runtime_ns / 1000,
            info.switches,
            info.misses
        );
    }
}
