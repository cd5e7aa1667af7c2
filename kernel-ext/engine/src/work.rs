//! The work item state machine for workqueues: one atomic word per item,
//! changed only by compare-and-swap through the methods of [`WorkState`].
//! The kernel's `workqueue.rs` calls them; `tests/loom_work.rs` checks every
//! interleaving of the same code with loom.
//!
//! The rules (Linux's, which the seeds rely on):
//! - **Pending is claimed once.** Queueing a pending item returns false and
//!   does not queue it twice. A delayed item whose timer is armed is pending
//!   too (bit [`TIMER`] says where it waits), so `queue_work` on it is
//!   refused and the timer does not queue it a second time.
//! - **A work item is non-reentrant: it never runs twice at once.** The word
//!   names the worker that owns it (the one whose list holds it, or that
//!   runs it). An item queued while it runs goes to the worker already
//!   running it, whatever CPU or queue the caller asked for, so the second
//!   run follows the first on that worker.
//! - **Pending and running are one step.** A worker takes an item off its
//!   list and marks it running under that list's lock ([`WorkState::begin_run`]);
//!   a canceller that takes the same lock sees it either still queued (and
//!   steals it) or running (and waits), never neither.
//! - **Cancel wins.** While a cancel is in progress ([`WorkState::begin_cancel`]
//!   to [`WorkState::end_cancel`]) queueing is refused, so `cancel_work_sync`
//!   of a handler that re-queues itself still returns with the item idle.
//!
//! Lock discipline the caller keeps (the kernel with its spin locks, the
//! loom model with loom's mutexes): [`WorkState::claim`],
//! [`WorkState::begin_run`] and [`WorkState::steal_queued`] for worker `w`
//! are called with `w`'s list locked, so "pending with owner `w`" holds
//! exactly while the item is linked on `w`'s list. [`WorkState::claim_timer`],
//! [`WorkState::timer_fired`] and [`WorkState::steal_timer`] are called with
//! the delayed item's own lock held, which serialises them with its timer.
//!
//! Deliberately stronger than Linux: Linux keeps a work item non-reentrant
//! only within one workqueue (queued on another workqueue while it runs, it
//! may run there at the same time). Here the rule holds across queues: an
//! item queued on queue B while it runs on a worker of queue A goes to that
//! worker of A, so a flush of A (not B) waits for it. A handler written for
//! Linux never sees a difference except that it is never entered twice.

use crate::sync::{AtomicU32, Ordering};

/// Bit: claimed for running: linked on its owner's list, or (with
/// [`TIMER`]) waiting for its delay timer.
pub const PENDING: u32 = 1 << 0;
/// Bit (only with [`PENDING`]): pending on the delay timer, on no list.
pub const TIMER: u32 = 1 << 1;
/// Bit: the handler runs on its owner worker.
pub const RUNNING: u32 = 1 << 2;
/// Bits 8..16: cancels in progress (queueing is refused while non-zero).
const CANCEL_SHIFT: u32 = 8;
const CANCEL_ONE: u32 = 1 << CANCEL_SHIFT;
const CANCEL_MASK: u32 = 0xff << CANCEL_SHIFT;
/// Bits 16..32: the owner worker, 0 for none.
const OWNER_SHIFT: u32 = 16;
const FLAGS_MASK: u32 = (1 << OWNER_SHIFT) - 1;

/// A worker's number (1..=65535; 0 means none). The kernel maps it to its
/// worker; the engine only compares them.
pub type WorkerId = u16;

/// "No worker".
pub const NO_WORKER: WorkerId = 0;

/// A read of the state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot(pub u32);

impl Snapshot {
    pub fn is_pending(self) -> bool {
        self.0 & PENDING != 0
    }

    /// Pending on the delay timer (not on a list).
    pub fn is_timer_pending(self) -> bool {
        self.0 & (PENDING | TIMER) == PENDING | TIMER
    }

    /// Pending on its owner's list.
    pub fn is_queued(self) -> bool {
        self.0 & (PENDING | TIMER) == PENDING
    }

    pub fn is_running(self) -> bool {
        self.0 & RUNNING != 0
    }

