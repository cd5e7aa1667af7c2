//! Event rings: bounded, lock-free, single-producer single-consumer queues
//! of fixed-size records, for events that real-time threads and interrupt
//! handlers report to the control plane.
//!
//! **Invariant: a producer never waits.** [`EventRing::push`] is wait-free:
//! no loop, no lock, a bounded number of atomic operations. When the ring
//! is full the new record is dropped and counted (the consumer's records
//! are never overwritten, so the consumer never races the producer for a
//! slot). This is what lets a real-time thread emit an event per release
//! without ever spinning on a lock that non-real-time code holds.
//!
//! **Invariant: a record arrives whole, in order, once.** A record is
//! written word by word into a slot the consumer does not own, then
//! published by a release store of the tail; the consumer reads it after
//! an acquire load of the tail and hands the slot back with a release
//! store of the head, which the producer acquires before reusing the slot.
//!
//! The ring has one producer and one consumer at a time; the caller
//! guarantees it (the kernel keeps one ring per CPU and pushes with local
//! interrupts off; the control-plane thread is the only consumer). Records
//! are `WORDS` 64-bit words: stored in atomics, so this module needs no
//! `unsafe` and loom sees every access (`tests/loom_eventring.rs`).
//!
//! [`ChannelTable`] gives channel names small numbers from any context
//! (lock-free, insert-only), so that drops and emissions are counted per
//! channel at the producer.

use crate::sync::{AtomicU64, Ordering};

/// A bounded single-producer single-consumer ring of `CAPACITY` records of
/// `WORDS` words.
pub struct EventRing<const WORDS: usize, const CAPACITY: usize> {
    slots: [[AtomicU64; WORDS]; CAPACITY],
    /// Records ever published (written by the producer only).
    tail: AtomicU64,
    /// Records ever consumed (written by the consumer only).
    head: AtomicU64,
    /// Records refused because the ring was full.
    dropped: AtomicU64,
}

impl<const WORDS: usize, const CAPACITY: usize> EventRing<WORDS, CAPACITY> {
    /// An empty ring (`const` outside loom, for statics).
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            slots: [const { [const { AtomicU64::new(0) }; WORDS] }; CAPACITY],
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// An empty ring.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            slots: core::array::from_fn(|_| core::array::from_fn(|_| AtomicU64::new(0))),
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    fn slot(&self, position: u64) -> &[AtomicU64; WORDS] {
        // CAPACITY is at least 1 (checked at compile time in `push`).
        &self.slots[(position % CAPACITY as u64) as usize]
    }

    /// Producer side: appends `record`, or drops it (counted) when the ring
    /// is full. Wait-free. Returns whether it was stored.
    pub fn push(&self, record: &[u64; WORDS]) -> bool {
        const { assert!(CAPACITY > 0, "an event ring needs at least one slot") };
        let tail = self.tail.load(Ordering::Relaxed);
        // Acquire: the consumer has finished reading every slot before head.
        let head = self.head.load(Ordering::Acquire);
        if tail.wrapping_sub(head) >= CAPACITY as u64 {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        for (word, value) in self.slot(tail).iter().zip(record) {
            word.store(*value, Ordering::Relaxed);
        }
        // Release: the words above are visible to whoever sees the new tail.
        self.tail.store(tail.wrapping_add(1), Ordering::Release);
        true
    }

    /// Consumer side: takes the oldest record.
    pub fn pop(&self) -> Option<[u64; WORDS]> {
        let head = self.head.load(Ordering::Relaxed);
        // Acquire: pairs with the producer's release of the tail.
        let tail = self.tail.load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        let mut record = [0u64; WORDS];
        for (value, word) in record.iter_mut().zip(self.slot(head)) {
            *value = word.load(Ordering::Relaxed);
        }
        // Release: our reads of the slot happen before the producer reuses it.
        self.head.store(head.wrapping_add(1), Ordering::Release);
        Some(record)
    }

    /// Records waiting (a snapshot; exact when called by the consumer or
    /// the producer between operations).
    pub fn len(&self) -> usize {
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        tail.wrapping_sub(head).min(CAPACITY as u64) as usize
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records refused because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records ever stored.
    pub fn pushed(&self) -> u64 {
        self.tail.load(Ordering::Relaxed)
    }

    /// The most records it holds.
    pub const fn capacity(&self) -> usize {
        CAPACITY
    }
}

#[cfg(not(loom))]
impl<const WORDS: usize, const CAPACITY: usize> Default for EventRing<WORDS, CAPACITY> {
    fn default() -> Self {
        Self::new()
    }
}

/// One entry of a [`ChannelTable`]: its key (0: free) and counters.
struct Channel {
    key: AtomicU64,
    emitted: AtomicU64,
    dropped: AtomicU64,
}

impl Channel {
    #[cfg(not(loom))]
    const fn new() -> Self {
        Self { key: AtomicU64::new(0), emitted: AtomicU64::new(0), dropped: AtomicU64::new(0) }
    }

    #[cfg(loom)]
    fn new() -> Self {
        Self { key: AtomicU64::new(0), emitted: AtomicU64::new(0), dropped: AtomicU64::new(0) }
    }
}

/// Small numbers for channel keys (one non-zero word, e.g. a name's
/// address and length packed), assigned from any context without a lock;
/// insert-only, `N` entries. Counts emissions and drops per entry.
///
/// Invariant: a number, once returned for a key, always names that key,
/// and a key gets one number (an entry is claimed by a single
/// compare-exchange of the whole key, so no one sees a half-written one).
pub struct ChannelTable<const N: usize> {
    entries: [Channel; N],
}

impl<const N: usize> ChannelTable<N> {
    /// An empty table (`const` outside loom, for statics).
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self { entries: [const { Channel::new() }; N] }
    }

    /// An empty table.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self { entries: core::array::from_fn(|_| Channel::new()) }
    }

