//! A minimal HTTP/1.1 server for `GET /metrics` (Prometheus scrapes) on
//! its own TCP port, on the same smoltcp interface as the RESP server. It
//! never blocks, never panics on input and never allocates beyond its
//! bounds; the body comes from the caller (the kernel gathers it outside
//! the network lock), so this half knows nothing of what is measured.
//!
//! One request per connection: every reply carries `Connection: close` and
//! the server closes after it (keep-alive would save a handshake per
//! scrape, but one request per connection makes every connection end in
//! bounded time with no idle state to police; Prometheus reconnects at
//! each scrape without complaint).
//!
//! Routes: `GET /metrics` (query string ignored) is `200` with the body
//! and `Content-Type: text/plain; version=0.0.4`; `HEAD /metrics` the same
//! without the body; another path is `404`; another method `405` (with
//! `Allow: GET, HEAD`); a request line that is not `METHOD SP target SP
//! HTTP/1.x` is `400`; a head (request line and headers) longer than
//! [`HttpConfig::max_request_bytes`] is `431`; a head not complete within
//! [`HttpConfig::request_deadline_ms`] of the accept is `408`. Request
//! bodies are never read (bytes after the head are discarded).
//!
//! Bounds (the door cannot be jammed): [`HttpConfig::max_connections`]
//! sockets listen; while all are busy a further client is reset by TCP.
//! Each slot ends in bounded time whatever the peer does: the request
//! deadline, then [`HttpConfig::reply_deadline_ms`] for the body to be
//! provided and the reply to leave (a peer that never reads is reset at
//! that bound), then [`HttpConfig::close_linger_ms`] for the close.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::AnySocket;
use smoltcp::socket::tcp;

use crate::metrics::CONTENT_TYPE;

/// Limits of the metrics server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// The TCP port (never 0 here: 0 means "no metrics server" to the
    /// caller, who then builds none).
    pub port: u16,
    /// Listening sockets, hence connections at once.
    pub max_connections: usize,
    /// The longest request head (request line and headers, with the blank
    /// line) accepted; a longer one gets `431`.
    pub max_request_bytes: usize,
    /// From the accept to a complete head; then `408`.
    pub request_deadline_ms: u64,
    /// From a complete head to the last reply byte handed to TCP and
    /// acknowledged room for it; then the connection is reset.
    pub reply_deadline_ms: u64,
    /// The largest body served; a larger one gets `500`.
    pub max_body_bytes: usize,
    /// From our close (FIN) to the socket's end; then it is reset.
    pub close_linger_ms: u64,
    pub socket_rx_bytes: usize,
    pub socket_tx_bytes: usize,
}

impl HttpConfig {
    /// 4 connections, 8 KiB heads, 5 s to send a head, 10 s to take the
    /// reply, 1 MiB bodies.
    pub const DEFAULT: HttpConfig = HttpConfig {
        port: 9100,
        max_connections: 4,
        max_request_bytes: 8 * 1024,
        request_deadline_ms: 5_000,
        reply_deadline_ms: 10_000,
        max_body_bytes: 1024 * 1024,
        close_linger_ms: 2_000,
        socket_rx_bytes: 4 * 1024,
        socket_tx_bytes: 16 * 1024,
    };

    /// Checks that the limits can work at all.
    pub fn validate(&self) -> Result<(), HttpError> {
        let problem = if self.port == 0 {
            Some("metrics port 0")
        } else if self.max_connections == 0 || self.max_connections > 64 {
            Some("metrics max_connections must be 1..=64")
        } else if self.max_request_bytes < 64 {
            Some("metrics max_request_bytes must be at least 64")
        } else if self.socket_rx_bytes < 64 || self.socket_tx_bytes < 256 {
            Some("metrics socket buffers too small")
        } else if self.request_deadline_ms == 0 || self.reply_deadline_ms == 0 {
            Some("metrics deadlines must be positive")
        } else {
            None
        };
        problem.map_or(Ok(()), |problem| Err(HttpError::Config(problem)))
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why an [`HttpServer`] could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    Config(&'static str),
    /// A fresh socket refused to listen.
    Listen,
}

impl fmt::Display for HttpError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(problem) => formatter.write_str(problem),
            Self::Listen => formatter.write_str("metrics: cannot listen on the port"),
        }
    }
}

/// Counters of the metrics server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpStats {
    pub accepted: u64,
    /// Replies by status.
    pub ok: u64,
    pub bad_request: u64,
    pub not_found: u64,
    pub method_not_allowed: u64,
    pub request_timeout: u64,
    pub too_large: u64,
    pub server_error: u64,
    pub unavailable: u64,
    /// Connections reset because the reply did not leave in time.
    pub reply_timeouts: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl HttpStats {
    /// `(status code, replies)` for every status this server sends.
    pub fn by_status(&self) -> [(u16, u64); 8] {
        [
            (200, self.ok),
            (400, self.bad_request),
            (404, self.not_found),
            (405, self.method_not_allowed),
            (408, self.request_timeout),
            (431, self.too_large),
            (500, self.server_error),
            (503, self.unavailable),
        ]
    }
}

