//! Stopping the machine with a documented exit code.
//!
//! The guest code reaches the host as `(code << 1) | 1` under QEMU
//! (isa-debug-exit) and as `code` under uhyve. The runner (images/) holds the
//! same table.

use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

use rtedge_arch::{cpu, exit};

/// The test runner's exit device (QEMU `isa-debug-exit,iobase=0xf4`).
const TEST_EXIT_PORT: u16 = 0xf4;

/// Whether the test exit device answered the probe (probed once at boot).
static TEST_DEVICE: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const PRESENT: u8 = 1;
const ABSENT: u8 = 2;

/// How to power the machine off (ACPI S5), registered by `power` once it
/// has read the FADT: this file stays below power, which imports much.
static POWER_OFF: AtomicPtr<fn()> = AtomicPtr::new(core::ptr::null_mut());

/// Registers the power-off `shutdown` uses where no exit device is there.
pub fn set_power_off(power_off: &'static fn()) {
    POWER_OFF.store(core::ptr::from_ref(power_off).cast_mut(), Ordering::Release);
}

/// Why the kernel stopped. The numbers are the guest exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Normal shutdown; all kernel tests passed.
    Success = 0,
    /// At least one kernel test failed.
    TestsFailed = 1,
    /// A Rust panic.
    Panic = 2,
    /// A stack ran into its guard page.
    StackOverflow = 3,
    /// A double fault not caused by a stack overflow.
    DoubleFault = 4,
    /// The heap could not satisfy an allocation.
    OutOfMemory = 5,
    /// Boot could not complete (no memory map, no clock, ...).
    BootFailure = 6,
}

/// The guest exit code for CPU exception `vector` (32 + vector).
pub const fn exception_exit_code(vector: u8) -> u8 {
    32 + vector
}

/// Whether `code` means a kernel failure (1..=6, or a CPU exception's
/// 32..=63): an application that asks to stop with one of these would be
/// reported as that failure, so requests from outside pick another.
pub const fn is_kernel_failure_code(code: u8) -> bool {
    matches!(code, 1..=6 | 32..=63)
}

/// Logs the shutdown line the runner checks, then stops: with the test
/// runner's exit device (QEMU `isa-debug-exit`) or uhyve's exit hypercall,
/// the host sees `code`; on a machine without them (a disk image under
/// firmware, libvirt, a cloud) it powers off through ACPI S5 like a real
/// machine, and the code is only in the log.
pub fn shutdown(code: u8) -> ! {
    crate::console::flush_deferred();
    crate::console::line(format_args!("rtedge: shutdown code={code}"));
    let hypervisor_exit = rtedge_arch::console::kind() == rtedge_arch::console::Console::Uhyve;
    let power_off = POWER_OFF.load(Ordering::Acquire);
    if !hypervisor_exit && !test_exit_device_present() {
        crate::console::line(format_args!("rtedge: power off (ACPI S5)"));
        if !power_off.is_null() {
            // SAFETY: only `set_power_off` stores here, from a `&'static fn()`
            // never written through.
            (unsafe { *power_off })();
        }
        crate::console::line(format_args!("rtedge: ACPI power-off did not take; halting"));
    }
    exit::exit(code)
}

/// As [`shutdown`] with a symbolic code.
pub fn shutdown_with(code: ExitCode) -> ! {
    shutdown(code as u8)
}

/// Whether QEMU's `isa-debug-exit` device is there: it reads as 0, an
/// unassigned port as all ones. Only the test runner adds it.
pub fn test_exit_device_present() -> bool {
    if rtedge_arch::console::kind() != rtedge_arch::console::Console::Serial {
        return false;
    }
    match TEST_DEVICE.load(Ordering::Acquire) {
        PRESENT => true,
        ABSENT => false,
        _ => {
            // SAFETY: reading the port has no side effect on the exit device
            // (it acts on writes) nor on an unassigned port.
            let value = unsafe { cpu::inb(TEST_EXIT_PORT) };
            let present = value != 0xff;
            TEST_DEVICE.store(if present { PRESENT } else { ABSENT }, Ordering::Release);
            present
        }
    }
}
