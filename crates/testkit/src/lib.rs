//! Test helpers: a broker on 127.0.0.1:0 in the test's runtime, a real
//! WebSocket client (tokio-tungstenite, an independent implementation), and a
//! minimal HTTP/1.1 client. Every wait has a timeout; nothing sleeps.
//!
//! # Layout
//! * [`TestServer`]: engine + gateway on an ephemeral port, shut down on drop
//! * [`Client`]: JSON over WebSocket, `recv` with a timeout, close codes
//! * [`http`]: one request, one response
//! * [`raw`]: a hand-made WebSocket client for hostile frames
//! * [`tls`]: `wss://` and `https://` clients that trust one test certificate

pub mod raw;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tickwire_engine::{Engine, EngineConfig};
use tickwire_gateway::{Gateway, GatewayConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// The publisher key every [`TestServer`] accepts.
pub const KEY: &str = "test-publisher-key";

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A broker serving on 127.0.0.1 with an ephemeral port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    pub shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// A server with default settings and [`KEY`] as publisher key.
    pub async fn start() -> TestServer {
        Self::start_with(|_, _| {}).await
    }

    /// A server whose settings `tune` may change first.
    pub async fn start_with(
        tune: impl FnOnce(&mut EngineConfig, &mut GatewayConfig),
    ) -> TestServer {
        let mut ecfg = EngineConfig::default();
        let mut gcfg = GatewayConfig::default();
        gcfg.auth.publisher_keys.push(KEY.into());
        tune(&mut ecfg, &mut gcfg);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        gcfg.listen = addr;
        let engine = Arc::new(Engine::new(ecfg));
        let shutdown = CancellationToken::new();
        let gateway = Gateway::new(gcfg, engine, shutdown.clone(), |_| {});
        let task = tokio::spawn(gateway.clone().serve(listener));
        TestServer {
            addr,
            gateway,
            shutdown,
            task: Some(task),
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        self.gateway.engine()
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A client that has read its `welcome`.
    pub async fn client(&self) -> Client {
        let mut c = Client::connect(&self.ws_url(), &[]).await.expect("connect");
        c.expect_type("welcome").await;
        c
    }

    /// A client with the publisher key in its upgrade request, `welcome` read.
    pub async fn publisher(&self) -> Client {
        let auth = format!("Bearer {KEY}");
        let mut c = Client::connect(&self.ws_url(), &[("Authorization", &auth)])
            .await
            .expect("connect");
        c.expect_type("welcome").await;
        c
    }

    /// Cancels the shutdown token and waits for the server to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            tokio::time::timeout(WAIT, t)
                .await
                .expect("server stops in time")
                .expect("server task");
        }
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        http(self.addr, "GET", "/metrics", &[], b"").await.1
    }

    /// The value of one metric line (`name` with labels, as printed), 0 if absent.
    pub async fn metric(&self, name: &str) -> f64 {
        metric_value(&self.metrics().await, name)
    }
}

/// Finds `name ` at the start of a line of Prometheus text.
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// What a client saw at the end of its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// A Close frame with this code and reason.
    Code(u16, String),
    /// The stream ended without a Close frame (1006).
    Abnormal,
}

