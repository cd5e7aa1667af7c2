//! Errors of the RESP wire format, in both directions: requests the server
//! parses ([`crate::request`]) and replies a client parses
//! ([`crate::value`]).

use core::fmt;

use alloc::format;

use crate::reply::Reply;
use crate::util::ShortText;

/// Result of wire parsing.
pub type Result<T> = core::result::Result<T, ProtocolError>;

/// A malformed or oversized frame. The server answers each with
/// `-ERR <message>` and closes the connection, as Redis does; after one of
/// these the stream cannot be resynchronised.
///
/// Messages are Redis's own where Redis has the same check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// `*<count>` is not a number, or above `i32::MAX`. (Client side: a bad
    /// aggregate length.)
    InvalidMultibulkLength,
    /// `$<len>` is not a number, negative, or above the bulk limit.
    InvalidBulkLength,
    /// A multibulk argument does not start with `$`.
    ExpectedDollar {
        /// The byte found instead.
        got: u8,
        /// The formatted message, kept here so [`ProtocolError::message`]
        /// can lend it without allocating.
        message: ShortText,
    },
    /// An inline command has an unterminated quote, or a closing quote not
    /// followed by a space.
    UnbalancedQuotes,
    /// An inline command line is longer than the inline limit.
    TooBigInlineRequest,
    /// No `\r` within the inline limit after `*`.
    TooBigMultibulkCount,
    /// No `\r` within the inline limit after `$`.
    TooBigBulkCount,
    /// More arguments than the argument limit.
    TooManyArguments,
    /// The frame cannot fit in the frame limit.
    RequestTooLarge,
    /// The heap could not hold the request's bytes (the allocation was
    /// refused; the connection fails, nothing else does).
    OutOfMemory,
    /// A `\r` not followed by `\n`, or bulk data not followed by `\r\n`.
    /// (Redis skips these two bytes unchecked; we refuse to guess.)
    MissingCrlf,
    /// Client side: a reply starts with a byte that is no RESP type.
    UnexpectedType {
        /// The byte found.
        got: u8,
        /// The formatted message.
        message: ShortText,
    },
    /// Client side: a bad `:` integer.
    InvalidInteger,
    /// Client side: a bad `,` double.
    InvalidDouble,
    /// Client side: a `#` boolean other than `t` or `f`.
    InvalidBoolean,
    /// Client side: a `_` null with content.
    InvalidNull,
    /// Client side: a bad `(` big number.
    InvalidBigNumber,
    /// Client side: a `=` verbatim string without its `xxx:` format.
    InvalidVerbatim,
    /// Client side: aggregates nested deeper than the caller's limit.
    NestingTooDeep,
    /// Client side: the reply cannot fit in the caller's length limit.
    ReplyTooLarge,
}

impl ProtocolError {
    /// `Protocol error: expected '$', got 'x'`. Bytes that are not printable
    /// ASCII are shown as `?` (Redis prints the raw byte, which may not be
    /// UTF-8 and may be a NUL that cuts its message short).
    pub fn expected_dollar(got: u8) -> ProtocolError {
        ProtocolError::ExpectedDollar { got, message: with_byte("Protocol error: expected '$', got '", got) }
    }

    /// `Protocol error: unexpected reply type 'x'`.
    pub fn unexpected_type(got: u8) -> ProtocolError {
        ProtocolError::UnexpectedType { got, message: with_byte("Protocol error: unexpected reply type '", got) }
    }

    /// The error text without the `ERR ` code.
    pub fn message(&self) -> &str {
        match self {
            Self::InvalidMultibulkLength => "Protocol error: invalid multibulk length",
            Self::InvalidBulkLength => "Protocol error: invalid bulk length",
            Self::ExpectedDollar { message, .. } | Self::UnexpectedType { message, .. } => message.as_str(),
            Self::UnbalancedQuotes => "Protocol error: unbalanced quotes in request",
            Self::TooBigInlineRequest => "Protocol error: too big inline request",
            Self::TooBigMultibulkCount => "Protocol error: too big mbulk count string",
            Self::TooBigBulkCount => "Protocol error: too big bulk count string",
            Self::TooManyArguments => "Protocol error: too many arguments",
            Self::RequestTooLarge => "Protocol error: request too large",
            Self::OutOfMemory => "Protocol error: out of memory",
            Self::MissingCrlf => "Protocol error: expected CRLF",
            Self::InvalidInteger => "Protocol error: invalid integer",
            Self::InvalidDouble => "Protocol error: invalid double",
            Self::InvalidBoolean => "Protocol error: invalid boolean",
            Self::InvalidNull => "Protocol error: invalid null",
            Self::InvalidBigNumber => "Protocol error: invalid big number",
            Self::InvalidVerbatim => "Protocol error: invalid verbatim string",
            Self::NestingTooDeep => "Protocol error: nesting too deep",
            Self::ReplyTooLarge => "Protocol error: reply too large",
        }
    }

    /// Whether the connection must be closed after replying: always, as in
    /// Redis, because the parser has lost its place in the stream.
    pub fn closes_connection(&self) -> bool {
        true
    }

    /// The reply the server sends: `-ERR Protocol error: ...`.
    pub fn to_reply(&self) -> Reply {
        Reply::Error(format!("ERR {}", self.message()))
    }
}

fn with_byte(prefix: &str, byte: u8) -> ShortText {
    let mut text = ShortText::empty();
    let shown = if byte.is_ascii_graphic() || byte == b' ' { byte } else { b'?' };
    let shown = [shown, b'\''];
    // The prefixes are short and the two bytes are ASCII: both fit.
    text.push_str(prefix);
    text.push_str(core::str::from_utf8(&shown).unwrap_or("?'"));
    text
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.message())
    }
}

impl From<ProtocolError> for Reply {
    fn from(error: ProtocolError) -> Reply {
        error.to_reply()
    }
}
