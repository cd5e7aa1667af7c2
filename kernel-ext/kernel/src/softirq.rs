//! Soft interrupts: the bottom halves.
//!
//! Fixed vectors in priority order (HI first), Linux's: HI, TIMER, NET_TX,
//! NET_RX, BLOCK, IRQ_POLL, TASKLET, SCHED, HRTIMER, RCU, then soft IRQs
//! registered at run time with a name (RTLinux's `rtl_get_soft_irq`).
//! A fixed vector runs only once its subsystem has attached its handler
//! (`open`); here HI, TIMER, NET_RX, TASKLET and HRTIMER have one. NET_TX
//! (transmit completion is reclaimed inline by the virtio driver), BLOCK,
//! IRQ_POLL, SCHED and RCU have none: raising them by name is refused, and a
//! raise from code counts nothing. Raising is a few atomics on a per-CPU
//! pending word, safe from hard-IRQ, RT-thread, softirq and thread context.
//!
//! A raise from thread context (Linux's `!in_interrupt()`) wakes the CPU's
//! `ksoftirqd` if it sleeps: no interrupt exit follows it, and the kernel is
//! tickless, so nothing else would run the work soon. A raise on another CPU
//! sends it an IPI, whose exit runs the work. The pending word and the
//! daemon's sleep are `rtedge_engine::softirq`'s, model-checked with loom.
//!
//! Pending softirqs run on the way back from a hard IRQ to non-RT code and
//! whenever the CPU switches to a non-RT thread — so work an RT thread
//! queues runs before any kernel thread gets the CPU. A budget (rounds and
//! time) hands a flood over to the per-CPU `ksoftirqd` thread, which the
//! fair scheduler then shares with everything else. Handlers run with
//! interrupts enabled and may not block (checked by the wait code).

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use rtedge_arch::cpu;
use rtedge_engine::handler::HandlerSlot;
use rtedge_engine::softirq::{self as policy, SoftirqCpu};

use crate::cpu_local::{self, MAX_CPUS};
use crate::sync::{IrqSpinLock, SpinLock, SpinLockGuard};
use crate::{context, time};

/// The fixed soft interrupt vectors, in priority order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Vector {
    Hi = 0,
    Timer = 1,
    NetTx = 2,
    NetRx = 3,
    Block = 4,
    IrqPoll = 5,
    Tasklet = 6,
    Sched = 7,
    Hrtimer = 8,
    Rcu = 9,
}

/// Names of the fixed vectors.
pub const FIXED_NAMES: [&str; 10] = ["HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU"];
const FIXED_COUNT: usize = FIXED_NAMES.len();
/// Total vectors, fixed plus dynamic (the engine's pending word holds them).
pub const MAX_VECTORS: usize = policy::MAX_VECTORS;

/// Rounds of processing before handing over to ksoftirqd.
const MAX_ROUNDS: u32 = 10;
/// Time spent processing before handing over to ksoftirqd.
const MAX_TIME_NS: u64 = 2_000_000;

/// What a vector runs: its handler and the data word it is called with.
#[derive(Clone, Copy, Debug)]
struct Action {
    handler: fn(usize),
    data: usize,
}

/// Each vector's action, whether it is live, and who raises or runs it
/// now (a typed slot: the handler is stored as what it is).
static SLOTS: [HandlerSlot<Action>; MAX_VECTORS] = [const { HandlerSlot::new() }; MAX_VECTORS];
/// Each CPU's pending vectors and its ksoftirqd's state.
static CPUS: [SoftirqCpu; MAX_CPUS] = [const { SoftirqCpu::new() }; MAX_CPUS];
static DYNAMIC_NAMES: IrqSpinLock<Vec<Option<String>>> = IrqSpinLock::new(Vec::new());
/// One CPU's softirq bookkeeping besides its pending word (which is in
/// `CPUS`): the processing / bottom-half disable depth and the runs per
/// vector. Only that CPU writes them.
#[repr(align(64))]
struct CpuSoftirq {
    /// Softirq processing / bottom-half disable depth.
    depth: AtomicU32,
    /// Softirqs run per vector.
    counts: [AtomicU64; MAX_VECTORS],
}

static LOCAL: [CpuSoftirq; MAX_CPUS] =
    [const { CpuSoftirq { depth: AtomicU32::new(0), counts: [const { AtomicU64::new(0) }; MAX_VECTORS] } }; MAX_CPUS];

