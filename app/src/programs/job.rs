//! Program 7: the appliance's "system calls" — control-plane commands that
//! run a job in a kernel thread (the seeds' kernel thread started by
//! `init_module`, and the added system call).
//!
//! - `JOB.START n` starts the kernel thread `job/<id>`, which sums the
//!   numbers 1..=n and hashes them (FNV-1a over the 64-bit words), reports
//!   the result on channel `events` (`job-done`), logs it and exits. The
//!   reply is the job id. At most 4 jobs run at once; finished threads are
//!   joined (their slots and stacks reused) when the next one starts.
//! - `JOB.QUEUE n` runs the same job as a work item on the module's own
//!   single-thread workqueue `jobs` (`:1` queued, `:0` already pending);
//!   the item is also listed as `job` for `WORK QUEUE jobs job`.
//! - `JOB.STATUS` returns the counters.
//!
//! Unloading unregisters the commands, stops running jobs (they check for
//! a stop every 64 Ki numbers; bounded wait), cancels the work item,
//! flushes and destroys the workqueue.
//!
//! Observe: `SUBSCRIBE events`; `JOB.STATUS`; shared statics `job.started`,
//! `job.finished`, `job.cancelled`, `job.last_sum`, `job.last_hash`.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rtedge_control::CommandContext;
use rtedge_kernel::modules::Module;
use rtedge_kernel::shared::{Access, SharedInt, SharedValue};
use rtedge_kernel::sync::IrqSpinLock;
use rtedge_kernel::workqueue::{self, FnWork, NamedItem, WorkItem, Workqueue};
use rtedge_kernel::{thread, time};
use rtedge_plane::commands;
use rtedge_proto::{CommandFlags, CommandSpec, Reply, Request};

use super::{THREAD_EXIT_TIMEOUT_NS, ThreadSet};

/// Jobs running at once.
pub const MAX_JOBS: usize = 4;
/// Largest `n` (the sum still fits an i64: n(n+1)/2 < 2^63).
pub const MAX_N: u64 = 1_000_000_000;
/// A job checks for a stop request this often (numbers).
const STOP_CHECK_EVERY: u64 = 64 * 1024;
const QUEUE_NAME: &str = "jobs";
/// Job threads yield to the rest of the appliance a little.
const JOB_NICE: i8 = 5;

static STARTED: SharedInt = SharedInt::new("job.started", Access::ReadOnly, 0);
static FINISHED: SharedInt = SharedInt::new("job.finished", Access::ReadOnly, 0);
static CANCELLED: SharedInt = SharedInt::new("job.cancelled", Access::ReadOnly, 0);
static QUEUED_RUNS: SharedInt = SharedInt::new("job.queued_runs", Access::ReadOnly, 0);
static LAST_ID: SharedInt = SharedInt::new("job.last_id", Access::ReadOnly, 0);
static LAST_SUM: SharedInt = SharedInt::new("job.last_sum", Access::ReadOnly, 0);
static LAST_HASH: SharedInt = SharedInt::new("job.last_hash", Access::ReadOnly, 0);
static STATICS: [&dyn SharedValue; 7] = [&STARTED, &FINISHED, &CANCELLED, &QUEUED_RUNS, &LAST_ID, &LAST_SUM, &LAST_HASH];

static JOBS: ThreadSet<MAX_JOBS> = ThreadSet::new();
static NEXT_JOB: AtomicU64 = AtomicU64::new(1);
/// Set while unloading: running jobs end early, new ones are refused.
static STOPPING: AtomicBool = AtomicBool::new(false);
static QUEUE: IrqSpinLock<Option<Box<Workqueue>>> = IrqSpinLock::new(None);
/// The work item `JOB.QUEUE` queues; its data is `n` (a million until a
/// `JOB.QUEUE` sets it, for `WORK QUEUE jobs job`).
static WORK: FnWork = FnWork::new(run_queued, DEFAULT_QUEUED_N);
const DEFAULT_QUEUED_N: usize = 1_000_000;
/// The work item's name for the control plane (`WORK QUEUE jobs job`).
const WORK_NAME: &str = "job";

