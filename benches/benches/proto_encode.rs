//! How fast is a `tick` frame encoded?
//!
//! `encode::tick` with a 151-byte `data` object: one allocation, the fixed
//! fields, two integers and the data spliced in. The engine does this once per
//! publish, whatever the number of subscribers.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickwire_proto::encode;

/// A 151-byte price update, as a venue feed would publish it.
const DATA: &[u8] = br#"{"price":64012.50,"bid":64012.25,"ask":64012.75,"bid_size":1.2500,"ask_size":0.5000,"volume_24h":18234.1275,"venue":"binance","venue_ts":1764131520150}"#;

fn encode_tick(c: &mut Criterion) {
    let mut group = c.benchmark_group("proto_encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("tick", |b| {
        b.iter(|| {
            encode::tick(
                black_box("crypto.BTC-USD"),
                black_box(1_042),
                black_box(1_764_131_520_150),
                black_box(DATA),
            )
        });
    });
    group.finish();
}

criterion_group!(benches, encode_tick);
criterion_main!(benches);
