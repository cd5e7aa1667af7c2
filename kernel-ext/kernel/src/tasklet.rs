//! Tasklets: deferred functions run from the HI and TASKLET softirqs.
//!
//! `schedule` (TASKLET vector) and `hi_schedule` (HI vector, so before any
//! normal tasklet) are safe from hard-IRQ, RT-thread, softirq and thread
//! context and never allocate. Several schedules before a run give one
//! run; the same tasklet never runs on two CPUs at once; `disable`/`enable`
//! nest and a run requested meanwhile happens once after the last enable;
//! `kill` waits until it is neither scheduled nor running. Because pending
//! softirqs run at every switch to a non-RT thread, a tasklet an RT thread
//! schedules runs before any kernel thread gets the CPU.
//!
//! The transitions are `rtedge_engine::tasklet`'s; this module keeps the
//! per-CPU queues (intrusive lists: no allocation) and runs handlers.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use rtedge_arch::cpu;

use rtedge_engine::tasklet::{RunDecision, ScheduleOutcome, TaskletCell, TaskletState};

use crate::cpu_local::{self, MAX_CPUS};
use crate::softirq::{self, Vector};
use crate::sync::IrqSpinLock;
use crate::{context, thread, time};

/// A tasklet: a handler, its data argument and its state.
///
/// The queues keep its address, so everything that can queue it
/// (`schedule`, `hi_schedule`, `enable`) takes `&'static self`: a tasklet
/// is a `static` (or leaked), never moved while it may be queued.
pub struct Tasklet {
    name: &'static str,
    handler: fn(usize),
    data: AtomicUsize,
    state: TaskletCell,
    /// The CPU whose softirq runs the handler now (`NO_CPU` if none): lets
    /// `disable_in_atomic` refuse to spin on a handler it interrupted.
    running_on: AtomicU32,
    /// Next tasklet in the queue it is on (a `*const Tasklet`, 0 = none).
    next: AtomicUsize,
    /// Whether the pending run was requested with `hi_schedule`.
    high: AtomicBool,
    runs: AtomicU64,
    scheduled_at_ns: AtomicU64,
    registered: AtomicBool,
    /// `schedule`/`hi_schedule` calls so far (coalesced ones included).
    schedules: AtomicU64,
}

impl core::fmt::Debug for Tasklet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tasklet").field("name", &self.name).field("state", &self.state()).finish()
    }
}

#[derive(Clone, Copy)]
struct List {
    head: usize,
    tail: usize,
}

impl List {
    const EMPTY: List = List { head: 0, tail: 0 };

    fn push(&mut self, tasklet: &'static Tasklet) {
        let address = tasklet as *const Tasklet as usize;
        tasklet.next.store(0, Ordering::Relaxed);
        if self.tail == 0 {
            self.head = address;
        } else {
            // SAFETY: only `&'static Tasklet`s are queued, so the tail lives.
            unsafe { (*(self.tail as *const Tasklet)).next.store(address, Ordering::Relaxed) };
        }
        self.tail = address;
    }
}

struct Queues {
    high: List,
    normal: List,
}

/// `running_on` when no CPU runs the handler.
const NO_CPU: u32 = u32::MAX;

static QUEUES: [IrqSpinLock<Queues>; MAX_CPUS] = [const { IrqSpinLock::new(Queues { high: List::EMPTY, normal: List::EMPTY }) }; MAX_CPUS];
static REGISTRY: IrqSpinLock<Vec<usize>> = IrqSpinLock::new(Vec::new());

impl Tasklet {
    /// A tasklet (DECLARE_TASKLET); usable as a `static`.
    pub const fn new(name: &'static str, handler: fn(usize), data: usize) -> Self {
        Self::with_disable_count(name, handler, data, 0)
    }

    /// A tasklet that starts disabled once (DECLARE_TASKLET_DISABLED).
    pub const fn new_disabled(name: &'static str, handler: fn(usize), data: usize) -> Self {
        Self::with_disable_count(name, handler, data, 1)
    }

