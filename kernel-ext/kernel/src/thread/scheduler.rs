//! Running the policy: per-CPU run queues (`rtedge_engine::sched`), the
//! switch, wake-ups with preemption, time slices for kernel threads, the
//! idle loop, and the per-thread timer that serves sleeps, timeouts and
//! periodic releases.
//!
//! The engine decides which thread runs next; this module keeps the
//! bookkeeping and asks `rtedge_arch::switch` to switch.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

use rtedge_arch::{apic, cpu, switch};
use rtedge_engine::sched::{self, Candidate, Picked, RunQueue, Running};

use super::{KIND_IDLE, MAX_THREADS, State, Thread, WakeReason, by_slot};
use crate::clockevent::{self, AlarmId};
use crate::cpu_local::{self, MAX_CPUS};
use crate::sync::IrqSpinLock;
use crate::{context, softirq, time, vectors};

/// One CPU's run queue, idle thread and time-slice alarm.
struct CpuScheduler {
    queue: RunQueue,
    idle: &'static Thread,
    slice_alarm: AlarmId,
}

/// CPUs that run the scheduler.
static ONLINE: AtomicU64 = AtomicU64::new(0);
/// CPUs reserved for pinned work (`isolcpus=`).
static ISOLATED: AtomicU64 = AtomicU64::new(0);

/// CPUs whose idle loop polls the clock for their next alarm instead of
/// halting until the timer interrupt (`rt_idle=poll`: the isolated CPUs).
static POLLING: AtomicU64 = AtomicU64::new(0);
/// Context switches performed, all CPUs.
static SWITCHES: AtomicU64 = AtomicU64::new(0);

/// What class of thread runs on a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RunningClass {
    /// The CPU's idle thread.
    Idle = 0,
    /// A kernel thread (fair share).
    Fair = 1,
    /// A real-time thread.
    Realtime = 2,
}

impl RunningClass {
    fn of(kind: super::Kind) -> Self {
        match kind {
            super::Kind::Realtime { .. } => RunningClass::Realtime,
            super::Kind::Kernel { .. } => RunningClass::Fair,
            super::Kind::Idle => RunningClass::Idle,
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => RunningClass::Fair,
            2 => RunningClass::Realtime,
            _ => RunningClass::Idle,
        }
    }
}

/// One CPU's scheduling state, on cache lines of its own: written by that
/// CPU (its switch) and, for the queue and `need_resched`, by CPUs that
/// wake threads onto it.
#[repr(align(64))]
struct PerCpu {
    /// The thread running here (a `&'static Thread`, 0 before scheduling).
    current: AtomicUsize,
    /// The thread just switched away from, until its registers are saved.
    previous: AtomicUsize,
    /// Set when a more urgent thread is ready here.
    need_resched: AtomicBool,
    /// What runs here (a [`RunningClass`]).
    running: AtomicU8,
    /// Threads queued here (runnable, not running).
    queued: AtomicU32,
    /// A non-RT thread preempted (by an RT thread) inside softirq work or a
    /// `bh_disable` section: it is kept out of the run queue and resumed
    /// before any other non-RT thread, as Linux runs under RTLinux (0 = none).
    bh_owner: AtomicUsize,
    /// Context switches on this CPU.
    switches: AtomicU64,
    /// This CPU's run queue (`None` until the CPU schedules).
    scheduler: IrqSpinLock<Option<CpuScheduler>>,
}

impl PerCpu {
    const fn new() -> Self {
        Self {
            current: AtomicUsize::new(0),
            previous: AtomicUsize::new(0),
            need_resched: AtomicBool::new(false),
            running: AtomicU8::new(RunningClass::Idle as u8),
            queued: AtomicU32::new(0),
            bh_owner: AtomicUsize::new(0),
            switches: AtomicU64::new(0),
            scheduler: IrqSpinLock::new(None),
        }
    }

    fn is_idle(&self) -> bool {
        self.running.load(Ordering::Relaxed) == RunningClass::Idle as u8 && self.queued.load(Ordering::Relaxed) == 0
    }
}

static CPUS: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];

/// This CPU's scheduling state (the per-CPU block is installed).
#[inline(always)]
fn here() -> &'static PerCpu {
    &CPUS[cpu_local::current_index()]
}

/// The scheduling state of CPU `cpu`, if that CPU is up.
fn on(cpu: u32) -> Option<&'static PerCpu> {
    cpu_local::get(cpu as usize).map(|_| &CPUS[cpu as usize])
}

/// What class of thread runs on CPU `cpu` (`None`: no such CPU).
pub fn running_class_on(cpu: u32) -> Option<RunningClass> {
    on(cpu).map(|state| RunningClass::from_u8(state.running.load(Ordering::Acquire)))
}

/// Threads queued (runnable, not running) on CPU `cpu`.
pub fn queued_on(cpu: u32) -> u32 {
    on(cpu).map_or(0, |state| state.queued.load(Ordering::Acquire))
}

