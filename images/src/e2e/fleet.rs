//! `rtedge-image fleet`: three appliances under a real `libvirtd`, driven
//! the way an operator drives a VM manager — `virsh define`, `autostart`,
//! `start --console`, `shutdown` (the ACPI power button), `destroy` — and
//! watched from the host: each control plane answers `AUTH` + `PING` on its
//! forwarded port, and `rtctl --fleet` shows them in one table.
//!
//! The daemon is our own (see `crate::libvirt::Daemon`): started here, in
//! session mode, with its own directories, and stopped at the end with
//! every domain it ran. Each step prints its time as an `e2e-figure:`
//! line; nothing is judged by wall time.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::guest::{Target, free_port, tail};
use super::resp::{self, Conn};
use crate::hypervisor::{Accel, PortForward};
use crate::libvirt::{self, Boot, Daemon, Domain, Firmware, Media, NetBackend};

/// How the fleet boots.
#[derive(Clone, Debug)]
pub enum FleetBoot {
    /// Direct kernel boot of the appliance ELF with this command line
    /// (the token included), optionally through a `-bios` ROM (qboot).
    Kernel { image: PathBuf, cmdline: String, rom: Option<PathBuf> },
    /// Firmware boots this disk image (ISO, qcow2 or raw), which carries
    /// its own command line and token.
    Disk { image: PathBuf, firmware: Firmware },
}

/// What the scenario needs from the runner.
pub struct FleetPlan {
    pub boot: FleetBoot,
    pub token: String,
    pub memory_mib: u32,
    pub smp: u32,
    pub guest_port: u16,
    pub count: usize,
    pub backend: Option<NetBackend>,
    pub rtctl: PathBuf,
    /// Kept after the run: the inventory, the console logs, libvirtd's log.
    pub scratch: PathBuf,
    /// Fail (rather than report and fall back to `destroy`) when the guest
    /// ignores `virsh shutdown`.
    pub require_acpi_shutdown: bool,
}

/// How long a booting appliance may take to answer `PING` (TCG, a shared
/// host).
const BOOT_LIMIT: Duration = Duration::from_secs(90);
/// How long the guest has to power off after `virsh shutdown`.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(20);
/// How long `virsh destroy` may take to show `shut off`.
const DESTROY_LIMIT: Duration = Duration::from_secs(15);
/// How long the console may take to show the banner.
const CONSOLE_LIMIT: Duration = Duration::from_secs(60);

/// The private daemon's directory is `<temp>/rtedge-fleet-<runner pid>`
/// (short: libvirt's socket paths inside it must fit `sun_path`).
const ROOT_PREFIX: &str = "rtedge-fleet-";

/// The banner's words: the kernel prints `rtedge <version> booted via ...`.
const BANNER: &str = " booted via ";

/// What a passing run found worth saying (e.g. a fallback it took).
pub struct FleetReport {
    pub notes: Vec<String>,
}

struct Steps {
    figures: Vec<(String, String)>,
    notes: Vec<String>,
}

impl Steps {
    /// Runs one step, printing its result and time.
    fn run<T>(&mut self, name: &str, step: impl FnOnce(&mut Steps) -> Result<T>) -> Result<T> {
        not_interrupted()?;
        let started = Instant::now();
        let result = step(self);
        let seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok(_) => println!("fleet: {name} ... ok ({seconds:.1} s)"),
            Err(error) => println!("fleet: {name} ... FAILED ({seconds:.1} s): {error:#}"),
        }
        self.figures.push((name.to_string(), format!("{seconds:.2} s")));
        result
    }

    fn note(&mut self, text: String) {
        println!("fleet: note: {text}");
        self.notes.push(text);
    }
}

/// One appliance of the fleet.
struct Member {
    name: String,
    port: u16,
    console_log: PathBuf,
}

