//! A counting semaphore (down/up), the sleeping lock of the seeds' kernel
//! thread pattern. `up` is safe from any context and never allocates or
//! blocks; `down` blocks and is for threads only. `up` wakes the most
//! urgent waiter (FIFO among equals). There is no inheritance: a semaphore
//! has no owner to lend a priority to (use `Mutex` for mutual exclusion).

use core::sync::atomic::{AtomicU64, Ordering};

use super::wait::{WaitError, WaitQueue};
use crate::time;

/// A counting semaphore.
#[derive(Debug)]
pub struct Semaphore {
    count: AtomicU64,
    waiters: WaitQueue,
}

impl Semaphore {
    pub const fn new(count: u64) -> Self {
        Self { count: AtomicU64::new(count), waiters: WaitQueue::new() }
    }

    fn try_take(&self) -> bool {
        self.count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| count.checked_sub(1)).is_ok()
    }

    /// Takes one unit, sleeping until one is available. Returns
    /// `Interrupted` if the thread is asked to stop or cancel meanwhile.
    pub fn down(&self) -> Result<(), WaitError> {
        self.waiters.wait(|| self.try_take())
    }

    /// As [`down`](Self::down), giving up after `timeout_ns`.
    pub fn down_timeout(&self, timeout_ns: u64) -> Result<(), WaitError> {
        self.waiters.wait_until(Some(time::now_ns().saturating_add(timeout_ns)), || self.try_take())
    }

    /// Takes one unit if available right now.
    pub fn try_down(&self) -> bool {
        self.try_take()
    }

    /// Releases one unit and wakes a waiter. Safe from any context.
    pub fn up(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.waiters.wake_one();
    }

    /// Units available now.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Threads waiting.
    pub fn waiters(&self) -> usize {
        self.waiters.waiters()
    }
}
