//! Soft interrupts: the bottom halves.
//!
//! Fixed vectors in priority order (HI first): HI, TIMER, NET_TX, NET_RX,
//! BLOCK, TASKLET, SCHED, HRTIMER, RCU, then soft IRQs registered at run time
//! with a name (RTLinux's `rtl_get_soft_irq`). Raising one is one atomic OR
//! on a per-CPU pending mask, safe from hard-IRQ, RT-thread, softirq and
//! thread context.
//!
//! Pending softirqs run on the way back from a hard IRQ to non-RT code and
//! whenever the CPU switches to a non-RT thread — so work an RT thread
//! queues runs before any kernel thread gets the CPU. A budget (rounds and
//! time) hands a flood over to the per-CPU `ksoftirqd` thread, which the
//! fair scheduler then shares with everything else. Handlers run with
//! interrupts enabled and may not block (checked by the wait code).

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rtedge_arch::cpu;

use crate::sync::IrqSpinLock;
use crate::thread::{self, ThreadId};
use crate::{context, cpu_local, time};

/// The fixed soft interrupt vectors, in priority order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Vector {
    Hi = 0,
    Timer = 1,
    NetTx = 2,
    NetRx = 3,
    Block = 4,
    Tasklet = 5,
    Sched = 6,
    Hrtimer = 7,
    Rcu = 8,
}

/// Names of the fixed vectors.
pub const FIXED_NAMES: [&str; 9] = ["HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "TASKLET", "SCHED", "HRTIMER", "RCU"];
const FIXED_COUNT: usize = FIXED_NAMES.len();
/// Total vectors, fixed plus dynamic.
pub const MAX_VECTORS: usize = 64;

/// Rounds of processing before handing over to ksoftirqd.
const MAX_ROUNDS: u32 = 10;
/// Time spent processing before handing over to ksoftirqd.
const MAX_TIME_NS: u64 = 2_000_000;

type Handler = fn(usize);

/// Handlers and their data, by vector (fn pointer as usize; 0 = none).
static HANDLERS: [AtomicUsize; MAX_VECTORS] = [const { AtomicUsize::new(0) }; MAX_VECTORS];
static DATA: [AtomicUsize; MAX_VECTORS] = [const { AtomicUsize::new(0) }; MAX_VECTORS];
static DYNAMIC_NAMES: IrqSpinLock<Vec<Option<String>>> = IrqSpinLock::new(Vec::new());
static KSOFTIRQD: IrqSpinLock<[Option<ThreadId>; crate::cpu_local::MAX_CPUS]> =
    IrqSpinLock::new([None; crate::cpu_local::MAX_CPUS]);
/// Times the budget ran out and work moved to ksoftirqd.
static HANDOVERS: AtomicU64 = AtomicU64::new(0);

/// Attaches the handler of a fixed vector (done once by its subsystem).
pub fn open(vector: Vector, handler: fn(usize), data: usize) {
    DATA[vector as usize].store(data, Ordering::Relaxed);
    HANDLERS[vector as usize].store(handler as usize, Ordering::Release);
}

/// Marks `vector` pending on this CPU.
#[inline]
pub fn raise(vector: Vector) {
    raise_index(vector as usize);
}

fn raise_index(index: usize) {
    if cpu_local::is_installed() {
        cpu_local::current().softirq_pending.fetch_or(1 << index, Ordering::AcqRel);
    }
}

/// Marks `vector` pending on CPU `cpu` and makes that CPU notice.
pub fn raise_on(cpu_index: u32, vector: Vector) {
    if let Some(local) = cpu_local::get(cpu_index as usize) {
        local.softirq_pending.fetch_or(1 << (vector as usize), Ordering::AcqRel);
        if cpu_index != context::cpu_index() {
            rtedge_arch::apic::send_ipi(
                local.apic_id.load(Ordering::Relaxed),
                rtedge_arch::apic::Ipi::Fixed(crate::trap::RESCHEDULE_VECTOR),
            );
        }
    }
}

/// Whether this CPU is running softirq handlers (or has bottom halves disabled).
pub fn in_softirq() -> bool {
    cpu_local::is_installed() && cpu_local::current().softirq_depth.load(Ordering::Relaxed) != 0
}

/// Whether softirqs are pending on this CPU.
pub fn pending_here() -> bool {
    cpu_local::is_installed() && cpu_local::current().softirq_pending.load(Ordering::Acquire) != 0
}

/// Runs pending softirqs now if allowed here: not inside a hard IRQ
/// handler, not already in softirq or under `bh_disable`, not in an RT
/// thread, and not while ksoftirqd owns a flood on this CPU.
pub fn run_pending() {
    if !cpu_local::is_installed() {
        return;
    }
    let local = cpu_local::current();
    if local.softirq_pending.load(Ordering::Acquire) == 0
        || local.irq_depth.load(Ordering::Relaxed) != 0
        || local.softirq_depth.load(Ordering::Relaxed) != 0
        || local.realtime.load(Ordering::Relaxed) != 0
        || local.softirq_deferred.load(Ordering::Acquire)
    {
        return;
    }
    process(true);
}

/// Processes pending vectors, highest priority first, for at most the
/// budget (if `budgeted`); leftovers go to ksoftirqd.
fn process(budgeted: bool) {
    let interrupts_were_enabled = cpu::interrupts_save();
    let local = cpu_local::current();
    local.softirq_depth.fetch_add(1, Ordering::AcqRel);
    let start = time::now_ns();
    let mut rounds = 0;
    loop {
        let pending = local.softirq_pending.swap(0, Ordering::AcqRel);
        if pending == 0 {
            break;
        }
        cpu::interrupts_enable();
        let mut bits = pending;
        while bits != 0 {
            let index = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            local.softirq_counts[index].fetch_add(1, Ordering::Relaxed);
            let handler = HANDLERS[index].load(Ordering::Acquire);
            if handler != 0 {
                // SAFETY: only `open`/`register` store here, always a `Handler`.
                let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(handler) };
                handler(DATA[index].load(Ordering::Relaxed));
            }
        }
        cpu::interrupts_disable();
        rounds += 1;
        if budgeted && (rounds >= MAX_ROUNDS || time::now_ns() - start >= MAX_TIME_NS) {
            if local.softirq_pending.load(Ordering::Acquire) != 0 {
                hand_over_to_ksoftirqd(local.index);
            }
            break;
        }
    }
    local.softirq_depth.fetch_sub(1, Ordering::AcqRel);
    cpu::interrupts_restore(interrupts_were_enabled);
}

