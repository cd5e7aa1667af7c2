//! Limits and isolation over real TCP: protocol errors, oversized
//! requests, the connection limit, output overflow, the idle timeout, the
//! rate limit and stale completions.

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

mod support;

use rtedge_control::{Completion, Config, ConnectionId, PushOutcome};
use rtedge_proto::Limits;
use smoltcp::socket::tcp;
use support::{Harness, command};

#[test]
fn a_malformed_frame_closes_only_its_connection() {
    let mut harness = Harness::new(Config::DEFAULT);
    let bad = harness.connect_authenticated();
    let good = harness.connect_authenticated();
    // A good request, then garbage in the same segment: the good one is
    // answered first.
    let mut bytes = command(&["PING"]);
    bytes.extend_from_slice(b"*1\r\n$x\r\n");
    harness.send(bad, &bytes);
    harness.settle();
    assert_eq!(harness.take(bad), b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n");
    assert!(harness.closed_by_server(bad));
    assert_eq!(harness.server.stats().protocol_errors, 1);
    assert_eq!(harness.request(good, &["PING"]), b"+PONG\r\n");
    assert_eq!(harness.server.connection_count(), 1);

    let other = harness.connect();
    harness.send(other, b"*2\r\n$4\r\nECHO\r\nx");
    harness.settle();
    assert_eq!(harness.take(other), b"-ERR Protocol error: expected '$', got 'x'\r\n");
    assert!(harness.closed_by_server(other));
    assert_eq!(harness.request(good, &["ECHO", "still"]), b"$5\r\nstill\r\n");
}

#[test]
fn oversized_frames_arguments_and_bulks_are_protocol_errors() {
    let mut harness = Harness::new(Config::DEFAULT);
    // Before AUTH: Redis's caps, 10 arguments and 16 KiB arguments.
    let client = harness.connect();
    harness.send(client, b"*11\r\n");
    harness.settle();
    assert_eq!(harness.take(client), b"-ERR Protocol error: too many arguments\r\n");
    let client = harness.connect();
    harness.send(client, b"*2\r\n$4\r\nAUTH\r\n$16385\r\n");
    harness.settle();
    assert_eq!(harness.take(client), b"-ERR Protocol error: invalid bulk length\r\n");

    // After AUTH: 1024 arguments, 32 KiB arguments, 64 KiB frames.
    let client = harness.connect_authenticated();
    harness.send(client, b"*1025\r\n");
    harness.settle();
    assert_eq!(harness.take(client), b"-ERR Protocol error: too many arguments\r\n");
    let client = harness.connect_authenticated();
    harness.send(client, b"*2\r\n$4\r\nECHO\r\n$32769\r\n");
    harness.settle();
    assert_eq!(harness.take(client), b"-ERR Protocol error: invalid bulk length\r\n");
    let client = harness.connect_authenticated();
    let mut frame = b"*3\r\n$3\r\nSET\r\n$32768\r\n".to_vec();
    frame.extend(std::iter::repeat_n(b'k', 32768));
    frame.extend_from_slice(b"\r\n$32768\r\n");
    harness.send(client, &frame);
    harness.settle();
    assert_eq!(harness.take(client), b"-ERR Protocol error: request too large\r\n");
    // Before AUTH a frame fills the 1 KiB pre-auth allowance first.
    let client = harness.connect();
    harness.send(client, &[b'A'; 16 * 1024 + 1]);
    harness.settle();
    assert_eq!(harness.take(client), b"-ERR Protocol error: request too large\r\n");
    let client = harness.connect_authenticated();
    harness.send(client, &[b'A'; 16 * 1024 + 1]);
    harness.settle();
    assert_eq!(harness.take(client), b"-ERR Protocol error: too big inline request\r\n");
    assert_eq!(harness.server.stats().protocol_errors, 7);
    assert_eq!(harness.server.connection_count(), 0);

    // At the limits, everything passes: a 32 KiB argument echoed whole.
    let client = harness.connect_authenticated();
    let big = "b".repeat(32 * 1024);
    harness.send_command(client, &["ECHO", &big]);
    let mut expected = b"$32768\r\n".to_vec();
    expected.extend_from_slice(big.as_bytes());
    expected.extend_from_slice(b"\r\n");
    assert_eq!(harness.read_at_least(client, expected.len()), expected);
}

#[test]
fn the_65th_connection_is_refused_with_redis_text_while_64_keep_working() {
    let mut harness = Harness::new(Config::DEFAULT);
    harness.client_rx_bytes = 2048;
    harness.client_tx_bytes = 2048;
    let clients: Vec<_> = (0..64).map(|_| harness.connect_authenticated()).collect();
    assert_eq!(harness.server.connection_count(), 64);

    let refused = harness.connect();
    harness.settle();
    assert_eq!(harness.take(refused), b"-ERR max number of clients reached\r\n");
    assert!(harness.closed_by_server(refused));
    // As a real client does on seeing the close.
    harness.socket(refused).close();
    let stats = harness.server.stats();
    assert_eq!((stats.accepted, stats.rejected, stats.connected), (64, 1, 64));

    for &client in &clients {
        harness.send_command(client, &["PING"]);
    }
    harness.settle();
    for &client in &clients {
        assert_eq!(harness.take(client), b"+PONG\r\n");
    }

    // A slot freed by QUIT takes the next client.
    assert_eq!(harness.request(clients[10], &["QUIT"]), b"+OK\r\n");
    harness.socket(clients[10]).close();
    harness.settle();
    assert_eq!(harness.server.connection_count(), 63);
    let late = harness.connect_authenticated();
    assert_eq!(harness.request(late, &["PING"]), b"+PONG\r\n");
    assert_eq!(harness.server.connection_count(), 64);
}

#[test]
fn a_subscriber_that_does_not_read_is_disconnected_alone() {
    let config = Config { output_limit_bytes: 4096, output_pause_bytes: 1024, socket_tx_bytes: 1024, ..Config::DEFAULT };
    let mut harness = Harness::new(config);
    harness.client_rx_bytes = 512;
    let slow = harness.connect_authenticated();
    let fast = harness.connect_authenticated();
    let bystander = harness.connect_authenticated();
    harness.client_rx_bytes = 64 * 1024;
    for client in [slow, fast] {
        assert_eq!(harness.request(client, &["SUBSCRIBE", "news"]), b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
    }
    harness.clients[slow].reading = false;

    let payload = [b'p'; 100];
    let message = {
        let mut message = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$100\r\n".to_vec();
        message.extend_from_slice(&payload);
        message.extend_from_slice(b"\r\n");
        message
    };
    let mut receivers = Vec::new();
    for _ in 0..100 {
        receivers.push(harness.server.publish(b"news", &payload).receivers);
        harness.steps(3);
    }
    harness.settle();
    // The slow subscriber was cut off once its queue passed 4 KiB; the
    // fast one got every message.
    assert_eq!(harness.server.stats().output_overflows, 1);
    assert_eq!(harness.state(slow), tcp::State::Closed);
    assert_eq!(receivers[0], 2);
    assert_eq!(*receivers.last().unwrap(), 1);
    // Only the message that overflowed was dropped: the client then left
    // the hub, so later messages were never addressed to it.
    assert_eq!(harness.server.stats().messages_dropped, 1);
    let received = harness.take(fast);
    assert_eq!(received.len(), message.len() * 100);
    assert!(received.chunks(message.len()).all(|chunk| chunk == message));
    assert_eq!(harness.request(bystander, &["PING"]), b"+PONG\r\n");
    assert_eq!(harness.server.connection_count(), 2);
}

#[test]
fn a_client_that_pipelines_without_reading_is_paused_not_disconnected() {
    let config = Config { output_limit_bytes: 4096, output_pause_bytes: 1024, socket_tx_bytes: 1024, ..Config::DEFAULT };
    let mut harness = Harness::new(config);
    harness.client_rx_bytes = 512;
    let client = harness.connect_authenticated();
    harness.clients[client].reading = false;
    let echo = command(&["ECHO", &"e".repeat(200)]);
    for _ in 0..100 {
        harness.send(client, &echo);
    }
    harness.settle();
    assert_eq!(harness.server.stats().output_overflows, 0);
    let answered_while_stalled = harness.server.stats().commands;
    assert!(answered_while_stalled < 50, "{answered_while_stalled}");
    harness.clients[client].reading = true;
    let reply_length = 6 + 200 + 2;
    let received = harness.read_at_least(client, reply_length * 100);
    assert_eq!(received.len(), reply_length * 100);
    assert_eq!(harness.server.stats().commands, 101);
}

#[test]
fn an_idle_connection_is_closed_but_a_subscribed_one_is_not() {
    let mut harness = Harness::new(Config::DEFAULT);
    let idle = harness.connect_authenticated();
    let subscriber = harness.connect_authenticated();
    harness.request(subscriber, &["SUBSCRIBE", "events"]);
    assert_eq!(harness.server.next_timeout(harness.now()), Some(300_000));

    harness.advance(299_999);
    harness.settle();
    assert!(!harness.closed_by_server(idle));
    harness.advance(1);
    harness.settle();
    assert_eq!(harness.state(idle), tcp::State::CloseWait);
    assert_eq!(harness.take(idle), b"");
    assert_eq!(harness.server.stats().idle_timeouts, 1);

    harness.advance(1_000_000);
    harness.settle();
    assert_eq!(harness.request(subscriber, &["PING"]), b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    assert_eq!(harness.server.connection_count(), 1);
    assert_eq!(harness.server.next_timeout(harness.now()), None);
}

#[test]
fn idle_timeout_zero_means_never() {
    let config = Config { idle_timeout_ms: 0, ..Config::DEFAULT };
    let mut harness = Harness::new(config);
    let client = harness.connect_authenticated();
    harness.advance(10_000_000);
    harness.settle();
    assert_eq!(harness.request(client, &["PING"]), b"+PONG\r\n");
}

#[test]
fn excess_requests_wait_for_the_rate_limit_and_none_is_dropped() {
    let config = Config { rate_limit_per_second: 10, ..Config::DEFAULT };
    let mut harness = Harness::new(config);
    let client = harness.connect_authenticated();
    // AUTH took one of the ten; twelve PINGs: nine now, the rest later.
    for _ in 0..12 {
        harness.send_command(client, &["PING"]);
    }
    harness.settle();
    assert_eq!(harness.take(client), b"+PONG\r\n".repeat(9));
    assert_eq!(harness.server.next_timeout(harness.now()), Some(100));
    harness.advance(99);
    harness.settle();
    assert_eq!(harness.take(client), b"");
    harness.advance(1);
    harness.settle();
    assert_eq!(harness.take(client), b"+PONG\r\n");
    harness.advance(1000);
    harness.settle();
    assert_eq!(harness.take(client), b"+PONG\r\n".repeat(2));
    assert_eq!(harness.server.stats().rate_limited, 2);
}

#[test]
fn a_completion_for_a_closed_and_reused_slot_is_dropped() {
    let config = Config { max_connections: 1, ..Config::DEFAULT };
    let mut harness = Harness::new(config);
    harness.hold_jobs = true;
    let first = harness.connect();
    harness.send_command(first, &["PING"]);
    harness.settle();
    let stale = harness.held_jobs.remove(0);
    harness.socket(first).abort();
    harness.settle();
    assert_eq!(harness.server.connection_count(), 0);
    assert!(!harness.server.is_open(stale.connection));

    let second = harness.connect();
    harness.send_command(second, &["PING"]);
    harness.settle();
    let fresh = harness.held_jobs.remove(0);
    assert_eq!(fresh.connection.slot, stale.connection.slot);
    assert_ne!(fresh.connection.generation, stale.connection.generation);

    let now = harness.now();
    let none = harness.server.complete(now, Completion::reply(stale.connection, b"+STALE\r\n".to_vec()));
    assert!(none.is_none());
    assert_eq!(harness.server.stats().stale_completions, 1);
    assert_eq!(harness.server.push(stale.connection, b"+STALE\r\n"), PushOutcome::Dropped);
    // Ids that never existed are dropped the same way.
    for connection in [
        ConnectionId { slot: 0, generation: 0 },
        ConnectionId { slot: u32::MAX, generation: u64::MAX },
        ConnectionId { slot: 1, generation: fresh.connection.generation },
    ] {
        assert!(harness.server.complete(now, Completion::reply(connection, vec![b'x'])).is_none());
        assert_eq!(harness.server.push(connection, b"x"), PushOutcome::Dropped);
        assert!(!harness.server.disconnect(connection));
    }
    assert_eq!(harness.server.stats().stale_completions, 4);

    let completion = harness.dispatcher.execute(fresh);
    assert!(harness.server.complete(now, completion.clone()).is_none());
    // A second completion for the same job is stale too.
    assert!(harness.server.complete(now, completion).is_none());
    assert_eq!(harness.server.stats().stale_completions, 5);
    harness.settle();
    assert_eq!(harness.take(second), b"+PONG\r\n");
}

#[test]
fn unauthenticated_limits_are_redis_caps_within_ours() {
    // Redis's 10 arguments, and frames, lines and arguments within the
    // pre-auth input allowance (1 KiB), well below Redis's 16 KiB.
    let limits = Config::DEFAULT.unauthenticated_limits();
    assert_eq!(limits, Limits { max_frame_bytes: 1024, max_args: 10, max_bulk_bytes: 1024, max_inline_bytes: 1024 });
    let wide = Config { preauth_input_bytes: 64 * 1024, ..Config::DEFAULT };
    assert_eq!(
        wide.unauthenticated_limits(),
        Limits { max_frame_bytes: 64 * 1024, max_args: 10, max_bulk_bytes: 16 * 1024, max_inline_bytes: 16 * 1024 }
    );
}

#[test]
fn the_kernel_hooks_report_pending_work_and_flushed_output() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect_authenticated();
    harness.request(client, &["SUBSCRIBE", "events"]);
    let connection = harness.completions.last().unwrap().connection;
    let now = harness.now();
    // A subscriber has no deadline of its own...
    assert_eq!(harness.server.next_timeout(now), None);
    // ...but queued bytes ask for a poll at once, and leave with it.
    assert_eq!(harness.server.push(connection, b"*1\r\n$1\r\nx\r\n"), rtedge_control::PushOutcome::Queued);
    assert_eq!(harness.server.queued_output(connection), Some(11));
    assert_eq!(harness.server.next_timeout(now), Some(0));
    harness.settle();
    assert_eq!(harness.server.queued_output(connection), Some(0));
    assert_eq!(harness.server.next_timeout(now), None);
    assert_eq!(harness.take(client), b"*1\r\n$1\r\nx\r\n");

    // A kernel-side disconnect resets the client at the next poll.
    assert!(harness.server.disconnect(connection));
    assert!(!harness.server.is_open(connection));
    assert_eq!(harness.server.next_timeout(now), Some(0));
    harness.settle();
    assert_eq!(harness.state(client), tcp::State::Closed);
    assert_eq!(harness.server.queued_output(connection), None);
    assert_eq!(harness.server.hub().subscriber_count(), 0);
    // Not an output overflow.
    assert_eq!(harness.server.stats().output_overflows, 0);
}