/// Context switches performed on CPU `cpu`.
pub fn cpu_switches_on(cpu: u32) -> u64 {
    on(cpu).map_or(0, |state| state.switches.load(Ordering::Relaxed))
}

/// The address of the thread running on CPU `cpu` (0: none yet), for
/// identity checks only.
pub fn current_on_address(cpu: u32) -> usize {
    on(cpu).map_or(0, |state| state.current.load(Ordering::Acquire))
}

/// Whether CPU `cpu` (this one, at an interrupt's exit) has a reschedule
/// pending and a thread to switch away from.
#[inline(always)]
pub fn reschedule_pending(cpu: usize) -> bool {
    let state = &CPUS[cpu];
    state.need_resched.load(Ordering::Acquire) && state.current.load(Ordering::Relaxed) != 0
}

/// Runs `body` while holding CPU `cpu`'s run queue lock, interrupts off
/// (tests that need a wake-up to find the queue busy); `None`: no such CPU.
pub fn with_queue_locked<R>(cpu: u32, body: impl FnOnce() -> R) -> Option<R> {
    let _queue = on(cpu)?.scheduler.lock();
    Some(body())
}

/// Mask of CPUs online in the scheduler.
pub fn online_mask() -> u64 {
    ONLINE.load(Ordering::Acquire)
}

/// Sets the CPUs kept free of unpinned work.
pub fn set_isolated(mask: u64) {
    ISOLATED.store(mask, Ordering::Release);
}

/// CPUs kept free of unpinned work.
pub fn isolated_mask() -> u64 {
    ISOLATED.load(Ordering::Acquire)
}

/// Whether CPU `cpu`'s idle loop polls the clock.
fn polls(cpu: usize) -> bool {
    POLLING.load(Ordering::Relaxed) & (1u64 << (cpu & 63)) != 0
}

/// A kernel test's hook between a sleeping thread queueing its alarm and
/// its switch away (`None` in normal runs): there it changes what another
/// CPU may change meanwhile, `set_polling`, widening that window.
static SLEEP_WINDOW: IrqSpinLock<Option<fn()>> = IrqSpinLock::new(None);
static SLEEP_WINDOW_SET: AtomicBool = AtomicBool::new(false);

/// Kernel tests only: calls `hook` in every sleep between queueing the
/// thread's alarm and switching away (`None` removes it).
pub fn widen_sleep_window(hook: Option<fn()>) {
    *SLEEP_WINDOW.lock() = hook;
    SLEEP_WINDOW_SET.store(hook.is_some(), Ordering::Release);
}

/// Sets the CPUs whose idle loop polls the clock instead of halting.
pub fn set_polling(mask: u64) {
    POLLING.store(mask, Ordering::Release);
}

/// CPUs whose idle loop polls the clock instead of halting.
pub fn polling_mask() -> u64 {
    POLLING.load(Ordering::Acquire)
}

/// Context switches since boot, all CPUs.
pub fn cpu_switches() -> u64 {
    SWITCHES.load(Ordering::Relaxed)
}

/// The thread running on this CPU.
pub fn current() -> &'static Thread {
    let pointer = here().current.load(Ordering::Acquire);
    debug_assert!(pointer != 0, "no current thread before the scheduler starts");
    // SAFETY: only the scheduler stores here, always a &'static Thread.
    unsafe { &*(pointer as *const Thread) }
}

/// The running thread, or `None` before the scheduler started on this CPU.
pub fn try_current() -> Option<&'static Thread> {
    if !cpu_local::is_installed() {
        return None;
    }
    let pointer = here().current.load(Ordering::Acquire);
    // SAFETY: as in `current`.
    (pointer != 0).then(|| unsafe { &*(pointer as *const Thread) })
}

/// The running thread's id.
pub fn current_id() -> super::ThreadId {
    current().id()
}

fn running_of(thread: &Thread) -> Running {
    match thread.effective_kind() {
        super::Kind::Realtime { priority } => Running::Realtime { priority },
        super::Kind::Kernel { .. } => Running::Fair { vruntime: thread.vruntime.load(Ordering::Relaxed) },
        super::Kind::Idle => Running::Idle,
    }
}

/// Makes `boot_thread` (the code running now on this CPU) the CPU's idle
/// thread and starts scheduling here. Called once per CPU.
fn init_cpu(idle: &'static Thread) {
    let index = cpu_local::current().index();
    let local = here();
    let slice_alarm = clockevent::register(slice_expired, 0);
    *local.scheduler.lock() = Some(CpuScheduler { queue: RunQueue::new(MAX_THREADS), idle, slice_alarm });
    idle.cpu.store(index, Ordering::Relaxed);
    idle.affinity.store(1 << index, Ordering::Relaxed);
    idle.pinned.store(true, Ordering::Relaxed);
    idle.kind_tag.store(KIND_IDLE, Ordering::Relaxed);
    idle.context_saved.store(false, Ordering::Release);
    idle.switched_in_ns.store(time::now_ns(), Ordering::Relaxed);
    idle.set_state(State::Running);
    local.current.store(idle as *const Thread as usize, Ordering::Release);
    ONLINE.fetch_or(1 << index, Ordering::AcqRel);
}

