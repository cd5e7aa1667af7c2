//! Soft interrupt state machines: a CPU's pending word with the `ksoftirqd`
//! sleep/wake hand-shake, and the life of a vector (open, raise, run,
//! close) so that a freed vector never runs again.
//!
//! The kernel applies these; `tests/loom_softirq.rs` checks every
//! interleaving of them. Rules (each a loom model and an in-kernel test):
//! - `softirq::raise_is_never_lost`: a vector raised while `ksoftirqd`
//!   goes to sleep is either seen by it or wakes it. The pending bits,
//!   "ksoftirqd owns a flood" (deferred) and "ksoftirqd sleeps" share one
//!   word, so the daemon's last look at the bits and its going to sleep are
//!   one compare-and-swap: no raise can fall between them.
//! - `softirq::freed_vector_never_runs`: once [`close`] returns, the
//!   vector's handler runs on no CPU, will not start again, and no pending
//!   bit of it is left to fire whoever registers the vector next; a handle
//!   kept from before the free raises nothing.

use crate::handler::HandlerSlot;
use crate::sync::{AtomicU64, Ordering};

/// Vectors a pending word holds (fixed and dynamic together).
pub const MAX_VECTORS: usize = 48;
/// Bits of the pending vectors.
const PENDING_MASK: u64 = (1 << MAX_VECTORS) - 1;
/// `ksoftirqd` owns a flood on this CPU: softirqs are not run on interrupt
/// exit or at a switch (the fair scheduler shares the CPU instead).
const DEFERRED: u64 = 1 << 62;
/// `ksoftirqd` decided to sleep; whoever clears the bit must wake it.
const DAEMON_SLEEPING: u64 = 1 << 63;

/// The bit of vector `index`.
pub const fn bit(index: usize) -> u64 {
    1 << index
}

/// One CPU's pending soft interrupts and its `ksoftirqd`'s state.
#[derive(Debug)]
pub struct SoftirqCpu {
    word: AtomicU64,
}

impl Default for SoftirqCpu {
    fn default() -> Self {
        Self::new()
    }
}

impl SoftirqCpu {
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self { word: AtomicU64::new(0) }
    }

    #[cfg(loom)]
    pub fn new() -> Self {
        Self { word: AtomicU64::new(0) }
    }

    /// Marks `bits` pending. With `wake_daemon` (a raise from thread
    /// context, which no interrupt exit follows), returns `true` when
    /// `ksoftirqd` sleeps and this caller must wake it (exactly one caller
    /// gets `true` per sleep).
    pub fn raise(&self, bits: u64, wake_daemon: bool) -> bool {
        let previous = self.word.fetch_or(bits & PENDING_MASK, Ordering::AcqRel);
        wake_daemon && previous & DAEMON_SLEEPING != 0 && self.claim_wake()
    }

    /// Clears the sleeping mark; `true` if this caller cleared it (and so
    /// must wake the daemon).
    fn claim_wake(&self) -> bool {
        self.word.fetch_and(!DAEMON_SLEEPING, Ordering::AcqRel) & DAEMON_SLEEPING != 0
    }

    /// The pending vectors.
    pub fn pending(&self) -> u64 {
        self.word.load(Ordering::Acquire) & PENDING_MASK
    }

    /// Takes `bit` off the pending set; whether it was pending.
    pub fn take(&self, bit: u64) -> bool {
        self.word.fetch_and(!(bit & PENDING_MASK), Ordering::AcqRel) & bit != 0
    }

    /// Whether `ksoftirqd` owns a flood here (interrupt exits and switches
    /// then leave the pending work to it).
    pub fn is_deferred(&self) -> bool {
        self.word.load(Ordering::Acquire) & DEFERRED != 0
    }

    /// Hands the pending work over to `ksoftirqd` (the budget ran out).
    /// Returns `true` when it sleeps and the caller must wake it.
    pub fn defer(&self) -> bool {
        let previous = self.word.fetch_or(DEFERRED, Ordering::AcqRel);
        previous & DAEMON_SLEEPING != 0 && self.claim_wake()
    }

    /// `ksoftirqd` found nothing to do and wants to sleep: succeeds (and
    /// ends any deferral) only if nothing is pending, in one step. On
    /// `true` it suspends itself; a raise from thread context after this
    /// wakes it, and one from an interrupt is run on the interrupt's exit
    /// (deferral is off). On `false` it must look at the pending bits again.
    pub fn daemon_try_sleep(&self) -> bool {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            if current & PENDING_MASK != 0 {
                return false;
            }
            let next = (current & !DEFERRED) | DAEMON_SLEEPING;
            match self.word.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// `ksoftirqd` runs again (woken, or woken for another reason): it is
    /// no longer asleep, so raisers need not wake it.
    pub fn daemon_awake(&self) {
        self.word.fetch_and(!DAEMON_SLEEPING, Ordering::AcqRel);
    }

    /// Whether `ksoftirqd` is marked asleep (for tests and views).
    pub fn daemon_sleeping(&self) -> bool {
        self.word.load(Ordering::Acquire) & DAEMON_SLEEPING != 0
    }
}

