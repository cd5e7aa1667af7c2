//! Tests of the deferred-work engine: softirqs, tasklets, timers,
//! hrtimers, bottom-half control and workqueues. Each proves one rule of
//! the contract with an exact trace or count.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::ktest::{Outcome, Test};
use crate::softirq::{self, SoftIrq};
use crate::sync::{IrqSpinLock, SpinLock};
use crate::tasklet::Tasklet;
use crate::thread::Semaphore;
use crate::thread::{self, Builder, State, ThreadId};
use crate::timer::{HrTimer, Mode, Restart, Timer};
use crate::workqueue::{self, DelayedWorkItem, FnWork, Work, WorkItem, Workqueue};
use crate::{check, check_eq, time};

pub const TESTS: &[Test] = &[
    Test { name: "softirq::dynamic_vectors_run_in_priority_order", run: softirq_order },
    Test { name: "softirq::named_soft_irq_register_list_count_free", run: softirq_named },
    Test { name: "softirq::bh_disable_nests_and_outermost_enable_runs_pending", run: bh_nesting },
    Test { name: "softirq::flood_moves_to_ksoftirqd_and_a_kernel_thread_still_runs", run: softirq_flood },
    Test { name: "softirq::raised_by_rt_thread_runs_before_kernel_thread", run: softirq_before_kernel },
    Test { name: "softirq::rt_thread_preempting_softirq_work_is_outside_it_and_the_work_resumes_first", run: softirq_preempted_by_rt },
    Test { name: "tasklet::three_schedules_before_a_run_give_one_run", run: tasklet_coalesce },
    Test { name: "tasklet::hi_tasklets_run_before_normal_ones", run: tasklet_hi_first },
    Test { name: "tasklet::reschedule_from_own_handler_runs_again", run: tasklet_self_reschedule },
    Test { name: "tasklet::scheduled_while_disabled_runs_once_after_last_enable", run: tasklet_disabled },
    Test { name: "tasklet::kill_leaves_it_neither_scheduled_nor_running", run: tasklet_kill },
    Test { name: "tasklet::scheduled_from_rt_thread_runs_before_kernel_thread", run: tasklet_before_kernel },
    Test { name: "timer::timers_fire_in_expiry_order_in_softirq_context", run: timer_order },
    Test { name: "timer::modify_and_delete_report_pending", run: timer_modify_delete },
    Test { name: "timer::armed_for_is_the_delay_asked_for_across_ticks", run: timer_armed_for },
    Test { name: "hrtimer::relative_start_fires_after_deadline", run: hrtimer_relative },
    Test { name: "hrtimer::restart_with_forward_is_periodic_and_cancel_stops", run: hrtimer_periodic },
    Test { name: "lock_bh::spinlock_shared_with_a_softirq", run: lock_bh },
    Test { name: "work::schedule_work_runs_in_events_worker_once", run: work_once },
    Test { name: "work::item_embedded_in_struct_reaches_its_fields", run: work_embedded },
    Test { name: "work::named_queues_flush_and_destroy", run: work_named_queues },
    Test { name: "work::delayed_work_runs_after_delay", run: work_delayed },
    Test { name: "work::cancel_sync_on_self_requeueing_item_leaves_it_idle", run: work_cancel_self_requeue },
    Test { name: "work::cancel_delayed_work_sync_stops_the_timer", run: work_cancel_delayed },
    Test { name: "work::schedule_on_each_cpu_runs_everywhere", run: work_each_cpu },
    Test { name: "time::realtime_clock_and_jiffies_conversions", run: clocks },
];

use super::{MILLISECOND, SECOND, error};

static TRACE: IrqSpinLock<Vec<u32>> = IrqSpinLock::new(Vec::new());

fn trace(value: u32) {
    TRACE.lock().push(value);
}

fn take_trace() -> Vec<u32> {
    core::mem::take(&mut *TRACE.lock())
}

/// Makes room in the (emptied) trace: real-time threads record into it
/// and must not allocate. Call after `take_trace`, which leaves an empty
/// trace with no capacity.
fn reserve_trace() {
    TRACE.lock().reserve(256);
}

/// Lets pending bottom halves run: a short sleep switches away and back,
/// and softirqs run at every switch to a kernel thread.
fn settle() {
    let _ = thread::sleep_ns(2 * MILLISECOND);
    softirq::run_pending();
}