fn adopt_running_context_as_idle() -> Result<&'static Thread, super::ThreadError> {
    let index = cpu_local::current().index();
    let thread = super::claim_slot()?;
    let mut name = [0u8; 16];
    let text = format_name(&mut name, "idle/", index);
    super::set_name(thread, text);
    Ok(thread)
}

fn format_name<'a>(buffer: &'a mut [u8; 16], prefix: &'a str, index: u32) -> &'a str {
    use core::fmt::Write;
    struct Cursor<'b> {
        buffer: &'b mut [u8; 16],
        len: usize,
    }
    impl Write for Cursor<'_> {
        fn write_str(&mut self, text: &str) -> core::fmt::Result {
            let end = (self.len + text.len()).min(self.buffer.len());
            let take = end - self.len;
            self.buffer[self.len..end].copy_from_slice(&text.as_bytes()[..take]);
            self.len = end;
            Ok(())
        }
    }
    let mut cursor = Cursor { buffer, len: 0 };
    let _ = write!(cursor, "{prefix}{index}");
    let len = cursor.len;
    core::str::from_utf8(&buffer[..len]).unwrap_or(prefix)
}

/// Starts scheduling on the boot CPU: the boot context becomes `idle/0`.
/// An error (no thread slot for it) is a boot failure the caller reports.
pub fn finish_boot_cpu() -> Result<(), super::ThreadError> {
    let idle = adopt_running_context_as_idle()?;
    init_cpu(idle);
    super::ksoftirqd::register_hooks();
    Ok(())
}

/// Starts scheduling on a secondary CPU: its boot context becomes its idle
/// thread. The caller then enters [`idle_loop`]; an error (no thread slot)
/// is a boot failure the caller reports.
pub fn prepare_secondary_cpu() -> Result<(), super::ThreadError> {
    let idle = adopt_running_context_as_idle()?;
    init_cpu(idle);
    Ok(())
}

/// Longest time a polling idle CPU went without looking at the clock, and
/// how many such stalls exceeded [`POLL_STALL_LONG_NS`], since the last
/// [`reset_poll_stalls`] (all CPUs). A stall is time the CPU was taken
/// away from its poll: interrupt handlers, or, under a hypervisor, the
/// vCPU not running (`INFO cpu` `poll_stall_*`).
static POLL_STALL_MAX_NS: AtomicU64 = AtomicU64::new(0);
static POLL_STALLS_LONG: AtomicU64 = AtomicU64::new(0);
/// A poll stall longer than this is counted.
pub const POLL_STALL_LONG_NS: u64 = 250_000;

/// (longest poll stall in ns, stalls longer than [`POLL_STALL_LONG_NS`]).
pub fn poll_stalls() -> (u64, u64) {
    (POLL_STALL_MAX_NS.load(Ordering::Relaxed), POLL_STALLS_LONG.load(Ordering::Relaxed))
}

/// Starts a new window for [`poll_stalls`].
pub fn reset_poll_stalls() {
    POLL_STALL_MAX_NS.store(0, Ordering::Relaxed);
    POLL_STALLS_LONG.store(0, Ordering::Relaxed);
}

/// The idle loop: run whatever is ready, else halt until an interrupt
/// (or, on a polling CPU, look at the clock again).
pub fn idle_loop() -> ! {
    // When this CPU last looked at the clock in its poll (0: not polling).
    let mut last_look = 0u64;
    loop {
        cpu::interrupts_disable();
        let local = here();
        let work = local.need_resched.load(Ordering::Acquire) || local.queued.load(Ordering::Acquire) != 0;
        if work {
            last_look = 0;
            schedule_with(Reason::Preempt);
            cpu::interrupts_enable();
            continue;
        }
        if crate::softirq::pending_here() {
            last_look = 0;
            cpu::interrupts_enable();
            crate::softirq::run_pending();
            continue;
        }
        if polls(cpu_local::current_index()) {
            // A polling CPU releases its threads when the clock says so,
            // not when the timer interrupt arrives (under a hypervisor its
            // delivery can wait behind the emulator's other work), and
            // takes other interrupts between two looks at the clock.
            let now = time::now_ns();
            if last_look != 0 {
                let stall = now.saturating_sub(last_look);
                POLL_STALL_MAX_NS.fetch_max(stall, Ordering::Relaxed);
                if stall > POLL_STALL_LONG_NS {
                    POLL_STALLS_LONG.fetch_add(1, Ordering::Relaxed);
                }
            }
            last_look = now;
            if clockevent::run_due_here() {
                last_look = 0;
            } else {
                cpu::interrupt_window();
            }
            cpu::interrupts_enable();
            continue;
        }
        if clockevent::polling_here() {
            // Polling just turned off: the timer is armed again before the halt.
            clockevent::set_polling_here(None);
        }
        last_look = 0;
        // STI's shadow covers HLT: an interrupt between the check and the
        // halt wakes the halt instead of being lost.
        cpu::enable_and_halt();
    }
}

