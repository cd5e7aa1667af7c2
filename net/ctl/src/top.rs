//! `rtctl top`: a live view of threads, CPU use, soft IRQ rates and RT
//! latency. Full screen on a terminal; plain repeated frames otherwise.
//!
//! This file gathers the data ([`Sample`], [`Frame`]) and prints the plain
//! and JSON frames; [`view`] lays a frame out for a screen of any size
//! (pure: it draws into a ratatui buffer and is tested on one), and
//! [`screen`] is the terminal's side: raw mode, keys, resize and the
//! promise that the terminal is restored on every way out.

#[cfg(test)]
mod replay;
mod screen;
pub mod view;

use std::cmp::Ordering as CmpOrdering;
use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rtedge_proto::Value;
use serde_json::{Map, Value as Json};

use crate::client::Client;
use crate::convert;
use crate::error::{CtlError, Result};
use crate::format::{self, Align};
use crate::info::Info;
use crate::latency::Histogram;
use crate::tables::{self, Thread};

/// Where samples come from: the appliance, or in tests the replies
/// recorded from one. An error reply is [`CtlError::Server`], as from
/// [`Client::call`].
pub trait Source {
    /// Sends one command and returns its reply.
    fn call(&mut self, args: &[&str]) -> Result<Value>;
}

impl Source for Client {
    fn call(&mut self, args: &[&str]) -> Result<Value> {
        Client::call(self, args)
    }
}

/// What one refresh reads from the server.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Local time of the sample, used when the server gives no uptime.
    pub at: Instant,
    /// `INFO`.
    pub info: Info,
    /// `THREADS`.
    pub threads: Vec<Thread>,
    /// `SOFTIRQS` totals.
    pub softirqs: Vec<(String, i64)>,
    /// `(thread name, p99 release latency)` from `LATENCY thread:NAME`, for
    /// the RT threads that were released and whose histogram the server
    /// has (an error reply only leaves the thread out).
    pub p99_ns: Vec<(String, i64)>,
    /// `TASKLETS`, `TIMERS` and `WORKQUEUES` as rows of the deferred-work
    /// view; `None` when this sample did not ask (the view was not shown).
    /// A listing the appliance refuses (`unknown command`) is left out.
    pub deferred: Option<Vec<Deferred>>,
}

/// One row of the deferred-work view: a tasklet, timer or work queue.
/// Soft IRQs come from [`Sample::softirqs`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deferred {
    /// `tasklet`, `timer` or `workqueue`.
    pub kind: &'static str,
    /// The name the action commands take.
    pub name: String,
    /// Tasklet state, `armed`/`idle` for a timer, `running`/`idle` for a
    /// work queue.
    pub state: String,
    /// Runs (tasklet), firings (timer), items done (work queue).
    pub runs: Option<i64>,
    /// Schedules (tasklet) or items queued (work queue).
    pub queued: Option<i64>,
    /// The owning module, `-` if none.
    pub owner: String,
}

impl Deferred {
    /// Reads `TASKLETS`, `TIMERS` and `WORKQUEUES`; a listing the server
    /// refuses (an older appliance answers `unknown command`) is left out.
    pub fn take(client: &mut dyn Source) -> Result<Vec<Deferred>> {
        let mut rows = Vec::new();
        for (command, kind) in [("TASKLETS", "tasklet"), ("TIMERS", "timer"), ("WORKQUEUES", "workqueue")] {
            let reply = match client.call(&[command]) {
                Ok(reply) => reply,
                Err(CtlError::Server(_)) => continue,
                Err(other) => return Err(other),
            };
            for record in convert::records(&reply) {
                let text = |name: &str| record.text(name).unwrap_or_else(|| "-".into());
                let active = |name: &str, yes: &str, no: &str| match record.integer(name) {
                    Some(0) => no.to_owned(),
                    Some(_) => yes.to_owned(),
                    None => "-".to_owned(),
                };
                let (state, runs, queued) = match kind {
                    "tasklet" => (text("state"), record.integer("runs"), record.integer("schedules")),
                    "timer" => (active("armed", "armed", "idle"), record.integer("fired"), None),
                    _ => (active("running", "running", "idle"), record.integer("done"), record.integer("queued")),
                };
                rows.push(Deferred { kind, name: text("name"), state, runs, queued, owner: text("owner") });
            }
        }
        Ok(rows)
    }
}

