//! Multi-node fan-out over NATS: every tick a node accepts (feed, WebSocket or
//! HTTP publisher) goes to every other node, which delivers it with the same
//! epoch, seq and ts, so snapshots and recovery work on whichever node a
//! client lands on. Entry point: [`Cluster::start`].
//!
//! What it leaves to others: the engine gives each topic its epoch and seq,
//! detects duplicates, gaps and two nodes publishing one topic
//! ([`Engine::apply_remote`]); the gateway serves clients; the binary wires it
//! and exports [`ClusterStats`].
//!
//! The path of a tick: the engine calls the replicator under the topic's lock
//! (in seq order per topic); it encodes the subject and the message into one
//! buffer and `try_send`s it to a bounded queue (full: dropped and counted,
//! never blocking the engine). The publisher task takes everything queued at
//! once, publishes it (async-nats buffers the writes) and flushes once per
//! batch. On the other nodes one receiver task decodes each message and hands
//! it to [`Engine::apply_remote`], which encodes the frame once for that node.
//!
//! # Layout
//! * `wire`: the replication message, a binary header + `data` byte for byte
//! * `stats`: counters for `/metrics`
//! * `sync`: state transfer from a peer when a node (re)connects to NATS
//! * this file: [`ClusterConfig`], [`Cluster`], the publisher and receiver tasks

pub mod stats;
pub mod sync;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, Subject, Subscriber};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use tickwire_engine::{Engine, PublishError, RemoteOutcome, Replicated};
use tickwire_proto::Topic;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use stats::{ClusterSnapshot, ClusterStats};

/// Ticks a publisher task takes from the queue per flush. Bounds the time
/// between flushes under load; below it, a batch is whatever was queued.
const BATCH_MAX: usize = 1024;

/// How long the last ticks may take to reach NATS when the node stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A topic's last tick from this node is sent once more when the topic has
/// been quiet this long. NATS delivers at most once: a peer that lost the
/// last tick of a topic that then goes quiet would otherwise serve the one
/// before it until the next tick (a gap is only seen when a later tick
/// comes). A peer that has it drops the repeat as a duplicate.
const REPEAT_AFTER: Duration = Duration::from_secs(1);

/// How often the publisher task looks for quiet topics to repeat.
const REPEAT_EVERY: Duration = Duration::from_millis(250);

/// Reconnect delays: at once, then doubling from 50 ms up to this, with jitter
/// (so restarted NATS is not hit by every node in the same millisecond).
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// Cluster settings (`[cluster]` in the TOML file, docs/cluster.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// NATS server(s), comma separated: `nats://127.0.0.1:4222`.
    /// Credentials may go in the URL (`nats://user:pass@host:4222`).
    pub url: String,
    /// This node's name, in logs and in the messages it sends:
    /// 1 to 64 bytes of `A-Z a-z 0-9 _ -`.
    pub node: String,
    /// Subjects are `{subject_prefix}.t.{topic}`; clusters sharing one NATS
    /// server use different prefixes.
    pub subject_prefix: String,
    /// Ticks waiting to go to NATS; past it they are dropped and counted. At
    /// the default 4 KiB `max_tick_bytes` this bounds the queue to 64 MiB.
    pub queue_capacity: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            url: "nats://127.0.0.1:4222".into(),
            node: default_node_name(),
            subject_prefix: "tickwire".into(),
            queue_capacity: 16_384,
        }
    }
}

/// The host name, made a valid node name; `tickwire` when there is none.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(wire::MAX_NAME_BYTES)
        .collect();
    if name.is_empty() {
        "tickwire".into()
    } else {
        name
    }
}

