//! The topic registry: slots, subscriptions and the fan-out.
//!
//! Locks, always taken in this order and never across an `.await` (there is
//! none in this crate): the registry `RwLock` (read to publish to an existing
//! topic, write to create a topic or change subscriptions), then one slot's
//! `Mutex` (held for the whole fan-out, so every subscriber sees a topic's
//! ticks in seq order), then an outbox's `Mutex` (one short push).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::num::NonZeroU64;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tickwire_proto::{Pattern, Topic, encode};

use crate::idhash::IdMap;
use crate::index::{PatternIndex, TopicIndex};
use crate::outbox::{self, Outbox, OutboxConfig, wire_len};
use crate::stats::EngineStats;
use crate::vecmap::VecMap;
use crate::{ConnId, TopicId};

/// Engine settings (PROTOCOL.md "Configuration names").
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Ticks kept per topic for recovery.
    pub history_per_topic: usize,
    /// A topic with no tick for this long is reported `stale`.
    pub stale_after_ms: u64,
    /// Distinct patterns one connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// Topics the broker will create; a publish to a new topic past it is refused.
    /// Bounds memory against a publisher that invents topics.
    pub max_topics: usize,
    /// Clustered: `tick` and `snapshot` frames name their topic's epoch, since
    /// ticks from other nodes keep the epoch of the node that accepted them.
    pub frames_carry_epoch: bool,
    pub outbox: OutboxConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            history_per_topic: 1024,
            stale_after_ms: 10_000,
            max_subscriptions_per_connection: 1024,
            max_topics: 100_000,
            frames_carry_epoch: false,
            outbox: OutboxConfig::default(),
        }
    }
}

/// The seq and time a tick was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub seq: u64,
    pub ts: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("the broker holds its maximum of {0} topics")]
    TooManyTopics(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("would hold {held} patterns, over the limit of {limit}")]
    TooMany { held: usize, limit: usize },
    #[error("connection is not registered")]
    UnknownConn,
}

/// A subscribe request, validated by the caller.
#[derive(Debug, Clone, Default)]
pub struct SubscribeRequest {
    pub patterns: Vec<Pattern>,
    pub snapshot: bool,
    pub max_hz: Option<f64>,
    pub since: Vec<(Topic, u64)>,
    pub epoch: Option<String>,
    /// Per-topic epochs, overriding `epoch` for the topics they name.
    pub epochs: Vec<(Topic, String)>,
}

/// A tick accepted by this node, as handed to the replicator.
#[derive(Debug, Clone, Copy)]
pub struct Replicated<'a> {
    pub topic: &'a Topic,
    pub epoch: &'a str,
    pub seq: u64,
    pub ts: u64,
    /// The publisher's JSON object, byte for byte.
    pub data: &'a [u8],
}

/// Called for every tick accepted by this node, in seq order per topic, under
/// the topic's lock: it must be quick and must not block (hand off to a
/// bounded queue).
pub type Replicator = Box<dyn Fn(&Replicated<'_>) + Send + Sync>;

/// What [`Engine::apply_remote`] did with a tick from another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteOutcome {
    /// The next seq of the topic's epoch: delivered.
    Applied,
    /// Seen already (or older): dropped.
    Duplicate,
    /// Delivered, but `missed` ticks of this epoch never arrived.
    Gap { missed: u64 },
    /// The topic moved to another node's epoch; `conflict` when this node had
    /// published to it within [`CONFLICT_WINDOW_MS`] (two nodes publishing at once).
    NewEpoch { conflict: bool },
}

/// Two nodes publishing the same topic within this window is reported as a conflict.
pub const CONFLICT_WINDOW_MS: u64 = 2_000;

/// A row of `GET /api/topics`.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicInfo {
    pub topic: Topic,
    pub seq: u64,
    pub subscribers: usize,
    pub last_ts: u64,
    pub rate_hz: f64,
    pub stale: bool,
}

/// A row of `GET /api/snapshot`.
#[derive(Debug, Clone)]
pub struct TopicSnapshot {
    pub topic: Topic,
    /// The epoch the seq belongs to.
    pub epoch: Arc<str>,
    pub seq: u64,
    pub ts: u64,
    /// The publisher's JSON object, byte for byte.
    pub data: Bytes,
}

/// One subscriber of a topic: 16 bytes, as a topic with 1,000 subscribers
/// holds 1,000 of these. The connection is known by its outbox
/// ([`Outbox::conn`]), and `max_hz`'s interval is kept in nanoseconds.
#[derive(Debug)]
struct Sub {
    outbox: Arc<Outbox>,
    interval_ns: Option<NonZeroU64>,
}

impl Sub {
    fn new(outbox: &Arc<Outbox>, interval: Option<Duration>) -> Sub {
        Sub {
            outbox: outbox.clone(),
            interval_ns: interval_ns(interval),
        }
    }

    fn interval(&self) -> Option<Duration> {
        self.interval_ns.map(|n| Duration::from_nanos(n.get()))
    }

    fn conn(&self) -> ConnId {
        self.outbox.conn().unwrap_or(ConnId(u64::MAX))
    }
}

// Each subscription holds one; each connection one outbox (in an `Arc`,
// whose 16 bytes of counts bring it to 248, inside the allocator's 256-byte
// class). Measured per connection in docs/performance.md.
const _: () = assert!(std::mem::size_of::<Sub>() <= 16);
const _: () = assert!(std::mem::size_of::<Outbox>() <= 240);

/// An interval as kept in [`Sub`]: at least 1 ns, at most 584 years.
fn interval_ns(interval: Option<Duration>) -> Option<NonZeroU64> {
    interval.map(|d| {
        NonZeroU64::new(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).unwrap_or(NonZeroU64::MIN)
    })
}

#[derive(Debug)]
struct Last {
    seq: u64,
    ts: u64,
    /// The `tick` frame; `data` is `frame[data]`.
    frame: Bytes,
    data: Range<usize>,
}

#[derive(Debug)]
struct SlotInner {
    /// The epoch of the node whose seq space the topic is in.
    epoch: Arc<str>,
    /// When this node last accepted a tick for the topic, and when a peer did (ms).
    last_local_ms: u64,
    last_remote_ms: u64,
    /// The highest seq this node gave in its own epoch: a takeover goes on
    /// from it, so its epoch never names two ticks with one seq.
    own_seq: u64,
    seq: u64,
    last: Option<Last>,
    /// (seq, tick frame), oldest first; at most `history_per_topic`.
    history: VecDeque<(u64, Bytes)>,
    /// Each subscribed connection once; where each is, is kept by the
    /// connection (`TopicRef::pos`), not in a map here: 10 subscriptions
    /// of each of 10,000 connections would need 100,000 map entries.
    subs: Vec<Sub>,
    stale: bool,
    window_start_ms: u64,
    window_count: u64,
    rate_hz: f64,
}

impl SlotInner {
    fn new(epoch: Arc<str>) -> SlotInner {
        SlotInner {
            epoch,
            last_local_ms: 0,
            last_remote_ms: 0,
            own_seq: 0,
            seq: 0,
            last: None,
            history: VecDeque::new(),
            subs: Vec::new(),
            stale: false,
            window_start_ms: 0,
            window_count: 0,
            rate_hz: 0.0,
        }
    }
}

#[derive(Debug)]
struct Slot {
    id: TopicId,
    topic: Topic,
    inner: Mutex<SlotInner>,
}

#[derive(Debug)]
struct ConnSubs {
    outbox: Arc<Outbox>,
    /// Pattern -> its max_hz, as the interval it allows between ticks (ns):
    /// 32 bytes an entry, where an `Option<f64>` took 40.
    patterns: VecMap<Pattern, Option<NonZeroU64>>,
    /// Topic -> how many of this connection's patterns match it, and where
    /// the connection is in the topic's subscribers.
    topics: VecMap<TopicId, TopicRef>,
}

/// One connection's hold on one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TopicRef {
    /// This connection's patterns that match the topic.
    refs: u32,
    /// Its index in the topic's `subs` ([`NOT_PLACED`] before it is added).
    pos: u32,
}

const NOT_PLACED: u32 = u32::MAX;

/// [`VecMap::add_counts`] for topic holds: new ones are not placed yet.
fn add_refs(old: Option<TopicRef>, n: u32) -> TopicRef {
    match old {
        Some(r) => TopicRef {
            refs: r.refs + n,
            pos: r.pos,
        },
        None => TopicRef {
            refs: n,
            pos: NOT_PLACED,
        },
    }
}

#[derive(Debug, Default)]
struct Registry {
    by_name: HashMap<Topic, Arc<Slot>>,
    slots: Vec<Arc<Slot>>,
    /// The topics by segment, to resolve a wildcard subscription.
    topic_index: TopicIndex,
    /// Wildcard subscriptions, resolved against each new topic.
    wild: PatternIndex,
    /// Exact subscriptions, resolved when their topic is created.
    exact: HashMap<Pattern, Vec<ConnId>>,
    conns: IdMap<ConnId, ConnSubs>,
}