static COMMANDS: [(CommandSpec, commands::Handler); 3] = [
    (
        CommandSpec::new(
            "job.start",
            2,
            CommandFlags::WRITE,
            "appliance",
            "Starts a kernel thread that sums and hashes 1..=n, reports on channel events and exits; replies with the job id.",
            "JOB.START n",
        ),
        handle_start,
    ),
    (
        CommandSpec::new(
            "job.queue",
            2,
            CommandFlags::WRITE,
            "appliance",
            "Runs the same job as a work item on the workqueue 'jobs'; 1 if queued, 0 if already pending.",
            "JOB.QUEUE n",
        ),
        handle_queue,
    ),
    (
        CommandSpec::new("job.status", 1, CommandFlags::READONLY, "appliance", "Job counters and the last result.", "JOB.STATUS"),
        handle_status,
    ),
];

/// What a job computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub sum: u64,
    pub hash: u64,
    /// False if it was stopped before the end.
    pub completed: bool,
    /// Numbers processed.
    pub done: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Sums 1..=n and hashes the numbers (FNV-1a over 64-bit words), asking
/// `stop` every [`STOP_CHECK_EVERY`] numbers whether to give up.
pub fn compute(n: u64, stop: impl Fn() -> bool) -> Outcome {
    let mut sum = 0u64;
    let mut hash = FNV_OFFSET;
    for i in 1..=n {
        sum = sum.wrapping_add(i);
        hash = (hash ^ i).wrapping_mul(FNV_PRIME);
        if i % STOP_CHECK_EVERY == 0 && stop() {
            return Outcome { sum, hash, completed: false, done: i };
        }
    }
    Outcome { sum, hash, completed: true, done: n }
}

fn report(job: u64, n: u64, outcome: Outcome, elapsed_ns: u64, runner: &str) {
    if outcome.completed {
        FINISHED.add(1);
        LAST_ID.set(job as i64);
        LAST_SUM.set(outcome.sum as i64);
        LAST_HASH.set(outcome.hash as i64);
        log::info!("job {job} ({runner}): sum(1..={n}) = {}, fnv1a64 = {:#018x}, {} ms", outcome.sum, outcome.hash, elapsed_ns / 1_000_000);
        super::event(
            "job-done",
            &[
                ("job", job as i64),
                ("n", n as i64),
                ("sum", outcome.sum as i64),
                ("hash", outcome.hash as i64),
                ("elapsed_us", (elapsed_ns / 1000) as i64),
            ],
            "runner",
            runner,
        );
    } else {
        CANCELLED.add(1);
        log::info!("job {job} ({runner}): stopped after {} of {n} numbers", outcome.done);
        super::event("job-cancelled", &[("job", job as i64), ("n", n as i64), ("done", outcome.done as i64)], "runner", runner);
    }
}

fn run_job(job: u64, n: u64) -> i32 {
    let start = time::now_ns();
    let outcome = compute(n, || thread::should_stop() || STOPPING.load(Ordering::Acquire));
    let name = format!("job/{job}");
    report(job, n, outcome, time::now_ns() - start, &name);
    if outcome.completed { 0 } else { 1 }
}

fn run_queued(work: &'static FnWork) {
    let n = work.data() as u64;
    let job = NEXT_JOB.fetch_add(1, Ordering::AcqRel);
    QUEUED_RUNS.add(1);
    let start = time::now_ns();
    let outcome = compute(n, || STOPPING.load(Ordering::Acquire));
    report(job, n, outcome, time::now_ns() - start, QUEUE_NAME);
}

/// Starts job `n` in a new kernel thread; returns its id.
pub fn start_job(n: u64) -> Result<u64, String> {
    if STOPPING.load(Ordering::Acquire) || QUEUE.lock().is_none() {
        return Err(String::from("the job module is not loaded"));
    }
    if !JOBS.has_room() {
        return Err(format!("too many jobs running ({MAX_JOBS}); try again when one finishes"));
    }
    let job = NEXT_JOB.fetch_add(1, Ordering::AcqRel);
    let name = format!("job/{job}");
    let id = thread::Builder::new(&name)
        .nice(JOB_NICE)
        .spawn(move || run_job(job, n))
        .map_err(|error| format!("cannot start {name}: {error}"))?;
    if !JOBS.add(id) {
        let _ = thread::stop(id, THREAD_EXIT_TIMEOUT_NS);
        return Err(format!("too many jobs running ({MAX_JOBS})"));
    }
    STARTED.add(1);
    LAST_ID.set(job as i64);
    Ok(job)
}

