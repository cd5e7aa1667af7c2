//! End-to-end scenarios of the appliance's programs (issue 7): each seed
//! program's observable behaviour over the control plane — counts, orders,
//! the exhaustion point of the rt-pool, the exactly-once pending tasklet
//! run, bounded shutdown — and module load/unload cycles against baselines.
//!
//! The appliance boots with [`EXTRA_CMDLINE`] (a short rt-allocator period,
//! `file=` for kmore) and, under QEMU, the cpio archive of
//! [`boot_archive`] as its initrd. Waits are for events, with generous
//! bounds; measured times are printed as figures, never judged.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rtedge_proto::Value;

use super::resp::{Conn, expect_error, expect_ok, field, field_int, field_text, info_field, integer, items, text};
use super::{Ctx, Scenario, Where};

/// A kernel timer the appliance registers by name (`TIMER MOD|DEL`): its
/// heartbeat, always present whatever modules are loaded.
pub const NAMED_TIMER: &str = "heartbeat";
/// A work queue and a work item the appliance registers by name (`WORK`).
pub const NAMED_QUEUE: &str = "jobs";
pub const NAMED_WORK: &str = "job";
/// A command the application registers (listed by `HELP`).
pub const APP_COMMAND: &str = "JOB.START";

/// Added to the appliance profile's command line for the end-to-end runs:
/// the rt-allocator asks every 10 ms (the pool is exhausted after 1.3 s, not
/// 64 s), and kmore reads a file of the boot archive at load.
pub const EXTRA_CMDLINE: &str = "rtalloc_period_ms=10 file=/hello.txt";
/// The period on which `tasklet-disable` disables its tasklet (its default).
const TASKLET_DISABLE_AT: i64 = 20;
/// `rtalloc`'s request step and the rt-pool's limits.
const RTALLOC_STEP: i64 = 128;
const POOL_BUFFERS: i64 = 128;
const POOL_MAX_SIZE: i64 = 128 * 1024;
/// The reserved raw region (`reserve=2M` in the appliance profile).
const RAW_REGION_SIZE: i64 = 2 * 1024 * 1024;
/// Every module, in the appliance's load order.
const MODULES: [&str; 9] = ["tasklet", "tasklet-disable", "rtalloc", "buddy", "softirq-latency", "serial-irq", "shm", "job", "kmore"];

/// Bound for anything that happens within a few RT periods.
const WAIT: Duration = Duration::from_secs(30);
/// Bound for what takes tens of periods (or a slow hypervisor).
const LONG_WAIT: Duration = Duration::from_secs(60);

/// Scenarios that share the booted appliance. They run under QEMU only:
/// under uhyve on the build machines (nested KVM, `kvm_pvm`) the guest's
/// control plane stops answering within seconds of boot (with all modules
/// loaded, and also with only `shm` and `job`), and its RT threads fall
/// behind their periods, so none of these checks can be judged there.
pub const SCENARIOS: &[Scenario] = &[
    Scenario { name: "programs::banner_then_a_heartbeat_line_every_10_s", run: banner_heartbeat, on: Where::Qemu },
    Scenario { name: "programs::tasklet_init_run_then_one_run_per_period", run: tasklet, on: Where::Qemu },
    Scenario { name: "programs::tasklet_disable_pending_run_exactly_once_after_kill", run: tasklet_disable, on: Where::Qemu },
    Scenario { name: "programs::rtalloc_exhausts_at_128_buffers_and_unload_frees_them", run: rtalloc, on: Where::Qemu },
    Scenario { name: "programs::buddy_maps_wake_and_kill_and_exits_after_its_rt_thread", run: buddy, on: Where::Qemu },
    Scenario { name: "programs::softirq_latency_batches_of_500_on_a_channel", run: softirq_latency, on: Where::Qemu },
    Scenario { name: "programs::serial_irq_counts_typed_keys_and_unload_restores_the_kernel", run: serial_irq, on: Where::Qemu },
    Scenario { name: "programs::shm_set_reaches_the_rt_thread_and_the_raw_region", run: shm, on: Where::Qemu },
    Scenario { name: "programs::job_command_reports_on_events_and_its_thread_exits", run: job, on: Where::Qemu },
    Scenario { name: "programs::kmore_reads_a_boot_archive_file_and_refuses_clearly", run: kmore, on: Where::Qemu },
    Scenario { name: "programs::modules_load_unload_cycles_return_to_baseline", run: module_cycles, on: Where::Qemu },
];

/// Scenarios that need a fresh boot each (they end the appliance or need
/// its first moments).
pub const FRESH_BOOT: &[Scenario] = &[SHUTDOWN];

/// Ends the guest it runs on.
pub const SHUTDOWN: Scenario = Scenario { name: "programs::shutdown_with_modules_loaded_is_bounded", run: shutdown, on: Where::Qemu };

// ------------------------------------------------------------ boot archive

/// `/hello.txt`: two lines, then enough filler that the file is larger than
/// the page kmore reads.
pub const HELLO_FIRST_LINE: &str = "hello from the rtedge e2e boot archive";
const HELLO_SIZE: usize = 5000;
const KMORE_PAGE: i64 = 4096;

fn hello_text() -> Vec<u8> {
    let mut text = format!("{HELLO_FIRST_LINE}\nkmore logs the first page of this file\n").into_bytes();
    while text.len() < HELLO_SIZE - 1 {
        text.push(b'.');
    }
    text.push(b'\n');
    text
}

