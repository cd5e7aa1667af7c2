//! Tests that need several CPUs (run only when more than one is online):
//! every CPU up, pinning, cross-CPU wake-ups by IPI, per-CPU counters,
//! isolation.

use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::ktest::{Outcome, Test};
use crate::thread::Semaphore;
use crate::thread::{self, Builder, State, WaitQueue};
use crate::{check, check_eq, clockevent, cpu_local, smp, time};

pub const TESTS: &[Test] = &[
    Test { name: "smp::every_offered_cpu_is_online", run: all_online },
    Test { name: "smp::pinned_rt_thread_never_leaves_its_cpu", run: pinned_rt },
    Test { name: "smp::cross_cpu_wakeup_arrives_by_ipi", run: cross_cpu_wake },
    Test { name: "smp::per_cpu_counters_add_up", run: counters_add_up },
    Test { name: "smp::isolated_cpu_gets_no_unpinned_kernel_thread", run: isolation },
    Test { name: "smp::polling_cpu_releases_its_rt_thread_without_timer_interrupts", run: polling_release },
    Test { name: "smp::on_a_polling_cpu_a_more_urgent_rt_thread_still_preempts", run: polling_preempt },
    Test { name: "smp::a_sleep_ends_when_polling_is_switched_off_while_it_goes_to_sleep", run: polling_off_mid_sleep },
    Test { name: "smp::a_tasklet_never_runs_on_two_cpus_at_once", run: tasklet_exclusive },
    Test { name: "smp::different_tasklets_run_on_cpus_in_parallel", run: tasklets_parallel },
    Test { name: "smp::timer_delete_sync_waits_for_a_running_callback", run: timer_delete_sync },
    Test { name: "smp::hrtimer_cancel_waits_for_a_running_callback", run: hrtimer_cancel_running },
];

/// Tests that need three CPUs or more.
pub const THREE_CPU_TESTS: &[Test] =
    &[Test { name: "smp::thread_woken_while_being_switched_out_is_queued_once", run: wake_during_switch_out }];

use crate::tasklet::Tasklet;
use crate::timer::{HrTimer, Mode, Restart, Timer};

static CONCURRENT: AtomicU32 = AtomicU32::new(0);
static MAX_CONCURRENT: AtomicU32 = AtomicU32::new(0);

fn exclusive_handler(_: usize) {
    let now = CONCURRENT.fetch_add(1, Ordering::SeqCst) + 1;
    MAX_CONCURRENT.fetch_max(now, Ordering::SeqCst);
    crate::time::spin_for_ns(300_000);
    CONCURRENT.fetch_sub(1, Ordering::SeqCst);
}

static EXCLUSIVE: Tasklet = Tasklet::new("test-exclusive", exclusive_handler, 0);

fn tasklet_exclusive() -> Outcome {
    CONCURRENT.store(0, Ordering::SeqCst);
    MAX_CONCURRENT.store(0, Ordering::SeqCst);
    let runs = EXCLUSIVE.runs();
    // Two threads on two CPUs keep scheduling the same tasklet.
    let mut ids = Vec::new();
    for cpu in [0, last_cpu()] {
        ids.push(
            Builder::new("t-scheduler")
                .cpu(cpu)
                .spawn(|| {
                    for _ in 0..40 {
                        EXCLUSIVE.schedule();
                        let _ = thread::sleep_ns(100_000);
                    }
                    0
                })
                .map_err(error)?,
        );
    }
    for id in ids {
        thread::join(id, Some(10 * SECOND)).map_err(error)?;
    }
    EXCLUSIVE.kill();
    check!(EXCLUSIVE.runs() - runs >= 2, "the tasklet hardly ran: {}", EXCLUSIVE.runs() - runs);
    check_eq!(MAX_CONCURRENT.load(Ordering::SeqCst), 1);
    Ok(())
}

static PARTNER_RUNNING: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];
static SAW_PARTNER: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

