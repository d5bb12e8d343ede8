//! Cluster wiring: starts `tickwire-cluster` when `[cluster]` or
//! `--cluster-nats` is set, and exports its counters to `/metrics`. The
//! engine's own cluster counters (`tickwire_cluster_remote_*`,
//! `tickwire_cluster_epoch_conflicts`) are exported by the gateway.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tickwire_cluster::{Cluster, ClusterConfig, ClusterStats};
use tickwire_engine::Engine;
use tokio_util::sync::CancellationToken;

/// How long stopping waits for the last ticks to reach NATS (the cluster
/// itself gives up after 2 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// A started cluster member and the token that stops it.
pub struct Member {
    cluster: Cluster,
    stop: CancellationToken,
}

/// Joins the cluster. Call before anything publishes, so every tick is replicated.
///
/// # Errors
/// A bad `[cluster]` setting, or an engine built without epochs in frames.
pub async fn start(cfg: &ClusterConfig, engine: &Arc<Engine>) -> Result<Member> {
    let stop = CancellationToken::new();
    let cluster = Cluster::start(cfg.clone(), engine.clone(), stop.clone())
        .await
        .context("cannot join the cluster")?;
    Ok(Member { cluster, stop })
}

impl Member {
    pub fn collector(&self) -> ClusterCollector {
        ClusterCollector(self.cluster.stats().clone())
    }

    /// Sends what is queued to NATS and leaves; call after the feeds and the
    /// gateway have stopped publishing.
    pub async fn stop(self) {
        self.stop.cancel();
        if tokio::time::timeout(STOP_TIMEOUT, self.cluster.wait())
            .await
            .is_err()
        {
            tracing::warn!("cluster did not stop in time");
        }
    }
}

/// `tickwire_cluster_*` counters of the NATS side, and two gauges.
pub struct ClusterCollector(pub Arc<ClusterStats>);

impl std::fmt::Debug for ClusterCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ClusterCollector").finish()
    }
}

impl Collector for ClusterCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.snapshot();
        for (name, help, v) in s.counters() {
            let c = ConstCounter::new(v);
            let name = format!("tickwire_cluster_{name}");
            let m = enc.encode_descriptor(&name, help, None, c.metric_type())?;
            c.encode(m)?;
        }
        for (name, help, v) in [
            (
                "tickwire_cluster_nats_connected",
                "1 while connected to NATS",
                i64::from(s.connected),
            ),
            (
                "tickwire_cluster_publish_queue",
                "Ticks waiting to go to NATS",
                s.queue_len as i64,
            ),
        ] {
            let g = ConstGauge::new(v);
            let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(m)?;
        }
        Ok(())
    }
}
