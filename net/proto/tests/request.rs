//! Server-side request parsing: framing, pipelining, split reads, limits,
//! inline quoting and every protocol error.

use rtedge_proto::request::{Limits, ProtocolError, Request, RequestParser, encode_command, parse_request, split_args};

fn args_of(request: &Request) -> Vec<Vec<u8>> {
    request.args().to_vec()
}

fn owned(args: &[&[u8]]) -> Vec<Vec<u8>> {
    args.iter().map(|arg| arg.to_vec()).collect()
}

/// Parses one request with the default limits and expects it complete.
fn parse_one(input: &[u8]) -> (Vec<Vec<u8>>, usize) {
    match parse_request(input, &Limits::DEFAULT) {
        Ok(Some((request, consumed))) => (args_of(&request), consumed),
        other => panic!("expected a request from {input:?}, got {other:?}"),
    }
}

fn parse_error(input: &[u8], limits: &Limits) -> ProtocolError {
    match parse_request(input, limits) {
        Err(error) => error,
        other => panic!("expected an error from {input:?}, got {other:?}"),
    }
}

fn needs_more(input: &[u8], limits: &Limits) {
    match parse_request(input, limits) {
        Ok(None) => {}
        other => panic!("expected Ok(None) from {input:?}, got {other:?}"),
    }
}

/// Feeds `input` in pieces cut at `cuts` and collects every request.
fn parse_in_pieces(input: &[u8], cuts: &[usize], limits: Limits) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
    let mut parser = RequestParser::new(limits);
    let mut requests = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain([input.len()].iter()) {
        parser.feed(&input[start..cut])?;
        start = cut;
        while let Some(request) = parser.next()? {
            requests.push(args_of(&request));
        }
    }
    Ok(requests)
}

const PIPELINE: &[u8] = b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$3\r\nb c\r\n\
PING\r\n\
*0\r\n\
\r\n\
*2\r\n$3\r\nGET\r\n$1\r\na\r\n\
ECHO \"x y\"\n\
*-1\r\n\
*1\r\n$0\r\n\r\n";

fn pipeline_requests() -> Vec<Vec<Vec<u8>>> {
    vec![owned(&[b"SET", b"a", b"b c"]), owned(&[b"PING"]), owned(&[b"GET", b"a"]), owned(&[b"ECHO", b"x y"]), owned(&[b""])]
}

#[test]
fn multibulk_request_parses_to_its_arguments_and_consumes_exactly_its_bytes() {
    let input = b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$3\r\nb c\r\nPING\r\n";
    let (args, consumed) = parse_one(input);
    assert_eq!(args, owned(&[b"SET", b"a", b"b c"]));
    assert_eq!(consumed, 29);
    assert_eq!(&input[consumed..], b"PING\r\n");
}

#[test]
fn binary_arguments_with_crlf_inside_are_kept_verbatim() {
    let (args, consumed) = parse_one(b"*2\r\n$4\r\n\r\n\0\xff\r\n$0\r\n\r\n");
    assert_eq!(args, owned(&[b"\r\n\0\xff", b""]));
    assert_eq!(consumed, 20);
}

#[test]
fn pipelined_requests_in_one_buffer_come_out_one_by_one() {
    let mut offset = 0;
    let mut requests = Vec::new();
    while let Some((request, consumed)) = parse_request(&PIPELINE[offset..], &Limits::DEFAULT).expect("valid pipeline") {
        requests.push(args_of(&request));
        offset += consumed;
    }
    assert_eq!(requests, pipeline_requests());
    assert_eq!(offset, PIPELINE.len());

    let via_parser = parse_in_pieces(PIPELINE, &[], Limits::DEFAULT).expect("valid pipeline");
    assert_eq!(via_parser, pipeline_requests());
}

#[test]
fn every_split_point_of_a_pipeline_yields_the_same_requests() {
    for cut in 0..=PIPELINE.len() {
        let requests = parse_in_pieces(PIPELINE, &[cut], Limits::DEFAULT).expect("valid pipeline");
        assert_eq!(requests, pipeline_requests(), "split at {cut}");
    }
    for first in 0..=PIPELINE.len() {
        for second in first..=PIPELINE.len() {
            let requests = parse_in_pieces(PIPELINE, &[first, second], Limits::DEFAULT).expect("valid pipeline");
            assert_eq!(requests, pipeline_requests(), "split at {first} and {second}");
        }
    }
}

#[test]
fn feeding_one_byte_at_a_time_yields_the_same_requests() {
    let cuts: Vec<usize> = (1..PIPELINE.len()).collect();
    let requests = parse_in_pieces(PIPELINE, &cuts, Limits::DEFAULT).expect("valid pipeline");
    assert_eq!(requests, pipeline_requests());
}

