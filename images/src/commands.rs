//! The subcommands: what to build, what to boot, how to judge and report it.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::exitcode::{self, GuestCode, Outcome};
use crate::hypervisor::{Accel, BootSpec, ConsoleMode, Hypervisor, KVM_DEVICE, PortForward, QBOOT_ROM, Tools, UHYVE, kvm_usable};
use crate::image::{self, Image, Layout};
use crate::instances::{self, Instance, Registry};
use crate::profile::{Profile, Profiles};
use crate::vm::{self, CaptureOptions, CapturedRun, Echo};
use crate::{Cli, Command, E2eArgs, RunArgs, TestArgs};

const DEFAULT_TEST_PROFILES: [&str; 8] =
    ["ktest", "ktest-smp2", "ktest-smp4", "fault-page", "fault-stack", "fault-panic", "fault-softirq-block", "selftest-modules"];
const BOOT_TIME_CMDLINE: &str = "log=info boot_only=1";
/// `run`: the hypervisor ended without a guest code.
const EXIT_NO_GUEST_CODE: u8 = 125;
const EXIT_INTERRUPTED: u8 = 130;

struct Session {
    layout: Layout,
    profiles: Profiles,
    tools: Tools,
    verbose: bool,
}

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    let layout = Layout::discover();
    let profiles = Profiles::load_dir(&layout.profiles_dir())?;
    let session = Session { layout, profiles, tools: Tools::discover(), verbose: cli.verbose };
    match cli.command {
        Command::Build { profile } => build(&session, &profile),
        Command::Run(args) => run(&session, &args),
        Command::Test(args) => test(&session, &args),
        Command::Bench { hypervisors } => bench(&session, &hypervisors),
        Command::BootTime { runs, hypervisors } => boot_time(&session, runs, &hypervisors),
        Command::E2e(args) => e2e(&session, &args),
        Command::Info => info(&session),
        Command::Disk { release } => {
            crate::disk::command(&session.layout, &session.profiles, release)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Domain(args) => crate::libvirt::domain_command(&session.layout, &session.profiles, &session.tools, &args),
        Command::Fleet(args) => crate::e2e::fleet::command(&session.layout, &session.profiles, &session.tools, &args),
    }
}

// ---------------------------------------------------------------- e2e

const E2E_HYPERVISORS: [Hypervisor; 3] = [Hypervisor::QemuMicrovm, Hypervisor::QemuQ35, Hypervisor::Uhyve];

fn e2e(session: &Session, args: &E2eArgs) -> Result<ExitCode> {
    use crate::e2e;
    if args.list {
        for scenario in e2e::control::SCENARIOS
            .iter()
            .chain(e2e::programs::SCENARIOS)
            .chain(e2e::programs::FRESH_BOOT)
            .chain(std::iter::once(&e2e::control::SHUTDOWN))
            .chain(e2e::docs::SCENARIOS)
            .chain(std::iter::once(&e2e::docs::TOUR))
        {
            println!("{:<70} {:?}", scenario.name, scenario.on);
        }
        println!("{:<70} Reference", e2e::instances::NAME);
        return Ok(ExitCode::SUCCESS);
    }
    let profile = session.profiles.get("appliance")?;
    let net = profile.spec.net.context("the appliance profile has no [net] section")?;
    let smp = resolve_smp(profile, args.smp)?;
    let hypervisors = if args.hypervisors.is_empty() { E2E_HYPERVISORS.to_vec() } else { args.hypervisors.clone() };
    session.tools.qemu_program()?;
    let image = build_and_report(session, profile)?;
    let token = image.token.clone().context("the appliance image has no control-plane token")?;
    println!("rtedge-image: building rtctl (package rtedge-ctl, the host CLI the scenarios drive)");
    let started = std::time::Instant::now();
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "rtedge-ctl"])
        .current_dir(session.layout.root.clone())
        .status()
        .context("cannot run cargo to build rtctl")?;
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        ensure!(!(crate::vm::interrupted() || status.signal().is_some()), "the build of rtctl was interrupted");
        bail!("building rtctl failed: {status}; cargo's error is above");
    }
    println!("rtedge-image: rtctl built in {:.1} s", started.elapsed().as_secs_f64());
    let host = e2e::HostTools::find(session.layout.root.clone().join("target/release/rtctl"))?;
    let scratch = session.layout.output_dir().join("e2e");
    // The programs' scenarios need a boot archive (QEMU's -initrd) and a
    // few settings of their own.
    let initrd = e2e::programs::boot_archive(&scratch)?;
    let plan = e2e::Plan {
        tools: &session.tools,
        host,
        image: image.path.clone(),
        // RTEDGE_E2E_APPEND adds words (`make faults`: net_faults=10,10).
        cmdline: compose_cmdline(
            &profile.spec.cmdline,
            Some(&format!("{} {}", e2e::programs::EXTRA_CMDLINE, std::env::var("RTEDGE_E2E_APPEND").unwrap_or_default())),
            Some(&token),
        ),
        token,
        smp,
        memory_mib: profile.spec.memory_mib,
        guest_port: net.forward().guest,
        hypervisors,
        only: args.only.clone(),
        scratch,
        initrd: Some(initrd),
    };
    let started = std::time::Instant::now();
    let report = e2e::run(&plan)?;
    println!();
    println!(
        "rtedge-image: e2e {} passed, {} failed, {} skipped in {:.0} s (console logs in {})",
        report.passed,
        report.failed.len(),
        report.skipped.len(),
        started.elapsed().as_secs_f64(),
        plan.scratch.display()
    );
    for failure in &report.failed {
        println!("  FAILED {failure}");
    }
    for skipped in &report.skipped {
        println!("  skipped {skipped}");
    }
    Ok(if report.failed.is_empty() && report.passed > 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

// ---------------------------------------------------------------- helpers

/// A number from the environment; unset or empty means `None`.
fn env_number<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => match text.trim().parse() {
            Ok(value) => Ok(Some(value)),
            Err(_) => bail!("{name}={text:?} is not a valid number"),
        },
        _ => Ok(None),
    }
}

