//! No input and no sequence of API calls makes the server panic or stop
//! serving: random bytes from many clients, random requests straight into
//! the dispatcher, random (mostly stale) ids into the network half, and a
//! peer that never finishes a close.

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

mod support;

use rtedge_control::{Completion, Config, ConnectionId, Job, SubscriptionChange};
use rtedge_proto::{Request, command as commands};
use smoltcp::socket::tcp;
use support::{Harness, Random, command};

const VALID: [&[&str]; 12] = [
    &["AUTH", "s3cret"],
    &["AUTH", "wrong"],
    &["PING"],
    &["ECHO", "x"],
    &["HELLO", "3"],
    &["HELLO", "2"],
    &["SUBSCRIBE", "news"],
    &["PSUBSCRIBE", "n*"],
    &["UNSUBSCRIBE"],
    &["GET", "counter"],
    &["SET", "counter", "7"],
    &["COMMAND", "DOCS"],
];

#[test]
fn random_bytes_from_many_clients_never_break_the_server() {
    let config = Config { max_connections: 6, output_limit_bytes: 64 * 1024, output_pause_bytes: 16 * 1024, ..Config::DEFAULT };
    let mut harness = Harness::new(config);
    harness.client_rx_bytes = 4096;
    harness.client_tx_bytes = 8192;
    let mut random = Random::new(0x5eed_cafe);
    let mut live: Vec<usize> = (0..8).map(|_| harness.connect()).collect();

    for round in 0..600 {
        for live_client in &mut live {
            let client = *live_client;
            let mut bytes = match random.below(6) {
                0 | 1 => command(VALID[random.below(VALID.len())]),
                2 => {
                    let mut bytes = command(VALID[random.below(VALID.len())]);
                    for _ in 0..1 + random.below(3) {
                        let index = random.below(bytes.len());
                        bytes[index] = random.next_u64() as u8;
                    }
                    bytes
                }
                3 => random.bytes_below(200),
                4 => random.bytes_below(3000),
                _ => Vec::new(),
            };
            if random.below(50) == 0 {
                bytes.clear();
                harness.socket(client).abort();
            }
            harness.send(client, &bytes);
            harness.clients[client].reading = random.below(8) != 0;
            // Replace clients the server closed (or that aborted).
            let state = harness.state(client);
            if matches!(state, tcp::State::CloseWait | tcp::State::Closed | tcp::State::TimeWait) {
                harness.socket(client).close();
                harness.steps(2);
                harness.forget(client);
                *live_client = harness.connect();
            }
        }
        // Random calls with made-up or stale ids.
        let connection = ConnectionId { slot: random.below(10) as u32, generation: random.below(40) as u64 };
        let mut completion = Completion::reply(connection, random.bytes_below(64));
        completion.close_after = random.below(2) == 0;
        completion.not_before_ms = Some(random.next_u64());
        completion.subscription_changes = vec![SubscriptionChange::Subscribe(b"news".to_vec())];
        let now = harness.now();
        if let Some(job) = harness.server.complete(now, completion) {
            // The id happened to be live with a job out: keep the
            // connection going.
            let completion = harness.dispatcher.execute(job);
            let _ = harness.server.complete(now, completion);
        }
        harness.server.push(connection, &random.bytes_below(64));
        if random.below(40) == 0 {
            harness.server.disconnect(connection);
        }
        harness.server.publish(b"news", &random.bytes_below(300));
        if random.below(20) == 0 {
            harness.advance(random.below(400_000) as u64);
        }
        harness.steps(1 + random.below(4));
        assert!(harness.server.connection_count() <= 6, "round {round}");
        let _ = harness.server.next_timeout(harness.now());
    }

    // Let every close finish, then a fresh client is served normally.
    for &client in &live {
        harness.socket(client).abort();
    }
    harness.advance(10_000);
    harness.settle();
    harness.advance(10_000);
    harness.settle();
    assert_eq!(harness.server.connection_count(), 0);
    let client = harness.connect_authenticated();
    assert_eq!(harness.request(client, &["PING"]), b"+PONG\r\n");
    let stats = harness.server.stats();
    assert!(stats.protocol_errors > 50, "{stats:?}");
    assert!(stats.accepted > 50, "{stats:?}");
}

#[test]
fn random_requests_to_the_dispatcher_always_get_one_reply() {
    let mut harness = Harness::new(Config::DEFAULT);
    let mut random = Random::new(7);
    let names: Vec<&str> = commands::all().iter().map(|spec| spec.name).chain(["demo.add", "nope", "CLIENT", "Command"]).collect();
    let words: [&[u8]; 12] = [b"AUTH", b"default", b"s3cret", b"SETNAME", b"3", b"2", b"DOCS", b"GET", b"*", b"ID", b"INFO", b"\r\n"];
    for _ in 0..20_000 {
        let mut args = vec![names[random.below(names.len())].as_bytes().to_vec()];
        for _ in 0..random.below(6) {
            args.push(if random.below(2) == 0 { words[random.below(words.len())].to_vec() } else { random.bytes_below(12) });
        }
        let connection = ConnectionId { slot: random.below(4) as u32, generation: 1 + random.below(3) as u64 };
        let job = Job { connection, request: Request::from_args(args).unwrap(), peer: None };
        if random.below(100) == 0 {
            harness.advance(random.below(3000) as u64);
        }
        let completion = harness.dispatcher.execute(job);
        assert_eq!(completion.connection, connection);
        // One reply at least; exactly one unless it is a pub/sub command.
        assert!(!completion.bytes.is_empty());
        let session = harness.dispatcher.session(connection).unwrap();
        assert_eq!(completion.protocol, session.protocol());
    }
}

#[test]
fn a_peer_that_never_finishes_a_close_is_reset_after_the_linger() {
    let config = Config { max_connections: 1, ..Config::DEFAULT };
    let mut harness = Harness::new(config);
    let first = harness.connect();
    assert_eq!(harness.request(first, &["QUIT"]), b"+OK\r\n");
    // The first client never closes its side; the spare socket still
    // takes the next client, which also quits without closing.
    let second = harness.connect();
    assert_eq!(harness.request(second, &["QUIT"]), b"+OK\r\n");
    // No socket listens now: a third client is reset by TCP.
    let third = harness.connect();
    harness.settle();
    assert_eq!(harness.state(third), tcp::State::Closed);
    assert_eq!(harness.server.next_timeout(harness.now()), Some(5_000));

    harness.advance(5_000);
    harness.settle();
    assert_eq!(harness.state(first), tcp::State::Closed);
    assert_eq!(harness.state(second), tcp::State::Closed);
    let fourth = harness.connect();
    assert_eq!(harness.request(fourth, &["PING"]), b"+PONG\r\n");
}
