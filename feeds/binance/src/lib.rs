//! Binance spot market streams into tickwire: `bookTicker`, `trade`,
//! `ticker` (`24hrTicker` events) and `miniTicker` (`24hrMiniTicker`), raw
//! (`/ws`) or combined (`/stream`, messages wrapped in `{"stream":..,"data":..}`).
//!
//! All streams of a symbol update one topic (`binance.BTCUSDT` by default):
//! the adapter keeps the symbol's latest price, quote, sizes and volume and
//! publishes the whole of it on every event, so each tick is a complete
//! picture and a late subscriber's snapshot has every field. Prices keep
//! Binance's digits (`"64012.50000000"` stays `64012.50000000`).
//!
//! The connection loop ([`tickwire_feed::ws::run_ws`]) answers Binance's
//! Pings, reconnects with backoff, and reconnects on purpose after
//! `session_max_ms` (23 h 50 min), ahead of Binance's 24 h cut-off. After
//! each connect it sends `{"method":"SUBSCRIBE","params":[..],"id":1}`.
//! Trade ids are consecutive per symbol, so a jump counts as a gap; a
//! `bookTicker` whose update id `u` is not newer than the last is out of
//! order and skipped.
//!
//! Entry points: [`spawn`] / [`run`] with a [`BinanceConfig`]; [`BinanceVenue`]
//! is the message handling alone.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use simd_json::BorrowedValue;
use simd_json::prelude::*;
use tickwire_feed::venue_json::{num, parse_object, req_num, str_field, uint};
use tickwire_feed::ws::{Malformed, WsOptions, WsVenue, run_ws};
use tickwire_feed::{
    ConfigError, FeedContext, FeedStats, Publisher, StartError, Tick, TopicMap, spawn_feed_task,
    worth_logging,
};
use tickwire_proto::Topic;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use tickwire_feed::{BinanceConfig, BinanceStream};

/// Validates `cfg` and spawns the feed on the current runtime.
///
/// # Errors
/// [`StartError::Config`] for a bad config.
///
/// # Panics
/// Outside a tokio runtime.
pub fn spawn(cfg: BinanceConfig, ctx: FeedContext) -> Result<JoinHandle<()>, StartError> {
    let (venue, opts) = prepare(&cfg)?;
    let name = cfg.name.clone().unwrap_or_else(|| "binance".to_owned());
    Ok(spawn_feed_task(&name, "binance", run_ws(venue, opts, ctx)))
}

/// Runs the feed until `ctx.shutdown` is cancelled.
///
/// # Errors
/// [`StartError::Config`] for a bad config, before connecting.
pub async fn run(cfg: BinanceConfig, ctx: FeedContext) -> Result<(), StartError> {
    let (venue, opts) = prepare(&cfg)?;
    run_ws(venue, opts, ctx).await;
    Ok(())
}

fn prepare(cfg: &BinanceConfig) -> Result<(BinanceVenue, WsOptions), ConfigError> {
    let venue = BinanceVenue::new(cfg)?;
    let opts = WsOptions {
        url: cfg.url.clone(),
        backoff: cfg.backoff(),
        connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
        idle_timeout: Duration::from_millis(cfg.idle_timeout_ms),
        max_session: (cfg.session_max_ms > 0).then(|| Duration::from_millis(cfg.session_max_ms)),
    };
    Ok((venue, opts))
}

/// One symbol's merged state.
#[derive(Debug)]
struct Symbol {
    topic: Topic,
    /// Latest known values of every field; `source_ts` is per event.
    state: Tick,
    /// Last trade id seen on this connection (`t`), for gap detection.
    last_trade_id: Option<u64>,
    /// Last `bookTicker` update id (`u`) on this connection.
    last_book_id: Option<u64>,
}

/// Binance message handling: subscription, parsing, merging, counting.
#[derive(Debug)]
pub struct BinanceVenue {
    symbols: Vec<Symbol>,
    /// Upper-case symbol -> index into `symbols`.
    index: HashMap<String, usize>,
    subscribe: String,
}