/// Times the budget ran out and work moved to ksoftirqd.
static HANDOVERS: AtomicU64 = AtomicU64::new(0);

/// Attaches the handler of a fixed vector (done once by its subsystem).
/// A second `open` of a vector leaves the first handler in place.
pub fn open(vector: Vector, handler: fn(usize), data: usize) {
    if SLOTS[vector as usize].install(Action { handler, data }).is_err() {
        log::warn!("softirq: {} already has a handler", FIXED_NAMES[vector as usize]);
    }
}

/// Marks `vector` pending on this CPU (and wakes ksoftirqd when raised
/// from thread context). A vector without a handler is not raised.
#[inline]
pub fn raise(vector: Vector) {
    if cpu_local::is_installed() {
        raise_index_on(context::cpu_index(), vector as usize, None);
    }
}

/// Marks `vector` pending on CPU `cpu` and makes that CPU notice.
pub fn raise_on(cpu_index: u32, vector: Vector) {
    raise_index_on(cpu_index, vector as usize, None);
}

/// Raises vector `index` of registration `generation` (`None`: the live
/// one) on CPU `cpu_index`; whether it was live (and so raised).
///
/// Here, from thread context (not in a hard IRQ, softirq or bottom-half
/// disabled section, not an RT thread) a sleeping ksoftirqd is woken:
/// nothing else would run the work soon on a tickless CPU. A hard IRQ's
/// exit runs it, an RT thread's switch-out does, a softirq's loop and
/// `bh_enable` do. Another CPU gets an IPI, whose exit runs it.
fn raise_index_on(cpu_index: u32, index: usize, generation: Option<u32>) -> bool {
    let Some(state) = CPUS.get(cpu_index as usize) else { return false };
    if cpu_local::get(cpu_index as usize).is_none() {
        return false;
    }
    let here = cpu_local::is_installed() && cpu_index == context::cpu_index();
    let thread_context = here && !context::in_interrupt() && !in_softirq() && !context::in_realtime_thread();
    let Some(wake) = policy::raise(state, &SLOTS[index], index, generation, thread_context) else { return false };
    if wake {
        wake_ksoftirqd(cpu_index);
    }
    if !here && let Some(local) = cpu_local::get(cpu_index as usize) {
        rtedge_arch::apic::send_ipi(local.apic_id(), rtedge_arch::apic::Ipi::Fixed(crate::vectors::RESCHEDULE));
    }
    true
}

fn wake_ksoftirqd(cpu_index: u32) {
    if let Some(hooks) = hooks() {
        (hooks.wake_daemon)(cpu_index);
    }
}

/// Whether this CPU is running softirq handlers (or has bottom halves disabled).
pub fn in_softirq() -> bool {
    cpu_local::is_installed() && LOCAL[cpu_local::current_index()].depth.load(Ordering::Relaxed) != 0
}

/// Whether softirqs are pending on this CPU.
pub fn pending_here() -> bool {
    cpu_local::is_installed() && CPUS[context::cpu_index() as usize].pending() != 0
}

/// Runs pending softirqs now if allowed here: not inside a hard IRQ
/// handler, not already in softirq or under `bh_disable`, not in an RT
/// thread, and not while ksoftirqd owns a flood on this CPU.
pub fn run_pending() {
    if !cpu_local::is_installed() {
        return;
    }
    let cpu = cpu_local::current_index();
    let state = &CPUS[cpu];
    let here = context::on(cpu);
    if state.pending() == 0
        || here.in_interrupt()
        || LOCAL[cpu].depth.load(Ordering::Relaxed) != 0
        || here.in_realtime_thread()
        || state.is_deferred()
    {
        return;
    }
    process(true);
}

/// Processes pending vectors, highest priority first, for at most the
/// budget (if `budgeted`); leftovers go to ksoftirqd.
fn process(budgeted: bool) {
    let interrupts_were_enabled = cpu::interrupts_save();
    let cpu = cpu_local::current_index();
    let state = &CPUS[cpu];
    let local = &LOCAL[cpu];
    local.depth.fetch_add(1, Ordering::AcqRel);
    let start = time::now_ns();
    let mut rounds = 0;
    loop {
        let pending = state.pending();
        if pending == 0 {
            break;
        }
        cpu::interrupts_enable();
        let mut bits = pending;
        while bits != 0 {
            let index = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            // Runs only a live vector, and drops a stale bit of a freed one.
            policy::dispatch(state, &SLOTS[index], index, |action| {
                local.counts[index].fetch_add(1, Ordering::Relaxed);
                (action.handler)(action.data);
            });
        }
        cpu::interrupts_disable();
        rounds += 1;
        if budgeted && (rounds >= MAX_ROUNDS || time::now_ns() - start >= MAX_TIME_NS) {
            if state.pending() != 0 {
                hand_over_to_ksoftirqd(cpu as u32);
            }
            break;
        }
    }
    local.depth.fetch_sub(1, Ordering::AcqRel);
    cpu::interrupts_restore(interrupts_were_enabled);
}

