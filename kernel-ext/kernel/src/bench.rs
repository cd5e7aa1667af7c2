//! Benchmarks that print figures (`bench:` lines) for the runner. They
//! measure; they never assert on time.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rtedge_arch::cpu;
use rtedge_engine::cmdline;
use rtedge_engine::histogram::LatencyHistogram;

use crate::sync::IrqSpinLock;
use crate::thread::{self, Builder};
use crate::{console_line, time};

const MILLISECOND: u64 = 1_000_000;
const SECOND: u64 = 1_000_000_000;

/// Runs every benchmark.
pub fn run_all() {
    let seconds = cmdline::get(crate::boot::command_line(), "bench_seconds")
        .and_then(|value| cmdline::parse_u64(value).ok())
        .unwrap_or(10)
        .clamp(1, 600);
    let online = thread::online_mask();
    let isolated = thread::isolated_mask();
    console_line!(
        "bench: begin (release latency runs {seconds} s per case; cpus online {}, isolated {})",
        thread::format_cpu_mask(online, u64::MAX),
        if isolated == 0 { alloc::string::String::from("none") } else { thread::format_cpu_mask(isolated, u64::MAX) }
    );
    let last = 63 - online.leading_zeros();
    if online.count_ones() >= 2 {
        release_latency("rt-release-alone", seconds, Placement { rt_cpu: last, hog: None });
        release_latency("rt-release-beside-hog-same-cpu", seconds, Placement { rt_cpu: 0, hog: Some(Hog::SameCpu) });
        release_latency(
            if isolated & (1 << last) != 0 { "rt-release-isolated-cpu-other-loaded" } else { "rt-release-other-cpu-loaded" },
            seconds,
            Placement { rt_cpu: last, hog: Some(Hog::OtherCpus) },
        );
    } else {
        release_latency("rt-release-alone", seconds, Placement { rt_cpu: 0, hog: None });
        release_latency("rt-release-beside-hog-same-cpu", seconds, Placement { rt_cpu: 0, hog: Some(Hog::SameCpu) });
    }
    logging_release_latency(log_seconds(seconds), last);
    context_switch_cost();
    priority_inheritance_wait();
    let rt_cpu = if isolated != 0 { isolated.trailing_zeros() } else { 0 };
    tasklet_latency(rt_cpu);
    softirq_jitter(rt_cpu);
    timer_lateness();
    hrtimer_lateness();
    work_latency(rt_cpu);
    console_line!("bench: end");
}

static SAMPLES: IrqSpinLock<Vec<u64>> = IrqSpinLock::new(Vec::new());
/// Set for the logging case: the 1 kHz RT thread logs one line per period.
static LOG_EACH_PERIOD: AtomicBool = AtomicBool::new(false);
/// How long each of the RT thread's log calls took (logging case).
static LOG_CALL_SAMPLES: IrqSpinLock<Vec<u64>> = IrqSpinLock::new(Vec::new());

/// Figures of one case, for ratios.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub samples: usize,
    pub median_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    /// Deadline misses (periodic cases).
    pub misses: u64,
}

fn summarize(samples: &mut [u64]) -> Summary {
    samples.sort_unstable();
    let count = samples.len();
    if count == 0 {
        return Summary::default();
    }
    let at = |per_mille: usize| samples[((count - 1) * per_mille) / 1000];
    Summary { samples: count, median_ns: at(500), p99_ns: at(990), max_ns: samples[count - 1], misses: 0 }
}

/// Seconds per logging case (`bench_log_seconds`, default the smaller of
/// 3 and `bench_seconds`): each period prints a console line, twice.
fn log_seconds(seconds: u64) -> u64 {
    cmdline::get(crate::boot::command_line(), "bench_log_seconds")
        .and_then(|value| cmdline::parse_u64(value).ok())
        .unwrap_or(seconds.min(3))
        .clamp(1, 600)
}

