//! The Binance adapter against a mock venue on 127.0.0.1 speaking Binance's
//! message formats. Every wait has a timeout; no test sleeps.

use std::sync::Arc;
use std::time::Duration;

use tickwire_feed::testing::{CollectingSink, Message, MockVenue};
use tickwire_feed::{FeedContext, FeedStats};
use tickwire_feed_binance::{BinanceConfig, spawn};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(5);

fn config(venue: &MockVenue) -> BinanceConfig {
    let mut cfg = BinanceConfig::new(&["BTCUSDT", "ETHUSDT"]);
    cfg.url = venue.url("/stream");
    // Reconnect fast in tests.
    cfg.reconnect_base_ms = 10;
    cfg.reconnect_max_ms = 50;
    cfg
}

fn context(sink: &Arc<CollectingSink>) -> (FeedContext, Arc<FeedStats>, CancellationToken) {
    let stats = Arc::new(FeedStats::new());
    let shutdown = CancellationToken::new();
    (
        FeedContext::new(sink.clone(), shutdown.clone(), stats.clone()),
        stats,
        shutdown,
    )
}

fn trade(id: u64, price: &str) -> String {
    format!(
        r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":1764131520150,"s":"BTCUSDT","t":{id},"p":"{price}","q":"0.01000000","T":1764131520149,"m":true,"M":true}}}}"#
    )
}

