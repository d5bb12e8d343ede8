//! Subscriber connections: connect, subscribe, then count and time every tick.

use std::rc::Rc;
use std::time::Duration;

use anyhow::bail;

use crate::Shared;
use crate::scan::MsgType;
use crate::stats::{count_ending, record};
use crate::wire::{Frame, OP_PONG, SocketOpts, WsConn};

/// How long a slow subscriber's final drain waits for more bytes before it
/// calls the connection still open.
const SLOW_DRAIN_IDLE: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Reads everything as fast as it comes; its ticks are measured.
    Healthy,
    /// Tiny receive buffer, never reads after subscribing; drained at the end
    /// to learn how the broker ended it.
    Slow,
}

/// One subscriber: which topics, and how it behaves.
pub struct Spec {
    pub index: usize,
    /// Topic indexes, sorted, distinct.
    pub topics: Vec<u32>,
    pub kind: Kind,
}

/// Per-connection receive state: the last seq seen per subscribed topic and
/// lane (a lane is one publisher for NATS, whose seqs are per publisher; the
/// broker's seqs are per topic, one lane).
pub struct Tracker {
    topics: Vec<u32>,
    lanes: usize,
    last_seq: Vec<u64>,
}

/// Per-read tallies, added to the shared stats once per read.
#[derive(Default)]
pub struct Tally {
    ticks: u64,
    measured: u64,
    gaps: u64,
    backwards: u64,
    unexpected: u64,
    errors: u64,
}

/// Runs one subscriber to the end of the run. Failures are counted, not returned.
pub async fn run(sh: Rc<Shared>, spec: Spec) {
    let (conn, carry) = {
        let _permit = sh
            .connect_gate
            .acquire()
            .await
            .expect("semaphore is never closed");
        let opts = SocketOpts {
            recv_buffer_bytes: (spec.kind == Kind::Slow).then_some(sh.opts.slow_rcvbuf_bytes),
            bind: sh.opts.source_addr(spec.index),
        };
        let setup = async {
            if sh.opts.nats {
                crate::nats::setup_sub(&sh, &spec, opts).await
            } else {
                setup(&sh, &spec, opts).await.map(|c| (c, Vec::new()))
            }
        };
        match tokio::time::timeout(sh.opts.connect_timeout, setup).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return fail(&sh, &spec, &format!("{e:#}")),
            Err(_) => return fail(&sh, &spec, "timed out connecting and subscribing"),
        }
    };
    match spec.kind {
        Kind::Healthy => {
            {
                let mut per_topic = sh.stats.subs_per_topic.borrow_mut();
                for &t in &spec.topics {
                    per_topic[t as usize] += 1;
                }
            }
            sh.stats.subs_ok.add(1);
            if sh.opts.nats {
                crate::nats::receive(&sh, conn, carry, spec.topics, sh.opts.publishers.max(1))
                    .await;
            } else if sh.opts.fws {
                receive_fws(&sh, conn, spec.topics).await;
            } else {
                receive(&sh, conn, spec.topics).await;
            }
        }
        Kind::Slow => {
            sh.stats.slow_ok.add(1);
            if sh.opts.nats {
                crate::nats::hold_then_drain(&sh, conn, carry).await;
            } else {
                hold_then_drain(&sh, conn).await;
            }
        }
    }
}

pub fn fail(sh: &Shared, spec: &Spec, why: &str) {
    match spec.kind {
        Kind::Healthy => sh.stats.subs_failed.add(1),
        Kind::Slow => sh.stats.slow_failed.add(1),
    }
    sh.stats
        .note_error(|| format!("subscriber {}: {why}", spec.index));
}

