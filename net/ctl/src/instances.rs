//! The instances `rtedge-image run` registered (one JSON file each under
//! `target/rtedge/instances/`, or `$RTEDGE_INSTANCES`; the writer is
//! `images/src/instances.rs`, whose field names this reads): `rtctl ps`,
//! `rtctl stop`, `rtctl console`, and picking the only running instance
//! when no port is given.
//!
//! Invariant: an entry whose process is gone, or whose pid now runs another
//! program, is stale: it is treated as absent and removed.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::client::{Client, Options};
use crate::error::{CtlError, Result};

/// Environment variable that moves the registry.
pub const DIRECTORY_VARIABLE: &str = "RTEDGE_INSTANCES";
/// The registry, relative to a repository root.
const REGISTRY: &str = "target/rtedge/instances";

/// One registered instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    pub profile: String,
    pub hypervisor: String,
    pub pid: u32,
    pub port: Option<u16>,
    pub token_path: Option<PathBuf>,
    pub console_log: Option<PathBuf>,
    pub program: String,
    pub started: u64,
    pub detached: bool,
}

impl Instance {
    fn from_json(value: &Json) -> Option<Instance> {
        let text = |key: &str| value.get(key).and_then(Json::as_str).map(str::to_owned);
        Some(Instance {
            name: text("name")?,
            profile: text("profile").unwrap_or_default(),
            hypervisor: text("hypervisor").unwrap_or_default(),
            pid: value.get("pid").and_then(Json::as_u64).and_then(|pid| u32::try_from(pid).ok())?,
            port: value.get("port").and_then(Json::as_u64).and_then(|port| u16::try_from(port).ok()),
            token_path: text("token_path").map(PathBuf::from),
            console_log: text("console_log").map(PathBuf::from),
            program: text("program").unwrap_or_default(),
            started: value.get("started").and_then(Json::as_u64).unwrap_or_default(),
            detached: value.get("detached").and_then(Json::as_bool).unwrap_or_default(),
        })
    }

    fn to_json(&self) -> Json {
        json!({
            "name": self.name,
            "profile": self.profile,
            "hypervisor": self.hypervisor,
            "pid": self.pid,
            "port": self.port,
            "token_path": self.token_path.as_ref().map(|path| path.display().to_string()),
            "console_log": self.console_log.as_ref().map(|path| path.display().to_string()),
            "started": self.started,
            "detached": self.detached,
        })
    }

    /// Whether its process still runs the hypervisor it was started as.
    pub fn is_alive(&self) -> bool {
        process_is(self.pid, &self.program)
    }

    /// The token in its token file, if it has one.
    pub fn token(&self) -> Option<String> {
        let path = self.token_path.as_ref()?;
        let text = std::fs::read_to_string(path).ok()?;
        Some(text.trim().to_owned()).filter(|token| !token.is_empty())
    }
}

/// Whether `pid` is a live (not zombie) process whose command is `program`.
fn process_is(pid: u32, program: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z" | "X") | None) {
        return false;
    }
    program.is_empty()
        || std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            let first = cmdline.split(|byte| *byte == 0).next().unwrap_or_default();
            Path::new(&*String::from_utf8_lossy(first)).file_name().is_some_and(|name| name == program)
        })
}

/// The registry directory: `$RTEDGE_INSTANCES`, else
/// `target/rtedge/instances` in the nearest ancestor of the current
/// directory (then of the executable) that has a `target/rtedge`.
pub fn directory() -> Option<PathBuf> {
    if let Some(directory) = std::env::var_os(DIRECTORY_VARIABLE).filter(|value| !value.is_empty()) {
        return Some(PathBuf::from(directory));
    }
    let current = std::env::current_dir().ok();
    let executable = std::env::current_exe().ok().and_then(|path| path.parent().map(Path::to_path_buf));
    current
        .iter()
        .chain(executable.iter())
        .find_map(|start| start.ancestors().map(|ancestor| ancestor.join(REGISTRY)).find(|path| path.parent().is_some_and(Path::is_dir)))
}

/// The live instances, sorted by name (stale entries are removed).
pub fn live() -> Vec<Instance> {
    directory().map(|directory| live_in(&directory)).unwrap_or_default()
}

/// The live instances registered in `directory`.
pub fn live_in(directory: &Path) -> Vec<Instance> {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return Vec::new();
    };
    let mut live = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|extension| extension != "json") {
            continue;
        }
        let instance = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<Json>(&text).ok())
            .and_then(|value| Instance::from_json(&value));
        match instance {
            Some(instance) if instance.is_alive() => live.push(instance),
            Some(_) => {
                let _ = std::fs::remove_file(&path);
            }
            None => {}
        }
    }
    live.sort_by(|left, right| left.name.cmp(&right.name));
    live
}

/// The instance called `name`.
pub fn find(name: &str) -> Result<Instance> {
    let live = live();
    live.iter()
        .find(|instance| instance.name == name)
        .cloned()
        .ok_or_else(|| CtlError::NotFound(format!("no running instance named `{name}` ({})", names(&live))))
}