/// One cpio newc member (header, name and data, each padded to 4 bytes).
fn cpio_member(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
    out.extend_from_slice(b"070701");
    // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
    // rdevmajor, rdevminor, namesize, check
    let nlink = if mode & 0o040_000 != 0 { 2 } else { 1 };
    for value in [1, mode as usize, 0, 0, nlink, 0, data.len(), 0, 0, 0, 0, name.len() + 1, 0] {
        out.extend_from_slice(format!("{value:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Writes the boot archive (cpio newc) the appliance gets as its initrd
/// under QEMU: `/hello.txt` and a directory `/etc` with one file.
pub fn boot_archive(scratch: &Path) -> Result<PathBuf> {
    let mut out = Vec::new();
    cpio_member(&mut out, ".", 0o040_755, b"");
    cpio_member(&mut out, "etc", 0o040_755, b"");
    cpio_member(&mut out, "etc/motd", 0o100_644, b"rtedge end-to-end tests\n");
    cpio_member(&mut out, "hello.txt", 0o100_644, &hello_text());
    cpio_member(&mut out, "TRAILER!!!", 0, b"");
    std::fs::create_dir_all(scratch)?;
    let path = scratch.join("boot.cpio");
    std::fs::write(&path, &out).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

// ----------------------------------------------------------------- helpers

fn connect(ctx: &Ctx<'_>) -> Result<Conn> {
    Conn::authed(&ctx.target(), &ctx.token)
}

fn call_ok(conn: &mut Conn, args: &[&str]) -> Result<()> {
    expect_ok(&conn.call(args)?).with_context(|| args.join(" "))
}

/// `redis-cli` must print exactly `expected` (after trimming).
fn cli_is(ctx: &Ctx<'_>, args: &[&str], expected: &str) -> Result<String> {
    let out = ctx.redis_cli(args)?;
    ensure!(out.trim() == expected, "redis-cli {}: expected `{expected}`, got {out:?}", args.join(" "));
    Ok(out)
}

/// `redis-cli` output must contain `needle`.
fn cli_has(ctx: &Ctx<'_>, args: &[&str], needle: &str) -> Result<String> {
    let out = ctx.redis_cli(args)?;
    ensure!(out.contains(needle), "redis-cli {}: expected `{needle}` in {out:?}", args.join(" "));
    Ok(out)
}

fn get_int(conn: &mut Conn, key: &str) -> Result<i64> {
    let reply = conn.call(&["GET", key])?;
    integer(&reply).with_context(|| format!("GET {key}"))
}

/// A bool static: RESP3 boolean, or in RESP2 `:1`/`:0` (what the server
/// sends) or `true`/`false` (what net/CONTROL.md says).
fn get_bool(conn: &mut Conn, key: &str) -> Result<bool> {
    match conn.call(&["GET", key])? {
        Value::Boolean(value) => Ok(value),
        Value::Integer(value @ (0 | 1)) => Ok(value == 1),
        Value::Bulk(bytes) if bytes == b"true" => Ok(true),
        Value::Bulk(bytes) if bytes == b"false" => Ok(false),
        other => bail!("GET {key}: expected a bool, got {other:?}"),
    }
}

fn get_text(conn: &mut Conn, key: &str) -> Result<String> {
    match conn.call(&["GET", key])? {
        Value::Bulk(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        other => bail!("GET {key}: expected text, got {other:?}"),
    }
}

/// The values of `keys` read twice in a row with the same result, so that
/// no update fell between the reads of one sample.
fn stable_ints(conn: &mut Conn, keys: &[&str]) -> Result<Vec<i64>> {
    let mut args = vec!["MGET"];
    args.extend_from_slice(keys);
    let read = |conn: &mut Conn| -> Result<Vec<i64>> { items(&conn.call(&args)?)?.iter().map(integer).collect() };
    let mut last = read(conn)?;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(30));
        let now = read(conn)?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    bail!("{} did not hold still for 30 ms in 50 tries (last {last:?})", keys.join(", "))
}

/// Polls `poll` until it gives a value (bounded).
fn wait_for<T>(what: &str, limit: Duration, mut poll: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = poll()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the integer static `key` satisfies `ok`; returns its value.
fn wait_int(conn: &mut Conn, key: &str, limit: Duration, what: &str, ok: impl Fn(i64) -> bool) -> Result<i64> {
    let mut last = None;
    wait_for(what, limit, || {
        let value = get_int(conn, key)?;
        last = Some(value);
        Ok(ok(value).then_some(value))
    })
    .with_context(|| format!("{key} was last {last:?}"))
}

/// Lets the guest's own clock pass `seconds` (counted by its heartbeat
/// timer), so that "nothing more happened" is judged over guest time.
fn guest_seconds(conn: &mut Conn, seconds: i64) -> Result<()> {
    let start = get_int(conn, "appliance.heartbeats")?;
    wait_int(conn, "appliance.heartbeats", LONG_WAIT, "the heartbeat timer", |beats| beats >= start + seconds)?;
    Ok(())
}

fn info(conn: &mut Conn, section: &str) -> Result<String> {
    let reply = conn.call(&["INFO", section])?;
    ensure!(!matches!(reply, Value::Error(_)), "INFO {section}: {reply:?}");
    Ok(text(&reply))
}

fn info_int(info: &str, key: &str) -> Result<i64> {
    let value = info_field(info, key).with_context(|| format!("no `{key}` in INFO:\n{info}"))?;
    value.trim().parse().with_context(|| format!("INFO {key}:{value} is not an integer"))
}

/// Loads or unloads a module over the wire; must answer `+OK`.
fn module(conn: &mut Conn, action: &str, name: &str) -> Result<()> {
    call_ok(conn, &["MODULE", action, name])
}

/// One row of `THREADS`.
#[derive(Debug)]
struct ThreadRow {
    name: String,
    kind: String,
    state: String,
    nice: i64,
}

fn threads(conn: &mut Conn) -> Result<Vec<ThreadRow>> {
    let reply = conn.call(&["THREADS"])?;
    items(&reply)?
        .iter()
        .map(|row| {
            Ok(ThreadRow {
                name: field_text(row, "name")?,
                kind: field_text(row, "kind")?,
                state: field_text(row, "state")?,
                nice: field_int(row, "nice")?,
            })
        })
        .collect()
}

/// The live (not exited) thread called `name`, if any.
fn live_thread(conn: &mut Conn, name: &str) -> Result<Option<ThreadRow>> {
    Ok(threads(conn)?.into_iter().find(|row| row.name == name && row.state != "exited"))
}

/// `MODULE LIST` as (name -> (state, threads, loads)).
fn module_list(conn: &mut Conn) -> Result<BTreeMap<String, (String, i64, i64)>> {
    let reply = conn.call(&["MODULE", "LIST"])?;
    items(&reply)?
        .iter()
        .map(|row| Ok((field_text(row, "name")?, (field_text(row, "state")?, field_int(row, "threads")?, field_int(row, "loads")?))))
        .collect()
}

/// The first raw value of `"key":` in a one-line JSON payload (the kernel's
/// event payloads are flat objects; a key may appear twice, as `reason` does
/// on `rtpool`, and the first is taken).
fn json_raw<'a>(payload: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\":");
    let start = payload.find(&pattern)? + pattern.len();
    let rest = &payload[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut escaped = false;
        for (index, c) in quoted.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => return Some(&quoted[..index]),
                _ => escaped = false,
            }
        }
        None
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim())
    }
}

fn json_int(payload: &str, key: &str) -> Result<i64> {
    json_raw(payload, key).and_then(|raw| raw.parse().ok()).with_context(|| format!("no integer `{key}` in {payload}"))
}

fn json_text<'a>(payload: &'a str, key: &str) -> Result<&'a str> {
    json_raw(payload, key).with_context(|| format!("no `{key}` in {payload}"))
}

fn is_kind(payload: &str, kind: &str) -> bool {
    json_raw(payload, "kind") == Some(kind)
}

/// A connection subscribed to some channels. Messages read while waiting
/// for another are kept, in order, for later waits: events of one cause
/// may arrive in any order on different channels.
struct Subscriber {
    conn: Conn,
    pending: VecDeque<(String, String)>,
}

impl Subscriber {
    fn new(ctx: &Ctx<'_>, channels: &[&str]) -> Result<Subscriber> {
        let mut conn = connect(ctx)?;
        let mut args = vec!["SUBSCRIBE"];
        args.extend_from_slice(channels);
        conn.send(&args)?;
        for channel in channels {
            let confirmation = conn.read()?;
            let parts = items(&confirmation)?;
            ensure!(
                parts.len() == 3 && text(&parts[0]) == "subscribe" && text(&parts[1]) == *channel,
                "SUBSCRIBE {channel}: confirmation {confirmation:?}"
            );
        }
        Ok(Subscriber { conn, pending: VecDeque::new() })
    }

    /// The next message from the wire (channel, payload) within `wait`.
    fn receive(&mut self, wait: Duration) -> Result<Option<(String, String)>> {
        let Some(reply) = self.conn.read_within(wait)? else { return Ok(None) };
        let parts = match &reply {
            Value::Array(parts) | Value::Push(parts) => parts,
            other => bail!("a subscriber got {other:?}"),
        };
        ensure!(parts.len() == 3 && text(&parts[0]) == "message", "a subscriber got {reply:?}");
        Ok(Some((text(&parts[1]), text(&parts[2]))))
    }

    /// The next message on `channel` within `limit`, in arrival order
    /// (messages of other channels are kept).
    fn next_on(&mut self, channel: &str, limit: Duration) -> Result<Option<String>> {
        self.take(limit, |on, _| on == channel)
    }

    /// The first message on `channel` of `kind` that satisfies `ok`, within
    /// `limit`; the others are kept.
    fn wait(&mut self, channel: &str, kind: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> Result<String> {
        let other = self.pending.len();
        self.take(limit, |on, payload| on == channel && is_kind(payload, kind) && ok(payload))?.with_context(|| {
            format!("no such `{kind}` message on channel {channel} within {limit:?} ({other} other messages kept before the wait)")
        })
    }

    fn take(&mut self, limit: Duration, wanted: impl Fn(&str, &str) -> bool) -> Result<Option<String>> {
        if let Some(index) = self.pending.iter().position(|(on, payload)| wanted(on, payload)) {
            return Ok(self.pending.remove(index).map(|(_, payload)| payload));
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.receive(left)? {
                Some((on, payload)) if wanted(&on, &payload) => return Ok(Some(payload)),
                Some(message) => self.pending.push_back(message),
                None => return Ok(None),
            }
        }
    }

    /// Every message kept or arriving until a quiet `wait`.
    fn drain(&mut self, wait: Duration) -> Result<Vec<(String, String)>> {
        let mut messages: Vec<(String, String)> = self.pending.drain(..).collect();
        while let Some(message) = self.receive(wait)? {
            messages.push(message);
        }
        Ok(messages)
    }
}

/// Lines of `console` that contain `needle`, in order.
fn lines_with<'a>(console: &'a str, needle: &str) -> Vec<&'a str> {
    console.lines().filter(|line| line.contains(needle)).collect()
}

/// Checks that `needles` appear in `console` in this order (each on a later line).
fn in_order(console: &str, needles: &[&str]) -> Result<()> {
    let lines: Vec<&str> = console.lines().collect();
    let mut from = 0;
    for needle in needles {
        match lines[from..].iter().position(|line| line.contains(needle)) {
            Some(offset) => from += offset + 1,
            None => bail!(
                "`{needle}` not on the console after the lines before it ({}); last lines:\n{}",
                needles.join(" | "),
                super::guest::tail(console, 15)
            ),
        }
    }
    Ok(())
}

/// The number after `prefix` in `line` (e.g. "RT->tasklet 12 us").
fn number_after(line: &str, prefix: &str) -> Option<u64> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    let digits: String = rest.trim_start().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `LATENCY source` as a figure: count and percentiles.
fn latency_figure(conn: &mut Conn, source: &str) -> Result<(i64, String)> {
    let reply = conn.call(&["LATENCY", source])?;
    let us = |key: &str| -> Result<String> { Ok(format!("{:.1}", field_int(&reply, key)? as f64 / 1000.0)) };
    let count = field_int(&reply, "count")?;
    Ok((
        count,
        format!("{count} samples, min {} us, p50 {} us, p99 {} us, max {} us", us("min_ns")?, us("p50_ns")?, us("p99_ns")?, us("max_ns")?),
    ))
}

// ------------------------------------------------------ banner, heartbeat