fn softirq_order() -> Outcome {
    take_trace();
    reserve_trace();
    let a = softirq::register("test-order-a", trace_value, 1).map_err(error)?;
    let b = softirq::register("test-order-b", trace_value, 2).map_err(error)?;
    let c = softirq::register("test-order-c", trace_value, 3).map_err(error)?;
    {
        let _bottom_halves = softirq::bh_disable();
        c.raise();
        b.raise();
        a.raise();
        c.raise();
        check_eq!(TRACE.lock().len(), 0);
    }
    // The outermost enable ran them: in vector order, each once.
    check_eq!(take_trace(), alloc::vec![1, 2, 3]);
    a.free();
    b.free();
    c.free();
    Ok(())
}

fn trace_value(value: usize) {
    trace(value as u32);
}

fn softirq_named() -> Outcome {
    let name = "softirq jitter test probe";
    let irq = softirq::register(name, trace_value, 9).map_err(error)?;
    check!(softirq::register(name, trace_value, 9).is_err(), "duplicate name accepted");
    let index = softirq::find(name).ok_or("not found by name")?;
    check_eq!(index, irq.index());
    let before: u64 = softirq::counts().iter().filter(|line| line.name == name).flat_map(|line| line.per_cpu.iter()).sum();
    take_trace();
    irq.raise();
    settle();
    check_eq!(take_trace(), alloc::vec![9]);
    let after: u64 = softirq::counts().iter().filter(|line| line.name == name).flat_map(|line| line.per_cpu.iter()).sum();
    check_eq!(after - before, 1);
    irq.free();
    check!(softirq::find(name).is_none(), "freed soft IRQ still listed");
    check!(softirq::find("NET_RX").is_some(), "fixed vectors are listed by name");
    Ok(())
}

fn bh_nesting() -> Outcome {
    take_trace();
    let irq = softirq::register("test-bh", trace_value, 5).map_err(error)?;
    let depth = softirq::bh_depth();
    let outer = softirq::bh_disable();
    let inner = softirq::bh_disable();
    check_eq!(softirq::bh_depth(), depth + 2);
    irq.raise();
    drop(inner);
    check_eq!(TRACE.lock().len(), 0);
    drop(outer);
    check_eq!(take_trace(), alloc::vec![5]);
    check_eq!(softirq::bh_depth(), depth);
    irq.free();
    Ok(())
}

static FLOOD_RUNS: AtomicU32 = AtomicU32::new(0);
static FLOOD_IRQ: IrqSpinLock<Option<SoftIrq>> = IrqSpinLock::new(None);
/// The bystander's loop count, and the count the flood waits for.
static FLOOD_PROGRESS: AtomicU64 = AtomicU64::new(0);
static FLOOD_TARGET: AtomicU64 = AtomicU64::new(u64::MAX);
/// Set when the flood ends: 1 on seeing the bystander reach the target,
/// 2 at the cap on runs.
static FLOOD_END: AtomicU32 = AtomicU32::new(0);
static FLOOD_CPU: AtomicU32 = AtomicU32::new(u32::MAX);
/// A hang guard: 200 000 runs of 20 us are 4 s of softirq work.
const FLOOD_MAX_RUNS: u32 = 200_000;

fn flood_handler(_: usize) {
    // Each run costs a little and raises itself again: a flood, until the
    // bystander on this CPU has been seen to progress meanwhile.
    FLOOD_CPU.store(thread::current_cpu(), Ordering::SeqCst);
    time::spin_for_ns(20_000);
    let runs = FLOOD_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    if FLOOD_PROGRESS.load(Ordering::SeqCst) >= FLOOD_TARGET.load(Ordering::SeqCst) {
        FLOOD_END.store(1, Ordering::SeqCst);
    } else if runs >= FLOOD_MAX_RUNS {
        FLOOD_END.store(2, Ordering::SeqCst);
    } else if let Some(irq) = *FLOOD_IRQ.lock() {
        irq.raise();
    }
}