/// Picks a CPU for a thread being placed for the first time.
pub(super) fn place_new(affinity: u64) -> u32 {
    let online = online_mask();
    let allowed = affinity & online;
    let free = allowed & !isolated_mask();
    let candidates = if free != 0 { free } else { allowed };
    if candidates == 0 {
        return 0;
    }
    least_loaded(candidates)
}

fn least_loaded(candidates: u64) -> u32 {
    let mut best = candidates.trailing_zeros();
    let mut best_load = u32::MAX;
    for cpu in 0..64u32 {
        if candidates & (1 << cpu) == 0 {
            continue;
        }
        if let Some(local) = on(cpu) {
            let running = local.running.load(Ordering::Relaxed);
            let load = local.queued.load(Ordering::Relaxed) * 2 + u32::from(running != RunningClass::Idle as u8);
            if load < best_load {
                best = cpu;
                best_load = load;
            }
        }
    }
    best
}

/// The CPU real-time threads go to when not pinned: the first isolated CPU
/// if any (that is what isolation is for), else CPU 0.
pub(super) fn default_realtime_cpu() -> u32 {
    let isolated = isolated_mask() & online_mask();
    if isolated != 0 { isolated.trailing_zeros() } else { 0 }
}

/// Chooses where a woken thread runs: its CPU if pinned; otherwise its last
/// CPU unless another allowed CPU is idle (unpinned threads stay off
/// isolated CPUs).
fn select_cpu(thread: &Thread) -> u32 {
    let online = online_mask();
    let allowed = thread.affinity() & online;
    if allowed == 0 {
        return thread.cpu();
    }
    if allowed.count_ones() == 1 {
        return allowed.trailing_zeros();
    }
    let candidates = if thread.is_pinned() { allowed } else { allowed & !isolated_mask() };
    let candidates = if candidates == 0 { allowed } else { candidates };
    let last = thread.cpu();
    let idle = |cpu: u32| on(cpu).is_some_and(PerCpu::is_idle);
    if candidates & (1 << last) != 0 && idle(last) {
        return last;
    }
    for cpu in 0..64u32 {
        if candidates & (1 << cpu) != 0 && idle(cpu) {
            return cpu;
        }
    }
    if candidates & (1 << last) != 0 { last } else { least_loaded(candidates) }
}

/// Queues a thread that just became `Ready` and preempts whatever runs on
/// its CPU if the policy says so. Safe from any context; never allocates.
pub(super) fn enqueue_woken(thread: &'static Thread) {
    // Woken before its CPU finished switching it out (it set its waiting
    // state and is on its way through `schedule_with`): it goes back to
    // that CPU's queue. Queued elsewhere, another CPU could pick it, mark it
    // Running and wait for its registers, while its own CPU, seeing
    // Running, took it for preempted and queued it a second time.
    let target_cpu = if thread.context_saved.load(Ordering::Acquire) { select_cpu(thread) } else { thread.cpu() };
    thread.cpu.store(target_cpu, Ordering::Relaxed);
    let Some(target) = on(target_cpu) else { return };
    let preempt = {
        let mut guard = target.scheduler.lock();
        let Some(scheduler) = guard.as_mut() else { return };
        let candidate = match thread.effective_kind() {
            super::Kind::Realtime { priority } => {
                if scheduler.queue.enqueue_realtime(thread.slot, priority, false).is_err() {
                    return;
                }
                Candidate::Realtime { priority }
            }
            super::Kind::Kernel { .. } => {
                let weight = thread.weight.load(Ordering::Relaxed);
                match scheduler.queue.enqueue_fair(thread.slot, thread.vruntime.load(Ordering::Relaxed), weight, true) {
                    Ok(placed) => {
                        thread.vruntime.store(placed, Ordering::Relaxed);
                        Candidate::Fair { vruntime: placed }
                    }
                    Err(_) => return,
                }
            }
            super::Kind::Idle => return,
        };
        target.queued.store((scheduler.queue.realtime_len() + scheduler.queue.fair_len()) as u32, Ordering::Release);
        let running = target.current.load(Ordering::Acquire);
        if running == 0 {
            false
        } else {
            // SAFETY: the scheduler stores only &'static Thread pointers here.
            let running = unsafe { &*(running as *const Thread) };
            let preempt = sched::should_preempt(running_of(running), candidate);
            if !preempt && let (Running::Fair { .. }, Candidate::Fair { .. }) = (running_of(running), candidate) {
                // The running kernel thread had the CPU alone, so no slice
                // was armed (tickless): share from now on.
                if !clockevent::is_armed(scheduler.slice_alarm) {
                    let weight = running.weight.load(Ordering::Relaxed);
                    let total = scheduler.queue.fair_weight() + u64::from(weight);
                    let slice = sched::fair_slice_ns(weight, total, scheduler.queue.fair_len() + 1);
                    clockevent::arm(scheduler.slice_alarm, time::now_ns() + slice);
                }
            }
            preempt
        }
    };
    if preempt {
        request_reschedule(target_cpu, thread.is_realtime());
    }
}