/// The topic registry and fan-out.
pub struct Engine {
    cfg: EngineConfig,
    epoch: Arc<str>,
    reg: RwLock<Registry>,
    stats: Arc<EngineStats>,
    /// The outboxes' limits and counters, shared by all of them.
    outboxes: Arc<outbox::Shared>,
    replicator: OnceLock<Replicator>,
    /// Rate limit of the "ticks from a peer were lost" warning (ms).
    last_gap_log_ms: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn new_epoch() -> String {
    // RandomState is seeded from the OS; two of them give 128 random bits.
    let a = RandomState::new().hash_one(std::process::id());
    let b = RandomState::new().hash_one(tickwire_proto::now_ms());
    format!("{a:016x}{b:016x}")
}

/// Records that `conn` is now at `pos` in `topic`'s subscribers.
fn set_pos(conns: &mut IdMap<ConnId, ConnSubs>, conn: ConnId, topic: TopicId, pos: u32) {
    if let Some(r) = conns
        .get_mut(&conn)
        .and_then(|cs| cs.topics.get_mut(&topic))
    {
        r.pos = pos;
    }
}

fn remove_exact(exact: &mut HashMap<Pattern, Vec<ConnId>>, p: &Pattern, conn: ConnId) {
    if let Some(v) = exact.get_mut(p) {
        v.retain(|c| *c != conn);
        if v.is_empty() {
            exact.remove(p);
        }
    }
}

/// The effective interval of a topic for one connection: the least restrictive
/// of its matching patterns (one without max_hz means every tick).
fn interval_for(patterns: &VecMap<Pattern, Option<NonZeroU64>>, topic: &str) -> Option<Duration> {
    // `None` until a pattern matches; then the shortest interval so far, or
    // `Some(None)` once one without max_hz matched.
    let mut best: Option<Option<NonZeroU64>> = None;
    for (p, interval) in patterns.iter() {
        if p.matches(topic) {
            best = Some(match (best, interval) {
                (Some(None), _) | (_, None) => None,
                (None, Some(i)) => Some(*i),
                (Some(Some(b)), Some(i)) => Some(b.min(*i)),
            });
        }
    }
    best.flatten().map(|n| Duration::from_nanos(n.get()))
}

/// The interval a subscribe's `max_hz` allows between ticks (`None`: every
/// tick). A client's max_hz may be as small as a float goes (1e-300): its
/// interval is capped (from_secs_f64 panicked, in the subscriber's task or,
/// for a topic created later, in the publisher's).
fn max_hz_interval(max_hz: Option<f64>) -> Option<NonZeroU64> {
    match max_hz {
        Some(hz) if hz > 0.0 => interval_ns(Some(
            Duration::try_from_secs_f64(1.0 / hz)
                .map_or(MAX_GATE_INTERVAL, |d| d.min(MAX_GATE_INTERVAL)),
        )),
        _ => None,
    }
}

/// The longest max_hz interval: about 136 years, "never again" for any
/// connection, and small enough for `Instant` arithmetic.
const MAX_GATE_INTERVAL: Duration = Duration::from_secs(u32::MAX as u64);

impl SlotInner {
    /// Where `conn` is in `subs`: at `pos` as its connection says, or (were
    /// that ever wrong, a bug) wherever a search finds it.
    ///
    /// A connection not yet placed is not searched for: subscribing N
    /// connections to one topic would be O(N^2). Debug builds (the tests)
    /// check that it is indeed absent.
    fn find_sub(&self, pos: u32, outbox: &Arc<Outbox>) -> Option<usize> {
        let is = |s: &Sub| Arc::ptr_eq(&s.outbox, outbox);
        if pos == NOT_PLACED {
            debug_assert!(
                !self.subs.iter().any(is),
                "a subscriber not placed is in the list"
            );
            return None;
        }
        let at = pos as usize;
        if self.subs.get(at).is_some_and(is) {
            return Some(at);
        }
        // Only a bug gets here; the tests would catch it.
        debug_assert!(
            self.subs.get(at).is_some_and(is),
            "subscriber position out of step"
        );
        self.subs.iter().position(is)
    }

    /// Adds `conn` (whose position is `pos`) or updates its interval;
    /// returns its position.
    fn add_sub(&mut self, pos: u32, outbox: &Arc<Outbox>, interval: Option<Duration>) -> u32 {
        if let Some(i) = self.find_sub(pos, outbox) {
            self.subs[i].interval_ns = interval_ns(interval);
            return i as u32;
        }
        self.subs.push(Sub::new(outbox, interval));
        (self.subs.len() - 1) as u32
    }

    /// Removes the connection of `outbox` (at `pos`); the subscriber moved
    /// into its place, if any, and that place, for the caller to record in
    /// its connection.
    fn remove_sub(&mut self, pos: u32, outbox: &Arc<Outbox>) -> Option<(ConnId, u32)> {
        let i = self.find_sub(pos, outbox)?;
        self.subs.swap_remove(i);
        self.subs.get(i).map(|moved| (moved.conn(), i as u32))
    }

    fn snapshot_frame(&self, topic: &str, with_epoch: bool) -> Option<Bytes> {
        self.last.as_ref().map(|l| {
            let data = &l.frame[l.data.clone()];
            if with_epoch {
                encode::snapshot_in(topic, &self.epoch, l.seq, l.ts, data)
            } else {
                encode::snapshot(topic, l.seq, l.ts, data)
            }
        })
    }
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        let stats = Arc::new(EngineStats::default());
        Engine {
            outboxes: Arc::new(outbox::Shared {
                cfg: cfg.outbox,
                stats: stats.clone(),
            }),
            cfg,
            epoch: new_epoch().into(),
            reg: RwLock::new(Registry::default()),
            stats,
            replicator: OnceLock::new(),
            last_gap_log_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Installs the hook that sends this node's ticks to its peers (once).
    ///
    /// # Errors
    /// Gives the hook back when one is installed already.
    pub fn set_replicator(&self, r: Replicator) -> Result<(), Replicator> {
        self.replicator.set(r)
    }

    /// The sequence space of this engine: new on every start.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    /// A new outbox with this engine's limits and counters.
    pub fn new_outbox(&self) -> Arc<Outbox> {
        Outbox::with_shared(self.outboxes.clone())
    }

    /// Registers a connection so it can subscribe.
    pub fn connect(&self, conn: ConnId, outbox: Arc<Outbox>) {
        outbox.set_conn(conn);
        self.reg.write().conns.insert(
            conn,
            ConnSubs {
                outbox,
                patterns: VecMap::default(),
                topics: VecMap::default(),
            },
        );
    }

    /// Wakes every connection's writer (`Outbox::wake_writer`), e.g. to see that
    /// the broker is shutting down.
    pub fn wake_all(&self) {
        for cs in self.reg.read().conns.values() {
            cs.outbox.wake_writer();
        }
    }

    /// The first of `conn`'s subscribed patterns that `pick` picks, if any
    /// (e.g. one a new token's rights do not cover).
    pub fn find_pattern(&self, conn: ConnId, pick: impl Fn(&Pattern) -> bool) -> Option<Pattern> {
        let reg = self.reg.read();
        reg.conns
            .get(&conn)?
            .patterns
            .keys()
            .find(|p| pick(p))
            .cloned()
    }

    /// Forgets a connection and all its subscriptions.
    pub fn disconnect(&self, conn: ConnId) {
        let mut reg = self.reg.write();
        let Some(cs) = reg.conns.remove(&conn) else {
            return;
        };
        cs.outbox.close();
        for p in cs.patterns.keys() {
            if p.is_wildcard() {
                reg.wild.remove(p.as_str(), conn);
            } else {
                remove_exact(&mut reg.exact, p, conn);
            }
        }
        for (id, r) in cs.topics.iter() {
            let moved = reg.slots[id.0 as usize]
                .inner
                .lock()
                .remove_sub(r.pos, &cs.outbox);
            if let Some((other, pos)) = moved {
                set_pos(&mut reg.conns, other, *id, pos);
            }
        }
    }

    /// Publishes `data` (a JSON object, passed on byte for byte) to `topic`.
    ///
    /// # Errors
    /// [`PublishError::TooManyTopics`] when `topic` is new and the registry is full.
    pub fn publish(&self, topic: &Topic, data: &[u8]) -> Result<Published, PublishError> {
        {
            let reg = self.reg.read();
            if let Some(slot) = reg.by_name.get(topic.as_str()) {
                return Ok(self.publish_to(slot, data));
            }
        }
        let slot = self.create_topic(topic, &self.epoch)?;
        Ok(self.publish_to(&slot, data))
    }

    /// Delivers a tick another node accepted, keeping its epoch, seq and ts.
    ///
    /// # Errors
    /// [`PublishError::TooManyTopics`] when the topic is new and the registry is full.
    pub fn apply_remote(
        &self,
        topic: &Topic,
        epoch: &str,
        seq: u64,
        ts: u64,
        data: &[u8],
    ) -> Result<RemoteOutcome, PublishError> {
        self.apply_peer_tick(topic, epoch, seq, ts, data, false)
    }

    /// A tick another node sends again because its topic went quiet (the
    /// last one it accepted). It only fills in what this node missed of the
    /// epoch it holds, or a topic it has no value for: a topic held in
    /// another epoch has moved on (to another node, or back to this one),
    /// and the repeat, late by design, is dropped as a duplicate. As a
    /// plain tick it could have replaced the newer value of the node the
    /// topic moved to (a higher seq than that node's, or a clock ahead).
    ///
    /// # Errors
    /// [`PublishError::TooManyTopics`] when the topic is new and the registry is full.
    pub fn apply_repeat(
        &self,
        topic: &Topic,
        epoch: &str,
        seq: u64,
        ts: u64,
        data: &[u8],
    ) -> Result<RemoteOutcome, PublishError> {
        self.apply_peer_tick(topic, epoch, seq, ts, data, true)
    }

    fn apply_peer_tick(
        &self,
        topic: &Topic,
        epoch: &str,
        seq: u64,
        ts: u64,
        data: &[u8],
        repeat: bool,
    ) -> Result<RemoteOutcome, PublishError> {
        // Bound first: the read guard must be gone before create_topic takes the write lock.
        let found = self.reg.read().by_name.get(topic.as_str()).cloned();
        let slot = match found {
            Some(slot) => slot,
            None => self.create_topic(topic, &Arc::from(epoch))?,
        };
        let mut s = slot.inner.lock();
        if repeat && *s.epoch != *epoch && s.last.is_some() {
            self.stats.remote_duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(RemoteOutcome::Duplicate);
        }
        let outcome = if *s.epoch == *epoch {
            if seq <= s.seq && s.last.is_some() {
                self.stats.remote_duplicates.fetch_add(1, Ordering::Relaxed);
                return Ok(RemoteOutcome::Duplicate);
            }
            if seq > s.seq + 1 && s.last.is_some() {
                let missed = seq - s.seq - 1;
                self.stats.remote_gaps.fetch_add(missed, Ordering::Relaxed);
                // Under overload this happens per tick: log at most once a second.
                let now = tickwire_proto::now_ms();
                let last = self.last_gap_log_ms.load(Ordering::Relaxed);
                if now.saturating_sub(last) >= 1000
                    && self
                        .last_gap_log_ms
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(topic = %topic, epoch = %epoch, missed, total = self.stats.remote_gaps.load(Ordering::Relaxed), "ticks from a peer were lost (logged at most once a second)");
                }
                // The history must stay contiguous: a recovery from before the
                // hole would replay across it and claim `recovered: true`.
                s.history.clear();
                RemoteOutcome::Gap { missed }
            } else {
                RemoteOutcome::Applied
            }
        } else if seq <= s.seq && s.last.as_ref().is_some_and(|l| ts < l.ts) {
            // Older by seq and by time than the value held: a late tick of the
            // node the topic moved from. It must not replace the newer value.
            self.stats.remote_duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(RemoteOutcome::Duplicate);
        } else {
            let now = tickwire_proto::now_ms();
            let conflict =
                s.last_local_ms > 0 && now.saturating_sub(s.last_local_ms) < CONFLICT_WINDOW_MS;
            if conflict {
                self.stats.epoch_conflicts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %topic, ours = %s.epoch, theirs = %epoch, "two nodes publish this topic at once");
            }
            s.epoch = Arc::from(epoch);
            // The old epoch's ticks are another seq space: never replay them as this one's.
            s.history.clear();
            RemoteOutcome::NewEpoch { conflict }
        };
        s.last_remote_ms = tickwire_proto::now_ms();
        s.seq = seq;
        self.fan_out(&slot, &mut s, seq, ts, data);
        self.stats.remote_applied.fetch_add(1, Ordering::Relaxed);
        Ok(outcome)
    }

