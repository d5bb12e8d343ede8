//! The Coinbase Exchange WebSocket feed into tickwire: the `ticker` channel
//! (last trade, best bid and ask with sizes, 24 h volume) and the
//! `heartbeat` channel, one topic per product (`coinbase.BTC-USD` by default).
//! Prices keep Coinbase's digits (`"4388.01000000"` stays `4388.01000000`).
//!
//! After each connect it sends
//! `{"type":"subscribe","product_ids":[..],"channels":["ticker","heartbeat"]}`
//! (Coinbase disconnects clients that do not subscribe within 5 s). It reads
//! `ticker`, `heartbeat`, `subscriptions` and `error` messages and ignores
//! other types, as Coinbase asks of clients.
//!
//! # Sequence numbers and gaps
//! Every message of a product carries the product's `sequence`, which counts
//! all of its order-book events; the ticker channel carries only matches, so
//! consecutive tickers skip sequence numbers by design and a skip is not a
//! loss. The adapter uses `sequence` for order (a message not newer than the
//! last one of its product is stale: counted in `out_of_order` and skipped),
//! and detects lost messages with trade ids: each heartbeat names the
//! product's `last_trade_id`, and a trade a heartbeat announced must have
//! been covered by a ticker (`trade_id` at least as high) by the next
//! heartbeat a second later, else one gap is counted. The one-heartbeat
//! grace absorbs tickers that Coinbase batches during cascading matches.
//!
//! Entry points: [`spawn`] / [`run`] with a [`CoinbaseConfig`];
//! [`CoinbaseVenue`] is the message handling alone.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use simd_json::BorrowedValue;
use simd_json::prelude::*;
use tickwire_feed::venue_json::{num, parse_object, str_field, uint};
use tickwire_feed::ws::{Malformed, WsOptions, WsVenue, run_ws};
use tickwire_feed::{
    ConfigError, FeedContext, FeedStats, Publisher, StartError, Tick, TopicMap, parse_rfc3339_ms,
    spawn_feed_task, worth_logging,
};
use tickwire_proto::Topic;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use tickwire_feed::CoinbaseConfig;

/// Validates `cfg` and spawns the feed on the current runtime.
///
/// # Errors
/// [`StartError::Config`] for a bad config.
///
/// # Panics
/// Outside a tokio runtime.
pub fn spawn(cfg: CoinbaseConfig, ctx: FeedContext) -> Result<JoinHandle<()>, StartError> {
    let (venue, opts) = prepare(&cfg)?;
    let name = cfg.name.clone().unwrap_or_else(|| "coinbase".to_owned());
    Ok(spawn_feed_task(&name, "coinbase", run_ws(venue, opts, ctx)))
}

/// Runs the feed until `ctx.shutdown` is cancelled.
///
/// # Errors
/// [`StartError::Config`] for a bad config, before connecting.
pub async fn run(cfg: CoinbaseConfig, ctx: FeedContext) -> Result<(), StartError> {
    let (venue, opts) = prepare(&cfg)?;
    run_ws(venue, opts, ctx).await;
    Ok(())
}

fn prepare(cfg: &CoinbaseConfig) -> Result<(CoinbaseVenue, WsOptions), ConfigError> {
    let venue = CoinbaseVenue::new(cfg)?;
    let opts = WsOptions {
        url: cfg.url.clone(),
        backoff: cfg.backoff(),
        connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
        idle_timeout: Duration::from_millis(cfg.idle_timeout_ms),
        max_session: None,
    };
    Ok((venue, opts))
}

/// One product's state on the current connection.
#[derive(Debug)]
struct Product {
    topic: Topic,
    /// Highest `sequence` seen.
    last_seq: Option<u64>,
    /// Highest trade id accounted for: by a ticker, or as the baseline of the
    /// first heartbeat.
    seen_trade_id: Option<u64>,
    /// The last heartbeat's `last_trade_id`, when it was ahead of the tickers.
    announced: Option<u64>,
}

/// Coinbase message handling: subscription, parsing, ordering, gap counting.
#[derive(Debug)]
pub struct CoinbaseVenue {
    products: Vec<Product>,
    index: HashMap<String, usize>,
    subscribe: String,
}

