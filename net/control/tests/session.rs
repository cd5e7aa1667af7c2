//! Sessions over real TCP (smoltcp loopback): protocol versions,
//! authentication, pipelining, connection commands, introspection.

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

mod support;

use rtedge_control::Config;
use rtedge_control::dispatch::auth_delay_ms;
use rtedge_proto::command;
use rtedge_proto::{ProtocolVersion, Reply};
use support::{APP_COMMANDS, Harness, command};

const HELLO3_REPLY_ID1: &[u8] = b"%7\r\n$6\r\nserver\r\n$6\r\nrtedge\r\n$7\r\nversion\r\n$5\r\n0.1.0\r\n\
$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:1\r\n$4\r\nmode\r\n$9\r\nappliance\r\n$4\r\nrole\r\n$6\r\nmaster\r\n\
$7\r\nmodules\r\n*0\r\n";

#[test]
fn ping_and_echo_in_resp2_then_resp3_after_hello_3() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect_authenticated();
    assert_eq!(harness.request(client, &["PING"]), b"+PONG\r\n");
    assert_eq!(harness.request(client, &["ping", "hi"]), b"$2\r\nhi\r\n");
    assert_eq!(harness.request(client, &["ECHO", "hello"]), b"$5\r\nhello\r\n");
    // Inline commands too, as redis-cli's raw mode and telnet send them.
    harness.send(client, b"PING\r\n");
    harness.settle();
    assert_eq!(harness.take(client), b"+PONG\r\n");
    assert_eq!(harness.request(client, &["GET", "flag"]), b":1\r\n");
    assert_eq!(harness.request(client, &["GET", "nothing"]), b"$-1\r\n");
    assert_eq!(harness.request(client, &["GET", "ratio"]), b"$3\r\n0.5\r\n");

    assert_eq!(harness.request(client, &["HELLO", "3"]), HELLO3_REPLY_ID1);
    assert_eq!(harness.request(client, &["PING"]), b"+PONG\r\n");
    assert_eq!(harness.request(client, &["ECHO", "hello"]), b"$5\r\nhello\r\n");
    assert_eq!(harness.request(client, &["GET", "flag"]), b"#t\r\n");
    assert_eq!(harness.request(client, &["GET", "nothing"]), b"_\r\n");
    assert_eq!(harness.request(client, &["GET", "ratio"]), b",0.5\r\n");
    // THREADS is an array of maps: a map in RESP3...
    assert_eq!(
        harness.request(client, &["THREADS"]),
        b"*1\r\n%6\r\n$2\r\nid\r\n:0\r\n$4\r\nname\r\n$4\r\nidle\r\n$4\r\nkind\r\n$4\r\nidle\r\n\
$8\r\npriority\r\n:-1\r\n$5\r\nstate\r\n$7\r\nrunning\r\n$10\r\nruntime_ns\r\n:1500\r\n"
    );
    // ...and a flat array after going back to RESP2.
    let back = harness.request(client, &["HELLO", "2"]);
    assert!(back.starts_with(b"*14\r\n$6\r\nserver\r\n"), "{back:?}");
    assert_eq!(
        harness.request(client, &["THREADS"]),
        b"*1\r\n*12\r\n$2\r\nid\r\n:0\r\n$4\r\nname\r\n$4\r\nidle\r\n$4\r\nkind\r\n$4\r\nidle\r\n\
$8\r\npriority\r\n:-1\r\n$5\r\nstate\r\n$7\r\nrunning\r\n$10\r\nruntime_ns\r\n:1500\r\n"
    );
}

#[test]
fn hello_rejects_bad_versions_and_options() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect_authenticated();
    assert_eq!(harness.request(client, &["HELLO", "4"]), b"-NOPROTO unsupported protocol version\r\n");
    assert_eq!(harness.request(client, &["HELLO", "x"]), b"-ERR Protocol version is not an integer or out of range\r\n");
    assert_eq!(harness.request(client, &["HELLO", "3", "BOGUS"]), b"-ERR Syntax error in option 'BOGUS'\r\n");
    // Nothing changed: still RESP2.
    assert_eq!(harness.request(client, &["GET", "nothing"]), b"$-1\r\n");
}

