//! Subscribing, snapshots, live ticks, wildcards, de-duplication, publish and ping.

use serde_json::json;
use tickwire_testkit::{TestServer, publish_http};

#[tokio::test]
async fn welcome_is_the_first_frame() {
    let srv = TestServer::start().await;
    let mut c = tickwire_testkit::Client::connect(&srv.ws_url(), &[])
        .await
        .unwrap();
    let w = c.recv().await;
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["epoch"], srv.engine().epoch());
    assert_eq!(w["heartbeat_ms"], 15000);
    let t = w["server_time"].as_u64().unwrap();
    assert!(t.abs_diff(tickwire_proto::now_ms()) < 60_000);
}

#[tokio::test]
async fn subscriber_gets_subscribed_then_snapshots_then_live_ticks() {
    let srv = TestServer::start().await;
    publish_http(srv.addr, "crypto.BTC-USD", json!({"price": 64000.5})).await;
    publish_http(srv.addr, "crypto.ETH-USD", json!({"price": 3000})).await;
    publish_http(srv.addr, "fx.EUR-USD", json!({"price": 1.08})).await;
    let mut c = srv.client().await;
    c.send(json!({"op":"subscribe","id":1,"topics":["crypto.*"]}))
        .await;
    let sub = c.recv().await;
    assert_eq!(
        sub,
        json!({"type":"subscribed","id":1,"topics":["crypto.*"]})
    );
    let mut snaps = [c.recv().await, c.recv().await];
    snaps.sort_by_key(|s| s["topic"].as_str().unwrap().to_owned());
    assert_eq!(snaps[0]["type"], "snapshot");
    assert_eq!(snaps[0]["topic"], "crypto.BTC-USD");
    assert_eq!(snaps[0]["seq"], 1);
    assert_eq!(snaps[0]["data"], json!({"price": 64000.5}));
    assert_eq!(snaps[1]["topic"], "crypto.ETH-USD");
    publish_http(srv.addr, "fx.EUR-USD", json!({"price": 1.09})).await;
    publish_http(srv.addr, "crypto.BTC-USD", json!({"price": 64001})).await;
    let t = c.recv().await;
    assert_eq!(t["type"], "tick");
    assert_eq!(t["topic"], "crypto.BTC-USD");
    assert_eq!(t["seq"], 2);
    assert_eq!(t["data"], json!({"price": 64001}));
    let ts = t["ts"].as_u64().unwrap();
    assert!(ts.abs_diff(tickwire_proto::now_ms()) < 60_000);
}