/// `running: a (port 6380), b (port 6381)` or `none is running`.
pub fn names(live: &[Instance]) -> String {
    if live.is_empty() {
        return "none is running; `make start` starts one".into();
    }
    format!("running: {}", listing(live))
}

/// `a (port 6380), b (port 6381)`.
fn listing(live: &[Instance]) -> String {
    let listed: Vec<String> = live
        .iter()
        .map(|instance| match instance.port {
            Some(port) => format!("{} (port {port})", instance.name),
            None => format!("{} (no port)", instance.name),
        })
        .collect();
    listed.join(", ")
}

/// The instance `rtctl` talks to when no port is given: the only running
/// one that has a port. `Ok(None)` when none runs.
pub fn the_only_one() -> Result<Option<Instance>> {
    let reachable: Vec<Instance> = live().into_iter().filter(|instance| instance.port.is_some()).collect();
    match reachable.len() {
        0 => Ok(None),
        1 => Ok(reachable.into_iter().next()),
        _ => Err(CtlError::Usage(format!(
            "{} instances are running ({}); pick one with -p PORT or --instance NAME",
            reachable.len(),
            listing(&reachable)
        ))),
    }
}

/// The one running detached instance (for `rtctl console` without a name).
pub fn the_only_detached() -> Result<String> {
    let detached: Vec<Instance> = live().into_iter().filter(|instance| instance.detached).collect();
    match detached.as_slice() {
        [only] => Ok(only.name.clone()),
        [] => Err(CtlError::NotFound("no detached instance is running; `make start` starts one".into())),
        _ => Err(CtlError::Usage(format!("several instances are running ({}); name one", listing(&detached)))),
    }
}

/// Where `rtctl` connects and with which token.
#[derive(Clone, Debug)]
pub struct Target {
    pub port: u16,
    pub token: Option<String>,
    /// Where the token came from, for messages: `from --token`, `in PATH`.
    pub token_source: String,
}

/// The port: `-p`, else `RTEDGE_PORT`, else `--instance`'s, else the only
/// running instance's, else 6380. The token: `--token` or `RTEDGE_TOKEN`,
/// else the instance's token file, else `target/rtedge/dev.token`.
pub fn target(cli: &crate::cli::Cli) -> Result<Target> {
    let explicit = match cli.port {
        Some(port) => Some(port),
        None => match std::env::var("RTEDGE_PORT") {
            Ok(text) if !text.trim().is_empty() => {
                Some(text.trim().parse().map_err(|_| CtlError::Usage(format!("RTEDGE_PORT is not a port number: '{text}'")))?)
            }
            _ => None,
        },
    };
    let instance = match (&cli.instance, explicit) {
        (Some(name), _) => Some(find(name)?),
        // An instance registered on the asked-for port lends its token.
        (None, Some(port)) => live().into_iter().find(|instance| instance.port == Some(port)),
        (None, None) => the_only_one()?,
    };
    let port = match (explicit, &instance) {
        (Some(port), _) => port,
        (None, Some(instance)) => instance
            .port
            .ok_or_else(|| CtlError::Usage(format!("instance `{}` has no host port (uhyve has no network forward)", instance.name)))?,
        (None, None) => crate::cli::DEFAULT_PORT,
    };
    if let Some(token) = cli.token.clone().filter(|token| !token.is_empty()) {
        let source =
            if std::env::var("RTEDGE_TOKEN").is_ok_and(|value| value == token) { "from RTEDGE_TOKEN" } else { "given with --token" };
        return Ok(Target { port, token: Some(token), token_source: source.into() });
    }
    if let Some(instance) = &instance
        && let (Some(token), Some(path)) = (instance.token(), &instance.token_path)
    {
        return Ok(Target { port, token: Some(token), token_source: format!("in {}", path.display()) });
    }
    let (token, source) = match crate::token::discover_with_path() {
        Some((token, path)) => (Some(token), format!("in {}", path.display())),
        None => (None, String::new()),
    };
    Ok(Target { port, token, token_source: source })
}

