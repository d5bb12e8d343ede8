//! The broker's edges: HTTP API errors and limits, tokens at the extremes.
//! Each test drives a real client against a broker on 127.0.0.1:0.

use serde_json::{Value, json};
use tickwire_testkit::{Client, JWT_SECRET, TestServer, http, jwt, publish_http};

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn a_token_that_expires_in_the_far_future_keeps_its_connection() {
    let srv = TestServer::start_with(|_, g| g.auth.jwt_secret = Some(JWT_SECRET.into())).await;
    let mut c = Client::connect(&srv.ws_url(), &[]).await.expect("connect");
    c.expect_type("welcome").await;
    let token = jwt(json!({"sub":"forever","exp":u64::MAX,"subscribe":[">"]}));
    c.send(json!({"op":"auth","id":1,"token":token})).await;
    let a = c.expect_type("authenticated").await;
    assert_eq!(a["sub"], "forever");
    // The writer arms its expiry timer from `exp`: the connection goes on.
    c.subscribe(json!({"op":"subscribe","id":2,"topics":["far.x"]}))
        .await;
    let seq = publish_http(srv.addr, "far.x", json!({"p":1})).await;
    let t = c.expect_type("tick").await;
    assert_eq!(t["seq"], seq);
}

#[tokio::test]
async fn a_snapshot_names_each_topic_once_however_often_it_is_asked_for() {
    let srv = TestServer::start().await;
    let big = "x".repeat(4000);
    publish_http(srv.addr, "dup.a", json!({ "p": big })).await;
    // 1000 times the same topic in a 6 KB query: one snapshot, not 1000
    // copies of its 4 KB value (4 MB built for one small request).
    let list = vec!["dup.a"; 1000].join(",");
    let (s, body) = http(
        srv.addr,
        "GET",
        &format!("/api/snapshot?topics={list}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(s, 200);
    let v = parse(&body);
    let snaps = v["snapshots"].as_array().expect("snapshots");
    assert_eq!(snaps.len(), 1, "{} snapshots", snaps.len());
    assert_eq!(snaps[0]["topic"], "dup.a");
}