async fn setup(sh: &Shared, spec: &Spec, opts: SocketOpts) -> anyhow::Result<WsConn> {
    let bearer = sh.opts.sub_key.as_deref();
    let mut conn = WsConn::connect(
        &sh.target,
        opts,
        bearer,
        sh.opts.read_buffer_bytes,
        spec.index as u64,
    )
    .await?;
    crate::wire::wait_for(&mut conn, sh.opts.connect_timeout, |p| {
        Ok(sh.keys.msg_type(p) == MsgType::Welcome)
    })
    .await?;
    let mut req = Vec::with_capacity(64 + spec.topics.len() * 16);
    req.extend_from_slice(br#"{"op":"subscribe","id":1,"topics":["#);
    for (j, &t) in spec.topics.iter().enumerate() {
        if j > 0 {
            req.push(b',');
        }
        req.push(b'"');
        req.extend_from_slice(sh.topic_name(t).as_bytes());
        req.push(b'"');
    }
    req.extend_from_slice(br#"],"snapshot":false}"#);
    conn.send(crate::wire::OP_TEXT, &req).await?;
    crate::wire::wait_for(&mut conn, sh.opts.connect_timeout, |p| {
        match sh.keys.msg_type(p) {
            MsgType::Subscribed => Ok(sh.keys.id(p) == Some(1)),
            MsgType::Error => bail!("subscribe refused: {}", String::from_utf8_lossy(p)),
            _ => Ok(false),
        }
    })
    .await?;
    Ok(conn)
}

/// The healthy receive loop: one clock read per socket read, frames parsed in place.
async fn receive(sh: &Shared, mut conn: WsConn, topics: Vec<u32>) {
    let mut tracker = Tracker::new(topics, 1);
    // Registered once: a fresh `cancelled()` per read would lock and relink
    // the token's waiter list every time.
    let stop = sh.stop.cancelled();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => {
                conn.send_close(1000).await;
                return;
            }
            res = conn.fill() => if let Err(e) = res {
                lost(sh, &e);
                return;
            }
        }
        let now = crate::unix_nanos();
        let mut pong = None;
        let mut closed = None;
        {
            let mut batch = Batch::new(sh, now);
            loop {
                match conn.frames.next() {
                    Ok(Some(Frame::Data(p))) => batch.on_data(&mut tracker, p),
                    Ok(Some(Frame::Ping(p))) => pong = Some(p.to_vec()),
                    Ok(Some(Frame::Pong)) => {}
                    Ok(Some(Frame::Close(code))) => {
                        closed = Some(code.to_string());
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        closed = Some(format!("protocol error: {e}"));
                        break;
                    }
                }
            }
        }
        if let Some(p) = pong {
            let _ = conn.send(OP_PONG, &p).await;
        }
        if let Some(how) = closed {
            ended(sh, how);
            conn.send_close(1000).await;
            return;
        }
    }
}

/// The same loop on fastwebsockets (`--client fws`), for comparison: it hands
/// out one frame per call, so the clock is read per frame.
async fn receive_fws(sh: &Shared, conn: WsConn, topics: Vec<u32>) {
    use fastwebsockets::{OpCode, Role, WebSocket};
    let mut ws = WebSocket::after_handshake(conn.into_primed(), Role::Client);
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    let mut tracker = Tracker::new(topics, 1);
    let stop = sh.stop.cancelled();
    tokio::pin!(stop);
    loop {
        // read_frame is not cancel safe, but a cancelled read only loses the
        // frame in progress, and the connection is being closed then anyway.
        let frame = tokio::select! {
            biased;
            () = &mut stop => {
                let _ = ws.write_frame(fastwebsockets::Frame::close(1000, b"")).await;
                return;
            }
            res = ws.read_frame() => match res {
                Ok(f) => f,
                Err(e) => {
                    ended(sh, format!("fastwebsockets: {e}"));
                    return;
                }
            }
        };
        match frame.opcode {
            OpCode::Text | OpCode::Binary => {
                let mut batch = Batch::new(sh, crate::unix_nanos());
                batch.on_data(&mut tracker, &frame.payload);
            }
            OpCode::Close => {
                let code = frame
                    .payload
                    .get(..2)
                    .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                ended(sh, code.to_string());
                return;
            }
            _ => {}
        }
    }
}

pub fn lost(sh: &Shared, e: &std::io::Error) {
    let how = if e.kind() == std::io::ErrorKind::UnexpectedEof {
        "eof (no close frame)".to_string()
    } else {
        format!("io error: {e}")
    };
    ended(sh, how);
}

pub fn ended(sh: &Shared, how: String) {
    sh.stats.note_error(|| format!("subscriber closed: {how}"));
    count_ending(&sh.stats.sub_endings, how);
}

/// Handles the frames of one read: borrows the histograms once, adds the
/// counts to the shared stats once, on drop.
pub struct Batch<'a> {
    sh: &'a Shared,
    now: u64,
    start: u64,
    end: u64,
    lat: std::cell::RefMut<'a, hdrhistogram::Histogram<u64>>,
    lat_iv: std::cell::RefMut<'a, hdrhistogram::Histogram<u64>>,
    tally: Tally,
}

impl<'a> Batch<'a> {
    pub fn new(sh: &'a Shared, now: u64) -> Self {
        let (start, end) = sh.window();
        Batch {
            sh,
            now,
            start,
            end,
            lat: sh.stats.latency.borrow_mut(),
            lat_iv: sh.stats.latency_interval.borrow_mut(),
            tally: Tally::default(),
        }
    }

