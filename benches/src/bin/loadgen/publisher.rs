//! Publisher connections: `op:"publish"` with an `id`, round-robin over the
//! topics, paced by a rate or by a window of unacknowledged publishes.

use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::Shared;
use crate::scan::{MsgType, push_u64};
use crate::wire::{Frame, OP_PONG, SocketOpts, WsConn, push_text_with};

/// Most publishes written with one `write` call.
pub const MAX_BATCH: u64 = 1024;
/// In rate mode, the most sending time a late publisher catches up on.
pub const MAX_CATCH_UP: Duration = Duration::from_millis(10);
/// In rate mode, how often the publisher wakes to send what is due.
pub const RATE_TICK: Duration = Duration::from_millis(1);

pub struct Spec {
    pub index: usize,
    /// Ticks per second for this publisher; 0 = as fast as the window allows.
    pub rate_per_s: f64,
    /// Most publishes sent and not yet acked.
    pub max_inflight: u64,
    /// Where this publisher starts its round-robin over the topics.
    pub topic_offset: u64,
}

/// Connects, waits for the start signal, publishes until the window ends,
/// then waits (up to the drain timeout) for the last acks.
///
/// # Errors
/// Connect or upgrade failures (a refused key shows as HTTP 401), a close by
/// the broker, or I/O errors.
pub async fn run(sh: Rc<Shared>, spec: Spec) -> anyhow::Result<()> {
    let key = sh.opts.pub_key.as_deref();
    let seed = 0xABCD_0000 + spec.index as u64;
    let mut conn = WsConn::connect(&sh.pub_target, SocketOpts::default(), key, 64 << 10, seed)
        .await
        .with_context(|| format!("publisher {}", spec.index))?;
    crate::wire::wait_for(&mut conn, sh.opts.connect_timeout, |p| {
        Ok(sh.keys.msg_type(p) == MsgType::Welcome)
    })
    .await?;
    sh.stats.pubs_ready.add(1);
    sh.go.cancelled().await;

    let mut p = Publisher {
        sh: &sh,
        topics: sh.topic_count() as u64,
        offset: spec.topic_offset,
        next_id: 1,
        first_measured_id: u64::MAX,
        inflight: 0,
        out: Vec::with_capacity(256 << 10),
        pad: sh.opts.pad.clone(),
    };
    let started = Instant::now();
    let mut sent: u64 = 0;
    let end_ns = sh.window().1;
    let end_at = started + Duration::from_nanos(end_ns.saturating_sub(crate::unix_nanos()));
    loop {
        let now_ns = crate::unix_nanos();
        if now_ns >= end_ns {
            break;
        }
        let room = spec.max_inflight.saturating_sub(p.inflight);
        let mut n = room.min(MAX_BATCH);
        if spec.rate_per_s > 0.0 {
            let due = (started.elapsed().as_secs_f64() * spec.rate_per_s) as u64;
            // A publisher held back (by the window, or a busy CPU) does not
            // make up for more than MAX_CATCH_UP later: the rate stays a rate.
            let max_behind = (spec.rate_per_s * MAX_CATCH_UP.as_secs_f64()) as u64 + 1;
            if due > sent + max_behind {
                let skipped = due - sent - max_behind;
                sh.stats.skipped.add(skipped);
                sent += skipped;
            }
            n = n.min(due.saturating_sub(sent));
        }
        if n > 0 {
            p.write_batch(&mut conn, n, now_ns).await?;
            sent += n;
        }
        // Wait for acks; in rate mode also for the next sending slot.
        let wake = if spec.rate_per_s > 0.0 {
            Instant::now() + RATE_TICK
        } else {
            end_at
        };
        tokio::select! {
            res = conn.fill() => { res.context("publisher connection")?; }
            () = tokio::time::sleep_until(wake.min(end_at)) => {}
        }
        p.read_acks(&mut conn).await?;
    }
    // Drain the acks still in flight.
    let deadline = Instant::now() + sh.opts.drain;
    while p.inflight > 0 {
        match tokio::time::timeout_at(deadline, conn.fill()).await {
            Err(_) => break,
            Ok(res) => {
                res.context("publisher connection")?;
            }
        }
        p.read_acks(&mut conn).await?;
    }
    if p.inflight > 0 {
        sh.stats.note_error(|| {
            format!(
                "publisher {}: {} publishes never acked",
                spec.index, p.inflight
            )
        });
    }
    conn.send_close(1000).await;
    Ok(())
}