#[test]
fn before_auth_only_ping_hello_auth_quit_are_answered() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect();
    let noauth = b"-NOAUTH Authentication required.\r\n";
    assert_eq!(harness.request(client, &["GET", "counter"]), noauth);
    assert_eq!(harness.request(client, &["FOO", "bar"]), noauth);
    assert_eq!(harness.request(client, &["COMMAND", "DOCS"]), noauth);
    assert_eq!(harness.request(client, &["SUBSCRIBE", "x"]), noauth);
    assert_eq!(harness.request(client, &["PING"]), b"+PONG\r\n");
    assert_eq!(
        harness.request(client, &["HELLO", "3"]),
        b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the \
HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the \
RESP protocol version at the same time\r\n"
    );
    // Arity is checked for the allowed ones.
    assert_eq!(harness.request(client, &["AUTH"]), b"-ERR wrong number of arguments for 'auth' command\r\n");
    assert_eq!(harness.dispatcher.backend().executed.len(), 0);
    assert_eq!(harness.request(client, &["AUTH", "default", "s3cret"]), b"+OK\r\n");
    assert_eq!(harness.request(client, &["GET", "counter"]), b":0\r\n");
}

#[test]
fn hello_with_auth_authenticates_and_switches_in_one_step() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect();
    let reply = harness.request(client, &["HELLO", "3", "AUTH", "default", "s3cret", "SETNAME", "probe"]);
    assert_eq!(reply, HELLO3_REPLY_ID1);
    assert_eq!(harness.request(client, &["CLIENT", "GETNAME"]), b"$5\r\nprobe\r\n");
    assert_eq!(harness.request(client, &["GET", "nothing"]), b"_\r\n");
}

#[test]
fn wrong_auth_delays_the_next_attempt_100ms_doubling() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect();
    let wrongpass = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";

    // The first wrong token is answered at once.
    assert_eq!(harness.request(client, &["AUTH", "guess1"]), wrongpass);
    assert_eq!(harness.dispatcher.stats().token_checks, 1);

    // The second, sent before 100 ms have passed, waits for them.
    assert_eq!(harness.request(client, &["AUTH", "guess2"]), b"");
    harness.advance(99);
    harness.settle();
    assert_eq!(harness.take(client), b"");
    assert_eq!(harness.server.next_timeout(harness.now()), Some(1));
    harness.advance(1);
    harness.settle();
    assert_eq!(harness.take(client), wrongpass);
    assert_eq!(harness.dispatcher.stats().token_checks, 2);

    // The next attempt is evaluated 200 ms after that one, even when
    // right, and a pipelined PING waits behind it.
    harness.send_command(client, &["AUTH", "default", "s3cret"]);
    harness.send_command(client, &["PING"]);
    harness.settle();
    harness.advance(199);
    harness.settle();
    assert_eq!(harness.take(client), b"");
    harness.advance(1);
    harness.settle();
    assert_eq!(harness.take(client), b"+OK\r\n+PONG\r\n");
    // Every token went through the one constant-time comparison.
    let stats = harness.dispatcher.stats();
    assert_eq!((stats.token_checks, stats.auth_failures), (3, 2));

    // A wrong user name with the right token is still wrong.
    // (The address's back-off was cleared by the success.)
    let other = harness.connect();
    assert_eq!(harness.request(other, &["AUTH", "bob", "s3cret"]), wrongpass);
    // Another connection from the same address is delayed by the
    // address's failure (reconnecting buys no guesses), then gets in.
    let third = harness.connect();
    assert_eq!(harness.request(third, &["AUTH", "s3cret"]), b"");
    harness.advance(100);
    harness.settle();
    assert_eq!(harness.take(third), b"+OK\r\n");
}

#[test]
fn auth_delay_doubles_up_to_two_seconds() {
    let delays: Vec<u64> = (0..8).map(auth_delay_ms).collect();
    assert_eq!(delays, [0, 100, 200, 400, 800, 1600, 2000, 2000]);
    assert_eq!(auth_delay_ms(u32::MAX), 2000);
}