fn parallel_handler(which: usize) {
    PARTNER_RUNNING[which].store(true, Ordering::SeqCst);
    // Generous bound: under instruction emulation on a loaded host the
    // partner's vCPU may not run for seconds.
    let deadline = crate::time::now_ns() + 20 * SECOND;
    while crate::time::now_ns() < deadline {
        if PARTNER_RUNNING[1 - which].load(Ordering::SeqCst) {
            SAW_PARTNER[which].store(true, Ordering::SeqCst);
            break;
        }
        rtedge_arch::cpu::pause();
    }
    // Keep running until the partner has seen this one too: a fixed overlap
    // is missed whenever the partner's vCPU stalls for longer.
    while SAW_PARTNER[which].load(Ordering::SeqCst) && !SAW_PARTNER[1 - which].load(Ordering::SeqCst) && crate::time::now_ns() < deadline {
        rtedge_arch::cpu::pause();
    }
    PARTNER_RUNNING[which].store(false, Ordering::SeqCst);
}

static PARALLEL: [Tasklet; 2] =
    [Tasklet::new("test-parallel-0", parallel_handler, 0), Tasklet::new("test-parallel-1", parallel_handler, 1)];

fn tasklets_parallel() -> Outcome {
    static ARRIVED: AtomicU32 = AtomicU32::new(0);
    ARRIVED.store(0, Ordering::SeqCst);
    for which in 0..2 {
        PARTNER_RUNNING[which].store(false, Ordering::SeqCst);
        SAW_PARTNER[which].store(false, Ordering::SeqCst);
    }
    // Two threads on two CPUs meet at a barrier, then each schedules its
    // own tasklet, which runs on that CPU when the thread ends.
    let mut ids = Vec::new();
    for (which, cpu) in [(0usize, 0u32), (1, last_cpu())] {
        ids.push(
            Builder::new("t-parallel")
                .cpu(cpu)
                .create(move || {
                    ARRIVED.fetch_add(1, Ordering::SeqCst);
                    let deadline = crate::time::now_ns() + 5 * SECOND;
                    while ARRIVED.load(Ordering::SeqCst) < 2 && crate::time::now_ns() < deadline {
                        rtedge_arch::cpu::pause();
                    }
                    PARALLEL[which].schedule();
                    0
                })
                .map_err(error)?,
        );
    }
    for &id in &ids {
        thread::start(id).map_err(error)?;
    }
    for id in ids {
        thread::join(id, Some(5 * SECOND)).map_err(error)?;
    }
    for tasklet in &PARALLEL {
        tasklet.kill();
    }
    check!(SAW_PARTNER[0].load(Ordering::SeqCst) && SAW_PARTNER[1].load(Ordering::SeqCst), "the two tasklets never overlapped");
    Ok(())
}

static CALLBACK_STARTED: AtomicBool = AtomicBool::new(false);
static CALLBACK_FINISHED: AtomicBool = AtomicBool::new(false);

fn slow_timer_callback(_: usize) {
    CALLBACK_STARTED.store(true, Ordering::SeqCst);
    crate::time::spin_for_ns(20 * MILLISECOND);
    CALLBACK_FINISHED.store(true, Ordering::SeqCst);
}

static SLOW_TIMER: Timer = Timer::new("test-slow", slow_timer_callback, 0);

fn timer_delete_sync() -> Outcome {
    CALLBACK_STARTED.store(false, Ordering::SeqCst);
    CALLBACK_FINISHED.store(false, Ordering::SeqCst);
    // Armed from the last CPU, so its callback runs there.
    let armer = Builder::new("t-armer")
        .cpu(last_cpu())
        .spawn(|| match SLOW_TIMER.modify_in(1) {
            Ok(_) => 0,
            Err(_) => -1,
        })
        .map_err(error)?;
    check_eq!(thread::join(armer, Some(SECOND)).map_err(error)?, 0);
    let deleter = Builder::new("t-deleter")
        .cpu(0)
        .spawn(|| {
            while !CALLBACK_STARTED.load(Ordering::SeqCst) {
                let _ = thread::sleep_ns(100_000);
            }
            SLOW_TIMER.delete_sync();
            // On return the callback is not running anywhere.
            i32::from(CALLBACK_FINISHED.load(Ordering::SeqCst))
        })
        .map_err(error)?;
    check_eq!(thread::join(deleter, Some(5 * SECOND)).map_err(error)?, 1);
    Ok(())
}

fn slow_hr_callback(_: &HrTimer) -> Restart {
    CALLBACK_STARTED.store(true, Ordering::SeqCst);
    crate::time::spin_for_ns(20 * MILLISECOND);
    CALLBACK_FINISHED.store(true, Ordering::SeqCst);
    Restart::NoRestart
}

static SLOW_HR: HrTimer = HrTimer::new("test-slow-hr", slow_hr_callback, 0);

