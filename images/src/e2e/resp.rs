//! A minimal RESP client for the end-to-end tests: what `redis-cli` cannot
//! do (raw and malformed frames, pipelining, exact RESP3 types), built on
//! the same reply parser as `rtctl` (`rtedge-proto`).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rtedge_proto::{Value, parse_value, request::encode_command};

use super::guest::Target;

pub const TIMEOUT: Duration = Duration::from_secs(15);

pub struct Conn {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Conn {
    pub fn connect(target: &Target) -> Result<Conn> {
        let stream = target.connect(TIMEOUT).with_context(|| format!("cannot connect to {}:{}", target.host(), target.port()))?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buffer: Vec::new() })
    }

    /// Connects and authenticates.
    pub fn authed(target: &Target, token: &str) -> Result<Conn> {
        let mut conn = Conn::connect(target)?;
        expect_ok(&conn.call(&["AUTH", token])?)?;
        Ok(conn)
    }

    pub fn send(&mut self, args: &[&str]) -> Result<()> {
        let mut frame = Vec::new();
        encode_command(args, &mut frame);
        self.send_raw(&frame)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).context("write to the control plane")
    }

    /// One command, its reply (errors come back as `Value::Error`).
    pub fn call(&mut self, args: &[&str]) -> Result<Value> {
        self.send(args)?;
        self.read()
    }

    /// The next reply; fails on EOF or timeout.
    pub fn read(&mut self) -> Result<Value> {
        self.read_or_eof()?.ok_or_else(|| anyhow!("the server closed the connection"))
    }

    /// The next reply, or `None` if the server closed the connection.
    pub fn read_or_eof(&mut self) -> Result<Option<Value>> {
        loop {
            if let Some((value, used)) = parse_value(&self.buffer, 16, 16 << 20).map_err(|e| anyhow!("bad reply: {e:?}"))? {
                self.buffer.drain(..used);
                return Ok(Some(value));
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
                Err(error) if error.kind() == ErrorKind::ConnectionReset => return Ok(None),
                Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    bail!("no reply within {TIMEOUT:?}")
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The next reply if one arrives within `wait`, else `None` (a partial
    /// frame stays buffered for the next read); fails on EOF.
    pub fn read_within(&mut self, wait: Duration) -> Result<Option<Value>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some((value, used)) = parse_value(&self.buffer, 16, 16 << 20).map_err(|e| anyhow!("bad reply: {e:?}"))? {
                self.buffer.drain(..used);
                return Ok(Some(value));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 16384];
            let outcome = self.stream.read(&mut chunk);
            self.stream.set_read_timeout(Some(TIMEOUT))?;
            match outcome {
                Ok(0) => bail!("the server closed the connection"),
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
                Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Whether the server closed the connection (after draining any replies).
    pub fn closed_within(&mut self, wait: Duration) -> Result<bool> {
        self.stream.set_read_timeout(Some(wait))?;
        let result = loop {
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => break Ok(true),
                Ok(_) => continue,
                Err(error) if error.kind() == ErrorKind::ConnectionReset => break Ok(true),
                Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break Ok(false),
                Err(error) => break Err(error.into()),
            }
        };
        self.stream.set_read_timeout(Some(TIMEOUT))?;
        result
    }
}

/// Text of a simple string, bulk string, verbatim string or error.
pub fn text(value: &Value) -> String {
    match value {
        Value::Simple(bytes) | Value::Bulk(bytes) | Value::Error(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::Verbatim { text, .. } => String::from_utf8_lossy(text).into_owned(),
        Value::Integer(n) => n.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Array(items) | Value::Set(items) | Value::Push(items) => items.iter().map(text).collect::<Vec<_>>().join("\n"),
        other => format!("{other:?}"),
    }
}

pub fn expect_ok(value: &Value) -> Result<()> {
    match value {
        Value::Simple(text) if text == b"OK" => Ok(()),
        Value::Error(bytes) => bail!("expected +OK, got -{}", String::from_utf8_lossy(bytes)),
        other => bail!("expected +OK, got {other:?}"),
    }
}

pub fn expect_error(value: &Value, prefix: &str) -> Result<String> {
    match value {
        Value::Error(bytes) => {
            let message = String::from_utf8_lossy(bytes).into_owned();
            if message.starts_with(prefix) { Ok(message) } else { bail!("expected an error starting with `{prefix}`, got `{message}`") }
        }
        other => bail!("expected an error `{prefix}...`, got {other:?}"),
    }
}

pub fn integer(value: &Value) -> Result<i64> {
    match value {
        Value::Integer(n) => Ok(*n),
        Value::Bulk(bytes) | Value::Simple(bytes) => {
            String::from_utf8_lossy(bytes).trim().parse().map_err(|_| anyhow!("expected an integer, got {value:?}"))
        }
        other => bail!("expected an integer, got {other:?}"),
    }
}

/// The elements of an array or set.
pub fn items(value: &Value) -> Result<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        other => bail!("expected an array, got {other:?}"),
    }
}

/// Field `key` of a map, or of a RESP2 flat `key, value, ...` array.
pub fn field<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    match value {
        Value::Map(pairs) => pairs.iter().find(|(k, _)| text(k) == key).map(|(_, v)| v),
        Value::Array(flat) => flat.chunks(2).find(|pair| pair.first().is_some_and(|k| text(k) == key)).and_then(|pair| pair.get(1)),
        _ => None,
    }
}

pub fn field_text(value: &Value, key: &str) -> Result<String> {
    field(value, key).map(text).ok_or_else(|| anyhow!("no field `{key}` in {value:?}"))
}

pub fn field_int(value: &Value, key: &str) -> Result<i64> {
    integer(field(value, key).ok_or_else(|| anyhow!("no field `{key}` in {value:?}"))?)
}

/// `key:value` lines of an INFO reply.
pub fn info_field(info: &str, key: &str) -> Option<String> {
    info.lines().find_map(|line| line.trim_end().strip_prefix(key)?.strip_prefix(':').map(str::to_string))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test scaffolding: a failure is a test failure")]
mod tests {
    use super::*;

    #[test]
    fn fields_of_maps_and_flat_arrays() {
        let map = Value::Map(vec![(Value::Bulk(b"name".to_vec()), Value::Bulk(b"rt0".to_vec()))]);
        let flat = Value::Array(vec![Value::Bulk(b"id".to_vec()), Value::Integer(3), Value::Bulk(b"name".to_vec())]);
        assert_eq!(field_text(&map, "name").unwrap(), "rt0");
        assert_eq!(field_int(&flat, "id").unwrap(), 3);
        assert!(field(&flat, "name").is_none(), "a key without a value is not a field");
    }

    #[test]
    fn info_fields_are_found_by_exact_key() {
        let info = "# Server\r\nuptime_in_seconds:12\r\nuptime:x\r\n";
        assert_eq!(info_field(info, "uptime_in_seconds").as_deref(), Some("12"));
        assert_eq!(info_field(info, "uptime").as_deref(), Some("x"));
        assert_eq!(info_field(info, "missing"), None);
    }
}
