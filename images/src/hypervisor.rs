//! Every QEMU and uhyve command line rtedge uses, one function per
//! hypervisor, plus finding the programs on this host. Nothing here starts
//! a process; `vm` does that.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::exitcode::ExitConvention;

pub const QEMU: &str = "qemu-system-x86_64";
pub const UHYVE: &str = "uhyve";
/// qboot boots q35 in milliseconds where SeaBIOS takes seconds (Debian's qemu-system-data).
pub const QBOOT_ROM: &str = "/usr/share/qemu/qboot.rom";
pub const KVM_DEVICE: &str = "/dev/kvm";

/// A way to boot an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Hypervisor {
    /// QEMU `microvm`: no PCI, virtio-mmio devices, PVH entry.
    QemuMicrovm,
    /// QEMU `q35` with qboot: PCI, virtio-net-pci, PVH entry.
    QemuQ35,
    /// uhyve 0.10 (KVM only): Hermit boot protocol.
    Uhyve,
}

impl Hypervisor {
    pub const ALL: [Hypervisor; 3] = [Hypervisor::QemuMicrovm, Hypervisor::QemuQ35, Hypervisor::Uhyve];

    pub fn name(self) -> &'static str {
        match self {
            Hypervisor::QemuMicrovm => "qemu-microvm",
            Hypervisor::QemuQ35 => "qemu-q35",
            Hypervisor::Uhyve => "uhyve",
        }
    }

    pub fn is_qemu(self) -> bool {
        self != Hypervisor::Uhyve
    }

    pub fn exit_convention(self) -> ExitConvention {
        if self.is_qemu() { ExitConvention::Qemu } else { ExitConvention::Uhyve }
    }

    /// The accelerator actually used: uhyve is always KVM.
    pub fn effective_accel(self, requested: Accel) -> Accel {
        if self.is_qemu() { requested } else { Accel::Kvm }
    }
}

impl fmt::Display for Hypervisor {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// QEMU's accelerator. TCG is the reference platform here (see DESIGN.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Accel {
    #[default]
    Tcg,
    Kvm,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Where the console goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleMode {
    /// A person at a terminal: QEMU multiplexes its monitor onto stdio
    /// (Ctrl-A X quits, Ctrl-A C toggles the monitor).
    Interactive,
    /// The runner reads the console; no monitor, stdin is /dev/null.
    Captured,
}

/// A TCP port on the host loopback forwarded to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortForward {
    pub host: u16,
    pub guest: u16,
}

/// Everything that decides a hypervisor command line.
#[derive(Clone, Debug)]
pub struct BootSpec {
    pub image: PathBuf,
    pub cmdline: String,
    pub smp: u32,
    pub memory_mib: u32,
    pub accel: Accel,
    pub console: ConsoleMode,
    pub net: Option<PortForward>,
}

/// A program and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl fmt::Display for Invocation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.program.display())?;
        for arg in &self.args {
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '"') {
                write!(formatter, " '{arg}'")?;
            } else {
                write!(formatter, " {arg}")?;
            }
        }
        Ok(())
    }
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_string()).collect()
}

/// Arguments every QEMU machine shares: memory, CPUs, accelerator, the
/// kernel, the exit device and the console. QEMU names its threads
/// (`CPU 1/TCG`, ...) so that a benchmark can pin a vCPU's host thread
/// (`make rt-isolation`).
fn qemu_common(spec: &BootSpec) -> Vec<String> {
    let mut args = owned(&["-nodefaults", "-no-user-config", "-no-reboot", "-name", "rtedge,debug-threads=on"]);
    args.extend(owned(&["-accel", spec.accel.name()]));
    args.extend(["-m".to_string(), format!("{}M", spec.memory_mib)]);
    args.extend(["-smp".to_string(), spec.smp.to_string()]);
    args.extend(["-kernel".to_string(), spec.image.display().to_string()]);
    args.extend(["-append".to_string(), spec.cmdline.clone()]);
    args.extend(owned(&["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-display", "none"]));
    match spec.console {
        ConsoleMode::Interactive => args.extend(owned(&["-serial", "mon:stdio"])),
        ConsoleMode::Captured => args.extend(owned(&["-serial", "stdio", "-monitor", "none"])),
    }
    args
}

