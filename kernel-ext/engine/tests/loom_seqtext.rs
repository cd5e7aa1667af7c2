//! The thread-name rule: a reader never keeps a half-written name (defect
//! 12 of issue 11: names were written into a plain byte array after the
//! slot was visible). Built only under `--cfg loom`.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use rtedge_engine::seqtext::{SeqText, TEXT_CAPACITY};

const OLD: &[u8] = b"old-name-of-the-slot-aaaaaaaaaaa";
const NEW: &[u8] = b"new";

fn builder() -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder
}

/// The fixed logic: a rename racing a read gives the old name or the new
/// one, whole (or nothing, when every attempt overlapped the write).
#[test]
fn a_reader_sees_the_old_name_or_the_new_one_never_a_mix() {
    builder().check(|| {
        let text = Arc::new(SeqText::new());
        text.write(OLD);
        let writer = {
            let text = text.clone();
            loom::thread::spawn(move || text.write(NEW))
        };
        let mut out = [0u8; TEXT_CAPACITY];
        if let Some(len) = text.read(&mut out, 2) {
            let seen = &out[..len];
            assert!(seen == OLD || seen == NEW, "mixed name {:?}", core::str::from_utf8(seen));
        }
        writer.join().unwrap();
        let len = text.read(&mut out, 1).unwrap();
        assert_eq!(&out[..len], NEW);
    });
}

/// Today's logic (before the fix): the name is a plain byte array written
/// in place while a list reads it. loom reports the concurrent access.
#[test]
#[should_panic]
fn a_plain_name_array_rewritten_while_read_races() {
    builder().check(|| {
        let name = Arc::new(UnsafeCell::new([0u8; TEXT_CAPACITY]));
        let writer = {
            let name = name.clone();
            loom::thread::spawn(move || {
                // SAFETY: none; this is the race being demonstrated.
                name.with_mut(|bytes| unsafe { (&mut *bytes)[..NEW.len()].copy_from_slice(NEW) });
            })
        };
        // SAFETY: none; this is the race being demonstrated.
        let first = name.with(|bytes| unsafe { (&*bytes)[0] });
        writer.join().unwrap();
        let _ = first;
    });
}