fn banner_heartbeat(ctx: &mut Ctx<'_>) -> Result<()> {
    let banner = ctx.guest.wait_console("ready in", WAIT)?;
    ensure!(banner.contains("rtedge ") && banner.trim_end().ends_with(" us"), "the banner's ready line: {banner}");
    // The heartbeat timer counts a beat a second and logs every 10th (the
    // default `heartbeat=10`): the next multiple of 10 from the count read
    // now appears, and so did the one before it.
    let mut conn = connect(ctx)?;
    let beats = get_int(&mut conn, "appliance.heartbeats")?;
    let next = (beats / 10 + 1) * 10;
    let line = ctx.guest.wait_console(&format!("heartbeat {next}: up "), WAIT)?;
    ensure!(line.trim_end().ends_with(" s"), "heartbeat line: {line}");
    let console = ctx.guest.console();
    ensure!(next == 10 || console.contains(&format!("heartbeat {}: up ", next - 10)), "heartbeat {} was not logged", next - 10);
    ensure!(!console.contains(&format!("heartbeat {}: up ", next - 1)), "heartbeat {} was logged: not every 10th", next - 1);
    Ok(())
}

// --------------------------------------------------------------- 1 tasklet

fn tasklet(ctx: &mut Ctx<'_>) -> Result<()> {
    let mut conn = connect(ctx)?;
    // A fresh load: the run `init` schedules comes first, then one run per
    // period of the RT thread, each with that period's message.
    module(&mut conn, "UNLOAD", "tasklet")?;
    let mark = ctx.guest.console_mark();
    module(&mut conn, "LOAD", "tasklet")?;
    let first = ctx.guest.wait_console_from(mark, "(run 1,", WAIT)?;
    ensure!(first.contains("tasklet: Linux tasklet called in init_module at "), "the first run is init's: {first}");
    let tenth = ctx.guest.wait_console_from(mark, "(run 10,", LONG_WAIT)?;
    ensure!(tenth.contains("tasklet: Linux tasklet received RT-Thread arg \"2a\" (9) at "), "run 10 carries period 9's message: {tenth}");
    let logged: Vec<u64> =
        lines_with(&ctx.guest.console_since(mark), "RT->tasklet").iter().filter_map(|line| number_after(line, "RT->tasklet")).collect();
    ctx.figure("RT->tasklet delay logged on runs 1 and 10", format!("{logged:?} us"));

    // runs = periods + 1 (init's run), and both keep counting.
    let counts = stable_ints(&mut conn, &["tasklet.runs", "tasklet.periods"])?;
    ensure!(counts[0] == counts[1] + 1, "tasklet.runs {} != tasklet.periods {} + 1", counts[0], counts[1]);
    wait_int(&mut conn, "tasklet.runs", WAIT, "tasklet runs keep counting", |runs| runs >= counts[0] + 2)?;
    let message = get_text(&mut conn, "tasklet.message")?;
    ensure!(message.starts_with("Linux tasklet received RT-Thread arg \"2a\" ("), "tasklet.message: {message:?}");
    ensure!(get_int(&mut conn, "tasklet.last_delay_ns")? > 0, "tasklet.last_delay_ns is 0");
    // Every run is one sample of LATENCY tasklet.delay.
    let before = get_int(&mut conn, "tasklet.runs")?;
    let (samples, figure) = latency_figure(&mut conn, "tasklet.delay")?;
    let after = get_int(&mut conn, "tasklet.runs")?;
    ensure!((before..=after).contains(&samples), "LATENCY tasklet.delay has {samples} samples for {before}..{after} runs");
    ctx.figure("LATENCY tasklet.delay", figure);

    // TASKLET HI from the control plane: one run more than periods.
    cli_is(ctx, &["TASKLET", "HI", "tasklet"], "OK")?;
    wait_for("the extra run of TASKLET HI", WAIT, || {
        let counts = stable_ints(&mut conn, &["tasklet.runs", "tasklet.periods"])?;
        Ok((counts[0] == counts[1] + 2).then_some(()))
    })?;
    // Disabled, it does not run; the schedules of several periods wait as
    // one pending run, which happens when it is enabled.
    cli_is(ctx, &["TASKLET", "DISABLE", "tasklet"], "OK")?;
    let disabled = stable_ints(&mut conn, &["tasklet.runs", "tasklet.periods"])?;
    wait_int(&mut conn, "tasklet.periods", WAIT, "three periods while disabled", |periods| periods >= disabled[1] + 3)?;
    let held = stable_ints(&mut conn, &["tasklet.runs", "tasklet.periods"])?;
    ensure!(held[0] == disabled[0], "the disabled tasklet ran: runs {} -> {}", disabled[0], held[0]);
    cli_is(ctx, &["TASKLET", "ENABLE", "tasklet"], "OK")?;
    let offset = held[0] - held[1] + 1;
    wait_for("one run for the pending schedules after ENABLE", WAIT, || {
        let counts = stable_ints(&mut conn, &["tasklet.runs", "tasklet.periods"])?;
        Ok((counts[0] - counts[1] == offset).then_some(()))
    })?;
    let periods = get_int(&mut conn, "tasklet.periods")?;
    wait_int(&mut conn, "tasklet.periods", WAIT, "two more periods", |now| now >= periods + 2)?;
    let later = stable_ints(&mut conn, &["tasklet.runs", "tasklet.periods"])?;
    ensure!(
        later[0] - later[1] == offset,
        "after ENABLE the {} coalesced schedules must give exactly one run, then one per period: runs - periods = {}, expected {offset}",
        held[1] - disabled[1],
        later[0] - later[1]
    );
    ctx.figure("schedules coalesced into one run while disabled", format!("{}", held[1] - disabled[1]));
    Ok(())
}

// ------------------------------------------------------- 1b tasklet-disable

fn tasklet_disable(ctx: &mut Ctx<'_>) -> Result<()> {
    let mut conn = connect(ctx)?;
    // The RT thread disables its tasklet on period 20 (10 s after load).
    wait_for("tasklet_disable.disabled", LONG_WAIT, || Ok(get_bool(&mut conn, "tasklet_disable.disabled")?.then_some(())))?;
    let at_disable = get_int(&mut conn, "tasklet_disable.runs_at_disable")?;
    ensure!(
        at_disable == TASKLET_DISABLE_AT - 1,
        "tasklet_disable.runs_at_disable is {at_disable}: one run per period before period {TASKLET_DISABLE_AT} gives {}",
        TASKLET_DISABLE_AT - 1
    );
    let periods = get_int(&mut conn, "tasklet_disable.periods")?;
    wait_int(&mut conn, "tasklet_disable.periods", WAIT, "two periods while disabled", |now| now >= periods + 2)?;
    ensure!(get_int(&mut conn, "tasklet_disable.runs")? == at_disable, "the disabled tasklet ran");
    ensure!(get_int(&mut conn, "tasklet_disable.runs_after_enable")? == 0, "runs_after_enable before the KILL");
    ctx.guest.wait_console(&format!("disabled the tasklet on period {TASKLET_DISABLE_AT} after {at_disable} runs"), WAIT)?;

    // KILL cancels the RT thread; its cleanup handler re-enables the
    // tasklet, and the run pending since period 20 happens, once.
    let mut events = Subscriber::new(ctx, &["events", "threads.exit"])?;
    let mark = ctx.guest.console_mark();
    cli_is(ctx, &["KILL", "tasklet-disable-rt"], "OK")?;
    let pending = events.wait("events", "tasklet-pending-run", WAIT, |_| true)?;
    ensure!(json_int(&pending, "runs")? == at_disable + 1 && json_int(&pending, "since_enable")? == 1, "the pending run: {pending}");
    events.wait("threads.exit", "exit", WAIT, |payload| json_raw(payload, "thread") == Some("tasklet-disable-rt"))?;
    // The tasklet's line goes through its CPU's log ring and reaches the
    // console when klogd drains it, possibly after the event did: wait
    // for it (a clean-clone run saw it 130 console lines later).
    ctx.guest.wait_console_from(mark, "the pending run happened after the re-enable", WAIT)?;
    in_order(
        &ctx.guest.console_since(mark),
        &["tasklet-disable-rt: cleanup handler: re-enabled the tasklet", "the pending run happened after the re-enable"],
    )?;
    // Exactly once: three guest seconds later nothing more has run.
    guest_seconds(&mut conn, 3)?;
    let counts = stable_ints(&mut conn, &["tasklet_disable.runs", "tasklet_disable.runs_after_enable"])?;
    ensure!(counts == [at_disable + 1, 1], "runs and runs_after_enable after the KILL: {counts:?}, expected [{}, 1]", at_disable + 1);
    let more = events.drain(Duration::from_millis(200))?;
    ensure!(!more.iter().any(|(_, payload)| is_kind(payload, "tasklet-pending-run")), "a second pending run: {more:?}");
    ensure!(live_thread(&mut conn, "tasklet-disable-rt")?.is_none(), "tasklet-disable-rt still runs after KILL");

    let mark = ctx.guest.console_mark();
    module(&mut conn, "UNLOAD", "tasklet-disable")?;
    ctx.guest.wait_console_from(
        mark,
        &format!("tasklet-disable: unloaded: {at_disable} runs before the disable, 1 pending run(s) after the re-enable"),
        WAIT,
    )?;
    module(&mut conn, "LOAD", "tasklet-disable")?;
    Ok(())
}