/// Most `LATENCY` requests one sample makes (one per released RT thread),
/// so that a server with very many RT threads does not stall a refresh.
const MAX_LATENCY_QUERIES: usize = 32;

impl Sample {
    /// Reads `INFO`, `THREADS`, `SOFTIRQS`, then `LATENCY thread:NAME` of
    /// each released RT thread (at most [`MAX_LATENCY_QUERIES`]).
    #[cfg(test)]
    pub fn take(client: &mut dyn Source) -> Result<Sample> {
        Sample::take_with(client, false)
    }

    /// [`Sample::take`], and the deferred-work listings ([`Deferred::take`])
    /// when `deferred`.
    pub fn take_with(client: &mut dyn Source, deferred: bool) -> Result<Sample> {
        let info = client.call(&["INFO"])?;
        let info = convert::text(&info).ok_or_else(|| CtlError::Protocol("INFO did not reply with text".into()))?;
        let threads = tables::threads(&client.call(&["THREADS"])?);
        let softirqs = client.call(&["SOFTIRQS"])?;
        let mut p99_ns = Vec::new();
        for thread in threads.iter().filter(|thread| thread.is_rt() && thread.has_latency()).take(MAX_LATENCY_QUERIES) {
            let source = format!("thread:{}", thread.name);
            match client.call(&["LATENCY", source.as_str()]) {
                Ok(reply) => {
                    if let Some(p99) = Histogram::from_value(&reply, &source).ok().and_then(|histogram| histogram.p99_ns) {
                        p99_ns.push((thread.name.clone(), p99));
                    }
                }
                // No histogram for this thread (or no LATENCY at all on an
                // older server): the column shows `-`.
                Err(CtlError::Server(_)) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(Sample {
            at: Instant::now(),
            info: Info::parse(&info),
            threads,
            softirqs: tables::softirq_totals(&softirqs),
            p99_ns,
            deferred: if deferred { Some(Deferred::take(client)?) } else { None },
        })
    }

    /// The p99 release latency of the thread named `name`, if known.
    pub fn p99(&self, thread: &Thread) -> Option<i64> {
        if !thread.has_latency() {
            return None;
        }
        self.p99_ns.iter().find(|(name, _)| *name == thread.name).map(|(_, p99)| *p99)
    }
}

/// What the thread list is ordered by (`top`'s keys c, m, l, n).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// CPU share over the interval, then total run time (the default).
    #[default]
    Cpu,
    /// Deadline misses.
    Misses,
    /// Release latency: p99 where known, else the largest.
    Latency,
    /// Name, A to Z.
    Name,
}

impl SortKey {
    /// The key that selects it in the full-screen view.
    pub fn key(self) -> char {
        match self {
            SortKey::Cpu => 'c',
            SortKey::Misses => 'm',
            SortKey::Latency => 'l',
            SortKey::Name => 'n',
        }
    }

    /// Its name in the footer.
    pub fn label(self) -> &'static str {
        match self {
            SortKey::Cpu => "cpu",
            SortKey::Misses => "misses",
            SortKey::Latency => "latency",
            SortKey::Name => "name",
        }
    }

    /// Every key, in the footer's order.
    pub const ALL: [SortKey; 4] = [SortKey::Cpu, SortKey::Misses, SortKey::Latency, SortKey::Name];
}

/// An order: a key and whether it is reversed. The natural direction is
/// largest first for figures and A to Z for names; threads lacking the
/// figure (no latency measured) come last in both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sort {
    /// The key.
    pub key: SortKey,
    /// Reversed (the key pressed again).
    pub reversed: bool,
}

impl Sort {
    /// Sorted by `key`, natural direction.
    pub fn by(key: SortKey) -> Sort {
        Sort { key, reversed: false }
    }
}

/// One thread's share of the interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Usage<'a> {
    /// The thread.
    pub thread: &'a Thread,
    /// Run time during the interval, if there was a previous sample.
    pub delta_ns: Option<i64>,
    /// `delta_ns` as a percentage of one CPU over the interval.
    pub percent: Option<f64>,
}

/// A frame: the difference between two samples (or one, at first).
#[derive(Clone, Debug)]
pub struct Frame<'a> {
    current: &'a Sample,
    /// The interval in nanoseconds, if there was a previous sample.
    interval_ns: Option<i64>,
    usage: Vec<Usage<'a>>,
    softirq_rates: Vec<(String, Option<f64>)>,
}

