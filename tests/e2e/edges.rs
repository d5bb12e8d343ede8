//! The broker's edges: HTTP API errors and limits, tokens at the extremes.
//! Each test drives a real client against a broker on 127.0.0.1:0.

use serde_json::json;
use tickwire_testkit::{Client, JWT_SECRET, TestServer, jwt, publish_http};

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
