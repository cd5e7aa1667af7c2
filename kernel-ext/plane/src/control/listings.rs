//! The listings that make deferred work discoverable (`net/CONTROL.md`,
//! "Listings"): `TASKLETS`, `TIMERS`, `WORKQUEUES [ITEMS]` and `SOFTIRQS`
//! show every object the action commands (`TASKLET`, `TIMER`, `WORK`,
//! `SOFTIRQ`) accept, by the very name they accept, with its counters and
//! the module that owns it.
//!
//! Ownership: a module's `init` registers its objects; `modules::load`
//! takes a [`Registered`] snapshot before `init` and hands it to
//! [`claim_new`] after, which records every object that appeared as the
//! module's. Objects registered outside a module's `init` (the kernel's, the
//! application's `main`) have no owner (`-`). Entries of objects that are
//! gone are dropped at the next claim, and a listing shows an owner only
//! for an object registered now under the same name and address.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use rtedge_proto::Reply;

use rtedge_kernel::sync::IrqSpinLock;
use rtedge_kernel::workqueue::{self, NamedItem};
use rtedge_kernel::{softirq, tasklet, time, timer};

/// What kind of object a [`Key`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tasklet,
    Timer,
    Workqueue,
    WorkItem,
    SoftIrq,
}

/// One registered object: its kind, address (0 where the name alone is
/// unique in its registry) and name.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    kind: Kind,
    address: usize,
    name: String,
}

/// The objects registered at one moment (see [`registered_now`]).
#[derive(Debug, Default)]
pub struct Registered(Vec<Key>);

/// Owners of objects registered during a module's `init`.
static OWNERS: IrqSpinLock<Vec<(Key, &'static str)>> = IrqSpinLock::new(Vec::new());

/// Every named object registered now. Thread context (may allocate).
pub fn registered_now() -> Registered {
    let mut keys = Vec::new();
    tasklet::for_each_registered(|tasklet| {
        keys.push(Key { kind: Kind::Tasklet, address: tasklet as *const _ as usize, name: String::from(tasklet.name()) });
    });
    for timer in timer::named_timers() {
        keys.push(Key { kind: Kind::Timer, address: timer as *const _ as usize, name: String::from(timer.name()) });
    }
    for queue in workqueue::counters() {
        keys.push(Key { kind: Kind::Workqueue, address: 0, name: queue.name });
    }
    for (name, _) in workqueue::named_items() {
        keys.push(Key { kind: Kind::WorkItem, address: 0, name: String::from(name) });
    }
    for (_, name) in softirq::dynamic_names() {
        keys.push(Key { kind: Kind::SoftIrq, address: 0, name });
    }
    Registered(keys)
}

/// Records the objects registered since `before` as `module`'s, and forgets
/// owners of objects that are gone.
pub fn claim_new(before: &Registered, module: &'static str) {
    let now = registered_now();
    let mut owners = OWNERS.lock();
    owners.retain(|(key, _)| now.0.contains(key));
    for key in now.0 {
        if !before.0.contains(&key) {
            owners.retain(|(existing, _)| *existing != key);
            owners.push((key, module));
        }
    }
}

/// The module that registered the object, or `-`.
fn owner(kind: Kind, address: usize, name: &str) -> &'static str {
    OWNERS.lock().iter().find(|(key, _)| key.kind == kind && key.address == address && key.name == name).map_or("-", |(_, module)| *module)
}

fn int(value: impl TryInto<i64>) -> Reply {
    Reply::Integer(value.try_into().unwrap_or(i64::MAX))
}

fn map(entries: Vec<(&str, Reply)>) -> Reply {
    Reply::Map(entries.into_iter().map(|(key, value)| (Reply::bulk_str(key), value)).collect())
}

/// A tasklet's state in one word: `running` beats `scheduled`, which beats
/// `disabled`, which beats `idle`; the disable count is its own field.
fn tasklet_state(running: bool, scheduled: bool, disabled: u32) -> &'static str {
    if running {
        "running"
    } else if scheduled {
        "scheduled"
    } else if disabled > 0 {
        "disabled"
    } else {
        "idle"
    }
}

/// `TASKLETS`: every registered tasklet (the names `TASKLET ... name` takes).
pub fn tasklets() -> Reply {
    struct Row {
        address: usize,
        name: &'static str,
        running: bool,
        scheduled: bool,
        disabled: u32,
        schedules: u64,
        runs: u64,
    }
    let mut rows = Vec::new();
    tasklet::for_each_registered(|tasklet| {
        rows.push(Row {
            address: tasklet as *const _ as usize,
            name: tasklet.name(),
            running: tasklet.is_running(),
            scheduled: tasklet.is_scheduled(),
            disabled: tasklet.disable_count(),
            schedules: tasklet.schedules(),
            runs: tasklet.runs(),
        });
    });
    Reply::Array(
        rows.into_iter()
            .map(|row| {
                map(alloc::vec![
                    ("name", Reply::bulk_str(row.name)),
                    ("state", Reply::bulk_str(tasklet_state(row.running, row.scheduled, row.disabled))),
                    ("scheduled", int(row.scheduled)),
                    ("running", int(row.running)),
                    ("disabled", int(row.disabled)),
                    ("schedules", int(row.schedules)),
                    ("runs", int(row.runs)),
                    ("owner", Reply::bulk_str(owner(Kind::Tasklet, row.address, row.name))),
                ])
            })
            .collect(),
    )
}

/// Jiffies as milliseconds (HZ may differ from 1000).
fn jiffies_ms(jiffies: u64) -> u64 {
    jiffies.saturating_mul(1000) / time::HZ
}