impl BinanceVenue {
    /// # Errors
    /// [`ConfigError`] when `cfg` is invalid.
    pub fn new(cfg: &BinanceConfig) -> Result<BinanceVenue, ConfigError> {
        cfg.validate()?;
        let feed = cfg.name.clone().unwrap_or_else(|| "binance".to_owned());
        // Explicit topics match symbols in any case, as the symbols do.
        let explicit = cfg
            .topics
            .iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
            .collect();
        let map = TopicMap::new(&cfg.topic_prefix, &explicit).map_err(|e| ConfigError {
            feed: feed.clone(),
            field: "topics",
            reason: e.to_string(),
        })?;
        let mut symbols = Vec::new();
        let mut index = HashMap::new();
        let mut params = Vec::new();
        for s in &cfg.symbols {
            let upper = s.to_ascii_uppercase();
            let topic = map.topic(&upper).map_err(|e| ConfigError {
                feed: feed.clone(),
                field: "symbols",
                reason: e.to_string(),
            })?;
            index.insert(upper, symbols.len());
            symbols.push(Symbol {
                topic,
                state: Tick::default(),
                last_trade_id: None,
                last_book_id: None,
            });
            let lower = s.to_ascii_lowercase();
            for stream in &cfg.streams {
                params.push(format!("\"{lower}@{}\"", stream.as_str()));
            }
        }
        let subscribe = format!(
            "{{\"method\":\"SUBSCRIBE\",\"params\":[{}],\"id\":1}}",
            params.join(",")
        );
        Ok(BinanceVenue {
            symbols,
            index,
            subscribe,
        })
    }

    /// The topics, in the order of the config's symbols.
    pub fn topics(&self) -> Vec<Topic> {
        self.symbols.iter().map(|s| s.topic.clone()).collect()
    }

    /// The SUBSCRIBE request sent after each connect.
    pub fn subscribe_request(&self) -> &str {
        &self.subscribe
    }

    fn symbol(&mut self, ev: &BorrowedValue<'_>) -> Result<Option<&mut Symbol>, Malformed> {
        let s = str_field(ev, "s", "`s` must be a string")?
            .ok_or(Malformed("event without a symbol `s`"))?;
        // Binance sends upper case; the lookup tolerates either.
        let idx = match self.index.get(s) {
            Some(&i) => Some(i),
            None => self.index.get(&s.to_ascii_uppercase()).copied(),
        };
        Ok(idx.map(|i| &mut self.symbols[i]))
    }

    fn on_event(&mut self, ev: &BorrowedValue<'_>, out: &mut Publisher) -> Result<(), Malformed> {
        let kind = str_field(ev, "e", "`e` must be a string")?;
        match kind {
            Some("trade") => self.on_trade(ev, out),
            Some("24hrTicker") => self.on_ticker(ev, out, true),
            Some("24hrMiniTicker") => self.on_ticker(ev, out, false),
            // New event types may come; they are not errors.
            Some(other) => {
                debug!(event = other, "ignored an event type");
                Ok(())
            }
            // Spot bookTicker events have no `e`: recognised by their fields.
            None if ev.get("u").is_some() && ev.get("b").is_some() && ev.get("a").is_some() => {
                self.on_book_ticker(ev, out)
            }
            None => Err(Malformed("neither an event nor a reply")),
        }
    }

