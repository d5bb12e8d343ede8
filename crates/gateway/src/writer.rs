//! The writer task: everything pending for a connection goes out in one batch
//! and one `write_all` + `flush` per wake-up, each with a deadline. Server
//! frames are unmasked, so their header is two to ten bytes written here in
//! front of the frame text the engine encoded once for every subscriber.
//!
//! Generic over the write half ([`WireWrite`]): on plain TCP `flush` is a
//! no-op; on TLS, rustls keeps records it could not write yet and `flush`
//! pushes them out, so it belongs to every batch (once per batch, not per frame).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use tickwire_engine::{Drain, Entry, SlowReason};
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, sleep_until};

use crate::Gateway;
use crate::connection::Conn;
use crate::metrics::ReasonLabel;
use crate::transport::WireWrite;

pub(crate) const OP_TEXT: u8 = 0x1;
#[cfg(feature = "conformance")]
pub(crate) const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// A batch smaller than this gives its write buffer back.
const SMALL_BATCH_BYTES: usize = 1024;
/// After a batch this large, the buffer is given back whatever comes next.
const KEEP_BUFFER_BYTES: usize = 64 * 1024;

/// Writes a final, unmasked frame header into `h`; returns its length (2 to 10).
pub(crate) fn header_into(h: &mut [u8; 10], opcode: u8, len: usize) -> usize {
    h[0] = 0x80 | opcode;
    if len < 126 {
        h[1] = len as u8;
        2
    } else if len < 65_536 {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// Appends a final, unmasked frame header.
pub(crate) fn put_header(buf: &mut Vec<u8>, opcode: u8, len: usize) {
    let mut h = [0u8; 10];
    let n = header_into(&mut h, opcode, len);
    buf.extend_from_slice(&h[..n]);
}

fn put_frame(buf: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    put_header(buf, opcode, payload.len());
    buf.extend_from_slice(payload);
}

/// The instant of a token expiry given in ms since the Unix epoch.
fn expiry_instant(exp_ms: u64) -> Instant {
    let now_ms = tickwire_proto::now_ms();
    // `exp` is whatever the token's issuer signed, up to u64::MAX seconds
    // ("never"), saturated to u64::MAX ms by `jwt` (a plain product
    // overflowed: a panic, or in release a wrapped, early expiry).
    Instant::now() + Duration::from_millis(exp_ms.saturating_sub(now_ms))
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

fn reason_label(reason: SlowReason) -> &'static str {
    match reason {
        SlowReason::HardLimit => "hard_limit",
        SlowReason::SoftTimeout => "soft_timeout",
        SlowReason::SendLost => "send_lost",
    }
}

/// Counts a slow-consumer close (its code is 4001 whether or not the Close
/// frame can still reach the peer).
fn slow_close(gw: &Gateway, reason: &'static str) {
    gw.metrics
        .slow_consumers
        .get_or_create(&ReasonLabel {
            reason: reason.into(),
        })
        .inc();
    tracing::info!(reason, "slow consumer");
}

enum Written {
    Done,
    Failed,
    /// The outbox gave up while the write was blocked; the label says why.
    Slow(&'static str),
    /// The token expired while the write was blocked.
    Expired,
    Shutdown,
}

/// Writes `buf[*off..]` and flushes, as far as the socket takes it now.
fn poll_write_all<W: WireWrite>(
    w: &mut W,
    cx: &mut std::task::Context<'_>,
    buf: &[u8],
    off: &mut usize,
) -> Poll<std::io::Result<()>> {
    while *off < buf.len() {
        match std::pin::Pin::new(&mut *w).poll_write(cx, &buf[*off..]) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => *off += n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    std::pin::Pin::new(w).poll_flush(cx)
}

fn written(r: std::io::Result<()>) -> Written {
    match r {
        Ok(()) => Written::Done,
        Err(_) => Written::Failed,
    }
}

/// A write the socket did not take at once: waits for it within `limit`,
/// while watching the outbox: a peer that stopped reading blocks the write,
/// and the hard limit or the soft-limit clock must still close it then, and
/// so must the token's expiry (4002, not the slow consumer's 4001 later).
/// Abandoning the write leaves a partial frame on the wire, so every outcome
/// but `Done` ends with a reset, not a Close frame.
///
/// The common case, a socket with room, never comes here (see `run`): no
/// timer is armed for it (arming and disarming one per batch was a
/// measurable share of the CPU per delivery at low rates;
/// docs/performance.md), and no future is kept for it.
async fn watch_write<F: Future<Output = std::io::Result<()>>>(
    gw: &Gateway,
    conn: &Conn,
    write: F,
    limit: Duration,
) -> Written {
    let mut write = pin!(write);
    let deadline = Instant::now() + limit;
    loop {
        let slow_at = conn.outbox.slow_deadline().map(Instant::from_std);
        // Read on every pass: a re-`auth` stores the new expiry, then wakes
        // the outbox (`notified` below), so a refreshed token is seen.
        let exp_ms = conn.expires_at_ms.load(Ordering::Relaxed);
        let exp_at = (exp_ms > 0).then(|| expiry_instant(exp_ms));
        tokio::select! {
            biased;
            r = &mut write => return written(r),
            _ = sleep_until(deadline) => {
                tracing::info!(elapsed_ms = limit.as_millis() as u64, "write timeout");
                return Written::Slow("write_timeout");
            }
            _ = gw.shutdown.cancelled() => return Written::Shutdown,
            // Capped: an `exp` of u64::MAX s lies some 584 million years out.
            _ = sleep_until(exp_at.map_or_else(far_future, |e| e.min(far_future()))) => {
                if conn.expires_at_ms.load(Ordering::Relaxed) == exp_ms {
                    tracing::info!("token expired during a blocked write");
                    return Written::Expired;
                }
            }
            _ = conn.outbox.notified() => {}
            _ = sleep_until(slow_at.unwrap_or_else(far_future)) => {
                conn.outbox.check(std::time::Instant::now());
            }
        }
        if let Some(reason) = conn.outbox.slow_reason() {
            return Written::Slow(reason_label(reason));
        }
    }
}

/// One batch out: the bytes, then a flush (a no-op on plain TCP, the rest of
/// the TLS records on TLS).
async fn write_flush<W: WireWrite>(w: &mut W, buf: &[u8]) -> std::io::Result<()> {
    w.write_all(buf).await?;
    w.flush().await
}

/// What woke the waiting writer.
enum Woke {
    /// The outbox: frames, a request from the reader, or the shutdown.
    Outbox,
    Timer,
}

/// How the loop ended.
enum End {
    /// Send Close with this code and reason, then wait for the peer's Close.
    Close(u16, &'static str),
    /// Broker shutting down: `shutdown` message, then Close 1001.
    Shutdown,
    /// The stream is unusable or the peer is gone: reset the socket. The
    /// code is what `tickwire_closes_total` counts it as: the close it stands
    /// for (4001 for a slow consumer, the intended code for a close that a
    /// cut frame turned into a reset), or 1006 when the peer vanished.
    Abort(u16),
    /// The peer went away cleanly (EOF): just drop.
    Gone,
}

/// The heartbeat interval.
fn heartbeat(gw: &Gateway) -> Duration {
    Duration::from_millis(gw.cfg.heartbeat_ms.max(1))
}

/// How long a silent peer is given before it is taken for dead.
fn dead_after(gw: &Gateway) -> Duration {
    heartbeat(gw) + Duration::from_secs(10)
}

/// The token's expiry as the writer last read it: (ms since the Unix epoch,
/// 0 for none; its instant). The instant is worked out once per value, and
/// compared with the monotonic clock, so a step of the wall clock cannot
/// make it fire early or keep firing.
#[derive(Default)]
struct Expiry(u64, Option<Instant>);

impl Expiry {
    /// The expiry's instant, read again from `conn`.
    fn refresh(&mut self, conn: &Conn) -> Option<Instant> {
        let exp_ms = conn.expires_at_ms.load(Ordering::Relaxed);
        if exp_ms != self.0 {
            *self = Expiry(exp_ms, (exp_ms > 0).then(|| expiry_instant(exp_ms)));
        }
        self.1
    }
}

/// The deadlines of a connection's writer that do not depend on its queue:
/// the silent peer's (4000), the token's expiry (4002), and the next Ping
/// (`ping_due` set, and `Ok(true)`). Looked at when the writer's timer
/// fires and, since a writer that finds more frames after every write
/// never waits on its timer, after every batch it writes.
fn deadlines(
    gw: &Gateway,
    conn: &Conn,
    now: Instant,
    exp: &mut Expiry,
    next_ping: &mut Instant,
    ping_due: &mut bool,
) -> Result<bool, End> {
    if Instant::from_std(conn.last_seen()) + dead_after(gw) <= now {
        gw.metrics.heartbeat_timeouts.inc();
        tracing::info!("heartbeat timeout");
        return Err(End::Close(4000, "heartbeat timeout"));
    }
    // Read again: a re-`auth` may have moved it.
    if exp.refresh(conn).is_some_and(|e| e <= now) {
        return Err(End::Close(4002, "token expired"));
    }
    if *next_ping <= now {
        // Sent at the top of the loop, behind any rest of a frame.
        *next_ping = now + heartbeat(gw);
        *ping_due = true;
        return Ok(true);
    }
    Ok(false)
}

/// Runs the connection's writing side to its end, the close included.
///
/// What it keeps between wake-ups lives in every connection's task for the
/// connection's whole life, so it is kept small: settings are read from
/// `gw.cfg` when needed rather than copied here, and the one wake-up source
/// besides the timer is the outbox's (the reader's requests and the broker's
/// shutdown come that way too: `Outbox::wake_writer`).
///
/// A function returning an `async` block, not an `async fn`: an `async fn`
/// keeps its arguments twice in its state, as given and as the locals made
/// from them (24 bytes in every connection's task), which clippy's
/// `manual_async_fn` does not know.
#[allow(clippy::manual_async_fn)]
pub(crate) fn run<W: WireWrite>(
    gw: Arc<Gateway>,
    conn: Arc<Conn>,
    mut w: W,
) -> impl Future<Output = ()> {
    async move {
        let mut next_ping = Instant::now() + heartbeat(&gw);
        let mut batch: Vec<Entry> = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        // Set on the pass that sends what was pending when the reader asked for
        // a close: the replies to what the client sent before its bad frame still
        // go out, once, and then the Close (one pass, so a busy topic cannot
        // postpone it).
        let mut closing = false;
        let mut ping_due = false;
        let mut timer = pin!(sleep_until(far_future()));
        let mut exp = Expiry::default();
        let end = loop {
            // Not in the middle of a close the reader asked for: its code goes out.
            if gw.closing() && !closing {
                break End::Shutdown;
            }
            let mut counted = 0usize;
            // Set when `buf` holds the rest of a cut frame: until it is written,
            // no Close frame may follow.
            let mut rest_taken = false;
            {
                let mut ctl = conn.ctl.lock();
                if let Some((code, reason)) = ctl.close {
                    if closing {
                        break End::Close(code, reason);
                    }
                    closing = true;
                } else if ctl.eof {
                    break End::Gone;
                }
                // The rest of a frame a direct write began goes first: nothing
                // may land inside it.
                if let Some(rest) = conn.outbox.take_raw() {
                    counted += rest.len();
                    buf.extend_from_slice(&rest);
                    rest_taken = true;
                }
                let mut took = false;
                if let Some(p) = ctl.pong.take() {
                    put_frame(&mut buf, OP_PONG, &p);
                    took = true;
                }
                #[cfg(feature = "conformance")]
                for (opcode, payload) in ctl.echo.drain(..) {
                    put_frame(&mut buf, opcode, &payload);
                    took = true;
                }
                if took {
                    // Released under the ctl lock the reader held it under.
                    conn.outbox.hold_direct(false);
                }
                if ping_due {
                    put_frame(&mut buf, OP_PING, b"");
                    ping_due = false;
                }
            }
            let gate_at = conn.outbox.release_gates();
            match conn.outbox.drain(&mut batch) {
                Drain::Slow(reason) if !rest_taken => {
                    slow_close(&gw, reason_label(reason));
                    break End::Close(4001, "slow consumer");
                }
                Drain::Slow(reason) | Drain::SlowMidFrame(reason) => {
                    slow_close(&gw, reason_label(reason));
                    break End::Abort(4001);
                }
                Drain::Frames => {
                    let mut frames = 0u64;
                    for e in batch.drain(..) {
                        if e.frame.is_empty() {
                            continue;
                        }
                        counted += e.wire_len();
                        if e.is_raw() {
                            // The rest of a frame a direct write began (counted there).
                            buf.extend_from_slice(&e.frame);
                        } else {
                            put_frame(&mut buf, OP_TEXT, &e.frame);
                            frames += 1;
                        }
                    }
                    gw.metrics.frames_out.inc_by(frames);
                    // The outbox gets this vector at the next drain: a quiet
                    // connection's is given back instead, so that neither side
                    // holds one while idle.
                    if batch.capacity() <= tickwire_engine::QUIET_QUEUE_ENTRIES {
                        batch = Vec::new();
                    }
                }
            }
            if !buf.is_empty() {
                let buffered = conn.outbox.buffered();
                gw.metrics.buffered_bytes.observe(buffered as f64);
                gw.metrics
                    .buffered_bytes_max
                    .fetch_max(buffered as i64, Ordering::Relaxed);
                // As far as the socket takes it now; only a write that blocks
                // gets its watchers and timers, in a box for as long as it waits
                // (rare, and then not in every connection's task).
                let mut off = 0;
                let first = std::future::poll_fn(|cx| {
                    Poll::Ready(poll_write_all(&mut w, cx, &buf, &mut off))
                })
                .await;
                let res = match first {
                    Poll::Ready(r) => written(r),
                    Poll::Pending => {
                        let rest = write_flush(&mut w, &buf[off..]);
                        let limit = Duration::from_millis(gw.cfg.write_timeout_ms);
                        Box::pin(watch_write(&gw, &conn, rest, limit)).await
                    }
                };
                match res {
                    Written::Done => {}
                    Written::Failed => break End::Abort(1006),
                    Written::Slow(reason) => {
                        slow_close(&gw, reason);
                        break End::Abort(4001);
                    }
                    Written::Shutdown => break End::Abort(1001),
                    // A frame is cut: reset, counted as the 4002 it stands for.
                    Written::Expired => break End::Abort(4002),
                }
                gw.metrics.bytes_out.inc_by(buf.len() as u64);
                conn.outbox.written(counted);
                // A small batch (a quiet connection) gives the buffer back, so an
                // idle connection holds none; a busy one keeps it for the next
                // batch, up to a size (its next small batch gives it back too).
                if buf.len() < SMALL_BATCH_BYTES || buf.capacity() > KEEP_BUFFER_BYTES {
                    buf = Vec::new();
                } else {
                    buf.clear();
                }
                // A writer that finds more frames after every write never
                // waits on its timer: its deadlines are looked at here (a
                // token that expired while ticks kept coming kept them coming).
                let now = Instant::now();
                if let Err(end) =
                    deadlines(&gw, &conn, now, &mut exp, &mut next_ping, &mut ping_due)
                {
                    break end;
                }
                // Look again before sleeping: more may have arrived during the write.
                continue;
            }
            if closing {
                continue;
            }
            // One timer for the nearest deadline, re-armed only when that moves:
            // registering a timer per deadline per wake-up cost more than the
            // wake-up itself (docs/performance.md).
            let exp_at = exp.refresh(&conn);
            let slow_at = conn.outbox.slow_deadline().map(Instant::from_std);
            let dead_at = Instant::from_std(conn.last_seen()) + dead_after(&gw);
            let at = [gate_at.map(Instant::from_std), slow_at, exp_at]
                .into_iter()
                .flatten()
                .fold(dead_at.min(next_ping), Instant::min);
            if timer.is_elapsed() || timer.deadline() != at {
                timer.as_mut().reset(at);
            }
            // While the writer waits, the publishing task may write to the socket
            // itself (Outbox::set_direct_sink); it stops the moment we wake.
            conn.outbox.set_writer_idle(true);
            let woke = std::future::poll_fn(|cx| {
                if conn.outbox.poll_notified(cx).is_ready() {
                    return Poll::Ready(Woke::Outbox);
                }
                timer.as_mut().poll(cx).map(|()| Woke::Timer)
            })
            .await;
            conn.outbox.set_writer_idle(false);
            match woke {
                Woke::Outbox => {}
                Woke::Timer => {
                    // Fired: re-armed on the next pass (`is_elapsed`).
                    let now = Instant::now();
                    match deadlines(&gw, &conn, now, &mut exp, &mut next_ping, &mut ping_due) {
                        Err(end) => break end,
                        // A queue direct writes kept goes back once ticks stop.
                        Ok(true) => conn.outbox.trim_quiet(),
                        Ok(false) => {}
                    }
                    if slow_at.is_some_and(|s| s <= now) {
                        conn.outbox.check(now.into_std());
                    }
                    // A max_hz gate's time is handled by `release_gates` at the top.
                }
            }
        };
        // A frame a direct write began and nobody finished: no Close can follow.
        let end = match end {
            End::Close(code, _) if conn.outbox.close() => End::Abort(code),
            End::Shutdown if conn.outbox.close() => End::Abort(1001),
            end => {
                conn.outbox.close();
                end
            }
        };
        // Once per connection, and large: boxed, so it takes no room in the
        // task while the connection lives.
        Box::pin(finish(&gw, &conn, w, end)).await;
    }
}

/// The close handshake: send Close, wait at most `close_timeout_ms` for the
/// peer's, then close TCP: with a FIN when the handshake completed, with a
/// reset otherwise, so no socket lingers in FIN_WAIT for a dead peer.
async fn finish<W: WireWrite>(gw: &Gateway, conn: &Conn, mut w: W, end: End) {
    let close_timeout = Duration::from_millis(gw.cfg.close_timeout_ms);
    let mut buf = Vec::new();
    let (code, reason) = match end {
        End::Gone => {
            gw.metrics.close(1006);
            return;
        }
        End::Abort(code) => {
            gw.metrics.close(code);
            w.reset();
            return;
        }
        End::Shutdown => {
            put_frame(
                &mut buf,
                OP_TEXT,
                &tickwire_proto::encode::shutdown(gw.cfg.shutdown_retry_ms),
            );
            (1001, "shutting down")
        }
        End::Close(code, reason) => (code, reason),
    };
    gw.metrics.close(code);
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    put_frame(&mut buf, OP_CLOSE, &payload);
    let deadline = Instant::now() + close_timeout;
    if !matches!(
        tokio::time::timeout_at(deadline, write_flush(&mut w, &buf)).await,
        Ok(Ok(()))
    ) {
        w.reset();
        return;
    }
    // Wait for the reader to see the peer's Close, or the stream to end.
    let clean = loop {
        let (done, clean) = {
            let ctl = conn.ctl.lock();
            (
                ctl.reader_done || ctl.peer_closed,
                ctl.peer_closed || ctl.eof,
            )
        };
        if done {
            break clean;
        }
        if tokio::time::timeout_at(deadline, conn.outbox.notified())
            .await
            .is_err()
        {
            break false;
        }
    };
    if clean {
        // Handshake done (or the peer already sent FIN): close with a FIN
        // (on TLS, a close_notify first).
        let _ = tokio::time::timeout_at(deadline, w.shutdown()).await;
    } else {
        w.reset();
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::net::{IpAddr, Ipv4Addr};
    use std::pin::Pin;
    use std::sync::atomic::AtomicU64;
    use std::task::Context;

    use bytes::Bytes;
    use parking_lot::Mutex;
    use tickwire_engine::{ConnId, Engine, EngineConfig};
    use tokio::io::AsyncWrite;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::GatewayConfig;
    use crate::connection::Ctl;

    /// What the writer sent: Pings counted, the Close's code.
    #[derive(Debug, Default)]
    struct Seen {
        pings: usize,
        close: Option<u16>,
    }

    /// A socket that takes every write at once and, for each, queues one
    /// more frame: the writer always finds more, never blocks and never
    /// waits on its timer. Once `stop_after_pings` Pings went out it asks
    /// the writer to close (1000).
    struct Busy {
        conn: Arc<Conn>,
        seen: Arc<Mutex<Seen>>,
        stop_after_pings: usize,
    }

    impl AsyncWrite for Busy {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let mut seen = self.seen.lock();
            // Whole frames, server to client (unmasked), payloads under 126.
            let mut b = buf;
            while b.len() >= 2 {
                let (op, len) = (b[0] & 0x0f, usize::from(b[1] & 0x7f));
                assert!(len < 126 && b.len() >= 2 + len, "a small whole frame");
                match op {
                    0x9 => seen.pings += 1,
                    0x8 => seen.close = Some(u16::from_be_bytes([b[2], b[3]])),
                    _ => {}
                }
                b = &b[2 + len..];
            }
            if seen.pings >= self.stop_after_pings && seen.close.is_none() {
                self.conn.ctl.lock().close.get_or_insert((1000, "enough"));
            }
            self.conn
                .outbox
                .push_control(Bytes::from_static(b"{\"type\":\"x\"}"));
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl WireWrite for Busy {
        fn reset(&self) {}
    }

    /// Runs a writer on a socket that keeps it busy, on a thread of its own
    /// (a writer that never waits would hold a test runtime's thread), and
    /// gives what it sent once it ends, or `None` if it did not within 10 s.
    fn busy_writer(
        heartbeat_ms: u64,
        token_ms: Option<u64>,
        stop_after_pings: usize,
    ) -> Option<Seen> {
        let engine = Arc::new(Engine::new(EngineConfig::default()));
        let cfg = GatewayConfig {
            heartbeat_ms,
            close_timeout_ms: 50,
            ..GatewayConfig::default()
        };
        let gw = Gateway::new(cfg, engine.clone(), CancellationToken::new(), |_| {});
        let conn = Arc::new(Conn {
            id: ConnId(1),
            outbox: engine.new_outbox(),
            ctl: Mutex::new(Ctl::default()),
            last_seen_ms: AtomicU64::new(0),
            expires_at_ms: AtomicU64::new(token_ms.map_or(0, |ms| tickwire_proto::now_ms() + ms)),
            started: std::time::Instant::now(),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        });
        conn.outbox
            .push_control(Bytes::from_static(b"{\"type\":\"first\"}"));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let sock = Busy {
            conn: conn.clone(),
            seen: seen.clone(),
            stop_after_pings,
        };
        let (done, ended) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(run(gw, conn, sock));
            let _ = done.send(());
        });
        ended.recv_timeout(Duration::from_secs(10)).ok()?;
        Some(std::mem::take(&mut *seen.lock()))
    }

    #[test]
    fn a_token_that_expires_while_the_writer_stays_busy_closes_with_4002() {
        let seen = busy_writer(15_000, Some(200), usize::MAX)
            .expect("the busy writer ended (it kept sending past the token's expiry)");
        assert_eq!(seen.close, Some(4002), "{seen:?}");
    }

    #[test]
    fn a_writer_that_stays_busy_still_sends_its_pings() {
        let seen = busy_writer(50, None, 2).expect("the busy writer sent 2 Pings and ended");
        assert!(seen.pings >= 2, "{seen:?}");
        assert_eq!(seen.close, Some(1000), "{seen:?}");
    }
}
