//! The log ring: a bounded, lock-free queue of log records for contexts
//! that must not write to the console themselves (RT threads, softirqs,
//! hard IRQs), drained by one kernel thread — what `rtl_printf`'s buffer
//! was in RTLinux. The kernel keeps one ring per CPU.
//!
//! The rules, checked by `tests/loom_logring.rs`:
//! - a producer never waits and never allocates: it reserves a position
//!   with one compare-and-swap, fills the slot, publishes it; producers may
//!   nest (an interrupt logging while the thread it interrupted is half-way
//!   through its own record) or run on several CPUs at once;
//! - when the ring is full the record is refused and counted in
//!   [`LogRing::dropped`], never overwriting a record not yet read;
//! - the consumer gets every published record exactly once, in order of
//!   reservation, intact (no mix of two records' text), and stops at a
//!   record reserved but not yet published.
//!
//! The queue is Vyukov's bounded queue: each slot carries a sequence
//! number; slot `p % SLOTS` is free for position `p` when its sequence is
//! `p`, and holds the record of position `p` when it is `p + 1` (stored
//! minus the slot's index, so that a new ring is all zero). Every
//! field of a record is an atomic written before the sequence's release
//! store and read after the consumer's acquire load, so the kernel needs
//! no `unsafe` here and loom sees every access.
//!
//! A record keeps its level, time stamp, CPU and thread apart from the
//! text, so that a later reader (the drain, a remote `LOGS` view) can
//! filter and format it as it likes.

use crate::sync::{AtomicU64, Ordering};

/// Why a record was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// Every slot holds a record not yet read; the record was counted as
    /// dropped.
    Full,
}

/// What a record says besides its text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// The `log` level (1 error ..= 5 trace), 0 for a plain console line.
    pub level: u8,
    /// The CPU the line was logged on.
    pub cpu: u16,
    /// The logging thread's id (serial), 0 outside a thread.
    pub thread: u32,
    /// When it was logged, in nanoseconds since boot.
    pub timestamp_ns: u64,
    /// Whether the text was cut to fit the slot (or the line buffer).
    pub truncated: bool,
}

const TRUNCATED_BIT: u64 = 1 << 8;

impl RecordHeader {
    fn pack(self, len: usize) -> u64 {
        u64::from(self.level) | if self.truncated { TRUNCATED_BIT } else { 0 } | ((len as u64 & 0xffff) << 16) | (u64::from(self.cpu) << 32)
    }

    fn unpack(word: u64, thread: u64, timestamp_ns: u64) -> (Self, usize) {
        let header = RecordHeader {
            level: (word & 0xff) as u8,
            cpu: (word >> 32) as u16,
            thread: thread as u32,
            timestamp_ns,
            truncated: word & TRUNCATED_BIT != 0,
        };
        (header, ((word >> 16) & 0xffff) as usize)
    }
}

/// A record taken out of the ring: header and up to `WORDS * 8` bytes of
/// text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRecord<const WORDS: usize> {
    pub header: RecordHeader,
    /// The record's position in its ring (counts every record reserved).
    pub position: u64,
    len: usize,
    words: [u64; WORDS],
}

impl<const WORDS: usize> LogRecord<WORDS> {
    /// Bytes of text.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the text into `out`; returns how many bytes were copied.
    pub fn copy_text(&self, out: &mut [u8]) -> usize {
        let count = self.len.min(out.len());
        for (index, byte) in out.iter_mut().take(count).enumerate() {
            *byte = self.words[index / 8].to_le_bytes()[index % 8];
        }
        count
    }
}

#[derive(Debug)]
struct Slot<const WORDS: usize> {
    sequence: AtomicU64,
    header: AtomicU64,
    thread: AtomicU64,
    timestamp: AtomicU64,
    text: [AtomicU64; WORDS],
}

impl<const WORDS: usize> Slot<WORDS> {
    #[cfg(not(loom))]
    const fn new() -> Self {
        Self {
            sequence: AtomicU64::new(0),
            header: AtomicU64::new(0),
            thread: AtomicU64::new(0),
            timestamp: AtomicU64::new(0),
            text: [const { AtomicU64::new(0) }; WORDS],
        }
    }

