//! Frame hygiene (the gateway's own frame reader, crates/gateway/src/frame.rs), and connection limits.
//! Each hostile connection is closed with the right code while a healthy one
//! keeps receiving ticks.

use std::time::Duration;

use serde_json::json;
use tickwire_testkit::raw::{
    OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawClient, frame,
};
use tickwire_testkit::{Client, TestServer, WAIT, publish_http};

async fn healthy(srv: &TestServer) -> Client {
    let mut c = srv.client().await;
    c.subscribe(json!({"op":"subscribe","topics":["health"]}))
        .await;
    c
}

async fn still_served(srv: &TestServer, c: &mut Client) {
    let seq = publish_http(srv.addr, "health", json!({"ok":true})).await;
    let t = c.expect_type("tick").await;
    assert_eq!(t["seq"], seq);
}

async fn expect_close(srv: &TestServer, send: impl AsyncFnOnce(&mut RawClient), code: u16) {
    let mut h = healthy(srv).await;
    let mut c = RawClient::connect(srv.addr).await;
    send(&mut c).await;
    assert_eq!(c.close_code(WAIT).await, Some(code));
    still_served(srv, &mut h).await;
}

#[tokio::test]
async fn unmasked_client_frames_close_with_1002() {
    let srv = TestServer::start().await;
    expect_close(
        &srv,
        async |c| {
            c.send_frame(true, OP_TEXT, br#"{"op":"ping"}"#, false)
                .await
        },
        1002,
    )
    .await;
}

#[tokio::test]
async fn binary_frames_close_with_1003() {
    let srv = TestServer::start().await;
    expect_close(
        &srv,
        async |c| c.send_frame(true, OP_BINARY, b"\x01\x02", true).await,
        1003,
    )
    .await;
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let srv = TestServer::start().await;
    expect_close(
        &srv,
        async |c| {
            c.send_frame(true, OP_TEXT, b"{\"op\":\"\xff\"}", true)
                .await
        },
        1007,
    )
    .await;
    // Split across fragments, checked once the message is whole.
    expect_close(
        &srv,
        async |c| {
            c.send_frame(false, OP_TEXT, b"{\"op\":\"\xc3", true).await;
            c.send_frame(true, OP_CONT, b"\x28\"}", true).await;
        },
        1007,
    )
    .await;
}

#[tokio::test]
async fn oversized_frames_and_messages_close_with_1009() {
    let srv = TestServer::start_with(|_, g| {
        g.max_message_bytes = 1024;
        g.max_tick_bytes = 512;
        g.max_fragments = 8;
    })
    .await;
    let big = vec![b' '; 1025];
    expect_close(
        &srv,
        async |c| c.send_frame(true, OP_TEXT, &big, true).await,
        1009,
    )
    .await;
    // Fragments that add up to more than the limit.
    expect_close(
        &srv,
        async |c| {
            c.send_frame(false, OP_TEXT, &[b' '; 400], true).await;
            c.send_frame(false, OP_CONT, &[b' '; 400], true).await;
            c.send_frame(true, OP_CONT, &[b' '; 400], true).await;
        },
        1009,
    )
    .await;
    // Too many fragments, however small.
    expect_close(
        &srv,
        async |c| {
            c.send_frame(false, OP_TEXT, b" ", true).await;
            for _ in 0..10 {
                c.send_frame(false, OP_CONT, b" ", true).await;
            }
        },
        1009,
    )
    .await;
    // Exactly at the limit is accepted.
    let mut c = RawClient::connect(srv.addr).await;
    let mut msg = br#"{"op":"ping","id":1}"#.to_vec();
    msg.resize(1024, b' ');
    c.send_frame(true, OP_TEXT, &msg, true).await;
    let f = c.read_frame(WAIT).await.unwrap();
    assert!(String::from_utf8_lossy(&f.payload).contains("welcome"));
    let f = c.read_frame(WAIT).await.unwrap();
    assert!(String::from_utf8_lossy(&f.payload).contains("pong"));
}

#[tokio::test]
async fn a_fragmented_message_is_reassembled() {
    let srv = TestServer::start().await;
    publish_http(srv.addr, "frag.t", json!({"v":1})).await;
    let mut c = RawClient::connect(srv.addr).await;
    let msg = br#"{"op":"subscribe","id":"f","topics":["frag.t"]}"#;
    c.send_frame(false, OP_TEXT, &msg[..10], true).await;
    // A Ping may come between fragments.
    c.send_frame(true, OP_PING, b"p", true).await;
    c.send_frame(false, OP_CONT, &msg[10..20], true).await;
    c.send_frame(true, OP_CONT, &msg[20..], true).await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let f = c.read_frame(WAIT).await.unwrap();
        seen.push((f.opcode, String::from_utf8_lossy(&f.payload).to_string()));
    }
    assert!(seen.iter().any(|(op, p)| *op == OP_PONG && p == "p"));
    assert!(
        seen.iter()
            .any(|(_, p)| p.contains("\"subscribed\"") && p.contains("\"f\""))
    );
    assert!(seen.iter().any(|(_, p)| p.contains("\"snapshot\"")));
}

