//! The reader task: frames from the client, control messages to the engine.
//!
//! Frames come from [`crate::frame`], which checks each header; the
//! message layer is checked here: the total size, fragment count and UTF-8
//! (fragment by fragment) of a fragmented message, and close frames. Pongs
//! and Close echoes go to the writer through [`Conn::ctl`]. The Autobahn suite runs
//! against this code through `examples/echo.rs` (docs/security.md).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tickwire_engine::{SubscribeError, SubscribeRequest};
use tickwire_proto::{ClientMsg, ErrorCode, Id, encode, parse_client};
use tokio::io::AsyncRead;

use crate::Gateway;
use crate::auth::Principal;
use crate::connection::Conn;
use crate::frame::{FrameError, FrameReader, OpCode};
#[cfg(feature = "conformance")]
use crate::writer;

/// Close codes the reader asks for.
pub(crate) mod code {
    pub const NORMAL: u16 = 1000;
    pub const PROTOCOL: u16 = 1002;
    pub const UNSUPPORTED: u16 = 1003;
    pub const INVALID_DATA: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
    pub const FLOOD: u16 = 4003;
    pub const UNAUTHORIZED: u16 = 4500;
}

/// Frames handled between two uncorks at most (see `read_loop`).
const CORK_FRAMES: usize = 1024;

/// A token bucket for control messages, plus a one-second flood counter.
/// Times are ms since the connection started and the limits are read from
/// the config at each call: it lives in every connection, so it is small.
#[derive(Debug)]
struct RateLimit {
    tokens: f32,
    window_count: u32,
    last_ms: u64,
    window_start_ms: u64,
}

impl RateLimit {
    fn new(rate: u32) -> RateLimit {
        RateLimit {
            tokens: rate as f32,
            window_count: 0,
            last_ms: 0,
            window_start_ms: 0,
        }
    }

    /// `Err(true)`: flood, close; `Err(false)`: over the limit, refuse this one.
    fn take(&mut self, now_ms: u64, rate: u32, flood: u32) -> Result<(), bool> {
        if now_ms.saturating_sub(self.window_start_ms) >= 1000 {
            self.window_start_ms = now_ms;
            self.window_count = 0;
        }
        self.window_count += 1;
        if self.window_count >= flood {
            return Err(true);
        }
        let dt = now_ms.saturating_sub(self.last_ms) as f32 / 1000.0;
        self.last_ms = now_ms;
        self.tokens = (self.tokens + dt * rate as f32).min(rate as f32);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(false)
        }
    }
}

/// The principal of every connection that did not authenticate (auth off),
/// shared rather than one copy per connection.
static ANONYMOUS: std::sync::LazyLock<Arc<Principal>> =
    std::sync::LazyLock::new(|| Arc::new(Principal::anonymous()));

struct Reader {
    gw: Arc<Gateway>,
    conn: Arc<Conn>,
    principal: Option<Arc<Principal>>,
    limit: RateLimit,
    /// Echo messages back (the `conformance` feature's Autobahn mode)
    /// instead of reading them as the protocol's JSON. Always false in a
    /// normal build.
    echo: bool,
}

fn close_for(e: &FrameError) -> Option<(u16, &'static str)> {
    match e {
        FrameError::Protocol(reason) => Some((code::PROTOCOL, reason)),
        FrameError::TooBig => Some((code::TOO_BIG, "message too big")),
        FrameError::Eof => None,
    }
}

