//! The broker's edges: HTTP API errors and limits, tokens at the extremes.
//! Each test drives a real client against a broker on 127.0.0.1:0.

use std::time::Duration;

use serde_json::{Value, json};
use tickwire_testkit::{
    Client, JWT_SECRET, KEY, TestServer, WAIT, http, jwt, post_publish, publish_http, tcp_states,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Writes `request` as is on a new connection and reads the whole answer.
async fn raw_http(srv: &TestServer, request: &[u8]) -> String {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(srv.addr)
            .await
            .expect("connect");
        s.write_all(request).await.expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("answered in time")
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

#[tokio::test]
async fn a_broken_chunked_body_is_a_bad_request_not_too_large() {
    let srv = TestServer::start().await;
    let req = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
    );
    let resp = raw_http(&srv, req.as_bytes()).await;
    let status = resp.split(' ').nth(1).unwrap_or("");
    assert_eq!(status, "400", "{resp}");
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(body.contains("\"bad_request\""), "{resp}");
    // A body over the limit is still 413, chunked or not.
    let srv = TestServer::start_with(|_, g| g.max_http_body_bytes = 100).await;
    let data = format!(
        "{{\"topic\":\"a\",\"data\":{{\"p\":\"{}\"}}}}",
        "x".repeat(200)
    );
    let req = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{data}\r\n0\r\n\r\n",
        data.len()
    );
    let resp = raw_http(&srv, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("\"payload_too_large\""), "{resp}");
    let (s, b) = post_publish(srv.addr, KEY, Some("application/json"), data.as_bytes()).await;
    assert_eq!(
        (s, parse(&b)["error"].as_str()),
        (413, Some("payload_too_large"))
    );
}

#[tokio::test]
async fn an_ndjson_batch_over_max_topics_publishes_nothing() {
    let srv = TestServer::start_with(|e, _| e.max_topics = 2).await;
    publish_http(srv.addr, "cap.a", json!({"p":1})).await;
    let body = "{\"topic\":\"cap.a\",\"data\":{\"p\":2}}\n{\"topic\":\"cap.b\",\"data\":{\"p\":1}}\n{\"topic\":\"cap.c\",\"data\":{\"p\":1}}\n";
    let (s, b) = post_publish(srv.addr, KEY, Some("application/x-ndjson"), body.as_bytes()).await;
    let v = parse(&b);
    assert_eq!(s, 400, "{b}");
    assert_eq!(
        (v["error"].as_str(), v["line"].as_u64()),
        (Some("bad_request"), Some(3))
    );
    // Nothing of the batch went in: cap.a is still at seq 1, cap.b unknown.
    let (_, b) = http(
        srv.addr,
        "GET",
        "/api/snapshot?topics=cap.a,cap.b",
        &[],
        b"",
    )
    .await;
    let v = parse(&b);
    assert_eq!(v["snapshots"].as_array().map(Vec::len), Some(1), "{b}");
    assert_eq!(v["snapshots"][0]["seq"], 1, "{b}");
}

/// Two NDJSON batches that each fit under `max_topics` alone but not
/// together, sent at once: one is published whole and the other not at all,
/// however they interleave. (Both passed the check of the room left and then
/// raced for it: the second was refused halfway, its first lines published.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_ndjson_batches_never_publish_half() {
    let batch = |p: &str| -> String {
        (0..600)
            .map(|i| format!("{{\"topic\":\"{p}.t{i}\",\"data\":{{\"p\":1}}}}\n"))
            .collect()
    };
    let (a, b) = (batch("a"), batch("b"));
    for round in 0..10 {
        let srv = TestServer::start_with(|e, _| e.max_topics = 1000).await;
        let ndjson = Some("application/x-ndjson");
        let ((sa, ba), (sb, bb)) = tokio::join!(
            post_publish(srv.addr, KEY, ndjson, a.as_bytes()),
            post_publish(srv.addr, KEY, ndjson, b.as_bytes()),
        );
        // The refused batch's answer (the other lists 600 seqs).
        let refused = if sa == 200 { &bb } else { &ba };
        let mut statuses = [sa, sb];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 400], "round {round}: {refused}");
        assert_eq!(
            srv.gateway.engine().topic_count(),
            600,
            "round {round}: one batch whole, none of the other ({refused})"
        );
    }
}