impl<'a> Frame<'a> {
    /// Compares `current` with `previous`. The interval is measured with
    /// the server's clock (`INFO` uptime) when it reports one, else with
    /// ours.
    pub fn new(previous: Option<&Sample>, current: &'a Sample) -> Frame<'a> {
        let interval_ns = previous.map(|previous| match (previous.info.uptime_ns(), current.info.uptime_ns()) {
            (Some(before), Some(after)) if after > before => after - before,
            _ => i64::try_from(current.at.saturating_duration_since(previous.at).as_nanos()).unwrap_or(i64::MAX).max(1),
        });
        let mut usage: Vec<Usage<'a>> = current
            .threads
            .iter()
            .map(|thread| {
                let delta_ns = previous.map(|previous| {
                    let before = previous
                        .threads
                        .iter()
                        .find(|old| old.id == thread.id && old.name == thread.name)
                        .and_then(|old| old.runtime_ns)
                        .unwrap_or(0);
                    thread.runtime_ns.unwrap_or(0).saturating_sub(before).max(0)
                });
                let percent = match (delta_ns, interval_ns) {
                    (Some(delta), Some(interval)) if interval > 0 => Some((delta as f64 * 100.0 / interval as f64).min(100.0)),
                    _ => None,
                };
                Usage { thread, delta_ns, percent }
            })
            .collect();
        // Busiest first; ties (and the first frame) by run time, then id.
        usage.sort_by(|a, b| busiest_first(a, b));
        let softirq_rates = current
            .softirqs
            .iter()
            .map(|(name, total)| {
                let rate = previous.zip(interval_ns).map(|(previous, interval)| {
                    let before = previous.softirqs.iter().find(|(old, _)| old == name).map_or(0, |(_, count)| *count);
                    (total.saturating_sub(before).max(0)) as f64 * 1e9 / interval.max(1) as f64
                });
                (name.clone(), rate)
            })
            .collect();
        Frame { current, interval_ns, usage, softirq_rates }
    }

    /// Puts the threads in `sort`'s order (for the plain and JSON frames;
    /// the full-screen view orders them itself with [`Frame::sorted`]).
    pub fn sort(&mut self, sort: Sort) {
        let current = self.current;
        self.usage.sort_by(|a, b| compare(current, sort, a, b));
    }

    /// The threads in `sort`'s order.
    pub fn sorted(&self, sort: Sort) -> Vec<&Usage<'a>> {
        let mut usage: Vec<&Usage<'a>> = self.usage.iter().collect();
        usage.sort_by(|a, b| compare(self.current, sort, a, b));
        usage
    }