/// Raises vector `index` (slot `slot`) on `cpu` for a handle of
/// `generation` (`None`: the live one, for the control plane's by-name
/// raise). Returns `None` if the vector is not live (freed, re-registered
/// or never opened): nothing is raised. Otherwise `Some(wake)` as
/// [`SoftirqCpu::raise`].
pub fn raise<H: Copy>(cpu: &SoftirqCpu, slot: &HandlerSlot<H>, index: usize, generation: Option<u32>, wake_daemon: bool) -> Option<bool> {
    let raiser = slot.enter(generation)?;
    let wake = cpu.raise(bit(index), wake_daemon);
    drop(raiser);
    Some(wake)
}

/// Runs vector `index` on `cpu` if it is pending there and live: takes its
/// bit and calls `run`. A pending bit of a vector that is not live is stale
/// (raised before a free) and is dropped. Returns whether `run` ran.
pub fn dispatch<H: Copy>(cpu: &SoftirqCpu, slot: &HandlerSlot<H>, index: usize, run: impl FnOnce(H)) -> bool {
    // Counted in even when shut, so that `close` waits for a CPU that is
    // between this look and taking the bit.
    let visit = slot.visit();
    let taken = cpu.take(bit(index));
    match visit.handler() {
        Some(handler) if taken => {
            run(handler);
            true
        }
        _ => false,
    }
}

/// Frees registration `generation` of vector `index`: shuts the slot,
/// waits (calling `wait`) until no CPU raises or runs it, then drops its
/// pending bit on every CPU. On return the slot may take a new handler
/// (`install`), which no earlier raise can reach. `false` (nothing done)
/// if that registration is not live (already freed).
pub fn close<'a, H: Copy>(
    slot: &HandlerSlot<H>,
    index: usize,
    generation: u32,
    cpus: impl IntoIterator<Item = &'a SoftirqCpu>,
    wait: impl FnMut(),
) -> bool {
    if !slot.remove(Some(generation), wait) {
        return false;
    }
    for cpu in cpus {
        cpu.take(bit(index));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_sleeps_only_with_nothing_pending_and_a_thread_raise_wakes_it_once() {
        let cpu = SoftirqCpu::new();
        assert!(!cpu.raise(bit(3), true), "awake daemon needs no wake-up");
        assert!(!cpu.daemon_try_sleep());
        assert!(cpu.take(bit(3)));
        assert!(!cpu.defer(), "the daemon is awake");
        assert!(cpu.is_deferred());
        assert!(cpu.daemon_try_sleep());
        assert!(!cpu.is_deferred(), "sleeping ends the deferral");
        assert!(!cpu.raise(bit(1), false), "an interrupt's raise never wakes");
        assert!(cpu.raise(bit(2), true), "a thread's raise wakes the sleeper");
        assert!(!cpu.raise(bit(2), true), "only one waker");
        assert_eq!(cpu.pending(), bit(1) | bit(2));
    }

    #[test]
    fn a_freed_vector_raises_nothing_and_a_stale_bit_is_dropped() {
        let cpu = SoftirqCpu::new();
        let slot: HandlerSlot<usize> = HandlerSlot::new();
        assert_eq!(raise(&cpu, &slot, 9, None, false), None, "never opened");
        let first = slot.install(1).expect("an empty slot");
        assert_eq!(raise(&cpu, &slot, 9, Some(first), false), Some(false));
        assert!(close(&slot, 9, first, [&cpu], || unreachable!("nobody visits")));
        assert!(!close(&slot, 9, first, [&cpu], || unreachable!()), "second free");
        assert_eq!(cpu.pending(), 0, "close drops the pending bit");
        assert_eq!(raise(&cpu, &slot, 9, Some(first), false), None, "stale handle");
        let second = slot.install(2).expect("a closed slot");
        assert_ne!(first, second);
        assert_eq!(raise(&cpu, &slot, 9, Some(first), false), None, "handle of the old registration");
        assert_eq!(raise(&cpu, &slot, 9, Some(second), false), Some(false));
        let mut runs = 0;
        assert!(dispatch(&cpu, &slot, 9, |handler| {
            assert_eq!(handler, 2, "the new handler runs");
            runs += 1;
        }));
        assert_eq!(runs, 1);
        assert_eq!(slot.callers(), 0);
        // A bit left for a vector that is not live is dropped, not run.
        assert!(slot.shut(Some(second)));
        cpu.raise(bit(9), false);
        assert!(!dispatch(&cpu, &slot, 9, |_| runs += 1));
        assert_eq!((runs, cpu.pending()), (1, 0));
    }
}
