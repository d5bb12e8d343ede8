//! Every error code of PROTOCOL.md, each leaving the connection open.

use serde_json::{Value, json};
use tickwire_testkit::{Client, TestServer};

/// Sends `msg`, expects an error with `code` (and `id` when given), then proves
/// the connection is still usable.
async fn expect_error(c: &mut Client, msg: &str, code: &str, id: Option<Value>) -> Value {
    c.send_text(msg).await;
    let e = c.expect_type("error").await;
    assert_eq!(e["code"], code, "{msg} -> {e}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    if let Some(id) = id {
        assert_eq!(e["id"], id);
    }
    assert!(c.barrier("alive").await.is_empty());
    e
}

#[tokio::test]
async fn bad_requests_get_bad_request() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    for msg in [
        "not json",
        "[1,2,3]",
        "\"str\"",
        r#"{"id":1}"#,
        r#"{"op":"fly","id":1}"#,
        r#"{"op":7}"#,
        r#"{"op":"subscribe","id":1}"#,
        r#"{"op":"subscribe","id":1,"topics":"a"}"#,
        r#"{"op":"subscribe","id":1,"topics":[]}"#,
        r#"{"op":"subscribe","id":1,"topics":["a"],"snapshot":"yes"}"#,
        r#"{"op":"subscribe","id":1,"topics":["a"],"max_hz":-1}"#,
        r#"{"op":"subscribe","id":1,"topics":["a"],"since":{"a":"x"}}"#,
        r#"{"op":"publish","id":1,"topic":"a"}"#,
        r#"{"op":"publish","id":1,"topic":"a","data":[1]}"#,
        r#"{"op":"publish","id":1,"topic":5,"data":{}}"#,
        r#"{"op":"auth","id":1}"#,
        r#"{"op":"ping","id":[1]}"#,
    ] {
        expect_error(&mut c, msg, "bad_request", None).await;
    }
    let e = expect_error(
        &mut c,
        r#"{"op":"fly","id":"x1"}"#,
        "bad_request",
        Some(json!("x1")),
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("fly"));
}

#[tokio::test]
async fn invalid_topics_say_why() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let e = expect_error(
        &mut c,
        r#"{"op":"subscribe","id":1,"topics":["crypto..x"]}"#,
        "invalid_topic",
        Some(json!(1)),
    )
    .await;
    assert_eq!(e["message"], "segment 2 is empty in 'crypto..x'");
    expect_error(
        &mut c,
        r#"{"op":"subscribe","id":2,"topics":["a.>.b"]}"#,
        "invalid_topic",
        Some(json!(2)),
    )
    .await;
    let long = "a".repeat(129);
    expect_error(
        &mut c,
        &format!(r#"{{"op":"subscribe","id":3,"topics":["{long}"]}}"#),
        "invalid_topic",
        Some(json!(3)),
    )
    .await;
    let mut p = srv.publisher().await;
    expect_error(
        &mut p,
        r#"{"op":"publish","id":4,"topic":"a.*","data":{}}"#,
        "invalid_topic",
        Some(json!(4)),
    )
    .await;
    expect_error(
        &mut p,
        r#"{"op":"publish","id":5,"topic":"a b","data":{}}"#,
        "invalid_topic",
        Some(json!(5)),
    )
    .await;
}

#[tokio::test]
async fn oversized_data_is_payload_too_large() {
    let srv = TestServer::start_with(|_, g| g.max_tick_bytes = 100).await;
    let mut p = srv.publisher().await;
    let pad = "x".repeat(100);
    expect_error(
        &mut p,
        &format!(r#"{{"op":"publish","id":1,"topic":"a","data":{{"p":"{pad}"}}}}"#),
        "payload_too_large",
        Some(json!(1)),
    )
    .await;
    // Exactly at the limit is fine: data = {"p":"..."} of 100 bytes.
    let pad = "x".repeat(100 - 8);
    p.send_text(&format!(
        r#"{{"op":"publish","id":2,"topic":"a","data":{{"p":"{pad}"}}}}"#
    ))
    .await;
    assert_eq!(p.recv().await["type"], "ack");
}

#[tokio::test]
async fn too_many_subscriptions_refuses_the_whole_request() {
    let srv = TestServer::start_with(|e, _| e.max_subscriptions_per_connection = 3).await;
    let mut c = srv.client().await;
    c.subscribe(json!({"op":"subscribe","topics":["a","b"]}))
        .await;
    expect_error(
        &mut c,
        r#"{"op":"subscribe","id":7,"topics":["c","d"]}"#,
        "too_many_subscriptions",
        Some(json!(7)),
    )
    .await;
    // Nothing of the refused request was subscribed: "c" can still be added.
    let ok = c.subscribe(json!({"op":"subscribe","topics":["c"]})).await;
    assert_eq!(ok["topics"], json!(["c"]));
    tickwire_testkit::publish_http(srv.addr, "d", json!({})).await;
    assert!(c.barrier("b").await.is_empty(), "d was not subscribed");
}

#[tokio::test]
async fn control_messages_over_the_rate_are_rate_limited() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    for i in 0..150 {
        c.send(json!({"op":"ping","id":i})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..150 {
        let v = c.recv().await;
        match v["type"].as_str().unwrap() {
            "pong" => pongs += 1,
            "error" => {
                assert_eq!(v["code"], "rate_limited");
                limited += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(pongs >= 100, "the burst of 100 passes: {pongs}");
    assert!(limited >= 1, "some are limited");
    // Publishing is not rate limited.
    let mut p = srv.publisher().await;
    for i in 0..300 {
        p.send(json!({"op":"publish","id":i,"topic":"r","data":{}}))
            .await;
    }
    for _ in 0..300 {
        assert_eq!(p.recv().await["type"], "ack");
    }
}

#[tokio::test]
async fn a_flood_closes_with_4003() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let mut healthy = srv.client().await;
    healthy
        .subscribe(json!({"op":"subscribe","topics":["h"]}))
        .await;
    for i in 0..1100 {
        if !c.try_send(json!({"op":"ping","id":i})).await {
            break;
        }
    }
    let (closed, _) = c.until_closed(tickwire_testkit::WAIT).await;
    assert_eq!(
        closed,
        tickwire_testkit::Closed::Code(4003, "flooding".into())
    );
    tickwire_testkit::publish_http(srv.addr, "h", json!({})).await;
    assert_eq!(healthy.recv().await["type"], "tick");
}

#[tokio::test]
async fn publishing_without_a_key_is_unauthorized() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    expect_error(
        &mut c,
        r#"{"op":"publish","id":1,"topic":"a","data":{}}"#,
        "unauthorized",
        Some(json!(1)),
    )
    .await;
    // A bad auth token on a no-auth broker is an error, not a close.
    expect_error(
        &mut c,
        r#"{"op":"auth","id":2,"token":"nope"}"#,
        "unauthorized",
        Some(json!(2)),
    )
    .await;
    // A publisher key by the auth message unlocks publishing.
    c.send(json!({"op":"auth","id":3,"token":tickwire_testkit::KEY}))
        .await;
    let a = c.recv().await;
    assert_eq!(a["type"], "authenticated");
    assert_eq!(a["id"], 3);
    c.send(json!({"op":"publish","id":4,"topic":"a","data":{}}))
        .await;
    assert_eq!(c.recv().await["type"], "ack");
}