// ---------------------------------------------------------------- 2 rtalloc

fn rtalloc(ctx: &mut Ctx<'_>) -> Result<()> {
    let mut conn = connect(ctx)?;
    // Start from an empty pool: the boot's load exhausted it long ago.
    module(&mut conn, "UNLOAD", "rtalloc")?;
    let pool = info(&mut conn, "rtpool")?;
    ensure!(info_int(&pool, "capacity")? == POOL_BUFFERS && info_int(&pool, "max_size")? == POOL_MAX_SIZE, "INFO rtpool limits:\n{pool}");
    ensure!(info_int(&pool, "in_use")? == 0 && info_int(&pool, "bytes")? == 0, "INFO rtpool after an unload:\n{pool}");
    let freed_before = info_int(&pool, "freed")?;

    let mut watch = Subscriber::new(ctx, &["rtpool", "events"])?;
    let started = Instant::now();
    module(&mut conn, "LOAD", "rtalloc")?;
    // 128, 256, 384 ... bytes into buffers 0, 1, 2 ... until all 128 are in
    // use; the 129th request is refused with "no more buffers".
    let mut allocated = 0i64;
    let mut exhausted_at = None;
    let deadline = Instant::now() + LONG_WAIT;
    while exhausted_at.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(payload) = watch.next_on("rtpool", left)? else {
            bail!("the pool was not exhausted within {LONG_WAIT:?}: {allocated} buffers allocated")
        };
        // Frees of the unload before the subscription may still arrive.
        if allocated == 0 && is_kind(&payload, "free") {
            continue;
        }
        let size = json_int(&payload, "size")?;
        if is_kind(&payload, "alloc") {
            ensure!(
                size == RTALLOC_STEP * (allocated + 1) && json_int(&payload, "buffer")? == allocated,
                "allocation {} should be {} bytes in buffer {allocated}: {payload}",
                allocated + 1,
                RTALLOC_STEP * (allocated + 1)
            );
            allocated += 1;
        } else if is_kind(&payload, "alloc-failed") {
            ensure!(json_text(&payload, "reason")? == "no more buffers", "the first refusal: {payload}");
            ensure!(size == RTALLOC_STEP * (POOL_BUFFERS + 1), "the first refusal is request {}: {payload}", POOL_BUFFERS + 1);
            exhausted_at = Some(allocated);
        } else {
            bail!("unexpected on rtpool: {payload}");
        }
    }
    ensure!(exhausted_at == Some(POOL_BUFFERS), "the pool was exhausted after {allocated} buffers, not {POOL_BUFFERS}");
    ctx.figure("rt-pool exhausted after load (10 ms period)", format!("{:.1} s", started.elapsed().as_secs_f64()));
    let event = watch.wait("events", "rtalloc-exhausted", WAIT, |_| true)?;
    ensure!(
        json_int(&event, "buffers")? == POOL_BUFFERS && json_int(&event, "requests")? == POOL_BUFFERS + 1,
        "rtalloc-exhausted: {event}"
    );
    let all_bytes = RTALLOC_STEP * POOL_BUFFERS * (POOL_BUFFERS + 1) / 2;
    let pool = info(&mut conn, "rtpool")?;
    ensure!(info_int(&pool, "in_use")? == POOL_BUFFERS && info_int(&pool, "bytes")? == all_bytes, "INFO rtpool when exhausted:\n{pool}");
    ensure!(get_bool(&mut conn, "rtalloc.exhausted")?, "rtalloc.exhausted");
    ensure!(
        get_int(&mut conn, "rtalloc.buffers")? == POOL_BUFFERS && get_int(&mut conn, "rtalloc.bytes")? == all_bytes,
        "rtalloc.buffers/bytes"
    );
    ctx.guest.wait_console(&format!("rtalloc-rt: No more buffers available ({POOL_BUFFERS} held); the thread keeps running"), WAIT)?;

    // The thread keeps running and asking; once its requests pass 128 KiB
    // they are refused as too large, never truncated.
    let too_large = RTALLOC_STEP * (POOL_MAX_SIZE / RTALLOC_STEP + 1);
    let refusal =
        watch.wait("rtpool", "alloc-failed", LONG_WAIT, |payload| json_int(payload, "size").is_ok_and(|size| size > POOL_MAX_SIZE))?;
    ensure!(
        json_int(&refusal, "size")? == too_large && json_text(&refusal, "reason")? == "request larger than 128 KiB",
        "the first request over 128 KiB: {refusal}"
    );
    ctx.guest.wait_console(&format!("rtalloc-rt: request of {too_large} bytes refused: request larger than 128 KiB"), WAIT)?;
    let error = wait_for("rtalloc.last_error names the size", WAIT, || {
        let error = get_text(&mut conn, "rtalloc.last_error")?;
        Ok(error.starts_with("request larger than 128 KiB").then_some(error))
    })?;
    ctx.figure("rtalloc.last_error", error);
    ensure!(live_thread(&mut conn, "rtalloc-rt")?.is_some(), "rtalloc-rt stopped after the refusals");
    let pool = info(&mut conn, "rtpool")?;
    ensure!(info_int(&pool, "in_use")? == POOL_BUFFERS, "the refusals changed the pool:\n{pool}");
    ctx.figure("rtalloc requests until the first one over 128 KiB", format!("{}", get_int(&mut conn, "rtalloc.requests")?));

    // Unload: every buffer freed, each reported, and counted.
    let mark = ctx.guest.console_mark();
    module(&mut conn, "UNLOAD", "rtalloc")?;
    for index in 0..POOL_BUFFERS {
        let free = watch.wait("rtpool", "free", WAIT, |_| true).with_context(|| format!("free of buffer {index}"))?;
        ensure!(
            json_int(&free, "buffer")? == index && json_int(&free, "size")? == RTALLOC_STEP * (index + 1),
            "free {index} should be buffer {index} of {} bytes: {free}",
            RTALLOC_STEP * (index + 1)
        );
    }
    let freed_event = watch.wait("events", "rtalloc-freed", WAIT, |_| true)?;
    ensure!(json_int(&freed_event, "buffers")? == POOL_BUFFERS, "rtalloc-freed: {freed_event}");
    let console = ctx.guest.wait_console_from(mark, "rtalloc: unloaded; freed", WAIT)?;
    ensure!(console.contains(&format!("rtalloc: unloaded; freed {POOL_BUFFERS} buffers")), "{console}");
    let freed_lines = lines_with(&ctx.guest.console_since(mark), "rtpool: freeing buffer").len();
    ensure!(freed_lines as i64 == POOL_BUFFERS, "{freed_lines} `rtpool: freeing buffer` lines, not {POOL_BUFFERS}");
    let pool = info(&mut conn, "rtpool")?;
    ensure!(
        info_int(&pool, "in_use")? == 0 && info_int(&pool, "bytes")? == 0 && info_int(&pool, "freed")? == freed_before + POOL_BUFFERS,
        "INFO rtpool after the unload (freed was {freed_before}):\n{pool}"
    );
    module(&mut conn, "LOAD", "rtalloc")?;
    Ok(())
}

// ------------------------------------------------------------------ 3 buddy

