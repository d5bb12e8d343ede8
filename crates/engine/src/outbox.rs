//! One connection's pending frames and its buffered amount
//! (PROTOCOL.md "Backpressure and slow consumers").
//!
//! The publisher side pushes; the connection's writer task drains everything at
//! once, writes it, and reports the bytes written. The buffered amount is what
//! is queued plus what the writer has taken and not yet written.
//!
//! * up to `soft_limit_bytes`: every frame is kept (lossless);
//! * above it: conflation, the newest pending tick per topic is kept and older
//!   ones are dropped and counted; control frames are never dropped;
//! * above `hard_limit_bytes`, or above the soft limit for `slow_timeout_ms`:
//!   the outbox is marked slow, dropped, and the writer closes with 4001.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use parking_lot::Mutex;

use crate::idhash::IdMap;
use crate::stats::EngineStats;
use crate::{ConnId, TopicId};

/// Limits of one connection's buffered amount.
#[derive(Debug, Clone, Copy)]
pub struct OutboxConfig {
    pub soft_limit_bytes: usize,
    pub hard_limit_bytes: usize,
    pub slow_timeout_ms: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            soft_limit_bytes: 262_144,
            hard_limit_bytes: 4_194_304,
            slow_timeout_ms: 10_000,
        }
    }
}

/// Why an outbox gave up on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowReason {
    /// Over `hard_limit_bytes`.
    HardLimit,
    /// Over `soft_limit_bytes` for longer than `slow_timeout_ms`.
    SoftTimeout,
    /// A batched direct write failed with its outcome unknown (the socket
    /// may hold part of a frame, or all of it): the connection is reset, as
    /// nothing sent after it could be trusted.
    SendLost,
}

/// `topic` of a control frame: never conflated.
const CONTROL: u32 = u32::MAX;
/// `topic` of the unwritten rest of a frame a direct write began: bytes for
/// the wire as they are, before anything else.
const RAW: u32 = u32::MAX - 1;

/// A pending-frames vector this small (a quiet connection's) is given back
/// once emptied, by the writer and by direct writes, so that an idle
/// connection holds none; a busy connection's larger one is kept for reuse.
/// Direct writes keep even a small one while ticks flow, so that a tick to
/// an idle subscriber allocates nothing: [`Outbox::trim_quiet`] gives it
/// back once a heartbeat interval passes without one.
pub const QUIET_QUEUE_ENTRIES: usize = 4;

/// What a [`DirectSink`] wrote of the entries it was given.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DirectWritten {
    /// Entries from the front that are done: wholly on the socket, or (the
    /// last of them, when `rest` is set) begun.
    pub entries: usize,
    /// The unwritten wire bytes (header included) of the entry cut short.
    pub rest: Option<Bytes>,
}

/// A connection's socket, for writing from the publishing task while the
/// connection's writer task is idle.
///
/// A publishing task *corks* ([`cork`]) while it handles the messages of one
/// read; the outboxes it fills are then written at [`uncork`], everything
/// pending on each in one non-blocking `send`. At low rates a delivery is one
/// `send` instead of a task wake-up, a task switch and the `send`; at high
/// rates the frames of a whole read still go out together
/// (docs/performance.md).
pub trait DirectSink: Send + Sync + std::fmt::Debug {
    /// Writes `entries` (frames; [`Entry::is_raw`] ones as they are) without blocking.
    fn try_write(&self, entries: &[Entry]) -> DirectWritten;

    /// This sink in a form that can share one system call with others
    /// ([`uncork_with`]), if it has one.
    fn batch(&self) -> Option<&dyn BatchSink> {
        None
    }
}

/// A [`DirectSink`] whose writes can go out in a batch ([`BatchSend`]).
pub trait BatchSink {
    /// The socket's file descriptor, open as long as the sink lives.
    fn fd(&self) -> i32;
    /// Appends the wire bytes of `entries` to `out`: what
    /// [`DirectSink::try_write`] would send.
    fn layout(&self, entries: &[Entry], out: &mut Vec<u8>);
    /// The first `n` of `bytes` (laid out from `entries`) reached the socket:
    /// counts them and says which entries are done.
    fn wrote(&self, entries: &[Entry], bytes: &[u8], n: usize) -> DirectWritten;
}

/// Sends to many sockets at once, without blocking: at [`uncork_with`] the
/// direct writes of one read share a system call instead of taking one each.
pub trait BatchSend {
    /// The most sends [`BatchSend::send`] takes at once.
    fn max_batch(&self) -> usize;
    /// Where the bytes of the next batch are laid out (empty at the start of
    /// each batch).
    fn buf(&mut self) -> &mut Vec<u8>;
    /// Writes `buf()[range]` to each `(fd, range)`, without blocking, and
    /// pushes to `written`, in order, how many bytes each took (0 for none
    /// or an error: the connection's writer finds out), or `None` when that
    /// is unknown (the batch failed midway; the connection is then reset).
    fn send(&mut self, sends: &[(i32, std::ops::Range<usize>)], written: &mut Vec<Option<usize>>);
}

/// Pending bytes over this go to the writer task, not a direct write.
const DIRECT_MAX_BYTES: usize = 64 * 1024;

#[derive(Default)]
struct Cork {
    on: bool,
    pending: Vec<Arc<Outbox>>,
}

thread_local! {
    static CORK: RefCell<Cork> = RefCell::default();
}

/// Until [`uncork`], writer wake-ups on this thread are deferred (when the
/// connection has a [`DirectSink`]). Call only where nothing awaits before the
/// matching [`uncork`].
pub fn cork() {
    CORK.with(|c| c.borrow_mut().on = true);
}

/// [`cork`] until the guard is dropped (then [`uncork`]), also on a panic.
#[must_use = "uncorks when dropped"]
pub struct Corked(());

impl Drop for Corked {
    fn drop(&mut self) {
        uncork();
    }
}

/// [`cork`], with a guard that uncorks when dropped.
pub fn corked() -> Corked {
    cork();
    Corked(())
}

/// Ends [`cork`]: writes what the deferred outboxes hold directly, or wakes
/// their writers.
pub fn uncork() {
    uncork_with(None);
}

/// [`uncork`], with the direct writes sent through `batch` (when more than
/// one is due, and for sinks that have a [`DirectSink::batch`] form).
/// Returns how many batches were sent.
pub fn uncork_with(batch: Option<&mut dyn BatchSend>) -> usize {
    let mut pending = CORK.with(|c| {
        let mut c = c.borrow_mut();
        c.on = false;
        std::mem::take(&mut c.pending)
    });
    let batches = match batch {
        Some(b) if pending.len() > 1 => flush_batched(&pending, b),
        _ => {
            for o in &pending {
                o.flush_deferred();
            }
            0
        }
    };
    pending.clear();
    // Keep the list's memory for the next read.
    CORK.with(|c| {
        let mut c = c.borrow_mut();
        if c.pending.is_empty() && pending.capacity() > 0 {
            c.pending = pending;
        }
    });
    batches
}