/// Close codes a peer may send (RFC 6455 7.4).
fn valid_close_code(c: u16) -> bool {
    matches!(c, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// The reader task's future. Built here, outside the `async` block, so that
/// the task holds the reader's state once: an `async fn` keeps its arguments
/// beside the locals made from them, for the connection's whole life.
pub(crate) fn run<S: AsyncRead + Unpin>(
    gw: Arc<Gateway>,
    conn: Arc<Conn>,
    stream: S,
    pre: Bytes,
    principal: Option<Principal>,
) -> impl Future<Output = ()> {
    let mut ws = FrameReader::new(stream, gw.cfg.max_message_bytes).with_pending(&pre);
    drop(pre);
    #[cfg(feature = "conformance")]
    let echo = gw.cfg.echo;
    #[cfg(not(feature = "conformance"))]
    let echo = false;
    let mut r = Reader {
        echo,
        limit: RateLimit::new(gw.cfg.control_rate_per_sec),
        gw,
        conn,
        principal: principal.map(Arc::new),
    };
    async move { r.serve(&mut ws).await }
}

impl Reader {
    /// Reads until the connection ends, then (when the broker closes)
    /// discards frames until the peer's Close.
    async fn serve<S: AsyncRead + Unpin>(&mut self, ws: &mut FrameReader<S>) {
        let end = self.read_loop(ws).await;
        {
            let mut ctl = self.conn.ctl.lock();
            if let Some(c) = end.close
                && ctl.close.is_none()
            {
                ctl.close = Some(c);
            }
            ctl.eof |= end.eof;
        }
        self.conn.outbox.wake_writer();
        let mut eof = end.eof;
        if !end.eof && !self.conn.ctl.lock().peer_closed {
            // We are closing: discard frames until the peer's Close or the end of
            // the stream (RFC 6455 5.5.1). The writer stops us after its close timeout.
            loop {
                match ws.next().await {
                    Ok(f) if f.opcode == OpCode::Close => {
                        self.conn.ctl.lock().peer_closed = true;
                        break;
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        eof = close_for(&e).is_none();
                        break;
                    }
                }
            }
        }
        let mut ctl = self.conn.ctl.lock();
        ctl.eof |= eof;
        ctl.reader_done = true;
        drop(ctl);
        self.conn.outbox.wake_writer();
    }
}

/// A fragmented message being reassembled.
struct Fragmented {
    buf: BytesMut,
    frames: usize,
    /// Text or Binary, from the first frame.
    opcode: OpCode,
    /// `buf[..utf8_checked]` is known to be valid UTF-8 (text only).
    utf8_checked: usize,
}

impl Fragmented {
    /// For text: whether the bytes so far can still become valid UTF-8. A
    /// fragment may end inside a character, but bytes that can never be
    /// valid close the connection at once, not at the end of the message
    /// (RFC 6455 8.1 "fail fast"; each byte is checked once).
    fn utf8_so_far(&mut self) -> bool {
        if self.opcode != OpCode::Text {
            return true;
        }
        match std::str::from_utf8(&self.buf[self.utf8_checked..]) {
            Ok(_) => {
                self.utf8_checked = self.buf.len();
                true
            }
            // Only an incomplete character at the end: wait for more.
            Err(e) if e.error_len().is_none() => {
                self.utf8_checked += e.valid_up_to();
                true
            }
            Err(_) => false,
        }
    }

    /// For text: whether the whole message is valid UTF-8 (after `utf8_so_far`).
    fn utf8_complete(&self) -> bool {
        self.opcode != OpCode::Text || self.utf8_checked == self.buf.len()
    }
}

/// How reading ended.
struct ReadEnd {
    /// The close to send, if any.
    close: Option<(u16, &'static str)>,
    /// The stream itself ended.
    eof: bool,
}

impl ReadEnd {
    fn close(code: u16, reason: &'static str) -> ReadEnd {
        ReadEnd {
            close: Some((code, reason)),
            eof: false,
        }
    }
}

impl Reader {
    /// Reads until the connection ends or must be closed.
    async fn read_loop<S: AsyncRead + Unpin>(&mut self, ws: &mut FrameReader<S>) -> ReadEnd {
        // Boxed: rare, and it would take room in every connection's task.
        let mut frag: Option<Box<Fragmented>> = None;
        let auth_deadline = self.gw.auth.required().then(|| {
            tokio::time::Instant::now() + Duration::from_millis(self.gw.cfg.auth_timeout_ms)
        });
        // The frames of one read are handled corked: the writers they wake are
        // written to directly once the read is done (tickwire_engine::cork).
        let _uncork = crate::uring::corked(&self.gw);
        let mut corked = 0usize;
        loop {
            // Read on while the socket has data (a publisher at full speed),
            // up to a budget, so that one direct write carries many frames;
            // then write, before waiting or after the budget.
            while corked < CORK_FRAMES && !ws.frame_ready() {
                match ws.fill_now().await {
                    Some(n) if n > 0 => {}
                    _ => break,
                }
            }
            if corked >= CORK_FRAMES || !ws.frame_ready() {
                // Nothing may stay corked while this task waits.
                crate::uring::uncork(&self.gw);
                corked = 0;
            }
            let read = ws.next();
            let res = match (auth_deadline, &self.principal) {
                // Cancelling `next` is safe (and on timeout nothing reads again).
                (Some(deadline), None) => {
                    match Box::pin(tokio::time::timeout_at(deadline, read)).await {
                        Ok(r) => r,
                        Err(_) => return ReadEnd::close(code::UNAUTHORIZED, "auth timeout"),
                    }
                }
                _ => read.await,
            };
            let frame = match res {
                Ok(f) => f,
                Err(e) => {
                    return match close_for(&e) {
                        Some((c, r)) => ReadEnd::close(c, r),
                        None => ReadEnd {
                            close: None,
                            eof: true,
                        },
                    };
                }
            };
            self.conn.touch();
            if self.gw.cfg.direct_writes {
                tickwire_engine::cork();
                corked += 1;
            }
            match frame.opcode {
                OpCode::Text | OpCode::Binary if frag.is_some() => {
                    return ReadEnd::close(code::PROTOCOL, "new message inside a fragmented one");
                }
                OpCode::Binary if !self.echo() => {
                    return ReadEnd::close(code::UNSUPPORTED, "binary frames are not accepted");
                }
                OpCode::Text | OpCode::Binary if frame.fin => {
                    if frame.opcode == OpCode::Text && std::str::from_utf8(frame.payload).is_err() {
                        return ReadEnd::close(code::INVALID_DATA, "invalid UTF-8");
                    }
                    if let Some((c, r)) = self.on_message(frame.opcode, frame.payload) {
                        return ReadEnd::close(c, r);
                    }
                }
                OpCode::Text | OpCode::Binary => {
                    let mut buf = BytesMut::with_capacity(frame.payload.len() * 2);
                    buf.extend_from_slice(frame.payload);
                    let mut f = Fragmented {
                        buf,
                        frames: 1,
                        opcode: frame.opcode,
                        utf8_checked: 0,
                    };
                    if !f.utf8_so_far() {
                        return ReadEnd::close(code::INVALID_DATA, "invalid UTF-8");
                    }
                    frag = Some(Box::new(f));
                }
                OpCode::Continuation => {
                    let Some(f) = frag.as_mut() else {
                        return ReadEnd::close(code::PROTOCOL, "continuation without a message");
                    };
                    f.frames += 1;
                    if f.buf.len() + frame.payload.len() > self.gw.cfg.max_message_bytes {
                        return ReadEnd::close(code::TOO_BIG, "message too big");
                    }
                    if f.frames > self.gw.cfg.max_fragments {
                        return ReadEnd::close(code::TOO_BIG, "too many fragments");
                    }
                    f.buf.extend_from_slice(frame.payload);
                    if !f.utf8_so_far() || (frame.fin && !f.utf8_complete()) {
                        return ReadEnd::close(code::INVALID_DATA, "invalid UTF-8");
                    }
                    if frame.fin {
                        let f = frag.take().expect("checked above");
                        if let Some((c, r)) = self.on_message(f.opcode, &f.buf) {
                            return ReadEnd::close(c, r);
                        }
                    }
                }
                OpCode::Ping => {
                    #[cfg(feature = "conformance")]
                    if self.echo() {
                        // Echo mode answers every Ping, in order with the
                        // echoed messages (the broker keeps only the newest).
                        self.echo_frame(writer::OP_PONG, frame.payload);
                        continue;
                    }
                    {
                        // Until the writer has taken this Pong, replies to later
                        // messages must not overtake it by a direct write.
                        let mut ctl = self.conn.ctl.lock();
                        self.conn.outbox.hold_direct(true);
                        ctl.pong = Some(bytes::Bytes::copy_from_slice(frame.payload));
                    }
                    self.conn.outbox.wake_writer();
                }
                OpCode::Pong => {}
                OpCode::Close => {
                    let (c, r) = self.on_close(frame.payload);
                    return ReadEnd::close(c, r);
                }
            }
        }
    }

    fn echo(&self) -> bool {
        self.echo
    }

    #[cfg(feature = "conformance")]
    fn echo_frame(&self, opcode: u8, payload: &[u8]) {
        {
            let mut ctl = self.conn.ctl.lock();
            self.conn.outbox.hold_direct(true);
            ctl.echo
                .push_back((opcode, bytes::Bytes::copy_from_slice(payload)));
        }
        self.conn.outbox.wake_writer();
    }

    /// One complete message, text (valid UTF-8) or, in echo mode, binary.
    fn on_message(&mut self, opcode: OpCode, payload: &[u8]) -> Option<(u16, &'static str)> {
        #[cfg(feature = "conformance")]
        if self.echo() {
            let op = if opcode == OpCode::Text {
                writer::OP_TEXT
            } else {
                writer::OP_BINARY
            };
            self.echo_frame(op, payload);
            return None;
        }
        debug_assert_eq!(opcode, OpCode::Text, "binary is refused before this");
        self.on_text(payload)
    }

    fn on_close(&self, payload: &[u8]) -> (u16, &'static str) {
        let reply = match payload.len() {
            0 => (code::NORMAL, ""),
            1 => (code::PROTOCOL, "bad close frame"),
            _ => {
                let c = u16::from_be_bytes([payload[0], payload[1]]);
                if !valid_close_code(c) {
                    (code::PROTOCOL, "bad close code")
                } else if std::str::from_utf8(&payload[2..]).is_err() {
                    (code::INVALID_DATA, "invalid UTF-8")
                } else {
                    // Echo the peer's code, as RFC 6455 asks.
                    (c, "")
                }
            }
        };
        self.conn.ctl.lock().peer_closed = true;
        reply
    }

    fn reply(&self, frame: bytes::Bytes) {
        self.conn.outbox.push_control(frame);
    }

    fn error(&self, id: Option<&Id>, code: ErrorCode, message: &str) {
        self.gw.metrics.error(code.as_str());
        self.reply(encode::error(id, code, message));
    }

    /// Counts a control message toward the rate limit. `Err(Some(close))`:
    /// a flood, close; `Err(None)`: refused, answered `rate_limited` here.
    fn take_control(&mut self, id: Option<&Id>) -> Result<(), Option<(u16, &'static str)>> {
        let cfg = &self.gw.cfg;
        let now_ms = self.conn.started.elapsed().as_millis() as u64;
        match self
            .limit
            .take(now_ms, cfg.control_rate_per_sec, cfg.control_flood_per_sec)
        {
            Ok(()) => Ok(()),
            Err(true) => Err(Some((code::FLOOD, "flooding"))),
            Err(false) => {
                self.error(
                    id,
                    ErrorCode::RateLimited,
                    &format!(
                        "over {} control messages per second",
                        cfg.control_rate_per_sec
                    ),
                );
                Err(None)
            }
        }
    }

    /// Handles one complete text message; returns a close when it must end the connection.
    fn on_text(&mut self, payload: &[u8]) -> Option<(u16, &'static str)> {
        // A fresh buffer per message: one allocation, far cheaper than what
        // the message does, and an idle connection keeps none.
        let mut scratch = Vec::new();
        let msg = match parse_client(payload, &mut scratch) {
            Ok(m) => m,
            Err(e) => {
                // A refused control message counts toward the rate limit too.
                if e.control
                    && let Err(end) = self.take_control(e.id.as_ref())
                {
                    return end;
                }
                self.error(e.id.as_ref(), e.code, &e.message);
                return None;
            }
        };
        if msg.is_control()
            && let Err(end) = self.take_control(msg_id(&msg))
        {
            return end;
        }
        if self.principal.is_none() && !matches!(msg, ClientMsg::Auth { .. }) {
            if self.gw.auth.required() {
                self.error(msg_id(&msg), ErrorCode::Unauthorized, "authenticate first");
                return None;
            }
            self.principal = Some(ANONYMOUS.clone());
        }
        match msg {
            ClientMsg::Subscribe(s) => {
                let principal = self.principal.as_ref().expect("set above");
                if let Some(p) = s.patterns.iter().find(|p| !principal.subscribe.allows(p)) {
                    let m = format!("not allowed to subscribe to '{p}'");
                    self.error(s.id.as_ref(), ErrorCode::Forbidden, &m);
                    return None;
                }
                let req = SubscribeRequest {
                    patterns: s.patterns,
                    snapshot: s.snapshot,
                    max_hz: s.max_hz,
                    since: s.since,
                    epoch: s.epoch,
                    epochs: s.epochs,
                };
                let id = s.id;
                let res = self.gw.engine.subscribe(self.conn.id, &req, |recovered| {
                    encode::subscribed(
                        id.as_ref(),
                        req.patterns.iter().map(|p| p.as_str()),
                        recovered,
                    )
                });
                match res {
                    Ok(()) => {}
                    Err(SubscribeError::TooMany { held, limit }) => {
                        let m = format!("{held} patterns would be held, over the limit of {limit}");
                        self.error(id.as_ref(), ErrorCode::TooManySubscriptions, &m);
                    }
                    Err(SubscribeError::UnknownConn) => return Some((1011, "internal error")),
                }
            }
            ClientMsg::Unsubscribe { id, patterns } => {
                self.gw.engine.unsubscribe(self.conn.id, &patterns);
                self.reply(encode::unsubscribed(
                    id.as_ref(),
                    patterns.iter().map(|p| p.as_str()),
                ));
            }
            ClientMsg::Publish { id, topic, data } => {
                let principal = self.principal.as_ref().expect("set above");
                if !principal.publish.allows_topic(&topic) {
                    // No token at all: unauthorized; a token that does not
                    // allow it: forbidden (PROTOCOL.md, and 403 over HTTP).
                    let (code, m) = if Arc::ptr_eq(principal, &ANONYMOUS) {
                        (
                            ErrorCode::Unauthorized,
                            "publishing needs a publisher key or a token with publish rights"
                                .to_owned(),
                        )
                    } else {
                        (
                            ErrorCode::Forbidden,
                            format!("not allowed to publish to '{topic}'"),
                        )
                    };
                    self.error(id.as_ref(), code, &m);
                    return None;
                }
                let data = &payload[data];
                if data.len() > self.gw.cfg.max_tick_bytes {
                    let m = format!(
                        "data is {} bytes, over max_tick_bytes {}",
                        data.len(),
                        self.gw.cfg.max_tick_bytes
                    );
                    self.error(id.as_ref(), ErrorCode::PayloadTooLarge, &m);
                    return None;
                }
                match self.gw.engine.publish(&topic, data) {
                    Ok(p) => {
                        if let Some(id) = id {
                            self.reply(encode::ack(&id, topic.as_str(), p.seq));
                        }
                    }
                    Err(e) => self.error(id.as_ref(), ErrorCode::BadRequest, &e.to_string()),
                }
            }
            ClientMsg::Ping { id } => {
                self.reply(encode::pong(id.as_ref(), tickwire_proto::now_ms()));
            }
            ClientMsg::Auth { id, token } => match self.gw.auth.verify(&token) {
                Ok(p) => {
                    // A re-auth may not narrow the rights under what the
                    // connection holds: those subscriptions would outlive the
                    // rights (and the expiry) of the token that allowed them.
                    if self.principal.is_some()
                        && let Some(held) = self
                            .gw
                            .engine
                            .find_pattern(self.conn.id, |q| !p.subscribe.allows(q))
                    {
                        let m = format!(
                            "the new token does not allow the subscription '{held}' \
                             (unsubscribe it first); the current token stays in force"
                        );
                        self.error(id.as_ref(), ErrorCode::Forbidden, &m);
                        return None;
                    }
                    self.conn
                        .expires_at_ms
                        .store(p.expires_at_ms.unwrap_or(0), Ordering::Relaxed);
                    self.conn.outbox.wake_writer();
                    self.reply(encode::authenticated(id.as_ref(), &p.sub, p.exp));
                    self.principal = Some(Arc::new(p));
                }
                Err(e) => {
                    if self.gw.auth.required() && self.principal.is_none() {
                        self.gw.metrics.error(ErrorCode::Unauthorized.as_str());
                        return Some((code::UNAUTHORIZED, "unauthorized"));
                    }
                    self.error(id.as_ref(), ErrorCode::Unauthorized, &e.to_string());
                }
            },
        }
        None
    }
}

fn msg_id(m: &ClientMsg) -> Option<&Id> {
    match m {
        ClientMsg::Subscribe(s) => s.id.as_ref(),
        ClientMsg::Unsubscribe { id, .. }
        | ClientMsg::Publish { id, .. }
        | ClientMsg::Ping { id }
        | ClientMsg::Auth { id, .. } => id.as_ref(),
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimit;

    #[test]
    fn the_bucket_starts_full_then_refills_at_the_rate() {
        let mut l = RateLimit::new(10);
        // 10 at once (a full bucket), the 11th refused.
        for _ in 0..10 {
            assert_eq!(l.take(0, 10, 1000), Ok(()));
        }
        assert_eq!(l.take(0, 10, 1000), Err(false));
        // 10 per second: one token back after 100 ms, not before.
        assert_eq!(l.take(50, 10, 1000), Err(false));
        assert_eq!(l.take(150, 10, 1000), Ok(()));
        assert_eq!(l.take(150, 10, 1000), Err(false));
        // Never more than a full bucket, however long the pause.
        for _ in 0..10 {
            assert_eq!(l.take(3_600_000, 10, 1000), Ok(()));
        }
        assert_eq!(l.take(3_600_000, 10, 1000), Err(false));
    }

    #[test]
    fn the_flood_counter_counts_a_second_refused_or_not() {
        let mut l = RateLimit::new(1);
        // flood = 5: the 5th message in one second is a flood, even though
        // most were only refused.
        for i in 0..4 {
            assert_ne!(l.take(10 * i, 1, 5), Err(true), "message {i}");
        }
        assert_eq!(l.take(40, 1, 5), Err(true));
        // A new second starts a new count.
        assert_eq!(l.take(1040, 1, 5), Ok(()));
    }
}