/// The guest port of `GET /metrics` when the command line sets no
/// `metrics_port=`.
pub const GUEST_METRICS_PORT: u16 = 9100;

/// The guest's metrics port for kernel command line `cmdline`: the last
/// `metrics_port=N`, else [`GUEST_METRICS_PORT`]; `None` when it is 0 (off)
/// or not a number.
pub fn guest_metrics_port(cmdline: &str) -> Option<u16> {
    let value = cmdline.split_whitespace().filter_map(|word| word.strip_prefix("metrics_port=")).next_back();
    match value {
        None => Some(GUEST_METRICS_PORT),
        Some(text) => text.parse::<u16>().ok().filter(|port| *port != 0),
    }
}

/// Adds `forward` to the QEMU user network of `invocation` (one more
/// `hostfwd=` on its `-netdev user,...`). Returns false when it has none.
pub fn add_qemu_forward(invocation: &mut Invocation, forward: PortForward) -> bool {
    let Some(netdev) = invocation.args.iter_mut().find(|arg| arg.starts_with("user,id=n0,")) else {
        return false;
    };
    netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{}-:{}", forward.host, forward.guest));
    true
}

fn qemu_netdev(forward: PortForward) -> Vec<String> {
    vec!["-netdev".to_string(), format!("user,id=n0,hostfwd=tcp:127.0.0.1:{}-:{}", forward.host, forward.guest)]
}

/// QEMU's network device for `hypervisor` on host tap device `tap`
/// (created beforehand; QEMU runs no script), instead of user networking.
pub fn qemu_tap_netdev(hypervisor: Hypervisor, tap: &str) -> Vec<String> {
    let device =
        if hypervisor == Hypervisor::QemuMicrovm { "virtio-net-device,netdev=n0" } else { "virtio-net-pci,netdev=n0,disable-legacy=on" };
    vec!["-netdev".into(), format!("tap,id=n0,ifname={tap},script=no,downscript=no"), "-device".into(), device.into()]
}

/// QEMU `microvm`: virtio-mmio devices (QEMU adds their location to the cmdline).
pub fn qemu_microvm(spec: &BootSpec) -> Vec<String> {
    let mut args = owned(&["-M", "microvm"]);
    args.extend(qemu_common(spec));
    if let Some(forward) = spec.net {
        args.extend(qemu_netdev(forward));
        args.extend(owned(&["-device", "virtio-net-device,netdev=n0"]));
    }
    args
}

/// QEMU `q35` with the given firmware (qboot): PCI devices, modern-only virtio.
pub fn qemu_q35(spec: &BootSpec, bios: &Path) -> Vec<String> {
    let mut args = owned(&["-M", "q35", "-bios"]);
    args.push(bios.display().to_string());
    args.extend(qemu_common(spec));
    if let Some(forward) = spec.net {
        args.extend(qemu_netdev(forward));
        args.extend(owned(&["-device", "virtio-net-pci,netdev=n0,disable-legacy=on"]));
    }
    args
}

/// uhyve: the kernel command line is the trailing arguments, one per word.
/// Networking needs a tap device (`--net tap:NAME`), root and a network
/// namespace, which this runner does not set up, so `spec.net` is ignored.
pub fn uhyve(spec: &BootSpec) -> Vec<String> {
    let mut args = owned(&["--no-aslr", "-m"]);
    args.push(format!("{}MiB", spec.memory_mib));
    args.extend(["-c".to_string(), spec.smp.to_string()]);
    args.push(spec.image.display().to_string());
    args.extend(spec.cmdline.split_whitespace().map(str::to_string));
    args
}

/// The hypervisor programs found on this host.
#[derive(Clone, Debug, Default)]
pub struct Tools {
    pub qemu: Option<PathBuf>,
    pub uhyve: Option<PathBuf>,
    pub qboot: Option<PathBuf>,
}

impl Tools {
    pub fn discover() -> Self {
        let qboot = PathBuf::from(QBOOT_ROM);
        Tools {
            qemu: find_program(QEMU, &[]),
            uhyve: find_program(UHYVE, &cargo_bin_dir().into_iter().collect::<Vec<_>>()),
            qboot: qboot.is_file().then_some(qboot),
        }
    }

