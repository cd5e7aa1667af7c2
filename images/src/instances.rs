//! The instance registry: one JSON file per running appliance under
//! `target/rtedge/instances/` (or `$RTEDGE_INSTANCES`), written when `run`
//! starts a hypervisor and removed when it ends, so `rtctl ps`, `rtctl stop`
//! and `rtctl console` find what runs without being told a port or a pid.
//! Also: whether a host port is free before a boot claims it.
//!
//! Invariant: an entry whose process is gone (or whose pid now belongs to
//! another program) is stale; readers treat it as absent and remove it.
//! `rtctl` reads the same files (`net/ctl/src/instances.rs`); the field
//! names below are the format both sides agree on.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Environment variable that moves the registry (the e2e test uses its own).
pub const DIRECTORY_VARIABLE: &str = "RTEDGE_INSTANCES";

/// One running (or starting) appliance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    pub profile: String,
    pub hypervisor: String,
    /// The hypervisor process.
    pub pid: u32,
    /// Host port forwarded to the control plane, if any (none under uhyve).
    pub port: Option<u16>,
    pub guest_port: Option<u16>,
    /// The file holding the control-plane token (dev images), if any.
    pub token_path: Option<PathBuf>,
    /// The console log (detached instances); `None` when the console is a terminal.
    pub console_log: Option<PathBuf>,
    /// The program's file name, to tell our process from a reused pid.
    pub program: String,
    /// Seconds since the Unix epoch.
    pub started: u64,
    pub detached: bool,
}

impl Instance {
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "profile": self.profile,
            "hypervisor": self.hypervisor,
            "pid": self.pid,
            "port": self.port,
            "guest_port": self.guest_port,
            "token_path": self.token_path.as_ref().map(|path| path.display().to_string()),
            "console_log": self.console_log.as_ref().map(|path| path.display().to_string()),
            "program": self.program,
            "started": self.started,
            "detached": self.detached,
        })
    }

    pub fn from_json(value: &Value) -> Option<Instance> {
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
        let port = |key: &str| value.get(key).and_then(Value::as_u64).and_then(|port| u16::try_from(port).ok());
        Some(Instance {
            name: text("name")?,
            profile: text("profile").unwrap_or_default(),
            hypervisor: text("hypervisor").unwrap_or_default(),
            pid: value.get("pid").and_then(Value::as_u64).and_then(|pid| u32::try_from(pid).ok())?,
            port: port("port"),
            guest_port: port("guest_port"),
            token_path: text("token_path").map(PathBuf::from),
            console_log: text("console_log").map(PathBuf::from),
            program: text("program").unwrap_or_default(),
            started: value.get("started").and_then(Value::as_u64).unwrap_or_default(),
            detached: value.get("detached").and_then(Value::as_bool).unwrap_or_default(),
        })
    }

    /// Whether the process still runs and is still the hypervisor we started.
    pub fn is_alive(&self) -> bool {
        process_is(self.pid, &self.program)
    }
}

/// Whether `pid` is a live (not zombie) process whose command is `program`.
pub fn process_is(pid: u32, program: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z" | "X") | None) {
        return false;
    }
    if program.is_empty() {
        return true;
    }
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let first = cmdline.split(|byte| *byte == 0).next().unwrap_or_default();
        Path::new(&*String::from_utf8_lossy(first)).file_name().is_some_and(|name| name == program)
    })
}

/// The registry directory: `$RTEDGE_INSTANCES`, else `<output>/instances`.
pub struct Registry {
    pub directory: PathBuf,
}

impl Registry {
    pub fn new(output_dir: &Path) -> Registry {
        let directory = std::env::var_os(DIRECTORY_VARIABLE)
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| output_dir.join("instances"));
        Registry { directory }
    }

    pub fn entry_path(&self, name: &str) -> PathBuf {
        self.directory.join(format!("{name}.json"))
    }

    pub fn console_path(&self, name: &str) -> PathBuf {
        self.directory.join(format!("{name}.console"))
    }

    /// The live instances, sorted by name; stale entries are removed.
    pub fn live(&self) -> Vec<Instance> {
        let Ok(entries) = std::fs::read_dir(&self.directory) else {
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
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                .and_then(|value| Instance::from_json(&value));
            match instance {
                Some(instance) if instance.is_alive() => live.push(instance),
                Some(instance) => self.remove(&instance.name),
                // A half-written file of a starting instance: leave it.
                None => {}
            }
        }
        live.sort_by(|left, right| left.name.cmp(&right.name));
        live
    }

    /// Writes the entry (atomically: a temporary file renamed over it).
    pub fn write(&self, instance: &Instance) -> Result<()> {
        std::fs::create_dir_all(&self.directory).with_context(|| format!("cannot create {}", self.directory.display()))?;
        let path = self.entry_path(&instance.name);
        let temporary = self.directory.join(format!(".{}.json.{}", instance.name, std::process::id()));
        let text = serde_json::to_string_pretty(&instance.to_json())?;
        std::fs::write(&temporary, format!("{text}\n")).with_context(|| format!("cannot write {}", temporary.display()))?;
        std::fs::rename(&temporary, &path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Removes the entry (the console log stays for reading after the fact).
    pub fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.entry_path(name));
    }

    /// `wanted` if given (an error when a live instance has it), else
    /// `base`, `base-2`, `base-3`, ... whichever is free first.
    pub fn free_name(&self, base: &str, wanted: Option<&str>) -> Result<String> {
        let live = self.live();
        let taken = |name: &str| live.iter().any(|instance| instance.name == name);
        if let Some(name) = wanted {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                bail!("instance name {name:?}: use letters, digits, '-' and '_'");
            }
            if let Some(instance) = live.iter().find(|instance| instance.name == name) {
                bail!(
                    "an instance named `{name}` is already running ({}, pid {}); stop it with `rtctl stop {name}` or pick another --name",
                    instance.hypervisor,
                    instance.pid
                );
            }
            return Ok(name.to_string());
        }
        (1..1000)
            .map(|index| if index == 1 { base.to_string() } else { format!("{base}-{index}") })
            .find(|name| !taken(name))
            .context("no free instance name")
    }
}

