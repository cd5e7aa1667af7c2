//! Threads: real-time threads (fixed priorities above everything else,
//! FIFO among equals, periodic releases, suspend/wake, cancellation with
//! cleanup handlers) and kernel threads (fair share by nice value, create
//! stopped or running, voluntary exit, stop requests), in one address space.
//!
//! Thread control blocks live in a fixed table of slots and are never freed:
//! an exited thread's slot (and stack) is reused by a later thread, so no
//! thread operation ever returns memory to the heap, and a stale
//! [`ThreadId`] is recognised by its serial number.
//!
//! Real-time threads allocate everything at creation (stack, control block,
//! timer) and may not touch the general heap afterwards; the heap checks it.

mod ksoftirqd;
mod mutex;
mod pi;
mod scheduler;
mod semaphore;
mod wait;

use core::cell::UnsafeCell;
use core::fmt;
use core::mem::{MaybeUninit, align_of, size_of};
use core::sync::atomic::{AtomicBool, AtomicI8, AtomicI32, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use rtedge_arch::switch::Context;
use rtedge_engine::histogram::LatencyHistogram;
use rtedge_engine::periodic::Periodic;
use rtedge_engine::pi::Level;
use rtedge_engine::sched::{NICE_MAX, NICE_MIN, RT_PRIORITY_MAX, weight_for_nice};
use rtedge_engine::seqlock::SeqBytes;

use crate::clockevent::{self, AlarmId};
use crate::memory::stacks::{self, Stack};
use crate::sync::IrqSpinLock;
use crate::{context, cpu_local, time};

pub use ksoftirqd::start_ksoftirqd;
pub use mutex::{Mutex, MutexGuard};
pub use pi::RtMutex;
pub(crate) use scheduler::reschedule_interrupt;
pub use scheduler::{
    POLL_STALL_LONG_NS, RunningClass, cpu_switches, cpu_switches_on, current, current_id, current_on_address, finish_boot_cpu, idle_loop,
    isolated_mask, online_mask, poll_stalls, polling_mask, preempt_from_interrupt, preempt_if_needed, prepare_secondary_cpu, queued_on,
    reschedule_pending, reset_poll_stalls, running_class_on, schedule, set_isolated, set_polling, try_current, widen_sleep_window,
    with_queue_locked, yield_now,
};
pub use semaphore::Semaphore;
pub use wait::{WaitError, WaitQueue};

/// Most threads that can exist at once (including idle threads).
pub const MAX_THREADS: usize = 256;
/// Longest thread name in bytes.
pub const NAME_CAPACITY: usize = NameText::CAPACITY;

/// A thread name under a sequence lock (32 bytes).
type NameText = SeqBytes<4>;
/// Default stack size of kernel threads.
pub const DEFAULT_STACK_SIZE: u64 = 64 * 1024;
/// Default stack size of real-time threads.
pub const DEFAULT_RT_STACK_SIZE: u64 = 32 * 1024;
/// Exit code of a thread ended by cancellation (as PTHREAD_CANCELED).
pub const CANCELED: i32 = -1;
/// Exit code of a thread stopped before it ever ran (kthread_stop of a
/// never-woken kthread returns -EINTR; its function is not called).
pub const STOPPED_BEFORE_START: i32 = -4;
/// Cleanup handlers one thread can have pushed at once.
pub const CLEANUP_CAPACITY: usize = 8;
/// Bytes of captured state a thread entry closure may hold inline (larger
/// closures are boxed, which real-time threads refuse).
pub const ENTRY_CAPACITY: usize = 128;

/// Identifies a thread: its slot and its serial number (unique per boot,
/// shown as the thread's id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ThreadId {
    slot: u16,
    serial: u32,
}

impl ThreadId {
    /// The number shown to users (`THREADS`, `ps`).
    pub fn serial(self) -> u32 {
        self.serial
    }
}

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.serial)
    }
}

/// A thread's scheduling class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Fixed priority 0..=63 (63 most urgent), above every kernel thread.
    Realtime { priority: u8 },
    /// Fair share weighted by nice -20..=19.
    Kernel { nice: i8 },
    /// A CPU's idle thread.
    Idle,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Realtime { .. } => "rt",
            Kind::Kernel { .. } => "kernel",
            Kind::Idle => "idle",
        }
    }
}

/// What a thread is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Slot unused.
    Free = 0,
    /// Created, not started yet (kthread_create).
    Created = 1,
    Ready = 2,
    Running = 3,
    /// Waiting on a wait queue (semaphore, mutex, event).
    Blocked = 4,
    /// Sleeping until a time (sleep, periodic release).
    Sleeping = 5,
    /// Suspended until woken (pthread_suspend_np).
    Suspended = 6,
    /// Finished; waiting to be joined or reused.
    Exited = 7,
}

impl State {
    fn from_u8(value: u8) -> State {
        match value {
            1 => State::Created,
            2 => State::Ready,
            3 => State::Running,
            4 => State::Blocked,
            5 => State::Sleeping,
            6 => State::Suspended,
            7 => State::Exited,
            _ => State::Free,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Free => "free",
            State::Created => "stopped",
            State::Ready => "ready",
            State::Running => "running",
            State::Blocked => "blocked",
            State::Sleeping => "sleeping",
            State::Suspended => "suspended",
            State::Exited => "exited",
        }
    }
}

/// Why a waiting thread was made ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum WakeReason {
    /// The awaited event happened (or an explicit wake-up).
    Signaled = 0,
    /// The timeout or sleep deadline passed.
    Timeout = 1,
    /// A cancellation or stop request arrived.
    Interrupted = 2,
}

/// Errors of thread operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadError {
    /// All thread slots are in use.
    TooManyThreads,
    /// No stack could be allocated.
    NoStack,
    /// The id names no live thread.
    NoSuchThread,
    /// The priority, nice value, CPU or name is out of range.
    InvalidArgument,
    /// A real-time thread's entry closure is too large to store inline.
    EntryTooLarge,
    /// The wait ended by timeout.
    Timeout,
    /// The operation needs a state the thread is not in.
    WrongState,
    /// Called from a context that may not do this (e.g. blocking in an IRQ).
    WrongContext,
}

impl fmt::Display for ThreadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ThreadError::TooManyThreads => "too many threads",
            ThreadError::NoStack => "no memory for a stack",
            ThreadError::NoSuchThread => "no such thread",
            ThreadError::InvalidArgument => "invalid argument",
            ThreadError::EntryTooLarge => "entry closure too large for a real-time thread",
            ThreadError::Timeout => "timed out",
            ThreadError::WrongState => "thread is in the wrong state",
            ThreadError::WrongContext => "not allowed in this context",
        })
    }
}

