//! Isolation scenarios (issue 12, items 4 and 8): what clients of the
//! control plane do must not cost a real-time thread its deadlines, and a
//! client that pauses must get its replies as soon as it reads again.
//!
//! - `rt_deadlines_with_20_reading_and_20_stalled_subscribers`: the 1 ms RT
//!   thread `softirq-rt` (program 4) is measured four times over the same
//!   number of releases: idle, while 20 subscribers read its release
//!   stream (`latency.softirq-rt`, ~20 000 messages/s in all), while 20
//!   subscribers to the same stream never read, and idle again. Figures:
//!   misses per releases and the release-latency histogram of each phase,
//!   messages received, drops per channel.
//! - `replies_resume_at_once_after_a_20_s_pause`: a client with pipelined
//!   requests stops reading for 20 s; its next reply must come without a
//!   stall once it reads again.
//! - `pipelined_pings_through_a_4_kib_receive_window_never_stall`: 30 000
//!   pipelined PINGs read through a 4 KiB socket receive buffer, twice.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rtedge_proto::request::encode_command;

use super::guest::Target;
use rtedge_proto::Value;

use super::resp::{Conn, field, field_int, info_field, items, text};
use super::{Ctx, Scenario, Where};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "isolation::rt_deadlines_with_20_reading_and_20_stalled_subscribers",
        run: rt_deadlines_with_subscribers,
        on: Where::Reference,
    },
    Scenario { name: "isolation::replies_resume_at_once_after_a_20_s_pause", run: pause_then_read, on: Where::Reference },
    Scenario {
        name: "isolation::pipelined_pings_through_a_4_kib_receive_window_never_stall",
        run: small_window_pipeline,
        on: Where::Reference,
    },
];

const RT_THREAD: &str = "softirq-rt";
const STREAM: &str = "latency.softirq-rt";
const SUBSCRIBERS: usize = 20;
/// Releases of the 1 ms thread per measured phase (guest time).
const PHASE_RELEASES: i64 = 8_000;
/// A gap this long with nothing received, while the server has replies
/// for us, is a stall (not a slow guest: replies flow at thousands per
/// second under TCG).
const STALL: Duration = Duration::from_secs(4);

fn connect(ctx: &Ctx<'_>) -> Result<Conn> {
    Conn::authed(&ctx.target(), &ctx.token)
}

/// `softirq-rt`'s `THREADS` row.
fn rt_row(conn: &mut Conn) -> Result<(Value, i64)> {
    let reply = conn.call(&["THREADS"])?;
    let rows = items(&reply)?;
    // Guest CPU time spent idle, all CPUs (for the busy share of a phase).
    let idle_ns = rows
        .iter()
        .filter(|row| field(row, "kind").is_some_and(|kind| text(kind) == "idle"))
        .filter_map(|row| field_int(row, "runtime_ns").ok())
        .sum();
    let row = rows
        .iter()
        .find(|row| field(row, "name").is_some_and(|name| text(name) == RT_THREAD))
        .with_context(|| format!("THREADS has no `{RT_THREAD}` (program softirq-latency not loaded?)"))?;
    Ok((row.clone(), idle_ns))
}

/// `softirq-rt`'s (releases, misses) from `THREADS`.
fn rt_counts(conn: &mut Conn) -> Result<(i64, i64)> {
    let (row, _) = rt_row(conn)?;
    Ok((field_int(&row, "releases")?, field_int(&row, "misses")?))
}

/// Host figures at one instant: the hypervisor process's CPU time and the
/// whole machine's busy and total time (clock ticks, from /proc).
#[derive(Clone, Copy, Debug, Default)]
struct HostSample {
    hypervisor_ticks: u64,
    busy_ticks: u64,
    total_ticks: u64,
}

fn host_sample(pid: u32) -> HostSample {
    let hypervisor_ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the parenthesised name: state is field 3; utime and stime are 14 and 15.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    let (busy_ticks, total_ticks) = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let line = stat.lines().next()?;
            let numbers: Vec<u64> = line.split_whitespace().skip(1).filter_map(|n| n.parse().ok()).collect();
            let total: u64 = numbers.iter().take(8).sum();
            let idle = numbers.get(3)? + numbers.get(4)?;
            Some((total - idle, total))
        })
        .unwrap_or((0, 0));
    HostSample { hypervisor_ticks, busy_ticks, total_ticks }
}

