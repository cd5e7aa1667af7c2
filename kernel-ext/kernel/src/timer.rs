//! Kernel timers and high-resolution timers.
//!
//! - [`Timer`]: expiry in `jiffies` (HZ = 1000); `modify` arms or re-arms it
//!   (mod_timer), `delete` disarms it, `delete_sync` also waits until its
//!   callback is not running anywhere. Callbacks run in TIMER softirq
//!   context.
//! - [`HrTimer`]: expiry in nanoseconds on the monotonic clock, relative or
//!   absolute; the callback returns [`Restart`] and may [`forward`] the
//!   expiry by an interval (periodic hrtimers); `cancel` waits for a running
//!   callback. Callbacks run in HRTIMER softirq context.
//!
//! Each CPU has one base per kind (`rtedge_engine::timers::TimerBase`), and
//! one local-timer alarm per base armed for its earliest expiry: tickless,
//! no interrupt when nothing is due. Arming and deleting never allocate; the
//! first arm registers the timer (which may allocate) unless `setup` did.
//!
//! [`forward`]: HrTimer::forward

use core::marker::PhantomPinned;
use core::pin::Pin;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use rtedge_engine::clock::{jiffies_to_ns, ns_to_jiffies};
use rtedge_engine::timerqueue::TimerId;
use rtedge_engine::timers::{self, TimerBase};

use crate::clockevent::{self, AlarmId};
use crate::cpu_local::{self, MAX_CPUS};
use crate::softirq::{self, Vector};
use crate::sync::IrqSpinLock;
use crate::{context, thread, time};

/// Errors of timer operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerError {
    /// The timer was never set up and cannot register from this context
    /// (interrupt or real-time thread: registering may allocate).
    NotSetUp,
}

impl core::fmt::Display for TimerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("timer not set up (call setup() in thread context first)")
    }
}

const NO_CPU: u32 = u32::MAX;

/// One kind's per-CPU bases and their alarms.
struct Bases {
    bases: [IrqSpinLock<TimerBase<usize>>; MAX_CPUS],
    alarms: [IrqSpinLock<Option<AlarmId>>; MAX_CPUS],
    /// Converts an expiry to clock nanoseconds.
    to_ns: fn(u64) -> u64,
    vector: Vector,
}

impl Bases {
    const fn new(to_ns: fn(u64) -> u64, vector: Vector) -> Self {
        Self {
            bases: [const { IrqSpinLock::new(TimerBase::new()) }; MAX_CPUS],
            alarms: [const { IrqSpinLock::new(None) }; MAX_CPUS],
            to_ns,
            vector,
        }
    }

    /// Re-arms CPU `cpu`'s alarm for its base's earliest expiry.
    fn reprogram(&self, cpu: usize) {
        let next = self.bases[cpu].lock().next_expiry();
        // The alarm's id is copied out: arming takes the CPU's alarm lock
        // and may interrupt another CPU, which must not happen under this
        // lock (a CPU spinning on it waited for all of that with its own
        // interrupts off; `make rt-isolation` showed ms-long sections here).
        let alarm = *self.alarms[cpu].lock();
        if let Some(alarm) = alarm {
            match next {
                Some(expiry) => clockevent::arm(alarm, (self.to_ns)(expiry)),
                None => {
                    clockevent::cancel(alarm);
                }
            }
        }
    }

    /// Registers the per-CPU alarm of this base on the current CPU.
    fn init_cpu(&'static self, fired: fn(AlarmId, u64)) {
        let cpu = cpu_local::current().index() as usize;
        let alarm = clockevent::register(fired, self as *const Bases as u64);
        *self.alarms[cpu].lock() = Some(alarm);
    }
}

fn identity(ns: u64) -> u64 {
    ns
}

static JIFFY_BASES: Bases = Bases::new(jiffies_to_ns, Vector::Timer);
static HR_BASES: Bases = Bases::new(identity, Vector::Hrtimer);

/// A base's alarm fired (hard IRQ): raise its softirq on this CPU.
fn base_alarm_fired(_: AlarmId, bases: u64) {
    // SAFETY: `init_cpu` passes the address of one of the two statics.
    let bases = unsafe { &*(bases as *const Bases) };
    softirq::raise(bases.vector);
}

