//! Priority-inheriting mutexes (Linux's rt_mutex) and run-time priority
//! change: the kernel half of `rtedge_engine::pi`.
//!
//! The owner of an [`RtMutex`] runs at the level of its most urgent waiter
//! until it unlocks, chains are followed, waiters get the mutex most urgent
//! first (the unlocker hands it straight to the head of the queue), and a
//! waiter sleeps until it owns the mutex whatever requests arrive meanwhile
//! (a cancel or stop wakes it once; it goes back to sleep, so a cancelled
//! real-time waiter never spins on its CPU while a lower owner needs it).
//!
//! Every inheritance decision is taken under one lock, [`INHERITANCE`]
//! (Linux takes a lock per mutex and per task; one lock is simpler and
//! enough for a handful of CPUs). The uncontended lock and unlock are one
//! compare-exchange each and never take it.

use core::sync::atomic::Ordering;

use rtedge_arch::cpu;
use rtedge_engine::pi::{self, Arrival, Level, LockGraph, OwnerWord, Propagation};

use super::scheduler::{self, current};
use super::{KIND_KERNEL, KIND_REALTIME, Kind, State, TABLE, Thread, WaitQueue, get, pack, unpack};
use crate::context;
use crate::sync::IrqSpinLock;

/// Serialises inheritance: mutex ownership changes while waiters exist,
/// waiters arriving, `blocked_on` and `effective` of every thread. Lock
/// order: taken before wait-queue lists, the thread table and run queues.
static INHERITANCE: IrqSpinLock<()> = IrqSpinLock::new(());

/// A sleeping lock with priority inheritance (the raw lock of
/// `thread::Mutex`). Threads only: never from interrupt or softirq context.
#[derive(Debug)]
pub struct RtMutex {
    /// The owner (its packed id; 0 = free) and whether threads wait
    /// (`rtedge_engine::pi::OwnerWord`: with waiters, only [`INHERITANCE`]
    /// holders change it).
    owner: OwnerWord,
    /// The waiters, most urgent first; changed under [`INHERITANCE`].
    waiters: WaitQueue,
}

impl Default for RtMutex {
    fn default() -> Self {
        Self::new()
    }
}

impl RtMutex {
    pub const fn new() -> Self {
        Self { owner: OwnerWord::new(), waiters: WaitQueue::new() }
    }

    fn address(&self) -> usize {
        self as *const RtMutex as usize
    }

    /// Takes the lock, sleeping while another thread holds it and lending
    /// that thread (and the chain behind it) this thread's level. Not
    /// interruptible: a stop or cancel request does not abandon the wait
    /// (POSIX: `pthread_mutex_lock` is not a cancellation point).
    pub fn lock(&self) {
        let thread = current();
        let me = pack(thread.id());
        if self.owner.try_lock(me) {
            return;
        }
        self.lock_slow(thread, me);
    }

    fn lock_slow(&self, thread: &'static Thread, me: u64) {
        assert!(!context::in_interrupt() && !crate::softirq::in_softirq(), "blocking on a mutex from interrupt or softirq context");
        loop {
            // Interrupts stay off from the state change to the switch (as
            // in `WaitQueue::wait_until`).
            let interrupts_were_enabled = cpu::interrupts_save();
            let guard = INHERITANCE.lock();
            let block = match self.owner.arrive(me) {
                // Taken now, or handed over by the unlocker, which took this
                // thread off the queue and cleared `blocked_on`.
                Arrival::Owned => {
                    drop(guard);
                    cpu::interrupts_restore(interrupts_were_enabled);
                    return;
                }
                Arrival::Retry => None,
                Arrival::Wait { owner } => Some(owner),
            };
            if let Some(owner) = block {
                if thread.blocked_on.load(Ordering::Relaxed) != self.address() {
                    thread.blocked_on.store(self.address(), Ordering::Release);
                    self.waiters.insert(thread);
                    if let Some(owner) = unpack(owner).and_then(get) {
                        pi::propagate(&mut Graph, Node(owner));
                    }
                }
                // A cancel or stop request wakes this thread out of Blocked;
                // it comes back here and sleeps again (it spins on nothing).
                thread.set_state(State::Blocked);
            }
            drop(guard);
            if block.is_some() {
                scheduler::block_current(thread, None);
            }
            cpu::interrupts_restore(interrupts_were_enabled);
        }
    }

    /// Takes the lock if it is free now.
    pub fn try_lock(&self) -> bool {
        self.owner.try_lock(pack(current().id()))
    }