    fn on_trade(&mut self, ev: &BorrowedValue<'_>, out: &mut Publisher) -> Result<(), Malformed> {
        let price = req_num(ev, "p", "trade without a numeric price `p`")?;
        let id = uint(ev, "t", "trade id `t` must be a whole number")?;
        let time = match uint(ev, "T", "trade time `T` must be a whole number")? {
            Some(t) => Some(t),
            None => uint(ev, "E", "event time `E` must be a whole number")?,
        };
        let Some(sym) = self.symbol(ev)? else {
            return Ok(());
        };
        if let Some(id) = id {
            if let Some(last) = sym.last_trade_id {
                if id <= last {
                    out.stats().out_of_order.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                if id > last + 1 {
                    let n = FeedStats::bump(&out.stats().gaps);
                    if worth_logging(n) {
                        warn!(topic = %sym.topic, last, id, missed = id - last - 1, "trade ids jumped: trades were missed");
                    }
                }
            }
            sym.last_trade_id = Some(id);
        }
        sym.state.price = Some(price);
        sym.state.source_ts = time;
        out.publish(&sym.topic, &sym.state);
        Ok(())
    }

    fn on_ticker(
        &mut self,
        ev: &BorrowedValue<'_>,
        out: &mut Publisher,
        full: bool,
    ) -> Result<(), Malformed> {
        let price = req_num(ev, "c", "ticker without a numeric last price `c`")?;
        let volume = num(ev, "v", "ticker volume `v` must be numeric")?;
        let time = uint(ev, "E", "event time `E` must be a whole number")?;
        let quote = if full {
            Some((
                num(ev, "b", "ticker bid `b` must be numeric")?,
                num(ev, "B", "ticker bid size `B` must be numeric")?,
                num(ev, "a", "ticker ask `a` must be numeric")?,
                num(ev, "A", "ticker ask size `A` must be numeric")?,
            ))
        } else {
            None
        };
        let Some(sym) = self.symbol(ev)? else {
            return Ok(());
        };
        let st = &mut sym.state;
        st.price = Some(price);
        st.volume = volume.or(st.volume);
        if let Some((b, bs, a, as_)) = quote {
            st.bid = b.or(st.bid);
            st.bid_size = bs.or(st.bid_size);
            st.ask = a.or(st.ask);
            st.ask_size = as_.or(st.ask_size);
        }
        st.source_ts = time;
        out.publish(&sym.topic, &sym.state);
        Ok(())
    }

    fn on_book_ticker(
        &mut self,
        ev: &BorrowedValue<'_>,
        out: &mut Publisher,
    ) -> Result<(), Malformed> {
        let bid = req_num(ev, "b", "bookTicker without a numeric bid `b`")?;
        let bid_size = num(ev, "B", "bookTicker bid size `B` must be numeric")?;
        let ask = req_num(ev, "a", "bookTicker without a numeric ask `a`")?;
        let ask_size = num(ev, "A", "bookTicker ask size `A` must be numeric")?;
        let id = uint(ev, "u", "bookTicker update id `u` must be a whole number")?;
        // Spot bookTicker has no time; futures-style ones have `T` / `E`.
        let time = match uint(ev, "T", "`T` must be a whole number")? {
            Some(t) => Some(t),
            None => uint(ev, "E", "`E` must be a whole number")?,
        };
        let Some(sym) = self.symbol(ev)? else {
            return Ok(());
        };
        if let (Some(id), Some(last)) = (id, sym.last_book_id) {
            if id <= last {
                out.stats().out_of_order.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        sym.last_book_id = id.or(sym.last_book_id);
        let st = &mut sym.state;
        st.bid = Some(bid);
        st.bid_size = bid_size.or(st.bid_size);
        st.ask = Some(ask);
        st.ask_size = ask_size.or(st.ask_size);
        st.source_ts = time;
        out.publish(&sym.topic, &sym.state);
        Ok(())
    }
}

impl WsVenue for BinanceVenue {
    fn on_connect(&mut self) -> Vec<String> {
        // Ids restart with the new connection's stream: a jump across a
        // reconnect is the reconnect, already counted, not a gap.
        for s in &mut self.symbols {
            s.last_trade_id = None;
            s.last_book_id = None;
        }
        vec![self.subscribe.clone()]
    }

    fn on_message(&mut self, msg: &mut [u8], out: &mut Publisher) -> Result<(), Malformed> {
        let v = parse_object(msg)?;
        // A reply to our request: {"result":null,"id":1}.
        if v.get("id").is_some() && v.get("result").is_some() {
            info!("subscribed");
            return Ok(());
        }
        // An error: {"error":{"code":2,"msg":".."},"id":1} or {"code":2,"msg":".."}.
        let error = v.get("error").filter(|e| e.is_object()).unwrap_or(&v);
        if error.get("code").is_some() && error.get("msg").is_some() {
            let msg = error.get("msg").and_then(|m| m.as_str()).unwrap_or("");
            let code = error.get("code").and_then(|c| c.as_i64()).unwrap_or(0);
            let n = FeedStats::bump(&out.stats().venue_errors);
            warn!(code, msg, count = n, "Binance sent an error");
            return Ok(());
        }
        // A combined-stream message: {"stream":"btcusdt@trade","data":{..}}.
        match (v.get("stream"), v.get("data")) {
            (Some(_), Some(data)) if data.is_object() => self.on_event(data, out),
            (Some(_), Some(_)) => Err(Malformed("combined-stream `data` is not an object")),
            _ => self.on_event(&v, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tickwire_feed::FeedStats;
    use tickwire_feed::testing::CollectingSink;

    use super::*;

    fn venue() -> (BinanceVenue, Publisher, Arc<CollectingSink>, Arc<FeedStats>) {
        let mut cfg = BinanceConfig::new(&["BTCUSDT", "ethusdt"]);
        cfg.streams = vec![
            BinanceStream::BookTicker,
            BinanceStream::Trade,
            BinanceStream::Ticker,
            BinanceStream::MiniTicker,
        ];
        let v = BinanceVenue::new(&cfg).unwrap();
        let sink = CollectingSink::new();
        let stats = Arc::new(FeedStats::new());
        let out = Publisher::new(sink.clone(), stats.clone());
        (v, out, sink, stats)
    }

    fn feed(v: &mut BinanceVenue, out: &mut Publisher, msg: &str) -> Result<(), Malformed> {
        v.on_message(&mut msg.as_bytes().to_vec(), out)
    }

    #[test]
    fn the_subscription_names_every_stream_in_lower_case() {
        let (v, ..) = venue();
        assert_eq!(
            v.subscribe_request(),
            r#"{"method":"SUBSCRIBE","params":["btcusdt@bookTicker","btcusdt@trade","btcusdt@ticker","btcusdt@miniTicker","ethusdt@bookTicker","ethusdt@trade","ethusdt@ticker","ethusdt@miniTicker"],"id":1}"#
        );
        let topics: Vec<String> = v.topics().iter().map(|t| t.to_string()).collect();
        assert_eq!(topics, ["binance.BTCUSDT", "binance.ETHUSDT"]);
    }

    #[test]
    fn every_stream_format_updates_one_merged_topic() {
        let (mut v, mut out, sink, _) = venue();
        feed(&mut v, &mut out, r#"{"u":400900217,"s":"BTCUSDT","b":"64012.00000000","B":"1.50000000","a":"64012.50000000","A":"0.25000000"}"#).unwrap();
        feed(&mut v, &mut out, r#"{"e":"trade","E":1764131520150,"s":"BTCUSDT","t":12345,"p":"64012.50000000","q":"0.01000000","T":1764131520149,"m":true,"M":true}"#).unwrap();
        feed(&mut v, &mut out, r#"{"stream":"btcusdt@miniTicker","data":{"e":"24hrMiniTicker","E":1764131521000,"s":"BTCUSDT","c":"64013.10000000","o":"63000.00000000","h":"64500.00000000","l":"62900.00000000","v":"15234.12300000","q":"975000000.00"}}"#).unwrap();
        feed(&mut v, &mut out, r#"{"e":"24hrTicker","E":1764131522000,"s":"ETHUSDT","p":"12.0","P":"0.35","w":"3390.1","x":"3388.0","c":"3400.25","Q":"0.5","b":"3400.20","B":"10.1","a":"3400.30","A":"7.2","o":"3388.25","h":"3410","l":"3370","v":"180000.5","q":"610000000","O":0,"C":86400000,"F":0,"L":18150,"n":18151}"#).unwrap();
        let got: Vec<(String, String)> = sink
            .ticks()
            .into_iter()
            .map(|t| (t.topic.to_string(), t.data))
            .collect();
        assert_eq!(
            got,
            [
                ("binance.BTCUSDT".into(), r#"{"bid":64012.00000000,"ask":64012.50000000,"bid_size":1.50000000,"ask_size":0.25000000}"#.into()),
                ("binance.BTCUSDT".into(), r#"{"price":64012.50000000,"bid":64012.00000000,"ask":64012.50000000,"bid_size":1.50000000,"ask_size":0.25000000,"source_ts":1764131520149}"#.into()),
                ("binance.BTCUSDT".into(), r#"{"price":64013.10000000,"bid":64012.00000000,"ask":64012.50000000,"bid_size":1.50000000,"ask_size":0.25000000,"volume":15234.12300000,"source_ts":1764131521000}"#.into()),
                ("binance.ETHUSDT".into(), r#"{"price":3400.25,"bid":3400.20,"ask":3400.30,"bid_size":10.1,"ask_size":7.2,"volume":180000.5,"source_ts":1764131522000}"#.into()),
            ]
        );
    }

    #[test]
    fn replies_and_errors_are_not_ticks() {
        let (mut v, mut out, sink, stats) = venue();
        feed(&mut v, &mut out, r#"{"result":null,"id":1}"#).unwrap();
        feed(
            &mut v,
            &mut out,
            r#"{"error":{"code":2,"msg":"Invalid request: unknown stream"},"id":1}"#,
        )
        .unwrap();
        feed(
            &mut v,
            &mut out,
            r#"{"code":1,"msg":"Too many requests","id":2}"#,
        )
        .unwrap();
        feed(&mut v, &mut out, r#"{"e":"kline","s":"BTCUSDT"}"#).unwrap();
        feed(
            &mut v,
            &mut out,
            r#"{"e":"trade","s":"DOGEUSDT","t":1,"p":"0.1"}"#,
        )
        .unwrap();
        assert!(sink.is_empty());
        assert_eq!(stats.snapshot().venue_errors, 2);
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        let (mut v, mut out, sink, _) = venue();
        for bad in [
            "not json",
            "[1,2]",
            r#"{"e":"trade","s":"BTCUSDT","t":1,"p":"abc"}"#,
            r#"{"e":"trade","s":"BTCUSDT","t":1}"#,
            r#"{"e":"trade","t":1,"p":"1.0"}"#,
            r#"{"e":"trade","s":"BTCUSDT","t":-1,"p":"1.0"}"#,
            r#"{"e":7}"#,
            r#"{"u":1,"s":"BTCUSDT","b":"x","a":"1"}"#,
            r#"{"stream":"btcusdt@trade","data":[1]}"#,
            r#"{"hello":"world"}"#,
        ] {
            assert!(feed(&mut v, &mut out, bad).is_err(), "{bad}");
        }
        assert!(sink.is_empty());
    }

    #[test]
    fn trade_id_jumps_are_gaps_and_old_ids_are_skipped() {
        let (mut v, mut out, sink, stats) = venue();
        let trade =
            |t: u64| format!(r#"{{"e":"trade","E":1,"s":"BTCUSDT","t":{t},"p":"1.{t}","T":1}}"#);
        for t in [100, 101, 102, 105, 104, 106] {
            feed(&mut v, &mut out, &trade(t)).unwrap();
        }
        let s = stats.snapshot();
        assert_eq!((s.gaps, s.out_of_order, sink.len()), (1, 1, 5));
        // A new connection starts counting afresh.
        v.on_connect();
        feed(&mut v, &mut out, &trade(500)).unwrap();
        assert_eq!(stats.snapshot().gaps, 1);
        // bookTicker update ids only go forward.
        let book = |u: u64| format!(r#"{{"u":{u},"s":"BTCUSDT","b":"1","B":"1","a":"2","A":"1"}}"#);
        for u in [10, 12, 11] {
            feed(&mut v, &mut out, &book(u)).unwrap();
        }
        assert_eq!(stats.snapshot().out_of_order, 2);
    }
}
