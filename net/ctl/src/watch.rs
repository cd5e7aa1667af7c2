//! `rtctl watch`: subscribe and print each message as it arrives.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rtedge_proto::Value;
use serde_json::Value as Json;

use crate::client::Client;
use crate::convert;
use crate::error::{CtlError, Result};

/// How often a quiet subscription checks for Ctrl-C.
const TICK: Duration = Duration::from_millis(100);

/// A message received on a subscription.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The pattern it matched (`PSUBSCRIBE`).
    pub pattern: Option<String>,
    /// The channel it was published on.
    pub channel: String,
    /// The payload as sent.
    pub payload: String,
}

impl Message {
    /// A `message` or `pmessage` push (RESP3) or array (RESP2); `None` for
    /// anything else (confirmations, pongs).
    pub fn from_value(value: &Value) -> Option<Message> {
        let (Value::Push(parts) | Value::Array(parts)) = value else {
            return None;
        };
        let texts: Vec<String> = parts.iter().map(convert::text).collect::<Option<_>>()?;
        match texts.as_slice() {
            [kind, channel, payload] if kind == "message" => {
                Some(Message { pattern: None, channel: channel.clone(), payload: payload.clone() })
            }
            [kind, pattern, channel, payload] if kind == "pmessage" => {
                Some(Message { pattern: Some(pattern.clone()), channel: channel.clone(), payload: payload.clone() })
            }
            _ => None,
        }
    }

    /// The payload as compact JSON, or as it came if it is not JSON.
    pub fn compact_payload(&self) -> String {
        match serde_json::from_str::<Json>(&self.payload) {
            Ok(json) => json.to_string(),
            Err(_) => self.payload.clone(),
        }
    }

    /// One text line: time, channel, payload.
    pub fn line(&self, time: &str) -> String {
        format!("{time} {} {}", self.channel, self.compact_payload())
    }

    /// One JSON line: time, channel, pattern if any, and the payload as
    /// JSON (or as a string if it is not JSON).
    pub fn json(&self, time: &str) -> Json {
        let mut object = serde_json::Map::new();
        object.insert("time".into(), Json::String(time.to_owned()));
        object.insert("channel".into(), Json::String(self.channel.clone()));
        if let Some(pattern) = &self.pattern {
            object.insert("pattern".into(), Json::String(pattern.clone()));
        }
        let payload = serde_json::from_str::<Json>(&self.payload).unwrap_or_else(|_| Json::String(self.payload.clone()));
        object.insert("message".into(), payload);
        Json::Object(object)
    }
}

/// Whether `channel` is a pattern for `PSUBSCRIBE`.
pub fn is_pattern(channel: &str) -> bool {
    channel.contains(['*', '?', '['])
}

/// Subscribes to `channel` and prints messages until `count` of them
/// arrived, Ctrl-C, or the connection ends.
pub fn watch(client: &mut Client, channel: &str, count: Option<u64>, json: bool, out: &mut dyn Write) -> Result<()> {
    let command = if is_pattern(channel) { "PSUBSCRIBE" } else { "SUBSCRIBE" };
    // The confirmation is a push in RESP3, so it is read as a value, not
    // with `call` (which skips pushes).
    client.send(&[command, channel])?;
    loop {
        match client.read_value()? {
            Value::Error(text) => {
                return Err(CtlError::Server(String::from_utf8_lossy(&text).into_owned()));
            }
            Value::Push(parts) | Value::Array(parts)
                if parts.first().and_then(convert::text).is_some_and(|kind| kind.eq_ignore_ascii_case(command)) =>
            {
                break;
            }
            _ => {}
        }
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    // Without the handler Ctrl-C still ends rtctl, only less politely.
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupted));
    let mut received = 0u64;
    while count.is_none_or(|count| received < count) {
        if interrupted.load(Ordering::Relaxed) {
            break;
        }
        let Some(value) = client.poll_value(TICK)? else {
            continue;
        };
        let Some(message) = Message::from_value(&value) else {
            continue;
        };
        let now = chrono::Local::now();
        let line = if json {
            message.json(&now.to_rfc3339_opts(chrono::SecondsFormat::Millis, false)).to_string()
        } else {
            message.line(&now.format("%H:%M:%S%.3f").to_string())
        };
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()?;
        received += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::Bulk(text.as_bytes().to_vec())
    }

    #[test]
    fn messages_and_pattern_messages_are_recognised_in_both_protocols() {
        let resp3 = Value::Push(vec![bulk("message"), bulk("events"), bulk("{\"t\": 1, \"kind\": \"x\"}")]);
        let message = Message::from_value(&resp3);
        assert_eq!(
            message.as_ref().map(|message| message.line("12:00:00.000")),
            Some("12:00:00.000 events {\"t\":1,\"kind\":\"x\"}".to_owned())
        );
        let resp2 = Value::Array(vec![bulk("pmessage"), bulk("latency.*"), bulk("latency.rt0"), bulk("not json")]);
        let message = Message::from_value(&resp2);
        assert_eq!(
            message.map(|message| message.json("T").to_string()),
            Some(r#"{"time":"T","channel":"latency.rt0","pattern":"latency.*","message":"not json"}"#.to_owned())
        );
        let confirmation = Value::Push(vec![bulk("subscribe"), bulk("events"), Value::Integer(1)]);
        assert_eq!(Message::from_value(&confirmation), None);
    }

    #[test]
    fn glob_characters_select_psubscribe() {
        assert!(is_pattern("latency.*"));
        assert!(is_pattern("rt?"));
        assert!(is_pattern("ev[ae]nts"));
        assert!(!is_pattern("threads.exit"));
    }
}
