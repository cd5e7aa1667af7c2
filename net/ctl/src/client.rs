//! A small blocking RESP client over `std::net::TcpStream`: `HELLO 3` (RESP2
//! when the server refuses it), `AUTH`, one command at a time, and a
//! stream of pushes for pub/sub. Requests are encoded and replies parsed by
//! `rtedge-proto`.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use rtedge_proto::Value;
use rtedge_proto::request::encode_command;

use crate::error::{CtlError, Result};

/// Deepest reply nesting accepted (tables are two levels, latency three).
const MAX_DEPTH: usize = 32;
/// Largest reply accepted; far above anything the control plane sends.
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct Options {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The token for `AUTH`, if one was found.
    pub token: Option<String>,
    /// Connect, read and write timeout.
    pub timeout: Duration,
}

impl Options {
    /// `host:port` as shown in messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') { format!("[{}]:{}", self.host, self.port) } else { format!("{}:{}", self.host, self.port) }
    }
}

/// One authenticated connection.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    /// Received bytes not yet parsed into a reply.
    buffer: Vec<u8>,
    address: String,
    /// Whether we had a token to authenticate with: a `NOAUTH` without
    /// one means "find a token", with one it is the server's word.
    had_token: bool,
    timeout: Duration,
}

impl Client {
    /// Connects, negotiates RESP3 if the server has it, and authenticates
    /// with the token if there is one.
    pub fn connect(options: &Options) -> Result<Client> {
        let address = options.address();
        let stream = open(&options.host, options.port, options.timeout, &address)?;
        let mut client = Client { stream, buffer: Vec::new(), address, had_token: options.token.is_some(), timeout: options.timeout };
        client.handshake(options.token.as_deref())?;
        Ok(client)
    }

    fn handshake(&mut self, token: Option<&str>) -> Result<()> {
        let hello = match token {
            Some(token) => self.request(&["HELLO", "3", "AUTH", "default", token])?,
            None => self.request(&["HELLO", "3"])?,
        };
        // Any other reply is HELLO's map: RESP3 from here on, and since
        // `parse_value` reads both protocols nothing else changes.
        if let Value::Error(text) = hello {
            let text = String::from_utf8_lossy(&text).into_owned();
            if text.starts_with("WRONGPASS") {
                return Err(CtlError::Server(text));
            }
            // No RESP3 here (an older server, or HELLO refused): stay on
            // RESP2 and authenticate the classic way.
            if let Some(token) = token
                && let Value::Error(text) = self.request(&["AUTH", token])?
            {
                return Err(CtlError::Server(String::from_utf8_lossy(&text).into_owned()));
            }
        }
        Ok(())
    }

    /// `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends one command and returns its reply; an error reply becomes
    /// [`CtlError::Server`] (or [`CtlError::AuthRequired`] for `NOAUTH`
    /// when we had no token).
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value> {
        let reply = self.request(args)?;
        match reply {
            Value::Error(text) => {
                let text = String::from_utf8_lossy(&text).into_owned();
                if text.starts_with("NOAUTH") && !self.had_token { Err(CtlError::AuthRequired) } else { Err(CtlError::Server(text)) }
            }
            other => Ok(other),
        }
    }

    /// Sends one command and returns its reply as it came, errors included.
    /// Out-of-band pushes that arrive first are skipped.
    pub fn request<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value> {
        self.send(args)?;
        loop {
            match self.read_value()? {
                Value::Push(_) => {}
                value => return Ok(value),
            }
        }
    }

    /// Sends one command without waiting for its reply.
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<()> {
        let mut frame = Vec::new();
        encode_command(args, &mut frame);
        self.stream.write_all(&frame).map_err(|error| CtlError::connection(&self.address, &error))
    }

    /// The next reply or push, waiting at most the timeout.
    pub fn read_value(&mut self) -> Result<Value> {
        loop {
            if let Some(value) = self.parse_buffered()? {
                return Ok(value);
            }
            self.fill().map_err(|error| CtlError::connection(&self.address, &error))?;
        }
    }

    /// The next reply or push if one arrives within `wait`; `Ok(None)` if
    /// none did. Used by `watch`, which must notice Ctrl-C between messages.
    pub fn poll_value(&mut self, wait: Duration) -> Result<Option<Value>> {
        if let Some(value) = self.parse_buffered()? {
            return Ok(Some(value));
        }
        self.set_read_timeout(wait)?;
        let filled = self.fill();
        self.set_read_timeout(self.timeout)?;
        match filled {
            Ok(()) => self.parse_buffered(),
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(None),
            Err(error) => Err(CtlError::connection(&self.address, &error)),
        }
    }

    fn set_read_timeout(&self, timeout: Duration) -> Result<()> {
        self.stream.set_read_timeout(Some(nonzero(timeout))).map_err(|error| CtlError::connection(&self.address, &error))
    }

    fn parse_buffered(&mut self) -> Result<Option<Value>> {
        match rtedge_proto::parse_value(&self.buffer, MAX_DEPTH, MAX_REPLY_BYTES)? {
            Some((value, consumed)) => {
                self.buffer.drain(..consumed.min(self.buffer.len()));
                Ok(Some(unattributed(value)))
            }
            None => Ok(None),
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(count) => {
                    self.buffer.extend_from_slice(chunk.get(..count).unwrap_or(&[]));
                    return Ok(());
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }
}

/// RESP3 attributes carry nothing `rtctl` shows: keep the value.
fn unattributed(value: Value) -> Value {
    match value {
        Value::Attributed { value, .. } => unattributed(*value),
        other => other,
    }
}

/// A zero timeout means "block forever" to the socket API; never ask that.
fn nonzero(timeout: Duration) -> Duration {
    timeout.max(Duration::from_millis(1))
}

fn open(host: &str, port: u16, timeout: Duration, address: &str) -> Result<TcpStream> {
    let candidates = (host, port)
        .to_socket_addrs()
        .map_err(|_| CtlError::Connect { address: address.to_owned(), reason: "cannot resolve host".into() })?;
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no address for host");
    for candidate in candidates {
        match TcpStream::connect_timeout(&candidate, nonzero(timeout)) {
            Ok(stream) => {
                let configure = |stream: &TcpStream| -> io::Result<()> {
                    stream.set_read_timeout(Some(nonzero(timeout)))?;
                    stream.set_write_timeout(Some(nonzero(timeout)))?;
                    stream.set_nodelay(true)
                };
                configure(&stream).map_err(|error| CtlError::connect(address, &error))?;
                return Ok(stream);
            }
            Err(error) => last_error = error,
        }
    }
    Err(CtlError::connect(address, &last_error))
}