/// `rtctl ps`.
pub fn ps(json: bool, out: &mut dyn Write) -> Result<()> {
    let live = live();
    if json {
        let list: Vec<Json> = live.iter().map(Instance::to_json).collect();
        let text =
            serde_json::to_string_pretty(&Json::Array(list)).map_err(|error| CtlError::Local(format!("cannot format JSON: {error}")))?;
        writeln!(out, "{text}")?;
        return Ok(());
    }
    if live.is_empty() {
        writeln!(out, "no instance is running (`make start` or `rtedge-image run appliance --detach` starts one)")?;
        return Ok(());
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or_default();
    use crate::format::Align;
    let rows: Vec<Vec<String>> = live
        .iter()
        .map(|instance| {
            vec![
                instance.name.clone(),
                instance.hypervisor.clone(),
                instance.pid.to_string(),
                instance.port.map_or_else(|| "-".into(), |port| port.to_string()),
                crate::format::uptime(i64::try_from(now.saturating_sub(instance.started)).unwrap_or(i64::MAX)),
                instance.console_log.as_ref().map_or_else(|| "(terminal)".into(), |path| path.display().to_string()),
            ]
        })
        .collect();
    let header = [
        ("NAME", Align::Left),
        ("HYPERVISOR", Align::Left),
        ("PID", Align::Right),
        ("PORT", Align::Right),
        ("UP", Align::Right),
        ("CONSOLE", Align::Left),
    ];
    write!(out, "{}", crate::format::table(&header, &rows))?;
    Ok(())
}

/// How long `stop` waits for the guest to shut down before killing it.
pub const DEFAULT_STOP_TIMEOUT_S: u64 = 30;

/// `rtctl stop`: `SHUTDOWN` over the control plane, then SIGTERM and
/// SIGKILL once `bound` has passed without the process ending.
pub fn stop(names: &[String], all: bool, bound: Duration, timeout: Duration, out: &mut dyn Write) -> Result<()> {
    let targets: Vec<Instance> = if all {
        live()
    } else {
        if names.is_empty() {
            return Err(CtlError::Usage("name the instances to stop, or pass --all".into()));
        }
        names.iter().map(|name| find(name)).collect::<Result<_>>()?
    };
    if all && targets.is_empty() {
        writeln!(out, "no instance is running")?;
        return Ok(());
    }
    for instance in targets {
        let how = stop_one(&instance, bound, timeout);
        if let Some(directory) = directory() {
            let _ = std::fs::remove_file(directory.join(format!("{}.json", instance.name)));
        }
        writeln!(out, "stopped {} ({how})", instance.name)?;
    }
    Ok(())
}

fn stop_one(instance: &Instance, bound: Duration, timeout: Duration) -> String {
    let mut asked = false;
    if let Some(port) = instance.port {
        let options = Options { host: "127.0.0.1".into(), port, token: instance.token(), timeout };
        if let Ok(mut client) = Client::connect(&options) {
            // The reply may not arrive before the guest is gone.
            asked = client.send(&["SHUTDOWN"]).is_ok();
            let _ = client.poll_value(Duration::from_millis(500));
        }
    }
    if asked && wait_for_exit(instance, bound) {
        return "orderly SHUTDOWN".into();
    }
    signal(instance.pid, libc::SIGTERM);
    if wait_for_exit(instance, Duration::from_secs(3)) {
        return if asked { "SHUTDOWN timed out; SIGTERM".into() } else { "SIGTERM".into() };
    }
    signal(instance.pid, libc::SIGKILL);
    let _ = wait_for_exit(instance, Duration::from_secs(3));
    "SIGKILL".into()
}

fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid was
        // checked to be the registered hypervisor just before.
        unsafe { libc::kill(pid, signal) };
    }
}

fn wait_for_exit(instance: &Instance, bound: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < bound {
        if !instance.is_alive() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !instance.is_alive()
}

/// `rtctl console NAME`: the console log, then what is appended while the
/// instance runs (unless `follow` is off).
pub fn console(name: &str, follow: bool, out: &mut dyn Write) -> Result<()> {
    let instance = find(name)?;
    let Some(path) = instance.console_log.clone() else {
        return Err(CtlError::Usage(format!("`{name}` runs in the foreground: its console is the terminal that started it")));
    };
    let mut file = std::fs::File::open(&path).map_err(|error| CtlError::Local(format!("cannot read {}: {error}", path.display())))?;
    let mut buffer = [0u8; 8192];
    loop {
        let read = file.read(&mut buffer).map_err(|error| CtlError::Local(format!("cannot read {}: {error}", path.display())))?;
        if read > 0 {
            out.write_all(&buffer[..read])?;
            continue;
        }
        out.flush()?;
        if !follow || !instance.is_alive() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
        // A truncated log (a new instance of the same name) starts over.
        let position = file.stream_position().unwrap_or_default();
        if std::fs::metadata(&path).is_ok_and(|meta| meta.len() < position) {
            let _ = file.seek(SeekFrom::Start(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_dead_processes_are_removed() {
        let directory = std::env::temp_dir().join(format!("rtctl-instances-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).expect("test setup");
        let me = std::process::id();
        let entry = |name: &str, pid: u32, program: &str| {
            let value = json!({"name": name, "pid": pid, "port": 6380, "program": program, "hypervisor": "qemu-microvm"});
            std::fs::write(directory.join(format!("{name}.json")), value.to_string()).expect("test setup");
        };
        entry("mine", me, "");
        entry("reused", me, "surely-not-this-program");
        entry("gone", u32::MAX - 1, "");
        let live = live_in(&directory);
        assert_eq!(live.iter().map(|instance| instance.name.as_str()).collect::<Vec<_>>(), ["mine"]);
        assert!(!directory.join("reused.json").exists());
        assert!(!directory.join("gone.json").exists());
        let _ = std::fs::remove_dir_all(&directory);
    }
}
