//! Priority inheritance (Linux's rt_mutex rules), as decisions the kernel
//! applies.
//!
//! Rules:
//! - **Inheritance**: the owner of a mutex runs at the level of the most
//!   urgent thread waiting for it, if that is above its own, until it
//!   unlocks. A thread's *effective* level is the most urgent of its own
//!   (base) level and the levels of the waiters of every mutex it holds.
//! - **Chains**: if the boosted owner itself waits on a mutex, that mutex's
//!   owner inherits in turn (A waits on M1 owned by B, B waits on M2 owned by
//!   C: C runs at A's level). The walk stops where a level does not change,
//!   and after [`MAX_CHAIN`] steps (a deadlock cycle cannot loop forever).
//! - **Wait order**: waiters are served most urgent first, FIFO within a
//!   level; a waiter whose level changes is re-sorted (the kernel removes and
//!   re-inserts it).
//!
//! The lock word's protocol ([`OwnerWord`]) is here too, model-checked with
//! loom.
//!
//! Only real-time levels are inherited: a fair (kernel) waiter never boosts
//! anyone, as in Linux, where the fair class's share does not change with an
//! inherited priority.

use crate::sync::{AtomicU64, Ordering};

/// How urgent a thread is, for inheritance and wait order. Fair (kernel)
/// threads are all equal and below every real-time priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// A fair-share kernel thread (or idle).
    Fair,
    /// A real-time thread of this priority (higher is more urgent).
    Realtime(u8),
}

impl Level {
    /// The level as one byte: 0 for fair, `priority + 1` for real time
    /// (for storing in an atomic). Priorities above 254 saturate.
    pub fn encode(self) -> u8 {
        match self {
            Level::Fair => 0,
            Level::Realtime(priority) => priority.saturating_add(1),
        }
    }

    /// The inverse of [`encode`](Self::encode).
    pub fn decode(byte: u8) -> Level {
        match byte {
            0 => Level::Fair,
            byte => Level::Realtime(byte - 1),
        }
    }
}

/// Longest chain of owners followed by one propagation.
pub const MAX_CHAIN: usize = 32;

/// The level a thread runs at: its `base` level or the most urgent of the
/// `waiters` of the mutexes it holds, whichever is higher.
pub fn effective_level(base: Level, waiters: impl IntoIterator<Item = Level>) -> Level {
    waiters.into_iter().fold(base, Level::max)
}

/// An intrusive waiter list, as the engine sees it: who follows whom and at
/// what level each waiter waits.
pub trait WaiterList {
    type Waiter: Copy + Eq;
    /// The waiter after `waiter`, if any.
    fn next(&self, waiter: Self::Waiter) -> Option<Self::Waiter>;
    /// The level `waiter` waits at.
    fn level(&self, waiter: Self::Waiter) -> Level;
}

/// Where a new waiter of `level` goes in the list starting at `head`: after
/// the returned waiter (`None`: at the head). It goes behind every waiter at
/// least as urgent (FIFO within a level) and before every less urgent one.
pub fn insert_after<L: WaiterList>(list: &L, head: Option<L::Waiter>, level: Level) -> Option<L::Waiter> {
    let mut previous = None;
    let mut cursor = head;
    while let Some(waiter) = cursor {
        if list.level(waiter) < level {
            break;
        }
        previous = Some(waiter);
        cursor = list.next(waiter);
    }
    previous
}

/// Who holds and who waits for what, as the kernel knows it (read and
/// changed under its inheritance lock).
pub trait LockGraph {
    type Thread: Copy + Eq;
    type Lock: Copy + Eq;
    /// The thread's own level (its scheduling class and priority).
    fn base_level(&self, thread: Self::Thread) -> Level;
    /// The level the thread runs at now (as last applied).
    fn current_level(&self, thread: Self::Thread) -> Level;
    /// Calls `visit` with the level of every thread blocked on a mutex the
    /// thread holds (the most urgent of them is what it inherits).
    fn for_each_waiter(&self, owner: Self::Thread, visit: &mut dyn FnMut(Level));
    /// The mutex the thread is blocked on, if any.
    fn blocked_on(&self, thread: Self::Thread) -> Option<Self::Lock>;
    /// The owner of `lock`, if held.
    fn owner(&self, lock: Self::Lock) -> Option<Self::Thread>;
    /// Makes the thread run at `level` (and re-sorts it among the waiters of
    /// the mutex it is blocked on).
    fn apply(&mut self, thread: Self::Thread, level: Level);
}