fn hrtimer_cancel_running() -> Outcome {
    CALLBACK_STARTED.store(false, Ordering::SeqCst);
    CALLBACK_FINISHED.store(false, Ordering::SeqCst);
    let armer = Builder::new("t-hr-armer")
        .cpu(last_cpu())
        .spawn(|| match SLOW_HR.start(MILLISECOND, Mode::Relative) {
            Ok(_) => 0,
            Err(_) => -1,
        })
        .map_err(error)?;
    check_eq!(thread::join(armer, Some(SECOND)).map_err(error)?, 0);
    let canceller = Builder::new("t-hr-cancel")
        .cpu(0)
        .spawn(|| {
            while !CALLBACK_STARTED.load(Ordering::SeqCst) {
                let _ = thread::sleep_ns(100_000);
            }
            SLOW_HR.cancel();
            i32::from(CALLBACK_FINISHED.load(Ordering::SeqCst))
        })
        .map_err(error)?;
    check_eq!(thread::join(canceller, Some(5 * SECOND)).map_err(error)?, 1);
    Ok(())
}

use super::{MILLISECOND, SECOND, error};

fn last_cpu() -> u32 {
    63 - thread::online_mask().leading_zeros()
}

fn all_online() -> Outcome {
    let report = smp::last_report();
    check_eq!(report.failed, 0);
    check_eq!(report.online, report.offered);
    check_eq!(thread::online_mask().count_ones(), report.online);
    let mut apic_ids = Vec::new();
    for index in 0..report.online as usize {
        let local = cpu_local::get(index).ok_or_else(|| format!("cpu {index} has no per-CPU data"))?;
        check_eq!(local.index() as usize, index);
        apic_ids.push(local.apic_id());
        check!(thread::current_on_address(index as u32) != 0, "cpu {index} runs no thread");
    }
    apic_ids.sort_unstable();
    apic_ids.dedup();
    check_eq!(apic_ids.len(), report.online as usize);
    Ok(())
}

fn pinned_rt() -> Outcome {
    static WRONG: AtomicU32 = AtomicU32::new(0);
    static RUNS: AtomicU32 = AtomicU32::new(0);
    WRONG.store(0, Ordering::SeqCst);
    RUNS.store(0, Ordering::SeqCst);
    let target = last_cpu();
    let id = Builder::new("t-pinned-rt")
        .realtime(30)
        .cpu(target)
        .spawn(move || {
            if thread::make_periodic(crate::time::now_ns() + MILLISECOND, MILLISECOND).is_err() {
                return -1;
            }
            for _ in 0..200 {
                if thread::wait_next_period().is_err() {
                    return -2;
                }
                // Checked by the thread itself every period.
                if thread::current_cpu() != target {
                    WRONG.fetch_add(1, Ordering::SeqCst);
                }
                RUNS.fetch_add(1, Ordering::SeqCst);
            }
            0
        })
        .map_err(error)?;
    check_eq!(thread::get(id).map(|t| t.affinity()), Some(1u64 << target));
    check_eq!(thread::join(id, Some(10 * SECOND)).map_err(error)?, 0);
    check_eq!(RUNS.load(Ordering::SeqCst), 200);
    check_eq!(WRONG.load(Ordering::SeqCst), 0);
    Ok(())
}

