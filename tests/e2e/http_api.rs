//! `POST /api/publish`, `GET /api/topics`, `/api/snapshot`, `/healthz`, `/metrics`.

use serde_json::{Value, json};
use tickwire_testkit::{KEY, TestServer, http};

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

async fn post(srv: &TestServer, key: Option<&str>, ctype: &str, body: &str) -> (u16, Value) {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", ctype)];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    let (s, b) = http(srv.addr, "POST", "/api/publish", &headers, body.as_bytes()).await;
    (s, parse(&b))
}

#[tokio::test]
async fn http_publish_json_and_ndjson() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    c.subscribe(json!({"op":"subscribe","topics":["h.>"]}))
        .await;
    let (s, v) = post(
        &srv,
        Some(KEY),
        "application/json",
        r#"{"op":"publish","topic":"h.a","data":{"p":1.50}}"#,
    )
    .await;
    assert_eq!((s, v), (200, json!({"accepted":1,"seqs":[1]})));
    let body = "{\"topic\":\"h.a\",\"data\":{\"p\":2}}\n\n{\"topic\":\"h.b\",\"data\":{\"p\":3}}\r\n{\"topic\":\"h.a\",\"data\":{\"p\":4}}\n";
    let (s, v) = post(&srv, Some(KEY), "application/x-ndjson", body).await;
    assert_eq!((s, v), (200, json!({"accepted":3,"seqs":[2,1,3]})));
    let got: Vec<(String, u64)> = c
        .barrier("b")
        .await
        .iter()
        .map(|t| {
            (
                t["topic"].as_str().unwrap().to_owned(),
                t["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("h.a".into(), 1),
            ("h.a".into(), 2),
            ("h.b".into(), 1),
            ("h.a".into(), 3)
        ]
    );
}

#[tokio::test]
async fn http_publish_refuses_bad_keys_and_bodies() {
    let srv = TestServer::start().await;
    let good = r#"{"topic":"a","data":{}}"#;
    let (s, v) = post(&srv, None, "application/json", good).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")));
    let (s, v) = post(&srv, Some("wrong"), "application/json", good).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")));
    for (body, code) in [
        ("nope", "bad_request"),
        (r#"{"topic":"a"}"#, "bad_request"),
        (r#"{"topic":"a","data":5}"#, "bad_request"),
        (r#"{"op":"subscribe","topic":"a","data":{}}"#, "bad_request"),
        (r#"{"topic":"a..b","data":{}}"#, "invalid_topic"),
    ] {
        let (s, v) = post(&srv, Some(KEY), "application/json", body).await;
        assert_eq!(s, 400, "{body}");
        assert_eq!(v["error"], code, "{body}");
        assert_eq!(v["line"], 1);
    }
    // One bad line publishes nothing of the request.
    let body = "{\"topic\":\"n.a\",\"data\":{}}\n{\"topic\":\"n.b\",\"data\":[]}\n";
    let (s, v) = post(&srv, Some(KEY), "application/x-ndjson", body).await;
    assert_eq!((s, v["line"].as_u64()), (400, Some(2)));
    let (_, topics) = http(srv.addr, "GET", "/api/topics", &[], b"").await;
    assert_eq!(parse(&topics), json!({"topics":[]}));
    let big = format!(r#"{{"topic":"a","data":{{"x":"{}"}}}}"#, "y".repeat(5000));
    let (s, v) = post(&srv, Some(KEY), "application/json", &big).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("payload_too_large")));
}

#[tokio::test]
async fn topics_snapshot_health_and_metrics() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    c.subscribe(json!({"op":"subscribe","topics":["s.*"]}))
        .await;
    tickwire_testkit::publish_http(srv.addr, "s.one", json!({"price":10.1})).await;
    // Raw text, so the trailing zero is there to keep.
    let (s, _) = post(
        &srv,
        Some(KEY),
        "application/json",
        r#"{"topic":"s.one","data":{"price":10.20}}"#,
    )
    .await;
    assert_eq!(s, 200);
    tickwire_testkit::publish_http(srv.addr, "s.two", json!({"price":7})).await;
    c.barrier("b").await;

    let (s, b) = http(srv.addr, "GET", "/api/topics", &[], b"").await;
    assert_eq!(s, 200);
    let v = parse(&b);
    let rows = v["topics"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["topic"], "s.one");
    assert_eq!(rows[0]["seq"], 2);
    assert_eq!(rows[0]["subscribers"], 1);
    assert_eq!(rows[0]["state"], "live");
    assert!(rows[0]["last_ts"].as_u64().unwrap() > 0);
    assert!(rows[0]["rate_hz"].is_number());

    let (s, b) = http(
        srv.addr,
        "GET",
        "/api/snapshot?topics=s.one,s.none,s.two",
        &[],
        b"",
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        b.contains(r#""data":{"price":10.20}"#),
        "byte for byte: {b}"
    );
    let v = parse(&b);
    let snaps = v["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2, "topics with no value are left out");
    assert_eq!(snaps[0]["topic"], "s.one");
    assert_eq!(snaps[0]["seq"], 2);
    assert_eq!(snaps[1]["data"], json!({"price":7}));
    let (s, b) = http(srv.addr, "GET", "/api/snapshot?topics=bad..t", &[], b"").await;
    assert_eq!(
        (s, parse(&b)["error"].as_str()),
        (400, Some("invalid_topic"))
    );

    let (s, _) = http(srv.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(s, 200);
    let m = srv.metrics().await;
    for name in [
        "tickwire_connections 1",
        "tickwire_ticks_in_total 3",
        "tickwire_subscriptions 1",
        "tickwire_http_published_total 3",
    ] {
        assert!(m.lines().any(|l| l == name), "{name} in\n{m}");
    }
    assert!(m.contains("tickwire_frames_out_total"));
    assert!(m.contains("tickwire_bytes_out_total"));
    let (s, b) = http(srv.addr, "GET", "/nope", &[], b"").await;
    assert_eq!((s, parse(&b)["error"].as_str()), (404, Some("not_found")));
    let (s, _) = http(srv.addr, "DELETE", "/api/topics", &[], b"").await;
    assert_eq!(s, 405);
}

#[tokio::test]
async fn errors_are_counted_by_code() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    c.send_text("nope").await;
    c.expect_type("error").await;
    assert_eq!(
        srv.metric("tickwire_errors_total{code=\"bad_request\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn the_dashboard_and_client_library_are_served() {
    let srv = TestServer::start().await;
    let (s, b) = http(srv.addr, "GET", "/", &[], b"").await;
    assert_eq!(s, 200);
    assert!(b.contains("<html") || b.contains("<!DOCTYPE") || b.contains("<!doctype"));
    let (s, b) = http(srv.addr, "GET", "/tickwire.js", &[], b"").await;
    assert_eq!(s, 200);
    assert!(b.contains("export"));
}

/// A browser's `URLSearchParams` encodes `:` and `,` (`fx%3AEUR%2Cfx%3AUSD`):
/// the query is percent-decoded before it is split into topics.
#[tokio::test]
async fn snapshot_topics_may_be_percent_encoded() {
    let srv = TestServer::start().await;
    tickwire_testkit::publish_http(srv.addr, "fx:EUR", json!({"price":1.08})).await;
    tickwire_testkit::publish_http(srv.addr, "fx:USD", json!({"price":1})).await;
    let (s, b) = http(
        srv.addr,
        "GET",
        "/api/snapshot?topics=fx%3AEUR%2cfx%3AUSD",
        &[],
        b"",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let v = parse(&b);
    let topics: Vec<&str> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["fx:EUR", "fx:USD"]);
    // A broken escape is the client's error, named.
    for bad in ["fx%3", "fx%zzEUR", "fx%ff", "fx%+fEUR"] {
        let (s, b) = http(
            srv.addr,
            "GET",
            &format!("/api/snapshot?topics={bad}"),
            &[],
            b"",
        )
        .await;
        assert_eq!(
            (s, parse(&b)["error"].as_str()),
            (400, Some("bad_request")),
            "{bad}: {b}"
        );
    }
}

/// Sends `request` as is on a new connection and returns the status of the
/// answer, read to the end of the stream.
async fn raw_status(srv: &TestServer, request: String) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(srv.addr)
            .await
            .expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        // Every one of these answers carries the JSON error body.
        assert!(parse(body)["error"].is_string(), "{text}");
        text.split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {text:?}"))
    };
    tokio::time::timeout(tickwire_testkit::WAIT, fut)
        .await
        .expect("answered in time")
}

/// A request under test: resolves to the answer's status.
type Request<'a> = std::pin::Pin<Box<dyn Future<Output = u16> + 'a>>;

/// Every JSON error answer the broker sends over HTTP counts in
/// `tickwire_errors_total{code}`, once, like a WebSocket `error` reply: the
/// 408 of a publish body that never arrives and the 401/400 answers of
/// `/api/snapshot` used to count nothing, while a bad publish line did.
#[tokio::test]
async fn every_http_json_error_is_counted_once_by_code() {
    let srv = TestServer::start_with(|_, g| {
        g.auth.jwt_secret = Some(tickwire_testkit::JWT_SECRET.into());
        g.header_read_timeout_ms = 300;
    })
    .await;
    let key = format!("Bearer {KEY}");
    let get = |path: &'static str, auth: bool| {
        let key = key.clone();
        async move {
            let h = [("Authorization", key.as_str())];
            let headers: &[(&str, &str)] = if auth { &h } else { &[] };
            let (s, b) = http(srv.addr, "GET", path, headers, b"").await;
            assert!(parse(&b)["error"].is_string(), "{b}");
            s
        }
    };
    let late_body = raw_status(
        &srv,
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 80\r\n\r\n{{\"topic\":\"late.a\","
        ),
    );
    let cases: Vec<(&str, u16, Request<'_>)> = vec![
        ("bad_request", 408, Box::pin(late_body)),
        (
            "unauthorized",
            401,
            Box::pin(get("/api/snapshot?topics=a.b", false)),
        ),
        (
            "invalid_topic",
            400,
            Box::pin(get("/api/snapshot?topics=a..b", true)),
        ),
        ("bad_request", 400, Box::pin(get("/api/snapshot", true))),
        (
            "bad_request",
            400,
            Box::pin(get("/api/snapshot?topics=%zz", true)),
        ),
        ("not_found", 404, Box::pin(get("/nope", false))),
        (
            "method_not_allowed",
            405,
            Box::pin(async { http(srv.addr, "DELETE", "/api/topics", &[], b"").await.0 }),
        ),
        (
            "unauthorized",
            401,
            Box::pin(async {
                let (s, b) = http(srv.addr, "POST", "/api/publish", &[], b"{}").await;
                assert!(parse(&b)["error"].is_string(), "{b}");
                s
            }),
        ),
        (
            "unauthorized",
            401,
            Box::pin(async {
                let auth = [
                    ("Authorization", "Bearer nope"),
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Version", "13"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ];
                http(srv.addr, "GET", "/ws", &auth, b"").await.0
            }),
        ),
    ];
    let mut uncounted = Vec::new();
    for (code, status, request) in cases {
        let name = format!("tickwire_errors_total{{code=\"{code}\"}}");
        let before = srv.metric(&name).await;
        assert_eq!(request.await, status, "{code}");
        let after = srv.metric(&name).await;
        if after - before != 1.0 {
            uncounted.push(format!("{status} {code}: {before} -> {after}"));
        }
    }
    assert!(uncounted.is_empty(), "{uncounted:#?}");
}
