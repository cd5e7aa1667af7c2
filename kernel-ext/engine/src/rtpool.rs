//! The rt-pool's request slots: an RT thread files a request (who, how many
//! bytes), the allocator tasklet serves it and wakes the requester, the
//! requester takes the result. The kernel's `rtpool` applies these
//! transitions; `tests/loom_rtpool.rs` checks every interleaving.
//!
//! The rule: **a result reaches the request it was made for, and the
//! server wakes that request's thread**. A slot is reused only after both
//! sides are done with it, and every step names the slot's generation, so
//! a stale step (a server finishing a request whose requester was
//! cancelled, a requester polling after it left) never touches the next
//! request in the slot.
//!
//! Each slot is one state word, `generation << 8 | state`:
//!
//! ```text
//! FREE --submit--> FILLING --(fields written)--> REQUESTED
//! REQUESTED --claim (server)--> SERVING --complete--> DONE --poll--> FREE (generation + 1)
//! REQUESTED --cancel--> FREE (generation + 1)          nothing was made
//! SERVING --cancel--> ABANDONED --complete--> FREE (generation + 1), the server disposes of the result
//! DONE --cancel--> FREE (generation + 1), the requester disposes of the result
//! ```
//!
//! The request's fields (thread, size) and the result are atomics written
//! only by the side that owns the slot in that state; the state word's
//! release/acquire pairs publish them.
//!
//! Today's kernel logic (before this module) stored a result into whatever
//! request occupied the slot and woke the thread it had copied, so after a
//! cancel the next requester got the cancelled request's buffer and was
//! never woken (issue 11, defect 8).

use crate::sync::{AtomicU64, Ordering};

const FREE: u64 = 0;
const FILLING: u64 = 1;
const REQUESTED: u64 = 2;
const SERVING: u64 = 3;
const DONE: u64 = 4;
const ABANDONED: u64 = 5;
const STATE_MASK: u64 = 0xff;
const GENERATION_SHIFT: u32 = 8;

fn word(generation: u64, state: u64) -> u64 {
    (generation << GENERATION_SHIFT) | state
}

/// Generations count modulo 2^48 (a ticket packs into one `u64`).
const GENERATION_MASK: u64 = (1 << 48) - 1;

fn next(generation: u64) -> u64 {
    (generation + 1) & GENERATION_MASK
}

fn state_of(word: u64) -> u64 {
    word & STATE_MASK
}

fn generation_of(word: u64) -> u64 {
    word >> GENERATION_SHIFT
}

/// A filed request, as its requester knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub slot: usize,
    generation: u64,
}

impl Ticket {
    /// The ticket as one number (for a cleanup handler's argument).
    pub fn to_raw(self) -> u64 {
        ((self.slot as u64) << 48) | (self.generation & GENERATION_MASK)
    }

    /// The ticket [`to_raw`](Self::to_raw) made.
    pub fn from_raw(raw: u64) -> Self {
        Self { slot: (raw >> 48) as usize, generation: raw & GENERATION_MASK }
    }
}

/// A slot taken by [`RequestSlots::reserve`], not yet published.
#[derive(Debug, PartialEq, Eq)]
pub struct Reservation {
    pub slot: usize,
    generation: u64,
}

/// A request the server took: whom to wake, how much to allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub slot: usize,
    generation: u64,
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

/// One request slot.
#[derive(Debug)]
struct Slot {
    state: AtomicU64,
    thread: AtomicU64,
    size: AtomicU64,
    result: AtomicU64,
}

impl Slot {
    #[cfg(not(loom))]
    const fn new() -> Self {
        Self { state: AtomicU64::new(0), thread: AtomicU64::new(0), size: AtomicU64::new(0), result: AtomicU64::new(0) }
    }

    #[cfg(loom)]
    fn new() -> Self {
        Self { state: AtomicU64::new(0), thread: AtomicU64::new(0), size: AtomicU64::new(0), result: AtomicU64::new(0) }
    }
}

/// `N` request slots.
#[derive(Debug)]
pub struct RequestSlots<const N: usize> {
    slots: [Slot; N],
}

