//! `rtctl top`: a live view of threads, CPU use, soft IRQ rates and RT
//! latency. Full screen on a terminal; plain repeated frames otherwise.

use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyModifiers};
use crossterm::{cursor, execute, queue, style, terminal};
use serde_json::{Map, Value as Json};

use crate::client::Client;
use crate::convert;
use crate::error::{CtlError, Result};
use crate::format::{self, Align};
use crate::info::Info;
use crate::tables::{self, Thread};

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
}

impl Sample {
    /// Reads `INFO`, `THREADS` and `SOFTIRQS`.
    pub fn take(client: &mut Client) -> Result<Sample> {
        let info = client.call(&["INFO"])?;
        let info = convert::text(&info)
            .ok_or_else(|| CtlError::Protocol("INFO did not reply with text".into()))?;
        let threads = client.call(&["THREADS"])?;
        let softirqs = client.call(&["SOFTIRQS"])?;
        Ok(Sample {
            at: Instant::now(),
            info: Info::parse(&info),
            threads: tables::threads(&threads),
            softirqs: tables::softirq_totals(&softirqs),
        })
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
        let interval_ns =
            previous.map(
                |previous| match (previous.info.uptime_ns(), current.info.uptime_ns()) {
                    (Some(before), Some(after)) if after > before => after - before,
                    _ => {
                        i64::try_from(current.at.saturating_duration_since(previous.at).as_nanos())
                            .unwrap_or(i64::MAX)
                            .max(1)
                    }
                },
            );
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
                    (Some(delta), Some(interval)) if interval > 0 => {
                        Some((delta as f64 * 100.0 / interval as f64).min(100.0))
                    }
                    _ => None,
                };
                Usage {
                    thread,
                    delta_ns,
                    percent,
                }
            })
            .collect();
        // Busiest first; ties (and the first frame) by run time, then id.
        usage.sort_by(|a, b| {
            b.delta_ns
                .cmp(&a.delta_ns)
                .then(b.thread.runtime_ns.cmp(&a.thread.runtime_ns))
                .then(a.thread.id.cmp(&b.thread.id))
        });
        let softirq_rates = current
            .softirqs
            .iter()
            .map(|(name, total)| {
                let rate = previous.zip(interval_ns).map(|(previous, interval)| {
                    let before = previous
                        .softirqs
                        .iter()
                        .find(|(old, _)| old == name)
                        .map_or(0, |(_, count)| *count);
                    (total.saturating_sub(before).max(0)) as f64 * 1e9 / interval.max(1) as f64
                });
                (name.clone(), rate)
            })
            .collect();
        Frame {
            current,
            interval_ns,
            usage,
            softirq_rates,
        }
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
            self.interval_ns
                .map_or_else(|| "-".into(), format::duration_ns),
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
                    usage
                        .percent
                        .map_or_else(|| "-".into(), |percent| format!("{percent:.1}")),
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
        let rt: Vec<&Thread> = self
            .current
            .threads
            .iter()
            .filter(|thread| thread.is_rt())
            .collect();
        if !rt.is_empty() {
            out.push_str("\nRT latency\n");
            let header = [
                ("NAME", Align::Left),
                ("PERIOD", Align::Right),
                ("RELEASES", Align::Right),
                ("MISSES", Align::Right),
                ("LAT-MIN", Align::Right),
                ("LAT-MEAN", Align::Right),
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
                        .and_then(|percent| {
                            serde_json::Number::from_f64((percent * 10.0).round() / 10.0)
                        })
                        .map_or(Json::Null, Json::Number),
                );
                row.insert("switches".into(), Json::from(thread.switches));
                row.insert("misses".into(), Json::from(thread.misses));
                if thread.is_rt() {
                    row.insert("period_ns".into(), Json::from(thread.period_ns));
                    row.insert("releases".into(), Json::from(thread.releases));
                    row.insert("latency_min_ns".into(), Json::from(thread.latency_min_ns));
                    row.insert("latency_mean_ns".into(), Json::from(thread.latency_mean_ns));
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
                let rate = rate
                    .and_then(|rate| serde_json::Number::from_f64(rate.round()))
                    .map_or(Json::Null, Json::Number);
                (name.clone(), rate)
            })
            .collect();
        object.insert("softirqs_per_second".into(), Json::Object(rates));
        Json::Object(object)
    }
}