/// The level `thread` should run at now, from its base level and the locks
/// it holds.
pub fn recompute<G: LockGraph>(graph: &G, thread: G::Thread) -> Level {
    let mut level = graph.base_level(thread);
    graph.for_each_waiter(thread, &mut |waiter| level = level.max(waiter));
    level
}

/// How a propagation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// Every level on the chain is right; `steps` threads changed level.
    Settled { steps: usize },
    /// The chain was longer than [`MAX_CHAIN`] (a deadlock cycle, or a
    /// pathologically deep nesting); the walk stopped there.
    TooLong,
}

/// Brings `start`'s level up to date after something it depends on changed
/// (a waiter arrived on a mutex it holds, it released one, its base level
/// changed), then follows the chain: while a thread's level changed and it
/// is blocked on a mutex, that mutex's owner is recomputed next.
pub fn propagate<G: LockGraph>(graph: &mut G, start: G::Thread) -> Propagation {
    let mut thread = start;
    for steps in 0..MAX_CHAIN {
        let level = recompute(graph, thread);
        if level == graph.current_level(thread) {
            return Propagation::Settled { steps };
        }
        graph.apply(thread, level);
        let Some(lock) = graph.blocked_on(thread) else { return Propagation::Settled { steps: steps + 1 } };
        let Some(owner) = graph.owner(lock) else { return Propagation::Settled { steps: steps + 1 } };
        thread = owner;
    }
    Propagation::TooLong
}

/// Set in an [`OwnerWord`] while threads wait: the owner's fast unlock
/// then fails, and it hands the mutex over under the inheritance lock.
pub const HAS_WAITERS: u64 = 1 << 63;

/// What a thread that wants a held mutex finds, under the inheritance lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// It owns the mutex (taken now, or handed over while it slept).
    Owned,
    /// `owner` holds it and the waiters bit is set: queue and sleep.
    Wait { owner: u64 },
    /// The owner released it meanwhile: look again.
    Retry,
}

/// The lock word of a priority-inheriting mutex: the owner's id (never 0,
/// below bit 63), 0 when free, [`HAS_WAITERS`] while threads wait.
///
/// Rules: the uncontended lock and unlock are one compare-exchange each and
/// take no lock; once the waiters bit is set, only holders of the
/// inheritance lock change the word, so a waiter queued under that lock is
/// never missed by the unlock (no lost wake-up) and the mutex goes to the
/// head of the queue. `tests/loom_pi_mutex.rs` checks every interleaving.
#[derive(Debug)]
pub struct OwnerWord(AtomicU64);

impl Default for OwnerWord {
    fn default() -> Self {
        Self::new()
    }
}

impl OwnerWord {
    /// A free mutex.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// A free mutex (loom's atomics cannot be built in a constant).
    #[cfg(loom)]
    pub fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// The fast lock: takes a free mutex for `me`.
    pub fn try_lock(&self, me: u64) -> bool {
        self.0.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// The fast unlock: frees the mutex if nobody waits. `false`: waiters
    /// exist, hand it over with [`hand_over`](Self::hand_over).
    pub fn unlock_fast(&self, me: u64) -> bool {
        self.0.compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed).is_ok()
    }