fn hand_over_to_ksoftirqd(cpu_index: u32) {
    let Some(local) = cpu_local::get(cpu_index as usize) else { return };
    let daemon = KSOFTIRQD.lock().get(cpu_index as usize).copied().flatten();
    if let Some(daemon) = daemon {
        HANDOVERS.fetch_add(1, Ordering::Relaxed);
        local.softirq_deferred.store(true, Ordering::Release);
        let _ = thread::wake_up(daemon);
    }
}

fn ksoftirqd_main(cpu_index: u32) -> i32 {
    let Some(local) = cpu_local::get(cpu_index as usize) else { return -1 };
    loop {
        if thread::should_stop() {
            return 0;
        }
        if local.softirq_pending.load(Ordering::Acquire) == 0 {
            local.softirq_deferred.store(false, Ordering::Release);
            // A raise between the check and the suspend leaves work that the
            // next interrupt exit or switch will process (deferral is off).
            thread::suspend_self();
            continue;
        }
        // One budget's worth, then let the fair scheduler run others.
        process(true);
        thread::yield_cpu();
    }
}

/// Starts `ksoftirqd/N` on CPU `cpu_index`.
pub fn start_ksoftirqd(cpu_index: u32) -> Result<(), thread::ThreadError> {
    let mut name = alloc::string::String::from("ksoftirqd/");
    use core::fmt::Write;
    let _ = write!(name, "{cpu_index}");
    let id = thread::Builder::new(&name).cpu(cpu_index).spawn(move || ksoftirqd_main(cpu_index))?;
    if let Some(slot) = KSOFTIRQD.lock().get_mut(cpu_index as usize) {
        *slot = Some(id);
    }
    Ok(())
}