pub type Result<T> = core::result::Result<T, ThreadError>;

/// A thread entry stored inline in the control block: the closure's bytes
/// and the functions that move it out and run it, or drop it unrun.
struct Entry {
    storage: MaybeUninit<[u64; ENTRY_CAPACITY / 8]>,
    run: Option<EntryFunctions>,
}

/// How to run or drop what `Entry::store` wrote (each takes it once).
#[derive(Clone, Copy)]
struct EntryFunctions {
    run: unsafe fn(*mut u8) -> i32,
    discard: unsafe fn(*mut u8),
}

impl Entry {
    const fn empty() -> Self {
        Self { storage: MaybeUninit::uninit(), run: None }
    }

    /// Stores `f` inline if it fits, else boxed (kernel threads only).
    fn store<F: FnOnce() -> i32 + Send + 'static>(&mut self, f: F, allow_box: bool) -> Result<()> {
        type Boxed = Box<dyn FnOnce() -> i32 + Send>;
        unsafe fn run_inline<F: FnOnce() -> i32>(storage: *mut u8) -> i32 {
            // SAFETY: `store` wrote an `F` here and it is taken once.
            let f = unsafe { core::ptr::read(storage as *mut F) };
            f()
        }
        unsafe fn discard_inline<F>(storage: *mut u8) {
            // SAFETY: as in `run_inline`.
            drop(unsafe { core::ptr::read(storage as *mut F) });
        }
        unsafe fn run_boxed(storage: *mut u8) -> i32 {
            // SAFETY: `store` wrote a `Box<dyn FnOnce>` here; taken once.
            let f = unsafe { core::ptr::read(storage as *mut Boxed) };
            f()
        }
        if size_of::<F>() <= ENTRY_CAPACITY && align_of::<F>() <= align_of::<u64>() {
            // SAFETY: the storage is large and aligned enough for `F`.
            unsafe { core::ptr::write(self.storage.as_mut_ptr() as *mut F, f) };
            self.run = Some(EntryFunctions { run: run_inline::<F>, discard: discard_inline::<F> });
            Ok(())
        } else if allow_box {
            let boxed: Boxed = Box::new(f);
            // SAFETY: a fat Box pointer (16 bytes) fits the storage.
            unsafe { core::ptr::write(self.storage.as_mut_ptr() as *mut Boxed, boxed) };
            self.run = Some(EntryFunctions { run: run_boxed, discard: discard_inline::<Boxed> });
            Ok(())
        } else {
            Err(ThreadError::EntryTooLarge)
        }
    }

    /// Runs the stored entry (once).
    fn run(&mut self) -> i32 {
        match self.run.take() {
            // SAFETY: the functions match what `store` wrote; `take` makes it once.
            Some(functions) => unsafe { (functions.run)(self.storage.as_mut_ptr() as *mut u8) },
            None => 0,
        }
    }

    /// Drops the stored entry without running it (once).
    fn discard(&mut self) {
        if let Some(functions) = self.run.take() {
            // SAFETY: as in `run`.
            unsafe { (functions.discard)(self.storage.as_mut_ptr() as *mut u8) }
        }
    }
}

/// A cleanup handler (pthread_cleanup_push).
#[derive(Clone, Copy, Debug)]
pub struct CleanupHandler {
    pub routine: fn(usize),
    pub argument: usize,
}

/// Real-time bookkeeping, behind a lock (written by the thread, read by lists).
#[derive(Clone, Copy, Debug)]
pub struct RealtimeStats {
    pub periodic: Option<Periodic>,
    pub latency: LatencyHistogram,
    pub last_latency_ns: u64,
    /// Where the release latency went (reset with the histogram).
    pub wake: WakeBreakdown,
}

/// A periodic thread's release latency in two parts: from the due instant
/// to its timer interrupt (the interrupt came late: the CPU had interrupts
/// off, or, under an emulator, its virtual CPU was not running), and from
/// that interrupt to the thread running (the switch: a lock the scheduler
/// waited for, a longer interrupt handler, a non-preemptible section).
#[derive(Clone, Copy, Debug, Default)]
pub struct WakeBreakdown {
    /// Releases whose timer interrupt was seen (the rest were already due
    /// when the thread asked to wait).
    pub timed: u64,
    pub timer_late_max_ns: u64,
    pub dispatch_max_ns: u64,
    /// Releases with that part over [`WakeBreakdown::LATE_NS`].
    pub timer_late: u64,
    pub dispatch_late: u64,
}

impl WakeBreakdown {
    /// A part this long counts as late (a quarter of a 1 ms period).
    pub const LATE_NS: u64 = 250_000;
    const EMPTY: WakeBreakdown = WakeBreakdown { timed: 0, timer_late_max_ns: 0, dispatch_max_ns: 0, timer_late: 0, dispatch_late: 0 };

    fn record(&mut self, timer_late_ns: u64, dispatch_ns: u64) {
        self.timed += 1;
        self.timer_late_max_ns = self.timer_late_max_ns.max(timer_late_ns);
        self.dispatch_max_ns = self.dispatch_max_ns.max(dispatch_ns);
        self.timer_late += u64::from(timer_late_ns > Self::LATE_NS);
        self.dispatch_late += u64::from(dispatch_ns > Self::LATE_NS);
    }
}