fn buddy(ctx: &mut Ctx<'_>) -> Result<()> {
    let mut conn = connect(ctx)?;
    module(&mut conn, "UNLOAD", "buddy")?;
    module(&mut conn, "LOAD", "buddy")?;
    wait_for("buddy.active", WAIT, || Ok(get_bool(&mut conn, "buddy.active")?.then_some(())))?;
    let rt =
        wait_for("rt-sleeper suspends itself", WAIT, || Ok(live_thread(&mut conn, "rt-sleeper")?.filter(|row| row.state == "suspended")))?;
    ensure!(rt.kind == "rt", "rt-sleeper is an RT thread: {rt:?}");
    let buddy = live_thread(&mut conn, "buddy/rt-sleeper")?.context("no thread buddy/rt-sleeper")?;
    ensure!(buddy.kind == "kernel" && buddy.nice == 19, "the buddy is a nice-19 kernel thread: {buddy:?}");

    // Everything but TERM reaches the RT thread as a wake-up, one at a time.
    let mark = ctx.guest.console_mark();
    let wakes: [(&str, &[&str]); 5] = [
        ("WAKE", &["WAKE", "rt-sleeper"]),
        ("WAKE again", &["WAKE", "rt-sleeper"]),
        ("KILL WAKE", &["KILL", "rt-sleeper", "WAKE"]),
        ("KILL USR1", &["KILL", "rt-sleeper", "USR1"]),
        ("rtctl wake", &[]),
    ];
    for (index, (what, args)) in wakes.iter().enumerate() {
        if args.is_empty() {
            let (code, out, err) = ctx.rtctl(&["wake", "rt-sleeper"])?;
            ensure!(code == 0, "rtctl wake rt-sleeper exited {code}: {out}{err}");
        } else {
            cli_is(ctx, args, "OK")?;
        }
        let expected = index as i64 + 1;
        wait_int(&mut conn, "buddy.wakeups", WAIT, what, |wakeups| wakeups >= expected)?;
        ctx.guest.wait_console_from(mark, &format!("rt-sleeper: RT-Thread woke up ({expected} wake-ups)"), WAIT)?;
    }
    let counts = stable_ints(&mut conn, &["buddy.wakeups", "buddy.signals"])?;
    ensure!(counts == [5, 5], "buddy.wakeups and buddy.signals after five wake-ups: {counts:?}");

    // TERM: the buddy deletes the RT thread, then ends itself.
    let mut exits = Subscriber::new(ctx, &["threads.exit"])?;
    let mark = ctx.guest.console_mark();
    cli_is(ctx, &["KILL", "rt-sleeper"], "OK")?;
    let one = exits.wait("threads.exit", "exit", WAIT, |_| true)?;
    let other = exits.wait("threads.exit", "exit", WAIT, |_| true)?;
    // The two threads run on different CPUs, whose event rings the control
    // thread drains one after the other: order by the event's own time
    // (clean-clone run under load: the buddy's exit, 74 us later, arrived
    // first).
    let time = |event: &str| json_raw(event, "t").and_then(|t| t.parse::<u64>().ok()).unwrap_or(u64::MAX);
    let (first, second) = if time(&one) <= time(&other) { (one, other) } else { (other, one) };
    ensure!(
        json_raw(&first, "thread") == Some("rt-sleeper") && json_raw(&second, "thread") == Some("buddy/rt-sleeper"),
        "the RT thread ends first, then its buddy: {first} then {second}"
    );
    in_order(&ctx.guest.console_since(mark), &["buddy/rt-sleeper: TERM: deleting rt-sleeper", "buddy/rt-sleeper: exit"])?;
    ensure!(!get_bool(&mut conn, "buddy.active")?, "buddy.active after TERM");
    ensure!(get_int(&mut conn, "buddy.signals")? == 6, "buddy.signals after TERM");
    let modules = module_list(&mut conn)?;
    ensure!(modules.get("buddy").is_some_and(|(state, threads, _)| state == "loaded" && *threads == 0), "MODULE LIST buddy: {modules:?}");
    let out = ctx.redis_cli(&["WAKE", "rt-sleeper"])?;
    ensure!(out.starts_with("ERR"), "WAKE of the deleted thread: {out:?}");

    // Unload waits (bounded) for the buddy and says whether it finished.
    let mut events = Subscriber::new(ctx, &["events"])?;
    let mark = ctx.guest.console_mark();
    module(&mut conn, "UNLOAD", "buddy")?;
    let exit = events.wait("events", "buddy-exit", WAIT, |_| true)?;
    ensure!(json_int(&exit, "finished")? == 1 && json_int(&exit, "wakeups")? == 5, "buddy-exit: {exit}");
    ctx.guest.wait_console_from(mark, "buddy: unloaded (5 wake-ups, 6 signals; buddy finished in time)", WAIT)?;
    module(&mut conn, "LOAD", "buddy")?;
    wait_for("buddy.active after the reload", WAIT, || Ok(get_bool(&mut conn, "buddy.active")?.then_some(())))?;
    Ok(())
}

// -------------------------------------------------------- 4 softirq latency

fn softirq_latency(ctx: &mut Ctx<'_>) -> Result<()> {
    let mut conn = connect(ctx)?;
    let mut watch = Subscriber::new(ctx, &["softirq.latency"])?;
    let mut batches = Vec::new();
    for _ in 0..3 {
        let batch = watch.wait("softirq.latency", "softirq-batch", LONG_WAIT, |_| true)?;
        let (samples, min, max) = (json_int(&batch, "samples")?, json_int(&batch, "min_ns")?, json_int(&batch, "max_ns")?);
        ensure!(samples == 500 && 0 < min && min <= max, "a batch of 500 samples with 0 < min <= max: {batch}");
        batches.push((json_int(&batch, "t")?, min, max));
    }
    ensure!(batches.windows(2).all(|pair| pair[0].0 < pair[1].0), "batches in time order: {batches:?}");
    let gaps: Vec<String> = batches.windows(2).map(|pair| format!("{} ms", (pair[1].0 - pair[0].0) / 1_000_000)).collect();
    ctx.figure(
        "softirq batches (min..max us)",
        batches
            .iter()
            .map(|(_, min, max)| format!("{:.1}..{:.1}", *min as f64 / 1000.0, *max as f64 / 1000.0))
            .collect::<Vec<_>>()
            .join(", "),
    );
    ctx.figure("guest time between batches of 500 samples (1 ms period)", gaps.join(", "));
    let (count, figure) = latency_figure(&mut conn, "softirq.latency")?;
    ensure!(count >= 1000, "LATENCY softirq.latency has {count} samples after 3 batches");
    ctx.figure("LATENCY softirq.latency", figure);
    // The RT thread's release latency as cyclictest reports it: period and
    // misses beside quantiles that keep their order.
    let thread = conn.call(&["LATENCY", "thread:softirq-rt"])?;
    ensure!(field_int(&thread, "period_ns")? == 1_000_000, "LATENCY thread:softirq-rt period: {thread:?}");
    ensure!(field_int(&thread, "misses")? <= field_int(&thread, "releases")?, "LATENCY thread:softirq-rt misses > releases: {thread:?}");
    let figures = ["min_ns", "p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns"].map(|key| field_int(&thread, key));
    let figures = figures.into_iter().collect::<Result<Vec<i64>>>()?;
    ensure!(figures.windows(2).all(|pair| pair[0] <= pair[1]), "min <= p50 <= p90 <= p99 <= p99.9 <= max: {figures:?}");
    let (code, out, err) = ctx.rtctl(&["latency", "softirq.latency", "thread:softirq-rt"])?;
    ensure!(
        code == 0 && out.lines().count() == 2 && out.contains("T: 1 (thread:softirq-rt) I:1000 ") && out.contains("Misses:"),
        "rtctl latency softirq.latency thread:softirq-rt: {code} {out} {err}"
    );
    ctx.figure("rtctl latency softirq.latency thread:softirq-rt", out.trim_end().to_string());

    // The same stream through redis-cli and rtctl.
    let out = ctx.redis_cli_until(&["SUBSCRIBE", "softirq.latency"], "max_ns", LONG_WAIT)?;
    ensure!(out.contains("\"kind\":\"softirq-batch\"") && out.contains("\"samples\":500"), "redis-cli SUBSCRIBE softirq.latency: {out:?}");
    let (code, out, err) = ctx.rtctl(&["watch", "softirq.latency", "--count", "2"])?;
    ensure!(code == 0 && out.matches("\"samples\":500").count() == 2, "rtctl watch softirq.latency --count 2: {code} {out} {err}");

    // The named soft IRQ is counted, and goes away with the module.
    let jitter_total = |conn: &mut Conn| -> Result<Option<i64>> {
        let reply = conn.call(&["SOFTIRQS"])?;
        items(&reply)?
            .iter()
            .find(|row| field(row, "name").is_some_and(|name| text(name) == "softirq jitter test"))
            .map(|row| field_int(row, "total"))
            .transpose()
    };
    let total = jitter_total(&mut conn)?.context("SOFTIRQS does not list 'softirq jitter test'")?;
    wait_for("the soft IRQ keeps counting", WAIT, || Ok(jitter_total(&mut conn)?.filter(|now| *now > total)))?;
    module(&mut conn, "UNLOAD", "softirq-latency")?;
    ensure!(jitter_total(&mut conn)?.is_none(), "SOFTIRQS still lists 'softirq jitter test' after the unload");
    expect_error(&conn.call(&["SOFTIRQ", "RAISE", "softirq jitter test"])?, "ERR no such soft IRQ")?;
    let _ = watch.drain(Duration::from_millis(100))?;
    guest_seconds(&mut conn, 2)?;
    let late = watch.drain(Duration::from_millis(100))?;
    ensure!(late.is_empty(), "batches after the unload: {late:?}");
    module(&mut conn, "LOAD", "softirq-latency")?;
    watch.wait("softirq.latency", "softirq-batch", LONG_WAIT, |_| true)?;
    ensure!(jitter_total(&mut conn)?.is_some(), "SOFTIRQS lists the soft IRQ again after the reload");
    Ok(())
}

// ------------------------------------------------------------- 5 serial IRQ

/// The `IRQS` row whose name is `name`: (vector, total).
fn irq_row(conn: &mut Conn, name: &str) -> Result<Option<(i64, i64)>> {
    let reply = conn.call(&["IRQS"])?;
    items(&reply)?
        .iter()
        .find(|row| field(row, "name").is_some_and(|value| text(value) == name))
        .map(|row| Ok((field_int(row, "vector")?, field_int(row, "total")?)))
        .transpose()
}

/// The `IRQS` row of `vector`: (name, total).
fn irq_vector(conn: &mut Conn, vector: i64) -> Result<Option<(String, i64)>> {
    let reply = conn.call(&["IRQS"])?;
    items(&reply)?
        .iter()
        .find(|row| field_int(row, "vector").is_ok_and(|value| value == vector))
        .map(|row| Ok((field_text(row, "name")?, field_int(row, "total")?)))
        .transpose()
}

