//! The network half: TCP sockets on the control port, one request parser
//! and one output queue per connection, limits, timeouts and pub/sub
//! delivery. It never blocks and never executes a command: complete
//! requests leave as [`Job`]s, replies come back as [`Completion`]s.
//!
//! Slots. The server adds `max_connections + 1` TCP sockets to the
//! caller's [`SocketSet`], all listening on the control port. A socket
//! that accepts while fewer than `max_connections` connections are open
//! becomes a connection; otherwise it is the refusal slot: the client gets
//! `-ERR max number of clients reached` and a close, as from Redis (while
//! that refusal is under way a further client is reset by TCP, since no
//! socket is listening). A slot listens again once its socket has closed.
//!
//! Order. A connection has at most one job out at a time; its next request
//! is parsed only after the previous completion arrived, so replies keep
//! request order without sequence numbers. Bytes keep arriving meanwhile
//! into the parser's buffer, bounded by the frame limit, and then into the
//! socket's receive window: a client that pipelines more simply waits.
//!
//! Output. Replies and pub/sub messages queue per connection up to
//! [`Config::output_limit_bytes`]; the bytes that would make a queue
//! overflow disconnect that client (TCP reset) and nobody else. A
//! connection's next request waits while [`Config::output_pause_bytes`]
//! are queued, so only pub/sub (which cannot wait) or one huge reply can
//! overflow.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::fmt::Write as _;

use rtedge_proto::{Limits, ProtocolError, ProtocolVersion, RequestParser};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::AnySocket;
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use smoltcp::wire::IpAddress;

use crate::config::{Config, ConfigError};
use crate::hub::Hub;
use crate::job::{Completion, ConnectionId, Job};
use crate::memory::MemoryBudget;

/// Result of building a server.
pub type Result<T> = core::result::Result<T, ServerError>;

/// Why a [`NetServer`] could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerError {
    /// The configuration failed [`Config::validate`].
    Config(ConfigError),
    /// A fresh socket refused to listen on the port.
    Listen,
}

impl fmt::Display for ServerError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(error) => error.fmt(formatter),
            Self::Listen => formatter.write_str("control plane: cannot listen on the port"),
        }
    }
}

impl From<ConfigError> for ServerError {
    fn from(error: ConfigError) -> ServerError {
        ServerError::Config(error)
    }
}

/// The line a client over the connection limit gets before the close
/// (Redis's text).
pub const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";

/// An emptied output queue larger than this gives its memory back.
const OUTPUT_SHRINK_BYTES: usize = 64 * 1024;

/// What a connection costs beyond its buffers (its state, boxed).
const CONNECTION_OVERHEAD_BYTES: usize = core::mem::size_of::<Connection>();

/// The reply that replaces one the memory budget cannot hold.
pub const OUT_OF_MEMORY_REPLY: &[u8] = b"-OOM reply not sent: the control plane's memory budget is exhausted\r\n";

/// Counters for `INFO`; see [`NetStats::write_info`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Connections open now.
    pub connected: usize,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Connections refused because `max_connections` were open.
    pub rejected: u64,
    /// Requests handed out as jobs.
    pub commands: u64,
    /// Bytes received from clients.
    pub bytes_in: u64,
    /// Bytes handed to the sockets for clients.
    pub bytes_out: u64,
    /// Connections closed for a malformed or oversized request.
    pub protocol_errors: u64,
    /// Clients disconnected because their output queue overflowed.
    pub output_overflows: u64,
    /// Connections closed by the idle timeout.
    pub idle_timeouts: u64,
    /// Completions dropped because their connection had ended (or had no
    /// job out).
    pub stale_completions: u64,
    /// Times a connection's next request had to wait for the rate limit.
    pub rate_limited: u64,
    /// [`NetServer::publish`] calls.
    pub messages_published: u64,
    /// Messages queued for subscribers.
    pub messages_delivered: u64,
    /// Messages not queued: the subscriber was closing, or overflowed and
    /// was disconnected.
    pub messages_dropped: u64,
    /// Unauthenticated connections reset at the pre-auth deadline.
    pub auth_timeouts: u64,
    /// Unauthenticated connections reset to make room for a new one.
    pub preauth_evictions: u64,
    /// Connections reset because their output did not move for the send
    /// timeout.
    pub send_timeouts: u64,
    /// Closing connections reset because their output did not drain
    /// within the linger time.
    pub linger_aborts: u64,
    /// Replies replaced by `-OOM` and subscribers dropped because the
    /// memory budget could not hold their bytes.
    pub memory_refusals: u64,
    /// Unauthenticated connections open now.
    pub unauthenticated: usize,
    /// Bytes charged to the control plane's memory budget now (both
    /// halves), its peak, and the budget.
    pub memory_used: usize,
    pub memory_peak: usize,
    pub memory_limit: usize,
    /// Slots per state now.
    pub slot_states: SlotCounts,
}

impl NetStats {
    /// Appends the counters as `INFO` lines (`key:value\r\n`), Redis's
    /// names where Redis has the counter.
    pub fn write_info(&self, out: &mut String) {
        let lines: [(&str, u64); 23] = [
            ("connected_clients", self.connected as u64),
            ("total_connections_received", self.accepted),
            ("rejected_connections", self.rejected),
            ("total_commands_processed", self.commands),
            ("total_net_input_bytes", self.bytes_in),
            ("total_net_output_bytes", self.bytes_out),
            ("total_error_replies_protocol", self.protocol_errors),
            ("client_output_buffer_limit_disconnections", self.output_overflows),
            ("idle_timeouts", self.idle_timeouts),
            ("stale_completions", self.stale_completions),
            ("rate_limited_waits", self.rate_limited),
            ("pubsub_messages_published", self.messages_published),
            ("pubsub_messages_delivered", self.messages_delivered),
            ("pubsub_messages_dropped", self.messages_dropped),
            ("unauthenticated_clients", self.unauthenticated as u64),
            ("auth_timeouts", self.auth_timeouts),
            ("preauth_evictions", self.preauth_evictions),
            ("send_timeouts", self.send_timeouts),
            ("linger_aborts", self.linger_aborts),
            ("memory_refusals", self.memory_refusals),
            ("control_memory_used", self.memory_used as u64),
            ("control_memory_peak", self.memory_peak as u64),
            ("control_memory_limit", self.memory_limit as u64),
        ];
        for (key, value) in lines {
            // Writing to a String cannot fail.
            let _ = write!(out, "{key}:{value}\r\n");
        }
        let _ = write!(
            out,
            "slots:listening={},open={},rejecting={},closing={},aborting={}\r\n",
            self.slot_states.listening,
            self.slot_states.open,
            self.slot_states.rejecting,
            self.slot_states.closing,
            self.slot_states.aborting
        );
    }
}

