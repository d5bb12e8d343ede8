//! What does one connection's outbox cost per frame?
//!
//! * `push_lossless`: `push_tick` below the soft limit. Pushes are timed in
//!   chunks of [`BATCH`]; between chunks, untimed, the outbox is drained and
//!   its bytes reported written, so it never conflates and its queue keeps its
//!   capacity (as with a writer that reuses its batch vector). The first push
//!   of a chunk pays the wake-up (`Notify::notify_one`).
//! * `drain_64`: `drain` of [`BATCH`] pending frames into an empty vector with
//!   room for them, the writer's side of a wake-up. Each drain gets a fresh
//!   outbox filled outside the timing; dropping the frames is not timed either.
//! * `conflate_100_topics`: `push_tick` above the soft limit: the writer took
//!   the soft limit's worth of frames and has not written them (a blocked
//!   write), and ticks arrive round-robin over 100 topics, so each push
//!   replaces that topic's pending frame. Includes the amortised compaction
//!   of the tombstones it leaves.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tickwire_engine::{Drain, EngineStats, Entry, Outbox, OutboxConfig, TopicId, wire_len};
use tickwire_proto::encode;

/// Frames per drain: a writer that wakes for a burst takes about this many.
const BATCH: u64 = 64;

/// Topics the conflating outbox's ticks are spread over.
const TOPICS: u32 = 100;

/// A 151-byte price update, as a venue feed would publish it.
const DATA: &[u8] = br#"{"price":64012.50,"bid":64012.25,"ask":64012.75,"bid_size":1.2500,"ask_size":0.5000,"volume_24h":18234.1275,"venue":"binance","venue_ts":1764131520150}"#;

/// The default limits, but a slow-consumer clock that cannot run out while the
/// bench runs (the conflating outbox sits above the soft limit for seconds).
fn config() -> OutboxConfig {
    OutboxConfig {
        slow_timeout_ms: 3_600_000,
        ..OutboxConfig::default()
    }
}

/// The frame the engine would hand every subscriber: encoded once, shared.
fn frame() -> Bytes {
    encode::tick("crypto.BTC-USD", 1_042, 1_764_131_520_150, DATA)
}

fn settle(outbox: &Outbox, scratch: &mut Vec<Entry>) {
    assert_eq!(outbox.drain(scratch), Drain::Frames);
    outbox.written(scratch.iter().map(|e| wire_len(e.frame.len())).sum());
    scratch.clear();
}

fn push_lossless(c: &mut Criterion) {
    let stats = Arc::new(EngineStats::default());
    let outbox = Outbox::new(config(), stats);
    let frame = frame();
    let mut scratch = Vec::with_capacity(BATCH as usize);
    let mut group = c.benchmark_group("outbox");
    group.throughput(Throughput::Elements(1));
    group.bench_function("push_lossless", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(BATCH);
                let start = Instant::now();
                for _ in 0..n {
                    outbox.push_tick(black_box(TopicId(7)), frame.clone(), start, None);
                }
                timed += start.elapsed();
                left -= n;
                settle(&outbox, &mut scratch);
            }
            timed
        });
    });
    group.finish();
    assert!(!outbox.is_conflating());
}

fn drain_batch(c: &mut Criterion) {
    let stats = Arc::new(EngineStats::default());
    let frame = frame();
    let now = Instant::now();
    let mut group = c.benchmark_group("outbox");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("drain_64", |b| {
        b.iter_batched(
            || {
                let outbox = Outbox::new(config(), stats.clone());
                for _ in 0..BATCH {
                    outbox.push_tick(TopicId(7), frame.clone(), now, None);
                }
                (outbox, Vec::with_capacity(BATCH as usize))
            },
            |(outbox, mut out)| {
                let drained = outbox.drain(&mut out);
                (outbox, out, drained)
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn conflate(c: &mut Criterion) {
    let stats = Arc::new(EngineStats::default());
    let cfg = config();
    let outbox = Outbox::new(cfg, stats);
    let frame = frame();
    let now = Instant::now();
    // Fill to just under the soft limit, losslessly, and let the writer take it
    // all without reporting it written: those bytes stay in the buffered amount.
    let mut i = 0u32;
    while outbox.buffered() + wire_len(frame.len()) <= cfg.soft_limit_bytes {
        outbox.push_tick(TopicId(i % TOPICS), frame.clone(), now, None);
        i += 1;
    }
    let mut inflight = Vec::new();
    assert_eq!(outbox.drain(&mut inflight), Drain::Frames);
    while !outbox.is_conflating() {
        outbox.push_tick(TopicId(i % TOPICS), frame.clone(), now, None);
        i += 1;
    }

    let mut group = c.benchmark_group("outbox");
    group.throughput(Throughput::Elements(1));
    group.bench_function("conflate_100_topics", |b| {
        b.iter(|| {
            outbox.push_tick(black_box(TopicId(i % TOPICS)), frame.clone(), now, None);
            i = i.wrapping_add(1);
        });
    });
    group.finish();
    assert!(outbox.is_conflating());
    assert!(outbox.buffered() > cfg.soft_limit_bytes);
    assert_eq!(outbox.slow_reason(), None);
}

criterion_group!(benches, push_lossless, drain_batch, conflate);
criterion_main!(benches);
