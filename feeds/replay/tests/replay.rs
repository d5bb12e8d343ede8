//! The replay feed end to end: file -> task -> sink.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tickwire_feed::testing::CollectingSink;
use tickwire_feed::{FeedContext, FeedStats, ReplayConfig, StartError};
use tickwire_feed_replay::{Recording, load};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

fn ctx(sink: &Arc<CollectingSink>) -> FeedContext {
    FeedContext::new(
        sink.clone(),
        CancellationToken::new(),
        Arc::new(FeedStats::new()),
    )
}

/// A recording of `n + 1` records, one every `step_ms`, over two topics.
fn evenly_spaced(n: u64, step_ms: u64) -> tempfile::NamedTempFile {
    let mut text = String::new();
    for i in 0..=n {
        let topic = if i % 2 == 0 { "t.a" } else { "t.b" };
        text.push_str(&format!(
            "{{\"ts\":{},\"topic\":\"{topic}\",\"price\":{i}.50}}\n",
            1_000_000 + i * step_ms
        ));
    }
    let f = tempfile::Builder::new()
        .suffix(".ndjson")
        .tempfile()
        .unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

#[test]
fn the_sample_recordings_load() {
    let rec = load(&ReplayConfig::new(sample("sample.ndjson"))).unwrap();
    assert!((200..600).contains(&rec.len()), "{} records", rec.len());
    assert!(
        (25_000..=30_000).contains(&rec.duration_ms()),
        "{} ms",
        rec.duration_ms()
    );
    let mut topics: Vec<&str> = rec.records().iter().map(|r| r.topic.as_str()).collect();
    topics.sort();
    topics.dedup();
    assert_eq!(
        topics,
        ["crypto.BTC-USD", "crypto.ETH-USD", "eq.AAPL", "fx.EUR-USD"]
    );

    let csv = load(&ReplayConfig::new(sample("sample.csv"))).unwrap();
    assert!(csv.len() > 50);
    // The CSV holds the NDJSON's first seconds, field for field.
    for (c, n) in csv.records().iter().zip(rec.records()) {
        assert_eq!((&c.topic, c.at_ms, &c.data), (&n.topic, n.at_ms, &n.data));
    }
}

#[tokio::test]
async fn replay_reproduces_the_ticks_in_order() {
    let cfg = ReplayConfig {
        speed: 0.0,
        ..ReplayConfig::new(sample("sample.ndjson"))
    };
    let rec = load(&cfg).unwrap();
    let sink = CollectingSink::new();
    let ctx = ctx(&sink);
    let stats = ctx.stats.clone();
    let task = tickwire_feed_replay::spawn(cfg, ctx).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("a replay without loop ends")
        .unwrap();
    let got = sink.ticks();
    assert_eq!(got.len(), rec.len());
    for (g, r) in got.iter().zip(rec.records()) {
        assert_eq!(g.topic, r.topic);
        assert_eq!(g.data.as_bytes(), &r.data[..], "byte for byte");
    }
    let first = std::fs::read_to_string(sample("sample.ndjson")).unwrap();
    let line = first.lines().next().unwrap();
    // The flat line minus `ts` and `topic` is the tick, digits and all.
    assert!(
        line.ends_with(&got[0].data[1..]),
        "{line} vs {}",
        got[0].data
    );
    assert_eq!(stats.snapshot().ticks, rec.len() as u64);
    assert!(!stats.snapshot().connected);
}

#[tokio::test(start_paused = true)]
async fn the_speed_factor_sets_the_pace() {
    // 1 s of recording: 101 records 10 ms apart.
    let file = evenly_spaced(100, 10);
    for (speed, want_ms) in [(10.0, 100.0), (1.0, 1000.0), (0.5, 2000.0), (0.0, 0.0)] {
        let sink = CollectingSink::new();
        let cfg = ReplayConfig {
            speed,
            ..ReplayConfig::new(file.path())
        };
        let start = Instant::now();
        tickwire_feed_replay::run(cfg, ctx(&sink)).await.unwrap();
        let took = start.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(sink.len(), 101);
        assert!(
            (took - want_ms).abs() <= want_ms * 0.05,
            "speed {speed}: took {took} ms, want {want_ms} ms"
        );
    }
}

#[tokio::test]
async fn the_speed_factor_holds_in_real_time_too() {
    // Generous bound on a busy machine: never early, not much late.
    let file = evenly_spaced(100, 10);
    let sink = CollectingSink::new();
    let cfg = ReplayConfig {
        speed: 10.0,
        ..ReplayConfig::new(file.path())
    };
    let start = std::time::Instant::now();
    tickwire_feed_replay::run(cfg, ctx(&sink)).await.unwrap();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(99), "{took:?}");
    assert!(took < Duration::from_millis(600), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_loop_starts_over_at_the_same_pace() {
    let file = evenly_spaced(9, 100);
    let sink = CollectingSink::new();
    let cfg = ReplayConfig {
        looping: true,
        ..ReplayConfig::new(file.path())
    };
    let ctx = ctx(&sink);
    let shutdown = ctx.shutdown.clone();
    let start = Instant::now();
    let task = tickwire_feed_replay::spawn(cfg, ctx).unwrap();
    let ticks = sink
        .wait_for_count(25, Duration::from_secs(60))
        .await
        .expect("the loop goes on");
    // Pass 2 starts one interval (100 ms) after pass 1's last record (900 ms).
    assert_eq!(start.elapsed(), Duration::from_millis(2400));
    shutdown.cancel();
    task.await.unwrap();
    for (i, t) in ticks.iter().take(25).enumerate() {
        assert!(
            t.data.contains(&format!("\"price\":{}.50", i % 10)),
            "{i}: {}",
            t.data
        );
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_a_replay_midway() {
    let file = evenly_spaced(100, 1000);
    let sink = CollectingSink::new();
    let ctx = ctx(&sink);
    let shutdown = ctx.shutdown.clone();
    let task = tickwire_feed_replay::spawn(ReplayConfig::new(file.path()), ctx).unwrap();
    sink.wait_for_count(3, Duration::from_secs(10))
        .await
        .unwrap();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_millis(10), task)
        .await
        .expect("stops at once")
        .unwrap();
    assert_eq!(sink.len(), 3);
}

#[tokio::test]
async fn a_prefix_goes_before_every_recorded_topic() {
    let sink = CollectingSink::new();
    let cfg = ReplayConfig {
        speed: 0.0,
        topic_prefix: "replay".into(),
        ..ReplayConfig::new(sample("sample.csv"))
    };
    tickwire_feed_replay::run(cfg, ctx(&sink)).await.unwrap();
    assert!(
        sink.ticks()
            .iter()
            .all(|t| t.topic.as_str().starts_with("replay."))
    );
    assert!(!sink.on("replay.crypto.BTC-USD").is_empty());
}

#[test]
fn bad_recordings_are_refused_with_their_line() {
    match load(&ReplayConfig::new("/nonexistent/rec.ndjson")) {
        Err(StartError::Recording { line: 0, .. }) => {}
        other => panic!("{other:?}"),
    }
    let f = tempfile::Builder::new()
        .suffix(".ndjson")
        .tempfile()
        .unwrap();
    std::fs::write(
        f.path(),
        "{\"ts\":1,\"topic\":\"a\",\"p\":1}\n{\"ts\":2,\"topic\":\"a\"\n",
    )
    .unwrap();
    let e = load(&ReplayConfig::new(f.path())).unwrap_err();
    assert!(matches!(e, StartError::Recording { line: 2, .. }), "{e}");
    assert!(e.to_string().contains(":2: not a JSON object"), "{e}");
    std::fs::write(f.path(), "\n\n").unwrap();
    assert!(load(&ReplayConfig::new(f.path())).is_err());
    let e = load(&ReplayConfig {
        speed: f64::NAN,
        ..ReplayConfig::new(f.path())
    })
    .unwrap_err();
    assert!(
        matches!(e, StartError::Config(ref c) if c.field == "speed"),
        "{e}"
    );
}

#[test]
fn recordings_read_from_text_too() {
    let r = Recording::from_ndjson("{\"ts\":1,\"topic\":\"a\",\"p\":1}", "").unwrap();
    assert_eq!(r.len(), 1);
}