#[test]
fn without_a_token_every_connection_is_authenticated() {
    let mut harness = Harness::with_token(Config::DEFAULT, b"");
    let client = harness.connect();
    assert_eq!(harness.request(client, &["GET", "counter"]), b":0\r\n");
    assert_eq!(
        harness.request(client, &["AUTH", "x"]),
        b"-ERR AUTH <password> called without any password configured for the default user. \
Are you sure your configuration is correct?\r\n"
    );
    assert_eq!(harness.request(client, &["AUTH", "default", "x"]), b"+OK\r\n");
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect();
    let mut bytes = Vec::new();
    for args in [
        &["AUTH", "s3cret"][..],
        &["SET", "counter", "5"],
        &["GET", "counter"],
        &["SET", "ratio", "1"],
        &["SET", "counter", "x"],
        &["ECHO", "x"],
        &["NOPE", "a", "b"],
        &["GET"],
        &["DEMO.ADD", "2", "3"],
        &["PING"],
    ] {
        bytes.extend(command(args));
    }
    harness.send(client, &bytes);
    harness.settle();
    assert_eq!(
        harness.take(client),
        b"+OK\r\n+OK\r\n:5\r\n-ERR key 'ratio' is read-only\r\n\
-ERR value is not an integer or out of range\r\n$1\r\nx\r\n\
-ERR unknown command 'NOPE', with args beginning with: 'a' 'b' \r\n\
-ERR wrong number of arguments for 'get' command\r\n:5\r\n+PONG\r\n"
    );
}

#[test]
fn a_thousand_pipelined_pings_get_a_thousand_pongs() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect_authenticated();
    let ping = command(&["PING"]);
    let bytes: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 1000).collect();
    harness.send(client, &bytes);
    let expected: Vec<u8> = b"+PONG\r\n".iter().copied().cycle().take(7 * 1000).collect();
    let received = harness.read_at_least(client, expected.len());
    assert_eq!(received.len(), expected.len());
    assert!(received == expected);
    assert_eq!(harness.server.stats().commands, 1001);
}

#[test]
fn quit_replies_ok_then_closes() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect();
    harness.send_command(client, &["QUIT"]);
    harness.send_command(client, &["PING"]);
    harness.settle();
    assert_eq!(harness.take(client), b"+OK\r\n");
    assert!(harness.closed_by_server(client));
    assert_eq!(harness.server.connection_count(), 0);
}

#[test]
fn a_client_that_half_closes_gets_its_answers_then_a_close() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect_authenticated();
    harness.send_command(client, &["PING"]);
    harness.send_command(client, &["ECHO", "bye"]);
    harness.step();
    harness.socket(client).close();
    harness.settle();
    assert_eq!(harness.take(client), b"+PONG\r\n$3\r\nbye\r\n");
    assert_eq!(harness.server.connection_count(), 0);
}

#[test]
fn command_docs_count_and_help_include_the_application_commands() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect_authenticated();
    let app = &APP_COMMANDS[0];
    assert_eq!(harness.request(client, &["COMMAND", "DOCS", "DEMO.ADD"]), command::docs_reply([app]).to_bytes(ProtocolVersion::Resp2));
    let all = harness.request(client, &["COMMAND", "DOCS"]);
    let builtin_and_app = command::all().iter().chain(APP_COMMANDS.iter());
    assert_eq!(all, command::docs_reply(builtin_and_app).to_bytes(ProtocolVersion::Resp2));
    let total = command::all().len() + 1;
    assert_eq!(harness.request(client, &["COMMAND", "COUNT"]), format!(":{total}\r\n").as_bytes());
    let help = harness.request(client, &["HELP"]);
    assert!(help.windows(16).any(|window| window == b"+DEMO.ADD a b\r\n+"));
    assert_eq!(
        harness.request(client, &["HELP", "demo.add"]),
        b"*3\r\n+rtedge control plane. Commands are:\r\n+DEMO.ADD a b\r\n\
+    Adds two integers (an application command).\r\n"
    );
    assert_eq!(
        harness.request(client, &["COMMAND", "INFO", "demo.add", "nope"]),
        b"*2\r\n*10\r\n$8\r\ndemo.add\r\n:3\r\n*1\r\n+write\r\n:0\r\n:0\r\n:0\r\n*0\r\n*0\r\n*0\r\n*0\r\n\
*-1\r\n"
    );
    assert_eq!(harness.request(client, &["DEMO.ADD", "1"]), b"-ERR wrong number of arguments for 'demo.add' command\r\n");
    assert_eq!(harness.request(client, &["demo.add", "40", "2"]), b":42\r\n");
    assert_eq!(harness.request(client, &["COMMAND", "NOPE"]), b"-ERR unknown subcommand 'NOPE'. Try COMMAND HELP.\r\n");
}