/// A thread control block. Lives in the thread table forever; fields are
/// atomics or guarded so that lists can read them from any CPU.
pub struct Thread {
    slot: u16,
    serial: AtomicU32,
    /// The name: rewritten when the slot is reused while lists (`find`,
    /// `list`) may read it, so a sequence lock over atomics, never a plain
    /// array (a reader gets the old name or the new one, whole).
    name: NameText,
    kind_tag: AtomicU8,
    priority: AtomicU8,
    nice: AtomicI8,
    /// The level it runs at (`Level::encode`): its own, or one inherited
    /// from a waiter of a mutex it holds. Changed only under the
    /// inheritance lock (`pi`), read by the scheduler.
    effective: AtomicU8,
    /// The `RtMutex` it is blocked on (its address; 0 = none). Set and
    /// cleared under the inheritance lock; while set, the thread is inside
    /// `RtMutex::lock`, which borrows the mutex, so the address is live.
    blocked_on: AtomicUsize,
    state: AtomicU8,
    /// CPUs the thread may run on (bit n = CPU n).
    affinity: AtomicU64,
    /// Whether the thread was pinned explicitly (real-time threads always are).
    pinned: AtomicBool,
    /// The CPU it runs or last ran on.
    cpu: AtomicU32,
    /// True once the thread's registers are saved and another CPU may load
    /// them; false while it runs or is being switched out.
    context_saved: AtomicBool,
    context: UnsafeCell<Context>,
    stack: IrqSpinLock<Option<Stack>>,
    entry: UnsafeCell<Entry>,
    vruntime: AtomicU64,
    weight: AtomicU32,
    /// Set when the thread was preempted (goes to the head of its level).
    preempted: AtomicBool,
    wake_pending: AtomicBool,
    wake_reason: AtomicU8,
    cancel_requested: AtomicBool,
    stop_requested: AtomicBool,
    exit_code: AtomicI32,
    runtime_ns: AtomicU64,
    switches: AtomicU64,
    involuntary_switches: AtomicU64,
    switched_in_ns: AtomicU64,
    /// Its bottom-half depth while switched out: softirq processing or
    /// `bh_disable` belongs to the thread it runs in, not to the CPU, so a
    /// real-time thread that preempts softirq work does not run "in
    /// softirq" itself.
    bh_depth: AtomicU32,
    realtime: IrqSpinLock<RealtimeStats>,
    /// When its timer alarm last woke it (hard IRQ; for [`WakeBreakdown`]).
    alarm_woke_ns: AtomicU64,
    cleanup: UnsafeCell<([Option<CleanupHandler>; CLEANUP_CAPACITY], usize)>,
    alarm: IrqSpinLock<Option<AlarmId>>,
    /// Next waiter in the wait queue this thread waits on (slot, or NONE).
    wait_next: AtomicU16,
    /// Threads waiting for this one to exit.
    exit_waiters: WaitQueue,
    /// Pending signals (bit = `Signal` value), for buddy threads.
    signals: AtomicU32,
    /// The buddy thread of this (RT) thread, as a slot + serial (0 = none).
    buddy: AtomicU64,
}

// SAFETY: every field is atomic or lock-protected, except `context`,
// `entry` and `cleanup`, which have single writers: the entry is written
// only while the slot is reserved and not started (Created),
// the context only by the CPU switching the thread (serialised by
// `context_saved`), the cleanup stack only by the thread itself.
unsafe impl Sync for Thread {}
// SAFETY: as above; control blocks are shared as &'static.
unsafe impl Send for Thread {}

const KIND_KERNEL: u8 = 0;
const KIND_REALTIME: u8 = 1;
const KIND_IDLE: u8 = 2;

impl Thread {
    fn new(slot: u16) -> Self {
        Self {
            slot,
            serial: AtomicU32::new(0),
            name: NameText::new(),
            kind_tag: AtomicU8::new(KIND_KERNEL),
            priority: AtomicU8::new(0),
            nice: AtomicI8::new(0),
            effective: AtomicU8::new(0),
            blocked_on: AtomicUsize::new(0),
            state: AtomicU8::new(State::Free as u8),
            affinity: AtomicU64::new(u64::MAX),
            pinned: AtomicBool::new(false),
            cpu: AtomicU32::new(0),
            context_saved: AtomicBool::new(true),
            context: UnsafeCell::new(Context::empty()),
            stack: IrqSpinLock::new(None),
            entry: UnsafeCell::new(Entry::empty()),
            vruntime: AtomicU64::new(0),
            weight: AtomicU32::new(1024),
            preempted: AtomicBool::new(false),
            wake_pending: AtomicBool::new(false),
            wake_reason: AtomicU8::new(0),
            cancel_requested: AtomicBool::new(false),
            stop_requested: AtomicBool::new(false),
            exit_code: AtomicI32::new(0),
            runtime_ns: AtomicU64::new(0),
            switches: AtomicU64::new(0),
            involuntary_switches: AtomicU64::new(0),
            switched_in_ns: AtomicU64::new(0),
            bh_depth: AtomicU32::new(0),
            realtime: IrqSpinLock::new(RealtimeStats {
                periodic: None,
                latency: LatencyHistogram::new(),
                last_latency_ns: 0,
                wake: WakeBreakdown::EMPTY,
            }),
            alarm_woke_ns: AtomicU64::new(0),
            cleanup: UnsafeCell::new(([None; CLEANUP_CAPACITY], 0)),
            alarm: IrqSpinLock::new(None),
            wait_next: AtomicU16::new(wait::NONE),
            exit_waiters: WaitQueue::new(),
            signals: AtomicU32::new(0),
            buddy: AtomicU64::new(0),
        }
    }

    /// This thread's id.
    pub fn id(&self) -> ThreadId {
        ThreadId { slot: self.slot, serial: self.serial.load(Ordering::Acquire) }
    }

    /// The thread's name, copied out (the slot may be renamed for another
    /// thread later; the copy stays as read).
    pub fn name(&self) -> ThreadName {
        let mut bytes = [0u8; NAME_CAPACITY];
        // A rename runs only while a slot is being claimed; a few attempts
        // see it finish.
        match (0..8).find_map(|_| self.name.try_read(&mut bytes)) {
            Some(len) => ThreadName::new(core::str::from_utf8(&bytes[..len]).unwrap_or("?")),
            None => ThreadName::new("?"),
        }
    }

    pub fn kind(&self) -> Kind {
        match self.kind_tag.load(Ordering::Relaxed) {
            KIND_REALTIME => Kind::Realtime { priority: self.priority.load(Ordering::Relaxed) },
            KIND_IDLE => Kind::Idle,
            _ => Kind::Kernel { nice: self.nice.load(Ordering::Relaxed) },
        }
    }

    pub fn is_realtime(&self) -> bool {
        self.kind_tag.load(Ordering::Relaxed) == KIND_REALTIME
    }

    /// The class the scheduler runs it in: its own, or real time at an
    /// inherited priority while a more urgent thread waits for a mutex it
    /// holds (priority inheritance).
    pub fn effective_kind(&self) -> Kind {
        let own = self.kind();
        match (own, self.level()) {
            (Kind::Idle, _) | (_, Level::Fair) => own,
            (_, Level::Realtime(priority)) => Kind::Realtime { priority },
        }
    }

    /// Its own level, from its class and priority.
    fn base_level(&self) -> Level {
        match self.kind() {
            Kind::Realtime { priority } => Level::Realtime(priority),
            Kind::Kernel { .. } | Kind::Idle => Level::Fair,
        }
    }

    /// The level it runs and waits at (inherited or its own).
    fn level(&self) -> Level {
        Level::decode(self.effective.load(Ordering::Acquire))
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, state: State) {
        self.state.store(state as u8, Ordering::Release);
    }