/// How many slots are in each state (for `INFO net`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotCounts {
    pub listening: usize,
    pub open: usize,
    pub rejecting: usize,
    pub closing: usize,
    pub aborting: usize,
}

/// What became of a [`NetServer::push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued for the client.
    Queued,
    /// The client's output queue would have overflowed: it is being
    /// disconnected and the bytes were dropped.
    Disconnected,
    /// No such open connection (it ended or is closing): dropped.
    Dropped,
}

/// What a [`NetServer::publish`] reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Messages queued (Redis's `PUBLISH` answer).
    pub receivers: usize,
    /// Messages dropped (see [`PushOutcome`]).
    pub dropped: usize,
}

/// Commands per second with a burst of one second, counted in thousandths
/// of a command so that millisecond steps add up at any rate.
#[derive(Debug)]
struct RateLimiter {
    per_second: u64,
    credit: u64,
    updated_ms: u64,
}

/// One command, in the limiter's unit.
const COMMAND_COST: u64 = 1000;

impl RateLimiter {
    fn new(per_second: u32, now_ms: u64) -> RateLimiter {
        let per_second = u64::from(per_second);
        RateLimiter { per_second, credit: per_second.saturating_mul(COMMAND_COST), updated_ms: now_ms }
    }

    fn unlimited(&self) -> bool {
        self.per_second == 0
    }

    fn refill(&mut self, now_ms: u64) {
        if now_ms <= self.updated_ms {
            return;
        }
        // A rate of r commands per second is r thousandths per ms.
        let earned = (now_ms - self.updated_ms).saturating_mul(self.per_second);
        let capacity = self.per_second.saturating_mul(COMMAND_COST);
        self.credit = self.credit.saturating_add(earned).min(capacity);
        self.updated_ms = now_ms;
    }

    fn has_credit(&mut self, now_ms: u64) -> bool {
        if self.unlimited() {
            return true;
        }
        self.refill(now_ms);
        self.credit >= COMMAND_COST
    }

    fn spend(&mut self) {
        self.credit = self.credit.saturating_sub(COMMAND_COST);
    }

    /// When the next command's credit will be there.
    fn ready_at(&self) -> u64 {
        if self.unlimited() || self.credit >= COMMAND_COST {
            return self.updated_ms;
        }
        let missing = COMMAND_COST - self.credit;
        self.updated_ms.saturating_add(missing.div_ceil(self.per_second))
    }
}

/// A reply held back until a time (the delay after a failed `AUTH`).
#[derive(Debug)]
struct Held {
    release_ms: u64,
    bytes: Vec<u8>,
    close_after: bool,
}

#[derive(Debug)]
struct Connection {
    id: ConnectionId,
    parser: RequestParser,
    output: VecDeque<u8>,
    /// A job is out; the next request waits for its completion.
    in_flight: bool,
    held: Option<Held>,
    /// No more requests: flush the output, then close.
    closing: bool,
    /// Reset at the next poll (output overflow, or [`NetServer::disconnect`]).
    doomed: bool,
    authenticated: bool,
    protocol: ProtocolVersion,
    last_activity_ms: u64,
    rate: RateLimiter,
    /// The last attempt to start a request found no rate credit.
    rate_waiting: bool,
    /// When it was accepted: the pre-auth deadline counts from here.
    accepted_ms: u64,
    /// The last time its output was empty or moved.
    output_progress_ms: u64,
    /// When it began closing with output still queued.
    closing_since_ms: Option<u64>,
    /// Bytes charged to the memory budget for it.
    charged: usize,
    peer: Option<IpAddress>,
}

impl Connection {
    /// Heap bytes it holds now.
    fn memory_bytes(&self) -> usize {
        CONNECTION_OVERHEAD_BYTES
            .saturating_add(self.parser.memory_bytes())
            .saturating_add(self.output.capacity())
            .saturating_add(self.held.as_ref().map_or(0, |held| held.bytes.capacity()))
    }

    /// Brings its charge in line with what it holds (growth was checked
    /// against the budget before it happened).
    fn account(&mut self, memory: &MemoryBudget) {
        let now = self.memory_bytes();
        if now >= self.charged {
            memory.force_charge(now - self.charged);
        } else {
            memory.release(self.charged - now);
        }
        self.charged = now;
    }
}

#[derive(Debug)]
enum SlotState {
    Listening,
    Open(Box<Connection>),
    /// Refusing a client over the limit: send the error, close.
    Rejecting {
        sent: bool,
        deadline_ms: u64,
    },
    /// Closed by us: waiting for the FIN handshake to end.
    Closing {
        deadline_ms: u64,
    },
    /// Reset by us: waiting for the reset to go out.
    Aborting {
        deadline_ms: u64,
    },
}

#[derive(Debug)]
struct Slot {
    handle: SocketHandle,
    state: SlotState,
}

/// What the server's state needs while one slot is polled (the slot
/// itself is borrowed separately).
struct Shared<'a> {
    config: &'a Config,
    unauthenticated_limits: Limits,
    auth_required: bool,
    hub: &'a mut Hub,
    stats: &'a mut NetStats,
    next_generation: &'a mut u64,
    open: &'a mut usize,
    memory: &'a MemoryBudget,
}

