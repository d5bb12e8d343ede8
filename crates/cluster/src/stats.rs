//! Counters the cluster keeps for `/metrics`. Relaxed atomics: read for
//! reporting only, they never order anything.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Ticks of this node handed to NATS.
    pub published: AtomicU64,
    /// Ticks of this node never sent: the publish queue was full (NATS slow or down).
    pub publish_drops: AtomicU64,
    /// Publishes or flushes NATS refused (the ticks of that batch may be lost).
    pub publish_errors: AtomicU64,
    /// Messages from peers handed to the engine.
    pub received: AtomicU64,
    /// Messages from peers that were not a valid tick (bad header, subject or data).
    pub decode_errors: AtomicU64,
    /// Ticks from peers the engine refused (its topic limit).
    pub apply_errors: AtomicU64,
    /// Messages of this node's own epoch that came back (echo): ignored.
    pub own_ignored: AtomicU64,
    /// Connections to NATS established, the first one included.
    pub connects: AtomicU64,
    /// Peers' ticks the NATS client dropped: this node's receive queue was full.
    pub slow_consumer_events: AtomicU64,
    /// True while connected to NATS.
    pub connected: AtomicBool,
    /// Ticks waiting in the publish queue (sampled by the publisher task).
    pub queue_len: AtomicU64,
    /// State transfers from a peer completed (one per connect with a peer up).
    pub syncs: AtomicU64,
    /// Topics whose last value came from a state transfer.
    pub sync_topics: AtomicU64,
    /// Last ticks of quiet topics sent once more, for a peer that missed them.
    pub repeated: AtomicU64,
}

/// A copy of [`ClusterStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterSnapshot {
    pub published: u64,
    pub publish_drops: u64,
    pub publish_errors: u64,
    pub received: u64,
    pub decode_errors: u64,
    pub apply_errors: u64,
    pub own_ignored: u64,
    pub connects: u64,
    pub slow_consumer_events: u64,
    pub connected: bool,
    pub queue_len: u64,
    pub syncs: u64,
    pub sync_topics: u64,
    pub repeated: u64,
}

impl ClusterStats {
    pub fn snapshot(&self) -> ClusterSnapshot {
        let r = Ordering::Relaxed;
        ClusterSnapshot {
            published: self.published.load(r),
            publish_drops: self.publish_drops.load(r),
            publish_errors: self.publish_errors.load(r),
            received: self.received.load(r),
            decode_errors: self.decode_errors.load(r),
            apply_errors: self.apply_errors.load(r),
            own_ignored: self.own_ignored.load(r),
            connects: self.connects.load(r),
            slow_consumer_events: self.slow_consumer_events.load(r),
            connected: self.connected.load(r),
            queue_len: self.queue_len.load(r),
            syncs: self.syncs.load(r),
            sync_topics: self.sync_topics.load(r),
            repeated: self.repeated.load(r),
        }
    }
}

impl ClusterSnapshot {
    /// `(name, help, value)` of each counter, for an exporter: names without
    /// a prefix, in a fixed order.
    pub fn counters(&self) -> [(&'static str, &'static str, u64); 12] {
        [
            (
                "published",
                "Ticks of this node sent to NATS",
                self.published,
            ),
            (
                "publish_drops",
                "Ticks of this node not sent: publish queue full (NATS slow or down)",
                self.publish_drops,
            ),
            (
                "publish_errors",
                "Publishes or flushes refused by the NATS client",
                self.publish_errors,
            ),
            ("received", "Ticks from other nodes received", self.received),
            (
                "decode_errors",
                "Messages from NATS that were not a valid tick",
                self.decode_errors,
            ),
            (
                "apply_errors",
                "Ticks from other nodes refused by the engine (max_topics)",
                self.apply_errors,
            ),
            (
                "own_ignored",
                "Ticks of this node that came back from NATS, ignored",
                self.own_ignored,
            ),
            (
                "nats_connects",
                "Connections to NATS established",
                self.connects,
            ),
            (
                "nats_slow_consumer",
                "Peers' ticks the NATS client dropped: this node fell behind (slow consumer)",
                self.slow_consumer_events,
            ),
            (
                "syncs",
                "State transfers from a peer on (re)connect",
                self.syncs,
            ),
            (
                "sync_topics",
                "Topics whose last value came from a state transfer",
                self.sync_topics,
            ),
            (
                "repeated",
                "Last ticks of quiet topics sent to NATS once more, for a peer that missed them",
                self.repeated,
            ),
        ]
    }
}
