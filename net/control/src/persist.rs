//! The zero-window probe (TCP's persist timer) that smoltcp 0.12 lacks.
//!
//! A TCP sender whose peer advertised a zero window must probe it: the
//! window update that reopens it is a bare ACK, never retransmitted, and
//! some peers send none at all (a receiver avoiding silly windows stays
//! quiet until its window reaches a full segment). smoltcp sends nothing
//! in that state, so its connection waits for the keep-alive (60 s here)
//! or for whatever the peer sends next (issue 12, item 8: replies stopped
//! for seconds after a client paused its reading).
//!
//! [`persist`]: while a connection has bytes queued to send, its
//! keep-alive interval is [`PERSIST_INTERVAL_MS`]. A keep-alive is
//! smoltcp's only probe (one byte below the acknowledged sequence, which
//! any peer answers with an ACK carrying its current window), and it fires
//! only when the connection is otherwise quiet (no retransmission pending,
//! nothing sent or received for the interval): exactly a stalled sender.
//! With nothing queued, the configured keep-alive comes back. The short
//! interval is set while bytes are queued, so before the peer's
//! zero-window ACK arrives: smoltcp computes the next keep-alive from the
//! interval in force at the last segment sent or received. The cost is at
//! most one probe per interval per stalled connection, and one probe after
//! a burst of replies has been acknowledged.

use smoltcp::iface::SocketSet;
use smoltcp::socket::{AnySocket, tcp};
use smoltcp::time::Duration;

/// How long a connection with bytes to send stays quiet before it asks its
/// peer for the window.
pub const PERSIST_INTERVAL_MS: u64 = 250;

/// Sets every established TCP socket's keep-alive: [`PERSIST_INTERVAL_MS`]
/// while it has bytes queued to send, `keep_alive_ms` (0: none) otherwise.
/// Call it after the server has written and before the interface polls.
pub fn persist(sockets: &mut SocketSet<'_>, keep_alive_ms: u64) {
    let configured = (keep_alive_ms > 0).then(|| Duration::from_millis(keep_alive_ms));
    let probing = Some(Duration::from_millis(PERSIST_INTERVAL_MS));
    for (_, socket) in sockets.iter_mut() {
        let Some(socket) = tcp::Socket::downcast_mut(socket) else {
            continue;
        };
        if !matches!(
            socket.state(),
            tcp::State::Established | tcp::State::CloseWait
        ) {
            continue;
        }
        let wanted = if socket.send_queue() > 0 {
            probing
        } else {
            configured
        };
        if socket.keep_alive() != wanted {
            socket.set_keep_alive(wanted);
        }
    }
}
