//! Test helpers for feed crates: a sink that collects ticks and lets a test
//! wait for them, and a mock venue (a WebSocket server on `127.0.0.1:0`).
//!
//! Tests wait on events with a timeout, never on fixed sleeps.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tickwire_proto::Topic;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::sink::{SinkError, TickSink};

/// The WebSocket message type [`MockConn`] speaks.
pub use tokio_tungstenite::tungstenite::Message;

/// One tick a [`CollectingSink`] took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    pub topic: Topic,
    /// The data bytes as published (a JSON object), as text.
    pub data: String,
    /// Its seq in the topic, counted by the sink from 1 as the engine does.
    pub seq: u64,
}

/// A [`TickSink`] that keeps every tick, for tests.
#[derive(Debug)]
pub struct CollectingSink {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    ticks: Vec<Collected>,
    seqs: HashMap<Topic, u64>,
    closed: bool,
}

impl CollectingSink {
    pub fn new() -> Arc<CollectingSink> {
        Arc::new(CollectingSink {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every tick so far, in publish order.
    pub fn ticks(&self) -> Vec<Collected> {
        self.state().ticks.clone()
    }

    pub fn len(&self) -> usize {
        self.state().ticks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ticks of one topic, in order.
    pub fn on(&self, topic: &str) -> Vec<Collected> {
        self.state()
            .ticks
            .iter()
            .filter(|c| c.topic.as_str() == topic)
            .cloned()
            .collect()
    }

    /// Refuses every tick from now on, as a stopped engine would.
    pub fn close(&self) {
        self.state().closed = true;
    }

    /// Waits until `done` holds for the ticks so far; returns them.
    ///
    /// # Errors
    /// The ticks collected so far, when `limit` passed first.
    pub async fn wait_until(
        &self,
        limit: Duration,
        done: impl Fn(&[Collected]) -> bool,
    ) -> Result<Vec<Collected>, Vec<Collected>> {
        let mut rx = self.changed.subscribe();
        let wait = async {
            loop {
                {
                    let st = self.state();
                    if done(&st.ticks) {
                        return st.ticks.clone();
                    }
                }
                // The sender lives in `self`, so `changed` only fails if
                // `self` is gone, which it cannot be while borrowed.
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        timeout(limit, wait).await.map_err(|_| self.ticks())
    }

    /// Waits until at least `n` ticks arrived in all.
    ///
    /// # Errors
    /// The ticks so far, after `limit`.
    pub async fn wait_for_count(
        &self,
        n: usize,
        limit: Duration,
    ) -> Result<Vec<Collected>, Vec<Collected>> {
        self.wait_until(limit, |t| t.len() >= n).await
    }
}

impl TickSink for CollectingSink {
    fn publish(&self, topic: &Topic, data: &[u8]) -> Result<u64, SinkError> {
        let seq = {
            let mut st = self.state();
            if st.closed {
                return Err(SinkError::Closed);
            }
            let seq = st.seqs.entry(topic.clone()).or_insert(0);
            *seq += 1;
            let seq = *seq;
            st.ticks.push(Collected {
                topic: topic.clone(),
                data: String::from_utf8_lossy(data).into_owned(),
                seq,
            });
            seq
        };
        self.changed.send_modify(|n| *n += 1);
        Ok(seq)
    }
}

/// A mock venue: a WebSocket server on `127.0.0.1:0` whose connections the
/// test drives by hand ([`MockConn`]).
#[derive(Debug)]
pub struct MockVenue {
    addr: SocketAddr,
    conns: mpsc::Receiver<MockConn>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl MockVenue {
    /// Binds `127.0.0.1:0` and accepts WebSocket upgrades in the background.
    ///
    /// # Panics
    /// When the port cannot be bound (a test failure).
    pub async fn start() -> MockVenue {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, conns) = mpsc::channel(16);
        let acceptor = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                        let _ = tx.send(MockConn { ws }).await;
                    }
                });
            }
        });
        MockVenue {
            addr,
            conns,
            acceptor,
        }
    }

    /// `ws://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next connection a client made.
    ///
    /// # Panics
    /// When none came within `limit` (a test failure).
    pub async fn accept(&mut self, limit: Duration) -> MockConn {
        timeout(limit, self.conns.recv())
            .await
            .expect("no connection to the mock venue in time")
            .expect("the acceptor runs while the mock lives")
    }
}

impl Drop for MockVenue {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// One client connection to a [`MockVenue`].
#[derive(Debug)]
pub struct MockConn {
    ws: WebSocketStream<TcpStream>,
}

impl MockConn {
    /// # Panics
    /// When the client is gone (a test failure).
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send to the feed");
    }

    /// # Panics
    /// When the client is gone (a test failure).
    pub async fn send_ping(&mut self, payload: &[u8]) {
        self.ws
            .send(Message::Ping(payload.to_vec().into()))
            .await
            .expect("ping the feed");
    }

    /// The next frame from the client, `None` when it closed or `limit` passed.
    pub async fn recv(&mut self, limit: Duration) -> Option<Message> {
        match timeout(limit, self.ws.next()).await {
            Ok(Some(Ok(m))) => Some(m),
            _ => None,
        }
    }

    /// The next text frame from the client, skipping Pongs.
    ///
    /// # Panics
    /// When none came within `limit` (a test failure).
    pub async fn recv_text(&mut self, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Some(Message::Text(t)) => return t.as_str().to_owned(),
                Some(Message::Pong(_) | Message::Ping(_) | Message::Frame(_)) => {}
                other => panic!("expected a text frame from the feed, got {other:?}"),
            }
        }
    }

    /// The payload of the next Pong from the client, skipping text frames.
    ///
    /// # Panics
    /// When none came within `limit` (a test failure).
    pub async fn recv_pong(&mut self, limit: Duration) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Some(Message::Pong(p)) => return p.to_vec(),
                Some(Message::Text(_) | Message::Ping(_) | Message::Frame(_)) => {}
                other => panic!("expected a Pong from the feed, got {other:?}"),
            }
        }
    }

    /// Sends a Close frame with `code` and `reason`.
    pub async fn close(mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_owned().into(),
        };
        let _ = self.ws.close(Some(frame)).await;
    }

    /// Drops the TCP connection with no Close frame, as a crashed venue would.
    pub fn drop_connection(self) {
        drop(self);
    }
}
