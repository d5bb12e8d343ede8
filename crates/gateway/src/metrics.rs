//! Prometheus metrics (`GET /metrics`). Gateway counters live here; the
//! engine's counters are read at scrape time by [`EngineCollector`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tickwire_engine::Engine;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    pub connections: Gauge,
    pub connections_total: Counter,
    pub frames_out: Counter,
    pub bytes_out: Counter,
    /// Sends made by a publishing task straight to an idle connection's socket.
    pub direct_writes: Counter,
    /// io_uring submissions that carried direct writes (several each).
    pub direct_batches: Counter,
    pub errors: Family<CodeLabel, Counter>,
    pub closes: Family<CodeLabel, Counter>,
    pub slow_consumers: Family<ReasonLabel, Counter>,
    pub heartbeat_timeouts: Counter,
    pub rejected_upgrades: Family<ReasonLabel, Counter>,
    pub http_published: Counter,
    /// Buffered amount of a connection, observed at each writer batch.
    pub buffered_bytes: Histogram,
    /// Largest buffered amount any connection reached.
    pub buffered_bytes_max: Arc<AtomicI64>,
    registry: Registry,
}

/// Reads the engine's atomics on each scrape.
#[derive(Debug)]
struct EngineCollector {
    engine: Arc<Engine>,
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    let m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

impl Collector for EngineCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.engine.stats();
        let r = Ordering::Relaxed;
        counter(
            &mut enc,
            "tickwire_ticks_in",
            "Ticks accepted",
            s.ticks_in.load(r),
        )?;
        counter(
            &mut enc,
            "tickwire_deliveries",
            "Tick frames handed to subscribers' outboxes",
            s.deliveries.load(r),
        )?;
        counter(
            &mut enc,
            "tickwire_conflated_frames",
            "Pending ticks dropped by conflation (backpressure or max_hz)",
            s.conflated.load(r),
        )?;
        counter(
            &mut enc,
            "tickwire_replayed_ticks",
            "Ticks replayed by recovery",
            s.replayed.load(r),
        )?;
        counter(
            &mut enc,
            "tickwire_stale_events",
            "Times a topic went stale",
            s.stale_events.load(r),
        )?;
        for (name, help, v) in [
            (
                "tickwire_cluster_remote_applied",
                "Ticks from other nodes delivered here",
                &s.remote_applied,
            ),
            (
                "tickwire_cluster_remote_duplicates",
                "Ticks from other nodes already seen",
                &s.remote_duplicates,
            ),
            (
                "tickwire_cluster_remote_gaps",
                "Ticks of another node's epoch that never arrived",
                &s.remote_gaps,
            ),
            (
                "tickwire_cluster_epoch_conflicts",
                "Times two nodes published one topic at once",
                &s.epoch_conflicts,
            ),
        ] {
            counter(&mut enc, name, help, v.load(r))?;
        }
        let (conns, subs) = self.engine.subscription_counts();
        gauge(
            &mut enc,
            "tickwire_subscriptions",
            "Patterns held",
            subs as i64,
        )?;
        gauge(
            &mut enc,
            "tickwire_engine_connections",
            "Connections registered in the engine",
            conns as i64,
        )?;
        gauge(
            &mut enc,
            "tickwire_topics",
            "Topics known",
            self.engine.topic_count() as i64,
        )?;
        Ok(())
    }
}

impl Metrics {
    pub fn new(engine: Arc<Engine>) -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            connections: Gauge::default(),
            connections_total: Counter::default(),
            frames_out: Counter::default(),
            bytes_out: Counter::default(),
            direct_writes: Counter::default(),
            direct_batches: Counter::default(),
            errors: Family::default(),
            closes: Family::default(),
            slow_consumers: Family::default(),
            heartbeat_timeouts: Counter::default(),
            rejected_upgrades: Family::default(),
            http_published: Counter::default(),
            buffered_bytes: Histogram::new(exponential_buckets(1024.0, 4.0, 8)),
            buffered_bytes_max: Arc::new(AtomicI64::new(0)),
            registry: Registry::default(),
        };
        registry.register(
            "tickwire_connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        registry.register(
            "tickwire_connections_accepted",
            "WebSocket connections accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "tickwire_frames_out",
            "Frames written to clients",
            m.frames_out.clone(),
        );
        registry.register(
            "tickwire_bytes_out",
            "Bytes written to clients",
            m.bytes_out.clone(),
        );
        registry.register(
            "tickwire_direct_writes",
            "Sends made by a publishing task straight to an idle connection's socket",
            m.direct_writes.clone(),
        );
        registry.register(
            "tickwire_direct_write_batches",
            "io_uring submissions that carried direct writes (up to 32 each)",
            m.direct_batches.clone(),
        );
        registry.register("tickwire_errors", "Error replies by code", m.errors.clone());
        registry.register(
            "tickwire_closes",
            "Connections closed, by close code",
            m.closes.clone(),
        );
        registry.register(
            "tickwire_slow_consumer_closes",
            "Connections closed as slow consumers, by reason",
            m.slow_consumers.clone(),
        );
        registry.register(
            "tickwire_heartbeat_timeouts",
            "Connections closed for silence",
            m.heartbeat_timeouts.clone(),
        );
        registry.register(
            "tickwire_rejected_upgrades",
            "WebSocket upgrades refused, by reason",
            m.rejected_upgrades.clone(),
        );
        registry.register(
            "tickwire_http_published",
            "Ticks published over HTTP",
            m.http_published.clone(),
        );
        registry.register(
            "tickwire_buffered_bytes",
            "Buffered amount of a connection at each write batch",
            m.buffered_bytes.clone(),
        );
        // The writers update this atomic with fetch_max; it is read at scrape time.
        registry.register_collector(Box::new(MaxCollector(m.buffered_bytes_max.clone())));
        registry.register_collector(Box::new(EngineCollector { engine }));
        Metrics { registry, ..m }
    }

    /// The registry, for extra collectors (feeds).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn error(&self, code: &str) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.to_owned(),
            })
            .inc();
    }

    pub fn close(&self, code: u16) {
        self.closes
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[derive(Debug)]
struct MaxCollector(Arc<AtomicI64>);

impl Collector for MaxCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge(
            &mut enc,
            "tickwire_buffered_bytes_max",
            "Largest buffered amount any connection reached",
            self.0.load(Ordering::Relaxed),
        )
    }
}