/// Why the cluster could not start. Each names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.url: {0}")]
    Url(String),
    #[error("cluster.node: '{0}' must be 1 to 64 bytes of A-Z a-z 0-9 _ -")]
    Node(String),
    #[error(
        "cluster.subject_prefix: '{0}' must be NATS tokens separated by '.', without '*', '>' or spaces"
    )]
    SubjectPrefix(String),
    #[error("cluster.queue_capacity: must be above 0")]
    QueueCapacity,
    #[error("the engine must be built with frames_carry_epoch = true in a cluster")]
    FramesWithoutEpoch,
    #[error("the engine has a replicator installed already")]
    ReplicatorTaken,
    #[error("cannot subscribe to {subject}: {error}")]
    Subscribe { subject: String, error: String },
}

impl ClusterConfig {
    /// # Errors
    /// The first setting that is wrong.
    pub fn validate(&self) -> Result<(), ClusterError> {
        if self.url.trim().is_empty() {
            return Err(ClusterError::Url("empty".into()));
        }
        if !wire::valid_name(&self.node, false) {
            return Err(ClusterError::Node(self.node.clone()));
        }
        let p = &self.subject_prefix;
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>')
        };
        if p.len() > 64 || !p.split('.').all(token_ok) {
            return Err(ClusterError::SubjectPrefix(p.clone()));
        }
        if self.queue_capacity == 0 {
            return Err(ClusterError::QueueCapacity);
        }
        Ok(())
    }

    /// The subject a topic's ticks travel on.
    pub fn subject(&self, topic: &str) -> String {
        format!("{}.t.{topic}", self.subject_prefix)
    }
}

/// A tick on its way to NATS: subject and message share one allocation.
struct Outgoing {
    subject: Bytes,
    payload: Bytes,
}

/// Lets a warning through at most once a second (per-tick faults go to
/// counters; the log only says that they happen).
#[derive(Debug, Default)]
struct Throttle {
    last_ms: AtomicU64,
}