#[tokio::test]
async fn an_empty_token_is_never_a_publisher_key() {
    // A configuration that let an empty key through must not make the empty
    // token a publisher's.
    let srv = TestServer::start_with(|_, g| g.auth.publisher_keys.push(String::new())).await;
    let mut c = srv.client().await;
    c.send(json!({"op":"auth","id":1,"token":""})).await;
    let e = c.recv().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str(), e["id"].as_u64()),
        (Some("error"), Some("unauthorized"), Some(1)),
        "{e}"
    );
    c.send(json!({"op":"publish","id":2,"topic":"empty.key","data":{"p":1}}))
        .await;
    let e = c.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_u64()),
        (Some("unauthorized"), Some(2)),
        "{e}"
    );
}

#[tokio::test]
async fn an_http_client_that_never_reads_its_answer_is_let_go() {
    const ESTABLISHED: u8 = 1;
    let srv = TestServer::start_with(|_, g| {
        g.write_timeout_ms = 300;
        // Far beyond the wait below: only the write deadline can end it.
        g.header_read_timeout_ms = 60_000;
    })
    .await;
    // Enough topics for a /api/topics answer of about 1 MB, far more than
    // the socket buffers between the broker and the client hold.
    for i in 0..5000 {
        let name = format!("stall.{i}.{}", "x".repeat(100));
        let topic = tickwire_proto::Topic::parse(&name).expect("topic");
        srv.engine().publish(&topic, b"{}").expect("publish");
    }
    // A small receive buffer (set before connect), so the kernel cannot
    // take the answer in the client's place.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut s = sock.connect(srv.addr).await.expect("connect");
    let peer = s.local_addr().expect("local addr").port();
    s.write_all(b"GET /api/topics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    // The client reads nothing: the broker's write stalls, and after
    // write_timeout_ms it gives the connection (and its answer) up.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut every = tokio::time::interval(Duration::from_millis(50));
    // Seen open first: a /proc/net/tcp that shows nothing (unreadable, or
    // the wrong socket) must fail the test, not pass it.
    let mut seen_open = false;
    loop {
        every.tick().await;
        let states = tcp_states(srv.addr.port(), Some(peer));
        if states.contains(&ESTABLISHED) {
            seen_open = true;
        } else {
            assert!(
                seen_open,
                "the broker's socket was never seen open: {states:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker still holds the connection: {states:?}"
        );
    }
    drop(s);
}

#[tokio::test]
async fn with_auth_on_snapshots_need_a_token_that_may_subscribe() {
    let srv = TestServer::start_with(|_, g| g.auth.jwt_secret = Some(JWT_SECRET.into())).await;
    publish_http(srv.addr, "secret.x", json!({"p":42})).await;
    let path = "/api/snapshot?topics=secret.x";
    // No token: a stranger reads no price.
    let (s, b) = http(srv.addr, "GET", path, &[], b"").await;
    assert_eq!(
        (s, parse(&b)["error"].as_str()),
        (401, Some("unauthorized")),
        "{b}"
    );
    let bad = format!(
        "Bearer {}",
        jwt(json!({"sub":"x","exp":1,"subscribe":[">"]}))
    );
    let (s, b) = http(srv.addr, "GET", path, &[("Authorization", &bad)], b"").await;
    assert_eq!(
        (s, parse(&b)["error"].as_str()),
        (401, Some("unauthorized")),
        "{b}"
    );
    // A token whose rights do not cover the topic.
    let exp = tickwire_testkit::now_s() + 3600;
    let other = format!(
        "Bearer {}",
        jwt(json!({"sub":"x","exp":exp,"subscribe":["crypto.>"]}))
    );
    let (s, b) = http(srv.addr, "GET", path, &[("Authorization", &other)], b"").await;
    assert_eq!(
        (s, parse(&b)["error"].as_str()),
        (403, Some("forbidden")),
        "{b}"
    );
    // A token that may subscribe to it, and a publisher key.
    let good = format!(
        "Bearer {}",
        jwt(json!({"sub":"x","exp":exp,"subscribe":["secret.*"]}))
    );
    let key = format!("Bearer {KEY}");
    for auth in [&good, &key] {
        let (s, b) = http(srv.addr, "GET", path, &[("Authorization", auth)], b"").await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(parse(&b)["snapshots"][0]["data"], json!({"p":42}), "{b}");
    }
}

#[tokio::test]
async fn a_tiny_max_hz_hurts_neither_its_connection_nor_a_publisher() {
    let srv = TestServer::start().await;
    // Above 0, so valid; its interval (1e300 s) is more than a Duration holds.
    let mut c = srv.client().await;
    c.subscribe(json!({"op":"subscribe","id":1,"topics":["tiny.>"],"max_hz":1e-300}))
        .await;
    // The publish that creates a topic this subscription matches.
    let seq = publish_http(srv.addr, "tiny.a", json!({"p":1})).await;
    assert_eq!(seq, 1);
    let t = c.expect_type("tick").await;
    assert_eq!(
        (t["topic"].as_str(), t["seq"].as_u64()),
        (Some("tiny.a"), Some(1))
    );
    // Subscribing so to a topic that exists already.
    let mut d = srv.client().await;
    let s = d
        .subscribe(json!({"op":"subscribe","id":2,"topics":["tiny.*"],"max_hz":5e-324}))
        .await;
    assert_eq!(s["id"], 2);
    let snap = d.expect_type("snapshot").await;
    assert_eq!(snap["seq"], 1);
}

/// The shortest of three round trips of `msg` to its first reply.
async fn quickest_reply(c: &mut Client, msg: &str, undo: Option<Value>) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        c.send_text(msg).await;
        c.recv().await;
        best = best.min(t.elapsed());
        if let Some(u) = &undo {
            c.send(u.clone()).await;
            c.expect_type("unsubscribed").await;
        }
    }
    best
}

