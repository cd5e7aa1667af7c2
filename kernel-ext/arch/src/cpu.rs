//! Single instructions and registers of the x86_64 CPU, wrapped once so that
//! the rest of the kernel never writes inline assembly.

use core::arch::asm;

/// Reads the time stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects; CR4.TSD is never set by rtedge.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Runs CPUID for `leaf`/`subleaf`, returning (eax, ebx, ecx, edx).
#[inline]
pub fn cpuid(leaf: u32, subleaf: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// Reads a model-specific register.
///
/// # Safety
/// `msr` must exist on this CPU (reading an absent MSR faults).
#[inline]
pub unsafe fn read_msr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags)) };
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes a model-specific register.
///
/// # Safety
/// `msr` must exist and `value` must be valid for it; the caller owns the
/// consequences (e.g. GS base, APIC state).
#[inline]
pub unsafe fn write_msr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR and value are valid.
    unsafe { asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags)) };
}

/// Writes a byte to an I/O port. Port writes are not `nomem`: some are
/// hypercalls whose hypervisor reads guest memory named by the value.
///
/// # Safety
/// Port I/O reaches devices; the caller must own the device behind `port`.
#[inline]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller owns the device.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nostack, preserves_flags)) };
}

/// Writes a 16-bit word to an I/O port.
///
/// # Safety
/// As [`outb`].
#[inline]
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: the caller owns the device.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") value, options(nostack, preserves_flags)) };
}

/// Writes a 32-bit word to an I/O port.
///
/// # Safety
/// As [`outb`].
#[inline]
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller owns the device.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, preserves_flags)) };
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// As [`outb`]; reads may have side effects on the device.
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller owns the device.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads a 16-bit word from an I/O port.
///
/// # Safety
/// As [`inb`].
#[inline]
pub unsafe fn inw(port: u16) -> u16 {
    let value: u16;
    // SAFETY: the caller owns the device.
    unsafe { asm!("in ax, dx", in("dx") port, out("ax") value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads a 32-bit word from an I/O port.
///
/// # Safety
/// As [`inb`].
#[inline]
pub unsafe fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: the caller owns the device.
    unsafe { asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags)) };
    value
}

// Interrupt-flag changes are compiler barriers (no `nomem`): memory
// accesses must not move across them, or a lock's critical section could
// leak outside its interrupts-off window.

/// Enables maskable interrupts on this CPU.
#[inline(always)]
pub fn interrupts_enable() {
    // SAFETY: every vector has a handler once the IDT is loaded, which
    // precedes the first call (checked by `idt::is_loaded` in debug builds).
    unsafe { asm!("sti", options(nostack)) };
}

/// Disables maskable interrupts on this CPU.
#[inline(always)]
pub fn interrupts_disable() {
    // SAFETY: masking interrupts cannot break memory safety.
    unsafe { asm!("cli", options(nostack)) };
}

/// Whether maskable interrupts are enabled (RFLAGS.IF).
#[inline(always)]
pub fn interrupts_enabled() -> bool {
    let flags: u64;
    // SAFETY: reading RFLAGS has no side effects.
    unsafe { asm!("pushfq; pop {}", out(reg) flags, options(nomem, preserves_flags)) };
    flags & (1 << 9) != 0
}

/// Disables interrupts and returns whether they were enabled, for
/// [`interrupts_restore`].
#[inline(always)]
pub fn interrupts_save() -> bool {
    let was = interrupts_enabled();
    interrupts_disable();
    was
}

/// Re-enables interrupts if `was_enabled`.
#[inline(always)]
pub fn interrupts_restore(was_enabled: bool) {
    if was_enabled {
        interrupts_enable();
    }
}

/// Enables interrupts and halts until the next one, atomically (STI's
/// one-instruction shadow covers HLT, so no wake-up is lost).
#[inline(always)]
pub fn enable_and_halt() {
    // SAFETY: as `interrupts_enable`.
    unsafe { asm!("sti; hlt", options(nostack)) };
}

/// Takes any pending interrupt and disables interrupts again: a polling
/// loop's interrupt check. STI holds interrupts off for one more
/// instruction, hence the NOP between it and CLI. (No PAUSE: under QEMU's
/// TCG it leaves the vCPU's execution loop, which takes QEMU's global lock.)
#[inline(always)]
pub fn interrupt_window() {
    // SAFETY: as `interrupts_enable`.
    unsafe { asm!("sti; nop; cli", options(nostack)) };
}

/// Halts until the next interrupt (interrupts stay as they are).
#[inline(always)]
pub fn halt() {
    // SAFETY: HLT only waits.
    unsafe { asm!("hlt", options(nostack)) };
}

/// A spin-loop hint.
#[inline(always)]
pub fn pause() {
    core::hint::spin_loop();
}