    fn transition(&self, from: State, to: State) -> bool {
        self.state.compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// CPU the thread runs or last ran on.
    pub fn cpu(&self) -> u32 {
        self.cpu.load(Ordering::Relaxed)
    }

    /// CPUs the thread may run on.
    pub fn affinity(&self) -> u64 {
        self.affinity.load(Ordering::Relaxed)
    }

    /// Whether the thread is pinned to its CPUs by request.
    pub fn is_pinned(&self) -> bool {
        self.pinned.load(Ordering::Relaxed)
    }

    /// Total time the thread has run.
    pub fn runtime_ns(&self) -> u64 {
        let mut total = self.runtime_ns.load(Ordering::Relaxed);
        if self.state() == State::Running {
            total += time::now_ns().saturating_sub(self.switched_in_ns.load(Ordering::Relaxed));
        }
        total
    }

    /// Times the thread was switched in.
    pub fn switches(&self) -> u64 {
        self.switches.load(Ordering::Relaxed)
    }

    /// Times the thread was preempted.
    pub fn involuntary_switches(&self) -> u64 {
        self.involuntary_switches.load(Ordering::Relaxed)
    }

    /// The exit code, once exited.
    pub fn exit_code(&self) -> Option<i32> {
        (self.state() == State::Exited).then(|| self.exit_code.load(Ordering::Acquire))
    }

    /// Real-time statistics (release latency histogram, periodic counters).
    pub fn realtime_stats(&self) -> RealtimeStats {
        *self.realtime.lock()
    }

    /// The periodic counters, the wake breakdown and the latency summary,
    /// without the histogram (8 KiB, log-linear): what a thread listing
    /// needs, copied in a few words under the lock the release path takes.
    pub fn realtime_summary(&self) -> (Option<Periodic>, LatencySummary, WakeBreakdown) {
        let stats = self.realtime.lock();
        (stats.periodic, LatencySummary::of(&stats.latency), stats.wake)
    }

    /// Resets the release-latency histogram.
    pub fn reset_latency(&self) {
        let mut stats = self.realtime.lock();
        stats.latency.reset();
        stats.wake = WakeBreakdown::EMPTY;
    }

    /// Whether a stop was requested (kthread_should_stop).
    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::Acquire)
    }

    /// Whether a cancellation was requested.
    pub fn cancel_requested(&self) -> bool {
        self.cancel_requested.load(Ordering::Acquire)
    }

    fn interrupted(&self) -> bool {
        self.cancel_requested() || self.stop_requested()
    }

    fn thread_alarm(&self) -> Option<AlarmId> {
        *self.alarm.lock()
    }
}

/// The table of all thread control blocks.
struct Table {
    threads: [Option<&'static Thread>; MAX_THREADS],
    next_serial: u32,
}

static TABLE: IrqSpinLock<Table> = IrqSpinLock::new(Table { threads: [None; MAX_THREADS], next_serial: 1 });

/// The control block in `slot`, if the slot was ever used.
pub(crate) fn by_slot(slot: u16) -> Option<&'static Thread> {
    TABLE.lock().threads.get(usize::from(slot)).copied().flatten()
}

/// The live thread `id` names.
pub fn get(id: ThreadId) -> Option<&'static Thread> {
    let thread = by_slot(id.slot)?;
    (thread.serial.load(Ordering::Acquire) == id.serial && thread.state() != State::Free).then_some(thread)
}

/// Finds a live thread by its serial number or its name.
pub fn find(name_or_id: &str) -> Option<&'static Thread> {
    let serial = name_or_id.parse::<u32>().ok();
    let table = TABLE.lock();
    table.threads.iter().flatten().copied().find(|thread| {
        let state = thread.state();
        state != State::Free
            && (Some(thread.serial.load(Ordering::Acquire)) == serial || (state != State::Exited && thread.name() == name_or_id))
    })
}

/// Every thread slot in use (live and exited-but-unreaped threads).
pub fn all() -> Vec<&'static Thread> {
    let table = TABLE.lock();
    table.threads.iter().flatten().copied().filter(|thread| thread.state() != State::Free).collect()
}

/// Control blocks ever allocated (slots are reused, never freed: the
/// table's high-water mark), and the heap bytes each one holds.
pub fn slot_count() -> (usize, usize) {
    let table = TABLE.lock();
    (table.threads.iter().flatten().count(), core::mem::size_of::<Thread>())
}

/// Number of threads that are not free or exited.
pub fn live_count() -> usize {
    let table = TABLE.lock();
    table.threads.iter().flatten().filter(|thread| !matches!(thread.state(), State::Free | State::Exited)).count()
}

/// Claims a slot for a new thread: a free one, else a never-used one (a
/// control block is allocated for it, under the table lock: the heap lock
/// comes after it in the lock order), else the oldest exited thread nobody
/// joined. Never called from RT or interrupt context.
fn claim_slot() -> Result<&'static Thread> {
    let mut table = TABLE.lock();
    let mut claimed = table.threads.iter().flatten().copied().find(|thread| thread.state() == State::Free);
    if claimed.is_none()
        && let Some(index) = table.threads.iter().position(Option::is_none)
    {
        let fresh: &'static Thread = Box::leak(Box::new(Thread::new(index as u16)));
        table.threads[index] = Some(fresh);
        claimed = Some(fresh);
    }
    if claimed.is_none() {
        claimed = table
            .threads
            .iter()
            .flatten()
            .copied()
            .find(|thread| thread.state() == State::Exited && thread.context_saved.load(Ordering::Acquire));
        if let Some(thread) = claimed {
            drop(thread.stack.lock().take());
        }
    }
    let thread = claimed.ok_or(ThreadError::TooManyThreads)?;
    // Reserve it so a concurrent creator does not take it too.
    thread.set_state(State::Created);
    let serial = table.next_serial;
    table.next_serial = table.next_serial.wrapping_add(1).max(1);
    Ok(reset_slot(thread, serial))
}