/// `TIMERS`: every named timer (the names `TIMER MOD|DEL name` takes).
pub fn timers() -> Reply {
    let now = time::jiffies();
    Reply::Array(
        timer::named_timers()
            .into_iter()
            .map(|timer| {
                let expires = timer.expires();
                // Overdue (its softirq has not run yet) shows as 0.
                let expires_in_ms = match expires {
                    Some(at) => int(jiffies_ms(at.saturating_sub(now))),
                    None => Reply::Integer(-1),
                };
                let period = timer.armed_for();
                map(alloc::vec![
                    ("name", Reply::bulk_str(timer.name())),
                    ("armed", int(expires.is_some())),
                    ("running", int(timer.is_running())),
                    ("expires_in_ms", expires_in_ms),
                    ("period_ms", int(jiffies_ms(period))),
                    ("fired", int(timer.fired())),
                    ("owner", Reply::bulk_str(owner(Kind::Timer, timer as *const _ as usize, timer.name()))),
                ])
            })
            .collect(),
    )
}

/// `WORKQUEUES`: every registered workqueue (the names `WORK ... queue` takes).
pub fn workqueues() -> Reply {
    Reply::Array(
        workqueue::counters()
            .into_iter()
            .map(|queue| {
                // Taken by a worker and not finished: linked, minus finished
                // or stolen, minus still waiting (read without a common lock,
                // so clamped at 0).
                let running = queue.queued.saturating_sub(queue.done).saturating_sub(queue.waiting as u64);
                let mut flags = Vec::new();
                flags.push(if queue.per_cpu { "per-cpu" } else { "single-thread" });
                if queue.system {
                    flags.push("system");
                }
                let owner = owner(Kind::Workqueue, 0, &queue.name);
                map(alloc::vec![
                    ("name", Reply::bulk_str(&queue.name)),
                    ("workers", int(queue.workers)),
                    ("queued", int(queue.waiting)),
                    ("running", int(running)),
                    ("done", int(queue.done)),
                    ("delayed_pending", int(queue.delayed_pending)),
                    ("flags", Reply::bulk_str(&flags.join(","))),
                    ("owner", Reply::bulk_str(owner)),
                ])
            })
            .collect(),
    )
}

/// `WORKQUEUES ITEMS`: every named work item (the names `WORK QUEUE|CANCEL
/// queue item` takes).
pub fn work_items() -> Reply {
    Reply::Array(
        workqueue::named_items()
            .into_iter()
            .map(|(name, item)| {
                let (kind, work, timer_pending) = match item {
                    NamedItem::Plain(plain) => ("plain", plain.work(), false),
                    NamedItem::Delayed(delayed) => ("delayed", delayed.work(), delayed.delayed().timer_pending()),
                };
                map(alloc::vec![
                    ("name", Reply::bulk_str(name)),
                    ("kind", Reply::bulk_str(kind)),
                    ("pending", int(work.is_pending())),
                    ("running", int(work.is_running())),
                    ("timer_pending", int(timer_pending)),
                    ("runs", int(work.runs())),
                    ("owner", Reply::bulk_str(owner(Kind::WorkItem, 0, name))),
                ])
            })
            .collect(),
    )
}

/// The function each fixed vector's subsystem attaches with
/// `softirq::open`, by vector (`None`: nothing opens it in this kernel).
/// `selftest::listings` checks that every open fixed vector has a name here.
pub const FIXED_HANDLERS: [Option<&str>; softirq::FIXED_NAMES.len()] = [
    Some("tasklet::action(hi)"),
    Some("timer::run_jiffy_timers"),
    None,
    Some("net::net_rx"),
    None,
    None,
    Some("tasklet::action"),
    None,
    Some("timer::run_hrtimers"),
    None,
];

/// `SOFTIRQS`: every vector, fixed ones first (the names `SOFTIRQ RAISE
/// name` takes, where `open` is 1), with its handler, owner and counts per
/// CPU. A dynamic soft IRQ's handler is named by its registration (as
/// RTLinux's `rtl_get_soft_irq` names it).
pub fn softirqs() -> Reply {
    let dynamic = softirq::dynamic_names();
    Reply::Array(
        softirq::counts()
            .into_iter()
            .enumerate()
            .filter_map(|(position, line)| {
                let fixed = position < softirq::FIXED_NAMES.len();
                let vector = if fixed {
                    position
                } else {
                    // A soft IRQ freed between the two reads is left out.
                    dynamic.iter().find(|(_, name)| *name == line.name)?.0
                };
                let open = softirq::is_open(vector);
                let handler = match (fixed, open) {
                    (true, true) => String::from(FIXED_HANDLERS.get(vector).copied().flatten().unwrap_or("?")),
                    (true, false) => String::from("-"),
                    (false, _) => line.name.clone(),
                };
                let owner = if fixed { "kernel" } else { owner(Kind::SoftIrq, 0, &line.name) };
                let mut entries: Vec<(Reply, Reply)> = alloc::vec![
                    (Reply::bulk_str("name"), Reply::bulk_str(&line.name)),
                    (Reply::bulk_str("vector"), int(vector)),
                    (Reply::bulk_str("kind"), Reply::bulk_str(if fixed { "fixed" } else { "dynamic" })),
                    (Reply::bulk_str("open"), int(open)),
                    (Reply::bulk_str("handler"), Reply::bulk_str(&handler)),
                    (Reply::bulk_str("owner"), Reply::bulk_str(owner)),
                ];
                let mut total = 0u64;
                for (cpu, &count) in line.per_cpu.iter().enumerate() {
                    total = total.saturating_add(count);
                    entries.push((Reply::bulk_str(&format!("cpu{cpu}")), int(count)));
                }
                entries.push((Reply::bulk_str("total"), int(total)));
                Some(Reply::Map(entries))
            })
            .collect(),
    )
}