    /// The RT threads, in `sort`'s order.
    pub fn rt_sorted(&self, sort: Sort) -> Vec<&Usage<'a>> {
        let mut usage = self.sorted(sort);
        usage.retain(|usage| usage.thread.is_rt());
        usage
    }

    /// The frame as text lines.
    pub fn render(&self) -> String {
        let summary = self.current.info.summary();
        let dash = |value: Option<String>| value.unwrap_or_else(|| "-".into());
        let mut out = format!(
            "rtedge {}  up {}  CPUs {}  heap {}  threads {}  interval {}\n\n",
            dash(summary.version.clone()),
            summary.uptime(),
            dash(summary.cpus.map(|cpus| cpus.to_string())),
            summary.heap(),
            self.current.threads.len(),
            self.interval_ns.map_or_else(|| "-".into(), format::duration_ns),
        );
        let header = [
            ("ID", Align::Right),
            ("NAME", Align::Left),
            ("KIND", Align::Left),
            ("PRIO/NICE", Align::Right),
            ("STATE", Align::Left),
            ("CPU", Align::Right),
            ("CPU%", Align::Right),
            ("RUNTIME", Align::Right),
            ("SWITCHES", Align::Right),
            ("MISSES", Align::Right),
        ];
        let rows: Vec<Vec<String>> = self
            .usage
            .iter()
            .map(|usage| {
                let thread = usage.thread;
                vec![
                    tables::number(thread.id),
                    thread.name.clone(),
                    thread.kind.clone(),
                    thread.priority_or_nice(),
                    thread.state.clone(),
                    tables::number(thread.cpu),
                    usage.percent.map_or_else(|| "-".into(), |percent| format!("{percent:.1}")),
                    tables::duration(thread.runtime_ns),
                    tables::number(thread.switches),
                    tables::number(thread.misses),
                ]
            })
            .collect();
        out.push_str(&format::table(&header, &rows));
        out.push_str("\nsoftirqs/s");
        for (name, rate) in &self.softirq_rates {
            let rate = rate.map_or_else(|| "-".into(), |rate| format!("{rate:.0}"));
            out.push_str(&format!("  {name} {rate}"));
        }
        out.push('\n');
        let rt: Vec<&Thread> = self.current.threads.iter().filter(|thread| thread.is_rt()).collect();
        if !rt.is_empty() {
            out.push_str("\nRT latency\n");
            let header = [
                ("NAME", Align::Left),
                ("PERIOD", Align::Right),
                ("RELEASES", Align::Right),
                ("MISSES", Align::Right),
                ("LAT-MIN", Align::Right),
                ("LAT-MEAN", Align::Right),
                ("LAT-P99", Align::Right),
                ("LAT-MAX", Align::Right),
            ];
            let rows: Vec<Vec<String>> = rt
                .iter()
                .map(|thread| {
                    vec![
                        thread.name.clone(),
                        thread.period(),
                        tables::number(thread.releases),
                        tables::number(thread.misses),
                        thread.latency(thread.latency_min_ns),
                        thread.latency(thread.latency_mean_ns),
                        tables::duration(self.current.p99(thread)),
                        thread.latency(thread.latency_max_ns),
                    ]
                })
                .collect();
            out.push_str(&format::table(&header, &rows));
        }
        out
    }

    /// The frame as one JSON object.
    pub fn to_json(&self) -> Json {
        let summary = self.current.info.summary();
        let mut object = Map::new();
        object.insert("uptime_ns".into(), Json::from(summary.uptime_ns));
        object.insert("cpus".into(), Json::from(summary.cpus));
        object.insert("heap_used".into(), Json::from(summary.heap_used));
        object.insert("heap_total".into(), Json::from(summary.heap_total));
        object.insert("interval_ns".into(), Json::from(self.interval_ns));
        let threads = self
            .usage
            .iter()
            .map(|usage| {
                let thread = usage.thread;
                let mut row = Map::new();
                row.insert("id".into(), Json::from(thread.id));
                row.insert("name".into(), Json::from(thread.name.clone()));
                row.insert("kind".into(), Json::from(thread.kind.clone()));
                row.insert("state".into(), Json::from(thread.state.clone()));
                row.insert("cpu".into(), Json::from(thread.cpu));
                row.insert("runtime_ns".into(), Json::from(thread.runtime_ns));
                row.insert("runtime_delta_ns".into(), Json::from(usage.delta_ns));
                row.insert(
                    "cpu_percent".into(),
                    usage
                        .percent
                        .and_then(|percent| serde_json::Number::from_f64((percent * 10.0).round() / 10.0))
                        .map_or(Json::Null, Json::Number),
                );
                row.insert("switches".into(), Json::from(thread.switches));
                row.insert("misses".into(), Json::from(thread.misses));
                if thread.is_rt() {
                    row.insert("period_ns".into(), Json::from(thread.period_ns));
                    row.insert("releases".into(), Json::from(thread.releases));
                    row.insert("latency_min_ns".into(), Json::from(thread.latency_min_ns));
                    row.insert("latency_mean_ns".into(), Json::from(thread.latency_mean_ns));
                    row.insert("latency_p99_ns".into(), Json::from(self.current.p99(thread)));
                    row.insert("latency_max_ns".into(), Json::from(thread.latency_max_ns));
                }
                Json::Object(row)
            })
            .collect();
        object.insert("threads".into(), Json::Array(threads));
        let rates = self
            .softirq_rates
            .iter()
            .map(|(name, rate)| {
                let rate = rate.and_then(|rate| serde_json::Number::from_f64(rate.round())).map_or(Json::Null, Json::Number);
                (name.clone(), rate)
            })
            .collect();
        object.insert("softirqs_per_second".into(), Json::Object(rates));
        Json::Object(object)
    }
}

/// How `top` was asked to run.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Time between samples.
    pub interval: Duration,
    /// One frame (two samples one interval apart), then exit.
    pub once: bool,
    /// JSON objects instead of text.
    pub json: bool,
    /// The threads' order.
    pub sort: SortKey,
    /// Draw the full-screen layout at this size as text (no terminal
    /// needed) instead of the plain tables.
    pub size: Option<Size>,
    /// What the lower section of the screen layout shows first.
    pub section: Section,
}

/// What the screen layout's lower section lists (key `v` cycles it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// The thread list (the default).
    #[default]
    Threads,
    /// Tasklets, timers, work queues and soft IRQs with their counters.
    Deferred,
}

