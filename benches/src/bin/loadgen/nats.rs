//! `--nats`: the same scenarios against nats-server's WebSocket port, speaking
//! the NATS text protocol (INFO, CONNECT, SUB, PUB, MSG, PING/PONG), for a
//! baseline.
//!
//! What differs from tickwire: subscriptions are confirmed by a PING/PONG
//! round trip (NATS handles a connection's ops in order), publishes by a PING
//! after each batch (one PONG acknowledges the whole batch), and NATS has no
//! seq, so each publisher numbers its ticks per topic in the payload
//! (`"pub":P,"seq":S`) and subscribers check contiguity per topic and
//! publisher. A subscription's sid is its topic index + 1. NATS frames are a
//! byte stream: an op may span WebSocket frames, and a frame may hold many ops.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::Shared;
use crate::publisher::{MAX_BATCH, MAX_CATCH_UP, RATE_TICK, Spec as PubSpec};
use crate::scan::{parse_u64, push_u64};
use crate::stats::count_ending;
use crate::subscriber::{Batch, Spec, Tracker};
use crate::wire::{Frame, OP_TEXT, SocketOpts, WsConn, push_frame};

/// Sent once after INFO: no +OK per op, no headers.
const CONNECT: &[u8] =
    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"name\":\"loadgen\"}\r\n";