/// Applies a changed class or level of `thread` at once (priority
/// inheritance, `set_scheduling`): a queued thread is queued again at its new
/// level, at the tail, and preempts what runs if it now outranks it; a
/// running thread whose level fell gives way if a queued one outranks it
/// now. A waiting thread takes its new level when it is woken. Called with
/// interrupts off (under the inheritance lock); never allocates.
pub(super) fn reprioritize(thread: &'static Thread) {
    loop {
        let cpu = thread.cpu();
        let Some(target) = on(cpu) else { return };
        let mut guard = target.scheduler.lock();
        let Some(scheduler) = guard.as_mut() else { return };
        // `enqueue_woken` names the CPU before it takes that CPU's queue
        // lock: a thread moving meanwhile is looked for again.
        if thread.cpu() != cpu {
            continue;
        }
        let running = target.current.load(Ordering::Acquire);
        let preempt = if scheduler.queue.remove(thread.slot) {
            let candidate = match thread.effective_kind() {
                super::Kind::Realtime { priority } => {
                    let _ = scheduler.queue.enqueue_realtime(thread.slot, priority, false);
                    Candidate::Realtime { priority }
                }
                super::Kind::Kernel { .. } => {
                    let weight = thread.weight.load(Ordering::Relaxed);
                    let vruntime = thread.vruntime.load(Ordering::Relaxed);
                    let placed = scheduler.queue.enqueue_fair(thread.slot, vruntime, weight, false).unwrap_or(vruntime);
                    thread.vruntime.store(placed, Ordering::Relaxed);
                    Candidate::Fair { vruntime: placed }
                }
                super::Kind::Idle => return,
            };
            // SAFETY: the scheduler stores only &'static Thread pointers here.
            running != 0 && sched::should_preempt(running_of(unsafe { &*(running as *const Thread) }), candidate)
        } else if running == thread as *const Thread as usize {
            // Running here (interrupts are off, so no switch is under way):
            // the context checks see its new class at once. Another CPU's
            // flags follow at its next switch.
            if cpu == cpu_local::current().index() {
                target.running.store(RunningClass::of(thread.effective_kind()) as u8, Ordering::Release);
                context::on(cpu as usize).set_realtime(thread.is_realtime());
            }
            scheduler.queue.best_candidate().is_some_and(|best| sched::should_preempt(running_of(thread), best))
        } else {
            false
        };
        drop(guard);
        if preempt {
            request_reschedule(cpu, true);
        }
        return;
    }
}

/// Makes `target` CPU reschedule as soon as possible.
fn request_reschedule(target: u32, candidate_is_realtime: bool) {
    let Some(state) = on(target) else { return };
    state.need_resched.store(true, Ordering::Release);
    if target != cpu_local::current().index() {
        if let Some(remote) = cpu_local::get(target as usize) {
            apic::send_ipi(remote.apic_id(), apic::Ipi::Fixed(vectors::RESCHEDULE));
        }
    } else if context::in_interrupt() {
        // The interrupt's exit path reschedules.
    } else if crate::softirq::in_softirq() && !candidate_is_realtime {
        // Softirq work finishes before another kernel thread gets the CPU;
        // the flag is acted on when processing ends.
    } else if cpu::interrupts_enabled() {
        schedule_with(Reason::Preempt);
    } else {
        // Interrupts are off (a lock is held): a self-IPI fires the moment
        // they are enabled again, and its exit path reschedules.
        apic::send_self(vectors::RESCHEDULE);
    }
}

/// Why the running thread enters the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    /// Something more urgent became ready (involuntary).
    Preempt,
    /// The thread gives up the CPU but stays ready.
    Yield,
    /// The thread has set a waiting state (or exited).
    Block,
}

/// Called from the interrupt exit path when a reschedule is pending.
pub fn preempt_from_interrupt() {
    if crate::softirq::in_softirq() {
        // Softirq processing is preempted only by real-time threads.
        let local = here();
        let realtime_waiting = local.scheduler.lock().as_ref().is_some_and(|scheduler| scheduler.queue.best_realtime_priority().is_some());
        if !realtime_waiting {
            return;
        }
    }
    schedule_with(Reason::Preempt);
}

/// Reschedules now if a more urgent thread is waiting and this is a point
/// where switching is allowed (thread context, interrupts on, no bottom
/// halves disabled).
pub fn preempt_if_needed() {
    if cpu_local::is_installed()
        && here().need_resched.load(Ordering::Acquire)
        && !context::in_interrupt()
        && !crate::softirq::in_softirq()
        && cpu::interrupts_enabled()
    {
        schedule_with(Reason::Preempt);
    }
}

/// Gives up the CPU voluntarily, staying ready.
pub fn yield_now() {
    schedule_with(Reason::Yield);
}