impl CoinbaseVenue {
    /// # Errors
    /// [`ConfigError`] when `cfg` is invalid.
    pub fn new(cfg: &CoinbaseConfig) -> Result<CoinbaseVenue, ConfigError> {
        cfg.validate()?;
        let feed = cfg.name.clone().unwrap_or_else(|| "coinbase".to_owned());
        let map = TopicMap::new(&cfg.topic_prefix, &cfg.topics).map_err(|e| ConfigError {
            feed: feed.clone(),
            field: "topics",
            reason: e.to_string(),
        })?;
        let mut products = Vec::new();
        let mut index = HashMap::new();
        for p in &cfg.symbols {
            let topic = map.topic(p).map_err(|e| ConfigError {
                feed: feed.clone(),
                field: "symbols",
                reason: e.to_string(),
            })?;
            index.insert(p.clone(), products.len());
            products.push(Product {
                topic,
                last_seq: None,
                seen_trade_id: None,
                announced: None,
            });
        }
        let ids: Vec<String> = cfg.symbols.iter().map(|p| format!("\"{p}\"")).collect();
        let subscribe = format!(
            "{{\"type\":\"subscribe\",\"product_ids\":[{}],\"channels\":[\"ticker\",\"heartbeat\"]}}",
            ids.join(",")
        );
        Ok(CoinbaseVenue {
            products,
            index,
            subscribe,
        })
    }

    pub fn topics(&self) -> Vec<Topic> {
        self.products.iter().map(|p| p.topic.clone()).collect()
    }

    /// The subscribe request sent after each connect.
    pub fn subscribe_request(&self) -> &str {
        &self.subscribe
    }

    /// The product of a message, `None` for one we did not subscribe to.
    /// Also checks `sequence`: `Err(())` when the message is stale.
    fn product(
        &mut self,
        v: &BorrowedValue<'_>,
        stats: &FeedStats,
    ) -> Result<Option<Result<usize, ()>>, Malformed> {
        let id = str_field(v, "product_id", "`product_id` must be a string")?
            .ok_or(Malformed("message without a `product_id`"))?;
        let seq = uint(v, "sequence", "`sequence` must be a whole number")?;
        let Some(&i) = self.index.get(id) else {
            return Ok(None);
        };
        let p = &mut self.products[i];
        if let Some(seq) = seq {
            if p.last_seq.is_some_and(|last| seq <= last) {
                stats.out_of_order.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(Err(())));
            }
            p.last_seq = Some(seq);
        }
        Ok(Some(Ok(i)))
    }

    fn on_ticker(&mut self, v: &BorrowedValue<'_>, out: &mut Publisher) -> Result<(), Malformed> {
        let tick = Tick {
            price: num(v, "price", "ticker `price` must be numeric")?,
            bid: num(v, "best_bid", "ticker `best_bid` must be numeric")?,
            ask: num(v, "best_ask", "ticker `best_ask` must be numeric")?,
            bid_size: num(v, "best_bid_size", "ticker `best_bid_size` must be numeric")?,
            ask_size: num(v, "best_ask_size", "ticker `best_ask_size` must be numeric")?,
            volume: num(v, "volume_24h", "ticker `volume_24h` must be numeric")?,
            source_ts: match str_field(v, "time", "ticker `time` must be a string")? {
                Some(t) => Some(
                    parse_rfc3339_ms(t)
                        .ok_or(Malformed("ticker `time` is not an RFC 3339 time"))?,
                ),
                None => None,
            },
        };
        let trade_id = uint(v, "trade_id", "ticker `trade_id` must be a whole number")?;
        if tick.has_no_values() {
            return Err(Malformed("ticker without any price"));
        }
        let Some(Ok(i)) = self.product(v, out.stats())? else {
            return Ok(());
        };
        let p = &mut self.products[i];
        if let Some(t) = trade_id {
            p.seen_trade_id = Some(p.seen_trade_id.map_or(t, |s| s.max(t)));
        }
        out.publish(&p.topic, &tick);
        Ok(())
    }

    fn on_heartbeat(
        &mut self,
        v: &BorrowedValue<'_>,
        out: &mut Publisher,
    ) -> Result<(), Malformed> {
        let last_trade_id = uint(
            v,
            "last_trade_id",
            "heartbeat `last_trade_id` must be a whole number",
        )?;
        let Some(Ok(i)) = self.product(v, out.stats())? else {
            return Ok(());
        };
        let p = &mut self.products[i];
        // 0 has been seen from Coinbase when it does not know: no information.
        let Some(lt) = last_trade_id.filter(|&t| t > 0) else {
            return Ok(());
        };
        let Some(seen) = p.seen_trade_id else {
            // First heartbeat with no ticker yet: trades up to here came
            // before our subscription.
            p.seen_trade_id = Some(lt);
            return Ok(());
        };
        let mut seen = seen;
        if let Some(announced) = p.announced.take() {
            if announced > seen {
                let n = FeedStats::bump(&out.stats().gaps);
                if worth_logging(n) {
                    warn!(topic = %p.topic, last_ticker_trade = seen, announced, "a heartbeat's trade never came as a ticker: messages were missed");
                }
                seen = announced;
                p.seen_trade_id = Some(seen);
            }
        }
        if lt > seen {
            p.announced = Some(lt);
        }
        Ok(())
    }
}

