//! Softirq pending bits, the ksoftirqd wake-up and the life of a vector
//! (issue 11, defects 5 and 14).
//!
//! - `softirq::raise_is_never_lost`: ksoftirqd going to sleep while an
//!   interrupt (whose exit leaves the work to ksoftirqd while it owns a
//!   flood) or a thread raises a vector: at the end either nothing is
//!   pending, or ksoftirqd is awake, or a wake-up is on its way.
//! - `softirq::freed_vector_never_runs`: a handler never runs after `free`
//!   returned, and a pending bit from before the free never fires the
//!   handler registered next in the same slot.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use rtedge_engine::handler::HandlerSlot;
use rtedge_engine::softirq::{self, SoftirqCpu, bit};

const VECTOR: usize = 5;

// ---- ksoftirqd wake-up ----------------------------------------------------

/// What the model's ksoftirqd ended as.
struct Daemon {
    /// It suspended itself and no wake-up was pending.
    asleep: AtomicBool,
    /// A wake-up sent to it (suspend returns at once if one is pending, as
    /// `thread::suspend_self` does); a lock stands for the scheduler's.
    wake_token: Mutex<bool>,
}

/// Today's (pre-fix) ksoftirqd and interrupt exit, over separate words.
#[test]
#[should_panic(expected = "a raised softirq is pending with ksoftirqd asleep and no wake-up")]
fn old_ksoftirqd_sleeps_over_a_raise() {
    loom::model(|| {
        let pending = Arc::new(AtomicU64::new(0));
        // ksoftirqd owns a flood (the budget ran out before).
        let deferred = Arc::new(AtomicBool::new(true));
        let asleep = Arc::new(AtomicBool::new(false));
        let daemon = {
            let (pending, deferred, asleep) = (pending.clone(), deferred.clone(), asleep.clone());
            loom::thread::spawn(move || {
                // ksoftirqd_main: nothing pending, so end the deferral and suspend.
                if pending.load(Ordering::Acquire) == 0 {
                    deferred.store(false, Ordering::Release);
                    asleep.store(true, Ordering::Release);
                } else {
                    pending.swap(0, Ordering::AcqRel);
                }
            })
        };
        // A hard IRQ on that CPU raises; its exit runs softirqs unless
        // ksoftirqd owns them.
        pending.fetch_or(bit(VECTOR), Ordering::AcqRel);
        if !deferred.load(Ordering::Acquire) {
            pending.swap(0, Ordering::AcqRel);
        }
        daemon.join().unwrap();
        let lost = pending.load(Ordering::Acquire) != 0 && asleep.load(Ordering::Acquire);
        assert!(!lost, "a raised softirq is pending with ksoftirqd asleep and no wake-up");
    });
}

/// The model's ksoftirqd: a few turns of its loop over the engine's word.
fn ksoftirqd(cpu: &SoftirqCpu, daemon: &Daemon) {
    for _ in 0..3 {
        if cpu.daemon_try_sleep() {
            // thread::suspend_self: returns at once for a pending wake-up.
            let woken = core::mem::replace(&mut *daemon.wake_token.lock().unwrap(), false);
            if !woken {
                daemon.asleep.store(true, Ordering::Release);
                return;
            }
            cpu.daemon_awake();
            continue;
        }
        let pending = cpu.pending();
        if pending & bit(VECTOR) != 0 {
            cpu.take(bit(VECTOR));
        }
    }
}

/// The fixed logic: an interrupt raise and a thread raise racing
/// ksoftirqd's sleep, starting from a flood it owns.
#[test]
fn raise_is_never_lost() {
    loom::model(|| {
        let cpu = Arc::new(SoftirqCpu::new());
        let daemon = Arc::new(Daemon { asleep: AtomicBool::new(false), wake_token: Mutex::new(false) });
        assert!(!cpu.defer(), "ksoftirqd is awake when it is handed a flood");
        let ksoftirqd_thread = {
            let (cpu, daemon) = (cpu.clone(), daemon.clone());
            loom::thread::spawn(move || ksoftirqd(&cpu, &daemon))
        };
        let thread_raise = {
            let (cpu, daemon) = (cpu.clone(), daemon.clone());
            loom::thread::spawn(move || {
                // A raise from thread context wakes a sleeping ksoftirqd.
                if cpu.raise(bit(VECTOR + 1), true) {
                    *daemon.wake_token.lock().unwrap() = true;
                }
            })
        };
        // A hard IRQ raises; its exit runs softirqs unless ksoftirqd owns them.
        cpu.raise(bit(VECTOR), false);
        if !cpu.is_deferred() {
            cpu.take(bit(VECTOR));
        }
        ksoftirqd_thread.join().unwrap();
        thread_raise.join().unwrap();
        let asleep = daemon.asleep.load(Ordering::Acquire);
        let woken = *daemon.wake_token.lock().unwrap();
        let pending = cpu.pending();
        assert!(
            pending == 0 || !asleep || woken,
            "a raised softirq is pending ({pending:#x}) with ksoftirqd asleep and no wake-up (sleeping bit {})",
            cpu.daemon_sleeping()
        );
    });
}

