//! The network face of tickwire: a hyper 1 server with the `/ws` WebSocket
//! upgrade (handshake by fastwebsockets, frames our own), the HTTP API,
//! `/metrics` and the dashboard. The only crate that owns client sockets;
//! topics and fan-out are the engine's.
//! Entry point: [`Gateway`] and its [`Gateway::serve`].
//!
//! # Layout
//! * `config`: [`GatewayConfig`] and [`AuthConfig`]
//! * `http`: routes, the JSON API, static files
//! * `connection`: one WebSocket connection's shared state and lifetime
//! * `deadline`: HTTP writes with a deadline (hyper has none)
//! * `frame`: client frames off the wire, buffers sized on demand
//! * `reader`: messages in, frame hygiene, control messages to the engine
//! * `writer`: batches out, heartbeats, deadlines, the close handshake
//! * `auth`, `jwt`: publisher keys, JWTs, rights, origins
//! * `metrics`: Prometheus counters
//! * `tls`: [`TlsConfig`], rustls with the ring provider
//! * `transport`: the upgraded stream (TCP or TLS) and its split into halves

mod auth;
mod config;
mod connection;
mod deadline;
mod frame;
mod http;
mod jwt;
mod metrics;
mod reader;
mod tls;
mod transport;
mod uring;
mod writer;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tickwire_engine::Engine;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{Auth, AuthError, Principal, Rights};
pub use config::{AuthConfig, GatewayConfig};
pub use metrics::Metrics;
pub use prometheus_client::registry::Registry as MetricsRegistry;
pub use tls::{TlsConfig, TlsError};
pub use uring::io_uring_supported;

/// The shared state of a running gateway.
#[derive(Debug)]
pub struct Gateway {
    cfg: GatewayConfig,
    engine: Arc<Engine>,
    auth: Auth,
    metrics: Metrics,
    shutdown: CancellationToken,
    /// Set when `shutdown` is seen, before every writer is woken to see it.
    closing: AtomicBool,
    tracker: TaskTracker,
    next_conn_id: AtomicU64,
    ws_connections: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Gateway {
    /// `shutdown` stops the accept loop and closes every connection with 1001.
    /// `extra_metrics` may register more collectors (feeds) into `/metrics`.
    pub fn new(
        cfg: GatewayConfig,
        engine: Arc<Engine>,
        shutdown: CancellationToken,
        extra_metrics: impl FnOnce(&mut MetricsRegistry),
    ) -> Arc<Gateway> {
        let mut metrics = Metrics::new(engine.clone());
        extra_metrics(metrics.registry_mut());
        Arc::new(Gateway {
            auth: Auth::new(&cfg.auth),
            cfg,
            engine,
            metrics,
            shutdown,
            closing: AtomicBool::new(false),
            tracker: TaskTracker::new(),
            next_conn_id: AtomicU64::new(1),
            ws_connections: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// Open WebSocket connections.
    pub fn connection_count(&self) -> usize {
        self.ws_connections.load(Ordering::Relaxed)
    }

    /// The broker is shutting down: writers send `shutdown` and Close 1001.
    fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn admit_connection(&self) -> bool {
        let n = self.ws_connections.fetch_add(1, Ordering::AcqRel);
        if n >= self.cfg.max_connections {
            self.ws_connections.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn release_connection(&self) {
        self.ws_connections.fetch_sub(1, Ordering::AcqRel);
    }

    fn admit_ip(&self, ip: IpAddr) -> bool {
        let mut m = self.per_ip.lock();
        let n = m.entry(ip).or_insert(0);
        if *n >= self.cfg.max_connections_per_ip {
            return false;
        }
        *n += 1;
        true
    }

    fn release_ip(&self, ip: IpAddr) {
        let mut m = self.per_ip.lock();
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }

    /// Serves `listener` until the shutdown token is cancelled, then closes
    /// every connection (`shutdown`, Close 1001) and waits for them, at most
    /// `shutdown_timeout_ms`.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        // Stale-topic sweeper; it stops with the shutdown token and the tracker waits for it.
        {
            let gw = self.clone();
            self.tracker.spawn(async move {
                let mut every =
                    tokio::time::interval(Duration::from_millis(gw.cfg.stale_check_ms.max(10)));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = gw.shutdown.cancelled() => break,
                        _ = every.tick() => gw.engine.sweep_stale(tickwire_proto::now_ms()),
                    }
                }
            });
        }
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, don't spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            if self.cfg.socket_send_buffer_bytes > 0 {
                let _ = socket2::SockRef::from(&stream)
                    .set_send_buffer_size(self.cfg.socket_send_buffer_bytes);
            }
            let gw = self.clone();
            let acceptor = self.cfg.tls.as_ref().map(|t| t.acceptor());
            self.tracker.spawn(async move {
                match acceptor {
                    None => gw.serve_http(stream, peer).await,
                    Some(acceptor) => {
                        // The handshake runs in the connection's own task, never in
                        // the accept loop, and has the header deadline: a peer
                        // that opens a socket and stalls holds nothing for long.
                        let limit = Duration::from_millis(gw.cfg.header_read_timeout_ms);
                        let tls = tokio::select! {
                            r = tokio::time::timeout(limit, acceptor.accept(stream)) => r,
                            _ = gw.shutdown.cancelled() => return,
                        };
                        match tls {
                            Ok(Ok(tls)) => gw.serve_http(tls, peer).await,
                            // A plain-HTTP client on the TLS port, a scanner, a
                            // certificate the client refused: not our fault, so debug.
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
            });
        }
        drop(listener);
        // Writers check the flag on every pass; the wake makes the idle ones pass.
        self.closing.store(true, Ordering::Release);
        self.engine.wake_all();
        self.tracker.close();
        let deadline = Duration::from_millis(self.cfg.shutdown_timeout_ms);
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.connection_count(),
                "connections still open at the shutdown deadline"
            );
        }
    }

    /// Serves HTTP/1.1 (and the `/ws` upgrade) on one accepted stream, plain
    /// or TLS, until it ends or the broker shuts down.
    async fn serve_http<S>(self: Arc<Self>, stream: S, peer: std::net::SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let svc = {
            let gw = self.clone();
            service_fn(move |req| http::handle(gw.clone(), peer, req))
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(self.cfg.header_read_timeout_ms))
            .max_buf_size(64 * 1024)
            // The head's own limit: the buffer's alone let a larger head in
            // (the buffer grows by doubling; a 70 KB head was served).
            .max_header_size(64 * 1024)
            .serve_connection(
                TokioIo::new(deadline::WriteDeadline::new(
                    stream,
                    Duration::from_millis(self.cfg.write_timeout_ms),
                )),
                svc,
            )
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = self.shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
            }
        }
    }
}