/// CPUs: the command line, else `RTEDGE_SMP`, else the profile.
fn resolve_smp(profile: &Profile, cli: Option<u32>) -> Result<u32> {
    let smp = match cli {
        Some(smp) => smp,
        None => env_number("RTEDGE_SMP")?.unwrap_or(profile.spec.smp),
    };
    ensure!((1..=255).contains(&smp), "{smp} CPUs requested; use 1 to 255");
    Ok(smp)
}

/// The port forward: the profile's `[net]` with the host port from the
/// command line, else `RTEDGE_PORT`. Without `[net]`, `--port` is an error
/// and `RTEDGE_PORT` is ignored (the Makefile passes it to every target).
fn resolve_forward(profile: &Profile, cli_port: Option<u16>) -> Result<Option<PortForward>> {
    let Some(net) = profile.spec.net else {
        ensure!(cli_port.is_none(), "profile `{}` has no [net] section, so --port has nothing to forward", profile.name);
        return Ok(None);
    };
    let mut forward = net.forward();
    let port = match cli_port {
        Some(port) => Some(port),
        None => env_number("RTEDGE_PORT")?,
    };
    if let Some(port) = port {
        ensure!(port != 0, "host port 0 cannot be forwarded");
        forward.host = port;
    }
    Ok(Some(forward))
}

/// The kernel command line: the profile's, the extra words, then `auth=`.
pub fn compose_cmdline(base: &str, extra: Option<&str>, token: Option<&str>) -> String {
    let mut words: Vec<String> = base.split_whitespace().map(str::to_string).collect();
    words.extend(extra.unwrap_or_default().split_whitespace().map(str::to_string));
    if let Some(token) = token {
        words.push(format!("auth={token}"));
    }
    words.join(" ")
}

fn machine_description(hypervisor: Hypervisor, accel: Accel) -> String {
    match hypervisor {
        Hypervisor::QemuMicrovm => format!("machine microvm, accel {accel}"),
        Hypervisor::QemuQ35 => format!("machine q35 with qboot, accel {accel}"),
        Hypervisor::Uhyve => "Hermit boot protocol, KVM".to_string(),
    }
}

fn cpus(count: u32) -> String {
    if count == 1 { "1 CPU".to_string() } else { format!("{count} CPUs") }
}

/// A row label: the hypervisor, plus `+kvm` for QEMU under KVM.
fn hypervisor_label(hypervisor: Hypervisor, accel: Accel) -> String {
    match (hypervisor.is_qemu(), accel) {
        (true, Accel::Kvm) => format!("{hypervisor}+kvm"),
        _ => hypervisor.name().to_string(),
    }
}

/// Why `hypervisor` with `accel` cannot run on this host, if it cannot.
fn unavailable(tools: &Tools, hypervisor: Hypervisor, accel: Accel) -> Option<String> {
    if hypervisor == Hypervisor::Uhyve && tools.uhyve.is_none() {
        return Some(format!("{} not found in PATH or ~/.cargo/bin (run `make deps`)", UHYVE));
    }
    if hypervisor.effective_accel(accel) == Accel::Kvm {
        return kvm_usable().err();
    }
    None
}

fn build_and_report(session: &Session, profile: &Profile) -> Result<Image> {
    println!(
        "rtedge-image: building `{}` ({}, package {}, bin {})",
        profile.name, profile.spec.description, profile.spec.package, profile.spec.bin
    );
    // cargo's progress shows as cargo shows it: a bar on a terminal, a
    // `Compiling` line per crate otherwise; the stage's time comes after.
    let started = std::time::Instant::now();
    let image = image::build(&session.layout, profile)?;
    let seconds = started.elapsed().as_secs_f64();
    match image.load {
        Some(load) => println!(
            "rtedge-image: image {} ({} KiB file with debug info; loads {} KiB, {} KiB in guest memory with .bss), built in {seconds:.1} s",
            image.path.display(),
            image.size_kib(),
            load.file_bytes.div_ceil(1024),
            load.memory_bytes.div_ceil(1024)
        ),
        None => println!("rtedge-image: image {} ({} KiB), built in {seconds:.1} s", image.path.display(), image.size_kib()),
    }
    Ok(image)
}

fn median(sorted: &[u64]) -> u64 {
    match sorted.len() {
        0 => 0,
        length if length % 2 == 1 => sorted[length / 2],
        length => (sorted[length / 2 - 1] + sorted[length / 2]) / 2,
    }
}

/// `min / median / max` of the values, or `-`.
fn spread(values: &[u64]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    match (sorted.first(), sorted.last()) {
        (Some(min), Some(max)) => format!("{min} / {} / {max}", median(&sorted)),
        _ => "-".to_string(),
    }
}

/// Prints rows as left-aligned columns under a header.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    line(widths.iter().map(|width| "-".repeat(*width)).collect::<Vec<_>>().iter().map(String::as_str).collect());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

fn guest_code_cell(code: Option<GuestCode>) -> String {
    code.map_or_else(|| "-".to_string(), |code| code.to_string())
}

// ------------------------------------------------------------------ build

fn build(session: &Session, name: &str) -> Result<ExitCode> {
    let profile = session.profiles.get(name)?;
    build_and_report(session, profile)?;
    Ok(ExitCode::SUCCESS)
}