/// One measured phase: the RT thread's figures over `PHASE_RELEASES`
/// releases, where its latency went, and what the guest and the host were
/// busy with meanwhile.
#[derive(Debug, Default)]
struct Phase {
    releases: i64,
    misses: i64,
    p50_ns: i64,
    p99_ns: i64,
    max_ns: i64,
    /// Releases whose timer interrupt came > 250 us late / whose switch
    /// from that interrupt to the thread took > 250 us, and the longest.
    timer_late: i64,
    timer_late_max_ns: i64,
    dispatch_late: i64,
    dispatch_max_ns: i64,
    /// Longest interrupts-off section of an IrqSpinLock, and where.
    irqs_off_max_ns: i64,
    irqs_off_site: String,
    lock_spin_max_ns: i64,
    lock_spin_site: String,
    /// Alarms armed or cancelled from another CPU than their own.
    remote_alarm_changes: i64,
    /// `rt_idle=poll`: poll stalls over 250 us and the longest (-1: not
    /// reported).
    poll_stalls: i64,
    poll_stall_max_ns: i64,
    /// Interrupts the RT thread's CPU took in the phase, by name.
    rt_cpu_interrupts: Vec<(String, i64)>,
    /// NET_RX: polls, fan-out and poll time (sum and longest).
    net_rx_polls: i64,
    fan_out_ns: i64,
    fan_out_max_ns: i64,
    poll_ns: i64,
    poll_max_ns: i64,
    /// The NIC in the same window (`INFO net` `net_rx_*`): transmit-queue
    /// notifications (each an exit the hypervisor handles), frames sent and
    /// received, device interrupts. -1: not reported.
    tx_kicks: i64,
    tx_packets: i64,
    rx_packets: i64,
    net_interrupts: i64,
    /// Guest CPUs busy (not idle), percent of all of them.
    guest_busy_percent: f64,
    /// The hypervisor process's host CPU (100 = one host core) and the
    /// whole host's busy share, percent.
    hypervisor_cpu_percent: f64,
    host_busy_percent: f64,
}

impl Phase {
    fn miss_percent(&self) -> f64 {
        if self.releases <= 0 { 0.0 } else { self.misses as f64 * 100.0 / self.releases as f64 }
    }

    fn figure(&self) -> String {
        format!(
            "{} misses / {} releases ({:.2} %), release latency p50 {:.1} us, p99 {:.1} us, max {:.1} us",
            self.misses,
            self.releases,
            self.miss_percent(),
            self.p50_ns as f64 / 1000.0,
            self.p99_ns as f64 / 1000.0,
            self.max_ns as f64 / 1000.0
        )
    }

    /// Where the latency went, and the load on guest and host.
    fn breakdown(&self) -> String {
        let interrupts: Vec<String> = self.rt_cpu_interrupts.iter().map(|(name, count)| format!("{name} {count}")).collect();
        format!(
            "RT CPU interrupts: {}; {}",
            if interrupts.is_empty() { String::from("none") } else { interrupts.join(", ") },
            self.breakdown_rest()
        )
    }

    fn breakdown_rest(&self) -> String {
        format!(
            "timer IRQ late >250us {} (max {:.0} us), IRQ->running >250us {} (max {:.0} us); longest IRQs-off lock section {:.0} us at {}, longest lock spin {:.0} us at {}; {} alarms changed from another CPU; idle poll stalls >250us {} (max {:.0} us); NET_RX {} polls, fan-out {:.1} ms (max {:.0} us), poll {:.1} ms (max {:.0} us); guest busy {:.0} %, hypervisor {:.0} % of a host core, host busy {:.0} %",
            self.timer_late,
            self.timer_late_max_ns as f64 / 1000.0,
            self.dispatch_late,
            self.dispatch_max_ns as f64 / 1000.0,
            self.irqs_off_max_ns as f64 / 1000.0,
            self.irqs_off_site,
            self.lock_spin_max_ns as f64 / 1000.0,
            self.lock_spin_site,
            self.remote_alarm_changes,
            self.poll_stalls,
            self.poll_stall_max_ns as f64 / 1000.0,
            self.net_rx_polls,
            self.fan_out_ns as f64 / 1e6,
            self.fan_out_max_ns as f64 / 1000.0,
            self.poll_ns as f64 / 1e6,
            self.poll_max_ns as f64 / 1000.0,
            self.guest_busy_percent,
            self.hypervisor_cpu_percent,
            self.host_busy_percent
        )
    }
}

fn uptime_ns(conn: &mut Conn) -> Result<i64> {
    let server = text(&conn.call(&["INFO", "server"])?);
    info_field(&server, "uptime_ns").context("INFO server has no uptime_ns")?.trim().parse().context("uptime_ns")
}

