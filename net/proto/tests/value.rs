//! Client-side reply parsing: every RESP2/RESP3 type, incremental input,
//! limits, errors, and encode -> parse round trips of generated replies.

mod support;

use rtedge_proto::reply::{ProtocolVersion, Reply};
use rtedge_proto::value::{ProtocolError, Value, parse_value};
use support::Random;

const DEPTH: usize = 8;
const LENGTH: usize = 1 << 20;

fn parse(input: &[u8]) -> (Value, usize) {
    match parse_value(input, DEPTH, LENGTH) {
        Ok(Some(parsed)) => parsed,
        other => panic!("expected a value from {input:?}, got {other:?}"),
    }
}

fn parse_error(input: &[u8], max_depth: usize, max_len: usize) -> ProtocolError {
    match parse_value(input, max_depth, max_len) {
        Err(error) => error,
        other => panic!("expected an error from {input:?}, got {other:?}"),
    }
}

fn bulk(text: &str) -> Value {
    Value::Bulk(text.as_bytes().to_vec())
}

#[test]
fn every_resp_type_parses_to_its_value() {
    let cases: Vec<(&[u8], Value)> = vec![
        (b"+OK\r\n", Value::Simple(b"OK".to_vec())),
        (b"-ERR x\r\n", Value::Error(b"ERR x".to_vec())),
        (b":-12\r\n", Value::Integer(-12)),
        (b"$3\r\na\r\n\r\n", Value::Bulk(b"a\r\n".to_vec())),
        (b"$0\r\n\r\n", Value::Bulk(Vec::new())),
        (b"$-1\r\n", Value::Null),
        (b"*-1\r\n", Value::NullArray),
        (b"_\r\n", Value::Null),
        (b"*2\r\n:1\r\n$1\r\nx\r\n", Value::Array(vec![Value::Integer(1), bulk("x")])),
        (b"%1\r\n+k\r\n#t\r\n", Value::Map(vec![(Value::Simple(b"k".to_vec()), Value::Boolean(true))])),
        (b"~2\r\n:1\r\n:2\r\n", Value::Set(vec![Value::Integer(1), Value::Integer(2)])),
        (b",1.5\r\n", Value::Double(1.5)),
        (b",-inf\r\n", Value::Double(f64::NEG_INFINITY)),
        (b",1e+20\r\n", Value::Double(1e20)),
        (b"#f\r\n", Value::Boolean(false)),
        (b"=15\r\ntxt:Some string\r\n", Value::Verbatim { format: *b"txt", text: b"Some string".to_vec() }),
        (b">2\r\n+message\r\n:1\r\n", Value::Push(vec![Value::Simple(b"message".to_vec()), Value::Integer(1)])),
        (b"(-3492890328409238509324850943850943825024385\r\n", Value::BigNumber(b"-3492890328409238509324850943850943825024385".to_vec())),
        (b"!21\r\nSYNTAX invalid syntax\r\n", Value::Error(b"SYNTAX invalid syntax".to_vec())),
        (
            b"|1\r\n+ttl\r\n:3600\r\n$1\r\nv\r\n",
            Value::Attributed { attributes: vec![(Value::Simple(b"ttl".to_vec()), Value::Integer(3600))], value: Box::new(bulk("v")) },
        ),
    ];
    for (input, expected) in cases {
        let mut with_tail = input.to_vec();
        with_tail.extend_from_slice(b"+next\r\n");
        assert_eq!(parse(&with_tail), (expected, input.len()), "{}", String::from_utf8_lossy(input));
    }
}

#[test]
fn nan_doubles_parse_as_nan() {
    let (value, consumed) = parse(b",nan\r\n");
    assert!(matches!(value, Value::Double(double) if double.is_nan()));
    assert_eq!(consumed, 6);
}

#[test]
fn every_strict_prefix_of_a_nested_reply_needs_more_bytes() {
    let input = b"*3\r\n%1\r\n$1\r\nk\r\n~1\r\n,2.5\r\n|1\r\n+a\r\n+b\r\n:7\r\n=7\r\ntxt:abc\r\n";
    for end in 0..input.len() {
        assert_eq!(parse_value(&input[..end], DEPTH, LENGTH), Ok(None), "prefix of {end} bytes");
    }
    assert_eq!(parse(input).1, input.len());
}

#[test]
fn back_to_back_replies_parse_one_after_another() {
    let input = b"+OK\r\n:1\r\n$-1\r\n";
    let mut offset = 0;
    let mut values = Vec::new();
    while let Some((value, consumed)) = parse_value(&input[offset..], DEPTH, LENGTH).expect("valid") {
        values.push(value);
        offset += consumed;
    }
    assert_eq!(values, vec![Value::Simple(b"OK".to_vec()), Value::Integer(1), Value::Null]);
    assert_eq!(offset, input.len());
}

