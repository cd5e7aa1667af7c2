//! Robustness: about 100k random and mutated inputs each for the request
//! parser, the reply parser, glob matching and scalar parsing. A panic
//! fails the test; beyond that each loop checks an invariant (consumed
//! counts stay in bounds, the stateful parser agrees with the stateless
//! one, a parsed prefix parses alone to the same result).

mod support;

use rtedge_proto::reply::{ProtocolVersion, Reply};
use rtedge_proto::request::{Limits, ProtocolError, Request, RequestParser, parse_request, split_args};
use rtedge_proto::util::{Scalar, ScalarType, ToReply, glob_match};
use rtedge_proto::value::parse_value;
use support::Random;

const ROUNDS: usize = 100_000;

const REQUEST_SEEDS: [&[u8]; 8] = [
    b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$3\r\nb c\r\n",
    b"PING\r\nECHO \"a\\x41\\n\" 'b\\'c'\r\n",
    b"*0\r\n*-1\r\n\r\nGET k\n",
    b"*2\r\n$4\r\nMGET\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n",
    b"HELLO 3 AUTH default secret SETNAME x\r\n",
    b"*1\r\n$5\r\nhello\r\n",
    b"SET a \"b c\" \"\" ''\r\n",
    b"*2\r\n$3\r\nGET\r\n$3\r\nk\r\n\r\n",
];

fn random_input(random: &mut Random, seeds: &[&[u8]]) -> Vec<u8> {
    if random.chance(1, 8) {
        let length = random.below(64);
        return random.bytes(length);
    }
    let mut input = Vec::new();
    for _ in 0..=random.below(3) {
        let seed = random.pick(seeds);
        input.extend_from_slice(seed);
    }
    for _ in 0..=random.below(4) {
        random.mutate(&mut input);
    }
    input
}

/// The stateless parser's answer for the whole input: the requests in
/// order, then the error that stopped it, if any.
fn stateless(input: &[u8], limits: &Limits) -> (Vec<Request>, Option<ProtocolError>) {
    let mut requests = Vec::new();
    let mut offset = 0;
    loop {
        match parse_request(&input[offset..], limits) {
            Ok(Some((request, consumed))) => {
                assert!(consumed > 0 && offset + consumed <= input.len(), "consumed {consumed} at {offset}");
                // The consumed bytes alone hold the same request.
                assert_eq!(parse_request(&input[offset..offset + consumed], limits), Ok(Some((request.clone(), consumed))));
                assert!(!request.is_empty());
                requests.push(request);
                offset += consumed;
            }
            Ok(None) => return (requests, None),
            Err(error) => return (requests, Some(error)),
        }
    }
}

fn stateful_in_chunks(input: &[u8], limits: Limits, random: &mut Random) -> (Vec<Request>, Option<ProtocolError>) {
    let mut parser = RequestParser::new(limits);
    let mut requests = Vec::new();
    let mut offset = 0;
    while offset < input.len() {
        let end = (offset + 1 + random.below(16)).min(input.len());
        if let Err(error) = parser.feed(&input[offset..end]) {
            return (requests, Some(error));
        }
        offset = end;
        loop {
            match parser.next() {
                Ok(Some(request)) => requests.push(request),
                Ok(None) => break,
                Err(error) => return (requests, Some(error)),
            }
        }
    }
    (requests, None)
}

#[test]
fn request_parsers_never_panic_and_agree_on_mutated_input() {
    let mut random = Random::new(0xdead_beef);
    let small = Limits { max_frame_bytes: 96, max_args: 4, max_bulk_bytes: 16, max_inline_bytes: 24 };
    let mut outcomes = [0usize; 3];
    for _ in 0..ROUNDS {
        let input = random_input(&mut random, &REQUEST_SEEDS);
        let expected = stateless(&input, &Limits::DEFAULT);
        let chunked = stateful_in_chunks(&input, Limits::DEFAULT, &mut random);
        assert_eq!(chunked, expected, "input {input:?}");
        outcomes[match &expected {
            (_, Some(_)) => 0,
            (requests, None) if requests.is_empty() => 1,
            _ => 2,
        }] += 1;
        // Tight limits: only "no panic" and bounded consumption matter.
        let _ = stateless(&input, &small);
        let _ = stateful_in_chunks(&input, small, &mut random);
        let _ = split_args(&input, 8);
    }
    // Errors, incomplete input and clean requests must all be exercised.
    assert!(outcomes.iter().all(|&count| count > ROUNDS / 50), "{outcomes:?}");
}

fn reply_seeds() -> Vec<Vec<u8>> {
    let replies = [
        Reply::Array(vec![Reply::Integer(1), Reply::bulk_str("x"), Reply::Null]),
        Reply::Map(vec![(Reply::bulk_str("k"), Reply::Set(vec![Reply::Double(1.5), Reply::Boolean(true)]))]),
        Reply::Push(vec![Reply::Verbatim { format: *b"txt", text: "t".into() }, Reply::BigNumber("123".into())]),
        Reply::Error("ERR x".into()),
        Reply::NullArray,
    ];
    let mut seeds = Vec::new();
    for reply in &replies {
        seeds.push(reply.to_bytes(ProtocolVersion::Resp2));
        seeds.push(reply.to_bytes(ProtocolVersion::Resp3));
    }
    seeds.push(b"|1\r\n+a\r\n+b\r\n:1\r\n".to_vec());
    seeds.push(b"!3\r\nERR\r\n".to_vec());
    seeds
}

#[test]
fn value_parser_never_panics_and_stays_within_its_input() {
    let seeds = reply_seeds();
    let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
    let mut random = Random::new(0x0dd_ba11);
    let mut parsed = 0;
    for _ in 0..ROUNDS {
        let input = random_input(&mut random, &seeds);
        let max_depth = random.below(6);
        let max_len = if random.chance(1, 2) { 1 << 20 } else { random.below(128) };
        match parse_value(&input, max_depth, max_len) {
            Ok(Some((value, consumed))) => {
                assert!(consumed > 0 && consumed <= input.len().min(max_len));
                assert_eq!(parse_value(&input[..consumed], max_depth, max_len), Ok(Some((value, consumed))));
                parsed += 1;
            }
            Ok(None) => assert!(input.len() < max_len || input.is_empty()),
            Err(_) => {}
        }
    }
    assert!(parsed > ROUNDS / 20, "only {parsed} values parsed");
}

#[test]
fn glob_and_scalar_parsing_never_panic() {
    let mut random = Random::new(0x91_0b);
    let pattern_seeds: [&[u8]; 6] = [b"h[a-b]llo*", b"*?*?\\*", b"[^abc]x[", b"a*b*c*d", b"[\\]-]", b"**[z-a]?"];
    let scalar_seeds: [&[u8]; 6] = [b"-9223372036854775808", b"1.5e-7", b"true", b"inf", b"text \xc3\xa9", b"01"];
    let types = [ScalarType::Integer, ScalarType::Float, ScalarType::Bool, ScalarType::Text];
    let mut matches = 0;
    for _ in 0..ROUNDS {
        let pattern = random_input(&mut random, &pattern_seeds);
        let text = random_input(&mut random, &pattern_seeds);
        matches += usize::from(glob_match(&pattern, &text, random.chance(1, 2)));
        let input = random_input(&mut random, &scalar_seeds);
        for scalar_type in types {
            if let Ok(scalar) = Scalar::parse(scalar_type, &input) {
                assert_eq!(scalar.scalar_type(), scalar_type);
                let _ = scalar.to_reply().to_bytes(ProtocolVersion::Resp3);
                let _ = scalar.to_string();
            }
        }
    }
    assert!(matches > 0);
}
