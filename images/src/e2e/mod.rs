//! `rtedge-image e2e`: boots the appliance and drives it from the host the
//! way users do — the real `redis-cli`, `redis-benchmark` and `rtctl`, plus
//! a raw RESP client for what those cannot send — and checks the replies
//! and the console. QEMU `microvm` and `q35` run under TCG with a forwarded
//! loopback port; uhyve runs inside a network namespace of its own with a
//! tap device (it needs root and KVM; without them it is reported as
//! skipped, with the reason).
//!
//! Scenarios share one boot per hypervisor (a fresh boot for the
//! destructive ones). Nothing here judges wall time: figures (rates, round
//! trips) are printed as `e2e-figure:` lines.

pub mod control;
pub mod disk;
pub mod docs;
pub mod fleet;
pub mod guest;
pub mod hostile;
pub mod instances;
pub mod isolation;
pub mod logs;
pub mod metrics;
pub mod names;
pub mod programs;
pub mod resp;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::hypervisor::{Hypervisor, Tools};
use guest::{Guest, GuestSpec, Namespace, Target};

/// Which hypervisors a scenario runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Where {
    /// Every hypervisor under test.
    Everywhere,
    /// QEMU only (console input, or too slow under uhyve's emulation).
    Qemu,
    /// The first QEMU machine only (microvm by default): the scenario is
    /// about the application, not the platform.
    Reference,
}

pub struct Scenario {
    pub name: &'static str,
    pub run: fn(&mut Ctx<'_>) -> Result<()>,
    pub on: Where,
}

/// Host programs the scenarios drive.
pub struct HostTools {
    pub redis_cli: PathBuf,
    pub redis_benchmark: PathBuf,
    pub rtctl: PathBuf,
}

impl HostTools {
    pub fn find(rtctl: PathBuf) -> Result<HostTools> {
        let find = |name: &str| -> Result<PathBuf> {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
                .with_context(|| format!("{name} not found in PATH (package redis-tools); run `make deps`"))
        };
        Ok(HostTools { redis_cli: find("redis-cli")?, redis_benchmark: find("redis-benchmark")?, rtctl })
    }
}

/// What a scenario gets: the booted guest and the means to drive it.
pub struct Ctx<'a> {
    pub guest: &'a mut Guest,
    pub token: String,
    pub tools: &'a HostTools,
    pub scratch: PathBuf,
    pub figures: Vec<(String, String)>,
}

/// How long one host tool may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

