//! `rtedge-image`: builds rtedge kernel images from the profiles in
//! `images/profiles/` and boots them under QEMU (`microvm`, `q35`) and
//! uhyve. It owns every hypervisor command line, timeout and exit-code
//! mapping; the Makefile only calls it.
//!
//! It never decides pass/fail from wall time: timeouts only stop hung VMs,
//! and timings are printed as figures.

mod commands;
mod console;
mod disk;
mod e2e;
mod exitcode;
mod hypervisor;
mod image;
mod instances;
mod libvirt;
mod profile;
mod vm;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::hypervisor::{Accel, Hypervisor};

/// Build and boot rtedge images.
///
/// Exit status: `run` exits with the guest's code (0 when the user stopped
/// it: Ctrl-A X under QEMU, Ctrl-C under uhyve; 125 when the hypervisor
/// gave none, 128+N when it was killed by signal N); `test`, `bench` and
/// `boot-time` exit 0 when every run passed, 1 otherwise; 125 on the
/// runner's own errors (bad profile, failed build, missing tool); 130 when
/// interrupted.
#[derive(Debug, Parser)]
#[command(name = "rtedge-image", version)]
pub struct Cli {
    /// Show the hypervisor command lines and their warnings.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a profile's image: cargo build, copy to target/rtedge/<profile>.elf, patch ELF OS/ABI.
    Build {
        /// Profile name (a file in images/profiles/).
        profile: String,
    },
    /// Build, then boot interactively with the console on this terminal.
    Run(RunArgs),
    /// Boot test profiles under each of their hypervisors and check exit codes and the test harness.
    Test(TestArgs),
    /// Boot the `bench` profile and print its `bench:` lines per hypervisor.
    Bench {
        /// Only these hypervisors (repeatable; default: the profile's list).
        #[arg(long = "hv", value_enum)]
        hypervisors: Vec<Hypervisor>,
    },
    /// Boot the `ktest` image with `boot_only=1` repeatedly and report its boot times.
    BootTime {
        /// Boots per hypervisor.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
        runs: u32,
        /// Only these hypervisors (repeatable; default: all).
        #[arg(long = "hv", value_enum)]
        hypervisors: Vec<Hypervisor>,
    },
    /// Boot the appliance and drive it with redis-cli, redis-benchmark, rtctl and raw RESP; check every reply.
    E2e(E2eArgs),
    /// Show the profiles, their built images and the hypervisors found.
    Info,
    /// Build the appliance as disk images: a hybrid ISO (BIOS and UEFI) and a GPT disk with an EFI system partition (raw and qcow2).
    Disk {
        /// A release image: the token from RTEDGE_TOKEN or RTEDGE_TOKEN_FILE (required), never the development token.
        #[arg(long)]
        release: bool,
    },
    /// Write a libvirt domain XML for a profile (direct kernel boot, or --disk IMAGE through firmware).
    Domain(DomainArgs),
    /// Three appliances under a private libvirtd: define, autostart, start, console, fan-out status, shutdown, destroy.
    Fleet(FleetArgs),
}

/// Firmware that boots a disk image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FirmwareKind {
    /// SeaBIOS (the hybrid ISO).
    Bios,
    /// OVMF (the ISO or the GPT disk).
    Uefi,
}

