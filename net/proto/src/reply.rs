//! Server side: replies and their RESP2/RESP3 encoding, with the RESP3
//! types degraded for RESP2 clients exactly as Redis degrades them.

use alloc::string::String;
use alloc::vec::Vec;

use rtedge_engine::value::{format_double, write_i64};

/// The protocol a connection speaks; `HELLO 3` switches to RESP3.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// RESP2, what every connection starts with.
    #[default]
    Resp2,
    /// RESP3.
    Resp3,
}

impl ProtocolVersion {
    /// The version for `HELLO <number>`: 2 or 3.
    pub fn from_number(number: i64) -> Option<ProtocolVersion> {
        match number {
            2 => Some(Self::Resp2),
            3 => Some(Self::Resp3),
            _ => None,
        }
    }

    /// 2 or 3, as `HELLO` reports it.
    pub fn number(self) -> i64 {
        match self {
            Self::Resp2 => 2,
            Self::Resp3 => 3,
        }
    }
}

/// A reply the server sends. Built by trusted server code; encoding never
/// fails.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+text`. `\r` and `\n` are sent as spaces.
    Simple(String),
    /// `-CODE message`, the full text with its code, e.g.
    /// `ERR unknown command 'foo', with args beginning with: `.
    /// `\r` and `\n` are sent as spaces.
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$len` and bytes.
    Bulk(Vec<u8>),
    /// The null bulk string: `$-1` in RESP2, `_` in RESP3.
    Null,
    /// `*n` and the elements.
    Array(Vec<Reply>),
    /// The null array: `*-1` in RESP2, `_` in RESP3.
    NullArray,
    /// RESP3 `%`; RESP2: a flat array key, value, key, value...
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `~`; RESP2: an array.
    Set(Vec<Reply>),
    /// RESP3 `,`; RESP2: a bulk string. Formatted as Redis does (see
    /// [`format_double`]).
    Double(f64),
    /// RESP3 `#t`/`#f`; RESP2: `:1`/`:0`.
    Boolean(bool),
    /// RESP3 `=` with a three-byte format such as `txt`; RESP2: a bulk
    /// string of the text alone.
    Verbatim {
        /// `txt` or `mkd`.
        format: [u8; 3],
        /// The text.
        text: String,
    },
    /// RESP3 `>` (out-of-band, e.g. pub/sub messages); RESP2: an array.
    Push(Vec<Reply>),
    /// RESP3 `(`; RESP2: a bulk string. `\r` and `\n` are sent as spaces.
    BigNumber(String),
}

/// Appends `reply` encoded for `version` to `out`.
pub fn encode(reply: &Reply, version: ProtocolVersion, out: &mut Vec<u8>) {
    write_reply(reply, version, out);
}

impl Reply {
    /// Appends this reply encoded for `version` to `out`.
    pub fn encode(&self, version: ProtocolVersion, out: &mut Vec<u8>) {
        write_reply(self, version, out);
    }

    /// This reply encoded for `version`, in a new buffer.
    pub fn to_bytes(&self, version: ProtocolVersion) -> Vec<u8> {
        let mut out = Vec::new();
        write_reply(self, version, &mut out);
        out
    }

