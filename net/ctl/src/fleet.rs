//! `rtctl --fleet FILE`: one command fanned out to many appliances at once,
//! shown as one table with one row per appliance.
//!
//! The inventory is a text file, one appliance per line:
//!
//! ```text
//! # name   host        port   token (optional)
//! edge-1   127.0.0.1   6381   file:tokens/edge-1.token
//! edge-2   127.0.0.1   6382   env:EDGE2_TOKEN
//! edge-3   10.0.0.7    6380   none
//! edge-4   127.0.0.1   6384
//! ```
//!
//! The token source is `file:PATH` (relative to the inventory's
//! directory; the file's first line), `env:NAME`, `none` (connect without
//! `AUTH`), or absent: the token `rtctl` would use without `--fleet`
//! (`--token`, `RTEDGE_TOKEN`, then `target/rtedge/dev.token`).
//!
//! Invariant: every appliance gets its own row, whatever happens to the
//! others — a token that cannot be read, a refused connection or a silent
//! server is that row's error, never the command's. Each appliance is
//! asked on its own connection, concurrently, and every wait is bounded by
//! `--timeout-ms` (connect, then each read and write).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rtedge_proto::Value;
use serde_json::{Map, Value as Json};

use crate::cli::{Cli, Command};
use crate::client::{Client, Options};
use crate::convert::{self, Shape};
use crate::error::{CtlError, Result};
use crate::format::{self, Align};
use crate::info::Info;
use crate::tables;
use crate::token;

/// Exit code when at least one appliance failed (its row says why).
pub const EXIT_SOME_FAILED: u8 = 6;
/// At most this many appliances are asked at the same time.
const MAX_CONCURRENT: usize = 32;
/// Longest inventory accepted, in lines: a typo'd path to a huge file
/// should fail, not spawn connections for an hour.
const MAX_APPLIANCES: usize = 4096;

/// Where an appliance's token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// What `rtctl` uses without `--fleet`.
    Default,
    /// The first line of a file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// No token: connect without `AUTH`.
    None,
}

/// One line of the inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appliance {
    /// The name shown in the table.
    pub name: String,
    /// Host name or address of its control plane.
    pub host: String,
    /// TCP port of its control plane.
    pub port: u16,
    /// Its token.
    pub token: TokenSource,
}

impl Appliance {
    fn address(&self) -> String {
        Options { host: self.host.clone(), port: self.port, token: None, timeout: Duration::ZERO }.address()
    }
}

/// Parses an inventory; relative token files are taken from `base`.
/// Errors name the line.
pub fn parse_inventory(text: &str, base: &Path) -> std::result::Result<Vec<Appliance>, String> {
    let mut appliances = Vec::new();
    let mut names = BTreeSet::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let [name, host, port, rest @ ..] = words.as_slice() else {
            return Err(format!("line {number}: expected `NAME HOST PORT [TOKEN]`, got `{line}`"));
        };
        let port: u16 = match port.parse() {
            Ok(port) if port != 0 => port,
            _ => return Err(format!("line {number}: `{port}` is not a TCP port")),
        };
        let token = match rest {
            [] => TokenSource::Default,
            [source] => parse_token_source(source, base)
                .ok_or_else(|| format!("line {number}: token source `{source}` is none of file:PATH, env:NAME, none"))?,
            _ => return Err(format!("line {number}: too many words in `{line}`")),
        };
        if !names.insert((*name).to_owned()) {
            return Err(format!("line {number}: the name `{name}` is used twice"));
        }
        appliances.push(Appliance { name: (*name).to_owned(), host: (*host).to_owned(), port, token });
        if appliances.len() > MAX_APPLIANCES {
            return Err(format!("more than {MAX_APPLIANCES} appliances"));
        }
    }
    if appliances.is_empty() {
        return Err("no appliances listed".into());
    }
    Ok(appliances)
}

