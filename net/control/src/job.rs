//! The plain data the two halves exchange: a [`Job`] (one request of one
//! connection) goes from the network half to the command half, a
//! [`Completion`] (its reply bytes and what they change) comes back.

use alloc::vec::Vec;

use rtedge_proto::{ProtocolVersion, Request};
use smoltcp::wire::IpAddress;

/// One connection: its socket slot and a number never used for another
/// connection (a global counter, so it also serves as the client id that
/// `CLIENT ID` and `HELLO` report). A completion or push carrying the id of
/// a connection that has ended is dropped, even when its slot holds a new
/// connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId {
    /// Index of the server's socket slot.
    pub slot: u32,
    /// Unique per accepted connection, starting at 1.
    pub generation: u64,
}

impl ConnectionId {
    /// The client id shown to clients.
    pub fn client_id(self) -> u64 {
        self.generation
    }
}

/// A complete request of one connection, ready to execute. The network
/// half hands out at most one job per connection at a time; the next one
/// comes after the [`Completion`] of this one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// Whose request.
    pub connection: ConnectionId,
    /// The request.
    pub request: Request,
    /// The client's address, if known: failed authentications back off
    /// per source address as well as per connection.
    pub peer: Option<IpAddress>,
}

/// A change of a connection's pub/sub subscriptions, applied to the
/// network half's [`Hub`](crate::Hub) when the completion is delivered, so
/// no message overtakes its subscription's confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionChange {
    /// `SUBSCRIBE channel`.
    Subscribe(Vec<u8>),
    /// `UNSUBSCRIBE channel`.
    Unsubscribe(Vec<u8>),
    /// `PSUBSCRIBE pattern`.
    PatternSubscribe(Vec<u8>),
    /// `PUNSUBSCRIBE pattern`.
    PatternUnsubscribe(Vec<u8>),
}

/// The outcome of a [`Job`]: reply bytes, already encoded for the
/// connection's protocol, and the session facts the network half needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Whose reply.
    pub connection: ConnectionId,
    /// The encoded reply (several for pub/sub confirmations).
    pub bytes: Vec<u8>,
    /// Close the connection once these bytes are sent (`QUIT`,
    /// `SHUTDOWN`).
    pub close_after: bool,
    /// Hold the reply, and the connection's next request, until this time
    /// (the delay after a failed `AUTH`).
    pub not_before_ms: Option<u64>,
    /// The protocol the connection speaks from now on (pub/sub messages are
    /// encoded for it).
    pub protocol: ProtocolVersion,
    /// Whether the connection is authenticated (it gets the wider request
    /// limits).
    pub authenticated: bool,
    /// Pub/sub changes to apply on delivery.
    pub subscription_changes: Vec<SubscriptionChange>,
    /// `SHUTDOWN` was accepted with this exit code: the kernel shuts down
    /// once this reply has been sent.
    pub shutdown: Option<i64>,
}

impl Completion {
    /// A plain reply for an authenticated RESP2 connection, changing
    /// nothing else.
    pub fn reply(connection: ConnectionId, bytes: Vec<u8>) -> Completion {
        Completion {
            connection,
            bytes,
            close_after: false,
            not_before_ms: None,
            protocol: ProtocolVersion::Resp2,
            authenticated: true,
            subscription_changes: Vec::new(),
            shutdown: None,
        }
    }
}
