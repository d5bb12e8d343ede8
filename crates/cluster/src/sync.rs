//! State transfer: a node that (re)connects to NATS asks one peer for the last
//! value of every topic, so a new or restarted node can serve snapshots of
//! quiet topics at once, and a node that missed ticks while NATS was away
//! catches up on each topic's newest value.
//!
//! The request goes to `{prefix}.sync`, which every node subscribes to in one
//! queue group: NATS hands each request to one peer. The peer answers to the
//! request's inbox in chunks, the last one flagged. A chunk:
//!
//! ```text
//! u8 version (1), u8 flags (bit 0: last), u8 node length, node
//! then records: u8 topic length, topic, u32 length (big endian), a `wire` tick message
//! ```
//!
//! A record is applied only where it adds something: a topic this node does
//! not know, a newer seq in the epoch this node has for it, or a later value
//! (by `ts`) in another peer's epoch (the publisher moved while this node was
//! away). It never overrides a topic this node publishes or a later value.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::{Client, Subscriber};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use tickwire_engine::Engine;
use tickwire_proto::Topic;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::stats::ClusterStats;
use crate::wire;

/// Format version of chunks.
const VERSION: u8 = 1;
const LAST: u8 = 1;

/// Bytes per answer chunk: well under NATS' default 1 MiB `max_payload`.
const CHUNK_BYTES: usize = 256 << 10;

/// How long a node waits for a peer's whole answer before serving without it.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// The queue group every node's sync subscription is in (one answer per request).
pub const QUEUE_GROUP: &str = "tickwire-sync";

/// Why an answer could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk is truncated")]
    Truncated,
    #[error("unknown chunk version {0}")]
    Version(u8),
    #[error("bad topic or node name in a chunk")]
    BadName,
    #[error("bad tick in a chunk: {0}")]
    Tick(wire::DecodeError),
}

/// Encodes this engine's last values as answer chunks, the last one flagged
/// (one empty chunk when there are no topics).
pub fn state_chunks(engine: &Engine, node: &str) -> Vec<Bytes> {
    let topics: Vec<Topic> = engine.topics().into_iter().map(|t| t.topic).collect();
    let snaps = engine.snapshot(&topics);
    let start = |b: &mut BytesMut| {
        b.put_u8(VERSION);
        b.put_u8(0);
        b.put_u8(node.len() as u8);
        b.put_slice(node.as_bytes());
    };
    let mut chunks = Vec::new();
    let mut b = BytesMut::with_capacity(CHUNK_BYTES);
    start(&mut b);
    let empty_len = b.len();
    for s in &snaps {
        let topic = s.topic.as_str();
        let h = wire::Header {
            epoch: &s.epoch,
            node,
            seq: s.seq,
            ts: s.ts,
        };
        let msg_len = wire::header_len(&s.epoch, node) + s.data.len();
        if b.len() > empty_len && b.len() + 5 + topic.len() + msg_len > CHUNK_BYTES {
            chunks.push(std::mem::replace(
                &mut b,
                BytesMut::with_capacity(CHUNK_BYTES),
            ));
            start(&mut b);
        }
        b.put_u8(topic.len() as u8);
        b.put_slice(topic.as_bytes());
        b.put_u32(msg_len as u32);
        wire::encode_into(&mut b, &h, &s.data);
    }
    b[1] = LAST;
    chunks.push(b);
    chunks.into_iter().map(BytesMut::freeze).collect()
}

/// One record of a chunk: the topic, its tick and data.
type Record<'a> = (Topic, wire::Header<'a>, &'a [u8]);

/// Reads a chunk: who sent it, whether it is the last, and its records.
///
/// # Errors
/// [`ChunkError`] for anything that is not a well-formed chunk.
pub fn read_chunk(chunk: &[u8]) -> Result<(&str, bool, Vec<Record<'_>>), ChunkError> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Result<&'a [u8], ChunkError> {
        if p.len() < n {
            return Err(ChunkError::Truncated);
        }
        let (a, b) = p.split_at(n);
        *p = b;
        Ok(a)
    }
    let mut p = chunk;
    let head = take(&mut p, 2)?;
    if head[0] != VERSION {
        return Err(ChunkError::Version(head[0]));
    }
    let last = head[1] & LAST != 0;
    let n = take(&mut p, 1)?[0] as usize;
    let node = std::str::from_utf8(take(&mut p, n)?).map_err(|_| ChunkError::BadName)?;
    let mut records = Vec::new();
    while !p.is_empty() {
        let n = take(&mut p, 1)?[0] as usize;
        let topic = std::str::from_utf8(take(&mut p, n)?)
            .ok()
            .and_then(|t| Topic::parse(t).ok())
            .ok_or(ChunkError::BadName)?;
        let len = u32::from_be_bytes(take(&mut p, 4)?.try_into().expect("4 bytes")) as usize;
        let (h, data) = wire::decode(take(&mut p, len)?).map_err(ChunkError::Tick)?;
        records.push((topic, h, data));
    }
    Ok((node, last, records))
}

