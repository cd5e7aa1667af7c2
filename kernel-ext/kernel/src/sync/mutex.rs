//! A sleeping mutex for thread context (it blocks; never use it in
//! interrupt or softirq context — use `IrqSpinLock` there). Waiters are
//! served in FIFO order. It does not do priority inheritance: a real-time
//! thread should not share a mutex with kernel threads on its critical path.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

use crate::thread::{self, WaitError, WaitQueue};

/// A mutual-exclusion lock that puts waiters to sleep.
pub struct Mutex<T: ?Sized> {
    /// Serial of the owning thread (0 = free).
    owner: AtomicU32,
    waiters: WaitQueue,
    value: UnsafeCell<T>,
}

// SAFETY: the owner field serialises access to `value`.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}
// SAFETY: moving the mutex moves the value; no guard can exist then.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}

impl<T> Mutex<T> {
    pub const fn new(value: T) -> Self {
        Self { owner: AtomicU32::new(0), waiters: WaitQueue::new(), value: UnsafeCell::new(value) }
    }
}

impl<T: ?Sized> Mutex<T> {
    fn try_acquire(&self, me: u32) -> bool {
        self.owner.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Takes the lock, sleeping while another thread holds it. Not
    /// interruptible: a stop request does not abandon the wait.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        let me = thread::current_id().serial();
        loop {
            match self.waiters.wait(|| self.try_acquire(me)) {
                Ok(()) => return MutexGuard { mutex: self },
                Err(WaitError::Interrupted | WaitError::Timeout) => {
                    // A pending request makes the wait return at once; spin
                    // politely until the owner releases.
                    if self.try_acquire(me) {
                        return MutexGuard { mutex: self };
                    }
                    thread::yield_cpu();
                }
            }
        }
    }

    /// Takes the lock if it is free now.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.try_acquire(thread::current_id().serial()).then_some(MutexGuard { mutex: self })
    }

    /// Whether some thread holds the lock.
    pub fn is_locked(&self) -> bool {
        self.owner.load(Ordering::Relaxed) != 0
    }
}

/// Proof of holding a [`Mutex`]; releases it when dropped.
pub struct MutexGuard<'a, T: ?Sized> {
    mutex: &'a Mutex<T>,
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves ownership.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves ownership.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.owner.store(0, Ordering::Release);
        self.mutex.waiters.wake_one();
    }
}