/// The 1 kHz RT thread logging a ~100-byte line every period, with a
/// kernel thread on the other CPUs logging every 2 ms (so console lines
/// compete), measured twice in one run: BEFORE (`console::set_synchronous`
/// forces the old path: the RT thread writes its line to the UART itself,
/// interrupts off, behind any other CPU's line) and AFTER (the line goes
/// into the CPU's log ring; `klogd` writes it). Prints each case and the
/// before/after ratios.
pub fn logging_release_latency(seconds: u64, rt_cpu: u32) {
    static STOP_CHATTER: AtomicBool = AtomicBool::new(false);
    let mut figures = [(Summary::default(), Summary::default()); 2];
    for (case, synchronous) in [(0usize, true), (1usize, false)] {
        crate::console::set_synchronous(synchronous);
        {
            let mut samples = LOG_CALL_SAMPLES.lock();
            samples.clear();
            samples.reserve((seconds * 1000) as usize);
        }
        STOP_CHATTER.store(false, Ordering::SeqCst);
        let others = thread::online_mask() & !(1 << rt_cpu);
        let chatter = (others != 0)
            .then(|| {
                Builder::new("bench-chatter").affinity(others).spawn(|| {
                    let mut count = 0u64;
                    while !STOP_CHATTER.load(Ordering::Relaxed) {
                        log::info!("bench-chatter: line {count} from a kernel thread competing for the console");
                        count += 1;
                        let _ = thread::sleep_ns(2 * MILLISECOND);
                    }
                    0
                })
            })
            .and_then(Result::ok);
        LOG_EACH_PERIOD.store(true, Ordering::SeqCst);
        let name = if synchronous { "rt-release-logging-before-synchronous" } else { "rt-release-logging-after-ring" };
        let release = release_latency(name, seconds, Placement { rt_cpu, hog: None });
        LOG_EACH_PERIOD.store(false, Ordering::SeqCst);
        STOP_CHATTER.store(true, Ordering::SeqCst);
        if let Some(chatter) = chatter {
            let _ = thread::join(chatter, Some(SECOND));
        }
        let mut calls = core::mem::take(&mut *LOG_CALL_SAMPLES.lock());
        let call = summarize(&mut calls);
        console_line!(
            "bench: {name}-log-call samples={} median_ns={} p99_ns={} max_ns={} (time inside the RT thread's log::info! call)",
            call.samples,
            call.median_ns,
            call.p99_ns,
            call.max_ns
        );
        figures[case] = (release, call);
    }
    crate::console::set_synchronous(false);
    crate::console::flush_deferred();
    let ratio = |before: u64, after: u64| {
        let after = after.max(1);
        alloc::format!("{}.{:02}", before / after, (before % after) * 100 / after)
    };
    let ((before, before_call), (after, after_call)) = (figures[0], figures[1]);
    let stats = crate::console::ring_stats();
    console_line!(
        "bench: rt-release-logging before/after release_latency median={} p99={} max={} misses={}/{} log_call median={} p99={} max={} (before=synchronous UART write, after=per-CPU log ring; both with a kernel thread logging every 2 ms on the other CPUs; ring lines deferred={} lost={})",
        ratio(before.median_ns, after.median_ns),
        ratio(before.p99_ns, after.p99_ns),
        ratio(before.max_ns, after.max_ns),
        before.misses,
        after.misses,
        ratio(before_call.median_ns, after_call.median_ns),
        ratio(before_call.p99_ns, after_call.p99_ns),
        ratio(before_call.max_ns, after_call.max_ns),
        stats.deferred,
        stats.lost
    );
}

/// Prints min/median/p99/max of sorted samples and the log2 histogram.
pub fn report(name: &str, samples: &mut [u64], extra: &str) {
    samples.sort_unstable();
    let count = samples.len();
    if count == 0 {
        console_line!("bench: {name} samples=0 {extra}");
        return;
    }
    let at = |per_mille: usize| samples[((count - 1) * per_mille) / 1000];
    console_line!(
        "bench: {name} samples={count} min_ns={} median_ns={} p99_ns={} p999_ns={} max_ns={} {extra}",
        samples[0],
        at(500),
        at(990),
        at(999),
        samples[count - 1]
    );
    let mut histogram = LatencyHistogram::new();
    for &sample in samples.iter() {
        histogram.record(sample);
    }
    let mut line = alloc::string::String::new();
    for (upper, count) in histogram.non_empty_buckets() {
        use core::fmt::Write;
        let lower = upper / 2;
        let _ = write!(line, " [{}..{}):{count}", humanize(lower), humanize(upper));
    }
    console_line!("bench: {name} histogram{line}");
}

fn humanize(ns: u64) -> alloc::string::String {
    if ns >= SECOND {
        alloc::format!("{}s", ns / SECOND)
    } else if ns >= MILLISECOND {
        alloc::format!("{}ms", ns / MILLISECOND)
    } else if ns >= 1000 {
        alloc::format!("{}us", ns / 1000)
    } else {
        alloc::format!("{ns}ns")
    }
}

/// Where the benchmark's threads run.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub rt_cpu: u32,
    pub hog: Option<Hog>,
}