#[test]
fn config_get_answers_what_redis_benchmark_asks() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect_authenticated();
    assert_eq!(harness.request(client, &["CONFIG", "GET", "save"]), b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    assert_eq!(harness.request(client, &["CONFIG", "GET", "appendonly"]), b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n");
    assert_eq!(harness.request(client, &["CONFIG", "GET", "maxmemory"]), b"*0\r\n");
    assert_eq!(harness.request(client, &["CONFIG", "SET", "save", ""]), b"-ERR unknown subcommand 'SET'. Try CONFIG HELP.\r\n");
    // The limits in force are there too, by their command-line names.
    assert_eq!(harness.request(client, &["CONFIG", "GET", "max_clients"]), b"*2\r\n$11\r\nmax_clients\r\n$2\r\n64\r\n");
    harness.request(client, &["HELLO", "3"]);
    let all = harness.request(client, &["CONFIG", "GET", "*"]);
    assert!(all.starts_with(b"%22\r\n$4\r\nsave\r\n$0\r\n\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"));
    assert!(String::from_utf8_lossy(&all).contains("auth_timeout_ms\r\n$4\r\n5000\r\n"));
}

#[test]
fn client_subcommands_name_and_describe_the_connection() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect_authenticated();
    assert_eq!(harness.request(client, &["CLIENT", "ID"]), b":1\r\n");
    assert_eq!(harness.request(client, &["CLIENT", "GETNAME"]), b"$-1\r\n");
    assert_eq!(harness.request(client, &["CLIENT", "SETNAME", "rtctl"]), b"+OK\r\n");
    assert_eq!(
        harness.request(client, &["CLIENT", "SETNAME", "two words"]),
        b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    );
    assert_eq!(harness.request(client, &["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]), b"+OK\r\n");
    let info = "id=1 name=rtctl db=0 sub=0 psub=0 flags=N user=default resp=2 lib-name=redis-py lib-ver=\n";
    assert_eq!(harness.request(client, &["CLIENT", "INFO"]), format!("${}\r\n{info}\r\n", info.len()).as_bytes());
    assert_eq!(harness.request(client, &["CLIENT", "ID", "extra"]), b"-ERR wrong number of arguments for 'client|id' command\r\n");
    assert_eq!(harness.request(client, &["CLIENT", "KILL", "x"]), b"-ERR unknown subcommand 'KILL'. Try CLIENT HELP.\r\n");
    let second = harness.connect_authenticated();
    assert_eq!(harness.request(second, &["CLIENT", "ID"]), b":2\r\n");
}

#[test]
fn shutdown_replies_ok_closes_and_tells_the_kernel() {
    let mut harness = Harness::new(Config::DEFAULT);
    let client = harness.connect_authenticated();
    assert_eq!(harness.request(client, &["SHUTDOWN", "3"]), b"+OK\r\n");
    let completion = harness.completions.last().unwrap().clone();
    assert_eq!(completion.shutdown, Some(3));
    assert!(completion.close_after);
    assert!(harness.closed_by_server(client));
    assert_eq!(Reply::ok().to_bytes(ProtocolVersion::Resp2), completion.bytes);
}
