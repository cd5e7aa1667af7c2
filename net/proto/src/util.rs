//! Small tools shared by the protocol and the server: Redis-compatible glob
//! matching, a constant-time comparison for secrets, strict number parsing
//! and formatting, and the typed scalar values that shared statics hold.
//!
//! They live in `rtedge_engine::value` (the RT kernel holds typed values
//! without the protocol) and are re-exported here whole; this module adds
//! what is RESP about them: their replies ([`ToReply`], `Reply::from`).

pub use rtedge_engine::value::{
    DecimalBuffer, Result, SECRET_WORDS, SHORT_TEXT_CAPACITY, Scalar, ScalarType, ShortText, ValueError, constant_time_eq, format_double,
    glob_match, parse_f64, parse_i64, redact_command_line, write_i64,
};

use crate::reply::Reply;

/// The reply a value gives a client.
pub trait ToReply {
    /// The value as a reply.
    fn to_reply(&self) -> Reply;
}

impl ToReply for ValueError {
    /// The error reply the server sends for this error.
    fn to_reply(&self) -> Reply {
        Reply::Error(self.message().into())
    }
}

impl ToReply for Scalar {
    /// The reply for `GET`: integer, double (a bulk string in RESP2),
    /// boolean (`:1`/`:0` in RESP2) or bulk text.
    fn to_reply(&self) -> Reply {
        match self {
            Self::Integer(value) => Reply::Integer(*value),
            Self::Float(value) => Reply::Double(*value),
            Self::Bool(value) => Reply::Boolean(*value),
            Self::Text(text) => Reply::Bulk(text.as_bytes().into()),
        }
    }
}

impl From<ValueError> for Reply {
    fn from(error: ValueError) -> Reply {
        error.to_reply()
    }
}