fn hand_over_to_ksoftirqd(cpu_index: u32) {
    let Some(state) = CPUS.get(cpu_index as usize) else { return };
    if let Some(hooks) = hooks() {
        HANDOVERS.fetch_add(1, Ordering::Relaxed);
        // Wake it whether or not it is marked asleep: it may be on its way.
        let _ = state.defer();
        (hooks.wake_daemon)(cpu_index);
    }
}

/// ksoftirqd's sleep step on its CPU `cpu_index`: whether it may sleep
/// (nothing pending), ending the deferral in the same step, so a raise
/// after it from an interrupt runs on the interrupt's exit and one from
/// thread context wakes the daemon (a wake-up sent before the suspend is
/// not lost).
pub(crate) fn daemon_try_sleep(cpu_index: u32) -> bool {
    CPUS.get(cpu_index as usize).is_none_or(SoftirqCpu::daemon_try_sleep)
}

/// ksoftirqd on CPU `cpu_index` is awake again.
pub(crate) fn daemon_awake(cpu_index: u32) {
    if let Some(state) = CPUS.get(cpu_index as usize) {
        state.daemon_awake();
    }
}

/// One budget's worth of processing on this CPU (ksoftirqd's round).
pub(crate) fn run_budget() {
    process(true);
}

/// What softirq asks of the scheduler, a floor above it: the scheduler
/// registers these once it runs (`set_scheduler_hooks`), so this module
/// imports nothing of threads. Before that, wake-ups and preemption are
/// no-ops (nothing else runs yet) and a sleep spins.
pub struct SchedulerHooks {
    /// Wakes the `ksoftirqd` of CPU `cpu_index` (asleep or on its way to sleep).
    pub wake_daemon: fn(u32),
    /// Reschedules now if a more urgent thread is waiting and switching is
    /// allowed here (`bh_enable`'s exit).
    pub preempt_if_needed: fn(),
    /// Puts the calling thread to sleep for about this many nanoseconds.
    pub sleep_ns: fn(u64),
}

static HOOKS: AtomicPtr<SchedulerHooks> = AtomicPtr::new(core::ptr::null_mut());

/// Registers the scheduler's side (once, when scheduling starts; a later
/// call replaces it).
pub fn set_scheduler_hooks(hooks: &'static SchedulerHooks) {
    HOOKS.store(core::ptr::from_ref(hooks).cast_mut(), Ordering::Release);
}

#[inline(always)]
fn hooks() -> Option<&'static SchedulerHooks> {
    let hooks = HOOKS.load(Ordering::Acquire);
    // SAFETY: only `set_scheduler_hooks` stores here, from a `&'static`
    // that is never written through.
    (!hooks.is_null()).then(|| unsafe { &*hooks })
}

/// Times a flood moved to ksoftirqd.
pub fn handovers() -> u64 {
    HANDOVERS.load(Ordering::Relaxed)
}

/// A soft interrupt registered at run time with a name: its vector and
/// which registration of that vector it is. A copy kept past `free` raises
/// nothing and frees nothing, even after the vector is registered again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftIrq {
    index: u8,
    generation: u16,
}

/// Errors of dynamic soft IRQs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftIrqError {
    /// All dynamic vectors are taken.
    Exhausted,
    /// The name is empty or already used.
    BadName,
    /// No soft IRQ has this name.
    NoSuchName,
    /// A fixed vector that has no handler in this kernel: raising it would
    /// run nothing.
    NoHandler(&'static str),
}

impl core::fmt::Display for SoftIrqError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SoftIrqError::Exhausted => f.write_str("no free soft IRQ vector"),
            SoftIrqError::BadName => f.write_str("soft IRQ name empty or already in use"),
            SoftIrqError::NoSuchName => f.write_str("no such soft IRQ"),
            SoftIrqError::NoHandler(name) => write!(f, "soft IRQ {name} has no handler in this kernel; nothing raised"),
        }
    }
}