#[test]
fn every_strict_prefix_of_a_request_needs_more_bytes() {
    let input = b"*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n";
    for end in 0..input.len() {
        needs_more(&input[..end], &Limits::DEFAULT);
    }
    assert_eq!(parse_one(input).1, input.len());
    let inline = b"SET a \"b c\"\r\n";
    for end in 0..inline.len() {
        needs_more(&inline[..end], &Limits::DEFAULT);
    }
}

#[test]
fn a_thousand_pipelined_pings_all_come_out_and_the_buffer_empties() {
    let mut parser = RequestParser::new(Limits::DEFAULT);
    let input = b"PING\r\n".repeat(1000);
    parser.feed(&input).expect("fits in 64 KiB");
    let mut count = 0;
    while let Some(request) = parser.next().expect("valid") {
        assert!(request.is("ping"));
        count += 1;
    }
    assert_eq!(count, 1000);
    assert_eq!(parser.buffered(), 0);
    assert_eq!(parser.spare_capacity(), 64 * 1024);
}

#[test]
fn empty_multibulk_counts_are_skipped_like_redis() {
    let input = b"*0\r\n*-1\r\n*-5\r\nPING\r\n";
    let (args, consumed) = parse_one(input);
    assert_eq!(args, owned(&[b"PING"]));
    assert_eq!(consumed, input.len());
    // With nothing after them, the stateless parser keeps them...
    needs_more(b"*0\r\n*-1\r\n", &Limits::DEFAULT);
    // ...and RequestParser drops them.
    let mut parser = RequestParser::new(Limits::DEFAULT);
    parser.feed(b"*0\r\n*-1\r\n").expect("fits");
    assert_eq!(parser.next(), Ok(None));
    assert_eq!(parser.buffered(), 0);
}

#[test]
fn blank_inline_lines_are_skipped_like_redis() {
    let input = b"\r\n\n   \t\r\nPING\r\n";
    let (args, consumed) = parse_one(input);
    assert_eq!(args, owned(&[b"PING"]));
    assert_eq!(consumed, input.len());
}

// ---------------------------------------------------------------------------
// Inline quoting (Redis's sdssplitargs)

fn inline(line: &[u8]) -> Vec<Vec<u8>> {
    let mut input = line.to_vec();
    input.extend_from_slice(b"\r\n");
    let (args, consumed) = parse_one(&input);
    assert_eq!(consumed, input.len());
    args
}

#[test]
fn inline_arguments_split_on_blanks() {
    assert_eq!(inline(b"  PING   \t x "), owned(&[b"PING", b"x"]));
    assert_eq!(inline(b"SET a \"b c\""), owned(&[b"SET", b"a", b"b c"]));
}

#[test]
fn inline_line_may_end_with_a_bare_newline() {
    let (args, consumed) = parse_one(b"PING\nECHO x\n");
    assert_eq!(args, owned(&[b"PING"]));
    assert_eq!(consumed, 5);
}