/// Runs the scenario. An `Err` is the first failed step; the figures of
/// the steps before it are printed either way.
pub fn run(plan: &FleetPlan) -> Result<FleetReport> {
    std::fs::create_dir_all(&plan.scratch).with_context(|| format!("cannot create {}", plan.scratch.display()))?;
    let mut steps = Steps { figures: Vec::new(), notes: Vec::new() };
    let reaped = libvirt::reap_stale(&std::env::temp_dir(), ROOT_PREFIX);
    if reaped > 0 {
        println!("fleet: removed {reaped} leftover daemon director{} of killed runs", if reaped == 1 { "y" } else { "ies" });
    }
    let root = std::env::temp_dir().join(format!("{ROOT_PREFIX}{}", std::process::id()));
    let outcome = scenario(plan, &root, &mut steps);
    for (what, value) in &steps.figures {
        println!("e2e-figure: [libvirt] {what}: {value}");
    }
    outcome.map(|()| FleetReport { notes: steps.notes })
}

fn scenario(plan: &FleetPlan, root: &Path, steps: &mut Steps) -> Result<()> {
    ensure!(plan.count >= 3, "the fleet scenario needs at least 3 appliances (autostart, shutdown and destroy each take one)");
    let mut daemon = steps.run("start a private libvirtd", |_| Daemon::start(root))?;
    // The console logs and libvirtd's log outlive the daemon's directory.
    let result = drive(plan, &mut daemon, steps);
    keep_logs(plan, &daemon);
    steps.run("stop libvirtd and every domain", |_| {
        daemon.clear();
        drop(daemon);
        Ok(())
    })?;
    result
}

fn keep_logs(plan: &FleetPlan, daemon: &Daemon) {
    let _ = std::fs::copy(daemon.log_path(), plan.scratch.join("libvirtd.log"));
    if let Ok(entries) = std::fs::read_dir(&daemon.images) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|extension| extension == "log")
                && let Some(name) = path.file_name()
            {
                let _ = std::fs::copy(&path, plan.scratch.join(name));
            }
        }
    }
}

