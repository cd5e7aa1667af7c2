//! End-to-end scenarios of the listings (issue 15, "discoverable names"):
//! every name `TASKLETS`, `TIMERS`, `WORKQUEUES [ITEMS]` and `SOFTIRQS`
//! show is one the action commands (`TASKLET`, `TIMER`, `WORK`, `SOFTIRQ`)
//! accept; the listed counters move after an action; a module's objects
//! carry its name as owner and leave the listings when it unloads; `rtctl`
//! shows the four tables and their JSON.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rtedge_proto::Value;

use super::resp::{Conn, expect_error, expect_ok, field_int, field_text, integer, items};
use super::{Ctx, Scenario, Where};

/// They share the booted appliance and come after every other shared
/// scenario (they schedule tasklets and unload modules that others count).
pub const SCENARIOS: &[Scenario] = &[
    Scenario { name: "names::every_listed_name_is_accepted_and_its_counters_move", run: listed_names_act, on: Where::Reference },
    Scenario { name: "names::a_module_owns_its_objects_and_unloading_removes_them", run: unload_removes, on: Where::Reference },
    Scenario { name: "names::rtctl_shows_the_four_listings_as_tables_and_json", run: rtctl_tables, on: Where::Reference },
];

/// Bound for what happens within a few periods.
const WAIT: Duration = Duration::from_secs(30);

fn connect(ctx: &Ctx<'_>) -> Result<Conn> {
    Conn::authed(&ctx.target(), &ctx.token)
}

/// The rows of a listing.
fn rows(conn: &mut Conn, args: &[&str]) -> Result<Vec<Value>> {
    let reply = conn.call(args)?;
    Ok(items(&reply).with_context(|| args.join(" "))?.to_vec())
}

/// The row called `name`, if listed.
fn row(conn: &mut Conn, args: &[&str], name: &str) -> Result<Option<Value>> {
    for row in rows(conn, args)? {
        if field_text(&row, "name")? == name {
            return Ok(Some(row));
        }
    }
    Ok(None)
}

fn names(conn: &mut Conn, args: &[&str]) -> Result<Vec<String>> {
    rows(conn, args)?.iter().map(|row| field_text(row, "name")).collect()
}

/// Field `key` of the row called `name`.
fn count(conn: &mut Conn, args: &[&str], name: &str, key: &str) -> Result<i64> {
    let row = row(conn, args, name)?.with_context(|| format!("{} does not list '{name}'", args.join(" ")))?;
    field_int(&row, key)
}