/// `rt_idle=poll` switched on for the isolated CPU: a 1 ms RT thread there
/// is released by the idle loop's look at the clock, so its CPU takes (far)
/// fewer timer interrupts than it has releases (halting, it takes one per
/// release); switched off again, sleeps there still end (the timer is
/// armed again).
fn polling_release() -> Outcome {
    const PERIODS: u32 = 300;
    let isolated = thread::isolated_mask();
    check!(isolated != 0, "run this image with isolcpus= (the SMP profiles set it)");
    let target = isolated.trailing_zeros();
    let before_mask = thread::polling_mask();
    thread::set_polling(before_mask | 1 << target);
    let timer_interrupts = || crate::trap::interrupt_count(target as usize, crate::vectors::TIMER);
    let interrupts_before = timer_interrupts();
    let periodic = Builder::new("t-poll-rt")
        .realtime(30)
        .cpu(target)
        .spawn(|| {
            if thread::make_periodic(time::now_ns() + MILLISECOND, MILLISECOND).is_err() {
                return -1;
            }
            for _ in 0..PERIODS {
                if thread::wait_next_period().is_err() {
                    return -2;
                }
            }
            0
        })
        .map_err(error);
    let result = periodic.and_then(|id| thread::join(id, Some(30 * SECOND)).map_err(error));
    let interrupts = timer_interrupts() - interrupts_before;
    thread::set_polling(before_mask);
    check_eq!(result?, 0);
    check!(
        interrupts < u64::from(PERIODS) / 4,
        "{interrupts} timer interrupts on cpu {target} for {PERIODS} releases: the timer, not the poll, released the thread"
    );
    // Halting again: its timer must be armed for the sleeps there.
    let sleeper = Builder::new("t-poll-off")
        .cpu(target)
        .spawn(|| {
            for _ in 0..5 {
                if thread::sleep_ns(2 * MILLISECOND).is_err() {
                    return -1;
                }
            }
            0
        })
        .map_err(error)?;
    check_eq!(thread::join(sleeper, Some(10 * SECOND)).map_err(error)?, 0);
    Ok(())
}

/// `rt_idle=poll` on the isolated CPU: its timer is armed only for alarms
/// that preempt the running thread, so a more urgent RT thread's sleep
/// must still end while a less urgent one spins there (both pinned):
/// the urgent one runs before the spinner finishes.
fn polling_preempt() -> Outcome {
    static URGENT_RAN_AT: AtomicU64 = AtomicU64::new(0);
    static SPIN_ENDED_AT: AtomicU64 = AtomicU64::new(0);
    URGENT_RAN_AT.store(0, Ordering::SeqCst);
    SPIN_ENDED_AT.store(0, Ordering::SeqCst);
    let isolated = thread::isolated_mask();
    check!(isolated != 0, "run this image with isolcpus= (the SMP profiles set it)");
    let target = isolated.trailing_zeros();
    let before_mask = thread::polling_mask();
    thread::set_polling(before_mask | 1 << target);
    let outcome = (|| -> Outcome {
        let spinner = Builder::new("t-poll-low")
            .realtime(20)
            .cpu(target)
            .spawn(|| {
                // Long enough for the urgent thread's 2 ms sleep to end inside it.
                time::spin_for_ns(30 * MILLISECOND);
                SPIN_ENDED_AT.store(time::now_ns(), Ordering::SeqCst);
                0
            })
            .map_err(error)?;
        let urgent = Builder::new("t-poll-high")
            .realtime(40)
            .cpu(target)
            .spawn(|| {
                let _ = thread::sleep_ns(2 * MILLISECOND);
                URGENT_RAN_AT.store(time::now_ns(), Ordering::SeqCst);
                0
            })
            .map_err(error)?;
        check_eq!(thread::join(urgent, Some(10 * SECOND)).map_err(error)?, 0);
        check_eq!(thread::join(spinner, Some(10 * SECOND)).map_err(error)?, 0);
        Ok(())
    })();
    thread::set_polling(before_mask);
    outcome?;
    let (urgent, spin_end) = (URGENT_RAN_AT.load(Ordering::SeqCst), SPIN_ENDED_AT.load(Ordering::SeqCst));
    check!(urgent != 0 && urgent < spin_end, "the urgent thread ran at {urgent} ns, after the spinner ended at {spin_end} ns");
    Ok(())
}