    /// The exact number of bytes [`encode`](Reply::encode) appends, so the
    /// server can check its output-buffer limit before encoding.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let mut counter = Counter(0);
        write_reply(self, version, &mut counter);
        counter.0
    }

    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    /// `+PONG`.
    pub fn pong() -> Reply {
        Reply::Simple("PONG".into())
    }

    /// A simple string.
    pub fn simple(text: &str) -> Reply {
        Reply::Simple(text.into())
    }

    /// An error with an explicit code: `err("ERR", "no such key")` sends
    /// `-ERR no such key`.
    pub fn err(code: &str, message: &str) -> Reply {
        let mut text = String::with_capacity(code.len() + 1 + message.len());
        text.push_str(code);
        text.push(' ');
        text.push_str(message);
        Reply::Error(text)
    }

    /// An error from its full text, code included.
    pub fn error(text: &str) -> Reply {
        Reply::Error(text.into())
    }

    /// A bulk string from text.
    pub fn bulk_str(text: &str) -> Reply {
        Reply::Bulk(text.as_bytes().into())
    }

    /// A bulk string from bytes.
    pub fn bulk(bytes: &[u8]) -> Reply {
        Reply::Bulk(bytes.into())
    }

    /// `ERR wrong number of arguments for 'get' command`; the name is
    /// lower-cased as Redis prints its command names.
    pub fn wrong_arity(command: &str) -> Reply {
        let mut text = String::from("ERR wrong number of arguments for '");
        text.push_str(&command.to_ascii_lowercase());
        text.push_str("' command");
        Reply::Error(text)
    }

    /// Redis 7's text for an unknown command:
    /// `ERR unknown command 'foo', with args beginning with: 'a' 'b' `.
    /// `args` are the arguments after the name. As Redis: the name is cut
    /// to 128 bytes, arguments are quoted until the list reaches 128 bytes
    /// (the last one cut to fit), each is cut at a NUL, and bytes that are
    /// not UTF-8 become U+FFFD.
    pub fn unknown_command<A: AsRef<[u8]>>(name: &[u8], args: &[A]) -> Reply {
        const LIMIT: usize = 128;
        let mut listed: Vec<u8> = Vec::new();
        for arg in args {
            if listed.len() >= LIMIT {
                break;
            }
            let room = LIMIT - listed.len();
            let arg = c_string(arg.as_ref());
            listed.push(b'\'');
            listed.extend_from_slice(arg.get(..room.min(arg.len())).unwrap_or(arg));
            listed.extend_from_slice(b"' ");
        }
        let name = c_string(name);
        let mut text: Vec<u8> = Vec::from(&b"ERR unknown command '"[..]);
        text.extend_from_slice(name.get(..LIMIT.min(name.len())).unwrap_or(name));
        text.extend_from_slice(b"', with args beginning with: ");
        text.extend_from_slice(&listed);
        // As Redis: user bytes must not end the error line early.
        for byte in &mut text {
            if *byte == b'\r' || *byte == b'\n' {
                *byte = b' ';
            }
        }
        Reply::Error(String::from_utf8_lossy(&text).into_owned())
    }

    /// Redis's text for an unknown subcommand of a container command:
    /// `ERR unknown subcommand 'foo'. Try CONFIG HELP.`
    pub fn unknown_subcommand(command: &str, subcommand: &[u8]) -> Reply {
        let subcommand = c_string(subcommand);
        let subcommand = subcommand.get(..128.min(subcommand.len())).unwrap_or(subcommand);
        let mut text = String::from("ERR unknown subcommand '");
        text.push_str(&String::from_utf8_lossy(subcommand));
        text.push_str("'. Try ");
        text.push_str(&command.to_ascii_uppercase());
        text.push_str(" HELP.");
        Reply::Error(text)
    }

    /// `NOAUTH Authentication required.`, Redis's answer to any command but
    /// the few allowed before `AUTH`.
    pub fn noauth() -> Reply {
        Reply::error("NOAUTH Authentication required.")
    }

    /// `WRONGPASS invalid username-password pair or user is disabled.`
    pub fn wrongpass() -> Reply {
        Reply::error("WRONGPASS invalid username-password pair or user is disabled.")
    }

    /// The refusal of a non-pub/sub command on a RESP2 connection in
    /// subscribed mode (Redis's text, less the commands we do not have):
    /// `ERR Can't execute 'get': only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING /
    /// QUIT are allowed in this context`.
    pub fn not_allowed_while_subscribed(command: &str) -> Reply {
        let mut text = String::from("ERR Can't execute '");
        text.push_str(&command.to_ascii_lowercase());
        text.push_str("': only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT are allowed in this context");
        Reply::Error(text)
    }

    /// A pub/sub confirmation, e.g. `subscribe`, `channel`, 1: a push in
    /// RESP3, an array in RESP2, as Redis sends it.
    pub fn subscription(kind: &str, channel: &[u8], count: i64) -> Reply {
        Reply::Push(alloc::vec![Reply::bulk_str(kind), Reply::bulk(channel), Reply::Integer(count)])
    }

    /// A published message: `message`, channel, payload.
    pub fn message(channel: &[u8], payload: &[u8]) -> Reply {
        Reply::Push(alloc::vec![Reply::bulk_str("message"), Reply::bulk(channel), Reply::bulk(payload)])
    }

    /// A message matched by a pattern: `pmessage`, pattern, channel,
    /// payload.
    pub fn pattern_message(pattern: &[u8], channel: &[u8], payload: &[u8]) -> Reply {
        Reply::Push(alloc::vec![Reply::bulk_str("pmessage"), Reply::bulk(pattern), Reply::bulk(channel), Reply::bulk(payload),])
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

impl From<i64> for Reply {
    fn from(value: i64) -> Reply {
        Reply::Integer(value)
    }
}

impl From<bool> for Reply {
    fn from(value: bool) -> Reply {
        Reply::Boolean(value)
    }
}

/// The part of `bytes` a C `%s` would print: up to the first NUL.
fn c_string(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&byte| byte == 0) {
        Some(nul) => bytes.get(..nul).unwrap_or(bytes),
        None => bytes,
    }
}

