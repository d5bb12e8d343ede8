//! Heartbeats find dead peers (PROTOCOL.md "Heartbeats").

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tickwire_testkit::TestServer;
use tickwire_testkit::raw::{OP_CLOSE, OP_PING, RawClient};
use tokio_tungstenite::tungstenite::Message;

const HEARTBEAT_MS: u64 = 300;

#[allow(unsafe_code)]
fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) touches no memory of ours; the pid is our own child's.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0);
}

/// The three cases share one broker and run at once: each needs over 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peers_are_closed_with_4000_and_live_ones_survive() {
    let srv = TestServer::start_with(|_, g| g.heartbeat_ms = HEARTBEAT_MS).await;
    let limit = Duration::from_millis(HEARTBEAT_MS + 10_000 + 1_000);
    let started = Instant::now();

    // 1. Reads everything, answers nothing.
    let silent = async {
        let mut c = RawClient::connect(srv.addr).await;
        let mut pings = 0;
        loop {
            let f = c
                .read_frame(limit)
                .await
                .expect("a close frame, not a bare end");
            match f.opcode {
                OP_PING => pings += 1,
                OP_CLOSE => {
                    assert_eq!(f.close_code(), Some(4000));
                    assert_eq!(&f.payload[2..], b"heartbeat timeout");
                    break;
                }
                _ => {}
            }
        }
        assert!(pings >= 10, "pinged every {HEARTBEAT_MS} ms: {pings}");
        started.elapsed()
    };

    // 2. A process stopped with SIGSTOP: its kernel still ACKs TCP.
    let stopped = async {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tw-idle-client"))
            .arg(srv.addr.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn tw-idle-client");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        tokio::task::block_in_place(|| out.read_line(&mut line)).expect("ready line");
        assert_eq!(line.trim(), "ready");
        kill(child.id(), libc::SIGSTOP);
        let t0 = Instant::now();
        let mut every = tokio::time::interval(Duration::from_millis(50));
        let closed_after = loop {
            every.tick().await;
            // Both dead clients count here; reaching 2 bounds the later close.
            if srv.metric("tickwire_heartbeat_timeouts_total").await >= 2.0 {
                break t0.elapsed();
            }
            assert!(
                t0.elapsed() < limit + Duration::from_secs(2),
                "stopped client not closed"
            );
        };
        kill(child.id(), libc::SIGKILL);
        let _ = child.wait();
        closed_after
    };

    // 3. A real client: tungstenite answers every Ping.
    let live = async {
        let mut c = srv.client().await;
        let mut pings = 0;
        let until = tokio::time::Instant::now() + limit + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(until, c.inner().next()).await {
                Err(_) => break,
                Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
                Ok(Some(Ok(Message::Close(f)))) => panic!("live client closed: {f:?}"),
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("live client lost: {other:?}"),
            }
        }
        assert!(pings >= 30, "many heartbeat cycles: {pings}");
        c.barrier("still-open").await;
    };

    let (silent_after, stopped_after, ()) = tokio::join!(silent, stopped, live);
    assert!(
        silent_after <= limit,
        "silent client closed after {silent_after:?}"
    );
    assert!(
        stopped_after <= limit,
        "stopped client closed after {stopped_after:?}"
    );
    assert!(
        silent_after >= Duration::from_millis(10_000),
        "not before heartbeat_ms + 10 s: {silent_after:?}"
    );
    assert!(srv.metric("tickwire_heartbeat_timeouts_total").await >= 2.0);
    assert!(srv.metric("tickwire_closes_total{code=\"4000\"}").await >= 2.0);
}
