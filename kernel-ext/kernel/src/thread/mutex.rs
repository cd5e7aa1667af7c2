//! A sleeping mutex for thread context (it blocks; never use it in
//! interrupt or softirq context — use `IrqSpinLock` there), with priority
//! inheritance (an rt_mutex, `thread::RtMutex`): the owner runs at the
//! level of its most urgent waiter until it unlocks, chains of owners are
//! followed, and waiters get it most urgent first (FIFO within a level). It
//! is the one sleeping lock a real-time thread may share with kernel
//! threads.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

use super::pi::RtMutex;

/// A mutual-exclusion lock that puts waiters to sleep and lends their
/// priority to its owner.
pub struct Mutex<T: ?Sized> {
    raw: RtMutex,
    value: UnsafeCell<T>,
}

// SAFETY: the raw lock serialises access to `value`.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}
// SAFETY: moving the mutex moves the value; no guard can exist then.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}

impl<T> Mutex<T> {
    pub const fn new(value: T) -> Self {
        Self { raw: RtMutex::new(), value: UnsafeCell::new(value) }
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Takes the lock, sleeping while another thread holds it (which runs
    /// at this thread's level meanwhile if that is higher). Not
    /// interruptible: a stop or cancel request does not abandon the wait.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.raw.lock();
        MutexGuard { mutex: self, _not_send: PhantomData }
    }

    /// Takes the lock if it is free now.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.raw.try_lock().then_some(MutexGuard { mutex: self, _not_send: PhantomData })
    }

    /// Whether some thread holds the lock.
    pub fn is_locked(&self) -> bool {
        self.raw.is_locked()
    }

    /// Threads waiting for the lock.
    pub fn waiters(&self) -> usize {
        self.raw.waiters()
    }
}

/// Proof of holding a [`Mutex`]; releases it when dropped. Not `Send`:
/// only the owning thread may unlock.
pub struct MutexGuard<'a, T: ?Sized> {
    mutex: &'a Mutex<T>,
    _not_send: PhantomData<*const ()>,
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
        self.mutex.raw.unlock();
    }
}