// -------------------------------------------------------------------- run

fn run(session: &Session, args: &RunArgs) -> Result<ExitCode> {
    let profile = session.profiles.get(&args.profile)?;
    let hypervisor = args.hypervisor.unwrap_or(profile.spec.hypervisors[0]);
    if !profile.spec.hypervisors.contains(&hypervisor) {
        println!("rtedge-image: note: profile `{}` does not list {hypervisor}; booting it anyway", profile.name);
    }
    let requested = args.accel.unwrap_or_default();
    if hypervisor == Hypervisor::Uhyve && args.accel == Some(Accel::Tcg) {
        println!("rtedge-image: note: uhyve always runs on KVM; --accel tcg does not apply");
    }
    let accel = hypervisor.effective_accel(requested);
    let smp = resolve_smp(profile, args.smp)?;
    let mut forward = resolve_forward(profile, args.port)?;
    let registry = instances::registry(&session.layout.output_dir());
    let name = instances::free_name(&registry, &profile.name, args.name.as_deref())?;
    // A busy host port is found now, not after the build and boot: an asked-for
    // port must be free; otherwise the next free one is taken.
    if let Some(forward) = forward.as_mut().filter(|_| hypervisor.is_qemu()) {
        let requested = match args.port {
            Some(port) => Some(port),
            None => env_number("RTEDGE_PORT")?,
        };
        let chosen = instances::choose_port(&registry, requested, forward.host)?;
        if chosen != forward.host {
            println!(
                "rtedge-image: note: host port {} is in use by {}; using {chosen}",
                forward.host,
                instances::port_holder(&registry, forward.host)
            );
            forward.host = chosen;
        }
    }
    // Check the host before spending time on a build.
    if hypervisor.is_qemu() {
        session.tools.qemu_program()?;
    } else {
        session.tools.uhyve_program()?;
    }
    if accel == Accel::Kvm
        && let Err(reason) = kvm_usable()
    {
        bail!("{hypervisor} needs KVM here: {reason}");
    }

    let image = build_and_report(session, profile)?;
    // The guest prints how to connect: tell it the host port forwarded.
    let extra = match (forward.as_ref().filter(|_| hypervisor.is_qemu()), args.append.as_deref()) {
        (Some(forward), Some(append)) => Some(format!("hostport={} {append}", forward.host)),
        (Some(forward), None) => Some(format!("hostport={}", forward.host)),
        (None, append) => append.map(str::to_string),
    };
    let cmdline = compose_cmdline(&profile.spec.cmdline, extra.as_deref(), image.token.as_deref());
    let spec = BootSpec {
        image: image.path.clone(),
        cmdline: cmdline.clone(),
        smp,
        memory_mib: profile.spec.memory_mib,
        accel,
        console: if args.detach { ConsoleMode::Captured } else { ConsoleMode::Interactive },
        net: forward,
    };
    let mut invocation = session.tools.invocation(hypervisor, &spec)?;
    // GET /metrics (Prometheus) gets a host port of its own next to the
    // control plane's: $RTEDGE_METRICS_PORT, else 9100 or the next free one.
    let metrics_forward = match (forward.filter(|_| hypervisor.is_qemu()), crate::hypervisor::guest_metrics_port(&cmdline)) {
        (Some(_), Some(guest)) => {
            let host = instances::choose_port(&registry, env_number("RTEDGE_METRICS_PORT")?, crate::hypervisor::GUEST_METRICS_PORT)?;
            let metrics = PortForward { host, guest };
            crate::hypervisor::add_qemu_forward(&mut invocation, metrics).then_some(metrics)
        }
        _ => None,
    };
    let initrd = args.initrd.clone().or_else(|| std::env::var_os("RTEDGE_INITRD").filter(|v| !v.is_empty()).map(Into::into));
    if let Some(initrd) = initrd {
        ensure!(initrd.is_file(), "initrd {} is not a file", initrd.display());
        ensure!(
            hypervisor.is_qemu(),
            "--initrd is for QEMU (uhyve hands the guest host files through its own --file-mapping, which this runner does not pass)"
        );
        invocation.args.push("-initrd".into());
        invocation.args.push(initrd.display().to_string());
    }
    println!(
        "rtedge-image: booting `{}` on {hypervisor} ({}), {}, {} MiB, cmdline \"{}\"",
        profile.name,
        machine_description(hypervisor, accel),
        cpus(smp),
        profile.spec.memory_mib,
        rtedge_proto::util::redact_command_line(&cmdline)
    );
    if session.verbose {
        println!("rtedge-image: $ {}", rtedge_proto::util::redact_command_line(&invocation.to_string()));
    }
    let mut instance = Instance {
        name: name.clone(),
        profile: profile.name.clone(),
        hypervisor: hypervisor.name().to_string(),
        pid: 0,
        port: forward.filter(|_| hypervisor.is_qemu()).map(|forward| forward.host),
        guest_port: forward.map(|forward| forward.guest),
        token_path: (!profile.spec.release && image.token.is_some()).then(|| session.layout.token_path()),
        console_log: None,
        program: invocation.program.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default(),
        started: instances::now_seconds(),
        detached: args.detach,
    };
    if let (true, Some(metrics)) = (args.detach, metrics_forward) {
        println!("rtedge-image: Prometheus metrics at http://127.0.0.1:{}/metrics (guest port {})", metrics.host, metrics.guest);
    }
    if args.detach {
        return run_detached(&registry, instance, &invocation, profile.spec.net.is_some() && hypervisor.is_qemu());
    }
    if let (Some(forward), Some(_token)) = (forward, image.token.as_deref()) {
        // The token itself is never printed: say where it is.
        let token_source = if std::env::var("RTEDGE_TOKEN").is_ok_and(|token| !token.is_empty()) {
            String::from("\"$RTEDGE_TOKEN\"")
        } else {
            format!("\"$(cat {})\"", session.layout.token_path().display())
        };
        if hypervisor.is_qemu() {
            println!("rtedge-image: control plane on 127.0.0.1:{} (guest port {}); connect with:", forward.host, forward.guest);
            println!("    redis-cli -p {} -a {token_source} --no-auth-warning PING", forward.host);
            println!("    rtctl --port {} status", forward.host);
            if let Some(metrics) = metrics_forward {
                println!(
                    "rtedge-image: Prometheus metrics at http://127.0.0.1:{}/metrics (guest port {}); `rtctl --port {} metrics` prints the same",
                    metrics.host, metrics.guest, forward.host
                );
            }
        } else {
            println!(
                "rtedge-image: `run` sets up no network under uhyve: uhyve 0.10 offers only a tap device \
                 (`uhyve --net tap:NAME`, as root); `rtedge-image e2e --hv uhyve` runs it so, inside a \
                 network namespace of its own"
            );
        }
    }
    println!("rtedge-image: quit with {}", if hypervisor.is_qemu() { "Ctrl-A X (Ctrl-A C toggles the QEMU monitor)" } else { "Ctrl-C" });

    // Registered while it runs, so `rtctl` in another terminal finds its port and token.
    let mut register = |pid: u32| {
        instance.pid = pid;
        if let Err(error) = instances::write(&registry, &instance) {
            println!("rtedge-image: warning: {error:#}");
        }
    };
    let result = vm::boot_interactive(&invocation, !hypervisor.is_qemu(), session.verbose, !hypervisor.is_qemu(), &mut register);
    registry.remove(&name);
    let result = result?;
    let outcome = exitcode::decode(hypervisor.exit_convention(), result.status, result.console.shutdown);
    if let Some(warning) = exitcode::announcement_mismatch(&outcome, result.console.shutdown) {
        println!("rtedge-image: warning: {warning}");
    }
    let expected = profile.spec.expect_exit.map(|code| format!(" (the profile expects {})", GuestCode(code))).unwrap_or_default();
    let (message, status) = match outcome {
        // Ctrl-C under uhyve ends the run as Ctrl-A X does under QEMU: the
        // user's choice, exit status 0 (whatever status uhyve gave).
        _ if result.interrupted && result.console.shutdown.is_none() => ("stopped by the user (Ctrl-C)".to_string(), 0),
        Outcome::Guest(code) => (format!("{outcome}{expected}"), code.0),
        Outcome::QemuReset if result.console.qemu_terminated => ("stopped by the user (Ctrl-A X)".to_string(), 0),
        Outcome::Signaled(signal) => (outcome.to_string(), 128u8.saturating_add(u8::try_from(signal).unwrap_or(127))),
        _ => (outcome.to_string(), EXIT_NO_GUEST_CODE),
    };
    println!("rtedge-image: `{}` on {hypervisor}: {message}", profile.name);
    Ok(ExitCode::from(status))
}

