//! The one switch point: save the callee-saved registers, RFLAGS and the
//! x87/SSE state (FXSAVE, eagerly: no lazy-FPU #NM traps, which misbehave on
//! the hypervisors rtedge runs on) of the running thread, load the next's.
//!
//! The scheduler decides; this only switches.

use core::arch::global_asm;

/// A thread's saved machine state. Lives in the thread's control block.
#[repr(C, align(16))]
pub struct Context {
    fx_state: [u8; 512],
    stack_pointer: u64,
}

impl core::fmt::Debug for Context {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Context {{ rsp: {:#x} }}", self.stack_pointer)
    }
}

const FCW_DEFAULT: u16 = 0x037f;
const MXCSR_DEFAULT: u32 = 0x1f80;

impl Context {
    /// A context for a thread that has not run yet; `prepare` gives it a stack.
    pub const fn empty() -> Self {
        let mut fx_state = [0u8; 512];
        let fcw = FCW_DEFAULT.to_le_bytes();
        fx_state[0] = fcw[0];
        fx_state[1] = fcw[1];
        let mxcsr = MXCSR_DEFAULT.to_le_bytes();
        fx_state[24] = mxcsr[0];
        fx_state[25] = mxcsr[1];
        fx_state[26] = mxcsr[2];
        fx_state[27] = mxcsr[3];
        Self { fx_state, stack_pointer: 0 }
    }

    /// Lays out a first frame on the stack ending at `stack_top` so that the
    /// first switch to this context calls `entry(argument)` with interrupts
    /// disabled. `entry` must never return.
    ///
    /// # Safety
    /// `stack_top` must be the 16-byte aligned top of a writable stack of at
    /// least 128 bytes that nothing else uses.
    pub unsafe fn prepare(&mut self, stack_top: u64, entry: extern "C" fn(u64) -> !, argument: u64) {
        let frame: [u64; 8] = [
            0x2,                                          // RFLAGS: interrupts off
            0,                                            // r15
            0,                                            // r14
            argument,                                     // r13
            entry as usize as u64,                        // r12
            0,                                            // rbx
            0,                                            // rbp
            rtedge_thread_trampoline as *const () as u64, // return address
        ];
        let base = stack_top - 8 * frame.len() as u64;
        // SAFETY: the caller gives us the stack; `base` is within it.
        unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), base as *mut u64, frame.len()) };
        self.stack_pointer = base;
    }

    /// The saved stack pointer (for diagnostics).
    pub fn stack_pointer(&self) -> u64 {
        self.stack_pointer
    }
}

unsafe extern "C" {
    fn rtedge_switch_context(old: *mut Context, new: *const Context);
    fn rtedge_thread_trampoline();
}

/// Saves the running thread's state into `old` and resumes `new`. Returns
/// when some later switch resumes `old`.
///
/// # Safety
/// Interrupts must be disabled; `new` must hold a state saved by this
/// function or set up by [`Context::prepare`]; neither may move or be freed
/// while in use; `old` must not be resumed on two CPUs at once.
#[inline(always)]
pub unsafe fn switch(old: *mut Context, new: *const Context) {
    // SAFETY: per the caller.
    unsafe { rtedge_switch_context(old, new) };
}

/// Loads `new` without saving the current state (first switch on a CPU).
///
/// # Safety
/// As [`switch`]; the current stack is abandoned.
pub unsafe fn switch_first(new: *const Context) -> ! {
    let mut discarded = Context::empty();
    // SAFETY: per the caller; `discarded` is never resumed.
    unsafe { rtedge_switch_context(&mut discarded, new) };
    unreachable!("a discarded context was resumed")
}

global_asm!(
    r#"
    .pushsection .text.switch, "ax"
    .global rtedge_switch_context
rtedge_switch_context:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    pushfq
    fxsave64 (%rdi)
    movq %rsp, 512(%rdi)
    movq 512(%rsi), %rsp
    fxrstor64 (%rsi)
    popfq
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret

    .global rtedge_thread_trampoline
rtedge_thread_trampoline:
    movq %r13, %rdi
    xorl %ebp, %ebp
    call *%r12
    ud2
    .popsection
    "#,
    options(att_syntax)
);

/// IA32_GS_BASE.
const GS_BASE: u32 = 0xc000_0101;

/// Points GS at this CPU's local data. The first word of that data must be
/// its own address (read back by [`cpu_local_base`]).
///
/// # Safety
/// `base` must point at a CPU-local block that lives as long as the CPU runs
/// and whose first word holds `base`.
pub unsafe fn set_cpu_local_base(base: u64) {
    // SAFETY: per the caller.
    unsafe { crate::cpu::write_msr(GS_BASE, base) };
}

/// This CPU's local data block (0 before [`set_cpu_local_base`]).
#[inline(always)]
pub fn cpu_local_base() -> u64 {
    let value: u64;
    // SAFETY: reading gs:[0] is a plain load; the kernel calls this only
    // after `set_cpu_local_base` (before it, GS base 0 makes this a read of
    // the unmapped page 0, a reported fault rather than silent corruption).
    unsafe { core::arch::asm!("mov {}, gs:[0]", out(reg) value, options(nostack, preserves_flags, readonly)) };
    value
}
