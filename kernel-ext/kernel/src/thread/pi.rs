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

use core::sync::atomic::{AtomicU64, Ordering};

use rtedge_arch::cpu;
use rtedge_engine::pi::{self, Level, LockGraph, Propagation};

use super::scheduler::{self, current};
use super::{get, pack, unpack, Kind, State, Thread, WaitQueue, KIND_KERNEL, KIND_REALTIME, TABLE};
use crate::context;
use crate::sync::IrqSpinLock;

/// Serialises inheritance: mutex ownership changes while waiters exist,
/// waiters arriving, `blocked_on` and `effective` of every thread. Lock
/// order: taken before wait-queue lists, the thread table and run queues.
static INHERITANCE: IrqSpinLock<()> = IrqSpinLock::new(());

/// Set in the owner word while threads wait: the owner's fast unlock then
/// fails and it hands the mutex over under [`INHERITANCE`].
const HAS_WAITERS: u64 = 1 << 63;

/// A sleeping lock with priority inheritance (the raw lock of
/// `sync::Mutex`). Threads only: never from interrupt or softirq context.
#[derive(Debug)]
pub struct RtMutex {
    /// The owner (its packed id; 0 = free), with [`HAS_WAITERS`] while
    /// threads wait. With the bit set only [`INHERITANCE`] holders change it.
    owner: AtomicU64,
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
        Self { owner: AtomicU64::new(0), waiters: WaitQueue::new() }
    }

    fn address(&self) -> usize {
        self as *const RtMutex as usize
    }

    /// Takes the lock, sleeping while another thread holds it and lending
    /// that thread (and the chain behind it) this thread's level. Not
    /// interruptible: a stop or cancel request does not abandon the wait
    /// (POSIX: `pthread_mutex_lock` is not a cancellation point).
    pub fn lock(&self) {
        assert!(
            !context::in_interrupt() && !crate::softirq::in_softirq(),
            "mutex locked from interrupt or softirq context"
        );
        let thread = current();
        let me = pack(thread.id());
        if self.owner.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            return;
        }
        self.lock_slow(thread, me);
    }

    fn lock_slow(&self, thread: &'static Thread, me: u64) {
        loop {
            // Interrupts stay off from the state change to the switch (as
            // in `WaitQueue::wait_until`).
            let interrupts_were_enabled = cpu::interrupts_save();
            let guard = INHERITANCE.lock();
            let word = self.owner.load(Ordering::Acquire);
            if word & !HAS_WAITERS == me {
                // Handed over by the unlocker, which took this thread off
                // the queue and cleared `blocked_on`.
                drop(guard);
                cpu::interrupts_restore(interrupts_were_enabled);
                return;
            }
            let block = if word == 0 {
                if self.owner.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    drop(guard);
                    cpu::interrupts_restore(interrupts_were_enabled);
                    return;
                }
                false
            } else {
                // Marking the waiters bit fails if the owner's fast unlock
                // came first: then look again.
                word & HAS_WAITERS != 0
                    || self.owner.compare_exchange(word, word | HAS_WAITERS, Ordering::Acquire, Ordering::Relaxed).is_ok()
            };
            if block {
                if thread.blocked_on.load(Ordering::Relaxed) != self.address() {
                    thread.blocked_on.store(self.address(), Ordering::Release);
                    self.waiters.insert(thread);
                    if let Some(owner) = unpack(word & !HAS_WAITERS).and_then(get) {
                        pi::propagate(&mut Graph, Node(owner));
                    }
                }
                // A cancel or stop request wakes this thread out of Blocked;
                // it comes back here and sleeps again (it spins on nothing).
                thread.set_state(State::Blocked);
            }
            drop(guard);
            if block {
                scheduler::block_current(thread, None);
            }
            cpu::interrupts_restore(interrupts_were_enabled);
        }
    }

    /// Takes the lock if it is free now.
    pub fn try_lock(&self) -> bool {
        let me = pack(current().id());
        self.owner.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Releases the lock: hands it to the most urgent waiter, if any, and
    /// drops whatever this thread inherited through it (it may then be
    /// preempted at once). Only the owner may call it (`MutexGuard` does).
    pub fn unlock(&self) {
        let thread = current();
        let me = pack(thread.id());
        if self.owner.compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed).is_ok() {
            return;
        }
        let interrupts_were_enabled = cpu::interrupts_save();
        {
            let _guard = INHERITANCE.lock();
            debug_assert_eq!(self.owner.load(Ordering::Relaxed) & !HAS_WAITERS, me, "mutex unlocked by a thread that does not own it");
            match self.waiters.take_first() {
                Some(next) => {
                    let more = if self.waiters.waiters() > 0 { HAS_WAITERS } else { 0 };
                    next.blocked_on.store(0, Ordering::Release);
                    self.owner.store(pack(next.id()) | more, Ordering::Release);
                    // The new owner inherits from the waiters left behind.
                    pi::propagate(&mut Graph, Node(next));
                    scheduler::wake_blocked(next);
                }
                None => self.owner.store(0, Ordering::Release),
            }
            pi::propagate(&mut Graph, Node(thread));
        }
        cpu::interrupts_restore(interrupts_were_enabled);
        scheduler::preempt_if_needed();
    }

    /// Whether some thread holds the lock.
    pub fn is_locked(&self) -> bool {
        self.owner.load(Ordering::Relaxed) != 0
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
            if mutex.owner.load(Ordering::Relaxed) & !HAS_WAITERS == owner {
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
        unpack(mutex.owner.load(Ordering::Relaxed) & !HAS_WAITERS).and_then(get).map(Node)
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