    /// Creates those of `topics` that do not exist yet, all or none: when
    /// they do not all fit under `max_topics` none is created. A batch that
    /// creates its topics first cannot be refused halfway through its
    /// publishes by topics another publisher created meanwhile. A topic
    /// created here has no value until its first tick.
    ///
    /// # Errors
    /// [`PublishError::TooManyTopics`] when the new ones do not all fit.
    pub fn create_topics<'a>(
        &self,
        topics: impl IntoIterator<Item = &'a Topic>,
    ) -> Result<(), PublishError> {
        let mut reg = self.reg.write();
        let mut new: Vec<&Topic> = topics
            .into_iter()
            .filter(|t| !reg.by_name.contains_key(t.as_str()))
            .collect();
        new.sort_unstable();
        new.dedup();
        if reg.slots.len() + new.len() > self.cfg.max_topics {
            return Err(PublishError::TooManyTopics(self.cfg.max_topics));
        }
        for t in new {
            self.create_locked(&mut reg, t, &self.epoch);
        }
        Ok(())
    }

    fn create_topic(&self, topic: &Topic, epoch: &Arc<str>) -> Result<Arc<Slot>, PublishError> {
        let mut reg = self.reg.write();
        if let Some(slot) = reg.by_name.get(topic.as_str()) {
            return Ok(slot.clone());
        }
        if reg.slots.len() >= self.cfg.max_topics {
            return Err(PublishError::TooManyTopics(self.cfg.max_topics));
        }
        Ok(self.create_locked(&mut reg, topic, epoch))
    }

    /// Creates `topic` (not in the registry, with room for it).
    fn create_locked(&self, reg: &mut Registry, topic: &Topic, epoch: &Arc<str>) -> Arc<Slot> {
        let id = TopicId(reg.slots.len() as u32);
        let slot = Arc::new(Slot {
            id,
            topic: topic.clone(),
            inner: Mutex::new(SlotInner::new(epoch.clone())),
        });
        {
            let mut inner = slot.inner.lock();
            let mut holders: Vec<ConnId> =
                reg.exact.get(topic.as_str()).cloned().unwrap_or_default();
            reg.wild.matches(topic.as_str(), &mut |c| holders.push(c));
            for conn in &holders {
                let Some(cs) = reg.conns.get_mut(conn) else {
                    continue;
                };
                // A new topic has the highest id: it goes at the end, and
                // the vector grows by doubling (trimmed on (un)subscribe).
                let interval = interval_for(&cs.patterns, topic.as_str());
                let r = cs.topics.get_or_insert(
                    id,
                    TopicRef {
                        refs: 0,
                        pos: NOT_PLACED,
                    },
                );
                r.refs += 1;
                r.pos = inner.add_sub(r.pos, &cs.outbox, interval);
            }
        }
        reg.slots.push(slot.clone());
        reg.topic_index.insert(topic.as_str(), id);
        reg.by_name.insert(topic.clone(), slot.clone());
        slot
    }

    fn publish_to(&self, slot: &Slot, data: &[u8]) -> Published {
        let ts = tickwire_proto::now_ms();
        let mut s = slot.inner.lock();
        if s.epoch != self.epoch {
            // This node takes the topic over from the peer whose epoch it was in.
            if s.last_remote_ms > 0 && ts.saturating_sub(s.last_remote_ms) < CONFLICT_WINDOW_MS {
                self.stats.epoch_conflicts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %slot.topic, ours = %self.epoch, theirs = %s.epoch, "two nodes publish this topic at once");
            }
            s.epoch = self.epoch.clone();
            if s.seq < s.own_seq {
                // A peer's epoch with lower seqs (a restarted peer) came in
                // between: go on from this epoch's own, after a hole.
                s.seq = s.own_seq;
                s.history.clear();
            }
        }
        s.last_local_ms = ts;
        s.seq += 1;
        let seq = s.seq;
        s.own_seq = seq;
        self.fan_out(slot, &mut s, seq, ts, data);
        if let Some(r) = self.replicator.get() {
            r(&Replicated {
                topic: &slot.topic,
                epoch: &self.epoch,
                seq,
                ts,
                data,
            });
        }
        Published { seq, ts }
    }

    /// Encodes the tick once, keeps it as last value and in history, and hands
    /// it to every subscriber. `s.seq` is already `seq`.
    fn fan_out(&self, slot: &Slot, s: &mut SlotInner, seq: u64, ts: u64, data: &[u8]) {
        let now = Instant::now();
        let topic = slot.topic.as_str();
        let frame = if self.cfg.frames_carry_epoch {
            encode::tick_in(topic, &s.epoch, seq, ts, data)
        } else {
            encode::tick(topic, seq, ts, data)
        };
        let data_at = frame.len() - 1 - data.len()..frame.len() - 1;
        if self.cfg.history_per_topic > 0 {
            if s.history.len() >= self.cfg.history_per_topic {
                s.history.pop_front();
            }
            s.history.push_back((seq, frame.clone()));
        }
        s.last = Some(Last {
            seq,
            ts,
            frame: frame.clone(),
            data: data_at,
        });
        if ts.saturating_sub(s.window_start_ms) >= 1000 {
            let elapsed = ts.saturating_sub(s.window_start_ms);
            s.rate_hz = if elapsed < 2000 {
                s.window_count as f64 * 1000.0 / elapsed as f64
            } else {
                0.0
            };
            s.window_start_ms = ts;
            s.window_count = 0;
        }
        s.window_count += 1;
        if s.stale {
            s.stale = false;
            let status = encode::status(topic, true, ts);
            for sub in &s.subs {
                sub.outbox.push_control(status.clone());
            }
        }
        for sub in &s.subs {
            sub.outbox
                .push_tick(slot.id, frame.clone(), now, sub.interval());
        }
        self.stats.ticks_in.fetch_add(1, Ordering::Relaxed);
        self.stats
            .deliveries
            .fetch_add(s.subs.len() as u64, Ordering::Relaxed);
    }

    /// Adds `req.patterns` to `conn`'s subscriptions and queues, in this order:
    /// the reply made by `reply` (given `Some(recovered)` when the request asked
    /// for recovery), then per matching topic either its replayed ticks or its
    /// snapshot (once per topic however many patterns match it), then live ticks.
    ///
    /// # Errors
    /// [`SubscribeError::TooMany`] refuses the whole request when the connection
    /// would hold more than `max_subscriptions_per_connection` distinct patterns.
    pub fn subscribe(
        &self,
        conn: ConnId,
        req: &SubscribeRequest,
        reply: impl Fn(Option<bool>) -> Bytes,
    ) -> Result<(), SubscribeError> {
        // The topics named in `since` with a seq the client saw that the
        // request's patterns match, before the registry lock (1,024 patterns
        // and 5,000 entries held every publish back ~850 ms in a debug
        // build), and through a trie of the patterns rather than each entry
        // against each pattern. Whether they exist is asked under the lock,
        // below.
        let seen_matched: Vec<&Topic> = if req.since.is_empty() {
            Vec::new()
        } else {
            let mut asked = PatternIndex::default();
            for p in &req.patterns {
                asked.insert(p.as_str(), conn);
            }
            req.since
                .iter()
                .filter(|(t, seq)| {
                    let mut hit = false;
                    asked.matches(t.as_str(), &mut |_| hit = true);
                    *seq > 0 && hit
                })
                .map(|(t, _)| t)
                .collect()
        };
        let mut guard = self.reg.write();
        let reg = &mut *guard;
        let cs = reg
            .conns
            .get_mut(&conn)
            .ok_or(SubscribeError::UnknownConn)?;
        let new = req
            .patterns
            .iter()
            .filter(|p| !cs.patterns.contains_key(*p))
            .count();
        let limit = self.cfg.max_subscriptions_per_connection;
        if cs.patterns.len() + new > limit {
            return Err(SubscribeError::TooMany {
                held: cs.patterns.len() + new,
                limit,
            });
        }
        let reserved = cs.outbox.reserve();
        let mut matched: Vec<TopicId> = Vec::new();
        let mut seen: HashSet<TopicId> = HashSet::new();
        // Topics each new pattern matches, counted into `cs.topics` at once.
        let mut counted: Vec<TopicId> = Vec::new();
        let interval = max_hz_interval(req.max_hz);
        for p in &req.patterns {
            // An exact pattern shares the text of the one already held for
            // its topic, so ten thousand subscribers of a topic hold one copy.
            let p = match reg.exact.get_key_value(p) {
                Some((held, _)) => held.clone(),
                None => p.clone(),
            };
            let p = &p;
            let is_new = cs.patterns.insert(p.clone(), interval).is_none();
            if is_new {
                if p.is_wildcard() {
                    reg.wild.insert(p.as_str(), conn);
                } else {
                    reg.exact.entry(p.clone()).or_default().push(conn);
                }
            }
            let hits: Vec<TopicId> = if p.is_wildcard() {
                // In creation order, as a walk of the slots gave them.
                let mut hits = Vec::new();
                reg.topic_index.matches(p.as_str(), &mut hits);
                hits.sort_unstable();
                hits
            } else {
                reg.by_name
                    .get(p.as_str())
                    .map(|s| s.id)
                    .into_iter()
                    .collect()
            };
            if is_new {
                counted.extend_from_slice(&hits);
            }
            for id in hits {
                if seen.insert(id) {
                    matched.push(id);
                }
            }
        }
        cs.topics.add_counts(counted, add_refs);
        let asked_recovery = req.epoch.is_some() || !req.epochs.is_empty() || !req.since.is_empty();
        // Looked up once per matched topic, under the registry lock: by hash,
        // not by a walk of the whole list (6000 entries by 2000 topics held
        // every publish back ~140 ms in a debug build).
        // (Built backwards: the first of two entries for a topic wins, as before.)
        let since_of: HashMap<&str, u64> = req
            .since
            .iter()
            .rev()
            .map(|(t, q)| (t.as_str(), *q))
            .collect();
        let epoch_of: HashMap<&str, &str> = req
            .epochs
            .iter()
            .rev()
            .map(|(t, e)| (t.as_str(), e.as_str()))
            .collect();
        let mut recovered = true;
        let mut replayed = false;
        let now = Instant::now();
        // Without max_hz anywhere every interval is None, and no pattern
        // need be tried on each matched topic.
        let gated = cs.patterns.iter().any(|(_, i)| i.is_some());
        for id in matched {
            let slot = &reg.slots[id.0 as usize];
            let topic = slot.topic.as_str();
            let interval = if gated {
                interval_for(&cs.patterns, topic)
            } else {
                None
            };
            let mut s = slot.inner.lock();
            if let Some(r) = cs.topics.get_mut(&id) {
                r.pos = s.add_sub(r.pos, &cs.outbox, interval);
            }
            // In a recovery, a matched topic not named in `since` is one the
            // client saw nothing of (it was born while the client was away, or
            // never had a value): it is recovered only by replaying it from
            // seq 1, else it gets a snapshot and the reply says false.
            let since = since_of.get(topic).copied().or(asked_recovery.then_some(0));
            let mut send_snapshot = req.snapshot;
            if let Some(since) = since {
                let want = epoch_of.get(topic).copied().or(req.epoch.as_deref());
                let epoch_ok = want == Some(&*s.epoch);
                let oldest = s.history.front().map_or(s.seq + 1, |(q, _)| *q);
                // The replay is queued at once while the writer is held back:
                // past the soft limit the outbox would conflate it, dropping
                // missed ticks from a reply that says `recovered: true`.
                let fits = || {
                    let bytes: usize = s
                        .history
                        .iter()
                        .filter(|(q, _)| *q > since)
                        .map(|(_, f)| wire_len(f.len()))
                        .sum();
                    !cs.outbox.is_conflating()
                        && cs.outbox.buffered() + bytes <= self.cfg.outbox.soft_limit_bytes
                };
                // Through a max_hz gate only the newest of the ticks it
                // holds goes on: a replay of more than one would be thinned.
                let ungated = || interval.is_none() || s.seq - since <= 1;
                if epoch_ok && since <= s.seq && since + 1 >= oldest && ungated() && fits() {
                    replayed |= since < s.seq;
                    let mut n = 0;
                    for (q, f) in &s.history {
                        if *q > since {
                            cs.outbox.push_tick(id, f.clone(), now, interval);
                            n += 1;
                        }
                    }
                    self.stats.replayed.fetch_add(n, Ordering::Relaxed);
                    send_snapshot = false;
                } else {
                    recovered = false;
                    send_snapshot = true;
                }
            }
            if send_snapshot && let Some(f) = s.snapshot_frame(topic, self.cfg.frames_carry_epoch) {
                cs.outbox.push_tick(id, f, now, interval);
            }
            if s.stale
                && let Some(l) = &s.last
            {
                cs.outbox.push_control(encode::status(topic, false, l.ts));
            }
        }
        // A topic named in `since` that does not exist (yet) was not recovered
        // unless the client had seen nothing of it.
        if seen_matched
            .iter()
            .any(|t| !reg.by_name.contains_key(t.as_str()))
        {
            recovered = false;
        }
        // An epoch with nothing in `since` claims "I saw nothing of this broker":
        // true only for this broker's own epoch.
        if req.since.is_empty() && req.epoch.as_deref().is_some_and(|e| e != &*self.epoch) {
            recovered = false;
        }
        cs.patterns.trim();
        cs.topics.trim();
        let mut frame = reply(asked_recovery.then_some(recovered));
        // Replayed ticks still pending are conflated if the outbox is (or the
        // reply puts it) over the soft limit: then not every missed tick comes.
        if recovered
            && replayed
            && (cs.outbox.is_conflating()
                || cs.outbox.buffered() + wire_len(frame.len()) > self.cfg.outbox.soft_limit_bytes)
        {
            frame = reply(Some(false));
        }
        cs.outbox.fill_reserved(reserved, frame);
        Ok(())
    }

    /// Removes `patterns` from `conn`'s subscriptions (patterns not held are ignored).
    pub fn unsubscribe(&self, conn: ConnId, patterns: &[Pattern]) {
        let mut guard = self.reg.write();
        let reg = &mut *guard;
        let Some(cs) = reg.conns.get_mut(&conn) else {
            return;
        };
        let mut moved: Vec<(ConnId, TopicId, u32)> = Vec::new();
        // Without max_hz anywhere every interval is None: no pattern is
        // tried on each topic left (1,024 patterns by 100,000 topics).
        let gated = cs.patterns.iter().any(|(_, i)| i.is_some());
        let mut hits: Vec<TopicId> = Vec::new();
        for p in patterns {
            if cs.patterns.remove(p).is_none() {
                continue;
            }
            hits.clear();
            if p.is_wildcard() {
                reg.wild.remove(p.as_str(), conn);
                reg.topic_index.matches(p.as_str(), &mut hits);
            } else {
                remove_exact(&mut reg.exact, p, conn);
                hits.extend(reg.by_name.get(p.as_str()).map(|s| s.id));
            }
            // The topics the pattern matches, from the index: each is held
            // by this connection, since the pattern was. Counts that reach 0
            // are dropped in one pass below: removing them one by one could
            // shift the vector once per topic.
            for &id in &hits {
                let Some(r) = cs.topics.get_mut(&id) else {
                    debug_assert!(false, "a held pattern's topic is not held");
                    continue;
                };
                if r.refs == 0 {
                    continue;
                }
                let slot = &reg.slots[id.0 as usize];
                r.refs -= 1;
                if r.refs == 0 {
                    if let Some(m) = slot.inner.lock().remove_sub(r.pos, &cs.outbox) {
                        moved.push((m.0, id, m.1));
                    }
                    r.pos = NOT_PLACED;
                    cs.outbox.forget_topic(id);
                } else {
                    let interval = if gated {
                        interval_for(&cs.patterns, slot.topic.as_str())
                    } else {
                        None
                    };
                    r.pos = slot.inner.lock().add_sub(r.pos, &cs.outbox, interval);
                }
            }
        }
        cs.topics.retain(|_, r| r.refs > 0);
        cs.patterns.trim();
        cs.topics.trim();
        // Only this connection's positions were read above; the others'
        // that moved are recorded now.
        for (other, id, pos) in moved {
            set_pos(&mut reg.conns, other, id, pos);
        }
    }

    /// Marks topics with no tick for `stale_after_ms` as stale and tells their
    /// subscribers. Call periodically; `now_ms` is the wall clock.
    pub fn sweep_stale(&self, now_ms: u64) {
        let reg = self.reg.read();
        for slot in &reg.slots {
            let mut s = slot.inner.lock();
            let Some(last_ts) = s.last.as_ref().map(|l| l.ts) else {
                continue;
            };
            if s.stale || now_ms.saturating_sub(last_ts) < self.cfg.stale_after_ms {
                continue;
            }
            s.stale = true;
            self.stats.stale_events.fetch_add(1, Ordering::Relaxed);
            let status = encode::status(slot.topic.as_str(), false, last_ts);
            for sub in &s.subs {
                sub.outbox.push_control(status.clone());
            }
        }
    }

    /// Every topic, in creation order.
    pub fn topics(&self) -> Vec<TopicInfo> {
        let now = tickwire_proto::now_ms();
        let reg = self.reg.read();
        reg.slots
            .iter()
            .map(|slot| {
                let s = slot.inner.lock();
                let idle = now.saturating_sub(s.window_start_ms);
                TopicInfo {
                    topic: slot.topic.clone(),
                    seq: s.seq,
                    subscribers: s.subs.len(),
                    last_ts: s.last.as_ref().map_or(0, |l| l.ts),
                    rate_hz: if idle >= 2000 { 0.0 } else { s.rate_hz },
                    stale: s.stale,
                }
            })
            .collect()
    }

    /// The last value of each named topic that has one.
    pub fn snapshot(&self, topics: &[Topic]) -> Vec<TopicSnapshot> {
        let reg = self.reg.read();
        topics
            .iter()
            .filter_map(|t| {
                let slot = reg.by_name.get(t.as_str())?;
                let s = slot.inner.lock();
                let l = s.last.as_ref()?;
                Some(TopicSnapshot {
                    topic: slot.topic.clone(),
                    epoch: s.epoch.clone(),
                    seq: l.seq,
                    ts: l.ts,
                    data: l.frame.slice(l.data.clone()),
                })
            })
            .collect()
    }

    /// Whether `topic` exists (a publish to it creates nothing).
    pub fn has_topic(&self, topic: &Topic) -> bool {
        self.reg.read().by_name.contains_key(topic.as_str())
    }

    /// Number of topics known.
    pub fn topic_count(&self) -> usize {
        self.reg.read().slots.len()
    }

    /// Number of registered connections and of patterns they hold.
    pub fn subscription_counts(&self) -> (usize, usize) {
        let reg = self.reg.read();
        (
            reg.conns.len(),
            reg.conns.values().map(|c| c.patterns.len()).sum(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Drain;

    fn t(s: &str) -> Topic {
        Topic::parse(s).unwrap()
    }

    fn req(p: &[&str]) -> SubscribeRequest {
        SubscribeRequest {
            patterns: p.iter().map(|s| Pattern::parse(s).unwrap()).collect(),
            snapshot: true,
            ..Default::default()
        }
    }

    fn conn(e: &Engine, id: u64) -> Arc<Outbox> {
        let o = e.new_outbox();
        e.connect(ConnId(id), o.clone());
        o
    }

    fn take(o: &Outbox) -> Vec<String> {
        let mut v = Vec::new();
        assert_eq!(o.drain(&mut v), Drain::Frames);
        v.iter()
            .filter(|e| !e.frame.is_empty())
            .map(|e| String::from_utf8(e.frame.to_vec()).unwrap())
            .collect()
    }

    fn reply(r: Option<bool>) -> Bytes {
        Bytes::from(format!("subscribed {r:?}"))
    }

    #[test]
    fn overlapping_patterns_count_per_topic_across_one_request() {
        let e = Engine::new(EngineConfig::default());
        let o = conn(&e, 1);
        for topic in ["a.b", "a.c", "a.b.c"] {
            e.publish(&t(topic), b"{}").unwrap();
        }
        // Three new patterns match a.b in one request; one of them twice over.
        e.subscribe(ConnId(1), &req(&["a.>", "a.*", "a.b", "a.b"]), reply)
            .unwrap();
        take(&o);
        // Two of the three go in one call: a.b is still held by the third.
        e.unsubscribe(
            ConnId(1),
            &[
                Pattern::parse("a.>").unwrap(),
                Pattern::parse("a.*").unwrap(),
            ],
        );
        for topic in ["a.b", "a.c", "a.b.c"] {
            e.publish(&t(topic), br#"{"n":2}"#).unwrap();
        }
        let got = take(&o);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains(r#""topic":"a.b""#), "{got:?}");
        e.unsubscribe(ConnId(1), &[Pattern::parse("a.b").unwrap()]);
        e.publish(&t("a.b"), br#"{"n":3}"#).unwrap();
        assert!(take(&o).is_empty());
        assert_eq!(e.reg.read().conns[&ConnId(1)].topics.len(), 0);
    }

    #[test]
    fn subscribers_of_a_topic_share_its_pattern_text() {
        let e = Engine::new(EngineConfig::default());
        let o1 = conn(&e, 1);
        let o2 = conn(&e, 2);
        // Each request parses its own copy of the text.
        e.subscribe(ConnId(1), &req(&["fx.eurusd", "fx.*"]), reply)
            .unwrap();
        e.subscribe(ConnId(2), &req(&["fx.eurusd"]), reply).unwrap();
        {
            let reg = e.reg.read();
            let text = |c: u64| {
                reg.conns[&ConnId(c)]
                    .patterns
                    .keys()
                    .find(|p| p.as_str() == "fx.eurusd")
                    .expect("held")
                    .as_str()
                    .as_ptr()
            };
            assert_eq!(text(1), text(2), "one copy of the text for both");
        }
        // Sharing changes nothing about who gets what.
        e.unsubscribe(ConnId(1), &[Pattern::parse("fx.eurusd").unwrap()]);
        take(&o1);
        take(&o2);
        e.publish(&t("fx.eurusd"), br#"{"p":1}"#).unwrap();
        assert_eq!(take(&o1).len(), 1, "still matched by fx.*");
        assert_eq!(take(&o2).len(), 1);
        e.unsubscribe(ConnId(1), &[Pattern::parse("fx.*").unwrap()]);
        e.publish(&t("fx.eurusd"), br#"{"p":2}"#).unwrap();
        assert!(take(&o1).is_empty());
        assert_eq!(take(&o2).len(), 1);
        assert_eq!(e.subscription_counts(), (2, 1));
    }

    #[test]
    fn seq_counts_per_topic_from_one() {
        let e = Engine::new(EngineConfig::default());
        assert_eq!(e.publish(&t("a"), b"{}").unwrap().seq, 1);
        assert_eq!(e.publish(&t("a"), b"{}").unwrap().seq, 2);
        assert_eq!(e.publish(&t("b"), b"{}").unwrap().seq, 1);
    }

    #[test]
    fn reply_then_one_snapshot_per_topic_then_live() {
        let e = Engine::new(EngineConfig::default());
        e.publish(&t("crypto.BTC"), br#"{"p":1}"#).unwrap();
        let o = conn(&e, 1);
        e.subscribe(
            ConnId(1),
            &req(&["crypto.*", "crypto.>", "crypto.BTC"]),
            reply,
        )
        .unwrap();
        e.publish(&t("crypto.BTC"), br#"{"p":2}"#).unwrap();
        let got = take(&o);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], "subscribed None");
        assert!(got[1].starts_with(r#"{"type":"snapshot","topic":"crypto.BTC","seq":1,"#));
        assert!(got[2].contains(r#""seq":2,"#) && got[2].ends_with(r#""data":{"p":2}}"#));
    }

    #[test]
    fn wildcard_resolves_new_topics_and_unsubscribe_stops_them() {
        let e = Engine::new(EngineConfig::default());
        let o = conn(&e, 1);
        e.subscribe(ConnId(1), &req(&["fx.*", "fx.>"]), reply)
            .unwrap();
        e.publish(&t("fx.EUR"), b"{}").unwrap();
        e.publish(&t("fx.EUR.book"), b"{}").unwrap();
        e.publish(&t("eq.X"), b"{}").unwrap();
        assert_eq!(take(&o).len(), 3);
        e.unsubscribe(ConnId(1), &[Pattern::parse("fx.*").unwrap()]);
        e.publish(&t("fx.EUR"), b"{}").unwrap();
        assert_eq!(take(&o).len(), 1, "still matched by fx.>");
        e.unsubscribe(ConnId(1), &[Pattern::parse("fx.>").unwrap()]);
        e.publish(&t("fx.EUR"), b"{}").unwrap();
        e.publish(&t("fx.GBP"), b"{}").unwrap();
        assert!(take(&o).is_empty());
    }

    #[test]
    fn recovery_replays_history_or_falls_back_to_snapshot() {
        let e = Engine::new(EngineConfig {
            history_per_topic: 4,
            ..Default::default()
        });
        for _ in 0..6 {
            e.publish(&t("a"), b"{}").unwrap();
        }
        let o = conn(&e, 1);
        let mut r = req(&["a"]);
        r.epoch = Some(e.epoch().to_owned());
        r.since = vec![(t("a"), 3)];
        e.subscribe(ConnId(1), &r, reply).unwrap();
        let got = take(&o);
        assert_eq!(got[0], "subscribed Some(true)");
        assert_eq!(got.len(), 4);
        assert!(got[1].contains(r#""type":"tick","topic":"a","seq":4,"#));
        assert!(got[3].contains(r#""seq":6,"#));

        // Older than the history holds.
        let o2 = conn(&e, 2);
        r.since = vec![(t("a"), 1)];
        e.subscribe(ConnId(2), &r, reply).unwrap();
        let got = take(&o2);
        assert_eq!(got[0], "subscribed Some(false)");
        assert!(got[1].contains(r#""type":"snapshot","topic":"a","seq":6,"#));

        // Wrong epoch.
        let o3 = conn(&e, 3);
        r.since = vec![(t("a"), 5)];
        r.epoch = Some("other".into());
        e.subscribe(ConnId(3), &r, reply).unwrap();
        let got = take(&o3);
        assert_eq!(got[0], "subscribed Some(false)");
        assert!(got[1].contains(r#""type":"snapshot""#));
    }

    #[test]
    fn too_many_patterns_refuses_the_whole_request() {
        let e = Engine::new(EngineConfig {
            max_subscriptions_per_connection: 2,
            ..Default::default()
        });
        let o = conn(&e, 1);
        e.subscribe(ConnId(1), &req(&["a", "b"]), reply).unwrap();
        let err = e
            .subscribe(ConnId(1), &req(&["a", "c"]), reply)
            .unwrap_err();
        assert_eq!(err, SubscribeError::TooMany { held: 3, limit: 2 });
        // Re-subscribing a held pattern is fine.
        e.subscribe(ConnId(1), &req(&["a"]), reply).unwrap();
        assert_eq!(take(&o).len(), 2);
    }

    #[test]
    fn stale_then_live() {
        let e = Engine::new(EngineConfig {
            stale_after_ms: 1000,
            ..Default::default()
        });
        let o = conn(&e, 1);
        e.subscribe(ConnId(1), &req(&["a"]), reply).unwrap();
        let p = e.publish(&t("a"), b"{}").unwrap();
        e.sweep_stale(p.ts + 999);
        assert_eq!(take(&o).len(), 2);
        e.sweep_stale(p.ts + 1000);
        e.sweep_stale(p.ts + 5000);
        let got = take(&o);
        assert_eq!(
            got,
            vec![format!(
                r#"{{"type":"status","topic":"a","state":"stale","since":{}}}"#,
                p.ts
            )]
        );
        e.publish(&t("a"), b"{}").unwrap();
        let got = take(&o);
        assert!(got[0].contains(r#""state":"live""#));
        assert!(got[1].contains(r#""type":"tick""#));
    }

    #[test]
    fn a_topics_interval_is_the_least_restrictive_of_its_patterns() {
        let p = |t: &str| Pattern::parse(t).expect("pattern");
        let mut held = VecMap::default();
        held.insert(p("fx.*"), max_hz_interval(Some(4.0)));
        held.insert(p("fx.EUR-USD"), max_hz_interval(Some(10.0)));
        held.insert(p("eq.>"), max_hz_interval(Some(2.0)));
        held.insert(p("eq.AAPL"), None);
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(
            interval_for(&held, "fx.EUR-USD"),
            ms(100),
            "10 Hz beats 4 Hz"
        );
        assert_eq!(interval_for(&held, "fx.GBP-USD"), ms(250));
        assert_eq!(interval_for(&held, "eq.AAPL"), None, "no max_hz beats any");
        assert_eq!(interval_for(&held, "eq.MSFT"), ms(500));
        assert_eq!(
            interval_for(&held, "crypto.BTC-USD"),
            None,
            "nothing matches"
        );
        assert_eq!(max_hz_interval(Some(0.0)), None);
        assert_eq!(max_hz_interval(None), None);
        assert_eq!(
            max_hz_interval(Some(1e-300)).map(|n| Duration::from_nanos(n.get())),
            Some(MAX_GATE_INTERVAL),
            "capped, not a panic"
        );
    }

    #[test]
    fn a_subscribers_interval_keeps_its_nanoseconds() {
        for (given, kept) in [
            (None, None),
            (
                Some(Duration::from_millis(250)),
                Some(Duration::from_millis(250)),
            ),
            (
                Some(Duration::from_nanos(1_500)),
                Some(Duration::from_nanos(1_500)),
            ),
            // max_hz has no upper bound: a zero interval still gates.
            (Some(Duration::ZERO), Some(Duration::from_nanos(1))),
            (Some(Duration::MAX), Some(Duration::from_nanos(u64::MAX))),
        ] {
            let o = Engine::new(EngineConfig::default()).new_outbox();
            assert_eq!(Sub::new(&o, given).interval(), kept, "{given:?}");
        }
    }

    #[test]
    fn an_outbox_knows_its_connection_once_connected() {
        let e = Engine::new(EngineConfig::default());
        let o = e.new_outbox();
        assert_eq!(o.conn(), None);
        e.connect(ConnId(7), o.clone());
        assert_eq!(o.conn(), Some(ConnId(7)));
    }

    /// Every connection's recorded position points at itself in each
    /// topic it holds, and every subscriber of a topic holds it.
    fn assert_positions_in_step(e: &Engine) {
        let reg = e.reg.read();
        let mut held = 0;
        for (conn, cs) in reg.conns.iter() {
            for (id, r) in cs.topics.iter() {
                let s = reg.slots[id.0 as usize].inner.lock();
                assert!(r.refs > 0);
                assert_eq!(s.subs[r.pos as usize].conn(), *conn, "{conn:?} in {id:?}");
                held += 1;
            }
        }
        let subs: usize = reg.slots.iter().map(|s| s.inner.lock().subs.len()).sum();
        assert_eq!(subs, held);
    }

    /// Subscribes, unsubscribes and disconnects in a long pseudo-random
    /// mix (exact and wildcard patterns, topics created on the way), and
    /// checks after each step that positions are in step and that a tick
    /// reaches exactly the connections whose patterns match it.
    #[test]
    fn subscriber_positions_stay_in_step_through_any_mix_of_changes() {
        let e = Engine::new(EngineConfig::default());
        let pats = ["t.a", "t.b", "t.c", "t.*", "t.>", "u.a", "u.*"];
        let topics = ["t.a", "t.b", "t.c", "t.d", "u.a", "u.b"];
        let mut outboxes: HashMap<u64, Arc<Outbox>> = HashMap::new();
        let mut held: HashMap<u64, HashSet<&str>> = HashMap::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for step in 0..3000 {
            let c = next(12);
            let pat = pats[next(pats.len() as u64) as usize];
            match next(10) {
                0..=4 => {
                    let o = outboxes.entry(c).or_insert_with(|| conn(&e, c)).clone();
                    e.subscribe(ConnId(c), &req(&[pat]), reply).unwrap();
                    take(&o);
                    held.entry(c).or_default().insert(pat);
                }
                5..=7 => {
                    e.unsubscribe(ConnId(c), &[Pattern::parse(pat).unwrap()]);
                    if let Some(h) = held.get_mut(&c) {
                        h.remove(pat);
                    }
                }
                8 => {
                    e.disconnect(ConnId(c));
                    outboxes.remove(&c);
                    held.remove(&c);
                }
                _ => {
                    let topic = topics[next(topics.len() as u64) as usize];
                    e.publish(&t(topic), b"{}").unwrap();
                    for (c, o) in &outboxes {
                        let want = held.get(c).is_some_and(|h| {
                            h.iter().any(|p| Pattern::parse(p).unwrap().matches(topic))
                        });
                        let got = take(o);
                        assert_eq!(
                            got.len(),
                            usize::from(want),
                            "step {step}: {c} {topic} {got:?}"
                        );
                    }
                }
            }
            assert_positions_in_step(&e);
        }
    }

    /// A topic's max_hz gate holds tick 2; then a pattern without max_hz
    /// makes the topic every-tick and tick 3 goes straight out. The held
    /// tick 2 must never follow it: max_hz means "always the newest value,
    /// never an old one" (PROTOCOL.md).
    #[test]
    fn a_tick_held_by_max_hz_never_comes_after_a_newer_one() {
        let e = Engine::new(EngineConfig::default());
        let o = conn(&e, 1);
        let seqs = |o: &Outbox| -> Vec<u64> {
            take(o)
                .iter()
                .filter_map(|f| {
                    let at = f.find(r#""seq":"#)? + 6;
                    let end = at + f[at..].find(',')?;
                    f[at..end].parse().ok()
                })
                .collect()
        };
        let mut gated = req(&["fx.EUR"]);
        gated.max_hz = Some(1.0);
        gated.snapshot = false;
        e.subscribe(ConnId(1), &gated, reply).unwrap();
        e.publish(&t("fx.EUR"), br#"{"p":1}"#).unwrap();
        e.publish(&t("fx.EUR"), br#"{"p":2}"#).unwrap();
        assert_eq!(seqs(&o), [1], "2 waits in the gate");
        let mut every = req(&["fx.*"]);
        every.snapshot = false;
        e.subscribe(ConnId(1), &every, reply).unwrap();
        e.publish(&t("fx.EUR"), br#"{"p":3}"#).unwrap();
        // The writer releases the gates when their time comes.
        o.release_gates_at(Instant::now() + Duration::from_secs(2));
        let got = seqs(&o);
        assert!(
            got.windows(2).all(|w| w[0] < w[1]) && got.last() == Some(&3),
            "in seq order, ending on the newest: {got:?}"
        );
    }

    /// A topic named in `since` with a seq the client saw, that this broker
    /// does not have, was not recovered, if the request's patterns match it;
    /// one they do not match, or one the client saw nothing of, changes
    /// nothing.
    #[test]
    fn a_since_topic_the_broker_does_not_have_is_not_recovered() {
        let e = Engine::new(EngineConfig::default());
        e.publish(&t("a.here"), b"{}").unwrap();
        let o = conn(&e, 1);
        for (gone, seq, want) in [
            ("a.gone", 5, "subscribed Some(false)"),
            ("b.gone", 5, "subscribed Some(true)"),
            ("a.gone", 0, "subscribed Some(true)"),
        ] {
            let mut r = req(&["a.*"]);
            r.epoch = Some(e.epoch().to_owned());
            r.since = vec![(t("a.here"), 1), (t(gone), seq)];
            e.subscribe(ConnId(1), &r, reply).unwrap();
            assert_eq!(take(&o)[0], want, "{gone} {seq}");
        }
    }

    #[test]
    fn disconnect_removes_everything() {
        let e = Engine::new(EngineConfig::default());
        let _o = conn(&e, 1);
        e.subscribe(ConnId(1), &req(&["a", "b.*"]), reply).unwrap();
        e.publish(&t("a"), b"{}").unwrap();
        e.disconnect(ConnId(1));
        e.publish(&t("b.x"), b"{}").unwrap();
        assert_eq!(e.topics()[0].subscribers, 0);
        assert_eq!(e.topics()[1].subscribers, 0);
        assert_eq!(e.subscription_counts(), (0, 0));
    }

    #[test]
    fn max_topics_bounds_the_registry() {
        let e = Engine::new(EngineConfig {
            max_topics: 1,
            ..Default::default()
        });
        e.publish(&t("a"), b"{}").unwrap();
        assert_eq!(
            e.publish(&t("b"), b"{}"),
            Err(PublishError::TooManyTopics(1))
        );
    }

    #[test]
    fn create_topics_creates_all_or_none() {
        let e = Engine::new(EngineConfig {
            max_topics: 3,
            ..Default::default()
        });
        e.publish(&t("a"), b"{}").unwrap();
        // Two new (b twice) and one held: fits in 3.
        e.create_topics([&t("b"), &t("a"), &t("b"), &t("c")])
            .unwrap();
        assert_eq!(e.topic_count(), 3);
        assert!(e.has_topic(&t("c")));
        // A new topic created without a value: no tick yet.
        assert_eq!(e.snapshot(&[t("c")]).len(), 0);
        let e = Engine::new(EngineConfig {
            max_topics: 2,
            ..Default::default()
        });
        e.publish(&t("a"), b"{}").unwrap();
        assert_eq!(
            e.create_topics([&t("b"), &t("c")]),
            Err(PublishError::TooManyTopics(2))
        );
        assert_eq!(e.topic_count(), 1, "none of them was created");
    }

    #[test]
    fn remote_ticks_keep_their_epoch_seq_and_ts() {
        let e = Engine::new(EngineConfig {
            frames_carry_epoch: true,
            ..Default::default()
        });
        let o = conn(&e, 1);
        e.subscribe(ConnId(1), &req(&["r.*"]), reply).unwrap();
        let a = t("r.a");
        assert_eq!(
            e.apply_remote(&a, "nodeA", 7, 1000, b"{}").unwrap(),
            RemoteOutcome::Applied
        );
        assert_eq!(
            e.apply_remote(&a, "nodeA", 7, 1000, b"{}").unwrap(),
            RemoteOutcome::Duplicate
        );
        assert_eq!(
            e.apply_remote(&a, "nodeA", 10, 1001, b"{}").unwrap(),
            RemoteOutcome::Gap { missed: 2 }
        );
        let got = take(&o);
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[1],
            r#"{"type":"tick","topic":"r.a","epoch":"nodeA","seq":7,"ts":1000,"data":{}}"#
        );
        // A local publish takes the topic over into this node's epoch, seq going on.
        let p = e.publish(&a, b"{}").unwrap();
        assert_eq!(p.seq, 11);
        assert!(take(&o)[0].contains(&format!(r#""epoch":"{}","seq":11"#, e.epoch())));
        assert_eq!(
            e.stats().epoch_conflicts.load(Ordering::Relaxed),
            1,
            "A published a moment ago"
        );
        assert!(matches!(
            e.apply_remote(&a, "nodeA", 12, 1002, b"{}").unwrap(),
            RemoteOutcome::NewEpoch { conflict: true }
        ));
    }

    #[test]
    fn the_replicator_sees_local_ticks_in_order_and_not_remote_ones() {
        let e = Engine::new(EngineConfig::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        e.set_replicator(Box::new(move |r| {
            s2.lock().push((
                r.topic.to_string(),
                r.epoch.to_owned(),
                r.seq,
                r.data.to_vec(),
            ))
        }))
        .map_err(|_| ())
        .unwrap();
        e.publish(&t("x"), br#"{"a":1}"#).unwrap();
        e.apply_remote(&t("y"), "peer", 1, 5, b"{}").unwrap();
        e.publish(&t("x"), br#"{"a":2}"#).unwrap();
        let seen = seen.lock();
        assert_eq!(seen.len(), 2);
        assert_eq!((seen[0].2, seen[1].2), (1, 2));
        assert_eq!(seen[0].1, e.epoch());
        assert_eq!(seen[1].3, br#"{"a":2}"#.to_vec());
    }

    #[test]
    fn recovery_uses_the_topics_own_epoch() {
        let e = Engine::new(EngineConfig::default());
        for seq in 1..=5 {
            e.apply_remote(&t("c.a"), "nodeA", seq, seq, b"{}").unwrap();
        }
        let o = conn(&e, 1);
        let mut r = req(&["c.a"]);
        r.epochs = vec![(t("c.a"), "nodeA".into())];
        r.since = vec![(t("c.a"), 3)];
        e.subscribe(ConnId(1), &r, reply).unwrap();
        let got = take(&o);
        assert_eq!(got[0], "subscribed Some(true)");
        assert_eq!(got.len(), 3, "seq 4 and 5 replayed: {got:?}");
        let o2 = conn(&e, 2);
        r.epochs = vec![(t("c.a"), "nodeB".into())];
        e.subscribe(ConnId(2), &r, reply).unwrap();
        assert_eq!(take(&o2)[0], "subscribed Some(false)");
    }

    #[test]
    fn recovery_never_replays_across_a_lost_remote_tick_or_an_old_epoch() {
        let e = Engine::new(EngineConfig::default());
        for seq in [1, 2, 5, 6] {
            e.apply_remote(&t("g"), "nodeA", seq, seq, b"{}").unwrap();
        }
        let recover = |id: u64, epoch: &str, since: u64| {
            let o = conn(&e, id);
            let mut r = req(&["g"]);
            r.epochs = vec![(t("g"), epoch.into())];
            r.since = vec![(t("g"), since)];
            e.subscribe(ConnId(id), &r, reply).unwrap();
            take(&o)
        };
        assert_eq!(
            recover(1, "nodeA", 2)[0],
            "subscribed Some(false)",
            "3 and 4 were lost"
        );
        assert_eq!(recover(2, "nodeA", 5).len(), 2, "after the hole: replays 6");
        // nodeA restarted as nodeA2: its seqs start again at 1.
        e.apply_remote(&t("g"), "nodeA2", 1, 7, b"{}").unwrap();
        e.apply_remote(&t("g"), "nodeA2", 2, 8, b"{}").unwrap();
        let got = recover(3, "nodeA2", 1);
        assert_eq!(got.len(), 2, "only nodeA2's seq 2: {got:?}");
        assert!(got[1].contains(r#""seq":2,"ts":8"#));
    }

    /// A repeat (a quiet topic's last tick, sent again by its node) fills in
    /// the tail of the epoch held, or a topic with no value; once the topic
    /// has moved to another epoch it is dropped, whatever its seq and ts.
    #[test]
    fn a_repeat_only_fills_in_the_epoch_it_belongs_to() {
        let e = Engine::new(EngineConfig::default());
        let data = |v: &str| format!(r#"{{"p":"{v}"}}"#);
        let last = |topic: &str| e.snapshot(&[t(topic)])[0].clone();
        // Lost 99 and 100 of nodeA's epoch: the repeat of 100 brings the value.
        for seq in 1..=98 {
            e.apply_remote(&t("x"), "nodeA", seq, 1000 + seq, b"{}")
                .unwrap();
        }
        assert_eq!(
            e.apply_repeat(&t("x"), "nodeA", 100, 1100, data("a100").as_bytes()),
            Ok(RemoteOutcome::Gap { missed: 1 })
        );
        assert_eq!(
            (last("x").seq, &last("x").data[..]),
            (100, data("a100").as_bytes())
        );
        // Had it already: a duplicate.
        assert_eq!(
            e.apply_repeat(&t("x"), "nodeA", 100, 1100, data("a100").as_bytes()),
            Ok(RemoteOutcome::Duplicate)
        );
        // The topic moved to nodeB (its seq going on from what this node
        // had: 98, as 99 and 100 of nodeA were lost). nodeA's repeat of 100,
        // a higher seq with an older ts, must not bring the old price back,
        // nor count a conflict.
        for seq in 1..=98 {
            e.apply_remote(&t("y"), "nodeA", seq, 1000 + seq, b"{}")
                .unwrap();
        }
        e.apply_remote(&t("y"), "nodeB", 99, 2000, data("b99").as_bytes())
            .unwrap();
        let conflicts = e.stats().epoch_conflicts.load(Ordering::Relaxed);
        assert_eq!(
            e.apply_repeat(&t("y"), "nodeA", 100, 1100, data("a100").as_bytes()),
            Ok(RemoteOutcome::Duplicate)
        );
        // Nor with nodeA's clock ahead (a later ts than nodeB's value).
        assert_eq!(
            e.apply_repeat(&t("y"), "nodeA", 98, 5000, data("a98").as_bytes()),
            Ok(RemoteOutcome::Duplicate)
        );
        assert_eq!((&*last("y").epoch, last("y").seq), ("nodeB", 99));
        assert_eq!(&last("y").data[..], data("b99").as_bytes());
        assert_eq!(e.stats().epoch_conflicts.load(Ordering::Relaxed), conflicts);
        // A topic this node never had: the repeat creates it.
        assert_eq!(
            e.apply_repeat(&t("z"), "nodeA", 7, 1007, data("a7").as_bytes()),
            Ok(RemoteOutcome::Applied)
        );
        assert_eq!(last("z").seq, 7);
    }

    /// An engine with a 4 KiB soft limit, and a tick's data of about 50 bytes.
    fn soft_limit_4k() -> (Engine, String) {
        let e = Engine::new(EngineConfig {
            outbox: OutboxConfig {
                soft_limit_bytes: 4096,
                ..OutboxConfig::default()
            },
            ..EngineConfig::default()
        });
        (e, format!(r#"{{"pad":"{}"}}"#, "x".repeat(40)))
    }

    /// A recovery of `p` from this broker's epoch, having seen `since`.
    fn recovering(e: &Engine, p: &[&str], since: &[(&str, u64)]) -> SubscribeRequest {
        let mut r = req(p);
        r.epoch = Some(e.epoch().to_owned());
        r.since = since.iter().map(|(n, q)| (t(n), *q)).collect();
        r
    }

    #[test]
    fn a_replay_too_big_for_the_soft_limit_is_not_reported_recovered() {
        // Defaults but for the outbox's soft limit: 100 replayed ticks of
        // about 100 bytes do not fit under 4 KiB, so the outbox conflates
        // while the subscribe holds its writer back.
        let (e, data) = soft_limit_4k();
        for _ in 0..100 {
            e.publish(&t("r"), data.as_bytes()).unwrap();
        }
        let o = conn(&e, 1);
        let r = recovering(&e, &["r"], &[("r", 0)]);
        e.subscribe(ConnId(1), &r, reply).unwrap();
        let got = take(&o);
        let ticks = got
            .iter()
            .filter(|f| f.contains(r#""type":"tick""#))
            .count();
        assert!(
            got[0] == "subscribed Some(false)" || ticks == 100,
            "{} said while only {ticks} of the 100 missed ticks were queued",
            got[0]
        );
        assert!(
            got.last().unwrap().contains(r#""seq":100,"#),
            "ends on the newest"
        );
    }

    #[test]
    fn a_topic_not_named_in_since_is_replayed_from_seq_1_or_not_recovered() {
        let e = Engine::new(EngineConfig {
            history_per_topic: 4,
            ..EngineConfig::default()
        });
        e.publish(&t("c.a"), br#"{"n":1}"#).unwrap();
        for n in 1..=3 {
            e.publish(&t("c.b"), format!(r#"{{"n":{n}}}"#).as_bytes())
                .unwrap();
        }
        for n in 1..=6 {
            e.publish(&t("c.x"), format!(r#"{{"n":{n}}}"#).as_bytes())
                .unwrap();
        }
        // Reconnects naming only c.a in `since`: the reply, then `other`'s frames.
        let recover = |id: u64, other: &str| {
            let r = recovering(&e, &["c.a", other], &[("c.a", 1)]);
            let o = conn(&e, id);
            e.subscribe(ConnId(id), &r, reply).unwrap();
            let got = take(&o);
            let others: Vec<String> = got.iter().filter(|f| f.contains(other)).cloned().collect();
            (got[0].clone(), others)
        };
        // c.b was born while away: its whole history is held, so it is
        // replayed from seq 1 and the reply may say true.
        let (said, b) = recover(1, "c.b");
        assert_eq!(said, "subscribed Some(true)", "{b:?}");
        assert_eq!(b.len(), 3, "{b:?}");
        assert!(b.iter().all(|f| f.contains(r#""type":"tick""#)), "{b:?}");
        // c.x's seq 1 and 2 are gone from its history of 4: a snapshot, false.
        let (said, x) = recover(2, "c.x");
        assert_eq!(said, "subscribed Some(false)", "{x:?}");
        assert_eq!(x.len(), 1, "{x:?}");
        assert!(x[0].contains(r#""type":"snapshot""#) && x[0].contains(r#""seq":6,"#));
    }

    #[test]
    fn an_older_tick_of_another_epoch_never_replaces_a_newer_value() {
        // Publisher failover: node B's last tick (queued on B, still draining
        // to NATS) reaches this node after node A took the topic over.
        let e = Engine::new(EngineConfig {
            frames_carry_epoch: true,
            ..EngineConfig::default()
        });
        for seq in 1..=9 {
            e.apply_remote(&t("f"), "nodeB", seq, 1000 + seq, br#"{"p":"b"}"#)
                .unwrap();
        }
        e.apply_remote(&t("f"), "nodeA", 10, 2000, br#"{"p":"a10"}"#)
            .unwrap();
        let o = conn(&e, 1);
        e.subscribe(ConnId(1), &req(&["f"]), reply).unwrap();
        take(&o);
        // B's seq 10, accepted on B before A's seq 10: older than what is held.
        e.apply_remote(&t("f"), "nodeB", 10, 1010, br#"{"p":"b10"}"#)
            .unwrap();
        let s = e.snapshot(&[t("f")]);
        assert_eq!(
            (&*s[0].epoch, s[0].ts, &s[0].data[..]),
            ("nodeA", 2000, &br#"{"p":"a10"}"#[..]),
            "the last value went back to an older tick"
        );
        assert!(
            take(&o).is_empty(),
            "an older price was delivered after a newer one"
        );
    }

    #[test]
    fn an_epoch_never_reuses_a_seq_for_another_tick() {
        // This node published seq 1..=3; a restarted peer (new epoch, seqs
        // from 1) published the topic once; this node publishes again.
        let e = Engine::new(EngineConfig::default());
        for n in 1..=3 {
            e.publish(&t("s"), format!(r#"{{"n":{n}}}"#).as_bytes())
                .unwrap();
        }
        let later = tickwire_proto::now_ms() + 1_000;
        e.apply_remote(&t("s"), "peer2", 1, later, br#"{"n":"peer"}"#)
            .unwrap();
        let p = e.publish(&t("s"), br#"{"n":"new"}"#).unwrap();
        // A client that saw the old seq 2 of this epoch and nothing since.
        let o = conn(&e, 1);
        let r = recovering(&e, &["s"], &[("s", 2)]);
        e.subscribe(ConnId(1), &r, reply).unwrap();
        let got = take(&o);
        assert!(
            got[0] == "subscribed Some(false)" || got.last().unwrap().contains(r#""n":"new""#),
            "recovered without the newest value: {got:?}"
        );
        assert!(p.seq > 3, "seq {} of this epoch was given out twice", p.seq);
    }

    #[test]
    fn a_replay_conflated_by_the_frames_queued_after_it_is_not_reported_recovered() {
        let (e, data) = soft_limit_4k();
        // r1's replay fits under the soft limit; r2's snapshot then passes it.
        for _ in 0..30 {
            e.publish(&t("r1"), data.as_bytes()).unwrap();
        }
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2000));
        e.publish(&t("r2"), big.as_bytes()).unwrap();
        let o = conn(&e, 1);
        let r = recovering(&e, &["r1", "r2"], &[("r1", 0)]);
        e.subscribe(ConnId(1), &r, reply).unwrap();
        let got = take(&o);
        let ticks = got
            .iter()
            .filter(|f| f.contains(r#""type":"tick","topic":"r1""#))
            .count();
        assert!(
            got[0] == "subscribed Some(false)" || ticks == 30,
            "{} said while only {ticks} of r1's 30 missed ticks were queued",
            got[0]
        );
    }
}