    /// Under the inheritance lock: takes the mutex if free, or marks that
    /// `me` is about to wait for its owner.
    pub fn arrive(&self, me: u64) -> Arrival {
        let word = self.0.load(Ordering::Acquire);
        if word & !HAS_WAITERS == me {
            return Arrival::Owned;
        }
        if word == 0 {
            return if self.try_lock(me) { Arrival::Owned } else { Arrival::Retry };
        }
        if word & HAS_WAITERS != 0 || self.0.compare_exchange(word, word | HAS_WAITERS, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            Arrival::Wait { owner: word & !HAS_WAITERS }
        } else {
            Arrival::Retry
        }
    }

    /// Under the inheritance lock, by the owner whose fast unlock failed:
    /// gives the mutex to `next` (the head of the queue; `more`: others
    /// still wait), or frees it if the queue is empty.
    pub fn hand_over(&self, next: Option<u64>, more: bool) {
        let word = match next {
            Some(next) if more => next | HAS_WAITERS,
            Some(next) => next,
            None => 0,
        };
        self.0.store(word, Ordering::Release);
    }

    /// The owner's id, if held.
    pub fn owner(&self) -> Option<u64> {
        let owner = self.0.load(Ordering::Acquire) & !HAS_WAITERS;
        (owner != 0).then_some(owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A host model of threads and mutexes: waiter lists kept sorted with
    /// [`insert_after`], levels applied as the kernel does.
    #[derive(Default)]
    struct Model {
        base: HashMap<u32, Level>,
        current: HashMap<u32, Level>,
        blocked_on: HashMap<u32, u32>,
        owner: HashMap<u32, u32>,
        waiters: HashMap<u32, Vec<u32>>,
        applied: Vec<(u32, Level)>,
    }

    struct Slice<'a> {
        order: &'a [u32],
        current: &'a HashMap<u32, Level>,
    }

    impl WaiterList for Slice<'_> {
        type Waiter = u32;
        fn next(&self, waiter: u32) -> Option<u32> {
            let position = self.order.iter().position(|&w| w == waiter)?;
            self.order.get(position + 1).copied()
        }
        fn level(&self, waiter: u32) -> Level {
            self.current[&waiter]
        }
    }

    impl Model {
        fn thread(&mut self, id: u32, level: Level) {
            self.base.insert(id, level);
            self.current.insert(id, level);
        }

        fn insert_waiter(&mut self, lock: u32, thread: u32) {
            let order = self.waiters.get(&lock).cloned().unwrap_or_default();
            let list = Slice { order: &order, current: &self.current };
            let after = insert_after(&list, order.first().copied(), self.current[&thread]);
            let position = after.and_then(|w| order.iter().position(|&x| x == w)).map_or(0, |p| p + 1);
            self.waiters.entry(lock).or_default().insert(position, thread);
        }

        /// `thread` locks `lock`: takes it if free, else blocks and
        /// propagates from the owner.
        fn lock(&mut self, thread: u32, lock: u32) {
            match self.owner.get(&lock).copied() {
                None => {
                    self.owner.insert(lock, thread);
                }
                Some(owner) => {
                    self.blocked_on.insert(thread, lock);
                    self.insert_waiter(lock, thread);
                    propagate(self, owner);
                }
            }
        }

        /// `thread` unlocks `lock`: hands it to the top waiter, then
        /// re-levels both.
        fn unlock(&mut self, thread: u32, lock: u32) -> Option<u32> {
            assert_eq!(self.owner.get(&lock), Some(&thread));
            let next = self.waiters.get_mut(&lock).and_then(|list| (!list.is_empty()).then(|| list.remove(0)));
            match next {
                Some(next) => {
                    self.owner.insert(lock, next);
                    self.blocked_on.remove(&next);
                }
                None => {
                    self.owner.remove(&lock);
                }
            }
            propagate(self, thread);
            if let Some(next) = next {
                propagate(self, next);
            }
            next
        }
    }

