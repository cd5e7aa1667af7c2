//! Time: the TSC as a monotonic nanosecond clock since the first
//! instruction, `jiffies` at [`HZ`], and the calibration facts for the banner.
//!
//! The TSC is taken as invariant and synchronised across CPUs (what KVM and
//! QEMU TCG present); the clock is valid before calibration and returns 0.

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use rtedge_arch::calibrate::{Calibration, TscSource};
use rtedge_arch::cpu;
pub use rtedge_engine::clock::{Clock, HZ, jiffies_to_msecs, jiffies_to_usecs, msecs_to_jiffies, usecs_to_jiffies};

static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per TSC cycle, as a 32.32 fixed-point number.
static NS_PER_CYCLE_SCALED: AtomicU64 = AtomicU64::new(0);
static SOURCE: AtomicU8 = AtomicU8::new(0);
/// Wall-clock time at the first instruction, ns since the Unix epoch (0 = unknown).
static BOOT_WALL_NS: AtomicU64 = AtomicU64::new(0);
static WALL_SOURCE: AtomicU8 = AtomicU8::new(0);

/// Where CLOCK_REALTIME comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum WallSource {
    Unknown,
    /// The CMOS real-time clock (QEMU).
    Rtc,
    /// The hypervisor's: the boot time uhyve passes, or KVM's paravirtual
    /// wall clock where there is no CMOS clock (QEMU `microvm` under KVM).
    Hypervisor,
}

/// Sets CLOCK_REALTIME: `unix_ns` was the wall-clock time at clock time `at_ns`.
pub fn set_wall_clock(unix_ns: u64, at_ns: u64, source: WallSource) {
    BOOT_WALL_NS.store(unix_ns.saturating_sub(at_ns), Ordering::Release);
    WALL_SOURCE.store(source as u8, Ordering::Release);
}

/// Where the wall clock came from.
pub fn wall_source() -> WallSource {
    match WALL_SOURCE.load(Ordering::Acquire) {
        1 => WallSource::Rtc,
        2 => WallSource::Hypervisor,
        _ => WallSource::Unknown,
    }
}

/// CLOCK_REALTIME: nanoseconds since the Unix epoch, or `None` if no wall
/// clock was found at boot.
pub fn realtime_ns() -> Option<u64> {
    let base = BOOT_WALL_NS.load(Ordering::Acquire);
    (base != 0).then(|| base + now_ns())
}

/// The wall-clock time (ns since the Unix epoch) at clock time
/// `monotonic_ns`, or `None` if no wall clock was found at boot.
pub fn realtime_at(monotonic_ns: u64) -> Option<u64> {
    let base = BOOT_WALL_NS.load(Ordering::Acquire);
    (base != 0).then(|| base + monotonic_ns)
}

/// CLOCK_MONOTONIC: nanoseconds since boot (the same as [`now_ns`]).
pub fn monotonic_ns() -> u64 {
    now_ns()
}

/// Starts the clock from a calibration.
pub fn init(calibration: Calibration, boot_tsc: u64) {
    BOOT_TSC.store(boot_tsc, Ordering::Relaxed);
    TSC_HZ.store(calibration.tsc_hz, Ordering::Relaxed);
    SOURCE.store(
        match calibration.source {
            TscSource::Hypervisor => 1,
            TscSource::CpuidCrystal => 2,
            TscSource::CpuidHypervisorLeaf => 3,
            TscSource::Pit => 4,
            TscSource::KvmClock => 5,
        },
        Ordering::Relaxed,
    );
    let scaled = ((1_000_000_000u128 << 32) / u128::from(calibration.tsc_hz.max(1))) as u64;
    NS_PER_CYCLE_SCALED.store(scaled, Ordering::Release);
}

/// Whether the clock runs (calibration done).
pub fn is_running() -> bool {
    NS_PER_CYCLE_SCALED.load(Ordering::Acquire) != 0
}

/// TSC cycles per second (0 before calibration).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Where the TSC frequency came from.
pub fn tsc_source() -> Option<TscSource> {
    Some(match SOURCE.load(Ordering::Relaxed) {
        1 => TscSource::Hypervisor,
        2 => TscSource::CpuidCrystal,
        3 => TscSource::CpuidHypervisorLeaf,
        4 => TscSource::Pit,
        5 => TscSource::KvmClock,
        _ => return None,
    })
}

/// The TSC at the first instruction.
pub fn boot_tsc() -> u64 {
    BOOT_TSC.load(Ordering::Relaxed)
}

/// Converts TSC cycles to nanoseconds.
#[inline]
pub fn cycles_to_ns(cycles: u64) -> u64 {
    ((u128::from(cycles) * u128::from(NS_PER_CYCLE_SCALED.load(Ordering::Relaxed))) >> 32) as u64
}

/// Converts nanoseconds to TSC cycles.
#[inline]
pub fn ns_to_cycles(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(TSC_HZ.load(Ordering::Relaxed)) / 1_000_000_000) as u64
}

/// Nanoseconds since the first instruction (0 before calibration).
#[inline]
pub fn now_ns() -> u64 {
    cycles_to_ns(cpu::rdtsc().saturating_sub(BOOT_TSC.load(Ordering::Relaxed)))
}

/// Microseconds since boot, or `None` before calibration.
pub fn now_us() -> Option<u64> {
    is_running().then(|| now_ns() / 1000)
}

/// The TSC value at which the clock reads `ns`.
#[inline]
pub fn ns_to_tsc_deadline(ns: u64) -> u64 {
    BOOT_TSC.load(Ordering::Relaxed).saturating_add(ns_to_cycles(ns))
}

/// `jiffies`: ticks of 1/HZ s since boot, derived from the clock (there is
/// no periodic tick to count).
#[inline]
pub fn jiffies() -> u64 {
    rtedge_engine::clock::ns_to_jiffies(now_ns())
}

/// The kernel's clock as an engine [`Clock`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TscClock;

impl Clock for TscClock {
    fn now_ns(&self) -> u64 {
        now_ns()
    }
}

/// Busy-waits for `ns` nanoseconds (boot code and tests only).
pub fn spin_for_ns(ns: u64) {
    let end = now_ns() + ns;
    while now_ns() < end {
        cpu::pause();
    }
}