/// Resets the thread's latency histogram (and the kernel's interrupts-off
/// and NET_RX windows with it), waits for `PHASE_RELEASES` releases, and
/// reads misses, latency and where it went over exactly that stretch.
fn measure(conn: &mut Conn, pid: u32) -> Result<Phase> {
    let (releases_before, misses_before) = rt_counts(conn)?;
    let reset = conn.call(&["LATENCY", &format!("thread:{RT_THREAD}"), "RESET"])?;
    ensure!(field_int(&reset, "count").is_ok(), "LATENCY thread:{RT_THREAD} RESET: {reset:?}");
    let (_, idle_before) = rt_row(conn)?;
    let remote_before = info_number(conn, "cpu", "remote_alarm_changes").unwrap_or(0);
    let rt_cpu = field_int(&rt_row(conn)?.0, "cpu").unwrap_or(1);
    let irqs_before = cpu_interrupts(conn, rt_cpu)?;
    let uptime_before = uptime_ns(conn)?;
    let host_before = host_sample(pid);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let (row, idle_after) = rt_row(conn)?;
        let releases = field_int(&row, "releases")?;
        if releases - releases_before >= PHASE_RELEASES {
            let host_after = host_sample(pid);
            let wall = started.elapsed().as_secs_f64();
            let uptime_after = uptime_ns(conn)?;
            let irqs_after = cpu_interrupts(conn, rt_cpu)?;
            let rt_cpu_interrupts = irqs_after
                .iter()
                .map(|(name, count)| (name.clone(), count - irqs_before.iter().find(|(before, _)| before == name).map_or(0, |(_, n)| *n)))
                .filter(|(_, count)| *count > 0)
                .collect();
            let latency = conn.call(&["LATENCY", &format!("thread:{RT_THREAD}")])?;
            let cpu = text(&conn.call(&["INFO", "cpu"])?);
            let net = text(&conn.call(&["INFO", "net"])?);
            let cpus: f64 = info_field(&cpu, "cpus").and_then(|n| n.trim().parse().ok()).unwrap_or(1.0);
            let info_int = |info: &str, key: &str| info_field(info, key).and_then(|value| value.trim().parse::<i64>().ok()).unwrap_or(0);
            let guest_span = (uptime_after - uptime_before).max(1) as f64 * cpus;
            let ticks_per_second = 100.0;
            let total_ticks = host_after.total_ticks.saturating_sub(host_before.total_ticks).max(1) as f64;
            return Ok(Phase {
                releases: releases - releases_before,
                misses: field_int(&row, "misses")? - misses_before,
                p50_ns: field_int(&latency, "p50_ns")?,
                p99_ns: field_int(&latency, "p99_ns")?,
                max_ns: field_int(&latency, "max_ns")?,
                timer_late: field_int(&row, "timer_late").unwrap_or(-1),
                timer_late_max_ns: field_int(&row, "timer_late_max_ns").unwrap_or(-1),
                dispatch_late: field_int(&row, "dispatch_late").unwrap_or(-1),
                dispatch_max_ns: field_int(&row, "dispatch_max_ns").unwrap_or(-1),
                irqs_off_max_ns: info_int(&cpu, "irqs_off_max_ns"),
                irqs_off_site: info_field(&cpu, "irqs_off_max_site").unwrap_or_default().trim().to_string(),
                lock_spin_max_ns: info_int(&cpu, "lock_spin_max_ns"),
                lock_spin_site: info_field(&cpu, "lock_spin_max_site").unwrap_or_default().trim().to_string(),
                remote_alarm_changes: info_int(&cpu, "remote_alarm_changes") - remote_before,
                rt_cpu_interrupts,
                poll_stalls: info_field(&cpu, "poll_stalls_over_250us").and_then(|value| value.trim().parse().ok()).unwrap_or(-1),
                poll_stall_max_ns: info_field(&cpu, "poll_stall_max_ns").and_then(|value| value.trim().parse().ok()).unwrap_or(-1),
                net_rx_polls: info_int(&net, "net_rx_polls"),
                fan_out_ns: info_int(&net, "net_rx_fan_out_ns"),
                fan_out_max_ns: info_int(&net, "net_rx_fan_out_max_ns"),
                poll_ns: info_int(&net, "net_rx_poll_ns"),
                poll_max_ns: info_int(&net, "net_rx_poll_max_ns"),
                tx_kicks: info_field(&net, "net_rx_tx_kicks").and_then(|value| value.trim().parse().ok()).unwrap_or(-1),
                tx_packets: info_field(&net, "net_rx_tx_packets").and_then(|value| value.trim().parse().ok()).unwrap_or(-1),
                rx_packets: info_field(&net, "net_rx_rx_packets").and_then(|value| value.trim().parse().ok()).unwrap_or(-1),
                net_interrupts: info_field(&net, "net_rx_interrupts").and_then(|value| value.trim().parse().ok()).unwrap_or(-1),
                guest_busy_percent: 100.0 * (1.0 - (idle_after - idle_before) as f64 / guest_span).clamp(0.0, 1.0),
                hypervisor_cpu_percent: 100.0 * host_after.hypervisor_ticks.saturating_sub(host_before.hypervisor_ticks) as f64
                    / ticks_per_second
                    / wall,
                host_busy_percent: 100.0 * host_after.busy_ticks.saturating_sub(host_before.busy_ticks) as f64 / total_ticks,
            });
        }
        if Instant::now() >= deadline {
            bail!("{RT_THREAD} released {} times in 120 s", releases - releases_before);
        }
    }
}

