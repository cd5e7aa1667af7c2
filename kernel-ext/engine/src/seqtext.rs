//! A short text one writer may rewrite while others read it: a thread's
//! name, rewritten when its slot is reused by a later thread while lists
//! (`ps`, lookups by name) may be reading it.
//!
//! Rule: **a reader never keeps a half-written text**: it gets the old text
//! or the new one, whole, or (if writes keep landing during all its
//! attempts) nothing. It is a sequence lock over atomics (odd sequence while
//! a write is under way; Boehm's fences), so there is no data race for any
//! interleaving: `tests/loom_seqtext.rs` checks it, and shows that the plain
//! byte array this replaces races.

use crate::sync::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Bytes a text holds.
pub const TEXT_CAPACITY: usize = 32;
const WORDS: usize = TEXT_CAPACITY / 8;

/// A text of at most [`TEXT_CAPACITY`] bytes, rewritable while read.
#[derive(Debug)]
pub struct SeqText {
    /// Odd while a write is under way.
    sequence: AtomicU32,
    words: [AtomicU64; WORDS],
    len: AtomicU8,
}

impl Default for SeqText {
    fn default() -> Self {
        Self::new()
    }
}

impl SeqText {
    /// An empty text.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self { sequence: AtomicU32::new(0), words: [const { AtomicU64::new(0) }; WORDS], len: AtomicU8::new(0) }
    }

    /// An empty text (loom's atomics cannot be built in a constant).
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            sequence: AtomicU32::new(0),
            words: core::array::from_fn(|_| AtomicU64::new(0)),
            len: AtomicU8::new(0),
        }
    }

    /// Replaces the text with the first [`TEXT_CAPACITY`] bytes of `text`.
    /// Writers must not overlap (the caller serialises them; a thread's name
    /// is written only by whoever claimed its slot).
    pub fn write(&self, text: &[u8]) {
        let len = text.len().min(TEXT_CAPACITY);
        let mut bytes = [0u8; TEXT_CAPACITY];
        bytes[..len].copy_from_slice(&text[..len]);
        let sequence = self.sequence.load(Ordering::Relaxed);
        self.sequence.store(sequence.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (chunk, word) in bytes.chunks_exact(8).zip(&self.words) {
            let mut value = [0u8; 8];
            value.copy_from_slice(chunk);
            word.store(u64::from_le_bytes(value), Ordering::Relaxed);
        }
        self.len.store(len as u8, Ordering::Relaxed);
        self.sequence.store(sequence.wrapping_add(2), Ordering::Release);
    }

    /// Copies the text into `out` and returns its length, trying at most
    /// `attempts` times; `None` if a write overlapped every attempt.
    pub fn read(&self, out: &mut [u8; TEXT_CAPACITY], attempts: usize) -> Option<usize> {
        for _ in 0..attempts {
            let before = self.sequence.load(Ordering::Acquire);
            for (chunk, word) in out.chunks_exact_mut(8).zip(&self.words) {
                chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
            }
            let len = usize::from(self.len.load(Ordering::Relaxed)).min(TEXT_CAPACITY);
            fence(Ordering::Acquire);
            if before.is_multiple_of(2) && self.sequence.load(Ordering::Relaxed) == before {
                return Some(len);
            }
            crate::sync::spin_loop();
        }
        None
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn read(text: &SeqText) -> Option<Vec<u8>> {
        let mut out = [0u8; TEXT_CAPACITY];
        text.read(&mut out, 1).map(|len| out[..len].to_vec())
    }

    #[test]
    fn reads_back_what_was_written_and_truncates_at_capacity() {
        let text = SeqText::new();
        assert_eq!(read(&text), Some(b"".to_vec()));
        text.write(b"ksoftirqd/0");
        assert_eq!(read(&text), Some(b"ksoftirqd/0".to_vec()));
        text.write(b"t");
        assert_eq!(read(&text), Some(b"t".to_vec()), "a shorter name leaves nothing of the longer one");
        let long = [b'x'; 40];
        text.write(&long);
        assert_eq!(read(&text), Some(long[..TEXT_CAPACITY].to_vec()));
    }
}
