//! Client side: parses any RESP2 or RESP3 reply (`+ - : $ * _ # , ( ! = %
//! ~ > |`), incrementally and within the caller's nesting and size limits.
//! Used by `rtctl` and by tests.

use alloc::boxed::Box;
use alloc::vec::Vec;

pub use crate::error::{ProtocolError, Result};
use crate::reply::{ProtocolVersion, Reply};
use crate::util::{format_double, parse_i64};

/// A reply as a client receives it. It mirrors [`Reply`], with bytes where
/// the wire may carry any bytes.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `+text`.
    Simple(Vec<u8>),
    /// `-text`, or a RESP3 blob error `!len`.
    Error(Vec<u8>),
    /// `:n`.
    Integer(i64),
    /// `$len`.
    Bulk(Vec<u8>),
    /// `$-1` or RESP3 `_`.
    Null,
    /// `*n`.
    Array(Vec<Value>),
    /// `*-1`.
    NullArray,
    /// `%n`.
    Map(Vec<(Value, Value)>),
    /// `~n`.
    Set(Vec<Value>),
    /// `,text`.
    Double(f64),
    /// `#t` / `#f`.
    Boolean(bool),
    /// `=len` with its three-byte format.
    Verbatim {
        /// e.g. `txt`.
        format: [u8; 3],
        /// The text after `xxx:`.
        text: Vec<u8>,
    },
    /// `>n`.
    Push(Vec<Value>),
    /// `(digits`.
    BigNumber(Vec<u8>),
    /// A value preceded by RESP3 attributes (`|n`).
    Attributed {
        /// The attribute map.
        attributes: Vec<(Value, Value)>,
        /// The value they describe.
        value: Box<Value>,
    },
}

/// Parses the first reply in `buffer`.
///
/// Returns `Ok(Some((value, consumed)))`, `Ok(None)` when more bytes are
/// needed, or an error when the bytes can never form a valid reply.
///
/// Limits: aggregates (and attributes, and each value that follows an
/// attribute) may nest at most `max_depth` levels (1 allows a flat array;
/// recursion is bounded by it); the whole reply must fit in `max_len`
/// bytes, and declared lengths that cannot fit are refused before their
/// bytes arrive ([`ProtocolError::ReplyTooLarge`]). Memory allocated is
/// proportional to the bytes present, never to a declared count.
pub fn parse_value(buffer: &[u8], max_depth: usize, max_len: usize) -> Result<Option<(Value, usize)>> {
    if buffer.is_empty() {
        return Ok(None);
    }
    let window = buffer.get(..max_len.min(buffer.len())).unwrap_or(buffer);
    let parser = Parser { buffer: window, max_depth, max_len };
    match parser.value(0, 0)? {
        Some((value, end)) => Ok(Some((value, end))),
        None if buffer.len() >= max_len => Err(ProtocolError::ReplyTooLarge),
        None => Ok(None),
    }
}

/// The smallest encoded value, `_\r\n`: what each declared element takes
/// at least.
const MIN_VALUE_BYTES: usize = 3;

struct Parser<'a> {
    /// The input, cut at `max_len`.
    buffer: &'a [u8],
    max_depth: usize,
    max_len: usize,
}

/// A parsed value and the offset just past it.
type Parsed<T> = Result<Option<(T, usize)>>;