/// CPU `cpu`'s interrupt counts by handler name (`IRQS`).
fn cpu_interrupts(conn: &mut Conn, cpu: i64) -> Result<Vec<(String, i64)>> {
    let reply = conn.call(&["IRQS"])?;
    let key = format!("cpu{cpu}");
    Ok(items(&reply)?.iter().filter_map(|line| Some((text(field(line, "name")?), field_int(line, &key).ok()?))).collect())
}

/// A subscriber to `STREAM`, confirmed.
fn subscriber(ctx: &Ctx<'_>) -> Result<Conn> {
    let mut conn = connect(ctx)?;
    conn.send(&["SUBSCRIBE", STREAM])?;
    let confirmation = conn.read()?;
    let parts = items(&confirmation)?;
    ensure!(parts.len() == 3 && text(&parts[0]) == "subscribe", "SUBSCRIBE {STREAM}: {confirmation:?}");
    Ok(conn)
}

fn info_number(conn: &mut Conn, section: &str, key: &str) -> Option<i64> {
    let reply = conn.call(&["INFO", section]).ok()?;
    info_field(&text(&reply), key)?.trim().parse().ok()
}

/// A subscriber to a channel nobody publishes on (the cost of 20 idle
/// connections alone, for the benchmark).
fn silent_subscriber(ctx: &Ctx<'_>) -> Result<Conn> {
    let mut conn = connect(ctx)?;
    conn.send(&["SUBSCRIBE", SILENT_CHANNEL])?;
    let confirmation = conn.read()?;
    ensure!(items(&confirmation)?.len() == 3, "SUBSCRIBE {SILENT_CHANNEL}: {confirmation:?}");
    Ok(conn)
}

/// A channel that never carries a message.
const SILENT_CHANNEL: &str = "bench.silent";

/// Whether this run is the benchmark (`make rt-isolation`): one more
/// phase (20 subscribers connected to a silent channel) and a table of
/// ratios to idle.
fn benchmark_mode() -> bool {
    std::env::var_os("RTEDGE_RT_BENCH").is_some_and(|value| value == "1")
}

/// Whether the benchmark pins the RT vCPU's host thread
/// (`RTEDGE_RT_PIN=1`, the third run of `make rt-isolation`).
fn pin_mode() -> bool {
    benchmark_mode() && std::env::var_os("RTEDGE_RT_PIN").is_some_and(|value| value == "1")
}

/// Pins QEMU's thread of the guest's isolated CPU (`CPU 1/TCG`, named by
/// `-name ...,debug-threads=on`) alone on the host's last CPU, and QEMU's
/// other threads and this process's current thread (the test's clients are
/// spawned from it and inherit it) on the other host CPUs: the host-side
/// counterpart of the guest's `isolcpus=1`, as one pins an RT guest's vCPU
/// in production. Meant with `rt_idle=poll` (the third run of `make
/// rt-isolation`): the vCPU then never waits for QEMU's main loop to
/// deliver its timer. Returns what was pinned.
fn pin_rt_vcpu(pid: u32) -> Result<String> {
    let host_cpus = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    ensure!(host_cpus >= 2, "pinning needs at least 2 host CPUs, this host has {host_cpus}");
    let rt_cpu = host_cpus - 1;
    let set_affinity = |tid: libc::pid_t, cpus: &[usize]| -> Result<()> {
        // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes
        // within it for indices below CPU_SETSIZE (host_cpus is far below).
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in cpus {
            // SAFETY: see above.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        let done = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        ensure!(done == 0, "sched_setaffinity({tid}): {}", std::io::Error::last_os_error());
        Ok(())
    };
    let others: Vec<usize> = (0..rt_cpu).collect();
    let mut vcpu = None;
    let (mut main_threads, mut other_vcpus) = (0, 0);
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).context("QEMU's threads")? {
        let task = task?;
        let Some(tid) = task.file_name().to_str().and_then(|name| name.parse::<libc::pid_t>().ok()) else { continue };
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        match name.trim() {
            "CPU 1/TCG" => {
                set_affinity(tid, &[rt_cpu])?;
                vcpu = Some(tid);
            }
            "CPU 0/TCG" => {
                set_affinity(tid, &others)?;
                other_vcpus += 1;
            }
            _ => {
                set_affinity(tid, &others)?;
                main_threads += 1;
            }
        }
    }
    let vcpu = vcpu.context("no QEMU thread named `CPU 1/TCG` (QEMU without -name debug-threads=on, or not TCG)")?;
    set_affinity(0, &others)?;
    Ok(format!(
        "QEMU thread `CPU 1/TCG` ({vcpu}) alone on host CPU {rt_cpu}; QEMU's {main_threads} main-loop/IO threads, \
         {other_vcpus} other vCPU thread(s) and the test's clients on host CPUs 0-{}",
        rt_cpu - 1
    ))
}

