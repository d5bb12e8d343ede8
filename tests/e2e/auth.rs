//! Authentication and rights (PROTOCOL.md "Authentication").

use serde_json::json;
use tickwire_testkit::{Client, Closed, JWT_SECRET, KEY, TestServer, WAIT, http, jwt, now_s};
use tokio_tungstenite::tungstenite::Error as WsError;

async fn auth_server() -> TestServer {
    TestServer::start_with(|_, g| {
        g.auth.jwt_secret = Some(JWT_SECRET.into());
        g.auth_timeout_ms = 500;
    })
    .await
}

fn reader_token() -> String {
    jwt(
        json!({"sub":"dash","exp":now_s()+3600,"subscribe":["crypto.>"],"publish":["crypto.BTC-USD"]}),
    )
}

#[tokio::test]
async fn with_auth_on_requests_before_auth_are_unauthorized() {
    let srv = auth_server().await;
    let mut c = srv.client().await;
    c.send(json!({"op":"subscribe","id":1,"topics":["crypto.*"]}))
        .await;
    let e = c.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_u64()),
        (Some("unauthorized"), Some(1))
    );
    c.send(json!({"op":"auth","id":2,"token":reader_token()}))
        .await;
    let a = c.recv().await;
    assert_eq!(a["type"], "authenticated");
    assert_eq!(a["id"], 2);
    assert_eq!(a["sub"], "dash");
    assert!(a["exp"].as_u64().unwrap() > now_s());
    let s = c
        .subscribe(json!({"op":"subscribe","id":3,"topics":["crypto.*"]}))
        .await;
    assert_eq!(s["id"], 3);
}

#[tokio::test]
async fn rights_cover_requests_or_they_are_forbidden() {
    let srv = auth_server().await;
    let mut c = srv.client().await;
    c.send(json!({"op":"auth","token":reader_token()})).await;
    c.expect_type("authenticated").await;
    for (topics, ok) in [
        (json!(["crypto.BTC-USD"]), true),
        (json!(["crypto.*"]), true),
        (json!(["crypto.>"]), true),
        (json!([">"]), false),
        (json!(["fx.*"]), false),
        (json!(["crypto.ETH-USD", "fx.EUR-USD"]), false),
    ] {
        c.send(json!({"op":"subscribe","id":"s","topics":topics}))
            .await;
        let r = c.recv().await;
        if ok {
            assert_eq!(r["type"], "subscribed", "{topics}");
        } else {
            assert_eq!(r["code"], "forbidden", "{topics}");
        }
    }
    c.send(json!({"op":"publish","id":"p1","topic":"crypto.BTC-USD","data":{}}))
        .await;
    assert_eq!(c.expect_type("ack").await["id"], "p1");
    c.send(json!({"op":"publish","id":"p2","topic":"crypto.ETH-USD","data":{}}))
        .await;
    let e = c.expect_type("error").await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("forbidden"), Some("p2"))
    );
    // HTTP publish with the same token: 403 for a topic outside its rights.
    let auth = format!("Bearer {}", reader_token());
    let (s, b) = http(
        srv.addr,
        "POST",
        "/api/publish",
        &[("Authorization", &auth)],
        br#"{"topic":"fx.X","data":{}}"#,
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("\"forbidden\""));
}

#[tokio::test]
async fn no_auth_in_time_closes_with_4500() {
    let srv = auth_server().await;
    let mut c = srv.client().await;
    let (closed, _) = c.until_closed(WAIT).await;
    assert_eq!(closed, Closed::Code(4500, "auth timeout".into()));
}

