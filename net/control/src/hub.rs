//! Pub/sub: which connections listen on which channels and patterns, and
//! the encoded message each one gets when something is published.
//!
//! The hub lives in the network half (the [`NetServer`](crate::NetServer)
//! owns one and applies each completion's subscription changes to it), so
//! kernel code publishes with one lock held and no thread involved.
//! Delivery is Redis's: a connection subscribed to a channel gets a
//! `message`, and one `pmessage` per matching pattern it holds; in RESP2
//! these are arrays, in RESP3 push frames.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use rtedge_proto::util::glob_match;
use rtedge_proto::{ProtocolVersion, Reply};

use crate::job::{ConnectionId, SubscriptionChange};

/// Counters for `INFO`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Calls of [`Hub::publish`].
    pub published: u64,
    /// Messages produced for subscribers (one per receiving
    /// subscription).
    pub matched: u64,
}

#[derive(Debug)]
struct Subscriber {
    protocol: ProtocolVersion,
    channels: BTreeSet<Vec<u8>>,
    patterns: BTreeSet<Vec<u8>>,
}

impl Subscriber {
    fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.patterns.is_empty()
    }
}

/// Channel and pattern subscriptions across connections.
#[derive(Debug, Default)]
pub struct Hub {
    subscribers: BTreeMap<ConnectionId, Subscriber>,
    channels: BTreeMap<Vec<u8>, BTreeSet<ConnectionId>>,
    patterns: BTreeMap<Vec<u8>, BTreeSet<ConnectionId>>,
    stats: HubStats,
}

impl Hub {
    /// No subscriptions.
    pub fn new() -> Hub {
        Hub::default()
    }

    /// Subscribes `connection` to `channel`; false if it already was.
    pub fn subscribe(
        &mut self,
        connection: ConnectionId,
        protocol: ProtocolVersion,
        channel: &[u8],
    ) -> bool {
        let subscriber = self.subscriber(connection, protocol);
        if !subscriber.channels.insert(channel.to_vec()) {
            return false;
        }
        self.channels
            .entry(channel.to_vec())
            .or_default()
            .insert(connection);
        true
    }

    /// Subscribes `connection` to the glob `pattern`; false if it already
    /// was.
    pub fn psubscribe(
        &mut self,
        connection: ConnectionId,
        protocol: ProtocolVersion,
        pattern: &[u8],
    ) -> bool {
        let subscriber = self.subscriber(connection, protocol);
        if !subscriber.patterns.insert(pattern.to_vec()) {
            return false;
        }
        self.patterns
            .entry(pattern.to_vec())
            .or_default()
            .insert(connection);
        true
    }

    /// Unsubscribes `connection` from `channel`; false if it was not
    /// subscribed.
    pub fn unsubscribe(&mut self, connection: ConnectionId, channel: &[u8]) -> bool {
        let Some(subscriber) = self.subscribers.get_mut(&connection) else {
            return false;
        };
        if !subscriber.channels.remove(channel) {
            return false;
        }
        if subscriber.is_empty() {
            self.subscribers.remove(&connection);
        }
        remove_index(&mut self.channels, channel, connection);
        true
    }

    /// Unsubscribes `connection` from `pattern`; false if it was not
    /// subscribed.
    pub fn punsubscribe(&mut self, connection: ConnectionId, pattern: &[u8]) -> bool {
        let Some(subscriber) = self.subscribers.get_mut(&connection) else {
            return false;
        };
        if !subscriber.patterns.remove(pattern) {
            return false;
        }
        if subscriber.is_empty() {
            self.subscribers.remove(&connection);
        }
        remove_index(&mut self.patterns, pattern, connection);
        true
    }

    /// Applies a completion's changes and records the protocol the
    /// connection now speaks.
    pub fn apply(
        &mut self,
        connection: ConnectionId,
        protocol: ProtocolVersion,
        changes: &[SubscriptionChange],
    ) {
        for change in changes {
            match change {
                SubscriptionChange::Subscribe(channel) => {
                    self.subscribe(connection, protocol, channel);
                }
                SubscriptionChange::Unsubscribe(channel) => {
                    self.unsubscribe(connection, channel);
                }
                SubscriptionChange::PatternSubscribe(pattern) => {
                    self.psubscribe(connection, protocol, pattern);
                }
                SubscriptionChange::PatternUnsubscribe(pattern) => {
                    self.punsubscribe(connection, pattern);
                }
            }
        }
        if let Some(subscriber) = self.subscribers.get_mut(&connection) {
            subscriber.protocol = protocol;
        }
    }