fn record_phase(ctx: &mut Ctx<'_>, what: &str, phase: &Phase) {
    ctx.figure(&format!("softirq-rt {what}"), phase.figure());
    ctx.figure(&format!("softirq-rt {what}: where it went"), phase.breakdown());
}

/// 20 subscribers that read everything, each on a host thread, for one
/// measured phase; the readers' figures are recorded.
fn reading_phase(ctx: &mut Ctx<'_>, conn: &mut Conn, pid: u32) -> Result<Phase> {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut conn = subscriber(ctx)?;
        let stop = Arc::clone(&stop);
        let received = Arc::clone(&received);
        readers.push(std::thread::spawn(move || -> Result<u64> {
            let mut mine = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if conn.read_within(Duration::from_millis(200))?.is_some() {
                    mine += 1;
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(mine)
        }));
    }
    let started = Instant::now();
    let reading = measure(conn, pid);
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut per_reader = Vec::new();
    for reader in readers {
        per_reader.push(reader.join().map_err(|_| anyhow::anyhow!("a reader panicked"))??);
    }
    let reading = reading?;
    let total = received.load(Ordering::Relaxed);
    record_phase(ctx, "with 20 reading subscribers", &reading);
    ctx.figure(
        "messages received by the 20 readers",
        format!("{total} in {seconds:.1} s ({:.0}/s), fewest per reader {}", total as f64 / seconds, per_reader.iter().min().unwrap_or(&0)),
    );
    ensure!(per_reader.iter().all(|&count| count > 0), "a reading subscriber got nothing: {per_reader:?}");
    Ok(reading)
}

/// 20 subscribers to the stream that never read, for one measured phase.
fn stalled_phase(ctx: &mut Ctx<'_>, conn: &mut Conn, pid: u32) -> Result<Phase> {
    let mut stalled = Vec::new();
    for _ in 0..SUBSCRIBERS {
        stalled.push(subscriber(ctx)?);
    }
    let not_reading = measure(conn, pid)?;
    record_phase(ctx, "with 20 subscribers that do not read", &not_reading);
    // Emissions and drops are counted per channel, at the per-CPU rings
    // and at the channel's fan-out queue.
    let net = text(&conn.call(&["INFO", "net"])?);
    for key in ["events_channel_latency", &format!("backlog_channel_{STREAM}")] {
        let value = info_field(&net, key).with_context(|| format!("INFO net has no `{key}` (drops per channel):\n{net}"))?;
        ensure!(value.contains("dropped="), "INFO net {key}:{value}");
        ctx.figure(key, value.trim().to_string());
    }
    if let Some(value) = info_field(&net, "pubsub_messages_dropped") {
        ctx.figure("pubsub_messages_dropped", value.trim().to_string());
    }
    if let Some(dropped) = info_number(conn, "net", "events_dropped") {
        ctx.figure("events dropped (all channels)", dropped.to_string());
    }
    drop(stalled);
    Ok(not_reading)
}

/// Rounds of (idle, 20 reading, 20 not reading) in the benchmark
/// (`RTEDGE_RT_ROUNDS`, default 3): idle's spread across rounds is the
/// noise the subscribers' figures are compared with.
fn rounds() -> usize {
    std::env::var("RTEDGE_RT_ROUNDS").ok().and_then(|text| text.parse().ok()).filter(|&rounds| rounds > 0).unwrap_or(3)
}

