//! The control plane's memory budget, shared by its two halves.
//!
//! Invariant: every byte a client can make the control plane hold on the
//! heap (its request buffer, its queued output and held reply, its
//! subscriptions' names, its queued transaction) is charged here while it
//! is held, and growth that would take [`MemoryBudget::used`] past
//! [`MemoryBudget::limit`] is refused before it happens (the command gets
//! an error, the pub/sub client is dropped, the socket waits). A
//! connection's charge is released when it ends, by the half that made it.
//!
//! The network half (under the network lock) and the command half (in the
//! control-plane thread) charge concurrently, so the counters are atomics
//! and a charge is a compare-and-swap loop that never overshoots the limit.
//! The budget also carries, per slot, the generation of the last
//! connection that ended there, so the command half frees a closed
//! connection's session without a call from the network half.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::job::ConnectionId;

/// See the module documentation.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
    refusals: AtomicU64,
    /// Per slot: the generation of the last connection that ended there.
    ended: Vec<AtomicU64>,
    /// Per slot: bytes the command half holds for the slot's connection.
    session_bytes: Vec<AtomicUsize>,
}

impl MemoryBudget {
    /// A budget of `limit` bytes for a server with `slots` slots.
    pub fn new(limit: usize, slots: usize) -> MemoryBudget {
        MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            refusals: AtomicU64::new(0),
            ended: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            session_bytes: (0..slots).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// The budget in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The most bytes ever charged at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Growths refused for lack of budget.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// Bytes still free.
    pub fn available(&self) -> usize {
        self.limit.saturating_sub(self.used())
    }

    /// Charges `bytes` if they fit under the limit; false (and counted)
    /// if not, with nothing charged.
    pub fn try_charge(&self, bytes: usize) -> bool {
        if bytes == 0 {
            return true;
        }
        let mut current = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = current.checked_add(bytes).filter(|&next| next <= self.limit) else {
                self.refusals.fetch_add(1, Ordering::Relaxed);
                return false;
            };
            match self.used.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.peak.fetch_max(next, Ordering::Relaxed);
                    return true;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Charges `bytes` already allocated (an allocator's rounding beyond
    /// what was checked); may pass the limit, which then refuses growth.
    pub fn force_charge(&self, bytes: usize) {
        let next = self.used.fetch_add(bytes, Ordering::Relaxed).saturating_add(bytes);
        self.peak.fetch_max(next, Ordering::Relaxed);
    }

    /// Gives back `bytes` charged before.
    pub fn release(&self, bytes: usize) {
        let mut current = self.used.load(Ordering::Relaxed);
        loop {
            let next = current.saturating_sub(bytes);
            match self.used.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Moves a charge from `old` to `new` bytes: growth must fit (else
    /// false, nothing changed), shrinking always succeeds.
    pub fn recharge(&self, old: usize, new: usize) -> bool {
        if new >= old {
            self.try_charge(new - old)
        } else {
            self.release(old - new);
            true
        }
    }

    /// Records that `connection` ended (network half).
    pub fn mark_ended(&self, connection: ConnectionId) {
        if let Some(ended) = usize::try_from(connection.slot).ok().and_then(|slot| self.ended.get(slot)) {
            ended.fetch_max(connection.generation, Ordering::Release);
        }
    }

    /// Whether `connection` has ended (command half).
    pub fn has_ended(&self, connection: ConnectionId) -> bool {
        usize::try_from(connection.slot)
            .ok()
            .and_then(|slot| self.ended.get(slot))
            .is_some_and(|ended| ended.load(Ordering::Acquire) >= connection.generation)
    }

    /// Records the command half's bytes for the connection in `slot`.
    pub fn set_session_bytes(&self, slot: u32, bytes: usize) {
        if let Some(entry) = usize::try_from(slot).ok().and_then(|slot| self.session_bytes.get(slot)) {
            entry.store(bytes, Ordering::Relaxed);
        }
    }

    /// The command half's bytes for the connection in `slot`.
    pub fn session_bytes(&self, slot: u32) -> usize {
        usize::try_from(slot).ok().and_then(|slot| self.session_bytes.get(slot)).map_or(0, |entry| entry.load(Ordering::Relaxed))
    }
}
