//! Pub/sub over real TCP: confirmations and counts, delivery in RESP2 and
//! RESP3 form, pattern matching, unsubscribing, and the RESP2 subscribed
//! mode.

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

mod support;

use rtedge_control::{Config, PublishReport};
use support::Harness;

#[test]
fn subscriptions_confirm_with_counts_and_messages_reach_matching_subscribers() {
    let mut harness = Harness::new(Config::DEFAULT);
    let resp2 = harness.connect_authenticated();
    let resp3 = harness.connect_authenticated();
    let bystander = harness.connect_authenticated();
    harness.request(resp3, &["HELLO", "3"]);

    assert_eq!(
        harness.request(resp2, &["SUBSCRIBE", "news", "alerts", "news"]),
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n\
*3\r\n$9\r\nsubscribe\r\n$6\r\nalerts\r\n:2\r\n\
*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:2\r\n"
    );
    assert_eq!(harness.request(resp2, &["PSUBSCRIBE", "n*"]), b"*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:3\r\n");
    assert_eq!(harness.request(resp3, &["SUBSCRIBE", "news"]), b">3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
    // The network half's hub mirrors the sessions: two channels and a
    // pattern for the first client (its AUTH was the first completion).
    let first = harness.completions[0].connection;
    assert_eq!(harness.server.hub().subscription_count(first), 3);

    let report = harness.server.publish(b"news", br#"{"t":1,"kind":"x"}"#);
    assert_eq!(report, PublishReport { receivers: 3, dropped: 0 });
    harness.settle();
    assert_eq!(
        harness.take(resp2),
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$18\r\n{\"t\":1,\"kind\":\"x\"}\r\n\
*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$18\r\n{\"t\":1,\"kind\":\"x\"}\r\n"
    );
    assert_eq!(harness.take(resp3), b">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$18\r\n{\"t\":1,\"kind\":\"x\"}\r\n");
    assert_eq!(harness.take(bystander), b"");

    assert_eq!(harness.server.publish(b"other", b"{}").receivers, 0);
    assert_eq!(harness.server.publish(b"nothing", b"{}").receivers, 1);
    harness.settle();
    assert_eq!(harness.take(resp2), b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$7\r\nnothing\r\n$2\r\n{}\r\n");

    // RESP2 in subscribed mode: only pub/sub commands, PING and QUIT.
    assert_eq!(
        harness.request(resp2, &["GET", "counter"]),
        b"-ERR Can't execute 'get': only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT are \
allowed in this context\r\n"
    );
    assert_eq!(harness.request(resp2, &["PING", "x"]), b"*2\r\n$4\r\npong\r\n$1\r\nx\r\n");
    // RESP3 connections may run anything while subscribed.
    assert_eq!(harness.request(resp3, &["GET", "counter"]), b":0\r\n");
    assert_eq!(harness.request(resp3, &["PING"]), b"+PONG\r\n");

    assert_eq!(
        harness.request(resp2, &["UNSUBSCRIBE"]),
        b"*3\r\n$11\r\nunsubscribe\r\n$6\r\nalerts\r\n:2\r\n\
*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    assert_eq!(harness.server.publish(b"news", b"2").receivers, 2);
    harness.settle();
    assert_eq!(harness.take(resp2), b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$1\r\n2\r\n");
    assert_eq!(harness.take(resp3), b">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$1\r\n2\r\n");
    assert_eq!(
        harness.request(resp2, &["PUNSUBSCRIBE", "n*", "m*"]),
        b"*3\r\n$12\r\npunsubscribe\r\n$2\r\nn*\r\n:0\r\n\
*3\r\n$12\r\npunsubscribe\r\n$2\r\nm*\r\n:0\r\n"
    );
    assert_eq!(harness.request(resp2, &["UNSUBSCRIBE"]), b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n");
    // Out of subscribed mode: everything runs again.
    assert_eq!(harness.request(resp2, &["GET", "counter"]), b":0\r\n");
    assert_eq!(harness.server.publish(b"news", b"3").receivers, 1);
    let stats = harness.server.stats();
    assert_eq!((stats.messages_published, stats.messages_delivered, stats.messages_dropped), (5, 7, 0));
}

#[test]
fn a_subscriber_switching_to_resp3_gets_push_frames() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect_authenticated();
    harness.request(client, &["PSUBSCRIBE", "latency.*"]);
    harness.server.publish(b"latency.rt0", b"a");
    harness.settle();
    assert_eq!(harness.take(client), b"*4\r\n$8\r\npmessage\r\n$9\r\nlatency.*\r\n$11\r\nlatency.rt0\r\n$1\r\na\r\n");
    // HELLO is not allowed in RESP2 subscribed mode...
    assert_eq!(
        harness.request(client, &["HELLO", "3"]),
        b"-ERR Can't execute 'hello': only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT are \
allowed in this context\r\n"
    );
    // ...so a client switches first, then subscribes.
    let resp3 = harness.connect_authenticated();
    harness.request(resp3, &["HELLO", "3"]);
    harness.request(resp3, &["PSUBSCRIBE", "latency.*"]);
    harness.server.publish(b"latency.rt1", b"b");
    harness.settle();
    assert_eq!(harness.take(resp3), b">4\r\n$8\r\npmessage\r\n$9\r\nlatency.*\r\n$11\r\nlatency.rt1\r\n$1\r\nb\r\n");
    // A subscriber switching back to RESP2 gets arrays from then on.
    harness.request(resp3, &["HELLO", "2"]);
    harness.server.publish(b"latency.rt1", b"c");
    harness.settle();
    assert_eq!(harness.take(resp3), b"*4\r\n$8\r\npmessage\r\n$9\r\nlatency.*\r\n$11\r\nlatency.rt1\r\n$1\r\nc\r\n");
}

#[test]
fn a_closed_subscriber_leaves_the_hub() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect_authenticated();
    harness.request(client, &["SUBSCRIBE", "a", "b"]);
    harness.request(client, &["PSUBSCRIBE", "*"]);
    assert_eq!(harness.server.hub().subscriber_count(), 1);
    assert_eq!(harness.server.hub().channel_and_pattern_count(), (2, 1));
    harness.socket(client).abort();
    harness.settle();
    assert_eq!(harness.server.hub().subscriber_count(), 0);
    assert_eq!(harness.server.hub().channel_and_pattern_count(), (0, 0));
    assert_eq!(harness.server.publish(b"a", b"x").receivers, 0);
}

#[test]
fn subscriptions_per_client_are_bounded() {
    let config = Config { max_subscriptions_per_client: 3, ..Config::DEFAULT };
    let mut harness = Harness::new(config);
    let client = harness.connect_authenticated();
    harness.request(client, &["SUBSCRIBE", "a", "b"]);
    assert_eq!(harness.request(client, &["PSUBSCRIBE", "c*", "d*"]), b"-ERR maximum number of subscriptions per client (3) reached\r\n");
    // Already-held names do not count again; counts run as in Redis.
    assert_eq!(
        harness.request(client, &["SUBSCRIBE", "a", "c"]),
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:2\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:3\r\n"
    );
}
