//! How long does matching patterns against topics hold the registry?
//!
//! Every publish waits while a subscribe, an unsubscribe or a new topic holds
//! the registry's write lock, so the matching done under it must not grow
//! with everything the broker holds:
//!
//! - `wildcard_subscribe/T`: one connection subscribes to 64 wildcard
//!   patterns (`vA.sB.*`, 10 topics each) and unsubscribes them again, in a
//!   broker with T topics. Before the topic index each pattern was tried on
//!   every topic: 64 x T matches, twice.
//! - `new_topic/W`: a new topic is created while W connections hold one
//!   wildcard pattern each (`wI.>`, none of which matches it). Before the
//!   pattern index each of the W patterns was tried on it.
//!
//! One thread, no contention; building the engine is setup, outside the
//! timing. The allocator is the broker's (mimalloc).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tickwire_engine::{ConnId, Drain, Engine, EngineConfig, Outbox, SubscribeRequest, wire_len};
use tickwire_proto::{Pattern, Topic, encode};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DATA: &[u8] = br#"{"price":1}"#;

fn config() -> EngineConfig {
    EngineConfig {
        max_topics: usize::MAX,
        ..EngineConfig::default()
    }
}

/// An engine with `n` topics `vA.sB.tC`, ten per `vA.sB`.
fn with_topics(n: usize) -> Engine {
    let engine = Engine::new(config());
    for i in 0..n {
        let t = Topic::parse(&format!("v{}.s{}.t{}", i / 1000, (i / 10) % 100, i % 10))
            .expect("bench topic is valid");
        engine.publish(&t, DATA).expect("no topic limit");
    }
    engine
}

fn wildcard_subscribe(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine_match");
    group.sample_size(10);
    for n in [1_000usize, 10_000, 100_000] {
        let engine = with_topics(n);
        let outbox: Arc<Outbox> = engine.new_outbox();
        engine.connect(ConnId(1), outbox.clone());
        let patterns: Vec<Pattern> = (0..64)
            .map(|k| {
                let i = (k * 997) % n;
                Pattern::parse(&format!("v{}.s{}.*", i / 1000, (i / 10) % 100))
                    .expect("bench pattern is valid")
            })
            .collect();
        let req = SubscribeRequest {
            patterns: patterns.clone(),
            snapshot: false,
            ..Default::default()
        };
        let mut scratch = Vec::new();
        group.bench_function(BenchmarkId::new("wildcard_subscribe", n), |b| {
            b.iter(|| {
                engine
                    .subscribe(ConnId(1), &req, |_| encode::subscribed(None, ["x"], None))
                    .expect("connection is registered");
                engine.unsubscribe(ConnId(1), &patterns);
                // The replies pile up otherwise (the writer's part, minus the socket).
                assert_eq!(outbox.drain(&mut scratch), Drain::Frames);
                outbox.written(scratch.iter().map(|e| wire_len(e.frame.len())).sum());
                scratch.clear();
            });
        });
    }
    group.finish();
}

/// An engine where `w` connections hold one wildcard pattern `wI.>` each.
fn with_wildcards(w: u64) -> (Engine, Vec<Arc<Outbox>>) {
    let engine = Engine::new(config());
    let outboxes = (0..w)
        .map(|i| {
            let outbox = engine.new_outbox();
            engine.connect(ConnId(i), outbox.clone());
            let req = SubscribeRequest {
                patterns: vec![Pattern::parse(&format!("w{i}.>")).expect("bench pattern is valid")],
                snapshot: false,
                ..Default::default()
            };
            engine
                .subscribe(ConnId(i), &req, |_| encode::subscribed(None, ["x"], None))
                .expect("connection is registered");
            outbox
        })
        .collect();
    (engine, outboxes)
}

fn new_topic(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine_match");
    group.sample_size(10);
    for w in [1_000u64, 10_000, 50_000] {
        group.bench_function(BenchmarkId::new("new_topic", w), |b| {
            // A fresh engine every 20,000 topics keeps memory bounded.
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let (engine, _outboxes) = with_wildcards(w);
                    let batch = (iters - done).min(20_000);
                    let topics: Vec<Topic> = (0..batch)
                        .map(|i| Topic::parse(&format!("n.t{i}")).expect("bench topic is valid"))
                        .collect();
                    let start = Instant::now();
                    for t in &topics {
                        engine.publish(t, DATA).expect("no topic limit");
                    }
                    spent += start.elapsed();
                    done += batch;
                }
                spent
            });
        });
    }
    group.finish();
}

criterion_group!(benches, wildcard_subscribe, new_topic);
criterion_main!(benches);