#[test]
fn double_quotes_decode_redis_escapes() {
    assert_eq!(inline(br#"ECHO "a\nb\r\t\"\\\x41\x4g\b\a\q""#), owned(&[b"ECHO", b"a\nb\r\t\"\\Ax4g\x08\x07q"]));
    assert_eq!(inline(br#""\xfF\x00""#), owned(&[b"\xff\x00"]));
}

#[test]
fn single_quotes_only_unescape_a_single_quote() {
    assert_eq!(inline(br#"'it\'s' 'a\"b' 'c\d'"#), owned(&[b"it's", b"a\\\"b", b"c\\d"]));
}

#[test]
fn quotes_may_start_inside_a_token_and_may_be_empty() {
    assert_eq!(inline(br#"ab"cd ef" g'h i'"#), owned(&[b"abcd ef", b"gh i"]));
    assert_eq!(inline(br#"SET a """#), owned(&[b"SET", b"a", b""]));
}

#[test]
fn vertical_tab_separates_only_before_a_token_as_in_redis() {
    // isspace() skips \v and \f between tokens, but only ' ', \t, \r, \n end
    // an unquoted token.
    assert_eq!(inline(b"\x0bPING \x0ca\x0bb"), owned(&[b"PING", b"a\x0bb"]));
}

#[test]
fn inline_line_is_cut_at_a_nul_like_redis_c_strings() {
    assert_eq!(inline(b"SET a b\0c d"), owned(&[b"SET", b"a", b"b"]));
}

#[test]
fn unbalanced_or_glued_quotes_are_protocol_errors() {
    for line in [&b"SET a \"b\r\n"[..], b"SET a 'b\r\n", b"SET a \"b\"c\r\n", b"'a'b\r\n", b"\"\r\n", b"\"a\\\"\r\n", b"SET a \"b\0c\"\r\n"]
    {
        assert_eq!(parse_error(line, &Limits::DEFAULT), ProtocolError::UnbalancedQuotes, "{line:?}");
    }
}

#[test]
fn split_args_is_usable_on_its_own() {
    assert_eq!(split_args(b"GET \"a b\"", 8), Ok(owned(&[b"GET", b"a b"])));
    assert_eq!(split_args(b"a b c", 2), Err(ProtocolError::TooManyArguments));
    assert_eq!(split_args(b"   ", 2), Ok(Vec::new()));
}

// ---------------------------------------------------------------------------
// Protocol errors, one test per path

#[test]
fn invalid_multibulk_counts_are_refused() {
    for input in [&b"*x\r\n"[..], b"*01\r\n", b"*+1\r\n", b"* 1\r\n", b"*\r\n", b"*-0\r\n", b"*2147483648\r\n", b"*1x\r\n"] {
        assert_eq!(parse_error(input, &Limits::DEFAULT), ProtocolError::InvalidMultibulkLength, "{input:?}");
    }
}

#[test]
fn invalid_bulk_lengths_are_refused() {
    for header in [&b"$-1"[..], b"$x", b"$01", b"$+1", b"$", b"$ 1", b"$-0", b"$99999999999999999999"] {
        let mut input = b"*1\r\n".to_vec();
        input.extend_from_slice(header);
        input.extend_from_slice(b"\r\n");
        assert_eq!(parse_error(&input, &Limits::DEFAULT), ProtocolError::InvalidBulkLength, "{input:?}");
    }
}

#[test]
fn a_bulk_above_the_bulk_limit_is_refused_when_its_header_arrives() {
    // The 32769 bytes never arrive: the header alone is enough.
    assert_eq!(parse_error(b"*2\r\n$32769\r\n", &Limits::DEFAULT), ProtocolError::InvalidBulkLength);
    needs_more(b"*2\r\n$32768\r\n", &Limits::DEFAULT);
}

#[test]
fn an_argument_not_starting_with_dollar_is_refused_at_its_first_byte() {
    let error = parse_error(b"*1\r\nx", &Limits::DEFAULT);
    assert_eq!(error, ProtocolError::expected_dollar(b'x'));
    assert_eq!(error.message(), "Protocol error: expected '$', got 'x'");
    assert_eq!(parse_error(b"*2\r\n$1\r\na\r\n:1\r\n", &Limits::DEFAULT).message(), "Protocol error: expected '$', got ':'");
    // Bytes that are not printable ASCII are shown as '?'.
    assert_eq!(parse_error(b"*1\r\n\r\n", &Limits::DEFAULT).message(), "Protocol error: expected '$', got '?'");
    assert_eq!(parse_error(b"*1\r\n\xff", &Limits::DEFAULT).message(), "Protocol error: expected '$', got '?'");
}

#[test]
fn too_long_inline_lines_are_refused_with_or_without_their_newline() {
    let limits = Limits { max_inline_bytes: 10, ..Limits::DEFAULT };
    needs_more(b"0123456789", &limits);
    assert_eq!(parse_error(b"0123456789A", &limits), ProtocolError::TooBigInlineRequest);
    // The limit counts the bytes before '\n', a '\r' included.
    assert_eq!(parse_one_with(b"PINGPING\r\n", &limits), 10);
    assert_eq!(parse_error(b"PINGPINGPI\r\n", &limits), ProtocolError::TooBigInlineRequest);
    assert_eq!(parse_error(b"0123456789A\n", &limits), ProtocolError::TooBigInlineRequest);
}

fn parse_one_with(input: &[u8], limits: &Limits) -> usize {
    match parse_request(input, limits) {
        Ok(Some((_, consumed))) => consumed,
        other => panic!("expected a request from {input:?}, got {other:?}"),
    }
}

#[test]
fn a_multibulk_count_line_without_cr_is_refused_past_the_inline_limit() {
    let limits = Limits { max_inline_bytes: 8, ..Limits::DEFAULT };
    needs_more(b"*1234567", &limits);
    assert_eq!(parse_error(b"*12345678", &limits), ProtocolError::TooBigMultibulkCount);
    // A line whose '\r' arrived waits for its '\n' (then fails on the count).
    needs_more(b"*1234567\r", &limits);
    assert_eq!(parse_error(b"*1234567\r\n", &limits), ProtocolError::TooManyArguments);
}

#[test]
fn a_bulk_length_line_without_cr_is_refused_past_the_inline_limit() {
    let limits = Limits { max_inline_bytes: 8, ..Limits::DEFAULT };
    needs_more(b"*1\r\n$1234567", &limits);
    assert_eq!(parse_error(b"*1\r\n$12345678", &limits), ProtocolError::TooBigBulkCount);
    needs_more(b"*1\r\n$1234567\r", &limits);
    assert_eq!(parse_error(b"*1\r\n$1234567\r\n", &limits), ProtocolError::InvalidBulkLength);
}

#[test]
fn too_many_arguments_are_refused_when_the_count_arrives() {
    assert_eq!(parse_error(b"*1025\r\n", &Limits::DEFAULT), ProtocolError::TooManyArguments);
    assert_eq!(parse_error(b"*2147483647\r\n", &Limits::DEFAULT), ProtocolError::TooManyArguments);
    needs_more(b"*1024\r\n", &Limits::DEFAULT);
    let limits = Limits { max_args: 2, ..Limits::DEFAULT };
    assert_eq!(parse_error(b"a b c\r\n", &limits), ProtocolError::TooManyArguments);
    assert_eq!(parse_one_with(b"a b\r\n", &limits), 5);
}

#[test]
fn a_frame_that_cannot_fit_is_refused_at_header_time() {
    let limits = Limits { max_frame_bytes: 100, ..Limits::DEFAULT };
    // 5 header bytes + 17 arguments of at least 6 bytes = 107 > 100.
    assert_eq!(parse_error(b"*17\r\n", &limits), ProtocolError::RequestTooLarge);
    needs_more(b"*15\r\n", &limits);
    // 9 bytes of headers + 80 + 2, and one more argument of 6: 97 fits.
    needs_more(b"*2\r\n$80\r\n", &limits);
    // 9 + 85 + 2 + 6 = 102 does not.
    assert_eq!(parse_error(b"*2\r\n$85\r\n", &limits), ProtocolError::RequestTooLarge);
}

#[test]
fn feeding_past_the_frame_limit_is_refused() {
    let mut parser = RequestParser::new(Limits { max_frame_bytes: 16, ..Limits::DEFAULT });
    parser.feed(b"PING\r\nPING\r\n").expect("12 bytes fit");
    assert_eq!(parser.spare_capacity(), 4);
    assert_eq!(parser.feed(b"PING\r"), Err(ProtocolError::RequestTooLarge));
}

#[test]
fn taking_requests_frees_room_for_more_bytes() {
    let mut parser = RequestParser::new(Limits { max_frame_bytes: 16, ..Limits::DEFAULT });
    parser.feed(b"PING\r\nPING\r\nPI").expect("14 bytes fit");
    assert!(parser.next().expect("valid").is_some_and(|request| request.is("PING")));
    assert_eq!(parser.buffered(), 8);
    assert_eq!(parser.spare_capacity(), 8);
    parser.feed(b"NG\r\n").expect("fits after the first request was taken");
    assert_eq!(parser.next().expect("valid").map(|request| request.len()), Some(1));
    assert_eq!(parser.next().expect("valid").map(|request| request.name().to_vec()), Some(b"PING".to_vec()));
    assert_eq!(parser.next(), Ok(None));
}

#[test]
fn a_cr_not_followed_by_lf_is_refused() {
    assert_eq!(parse_error(b"*1\rX", &Limits::DEFAULT), ProtocolError::MissingCrlf);
    assert_eq!(parse_error(b"*1\r\n$1\rX", &Limits::DEFAULT), ProtocolError::MissingCrlf);
    assert_eq!(parse_error(b"*1\r\n$1\r\naXY", &Limits::DEFAULT), ProtocolError::MissingCrlf);
    needs_more(b"*1\r\n$1\r\na\r", &Limits::DEFAULT);
}

#[test]
fn every_protocol_error_has_its_exact_message_and_closes_the_connection() {
    let expected = [
        (ProtocolError::InvalidMultibulkLength, "Protocol error: invalid multibulk length"),
        (ProtocolError::InvalidBulkLength, "Protocol error: invalid bulk length"),
        (ProtocolError::expected_dollar(b'x'), "Protocol error: expected '$', got 'x'"),
        (ProtocolError::UnbalancedQuotes, "Protocol error: unbalanced quotes in request"),
        (ProtocolError::TooBigInlineRequest, "Protocol error: too big inline request"),
        (ProtocolError::TooBigMultibulkCount, "Protocol error: too big mbulk count string"),
        (ProtocolError::TooBigBulkCount, "Protocol error: too big bulk count string"),
        (ProtocolError::TooManyArguments, "Protocol error: too many arguments"),
        (ProtocolError::RequestTooLarge, "Protocol error: request too large"),
        (ProtocolError::MissingCrlf, "Protocol error: expected CRLF"),
        (ProtocolError::unexpected_type(b'?'), "Protocol error: unexpected reply type '?'"),
        (ProtocolError::InvalidInteger, "Protocol error: invalid integer"),
        (ProtocolError::InvalidDouble, "Protocol error: invalid double"),
        (ProtocolError::InvalidBoolean, "Protocol error: invalid boolean"),
        (ProtocolError::InvalidNull, "Protocol error: invalid null"),
        (ProtocolError::InvalidBigNumber, "Protocol error: invalid big number"),
        (ProtocolError::InvalidVerbatim, "Protocol error: invalid verbatim string"),
        (ProtocolError::NestingTooDeep, "Protocol error: nesting too deep"),
        (ProtocolError::ReplyTooLarge, "Protocol error: reply too large"),
    ];
    for (error, message) in expected {
        assert_eq!(error.message(), message);
        assert_eq!(error.to_string(), message);
        assert!(error.closes_connection());
    }
    let reply = ProtocolError::InvalidMultibulkLength.to_reply();
    assert_eq!(reply.to_bytes(rtedge_proto::ProtocolVersion::Resp2), b"-ERR Protocol error: invalid multibulk length\r\n");
}

#[test]
fn a_failed_parser_keeps_answering_with_the_same_error() {
    let mut parser = RequestParser::new(Limits::DEFAULT);
    parser.feed(b"*x\r\n").expect("fits");
    assert_eq!(parser.next(), Err(ProtocolError::InvalidMultibulkLength));
    assert_eq!(parser.next(), Err(ProtocolError::InvalidMultibulkLength));
    assert_eq!(parser.feed(b"PING\r\n"), Err(ProtocolError::InvalidMultibulkLength));
}

#[test]
fn unauthenticated_limits_cap_arguments_and_can_be_lifted() {
    let mut parser = RequestParser::new(Limits::UNAUTHENTICATED);
    parser.feed(b"*10\r\n").expect("fits");
    assert_eq!(parser.next(), Ok(None));
    let mut other = RequestParser::new(Limits::UNAUTHENTICATED);
    other.feed(b"*11\r\n").expect("fits");
    assert_eq!(other.next(), Err(ProtocolError::TooManyArguments));

    let mut lifted = RequestParser::new(Limits::UNAUTHENTICATED);
    lifted.set_limits(Limits::DEFAULT);
    assert_eq!(lifted.limits(), &Limits::DEFAULT);
    lifted.feed(b"*11\r\n").expect("fits");
    assert_eq!(lifted.next(), Ok(None));
    assert_eq!(Limits::default(), Limits::DEFAULT);
    assert_eq!(Limits::DEFAULT, Limits { max_frame_bytes: 65536, max_args: 1024, max_bulk_bytes: 32768, max_inline_bytes: 16384 });
}

// ---------------------------------------------------------------------------
// Request and encoding

#[test]
fn request_accessors_follow_redis_argv() {
    let request = Request::from_args(owned(&[b"gEt", b"key"])).expect("not empty");
    assert!(request.is("GET"));
    assert!(request.is("get"));
    assert!(!request.is("GETX"));
    assert_eq!(request.name(), b"gEt");
    assert_eq!(request.name_upper(), b"GET");
    assert_eq!(request.arg(0), Some(&b"gEt"[..]));
    assert_eq!(request.arg(1), Some(&b"key"[..]));
    assert_eq!(request.arg(2), None);
    assert_eq!(request.len(), 2);
    assert!(!request.is_empty());
    assert_eq!(request.args_after_name(), owned(&[b"key"]).as_slice());
    assert_eq!(request.clone().into_args(), owned(&[b"gEt", b"key"]));
    assert_eq!(Request::from_args(Vec::new()), None);
}

#[test]
fn encode_command_writes_the_multibulk_a_client_sends_and_it_parses_back() {
    let mut out = Vec::new();
    encode_command(&["GET", "k"], &mut out);
    assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    let request = Request::from_args(owned(&[b"SET", b"k", b"\r\n\0"])).expect("not empty");
    let mut encoded = Vec::new();
    request.encode(&mut encoded);
    assert_eq!(parse_request(&encoded, &Limits::DEFAULT), Ok(Some((request, encoded.len()))));
}