/// The CPU-bound load beside the RT thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hog {
    /// One spinning kernel thread pinned to the RT thread's CPU.
    SameCpu,
    /// One spinning kernel thread on every other non-isolated CPU.
    OtherCpus,
}

/// A 1 kHz RT thread for `seconds` on `placement.rt_cpu`, with optional
/// CPU-hogging kernel threads; prints release latency figures.
pub fn release_latency(name: &str, seconds: u64, placement: Placement) -> Summary {
    static STOP_HOG: AtomicBool = AtomicBool::new(false);
    let periods = seconds * 1000;
    {
        let mut samples = SAMPLES.lock();
        samples.clear();
        samples.reserve(periods as usize);
    }
    STOP_HOG.store(false, Ordering::SeqCst);
    let hog_body = || {
        let mut spins = 0u64;
        while !STOP_HOG.load(Ordering::Relaxed) {
            spins = spins.wrapping_add(1);
            cpu::pause();
        }
        (spins & 0x7fff_ffff) as i32
    };
    let mut hogs = Vec::new();
    match placement.hog {
        Some(Hog::SameCpu) => hogs.push(Builder::new("bench-hog").cpu(placement.rt_cpu).spawn(hog_body)),
        Some(Hog::OtherCpus) => {
            let others = thread::online_mask() & !(1 << placement.rt_cpu);
            for cpu_index in 0..64u32 {
                if others & (1 << cpu_index) != 0 {
                    hogs.push(Builder::new("bench-hog").cpu(cpu_index).spawn(hog_body));
                }
            }
        }
        None => {}
    }
    let rt = Builder::new("bench-rt-1khz").realtime(50).cpu(placement.rt_cpu).spawn(move || {
        if thread::make_periodic(time::now_ns() + MILLISECOND, MILLISECOND).is_err() {
            return -1;
        }
        for _ in 0..periods {
            match thread::wait_next_period() {
                Ok(release) => {
                    {
                        let mut samples = SAMPLES.lock();
                        if samples.len() < samples.capacity() {
                            samples.push(release.latency_ns);
                        }
                    }
                    if LOG_EACH_PERIOD.load(Ordering::Relaxed) {
                        let before = time::now_ns();
                        log::info!(
                            "rt-log: release {} late by {} ns; a line of about one hundred bytes from the 1 kHz thread",
                            release.release_ns,
                            release.latency_ns
                        );
                        let took = time::now_ns().saturating_sub(before);
                        let mut calls = LOG_CALL_SAMPLES.lock();
                        if calls.len() < calls.capacity() {
                            calls.push(took);
                        }
                    }
                }
                Err(_) => return -2,
            }
        }
        0
    });
    let Ok(rt) = rt else {
        console_line!("bench: {name} could not start the RT thread");
        return Summary::default();
    };
    let mut misses = 0;
    let mut skipped = 0;
    if let Some(thread) = thread::get(rt) {
        while thread.state() != thread::State::Exited {
            let _ = thread::sleep_ns(100 * MILLISECOND);
            if let Some(periodic) = thread.realtime_stats().periodic {
                misses = periodic.misses();
                skipped = periodic.skipped();
            }
        }
    }
    let _ = thread::join(rt, Some(SECOND));
    STOP_HOG.store(true, Ordering::SeqCst);
    let hog_count = hogs.len();
    for hog in hogs.into_iter().flatten() {
        let _ = thread::join(hog, Some(SECOND));
    }
    let mut samples = core::mem::take(&mut *SAMPLES.lock());
    let extra = alloc::format!(
        "hz=1000 seconds={seconds} rt_cpu={} misses={misses} skipped={skipped} load={}",
        placement.rt_cpu,
        match placement.hog {
            None => alloc::string::String::from("none"),
            Some(Hog::SameCpu) => alloc::string::String::from("1-spinning-kernel-thread-same-cpu"),
            Some(Hog::OtherCpus) => alloc::format!("{hog_count}-spinning-kernel-threads-other-cpus"),
        }
    );
    report(name, &mut samples, &extra);
    Summary { misses, ..summarize(&mut samples) }
}

