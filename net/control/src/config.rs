//! Limits and defaults of the control plane, as CONTROL.md ("Sessions")
//! states them. Every per-client allocation the server makes is bounded by
//! one of these numbers.

use core::fmt;

use rtedge_proto::Limits;

/// Result of checking a [`Config`].
pub type Result<T> = core::result::Result<T, ConfigError>;

/// A configuration value the server cannot work with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A number outside the range the server supports.
    OutOfRange {
        /// The field, as named in [`Config`].
        field: &'static str,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// A value larger than another value it must fit in.
    Exceeds {
        /// The field that is too large.
        field: &'static str,
        /// The field it must not exceed.
        limit: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange { field, min, max } => {
                write!(formatter, "config: {field} must be between {min} and {max}")
            }
            Self::Exceeds { field, limit } => {
                write!(formatter, "config: {field} must not exceed {limit}")
            }
        }
    }
}

/// The control plane's limits. [`Config::DEFAULT`] holds CONTROL.md's
/// defaults; change fields and call [`Config::validate`] (the server's
/// constructor does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// TCP port to listen on (6379).
    pub port: u16,
    /// Connections served at once (64). One more socket listens so that
    /// the next client is told `-ERR max number of clients reached` rather
    /// than reset.
    pub max_connections: usize,
    /// Request limits once authenticated: 64 KiB frame, 1024 arguments,
    /// 32 KiB bulk argument, 16 KiB inline line. Before `AUTH` the
    /// arguments are capped further, as Redis does (see
    /// [`Config::unauthenticated_limits`]).
    pub limits: Limits,
    /// Reply and pub/sub bytes queued for one client and not yet taken by
    /// its socket (1 MiB). A client that makes this overflow is
    /// disconnected.
    pub output_limit_bytes: usize,
    /// A client's next request is not started while this many bytes of
    /// its replies are still queued (64 KiB): a pipelining client that does
    /// not read is slowed by TCP, not disconnected. Pub/sub messages cannot
    /// wait, so for them only [`Config::output_limit_bytes`] applies.
    pub output_pause_bytes: usize,
    /// Close a connection without subscriptions that sent nothing for this
    /// long (300 s); 0 = never.
    pub idle_timeout_ms: u64,
    /// Commands per second per connection (100 000), with a burst of one
    /// second's worth; excess requests wait in the receive buffer, never
    /// dropped. 0 = unlimited.
    pub rate_limit_per_second: u32,
    /// Channels plus patterns one client may subscribe to (1024).
    pub max_subscriptions_per_client: usize,
    /// TCP receive buffer of each connection socket (8 KiB).
    pub socket_rx_bytes: usize,
    /// TCP transmit buffer of each connection socket (16 KiB).
    pub socket_tx_bytes: usize,
    /// How long a closing connection may take to finish its FIN handshake
    /// before it is reset (5 s).
    pub close_linger_ms: u64,
    /// TCP keep-alive interval (60 s); a peer silent for three intervals is
    /// dropped, so a vanished subscriber frees its slot. 0 = off.
    pub tcp_keep_alive_ms: u64,
    /// Slots kept for authenticated sessions (16): unauthenticated
    /// connections hold at most `max_connections - reserved_clients` (at
    /// least one), and a new connection over that number evicts the oldest
    /// unauthenticated one, so that silent connections cannot keep the
    /// operator out.
    pub reserved_clients: usize,
    /// A connection must have authenticated this long after it was
    /// accepted (5 s), whatever trickles in meanwhile, or it is reset.
    /// Only applies when a token is set.
    pub auth_timeout_ms: u64,
    /// Request bytes an unauthenticated connection may have buffered (1
    /// KiB: room for `HELLO 3 AUTH default <token> SETNAME <name>`); the
    /// rest waits in its socket. With the slot cap this bounds what all
    /// unauthenticated clients together hold
    /// ([`Config::preauth_budget_bytes`]).
    pub preauth_input_bytes: usize,
    /// A client whose queued output has not moved for this long (30 s) is
    /// reset: a peer that does not read, or left without reading, gives
    /// its slot and buffers back. 0 = never.
    pub send_timeout_ms: u64,
    /// The control plane's memory budget (32 MiB; the kernel lowers it to
    /// a quarter of its heap): request buffers, output queues,
    /// subscriptions and transactions of all clients together. Growth past
    /// it is refused (the command gets `-OOM`, a pub/sub client is
    /// dropped).
    pub memory_limit_bytes: usize,
    /// Bytes of channel and pattern names one client may subscribe to
    /// (256 KiB), on top of the count limit.
    pub max_subscription_bytes_per_client: usize,
    /// Bytes of commands one client may queue between `MULTI` and `EXEC`
    /// (256 KiB).
    pub max_transaction_bytes: usize,
    /// Failed authentications per second across all clients (10); further
    /// attempts are answered no sooner than this rate allows. Each source
    /// address also backs off on its own (100 ms doubling to 2 s).
    pub auth_failures_per_second: u32,
}