const APP_IRQ_HANDLER: &str = "serial-irq (app)";

fn serial_irq(ctx: &mut Ctx<'_>) -> Result<()> {
    let mut conn = connect(ctx)?;
    ensure!(get_bool(&mut conn, "serial.attached")?, "serial.attached");
    let (vector, _) = irq_row(&mut conn, APP_IRQ_HANDLER)?.with_context(|| format!("IRQS has no `{APP_IRQ_HANDLER}` row"))?;
    let counts = stable_ints(&mut conn, &["serial.irqs", "serial.bytes"])?;
    let mut events = Subscriber::new(ctx, &["events"])?;
    let keys = b"rtedge-e2e-typed-keys";
    ctx.guest.type_keys(keys)?;
    let typed = keys.len() as i64;
    wait_int(&mut conn, "serial.bytes", WAIT, "the typed bytes counted by the application handler", |bytes| bytes >= counts[1] + typed)?;
    guest_seconds(&mut conn, 2)?;
    let after = stable_ints(&mut conn, &["serial.irqs", "serial.bytes"])?;
    ensure!(after[1] == counts[1] + typed, "serial.bytes grew by {}, {typed} keys were typed", after[1] - counts[1]);
    ensure!(after[0] > counts[0] && after[0] - counts[0] <= typed, "serial.irqs grew by {} for {typed} keys", after[0] - counts[0]);
    let (_, total) = irq_row(&mut conn, APP_IRQ_HANDLER)?.context("the IRQS row went away")?;
    ensure!(total >= after[0], "IRQS counts {total} on the line, the handler {}", after[0]);
    let report = events.wait("events", "serial-irqs", WAIT, |payload| json_int(payload, "bytes").is_ok_and(|bytes| bytes == after[1]))?;
    ensure!(json_int(&report, "irqs")? == after[0], "serial-irqs event: {report}");
    ctx.guest.wait_console(&format!("serial-irq: {} interrupts, {} bytes seen by the application handler", after[0], after[1]), WAIT)?;
    ctx.figure("interrupts for the typed keys", format!("{} interrupts for {typed} bytes", after[0] - counts[0]));

    // Unloading gives the line back to the kernel's handler.
    let mark = ctx.guest.console_mark();
    module(&mut conn, "UNLOAD", "serial-irq")?;
    ctx.guest.wait_console_from(mark, "serial-irq: detached after", WAIT)?;
    ensure!(irq_row(&mut conn, APP_IRQ_HANDLER)?.is_none(), "IRQS still shows `{APP_IRQ_HANDLER}` after the unload");
    let (kernel_name, before) = irq_vector(&mut conn, vector)?.with_context(|| format!("IRQS lost vector {vector}"))?;
    ensure!(!matches!(conn.call(&["GET", "serial.irqs"])?, Value::Integer(_)), "serial.irqs is still a key after the unload");
    ctx.guest.type_keys(b"kernel-keys")?;
    let (_, total) = wait_for("the kernel's handler counts typed keys", WAIT, || {
        Ok(irq_vector(&mut conn, vector)?.filter(|(_, total)| *total > before))
    })?;
    ctx.figure(
        "the serial line's handler after the unload",
        format!("`{kernel_name}` on vector {vector:#x}, {} interrupts for 11 keys", total - before),
    );
    module(&mut conn, "LOAD", "serial-irq")?;
    let (again, _) = irq_row(&mut conn, APP_IRQ_HANDLER)?.context("IRQS has no application handler after the reload")?;
    ensure!(again == vector, "the application handler is back on vector {again}, not {vector}");
    Ok(())
}

// --------------------------------------------------------------------- 6 shm

fn shm(ctx: &mut Ctx<'_>) -> Result<()> {
    let mut conn = connect(ctx)?;
    let mut events = Subscriber::new(ctx, &["events"])?;
    let seen = get_int(&mut conn, "shm.seen")?;
    let mark = ctx.guest.console_mark();
    cli_is(ctx, &["SET", "shm.value", "4242"], "OK")?;
    cli_is(ctx, &["GET", "shm.value"], "4242")?;
    // The RT thread consumes the ready flag on its next period and prints.
    wait_int(&mut conn, "shm.seen", WAIT, "the RT thread sees the update", |now| now == seen + 1)?;
    ensure!(!get_bool(&mut conn, "shm.ready")?, "shm.ready stays set after the RT thread consumed it");
    let update = events.wait("events", "shm-update", WAIT, |_| true)?;
    ensure!(json_int(&update, "value")? == 4242 && json_int(&update, "seen")? == seen + 1, "shm-update: {update}");
    ctx.guest.wait_console_from(mark, &format!("shm-rt: shared mem=4242 (ready; update {})", seen + 1), WAIT)?;
    // Nothing more without another SET.
    guest_seconds(&mut conn, 2)?;
    ensure!(get_int(&mut conn, "shm.seen")? == seen + 1, "shm.seen grew without a SET");
    cli_has(ctx, &["SET", "shm.value", "forty-two"], "ERR")?;
    cli_has(ctx, &["SET", "shm.ready", "true"], "read-only")?;
    cli_is(ctx, &["GET", "shm.value"], "4242")?;

    // The raw region: base and size as INFO shows them, a counter the RT
    // thread keeps in it, a value written through SET, kept across reloads.
    let memory = info(&mut conn, "memory")?;
    let size = info_int(&memory, "reserved_region_size")?;
    let base_text = info_field(&memory, "reserved_region_base").context("INFO memory has no reserved_region_base")?;
    let base =
        i64::from_str_radix(base_text.trim().trim_start_matches("0x"), 16).with_context(|| format!("reserved_region_base:{base_text}"))?;
    ensure!(size == RAW_REGION_SIZE, "reserved_region_size {size}: reserve=2M asks for {RAW_REGION_SIZE}");
    ensure!(
        get_int(&mut conn, "raw.base")? == base && get_int(&mut conn, "raw.size")? == size,
        "raw.base/raw.size differ from INFO memory"
    );
    ensure!(base % 4096 == 0 && base > 0, "the raw region at {base:#x}");
    ctx.figure("raw region", format!("{base:#x}, {} KiB", size / 1024));
    let periods = get_int(&mut conn, "raw.periods")?;
    wait_int(&mut conn, "raw.periods", WAIT, "the RT thread counts in the raw region", |now| now > periods)?;
    cli_is(ctx, &["SET", "raw.value", "7"], "OK")?;
    let mark = ctx.guest.console_mark();
    module(&mut conn, "UNLOAD", "shm")?;
    module(&mut conn, "LOAD", "shm")?;
    ctx.guest.wait_console_from(mark, "mailbox at offset 0 kept from an earlier load", WAIT)?;
    cli_is(ctx, &["GET", "raw.value"], "7")?;
    ensure!(get_int(&mut conn, "raw.periods")? > periods, "raw.periods was reset by the reload");
    Ok(())
}

// --------------------------------------------------------------------- 7 job