/// A screen size, `COLUMNSxROWS` on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

impl Size {
    /// The largest side accepted: a frame is a buffer of width × height
    /// cells, kept small enough to allocate freely.
    pub const MAX_SIDE: u16 = 1000;
}

impl std::str::FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Size, String> {
        let usage = || format!("`{text}` is not COLUMNSxROWS, e.g. 80x24");
        let (width, height) = text.split_once(['x', 'X']).ok_or_else(usage)?;
        let side = |value: &str| value.trim().parse::<u16>().ok().filter(|side| (1..=Size::MAX_SIDE).contains(side));
        match (side(width), side(height)) {
            (Some(width), Some(height)) => Ok(Size { width, height }),
            _ => Err(format!("{}; each side from 1 to {}", usage(), Size::MAX_SIDE)),
        }
    }
}

/// Runs `top`.
pub fn run(client: &mut Client, options: Options, out: &mut dyn Write) -> Result<()> {
    let interval = options.interval.max(Duration::from_millis(10));
    let sort = Sort::by(options.sort);
    if options.json && options.size.is_some() {
        return Err(CtlError::Usage("--size draws the screen as text; it does not go with --json".into()));
    }
    if options.section == Section::Deferred && options.size.is_none() && (options.once || options.json || !io::stdout().is_terminal()) {
        // The plain and JSON frames have no deferred section.
        return Err(CtlError::Usage("--view deferred is a screen layout: on a terminal, or with --size (e.g. 80x24)".into()));
    }
    let deferred = options.section == Section::Deferred;
    let print = |frame: &mut Frame<'_>, out: &mut dyn Write| -> Result<()> {
        frame.sort(sort);
        match options.size {
            Some(size) => {
                let mut view = view::View::new(sort);
                view.set_section(options.section);
                let text = view::render_text(&mut view, frame, size);
                out.write_all(text.as_bytes())?;
                out.flush()?;
                Ok(())
            }
            None => print_frame(frame, options.json, out),
        }
    };
    if options.once {
        // CPU% needs two samples: the frame covers one interval.
        let first = Sample::take_with(client, deferred)?;
        std::thread::sleep(interval);
        let second = Sample::take_with(client, deferred)?;
        return print(&mut Frame::new(Some(&first), &second), out);
    }
    if !options.json && options.size.is_none() && io::stdout().is_terminal() {
        return screen::run(client, interval, sort, options.section);
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupted));
    let mut previous = Sample::take_with(client, deferred)?;
    loop {
        if sleep_unless(&interrupted, interval) {
            return Ok(());
        }
        let current = Sample::take_with(client, deferred)?;
        print(&mut Frame::new(Some(&previous), &current), out)?;
        if !options.json {
            out.write_all(b"\n")?;
        }
        previous = current;
    }
}

fn print_frame(frame: &Frame<'_>, json: bool, out: &mut dyn Write) -> Result<()> {
    if json {
        writeln!(out, "{}", frame.to_json())?;
    } else {
        out.write_all(frame.render().as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// Now plus `duration`, or a year from now if that cannot be represented
/// (`--interval-ms` takes any u64).
fn deadline_after(duration: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(duration).or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600))).unwrap_or(now)
}

