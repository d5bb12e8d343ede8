//! Counters and latency histograms shared by every task of the run.
//!
//! Everything runs on one thread (a current-thread runtime and a `LocalSet`),
//! so counters are `Cell`s and histograms `RefCell`s: no atomics, no locks.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use hdrhistogram::Histogram;

/// Highest latency the histograms track: 60 s in nanoseconds. Anything slower
/// is recorded as 60 s (a tick that late is a failure either way).
const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// How many error messages are kept for the summary.
const MAX_KEPT_ERRORS: usize = 8;

#[derive(Default, Debug)]
pub struct Counter(Cell<u64>);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.set(self.0.get() + n);
    }
    pub fn sub(&self, n: u64) {
        self.0.set(self.0.get().saturating_sub(n));
    }
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// How a connection ended, for the summary: a close code, or a word.
pub type Endings = RefCell<BTreeMap<String, u64>>;

pub struct Stats {
    // Healthy subscribers.
    pub subs_ok: Counter,
    pub subs_failed: Counter,
    pub ticks_recv: Counter,
    /// Ticks whose `ts_send` lies in the measured window.
    pub ticks_measured: Counter,
    /// Seqs skipped within one topic on one connection (conflation or loss).
    pub seq_gaps: Counter,
    /// A seq at or below one already seen on that topic.
    pub seq_backwards: Counter,
    /// Ticks on a topic the subscriber did not ask for.
    pub ticks_unexpected: Counter,
    pub errors_recv: Counter,
    pub sub_endings: Endings,
    /// Healthy subscribers per topic, for the expected deliveries.
    pub subs_per_topic: RefCell<Vec<u64>>,

    // Slow subscribers (`slow` scenario).
    pub slow_ok: Counter,
    pub slow_failed: Counter,
    pub slow_ticks: Counter,
    pub slow_endings: Endings,

    // Publishers.
    pub pubs_ready: Counter,
    pub pubs_failed: Counter,
    pub sent: Counter,
    /// Rate mode: sending slots given up because the publisher fell behind.
    pub skipped: Counter,
    pub acked: Counter,
    pub acked_measured: Counter,
    pub inflight: Counter,
    pub publish_errors: Counter,
    /// Acked ticks per topic in the measured window.
    pub acked_per_topic: RefCell<Vec<u64>>,

    /// Latency of ticks in the measured window, ns.
    pub latency: RefCell<Histogram<u64>>,
    /// Latency since the last progress line, ns (all ticks, warmup too).
    pub latency_interval: RefCell<Histogram<u64>>,
    pub first_errors: RefCell<Vec<String>>,
}

impl Stats {
    pub fn new(topics: usize) -> Self {
        let hist = || {
            Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("histogram bounds are valid")
        };
        Stats {
            subs_ok: Counter::default(),
            subs_failed: Counter::default(),
            ticks_recv: Counter::default(),
            ticks_measured: Counter::default(),
            seq_gaps: Counter::default(),
            seq_backwards: Counter::default(),
            ticks_unexpected: Counter::default(),
            errors_recv: Counter::default(),
            sub_endings: Endings::default(),
            subs_per_topic: RefCell::new(vec![0; topics]),
            slow_ok: Counter::default(),
            slow_failed: Counter::default(),
            slow_ticks: Counter::default(),
            slow_endings: Endings::default(),
            pubs_ready: Counter::default(),
            pubs_failed: Counter::default(),
            sent: Counter::default(),
            skipped: Counter::default(),
            acked: Counter::default(),
            acked_measured: Counter::default(),
            inflight: Counter::default(),
            publish_errors: Counter::default(),
            acked_per_topic: RefCell::new(vec![0; topics]),
            latency: RefCell::new(hist()),
            latency_interval: RefCell::new(hist()),
            first_errors: RefCell::new(Vec::new()),
        }
    }

    /// Keeps the first few error messages for the summary.
    pub fn note_error(&self, what: impl FnOnce() -> String) {
        let mut kept = self.first_errors.borrow_mut();
        if kept.len() < MAX_KEPT_ERRORS {
            let msg = what();
            eprintln!("loadgen: {msg}");
            kept.push(msg);
        }
    }

    /// Deliveries the healthy subscribers should have received for the
    /// measured ticks: sum over topics of acked ticks x subscribers.
    pub fn expected(&self) -> u64 {
        let subs = self.subs_per_topic.borrow();
        let acked = self.acked_per_topic.borrow();
        subs.iter().zip(acked.iter()).map(|(s, a)| s * a).sum()
    }
}

pub fn count_ending(endings: &Endings, how: impl Into<String>) {
    *endings.borrow_mut().entry(how.into()).or_insert(0) += 1;
}

/// Records a latency, clamped into the histogram's range.
pub fn record(hist: &mut Histogram<u64>, ns: u64) {
    hist.saturating_record(ns.max(1));
}
