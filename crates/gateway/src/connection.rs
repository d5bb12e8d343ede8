//! One WebSocket connection: the state its reader and writer share, and the
//! task that runs it from upgrade to close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tickwire_engine::{ConnId, Outbox};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;
use tracing::Instrument;

use crate::auth::Principal;
use crate::transport::{self, Stream, TcpSink, TcpWrite, WireWrite};
use crate::{Gateway, reader, writer};
use tokio::net::tcp::OwnedWriteHalf;

/// Requests from the reader (or a timer) to the writer, outside the outbox.
#[derive(Debug, Default)]
pub(crate) struct Ctl {
    /// Payload of the newest unanswered Ping: a flood of Pings costs one Pong.
    pub pong: Option<Bytes>,
    /// Close with this code and reason.
    pub close: Option<(u16, &'static str)>,
    /// The reader has stopped reading.
    pub reader_done: bool,
    /// The stream ended cleanly (the peer sent its FIN, or the socket is gone).
    pub eof: bool,
    /// The peer's Close frame arrived.
    pub peer_closed: bool,
    /// Echo mode (feature `conformance`): frames to send back, in order.
    #[cfg(feature = "conformance")]
    pub echo: std::collections::VecDeque<(u8, Bytes)>,
}

/// What the reader and writer of one connection share.
#[derive(Debug)]
pub(crate) struct Conn {
    pub id: ConnId,
    pub outbox: Arc<Outbox>,
    pub ctl: Mutex<Ctl>,
    pub ctl_notify: Notify,
    /// When a frame last arrived, in ms since `started`.
    pub last_seen_ms: AtomicU64,
    /// Token expiry (s since the Unix epoch), 0 for none; refreshed by `auth`.
    pub expires_at_s: AtomicU64,
    pub started: Instant,
}

impl Conn {
    pub fn touch(&self) {
        self.last_seen_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn last_seen(&self) -> Instant {
        self.started + Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed))
    }
}

/// Starts serving an upgraded connection: its reader and its writer each run
/// in a task of their own, and the writer's task cleans up when the
/// connection ends. `pre` holds bytes the client sent right behind its
/// upgrade request. Takes the connection slot `admit_connection` gave.
///
/// Nothing of the upgrade stays behind: the task that ran it ends here, so an
/// idle connection costs only its two small tasks (docs/performance.md).
pub(crate) fn start(
    gw: Arc<Gateway>,
    stream: Stream,
    pre: Bytes,
    peer: SocketAddr,
    principal: Option<Principal>,
) {
    match stream {
        Stream::Tcp(s) => {
            let (r, w) = s.into_split();
            let w = Arc::new(w);
            let direct = gw.cfg.direct_writes.then(|| w.clone());
            spawn(gw, r, TcpWrite(w), direct, pre, peer, principal);
        }
        Stream::Tls(s) => match transport::split_tls(*s) {
            Ok((r, w)) => spawn(gw, r, w, None, pre, peer, principal),
            Err(e) => {
                // Out of descriptors: drop the connection rather than serve
                // one that could not be reset.
                tracing::warn!(error = %e, %peer, "cannot duplicate the socket");
                gw.release_ip(peer.ip());
                gw.release_connection();
            }
        },
    }
}

fn spawn<R, W>(
    gw: Arc<Gateway>,
    r: R,
    w: W,
    direct: Option<Arc<OwnedWriteHalf>>,
    pre: Bytes,
    peer: SocketAddr,
    principal: Option<Principal>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: WireWrite + 'static,
{
    let id = ConnId(gw.next_conn_id.fetch_add(1, Ordering::Relaxed));
    let span = tracing::debug_span!("conn", conn_id = id.0, %peer);
    let _entered = span.enter();
    let outbox = gw.engine.new_outbox();
    if let Some(w) = direct {
        outbox.set_direct_sink(Arc::new(TcpSink {
            w,
            frames_out: gw.metrics.frames_out.clone(),
            bytes_out: gw.metrics.bytes_out.clone(),
            direct_writes: gw.metrics.direct_writes.clone(),
        }));
    }
    let conn = Arc::new(Conn {
        id,
        outbox: outbox.clone(),
        ctl: Mutex::new(Ctl::default()),
        ctl_notify: Notify::new(),
        last_seen_ms: AtomicU64::new(0),
        expires_at_s: AtomicU64::new(principal.as_ref().and_then(|p| p.exp).unwrap_or(0)),
        started: Instant::now(),
    });
    gw.metrics.connections.inc();
    gw.metrics.connections_total.inc();
    gw.engine.connect(id, outbox.clone());
    #[cfg(feature = "conformance")]
    let welcome = !gw.cfg.echo;
    #[cfg(not(feature = "conformance"))]
    let welcome = true;
    if welcome {
        outbox.push_control(tickwire_proto::encode::welcome(
            gw.engine.epoch(),
            gw.cfg.heartbeat_ms,
            tickwire_proto::now_ms(),
        ));
    }
    drop(outbox);
    let read = std::io::Cursor::new(pre).chain(r);
    let reader = gw
        .tracker
        .spawn(reader::run(gw.clone(), conn.clone(), read, principal).in_current_span());
    let ip = peer.ip();
    let tracker = gw.tracker.clone();
    tracker.spawn(
        async move {
            writer::run(&gw, &conn, w).await;
            // The writer is done with the socket: a reader still blocked on a
            // dead peer is stopped here (nothing reads this socket again).
            reader.abort();
            let _ = reader.await;
            gw.engine.disconnect(conn.id);
            gw.metrics.connections.dec();
            gw.release_ip(ip);
            gw.release_connection();
            tracing::debug!("closed");
        }
        .in_current_span(),
    );
}
