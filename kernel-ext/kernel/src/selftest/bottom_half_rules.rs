//! The bottom-half rules of issue 11, one test each, named after the rule
//! (the same names as the loom models in `kernel-ext/engine/tests/`). The
//! races are made certain, not likely: a handler or callback spins until
//! the other side has started the operation under test, then lingers.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::ktest::{Outcome, Test};
use crate::softirq::{self, SoftIrqError, Vector};
use crate::tasklet::Tasklet;
use crate::thread::{self, Builder};
use crate::timer::Timer;
use crate::{check, check_eq, context, irq, time};

use super::{MILLISECOND, SECOND, error};

/// Tests that run on any machine.
const TESTS: &[Test] = &[
    Test { name: "softirq::handlerless_fixed_vector_is_refused_and_counts_nothing", run: handlerless_vectors },
    Test { name: "softirq::stale_handle_raises_nothing_after_free", run: stale_handle },
    Test { name: "irq::detach_returns_the_vector", run: detach_returns_vector },
];

/// Tests that need a second CPU.
const SMP_TESTS: &[Test] = &[
    Test { name: "timer::delete_sync_stops_a_self_rearming_timer", run: delete_sync_self_rearming },
    Test { name: "tasklet::disable_waits_for_a_running_handler", run: tasklet_disable_waits },
    Test { name: "softirq::raise_on_reaches_an_idle_cpu", run: raise_on_idle_cpu },
    Test { name: "softirq::raise_from_a_busy_thread_runs_in_ksoftirqd", run: raise_from_busy_thread },
    Test { name: "softirq::freed_vector_never_runs", run: freed_vector_never_runs },
    Test { name: "softirq::stale_pending_bit_never_fires_the_next_handler", run: stale_pending_bit },
];

/// The groups of this file that apply to this machine.
pub fn groups() -> Vec<&'static [Test]> {
    let mut groups: Vec<&'static [Test]> = alloc::vec![TESTS];
    if thread::online_mask().count_ones() > 1 {
        groups.push(SMP_TESTS);
    }
    groups
}

fn last_cpu() -> u32 {
    63 - thread::online_mask().leading_zeros()
}