impl Ctx<'_> {
    pub fn target(&self) -> Target {
        self.guest.target.clone()
    }

    /// Records a measured figure (printed after the scenario).
    pub fn figure(&mut self, what: &str, value: String) {
        self.figures.push((what.to_string(), value));
    }

    fn run(&self, mut command: Command, stdin: Option<&[u8]>, until: Option<(&str, Duration)>) -> Result<(i32, String, String)> {
        use std::os::unix::process::CommandExt;
        let description = format!("{command:?}");
        let mut child = command
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {description}"))?;
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(bytes)?;
        }
        let mut stdout = child.stdout.take().context("stdout")?;
        let mut stderr = child.stderr.take().context("stderr")?;
        let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
        let seen_by_reader = Arc::clone(&seen);
        let out_reader = std::thread::spawn(move || {
            let mut collected = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match stdout.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => {
                        collected.extend_from_slice(&chunk[..read]);
                        if let Ok(mut seen) = seen_by_reader.lock() {
                            seen.extend_from_slice(&chunk[..read]);
                        }
                    }
                }
            }
            collected
        });
        let err_reader = std::thread::spawn(move || {
            let mut collected = Vec::new();
            let _ = stderr.read_to_end(&mut collected);
            collected
        });
        let (needle, limit) = match until {
            Some((needle, limit)) => (Some(needle), limit),
            None => (None, TOOL_TIMEOUT),
        };
        let deadline = Instant::now() + limit;
        let mut found = false;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if let Some(needle) = needle
                && seen.lock().is_ok_and(|out| String::from_utf8_lossy(&out).contains(needle))
            {
                found = true;
            }
            if found || Instant::now() >= deadline {
                if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                    // SAFETY: kill(2) on the process group created for this child.
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                }
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
        let err = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
        match status {
            Some(status) => Ok((status.code().unwrap_or(-1), out, err)),
            None if found => Ok((0, out, err)),
            None if needle.is_some() => {
                bail!("`{}` not seen within {limit:?} from {description}; got {out:?} {err:?}", needle.unwrap_or_default())
            }
            None => bail!("{description} did not finish within {limit:?}; got {out:?} {err:?}"),
        }
    }

    fn redis_command(&self, program: &Path, token: Option<&str>) -> Command {
        let target = self.target();
        let mut command = target.command(program);
        command.args(["-h", target.host(), "-p", &target.port().to_string()]);
        if let Some(token) = token {
            command.args(["-a", token]);
            if program == self.tools.redis_cli {
                command.arg("--no-auth-warning");
            }
        }
        command
    }

    /// `redis-cli` with the token; stdout (errors included, as redis-cli
    /// prints them) of a command that must run.
    pub fn redis_cli(&self, args: &[&str]) -> Result<String> {
        let token = self.token.clone();
        self.redis_cli_as(Some(&token), args)
    }

    pub fn redis_cli_as(&self, token: Option<&str>, args: &[&str]) -> Result<String> {
        let mut command = self.redis_command(&self.tools.redis_cli, token);
        command.args(args);
        let (_, out, err) = self.run(command, None, None)?;
        Ok(format!("{out}{err}").trim_end().to_string())
    }

    pub fn redis_cli_stdin(&self, args: &[&str], input: &[u8]) -> Result<String> {
        let mut command = self.redis_command(&self.tools.redis_cli, Some(&self.token));
        command.args(args);
        let (_, out, err) = self.run(command, Some(input), None)?;
        Ok(format!("{out}{err}"))
    }

    /// `redis-cli` left running (SUBSCRIBE) until its output holds `needle`.
    pub fn redis_cli_until(&self, args: &[&str], needle: &str, limit: Duration) -> Result<String> {
        let mut command = self.redis_command(&self.tools.redis_cli, Some(&self.token));
        command.args(args);
        let (_, out, _) = self.run(command, None, Some((needle, limit)))?;
        Ok(out)
    }

    pub fn redis_benchmark(&self, args: &[&str]) -> Result<String> {
        let mut command = self.redis_command(&self.tools.redis_benchmark, Some(&self.token));
        command.args(args);
        let (code, out, err) = self.run(command, None, None)?;
        if code != 0 {
            bail!("redis-benchmark {} exited {code}: {out}{err}", args.join(" "));
        }
        Ok(format!("{out}{err}"))
    }

    /// `rtctl` with the token: (exit code, stdout, stderr).
    pub fn rtctl(&self, args: &[&str]) -> Result<(i32, String, String)> {
        let token = self.token.clone();
        self.rtctl_as(Some(&token), args)
    }

    pub fn rtctl_as(&self, token: Option<&str>, args: &[&str]) -> Result<(i32, String, String)> {
        self.rtctl_full(token, self.target().port(), args)
    }

    pub fn rtctl_at(&self, port: u16, args: &[&str]) -> Result<(i32, String, String)> {
        let token = self.token.clone();
        self.rtctl_full(Some(&token), port, args)
    }

    fn rtctl_full(&self, token: Option<&str>, port: u16, args: &[&str]) -> Result<(i32, String, String)> {
        let target = self.target();
        let mut command = target.command(&self.tools.rtctl);
        command.args(["--host", target.host(), "--port", &port.to_string(), "--timeout-ms", "15000"]);
        match token {
            Some(token) => {
                command.args(["--token", token]);
            }
            None => {
                command.env_remove("RTEDGE_TOKEN");
            }
        }
        command.args(args);
        self.run(command, None, None)
    }

    /// A timer the appliance registers by name (for TIMER commands).
    pub fn named_timer(&self) -> Result<String> {
        Ok(programs::NAMED_TIMER.to_string())
    }

    /// A work queue and item the appliance registers by name.
    pub fn named_work(&self) -> Result<(String, String)> {
        Ok((programs::NAMED_QUEUE.to_string(), programs::NAMED_WORK.to_string()))
    }

    /// A command the application registers (its "system call").
    pub fn app_command(&self) -> &'static str {
        programs::APP_COMMAND
    }
}

/// Everything `run` needs from the runner.
pub struct Plan<'a> {
    pub tools: &'a Tools,
    pub host: HostTools,
    pub image: PathBuf,
    pub cmdline: String,
    pub token: String,
    pub smp: u32,
    pub memory_mib: u32,
    pub guest_port: u16,
    pub hypervisors: Vec<Hypervisor>,
    pub only: Vec<String>,
    pub scratch: PathBuf,
    pub initrd: Option<PathBuf>,
}