/// How long `run --detach` waits for the control plane's line on the console.
const DETACH_READY_TIMEOUT: Duration = Duration::from_secs(600);
/// The appliance's console line once its control plane listens.
const READY_LINE: &str = "control plane: guest port";

/// `run --detach`: starts the hypervisor with its console in a log,
/// registers it, and returns once the control plane is up (or the guest
/// has ended, which is an error).
fn run_detached(
    registry: &Registry,
    mut instance: Instance,
    invocation: &crate::hypervisor::Invocation,
    wait_for_control_plane: bool,
) -> Result<ExitCode> {
    std::fs::create_dir_all(&registry.directory).with_context(|| format!("cannot create {}", registry.directory.display()))?;
    let console_log = registry.console_path(&instance.name);
    let mut child = vm::spawn_detached(invocation, &console_log)?;
    instance.pid = child.id();
    instance.console_log = Some(console_log.clone());
    if let Err(error) = instances::write(registry, &instance) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(error);
    }
    let name = &instance.name;
    println!(
        "rtedge-image: instance `{name}` started in the background ({}, pid {}); console in {}",
        instance.hypervisor,
        instance.pid,
        console_log.display()
    );
    let started = std::time::Instant::now();
    let mut last_report = started;
    loop {
        if let Some(status) = child.try_wait().context("waiting for the hypervisor")? {
            registry.remove(name);
            let console = std::fs::read_to_string(&console_log).unwrap_or_default();
            let tail: Vec<&str> = console.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
            bail!(
                "instance `{name}` ended while starting ({}); the end of its console:\n{}",
                exitcode::HostStatus::from_std(status),
                tail.join("\n")
            );
        }
        let ready = !wait_for_control_plane || std::fs::read_to_string(&console_log).is_ok_and(|console| console.contains(READY_LINE));
        if ready && (wait_for_control_plane || started.elapsed() > Duration::from_secs(1)) {
            break;
        }
        if vm::interrupted() {
            println!("rtedge-image: interrupted; `{name}` keeps starting in the background (`rtctl stop {name}` ends it)");
            return Ok(ExitCode::from(EXIT_INTERRUPTED));
        }
        if started.elapsed() > DETACH_READY_TIMEOUT {
            println!(
                "rtedge-image: warning: `{name}` printed no \"{READY_LINE}\" within {} s; it keeps running (`rtctl console {name}`)",
                DETACH_READY_TIMEOUT.as_secs()
            );
            break;
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            last_report = std::time::Instant::now();
            println!("rtedge-image: `{name}` still booting ({:.0} s)", started.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match instance.port {
        Some(port) => {
            println!("rtedge-image: `{name}` is up in {:.1} s: control plane on 127.0.0.1:{port}", started.elapsed().as_secs_f64())
        }
        None => println!("rtedge-image: `{name}` is running (no host port: uhyve has no network forward here)"),
    }
    let hints = [
        ("rtctl ps".to_string(), "the running instances"),
        ("rtctl status".to_string(), "rtctl picks the only running instance; else -p PORT or --instance NAME"),
        (format!("rtctl console {name}"), "follow its console"),
        (format!("rtctl stop {name}"), "orderly shutdown (`make stop` stops them all)"),
    ];
    let width = hints.iter().map(|(command, _)| command.len()).max().unwrap_or_default();
    for (command, what) in hints {
        println!("    {command:<width$}  {what}");
    }
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------------- test

/// How one boot of a test ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    Fail(String),
    Timeout(u64),
    Skipped(String),
}

impl Verdict {
    fn word(&self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail(_) => "FAIL",
            Verdict::Timeout(_) => "TIMEOUT",
            Verdict::Skipped(_) => "skipped",
        }
    }

    fn detail(&self) -> Option<String> {
        match self {
            Verdict::Pass => None,
            Verdict::Fail(reason) => Some(reason.clone()),
            Verdict::Timeout(seconds) => Some(format!("TIMEOUT after {seconds}s (VM process group killed)")),
            Verdict::Skipped(reason) => Some(format!("skipped: {reason}")),
        }
    }

    fn failed(&self) -> bool {
        matches!(self, Verdict::Fail(_) | Verdict::Timeout(_))
    }
}

/// One line of a summary table.
struct Row {
    profile: String,
    hypervisor: String,
    verdict: Verdict,
    code: Option<GuestCode>,
    duration: Duration,
}

/// One judged boot; `run` is `None` when it never started (skipped, or
/// the hypervisor is missing).
struct Judged {
    row: Row,
    run: Option<CapturedRun>,
}

/// Judges a captured run of a profile that expects `expect_exit`.
fn judge(profile: &Profile, hypervisor: Hypervisor, run: &CapturedRun) -> (Verdict, Option<GuestCode>) {
    if hypervisor == Hypervisor::Uhyve
        && let Some(reason) = &run.kvm_failure
    {
        return (Verdict::Skipped(format!("uhyve could not use KVM: {reason}")), None);
    }
    let Some(status) = run.status else {
        return (Verdict::Timeout(profile.spec.timeout_s), None);
    };
    let outcome = exitcode::decode(hypervisor.exit_convention(), status, run.console.shutdown);
    let mut problems = Vec::new();
    if let Some(expected) = profile.spec.expect_exit.map(GuestCode) {
        match outcome.guest_code() {
            Some(code) if code == expected => {}
            Some(code) => problems.push(format!("guest exited with {code}, expected {expected}")),
            None => problems.push(format!("{outcome}; expected guest code {expected}")),
        }
    }
    if let Some(warning) = exitcode::announcement_mismatch(&outcome, run.console.shutdown) {
        problems.push(warning);
    }
    if profile.spec.expect_ktest_pass
        && let Err(reason) = run.console.ktest_verdict()
    {
        problems.push(reason);
    }
    if problems.is_empty() {
        return (Verdict::Pass, outcome.guest_code());
    }
    if outcome.guest_code().is_none() {
        let errors: Vec<&str> = run.stderr.iter().map(String::as_str).filter(|line| !vm::is_hypervisor_noise(line)).take(5).collect();
        if !errors.is_empty() {
            problems.push(format!("{hypervisor} stderr: {}", errors.join(" / ")));
        }
    }
    (Verdict::Fail(problems.join("; ")), outcome.guest_code())
}

/// Boots `profile` once under `hypervisor` and judges it; `None` when the
/// user interrupted it.
fn boot_and_judge(
    session: &Session,
    profile: &Profile,
    image: &Image,
    (hypervisor, accel): (Hypervisor, Accel),
    smp: u32,
) -> Result<Option<Judged>> {
    let accel = hypervisor.effective_accel(accel);
    let label = hypervisor_label(hypervisor, accel);
    let row = |verdict, code, duration| Row { profile: profile.name.clone(), hypervisor: label.clone(), verdict, code, duration };
    if let Some(reason) = unavailable(&session.tools, hypervisor, accel) {
        let row = row(Verdict::Skipped(reason), None, Duration::ZERO);
        return Ok(Some(Judged { row, run: None }));
    }
    let spec = BootSpec {
        image: image.path.clone(),
        cmdline: compose_cmdline(&profile.spec.cmdline, None, image.token.as_deref()),
        smp,
        memory_mib: profile.spec.memory_mib,
        accel,
        console: ConsoleMode::Captured,
        net: None,
    };
    let invocation = match session.tools.invocation(hypervisor, &spec) {
        Ok(invocation) => invocation,
        Err(error) => {
            let row = row(Verdict::Fail(format!("{error:#}")), None, Duration::ZERO);
            return Ok(Some(Judged { row, run: None }));
        }
    };
    let options = CaptureOptions {
        label: format!("{}/{label}", profile.name),
        timeout: Duration::from_secs(profile.spec.timeout_s),
        echo: Echo::Prefixed,
        verbose: session.verbose,
        keep_log: true,
    };
    let run = vm::boot_captured(&invocation, &options)?;
    if run.interrupted {
        return Ok(None);
    }
    let (verdict, code) = judge(profile, hypervisor, &run);
    let row = row(verdict, code, run.elapsed);
    Ok(Some(Judged { row, run: Some(run) }))
}

fn print_verdict(row: &Row) {
    let name = format!("[{}/{}]", row.profile, row.hypervisor);
    let code = row.code.map(|code| format!(", guest code {code}")).unwrap_or_default();
    let time = seconds(row.duration);
    match &row.verdict {
        Verdict::Pass => println!("rtedge-image: {name} PASS{code} in {time}"),
        Verdict::Fail(reason) => println!("rtedge-image: {name} FAIL{code} in {time}: {reason}"),
        Verdict::Timeout(_) | Verdict::Skipped(_) => {
            println!("rtedge-image: {name} {}", row.verdict.detail().unwrap_or_default());
        }
    }
}

fn print_summary(rows: &[Row]) -> ExitCode {
    println!();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.profile.clone(),
                row.hypervisor.clone(),
                row.verdict.word().to_string(),
                guest_code_cell(row.code),
                seconds(row.duration),
            ]
        })
        .collect();
    print_table(&["profile", "hypervisor", "result", "guest code", "time"], &cells);
    let details: Vec<String> = rows
        .iter()
        .filter_map(|row| row.verdict.detail().map(|detail| format!("  {}/{}: {detail}", row.profile, row.hypervisor)))
        .collect();
    if !details.is_empty() {
        println!();
        details.iter().for_each(|detail| println!("{detail}"));
    }
    let failed = rows.iter().filter(|row| row.verdict.failed()).count();
    let passed = rows.iter().filter(|row| row.verdict == Verdict::Pass).count();
    let skipped = rows.iter().filter(|row| matches!(row.verdict, Verdict::Skipped(_))).count();
    println!("\nrtedge-image: {passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn interrupted_exit() -> Result<ExitCode> {
    eprintln!("rtedge-image: interrupted; the VM was killed");
    Ok(ExitCode::from(EXIT_INTERRUPTED))
}