/// The window between a thread queueing its sleep's alarm and switching
/// away, widened: polling is switched on for the isolated CPU just before
/// a thread there goes to sleep (its CPU's timer not yet in the polling
/// mode), and off again inside that window, as another CPU may do. The
/// sleep must still end: the alarm has to reach the timer. (On the code
/// that chose the deferred arm by the mask it ended too, rescued by the
/// time-slice alarm's cancel, which reprograms at every switch; the arm is
/// now deferred only when the CPU's timer is already in polling mode.)
fn polling_off_mid_sleep() -> Outcome {
    static TARGET: AtomicU32 = AtomicU32::new(0);
    static GO: AtomicBool = AtomicBool::new(false);
    static SLEPT: AtomicU32 = AtomicU32::new(0);
    fn switch_polling_off() {
        let bit = 1u64 << TARGET.load(Ordering::SeqCst);
        thread::set_polling(thread::polling_mask() & !bit);
    }
    GO.store(false, Ordering::SeqCst);
    SLEPT.store(0, Ordering::SeqCst);
    let isolated = thread::isolated_mask();
    check!(isolated != 0, "run this image with isolcpus= (the SMP profiles set it)");
    let target = isolated.trailing_zeros();
    TARGET.store(target, Ordering::SeqCst);
    let before_mask = thread::polling_mask();
    thread::set_polling(before_mask & !(1 << target));
    let sleeper = Builder::new("t-poll-flip")
        .cpu(target)
        .spawn(|| {
            // Switched in while nothing polls; spins (no switch) until told.
            while !GO.load(Ordering::SeqCst) {
                core::hint::spin_loop();
            }
            if thread::sleep_ns(2 * MILLISECOND).is_err() {
                return -1;
            }
            SLEPT.store(1, Ordering::SeqCst);
            0
        })
        .map_err(error)?;
    thread::widen_sleep_window(Some(switch_polling_off));
    thread::set_polling(before_mask | 1 << target);
    GO.store(true, Ordering::SeqCst);
    let joined = thread::join(sleeper, Some(3 * SECOND));
    thread::widen_sleep_window(None);
    thread::set_polling(before_mask);
    if joined.is_err() {
        // Unstick it: any alarm change there programs its timer.
        let _ = thread::sleep_ns(MILLISECOND);
        return Err(format!("a sleep on cpu {target} did not end in 3 s after polling was switched off while it went to sleep"));
    }
    check_eq!(joined.map_err(error)?, 0);
    check_eq!(SLEPT.load(Ordering::SeqCst), 1);
    Ok(())
}

static CROSS: Semaphore = Semaphore::new(0);

fn cross_cpu_wake() -> Outcome {
    static WOKE_ON: AtomicU32 = AtomicU32::new(u32::MAX);
    WOKE_ON.store(u32::MAX, Ordering::SeqCst);
    while CROSS.try_down() {}
    let target = last_cpu();
    cpu_local::get(target as usize).ok_or("no target cpu")?;
    let sleeper = Builder::new("t-remote-sleeper")
        .cpu(target)
        .spawn(|| {
            if CROSS.down().is_err() {
                return -1;
            }
            WOKE_ON.store(thread::current_cpu(), Ordering::SeqCst);
            0
        })
        .map_err(error)?;
    // Wait until it sleeps and its CPU has switched to idle: a wake-up that
    // lands while the sleeper is still on its way out (Blocked, not yet
    // switched away) is queued back on its own CPU with no IPI needed.
    super::threads::wait_for_state(sleeper, State::Blocked)?;
    let sleeper_address = thread::get(sleeper).map_or(0, |t| t as *const thread::Thread as usize);
    let give_up = time::now_ns() + 20 * SECOND;
    while thread::current_on_address(target) == sleeper_address || thread::running_class_on(target) != Some(thread::RunningClass::Idle) {
        if time::now_ns() >= give_up {
            return Err(format!("cpu {target} never went idle after its thread blocked"));
        }
        thread::yield_cpu();
    }
    let ipis_before = crate::trap::interrupt_count(target as usize, crate::vectors::RESCHEDULE);
    // The waker runs on CPU 0.
    let waker = Builder::new("t-waker-cpu0")
        .cpu(0)
        .spawn(|| {
            CROSS.up();
            0
        })
        .map_err(error)?;
    thread::join(waker, Some(SECOND)).map_err(error)?;
    check_eq!(thread::join(sleeper, Some(SECOND)).map_err(error)?, 0);
    check_eq!(WOKE_ON.load(Ordering::SeqCst), target);
    let ipis_after = crate::trap::interrupt_count(target as usize, crate::vectors::RESCHEDULE);
    check!(ipis_after > ipis_before, "no reschedule IPI reached cpu {target}");
    Ok(())
}

fn counters_add_up() -> Outcome {
    // Quiesce a little, then compare per-CPU sums with the global figures.
    let online = thread::online_mask().count_ones() as usize;
    let switches_total = thread::cpu_switches();
    let per_cpu: u64 = (0..online as u32).map(thread::cpu_switches_on).sum();
    let switches_after = thread::cpu_switches();
    check!(
        switches_total <= per_cpu && per_cpu <= switches_after,
        "per-CPU switches {per_cpu} outside global [{switches_total}, {switches_after}]"
    );
    let irqs = crate::trap::interrupt_lines();
    for line in &irqs {
        let sum: u64 = line.per_cpu.iter().sum();
        check_eq!(sum, line.total);
    }
    let softirqs = crate::softirq::counts();
    check!(softirqs.iter().all(|line| line.per_cpu.len() == online), "softirq lines must have one count per CPU");
    let timer = irqs.iter().find(|line| line.vector == crate::vectors::TIMER).ok_or("no timer line")?;
    check!(timer.per_cpu.iter().filter(|&&count| count > 0).count() >= 1);
    Ok(())
}