    /// A cancel is in progress.
    pub fn is_canceling(self) -> bool {
        self.0 & CANCEL_MASK != 0
    }

    /// The worker whose list holds it or that runs (or last ran) it.
    pub fn owner(self) -> WorkerId {
        (self.0 >> OWNER_SHIFT) as WorkerId
    }

    fn with_owner(self, owner: WorkerId) -> Snapshot {
        Snapshot((self.0 & FLAGS_MASK) | (u32::from(owner) << OWNER_SHIFT))
    }
}

/// What [`WorkState::claim`] (or [`WorkState::timer_fired`]) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Claimed for the locked worker: link it on that list now.
    Claimed,
    /// Already pending, or a cancel is in progress: nothing to do.
    Refused,
    /// It runs on another worker than the one locked: unlock, and lock the
    /// worker [`WorkState::queue_target`] names now.
    Retry,
}

/// The next step of a cancel, from [`WorkState::cancel_step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelStep {
    /// Pending on its delay timer: take the item's lock, [`WorkState::steal_timer`],
    /// and delete the timer.
    StealTimer,
    /// Queued on this worker's list: lock it, [`WorkState::steal_queued`], unlink.
    StealQueued(WorkerId),
    /// Not pending, running on this worker: wait for it (sync cancel only).
    WaitRunning(WorkerId),
    /// Neither pending nor running.
    Idle,
}

/// The state word of one work item.
#[derive(Debug)]
pub struct WorkState {
    word: AtomicU32,
}

