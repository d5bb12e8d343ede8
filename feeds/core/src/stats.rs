//! Per-feed counters, as atomics the binary reads for `/metrics`.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// One feed's counters. All relaxed atomics: they are metrics, never used to
/// order other memory.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Ticks the sink accepted.
    pub ticks: AtomicU64,
    /// Venue messages (or recording lines) that could not be parsed; each was
    /// skipped.
    pub parse_errors: AtomicU64,
    /// Ticks the sink refused (the broker's topic limit, say).
    pub publish_errors: AtomicU64,
    /// Error messages the venue sent (a refused subscription, say).
    pub venue_errors: AtomicU64,
    /// Connection attempts after the first one: reconnects after a loss, a
    /// failed attempt, or a planned session change.
    pub reconnects: AtomicU64,
    /// Upstream gaps detected: a venue's sequence or trade ids show that
    /// messages were missed.
    pub gaps: AtomicU64,
    /// Messages older than one already published for the same instrument;
    /// skipped so a topic never steps back in time.
    pub out_of_order: AtomicU64,
    /// True while connected to the venue (while running, for local feeds).
    pub connected: AtomicBool,
    /// Ingest latency of the last tick that carried a venue time: publish
    /// time minus `source_ts`, in ms. Negative means the venue clock is ahead.
    pub last_latency_ms: AtomicI64,
    /// Wall time of the last accepted tick, ms since the Unix epoch (0: none yet).
    pub last_tick_ms: AtomicU64,
}

/// A plain copy of [`FeedStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedStatsSnapshot {
    pub ticks: u64,
    pub parse_errors: u64,
    pub publish_errors: u64,
    pub venue_errors: u64,
    pub reconnects: u64,
    pub gaps: u64,
    pub out_of_order: u64,
    pub connected: bool,
    pub last_latency_ms: i64,
    pub last_tick_ms: u64,
}

impl FeedStatsSnapshot {
    /// The monotonic counters by name, for a metrics exporter to loop over
    /// (`tickwire_feed_<name>_total{feed="..."}`, say).
    pub fn counters(&self) -> [(&'static str, u64); 7] {
        [
            ("ticks", self.ticks),
            ("parse_errors", self.parse_errors),
            ("publish_errors", self.publish_errors),
            ("venue_errors", self.venue_errors),
            ("reconnects", self.reconnects),
            ("gaps", self.gaps),
            ("out_of_order", self.out_of_order),
        ]
    }
}

impl FeedStats {
    pub fn new() -> FeedStats {
        FeedStats::default()
    }

    pub fn snapshot(&self) -> FeedStatsSnapshot {
        let r = Ordering::Relaxed;
        FeedStatsSnapshot {
            ticks: self.ticks.load(r),
            parse_errors: self.parse_errors.load(r),
            publish_errors: self.publish_errors.load(r),
            venue_errors: self.venue_errors.load(r),
            reconnects: self.reconnects.load(r),
            gaps: self.gaps.load(r),
            out_of_order: self.out_of_order.load(r),
            connected: self.connected.load(r),
            last_latency_ms: self.last_latency_ms.load(r),
            last_tick_ms: self.last_tick_ms.load(r),
        }
    }

    /// Adds one to `counter` and returns the new value (for "log the first
    /// and every 1000th" decisions).
    pub fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn set_connected(&self, on: bool) {
        self.connected.store(on, Ordering::Relaxed);
    }
}

/// Whether the `n`-th occurrence of something repetitive should be logged:
/// the first, then every 1000th, so a broken venue cannot flood the log.
pub fn worth_logging(n: u64) -> bool {
    n == 1 || n % 1000 == 0
}
