//! Starts the configured feeds (`[[feeds]]`) and the demo feed, and exports
//! their counters to `/metrics`.

use std::sync::Arc;

use anyhow::{Context, Result};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tickwire_engine::Engine;
use tickwire_feed::{FeedConfig, FeedContext, FeedStats, StartError, SyntheticConfig, TickSink};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// One configured feed and its counters.
pub struct Feed {
    pub name: String,
    pub cfg: FeedConfig,
    pub stats: Arc<FeedStats>,
}

/// Parses and validates the `[[feeds]]` tables; adds the synthetic demo feed
/// unless it is turned off or a synthetic feed is configured already.
///
/// # Errors
/// A message naming the file, the feed's position and the bad field.
pub fn configure(config: &Config) -> Result<Vec<Feed>> {
    let file = config.source.as_ref().map_or_else(
        || "the configuration".to_owned(),
        |p| p.display().to_string(),
    );
    let mut cfgs = Vec::new();
    for (i, v) in config.feeds.iter().enumerate() {
        let cfg: FeedConfig = v
            .clone()
            .try_into()
            .map_err(|e| anyhow::anyhow!("[[feeds]] #{} in {file}: {e}", i + 1))?;
        cfgs.push(cfg);
    }
    if config.demo_feed && !cfgs.iter().any(|c| matches!(c, FeedConfig::Synthetic(_))) {
        cfgs.push(FeedConfig::Synthetic(SyntheticConfig::default()));
    }
    tickwire_feed::validate_feeds(&cfgs).with_context(|| format!("[[feeds]] in {file}"))?;
    Ok(cfgs
        .into_iter()
        .map(|cfg| Feed {
            name: cfg.name(),
            cfg,
            stats: Arc::new(FeedStats::new()),
        })
        .collect())
}

fn spawn_feed(cfg: FeedConfig, ctx: FeedContext) -> Result<JoinHandle<()>, StartError> {
    match cfg {
        FeedConfig::Synthetic(c) => tickwire_feed_synthetic::spawn(c, ctx),
        FeedConfig::Replay(c) => tickwire_feed_replay::spawn(c, ctx),
        FeedConfig::Binance(c) => tickwire_feed_binance::spawn(c, ctx),
        FeedConfig::Coinbase(c) => tickwire_feed_coinbase::spawn(c, ctx),
    }
}

/// Starts every feed; each gets a child of `shutdown`.
///
/// # Errors
/// A feed that cannot start (a bad recording); one that cannot connect is
/// retried by the feed itself and never fails here.
pub fn start(
    feeds: &[Feed],
    engine: Arc<Engine>,
    shutdown: &CancellationToken,
) -> Result<Vec<JoinHandle<()>>> {
    let sink: Arc<dyn TickSink> = engine;
    feeds
        .iter()
        .map(|f| {
            let ctx = FeedContext::new(sink.clone(), shutdown.child_token(), f.stats.clone());
            spawn_feed(f.cfg.clone(), ctx)
                .with_context(|| format!("feed '{}' cannot start", f.name))
        })
        .collect()
}

/// Reads one gauge's value from a feed's counters.
type GaugeOf = fn(&tickwire_feed::FeedStatsSnapshot) -> i64;

/// `/metrics` for feeds: `tickwire_feed_<counter>_total{feed=..}` and more.
#[derive(Debug)]
pub struct FeedCollector(pub Vec<(String, Arc<FeedStats>)>);

impl Collector for FeedCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snaps: Vec<_> = self.0.iter().map(|(n, s)| (n, s.snapshot())).collect();
        let Some((_, first)) = snaps.first() else {
            return Ok(());
        };
        for (i, (counter, _)) in first.counters().iter().enumerate() {
            let name = format!("tickwire_feed_{counter}");
            let help = format!("Feed {}", counter.replace('_', " "));
            let mut m =
                enc.encode_descriptor(&name, &help, None, ConstCounter::new(0u64).metric_type())?;
            for (feed, s) in &snaps {
                let labels = [("feed", feed.as_str())];
                ConstCounter::new(s.counters()[i].1).encode(m.encode_family(&labels)?)?;
            }
        }
        let gauges: [(&str, &str, GaugeOf); 3] = [
            (
                "tickwire_feed_connected",
                "1 while the feed is connected",
                |s| s.connected as i64,
            ),
            (
                "tickwire_feed_ingest_latency_ms",
                "Publish time minus the venue's source_ts, last tick",
                |s| s.last_latency_ms,
            ),
            (
                "tickwire_feed_last_tick_ms",
                "Wall time of the last tick",
                |s| s.last_tick_ms as i64,
            ),
        ];
        for (name, help, get) in gauges {
            let mut m =
                enc.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
            for (feed, s) in &snaps {
                let labels = [("feed", feed.as_str())];
                ConstGauge::new(get(s)).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