/// What a complete head asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (`head_only`: `HEAD /metrics`).
    Metrics {
        head_only: bool,
    },
    NotFound {
        head_only: bool,
    },
    MethodNotAllowed,
    BadRequest,
}

/// The head parser's verdict on the bytes so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// No blank line yet.
    Incomplete,
    Complete(Route),
}

/// Parses a request head (only the request line matters; headers are
/// skipped). Total: any bytes give a verdict.
pub fn parse_head(head: &[u8]) -> Parsed {
    if find_head_end(head).is_none() {
        // A request line that is already wrong needs no headers to judge.
        return match head.iter().position(|&byte| byte == b'\n') {
            Some(end) if route(head.get(..end).unwrap_or_default()) == Route::BadRequest => Parsed::Complete(Route::BadRequest),
            _ => Parsed::Incomplete,
        };
    }
    let line_end = head.iter().position(|&byte| byte == b'\n').unwrap_or(head.len());
    Parsed::Complete(route(head.get(..line_end).unwrap_or_default()))
}

/// Where the head ends (after `\r\n\r\n` or `\n\n`), if it does.
fn find_head_end(head: &[u8]) -> Option<usize> {
    let crlf = head.windows(4).position(|window| window == b"\r\n\r\n").map(|at| at + 4);
    let lf = head.windows(2).position(|window| window == b"\n\n").map(|at| at + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn route(line: &[u8]) -> Route {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&byte| byte == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Route::BadRequest;
    };
    let token =
        |bytes: &[u8]| !bytes.is_empty() && bytes.iter().all(|&byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte));
    let visible = |bytes: &[u8]| !bytes.is_empty() && bytes.iter().all(|&byte| (0x21..0x7f).contains(&byte));
    if !token(method) || !visible(target) || !matches!(version, b"HTTP/1.0" | b"HTTP/1.1") {
        return Route::BadRequest;
    }
    let head_only = match method {
        b"GET" => false,
        b"HEAD" => true,
        _ => return Route::MethodNotAllowed,
    };
    let path = target.split(|&byte| byte == b'?').next().unwrap_or_default();
    if !path.starts_with(b"/") && !path.starts_with(b"http://") {
        return Route::BadRequest;
    }
    // The absolute form (`http://host/metrics`) names the same path.
    let path = match path.strip_prefix(b"http://") {
        Some(rest) => rest.iter().position(|&byte| byte == b'/').and_then(|at| rest.get(at..)).unwrap_or(b"/"),
        None => path,
    };
    if path == b"/metrics" { Route::Metrics { head_only } } else { Route::NotFound { head_only } }
}

enum State {
    Listening,
    Reading {
        head: Vec<u8>,
        deadline_ms: u64,
    },
    /// A `/metrics` request waits for the caller's body.
    Waiting {
        head_only: bool,
        deadline_ms: u64,
    },
    Writing {
        output: Vec<u8>,
        sent: usize,
        deadline_ms: u64,
    },
    Closing {
        deadline_ms: u64,
    },
    Aborting {
        deadline_ms: u64,
    },
}

struct Slot {
    handle: SocketHandle,
    state: State,
}

/// The metrics server; see the module doc.
pub struct HttpServer {
    config: HttpConfig,
    slots: Vec<Slot>,
    stats: HttpStats,
}

impl fmt::Debug for HttpServer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("HttpServer").field("config", &self.config).field("stats", &self.stats).finish()
    }
}

