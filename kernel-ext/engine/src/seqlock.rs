//! A sequence lock over atomic words: the shared short text that RT
//! threads, kernel code and the control plane read and write without a
//! lock that could block a reader.
//!
//! The rule, checked by `tests/loom_seqlock.rs`: **a read returns exactly
//! the bytes of one completed write (or the initial empty value), never a
//! mix**; a reader that overlaps a write retries, and a writer never waits
//! for a reader.
//!
//! Every byte lives in an `AtomicU64` word, so a reader racing a writer
//! reads atomics, not memory being written with plain stores (the old
//! kernel code copied the bytes with `read_volatile` beside plain writes:
//! a data race, undefined behaviour, however the sequence check turned
//! out). The orderings are Boehm's ("Can seqlocks get along with
//! programming language memory models?", 2012): the writer makes the
//! sequence odd, fences (release), stores the words, then publishes an even
//! sequence (release); the reader loads the sequence (acquire), the words,
//! fences (acquire) and loads the sequence again.

use crate::sync::{AtomicU32, AtomicU64, Ordering, fence, spin_loop};

/// Up to `WORDS * 8` bytes under a sequence lock.
#[derive(Debug)]
pub struct SeqBytes<const WORDS: usize> {
    /// Odd while a write is under way; bumped by two per write.
    sequence: AtomicU32,
    /// Bytes in use.
    len: AtomicU64,
    words: [AtomicU64; WORDS],
}

impl<const WORDS: usize> Default for SeqBytes<WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const WORDS: usize> SeqBytes<WORDS> {
    /// Bytes it holds at most.
    pub const CAPACITY: usize = WORDS * 8;

    /// Empty.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self { sequence: AtomicU32::new(0), len: AtomicU64::new(0), words: [const { AtomicU64::new(0) }; WORDS] }
    }

    /// Empty.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self { sequence: AtomicU32::new(0), len: AtomicU64::new(0), words: core::array::from_fn(|_| AtomicU64::new(0)) }
    }

    /// One attempt: the value's length (bytes copied into `out`, at most
    /// `out.len()`), or `None` if a write overlapped and `out` holds
    /// nothing meaningful.
    pub fn try_read(&self, out: &mut [u8]) -> Option<usize> {
        let before = self.sequence.load(Ordering::Acquire);
        if before % 2 == 1 {
            return None;
        }
        let len = (self.len.load(Ordering::Relaxed) as usize).min(Self::CAPACITY);
        for (index, word) in self.words.iter().enumerate() {
            let start = index * 8;
            if start >= len || start >= out.len() {
                break;
            }
            let bytes = word.load(Ordering::Relaxed).to_le_bytes();
            let end = (start + 8).min(len).min(out.len());
            out[start..end].copy_from_slice(&bytes[..end - start]);
        }
        fence(Ordering::Acquire);
        (self.sequence.load(Ordering::Relaxed) == before).then_some(len.min(out.len()))
    }

    /// Reads a consistent value into `out`, retrying while writes overlap;
    /// returns its length.
    pub fn read(&self, out: &mut [u8]) -> usize {
        loop {
            if let Some(len) = self.try_read(out) {
                return len;
            }
            spin_loop();
        }
    }

    /// Stores `bytes` (cut at [`CAPACITY`](Self::CAPACITY)). Writers
    /// exclude each other through the sequence itself; the kernel also
    /// keeps interrupts off around a write, so a reader on the same CPU
    /// never spins on a writer it interrupted.
    pub fn write(&self, bytes: &[u8]) {
        let len = bytes.len().min(Self::CAPACITY);
        let mut current = self.sequence.load(Ordering::Relaxed);
        loop {
            if current % 2 == 1 {
                spin_loop();
                current = self.sequence.load(Ordering::Relaxed);
                continue;
            }
            match self.sequence.compare_exchange_weak(current, current.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        fence(Ordering::Release);
        for (index, word) in self.words.iter().enumerate() {
            let start = index * 8;
            let mut chunk = [0u8; 8];
            if start < len {
                let end = (start + 8).min(len);
                chunk[..end - start].copy_from_slice(&bytes[start..end]);
            }
            word.store(u64::from_le_bytes(chunk), Ordering::Relaxed);
        }
        self.len.store(len as u64, Ordering::Relaxed);
        self.sequence.store(current.wrapping_add(2), Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_written() {
        let text = SeqBytes::<2>::new();
        let mut out = [0u8; 16];
        assert_eq!(text.read(&mut out), 0);
        text.write(b"hello, world");
        assert_eq!(text.read(&mut out), 12);
        assert_eq!(&out[..12], b"hello, world");
        text.write(b"short");
        let len = text.read(&mut out);
        assert_eq!(&out[..len], b"short");
    }

    #[test]
    fn cuts_at_capacity_and_at_the_callers_buffer() {
        let text = SeqBytes::<1>::new();
        text.write(b"0123456789");
        let mut out = [0u8; 8];
        assert_eq!(text.read(&mut out), 8);
        assert_eq!(&out, b"01234567");
        let mut small = [0u8; 3];
        assert_eq!(text.read(&mut small), 3);
        assert_eq!(&small, b"012");
    }
}
