//! The instance registry: one JSON file per running appliance under
//! `target/rtedge/instances/` (or `$RTEDGE_INSTANCES`), written by
//! `rtedge-image run` when it starts a hypervisor and removed when it ends,
//! read by `rtctl ps`, `rtctl stop` and `rtctl console` to find what runs
//! without being told a port or a pid. This crate is the one definition of
//! the record and its file format that both sides use.
//!
//! Invariant: an entry whose process is gone (or whose pid now belongs to
//! another program) is stale; readers treat it as absent and remove it.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Environment variable that moves the registry (the e2e test uses its own).
pub const DIRECTORY_VARIABLE: &str = "RTEDGE_INSTANCES";

/// The registry, relative to a repository root.
pub const DEFAULT_DIRECTORY: &str = "target/rtedge/instances";

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

    /// The record, if `value` has at least a name and a pid; other fields
    /// default (an entry written by an older runner still reads).
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

    /// The token in its token file, if it has one.
    pub fn token(&self) -> Option<String> {
        let path = self.token_path.as_ref()?;
        let text = std::fs::read_to_string(path).ok()?;
        Some(text.trim().to_owned()).filter(|token| !token.is_empty())
    }
}

/// Whether `pid` is a live (not zombie) process whose command is `program`
/// (any command when `program` is empty).
pub fn process_is(pid: u32, program: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
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

/// `error`, with the file it concerns in its text.
fn named(path: &Path, error: std::io::Error) -> std::io::Error {
    std::io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// One registry directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    pub directory: PathBuf,
}

impl Registry {
    /// `$RTEDGE_INSTANCES` if set and not empty, else `fallback`.
    pub fn from_env_or(fallback: PathBuf) -> Registry {
        let directory = std::env::var_os(DIRECTORY_VARIABLE).filter(|dir| !dir.is_empty()).map(PathBuf::from).unwrap_or(fallback);
        Registry { directory }
    }

    pub fn entry_path(&self, name: &str) -> PathBuf {
        self.directory.join(format!("{name}.json"))
    }

    pub fn console_path(&self, name: &str) -> PathBuf {
        self.directory.join(format!("{name}.console"))
    }

    /// The live instances, sorted by name; stale entries are removed. A
    /// file that does not parse (a starting instance's, half written) is
    /// left alone.
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
                Some(_) => {
                    let _ = std::fs::remove_file(&path);
                }
                None => {}
            }
        }
        live.sort_by(|left, right| left.name.cmp(&right.name));
        live
    }

    /// Writes the entry atomically (a temporary file renamed over it), so a
    /// reader never sees half of it. Errors name the file.
    pub fn write(&self, instance: &Instance) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.directory).map_err(|error| named(&self.directory, error))?;
        let path = self.entry_path(&instance.name);
        let temporary = self.directory.join(format!(".{}.json.{}", instance.name, std::process::id()));
        let text = serde_json::to_string_pretty(&instance.to_json()).map_err(std::io::Error::other)?;
        std::fs::write(&temporary, format!("{text}\n")).map_err(|error| named(&temporary, error))?;
        std::fs::rename(&temporary, &path).map_err(|error| named(&path, error))
    }

    /// Removes the entry (the console log stays for reading after the fact).
    pub fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.entry_path(name));
    }
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
        let directory = std::env::temp_dir().join(format!("rtedge-instances-lib-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        Registry { directory }
    }

    fn my_program() -> String {
        let me = std::process::id();
        std::fs::read(format!("/proc/{me}/cmdline"))
            .ok()
            .and_then(|cmdline| {
                let first = cmdline.split(|byte| *byte == 0).next()?.to_vec();
                Path::new(&*String::from_utf8_lossy(&first)).file_name().map(|name| name.to_string_lossy().into_owned())
            })
            .unwrap_or_default()
    }

    #[test]
    fn an_entry_round_trips_through_json() {
        let instance = sample(7, "qemu-system-x86_64");
        assert_eq!(Instance::from_json(&instance.to_json()), Some(instance));
    }

    #[test]
    fn an_entry_without_name_or_pid_is_not_one() {
        assert_eq!(Instance::from_json(&json!({"name": "a"})), None);
        assert_eq!(Instance::from_json(&json!({"pid": 1})), None);
        let old = Instance::from_json(&json!({"name": "a", "pid": 1})).expect("an entry");
        assert_eq!((old.port, old.detached, old.program.as_str()), (None, false, ""));
    }

    #[test]
    fn a_live_entry_is_listed_a_reused_pid_is_removed_and_a_torn_file_kept() {
        let registry = scratch("live");
        let me = std::process::id();
        registry.write(&sample(me, &my_program())).expect("test setup");
        let mut impostor = sample(me, "not-this-program");
        impostor.name = "impostor".into();
        registry.write(&impostor).expect("test setup");
        std::fs::write(registry.entry_path("starting"), "{\"name\": \"sta").expect("test setup");
        let live = registry.live();
        assert_eq!(live.iter().map(|instance| instance.name.as_str()).collect::<Vec<_>>(), ["appliance"]);
        assert!(!registry.entry_path("impostor").exists(), "a reused pid is stale");
        assert!(registry.entry_path("starting").exists(), "a half-written entry is left alone");
        registry.remove("appliance");
        assert!(registry.live().is_empty());
        let _ = std::fs::remove_dir_all(&registry.directory);
    }

    #[test]
    fn a_write_error_names_the_file() {
        let registry = Registry { directory: PathBuf::from("/proc/rtedge-no-such/instances") };
        let error = registry.write(&sample(1, "")).expect_err("an error").to_string();
        assert!(error.contains("/proc/rtedge-no-such/instances"), "{error}");
    }
}