    const fn with_disable_count(name: &'static str, handler: fn(usize), data: usize, count: u32) -> Self {
        Self {
            name,
            handler,
            data: AtomicUsize::new(data),
            state: TaskletCell::new(count),
            running_on: AtomicU32::new(NO_CPU),
            next: AtomicUsize::new(0),
            high: AtomicBool::new(false),
            runs: AtomicU64::new(0),
            scheduled_at_ns: AtomicU64::new(0),
            registered: AtomicBool::new(false),
            schedules: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The data argument the handler gets.
    pub fn set_data(&self, data: usize) {
        self.data.store(data, Ordering::Release);
    }

    pub fn data(&self) -> usize {
        self.data.load(Ordering::Acquire)
    }

    fn state(&self) -> TaskletState {
        self.state.load()
    }

    /// Whether it is scheduled (pending a run).
    pub fn is_scheduled(&self) -> bool {
        self.state().is_scheduled()
    }

    /// Whether its handler runs now.
    pub fn is_running(&self) -> bool {
        self.state().is_running()
    }

    /// The disable count.
    pub fn disable_count(&self) -> u32 {
        self.state().disable_count()
    }

    /// Handler runs so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// When it was last scheduled (clock ns), for latency measurements.
    pub fn scheduled_at_ns(&self) -> u64 {
        self.scheduled_at_ns.load(Ordering::Relaxed)
    }

    /// `tasklet_schedule`: run it once, soon, from the TASKLET softirq.
    pub fn schedule(&'static self) {
        self.schedule_with(false);
    }

    /// `tasklet_hi_schedule`: run it once, soon, from the HI softirq
    /// (before every normal tasklet).
    pub fn hi_schedule(&'static self) {
        self.schedule_with(true);
    }

    fn schedule_with(&'static self, high: bool) {
        self.schedules.fetch_add(1, Ordering::Relaxed);
        self.scheduled_at_ns.store(time::now_ns(), Ordering::Relaxed);
        match self.state.schedule() {
            ScheduleOutcome::Queue => {
                self.high.store(high, Ordering::Release);
                enqueue_here(self, high);
            }
            ScheduleOutcome::Park => self.high.store(high, Ordering::Release),
            ScheduleOutcome::Nothing => {}
        }
    }

    /// `tasklet_disable`: one more disable level (they nest), and on return
    /// the handler is not running on any CPU; it does not start again until
    /// the matching [`enable`](Self::enable). Sleeps while it waits: thread
    /// context only (an RT thread may call it too). From interrupt or
    /// softirq context use [`disable_in_atomic`](Self::disable_in_atomic);
    /// to not wait at all, [`disable_nosync`](Self::disable_nosync).
    pub fn disable(&self) {
        assert!(
            !context::in_interrupt() && !softirq::in_softirq(),
            "tasklet disable from interrupt or softirq context (use disable_in_atomic)"
        );
        // Sleep rather than yield: the handler may be a softirq this very
        // thread preempted, which must get the CPU back to finish.
        self.state.disable(|| {
            let _ = thread::sleep_ns(50_000);
        });
    }

    /// `tasklet_disable_nosync`: one more disable level, without waiting
    /// for a handler that runs now. Safe from any context; the caller must
    /// not assume the handler has finished.
    pub fn disable_nosync(&self) {
        self.state.disable_nosync();
    }

    /// `tasklet_disable_in_atomic`: as [`disable`](Self::disable) but spins
    /// instead of sleeping, for callers that cannot sleep (hard IRQ,
    /// softirq, interrupts off). Panics rather than deadlock when the
    /// handler runs on this very CPU (the caller interrupted it: it could
    /// never finish while we spin).
    pub fn disable_in_atomic(&self) {
        let here = if cpu_local::is_installed() { cpu_local::current().index() } else { NO_CPU };
        self.state.disable(|| {
            assert!(
                self.running_on.load(Ordering::Acquire) != here,
                "tasklet {} disable_in_atomic would spin on its own CPU's handler",
                self.name
            );
            cpu::pause();
        });
    }

    /// `tasklet_enable`: one level less; at zero a run requested while it
    /// was disabled is queued. Safe from any context.
    pub fn enable(&'static self) {
        let queue = self.state.enable().unwrap_or(false);
        if queue {
            enqueue_here(self, self.high.load(Ordering::Acquire));
        }
    }

    /// `tasklet_kill`: waits until it is neither scheduled nor running. A
    /// run requested while it is disabled is dropped (it could never happen).
    /// Thread context only.
    pub fn kill(&self) {
        assert!(!context::in_interrupt() && !softirq::in_softirq(), "tasklet kill from interrupt context");
        loop {
            if self.state.unpark() {
                continue;
            }
            if self.state.begin_kill() {
                break;
            }
            // Scheduled: let it run first (here, or on its CPU).
            softirq::run_pending();
            let _ = thread::sleep_ns(50_000);
        }
        // Sleep rather than yield: the handler may be a softirq this very
        // thread preempted, which must get the CPU back to finish.
        while self.is_running() {
            let _ = thread::sleep_ns(50_000);
        }
        self.state.end_kill();
    }

    /// Lists it under its name for the control plane (`TASKLET ... name`).
    pub fn register(&'static self) {
        if !self.registered.swap(true, Ordering::AcqRel) {
            REGISTRY.lock().push(self as *const Tasklet as usize);
        }
    }

    /// Removes it from the named list.
    pub fn unregister(&self) {
        if self.registered.swap(false, Ordering::AcqRel) {
            let address = self as *const Tasklet as usize;
            REGISTRY.lock().retain(|&entry| entry != address);
        }
    }
}

impl Drop for Tasklet {
    fn drop(&mut self) {
        // A tasklet on a queue must never be freed: take it off first.
        self.unregister();
        if self.is_scheduled() || self.is_running() {
            self.kill();
        }
    }
}

fn enqueue_here(tasklet: &'static Tasklet, high: bool) {
    if !cpu_local::is_installed() {
        return;
    }
    let cpu = cpu_local::current().index() as usize;
    {
        let mut queues = QUEUES[cpu].lock();
        if high {
            queues.high.push(tasklet);
        } else {
            queues.normal.push(tasklet);
        }
    }
    softirq::raise(if high { Vector::Hi } else { Vector::Tasklet });
}

fn action(high: usize) {
    let cpu = cpu_local::current().index() as usize;
    let list = {
        let mut queues = QUEUES[cpu].lock();
        let list = if high != 0 { &mut queues.high } else { &mut queues.normal };
        core::mem::replace(list, List::EMPTY)
    };
    let mut cursor = list.head;
    while cursor != 0 {
        // SAFETY: only `&'static Tasklet`s are queued (see `enqueue_here`).
        let tasklet: &'static Tasklet = unsafe { &*(cursor as *const Tasklet) };
        cursor = tasklet.next.swap(0, Ordering::AcqRel);
        match tasklet.state.begin_run() {
            RunDecision::Run => {
                tasklet.running_on.store(cpu as u32, Ordering::Release);
                (tasklet.handler)(tasklet.data.load(Ordering::Acquire));
                tasklet.runs.fetch_add(1, Ordering::Relaxed);
                tasklet.running_on.store(NO_CPU, Ordering::Release);
                tasklet.state.end_run();
            }
            RunDecision::Requeue => enqueue_here(tasklet, high != 0),
            RunDecision::Park => {}
        }
    }
}

/// Attaches the tasklet handlers to the HI and TASKLET softirqs.
pub fn init() {
    softirq::open(Vector::Hi, action, 1);
    softirq::open(Vector::Tasklet, action, 0);
}

/// A registered tasklet, by name.
pub fn find(name: &str) -> Option<&'static Tasklet> {
    let registry = REGISTRY.lock();
    registry
        .iter()
        // SAFETY: registered tasklets are unregistered before they are dropped.
        .map(|&address| unsafe { &*(address as *const Tasklet) })
        .find(|tasklet| tasklet.name == name)
}

/// Names, states and run counts of the registered tasklets.
pub fn list() -> Vec<(&'static str, bool, u32, u64)> {
    let registry = REGISTRY.lock();
    registry
        .iter()
        // SAFETY: as in `find`.
        .map(|&address| unsafe { &*(address as *const Tasklet) })
        .map(|tasklet| (tasklet.name, tasklet.is_scheduled(), tasklet.disable_count(), tasklet.runs()))
        .collect()
}

impl Tasklet {
    /// `schedule`/`hi_schedule` calls so far, coalesced ones included
    /// (`TASKLETS`).
    pub fn schedules(&self) -> u64 {
        self.schedules.load(Ordering::Relaxed)
    }
}

/// Calls `visit` with each registered tasklet, under the registry's lock
/// (so none is unregistered meanwhile); `visit` only reads (`TASKLETS`).
pub fn for_each_registered(mut visit: impl FnMut(&Tasklet)) {
    let registry = REGISTRY.lock();
    for &address in registry.iter() {
        // SAFETY: registered tasklets are unregistered (under this lock)
        // before they are dropped.
        visit(unsafe { &*(address as *const Tasklet) });
    }
}