/// Applies one record where it adds something; true when it did.
pub fn apply_record(engine: &Engine, topic: &Topic, h: &wire::Header<'_>, data: &[u8]) -> bool {
    let known = engine.snapshot(std::slice::from_ref(topic));
    let wanted = match known.first() {
        None => true,
        Some(s) if *s.epoch == *h.epoch => h.seq > s.seq,
        // The topic moved to another node's epoch while this node was away:
        // take the peer's value when it is the later one (never over a topic
        // this node publishes).
        Some(s) => *s.epoch != *engine.epoch() && h.ts > s.ts,
    };
    wanted
        && engine
            .apply_remote(topic, h.epoch, h.seq, h.ts, data)
            .is_ok()
}

/// Answers every state request with this node's last values.
pub async fn serve(
    client: Client,
    mut requests: Subscriber,
    engine: Arc<Engine>,
    node: String,
    shutdown: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            m = requests.next() => m,
        };
        let Some(msg) = msg else {
            break;
        };
        let Some(reply) = msg.reply else {
            continue;
        };
        let chunks = state_chunks(&engine, &node);
        let n = chunks.len();
        for c in chunks {
            if client.publish(reply.clone(), c).await.is_err() {
                break;
            }
        }
        let _ = client.flush().await;
        tracing::debug!(node, chunks = n, "answered a state request");
    }
    let _ = requests.unsubscribe().await;
}

/// Asks a peer for the state each time this node (re)connects to NATS.
pub async fn request_on_connect(
    client: Client,
    engine: Arc<Engine>,
    stats: Arc<ClusterStats>,
    subject: String,
    connected: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = connected.notified() => {}
        }
        let outcome = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = tokio::time::timeout(SYNC_TIMEOUT, request(&client, &engine, &subject)) => r,
        };
        match outcome {
            Ok(Ok(Some((peer, applied)))) => {
                stats.syncs.fetch_add(1, Ordering::Relaxed);
                stats.sync_topics.fetch_add(applied, Ordering::Relaxed);
                tracing::info!(peer, topics = applied, "took the last values from a peer");
            }
            Ok(Ok(None)) => tracing::info!("no peer to take the last values from"),
            Ok(Err(e)) => tracing::warn!(error = %e, "state request failed"),
            Err(_) => tracing::warn!(
                timeout_ms = SYNC_TIMEOUT.as_millis() as u64,
                "no whole answer to the state request in time"
            ),
        }
    }
}