fn isolation() -> Outcome {
    let isolated = thread::isolated_mask();
    check!(isolated != 0, "run this image with isolcpus= (the SMP profiles set it)");
    static SEEN: AtomicU64 = AtomicU64::new(0);
    SEEN.store(0, Ordering::SeqCst);
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(
            Builder::new("t-free")
                .spawn(|| {
                    for _ in 0..20 {
                        SEEN.fetch_or(1 << thread::current_cpu(), Ordering::SeqCst);
                        let _ = thread::sleep_ns(MILLISECOND);
                        SEEN.fetch_or(1 << thread::current_cpu(), Ordering::SeqCst);
                    }
                    0
                })
                .map_err(error)?,
        );
    }
    for id in ids {
        thread::join(id, Some(10 * SECOND)).map_err(error)?;
    }
    let seen = SEEN.load(Ordering::SeqCst);
    check_eq!(seen & isolated, 0);
    // An RT thread with no CPU given goes to the isolated CPU.
    let rt = Builder::new("t-rt-default").realtime(5).spawn(|| thread::current_cpu() as i32).map_err(error)?;
    let cpu = thread::join(rt, Some(SECOND)).map_err(error)?;
    check!(isolated & (1 << cpu) != 0, "default RT cpu {cpu} is not isolated ({isolated:#x})");
    Ok(())
}

static SWITCH_OUT_QUEUE: WaitQueue = WaitQueue::new();
static SWITCH_OUT_WOKEN: AtomicBool = AtomicBool::new(false);
static SWITCH_OUT_GO: AtomicBool = AtomicBool::new(false);
/// The sleeper's CPU when it went to sleep and when it woke, and the CPU
/// its control block names then (u32::MAX: not yet).
static SWITCH_OUT_SLEPT_ON: AtomicU32 = AtomicU32::new(u32::MAX);
static SWITCH_OUT_RESUMED_ON: AtomicU32 = AtomicU32::new(u32::MAX);
static SWITCH_OUT_RECORDED_CPU: AtomicU32 = AtomicU32::new(u32::MAX);
/// The waking alarm's progress: 0 not run, 1 started, 2 finished.
static SWITCH_OUT_ALARM: AtomicU32 = AtomicU32::new(0);

/// Runs in hard-IRQ context on the idle CPU: wakes the sleeper.
fn switch_out_wake(_: clockevent::AlarmId, _: u64) {
    SWITCH_OUT_ALARM.store(1, Ordering::SeqCst);
    SWITCH_OUT_WOKEN.store(true, Ordering::SeqCst);
    SWITCH_OUT_QUEUE.wake_one();
    SWITCH_OUT_ALARM.store(2, Ordering::SeqCst);
}