/// Polls until `field` of `name` in the listing exceeds `before`.
fn wait_above(conn: &mut Conn, args: &[&str], name: &str, key: &str, before: i64) -> Result<i64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = count(conn, args, name, key)?;
        if now > before {
            return Ok(now);
        }
        if Instant::now() >= deadline {
            bail!("{} '{name}': {key} stayed at {now} (was {before}) for {WAIT:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn call_ok(conn: &mut Conn, args: &[&str]) -> Result<()> {
    expect_ok(&conn.call(args)?).with_context(|| args.join(" "))
}

// ------------------------------------------------ names act, counters move

fn listed_names_act(ctx: &mut Ctx<'_>) -> Result<()> {
    let mut conn = connect(ctx)?;

    // Tasklets: each listed name takes TASKLET SCHEDULE; its schedule count
    // moves, and an enabled one runs.
    let tasklets = names(&mut conn, &["TASKLETS"])?;
    ensure!(tasklets.iter().any(|name| name == "tasklet"), "TASKLETS lacks the tasklet program's tasklet: {tasklets:?}");
    for name in &tasklets {
        let schedules = count(&mut conn, &["TASKLETS"], name, "schedules")?;
        let runs = count(&mut conn, &["TASKLETS"], name, "runs")?;
        let disabled = count(&mut conn, &["TASKLETS"], name, "disabled")?;
        call_ok(&mut conn, &["TASKLET", "SCHEDULE", name])?;
        wait_above(&mut conn, &["TASKLETS"], name, "schedules", schedules)?;
        if disabled == 0 {
            wait_above(&mut conn, &["TASKLETS"], name, "runs", runs)?;
        }
    }
    expect_error(&conn.call(&["TASKLET", "SCHEDULE", "no-such-tasklet"])?, "ERR no such tasklet")?;

    // Timers: each takes TIMER MOD; the heartbeat, deleted, stays quiet and
    // unarmed, then fires once re-armed and shows its period again.
    let timers = names(&mut conn, &["TIMERS"])?;
    ensure!(timers.iter().any(|name| name == super::programs::NAMED_TIMER), "TIMERS lacks the heartbeat: {timers:?}");
    for name in &timers {
        let fired = count(&mut conn, &["TIMERS"], name, "fired")?;
        integer(&conn.call(&["TIMER", "MOD", name, "20"])?).with_context(|| format!("TIMER MOD {name} 20"))?;
        wait_above(&mut conn, &["TIMERS"], name, "fired", fired)?;
    }
    let heartbeat = super::programs::NAMED_TIMER;
    integer(&conn.call(&["TIMER", "DEL", heartbeat])?)?;
    let quiet = count(&mut conn, &["TIMERS"], heartbeat, "fired")?;
    ensure!(count(&mut conn, &["TIMERS"], heartbeat, "armed")? == 0, "the heartbeat is armed after TIMER DEL");
    ensure!(count(&mut conn, &["TIMERS"], heartbeat, "expires_in_ms")? == -1, "a disarmed timer has an expiry");
    std::thread::sleep(Duration::from_millis(1500));
    ensure!(count(&mut conn, &["TIMERS"], heartbeat, "fired")? == quiet, "the heartbeat fired while deleted");
    integer(&conn.call(&["TIMER", "MOD", heartbeat, "10"])?)?;
    wait_above(&mut conn, &["TIMERS"], heartbeat, "fired", quiet)?;
    let after = row(&mut conn, &["TIMERS"], heartbeat)?.context("heartbeat gone")?;
    ensure!(field_int(&after, "armed")? == 1, "the heartbeat did not re-arm itself: {after:?}");
    ensure!(field_int(&after, "period_ms")? == 1000, "the heartbeat's period is not 1000 ms: {after:?}");
    let expires = field_int(&after, "expires_in_ms")?;
    ensure!((0..=1000).contains(&expires), "the heartbeat expires in {expires} ms, beyond its period");

    // Workqueues: each listed queue takes WORK FLUSH; each listed item, queued
    // on each queue, runs and counts on the queue.
    let queues = names(&mut conn, &["WORKQUEUES"])?;
    ensure!(queues.iter().any(|name| name == "events"), "WORKQUEUES lacks events: {queues:?}");
    let work_items = names(&mut conn, &["WORKQUEUES", "ITEMS"])?;
    ensure!(work_items.iter().any(|name| name == super::programs::NAMED_WORK), "WORKQUEUES ITEMS lacks the job item: {work_items:?}");
    for queue in &queues {
        call_ok(&mut conn, &["WORK", "FLUSH", queue])?;
        for item in &work_items {
            let runs = count(&mut conn, &["WORKQUEUES", "ITEMS"], item, "runs")?;
            let done = count(&mut conn, &["WORKQUEUES"], queue, "done")?;
            let queued = integer(&conn.call(&["WORK", "QUEUE", queue, item])?).with_context(|| format!("WORK QUEUE {queue} {item}"))?;
            ensure!(queued == 1, "WORK QUEUE {queue} {item}: {queued} (it was pending)");
            wait_above(&mut conn, &["WORKQUEUES", "ITEMS"], item, "runs", runs)?;
            wait_above(&mut conn, &["WORKQUEUES"], queue, "done", done)?;
        }
    }

    // Soft IRQs: every fixed vector is listed; each open one takes SOFTIRQ
    // RAISE and counts; one without a handler is refused, and says so.
    let softirqs = rows(&mut conn, &["SOFTIRQS"])?;
    let fixed = ["HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU"];
    for (vector, name) in fixed.iter().enumerate() {
        let row = softirqs.get(vector).with_context(|| format!("SOFTIRQS has no row {vector}"))?;
        ensure!(field_text(row, "name")? == *name && field_int(row, "vector")? == vector as i64, "SOFTIRQS row {vector}: {row:?}");
    }
    let timer_row = &softirqs[1];
    ensure!(field_text(timer_row, "handler")? == "timer::run_jiffy_timers", "TIMER's handler: {timer_row:?}");
    for row in &softirqs {
        let name = field_text(row, "name")?;
        let reply = conn.call(&["SOFTIRQ", "RAISE", &name])?;
        if field_int(row, "open")? == 1 {
            ensure!(field_text(row, "handler")? != "-", "open vector {name} has no handler name");
            let total = field_int(row, "total")?;
            expect_ok(&reply).with_context(|| format!("SOFTIRQ RAISE {name}"))?;
            wait_above(&mut conn, &["SOFTIRQS"], &name, "total", total)?;
        } else {
            ensure!(field_text(row, "handler")? == "-", "closed vector {name} names a handler: {row:?}");
            expect_error(&reply, "ERR soft IRQ").with_context(|| format!("SOFTIRQ RAISE {name} (no handler)"))?;
        }
    }
    ctx.figure(
        "listed",
        format!(
            "{} tasklets, {} timers, {} workqueues, {} work items, {} soft IRQs",
            tasklets.len(),
            timers.len(),
            queues.len(),
            work_items.len(),
            softirqs.len()
        ),
    );
    Ok(())
}

// ------------------------------------------------- owners, unload, reload

/// (module, listing, name) of the objects the appliance's modules register.
const OWNED: [(&str, &[&str], &str); 4] = [
    ("tasklet", &["TASKLETS"], "tasklet"),
    ("job", &["WORKQUEUES"], super::programs::NAMED_QUEUE),
    ("job", &["WORKQUEUES", "ITEMS"], super::programs::NAMED_WORK),
    ("softirq-latency", &["SOFTIRQS"], "softirq jitter test"),
];

/// The action on a listed name that must be refused once it is gone.
fn act(conn: &mut Conn, listing: &[&str], name: &str) -> Result<Value> {
    Ok(match listing {
        ["TASKLETS"] => conn.call(&["TASKLET", "SCHEDULE", name])?,
        ["WORKQUEUES"] => conn.call(&["WORK", "FLUSH", name])?,
        ["WORKQUEUES", "ITEMS"] => conn.call(&["WORK", "QUEUE", "events", name])?,
        _ => conn.call(&["SOFTIRQ", "RAISE", name])?,
    })
}

fn unload_removes(ctx: &mut Ctx<'_>) -> Result<()> {
    let mut conn = connect(ctx)?;
    for (module, listing, name) in OWNED {
        let what = format!("{} '{name}'", listing.join(" "));
        let listed = row(&mut conn, listing, name)?.with_context(|| format!("{what} not listed with {module} loaded"))?;
        ensure!(field_text(&listed, "owner")? == module, "{what}: owner {:?}, not {module}", field_text(&listed, "owner")?);
    }
    // The heartbeat belongs to no module.
    ensure!(count_text(&mut conn, &["TIMERS"], super::programs::NAMED_TIMER, "owner")? == "-", "the heartbeat has a module owner");
    for module in ["tasklet", "job", "softirq-latency"] {
        call_ok(&mut conn, &["MODULE", "UNLOAD", module])?;
        for (owner, listing, name) in OWNED.iter().filter(|(owner, _, _)| *owner == module) {
            let what = format!("{} '{name}'", listing.join(" "));
            ensure!(row(&mut conn, listing, name)?.is_none(), "{what} still listed after MODULE UNLOAD {owner}");
            let reply = act(&mut conn, listing, name)?;
            expect_error(&reply, "ERR").with_context(|| format!("the action on {what} after unloading {owner}"))?;
        }
        call_ok(&mut conn, &["MODULE", "LOAD", module])?;
        for (owner, listing, name) in OWNED.iter().filter(|(owner, _, _)| *owner == module) {
            let what = format!("{} '{name}'", listing.join(" "));
            let listed = row(&mut conn, listing, name)?.with_context(|| format!("{what} not listed after MODULE LOAD {owner}"))?;
            ensure!(field_text(&listed, "owner")? == *owner, "{what} after reload: {listed:?}");
        }
        if module == "job" {
            // The new queue's workers come from the pool, counted afresh.
            let jobs = row(&mut conn, &["WORKQUEUES"], super::programs::NAMED_QUEUE)?.context("jobs not listed after the reload")?;
            ensure!(field_int(&jobs, "done")? == 0, "a reloaded queue starts with its pool worker's old count: {jobs:?}");
        }
    }
    Ok(())
}

fn count_text(conn: &mut Conn, args: &[&str], name: &str, key: &str) -> Result<String> {
    let row = row(conn, args, name)?.with_context(|| format!("{} does not list '{name}'", args.join(" ")))?;
    field_text(&row, key)
}

// ------------------------------------------------------------ rtctl tables

fn rtctl_tables(ctx: &mut Ctx<'_>) -> Result<()> {
    let expected: [(&str, &[&str], &str); 4] = [
        ("tasklets", &["NAME", "STATE", "SCHEDULES", "RUNS", "OWNER"], "tasklet"),
        ("timers", &["NAME", "ARMED", "EXPIRES-IN", "PERIOD", "FIRED", "OWNER"], super::programs::NAMED_TIMER),
        ("workqueues", &["WORKERS", "QUEUED", "RUNNING", "DONE", "DELAYED", "FLAGS", "ITEM"], super::programs::NAMED_WORK),
        ("softirqs", &["VEC", "NAME", "HANDLER", "OWNER", "CPU0", "TOTAL"], "timer::run_jiffy_timers"),
    ];
    for (command, columns, needle) in expected {
        let (code, out, err) = ctx.rtctl(&[command])?;
        ensure!(code == 0, "rtctl {command} exited {code}: {err}");
        let header = out.lines().next().unwrap_or_default();
        for column in columns {
            ensure!(out.contains(column), "rtctl {command}: no column {column} in {header:?}");
        }
        ensure!(out.contains(needle), "rtctl {command} does not show {needle}:\n{out}");
        println!("e2e: rtctl {command}:\n{out}");
        let (code, json, err) = ctx.rtctl(&["--json", command])?;
        ensure!(code == 0, "rtctl --json {command} exited {code}: {err}");
        let parsed: serde_json::Value = serde_json::from_str(&json).with_context(|| format!("rtctl --json {command}: {json}"))?;
        let rows = match command {
            "workqueues" => parsed.get("items").cloned().unwrap_or_default(),
            _ => parsed.clone(),
        };
        let listed = rows.as_array().is_some_and(|rows| rows.iter().any(|row| row.to_string().contains(needle)));
        ensure!(listed, "rtctl --json {command} does not list {needle}: {json}");
    }
    Ok(())
}