/// Runs the scheduler for a thread that set a waiting state.
pub fn schedule() {
    schedule_with(Reason::Block);
}

fn schedule_with(reason: Reason) {
    let interrupts_were_enabled = cpu::interrupts_save();
    let cpu = cpu_local::current_index();
    let local = &CPUS[cpu];
    if context::on(cpu).in_interrupt() {
        // Never switch inside an interrupt handler; its exit path will.
        cpu::interrupts_restore(interrupts_were_enabled);
        return;
    }
    local.need_resched.store(false, Ordering::Release);
    let previous = current();
    let now = time::now_ns();
    let next = {
        let mut guard = local.scheduler.lock();
        let Some(scheduler) = guard.as_mut() else {
            drop(guard);
            cpu::interrupts_restore(interrupts_were_enabled);
            return;
        };
        let ran = now.saturating_sub(previous.switched_in_ns.load(Ordering::Relaxed));
        previous.runtime_ns.fetch_add(ran, Ordering::Relaxed);
        previous.switched_in_ns.store(now, Ordering::Relaxed);
        if let super::Kind::Kernel { .. } = previous.kind() {
            let weight = previous.weight.load(Ordering::Relaxed);
            previous.vruntime.fetch_add(sched::virtual_runtime(ran, weight), Ordering::Relaxed);
        }
        let holds_bottom_halves = !previous.is_realtime() && softirq::bh_depth_on(cpu) != 0;
        // "Scheduling while atomic": a thread may leave the CPU inside
        // softirq work or a bh_disable section only when preempted, never
        // by sleeping there (its depth would be stranded with it).
        assert!(
            !holds_bottom_halves || core::ptr::eq(previous, scheduler.idle) || previous.state() == State::Running,
            "thread '{}' sleeps ({}) inside softirq work or with bottom halves disabled",
            previous.name(),
            previous.state().name()
        );
        if holds_bottom_halves && (core::ptr::eq(previous, scheduler.idle) || previous.state() == State::Running) {
            // Preempted inside softirq work or a bh_disable section (only RT
            // threads may do that): resumed before any other non-RT thread,
            // so no one else runs bottom halves or takes bh locks meanwhile.
            previous.set_state(State::Ready);
            if reason == Reason::Preempt {
                previous.involuntary_switches.fetch_add(1, Ordering::Relaxed);
            }
            local.bh_owner.store(previous as *const Thread as usize, Ordering::Relaxed);
        } else if core::ptr::eq(previous, scheduler.idle) {
            // The idle thread is never queued; it is "ready" whenever it is not running.
            previous.set_state(State::Ready);
        } else if previous.state() == State::Running {
            // Still this CPU's: a waiting thread woken before this switch
            // ends is queued here only (see `enqueue_woken`), so no other
            // CPU can have picked it and marked it Running.
            previous.set_state(State::Ready);
            if reason == Reason::Preempt {
                previous.involuntary_switches.fetch_add(1, Ordering::Relaxed);
            }
            match previous.effective_kind() {
                super::Kind::Realtime { priority } => {
                    let _ = scheduler.queue.enqueue_realtime(previous.slot, priority, reason == Reason::Preempt);
                }
                super::Kind::Kernel { .. } => {
                    let weight = previous.weight.load(Ordering::Relaxed);
                    let vruntime = previous.vruntime.load(Ordering::Relaxed);
                    if let Ok(placed) = scheduler.queue.enqueue_fair(previous.slot, vruntime, weight, false) {
                        previous.vruntime.store(placed, Ordering::Relaxed);
                    }
                }
                super::Kind::Idle => {}
            }
        }
        let owner = local.bh_owner.load(Ordering::Relaxed);
        let next = if owner != 0 && scheduler.queue.best_realtime_priority().is_none() {
            local.bh_owner.store(0, Ordering::Relaxed);
            if scheduler.queue.fair_len() > 0 {
                // Others wait: switch once its bottom-half section ends.
                local.need_resched.store(true, Ordering::Release);
            }
            // SAFETY: only `&'static Thread` pointers are stored in bh_owner.
            unsafe { &*(owner as *const Thread) }
        } else {
            match scheduler.queue.pick_next() {
                Some(picked) => match by_slot(picked.slot()) {
                    Some(thread) => {
                        if let Picked::Fair { vruntime, .. } = picked {
                            thread.vruntime.store(vruntime, Ordering::Relaxed);
                        }
                        thread
                    }
                    None => scheduler.idle,
                },
                None => scheduler.idle,
            }
        };
        next.set_state(State::Running);
        next.cpu.store(cpu as u32, Ordering::Relaxed);
        // First, so that the slice alarm's change below programs the timer
        // for what runs next.
        if polls(cpu) {
            let running = if core::ptr::eq(next, scheduler.idle) {
                clockevent::Running::Idle
            } else {
                // Its own priority, not a boost it may lose while it runs.
                clockevent::Running::Thread { level: running_level(next.kind()) }
            };
            clockevent::set_polling_here(Some(running));
        } else if clockevent::polling_here() {
            clockevent::set_polling_here(None);
        }
        // Kernel threads share the CPU by slices, armed only while others wait.
        match next.effective_kind() {
            super::Kind::Kernel { .. } if scheduler.queue.fair_len() > 0 => {
                let weight = next.weight.load(Ordering::Relaxed);
                let total = scheduler.queue.fair_weight() + u64::from(weight);
                let slice = sched::fair_slice_ns(weight, total, scheduler.queue.fair_len() + 1);
                scheduler.queue.observe_running(next.vruntime.load(Ordering::Relaxed));
                clockevent::arm(scheduler.slice_alarm, now + slice);
            }
            _ => {
                clockevent::cancel(scheduler.slice_alarm);
            }
        }
        local.running.store(RunningClass::of(next.effective_kind()) as u8, Ordering::Release);
        local.queued.store((scheduler.queue.realtime_len() + scheduler.queue.fair_len()) as u32, Ordering::Release);
        next
    };
    if core::ptr::eq(next, previous) {
        cpu::interrupts_restore(interrupts_were_enabled);
        return;
    }
    next.switched_in_ns.store(now, Ordering::Relaxed);
    next.switches.fetch_add(1, Ordering::Relaxed);
    SWITCHES.fetch_add(1, Ordering::Relaxed);
    local.switches.fetch_add(1, Ordering::Relaxed);
    local.previous.store(previous as *const Thread as usize, Ordering::Release);
    local.current.store(next as *const Thread as usize, Ordering::Release);
    context::on(cpu).set_realtime(next.is_realtime());
    // Published to whichever CPU resumes `previous` by the Release store of
    // its `context_saved` in `finish_switch`.
    previous.bh_depth.store(softirq::bh_depth_on(cpu), Ordering::Relaxed);
    // Another CPU may still be saving `next`'s registers (and its depth).
    while !next.context_saved.load(Ordering::Acquire) {
        cpu::pause();
    }
    softirq::set_bh_depth_on(cpu, next.bh_depth.load(Ordering::Relaxed));
    next.context_saved.store(false, Ordering::Relaxed);
    // SAFETY: interrupts are off; `previous` is this CPU's running thread and
    // `next` holds saved (or prepared) registers no other CPU is using.
    unsafe { switch::switch(previous.context.get(), next.context.get()) };
    finish_switch();
    // Back on `previous`, possibly on another CPU. Work queued for the bottom
    // halves runs before a non-RT thread continues.
    if !previous.is_realtime() {
        crate::softirq::run_pending();
        if here().need_resched.load(Ordering::Acquire) && !crate::softirq::in_softirq() {
            cpu::interrupts_restore(interrupts_were_enabled);
            if interrupts_were_enabled {
                schedule_with(Reason::Preempt);
            }
            return;
        }
    }
    cpu::interrupts_restore(interrupts_were_enabled);
}