impl Throttle {
    fn ready(&self) -> bool {
        let now = tickwire_proto::now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= 1000
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// A running cluster member: its tasks and counters.
pub struct Cluster {
    stats: Arc<ClusterStats>,
    tracker: TaskTracker,
    client: Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("stats", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = (attempts - 2).min(16) as u32;
    let base = Duration::from_millis(50)
        .saturating_mul(1 << exp)
        .min(MAX_RECONNECT_DELAY);
    // Up to +25 %, from a randomly seeded hasher.
    let r =
        std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), attempts);
    base + base.mul_f64((r % 1000) as f64 / 4000.0)
}

impl Cluster {
    /// Connects to NATS, installs the replicator on `engine` and starts the
    /// publisher and receiver tasks; they run until `shutdown` is cancelled.
    ///
    /// A NATS server that cannot be reached is not an error: the node serves
    /// its own clients and keeps retrying in the background (and after any
    /// later disconnect), and [`ClusterStats::connected`] says where it stands.
    ///
    /// # Errors
    /// A bad setting, an engine without `frames_carry_epoch`, or one that has a
    /// replicator already.
    pub async fn start(
        cfg: ClusterConfig,
        engine: Arc<Engine>,
        shutdown: CancellationToken,
    ) -> Result<Cluster, ClusterError> {
        cfg.validate()?;
        if !engine.config().frames_carry_epoch {
            return Err(ClusterError::FramesWithoutEpoch);
        }
        let stats = Arc::new(ClusterStats::default());
        let connected = Arc::new(Notify::new());
        let events = {
            let watcher = Arc::new(Events {
                stats: stats.clone(),
                node: cfg.node.clone(),
                connected: connected.clone(),
                slow_log: Throttle::default(),
            });
            move |event: Event| {
                let watcher = watcher.clone();
                async move { watcher.on(event) }
            }
        };
        let options = ConnectOptions::new()
            .name(format!("tickwire-{}", cfg.node))
            // Our own ticks must not come back: the receiver also drops any
            // message of this node's epoch, in case echo is on at the server.
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(events);
        let client = async_nats::connect_with_options(cfg.url.as_str(), options)
            .await
            .map_err(|e| ClusterError::Url(e.to_string()))?;
        let wildcard = format!("{}.t.>", cfg.subject_prefix);
        let sub =
            client
                .subscribe(wildcard.clone())
                .await
                .map_err(|e| ClusterError::Subscribe {
                    subject: wildcard.clone(),
                    error: e.to_string(),
                })?;
        // A quiet topic's last tick, sent again (`REPEAT_AFTER`), comes on
        // subjects of its own: it only fills in what a node missed of the
        // epoch it holds (`Engine::apply_repeat`).
        let repeat_wildcard = format!("{}.r.>", cfg.subject_prefix);
        let repeats = client
            .subscribe(repeat_wildcard.clone())
            .await
            .map_err(|e| ClusterError::Subscribe {
                subject: repeat_wildcard,
                error: e.to_string(),
            })?;
        let sync_subject = format!("{}.sync", cfg.subject_prefix);
        let sync_requests = client
            .queue_subscribe(sync_subject.clone(), sync::QUEUE_GROUP.to_owned())
            .await
            .map_err(|e| ClusterError::Subscribe {
                subject: sync_subject.clone(),
                error: e.to_string(),
            })?;

        let (tx, rx) = mpsc::channel::<Outgoing>(cfg.queue_capacity);
        let prefix = format!("{}.t.", cfg.subject_prefix);
        engine
            .set_replicator(replicator(
                tx,
                prefix.clone(),
                cfg.node.clone(),
                stats.clone(),
            ))
            .map_err(|_| ClusterError::ReplicatorTaken)?;

        let tracker = TaskTracker::new();
        let repeat_prefix = format!("{}.r.", cfg.subject_prefix);
        tracker.spawn(publish_loop(
            client.clone(),
            rx,
            Quiet::new(&prefix, &repeat_prefix),
            stats.clone(),
            shutdown.clone(),
        ));
        tracker.spawn(sync::serve(
            client.clone(),
            sync_requests,
            engine.clone(),
            cfg.node.clone(),
            shutdown.clone(),
        ));
        tracker.spawn(sync::request_on_connect(
            client.clone(),
            engine.clone(),
            stats.clone(),
            sync_subject,
            connected,
            shutdown.clone(),
        ));
        tracker.spawn(receive_loop(
            [(sub, prefix, false), (repeats, repeat_prefix, true)],
            engine,
            stats.clone(),
            shutdown,
        ));
        tracker.close();
        tracing::info!(node = %cfg.node, url = %cfg.url, subject = %wildcard, "cluster started");
        Ok(Cluster {
            stats,
            tracker,
            client,
        })
    }

    pub fn stats(&self) -> &Arc<ClusterStats> {
        &self.stats
    }

