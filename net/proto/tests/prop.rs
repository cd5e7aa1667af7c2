//! Property tests (proptest): the RESP request parser, the command grammar
//! and the typed-static conversions, over generated input.

#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

use proptest::prelude::*;
use rtedge_proto::command::{self, SyntaxCheck, check_syntax};
use rtedge_proto::request::encode_command;
use rtedge_proto::util::{Scalar, ScalarType, parse_i64};
use rtedge_proto::{Limits, RequestParser, parse_request};

fn argument() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..64)
}

fn arguments() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(argument(), 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any bytes: the parser returns requests or an error, never panics,
    /// and never returns more requests than bytes.
    #[test]
    fn the_parser_survives_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut parser = RequestParser::new(Limits::UNAUTHENTICATED);
        let fed = parser.feed(&bytes);
        let mut count = 0;
        if fed.is_ok() {
            while let Ok(Some(_)) = parser.next() {
                count += 1;
                prop_assert!(count <= bytes.len());
            }
        }
    }

    /// A multibulk frame parses back to exactly its arguments, however the
    /// stream is cut into reads.
    #[test]
    fn encoded_requests_round_trip_across_any_split(
        requests in prop::collection::vec(arguments(), 1..4),
        cuts in prop::collection::vec(1usize..32, 1..16),
    ) {
        let mut stream = Vec::new();
        for args in &requests {
            encode_command(args, &mut stream);
        }
        let mut parser = RequestParser::new(Limits::DEFAULT);
        let mut parsed = Vec::new();
        let mut offset = 0;
        let mut cut = cuts.iter().cycle();
        while offset < stream.len() {
            let step = (*cut.next().unwrap_or(&1)).min(stream.len() - offset);
            parser.feed(&stream[offset..offset + step]).unwrap();
            offset += step;
            while let Some(request) = parser.next().unwrap() {
                parsed.push(request.args().to_vec());
            }
        }
        prop_assert_eq!(parsed, requests.clone());
        // And in one piece, with the slice parser.
        let (first, _) = parse_request(&stream, &Limits::DEFAULT).unwrap().unwrap();
        prop_assert_eq!(first.args(), &requests[0][..]);
    }

    /// Every built-in command's grammar, on any arguments: no panic, and
    /// "fits" implies the numeric arity.
    #[test]
    fn the_grammar_check_is_total_and_within_the_arity(index in 0usize..64, tail in prop::collection::vec(argument(), 0..8)) {
        let specs = command::all();
        let spec = &specs[index % specs.len()];
        let mut args = vec![spec.name.as_bytes().to_vec()];
        args.extend(tail);
        let check = check_syntax(spec, &args);
        if check == SyntaxCheck::Fits {
            prop_assert!(spec.check_arity(args.len()));
        }
        if !spec.check_arity(args.len()) {
            prop_assert_eq!(check, SyntaxCheck::WrongArity);
        }
    }

    /// SHUTDOWN takes at most one argument, whatever it is.
    #[test]
    fn shutdown_never_takes_two_arguments(first in argument(), second in argument()) {
        let spec = command::lookup(b"shutdown").unwrap();
        let args = vec![b"SHUTDOWN".to_vec(), first, second];
        prop_assert_eq!(check_syntax(spec, &args), SyntaxCheck::WrongArity);
    }

    /// Typed statics: an integer, float or bool rendered by `Display`
    /// parses back to the same value; parsing never panics on any bytes.
    #[test]
    fn scalars_round_trip_through_their_text(integer in any::<i64>(), float in any::<f64>(), flag in any::<bool>(), junk in argument()) {
        for value in [Scalar::Integer(integer), Scalar::Bool(flag)] {
            let text = value.to_string();
            prop_assert_eq!(Scalar::parse(value.scalar_type(), text.as_bytes()).unwrap(), value);
        }
        if float.is_finite() {
            let text = Scalar::Float(float).to_string();
            prop_assert_eq!(Scalar::parse(ScalarType::Float, text.as_bytes()).unwrap(), Scalar::Float(float));
        }
        for scalar_type in [ScalarType::Integer, ScalarType::Float, ScalarType::Bool, ScalarType::Text] {
            let _ = Scalar::parse(scalar_type, &junk);
        }
        prop_assert_eq!(parse_i64(integer.to_string().as_bytes()), Some(integer));
    }
}
