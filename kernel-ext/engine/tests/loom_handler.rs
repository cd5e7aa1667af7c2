//! Typed handler slots (issue 14, item 4): a handler removed while a CPU is
//! about to call it, and a handler installed while a CPU looks at the slot.
//!
//! - `handler::removed_handler_never_runs`: once `remove` returns, the old
//!   handler runs in no caller and none starts it, even when a new handler
//!   is installed in the same slot at once (an application's interrupt
//!   handler detached and the kernel's put back, `irq::detach_app`).
//! - `handler::a_call_sees_a_whole_handler`: a caller racing an install
//!   sees no handler or the whole new one; loom's `UnsafeCell` fails the
//!   model on any read that overlaps the install's write.
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use rtedge_engine::handler::HandlerSlot;

/// Today's (pre-fix) interrupt table, `trap.rs`: the handler is a word
/// (0 = none) that `unregister` clears while a CPU may have loaded it
/// already; `unregister` returns at once, and the old handler still runs.
#[test]
#[should_panic(expected = "the old handler runs after unregister returned")]
fn old_unregister_returns_while_the_handler_runs() {
    loom::model(|| {
        let handler = Arc::new(AtomicUsize::new(1));
        let unregistered = Arc::new(AtomicBool::new(false));
        let interrupt = {
            let (handler, unregistered) = (handler.clone(), unregistered.clone());
            loom::thread::spawn(move || {
                // trap::handle: load the word, call what it names.
                if handler.load(Ordering::Acquire) == 1 {
                    assert!(!unregistered.load(Ordering::Acquire), "the old handler runs after unregister returned");
                }
            })
        };
        // trap::unregister, then the caller goes on (a module unloads).
        handler.store(0, Ordering::Release);
        unregistered.store(true, Ordering::Release);
        interrupt.join().unwrap();
    });
}

/// The slot: a CPU calls the live handler while its owner removes it and
/// installs another (the kernel's own handler coming back).
#[test]
fn removed_handler_never_runs() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let slot: Arc<HandlerSlot<usize>> = Arc::new(HandlerSlot::new());
        let removed = Arc::new(AtomicBool::new(false));
        let old = slot.install(1).unwrap();
        let interrupt = {
            let (slot, removed) = (slot.clone(), removed.clone());
            loom::thread::spawn(move || {
                let mut seen = 0;
                slot.call(|handler| {
                    if handler == 1 {
                        assert!(!removed.load(Ordering::Acquire), "the old handler runs after remove returned");
                    }
                    seen = handler;
                });
                seen
            })
        };
        assert!(slot.remove(Some(old), loom::thread::yield_now));
        removed.store(true, Ordering::Release);
        let new = slot.install(2).unwrap();
        assert_ne!(new, old);
        let seen = interrupt.join().unwrap();
        assert!(seen == 0 || seen == 1 || seen == 2, "a caller saw {seen}");
        assert_eq!(slot.callers(), 0);
    });
}

/// An install racing a caller that counts itself in without a live check
/// (the softirq loop's `visit`) and one that enters only a live slot: each
/// sees nothing or the whole pair the install wrote.
#[test]
fn a_call_sees_a_whole_handler() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let slot: Arc<HandlerSlot<(usize, usize)>> = Arc::new(HandlerSlot::new());
        let visitor = {
            let slot = slot.clone();
            loom::thread::spawn(move || slot.visit().handler())
        };
        let caller = {
            let slot = slot.clone();
            loom::thread::spawn(move || {
                let mut seen = None;
                slot.call(|pair| seen = Some(pair));
                seen
            })
        };
        slot.install((7, 7)).unwrap();
        for seen in [visitor.join().unwrap(), caller.join().unwrap()] {
            assert!(seen.is_none() || seen == Some((7, 7)), "a torn or stale handler {seen:?}");
        }
    });
}

/// Two installs racing for an empty slot: exactly one wins, and the slot
/// holds the winner's handler.
#[test]
fn one_of_two_racing_installs_wins() {
    loom::model(|| {
        let slot: Arc<HandlerSlot<usize>> = Arc::new(HandlerSlot::new());
        let other = {
            let slot = slot.clone();
            loom::thread::spawn(move || slot.install(2).is_ok())
        };
        let mine = slot.install(1).is_ok();
        let theirs = other.join().unwrap();
        assert!(mine ^ theirs, "both or neither install won ({mine}, {theirs})");
        let mut held = 0;
        slot.call(|handler| held = handler);
        assert_eq!(held, if mine { 1 } else { 2 });
    });
}