impl WsVenue for CoinbaseVenue {
    fn on_connect(&mut self) -> Vec<String> {
        // Sequence and trade-id tracking starts afresh with each connection:
        // what was missed while disconnected is the reconnect, counted as such.
        for p in &mut self.products {
            p.last_seq = None;
            p.seen_trade_id = None;
            p.announced = None;
        }
        vec![self.subscribe.clone()]
    }

    fn on_message(&mut self, msg: &mut [u8], out: &mut Publisher) -> Result<(), Malformed> {
        let v = parse_object(msg)?;
        let kind = str_field(&v, "type", "`type` must be a string")?
            .ok_or(Malformed("message without a `type`"))?;
        match kind {
            "ticker" => self.on_ticker(&v, out),
            "heartbeat" => self.on_heartbeat(&v, out),
            "subscriptions" => {
                let channels = v
                    .get("channels")
                    .and_then(|c| c.as_array())
                    .map_or(0, |c| c.len());
                info!(channels, "subscribed");
                Ok(())
            }
            "error" => {
                let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("");
                let reason = v.get("reason").and_then(|m| m.as_str()).unwrap_or("");
                let n = FeedStats::bump(&out.stats().venue_errors);
                warn!(message, reason, count = n, "Coinbase sent an error");
                Ok(())
            }
            other => {
                debug!(kind = other, "ignored a message type");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tickwire_feed::testing::CollectingSink;

    use super::*;

    fn venue() -> (
        CoinbaseVenue,
        Publisher,
        Arc<CollectingSink>,
        Arc<FeedStats>,
    ) {
        let v = CoinbaseVenue::new(&CoinbaseConfig::new(&["BTC-USD", "ETH-USD"])).unwrap();
        let sink = CollectingSink::new();
        let stats = Arc::new(FeedStats::new());
        let out = Publisher::new(sink.clone(), stats.clone());
        (v, out, sink, stats)
    }

    fn feed(v: &mut CoinbaseVenue, out: &mut Publisher, msg: &str) -> Result<(), Malformed> {
        v.on_message(&mut msg.as_bytes().to_vec(), out)
    }

    fn ticker(seq: u64, trade: u64, price: &str) -> String {
        format!(
            r#"{{"type":"ticker","sequence":{seq},"product_id":"BTC-USD","price":"{price}","open_24h":"63000.00","volume_24h":"12000.12345678","low_24h":"62000","high_24h":"65000","volume_30d":"300000.1","best_bid":"64012.00","best_bid_size":"0.50000000","best_ask":"64012.51","best_ask_size":"1.25000000","side":"buy","time":"2025-11-26T04:32:00.123456Z","trade_id":{trade},"last_size":"0.01"}}"#
        )
    }

    fn heartbeat(seq: u64, last_trade: u64) -> String {
        format!(
            r#"{{"type":"heartbeat","sequence":{seq},"last_trade_id":{last_trade},"product_id":"BTC-USD","time":"2025-11-26T04:32:01.000000Z"}}"#
        )
    }

    #[test]
    fn the_subscription_asks_for_ticker_and_heartbeat() {
        let (v, ..) = venue();
        assert_eq!(
            v.subscribe_request(),
            r#"{"type":"subscribe","product_ids":["BTC-USD","ETH-USD"],"channels":["ticker","heartbeat"]}"#
        );
    }

    #[test]
    fn a_ticker_becomes_a_tick_with_coinbase_digits() {
        let (mut v, mut out, sink, _) = venue();
        feed(&mut v, &mut out, &ticker(100, 7, "64012.51000000")).unwrap();
        let t = &sink.ticks()[0];
        assert_eq!(t.topic.as_str(), "coinbase.BTC-USD");
        assert_eq!(
            t.data,
            r#"{"price":64012.51000000,"bid":64012.00,"ask":64012.51,"bid_size":0.50000000,"ask_size":1.25000000,"volume":12000.12345678,"source_ts":1764131520123}"#
        );
    }

    #[test]
    fn stale_sequences_are_skipped() {
        let (mut v, mut out, sink, stats) = venue();
        feed(&mut v, &mut out, &ticker(100, 1, "1.0")).unwrap();
        feed(&mut v, &mut out, &ticker(250, 2, "2.0")).unwrap();
        feed(&mut v, &mut out, &ticker(250, 2, "2.0")).unwrap();
        feed(&mut v, &mut out, &ticker(180, 3, "3.0")).unwrap();
        // Skips in the sequence are normal on the ticker channel.
        feed(&mut v, &mut out, &ticker(900, 4, "4.0")).unwrap();
        let s = stats.snapshot();
        assert_eq!((sink.len(), s.out_of_order, s.gaps), (3, 2, 0));
    }

    #[test]
    fn a_trade_announced_by_a_heartbeat_but_never_ticked_is_a_gap() {
        let (mut v, mut out, _, stats) = venue();
        feed(&mut v, &mut out, &heartbeat(10, 100)).unwrap(); // baseline
        feed(&mut v, &mut out, &ticker(11, 101, "1.0")).unwrap();
        feed(&mut v, &mut out, &ticker(12, 102, "1.1")).unwrap();
        feed(&mut v, &mut out, &heartbeat(13, 102)).unwrap();
        feed(&mut v, &mut out, &heartbeat(14, 102)).unwrap();
        assert_eq!(stats.snapshot().gaps, 0);
        // Trade 104 is announced; its ticker may still come (batching)...
        feed(&mut v, &mut out, &heartbeat(20, 104)).unwrap();
        assert_eq!(stats.snapshot().gaps, 0);
        // ... and it does: no gap.
        feed(&mut v, &mut out, &ticker(21, 104, "1.2")).unwrap();
        feed(&mut v, &mut out, &heartbeat(22, 104)).unwrap();
        assert_eq!(stats.snapshot().gaps, 0);
        // Trade 108 is announced and never ticked by the next heartbeat: a gap,
        // counted once however many heartbeats follow.
        feed(&mut v, &mut out, &heartbeat(30, 108)).unwrap();
        feed(&mut v, &mut out, &heartbeat(31, 108)).unwrap();
        feed(&mut v, &mut out, &heartbeat(32, 108)).unwrap();
        assert_eq!(stats.snapshot().gaps, 1);
        // last_trade_id 0 says nothing.
        feed(&mut v, &mut out, &heartbeat(33, 0)).unwrap();
        feed(&mut v, &mut out, &heartbeat(34, 0)).unwrap();
        assert_eq!(stats.snapshot().gaps, 1);
    }

    #[test]
    fn other_messages_are_not_ticks_and_errors_are_counted() {
        let (mut v, mut out, sink, stats) = venue();
        feed(&mut v, &mut out, r#"{"type":"subscriptions","channels":[{"name":"ticker","product_ids":["BTC-USD"]},{"name":"heartbeat","product_ids":["BTC-USD"]}]}"#).unwrap();
        feed(&mut v, &mut out, r#"{"type":"error","message":"Failed to subscribe","reason":"XYZ-USD is not a valid product"}"#).unwrap();
        feed(&mut v, &mut out, r#"{"type":"status","products":[]}"#).unwrap();
        feed(
            &mut v,
            &mut out,
            r#"{"type":"ticker","sequence":1,"product_id":"XRP-USD","price":"0.5"}"#,
        )
        .unwrap();
        assert!(sink.is_empty());
        assert_eq!(stats.snapshot().venue_errors, 1);
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        let (mut v, mut out, sink, _) = venue();
        for bad in [
            "{",
            r#""ticker""#,
            r#"{"product_id":"BTC-USD"}"#,
            r#"{"type":5}"#,
            r#"{"type":"ticker","sequence":1,"price":"1.0"}"#,
            r#"{"type":"ticker","sequence":1,"product_id":"BTC-USD","price":"one"}"#,
            r#"{"type":"ticker","sequence":"x","product_id":"BTC-USD","price":"1.0"}"#,
            r#"{"type":"ticker","sequence":1,"product_id":"BTC-USD","price":"1.0","time":"yesterday"}"#,
            r#"{"type":"ticker","sequence":1,"product_id":"BTC-USD"}"#,
            r#"{"type":"heartbeat","sequence":1,"product_id":"BTC-USD","last_trade_id":-4}"#,
        ] {
            assert!(feed(&mut v, &mut out, bad).is_err(), "{bad}");
        }
        assert!(sink.is_empty());
    }
}
