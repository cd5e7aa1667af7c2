//! Models of the event rings (`rtedge_engine::eventring`), every
//! interleaving of a producer (an RT thread or an interrupt handler) and
//! the consumer (the control-plane thread). Built only under `--cfg loom`.
//!
//! - `a_record_arrives_whole_in_order_once`: what the consumer takes is
//!   exactly what was pushed, in push order, never torn; taken plus dropped
//!   is pushed.
//! - `the_producer_never_waits_for_the_consumer`: a push completes in one
//!   attempt whatever the consumer is doing.
//! - `shared_locked_ring_makes_the_producer_wait` models the ring this
//!   replaced (one spin lock shared by every producer and the consumer):
//!   there is an interleaving in which the producer spins on the lock the
//!   consumer holds (expected to fail its assertion, hence `should_panic`).
//! - `a_channel_number_always_names_its_key`: concurrent inserts of one
//!   key give it one number.
#![cfg(loom)]

use loom::sync::Arc;
use rtedge_engine::eventring::{ChannelTable, EventRing};
use rtedge_engine::sync::{AtomicBool, AtomicU32, Ordering, spin_loop};

fn record(value: u64) -> [u64; 2] {
    [value, !value]
}

#[test]
fn a_record_arrives_whole_in_order_once() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let ring: Arc<EventRing<2, 2>> = Arc::new(EventRing::new());
        let producer_ring = ring.clone();
        let producer = loom::thread::spawn(move || {
            for value in 1..=3 {
                producer_ring.push(&record(value));
            }
        });
        let mut taken = Vec::new();
        for _ in 0..2 {
            if let Some(words) = ring.pop() {
                taken.push(words);
            }
        }
        producer.join().unwrap();
        while let Some(words) = ring.pop() {
            taken.push(words);
        }
        for words in &taken {
            assert_eq!(words[1], !words[0], "a torn record: {words:?}");
        }
        assert!(taken.windows(2).all(|pair| pair[0][0] < pair[1][0]), "out of order: {taken:?}");
        assert_eq!(taken.len() as u64 + ring.dropped(), 3, "taken {taken:?}, dropped {}", ring.dropped());
    });
}

#[test]
fn the_producer_never_waits_for_the_consumer() {
    loom::model(|| {
        let ring: Arc<EventRing<1, 1>> = Arc::new(EventRing::new());
        let consumer_ring = ring.clone();
        let consumer = loom::thread::spawn(move || {
            let _ = consumer_ring.pop();
        });
        // The push is one straight-line call: it returns stored or dropped,
        // and either way it returned without waiting on the consumer.
        let stored = ring.push(&[7]);
        consumer.join().unwrap();
        assert_eq!(u64::from(stored) + ring.dropped(), 1);
    });
}

/// The replaced design: one ring behind one spin lock that producers and
/// the consumer share (as `IrqSpinLock<Ring>` was).
struct LockedRing {
    locked: AtomicBool,
    length: AtomicU32,
}

impl LockedRing {
    /// Takes the lock; returns how many times it had to spin.
    fn lock(&self) -> u32 {
        let mut spins = 0;
        while self.locked.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            spins += 1;
            spin_loop();
        }
        spins
    }

    fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

#[test]
#[should_panic(expected = "the producer waited")]
fn shared_locked_ring_makes_the_producer_wait() {
    loom::model(|| {
        let ring = Arc::new(LockedRing { locked: AtomicBool::new(false), length: AtomicU32::new(0) });
        let consumer_ring = ring.clone();
        let consumer = loom::thread::spawn(move || {
            consumer_ring.lock();
            let length = consumer_ring.length.load(Ordering::Relaxed);
            consumer_ring.length.store(length.saturating_sub(1), Ordering::Relaxed);
            consumer_ring.unlock();
        });
        let spins = ring.lock();
        ring.length.fetch_add(1, Ordering::Relaxed);
        ring.unlock();
        consumer.join().unwrap();
        assert_eq!(spins, 0, "the producer waited for the consumer's lock ({spins} spins)");
    });
}

#[test]
fn a_channel_number_always_names_its_key() {
    loom::model(|| {
        let table: Arc<ChannelTable<2>> = Arc::new(ChannelTable::new());
        let other_table = table.clone();
        let other = loom::thread::spawn(move || other_table.number(110));
        let mine = table.number(110);
        let second = table.number(220);
        let theirs = other.join().unwrap();
        assert_eq!(mine, theirs, "one key, one number");
        let number = mine.expect("the first key always fits");
        assert_eq!(table.key(number), Some(110));
        let second = second.expect("two entries hold two keys");
        assert_ne!(second, number);
        assert_eq!(table.key(second), Some(220));
    });
}