/// Sleeps for `duration` in short steps; true if Ctrl-C came meanwhile.
fn sleep_unless(interrupted: &AtomicBool, duration: Duration) -> bool {
    let deadline = deadline_after(duration);
    loop {
        if interrupted.load(Ordering::Relaxed) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Busiest first over the interval; ties (and the first frame) by total
/// run time, then id.
fn busiest_first(a: &Usage<'_>, b: &Usage<'_>) -> CmpOrdering {
    b.delta_ns.cmp(&a.delta_ns).then(b.thread.runtime_ns.cmp(&a.thread.runtime_ns)).then(a.thread.id.cmp(&b.thread.id))
}

/// What [`SortKey::Latency`] orders by: p99 where known, else the largest
/// latency; nothing for a thread never released.
fn latency_key(sample: &Sample, thread: &Thread) -> Option<i64> {
    if !thread.has_latency() {
        return None;
    }
    sample.p99(thread).or(thread.latency_max_ns)
}

/// `sort`'s order. Ties go busiest first, so the order is total and a
/// refresh does not shuffle equal rows.
fn compare(sample: &Sample, sort: Sort, a: &Usage<'_>, b: &Usage<'_>) -> CmpOrdering {
    let direction = |ordering: CmpOrdering| {
        if sort.reversed { ordering.reverse() } else { ordering }
    };
    // Largest first; a missing figure last in either direction.
    let figure = |x: Option<i64>, y: Option<i64>| match (x, y) {
        (Some(x), Some(y)) => direction(y.cmp(&x)),
        (Some(_), None) => CmpOrdering::Less,
        (None, Some(_)) => CmpOrdering::Greater,
        (None, None) => CmpOrdering::Equal,
    };
    let primary = match sort.key {
        SortKey::Cpu => direction(busiest_first(a, b)),
        SortKey::Misses => figure(a.thread.misses, b.thread.misses),
        SortKey::Latency => figure(latency_key(sample, a.thread), latency_key(sample, b.thread)),
        SortKey::Name => direction(a.thread.name.cmp(&b.thread.name)),
    };
    primary.then_with(|| busiest_first(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(id: i64, name: &str, kind: &str, runtime_ns: i64) -> Thread {
        Thread { id: Some(id), name: name.into(), kind: kind.into(), runtime_ns: Some(runtime_ns), ..Thread::default() }
    }

    fn sample(uptime_ns: i64, threads: Vec<Thread>, timer: i64) -> Sample {
        Sample {
            at: Instant::now(),
            info: Info::parse(&format!("# Server\r\nuptime_ns:{uptime_ns}\r\n")),
            threads,
            softirqs: vec![("TIMER".into(), timer)],
            p99_ns: Vec::new(),
            deferred: None,
        }
    }

    fn bulk(text: &str) -> Value {
        Value::Bulk(text.as_bytes().to_vec())
    }

    fn rt_thread(name: &str, releases: i64) -> Value {
        Value::Map(vec![
            (bulk("id"), Value::Integer(1)),
            (bulk("name"), bulk(name)),
            (bulk("kind"), bulk("rt")),
            (bulk("releases"), Value::Integer(releases)),
            (bulk("latency_max_ns"), Value::Integer(5000)),
        ])
    }

    #[test]
    fn p99_comes_from_latency_and_an_error_reply_only_leaves_it_out() {
        let threads = Value::Array(vec![rt_thread("measured", 10), rt_thread("refused", 10), rt_thread("never-released", 0)]);
        let p99 = Value::Map(vec![(bulk("source"), bulk("thread:measured")), (bulk("p99_ns"), Value::Integer(4096))]);
        let mut replay = replay::Replay::from(vec![
            ("INFO", bulk("# Server\r\nuptime_ns:5\r\n")),
            ("THREADS", threads),
            ("SOFTIRQS", Value::Array(Vec::new())),
            ("LATENCY thread:measured", p99),
            ("LATENCY thread:refused", Value::Error(b"ERR unknown command 'LATENCY'".to_vec())),
        ]);
        let sample = Sample::take(&mut replay).expect("an error reply is no failure");
        assert_eq!(sample.p99_ns, [("measured".to_owned(), 4096)]);
        let never = &sample.threads[2];
        assert_eq!(sample.p99(&sample.threads[0]), Some(4096));
        assert_eq!(sample.p99(&sample.threads[1]), None);
        assert_eq!(sample.p99(never), None);
        // Anything but an error reply still ends the sample.
        let mut broken = replay::Replay::from(vec![("INFO", Value::Integer(1))]);
        assert!(matches!(Sample::take(&mut broken), Err(CtlError::Protocol(_))));
    }

    #[test]
    fn cpu_share_comes_from_run_time_over_the_server_interval() {
        let before = sample(1_000_000_000, vec![thread(1, "a", "kernel", 100), thread(2, "b", "rt", 0)], 10);
        let after = sample(1_500_000_000, vec![thread(1, "a", "kernel", 50_000_100), thread(2, "b", "rt", 250_000_000)], 510);
        let frame = Frame::new(Some(&before), &after);
        assert_eq!(frame.interval_ns, Some(500_000_000));
        let shares: Vec<(&str, Option<f64>)> = frame.usage.iter().map(|usage| (usage.thread.name.as_str(), usage.percent)).collect();
        assert_eq!(shares, [("b", Some(50.0)), ("a", Some(10.0))]);
        assert_eq!(frame.softirq_rates, [("TIMER".to_owned(), Some(1000.0))]);
        let first = Frame::new(None, &after);
        assert_eq!(first.usage.first().map(|usage| usage.percent), Some(None));
    }
}