    /// Releases the lock: hands it to the most urgent waiter, if any, and
    /// drops whatever this thread inherited through it (it may then be
    /// preempted at once). Only the owner may call it (`MutexGuard` does).
    pub fn unlock(&self) {
        let thread = current();
        let me = pack(thread.id());
        if self.owner.unlock_fast(me) {
            return;
        }
        let interrupts_were_enabled = cpu::interrupts_save();
        {
            let _guard = INHERITANCE.lock();
            debug_assert_eq!(self.owner.owner(), Some(me), "mutex unlocked by a thread that does not own it");
            match self.waiters.take_first() {
                Some(next) => {
                    next.blocked_on.store(0, Ordering::Release);
                    self.owner.hand_over(Some(pack(next.id())), self.waiters.waiters() > 0);
                    // The new owner inherits from the waiters left behind.
                    pi::propagate(&mut Graph, Node(next));
                    scheduler::wake_blocked(next);
                }
                None => self.owner.hand_over(None, false),
            }
            pi::propagate(&mut Graph, Node(thread));
        }
        cpu::interrupts_restore(interrupts_were_enabled);
        scheduler::preempt_if_needed();
    }

    /// Whether some thread holds the lock.
    pub fn is_locked(&self) -> bool {
        self.owner.owner().is_some()
    }

    /// Threads waiting for the lock.
    pub fn waiters(&self) -> usize {
        self.waiters.waiters()
    }
}

/// Changes `thread`'s class and priority (pthread_setschedparam) and applies
/// it at once: the new level goes along the chain of mutex owners it waits
/// on, and the scheduler re-queues it (a raised thread preempts, a lowered
/// running one gives way to a more urgent ready one).
pub(super) fn change_kind(thread: &'static Thread, kind: Kind) {
    let interrupts_were_enabled = cpu::interrupts_save();
    {
        let _guard = INHERITANCE.lock();
        match kind {
            Kind::Realtime { priority } => {
                thread.priority.store(priority, Ordering::Relaxed);
                thread.kind_tag.store(KIND_REALTIME, Ordering::Release);
            }
            Kind::Kernel { nice } => {
                thread.nice.store(nice, Ordering::Relaxed);
                thread.weight.store(rtedge_engine::sched::weight_for_nice(nice), Ordering::Relaxed);
                thread.kind_tag.store(KIND_KERNEL, Ordering::Release);
            }
            Kind::Idle => {}
        }
        // Unchanged level (a new nice value, or a change hidden by an
        // inherited level): the scheduler still takes the new class.
        if pi::propagate(&mut Graph, Node(thread)) == (Propagation::Settled { steps: 0 }) {
            scheduler::reprioritize(thread);
        }
    }
    cpu::interrupts_restore(interrupts_were_enabled);
    scheduler::preempt_if_needed();
}

/// A thread as a node of the lock graph (compared by address).
#[derive(Clone, Copy)]
struct Node(&'static Thread);

impl PartialEq for Node {
    fn eq(&self, other: &Self) -> bool {
        core::ptr::eq(self.0, other.0)
    }
}

impl Eq for Node {}

/// The mutex a `blocked_on` address names.
///
/// # Safety
/// `address` must come from a thread's `blocked_on`, read under
/// [`INHERITANCE`]: that thread is then inside `RtMutex::lock` on it, which
/// borrows the mutex, so it is live and does not move.
unsafe fn mutex_at(address: usize) -> &'static RtMutex {
    // SAFETY: per the caller; the reference is used only under INHERITANCE.
    unsafe { &*(address as *const RtMutex) }
}

/// The kernel's threads and mutexes as `rtedge_engine::pi` sees them; used
/// only under [`INHERITANCE`].
struct Graph;

impl LockGraph for Graph {
    type Thread = Node;
    type Lock = usize;

    fn base_level(&self, thread: Node) -> Level {
        thread.0.base_level()
    }

    fn current_level(&self, thread: Node) -> Level {
        thread.0.level()
    }

    fn for_each_waiter(&self, owner: Node, visit: &mut dyn FnMut(Level)) {
        let owner = pack(owner.0.id());
        let table = TABLE.lock();
        for thread in table.threads.iter().flatten() {
            let address = thread.blocked_on.load(Ordering::Acquire);
            if address == 0 {
                continue;
            }
            // SAFETY: read under INHERITANCE (the graph is used only there).
            let mutex = unsafe { mutex_at(address) };
            if mutex.owner.owner() == Some(owner) {
                visit(thread.level());
            }
        }
    }

    fn blocked_on(&self, thread: Node) -> Option<usize> {
        let address = thread.0.blocked_on.load(Ordering::Acquire);
        (address != 0).then_some(address)
    }

    fn owner(&self, lock: usize) -> Option<Node> {
        // SAFETY: `lock` came from `blocked_on`, under INHERITANCE.
        let mutex = unsafe { mutex_at(lock) };
        mutex.owner.owner().and_then(unpack).and_then(get).map(Node)
    }

    fn apply(&mut self, thread: Node, level: Level) {
        thread.0.effective.store(level.encode(), Ordering::Release);
        if let Some(lock) = self.blocked_on(thread) {
            // SAFETY: as in `owner`.
            let mutex = unsafe { mutex_at(lock) };
            if mutex.waiters.unlink(thread.0) {
                mutex.waiters.insert(thread.0);
            }
        }
        scheduler::reprioritize(thread.0);
    }
}
