//! The shared-text sequence lock (issue 11, defect 12): "a read returns
//! the bytes of one completed write, never a mix, and is free of data
//! races". Built only under `--cfg loom`.
#![cfg(loom)]

use loom::sync::Arc;
use rtedge_engine::seqlock::SeqBytes;

fn bounded() -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder
}

/// Two words, written twice ("A" x 16 then "B" x 9); a reader racing the
/// writes sees the empty value, all A's or all B's, nothing else.
#[test]
fn a_read_never_mixes_two_writes() {
    bounded().check(|| {
        let text = Arc::new(SeqBytes::<2>::new());
        let writer_text = text.clone();
        let writer = loom::thread::spawn(move || {
            writer_text.write(&[b'A'; 16]);
            writer_text.write(&[b'B'; 9]);
        });
        for _ in 0..2 {
            let mut out = [0u8; 16];
            if let Some(len) = text.try_read(&mut out) {
                let value = &out[..len];
                assert!(value.is_empty() || value == [b'A'; 16] || value == [b'B'; 9], "a torn read: {value:?}");
            }
        }
        writer.join().expect("the thread ends");
        let mut out = [0u8; 16];
        assert_eq!(text.try_read(&mut out), Some(9), "no writer left: the read succeeds");
        assert_eq!(&out[..9], &[b'B'; 9]);
    });
}

/// Two writers at once end with one of their values, whole.
#[test]
fn writers_exclude_each_other() {
    bounded().check(|| {
        let text = Arc::new(SeqBytes::<2>::new());
        let other = text.clone();
        let writer = loom::thread::spawn(move || other.write(&[b'X'; 12]));
        text.write(&[b'Y'; 16]);
        writer.join().expect("the thread ends");
        let mut out = [0u8; 16];
        let len = text.try_read(&mut out).expect("no writer left");
        let value = &out[..len];
        assert!(value == [b'X'; 12] || value == [b'Y'; 16], "a mixed value: {value:?}");
    });
}

/// TODAY's kernel logic (before the fix), transcribed: the bytes are plain
/// memory the writer stores into while the reader copies them with
/// `read_volatile`, trusting the sequence check to discard a torn copy.
/// loom reports the concurrent plain read and write as a data race
/// (undefined behaviour whatever the sequence says); this test keeps that
/// finding: it passes only because the model panics.
mod todays_logic {
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{AtomicU8, AtomicU32, Ordering, fence};

    pub struct OldSharedText {
        sequence: AtomicU32,
        len: AtomicU8,
        bytes: UnsafeCell<[u8; 4]>,
    }

    // SAFETY: as the old kernel claimed: writes only with the sequence odd.
    unsafe impl Sync for OldSharedText {}

    impl OldSharedText {
        pub fn new() -> Self {
            Self { sequence: AtomicU32::new(0), len: AtomicU8::new(0), bytes: UnsafeCell::new([0; 4]) }
        }

        pub fn load(&self) -> Option<([u8; 4], usize)> {
            let before = self.sequence.load(Ordering::Acquire);
            if before % 2 == 1 {
                return None;
            }
            // SAFETY: (the old claim) a torn copy is discarded below.
            let copy = self.bytes.with(|bytes| unsafe { core::ptr::read_volatile(bytes) });
            let len = usize::from(self.len.load(Ordering::Acquire));
            fence(Ordering::Acquire);
            (self.sequence.load(Ordering::Acquire) == before).then_some((copy, len))
        }

        pub fn set(&self, text: &[u8; 4]) {
            self.sequence.fetch_add(1, Ordering::AcqRel);
            fence(Ordering::Release);
            // SAFETY: (the old claim) the only writer, the sequence odd.
            self.bytes.with_mut(|bytes| unsafe { (*bytes).copy_from_slice(text) });
            self.len.store(4, Ordering::Release);
            self.sequence.fetch_add(1, Ordering::AcqRel);
        }
    }
}

#[test]
#[should_panic(expected = "Causality violation")]
fn todays_plain_bytes_seqlock_is_a_data_race() {
    bounded().check(|| {
        let text = Arc::new(todays_logic::OldSharedText::new());
        let writer_text = text.clone();
        let writer = loom::thread::spawn(move || writer_text.set(b"abcd"));
        let _ = text.load();
        writer.join().expect("the thread ends");
    });
}