fn test(session: &Session, args: &TestArgs) -> Result<ExitCode> {
    let names: Vec<&str> =
        if args.profiles.is_empty() { DEFAULT_TEST_PROFILES.to_vec() } else { args.profiles.iter().map(String::as_str).collect() };
    let mut selected = Vec::new();
    for name in names {
        let profile = session.profiles.get(name)?;
        ensure!(profile.is_test(), "profile `{name}` has no `expect_exit`: it runs until stopped and cannot be tested");
        selected.push(profile);
    }
    let mut rows = Vec::new();
    for profile in selected {
        let hypervisors: Vec<Hypervisor> = profile
            .spec
            .hypervisors
            .iter()
            .copied()
            .filter(|hypervisor| args.hypervisors.is_empty() || args.hypervisors.contains(hypervisor))
            .collect();
        if hypervisors.is_empty() {
            println!("rtedge-image: `{}` lists none of the requested hypervisors; not run", profile.name);
            continue;
        }
        let smp = resolve_smp(profile, args.smp)?;
        let image = match build_and_report(session, profile) {
            Ok(image) => image,
            Err(error) => {
                eprintln!("rtedge-image: error: {error:#}");
                for hypervisor in hypervisors {
                    rows.push(Row {
                        profile: profile.name.clone(),
                        hypervisor: hypervisor_label(hypervisor, hypervisor.effective_accel(args.accel)),
                        verdict: Verdict::Fail(format!("{error:#}")),
                        code: None,
                        duration: Duration::ZERO,
                    });
                }
                continue;
            }
        };
        for hypervisor in hypervisors {
            let configuration = (hypervisor, args.accel);
            let Some(mut judged) = boot_and_judge(session, profile, &image, configuration, smp)? else {
                return interrupted_exit();
            };
            // Every run's console is kept; a failure names its file.
            if let Some(run) = &judged.run {
                let directory = session.layout.output_dir().join("test");
                std::fs::create_dir_all(&directory).with_context(|| format!("cannot create {}", directory.display()))?;
                let path = directory.join(format!("{}-{}.log", profile.name, judged.row.hypervisor.replace('+', "-")));
                std::fs::write(&path, &run.log).with_context(|| format!("cannot write {}", path.display()))?;
                if let Verdict::Fail(reason) = &mut judged.row.verdict {
                    reason.push_str(&format!(" (console: {})", path.display()));
                } else if judged.row.verdict.failed() {
                    println!("rtedge-image: console of the timed-out run: {}", path.display());
                }
            }
            print_verdict(&judged.row);
            rows.push(judged.row);
        }
    }
    Ok(print_summary(&rows))
}

