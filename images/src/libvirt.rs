//! The appliance under libvirt: the domain XML (direct kernel boot, or
//! boot from a disk image through firmware) and a private `libvirtd` for
//! the fleet test.
//!
//! The domain is QEMU `q35` (libvirt 9.0 has no `microvm`). The
//! control plane is reached through a forwarded loopback port: with
//! libvirt's `passt` backend where libvirt has it (9.2 and later), else
//! with QEMU's own user networking passed through `<qemu:commandline>`
//! (libvirt 9.0, Debian 12: its `<interface type='user'>` cannot forward
//! ports). The virtio-net device sits on bus 0 either way: the kernel routes
//! the INTx of bus-0 slots only (see `kernel-ext/plane/src/net/device.rs`).
//!
//! The private daemon runs in session mode (`qemu:///session`) with its own
//! runtime, configuration and cache directories under one temporary
//! directory, so it touches nothing of the host's libvirt and needs no
//! systemd. As root it runs as `nobody` (a root `libvirtd` would be the
//! system instance, with the host's `/etc/libvirt` and `/run/libvirt`);
//! every file a domain reads is copied into its directory first.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::hypervisor::{Accel, PortForward, Tools};
use crate::image::{self, Layout};
use crate::profile::{Profile, Profiles};
use crate::{DomainArgs, FirmwareKind};

/// The XML namespace of `<qemu:commandline>`.
const QEMU_NAMESPACE: &str = "http://libvirt.org/schemas/domain/qemu/1.0";
/// The XML namespace of the `<metadata>` element rtedge writes.
pub const RTEDGE_NAMESPACE: &str = "https://github.com/rtedge/libvirt/appliance/1";
/// Candidate OVMF builds (Debian's `ovmf`): code, variables template.
const OVMF: [(&str, &str); 2] = [
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
];

/// How the domain boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boot {
    /// Direct kernel boot: QEMU loads the ELF (PVH entry), no disk.
    Kernel {
        image: PathBuf,
        cmdline: String,
        /// `-bios` ROM (qboot boots in milliseconds); `None`: SeaBIOS.
        rom: Option<PathBuf>,
    },
    /// Firmware boots a disk image (GRUB inside holds the command line).
    Disk { image: PathBuf, media: Media, firmware: Firmware },
}

/// What kind of disk image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    /// An ISO 9660 image, attached read-only as a CD-ROM.
    Iso,
    /// A qcow2 disk.
    Qcow2,
    /// A raw disk.
    Raw,
}

impl Media {
    /// From the file name: `.iso`, `.qcow2`, else raw.
    pub fn of(path: &Path) -> Media {
        match path.extension().and_then(|extension| extension.to_str()) {
            Some(extension) if extension.eq_ignore_ascii_case("iso") => Media::Iso,
            Some(extension) if extension.eq_ignore_ascii_case("qcow2") => Media::Qcow2,
            _ => Media::Raw,
        }
    }
}

/// The firmware that boots a disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS, QEMU's default.
    Bios,
    /// OVMF: its code (read-only flash) and a per-domain copy of its
    /// variables store made from the template.
    Uefi { code: PathBuf, vars_template: PathBuf },
}

impl Firmware {
    /// OVMF from Debian's `ovmf` package.
    pub fn uefi() -> Result<Firmware> {
        OVMF.iter()
            .find(|(code, vars)| Path::new(code).is_file() && Path::new(vars).is_file())
            .map(|(code, vars)| Firmware::Uefi { code: code.into(), vars_template: vars.into() })
            .context("no OVMF firmware found (Debian package `ovmf`)")
    }
}

/// How the forwarded port reaches the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NetBackend {
    /// libvirt's `passt` backend with `<portForward>` (libvirt 9.2+).
    Passt,
    /// QEMU's user networking (`-netdev user,hostfwd=`) passed through
    /// `<qemu:commandline>`; works with any libvirt.
    QemuUser,
}

