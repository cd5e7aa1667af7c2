//! Spinlocks that are safe across CPUs and with interrupts.
//!
//! [`IrqSpinLock`] disables interrupts on the local CPU while held, so an
//! interrupt handler on the same CPU can never spin on a lock its own CPU
//! holds. Use it for anything an interrupt handler or the scheduler touches.
//! It is a ticket lock: waiters are served in arrival order, so no CPU
//! starves another (bounded wait, which real-time code needs).
//!
//! [`SpinLock`] (`spin_lock` / `spin_lock_bh`) leaves interrupts on: a
//! kernel thread or softirq holding it can be preempted by a real-time
//! thread on the same CPU, which would then spin forever on a holder that
//! cannot run. So a real-time thread may never take one: every such take
//! is counted and, in strict mode (the default), panics, as a heap
//! allocation from an RT thread does (`memory::heap`). RT code shares data
//! with non-RT code through an [`IrqSpinLock`] (the holder cannot be
//! preempted) or the priority-inheriting `Mutex`.

use core::cell::UnsafeCell;
use core::fmt;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use rtedge_arch::cpu;

/// `SpinLock` takes from real-time threads, counted in either mode.
static REALTIME_VIOLATIONS: AtomicU64 = AtomicU64::new(0);
/// Whether such a take panics (true) or is only counted.
static STRICT_REALTIME_CHECK: AtomicBool = AtomicBool::new(true);

/// Catches a real-time thread taking a lock that thread or softirq context
/// may hold on its CPU with interrupts on (see the module comment).
fn check_realtime_context(form: &'static str) {
    if crate::context::in_realtime_thread() && !crate::context::in_interrupt() {
        REALTIME_VIOLATIONS.fetch_add(1, Ordering::Relaxed);
        if STRICT_REALTIME_CHECK.load(Ordering::Relaxed) {
            panic!(
                "{form} from a real-time thread (a spin lock shared with thread context can be held by a thread it preempted; use an IrqSpinLock or the priority-inheriting Mutex)"
            );
        }
    }
}

/// `SpinLock` takes from real-time threads since boot (strict or not).
pub fn realtime_violations() -> u64 {
    REALTIME_VIOLATIONS.load(Ordering::Relaxed)
}

/// Chooses whether an RT thread taking a `SpinLock` panics (default) or is
/// only counted.
pub fn set_strict_realtime_check(strict: bool) {
    STRICT_REALTIME_CHECK.store(strict, Ordering::Relaxed);
}

/// A ticket spinlock that disables interrupts while held.
pub struct IrqSpinLock<T: ?Sized> {
    next_ticket: AtomicU32,
    now_serving: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the lock serialises all access to `value` across CPUs.
unsafe impl<T: ?Sized + Send> Sync for IrqSpinLock<T> {}
// SAFETY: moving the lock moves the value; no CPU can hold a guard then.
unsafe impl<T: ?Sized + Send> Send for IrqSpinLock<T> {}

impl<T> IrqSpinLock<T> {
    pub const fn new(value: T) -> Self {
        Self { next_ticket: AtomicU32::new(0), now_serving: AtomicU32::new(0), value: UnsafeCell::new(value) }
    }
}

impl<T: ?Sized> IrqSpinLock<T> {
    /// Disables interrupts and takes the lock.
    #[inline]
    pub fn lock(&self) -> IrqSpinLockGuard<'_, T> {
        let interrupts_were_enabled = cpu::interrupts_save();
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        while self.now_serving.load(Ordering::Acquire) != ticket {
            cpu::pause();
        }
        IrqSpinLockGuard { lock: self, interrupts_were_enabled }
    }