/// What a job computes (app/src/programs/job.rs): the sum of 1..=n and an
/// FNV-1a hash over the numbers.
fn job_result(n: u64) -> (i64, i64) {
    let mut sum = 0u64;
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for i in 1..=n {
        sum = sum.wrapping_add(i);
        hash = (hash ^ i).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (sum as i64, hash as i64)
}

fn job(ctx: &mut Ctx<'_>) -> Result<()> {
    let mut conn = connect(ctx)?;
    let mut watch = Subscriber::new(ctx, &["events", "threads.exit"])?;
    let finished = get_int(&mut conn, "job.finished")?;
    const N: u64 = 200_000;
    let (sum, hash) = job_result(N);
    let out = ctx.redis_cli(&["JOB.START", &N.to_string()])?;
    let id: i64 = out.trim().parse().with_context(|| format!("JOB.START {N} replied {out:?}"))?;
    let done = watch.wait("events", "job-done", LONG_WAIT, |payload| json_int(payload, "job").is_ok_and(|job| job == id))?;
    ensure!(
        json_int(&done, "n")? == N as i64 && json_int(&done, "sum")? == sum && json_int(&done, "hash")? == hash,
        "job {id}: expected sum {sum} and hash {hash:#x}: {done}"
    );
    let name = format!("job/{id}");
    ensure!(json_raw(&done, "runner") == Some(name.as_str()), "job-done runner: {done}");
    let exit = watch.wait("threads.exit", "exit", WAIT, |payload| json_raw(payload, "thread") == Some(name.as_str()))?;
    ensure!(json_int(&exit, "code")? == 0, "{name} exit: {exit}");
    ensure!(live_thread(&mut conn, &name)?.is_none(), "{name} still runs after its result");
    ctx.figure("job of 200000 numbers in a kernel thread", format!("{} us", json_int(&done, "elapsed_us")?));
    let status = conn.call(&["JOB.STATUS"])?;
    ensure!(field_int(&status, "finished")? == finished + 1 && field_int(&status, "last_sum")? == sum, "JOB.STATUS: {status:?}");
    ensure!(get_int(&mut conn, "job.last_hash")? == hash, "job.last_hash");

    // The same job on the workqueue `jobs`.
    cli_is(ctx, &["JOB.QUEUE", "1000"], "1")?;
    let (sum, hash) = job_result(1000);
    let done = watch.wait("events", "job-done", WAIT, |payload| json_raw(payload, "runner") == Some("jobs"))?;
    ensure!(json_int(&done, "sum")? == sum && json_int(&done, "hash")? == hash, "queued job: {done}");

    // Bad input: an error and nothing started.
    let started = get_int(&mut conn, "job.started")?;
    for bad in ["0", "-5", "ten", "1000000001", "1.5"] {
        let reply = conn.call(&["JOB.START", bad])?;
        expect_error(&reply, "ERR n must be an integer between 1 and 1000000000").with_context(|| format!("JOB.START {bad}"))?;
    }
    expect_error(&conn.call(&["JOB.START"])?, "ERR wrong number of arguments")?;
    cli_has(ctx, &["JOB.START", "zero"], "ERR n must be an integer")?;
    ensure!(get_int(&mut conn, "job.started")? == started, "a bad JOB.START started a job");
    Ok(())
}

// ------------------------------------------------------------------- 8 kmore

fn kmore(ctx: &mut Ctx<'_>) -> Result<()> {
    let mut conn = connect(ctx)?;
    // At boot, file=/hello.txt was read from the initrd.
    ctx.guest.wait_console(&format!("kmore: | {HELLO_FIRST_LINE}"), WAIT)?;
    let read = ctx.guest.wait_console("kmore: read ", WAIT)?;
    ensure!(read.contains(&format!("read {KMORE_PAGE} of {HELLO_SIZE} bytes")), "kmore reads the first page: {read}");

    let mut events = Subscriber::new(ctx, &["events"])?;
    let reads = get_int(&mut conn, "kmore.reads")?;
    let errors = get_int(&mut conn, "kmore.errors")?;
    let mark = ctx.guest.console_mark();
    let out = ctx.redis_cli(&["KMORE", "/hello.txt"])?;
    out.trim().parse::<i64>().with_context(|| format!("KMORE /hello.txt replied {out:?}"))?;
    let event = events.wait("events", "kmore-read", WAIT, |_| true)?;
    ensure!(json_int(&event, "bytes")? == KMORE_PAGE && json_int(&event, "size")? == HELLO_SIZE as i64, "kmore-read: {event}");
    ctx.guest.wait_console_from(mark, &format!("kmore: | {HELLO_FIRST_LINE}"), WAIT)?;
    wait_int(&mut conn, "kmore.reads", WAIT, "kmore.reads", |now| now == reads + 1)?;
    ensure!(get_int(&mut conn, "kmore.last_bytes")? == KMORE_PAGE, "kmore.last_bytes");

    // Clear errors, in the reply, and nothing read.
    cli_is(ctx, &["KMORE", "/nope.txt"], "ERR no such file: /nope.txt")?;
    cli_is(ctx, &["KMORE", "/etc"], "ERR is a directory: /etc")?;
    expect_error(&conn.call(&["KMORE"])?, "ERR wrong number of arguments")?;
    ensure!(get_int(&mut conn, "kmore.reads")? == reads + 1, "a refused KMORE read something");
    ensure!(get_int(&mut conn, "kmore.errors")? == errors, "the refusals are replies, not reader errors");

    // The archive as FILES lists it.
    let listing = conn.call(&["FILES", "/"])?;
    let entries: Vec<(String, String, i64)> = items(&listing)?
        .iter()
        .map(|entry| Ok((field_text(entry, "name")?, field_text(entry, "kind")?, field_int(entry, "size")?)))
        .collect::<Result<_>>()?;
    let hello = entries.iter().find(|(name, ..)| name == "hello.txt").with_context(|| format!("FILES / has no hello.txt: {entries:?}"))?;
    ensure!(hello.2 == HELLO_SIZE as i64, "FILES / hello.txt: {hello:?}");
    let etc = entries.iter().find(|(name, ..)| name == "etc").with_context(|| format!("FILES / has no etc: {entries:?}"))?;
    ensure!(etc.1 != hello.1, "FILES / shows etc as a directory: {entries:?}");
    cli_has(ctx, &["FILES", "/etc"], "motd")?;
    cli_has(ctx, &["FILES", "/nope"], "ERR")?;
    ctx.figure("FILES /", format!("{entries:?}"));
    Ok(())
}

// ----------------------------------------------------------------- modules

/// What must return to its baseline after load/unload cycles.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Baseline {
    threads: i64,
    exited_unjoined: i64,
    timers: (i64, i64),
    tasklets: i64,
    soft_irqs: Vec<String>,
    stacks: i64,
    irq_names: Vec<String>,
    keys: usize,
    commands: i64,
    latency_sources: Vec<String>,
}

/// The latency sources the modules register.
const MODULE_LATENCY_SOURCES: [&str; 2] = ["tasklet.delay", "softirq.latency"];

/// Heap bytes in use and stack slots ever made (each new slot takes its
/// frames from the heap and keeps them for reuse: growth, not a leak).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Heap {
    used: i64,
    stack_slots: i64,
}

fn snapshot(conn: &mut Conn) -> Result<(Baseline, Heap)> {
    let threads = info(conn, "threads")?;
    let softirqs = info(conn, "softirqs")?;
    let irqs = conn.call(&["IRQS"])?;
    let keys = conn.call(&["KEYS", "*"])?;
    let commands = integer(&conn.call(&["COMMAND", "COUNT"])?)?;
    let latency = conn.call(&["LATENCY"])?;
    let latency_sources = items(&latency).context("LATENCY lists the sources")?.iter().map(text).collect();
    // The heap last, so that the replies above are freed.
    let memory = info(conn, "memory")?;
    let baseline = Baseline {
        threads: info_int(&threads, "threads")?,
        exited_unjoined: info_int(&threads, "exited_unjoined")?,
        timers: (info_int(&threads, "timers")?, info_int(&threads, "hrtimers")?),
        tasklets: info_int(&threads, "tasklets")?,
        soft_irqs: softirqs
            .lines()
            .filter_map(|line| line.split_once(':').map(|(name, _)| name.to_string()))
            .filter(|name| name != "ksoftirqd_handovers")
            .collect(),
        stacks: info_int(&memory, "stacks_live")?,
        irq_names: items(&irqs)?.iter().map(|row| field_text(row, "name")).collect::<Result<_>>()?,
        keys: items(&keys)?.len(),
        commands,
        latency_sources,
    };
    Ok((baseline, Heap { used: info_int(&memory, "heap_used")?, stack_slots: info_int(&memory, "stack_slots")? }))
}

