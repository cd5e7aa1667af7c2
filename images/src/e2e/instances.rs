//! Detached instances end to end, as an operator uses them: two
//! `rtedge-image run appliance --detach` (the next free host port each),
//! `rtctl ps` lists both, a busy port is refused before boot, rtctl talks to
//! each by name, `rtctl stop` ends both in order (SHUTDOWN over the control
//! plane), and the registry is clean afterwards. It runs this runner's own
//! executable and the real `rtctl`, with a registry of its own
//! (`RTEDGE_INSTANCES`) so a developer's `make start` instances are not
//! touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use super::{Plan, Report};
use crate::hypervisor::Hypervisor;

/// The scenario's name (for `--only` and `--list`).
pub const NAME: &str = "instances: start two detached, rtctl ps lists both, a busy port is refused, stop both, registry clean";

const NAMES: [&str; 2] = ["e2e-instance-one", "e2e-instance-two"];
/// A detached start returns once the control plane is up; under TCG on a
/// loaded host that can take a while.
const START_LIMIT: Duration = Duration::from_secs(400);
const RTCTL_LIMIT: Duration = Duration::from_secs(120);

/// Runs the scenario on `hypervisor` and records the verdict in `report`.
pub fn record(plan: &Plan<'_>, hypervisor: Hypervisor, report: &mut Report) {
    let registry = plan.scratch.join("instances");
    let started = Instant::now();
    let result = scenario(plan, hypervisor, &registry);
    // Whatever happened: nothing of ours keeps running.
    let _ = rtctl(&plan.host.rtctl, &registry, &["stop", "--all", "--timeout-s", "10"]);
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(()) => {
            println!("e2e: [{hypervisor}] {NAME} ... ok ({seconds:.1} s)");
            report.passed += 1;
        }
        Err(error) => {
            println!("e2e: [{hypervisor}] {NAME} ... FAILED ({seconds:.1} s): {error:#}");
            report.failed.push(format!("{NAME} on {hypervisor}: {error:#}"));
        }
    }
}

fn scenario(plan: &Plan<'_>, hypervisor: Hypervisor, registry: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(registry);
    let runner = std::env::current_exe().context("this runner's executable")?;
    for name in NAMES {
        let (code, output) = start(&runner, registry, hypervisor, name, None)?;
        ensure!(code == 0, "`run --detach --name {name}` exited {code}:\n{output}");
        ensure!(output.contains(&format!("`{name}` is up")), "no `is up` line:\n{output}");
    }

    let (code, out, err) = rtctl(&plan.host.rtctl, registry, &["--json", "ps"])?;
    ensure!(code == 0, "rtctl ps exited {code}: {err}");
    let listed: Value = serde_json::from_str(&out).with_context(|| format!("rtctl --json ps: {out}"))?;
    let listed = listed.as_array().context("rtctl --json ps is no array")?;
    let names: Vec<&str> = listed.iter().filter_map(|entry| entry["name"].as_str()).collect();
    ensure!(names == NAMES, "rtctl ps lists {names:?}");
    let ports: Vec<u16> = listed.iter().filter_map(|entry| entry["port"].as_u64().and_then(|port| u16::try_from(port).ok())).collect();
    ensure!(ports.len() == 2 && ports[0] != ports[1], "two distinct host ports expected: {ports:?}");
    println!("e2e-figure: [{hypervisor}] instance ports: {ports:?}");

    // The plain table shows both too.
    let (_, table, _) = rtctl(&plan.host.rtctl, registry, &["ps"])?;
    for name in NAMES {
        ensure!(table.lines().any(|line| line.starts_with(name)), "rtctl ps table lacks {name}:\n{table}");
    }

    // A busy port is refused before any boot, naming its holder.
    let (code, output) = start(&runner, registry, hypervisor, "e2e-instance-three", Some(ports[0]))?;
    ensure!(code != 0, "a third instance on busy port {} started:\n{output}", ports[0]);
    let expected = format!("host port {} is already in use by instance `{}`", ports[0], NAMES[0]);
    ensure!(output.contains(&expected), "expected {expected:?} in:\n{output}");
    ensure!(!output.contains("booting"), "it booted before finding the port busy:\n{output}");

    // Two instances: rtctl will not guess; by name it reaches each one.
    let (code, _, err) = rtctl(&plan.host.rtctl, registry, &["ping"])?;
    ensure!(code == 2 && err.contains("2 instances are running"), "rtctl without a port: exit {code}, {err}");
    for name in NAMES {
        let (code, out, err) = rtctl(&plan.host.rtctl, registry, &["--instance", name, "status"])?;
        ensure!(code == 0 && out.contains("uptime"), "rtctl --instance {name} status: exit {code}: {out}{err}");
    }

    let mut stop_args = vec!["stop", "--timeout-s", "60"];
    stop_args.extend(NAMES);
    let (code, out, err) = rtctl(&plan.host.rtctl, registry, &stop_args)?;
    ensure!(code == 0, "rtctl stop exited {code}: {out}{err}");
    for name in NAMES {
        ensure!(out.contains(&format!("stopped {name} (orderly SHUTDOWN)")), "{name} not stopped in order: {out}");
        let console = std::fs::read_to_string(registry.join(format!("{name}.console"))).unwrap_or_default();
        ensure!(
            console.contains("rtedge: shutdown code=0"),
            "{name}'s console has no shutdown line:\n{}",
            super::guest::tail(&console, 10)
        );
    }
    let (_, out, _) = rtctl(&plan.host.rtctl, registry, &["--json", "ps"])?;
    ensure!(out.trim() == "[]", "rtctl ps after stop: {out}");
    let left: Vec<PathBuf> = std::fs::read_dir(registry)?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "json"))
        .collect();
    ensure!(left.is_empty(), "registry entries left: {left:?}");
    Ok(())
}

/// `rtedge-image run appliance --detach`: (exit code, stdout and stderr).
fn start(runner: &Path, registry: &Path, hypervisor: Hypervisor, name: &str, port: Option<u16>) -> Result<(i32, String)> {
    let mut command = Command::new(runner);
    command.args(["run", "appliance", "--detach", "--hv", hypervisor.name(), "--name", name]);
    if let Some(port) = port {
        command.args(["--port", &port.to_string()]);
    }
    command.env("RTEDGE_INSTANCES", registry).env_remove("RTEDGE_PORT");
    let (code, out, err) = output(command, START_LIMIT)?;
    Ok((code, format!("{out}{err}")))
}

fn rtctl(rtctl: &Path, registry: &Path, args: &[&str]) -> Result<(i32, String, String)> {
    let mut command = Command::new(rtctl);
    command.args(args).env("RTEDGE_INSTANCES", registry).env_remove("RTEDGE_PORT").env_remove("RTEDGE_TOKEN");
    output(command, RTCTL_LIMIT)
}

/// Runs `command` to its end within `limit`, in a process group of its own
/// (killed at the limit). Output goes through files: no pipe can fill.
fn output(mut command: Command, limit: Duration) -> Result<(i32, String, String)> {
    use std::os::unix::process::CommandExt;
    let description = format!("{command:?}");
    let scratch = std::env::temp_dir().join(format!("rtedge-e2e-instances-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let (out_path, err_path) = (scratch.join("stdout"), scratch.join("stderr"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {description}"))?;
    let status = crate::vm::wait_or_kill(&mut child, limit).with_context(|| description.clone())?;
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&scratch);
    Ok((status.code().unwrap_or(-1), out, err))
}
