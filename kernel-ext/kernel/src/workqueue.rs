//! Workqueues: deferred work in process context (it may block), run by
//! named kernel threads.
//!
//! - The system queue `events` has one worker per CPU (`events/0` ...):
//!   [`schedule_work`], [`schedule_work_on`], [`schedule_delayed_work`],
//!   [`schedule_on_each_cpu`].
//! - Named queues: [`Workqueue::create`] (a worker per CPU, `name/N`) and
//!   [`Workqueue::create_single_thread`] (one worker, `name`); `queue`,
//!   `queue_delayed`, `flush`, `destroy` (flushes first).
//! - Work items embed in the user's struct: implement [`WorkItem`] for it
//!   (return the embedded [`Work`], and `run` gets the whole struct — the
//!   safe Rust form of `container_of`). [`FnWork`] covers the plain
//!   function-plus-data case.
//! - Queueing a pending item returns false and does not queue it twice.
//!   [`cancel_work_sync`]: on return the item is neither pending nor
//!   running, even if it re-queues itself.
//!
//! Queueing never allocates (intrusive lists), so it is safe from IRQ,
//! softirq and RT context. The state rules are `rtedge_engine::work`'s.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use rtedge_engine::work as policy;

use crate::cpu_local::MAX_CPUS;
use crate::sync::{IrqSpinLock, Semaphore};
use crate::thread::{self, ThreadError, ThreadId, WaitQueue};
use crate::timer::{Timer, TimerError};
use crate::{context, cpu_local, time};

/// Something a worker can run.
pub trait WorkItem: Sync + 'static {
    /// The embedded work state.
    fn work(&self) -> &Work;
    /// The handler; gets the whole item.
    fn run(&'static self);
}

/// The per-item state embedded in a work item.
pub struct Work {
    state: AtomicU32,
    /// Next item on the worker queue (guarded by that queue's lock).
    next: UnsafeCell<Option<&'static dyn WorkItem>>,
    /// The worker it is queued on or ran on last (a `*const Worker`).
    worker: AtomicUsize,
    queued_at_ns: AtomicU64,
    runs: AtomicU64,
}

// SAFETY: `next` is only touched under the owning worker's queue lock.
unsafe impl Sync for Work {}

impl core::fmt::Debug for Work {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Work").field("pending", &self.is_pending()).field("running", &self.is_running()).finish()
    }
}

impl Default for Work {
    fn default() -> Self {
        Self::new()
    }
}

impl Work {
    /// An idle work state (INIT_WORK).
    pub const fn new() -> Self {
        Self {
            state: AtomicU32::new(0),
            next: UnsafeCell::new(None),
            worker: AtomicUsize::new(0),
            queued_at_ns: AtomicU64::new(0),
            runs: AtomicU64::new(0),
        }
    }

    pub fn is_pending(&self) -> bool {
        self.state.load(Ordering::Acquire) & policy::PENDING != 0
    }

    pub fn is_running(&self) -> bool {
        self.state.load(Ordering::Acquire) & policy::RUNNING != 0
    }

    /// Handler runs so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// When it was last queued (clock ns), for latency measurement.
    pub fn queued_at_ns(&self) -> u64 {
        self.queued_at_ns.load(Ordering::Relaxed)
    }

    fn update(&self, step: impl Fn(u32) -> u32) -> u32 {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let next = step(current);
            match self.state.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return current,
                Err(actual) => current = actual,
            }
        }
    }
}

/// A work item that is a function and a data word (DECLARE_WORK).
pub struct FnWork {
    work: Work,
    function: fn(&'static FnWork),
    data: AtomicUsize,
}

impl FnWork {
    pub const fn new(function: fn(&'static FnWork), data: usize) -> Self {
        Self { work: Work::new(), function, data: AtomicUsize::new(data) }
    }

    pub fn data(&self) -> usize {
        self.data.load(Ordering::Acquire)
    }

    pub fn set_data(&self, data: usize) {
        self.data.store(data, Ordering::Release);
    }
}

impl WorkItem for FnWork {
    fn work(&self) -> &Work {
        &self.work
    }