fn parse_token_source(word: &str, base: &Path) -> Option<TokenSource> {
    if word == "none" {
        return Some(TokenSource::None);
    }
    if let Some(path) = word.strip_prefix("file:").filter(|path| !path.is_empty()) {
        let path = Path::new(path);
        return Some(TokenSource::File(if path.is_absolute() { path.to_path_buf() } else { base.join(path) }));
    }
    word.strip_prefix("env:").filter(|name| !name.is_empty()).map(|name| TokenSource::Env(name.to_owned()))
}

/// The token for one appliance; `Ok(None)` means "connect without AUTH".
fn resolve_token(source: &TokenSource, default: Option<&str>) -> Result<Option<String>> {
    match source {
        TokenSource::Default => Ok(default.map(str::to_owned)),
        TokenSource::None => Ok(None),
        TokenSource::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| CtlError::Local(format!("cannot read token file {}: {error}", path.display())))?;
            let token = text.lines().next().unwrap_or_default().trim().to_owned();
            if token.is_empty() {
                return Err(CtlError::Local(format!("token file {} is empty", path.display())));
            }
            Ok(Some(token))
        }
        TokenSource::Env(name) => match std::env::var(name) {
            Ok(token) if !token.trim().is_empty() => Ok(Some(token.trim().to_owned())),
            _ => Err(CtlError::Local(format!("environment variable {name} is not set"))),
        },
    }
}

/// `--fleet virsh:URI` (or `virsh:` for virsh's default connection) asks
/// libvirt instead of a file.
pub const VIRSH_PREFIX: &str = "virsh:";
/// The XML namespace of the `<metadata>` element `rtedge-image domain`
/// writes: `<rtedge:appliance host='127.0.0.1' port='16391'/>`.
pub const RTEDGE_NAMESPACE: &str = "https://github.com/rtedge/libvirt/appliance/1";

