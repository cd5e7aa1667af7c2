//! Pub/sub: which connections listen on which channels and patterns, and
//! the encoded message each one gets when something is published.
//!
//! The hub lives in the network half (the [`NetServer`](crate::NetServer)
//! owns one and applies each completion's subscription changes to it), so
//! kernel code publishes with one lock held and no thread involved.
//! Delivery is Redis's: a connection subscribed to a channel gets a
//! `message`, and one `pmessage` per matching pattern it holds; in RESP2
//! these are arrays, in RESP3 push frames.
//!
//! Messages that the kernel publishes (events, release samples) wait in a
//! [`Backlog`] first: one bounded queue per channel, so that a busy channel
//! drops its own oldest messages and never another channel's, and fan-out
//! to subscribers takes a bounded number of messages per network poll.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
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
    pub fn subscribe(&mut self, connection: ConnectionId, protocol: ProtocolVersion, channel: &[u8]) -> bool {
        let subscriber = self.subscriber(connection, protocol);
        if !subscriber.channels.insert(channel.to_vec()) {
            return false;
        }
        self.channels.entry(channel.to_vec()).or_default().insert(connection);
        true
    }

    /// Subscribes `connection` to the glob `pattern`; false if it already
    /// was.
    pub fn psubscribe(&mut self, connection: ConnectionId, protocol: ProtocolVersion, pattern: &[u8]) -> bool {
        let subscriber = self.subscriber(connection, protocol);
        if !subscriber.patterns.insert(pattern.to_vec()) {
            return false;
        }
        self.patterns.entry(pattern.to_vec()).or_default().insert(connection);
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
    pub fn apply(&mut self, connection: ConnectionId, protocol: ProtocolVersion, changes: &[SubscriptionChange]) {
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
        self.subscribers.get(&connection).map_or(0, |subscriber| subscriber.channels.len() + subscriber.patterns.len())
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
        self.subscribers.get(&connection).map_or(ProtocolVersion::Resp2, |subscriber| subscriber.protocol)
    }

    fn subscriber(&mut self, connection: ConnectionId, protocol: ProtocolVersion) -> &mut Subscriber {
        self.subscribers.entry(connection).or_insert_with(|| Subscriber { protocol, channels: BTreeSet::new(), patterns: BTreeSet::new() })
    }
}

fn remove_index(index: &mut BTreeMap<Vec<u8>, BTreeSet<ConnectionId>>, name: &[u8], connection: ConnectionId) {
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
        Encoded { reply, resp2: None, resp3: None }
    }

    fn bytes(&mut self, protocol: ProtocolVersion) -> Vec<u8> {
        let slot = match protocol {
            ProtocolVersion::Resp2 => &mut self.resp2,
            ProtocolVersion::Resp3 => &mut self.resp3,
        };
        slot.get_or_insert_with(|| self.reply.to_bytes(protocol)).clone()
    }
}

/// Counters of a [`Backlog`] channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Messages queued on the channel since it appeared.
    pub queued: u64,
    /// Messages taken for fan-out.
    pub taken: u64,
    /// Oldest messages dropped because the channel's queue was full.
    pub dropped: u64,
    /// Messages waiting now.
    pub waiting: usize,
}

#[derive(Debug, Default)]
struct ChannelQueue {
    messages: VecDeque<Vec<u8>>,
    stats: ChannelStats,
}

/// Messages waiting for fan-out, one bounded queue per channel.
///
/// Invariants: a channel holds at most `per_channel` messages, and a full
/// channel drops its own oldest (counted on that channel): one busy
/// channel never evicts another's messages. At most `max_channels`
/// channels are tracked; a message for a further channel is refused and
/// counted in [`Backlog::refused`] (channels with nothing waiting make room
/// first). [`Backlog::take`] serves channels in turn, one message each, so
/// a busy channel cannot starve a quiet one either.
#[derive(Debug)]
pub struct Backlog {
    channels: BTreeMap<Vec<u8>, ChannelQueue>,
    per_channel: usize,
    max_channels: usize,
    /// The channel served last (the next turn starts after it).
    cursor: Option<Vec<u8>>,
    refused: u64,
}

impl Backlog {
    /// An empty backlog of at most `max_channels` channels of
    /// `per_channel` messages each (both at least 1).
    pub fn new(per_channel: usize, max_channels: usize) -> Backlog {
        Backlog { channels: BTreeMap::new(), per_channel: per_channel.max(1), max_channels: max_channels.max(1), cursor: None, refused: 0 }
    }

