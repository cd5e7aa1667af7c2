//! The commands of the control plane that touch the kernel and the
//! application (`net/CONTROL.md` has the contract): INFO, SHUTDOWN, shared
//! statics, the thread/IRQ/softirq views, WAKE/KILL (through buddies),
//! TASKLET, SOFTIRQ, TIMER, WORK, LATENCY, METRICS, MODULE and the application's own
//! commands. Each is a handler bound to its built-in spec in the command
//! table (below) when the control plane starts; the
//! dispatcher finds it there with one lookup. Runs in the control-plane
//! thread; may block.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use rtedge_control::{Backend, CommandContext, CommandFn as Handler, RegisterError, Registry};
use rtedge_proto::util::ValueError;
use rtedge_proto::{Reply, Request, ToReply};

use super::{info, listings};
use rtedge_kernel::sync::IrqSpinLock;
use rtedge_kernel::thread::{self, Kind, Signal};
use rtedge_kernel::{latency, modules, shared, softirq, tasklet, time, timer, trap, workqueue};

/// The kernel's [`Backend`]: the token, the command table below, the
/// connections and the clock.
pub struct KernelBackend {
    token: String,
}

impl KernelBackend {
    /// A backend checking `AUTH` against `token`; binds the kernel's
    /// built-in commands in the command table.
    pub fn new(token: String) -> Self {
        register_builtins(&KERNEL_COMMANDS);
        Self { token }
    }
}

/// The table. Held only to look up, copy out or change entries, never
/// while a handler runs.
static REGISTRY: IrqSpinLock<Registry<KernelBackend>> = IrqSpinLock::new(Registry::new());

/// Binds the built-in commands: the control plane's own and the kernel's
/// `handlers`. Logs a handler whose name has no built-in spec, and any
/// built-in spec left without a handler.
fn register_builtins(handlers: &[(&str, Handler)]) {
    let mut refused = alloc::vec::Vec::new();
    let unbound: alloc::vec::Vec<&'static str> = {
        let mut registry = REGISTRY.lock();
        registry.register_session_commands();
        for &(name, handler) in handlers {
            match registry.register_builtin(name, rtedge_control::Handler::Function(handler)) {
                // Bound already: a second start keeps the first binding.
                Ok(()) | Err(RegisterError::Exists) => {}
                Err(error) => refused.push((name, error)),
            }
        }
        registry.unbound_builtins().map(|spec| spec.name).collect()
    };
    for (name, error) in refused {
        log::error!("control plane: cannot bind {name}: {error}");
    }
    for name in unbound {
        log::error!("control plane: built-in command '{name}' has no handler");
    }
}

/// Calls `reader` with the table, under its lock.
fn with_registry<R>(reader: impl FnOnce(&Registry<KernelBackend>) -> R) -> R {
    reader(&REGISTRY.lock())
}

/// Calls `change` with the table, under its lock (application commands:
/// [`crate::commands`]).
pub(crate) fn with_registry_mut<R>(change: impl FnOnce(&mut Registry<KernelBackend>) -> R) -> R {
    change(&mut REGISTRY.lock())
}

