//! The close handshake leaves no broker socket half-closed.

use std::time::Duration;

use serde_json::json;
use tickwire_testkit::raw::{OP_BINARY, OP_CLOSE, RawClient};
use tickwire_testkit::{Closed, TestServer, WAIT, tcp_states};

const FIN_WAIT1: u8 = 4;
const FIN_WAIT2: u8 = 5;
const CLOSE_WAIT: u8 = 8;
const ESTABLISHED: u8 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_broker_socket_is_left_in_close_wait_or_fin_wait() {
    let srv = TestServer::start_with(|_, g| g.close_timeout_ms = 500).await;
    let port = srv.addr.port();
    let mut keep = srv.client().await;

    // Client-initiated close, done properly.
    let mut a = srv.client().await;
    a.inner().close(None).await.unwrap();
    let (closed, _) = a.until_closed(WAIT).await;
    assert!(
        matches!(closed, Closed::Code(1000, _) | Closed::Abnormal),
        "{closed:?}"
    );
    drop(a);

    // Server-initiated close (a flood), answered by the client.
    let mut b = srv.client().await;
    for i in 0..1100 {
        if !b.try_send(json!({"op":"ping","id":i})).await {
            break;
        }
    }
    assert!(matches!(
        b.until_closed(WAIT).await.0,
        Closed::Code(4003, _)
    ));
    drop(b);

    // The TCP connection just drops, no close frame.
    let c = RawClient::connect(srv.addr).await;
    drop(c);

    // Server-initiated close that the peer never answers, keeping TCP open.
    let mut d = RawClient::connect(srv.addr).await;
    d.send_frame(true, OP_BINARY, b"x", true).await;
    let mut saw_close = false;
    while let Some(f) = d.read_frame(WAIT).await {
        if f.opcode == OP_CLOSE {
            assert_eq!(f.close_code(), Some(1003));
            saw_close = true;
        }
    }
    assert!(saw_close);

    let bad = |s: &u8| matches!(*s, FIN_WAIT1 | FIN_WAIT2 | CLOSE_WAIT);
    let mut every = tokio::time::interval(Duration::from_millis(50));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        every.tick().await;
        let st = tcp_states(port, None);
        if !st.iter().any(bad) {
            assert!(
                st.contains(&ESTABLISHED),
                "the healthy connection stays: {st:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "half-closed sockets remain: {st:?}"
        );
    }
    assert!(keep.barrier("alive").await.is_empty());
    drop(d);
}