    /// Waits for the tasks to end after `shutdown` (the publisher first sends
    /// what is queued, for at most 2 s, unless NATS is away), then closes the
    /// NATS connection.
    pub async fn wait(self) {
        self.tracker.wait().await;
        let _ = tokio::time::timeout(Duration::from_millis(500), self.client.drain()).await;
    }
}

/// What the NATS client reports, for the counters and the log.
struct Events {
    stats: Arc<ClusterStats>,
    node: String,
    connected: Arc<Notify>,
    slow_log: Throttle,
}

impl Events {
    fn on(&self, event: Event) {
        let Events {
            stats,
            node,
            connected,
            slow_log,
        } = self;
        let node = node.as_str();
        match event {
            Event::Connected => {
                stats.connected.store(true, Ordering::Relaxed);
                // Take the peers' last values: new here, or missed while away.
                connected.notify_one();
                let n = stats.connects.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!(node, connects = n, "connected to NATS");
            }
            Event::Disconnected => {
                stats.connected.store(false, Ordering::Relaxed);
                tracing::warn!(node, "disconnected from NATS; reconnecting");
            }
            // One event per message dropped: count each, log once a second.
            Event::SlowConsumer(sid) => {
                let n = stats.slow_consumer_events.fetch_add(1, Ordering::Relaxed) + 1;
                if slow_log.ready() {
                    tracing::warn!(
                        node,
                        sid,
                        dropped_total = n,
                        "this node cannot keep up with its peers' ticks: the NATS client dropped some (slow consumer)"
                    );
                }
            }
            Event::Closed => {
                stats.connected.store(false, Ordering::Relaxed);
                tracing::info!(node, "NATS connection closed");
            }
            other => tracing::warn!(node, event = %other, "NATS event"),
        }
    }
}

/// The engine's hook: encodes and queues; never blocks, never waits.
fn replicator(
    tx: mpsc::Sender<Outgoing>,
    prefix: String,
    node: String,
    stats: Arc<ClusterStats>,
) -> tickwire_engine::Replicator {
    let throttle = Throttle::default();
    Box::new(move |r: &Replicated<'_>| {
        let topic = r.topic.as_str();
        let header = wire::Header {
            epoch: r.epoch,
            node: &node,
            seq: r.seq,
            ts: r.ts,
        };
        let subject_len = prefix.len() + topic.len();
        let mut b =
            BytesMut::with_capacity(subject_len + wire::header_len(r.epoch, &node) + r.data.len());
        b.put_slice(prefix.as_bytes());
        b.put_slice(topic.as_bytes());
        let subject = b.split_to(subject_len).freeze();
        wire::encode_into(&mut b, &header, r.data);
        let out = Outgoing {
            subject,
            payload: b.freeze(),
        };
        let sent = tx.try_send(out);
        // The queue's depth for the gauge: two atomic loads.
        stats.queue_len.store(
            (tx.max_capacity() - tx.capacity()) as u64,
            Ordering::Relaxed,
        );
        match sent {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let n = stats.publish_drops.fetch_add(1, Ordering::Relaxed) + 1;
                if throttle.ready() {
                    tracing::warn!(
                        node,
                        drops_total = n,
                        "cluster publish queue full: ticks not sent to peers"
                    );
                }
            }
            // Shutting down: the publisher has stopped taking ticks.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    })
}

/// The last message sent per topic, until the topic has been quiet for
/// [`REPEAT_AFTER`]: then it is sent once more, on the repeat subject, and
/// forgotten.
struct Quiet {
    /// Tick subject -> (message, when sent).
    last: std::collections::HashMap<Bytes, (Bytes, tokio::time::Instant)>,
    /// `{prefix}.t.`'s length, and `{prefix}.r.` that replaces it.
    tick_prefix_len: usize,
    repeat_prefix: Bytes,
}

impl Quiet {
    fn new(tick_prefix: &str, repeat_prefix: &str) -> Quiet {
        Quiet {
            last: std::collections::HashMap::new(),
            tick_prefix_len: tick_prefix.len(),
            repeat_prefix: Bytes::copy_from_slice(repeat_prefix.as_bytes()),
        }
    }

    fn sent(&mut self, batch: &[Outgoing], now: tokio::time::Instant) {
        for m in batch {
            self.last
                .insert(m.subject.clone(), (m.payload.clone(), now));
        }
    }

    /// The messages of the topics quiet since `REPEAT_AFTER` before `now`,
    /// forgotten here.
    fn due(&mut self, now: tokio::time::Instant) -> Vec<Outgoing> {
        let mut due = Vec::new();
        self.last.retain(|subject, (payload, at)| {
            let quiet = now.duration_since(*at) >= REPEAT_AFTER;
            if quiet {
                let mut repeat = BytesMut::with_capacity(subject.len() + 1);
                repeat.put_slice(&self.repeat_prefix);
                repeat.put_slice(&subject[self.tick_prefix_len..]);
                due.push(Outgoing {
                    subject: repeat.freeze(),
                    payload: payload.clone(),
                });
            }
            !quiet
        });
        due
    }
}

/// Takes everything queued at once, publishes it and flushes once per batch;
/// and sends the last tick of each topic that went quiet once more
/// ([`REPEAT_AFTER`]).
async fn publish_loop(
    client: Client,
    mut rx: mpsc::Receiver<Outgoing>,
    mut quiet: Quiet,
    stats: Arc<ClusterStats>,
    shutdown: CancellationToken,
) {
    let throttle = Throttle::default();
    let mut batch = Vec::with_capacity(BATCH_MAX);
    let mut look = tokio::time::interval(REPEAT_EVERY);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // All three are cancel safe (recv_many takes nothing when not chosen).
        let n = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            n = rx.recv_many(&mut batch, BATCH_MAX) => n,
            now = look.tick() => {
                let due = quiet.due(now);
                if due.is_empty() {
                    continue;
                }
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    sent = send(&client, &due, &stats, &throttle) => {
                        stats.repeated.fetch_add(sent, Ordering::Relaxed);
                    }
                }
                continue;
            }
        };
        if n == 0 {
            break;
        }
        stats.queue_len.store(rx.len() as u64, Ordering::Relaxed);
        // A send waits while NATS is away; shutdown must not wait with it. A
        // send cut short keeps its batch, sent again below (a peer drops what
        // it has already as a duplicate).
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            sent = send(&client, &batch, &stats, &throttle) => {
                stats.published.fetch_add(sent, Ordering::Relaxed);
                quiet.sent(&batch, tokio::time::Instant::now());
                batch.clear();
            }
        }
    }
    // Stop taking ticks, then send what is queued within the deadline: a node
    // that stops cleanly leaves its peers with every tick it accepted.
    rx.close();
    stats.queue_len.store(0, Ordering::Relaxed);
    if client.connection_state() != async_nats::connection::State::Connected {
        let left = batch.len() + rx.len();
        if left > 0 {
            tracing::warn!(
                left,
                "cluster: NATS is away, ticks not sent to peers at shutdown"
            );
        }
        return;
    }
    let drain = async {
        loop {
            if batch.is_empty() && rx.recv_many(&mut batch, BATCH_MAX).await == 0 {
                break;
            }
            let sent = send(&client, &batch, &stats, &throttle).await;
            stats.published.fetch_add(sent, Ordering::Relaxed);
            batch.clear();
        }
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::warn!(
            left = rx.len(),
            "cluster: NATS did not take the last ticks in time"
        );
    }
}