/// Where a timer is registered: CPU and handle, packed in one word.
#[derive(Debug)]
struct Registration(AtomicU64);

impl Registration {
    const fn none() -> Self {
        Self(AtomicU64::new(u64::MAX))
    }

    fn get(&self) -> Option<(usize, TimerId)> {
        let value = self.0.load(Ordering::Acquire);
        (value != u64::MAX).then(|| ((value >> 32) as usize, id_from(value as u32)))
    }

    fn set(&self, cpu: usize, id: TimerId) {
        self.0.store(((cpu as u64) << 32) | u64::from(id_raw(id)), Ordering::Release);
    }

    fn clear(&self) {
        self.0.store(u64::MAX, Ordering::Release);
    }
}

fn id_raw(id: TimerId) -> u32 {
    id.index() as u32
}

fn id_from(raw: u32) -> TimerId {
    TimerId::from_index(raw as usize)
}

fn register_in(bases: &'static Bases, registration: &Registration, owner: usize) -> Result<(usize, TimerId), TimerError> {
    if let Some(found) = registration.get() {
        return Ok(found);
    }
    if context::in_interrupt() || context::in_realtime_thread() {
        return Err(TimerError::NotSetUp);
    }
    let cpu = cpu_local::current().index() as usize;
    let id = bases.bases[cpu].lock().register(owner);
    registration.set(cpu, id);
    Ok((cpu, id))
}

fn unregister_from(bases: &'static Bases, registration: &Registration) {
    if let Some((cpu, id)) = registration.get() {
        bases.bases[cpu].lock().unregister(id);
        registration.clear();
        bases.reprogram(cpu);
    }
}

/// `del_timer_sync` on one base: disarms `id` once its callback is not
/// running (retrying while it runs, as it may re-arm itself); returns
/// whether the final disarm found it armed. The loop is the engine's
/// [`timers::delete_sync`], model-checked in `tests/loom_timer.rs`.
fn delete_sync_in(bases: &'static Bases, cpu: usize, id: TimerId) -> bool {
    let was = timers::delete_sync(
        || bases.bases[cpu].lock().try_delete_sync(id),
        || {
            assert!(!context::in_interrupt() && !softirq::in_softirq(), "delete_sync/cancel from interrupt or softirq context");
            // Sleep rather than yield: the callback may be a softirq this
            // very thread preempted, which must get the CPU back to finish.
            let _ = thread::sleep_ns(50_000);
        },
    );
    bases.reprogram(cpu);
    was
}

/// A jiffies timer (struct timer_list).
///
/// Its base keeps its address from the first arm (or `setup`) until it is
/// dropped, so the methods that register it take `&'static self` (a
/// `static`) or `Pin<&Self>` (e.g. `Box::pin`: pinned memory is dropped,
/// and so unregistered, before it is reused).
pub struct Timer {
    name: &'static str,
    callback: fn(usize),
    data: AtomicUsize,
    registration: Registration,
    fired: AtomicU64,
    /// The delay (jiffies) its last arm asked for: a self-re-arming
    /// timer's period (`TIMERS`).
    armed_for: AtomicU64,
    _pinned: PhantomPinned,
}

impl core::fmt::Debug for Timer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Timer").field("name", &self.name).field("pending", &self.is_pending()).finish()
    }
}

