//! Leaving the virtual machine with an exit code the host can read.
//!
//! QEMU: `isa-debug-exit` at port 0xf4 makes QEMU exit with `(code << 1) | 1`.
//! uhyve (interface v1): the exit hypercall at port 0x540 makes uhyve exit
//! with `code`. If neither device answers, ACPI power-off (q35) is tried and
//! the CPU halts with interrupts off, so a missing device never hangs silently
//! in a loop that burns the host CPU.

use crate::console::{self, Console};
use crate::cpu;

const ISA_DEBUG_EXIT: u16 = 0xf4;
const UHYVE_PORT_EXIT: u16 = 0x540;
/// q35's ICH9 PM1a control block: SLP_TYP=5 | SLP_EN.
const Q35_PM1A_CONTROL: u16 = 0x604;

#[repr(C)]
struct UhyveExit {
    code: i32,
}

/// In the identity-mapped image: the hypervisor reads it by physical address.
static mut UHYVE_EXIT_BLOCK: UhyveExit = UhyveExit { code: 0 };

/// Exits the VM with `code` (0..=127 reach the host intact under QEMU).
pub fn exit(code: u8) -> ! {
    cpu::interrupts_disable();
    match console::kind() {
        Console::Uhyve => {
            // SAFETY: interrupts are off and this CPU stops here; the block is
            // identity mapped below 4 GiB (uhyve v1).
            unsafe {
                let block = &raw mut UHYVE_EXIT_BLOCK;
                core::ptr::write_volatile(block, UhyveExit { code: i32::from(code) });
                cpu::outl(UHYVE_PORT_EXIT, block as u64 as u32);
            }
        }
        Console::Serial => {
            // SAFETY: isa-debug-exit ends the VM; absent, the write is ignored.
            unsafe { cpu::outl(ISA_DEBUG_EXIT, u32::from(code)) };
            // SAFETY: on q35 this powers off; elsewhere the port is unused.
            unsafe { cpu::outw(Q35_PM1A_CONTROL, 0x3400) };
        }
    }
    loop {
        cpu::interrupts_disable();
        cpu::halt();
    }
}