fn reset_slot(thread: &'static Thread, serial: u32) -> &'static Thread {
    thread.wake_pending.store(false, Ordering::Relaxed);
    thread.cancel_requested.store(false, Ordering::Relaxed);
    thread.stop_requested.store(false, Ordering::Relaxed);
    thread.preempted.store(false, Ordering::Relaxed);
    thread.exit_code.store(0, Ordering::Relaxed);
    thread.runtime_ns.store(0, Ordering::Relaxed);
    thread.switches.store(0, Ordering::Relaxed);
    thread.involuntary_switches.store(0, Ordering::Relaxed);
    thread.vruntime.store(0, Ordering::Relaxed);
    thread.wait_next.store(wait::NONE, Ordering::Relaxed);
    thread.signals.store(0, Ordering::Relaxed);
    thread.buddy.store(0, Ordering::Relaxed);
    thread.bh_depth.store(0, Ordering::Relaxed);
    thread.effective.store(0, Ordering::Relaxed);
    thread.blocked_on.store(0, Ordering::Relaxed);
    *thread.realtime.lock() =
        RealtimeStats { periodic: None, latency: LatencyHistogram::new(), last_latency_ns: 0, wake: WakeBreakdown::EMPTY };
    // SAFETY: the slot is reserved (Created, serial 0): nobody else uses it.
    unsafe { (*thread.cleanup.get()).1 = 0 };
    thread.serial.store(serial, Ordering::Release);
    thread
}

fn set_name(thread: &Thread, name: &str) {
    thread.name.write(ThreadName::new(name).as_bytes());
}

/// A thread's name as read at one moment: a string of at most
/// [`NAME_CAPACITY`] bytes that derefs to `str`.
#[derive(Clone, Copy)]
pub struct ThreadName {
    bytes: [u8; NAME_CAPACITY],
    len: u8,
}

impl ThreadName {
    /// `text`, cut to [`NAME_CAPACITY`] bytes at a character boundary.
    pub fn new(text: &str) -> Self {
        let mut len = text.len().min(NAME_CAPACITY);
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0u8; NAME_CAPACITY];
        bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
        Self { bytes, len: len as u8 }
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("?")
    }
}

impl core::ops::Deref for ThreadName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ThreadName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for ThreadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ThreadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for ThreadName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ThreadName {}

impl PartialEq<str> for ThreadName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ThreadName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<ThreadName> for String {
    fn from(name: ThreadName) -> String {
        String::from(name.as_str())
    }
}

/// Describes a thread to create.
#[derive(Clone, Debug)]
pub struct Builder {
    name: String,
    kind: Kind,
    stack_size: u64,
    affinity: Option<u64>,
}

impl Builder {
    /// A kernel thread named `name` (at most 32 bytes are kept), nice 0.
    pub fn new(name: &str) -> Self {
        Self { name: String::from(name), kind: Kind::Kernel { nice: 0 }, stack_size: DEFAULT_STACK_SIZE, affinity: None }
    }

    /// Makes it a real-time thread with `priority` (0..=63, 63 most urgent).
    pub fn realtime(mut self, priority: u8) -> Self {
        self.kind = Kind::Realtime { priority };
        if self.stack_size == DEFAULT_STACK_SIZE {
            self.stack_size = DEFAULT_RT_STACK_SIZE;
        }
        self
    }

    /// Sets the nice value of a kernel thread (-20..=19).
    pub fn nice(mut self, nice: i8) -> Self {
        self.kind = Kind::Kernel { nice };
        self
    }

    /// Sets the stack size.
    pub fn stack_size(mut self, bytes: u64) -> Self {
        self.stack_size = bytes;
        self
    }

    /// Pins the thread to one CPU.
    pub fn cpu(mut self, cpu: u32) -> Self {
        self.affinity = Some(1u64 << cpu.min(63));
        self
    }

    /// Restricts the thread to a set of CPUs (bit n = CPU n).
    pub fn affinity(mut self, mask: u64) -> Self {
        self.affinity = Some(mask);
        self
    }

    /// Creates the thread stopped (kthread_create); start it with [`start`].
    pub fn create<F: FnOnce() -> i32 + Send + 'static>(self, entry: F) -> Result<ThreadId> {
        if context::in_realtime_thread() || context::in_interrupt() {
            return Err(ThreadError::WrongContext);
        }
        match self.kind {
            Kind::Realtime { priority } if priority > RT_PRIORITY_MAX => return Err(ThreadError::InvalidArgument),
            Kind::Kernel { nice } if !(NICE_MIN..=NICE_MAX).contains(&nice) => return Err(ThreadError::InvalidArgument),
            Kind::Idle => return Err(ThreadError::InvalidArgument),
            _ => {}
        }
        let online = scheduler::online_mask();
        let affinity = self.affinity.unwrap_or(u64::MAX) & online;
        if affinity == 0 {
            return Err(ThreadError::InvalidArgument);
        }
        // Real-time threads always run on exactly one CPU.
        let (affinity, pinned) = match self.kind {
            Kind::Realtime { .. } => {
                let cpu = match self.affinity {
                    Some(_) => affinity.trailing_zeros(),
                    None => scheduler::default_realtime_cpu(),
                };
                (1u64 << cpu, true)
            }
            _ => (affinity, self.affinity.is_some()),
        };
        let stack = stacks::allocate(self.stack_size).map_err(|_| ThreadError::NoStack)?;
        let thread = claim_slot()?;
        set_name(thread, &self.name);
        let first_cpu = scheduler::place_new(affinity);
        thread.affinity.store(affinity, Ordering::Relaxed);
        thread.pinned.store(pinned, Ordering::Relaxed);
        thread.cpu.store(first_cpu, Ordering::Relaxed);
        match self.kind {
            Kind::Realtime { priority } => {
                thread.kind_tag.store(KIND_REALTIME, Ordering::Relaxed);
                thread.priority.store(priority, Ordering::Relaxed);
            }
            Kind::Kernel { nice } => {
                thread.kind_tag.store(KIND_KERNEL, Ordering::Relaxed);
                thread.nice.store(nice, Ordering::Relaxed);
                thread.weight.store(weight_for_nice(nice), Ordering::Relaxed);
            }
            Kind::Idle => {}
        }
        thread.effective.store(thread.base_level().encode(), Ordering::Release);
        // SAFETY: the slot is reserved and not started; nobody reads the entry.
        if let Err(error) = unsafe { (*thread.entry.get()).store(entry, !matches!(self.kind, Kind::Realtime { .. })) } {
            thread.set_state(State::Free);
            return Err(error);
        }
        // The thread's timer lives on its first CPU (its only one if pinned).
        let alarm = match thread.thread_alarm() {
            Some(alarm) if alarm.cpu() == first_cpu => alarm,
            other => {
                if let Some(old) = other {
                    clockevent::unregister(old);
                }
                clockevent::register_on(first_cpu, scheduler::thread_alarm_fired, u64::from(thread.slot))
            }
        };
        *thread.alarm.lock() = Some(alarm);
        let top = stack.top();
        *thread.stack.lock() = Some(stack);
        // SAFETY: the stack is the thread's own and unused; the context is
        // not live anywhere (slot reserved, context_saved is true).
        unsafe { (*thread.context.get()).prepare(top, scheduler::thread_start, u64::from(thread.slot)) };
        thread.context_saved.store(true, Ordering::Release);
        thread.set_state(State::Created);
        Ok(thread.id())
    }

    /// Creates and starts the thread (kthread_run / pthread_create).
    pub fn spawn<F: FnOnce() -> i32 + Send + 'static>(self, entry: F) -> Result<ThreadId> {
        let id = self.create(entry)?;
        start(id)?;
        Ok(id)
    }
}