/// The kernel's built-in commands, by the name of their spec in
/// `rtedge_proto::command` (the control plane's own are the dispatcher's).
const KERNEL_COMMANDS: [(&str, Handler); 22] = [
    ("info", |_, request| info::info(request.arg(1).map(text).as_deref().unwrap_or("all"))),
    ("shutdown", shutdown),
    ("get", |_, request| get(request.arg(1).unwrap_or_default())),
    ("mget", |_, request| Reply::Array(request.args_after_name().iter().map(|key| get(key)).collect())),
    ("set", |_, request| set(request.arg(1).unwrap_or_default(), request.arg(2).unwrap_or_default())),
    ("keys", |_, request| {
        Reply::Array(shared::keys(request.arg(1).unwrap_or(b"*")).into_iter().map(|key| Reply::bulk_str(&key)).collect())
    }),
    ("threads", |_, _| threads()),
    ("irqs", |_, _| irqs()),
    ("softirqs", |_, _| listings::softirqs()),
    ("tasklets", |_, _| listings::tasklets()),
    ("timers", |_, _| listings::timers()),
    ("workqueues", |_, request| match request.arg(1) {
        None => listings::workqueues(),
        Some(word) if word.eq_ignore_ascii_case(b"ITEMS") => listings::work_items(),
        Some(_) => error("syntax: WORKQUEUES [ITEMS]"),
    }),
    ("wake", |_, request| signal(request.arg(1).unwrap_or_default(), Some(b"WAKE"))),
    ("kill", |_, request| signal(request.arg(1).unwrap_or_default(), request.arg(2))),
    ("tasklet", |_, request| tasklet_command(request)),
    ("softirq", |_, request| softirq_command(request)),
    ("timer", |_, request| timer_command(request)),
    ("work", |_, request| work_command(request)),
    ("latency", |_, request| latency_command(request)),
    ("metrics", |_, _| Reply::Verbatim { format: *b"txt", text: super::metrics::render() }),
    ("module", |_, request| module_command(request)),
    ("logs", |_, request| crate::logs::command(request)),
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The first of `choices` whose keyword `word` is, ignoring ASCII case
/// (no allocation).
fn keyword<T: Copy>(word: Option<&[u8]>, choices: &[(&str, T)]) -> Option<T> {
    let word = word?;
    choices.iter().find(|(keyword, _)| word.eq_ignore_ascii_case(keyword.as_bytes())).map(|&(_, choice)| choice)
}

fn error(message: impl core::fmt::Display) -> Reply {
    Reply::Error(format!("ERR {message}"))
}

fn map(entries: Vec<(&str, Reply)>) -> Reply {
    Reply::Map(entries.into_iter().map(|(key, value)| (Reply::bulk_str(key), value)).collect())
}

fn int(value: impl TryInto<i64>) -> Reply {
    Reply::Integer(value.try_into().unwrap_or(i64::MAX))
}

impl Backend for KernelBackend {
    fn with_registry<R>(&self, reader: impl FnOnce(&Registry<Self>) -> R) -> R {
        with_registry(reader)
    }

    fn auth_token(&self) -> &[u8] {
        self.token.as_bytes()
    }

    /// `CLIENT LIST`: the open connections, as Redis prints them.
    fn client_list(&mut self) -> Reply {
        Reply::Bulk(crate::net::client_list().into_bytes())
    }

    fn now_ms(&self) -> u64 {
        time::now_ns() / 1_000_000
    }
}

fn shutdown(context: &mut CommandContext<'_>, request: &Request) -> Reply {
    let code = match request.arg(1) {
        None => 0,
        Some(argument) => match rtedge_proto::util::parse_i64(argument) {
            Some(code) if (0..=127).contains(&code) => code,
            _ => return error("shutdown code must be an integer 0..127"),
        },
    };
    if rtedge_kernel::shutdown::is_kernel_failure_code(code as u8) {
        return error(format_args!("shutdown code {code} is reserved for kernel failures (1..6, 32..63); use 0, 7..31 or 64..127"));
    }
    context.request_shutdown(code);
    Reply::ok()
}

fn get(key: &[u8]) -> Reply {
    match shared::get(&text(key)) {
        Some(value) => value.to_reply(),
        None => Reply::Null,
    }
}

fn set(key: &[u8], value: &[u8]) -> Reply {
    let key = text(key);
    match shared::set(&key, value) {
        Ok(()) => Reply::ok(),
        Err(shared::SetError::NoSuchKey) => error(format!("no such key '{key}'")),
        Err(shared::SetError::ReadOnly) => error(format!("key '{key}' is read-only")),
        Err(shared::SetError::Type(value_error)) => type_error(value_error),
    }
}

fn type_error(value_error: ValueError) -> Reply {
    value_error.to_reply()
}

fn threads() -> Reply {
    let online = thread::online_mask();
    Reply::Array(
        thread::list()
            .into_iter()
            .filter(|info| info.state != thread::State::Free)
            .map(|info| {
                let (priority, nice) = match info.kind {
                    Kind::Realtime { priority } => (i64::from(priority), 0),
                    Kind::Kernel { nice } => (-1, i64::from(nice)),
                    Kind::Idle => (-1, 0),
                };
                map(alloc::vec![
                    ("id", int(info.id)),
                    ("name", Reply::bulk_str(&info.name)),
                    ("kind", Reply::bulk_str(info.kind.name())),
                    ("priority", int(priority)),
                    ("nice", int(nice)),
                    ("state", Reply::bulk_str(info.state.name())),
                    ("cpu", int(info.cpu)),
                    ("affinity", Reply::bulk_str(&thread::format_cpu_mask(info.affinity, online))),
                    ("runtime_ns", int(info.runtime_ns)),
                    ("switches", int(info.switches)),
                    ("period_ns", int(info.period_ns)),
                    ("releases", int(info.releases)),
                    ("misses", int(info.misses)),
                    ("latency_min_ns", int(info.latency.min().unwrap_or(0))),
                    ("latency_max_ns", int(info.latency.max().unwrap_or(0))),
                    ("latency_mean_ns", int(info.latency.mean().unwrap_or(0))),
                    // Where the latency went (since the last LATENCY RESET).
                    ("timer_late_max_ns", int(info.wake.timer_late_max_ns)),
                    ("dispatch_max_ns", int(info.wake.dispatch_max_ns)),
                    ("timer_late", int(info.wake.timer_late)),
                    ("dispatch_late", int(info.wake.dispatch_late)),
                ])
            })
            .collect(),
    )
}

fn irqs() -> Reply {
    Reply::Array(
        trap::interrupt_lines()
            .into_iter()
            .map(|line| {
                let mut entries = alloc::vec![("vector", int(line.vector)), ("name", Reply::bulk_str(line.name))];
                let cpus: Vec<(String, Reply)> =
                    line.per_cpu.iter().enumerate().map(|(cpu, &count)| (format!("cpu{cpu}"), int(count))).collect();
                let mut reply_entries: Vec<(Reply, Reply)> = entries.drain(..).map(|(key, value)| (Reply::bulk_str(key), value)).collect();
                reply_entries.extend(cpus.into_iter().map(|(key, value)| (Reply::bulk_str(&key), value)));
                reply_entries.push((Reply::bulk_str("total"), int(line.total)));
                Reply::Map(reply_entries)
            })
            .collect(),
    )
}

/// Threads the control plane may not terminate: the kernel's own.
fn protected(name: &str) -> bool {
    name.starts_with("idle/")
        || name.starts_with("ksoftirqd/")
        || name.starts_with("events/")
        || name == "control-plane"
        || name == "main"
        || name.starts_with("klogd")
}

fn signal(target: &[u8], signal_name: Option<&[u8]>) -> Reply {
    let target_name = text(target);
    let Some(target) = thread::find(&target_name) else {
        return error(format!("no such thread '{target_name}'"));
    };
    let signal = Signal::from_name(&signal_name.map(text).unwrap_or_else(|| String::from("TERM")));
    if let Some(buddy) = thread::buddy_of(target.id()) {
        return match thread::send_signal(buddy, signal) {
            Ok(()) => Reply::ok(),
            Err(reason) => error(reason),
        };
    }
    match signal {
        Signal::Wake => match thread::wake_up(target.id()) {
            Ok(()) => Reply::ok(),
            Err(reason) => error(reason),
        },
        Signal::Term => {
            if protected(&target.name()) || workqueue::is_worker_thread(target.id()) {
                return error(format!("thread '{target_name}' belongs to the kernel and cannot be terminated"));
            }
            let result = if target.is_realtime() { thread::cancel(target.id()) } else { thread::request_stop(target.id()) };
            match result {
                Ok(()) => Reply::ok(),
                Err(reason) => error(reason),
            }
        }
    }
}

#[derive(Clone, Copy)]
enum TaskletOperation {
    Schedule,
    HiSchedule,
    Disable,
    Enable,
    Kill,
}

fn tasklet_command(request: &Request) -> Reply {
    let name = text(request.arg(2).unwrap_or_default());
    let Some(tasklet) = tasklet::find(&name) else {
        return error(format!("no such tasklet '{name}'"));
    };
    let operations = [
        ("SCHEDULE", TaskletOperation::Schedule),
        ("HI", TaskletOperation::HiSchedule),
        ("DISABLE", TaskletOperation::Disable),
        ("ENABLE", TaskletOperation::Enable),
        ("KILL", TaskletOperation::Kill),
    ];
    match keyword(request.arg(1), &operations) {
        Some(TaskletOperation::Schedule) => tasklet.schedule(),
        Some(TaskletOperation::HiSchedule) => tasklet.hi_schedule(),
        Some(TaskletOperation::Disable) => tasklet.disable(),
        Some(TaskletOperation::Enable) => tasklet.enable(),
        Some(TaskletOperation::Kill) => tasklet.kill(),
        None => return error("syntax: TASKLET SCHEDULE|HI|DISABLE|ENABLE|KILL name"),
    }
    Reply::ok()
}

fn softirq_command(request: &Request) -> Reply {
    if !request.arg(1).unwrap_or_default().eq_ignore_ascii_case(b"RAISE") {
        return error("syntax: SOFTIRQ RAISE name");
    }
    let name = text(request.arg(2).unwrap_or_default());
    match softirq::raise_named(&name) {
        Ok(()) => {
            // Let it run now (bottom halves run at the next switch anyway).
            softirq::run_pending();
            Reply::ok()
        }
        Err(softirq::SoftIrqError::NoSuchName) => error(format!("no such soft IRQ '{name}'")),
        Err(reason) => error(reason),
    }
}

#[derive(Clone, Copy)]
enum TimerOperation {
    Modify,
    Delete,
}

fn timer_command(request: &Request) -> Reply {
    let name = text(request.arg(2).unwrap_or_default());
    let Some(timer) = timer::find(&name) else {
        return error(format!("no such timer '{name}'"));
    };
    match keyword(request.arg(1), &[("MOD", TimerOperation::Modify), ("DEL", TimerOperation::Delete)]) {
        Some(TimerOperation::Modify) => {
            let Some(ms) = request.arg(3).and_then(rtedge_proto::util::parse_i64).filter(|ms| *ms >= 0) else {
                return error("syntax: TIMER MOD name ms (ms >= 0)");
            };
            match timer.modify_in(time::msecs_to_jiffies(ms as u64)) {
                Ok(was_pending) => Reply::Integer(i64::from(was_pending)),
                Err(reason) => error(reason),
            }
        }
        Some(TimerOperation::Delete) => Reply::Integer(i64::from(timer.delete_sync())),
        None => error("syntax: TIMER MOD name ms | TIMER DEL name"),
    }
}

/// The longest a `WORK FLUSH` or `WORK CANCEL` keeps the control-plane
/// thread waiting.
const WORK_WAIT_NS: u64 = 2_000_000_000;

#[derive(Clone, Copy)]
enum WorkOperation {
    Queue,
    Cancel,
    Flush,
}

fn work_command(request: &Request) -> Reply {
    let queue = text(request.arg(2).unwrap_or_default());
    let operations = [("QUEUE", WorkOperation::Queue), ("CANCEL", WorkOperation::Cancel), ("FLUSH", WorkOperation::Flush)];
    match keyword(request.arg(1), &operations) {
        Some(WorkOperation::Queue) => {
            let item = text(request.arg(3).unwrap_or_default());
            let delay = match request.arg(4) {
                None => None,
                Some(argument) => match rtedge_proto::util::parse_i64(argument) {
                    Some(ms) if ms >= 0 => Some(time::msecs_to_jiffies(ms as u64)),
                    _ => return error("delay must be milliseconds >= 0"),
                },
            };
            match workqueue::queue_named(&queue, &item, delay) {
                Ok(queued) => Reply::Integer(i64::from(queued)),
                Err(reason) => error(format!("{reason} ('{queue}' / '{item}')")),
            }
        }
        Some(WorkOperation::Cancel) => {
            // WORK CANCEL queue item (the queue is named for symmetry).
            let item = text(request.arg(3).unwrap_or_default());
            if workqueue::find(&queue).is_none() {
                return error(format!("no such workqueue '{queue}'"));
            }
            match workqueue::cancel_named(&item, time::now_ns().saturating_add(WORK_WAIT_NS)) {
                Ok(Ok(was)) => Reply::Integer(i64::from(was)),
                Ok(Err(reason)) => {
                    error(format!("'{item}': {reason}: no longer pending, its handler still runs after {} ms", WORK_WAIT_NS / 1_000_000))
                }
                Err(reason) => error(format!("{reason} ('{item}')")),
            }
        }
        // Bounded: at the bound the reply says so and the work goes on.
        Some(WorkOperation::Flush) => match workqueue::find(&queue) {
            Some(found) => match found.flush_until(Some(time::now_ns().saturating_add(WORK_WAIT_NS))) {
                Ok(()) => Reply::ok(),
                Err(reason) => error(format!(
                    "flush of '{queue}' not done after {} ms ({reason}); {} items still queued",
                    WORK_WAIT_NS / 1_000_000,
                    found.backlog()
                )),
            },
            None => error(format!("no such workqueue '{queue}'")),
        },
        None => error("syntax: WORK QUEUE queue item [delay_ms] | WORK CANCEL queue item | WORK FLUSH queue"),
    }
}

/// The `LATENCY source` map: figures in ns (quantiles within 1.6 % of the
/// exact rank quantiles, see `rtedge_engine::histogram`), the non-empty
/// buckets, and for a periodic RT thread its period, releases and misses.
fn histogram_reply(source: &str, snapshot: &latency::Snapshot) -> Reply {
    let histogram = &snapshot.histogram;
    let quantile = |per_100k| int(histogram.quantile_per_100k(per_100k).unwrap_or(0));
    let buckets =
        Reply::Array(histogram.non_empty_buckets().map(|(upper, count)| Reply::Array(alloc::vec![int(upper), int(count)])).collect());
    let mean = int(histogram.mean().unwrap_or(0));
    let mut fields = alloc::vec![
        ("source", Reply::bulk_str(source)),
        ("unit", Reply::bulk_str("ns")),
        ("count", int(histogram.count())),
        ("min_ns", int(histogram.min().unwrap_or(0))),
        ("max_ns", int(histogram.max().unwrap_or(0))),
        ("mean_ns", mean.clone()),
        ("avg_ns", mean),
        ("p50_ns", quantile(50_000)),
        ("p90_ns", quantile(90_000)),
        ("p99_ns", quantile(99_000)),
        ("p999_ns", quantile(99_900)),
        ("p9999_ns", quantile(99_990)),
    ];
    if let Some(releases) = snapshot.releases {
        fields.push(("period_ns", int(releases.period_ns)));
        fields.push(("releases", int(releases.releases)));
        fields.push(("misses", int(releases.misses)));
    }
    fields.push(("sub_buckets", int(rtedge_engine::histogram::SUB_BUCKETS)));
    fields.push(("buckets", buckets));
    map(fields)
}

fn latency_command(request: &Request) -> Reply {
    let Some(source) = request.arg(1).map(text) else {
        return Reply::Array(latency::names().iter().map(|name| Reply::bulk_str(name)).collect());
    };
    let reset = match request.arg(2) {
        None => false,
        Some(word) if word.eq_ignore_ascii_case(b"RESET") => true,
        Some(_) => return error("syntax: LATENCY source [RESET]"),
    };
    // A bare thread name works too.
    let snapshot =
        latency::snapshot_with_releases(&source, reset).or_else(|| latency::snapshot_with_releases(&format!("thread:{source}"), reset));
    match snapshot {
        Some(snapshot) => histogram_reply(&source, &snapshot),
        None => error(format!("no such latency source '{source}'")),
    }
}

#[derive(Clone, Copy)]
enum ModuleOperation {
    List,
    Load,
    Unload,
}

fn module_command(request: &Request) -> Reply {
    let name = text(request.arg(2).unwrap_or_default());
    let operations = [("LIST", ModuleOperation::List), ("LOAD", ModuleOperation::Load), ("UNLOAD", ModuleOperation::Unload)];
    match keyword(request.arg(1), &operations) {
        Some(ModuleOperation::List) => Reply::Array(
            modules::list()
                .into_iter()
                .map(|module| {
                    map(alloc::vec![
                        ("name", Reply::bulk_str(module.name)),
                        ("state", Reply::bulk_str(if module.loaded { "loaded" } else { "unloaded" })),
                        ("threads", int(module.threads)),
                        ("loads", int(module.loads)),
                        ("description", Reply::bulk_str(module.description)),
                    ])
                })
                .collect(),
        ),
        Some(ModuleOperation::Load) => match modules::load(&name) {
            Ok(()) => Reply::ok(),
            Err(modules::ModuleError::NoSuchModule) => error(format!("no such module '{name}'")),
            Err(modules::ModuleError::AlreadyLoaded) => error(format!("module '{name}' is already loaded")),
            Err(other) => error(format!("module '{name}': {other}")),
        },
        Some(ModuleOperation::Unload) => match modules::unload(&name) {
            Ok(()) => Reply::ok(),
            Err(modules::ModuleError::NoSuchModule) => error(format!("no such module '{name}'")),
            Err(modules::ModuleError::NotLoaded) => error(format!("module '{name}' is not loaded")),
            Err(other) => error(format!("module '{name}': {other}")),
        },
        None => error("syntax: MODULE LIST | MODULE LOAD name | MODULE UNLOAD name"),
    }
}