/// A WebSocket client speaking JSON text frames.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Connects to `url` with extra request headers.
    ///
    /// # Errors
    /// The handshake error (an HTTP status for a refused upgrade).
    pub async fn connect(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut req = url.into_client_request()?;
        for (k, v) in headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
                    .expect("header name"),
                v.parse().expect("header value"),
            );
        }
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
            .await
            .map_err(|_| {
                tokio_tungstenite::tungstenite::Error::Io(std::io::Error::other(
                    "connect timed out",
                ))
            })??;
        Ok(Client { ws })
    }

    /// Wraps a connected stream (for clients with special sockets).
    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        Client { ws }
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::text(s)).await.expect("send");
    }

    /// Sends unless the connection is gone (a flood the broker cut off).
    pub async fn try_send(&mut self, v: Value) -> bool {
        self.ws.send(Message::text(v.to_string())).await.is_ok()
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// The next text frame as JSON; panics on timeout or close.
    pub async fn recv(&mut self) -> Value {
        match self.recv_within(WAIT).await {
            Some(v) => v,
            None => panic!("no message within {WAIT:?}"),
        }
    }

    /// The next text frame within `limit`, or `None` on timeout. Panics on close.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let m = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => panic!("connection ended"),
                Ok(Some(Err(e))) => panic!("connection failed: {e}"),
                Ok(Some(Ok(m))) => m,
            };
            match m {
                Message::Text(t) => {
                    return Some(serde_json::from_str(&t).expect("server sent JSON"));
                }
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// The next text frame as sent, unparsed.
    pub async fn recv_text(&mut self) -> String {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
                Ok(Some(Ok(Message::Close(c)))) => panic!("closed: {c:?}"),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => panic!("connection failed: {e}"),
                Ok(None) => panic!("connection ended"),
                Err(_) => panic!("no message within {WAIT:?}"),
            }
        }
    }

    /// Sends a `ping` with `id` and reads up to its `pong`, returning the frames
    /// before it: replies are in order, so this proves what was (not) queued.
    pub async fn barrier(&mut self, id: &str) -> Vec<Value> {
        self.send(serde_json::json!({"op":"ping","id":id})).await;
        let mut before = Vec::new();
        loop {
            let v = self.recv().await;
            if v["type"] == "pong" && v["id"] == id {
                return before;
            }
            before.push(v);
        }
    }

    /// Reads until a frame of `"type": ty` arrives, returning it.
    pub async fn expect_type(&mut self, ty: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == ty {
                return v;
            }
        }
    }

    /// Reads frames until the connection ends; returns how it ended and the text frames seen.
    pub async fn until_closed(&mut self, limit: Duration) -> (Closed, Vec<Value>) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("still open after {limit:?}"),
                Ok(None) | Ok(Some(Err(_))) => return (Closed::Abnormal, seen),
                Ok(Some(Ok(Message::Close(c)))) => {
                    let c = c.map_or(Closed::Code(1005, String::new()), |f: CloseFrame| {
                        Closed::Code(f.code.into(), f.reason.to_string())
                    });
                    return (c, seen);
                }
                Ok(Some(Ok(Message::Text(t)))) => {
                    seen.push(serde_json::from_str(&t).expect("server sent JSON"))
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Subscribes and returns the `subscribed` reply.
    pub async fn subscribe(&mut self, v: Value) -> Value {
        self.send(v).await;
        self.expect_type("subscribed").await
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    pub fn inner(&mut self) -> &mut WebSocketStream<MaybeTlsStream<TcpStream>> {
        &mut self.ws
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let fut = async {
        let s = TcpStream::connect(addr).await.expect("connect");
        http_on(s, addr, method, path, headers, body).await
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("HTTP request in time")
}

/// One HTTP/1.1 request with `Connection: close` on a connected stream (plain
/// or TLS); returns status and body.
pub async fn http_on<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write");
    s.flush().await.expect("flush");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).to_string();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The JWT secret of servers started with auth on.
pub const JWT_SECRET: &str = "test-secret-of-at-least-16-bytes";

/// An HS256 token signed with [`JWT_SECRET`].
pub fn jwt(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("encode JWT")
}

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    tickwire_proto::now_ms() / 1000
}

/// `POST /api/publish` with `Authorization: Bearer <token>` and, when
/// given, a `Content-Type`; returns status and body.
pub async fn post_publish(
    addr: SocketAddr,
    token: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Authorization", auth.as_str())];
    headers.extend(content_type.map(|c| ("Content-Type", c)));
    http(addr, "POST", "/api/publish", &headers, body).await
}

/// Publishes over HTTP with [`KEY`]; returns the seq.
pub async fn publish_http(addr: SocketAddr, topic: &str, data: Value) -> u64 {
    let body = serde_json::json!({ "topic": topic, "data": data }).to_string();
    let (status, body) = post_publish(addr, KEY, Some("application/json"), body.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["seqs"][0].as_u64().expect("seq")
}

/// A TCP socket with a small receive buffer (set before connect, so the window
/// is small from the handshake on), upgraded to WebSocket.
pub async fn small_rcvbuf_client(addr: SocketAddr, rcvbuf: usize) -> Client {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
    sock.set_nonblocking(true).expect("nonblocking");
    let std_sock: std::net::TcpStream = sock.into();
    let sock = tokio::net::TcpSocket::from_std_stream(std_sock);
    let stream = tokio::time::timeout(WAIT, sock.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let url = format!("ws://{addr}/ws");
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    Client { ws }
}

/// TCP states (include/net/tcp_states.h: 1 established, 6 time-wait, ...) of
/// this machine's sockets whose local port is `port` and, when given, whose
/// remote port is `peer`, from `/proc/net/tcp` and `/proc/net/tcp6`.
pub fn tcp_states(port: u16, peer: Option<u16>) -> Vec<u8> {
    let port_of = |c: Option<&&str>| {
        c.and_then(|a| a.rsplit(':').next())
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if port_of(cols.get(1)) == Some(port)
                && peer.is_none_or(|peer| port_of(cols.get(2)) == Some(peer))
            {
                out.push(
                    cols.get(3)
                        .and_then(|s| u8::from_str_radix(s, 16).ok())
                        .unwrap_or(0),
                );
            }
        }
    }
    out
}