fn rt_deadlines_with_subscribers(ctx: &mut Ctx<'_>) -> Result<()> {
    let mut conn = connect(ctx)?;
    rt_counts(&mut conn)?;
    let pid = ctx.guest.pid();
    let mut phases: Vec<(&str, Phase)> = Vec::new();
    if pin_mode() {
        let pinned = pin_rt_vcpu(pid)?;
        ctx.figure("pinned", pinned);
    }
    // The test: idle, reading, not reading, idle again. The benchmark:
    // 20 silent subscribers once, then rounds of idle, reading, not
    // reading, interleaved so that a slow stretch of the host falls on
    // every kind of phase alike.
    let rounds = if benchmark_mode() { rounds() } else { 1 };
    for round in 0..rounds {
        let idle = measure(&mut conn, pid)?;
        record_phase(ctx, "idle", &idle);
        phases.push(("idle", idle));
        if benchmark_mode() && round == 0 {
            let mut silent = Vec::new();
            for _ in 0..SUBSCRIBERS {
                silent.push(silent_subscriber(ctx)?);
            }
            let phase = measure(&mut conn, pid)?;
            record_phase(ctx, "with 20 subscribers to a silent channel", &phase);
            phases.push(("20 silent", phase));
            drop(silent);
        }
        let reading = reading_phase(ctx, &mut conn, pid)?;
        phases.push(("20 reading", reading));
        let not_reading = stalled_phase(ctx, &mut conn, pid)?;
        phases.push(("20 not reading", not_reading));
        // The control plane still answers.
        let pong = conn.call(&["PING"])?;
        ensure!(text(&pong) == "PONG", "PING after the phases: {pong:?}");
    }
    let idle_again = measure(&mut conn, pid)?;
    record_phase(ctx, "idle again", &idle_again);
    phases.push(("idle", idle_again));
    // The isolation claim is a figure, not an assertion: miss rates of a
    // 1 ms thread under TCG depend on the host's load (tests never judge
    // wall time). Printed as ratios to the worse idle phase of this run.
    let idle_phases: Vec<&Phase> = phases.iter().filter(|(name, _)| *name == "idle").map(|(_, phase)| phase).collect();
    // At least one miss per phase, so that a phase of 0 is not infinitely better.
    let idle_rate = idle_phases.iter().map(|phase| phase.misses.max(1) as f64 * 100.0 / phase.releases.max(1) as f64).fold(0.0, f64::max);
    let idle_p99 = idle_phases.iter().map(|phase| phase.p99_ns).max().unwrap_or(1).max(1) as f64;
    let idle_max = idle_phases.iter().map(|phase| phase.max_ns).max().unwrap_or(1).max(1) as f64;
    for (name, phase) in &phases {
        if *name == "idle" {
            continue;
        }
        ctx.figure(
            &format!("softirq-rt with {name} subscribers / idle"),
            format!(
                "misses {:.2} ({:.2} % vs {:.2} %), p99 {:.2}, max {:.2}",
                phase.miss_percent() / idle_rate,
                phase.miss_percent(),
                idle_rate,
                phase.p99_ns as f64 / idle_p99,
                phase.max_ns as f64 / idle_max
            ),
        );
    }
    let cpu = text(&conn.call(&["INFO", "cpu"])?);
    if let Some(scan) = info_field(&cpu, "stack_scan_max_ns") {
        ctx.figure("longest stack scan of one thread by THREADS (ns)", scan.trim().to_string());
    }
    if benchmark_mode() {
        let polling = info_field(&cpu, "idle_polling").map(|cpus| cpus.trim().to_string()).unwrap_or_else(|| String::from("?"));
        let setup = format!(
            "guest idle {}; network {}; {}",
            if polling == "none" { String::from("halts (rt_idle=halt)") } else { format!("polls on cpu {polling} (rt_idle=poll)") },
            match ctx.target() {
                Target::Loopback { .. } => "QEMU user networking",
                Target::Netns { .. } => "tap device in a network namespace",
            },
            if pin_mode() { "RT vCPU pinned alone on the last host CPU" } else { "nothing pinned" }
        );
        print_table(&setup, &phases, idle_rate, idle_p99);
        print_summary(&phases);
    }
    Ok(())
}

/// Per kind of phase across the rounds: misses in all, their rate as a
/// multiple of idle's (one miss added to each side, so that 0 against 0
/// reads 1.00), the fewest and most in one phase, and the p99 of the
/// phases (median, lowest, highest) with its median as a multiple of
/// idle's. Idle's own spread across its phases is the noise.
fn print_summary(phases: &[(&str, Phase)]) {
    println!("rt-isolation: per kind of phase, across its {} rounds (idle: every idle phase)", rounds());
    println!(
        "{:<16} {:>7} {:>9} {:>8} {:>8} {:>13} {:>12} {:>15} {:>7}",
        "kind", "phases", "misses", "miss%", "x idle", "misses/phase", "p99 median", "p99 range us", "x idle"
    );
    let totals = |kind: &str| -> (i64, i64) {
        phases
            .iter()
            .filter(|(name, _)| *name == kind)
            .fold((0, 0), |(misses, releases), (_, phase)| (misses + phase.misses, releases + phase.releases))
    };
    let (idle_misses, idle_releases) = totals("idle");
    let idle_rate = (idle_misses + 1) as f64 / idle_releases.max(1) as f64;
    let idle_p99 = median(phases, "idle", |phase| phase.p99_ns as f64 / 1000.0).max(0.001);
    for kind in ["idle", "20 silent", "20 reading", "20 not reading"] {
        let (misses, releases) = totals(kind);
        if releases == 0 {
            continue;
        }
        let count = phases.iter().filter(|(name, _)| *name == kind).count();
        let (fewest, most) = range(phases, kind, |phase| phase.misses as f64);
        let (p99_low, p99_high) = range(phases, kind, |phase| phase.p99_ns as f64 / 1000.0);
        let p99 = median(phases, kind, |phase| phase.p99_ns as f64 / 1000.0);
        println!(
            "{:<16} {:>7} {:>9} {:>8.3} {:>8.2} {:>13} {:>12.1} {:>15} {:>7.2}",
            kind,
            count,
            misses,
            misses as f64 * 100.0 / releases as f64,
            (misses + 1) as f64 / releases as f64 / idle_rate,
            format!("{fewest:.0}-{most:.0}"),
            p99,
            format!("{p99_low:.1}-{p99_high:.1}"),
            p99 / idle_p99,
        );
    }
}

