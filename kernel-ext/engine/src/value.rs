//! Portable value tools the kernel and the control plane share:
//! Redis-compatible glob matching, a constant-time comparison for secrets,
//! strict number parsing and formatting, the typed scalar values that
//! shared statics hold, and the redaction of secrets on a command line.
//!
//! They were the control-plane protocol's (`rtedge_proto::util` re-exports
//! them and adds their RESP replies); they live here so that the RT kernel
//! holds typed values without depending on the protocol.

use alloc::string::String;
use core::fmt;

/// Errors of converting client text into a typed value. The messages are
/// complete error replies (code included), as Redis words them where Redis
/// has the same check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueError {
    /// Not an integer, or outside `i64`.
    NotAnInteger,
    /// Not a number, or NaN, or too large or too small for `f64`.
    NotAFloat,
    /// None of 1/0/true/false/on/off/yes/no.
    NotABoolean,
    /// Text longer than [`SHORT_TEXT_CAPACITY`] bytes.
    TextTooLong,
    /// Text that is not UTF-8.
    NotUtf8,
}

/// Result of the conversions in this module.
pub type Result<T> = core::result::Result<T, ValueError>;

impl ValueError {
    /// The full error text, ready for an error reply.
    pub fn message(&self) -> &'static str {
        match self {
            Self::NotAnInteger => "ERR value is not an integer or out of range",
            Self::NotAFloat => "ERR value is not a valid float",
            Self::NotABoolean => "ERR value is not a boolean (use 1/0/true/false/on/off/yes/no)",
            Self::TextTooLong => "ERR string longer than 64 bytes",
            Self::NotUtf8 => "ERR string is not valid UTF-8",
        }
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.message())
    }
}

// ---------------------------------------------------------------------------
// Glob matching

/// Redis refuses to match patterns that would recurse deeper than this many
/// `*` groups (`stringmatchlen_impl`'s `nesting > 1000`); we keep the same
/// answer although our matcher does not recurse.
const GLOB_STAR_LIMIT: usize = 1000;

/// Matches `text` against a Redis glob `pattern` with the semantics of
/// Redis's `stringmatchlen`: `*` (any run, consecutive stars collapse), `?`
/// (one byte), `[abc]`, `[^abc]`, `[a-z]` (reversed ranges are swapped, an
/// unterminated `[` ends the set), and `\` escaping the next byte.
///
/// It keeps two quirks of Redis so that `KEYS` and `PSUBSCRIBE` answer as
/// Redis would: an empty `text` matches only an empty pattern (even `*` does
/// not match it), and a match that would have to reach a pattern's 1001st
/// `*` group (one that is not the last pattern byte) fails. Ranges compare
/// bytes as C's signed `char`, as Redis on x86 does.
///
/// Cost: it never recurses and allocates nothing. Like Redis's
/// `skipLongerMatches`, only the most recent `*` is ever retried, so the
/// work is bounded by `pattern.len() * text.len()` steps (each step may scan
/// one `[...]` set), never exponential.
pub fn glob_match(pattern: &[u8], text: &[u8], nocase: bool) -> bool {
    if text.is_empty() {
        // Redis's main loop never runs on an empty string.
        return pattern.is_empty();
    }
    let mut pattern_index = 0usize;
    let mut text_index = 0usize;
    // The `*` group we may still retry: where the pattern continues after
    // it, the text position it last started from, and its ordinal.
    let mut retry: Option<(usize, usize, usize)> = None;
    let mut stars_seen = 0usize;

    loop {
        // Invariant: text_index < text.len().
        let Some(&pattern_byte) = pattern.get(pattern_index) else {
            // Pattern used up with text left over.
            if !backtrack(&mut retry, &mut pattern_index, &mut text_index, &mut stars_seen, text) {
                return false;
            }
            continue;
        };
        let Some(&text_byte) = text.get(text_index) else {
            return false;
        };

        let matched = match pattern_byte {
            b'*' => {
                while pattern.get(pattern_index + 1) == Some(&b'*') {
                    pattern_index += 1;
                }
                if pattern_index + 1 == pattern.len() {
                    return true;
                }
                stars_seen += 1;
                if stars_seen > GLOB_STAR_LIMIT {
                    return false;
                }
                pattern_index += 1;
                retry = Some((pattern_index, text_index, stars_seen));
                continue;
            }
            b'?' => true,
            b'[' => {
                let (matched, set_end) = match_set(pattern, pattern_index + 1, text_byte, nocase);
                // `set_end` is the index of the closing `]` (or the last
                // pattern byte when unterminated); the shared step below
                // moves past it.
                pattern_index = set_end;
                matched
            }
            b'\\' => {
                if pattern_index + 2 <= pattern.len() {
                    pattern_index += 1;
                }
                let literal = pattern.get(pattern_index).copied().unwrap_or(b'\\');
                bytes_equal(literal, text_byte, nocase)
            }
            literal => bytes_equal(literal, text_byte, nocase),
        };

        if !matched {
            if !backtrack(&mut retry, &mut pattern_index, &mut text_index, &mut stars_seen, text) {
                return false;
            }
            continue;
        }
        pattern_index += 1;
        text_index += 1;
        if text_index == text.len() {
            while pattern.get(pattern_index) == Some(&b'*') {
                pattern_index += 1;
            }
            if pattern_index >= pattern.len() {
                return true;
            }
            if !backtrack(&mut retry, &mut pattern_index, &mut text_index, &mut stars_seen, text) {
                return false;
            }
        }
    }
}

