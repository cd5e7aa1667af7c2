//! The time source contract, and a fake for tests.
//!
//! A [`Clock`] returns nanoseconds since boot. It is monotonic (never goes
//! back, on any CPU), and valid before initialisation: an uncalibrated clock
//! returns 0 rather than garbage, so policy code may call it at any time.

use core::sync::atomic::{AtomicU64, Ordering};

/// A monotonic nanosecond clock.
pub trait Clock {
    /// Nanoseconds since boot.
    fn now_ns(&self) -> u64;
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct FakeClock {
    now: AtomicU64,
}

impl FakeClock {
    pub const fn new(start_ns: u64) -> Self {
        Self { now: AtomicU64::new(start_ns) }
    }

    /// Moves time forward by `delta_ns`.
    pub fn advance(&self, delta_ns: u64) {
        self.now.fetch_add(delta_ns, Ordering::SeqCst);
    }

    /// Sets the time; it must not go back.
    pub fn set(&self, now_ns: u64) {
        let previous = self.now.swap(now_ns, Ordering::SeqCst);
        debug_assert!(now_ns >= previous, "a clock never goes back");
    }
}

impl Clock for FakeClock {
    fn now_ns(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// Ticks per second of the `jiffies` counter.
pub const HZ: u64 = 1000;
const NS_PER_JIFFY: u64 = 1_000_000_000 / HZ;

/// Jiffies elapsed at `now_ns`.
pub const fn ns_to_jiffies(now_ns: u64) -> u64 {
    now_ns / NS_PER_JIFFY
}

/// The instant jiffy `jiffies` starts, in nanoseconds since boot.
pub const fn jiffies_to_ns(jiffies: u64) -> u64 {
    jiffies.saturating_mul(NS_PER_JIFFY)
}

/// `jiffies_to_msecs`.
pub const fn jiffies_to_msecs(jiffies: u64) -> u64 {
    jiffies.saturating_mul(1000) / HZ
}

/// `jiffies_to_usecs`.
pub const fn jiffies_to_usecs(jiffies: u64) -> u64 {
    jiffies.saturating_mul(1_000_000) / HZ
}

/// `msecs_to_jiffies`, rounding up so a timeout is never shorter than asked.
pub const fn msecs_to_jiffies(msecs: u64) -> u64 {
    msecs.saturating_mul(HZ).div_ceil(1000)
}

/// `usecs_to_jiffies`, rounding up.
pub const fn usecs_to_jiffies(usecs: u64) -> u64 {
    usecs.saturating_mul(HZ).div_ceil(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_when_told() {
        let clock = FakeClock::new(5);
        assert_eq!(clock.now_ns(), 5);
        clock.advance(10);
        assert_eq!(clock.now_ns(), 15);
        clock.set(100);
        assert_eq!(clock.now_ns(), 100);
    }

    #[test]
    fn jiffies_conversions_at_hz_1000() {
        assert_eq!(HZ, 1000);
        assert_eq!(ns_to_jiffies(2_999_999), 2);
        assert_eq!(jiffies_to_ns(3), 3_000_000);
        assert_eq!(jiffies_to_msecs(250), 250);
        assert_eq!(jiffies_to_usecs(2), 2000);
        assert_eq!(msecs_to_jiffies(200), 200);
        assert_eq!(usecs_to_jiffies(1), 1, "a partial jiffy rounds up");
        assert_eq!(usecs_to_jiffies(2000), 2);
        assert_eq!(msecs_to_jiffies(u64::MAX), u64::MAX.div_ceil(1000), "saturates instead of wrapping");
    }
}
