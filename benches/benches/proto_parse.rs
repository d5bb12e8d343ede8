//! How fast is a client message parsed?
//!
//! `parse_client` on the two messages a broker reads most: a subscribe with
//! three topics and its options, and a publish carrying a 151-byte `data`
//! object. Throughput is in input bytes. The scratch buffer is reused, as the
//! reader task reuses it; the time includes the copy into it, simd-json's
//! parse, validating topics and building (then dropping) the `ClientMsg`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickwire_proto::{ClientMsg, parse_client};

const SUBSCRIBE: &[u8] = br#"{"op":"subscribe","id":1,"topics":["crypto.BTC-USD","crypto.ETH-USD","fx.*"],"snapshot":true,"max_hz":10}"#;

const PUBLISH: &[u8] = br#"{"op":"publish","id":42,"topic":"crypto.BTC-USD","data":{"price":64012.50,"bid":64012.25,"ask":64012.75,"bid_size":1.2500,"ask_size":0.5000,"volume_24h":18234.1275,"venue":"binance","venue_ts":1764131520150}}"#;

fn parse(c: &mut Criterion) {
    let mut scratch = Vec::with_capacity(1024);
    // The inputs parse to what they claim to be, so the bench times the success path.
    match parse_client(SUBSCRIBE, &mut scratch) {
        Ok(ClientMsg::Subscribe(s)) => assert_eq!(s.patterns.len(), 3),
        other => panic!("subscribe input: {other:?}"),
    }
    match parse_client(PUBLISH, &mut scratch) {
        Ok(ClientMsg::Publish { data, .. }) => assert_eq!(data.len(), 151),
        other => panic!("publish input: {other:?}"),
    }

    let mut group = c.benchmark_group("proto_parse");
    for (name, input) in [("subscribe", SUBSCRIBE), ("publish", PUBLISH)] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| parse_client(black_box(input), &mut scratch));
        });
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