/// Most connections a server may be configured for: each one holds two
/// socket buffers and a receive buffer of up to a frame.
pub const MAX_CONNECTIONS: usize = 1024;

impl Config {
    /// CONTROL.md's defaults.
    pub const DEFAULT: Config = Config {
        port: 6379,
        max_connections: 64,
        limits: Limits::DEFAULT,
        output_limit_bytes: 1024 * 1024,
        output_pause_bytes: 64 * 1024,
        idle_timeout_ms: 300_000,
        rate_limit_per_second: 100_000,
        max_subscriptions_per_client: 1024,
        socket_rx_bytes: 8 * 1024,
        socket_tx_bytes: 16 * 1024,
        close_linger_ms: 5_000,
        tcp_keep_alive_ms: 60_000,
        reserved_clients: 16,
        auth_timeout_ms: 5_000,
        preauth_input_bytes: 1024,
        send_timeout_ms: 30_000,
        memory_limit_bytes: 32 * 1024 * 1024,
        max_subscription_bytes_per_client: 256 * 1024,
        max_transaction_bytes: 256 * 1024,
        auth_failures_per_second: 10,
    };

    /// Checks every field; the server refuses a configuration that fails.
    pub fn validate(&self) -> Result<()> {
        range("port", u64::from(self.port), 1, u64::from(u16::MAX))?;
        range("max_connections", self.max_connections as u64, 1, MAX_CONNECTIONS as u64)?;
        // A frame must at least hold `HELLO 3 AUTH default <token>`.
        range("limits.max_frame_bytes", self.limits.max_frame_bytes as u64, 256, 16 * 1024 * 1024)?;
        range("limits.max_args", self.limits.max_args as u64, 8, 1 << 20)?;
        range("limits.max_bulk_bytes", self.limits.max_bulk_bytes as u64, 64, u64::MAX)?;
        range("limits.max_inline_bytes", self.limits.max_inline_bytes as u64, 64, u64::MAX)?;
        not_above("limits.max_bulk_bytes", self.limits.max_bulk_bytes, "limits.max_frame_bytes", self.limits.max_frame_bytes)?;
        not_above("limits.max_inline_bytes", self.limits.max_inline_bytes, "limits.max_frame_bytes", self.limits.max_frame_bytes)?;
        range("output_limit_bytes", self.output_limit_bytes as u64, 1024, 1 << 30)?;
        range("output_pause_bytes", self.output_pause_bytes as u64, 1, u64::MAX)?;
        not_above("output_pause_bytes", self.output_pause_bytes, "output_limit_bytes", self.output_limit_bytes)?;
        range("max_subscriptions_per_client", self.max_subscriptions_per_client as u64, 1, 1 << 20)?;
        // The refusal message must fit the transmit buffer in one write.
        range("socket_rx_bytes", self.socket_rx_bytes as u64, 64, 1 << 24)?;
        range("socket_tx_bytes", self.socket_tx_bytes as u64, 64, 1 << 24)?;
        range("close_linger_ms", self.close_linger_ms, 1, 3_600_000)?;
        range("tcp_keep_alive_ms", self.tcp_keep_alive_ms, 0, 3_600_000)?;
        range("reserved_clients", self.reserved_clients as u64, 0, MAX_CONNECTIONS as u64)?;
        range("auth_timeout_ms", self.auth_timeout_ms, 100, 3_600_000)?;
        range("preauth_input_bytes", self.preauth_input_bytes as u64, 256, self.limits.max_frame_bytes as u64)?;
        range("send_timeout_ms", self.send_timeout_ms, 0, 3_600_000)?;
        range("memory_limit_bytes", self.memory_limit_bytes as u64, 64 * 1024, 1 << 40)?;
        range("max_subscription_bytes_per_client", self.max_subscription_bytes_per_client as u64, 64, 1 << 30)?;
        range("max_transaction_bytes", self.max_transaction_bytes as u64, 64, 1 << 30)?;
        range("auth_failures_per_second", u64::from(self.auth_failures_per_second), 1, 1_000_000)?;
        Ok(())
    }

