//! Wait queues: threads sleeping until a condition holds, woken most
//! urgent first and FIFO within a level (`rtedge_engine::pi`: a real-time
//! waiter of a higher priority first, kernel threads after every real-time
//! one). A waiter's place is fixed when it queues, by the level it runs at
//! then (inherited included). The list is intrusive (a link in each thread's control block), so
//! waking never allocates and works from interrupts, softirqs and RT
//! threads. The condition is checked under the queue's lock, and wakers
//! take that lock after changing what the condition reads, so no wake-up is
//! ever lost between the check and the sleep.

use core::sync::atomic::{Ordering, fence};

use rtedge_engine::pi::{self, Level, WaiterList};

use super::scheduler::{self, current};
use super::{State, Thread, by_slot};
use crate::context;
use crate::sync::IrqSpinLock;
use crate::time;

/// "No thread" in the intrusive links.
pub(super) const NONE: u16 = u16::MAX;

/// Why a wait ended without its condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitError {
    /// The deadline passed.
    Timeout,
    /// A stop or cancellation request arrived.
    Interrupted,
}

impl core::fmt::Display for WaitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            WaitError::Timeout => "timed out",
            WaitError::Interrupted => "interrupted by a stop or cancel request",
        })
    }
}

#[derive(Debug)]
struct List {
    head: u16,
    tail: u16,
    count: usize,
}

/// The links of the threads on one list, for the engine's ordering rule.
struct Links;

impl WaiterList for Links {
    type Waiter = u16;
    fn next(&self, waiter: u16) -> Option<u16> {
        let next = by_slot(waiter)?.wait_next.load(Ordering::Relaxed);
        (next != NONE).then_some(next)
    }
    fn level(&self, waiter: u16) -> Level {
        by_slot(waiter).map_or(Level::Fair, Thread::level)
    }
}

impl List {
    /// Queues `thread` behind every waiter at least as urgent.
    fn push(&mut self, thread: &Thread) {
        let head = (self.head != NONE).then_some(self.head);
        let after = pi::insert_after(&Links, head, thread.level());
        match after.and_then(by_slot) {
            None => {
                thread.wait_next.store(self.head, Ordering::Relaxed);
                self.head = thread.slot;
                if self.tail == NONE {
                    self.tail = thread.slot;
                }
            }
            Some(previous) => {
                let next = previous.wait_next.load(Ordering::Relaxed);
                thread.wait_next.store(next, Ordering::Relaxed);
                previous.wait_next.store(thread.slot, Ordering::Relaxed);
                if next == NONE {
                    self.tail = thread.slot;
                }
            }
        }
        self.count += 1;
    }

    fn pop(&mut self) -> Option<&'static Thread> {
        if self.head == NONE {
            return None;
        }
        let thread = by_slot(self.head)?;
        self.head = thread.wait_next.swap(NONE, Ordering::Relaxed);
        if self.head == NONE {
            self.tail = NONE;
        }
        self.count -= 1;
        Some(thread)
    }

    fn remove(&mut self, slot: u16) -> bool {
        let mut previous = NONE;
        let mut cursor = self.head;
        while cursor != NONE {
            let Some(thread) = by_slot(cursor) else { return false };
            let next = thread.wait_next.load(Ordering::Relaxed);
            if cursor == slot {
                if previous == NONE {
                    self.head = next;
                } else if let Some(previous) = by_slot(previous) {
                    previous.wait_next.store(next, Ordering::Relaxed);
                }
                if self.tail == slot {
                    self.tail = previous;
                }
                thread.wait_next.store(NONE, Ordering::Relaxed);
                self.count -= 1;
                return true;
            }
            previous = cursor;
            cursor = next;
        }
        false
    }
}

/// A queue of threads waiting for something.
#[derive(Debug)]
pub struct WaitQueue {
    list: IrqSpinLock<List>,
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitQueue {
    pub const fn new() -> Self {
        Self { list: IrqSpinLock::new(List { head: NONE, tail: NONE, count: 0 }) }
    }

    /// Waits until `condition` holds (it runs under the queue lock, so it
    /// may also consume what it finds, e.g. a semaphore count), the clock
    /// passes `deadline_ns`, or a stop/cancel request arrives. Only threads
    /// may wait; interrupt and softirq context may not.
    pub fn wait_until(&self, deadline_ns: Option<u64>, mut condition: impl FnMut() -> bool) -> Result<(), WaitError> {
        assert!(!context::in_interrupt() && !crate::softirq::in_softirq(), "blocking wait from interrupt or softirq context");
        let thread = current();
        loop {
            // Interrupts stay off from the state change to the switch: an
            // interrupt in between would run softirqs (and maybe preempt)
            // on a thread that is half-way to sleep, and the timeout alarm
            // would not be armed yet.
            let interrupts_were_enabled = rtedge_arch::cpu::interrupts_save();
            let verdict = {
                let mut list = self.list.lock();
                if condition() {
                    Some(Ok(()))
                } else if thread.interrupted() {
                    Some(Err(WaitError::Interrupted))
                } else if deadline_ns.is_some_and(|deadline| time::now_ns() >= deadline) {
                    Some(Err(WaitError::Timeout))
                } else {
                    list.push(thread);
                    thread.set_state(State::Blocked);
                    // A cancel or stop request between the check above and
                    // the state change found this thread still running and
                    // woke nobody: look again (the fence pairs with theirs).
                    // If the request did see Blocked it woke (and queued)
                    // the thread, and the switch below finds it Ready.
                    fence(Ordering::SeqCst);
                    if thread.interrupted() && thread.transition(State::Blocked, State::Running) {
                        list.remove(thread.slot);
                        Some(Err(WaitError::Interrupted))
                    } else {
                        None
                    }
                }
            };
            if let Some(verdict) = verdict {
                rtedge_arch::cpu::interrupts_restore(interrupts_were_enabled);
                return verdict;
            }
            scheduler::block_current(thread, deadline_ns);
            rtedge_arch::cpu::interrupts_restore(interrupts_were_enabled);
            // Woken by a signal, the timeout or a request: leave the list if
            // still on it, then re-check.
            self.list.lock().remove(thread.slot);
        }
    }

    /// Waits for the condition with no deadline.
    pub fn wait(&self, condition: impl FnMut() -> bool) -> Result<(), WaitError> {
        self.wait_until(None, condition)
    }

    /// Wakes the most urgent waiter (the longest-waiting among equals).
    /// Returns whether one was woken.
    pub fn wake_one(&self) -> bool {
        let mut list = self.list.lock();
        while let Some(thread) = list.pop() {
            if scheduler::wake_blocked(thread) {
                return true;
            }
        }
        false
    }

    /// Wakes every waiter. Returns how many.
    pub fn wake_all(&self) -> usize {
        let mut list = self.list.lock();
        let mut woken = 0;
        while let Some(thread) = list.pop() {
            if scheduler::wake_blocked(thread) {
                woken += 1;
            }
        }
        woken
    }

    /// Number of threads waiting.
    pub fn waiters(&self) -> usize {
        self.list.lock().count
    }

    /// Queues `thread` by its level without blocking it (the caller blocks
    /// it; `RtMutex`, under the inheritance lock).
    pub(super) fn insert(&self, thread: &Thread) {
        self.list.lock().push(thread);
    }

    /// Takes the most urgent waiter off the queue without waking it.
    pub(super) fn take_first(&self) -> Option<&'static Thread> {
        self.list.lock().pop()
    }

    /// Takes `thread` off the queue. Returns whether it was on it.
    pub(super) fn unlink(&self, thread: &Thread) -> bool {
        self.list.lock().remove(thread.slot)
    }
}