fn softirq_flood() -> Outcome {
    // The flood ends when the handler itself sees the kernel thread on its
    // CPU make progress, so what is proved (that thread ran while the flood
    // was still going) does not depend on when this thread, possibly on
    // another vCPU the host may stall, happens to look.
    static STOP: AtomicBool = AtomicBool::new(false);
    FLOOD_PROGRESS.store(0, Ordering::SeqCst);
    FLOOD_TARGET.store(u64::MAX, Ordering::SeqCst);
    FLOOD_RUNS.store(0, Ordering::SeqCst);
    FLOOD_END.store(0, Ordering::SeqCst);
    FLOOD_CPU.store(u32::MAX, Ordering::SeqCst);
    STOP.store(false, Ordering::SeqCst);
    let irq = softirq::register("test-flood", flood_handler, 0).map_err(error)?;
    *FLOOD_IRQ.lock() = Some(irq);
    let cpu = thread::current_cpu();
    let counter = Builder::new("t-flood-bystander")
        .cpu(cpu)
        .spawn(|| {
            while !STOP.load(Ordering::SeqCst) {
                FLOOD_PROGRESS.fetch_add(1, Ordering::SeqCst);
                thread::yield_cpu();
            }
            0
        })
        .map_err(error)?;
    let handovers = softirq::handovers();
    FLOOD_TARGET.store(FLOOD_PROGRESS.load(Ordering::SeqCst) + 3, Ordering::SeqCst);
    irq.raise_on(cpu);
    softirq::run_pending();
    let give_up = time::now_ns() + 30 * SECOND;
    while FLOOD_END.load(Ordering::SeqCst) == 0 && time::now_ns() < give_up {
        let _ = thread::sleep_ns(MILLISECOND);
    }
    STOP.store(true, Ordering::SeqCst);
    thread::join(counter, Some(SECOND)).map_err(error)?;
    *FLOOD_IRQ.lock() = None;
    irq.free();
    let runs = FLOOD_RUNS.load(Ordering::SeqCst);
    check_eq!(FLOOD_CPU.load(Ordering::SeqCst), cpu);
    check!(softirq::handovers() > handovers, "the budget never handed the flood to ksoftirqd ({runs} runs)");
    check_eq!(FLOOD_END.load(Ordering::SeqCst), 1);
    crate::console_line!("ktest-note: softirq flood: the bystander progressed after {runs} runs of 20 us");
    Ok(())
}

static ORDER_SEMAPHORE: Semaphore = Semaphore::new(0);

/// A kernel thread on `cpu` that records 2 once `ORDER_SEMAPHORE` is
/// raised; returned once it waits on it, so what runs before it is ordered.
fn order_witness(name: &str, cpu: u32) -> Result<ThreadId, alloc::string::String> {
    let kernel = Builder::new(name)
        .cpu(cpu)
        .spawn(|| {
            if ORDER_SEMAPHORE.down().is_err() {
                return -1;
            }
            trace(2);
            0
        })
        .map_err(error)?;
    super::threads::wait_for_state(kernel, State::Blocked)?;
    Ok(kernel)
}

fn softirq_before_kernel() -> Outcome {
    take_trace();
    reserve_trace();
    let irq = softirq::register("test-rt-raise", trace_value, 1).map_err(error)?;
    while ORDER_SEMAPHORE.try_down() {}
    let cpu = thread::current_cpu();
    let kernel = order_witness("t-after-softirq", cpu)?;
    let rt = Builder::new("t-raiser")
        .realtime(20)
        .cpu(cpu)
        .spawn(move || {
            irq.raise();
            ORDER_SEMAPHORE.up();
            0
        })
        .map_err(error)?;
    thread::join(rt, Some(SECOND)).map_err(error)?;
    thread::join(kernel, Some(SECOND)).map_err(error)?;
    irq.free();
    check_eq!(take_trace(), alloc::vec![1, 2]);
    Ok(())
}

static PREEMPT_RT_GATE: Semaphore = Semaphore::new(0);
static PREEMPT_BYSTANDER_GATE: Semaphore = Semaphore::new(0);
static PREEMPT_RT_RELEASE: Semaphore = Semaphore::new(0);
static PREEMPT_RT_RAN: AtomicBool = AtomicBool::new(false);

/// Releases a kernel thread and a higher-priority RT thread from inside
/// softirq work: the RT thread preempts it (at once, or when the
/// rescheduling self-IPI lands: under KVM that may take a while, so the
/// handler waits for it with interrupts enabled; the bound is a hang guard).
fn preempted_handler(_: usize) {
    trace(10);
    PREEMPT_BYSTANDER_GATE.up();
    PREEMPT_RT_GATE.up();
    let deadline = time::now_ns() + 20 * SECOND;
    while !PREEMPT_RT_RAN.load(Ordering::SeqCst) && time::now_ns() < deadline {
        rtedge_arch::cpu::pause();
    }
    trace(11);
}

