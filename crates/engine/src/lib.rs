//! Topic fan-out: the latest value and history of each topic, and which
//! connections must hear of each tick. No sockets, no runtime.
//! Entry point: [`Engine`].
//!
//! [`Engine::publish`] is synchronous and never waits on a client: it takes the
//! topic's next seq, encodes the `tick` frame once, keeps it as the last value
//! and in the history ring, and hands a refcounted clone to each subscriber's
//! [`Outbox`]. Wildcards are resolved when a subscription or a topic is
//! created, never per tick.
//!
//! # Layout
//! * `registry`: [`Engine`], topic slots, subscriptions, recovery, staleness
//! * `outbox`: one connection's pending frames, buffered amount, conflation, max_hz
//! * `stats`: counters for metrics
//! * `idhash`: maps keyed by broker-assigned ids, with a cheap hash

mod idhash;
mod index;
mod outbox;
mod registry;
mod stats;
mod vecmap;

pub use outbox::{
    BatchSend, BatchSink, Corked, DirectSink, DirectWritten, Drain, Entry, Outbox, OutboxConfig,
    QUIET_QUEUE_ENTRIES, SlowReason, cork, corked, uncork, uncork_with, wire_len,
};
pub use registry::{
    CONFLICT_WINDOW_MS, Engine, EngineConfig, PublishError, Published, RemoteOutcome, Replicated,
    Replicator, SubscribeError, SubscribeRequest, TopicInfo, TopicSnapshot,
};
pub use stats::EngineStats;

/// A connection, as the engine knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A topic's index in the registry; never reused while the engine lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub u32);