/// One protocol op, borrowed from the stream.
#[derive(Debug)]
enum Op<'a> {
    Msg { sid: u64, payload: &'a [u8] },
    Ping,
    Pong,
    Err(&'a [u8]),
    Other,
}

/// Reassembles ops that span WebSocket frames.
#[derive(Default)]
struct Stream {
    carry: Vec<u8>,
}

impl Stream {
    /// Feeds one frame's payload; calls `f` for every complete op.
    fn feed(&mut self, data: &[u8], mut f: impl FnMut(Op<'_>)) {
        if self.carry.is_empty() {
            let used = parse_ops(data, &mut f);
            self.carry.extend_from_slice(&data[used..]);
        } else {
            self.carry.extend_from_slice(data);
            let used = parse_ops(&self.carry, &mut f);
            self.carry.drain(..used);
        }
    }
}

/// Parses complete ops from `buf`; returns the bytes consumed.
fn parse_ops(buf: &[u8], f: &mut impl FnMut(Op<'_>)) -> usize {
    let mut pos = 0;
    while let Some(eol) = memchr::memmem::find(&buf[pos..], b"\r\n") {
        let line = &buf[pos..pos + eol];
        let after_line = pos + eol + 2;
        if line.starts_with(b"MSG ") || line.starts_with(b"HMSG ") {
            let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
            let sid = parts.nth(2).and_then(parse_u64).unwrap_or(0);
            // The total size is the last field (HMSG: headers + payload).
            let size = line
                .rsplit(|&b| b == b' ')
                .next()
                .and_then(parse_u64)
                .unwrap_or(0) as usize;
            let end = after_line + size;
            if buf.len() < end + 2 {
                return pos;
            }
            f(Op::Msg {
                sid,
                payload: &buf[after_line..end],
            });
            pos = end + 2;
            continue;
        }
        f(match line {
            b"PING" => Op::Ping,
            b"PONG" => Op::Pong,
            l if l.starts_with(b"-ERR") => Op::Err(l),
            _ => Op::Other,
        });
        pos = after_line;
    }
    pos
}

/// Sends `ops` (one or more NATS ops) in one text frame.
async fn send(conn: &mut WsConn, ops: &[u8]) -> std::io::Result<()> {
    conn.send(OP_TEXT, ops).await
}

/// Reads frames until `want` accepts an op; answers PINGs.
async fn wait_op(
    conn: &mut WsConn,
    stream: &mut Stream,
    timeout: Duration,
    mut want: impl FnMut(&Op<'_>) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut found = false;
        let mut ping = false;
        let mut err = None;
        while let Some(frame) = conn.frames.next()? {
            match frame {
                Frame::Data(p) => stream.feed(p, |op| {
                    match &op {
                        Op::Ping => ping = true,
                        Op::Err(e) => err = Some(String::from_utf8_lossy(e).into_owned()),
                        _ => {}
                    }
                    found |= want(&op);
                }),
                Frame::Close(code) => bail!("closed by the server with {code}"),
                _ => {}
            }
        }
        if let Some(e) = err {
            bail!("nats-server said {e}");
        }
        if ping {
            send(conn, b"PONG\r\n").await?;
        }
        if found {
            return Ok(());
        }
        tokio::time::timeout_at(deadline, conn.fill())
            .await
            .context("timed out waiting for nats-server")??;
    }
}

/// Connects, subscribes to the spec's topics and waits for the PONG that
/// proves the SUBs were processed.
///
/// # Errors
/// Connect or upgrade failures, `-ERR`, or the timeout.
pub async fn setup_sub(
    sh: &Shared,
    spec: &Spec,
    opts: SocketOpts,
) -> anyhow::Result<(WsConn, Vec<u8>)> {
    let bearer = sh.opts.sub_key.as_deref();
    let mut conn = WsConn::connect(
        &sh.target,
        opts,
        bearer,
        sh.opts.read_buffer_bytes,
        spec.index as u64,
    )
    .await?;
    let mut stream = Stream::default();
    let t = sh.opts.connect_timeout;
    wait_op(&mut conn, &mut stream, t, |op| matches!(op, Op::Other)).await?;
    let mut ops = CONNECT.to_vec();
    for &topic in &spec.topics {
        ops.extend_from_slice(b"SUB ");
        ops.extend_from_slice(sh.topic_name(topic).as_bytes());
        ops.push(b' ');
        push_u64(&mut ops, u64::from(topic) + 1);
        ops.extend_from_slice(b"\r\n");
    }
    ops.extend_from_slice(b"PING\r\n");
    send(&mut conn, &ops).await?;
    wait_op(&mut conn, &mut stream, t, |op| matches!(op, Op::Pong)).await?;
    Ok((conn, stream.carry))
}

/// The healthy receive loop over NATS.
pub async fn receive(
    sh: &Shared,
    mut conn: WsConn,
    carry: Vec<u8>,
    topics: Vec<u32>,
    lanes: usize,
) {
    let mut tracker = Tracker::new(topics, lanes);
    let mut stream = Stream { carry };
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
                crate::subscriber::lost(sh, &e);
                return;
            }
        }
        let mut ping = false;
        let mut closed = None;
        {
            let mut batch = Batch::new(sh, crate::unix_nanos());
            loop {
                match conn.frames.next() {
                    Ok(Some(Frame::Data(p))) => stream.feed(p, |op| match op {
                        Op::Msg { sid, payload } => {
                            let topic = u32::try_from(sid.wrapping_sub(1)).ok();
                            batch.on_nats_msg(&mut tracker, topic, payload);
                        }
                        Op::Ping => ping = true,
                        Op::Err(e) => closed = Some(String::from_utf8_lossy(e).into_owned()),
                        Op::Pong | Op::Other => {}
                    }),
                    Ok(Some(Frame::Close(code))) => {
                        closed.get_or_insert(code.to_string());
                        break;
                    }
                    Ok(Some(Frame::Ping(_) | Frame::Pong)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        closed = Some(format!("protocol error: {e}"));
                        break;
                    }
                }
            }
        }
        if ping {
            let _ = send(&mut conn, b"PONG\r\n").await;
        }
        if let Some(how) = closed {
            crate::subscriber::ended(sh, how);
            conn.send_close(1000).await;
            return;
        }
    }
}