fn softirq_preempted_by_rt() -> Outcome {
    take_trace();
    reserve_trace();
    while PREEMPT_RT_GATE.try_down() {}
    while PREEMPT_BYSTANDER_GATE.try_down() {}
    while PREEMPT_RT_RELEASE.try_down() {}
    PREEMPT_RT_RAN.store(false, Ordering::SeqCst);
    let cpu = thread::current_cpu();
    let bystander = Builder::new("t-bystander")
        .cpu(cpu)
        .spawn(|| {
            if PREEMPT_BYSTANDER_GATE.down().is_err() {
                return -1;
            }
            trace(40);
            0
        })
        .map_err(error)?;
    let rt = Builder::new("t-preemptor")
        .realtime(30)
        .cpu(cpu)
        .spawn(|| {
            if PREEMPT_RT_GATE.down().is_err() {
                return -1;
            }
            trace(20 + u32::from(softirq::in_softirq()));
            PREEMPT_RT_RAN.store(true, Ordering::SeqCst);
            // A blocking wait is legal here: this thread is not in softirq
            // context even though it preempted softirq work. Released once the
            // test thread is done (not by a timeout: a stalled vCPU would
            // reorder the trace).
            if PREEMPT_RT_RELEASE.down_timeout(10 * SECOND).is_err() {
                return -2;
            }
            trace(30);
            0
        })
        .map_err(error)?;
    super::threads::wait_for_state(bystander, State::Blocked)?;
    super::threads::wait_for_state(rt, State::Blocked)?;
    check!(TRACE.lock().capacity() >= 16, "the RT thread would allocate to record");
    let irq = softirq::register("test-rt-preempt", preempted_handler, 0).map_err(error)?;
    irq.raise();
    softirq::run_pending();
    trace(12);
    PREEMPT_RT_RELEASE.up();
    let rt_code = thread::join(rt, Some(10 * SECOND)).map_err(error)?;
    thread::join(bystander, Some(10 * SECOND)).map_err(error)?;
    irq.free();
    check_eq!(rt_code, 0);
    let trace = take_trace();
    // The RT thread ran inside the handler (after 10) and outside softirq
    // context (20, not 21); once it blocked, the handler went on (11)
    // before the kernel thread it released (40); the RT thread, released
    // after 12, went on then (30). The raise from thread context wakes
    // ksoftirqd (as Linux does), so the handler may run there instead of in
    // this thread's run_pending, and the kernel thread may then get the
    // CPU before this thread's 12.
    check_eq!(trace.get(..3), Some(&[10, 20, 11][..]));
    let position = |value| trace.iter().position(|&v| v == value);
    check!(position(40) > position(11) && position(30) > position(12), "trace {trace:?}");
    Ok(())
}

fn tasklet_coalesce() -> Outcome {
    static TASKLET: Tasklet = Tasklet::new("test-coalesce", trace_value, 7);
    take_trace();
    let runs = TASKLET.runs();
    {
        let _bottom_halves = softirq::bh_disable();
        TASKLET.schedule();
        TASKLET.schedule();
        TASKLET.schedule();
        check!(TASKLET.is_scheduled());
    }
    check_eq!(TASKLET.runs() - runs, 1);
    check_eq!(take_trace(), alloc::vec![7]);
    // Once it has run it can be scheduled again.
    TASKLET.schedule();
    settle();
    check_eq!(TASKLET.runs() - runs, 2);
    Ok(())
}

fn tasklet_hi_first() -> Outcome {
    static NORMAL: Tasklet = Tasklet::new("test-normal", trace_value, 1);
    static HIGH: Tasklet = Tasklet::new("test-high", trace_value, 2);
    take_trace();
    {
        let _bottom_halves = softirq::bh_disable();
        NORMAL.schedule();
        HIGH.hi_schedule();
    }
    check_eq!(take_trace(), alloc::vec![2, 1]);
    Ok(())
}

static SELF_RESCHEDULE: Tasklet = Tasklet::new("test-self", self_reschedule, 0);

fn self_reschedule(_: usize) {
    trace(SELF_RESCHEDULE.runs() as u32);
    if SELF_RESCHEDULE.runs() == 0 {
        SELF_RESCHEDULE.schedule();
    }
}

fn tasklet_self_reschedule() -> Outcome {
    take_trace();
    check_eq!(SELF_RESCHEDULE.runs(), 0);
    SELF_RESCHEDULE.schedule();
    settle();
    check_eq!(take_trace(), alloc::vec![0, 1]);
    check_eq!(SELF_RESCHEDULE.runs(), 2);
    Ok(())
}

fn tasklet_disabled() -> Outcome {
    static TASKLET: Tasklet = Tasklet::new_disabled("test-disabled", trace_value, 3);
    take_trace();
    check_eq!(TASKLET.disable_count(), 1);
    TASKLET.disable();
    TASKLET.schedule();
    TASKLET.schedule();
    settle();
    check_eq!(TASKLET.runs(), 0);
    TASKLET.enable();
    settle();
    check_eq!(TASKLET.runs(), 0);
    TASKLET.enable();
    settle();
    check_eq!(TASKLET.runs(), 1);
    check_eq!(take_trace(), alloc::vec![3]);
    settle();
    check_eq!(TASKLET.runs(), 1);
    Ok(())
}