/// Starts a thread created stopped (wake_up_process).
pub fn start(id: ThreadId) -> Result<()> {
    let thread = get(id).ok_or(ThreadError::NoSuchThread)?;
    if !thread.transition(State::Created, State::Ready) {
        return Err(ThreadError::WrongState);
    }
    scheduler::enqueue_woken(thread);
    Ok(())
}

/// Changes a thread's scheduling class and priority at run time
/// (pthread_setschedparam), effective at once: a thread raised above what
/// runs on its CPU preempts it, a running thread lowered below a ready one
/// gives way, and the new level goes along the chain of mutex owners the
/// thread waits on. A kernel thread made real-time is pinned to the CPU it
/// is on (real-time threads run on exactly one CPU) and stays pinned.
pub fn set_scheduling(id: ThreadId, kind: Kind) -> Result<()> {
    match kind {
        Kind::Realtime { priority } if priority > RT_PRIORITY_MAX => return Err(ThreadError::InvalidArgument),
        Kind::Kernel { nice } if !(NICE_MIN..=NICE_MAX).contains(&nice) => return Err(ThreadError::InvalidArgument),
        Kind::Idle => return Err(ThreadError::InvalidArgument),
        _ => {}
    }
    if context::in_interrupt() || crate::softirq::in_softirq() {
        return Err(ThreadError::WrongContext);
    }
    let thread = get(id).ok_or(ThreadError::NoSuchThread)?;
    if thread.kind() == Kind::Idle || thread.state() == State::Exited {
        return Err(ThreadError::WrongState);
    }
    if matches!(kind, Kind::Realtime { .. }) && thread.affinity().count_ones() != 1 {
        thread.affinity.store(1 << thread.cpu(), Ordering::Relaxed);
        thread.pinned.store(true, Ordering::Relaxed);
    }
    pi::change_kind(thread, kind);
    Ok(())
}

/// Ends the calling thread with `code`: runs its remaining cleanup handlers
/// (newest first), wakes joiners, and never returns.
pub fn exit(code: i32) -> ! {
    let thread = current();
    run_cleanup_handlers(thread);
    thread.exit_code.store(code, Ordering::Release);
    if let Some(alarm) = thread.thread_alarm() {
        clockevent::cancel(alarm);
    }
    crate::events::emit(
        "threads.exit",
        "exit",
        &[("id", i64::from(thread.id().serial())), ("code", i64::from(code))],
        "thread",
        &thread.name(),
    );
    scheduler::exit_current(thread)
}

/// Waits (bounded) until `id` has exited and returns its exit code; the
/// slot is then free for reuse.
pub fn join(id: ThreadId, timeout_ns: Option<u64>) -> Result<i32> {
    let thread = get(id).ok_or(ThreadError::NoSuchThread)?;
    if core::ptr::eq(thread, current()) {
        return Err(ThreadError::WrongState);
    }
    let deadline = timeout_ns.map(|timeout| time::now_ns().saturating_add(timeout));
    let result = thread.exit_waiters.wait_until(deadline, || thread.state() == State::Exited || thread.id() != id);
    match result {
        Ok(()) => {
            if thread.id() != id {
                return Err(ThreadError::NoSuchThread);
            }
            let code = thread.exit_code.load(Ordering::Acquire);
            // Wait for the final switch away before reusing the slot.
            while !thread.context_saved.load(Ordering::Acquire) {
                rtedge_arch::cpu::pause();
            }
            release_slot(thread);
            Ok(code)
        }
        Err(WaitError::Timeout) => Err(ThreadError::Timeout),
        Err(WaitError::Interrupted) => Err(ThreadError::WrongState),
    }
}

/// Frees an exited thread's slot (its stack goes back to the stack cache).
fn release_slot(thread: &'static Thread) {
    if thread.state() != State::Exited {
        return;
    }
    let stack = thread.stack.lock().take();
    drop(stack);
    thread.set_state(State::Free);
}

/// Asks a kernel thread to stop (kthread_stop's request half) and wakes it
/// if it waits, so its waits return [`WaitError::Interrupted`].
pub fn request_stop(id: ThreadId) -> Result<()> {
    let thread = get(id).ok_or(ThreadError::NoSuchThread)?;
    thread.stop_requested.store(true, Ordering::Release);
    // Pairs with the waits' fence after their state change: either the
    // waiter sees the flag or `interrupt_wait` sees it waiting.
    fence(Ordering::SeqCst);
    if thread.state() == State::Created {
        start(id)?;
    }
    scheduler::interrupt_wait(thread);
    Ok(())
}

/// Requests a stop and waits at most `timeout_ns` for the exit (kthread_stop
/// with a bound). Returns the exit code.
pub fn stop(id: ThreadId, timeout_ns: u64) -> Result<i32> {
    request_stop(id)?;
    join(id, Some(timeout_ns))
}

/// Whether the calling thread was asked to stop (kthread_should_stop).
pub fn should_stop() -> bool {
    current().stop_requested()
}

/// Requests cancellation of `id` (pthread_cancel): the thread acts on it at
/// its next cancellation point, running its cleanup handlers, and exits
/// with [`CANCELED`]. A thread waiting at a cancellation point is woken.
pub fn cancel(id: ThreadId) -> Result<()> {
    let thread = get(id).ok_or(ThreadError::NoSuchThread)?;
    thread.cancel_requested.store(true, Ordering::Release);
    // As in `request_stop`.
    fence(Ordering::SeqCst);
    if thread.state() == State::Created {
        start(id)?;
    }
    scheduler::interrupt_wait(thread);
    Ok(())
}

/// Cancels `id` and waits (bounded) for it to end (RTLinux's
/// pthread_delete_np). Returns the exit code.
pub fn delete(id: ThreadId, timeout_ns: u64) -> Result<i32> {
    cancel(id)?;
    join(id, Some(timeout_ns))
}

/// A cancellation point (pthread_testcancel): exits the calling thread if
/// a cancellation was requested.
pub fn test_cancel() {
    let thread = current();
    if thread.cancel_requested() {
        exit(CANCELED);
    }
}

/// Pushes a cleanup handler (pthread_cleanup_push). Returns false if the
/// thread already has [`CLEANUP_CAPACITY`] handlers.
pub fn cleanup_push(routine: fn(usize), argument: usize) -> bool {
    let thread = current();
    // SAFETY: only the thread itself touches its cleanup stack.
    let (handlers, count) = unsafe { &mut *thread.cleanup.get() };
    if *count >= CLEANUP_CAPACITY {
        return false;
    }
    handlers[*count] = Some(CleanupHandler { routine, argument });
    *count += 1;
    true
}

