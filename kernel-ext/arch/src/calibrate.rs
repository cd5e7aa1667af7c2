//! Finding the TSC frequency at boot, from whichever source this machine has:
//! the hypervisor's boot information (uhyve), CPUID leaf 0x15 (crystal ratio),
//! the hypervisor CPUID leaf 0x40000010, or a measurement against the PIT. The PIT
//! window also calibrates the APIC one-shot timer for free.

use crate::{apic, cpu};

/// Where the TSC frequency came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TscSource {
    /// The loader told us (uhyve's boot information).
    Hypervisor,
    /// CPUID leaf 0x15 (TSC / crystal ratio with the crystal frequency).
    CpuidCrystal,
    /// CPUID leaf 0x40000010 (hypervisor timing leaf).
    CpuidHypervisorLeaf,
    /// KVM's paravirtual clock (its TSC-to-nanoseconds scale).
    KvmClock,
    /// Measured against the 8254 PIT.
    Pit,
}

impl TscSource {
    pub fn name(self) -> &'static str {
        match self {
            TscSource::Hypervisor => "hypervisor boot info",
            TscSource::CpuidCrystal => "CPUID 0x15",
            TscSource::CpuidHypervisorLeaf => "CPUID 0x40000010",
            TscSource::KvmClock => "KVM clock",
            TscSource::Pit => "PIT measurement",
        }
    }
}

/// The result of calibration.
#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    pub tsc_hz: u64,
    pub source: TscSource,
}

/// Errors of calibration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalibrationError {
    /// No source answered (no PIT, no CPUID leaf, no hint).
    NoSource,
}

const PIT_HZ: u64 = 1_193_182;
/// The PIT window used for measurement.
const PIT_WINDOW_MS: u64 = 10;

/// Reads PIT channel 0's current count (latched, so both bytes match).
///
/// # Safety
/// The PIT belongs to the kernel at boot.
unsafe fn pit_count() -> u16 {
    // SAFETY: per the caller.
    unsafe {
        cpu::outb(0x43, 0b0000_0000); // latch channel 0
        let low = cpu::inb(0x40);
        let high = cpu::inb(0x40);
        u16::from_le_bytes([low, high])
    }
}

/// Measures the TSC against PIT channel 0 running freely (mode 2, count
/// 65536), polling its latched count; the APIC one-shot timer is measured
/// during the same window. Needs no port 0x61 gate, which QEMU's microvm
/// lacks. Returns TSC cycles per second.
fn measure_with_pit() -> Option<u64> {
    let window_ticks = PIT_HZ * PIT_WINDOW_MS / 1000;
    // SAFETY: the PIT belongs to the kernel at boot; its IRQ line is masked
    // at the legacy PIC (see `disable_legacy_pic`) and the I/O APIC.
    unsafe {
        cpu::outb(0x43, 0b0011_0100); // channel 0, lobyte/hibyte, mode 2
        cpu::outb(0x40, 0);
        cpu::outb(0x40, 0);
        // Each PIT read is bracketed by two TSC reads; the window's ends are
        // taken at tick edges whose bracket is tight, so a host preempting
        // the vCPU between the two clocks does not skew the result.
        let mut previous = pit_count();
        let mut spins = 0u32;
        let (start, mut bracket_start) = loop {
            let before = cpu::rdtsc();
            let now = pit_count();
            let after = cpu::rdtsc();
            if now != previous {
                previous = now;
                break (before / 2 + after / 2, after - before);
            }
            spins += 1;
            if spins > 1_000_000 {
                return None; // the count never moves: no PIT here
            }
        };
        apic::calibration_start();
        let apic_start = apic::current_count();
        let mut elapsed: u64 = 0;
        let mut stuck = 0u32;
        let mut end;
        loop {
            let before = cpu::rdtsc();
            let now = pit_count();
            let after = cpu::rdtsc();
            let delta = u64::from(previous.wrapping_sub(now));
            if delta == 0 {
                stuck += 1;
                if stuck > 10_000_000 {
                    return None;
                }
            } else {
                stuck = 0;
            }
            elapsed += delta;
            previous = now;
            end = before / 2 + after / 2;
            let bracket = after - before;
            // Accept the end once the window is full and the read was quick
            // (no slower than the start's or 1/4000 of the window).
            if elapsed >= window_ticks && delta != 0 && (bracket <= bracket_start.max((end - start) / 4000)) {
                break;
            }
            if elapsed >= 4 * window_ticks {
                break; // never got a tight read: take what we have
            }
            if elapsed < window_ticks && delta != 0 && bracket < bracket_start && elapsed == delta {
                bracket_start = bracket;
            }
        }
        let apic_end = apic::current_count();
        let cycles = end - start;
        apic::set_one_shot_rate(u64::from(apic_start.saturating_sub(apic_end)), cycles);
        apic::disarm();
        Some((u128::from(cycles) * u128::from(PIT_HZ) / u128::from(elapsed)) as u64)
    }
}