/// A slow NATS subscriber: reads nothing until the run ends, then drains.
/// nats-server ends slow consumers with `-ERR 'Slow Consumer ...'` or just
/// closes them.
pub async fn hold_then_drain(sh: &Shared, mut conn: WsConn, carry: Vec<u8>) {
    sh.drain_slow.cancelled().await;
    let mut stream = Stream { carry };
    loop {
        let mut ending = None;
        loop {
            match conn.frames.next() {
                Ok(Some(Frame::Data(p))) => stream.feed(p, |op| match op {
                    Op::Msg { .. } => sh.stats.slow_ticks.add(1),
                    Op::Err(e) => ending = Some(String::from_utf8_lossy(e).into_owned()),
                    _ => {}
                }),
                Ok(Some(Frame::Close(code))) => {
                    ending.get_or_insert(code.to_string());
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    ending = Some(format!("protocol error: {e}"));
                    break;
                }
            }
        }
        if let Some(how) = ending {
            count_ending(&sh.stats.slow_endings, how);
            return;
        }
        match tokio::time::timeout(Duration::from_secs(1), conn.fill()).await {
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

/// A NATS publisher: PUB batches, each followed by a PING whose PONG
/// acknowledges the batch.
///
/// # Errors
/// Connect failures, `-ERR`, a close, or I/O errors.
pub async fn publish(sh: &Shared, spec: PubSpec) -> anyhow::Result<()> {
    let key = sh.opts.pub_key.as_deref();
    let seed = 0xABCD_0000 + spec.index as u64;
    let mut conn = WsConn::connect(&sh.target, SocketOpts::default(), key, 64 << 10, seed)
        .await
        .with_context(|| format!("nats publisher {}", spec.index))?;
    let mut stream = Stream::default();
    wait_op(&mut conn, &mut stream, sh.opts.connect_timeout, |op| {
        matches!(op, Op::Other)
    })
    .await?;
    send(&mut conn, CONNECT).await?;
    sh.stats.pubs_ready.add(1);
    sh.go.cancelled().await;

    let topics = sh.topic_count() as u64;
    let mut seqs = vec![0u64; topics as usize];
    // Batches awaiting their PONG: (first id, count).
    let mut batches: VecDeque<(u64, u64)> = VecDeque::new();
    let mut next_id: u64 = 1;
    let mut first_measured_id = u64::MAX;
    let mut inflight: u64 = 0;
    let mut out: Vec<u8> = Vec::with_capacity(256 << 10);
    let mut ops: Vec<u8> = Vec::with_capacity(256 << 10);
    let pad = sh.opts.pad.clone();
    let (start_ns, end_ns) = sh.window();
    let started = Instant::now();
    let end_at = started + Duration::from_nanos(end_ns.saturating_sub(crate::unix_nanos()));
    let mut sent: u64 = 0;
    let lane = spec.index as u64;
    let mut draining = false;
    let drain_deadline = end_at + sh.opts.drain;
    loop {
        let now_ns = crate::unix_nanos();
        if !draining && now_ns >= end_ns {
            draining = true;
        }
        if draining && (inflight == 0 || Instant::now() >= drain_deadline) {
            break;
        }
        let mut n = if draining {
            0
        } else {
            spec.max_inflight.saturating_sub(inflight).min(MAX_BATCH)
        };
        if spec.rate_per_s > 0.0 && n > 0 {
            let due = (started.elapsed().as_secs_f64() * spec.rate_per_s) as u64;
            let max_behind = (spec.rate_per_s * MAX_CATCH_UP.as_secs_f64()) as u64 + 1;
            if due > sent + max_behind {
                let skipped = due - sent - max_behind;
                sh.stats.skipped.add(skipped);
                sent += skipped;
            }
            n = n.min(due.saturating_sub(sent));
        }
        if n > 0 {
            if now_ns >= start_ns && first_measured_id == u64::MAX {
                first_measured_id = next_id;
            }
            ops.clear();
            for _ in 0..n {
                let id = next_id;
                next_id += 1;
                let topic = ((spec.topic_offset + id) % topics) as usize;
                seqs[topic] += 1;
                let mut body = Vec::with_capacity(96);
                body.extend_from_slice(br#"{"ts_send":"#);
                push_u64(&mut body, now_ns);
                body.extend_from_slice(br#","pub":"#);
                push_u64(&mut body, lane);
                body.extend_from_slice(br#","seq":"#);
                push_u64(&mut body, seqs[topic]);
                body.extend_from_slice(br#","price":"#);
                push_u64(&mut body, 100 + id % 1000);
                body.extend_from_slice(b".25");
                if let Some(pad) = pad.as_deref() {
                    body.extend_from_slice(br#","pad":""#);
                    body.extend_from_slice(pad.as_bytes());
                    body.push(b'"');
                }
                body.push(b'}');
                ops.extend_from_slice(b"PUB ");
                ops.extend_from_slice(sh.topic_name(topic as u32).as_bytes());
                ops.push(b' ');
                push_u64(&mut ops, body.len() as u64);
                ops.extend_from_slice(b"\r\n");
                ops.extend_from_slice(&body);
                ops.extend_from_slice(b"\r\n");
            }
            ops.extend_from_slice(b"PING\r\n");
            out.clear();
            let mask = conn.next_mask();
            push_frame(&mut out, OP_TEXT, &ops, mask);
            conn.stream
                .write_all(&out)
                .await
                .context("nats publisher write")?;
            batches.push_back((next_id - n, n));
            inflight += n;
            sent += n;
            sh.stats.sent.add(n);
            sh.stats.inflight.add(n);
        }
        let wake = if draining {
            drain_deadline
        } else if spec.rate_per_s > 0.0 {
            (Instant::now() + RATE_TICK).min(end_at)
        } else {
            end_at
        };
        tokio::select! {
            res = conn.fill() => { res.context("nats publisher connection")?; }
            () = tokio::time::sleep_until(wake) => {}
        }
        // PONGs acknowledge batches in order.
        let mut pongs = 0;
        let mut ping = false;
        let mut err = None;
        while let Some(frame) = conn.frames.next()? {
            match frame {
                Frame::Data(p) => stream.feed(p, |op| match op {
                    Op::Pong => pongs += 1,
                    Op::Ping => ping = true,
                    Op::Err(e) => err = Some(String::from_utf8_lossy(e).into_owned()),
                    _ => {}
                }),
                Frame::Close(code) => bail!("nats publisher closed with {code}"),
                _ => {}
            }
        }
        if let Some(e) = err {
            sh.stats.publish_errors.add(1);
            bail!("nats-server said {e}");
        }
        if ping {
            send(&mut conn, b"PONG\r\n").await?;
        }
        let mut per_topic = sh.stats.acked_per_topic.borrow_mut();
        for _ in 0..pongs {
            let Some((first, count)) = batches.pop_front() else {
                break;
            };
            inflight -= count;
            sh.stats.inflight.sub(count);
            sh.stats.acked.add(count);
            let mut measured = 0;
            for id in first.max(first_measured_id)..first + count {
                per_topic[((spec.topic_offset + id) % topics) as usize] += 1;
                measured += 1;
            }
            sh.stats.acked_measured.add(measured);
        }
    }
    if inflight > 0 {
        sh.stats.note_error(|| {
            format!(
                "nats publisher {}: {inflight} publishes never acknowledged",
                spec.index
            )
        });
    }
    conn.send_close(1000).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_split_across_frames_are_reassembled() {
        let all = b"INFO {}\r\nMSG lg.t3 4 11\r\n{\"seq\":1}xx\r\nPING\r\nMSG lg.t1 2 reply 2\r\nab\r\n-ERR 'Slow Consumer'\r\n";
        for cut in 0..all.len() {
            let mut s = Stream::default();
            let mut seen = Vec::new();
            for part in [&all[..cut], &all[cut..]] {
                s.feed(part, |op| {
                    seen.push(match op {
                        Op::Msg { sid, payload } => {
                            format!("msg {sid} {}", String::from_utf8_lossy(payload))
                        }
                        Op::Ping => "ping".into(),
                        Op::Pong => "pong".into(),
                        Op::Err(e) => String::from_utf8_lossy(e).into_owned(),
                        Op::Other => "other".into(),
                    })
                });
            }
            assert_eq!(
                seen,
                [
                    "other",
                    "msg 4 {\"seq\":1}xx",
                    "ping",
                    "msg 2 ab",
                    "-ERR 'Slow Consumer'"
                ],
                "cut at {cut}"
            );
            assert!(s.carry.is_empty());
        }
    }
}