impl HttpServer {
    /// Validates `config` and adds `max_connections` listening sockets to
    /// `sockets`. Pass the same set to every [`HttpServer::poll`].
    pub fn new(config: HttpConfig, sockets: &mut SocketSet<'_>) -> Result<HttpServer, HttpError> {
        config.validate()?;
        let mut slots = Vec::with_capacity(config.max_connections);
        for _ in 0..config.max_connections {
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0u8; config.socket_rx_bytes]),
                tcp::SocketBuffer::new(vec![0u8; config.socket_tx_bytes]),
            );
            socket.set_nagle_enabled(false);
            socket.listen(config.port).map_err(|_| HttpError::Listen)?;
            slots.push(Slot { handle: sockets.add(socket), state: State::Listening });
        }
        Ok(HttpServer { config, slots, stats: HttpStats::default() })
    }

    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    pub fn stats(&self) -> HttpStats {
        self.stats
    }

    /// Connections that are not listening (reading, waiting, replying or
    /// closing).
    pub fn busy(&self) -> usize {
        self.slots.iter().filter(|slot| !matches!(slot.state, State::Listening)).count()
    }

    /// Whether a `/metrics` request waits for [`HttpServer::provide_body`].
    pub fn wants_body(&self) -> bool {
        self.slots.iter().any(|slot| matches!(slot.state, State::Waiting { .. }))
    }

    /// Services every slot: accepts, reads heads, answers what needs no
    /// body, writes replies, applies the deadlines, finishes closes. Call
    /// it after `Interface::poll` and poll the interface again after it.
    pub fn poll(&mut self, now_ms: u64, sockets: &mut SocketSet<'_>) {
        for slot in &mut self.slots {
            let Some(socket) =
                sockets.iter_mut().find(|(handle, _)| *handle == slot.handle).and_then(|(_, socket)| tcp::Socket::downcast_mut(socket))
            else {
                continue;
            };
            poll_slot(&mut slot.state, socket, now_ms, &self.config, &mut self.stats);
        }
    }

    /// Answers every waiting `/metrics` request with `body` (a `500` if it
    /// exceeds [`HttpConfig::max_body_bytes`]) and starts writing.
    pub fn provide_body(&mut self, now_ms: u64, sockets: &mut SocketSet<'_>, body: &[u8]) {
        for slot in &mut self.slots {
            let State::Waiting { head_only, deadline_ms } = slot.state else { continue };
            let output = if body.len() > self.config.max_body_bytes {
                self.stats.server_error = self.stats.server_error.saturating_add(1);
                response(500, "Internal Server Error", "text/plain", b"metrics text too large\n", false, &[])
            } else {
                self.stats.ok = self.stats.ok.saturating_add(1);
                response(200, "OK", CONTENT_TYPE, body, head_only, &[])
            };
            slot.state = State::Writing { output, sent: 0, deadline_ms };
        }
        self.poll(now_ms, sockets);
    }

    /// Milliseconds until the earliest deadline of a busy slot.
    pub fn next_timeout(&self, now_ms: u64) -> Option<u64> {
        self.slots
            .iter()
            .filter_map(|slot| match slot.state {
                State::Listening => None,
                State::Reading { deadline_ms, .. }
                | State::Waiting { deadline_ms, .. }
                | State::Writing { deadline_ms, .. }
                | State::Closing { deadline_ms }
                | State::Aborting { deadline_ms } => Some(deadline_ms.saturating_sub(now_ms)),
            })
            .min()
    }
}

fn poll_slot(state: &mut State, socket: &mut tcp::Socket<'_>, now_ms: u64, config: &HttpConfig, stats: &mut HttpStats) {
    // Each transition moves forward; the bound guards against a socket
    // that changes under us.
    for _ in 0..5 {
        let next = match state {
            State::Listening => {
                if socket.is_active() {
                    stats.accepted = stats.accepted.saturating_add(1);
                    Some(State::Reading { head: Vec::new(), deadline_ms: now_ms.saturating_add(config.request_deadline_ms) })
                } else if !socket.is_listening() {
                    Some(relisten(socket, now_ms, config))
                } else {
                    None
                }
            }
            State::Reading { head, deadline_ms } => poll_reading(head, *deadline_ms, socket, now_ms, config, stats),
            State::Waiting { deadline_ms, .. } => {
                discard_input(socket, stats);
                if !socket.is_active() || !socket.may_send() {
                    socket.abort();
                    Some(State::Aborting { deadline_ms: now_ms.saturating_add(config.close_linger_ms) })
                } else if now_ms >= *deadline_ms {
                    stats.unavailable = stats.unavailable.saturating_add(1);
                    let output = response(503, "Service Unavailable", "text/plain", b"metrics not gathered in time\n", false, &[]);
                    Some(State::Writing { output, sent: 0, deadline_ms: now_ms.saturating_add(config.reply_deadline_ms) })
                } else {
                    None
                }
            }
            State::Writing { output, sent, deadline_ms } => {
                discard_input(socket, stats);
                if !socket.is_active() || !socket.may_send() {
                    socket.abort();
                    Some(State::Aborting { deadline_ms: now_ms.saturating_add(config.close_linger_ms) })
                } else {
                    while *sent < output.len() && socket.can_send() {
                        match socket.send_slice(output.get(*sent..).unwrap_or_default()) {
                            Ok(count) if count > 0 => {
                                *sent += count;
                                stats.bytes_out = stats.bytes_out.saturating_add(count as u64);
                            }
                            _ => break,
                        }
                    }
                    if *sent >= output.len() {
                        socket.close();
                        Some(State::Closing { deadline_ms: now_ms.saturating_add(config.close_linger_ms) })
                    } else if now_ms >= *deadline_ms {
                        stats.reply_timeouts = stats.reply_timeouts.saturating_add(1);
                        socket.abort();
                        Some(State::Aborting { deadline_ms: now_ms.saturating_add(config.close_linger_ms) })
                    } else {
                        None
                    }
                }
            }
            State::Closing { deadline_ms } => {
                if !socket.is_active() {
                    Some(relisten(socket, now_ms, config))
                } else {
                    discard_input(socket, stats);
                    (now_ms >= *deadline_ms).then(|| {
                        socket.abort();
                        State::Aborting { deadline_ms: now_ms.saturating_add(config.close_linger_ms) }
                    })
                }
            }
            State::Aborting { deadline_ms } => {
                let reset_sent = socket.state() == tcp::State::Closed && socket.remote_endpoint().is_none();
                (socket.is_listening() || reset_sent || now_ms >= *deadline_ms).then(|| relisten(socket, now_ms, config))
            }
        };
        match next {
            Some(next) => *state = next,
            None => return,
        }
    }
}

