//! The loom harness itself works: two threads incrementing one counter
//! through the engine's atomics always reach 2. Built only under `--cfg loom`.
#![cfg(loom)]

use loom::sync::Arc;
use rtedge_engine::sync::{AtomicU32, Ordering};

#[test]
fn two_increments_are_never_lost() {
    loom::model(|| {
        let counter = Arc::new(AtomicU32::new(0));
        let other = counter.clone();
        let handle = loom::thread::spawn(move || {
            other.fetch_add(1, Ordering::AcqRel);
        });
        counter.fetch_add(1, Ordering::AcqRel);
        handle.join().unwrap();
        assert_eq!(counter.load(Ordering::Acquire), 2);
    });
}