impl Parser<'_> {
    fn value(&self, position: usize, depth: usize) -> Parsed<Value> {
        let Some(&kind) = self.buffer.get(position) else {
            return Ok(None);
        };
        if !b"+-:$*_#,(!=%~>|".contains(&kind) {
            // Refused at once, without waiting for a line that may never end.
            return Err(ProtocolError::unexpected_type(kind));
        }
        let Some((line, after_line)) = self.line(position + 1)? else {
            return Ok(None);
        };
        let done = |value: Value| Ok(Some((value, after_line)));
        match kind {
            b'+' => done(Value::Simple(line.to_vec())),
            b'-' => done(Value::Error(line.to_vec())),
            b':' => done(Value::Integer(parse_i64(line).ok_or(ProtocolError::InvalidInteger)?)),
            b'_' if line.is_empty() => done(Value::Null),
            b'_' => Err(ProtocolError::InvalidNull),
            b'#' => match line {
                b"t" => done(Value::Boolean(true)),
                b"f" => done(Value::Boolean(false)),
                _ => Err(ProtocolError::InvalidBoolean),
            },
            b',' => {
                let text = core::str::from_utf8(line).map_err(|_| ProtocolError::InvalidDouble)?;
                done(Value::Double(text.parse().map_err(|_| ProtocolError::InvalidDouble)?))
            }
            b'(' => {
                let digits = line.strip_prefix(b"-").or_else(|| line.strip_prefix(b"+")).unwrap_or(line);
                if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                    return Err(ProtocolError::InvalidBigNumber);
                }
                done(Value::BigNumber(line.to_vec()))
            }
            b'$' if line == b"-1" => done(Value::Null),
            b'*' if line == b"-1" => done(Value::NullArray),
            b'$' | b'!' | b'=' => {
                let Some((data, end)) = self.blob(line, after_line)? else {
                    return Ok(None);
                };
                let value = match kind {
                    b'$' => Value::Bulk(data.to_vec()),
                    b'!' => Value::Error(data.to_vec()),
                    _ => {
                        let (format, text) = data.split_at_checked(4).ok_or(ProtocolError::InvalidVerbatim)?;
                        let (format, colon) = format.split_at(3);
                        if colon != b":" {
                            return Err(ProtocolError::InvalidVerbatim);
                        }
                        let format: [u8; 3] = format.try_into().map_err(|_| ProtocolError::InvalidVerbatim)?;
                        Value::Verbatim { format, text: text.to_vec() }
                    }
                };
                Ok(Some((value, end)))
            }
            b'*' | b'~' | b'>' => {
                let Some((elements, end)) = self.elements(line, after_line, depth, 1)? else {
                    return Ok(None);
                };
                let value = match kind {
                    b'*' => Value::Array(elements),
                    b'~' => Value::Set(elements),
                    _ => Value::Push(elements),
                };
                Ok(Some((value, end)))
            }
            b'%' => {
                let Some((pairs, end)) = self.pairs(line, after_line, depth)? else {
                    return Ok(None);
                };
                Ok(Some((Value::Map(pairs), end)))
            }
            b'|' => {
                let Some((attributes, end)) = self.pairs(line, after_line, depth)? else {
                    return Ok(None);
                };
                // One level deeper, so a chain of attributes cannot recurse
                // without bound.
                let Some((value, end)) = self.value(end, depth + 1)? else {
                    return Ok(None);
                };
                Ok(Some((Value::Attributed { attributes, value: Box::new(value) }, end)))
            }
            other => Err(ProtocolError::unexpected_type(other)),
        }
    }

    /// The line starting at `start`: its bytes and the offset after its
    /// `\r\n`. A `\r` must be followed by `\n`.
    fn line(&self, start: usize) -> Result<Option<(&[u8], usize)>> {
        let rest = self.buffer.get(start..).unwrap_or(&[]);
        let Some(carriage_return) = rest.iter().position(|&byte| byte == b'\r') else {
            return Ok(None);
        };
        match rest.get(carriage_return + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((rest.get(..carriage_return).unwrap_or(&[]), start + carriage_return + 2))),
            Some(_) => Err(ProtocolError::MissingCrlf),
        }
    }

    /// A length-prefixed payload whose length line was `line`.
    fn blob(&self, line: &[u8], data_start: usize) -> Parsed<&[u8]> {
        let length = parse_i64(line).and_then(|length| usize::try_from(length).ok()).ok_or(ProtocolError::InvalidBulkLength)?;
        let data_end = data_start.checked_add(length).ok_or(ProtocolError::ReplyTooLarge)?;
        if data_end.checked_add(2).is_none_or(|end| end > self.max_len) {
            return Err(ProtocolError::ReplyTooLarge);
        }
        let Some(terminator) = self.buffer.get(data_end..data_end + 2) else {
            return Ok(None);
        };
        if terminator != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        Ok(Some((self.buffer.get(data_start..data_end).unwrap_or(&[]), data_end + 2)))
    }

    /// The declared element count of an aggregate header, checked against
    /// the limits. `per_entry` is 2 for maps.
    fn count(&self, line: &[u8], start: usize, depth: usize, per_entry: usize) -> Result<usize> {
        if depth >= self.max_depth {
            return Err(ProtocolError::NestingTooDeep);
        }
        let count = parse_i64(line).and_then(|count| usize::try_from(count).ok()).ok_or(ProtocolError::InvalidMultibulkLength)?;
        let smallest =
            count.checked_mul(per_entry).and_then(|values| values.checked_mul(MIN_VALUE_BYTES)).and_then(|bytes| bytes.checked_add(start));
        if smallest.is_none_or(|bytes| bytes > self.max_len) {
            return Err(ProtocolError::ReplyTooLarge);
        }
        Ok(count)
    }

    /// Whether `count` values of `per_entry` parts could already be in the
    /// buffer; if not, the caller waits without parsing any of them.
    fn may_be_complete(&self, start: usize, count: usize, per_entry: usize) -> bool {
        let available = self.buffer.len().saturating_sub(start);
        count.saturating_mul(per_entry).saturating_mul(MIN_VALUE_BYTES) <= available
    }

    fn elements(&self, line: &[u8], start: usize, depth: usize, per_entry: usize) -> Parsed<Vec<Value>> {
        let count = self.count(line, start, depth, per_entry)?;
        if !self.may_be_complete(start, count, per_entry) {
            return Ok(None);
        }
        let mut elements = Vec::with_capacity(count);
        let mut position = start;
        for _ in 0..count {
            let Some((element, end)) = self.value(position, depth + 1)? else {
                return Ok(None);
            };
            elements.push(element);
            position = end;
        }
        Ok(Some((elements, position)))
    }

    fn pairs(&self, line: &[u8], start: usize, depth: usize) -> Parsed<Vec<(Value, Value)>> {
        let count = self.count(line, start, depth, 2)?;
        if !self.may_be_complete(start, count, 2) {
            return Ok(None);
        }
        let mut pairs = Vec::with_capacity(count);
        let mut position = start;
        for _ in 0..count {
            let Some((key, end)) = self.value(position, depth + 1)? else {
                return Ok(None);
            };
            let Some((value, end)) = self.value(end, depth + 1)? else {
                return Ok(None);
            };
            pairs.push((key, value));
            position = end;
        }
        Ok(Some((pairs, position)))
    }
}

