//! The log ring (issue 11, RT-safe logging): "every record pushed is read
//! exactly once, intact and in order per producer, or counted as dropped;
//! a producer never waits". Built only under `--cfg loom`.
#![cfg(loom)]

use loom::sync::Arc;
use rtedge_engine::logring::{LogRecord, LogRing, RecordHeader};

fn header(thread: u32, sequence: u64) -> RecordHeader {
    RecordHeader { level: 3, cpu: 0, thread, timestamp_ns: sequence, truncated: false }
}

/// The text names its producer and its number, so a mixed record shows.
fn text(thread: u32, sequence: u64) -> [u8; 8] {
    (u64::from(thread) << 32 | sequence).to_le_bytes()
}

fn check_intact(record: &LogRecord<1>) -> (u32, u64) {
    let mut bytes = [0u8; 8];
    assert_eq!(record.copy_text(&mut bytes), 8);
    let word = u64::from_le_bytes(bytes);
    let (thread, sequence) = ((word >> 32) as u32, word & 0xffff_ffff);
    assert_eq!(record.header.thread, thread, "header and text of one record");
    assert_eq!(record.header.timestamp_ns, sequence, "header and text of one record");
    (thread, sequence)
}

fn model(builder: loom::model::Builder, body: impl Fn() + Sync + Send + 'static) {
    builder.check(body);
}

fn bounded() -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder
}

/// Two producers (think: a thread and the interrupt that nests in it) and
/// the drain at once; two slots, so the ring fills and wraps.
#[test]
fn two_producers_and_the_drain_lose_nothing_uncounted() {
    model(bounded(), || {
        const PER_PRODUCER: u64 = 2;
        let ring = Arc::new(LogRing::<2, 1>::new());
        let producers: Vec<_> = (1..=2u32)
            .map(|thread| {
                let ring = ring.clone();
                loom::thread::spawn(move || {
                    let mut accepted = 0;
                    for sequence in 0..PER_PRODUCER {
                        if ring.push(header(thread, sequence), &text(thread, sequence)).is_ok() {
                            accepted += 1;
                        }
                    }
                    accepted
                })
            })
            .collect();
        let mut seen: Vec<(u32, u64)> = Vec::new();
        // The drain reads while the producers run.
        for _ in 0..2 {
            if let Some(record) = ring.pop() {
                seen.push(check_intact(&record));
            }
        }
        let accepted: u64 = producers.into_iter().map(|producer| producer.join().expect("the thread ends")).sum();
        while let Some(record) = ring.pop() {
            seen.push(check_intact(&record));
        }
        assert_eq!(seen.len() as u64, accepted, "every accepted record is read once");
        assert_eq!(accepted + ring.dropped(), 2 * PER_PRODUCER, "every refused record is counted");
        for thread in 1..=2u32 {
            let order: Vec<u64> = seen.iter().filter(|(t, _)| *t == thread).map(|(_, s)| *s).collect();
            assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "in order per producer: {order:?}");
        }
        assert!(ring.is_empty());
    });
}

/// One producer pushes past the ring's size while the drain reads: the
/// slots are reused (wrap-around) and no record is read twice or torn.
#[test]
fn wrap_around_with_a_concurrent_drain() {
    model(bounded(), || {
        const RECORDS: u64 = 4;
        let ring = Arc::new(LogRing::<2, 1>::new());
        let producer_ring = ring.clone();
        let producer = loom::thread::spawn(move || {
            let mut accepted = Vec::new();
            for sequence in 0..RECORDS {
                if producer_ring.push(header(1, sequence), &text(1, sequence)).is_ok() {
                    accepted.push(sequence);
                }
            }
            accepted
        });
        let mut seen = Vec::new();
        for _ in 0..3 {
            match ring.pop() {
                Some(record) => seen.push(check_intact(&record).1),
                None => loom::thread::yield_now(),
            }
        }
        let accepted = producer.join().expect("the thread ends");
        while let Some(record) = ring.pop() {
            seen.push(check_intact(&record).1);
        }
        assert_eq!(seen, accepted, "exactly the accepted records, in order");
        assert_eq!(accepted.len() as u64 + ring.dropped(), RECORDS);
    });
}