#[tokio::test]
async fn a_subscribe_naming_thousands_of_patterns_costs_about_what_its_size_does() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    // A 60 KB subscribe of 8000 patterns (refused: over 1024), against one
    // of about the same size whose bulk is a `since` object: reading either
    // is linear in its size, so neither holds a thread for long. (Duplicate
    // patterns were found by comparing each with all before it: 8000 took
    // about 100 times as long as the other.)
    let topics: Vec<String> = (0..8000).map(|i| format!("a{i}")).collect();
    let many = json!({"op":"subscribe","id":1,"topics":topics}).to_string();
    let mut since = serde_json::Map::new();
    for i in 0..6000 {
        since.insert(format!("q{i}"), json!(1));
    }
    let plain = json!({"op":"subscribe","id":2,"topics":["zz"],"since":since}).to_string();
    let undo = json!({"op":"unsubscribe","topics":["zz"]});
    let t_plain = quickest_reply(&mut c, &plain, Some(undo)).await;
    let t_many = quickest_reply(&mut c, &many, None).await;
    assert!(
        t_many < t_plain * 10 + Duration::from_millis(20),
        "8000 patterns: {t_many:?}; a since object of the same size: {t_plain:?}"
    );
}

#[tokio::test]
async fn a_long_since_costs_the_registry_about_what_its_size_does() {
    let srv = TestServer::start().await;
    for i in 0..2000 {
        let topic = tickwire_proto::Topic::parse(&format!("r.{i}")).expect("topic");
        srv.engine().publish(&topic, b"{}").expect("publish");
    }
    let epoch = srv.engine().epoch().to_owned();
    let mut c = srv.client().await;
    // A recovery of `r.>` (2000 topics) naming 6000 topics the broker does
    // not have, against the same recovery naming one: the engine looked up
    // each matched topic in the whole `since` list, under its registry lock
    // (every publish waits for it).
    let with_since = |n: usize| {
        let mut since = serde_json::Map::new();
        for i in 0..n {
            since.insert(format!("q{i}"), json!(1));
        }
        json!({"op":"subscribe","id":1,"topics":["r.>"],"since":since,"epoch":epoch,"snapshot":false})
            .to_string()
    };
    let undo = || Some(json!({"op":"unsubscribe","topics":["r.>"]}));
    let mut quickest = async |msg: &str| {
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            c.send_text(msg).await;
            c.expect_type("subscribed").await;
            best = best.min(t.elapsed());
            c.barrier("b").await;
            c.send(undo().unwrap()).await;
            c.expect_type("unsubscribed").await;
        }
        best
    };
    let t_one = quickest(&with_since(1)).await;
    let t_long = quickest(&with_since(6000)).await;
    assert!(
        t_long < t_one * 4 + Duration::from_millis(40),
        "since of 6000 topics: {t_long:?}; of one: {t_one:?}"
    );
}

