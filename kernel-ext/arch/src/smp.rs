//! Starting secondary CPUs with INIT/SIPI: a real-mode trampoline copied
//! to a page below 1 MiB takes the CPU from 16-bit real mode through 32-bit
//! protected mode into long mode on the kernel's own page tables, then
//! jumps to the kernel with a stack and a CPU index from a parameter block.
//!
//! Under uhyve secondary CPUs are started by the hypervisor instead (see
//! `boot::release_hermit_secondary`).

use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::apic;

/// Physical page the trampoline runs from (below 1 MiB, 4 KiB aligned).
pub const TRAMPOLINE_ADDRESS: u64 = 0x8000;

global_asm!(
    r#"
    .pushsection .rodata.trampoline, "a"
    .p2align 12
    .global rtedge_trampoline_start
rtedge_trampoline_start:
    .code16
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    lgdtl (trampoline_gdt_pointer - rtedge_trampoline_start + 0x8000)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(trampoline_32 - rtedge_trampoline_start + 0x8000)

    .code32
trampoline_32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    /* PAE, OSFXSR, OSXMMEXCPT */
    movl %cr4, %eax
    orl $((1 << 5) | (1 << 9) | (1 << 10)), %eax
    movl %eax, %cr4
    movl (trampoline_cr3 - rtedge_trampoline_start + 0x8000), %eax
    movl %eax, %cr3
    /* EFER: LME, NXE */
    movl $0xC0000080, %ecx
    rdmsr
    orl $((1 << 8) | (1 << 11)), %eax
    wrmsr
    /* paging on, MP set, EM/TS clear */
    movl %cr0, %eax
    andl $~((1 << 2) | (1 << 3)), %eax
    orl $((1 << 31) | (1 << 1)), %eax
    movl %eax, %cr0
    ljmpl $0x18, $(trampoline_64 - rtedge_trampoline_start + 0x8000)

    .code64
trampoline_64:
    movq (trampoline_stack - rtedge_trampoline_start + 0x8000), %rsp
    movq (trampoline_cpu_index - rtedge_trampoline_start + 0x8000), %rdi
    movq (trampoline_entry - rtedge_trampoline_start + 0x8000), %rax
    /* Tell the starter the parameters are consumed. */
    lock incl (trampoline_ack - rtedge_trampoline_start + 0x8000)
    xorl %ebp, %ebp
    callq *%rax
    ud2

    .p2align 3
trampoline_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF  /* 0x08: 32-bit code */
    .quad 0x00CF92000000FFFF  /* 0x10: data */
    .quad 0x00AF9A000000FFFF  /* 0x18: 64-bit code */
trampoline_gdt_end:
trampoline_gdt_pointer:
    .word trampoline_gdt_end - trampoline_gdt - 1
    .long trampoline_gdt - rtedge_trampoline_start + 0x8000
    .p2align 3
    .global rtedge_trampoline_parameters
rtedge_trampoline_parameters:
trampoline_cr3:
    .quad 0
trampoline_stack:
    .quad 0
trampoline_entry:
    .quad 0
trampoline_cpu_index:
    .quad 0
trampoline_ack:
    .long 0
    .long 0
    .global rtedge_trampoline_end
rtedge_trampoline_end:
    .popsection
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static rtedge_trampoline_start: u8;
    static rtedge_trampoline_parameters: u8;
    static rtedge_trampoline_end: u8;
}

#[repr(C)]
struct Parameters {
    cr3: u64,
    stack: u64,
    entry: u64,
    cpu_index: u64,
    ack: AtomicU32,
    pad: u32,
}

/// Copies the trampoline to [`TRAMPOLINE_ADDRESS`].
///
/// # Safety
/// The page at `TRAMPOLINE_ADDRESS` must be mapped writable and executable
/// and not used for anything else while CPUs start.
pub unsafe fn install_trampoline() {
    let start = &raw const rtedge_trampoline_start as usize;
    let end = &raw const rtedge_trampoline_end as usize;
    // SAFETY: the source is the image's own bytes; the destination page is
    // reserved for the trampoline per the caller.
    unsafe { core::ptr::copy_nonoverlapping(start as *const u8, TRAMPOLINE_ADDRESS as *mut u8, end - start) };
}

fn parameters() -> *mut Parameters {
    let offset = &raw const rtedge_trampoline_parameters as u64 - &raw const rtedge_trampoline_start as u64;
    (TRAMPOLINE_ADDRESS + offset) as *mut Parameters
}

/// Why a CPU did not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// It never reached the trampoline's 64-bit code.
    NoResponse,
}

/// Starts the CPU with local APIC ID `apic_id` at `entry(cpu_index)` on
/// `stack_top`, with page tables `cr3` (below 4 GiB). Waits until it has
/// consumed the parameters. `delay_us` busy-waits with a calibrated clock.
///
/// # Safety
/// The trampoline must be installed; `stack_top` must be a stack owned by
/// that CPU; `entry` must never return; only one CPU is started at a time.
pub unsafe fn start_cpu(
    apic_id: u32,
    cr3: u64,
    stack_top: u64,
    entry: extern "C" fn(u64) -> !,
    cpu_index: u64,
    delay_us: &dyn Fn(u64),
) -> Result<(), StartError> {
    let parameters = parameters();
    // SAFETY: the parameter block lies in the installed trampoline page.
    unsafe {
        (*parameters).cr3 = cr3;
        (*parameters).stack = stack_top;
        (*parameters).entry = entry as *const () as u64;
        (*parameters).cpu_index = cpu_index;
        (*parameters).ack.store(0, Ordering::SeqCst);
    }
    let acknowledged = || {
        // SAFETY: as above; the target CPU increments `ack` atomically.
        unsafe { (*parameters).ack.load(Ordering::SeqCst) != 0 }
    };
    let page = (TRAMPOLINE_ADDRESS >> 12) as u8;
    apic::send_ipi(apic_id, apic::Ipi::Init);
    // Hypervisors need no 10 ms INIT settle time; 1 ms is kept as a margin.
    delay_us(1000);
    for _ in 0..2 {
        apic::send_ipi(apic_id, apic::Ipi::Startup(page));
        for _ in 0..1000 {
            if acknowledged() {
                return Ok(());
            }
            delay_us(100);
        }
    }
    Err(StartError::NoResponse)
}