/// The median of `figure` over the phases of `kind` (0 without any).
fn median(phases: &[(&str, Phase)], kind: &str, figure: impl Fn(&Phase) -> f64) -> f64 {
    let mut values: Vec<f64> = phases.iter().filter(|(name, _)| *name == kind).map(|(_, phase)| figure(phase)).collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The lowest and highest of `figure` over the phases of `kind`.
fn range(phases: &[(&str, Phase)], kind: &str, figure: impl Fn(&Phase) -> f64) -> (f64, f64) {
    phases
        .iter()
        .filter(|(name, _)| *name == kind)
        .map(|(_, phase)| figure(phase))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), value| (low.min(value), high.max(value)))
}

/// The benchmark's table: one row per phase, ratios to the worse idle phase.
fn print_table(setup: &str, phases: &[(&str, Phase)], idle_rate: f64, idle_p99: f64) {
    println!();
    println!("rt-isolation: softirq-rt (1 ms period), {PHASE_RELEASES} releases per phase; ratios to the worse idle phase");
    println!("rt-isolation: {setup}");
    println!(
        "{:<16} {:>7} {:>7} {:>7} {:>8} {:>8} {:>9} {:>7} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "phase",
        "misses",
        "miss%",
        "x idle",
        "p50 us",
        "p99 us",
        "p99 x",
        "max us",
        "irq-late",
        "disp>250",
        "irqoff",
        "remote",
        "stall>250",
        "stall us",
        "fanout ms",
        "poll ms",
        "guest%",
        "qemu%",
        "host%",
        "polls",
        "tx pkt",
        "tx kick",
        "rx pkt",
        "net irq"
    );
    for (name, phase) in phases {
        println!(
            "{:<16} {:>7} {:>7.2} {:>7.2} {:>8.1} {:>8.1} {:>9.2} {:>7.0} {:>9} {:>8} {:>8.0} {:>8} {:>9} {:>8.0} {:>9.1} {:>9.1} {:>7.0} {:>7.0} {:>7.0} {:>7} {:>7} {:>7} {:>7} {:>7}",
            name,
            phase.misses,
            phase.miss_percent(),
            phase.miss_percent() / idle_rate,
            phase.p50_ns as f64 / 1000.0,
            phase.p99_ns as f64 / 1000.0,
            phase.p99_ns as f64 / idle_p99,
            phase.max_ns as f64 / 1000.0,
            phase.timer_late,
            phase.dispatch_late,
            phase.irqs_off_max_ns as f64 / 1000.0,
            phase.remote_alarm_changes,
            phase.poll_stalls,
            phase.poll_stall_max_ns as f64 / 1000.0,
            phase.fan_out_ns as f64 / 1e6,
            phase.poll_ns as f64 / 1e6,
            phase.guest_busy_percent,
            phase.hypervisor_cpu_percent,
            phase.host_busy_percent,
            phase.net_rx_polls,
            phase.tx_packets,
            phase.tx_kicks,
            phase.rx_packets,
            phase.net_interrupts
        );
    }
    println!(
        "irq-late: releases whose timer interrupt came > 250 us after the due instant; disp>250: > 250 us from that interrupt to the thread running;"
    );
    println!(
        "stall>250 / stall us: the RT CPU's idle poll went > 250 us without looking at the clock / the longest such gap (rt_idle=poll; 0 when halting);"
    );
    println!(
        "irqoff: longest IrqSpinLock interrupts-off section (us); remote: alarms armed/cancelled from another CPU (each takes that CPU's alarm lock and interrupts it); guest%: guest CPUs not idle; qemu%: the QEMU process's host CPU (100 = one core); host%: the whole host busy"
    );
    println!(
        "polls: NET_RX polls; tx pkt / tx kick: frames sent / transmit notifications (exits); rx pkt: frames received; net irq: NIC interrupts (all in the phase)"
    );
}

/// Sends `frames` on a clone of the stream from a thread of its own (the
/// server stops reading while its replies are not read, so a blocking
/// write from the reading thread would deadlock).
fn send_in_background(stream: &TcpStream, frames: Vec<u8>) -> Result<std::thread::JoinHandle<std::io::Result<()>>> {
    let mut writer = stream.try_clone()?;
    writer.set_write_timeout(Some(Duration::from_secs(300)))?;
    Ok(std::thread::spawn(move || writer.write_all(&frames)))
}