#[test]
fn malformed_replies_give_their_exact_errors() {
    let cases: [(&[u8], ProtocolError); 23] = [
        (b"x", ProtocolError::unexpected_type(b'x')),
        (b"\r\n", ProtocolError::unexpected_type(b'\r')),
        (b":abc\r\n", ProtocolError::InvalidInteger),
        (b":01\r\n", ProtocolError::InvalidInteger),
        (b":\r\n", ProtocolError::InvalidInteger),
        (b",abc\r\n", ProtocolError::InvalidDouble),
        (b",\r\n", ProtocolError::InvalidDouble),
        (b"#x\r\n", ProtocolError::InvalidBoolean),
        (b"#\r\n", ProtocolError::InvalidBoolean),
        (b"_x\r\n", ProtocolError::InvalidNull),
        (b"(12a\r\n", ProtocolError::InvalidBigNumber),
        (b"(\r\n", ProtocolError::InvalidBigNumber),
        (b"(-\r\n", ProtocolError::InvalidBigNumber),
        (b"=3\r\ntxt\r\n", ProtocolError::InvalidVerbatim),
        (b"=5\r\ntxt-a\r\n", ProtocolError::InvalidVerbatim),
        (b"$-2\r\n", ProtocolError::InvalidBulkLength),
        (b"$?\r\n", ProtocolError::InvalidBulkLength),
        (b"!-1\r\n", ProtocolError::InvalidBulkLength),
        (b"*-2\r\n", ProtocolError::InvalidMultibulkLength),
        (b"%-1\r\n", ProtocolError::InvalidMultibulkLength),
        (b"~x\r\n", ProtocolError::InvalidMultibulkLength),
        (b"+OK\rX", ProtocolError::MissingCrlf),
        (b"$1\r\naXY", ProtocolError::MissingCrlf),
    ];
    for (input, expected) in cases {
        assert_eq!(parse_error(input, DEPTH, LENGTH), expected, "{}", String::from_utf8_lossy(input));
    }
    assert_eq!(parse_error(b"@", DEPTH, LENGTH).message(), "Protocol error: unexpected reply type '@'");
}

#[test]
fn nesting_beyond_max_depth_is_refused() {
    let input = b"*1\r\n*1\r\n:1\r\n";
    assert_eq!(parse_error(input, 1, LENGTH), ProtocolError::NestingTooDeep);
    assert_eq!(parse_value(input, 2, LENGTH).map(|parsed| parsed.map(|(_, consumed)| consumed)), Ok(Some(12)));
    // Scalars need no depth at all.
    assert_eq!(parse_value(b":1\r\n", 0, LENGTH), Ok(Some((Value::Integer(1), 4))));
    assert_eq!(parse_error(b"*0\r\n", 0, LENGTH), ProtocolError::NestingTooDeep);
}

#[test]
fn chained_attributes_count_as_nesting() {
    let mut input = b"|0\r\n".repeat(10);
    input.extend_from_slice(b":1\r\n");
    assert_eq!(parse_error(&input, 5, LENGTH), ProtocolError::NestingTooDeep);
    assert_eq!(parse_value(&input, 10, LENGTH).map(|parsed| parsed.map(|(_, consumed)| consumed)), Ok(Some(44)));
}

#[test]
fn deep_nesting_is_refused_without_recursing_through_it() {
    let input = b"*1\r\n".repeat(100_000);
    assert_eq!(parse_error(&input, 64, LENGTH), ProtocolError::NestingTooDeep);
}

#[test]
fn declared_sizes_that_cannot_fit_are_refused_before_their_bytes_arrive() {
    // 5 + 10 + 2 = 17 bytes > 12.
    assert_eq!(parse_error(b"$10\r\n", DEPTH, 12), ProtocolError::ReplyTooLarge);
    // 4 + 5 elements of at least 3 bytes = 19 > 10.
    assert_eq!(parse_error(b"*5\r\n", DEPTH, 10), ProtocolError::ReplyTooLarge);
    assert_eq!(parse_error(b"%2\r\n", DEPTH, 10), ProtocolError::ReplyTooLarge);
    assert_eq!(parse_error(b"*1000000000000\r\n", DEPTH, LENGTH), ProtocolError::ReplyTooLarge);
    assert_eq!(parse_value(b"*2\r\n", DEPTH, 10), Ok(None));
}

#[test]
fn a_line_longer_than_max_len_is_refused() {
    assert_eq!(parse_error(b"+aaaaaaaaaaaa", DEPTH, 8), ProtocolError::ReplyTooLarge);
    assert_eq!(parse_value(b"+aaaaaaaaaaaa", DEPTH, 100), Ok(None));
}

