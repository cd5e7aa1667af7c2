//! Stopping the machine with a documented exit code.
//!
//! The guest code reaches the host as `(code << 1) | 1` under QEMU
//! (isa-debug-exit) and as `code` under uhyve. The runner (images/) holds the
//! same table.

use rtedge_arch::exit;

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
    if !hypervisor_exit && !crate::power::test_exit_device_present() {
        crate::console::line(format_args!("rtedge: power off (ACPI S5)"));
        crate::power::acpi_power_off();
        crate::console::line(format_args!("rtedge: ACPI power-off did not take; halting"));
    }
    exit::exit(code)
}

/// As [`shutdown`] with a symbolic code.
pub fn shutdown_with(code: ExitCode) -> ! {
    shutdown(code as u8)
}