/// Where a batch's sends and their results are listed, kept per thread.
#[derive(Default)]
struct BatchLists {
    sends: Vec<(i32, std::ops::Range<usize>)>,
    written: Vec<Option<usize>>,
}

thread_local! {
    static BATCH_LISTS: RefCell<BatchLists> = RefCell::default();
}

/// The deferred outboxes' direct writes, up to `max_batch` per system call.
///
/// Each outbox in a batch stays locked from its layout until its result is
/// applied, so that its writer cannot wake in between and write too. Locks
/// are only tried: another thread may be batching outboxes of its own, and
/// there is no order between outboxes to lock them in. One that is busy is
/// flushed on its own afterwards.
fn flush_batched(pending: &[Arc<Outbox>], b: &mut dyn BatchSend) -> usize {
    BATCH_LISTS.with(|lists| {
        let lists = &mut *lists.borrow_mut();
        let max = b.max_batch().max(1);
        let mut later: Vec<&Outbox> = Vec::new();
        let mut held: Vec<(&Outbox, parking_lot::MutexGuard<'_, State>)> =
            Vec::with_capacity(max.min(pending.len()));
        let mut batches = 0;
        let mut rest = pending.iter();
        loop {
            lists.sends.clear();
            b.buf().clear();
            let mut more = false;
            for o in rest.by_ref() {
                let Some(mut st) = o.state.try_lock() else {
                    later.push(o);
                    continue;
                };
                if !st.woken {
                    // The writer woke for something else and took the frames.
                    continue;
                }
                match direct_check(&st) {
                    Direct::No => {
                        drop(st);
                        o.notify();
                        continue;
                    }
                    Direct::Empty => {
                        st.woken = false;
                        continue;
                    }
                    Direct::Go => {}
                }
                let Some(bs) = st.sink.as_ref().and_then(|s| s.batch()) else {
                    o.finish_deferred(st);
                    continue;
                };
                let buf = b.buf();
                let start = buf.len();
                bs.layout(&st.queue, buf);
                lists.sends.push((bs.fd(), start..buf.len()));
                held.push((o, st));
                if held.len() == max {
                    more = true;
                    break;
                }
            }
            if !held.is_empty() {
                lists.written.clear();
                b.send(&lists.sends, &mut lists.written);
                batches += 1;
                let buf = b.buf();
                for (i, (o, mut st)) in held.drain(..).enumerate() {
                    let (Some(Some(n)), Some(bytes)) = (
                        lists.written.get(i).copied(),
                        buf.get(lists.sends[i].1.clone()),
                    ) else {
                        o.mark_slow(&mut st, SlowReason::SendLost);
                        st.mid_frame = true;
                        drop(st);
                        o.notify();
                        continue;
                    };
                    let w = match st.sink.as_ref().and_then(|s| s.batch()) {
                        Some(bs) => bs.wrote(&st.queue, bytes, n.min(bytes.len())),
                        None => DirectWritten::default(),
                    };
                    if apply_direct(&mut st, w) {
                        st.woken = false;
                    } else {
                        drop(st);
                        o.notify();
                    }
                }
            }
            if !more {
                break;
            }
        }
        for o in later {
            o.flush_deferred();
        }
        batches
    })
}

/// Whether an outbox's pending frames may be written directly.
enum Direct {
    /// No: the writer must do it.
    No,
    /// Yes, and nothing is pending.
    Empty,
    Go,
}

fn direct_check(st: &State) -> Direct {
    // max_hz gates are timed by the writer: it must hear of every push.
    if !st.writer_idle
        || st.ctl_hold
        || st.held > 0
        || st.conflating
        || st.slow.is_some()
        || st.closed
        || !st.gates.is_empty()
        || st.queued_bytes > DIRECT_MAX_BYTES
        || st.sink.is_none()
    {
        Direct::No
    } else if st.queue.is_empty() {
        Direct::Empty
    } else {
        Direct::Go
    }
}

/// Takes what a direct write wrote off the queue; returns true when nothing
/// is left for the writer.
fn apply_direct(st: &mut State, w: DirectWritten) -> bool {
    let done: usize = st.queue.drain(..w.entries).map(|e| e.wire_len()).sum();
    st.queued_bytes -= done;
    if st.queue.is_empty() && st.queue.capacity() <= QUIET_QUEUE_ENTRIES && !st.ticked {
        // A connection that only got replies holds no queue while idle; one
        // that gets ticks keeps it until `Outbox::trim_quiet`.
        st.queue = Vec::new();
    }
    if let Some(rest) = w.rest {
        st.queued_bytes += rest.len();
        st.queue.insert(
            0,
            Entry {
                topic: RAW,
                frame: rest,
            },
        );
    }
    st.queue.is_empty()
}

/// One pending frame. A tick whose `frame` is empty was conflated away (a tombstone).
#[derive(Debug, Clone)]
pub struct Entry {
    topic: u32,
    /// The JSON text of the frame.
    pub frame: Bytes,
}

impl Entry {
    fn is_tombstone(&self) -> bool {
        self.frame.is_empty()
    }

    /// A control frame or raw bytes: never conflated.
    fn is_control(&self) -> bool {
        self.topic >= RAW
    }

    /// Wire bytes to write as they are (no frame header): the rest of a frame
    /// whose beginning a direct write sent.
    pub fn is_raw(&self) -> bool {
        self.topic == RAW
    }

    /// Bytes this entry takes on the wire (none for a tombstone).
    pub fn wire_len(&self) -> usize {
        if self.is_raw() || self.frame.is_empty() {
            self.frame.len()
        } else {
            wire_len(self.frame.len())
        }
    }
}

/// Bytes a text frame of `len` payload bytes takes on the wire (server frames are unmasked).
pub fn wire_len(len: usize) -> usize {
    len + if len < 126 {
        2
    } else if len < 65_536 {
        4
    } else {
        10
    }
}

/// max_hz state of one topic on one connection.
#[derive(Debug)]
struct Gate {
    interval: Duration,
    /// Earliest time the next frame may be queued.
    next_at: Instant,
    /// Newest frame held back until `next_at`.
    pending: Option<Bytes>,
}

#[derive(Debug, Default)]
struct State {
    queue: Vec<Entry>,
    queued_bytes: usize,
    inflight_bytes: usize,
    conflating: bool,
    /// topic -> index in `queue` of its newest pending tick; kept only while conflating.
    latest: IdMap<u32, usize>,
    tombstones: usize,
    over_soft_since: Option<Instant>,
    slow: Option<SlowReason>,
    closed: bool,
    /// While > 0 the writer takes nothing: a subscribe is placing its reply first.
    held: u32,
    /// A wake-up has been sent and not yet consumed by a drain.
    woken: bool,
    gates: IdMap<u32, Gate>,
    max_buffered: usize,
    /// The writer task is waiting and not touching the socket: a frame may be
    /// written through `sink` directly.
    writer_idle: bool,
    sink: Option<Arc<dyn DirectSink>>,
    /// Marked slow while the rest of a direct write was still queued.
    mid_frame: bool,
    /// The reader handed the writer a frame (a Pong) that later frames must
    /// not overtake: no direct writes until the writer has taken it.
    ctl_hold: bool,
    /// A tick was queued since the last [`Outbox::trim_quiet`].
    ticked: bool,
}

/// One connection's queue of frames; shared by the engine (producer) and the
/// connection's writer (consumer).
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    /// The writer's wake-up: a flag plus the waker of the one task that waits
    /// (cheaper per delivery than a `tokio::sync::Notify` and its waiter list).
    signal: AtomicBool,
    waker: AtomicWaker,
    /// Itself, for the cork list.
    me: Weak<Outbox>,
    /// The connection it belongs to ([`NO_CONN`] until
    /// [`crate::Engine::connect`] names it): a topic's subscriber list holds
    /// only outboxes, and finds a connection's entry in the registry by it.
    conn: AtomicU64,
    /// Limits and counters, one copy per engine: every connection lives
    /// as long as its outbox, so each byte here is a byte per connection.
    shared: Arc<Shared>,
}