/// Per-scenario results.
pub struct Report {
    pub passed: usize,
    pub failed: Vec<String>,
    pub skipped: Vec<String>,
}

fn selected(plan: &Plan<'_>, name: &str) -> bool {
    plan.only.is_empty() || plan.only.iter().any(|filter| name.contains(filter.as_str()))
}

fn applies(scenario: &Scenario, hypervisor: Hypervisor, reference: Hypervisor) -> bool {
    match scenario.on {
        Where::Everywhere => true,
        Where::Qemu => hypervisor.is_qemu(),
        Where::Reference => hypervisor == reference,
    }
}

/// Runs every selected scenario on every hypervisor.
pub fn run(plan: &Plan<'_>) -> Result<Report> {
    let mut report = Report { passed: 0, failed: Vec::new(), skipped: Vec::new() };
    std::fs::create_dir_all(&plan.scratch)?;
    let reference = plan.hypervisors.iter().copied().find(|hv| hv.is_qemu()).unwrap_or(Hypervisor::QemuMicrovm);
    let shared: Vec<&Scenario> = control::SCENARIOS
        .iter()
        .chain(programs::SCENARIOS.iter())
        .chain(hostile::SCENARIOS.iter())
        .chain(isolation::SCENARIOS.iter())
        .chain(names::SCENARIOS.iter())
        .chain(metrics::SCENARIOS.iter())
        .chain(logs::SCENARIOS.iter())
        .chain(docs::SCENARIOS.iter())
        .collect();
    let fresh: Vec<&Scenario> =
        programs::FRESH_BOOT.iter().chain(std::iter::once(&control::SHUTDOWN)).chain(std::iter::once(&docs::TOUR)).collect();
    for &hypervisor in &plan.hypervisors {
        let wanted = |scenario: &&Scenario| applies(scenario, hypervisor, reference) && selected(plan, scenario.name);
        let on_shared: Vec<&Scenario> = shared.iter().copied().filter(wanted).collect();
        let on_fresh: Vec<&Scenario> = fresh.iter().copied().filter(wanted).collect();
        if on_shared.is_empty() && on_fresh.is_empty() {
            continue;
        }
        let namespace = if hypervisor == Hypervisor::Uhyve {
            match uhyve_ready().and_then(|()| Namespace::create()) {
                Ok(namespace) => Some(namespace),
                Err(reason) => {
                    let reason = format!("{reason:#}");
                    println!("e2e: [uhyve] SKIPPED: {reason}");
                    for scenario in on_shared.iter().chain(&on_fresh) {
                        report.skipped.push(format!("{} on uhyve: {reason}", scenario.name));
                    }
                    continue;
                }
            }
        } else if qemu_on_tap() {
            Some(Namespace::create().context("RTEDGE_E2E_NET=tap")?)
        } else {
            None
        };
        let spec = GuestSpec {
            tools: plan.tools,
            hypervisor,
            image: plan.image.clone(),
            cmdline: plan.cmdline.clone(),
            // uhyve on this kind of host (nested KVM that emulates guest
            // instructions, 2 host cores shared with uhyve's own network
            // threads) serves the control plane ~4x faster with one vCPU
            // (43 vs 10 commands/s measured): cross-vCPU wake-ups and lock
            // spins cost host time slices there.
            smp: if hypervisor == Hypervisor::Uhyve { 1 } else { plan.smp },
            memory_mib: plan.memory_mib,
            guest_port: plan.guest_port,
            namespace: namespace.as_ref(),
            initrd: plan.initrd.clone().filter(|_| hypervisor.is_qemu()),
        };
        let mut groups: Vec<Vec<&Scenario>> = Vec::new();
        if !on_shared.is_empty() {
            groups.push(on_shared);
        }
        groups.extend(on_fresh.into_iter().map(|scenario| vec![scenario]));
        for (group_index, group) in groups.into_iter().enumerate() {
            let mut guest = match boot_ready(&spec, &plan.token) {
                Ok(guest) => guest,
                Err(error) => {
                    for scenario in &group {
                        println!("e2e: [{hypervisor}] {} ... FAILED: boot: {error:#}", scenario.name);
                        report.failed.push(format!("{} on {hypervisor}: boot: {error:#}", scenario.name));
                    }
                    continue;
                }
            };
            for scenario in group {
                let started = Instant::now();
                let mut ctx = Ctx {
                    guest: &mut guest,
                    token: plan.token.clone(),
                    tools: &plan.host,
                    scratch: plan.scratch.clone(),
                    figures: Vec::new(),
                };
                let result = (scenario.run)(&mut ctx);
                let figures = std::mem::take(&mut ctx.figures);
                let seconds = started.elapsed().as_secs_f64();
                match result {
                    Ok(()) => {
                        println!("e2e: [{hypervisor}] {} ... ok ({seconds:.1} s)", scenario.name);
                        report.passed += 1;
                    }
                    Err(error) => {
                        println!("e2e: [{hypervisor}] {} ... FAILED ({seconds:.1} s): {error:#}", scenario.name);
                        report.failed.push(format!("{} on {hypervisor}: {error:#}", scenario.name));
                    }
                }
                for (what, value) in figures {
                    println!("e2e-figure: [{hypervisor}] {what}: {value}");
                }
                let console = guest.console();
                if console.contains("PANIC") {
                    println!("e2e: [{hypervisor}] the guest panicked:\n{}", guest::tail(&console, 20));
                    report.failed.push(format!("{} on {hypervisor}: the guest panicked", scenario.name));
                    break;
                }
                let ends_the_guest = [control::SHUTDOWN.name, programs::SHUTDOWN.name, docs::TOUR.name].contains(&scenario.name);
                if guest.has_exited() && !ends_the_guest {
                    report.failed.push(format!("{} on {hypervisor}: the guest exited", scenario.name));
                    println!("e2e: [{hypervisor}] the guest exited:\n{}", guest::tail(&console, 20));
                    break;
                }
            }
            let log = plan.scratch.join(format!("{hypervisor}-boot{}-console.log", group_index + 1));
            let _ = std::fs::write(&log, guest.console());
        }
    }
    // Disk images under firmware and the ACPI power button (QEMU, TCG).
    if plan.hypervisors.iter().any(|hypervisor| hypervisor.is_qemu()) {
        disk::run(plan, &mut report);
    }
    if selected(plan, instances::NAME) && plan.hypervisors.contains(&reference) {
        instances::record(plan, reference, &mut report);
    }
    Ok(report)
}

