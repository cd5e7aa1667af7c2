//! Property tests (proptest) of the dispatcher: any sequence of requests,
//! from any vocabulary, on any connections, leaves it answering, and a
//! transaction with a queueing error never writes.

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

mod support;

use std::cell::Cell;
use std::rc::Rc;

use proptest::prelude::*;
use rtedge_control::{Config, ConnectionId, Dispatcher, Job};
use rtedge_proto::{Request, Scalar};
use support::{FakeBackend, TOKEN, WORDS};

fn request() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(WORDS).prop_map(|word| word.as_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..24),
        ],
        1..6,
    )
}

fn dispatcher() -> Dispatcher<FakeBackend> {
    let clock = Rc::new(Cell::new(0));
    Dispatcher::new(FakeBackend::new(clock, TOKEN), &Config::DEFAULT)
}

fn job(slot: u32, args: Vec<Vec<u8>>) -> Job {
    Job { connection: ConnectionId { slot, generation: u64::from(slot) + 1 }, request: Request::from_args(args).unwrap(), peer: None }
}

fn counter(dispatcher: &Dispatcher<FakeBackend>) -> Scalar {
    dispatcher.backend().statics[0].value
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every request gets a non-empty reply; SHUTDOWN is only requested by
    /// an authenticated `SHUTDOWN` with at most one argument.
    #[test]
    fn every_request_is_answered(requests in prop::collection::vec((0u32..3, request()), 1..40)) {
        let mut dispatcher = dispatcher();
        for (slot, args) in requests {
            let shutdown_shape = args.len() <= 2 && args[0].eq_ignore_ascii_case(b"SHUTDOWN");
            let in_transaction = dispatcher.session(ConnectionId { slot, generation: u64::from(slot) + 1 })
                .is_some_and(|session| session.in_transaction());
            let completion = dispatcher.execute(job(slot, args));
            prop_assert!(!completion.bytes.is_empty());
            if completion.shutdown.is_some() {
                prop_assert!(completion.authenticated);
                prop_assert!(shutdown_shape || in_transaction);
            }
        }
    }

    /// MULTI, then commands of which one fails its checks, then EXEC:
    /// `-EXECABORT`, and the shared static is unchanged.
    #[test]
    fn a_transaction_with_a_queueing_error_writes_nothing(
        value in any::<i64>(),
        bad in prop_oneof![
            Just(vec![b"NOSUCH".to_vec()]),
            Just(vec![b"SET".to_vec(), b"counter".to_vec()]),
            Just(vec![b"GET".to_vec(), b"a".to_vec(), b"b".to_vec()]),
            Just(vec![b"SUBSCRIBE".to_vec(), b"c".to_vec()]),
        ],
        before in 0usize..3,
    ) {
        let mut dispatcher = dispatcher();
        dispatcher.execute(job(0, vec![b"AUTH".to_vec(), TOKEN.to_vec()]));
        let start = counter(&dispatcher);
        dispatcher.execute(job(0, vec![b"MULTI".to_vec()]));
        for _ in 0..before {
            dispatcher.execute(job(0, vec![b"SET".to_vec(), b"counter".to_vec(), value.to_string().into_bytes()]));
        }
        dispatcher.execute(job(0, bad));
        dispatcher.execute(job(0, vec![b"SET".to_vec(), b"counter".to_vec(), value.to_string().into_bytes()]));
        let exec = dispatcher.execute(job(0, vec![b"EXEC".to_vec()]));
        prop_assert!(exec.bytes.starts_with(b"-EXECABORT"));
        prop_assert_eq!(counter(&dispatcher), start);
    }
}
