//! `rtedge-proto`: the control plane's wire protocol and command model.
//! It parses client requests in RESP (the Redis protocol, multibulk and
//! inline) as Redis does, encodes replies for RESP2 and RESP3 clients,
//! parses replies on the client side (`rtctl`, tests), describes every
//! built-in command, and holds the small tools the server needs (Redis
//! glob matching, constant-time comparison, typed scalar values). It runs
//! inside the kernel (`no_std` + `alloc`) and on the host.
//!
//! It must never panic on any input bytes, and never allocate without a
//! limit the caller set: request parsing is bounded by [`request::Limits`],
//! reply parsing by the depth and length the caller passes, and a header's
//! declared sizes are checked before its bytes arrive.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
// Input reaches almost every line of this crate: make the no-panic rule
// mechanical rather than a matter of review.
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

extern crate alloc;

pub mod command;
pub mod error;
pub mod reply;
pub mod request;
pub mod util;
pub mod value;

pub use command::{CommandFlags, CommandSpec, SyntaxCheck};
pub use error::ProtocolError;
pub use reply::{ProtocolVersion, Reply};
pub use request::{Limits, Request, RequestParser, parse_request};
pub use util::{Scalar, ScalarType, ShortText, ToReply, ValueError};
pub use value::{Value, parse_value};