/// Runs on the new thread right after a switch: the previous thread's
/// registers are now saved, so another CPU may resume it.
fn finish_switch() {
    let previous = here().previous.swap(0, Ordering::AcqRel);
    if previous != 0 {
        // SAFETY: the scheduler stores only &'static Thread pointers here.
        let previous = unsafe { &*(previous as *const Thread) };
        previous.context_saved.store(true, Ordering::Release);
    }
}

/// First code of every new thread (the arch trampoline calls it).
pub(super) extern "C" fn thread_start(slot: u64) -> ! {
    finish_switch();
    cpu::interrupts_enable();
    let Some(thread) = by_slot(slot as u16) else { super::exit(-1) };
    if !thread.is_realtime() {
        crate::softirq::run_pending();
    }
    // A stop requested before the thread first ran (kthread_stop of a
    // thread never woken, or stopped before it got the CPU): as in Linux's
    // kthread(), the function never runs and the stop returns -EINTR.
    if thread.stop_requested() {
        // SAFETY: the entry was stored at creation and only this thread takes it.
        unsafe { (*thread.entry.get()).discard() };
        super::exit(super::STOPPED_BEFORE_START)
    }
    // SAFETY: the entry was stored at creation and only this thread runs it.
    let code = unsafe { (*thread.entry.get()).run() };
    super::exit(code)
}

/// Final switch away from an exiting thread.
pub(super) fn exit_current(thread: &'static Thread) -> ! {
    // Interrupts stay off from here: the thread must not be preempted
    // between becoming Exited and waking its joiners.
    cpu::interrupts_disable();
    thread.set_state(State::Exited);
    thread.exit_waiters.wake_all();
    schedule_with(Reason::Block);
    unreachable!("an exited thread was resumed")
}

/// The level of the alarm that wakes `thread` (`clockevent::Alarm::level`):
/// on a polling CPU it interrupts the threads running below it.
fn alarm_level(thread: &Thread) -> u8 {
    match thread.effective_kind() {
        super::Kind::Realtime { priority } => clockevent::realtime_level(priority),
        _ => clockevent::LEVEL_ORDINARY,
    }
}