/// Pops the newest cleanup handler, running it if `execute`
/// (pthread_cleanup_pop). Returns whether there was one.
pub fn cleanup_pop(execute: bool) -> bool {
    let thread = current();
    // SAFETY: only the thread itself touches its cleanup stack.
    let handler = unsafe {
        let (handlers, count) = &mut *thread.cleanup.get();
        if *count == 0 {
            return false;
        }
        *count -= 1;
        handlers[*count].take()
    };
    if let (true, Some(handler)) = (execute, handler) {
        (handler.routine)(handler.argument);
    }
    true
}

fn run_cleanup_handlers(thread: &Thread) {
    loop {
        // SAFETY: only the thread itself touches its cleanup stack.
        let handler = unsafe {
            let (handlers, count) = &mut *thread.cleanup.get();
            if *count == 0 {
                break;
            }
            *count -= 1;
            handlers[*count].take()
        };
        if let Some(handler) = handler {
            (handler.routine)(handler.argument);
        }
    }
}

/// Puts the calling thread to sleep until clock time `deadline_ns`
/// (clock_nanosleep with TIMER_ABSTIME). A cancellation point; returns
/// early with `Interrupted` on a stop request.
pub fn sleep_until(deadline_ns: u64) -> core::result::Result<(), WaitError> {
    let thread = current();
    loop {
        test_cancel();
        if thread.stop_requested() {
            return Err(WaitError::Interrupted);
        }
        if time::now_ns() >= deadline_ns {
            return Ok(());
        }
        scheduler::sleep_current(thread, deadline_ns);
    }
}

/// Sleeps for `duration_ns`.
pub fn sleep_ns(duration_ns: u64) -> core::result::Result<(), WaitError> {
    sleep_until(time::now_ns().saturating_add(duration_ns))
}

/// Suspends the calling thread until [`wake_up`] (pthread_suspend_np). A
/// wake-up sent before the suspend is not lost: the call returns at once.
/// A cancellation point.
pub fn suspend_self() {
    let thread = current();
    test_cancel();
    if thread.wake_pending.swap(false, Ordering::AcqRel) {
        return;
    }
    scheduler::suspend_current(thread);
    test_cancel();
}

/// Wakes a suspended thread (pthread_wakeup_np), or leaves a pending
/// wake-up for its next suspend. Safe from any context (IRQ, softirq, RT
/// thread, kernel thread); never allocates.
pub fn wake_up(id: ThreadId) -> Result<()> {
    let thread = get(id).ok_or(ThreadError::NoSuchThread)?;
    thread.wake_pending.store(true, Ordering::Release);
    // Pairs with `suspend_current`'s fence after it marks itself Suspended.
    fence(Ordering::SeqCst);
    if thread.transition(State::Suspended, State::Ready) {
        thread.wake_pending.store(false, Ordering::Release);
        thread.wake_reason.store(WakeReason::Signaled as u8, Ordering::Release);
        scheduler::enqueue_woken(thread);
    }
    Ok(())
}

/// The release of a periodic thread, as seen when it resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Release {
    /// When the release was due.
    pub release_ns: u64,
    /// How late the thread resumed after it.
    pub latency_ns: u64,
    /// Whether the previous job finished after this release (a deadline miss).
    pub missed: bool,
    /// Releases skipped because the thread overran past them.
    pub skipped: u64,
}

/// Makes the calling thread periodic (pthread_make_periodic_np): the first
/// release is at `start_ns` (clock time), then every `period_ns`.
pub fn make_periodic(start_ns: u64, period_ns: u64) -> Result<()> {
    if period_ns == 0 {
        return Err(ThreadError::InvalidArgument);
    }
    let thread = current();
    thread.realtime.lock().periodic = Some(Periodic::new(start_ns, period_ns));
    Ok(())
}

/// Waits for the calling thread's next release (pthread_wait_np) and
/// records its release latency. A cancellation point. Overruns are counted
/// as deadline misses, never silently skipped.
pub fn wait_next_period() -> Result<Release> {
    let thread = current();
    test_cancel();
    let now = time::now_ns();
    let wait = {
        let mut stats = thread.realtime.lock();
        let Some(periodic) = stats.periodic.as_mut() else { return Err(ThreadError::WrongState) };
        periodic.next_wait(now)
    };
    let mut slept = false;
    if wait.release_ns > now {
        slept = true;
        thread.alarm_woke_ns.store(0, Ordering::Relaxed);
        scheduler::sleep_current(thread, wait.release_ns);
        // Woken early (stop request, stray wake-up): keep waiting for the release.
        while time::now_ns() < wait.release_ns {
            test_cancel();
            if thread.stop_requested() {
                return Err(ThreadError::WrongState);
            }
            scheduler::sleep_current(thread, wait.release_ns);
        }
    }
    let resumed = time::now_ns();
    let latency = resumed.saturating_sub(wait.release_ns);
    let woke = thread.alarm_woke_ns.load(Ordering::Relaxed);
    {
        let mut stats = thread.realtime.lock();
        stats.latency.record(latency);
        stats.last_latency_ns = latency;
        if slept && woke != 0 {
            stats.wake.record(woke.saturating_sub(wait.release_ns), resumed.saturating_sub(woke));
        }
    }
    if crate::events::streaming() {
        crate::events::emit(
            "latency",
            "release",
            &[("latency_ns", latency as i64), ("miss", i64::from(wait.missed)), ("skipped", wait.skipped as i64)],
            "thread",
            &thread.name(),
        );
    }
    test_cancel();
    Ok(Release { release_ns: wait.release_ns, latency_ns: latency, missed: wait.missed, skipped: wait.skipped })
}

/// Gives up the CPU to threads of the same class and priority.
pub fn yield_cpu() {
    yield_now();
}

/// A snapshot of one thread for lists (the `ps` of rtedge).
#[derive(Clone, Debug)]
pub struct ThreadInfo {
    pub id: u32,
    pub name: String,
    pub kind: Kind,
    pub state: State,
    pub cpu: u32,
    pub affinity: u64,
    pub pinned: bool,
    pub runtime_ns: u64,
    pub switches: u64,
    pub involuntary_switches: u64,
    pub period_ns: u64,
    pub releases: u64,
    pub misses: u64,
    pub latency: LatencySummary,
    pub wake: WakeBreakdown,
    pub stack_size: u64,
    pub stack_used: u64,
}

/// The longest stack high-water scan of one thread by [`list`] since boot
/// (it ran with interrupts off until the scan moved out of the lock).
static STACK_SCAN_MAX_NS: AtomicU64 = AtomicU64::new(0);

/// See [`STACK_SCAN_MAX_NS`].
pub fn stack_scan_max_ns() -> u64 {
    STACK_SCAN_MAX_NS.load(Ordering::Relaxed)
}