/// Restarts the pattern after the last `*` one text byte further on.
/// Returns false when there is no `*` to retry or it has tried every
/// non-empty rest of the text (Redis never lets `*` leave nothing to match).
fn backtrack(
    retry: &mut Option<(usize, usize, usize)>,
    pattern_index: &mut usize,
    text_index: &mut usize,
    stars_seen: &mut usize,
    text: &[u8],
) -> bool {
    let Some((after_star, started_at, ordinal)) = *retry else {
        return false;
    };
    let next = started_at + 1;
    if next >= text.len() {
        return false;
    }
    *retry = Some((after_star, next, ordinal));
    *pattern_index = after_star;
    *text_index = next;
    *stars_seen = ordinal;
    true
}

/// Matches one text byte against the set starting at `start` (just after
/// `[`). Returns whether it matched and the index of the set's last byte.
fn match_set(pattern: &[u8], start: usize, text_byte: u8, nocase: bool) -> (bool, usize) {
    let mut index = start;
    let negate = pattern.get(index) == Some(&b'^');
    if negate {
        index += 1;
    }
    let mut matched = false;
    loop {
        let remaining = pattern.len().saturating_sub(index);
        let Some(&byte) = pattern.get(index) else {
            // Unterminated set: Redis steps back so that the caller's
            // increment lands on the pattern's end.
            index = index.saturating_sub(1);
            break;
        };
        if byte == b'\\' && remaining >= 2 {
            index += 1;
            if pattern.get(index) == Some(&text_byte) {
                matched = true;
            }
        } else if byte == b']' {
            break;
        } else if remaining >= 3 && pattern.get(index + 1) == Some(&b'-') {
            let mut low = signed_char(byte);
            let mut high = signed_char(pattern.get(index + 2).copied().unwrap_or(0));
            let mut candidate = signed_char(text_byte);
            if low > high {
                core::mem::swap(&mut low, &mut high);
            }
            if nocase {
                low = c_tolower(low);
                high = c_tolower(high);
                candidate = c_tolower(candidate);
            }
            index += 2;
            if candidate >= low && candidate <= high {
                matched = true;
            }
        } else if bytes_equal(byte, text_byte, nocase) {
            matched = true;
        }
        index += 1;
    }
    (matched != negate, index)
}

/// A byte as C's signed `char` on x86, which is what Redis's ranges compare.
fn signed_char(byte: u8) -> i32 {
    i32::from(byte as i8)
}

fn c_tolower(value: i32) -> i32 {
    if (i32::from(b'A')..=i32::from(b'Z')).contains(&value) { value + 32 } else { value }
}

fn bytes_equal(left: u8, right: u8, nocase: bool) -> bool {
    if nocase { left.eq_ignore_ascii_case(&right) } else { left == right }
}

// ---------------------------------------------------------------------------
// Secrets

/// Compares two byte strings in time that depends only on their lengths, so
/// a password check does not tell an attacker how many leading bytes were
/// right. Different lengths return false at once (the length leaks).
pub fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    let mut difference = 0u8;
    for (a, b) in left.iter().zip(right) {
        // black_box keeps the optimiser from turning the loop into an
        // early-exit comparison.
        difference = core::hint::black_box(difference | (a ^ b));
    }
    difference == 0
}

// ---------------------------------------------------------------------------
// Numbers

