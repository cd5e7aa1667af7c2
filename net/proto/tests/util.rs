//! Utilities: glob matching against a literal port of Redis's matcher,
//! constant-time comparison, strict numbers, ShortText and typed scalars.

mod support;

use std::fmt::Write as _;
use std::time::Instant;

use rtedge_proto::reply::{ProtocolVersion, Reply};
use rtedge_proto::util::{Scalar, ScalarType, ShortText, ToReply, ValueError, constant_time_eq, glob_match, parse_f64, parse_i64};
use support::Random;

// ---------------------------------------------------------------------------
// Glob

/// Redis's `stringmatchlen_impl` (src/util.c, Redis 7.4), transcribed line
/// by line: recursive, with its nesting limit and `skipLongerMatches`. Reads
/// past the pattern's end see the C string's NUL.
fn redis_stringmatchlen(pattern: &[u8], string: &[u8], nocase: bool) -> bool {
    let mut skip_longer_matches = false;
    redis_impl(pattern, string, nocase, &mut skip_longer_matches, 0)
}

fn redis_impl(pattern: &[u8], string: &[u8], nocase: bool, skip: &mut bool, nesting: usize) -> bool {
    fn lower(value: i32) -> i32 {
        if (65..=90).contains(&value) { value + 32 } else { value }
    }
    if nesting > 1000 {
        return false;
    }
    let at = |index: usize| pattern.get(index).copied().unwrap_or(0);
    let (mut p, mut s) = (0usize, 0usize);
    while p < pattern.len() && s < string.len() {
        match at(p) {
            b'*' => {
                while p < pattern.len() && at(p + 1) == b'*' {
                    p += 1;
                }
                if pattern.len() - p == 1 {
                    return true;
                }
                while s < string.len() {
                    if redis_impl(&pattern[p + 1..], &string[s..], nocase, skip, nesting + 1) {
                        return true;
                    }
                    if *skip {
                        return false;
                    }
                    s += 1;
                }
                *skip = true;
                return false;
            }
            b'?' => s += 1,
            b'[' => {
                p += 1;
                let not = at(p) == b'^';
                if not {
                    p += 1;
                }
                let mut matched = false;
                loop {
                    let remaining = pattern.len() - p;
                    if at(p) == b'\\' && remaining >= 2 {
                        p += 1;
                        if at(p) == string[s] {
                            matched = true;
                        }
                    } else if at(p) == b']' {
                        break;
                    } else if remaining == 0 {
                        p -= 1;
                        break;
                    } else if remaining >= 3 && at(p + 1) == b'-' {
                        let mut start = i32::from(at(p) as i8);
                        let mut end = i32::from(at(p + 2) as i8);
                        let mut c = i32::from(string[s] as i8);
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        if nocase {
                            start = lower(start);
                            end = lower(end);
                            c = lower(c);
                        }
                        p += 2;
                        if c >= start && c <= end {
                            matched = true;
                        }
                    } else if !nocase {
                        if at(p) == string[s] {
                            matched = true;
                        }
                    } else if at(p).eq_ignore_ascii_case(&string[s]) {
                        matched = true;
                    }
                    p += 1;
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s += 1;
            }
            byte => {
                if byte == b'\\' && pattern.len() - p >= 2 {
                    p += 1;
                }
                let equal = if nocase { at(p).eq_ignore_ascii_case(&string[s]) } else { at(p) == string[s] };
                if !equal {
                    return false;
                }
                s += 1;
            }
        }
        p += 1;
        if s == string.len() {
            while at(p) == b'*' && p < pattern.len() {
                p += 1;
            }
            break;
        }
    }
    p == pattern.len() && s == string.len()
}

fn glob(pattern: &str, text: &str) -> bool {
    let ours = glob_match(pattern.as_bytes(), text.as_bytes(), false);
    assert_eq!(ours, redis_stringmatchlen(pattern.as_bytes(), text.as_bytes(), false), "{pattern:?} {text:?}");
    ours
}

#[test]
fn glob_follows_the_redis_keys_documentation_examples() {
    assert!(glob("h?llo", "hello") && glob("h?llo", "hallo") && glob("h?llo", "hxllo"));
    assert!(!glob("h?llo", "hllo"));
    assert!(glob("h*llo", "hllo") && glob("h*llo", "heeeello"));
    assert!(glob("h[ae]llo", "hello") && glob("h[ae]llo", "hallo") && !glob("h[ae]llo", "hillo"));
    assert!(glob("h[^e]llo", "hallo") && glob("h[^e]llo", "hbllo") && !glob("h[^e]llo", "hello"));
    assert!(glob("h[a-b]llo", "hallo") && glob("h[a-b]llo", "hbllo") && !glob("h[a-b]llo", "hcllo"));
    assert!(glob("h\\*llo", "h*llo") && !glob("h\\*llo", "hello"));
}

#[test]
fn glob_matches_like_the_redis_keys_test_suite() {
    let keys = ["key_x", "key_y", "key_z", "foo_a", "foo_b", "foo_c"];
    let matched: Vec<&str> = keys.iter().copied().filter(|key| glob("foo*", key)).collect();
    assert_eq!(matched, ["foo_a", "foo_b", "foo_c"]);
    assert!(keys.iter().all(|key| glob("*", key)));
}

#[test]
fn glob_edge_cases_keep_redis_answers() {
    // Redis's loop never runs on an empty string: only "" matches "".
    assert!(glob("", ""));
    assert!(!glob("*", ""));
    assert!(!glob("", "a"));
    assert!(glob("a*", "a") && glob("a**", "a") && glob("**", "abc"));
    assert!(glob("[b-a]", "a") && glob("[b-a]", "b"), "reversed ranges are swapped");
    assert!(glob("a[bc", "ab") && !glob("a[bc", "ad"), "an unterminated set ends at the pattern's end");
    assert!(glob("[^", "x"), "an empty negated set matches anything");
    assert!(!glob("[", "x"));
    assert!(glob("[a-]", "]") && glob("[a-]", "a"), "'-' before ']' makes ']' the range end");
    assert!(glob("[\\]]", "]") && glob("[\\-]", "-"));
    assert!(glob("a\\", "a\\"), "a trailing backslash is literal");
    assert!(glob("?*?", "ab") && !glob("?*?", "a"));
    assert!(glob_match(b"HeLLo", b"hello", true) && !glob_match(b"HeLLo", b"hello", false));
    assert!(glob_match(b"[A-C]x", b"bX", true) && !glob_match(b"[A-C]x", b"bX", false));
}

#[test]
fn glob_ranges_compare_bytes_as_signed_chars_like_redis_on_x86() {
    // 'a'..0xff is -1..97 as signed chars: it holds 0xff and ASCII below
    // 'a', but not 0x80..0xfe.
    assert!(glob_match(b"[a-\xff]", b"\xff", false));
    assert!(glob_match(b"[a-\xff]", b"0", false));
    assert!(!glob_match(b"[a-\xff]", b"\x80", false));
    assert!(!glob_match(b"[a-\xff]", b"z", false));
    assert_eq!(glob_match(b"[a-\xff]", b"\x80", false), redis_stringmatchlen(b"[a-\xff]", b"\x80", false));
}

#[test]
fn hostile_glob_patterns_finish_fast_with_redis_answers() {
    // tests/unit/keyspace.tcl: "Regression for pattern matching long nested loops".
    let text = "a".repeat(40);
    let pattern = format!("{}b", "a*".repeat(20));
    assert!(!glob(&pattern, &text));

    // "Regression for pattern matching very long nested loops": Redis answers
    // no match because the pattern passes 1000 nested stars.
    let started = Instant::now();
    let text = vec![b'a'; 50_000];
    let pattern = b"*?".repeat(50_000);
    assert!(!glob_match(&pattern, &text, false));
    let slow = b"a*".repeat(5_000);
    assert!(!glob_match(&[&slow[..], b"b"].concat(), &vec![b'a'; 20_000], false));
    println!("hostile patterns took {:?}", started.elapsed());
}

#[test]
fn glob_gives_up_at_the_1001st_star_group_like_redis() {
    let text = vec![b'a'; 1001];
    let thousand = b"*a".repeat(1000);
    assert!(glob_match(&thousand, &text[..1000], false));
    assert!(redis_stringmatchlen(&thousand, &text[..1000], false));
    // 1001 groups: Redis fails although the pattern would match...
    let too_many = b"*a".repeat(1001);
    assert!(!glob_match(&too_many, &text, false));
    assert!(!redis_stringmatchlen(&too_many, &text, false));
    // ...unless the 1001st star is the pattern's last byte.
    let trailing = [&thousand[..], b"*"].concat();
    assert!(glob_match(&trailing, &text, false));
    assert!(redis_stringmatchlen(&trailing, &text, false));
}

#[test]
fn glob_agrees_with_redis_on_random_patterns() {
    let mut random = Random::new(0x61_0b);
    let pattern_alphabet = b"ab*?[]^-\\A\x80\xff";
    let text_alphabet = b"abAB-]^\\*\x80\xff";
    let mut matches = 0;
    for _ in 0..300_000 {
        let pattern_length = random.below(10);
        let text_length = random.below(10);
        let pattern = random.bytes_from(pattern_alphabet, pattern_length);
        let text = random.bytes_from(text_alphabet, text_length);
        let nocase = random.chance(1, 4);
        let ours = glob_match(&pattern, &text, nocase);
        assert_eq!(ours, redis_stringmatchlen(&pattern, &text, nocase), "{pattern:?} {text:?} nocase={nocase}");
        matches += usize::from(ours);
    }
    // The generator must exercise both answers.
    assert!(matches > 5_000 && matches < 295_000, "{matches} matches");
}

#[test]
fn glob_agrees_with_redis_on_random_bytes_like_redis_fuzz_test() {
    // Redis's stringmatchlen_fuzz_test: random 7-bit bytes, up to 31 long.
    let mut random = Random::new(0xf022);
    for _ in 0..100_000 {
        let pattern_length = random.below(32);
        let text_length = random.below(32);
        let pattern: Vec<u8> = (0..pattern_length).map(|_| random.below(128) as u8).collect();
        let text: Vec<u8> = (0..text_length).map(|_| random.below(128) as u8).collect();
        assert_eq!(glob_match(&pattern, &text, false), redis_stringmatchlen(&pattern, &text, false));
    }
}

// ---------------------------------------------------------------------------
// Constant-time comparison

#[test]
fn constant_time_eq_compares_whole_byte_strings() {
    assert!(constant_time_eq(b"secret", b"secret"));
    assert!(constant_time_eq(b"", b""));
    assert!(!constant_time_eq(b"secret", b"secreT"));
    assert!(!constant_time_eq(b"secret", b"Secret"));
    assert!(!constant_time_eq(b"secret", b"secret!"));
    assert!(!constant_time_eq(b"", b"x"));
    assert!(!constant_time_eq(&[0x80], &[0x00]));
}

// ---------------------------------------------------------------------------
// Numbers

#[test]
fn parse_i64_accepts_exactly_what_redis_string2ll_accepts() {
    let accepted: [(&[u8], i64); 6] = [
        (b"0", 0),
        (b"7", 7),
        (b"-7", -7),
        (b"1234567890", 1_234_567_890),
        (b"9223372036854775807", i64::MAX),
        (b"-9223372036854775808", i64::MIN),
    ];
    for (text, value) in accepted {
        assert_eq!(parse_i64(text), Some(value), "{text:?}");
    }
    let refused: [&[u8]; 12] = [
        b"",
        b"-",
        b"-0",
        b"01",
        b"+1",
        b" 1",
        b"1 ",
        b"1a",
        b"9223372036854775808",
        b"-9223372036854775809",
        b"00000000000000000001",
        b"\xff",
    ];
    for text in refused {
        assert_eq!(parse_i64(text), None, "{text:?}");
    }
}

#[test]
fn parse_f64_accepts_what_redis_string2d_accepts() {
    let accepted: [(&[u8], f64); 8] = [
        (b"1.5", 1.5),
        (b"-0.25", -0.25),
        (b"1e3", 1000.0),
        (b".5", 0.5),
        (b"+2", 2.0),
        (b"0", 0.0),
        (b"0e-500", 0.0),
        (b"5e-324", 5e-324),
    ];
    for (text, value) in accepted {
        assert_eq!(parse_f64(text), Some(value), "{text:?}");
    }
    assert_eq!(parse_f64(b"inf"), Some(f64::INFINITY));
    assert_eq!(parse_f64(b"-Infinity"), Some(f64::NEG_INFINITY));
    let refused: [&[u8]; 9] = [b"", b" 1", b"1 ", b"abc", b"nan", b"1e400", b"-1e400", b"1e-400", b"\xff"];
    for text in refused {
        assert_eq!(parse_f64(text), None, "{text:?}");
    }
}

// ---------------------------------------------------------------------------
// ShortText and scalars

#[test]
fn short_text_holds_up_to_64_bytes_inline() {
    let text = ShortText::new("héllo").expect("fits");
    assert_eq!(text.as_str(), "héllo");
    assert_eq!(text.len(), 6);
    assert!(!text.is_empty() && ShortText::default().is_empty());
    let copy = text;
    assert_eq!(copy, text);
    assert!(ShortText::new(&"x".repeat(64)).is_some());
    assert!(ShortText::new(&"x".repeat(65)).is_none());
    assert_eq!(format!("{text:?} {text}"), "\"héllo\" héllo");

    let mut built = ShortText::empty();
    assert!(write!(built, "{}", "y".repeat(60)).is_ok());
    // A piece that does not fit is refused whole, so the text stays UTF-8.
    assert!(built.write_str("ééé").is_err());
    assert_eq!(built.len(), 60);
    assert!(built.push_str("éé"));
    assert_eq!(built.len(), 64);
    assert_eq!(ShortText::from_utf8(b"\xff"), Err(ValueError::NotUtf8));
}

#[test]
fn scalars_parse_every_type() {
    assert_eq!(Scalar::parse(ScalarType::Integer, b"-42"), Ok(Scalar::Integer(-42)));
    assert_eq!(Scalar::parse(ScalarType::Float, b"2.5"), Ok(Scalar::Float(2.5)));
    for word in ["1", "true", "TRUE", "on", "On", "yes", "YES"] {
        assert_eq!(Scalar::parse(ScalarType::Bool, word.as_bytes()), Ok(Scalar::Bool(true)), "{word}");
    }
    for word in ["0", "false", "False", "off", "OFF", "no", "No"] {
        assert_eq!(Scalar::parse(ScalarType::Bool, word.as_bytes()), Ok(Scalar::Bool(false)), "{word}");
    }
    let text = Scalar::parse(ScalarType::Text, "motor ok ✓".as_bytes());
    assert_eq!(text, Ok(Scalar::Text(ShortText::new("motor ok ✓").expect("fits"))));
    assert_eq!(Scalar::parse(ScalarType::Text, &[b'x'; 64]).map(|scalar| scalar.to_string().len()), Ok(64));
}

#[test]
fn scalar_errors_carry_their_exact_messages() {
    let cases: [(ScalarType, &[u8], ValueError, &str); 8] = [
        (ScalarType::Integer, b"1.5", ValueError::NotAnInteger, "ERR value is not an integer or out of range"),
        (ScalarType::Integer, b"9223372036854775808", ValueError::NotAnInteger, "ERR value is not an integer or out of range"),
        (ScalarType::Float, b"abc", ValueError::NotAFloat, "ERR value is not a valid float"),
        (ScalarType::Float, b"nan", ValueError::NotAFloat, "ERR value is not a valid float"),
        (ScalarType::Bool, b"2", ValueError::NotABoolean, "ERR value is not a boolean (use 1/0/true/false/on/off/yes/no)"),
        (ScalarType::Bool, b"", ValueError::NotABoolean, "ERR value is not a boolean (use 1/0/true/false/on/off/yes/no)"),
        (ScalarType::Text, &[b'x'; 65], ValueError::TextTooLong, "ERR string longer than 64 bytes"),
        (ScalarType::Text, b"\xc3", ValueError::NotUtf8, "ERR string is not valid UTF-8"),
    ];
    for (scalar_type, input, error, message) in cases {
        assert_eq!(Scalar::parse(scalar_type, input), Err(error), "{scalar_type:?} {input:?}");
        assert_eq!(error.message(), message);
        assert_eq!(error.to_string(), message);
    }
    let mut wire = Vec::new();
    Reply::from(ValueError::NotAnInteger).encode(ProtocolVersion::Resp2, &mut wire);
    assert_eq!(wire, b"-ERR value is not an integer or out of range\r\n");
}

#[test]
fn scalars_format_and_parse_back_to_the_same_value() {
    let values = [
        Scalar::Integer(i64::MIN),
        Scalar::Integer(0),
        Scalar::Float(1.5),
        Scalar::Float(3.0),
        Scalar::Float(-1e-300),
        Scalar::Float(f64::INFINITY),
        Scalar::Bool(true),
        Scalar::Bool(false),
        Scalar::Text(ShortText::new("a b").expect("fits")),
    ];
    let shown: Vec<String> = values.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["-9223372036854775808", "0", "1.5", "3", "-1e-300", "inf", "true", "false", "a b"]);
    for (value, text) in values.iter().zip(&shown) {
        assert_eq!(Scalar::parse(value.scalar_type(), text.as_bytes()), Ok(*value));
    }
}

#[test]
fn scalars_reply_with_their_natural_resp_type() {
    assert_eq!(Scalar::Integer(5).to_reply(), Reply::Integer(5));
    assert_eq!(Scalar::Float(0.5).to_reply(), Reply::Double(0.5));
    assert_eq!(Scalar::Bool(true).to_reply(), Reply::Boolean(true));
    assert_eq!(Scalar::Text(ShortText::new("t").expect("fits")).to_reply(), Reply::Bulk(b"t".to_vec()));
    assert_eq!(Scalar::Float(0.5).to_reply().to_bytes(ProtocolVersion::Resp2), b"$3\r\n0.5\r\n");
    let names: Vec<&str> =
        [ScalarType::Integer, ScalarType::Float, ScalarType::Bool, ScalarType::Text].iter().map(|ty| ty.name()).collect();
    assert_eq!(names, ["integer", "float", "bool", "text"]);
    assert_eq!(Scalar::Bool(false).scalar_type(), ScalarType::Bool);
}
