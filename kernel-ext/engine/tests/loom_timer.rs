//! `del_timer_sync` against a callback that re-arms its own timer (issue 11,
//! defect 4: the appliance's heartbeat does this).
//!
//! Rule `timer::delete_sync_stops_a_self_rearming_timer`: when `delete_sync`
//! returns, the timer is neither armed nor running, and stays so. One
//! thread is the TIMER softirq running the expired timer's callback (which
//! re-arms it, under the base's lock as `mod_timer` does); the other is
//! `delete_sync`. The base is the engine's `TimerBase` behind a lock, as in
//! the kernel.
#![cfg(loom)]

use loom::sync::{Arc, Mutex};
use rtedge_engine::timerqueue::TimerId;
use rtedge_engine::timers::{self, TimerBase};

/// The TIMER softirq at jiffy 10: run every expired callback; the callback
/// re-arms its timer for jiffy 20.
fn softirq(base: &Mutex<TimerBase<()>>) {
    loop {
        let due = base.lock().unwrap().begin_expired(10);
        let Some((id, _)) = due else { break };
        // The callback: mod_timer(self, 20).
        base.lock().unwrap().modify(id, 20);
        base.lock().unwrap().finish(id);
    }
}

fn run_model(delete_sync: fn(&Mutex<TimerBase<()>>, TimerId)) {
    loom::model(move || {
        let base = Arc::new(Mutex::new(TimerBase::new()));
        let id = {
            let mut locked = base.lock().unwrap();
            let id = locked.register(());
            locked.modify(id, 10);
            id
        };
        let cpu = {
            let base = base.clone();
            loom::thread::spawn(move || softirq(&base))
        };
        delete_sync(&base, id);
        {
            let locked = base.lock().unwrap();
            let (pending, running) = (locked.is_pending(id), locked.is_running(id));
            assert!(!pending && !running, "delete_sync returned with the timer armed {pending} / running {running}");
        }
        cpu.join().unwrap();
        assert!(!base.lock().unwrap().is_pending(id), "the timer was re-armed after delete_sync returned");
    });
}

/// Today's `Timer::delete_sync` (before the fix): disarm, then wait until
/// the callback is not running. The callback re-arms in between.
#[test]
#[should_panic(expected = "delete_sync returned with the timer armed true")]
fn old_delete_sync_leaves_a_self_rearming_timer_armed() {
    run_model(|base, id| {
        base.lock().unwrap().delete(id);
        while base.lock().unwrap().is_running(id) {
            loom::thread::yield_now();
        }
    });
}

/// The fixed `delete_sync`: retry `try_delete_sync` until it disarms a
/// timer that is not running.
#[test]
fn delete_sync_stops_a_self_rearming_timer() {
    run_model(|base, id| {
        timers::delete_sync(|| base.lock().unwrap().try_delete_sync(id), loom::thread::yield_now);
    });
}
