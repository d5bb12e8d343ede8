//! What does one connection's outbox cost per frame?
//!
//! * `push_lossless`: `push_tick` below the soft limit. Pushes are timed in
//!   chunks of [`BATCH`]; between chunks, untimed, the outbox is drained and
//!   its bytes reported written, so it never conflates and its queue keeps its
//!   capacity (as with a writer that reuses its batch vector).
//! * `drain_64`: `drain` of 64 pending frames into an empty vector with room
//!   for them, the writer's side of a wake-up. Each sample gets a fresh outbox
//!   filled outside the timing; dropping the frames is not timed either.
//! * `conflate_100_topics`: `push_tick` while conflating: the writer took
//!   more than the soft limit and has not written it (a blocked write), and
//!   ticks arrive round-robin over 100 topics, so each push replaces that
//!   topic's pending frame. Includes the amortised compaction of tombstones.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tickwire_engine::{
    Drain, EngineStats, Entry, Outbox, OutboxConfig, TopicId, encode_free_frame, wire_len,
};

/// Frames per drain: a writer that wakes for a burst takes about this many.
const BATCH: u64 = 64;

const TOPICS: u32 = 100;