/// Two RT threads of equal priority yield to each other; the time per
/// switch includes the scheduler's decision and the register save/restore
/// (FXSAVE/FXRSTOR included).
pub fn context_switch_cost() {
    const ROUNDS: u64 = 20_000;
    static START: AtomicU64 = AtomicU64::new(0);
    static END: AtomicU64 = AtomicU64::new(0);
    let switches_before = thread::cpu_switches();
    let body = || {
        for _ in 0..ROUNDS {
            thread::yield_cpu();
        }
        END.store(time::now_ns(), Ordering::SeqCst);
        0
    };
    let a = Builder::new("bench-switch-a").realtime(60).cpu(0).create(body);
    let b = Builder::new("bench-switch-b").realtime(60).cpu(0).create(body);
    let (Ok(a), Ok(b)) = (a, b) else {
        console_line!("bench: context-switch could not create threads");
        return;
    };
    // A higher-priority starter makes both ready before either runs.
    let starter = Builder::new("bench-switch-start").realtime(61).cpu(0).spawn(move || {
        START.store(time::now_ns(), Ordering::SeqCst);
        let _ = thread::start(a);
        let _ = thread::start(b);
        0
    });
    let _ = starter.map(|starter| thread::join(starter, Some(SECOND)));
    let _ = thread::join(a, Some(60 * SECOND));
    let _ = thread::join(b, Some(60 * SECOND));
    let switches = thread::cpu_switches() - switches_before;
    let elapsed = END.load(Ordering::SeqCst).saturating_sub(START.load(Ordering::SeqCst));
    let yields = 2 * ROUNDS;
    console_line!(
        "bench: context-switch yields={yields} elapsed_ns={elapsed} ns_per_switch={} (switches counted {switches}; includes scheduler decision and FXSAVE/FXRSTOR)",
        elapsed / yields.max(1)
    );
}

static PI_MUTEX: crate::thread::Mutex<()> = crate::thread::Mutex::new(());
static PI_LOW_GO: crate::thread::Semaphore = crate::thread::Semaphore::new(0);
static PI_LOW_HOLDS: crate::thread::Semaphore = crate::thread::Semaphore::new(0);
static PI_HIGH_GO: crate::thread::Semaphore = crate::thread::Semaphore::new(0);
static PI_HOG_GO: crate::thread::Semaphore = crate::thread::Semaphore::new(0);
static PI_ROUND_DONE: crate::thread::Semaphore = crate::thread::Semaphore::new(0);
static PI_STOP: AtomicBool = AtomicBool::new(false);
/// How long the low thread holds the mutex, and how long the medium hog
/// spins, per round.
const PI_HOLD_NS: u64 = 50_000;
const PI_HOG_NS: u64 = 2 * MILLISECOND;
const PI_ROUNDS: usize = 200;

fn spin_for(ns: u64) {
    let end = time::now_ns() + ns;
    while time::now_ns() < end {
        cpu::pause();
    }
}

/// The classic inversion, measured: on one CPU, low (RT 10) holds the
/// mutex for 50 us, high (RT 30) waits for it, and in the second case a
/// medium RT 20 thread spins 2 ms meanwhile. With priority inheritance the
/// high thread's wait is the low thread's hold in both cases; without it,
/// the hog's 2 ms would be added in the second.
fn priority_inheritance_wait() {
    let rt_cpu = if thread::isolated_mask() != 0 { thread::isolated_mask().trailing_zeros() } else { 0 };
    for (name, hog) in [("pi-high-wait-no-hog", false), ("pi-high-wait-medium-hog", true)] {
        reset_samples();
        PI_STOP.store(false, Ordering::SeqCst);
        let low = Builder::new("bench-pi-low").realtime(10).cpu(rt_cpu).spawn(|| {
            while PI_LOW_GO.down().is_ok() && !PI_STOP.load(Ordering::SeqCst) {
                let guard = PI_MUTEX.lock();
                PI_LOW_HOLDS.up();
                spin_for(PI_HOLD_NS);
                drop(guard);
            }
            0
        });
        let high = Builder::new("bench-pi-high").realtime(30).cpu(rt_cpu).spawn(|| {
            while PI_HIGH_GO.down().is_ok() && !PI_STOP.load(Ordering::SeqCst) {
                let asked = time::now_ns();
                let guard = PI_MUTEX.lock();
                push_sample(time::now_ns() - asked);
                drop(guard);
                PI_ROUND_DONE.up();
            }
            0
        });
        let medium = Builder::new("bench-pi-medium").realtime(20).cpu(rt_cpu).spawn(|| {
            while PI_HOG_GO.down().is_ok() && !PI_STOP.load(Ordering::SeqCst) {
                spin_for(PI_HOG_NS);
            }
            0
        });
        let (Ok(low), Ok(high), Ok(medium)) = (low, high, medium) else {
            console_line!("bench: {name} could not create its threads");
            return;
        };
        // The orchestrator (RT 40) outranks all three: each round it lets
        // low take the mutex, then releases high (and the hog) together.
        let orchestrator = Builder::new("bench-pi-rounds").realtime(40).cpu(rt_cpu).spawn(move || {
            for _ in 0..PI_ROUNDS {
                PI_LOW_GO.up();
                if PI_LOW_HOLDS.down_timeout(SECOND).is_err() {
                    break;
                }
                PI_HIGH_GO.up();
                if hog {
                    PI_HOG_GO.up();
                }
                if PI_ROUND_DONE.down_timeout(SECOND).is_err() {
                    break;
                }
            }
            PI_STOP.store(true, Ordering::SeqCst);
            for semaphore in [&PI_LOW_GO, &PI_HIGH_GO, &PI_HOG_GO] {
                semaphore.up();
            }
            0
        });
        if let Ok(orchestrator) = orchestrator {
            let _ = thread::join(orchestrator, Some(120 * SECOND));
        }
        for id in [low, high, medium] {
            let _ = thread::join(id, Some(10 * SECOND));
        }
        let mut samples = take_samples();
        report(
            name,
            &mut samples,
            &alloc::format!(
                "high RT waiter's wait for a mutex low RT holds {} us, on cpu {rt_cpu}{}",
                PI_HOLD_NS / 1000,
                if hog { ", medium RT thread spinning 2 ms meanwhile" } else { "" }
            ),
        );
    }
}