/// The running libvirt domains that carry rtedge's metadata, from
/// `virsh list --name` and `virsh dumpxml`; their token is rtctl's usual
/// one. Domains without the metadata are not appliances and are left out.
fn from_virsh(uri: &str) -> Result<Vec<Appliance>> {
    let virsh = |args: &[&str]| -> Result<String> {
        let mut command = std::process::Command::new("virsh");
        if !uri.is_empty() {
            command.args(["-c", uri]);
        }
        let output = command
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|error| CtlError::Local(format!("cannot run virsh: {error}")))?;
        if !output.status.success() {
            return Err(CtlError::Local(format!("virsh {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim())));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let mut appliances = Vec::new();
    for name in virsh(&["list", "--name"])?.lines().map(str::trim).filter(|name| !name.is_empty()) {
        if let Some((host, port)) = appliance_metadata(&virsh(&["dumpxml", name])?) {
            appliances.push(Appliance { name: name.to_owned(), host, port, token: TokenSource::Default });
        }
    }
    if appliances.is_empty() {
        return Err(CtlError::Local(format!(
            "no running libvirt domain{} carries rtedge's metadata (written by `rtedge-image domain`)",
            if uri.is_empty() { String::new() } else { format!(" at {uri}") }
        )));
    }
    Ok(appliances)
}

/// `(host, port)` from the `<...:appliance xmlns:...='RTEDGE_NAMESPACE'
/// host=... port=.../>` element of a domain's XML, quotes either way.
pub fn appliance_metadata(xml: &str) -> Option<(String, u16)> {
    let at = xml.find(RTEDGE_NAMESPACE)?;
    let start = xml.get(..at)?.rfind('<')?;
    let end = at + xml.get(at..)?.find('>')?;
    let tag = xml.get(start..end)?;
    let attribute = |name: &str| -> Option<String> {
        let position = tag.find(&format!(" {name}="))? + name.len() + 2;
        let quote = tag.get(position..)?.chars().next()?;
        let rest = tag.get(position + 1..)?;
        Some(rest.get(..rest.find(quote)?)?.to_owned())
    };
    let port = attribute("port")?.parse().ok().filter(|port| *port != 0)?;
    Some((attribute("host")?, port))
}

/// What is asked of every appliance.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Query {
    Status,
    Threads,
    Get(Vec<String>),
    Ping,
    Modules,
    /// A command whose one reply is shown as it comes (`set`, `raw`).
    Reply(Vec<String>),
}

/// The commands `--fleet` can fan out.
pub const FLEET_COMMANDS: &str = "status, threads, get, set, ping, modules, raw";

impl Query {
    fn from_command(command: Command) -> Option<Query> {
        Some(match command {
            Command::Status => Query::Status,
            Command::Threads => Query::Threads,
            Command::Get { keys } => Query::Get(keys),
            Command::Ping => Query::Ping,
            Command::Modules => Query::Modules,
            Command::Set { key, value } => Query::Reply(vec!["SET".into(), key, value]),
            Command::Raw { args } => Query::Reply(args),
            _ => return None,
        })
    }

    /// The table's columns after NAME and ADDRESS (and before ERROR).
    fn columns(&self) -> Vec<(String, Align)> {
        let fixed = |names: &[(&str, Align)]| names.iter().map(|(name, align)| ((*name).to_owned(), *align)).collect();
        match self {
            Query::Status => fixed(&[
                ("VERSION", Align::Left),
                ("UPTIME", Align::Right),
                ("BOOT", Align::Left),
                ("CPUS", Align::Right),
                ("HEAP", Align::Right),
                ("THREADS", Align::Right),
                ("CLIENTS", Align::Right),
            ]),
            Query::Threads => fixed(&[
                ("THREADS", Align::Right),
                ("RT", Align::Right),
                ("RUNNING", Align::Right),
                ("MISSES", Align::Right),
                ("WORST-LAT", Align::Right),
            ]),
            Query::Get(keys) => keys.iter().map(|key| (key.clone(), Align::Left)).collect(),
            Query::Ping => fixed(&[("REPLY", Align::Left), ("RTT", Align::Right)]),
            Query::Modules => fixed(&[("MODULES", Align::Left)]),
            Query::Reply(_) => fixed(&[("REPLY", Align::Left)]),
        }
    }
}

/// One appliance's answer: its cells and its JSON.
struct Answer {
    cells: Vec<String>,
    json: Json,
}

/// One row: the appliance and what came back.
struct Row {
    appliance: Appliance,
    outcome: Result<Answer>,
    elapsed: Duration,
}

/// Runs `--fleet`: the exit code is 0 when every appliance answered,
/// [`EXIT_SOME_FAILED`] otherwise. An `Err` is a failure before any
/// appliance was asked (the inventory, or a command `--fleet` cannot fan out).
pub fn run(cli: Cli, inventory: &Path, out: &mut dyn Write) -> Result<u8> {
    let appliances = match inventory.to_str().and_then(|text| text.strip_prefix(VIRSH_PREFIX)) {
        Some(uri) => from_virsh(uri)?,
        None => {
            let text = std::fs::read_to_string(inventory)
                .map_err(|error| CtlError::Local(format!("cannot read inventory {}: {error}", inventory.display())))?;
            let base = inventory.parent().map(Path::to_path_buf).unwrap_or_default();
            parse_inventory(&text, &base).map_err(|message| CtlError::Local(format!("inventory {}: {message}", inventory.display())))?
        }
    };
    let Some(query) = Query::from_command(cli.command) else {
        return Err(CtlError::Local(format!("this command cannot be fanned out; with --fleet use one of: {FLEET_COMMANDS}")));
    };
    let default_token = cli.token.filter(|token| !token.is_empty()).or_else(token::discover);
    let timeout = Duration::from_millis(cli.timeout_ms);
    let rows = fan_out(&appliances, &query, default_token.as_deref(), timeout);
    let failed = rows.iter().filter(|row| row.outcome.is_err()).count();
    if cli.json {
        let text =
            serde_json::to_string_pretty(&rows_json(&rows)).map_err(|error| CtlError::Local(format!("cannot format JSON: {error}")))?;
        out.write_all(text.as_bytes())?;
        out.write_all(b"\n")?;
    } else {
        out.write_all(render(&query, &rows).as_bytes())?;
    }
    out.flush()?;
    if failed == 0 {
        Ok(0)
    } else {
        eprintln!("rtctl: {failed} of {} appliances failed", rows.len());
        Ok(EXIT_SOME_FAILED)
    }
}

/// Asks every appliance, at most [`MAX_CONCURRENT`] at once; rows come
/// back in inventory order.
fn fan_out(appliances: &[Appliance], query: &Query, default_token: Option<&str>, timeout: Duration) -> Vec<Row> {
    let slots: Vec<Mutex<Option<Row>>> = appliances.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let workers = appliances.len().clamp(1, MAX_CONCURRENT);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let (Some(appliance), Some(slot)) = (appliances.get(index), slots.get(index)) else {
                        break;
                    };
                    let started = Instant::now();
                    let outcome = ask(appliance, query, default_token, timeout);
                    let row = Row { appliance: appliance.clone(), outcome, elapsed: started.elapsed() };
                    if let Ok(mut slot) = slot.lock() {
                        *slot = Some(row);
                    }
                }
            });
        }
    });
    slots
        .into_iter()
        .zip(appliances)
        .map(|(slot, appliance)| {
            slot.into_inner().ok().flatten().unwrap_or_else(|| Row {
                appliance: appliance.clone(),
                outcome: Err(CtlError::Local("no answer recorded (a worker failed)".into())),
                elapsed: Duration::ZERO,
            })
        })
        .collect()
}