/// Parses a decimal `i64` exactly as Redis's `string2ll`: an optional `-`,
/// no `+`, no spaces, no leading zeros (except `0` itself), no `-0`, at
/// most 20 characters.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    // Redis's LONG_STR_SIZE is 21: longer strings are never numbers.
    if bytes.is_empty() || bytes.len() >= 21 {
        return None;
    }
    if bytes == b"0" {
        return Some(0);
    }
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut magnitude = 0u64;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
    }
    if negative {
        if magnitude > i64::MIN.unsigned_abs() {
            return None;
        }
        Some(0i64.wrapping_sub_unsigned(magnitude))
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Parses a float as Redis's `string2d` accepts it: the whole text is a
/// number, no leading space, no NaN, and no overflow to infinity or
/// underflow to zero (written infinities such as `inf` are accepted).
pub fn parse_f64(bytes: &[u8]) -> Option<f64> {
    let text = core::str::from_utf8(bytes).ok()?;
    let first = *bytes.first()?;
    if first.is_ascii_whitespace() || first == 0x0b {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    if value.is_nan() {
        return None;
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let written_infinity = unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity");
    if value.is_infinite() && !written_infinity {
        return None;
    }
    if value == 0.0 {
        // strtod reports ERANGE when non-zero digits round to zero.
        let mantissa = unsigned.split(['e', 'E']).next().unwrap_or("");
        if mantissa.bytes().any(|byte| matches!(byte, b'1'..=b'9')) {
            return None;
        }
    }
    Some(value)
}

/// Formats a double exactly as Redis's `d2string` lays it out: `nan`,
/// `inf`, `-inf`, `0`, `-0`; integral values up to 2^62 as integers;
/// otherwise the shortest digits that read back to the same value, in plain
/// notation for moderate exponents and as `1.5e+20` / `1.5e-7` beyond.
pub fn format_double(value: f64) -> ShortText {
    let mut text = ShortText::empty();
    // Every branch writes at most 25 bytes, so the writes cannot fail.
    if value.is_nan() {
        text.push_str("nan");
    } else if value.is_infinite() {
        text.push_str(if value < 0.0 { "-inf" } else { "inf" });
    } else if value == 0.0 {
        text.push_str(if value.is_sign_negative() { "-0" } else { "0" });
    } else if let Some(integer) = double_to_integer(value) {
        write_i64(integer, |piece| {
            text.push_bytes(piece);
        });
    } else {
        format_shortest(value, &mut text);
    }
    text
}

/// Redis's `double2ll`: integral values within ±(i64::MAX / 2).
fn double_to_integer(value: f64) -> Option<i64> {
    const LIMIT: f64 = (i64::MAX / 2) as f64;
    if !(-LIMIT..=LIMIT).contains(&value) {
        return None;
    }
    // In range, so the cast cannot saturate; equal after the round trip
    // means there was no fractional part.
    let integer = value as i64;
    (integer as f64 == value).then_some(integer)
}

/// The layout of Redis's `fpconv_dtoa` (`emit_digits`), fed with the
/// shortest round-trip digits that core's `{:e}` produces.
fn format_shortest(value: f64, out: &mut ShortText) {
    let mut scientific = ShortText::empty();
    if fmt::write(&mut scientific, format_args!("{:e}", value.abs())).is_err() {
        return;
    }
    let (mantissa, exponent) = scientific.as_str().split_once('e').unwrap_or((scientific.as_str(), "0"));
    // The decimal exponent of the first digit.
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let mut digit_buffer = [0u8; 24];
    let mut digit_count = 0usize;
    for byte in mantissa.bytes().filter(u8::is_ascii_digit) {
        if let Some(slot) = digit_buffer.get_mut(digit_count) {
            *slot = byte;
            digit_count += 1;
        }
    }
    let digits = digit_buffer.get(..digit_count).unwrap_or(&[]);
    // At most 17 digits, so these conversions are exact.
    let length = digit_count as i32;
    // value = digits * 10^scale (Redis's K).
    let scale = exponent - (length - 1);
    if value < 0.0 {
        out.push_str("-");
    }
    if scale >= 0 && exponent < length + 7 {
        // Plain integer: digits then zeros.
        out.push_bytes(digits);
        for _ in 0..scale {
            out.push_str("0");
        }
    } else if scale < 0 && (scale > -7 || exponent.abs() < 4) {
        // Plain decimal.
        let whole_digits = length + scale;
        if whole_digits <= 0 {
            out.push_str("0.");
            for _ in 0..-whole_digits {
                out.push_str("0");
            }
            out.push_bytes(digits);
        } else {
            let (whole, fraction) = digits.split_at((whole_digits as usize).min(digits.len()));
            out.push_bytes(whole);
            out.push_str(".");
            out.push_bytes(fraction);
        }
    } else {
        // Scientific, exponent without leading zeros: 1.5e+20, 1e-7.
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push_bytes(first);
        if !rest.is_empty() {
            out.push_str(".");
            out.push_bytes(rest);
        }
        out.push_str(if exponent < 0 { "e-" } else { "e+" });
        let mut buffer = DecimalBuffer::default();
        out.push_bytes(buffer.format_u64(u64::from(exponent.unsigned_abs())));
    }
}

/// A stack buffer for formatting integers without allocating.
#[derive(Default)]
pub struct DecimalBuffer {
    bytes: [u8; 20],
}

impl DecimalBuffer {
    /// `value` in decimal, in the buffer.
    pub fn format_u64(&mut self, mut value: u64) -> &[u8] {
        let mut start = self.bytes.len();
        loop {
            start -= 1;
            if let Some(slot) = self.bytes.get_mut(start) {
                *slot = b'0' + (value % 10) as u8;
            }
            value /= 10;
            if value == 0 || start == 0 {
                break;
            }
        }
        self.bytes.get(start..).unwrap_or(&[])
    }
}

/// Writes a signed integer into `out` without allocating.
pub fn write_i64(value: i64, mut out: impl FnMut(&[u8])) {
    if value < 0 {
        out(b"-");
    }
    let mut buffer = DecimalBuffer::default();
    out(buffer.format_u64(value.unsigned_abs()));
}

// ---------------------------------------------------------------------------
// Short inline text

/// Capacity of [`ShortText`] in bytes.
pub const SHORT_TEXT_CAPACITY: usize = 64;

/// A UTF-8 string of at most 64 bytes stored inline: `Copy`, no allocation,
/// so shared statics and RT threads can hold text.
#[derive(Clone, Copy)]
pub struct ShortText {
    bytes: [u8; SHORT_TEXT_CAPACITY],
    len: u8,
}

impl ShortText {
    /// The empty string.
    pub const fn empty() -> ShortText {
        ShortText { bytes: [0; SHORT_TEXT_CAPACITY], len: 0 }
    }

    /// Copies `text`; `None` when it is longer than 64 bytes.
    pub fn new(text: &str) -> Option<ShortText> {
        let mut short = ShortText::empty();
        short.push_str(text).then_some(short)
    }

    /// Checks and copies UTF-8 bytes.
    pub fn from_utf8(bytes: &[u8]) -> Result<ShortText> {
        if bytes.len() > SHORT_TEXT_CAPACITY {
            return Err(ValueError::TextTooLong);
        }
        let text = core::str::from_utf8(bytes).map_err(|_| ValueError::NotUtf8)?;
        ShortText::new(text).ok_or(ValueError::TextTooLong)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so this cannot fail.
        core::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The text's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `text` whole, or nothing and returns false when it does not fit.
    pub fn push_str(&mut self, text: &str) -> bool {
        self.push_bytes_unchecked_utf8(text.as_bytes())
    }

    /// Appends bytes that the caller knows to be ASCII digits or signs.
    fn push_bytes(&mut self, bytes: &[u8]) -> bool {
        if !bytes.is_ascii() {
            return false;
        }
        self.push_bytes_unchecked_utf8(bytes)
    }

    /// Appends bytes that are whole UTF-8 text (checked by the callers).
    fn push_bytes_unchecked_utf8(&mut self, bytes: &[u8]) -> bool {
        let start = usize::from(self.len);
        let Some(end) = start.checked_add(bytes.len()).filter(|&end| end <= SHORT_TEXT_CAPACITY) else {
            return false;
        };
        let Some(slot) = self.bytes.get_mut(start..end) else {
            return false;
        };
        slot.copy_from_slice(bytes);
        // end <= 64 fits in u8.
        self.len = end as u8;
        true
    }
}

impl Default for ShortText {
    fn default() -> ShortText {
        ShortText::empty()
    }
}

impl PartialEq for ShortText {
    fn eq(&self, other: &ShortText) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ShortText {}

impl core::hash::Hash for ShortText {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Debug for ShortText {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), formatter)
    }
}

impl fmt::Display for ShortText {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl fmt::Write for ShortText {
    /// All or nothing: a piece that does not fit is refused whole, so the
    /// text stays valid UTF-8.
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if self.push_str(text) { Ok(()) } else { Err(fmt::Error) }
    }
}

// ---------------------------------------------------------------------------
// Typed scalars

/// The type a shared static declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScalarType {
    /// `i64`.
    Integer,
    /// `f64`.
    Float,
    /// `bool`.
    Bool,
    /// [`ShortText`].
    Text,
}

impl ScalarType {
    /// Lower-case name, as shown to clients.
    pub fn name(self) -> &'static str {
        match self {
            Self::Integer => "integer",
            Self::Float => "float",
            Self::Bool => "bool",
            Self::Text => "text",
        }
    }
}

/// A typed value of a shared static.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// A signed integer.
    Integer(i64),
    /// A double.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// Inline UTF-8 text of at most 64 bytes.
    Text(ShortText),
}

