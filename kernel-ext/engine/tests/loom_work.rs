//! Models of the workqueue's work-item protocol (`rtedge_engine::work` plus
//! the kernel's calling sequence in `workqueue.rs`), checked over every
//! interleaving with loom. Built only under `--cfg loom` (`make loom`).
//!
//! Each rule has two models: one of the logic before issue 11 (the old
//! transition functions and the old worker/queue/cancel sequence, kept here
//! verbatim in `old`), which loom must find broken (`#[should_panic]`, so
//! the model keeps proving it can find the bug), and one of today's engine
//! code, which must pass.
//!
//! Worker lists are loom mutexes holding the item's mark; in the kernel they
//! are `IrqSpinLock`s around intrusive lists. Worker `A` = 1, `B` = 2.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicU32};
use loom::sync::{Arc, Mutex};
use rtedge_engine::sync::{Ordering, spin_loop};
use rtedge_engine::work::{CancelStep, Claim, WorkState, WorkerId};

const A: WorkerId = 1;
const B: WorkerId = 2;

/// The kernel's worker lists and the facts the rules are checked against.
struct World {
    /// Index 0 unused; 1 = A, 2 = B. Each holds how many times the item is
    /// linked there (the intrusive list can hold it at most once).
    lists: [Mutex<u32>; 3],
    /// Handler instances running now (the rule: never above 1).
    instances: AtomicU32,
    runs: AtomicU32,
    cancel_returned: AtomicBool,
}

impl World {
    fn new() -> Self {
        Self {
            lists: [Mutex::new(0), Mutex::new(0), Mutex::new(0)],
            instances: AtomicU32::new(0),
            runs: AtomicU32::new(0),
            cancel_returned: AtomicBool::new(false),
        }
    }

    /// The handler body: checks the rules at its entry.
    fn handler(&self) {
        let before = self.instances.fetch_add(1, Ordering::SeqCst);
        assert_eq!(before, 0, "a work item ran twice at once");
        assert!(!self.cancel_returned.load(Ordering::SeqCst), "the handler ran after cancel_work_sync returned");
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.instances.fetch_sub(1, Ordering::SeqCst);
    }

    fn link(list: &mut u32) {
        assert_eq!(*list, 0, "the item was linked on a list twice");
        *list += 1;
    }

    fn linked(&self) -> u32 {
        (1..3).map(|worker| *self.lists[worker].lock().unwrap()).sum()
    }
}

/// Today's `queue_on`: lock the target worker's list, claim, link.
fn queue(world: &World, state: &WorkState, preferred: WorkerId) -> bool {
    loop {
        let Some(target) = state.queue_target(preferred) else { return false };
        let mut list = world.lists[usize::from(target)].lock().unwrap();
        match state.claim(target) {
            Claim::Claimed => {
                World::link(&mut list);
                return true;
            }
            Claim::Refused => return false,
            Claim::Retry => continue,
        }
    }
}

/// Today's worker: pop and mark running under the list lock, run, end.
/// Returns whether it ran the item.
fn work_once(world: &World, state: &WorkState, worker: WorkerId, requeue: Option<WorkerId>) -> bool {
    {
        let mut list = world.lists[usize::from(worker)].lock().unwrap();
        if *list == 0 {
            return false;
        }
        *list -= 1;
        state.begin_run(worker);
    }
    world.handler();
    if let Some(preferred) = requeue {
        queue(world, state, preferred);
    }
    state.end_run();
    true
}

/// Today's `cancel_work_sync` (for a plain item; the timer step belongs to
/// the delayed model). Returns whether it stole a pending item.
fn cancel_sync(world: &World, state: &WorkState) -> bool {
    state.begin_cancel();
    let mut was_pending = false;
    loop {
        match state.cancel_step() {
            CancelStep::StealQueued(owner) => {
                let mut list = world.lists[usize::from(owner)].lock().unwrap();
                if state.steal_queued(owner) {
                    *list -= 1;
                    was_pending = true;
                }
            }
            CancelStep::WaitRunning(_) => spin_loop(),
            CancelStep::StealTimer => unreachable!("plain items have no timer"),
            CancelStep::Idle => break,
        }
    }
    state.end_cancel();
    world.cancel_returned.store(true, Ordering::SeqCst);
    was_pending
}