impl WorkState {
    /// An idle item (INIT_WORK).
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self { word: AtomicU32::new(0) }
    }

    /// An idle item (INIT_WORK).
    #[cfg(loom)]
    pub fn new() -> Self {
        Self { word: AtomicU32::new(0) }
    }

    pub fn load(&self) -> Snapshot {
        Snapshot(self.word.load(Ordering::Acquire))
    }

    /// Applies `step` with compare-and-swap until it holds; `step` returns
    /// the new word, or `None` to change nothing. Returns the word `step`
    /// saw last and whether it was changed.
    fn update(&self, mut step: impl FnMut(Snapshot) -> Option<Snapshot>) -> (Snapshot, bool) {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let Some(next) = step(Snapshot(current)) else { return (Snapshot(current), false) };
            match self.word.compare_exchange(current, next.0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return (Snapshot(current), true),
                Err(actual) => current = actual,
            }
        }
    }

    /// `queue_work`, first step: the worker whose list to lock — the one
    /// running the item if it runs (non-reentrancy), else `preferred`.
    /// `None`: refused (already pending, or being cancelled).
    pub fn queue_target(&self, preferred: WorkerId) -> Option<WorkerId> {
        target_of(self.load(), preferred)
    }

    /// `queue_work`, second step, with `target`'s list locked: claims the
    /// item for `target` (PENDING, owner `target`).
    pub fn claim(&self, target: WorkerId) -> Claim {
        let mut verdict = Claim::Refused;
        self.update(|state| {
            verdict = claim_verdict(state, target);
            (verdict == Claim::Claimed).then(|| Snapshot(state.0 | PENDING).with_owner(target))
        });
        verdict
    }

    /// `queue_delayed_work` with a delay, with the item's lock held: claims
    /// PENDING|TIMER (the caller arms the timer). False if already pending
    /// or being cancelled.
    pub fn claim_timer(&self) -> bool {
        self.update(|state| (!state.is_pending() && !state.is_canceling()).then_some(Snapshot(state.0 | PENDING | TIMER))).1
    }

    /// Where the timer's firing should queue the item (lock that list):
    /// the running worker, else `preferred`; `None` if the timer no longer
    /// holds it (stolen by a cancel or a `mod_delayed_work`).
    pub fn fire_target(&self, preferred: WorkerId) -> Option<WorkerId> {
        let state = self.load();
        if !state.is_timer_pending() {
            return None;
        }
        Some(if state.is_running() { state.owner() } else { preferred })
    }

    /// The delay timer fired, with the item's lock and `target`'s list
    /// locked: TIMER-pending becomes queued on `target`. A cancel in
    /// progress does not refuse it (the item is already pending; the
    /// canceller steals it from the list).
    pub fn timer_fired(&self, target: WorkerId) -> Claim {
        let mut verdict = Claim::Refused;
        self.update(|state| {
            verdict = if !state.is_timer_pending() {
                Claim::Refused
            } else if state.is_running() && state.owner() != target {
                Claim::Retry
            } else {
                Claim::Claimed
            };
            (verdict == Claim::Claimed).then(|| Snapshot(state.0 & !TIMER).with_owner(target))
        });
        verdict
    }

    /// A worker took the item off its own list, with that list locked:
    /// queued becomes running on `worker`.
    pub fn begin_run(&self, worker: WorkerId) {
        self.update(|state| {
            debug_assert!(state.is_queued() && state.owner() == worker, "begin_run of an item not queued here");
            Some(Snapshot((state.0 & !PENDING) | RUNNING).with_owner(worker))
        });
    }

    /// The handler returned. Returns whether the item was queued again
    /// meanwhile (then on this same worker).
    pub fn end_run(&self) -> bool {
        let (before, _) = self.update(|state| Some(Snapshot(state.0 & !RUNNING)));
        before.is_pending()
    }

    /// `cancel_work_sync`, first step: refuses queueing until
    /// [`end_cancel`](Self::end_cancel). Cancels nest (a count).
    pub fn begin_cancel(&self) {
        self.update(|state| {
            debug_assert!(state.0 & CANCEL_MASK != CANCEL_MASK, "too many cancels at once");
            Some(Snapshot(state.0 + CANCEL_ONE))
        });
    }

    /// `cancel_work_sync`, last step.
    pub fn end_cancel(&self) {
        self.update(|state| {
            debug_assert!(state.is_canceling(), "end_cancel without begin_cancel");
            Some(Snapshot(state.0 - CANCEL_ONE))
        });
    }

    /// What a cancel does next (it loops until [`CancelStep::Idle`]).
    pub fn cancel_step(&self) -> CancelStep {
        let state = self.load();
        if state.is_timer_pending() {
            CancelStep::StealTimer
        } else if state.is_queued() {
            CancelStep::StealQueued(state.owner())
        } else if state.is_running() {
            CancelStep::WaitRunning(state.owner())
        } else {
            CancelStep::Idle
        }
    }

    /// With `worker`'s list locked: takes a queued item's PENDING if it is
    /// queued there (the caller unlinks it). False if it left meanwhile.
    pub fn steal_queued(&self, worker: WorkerId) -> bool {
        self.update(|state| (state.is_queued() && state.owner() == worker).then_some(Snapshot(state.0 & !PENDING))).1
    }

    /// With the item's lock held: takes a timer-pending item's PENDING (the
    /// caller deletes the timer). False if it is not timer-pending.
    pub fn steal_timer(&self) -> bool {
        self.update(|state| state.is_timer_pending().then_some(Snapshot(state.0 & !(PENDING | TIMER)))).1
    }
}

#[cfg(not(loom))]
impl Default for WorkState {
    fn default() -> Self {
        Self::new()
    }
}

fn target_of(state: Snapshot, preferred: WorkerId) -> Option<WorkerId> {
    if state.is_pending() || state.is_canceling() {
        None
    } else if state.is_running() {
        Some(state.owner())
    } else {
        Some(preferred)
    }
}