struct Publisher<'a> {
    sh: &'a Shared,
    topics: u64,
    offset: u64,
    next_id: u64,
    /// Ids from here on were sent inside the measured window.
    first_measured_id: u64,
    inflight: u64,
    out: Vec<u8>,
    pad: Option<String>,
}

impl Publisher<'_> {
    fn topic_of(&self, id: u64) -> u32 {
        ((self.offset + id) % self.topics) as u32
    }

    /// Writes `n` publishes stamped with `now_ns`, in one syscall.
    async fn write_batch(&mut self, conn: &mut WsConn, n: u64, now_ns: u64) -> anyhow::Result<()> {
        let (start, _) = self.sh.window();
        if now_ns >= start && self.first_measured_id == u64::MAX {
            self.first_measured_id = self.next_id;
        }
        self.out.clear();
        for _ in 0..n {
            let id = self.next_id;
            self.next_id += 1;
            let topic = self.sh.topic_name(self.topic_of(id));
            let mask = conn.next_mask();
            let pad = self.pad.as_deref();
            push_text_with(&mut self.out, mask, |o| {
                o.extend_from_slice(br#"{"op":"publish","id":"#);
                push_u64(o, id);
                o.extend_from_slice(br#","topic":""#);
                o.extend_from_slice(topic.as_bytes());
                o.extend_from_slice(br#"","data":{"ts_send":"#);
                push_u64(o, now_ns);
                // A price that moves, with a fractional part like a real one.
                o.extend_from_slice(br#","price":"#);
                push_u64(o, 100 + id % 1000);
                o.extend_from_slice(b".25");
                if let Some(pad) = pad {
                    o.extend_from_slice(br#","pad":""#);
                    o.extend_from_slice(pad.as_bytes());
                    o.push(b'"');
                }
                o.extend_from_slice(b"}}");
            });
        }
        conn.stream
            .write_all(&self.out)
            .await
            .context("publisher write")?;
        self.inflight += n;
        self.sh.stats.sent.add(n);
        self.sh.stats.inflight.add(n);
        Ok(())
    }

    /// Handles every complete frame in the buffer: acks, errors, pings.
    async fn read_acks(&mut self, conn: &mut WsConn) -> anyhow::Result<()> {
        let st = &self.sh.stats;
        let mut pong = None;
        let mut acked = 0;
        let mut refused = 0;
        let mut measured = 0;
        {
            let mut per_topic = st.acked_per_topic.borrow_mut();
            while let Some(frame) = conn.frames.next()? {
                match frame {
                    Frame::Data(p) => match self.sh.keys.msg_type(p) {
                        MsgType::Ack => {
                            acked += 1;
                            if let Some(id) = self.sh.keys.id(p)
                                && id >= self.first_measured_id
                            {
                                measured += 1;
                                per_topic[self.topic_of(id) as usize] += 1;
                            }
                        }
                        MsgType::Error => {
                            // An error answers one publish: it is no longer in flight.
                            if self.sh.keys.id(p).is_some() {
                                refused += 1;
                            }
                            st.publish_errors.add(1);
                            st.note_error(|| {
                                format!("publish refused: {}", String::from_utf8_lossy(p))
                            });
                        }
                        _ => {}
                    },
                    Frame::Ping(p) => pong = Some(p.to_vec()),
                    Frame::Pong => {}
                    Frame::Close(code) => bail!("publisher closed by the broker with {code}"),
                }
            }
        }
        let answered = (acked + refused).min(self.inflight);
        self.inflight -= answered;
        st.inflight.sub(answered);
        st.acked.add(acked);
        st.acked_measured.add(measured);
        if let Some(p) = pong {
            conn.send(OP_PONG, &p).await?;
        }
        Ok(())
    }
}