#[tokio::test]
async fn ticks_pings_errors_and_reconnects_against_a_mock_binance() {
    let mut venue = MockVenue::start().await;
    let sink = CollectingSink::new();
    let (ctx, stats, shutdown) = context(&sink);
    let task = spawn(config(&venue), ctx).unwrap();

    // Connect and subscribe.
    let mut conn = venue.accept(T).await;
    let sub = conn.recv_text(T).await;
    let v: serde_json::Value = serde_json::from_str(&sub).unwrap();
    assert_eq!(v["method"], "SUBSCRIBE");
    assert_eq!(v["id"], 1);
    let params: Vec<&str> = v["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        params,
        [
            "btcusdt@bookTicker",
            "btcusdt@trade",
            "btcusdt@miniTicker",
            "ethusdt@bookTicker",
            "ethusdt@trade",
            "ethusdt@miniTicker"
        ]
    );
    conn.send_text(r#"{"result":null,"id":1}"#).await;

    // Ticks land on the symbol's topic with Binance's digits.
    conn.send_text(r#"{"stream":"btcusdt@bookTicker","data":{"u":400900217,"s":"BTCUSDT","b":"64012.00000000","B":"1.50000000","a":"64012.50000000","A":"0.25000000"}}"#).await;
    conn.send_text(&trade(1000, "64012.50000000")).await;
    conn.send_text(r#"{"stream":"ethusdt@miniTicker","data":{"e":"24hrMiniTicker","E":1764131521000,"s":"ETHUSDT","c":"3400.25","o":"3388.25","h":"3410","l":"3370","v":"180000.5","q":"610000000"}}"#).await;
    let ticks = sink.wait_for_count(3, T).await.expect("three ticks");
    assert_eq!(ticks[0].topic.as_str(), "binance.BTCUSDT");
    assert_eq!(
        ticks[1].data,
        r#"{"price":64012.50000000,"bid":64012.00000000,"ask":64012.50000000,"bid_size":1.50000000,"ask_size":0.25000000,"source_ts":1764131520149}"#
    );
    assert_eq!(ticks[2].topic.as_str(), "binance.ETHUSDT");
    assert_eq!(
        ticks[2].data,
        r#"{"price":3400.25,"volume":180000.5,"source_ts":1764131521000}"#
    );
    assert!(stats.snapshot().connected);

    // Binance pings; the feed answers with the same payload.
    conn.send_ping(b"binance-1764131520").await;
    assert_eq!(conn.recv_pong(T).await, b"binance-1764131520");

    // Malformed messages are counted and skipped; the next good one goes through.
    conn.send_text("not json at all").await;
    conn.send_text(
        r#"{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1001,"p":"sixty"}}"#,
    )
    .await;
    conn.send_text(r#"{"stream":"btcusdt@trade","data":"#).await;
    conn.send_text(&trade(1001, "64013.00000000")).await;
    sink.wait_for_count(4, T)
        .await
        .expect("the feed survives bad messages");
    assert_eq!(stats.snapshot().parse_errors, 3);

    // A venue error is counted, not fatal; a trade id jump is a gap.
    conn.send_text(r#"{"error":{"code":2,"msg":"Invalid request: unknown stream"},"id":1}"#)
        .await;
    conn.send_text(&trade(1005, "64014.00000000")).await;
    sink.wait_for_count(5, T).await.expect("still running");
    let s = stats.snapshot();
    assert_eq!((s.venue_errors, s.gaps, s.reconnects), (1, 1, 0));

    // The venue drops the connection without a Close frame: the feed
    // reconnects and subscribes again.
    conn.drop_connection();
    let mut conn = venue.accept(T).await;
    assert_eq!(conn.recv_text(T).await, sub);
    conn.send_text(&trade(2000, "64020.00000000")).await;
    let ticks = sink
        .wait_for_count(6, T)
        .await
        .expect("ticks after the reconnect");
    assert!(ticks[5].data.starts_with(r#"{"price":64020.00000000,"#));
    assert_eq!(stats.snapshot().reconnects, 1);
    // Trade ids restart per connection: the jump to 2000 is not a gap.
    assert_eq!(stats.snapshot().gaps, 1);

    // The venue closes properly (as Binance does at 24 h): same again.
    conn.close(1000, "session over").await;
    let mut conn = venue.accept(T).await;
    assert_eq!(conn.recv_text(T).await, sub);
    assert_eq!(stats.snapshot().reconnects, 2);

    // Shutdown: the feed sends Close and its task ends.
    shutdown.cancel();
    match conn.recv(T).await {
        Some(Message::Close(_)) | None => {}
        other => panic!("expected Close, got {other:?}"),
    }
    tokio::time::timeout(T, task)
        .await
        .expect("the feed stops")
        .unwrap();
    assert!(!stats.snapshot().connected);
}

#[tokio::test]
async fn a_planned_reconnect_comes_before_the_session_limit() {
    let mut venue = MockVenue::start().await;
    let sink = CollectingSink::new();
    let (ctx, stats, shutdown) = context(&sink);
    let mut cfg = config(&venue);
    cfg.session_max_ms = 300;
    let task = spawn(cfg, ctx).unwrap();
    let mut first = venue.accept(T).await;
    let sub = first.recv_text(T).await;
    // The feed closes the old session itself, then opens a new one at once.
    match first.recv(T).await {
        Some(Message::Close(_)) => {}
        other => panic!("expected the feed to close the session, got {other:?}"),
    }
    let mut second = venue.accept(T).await;
    assert_eq!(second.recv_text(T).await, sub);
    assert_eq!(stats.snapshot().reconnects, 1);
    shutdown.cancel();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_silent_venue_is_left_for_a_new_connection() {
    let mut venue = MockVenue::start().await;
    let sink = CollectingSink::new();
    let (ctx, stats, shutdown) = context(&sink);
    let mut cfg = config(&venue);
    cfg.idle_timeout_ms = 200;
    let task = spawn(cfg, ctx).unwrap();
    let mut first = venue.accept(T).await;
    first.recv_text(T).await;
    // Send nothing: after 200 ms the feed gives up on this connection.
    let mut second = venue.accept(T).await;
    second.recv_text(T).await;
    assert!(stats.snapshot().reconnects >= 1);
    shutdown.cancel();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_venue_that_fails_the_handshake_is_retried_with_backoff() {
    // A TCP listener that hangs up at once: every connect attempt fails.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink = CollectingSink::new();
    let (ctx, stats, shutdown) = context(&sink);
    let mut cfg = BinanceConfig::new(&["BTCUSDT"]);
    cfg.url = format!("ws://{}/ws", listener.local_addr().unwrap());
    cfg.reconnect_base_ms = 10;
    cfg.reconnect_max_ms = 20;
    let task = spawn(cfg, ctx).unwrap();
    for _ in 0..4 {
        let (tcp, _) = tokio::time::timeout(T, listener.accept())
            .await
            .expect("another attempt")
            .unwrap();
        drop(tcp);
    }
    assert!(stats.snapshot().reconnects >= 3);
    assert!(!stats.snapshot().connected);
    assert!(sink.is_empty());
    shutdown.cancel();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}