/// Times a flood moved to ksoftirqd.
pub fn handovers() -> u64 {
    HANDOVERS.load(Ordering::Relaxed)
}

/// A soft interrupt registered at run time with a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftIrq {
    index: u8,
}

/// Errors of dynamic soft IRQs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftIrqError {
    /// All dynamic vectors are taken.
    Exhausted,
    /// The name is empty or already used.
    BadName,
}

impl core::fmt::Display for SoftIrqError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            SoftIrqError::Exhausted => "no free soft IRQ vector",
            SoftIrqError::BadName => "soft IRQ name empty or already in use",
        })
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
    names[position] = Some(String::from(name));
    DATA[index].store(data, Ordering::Relaxed);
    HANDLERS[index].store(handler as usize, Ordering::Release);
    Ok(SoftIrq { index: index as u8 })
}

impl SoftIrq {
    /// Pends it on this CPU (rtl_global_pend_irq from an RT thread). Never
    /// allocates; safe from any context.
    pub fn raise(self) {
        raise_index(usize::from(self.index));
    }

    /// Pends it on another CPU.
    pub fn raise_on(self, cpu_index: u32) {
        if let Some(local) = cpu_local::get(cpu_index as usize) {
            local.softirq_pending.fetch_or(1 << self.index, Ordering::AcqRel);
        }
    }

    /// Releases the vector (rtl_free_soft_irq).
    pub fn free(self) {
        let index = usize::from(self.index);
        HANDLERS[index].store(0, Ordering::Release);
        DATA[index].store(0, Ordering::Relaxed);
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

/// Raises a vector by index on this CPU (the control plane's `SOFTIRQ RAISE`).
pub fn raise_by_index(index: usize) -> bool {
    if index >= MAX_VECTORS || (index >= FIXED_COUNT && HANDLERS[index].load(Ordering::Acquire) == 0) {
        return false;
    }
    raise_index(index);
    true
}

/// One line of the `/proc/softirqs` view.
#[derive(Clone, Debug)]
pub struct SoftirqLine {
    pub name: String,
    pub per_cpu: Vec<u64>,
}

/// Counts per vector and CPU, fixed vectors first, then the dynamic ones.
pub fn counts() -> Vec<SoftirqLine> {
    let cpus: Vec<_> = (0..cpu_local::MAX_CPUS).filter_map(cpu_local::get).collect();
    let mut lines = Vec::new();
    for (index, name) in FIXED_NAMES.iter().enumerate() {
        lines.push(SoftirqLine {
            name: String::from(*name),
            per_cpu: cpus.iter().map(|local| local.softirq_counts[index].load(Ordering::Relaxed)).collect(),
        });
    }
    let names = DYNAMIC_NAMES.lock().clone();
    for (position, name) in names.iter().enumerate() {
        if let Some(name) = name {
            let index = FIXED_COUNT + position;
            lines.push(SoftirqLine {
                name: name.clone(),
                per_cpu: cpus.iter().map(|local| local.softirq_counts[index].load(Ordering::Relaxed)).collect(),
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
        cpu_local::current().softirq_depth.fetch_add(1, Ordering::AcqRel);
    }
    BottomHalfGuard { _not_send: core::marker::PhantomData }
}

impl Drop for BottomHalfGuard {
    fn drop(&mut self) {
        if !cpu_local::is_installed() {
            return;
        }
        let local = cpu_local::current();
        if local.softirq_depth.fetch_sub(1, Ordering::AcqRel) == 1 && !context::in_interrupt() {
            run_pending();
            // A wake-up deferred while bottom halves were off acts now.
            crate::thread::preempt_if_needed();
        }
    }
}

/// The bottom-half disable depth of this CPU (softirq processing counts one).
pub fn bh_depth() -> u32 {
    if cpu_local::is_installed() { cpu_local::current().softirq_depth.load(Ordering::Relaxed) } else { 0 }
}