/// What the outboxes of one engine share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: OutboxConfig,
    pub(crate) stats: Arc<EngineStats>,
}

/// [`Outbox::conn`] of an outbox no engine has registered.
const NO_CONN: u64 = u64::MAX;

/// What a writer took from the outbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Drain {
    /// Frames were moved into the caller's vector (maybe none).
    Frames,
    /// The connection is a slow consumer: close it with 4001.
    Slow(SlowReason),
    /// The same, but the socket holds part of a frame: reset it, as no Close
    /// frame can follow.
    SlowMidFrame(SlowReason),
}

impl Outbox {
    pub fn new(cfg: OutboxConfig, stats: Arc<EngineStats>) -> Arc<Outbox> {
        Outbox::with_shared(Arc::new(Shared { cfg, stats }))
    }

    pub(crate) fn with_shared(shared: Arc<Shared>) -> Arc<Outbox> {
        Arc::new_cyclic(|me| Outbox {
            state: Mutex::new(State::default()),
            signal: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            me: me.clone(),
            conn: AtomicU64::new(NO_CONN),
            shared,
        })
    }

    /// The connection this outbox was registered for (`None` before).
    pub fn conn(&self) -> Option<ConnId> {
        match self.conn.load(Ordering::Relaxed) {
            NO_CONN => None,
            id => Some(ConnId(id)),
        }
    }

    pub(crate) fn set_conn(&self, conn: ConnId) {
        self.conn.store(conn.0, Ordering::Relaxed);
    }

    /// Waits until there may be something to drain.
    ///
    /// # Cancel safety
    /// Cancel safe: a wake-up that is not consumed stays stored.
    pub async fn notified(&self) {
        std::future::poll_fn(|cx| self.poll_notified(cx)).await
    }