    /// A NATS `MSG` payload on topic `topic` (from its sid).
    pub fn on_nats_msg(&mut self, tracker: &mut Tracker, topic: Option<u32>, p: &[u8]) {
        let keys = &self.sh.keys;
        self.tally.ticks += 1;
        let lane = keys.publisher(p).map_or(usize::MAX, |l| l as usize);
        tracker.check(topic, lane, keys.seq(p), &mut self.tally);
        self.time(keys.ts_send(p));
    }

    /// Records the latency of a tick sent at `ts_send`.
    fn time(&mut self, ts_send: Option<u64>) {
        if let Some(ts) = ts_send {
            let ns = self.now.saturating_sub(ts);
            record(&mut self.lat_iv, ns);
            if ts >= self.start && ts < self.end {
                self.tally.measured += 1;
                record(&mut self.lat, ns);
            }
        }
    }

    fn on_data(&mut self, tracker: &mut Tracker, p: &[u8]) {
        let keys = &self.sh.keys;
        match keys.msg_type(p) {
            MsgType::Tick => {
                self.tally.ticks += 1;
                tracker.track(self.sh, p, &mut self.tally);
                self.time(keys.ts_send(p));
            }
            MsgType::Error => {
                self.tally.errors += 1;
                self.sh
                    .stats
                    .note_error(|| format!("subscriber got {}", String::from_utf8_lossy(p)));
            }
            _ => {}
        }
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        let st = &self.sh.stats;
        let t = &self.tally;
        st.ticks_recv.add(t.ticks);
        st.ticks_measured.add(t.measured);
        st.seq_gaps.add(t.gaps);
        st.seq_backwards.add(t.backwards);
        st.ticks_unexpected.add(t.unexpected);
        st.errors_recv.add(t.errors);
    }
}

impl Tracker {
    pub fn new(topics: Vec<u32>, lanes: usize) -> Self {
        Tracker {
            last_seq: vec![0; topics.len() * lanes],
            lanes,
            topics,
        }
    }

    /// Checks a tickwire tick: `seq` must rise by one per topic.
    fn track(&mut self, sh: &Shared, p: &[u8], tally: &mut Tally) {
        let topic = sh.keys.topic(p).and_then(|name| sh.topic_index(name));
        let seq = sh.keys.seq(p);
        self.check(topic, 0, seq, tally);
    }

    /// Checks that seqs of one topic and lane go up by one; a jump counts the
    /// skipped seqs.
    pub fn check(&mut self, topic: Option<u32>, lane: usize, seq: Option<u64>, tally: &mut Tally) {
        let Some(slot) = topic.and_then(|t| self.topics.binary_search(&t).ok()) else {
            tally.unexpected += 1;
            return;
        };
        let (Some(seq), true) = (seq, lane < self.lanes) else {
            return;
        };
        let i = slot * self.lanes + lane;
        let last = self.last_seq[i];
        if last != 0 {
            if seq > last + 1 {
                tally.gaps += seq - last - 1;
            } else if seq <= last {
                tally.backwards += 1;
                return;
            }
        }
        self.last_seq[i] = seq;
    }
}

/// A slow subscriber reads nothing until the run ends, then drains its socket
/// to see whether (and how) the broker closed it.
async fn hold_then_drain(sh: &Shared, mut conn: WsConn) {
    sh.drain_slow.cancelled().await;
    loop {
        loop {
            match conn.frames.next() {
                Ok(Some(Frame::Data(p))) => {
                    if sh.keys.msg_type(p) == MsgType::Tick {
                        sh.stats.slow_ticks.add(1);
                    }
                }
                Ok(Some(Frame::Close(code))) => {
                    count_ending(&sh.stats.slow_endings, code.to_string());
                    return;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    count_ending(&sh.stats.slow_endings, format!("protocol error: {e}"));
                    return;
                }
            }
        }
        match tokio::time::timeout(SLOW_DRAIN_IDLE, conn.fill()).await {
            Err(_) => {
                count_ending(&sh.stats.slow_endings, "still open");
                conn.send_close(1000).await;
                return;
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                count_ending(&sh.stats.slow_endings, "eof (no close frame)");
                return;
            }
            Ok(Err(e)) => {
                count_ending(&sh.stats.slow_endings, format!("io error: {}", e.kind()));
                return;
            }
            Ok(Ok(_)) => {}
        }
    }
}