#[tokio::test]
async fn data_is_passed_through_byte_for_byte() {
    let srv = TestServer::start().await;
    let mut sub = srv.client().await;
    sub.subscribe(json!({"op":"subscribe","topics":["x.y"]}))
        .await;
    let mut p = srv.publisher().await;
    let data = r#"{ "price" : 64012.50000000000001, "big": 123456789012345678901234567890, "e": 1E+3, "s": "\u00e9\"" }"#;
    p.send_text(&format!(
        r#"{{"op":"publish","topic":"x.y","data":{data}}}"#
    ))
    .await;
    let raw = sub.recv_text().await;
    assert!(
        raw.starts_with(r#"{"type":"tick","topic":"x.y","seq":1,"ts":"#),
        "{raw}"
    );
    assert!(raw.ends_with(&format!(r#","data":{data}}}"#)), "{raw}");
}

#[tokio::test]
async fn wildcards_follow_nats_rules() {
    let srv = TestServer::start().await;
    let mut star = srv.client().await;
    star.subscribe(json!({"op":"subscribe","topics":["crypto.*"]}))
        .await;
    let mut tail = srv.client().await;
    tail.subscribe(json!({"op":"subscribe","topics":["crypto.>"]}))
        .await;
    let mut p = srv.publisher().await;
    for t in [
        "crypto.BTC-USD",
        "crypto.BTC-USD.book",
        "crypto",
        "fx.EUR-USD",
    ] {
        p.send(json!({"op":"publish","topic":t,"data":{}})).await;
    }
    p.barrier("done").await;
    let got: Vec<String> = star
        .barrier("b")
        .await
        .iter()
        .map(|v| v["topic"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, vec!["crypto.BTC-USD"]);
    let got: Vec<String> = tail
        .barrier("b")
        .await
        .iter()
        .map(|v| v["topic"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, vec!["crypto.BTC-USD", "crypto.BTC-USD.book"]);
}

#[tokio::test]
async fn a_topic_matched_twice_is_delivered_once() {
    let srv = TestServer::start().await;
    publish_http(srv.addr, "fx.EUR-USD", json!({"p":1})).await;
    let mut c = srv.client().await;
    c.send(json!({"op":"subscribe","id":"s","topics":["fx.*","fx.>","fx.EUR-USD"]}))
        .await;
    let frames = c.barrier("b1").await;
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0]["type"], "subscribed");
    assert_eq!(frames[1]["type"], "snapshot");
    publish_http(srv.addr, "fx.EUR-USD", json!({"p":2})).await;
    // A second subscription matching the same topic adds no second delivery.
    c.send(json!({"op":"subscribe","topics":[">"],"snapshot":false}))
        .await;
    publish_http(srv.addr, "fx.EUR-USD", json!({"p":3})).await;
    let frames = c.barrier("b2").await;
    let kinds: Vec<(&str, u64)> = frames
        .iter()
        .map(|f| (f["type"].as_str().unwrap(), f["seq"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(kinds, vec![("tick", 2), ("subscribed", 0), ("tick", 3)]);
}

#[tokio::test]
async fn snapshot_false_sends_no_snapshot() {
    let srv = TestServer::start().await;
    publish_http(srv.addr, "a.b", json!({"p":1})).await;
    let mut c = srv.client().await;
    c.send(json!({"op":"subscribe","topics":["a.b"],"snapshot":false}))
        .await;
    let frames = c.barrier("b").await;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["type"], "subscribed");
}

#[tokio::test]
async fn snapshot_then_live_has_no_gap_while_publishing() {
    let srv = TestServer::start().await;
    let mut p = srv.publisher().await;
    p.send(json!({"op":"publish","id":0,"topic":"busy.t","data":{"n":0}}))
        .await;
    p.expect_type("ack").await;
    let publisher = tokio::spawn(async move {
        for n in 1..=3000 {
            p.send(json!({"op":"publish","topic":"busy.t","data":{"n":n}}))
                .await;
        }
        p.barrier("end").await;
    });
    let mut c = srv.client().await;
    c.subscribe(json!({"op":"subscribe","topics":["busy.t"]}))
        .await;
    let first = c.recv().await;
    assert_eq!(first["type"], "snapshot");
    let mut last = first["seq"].as_u64().unwrap();
    assert_eq!(first["data"]["n"].as_u64().unwrap() + 1, last);
    while last < 3001 {
        let t = c.recv().await;
        assert_eq!(t["type"], "tick");
        assert_eq!(
            t["seq"].as_u64().unwrap(),
            last + 1,
            "no gap after the snapshot"
        );
        last += 1;
    }
    publisher.await.unwrap();
}

#[tokio::test]
async fn unsubscribe_stops_ticks() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    c.subscribe(json!({"op":"subscribe","topics":["a.*","b.x"]}))
        .await;
    c.send(json!({"op":"unsubscribe","id":9,"topics":["a.*"]}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type":"unsubscribed","id":9,"topics":["a.*"]})
    );
    publish_http(srv.addr, "a.x", json!({})).await;
    publish_http(srv.addr, "b.x", json!({})).await;
    let frames = c.barrier("b").await;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["topic"], "b.x");
}

#[tokio::test]
async fn publish_with_id_is_acked_and_without_is_not() {
    let srv = TestServer::start().await;
    let mut p = srv.publisher().await;
    p.send(json!({"op":"publish","id":"p1","topic":"a.b","data":{"v":1}}))
        .await;
    assert_eq!(
        p.recv().await,
        json!({"type":"ack","id":"p1","topic":"a.b","seq":1})
    );
    p.send(json!({"op":"publish","topic":"a.b","data":{"v":2}}))
        .await;
    assert!(p.barrier("b").await.is_empty(), "no ack without an id");
    p.send(json!({"op":"publish","id":3,"topic":"a.b","data":{"v":3}}))
        .await;
    assert_eq!(p.recv().await["seq"], 3);
}

#[tokio::test]
async fn ping_gets_pong_with_server_time() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    c.send(json!({"op":"ping","id":4})).await;
    let p = c.recv().await;
    assert_eq!(p["type"], "pong");
    assert_eq!(p["id"], 4);
    assert!(
        p["server_time"]
            .as_u64()
            .unwrap()
            .abs_diff(tickwire_proto::now_ms())
            < 60_000
    );
}

#[tokio::test]
async fn fast_client_gets_100k_ticks_contiguous() {
    let srv = TestServer::start().await;
    let mut sub = srv.client().await;
    sub.subscribe(json!({"op":"subscribe","topics":["fast.t"],"snapshot":false}))
        .await;
    let mut p = srv.publisher().await;
    const N: u64 = 100_000;
    let publisher = tokio::spawn(async move {
        let frame =
            r#"{"op":"publish","topic":"fast.t","data":{"price":1.25,"bid":1.24,"ask":1.26}}"#;
        for _ in 0..N {
            p.send_text(frame).await;
        }
        p.barrier("end").await;
        p
    });
    let mut expect = 1u64;
    while expect <= N {
        let raw = sub.recv_text().await;
        // Cheap check of the seq without parsing every frame.
        let seq: u64 = raw
            .split("\"seq\":")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no seq in {raw}"));
        assert_eq!(seq, expect, "contiguous seq");
        expect += 1;
    }
    publisher.await.unwrap();
    assert_eq!(srv.metric("tickwire_conflated_frames_total").await, 0.0);
}