    /// The full command line for `hypervisor`, or why it cannot be built here.
    pub fn invocation(&self, hypervisor: Hypervisor, spec: &BootSpec) -> Result<Invocation> {
        match hypervisor {
            Hypervisor::QemuMicrovm => Ok(Invocation { program: self.qemu_program()?, args: qemu_microvm(spec) }),
            Hypervisor::QemuQ35 => {
                let bios = self
                    .qboot
                    .as_deref()
                    .with_context(|| format!("{QBOOT_ROM} is missing (Debian package qemu-system-data); run `make deps`"))?;
                Ok(Invocation { program: self.qemu_program()?, args: qemu_q35(spec, bios) })
            }
            Hypervisor::Uhyve => Ok(Invocation { program: self.uhyve_program()?, args: uhyve(spec) }),
        }
    }

    pub fn qemu_program(&self) -> Result<PathBuf> {
        match &self.qemu {
            Some(path) => Ok(path.clone()),
            None => bail!("{QEMU} not found in PATH; run `make deps`"),
        }
    }

    pub fn uhyve_program(&self) -> Result<PathBuf> {
        match &self.uhyve {
            Some(path) => Ok(path.clone()),
            None => bail!("{UHYVE} not found in PATH or ~/.cargo/bin; run `make deps`"),
        }
    }
}