fn tasklet_kill() -> Outcome {
    static TASKLET: Tasklet = Tasklet::new("test-kill", trace_value, 4);
    take_trace();
    // Scheduled and not yet run (bottom halves off): kill lets it run,
    // then returns with it idle.
    let bottom_halves = softirq::bh_disable();
    TASKLET.schedule();
    check!(TASKLET.is_scheduled());
    drop(bottom_halves);
    TASKLET.schedule();
    TASKLET.kill();
    check!(!TASKLET.is_scheduled() && !TASKLET.is_running());
    let runs = TASKLET.runs();
    // A disabled, scheduled tasklet: kill drops the pending run.
    TASKLET.disable();
    TASKLET.schedule();
    TASKLET.kill();
    TASKLET.enable();
    settle();
    check_eq!(TASKLET.runs(), runs);
    check!(!TASKLET.is_scheduled());
    Ok(())
}

static RT_TASKLET: Tasklet = Tasklet::new("test-from-rt", trace_value, 1);

fn tasklet_before_kernel() -> Outcome {
    take_trace();
    reserve_trace();
    while ORDER_SEMAPHORE.try_down() {}
    let cpu = thread::current_cpu();
    let kernel = order_witness("t-after-tasklet", cpu)?;
    let rt = Builder::new("t-tasklet-rt")
        .realtime(20)
        .cpu(cpu)
        .spawn(|| {
            RT_TASKLET.hi_schedule();
            ORDER_SEMAPHORE.up();
            0
        })
        .map_err(error)?;
    thread::join(rt, Some(SECOND)).map_err(error)?;
    thread::join(kernel, Some(SECOND)).map_err(error)?;
    check_eq!(take_trace(), alloc::vec![1, 2]);
    Ok(())
}

fn timer_callback(value: usize) {
    // Runs in TIMER softirq context.
    trace(value as u32 + if softirq::in_softirq() { 0 } else { 1000 });
}

fn timer_order() -> Outcome {
    static A: Timer = Timer::new("test-a", timer_callback, 1);
    static B: Timer = Timer::new("test-b", timer_callback, 2);
    static C: Timer = Timer::new("test-c", timer_callback, 3);
    take_trace();
    reserve_trace();
    {
        // All three are armed before any of them can fire: a stall of a few
        // jiffies between two calls (a busy host) would otherwise let the
        // TIMER softirq run the earlier ones first, correctly.
        let _bottom_halves = softirq::bh_disable();
        let now = time::jiffies();
        A.modify(now + 3).map_err(error)?;
        B.modify(now + 1).map_err(error)?;
        C.modify(now + 2).map_err(error)?;
    }
    let _ = thread::sleep_ns(10 * MILLISECOND);
    settle();
    check_eq!(take_trace(), alloc::vec![2, 3, 1]);
    check!(!A.is_pending() && !B.is_pending() && !C.is_pending());
    Ok(())
}

/// `TIMERS` shows a timer's period as the delay its last arm asked for.
/// Arming for 60 000 jiffies over and over for 300 ms crosses ~300 jiffy
/// ticks: the old code read `jiffies()` a second time after registering
/// and recorded 59 999 whenever a tick fell between the two reads.
fn timer_armed_for() -> Outcome {
    static T: Timer = Timer::new("test-armed-for", timer_callback, 6);
    const DELAY: u64 = 60_000;
    T.setup().map_err(error)?;
    let until = time::now_ns() + 300 * MILLISECOND;
    let mut arms = 0u64;
    let mut wrong = 0u64;
    let mut seen = DELAY;
    while time::now_ns() < until {
        T.modify_in(DELAY).map_err(error)?;
        arms += 1;
        if T.armed_for() != DELAY {
            wrong += 1;
            seen = T.armed_for();
        }
    }
    T.delete_sync();
    check!(wrong == 0, "{wrong} of {arms} arms recorded a period of {seen} jiffies, not {DELAY}");
    Ok(())
}

fn timer_modify_delete() -> Outcome {
    static T: Timer = Timer::new("test-modify", timer_callback, 5);
    take_trace();
    {
        // The timer is registered on this CPU, where bottom halves are off:
        // it cannot fire (nor be running) between these calls, however long
        // the host stalls the guest between two of them; so delete_sync
        // does not wait either.
        let _bottom_halves = softirq::bh_disable();
        T.setup().map_err(error)?;
        check_eq!(T.modify_in(1000).map_err(error)?, false);
        check_eq!(T.modify_in(1000).map_err(error)?, true);
        check!(T.is_pending());
        check_eq!(T.delete(), true);
        check_eq!(T.delete(), false);
        check_eq!(T.modify_in(2).map_err(error)?, false);
        check_eq!(T.delete_sync(), true);
    }
    // Past its old expiry (2 jiffies) on the clock: deleted, it never fires.
    let _ = thread::sleep_ns(5 * MILLISECOND);
    settle();
    check_eq!(T.fired(), 0);
    check_eq!(take_trace(), Vec::<u32>::new());
    Ok(())
}

