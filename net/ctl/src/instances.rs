//! The instances `rtedge-image run` registered (one JSON file each under
//! `target/rtedge/instances/`, or `$RTEDGE_INSTANCES`; the writer is
//! the record is `rtedge-instances`, shared with it): `rtctl ps`,
//! `rtctl stop`, `rtctl console`, and picking the only running instance
//! when no port is given.
//!
//! Invariant: an entry whose process is gone, or whose pid now runs another
//! program, is stale: it is treated as absent and removed.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use rtedge_instances::Instance;
use rtedge_instances::{DEFAULT_DIRECTORY, DIRECTORY_VARIABLE, Registry};
use serde_json::Value as Json;

use crate::client::{Client, Options};
use crate::error::{CtlError, Result};

/// The registry directory: `$RTEDGE_INSTANCES`, else
/// `target/rtedge/instances` in the nearest ancestor of the current
/// directory (then of the executable) that has a `target/rtedge`.
pub fn directory() -> Option<PathBuf> {
    if let Some(directory) = std::env::var_os(DIRECTORY_VARIABLE).filter(|value| !value.is_empty()) {
        return Some(PathBuf::from(directory));
    }
    let current = std::env::current_dir().ok();
    let executable = std::env::current_exe().ok().and_then(|path| path.parent().map(Path::to_path_buf));
    current.iter().chain(executable.iter()).find_map(|start| {
        start.ancestors().map(|ancestor| ancestor.join(DEFAULT_DIRECTORY)).find(|path| path.parent().is_some_and(Path::is_dir))
    })
}

/// The live instances, sorted by name (stale entries are removed).
pub fn live() -> Vec<Instance> {
    directory().map(|directory| live_in(&directory)).unwrap_or_default()
}

/// The live instances registered in `directory`.
pub fn live_in(directory: &Path) -> Vec<Instance> {
    Registry { directory: directory.to_path_buf() }.live()
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
    use serde_json::json;

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