/// Reads until `expected` bytes arrived; returns the longest gap between
/// two reads, or fails when nothing arrives for `give_up`.
fn read_exactly(stream: &mut TcpStream, expected: usize, give_up: Duration) -> Result<(Duration, usize)> {
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut got = 0usize;
    let mut last = Instant::now();
    let mut longest = Duration::ZERO;
    let mut chunk = vec![0u8; 65536];
    while got < expected {
        match stream.read(&mut chunk) {
            Ok(0) => bail!("the server closed the connection after {got} of {expected} bytes"),
            Ok(read) => {
                got += read;
                longest = longest.max(last.elapsed());
                last = Instant::now();
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if last.elapsed() >= give_up {
                    return Ok((last.elapsed(), got));
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok((longest, got))
}

fn pause_then_read(ctx: &mut Ctx<'_>) -> Result<()> {
    const REQUESTS: usize = 2500;
    let payload = "x".repeat(4000);
    let mut frame = Vec::new();
    encode_command(&["PING", &payload], &mut frame);
    let reply_len = format!("${}\r\n{payload}\r\n", payload.len()).len();
    // A 4 KiB receive buffer, so that the backlog reaches the guest
    // instead of waiting in the host's socket buffers.
    let mut stream = small_window_stream(&ctx.target(), &ctx.token)?;
    let writer = send_in_background(&stream, frame.repeat(REQUESTS))?;
    let total = REQUESTS * reply_len;
    // Read a first reply, then pause while the pipeline backs up.
    let (_, first) = read_exactly(&mut stream, reply_len, Duration::from_secs(30))?;
    ensure!(first >= reply_len, "no first reply within 30 s");
    std::thread::sleep(Duration::from_secs(20));
    let resumed = Instant::now();
    // What the host buffered during the pause comes at once; a stall
    // shows as a long gap before the server's next bytes.
    let (longest, rest) = read_exactly(&mut stream, total - first, Duration::from_secs(30))?;
    let drained = resumed.elapsed();
    ctx.figure(
        "after a 20 s pause",
        format!("longest gap {:.2} s, the other {} replies in {:.2} s", longest.as_secs_f64(), REQUESTS - 1, drained.as_secs_f64()),
    );
    ensure!(first + rest >= total, "got {} of {total} bytes after the pause; nothing for {longest:?}", first + rest);
    ensure!(longest < STALL, "stalled after the pause: {longest:?} without a byte");
    writer.join().map_err(|_| anyhow::anyhow!("the writer panicked"))??;
    Ok(())
}

fn authenticate(stream: &mut TcpStream, token: &str) -> Result<()> {
    let mut frame = Vec::new();
    encode_command(&["AUTH", token], &mut frame);
    stream.write_all(&frame)?;
    let mut reply = [0u8; 5];
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    stream.read_exact(&mut reply)?;
    ensure!(&reply == b"+OK\r\n", "AUTH: {:?}", String::from_utf8_lossy(&reply));
    Ok(())
}

/// A connected, authenticated stream whose receive buffer is 4 KiB from
/// the start (SO_RCVBUF before connect, so the window never grows).
pub(super) fn small_window_stream(target: &Target, token: &str) -> Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let Target::Loopback { port } = target else { bail!("the small-window client needs a loopback target") };
    // SAFETY: a plain socket(2) call; the descriptor is owned by the
    // TcpStream built from it below (or closed on the error paths).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh socket that nothing else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let size: libc::c_int = 4096;
    // SAFETY: `size` lives across the call and its length is passed.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    ensure!(set == 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
    let address = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: `address` is a valid sockaddr_in whose size is passed.
    let connected = unsafe {
        libc::connect(fd, (&address as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
    };
    ensure!(connected == 0, "connect: {}", std::io::Error::last_os_error());
    let mut stream = stream;
    stream.set_nodelay(true)?;
    authenticate(&mut stream, token)?;
    Ok(stream)
}

fn small_window_pipeline(ctx: &mut Ctx<'_>) -> Result<()> {
    const PINGS: usize = 30_000;
    const REPLY: &[u8] = b"+PONG\r\n";
    let mut frame = Vec::new();
    encode_command(&["PING"], &mut frame);
    for run in 1..=2 {
        let mut stream = small_window_stream(&ctx.target(), &ctx.token)?;
        let started = Instant::now();
        let writer = send_in_background(&stream, frame.repeat(PINGS))?;
        let expected = PINGS * REPLY.len();
        let (longest, got) = read_exactly(&mut stream, expected, Duration::from_secs(20))?;
        let seconds = started.elapsed().as_secs_f64();
        ctx.figure(
            &format!("30 000 pipelined PINGs, 4 KiB receive buffer, run {run}"),
            format!(
                "{} replies in {seconds:.1} s ({:.0}/s), longest gap {:.2} s",
                got / REPLY.len(),
                (got / REPLY.len()) as f64 / seconds,
                longest.as_secs_f64()
            ),
        );
        ensure!(got >= expected, "run {run}: stalled after {} of {PINGS} replies (nothing for {longest:?})", got / REPLY.len());
        ensure!(longest < STALL, "run {run}: a {longest:?} stall before all {PINGS} replies came");
        writer.join().map_err(|_| anyhow::anyhow!("the writer panicked"))??;
    }
    Ok(())
}