/// The network half of the control plane. See the module documentation.
#[derive(Debug)]
pub struct NetServer {
    config: Config,
    auth_required: bool,
    slots: Vec<Slot>,
    /// Socket handle to slot index, sorted by handle.
    by_handle: Vec<(SocketHandle, usize)>,
    hub: Hub,
    next_generation: u64,
    stats: NetStats,
    /// A completion or push queued bytes that the next poll must write.
    needs_poll: bool,
    memory: Arc<MemoryBudget>,
}

impl NetServer {
    /// Validates `config`, adds `max_connections + 1` TCP sockets to
    /// `sockets` (each with its own receive and transmit buffer) and makes
    /// them listen. Pass the same set to every [`NetServer::poll`].
    pub fn new(config: Config, sockets: &mut SocketSet<'_>) -> Result<NetServer> {
        config.validate()?;
        let count = config.max_connections + 1;
        let mut slots = Vec::with_capacity(count);
        for _ in 0..count {
            let mut socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0u8; config.socket_rx_bytes]),
                tcp::SocketBuffer::new(vec![0u8; config.socket_tx_bytes]),
            );
            // Replies are whole; do not hold them back for ACKs (Redis sets
            // TCP_NODELAY).
            socket.set_nagle_enabled(false);
            if config.tcp_keep_alive_ms > 0 {
                socket.set_keep_alive(Some(Duration::from_millis(config.tcp_keep_alive_ms)));
                socket.set_timeout(Some(Duration::from_millis(config.tcp_keep_alive_ms.saturating_mul(3))));
            }
            socket.listen(config.port).map_err(|_| ServerError::Listen)?;
            let handle = sockets.add(socket);
            slots.push(Slot { handle, state: SlotState::Listening });
        }
        let mut by_handle: Vec<(SocketHandle, usize)> = slots.iter().enumerate().map(|(index, slot)| (slot.handle, index)).collect();
        by_handle.sort_unstable();
        Ok(NetServer {
            config,
            auth_required: true,
            slots,
            by_handle,
            hub: Hub::new(),
            next_generation: 1,
            stats: NetStats::default(),
            needs_poll: false,
            memory: Arc::new(MemoryBudget::new(config.memory_limit_bytes, count)),
        })
    }

    /// Whether new connections start unauthenticated, with the narrow
    /// request limits (the default). Set false when the backend has no
    /// token, so the wide limits apply from the first request.
    pub fn set_auth_required(&mut self, required: bool) {
        self.auth_required = required;
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The memory budget, to share with the [`Dispatcher`](crate::Dispatcher)
    /// ([`Dispatcher::set_memory_budget`](crate::Dispatcher::set_memory_budget)).
    pub fn memory(&self) -> Arc<MemoryBudget> {
        Arc::clone(&self.memory)
    }

    /// Services every slot: accepts and refuses connections, reads
    /// requests, starts the next job of each idle connection (appended to
    /// `jobs`), releases held replies, writes queued output, applies the
    /// idle timeout and finishes closes. Call it after each
    /// `Interface::poll`, then poll the interface again so that what was
    /// written goes out. Never blocks; allocates only within the
    /// configured per-connection bounds.
    ///
    /// Sockets of `sockets` that are not this server's are ignored, and so
    /// are slots whose socket is missing from it.
    pub fn poll(&mut self, now_ms: u64, sockets: &mut SocketSet<'_>, jobs: &mut Vec<Job>) {
        self.needs_poll = false;
        self.evict_for_arrivals(now_ms, sockets);
        let mut open = self.open_count();
        let unauthenticated_limits = self.config.unauthenticated_limits();
        let NetServer { config, auth_required, slots, by_handle, hub, next_generation, stats, memory, .. } = self;
        let mut shared =
            Shared { config, unauthenticated_limits, auth_required: *auth_required, hub, stats, next_generation, open: &mut open, memory };
        for (handle, socket) in sockets.iter_mut() {
            let Ok(position) = by_handle.binary_search_by_key(&handle, |&(handle, _)| handle) else {
                continue;
            };
            let Some(&(_, index)) = by_handle.get(position) else {
                continue;
            };
            let Some(slot) = slots.get_mut(index) else {
                continue;
            };
            let Some(socket) = tcp::Socket::downcast_mut(socket) else {
                continue;
            };
            let slot_index = u32::try_from(index).unwrap_or(u32::MAX);
            poll_slot(slot_index, &mut slot.state, socket, now_ms, &mut shared, jobs);
        }
        self.stats.connected = open;
    }

    /// Admission: new connections waiting on listening sockets may push
    /// unauthenticated ones past [`Config::unauthenticated_slots`] or all
    /// past `max_connections`; the oldest unauthenticated connections make
    /// room (reset now), so that nobody without the token can hold the
    /// slots an operator needs.
    fn evict_for_arrivals(&mut self, now_ms: u64, sockets: &mut SocketSet<'_>) {
        if !self.auth_required {
            return;
        }
        let mut arrivals = 0usize;
        let mut unauthenticated: Vec<(u64, usize)> = Vec::new();
        let mut open = 0usize;
        for (handle, socket) in sockets.iter() {
            let Some(index) = self.slot_index(handle) else {
                continue;
            };
            let Some(socket) = tcp::Socket::downcast(socket) else {
                continue;
            };
            match self.slots.get(index).map(|slot| &slot.state) {
                Some(SlotState::Listening) if socket.is_active() => arrivals += 1,
                Some(SlotState::Open(conn)) => {
                    open += 1;
                    if !conn.authenticated && !conn.doomed {
                        unauthenticated.push((conn.id.generation, index));
                    }
                }
                _ => {}
            }
        }
        if arrivals == 0 {
            return;
        }
        let over_preauth = (unauthenticated.len() + arrivals).saturating_sub(self.config.unauthenticated_slots());
        let over_total = (open + arrivals).saturating_sub(self.config.max_connections);
        let victims = over_preauth.max(over_total).min(unauthenticated.len());
        if victims == 0 {
            return;
        }
        unauthenticated.sort_unstable();
        let chosen: Vec<usize> = unauthenticated.iter().take(victims).map(|&(_, index)| index).collect();
        for (handle, socket) in sockets.iter_mut() {
            let Some(index) = self.slot_index(handle) else {
                continue;
            };
            if !chosen.contains(&index) {
                continue;
            }
            let Some(socket) = tcp::Socket::downcast_mut(socket) else {
                continue;
            };
            let Some(slot) = self.slots.get_mut(index) else {
                continue;
            };
            let SlotState::Open(conn) = &mut slot.state else {
                continue;
            };
            debug_log!("control: connection {} evicted (unauthenticated)", conn.id.generation);
            socket.abort();
            self.hub.remove_connection(conn.id);
            self.memory.release(conn.charged);
            conn.charged = 0;
            self.memory.mark_ended(conn.id);
            self.stats.preauth_evictions = self.stats.preauth_evictions.saturating_add(1);
            slot.state = SlotState::Aborting { deadline_ms: now_ms.saturating_add(self.config.close_linger_ms) };
        }
    }

    fn slot_index(&self, handle: SocketHandle) -> Option<usize> {
        let position = self.by_handle.binary_search_by_key(&handle, |&(handle, _)| handle).ok()?;
        self.by_handle.get(position).map(|&(_, index)| index)
    }

    /// Takes the completion of a connection's job: applies its pub/sub
    /// changes, protocol and authentication, queues its bytes (or holds
    /// them until `not_before_ms`), and returns the connection's next job
    /// if one is ready, which the caller must execute like any other.
    ///
    /// A completion for a connection that has ended, is closing, or has no
    /// job out is dropped and counted ([`NetStats::stale_completions`]).
    /// The queued bytes are written by the next [`NetServer::poll`].
    #[must_use = "a returned job must be executed, or the connection stalls"]
    pub fn complete(&mut self, now_ms: u64, completion: Completion) -> Option<Job> {
        let Completion { connection, bytes, close_after, not_before_ms, protocol, authenticated, subscription_changes, shutdown: _ } =
            completion;
        let unauthenticated_limits = self.config.unauthenticated_limits();
        let NetServer { config, slots, hub, stats, needs_poll, memory, .. } = self;
        let Some(conn) = open_connection(slots, connection) else {
            stats.stale_completions = stats.stale_completions.saturating_add(1);
            return None;
        };
        if !conn.in_flight || conn.closing || conn.doomed {
            stats.stale_completions = stats.stale_completions.saturating_add(1);
            return None;
        }
        conn.in_flight = false;
        *needs_poll = true;
        conn.protocol = protocol;
        if authenticated != conn.authenticated {
            conn.authenticated = authenticated;
            conn.parser.set_limits(if authenticated { config.limits } else { unauthenticated_limits });
        }
        hub.apply(connection, protocol, &subscription_changes);
        conn.last_activity_ms = conn.last_activity_ms.max(now_ms);
        if let Some(release_ms) = not_before_ms.filter(|&release_ms| release_ms > now_ms) {
            // A held reply is small (an AUTH answer); it is charged as is.
            conn.held = Some(Held { release_ms, bytes, close_after });
            conn.account(memory);
            return None;
        }
        deliver(conn, &bytes, close_after, config, hub, stats, memory, Origin::Reply);
        match next_step(conn, now_ms, config, hub, stats, memory) {
            Step::Job(job) => Some(job),
            _ => None,
        }
    }

    /// Queues out-of-band bytes (a pub/sub message) for `connection`. A
    /// queue that would overflow [`Config::output_limit_bytes`] disconnects
    /// its client instead.
    pub fn push(&mut self, connection: ConnectionId, bytes: &[u8]) -> PushOutcome {
        let NetServer { config, slots, hub, stats, needs_poll, memory, .. } = self;
        let Some(conn) = open_connection(slots, connection) else {
            return PushOutcome::Dropped;
        };
        if conn.closing || conn.doomed {
            return PushOutcome::Dropped;
        }
        *needs_poll = true;
        deliver(conn, bytes, false, config, hub, stats, memory, Origin::Push);
        if conn.doomed { PushOutcome::Disconnected } else { PushOutcome::Queued }
    }

    /// Publishes `payload` on `channel` to every matching subscription
    /// (see [`Hub::publish`]) and queues the messages.
    pub fn publish(&mut self, channel: &[u8], payload: &[u8]) -> PublishReport {
        let messages = self.hub.publish(channel, payload);
        let mut report = PublishReport::default();
        for (connection, bytes) in messages {
            match self.push(connection, &bytes) {
                PushOutcome::Queued => report.receivers += 1,
                PushOutcome::Disconnected | PushOutcome::Dropped => report.dropped += 1,
            }
        }
        let stats = &mut self.stats;
        stats.messages_published = stats.messages_published.saturating_add(1);
        stats.messages_delivered = stats.messages_delivered.saturating_add(report.receivers as u64);
        stats.messages_dropped = stats.messages_dropped.saturating_add(report.dropped as u64);
        report
    }

    /// Resets `connection` at the next poll (e.g. `CLIENT KILL`, or
    /// shutdown). False if it is not open.
    pub fn disconnect(&mut self, connection: ConnectionId) -> bool {
        let NetServer { slots, hub, needs_poll, .. } = self;
        let Some(conn) = open_connection(slots, connection) else {
            return false;
        };
        conn.doomed = true;
        hub.remove_connection(conn.id);
        *needs_poll = true;
        true
    }

    /// Milliseconds from `now_ms` until this server needs its next poll
    /// (0: now), or `None` when only network input can give it work. Arm
    /// the timer for the smaller of this and `Interface::poll_delay`.
    pub fn next_timeout(&self, now_ms: u64) -> Option<u64> {
        if self.needs_poll {
            return Some(0);
        }
        let mut earliest: Option<u64> = None;
        let mut consider = |deadline: u64| {
            earliest = Some(earliest.map_or(deadline, |earliest| earliest.min(deadline)));
        };
        for slot in &self.slots {
            match &slot.state {
                SlotState::Listening => {}
                SlotState::Rejecting { deadline_ms, .. } | SlotState::Closing { deadline_ms } | SlotState::Aborting { deadline_ms } => {
                    consider(*deadline_ms)
                }
                SlotState::Open(conn) => {
                    if conn.doomed {
                        consider(now_ms);
                        continue;
                    }
                    if let Some(held) = &conn.held {
                        consider(held.release_ms);
                    }
                    if let Some(deadline) = idle_deadline(conn, &self.config, &self.hub) {
                        consider(deadline);
                    }
                    if conn.rate_waiting && !conn.in_flight && conn.held.is_none() {
                        consider(conn.rate.ready_at());
                    }
                    for deadline in [
                        auth_deadline(conn, &self.config, self.auth_required),
                        send_deadline(conn, &self.config),
                        linger_deadline(conn, &self.config),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        consider(deadline);
                    }
                }
            }
        }
        earliest.map(|deadline| deadline.saturating_sub(now_ms))
    }

    /// The counters.
    pub fn stats(&self) -> NetStats {
        let mut stats = self.stats;
        stats.connected = self.open_count();
        stats.unauthenticated =
            self.slots.iter().filter(|slot| matches!(&slot.state, SlotState::Open(conn) if !conn.authenticated)).count();
        stats.memory_used = self.memory.used();
        stats.memory_peak = self.memory.peak();
        stats.memory_limit = self.memory.limit();
        let mut counts = SlotCounts::default();
        for slot in &self.slots {
            match slot.state {
                SlotState::Listening => counts.listening += 1,
                SlotState::Open(_) => counts.open += 1,
                SlotState::Rejecting { .. } => counts.rejecting += 1,
                SlotState::Closing { .. } => counts.closing += 1,
                SlotState::Aborting { .. } => counts.aborting += 1,
            }
        }
        stats.slot_states = counts;
        stats
    }

    /// The `INFO net` lines of the server: [`NetStats::write_info`], then
    /// every limit in force as `limit_<name>:<value>`.
    pub fn write_info(&self, out: &mut String) {
        self.stats().write_info(out);
        for (name, value) in self.config.parameters() {
            let _ = write!(out, "limit_{name}:{value}\r\n");
        }
    }

    /// One line per open connection, as Redis's `CLIENT LIST`:
    /// `id=.. slot=.. idle=.. auth=.. resp=.. flight=.. held=..
    /// closing=.. qbuf=.. obuf=.. sub=.. tcp=.. rxq=.. txq=..`
    /// (idle in ms; `flight` = a command is being executed).
    pub fn client_list(&self, sockets: &SocketSet<'_>, now_ms: u64, out: &mut String) {
        for slot in &self.slots {
            let SlotState::Open(conn) = &slot.state else { continue };
            let socket = sockets.get::<tcp::Socket>(slot.handle);
            let _ = writeln!(
                out,
                "id={} slot={} idle={} auth={} resp={} flight={} held={} closing={} qbuf={} obuf={} sub={} mem={} tcp={} rxq={} txq={}",
                conn.id.generation,
                conn.id.slot,
                now_ms.saturating_sub(conn.last_activity_ms),
                u8::from(conn.authenticated),
                if conn.protocol == ProtocolVersion::Resp3 { 3 } else { 2 },
                u8::from(conn.in_flight),
                u8::from(conn.held.is_some()),
                u8::from(conn.closing),
                conn.parser.buffered(),
                conn.output.len(),
                self.hub.subscription_count(conn.id),
                conn.charged.saturating_add(self.memory.session_bytes(conn.id.slot)),
                socket.state(),
                socket.recv_queue(),
                socket.send_queue(),
            );
        }
    }

    /// The pub/sub subscriptions.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Connections open now.
    pub fn connection_count(&self) -> usize {
        self.open_count()
    }

    /// The open connections.
    pub fn connections(&self) -> impl Iterator<Item = ConnectionId> + '_ {
        self.slots.iter().filter_map(|slot| match &slot.state {
            SlotState::Open(conn) => Some(conn.id),
            _ => None,
        })
    }

    /// Whether `connection` is open (not ended, not closing).
    pub fn is_open(&self, connection: ConnectionId) -> bool {
        self.find(connection).is_some_and(|conn| !conn.closing && !conn.doomed)
    }

    /// Bytes queued for `connection` and not yet taken by its socket, held
    /// replies included; `None` if it has ended. After `SHUTDOWN`, poll
    /// until this is `Some(0)` or `None` so the `+OK` leaves first.
    pub fn queued_output(&self, connection: ConnectionId) -> Option<usize> {
        self.find(connection).map(|conn| conn.output.len() + conn.held.as_ref().map_or(0, |held| held.bytes.len()))
    }

    fn find(&self, connection: ConnectionId) -> Option<&Connection> {
        let slot = self.slots.get(usize::try_from(connection.slot).ok()?)?;
        match &slot.state {
            SlotState::Open(conn) if conn.id == connection => Some(conn),
            _ => None,
        }
    }

    fn open_count(&self) -> usize {
        self.slots.iter().filter(|slot| matches!(slot.state, SlotState::Open(_))).count()
    }
}