/// A kernel thread allowed on two CPUs blocks on a wait queue and is woken,
/// from an interrupt on the other (idle) CPU, while its own CPU is held
/// between its state change and its switch (a third CPU holds that CPU's
/// run-queue lock, which the switch needs). It must be queued back on its
/// own CPU only: queued on the idle one, that CPU marks it Running and
/// waits for its registers while its own CPU, seeing Running, queues it a
/// second time (it then ran on two CPUs in turn from two queue entries:
/// the 4-CPU appliance hang and its 'exited thread resumed' panics, which
/// may also end this test).
fn wake_during_switch_out() -> Outcome {
    SWITCH_OUT_WOKEN.store(false, Ordering::SeqCst);
    SWITCH_OUT_GO.store(false, Ordering::SeqCst);
    SWITCH_OUT_SLEPT_ON.store(u32::MAX, Ordering::SeqCst);
    SWITCH_OUT_RESUMED_ON.store(u32::MAX, Ordering::SeqCst);
    SWITCH_OUT_RECORDED_CPU.store(u32::MAX, Ordering::SeqCst);
    SWITCH_OUT_ALARM.store(0, Ordering::SeqCst);
    // The holder on CPU 0; the sleeper on CPU 1 or the last CPU (isolated
    // in the SMP profiles, so nothing else runs there), the other stays idle.
    let pair = (1u64 << 1) | (1u64 << last_cpu());
    let sleeper = Builder::new("t-switch-sleeper")
        .affinity(pair)
        .spawn(|| {
            SWITCH_OUT_SLEPT_ON.store(thread::current_cpu(), Ordering::SeqCst);
            while !SWITCH_OUT_GO.load(Ordering::SeqCst) {
                core::hint::spin_loop();
            }
            let deadline = time::now_ns() + 10 * SECOND;
            if SWITCH_OUT_QUEUE.wait_until(Some(deadline), || SWITCH_OUT_WOKEN.load(Ordering::SeqCst)).is_err() {
                return -1;
            }
            SWITCH_OUT_RESUMED_ON.store(thread::current_cpu(), Ordering::SeqCst);
            SWITCH_OUT_RECORDED_CPU.store(thread::current().cpu(), Ordering::SeqCst);
            0
        })
        .map_err(error)?;
    for _ in 0..100_000 {
        if SWITCH_OUT_SLEPT_ON.load(Ordering::SeqCst) != u32::MAX {
            break;
        }
        let _ = thread::sleep_ns(100_000);
    }
    let own = SWITCH_OUT_SLEPT_ON.load(Ordering::SeqCst);
    check!(own != u32::MAX, "the sleeper never started");
    let other = (pair & !(1u64 << own)).trailing_zeros();
    let alarm = clockevent::register_on(other, switch_out_wake, 0);
    let holder = Builder::new("t-switch-holder")
        .cpu(0)
        .spawn(move || {
            let sleeper = thread::get(sleeper);
            let (Some(sleeper), Some(_), Some(_)) = (sleeper, cpu_local::get(own as usize), cpu_local::get(other as usize)) else {
                return -1;
            };
            // 1: tested; 2: the other CPU was busy at the wake-up (nothing
            // tested); 3: the sleeper never blocked.
            let mut verdict = 3;
            // Bounded waits (bounds, not measurements).
            let spin_until = |done: &dyn Fn() -> bool, bound_ns: u64| {
                let end = time::now_ns() + bound_ns;
                while !done() && time::now_ns() < end {
                    core::hint::spin_loop();
                }
            };
            let idle = || thread::running_class_on(other) == Some(thread::RunningClass::Idle) && thread::queued_on(other) == 0;
            // The test's own thread may still be leaving the other CPU.
            for _ in 0..1000 {
                if idle() {
                    break;
                }
                let _ = thread::sleep_ns(MILLISECOND);
            }
            // Interrupts are off on this CPU while the queue lock is held.
            let _ = thread::with_queue_locked(own, || {
                SWITCH_OUT_GO.store(true, Ordering::SeqCst);
                spin_until(&|| sleeper.state() == State::Blocked, 5 * SECOND);
                if sleeper.state() == State::Blocked {
                    // It is now between its state change and its switch.
                    verdict = if idle() { 1 } else { 2 };
                    clockevent::arm(alarm, time::now_ns());
                    spin_until(&|| SWITCH_OUT_ALARM.load(Ordering::SeqCst) != 0, 5 * SECOND);
                    // Give the idle CPU time to pick it (which it must not).
                    spin_until(&|| sleeper.state() == State::Running, 50 * MILLISECOND);
                }
            });
            verdict
        })
        .map_err(error)?;
    let held = thread::join(holder, Some(30 * SECOND));
    let slept = thread::join(sleeper, Some(30 * SECOND));
    clockevent::unregister(alarm);
    let verdict = held.map_err(error)?;
    check!(verdict != 2, "cpu {other} was busy when the sleeper was woken: nothing tested");
    check_eq!(verdict, 1);
    check_eq!(slept.map_err(error)?, 0);
    check_eq!(SWITCH_OUT_ALARM.load(Ordering::SeqCst), 2);
    // Resumed where it slept, and no other CPU took it meanwhile (one that
    // did would have written its own index there, and would resume it
    // again from its second queue entry).
    check_eq!(SWITCH_OUT_RESUMED_ON.load(Ordering::SeqCst), own);
    check_eq!(SWITCH_OUT_RECORDED_CPU.load(Ordering::SeqCst), own);
    Ok(())
}