/// Registers a named soft IRQ (rtl_get_soft_irq). May allocate; call from
/// thread context.
pub fn register(name: &str, handler: fn(usize), data: usize) -> Result<SoftIrq, SoftIrqError> {
    if name.is_empty() {
        return Err(SoftIrqError::BadName);
    }
    let mut names = DYNAMIC_NAMES.lock();
    if names.len() < MAX_VECTORS - FIXED_COUNT {
        names.resize(MAX_VECTORS - FIXED_COUNT, None);
    }
    if names.iter().flatten().any(|existing| existing == name) || FIXED_NAMES.contains(&name) {
        return Err(SoftIrqError::BadName);
    }
    let position = names.iter().position(Option::is_none).ok_or(SoftIrqError::Exhausted)?;
    let index = FIXED_COUNT + position;
    // Free: its name was cleared after `close` returned, so it is not live
    // and no caller is inside.
    let generation = SLOTS[index].install(Action { handler, data }).map_err(|_| SoftIrqError::Exhausted)?;
    names[position] = Some(String::from(name));
    Ok(SoftIrq { index: index as u8, generation: generation as u16 })
}

impl SoftIrq {
    /// Pends it on this CPU (rtl_global_pend_irq from an RT thread). Never
    /// allocates; safe from any context.
    /// Does nothing once it is freed.
    pub fn raise(self) {
        if cpu_local::is_installed() {
            raise_index_on(context::cpu_index(), usize::from(self.index), Some(u32::from(self.generation)));
        }
    }

    /// Pends it on another CPU, which an IPI makes notice.
    pub fn raise_on(self, cpu_index: u32) {
        raise_index_on(cpu_index, usize::from(self.index), Some(u32::from(self.generation)));
    }

    /// Releases the vector (rtl_free_soft_irq). On return its handler runs
    /// on no CPU and never will again, and no raise from before the free
    /// can fire whoever registers the vector next: the rule
    /// `softirq::freed_vector_never_runs` (engine `softirq::close`). Waits
    /// for a running handler: thread context only. A second free of a copy
    /// does nothing.
    pub fn free(self) {
        assert!(!context::in_interrupt() && !in_softirq(), "soft IRQ free from interrupt or softirq context");
        let index = usize::from(self.index);
        let closed = policy::close(&SLOTS[index], index, u32::from(self.generation), CPUS.iter(), || {
            // Sleep rather than yield: the handler may be a softirq this
            // very thread preempted, which must get the CPU back to finish.
            match hooks() {
                Some(hooks) => (hooks.sleep_ns)(50_000),
                None => time::spin_for_ns(50_000),
            }
        });
        if !closed {
            return;
        }
        let mut names = DYNAMIC_NAMES.lock();
        if let Some(name) = names.get_mut(index - FIXED_COUNT) {
            *name = None;
        }
    }

    /// Its vector index (fixed vectors come first).
    pub fn index(self) -> usize {
        usize::from(self.index)
    }
}

/// Finds a registered soft IRQ (fixed or dynamic) by name.
pub fn find(name: &str) -> Option<usize> {
    if let Some(index) = FIXED_NAMES.iter().position(|fixed| fixed.eq_ignore_ascii_case(name)) {
        return Some(index);
    }
    let names = DYNAMIC_NAMES.lock();
    names.iter().position(|entry| entry.as_deref() == Some(name)).map(|position| position + FIXED_COUNT)
}

/// Raises a vector by index on this CPU if it has a handler; whether it
/// was raised.
pub fn raise_by_index(index: usize) -> bool {
    index < MAX_VECTORS && cpu_local::is_installed() && raise_index_on(context::cpu_index(), index, None)
}

/// Raises a soft IRQ by name on this CPU (the control plane's `SOFTIRQ
/// RAISE`). A fixed vector without a handler is refused: it would count a
/// run that runs nothing.
pub fn raise_named(name: &str) -> Result<(), SoftIrqError> {
    let index = find(name).ok_or(SoftIrqError::NoSuchName)?;
    if raise_by_index(index) {
        return Ok(());
    }
    match FIXED_NAMES.get(index) {
        Some(fixed) => Err(SoftIrqError::NoHandler(fixed)),
        None => Err(SoftIrqError::NoSuchName),
    }
}

/// One line of the `/proc/softirqs` view.
#[derive(Clone, Debug)]
pub struct SoftirqLine {
    pub name: String,
    pub per_cpu: Vec<u64>,
}