/// Reads CR2, the faulting address of the last page fault.
#[inline]
pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR3, the physical address of the active top-level page table.
#[inline]
pub fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Loads CR3.
///
/// # Safety
/// `value` must be the physical address of a page table that maps the
/// currently executing code, stack and all live data identically.
#[inline]
pub unsafe fn write_cr3(value: u64) {
    // SAFETY: the caller guarantees the new tables map everything in use.
    unsafe { asm!("mov cr3, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Invalidates the TLB entry of the page containing `address` on this CPU.
#[inline]
pub fn invalidate_page(address: u64) {
    // SAFETY: INVLPG only drops a cached translation.
    unsafe { asm!("invlpg [{}]", in(reg) address, options(nostack, preserves_flags)) };
}

/// The CPU's brand string (CPUID 0x80000002..4), or "unknown".
pub fn brand_string(buffer: &mut [u8; 48]) -> &str {
    let (max_extended, ..) = cpuid(0x8000_0000, 0);
    if max_extended < 0x8000_0004 {
        return "unknown";
    }
    for (i, leaf) in (0x8000_0002u32..=0x8000_0004).enumerate() {
        let (a, b, c, d) = cpuid(leaf, 0);
        for (j, word) in [a, b, c, d].into_iter().enumerate() {
            let start = i * 16 + j * 4;
            buffer[start..start + 4].copy_from_slice(&word.to_le_bytes());
        }
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    core::str::from_utf8(&buffer[..end]).map(str::trim).unwrap_or("unknown")
}

/// Whether CPUID says we run under a hypervisor, and its vendor signature.
pub fn hypervisor_signature() -> Option<[u8; 12]> {
    let (_, _, ecx, _) = cpuid(1, 0);
    if ecx & (1 << 31) == 0 {
        return None;
    }
    let (_, b, c, d) = cpuid(0x4000_0000, 0);
    let mut signature = [0u8; 12];
    signature[0..4].copy_from_slice(&b.to_le_bytes());
    signature[4..8].copy_from_slice(&c.to_le_bytes());
    signature[8..12].copy_from_slice(&d.to_le_bytes());
    Some(signature)
}

/// Saves the x87/SSE state into `area` (FXSAVE).
///
/// # Safety
/// `area` must be valid for 512 bytes and 16-byte aligned.
#[inline(always)]
pub unsafe fn fxsave(area: *mut u8) {
    // SAFETY: the caller guarantees the save area.
    unsafe { asm!("fxsave64 [{}]", in(reg) area, options(nostack, preserves_flags)) };
}

/// Restores the x87/SSE state from `area` (FXRSTOR).
///
/// # Safety
/// `area` must hold a state written by FXSAVE (or a valid initial state) and
/// be 16-byte aligned.
#[inline(always)]
pub unsafe fn fxrstor(area: *const u8) {
    // SAFETY: the caller guarantees the save area.
    unsafe { asm!("fxrstor64 [{}]", in(reg) area, options(nostack, preserves_flags)) };
}

/// Fills XMM0..XMM15 with values derived from `seed` (for tests of the
/// context switch's FPU/SSE handling).
///
/// The sixteen registers are declared clobbered: the compiler may keep its
/// own values in them (on a target with SSE enabled it does), and an `asm!`
/// block that changes a register without saying so is undefined behaviour.
/// The kernel target has SSE off for its own code generation, so the
/// clobbers cost nothing there; they state the truth wherever this builds.
pub fn fill_vector_registers(seed: u64) {
    let values: [u64; 32] = core::array::from_fn(|i| seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i as u64));
    // SAFETY: loads 16 XMM registers from a local array; SSE2 is always
    // present and enabled (CR4.OSFXSR) on x86_64 as rtedge boots it, and
    // every register written is declared as a clobbered output.
    unsafe {
        asm!(
            "movdqu xmm0, [{p}]", "movdqu xmm1, [{p} + 16]", "movdqu xmm2, [{p} + 32]", "movdqu xmm3, [{p} + 48]",
            "movdqu xmm4, [{p} + 64]", "movdqu xmm5, [{p} + 80]", "movdqu xmm6, [{p} + 96]", "movdqu xmm7, [{p} + 112]",
            "movdqu xmm8, [{p} + 128]", "movdqu xmm9, [{p} + 144]", "movdqu xmm10, [{p} + 160]", "movdqu xmm11, [{p} + 176]",
            "movdqu xmm12, [{p} + 192]", "movdqu xmm13, [{p} + 208]", "movdqu xmm14, [{p} + 224]", "movdqu xmm15, [{p} + 240]",
            p = in(reg) values.as_ptr(),
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            options(nostack, readonly, preserves_flags)
        );
    }
}

/// Whether XMM0..XMM15 still hold what [`fill_vector_registers`] put there.
pub fn check_vector_registers(seed: u64) -> bool {
    let expected: [u64; 32] = core::array::from_fn(|i| seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i as u64));
    let mut actual = [0u64; 32];
    // SAFETY: stores 16 XMM registers into a local array.
    unsafe {
        asm!(
            "movdqu [{p}], xmm0", "movdqu [{p} + 16], xmm1", "movdqu [{p} + 32], xmm2", "movdqu [{p} + 48], xmm3",
            "movdqu [{p} + 64], xmm4", "movdqu [{p} + 80], xmm5", "movdqu [{p} + 96], xmm6", "movdqu [{p} + 112], xmm7",
            "movdqu [{p} + 128], xmm8", "movdqu [{p} + 144], xmm9", "movdqu [{p} + 160], xmm10", "movdqu [{p} + 176], xmm11",
            "movdqu [{p} + 192], xmm12", "movdqu [{p} + 208], xmm13", "movdqu [{p} + 224], xmm14", "movdqu [{p} + 240], xmm15",
            p = in(reg) actual.as_mut_ptr(),
            options(nostack, preserves_flags)
        );
    }
    actual == expected
}