/// One request: `None` when no peer answers (NATS says so at once).
async fn request(
    client: &Client,
    engine: &Engine,
    subject: &str,
) -> Result<Option<(String, u64)>, String> {
    let inbox = client.new_inbox();
    // Subscribed before the request goes out, on the same connection: the
    // server has the inbox before any peer can answer.
    let mut answers = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| e.to_string())?;
    client
        .publish_with_reply(subject.to_owned(), inbox, Bytes::new())
        .await
        .map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())?;
    let mut applied = 0;
    let mut peer = None::<String>;
    let result = loop {
        let Some(m) = answers.next().await else {
            break Err("the answer subscription ended".to_owned());
        };
        if m.status
            .is_some_and(|s| s == async_nats::StatusCode::NO_RESPONDERS)
        {
            break Ok(None);
        }
        let (node, last, records) = read_chunk(&m.payload).map_err(|e| e.to_string())?;
        // One answer is expected; should two peers answer, keep to the first.
        if peer.get_or_insert_with(|| node.to_owned()) != node {
            continue;
        }
        for (topic, h, data) in &records {
            if apply_record(engine, topic, h, data) {
                applied += 1;
            }
        }
        if last {
            break Ok(peer.take().map(|p| (p, applied)));
        }
    };
    let _ = answers.unsubscribe().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_engine::EngineConfig;

    fn engine() -> Engine {
        Engine::new(EngineConfig {
            frames_carry_epoch: true,
            ..Default::default()
        })
    }

    fn t(s: &str) -> Topic {
        Topic::parse(s).unwrap()
    }

    #[test]
    fn a_peers_state_fills_unknown_topics_and_newer_seqs_only() {
        let peer = engine();
        for i in 0..3 {
            peer.publish(&t("a"), format!(r#"{{"i":{i}}}"#).as_bytes())
                .unwrap();
        }
        peer.apply_remote(&t("b"), "third", 9, 99, br#"{"b":9}"#)
            .unwrap();
        peer.apply_remote(&t("c"), "third", 5, 50, br#"{"c":5}"#)
            .unwrap();
        let chunks = state_chunks(&peer, "p");
        assert_eq!(chunks.len(), 1);

        let me = engine();
        me.publish(&t("mine"), b"{}").unwrap();
        me.apply_remote(&t("b"), "third", 7, 70, b"{}").unwrap();
        me.apply_remote(&t("c"), "other", 6, 60, b"{}").unwrap();
        let (node, last, records) = read_chunk(&chunks[0]).unwrap();
        assert_eq!((node, last, records.len()), ("p", true, 3));
        let applied: Vec<bool> = records
            .iter()
            .map(|(topic, h, d)| apply_record(&me, topic, h, d))
            .collect();
        assert_eq!(applied, [true, true, false], "a new, b newer, c moved on");
        let s = me.snapshot(&[t("a"), t("b"), t("c")]);
        assert_eq!(
            (&*s[0].epoch, s[0].seq, &s[0].data[..]),
            (peer.epoch(), 3, &br#"{"i":2}"#[..])
        );
        assert_eq!((s[1].seq, s[1].ts), (9, 99));
        assert_eq!((&*s[2].epoch, s[2].seq), ("other", 6));
    }

    #[test]
    fn big_states_are_split_and_only_the_last_chunk_is_flagged() {
        let peer = engine();
        let data = format!(r#"{{"pad":"{}"}}"#, "x".repeat(3000));
        for i in 0..200 {
            peer.publish(&t(&format!("t.{i}")), data.as_bytes())
                .unwrap();
        }
        let chunks = state_chunks(&peer, "p");
        assert!(chunks.len() >= 3, "{}", chunks.len());
        let mut n = 0;
        for (i, c) in chunks.iter().enumerate() {
            assert!(c.len() <= CHUNK_BYTES);
            let (_, last, records) = read_chunk(c).unwrap();
            assert_eq!(last, i == chunks.len() - 1);
            n += records.len();
        }
        assert_eq!(n, 200);
        let empty = state_chunks(&engine(), "q");
        let (_, last, records) = read_chunk(&empty[0]).unwrap();
        assert!(last && records.is_empty());
    }

    #[test]
    fn bad_chunks_are_errors() {
        let peer = engine();
        peer.publish(&t("a"), b"{}").unwrap();
        let c = &state_chunks(&peer, "p")[0];
        // Cut anywhere but right after the chunk's own header (an empty chunk).
        for n in (0..4).chain(5..c.len()) {
            assert!(read_chunk(&c[..n]).is_err(), "truncated at {n}");
        }
        let mut v = c.to_vec();
        v[0] = 9;
        assert_eq!(read_chunk(&v).unwrap_err(), ChunkError::Version(9));
    }

    #[test]
    fn a_node_cut_off_while_its_topic_moved_takes_the_newer_value() {
        // While this node was away from NATS the topic's publisher moved from
        // node A to node C; C's value is newer (later ts, seq going on).
        let peer = engine();
        peer.apply_remote(&t("m"), "nodeA", 10, 1_000, br#"{"p":10}"#)
            .unwrap();
        peer.apply_remote(&t("m"), "nodeC", 11, 5_000, br#"{"p":11}"#)
            .unwrap();
        let me = engine();
        me.apply_remote(&t("m"), "nodeA", 10, 1_000, br#"{"p":10}"#)
            .unwrap();
        let chunks = state_chunks(&peer, "p");
        let (_, _, records) = read_chunk(&chunks[0]).unwrap();
        for (topic, h, d) in &records {
            apply_record(&me, topic, h, d);
        }
        let s = me.snapshot(&[t("m")]);
        assert_eq!(
            (&*s[0].epoch, s[0].seq, &s[0].data[..]),
            ("nodeC", 11, &br#"{"p":11}"#[..]),
            "the node kept serving the value from before it was cut off"
        );
    }
}
