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
use core::panic::Location;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use rtedge_arch::cpu;

/// `SpinLock` takes from real-time threads, counted in either mode.
static REALTIME_VIOLATIONS: AtomicU64 = AtomicU64::new(0);
/// Whether such a take panics (true) or is only counted.
static STRICT_REALTIME_CHECK: AtomicBool = AtomicBool::new(true);

/// Catches a real-time thread taking a lock that thread or softirq context
/// may hold on its CPU with interrupts on (see the module comment).
pub(crate) fn check_realtime_context(form: &'static str) {
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

/// The longest interrupts-off section an [`IrqSpinLock`] made (taken with
/// interrupts on, released re-enabling them), in TSC cycles, and where it
/// was taken; and the longest wait to take one. Measured since the last
/// [`reset_irqs_off`]: a real-time thread's wake-up waits for the section
/// its CPU is in, so these bound what locks cost its release latency.
static IRQS_OFF_MAX_CYCLES: AtomicU64 = AtomicU64::new(0);
static IRQS_OFF_MAX_SITE: AtomicPtr<Location<'static>> = AtomicPtr::new(core::ptr::null_mut());
/// Interrupts-off sections longer than [`LONG_SECTION_NS`].
static IRQS_OFF_LONG: AtomicU64 = AtomicU64::new(0);
static SPIN_MAX_CYCLES: AtomicU64 = AtomicU64::new(0);
static SPIN_MAX_SITE: AtomicPtr<Location<'static>> = AtomicPtr::new(core::ptr::null_mut());
/// A section this long counts as long (a tenth of the 1 ms RT period).
pub const LONG_SECTION_NS: u64 = 100_000;
/// Whether sections are timed (command line `irqsoff=1`; off by default:
/// two TSC reads per lock slow every lock, most under uhyve).
static TIMING: AtomicBool = AtomicBool::new(false);

/// Turns the timing of interrupts-off sections and lock spins on or off.
pub fn set_irqs_off_timing(on: bool) {
    TIMING.store(on, Ordering::Relaxed);
}

/// Whether interrupts-off sections are timed.
pub fn irqs_off_timing() -> bool {
    TIMING.load(Ordering::Relaxed)
}

/// The interrupts-off figures of [`IrqSpinLock`]s since the last reset.
#[derive(Clone, Copy, Debug)]
pub struct IrqsOffReport {
    /// Longest section held with interrupts off, and where it was taken.
    pub longest_ns: u64,
    pub longest_site: Option<&'static Location<'static>>,
    /// Sections longer than [`LONG_SECTION_NS`].
    pub long_sections: u64,
    /// Longest wait to take a lock (spinning, interrupts off), and where.
    pub longest_spin_ns: u64,
    pub longest_spin_site: Option<&'static Location<'static>>,
}

fn site(pointer: *mut Location<'static>) -> Option<&'static Location<'static>> {
    // SAFETY: only `&'static Location`s from `Location::caller` are stored.
    unsafe { pointer.cast_const().as_ref() }
}

/// The figures since the last [`reset_irqs_off`].
pub fn irqs_off_report() -> IrqsOffReport {
    IrqsOffReport {
        longest_ns: crate::time::cycles_to_ns(IRQS_OFF_MAX_CYCLES.load(Ordering::Relaxed)),
        longest_site: site(IRQS_OFF_MAX_SITE.load(Ordering::Relaxed)),
        long_sections: IRQS_OFF_LONG.load(Ordering::Relaxed),
        longest_spin_ns: crate::time::cycles_to_ns(SPIN_MAX_CYCLES.load(Ordering::Relaxed)),
        longest_spin_site: site(SPIN_MAX_SITE.load(Ordering::Relaxed)),
    }
}

/// Starts a new measuring window.
pub fn reset_irqs_off() {
    IRQS_OFF_MAX_CYCLES.store(0, Ordering::Relaxed);
    IRQS_OFF_MAX_SITE.store(core::ptr::null_mut(), Ordering::Relaxed);
    IRQS_OFF_LONG.store(0, Ordering::Relaxed);
    SPIN_MAX_CYCLES.store(0, Ordering::Relaxed);
    SPIN_MAX_SITE.store(core::ptr::null_mut(), Ordering::Relaxed);
}

/// Keeps the longest `cycles` and its site (the pair may mix two
/// concurrent records: a figure, not a proof).
fn record_max(max: &AtomicU64, max_site: &AtomicPtr<Location<'static>>, cycles: u64, location: &'static Location<'static>) {
    if cycles > max.load(Ordering::Relaxed) && max.fetch_max(cycles, Ordering::Relaxed) < cycles {
        max_site.store((location as *const Location<'static>).cast_mut(), Ordering::Relaxed);
    }
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
    #[track_caller]
    pub fn lock(&self) -> IrqSpinLockGuard<'_, T> {
        let location = Location::caller();
        let interrupts_were_enabled = cpu::interrupts_save();
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        if self.now_serving.load(Ordering::Acquire) != ticket && TIMING.load(Ordering::Relaxed) {
            let spin_start = cpu::rdtsc();
            while self.now_serving.load(Ordering::Acquire) != ticket {
                cpu::pause();
            }
            record_max(&SPIN_MAX_CYCLES, &SPIN_MAX_SITE, cpu::rdtsc().wrapping_sub(spin_start), location);
        }
        while self.now_serving.load(Ordering::Acquire) != ticket {
            cpu::pause();
        }
        IrqSpinLockGuard { lock: self, interrupts_were_enabled, taken_tsc: Self::section_start(interrupts_were_enabled), location }
    }

    /// When an interrupts-off section begins (0: it began earlier).
    #[inline]
    fn section_start(interrupts_were_enabled: bool) -> u64 {
        if interrupts_were_enabled && TIMING.load(Ordering::Relaxed) { cpu::rdtsc() } else { 0 }
    }

    /// Takes the lock only if it is free right now.
    #[track_caller]
    pub fn try_lock(&self) -> Option<IrqSpinLockGuard<'_, T>> {
        let location = Location::caller();
        let interrupts_were_enabled = cpu::interrupts_save();
        let serving = self.now_serving.load(Ordering::Acquire);
        if self.next_ticket.compare_exchange(serving, serving.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed).is_ok() {
            Some(IrqSpinLockGuard {
                lock: self,
                interrupts_were_enabled,
                taken_tsc: Self::section_start(interrupts_were_enabled),
                location,
            })
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
    /// TSC when this guard turned interrupts off (0: they were off already).
    taken_tsc: u64,
    location: &'static Location<'static>,
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
        if self.taken_tsc != 0 {
            let cycles = cpu::rdtsc().wrapping_sub(self.taken_tsc);
            record_max(&IRQS_OFF_MAX_CYCLES, &IRQS_OFF_MAX_SITE, cycles, self.location);
            if crate::time::cycles_to_ns(cycles) > LONG_SECTION_NS {
                IRQS_OFF_LONG.fetch_add(1, Ordering::Relaxed);
            }
        }
        cpu::interrupts_restore(self.interrupts_were_enabled);
    }
}

/// A ticket spinlock that leaves interrupts alone, for data shared only
/// between threads and softirqs: take it with `lock_bh` (defined beside
/// the bottom halves, in `softirq`) from thread context (bottom halves off
/// on this CPU) and with
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

    /// Takes the lock without the real-time check (`softirq`'s `lock_bh`
    /// made it already).
    pub(crate) fn acquire(&self) -> SpinLockGuard<'_, T> {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        while self.now_serving.load(Ordering::Acquire) != ticket {
            cpu::pause();
        }
        SpinLockGuard { lock: self }
    }
}

/// Proof of holding a [`SpinLock`].
pub struct SpinLockGuard<'a, T: ?Sized> {
    lock: &'a SpinLock<T>,
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