const SAMPLES_PER_CASE: usize = 500;

static DEFERRED_SAMPLES: IrqSpinLock<Vec<u64>> = IrqSpinLock::new(Vec::new());

fn reset_samples() {
    let mut samples = DEFERRED_SAMPLES.lock();
    samples.clear();
    samples.reserve(SAMPLES_PER_CASE + 8);
}

fn push_sample(value: u64) {
    let mut samples = DEFERRED_SAMPLES.lock();
    if samples.len() < samples.capacity() {
        samples.push(value);
    }
}

fn sample_count() -> usize {
    DEFERRED_SAMPLES.lock().len()
}

fn take_samples() -> Vec<u64> {
    core::mem::take(&mut *DEFERRED_SAMPLES.lock())
}

static BENCH_RT: IrqSpinLock<Option<thread::ThreadId>> = IrqSpinLock::new(None);

fn tasklet_probe(_: usize) {
    push_sample(time::now_ns().saturating_sub(BENCH_TASKLET.scheduled_at_ns()));
    if let Some(rt) = *BENCH_RT.lock() {
        let _ = thread::wake_up(rt);
    }
}

static BENCH_TASKLET: crate::tasklet::Tasklet = crate::tasklet::Tasklet::new("bench-tasklet", tasklet_probe, 0);

/// An RT thread hi-schedules a tasklet and suspends; the tasklet measures
/// schedule-to-handler latency and wakes the thread again.
fn tasklet_latency(rt_cpu: u32) {
    reset_samples();
    let rt = Builder::new("bench-tasklet-rt").realtime(40).cpu(rt_cpu).create(|| {
        for _ in 0..SAMPLES_PER_CASE {
            BENCH_TASKLET.hi_schedule();
            thread::suspend_self();
        }
        0
    });
    let Ok(rt) = rt else { return };
    *BENCH_RT.lock() = Some(rt);
    let _ = thread::start(rt);
    let _ = thread::join(rt, Some(60 * SECOND));
    *BENCH_RT.lock() = None;
    BENCH_TASKLET.kill();
    let mut samples = take_samples();
    report("tasklet-from-rt-thread", &mut samples, &alloc::format!("rt_cpu={rt_cpu} (hi_schedule to handler start)"));
}

static JITTER_SENT_AT: AtomicU64 = AtomicU64::new(0);

fn jitter_handler(_: usize) {
    push_sample(time::now_ns().saturating_sub(JITTER_SENT_AT.load(Ordering::SeqCst)));
}

