//! What every tickwire feed shares: the sink ticks go into, the normalized
//! tick, venue symbol to topic mapping, reconnect backoff, the WebSocket
//! connection loop, per-feed counters and the `[[feeds]]` config.
//! The feeds themselves live in `tickwire-feed-<kind>` crates; this crate
//! knows no venue and no socket of the broker's clients.
//!
//! Entry points: [`TickSink`] (implemented by [`tickwire_engine::Engine`]),
//! [`FeedConfig`], [`FeedContext`], and for venue adapters [`ws::run_ws`]
//! with a [`ws::WsVenue`].
//!
//! Each feed crate has the same two entry points:
//! `pub fn spawn(cfg, ctx: FeedContext) -> Result<JoinHandle<()>, StartError>` and
//! `pub async fn run(cfg, ctx: FeedContext) -> Result<(), StartError>`. A feed
//! runs until `ctx.shutdown` is cancelled (a replay without `loop` also ends
//! at the end of its recording).
//!
//! # Layout
//! * `sink`: [`TickSink`], [`SinkError`]
//! * `tick`: [`Tick`] and [`Num`], a decimal kept as the venue wrote it
//! * `topic_map`: [`TopicMap`], [`sanitize_segment`]
//! * `backoff`: [`Backoff`], full-jitter exponential
//! * `publisher`: [`Publisher`], tick -> JSON -> sink, with the counting
//! * `stats`: [`FeedStats`], atomics for `/metrics`
//! * `config`: [`FeedConfig`] and one config struct per kind, validation
//! * `timestamp`: RFC 3339 venue times to ms
//! * `ws`: the shared connect / subscribe / read / reconnect loop
//! * `venue_json`: field readers for venue messages parsed with simd-json
//! * `testing`: a collecting sink and a mock WebSocket venue, for tests

mod backoff;
pub mod config;
mod publisher;
mod sink;
mod stats;
pub mod testing;
mod tick;
mod timestamp;
mod topic_map;
pub mod venue_json;
pub mod ws;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span};

pub use backoff::{Backoff, BackoffConfig};
pub use config::{
    BinanceConfig, BinanceStream, CoinbaseConfig, ConfigError, FeedConfig, RecordingFormat,
    ReplayConfig, SyntheticConfig, validate_feeds,
};
pub use publisher::Publisher;
pub use sink::{SinkError, TickSink};
pub use stats::{FeedStats, FeedStatsSnapshot, worth_logging};
pub use tick::{MAX_NUM_BYTES, Num, NumError, TICK_FIELDS, Tick};
pub use timestamp::parse_rfc3339_ms;
pub use topic_map::{TopicMap, sanitize_segment};

/// What a running feed is given: where ticks go, when to stop, what to count.
#[derive(Clone)]
pub struct FeedContext {
    pub sink: Arc<dyn TickSink>,
    /// Cancelled when the feed must stop (a child of the broker's token).
    pub shutdown: CancellationToken,
    pub stats: Arc<FeedStats>,
}

impl FeedContext {
    pub fn new(
        sink: Arc<dyn TickSink>,
        shutdown: CancellationToken,
        stats: Arc<FeedStats>,
    ) -> FeedContext {
        FeedContext {
            sink,
            shutdown,
            stats,
        }
    }
}

impl std::fmt::Debug for FeedContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedContext")
            .field("shutdown", &self.shutdown)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Why a feed could not start. Once started, a feed never fails: it counts
/// errors, logs them and reconnects.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A replay recording could not be read; `line` is 1-based, 0 for the file itself.
    #[error("{}:{line}: {reason}", path.display())]
    Recording {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Spawns a feed's task on the current tokio runtime, inside a `feed` span
/// carrying `feed` (its name) and `kind`, and logs when it stops.
///
/// # Panics
/// Outside a tokio runtime.
pub fn spawn_feed_task<F>(name: &str, kind: &'static str, run: F) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let span = info_span!("feed", feed = name, kind);
    tokio::spawn(
        async move {
            info!("feed started");
            run.await;
            info!("feed stopped");
        }
        .instrument(span),
    )
}

/// `docs/feeds.md`, so that its Rust example compiles as a doctest.
#[doc = include_str!("../../../docs/feeds.md")]
#[cfg(doctest)]
pub struct FeedsGuide;
