//! The local APIC: end of interrupt, the per-CPU timer (TSC-deadline mode
//! where the CPU has it, one-shot otherwise: armed for the next event, never
//! a periodic tick) and inter-processor interrupts. x2APIC (MSRs) where
//! available, xAPIC (MMIO at the base in IA32_APIC_BASE) otherwise.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::cpu;

const IA32_APIC_BASE: u32 = 0x1b;
const IA32_TSC_DEADLINE: u32 = 0x6e0;
const X2APIC_MSR_BASE: u32 = 0x800;

const REGISTER_ID: u32 = 0x20;
const REGISTER_TASK_PRIORITY: u32 = 0x80;
const REGISTER_EOI: u32 = 0xb0;
const REGISTER_SPURIOUS: u32 = 0xf0;
const REGISTER_ERROR_STATUS: u32 = 0x280;
const REGISTER_INTERRUPT_COMMAND: u32 = 0x300;
const REGISTER_INTERRUPT_COMMAND_HIGH: u32 = 0x310;
const REGISTER_LVT_TIMER: u32 = 0x320;
const REGISTER_LVT_LINT0: u32 = 0x350;
const REGISTER_LVT_LINT1: u32 = 0x360;
const REGISTER_LVT_ERROR: u32 = 0x370;
const REGISTER_TIMER_INITIAL: u32 = 0x380;
const REGISTER_TIMER_CURRENT: u32 = 0x390;
const REGISTER_TIMER_DIVIDE: u32 = 0x3e0;

const LVT_MASKED: u32 = 1 << 16;
const TIMER_MODE_TSC_DEADLINE: u32 = 0b10 << 17;

/// Vector of spurious interrupts (must end in 0xf on old APICs).
pub const SPURIOUS_VECTOR: u8 = 0xff;

static X2APIC: AtomicBool = AtomicBool::new(false);
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0xfee0_0000);
static TSC_DEADLINE: AtomicBool = AtomicBool::new(false);
/// APIC timer ticks per 2^32 TSC cycles (one-shot mode only).
static TICKS_PER_TSC_SCALED: AtomicU64 = AtomicU64::new(0);

/// Which register interface is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    X2Apic,
    XApic,
}

/// How the timer is programmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerMode {
    TscDeadline,
    OneShot,
}

/// Whether the CPU supports x2APIC and TSC-deadline.
pub fn capabilities() -> (bool, bool) {
    let (_, _, ecx, _) = cpu::cpuid(1, 0);
    (ecx & (1 << 21) != 0, ecx & (1 << 24) != 0)
}

/// The physical address of the xAPIC register page (to be mapped as device
/// memory by the kernel before [`init_local`] in xAPIC mode).
pub fn xapic_physical_base() -> u64 {
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU.
    unsafe { cpu::read_msr(IA32_APIC_BASE) & 0x000f_ffff_ffff_f000 }
}

fn read(register: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is enabled, so its MSR range exists.
        unsafe { cpu::read_msr(X2APIC_MSR_BASE + (register >> 4)) as u32 }
    } else {
        let address = XAPIC_BASE.load(Ordering::Relaxed) + u64::from(register);
        // SAFETY: the kernel mapped the xAPIC page as device memory.
        unsafe { core::ptr::read_volatile(address as *const u32) }
    }
}

fn write(register: u32, value: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is enabled, so its MSR range exists.
        unsafe { cpu::write_msr(X2APIC_MSR_BASE + (register >> 4), u64::from(value)) };
    } else {
        let address = XAPIC_BASE.load(Ordering::Relaxed) + u64::from(register);
        // SAFETY: the kernel mapped the xAPIC page as device memory.
        unsafe { core::ptr::write_volatile(address as *mut u32, value) };
    }
}

/// Chooses the register interface (global; every CPU then uses the same).
pub fn choose_mode(prefer_x2apic: bool) -> Mode {
    let (x2apic, deadline) = capabilities();
    TSC_DEADLINE.store(deadline, Ordering::Relaxed);
    XAPIC_BASE.store(xapic_physical_base(), Ordering::Relaxed);
    let use_x2apic = x2apic && prefer_x2apic;
    X2APIC.store(use_x2apic, Ordering::Relaxed);
    if use_x2apic { Mode::X2Apic } else { Mode::XApic }
}

/// Disables TSC-deadline use (for tests of the one-shot path).
pub fn force_one_shot() {
    TSC_DEADLINE.store(false, Ordering::Relaxed);
}

/// The timer mode in use.
pub fn timer_mode() -> TimerMode {
    if TSC_DEADLINE.load(Ordering::Relaxed) { TimerMode::TscDeadline } else { TimerMode::OneShot }
}

/// Enables this CPU's local APIC with all local interrupts masked and the
/// timer routed to `timer_vector` (disarmed).
///
/// # Safety
/// [`choose_mode`] must have run; in xAPIC mode the register page must be
/// mapped. Interrupts should be disabled.
pub unsafe fn init_local(timer_vector: u8, error_vector: u8) {
    // SAFETY: the APIC base MSR exists; enabling (and x2APIC) is idempotent.
    unsafe {
        let base = cpu::read_msr(IA32_APIC_BASE);
        let mut value = base | (1 << 11);
        if X2APIC.load(Ordering::Relaxed) {
            value |= 1 << 10;
        }
        if value != base {
            cpu::write_msr(IA32_APIC_BASE, value);
        }
    }
    write(REGISTER_SPURIOUS, 0x100 | u32::from(SPURIOUS_VECTOR));
    write(REGISTER_TASK_PRIORITY, 0);
    write(REGISTER_LVT_LINT0, LVT_MASKED);
    write(REGISTER_LVT_LINT1, LVT_MASKED);
    write(REGISTER_LVT_ERROR, u32::from(error_vector));
    write(REGISTER_ERROR_STATUS, 0);
    write(REGISTER_ERROR_STATUS, 0);
    write(REGISTER_TIMER_DIVIDE, 0b1011); // divide by 1
    let mode = if TSC_DEADLINE.load(Ordering::Relaxed) { TIMER_MODE_TSC_DEADLINE } else { 0 };
    write(REGISTER_LVT_TIMER, u32::from(timer_vector) | mode);
    write(REGISTER_TIMER_INITIAL, 0);
    write(REGISTER_EOI, 0);
}

