//! The priority-inheriting mutex's lock word (`pi::OwnerWord`), as the
//! kernel's `RtMutex` drives it: fast paths without a lock, waiters queued
//! under the inheritance lock, hand-over to the head of the queue. Rules
//! checked over every interleaving: mutual exclusion, and no lost wake-up
//! (every locker gets the mutex; loom fails a model that never ends).
//! Built only under `--cfg loom`.
#![cfg(loom)]

use std::collections::VecDeque;

use loom::cell::UnsafeCell;
use loom::sync::{Arc, Condvar, Mutex};
use rtedge_engine::pi::{Arrival, OwnerWord};

/// One mutex, the inheritance lock with its wait queue, a "woken" flag per
/// thread (the scheduler's Blocked -> Ready), and the data it protects.
/// Thread ids are 1..=3 (0 is the free word, as no thread's packed id is).
struct Model {
    word: OwnerWord,
    inheritance: Mutex<VecDeque<u64>>,
    woken: [(Mutex<bool>, Condvar); 4],
    data: UnsafeCell<u32>,
}

impl Model {
    fn new() -> Self {
        Self {
            word: OwnerWord::new(),
            inheritance: Mutex::new(VecDeque::new()),
            woken: core::array::from_fn(|_| (Mutex::new(false), Condvar::new())),
            data: UnsafeCell::new(0),
        }
    }

    /// `RtMutex::lock`: the fast path, else queue once under the
    /// inheritance lock and sleep until woken, then look again.
    fn lock(&self, me: u64) {
        if self.word.try_lock(me) {
            return;
        }
        let mut queued = false;
        loop {
            {
                let mut queue = self.inheritance.lock().unwrap();
                match self.word.arrive(me) {
                    Arrival::Owned => return,
                    Arrival::Retry => continue,
                    Arrival::Wait { owner } => {
                        assert_ne!(owner, me);
                        if !queued {
                            queue.push_back(me);
                            queued = true;
                        }
                    }
                }
            }
            // Blocked until the unlocker wakes this thread (Blocked ->
            // Ready; a wake-up before the sleep is not lost).
            let (flag, condvar) = &self.woken[me as usize];
            let mut woken = flag.lock().unwrap();
            while !*woken {
                woken = condvar.wait(woken).unwrap();
            }
            *woken = false;
        }
    }

    /// `RtMutex::unlock`: the fast path, else hand over under the lock.
    fn unlock(&self, me: u64) {
        if self.word.unlock_fast(me) {
            return;
        }
        let mut queue = self.inheritance.lock().unwrap();
        let next = queue.pop_front();
        self.word.hand_over(next, !queue.is_empty());
        if let Some(next) = next {
            let (flag, condvar) = &self.woken[next as usize];
            *flag.lock().unwrap() = true;
            condvar.notify_one();
        }
    }

    fn critical_section(&self, me: u64) {
        self.lock(me);
        // SAFETY: the mutex is held (loom reports any concurrent access).
        self.data.with_mut(|data| unsafe { *data += 1 });
        self.unlock(me);
    }
}

#[test]
fn two_lockers_exclude_each_other_and_both_get_the_mutex() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let model = Arc::new(Model::new());
        let other = model.clone();
        let handle = loom::thread::spawn(move || other.critical_section(2));
        model.critical_section(1);
        handle.join().unwrap();
        // SAFETY: both threads are done.
        assert_eq!(model.data.with(|data| unsafe { *data }), 2);
        assert_eq!(model.word.owner(), None);
    });
}

#[test]
fn a_holder_hands_over_to_a_waiter_queued_meanwhile() {
    // Thread 1 holds the mutex before thread 2 starts: thread 2 must go
    // through the waiters bit and the hand-over (the slow paths).
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let model = Arc::new(Model::new());
        model.lock(1);
        let other = model.clone();
        let handle = loom::thread::spawn(move || other.critical_section(2));
        // SAFETY: held by thread 1.
        model.data.with_mut(|data| unsafe { *data += 1 });
        model.unlock(1);
        handle.join().unwrap();
        // SAFETY: both threads are done.
        assert_eq!(model.data.with(|data| unsafe { *data }), 2);
        assert_eq!(model.word.owner(), None);
    });
}

#[test]
fn two_waiters_behind_a_holder_are_served_one_after_the_other() {
    // Both slow paths at once: the waiters bit stays set across the first
    // hand-over (`more`), and the second waiter still gets the mutex.
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let model = Arc::new(Model::new());
        model.lock(3);
        let handles: Vec<_> = [1u64, 2]
            .into_iter()
            .map(|me| {
                let model = model.clone();
                loom::thread::spawn(move || model.critical_section(me))
            })
            .collect();
        model.unlock(3);
        for handle in handles {
            handle.join().unwrap();
        }
        // SAFETY: every thread is done.
        assert_eq!(model.data.with(|data| unsafe { *data }), 2);
        assert_eq!(model.word.owner(), None);
    });
}