/// Everything the domain XML says.
#[derive(Clone, Debug)]
pub struct Domain {
    pub name: String,
    pub boot: Boot,
    pub memory_mib: u32,
    pub smp: u32,
    pub accel: Accel,
    /// Host loopback port forwarded to the control plane.
    pub forward: PortForward,
    pub backend: NetBackend,
    /// The serial console is a pty (for `virsh console`); everything it
    /// prints is also written here.
    pub console_log: Option<PathBuf>,
    /// The per-domain UEFI variables store (disk boot under UEFI).
    pub nvram: Option<PathBuf>,
}

/// `&`, `<`, `>`, `'` and `"` as XML entities.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            other => out.push(other),
        }
    }
    out
}

fn path_text(path: &Path) -> String {
    escape(&path.display().to_string())
}

impl Domain {
    /// The libvirt domain XML.
    pub fn xml(&self) -> String {
        let mut xml = String::new();
        let domain_type = match self.accel {
            Accel::Tcg => "qemu",
            Accel::Kvm => "kvm",
        };
        let namespace = if self.backend == NetBackend::QemuUser { format!(" xmlns:qemu='{QEMU_NAMESPACE}'") } else { String::new() };
        let _ = writeln!(xml, "<domain type='{domain_type}'{namespace}>");
        let _ = writeln!(xml, "  <name>{}</name>", escape(&self.name));
        let _ = writeln!(xml, "  <description>rtedge appliance (written by rtedge-image domain)</description>");
        let _ = writeln!(xml, "  <metadata>");
        let _ = writeln!(xml, "    <rtedge:appliance xmlns:rtedge='{RTEDGE_NAMESPACE}' host='127.0.0.1' port='{}'/>", self.forward.host);
        let _ = writeln!(xml, "  </metadata>");
        let _ = writeln!(xml, "  <memory unit='MiB'>{}</memory>", self.memory_mib);
        let _ = writeln!(xml, "  <vcpu>{}</vcpu>", self.smp);
        match &self.boot {
            Boot::Kernel { image, cmdline, rom } => {
                let _ = writeln!(xml, "  <os>");
                let _ = writeln!(xml, "    <type arch='x86_64' machine='q35'>hvm</type>");
                if let Some(rom) = rom {
                    let _ = writeln!(xml, "    <loader type='rom'>{}</loader>", path_text(rom));
                }
                let _ = writeln!(xml, "    <kernel>{}</kernel>", path_text(image));
                let _ = writeln!(xml, "    <cmdline>{}</cmdline>", escape(cmdline));
                let _ = writeln!(xml, "  </os>");
            }
            Boot::Disk { media, firmware, .. } => {
                let _ = writeln!(xml, "  <os>");
                let _ = writeln!(xml, "    <type arch='x86_64' machine='q35'>hvm</type>");
                if let Firmware::Uefi { code, vars_template } = firmware {
                    let _ = writeln!(xml, "    <loader readonly='yes' type='pflash'>{}</loader>", path_text(code));
                    match &self.nvram {
                        Some(nvram) => {
                            let _ = writeln!(xml, "    <nvram template='{}'>{}</nvram>", path_text(vars_template), path_text(nvram));
                        }
                        None => {
                            let _ = writeln!(xml, "    <nvram template='{}'/>", path_text(vars_template));
                        }
                    }
                }
                let device = if *media == Media::Iso { "cdrom" } else { "hd" };
                let _ = writeln!(xml, "    <boot dev='{device}'/>");
                let _ = writeln!(xml, "  </os>");
            }
        }
        // ACPI: the power button is how `virsh shutdown` asks the guest.
        let _ = writeln!(xml, "  <features><acpi/></features>");
        let _ = writeln!(xml, "  <clock offset='utc'/>");
        // A reset is a triple fault or a reboot request; under test either
        // must end the domain rather than loop through boots unseen.
        let _ = writeln!(xml, "  <on_poweroff>destroy</on_poweroff>");
        let _ = writeln!(xml, "  <on_reboot>destroy</on_reboot>");
        let _ = writeln!(xml, "  <on_crash>destroy</on_crash>");
        let _ = writeln!(xml, "  <devices>");
        let _ = writeln!(xml, "    <controller type='usb' model='none'/>");
        if let Boot::Disk { image, media, .. } = &self.boot {
            let (device, format, readonly) = match media {
                Media::Iso => ("cdrom", "raw", "<readonly/>"),
                Media::Qcow2 => ("disk", "qcow2", ""),
                Media::Raw => ("disk", "raw", ""),
            };
            let _ = writeln!(
                xml,
                "    <disk type='file' device='{device}'><driver name='qemu' type='{format}'/><source file='{}'/><target dev='sda' bus='sata'/>{readonly}</disk>",
                path_text(image)
            );
        }
        let _ = writeln!(xml, "    <serial type='pty'>");
        if let Some(log) = &self.console_log {
            let _ = writeln!(xml, "      <log file='{}' append='off'/>", path_text(log));
        }
        let _ = writeln!(xml, "      <target type='isa-serial' port='0'><model name='isa-serial'/></target>");
        let _ = writeln!(xml, "    </serial>");
        let _ = writeln!(xml, "    <console type='pty'><target type='serial' port='0'/></console>");
        if self.backend == NetBackend::Passt {
            let _ = writeln!(xml, "    <interface type='user'>");
            let _ = writeln!(xml, "      <backend type='passt'/>");
            let _ = writeln!(
                xml,
                "      <portForward proto='tcp' address='127.0.0.1'><range start='{}' to='{}'/></portForward>",
                self.forward.host, self.forward.guest
            );
            let _ = writeln!(xml, "      <model type='virtio-non-transitional'/>");
            let _ = writeln!(xml, "      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>");
            let _ = writeln!(xml, "    </interface>");
        }
        let _ = writeln!(xml, "    <memballoon model='none'/>");
        let _ = writeln!(xml, "  </devices>");
        if self.backend == NetBackend::QemuUser {
            let _ = writeln!(xml, "  <qemu:commandline>");
            let netdev = format!("user,id=rtedge0,hostfwd=tcp:127.0.0.1:{}-:{}", self.forward.host, self.forward.guest);
            for arg in ["-netdev", &netdev, "-device", "virtio-net-pci,netdev=rtedge0,disable-legacy=on,bus=pcie.0,addr=0x2"] {
                let _ = writeln!(xml, "    <qemu:arg value='{}'/>", escape(arg));
            }
            let _ = writeln!(xml, "  </qemu:commandline>");
        }
        let _ = writeln!(xml, "</domain>");
        xml
    }
}

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