    /// Polls for a wake-up; one task at a time may wait.
    pub fn poll_notified(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.signal.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.signal.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Ready(());
        }
        std::task::Poll::Pending
    }

    fn notify(&self) {
        self.signal.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Wakes the writer whatever the queue holds: for requests that travel
    /// beside it (a Pong, a close, the broker's shutdown). The writer looks
    /// at everything on each wake-up.
    pub fn wake_writer(&self) {
        self.notify();
    }

    /// Queues a control frame (reply, status): never conflated or dropped while the
    /// connection lives. It still counts toward the buffered amount.
    pub fn push_control(&self, frame: Bytes) {
        let mut st = self.state.lock();
        if st.closed || st.slow.is_some() {
            return;
        }
        st.queued_bytes += wire_len(frame.len());
        st.queue.push(Entry {
            topic: CONTROL,
            frame,
        });
        self.after_push(st, Instant::now());
    }

    /// Queues a value frame (tick, snapshot) of `topic`, through the topic's max_hz
    /// gate when `interval` is set. `now` is read once per publish by the caller.
    pub fn push_tick(
        &self,
        topic: TopicId,
        frame: Bytes,
        now: Instant,
        interval: Option<Duration>,
    ) {
        let mut st = self.state.lock();
        if st.closed || st.slow.is_some() {
            return;
        }
        if let Some(interval) = interval {
            let gate = st.gates.entry(topic.0).or_insert(Gate {
                interval,
                next_at: now,
                pending: None,
            });
            gate.interval = interval;
            if now < gate.next_at || gate.pending.is_some() {
                if gate.pending.replace(frame).is_some() {
                    self.shared.stats.conflated.fetch_add(1, Ordering::Relaxed);
                }
                // The writer wakes at the gate's time: wake it so it re-arms its timer.
                return self.wake(st);
            }
            gate.next_at = now + interval;
        } else if !st.gates.is_empty()
            && let Some(gate) = st.gates.remove(&topic.0)
            && gate.pending.is_some()
        {
            // The topic is no longer gated (a pattern without max_hz matches
            // it now): the frame its gate held is older than this one and
            // must not be released after it.
            self.shared.stats.conflated.fetch_add(1, Ordering::Relaxed);
        }
        self.enqueue_tick(&mut st, topic.0, frame);
        self.after_push(st, now);
    }

    fn enqueue_tick(&self, st: &mut State, topic: u32, frame: Bytes) {
        st.ticked = true;
        st.queued_bytes += wire_len(frame.len());
        if st.conflating {
            let at = st.queue.len();
            if let Some(old) = st.latest.insert(topic, at) {
                let old = std::mem::take(&mut st.queue[old].frame);
                st.queued_bytes -= wire_len(old.len());
                st.tombstones += 1;
                self.shared.stats.conflated.fetch_add(1, Ordering::Relaxed);
            }
        }
        st.queue.push(Entry { topic, frame });
    }

    /// Sets the socket for direct writes (plain TCP; none for TLS, whose
    /// records only the writer may produce).
    pub fn set_direct_sink(&self, sink: Arc<dyn DirectSink>) {
        self.state.lock().sink = Some(sink);
    }

    /// The writer says it is about to wait (`true`) or has woken (`false`).
    /// Taking the lock to say it also waits for a direct write in progress,
    /// so the two never write to the socket at once.
    pub fn set_writer_idle(&self, idle: bool) {
        self.state.lock().writer_idle = idle;
    }

    /// Holds direct writes back (`true`) while the writer owes a frame that
    /// later ones must not overtake (a Pong); the writer releases (`false`)
    /// when it takes that frame. Both sides call it under the same lock that
    /// guards the frame, so a release cannot pass a newer hold.
    pub fn hold_direct(&self, hold: bool) {
        self.state.lock().ctl_hold = hold;
    }

    /// The rest of a frame a direct write began, if one is queued: the writer
    /// sends it before anything else (a Pong, a Ping, a Close) so that no
    /// bytes land inside that frame. Its bytes count as taken by the writer.
    pub fn take_raw(&self) -> Option<Bytes> {
        let mut st = self.state.lock();
        let first = st.queue.first_mut()?;
        if !first.is_raw() || first.frame.is_empty() {
            return None;
        }
        // Left in place, empty, so that reserved positions do not move;
        // `drain` drops it.
        let rest = std::mem::take(&mut first.frame);
        st.tombstones += 1;
        st.queued_bytes -= rest.len();
        st.inflight_bytes += rest.len();
        Some(rest)
    }

    /// Writes what is pending straight to the socket when the writer is idle;
    /// returns true when nothing is left for the writer.
    fn write_direct(&self, st: &mut State) -> bool {
        match direct_check(st) {
            Direct::No => false,
            Direct::Empty => true,
            Direct::Go => {
                let Some(sink) = st.sink.as_ref() else {
                    return false;
                };
                let w = sink.try_write(&st.queue);
                apply_direct(st, w)
            }
        }
    }

    /// At [`uncork`]: the deferred wake-up, as a direct write if it can be.
    fn flush_deferred(&self) {
        let st = self.state.lock();
        if !st.woken {
            // The writer woke for something else and took the frames.
            return;
        }
        self.finish_deferred(st);
    }

    fn finish_deferred(&self, mut st: parking_lot::MutexGuard<'_, State>) {
        if self.write_direct(&mut st) {
            st.woken = false;
            return;
        }
        drop(st);
        self.notify();
    }

    fn wake(&self, mut st: parking_lot::MutexGuard<'_, State>) {
        if st.woken || st.held > 0 {
            return;
        }
        st.woken = true;
        if st.writer_idle && st.sink.is_some() {
            let deferred = CORK.with(|c| {
                let mut c = c.borrow_mut();
                if !c.on {
                    return false;
                }
                if let Some(me) = self.me.upgrade() {
                    c.pending.push(me);
                }
                true
            });
            if deferred {
                return;
            }
        }
        drop(st);
        self.notify();
    }

    fn after_push(&self, mut st: parking_lot::MutexGuard<'_, State>, now: Instant) {
        self.check_limits(&mut st, || now, false);
        if st.held == 0 && st.tombstones > 64 && st.tombstones * 2 > st.queue.len() {
            compact(&mut st);
        }
        self.wake(st);
    }

    /// `now` is read only over the soft limit, where the slow-consumer clock runs.
    fn check_limits(&self, st: &mut State, now: impl FnOnce() -> Instant, progressed: bool) {
        let buffered = st.queued_bytes + st.inflight_bytes;
        st.max_buffered = st.max_buffered.max(buffered);
        if buffered > self.shared.cfg.hard_limit_bytes {
            self.mark_slow(st, SlowReason::HardLimit);
        } else if buffered > self.shared.cfg.soft_limit_bytes {
            if !st.conflating {
                st.conflating = true;
                self.conflate_queue(st);
            }
            let now = now();
            match st.over_soft_since {
                None => {
                    st.over_soft_since = Some(now);
                    // The writer may be blocked in a write with no deadline for
                    // this clock yet: wake it even if a wake-up is pending.
                    st.woken = false;
                }
                Some(since) => {
                    if now.duration_since(since)
                        > Duration::from_millis(self.shared.cfg.slow_timeout_ms)
                    {
                        self.mark_slow(st, SlowReason::SoftTimeout);
                    }
                }
            }
        } else {
            st.over_soft_since = None;
            // Hysteresis: conflation ends once the writer has brought the buffered
            // amount down to half the soft limit (`progressed`: called after a
            // write), not as soon as conflation itself shrank the queue, which
            // would flap between the two modes.
            if progressed && st.conflating && buffered <= self.shared.cfg.soft_limit_bytes / 2 {
                st.conflating = false;
                st.latest.clear();
            }
        }
    }

    fn mark_slow(&self, st: &mut State, reason: SlowReason) {
        if st.slow.is_none() {
            st.slow = Some(reason);
            // A frame a direct write began is cut off: no Close frame can follow it.
            st.mid_frame = st.queue.iter().any(|e| e.is_raw() && !e.is_tombstone());
            // Nothing more will be written but the close frame: free the memory now.
            st.queue = Vec::new();
            st.queued_bytes = 0;
            st.latest = IdMap::default();
            st.gates = IdMap::default();
            st.woken = false;
        }
    }

    /// Entering conflation: keep only the newest pending tick of each topic.
    fn conflate_queue(&self, st: &mut State) {
        st.latest.clear();
        let mut dropped = 0u64;
        for i in (0..st.queue.len()).rev() {
            let e = &st.queue[i];
            if e.is_control() || e.is_tombstone() {
                continue;
            }
            let topic = e.topic;
            if let std::collections::hash_map::Entry::Vacant(slot) = st.latest.entry(topic) {
                slot.insert(i);
            } else {
                let old = std::mem::take(&mut st.queue[i].frame);
                st.queued_bytes -= wire_len(old.len());
                st.tombstones += 1;
                dropped += 1;
            }
        }
        self.shared
            .stats
            .conflated
            .fetch_add(dropped, Ordering::Relaxed);
        if st.held == 0 {
            compact(st);
        }
    }

    /// Moves every pending frame into `out` (which should be empty); the bytes
    /// stay in the buffered amount until [`Outbox::written`] reports them.
    pub fn drain(&self, out: &mut Vec<Entry>) -> Drain {
        let mut st = self.state.lock();
        st.woken = false;
        if let Some(reason) = st.slow {
            st.closed = true;
            return if st.mid_frame {
                Drain::SlowMidFrame(reason)
            } else {
                Drain::Slow(reason)
            };
        }
        if st.held > 0 {
            return Drain::Frames;
        }
        std::mem::swap(&mut st.queue, out);
        if st.tombstones > 0 {
            out.retain(|e| !e.is_tombstone());
        }
        st.tombstones = 0;
        st.latest.clear();
        st.inflight_bytes += st.queued_bytes;
        st.queued_bytes = 0;
        Drain::Frames
    }

    /// Gives back an empty small queue that direct writes kept, once no tick
    /// has been queued since the previous call: the writer calls it at each
    /// heartbeat, so a connection whose ticks stopped holds no queue after at
    /// most two heartbeat intervals.
    pub fn trim_quiet(&self) {
        let mut st = self.state.lock();
        if !std::mem::take(&mut st.ticked)
            && st.queue.is_empty()
            && st.queue.capacity() <= QUIET_QUEUE_ENTRIES
        {
            st.queue = Vec::new();
        }
    }

    /// The writer wrote `bytes` (as counted by [`wire_len`]) to the socket.
    pub fn written(&self, bytes: usize) {
        let mut st = self.state.lock();
        st.inflight_bytes = st.inflight_bytes.saturating_sub(bytes);
        self.check_limits(&mut st, Instant::now, true);
    }

    /// Queues the max_hz frames whose time has come; returns when the next one is due.
    /// Reads the clock only when the connection has max_hz gates.
    pub fn release_gates(&self) -> Option<Instant> {
        let mut st = self.state.lock();
        if st.gates.is_empty() || st.slow.is_some() {
            return None;
        }
        self.release_gates_locked(&mut st, Instant::now())
    }

    /// [`Outbox::release_gates`] at a given time.
    pub fn release_gates_at(&self, now: Instant) -> Option<Instant> {
        let mut st = self.state.lock();
        if st.gates.is_empty() || st.slow.is_some() {
            return None;
        }
        self.release_gates_locked(&mut st, now)
    }

    fn release_gates_locked(&self, st: &mut State, now: Instant) -> Option<Instant> {
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for (&topic, gate) in st.gates.iter_mut() {
            if gate.pending.is_none() {
                continue;
            }
            if gate.next_at <= now {
                if let Some(f) = gate.pending.take() {
                    due.push((topic, f));
                }
                gate.next_at = now + gate.interval;
            } else {
                next = Some(next.map_or(gate.next_at, |n| n.min(gate.next_at)));
            }
        }
        if !due.is_empty() {
            for (topic, f) in due {
                self.enqueue_tick(st, topic, f);
            }
            self.check_limits(st, || now, false);
        }
        next
    }

    /// When the slow-consumer clock runs out, if it is running: the writer
    /// checks then even if nothing more is pushed.
    pub fn slow_deadline(&self) -> Option<Instant> {
        let st = self.state.lock();
        st.over_soft_since.map(|s| {
            s + Duration::from_millis(self.shared.cfg.slow_timeout_ms) + Duration::from_millis(1)
        })
    }

    /// Re-evaluates the limits at `now` (the slow-consumer clock), waking the writer if slow.
    pub fn check(&self, now: Instant) {
        let mut st = self.state.lock();
        self.check_limits(&mut st, || now, false);
        if st.slow.is_some() {
            self.wake(st);
        }
    }

    /// Holds the writer back and reserves the next position for a reply that
    /// must precede frames pushed meanwhile. Pair with [`Outbox::fill_reserved`].
    pub(crate) fn reserve(&self) -> Option<usize> {
        let mut st = self.state.lock();
        if st.closed || st.slow.is_some() {
            return None;
        }
        st.held += 1;
        let at = st.queue.len();
        st.queue.push(Entry {
            topic: CONTROL,
            frame: Bytes::new(),
        });
        Some(at)
    }

    pub(crate) fn fill_reserved(&self, at: Option<usize>, frame: Bytes) {
        let Some(at) = at else { return };
        let mut st = self.state.lock();
        st.held -= 1;
        if st.slow.is_none() && !st.closed {
            st.queued_bytes += wire_len(frame.len());
            st.queue[at].frame = frame;
        }
        if st.held == 0 && st.tombstones > 0 {
            compact(&mut st);
        }
        self.after_push(st, Instant::now());
    }

    /// Forgets a topic's max_hz state (after unsubscribe).
    pub(crate) fn forget_topic(&self, topic: TopicId) {
        self.state.lock().gates.remove(&topic.0);
    }

    /// Stops accepting frames; pending ones are dropped. Returns true when
    /// that dropped the rest of a frame already begun on the socket: the
    /// connection must then be reset, not sent a Close frame.
    pub fn close(&self) -> bool {
        let mut st = self.state.lock();
        let cut = st.mid_frame || st.queue.iter().any(|e| e.is_raw() && !e.is_tombstone());
        st.closed = true;
        st.sink = None;
        st.writer_idle = false;
        st.queue = Vec::new();
        st.queued_bytes = 0;
        st.gates = IdMap::default();
        cut
    }

    /// Bytes queued and not yet written.
    pub fn buffered(&self) -> usize {
        let st = self.state.lock();
        st.queued_bytes + st.inflight_bytes
    }

    /// The largest buffered amount seen.
    pub fn max_buffered(&self) -> usize {
        self.state.lock().max_buffered
    }

    /// Why the outbox gave up on its connection, if it did.
    pub fn slow_reason(&self) -> Option<SlowReason> {
        self.state.lock().slow
    }

    /// Whether the outbox is currently conflating.
    pub fn is_conflating(&self) -> bool {
        self.state.lock().conflating
    }
}