    /// Takes the lock only if it is free right now.
    pub fn try_lock(&self) -> Option<IrqSpinLockGuard<'_, T>> {
        let interrupts_were_enabled = cpu::interrupts_save();
        let serving = self.now_serving.load(Ordering::Acquire);
        if self
            .next_ticket
            .compare_exchange(serving, serving.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            Some(IrqSpinLockGuard { lock: self, interrupts_were_enabled })
        } else {
            cpu::interrupts_restore(interrupts_were_enabled);
            None
        }
    }

    /// Whether some CPU holds the lock.
    pub fn is_locked(&self) -> bool {
        self.next_ticket.load(Ordering::Relaxed) != self.now_serving.load(Ordering::Relaxed)
    }

    /// Releases the lock without a guard.
    ///
    /// # Safety
    /// Only for the panic path, where the holder will never run again: the
    /// caller must know that no guard of this lock is still in use.
    pub unsafe fn force_unlock(&self) {
        self.now_serving.store(self.next_ticket.load(Ordering::Relaxed), Ordering::Release);
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for IrqSpinLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.try_lock() {
            Some(guard) => f.debug_struct("IrqSpinLock").field("value", &&*guard).finish(),
            None => f.write_str("IrqSpinLock { <locked> }"),
        }
    }
}

/// Proof of holding an [`IrqSpinLock`]; releases it (and restores the
/// interrupt flag) when dropped.
pub struct IrqSpinLockGuard<'a, T: ?Sized> {
    lock: &'a IrqSpinLock<T>,
    interrupts_were_enabled: bool,
}

impl<T: ?Sized> IrqSpinLockGuard<'_, T> {
    /// Whether interrupts were enabled when the lock was taken.
    pub fn interrupts_were_enabled(&self) -> bool {
        self.interrupts_were_enabled
    }
}

impl<T: ?Sized> Deref for IrqSpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T: ?Sized> DerefMut for IrqSpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T: ?Sized> Drop for IrqSpinLockGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.now_serving.fetch_add(1, Ordering::Release);
        cpu::interrupts_restore(self.interrupts_were_enabled);
    }
}

/// A ticket spinlock that leaves interrupts alone, for data shared only
/// between threads and softirqs: take it with [`SpinLock::lock_bh`] from
/// thread context (bottom halves off on this CPU) and with
/// [`SpinLock::lock`] inside softirq handlers (`spin_lock_bh` /
/// `spin_lock`). Never touch it from a hard-IRQ handler.
pub struct SpinLock<T: ?Sized> {
    next_ticket: AtomicU32,
    now_serving: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the lock serialises all access to `value` across CPUs.
unsafe impl<T: ?Sized + Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the value; no guard can exist then.
unsafe impl<T: ?Sized + Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub const fn new(value: T) -> Self {
        Self { next_ticket: AtomicU32::new(0), now_serving: AtomicU32::new(0), value: UnsafeCell::new(value) }
    }
}

impl<T: ?Sized> SpinLock<T> {
    /// Takes the lock (in softirq context, or where bottom halves are off).
    /// Never from a real-time thread (caught in strict mode).
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        check_realtime_context("spin_lock");
        self.acquire()
    }

    fn acquire(&self) -> SpinLockGuard<'_, T> {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        while self.now_serving.load(Ordering::Acquire) != ticket {
            cpu::pause();
        }
        SpinLockGuard { lock: self, _bottom_halves: None }
    }

    /// `spin_lock_bh`: disables bottom halves on this CPU, then takes the
    /// lock; both are undone when the guard drops (pending softirqs then run).
    /// Never from a real-time thread (caught in strict mode).
    pub fn lock_bh(&self) -> SpinLockGuard<'_, T> {
        check_realtime_context("spin_lock_bh");
        let bottom_halves = crate::softirq::bh_disable();
        let mut guard = self.acquire();
        guard._bottom_halves = Some(bottom_halves);
        guard
    }
}

/// Proof of holding a [`SpinLock`].
pub struct SpinLockGuard<'a, T: ?Sized> {
    lock: &'a SpinLock<T>,
    // Dropped after the unlock in `drop` (fields drop after the body).
    _bottom_halves: Option<crate::softirq::BottomHalfGuard>,
}

impl<T: ?Sized> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T: ?Sized> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T: ?Sized> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.now_serving.fetch_add(1, Ordering::Release);
    }
}
