//! The synthetic feed as the broker runs it: a task publishing into a sink.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tickwire_feed::testing::CollectingSink;
use tickwire_feed::{FeedContext, FeedStats, StartError, SyntheticConfig};
use tokio_util::sync::CancellationToken;

fn ctx(sink: &Arc<CollectingSink>) -> (FeedContext, Arc<FeedStats>) {
    let stats = Arc::new(FeedStats::new());
    let ctx = FeedContext::new(sink.clone(), CancellationToken::new(), stats.clone());
    (ctx, stats)
}

#[tokio::test(start_paused = true)]
async fn publishes_every_symbol_at_about_the_configured_rate() {
    let sink = CollectingSink::new();
    let (ctx, stats) = ctx(&sink);
    let shutdown = ctx.shutdown.clone();
    let cfg = SyntheticConfig {
        seed: Some(11),
        ..SyntheticConfig::default()
    };
    let task = tickwire_feed_synthetic::spawn(cfg, ctx).unwrap();
    // Paused clock: this advances virtual time only, as fast as the feed runs.
    tokio::time::sleep(Duration::from_secs(60)).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the feed stops on shutdown")
        .unwrap();

    let ticks = sink.ticks();
    let expected = 20.0 * 4.0 * 60.0;
    let n = ticks.len() as f64;
    assert!(
        n > expected * 0.5 && n < expected * 1.6,
        "{n} ticks, expected about {expected}"
    );
    let topics: HashSet<&str> = ticks.iter().map(|t| t.topic.as_str()).collect();
    assert_eq!(topics.len(), 20);
    assert_eq!(stats.snapshot().ticks, ticks.len() as u64);
    assert!(!stats.snapshot().connected);
    for t in &ticks {
        let v: serde_json::Value = serde_json::from_str(&t.data).unwrap();
        for field in [
            "price",
            "bid",
            "ask",
            "bid_size",
            "ask_size",
            "volume",
            "source_ts",
        ] {
            assert!(v[field].is_number(), "{field} in {}", t.data);
        }
        assert!(v["bid"].as_f64() < v["ask"].as_f64());
    }
    let btc = sink.on("crypto.BTC-USD");
    let first = &btc[0].data;
    assert!(first.starts_with(r#"{"price":"#), "{first}");
    // Seqs per topic run 1, 2, 3, ...
    assert!(btc.iter().enumerate().all(|(i, t)| t.seq == i as u64 + 1));
}

#[tokio::test(start_paused = true)]
async fn a_prefix_and_a_subset_shape_the_topics() {
    let sink = CollectingSink::new();
    let (ctx, _) = ctx(&sink);
    let cfg = SyntheticConfig {
        topic_prefix: "demo".into(),
        symbols: vec!["fx.EUR-USD".into(), "eq.AAPL".into()],
        rate_hz: 10.0,
        seed: Some(3),
        ..SyntheticConfig::default()
    };
    let shutdown = ctx.shutdown.clone();
    let task = tickwire_feed_synthetic::spawn(cfg, ctx).unwrap();
    let ticks = sink
        .wait_until(Duration::from_secs(30), |t| {
            t.iter().any(|c| c.topic.as_str() == "demo.fx.EUR-USD")
                && t.iter().any(|c| c.topic.as_str() == "demo.eq.AAPL")
        })
        .await
        .expect("both topics tick");
    shutdown.cancel();
    task.await.unwrap();
    assert!(ticks.iter().all(|t| t.topic.as_str().starts_with("demo.")));
    let eur = sink.on("demo.fx.EUR-USD");
    let v: serde_json::Value = serde_json::from_str(&eur[0].data).unwrap();
    let bid = v["bid"].as_f64().unwrap();
    assert!((1.0..1.2).contains(&bid), "{bid}");
}

#[tokio::test]
async fn a_bad_config_is_refused_before_starting() {
    let sink = CollectingSink::new();
    let (ctx, _) = ctx(&sink);
    let cfg = SyntheticConfig {
        rate_hz: -1.0,
        ..SyntheticConfig::default()
    };
    match tickwire_feed_synthetic::spawn(cfg, ctx) {
        Err(StartError::Config(e)) => assert_eq!(e.field, "rate_hz"),
        other => panic!("expected a config error, got {other:?}"),
    }
}
