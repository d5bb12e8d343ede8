//! RFC 6455 details that the Autobahn run (`.ci/autobahn.sh`) showed, pinned
//! on the broker itself: control frame size, failing fast on invalid UTF-8
//! in a fragmented message, and answering what came before a bad frame.

use std::time::Duration;

use tickwire_testkit::raw::{OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawClient, frame};
use tickwire_testkit::{TestServer, WAIT};

/// A raw client past its `welcome`.
async fn raw(srv: &TestServer) -> RawClient {
    let mut c = RawClient::connect(srv.addr).await;
    let welcome = c.read_frame(WAIT).await.expect("welcome");
    assert!(String::from_utf8_lossy(&welcome.payload).contains("welcome"));
    c
}

#[tokio::test]
async fn control_frames_over_125_bytes_close_with_1002() {
    let srv = TestServer::start().await;
    // fastwebsockets checks this for Ping only; Pong and Close are ours.
    for op in [OP_PONG, OP_PING] {
        let mut c = raw(&srv).await;
        c.send_frame(true, op, &[b'x'; 126], true).await;
        assert_eq!(c.close_code(WAIT).await, Some(1002), "opcode {op}");
    }
}

#[tokio::test]
async fn invalid_utf8_in_a_fragment_closes_before_the_message_ends() {
    let srv = TestServer::start().await;
    let mut c = raw(&srv).await;
    // A valid start, then a fragment no continuation can make valid
    // (0xF4 0x90 is above U+10FFFF). The last fragment is never sent.
    c.send_frame(false, OP_TEXT, "κόσμε".as_bytes(), true).await;
    c.send_frame(false, OP_CONT, b"\xf4\x90\x80\x80", true)
        .await;
    assert_eq!(c.close_code(WAIT).await, Some(1007));
}

#[tokio::test]
async fn a_character_split_across_fragments_is_fine() {
    let srv = TestServer::start().await;
    let mut c = raw(&srv).await;
    let text = r#"{"op":"ping","id":"é€😀"}"#.as_bytes();
    // Split inside the multi-byte characters, one byte per frame.
    c.send_frame(false, OP_TEXT, &text[..1], true).await;
    for b in &text[1..text.len() - 1] {
        c.send_frame(false, OP_CONT, &[*b], true).await;
    }
    c.send_frame(true, OP_CONT, &text[text.len() - 1..], true)
        .await;
    let f = c.read_frame(WAIT).await.expect("pong");
    let pong = String::from_utf8(f.payload).expect("UTF-8");
    assert!(
        pong.contains(r#""type":"pong""#) && pong.contains("é€😀"),
        "{pong}"
    );
}

#[tokio::test]
async fn replies_to_earlier_messages_go_out_before_a_protocol_close() {
    let srv = TestServer::start().await;
    let mut c = raw(&srv).await;
    // One write: a good request, then a reserved opcode (0x3), so the reader
    // sees both before the writer wakes.
    c.send_frames(&[
        frame(true, OP_TEXT, br#"{"op":"ping","id":"before"}"#, true),
        frame(true, 0x3, b"", true),
    ])
    .await;
    let mut frames = Vec::new();
    loop {
        let f = c
            .read_frame(Duration::from_secs(5))
            .await
            .expect("a Close, not the end of the stream");
        let close = f.close_code();
        frames.push(f);
        if close.is_some() {
            break;
        }
    }
    assert_eq!(frames.last().and_then(|f| f.close_code()), Some(1002));
    assert!(
        frames
            .iter()
            .any(|f| String::from_utf8_lossy(&f.payload).contains(r#""id":"before""#)),
        "the pong was dropped: {frames:?}"
    );
}