/// Remaps the legacy 8259 PICs away from the exception vectors and masks
/// every line: rtedge takes device interrupts through the I/O APIC only.
pub fn disable_legacy_pic() {
    // SAFETY: the PICs belong to the kernel; masking them only stops
    // interrupts rtedge never uses.
    unsafe {
        cpu::outb(0x20, 0x11); // ICW1: init, ICW4 follows
        cpu::outb(0xa0, 0x11);
        cpu::outb(0x21, 0x20); // ICW2: master vectors 0x20..
        cpu::outb(0xa1, 0x28); // slave vectors 0x28..
        cpu::outb(0x21, 0x04); // ICW3
        cpu::outb(0xa1, 0x02);
        cpu::outb(0x21, 0x01); // ICW4: 8086 mode
        cpu::outb(0xa1, 0x01);
        cpu::outb(0x21, 0xff); // mask all
        cpu::outb(0xa1, 0xff);
    }
}

/// KVM's per-vCPU time information (pvclock_vcpu_time_info).
#[repr(C, align(64))]
struct PvClockTimeInfo {
    version: u32,
    pad0: u32,
    tsc_timestamp: u64,
    system_time: u64,
    tsc_to_system_mul: u32,
    tsc_shift: i8,
    flags: u8,
    pad: [u8; 2],
}

impl PvClockTimeInfo {
    const ZERO: PvClockTimeInfo = PvClockTimeInfo {
        version: 0,
        pad0: 0,
        tsc_timestamp: 0,
        system_time: 0,
        tsc_to_system_mul: 0,
        tsc_shift: 0,
        flags: 0,
        pad: [0; 2],
    };
}

const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;

/// Whether this is KVM offering its paravirtual clock
/// (KVM_FEATURE_CLOCKSOURCE2, the `_NEW` MSRs).
fn kvm_clock_offered() -> bool {
    cpu::hypervisor_signature().is_some_and(|signature| &signature == b"KVMKVMKVM\0\0\0") && cpu::cpuid(0x4000_0001, 0).0 & (1 << 3) != 0
}

/// Reads the TSC rate from KVM's paravirtual clock: KVM publishes the scale
/// it uses to turn TSC cycles into nanoseconds, so the rate follows exactly.
fn from_kvm_clock() -> Option<u64> {
    if !kvm_clock_offered() {
        return None;
    }
    let mut info = PvClockTimeInfo::ZERO;
    let address = &raw mut info as u64;
    // SAFETY: the MSR exists (feature bit checked); `info` is identity
    // mapped (boot stack) and stays alive until the MSR is cleared below.
    unsafe { cpu::write_msr(MSR_KVM_SYSTEM_TIME_NEW, address | 1) };
    let mut result = None;
    for _ in 0..1000 {
        // SAFETY: KVM writes the block; volatile reads see its updates.
        let version = unsafe { core::ptr::read_volatile(&raw const info.version) };
        // SAFETY: as above.
        let multiplier = unsafe { core::ptr::read_volatile(&raw const info.tsc_to_system_mul) };
        // SAFETY: as above.
        let shift = unsafe { core::ptr::read_volatile(&raw const info.tsc_shift) };
        if version % 2 == 0 && multiplier != 0 {
            // ns = (cycles << shift) * mul >> 32, so Hz = 1e9 * 2^32 / mul / 2^shift.
            let mut hz = (1_000_000_000u128 << 32) / u128::from(multiplier);
            if shift >= 0 {
                hz >>= shift;
            } else {
                hz <<= -shift;
            }
            result = Some(hz as u64);
            break;
        }
        cpu::pause();
    }
    // SAFETY: clearing the enable bit stops KVM writing to `info`.
    unsafe { cpu::write_msr(MSR_KVM_SYSTEM_TIME_NEW, 0) };
    result
}

/// KVM's wall clock (pvclock_wall_clock): the Unix time at which the
/// paravirtual clock's `system_time` was zero.
#[repr(C, align(4))]
struct PvClockWallClock {
    version: u32,
    sec: u32,
    nsec: u32,
}

const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;

