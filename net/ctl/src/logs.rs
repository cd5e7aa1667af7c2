//! `rtctl logs`: the appliance's recent log lines (`LOGS`) and, with
//! `-f`, the lines that follow (the `log` channel), as text or JSON.
//!
//! Following never loses or repeats a line across the switch from the
//! history to the channel: the channel is subscribed first, then the
//! history read on a second connection; every line carries its sequence
//! number, and a channel message at or below the highest number already
//! known is skipped (see [`Boundary`]).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rtedge_proto::Value;
use serde_json::Value as Json;

use crate::cli::LogLevel;
use crate::client::{Client, Options};
use crate::convert::{self, Record};
use crate::error::{CtlError, Result};
use crate::watch::Message;

/// The pub/sub channel of log lines.
pub const CHANNEL: &str = "log";
/// How often a quiet follow checks for Ctrl-C.
const TICK: Duration = Duration::from_millis(100);

/// One log line as `LOGS` and the `log` channel give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub seq: u64,
    pub mono_ns: u64,
    /// Wall-clock ms since the Unix epoch (unknown when the appliance has
    /// no wall clock).
    pub unix_ms: Option<i64>,
    pub level: String,
    pub cpu: u64,
    pub thread: String,
    pub text: String,
}

impl LogLine {
    /// One map of a `LOGS` reply.
    pub fn from_record(record: &Record<'_>) -> Option<LogLine> {
        let unsigned = |name: &str| record.integer(name).and_then(|value| u64::try_from(value).ok());
        Some(LogLine {
            seq: unsigned("seq")?,
            mono_ns: unsigned("mono_ns")?,
            unix_ms: record.integer("unix_ms"),
            level: record.text("level")?,
            cpu: unsigned("cpu")?,
            thread: record.text("thread").unwrap_or_default(),
            text: record.text("text").unwrap_or_default(),
        })
    }

    /// One `log` channel message (a JSON object with the same fields).
    pub fn from_json(payload: &str) -> Option<LogLine> {
        let json: Json = serde_json::from_str(payload).ok()?;
        Some(LogLine {
            seq: json.get("seq")?.as_u64()?,
            mono_ns: json.get("mono_ns")?.as_u64()?,
            unix_ms: json.get("unix_ms").and_then(Json::as_i64),
            level: json.get("level")?.as_str()?.to_owned(),
            cpu: json.get("cpu")?.as_u64()?,
            thread: json.get("thread").and_then(Json::as_str).unwrap_or_default().to_owned(),
            text: json.get("text").and_then(Json::as_str).unwrap_or_default().to_owned(),
        })
    }

    /// The human line: `2026-12-05T23:59:01.123Z INFO  cpu1 klogd           text`
    /// (UTC; `+12.345678s` since boot when the time of day is unknown).
    pub fn human(&self) -> String {
        let when = self
            .unix_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|time| time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_else(|| format!("+{}.{:06}s", self.mono_ns / 1_000_000_000, self.mono_ns % 1_000_000_000 / 1000));
        let thread = if self.thread.is_empty() { "-" } else { &self.thread };
        format!("{when} {:<5} cpu{} {thread:<15} {}", self.level.to_ascii_uppercase(), self.cpu, self.text)
    }

    /// The JSON object (one per line with `--json`).
    pub fn json(&self) -> Json {
        serde_json::json!({
            "seq": self.seq,
            "mono_ns": self.mono_ns,
            "unix_ms": self.unix_ms,
            "level": self.level,
            "cpu": self.cpu,
            "thread": self.thread,
            "text": self.text,
        })
    }
}

/// How severe a level is (error 1 ..= trace 5); a plain console line
/// (`print`) ranks as info, as the appliance's filter ranks it.
pub fn severity(level: &str) -> u8 {
    match level {
        "error" => 1,
        "warn" => 2,
        "debug" => 4,
        "trace" => 5,
        _ => 3,
    }
}

impl LogLevel {
    /// The `LEVEL` argument.
    pub fn wire(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }

    /// Whether a line at `level` passes this filter.
    pub fn passes(self, level: &str) -> bool {
        severity(level) <= severity(self.wire())
    }
}

/// The highest sequence number already shown (or known to precede what
/// the channel will bring): a channel line at or below it is a repeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Boundary(pub u64);

impl Boundary {
    /// Whether `line` is new; if so it becomes the boundary.
    pub fn admit(&mut self, line: &LogLine) -> bool {
        if line.seq <= self.0 {
            return false;
        }
        self.0 = line.seq;
        true
    }
}

/// The lines of a `LOGS` reply, oldest first.
pub fn lines_of(reply: &Value) -> Result<Vec<LogLine>> {
    convert::records(reply)
        .iter()
        .map(|record| LogLine::from_record(record).ok_or_else(|| CtlError::Local("LOGS: a line without its fields".into())))
        .collect()
}

fn logs_command(count: u32, level: Option<LogLevel>) -> Vec<String> {
    let mut args = vec!["LOGS".to_owned(), count.to_string()];
    if let Some(level) = level {
        args.extend(["LEVEL".to_owned(), level.wire().to_owned()]);
    }
    args
}

