//! [`Publisher`]: a feed's way into its sink, with the accounting every feed
//! needs (ticks, refusals, latency, parse errors) done in one place.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tickwire_proto::{Topic, now_ms};
use tracing::{debug, warn};

use crate::sink::{SinkError, TickSink};
use crate::stats::{FeedStats, worth_logging};
use crate::tick::Tick;

/// Encodes ticks into a reused buffer and hands them to the sink.
pub struct Publisher {
    sink: Arc<dyn TickSink>,
    stats: Arc<FeedStats>,
    buf: Vec<u8>,
}

impl Publisher {
    pub fn new(sink: Arc<dyn TickSink>, stats: Arc<FeedStats>) -> Publisher {
        Publisher {
            sink,
            stats,
            buf: Vec::with_capacity(256),
        }
    }

    pub fn stats(&self) -> &FeedStats {
        &self.stats
    }

    /// Publishes `tick` to `topic`; returns its seq, or `None` when the sink
    /// refused it (counted in `publish_errors` and logged, sparingly).
    /// Records the ingest latency when the tick has a `source_ts`.
    pub fn publish(&mut self, topic: &Topic, tick: &Tick) -> Option<u64> {
        self.buf.clear();
        tick.encode_into(&mut self.buf);
        let r = self.sink.publish(topic, &self.buf);
        let seq = self.account(topic, r)?;
        if let Some(src) = tick.source_ts {
            let now = now_ms() as i64;
            self.stats
                .last_latency_ms
                .store(now - src as i64, Ordering::Relaxed);
        }
        Some(seq)
    }

    /// Publishes `data`, a JSON object, byte for byte (a replayed recording).
    pub fn publish_raw(&mut self, topic: &Topic, data: &[u8]) -> Option<u64> {
        let r = self.sink.publish(topic, data);
        self.account(topic, r)
    }

    fn account(&self, topic: &Topic, r: Result<u64, SinkError>) -> Option<u64> {
        match r {
            Ok(seq) => {
                self.stats.ticks.fetch_add(1, Ordering::Relaxed);
                self.stats.last_tick_ms.store(now_ms(), Ordering::Relaxed);
                Some(seq)
            }
            Err(e) => {
                let n = FeedStats::bump(&self.stats.publish_errors);
                if worth_logging(n) {
                    warn!(%topic, error = %e, count = n, "sink refused a tick");
                }
                None
            }
        }
    }

    /// Counts a message that could not be parsed (it is skipped) and logs the
    /// first and every 1000th.
    pub fn parse_error(&self, reason: &str) {
        let n = FeedStats::bump(&self.stats.parse_errors);
        if worth_logging(n) {
            warn!(reason, count = n, "skipped a malformed message");
        } else {
            debug!(reason, count = n, "skipped a malformed message");
        }
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}
