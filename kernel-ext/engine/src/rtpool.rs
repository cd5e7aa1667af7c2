//! The rt-pool's request slots: an RT thread files a request (who, how
//! many bytes), the allocator tasklet serves it and wakes the requester,
//! the requester takes the result. TODAY'S LOGIC, transcribed one locked
//! step per atomic operation, to be model-checked before the fix.
//!
//! The slot word packs: bit 0 occupied, bits 1..=8 thread, bit 9 result
//! present, bits 16..=31 size, bits 32..=63 result.

use crate::sync::{AtomicU64, Ordering};

const OCCUPIED: u64 = 1;
const HAS_RESULT: u64 = 1 << 9;

fn pack(thread: u64, size: u64) -> u64 {
    OCCUPIED | ((thread & 0xff) << 1) | ((size & 0xffff) << 16)
}

fn thread_of(word: u64) -> u64 {
    (word >> 1) & 0xff
}

fn size_of(word: u64) -> u64 {
    (word >> 16) & 0xffff
}

/// A filed request, as its requester knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub slot: usize,
}

/// A request the server took: whom to wake, how much to allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub slot: usize,
    pub thread: u64,
    pub size: u64,
}

/// What finishing a claim did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The result is in the slot: wake `thread`.
    Delivered { thread: u64 },
    /// The requester left: the server disposes of `result` itself.
    Abandoned { result: u64 },
}

/// What a cancelled requester must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Nothing was served; nothing to undo.
    Withdrawn,
    /// The server is at work; it disposes of the result.
    Abandoned,
    /// The result had arrived: the requester disposes of it.
    Completed { result: u64 },
}

/// `N` request slots.
#[derive(Debug)]
pub struct RequestSlots<const N: usize> {
    words: [AtomicU64; N],
}

impl<const N: usize> RequestSlots<N> {
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self { words: [const { AtomicU64::new(0) }; N] }
    }

    #[cfg(loom)]
    pub fn new() -> Self {
        Self { words: core::array::from_fn(|_| AtomicU64::new(0)) }
    }

    /// Files a request in a free slot; `None` when all are taken.
    pub fn submit(&self, thread: u64, size: u64) -> Option<Ticket> {
        for (slot, word) in self.words.iter().enumerate() {
            if word.compare_exchange(0, pack(thread, size), Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return Some(Ticket { slot });
            }
        }
        None
    }

    /// The server looks at `slot`: a request without a result is copied.
    pub fn claim(&self, slot: usize) -> Option<Claim> {
        let word = self.words.get(slot)?.load(Ordering::Acquire);
        (word & OCCUPIED != 0 && word & HAS_RESULT == 0).then(|| Claim { slot, thread: thread_of(word), size: size_of(word) })
    }

    /// The server stores the result in whatever request occupies the slot
    /// and wakes the thread it copied.
    pub fn complete(&self, claim: Claim, result: u64) -> Completion {
        if let Some(word) = self.words.get(claim.slot) {
            let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                (word & OCCUPIED != 0).then(|| (word & 0xffff_ffff) | HAS_RESULT | (result << 32))
            });
        }
        Completion::Delivered { thread: claim.thread }
    }

    /// The requester takes its result, if there is one, and frees the slot.
    pub fn poll(&self, ticket: Ticket) -> Option<u64> {
        let word = self.words.get(ticket.slot)?;
        let value = word.load(Ordering::Acquire);
        if value & HAS_RESULT == 0 {
            return None;
        }
        word.store(0, Ordering::Release);
        Some(value >> 32)
    }

    /// A cancelled requester leaves: the slot is emptied.
    pub fn cancel(&self, ticket: Ticket) -> CancelOutcome {
        if let Some(word) = self.words.get(ticket.slot) {
            word.store(0, Ordering::Release);
        }
        CancelOutcome::Withdrawn
    }
}
