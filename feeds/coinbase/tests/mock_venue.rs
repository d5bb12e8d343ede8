//! The Coinbase adapter against a mock venue on 127.0.0.1 speaking Coinbase
//! Exchange's message formats. Every wait has a timeout; no test sleeps.

use std::sync::Arc;
use std::time::Duration;

use tickwire_feed::testing::{CollectingSink, Message, MockConn, MockVenue};
use tickwire_feed::{FeedContext, FeedStats};
use tickwire_feed_coinbase::{CoinbaseConfig, spawn};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(5);

fn ticker(product: &str, seq: u64, trade: u64, price: &str) -> String {
    format!(
        r#"{{"type":"ticker","sequence":{seq},"product_id":"{product}","price":"{price}","open_24h":"63000.00","volume_24h":"12000.12345678","low_24h":"62000","high_24h":"65000","volume_30d":"300000.1","best_bid":"64012.00","best_bid_size":"0.50000000","best_ask":"64012.51","best_ask_size":"1.25000000","side":"buy","time":"2025-11-26T04:32:00.123456Z","trade_id":{trade},"last_size":"0.01"}}"#
    )
}

fn heartbeat(product: &str, seq: u64, last_trade: u64) -> String {
    format!(
        r#"{{"type":"heartbeat","sequence":{seq},"last_trade_id":{last_trade},"product_id":"{product}","time":"2025-11-26T04:32:01.000000Z"}}"#
    )
}

async fn subscribed(conn: &mut MockConn) -> String {
    let sub = conn.recv_text(T).await;
    conn.send_text(r#"{"type":"subscriptions","channels":[{"name":"ticker","product_ids":["BTC-USD","ETH-USD"]},{"name":"heartbeat","product_ids":["BTC-USD","ETH-USD"]}]}"#).await;
    sub
}

#[tokio::test]
async fn ticks_gaps_errors_and_reconnects_against_a_mock_coinbase() {
    let mut venue = MockVenue::start().await;
    let sink = CollectingSink::new();
    let stats = Arc::new(FeedStats::new());
    let shutdown = CancellationToken::new();
    let mut cfg = CoinbaseConfig::new(&["BTC-USD", "ETH-USD"]);
    cfg.url = venue.url("/");
    cfg.reconnect_base_ms = 10;
    cfg.reconnect_max_ms = 50;
    let task = spawn(
        cfg,
        FeedContext::new(sink.clone(), shutdown.clone(), stats.clone()),
    )
    .unwrap();

    // Connect and subscribe.
    let mut conn = venue.accept(T).await;
    let sub = subscribed(&mut conn).await;
    let v: serde_json::Value = serde_json::from_str(&sub).unwrap();
    assert_eq!(v["type"], "subscribe");
    assert_eq!(v["product_ids"], serde_json::json!(["BTC-USD", "ETH-USD"]));
    assert_eq!(v["channels"], serde_json::json!(["ticker", "heartbeat"]));

    // Ticks, on the product's topic, with Coinbase's digits.
    conn.send_text(&heartbeat("BTC-USD", 90, 20)).await;
    conn.send_text(&ticker("BTC-USD", 100, 21, "64012.51000000"))
        .await;
    conn.send_text(&ticker("ETH-USD", 5000, 900, "3400.25"))
        .await;
    let ticks = sink.wait_for_count(2, T).await.expect("two ticks");
    assert_eq!(ticks[0].topic.as_str(), "coinbase.BTC-USD");
    assert_eq!(
        ticks[0].data,
        r#"{"price":64012.51000000,"bid":64012.00,"ask":64012.51,"bid_size":0.50000000,"ask_size":1.25000000,"volume":12000.12345678,"source_ts":1764131520123}"#
    );
    assert_eq!(ticks[1].topic.as_str(), "coinbase.ETH-USD");

    // Pings are answered.
    conn.send_ping(b"cb").await;
    assert_eq!(conn.recv_pong(T).await, b"cb");

    // Malformed messages and a venue error are counted, never fatal.
    conn.send_text(r#"{"type":"ticker","sequence":101,"product_id":"BTC-USD","price":"NaN"}"#)
        .await;
    conn.send_text("}{").await;
    conn.send_text(r#"{"type":"error","message":"Failed to subscribe","reason":"XYZ-USD is not a valid product"}"#).await;
    conn.send_text(&ticker("BTC-USD", 102, 22, "64013.00"))
        .await;
    sink.wait_for_count(3, T).await.expect("the feed survives");
    let s = stats.snapshot();
    assert_eq!((s.parse_errors, s.venue_errors), (2, 1));

    // A stale sequence is skipped.
    conn.send_text(&ticker("BTC-USD", 101, 22, "1.00")).await;
    // Upstream gap: heartbeats announce trade 25, no ticker ever shows it.
    conn.send_text(&heartbeat("BTC-USD", 110, 25)).await;
    conn.send_text(&heartbeat("BTC-USD", 120, 25)).await;
    conn.send_text(&ticker("BTC-USD", 121, 26, "64015.00"))
        .await;
    let ticks = sink.wait_for_count(4, T).await.expect("the next tick");
    assert!(
        ticks[3].data.starts_with(r#"{"price":64015.00,"#),
        "{}",
        ticks[3].data
    );
    let s = stats.snapshot();
    assert_eq!((s.out_of_order, s.gaps, s.reconnects), (1, 1, 0));

    // The venue drops the connection: the feed reconnects and resubscribes.
    conn.drop_connection();
    let mut conn = venue.accept(T).await;
    assert_eq!(subscribed(&mut conn).await, sub);
    // Sequences restart with the connection: a lower one is not stale now.
    conn.send_text(&ticker("BTC-USD", 50, 30, "64020.00")).await;
    sink.wait_for_count(5, T)
        .await
        .expect("ticks after the reconnect");
    assert_eq!(stats.snapshot().reconnects, 1);
    assert_eq!(stats.snapshot().out_of_order, 1);

    shutdown.cancel();
    match conn.recv(T).await {
        Some(Message::Close(_)) | None => {}
        other => panic!("expected Close, got {other:?}"),
    }
    tokio::time::timeout(T, task)
        .await
        .expect("the feed stops")
        .unwrap();
}

#[tokio::test]
async fn missing_heartbeats_make_the_feed_reconnect() {
    let mut venue = MockVenue::start().await;
    let sink = CollectingSink::new();
    let stats = Arc::new(FeedStats::new());
    let shutdown = CancellationToken::new();
    let mut cfg = CoinbaseConfig::new(&["BTC-USD"]);
    cfg.url = venue.url("/");
    cfg.reconnect_base_ms = 10;
    cfg.reconnect_max_ms = 50;
    cfg.idle_timeout_ms = 300;
    let task = spawn(
        cfg,
        FeedContext::new(sink.clone(), shutdown.clone(), stats.clone()),
    )
    .unwrap();
    let mut first = venue.accept(T).await;
    subscribed(&mut first).await;
    let mut second = venue.accept(T).await;
    subscribed(&mut second).await;
    assert_eq!(stats.snapshot().reconnects, 1);
    shutdown.cancel();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}