/// Builds `profile` (cargo's messages on stderr) and returns the image
/// path and the command line with its token.
pub fn build_kernel(layout: &Layout, profile: &Profile) -> Result<(PathBuf, String, Option<String>)> {
    eprintln!("rtedge-image: building `{}`", profile.name);
    let image = image::build(layout, profile)?;
    let cmdline = crate::commands::compose_cmdline(&profile.spec.cmdline, None, image.token.as_deref());
    Ok((image.path, cmdline, image.token))
}

/// The firmware `kind` names.
pub fn firmware(kind: FirmwareKind) -> Result<Firmware> {
    match kind {
        FirmwareKind::Bios => Ok(Firmware::Bios),
        FirmwareKind::Uefi => Firmware::uefi(),
    }
}

/// `rtedge-image domain`: the XML on stdout (or in `--output`).
pub fn domain_command(layout: &Layout, profiles: &Profiles, tools: &Tools, args: &DomainArgs) -> Result<std::process::ExitCode> {
    let profile = profiles.get(&args.profile)?;
    let net = profile.spec.net.with_context(|| format!("profile `{}` has no [net] section: no control plane to forward", profile.name))?;
    let mut forward = net.forward();
    if let Some(port) = args.port.or(env_number("RTEDGE_PORT")?) {
        ensure!(port != 0, "host port 0 cannot be forwarded");
        forward.host = port;
    }
    let smp = match args.smp {
        Some(smp) => smp,
        None => env_number("RTEDGE_SMP")?.unwrap_or(profile.spec.smp),
    };
    ensure!((1..=255).contains(&smp), "{smp} CPUs requested; use 1 to 255");
    let absolute =
        |path: &Path| -> Result<PathBuf> { std::fs::canonicalize(path).with_context(|| format!("cannot find {}", path.display())) };
    let (boot, nvram) = match &args.disk {
        Some(disk) => {
            let image = absolute(disk)?;
            let firmware = firmware(args.firmware)?;
            let nvram = matches!(firmware, Firmware::Uefi { .. }).then(|| {
                let directory = image.parent().map(Path::to_path_buf).unwrap_or_default();
                directory.join(format!("{}-vars.fd", args.name))
            });
            (Boot::Disk { media: Media::of(&image), image, firmware }, nvram)
        }
        None => {
            let (image, cmdline, _) = build_kernel(layout, profile)?;
            (Boot::Kernel { image, cmdline, rom: tools.qboot.clone() }, None)
        }
    };
    let console_log = match &args.console_log {
        Some(path) if path.is_absolute() => Some(path.clone()),
        Some(path) => Some(std::env::current_dir()?.join(path)),
        None => None,
    };
    let domain = Domain {
        name: args.name.clone(),
        boot,
        memory_mib: profile.spec.memory_mib,
        smp,
        accel: args.accel,
        forward,
        backend: args.net,
        console_log,
        nvram,
    };
    let xml = domain.xml();
    match &args.output {
        Some(path) => {
            std::fs::write(path, &xml).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("rtedge-image: domain `{}` written to {} (control plane on 127.0.0.1:{})", args.name, path.display(), forward.host);
        }
        None => print!("{xml}"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `(major, minor)` from `virsh version`'s "Using library: libvirt 9.0.0".
pub fn parse_library_version(text: &str) -> Option<(u32, u32)> {
    let line = text.lines().find(|line| line.contains("Using library:"))?;
    let version = line.split_whitespace().last()?;
    let mut parts = version.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The backend to use with this libvirt: `passt` from 9.2 on when the
/// program is installed, else QEMU's user networking.
pub fn choose_backend(library: Option<(u32, u32)>, passt_installed: bool) -> NetBackend {
    match library {
        Some(version) if version >= (9, 2) && passt_installed => NetBackend::Passt,
        _ => NetBackend::QemuUser,
    }
}

/// `nobody`: who the private daemon runs as when we are root.
const NOBODY: u32 = 65534;
/// How long the daemon may take to answer after it starts.
const DAEMON_START: Duration = Duration::from_secs(30);
/// How long one `virsh` call may take.
const VIRSH_TIMEOUT: Duration = Duration::from_secs(60);

/// A `libvirtd` of our own, in session mode, removed with its directory on
/// drop (after destroying whatever domains still run).
pub struct Daemon {
    root: PathBuf,
    child: Option<Child>,
    /// `(uid, gid)` the daemon runs as when we are root.
    drop_to: Option<(u32, u32)>,
    /// Files the domains read (staged copies) and write (console logs).
    pub images: PathBuf,
}

impl Daemon {
    /// Starts `libvirtd` with its own directories under `root` (created;
    /// must not exist yet: a leftover from a killed run is removed first).
    pub fn start(root: &Path) -> Result<Daemon> {
        if root.exists() {
            std::fs::remove_dir_all(root).with_context(|| format!("cannot remove the leftover {}", root.display()))?;
        }
        // SAFETY: geteuid has no preconditions.
        let drop_to = (unsafe { libc::geteuid() } == 0).then_some((NOBODY, NOBODY));
        for directory in ["run", "config/libvirt", "cache", "home", "images"] {
            std::fs::create_dir_all(root.join(directory)).with_context(|| format!("cannot create {}", root.join(directory).display()))?;
        }
        // Chardev logs go straight to their files: no virtlogd to spawn
        // and reap.
        std::fs::write(root.join("config/libvirt/qemu.conf"), "stdio_handler = \"file\"\n")?;
        let mut daemon = Daemon { root: root.to_path_buf(), child: None, drop_to, images: root.join("images") };
        daemon.chown_tree(root)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join("run"), std::fs::Permissions::from_mode(0o700))?;
        daemon.spawn()?;
        Ok(daemon)
    }

    fn environment(&self, command: &mut Command) {
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/bin".into()))
            .env("HOME", self.root.join("home"))
            .env("XDG_RUNTIME_DIR", self.root.join("run"))
            .env("XDG_CONFIG_HOME", self.root.join("config"))
            .env("XDG_CACHE_HOME", self.root.join("cache"));
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("libvirtd.log"))
            .context("cannot open the libvirtd log")?;
        // /usr/sbin is not on every user's PATH.
        let program = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|directory| directory.join("libvirtd"))
            .find(|candidate| candidate.is_file())
            .unwrap_or_else(|| PathBuf::from("/usr/sbin/libvirtd"));
        let mut command = Command::new(program);
        self.environment(&mut command);
        command.current_dir(&self.root).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0);
        if let Some((uid, gid)) = self.drop_to {
            // std drops the supplementary groups too when it sets the uid.
            command.uid(uid).gid(gid);
        }
        let child = command.spawn().context("cannot start libvirtd (Debian package libvirt-daemon-driver-qemu); run `make deps`")?;
        self.child = Some(child);
        let deadline = Instant::now() + DAEMON_START;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("libvirtd exited ({status}) at start; its log:\n{}", self.log_tail());
            }
            if self.socket().exists() && self.virsh(&["version"]).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("libvirtd did not answer within {DAEMON_START:?}; its log:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the daemon (domains keep running, as under a real host's
    /// daemon restart), forgets that it autostarted domains (as a host
    /// reboot does: the runtime directory is a tmpfs there), and starts it
    /// again.
    pub fn restart_as_after_reboot(&mut self) -> Result<()> {
        self.stop_daemon();
        let marker = self.root.join("run/libvirt/qemu/run/autostarted");
        if marker.exists() {
            std::fs::remove_file(&marker).with_context(|| format!("cannot remove {}", marker.display()))?;
        }
        self.spawn()
    }

    fn stop_daemon(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on the daemon we started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn socket(&self) -> PathBuf {
        self.root.join("run/libvirt/libvirt-sock")
    }

    /// The connection URI for `virsh -c`.
    pub fn uri(&self) -> String {
        format!("qemu:///session?socket={}", self.socket().display())
    }

    /// Where the daemon's own log is.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("libvirtd.log")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        crate::e2e::guest::tail(&text, 15)
    }

    /// A `virsh -c URI` command (as us: root may use the daemon's socket);
    /// `quiet` (`-q`) leaves out virsh's own messages ("Domain started",
    /// "Connected to domain").
    pub fn virsh_command(&self, quiet: bool) -> Command {
        let mut command = Command::new("virsh");
        if quiet {
            command.arg("-q");
        }
        command.args(["-c", &self.uri()]);
        self.environment(&mut command);
        command
    }

    /// Runs `virsh ARGS`; its stdout, or an error with its stderr.
    pub fn virsh(&self, args: &[&str]) -> Result<String> {
        let output = self.virsh_output(args)?;
        ensure!(
            output.status.success(),
            "virsh {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs `virsh ARGS` within [`VIRSH_TIMEOUT`], whatever its status.
    pub fn virsh_output(&self, args: &[&str]) -> Result<Output> {
        let mut command = self.virsh_command(true);
        command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let child = command.spawn().context("cannot run virsh (Debian package libvirt-clients); run `make deps`")?;
        wait_output(child, VIRSH_TIMEOUT).with_context(|| format!("virsh {}", args.join(" ")))
    }

    /// `virsh domstate NAME`: `running`, `shut off`, ...
    pub fn state(&self, name: &str) -> Result<String> {
        Ok(self.virsh(&["domstate", name])?.trim().to_string())
    }

    /// Copies `file` into the daemon's image directory (readable by the
    /// daemon's user) and returns the copy's path.
    pub fn stage(&self, file: &Path, name: &str) -> Result<PathBuf> {
        let target = self.images.join(name);
        std::fs::copy(file, &target).with_context(|| format!("cannot copy {} to {}", file.display(), target.display()))?;
        self.chown_tree(&target)?;
        Ok(target)
    }

    /// A file or directory (recursively) handed to the daemon's user.
    pub fn chown_tree(&self, path: &Path) -> Result<()> {
        let Some((uid, gid)) = self.drop_to else {
            return Ok(());
        };
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).with_context(|| format!("cannot chown {}", path.display()))?;
        if path.is_dir() {
            for entry in std::fs::read_dir(path)? {
                self.chown_tree(&entry?.path())?;
            }
        }
        Ok(())
    }

    /// Destroys and undefines every domain this daemon knows.
    pub fn clear(&self) {
        let names = self.virsh(&["list", "--all", "--name"]).unwrap_or_default();
        for name in names.lines().map(str::trim).filter(|name| !name.is_empty()) {
            let _ = self.virsh_output(&["destroy", name]);
            let _ = self.virsh_output(&["undefine", name, "--nvram"]);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.clear();
        }
        self.stop_daemon();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The process `pid` if its command name (`/proc/PID/comm`) starts with `name`.
fn live_process(pid: libc::pid_t, name: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim().starts_with(name))
}

fn pid_in(path: &Path) -> Option<libc::pid_t> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok().filter(|pid: &libc::pid_t| *pid > 1)
}

/// Cleans up after fleet runs that were killed before their `Drop` ran:
/// for every `<directory>/<prefix><pid>` whose runner (`rtedge-image`,
/// process `pid`) is gone, kills the QEMU processes and the `libvirtd`
/// that its pid files name (after checking each pid is still that
/// program), then removes the directory. Returns how many it removed.
pub fn reap_stale(directory: &Path, prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(runner) = name.strip_prefix(prefix).and_then(|pid| pid.parse::<libc::pid_t>().ok()) else {
            continue;
        };
        if live_process(runner, "rtedge-image") {
            continue;
        }
        let root = entry.path();
        let qemu_pids = root.join("run/libvirt/qemu/run");
        let mut victims: Vec<libc::pid_t> = std::fs::read_dir(&qemu_pids)
            .map(|files| {
                files
                    .flatten()
                    .filter(|file| file.path().extension().is_some_and(|extension| extension == "pid"))
                    .filter_map(|file| pid_in(&file.path()))
                    .filter(|pid| live_process(*pid, "qemu-system"))
                    .collect()
            })
            .unwrap_or_default();
        victims.extend(pid_in(&root.join("run/libvirt/libvirtd.pid")).filter(|pid| live_process(*pid, "libvirtd")));
        for pid in victims {
            // SAFETY: kill(2) on a process this runner started in an earlier
            // run (named by that run's own pid files, program name checked).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if std::fs::remove_dir_all(&root).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Waits for `child` at most `limit` (then kills its process group) and
/// collects its output.
pub fn wait_output(mut child: Child, limit: Duration) -> Result<Output> {
    use std::io::Read;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(pipe) = stdout.as_mut() {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    });
    let err_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(pipe) = stderr.as_mut() {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    });
    let status = crate::vm::wait_or_kill(&mut child, limit)?;
    Ok(Output { status, stdout: out_reader.join().unwrap_or_default(), stderr: err_reader.join().unwrap_or_default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel_domain(backend: NetBackend) -> Domain {
        Domain {
            name: "edge-1".into(),
            boot: Boot::Kernel {
                image: "/images/appliance.elf".into(),
                cmdline: "log=info auth=a&b".into(),
                rom: Some("/usr/share/qemu/qboot.rom".into()),
            },
            memory_mib: 256,
            smp: 1,
            accel: Accel::Tcg,
            forward: PortForward { host: 16391, guest: 6379 },
            backend,
            console_log: Some("/logs/edge-1.log".into()),
            nvram: None,
        }
    }

    #[test]
    fn direct_kernel_boot_with_qemu_user_networking() {
        let xml = kernel_domain(NetBackend::QemuUser).xml();
        for expected in [
            "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>",
            "<type arch='x86_64' machine='q35'>hvm</type>",
            "<loader type='rom'>/usr/share/qemu/qboot.rom</loader>",
            "<kernel>/images/appliance.elf</kernel>",
            "<cmdline>log=info auth=a&amp;b</cmdline>",
            "<log file='/logs/edge-1.log' append='off'/>",
            "<qemu:arg value='user,id=rtedge0,hostfwd=tcp:127.0.0.1:16391-:6379'/>",
            "<qemu:arg value='virtio-net-pci,netdev=rtedge0,disable-legacy=on,bus=pcie.0,addr=0x2'/>",
            "port='16391'/>",
        ] {
            assert!(xml.contains(expected), "missing {expected} in\n{xml}");
        }
        assert!(!xml.contains("<interface"), "{xml}");
        assert!(!xml.contains("<disk"), "{xml}");
    }

    #[test]
    fn passt_forwards_the_port_in_the_interface() {
        let xml = kernel_domain(NetBackend::Passt).xml();
        assert!(xml.contains("<backend type='passt'/>"), "{xml}");
        assert!(xml.contains("<range start='16391' to='6379'/>"), "{xml}");
        assert!(xml.contains("bus='0x00' slot='0x02'"), "{xml}");
        assert!(!xml.contains("qemu:commandline"), "{xml}");
        assert!(xml.starts_with("<domain type='qemu'>"), "{xml}");
    }

    #[test]
    fn disk_boot_attaches_the_image_and_the_firmware() {
        let mut domain = kernel_domain(NetBackend::QemuUser);
        domain.boot =
            Boot::Disk { image: "/images/rtedge.iso".into(), media: Media::of(Path::new("/images/rtedge.iso")), firmware: Firmware::Bios };
        let xml = domain.xml();
        assert!(xml.contains("<boot dev='cdrom'/>"), "{xml}");
        assert!(xml.contains("device='cdrom'><driver name='qemu' type='raw'/><source file='/images/rtedge.iso'/>"), "{xml}");
        assert!(xml.contains("<readonly/>"), "{xml}");
        assert!(!xml.contains("<kernel>") && !xml.contains("<loader"), "{xml}");

        domain.boot = Boot::Disk {
            image: "/images/rtedge.qcow2".into(),
            media: Media::of(Path::new("/images/rtedge.qcow2")),
            firmware: Firmware::Uefi { code: "/ovmf/CODE.fd".into(), vars_template: "/ovmf/VARS.fd".into() },
        };
        domain.nvram = Some("/images/edge-1.vars.fd".into());
        let xml = domain.xml();
        assert!(xml.contains("<loader readonly='yes' type='pflash'>/ovmf/CODE.fd</loader>"), "{xml}");
        assert!(xml.contains("<nvram template='/ovmf/VARS.fd'>/images/edge-1.vars.fd</nvram>"), "{xml}");
        assert!(xml.contains("<boot dev='hd'/>"), "{xml}");
        assert!(xml.contains("device='disk'><driver name='qemu' type='qcow2'/>"), "{xml}");
    }

    #[test]
    fn the_backend_follows_the_libvirt_version() {
        let text = "Compiled against library: libvirt 9.0.0\nUsing library: libvirt 9.0.0\nUsing API: QEMU 9.0.0\n";
        assert_eq!(parse_library_version(text), Some((9, 0)));
        assert_eq!(choose_backend(Some((9, 0)), true), NetBackend::QemuUser);
        assert_eq!(choose_backend(Some((9, 2)), false), NetBackend::QemuUser);
        assert_eq!(choose_backend(Some((10, 0)), true), NetBackend::Passt);
        assert_eq!(choose_backend(None, true), NetBackend::QemuUser);
    }

    #[test]
    fn xml_special_characters_are_escaped() {
        assert_eq!(escape("a<b>&'\""), "a&lt;b&gt;&amp;&apos;&quot;");
    }
}