#[test]
fn a_reply_of_exactly_max_len_bytes_parses() {
    let input = b"$3\r\nabc\r\n+more\r\n";
    assert_eq!(parse_value(input, DEPTH, 9), Ok(Some((bulk("abc"), 9))));
    assert_eq!(parse_error(input, DEPTH, 8), ProtocolError::ReplyTooLarge);
}

#[test]
fn an_empty_buffer_needs_more_bytes() {
    assert_eq!(parse_value(b"", DEPTH, LENGTH), Ok(None));
    assert_eq!(parse_value(b"", DEPTH, 0), Ok(None));
}

#[test]
fn accessors_read_through_attributes() {
    let attributed = Value::Attributed { attributes: Vec::new(), value: Box::new(Value::Integer(3)) };
    assert_eq!(attributed.as_integer(), Some(3));
    assert_eq!(bulk("x").as_bytes(), Some(&b"x"[..]));
    assert_eq!(Value::Verbatim { format: *b"txt", text: b"t".to_vec() }.as_bytes(), Some(&b"t"[..]));
    assert_eq!(Value::Integer(1).as_bytes(), None);
    assert!(Value::Error(b"ERR".to_vec()).is_error());
    assert!(!Value::Null.is_error());
    assert!(Value::Null.is_null() && Value::NullArray.is_null() && !Value::Integer(0).is_null());
}

// ---------------------------------------------------------------------------
// Round trips

fn random_text(random: &mut Random) -> String {
    let length = random.below(12);
    let bytes = random.bytes_from(b"abcXYZ019 \r\n:+-$*\"'\\", length);
    String::from_utf8(bytes).expect("ASCII")
}

fn random_reply(random: &mut Random, depth: usize) -> Reply {
    let leaf_only = depth == 0;
    let choice = if leaf_only { random.below(10) } else { random.below(15) };
    match choice {
        0 => Reply::Simple(random_text(random)),
        1 => Reply::Error(random_text(random)),
        2 => Reply::Integer(random.next_u64() as i64 >> random.below(64)),
        3 => {
            let length = random.below(20);
            Reply::Bulk(random.bytes(length))
        }
        4 => Reply::Null,
        5 => Reply::NullArray,
        6 => loop {
            let value = f64::from_bits(random.next_u64());
            if !value.is_nan() {
                break Reply::Double(value);
            }
        },
        7 => Reply::Boolean(random.chance(1, 2)),
        8 => Reply::Verbatim { format: *random.pick(&[*b"txt", *b"mkd"]), text: random_text(random) },
        9 => {
            let length = random.below(30) + 1;
            let digits = random.bytes_from(b"0123456789", length);
            let mut text = if random.chance(1, 2) { String::from("-") } else { String::new() };
            text.push_str(std::str::from_utf8(&digits).expect("digits"));
            Reply::BigNumber(text)
        }
        10 => Reply::Array(random_list(random, depth)),
        11 => Reply::Set(random_list(random, depth)),
        12 => Reply::Push(random_list(random, depth)),
        _ => {
            let count = random.below(4);
            Reply::Map((0..count).map(|_| (random_reply(random, depth - 1), random_reply(random, depth - 1))).collect())
        }
    }
}

fn random_list(random: &mut Random, depth: usize) -> Vec<Reply> {
    let count = random.below(5);
    (0..count).map(|_| random_reply(random, depth - 1)).collect()
}

#[test]
fn generated_replies_parse_back_to_what_the_encoder_promised() {
    let mut random = Random::new(0x5eed);
    for round in 0..20_000 {
        let reply = random_reply(&mut random, 4);
        for version in [ProtocolVersion::Resp2, ProtocolVersion::Resp3] {
            let encoded = reply.to_bytes(version);
            assert_eq!(encoded.len(), reply.encoded_len(version));
            let expected = Value::from_reply(&reply, version);
            assert_eq!(parse_value(&encoded, DEPTH, LENGTH), Ok(Some((expected, encoded.len()))), "round {round}, {version:?}, {reply:?}");
        }
    }
}

#[test]
fn from_reply_degrades_resp3_types_for_resp2_like_the_encoder() {
    let reply = Reply::Map(vec![(Reply::Boolean(true), Reply::Double(0.5))]);
    assert_eq!(Value::from_reply(&reply, ProtocolVersion::Resp2), Value::Array(vec![Value::Integer(1), bulk("0.5")]));
    assert_eq!(Value::from_reply(&reply, ProtocolVersion::Resp3), Value::Map(vec![(Value::Boolean(true), Value::Double(0.5))]));
    assert_eq!(Value::from_reply(&Reply::Simple("a\nb".into()), ProtocolVersion::Resp2), Value::Simple(b"a b".to_vec()));
}