    fn run(&'static self) {
        (self.function)(self);
    }
}

struct WorkList {
    head: Option<&'static dyn WorkItem>,
    tail: Option<&'static dyn WorkItem>,
    len: usize,
}

/// One worker thread and its queue.
pub struct Worker {
    name: String,
    list: IrqSpinLock<WorkList>,
    ready: Semaphore,
    /// Items ever queued here / ever finished (or cancelled) here: a flush
    /// waits until `done` reaches the `queued` it saw.
    queued: AtomicU64,
    done: AtomicU64,
    progress: WaitQueue,
    thread: IrqSpinLock<Option<ThreadId>>,
    cpu: Option<u32>,
    stopping: AtomicBool,
}

impl Worker {
    fn new(name: String, cpu: Option<u32>) -> Self {
        Self {
            name,
            list: IrqSpinLock::new(WorkList { head: None, tail: None, len: 0 }),
            ready: Semaphore::new(0),
            queued: AtomicU64::new(0),
            done: AtomicU64::new(0),
            progress: WaitQueue::new(),
            thread: IrqSpinLock::new(None),
            cpu,
            stopping: AtomicBool::new(false),
        }
    }

    fn push(&self, item: &'static dyn WorkItem) {
        let mut list = self.list.lock();
        let work = item.work();
        // SAFETY: `next` is only touched under this list's lock.
        unsafe { *work.next.get() = None };
        match list.tail {
            // SAFETY: as above; the tail is on this list.
            Some(tail) => unsafe { *tail.work().next.get() = Some(item) },
            None => list.head = Some(item),
        }
        list.tail = Some(item);
        list.len += 1;
        work.worker.store(self as *const Worker as usize, Ordering::Release);
        self.queued.fetch_add(1, Ordering::AcqRel);
    }

    fn pop(&self) -> Option<&'static dyn WorkItem> {
        let mut list = self.list.lock();
        let item = list.head?;
        // SAFETY: `next` is only touched under this list's lock.
        list.head = unsafe { (*item.work().next.get()).take() };
        if list.head.is_none() {
            list.tail = None;
        }
        list.len -= 1;
        Some(item)
    }

    /// Takes `target` off the queue if it is there.
    fn remove(&self, target: &Work) -> bool {
        let mut list = self.list.lock();
        let mut previous: Option<&'static dyn WorkItem> = None;
        let mut cursor = list.head;
        while let Some(item) = cursor {
            // SAFETY: `next` is only touched under this list's lock.
            let next = unsafe { *item.work().next.get() };
            if core::ptr::eq(item.work(), target) {
                match previous {
                    // SAFETY: as above.
                    Some(previous) => unsafe { *previous.work().next.get() = next },
                    None => list.head = next,
                }
                if next.is_none() {
                    list.tail = previous;
                }
                // SAFETY: as above.
                unsafe { *item.work().next.get() = None };
                list.len -= 1;
                return true;
            }
            previous = Some(item);
            cursor = next;
        }
        false
    }

    fn finished_one(&self) {
        self.done.fetch_add(1, Ordering::AcqRel);
        self.progress.wake_all();
    }

    /// Waits until everything queued before now has run.
    fn flush(&self) {
        let target = self.queued.load(Ordering::Acquire);
        let _ = self.progress.wait(|| self.done.load(Ordering::Acquire) >= target || self.stopping.load(Ordering::Acquire));
    }

