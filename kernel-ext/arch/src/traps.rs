//! The IDT and the trap entry: 256 uniform stubs push the vector (and a zero
//! where the CPU pushes no error code), save every general register into a
//! [`TrapFrame`] on the current stack and call the handler the kernel
//! installed. The handler may switch threads; the frame stays on the
//! interrupted thread's stack until that thread is resumed and returns here.
//!
//! Kernel code is compiled soft-float (the target's ABI), so no handler
//! touches x87/SSE registers: the FPU state of the interrupted thread is
//! preserved without saving it here, and saved eagerly at thread switches.

use core::fmt;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::tables::{IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI, IST_PAGE_FAULT, KERNEL_CODE};

/// Registers saved at trap entry, in stack order (lowest address first).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl fmt::Display for TrapFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  rip {:#018x}  rsp {:#018x}  rflags {:#010x}", self.rip, self.rsp, self.rflags)?;
        writeln!(f, "  rax {:#018x}  rbx {:#018x}  rcx {:#018x}", self.rax, self.rbx, self.rcx)?;
        writeln!(f, "  rdx {:#018x}  rsi {:#018x}  rdi {:#018x}", self.rdx, self.rsi, self.rdi)?;
        writeln!(f, "  rbp {:#018x}  r8  {:#018x}  r9  {:#018x}", self.rbp, self.r8, self.r9)?;
        writeln!(f, "  r10 {:#018x}  r11 {:#018x}  r12 {:#018x}", self.r10, self.r11, self.r12)?;
        write!(f, "  r13 {:#018x}  r14 {:#018x}  r15 {:#018x}", self.r13, self.r14, self.r15)
    }
}

/// First vector not used by CPU exceptions.
pub const FIRST_EXTERNAL_VECTOR: u8 = 32;

/// The name of CPU exception `vector`, or `None` for external vectors.
pub fn exception_name(vector: u8) -> Option<&'static str> {
    Some(match vector {
        0 => "divide error (#DE)",
        1 => "debug (#DB)",
        2 => "non-maskable interrupt (NMI)",
        3 => "breakpoint (#BP)",
        4 => "overflow (#OF)",
        5 => "bound range exceeded (#BR)",
        6 => "invalid opcode (#UD)",
        7 => "device not available (#NM)",
        8 => "double fault (#DF)",
        9 => "coprocessor segment overrun",
        10 => "invalid TSS (#TS)",
        11 => "segment not present (#NP)",
        12 => "stack-segment fault (#SS)",
        13 => "general protection fault (#GP)",
        14 => "page fault (#PF)",
        16 => "x87 floating-point error (#MF)",
        17 => "alignment check (#AC)",
        18 => "machine check (#MC)",
        19 => "SIMD floating-point exception (#XM)",
        20 => "virtualization exception (#VE)",
        21 => "control protection exception (#CP)",
        28 => "hypervisor injection exception (#HV)",
        29 => "VMM communication exception (#VC)",
        30 => "security exception (#SX)",
        15 | 22..=27 | 31 => "reserved exception",
        _ => return None,
    })
}

/// Whether the CPU pushes an error code for `vector`.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Decodes a page-fault error code into words.
pub fn describe_page_fault(error_code: u64) -> PageFaultCause {
    PageFaultCause(error_code)
}

/// A page-fault error code, displayed as words.
#[derive(Clone, Copy, Debug)]
pub struct PageFaultCause(pub u64);

impl fmt::Display for PageFaultCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.0;
        let present = if code & 1 != 0 { "protection violation" } else { "page not present" };
        let access = if code & (1 << 4) != 0 {
            "instruction fetch"
        } else if code & 2 != 0 {
            "write"
        } else {
            "read"
        };
        write!(f, "{present} on {access}")?;
        if code & (1 << 3) != 0 {
            write!(f, ", reserved bit set")?;
        }
        Ok(())
    }
}

/// The kernel's trap handler: called for every vector.
pub type TrapHandler = fn(&mut TrapFrame);

/// The installed handler: a `&'static TrapHandler` (null = none yet), so
/// what is loaded is a reference to a handler, never a number turned into one.
static HANDLER: AtomicPtr<TrapHandler> = AtomicPtr::new(core::ptr::null_mut());

/// Installs the kernel's trap handler (called for every vector); the
/// handler lives in a `static` the kernel owns.
pub fn set_handler(handler: &'static TrapHandler) {
    HANDLER.store(core::ptr::from_ref(handler).cast_mut(), Ordering::Release);
}

#[unsafe(no_mangle)]
extern "C" fn rtedge_trap_dispatch(frame: &mut TrapFrame) {
    let handler = HANDLER.load(Ordering::Acquire);
    if handler.is_null() {
        // No kernel handler yet: nothing sensible to do but stop.
        crate::console::write(b"rtedge: trap before the kernel installed a handler\n");
        crate::exit::exit(6);
    }
    // SAFETY: only `set_handler` stores into HANDLER, always from a
    // `&'static TrapHandler`: valid, aligned and never written through.
    let handler: TrapHandler = unsafe { *handler };
    handler(frame);
}

core::arch::global_asm!(
    r#"
    .pushsection .text.traps, "ax"
    .p2align 4
    .global rtedge_trap_stubs
rtedge_trap_stubs:
    .set vector, 0
    .rept 256
    .p2align 4
    .if (vector == 8) || ((vector >= 10) && (vector <= 14)) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
    .else
    pushq $0
    .endif
    pushq $vector
    jmp rtedge_trap_common
    .set vector, vector + 1
    .endr

rtedge_trap_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    cld
    movq %rsp, %rdi
    call rtedge_trap_dispatch
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq
    .popsection
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static rtedge_trap_stubs: u8;
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    options: u16,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static mut IDT: Idt = Idt([Gate { offset_low: 0, selector: 0, options: 0, offset_middle: 0, offset_high: 0, reserved: 0 }; 256]);

/// Fills the IDT (once, on the boot CPU).
///
/// # Safety
/// Call once before any CPU loads the IDT.
pub unsafe fn init() {
    let base = &raw const rtedge_trap_stubs as u64;
    // SAFETY: single-threaded boot; nobody has loaded the IDT yet.
    let idt = unsafe { &mut *(&raw mut IDT) };
    for (vector, gate) in idt.0.iter_mut().enumerate() {
        let handler = base + 16 * vector as u64;
        let ist: u16 = match vector as u8 {
            2 => u16::from(IST_NMI),
            8 => u16::from(IST_DOUBLE_FAULT),
            14 => u16::from(IST_PAGE_FAULT),
            18 => u16::from(IST_MACHINE_CHECK),
            _ => 0,
        };
        *gate = Gate {
            offset_low: handler as u16,
            selector: KERNEL_CODE,
            // present, DPL 0, 64-bit interrupt gate (interrupts off on entry)
            options: 0x8e00 | ist,
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        };
    }
}

/// Loads the IDT on this CPU.
///
/// # Safety
/// [`init`] must have run, and this CPU's TSS must hold the IST stacks.
pub unsafe fn load() {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let pointer = Pointer { limit: (core::mem::size_of::<Idt>() - 1) as u16, base: &raw const IDT as u64 };
    // SAFETY: the IDT is 'static and filled.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &raw const pointer, options(readonly, nostack, preserves_flags)) };
}