/// An item running on worker A.
fn running_on_a(world: &World) -> WorkState {
    let state = WorkState::new();
    assert!(queue(world, &state, A));
    *world.lists[usize::from(A)].lock().unwrap() -= 1;
    state.begin_run(A);
    state
}

/// Rule: a work item is non-reentrant. It runs on A; a caller on B's CPU
/// queues it; B's worker looks for work; A's handler returns and A drains
/// its list. Never two instances at once, and the queued run happens.
#[test]
fn work_item_is_non_reentrant() {
    loom::model(|| {
        let world = Arc::new(World::new());
        world.instances.store(1, Ordering::SeqCst);
        let state = Arc::new(running_on_a(&world));

        let (world_a, state_a) = (world.clone(), state.clone());
        let worker_a = loom::thread::spawn(move || {
            // The first run ends...
            world_a.instances.fetch_sub(1, Ordering::SeqCst);
            state_a.end_run();
            // ...and A looks at its list once.
            work_once(&world_a, &state_a, A, None);
        });
        let (world_b, state_b) = (world.clone(), state.clone());
        let worker_b = loom::thread::spawn(move || {
            work_once(&world_b, &state_b, B, None);
        });
        assert!(queue(&world, &state, B), "an idle or running item must be queueable");
        worker_a.join().unwrap();
        worker_b.join().unwrap();
        // Whatever is still queued runs on the owner's next turn.
        let owner = state.load().owner();
        work_once(&world, &state, owner, None);
        assert_eq!(world.runs.load(Ordering::SeqCst), 1, "the queued run was lost or doubled");
        assert_eq!(world.linked(), 0);
    });
}

/// Rule: on return from `cancel_work_sync` the item is neither pending nor
/// running and its handler does not run again — also when the worker is
/// between taking it off the list and running it, and when the handler
/// re-queues itself (preferring the other CPU).
#[test]
fn cancel_work_sync_leaves_it_idle_and_never_run_again() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let world = Arc::new(World::new());
        let state = Arc::new(WorkState::new());
        assert!(queue(&world, &state, A));

        let (world_a, state_a) = (world.clone(), state.clone());
        let worker_a = loom::thread::spawn(move || {
            for _ in 0..2 {
                work_once(&world_a, &state_a, A, Some(B));
            }
        });
        cancel_sync(&world, &state);
        let after = state.load();
        assert!(!after.is_pending() && !after.is_running(), "cancel_work_sync returned with {after:?}");
        worker_a.join().unwrap();
        assert_eq!(world.linked(), 0, "left on a list after cancel");
        // It can be queued again afterwards.
        assert!(queue(&world, &state, B));
    });
}

/// Rule: a delayed item is pending while its timer is armed. `queue_work`
/// races the timer's firing; the item is linked once and runs once.
#[test]
fn delayed_work_is_pending_while_its_timer_is_armed() {
    loom::model(|| {
        let world = Arc::new(World::new());
        let state = Arc::new(WorkState::new());
        let item_lock = Arc::new(Mutex::new(()));
        // queue_delayed_work: claimed under the item's lock, timer armed.
        {
            let _item = item_lock.lock().unwrap();
            assert!(state.claim_timer());
        }
        let (world_t, state_t, lock_t) = (world.clone(), state.clone(), item_lock.clone());
        let timer = loom::thread::spawn(move || fire(&world_t, &state_t, &lock_t, B));
        let (world_a, state_a) = (world.clone(), state.clone());
        let worker_a = loom::thread::spawn(move || {
            work_once(&world_a, &state_a, A, None);
        });
        let queued_now = queue(&world, &state, A);
        let fired = timer.join().unwrap();
        worker_a.join().unwrap();
        assert!(fired, "the armed timer owns the pending item");
        // queue_work could only succeed after the timer's run started.
        let owner = state.load().owner();
        while work_once(&world, &state, owner, None) {}
        let expected = 1 + u32::from(queued_now);
        assert_eq!(world.runs.load(Ordering::SeqCst), expected);
    });
}