impl Timer {
    /// A timer calling `callback(data)` (timer_setup); usable as a static.
    pub const fn new(name: &'static str, callback: fn(usize), data: usize) -> Self {
        Self {
            name,
            callback,
            data: AtomicUsize::new(data),
            registration: Registration::none(),
            fired: AtomicU64::new(0),
            armed_for: AtomicU64::new(0),
            _pinned: PhantomPinned,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn set_data(&self, data: usize) {
        self.data.store(data, Ordering::Release);
    }

    /// Registers the timer on this CPU's base (may allocate). Optional in
    /// thread context; required before arming from IRQ or RT context.
    pub fn setup(&'static self) -> Result<(), TimerError> {
        Pin::static_ref(self).setup_pinned()
    }

    /// [`setup`](Self::setup) for a pinned timer.
    pub fn setup_pinned(self: Pin<&Self>) -> Result<(), TimerError> {
        register_in(&JIFFY_BASES, &self.registration, &*self as *const Timer as usize).map(|_| ())
    }

    /// `mod_timer`: arms or re-arms the timer for jiffy `expires`. Returns
    /// whether it was pending before.
    pub fn modify(&'static self, expires: u64) -> Result<bool, TimerError> {
        Pin::static_ref(self).modify_pinned(expires)
    }

    /// Arms it `delay` jiffies from now.
    pub fn modify_in(&'static self, delay: u64) -> Result<bool, TimerError> {
        Pin::static_ref(self).modify_in_pinned(delay)
    }

    /// [`modify`](Self::modify) for a pinned timer.
    pub fn modify_pinned(self: Pin<&Self>, expires: u64) -> Result<bool, TimerError> {
        self.arm(expires, expires.saturating_sub(time::jiffies()))
    }

    /// [`modify_in`](Self::modify_in) for a pinned timer.
    pub fn modify_in_pinned(self: Pin<&Self>, delay: u64) -> Result<bool, TimerError> {
        self.arm(time::jiffies().saturating_add(delay), delay)
    }

    /// Arms for jiffy `expires`, remembering `armed_for` as asked (read
    /// once: a second `jiffies()` after registering could be a tick later,
    /// and `TIMERS` showed a 60 000 ms period as 59 999).
    fn arm(self: Pin<&Self>, expires: u64, armed_for: u64) -> Result<bool, TimerError> {
        let (cpu, id) = register_in(&JIFFY_BASES, &self.registration, &*self as *const Timer as usize)?;
        self.armed_for.store(armed_for, Ordering::Relaxed);
        let was = JIFFY_BASES.bases[cpu].lock().modify(id, expires).unwrap_or(false);
        JIFFY_BASES.reprogram(cpu);
        Ok(was)
    }

    /// `del_timer`: disarms; returns whether it was pending. Its callback
    /// may still be running on some CPU.
    pub fn delete(&self) -> bool {
        let Some((cpu, id)) = self.registration.get() else { return false };
        let was = JIFFY_BASES.bases[cpu].lock().delete(id);
        JIFFY_BASES.reprogram(cpu);
        was
    }

    /// `del_timer_sync`: on return the timer is not armed and its callback
    /// is not running anywhere, even if the callback re-arms it (it retries
    /// until it disarms a timer whose callback is not running). Returns
    /// whether the final disarm found it armed. Thread context only.
    pub fn delete_sync(&self) -> bool {
        let Some((cpu, id)) = self.registration.get() else { return false };
        delete_sync_in(&JIFFY_BASES, cpu, id)
    }

    /// Whether it is armed.
    pub fn is_pending(&self) -> bool {
        self.registration.get().is_some_and(|(cpu, id)| JIFFY_BASES.bases[cpu].lock().is_pending(id))
    }

    /// Callbacks run so far.
    pub fn fired(&self) -> u64 {
        self.fired.load(Ordering::Relaxed)
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if self.registration.get().is_some() {
            self.delete_sync();
            unregister_from(&JIFFY_BASES, &self.registration);
        }
    }
}

fn run_jiffy_timers(_: usize) {
    let cpu = cpu_local::current().index() as usize;
    let now = time::jiffies();
    loop {
        let due = {
            let mut base = JIFFY_BASES.bases[cpu].lock();
            base.begin_expired(now).and_then(|(id, _)| base.data(id).map(|&owner| (id, owner)))
        };
        let Some((id, owner)) = due else { break };
        // SAFETY: a timer registers only through `&'static self` or
        // `Pin<&Self>`, so it has not moved; a pinned one is unregistered
        // (after delete_sync) by its Drop before its memory is reused, so
        // `owner` points at a live Timer.
        let timer = unsafe { &*(owner as *const Timer) };
        (timer.callback)(timer.data.load(Ordering::Acquire));
        timer.fired.fetch_add(1, Ordering::Relaxed);
        JIFFY_BASES.bases[cpu].lock().finish(id);
    }
    JIFFY_BASES.reprogram(cpu);
}

/// What an hrtimer callback asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Re-arm at the (possibly forwarded) expiry.
    Restart,
    /// Stay disarmed.
    NoRestart,
}

/// How a start time is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Clock time (CLOCK_MONOTONIC, ns since boot).
    Absolute,
    /// From now.
    Relative,
}

