//! Feed health: `status` stale and live (PROTOCOL.md "status").

use std::time::{Duration, Instant};

use serde_json::json;
use tickwire_testkit::{TestServer, publish_http};

#[tokio::test]
async fn a_quiet_topic_goes_stale_and_its_next_tick_revives_it() {
    let srv = TestServer::start_with(|e, g| {
        e.stale_after_ms = 400;
        g.stale_check_ms = 50;
    })
    .await;
    let mut c = srv.client().await;
    c.subscribe(json!({"op":"subscribe","topics":["q.*"]}))
        .await;
    publish_http(srv.addr, "q.a", json!({"p":1})).await;
    let tick = c.expect_type("tick").await;
    let last_ts = tick["ts"].as_u64().unwrap();
    let quiet_from = Instant::now();
    let s = c.recv().await;
    assert_eq!(
        s,
        json!({"type":"status","topic":"q.a","state":"stale","since":last_ts})
    );
    assert!(
        quiet_from.elapsed() <= Duration::from_millis(400 + 1000),
        "{:?}",
        quiet_from.elapsed()
    );
    // A late subscriber sees the snapshot and that it is stale.
    let mut late = srv.client().await;
    late.send(json!({"op":"subscribe","topics":["q.a"]})).await;
    let frames = late.barrier("b").await;
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["subscribed", "snapshot", "status"]);
    assert_eq!(frames[2]["state"], "stale");
    let (_, body) = tickwire_testkit::http(srv.addr, "GET", "/api/topics", &[], b"").await;
    assert!(body.contains(r#""state":"stale""#), "{body}");
    // The next tick: `live` with it, `since` its time.
    publish_http(srv.addr, "q.a", json!({"p":2})).await;
    let live = c.recv().await;
    let tick = c.recv().await;
    assert_eq!(
        (live["type"].as_str(), live["state"].as_str()),
        (Some("status"), Some("live"))
    );
    assert_eq!(tick["type"], "tick");
    assert_eq!(live["since"], tick["ts"]);
    assert_eq!(srv.metric("tickwire_stale_events_total").await, 1.0);
}