/// One appliance: connect, authenticate, ask, and shape the reply.
fn ask(appliance: &Appliance, query: &Query, default_token: Option<&str>, timeout: Duration) -> Result<Answer> {
    let options =
        Options { host: appliance.host.clone(), port: appliance.port, token: resolve_token(&appliance.token, default_token)?, timeout };
    let mut client = Client::connect(&options)?;
    match query {
        Query::Status => {
            let reply = client.call(&["INFO"])?;
            let text = convert::text(&reply).ok_or_else(|| CtlError::Protocol("INFO did not reply with text".into()))?;
            let info = Info::parse(&text);
            let summary = info.summary();
            let dash = |value: Option<String>| value.unwrap_or_else(|| "-".into());
            let boot = match (&summary.boot_path, &summary.hypervisor) {
                (Some(path), Some(hypervisor)) => format!("{path} ({hypervisor})"),
                (Some(path), None) => path.clone(),
                (None, Some(hypervisor)) => format!("- ({hypervisor})"),
                (None, None) => "-".into(),
            };
            Ok(Answer {
                cells: vec![
                    dash(summary.version.clone()),
                    summary.uptime(),
                    boot,
                    tables::number(summary.cpus),
                    summary.heap(),
                    tables::number(summary.threads),
                    tables::number(summary.clients),
                ],
                json: info.to_json(),
            })
        }
        Query::Threads => {
            let reply = client.call(&["THREADS"])?;
            let threads = tables::threads(&reply);
            let rt = threads.iter().filter(|thread| thread.is_rt()).count();
            let running = threads.iter().filter(|thread| thread.state == "running").count();
            let misses: i64 = threads.iter().filter_map(|thread| thread.misses).sum();
            let worst = threads.iter().filter(|thread| thread.has_latency()).filter_map(|thread| thread.latency_max_ns).max();
            Ok(Answer {
                cells: vec![threads.len().to_string(), rt.to_string(), running.to_string(), misses.to_string(), tables::duration(worst)],
                json: convert::to_json(&reply, Shape::Table),
            })
        }
        Query::Get(keys) => {
            let values = if let [key] = keys.as_slice() {
                vec![client.call(&["GET", key])?]
            } else {
                let mut args = vec!["MGET"];
                args.extend(keys.iter().map(String::as_str));
                match client.call(&args)? {
                    Value::Array(values) if values.len() == keys.len() => values,
                    _ => {
                        return Err(CtlError::Protocol("MGET did not reply with one value per key".into()));
                    }
                }
            };
            let json: Map<String, Json> = keys.iter().zip(&values).map(|(key, value)| (key.clone(), convert::plain_json(value))).collect();
            Ok(Answer { cells: values.iter().map(format::scalar).collect(), json: Json::Object(json) })
        }
        Query::Ping => {
            let started = Instant::now();
            let reply = client.call(&["PING"])?;
            let microseconds = started.elapsed().as_secs_f64() * 1e6;
            let text = format::scalar(&reply);
            let mut json = Map::new();
            json.insert("reply".into(), Json::String(text.clone()));
            json.insert(
                "rtt_us".into(),
                serde_json::Number::from_f64((microseconds * 10.0).round() / 10.0).map_or(Json::Null, Json::Number),
            );
            Ok(Answer { cells: vec![text, format!("{microseconds:.1} µs")], json: Json::Object(json) })
        }
        Query::Modules => {
            let reply = client.call(&["MODULE", "LIST"])?;
            let names: Vec<String> = convert::records(&reply)
                .iter()
                .map(|record| {
                    let name = record.text("name").unwrap_or_else(|| "?".into());
                    match record.text("state") {
                        Some(state) => format!("{name}({state})"),
                        None => name,
                    }
                })
                .collect();
            Ok(Answer {
                cells: vec![if names.is_empty() { "-".into() } else { names.join(" ") }],
                json: convert::to_json(&reply, Shape::Table),
            })
        }
        Query::Reply(args) => {
            let reply = client.call(args)?;
            Ok(Answer { cells: vec![one_line(&format::scalar(&reply))], json: convert::to_json(&reply, convert::shape_of(args)) })
        }
    }
}