/// Queues job `n` on the `jobs` workqueue; false if it was already pending.
pub fn queue_job(n: u64) -> Result<bool, String> {
    let queue = QUEUE.lock();
    let Some(queue) = queue.as_ref().filter(|_| !STOPPING.load(Ordering::Acquire)) else {
        return Err(String::from("the job module is not loaded"));
    };
    if WORK.work().is_pending() {
        return Ok(false);
    }
    WORK.set_data(n as usize);
    Ok(queue.queue(&WORK))
}

fn handle_start(_: &mut CommandContext<'_>, request: &Request) -> Reply {
    let n = match super::integer_argument(request, 1, 1..=MAX_N, "n") {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    match start_job(n) {
        Ok(job) => Reply::Integer(job as i64),
        Err(message) => Reply::err("ERR", &message),
    }
}

fn handle_queue(_: &mut CommandContext<'_>, request: &Request) -> Reply {
    let n = match super::integer_argument(request, 1, 1..=MAX_N, "n") {
        Ok(n) => n,
        Err(reply) => return reply,
    };
    match queue_job(n) {
        Ok(queued) => Reply::Integer(i64::from(queued)),
        Err(message) => Reply::err("ERR", &message),
    }
}

fn handle_status(_: &mut CommandContext<'_>, _: &Request) -> Reply {
    let field = |name: &str, value: i64| (Reply::bulk_str(name), Reply::Integer(value));
    Reply::Map(vec![
        field("started", STARTED.load()),
        field("finished", FINISHED.load()),
        field("cancelled", CANCELLED.load()),
        field("running", JOBS.running() as i64),
        field("queued_runs", QUEUED_RUNS.load()),
        field("last_id", LAST_ID.load()),
        field("last_sum", LAST_SUM.load()),
        field("last_hash", LAST_HASH.load()),
    ])
}

pub struct JobProgram;

pub static MODULE: JobProgram = JobProgram;

impl JobProgram {
    fn start() -> Result<(), String> {
        let queue =
            Workqueue::create_single_thread(QUEUE_NAME).map_err(|error| format!("cannot create workqueue {QUEUE_NAME}: {error}"))?;
        *QUEUE.lock() = Some(queue);
        workqueue::register_item(WORK_NAME, NamedItem::Plain(&WORK));
        for (spec, handler) in &COMMANDS {
            commands::register(*spec, *handler).map_err(|error| format!("cannot register {}: {error}", spec.name))?;
        }
        Ok(())
    }
}

impl Module for JobProgram {
    fn name(&self) -> &'static str {
        "job"
    }

    fn description(&self) -> &'static str {
        "commands JOB.START/JOB.QUEUE/JOB.STATUS run a job in a kernel thread or a workqueue and report on events"
    }

    fn init(&'static self) -> Result<(), String> {
        STOPPING.store(false, Ordering::Release);
        for counter in [&STARTED, &FINISHED, &CANCELLED, &QUEUED_RUNS, &LAST_ID, &LAST_SUM, &LAST_HASH] {
            counter.set(0);
        }
        super::register_statics(&STATICS);
        Self::start().inspect_err(|_| self.exit())
    }

    fn exit(&'static self) {
        for (spec, _) in &COMMANDS {
            commands::unregister(spec.name);
        }
        workqueue::unregister_item(WORK_NAME);
        STOPPING.store(true, Ordering::Release);
        JOBS.stop_all("job");
        let _ = workqueue::cancel_work_sync(&WORK);
        let queue = QUEUE.lock().take();
        if let Some(queue) = queue {
            queue.destroy();
        }
        super::unregister_statics(&STATICS);
        log::info!("job: unloaded ({} jobs finished, {} stopped)", FINISHED.load(), CANCELLED.load());
    }

    fn threads(&self) -> usize {
        JOBS.running() + usize::from(QUEUE.lock().is_some())
    }
}