/// The timer's callback: under the item's lock, move it to a list.
fn fire(world: &World, state: &WorkState, item_lock: &Mutex<()>, preferred: WorkerId) -> bool {
    let _item = item_lock.lock().unwrap();
    loop {
        let Some(target) = state.fire_target(preferred) else { return false };
        let mut list = world.lists[usize::from(target)].lock().unwrap();
        match state.timer_fired(target) {
            Claim::Claimed => {
                World::link(&mut list);
                return true;
            }
            Claim::Refused => return false,
            Claim::Retry => continue,
        }
    }
}

/// Rule: `cancel_delayed_work_sync` racing the timer's firing and the
/// worker: on return the item is idle, on no list, and never runs again.
#[test]
fn cancel_delayed_work_sync_beats_the_timer_and_the_worker() {
    // Three threads and a spinning cancel: bounded preemptions keep it
    // to seconds (every interleaving with up to 3 preemptions).
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let world = Arc::new(World::new());
        let state = Arc::new(WorkState::new());
        let item_lock = Arc::new(Mutex::new(()));
        let timer_armed = Arc::new(AtomicBool::new(false));
        {
            let _item = item_lock.lock().unwrap();
            assert!(state.claim_timer());
            timer_armed.store(true, Ordering::SeqCst);
        }
        let (world_t, state_t, lock_t, armed_t) = (world.clone(), state.clone(), item_lock.clone(), timer_armed.clone());
        let timer = loom::thread::spawn(move || {
            // The timer base dequeues the timer, then calls back.
            if armed_t.swap(false, Ordering::SeqCst) {
                fire(&world_t, &state_t, &lock_t, A);
            }
        });
        let (world_a, state_a) = (world.clone(), state.clone());
        let worker_a = loom::thread::spawn(move || {
            work_once(&world_a, &state_a, A, None);
        });
        // cancel_delayed_work_sync.
        state.begin_cancel();
        loop {
            match state.cancel_step() {
                CancelStep::StealTimer => {
                    let _item = item_lock.lock().unwrap();
                    if state.steal_timer() {
                        timer_armed.store(false, Ordering::SeqCst); // del_timer
                    }
                }
                CancelStep::StealQueued(owner) => {
                    let mut list = world.lists[usize::from(owner)].lock().unwrap();
                    if state.steal_queued(owner) {
                        *list -= 1;
                    }
                }
                CancelStep::WaitRunning(_) => spin_loop(),
                CancelStep::Idle => break,
            }
        }
        state.end_cancel();
        world.cancel_returned.store(true, Ordering::SeqCst);
        let after = state.load();
        assert!(!after.is_pending() && !after.is_running(), "returned with {after:?}");
        timer.join().unwrap();
        worker_a.join().unwrap();
        assert_eq!(world.linked(), 0);
        assert!(world.runs.load(Ordering::SeqCst) <= 1);
    });
}

/// The logic before issue 11, verbatim: transition functions on one word
/// (`RUNNING` one bit, no owner), `queue_on(None, ..)` linking on the
/// caller's CPU's worker, the worker popping under the lock but marking the
/// item running only after, and the old `cancel_work_sync`.
mod old {
    use super::*;

    pub const PENDING: u32 = 1 << 0;
    pub const RUNNING: u32 = 1 << 1;
    pub const CANCELING: u32 = 1 << 2;

    pub fn queue(state: u32) -> (u32, bool) {
        if state & (PENDING | CANCELING) != 0 { (state, false) } else { (state | PENDING, true) }
    }
    pub fn begin_run(state: u32) -> u32 {
        (state & !PENDING) | RUNNING
    }
    pub fn end_run(state: u32) -> u32 {
        state & !RUNNING
    }
    pub fn begin_cancel(state: u32) -> (u32, bool) {
        (state | CANCELING, state & PENDING != 0)
    }
    pub fn dequeued(state: u32) -> u32 {
        state & !PENDING
    }
    pub fn end_cancel(state: u32) -> u32 {
        state & !CANCELING
    }

    /// `Work::update`: returns the word before.
    pub fn update(word: &AtomicU32, step: impl Fn(u32) -> u32) -> u32 {
        let mut current = word.load(Ordering::Acquire);
        loop {
            match word.compare_exchange(current, step(current), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return current,
                Err(actual) => current = actual,
            }
        }
    }