/// Spins (interrupts on) until `flag` is set or `bound_ns` passed;
/// whether it was set.
fn spin_until(flag: &AtomicBool, bound_ns: u64) -> bool {
    let deadline = time::now_ns().saturating_add(bound_ns);
    while !flag.load(Ordering::SeqCst) {
        if time::now_ns() >= deadline {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// Sleeps until `flag` is set or `bound_ns` passed; whether it was set.
fn sleep_until(flag: &AtomicBool, bound_ns: u64) -> bool {
    let deadline = time::now_ns().saturating_add(bound_ns);
    while !flag.load(Ordering::SeqCst) {
        if time::now_ns() >= deadline {
            return false;
        }
        let _ = thread::sleep_ns(100_000);
    }
    true
}

// ---- timer::delete_sync_stops_a_self_rearming_timer -------------------------

static REARM_STARTED: AtomicBool = AtomicBool::new(false);
static REARM_DELETING: AtomicBool = AtomicBool::new(false);
static REARM_FIRED: AtomicU64 = AtomicU64::new(0);

/// Re-arms itself every jiffy, as the appliance's heartbeat does. Once the
/// deleter has begun, it lingers 10 ms so that `delete_sync` certainly
/// finds it running, then re-arms.
fn rearming_callback(_: usize) {
    REARM_FIRED.fetch_add(1, Ordering::SeqCst);
    REARM_STARTED.store(true, Ordering::SeqCst);
    if spin_until(&REARM_DELETING, 200 * MILLISECOND) {
        time::spin_for_ns(10 * MILLISECOND);
    }
    let _ = REARMING.modify_in(1);
}

static REARMING: Timer = Timer::new("test-rearming", rearming_callback, 0);

fn delete_sync_self_rearming() -> Outcome {
    REARM_STARTED.store(false, Ordering::SeqCst);
    REARM_DELETING.store(false, Ordering::SeqCst);
    // Armed from the last CPU, so its callback runs there.
    let armer = Builder::new("t-rearm-armer")
        .cpu(last_cpu())
        .spawn(|| match REARMING.modify_in(1) {
            Ok(_) => 0,
            Err(_) => -1,
        })
        .map_err(error)?;
    check_eq!(thread::join(armer, Some(SECOND)).map_err(error)?, 0);
    let deleter = Builder::new("t-rearm-deleter")
        .cpu(0)
        .spawn(|| {
            if !sleep_until(&REARM_STARTED, 5 * SECOND) {
                return 1;
            }
            REARM_DELETING.store(true, Ordering::SeqCst);
            REARMING.delete_sync();
            if REARMING.is_pending() {
                return 2;
            }
            let fired = REARM_FIRED.load(Ordering::SeqCst);
            let _ = thread::sleep_ns(30 * MILLISECOND);
            if REARM_FIRED.load(Ordering::SeqCst) != fired || REARMING.is_pending() {
                return 3;
            }
            0
        })
        .map_err(error)?;
    let outcome = thread::join(deleter, Some(10 * SECOND)).map_err(error)?;
    // Leave it stopped whatever happened.
    REARM_DELETING.store(true, Ordering::SeqCst);
    REARMING.delete_sync();
    check!(outcome != 1, "the callback never ran");
    check!(outcome != 2, "delete_sync returned with the timer armed again by its callback");
    check!(outcome != 3, "the timer kept firing after delete_sync returned");
    check_eq!(outcome, 0);
    Ok(())
}

// ---- tasklet::disable_waits_for_a_running_handler ---------------------------

static SLOW_INSIDE: AtomicBool = AtomicBool::new(false);
static SLOW_ENTERED: AtomicBool = AtomicBool::new(false);

fn slow_tasklet(_: usize) {
    SLOW_INSIDE.store(true, Ordering::SeqCst);
    SLOW_ENTERED.store(true, Ordering::SeqCst);
    time::spin_for_ns(20 * MILLISECOND);
    SLOW_INSIDE.store(false, Ordering::SeqCst);
}

static SLOW_TASKLET: Tasklet = Tasklet::new("test-slow-tasklet", slow_tasklet, 0);

fn tasklet_disable_waits() -> Outcome {
    SLOW_ENTERED.store(false, Ordering::SeqCst);
    let runs = SLOW_TASKLET.runs();
    let scheduler = Builder::new("t-tasklet-scheduler")
        .cpu(last_cpu())
        .spawn(|| {
            SLOW_TASKLET.schedule();
            0
        })
        .map_err(error)?;
    let disabler = Builder::new("t-tasklet-disabler")
        .cpu(0)
        .spawn(|| {
            if !sleep_until(&SLOW_ENTERED, 5 * SECOND) {
                return 1;
            }
            SLOW_TASKLET.disable();
            let inside = SLOW_INSIDE.load(Ordering::SeqCst) || SLOW_TASKLET.is_running();
            SLOW_TASKLET.enable();
            if inside { 2 } else { 0 }
        })
        .map_err(error)?;
    check_eq!(thread::join(scheduler, Some(SECOND)).map_err(error)?, 0);
    let outcome = thread::join(disabler, Some(10 * SECOND)).map_err(error)?;
    check!(outcome != 1, "the tasklet never ran");
    check!(outcome != 2, "disable returned while the handler was running");
    check_eq!(outcome, 0);
    check_eq!(SLOW_TASKLET.runs(), runs + 1);
    Ok(())
}

// ---- softirq::raise_on_reaches_an_idle_cpu -----------------------------------

static REMOTE_RAN_ON: AtomicU32 = AtomicU32::new(u32::MAX);
static REMOTE_RAN: AtomicBool = AtomicBool::new(false);

fn remote_handler(_: usize) {
    REMOTE_RAN_ON.store(context::cpu_index(), Ordering::SeqCst);
    REMOTE_RAN.store(true, Ordering::SeqCst);
}

fn raise_on_idle_cpu() -> Outcome {
    REMOTE_RAN.store(false, Ordering::SeqCst);
    let target = last_cpu();
    let irq = softirq::register("test-raise-on", remote_handler, 0).map_err(error)?;
    // The target CPU idles (tickless: no interrupt unless one is sent).
    let _ = thread::sleep_ns(20 * MILLISECOND);
    irq.raise_on(target);
    let ran = sleep_until(&REMOTE_RAN, SECOND);
    irq.free();
    check!(ran, "a soft IRQ raised on idle CPU {target} did not run there");
    check_eq!(REMOTE_RAN_ON.load(Ordering::SeqCst), target);
    Ok(())
}

// ---- softirq::raise_from_a_busy_thread_runs_in_ksoftirqd ---------------------

static BUSY_RAN: AtomicBool = AtomicBool::new(false);

fn busy_handler(_: usize) {
    BUSY_RAN.store(true, Ordering::SeqCst);
}

/// A kernel thread on a tickless CPU raises a soft IRQ and keeps the CPU
/// (spinning, never switching): the raise woke ksoftirqd, which gets its
/// fair share and runs it. Before, the work waited for the thread's next
/// switch or a stray interrupt.
fn raise_from_busy_thread() -> Outcome {
    BUSY_RAN.store(false, Ordering::SeqCst);
    let irq = softirq::register("test-busy-raise", busy_handler, 0).map_err(error)?;
    let busy = Builder::new("t-busy-raiser")
        .cpu(last_cpu())
        .spawn(move || {
            let _ = thread::sleep_ns(5 * MILLISECOND);
            irq.raise();
            i32::from(spin_until(&BUSY_RAN, 2 * SECOND))
        })
        .map_err(error)?;
    let ran = thread::join(busy, Some(10 * SECOND)).map_err(error)?;
    irq.free();
    check_eq!(ran, 1);
    Ok(())
}

// ---- softirq::freed_vector_never_runs ---------------------------------------

static FREED_INSIDE: AtomicBool = AtomicBool::new(false);
static FREED_ENTERED: AtomicBool = AtomicBool::new(false);

fn slow_soft_irq(_: usize) {
    FREED_INSIDE.store(true, Ordering::SeqCst);
    FREED_ENTERED.store(true, Ordering::SeqCst);
    time::spin_for_ns(20 * MILLISECOND);
    FREED_INSIDE.store(false, Ordering::SeqCst);
}

fn freed_vector_never_runs() -> Outcome {
    FREED_ENTERED.store(false, Ordering::SeqCst);
    let irq = softirq::register("test-free-running", slow_soft_irq, 0).map_err(error)?;
    irq.raise_on(last_cpu());
    if !sleep_until(&FREED_ENTERED, 5 * SECOND) {
        irq.free();
        return Err("the soft IRQ never ran".into());
    }
    irq.free();
    check!(!FREED_INSIDE.load(Ordering::SeqCst), "free returned while the handler was running");
    Ok(())
}

// ---- softirq::stale_pending_bit_never_fires_the_next_handler -----------------

static NEXT_RUNS: AtomicU64 = AtomicU64::new(0);
static RT_SPIN_STARTED: AtomicBool = AtomicBool::new(false);

fn counting_handler(_: usize) {
    NEXT_RUNS.fetch_add(1, Ordering::SeqCst);
}

fn never_runs(_: usize) {}

fn stale_pending_bit() -> Outcome {
    NEXT_RUNS.store(0, Ordering::SeqCst);
    RT_SPIN_STARTED.store(false, Ordering::SeqCst);
    let target = last_cpu();
    // An RT thread holds the target CPU: softirqs raised there stay
    // pending until it leaves.
    let holder = Builder::new("t-rt-holder")
        .cpu(target)
        .realtime(1)
        .spawn(|| {
            RT_SPIN_STARTED.store(true, Ordering::SeqCst);
            time::spin_for_ns(50 * MILLISECOND);
            0
        })
        .map_err(error)?;
    if !sleep_until(&RT_SPIN_STARTED, 5 * SECOND) {
        return Err("the RT thread never started".into());
    }
    let old = softirq::register("test-stale-old", never_runs, 0).map_err(error)?;
    old.raise_on(target);
    old.free();
    let next = softirq::register("test-stale-next", counting_handler, 0).map_err(error)?;
    let same_slot = next.index() == old.index();
    check_eq!(thread::join(holder, Some(5 * SECOND)).map_err(error)?, 0);
    let _ = thread::sleep_ns(20 * MILLISECOND);
    let runs = NEXT_RUNS.load(Ordering::SeqCst);
    next.free();
    check!(same_slot, "the next registration took another vector ({} vs {})", next.index(), old.index());
    check_eq!(runs, 0);
    Ok(())
}

// ---- softirq::stale_handle_raises_nothing_after_free ------------------------

fn stale_handle() -> Outcome {
    NEXT_RUNS.store(0, Ordering::SeqCst);
    let old = softirq::register("test-handle-old", never_runs, 0).map_err(error)?;
    old.free();
    let next = softirq::register("test-handle-next", counting_handler, 0).map_err(error)?;
    let same_slot = next.index() == old.index();
    old.raise();
    // A second free through the stale copy must not free the new one.
    old.free();
    let _ = thread::sleep_ns(2 * MILLISECOND);
    softirq::run_pending();
    let stale_runs = NEXT_RUNS.load(Ordering::SeqCst);
    next.raise();
    let _ = thread::sleep_ns(2 * MILLISECOND);
    softirq::run_pending();
    let own_runs = NEXT_RUNS.load(Ordering::SeqCst);
    next.free();
    check!(same_slot, "the next registration took another vector");
    check_eq!(stale_runs, 0);
    check_eq!(own_runs, 1);
    Ok(())
}

// ---- softirq::handlerless_fixed_vector_is_refused_and_counts_nothing --------

fn count_of(name: &str) -> u64 {
    softirq::counts().into_iter().find(|line| line.name == name).map_or(0, |line| line.per_cpu.iter().sum())
}

fn handlerless_vectors() -> Outcome {
    check_eq!(softirq::find("IRQ_POLL"), Some(Vector::IrqPoll as usize));
    for (name, vector) in
        [("NET_TX", Vector::NetTx), ("BLOCK", Vector::Block), ("IRQ_POLL", Vector::IrqPoll), ("SCHED", Vector::Sched), ("RCU", Vector::Rcu)]
    {
        let before = count_of(name);
        check_eq!(softirq::raise_named(name), Err(SoftIrqError::NoHandler(softirq::FIXED_NAMES[vector as usize])));
        softirq::raise(vector);
        let _ = thread::sleep_ns(2 * MILLISECOND);
        softirq::run_pending();
        check_eq!(count_of(name), before);
    }
    check_eq!(softirq::raise_named("no such soft irq"), Err(SoftIrqError::NoSuchName));
    let before = count_of("TASKLET");
    check_eq!(softirq::raise_named("TASKLET"), Ok(()));
    let _ = thread::sleep_ns(2 * MILLISECOND);
    softirq::run_pending();
    check!(count_of("TASKLET") > before, "a vector with a handler ran");
    Ok(())
}

// ---- irq::detach_returns_the_vector ------------------------------------------

fn no_op_line(_: u8) {}

fn detach_returns_vector() -> Outcome {
    if irq::controllers() == 0 {
        return Ok(());
    }
    let attached: Vec<u32> = irq::lines().iter().map(|line| line.0).collect();
    // A line no device uses here (GSIs 16..24 are PCI's; microvm and uhyve leave them free).
    let Some(gsi) = (16..24).find(|gsi| !attached.contains(gsi)) else { return Ok(()) };
    let before = irq::vectors_in_use();
    // More cycles than there are device vectors.
    for cycle in 0..200 {
        let vector = irq::attach_app(gsi, "test-detach", no_op_line, irq::Trigger::Edge, irq::Polarity::High)
            .map_err(|reason| alloc::format!("cycle {cycle}: {reason}"))?;
        check_eq!(irq::vectors_in_use(), before + 1);
        irq::set_masked(gsi, true);
        irq::detach_app(gsi).map_err(error)?;
        let _ = vector;
    }
    check_eq!(irq::vectors_in_use(), before);
    Ok(())
}
