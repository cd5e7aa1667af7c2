//! Hostile clients over real TCP (issue 12): each test is one way a client
//! tried to take the control plane away from its operator, and asserts that
//! the operator still gets in, the slot comes back, or the command is
//! refused with nothing else changed.

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

mod support;

use rtedge_control::Config;
use support::Harness;

/// 64 silent TCP connections (no token needed) used to fill every slot for
/// the idle timeout (300 s): the operator's `AUTH` + `PING` now get in.
#[test]
fn the_operator_gets_in_past_64_silent_connections() {
    let mut harness = Harness::new(Config::DEFAULT);
    for _ in 0..Config::DEFAULT.max_connections {
        harness.connect();
    }
    harness.settle();
    let operator = harness.connect();
    assert_eq!(harness.request(operator, &["AUTH", "s3cret"]), b"+OK\r\n");
    assert_eq!(harness.request(operator, &["PING"]), b"+PONG\r\n");
}

/// One byte every second never completes a command: the connection is
/// closed at the pre-auth deadline, whatever trickles in.
#[test]
fn a_trickling_unauthenticated_client_is_closed_at_the_preauth_deadline() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect();
    let frame = b"*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n";
    for byte in frame.iter().take(20) {
        harness.send(client, &[*byte]);
        harness.advance(1_000);
        harness.settle();
    }
    assert!(harness.closed_by_server(client), "still {:?} after 20 s of trickle", harness.state(client));
    assert_eq!(harness.server.connection_count(), 0);
}

/// A client that pipelines requests with large replies, stops reading and
/// closes: its slot (and its buffers) come back within bounded time.
#[test]
fn a_client_that_leaves_without_reading_gives_its_slot_back() {
    let mut harness = Harness::new(Config::DEFAULT);
    harness.client_rx_bytes = 4 * 1024;
    let client = harness.connect_authenticated();
    harness.clients[client].reading = false;
    let big = "x".repeat(30 * 1024);
    for _ in 0..8 {
        harness.send_command(client, &["ECHO", &big]);
    }
    harness.settle();
    harness.settle();
    assert!(harness.server.queued_output(harness.completions.last().unwrap().connection).unwrap_or(0) > 0);
    harness.socket(client).close();
    for _ in 0..200 {
        harness.advance(1_000);
        harness.steps(5);
    }
    assert_eq!(harness.server.connection_count(), 0);
    let stats = harness.server.stats();
    assert_eq!(stats.slot_states.listening, Config::DEFAULT.max_connections + 1, "{stats:?}");
}

/// `SHUTDOWN 7 extra` and `SHUTDOWN 0 NOSAVE` are arity errors, and
/// nothing shuts down.
#[test]
fn shutdown_takes_only_what_it_documents() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect_authenticated();
    for args in [&["SHUTDOWN", "7", "extra"][..], &["SHUTDOWN", "0", "NOSAVE"][..]] {
        assert_eq!(harness.request(client, args), b"-ERR wrong number of arguments for 'shutdown' command\r\n");
    }
    assert!(harness.completions.iter().all(|completion| completion.shutdown.is_none()));
    assert!(!harness.dispatcher.backend().executed.iter().any(|name| name == b"SHUTDOWN"));
}

/// Extra arguments are an error for every command whose grammar has no
/// room for them.
#[test]
fn extra_arguments_are_refused_before_the_command_runs() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect_authenticated();
    assert_eq!(harness.request(client, &["PING", "a", "b"]), b"-ERR wrong number of arguments for 'ping' command\r\n");
    assert_eq!(harness.request(client, &["INFO", "server", "extra"]), b"-ERR wrong number of arguments for 'info' command\r\n");
    assert_eq!(harness.request(client, &["LATENCY", "source", "NOPE"]), b"-ERR syntax error\r\n");
    assert!(harness.dispatcher.backend().executed.is_empty());
}

/// Wrong tokens over fresh connections: each connection's own back-off
/// used to start from zero (about 90 guesses per second). The global and
/// per-source back-off spread 30 guesses over many seconds.
#[test]
fn brute_force_over_reconnects_backs_off() {
    let mut harness = Harness::new(Config::DEFAULT);
    let start = harness.now();
    let mut answered = 0;
    for attempt in 0..30 {
        let client = harness.connect();
        harness.send_command(client, &["AUTH", &format!("guess{attempt}")]);
        // Wait for the answer (the server's clock moves 10 ms a step).
        for _ in 0..2_000 {
            harness.advance(10);
            harness.step();
            if !harness.clients[client].received.is_empty() || harness.closed_by_server(client) {
                break;
            }
        }
        if harness.take(client).starts_with(b"-WRONGPASS") {
            answered += 1;
        }
        harness.socket(client).abort();
        harness.steps(3);
        harness.forget(client);
    }
    let elapsed_ms = harness.now() - start;
    let per_second = answered as f64 * 1000.0 / elapsed_ms as f64;
    println!("{answered} wrong guesses answered in {elapsed_ms} ms: {per_second:.1}/s");
    assert!(answered > 0);
    assert!(per_second < 2.0, "{per_second:.1} guesses/s");
}