fn drive(plan: &FleetPlan, daemon: &mut Daemon, steps: &mut Steps) -> Result<()> {
    let version_text = daemon.virsh(&["version"])?;
    let library = libvirt::parse_library_version(&version_text);
    let backend = plan.backend.unwrap_or_else(|| libvirt::choose_backend(library, program_on_path("passt")));
    steps.note(format!(
        "libvirt {}, networking: {}",
        library.map_or_else(|| "(unknown version)".to_string(), |(major, minor)| format!("{major}.{minor}")),
        match backend {
            NetBackend::Passt => "passt with <portForward>",
            NetBackend::QemuUser => "QEMU user networking with hostfwd via <qemu:commandline> (libvirt before 9.2 has no passt backend)",
        }
    ));

    // ---- define
    let members = steps.run(&format!("define {} appliances", plan.count), |_| define(plan, daemon, backend))?;
    let [first, second, third, ..] = members.as_slice() else {
        bail!("fewer than 3 appliances defined");
    };

    // ---- autostart flag
    steps.run("virsh autostart (flag set and seen)", |_| {
        daemon.virsh(&["autostart", &first.name])?;
        let info = daemon.virsh(&["dominfo", &first.name])?;
        ensure!(
            info.lines().any(|line| line.starts_with("Autostart:") && line.contains("enable")),
            "dominfo does not show autostart enabled:\n{info}"
        );
        let listed = daemon.virsh(&["list", "--all", "--autostart", "--name"])?;
        let listed: Vec<&str> = listed.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
        ensure!(listed == [first.name.as_str()], "`virsh list --autostart` shows {listed:?}, expected only {}", first.name);
        Ok(())
    })?;

    // ---- start: the first with its console attached from the first byte
    // When each `virsh start` was issued, in the order of `members`.
    let mut started_at = vec![Instant::now()];
    let console =
        steps.run("virsh start --paused --console, resume: the console shows the boot", |_| start_with_console(daemon, &first.name))?;
    println!("fleet: [{}] console through virsh:\n{}", first.name, tail(&console, 4));
    steps.run("virsh start (the other appliances)", |_| {
        for member in members.iter().skip(1) {
            started_at.push(Instant::now());
            daemon.virsh(&["start", &member.name])?;
        }
        Ok(())
    })?;

    // ---- every control plane answers on its forwarded port
    steps.run("every control plane answers AUTH + PING", |steps| {
        // Polled concurrently, so each figure is that appliance's own time.
        let answers: Vec<Result<Duration>> = std::thread::scope(|scope| {
            let waiters: Vec<_> = members
                .iter()
                .zip(&started_at)
                .map(|(member, started)| {
                    scope.spawn(move || -> Result<Duration> {
                        let context = || format!("{}: console log:\n{}", member.name, tail(&read_lossy(&member.console_log), 15));
                        // Not before the guest has its address: slirp holds a
                        // SYN it forwards earlier until the host retransmits
                        // it, seconds later.
                        wait_console_log(&member.console_log, "net: address ", BOOT_LIMIT).with_context(context)?;
                        wait_pong(member.port, &plan.token, BOOT_LIMIT).with_context(context)?;
                        Ok(started.elapsed())
                    })
                })
                .collect();
            waiters.into_iter().map(|waiter| waiter.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a waiter panicked")))).collect()
        });
        for (member, answer) in members.iter().zip(answers) {
            let elapsed = answer?;
            steps.figures.push((format!("{} answering after virsh start", member.name), format!("{:.2} s", elapsed.as_secs_f64())));
        }
        Ok(())
    })?;
    steps.run("the console logs libvirt writes hold each boot banner", |_| {
        for member in &members {
            let text = read_lossy(&member.console_log);
            ensure!(
                text.lines().any(|line| line.contains("rtedge ") && line.contains(BANNER)),
                "{}: no banner in {}",
                member.name,
                member.console_log.display()
            );
        }
        Ok(())
    })?;

    // ---- the fleet table
    let inventory = write_inventory(plan, &members)?;
    steps.run("rtctl --fleet status: every appliance in one table", |_| {
        let (code, table) = fleet_status(plan, &inventory)?;
        println!("{}", table.trim_end());
        ensure!(code == 0, "rtctl --fleet exited {code}");
        for member in &members {
            let row = row_of(&table, &member.name)?;
            ensure!(row.contains("pvh"), "{}: no boot path in its row: {row}", member.name);
        }
        Ok(())
    })?;

    steps.run("rtctl --fleet virsh:URI status: the inventory from libvirt's domains", |_| {
        let source = format!("virsh:{}", daemon.uri());
        let (code, table) = rtctl_fleet(plan, std::ffi::OsStr::new(&source), &["--token", &plan.token])?;
        ensure!(code == 0, "rtctl --fleet {source} exited {code}:\n{table}");
        for member in &members {
            let row = row_of(&table, &member.name)?;
            ensure!(row.contains(&format!("127.0.0.1:{}", member.port)) && row.contains("pvh"), "{}: {row}", member.name);
        }
        Ok(())
    })?;

    // ---- virsh shutdown: the ACPI power button
    steps.run("virsh shutdown (ACPI power button)", |steps| {
        daemon.virsh(&["shutdown", &second.name])?;
        let started = Instant::now();
        if wait_state(daemon, &second.name, "shut off", SHUTDOWN_LIMIT)? {
            steps.figures.push(("guest powered off after virsh shutdown".into(), format!("{:.2} s", started.elapsed().as_secs_f64())));
            return Ok(());
        }
        let message = format!(
            "virsh shutdown: {} did not power off within {SHUTDOWN_LIMIT:?} (the kernel does not handle the ACPI power button yet?); falling back to virsh destroy",
            second.name
        );
        steps.note(message.clone());
        daemon.virsh(&["destroy", &second.name])?;
        ensure!(!plan.require_acpi_shutdown, "{message}");
        Ok(())
    })?;

    // ---- virsh destroy
    steps.run("virsh destroy", |_| {
        daemon.virsh(&["destroy", &third.name])?;
        ensure!(wait_state(daemon, &third.name, "shut off", DESTROY_LIMIT)?, "{} is not shut off after destroy", third.name);
        Ok(())
    })?;

    // ---- the table again: the stopped ones are errors in their rows
    steps.run("rtctl --fleet status with two appliances down: errors per row", |_| {
        let (code, table) = fleet_status(plan, &inventory)?;
        println!("{}", table.trim_end());
        ensure!(code == 6, "rtctl --fleet exited {code}, expected 6 (some appliances failed)");
        ensure!(row_of(&table, &first.name)?.contains("pvh"), "{} lost its row", first.name);
        for member in [second, third] {
            let row = row_of(&table, &member.name)?;
            ensure!(row.contains("cannot connect") || row.contains("connection"), "{}: its row shows no error: {row}", member.name);
        }
        Ok(())
    })?;

    // ---- autostart: the daemon starts the flagged domain after a reboot
    steps.run("autostart: after a host reboot libvirtd starts the flagged appliance", |_| {
        daemon.virsh(&["destroy", &first.name])?;
        ensure!(wait_state(daemon, &first.name, "shut off", DESTROY_LIMIT)?, "{} is not shut off", first.name);
        daemon.restart_as_after_reboot()?;
        ensure!(wait_state(daemon, &first.name, "running", DESTROY_LIMIT)?, "{} was not autostarted", first.name);
        for member in [second, third] {
            let state = daemon.state(&member.name)?;
            ensure!(state == "shut off", "{} (no autostart) is `{state}` after the restart", member.name);
        }
        wait_console_log(&first.console_log, "net: address ", BOOT_LIMIT).with_context(|| format!("{} after autostart", first.name))?;
        wait_pong(first.port, &plan.token, BOOT_LIMIT).with_context(|| format!("{} after autostart", first.name))?;
        Ok(())
    })?;
    Ok(())
}

fn define(plan: &FleetPlan, daemon: &Daemon, backend: NetBackend) -> Result<Vec<Member>> {
    // Files the domains read are copied next to them, readable by the
    // daemon's user.
    let staged = match &plan.boot {
        FleetBoot::Kernel { image, .. } => daemon.stage(image, "appliance.elf")?,
        FleetBoot::Disk { image, .. } => {
            let name = image.file_name().context("the disk image has no file name")?.to_string_lossy().into_owned();
            daemon.stage(image, &name)?
        }
    };
    let mut members = Vec::new();
    for index in 1..=plan.count {
        let name = format!("rtedge-fleet-{index}");
        let port = free_port()?;
        let console_log = daemon.images.join(format!("{name}-console.log"));
        let (boot, nvram) = match &plan.boot {
            FleetBoot::Kernel { cmdline, rom, .. } => {
                (Boot::Kernel { image: staged.clone(), cmdline: cmdline.clone(), rom: rom.clone() }, None)
            }
            FleetBoot::Disk { firmware, .. } => {
                let media = Media::of(&staged);
                let image = own_disk(daemon, &staged, media, &name)?;
                let nvram = matches!(firmware, Firmware::Uefi { .. }).then(|| daemon.images.join(format!("{name}-vars.fd")));
                (Boot::Disk { image, media, firmware: firmware.clone() }, nvram)
            }
        };
        let domain = Domain {
            name: name.clone(),
            boot,
            memory_mib: plan.memory_mib,
            smp: plan.smp,
            accel: Accel::Tcg,
            forward: PortForward { host: port, guest: plan.guest_port },
            backend,
            console_log: Some(console_log.clone()),
            nvram,
        };
        let xml_path = daemon.images.join(format!("{name}.xml"));
        std::fs::write(&xml_path, domain.xml()).with_context(|| format!("cannot write {}", xml_path.display()))?;
        daemon.virsh(&["define", &xml_path.display().to_string()])?;
        members.push(Member { name, port, console_log });
    }
    Ok(members)
}

/// Each domain writes its own disk: a qcow2 overlay on the shared image,
/// a copy of a raw one; an ISO is shared read-only.
fn own_disk(daemon: &Daemon, staged: &Path, media: Media, name: &str) -> Result<PathBuf> {
    match media {
        Media::Iso => Ok(staged.to_path_buf()),
        Media::Raw => daemon.stage(staged, &format!("{name}.img")),
        Media::Qcow2 => {
            let overlay = daemon.images.join(format!("{name}.qcow2"));
            let output = Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                .arg(staged)
                .arg(&overlay)
                .output()
                .context("cannot run qemu-img (Debian package qemu-utils)")?;
            ensure!(output.status.success(), "qemu-img create failed: {}", String::from_utf8_lossy(&output.stderr).trim());
            daemon.chown_tree(&overlay)?;
            Ok(overlay)
        }
    }
}

/// `virsh start --paused --console NAME` under a pseudo-terminal (virsh
/// wants one), then `virsh resume`: the console is attached before the
/// guest's first instruction, so it shows the whole boot. Returns what the
/// console showed up to the banner and the control plane's address.
fn start_with_console(daemon: &Daemon, name: &str) -> Result<String> {
    let (master, slave) = open_pty()?;
    let mut command = daemon.virsh_command(false);
    command
        .args(["start", "--paused", "--console", name])
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: only async-signal-safe calls between fork and exec: setsid(2)
    // makes virsh a session (and process group) leader without a terminal,
    // and TIOCSCTTY makes the pty on its stdin that terminal (virsh refuses
    // to attach a console without a controlling TTY).
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().context("cannot run virsh")?;
    // Our copies of the slave side go with the command: once virsh is gone
    // the master reads EIO and the reader ends.
    drop(command);
    let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let collected = Arc::clone(&seen);
    let mut reader = std::fs::File::from(master);
    // The reader ends when the slave side closes (EIO) as virsh is killed.
    let reader_thread = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(count) = reader.read(&mut chunk) {
            if count == 0 {
                break;
            }
            if let Ok(mut seen) = collected.lock() {
                seen.extend_from_slice(chunk.get(..count).unwrap_or_default());
            }
        }
    });
    let text = || seen.lock().map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default();
    let result = (|| -> Result<String> {
        let deadline = Instant::now() + CONSOLE_LIMIT;
        // Resume only once virsh is attached.
        while !text().contains("Connected to domain") {
            if let Some(status) = child.try_wait()? {
                bail!("virsh start --console exited ({status}): {}", text());
            }
            not_interrupted()?;
            ensure!(Instant::now() < deadline, "virsh did not attach the console within {CONSOLE_LIMIT:?}: {}", text());
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon.virsh(&["resume", name])?;
        loop {
            let shown = text();
            if shown.contains(BANNER) && shown.contains("net: address ") {
                return Ok(shown);
            }
            ensure!(
                Instant::now() < deadline,
                "the console did not show the banner and the address within {CONSOLE_LIMIT:?}; it showed:\n{}",
                tail(&shown, 15)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })();
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the process group created for this virsh; the
        // domain it attached to keeps running.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.wait();
    let _ = reader_thread.join();
    let shown = result?;
    ensure!(
        shown.lines().any(|line| line.contains("rtedge ") && line.contains(BANNER)),
        "no `rtedge ... booted via` line on the console:\n{shown}"
    );
    Ok(shown.replace("\r\n", "\n"))
}

/// A pseudo-terminal pair: (master, slave).
fn open_pty() -> Result<(OwnedFd, OwnedFd)> {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    // SAFETY: openpty(3) writes two descriptors into the locals; the name,
    // termios and window size pointers may be null.
    let result = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    ensure!(result == 0, "openpty failed: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are owned
    // by nothing else.
    let pair = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // The master must not leak into virsh.
    // SAFETY: fcntl(2) on a descriptor we own.
    unsafe { libc::fcntl(pair.0.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(pair)
}

/// Ctrl-C (or SIGTERM) ends the scenario at the next step or poll; the
/// daemon and its domains are still cleaned up.
fn not_interrupted() -> Result<()> {
    ensure!(!crate::vm::interrupted(), "interrupted");
    Ok(())
}

/// Polls `AUTH` + `PING` on the forwarded port until `PONG`.
fn wait_pong(port: u16, token: &str, limit: Duration) -> Result<()> {
    let target = Target::Loopback { port };
    let deadline = Instant::now() + limit;
    loop {
        let attempt = Conn::authed(&target, token).and_then(|mut conn| Ok(resp::text(&conn.call(&["PING"])?)));
        match attempt {
            Ok(reply) if reply == "PONG" => return Ok(()),
            _ if Instant::now() < deadline => {
                not_interrupted()?;
                std::thread::sleep(Duration::from_millis(250));
            }
            other => bail!("port {port}: no PONG within {limit:?} ({other:?})"),
        }
    }
}

/// Polls the console log libvirt writes until it holds `needle`.
fn wait_console_log(path: &Path, needle: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !read_lossy(path).contains(needle) {
        ensure!(Instant::now() < deadline, "`{needle}` not in {} within {limit:?}", path.display());
        not_interrupted()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Polls `virsh domstate` until it reads `wanted`; false at the bound.
fn wait_state(daemon: &Daemon, name: &str, wanted: &str, limit: Duration) -> Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        if daemon.state(name)? == wanted {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        not_interrupted()?;
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The inventory `rtctl --fleet` reads, with the token in a file beside it.
fn write_inventory(plan: &FleetPlan, members: &[Member]) -> Result<PathBuf> {
    let token_file = plan.scratch.join("fleet.token");
    std::fs::write(&token_file, format!("{}\n", plan.token))?;
    let mut text = String::from("# written by rtedge-image fleet: NAME HOST PORT TOKEN\n");
    for member in members {
        text.push_str(&format!("{} 127.0.0.1 {} file:fleet.token\n", member.name, member.port));
    }
    let path = plan.scratch.join("fleet.inventory");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// `rtctl --fleet INVENTORY status`: (exit code, the table).
fn fleet_status(plan: &FleetPlan, inventory: &Path) -> Result<(i32, String)> {
    rtctl_fleet(plan, inventory.as_os_str(), &[])
}

/// `rtctl --fleet SOURCE [ARGS] status`.
fn rtctl_fleet(plan: &FleetPlan, source: &std::ffi::OsStr, args: &[&str]) -> Result<(i32, String)> {
    let child = Command::new(&plan.rtctl)
        .arg("--fleet")
        .arg(source)
        .args(args)
        .args(["--timeout-ms", "15000", "status"])
        .env_remove("RTEDGE_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot run {}", plan.rtctl.display()))?;
    let output = libvirt::wait_output(child, Duration::from_secs(120)).context("rtctl --fleet")?;
    let table = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Ok((output.status.code().unwrap_or(-1), table))
}

/// The table row that starts with `name`.
fn row_of<'a>(table: &'a str, name: &str) -> Result<&'a str> {
    table.lines().find(|line| line.split_whitespace().next() == Some(name)).with_context(|| format!("no row for {name} in\n{table}"))
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default()
}

fn program_on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|directory| directory.join(name).is_file())
}

/// `rtedge-image fleet`: builds the appliance and rtctl, runs the scenario,
/// prints the figures; exit 0 when every step passed.
pub fn command(
    layout: &crate::image::Layout,
    profiles: &crate::profile::Profiles,
    tools: &crate::hypervisor::Tools,
    args: &crate::FleetArgs,
) -> Result<std::process::ExitCode> {
    let profile = profiles.get("appliance")?;
    let net = profile.spec.net.context("the appliance profile has no [net] section")?;
    tools.qemu_program()?;
    let (kernel, cmdline, token) = libvirt::build_kernel(layout, profile)?;
    let token = token.context("the appliance image has no control-plane token")?;
    let boot = match &args.disk {
        // The disk image carries its own command line; it must hold the
        // token of this build (the disk images are made from it).
        Some(disk) => FleetBoot::Disk {
            image: std::fs::canonicalize(disk).with_context(|| format!("cannot find {}", disk.display()))?,
            firmware: libvirt::firmware(args.firmware)?,
        },
        None => FleetBoot::Kernel { image: kernel, cmdline, rom: tools.qboot.clone() },
    };
    println!("rtedge-image: building rtctl");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet", "-p", "rtedge-ctl"])
        .current_dir(&layout.root)
        .status()
        .context("cannot run cargo to build rtctl")?;
    ensure!(status.success(), "building rtctl failed");
    let plan = FleetPlan {
        boot,
        token,
        memory_mib: profile.spec.memory_mib,
        // One vCPU each: three guests under TCG share the host's cores.
        smp: 1,
        guest_port: net.forward().guest,
        count: usize::from(args.count),
        backend: args.net,
        rtctl: layout.target.join("release/rtctl"),
        scratch: layout.output_dir().join("fleet"),
        require_acpi_shutdown: args.require_acpi_shutdown,
    };
    let started = Instant::now();
    let outcome = run(&plan);
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(report) => {
            println!("\nrtedge-image: fleet passed in {seconds:.0} s (logs and inventory in {})", plan.scratch.display());
            for note in &report.notes {
                println!("  note: {note}");
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(error) => {
            println!("\nrtedge-image: fleet FAILED after {seconds:.0} s: {error:#} (logs in {})", plan.scratch.display());
            Ok(std::process::ExitCode::FAILURE)
        }
    }
}