    /// Items waiting.
    pub fn backlog(&self) -> usize {
        self.list.lock().len
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

fn worker_main(worker: &'static Worker) -> i32 {
    loop {
        if worker.ready.down().is_err() && worker.list.lock().len == 0 {
            // Stop requested and nothing left.
            return 0;
        }
        while let Some(item) = worker.pop() {
            let work = item.work();
            work.update(policy::begin_run);
            item.run();
            work.runs.fetch_add(1, Ordering::Relaxed);
            work.update(policy::end_run);
            worker.finished_one();
        }
        if worker.stopping.load(Ordering::Acquire) && worker.list.lock().len == 0 {
            return 0;
        }
    }
}

/// Errors of workqueues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkError {
    /// A worker thread could not be created.
    Thread(ThreadError),
    /// The delayed work's timer could not be armed from this context.
    Timer(TimerError),
    /// The queue is being destroyed.
    Destroyed,
    /// No such CPU.
    BadCpu,
}

impl core::fmt::Display for WorkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WorkError::Thread(error) => write!(f, "cannot start a worker: {error}"),
            WorkError::Timer(error) => write!(f, "{error}"),
            WorkError::Destroyed => f.write_str("workqueue is being destroyed"),
            WorkError::BadCpu => f.write_str("no such CPU"),
        }
    }
}

/// A workqueue: one worker per CPU, or a single one.
pub struct Workqueue {
    name: String,
    // Boxed: workers are referenced by address (threads, queued items), so
    // they must not move even if this vector were to grow.
    #[allow(clippy::vec_box, reason = "workers need stable addresses")]
    workers: Vec<Box<Worker>>,
    per_cpu: bool,
    destroyed: AtomicBool,
    /// Delayed items whose timer targets this queue.
    delayed_armed: AtomicU32,
}

impl core::fmt::Debug for Workqueue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Workqueue").field("name", &self.name).field("workers", &self.workers.len()).finish()
    }
}

static QUEUES: IrqSpinLock<Vec<usize>> = IrqSpinLock::new(Vec::new());

impl Workqueue {
    /// `create_workqueue`: a worker per online CPU, named `name/N`.
    pub fn create(name: &str) -> Result<Box<Workqueue>, WorkError> {
        Self::build(name, true)
    }

    /// `create_singlethread_workqueue`: one worker, named `name`.
    pub fn create_single_thread(name: &str) -> Result<Box<Workqueue>, WorkError> {
        Self::build(name, false)
    }

    fn build(name: &str, per_cpu: bool) -> Result<Box<Workqueue>, WorkError> {
        let mut workers = Vec::new();
        if per_cpu {
            for cpu in 0..MAX_CPUS as u32 {
                if thread::online_mask() & (1 << cpu) != 0 {
                    let mut worker_name = String::new();
                    let _ = write!(worker_name, "{name}/{cpu}");
                    workers.push(Box::new(Worker::new(worker_name, Some(cpu))));
                }
            }
        } else {
            workers.push(Box::new(Worker::new(String::from(name), None)));
        }
        let queue = Box::new(Workqueue {
            name: String::from(name),
            workers,
            per_cpu,
            destroyed: AtomicBool::new(false),
            delayed_armed: AtomicU32::new(0),
        });
        for worker in &queue.workers {
            // SAFETY: the worker is boxed inside the queue and outlives its
            // thread: `destroy` stops and joins every worker before dropping.
            let worker_ref: &'static Worker = unsafe { &*(worker.as_ref() as *const Worker) };
            let mut builder = thread::Builder::new(&worker.name);
            if let Some(cpu) = worker.cpu {
                builder = builder.cpu(cpu);
            }
            match builder.spawn(move || worker_main(worker_ref)) {
                Ok(id) => *worker.thread.lock() = Some(id),
                Err(error) => {
                    queue.stop_workers();
                    return Err(WorkError::Thread(error));
                }
            }
        }
        QUEUES.lock().push(queue.as_ref() as *const Workqueue as usize);
        Ok(queue)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The workers (for lists and tests).
    pub fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.iter().map(Box::as_ref)
    }