impl<const N: usize> Default for RequestSlots<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> RequestSlots<N> {
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self { slots: [const { Slot::new() }; N] }
    }

    #[cfg(loom)]
    pub fn new() -> Self {
        Self { slots: core::array::from_fn(|_| Slot::new()) }
    }

    /// Files a request in a free slot; `None` when all are taken.
    pub fn submit(&self, thread: u64, size: u64) -> Option<Ticket> {
        let reservation = self.reserve()?;
        Some(self.publish(reservation, thread, size))
    }

    /// Takes a free slot for a request still being written: the caller may
    /// fill its own per-slot data (the kernel keeps the thread handle
    /// there) before [`publish`](Self::publish) shows it to the server.
    pub fn reserve(&self) -> Option<Reservation> {
        for (index, slot) in self.slots.iter().enumerate() {
            let current = slot.state.load(Ordering::Acquire);
            if state_of(current) != FREE {
                continue;
            }
            let generation = generation_of(current);
            if slot.state.compare_exchange(current, word(generation, FILLING), Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return Some(Reservation { slot: index, generation });
            }
        }
        None
    }

    /// Shows a reserved request to the server.
    pub fn publish(&self, reservation: Reservation, thread: u64, size: u64) -> Ticket {
        let Reservation { slot: index, generation } = reservation;
        if let Some(slot) = self.slots.get(index) {
            slot.thread.store(thread, Ordering::Relaxed);
            slot.size.store(size, Ordering::Relaxed);
            slot.state.store(word(generation, REQUESTED), Ordering::Release);
        }
        Ticket { slot: index, generation }
    }

    /// The server takes the request in `slot`, if one waits there.
    pub fn claim(&self, slot: usize) -> Option<Claim> {
        let entry = self.slots.get(slot)?;
        let current = entry.state.load(Ordering::Acquire);
        if state_of(current) != REQUESTED {
            return None;
        }
        let generation = generation_of(current);
        entry.state.compare_exchange(current, word(generation, SERVING), Ordering::Acquire, Ordering::Relaxed).ok()?;
        Some(Claim { slot, generation, thread: entry.thread.load(Ordering::Relaxed), size: entry.size.load(Ordering::Relaxed) })
    }

    /// The server hands `result` to the claimed request, or learns that its
    /// requester left (then it must dispose of `result` itself).
    pub fn complete(&self, claim: Claim, result: u64) -> Completion {
        let Some(entry) = self.slots.get(claim.slot) else {
            return Completion::Abandoned { result };
        };
        entry.result.store(result, Ordering::Relaxed);
        match entry.state.compare_exchange(
            word(claim.generation, SERVING),
            word(claim.generation, DONE),
            Ordering::Release,
            Ordering::Acquire,
        ) {
            Ok(_) => Completion::Delivered { thread: claim.thread },
            Err(_) => {
                // Only ABANDONED can be here: while SERVING, nobody but the
                // server and a cancel touches the word.
                entry.state.store(word(next(claim.generation), FREE), Ordering::Release);
                Completion::Abandoned { result }
            }
        }
    }

    /// The requester takes its result, if it has arrived, and frees the slot.
    pub fn poll(&self, ticket: Ticket) -> Option<u64> {
        let entry = self.slots.get(ticket.slot)?;
        if entry.state.load(Ordering::Acquire) != word(ticket.generation, DONE) {
            return None;
        }
        let result = entry.result.load(Ordering::Relaxed);
        entry.state.store(word(next(ticket.generation), FREE), Ordering::Release);
        Some(result)
    }

    /// A cancelled requester leaves; the outcome says who disposes of the
    /// result.
    pub fn cancel(&self, ticket: Ticket) -> CancelOutcome {
        let Some(entry) = self.slots.get(ticket.slot) else {
            return CancelOutcome::Withdrawn;
        };
        let generation = ticket.generation;
        loop {
            let current = entry.state.load(Ordering::Acquire);
            if generation_of(current) != generation {
                // Already gone (polled or withdrawn before).
                return CancelOutcome::Withdrawn;
            }
            let (next, outcome) = match state_of(current) {
                REQUESTED => (word(next(generation), FREE), CancelOutcome::Withdrawn),
                SERVING => (word(generation, ABANDONED), CancelOutcome::Abandoned),
                DONE => {
                    let result = entry.result.load(Ordering::Relaxed);
                    (word(next(generation), FREE), CancelOutcome::Completed { result })
                }
                _ => return CancelOutcome::Withdrawn,
            };
            if entry.state.compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                return outcome;
            }
        }
    }

    /// Whether the request behind `ticket` is still in its slot (not yet
    /// polled, withdrawn or abandoned).
    pub fn is_live(&self, ticket: Ticket) -> bool {
        self.slots.get(ticket.slot).is_some_and(|entry| {
            let current = entry.state.load(Ordering::Acquire);
            generation_of(current) == ticket.generation && matches!(state_of(current), REQUESTED | SERVING | DONE)
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_result_reaches_its_requester() {
        let slots = RequestSlots::<2>::new();
        let ticket = slots.submit(7, 100).expect("free slot");
        let claim = slots.claim(ticket.slot).expect("requested");
        assert_eq!((claim.thread, claim.size), (7, 100));
        assert_eq!(slots.poll(ticket), None);
        assert_eq!(slots.complete(claim, 42), Completion::Delivered { thread: 7 });
        assert_eq!(slots.poll(ticket), Some(42));
        assert_eq!(slots.poll(ticket), None, "a result is taken once");
    }

    #[test]
    fn a_cancel_during_service_leaves_the_result_to_the_server_and_the_slot_to_the_next() {
        let slots = RequestSlots::<1>::new();
        let first = slots.submit(1, 10).expect("free slot");
        let claim = slots.claim(0).expect("requested");
        assert_eq!(slots.cancel(first), CancelOutcome::Abandoned);
        assert_eq!(slots.submit(2, 20), None, "the slot is still the server's");
        assert_eq!(slots.complete(claim, 10), Completion::Abandoned { result: 10 });
        let second = slots.submit(2, 20).expect("free again");
        assert_eq!(slots.poll(first), None, "a stale ticket sees nothing");
        assert_eq!(slots.cancel(first), CancelOutcome::Withdrawn);
        assert!(slots.is_live(second));
        let claim = slots.claim(0).expect("requested");
        assert_eq!(claim.size, 20);
        assert_eq!(slots.complete(claim, 20), Completion::Delivered { thread: 2 });
        assert_eq!(slots.poll(second), Some(20));
    }

    #[test]
    fn a_cancel_before_service_withdraws_and_after_it_returns_the_result() {
        let slots = RequestSlots::<1>::new();
        let ticket = slots.submit(1, 10).expect("free slot");
        assert_eq!(slots.cancel(ticket), CancelOutcome::Withdrawn);
        assert_eq!(slots.claim(0), None);
        let ticket = slots.submit(1, 10).expect("free slot");
        let claim = slots.claim(0).expect("requested");
        assert_eq!(slots.complete(claim, 5), Completion::Delivered { thread: 1 });
        assert_eq!(slots.cancel(ticket), CancelOutcome::Completed { result: 5 });
        assert!(!slots.is_live(ticket));
    }
}
