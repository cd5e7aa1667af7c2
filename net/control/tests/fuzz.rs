//! `make fuzz`: millions of generated frames through the request parser
//! and the dispatcher (as one pipeline, the way the server feeds them),
//! printing cases per second. Ignored by `cargo test`; the figure is
//! printed, never judged. `FUZZ_CASES` sets the count (default 2 000 000).

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

mod support;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use rtedge_control::{Config, ConnectionId, Dispatcher, Job};
use rtedge_proto::RequestParser;
use support::{FakeBackend, Random, TOKEN, WORDS, command};

/// One generated frame: a well-formed command from the vocabulary, a
/// mutated one, or random bytes.
fn frame(random: &mut Random) -> Vec<u8> {
    let count = 1 + random.below(5);
    let args: Vec<String> = (0..count).map(|_| WORDS[random.below(WORDS.len())].to_string()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut bytes = command(&args);
    match random.below(10) {
        0 => bytes = random.bytes_below(64),
        1 => {
            let index = random.below(bytes.len());
            bytes[index] = random.next_u64() as u8;
        }
        2 => bytes.truncate(random.below(bytes.len())),
        _ => {}
    }
    bytes
}

#[test]
#[ignore = "benchmark-style: run with `make fuzz`"]
fn fuzz_parser_and_dispatcher() {
    let cases: u64 = std::env::var("FUZZ_CASES").ok().and_then(|text| text.parse().ok()).unwrap_or(2_000_000);
    let clock = Rc::new(Cell::new(0));
    let mut dispatcher = Dispatcher::new(FakeBackend::new(clock.clone(), TOKEN), &Config::DEFAULT);
    let mut random = Random::new(0x5eed_1234);
    let config = Config::DEFAULT;
    let mut parser = RequestParser::new(config.limits);
    let mut generation = 1u64;
    let (mut requests, mut protocol_errors, mut replies) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    for case in 0..cases {
        if case % 64 == 0 {
            // A new connection now and then, as a client reconnecting.
            parser = RequestParser::new(if case % 128 == 0 { config.unauthenticated_limits() } else { config.limits });
            generation += 1;
            clock.set(clock.get() + 7);
        }
        let bytes = frame(&mut random);
        if parser.feed(&bytes).is_err() {
            protocol_errors += 1;
            parser = RequestParser::new(config.limits);
            continue;
        }
        loop {
            match parser.next() {
                Ok(Some(request)) => {
                    requests += 1;
                    let completion = dispatcher.execute(Job {
                        connection: ConnectionId { slot: (generation % 8) as u32, generation },
                        request,
                        peer: None,
                    });
                    assert!(!completion.bytes.is_empty());
                    replies += 1;
                }
                Ok(None) => break,
                Err(_) => {
                    protocol_errors += 1;
                    parser = RequestParser::new(config.limits);
                    break;
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "fuzz: {cases} cases ({requests} requests dispatched, {replies} replies, {protocol_errors} protocol errors) in {seconds:.2} s: {:.0} cases/s",
        cases as f64 / seconds
    );
    assert_eq!(requests, replies);
}