fn open_connection(slots: &mut [Slot], connection: ConnectionId) -> Option<&mut Connection> {
    let slot = slots.get_mut(usize::try_from(connection.slot).ok()?)?;
    match &mut slot.state {
        SlotState::Open(conn) if conn.id == connection => Some(conn),
        _ => None,
    }
}

/// When an unauthenticated connection is reset (a token is set).
fn auth_deadline(conn: &Connection, config: &Config, auth_required: bool) -> Option<u64> {
    (auth_required && !conn.authenticated && !conn.doomed).then(|| conn.accepted_ms.saturating_add(config.auth_timeout_ms))
}

/// When a connection whose output does not move is reset.
fn send_deadline(conn: &Connection, config: &Config) -> Option<u64> {
    (config.send_timeout_ms > 0 && !conn.output.is_empty() && !conn.doomed)
        .then(|| conn.output_progress_ms.saturating_add(config.send_timeout_ms))
}

/// When a closing connection that still has output is reset.
fn linger_deadline(conn: &Connection, config: &Config) -> Option<u64> {
    conn.closing_since_ms.filter(|_| !conn.doomed).map(|since| since.saturating_add(config.close_linger_ms))
}

fn idle_deadline(conn: &Connection, config: &Config, hub: &Hub) -> Option<u64> {
    let eligible =
        config.idle_timeout_ms > 0 && !conn.in_flight && conn.held.is_none() && !conn.closing && hub.subscription_count(conn.id) == 0;
    eligible.then(|| conn.last_activity_ms.saturating_add(config.idle_timeout_ms))
}