// ------------------------------------------------------------------ bench

fn bench(session: &Session, filter: &[Hypervisor]) -> Result<ExitCode> {
    let profile = session.profiles.get("bench")?;
    let mut configurations = Vec::new();
    for &hypervisor in &profile.spec.hypervisors {
        if !filter.is_empty() && !filter.contains(&hypervisor) {
            continue;
        }
        if hypervisor.is_qemu() {
            configurations.extend([(hypervisor, Accel::Tcg), (hypervisor, Accel::Kvm)]);
        } else {
            configurations.push((hypervisor, Accel::Kvm));
        }
    }
    ensure!(!configurations.is_empty(), "profile `bench` lists none of the requested hypervisors");
    let smp = resolve_smp(profile, None)?;
    let image = build_and_report(session, profile)?;
    std::fs::create_dir_all(session.layout.output_dir())
        .with_context(|| format!("cannot create {}", session.layout.output_dir().display()))?;

    let mut results = Vec::new();
    for (hypervisor, accel) in configurations {
        let Some(judged) = boot_and_judge(session, profile, &image, (hypervisor, accel), smp)? else {
            return interrupted_exit();
        };
        print_verdict(&judged.row);
        let (lines, log) = match judged.run {
            Some(run) => {
                let name = format!("bench-{}.log", judged.row.hypervisor.replace('+', "-"));
                let path = session.layout.output_dir().join(name);
                std::fs::write(&path, &run.log).with_context(|| format!("cannot write {}", path.display()))?;
                (run.console.bench, Some(path))
            }
            None => (Vec::new(), None),
        };
        results.push((judged.row, lines, log));
    }
    for (row, lines, log) in &results {
        println!("\n== bench on {}", row.hypervisor);
        match &row.verdict {
            Verdict::Skipped(reason) => println!("skipped: {reason}"),
            _ if lines.is_empty() => println!("(no `bench:` lines)"),
            _ => lines.iter().for_each(|line| println!("{line}")),
        }
        if let Some(log) = log {
            println!("(full console: {})", log.display());
        }
    }
    let rows: Vec<Row> = results.into_iter().map(|(row, _, _)| row).collect();
    Ok(print_summary(&rows))
}