/// The wall-clock time now, in nanoseconds since the Unix epoch, from KVM's
/// paravirtual clock: its wall-clock base plus its system time, read
/// together with the TSC. For machines without a CMOS clock (QEMU `microvm`
/// under KVM has none). `None` when not on KVM or without
/// KVM_FEATURE_CLOCKSOURCE2.
pub fn kvm_wall_clock_ns() -> Option<u64> {
    if !kvm_clock_offered() {
        return None;
    }
    let mut wall = PvClockWallClock { version: 0, sec: 0, nsec: 0 };
    let mut info = PvClockTimeInfo::ZERO;
    // Both blocks are on the boot stack, identity mapped; the wall-clock MSR
    // is a one-time write by KVM, done when the write exits.
    // SAFETY: the MSRs exist (feature bit checked); the blocks outlive the
    // writes (the system-time MSR is cleared below).
    unsafe {
        cpu::write_msr(MSR_KVM_WALL_CLOCK_NEW, &raw mut wall as u64);
        cpu::write_msr(MSR_KVM_SYSTEM_TIME_NEW, &raw mut info as u64 | 1);
    }
    let mut result = None;
    for _ in 0..1000 {
        // SAFETY: KVM wrote / writes these blocks; volatile reads see them.
        let (wall_version, sec, nsec) = unsafe {
            (
                core::ptr::read_volatile(&raw const wall.version),
                core::ptr::read_volatile(&raw const wall.sec),
                core::ptr::read_volatile(&raw const wall.nsec),
            )
        };
        // SAFETY: as above.
        let (version, stamp, system_time, multiplier, shift) = unsafe {
            (
                core::ptr::read_volatile(&raw const info.version),
                core::ptr::read_volatile(&raw const info.tsc_timestamp),
                core::ptr::read_volatile(&raw const info.system_time),
                core::ptr::read_volatile(&raw const info.tsc_to_system_mul),
                core::ptr::read_volatile(&raw const info.tsc_shift),
            )
        };
        let tsc = cpu::rdtsc();
        // SAFETY: as above: unchanged versions mean a consistent reading.
        let stable = unsafe {
            core::ptr::read_volatile(&raw const info.version) == version
                && core::ptr::read_volatile(&raw const wall.version) == wall_version
        };
        if stable && version % 2 == 0 && wall_version % 2 == 0 && multiplier != 0 && sec != 0 {
            let mut delta = u128::from(tsc.saturating_sub(stamp));
            if shift >= 0 {
                delta <<= shift;
            } else {
                delta >>= -shift;
            }
            let since_base = u128::from(system_time) + ((delta * u128::from(multiplier)) >> 32);
            let wall_ns = u128::from(sec) * 1_000_000_000 + u128::from(nsec) + since_base;
            result = u64::try_from(wall_ns).ok();
            break;
        }
        cpu::pause();
    }
    // SAFETY: clearing the enable bit stops KVM writing to `info`.
    unsafe { cpu::write_msr(MSR_KVM_SYSTEM_TIME_NEW, 0) };
    result
}

/// Calibrates the APIC one-shot timer against an already known TSC rate
/// by counting for about a millisecond.
fn calibrate_apic_against_tsc(tsc_hz: u64) {
    apic::calibration_start();
    let apic_start = apic::current_count();
    let start = cpu::rdtsc();
    let cycles = tsc_hz / 1000;
    while cpu::rdtsc() - start < cycles {
        cpu::pause();
    }
    let end = cpu::rdtsc();
    let apic_end = apic::current_count();
    apic::set_one_shot_rate(u64::from(apic_start.saturating_sub(apic_end)), end - start);
    apic::disarm();
}

/// Finds the TSC frequency. `hint_khz` is the loader's value, if any. The
/// APIC must be initialised (its timer is calibrated on the way when it runs
/// in one-shot mode).
pub fn calibrate(hint_khz: Option<u32>) -> Result<Calibration, CalibrationError> {
    let (max_leaf, ..) = cpu::cpuid(0, 0);
    let mut found = None;
    if let Some(khz) = hint_khz {
        found = Some(Calibration { tsc_hz: u64::from(khz) * 1000, source: TscSource::Hypervisor });
    }
    if found.is_none() && max_leaf >= 0x15 {
        let (denominator, numerator, crystal_hz, _) = cpu::cpuid(0x15, 0);
        if denominator != 0 && numerator != 0 && crystal_hz != 0 {
            let hz = u64::from(crystal_hz) * u64::from(numerator) / u64::from(denominator);
            found = Some(Calibration { tsc_hz: hz, source: TscSource::CpuidCrystal });
        }
    }
    if found.is_none() && cpu::hypervisor_signature().is_some() {
        let (max_hypervisor_leaf, ..) = cpu::cpuid(0x4000_0000, 0);
        if max_hypervisor_leaf >= 0x4000_0010 {
            let (khz, ..) = cpu::cpuid(0x4000_0010, 0);
            if khz != 0 {
                found = Some(Calibration { tsc_hz: u64::from(khz) * 1000, source: TscSource::CpuidHypervisorLeaf });
            }
        }
    }
    if found.is_none()
        && let Some(hz) = from_kvm_clock()
    {
        found = Some(Calibration { tsc_hz: hz, source: TscSource::KvmClock });
    }
    match found {
        Some(calibration) => {
            if apic::timer_mode() == apic::TimerMode::OneShot {
                calibrate_apic_against_tsc(calibration.tsc_hz);
            }
            Ok(calibration)
        }
        None => measure_with_pit().map(|tsc_hz| Calibration { tsc_hz, source: TscSource::Pit }).ok_or(CalibrationError::NoSource),
    }
}