/// One slot's turn in [`NetServer::poll`]. A slot may pass through a few
/// states in one turn (accepted, then served; closed, then listening).
fn poll_slot(
    slot_index: u32,
    state: &mut SlotState,
    socket: &mut tcp::Socket<'_>,
    now_ms: u64,
    shared: &mut Shared<'_>,
    jobs: &mut Vec<Job>,
) {
    // Each transition moves forward (listening -> open -> closing ->
    // listening); the bound only guards against a socket that changes
    // under us.
    for _ in 0..4 {
        let next = match state {
            SlotState::Listening => poll_listening(slot_index, socket, now_ms, shared),
            SlotState::Open(conn) => poll_open(conn, socket, now_ms, shared, jobs),
            SlotState::Rejecting { sent, deadline_ms } => poll_rejecting(sent, *deadline_ms, socket, now_ms, shared.config),
            SlotState::Closing { deadline_ms } => {
                if !socket.is_active() {
                    Some(relisten(socket, now_ms, shared.config))
                } else {
                    discard_input(socket);
                    (now_ms >= *deadline_ms).then(|| {
                        socket.abort();
                        SlotState::Aborting { deadline_ms: now_ms.saturating_add(shared.config.close_linger_ms) }
                    })
                }
            }
            SlotState::Aborting { deadline_ms } => {
                let reset_sent = socket.state() == tcp::State::Closed && socket.remote_endpoint().is_none();
                (socket.is_listening() || reset_sent || now_ms >= *deadline_ms).then(|| relisten(socket, now_ms, shared.config))
            }
        };
        match next {
            Some(next) => *state = next,
            None => return,
        }
    }
}

