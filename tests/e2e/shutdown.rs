//! Graceful shutdown: `shutdown`, then Close 1001, then the server returns.

use serde_json::json;
use tickwire_testkit::{Closed, TestServer, WAIT};

#[tokio::test]
async fn shutdown_sends_shutdown_then_1001() {
    let srv = TestServer::start().await;
    let mut a = srv.client().await;
    let mut b = srv.client().await;
    a.subscribe(json!({"op":"subscribe","topics":["x"]})).await;
    let stopping = tokio::spawn(async move { srv.stop().await });
    for c in [&mut a, &mut b] {
        let (closed, frames) = c.until_closed(WAIT).await;
        assert_eq!(closed, Closed::Code(1001, "shutting down".into()));
        let last = frames.last().expect("a shutdown message");
        assert_eq!(last["type"], "shutdown");
        assert_eq!(last["retry_ms"], 2500);
    }
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("server stops")
        .unwrap();
}
