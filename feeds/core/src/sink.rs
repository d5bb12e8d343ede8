//! Where feeds put their ticks: [`TickSink`], implemented by the engine and,
//! for tests, by [`crate::testing::CollectingSink`].

use std::sync::Arc;

use tickwire_engine::{Engine, PublishError};
use tickwire_proto::Topic;

/// Why a sink refused a tick. Cheap to return on every tick.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The engine refused the tick (for now only: its topic limit is reached).
    #[error(transparent)]
    Engine(#[from] PublishError),
    /// The sink is shut down and takes no more ticks.
    #[error("the sink is closed")]
    Closed,
}

/// Takes ticks from feeds. Synchronous and quick: [`Engine::publish`] never
/// waits on a client, and a sink must not either.
pub trait TickSink: Send + Sync {
    /// Publishes `data`, one JSON object, byte for byte, to `topic`; returns
    /// the tick's seq in its topic.
    ///
    /// # Errors
    /// [`SinkError`] when the tick was not taken.
    fn publish(&self, topic: &Topic, data: &[u8]) -> Result<u64, SinkError>;
}

impl TickSink for Engine {
    fn publish(&self, topic: &Topic, data: &[u8]) -> Result<u64, SinkError> {
        Ok(Engine::publish(self, topic, data)?.seq)
    }
}

/// So that `Arc<Engine>` (and `Arc<Arc<..>>`) is a sink too. Where this trait
/// is in scope, `arc_engine.publish(..)` means this method: call
/// `Engine::publish(&engine, ..)` for the engine's own.
impl<T: TickSink + ?Sized> TickSink for Arc<T> {
    fn publish(&self, topic: &Topic, data: &[u8]) -> Result<u64, SinkError> {
        (**self).publish(topic, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_engine::EngineConfig;

    #[test]
    fn the_engine_is_a_sink_and_counts_seq_per_topic() {
        let engine = Arc::new(Engine::new(EngineConfig::default()));
        let sink: Arc<dyn TickSink> = engine.clone();
        let btc = Topic::parse("crypto.BTC-USD").unwrap();
        let eth = Topic::parse("crypto.ETH-USD").unwrap();
        assert_eq!(sink.publish(&btc, br#"{"price":1}"#), Ok(1));
        assert_eq!(sink.publish(&btc, br#"{"price":2}"#), Ok(2));
        assert_eq!(
            Engine::publish(&engine, &eth, br#"{"price":3}"#).map(|p| p.seq),
            Ok(1)
        );
        let arc_arc: Arc<Arc<Engine>> = Arc::new(engine.clone());
        assert_eq!(TickSink::publish(&arc_arc, &eth, b"{}"), Ok(2));
        let snap = engine.snapshot(std::slice::from_ref(&btc));
        assert_eq!(&snap[0].data[..], br#"{"price":2}"#);
    }

    #[test]
    fn a_full_engine_refuses_with_its_error() {
        let engine = Engine::new(EngineConfig {
            max_topics: 1,
            ..EngineConfig::default()
        });
        let a = Topic::parse("a").unwrap();
        let b = Topic::parse("b").unwrap();
        assert_eq!(TickSink::publish(&engine, &a, b"{}"), Ok(1));
        assert_eq!(
            TickSink::publish(&engine, &b, b"{}"),
            Err(SinkError::Engine(PublishError::TooManyTopics(1)))
        );
    }
}