fn poll_listening(slot_index: u32, socket: &mut tcp::Socket<'_>, now_ms: u64, shared: &mut Shared<'_>) -> Option<SlotState> {
    if !socket.is_active() {
        return (!socket.is_listening()).then(|| relisten(socket, now_ms, shared.config));
    }
    if *shared.open >= shared.config.max_connections {
        shared.stats.rejected = shared.stats.rejected.saturating_add(1);
        debug_log!("control: refused a connection on slot {slot_index}: limit reached");
        return Some(SlotState::Rejecting { sent: false, deadline_ms: now_ms.saturating_add(shared.config.close_linger_ms) });
    }
    let generation = *shared.next_generation;
    *shared.next_generation = generation.saturating_add(1);
    *shared.open += 1;
    shared.stats.accepted = shared.stats.accepted.saturating_add(1);
    debug_log!("control: connection {generation} on slot {slot_index}");
    let limits = if shared.auth_required { shared.unauthenticated_limits } else { shared.config.limits };
    let peer = socket.remote_endpoint().map(|endpoint| endpoint.addr);
    let mut conn = Box::new(Connection {
        id: ConnectionId { slot: slot_index, generation },
        parser: RequestParser::new(limits),
        output: VecDeque::new(),
        in_flight: false,
        held: None,
        closing: false,
        doomed: false,
        authenticated: !shared.auth_required,
        protocol: ProtocolVersion::Resp2,
        last_activity_ms: now_ms,
        rate: RateLimiter::new(shared.config.rate_limit_per_second, now_ms),
        rate_waiting: false,
        accepted_ms: now_ms,
        output_progress_ms: now_ms,
        closing_since_ms: None,
        charged: 0,
        peer,
    });
    conn.account(shared.memory);
    Some(SlotState::Open(conn))
}

fn poll_rejecting(sent: &mut bool, deadline_ms: u64, socket: &mut tcp::Socket<'_>, now_ms: u64, config: &Config) -> Option<SlotState> {
    if !socket.is_active() {
        return Some(relisten(socket, now_ms, config));
    }
    discard_input(socket);
    if !*sent && socket.may_send() {
        // The transmit buffer is empty and at least 64 bytes (validated),
        // so the line goes in whole.
        let _ = socket.send_slice(MAX_CLIENTS_REPLY);
        *sent = true;
        socket.close();
    }
    (now_ms >= deadline_ms).then(|| {
        socket.abort();
        SlotState::Aborting { deadline_ms: now_ms.saturating_add(config.close_linger_ms) }
    })
}

