//! Reply encoding: exact bytes of every variant in RESP2 and RESP3, Redis's
//! double formatting, the error-text helpers, and `encoded_len`.

use rtedge_proto::reply::{ProtocolVersion, Reply, encode};
use rtedge_proto::util::format_double;

use ProtocolVersion::{Resp2, Resp3};

fn wire(reply: &Reply, version: ProtocolVersion) -> Vec<u8> {
    let mut out = Vec::new();
    encode(reply, version, &mut out);
    assert_eq!(reply.encoded_len(version), out.len(), "encoded_len of {reply:?}");
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every variant with its RESP2 and RESP3 bytes.
fn cases() -> Vec<(Reply, &'static [u8], &'static [u8])> {
    vec![
        (Reply::Simple("OK".into()), b"+OK\r\n", b"+OK\r\n"),
        (Reply::Error("ERR bad".into()), b"-ERR bad\r\n", b"-ERR bad\r\n"),
        (Reply::Integer(-42), b":-42\r\n", b":-42\r\n"),
        (Reply::Integer(i64::MIN), b":-9223372036854775808\r\n", b":-9223372036854775808\r\n"),
        (Reply::Bulk(b"a\r\nb".to_vec()), b"$4\r\na\r\nb\r\n", b"$4\r\na\r\nb\r\n"),
        (Reply::Bulk(Vec::new()), b"$0\r\n\r\n", b"$0\r\n\r\n"),
        (Reply::Null, b"$-1\r\n", b"_\r\n"),
        (Reply::NullArray, b"*-1\r\n", b"_\r\n"),
        (Reply::Array(vec![Reply::Integer(1), Reply::Null]), b"*2\r\n:1\r\n$-1\r\n", b"*2\r\n:1\r\n_\r\n"),
        (Reply::Array(Vec::new()), b"*0\r\n", b"*0\r\n"),
        (
            Reply::Map(vec![(Reply::bulk_str("k"), Reply::Integer(1)), (Reply::bulk_str("l"), Reply::Boolean(true))]),
            b"*4\r\n$1\r\nk\r\n:1\r\n$1\r\nl\r\n:1\r\n",
            b"%2\r\n$1\r\nk\r\n:1\r\n$1\r\nl\r\n#t\r\n",
        ),
        (Reply::Set(vec![Reply::simple("a")]), b"*1\r\n+a\r\n", b"~1\r\n+a\r\n"),
        (Reply::Double(1.5), b"$3\r\n1.5\r\n", b",1.5\r\n"),
        (Reply::Double(f64::INFINITY), b"$3\r\ninf\r\n", b",inf\r\n"),
        (Reply::Double(f64::NEG_INFINITY), b"$4\r\n-inf\r\n", b",-inf\r\n"),
        (Reply::Double(f64::NAN), b"$3\r\nnan\r\n", b",nan\r\n"),
        (Reply::Boolean(true), b":1\r\n", b"#t\r\n"),
        (Reply::Boolean(false), b":0\r\n", b"#f\r\n"),
        (Reply::Verbatim { format: *b"txt", text: "Some string".into() }, b"$11\r\nSome string\r\n", b"=15\r\ntxt:Some string\r\n"),
        (
            Reply::Push(vec![Reply::bulk_str("message"), Reply::bulk_str("c"), Reply::bulk_str("x")]),
            b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n",
            b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n",
        ),
        (
            Reply::BigNumber("3492890328409238509324850943850943825024385".into()),
            b"$43\r\n3492890328409238509324850943850943825024385\r\n",
            b"(3492890328409238509324850943850943825024385\r\n",
        ),
    ]
}

#[test]
fn every_variant_encodes_to_the_exact_resp2_and_resp3_bytes() {
    for (reply, resp2, resp3) in cases() {
        assert_eq!(text(&wire(&reply, Resp2)), text(resp2), "RESP2 {reply:?}");
        assert_eq!(text(&wire(&reply, Resp3)), text(resp3), "RESP3 {reply:?}");
    }
}

#[test]
fn nested_resp3_types_degrade_at_every_depth_in_resp2() {
    let reply = Reply::Array(vec![Reply::Map(vec![(Reply::Set(vec![Reply::Double(2.0)]), Reply::NullArray)])]);
    assert_eq!(wire(&reply, Resp2), b"*1\r\n*2\r\n*1\r\n$1\r\n2\r\n*-1\r\n");
    assert_eq!(wire(&reply, Resp3), b"*1\r\n%1\r\n~1\r\n,2\r\n_\r\n");
}

#[test]
fn line_replies_never_carry_cr_or_lf() {
    assert_eq!(wire(&Reply::Simple("a\r\nb\n".into()), Resp2), b"+a  b \r\n");
    assert_eq!(wire(&Reply::Error("ERR x\ry".into()), Resp3), b"-ERR x y\r\n");
    assert_eq!(wire(&Reply::BigNumber("1\r\n2".into()), Resp3), b"(1  2\r\n");
}

#[test]
fn encode_appends_and_to_bytes_matches_it() {
    let mut out = b"prefix".to_vec();
    Reply::ok().encode(Resp2, &mut out);
    assert_eq!(out, b"prefix+OK\r\n");
    assert_eq!(Reply::pong().to_bytes(Resp3), b"+PONG\r\n");
}

#[test]
fn doubles_are_formatted_like_redis_d2string() {
    let cases: [(f64, &str); 30] = [
        (1.5, "1.5"),
        (3.0, "3"),
        (-2.0, "-2"),
        (0.0, "0"),
        (-0.0, "-0"),
        (0.1, "0.1"),
        (0.3, "0.3"),
        (1e17, "100000000000000000"),
        ((i64::MAX / 2) as f64, "4611686018427387904"),
        (5e18, "5e+18"),
        (9.223372036854776e18, "9223372036854776000"),
        (1e20, "1e+20"),
        (1.5e20, "1.5e+20"),
        (1.23e20, "1.23e+20"),
        (1e21, "1e+21"),
        (3.14e100, "3.14e+100"),
        (f64::MAX, "1.7976931348623157e+308"),
        (1e-5, "0.00001"),
        (1e-6, "0.000001"),
        (2.5e-5, "0.000025"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (-1.5e-300, "-1.5e-300"),
        (5e-324, "5e-324"),
        (1234.5678901, "1234.5678901"),
        (123456789.123, "123456789.123"),
        (-0.5, "-0.5"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
        (f64::NAN, "nan"),
    ];
    for (value, expected) in cases {
        assert_eq!(format_double(value).as_str(), expected, "{value:e}");
    }
}

#[test]
fn formatted_doubles_read_back_to_the_same_value() {
    let mut state = 0x1234_5678_9abc_def0u64;
    for _ in 0..20_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let value = f64::from_bits(state);
        if !value.is_finite() {
            continue;
        }
        let text = format_double(value);
        let back: f64 = text.as_str().parse().expect("formatted doubles parse");
        assert_eq!(back.to_bits(), value.to_bits(), "{value:e} formatted as {text}");
    }
}

#[test]
fn helpers_build_redis_texts() {
    assert_eq!(wire(&Reply::ok(), Resp2), b"+OK\r\n");
    assert_eq!(wire(&Reply::err("ERR", "no such key"), Resp2), b"-ERR no such key\r\n");
    assert_eq!(Reply::error("BUSY x"), Reply::Error("BUSY x".into()));
    assert_eq!(Reply::bulk_str("hé"), Reply::Bulk("hé".as_bytes().to_vec()));
    assert_eq!(Reply::bulk(b"\0"), Reply::Bulk(vec![0]));
    assert_eq!(Reply::simple("x"), Reply::Simple("x".into()));
    assert_eq!(Reply::from(7i64), Reply::Integer(7));
    assert_eq!(Reply::from(true), Reply::Boolean(true));
    assert_eq!(Reply::wrong_arity("GET"), Reply::Error("ERR wrong number of arguments for 'get' command".into()));
    assert_eq!(wire(&Reply::noauth(), Resp2), b"-NOAUTH Authentication required.\r\n");
    assert_eq!(wire(&Reply::wrongpass(), Resp2), b"-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    assert_eq!(Reply::unknown_subcommand("config", b"foo"), Reply::Error("ERR unknown subcommand 'foo'. Try CONFIG HELP.".into()));
    assert_eq!(
        Reply::not_allowed_while_subscribed("GET"),
        Reply::Error("ERR Can't execute 'get': only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT are allowed in this context".into())
    );
    assert!(Reply::noauth().is_error());
    assert!(!Reply::ok().is_error());
}

#[test]
fn unknown_command_text_matches_redis_7() {
    assert_eq!(
        Reply::unknown_command(b"foo", &[b"a", b"b"]),
        Reply::Error("ERR unknown command 'foo', with args beginning with: 'a' 'b' ".into())
    );
    let none: [&[u8]; 0] = [];
    assert_eq!(Reply::unknown_command(b"foo", &none), Reply::Error("ERR unknown command 'foo', with args beginning with: ".into()));
}

#[test]
fn unknown_command_cuts_arguments_at_128_bytes_like_redis() {
    let x = vec![b'x'; 100];
    let y = vec![b'y'; 100];
    let reply = Reply::unknown_command(b"foo", &[x, y, b"z".to_vec()]);
    // The first argument takes 103 bytes ('...' and a space), so the second
    // is cut to the 25 bytes left and the third is not listed.
    let expected = format!("ERR unknown command 'foo', with args beginning with: '{}' '{}' ", "x".repeat(100), "y".repeat(25));
    assert_eq!(reply, Reply::Error(expected));
}

#[test]
fn unknown_command_cuts_the_name_at_128_bytes_and_hides_newlines_and_nuls() {
    let name = vec![b'n'; 200];
    let none: [&[u8]; 0] = [];
    let expected = format!("ERR unknown command '{}', with args beginning with: ", "n".repeat(128));
    assert_eq!(Reply::unknown_command(&name, &none), Reply::Error(expected));
    assert_eq!(
        Reply::unknown_command(b"a\r\nb", &[&b"c\nd\0ignored"[..]]),
        Reply::Error("ERR unknown command 'a  b', with args beginning with: 'c d' ".into())
    );
}

#[test]
fn pubsub_replies_are_arrays_in_resp2_and_pushes_in_resp3() {
    let subscribed = Reply::subscription("subscribe", b"news", 1);
    assert_eq!(wire(&subscribed, Resp2), b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
    assert_eq!(wire(&subscribed, Resp3), b">3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
    assert_eq!(wire(&Reply::message(b"c", b"p"), Resp2), b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\np\r\n");
    assert_eq!(wire(&Reply::pattern_message(b"c*", b"cx", b"p"), Resp3), b">4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\ncx\r\n$1\r\np\r\n");
}

#[test]
fn protocol_version_maps_to_hello_numbers() {
    assert_eq!(ProtocolVersion::from_number(2), Some(Resp2));
    assert_eq!(ProtocolVersion::from_number(3), Some(Resp3));
    assert_eq!(ProtocolVersion::from_number(4), None);
    assert_eq!(Resp3.number(), 3);
    assert_eq!(ProtocolVersion::default(), Resp2);
}