/// A snapshot taken twice in a row with the same result (unloads end
/// threads synchronously, but a reaper may still be finishing).
fn settled_snapshot(conn: &mut Conn) -> Result<(Baseline, Heap)> {
    let mut last = snapshot(conn)?;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(50));
        let now = snapshot(conn)?;
        if now.0 == last.0 {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// Sends every command at once and expects `+OK` for each.
fn pipeline_ok(conn: &mut Conn, commands: &[Vec<&str>]) -> Result<()> {
    let mut frames = Vec::new();
    for command in commands {
        rtedge_proto::request::encode_command(command, &mut frames);
    }
    conn.send_raw(&frames)?;
    for command in commands {
        expect_ok(&conn.read()?).with_context(|| command.join(" "))?;
    }
    Ok(())
}

/// Heap growth the measured cycles may show outside the cycles that made a
/// new stack slot: per-CPU tables of the timer and alarm bases grow the
/// first time a CPU holds that many (a few hundred bytes, in a few cycles,
/// early after boot). A leak shows in most cycles, or in many bytes.
const HEAP_SLACK: i64 = 2048;
const HEAP_GROWTH_CYCLES: usize = 4;
/// Cycles before the heap reference (caches, the job workqueue's first use).
const WARM_UP_CYCLES: i64 = 5;
/// Measured load/unload cycles of all nine modules over the wire (the
/// in-image self-check, profile `selftest-modules`, does 200 without the
/// network).
const MODULE_CYCLES: i64 = 50;

fn module_cycles(ctx: &mut Ctx<'_>) -> Result<()> {
    let cycles = MODULE_CYCLES;
    let mut conn = connect(ctx)?;
    // The boot loaded all nine and said how to connect.
    let console = ctx.guest.console();
    ensure!(
        console.contains("modules: loaded 9 of 9: tasklet, tasklet-disable, rtalloc, buddy, softirq-latency, serial-irq, shm, job, kmore"),
        "the boot's module line"
    );
    ensure!(console.contains("redis-cli -p 6380") && console.contains("rtctl threads"), "the boot prints how to connect");
    let listed = module_list(&mut conn)?;
    ensure!(listed.len() == MODULES.len(), "MODULE LIST: {listed:?}");
    for name in MODULES {
        let (state, ..) = listed.get(name).with_context(|| format!("MODULE LIST has no {name}: {listed:?}"))?;
        ensure!(state == "loaded", "{name} is {state} before the cycles");
    }
    let (code, table, err) = ctx.rtctl(&["modules"])?;
    ensure!(code == 0 && MODULES.iter().all(|name| table.contains(name)), "rtctl modules: {code} {table}{err}");
    for (name, threads) in [("tasklet", 1), ("rtalloc", 1), ("buddy", 2), ("softirq-latency", 1), ("shm", 1), ("job", 1), ("serial-irq", 0)]
    {
        let listed_threads = listed.get(name).map(|(_, threads, _)| *threads);
        ensure!(listed_threads == Some(threads), "MODULE LIST {name}: {listed_threads:?} threads, expected {threads}");
    }

    let unload_all: Vec<Vec<&str>> = MODULES.iter().rev().map(|name| vec!["MODULE", "UNLOAD", *name]).collect();
    let load_all: Vec<Vec<&str>> = MODULES.iter().map(|name| vec!["MODULE", "LOAD", *name]).collect();
    let cycle = |conn: &mut Conn, index: i64| -> Result<()> {
        pipeline_ok(conn, &load_all)?;
        // A little traffic while loaded: an update, a job in a thread, one
        // on the workqueue, a file read (the file exists only where the
        // initrd was given).
        let value = index.to_string();
        pipeline_ok(conn, &[vec!["SET", "shm.value", value.as_str()]])?;
        for command in [["JOB.START", "5000"], ["JOB.QUEUE", "5000"], ["KMORE", "/etc/motd"]] {
            let reply = conn.call(&command)?;
            ensure!(matches!(reply, Value::Integer(_)) || command[0] == "KMORE", "{}: {reply:?}", command.join(" "));
        }
        pipeline_ok(conn, &unload_all).with_context(|| format!("cycle {index}"))
    };
    pipeline_ok(&mut conn, &unload_all)?;
    let (baseline, heap_before) = settled_snapshot(&mut conn)?;
    ensure!(baseline.exited_unjoined == 0, "exited threads left unjoined after the unloads: {baseline:?}");
    ensure!(!baseline.soft_irqs.iter().any(|name| name == "softirq_jitter_test"), "the dynamic soft IRQ outlived its module");
    ensure!(
        !MODULE_LATENCY_SOURCES.iter().any(|source| baseline.latency_sources.iter().any(|listed| listed == source)),
        "latency sources outlived their modules: {:?}",
        baseline.latency_sources
    );
    let loads_before = module_list(&mut conn)?;
    for index in 1..=WARM_UP_CYCLES {
        cycle(&mut conn, index)?;
    }
    let (_, warm) = settled_snapshot(&mut conn)?;
    let started = Instant::now();
    let mut last = warm;
    let mut unexplained = 0;
    let mut growth: Vec<(i64, i64)> = Vec::new();
    let mut new_slots = 0;
    for index in 1..=cycles {
        cycle(&mut conn, WARM_UP_CYCLES + index)?;
        let (counts, heap) = settled_snapshot(&mut conn)?;
        ensure!(counts == baseline, "after cycle {index} the counts differ from the baseline:\n before {baseline:?}\n after  {counts:?}");
        if heap.stack_slots == last.stack_slots {
            if heap.used > last.used {
                growth.push((index, heap.used - last.used));
                unexplained += heap.used - last.used;
            }
        } else {
            new_slots += heap.stack_slots - last.stack_slots;
        }
        last = heap;
    }
    let elapsed = started.elapsed();
    ctx.figure(
        "module load/unload cycles over the wire",
        format!(
            "{} cycles of 9 loads, some traffic and 9 unloads in {:.1} s ({:.0} ms per cycle, each followed by a settled INFO snapshot)",
            cycles,
            elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1000.0 / cycles as f64
        ),
    );
    ctx.figure(
        "heap_used",
        format!(
            "{} before, {} after {WARM_UP_CYCLES} warm-up cycles, {} after {cycles} more ({new_slots} new stack slots; growth (cycle, bytes) in cycles without one: {growth:?})",
            heap_before.used, warm.used, last.used
        ),
    );
    ctx.figure(
        "baseline",
        format!(
            "{} threads, timers {:?}, {} tasklets, {} soft IRQs, {} stacks, {} IRQ vectors, {} keys, {} commands, {} latency sources",
            baseline.threads,
            baseline.timers,
            baseline.tasklets,
            baseline.soft_irqs.len(),
            baseline.stacks,
            baseline.irq_names.len(),
            baseline.keys,
            baseline.commands,
            baseline.latency_sources.len()
        ),
    );
    ensure!(
        unexplained <= HEAP_SLACK && growth.len() <= HEAP_GROWTH_CYCLES,
        "heap_used grew by {unexplained} bytes in {} of {cycles} cycles that made no new stack slot (at most {HEAP_SLACK} bytes in {HEAP_GROWTH_CYCLES} cycles allowed): {growth:?}",
        growth.len()
    );
    let loads_after = module_list(&mut conn)?;
    for name in MODULES {
        let before = loads_before.get(name).map_or(0, |(_, _, loads)| *loads);
        let (state, threads, loads) = loads_after.get(name).cloned().unwrap_or_default();
        ensure!(
            state == "unloaded" && threads == 0 && loads == before + WARM_UP_CYCLES + cycles,
            "MODULE LIST {name}: {state}, {threads} threads, {loads} loads (was {before})"
        );
    }
    // Back to the boot's state for whatever runs next.
    pipeline_ok(&mut conn, &load_all)?;
    ensure!(module_list(&mut conn)?.values().all(|(state, ..)| state == "loaded"), "every module loaded again");
    Ok(())
}

// ---------------------------------------------------------------- shutdown

fn shutdown(ctx: &mut Ctx<'_>) -> Result<()> {
    let mut conn = connect(ctx)?;
    // Everything running: the pool exhausted (its buffers are held), the
    // buddy waiting for signals.
    wait_for("rtalloc.exhausted", LONG_WAIT, || Ok(get_bool(&mut conn, "rtalloc.exhausted")?.then_some(())))?;
    wait_for("buddy.active", WAIT, || Ok(get_bool(&mut conn, "buddy.active")?.then_some(())))?;
    let mark = ctx.guest.console_mark();
    let asked = Instant::now();
    expect_ok(&conn.call(&["SHUTDOWN", "9"])?)?;
    let outcome = ctx.guest.wait_exit(LONG_WAIT)?;
    ctx.figure("SHUTDOWN to hypervisor exit with nine modules loaded", format!("{:.2} s", asked.elapsed().as_secs_f64()));
    ensure!(outcome.guest_code().is_some_and(|code| code.0 == 9), "SHUTDOWN 9 ended the guest with {outcome}");
    let console = ctx.guest.console_since(mark);
    // Modules unload newest first; the buddy is waited for, the buffers
    // freed and counted, then the shutdown line.
    in_order(
        &console,
        &[
            "control plane: SHUTDOWN 9 requested",
            "job: unloaded",
            "shm: unloaded",
            "softirq-latency: unloaded",
            "buddy/rt-sleeper: TERM: deleting rt-sleeper",
            "buddy/rt-sleeper: exit",
            "buddy: unloaded",
            "rtalloc: unloaded; freed 128 buffers",
            "tasklet-disable: unloaded",
            "tasklet: unloaded",
            "rtedge: shutdown code=9",
        ],
    )?;
    ensure!(console.contains("buddy finished in time"), "the buddy was late at shutdown:\n{}", super::guest::tail(&console, 30));
    let freed = lines_with(&console, "rtpool: freeing buffer").len();
    ensure!(freed as i64 == POOL_BUFFERS, "{freed} buffers freed at shutdown, not {POOL_BUFFERS}");
    ensure!(!console.contains("did not finish") && !console.contains("did not end"), "a thread outlived its bound:\n{console}");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test scaffolding: a failure is a test failure")]
mod tests {
    use super::*;

    #[test]
    fn json_fields_take_the_first_occurrence() {
        let payload = r#"{"t":5,"kind":"alloc-failed","reason":"no more buffers","size":16512,"reason":3}"#;
        assert_eq!(json_text(payload, "reason").unwrap(), "no more buffers");
        assert_eq!(json_int(payload, "size").unwrap(), 16512);
        assert!(is_kind(payload, "alloc-failed"));
        assert!(json_int(payload, "missing").is_err());
        assert_eq!(json_raw(r#"{"path":"a \"b\"","n":1}"#, "path"), Some(r#"a \"b\""#));
    }

    #[test]
    fn job_results_match_the_guest_formula() {
        assert_eq!(job_result(3).0, 6);
        assert_eq!(job_result(100_000).0, 5_000_050_000);
    }

    #[test]
    fn the_boot_archive_is_cpio_newc_with_a_trailer() {
        let dir = std::env::temp_dir().join(format!("rtedge-e2e-cpio-{}", std::process::id()));
        let path = boot_archive(&dir).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.windows(10).any(|window| window == b"TRAILER!!!"));
        assert!(bytes.windows(9).any(|window| window == b"hello.txt"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn console_order_is_checked_line_by_line() {
        let console = "a one\nb two\na three\n";
        assert!(in_order(console, &["one", "two", "three"]).is_ok());
        assert!(in_order(console, &["two", "one"]).is_err());
        assert_eq!(number_after("x RT->tasklet 12 us)", "RT->tasklet"), Some(12));
    }
}