fn print(line: &LogLine, json: bool, out: &mut dyn Write) -> Result<()> {
    let text = if json { line.json().to_string() } else { line.human() };
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// `rtctl logs [-n N] [--level L] [--json] [-f]`.
pub fn run(
    client: &mut Client,
    options: &Options,
    count: u32,
    level: Option<LogLevel>,
    follow: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    if !follow {
        for line in lines_of(&client.call(&logs_command(count, level))?)? {
            print(&line, json, out)?;
        }
        return Ok(());
    }
    // Subscribe first: every line kept from now on reaches the channel.
    client.send(&["SUBSCRIBE", CHANNEL])?;
    let mut early = Vec::new();
    loop {
        match client.read_value()? {
            Value::Error(text) => return Err(CtlError::Server(String::from_utf8_lossy(&text).into_owned())),
            Value::Push(parts) | Value::Array(parts)
                if parts.first().and_then(convert::text).is_some_and(|kind| kind.eq_ignore_ascii_case("subscribe")) =>
            {
                break;
            }
            other => early.push(other),
        }
    }
    // Then the history, on a second connection (a RESP2 subscriber may not
    // send LOGS). The newest number first: every line above it came after
    // the subscription.
    let mut history = Client::connect(options)?;
    let newest = lines_of(&history.call(&["LOGS", "1"])?)?.last().map_or(0, |line| line.seq);
    let recent = lines_of(&history.call(&logs_command(count, level))?)?;
    drop(history);
    let mut boundary = Boundary(newest);
    for line in &recent {
        print(line, json, out)?;
        boundary.0 = boundary.0.max(line.seq);
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    // Without the handler Ctrl-C still ends rtctl, only less politely.
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupted));
    let mut pending = early.into_iter();
    while !interrupted.load(Ordering::Relaxed) {
        let value = match pending.next() {
            Some(value) => value,
            None => match client.poll_value(TICK)? {
                Some(value) => value,
                None => continue,
            },
        };
        let Some(message) = Message::from_value(&value) else { continue };
        if message.channel != CHANNEL {
            continue;
        }
        let Some(line) = LogLine::from_json(&message.payload) else { continue };
        if boundary.admit(&line) && level.is_none_or(|level| level.passes(&line.level)) {
            print(&line, json, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::Bulk(text.as_bytes().to_vec())
    }

    fn sample(seq: u64, level: &str) -> LogLine {
        LogLine {
            seq,
            mono_ns: 12_345_678_901,
            unix_ms: Some(1_796_515_141_123),
            level: level.into(),
            cpu: 1,
            thread: "klogd".into(),
            text: "tick \"7\"".into(),
        }
    }

    #[test]
    fn a_line_reads_the_same_from_logs_and_from_the_channel() {
        let map = Value::Map(vec![
            (bulk("seq"), Value::Integer(7)),
            (bulk("mono_ns"), Value::Integer(12_345_678_901)),
            (bulk("unix_ms"), Value::Integer(1_796_515_141_123)),
            (bulk("level"), bulk("warn")),
            (bulk("cpu"), Value::Integer(1)),
            (bulk("thread"), bulk("klogd")),
            (bulk("text"), bulk("tick \"7\"")),
        ]);
        let from_reply = lines_of(&Value::Array(vec![map])).expect("parses");
        let json = sample(7, "warn").json().to_string();
        assert_eq!(
            json,
            r#"{"seq":7,"mono_ns":12345678901,"unix_ms":1796515141123,"level":"warn","cpu":1,"thread":"klogd","text":"tick \"7\""}"#
        );
        assert_eq!(from_reply, vec![sample(7, "warn")]);
        assert_eq!(LogLine::from_json(&json), Some(sample(7, "warn")));
    }

    #[test]
    fn human_lines_show_utc_time_level_cpu_thread_and_text() {
        assert_eq!(sample(1, "info").human(), "2026-12-05T23:59:01.123Z INFO  cpu1 klogd           tick \"7\"");
        let early = LogLine { unix_ms: None, thread: String::new(), ..sample(1, "error") };
        assert_eq!(early.human(), "+12.345678s ERROR cpu1 -               tick \"7\"");
    }

    #[test]
    fn the_level_filter_keeps_the_more_severe() {
        let kept = |filter: LogLevel| {
            ["error", "warn", "info", "print", "debug", "trace"].into_iter().filter(|level| filter.passes(level)).collect::<Vec<_>>()
        };
        assert_eq!(kept(LogLevel::Warn), ["error", "warn"]);
        assert_eq!(kept(LogLevel::Info), ["error", "warn", "info", "print"]);
        assert_eq!(kept(LogLevel::Trace).len(), 6);
    }

    #[test]
    fn the_boundary_drops_repeats_across_the_switch() {
        // LOGS showed up to 10; the channel then brings 9 and 10 again
        // (published after the subscription) and 11, 12.
        let mut boundary = Boundary(10);
        let admitted: Vec<u64> = [9, 10, 11, 11, 12].into_iter().filter(|&seq| boundary.admit(&sample(seq, "info"))).collect();
        assert_eq!(admitted, [11, 12]);
    }

    #[test]
    fn a_reply_with_a_broken_line_is_an_error() {
        let broken = Value::Array(vec![Value::Map(vec![(bulk("seq"), Value::Integer(1))])]);
        assert!(lines_of(&broken).is_err());
        assert_eq!(LogLine::from_json("{\"seq\":1}"), None);
        assert_eq!(LogLine::from_json("not json"), None);
    }
}