#[tokio::test]
async fn bad_fragment_sequences_close_with_1002() {
    let srv = TestServer::start().await;
    expect_close(
        &srv,
        async |c| c.send_frame(true, OP_CONT, b"x", true).await,
        1002,
    )
    .await;
    expect_close(
        &srv,
        async |c| {
            c.send_frame(false, OP_TEXT, b"{", true).await;
            c.send_frame(true, OP_TEXT, b"{}", true).await;
        },
        1002,
    )
    .await;
    // Control frames may not be fragmented or exceed 125 bytes.
    expect_close(
        &srv,
        async |c| c.send_frame(false, OP_PING, b"x", true).await,
        1002,
    )
    .await;
    expect_close(
        &srv,
        async |c| c.send_frame(true, OP_PING, &[b'x'; 126], true).await,
        1002,
    )
    .await;
    // Reserved opcodes.
    expect_close(
        &srv,
        async |c| c.send_frame(true, 0x3, b"x", true).await,
        1002,
    )
    .await;
}

#[tokio::test]
async fn close_frames_are_checked_and_echoed() {
    let srv = TestServer::start().await;
    expect_close(
        &srv,
        async |c| {
            c.send_frame(true, OP_CLOSE, &1000u16.to_be_bytes(), true)
                .await
        },
        1000,
    )
    .await;
    expect_close(
        &srv,
        async |c| {
            c.send_frame(true, OP_CLOSE, &4321u16.to_be_bytes(), true)
                .await
        },
        4321,
    )
    .await;
    expect_close(
        &srv,
        async |c| {
            c.send_frame(true, OP_CLOSE, &1005u16.to_be_bytes(), true)
                .await
        },
        1002,
    )
    .await;
    expect_close(
        &srv,
        async |c| c.send_frame(true, OP_CLOSE, b"\x03", true).await,
        1002,
    )
    .await;
    expect_close(
        &srv,
        async |c| c.send_frame(true, OP_CLOSE, b"\x03\xe8\xff", true).await,
        1007,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_costs_no_more_than_the_pongs_owed() {
    let srv = TestServer::start().await;
    let mut h = healthy(&srv).await;
    let mut c = RawClient::connect(srv.addr).await;
    const PINGS: usize = 20_000;
    for i in 0..PINGS {
        c.send_frame(true, OP_PING, format!("{i}").as_bytes(), true)
            .await;
    }
    c.send_text(r#"{"op":"ping","id":"end"}"#).await;
    let mut pongs = 0;
    let mut last_pong = String::new();
    loop {
        let f = c.read_frame(WAIT).await.expect("still open");
        if f.opcode == OP_PONG {
            pongs += 1;
            last_pong = String::from_utf8_lossy(&f.payload).to_string();
        }
        if f.opcode == OP_TEXT && String::from_utf8_lossy(&f.payload).contains("\"end\"") {
            break;
        }
    }
    assert!(pongs <= PINGS, "{pongs} pongs for {PINGS} pings");
    assert!(pongs >= 1);
    // The newest Ping is the one answered last.
    assert_eq!(last_pong, format!("{}", PINGS - 1));
    still_served(&srv, &mut h).await;
}

#[tokio::test]
async fn over_max_connections_closes_with_1013() {
    let srv = TestServer::start_with(|_, g| g.max_connections = 2).await;
    let mut a = healthy(&srv).await;
    let _b = srv.client().await;
    let mut c = RawClient::connect(srv.addr).await;
    assert_eq!(c.close_code(WAIT).await, Some(1013));
    still_served(&srv, &mut a).await;
    assert_eq!(
        srv.metric("tickwire_rejected_upgrades_total{reason=\"max_connections\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_closed_connection_gives_back_its_max_connections_slot() {
    let srv = TestServer::start_with(|_, g| g.max_connections = 1).await;
    let a = healthy(&srv).await;
    let mut refused = RawClient::connect(srv.addr).await;
    assert_eq!(refused.close_code(WAIT).await, Some(1013));
    a.close().await;
    // The connection's own task gives the slot back when it ends: a new
    // client is then served (welcome) instead of refused with 1013.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut every = tokio::time::interval(Duration::from_millis(20));
    loop {
        every.tick().await;
        let mut c = RawClient::connect(srv.addr).await;
        let f = c.read_frame(WAIT).await.expect("a frame: welcome or close");
        if f.opcode == OP_TEXT {
            assert!(String::from_utf8_lossy(&f.payload).contains("\"welcome\""));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot not released");
    }
}

#[tokio::test]
async fn over_the_per_ip_cap_gets_503() {
    let srv = TestServer::start_with(|_, g| g.max_connections_per_ip = 1).await;
    let mut a = healthy(&srv).await;
    let (_c, status) = RawClient::try_connect(srv.addr, &[]).await;
    assert_eq!(status, 503);
    still_served(&srv, &mut a).await;
    a.close().await;
    // The slot is given back when the connection ends.
    let mut every = tokio::time::interval(Duration::from_millis(20));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        every.tick().await;
        let (_c, status) = RawClient::try_connect(srv.addr, &[]).await;
        if status == 101 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slot not released");
    }
}

#[tokio::test]
async fn a_slow_handshake_is_cut_off() {
    let srv = TestServer::start_with(|_, g| g.header_read_timeout_ms = 300).await;
    let mut h = healthy(&srv).await;
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The server ends the connection instead of waiting forever (the timeout
    // here is 10 s; the server's is 0.3 s).
    let started = tokio::time::Instant::now();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("cut off in time");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!String::from_utf8_lossy(&buf).contains("101 Switching"));
    still_served(&srv, &mut h).await;
}

/// Frames a client sends in the same packet as its upgrade request reach the
/// broker through hyper's read buffer, not the socket; they are still read,
/// in order.
#[tokio::test]
async fn frames_sent_behind_the_upgrade_request_are_read() {
    let srv = TestServer::start().await;
    let seq = publish_http(srv.addr, "pre.x", json!({"p":1})).await;
    let behind = [
        frame(
            true,
            OP_TEXT,
            br#"{"op":"subscribe","id":"s1","topics":["pre.x"]}"#,
            true,
        ),
        frame(true, OP_PING, b"hi", true),
    ]
    .concat();
    let (mut c, status) = RawClient::try_connect_sending(srv.addr, &[], &behind).await;
    assert_eq!(status, 101);
    let mut texts = Vec::new();
    let mut pong = None;
    while texts.len() < 3 || pong.is_none() {
        let f = c.read_frame(WAIT).await.expect("a frame");
        match f.opcode {
            OP_TEXT => texts.push(serde_json::from_slice::<serde_json::Value>(&f.payload).unwrap()),
            OP_PONG => pong = Some(f.payload),
            OP_PING => {}
            other => panic!("unexpected opcode {other}"),
        }
    }
    assert_eq!(texts[0]["type"], "welcome");
    assert_eq!(texts[1]["type"], "subscribed");
    assert_eq!(texts[1]["id"], "s1");
    assert_eq!(texts[2]["type"], "snapshot");
    assert_eq!(texts[2]["seq"], seq);
    assert_eq!(pong.as_deref(), Some(&b"hi"[..]));
}
