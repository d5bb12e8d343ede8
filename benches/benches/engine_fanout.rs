//! How many deliveries per second does one topic's fan-out make?
//!
//! `Engine::publish` to one topic with 10, 1,000 and 10,000 subscribers, each a
//! registered connection with its own `Outbox`; throughput is in deliveries
//! (subscribers reached per publish). Variants:
//!
//! * `exact`: subscribed to the topic itself; the writers keep up, every
//!   outbox is drained after every publish (each holds at most one frame).
//! * `exact_backlog32`: the same, but the writers drain only every 32
//!   publishes, so each outbox holds up to 32 frames. At 10,000 subscribers
//!   that is 10,000 queues of up to 32 x 40-byte entries, which no longer fit
//!   in cache: the variant shows what a lagging writer costs the fan-out.
//! * `wildcard`: as `exact`, subscribed with `crypto.*`. Wildcards are
//!   resolved when the topic is created, so it should cost the same per tick.
//!
//! What is measured: only the `publish` calls, on one thread, with no
//! contention. `iter_custom` times them in chunks (1 or 32 publishes);
//! between chunks, untimed, every outbox is drained and its bytes reported
//! written, as each connection's writer would do. Draining 10,000 outboxes
//! touches the same memory as publishing to them, so it stays out of the timing;
//! with chunks of one publish the two clock reads per publish (tens of ns)
//! are inside it, a few percent at 10 subscribers. One scratch vector is
//! swapped through all the outboxes, as a writer reuses its batch, so queues
//! keep their capacity and the timed pushes do not allocate. Every outbox stays
//! lossless (at most 32 frames, under 8 KB, against a 256 KiB soft limit;
//! checked after each run). The first publish after a drain pays each outbox's
//! wake-up (`Notify::notify_one`), as it does when writers keep up. The drain
//! has just touched the outboxes from the same core, so their cache lines are
//! warmer than with writers on other cores: a floor, not a ceiling.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tickwire_engine::{
    ConnId, Drain, Engine, EngineConfig, Entry, Outbox, SubscribeRequest, wire_len,
};
use tickwire_proto::{Pattern, Topic, encode};

const TOPIC: &str = "crypto.BTC-USD";

/// A 151-byte price update, as a venue feed would publish it.
const DATA: &[u8] = br#"{"price":64012.50,"bid":64012.25,"ask":64012.75,"bid_size":1.2500,"ask_size":0.5000,"volume_24h":18234.1275,"venue":"binance","venue_ts":1764131520150}"#;

/// An engine with `subscribers` connections holding `pattern`, the topic
/// created, and every outbox empty.
fn engine_with(subscribers: u64, pattern: &str) -> (Engine, Vec<Arc<Outbox>>) {
    let engine = Engine::new(EngineConfig::default());
    let req = SubscribeRequest {
        patterns: vec![Pattern::parse(pattern).expect("bench pattern is valid")],
        snapshot: false,
        ..Default::default()
    };
    let outboxes: Vec<Arc<Outbox>> = (0..subscribers)
        .map(|i| {
            let outbox = engine.new_outbox();
            engine.connect(ConnId(i), outbox.clone());
            engine
                .subscribe(ConnId(i), &req, |_| {
                    encode::subscribed(None, [pattern], None)
                })
                .expect("connection is registered and under its pattern limit");
            outbox
        })
        .collect();
    let topic = Topic::parse(TOPIC).expect("bench topic is valid");
    engine.publish(&topic, DATA).expect("first topic fits");
    drain_all(&outboxes, &mut Vec::new());
    (engine, outboxes)
}

/// What each connection's writer does per wake-up, minus the socket.
fn drain_all(outboxes: &[Arc<Outbox>], scratch: &mut Vec<Entry>) {
    for outbox in outboxes {
        assert_eq!(outbox.drain(scratch), Drain::Frames);
        let bytes = scratch.iter().map(|e| wire_len(e.frame.len())).sum();
        outbox.written(bytes);
        scratch.clear();
    }
}

fn fanout(c: &mut Criterion) {
    let topic = Topic::parse(TOPIC).expect("bench topic is valid");
    let mut group = c.benchmark_group("engine_fanout");
    // (name, pattern, publishes between drains)
    let variants = [
        ("exact", TOPIC, 1),
        ("exact_backlog32", TOPIC, 32),
        ("wildcard", "crypto.*", 1),
    ];
    for (variant, pattern, drain_every) in variants {
        for subscribers in [10u64, 1_000, 10_000] {
            let (engine, outboxes) = engine_with(subscribers, pattern);
            let mut scratch = Vec::with_capacity(drain_every as usize);
            group.throughput(Throughput::Elements(subscribers));
            group.bench_function(BenchmarkId::new(variant, subscribers), |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let n = left.min(drain_every);
                        let start = Instant::now();
                        for _ in 0..n {
                            let published = engine
                                .publish(black_box(&topic), black_box(DATA))
                                .expect("topic exists");
                            black_box(published);
                        }
                        timed += start.elapsed();
                        left -= n;
                        drain_all(&outboxes, &mut scratch);
                    }
                    timed
                });
            });
            // The claim above: no outbox ever left the lossless regime.
            assert_eq!(engine.stats().conflated.load(Ordering::Relaxed), 0);
            assert!(outboxes.iter().all(|o| !o.is_conflating()));
        }
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