    impl LockGraph for Model {
        type Thread = u32;
        type Lock = u32;
        fn base_level(&self, thread: u32) -> Level {
            self.base[&thread]
        }
        fn current_level(&self, thread: u32) -> Level {
            self.current[&thread]
        }
        fn for_each_waiter(&self, owner: u32, visit: &mut dyn FnMut(Level)) {
            for (lock, waiters) in &self.waiters {
                if self.owner.get(lock) == Some(&owner) {
                    waiters.iter().for_each(|waiter| visit(self.current[waiter]));
                }
            }
        }
        fn blocked_on(&self, thread: u32) -> Option<u32> {
            self.blocked_on.get(&thread).copied()
        }
        fn owner(&self, lock: u32) -> Option<u32> {
            self.owner.get(&lock).copied()
        }
        fn apply(&mut self, thread: u32, level: Level) {
            self.current.insert(thread, level);
            self.applied.push((thread, level));
            if let Some(lock) = self.blocked_on.get(&thread).copied() {
                if let Some(list) = self.waiters.get_mut(&lock) {
                    list.retain(|&w| w != thread);
                }
                self.insert_waiter(lock, thread);
            }
        }
    }

    const A: u32 = 1;
    const B: u32 = 2;
    const C: u32 = 3;
    const D: u32 = 4;
    const M1: u32 = 10;
    const M2: u32 = 20;

    #[test]
    fn levels_order_fair_below_every_realtime_priority() {
        assert!(Level::Fair < Level::Realtime(0));
        assert!(Level::Realtime(3) < Level::Realtime(4));
        for level in [Level::Fair, Level::Realtime(0), Level::Realtime(63)] {
            assert_eq!(Level::decode(level.encode()), level);
        }
        assert_eq!(effective_level(Level::Realtime(5), [Level::Fair, Level::Realtime(9), Level::Realtime(2)]), Level::Realtime(9));
        assert_eq!(effective_level(Level::Realtime(5), []), Level::Realtime(5));
    }

    #[test]
    fn owner_inherits_the_top_waiter_until_it_unlocks() {
        let mut model = Model::default();
        model.thread(A, Level::Realtime(30));
        model.thread(B, Level::Realtime(5));
        model.lock(B, M1);
        model.lock(A, M1);
        assert_eq!(model.current[&B], Level::Realtime(30));
        assert_eq!(model.unlock(B, M1), Some(A));
        assert_eq!(model.current[&B], Level::Realtime(5), "deboosted at unlock");
        assert_eq!(model.owner[&M1], A, "handed to the waiter");
    }

    #[test]
    fn a_fair_owner_is_boosted_into_real_time() {
        let mut model = Model::default();
        model.thread(A, Level::Realtime(1));
        model.thread(B, Level::Fair);
        model.lock(B, M1);
        model.lock(A, M1);
        assert_eq!(model.current[&B], Level::Realtime(1));
    }

    #[test]
    fn fair_waiters_boost_nobody() {
        let mut model = Model::default();
        model.thread(A, Level::Fair);
        model.thread(B, Level::Fair);
        model.lock(B, M1);
        model.lock(A, M1);
        assert_eq!(model.current[&B], Level::Fair);
        assert!(model.applied.is_empty());
    }

    #[test]
    fn chains_are_followed_to_the_last_owner() {
        // A waits on M1 owned by B, B waits on M2 owned by C: C inherits A.
        let mut model = Model::default();
        model.thread(A, Level::Realtime(40));
        model.thread(B, Level::Realtime(20));
        model.thread(C, Level::Realtime(10));
        model.lock(C, M2);
        model.lock(B, M1);
        model.lock(B, M2);
        assert_eq!(model.current[&C], Level::Realtime(20));
        model.lock(A, M1);
        assert_eq!(model.current[&B], Level::Realtime(40));
        assert_eq!(model.current[&C], Level::Realtime(40));
        // C releases M2 to B: C drops to its own level, B keeps A's (it
        // still holds M1 with A waiting).
        assert_eq!(model.unlock(C, M2), Some(B));
        assert_eq!(model.current[&C], Level::Realtime(10));
        assert_eq!(model.current[&B], Level::Realtime(40));
        assert_eq!(model.unlock(B, M1), Some(A));
        assert_eq!(model.current[&B], Level::Realtime(20));
    }