#[tokio::test]
async fn a_bad_first_auth_closes_with_4500_and_a_bad_reauth_is_an_error() {
    let srv = auth_server().await;
    let mut c = srv.client().await;
    c.send(json!({"op":"auth","token":"garbage"})).await;
    let (closed, _) = c.until_closed(WAIT).await;
    assert!(matches!(closed, Closed::Code(4500, _)), "{closed:?}");
    let expired = jwt(json!({"sub":"x","exp":now_s()-1}));
    let mut c = srv.client().await;
    c.send(json!({"op":"auth","token":expired})).await;
    assert!(matches!(
        c.until_closed(WAIT).await.0,
        Closed::Code(4500, _)
    ));
    let mut c = srv.client().await;
    c.send(json!({"op":"auth","token":reader_token()})).await;
    c.expect_type("authenticated").await;
    c.send(json!({"op":"auth","id":9,"token":"garbage"})).await;
    let e = c.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_u64()),
        (Some("unauthorized"), Some(9))
    );
    assert!(c.barrier("alive").await.is_empty());
}

/// An upgrade with `headers` that the broker must refuse: its status and
/// JSON body (`null` when it has none).
async fn refused_upgrade(srv: &TestServer, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let err = Client::connect(&srv.ws_url(), headers)
        .await
        .err()
        .expect("refused");
    let WsError::Http(resp) = err else {
        panic!("{err:?}")
    };
    let body = resp.body().as_deref().map_or(serde_json::Value::Null, |b| {
        serde_json::from_slice(b).expect("a JSON body")
    });
    (resp.status().as_u16(), body)
}

#[tokio::test]
async fn a_bad_header_token_gets_401_and_no_websocket() {
    let srv = auth_server().await;
    let (status, body) = refused_upgrade(&srv, &[("Authorization", "Bearer nope")]).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized");
    // A good header token needs no auth message.
    let auth = format!("Bearer {}", reader_token());
    let mut c = Client::connect(&srv.ws_url(), &[("Authorization", &auth)])
        .await
        .unwrap();
    c.expect_type("welcome").await;
    c.subscribe(json!({"op":"subscribe","topics":["crypto.*"]}))
        .await;
}

#[tokio::test]
async fn an_expiring_token_closes_with_4002_unless_refreshed() {
    let srv = auth_server().await;
    let mut refreshed = srv.client().await;
    let mut lapsing = srv.client().await;
    let short = jwt(json!({"sub":"s","exp":now_s()+2,"subscribe":[">"]}));
    for c in [&mut refreshed, &mut lapsing] {
        c.send(json!({"op":"auth","token":short})).await;
        c.expect_type("authenticated").await;
    }
    refreshed
        .send(json!({"op":"auth","token":reader_token()}))
        .await;
    refreshed.expect_type("authenticated").await;
    let (closed, _) = lapsing.until_closed(WAIT).await;
    assert_eq!(closed, Closed::Code(4002, "token expired".into()));
    assert!(refreshed.barrier("alive").await.is_empty());
}

#[tokio::test]
async fn origins_not_listed_get_403() {
    let srv =
        TestServer::start_with(|_, g| g.auth.allowed_origins = vec!["https://dash.example".into()])
            .await;
    let (status, _) = refused_upgrade(&srv, &[("Origin", "https://evil.example")]).await;
    assert_eq!(status, 403);
    let mut ok = Client::connect(&srv.ws_url(), &[("Origin", "https://dash.example")])
        .await
        .unwrap();
    ok.expect_type("welcome").await;
    let mut no_origin = Client::connect(&srv.ws_url(), &[]).await.unwrap();
    no_origin.expect_type("welcome").await;
}

#[tokio::test]
async fn tokens_in_the_url_are_not_honoured() {
    let srv = TestServer::start().await;
    let url = format!("{}?token={KEY}&access_token={KEY}", srv.ws_url());
    let mut c = Client::connect(&url, &[]).await.unwrap();
    c.expect_type("welcome").await;
    c.send(json!({"op":"publish","id":1,"topic":"a","data":{}}))
        .await;
    assert_eq!(c.recv().await["code"], "unauthorized");
}

