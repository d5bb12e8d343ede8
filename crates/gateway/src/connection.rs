//! One WebSocket connection: the state its reader and writer share, and the
//! task that runs it from upgrade to close.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tickwire_engine::{ConnId, Outbox};
use tokio::io::AsyncRead;
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
    /// Changed by the reader, which then wakes the writer (`Outbox::wake_writer`).
    pub ctl: Mutex<Ctl>,
    /// When a frame last arrived, in ms since `started`.
    pub last_seen_ms: AtomicU64,
    /// Token expiry (ms since the Unix epoch), 0 for none; refreshed by `auth`.
    pub expires_at_ms: AtomicU64,
    pub started: Instant,
    /// The peer's address, for its per-IP slot.
    pub ip: IpAddr,
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

/// Starts serving an upgraded connection: its reader and its writer run in
/// one task, which cleans up when the connection ends. `pre` holds bytes the
/// client sent right behind its upgrade request. Takes the connection slot
/// `admit_connection` gave.
///
/// Nothing of the upgrade stays behind: the task that ran it ends here, so an
/// idle connection costs only its one small task (docs/performance.md).
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
        let fd = {
            use std::os::fd::AsRawFd;
            let s: &tokio::net::TcpStream = w.as_ref().as_ref();
            s.as_raw_fd()
        };
        outbox.set_direct_sink(Arc::new(TcpSink {
            w,
            fd,
            frames_out: gw.metrics.frames_out.clone(),
            bytes_out: gw.metrics.bytes_out.clone(),
            direct_writes: gw.metrics.direct_writes.clone(),
        }));
    }
    let conn = Arc::new(Conn {
        id,
        outbox: outbox.clone(),
        ctl: Mutex::new(Ctl::default()),
        last_seen_ms: AtomicU64::new(0),
        expires_at_ms: AtomicU64::new(
            principal
                .as_ref()
                .and_then(|p| p.expires_at_ms)
                .unwrap_or(0),
        ),
        started: Instant::now(),
        ip: peer.ip(),
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
    let reader = reader::run(gw.clone(), conn.clone(), r, pre, principal);
    let writer = writer::run(gw.clone(), conn.clone(), w);
    let tracker = gw.tracker.clone();
    let serve = Serve {
        writer,
        reader,
        reading: true,
        writer_first: false,
        _done: Cleanup { gw, conn },
    };
    // The span (40 bytes in every connection's task) only where it records
    // anything: at the default log level it does not.
    if span.is_disabled() {
        tracker.spawn(serve);
    } else {
        tracker.spawn(serve.instrument(span.clone()));
    }
}

pin_project_lite::pin_project! {
    /// One connection's task: the writer runs to its end, the reader beside
    /// it until it finishes (it may finish first: the writer still sends the
    /// close). When the writer is done with the socket the task ends, and a
    /// reader still blocked on a dead peer is dropped with it.
    ///
    /// A hand-written future rather than an `async` block: a block that
    /// pins the futures it captured holds each of them twice, the capture
    /// and the pinned local (docs/performance.md).
    struct Serve<Wr, Rd, D> {
        #[pin]
        writer: Wr,
        #[pin]
        reader: Rd,
        reading: bool,
        // Which half goes first: they take turns (see `poll`).
        writer_first: bool,
        // Dropped last, after both halves, however the task ends (`Cleanup`).
        _done: D,
    }
}

impl<Wr: Future<Output = ()>, Rd: Future<Output = ()>, D> Future for Serve<Wr, Rd, D> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        // The halves share the task's cooperative budget (tokio makes I/O
        // return Pending once a poll has used it up): whichever went first
        // could use it all while it has work, leaving the other nothing, so
        // they take turns at going first.
        *this.writer_first = !*this.writer_first;
        if *this.writer_first {
            if this.writer.poll(cx).is_ready() {
                return Poll::Ready(());
            }
            // The reader's last act wakes this task, so the writer sees it done.
            if *this.reading && this.reader.poll(cx).is_ready() {
                *this.reading = false;
            }
        } else {
            if *this.reading && this.reader.poll(cx).is_ready() {
                *this.reading = false;
            }
            if this.writer.poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

/// What a connection gives back when its task ends: its place in the engine,
/// the metrics, the per-IP and `max_connections` slots. In a `Drop`, so that
/// it happens however the task ends, a panic included.
struct Cleanup {
    gw: Arc<Gateway>,
    conn: Arc<Conn>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.gw.engine.disconnect(self.conn.id);
        self.gw.metrics.connections.dec();
        self.gw.release_ip(self.conn.ip);
        self.gw.release_connection();
        tracing::debug!("closed");
    }
}

#[cfg(test)]
mod tests {
    use std::future::{pending, ready};

    use tokio::sync::Notify;

    use super::*;

    /// Records its name in a shared log when dropped.
    struct Mark(&'static str, Arc<Mutex<Vec<&'static str>>>);

    impl Drop for Mark {
        fn drop(&mut self) {
            self.1.lock().push(self.0);
        }
    }

    fn half(
        name: &'static str,
        log: &Arc<Mutex<Vec<&'static str>>>,
        wait: Option<Arc<Notify>>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mark = Mark(name, log.clone());
        async move {
            let _mark = mark;
            match wait {
                Some(n) => n.notified().await,
                None => pending().await,
            }
        }
    }

    #[tokio::test]
    async fn the_writer_ending_drops_the_reader_then_the_guard() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let go = Arc::new(Notify::new());
        let task = tokio::spawn(Serve {
            writer: half("writer", &log, Some(go.clone())),
            reader: half("reader", &log, None),
            reading: true,
            writer_first: false,
            _done: Mark("guard", log.clone()),
        });
        tokio::task::yield_now().await;
        assert!(log.lock().is_empty(), "nothing ends before the writer");
        go.notify_one();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task ends when the writer does")
            .expect("no panic");
        assert_eq!(*log.lock(), ["writer", "reader", "guard"]);
    }

    #[tokio::test]
    async fn a_finished_reader_leaves_the_writer_running() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let go = Arc::new(Notify::new());
        let read_done = Arc::new(Notify::new());
        let signal = read_done.clone();
        let task = tokio::spawn(Serve {
            writer: half("writer", &log, Some(go.clone())),
            reader: async move { signal.notify_one() },
            reading: true,
            writer_first: false,
            _done: Mark("guard", log.clone()),
        });
        tokio::time::timeout(Duration::from_secs(5), read_done.notified())
            .await
            .expect("the reader ran");
        tokio::task::yield_now().await;
        assert!(!task.is_finished(), "the writer still runs");
        assert!(log.lock().is_empty());
        go.notify_one();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("ends with the writer")
            .expect("no panic");
        assert_eq!(*log.lock(), ["writer", "guard"]);
    }

    #[tokio::test]
    async fn a_panicking_half_still_runs_the_guard() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(Serve {
            writer: half("writer", &log, None),
            reader: async { panic!("a bug in the reader") },
            reading: true,
            writer_first: false,
            _done: Mark("guard", log.clone()),
        });
        let res = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task ends");
        assert!(res.expect_err("it panicked").is_panic());
        assert!(log.lock().contains(&"guard"), "log: {:?}", log.lock());
    }

    #[tokio::test]
    async fn a_writer_that_always_has_work_does_not_starve_the_reader() {
        // The writer uses up the task's budget on every poll it gets; the
        // reader's receive needs budget too. Going first by turns, the
        // reader still gets its message.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u8>(1);
        tx.send(7).await.expect("room for one");
        let got = Arc::new(Notify::new());
        let signal = got.clone();
        let task = tokio::spawn(Serve {
            writer: async {
                loop {
                    tokio::task::coop::consume_budget().await;
                }
            },
            reader: async move {
                assert_eq!(rx.recv().await, Some(7));
                signal.notify_one();
            },
            reading: true,
            writer_first: false,
            _done: (),
        });
        let res = tokio::time::timeout(Duration::from_secs(5), got.notified()).await;
        task.abort();
        res.expect("the reader got its turn");
    }

    #[test]
    fn ready_futures_end_at_once() {
        // Both halves done on the first poll: the writer decides.
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut serve = std::pin::pin!(Serve {
            writer: ready(()),
            reader: ready(()),
            reading: true,
            writer_first: false,
            _done: Mark("guard", log.clone()),
        });
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(serve.as_mut().poll(&mut cx).is_ready());
    }
}
