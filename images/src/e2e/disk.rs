//! End-to-end: the appliance as a disk image under firmware, and the ACPI
//! power button.
//!
//! The `make disk` images (built here from the e2e appliance, with the
//! e2e boot archive as the Multiboot2 module) boot under QEMU q35: the ISO
//! with SeaBIOS and with OVMF, the qcow2 with OVMF. Each must reach its
//! control plane (an authenticated PING over a forwarded port, and `FILES /`
//! listing the boot archive GRUB handed over), then stop like a real
//! machine: `system_powerdown` on the QEMU monitor presses the ACPI power
//! button, the guest logs its orderly shutdown and powers off through S5,
//! and QEMU exits 0. There is no `isa-debug-exit` device in these VMs, so
//! the power-off cannot come from the test path. One more run presses
//! microvm's power button (the generic event device) on a direct-boot kernel.
//!
//! TCG, SeaBIOS without a boot menu, GRUB with timeout 0. Times are printed
//! as figures, never judged.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::guest::{Target, free_port, tail};
use super::resp::{self, Conn};
use super::{Plan, Report};
use crate::disk::{self, DiskSpec};

/// OVMF as Debian's `ovmf` installs it: split code/variables, or one file.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const OVMF_WHOLE: &str = "/usr/share/ovmf/OVMF.fd";

/// Boot-to-PONG limit under TCG (firmware included).
const READY_LIMIT: Duration = Duration::from_secs(150);
/// From the button press to QEMU's exit.
const POWER_OFF_LIMIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Firmware {
    SeaBios,
    Ovmf,
    /// Direct kernel boot on microvm (qboot), for its GED power button.
    MicrovmDirect,
    /// Direct kernel boot on q35 with qboot (the PM1 fixed hardware).
    Q35Direct,
}

/// How the machine is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// `system_powerdown`: the ACPI power button; ends in S5.
    PowerButton,
    /// The `REBOOT` command; ends in the ACPI reset register (QEMU runs
    /// with `-no-reboot`, so the reset ends it).
    Reboot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Medium {
    Iso,
    Qcow2,
    Kernel,
}

struct Case {
    name: &'static str,
    firmware: Firmware,
    medium: Medium,
    stop: Stop,
}

const CASES: [Case; 6] = [
    Case {
        name: "disk: hybrid ISO boots under SeaBIOS (q35), control plane answers, ACPI power button powers off",
        firmware: Firmware::SeaBios,
        medium: Medium::Iso,
        stop: Stop::PowerButton,
    },
    Case {
        name: "disk: hybrid ISO boots under OVMF (q35, UEFI), control plane answers, ACPI power button powers off",
        firmware: Firmware::Ovmf,
        medium: Medium::Iso,
        stop: Stop::PowerButton,
    },
    Case {
        name: "disk: GPT qcow2 boots under OVMF (q35, UEFI), control plane answers, ACPI power button powers off",
        firmware: Firmware::Ovmf,
        medium: Medium::Qcow2,
        stop: Stop::PowerButton,
    },
    Case {
        name: "acpi: microvm power button (generic event device) runs the orderly shutdown and powers off",
        firmware: Firmware::MicrovmDirect,
        medium: Medium::Kernel,
        stop: Stop::PowerButton,
    },
    Case {
        name: "acpi: REBOOT on q35 runs the orderly shutdown and resets through the ACPI reset register",
        firmware: Firmware::Q35Direct,
        medium: Medium::Kernel,
        stop: Stop::Reboot,
    },
    Case {
        name: "acpi: REBOOT on microvm resets through the generic event device's reset register",
        firmware: Firmware::MicrovmDirect,
        medium: Medium::Kernel,
        stop: Stop::Reboot,
    },
];