    /// Forgets every subscription of `connection` (it closed).
    pub fn remove_connection(&mut self, connection: ConnectionId) {
        let Some(subscriber) = self.subscribers.remove(&connection) else {
            return;
        };
        for channel in &subscriber.channels {
            remove_index(&mut self.channels, channel, connection);
        }
        for pattern in &subscriber.patterns {
            remove_index(&mut self.patterns, pattern, connection);
        }
    }

    /// Channels plus patterns `connection` is subscribed to.
    pub fn subscription_count(&self, connection: ConnectionId) -> usize {
        self.subscribers.get(&connection).map_or(0, |subscriber| {
            subscriber.channels.len() + subscriber.patterns.len()
        })
    }

    /// Connections with at least one subscription.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.len()
    }

    /// Distinct channels and patterns subscribed to (`pubsub_channels`,
    /// `pubsub_patterns` in `INFO`).
    pub fn channel_and_pattern_count(&self) -> (usize, usize) {
        (self.channels.len(), self.patterns.len())
    }

    /// The message for every subscription that `channel` reaches: channel
    /// subscribers first, then pattern subscribers pattern by pattern, each
    /// encoded for its connection's protocol. Hand each to
    /// [`NetServer::push`](crate::NetServer::push) (or call
    /// [`NetServer::publish`](crate::NetServer::publish), which does both).
    pub fn publish(&mut self, channel: &[u8], payload: &[u8]) -> Vec<(ConnectionId, Vec<u8>)> {
        self.stats.published = self.stats.published.saturating_add(1);
        let mut messages = Vec::new();
        if let Some(listeners) = self.channels.get(channel) {
            let mut encoded = Encoded::new(Reply::message(channel, payload));
            for &connection in listeners {
                let protocol = self.protocol_of(connection);
                messages.push((connection, encoded.bytes(protocol)));
            }
        }
        for (pattern, listeners) in &self.patterns {
            if !glob_match(pattern, channel, false) {
                continue;
            }
            let mut encoded = Encoded::new(Reply::pattern_message(pattern, channel, payload));
            for &connection in listeners {
                let protocol = self.protocol_of(connection);
                messages.push((connection, encoded.bytes(protocol)));
            }
        }
        self.stats.matched = self.stats.matched.saturating_add(messages.len() as u64);
        messages
    }

    /// The counters.
    pub fn stats(&self) -> HubStats {
        self.stats
    }

    fn protocol_of(&self, connection: ConnectionId) -> ProtocolVersion {
        self.subscribers
            .get(&connection)
            .map_or(ProtocolVersion::Resp2, |subscriber| subscriber.protocol)
    }

    fn subscriber(
        &mut self,
        connection: ConnectionId,
        protocol: ProtocolVersion,
    ) -> &mut Subscriber {
        self.subscribers
            .entry(connection)
            .or_insert_with(|| Subscriber {
                protocol,
                channels: BTreeSet::new(),
                patterns: BTreeSet::new(),
            })
    }
}

fn remove_index(
    index: &mut BTreeMap<Vec<u8>, BTreeSet<ConnectionId>>,
    name: &[u8],
    connection: ConnectionId,
) {
    if let Some(listeners) = index.get_mut(name) {
        listeners.remove(&connection);
        if listeners.is_empty() {
            index.remove(name);
        }
    }
}

/// One message encoded at most once per protocol.
struct Encoded {
    reply: Reply,
    resp2: Option<Vec<u8>>,
    resp3: Option<Vec<u8>>,
}

impl Encoded {
    fn new(reply: Reply) -> Encoded {
        Encoded {
            reply,
            resp2: None,
            resp3: None,
        }
    }

    fn bytes(&mut self, protocol: ProtocolVersion) -> Vec<u8> {
        let slot = match protocol {
            ProtocolVersion::Resp2 => &mut self.resp2,
            ProtocolVersion::Resp3 => &mut self.resp3,
        };
        slot.get_or_insert_with(|| self.reply.to_bytes(protocol))
            .clone()
    }
}