/// `$CARGO_HOME/bin`, else `~/.cargo/bin`, where `cargo install` puts uhyve.
fn cargo_bin_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME").filter(|home| !home.is_empty()) {
        return Some(PathBuf::from(home).join("bin"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin"))
}

/// Looks `name` up in `PATH`, then in `extra` directories.
fn find_program(name: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(extra.iter().cloned()).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Whether `/dev/kvm` opens read-write, or the exact reason it does not.
pub fn kvm_usable() -> std::result::Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(KVM_DEVICE)
        .map(drop)
        .map_err(|error| format!("cannot open {KVM_DEVICE} read-write: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(console: ConsoleMode, net: Option<PortForward>) -> BootSpec {
        BootSpec {
            image: PathBuf::from("/t/ktest.elf"),
            cmdline: "log=info auth=abc".to_string(),
            smp: 2,
            memory_mib: 256,
            accel: Accel::Tcg,
            console,
            net,
        }
    }

    const FORWARD: PortForward = PortForward { host: 6380, guest: 6379 };

    #[test]
    fn the_metrics_port_is_forwarded_next_to_the_control_port() {
        let mut invocation = Invocation { program: PathBuf::from("qemu"), args: qemu_microvm(&spec(ConsoleMode::Captured, Some(FORWARD))) };
        assert!(add_qemu_forward(&mut invocation, PortForward { host: 9101, guest: 9100 }));
        assert!(invocation.args.contains(&"user,id=n0,hostfwd=tcp:127.0.0.1:6380-:6379,hostfwd=tcp:127.0.0.1:9101-:9100".to_string()));
        let mut without = Invocation { program: PathBuf::from("qemu"), args: qemu_microvm(&spec(ConsoleMode::Captured, None)) };
        assert!(!add_qemu_forward(&mut without, PortForward { host: 9101, guest: 9100 }));
        assert_eq!(guest_metrics_port("log=info"), Some(9100));
        assert_eq!(guest_metrics_port("metrics_port=9200 log=info"), Some(9200));
        assert_eq!(guest_metrics_port("metrics_port=9200 metrics_port=0"), None);
        assert_eq!(guest_metrics_port("metrics_port=x"), None);
    }

    #[test]
    fn a_tap_device_replaces_user_networking_with_the_machines_own_nic() {
        assert_eq!(
            qemu_tap_netdev(Hypervisor::QemuMicrovm, "tap0").join(" "),
            "-netdev tap,id=n0,ifname=tap0,script=no,downscript=no -device virtio-net-device,netdev=n0"
        );
        assert_eq!(
            qemu_tap_netdev(Hypervisor::QemuQ35, "tap1").join(" "),
            "-netdev tap,id=n0,ifname=tap1,script=no,downscript=no -device virtio-net-pci,netdev=n0,disable-legacy=on"
        );
    }

    #[test]
    fn microvm_captured_without_net() {
        assert_eq!(
            qemu_microvm(&spec(ConsoleMode::Captured, None)).join(", "),
            "-M, microvm, -nodefaults, -no-user-config, -no-reboot, -name, rtedge,debug-threads=on, -accel, tcg, -m, 256M, -smp, 2, -kernel, /t/ktest.elf, -append, log=info auth=abc, -device, isa-debug-exit,iobase=0xf4,iosize=4, -display, none, -serial, stdio, -monitor, none"
        );
    }

    #[test]
    fn microvm_interactive_with_net_and_kvm() {
        let mut spec = spec(ConsoleMode::Interactive, Some(FORWARD));
        spec.accel = Accel::Kvm;
        assert_eq!(
            qemu_microvm(&spec).join(", "),
            "-M, microvm, -nodefaults, -no-user-config, -no-reboot, -name, rtedge,debug-threads=on, -accel, kvm, -m, 256M, -smp, 2, -kernel, /t/ktest.elf, -append, log=info auth=abc, -device, isa-debug-exit,iobase=0xf4,iosize=4, -display, none, -serial, mon:stdio, -netdev, user,id=n0,hostfwd=tcp:127.0.0.1:6380-:6379, -device, virtio-net-device,netdev=n0"
        );
    }

    #[test]
    fn q35_uses_qboot_and_virtio_net_pci() {
        assert_eq!(
            qemu_q35(&spec(ConsoleMode::Captured, Some(FORWARD)), Path::new("/q/qboot.rom")).join(", "),
            "-M, q35, -bios, /q/qboot.rom, -nodefaults, -no-user-config, -no-reboot, -name, rtedge,debug-threads=on, -accel, tcg, -m, 256M, -smp, 2, -kernel, /t/ktest.elf, -append, log=info auth=abc, -device, isa-debug-exit,iobase=0xf4,iosize=4, -display, none, -serial, stdio, -monitor, none, -netdev, user,id=n0,hostfwd=tcp:127.0.0.1:6380-:6379, -device, virtio-net-pci,netdev=n0,disable-legacy=on"
        );
    }

    #[test]
    fn uhyve_passes_cmdline_words_and_ignores_net() {
        assert_eq!(
            uhyve(&spec(ConsoleMode::Interactive, Some(FORWARD))),
            ["--no-aslr", "-m", "256MiB", "-c", "2", "/t/ktest.elf", "log=info", "auth=abc"]
        );
    }

    #[test]
    fn uhyve_with_empty_cmdline_has_no_trailing_args() {
        let mut spec = spec(ConsoleMode::Captured, None);
        spec.cmdline = "  ".to_string();
        assert_eq!(uhyve(&spec), ["--no-aslr", "-m", "256MiB", "-c", "2", "/t/ktest.elf"]);
    }

    #[test]
    fn invocation_reports_missing_programs() {
        let tools = Tools::default();
        let spec = spec(ConsoleMode::Captured, None);
        let error = |hypervisor| format!("{:#}", tools.invocation(hypervisor, &spec).expect_err("must fail"));
        assert_eq!(error(Hypervisor::QemuMicrovm), "qemu-system-x86_64 not found in PATH; run `make deps`");
        assert_eq!(error(Hypervisor::QemuQ35), "/usr/share/qemu/qboot.rom is missing (Debian package qemu-system-data); run `make deps`");
        assert_eq!(error(Hypervisor::Uhyve), "uhyve not found in PATH or ~/.cargo/bin; run `make deps`");
    }

    #[test]
    fn invocation_displays_quoted_arguments() {
        let invocation = Invocation {
            program: PathBuf::from("/usr/bin/qemu-system-x86_64"),
            args: vec!["-append".to_string(), "log=info a=b".to_string()],
        };
        assert_eq!(invocation.to_string(), "/usr/bin/qemu-system-x86_64 -append 'log=info a=b'");
    }

    #[test]
    fn names_match_the_profile_spelling() {
        let names: Vec<&str> = Hypervisor::ALL.iter().map(|hypervisor| hypervisor.name()).collect();
        assert_eq!(names, ["qemu-microvm", "qemu-q35", "uhyve"]);
        assert_eq!(Hypervisor::Uhyve.effective_accel(Accel::Tcg), Accel::Kvm);
        assert_eq!(Hypervisor::QemuQ35.effective_accel(Accel::Tcg), Accel::Tcg);
    }
}
