//! The runner's side of the instance registry (`rtedge-instances` holds
//! the record and the directory, shared with `rtctl`): where this runner's
//! registry is, instance names, and whether a host port is free before a
//! boot claims it.

use std::net::TcpListener;
use std::path::Path;

use anyhow::{Context, Result, bail};
pub use rtedge_instances::{Instance, Registry};

/// The registry directory: `$RTEDGE_INSTANCES`, else `<output>/instances`.
pub fn registry(output_dir: &Path) -> Registry {
    Registry::from_env_or(output_dir.join("instances"))
}

/// Writes `instance`'s entry (atomically).
pub fn write(registry: &Registry, instance: &Instance) -> Result<()> {
    registry.write(instance).context("cannot register the instance")
}

/// `wanted` if given (an error when a live instance has it), else
/// `base`, `base-2`, `base-3`, ... whichever is free first.
pub fn free_name(registry: &Registry, base: &str, wanted: Option<&str>) -> Result<String> {
    let live = registry.live();
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
    use std::path::PathBuf;

    use super::*;

    fn sample(name: &str) -> Instance {
        let me = std::process::id();
        Instance {
            name: name.into(),
            profile: "appliance".into(),
            hypervisor: "qemu-microvm".into(),
            pid: me,
            port: Some(6380),
            guest_port: Some(6379),
            token_path: None,
            console_log: None,
            // Any live process: this test's own pid, whatever its program.
            program: String::new(),
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
    fn a_free_name_skips_live_ones_and_a_wanted_one_must_be_free_and_plain() {
        let registry = scratch("names");
        write(&registry, &sample("appliance")).expect("test setup");
        assert_eq!(free_name(&registry, "appliance", None).expect("test setup"), "appliance-2");
        assert_eq!(free_name(&registry, "other", None).expect("test setup"), "other");
        let error = free_name(&registry, "appliance", Some("appliance")).expect_err("an error").to_string();
        assert!(error.contains("already running"), "{error}");
        assert!(free_name(&registry, "appliance", Some("a/b")).is_err());
        assert!(free_name(&registry, "appliance", Some("")).is_err());
        let _ = std::fs::remove_dir_all(&registry.directory);
    }

    #[test]
    fn the_registry_is_under_the_output_directory_unless_moved() {
        if std::env::var_os(rtedge_instances::DIRECTORY_VARIABLE).is_none() {
            assert_eq!(registry(Path::new("/r/target/rtedge")).directory, PathBuf::from("/r/target/rtedge/instances"));
        }
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