    /// Slots unauthenticated connections may hold at once.
    pub fn unauthenticated_slots(&self) -> usize {
        self.max_connections.saturating_sub(self.reserved_clients).max(1)
    }

    /// What all unauthenticated connections together may have buffered:
    /// [`Config::unauthenticated_slots`] times
    /// [`Config::preauth_input_bytes`].
    pub fn preauth_budget_bytes(&self) -> usize {
        self.unauthenticated_slots().saturating_mul(self.preauth_input_bytes)
    }

    /// Every limit with its name, as `INFO net` and `CONFIG GET` show them
    /// (and as the kernel command line sets the ones it takes).
    pub fn parameters(&self) -> [(&'static str, u64); 20] {
        [
            ("port", u64::from(self.port)),
            ("max_clients", self.max_connections as u64),
            ("reserved_clients", self.reserved_clients as u64),
            ("unauthenticated_slots", self.unauthenticated_slots() as u64),
            ("auth_timeout_ms", self.auth_timeout_ms),
            ("preauth_input_bytes", self.preauth_input_bytes as u64),
            ("preauth_budget_bytes", self.preauth_budget_bytes() as u64),
            ("auth_failures_per_second", u64::from(self.auth_failures_per_second)),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("send_timeout_ms", self.send_timeout_ms),
            ("close_linger_ms", self.close_linger_ms),
            ("rate_limit", u64::from(self.rate_limit_per_second)),
            ("max_frame_bytes", self.limits.max_frame_bytes as u64),
            ("max_args", self.limits.max_args as u64),
            ("output_limit_bytes", self.output_limit_bytes as u64),
            ("output_pause_bytes", self.output_pause_bytes as u64),
            ("memory_limit_bytes", self.memory_limit_bytes as u64),
            ("max_subscriptions_per_client", self.max_subscriptions_per_client as u64),
            ("max_subscription_bytes_per_client", self.max_subscription_bytes_per_client as u64),
            ("max_transaction_bytes", self.max_transaction_bytes as u64),
        ]
    }

    /// The limits before `AUTH`: Redis's caps of 10 arguments and 16 KiB per
    /// argument (or ours when smaller), and frames, inline lines and
    /// arguments of at most [`Config::preauth_input_bytes`], so that what
    /// an unauthenticated client makes the server hold stays small. Bytes
    /// pipelined behind an `AUTH` wait in the socket until it succeeds and
    /// the wide limits apply.
    pub fn unauthenticated_limits(&self) -> Limits {
        let input = self.preauth_input_bytes;
        Limits {
            max_frame_bytes: self.limits.max_frame_bytes.min(input),
            max_args: self.limits.max_args.min(Limits::UNAUTHENTICATED.max_args),
            max_bulk_bytes: self.limits.max_bulk_bytes.min(Limits::UNAUTHENTICATED.max_bulk_bytes).min(input),
            max_inline_bytes: self.limits.max_inline_bytes.min(input),
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config::DEFAULT
    }
}

fn range(field: &'static str, value: u64, min: u64, max: u64) -> Result<()> {
    if (min..=max).contains(&value) { Ok(()) } else { Err(ConfigError::OutOfRange { field, min, max }) }
}

fn not_above(field: &'static str, value: usize, limit: &'static str, bound: usize) -> Result<()> {
    if value <= bound { Ok(()) } else { Err(ConfigError::Exceeds { field, limit }) }
}