/// A release-latency histogram's exact count, min, max and mean.
#[derive(Clone, Copy, Debug, Default)]
pub struct LatencySummary {
    count: u64,
    min: Option<u64>,
    max: Option<u64>,
    mean: Option<u64>,
}

impl LatencySummary {
    fn of(histogram: &LatencyHistogram) -> LatencySummary {
        LatencySummary { count: histogram.count(), min: histogram.min(), max: histogram.max(), mean: histogram.mean() }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn min(&self) -> Option<u64> {
        self.min
    }

    pub fn max(&self) -> Option<u64> {
        self.max
    }

    pub fn mean(&self) -> Option<u64> {
        self.mean
    }
}

/// Snapshots every thread, ordered by id.
pub fn list() -> Vec<ThreadInfo> {
    let mut infos: Vec<ThreadInfo> = all()
        .into_iter()
        .map(|thread| {
            // Not `realtime_stats()`: that copies the whole histogram (8 KiB)
            // under the lock the thread's release path takes, per thread,
            // on every THREADS call.
            let (periodic, latency, wake) = thread.realtime_summary();
            // The scan runs after the lock is released: holding it (with
            // interrupts off) for a whole stack delayed this CPU's timer
            // interrupts, an RT thread's release among them, on every
            // THREADS call.
            let window = thread.stack.lock().as_ref().map(|stack| (stack.bottom(), stack.top()));
            let (stack_size, stack_used) = window.map_or((0, 0), |(bottom, top)| {
                let scan_started = time::now_ns();
                // SAFETY: the range was a live stack's a moment ago, and
                // stack slots stay mapped once created.
                let untouched = unsafe { stacks::untouched_bytes_in(bottom, top) };
                STACK_SCAN_MAX_NS.fetch_max(time::now_ns().saturating_sub(scan_started), Ordering::Relaxed);
                (top - bottom, (top - bottom).saturating_sub(untouched))
            });
            ThreadInfo {
                id: thread.id().serial,
                name: String::from(thread.name()),
                kind: thread.kind(),
                state: thread.state(),
                cpu: thread.cpu(),
                affinity: thread.affinity(),
                pinned: thread.is_pinned(),
                runtime_ns: thread.runtime_ns(),
                switches: thread.switches(),
                involuntary_switches: thread.involuntary_switches(),
                period_ns: periodic.map_or(0, |p| p.period_ns()),
                releases: periodic.map_or(0, |p| p.releases()),
                misses: periodic.map_or(0, |p| p.misses()),
                latency,
                wake,
                stack_size,
                stack_used,
            }
        })
        .collect();
    infos.sort_by_key(|info| info.id);
    infos
}

/// Formats a CPU mask as a list (`0-3`, `1`, `0,2`).
pub fn format_cpu_mask(mask: u64, online: u64) -> String {
    use core::fmt::Write;
    let mask = mask & online;
    let mut out = String::new();
    let mut cpu = 0u32;
    while cpu < 64 {
        if mask & (1 << cpu) != 0 {
            let start = cpu;
            while cpu + 1 < 64 && mask & (1 << (cpu + 1)) != 0 {
                cpu += 1;
            }
            if !out.is_empty() {
                out.push(',');
            }
            let _ = if start == cpu { write!(out, "{start}") } else { write!(out, "{start}-{cpu}") };
        }
        cpu += 1;
    }
    out
}

/// Current CPU index of the calling code.
pub fn current_cpu() -> u32 {
    cpu_local::current().index()
}

/// The name of the running thread, for reports (a copy: a slot's name
/// changes when the slot is reused); "boot" before the scheduler runs.
pub fn current_name() -> ThreadName {
    match try_current() {
        Some(thread) => thread.name(),
        None => ThreadName::new("boot"),
    }
}

/// Signals a thread can be sent (RTLinux's remapped set: everything but a
/// termination request is a wake-up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Signal {
    Wake = 1,
    Term = 2,
}

impl Signal {
    /// Parses `TERM`/`KILL`/`SIGTERM`/`SIGKILL` as Term; `WAKE`, `CONT`,
    /// `USR1`... (anything else) as Wake, as the buddy threads map them.
    pub fn from_name(name: &str) -> Signal {
        let name = name.trim_start_matches("SIG").trim_start_matches("sig");
        if name.eq_ignore_ascii_case("TERM") || name.eq_ignore_ascii_case("KILL") || name.eq_ignore_ascii_case("INT") {
            Signal::Term
        } else {
            Signal::Wake
        }
    }
}

/// Sends `signal` to `id`: marks it pending and wakes the thread if it
/// waits. Safe from any context; never allocates.
pub fn send_signal(id: ThreadId, signal: Signal) -> Result<()> {
    let thread = get(id).ok_or(ThreadError::NoSuchThread)?;
    thread.signals.fetch_or(signal as u32, Ordering::AcqRel);
    wake_up(id)
}

/// Takes the calling thread's pending signals (a bit set of `Signal`s).
pub fn take_signals() -> u32 {
    current().signals.swap(0, Ordering::AcqRel)
}

/// Waits until a signal is pending and takes them all. A cancellation
/// point; returns 0 if a stop was requested.
pub fn wait_signals() -> u32 {
    loop {
        let pending = take_signals();
        if pending != 0 {
            return pending;
        }
        if should_stop() {
            return 0;
        }
        suspend_self();
    }
}

fn pack(id: ThreadId) -> u64 {
    (u64::from(id.slot) << 32) | u64::from(id.serial)
}

fn unpack(value: u64) -> Option<ThreadId> {
    (value != 0).then_some(ThreadId { slot: (value >> 32) as u16, serial: value as u32 })
}

/// Makes `buddy` the buddy thread of `thread`: outside requests for
/// `thread` (`WAKE`, `KILL`) go to the buddy, which maps them.
pub fn set_buddy(thread: ThreadId, buddy: ThreadId) -> Result<()> {
    let target = get(thread).ok_or(ThreadError::NoSuchThread)?;
    get(buddy).ok_or(ThreadError::NoSuchThread)?;
    target.buddy.store(pack(buddy), Ordering::Release);
    Ok(())
}

/// Forgets `thread`'s buddy.
pub fn clear_buddy(thread: ThreadId) {
    if let Some(target) = get(thread) {
        target.buddy.store(0, Ordering::Release);
    }
}

/// The live buddy of `thread`, if it has one.
pub fn buddy_of(thread: ThreadId) -> Option<ThreadId> {
    let target = get(thread)?;
    let buddy = unpack(target.buddy.load(Ordering::Acquire))?;
    get(buddy).filter(|b| b.state() != State::Exited).map(|b| b.id())
}