/// The level of a thread running on a polling CPU (`clockevent::Running`):
/// only alarms above it need the timer.
fn running_level(kind: super::Kind) -> u8 {
    match kind {
        super::Kind::Realtime { priority } => clockevent::realtime_level(priority),
        _ => 0,
    }
}

/// Sleeps the calling thread until `deadline_ns` (or an earlier wake-up).
pub(super) fn sleep_current(thread: &'static Thread, deadline_ns: u64) {
    let Some(alarm) = thread.thread_alarm() else { return };
    let interrupts_were_enabled = cpu::interrupts_save();
    thread.wake_reason.store(WakeReason::Signaled as u8, Ordering::Relaxed);
    thread.set_state(State::Sleeping);
    // Pairs with the fence in `cancel`/`request_stop`: either they see
    // Sleeping (and wake this thread) or this sees their flag.
    fence(Ordering::SeqCst);
    // A request that came meanwhile may already have woken (and queued)
    // this thread: then it is Ready and the switch below finds it in the
    // queue. Taking it back to Running behind the queue's back would leave
    // a running thread queued, to be picked again after it exits.
    if thread.interrupted() && thread.transition(State::Sleeping, State::Running) {
        cpu::interrupts_restore(interrupts_were_enabled);
        return;
    }
    // Deferred only when this CPU's timer is already in polling mode: the
    // switch below then reprograms it whatever the polling mask says by
    // then (another CPU may change the mask in between).
    if clockevent::polling_here() {
        clockevent::arm_before_switch(alarm, deadline_ns, alarm_level(thread));
    } else {
        clockevent::arm_with_level(alarm, deadline_ns, alarm_level(thread));
    }
    if SLEEP_WINDOW_SET.load(Ordering::Acquire) {
        let hook = *SLEEP_WINDOW.lock();
        if let Some(hook) = hook {
            hook();
        }
    }
    schedule_with(Reason::Block);
    clockevent::cancel(alarm);
    cpu::interrupts_restore(interrupts_were_enabled);
}

/// Suspends the calling thread until woken.
pub(super) fn suspend_current(thread: &'static Thread) {
    let interrupts_were_enabled = cpu::interrupts_save();
    thread.set_state(State::Suspended);
    // Pairs with the fences in `wake_up` and `cancel`/`request_stop`.
    fence(Ordering::SeqCst);
    // A wake-up may have landed between the caller's check and the state change.
    if (thread.wake_pending.swap(false, Ordering::AcqRel) || thread.interrupted()) && thread.transition(State::Suspended, State::Running) {
        cpu::interrupts_restore(interrupts_were_enabled);
        return;
    }
    schedule_with(Reason::Block);
    cpu::interrupts_restore(interrupts_were_enabled);
}

/// Blocks the calling thread on a wait queue (state already `Blocked`),
/// with an optional timeout.
pub(super) fn block_current(thread: &'static Thread, deadline_ns: Option<u64>) {
    let alarm = deadline_ns.and_then(|deadline| thread.thread_alarm().map(|alarm| (alarm, deadline)));
    if let Some((alarm, deadline)) = alarm {
        clockevent::arm_with_level(alarm, deadline, alarm_level(thread));
    }
    schedule_with(Reason::Block);
    if let Some((alarm, _)) = alarm {
        clockevent::cancel(alarm);
    }
}

/// Wakes a thread out of any wait because of a cancel or stop request.
pub(super) fn interrupt_wait(thread: &'static Thread) {
    for from in [State::Sleeping, State::Suspended, State::Blocked] {
        if thread.transition(from, State::Ready) {
            thread.wake_reason.store(WakeReason::Interrupted as u8, Ordering::Release);
            enqueue_woken(thread);
            return;
        }
    }
}

/// Wakes a blocked thread (wait queues). Returns false if it was not blocked.
pub(super) fn wake_blocked(thread: &'static Thread) -> bool {
    if thread.transition(State::Blocked, State::Ready) {
        thread.wake_reason.store(WakeReason::Signaled as u8, Ordering::Release);
        enqueue_woken(thread);
        true
    } else {
        false
    }
}

/// The per-thread timer fired: end a sleep or a timed wait.
pub(super) fn thread_alarm_fired(_: AlarmId, slot: u64) {
    let Some(thread) = by_slot(slot as u16) else { return };
    for from in [State::Sleeping, State::Blocked] {
        if thread.transition(from, State::Ready) {
            thread.alarm_woke_ns.store(time::now_ns(), Ordering::Relaxed);
            thread.wake_reason.store(WakeReason::Timeout as u8, Ordering::Release);
            enqueue_woken(thread);
            return;
        }
    }
}

/// A kernel thread's time slice ended while others wait: reschedule.
fn slice_expired(_: AlarmId, _: u64) {
    here().need_resched.store(true, Ordering::Release);
}

/// The reschedule IPI's handler: the flag is set; the exit path acts.
pub(crate) fn reschedule_interrupt(_vector: u8) {
    here().need_resched.store(true, Ordering::Release);
}