/// A high-resolution timer (struct hrtimer).
pub struct HrTimer {
    name: &'static str,
    callback: fn(&HrTimer) -> Restart,
    data: AtomicUsize,
    expires: AtomicU64,
    registration: Registration,
    fired: AtomicU64,
    /// Set while the callback runs and may forward the expiry.
    in_callback: AtomicU32,
    _pinned: PhantomPinned,
}

impl core::fmt::Debug for HrTimer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HrTimer").field("name", &self.name).field("expires", &self.expires()).finish()
    }
}

impl HrTimer {
    /// An hrtimer calling `callback(&timer)` (hrtimer_init); usable as a static.
    pub const fn new(name: &'static str, callback: fn(&HrTimer) -> Restart, data: usize) -> Self {
        Self {
            name,
            callback,
            data: AtomicUsize::new(data),
            expires: AtomicU64::new(0),
            registration: Registration::none(),
            fired: AtomicU64::new(0),
            in_callback: AtomicU32::new(NO_CPU),
            _pinned: PhantomPinned,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn data(&self) -> usize {
        self.data.load(Ordering::Acquire)
    }

    pub fn set_data(&self, data: usize) {
        self.data.store(data, Ordering::Release);
    }

    /// The expiry (clock ns).
    pub fn expires(&self) -> u64 {
        self.expires.load(Ordering::Acquire)
    }

    /// Registers it on this CPU's base (may allocate). Its base keeps its
    /// address from then on, hence `&'static self`.
    pub fn setup(&'static self) -> Result<(), TimerError> {
        register_in(&HR_BASES, &self.registration, self as *const HrTimer as usize).map(|_| ())
    }

    /// `hrtimer_start`: arms it at `time` (absolute or relative to now).
    /// Returns whether it was active before.
    pub fn start(&'static self, time: u64, mode: Mode) -> Result<bool, TimerError> {
        let expires = match mode {
            Mode::Absolute => time,
            Mode::Relative => time::now_ns().saturating_add(time),
        };
        let (cpu, id) = register_in(&HR_BASES, &self.registration, self as *const HrTimer as usize)?;
        self.expires.store(expires, Ordering::Release);
        let was = HR_BASES.bases[cpu].lock().modify(id, expires).unwrap_or(false);
        HR_BASES.reprogram(cpu);
        Ok(was)
    }

    /// `hrtimer_forward`: moves the expiry forward by whole `interval`s until
    /// it is after `now`; returns how many intervals (overruns + 1).
    pub fn forward(&self, now: u64, interval: u64) -> u64 {
        let interval = interval.max(1);
        let expires = self.expires();
        if expires > now {
            return 0;
        }
        let intervals = (now - expires) / interval + 1;
        self.expires.store(expires + intervals * interval, Ordering::Release);
        intervals
    }

    /// `hrtimer_cancel`: on return it is not armed and its callback is not
    /// running, even if the callback restarts it (as `Timer::delete_sync`).
    /// Returns whether the final disarm found it armed. Thread context only.
    pub fn cancel(&self) -> bool {
        let Some((cpu, id)) = self.registration.get() else { return false };
        delete_sync_in(&HR_BASES, cpu, id)
    }

    /// `hrtimer_try_to_cancel` without waiting: disarms if armed.
    pub fn try_cancel(&self) -> bool {
        let Some((cpu, id)) = self.registration.get() else { return false };
        let was = HR_BASES.bases[cpu].lock().delete(id);
        HR_BASES.reprogram(cpu);
        was
    }

    pub fn is_active(&self) -> bool {
        self.registration.get().is_some_and(|(cpu, id)| HR_BASES.bases[cpu].lock().is_pending(id))
    }

    /// Callbacks run so far.
    pub fn fired(&self) -> u64 {
        self.fired.load(Ordering::Relaxed)
    }
}

impl Drop for HrTimer {
    fn drop(&mut self) {
        if self.registration.get().is_some() {
            self.cancel();
            unregister_from(&HR_BASES, &self.registration);
        }
    }
}

fn run_hrtimers(_: usize) {
    let cpu = cpu_local::current().index() as usize;
    loop {
        let now = time::now_ns();
        let due = {
            let mut base = HR_BASES.bases[cpu].lock();
            base.begin_expired(now).and_then(|(id, _)| base.data(id).map(|&owner| (id, owner)))
        };
        let Some((id, owner)) = due else { break };
        // SAFETY: an hrtimer registers only through `&'static self`, so
        // `owner` points at a live HrTimer that has not moved.
        let timer = unsafe { &*(owner as *const HrTimer) };
        timer.in_callback.store(cpu as u32, Ordering::Release);
        let restart = (timer.callback)(timer);
        timer.in_callback.store(NO_CPU, Ordering::Release);
        timer.fired.fetch_add(1, Ordering::Relaxed);
        let mut base = HR_BASES.bases[cpu].lock();
        base.finish(id);
        if restart == Restart::Restart {
            base.modify(id, timer.expires());
        }
    }
    HR_BASES.reprogram(cpu);
}

/// Attaches the TIMER and HRTIMER softirqs (once) and this CPU's alarms
/// (every CPU).
pub fn init_cpu() {
    if cpu_local::current().index() == 0 {
        softirq::open(Vector::Timer, run_jiffy_timers, 0);
        softirq::open(Vector::Hrtimer, run_hrtimers, 0);
    }
    JIFFY_BASES.init_cpu(base_alarm_fired);
    HR_BASES.init_cpu(base_alarm_fired);
}

/// Armed timers on every CPU: (jiffies timers, hrtimers).
pub fn pending_counts() -> (usize, usize) {
    let mut jiffies = 0;
    let mut high = 0;
    for cpu in 0..MAX_CPUS {
        jiffies += JIFFY_BASES.bases[cpu].lock().pending_count();
        high += HR_BASES.bases[cpu].lock().pending_count();
    }
    (jiffies, high)
}

/// Registered timers on every CPU: (jiffies timers, hrtimers).
pub fn registered_counts() -> (usize, usize) {
    let mut jiffies = 0;
    let mut high = 0;
    for cpu in 0..MAX_CPUS {
        jiffies += JIFFY_BASES.bases[cpu].lock().registered_count();
        high += HR_BASES.bases[cpu].lock().registered_count();
    }
    (jiffies, high)
}

/// The jiffy at which `now_ns` falls (exposed for tests).
pub fn jiffy_of(now_ns: u64) -> u64 {
    ns_to_jiffies(now_ns)
}

static NAMED: IrqSpinLock<alloc::vec::Vec<&'static Timer>> = IrqSpinLock::new(alloc::vec::Vec::new());

impl Timer {
    /// Lists it by name for the control plane (`TIMER MOD name ms`).
    pub fn register(&'static self) {
        let mut named = NAMED.lock();
        if !named.iter().any(|timer| core::ptr::eq(*timer, self)) {
            named.push(self);
        }
    }

    /// Removes it from the named list (before it is dropped or unloaded).
    pub fn unregister(&self) {
        NAMED.lock().retain(|timer| !core::ptr::eq(*timer, self));
    }
}

/// A registered timer, by name.
pub fn find(name: &str) -> Option<&'static Timer> {
    NAMED.lock().iter().copied().find(|timer| timer.name == name)
}

/// Registered timers: (name, pending, fired).
pub fn named() -> alloc::vec::Vec<(&'static str, bool, u64)> {
    let timers: alloc::vec::Vec<&'static Timer> = NAMED.lock().clone();
    timers.into_iter().map(|timer| (timer.name, timer.is_pending(), timer.fired())).collect()
}

impl Timer {
    /// The jiffy it expires at, if it is armed (`TIMERS`).
    pub fn expires(&self) -> Option<u64> {
        self.registration.get().and_then(|(cpu, id)| JIFFY_BASES.bases[cpu].lock().expiry(id))
    }

    /// Whether its callback runs now.
    pub fn is_running(&self) -> bool {
        self.registration.get().is_some_and(|(cpu, id)| JIFFY_BASES.bases[cpu].lock().is_running(id))
    }

    /// The delay (jiffies) its last arm asked for: for a timer that
    /// re-arms itself from its callback, its period.
    pub fn armed_for(&self) -> u64 {
        self.armed_for.load(Ordering::Relaxed)
    }
}

/// The registered (named) timers (`TIMERS`).
pub fn named_timers() -> alloc::vec::Vec<&'static Timer> {
    NAMED.lock().clone()
}