    /// Old `queue_on`: CAS, then link on the chosen (caller's) worker.
    pub fn queue_on(world: &World, word: &AtomicU32, worker: WorkerId, last: &AtomicU32) -> bool {
        let before = update(word, |state| queue(state).0);
        if !queue(before).1 {
            return false;
        }
        World::link(&mut world.lists[usize::from(worker)].lock().unwrap());
        last.store(u32::from(worker), Ordering::Release);
        true
    }

    /// Old `worker_main` turn: pop under the lock, then begin_run.
    pub fn work_once(world: &World, word: &AtomicU32, worker: WorkerId) -> bool {
        {
            let mut list = world.lists[usize::from(worker)].lock().unwrap();
            if *list == 0 {
                return false;
            }
            *list -= 1;
        }
        update(word, begin_run);
        world.handler();
        update(word, end_run);
        true
    }

    /// Old `cancel_work_sync`.
    pub fn cancel_sync(world: &World, word: &AtomicU32, last: &AtomicU32) {
        let before = update(word, |state| begin_cancel(state).0);
        if before & PENDING != 0 {
            let worker = last.load(Ordering::Acquire) as usize;
            let mut list = world.lists[worker].lock().unwrap();
            if *list > 0 {
                *list -= 1;
                drop(list);
                update(word, dequeued);
            }
        }
        while word.load(Ordering::Acquire) & RUNNING != 0 {
            spin_loop();
        }
        update(word, end_cancel);
        world.cancel_returned.store(true, Ordering::SeqCst);
    }
}

/// Defect 1 on the old logic: the item runs on A; `queue_on(None, ..)` on
/// B's CPU links it on B; B's worker runs it while A's run is not over.
#[test]
#[should_panic(expected = "a work item ran twice at once")]
fn old_logic_runs_a_work_item_twice_at_once() {
    loom::model(|| {
        let world = Arc::new(World::new());
        let word = Arc::new(AtomicU32::new(old::RUNNING));
        let last = Arc::new(AtomicU32::new(u32::from(A)));
        world.instances.store(1, Ordering::SeqCst);
        let (world_a, word_a) = (world.clone(), word.clone());
        let worker_a = loom::thread::spawn(move || {
            world_a.instances.fetch_sub(1, Ordering::SeqCst);
            old::update(&word_a, old::end_run);
        });
        let (world_b, word_b) = (world.clone(), word.clone());
        let worker_b = loom::thread::spawn(move || {
            old::work_once(&world_b, &word_b, B);
        });
        old::queue_on(&world, &word, B, &last);
        worker_a.join().unwrap();
        worker_b.join().unwrap();
    });
}

/// Defect 2 on the old logic: cancel_work_sync between the worker's pop and
/// its begin_run sees neither a listed nor a running item and returns; the
/// handler runs afterwards.
#[test]
#[should_panic(expected = "the handler ran after cancel_work_sync returned")]
fn old_logic_runs_the_handler_after_cancel_work_sync_returned() {
    loom::model(|| {
        let world = Arc::new(World::new());
        let word = Arc::new(AtomicU32::new(0));
        let last = Arc::new(AtomicU32::new(0));
        assert!(old::queue_on(&world, &word, A, &last));
        let (world_a, word_a) = (world.clone(), word.clone());
        let worker_a = loom::thread::spawn(move || {
            old::work_once(&world_a, &word_a, A);
        });
        old::cancel_sync(&world, &word, &last);
        worker_a.join().unwrap();
    });
}

/// Defect 3 on the old logic (no concurrency needed): delayed work was not
/// pending while its timer was armed, so `queue_work` queued it now and the
/// timer queued it again.
#[test]
#[should_panic(expected = "queue_work on an armed delayed item was accepted")]
fn old_logic_queues_delayed_work_twice() {
    // Old `DelayedWork::arm` set no bit in the work word: it armed the timer.
    let word = 0u32;
    let (_, queued) = old::queue(word);
    assert!(!queued, "queue_work on an armed delayed item was accepted");
}