/// The seeds' soft-interrupt latency test: a 1 ms periodic RT thread
/// records the time and pends a named soft IRQ; the handler measures the
/// delay. 500 samples.
fn softirq_jitter(rt_cpu: u32) {
    reset_samples();
    let Ok(irq) = crate::softirq::register("bench softirq jitter test", jitter_handler, 0) else { return };
    let rt = Builder::new("bench-softirq-rt").realtime(40).cpu(rt_cpu).spawn(move || {
        if thread::make_periodic(time::now_ns() + MILLISECOND, MILLISECOND).is_err() {
            return -1;
        }
        for _ in 0..SAMPLES_PER_CASE {
            if thread::wait_next_period().is_err() {
                return -2;
            }
            JITTER_SENT_AT.store(time::now_ns(), Ordering::SeqCst);
            irq.raise();
        }
        0
    });
    if let Ok(rt) = rt {
        let _ = thread::join(rt, Some(60 * SECOND));
    }
    let _ = thread::sleep_ns(5 * MILLISECOND);
    irq.free();
    let mut samples = take_samples();
    report("softirq-jitter-test", &mut samples, &alloc::format!("rt_cpu={rt_cpu} hz=1000 (raise from RT thread to handler start)"));
}

static TIMER_TARGET_NS: AtomicU64 = AtomicU64::new(0);

fn timer_probe(_: usize) {
    push_sample(time::now_ns().saturating_sub(TIMER_TARGET_NS.load(Ordering::SeqCst)));
    if sample_count() < SAMPLES_PER_CASE {
        let next = time::jiffies() + 1;
        TIMER_TARGET_NS.store(rtedge_engine::clock::jiffies_to_ns(next), Ordering::SeqCst);
        let _ = BENCH_TIMER.modify(next);
    }
}

static BENCH_TIMER: crate::timer::Timer = crate::timer::Timer::new("bench-timer", timer_probe, 0);

/// Jiffies timer lateness: callback start minus the start of its expiry jiffy.
fn timer_lateness() {
    reset_samples();
    let next = time::jiffies() + 1;
    TIMER_TARGET_NS.store(rtedge_engine::clock::jiffies_to_ns(next), Ordering::SeqCst);
    if BENCH_TIMER.modify(next).is_err() {
        return;
    }
    while sample_count() < SAMPLES_PER_CASE {
        let _ = thread::sleep_ns(10 * MILLISECOND);
    }
    BENCH_TIMER.delete_sync();
    let mut samples = take_samples();
    report("timer-expiry-lateness", &mut samples, "(TIMER softirq callback start minus expiry jiffy start)");
}

fn hrtimer_probe(timer: &crate::timer::HrTimer) -> crate::timer::Restart {
    let now = time::now_ns();
    push_sample(now.saturating_sub(timer.expires()));
    if sample_count() >= SAMPLES_PER_CASE {
        return crate::timer::Restart::NoRestart;
    }
    timer.forward(now, MILLISECOND);
    crate::timer::Restart::Restart
}

static BENCH_HRTIMER: crate::timer::HrTimer = crate::timer::HrTimer::new("bench-hrtimer", hrtimer_probe, 0);

/// A periodic 1 ms hrtimer: lateness of each callback.
fn hrtimer_lateness() {
    reset_samples();
    if BENCH_HRTIMER.start(MILLISECOND, crate::timer::Mode::Relative).is_err() {
        return;
    }
    while sample_count() < SAMPLES_PER_CASE {
        let _ = thread::sleep_ns(10 * MILLISECOND);
    }
    BENCH_HRTIMER.cancel();
    let mut samples = take_samples();
    report("hrtimer-expiry-lateness", &mut samples, "period=1ms (HRTIMER softirq callback start minus expiry)");
}

fn work_probe(work: &'static crate::workqueue::FnWork) {
    use crate::workqueue::WorkItem;
    push_sample(time::now_ns().saturating_sub(work.work().queued_at_ns()));
    if let Some(rt) = *BENCH_RT.lock() {
        let _ = thread::wake_up(rt);
    }
}

static BENCH_WORK: crate::workqueue::FnWork = crate::workqueue::FnWork::new(work_probe, 0);

/// Work queued (from an RT thread) to the handler starting in an events worker.
fn work_latency(rt_cpu: u32) {
    reset_samples();
    let rt = Builder::new("bench-work-rt").realtime(40).cpu(rt_cpu).create(|| {
        for _ in 0..SAMPLES_PER_CASE {
            crate::workqueue::schedule_work(&BENCH_WORK);
            thread::suspend_self();
        }
        0
    });
    let Ok(rt) = rt else { return };
    *BENCH_RT.lock() = Some(rt);
    let _ = thread::start(rt);
    let _ = thread::join(rt, Some(60 * SECOND));
    *BENCH_RT.lock() = None;
    let mut samples = take_samples();
    report(
        "work-queue-to-run",
        &mut samples,
        &alloc::format!("queued from an RT thread on cpu {rt_cpu} to the events worker's handler start"),
    );
}