/// This CPU's APIC ID.
pub fn id() -> u32 {
    let value = read(REGISTER_ID);
    if X2APIC.load(Ordering::Relaxed) { value } else { value >> 24 }
}

/// Signals end of interrupt.
#[inline]
pub fn end_of_interrupt() {
    write(REGISTER_EOI, 0);
}

/// Starts the one-shot timer counting down from its maximum, for calibration.
pub fn calibration_start() {
    write(REGISTER_TIMER_DIVIDE, 0b1011);
    write(REGISTER_TIMER_INITIAL, u32::MAX);
}

/// The timer's current count (for calibration).
pub fn current_count() -> u32 {
    read(REGISTER_TIMER_CURRENT)
}

/// Records the one-shot timer's rate: `ticks` elapsed over `tsc_cycles`.
pub fn set_one_shot_rate(ticks: u64, tsc_cycles: u64) {
    if tsc_cycles > 0 {
        let scaled = ((u128::from(ticks) << 32) / u128::from(tsc_cycles)) as u64;
        TICKS_PER_TSC_SCALED.store(scaled.max(1), Ordering::Relaxed);
    }
}

/// The one-shot timer's rate in ticks per second, given the TSC rate.
pub fn one_shot_hz(tsc_hz: u64) -> u64 {
    ((u128::from(tsc_hz) * u128::from(TICKS_PER_TSC_SCALED.load(Ordering::Relaxed))) >> 32) as u64
}

/// Arms this CPU's timer to fire at TSC value `deadline` (at once if past).
pub fn arm_at_tsc(deadline: u64) {
    if TSC_DEADLINE.load(Ordering::Relaxed) {
        // SAFETY: TSC-deadline mode was detected via CPUID, so the MSR exists.
        unsafe { cpu::write_msr(IA32_TSC_DEADLINE, deadline.max(1)) };
    } else {
        let now = cpu::rdtsc();
        let cycles = deadline.saturating_sub(now);
        let ticks = (u128::from(cycles) * u128::from(TICKS_PER_TSC_SCALED.load(Ordering::Relaxed))) >> 32;
        let ticks = ticks.clamp(1, u128::from(u32::MAX)) as u32;
        write(REGISTER_TIMER_INITIAL, ticks);
    }
}

/// Disarms this CPU's timer.
pub fn disarm() {
    if TSC_DEADLINE.load(Ordering::Relaxed) {
        // SAFETY: as in `arm_at_tsc`.
        unsafe { cpu::write_msr(IA32_TSC_DEADLINE, 0) };
    } else {
        write(REGISTER_TIMER_INITIAL, 0);
    }
}

/// Reads and clears the error status register.
pub fn error_status() -> u32 {
    write(REGISTER_ERROR_STATUS, 0);
    read(REGISTER_ERROR_STATUS)
}

/// Inter-processor interrupt kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipi {
    Fixed(u8),
    Init,
    Startup(u8),
    Nmi,
}

fn wait_for_delivery() {
    if !X2APIC.load(Ordering::Relaxed) {
        let mut spins = 0;
        while read(REGISTER_INTERRUPT_COMMAND) & (1 << 12) != 0 && spins < 1_000_000 {
            cpu::pause();
            spins += 1;
        }
    }
}

/// Sends an inter-processor interrupt to the CPU with APIC ID `destination`.
pub fn send_ipi(destination: u32, ipi: Ipi) {
    let low: u32 = match ipi {
        Ipi::Fixed(vector) => u32::from(vector) | (1 << 14),
        Ipi::Init => (0b101 << 8) | (1 << 14),
        Ipi::Startup(page) => u32::from(page) | (0b110 << 8) | (1 << 14),
        Ipi::Nmi => (0b100 << 8) | (1 << 14),
    };
    let was = cpu::interrupts_save();
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode: the ICR is one 64-bit MSR.
        unsafe { cpu::write_msr(X2APIC_MSR_BASE + (REGISTER_INTERRUPT_COMMAND >> 4), (u64::from(destination) << 32) | u64::from(low)) };
    } else {
        wait_for_delivery();
        write(REGISTER_INTERRUPT_COMMAND_HIGH, destination << 24);
        write(REGISTER_INTERRUPT_COMMAND, low);
        wait_for_delivery();
    }
    cpu::interrupts_restore(was);
}

/// Sends a fixed interrupt to this CPU itself.
pub fn send_self(vector: u8) {
    let low = u32::from(vector) | (1 << 14) | (0b01 << 18);
    let was = cpu::interrupts_save();
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC SELF IPI register (0x83f) takes the vector.
        unsafe { cpu::write_msr(0x83f, u64::from(vector)) };
    } else {
        wait_for_delivery();
        write(REGISTER_INTERRUPT_COMMAND_HIGH, 0);
        write(REGISTER_INTERRUPT_COMMAND, low);
    }
    cpu::interrupts_restore(was);
}