#[tokio::test]
async fn a_token_without_publish_rights_is_forbidden_to_publish_as_over_http() {
    let srv = TestServer::start_with(|_, g| g.auth.jwt_secret = Some(JWT_SECRET.into())).await;
    let exp = tickwire_testkit::now_s() + 3600;
    let token = jwt(json!({"sub":"reader","exp":exp,"subscribe":[">"]}));
    let mut c = srv.client().await;
    c.send(json!({"op":"auth","token":token})).await;
    c.expect_type("authenticated").await;
    c.send(json!({"op":"publish","id":"p","topic":"ro.x","data":{}}))
        .await;
    let e = c.expect_type("error").await;
    // PROTOCOL.md: `forbidden` when the token does not allow the publish
    // (`unauthorized` is for no token); HTTP answers 403 `forbidden` too.
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("forbidden"), Some("p")),
        "{e}"
    );
    let (s, b) = post_publish(srv.addr, &token, None, br#"{"topic":"ro.x","data":{}}"#).await;
    assert_eq!(
        (s, parse(&b)["error"].as_str()),
        (403, Some("forbidden")),
        "{b}"
    );
}

#[tokio::test]
async fn deeply_nested_json_is_a_bad_request_not_a_crash() {
    let srv = TestServer::start().await;
    let mut c = srv.publisher().await;
    // 30,000 nested arrays in 60 KB: parsed and dropped recursively, they
    // overflowed the stack, which aborts the whole broker.
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    c.send_text(&deep).await;
    let e = c.expect_type("error").await;
    assert_eq!(e["code"], "bad_request", "{e}");
    let msg = format!(r#"{{"op":"publish","id":1,"topic":"deep.x","data":{{"a":{deep}}}}}"#);
    c.send_text(&msg).await;
    // Refused before it is read, like a message that is not JSON: no id.
    let e = c.expect_type("error").await;
    assert_eq!(e["code"], "bad_request", "{e}");
    let body = format!(r#"{{"topic":"deep.x","data":{{"a":{deep}}}}}"#);
    let (s, b) = post_publish(srv.addr, KEY, None, body.as_bytes()).await;
    assert_eq!(
        (s, parse(&b)["error"].as_str()),
        (400, Some("bad_request")),
        "{b}"
    );
    // Nesting a tick may well have still goes through.
    let nested = format!("{}1{}", "[".repeat(20), "]".repeat(20));
    let msg = format!(r#"{{"op":"publish","id":2,"topic":"deep.x","data":{{"a":{nested}}}}}"#);
    c.send_text(&msg).await;
    assert_eq!(c.expect_type("ack").await["id"], 2);
}

/// A publisher whose body never arrives (whole) is answered 408 within
/// `header_read_timeout_ms`, not held open for as long as it likes; the
/// topic gets nothing of it.
#[tokio::test]
async fn a_publish_body_that_never_arrives_is_a_timeout() {
    let srv = TestServer::start_with(|_, g| g.header_read_timeout_ms = 300).await;
    // Stays connected with half of what Content-Length promised: the answer
    // comes from the broker's deadline, not from an end of stream.
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 80\r\n\r\n{{\"topic\":\"late.a\","
    );
    let mut s = tokio::net::TcpStream::connect(srv.addr)
        .await
        .expect("connect");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("answered and closed in time")
        .expect("read");
    let resp = String::from_utf8_lossy(&out);
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v = parse(body);
    assert_eq!(v["error"], "bad_request", "{resp}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("header_read_timeout_ms"),
        "{resp}"
    );
    let (_, b) = http(srv.addr, "GET", "/api/topics", &[], b"").await;
    assert_eq!(parse(&b)["topics"], json!([]), "nothing was published");
}

/// A recovery whose `since` names topics the broker does not have is checked
/// against the request's patterns (was each such topic one the client could
/// have seen?). That check ran under the registry's write lock, each entry
/// against every pattern: 1,024 wildcard patterns and 5,000 such entries in
/// one 60 KB subscribe held every publish of the broker back for as long as
/// the request took. A publisher on another thread must not stall for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_since_of_unknown_topics_does_not_hold_publishers_back() {
    let srv = TestServer::start().await;
    let epoch = srv.engine().epoch().to_owned();
    let mut c = srv.client().await;
    let patterns: Vec<String> = (0..1024).map(|i| format!("p{i}.*")).collect();
    let mut since = serde_json::Map::new();
    for i in 0..5000 {
        since.insert(format!("q{i}"), json!(1));
    }
    let msg = json!({"op":"subscribe","id":1,"topics":patterns,"since":since,"epoch":epoch,"snapshot":false})
        .to_string();
    assert!(msg.len() < 64 * 1024, "{} bytes", msg.len());
    // A publisher on its own thread: the longest any one publish took.
    let engine = srv.engine().clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let topic = tickwire_proto::Topic::parse("pub.x").expect("topic");
            let mut longest = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = std::time::Instant::now();
                engine.publish(&topic, b"{}").expect("publish");
                longest = longest.max(t.elapsed());
                std::thread::yield_now();
            }
            longest
        })
    };
    let t = std::time::Instant::now();
    c.send_text(&msg).await;
    let reply = c.expect_type("subscribed").await;
    let took = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let longest = publisher.join().expect("publisher");
    assert_eq!(reply["recovered"], true, "{reply}");
    assert!(
        longest < took / 4 + Duration::from_millis(20),
        "a publish waited {longest:?} while the subscribe took {took:?}"
    );
}

/// A request head over 64 KiB is refused with 431 (docs/security.md), not
/// served: hyper's `max_buf_size` alone let a 70 KB head through (its read
/// buffer grows by doubling and was parsed once the whole head was in).
#[tokio::test]
async fn a_request_head_over_64_kib_is_refused_with_431() {
    let srv = TestServer::start().await;
    let big = "a".repeat(70_000);
    let req =
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let resp = raw_http(&srv, req.as_bytes()).await;
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "{}",
        &resp[..resp.len().min(200)]
    );
    // Just under the limit is still served.
    let ok = "a".repeat(60_000);
    let req =
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {ok}\r\nConnection: close\r\n\r\n");
    let resp = raw_http(&srv, req.as_bytes()).await;
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "{}",
        &resp[..resp.len().min(200)]
    );
}