fn poll_open(
    conn: &mut Connection,
    socket: &mut tcp::Socket<'_>,
    now_ms: u64,
    shared: &mut Shared<'_>,
    jobs: &mut Vec<Job>,
) -> Option<SlotState> {
    if !conn.doomed && !socket.is_active() {
        // Reset by the peer, both sides closed, or a handshake that failed
        // (the socket went back to listening).
        debug_log!("control: connection {} ended by the peer", conn.id.generation);
        end(conn, shared);
        return Some(relisten(socket, now_ms, shared.config));
    }
    if auth_deadline(conn, shared.config, shared.auth_required).is_some_and(|deadline| now_ms >= deadline) {
        debug_log!("control: connection {} did not authenticate in time", conn.id.generation);
        shared.stats.auth_timeouts = shared.stats.auth_timeouts.saturating_add(1);
        conn.doomed = true;
    }
    if !conn.doomed {
        if conn.closing {
            discard_input(socket);
        } else if let Err(error) = read(conn, socket, now_ms, shared) {
            protocol_error(conn, error, shared.config, shared.hub, shared.stats, shared.memory);
        }
        release_held(conn, now_ms, shared);
        let step = next_step(conn, now_ms, shared.config, shared.hub, shared.stats, shared.memory);
        let finished_sending = socket.state() == tcp::State::CloseWait && socket.recv_queue() == 0;
        match step {
            Step::Job(job) => jobs.push(job),
            Step::NeedMore if finished_sending && !conn.closing => {
                // The client closed its half and every request it sent has
                // been answered.
                begin_close(conn, shared.hub);
            }
            _ => {}
        }
    }
    if conn.doomed {
        debug_log!("control: connection {} reset", conn.id.generation);
        socket.abort();
        end(conn, shared);
        return Some(SlotState::Aborting { deadline_ms: now_ms.saturating_add(shared.config.close_linger_ms) });
    }
    write(conn, socket, now_ms, shared.stats);
    conn.account(shared.memory);
    if conn.closing && !conn.output.is_empty() && conn.closing_since_ms.is_none() {
        conn.closing_since_ms = Some(now_ms);
    }
    let stalled = send_deadline(conn, shared.config).is_some_and(|deadline| now_ms >= deadline);
    let lingered = linger_deadline(conn, shared.config).is_some_and(|deadline| now_ms >= deadline);
    if stalled || lingered {
        // The peer does not take its bytes: give the slot back now.
        debug_log!("control: connection {} reset: output stuck", conn.id.generation);
        if stalled {
            shared.stats.send_timeouts = shared.stats.send_timeouts.saturating_add(1);
        } else {
            shared.stats.linger_aborts = shared.stats.linger_aborts.saturating_add(1);
        }
        socket.abort();
        end(conn, shared);
        return Some(SlotState::Aborting { deadline_ms: now_ms.saturating_add(shared.config.close_linger_ms) });
    }
    if idle_deadline(conn, shared.config, shared.hub).is_some_and(|deadline| now_ms >= deadline) {
        debug_log!("control: connection {} idle", conn.id.generation);
        shared.stats.idle_timeouts = shared.stats.idle_timeouts.saturating_add(1);
        begin_close(conn, shared.hub);
    }
    if conn.closing && conn.output.is_empty() {
        socket.close();
        end(conn, shared);
        return Some(SlotState::Closing { deadline_ms: now_ms.saturating_add(shared.config.close_linger_ms) });
    }
    None
}

/// Moves received bytes into the parser, as many as its buffer takes.
fn read(
    conn: &mut Connection,
    socket: &mut tcp::Socket<'_>,
    now_ms: u64,
    shared: &mut Shared<'_>,
) -> core::result::Result<(), ProtocolError> {
    let result = read_bounded(conn, socket, now_ms, shared);
    conn.account(shared.memory);
    result
}

/// Reads no more than the parser and the pre-auth allowance take; the rest
/// waits in the socket (TCP flow control).
fn read_bounded(
    conn: &mut Connection,
    socket: &mut tcp::Socket<'_>,
    now_ms: u64,
    shared: &mut Shared<'_>,
) -> core::result::Result<(), ProtocolError> {
    let stats = &mut *shared.stats;
    // The receive ring wraps at most once.
    for _ in 0..2 {
        let mut room = conn.parser.spare_capacity();
        if !conn.authenticated {
            room = room.min(shared.config.preauth_input_bytes.saturating_sub(conn.parser.buffered()));
        }
        // Request bytes are bounded per connection (frame limit, pre-auth
        // allowance) and charged, but not refused by the budget: a client
        // must always be able to send the command that frees memory
        // (UNSUBSCRIBE, DISCARD, QUIT); the budget refuses what grows
        // beyond that (replies, subscriptions, transactions).
        if room == 0 || !socket.can_recv() {
            break;
        }
        let parser = &mut conn.parser;
        let received = socket.recv(|data| {
            let taken = data.len().min(room);
            let chunk = data.get(..taken).unwrap_or(&[]);
            (taken, (taken, parser.feed(chunk)))
        });
        let Ok((taken, fed)) = received else {
            break;
        };
        if taken > 0 {
            stats.bytes_in = stats.bytes_in.saturating_add(taken as u64);
            conn.last_activity_ms = conn.last_activity_ms.max(now_ms);
        }
        fed?;
    }
    Ok(())
}

fn discard_input(socket: &mut tcp::Socket<'_>) {
    for _ in 0..2 {
        if !socket.can_recv() {
            break;
        }
        let _ = socket.recv(|data| (data.len(), ()));
    }
}

fn write(conn: &mut Connection, socket: &mut tcp::Socket<'_>, now_ms: u64, stats: &mut NetStats) {
    if conn.output.is_empty() {
        conn.output_progress_ms = now_ms;
    }
    // The queue is at most two slices.
    for _ in 0..2 {
        if conn.output.is_empty() || !socket.can_send() {
            break;
        }
        let (front, back) = conn.output.as_slices();
        let chunk = if front.is_empty() { back } else { front };
        let sent = match socket.send_slice(chunk) {
            Ok(sent) if sent > 0 => sent,
            _ => break,
        };
        conn.output.drain(..sent.min(conn.output.len()));
        conn.output_progress_ms = now_ms;
        stats.bytes_out = stats.bytes_out.saturating_add(sent as u64);
    }
    if conn.output.is_empty() && conn.output.capacity() > OUTPUT_SHRINK_BYTES {
        conn.output = VecDeque::new();
    }
}