/// Runs the selected disk scenarios (q35 is among the hypervisors under test).
pub fn run(plan: &Plan<'_>, report: &mut Report) {
    let wanted: Vec<&Case> = CASES.iter().filter(|case| super::selected(plan, case.name)).collect();
    if wanted.is_empty() {
        return;
    }
    let dir = plan.scratch.join("disk");
    let media = if wanted.iter().any(|case| case.medium != Medium::Kernel) {
        let Some(archive) = plan.initrd.clone() else {
            for case in &wanted {
                report.failed.push(format!("{}: no boot archive in the plan", case.name));
            }
            return;
        };
        let started = Instant::now();
        let spec = DiskSpec { kernel: plan.image.clone(), cmdline: plan.cmdline.clone(), archive, out_dir: dir.clone() };
        match disk::build_media(&spec) {
            Ok(media) => {
                let sizes: Vec<String> =
                    media.sizes().iter().map(|(path, bytes)| format!("{} {} KiB", file_name(path), bytes.div_ceil(1024))).collect();
                println!("e2e-figure: [disk] images built in {:.1} s: {}", started.elapsed().as_secs_f64(), sizes.join(", "));
                Some(media)
            }
            Err(error) => {
                for case in wanted.iter().filter(|case| case.medium != Medium::Kernel) {
                    println!("e2e: [disk] {} ... FAILED: building the images: {error:#}", case.name);
                    report.failed.push(format!("{}: building the images: {error:#}", case.name));
                }
                None
            }
        }
    } else {
        None
    };
    for case in wanted {
        let medium = match (case.medium, &media) {
            (Medium::Kernel, _) => plan.image.clone(),
            (Medium::Iso, Some(media)) => media.iso.clone(),
            (Medium::Qcow2, Some(media)) => media.qcow2.clone(),
            (_, None) => continue,
        };
        let started = Instant::now();
        match boot_and_power_off(plan, case, &medium, &dir) {
            Ok(figures) => {
                println!("e2e: [disk] {} ... ok ({:.1} s)", case.name, started.elapsed().as_secs_f64());
                for (what, value) in figures {
                    println!("e2e-figure: [disk] {what}: {value}");
                }
                report.passed += 1;
            }
            Err(error) => {
                println!("e2e: [disk] {} ... FAILED ({:.1} s): {error:#}", case.name, started.elapsed().as_secs_f64());
                report.failed.push(format!("{}: {error:#}", case.name));
            }
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |name| name.to_string_lossy().into_owned())
}

/// A QEMU process killed (with its group) when dropped.
struct Vm {
    child: Child,
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on the process group created for this child.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

fn qemu_args(plan: &Plan<'_>, case: &Case, medium: &Path, dir: &Path, port: u16, console: &Path, monitor: &Path) -> Result<Vec<String>> {
    let mut args: Vec<String> = Vec::new();
    let push = |args: &mut Vec<String>, items: &[&str]| args.extend(items.iter().map(|item| (*item).to_string()));
    match case.firmware {
        Firmware::MicrovmDirect => push(&mut args, &["-M", "microvm"]),
        Firmware::SeaBios | Firmware::Ovmf => push(&mut args, &["-M", "q35"]),
        Firmware::Q35Direct => {
            let qboot = plan.tools.qboot.as_ref().context("qboot.rom not found (Debian package qemu-system-data)")?;
            args.extend(["-M".into(), "q35".into(), "-bios".into(), qboot.display().to_string()]);
        }
    }
    push(&mut args, &["-nodefaults", "-no-user-config", "-no-reboot", "-accel", "tcg", "-display", "none"]);
    args.extend(["-m".into(), format!("{}M", plan.memory_mib), "-smp".into(), plan.smp.to_string()]);
    args.extend(["-serial".into(), format!("file:{}", console.display())]);
    args.extend(["-monitor".into(), format!("unix:{},server,nowait", monitor.display())]);
    args.extend(["-netdev".into(), format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:{}", plan.guest_port)]);
    match case.firmware {
        Firmware::SeaBios => push(&mut args, &["-boot", "menu=off"]),
        Firmware::Ovmf => {
            if Path::new(OVMF_CODE).is_file() && Path::new(OVMF_VARS).is_file() {
                let vars = dir.join(format!("ovmf-vars-{port}.fd"));
                std::fs::copy(OVMF_VARS, &vars).with_context(|| format!("cannot copy {OVMF_VARS}"))?;
                args.extend(["-drive".into(), format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}")]);
                args.extend(["-drive".into(), format!("if=pflash,format=raw,unit=1,file={}", vars.display())]);
            } else if Path::new(OVMF_WHOLE).is_file() {
                args.extend(["-bios".into(), OVMF_WHOLE.into()]);
            } else {
                bail!("OVMF not found ({OVMF_CODE} or {OVMF_WHOLE}; Debian package ovmf); run `make deps`");
            }
        }
        Firmware::MicrovmDirect | Firmware::Q35Direct => {}
    }
    match case.medium {
        Medium::Iso => args.extend(["-drive".into(), format!("file={},media=cdrom,if=ide,readonly=on", medium.display())]),
        // snapshot=on: the image stays as built.
        Medium::Qcow2 => args.extend(["-drive".into(), format!("file={},format=qcow2,if=virtio,snapshot=on", medium.display())]),
        Medium::Kernel => {
            args.extend(["-kernel".into(), medium.display().to_string(), "-append".into(), plan.cmdline.clone()]);
            if let Some(initrd) = &plan.initrd {
                args.extend(["-initrd".into(), initrd.display().to_string()]);
            }
        }
    }
    match case.firmware {
        Firmware::MicrovmDirect => push(&mut args, &["-device", "virtio-net-device,netdev=n0"]),
        _ => push(&mut args, &["-device", "virtio-net-pci,netdev=n0,disable-legacy=on"]),
    }
    Ok(args)
}

fn console_text(console: &Path) -> String {
    std::fs::read(console).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default()
}

/// Boots, waits for the control plane, checks the boot path and archive,
/// presses the power button and waits for QEMU to exit 0.
fn boot_and_power_off(plan: &Plan<'_>, case: &Case, medium: &Path, dir: &Path) -> Result<Vec<(String, String)>> {
    let qemu = plan.tools.qemu_program()?;
    let port = free_port()?;
    let console = dir.join(format!("{}-{port}-console.log", file_name(medium)));
    let monitor = dir.join(format!("monitor-{port}.sock"));
    let _ = std::fs::remove_file(&monitor);
    let args = qemu_args(plan, case, medium, dir, port, &console, &monitor)?;
    let started = Instant::now();
    let child = {
        use std::os::unix::process::CommandExt;
        Command::new(&qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", qemu.display()))?
    };
    let mut vm = Vm { child };
    let fail =
        |what: String, console: &Path| -> anyhow::Error { anyhow::anyhow!("{what}; console:\n{}", tail(&console_text(console), 25)) };

    // 1. The control plane answers.
    let target = Target::Loopback { port };
    let deadline = started + READY_LIMIT;
    while !console_text(&console).contains("net: address ") {
        if let Some(status) = vm.child.try_wait()? {
            return Err(fail(format!("QEMU exited early ({status})"), &console));
        }
        ensure!(Instant::now() < deadline, "{}", fail(format!("no network address within {READY_LIMIT:?}"), &console));
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut conn = loop {
        let attempt = Conn::authed(&target, &plan.token).and_then(|mut conn| {
            let reply = conn.call(&["PING"])?;
            ensure!(resp::text(&reply) == "PONG", "PING: {reply:?}");
            Ok(conn)
        });
        match attempt {
            Ok(conn) => break conn,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(250)),
            Err(error) => return Err(fail(format!("the control plane did not answer within {READY_LIMIT:?}: {error:#}"), &console)),
        }
    };
    let ready = started.elapsed();
    let text = console_text(&console);
    let expected_path = if case.medium == Medium::Kernel { "booted via pvh" } else { "booted via multiboot2" };
    ensure!(text.contains(expected_path), "{}", fail(format!("the console does not say `{expected_path}`"), &console));
    if case.medium != Medium::Kernel {
        // The boot archive arrived as a Multiboot2 module. `FILES` is a
        // command of the kmore module: the control plane answers before
        // the appliance has loaded its modules (CI, stop 16: `ERR unknown
        // command 'FILES'` on a slow OVMF boot).
        while !console_text(&console).contains("modules: loaded ") {
            ensure!(Instant::now() < deadline, "{}", fail(format!("the modules were not loaded within {READY_LIMIT:?}"), &console));
            std::thread::sleep(Duration::from_millis(100));
        }
        let listing = conn.call(&["FILES", "/"])?;
        let names: Vec<String> = resp::items(&listing)?.iter().filter_map(|entry| resp::field_text(entry, "name").ok()).collect();
        ensure!(names.iter().any(|name| name == "hello.txt"), "FILES / does not list the boot archive's hello.txt: {names:?}");
    }

    // 2. The power button (orderly shutdown, S5) or REBOOT (orderly, then
    //    the reset register); either way QEMU exits 0.
    let pressed = Instant::now();
    match case.stop {
        Stop::PowerButton => monitor_command(&monitor, "system_powerdown")?,
        Stop::Reboot => {
            let reply = conn.call(&["REBOOT"])?;
            ensure!(resp::text(&reply) == "OK", "REBOOT: {reply:?}");
        }
    }
    drop(conn);
    let status = loop {
        if let Some(status) = vm.child.try_wait()? {
            break status;
        }
        ensure!(
            pressed.elapsed() < POWER_OFF_LIMIT,
            "{}",
            fail(format!("QEMU still runs {POWER_OFF_LIMIT:?} after system_powerdown"), &console)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let powered_off = pressed.elapsed();
    let text = console_text(&console);
    let mut stderr = String::new();
    if let Some(mut pipe) = vm.child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    ensure!(status.success(), "{}", fail(format!("QEMU exited with {status} (stderr: {})", stderr.trim()), &console));
    let needles: &[&str] = match case.stop {
        Stop::PowerButton => &["power: power button: orderly shutdown", "rtedge: shutdown code=0", "rtedge: power off (ACPI S5)"],
        Stop::Reboot => &["power: REBOOT: orderly reboot", "rtedge: reboot (ACPI reset register)"],
    };
    for &needle in needles {
        ensure!(text.contains(needle), "{}", fail(format!("the console lacks `{needle}`"), &console));
    }
    ensure!(
        !text.contains("did not take") && !text.contains("did not reset"),
        "{}",
        fail("the ACPI register write did not take".into(), &console)
    );
    let unloaded = text.lines().filter(|line| line.contains(": unloaded")).count();
    ensure!(unloaded > 0, "{}", fail("no module reported its exit before power-off".into(), &console));
    Ok(vec![
        (format!("{} boot to PONG", file_name(medium)), format!("{:.1} s", ready.as_secs_f64())),
        (
            format!("{} {} to QEMU exit", file_name(medium), if case.stop == Stop::Reboot { "REBOOT" } else { "power button" }),
            format!("{:.2} s ({unloaded} modules unloaded)", powered_off.as_secs_f64()),
        ),
    ])
}

/// Sends one command to QEMU's human monitor on a unix socket and waits
/// for the next prompt (closing early can drop the line unexecuted).
fn monitor_command(socket: &PathBuf, command: &str) -> Result<()> {
    let stream = UnixStream::connect(socket).with_context(|| format!("cannot connect to the QEMU monitor {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 1024];
    let reader = stream.try_clone()?;
    let mut read_until = |seen: &mut Vec<u8>, prompts: usize| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while String::from_utf8_lossy(seen).matches("(qemu)").count() < prompts {
            ensure!(Instant::now() < deadline, "the QEMU monitor did not answer `{command}`: {:?}", String::from_utf8_lossy(seen));
            match (&reader).read(&mut chunk) {
                Ok(0) => bail!("the QEMU monitor closed: {:?}", String::from_utf8_lossy(seen)),
                Ok(count) => seen.extend_from_slice(&chunk[..count]),
                Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    };
    read_until(&mut seen, 1)?;
    (&stream).write_all(format!("{command}\n").as_bytes())?;
    read_until(&mut seen, 2)
}