fn poll_reading(
    head: &mut Vec<u8>,
    deadline_ms: u64,
    socket: &mut tcp::Socket<'_>,
    now_ms: u64,
    config: &HttpConfig,
    stats: &mut HttpStats,
) -> Option<State> {
    if !socket.is_active() {
        return Some(relisten(socket, now_ms, config));
    }
    // The receive ring wraps at most once.
    for _ in 0..2 {
        let room = config.max_request_bytes.saturating_sub(head.len());
        if room == 0 || !socket.can_recv() {
            break;
        }
        let received = socket.recv(|data| {
            let taken = data.len().min(room);
            head.extend_from_slice(data.get(..taken).unwrap_or_default());
            (taken, taken)
        });
        match received {
            Ok(taken) if taken > 0 => stats.bytes_in = stats.bytes_in.saturating_add(taken as u64),
            _ => break,
        }
    }
    let reply_deadline = now_ms.saturating_add(config.reply_deadline_ms);
    let (status, reason, message): (u16, &str, &[u8]) = match parse_head(head) {
        Parsed::Complete(Route::Metrics { head_only }) => {
            return Some(State::Waiting { head_only, deadline_ms: reply_deadline });
        }
        Parsed::Complete(Route::NotFound { head_only }) => {
            stats.not_found = stats.not_found.saturating_add(1);
            let output = response(404, "Not Found", "text/plain", b"not found; try /metrics\n", head_only, &[]);
            return Some(State::Writing { output, sent: 0, deadline_ms: reply_deadline });
        }
        Parsed::Complete(Route::MethodNotAllowed) => {
            stats.method_not_allowed = stats.method_not_allowed.saturating_add(1);
            (405, "Method Not Allowed", b"only GET and HEAD\n")
        }
        Parsed::Complete(Route::BadRequest) => {
            stats.bad_request = stats.bad_request.saturating_add(1);
            (400, "Bad Request", b"bad request line\n")
        }
        Parsed::Incomplete if head.len() >= config.max_request_bytes => {
            stats.too_large = stats.too_large.saturating_add(1);
            (431, "Request Header Fields Too Large", b"request head too large\n")
        }
        Parsed::Incomplete if now_ms >= deadline_ms => {
            stats.request_timeout = stats.request_timeout.saturating_add(1);
            (408, "Request Timeout", b"request not complete in time\n")
        }
        Parsed::Incomplete if socket.state() == tcp::State::CloseWait => {
            // The peer closed its side before the head ended.
            stats.bad_request = stats.bad_request.saturating_add(1);
            (400, "Bad Request", b"request ended early\n")
        }
        Parsed::Incomplete => return None,
    };
    let extra: &[(&str, &str)] = if status == 405 { &[("Allow", "GET, HEAD")] } else { &[] };
    let output = response(status, reason, "text/plain", message, false, extra);
    Some(State::Writing { output, sent: 0, deadline_ms: reply_deadline })
}

/// A whole reply with `Connection: close`.
fn response(status: u16, reason: &str, content_type: &str, body: &[u8], head_only: bool, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut head =
        format!("HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (name, value) in extra {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut output = String::into_bytes(head);
    if !head_only {
        output.extend_from_slice(body);
    }
    output
}

fn discard_input(socket: &mut tcp::Socket<'_>, stats: &mut HttpStats) {
    for _ in 0..2 {
        if !socket.can_recv() {
            break;
        }
        if let Ok(count) = socket.recv(|data| (data.len(), data.len())) {
            stats.bytes_in = stats.bytes_in.saturating_add(count as u64);
        }
    }
}

/// Makes a finished socket listen again (or resets it first).
fn relisten(socket: &mut tcp::Socket<'_>, now_ms: u64, config: &HttpConfig) -> State {
    if socket.is_listening() {
        return State::Listening;
    }
    if socket.is_open() {
        socket.abort();
    } else if socket.listen(config.port).is_ok() {
        return State::Listening;
    }
    State::Aborting { deadline_ms: now_ms.saturating_add(config.close_linger_ms) }
}