/// Publishes a batch and flushes; returns how many messages the client took.
/// Cancel safe in the sense that matters: the batch is only read, so a
/// cut-short send can be repeated.
async fn send(
    client: &Client,
    batch: &[Outgoing],
    stats: &ClusterStats,
    throttle: &Throttle,
) -> u64 {
    let mut sent = 0;
    for m in batch {
        let subject =
            Subject::from_utf8(m.subject.clone()).expect("the subject is built from a valid topic");
        // Waits only while the client's command queue is full (NATS slow or
        // reconnecting); the engine's queue in front of it absorbs that.
        match client.publish(subject, m.payload.clone()).await {
            Ok(()) => sent += 1,
            Err(e) => {
                stats.publish_errors.fetch_add(1, Ordering::Relaxed);
                if throttle.ready() {
                    tracing::warn!(error = %e, "cluster publish failed");
                }
            }
        }
    }
    if let Err(e) = client.flush().await {
        stats.publish_errors.fetch_add(1, Ordering::Relaxed);
        if throttle.ready() {
            tracing::warn!(error = %e, "cluster flush failed");
        }
    }
    sent
}

/// Hands every peer's tick to the engine, in the order NATS delivers them
/// (which is each publisher's order), and every repeat of a quiet topic's
/// last tick. Each subscription comes with its subjects' prefix and whether
/// it carries repeats.
async fn receive_loop(
    subs: [(Subscriber, String, bool); 2],
    engine: Arc<Engine>,
    stats: Arc<ClusterStats>,
    shutdown: CancellationToken,
) {
    let throttle = Throttle::default();
    let [(mut ticks, tick_prefix, _), (mut repeats, repeat_prefix, _)] = subs;
    loop {
        let (msg, prefix, repeat) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            m = ticks.next() => (m, &tick_prefix, false),
            m = repeats.next() => (m, &repeat_prefix, true),
        };
        let Some(msg) = msg else {
            break;
        };
        apply(
            &engine,
            &stats,
            prefix,
            msg.subject.as_str(),
            &msg.payload,
            repeat,
            &throttle,
        );
    }
    let _ = ticks.unsubscribe().await;
    let _ = repeats.unsubscribe().await;
}