// ---- freeing a vector ------------------------------------------------------

/// Today's (pre-fix) `SoftIrq::free` (clear the handler) against a CPU
/// processing the raised vector: the handler runs after free returned.
#[test]
#[should_panic(expected = "the handler runs after free returned")]
fn old_free_races_a_running_handler() {
    loom::model(|| {
        let pending = Arc::new(AtomicU64::new(bit(VECTOR)));
        let handler = Arc::new(AtomicUsize::new(1));
        let freed = Arc::new(AtomicBool::new(false));
        let processing = {
            let (pending, handler, freed) = (pending.clone(), handler.clone(), freed.clone());
            loom::thread::spawn(move || {
                if pending.swap(0, Ordering::AcqRel) & bit(VECTOR) != 0 && handler.load(Ordering::Acquire) != 0 {
                    assert!(!freed.load(Ordering::Acquire), "the handler runs after free returned");
                }
            })
        };
        handler.store(0, Ordering::Release);
        freed.store(true, Ordering::Release);
        processing.join().unwrap();
    });
}

/// Today's (pre-fix) free then register of another handler in the same
/// slot, against a CPU that had taken the old pending bit.
#[test]
#[should_panic(expected = "a stale pending bit fired the new handler")]
fn old_stale_pending_bit_fires_the_next_handler() {
    loom::model(|| {
        let pending = Arc::new(AtomicU64::new(bit(VECTOR)));
        // 1: the old handler, 2: the new one.
        let handler = Arc::new(AtomicUsize::new(1));
        let processing = {
            let (pending, handler) = (pending.clone(), handler.clone());
            loom::thread::spawn(move || {
                if pending.swap(0, Ordering::AcqRel) & bit(VECTOR) != 0 {
                    assert_ne!(handler.load(Ordering::Acquire), 2, "a stale pending bit fired the new handler");
                }
            })
        };
        handler.store(0, Ordering::Release); // free
        handler.store(2, Ordering::Release); // register: nobody raised it
        processing.join().unwrap();
    });
}

/// The fixed logic: a CPU dispatching the raised vector, the owner freeing
/// it and registering a new handler in the same slot, and a raise through
/// a handle kept from before the free.
#[test]
fn freed_vector_never_runs() {
    // Three threads and a wait loop: bound the preemptions to keep the
    // model within seconds (every interleaving with up to 2 preemptions).
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let cpu = Arc::new(SoftirqCpu::new());
        // The slot holds the registration's handler: 1 the old, 2 the new.
        let slot: Arc<HandlerSlot<usize>> = Arc::new(HandlerSlot::new());
        let freed = Arc::new(AtomicBool::new(false));
        let new_runs = Arc::new(AtomicUsize::new(0));
        let old = slot.install(1).unwrap();
        assert_eq!(softirq::raise(&cpu, &slot, VECTOR, Some(old), false), Some(false));
        let processing = {
            let (cpu, slot, freed, new_runs) = (cpu.clone(), slot.clone(), freed.clone(), new_runs.clone());
            loom::thread::spawn(move || {
                softirq::dispatch(&cpu, &slot, VECTOR, |handler| match handler {
                    1 => assert!(!freed.load(Ordering::Acquire), "the handler runs after free returned"),
                    _ => {
                        new_runs.fetch_add(1, Ordering::AcqRel);
                    }
                });
            })
        };
        let stale_raise = {
            let (cpu, slot) = (cpu.clone(), slot.clone());
            loom::thread::spawn(move || softirq::raise(&cpu, &slot, VECTOR, Some(old), false))
        };
        assert!(softirq::close(&slot, VECTOR, old, [&*cpu], loom::thread::yield_now));
        freed.store(true, Ordering::Release);
        let new = slot.install(2).unwrap();
        assert_ne!(new, old);
        processing.join().unwrap();
        let _ = stale_raise.join().unwrap();
        // Whatever is pending now can only be a raise of the new handler,
        // and nobody raised it.
        softirq::dispatch(&cpu, &slot, VECTOR, |_| {
            new_runs.fetch_add(1, Ordering::AcqRel);
        });
        assert_eq!(new_runs.load(Ordering::Acquire), 0, "a stale pending bit fired the new handler");
    });
}