impl Scalar {
    /// Converts client bytes to a value of type `scalar_type`, with Redis's
    /// rules for numbers (see [`parse_i64`], [`parse_f64`]); booleans accept
    /// 1/0/true/false/on/off/yes/no in any case.
    pub fn parse(scalar_type: ScalarType, bytes: &[u8]) -> Result<Scalar> {
        match scalar_type {
            ScalarType::Integer => parse_i64(bytes).map(Scalar::Integer).ok_or(ValueError::NotAnInteger),
            ScalarType::Float => parse_f64(bytes).map(Scalar::Float).ok_or(ValueError::NotAFloat),
            ScalarType::Bool => parse_bool(bytes).map(Scalar::Bool).ok_or(ValueError::NotABoolean),
            ScalarType::Text => ShortText::from_utf8(bytes).map(Scalar::Text),
        }
    }

    /// The value's type.
    pub fn scalar_type(&self) -> ScalarType {
        match self {
            Self::Integer(_) => ScalarType::Integer,
            Self::Float(_) => ScalarType::Float,
            Self::Bool(_) => ScalarType::Bool,
            Self::Text(_) => ScalarType::Text,
        }
    }
}

impl fmt::Display for Scalar {
    /// Integers in decimal, floats as Redis formats doubles, booleans as
    /// `true`/`false`, text as is. Every form parses back to the same value.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Integer(value) => write!(formatter, "{value}"),
            Self::Float(value) => formatter.write_str(format_double(*value).as_str()),
            Self::Bool(value) => formatter.write_str(if *value { "true" } else { "false" }),
            Self::Text(text) => formatter.write_str(text.as_str()),
        }
    }
}