/// One message from NATS into the engine.
fn apply(
    engine: &Engine,
    stats: &ClusterStats,
    prefix: &str,
    subject: &str,
    payload: &[u8],
    repeat: bool,
    throttle: &Throttle,
) {
    let decoded = subject
        .strip_prefix(prefix)
        .and_then(|t| Topic::parse(t).ok())
        .ok_or(wire::DecodeError::BadName)
        .and_then(|topic| wire::decode(payload).map(|(h, data)| (topic, h, data)));
    let (topic, h, data) = match decoded {
        Ok(d) => d,
        Err(e) => {
            stats.decode_errors.fetch_add(1, Ordering::Relaxed);
            if throttle.ready() {
                tracing::warn!(subject, error = %e, "cluster: refused a message from NATS");
            }
            return;
        }
    };
    if h.epoch == engine.epoch() {
        stats.own_ignored.fetch_add(1, Ordering::Relaxed);
        return;
    }
    stats.received.fetch_add(1, Ordering::Relaxed);
    let applied = if repeat {
        engine.apply_repeat(&topic, h.epoch, h.seq, h.ts, data)
    } else {
        engine.apply_remote(&topic, h.epoch, h.seq, h.ts, data)
    };
    match applied {
        // The engine counts and logs gaps, duplicates and conflicts.
        Ok(RemoteOutcome::Applied | RemoteOutcome::Duplicate | RemoteOutcome::Gap { .. }) => {}
        Ok(RemoteOutcome::NewEpoch { conflict }) => {
            tracing::debug!(topic = %topic, node = h.node, epoch = h.epoch, conflict, "topic now in a peer's epoch");
        }
        Err(PublishError::TooManyTopics(max)) => {
            stats.apply_errors.fetch_add(1, Ordering::Relaxed);
            if throttle.ready() {
                tracing::warn!(topic = %topic, node = h.node, max_topics = max, "cluster: a peer's topic is over max_topics here");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_engine::EngineConfig;

    fn cfg() -> ClusterConfig {
        ClusterConfig {
            node: "n1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn config_is_checked() {
        assert!(cfg().validate().is_ok());
        let bad = |f: fn(&mut ClusterConfig)| {
            let mut c = cfg();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(bad(|c| c.node = "a.b".into()).starts_with("cluster.node"));
        assert!(bad(|c| c.subject_prefix = "a.*".into()).starts_with("cluster.subject_prefix"));
        assert!(bad(|c| c.subject_prefix = "a..b".into()).starts_with("cluster.subject_prefix"));
        assert!(bad(|c| c.url = " ".into()).starts_with("cluster.url"));
        assert!(bad(|c| c.queue_capacity = 0).starts_with("cluster.queue_capacity"));
        assert_eq!(cfg().subject("crypto.BTC-USD"), "tickwire.t.crypto.BTC-USD");
    }

    #[test]
    fn the_default_node_name_is_valid() {
        assert!(wire::valid_name(&default_node_name(), false));
    }

    #[test]
    fn reconnect_delays_grow_and_are_capped() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert!(reconnect_delay(2) >= Duration::from_millis(50));
        assert!(reconnect_delay(100) <= MAX_RECONNECT_DELAY.mul_f64(1.25));
    }

    fn engine() -> Engine {
        Engine::new(EngineConfig {
            frames_carry_epoch: true,
            ..Default::default()
        })
    }

    fn out(subject: &'static str, payload: &'static str) -> Outgoing {
        Outgoing {
            subject: Bytes::from_static(subject.as_bytes()),
            payload: Bytes::from_static(payload.as_bytes()),
        }
    }

    #[test]
    fn a_topics_last_message_is_due_once_after_it_has_been_quiet() {
        let t0 = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        let mut q = Quiet::new("t.", "r.");
        q.sent(&[out("t.a", "a1"), out("t.b", "b1")], t0);
        q.sent(&[out("t.a", "a2")], t0 + ms(500));
        assert!(q.due(t0 + ms(999)).is_empty(), "nothing quiet for 1 s yet");
        // b has been quiet for 1 s; a's newer message has not.
        let due = q.due(t0 + ms(1000));
        assert_eq!(due.len(), 1);
        assert_eq!(
            (&due[0].subject[..], &due[0].payload[..]),
            (&b"r.b"[..], &b"b1"[..])
        );
        let due = q.due(t0 + ms(1500));
        assert_eq!(due.len(), 1);
        assert_eq!(&due[0].payload[..], b"a2", "the last one, not the first");
        // Once each: nothing is left to repeat.
        assert!(q.due(t0 + ms(5000)).is_empty());
        assert!(q.last.is_empty());
    }

    #[test]
    fn the_replicator_queues_subject_and_message_and_counts_drops() {
        let e = engine();
        let stats = Arc::new(ClusterStats::default());
        let (tx, mut rx) = mpsc::channel(1);
        e.set_replicator(replicator(tx, "tw.t.".into(), "n1".into(), stats.clone()))
            .map_err(|_| ())
            .unwrap();
        let t = Topic::parse("fx.EUR-USD").unwrap();
        e.publish(&t, br#"{"p":1.10}"#).unwrap();
        e.publish(&t, br#"{"p":1.11}"#).unwrap();
        let m = rx.try_recv().unwrap();
        assert_eq!(&m.subject[..], b"tw.t.fx.EUR-USD");
        let (h, data) = wire::decode(&m.payload).unwrap();
        assert_eq!((h.epoch, h.node, h.seq), (e.epoch(), "n1", 1));
        assert_eq!(data, br#"{"p":1.10}"#);
        assert_eq!(stats.snapshot().publish_drops, 1, "the queue holds one");
    }

    #[test]
    fn a_peers_message_is_applied_and_our_own_and_garbage_are_not() {
        let e = engine();
        let stats = ClusterStats::default();
        let th = Throttle::default();
        let msg = wire::encode(
            &wire::Header {
                epoch: "peerepoch",
                node: "n2",
                seq: 5,
                ts: 77,
            },
            br#"{"p":2}"#,
        );
        apply(&e, &stats, "tw.t.", "tw.t.a.b", &msg, false, &th);
        let snap = e.snapshot(&[Topic::parse("a.b").unwrap()]);
        assert_eq!(
            (&*snap[0].epoch, snap[0].seq, snap[0].ts),
            ("peerepoch", 5, 77)
        );
        assert_eq!(&snap[0].data[..], br#"{"p":2}"#);

        let own = wire::encode(
            &wire::Header {
                epoch: e.epoch(),
                node: "n1",
                seq: 6,
                ts: 78,
            },
            b"{}",
        );
        apply(&e, &stats, "tw.t.", "tw.t.a.b", &own, false, &th);
        apply(&e, &stats, "tw.t.", "tw.t.a..b", &msg, false, &th);
        apply(&e, &stats, "tw.t.", "tw.t.a.b", b"\x01junk", false, &th);
        let s = stats.snapshot();
        assert_eq!((s.received, s.own_ignored, s.decode_errors), (1, 1, 2));
        assert_eq!(e.snapshot(&[Topic::parse("a.b").unwrap()])[0].seq, 5);
    }
}
