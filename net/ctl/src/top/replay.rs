//! Replies recorded from an appliance, played back as a [`Source`] (tests
//! only). A recording is the RESP values of a session, request then
//! reply, as `rtctl top` sent and received them: `tests/data/top-*.resp`
//! were written by a recording proxy between `rtctl top --once` and a
//! booted appliance (the HELLO exchange, which carries the token, left
//! out).

use std::collections::VecDeque;

use rtedge_proto::Value;

use super::Source;
use crate::convert;
use crate::error::{CtlError, Result};

/// The appliance's replies to one `rtctl top --once` (two samples).
pub const APPLIANCE: &[u8] = include_bytes!("../../tests/data/top-appliance.resp");

/// Recorded exchanges, consumed in order.
pub struct Replay {
    exchanges: VecDeque<(Vec<String>, Value)>,
}

impl Replay {
    /// Reads a recording; panics on a malformed one (a broken fixture).
    pub fn new(recording: &[u8]) -> Replay {
        let mut values = Vec::new();
        let mut rest = recording;
        while !rest.is_empty() {
            let (value, used) = rtedge_proto::parse_value(rest, 32, rest.len()).ok().flatten().expect("a whole RESP value");
            values.push(value);
            rest = &rest[used..];
        }
        assert!(values.len() % 2 == 0, "requests and replies pair up");
        let mut exchanges = VecDeque::new();
        let mut values = values.into_iter();
        while let (Some(request), Some(reply)) = (values.next(), values.next()) {
            let Value::Array(words) = request else {
                panic!("a request is an array: {request:?}");
            };
            let words = words.iter().map(|word| convert::text(word).expect("a request word is text")).collect();
            exchanges.push_back((words, reply));
        }
        Replay { exchanges }
    }
}

impl From<Vec<(&str, Value)>> for Replay {
    /// Exchanges written out in a test: `("LATENCY thread:rt0", reply)`.
    fn from(exchanges: Vec<(&str, Value)>) -> Replay {
        Replay {
            exchanges: exchanges.into_iter().map(|(request, reply)| (request.split(' ').map(str::to_owned).collect(), reply)).collect(),
        }
    }
}

impl Source for Replay {
    fn call(&mut self, args: &[&str]) -> Result<Value> {
        let (request, reply) = self.exchanges.pop_front().ok_or_else(|| CtlError::Protocol(format!("nothing recorded for {args:?}")))?;
        if request != args {
            return Err(CtlError::Protocol(format!("asked {args:?} where the recording asked {request:?}")));
        }
        match reply {
            Value::Error(text) => Err(CtlError::Server(String::from_utf8_lossy(&text).into_owned())),
            other => Ok(other),
        }
    }
}