/// Removes tombstones and re-indexes the newest tick per topic.
fn compact(st: &mut State) {
    st.queue.retain(|e| !e.is_tombstone() || e.is_control());
    st.tombstones = 0;
    if st.conflating {
        st.latest.clear();
        for (i, e) in st.queue.iter().enumerate() {
            if !e.is_control() {
                st.latest.insert(e.topic, i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(soft: usize, hard: usize) -> Arc<Outbox> {
        Outbox::new(
            OutboxConfig {
                soft_limit_bytes: soft,
                hard_limit_bytes: hard,
                slow_timeout_ms: 1000,
            },
            Arc::new(EngineStats::default()),
        )
    }

    fn frames(o: &Outbox) -> Vec<String> {
        let mut v = Vec::new();
        assert_eq!(o.drain(&mut v), Drain::Frames);
        v.iter()
            .map(|e| String::from_utf8(e.frame.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn lossless_below_the_soft_limit() {
        let o = outbox(1000, 10_000);
        let now = Instant::now();
        for i in 0..10 {
            o.push_tick(TopicId(1), Bytes::from(format!("t{i}")), now, None);
        }
        assert_eq!(frames(&o).len(), 10);
    }

    #[test]
    fn conflates_to_newest_per_topic_above_the_soft_limit() {
        let o = outbox(100, 100_000);
        let now = Instant::now();
        o.push_control(Bytes::from_static(b"ctl"));
        for i in 0..200 {
            o.push_tick(
                TopicId(i % 2),
                Bytes::from(format!("t{}-{i:04}", i % 2)),
                now,
                None,
            );
        }
        let got = frames(&o);
        assert_eq!(got, vec!["ctl", "t0-0198", "t1-0199"]);
        assert!(o.shared.stats.conflated.load(Ordering::Relaxed) >= 190);
    }

    #[test]
    fn hard_limit_marks_slow_and_frees() {
        let o = outbox(100, 1000);
        let now = Instant::now();
        o.push_control(Bytes::from(vec![b'x'; 1200]));
        let mut v = Vec::new();
        assert_eq!(o.drain(&mut v), Drain::Slow(SlowReason::HardLimit));
        assert!(v.is_empty());
        o.push_tick(TopicId(1), Bytes::from_static(b"late"), now, None);
        assert_eq!(o.buffered(), 0);
    }

    #[test]
    fn soft_limit_held_too_long_marks_slow() {
        let o = outbox(10, 1_000_000);
        let t0 = Instant::now();
        o.push_tick(TopicId(1), Bytes::from(vec![b'x'; 50]), t0, None);
        let mut v = Vec::new();
        assert_eq!(o.drain(&mut v), Drain::Frames);
        // Nothing written: still over the soft limit.
        o.check(t0 + Duration::from_millis(500));
        assert_eq!(o.drain(&mut Vec::new()), Drain::Frames);
        o.check(t0 + Duration::from_millis(1001));
        assert_eq!(
            o.drain(&mut Vec::new()),
            Drain::Slow(SlowReason::SoftTimeout)
        );
    }

    #[test]
    fn written_bytes_end_conflation() {
        let o = outbox(100, 100_000);
        let now = Instant::now();
        for i in 0..20 {
            o.push_tick(TopicId(1), Bytes::from(format!("tick-{i:02}")), now, None);
        }
        assert!(o.is_conflating());
        let mut v = Vec::new();
        o.drain(&mut v);
        let n: usize = v.iter().map(|e| wire_len(e.frame.len())).sum();
        o.written(n);
        assert!(!o.is_conflating());
        assert_eq!(o.buffered(), 0);
    }

    #[test]
    fn max_hz_gate_keeps_newest_and_releases_it() {
        let o = outbox(10_000, 100_000);
        let t0 = Instant::now();
        let iv = Some(Duration::from_millis(250));
        o.push_tick(TopicId(1), Bytes::from_static(b"a"), t0, iv);
        o.push_tick(
            TopicId(1),
            Bytes::from_static(b"b"),
            t0 + Duration::from_millis(10),
            iv,
        );
        o.push_tick(
            TopicId(1),
            Bytes::from_static(b"c"),
            t0 + Duration::from_millis(20),
            iv,
        );
        assert_eq!(frames(&o), vec!["a"]);
        let next = o.release_gates_at(t0 + Duration::from_millis(100));
        assert_eq!(next, Some(t0 + Duration::from_millis(250)));
        assert!(frames(&o).is_empty());
        o.release_gates_at(t0 + Duration::from_millis(250));
        assert_eq!(frames(&o), vec!["c"]);
    }

    #[test]
    fn reserved_reply_precedes_frames_pushed_meanwhile() {
        let o = outbox(10_000, 100_000);
        let at = o.reserve();
        o.push_tick(
            TopicId(1),
            Bytes::from_static(b"snap"),
            Instant::now(),
            None,
        );
        assert!(frames(&o).is_empty(), "held: nothing to take yet");
        o.fill_reserved(at, Bytes::from_static(b"subscribed"));
        assert_eq!(frames(&o), vec!["subscribed", "snap"]);
    }

    /// A socket with `room` bytes of space that records what it took
    /// (frames without headers, for readable assertions).
    #[derive(Debug, Default)]
    struct Sock {
        room: std::sync::atomic::AtomicUsize,
        took: Mutex<Vec<u8>>,
        sends: std::sync::atomic::AtomicUsize,
        fd: std::sync::atomic::AtomicUsize,
    }

    impl DirectSink for Sock {
        fn try_write(&self, entries: &[Entry]) -> DirectWritten {
            self.sends.fetch_add(1, Ordering::Relaxed);
            let mut room = self.room.load(Ordering::Relaxed);
            let mut w = DirectWritten::default();
            for e in entries {
                if room == 0 {
                    break;
                }
                let n = room.min(e.frame.len());
                self.took.lock().extend_from_slice(&e.frame[..n]);
                room -= n;
                w.entries += 1;
                if n < e.frame.len() {
                    w.rest = Some(e.frame.slice(n..));
                    break;
                }
            }
            self.room.store(room, Ordering::Relaxed);
            w
        }

        fn batch(&self) -> Option<&dyn BatchSink> {
            Some(self)
        }
    }

    impl BatchSink for Sock {
        fn fd(&self) -> i32 {
            self.fd.load(Ordering::Relaxed) as i32
        }
        fn layout(&self, entries: &[Entry], out: &mut Vec<u8>) {
            for e in entries {
                out.extend_from_slice(&e.frame);
            }
        }
        fn wrote(&self, entries: &[Entry], bytes: &[u8], n: usize) -> DirectWritten {
            self.took.lock().extend_from_slice(&bytes[..n]);
            let mut w = DirectWritten::default();
            let mut start = 0;
            for e in entries {
                if start >= n {
                    break;
                }
                let end = start + e.frame.len();
                w.entries += 1;
                if end > n {
                    w.rest = Some(e.frame.slice(n - start..));
                    break;
                }
                start = end;
            }
            w
        }
    }

    fn with_sock(room: usize) -> (Arc<Outbox>, Arc<Sock>) {
        let o = outbox(1000, 10_000);
        let sock = Arc::new(Sock::default());
        sock.room.store(room, Ordering::Relaxed);
        o.set_direct_sink(sock.clone());
        (o, sock)
    }

    fn tick(o: &Outbox, topic: u32, s: &'static str) {
        o.push_tick(
            TopicId(topic),
            Bytes::from_static(s.as_bytes()),
            Instant::now(),
            None,
        );
    }

    /// Pushes `ticks` corked while the writer is idle: what the direct path
    /// makes of them.
    fn corked_ticks(o: &Outbox, ticks: &[(u32, &'static str)]) {
        o.set_writer_idle(true);
        cork();
        for &(topic, s) in ticks {
            tick(o, topic, s);
        }
        uncork();
    }

    #[test]
    fn corked_pushes_go_out_in_one_direct_write_at_uncork() {
        let (o, sock) = with_sock(1000);
        o.set_writer_idle(true);
        cork();
        tick(&o, 1, "a");
        tick(&o, 2, "bb");
        assert!(sock.took.lock().is_empty(), "nothing before uncork");
        uncork();
        assert_eq!(*sock.took.lock(), b"abb");
        assert_eq!(sock.sends.load(Ordering::Relaxed), 1, "one send for both");
        assert!(
            !o.signal.load(Ordering::Acquire),
            "the writer was not woken"
        );
        assert_eq!(o.buffered(), 0);
        assert!(frames(&o).is_empty(), "nothing left for the writer");
        // Not corked: the writer is woken as usual.
        tick(&o, 1, "c");
        assert_eq!(sock.sends.load(Ordering::Relaxed), 1);
        assert_eq!(frames(&o), ["c"]);
    }

    #[test]
    fn a_quiet_connection_keeps_no_queue_after_a_direct_write_a_busy_one_does() {
        let (o, _sock) = with_sock(100_000);
        corked_ticks(&o, &[(1, "a"), (2, "b")]);
        let cap = o.state.lock().queue.capacity();
        assert!(
            (1..=QUIET_QUEUE_ENTRIES).contains(&cap),
            "ticks flowing: the small queue is kept ({cap})"
        );
        o.trim_quiet();
        assert_eq!(
            o.state.lock().queue.capacity(),
            cap,
            "a tick since the last trim"
        );
        o.trim_quiet();
        assert_eq!(o.state.lock().queue.capacity(), 0, "quiet: given back");
        let many: Vec<(u32, &'static str)> = (0..20).map(|t| (t, "x")).collect();
        corked_ticks(&o, &many);
        let st = o.state.lock();
        assert!(st.queue.is_empty());
        assert!(
            st.queue.capacity() > QUIET_QUEUE_ENTRIES,
            "busy: kept for reuse"
        );
    }

    #[test]
    fn ticks_to_an_idle_subscriber_reuse_one_queue_replies_alone_keep_none() {
        let (o, sock) = with_sock(100_000);
        corked_ticks(&o, &[(1, "a")]);
        let cap = o.state.lock().queue.capacity();
        assert!(cap > 0, "kept after the direct write");
        for t in 0..10 {
            corked_ticks(&o, &[(t, "b")]);
            let st = o.state.lock();
            assert!(st.queue.is_empty());
            assert_eq!(st.queue.capacity(), cap, "no new queue per tick");
        }
        assert_eq!(sock.took.lock().len(), 11);
        // A connection that only ever got replies gives its queue back at once.
        let (o, sock) = with_sock(100_000);
        o.set_writer_idle(true);
        cork();
        o.push_control(Bytes::from_static(b"r"));
        uncork();
        assert_eq!(*sock.took.lock(), b"r");
        assert_eq!(o.state.lock().queue.capacity(), 0);
    }

    #[test]
    fn a_busy_writer_is_woken_not_bypassed() {
        let (o, sock) = with_sock(1000);
        cork();
        tick(&o, 1, "a");
        uncork();
        assert_eq!(sock.sends.load(Ordering::Relaxed), 0);
        assert_eq!(frames(&o), ["a"]);
    }

    #[test]
    fn the_rest_of_a_partial_write_goes_first_and_raw() {
        let (o, sock) = with_sock(3);
        corked_ticks(&o, &[(1, "a"), (2, "hello"), (3, "next")]);
        assert_eq!(*sock.took.lock(), b"ahe");
        assert_eq!(o.buffered(), 3 + wire_len(4), "the rest is still buffered");
        let mut v = Vec::new();
        assert_eq!(o.drain(&mut v), Drain::Frames);
        assert!(v[0].is_raw() && &v[0].frame[..] == b"llo");
        assert_eq!(v[0].wire_len(), 3);
        assert!(!v[1].is_raw() && &v[1].frame[..] == b"next");
    }

    #[test]
    fn a_full_socket_leaves_the_frames_to_the_writer() {
        let (o, sock) = with_sock(0);
        corked_ticks(&o, &[(1, "a")]);
        assert!(sock.took.lock().is_empty());
        assert_eq!(frames(&o), ["a"]);
    }

    #[test]
    fn raw_bytes_are_never_conflated_and_a_cut_frame_is_reset() {
        let (o, _sock) = with_sock(1);
        corked_ticks(&o, &[(1, "xyz")]);
        o.set_writer_idle(false);
        // Over the soft limit: conflation keeps the raw rest.
        for i in 0..200 {
            o.push_tick(
                TopicId(1),
                Bytes::from(format!("{i:08}")),
                Instant::now(),
                None,
            );
        }
        let mut v = Vec::new();
        assert_eq!(o.drain(&mut v), Drain::Frames);
        assert!(v[0].is_raw() && &v[0].frame[..] == b"yz");
        assert!(v.len() < 201, "ticks were conflated");
        // Marked slow while a frame's rest is queued: the writer must reset.
        let (o, _sock) = with_sock(1);
        corked_ticks(&o, &[(1, "xyz")]);
        o.set_writer_idle(false);
        // Distinct topics: conflation cannot shrink them, the hard limit is hit.
        for i in 2..2002 {
            o.push_tick(
                TopicId(i),
                Bytes::from(format!("{i:08}")),
                Instant::now(),
                None,
            );
        }
        let mut v = Vec::new();
        assert_eq!(o.drain(&mut v), Drain::SlowMidFrame(SlowReason::HardLimit));
    }

    #[test]
    fn max_hz_connections_are_left_to_the_writer() {
        let (o, sock) = with_sock(1000);
        o.set_writer_idle(true);
        cork();
        let now = Instant::now();
        o.push_tick(
            TopicId(1),
            Bytes::from_static(b"a"),
            now,
            Some(Duration::from_secs(1)),
        );
        o.push_tick(
            TopicId(1),
            Bytes::from_static(b"b"),
            now,
            Some(Duration::from_secs(1)),
        );
        uncork();
        assert_eq!(sock.sends.load(Ordering::Relaxed), 0);
        // The writer was woken: it has the first frame and times the gate.
        assert!(o.signal.load(Ordering::Acquire), "the writer was woken");
        assert_eq!(frames(&o), ["a"]);
        assert!(o.release_gates_at(now).is_some(), "b waits for its gate");
    }

    #[test]
    fn the_raw_rest_is_taken_first_and_a_close_over_it_is_a_cut() {
        let (o, _sock) = with_sock(2);
        corked_ticks(&o, &[(1, "hello")]);
        o.set_writer_idle(false);
        tick(&o, 2, "next");
        // The writer takes the rest before anything else it sends.
        assert_eq!(o.take_raw().as_deref(), Some(&b"llo"[..]));
        assert_eq!(o.take_raw(), None, "taken once");
        assert_eq!(o.buffered(), 3 + wire_len(4), "the rest is in flight");
        assert_eq!(frames(&o), ["next"], "the placeholder is dropped");
        assert!(!o.close(), "nothing cut");
        // Closed with the rest still queued: the frame is cut.
        let (o, _sock) = with_sock(2);
        corked_ticks(&o, &[(1, "hello")]);
        assert!(o.close());
    }

    #[test]
    fn a_held_pong_keeps_later_frames_from_overtaking_it() {
        let (o, sock) = with_sock(1000);
        o.set_writer_idle(true);
        o.hold_direct(true);
        cork();
        tick(&o, 1, "reply");
        uncork();
        assert_eq!(sock.sends.load(Ordering::Relaxed), 0, "held: not written");
        assert!(
            o.signal.load(Ordering::Acquire),
            "the writer was woken instead"
        );
        assert_eq!(frames(&o), ["reply"]);
        o.hold_direct(false);
        cork();
        tick(&o, 1, "later");
        uncork();
        assert_eq!(*sock.took.lock(), b"later");
    }

    /// A [`BatchSend`] that records each batch and lets each fd take up to
    /// `room[fd]` bytes.
    #[derive(Default)]
    struct FakeBatch {
        max: usize,
        buf: Vec<u8>,
        room: std::collections::HashMap<i32, usize>,
        /// fds whose send's outcome is reported unknown.
        lost: Vec<i32>,
        batches: Vec<Vec<(i32, String)>>,
        on_send: Option<Box<dyn FnOnce()>>,
    }

    impl BatchSend for FakeBatch {
        fn max_batch(&self) -> usize {
            self.max
        }
        fn buf(&mut self) -> &mut Vec<u8> {
            &mut self.buf
        }
        fn send(
            &mut self,
            sends: &[(i32, std::ops::Range<usize>)],
            written: &mut Vec<Option<usize>>,
        ) {
            let mut batch = Vec::new();
            for (fd, r) in sends {
                let bytes = &self.buf[r.clone()];
                batch.push((*fd, String::from_utf8_lossy(bytes).into_owned()));
                written.push(if self.lost.contains(fd) {
                    None
                } else {
                    Some(
                        bytes
                            .len()
                            .min(self.room.get(fd).copied().unwrap_or(usize::MAX)),
                    )
                });
            }
            self.batches.push(batch);
            if let Some(f) = self.on_send.take() {
                f();
            }
        }
    }

    /// A fake sender that takes up to `max` sends at once.
    fn batch_of(max: usize) -> FakeBatch {
        FakeBatch {
            max,
            ..FakeBatch::default()
        }
    }

    /// Corks, then pushes `texts[i]` to the i-th outbox.
    fn cork_and_tick_each(socks: &[(Arc<Outbox>, Arc<Sock>)], texts: &[&'static str]) {
        cork();
        for ((o, _), t) in socks.iter().zip(texts) {
            tick(o, 1, t);
        }
    }

    /// `n` idle outboxes whose sinks have fds 1..=n.
    fn idle_socks(n: usize) -> Vec<(Arc<Outbox>, Arc<Sock>)> {
        (1..=n)
            .map(|fd| {
                let (o, s) = with_sock(1000);
                s.fd.store(fd, Ordering::Relaxed);
                o.set_writer_idle(true);
                (o, s)
            })
            .collect()
    }

    #[test]
    fn a_batch_carries_the_direct_writes_of_many_outboxes_in_one_send() {
        let socks = idle_socks(3);
        let mut b = batch_of(32);
        cork_and_tick_each(&socks, &["a", "bb", "ccc"]);
        for (o, _) in &socks {
            tick(o, 2, "!");
        }
        assert_eq!(uncork_with(Some(&mut b)), 1);
        assert_eq!(
            b.batches,
            [vec![
                (1, "a!".to_owned()),
                (2, "bb!".to_owned()),
                (3, "ccc!".to_owned())
            ]]
        );
        for (i, (o, s)) in socks.iter().enumerate() {
            assert_eq!(
                String::from_utf8_lossy(&s.took.lock()),
                ["a!", "bb!", "ccc!"][i]
            );
            assert_eq!(s.sends.load(Ordering::Relaxed), 0, "no send of its own");
            assert!(!o.signal.load(Ordering::Acquire), "writer not woken");
            assert_eq!(o.buffered(), 0);
            assert!(frames(o).is_empty());
        }
    }

    #[test]
    fn batches_are_cut_at_max_and_a_partial_write_leaves_the_rest_to_the_writer() {
        let socks = idle_socks(3);
        let mut b = FakeBatch {
            max: 2,
            room: [(2, 2)].into(),
            ..FakeBatch::default()
        };
        cork();
        tick(&socks[0].0, 1, "a");
        tick(&socks[1].0, 1, "hello");
        tick(&socks[1].0, 2, "next");
        tick(&socks[2].0, 1, "c");
        assert_eq!(uncork_with(Some(&mut b)), 2);
        assert_eq!(
            b.batches,
            [
                vec![(1, "a".to_owned()), (2, "hellonext".to_owned())],
                vec![(3, "c".to_owned())]
            ]
        );
        let (o, s) = &socks[1];
        assert_eq!(*s.took.lock(), b"he");
        assert!(
            o.signal.load(Ordering::Acquire),
            "the writer takes the rest"
        );
        assert_eq!(o.buffered(), 3 + wire_len(4));
        let st = o.state.lock();
        assert!(st.queue[0].is_raw() && &st.queue[0].frame[..] == b"llo");
        assert_eq!(&st.queue[1].frame[..], b"next");
        drop(st);
        assert!(!socks[0].0.signal.load(Ordering::Acquire));
        assert!(!socks[2].0.signal.load(Ordering::Acquire));
    }

    #[test]
    fn one_outbox_does_not_use_the_batch() {
        let socks = idle_socks(1);
        let mut b = batch_of(32);
        cork_and_tick_each(&socks, &["alone"]);
        assert_eq!(uncork_with(Some(&mut b)), 0);
        assert!(b.batches.is_empty());
        assert_eq!(socks[0].1.sends.load(Ordering::Relaxed), 1, "its own send");
        assert_eq!(*socks[0].1.took.lock(), b"alone");
    }

    /// A writer that woke between the push and the uncork (busy now) is not
    /// written for; one that already took its frames is left alone.
    #[test]
    fn a_writer_busy_or_done_by_the_uncork_is_left_out_of_the_batch() {
        let socks = idle_socks(4);
        let mut b = batch_of(32);
        cork_and_tick_each(&socks, &["a", "b", "c", "d"]);
        socks[1].0.set_writer_idle(false);
        assert_eq!(frames(&socks[2].0), ["c"], "its writer took it");
        assert_eq!(uncork_with(Some(&mut b)), 1);
        assert_eq!(b.batches, [vec![(1, "a".to_owned()), (4, "d".to_owned())]]);
        assert!(socks[1].1.took.lock().is_empty());
        assert!(socks[1].0.signal.load(Ordering::Acquire), "woken instead");
        assert_eq!(frames(&socks[1].0), ["b"]);
        assert!(socks[2].1.took.lock().is_empty());
        assert!(!socks[2].0.signal.load(Ordering::Acquire));
    }

    /// A send whose outcome the batch cannot tell (its ring failed midway)
    /// gives up the connection as cut mid-frame: the writer resets it
    /// rather than guess. The others in the batch are unaffected.
    #[test]
    fn a_send_with_an_unknown_outcome_resets_its_connection() {
        let socks = idle_socks(2);
        let mut b = FakeBatch {
            lost: vec![2],
            ..batch_of(32)
        };
        cork_and_tick_each(&socks, &["a", "b"]);
        assert_eq!(uncork_with(Some(&mut b)), 1);
        assert_eq!(*socks[0].1.took.lock(), b"a");
        assert_eq!(socks[0].0.slow_reason(), None);
        let o = &socks[1].0;
        assert_eq!(o.slow_reason(), Some(SlowReason::SendLost));
        assert!(o.signal.load(Ordering::Acquire), "the writer is told");
        let mut out = Vec::new();
        assert_eq!(o.drain(&mut out), Drain::SlowMidFrame(SlowReason::SendLost));
    }

    /// An outbox another thread holds locked is not waited for inside the
    /// batch (two threads batching overlapping outboxes would deadlock):
    /// it gets its own write once the batch is done and the lock is free.
    #[test]
    fn an_outbox_locked_elsewhere_is_written_after_the_batch() {
        let socks = idle_socks(3);
        cork_and_tick_each(&socks, &["a", "b", "c"]);
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let o2 = socks[1].0.clone();
        let holder = std::thread::spawn(move || {
            let guard = o2.state.lock();
            locked_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            drop(guard);
        });
        locked_rx.recv().unwrap();
        let mut b = FakeBatch {
            max: 32,
            on_send: Some(Box::new(move || release_tx.send(()).unwrap())),
            ..FakeBatch::default()
        };
        assert_eq!(uncork_with(Some(&mut b)), 1);
        holder.join().unwrap();
        assert_eq!(b.batches, [vec![(1, "a".to_owned()), (3, "c".to_owned())]]);
        assert_eq!(*socks[1].1.took.lock(), b"b");
        assert_eq!(socks[1].1.sends.load(Ordering::Relaxed), 1);
        assert!(!socks[1].0.signal.load(Ordering::Acquire));
    }
}
