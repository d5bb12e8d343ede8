//! How long does it take N connections to subscribe to one topic?
//!
//! A dashboard fleet opening at once (after a deploy, a network blip) is N
//! subscribes to the same few topics. Each subscriber is appended to the
//! topic's list, so the whole storm should grow linearly with N: the time
//! per subscribe (criterion's throughput, in elements) should stay flat from
//! 1,000 to 20,000. Session 5's positions kept by the connection searched the
//! topic's list for every new subscriber, which made the storm O(N^2); this
//! bench is the check that it is not any more.
//!
//! What is measured: `Engine::subscribe` of N connections to the topic
//! (created beforehand, with a value, `snapshot: false`), one thread, no
//! contention. Making the engine, the outboxes and the connections is setup,
//! outside the timing. The allocator is the broker's (mimalloc).

use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tickwire_engine::{ConnId, Engine, EngineConfig, Outbox, SubscribeRequest};
use tickwire_proto::{Pattern, Topic, encode};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOPIC: &str = "crypto.BTC-USD";

fn connected(n: u64) -> (Engine, Vec<Arc<Outbox>>) {
    let engine = Engine::new(EngineConfig::default());
    let topic = Topic::parse(TOPIC).expect("bench topic is valid");
    engine
        .publish(&topic, br#"{"price":1}"#)
        .expect("first topic fits");
    let outboxes = (0..n)
        .map(|i| {
            let outbox = engine.new_outbox();
            engine.connect(ConnId(i), outbox.clone());
            outbox
        })
        .collect();
    (engine, outboxes)
}

fn subscribe(c: &mut Criterion) {
    let req = SubscribeRequest {
        patterns: vec![Pattern::parse(TOPIC).expect("bench pattern is valid")],
        snapshot: false,
        ..Default::default()
    };
    let mut group = c.benchmark_group("engine_subscribe");
    group.sample_size(10);
    for n in [1_000u64, 5_000, 20_000] {
        group.throughput(Throughput::Elements(n));
        group.bench_function(BenchmarkId::new("one_topic", n), |b| {
            b.iter_batched(
                || connected(n),
                |(engine, outboxes)| {
                    for i in 0..n {
                        engine
                            .subscribe(ConnId(i), &req, |_| encode::subscribed(None, [TOPIC], None))
                            .expect("connection is registered");
                    }
                    (engine, outboxes)
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, subscribe);
criterion_main!(benches);
