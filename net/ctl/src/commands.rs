//! Each command: what it sends, and how the reply is shown.

use std::io::Write;
use std::time::{Duration, Instant};

use rtedge_proto::Value;
use serde_json::Value as Json;

use crate::cli::{Cli, Command, ModuleAction, SoftirqAction, TimerAction, WorkAction};
use crate::client::{Client, Options};
use crate::convert::{self, Shape};
use crate::error::{CtlError, Result};
use crate::format::{self, Align};
use crate::info::Info;
use crate::latency::{self, Histogram};
use crate::{listings, tables};
use crate::{plot, top, watch};

/// Runs the command line, writing what it shows to `out`.
pub fn run(cli: Cli, target: crate::instances::Target, out: &mut dyn Write) -> Result<()> {
    let options =
        Options { host: cli.host.clone(), port: target.port, token: target.token.clone(), timeout: Duration::from_millis(cli.timeout_ms) };
    let json = cli.json;
    let mut client = match Client::connect(&options) {
        Err(CtlError::Server(reply)) if reply.starts_with("WRONGPASS") => {
            return Err(CtlError::WrongToken { reply, source: target.token_source, address: options.address() });
        }
        other => other?,
    };
    let session = Session { client: &mut client, options: &options, json, out };
    session.run(cli.command)
}

struct Session<'a> {
    client: &'a mut Client,
    /// For commands that open a second connection (`logs -f`).
    options: &'a Options,
    json: bool,
    out: &'a mut dyn Write,
}