static HR_FIRED_AT: AtomicU64 = AtomicU64::new(0);

fn hr_once(timer: &HrTimer) -> Restart {
    HR_FIRED_AT.store(time::now_ns(), Ordering::SeqCst);
    let _ = timer;
    Restart::NoRestart
}

fn hrtimer_relative() -> Outcome {
    static TIMER: HrTimer = HrTimer::new("test-hr-once", hr_once, 0);
    HR_FIRED_AT.store(0, Ordering::SeqCst);
    let start = time::now_ns();
    check_eq!(TIMER.start(3 * MILLISECOND, Mode::Relative).map_err(error)?, false);
    let deadline = TIMER.expires();
    check!(deadline >= start + 3 * MILLISECOND);
    for _ in 0..1000 {
        if HR_FIRED_AT.load(Ordering::SeqCst) != 0 {
            break;
        }
        let _ = thread::sleep_ns(MILLISECOND);
    }
    let fired = HR_FIRED_AT.load(Ordering::SeqCst);
    check!(fired >= deadline, "fired at {fired}, before its expiry {deadline}");
    check!(!TIMER.is_active());
    Ok(())
}

static PERIODIC_EXPIRIES: IrqSpinLock<Vec<u64>> = IrqSpinLock::new(Vec::new());

fn hr_periodic(timer: &HrTimer) -> Restart {
    let mut expiries = PERIODIC_EXPIRIES.lock();
    expiries.push(timer.expires());
    if expiries.len() >= 5 {
        return Restart::NoRestart;
    }
    timer.forward(timer.expires(), MILLISECOND);
    Restart::Restart
}

fn hrtimer_periodic() -> Outcome {
    static TIMER: HrTimer = HrTimer::new("test-hr-periodic", hr_periodic, 0);
    PERIODIC_EXPIRIES.lock().clear();
    PERIODIC_EXPIRIES.lock().reserve(8);
    let first = time::now_ns() + MILLISECOND;
    TIMER.start(first, Mode::Absolute).map_err(error)?;
    for _ in 0..1000 {
        if PERIODIC_EXPIRIES.lock().len() >= 5 {
            break;
        }
        let _ = thread::sleep_ns(MILLISECOND);
    }
    let expiries = PERIODIC_EXPIRIES.lock().clone();
    check_eq!(expiries, (0..5).map(|k| first + k * MILLISECOND).collect::<Vec<_>>());
    check!(!TIMER.is_active());
    check_eq!(TIMER.fired(), 5);
    // A running periodic timer is stopped by cancel. It restarts for ever,
    // so it is armed (or running, then re-armed) whenever cancel comes:
    // cancel reports it active, and after it the timer never fires again,
    // whatever the host's timing.
    FOREVER.start(MILLISECOND, Mode::Relative).map_err(error)?;
    for _ in 0..1000 {
        if FOREVER.fired() >= 2 {
            break;
        }
        let _ = thread::sleep_ns(MILLISECOND);
    }
    check!(FOREVER.fired() >= 2, "the periodic timer fired {} times in 1000 sleeps of 1 ms", FOREVER.fired());
    check!(FOREVER.cancel(), "cancel found a periodic timer inactive");
    let fired = FOREVER.fired();
    let _ = thread::sleep_ns(5 * MILLISECOND);
    check_eq!(FOREVER.fired(), fired);
    check!(!FOREVER.is_active());
    Ok(())
}

static FOREVER: HrTimer = HrTimer::new("test-hr-forever", hr_forever, 0);

fn hr_forever(timer: &HrTimer) -> Restart {
    timer.forward(time::now_ns(), MILLISECOND);
    Restart::Restart
}

static SHARED: SpinLock<u64> = SpinLock::new(0);

fn bump_shared(_: usize) {
    *SHARED.lock() += 1;
}

fn lock_bh() -> Outcome {
    let irq = softirq::register("test-lock-bh", bump_shared, 0).map_err(error)?;
    *SHARED.lock_bh() = 0;
    for _ in 0..100 {
        let mut guard = SHARED.lock_bh();
        // The softirq raised here cannot run (and deadlock on the lock)
        // until the guard drops and re-enables bottom halves.
        irq.raise();
        *guard += 10;
    }
    settle();
    check_eq!(*SHARED.lock_bh(), 100 * 10 + 100);
    irq.free();
    Ok(())
}