    /// The number of `key` (non-zero), inserting it if new; `None` when the
    /// table is full or `key` is 0. Lock-free: at most `N`
    /// compare-exchanges.
    pub fn number(&self, key: u64) -> Option<usize> {
        if key == 0 {
            return None;
        }
        for (index, entry) in self.entries.iter().enumerate() {
            let current = entry.key.load(Ordering::Acquire);
            if current == key {
                return Some(index);
            }
            if current != 0 {
                continue;
            }
            match entry.key.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(index),
                // Someone claimed it first, maybe for this very key.
                Err(winner) if winner == key => return Some(index),
                Err(_) => {}
            }
        }
        None
    }

    /// The key of entry `number`, if assigned.
    pub fn key(&self, number: usize) -> Option<u64> {
        let key = self.entries.get(number)?.key.load(Ordering::Acquire);
        (key != 0).then_some(key)
    }

    /// Counts an emission (`dropped`: refused by a full ring) on `number`.
    pub fn count(&self, number: usize, dropped: bool) {
        if let Some(entry) = self.entries.get(number) {
            entry.emitted.fetch_add(1, Ordering::Relaxed);
            if dropped {
                entry.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// (emitted, dropped) of entry `number`.
    pub fn counts(&self, number: usize) -> (u64, u64) {
        self.entries.get(number).map_or((0, 0), |entry| (entry.emitted.load(Ordering::Relaxed), entry.dropped.load(Ordering::Relaxed)))
    }

    /// Entries.
    pub const fn capacity(&self) -> usize {
        N
    }
}

#[cfg(not(loom))]
impl<const N: usize> Default for ChannelTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn records_come_out_in_order_and_a_full_ring_drops_the_newest() {
        let ring: EventRing<2, 3> = EventRing::new();
        for value in 0..5u64 {
            ring.push(&[value, !value]);
        }
        assert_eq!(ring.dropped(), 2);
        assert_eq!(ring.len(), 3);
        let out: Vec<[u64; 2]> = core::iter::from_fn(|| ring.pop()).collect();
        assert_eq!(out, vec![[0, !0], [1, !1], [2, !2]]);
        assert!(ring.is_empty());
        // Slots are reused after the consumer frees them.
        assert!(ring.push(&[9, 9]));
        assert_eq!(ring.pop(), Some([9, 9]));
        assert_eq!(ring.pushed(), 4);
    }

    #[test]
    fn channel_numbers_are_stable_and_the_table_fills() {
        let table: ChannelTable<2> = ChannelTable::new();
        assert_eq!(table.number(12), Some(0));
        assert_eq!(table.number(34), Some(1));
        assert_eq!(table.number(12), Some(0));
        assert_eq!(table.number(56), None);
        assert_eq!(table.number(0), None);
        table.count(1, true);
        table.count(1, false);
        assert_eq!(table.counts(1), (2, 1));
        assert_eq!(table.key(1), Some(34));
    }
}