impl Session<'_> {
    fn run(mut self, command: Command) -> Result<()> {
        match command {
            Command::Status => self.status(),
            Command::Threads => self.threads(),
            Command::Irqs => self.per_cpu("IRQS", &[("VECTOR", "vector", Align::Right), ("NAME", "name", Align::Left)]),
            Command::Softirqs => self.per_cpu("SOFTIRQS", &listings::SOFTIRQ_COLUMNS),
            Command::Tasklets => self.listing("TASKLETS", listings::tasklets_table),
            Command::Timers => self.listing("TIMERS", listings::timers_table),
            Command::Workqueues => self.workqueues(),
            Command::Get { keys } => self.get(&keys),
            Command::Set { key, value } => self.simple(&["SET", &key, &value]),
            Command::Keys { pattern } => self.list(&["KEYS", &pattern]),
            Command::Wake { thread } => self.simple(&["WAKE", &thread]),
            Command::Kill { thread, signal } => self.simple(&["KILL", &thread, signal.wire()]),
            Command::Tasklet { action, name } => self.simple(&["TASKLET", action.wire(), &name]),
            Command::Softirq { action: SoftirqAction::Raise { name } } => self.simple(&["SOFTIRQ", "RAISE", &name]),
            Command::Timer { action } => self.timer(action),
            Command::Work { action } => self.work(action),
            Command::Latency { sources, reset, plot } => {
                if sources.is_empty() {
                    self.list(&["LATENCY"])
                } else {
                    self.latency(&sources, reset, plot.as_deref())
                }
            }
            Command::Metrics { prefix } => self.metrics(prefix.as_deref()),
            Command::Watch { channel, count } => watch::watch(self.client, &channel, count, self.json, self.out),
            Command::Logs { count, follow, level } => {
                crate::logs::run(self.client, self.options, count, level, follow, self.json, self.out)
            }
            Command::Top { interval_ms, once, sort, size, view } => top::run(
                self.client,
                top::Options { interval: Duration::from_millis(interval_ms), once, json: self.json, sort, size, section: view },
                self.out,
            ),
            Command::Modules => self.modules(),
            Command::Module { action } => match action {
                ModuleAction::Load { name } => self.simple(&["MODULE", "LOAD", &name]),
                ModuleAction::Unload { name } => self.simple(&["MODULE", "UNLOAD", &name]),
            },
            Command::Raw { args } => self.raw(&args),
            Command::Ping => self.ping(),
            // Answered without a connection, in main.
            Command::Ps
            | Command::Stop { .. }
            | Command::Console { .. }
            | Command::Port { .. }
            | Command::Completions { .. }
            | Command::Man => Err(CtlError::Usage("this command needs no connection".into())),
        }
    }

    fn emit(&mut self, text: &str) -> Result<()> {
        self.out.write_all(text.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }

    fn emit_json(&mut self, json: &Json) -> Result<()> {
        let text = serde_json::to_string_pretty(json).map_err(|error| CtlError::Local(format!("cannot format JSON: {error}")))?;
        self.emit(&format!("{text}\n"))
    }

    fn status(&mut self) -> Result<()> {
        let reply = self.client.call(&["INFO"])?;
        let text = convert::text(&reply).ok_or_else(|| CtlError::Protocol("INFO did not reply with text".into()))?;
        let info = Info::parse(&text);
        if self.json { self.emit_json(&info.to_json()) } else { self.emit(&info.summary().render()) }
    }

    fn metrics(&mut self, prefix: Option<&str>) -> Result<()> {
        let reply = self.client.call(&["METRICS"])?;
        let text = convert::text(&reply).ok_or_else(|| CtlError::Protocol("METRICS did not reply with text".into()))?;
        let text = crate::metrics::filter(&text, prefix.unwrap_or(""));
        if self.json { self.emit_json(&crate::metrics::to_json(&text)) } else { self.emit(&text) }
    }

    fn threads(&mut self) -> Result<()> {
        let reply = self.client.call(&["THREADS"])?;
        if self.json {
            return self.emit_json(&convert::to_json(&reply, Shape::Table));
        }
        self.emit(&tables::threads_table(&tables::threads(&reply)))
    }

    fn per_cpu(&mut self, command: &str, leading: &[(&str, &str, Align)]) -> Result<()> {
        let reply = self.client.call(&[command])?;
        if self.json {
            return self.emit_json(&convert::to_json(&reply, Shape::Table));
        }
        let records = convert::records(&reply);
        self.emit(&tables::per_cpu_table(&records, leading))
    }

    /// A table-shaped listing: JSON rows, or the table `render` draws.
    fn listing(&mut self, command: &str, render: fn(&[convert::Record<'_>]) -> String) -> Result<()> {
        let reply = self.client.call(&[command])?;
        if self.json {
            return self.emit_json(&convert::to_json(&reply, Shape::Table));
        }
        self.emit(&render(&convert::records(&reply)))
    }

    /// `workqueues`: the queues, then the named work items (`WORK` takes
    /// both names); in JSON one object with `queues` and `items`.
    fn workqueues(&mut self) -> Result<()> {
        let queues = self.client.call(&["WORKQUEUES"])?;
        let items = self.client.call(&["WORKQUEUES", "ITEMS"])?;
        if self.json {
            let mut object = serde_json::Map::new();
            object.insert("queues".into(), convert::to_json(&queues, Shape::Table));
            object.insert("items".into(), convert::to_json(&items, Shape::Table));
            return self.emit_json(&Json::Object(object));
        }
        let mut text = listings::workqueues_table(&convert::records(&queues));
        text.push('\n');
        text.push_str(&listings::work_items_table(&convert::records(&items)));
        self.emit(&text)
    }

    fn modules(&mut self) -> Result<()> {
        let reply = self.client.call(&["MODULE", "LIST"])?;
        if self.json {
            return self.emit_json(&convert::to_json(&reply, Shape::Table));
        }
        self.emit(&tables::modules_table(&convert::records(&reply)))
    }

    fn get(&mut self, keys: &[String]) -> Result<()> {
        if let [key] = keys {
            let reply = self.client.call(&["GET", key])?;
            if reply.is_null() {
                return Err(CtlError::NotFound(format!("no such key '{key}'")));
            }
            if self.json {
                return self.emit_json(&convert::plain_json(&reply));
            }
            return self.emit(&format!("{}\n", format::scalar(&reply)));
        }
        let mut args = vec!["MGET"];
        args.extend(keys.iter().map(String::as_str));
        let reply = self.client.call(&args)?;
        let Value::Array(values) = reply else {
            return Err(CtlError::Protocol("MGET did not reply with an array".into()));
        };
        if self.json {
            let object = keys.iter().zip(&values).map(|(key, value)| (key.clone(), convert::plain_json(value))).collect();
            return self.emit_json(&Json::Object(object));
        }
        let width = keys.iter().map(|key| key.chars().count()).max().unwrap_or(0);
        let mut text = String::new();
        for (key, value) in keys.iter().zip(&values) {
            text.push_str(&format!("{key:<width$}  {}\n", format::scalar(value)));
        }
        self.emit(&text)
    }

    /// Commands that answer `+OK` (or any one value): print it.
    fn simple(&mut self, args: &[&str]) -> Result<()> {
        let reply = self.client.call(args)?;
        if self.json {
            return self.emit_json(&convert::plain_json(&reply));
        }
        self.emit(&format!("{}\n", format::scalar(&reply)))
    }

    /// Commands that answer an array of names: one per line.
    fn list(&mut self, args: &[&str]) -> Result<()> {
        let reply = self.client.call(args)?;
        if self.json {
            return self.emit_json(&convert::plain_json(&reply));
        }
        let mut text = String::new();
        if let Value::Array(items) | Value::Set(items) = &reply {
            for item in items {
                text.push_str(&format::scalar(item));
                text.push('\n');
            }
        }
        self.emit(&text)
    }

    /// Commands that answer `:1`/`:0`: the number in JSON, a sentence in text.
    fn flag(&mut self, args: &[&str], yes: String, no: String) -> Result<()> {
        let reply = self.client.call(args)?;
        if self.json {
            return self.emit_json(&convert::plain_json(&reply));
        }
        match convert::integer(&reply) {
            Some(0) => self.emit(&format!("{no}\n")),
            Some(_) => self.emit(&format!("{yes}\n")),
            None => self.emit(&format!("{}\n", format::scalar(&reply))),
        }
    }

    fn timer(&mut self, action: TimerAction) -> Result<()> {
        match action {
            TimerAction::Mod { name, ms } => self.flag(
                &["TIMER", "MOD", &name, &ms.to_string()],
                format!("timer '{name}' set to {ms} ms (it was pending)"),
                format!("timer '{name}' set to {ms} ms (it was not pending)"),
            ),
            TimerAction::Del { name } => {
                self.flag(&["TIMER", "DEL", &name], format!("timer '{name}' deleted"), format!("timer '{name}' was not pending"))
            }
        }
    }

    fn work(&mut self, action: WorkAction) -> Result<()> {
        match action {
            WorkAction::Queue { queue, item, delay_ms } => {
                let delay = delay_ms.map(|ms| ms.to_string());
                let mut args = vec!["WORK", "QUEUE", &queue, &item];
                args.extend(delay.as_deref());
                self.flag(&args, format!("'{item}' queued on '{queue}'"), format!("'{item}' was already pending on '{queue}'"))
            }
            WorkAction::Cancel { queue, item } => self.flag(
                &["WORK", "CANCEL", &queue, &item],
                format!("'{item}' cancelled on '{queue}'"),
                format!("'{item}' was not pending on '{queue}'"),
            ),
            WorkAction::Flush { queue } => self.simple(&["WORK", "FLUSH", &queue]),
        }
    }

    /// `rtctl latency a b ...`: one `LATENCY` call per source; `--json`
    /// prints the reply map for one source, an array of them for several.
    fn latency(&mut self, sources: &[String], reset: bool, plot: Option<&std::path::Path>) -> Result<()> {
        let mut replies = Vec::new();
        let mut histograms = Vec::new();
        for source in sources {
            let mut args = vec!["LATENCY", source.as_str()];
            if reset {
                args.push("RESET");
            }
            let reply = self.client.call(&args)?;
            histograms.push(Histogram::from_value(&reply, source)?);
            replies.push(reply);
        }
        if let Some(path) = plot {
            plot::write_png(&histograms, path)?;
        }
        if self.json {
            let mut maps: Vec<Json> = replies.iter().map(|reply| convert::to_json(reply, Shape::Map)).collect();
            let json = if maps.len() == 1 { maps.remove(0) } else { Json::Array(maps) };
            self.emit_json(&json)
        } else {
            self.emit(&latency::render(&histograms))
        }
    }

    fn raw(&mut self, args: &[String]) -> Result<()> {
        let reply = self.client.call(args)?;
        if self.json {
            return self.emit_json(&convert::to_json(&reply, convert::shape_of(args)));
        }
        self.emit(&format::redis_cli(&reply))
    }

    fn ping(&mut self) -> Result<()> {
        let started = Instant::now();
        let reply = self.client.call(&["PING"])?;
        let microseconds = started.elapsed().as_secs_f64() * 1e6;
        let text = format::scalar(&reply);
        if self.json {
            let mut object = serde_json::Map::new();
            object.insert("reply".into(), Json::String(text));
            object.insert(
                "rtt_us".into(),
                serde_json::Number::from_f64((microseconds * 10.0).round() / 10.0).map_or(Json::Null, Json::Number),
            );
            return self.emit_json(&Json::Object(object));
        }
        let address = self.client.address().to_owned();
        self.emit(&format!("{text} from {address}: {microseconds:.1} µs\n"))
    }
}