static WORK_THREAD_OK: AtomicBool = AtomicBool::new(false);

fn record_worker(work: &'static FnWork) {
    let name = thread::current().name();
    WORK_THREAD_OK.store(name.starts_with("events/"), Ordering::SeqCst);
    trace(work.data() as u32);
}

fn work_once() -> Outcome {
    static WORK: FnWork = FnWork::new(record_worker, 11);
    take_trace();
    WORK_THREAD_OK.store(false, Ordering::SeqCst);
    let blocker = softirq::bh_disable();
    check!(workqueue::schedule_work(&WORK));
    check!(!workqueue::schedule_work(&WORK), "a pending item was queued twice");
    drop(blocker);
    workqueue::flush_scheduled_work();
    check_eq!(take_trace(), alloc::vec![11]);
    check!(WORK_THREAD_OK.load(Ordering::SeqCst), "did not run in an events/N worker");
    check_eq!(WORK.work().runs(), 1);
    Ok(())
}

struct Sensor {
    work: Work,
    reading: AtomicU64,
    handled: AtomicU64,
}

impl WorkItem for Sensor {
    fn work(&self) -> &Work {
        &self.work
    }

    fn run(&'static self) {
        // The handler sees the whole struct (no container_of, no unsafe).
        self.handled.store(self.reading.load(Ordering::SeqCst) * 2, Ordering::SeqCst);
    }
}

static SENSOR: Sensor = Sensor { work: Work::new(), reading: AtomicU64::new(0), handled: AtomicU64::new(0) };

fn work_embedded() -> Outcome {
    SENSOR.reading.store(21, Ordering::SeqCst);
    check!(workqueue::schedule_work(&SENSOR));
    workqueue::flush_scheduled_work();
    check_eq!(SENSOR.handled.load(Ordering::SeqCst), 42);
    Ok(())
}

fn slow_record(work: &'static FnWork) {
    let _ = thread::sleep_ns(MILLISECOND);
    trace(work.data() as u32);
}

fn work_named_queues() -> Outcome {
    static ITEMS: [FnWork; 4] =
        [FnWork::new(slow_record, 1), FnWork::new(slow_record, 2), FnWork::new(slow_record, 3), FnWork::new(slow_record, 4)];
    take_trace();
    reserve_trace();
    let per_cpu = Workqueue::create("my_queue").map_err(error)?;
    let single = Workqueue::create_single_thread("my_single").map_err(error)?;
    let names: Vec<_> = thread::list().into_iter().map(|info| info.name).collect();
    check!(names.iter().any(|name| name == "my_queue/0"), "no my_queue/0 in {names:?}");
    check!(names.iter().any(|name| name == "my_single"), "no my_single in {names:?}");
    // A single-thread queue runs items in order; flush waits for all.
    for item in &ITEMS {
        check!(single.queue(item));
    }
    single.flush();
    check_eq!(take_trace(), alloc::vec![1, 2, 3, 4]);
    for item in &ITEMS[..2] {
        check!(per_cpu.queue(item));
    }
    // destroy flushes first.
    per_cpu.destroy();
    let mut rest = take_trace();
    rest.sort_unstable();
    check_eq!(rest, alloc::vec![1, 2]);
    single.destroy();
    let names: Vec<_> = thread::list().into_iter().filter(|info| info.state != State::Exited).map(|info| info.name).collect();
    check!(!names.iter().any(|name| name.starts_with("my_queue") || name == "my_single"), "workers still alive: {names:?}");
    Ok(())
}

static DELAYED_RAN_AT: AtomicU64 = AtomicU64::new(0);

fn delayed_record(_: &'static workqueue::FnDelayedWork) {
    DELAYED_RAN_AT.store(time::jiffies(), Ordering::SeqCst);
}

static DELAYED: workqueue::FnDelayedWork = workqueue::FnDelayedWork::new(delayed_record, 0);

fn work_delayed() -> Outcome {
    DELAYED_RAN_AT.store(0, Ordering::SeqCst);
    let queued_at = time::jiffies();
    {
        // Its timer is registered on this CPU (first armed here), where
        // bottom halves are off: it cannot fire between these calls, however
        // long the host stalls the guest between two of them.
        let _bottom_halves = softirq::bh_disable();
        check!(workqueue::schedule_delayed_work(&DELAYED, 5).map_err(error)?);
        check!(DELAYED.delayed().timer_pending());
        check!(!workqueue::schedule_delayed_work(&DELAYED, 5).map_err(error)?, "queued twice while pending");
    }
    for _ in 0..1000 {
        if DELAYED_RAN_AT.load(Ordering::SeqCst) != 0 {
            break;
        }
        let _ = thread::sleep_ns(MILLISECOND);
    }
    let ran_at = DELAYED_RAN_AT.load(Ordering::SeqCst);
    check!(ran_at >= queued_at + 5, "ran at jiffy {ran_at}, queued at {queued_at} with delay 5");
    Ok(())
}