    /// The worker for `cpu`, or the local CPU's (isolated CPUs hand work to
    /// a non-isolated one), or the single worker.
    fn worker_for(&self, cpu: Option<u32>) -> Option<&Worker> {
        if !self.per_cpu {
            return self.workers.first().map(Box::as_ref);
        }
        let wanted = match cpu {
            Some(cpu) => cpu,
            None => {
                let here = if cpu_local::is_installed() { cpu_local::current().index } else { 0 };
                if thread::isolated_mask() & (1 << here) != 0 {
                    (thread::online_mask() & !thread::isolated_mask()).trailing_zeros()
                } else {
                    here
                }
            }
        };
        self.workers.iter().map(Box::as_ref).find(|worker| worker.cpu == Some(wanted))
    }

    /// `queue_work`: queues `item` on this CPU's worker. Returns false if
    /// it was already pending (it is not queued twice).
    pub fn queue(&self, item: &'static dyn WorkItem) -> bool {
        self.queue_on(None, item).unwrap_or(false)
    }

    /// `queue_work_on`.
    pub fn queue_on(&self, cpu: Option<u32>, item: &'static dyn WorkItem) -> Result<bool, WorkError> {
        if self.destroyed.load(Ordering::Acquire) {
            return Err(WorkError::Destroyed);
        }
        let worker = self.worker_for(cpu).ok_or(WorkError::BadCpu)?;
        let work = item.work();
        let before = work.update(|state| policy::queue(state).0);
        if !policy::queue(before).1 {
            return Ok(false);
        }
        work.queued_at_ns.store(time::now_ns(), Ordering::Relaxed);
        worker.push(item);
        worker.ready.up();
        Ok(true)
    }

    /// `queue_delayed_work`: queues it here after `delay` jiffies.
    pub fn queue_delayed(&self, item: &'static dyn DelayedWorkItem, delay: u64) -> Result<bool, WorkError> {
        if self.destroyed.load(Ordering::Acquire) {
            return Err(WorkError::Destroyed);
        }
        item.delayed().arm(self, item, delay)
    }

    /// `flush_workqueue`: waits until every item queued before the call
    /// has run (delayed items whose timer has not fired are not waited
    /// for: cancel them first). Thread context only.
    pub fn flush(&self) {
        for worker in &self.workers {
            worker.flush();
        }
    }

    fn stop_workers(&self) {
        for worker in &self.workers {
            worker.stopping.store(true, Ordering::Release);
            let id = worker.thread.lock().take();
            if let Some(id) = id {
                let _ = thread::request_stop(id);
                worker.ready.up();
                let _ = thread::join(id, Some(5_000_000_000));
            }
        }
    }

    /// `destroy_workqueue`: refuses new work, flushes, stops the workers.
    /// Delayed items must be cancelled first; if one still targets the
    /// queue it is kept in memory (and a warning logged) rather than freed
    /// under a timer that will use it.
    pub fn destroy(self: Box<Self>) {
        self.destroyed.store(true, Ordering::Release);
        self.flush();
        self.stop_workers();
        let address = self.as_ref() as *const Workqueue as usize;
        QUEUES.lock().retain(|&entry| entry != address);
        if self.delayed_armed.load(Ordering::Acquire) != 0 {
            log::warn!("workqueue {}: destroyed with delayed work still armed; its memory is kept", self.name);
            Box::leak(self);
        }
    }

    /// Items waiting, all workers.
    pub fn backlog(&self) -> usize {
        self.workers.iter().map(|worker| worker.backlog()).sum()
    }
}

