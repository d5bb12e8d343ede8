//! A sentence-by-sentence audit of PROTOCOL.md: the normative statements no
//! other module pinned, each checked end to end with a real client.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tickwire_proto::Topic;
use tickwire_testkit::raw::{OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawClient};
use tickwire_testkit::{
    Client, Closed, JWT_SECRET, KEY, TestServer, WAIT, jwt, now_s, post_publish, publish_http,
    small_rcvbuf_client,
};
use tokio_tungstenite::tungstenite::Error as WsError;

async fn auth_server() -> TestServer {
    TestServer::start_with(|_, g| {
        g.auth.jwt_secret = Some(JWT_SECRET.into());
        g.auth_timeout_ms = 2_000;
    })
    .await
}

/// The HTTP status of a refused upgrade, and its body.
fn refused(err: WsError) -> (u16, Vec<u8>) {
    let WsError::Http(resp) = err else {
        panic!("not an HTTP refusal: {err:?}")
    };
    (
        resp.status().as_u16(),
        resp.body().clone().unwrap_or_default(),
    )
}

/// "Unknown fields are ignored." Every op, with unknown fields of every JSON
/// type, including one named like a real field but nested.
#[tokio::test]
async fn unknown_fields_are_ignored_in_every_request() {
    let srv = TestServer::start().await;
    let mut sub = srv.client().await;
    sub.send_text(
        r#"{"op":"subscribe","id":1,"topics":["u.x"],"x":null,"y":[1,{"topics":5}],"z":{"snapshot":"no"},"w":true,"v":1.5}"#,
    )
    .await;
    assert_eq!(
        sub.recv().await,
        json!({"type":"subscribed","id":1,"topics":["u.x"]})
    );
    let mut p = srv.publisher().await;
    p.send_text(r#"{"op":"publish","id":2,"topic":"u.x","data":{"p":1},"meta":{"data":{"evil":true},"topic":"u.y"},"n":null}"#)
        .await;
    assert_eq!(
        p.recv().await,
        json!({"type":"ack","id":2,"topic":"u.x","seq":1})
    );
    let raw = sub.recv_text().await;
    assert!(raw.ends_with(r#","data":{"p":1}}"#), "{raw}");
    p.send_text(r#"{"op":"ping","id":3,"extra":{"op":"publish"}}"#)
        .await;
    assert_eq!(p.recv().await["type"], "pong");
    p.send_text(&format!(
        r#"{{"op":"auth","id":4,"token":"{KEY}","scope":["x"]}}"#
    ))
    .await;
    assert_eq!(p.recv().await["type"], "authenticated");
    sub.send_text(r#"{"op":"unsubscribe","id":5,"topics":["u.x"],"snapshot":false,"q":[]}"#)
        .await;
    assert_eq!(
        sub.recv().await,
        json!({"type":"unsubscribed","id":5,"topics":["u.x"]})
    );
    // And in the body of an HTTP publish.
    let (s, b) = post_publish(
        srv.addr,
        KEY,
        Some("application/json"),
        br#"{"topic":"u.x","data":{"p":2},"source":{"data":[1]},"tags":["a"]}"#,
    )
    .await;
    assert_eq!((s, b.as_str()), (200, r#"{"accepted":1,"seqs":[2]}"#));
}

/// "`id` is optional, chosen by the client (a number or string), and echoed
/// in the reply." A number keeps every digit, as `data` does: a client that
/// reads JSON numbers exactly (Python, Go's json.Number) must find its id.
#[tokio::test]
async fn ids_are_echoed_as_sent() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    for id in [
        "0",
        "-7",
        "18446744073709551615",
        "1.5",
        "12345678901234567890123",
        "3.14159265358979323846264338327950288",
        "-98765432109876543210.125",
        r#""""#,
        r#""a \"quoted\" ünïcode id""#,
    ] {
        c.send_text(&format!(r#"{{"op":"ping","id":{id}}}"#)).await;
        let raw = c.recv_text().await;
        assert!(
            raw.starts_with(&format!(r#"{{"type":"pong","id":{id},"#)),
            "id {id} came back as {raw}"
        );
    }
    // The same in an error about the request.
    c.send_text(r#"{"op":"fly","id":12345678901234567890123}"#)
        .await;
    let raw = c.recv_text().await;
    assert!(
        raw.starts_with(r#"{"type":"error","id":12345678901234567890123,"#),
        "{raw}"
    );
}

/// "`ack` is sent only for a publish that carries an `id`; errors are always
/// sent." An error about a request without an id has no `id`.
#[tokio::test]
async fn errors_are_sent_for_requests_without_an_id() {
    let srv = TestServer::start_with(|_, g| g.max_tick_bytes = 64).await;
    let mut p = srv.publisher().await;
    for (msg, code) in [
        (
            r#"{"op":"publish","topic":"a.*","data":{}}"#,
            "invalid_topic",
        ),
        (r#"{"op":"publish","topic":"a","data":[]}"#, "bad_request"),
        (
            r#"{"op":"publish","topic":"a","data":{"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#,
            "payload_too_large",
        ),
        (r#"{"op":"subscribe","topics":["a..b"]}"#, "invalid_topic"),
        (r#"{"op":"unsubscribe","topics":[]}"#, "bad_request"),
    ] {
        p.send_text(msg).await;
        let e = p.recv().await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code)),
            "{msg}"
        );
        assert!(e.get("id").is_none(), "{e}");
    }
    // Unauthorized publish without an id: still an error.
    let mut anon = srv.client().await;
    anon.send_text(r#"{"op":"publish","topic":"a","data":{}}"#)
        .await;
    assert_eq!(anon.recv().await["code"], "unauthorized");
}

/// "It must be a JSON object of at most `max_tick_bytes`, counted on the raw
/// bytes of `data` as received": whitespace inside `data` counts, and is
/// passed on.
#[tokio::test]
async fn data_size_is_counted_on_the_raw_bytes_whitespace_included() {
    let srv = TestServer::start_with(|_, g| g.max_tick_bytes = 100).await;
    let mut sub = srv.client().await;
    sub.subscribe(json!({"op":"subscribe","topics":["w"],"snapshot":false}))
        .await;
    let mut p = srv.publisher().await;
    // {"p":1} is 7 bytes; padded inside with spaces to exactly 100, then 101.
    let at = format!("{{ \"p\" : 1{}}}", " ".repeat(100 - 10));
    let over = format!("{{ \"p\" : 1{}}}", " ".repeat(101 - 10));
    assert_eq!((at.len(), over.len()), (100, 101));
    p.send_text(&format!(
        r#"{{"op":"publish","id":1,"topic":"w","data":{over}}}"#
    ))
    .await;
    assert_eq!(p.recv().await["code"], "payload_too_large");
    p.send_text(&format!(
        r#"{{"op":"publish","id":2,"topic":"w","data":{at}}}"#
    ))
    .await;
    // The refused tick took no seq: "seq counts accepted ticks".
    assert_eq!(
        p.recv().await,
        json!({"type":"ack","id":2,"topic":"w","seq":1})
    );
    let raw = sub.recv_text().await;
    assert!(raw.ends_with(&format!(r#","data":{at}}}"#)), "{raw}");
    // The same over HTTP.
    let (s, b) = post_publish(
        srv.addr,
        KEY,
        None,
        format!(r#"{{"topic":"w","data":{over}}}"#).as_bytes(),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("payload_too_large"), "{b}");
}

/// `data` is "passed through unchanged. Byte for byte": in snapshots and in
/// replayed ticks too, not only in live ones.
#[tokio::test]
async fn snapshots_and_replays_carry_data_byte_for_byte() {
    let srv = TestServer::start().await;
    let data = r#"{ "price" : 64012.50, "big": 123456789012345678901234567890, "e": 1E+3 , "s":"\u00e9" }"#;
    let mut p = srv.publisher().await;
    for id in 1..=2 {
        p.send_text(&format!(
            r#"{{"op":"publish","id":{id},"topic":"b.b","data":{data}}}"#
        ))
        .await;
        p.expect_type("ack").await;
    }
    let mut c = srv.client().await;
    c.subscribe(json!({"op":"subscribe","topics":["b.*"]}))
        .await;
    let raw = c.recv_text().await;
    assert!(
        raw.starts_with(r#"{"type":"snapshot","topic":"b.b","seq":2,"#),
        "{raw}"
    );
    assert!(raw.ends_with(&format!(r#","data":{data}}}"#)), "{raw}");
    let epoch = srv.engine().epoch().to_owned();
    let mut r = srv.client().await;
    r.subscribe(json!({"op":"subscribe","topics":["b.b"],"epoch":epoch,"since":{"b.b":0}}))
        .await;
    for seq in 1..=2 {
        let raw = r.recv_text().await;
        assert!(
            raw.starts_with(&format!(r#"{{"type":"tick","topic":"b.b","seq":{seq},"#)),
            "{raw}"
        );
        assert!(raw.ends_with(&format!(r#","data":{data}}}"#)), "{raw}");
    }
}

/// "`welcome.epoch` identifies the broker's sequence space (new on every
/// start)": a second start has another epoch, and a recovery that names the
/// first one gets a snapshot and `recovered: false`.
#[tokio::test]
async fn every_start_has_a_new_epoch() {
    let first = TestServer::start().await;
    let mut a = Client::connect(&first.ws_url(), &[]).await.unwrap();
    let old = a.recv().await["epoch"].as_str().unwrap().to_owned();
    drop(a);
    first.stop().await;
    let second = TestServer::start().await;
    publish_http(second.addr, "e.x", json!({"n":1})).await;
    let mut b = Client::connect(&second.ws_url(), &[]).await.unwrap();
    let w = b.recv().await;
    assert_eq!(w["type"], "welcome");
    let new = w["epoch"].as_str().unwrap();
    assert!(!new.is_empty());
    assert_ne!(new, old, "the same epoch after a restart");
    b.send(json!({"op":"subscribe","topics":["e.x"],"epoch":old,"since":{"e.x":1}}))
        .await;
    let frames = b.barrier("b").await;
    assert_eq!(frames[0]["recovered"], false, "{frames:?}");
    assert_eq!(frames[1]["type"], "snapshot", "{frames:?}");
}

/// "`history_per_topic`, default 1024": with the defaults, 1,024 missed
/// ticks are replayed, 1,025 are not.
#[tokio::test]
async fn the_default_history_holds_1024_ticks() {
    let srv = TestServer::start().await;
    let topic = Topic::parse("h.t").unwrap();
    for _ in 0..1030 {
        srv.engine().publish(&topic, b"{}").unwrap();
    }
    let epoch = srv.engine().epoch().to_owned();
    // Held: 7..=1030. Since 6 misses 1,024 ticks, since 5 misses 1,025.
    let mut c = srv.client().await;
    let sub = c
        .subscribe(json!({"op":"subscribe","topics":["h.t"],"epoch":epoch,"since":{"h.t":6}}))
        .await;
    assert_eq!(sub["recovered"], true);
    let seqs: Vec<u64> = c
        .barrier("b")
        .await
        .iter()
        .map(|f| {
            assert_eq!(f["type"], "tick");
            f["seq"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(seqs, (7..=1030).collect::<Vec<u64>>());
    let mut c = srv.client().await;
    let sub = c
        .subscribe(json!({"op":"subscribe","topics":["h.t"],"epoch":epoch,"since":{"h.t":5}}))
        .await;
    assert_eq!(sub["recovered"], false);
    let frames = c.barrier("b").await;
    assert_eq!(frames.len(), 1);
    assert_eq!(
        (frames[0]["type"].as_str(), frames[0]["seq"].as_u64()),
        (Some("snapshot"), Some(1030))
    );
}

/// "`max_subscriptions_per_connection` (default 1024 distinct patterns
/// held); the whole request is refused": patterns already held are not new,
/// and an unsubscribe gives room back.
#[tokio::test]
async fn the_default_subscription_limit_is_1024_distinct_patterns() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    let first: Vec<String> = (0..1000).map(|i| format!("s.p{i}")).collect();
    let rest: Vec<String> = (1000..1024).map(|i| format!("s.p{i}")).collect();
    c.subscribe(json!({"op":"subscribe","topics":first,"snapshot":false}))
        .await;
    // 24 new ones and 2 held ones: exactly 1,024 held.
    let mut req = rest.clone();
    req.extend(["s.p0".to_owned(), "s.p1".to_owned()]);
    let ok = c
        .subscribe(json!({"op":"subscribe","id":"full","topics":req,"snapshot":false}))
        .await;
    assert_eq!(ok["id"], "full");
    // Held ones again: fine. One new one (with held ones): refused whole.
    c.subscribe(json!({"op":"subscribe","topics":["s.p5"],"snapshot":false}))
        .await;
    c.send(json!({"op":"subscribe","id":"over","topics":["s.p7","s.new"]}))
        .await;
    let e = c.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("too_many_subscriptions"), Some("over"))
    );
    // Nothing of it was taken: s.new is not delivered.
    publish_http(srv.addr, "s.new", json!({})).await;
    assert!(c.barrier("b1").await.is_empty());
    // An unsubscribe makes room.
    c.send(json!({"op":"unsubscribe","topics":["s.p3"]})).await;
    c.expect_type("unsubscribed").await;
    let ok = c
        .subscribe(json!({"op":"subscribe","id":"again","topics":["s.new"],"snapshot":false}))
        .await;
    assert_eq!(ok["id"], "again");
    publish_http(srv.addr, "s.new", json!({})).await;
    assert_eq!(c.expect_type("tick").await["topic"], "s.new");
}

/// "1009: frame or reassembled message over `max_message_bytes` (default
/// 64 KiB)": 65,536 bytes are served, 65,537 close with 1009.
#[tokio::test]
async fn the_default_message_limit_is_64_kib() {
    let srv = TestServer::start().await;
    let mut c = RawClient::connect(srv.addr).await;
    let mut msg = br#"{"op":"ping","id":"at"}"#.to_vec();
    msg.resize(64 * 1024, b' ');
    c.send_frame(true, OP_TEXT, &msg, true).await;
    let mut texts = Vec::new();
    while texts.len() < 2 {
        let f = c.read_frame(WAIT).await.expect("welcome and pong");
        assert_eq!(f.opcode, OP_TEXT);
        texts.push(String::from_utf8(f.payload).unwrap());
    }
    assert!(texts[1].contains(r#""id":"at""#), "{texts:?}");
    msg.push(b' ');
    c.send_frame(true, OP_TEXT, &msg, true).await;
    assert_eq!(c.close_code(WAIT).await, Some(1009));
}

/// "Above `hard_limit_bytes` (default 4194304) ... the connection is closed
/// with code 4001 and reason `slow consumer`": seen by the client itself
/// when its socket can still take the Close frame.
#[tokio::test]
async fn over_the_default_hard_limit_the_client_sees_4001_slow_consumer() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    c.subscribe(json!({"op":"subscribe","topics":["big.>"],"snapshot":false}))
        .await;
    let data = format!(r#"{{"pad":"{}"}}"#, "x".repeat(4000));
    // Distinct topics, so conflation cannot shrink them; published in one go
    // from this task, so the writer (same runtime) takes nothing meanwhile.
    // 1,100 ticks of about 4 KB are over 4 MiB.
    for i in 0..1100 {
        let t = Topic::parse(&format!("big.t{i}")).unwrap();
        srv.engine().publish(&t, data.as_bytes()).unwrap();
    }
    let (closed, frames) = c.until_closed(WAIT).await;
    assert_eq!(closed, Closed::Code(4001, "slow consumer".into()));
    assert!(frames.len() < 1100, "{} frames", frames.len());
    assert_eq!(
        srv.metric("tickwire_slow_consumer_closes_total{reason=\"hard_limit\"}")
            .await,
        1.0
    );
}

/// "Control replies (`subscribed`, `ack`, `pong`, `error`, `status`) are
/// never dropped or conflated": a connection that conflates its ticks still
/// gets every ack, in order, and ends on the newest tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflating_connection_still_gets_every_ack() {
    let srv = TestServer::start_with(|e, g| {
        e.outbox.soft_limit_bytes = 4 * 1024;
        e.outbox.slow_timeout_ms = 600_000;
        g.write_timeout_ms = 600_000;
        g.socket_send_buffer_bytes = 4 * 1024;
    })
    .await;
    let mut c = small_rcvbuf_client(srv.addr, 4096).await;
    c.expect_type("welcome").await;
    c.send(json!({"op":"auth","token":KEY})).await;
    c.expect_type("authenticated").await;
    c.subscribe(json!({"op":"subscribe","topics":["self.t"],"snapshot":false}))
        .await;
    const N: u64 = 3000;
    let pad = "y".repeat(120);
    // Publish without reading: the replies and ticks pile up behind a full socket.
    for i in 0..N {
        c.send_text(&format!(
            r#"{{"op":"publish","id":{i},"topic":"self.t","data":{{"i":{i},"pad":"{pad}"}}}}"#
        ))
        .await;
    }
    let frames = c.barrier("end").await;
    let acks: Vec<(u64, u64)> = frames
        .iter()
        .filter(|f| f["type"] == "ack")
        .map(|f| (f["id"].as_u64().unwrap(), f["seq"].as_u64().unwrap()))
        .collect();
    let ticks: Vec<u64> = frames
        .iter()
        .filter(|f| f["type"] == "tick")
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(acks, (0..N).map(|i| (i, i + 1)).collect::<Vec<_>>());
    assert!(
        (ticks.len() as u64) < N,
        "no conflation happened: the test proves nothing"
    );
    assert!(ticks.windows(2).all(|w| w[0] < w[1]), "in seq order");
    assert_eq!(ticks.last(), Some(&N), "ends on the newest");
    assert!(srv.metric("tickwire_conflated_frames_total").await > 0.0);
}

/// "Any frame from the client counts as alive": a client that never answers
/// the broker's Pings but sends a text message every second stays open past
/// `heartbeat_ms + 10000`.
#[tokio::test]
async fn any_frame_from_the_client_counts_as_alive() {
    const HEARTBEAT_MS: u64 = 300;
    let srv = TestServer::start_with(|_, g| g.heartbeat_ms = HEARTBEAT_MS).await;
    let mut c = RawClient::connect(srv.addr).await;
    let until = tokio::time::Instant::now() + Duration::from_millis(HEARTBEAT_MS + 10_000 + 1_500);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut pings = 0;
    let mut n = 0;
    while tokio::time::Instant::now() < until {
        every.tick().await;
        n += 1;
        let id = format!("alive-{n}");
        c.send_text(&format!(r#"{{"op":"ping","id":"{id}"}}"#))
            .await;
        loop {
            let f = c.read_frame(WAIT).await.expect("still open");
            match f.opcode {
                OP_PING => pings += 1,
                OP_CLOSE => panic!("closed with {:?} after {n} s", f.close_code()),
                OP_TEXT if String::from_utf8_lossy(&f.payload).contains(&id) => break,
                _ => {}
            }
        }
    }
    assert!(
        pings >= 10,
        "the broker pinged and was never answered: {pings}"
    );
    assert_eq!(srv.metric("tickwire_heartbeat_timeouts_total").await, 0.0);
}

/// "`stale`: no tick for `stale_after_ms`, default 10000".
#[tokio::test]
async fn a_topic_goes_stale_after_the_default_10_s() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    c.subscribe(json!({"op":"subscribe","topics":["st.a"]}))
        .await;
    publish_http(srv.addr, "st.a", json!({"p":1})).await;
    let ts = c.expect_type("tick").await["ts"].as_u64().unwrap();
    let quiet = tokio::time::Instant::now();
    // Nothing for 9 s, then the status within the next few seconds.
    assert_eq!(c.recv_within(Duration::from_secs(9)).await, None);
    let s = c.recv().await;
    assert_eq!(
        s,
        json!({"type":"status","topic":"st.a","state":"stale","since":ts})
    );
    assert!(quiet.elapsed() >= Duration::from_secs(9));
    assert!(
        tickwire_proto::now_ms() - ts >= 10_000,
        "stale before 10 s of quiet"
    );
}

/// "A bad token in the `Authorization` header gets HTTP 401 with a JSON body
/// and no WebSocket", in both modes: with auth off too.
#[tokio::test]
async fn a_bad_header_token_gets_401_with_auth_off_too() {
    let srv = TestServer::start().await;
    let err = Client::connect(&srv.ws_url(), &[("Authorization", "Bearer wrong-key")])
        .await
        .err()
        .expect("refused");
    let (status, body) = refused(err);
    assert_eq!(status, 401);
    let v: Value = serde_json::from_slice(&body).expect("a JSON body");
    assert_eq!(v["error"], "unauthorized");
}

/// "`exp` is enforced to the second, no leeway": a token whose `exp` is the
/// current second is already expired, on both paths.
#[tokio::test]
async fn a_token_expiring_this_second_is_refused() {
    let srv = auth_server().await;
    // exp = now: the broker's clock is at or past it when it checks.
    let token = jwt(json!({"sub":"x","exp":now_s(),"subscribe":[">"]}));
    let err = Client::connect(
        &srv.ws_url(),
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(refused(err).0, 401);
    let mut c = srv.client().await;
    c.send(json!({"op":"auth","token":token})).await;
    let (closed, frames) = c.until_closed(WAIT).await;
    assert!(
        matches!(closed, Closed::Code(4500, _)),
        "{closed:?} {frames:?}"
    );
    assert!(frames.iter().all(|f| f["type"] != "authenticated"));
}

/// "A token that expires on a live connection closes it with 4002": a token
/// given in the upgrade's header too.
#[tokio::test]
async fn a_header_token_that_expires_closes_with_4002() {
    let srv = auth_server().await;
    let token = jwt(json!({"sub":"h","exp":now_s()+2,"subscribe":[">"]}));
    let auth = format!("Bearer {token}");
    let mut c = Client::connect(&srv.ws_url(), &[("Authorization", &auth)])
        .await
        .unwrap();
    c.expect_type("welcome").await;
    c.subscribe(json!({"op":"subscribe","topics":["a"]})).await;
    let (closed, _) = c.until_closed(WAIT).await;
    assert_eq!(closed, Closed::Code(4002, "token expired".into()));
}

/// "An upgrade whose `Origin` header is not listed exactly gets HTTP 403".
#[tokio::test]
async fn origins_are_matched_exactly() {
    let srv =
        TestServer::start_with(|_, g| g.auth.allowed_origins = vec!["https://dash.example".into()])
            .await;
    for origin in [
        "https://dash.example/",
        "https://DASH.example",
        "http://dash.example",
        "https://dash.example:443",
        "https://dash.example.evil",
        "null",
    ] {
        let err = Client::connect(&srv.ws_url(), &[("Origin", origin)])
            .await
            .err()
            .unwrap_or_else(|| panic!("{origin} was let in"));
        assert_eq!(refused(err).0, 403, "{origin}");
    }
}

/// "A topic is 1 to 128 bytes: segments separated by `.`, each segment
/// non-empty and made of `A-Z a-z 0-9 _ - :`"; `*` and `>` are whole
/// segments; "publishing to a topic with a wildcard is an error".
#[tokio::test]
async fn topic_rules_hold_for_publish_and_subscribe() {
    let srv = TestServer::start().await;
    let mut p = srv.publisher().await;
    let mut all = srv.client().await;
    all.subscribe(json!({"op":"subscribe","topics":[">"],"snapshot":false}))
        .await;
    let mut one = srv.client().await;
    one.subscribe(json!({"op":"subscribe","topics":["*"],"snapshot":false}))
        .await;
    let long = format!("a.{}", "b".repeat(126));
    assert_eq!(long.len(), 128);
    let good = [
        long.as_str(),
        "fx:EUR.a_b-c.Z9",
        "x",
        "binance.btcusdt.trade",
    ];
    for (i, t) in good.iter().enumerate() {
        p.send(json!({"op":"publish","id":i,"topic":t,"data":{}}))
            .await;
        let r = p.recv().await;
        assert_eq!(
            (r["type"].as_str(), r["topic"].as_str()),
            (Some("ack"), Some(*t)),
            "{r}"
        );
    }
    let got: Vec<String> = all
        .barrier("b")
        .await
        .iter()
        .map(|f| f["topic"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, good, "'>' matches every topic");
    let got: Vec<String> = one
        .barrier("b")
        .await
        .iter()
        .map(|f| f["topic"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, vec!["x"], "'*' matches one segment only");
    let too_long = format!("{long}b");
    for t in [
        "",
        too_long.as_str(),
        ".a",
        "a.",
        "a.é",
        "a/b",
        "crypto.BTC*",
        "crypto.>x",
        "*",
        ">",
        "a.*.b",
    ] {
        p.send(json!({"op":"publish","id":"bad","topic":t,"data":{}}))
            .await;
        let r = p.recv().await;
        assert_eq!(r["code"], "invalid_topic", "publish to {t:?}: {r}");
    }
    for t in [
        "",
        too_long.as_str(),
        "a..b",
        "crypto.BTC*",
        "a.>.>",
        "a.b>",
        "é",
    ] {
        p.send(json!({"op":"subscribe","id":"bad","topics":[t]}))
            .await;
        let r = p.recv().await;
        assert_eq!(r["code"], "invalid_topic", "subscribe to {t:?}: {r}");
        assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

/// `welcome` carries the broker's `heartbeat_ms`, and the Pings come that often.
#[tokio::test]
async fn welcome_names_the_configured_heartbeat() {
    let srv = TestServer::start_with(|_, g| g.heartbeat_ms = 200).await;
    let mut c = RawClient::connect(srv.addr).await;
    let w = c.read_frame(WAIT).await.unwrap();
    let w: Value = serde_json::from_slice(&w.payload).unwrap();
    assert_eq!(w["heartbeat_ms"], 200);
    let mut first = None;
    let mut pings = 0;
    while pings < 5 {
        let f = c.read_frame(WAIT).await.expect("pings");
        assert_ne!(f.opcode, OP_CLOSE);
        if f.opcode == OP_PING {
            first.get_or_insert_with(tokio::time::Instant::now);
            pings += 1;
            c.send_frame(true, OP_PONG, &f.payload, true).await;
        }
    }
    // Four intervals of 200 ms (less if the first was read late).
    let took = first.unwrap().elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(5000),
        "pings 1 to 5 in {took:?}"
    );
}

/// Control replies "count toward the buffered amount": a publisher that
/// never reads its acks goes over the hard limit on acks alone and is closed
/// as a slow consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_replies_count_toward_the_hard_limit() {
    let srv = TestServer::start_with(|e, g| {
        e.outbox.soft_limit_bytes = 8 * 1024;
        e.outbox.hard_limit_bytes = 32 * 1024;
        e.outbox.slow_timeout_ms = 600_000;
        g.write_timeout_ms = 600_000;
        g.socket_send_buffer_bytes = 4 * 1024;
    })
    .await;
    let mut c = small_rcvbuf_client(srv.addr, 4096).await;
    c.send(json!({"op":"auth","token":KEY})).await;
    // No subscription: nothing but replies is ever queued for it. About
    // 45 bytes of ack each, 20,000 of them: 900 KB, far past what the two
    // sockets' buffers and the 32 KiB hard limit hold.
    for i in 0..20_000u32 {
        if !c
            .try_send(json!({"op":"publish","id":i,"topic":"acks.t","data":{}}))
            .await
        {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut every = tokio::time::interval(Duration::from_millis(20));
    let metric = "tickwire_slow_consumer_closes_total{reason=\"hard_limit\"}";
    loop {
        every.tick().await;
        if srv.metric(metric).await >= 1.0 && srv.gateway.connection_count() == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "unread acks never closed the connection"
        );
    }
}

/// "A token that expires on a live connection closes it with 4002": a busy
/// connection too, whose writer always has frames to write (a subscriber
/// slower than its topic, kept at the newest value by conflation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expires_on_a_busy_connection_too() {
    let srv = auth_server().await;
    let mut c = small_rcvbuf_client(srv.addr, 4096).await;
    c.expect_type("welcome").await;
    let exp = now_s() + 2;
    let token = jwt(json!({"sub":"busy","exp":exp,"subscribe":[">"]}));
    c.send(json!({"op":"auth","token":token})).await;
    c.expect_type("authenticated").await;
    c.subscribe(json!({"op":"subscribe","topics":["busy.t"],"snapshot":false}))
        .await;
    let topic = Topic::parse("busy.t").unwrap();
    let data = format!(r#"{{"pad":"{}"}}"#, "z".repeat(200));
    let engine = srv.engine().clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishing = {
        let stop = stop.clone();
        tokio::spawn(async move {
            // About 5,000 ticks a second, far more than the reader takes.
            let mut every = tokio::time::interval(Duration::from_millis(5));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                every.tick().await;
                for _ in 0..25 {
                    engine.publish(&topic, data.as_bytes()).unwrap();
                }
            }
        })
    };
    // A slow reader: about one frame a millisecond.
    let reading = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            match tokio::time::timeout(WAIT, c.inner().next()).await {
                Ok(Some(Ok(_))) => {}
                _ => return n,
            }
            n += 1;
            if n % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let mut every = tokio::time::interval(Duration::from_millis(50));
    let closed_at = loop {
        every.tick().await;
        if srv.metric("tickwire_closes_total{code=\"4002\"}").await >= 1.0 {
            break tickwire_proto::now_ms();
        }
        if tokio::time::Instant::now() >= deadline {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            panic!(
                "still open {} ms after the token expired",
                tickwire_proto::now_ms() - exp * 1000
            );
        }
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publishing.await.unwrap();
    reading.abort();
    // The reader was slower than the topic: its ticks were conflated.
    assert!(srv.metric("tickwire_conflated_frames_total").await > 0.0);
    assert!(
        closed_at < exp * 1000 + 3000,
        "closed {} ms after the token expired",
        closed_at.saturating_sub(exp * 1000)
    );
}

/// `rate_limited`: "control messages (subscribe, unsubscribe, ping, auth)
/// over 100/s, burst 100; ten times that in a second closes with 4003" —
/// refused ones too: a subscribe with a bad pattern is still a subscribe.
#[tokio::test]
async fn refused_control_messages_count_toward_the_rate_limit() {
    let srv = TestServer::start().await;
    // Under the rate: invalid_topic for each. Then more of them in the same
    // second: rate_limited.
    let mut c = srv.client().await;
    for i in 0..150 {
        c.send(json!({"op":"subscribe","id":i,"topics":["bad..pattern"]}))
            .await;
    }
    let mut codes = std::collections::HashMap::new();
    for _ in 0..150 {
        let e = c.expect_type("error").await;
        *codes
            .entry(e["code"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert!(
        codes.get("rate_limited").is_some_and(|n| *n >= 1),
        "{codes:?}"
    );
    // A flood of them closes with 4003.
    let mut f = srv.client().await;
    for i in 0..1100 {
        if !f
            .try_send(json!({"op":"unsubscribe","id":i,"topics":[]}))
            .await
        {
            break;
        }
    }
    let (closed, _) = f.until_closed(WAIT).await;
    assert_eq!(closed, Closed::Code(4003, "flooding".into()));
}

/// "A token is a publisher key (may publish and subscribe to anything)":
/// with auth on as well, by header and by `auth`; and a JWT with publish
/// rights publishes over HTTP.
#[tokio::test]
async fn with_auth_on_a_publisher_key_may_do_anything() {
    let srv = auth_server().await;
    let mut h = srv.publisher().await;
    h.subscribe(json!({"op":"subscribe","topics":[">"],"snapshot":false}))
        .await;
    h.send(json!({"op":"publish","id":1,"topic":"any.where","data":{}}))
        .await;
    assert_eq!(h.expect_type("ack").await["seq"], 1);
    let mut m = srv.client().await;
    m.send(json!({"op":"auth","id":"a","token":KEY})).await;
    let a = m.recv().await;
    assert_eq!(
        (a["type"].as_str(), a["id"].as_str()),
        (Some("authenticated"), Some("a"))
    );
    m.subscribe(json!({"op":"subscribe","topics":[">"]})).await;
    m.send(json!({"op":"publish","id":2,"topic":"any.where","data":{}}))
        .await;
    assert_eq!(m.expect_type("ack").await["seq"], 2);
    let token = jwt(json!({"sub":"feed","exp":now_s()+60,"publish":["fx.*"]}));
    let (s, b) = post_publish(
        srv.addr,
        &token,
        None,
        br#"{"topic":"fx.EUR-USD","data":{"p":1}}"#,
    )
    .await;
    assert_eq!((s, b.as_str()), (200, r#"{"accepted":1,"seqs":[1]}"#));
}

/// Recovery: "Otherwise it sends a fresh `snapshot` and `recovered:false`",
/// even when the request said `"snapshot":false`.
#[tokio::test]
async fn a_failed_recovery_sends_a_snapshot_even_with_snapshot_false() {
    let srv = TestServer::start().await;
    for n in 1..=3 {
        publish_http(srv.addr, "f.r", json!({"n":n})).await;
    }
    let mut c = srv.client().await;
    c.send(json!({"op":"subscribe","topics":["f.r"],"snapshot":false,"epoch":"gone","since":{"f.r":1}}))
        .await;
    let frames = c.barrier("b").await;
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0]["recovered"], false);
    assert_eq!(
        (frames[1]["type"].as_str(), frames[1]["seq"].as_u64()),
        (Some("snapshot"), Some(3))
    );
}

/// "With auth on, the `auth` message must come first, within
/// `auth_timeout_ms` (default 5000)".
#[tokio::test]
async fn the_default_auth_timeout_is_5_s() {
    let srv = TestServer::start_with(|_, g| g.auth.jwt_secret = Some(JWT_SECRET.into())).await;
    let mut c = srv.client().await;
    let started = tokio::time::Instant::now();
    let (closed, _) = c.until_closed(WAIT).await;
    let after = started.elapsed();
    assert_eq!(closed, Closed::Code(4500, "auth timeout".into()));
    assert!(
        after >= Duration::from_millis(4_500) && after < Duration::from_millis(8_000),
        "closed after {after:?}"
    );
}

/// A `MakeWriter` that keeps what is logged.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// "Tokens are ... never logged": every way of presenting a token, good and
/// bad, with every log level on.
#[tokio::test]
async fn tokens_are_never_logged() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    // This test's runtime is one thread: the broker's tasks log here too.
    let _guard = tracing::subscriber::set_default(subscriber);
    let srv = auth_server().await;
    let good = jwt(json!({"sub":"logtest","exp":now_s()+60,"subscribe":[">"],"publish":[">"]}));
    let forged = format!("{}x", &good[..good.len() - 1]);
    let bad = "bad-token-that-must-not-be-logged";
    // By header: good key, good JWT, bad token.
    srv.publisher().await.close().await;
    let mut c = Client::connect(
        &srv.ws_url(),
        &[("Authorization", &format!("Bearer {good}"))],
    )
    .await
    .unwrap();
    c.expect_type("welcome").await;
    c.close().await;
    for t in [bad, forged.as_str()] {
        let err = Client::connect(&srv.ws_url(), &[("Authorization", &format!("Bearer {t}"))])
            .await
            .err()
            .expect("refused");
        assert_eq!(refused(err).0, 401);
    }
    // By message: good, then a bad re-auth; a bad first auth; in the URL.
    let mut c = srv.client().await;
    c.send(json!({"op":"auth","token":good})).await;
    c.expect_type("authenticated").await;
    c.send(json!({"op":"auth","token":forged})).await;
    assert_eq!(c.expect_type("error").await["code"], "unauthorized");
    c.close().await;
    let mut c = srv.client().await;
    c.send(json!({"op":"auth","token":bad})).await;
    assert!(matches!(
        c.until_closed(WAIT).await.0,
        Closed::Code(4500, _)
    ));
    let url = format!("{}?token={bad}", srv.ws_url());
    let mut c = Client::connect(&url, &[]).await.unwrap();
    c.expect_type("welcome").await;
    drop(c);
    // Over HTTP.
    for t in [KEY, good.as_str(), bad] {
        post_publish(srv.addr, t, None, br#"{"topic":"l.t","data":{}}"#).await;
    }
    // Wait for every connection's end to be logged ("closed").
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut every = tokio::time::interval(Duration::from_millis(20));
    while srv.gateway.connection_count() > 0 {
        every.tick().await;
        assert!(tokio::time::Instant::now() < deadline, "connections linger");
    }
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(
        text.contains("tickwire_gateway") && text.contains("closed"),
        "the broker's log was not captured: {text}"
    );
    for secret in [KEY, good.as_str(), forged.as_str(), bad, JWT_SECRET] {
        assert!(!text.contains(secret), "{secret} in the log:\n{text}");
    }
    // Nor a recognisable part of the JWT (its signature).
    let sig = good.rsplit('.').next().unwrap();
    assert!(!text.contains(sig));
}