/// Whether QEMU guests get a tap device in a network namespace instead of
/// user networking (`RTEDGE_E2E_NET=tap`; needs root): the clients' TCP is
/// then the host kernel's, not QEMU's main loop's (`make rt-isolation`).
pub fn qemu_on_tap() -> bool {
    std::env::var_os("RTEDGE_E2E_NET").is_some_and(|value| value == "tap")
}

/// uhyve needs KVM and root (for the namespace and the tap device).
fn uhyve_ready() -> Result<()> {
    crate::hypervisor::kvm_usable().map_err(|reason| anyhow::anyhow!("KVM: {reason}"))?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("a network namespace with a tap device needs root");
    }
    Ok(())
}

/// Boots and waits until the control plane answers an authenticated PING.
fn boot_ready(spec: &GuestSpec<'_>, token: &str) -> Result<Guest> {
    let guest = Guest::boot(spec)?;
    let limit = if spec.hypervisor.is_qemu() { Duration::from_secs(60) } else { Duration::from_secs(180) };
    // Not before the guest has its address: a SYN that QEMU's user
    // networking forwards earlier is lost, and slirp retransmits it only
    // seconds later.
    guest.wait_console("net: address ", limit)?;
    let deadline = Instant::now() + limit;
    loop {
        let attempt = resp::Conn::authed(&guest.target, token).and_then(|mut conn| {
            let reply = conn.call(&["PING"])?;
            Ok(resp::text(&reply))
        });
        match attempt {
            Ok(reply) if reply == "PONG" => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(250)),
            other => {
                bail!("the control plane did not answer within {limit:?} ({other:?}); console:\n{}", guest::tail(&guest.console(), 20))
            }
        }
    }
    // The control plane answers before the application has registered its
    // modules, statics and commands; the scenarios need those.
    guest.wait_console("modules: loaded", limit)?;
    println!("e2e: [{}] appliance up, control plane answering after {:.1} s", spec.hypervisor, guest.booted_at.elapsed().as_secs_f64());
    Ok(guest)
}