/// Where encoded bytes go: a buffer, or a counter for `encoded_len`, so
/// both share one description of the format.
trait Sink {
    fn put(&mut self, bytes: &[u8]);

    /// Puts `text` with `\r` and `\n` turned into spaces.
    fn put_line(&mut self, text: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn put_line(&mut self, text: &[u8]) {
        self.extend(text.iter().map(|&byte| if byte == b'\r' || byte == b'\n' { b' ' } else { byte }));
    }
}

struct Counter(usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len());
    }

    fn put_line(&mut self, text: &[u8]) {
        self.put(text);
    }
}

fn put_integer(sink: &mut impl Sink, value: i64) {
    write_i64(value, |piece| sink.put(piece));
}

fn put_header(sink: &mut impl Sink, kind: u8, length: usize) {
    sink.put(&[kind]);
    put_integer(sink, i64::try_from(length).unwrap_or(i64::MAX));
    sink.put(b"\r\n");
}

fn put_bulk(sink: &mut impl Sink, bytes: &[u8]) {
    put_header(sink, b'$', bytes.len());
    sink.put(bytes);
    sink.put(b"\r\n");
}

fn put_line_reply(sink: &mut impl Sink, kind: u8, text: &[u8]) {
    sink.put(&[kind]);
    sink.put_line(text);
    sink.put(b"\r\n");
}

fn write_reply(reply: &Reply, version: ProtocolVersion, sink: &mut impl Sink) {
    let resp3 = version == ProtocolVersion::Resp3;
    match reply {
        Reply::Simple(text) => put_line_reply(sink, b'+', text.as_bytes()),
        Reply::Error(text) => put_line_reply(sink, b'-', text.as_bytes()),
        Reply::Integer(value) => {
            sink.put(b":");
            put_integer(sink, *value);
            sink.put(b"\r\n");
        }
        Reply::Bulk(bytes) => put_bulk(sink, bytes),
        Reply::Null if resp3 => sink.put(b"_\r\n"),
        Reply::Null => sink.put(b"$-1\r\n"),
        Reply::NullArray if resp3 => sink.put(b"_\r\n"),
        Reply::NullArray => sink.put(b"*-1\r\n"),
        Reply::Array(elements) => write_aggregate(sink, b'*', elements, version),
        Reply::Set(elements) => write_aggregate(sink, if resp3 { b'~' } else { b'*' }, elements, version),
        Reply::Push(elements) => write_aggregate(sink, if resp3 { b'>' } else { b'*' }, elements, version),
        Reply::Map(pairs) => {
            if resp3 {
                put_header(sink, b'%', pairs.len());
            } else {
                put_header(sink, b'*', pairs.len().saturating_mul(2));
            }
            for (key, value) in pairs {
                write_reply(key, version, sink);
                write_reply(value, version, sink);
            }
        }
        Reply::Double(value) => {
            let text = format_double(*value);
            if resp3 {
                put_line_reply(sink, b',', text.as_bytes());
            } else {
                put_bulk(sink, text.as_bytes());
            }
        }
        Reply::Boolean(value) if resp3 => sink.put(if *value { b"#t\r\n" } else { b"#f\r\n" }),
        Reply::Boolean(value) => sink.put(if *value { b":1\r\n" } else { b":0\r\n" }),
        Reply::Verbatim { format, text } if resp3 => {
            put_header(sink, b'=', text.len().saturating_add(4));
            sink.put(format);
            sink.put(b":");
            sink.put(text.as_bytes());
            sink.put(b"\r\n");
        }
        Reply::Verbatim { text, .. } => put_bulk(sink, text.as_bytes()),
        Reply::BigNumber(digits) if resp3 => put_line_reply(sink, b'(', digits.as_bytes()),
        Reply::BigNumber(digits) => put_bulk(sink, digits.as_bytes()),
    }
}

fn write_aggregate(sink: &mut impl Sink, kind: u8, elements: &[Reply], version: ProtocolVersion) {
    put_header(sink, kind, elements.len());
    for element in elements {
        write_reply(element, version, sink);
    }
}