enum Step {
    Job(Job),
    /// A job or held reply is out, the connection is closing, or its
    /// output is paused.
    Busy,
    RateLimited,
    /// No complete request buffered.
    NeedMore,
    /// A protocol error: the connection is closing.
    Failed,
}

/// Starts the connection's next request if it may start now.
fn next_step(conn: &mut Connection, now_ms: u64, config: &Config, hub: &mut Hub, stats: &mut NetStats, memory: &MemoryBudget) -> Step {
    if conn.in_flight || conn.held.is_some() || conn.closing || conn.doomed {
        return Step::Busy;
    }
    if conn.output.len() >= config.output_pause_bytes {
        return Step::Busy;
    }
    if conn.parser.buffered() == 0 {
        conn.rate_waiting = false;
        return Step::NeedMore;
    }
    if !conn.rate.has_credit(now_ms) {
        if !conn.rate_waiting {
            stats.rate_limited = stats.rate_limited.saturating_add(1);
        }
        conn.rate_waiting = true;
        return Step::RateLimited;
    }
    conn.rate_waiting = false;
    match conn.parser.next() {
        Ok(Some(request)) => {
            conn.rate.spend();
            conn.in_flight = true;
            stats.commands = stats.commands.saturating_add(1);
            Step::Job(Job { connection: conn.id, request, peer: conn.peer })
        }
        Ok(None) if conn.parser.spare_capacity() == 0 => {
            // A full buffer without a complete request can never complete
            // (the parser should have said so already).
            protocol_error(conn, ProtocolError::RequestTooLarge, config, hub, stats, memory);
            Step::Failed
        }
        Ok(None) => Step::NeedMore,
        Err(error) => {
            protocol_error(conn, error, config, hub, stats, memory);
            Step::Failed
        }
    }
}

fn release_held(conn: &mut Connection, now_ms: u64, shared: &mut Shared<'_>) {
    if conn.held.as_ref().is_none_or(|held| held.release_ms > now_ms) {
        return;
    }
    if let Some(held) = conn.held.take() {
        deliver(conn, &held.bytes, held.close_after, shared.config, shared.hub, shared.stats, shared.memory, Origin::Reply);
    }
}

/// Where bytes to deliver come from: what happens when the memory budget
/// cannot hold them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A command's reply: replaced by [`OUT_OF_MEMORY_REPLY`].
    Reply,
    /// A pub/sub message, which cannot wait: the client is dropped.
    Push,
}

/// Queues a reply, or disconnects the client if it would overflow. Growth
/// of the queue is checked against the memory budget first and reserved
/// fallibly: an allocation failure drops this client, never the kernel.
#[allow(clippy::too_many_arguments, reason = "the server's parts, borrowed apart from the connection")]
fn deliver(
    conn: &mut Connection,
    bytes: &[u8],
    close_after: bool,
    config: &Config,
    hub: &mut Hub,
    stats: &mut NetStats,
    memory: &MemoryBudget,
    origin: Origin,
) {
    if conn.output.len().saturating_add(bytes.len()) > config.output_limit_bytes {
        doom(conn, hub, stats);
        return;
    }
    let mut bytes = bytes;
    let growth = conn.output.len().saturating_add(bytes.len()).saturating_sub(conn.output.capacity());
    if growth > 0 && !memory.try_charge(growth) {
        stats.memory_refusals = stats.memory_refusals.saturating_add(1);
        match origin {
            Origin::Push => {
                doom(conn, hub, stats);
                return;
            }
            Origin::Reply => bytes = OUT_OF_MEMORY_REPLY,
        }
    } else if growth > 0 {
        // Charged for now; `account` settles the allocator's rounding.
        memory.release(growth);
    }
    if conn.output.try_reserve(bytes.len()).is_err() {
        stats.memory_refusals = stats.memory_refusals.saturating_add(1);
        doom(conn, hub, stats);
        return;
    }
    conn.output.extend(bytes);
    conn.account(memory);
    if close_after {
        begin_close(conn, hub);
    }
}

/// Answers a malformed request with `-ERR Protocol error: ...` and closes
/// the connection once that is sent.
fn protocol_error(
    conn: &mut Connection,
    error: ProtocolError,
    config: &Config,
    hub: &mut Hub,
    stats: &mut NetStats,
    memory: &MemoryBudget,
) {
    debug_log!("control: connection {}: {}", conn.id.generation, error.message());
    stats.protocol_errors = stats.protocol_errors.saturating_add(1);
    let bytes = error.to_reply().to_bytes(conn.protocol);
    deliver(conn, &bytes, true, config, hub, stats, memory, Origin::Reply);
}

fn begin_close(conn: &mut Connection, hub: &mut Hub) {
    conn.closing = true;
    hub.remove_connection(conn.id);
}

fn doom(conn: &mut Connection, hub: &mut Hub, stats: &mut NetStats) {
    if !conn.doomed {
        stats.output_overflows = stats.output_overflows.saturating_add(1);
    }
    conn.doomed = true;
    hub.remove_connection(conn.id);
}

/// The connection leaves its slot.
fn end(conn: &mut Connection, shared: &mut Shared<'_>) {
    shared.hub.remove_connection(conn.id);
    *shared.open = shared.open.saturating_sub(1);
    // Its buffers are dropped with its state right after: give them back,
    // and tell the command half to drop its session.
    shared.memory.release(conn.charged);
    conn.charged = 0;
    shared.memory.mark_ended(conn.id);
}

/// Makes a closed socket listen again.
fn relisten(socket: &mut tcp::Socket<'_>, now_ms: u64, config: &Config) -> SlotState {
    if socket.is_listening() {
        return SlotState::Listening;
    }
    if socket.is_open() {
        // Still connected (should not happen here): reset it first.
        socket.abort();
    } else if socket.listen(config.port).is_ok() {
        return SlotState::Listening;
    }
    SlotState::Aborting { deadline_ms: now_ms.saturating_add(config.close_linger_ms) }
}
