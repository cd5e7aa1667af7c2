//! `rtedge-control`: the control-plane server. It speaks RESP (through
//! `rtedge-proto`) over smoltcp TCP so that `redis-cli`, `redis-benchmark`
//! and `rtctl` steer the appliance, following `net/CONTROL.md`. It knows
//! nothing of the kernel and comes in two halves that exchange plain data:
//! the network half ([`NetServer`], with the pub/sub [`Hub`]) runs in the
//! NET_RX soft interrupt, turns socket bytes into [`Job`]s and writes the
//! replies; the command half ([`Dispatcher`] over a [`Backend`]) runs in
//! the control-plane kernel thread, keeps each connection's [`Session`]
//! and turns jobs into [`Completion`]s, finding every command (its own,
//! the kernel's and the application's) in one [`Registry`]. [`stack`]
//! sets the interface's address (static or DHCPv4).
//!
//! It must never block in the network half, never let one client's bad
//! input or slow reading affect another client (a protocol error closes
//! that connection only; a full output queue disconnects that client
//! only), and never allocate without a configured bound per client
//! ([`Config`]: frame, argument and output limits, subscriptions per
//! client). No input byte and no sequence of API calls, stale ids
//! included, may make it panic.
//!
//! # Running it in the kernel
//!
//! One lock (a bottom-half spinlock) guards the `Interface`, the
//! `SocketSet`, the [`Stack`] and the [`NetServer`] (which owns the
//! [`Hub`]); the [`Dispatcher`] belongs to the control-plane thread alone.
//!
//! - **NET_RX soft interrupt** (and the timer armed below): under the lock,
//!   `iface.poll`, `stack.poll`, `server.poll(now, sockets, &mut jobs)`,
//!   `iface.poll` again so the replies just written leave; then push the
//!   jobs onto the control thread's event list and wake it; arm a timer
//!   for the smaller of `iface.poll_delay` and [`NetServer::next_timeout`].
//!   Never blocks; allocates within the per-client bounds.
//! - **Control-plane thread**: pop a job, `dispatcher.execute(job)` without
//!   the lock (the backend may block, e.g. on the rt-pool), then under the
//!   lock `server.complete(now, completion)`; raise NET_RX so the bytes go
//!   out. If `complete` returns a job (the connection's next pipelined
//!   request), execute it the same way. If the completion carries
//!   `shutdown`, poll until [`NetServer::queued_output`] is `Some(0)` or
//!   `None` (or a bounded time passes), then shut down.
//! - **Publishers** (soft interrupts, tasklets, timers, kernel threads):
//!   queue the message on its channel in a [`hub::Backlog`] (a lock of its
//!   own); NET_RX takes a bounded batch per poll and calls
//!   [`NetServer::publish`] under the lock. RT threads and hard IRQs never
//!   publish: they emit into per-CPU event rings that the control thread
//!   drains. A connection blocked by a zero window is probed by smoltcp
//!   itself (0.13's persist timer; issue 12 item 8).
//!
//! Everything takes the same monotonic millisecond clock: `now` for the
//! server, [`Backend::now_ms`] for the dispatcher.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
// Input reaches most of this crate: make the no-panic rule mechanical.
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

extern crate alloc;

/// `log::debug!` with the `log` feature; otherwise the arguments are only
/// type-checked.
macro_rules! debug_log {
    ($($argument:tt)*) => {{
        #[cfg(feature = "log")]
        log::debug!($($argument)*);
        #[cfg(not(feature = "log"))]
        let _ = format_args!($($argument)*);
    }};
}

pub mod config;
pub mod dispatch;
pub mod http;
pub mod hub;
pub mod job;
pub mod memory;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod stack;

pub use config::{Config, ConfigError};
pub use dispatch::{AuthThrottle, Backend, CommandContext, DispatchStats, Dispatcher, Session};
pub use http::{HttpConfig, HttpError, HttpServer, HttpStats};
pub use hub::{Hub, HubStats};
pub use job::{Completion, ConnectionId, Job, SubscriptionChange};
pub use memory::MemoryBudget;
pub use registry::{BackendFn, CommandFn, Entry, Handler, Origin, RegisterError, Registry, SessionCommand};
pub use server::{NetServer, NetStats, PublishReport, PushOutcome, ServerError};
pub use stack::{NetConfig, NetConfigError, Stack, StackEvent, parse_net_config};