static REQUEUE_RUNS: AtomicU64 = AtomicU64::new(0);

fn requeue_self(work: &'static FnWork) {
    REQUEUE_RUNS.fetch_add(1, Ordering::SeqCst);
    let _ = thread::sleep_ns(200_000);
    workqueue::schedule_work(work);
}

fn work_cancel_self_requeue() -> Outcome {
    static WORK: FnWork = FnWork::new(requeue_self, 0);
    REQUEUE_RUNS.store(0, Ordering::SeqCst);
    check!(workqueue::schedule_work(&WORK));
    while REQUEUE_RUNS.load(Ordering::SeqCst) < 3 {
        let _ = thread::sleep_ns(200_000);
    }
    workqueue::cancel_work_sync(&WORK);
    check!(!WORK.work().is_pending(), "pending after cancel_work_sync");
    check!(!WORK.work().is_running(), "running after cancel_work_sync");
    let runs = REQUEUE_RUNS.load(Ordering::SeqCst);
    let _ = thread::sleep_ns(5 * MILLISECOND);
    check_eq!(REQUEUE_RUNS.load(Ordering::SeqCst), runs);
    // It can be queued again afterwards.
    let blocker = softirq::bh_disable();
    check!(workqueue::schedule_work(&WORK));
    drop(blocker);
    workqueue::cancel_work_sync(&WORK);
    check!(!WORK.work().is_pending() && !WORK.work().is_running());
    Ok(())
}

fn work_cancel_delayed() -> Outcome {
    static DELAYED_CANCEL: workqueue::FnDelayedWork = workqueue::FnDelayedWork::new(delayed_record, 0);
    DELAYED_RAN_AT.store(0, Ordering::SeqCst);
    check!(workqueue::schedule_delayed_work(&DELAYED_CANCEL, 20).map_err(error)?);
    let cancelled = workqueue::cancel_delayed_work_sync(&DELAYED_CANCEL);
    let ran_before = DELAYED_RAN_AT.load(Ordering::SeqCst);
    // The cancel reports whether it stopped the item (timer armed or item
    // queued). Only a host stall of 20 jiffies between the two calls lets it
    // run first (cancel_delayed_work_sync may block, so bottom halves cannot
    // be held off across it); then the cancel must say so. Either way, once
    // it returns the item is idle and never runs again.
    check_eq!(cancelled, ran_before == 0);
    check!(!DELAYED_CANCEL.delayed().timer_pending());
    check!(!DELAYED_CANCEL.work().is_pending() && !DELAYED_CANCEL.work().is_running());
    // Past its expiry on the clock: cancelled, it never runs.
    let _ = thread::sleep_ns(30 * MILLISECOND);
    check_eq!(DELAYED_RAN_AT.load(Ordering::SeqCst), ran_before);
    if ran_before != 0 {
        crate::console_line!("ktest-note: the host stalled 20 ms before cancel_delayed_work_sync: the item ran first");
    }
    Ok(())
}

static EACH_CPU: AtomicU64 = AtomicU64::new(0);

fn mark_cpu(cpu: u32) {
    if thread::current_cpu() == cpu {
        EACH_CPU.fetch_or(1 << cpu, Ordering::SeqCst);
    }
}

fn work_each_cpu() -> Outcome {
    EACH_CPU.store(0, Ordering::SeqCst);
    workqueue::schedule_on_each_cpu(mark_cpu).map_err(error)?;
    check_eq!(EACH_CPU.load(Ordering::SeqCst), thread::online_mask());
    Ok(())
}

fn clocks() -> Outcome {
    let realtime = time::realtime_ns().ok_or("no wall clock (no RTC, no hypervisor wall clock)")?;
    // 2024-01-01T00:00:00Z: any real clock is past it.
    check!(realtime > 1_704_067_200 * SECOND, "wall clock {realtime} is before 2024");
    let monotonic = time::monotonic_ns();
    let later = time::realtime_ns().unwrap_or(0);
    check!(later >= realtime && time::monotonic_ns() >= monotonic);
    check_eq!(time::jiffies_to_msecs(1500), 1500);
    check_eq!(time::jiffies_to_usecs(3), 3000);
    check_eq!(time::msecs_to_jiffies(7), 7);
    check_eq!(time::usecs_to_jiffies(1001), 2);
    Ok(())
}