/// Counts per vector and CPU, fixed vectors first, then the dynamic ones.
pub fn counts() -> Vec<SoftirqLine> {
    let cpus: Vec<_> = (0..MAX_CPUS).filter(|&cpu| cpu_local::get(cpu).is_some()).map(|cpu| &LOCAL[cpu]).collect();
    let mut lines = Vec::new();
    for (index, name) in FIXED_NAMES.iter().enumerate() {
        lines.push(SoftirqLine {
            name: String::from(*name),
            per_cpu: cpus.iter().map(|local| local.counts[index].load(Ordering::Relaxed)).collect(),
        });
    }
    let names = DYNAMIC_NAMES.lock().clone();
    for (position, name) in names.iter().enumerate() {
        if let Some(name) = name {
            let index = FIXED_COUNT + position;
            lines.push(SoftirqLine {
                name: name.clone(),
                per_cpu: cpus.iter().map(|local| local.counts[index].load(Ordering::Relaxed)).collect(),
            });
        }
    }
    lines
}

/// Disables bottom halves on this CPU until the guard drops; nests.
/// Pending softirqs run when the outermost guard drops.
pub struct BottomHalfGuard {
    _not_send: core::marker::PhantomData<*const ()>,
}

/// `local_bh_disable`.
pub fn bh_disable() -> BottomHalfGuard {
    if cpu_local::is_installed() {
        LOCAL[cpu_local::current_index()].depth.fetch_add(1, Ordering::AcqRel);
    }
    BottomHalfGuard { _not_send: core::marker::PhantomData }
}

impl Drop for BottomHalfGuard {
    fn drop(&mut self) {
        if !cpu_local::is_installed() {
            return;
        }
        if LOCAL[cpu_local::current_index()].depth.fetch_sub(1, Ordering::AcqRel) == 1 && !context::in_interrupt() {
            run_pending();
            // A wake-up deferred while bottom halves were off acts now.
            if let Some(hooks) = hooks() {
                (hooks.preempt_if_needed)();
            }
        }
    }
}

impl<T: ?Sized> SpinLock<T> {
    /// `spin_lock_bh`: disables bottom halves on this CPU, then takes the
    /// lock; both are undone when the guard drops (the unlock first, then
    /// pending softirqs run). Never from a real-time thread (caught in
    /// strict mode).
    pub fn lock_bh(&self) -> SpinLockBhGuard<'_, T> {
        crate::sync::check_realtime_context("spin_lock_bh");
        let bottom_halves = bh_disable();
        SpinLockBhGuard { guard: self.acquire(), _bottom_halves: bottom_halves }
    }
}

/// Proof of holding a [`SpinLock`] with bottom halves off on this CPU.
pub struct SpinLockBhGuard<'a, T: ?Sized> {
    // Fields drop in order: the unlock, then `bh_enable`.
    guard: SpinLockGuard<'a, T>,
    _bottom_halves: BottomHalfGuard,
}

impl<T: ?Sized> Deref for SpinLockBhGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: ?Sized> DerefMut for SpinLockBhGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// The bottom-half disable depth of this CPU (softirq processing counts one).
pub fn bh_depth() -> u32 {
    if cpu_local::is_installed() { LOCAL[cpu_local::current_index()].depth.load(Ordering::Relaxed) } else { 0 }
}

/// The bottom-half disable depth of CPU `cpu` (the scheduler saves it with
/// the thread it switches away from; an index below `MAX_CPUS`).
#[inline(always)]
pub(crate) fn bh_depth_on(cpu: usize) -> u32 {
    LOCAL[cpu].depth.load(Ordering::Relaxed)
}

/// Sets the bottom-half disable depth of this CPU, `cpu`, to that of the
/// thread switched in (the scheduler, interrupts off).
#[inline(always)]
pub(crate) fn set_bh_depth_on(cpu: usize, depth: u32) {
    LOCAL[cpu].depth.store(depth, Ordering::Relaxed);
}

/// Whether vector `index` has a handler now (opened, or registered and not
/// freed): the `SOFTIRQS` listing's `open` field.
pub fn is_open(index: usize) -> bool {
    SLOTS.get(index).is_some_and(HandlerSlot::is_live)
}

/// Vector indexes of the registered dynamic soft IRQs with their names
/// (`SOFTIRQS`).
pub fn dynamic_names() -> Vec<(usize, String)> {
    DYNAMIC_NAMES.lock().iter().enumerate().filter_map(|(position, name)| name.clone().map(|name| (FIXED_COUNT + position, name))).collect()
}