/// `cancel_work_sync`: on return `item` is neither pending nor running,
/// even if its handler re-queues it. Returns whether it was pending.
/// Thread context only.
pub fn cancel_work_sync(item: &'static dyn WorkItem) -> bool {
    assert!(!context::in_interrupt() && !crate::softirq::in_softirq(), "cancel_work_sync from interrupt context");
    let work = item.work();
    let before = work.update(|state| policy::begin_cancel(state).0);
    let mut was_pending = false;
    if before & policy::PENDING != 0 {
        let worker = work.worker.load(Ordering::Acquire);
        if worker != 0 {
            // SAFETY: `worker` was set when the item was queued on a worker
            // that lives until its queue is destroyed (after a flush).
            let worker = unsafe { &*(worker as *const Worker) };
            if worker.remove(work) {
                was_pending = true;
                work.update(policy::dequeued);
                // Balance the queued count so flushes do not wait for it.
                worker.finished_one();
                // Its semaphore unit stays: the worker finds an empty list.
            }
        }
    }
    // Wait for a running handler (on whichever worker).
    while work.is_running() {
        let worker = work.worker.load(Ordering::Acquire);
        if worker != 0 {
            // SAFETY: as above.
            let worker = unsafe { &*(worker as *const Worker) };
            let _ = worker.progress.wait_until(Some(time::now_ns() + 1_000_000), || !work.is_running());
        } else {
            thread::yield_cpu();
        }
    }
    work.update(policy::end_cancel);
    was_pending
}

/// Work that runs after a delay (struct delayed_work): a [`Work`] plus the
/// timer that queues it.
pub struct DelayedWork {
    timer: Timer,
    /// Where the timer queues the item: the queue (a `*const Workqueue`,
    /// kept alive by its `delayed_armed` count) and the item.
    target: IrqSpinLock<Option<(usize, &'static dyn DelayedWorkItem)>>,
    canceling: AtomicBool,
}

impl core::fmt::Debug for DelayedWork {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DelayedWork").field("timer_pending", &self.timer.is_pending()).finish()
    }
}

/// A work item that can also be queued after a delay.
pub trait DelayedWorkItem: WorkItem {
    fn delayed(&self) -> &DelayedWork;
}

impl Default for DelayedWork {
    fn default() -> Self {
        Self::new()
    }
}

impl DelayedWork {
    pub const fn new() -> Self {
        Self { timer: Timer::new("delayed-work", delayed_timer_fired, 0), target: IrqSpinLock::new(None), canceling: AtomicBool::new(false) }
    }

    fn arm(&'static self, queue: &Workqueue, item: &'static dyn DelayedWorkItem, delay: u64) -> Result<bool, WorkError> {
        if self.canceling.load(Ordering::Acquire) || item.work().is_pending() || self.timer.is_pending() {
            return Ok(false);
        }
        if delay == 0 {
            return queue.queue_on(None, upcast(item));
        }
        *self.target.lock() = Some((queue as *const Workqueue as usize, item));
        queue.delayed_armed.fetch_add(1, Ordering::AcqRel);
        self.timer.set_data(self as *const DelayedWork as usize);
        if let Err(error) = self.timer.modify_in(delay) {
            queue.delayed_armed.fetch_sub(1, Ordering::AcqRel);
            *self.target.lock() = None;
            return Err(WorkError::Timer(error));
        }
        Ok(true)
    }

    /// Forgets the target after the timer fired or was cancelled.
    fn release_target(&self) -> Option<(&Workqueue, &'static dyn DelayedWorkItem)> {
        let target = self.target.lock().take()?;
        // SAFETY: the queue's `delayed_armed` count (decremented below by
        // the caller) keeps it from being freed while a target points at it.
        let queue = unsafe { &*(target.0 as *const Workqueue) };
        Some((queue, target.1))
    }

    /// Whether the delay timer is armed.
    pub fn timer_pending(&self) -> bool {
        self.timer.is_pending()
    }
}