/// A cell never spans lines: a multi-line reply is joined with ` | `.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim_end).filter(|line| !line.is_empty()).collect::<Vec<_>>().join(" | ")
}

/// The table: NAME, ADDRESS, the query's columns, ERROR (empty when fine).
fn render(query: &Query, rows: &[Row]) -> String {
    let columns = query.columns();
    let mut header: Vec<(&str, Align)> = vec![("NAME", Align::Left), ("ADDRESS", Align::Left)];
    header.extend(columns.iter().map(|(name, align)| (name.as_str(), *align)));
    header.push(("ERROR", Align::Left));
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = vec![row.appliance.name.clone(), row.appliance.address()];
            match &row.outcome {
                Ok(answer) => {
                    cells.extend(answer.cells.iter().cloned());
                    cells.push(String::new());
                }
                Err(error) => {
                    cells.extend(columns.iter().map(|_| "-".to_owned()));
                    cells.push(one_line(&error.to_string()));
                }
            }
            cells
        })
        .collect();
    format::table(&header, &cells)
}

/// `[{"name", "address", "ok", "elapsed_ms", "result" | "error", "exit_code"}, ...]`.
fn rows_json(rows: &[Row]) -> Json {
    Json::Array(
        rows.iter()
            .map(|row| {
                let mut object = Map::new();
                object.insert("name".into(), Json::String(row.appliance.name.clone()));
                object.insert("address".into(), Json::String(row.appliance.address()));
                object.insert("ok".into(), Json::Bool(row.outcome.is_ok()));
                object.insert("elapsed_ms".into(), Json::from(u64::try_from(row.elapsed.as_millis()).unwrap_or(u64::MAX)));
                match &row.outcome {
                    Ok(answer) => {
                        object.insert("result".into(), answer.json.clone());
                    }
                    Err(error) => {
                        object.insert("error".into(), Json::String(error.to_string()));
                        object.insert("exit_code".into(), Json::from(error.exit_code()));
                    }
                }
                Json::Object(object)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inventory_reads_names_hosts_ports_and_token_sources() {
        let text = "\
# name host port token
edge-1  127.0.0.1  6381  file:tokens/one   # relative to the inventory
edge-2  ::1        6382  env:EDGE2_TOKEN

edge-3  example    6383  none
edge-4  127.0.0.1  6384
edge-5  127.0.0.1  6385  file:/abs/token
";
        let appliances = parse_inventory(text, Path::new("/etc/fleet")).expect("valid inventory");
        let summary: Vec<(String, String, u16, TokenSource)> =
            appliances.into_iter().map(|appliance| (appliance.name, appliance.host, appliance.port, appliance.token)).collect();
        assert_eq!(
            summary,
            [
                ("edge-1".into(), "127.0.0.1".into(), 6381, TokenSource::File("/etc/fleet/tokens/one".into())),
                ("edge-2".into(), "::1".into(), 6382, TokenSource::Env("EDGE2_TOKEN".into())),
                ("edge-3".into(), "example".into(), 6383, TokenSource::None),
                ("edge-4".into(), "127.0.0.1".into(), 6384, TokenSource::Default),
                ("edge-5".into(), "127.0.0.1".into(), 6385, TokenSource::File("/abs/token".into())),
            ]
        );
    }

    #[test]
    fn inventory_mistakes_name_their_line() {
        let base = Path::new(".");
        let cases = [
            ("a 127.0.0.1\n", "line 1: expected `NAME HOST PORT [TOKEN]`, got `a 127.0.0.1`"),
            ("\na h 70000\n", "line 2: `70000` is not a TCP port"),
            ("a h 0\n", "line 1: `0` is not a TCP port"),
            ("a h 1 secret\n", "line 1: token source `secret` is none of file:PATH, env:NAME, none"),
            ("a h 1 none extra\n", "line 1: too many words in `a h 1 none extra`"),
            ("a h 1\na h 2\n", "line 2: the name `a` is used twice"),
            ("# nothing\n\n", "no appliances listed"),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_inventory(text, base), Err(expected.to_owned()), "{text:?}");
        }
    }

    #[test]
    fn a_token_source_that_fails_is_that_rows_error() {
        let missing = TokenSource::File("/nonexistent/rtctl-fleet-token".into());
        let error = resolve_token(&missing, Some("x")).expect_err("missing file");
        assert!(error.to_string().starts_with("cannot read token file /nonexistent/rtctl-fleet-token"), "{error}");
        let unset = TokenSource::Env("RTCTL_FLEET_TEST_SURELY_UNSET".into());
        assert_eq!(
            resolve_token(&unset, None).expect_err("unset").to_string(),
            "environment variable RTCTL_FLEET_TEST_SURELY_UNSET is not set"
        );
        assert_eq!(resolve_token(&TokenSource::Default, Some("d")).ok().flatten().as_deref(), Some("d"));
        assert_eq!(resolve_token(&TokenSource::None, Some("d")).ok().flatten(), None);
    }

    #[test]
    fn the_libvirt_metadata_names_host_and_port() {
        let written = format!(
            "<domain>\n  <metadata>\n    <rtedge:appliance xmlns:rtedge='{RTEDGE_NAMESPACE}' host='127.0.0.1' port='16391'/>\n  </metadata>"
        );
        assert_eq!(appliance_metadata(&written), Some(("127.0.0.1".into(), 16391)));
        let dumped = format!("<metadata>\n<rtedge:appliance xmlns:rtedge=\"{RTEDGE_NAMESPACE}\" host=\"::1\" port=\"6380\"/>\n</metadata>");
        assert_eq!(appliance_metadata(&dumped), Some(("::1".into(), 6380)));
        assert_eq!(appliance_metadata("<domain><name>other</name></domain>"), None);
        let no_port = format!("<a:appliance xmlns:a='{RTEDGE_NAMESPACE}' host='h'/>");
        assert_eq!(appliance_metadata(&no_port), None);
    }

    #[test]
    fn multi_line_replies_fit_one_cell() {
        assert_eq!(one_line("a\r\nb\n\nc\n"), "a | b | c");
    }
}