    #[cfg(loom)]
    fn new() -> Self {
        Self {
            sequence: AtomicU64::new(0),
            header: AtomicU64::new(0),
            thread: AtomicU64::new(0),
            timestamp: AtomicU64::new(0),
            text: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A ring of `SLOTS` records of up to `WORDS * 8` bytes of text each.
#[derive(Debug)]
pub struct LogRing<const SLOTS: usize, const WORDS: usize> {
    /// The next position a producer reserves.
    head: AtomicU64,
    /// The next position the consumer reads.
    tail: AtomicU64,
    /// Records refused because the ring was full, since boot.
    dropped: AtomicU64,
    slots: [Slot<WORDS>; SLOTS],
}

impl<const SLOTS: usize, const WORDS: usize> Default for LogRing<SLOTS, WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const SLOTS: usize, const WORDS: usize> LogRing<SLOTS, WORDS> {
    /// An empty ring. `SLOTS` must be at least 1.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        // All zero: a static ring lives in .bss, not in the image.
        Self { head: AtomicU64::new(0), tail: AtomicU64::new(0), dropped: AtomicU64::new(0), slots: [const { Slot::new() }; SLOTS] }
    }

    /// An empty ring. `SLOTS` must be at least 1.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self { head: AtomicU64::new(0), tail: AtomicU64::new(0), dropped: AtomicU64::new(0), slots: core::array::from_fn(|_| Slot::new()) }
    }

    /// Bytes of text a record can hold.
    pub const TEXT_CAPACITY: usize = WORDS * 8;

    /// The slot of `position`, and its index (the offset of its stored
    /// sequence: a slot stores `sequence - index`, so that a new ring is
    /// all zero).
    fn slot(&self, position: u64) -> (&Slot<WORDS>, u64) {
        let index = position % SLOTS as u64;
        (&self.slots[index as usize], index)
    }

    /// Appends a record (text cut at [`TEXT_CAPACITY`](Self::TEXT_CAPACITY)
    /// bytes, marked truncated). Never waits: a full ring refuses the
    /// record and counts it. Returns the record's position.
    pub fn push(&self, header: RecordHeader, text: &[u8]) -> Result<u64, PushError> {
        let mut position = self.head.load(Ordering::Relaxed);
        let (slot, slot_index) = loop {
            let (slot, index) = self.slot(position);
            let sequence = slot.sequence.load(Ordering::Acquire) + index;
            if sequence == position {
                match self.head.compare_exchange_weak(position, position + 1, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => break (slot, index),
                    Err(current) => position = current,
                }
            } else if sequence < position {
                // The slot still holds the record of position - SLOTS.
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Err(PushError::Full);
            } else {
                // Another producer took this position; look again.
                position = self.head.load(Ordering::Relaxed);
            }
        };
        let len = text.len().min(Self::TEXT_CAPACITY);
        let header = RecordHeader { truncated: header.truncated || len < text.len(), ..header };
        for (index, word) in slot.text.iter().enumerate() {
            let start = index * 8;
            if start >= len {
                break;
            }
            let mut bytes = [0u8; 8];
            let end = (start + 8).min(len);
            bytes[..end - start].copy_from_slice(&text[start..end]);
            word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
        slot.header.store(header.pack(len), Ordering::Relaxed);
        slot.thread.store(u64::from(header.thread), Ordering::Relaxed);
        slot.timestamp.store(header.timestamp_ns, Ordering::Relaxed);
        slot.sequence.store(position + 1 - slot_index, Ordering::Release);
        Ok(position)
    }

    /// Takes the oldest record, if it is published. One consumer at a
    /// time (the kernel's drain; a panic takes over from it).
    pub fn pop(&self) -> Option<LogRecord<WORDS>> {
        let position = self.tail.load(Ordering::Relaxed);
        let (slot, slot_index) = self.slot(position);
        if slot.sequence.load(Ordering::Acquire) + slot_index != position + 1 {
            // Empty, or the oldest record is still being written.
            return None;
        }
        let (header, len) = RecordHeader::unpack(
            slot.header.load(Ordering::Relaxed),
            slot.thread.load(Ordering::Relaxed),
            slot.timestamp.load(Ordering::Relaxed),
        );
        let mut words = [0u64; WORDS];
        for (index, word) in words.iter_mut().enumerate() {
            if index * 8 >= len {
                break;
            }
            *word = slot.text[index].load(Ordering::Relaxed);
        }
        // Hands the slot to the producer of position + SLOTS.
        slot.sequence.store(position + SLOTS as u64 - slot_index, Ordering::Release);
        self.tail.store(position + 1, Ordering::Relaxed);
        Some(LogRecord { header, position, len, words })
    }

    /// Records refused because the ring was full, since boot.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records reserved and not yet taken (published or not); an estimate
    /// while producers run.
    pub fn len(&self) -> usize {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        head.saturating_sub(tail) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn header(level: u8) -> RecordHeader {
        RecordHeader { level, cpu: 3, thread: 42, timestamp_ns: 1234, truncated: false }
    }

    fn text_of<const WORDS: usize>(record: &LogRecord<WORDS>) -> Vec<u8> {
        let mut out = vec![0u8; record.len()];
        record.copy_text(&mut out);
        out
    }

    #[test]
    fn records_come_out_in_order_with_their_header() {
        let ring = LogRing::<4, 4>::new();
        assert_eq!(ring.push(header(1), b"first line"), Ok(0));
        assert_eq!(ring.push(header(3), b"second"), Ok(1));
        let first = ring.pop().expect("a record");
        assert_eq!(first.header, header(1));
        assert_eq!(first.position, 0);
        assert_eq!(text_of(&first), b"first line");
        let second = ring.pop().expect("a record");
        assert_eq!((second.header.level, text_of(&second)), (3, b"second".to_vec()));
        assert_eq!(ring.pop(), None);
    }

    #[test]
    fn a_full_ring_refuses_and_counts_and_keeps_the_old_records() {
        let ring = LogRing::<2, 1>::new();
        assert!(ring.push(header(1), b"a").is_ok());
        assert!(ring.push(header(1), b"b").is_ok());
        assert_eq!(ring.push(header(1), b"c"), Err(PushError::Full));
        assert_eq!(ring.dropped(), 1);
        assert_eq!(text_of(&ring.pop().expect("a")), b"a");
        assert!(ring.push(header(1), b"d").is_ok(), "room again after a pop");
        assert_eq!(text_of(&ring.pop().expect("b")), b"b");
        assert_eq!(text_of(&ring.pop().expect("d")), b"d");
        assert_eq!(ring.pop(), None);
    }

    #[test]
    fn long_text_is_cut_and_marked() {
        let ring = LogRing::<2, 2>::new();
        ring.push(header(2), b"0123456789abcdefXYZ").expect("room");
        let record = ring.pop().expect("a record");
        assert!(record.header.truncated);
        assert_eq!(text_of(&record), b"0123456789abcdef");
    }

    #[test]
    fn wraps_around_many_times() {
        let ring = LogRing::<3, 1>::new();
        for round in 0..100u8 {
            ring.push(header(1), &[round]).expect("room");
            let record = ring.pop().expect("a record");
            assert_eq!(text_of(&record), vec![round]);
            assert_eq!(record.position, u64::from(round));
        }
        assert_eq!(ring.dropped(), 0);
    }
}