#[derive(Debug, Args)]
pub struct DomainArgs {
    /// Profile name (a file in images/profiles/).
    #[arg(default_value = "appliance")]
    pub profile: String,
    /// Domain name.
    #[arg(long, default_value = "rtedge")]
    pub name: String,
    /// Host loopback port forwarded to the control plane (default: $RTEDGE_PORT, else the profile's).
    #[arg(long)]
    pub port: Option<u16>,
    /// Boot this disk image (ISO, qcow2 or raw, as `make disk` writes them) through firmware instead of loading the kernel.
    #[arg(long, value_name = "IMAGE")]
    pub disk: Option<std::path::PathBuf>,
    /// Firmware for --disk.
    #[arg(long, value_enum, default_value_t = FirmwareKind::Uefi)]
    pub firmware: FirmwareKind,
    /// Networking: qemu-user (QEMU's user networking via <qemu:commandline>, any libvirt) or passt (libvirt 9.2 and later).
    #[arg(long, value_enum, default_value_t = libvirt::NetBackend::QemuUser)]
    pub net: libvirt::NetBackend,
    /// Also write everything the serial console prints to this file.
    #[arg(long, value_name = "FILE")]
    pub console_log: Option<std::path::PathBuf>,
    /// Accelerator (domain type qemu or kvm).
    #[arg(long, value_enum, default_value_t = Accel::Tcg)]
    pub accel: Accel,
    /// Guest CPUs (default: $RTEDGE_SMP, else the profile's `smp`).
    #[arg(long)]
    pub smp: Option<u32>,
    /// Write the XML to this file instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Appliances to run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(3..=16))]
    pub count: u16,
    /// Boot each appliance from this disk image (ISO, qcow2 or raw) instead of loading the kernel.
    #[arg(long, value_name = "IMAGE")]
    pub disk: Option<std::path::PathBuf>,
    /// Firmware for --disk.
    #[arg(long, value_enum, default_value_t = FirmwareKind::Uefi)]
    pub firmware: FirmwareKind,
    /// Networking (default: passt where libvirt has it, else qemu-user).
    #[arg(long, value_enum)]
    pub net: Option<libvirt::NetBackend>,
    /// Fail when a guest ignores `virsh shutdown` (default: report it and destroy).
    #[arg(long)]
    pub require_acpi_shutdown: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Profile name (a file in images/profiles/).
    pub profile: String,
    /// Hypervisor (default: the first one the profile lists).
    #[arg(long = "hv", value_enum)]
    pub hypervisor: Option<Hypervisor>,
    /// QEMU accelerator (uhyve is always KVM).
    #[arg(long, value_enum)]
    pub accel: Option<Accel>,
    /// Guest CPUs (default: $RTEDGE_SMP, else the profile's `smp`).
    #[arg(long)]
    pub smp: Option<u32>,
    /// Words appended to the profile's kernel command line.
    #[arg(long, value_name = "K=V ...")]
    pub append: Option<String>,
    /// Host port forwarded to the control plane (default: $RTEDGE_PORT, else the profile's).
    #[arg(long)]
    pub port: Option<u16>,
    /// A cpio (newc) or tar archive handed to the guest as its boot files
    /// (QEMU `-initrd`; read by the kernel's file API, e.g. `file=/x` or
    /// `KMORE /x`). Default: $RTEDGE_INITRD.
    #[arg(long, value_name = "ARCHIVE")]
    pub initrd: Option<std::path::PathBuf>,
    /// Start in the background: the console goes to a log, the instance is
    /// registered under target/rtedge/instances/ (`rtctl ps`, `rtctl stop`,
    /// `rtctl console`), and `run` returns once the control plane is up.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// The instance's name (default: the profile's, then NAME-2, NAME-3, ...).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Profiles to test (repeatable; default: ktest, ktest-smp2, ktest-smp4, fault-page, fault-stack, fault-panic, fault-softirq-block, selftest-modules).
    #[arg(long = "profile")]
    pub profiles: Vec<String>,
    /// Only these hypervisors (repeatable; default: each profile's list).
    #[arg(long = "hv", value_enum)]
    pub hypervisors: Vec<Hypervisor>,
    /// QEMU accelerator (uhyve is always KVM).
    #[arg(long, value_enum, default_value_t = Accel::Tcg)]
    pub accel: Accel,
    /// Guest CPUs (default: $RTEDGE_SMP, else each profile's `smp`).
    #[arg(long)]
    pub smp: Option<u32>,
}

#[derive(Debug, Args)]
pub struct E2eArgs {
    /// Only these hypervisors (repeatable; default: qemu-microvm, qemu-q35, uhyve).
    #[arg(long = "hv", value_enum)]
    pub hypervisors: Vec<Hypervisor>,
    /// Only scenarios whose name contains this text (repeatable).
    #[arg(long = "only")]
    pub only: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Guest CPUs (default: $RTEDGE_SMP, else the appliance profile's `smp`).
    #[arg(long)]
    pub smp: Option<u32>,
}

/// The runner's own failure (not a guest's).
const EXIT_RUNNER_ERROR: u8 = 125;
/// Interrupted by the user (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    vm::install_interrupt_handler();
    match commands::dispatch(cli) {
        Ok(code) => code,
        // Interrupted (Ctrl-C during a build): 130, as the shell says it.
        Err(error) if vm::interrupted() => {
            eprintln!("rtedge-image: {error:#}");
            ExitCode::from(EXIT_INTERRUPTED)
        }
        Err(error) => {
            eprintln!("rtedge-image: error: {error:#}");
            ExitCode::from(EXIT_RUNNER_ERROR)
        }
    }
}