/// Whether 127.0.0.1:`port` can be listened on now.
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Who holds a busy port, in words.
pub fn port_holder(registry: &Registry, port: u16) -> String {
    match registry.live().into_iter().find(|instance| instance.port == Some(port)) {
        Some(instance) => {
            format!("instance `{}` ({}, pid {}; `rtctl stop {}` ends it)", instance.name, instance.hypervisor, instance.pid, instance.name)
        }
        None => "another program".to_string(),
    }
}

/// How many ports above the default are tried for a free one.
const PORT_SEARCH: u16 = 100;

/// The host port to forward: `requested` must be free (a clear error
/// otherwise); without one, `default` or the next free port above it.
/// Returns the port and whether it differs from what the user expects.
pub fn choose_port(registry: &Registry, requested: Option<u16>, default: u16) -> Result<u16> {
    if let Some(port) = requested {
        if !port_is_free(port) {
            bail!(
                "host port {port} is already in use by {}; pick another with --port or RTEDGE_PORT, \
                 or leave both unset to take the next free port",
                port_holder(registry, port)
            );
        }
        return Ok(port);
    }
    let registered: Vec<u16> = registry.live().iter().filter_map(|instance| instance.port).collect();
    (default..=default.saturating_add(PORT_SEARCH))
        .find(|port| !registered.contains(port) && port_is_free(*port))
        .with_context(|| format!("no free host port in {default}..={}", default.saturating_add(PORT_SEARCH)))
}

pub fn now_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pid: u32, program: &str) -> Instance {
        Instance {
            name: "appliance".into(),
            profile: "appliance".into(),
            hypervisor: "qemu-microvm".into(),
            pid,
            port: Some(6380),
            guest_port: Some(6379),
            token_path: Some(PathBuf::from("/r/target/rtedge/dev.token")),
            console_log: Some(PathBuf::from("/r/target/rtedge/instances/appliance.console")),
            program: program.into(),
            started: 1,
            detached: true,
        }
    }

    fn scratch(tag: &str) -> Registry {
        let directory = std::env::temp_dir().join(format!("rtedge-instances-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        Registry { directory }
    }

    #[test]
    fn an_entry_round_trips_through_json() {
        let instance = sample(7, "qemu-system-x86_64");
        assert_eq!(Instance::from_json(&instance.to_json()), Some(instance));
    }

    #[test]
    fn a_live_entry_is_listed_and_a_dead_one_is_removed() {
        let registry = scratch("live");
        let me = std::process::id();
        let program = std::fs::read(format!("/proc/{me}/cmdline"))
            .ok()
            .and_then(|cmdline| {
                let first = cmdline.split(|byte| *byte == 0).next()?.to_vec();
                Path::new(&*String::from_utf8_lossy(&first)).file_name().map(|name| name.to_string_lossy().into_owned())
            })
            .unwrap_or_default();
        registry.write(&sample(me, &program)).expect("test setup");
        let mut impostor = sample(me, "not-this-program");
        impostor.name = "impostor".into();
        registry.write(&impostor).expect("test setup");
        let live = registry.live();
        assert_eq!(live.len(), 1, "{live:?}");
        assert_eq!(live[0].name, "appliance");
        assert!(!registry.entry_path("impostor").exists(), "a reused pid is stale");
        assert_eq!(registry.free_name("appliance", None).expect("test setup"), "appliance-2");
        assert!(registry.free_name("appliance", Some("appliance")).is_err());
        assert!(registry.free_name("appliance", Some("a/b")).is_err());
        let _ = std::fs::remove_dir_all(&registry.directory);
    }

    #[test]
    fn a_busy_port_is_refused_when_asked_for_and_skipped_otherwise() {
        let registry = scratch("ports");
        let holder = TcpListener::bind(("127.0.0.1", 0)).expect("test setup");
        let busy = holder.local_addr().expect("test setup").port();
        let error = choose_port(&registry, Some(busy), 6380).expect_err("an error").to_string();
        assert!(error.contains(&format!("host port {busy} is already in use by another program")), "{error}");
        let chosen = choose_port(&registry, None, busy).expect("test setup");
        assert_ne!(chosen, busy);
        assert!(chosen > busy);
    }
}