fn claim_verdict(state: Snapshot, target: WorkerId) -> Claim {
    if state.is_pending() || state.is_canceling() {
        Claim::Refused
    } else if state.is_running() && state.owner() != target {
        Claim::Retry
    } else {
        Claim::Claimed
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const A: WorkerId = 1;
    const B: WorkerId = 2;

    fn queued_on(state: &WorkState, worker: WorkerId) {
        assert_eq!(state.queue_target(worker), Some(worker));
        assert_eq!(state.claim(worker), Claim::Claimed);
    }

    #[test]
    fn queueing_a_pending_item_is_refused() {
        let state = WorkState::new();
        queued_on(&state, A);
        assert_eq!(state.queue_target(B), None);
        assert_eq!(state.claim(B), Claim::Refused);
        assert!(state.load().is_queued());
        assert_eq!(state.load().owner(), A);
    }

    #[test]
    fn an_item_queued_while_it_runs_goes_to_the_worker_running_it() {
        let state = WorkState::new();
        queued_on(&state, A);
        state.begin_run(A);
        // The caller prefers B; the item runs on A, so A it is.
        assert_eq!(state.queue_target(B), Some(A));
        assert_eq!(state.claim(B), Claim::Retry, "B's list must not take an item running on A");
        assert_eq!(state.claim(A), Claim::Claimed);
        assert!(state.end_run(), "end_run reports the re-queue");
        let after = state.load();
        assert!(after.is_queued() && !after.is_running());
        assert_eq!(after.owner(), A);
    }

    #[test]
    fn after_the_run_it_may_go_anywhere() {
        let state = WorkState::new();
        queued_on(&state, A);
        state.begin_run(A);
        assert!(!state.end_run());
        queued_on(&state, B);
    }

    #[test]
    fn cancel_refuses_the_handlers_requeue_and_waits_for_the_run() {
        let state = WorkState::new();
        queued_on(&state, A);
        state.begin_run(A);
        state.begin_cancel();
        assert_eq!(state.cancel_step(), CancelStep::WaitRunning(A));
        assert_eq!(state.queue_target(A), None, "re-queue during cancel is refused");
        assert_eq!(state.claim(A), Claim::Refused);
        state.end_run();
        assert_eq!(state.cancel_step(), CancelStep::Idle);
        state.end_cancel();
        assert_eq!(state.load().0 & FLAGS_MASK, 0);
        queued_on(&state, B);
    }

    #[test]
    fn cancel_steals_a_queued_item_only_from_its_owner() {
        let state = WorkState::new();
        queued_on(&state, A);
        state.begin_cancel();
        assert_eq!(state.cancel_step(), CancelStep::StealQueued(A));
        assert!(!state.steal_queued(B));
        assert!(state.steal_queued(A));
        assert_eq!(state.cancel_step(), CancelStep::Idle);
        state.end_cancel();
    }

    #[test]
    fn a_worker_that_took_it_first_makes_the_steal_fail() {
        let state = WorkState::new();
        queued_on(&state, A);
        state.begin_cancel();
        state.begin_run(A);
        assert!(!state.steal_queued(A));
        assert_eq!(state.cancel_step(), CancelStep::WaitRunning(A));
        state.end_run();
        state.end_cancel();
    }

    #[test]
    fn timer_armed_delayed_work_is_pending() {
        let state = WorkState::new();
        assert!(state.claim_timer());
        assert!(state.load().is_timer_pending());
        assert_eq!(state.queue_target(A), None, "queue_work on an armed delayed item is refused");
        assert!(!state.claim_timer());
        assert_eq!(state.fire_target(A), Some(A));
        assert_eq!(state.timer_fired(A), Claim::Claimed);
        assert!(state.load().is_queued());
        assert_eq!(state.fire_target(A), None, "a second firing queues nothing");
        assert_eq!(state.timer_fired(A), Claim::Refused);
    }

    #[test]
    fn a_timer_firing_while_the_item_runs_queues_it_behind_the_run() {
        let state = WorkState::new();
        queued_on(&state, A);
        state.begin_run(A);
        assert!(state.claim_timer());
        assert_eq!(state.fire_target(B), Some(A));
        assert_eq!(state.timer_fired(B), Claim::Retry);
        assert_eq!(state.timer_fired(A), Claim::Claimed);
    }

    #[test]
    fn cancel_steals_from_the_timer_and_the_firing_then_does_nothing() {
        let state = WorkState::new();
        assert!(state.claim_timer());
        state.begin_cancel();
        assert_eq!(state.cancel_step(), CancelStep::StealTimer);
        assert!(state.steal_timer());
        assert_eq!(state.timer_fired(A), Claim::Refused);
        assert_eq!(state.cancel_step(), CancelStep::Idle);
        state.end_cancel();
    }

    #[test]
    fn cancels_nest() {
        let state = WorkState::new();
        state.begin_cancel();
        state.begin_cancel();
        state.end_cancel();
        assert_eq!(state.queue_target(A), None, "one cancel still in progress");
        state.end_cancel();
        assert_eq!(state.queue_target(A), Some(A));
    }
}