impl Value {
    /// What a client receives when the server encodes `reply` for
    /// `version`: RESP3 types degraded for RESP2 and `\r`/`\n` in simple
    /// strings and errors turned into spaces, exactly as the encoder does.
    pub fn from_reply(reply: &Reply, version: ProtocolVersion) -> Value {
        let resp3 = version == ProtocolVersion::Resp3;
        let all = |elements: &[Reply]| elements.iter().map(|element| Value::from_reply(element, version)).collect();
        match reply {
            Reply::Simple(text) => Value::Simple(without_newlines(text.as_bytes())),
            Reply::Error(text) => Value::Error(without_newlines(text.as_bytes())),
            Reply::Integer(value) => Value::Integer(*value),
            Reply::Bulk(bytes) => Value::Bulk(bytes.clone()),
            Reply::Null => Value::Null,
            Reply::NullArray if resp3 => Value::Null,
            Reply::NullArray => Value::NullArray,
            Reply::Array(elements) => Value::Array(all(elements)),
            Reply::Set(elements) if resp3 => Value::Set(all(elements)),
            Reply::Push(elements) if resp3 => Value::Push(all(elements)),
            Reply::Set(elements) | Reply::Push(elements) => Value::Array(all(elements)),
            Reply::Map(pairs) if resp3 => {
                Value::Map(pairs.iter().map(|(key, value)| (Value::from_reply(key, version), Value::from_reply(value, version))).collect())
            }
            Reply::Map(pairs) => Value::Array(
                pairs.iter().flat_map(|(key, value)| [Value::from_reply(key, version), Value::from_reply(value, version)]).collect(),
            ),
            Reply::Double(value) if resp3 => Value::Double(*value),
            Reply::Double(value) => Value::Bulk(format_double(*value).as_bytes().to_vec()),
            Reply::Boolean(value) if resp3 => Value::Boolean(*value),
            Reply::Boolean(value) => Value::Integer(i64::from(*value)),
            Reply::Verbatim { format, text } if resp3 => Value::Verbatim { format: *format, text: text.as_bytes().to_vec() },
            Reply::Verbatim { text, .. } => Value::Bulk(text.as_bytes().to_vec()),
            Reply::BigNumber(digits) if resp3 => Value::BigNumber(without_newlines(digits.as_bytes())),
            Reply::BigNumber(digits) => Value::Bulk(digits.as_bytes().to_vec()),
        }
    }

    /// The bytes of a string-like value: simple, bulk, verbatim text, big
    /// number or error text.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(bytes) | Value::Error(bytes) | Value::Bulk(bytes) | Value::BigNumber(bytes) => Some(bytes),
            Value::Verbatim { text, .. } => Some(text),
            Value::Attributed { value, .. } => value.as_bytes(),
            _ => None,
        }
    }

    /// The integer of an `:` reply.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Value::Integer(value) => Some(*value),
            Value::Attributed { value, .. } => value.as_integer(),
            _ => None,
        }
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        match self {
            Value::Error(_) => true,
            Value::Attributed { value, .. } => value.is_error(),
            _ => false,
        }
    }

    /// Whether this is a null (`$-1`, `*-1` or `_`).
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null | Value::NullArray)
    }
}

fn without_newlines(text: &[u8]) -> Vec<u8> {
    text.iter().map(|&byte| if byte == b'\r' || byte == b'\n' { b' ' } else { byte }).collect()
}