/// `MULTI` … `EXEC` runs the queued commands together; a queueing error
/// makes `EXEC` run nothing.
#[test]
fn a_failed_transaction_writes_nothing() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect_authenticated();
    assert_eq!(harness.request(client, &["MULTI"]), b"+OK\r\n");
    assert_eq!(harness.request(client, &["SET", "counter", "4242"]), b"+QUEUED\r\n");
    assert!(harness.request(client, &["NOSUCHCOMMAND"]).starts_with(b"-ERR unknown command"));
    assert_eq!(harness.request(client, &["EXEC"]), b"-EXECABORT Transaction discarded because of previous errors.\r\n");
    assert_eq!(harness.request(client, &["GET", "counter"]), b":0\r\n");

    assert_eq!(harness.request(client, &["MULTI"]), b"+OK\r\n");
    assert_eq!(harness.request(client, &["SET", "counter", "12"]), b"+QUEUED\r\n");
    assert_eq!(harness.request(client, &["GET", "counter"]), b"+QUEUED\r\n");
    assert_eq!(harness.request(client, &["EXEC"]), b"*2\r\n+OK\r\n:12\r\n");

    assert_eq!(harness.request(client, &["MULTI"]), b"+OK\r\n");
    assert_eq!(harness.request(client, &["SET", "counter", "13"]), b"+QUEUED\r\n");
    assert_eq!(harness.request(client, &["DISCARD"]), b"+OK\r\n");
    assert_eq!(harness.request(client, &["GET", "counter"]), b":12\r\n");
}

/// Subscriptions to long channel names are bounded in bytes, not only in
/// count: the command that would exceed the cap is refused and nothing
/// changes.
#[test]
fn subscription_names_are_capped_in_bytes() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect_authenticated();
    let mut refused = false;
    for batch in 0..40 {
        let names: Vec<String> = (0..2).map(|index| format!("{batch}-{index}-{}", "c".repeat(30_000))).collect();
        let mut args = vec!["SUBSCRIBE"];
        args.extend(names.iter().map(String::as_str));
        harness.send_command(client, &args);
        harness.settle();
        let reply = harness.take(client);
        if reply.starts_with(b"-ERR") {
            refused = true;
            break;
        }
    }
    assert!(refused, "2.4 MB of channel names were accepted");
    let connection = harness.completions.last().unwrap().connection;
    let session = harness.dispatcher.session(connection).unwrap();
    let bytes: usize = session.channels().iter().map(Vec::len).sum();
    assert!(bytes <= Config::DEFAULT.output_limit_bytes, "{bytes}");
}

/// A closed subscriber's session (and its channel names) is released when
/// it closes, not when a later connection reuses its slot.
#[test]
fn a_closed_connection_releases_its_session() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect_authenticated();
    harness.request(client, &["SUBSCRIBE", &"n".repeat(20_000)]);
    let connection = harness.completions.last().unwrap().connection;
    assert!(harness.dispatcher.session(connection).is_some());
    harness.socket(client).close();
    harness.settle();
    harness.settle();
    assert_eq!(harness.server.connection_count(), 0);
    assert!(harness.dispatcher.session(connection).is_none());
}

/// A small global budget: subscriptions grow until the budget refuses one
/// (`-OOM`, nothing subscribed by it), the budget is never passed, and a
/// closed connection gives everything back.
#[test]
fn the_memory_budget_refuses_growth_and_frees_on_close() {
    let config = Config { memory_limit_bytes: 256 * 1024, ..Config::DEFAULT };
    let mut harness = Harness::new(config);
    let client = harness.connect_authenticated();
    let baseline = harness.server.memory().used();
    let mut subscribed = 0;
    let mut refusal = Vec::new();
    for index in 0..20 {
        let reply = harness.request(client, &["SUBSCRIBE", &format!("{index}{}", "m".repeat(20_000))]);
        if reply.starts_with(b"-") {
            refusal = reply;
            break;
        }
        subscribed += 1;
    }
    assert!(refusal.starts_with(b"-OOM"), "{}", String::from_utf8_lossy(&refusal));
    let connection = harness.completions.last().unwrap().connection;
    assert_eq!(harness.dispatcher.session(connection).unwrap().subscription_count(), subscribed);
    assert_eq!(harness.server.hub().subscription_count(connection), subscribed);
    let memory = harness.server.memory();
    // Request buffers are charged but not refused (a client can always send
    // the command that frees memory); they are bounded by the frame limit.
    let input_allowance = 2 * config.limits.max_frame_bytes;
    assert!(memory.peak() <= memory.limit() + input_allowance, "{} > {}", memory.peak(), memory.limit());
    assert!(memory.refusals() >= 1);
    harness.socket(client).close();
    harness.settle();
    harness.settle();
    assert_eq!(harness.server.connection_count(), 0);
    assert!(memory.used() < baseline, "{} bytes still charged after the close", memory.used());
    assert_eq!(memory.used(), 0);
}