    /// Queues `payload` on `channel`; false if refused (too many channels).
    pub fn push(&mut self, channel: &[u8], payload: &[u8]) -> bool {
        if !self.channels.contains_key(channel) && self.channels.len() >= self.max_channels {
            self.channels.retain(|_, queue| !queue.messages.is_empty());
            if self.channels.len() >= self.max_channels {
                self.refused = self.refused.saturating_add(1);
                return false;
            }
        }
        let queue = self.channels.entry(channel.to_vec()).or_default();
        if queue.messages.len() >= self.per_channel {
            queue.messages.pop_front();
            queue.stats.dropped = queue.stats.dropped.saturating_add(1);
        }
        queue.messages.push_back(payload.to_vec());
        queue.stats.queued = queue.stats.queued.saturating_add(1);
        true
    }

    /// Up to `budget` (channel, payload) pairs, channels in turn starting
    /// after the one served last, each channel's oldest first.
    pub fn take(&mut self, budget: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let mut names: Vec<Vec<u8>> =
            self.channels.iter().filter(|(_, queue)| !queue.messages.is_empty()).map(|(name, _)| name.clone()).collect();
        if names.is_empty() || budget == 0 {
            return out;
        }
        if let Some(cursor) = &self.cursor {
            let start = names.partition_point(|name| name <= cursor);
            names.rotate_left(start);
        }
        while out.len() < budget {
            let mut progressed = false;
            for name in &names {
                if out.len() >= budget {
                    break;
                }
                let Some(queue) = self.channels.get_mut(name) else { continue };
                let Some(payload) = queue.messages.pop_front() else { continue };
                queue.stats.taken = queue.stats.taken.saturating_add(1);
                self.cursor = Some(name.clone());
                out.push((name.clone(), payload));
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        out
    }

    /// Messages waiting, all channels.
    pub fn len(&self) -> usize {
        self.channels.values().map(|queue| queue.messages.len()).sum()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.channels.values().all(|queue| queue.messages.is_empty())
    }

    /// Messages refused because too many channels were tracked.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Each tracked channel's counters, by name.
    pub fn channel_stats(&self) -> impl Iterator<Item = (&[u8], ChannelStats)> {
        self.channels.iter().map(|(name, queue)| {
            let mut stats = queue.stats;
            stats.waiting = queue.messages.len();
            (name.as_slice(), stats)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test payloads are the ASCII the test wrote")]
mod backlog_tests {
    use super::*;

    fn taken(backlog: &mut Backlog, budget: usize) -> Vec<(String, String)> {
        backlog
            .take(budget)
            .into_iter()
            .map(|(channel, payload)| (String::from_utf8(channel).unwrap(), String::from_utf8(payload).unwrap()))
            .collect()
    }

    fn pair(channel: &str, payload: &str) -> (String, String) {
        (channel.into(), payload.into())
    }

    #[test]
    fn a_busy_channel_drops_its_own_oldest_and_never_another_channels() {
        let mut backlog = Backlog::new(3, 8);
        backlog.push(b"events", b"rare");
        for index in 0..100 {
            backlog.push(b"latency.rt", format!("{index}").as_bytes());
        }
        let stats: BTreeMap<Vec<u8>, ChannelStats> = backlog.channel_stats().map(|(name, stats)| (name.to_vec(), stats)).collect();
        assert_eq!(stats.get(b"latency.rt".as_slice()), Some(&ChannelStats { queued: 100, taken: 0, dropped: 97, waiting: 3 }));
        assert_eq!(stats.get(b"events".as_slice()), Some(&ChannelStats { queued: 1, taken: 0, dropped: 0, waiting: 1 }));
        assert_eq!(
            taken(&mut backlog, 10),
            vec![pair("events", "rare"), pair("latency.rt", "97"), pair("latency.rt", "98"), pair("latency.rt", "99")]
        );
        assert!(backlog.is_empty());
    }

    #[test]
    fn take_is_bounded_and_serves_channels_in_turn() {
        let mut backlog = Backlog::new(10, 8);
        for index in 0..4 {
            backlog.push(b"a", format!("a{index}").as_bytes());
        }
        backlog.push(b"b", b"b0");
        backlog.push(b"c", b"c0");
        assert_eq!(taken(&mut backlog, 2), vec![pair("a", "a0"), pair("b", "b0")]);
        // The next turn starts after `b`.
        assert_eq!(taken(&mut backlog, 2), vec![pair("c", "c0"), pair("a", "a1")]);
        assert_eq!(taken(&mut backlog, 5), vec![pair("a", "a2"), pair("a", "a3")]);
        assert_eq!(backlog.len(), 0);
        assert!(taken(&mut backlog, 5).is_empty());
    }

    #[test]
    fn channels_beyond_the_limit_are_refused_until_one_empties() {
        let mut backlog = Backlog::new(4, 2);
        assert!(backlog.push(b"a", b"1"));
        assert!(backlog.push(b"b", b"1"));
        assert!(!backlog.push(b"c", b"1"));
        assert_eq!(backlog.refused(), 1);
        let _ = backlog.take(1); // `a` empties
        assert!(backlog.push(b"c", b"1"));
        assert_eq!(backlog.len(), 2);
    }
}