/// A re-`auth` whose token does not cover what the connection holds is
/// refused (`forbidden`), and the old token stays in force: its
/// subscriptions would otherwise outlive its rights (and its expiry).
#[tokio::test]
async fn a_reauth_that_does_not_cover_the_subscriptions_held_is_forbidden() {
    let srv = auth_server().await;
    let mut c = srv.client().await;
    c.send(json!({"op":"auth","token":reader_token()})).await;
    c.expect_type("authenticated").await;
    c.subscribe(json!({"op":"subscribe","id":1,"topics":["crypto.*"]}))
        .await;
    let narrow = jwt(json!({"sub":"dash","exp":now_s()+7200,"subscribe":["crypto.BTC-USD"]}));
    c.send(json!({"op":"auth","id":2,"token":narrow})).await;
    let e = c.recv().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str(), e["id"].as_u64()),
        (Some("error"), Some("forbidden"), Some(2)),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("crypto.*"), "{e}");
    // The old rights still hold: a subscribe they cover is accepted.
    c.subscribe(json!({"op":"subscribe","id":3,"topics":["crypto.ETH-USD"]}))
        .await;
    // Once unsubscribed, the same token is taken.
    c.send(json!({"op":"unsubscribe","id":4,"topics":["crypto.*","crypto.ETH-USD"]}))
        .await;
    c.expect_type("unsubscribed").await;
    c.send(json!({"op":"auth","id":5,"token":narrow})).await;
    let a = c.expect_type("authenticated").await;
    assert_eq!(a["id"], 5);
    // A token covering what is held is taken at once.
    c.subscribe(json!({"op":"subscribe","id":6,"topics":["crypto.BTC-USD"]}))
        .await;
    c.send(json!({"op":"auth","id":7,"token":reader_token()}))
        .await;
    assert_eq!(c.expect_type("authenticated").await["id"], 7);
}

/// RFC 7519 `nbf`: a token is not accepted before it, on any path, just as a
/// bad token is not (401 with a JSON body on a header, 4500 on a first
/// `auth`). Its NumericDates may carry a fraction: such a token is good.
#[tokio::test]
async fn a_token_before_its_nbf_is_refused_and_fractional_times_are_accepted() {
    let srv = auth_server().await;
    let early = jwt(json!({"sub":"early","exp":now_s()+3600,"nbf":now_s()+600,"subscribe":[">"]}));
    let bearer = format!("Bearer {early}");
    let (status, body) = refused_upgrade(&srv, &[("Authorization", &bearer)]).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized", "{body}");
    let (s, b) = http(
        srv.addr,
        "GET",
        "/api/snapshot?topics=a.b",
        &[("Authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(s, 401, "{b}");
    let mut c = srv.client().await;
    c.send(json!({"op":"auth","id":1,"token":early})).await;
    let (closed, seen) = c.until_closed(WAIT).await;
    assert!(
        matches!(closed, Closed::Code(4500, _)),
        "{closed:?} {seen:?}"
    );
    assert!(
        seen.iter().all(|m| m["type"] != "authenticated"),
        "{seen:?}"
    );

    // Fractional exp and nbf (RFC 7519 NumericDate), by header and by `auth`.
    let exp = now_s() + 3600;
    let frac = jwt(
        json!({"sub":"frac","exp":exp as f64 + 0.5,"nbf":now_s() as f64 - 10.25,"subscribe":[">"]}),
    );
    let bearer = format!("Bearer {frac}");
    let mut h = Client::connect(&srv.ws_url(), &[("Authorization", &bearer)])
        .await
        .expect("a fractional exp is a good token");
    h.expect_type("welcome").await;
    h.subscribe(json!({"op":"subscribe","id":1,"topics":["frac.x"]}))
        .await;
    let mut c = srv.client().await;
    c.send(json!({"op":"auth","id":2,"token":frac})).await;
    let a = c.expect_type("authenticated").await;
    // Shown in whole seconds, rounded down.
    assert_eq!(
        (a["sub"].as_str(), a["exp"].as_u64()),
        (Some("frac"), Some(exp))
    );
}