fn upcast(item: &'static dyn DelayedWorkItem) -> &'static dyn WorkItem {
    item
}

fn delayed_timer_fired(data: usize) {
    // SAFETY: `arm` stores the address of a DelayedWork that stays alive
    // while its timer can fire (cancel_delayed_work_sync deletes it first).
    let delayed = unsafe { &*(data as *const DelayedWork) };
    if let Some((queue, item)) = delayed.release_target() {
        let _ = queue.queue_on(None, upcast(item));
        queue.delayed_armed.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `cancel_delayed_work_sync`: stops the delay timer (waiting for it if
/// it is firing) and cancels the work as [`cancel_work_sync`] does.
/// Returns whether anything was pending.
pub fn cancel_delayed_work_sync(item: &'static dyn DelayedWorkItem) -> bool {
    let delayed = item.delayed();
    delayed.canceling.store(true, Ordering::Release);
    let timer_was = delayed.timer.delete_sync();
    if timer_was
        && let Some((queue, _)) = delayed.release_target() {
            queue.delayed_armed.fetch_sub(1, Ordering::AcqRel);
        }
    let work_was = cancel_work_sync(upcast(item));
    delayed.canceling.store(false, Ordering::Release);
    timer_was || work_was
}

/// A function work item with a delay (DECLARE_DELAYED_WORK).
pub struct FnDelayedWork {
    work: Work,
    delayed: DelayedWork,
    function: fn(&'static FnDelayedWork),
    data: AtomicUsize,
}

impl FnDelayedWork {
    pub const fn new(function: fn(&'static FnDelayedWork), data: usize) -> Self {
        Self { work: Work::new(), delayed: DelayedWork::new(), function, data: AtomicUsize::new(data) }
    }

    pub fn data(&self) -> usize {
        self.data.load(Ordering::Acquire)
    }
}

impl WorkItem for FnDelayedWork {
    fn work(&self) -> &Work {
        &self.work
    }

    fn run(&'static self) {
        (self.function)(self);
    }
}

impl DelayedWorkItem for FnDelayedWork {
    fn delayed(&self) -> &DelayedWork {
        &self.delayed
    }
}

static EVENTS: IrqSpinLock<Option<&'static Workqueue>> = IrqSpinLock::new(None);

/// Creates the system queue `events` (a worker per CPU). Boot only.
pub fn init() -> Result<(), WorkError> {
    let queue: &'static Workqueue = Box::leak(Workqueue::create("events")?);
    *EVENTS.lock() = Some(queue);
    Ok(())
}

/// The system queue.
pub fn events() -> Option<&'static Workqueue> {
    *EVENTS.lock()
}

/// `schedule_work`: queue on the system queue, this CPU.
pub fn schedule_work(item: &'static dyn WorkItem) -> bool {
    events().is_some_and(|queue| queue.queue(item))
}

/// `schedule_work_on`.
pub fn schedule_work_on(cpu: u32, item: &'static dyn WorkItem) -> Result<bool, WorkError> {
    events().ok_or(WorkError::Destroyed)?.queue_on(Some(cpu), item)
}

/// `schedule_delayed_work`: after `delay` jiffies, on the system queue.
pub fn schedule_delayed_work(item: &'static dyn DelayedWorkItem, delay: u64) -> Result<bool, WorkError> {
    events().ok_or(WorkError::Destroyed)?.queue_delayed(item, delay)
}

/// `flush_scheduled_work`.
pub fn flush_scheduled_work() {
    if let Some(queue) = events() {
        queue.flush();
    }
}

/// `schedule_on_each_cpu`: runs `function(cpu)` on every online CPU's
/// `events` worker and waits for all of them.
pub fn schedule_on_each_cpu(function: fn(u32)) -> Result<(), WorkError> {
    struct EachCpu {
        work: Work,
        function: fn(u32),
        cpu: u32,
    }
    impl WorkItem for EachCpu {
        fn work(&self) -> &Work {
            &self.work
        }
        fn run(&'static self) {
            (self.function)(self.cpu);
        }
    }
    let queue = events().ok_or(WorkError::Destroyed)?;
    let mut items: Vec<Box<EachCpu>> = Vec::new();
    for cpu in 0..MAX_CPUS as u32 {
        if thread::online_mask() & (1 << cpu) != 0 {
            items.push(Box::new(EachCpu { work: Work::new(), function, cpu }));
        }
    }
    for item in &items {
        // SAFETY: every item is waited for below (flush) before `items` is
        // dropped, so the 'static borrow never outlives the box.
        let item: &'static EachCpu = unsafe { &*(item.as_ref() as *const EachCpu) };
        queue.queue_on(Some(item.cpu), item)?;
    }
    for item in &items {
        while item.work.is_pending() || item.work.is_running() {
            queue.flush();
        }
    }
    Ok(())
}

/// Names, worker counts and backlogs of every workqueue.
pub fn list() -> Vec<(String, usize, usize)> {
    let queues = QUEUES.lock();
    queues
        .iter()
        // SAFETY: a queue removes itself from the list before it is dropped.
        .map(|&address| unsafe { &*(address as *const Workqueue) })
        .map(|queue| (queue.name.clone(), queue.workers.len(), queue.backlog()))
        .collect()
}

/// Finds a workqueue by name (the control plane's `WORK`).
pub fn find(name: &str) -> Option<&'static Workqueue> {
    let queues = QUEUES.lock();
    queues
        .iter()
        // SAFETY: as in `list`; callers must not hold the reference past the
        // queue's destruction (control-plane commands are short).
        .map(|&address| unsafe { &*(address as *const Workqueue) })
        .find(|queue| queue.name == name)
}

/// A named work item for the control plane (`WORK QUEUE queue item`).
#[derive(Clone, Copy)]
pub enum NamedItem {
    Plain(&'static dyn WorkItem),
    Delayed(&'static dyn DelayedWorkItem),
}

impl NamedItem {
    fn item(self) -> &'static dyn WorkItem {
        match self {
            NamedItem::Plain(item) => item,
            NamedItem::Delayed(item) => upcast(item),
        }
    }
}

static NAMED_ITEMS: IrqSpinLock<Vec<(&'static str, NamedItem)>> = IrqSpinLock::new(Vec::new());

/// Lists a work item by name.
pub fn register_item(name: &'static str, item: NamedItem) {
    let mut items = NAMED_ITEMS.lock();
    items.retain(|(existing, _)| *existing != name);
    items.push((name, item));
}

/// Removes a named work item.
pub fn unregister_item(name: &str) {
    NAMED_ITEMS.lock().retain(|(existing, _)| *existing != name);
}

/// A named work item.
pub fn find_item(name: &str) -> Option<NamedItem> {
    NAMED_ITEMS.lock().iter().find(|(existing, _)| *existing == name).map(|(_, item)| *item)
}

/// Queues a named item on a named queue, after `delay` jiffies if given
/// (the item must be delayed-capable then). Returns whether it was queued.
pub fn queue_named(queue: &str, item: &str, delay: Option<u64>) -> Result<bool, &'static str> {
    let queue = find(queue).ok_or("no such workqueue")?;
    let item = find_item(item).ok_or("no such work item")?;
    match (delay, item) {
        (Some(delay), NamedItem::Delayed(delayed)) if delay > 0 => queue.queue_delayed(delayed, delay).map_err(|_| "cannot arm the delay"),
        (Some(delay), NamedItem::Plain(_)) if delay > 0 => Err("this work item cannot be delayed"),
        _ => queue.queue_on(None, item.item()).map_err(|_| "workqueue is being destroyed"),
    }
}

/// Cancels a named item (sync). Returns whether it was pending.
pub fn cancel_named(item: &str) -> Result<bool, &'static str> {
    match find_item(item).ok_or("no such work item")? {
        NamedItem::Plain(plain) => Ok(cancel_work_sync(plain)),
        NamedItem::Delayed(delayed) => Ok(cancel_delayed_work_sync(delayed)),
    }
}