fn parse_bool(bytes: &[u8]) -> Option<bool> {
    const TRUE: [&[u8]; 4] = [b"1", b"true", b"on", b"yes"];
    const FALSE: [&[u8]; 4] = [b"0", b"false", b"off", b"no"];
    if TRUE.iter().any(|word| word.eq_ignore_ascii_case(bytes)) {
        Some(true)
    } else if FALSE.iter().any(|word| word.eq_ignore_ascii_case(bytes)) {
        Some(false)
    } else {
        None
    }
}

/// The kernel command-line words that carry secrets: their values are
/// never shown ([`redact_command_line`]).
pub const SECRET_WORDS: [&str; 1] = ["auth"];

/// `line` with the value of every secret word (`auth=<token>`) replaced by
/// `<redacted>`, for `INFO`, logs and the console: that a token is set
/// stays visible, the token does not.
pub fn redact_command_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for (index, word) in line.split(' ').enumerate() {
        if index > 0 {
            out.push(' ');
        }
        match word.split_once('=') {
            Some((key, _)) if SECRET_WORDS.contains(&key) => {
                out.push_str(key);
                out.push_str("=<redacted>");
            }
            _ => out.push_str(word),
        }
    }
    out
}

/// Appends `text` to `out` as a JSON string (quoted; `"`, `\` and control
/// characters escaped), for the messages of the pub/sub channels.
pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            control if (control as u32) < 0x20 => {
                let _ = fmt::Write::write_fmt(out, format_args!("\\u{:04x}", control as u32));
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_quotes_backslashes_and_control_characters() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }

    #[test]
    fn secrets_on_the_command_line_are_redacted() {
        assert_eq!(redact_command_line("log=info auth=s3cret port=6379"), "log=info auth=<redacted> port=6379");
    }
}