    #[test]
    fn an_owner_of_two_locks_runs_at_the_higher_top_waiter() {
        let mut model = Model::default();
        model.thread(A, Level::Realtime(40));
        model.thread(B, Level::Realtime(30));
        model.thread(C, Level::Realtime(1));
        model.lock(C, M1);
        model.lock(C, M2);
        model.lock(B, M2);
        model.lock(A, M1);
        assert_eq!(model.current[&C], Level::Realtime(40));
        assert_eq!(model.unlock(C, M1), Some(A));
        assert_eq!(model.current[&C], Level::Realtime(30), "still holds M2 with B waiting");
        assert_eq!(model.unlock(C, M2), Some(B));
        assert_eq!(model.current[&C], Level::Realtime(1));
    }

    #[test]
    fn waiters_are_served_most_urgent_first_fifo_within_a_level() {
        let mut model = Model::default();
        model.thread(9, Level::Fair);
        for (thread, level) in [(A, Level::Realtime(5)), (B, Level::Fair), (C, Level::Realtime(7)), (D, Level::Realtime(5))] {
            model.thread(thread, level);
        }
        model.lock(9, M1);
        for thread in [A, B, C, D] {
            model.lock(thread, M1);
        }
        assert_eq!(model.waiters[&M1], vec![C, A, D, B]);
        let mut order = Vec::new();
        let mut owner = 9;
        while let Some(next) = model.unlock(owner, M1) {
            order.push(next);
            owner = next;
        }
        assert_eq!(order, vec![C, A, D, B]);
    }

    #[test]
    fn a_boosted_waiter_is_resorted_in_the_list_it_waits_on() {
        // B waits on M2 behind D (both 10); A then boosts B via M1: B moves
        // ahead of D in M2's list, and M2's owner C inherits A's level.
        let mut model = Model::default();
        model.thread(A, Level::Realtime(50));
        model.thread(B, Level::Realtime(10));
        model.thread(C, Level::Realtime(1));
        model.thread(D, Level::Realtime(10));
        model.lock(C, M2);
        model.lock(B, M1);
        model.lock(D, M2);
        model.lock(B, M2);
        assert_eq!(model.waiters[&M2], vec![D, B]);
        model.lock(A, M1);
        assert_eq!(model.waiters[&M2], vec![B, D]);
        assert_eq!(model.current[&C], Level::Realtime(50));
    }

    #[test]
    fn a_deadlock_cycle_ends_the_walk() {
        // A holds M1 and waits on M2; B holds M2 and waits on M1.
        let mut model = Model::default();
        model.thread(A, Level::Realtime(3));
        model.thread(B, Level::Realtime(4));
        model.lock(A, M1);
        model.lock(B, M2);
        model.lock(A, M2);
        model.lock(B, M1);
        assert_eq!(model.current[&A], Level::Realtime(4));
        assert_eq!(model.current[&B], Level::Realtime(4));
        // A base change walks the cycle and stops once levels settle.
        model.base.insert(A, Level::Realtime(9));
        assert!(matches!(propagate(&mut model, A), Propagation::Settled { .. }));
        assert_eq!(model.current[&B], Level::Realtime(9));
    }

    #[test]
    fn a_raised_base_propagates_and_a_lowered_one_returns() {
        let mut model = Model::default();
        model.thread(A, Level::Realtime(5));
        model.thread(B, Level::Realtime(1));
        model.lock(B, M1);
        model.lock(A, M1);
        model.base.insert(A, Level::Realtime(60));
        propagate(&mut model, A);
        assert_eq!(model.current[&B], Level::Realtime(60));
        model.base.insert(A, Level::Fair);
        propagate(&mut model, A);
        assert_eq!(model.current[&A], Level::Fair);
        assert_eq!(model.current[&B], Level::Realtime(1));
    }
}