/// Runs `top`.
pub fn run(
    client: &mut Client,
    interval: Duration,
    once: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let interval = interval.max(Duration::from_millis(10));
    if once {
        // CPU% needs two samples: the frame covers one interval.
        let first = Sample::take(client)?;
        std::thread::sleep(interval);
        let second = Sample::take(client)?;
        return print_frame(&Frame::new(Some(&first), &second), json, out);
    }
    if !json && io::stdout().is_terminal() {
        return full_screen(client, interval);
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupted));
    let mut previous = Sample::take(client)?;
    loop {
        if sleep_unless(&interrupted, interval) {
            return Ok(());
        }
        let current = Sample::take(client)?;
        print_frame(&Frame::new(Some(&previous), &current), json, out)?;
        if !json {
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
    now.checked_add(duration)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
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

/// Raw mode and the alternate screen, undone on drop (also when an error
/// or a panic ends `top`).
struct Screen;

impl Screen {
    fn enter() -> io::Result<Screen> {
        terminal::enable_raw_mode()?;
        let screen = Screen;
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(screen)
    }

    fn draw(&self, text: &str) -> io::Result<()> {
        let (columns, rows) = terminal::size().unwrap_or((80, 24));
        let mut stdout = io::stdout().lock();
        queue!(stdout, terminal::Clear(terminal::ClearType::All))?;
        let footer = "q: quit";
        let lines = text.lines().take(usize::from(rows.saturating_sub(1)));
        for (row, line) in (0u16..).zip(lines) {
            let shown: String = line.chars().take(usize::from(columns)).collect();
            queue!(stdout, cursor::MoveTo(0, row), style::Print(shown))?;
        }
        queue!(
            stdout,
            cursor::MoveTo(0, rows.saturating_sub(1)),
            style::Print(footer)
        )?;
        stdout.flush()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

fn full_screen(client: &mut Client, interval: Duration) -> Result<()> {
    let terminal_error = |error: io::Error| CtlError::Local(format!("terminal: {error}"));
    let screen = Screen::enter().map_err(terminal_error)?;
    let mut previous: Option<Sample> = None;
    loop {
        let current = Sample::take(client)?;
        let text = Frame::new(previous.as_ref(), &current).render();
        screen.draw(&text).map_err(terminal_error)?;
        let deadline = deadline_after(interval);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if !event::poll(left).map_err(terminal_error)? {
                break;
            }
            match event::read().map_err(terminal_error)? {
                Event::Key(KeyEvent {
                    code: KeyCode::Char('q') | KeyCode::Esc,
                    ..
                }) => return Ok(()),
                Event::Key(KeyEvent {
                    code: KeyCode::Char('c'),
                    modifiers,
                    ..
                }) if modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                Event::Resize(..) => screen.draw(&text).map_err(terminal_error)?,
                _ => {}
            }
        }
        previous = Some(current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(id: i64, name: &str, kind: &str, runtime_ns: i64) -> Thread {
        Thread {
            id: Some(id),
            name: name.into(),
            kind: kind.into(),
            runtime_ns: Some(runtime_ns),
            ..Thread::default()
        }
    }

    fn sample(uptime_ns: i64, threads: Vec<Thread>, timer: i64) -> Sample {
        Sample {
            at: Instant::now(),
            info: Info::parse(&format!("# Server\r\nuptime_ns:{uptime_ns}\r\n")),
            threads,
            softirqs: vec![("TIMER".into(), timer)],
        }
    }

    #[test]
    fn cpu_share_comes_from_run_time_over_the_server_interval() {
        let before = sample(
            1_000_000_000,
            vec![thread(1, "a", "kernel", 100), thread(2, "b", "rt", 0)],
            10,
        );
        let after = sample(
            1_500_000_000,
            vec![
                thread(1, "a", "kernel", 50_000_100),
                thread(2, "b", "rt", 250_000_000),
            ],
            510,
        );
        let frame = Frame::new(Some(&before), &after);
        assert_eq!(frame.interval_ns, Some(500_000_000));
        let shares: Vec<(&str, Option<f64>)> = frame
            .usage
            .iter()
            .map(|usage| (usage.thread.name.as_str(), usage.percent))
            .collect();
        assert_eq!(shares, [("b", Some(50.0)), ("a", Some(10.0))]);
        assert_eq!(frame.softirq_rates, [("TIMER".to_owned(), Some(1000.0))]);
        let first = Frame::new(None, &after);
        assert_eq!(first.usage.first().map(|usage| usage.percent), Some(None));
    }
}