// -------------------------------------------------------------- boot-time

fn boot_time(session: &Session, runs: u32, filter: &[Hypervisor]) -> Result<ExitCode> {
    let profile = session.profiles.get("ktest")?;
    let configurations: Vec<(Hypervisor, Accel)> = [
        (Hypervisor::QemuMicrovm, Accel::Tcg),
        (Hypervisor::QemuQ35, Accel::Tcg),
        (Hypervisor::QemuMicrovm, Accel::Kvm),
        (Hypervisor::Uhyve, Accel::Kvm),
    ]
    .into_iter()
    .filter(|(hypervisor, _)| filter.is_empty() || filter.contains(hypervisor))
    .collect();
    ensure!(!configurations.is_empty(), "no boot-time configuration uses the requested hypervisors");
    let smp = resolve_smp(profile, None)?;
    let image = build_and_report(session, profile)?;
    println!("rtedge-image: {runs} boots each with cmdline \"{BOOT_TIME_CMDLINE}\"");

    let mut table = Vec::new();
    let mut any_failed = false;
    for (hypervisor, accel) in configurations {
        let label = hypervisor_label(hypervisor, accel);
        if let Some(reason) = unavailable(&session.tools, hypervisor, accel) {
            println!("  {label}: skipped: {reason}");
            table.push(vec![label, "-".to_string(), "-".to_string(), "-".to_string(), format!("skipped: {reason}")]);
            continue;
        }
        let spec = BootSpec {
            image: image.path.clone(),
            cmdline: BOOT_TIME_CMDLINE.to_string(),
            smp,
            memory_mib: profile.spec.memory_mib,
            accel,
            console: ConsoleMode::Captured,
            net: None,
        };
        let invocation = session.tools.invocation(hypervisor, &spec)?;
        let (mut ready, mut wall) = (Vec::new(), Vec::new());
        let (mut timeouts, mut missing_banner, mut kvm_failure) = (0u32, 0u32, None);
        let mut unexpected_endings: Vec<String> = Vec::new();
        for attempt in 1..=runs {
            let options = CaptureOptions {
                label: format!("boot-time/{label}#{attempt}"),
                timeout: Duration::from_secs(profile.spec.timeout_s),
                echo: Echo::Quiet,
                verbose: session.verbose,
                keep_log: false,
            };
            let run = vm::boot_captured(&invocation, &options)?;
            if run.interrupted {
                return interrupted_exit();
            }
            let wall_micros = u64::try_from(run.elapsed.as_micros()).unwrap_or(u64::MAX);
            let ready_text =
                run.console.ready_micros.map_or_else(|| "no `ready in N us` line".to_string(), |micros| format!("ready in {micros} us"));
            let outcome = run.status.map(|status| exitcode::decode(hypervisor.exit_convention(), status, run.console.shutdown));
            let ending = match &outcome {
                None => format!("TIMEOUT after {}s", profile.spec.timeout_s),
                Some(outcome) => outcome.to_string(),
            };
            if let Some(outcome) = outcome.filter(|outcome| *outcome != Outcome::Guest(GuestCode(0)))
                && run.kvm_failure.is_none()
                && !unexpected_endings.contains(&outcome.to_string())
            {
                unexpected_endings.push(outcome.to_string());
            }
            println!("  {label} boot {attempt}: {ready_text}, host wall {:.1} ms, {ending}", wall_micros as f64 / 1000.0);
            if let Some(reason) = run.kvm_failure {
                kvm_failure = Some(reason);
                break;
            }
            if run.timed_out {
                timeouts += 1;
                continue;
            }
            wall.push(wall_micros / 1000);
            match run.console.ready_micros {
                Some(micros) => ready.push(micros),
                None => missing_banner += 1,
            }
        }
        let mut notes = Vec::new();
        if let Some(reason) = kvm_failure {
            notes.push(format!("skipped: uhyve could not use KVM: {reason}"));
        } else {
            any_failed |= timeouts + missing_banner > 0 || !unexpected_endings.is_empty();
        }
        if timeouts > 0 {
            notes.push(format!("{timeouts} TIMEOUT after {}s", profile.spec.timeout_s));
        }
        if missing_banner > 0 {
            notes.push(format!("{missing_banner} boots without a `ready in N us` banner"));
        }
        if !unexpected_endings.is_empty() {
            notes.push(format!("ended with {}", unexpected_endings.join(", ")));
        }
        table.push(vec![label, format!("{}/{runs}", ready.len()), spread(&ready), spread(&wall), notes.join("; ")]);
    }
    println!();
    print_table(&["hypervisor", "banners", "ready us (min / median / max)", "host wall ms (min / median / max)", "notes"], &table);
    Ok(if any_failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

// ------------------------------------------------------------------- info

fn tool_version(program: Option<&Path>) -> String {
    let Some(program) = program else {
        return "not found (run `make deps`)".to_string();
    };
    let version = std::process::Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.lines().next().map(str::to_string))
        .unwrap_or_else(|| "version unknown".to_string());
    format!("{} ({version})", program.display())
}

fn info(session: &Session) -> Result<ExitCode> {
    let mut rows = Vec::new();
    for profile in session.profiles.by_name.values() {
        let image = image::existing(&session.layout, profile)
            .map_or_else(|| "not built".to_string(), |image| format!("{} ({} KiB)", image.path.display(), image.size_kib()));
        let expect = profile.spec.expect_exit.map_or_else(|| "runs until stopped".to_string(), |code| GuestCode(code).to_string());
        rows.push(vec![profile.name.clone(), expect, image, profile.spec.description.clone()]);
    }
    print_table(&["profile", "expected exit", "image", "description"], &rows);
    println!();
    println!("qemu:    {}", tool_version(session.tools.qemu.as_deref()));
    println!("uhyve:   {}", tool_version(session.tools.uhyve.as_deref()));
    println!(
        "qboot:   {}",
        session.tools.qboot.as_ref().map_or_else(|| format!("{} missing (run `make deps`)", QBOOT_ROM), |path| path.display().to_string())
    );
    println!("kvm:     {}", kvm_usable().map_or_else(|reason| reason, |()| format!("{} usable", KVM_DEVICE)));
    let token = session.layout.token_path();
    println!(
        "token:   {}",
        if token.exists() { token.display().to_string() } else { "not generated yet (first build creates it)".to_string() }
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::ConsoleSummary;

    #[test]
    fn cmdline_appends_extra_words_then_the_token() {
        assert_eq!(compose_cmdline("log=info", Some(" a=1  b=2 "), Some("ff00")), "log=info a=1 b=2 auth=ff00");
        assert_eq!(compose_cmdline("", None, None), "");
        assert_eq!(compose_cmdline("log=info  x=y", None, None), "log=info x=y");
    }

    #[test]
    fn spread_is_min_median_max() {
        assert_eq!(spread(&[]), "-");
        assert_eq!(spread(&[7]), "7 / 7 / 7");
        assert_eq!(spread(&[9, 1, 5]), "1 / 5 / 9");
        assert_eq!(spread(&[4, 1, 3, 2]), "1 / 2 / 4");
    }

    #[test]
    fn labels_mark_qemu_under_kvm() {
        assert_eq!(hypervisor_label(Hypervisor::QemuMicrovm, Accel::Tcg), "qemu-microvm");
        assert_eq!(hypervisor_label(Hypervisor::QemuQ35, Accel::Kvm), "qemu-q35+kvm");
        assert_eq!(hypervisor_label(Hypervisor::Uhyve, Accel::Kvm), "uhyve");
    }

    fn ktest_profile() -> Profile {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        Profile::load(&dir.join("ktest.toml")).expect("ktest profile")
    }

    fn captured(status: Option<crate::exitcode::HostStatus>, console: &str) -> CapturedRun {
        let mut summary = ConsoleSummary::default();
        console.lines().for_each(|line| summary.observe(line));
        CapturedRun {
            status,
            timed_out: status.is_none(),
            interrupted: false,
            elapsed: Duration::from_millis(5),
            console: summary,
            stderr: Vec::new(),
            kvm_failure: None,
            log: Vec::new(),
        }
    }

    use crate::exitcode::HostStatus::Exited;

    #[test]
    fn judge_passes_a_complete_harness_run() {
        let run = captured(
            Some(Exited(1)),
            "ktest: running 1 tests\nktest: a ... ok\nktest: result: 1 passed, 0 failed\nrtedge: shutdown code=0\n",
        );
        assert_eq!(judge(&ktest_profile(), Hypervisor::QemuMicrovm, &run), (Verdict::Pass, Some(GuestCode(0))));
    }

    #[test]
    fn judge_explains_status_one_without_announcement_and_missing_harness() {
        let run = captured(Some(Exited(1)), "hello from rtedge\nlog=info\n");
        let (verdict, code) = judge(&ktest_profile(), Hypervisor::QemuQ35, &run);
        assert_eq!(code, None);
        assert_eq!(
            verdict,
            Verdict::Fail(
                "QEMU exited 1 but the console has no `rtedge: shutdown code=0` line: either QEMU failed (see its \
                 stderr) or the guest exited 0 without announcing it; expected guest code 0 (success); no `ktest: \
                 result: N passed, 0 failed` line on the console; no `ktest: running N tests` line either: the \
                 image did not run the test harness"
                    .to_string()
            )
        );
    }

    #[test]
    fn judge_reports_wrong_codes_timeouts_and_kvm_skips() {
        let profile = ktest_profile();
        let panic = captured(Some(Exited(2)), "rtedge: shutdown code=2\n");
        let (verdict, code) = judge(&profile, Hypervisor::Uhyve, &panic);
        assert_eq!(code, Some(GuestCode(2)));
        assert!(
            matches!(&verdict, Verdict::Fail(reason) if reason.starts_with("guest exited with 2 (panic), expected 0 (success); no `ktest: result")),
            "{verdict:?}"
        );

        assert_eq!(judge(&profile, Hypervisor::QemuMicrovm, &captured(None, "")), (Verdict::Timeout(120), None));

        let mut no_kvm = captured(Some(Exited(101)), "");
        no_kvm.kvm_failure = Some("kvm_cpu.rs:115: Error(13)".to_string());
        assert_eq!(
            judge(&profile, Hypervisor::Uhyve, &no_kvm),
            (Verdict::Skipped("uhyve could not use KVM: kvm_cpu.rs:115: Error(13)".to_string()), None)
        );
    }
}
