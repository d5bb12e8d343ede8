//! Feed configuration: the `[[feeds]]` tables of the broker's TOML file.
//!
//! ```toml
//! [[feeds]]
//! kind = "binance"
//! symbols = ["BTCUSDT", "ETHUSDT"]
//!
//! [[feeds]]
//! kind = "replay"
//! path = "feeds/replay/data/sample.ndjson"
//! speed = 2.0
//! loop = true
//! ```
//!
//! Serde catches unknown fields and wrong types (naming them); [`FeedConfig::validate`]
//! then checks values, and its [`ConfigError`] names the feed and the field.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tickwire_proto::Topic;

use crate::backoff::BackoffConfig;
use crate::topic_map::TopicMap;

/// A value the config must not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("feed '{feed}': field `{field}`: {reason}")]
pub struct ConfigError {
    /// The feed's name (its `name`, else its kind).
    pub feed: String,
    /// The config key at fault.
    pub field: &'static str,
    pub reason: String,
}

/// One `[[feeds]]` table, chosen by its `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FeedConfig {
    Synthetic(SyntheticConfig),
    Replay(ReplayConfig),
    Binance(BinanceConfig),
    Coinbase(CoinbaseConfig),
}

/// `kind = "synthetic"`: random-walk prices (the demo feed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Names the feed in logs and metrics; defaults to the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Prepended to every topic (`demo` gives `demo.crypto.BTC-USD`); empty: none.
    #[serde(default)]
    pub topic_prefix: String,
    /// Mean ticks per second per symbol; bursts go above it, lulls below.
    #[serde(default = "defaults::rate_hz")]
    pub rate_hz: f64,
    /// The symbols to run, by topic (`crypto.BTC-USD`); empty: the whole universe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symbols: Vec<String>,
    /// Seed for repeatable prices; random when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            name: None,
            topic_prefix: String::new(),
            rate_hz: defaults::rate_hz(),
            symbols: Vec::new(),
            seed: None,
        }
    }
}

/// File format of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingFormat {
    Csv,
    #[serde(alias = "jsonl")]
    Ndjson,
}

/// `kind = "replay"`: a CSV or NDJSON recording played back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The recording; relative paths are from the broker's working directory.
    pub path: PathBuf,
    /// Pacing factor: 1 plays at the recorded pace, 10 ten times faster,
    /// 0 as fast as possible.
    #[serde(default = "defaults::speed")]
    pub speed: f64,
    /// Start again from the top after the last record.
    #[serde(rename = "loop", default)]
    pub looping: bool,
    /// Prepended to every recorded topic; empty: none.
    #[serde(default)]
    pub topic_prefix: String,
    /// `csv` or `ndjson`; by default from the file extension (`.csv`, else NDJSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<RecordingFormat>,
}

impl ReplayConfig {
    pub fn new(path: impl Into<PathBuf>) -> ReplayConfig {
        ReplayConfig {
            name: None,
            path: path.into(),
            speed: defaults::speed(),
            looping: false,
            topic_prefix: String::new(),
            format: None,
        }
    }
}

/// A Binance spot market stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinanceStream {
    /// Best bid and ask, on every change.
    #[serde(rename = "bookTicker")]
    BookTicker,
    /// Every trade.
    #[serde(rename = "trade")]
    Trade,
    /// The rolling 24 h ticker, once a second (`24hrTicker` events).
    #[serde(rename = "ticker")]
    Ticker,
    /// The light 24 h ticker, once a second (`24hrMiniTicker` events).
    #[serde(rename = "miniTicker")]
    MiniTicker,
}

impl BinanceStream {
    /// The stream name's suffix: `btcusdt@bookTicker`.
    pub fn as_str(self) -> &'static str {
        match self {
            BinanceStream::BookTicker => "bookTicker",
            BinanceStream::Trade => "trade",
            BinanceStream::Ticker => "ticker",
            BinanceStream::MiniTicker => "miniTicker",
        }
    }
}

/// Binance's cap on streams per connection.
pub const BINANCE_MAX_STREAMS: usize = 1024;

/// `kind = "binance"`: Binance spot market streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinanceConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The market-stream endpoint; `/stream` (combined streams) or `/ws`.
    #[serde(default = "defaults::binance_url")]
    pub url: String,
    /// Binance symbols (`BTCUSDT`), any case.
    pub symbols: Vec<String>,
    /// Streams per symbol; all of a symbol's streams update one topic.
    #[serde(default = "defaults::binance_streams")]
    pub streams: Vec<BinanceStream>,
    /// Topics are `topic_prefix.SYMBOL` (upper case); empty: `SYMBOL`.
    #[serde(default = "defaults::binance_prefix")]
    pub topic_prefix: String,
    /// Explicit topics by symbol, over the prefix rule: `{ BTCUSDT = "crypto.BTC-USDT" }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topics: BTreeMap<String, String>,
    #[serde(default = "defaults::reconnect_base_ms")]
    pub reconnect_base_ms: u64,
    #[serde(default = "defaults::reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Reconnect when nothing at all (not even a Ping) came for this long.
    #[serde(default = "defaults::binance_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Planned reconnect after this long, ahead of Binance's 24 h cut-off; 0: never.
    #[serde(default = "defaults::binance_session_max_ms")]
    pub session_max_ms: u64,
}

impl BinanceConfig {
    pub fn new(symbols: &[&str]) -> BinanceConfig {
        BinanceConfig {
            name: None,
            url: defaults::binance_url(),
            symbols: symbols.iter().map(|s| (*s).to_owned()).collect(),
            streams: defaults::binance_streams(),
            topic_prefix: defaults::binance_prefix(),
            topics: BTreeMap::new(),
            reconnect_base_ms: defaults::reconnect_base_ms(),
            reconnect_max_ms: defaults::reconnect_max_ms(),
            connect_timeout_ms: defaults::connect_timeout_ms(),
            idle_timeout_ms: defaults::binance_idle_timeout_ms(),
            session_max_ms: defaults::binance_session_max_ms(),
        }
    }

    pub fn backoff(&self) -> BackoffConfig {
        BackoffConfig::from_ms(self.reconnect_base_ms, self.reconnect_max_ms)
    }
}

/// `kind = "coinbase"`: the Coinbase Exchange feed (`ticker` and `heartbeat` channels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoinbaseConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "defaults::coinbase_url")]
    pub url: String,
    /// Coinbase product ids (`BTC-USD`).
    #[serde(alias = "product_ids")]
    pub symbols: Vec<String>,
    /// Topics are `topic_prefix.PRODUCT`; empty: `PRODUCT`.
    #[serde(default = "defaults::coinbase_prefix")]
    pub topic_prefix: String,
    /// Explicit topics by product id, over the prefix rule.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topics: BTreeMap<String, String>,
    #[serde(default = "defaults::reconnect_base_ms")]
    pub reconnect_base_ms: u64,
    #[serde(default = "defaults::reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Reconnect when nothing came for this long (heartbeats come every second).
    #[serde(default = "defaults::coinbase_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

impl CoinbaseConfig {
    pub fn new(products: &[&str]) -> CoinbaseConfig {
        CoinbaseConfig {
            name: None,
            url: defaults::coinbase_url(),
            symbols: products.iter().map(|s| (*s).to_owned()).collect(),
            topic_prefix: defaults::coinbase_prefix(),
            topics: BTreeMap::new(),
            reconnect_base_ms: defaults::reconnect_base_ms(),
            reconnect_max_ms: defaults::reconnect_max_ms(),
            connect_timeout_ms: defaults::connect_timeout_ms(),
            idle_timeout_ms: defaults::coinbase_idle_timeout_ms(),
        }
    }

    pub fn backoff(&self) -> BackoffConfig {
        BackoffConfig::from_ms(self.reconnect_base_ms, self.reconnect_max_ms)
    }
}

/// Default values, as functions for serde.
pub mod defaults {
    use super::BinanceStream;

    pub fn rate_hz() -> f64 {
        4.0
    }
    pub fn speed() -> f64 {
        1.0
    }
    pub fn binance_url() -> String {
        "wss://stream.binance.com:9443/stream".to_owned()
    }
    pub fn binance_streams() -> Vec<BinanceStream> {
        vec![
            BinanceStream::BookTicker,
            BinanceStream::Trade,
            BinanceStream::MiniTicker,
        ]
    }
    pub fn binance_prefix() -> String {
        "binance".to_owned()
    }
    pub fn coinbase_url() -> String {
        "wss://ws-feed.exchange.coinbase.com".to_owned()
    }
    pub fn coinbase_prefix() -> String {
        "coinbase".to_owned()
    }
    /// 0.5 s: the first reconnect comes quickly, with jitter.
    pub fn reconnect_base_ms() -> u64 {
        500
    }
    /// 20 s: a venue that is down is still retried three times a minute.
    pub fn reconnect_max_ms() -> u64 {
        20_000
    }
    pub fn connect_timeout_ms() -> u64 {
        10_000
    }
    /// Binance pings every 20 s, so a minute of silence means a dead link.
    pub fn binance_idle_timeout_ms() -> u64 {
        60_000
    }
    /// 23 h 50 min: reconnect on our terms before Binance cuts at 24 h.
    pub fn binance_session_max_ms() -> u64 {
        (23 * 60 + 50) * 60 * 1000
    }
    /// Coinbase heartbeats each product every second.
    pub fn coinbase_idle_timeout_ms() -> u64 {
        30_000
    }
}

/// Builds [`ConfigError`]s for one feed.
struct Check<'a> {
    feed: &'a str,
}

impl Check<'_> {
    fn err(&self, field: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            feed: self.feed.to_owned(),
            field,
            reason: reason.into(),
        }
    }

    fn ensure(
        &self,
        ok: bool,
        field: &'static str,
        reason: impl Into<String>,
    ) -> Result<(), ConfigError> {
        if ok {
            Ok(())
        } else {
            Err(self.err(field, reason))
        }
    }

    fn name(&self, name: &Option<String>) -> Result<(), ConfigError> {
        if let Some(n) = name {
            let ok = !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.'));
            self.ensure(
                ok,
                "name",
                "must be 1 to 64 characters of A-Z a-z 0-9 _ - : .",
            )?;
        }
        Ok(())
    }

    fn prefix(&self, prefix: &str) -> Result<(), ConfigError> {
        if !prefix.is_empty() {
            Topic::parse(prefix).map_err(|e| self.err("topic_prefix", e.to_string()))?;
        }
        Ok(())
    }

    fn url(&self, url: &str) -> Result<(), ConfigError> {
        let rest = if let Some(r) = url.strip_prefix("wss://") {
            self.ensure(
                cfg!(feature = "tls"),
                "url",
                "wss:// needs tickwire-feed's `tls` feature (or a TLS-terminating proxy and ws://)",
            )?;
            r
        } else if let Some(r) = url.strip_prefix("ws://") {
            r
        } else {
            return Err(self.err("url", format!("'{url}' must start with ws:// or wss://")));
        };
        self.ensure(
            !rest.is_empty() && !rest.starts_with('/') && !rest.contains(char::is_whitespace),
            "url",
            format!("'{url}' has no host or has spaces"),
        )
    }

    fn backoff(&self, base_ms: u64, max_ms: u64) -> Result<(), ConfigError> {
        self.ensure(base_ms >= 1, "reconnect_base_ms", "must be at least 1")?;
        self.ensure(
            max_ms >= base_ms,
            "reconnect_max_ms",
            format!("must be at least reconnect_base_ms ({base_ms})"),
        )?;
        self.ensure(
            max_ms <= 3_600_000,
            "reconnect_max_ms",
            "must be at most 3600000 (1 h)",
        )
    }

    fn positive_ms(&self, v: u64, field: &'static str) -> Result<(), ConfigError> {
        self.ensure(v >= 1, field, "must be at least 1")
    }

    /// Non-empty, no blanks, no duplicates (case-insensitively when
    /// `fold_case`), every symbol a valid topic under `prefix`, and every
    /// explicit topic for a listed symbol.
    fn symbols(
        &self,
        symbols: &[String],
        prefix: &str,
        topics: &BTreeMap<String, String>,
        fold_case: bool,
        allowed: fn(u8) -> bool,
    ) -> Result<(), ConfigError> {
        self.ensure(
            !symbols.is_empty(),
            "symbols",
            "must list at least one symbol",
        )?;
        let map = TopicMap::new(prefix, topics).map_err(|e| self.err("topics", e.to_string()))?;
        let mut seen = HashSet::new();
        for s in symbols {
            self.ensure(
                !s.is_empty() && s.bytes().all(allowed),
                "symbols",
                format!("'{s}' is not a symbol of this venue"),
            )?;
            let key = if fold_case {
                s.to_ascii_uppercase()
            } else {
                s.clone()
            };
            self.ensure(
                seen.insert(key),
                "symbols",
                format!("'{s}' is listed twice"),
            )?;
            map.topic(s)
                .map_err(|e| self.err("symbols", format!("'{s}' gives no valid topic: {e}")))?;
        }
        for sym in topics.keys() {
            let listed = symbols.iter().any(|s| {
                if fold_case {
                    s.eq_ignore_ascii_case(sym)
                } else {
                    s == sym
                }
            });
            self.ensure(listed, "topics", format!("'{sym}' is not in `symbols`"))?;
        }
        Ok(())
    }
}

impl FeedConfig {
    /// `synthetic`, `replay`, `binance` or `coinbase`.
    pub fn kind(&self) -> &'static str {
        match self {
            FeedConfig::Synthetic(_) => "synthetic",
            FeedConfig::Replay(_) => "replay",
            FeedConfig::Binance(_) => "binance",
            FeedConfig::Coinbase(_) => "coinbase",
        }
    }

    /// The feed's `name`, else its kind: its label in logs and metrics.
    pub fn name(&self) -> String {
        let name = match self {
            FeedConfig::Synthetic(c) => &c.name,
            FeedConfig::Replay(c) => &c.name,
            FeedConfig::Binance(c) => &c.name,
            FeedConfig::Coinbase(c) => &c.name,
        };
        name.clone().unwrap_or_else(|| self.kind().to_owned())
    }

    /// Checks the values serde could not: ranges, symbols, topics, URLs.
    ///
    /// # Errors
    /// The first [`ConfigError`] found, naming the feed and the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let feed = self.name();
        let c = Check { feed: &feed };
        match self {
            FeedConfig::Synthetic(s) => s.check(&c),
            FeedConfig::Replay(r) => r.check(&c),
            FeedConfig::Binance(b) => b.check(&c),
            FeedConfig::Coinbase(cb) => cb.check(&c),
        }
    }
}

impl SyntheticConfig {
    /// # Errors
    /// See [`FeedConfig::validate`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let feed = self.name.clone().unwrap_or_else(|| "synthetic".to_owned());
        self.check(&Check { feed: &feed })
    }

    fn check(&self, c: &Check<'_>) -> Result<(), ConfigError> {
        c.name(&self.name)?;
        c.prefix(&self.topic_prefix)?;
        c.ensure(
            self.rate_hz.is_finite() && self.rate_hz > 0.0 && self.rate_hz <= 1000.0,
            "rate_hz",
            format!("{} is not in (0, 1000]", self.rate_hz),
        )?;
        let mut seen = HashSet::new();
        for s in &self.symbols {
            c.ensure(seen.insert(s), "symbols", format!("'{s}' is listed twice"))?;
        }
        Ok(())
    }
}

impl ReplayConfig {
    /// # Errors
    /// See [`FeedConfig::validate`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let feed = self.name.clone().unwrap_or_else(|| "replay".to_owned());
        self.check(&Check { feed: &feed })
    }

    fn check(&self, c: &Check<'_>) -> Result<(), ConfigError> {
        c.name(&self.name)?;
        c.prefix(&self.topic_prefix)?;
        c.ensure(
            !self.path.as_os_str().is_empty(),
            "path",
            "must not be empty",
        )?;
        c.ensure(
            self.speed.is_finite() && self.speed >= 0.0 && self.speed <= 1e6,
            "speed",
            format!(
                "{} is not in [0, 1000000] (0: as fast as possible)",
                self.speed
            ),
        )
    }

    /// The configured format, else the one the file extension says.
    pub fn effective_format(&self) -> RecordingFormat {
        self.format
            .unwrap_or_else(|| match self.path.extension().and_then(|e| e.to_str()) {
                Some(e) if e.eq_ignore_ascii_case("csv") => RecordingFormat::Csv,
                _ => RecordingFormat::Ndjson,
            })
    }
}

impl BinanceConfig {
    /// # Errors
    /// See [`FeedConfig::validate`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let feed = self.name.clone().unwrap_or_else(|| "binance".to_owned());
        self.check(&Check { feed: &feed })
    }

    fn check(&self, c: &Check<'_>) -> Result<(), ConfigError> {
        c.name(&self.name)?;
        c.url(&self.url)?;
        c.prefix(&self.topic_prefix)?;
        c.symbols(&self.symbols, &self.topic_prefix, &self.topics, true, |b| {
            b.is_ascii_alphanumeric()
        })?;
        c.ensure(
            !self.streams.is_empty(),
            "streams",
            "must list at least one stream",
        )?;
        let distinct: HashSet<_> = self.streams.iter().collect();
        c.ensure(
            distinct.len() == self.streams.len(),
            "streams",
            "lists a stream twice",
        )?;
        let n = self.symbols.len() * self.streams.len();
        c.ensure(
            n <= BINANCE_MAX_STREAMS,
            "symbols",
            format!("{n} streams (symbols x streams), over Binance's {BINANCE_MAX_STREAMS} per connection"),
        )?;
        c.backoff(self.reconnect_base_ms, self.reconnect_max_ms)?;
        c.positive_ms(self.connect_timeout_ms, "connect_timeout_ms")?;
        c.positive_ms(self.idle_timeout_ms, "idle_timeout_ms")?;
        c.ensure(
            self.session_max_ms < 24 * 3_600_000,
            "session_max_ms",
            "must be under 86400000: Binance closes connections at 24 h (0: never reconnect on purpose)",
        )
    }
}

impl CoinbaseConfig {
    /// # Errors
    /// See [`FeedConfig::validate`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let feed = self.name.clone().unwrap_or_else(|| "coinbase".to_owned());
        self.check(&Check { feed: &feed })
    }

    fn check(&self, c: &Check<'_>) -> Result<(), ConfigError> {
        c.name(&self.name)?;
        c.url(&self.url)?;
        c.prefix(&self.topic_prefix)?;
        c.symbols(
            &self.symbols,
            &self.topic_prefix,
            &self.topics,
            false,
            |b| b.is_ascii_alphanumeric() || b == b'-',
        )?;
        c.backoff(self.reconnect_base_ms, self.reconnect_max_ms)?;
        c.positive_ms(self.connect_timeout_ms, "connect_timeout_ms")?;
        c.positive_ms(self.idle_timeout_ms, "idle_timeout_ms")
    }
}

/// Validates every feed, and that their names (labels in metrics) differ.
///
/// # Errors
/// The first [`ConfigError`] found.
pub fn validate_feeds(feeds: &[FeedConfig]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    for f in feeds {
        f.validate()?;
        let name = f.name();
        if !names.insert(name.clone()) {
            return Err(ConfigError {
                feed: name,
                field: "name",
                reason: "two feeds have this name: give each its own `name`".to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct File {
        #[serde(default)]
        feeds: Vec<FeedConfig>,
    }

    fn parse(toml_text: &str) -> Result<Vec<FeedConfig>, String> {
        toml::from_str::<File>(toml_text)
            .map(|f| f.feeds)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_kind_parses_from_feeds_tables() {
        let feeds = parse(
            r#"
            [[feeds]]
            kind = "synthetic"
            rate_hz = 2.5

            [[feeds]]
            kind = "replay"
            path = "data/sample.ndjson"
            speed = 10
            loop = true

            [[feeds]]
            kind = "binance"
            url = "ws://127.0.0.1:9000/stream"
            symbols = ["BTCUSDT", "ethusdt"]
            streams = ["bookTicker", "trade", "ticker", "miniTicker"]
            topics = { BTCUSDT = "crypto.BTC-USDT" }

            [[feeds]]
            kind = "coinbase"
            name = "cb"
            product_ids = ["BTC-USD"]
            topic_prefix = "venue.cb"
            reconnect_base_ms = 10
            reconnect_max_ms = 50
            "#,
        )
        .unwrap();
        assert_eq!(feeds.len(), 4);
        let FeedConfig::Synthetic(s) = &feeds[0] else {
            panic!()
        };
        assert_eq!(s.rate_hz, 2.5);
        assert_eq!(s.topic_prefix, "");
        let FeedConfig::Replay(r) = &feeds[1] else {
            panic!()
        };
        assert_eq!((r.speed, r.looping), (10.0, true));
        assert_eq!(r.effective_format(), RecordingFormat::Ndjson);
        let FeedConfig::Binance(b) = &feeds[2] else {
            panic!()
        };
        assert_eq!(b.streams.len(), 4);
        assert_eq!(b.topic_prefix, "binance");
        assert_eq!(b.session_max_ms, 85_800_000);
        let FeedConfig::Coinbase(c) = &feeds[3] else {
            panic!()
        };
        assert_eq!(c.symbols, ["BTC-USD"]);
        assert_eq!(c.backoff(), BackoffConfig::from_ms(10, 50));
        assert_eq!(feeds[3].name(), "cb");
        assert_eq!(feeds[2].name(), "binance");
        validate_feeds(&feeds).unwrap();
    }

    #[test]
    fn serde_errors_name_the_bad_field() {
        let e = parse("[[feeds]]\nkind = \"binance\"\nsymbls = [\"BTCUSDT\"]\n").unwrap_err();
        assert!(e.contains("symbls"), "{e}");
        let e = parse("[[feeds]]\nkind = \"binance\"\n").unwrap_err();
        assert!(e.contains("symbols"), "{e}");
        let e =
            parse("[[feeds]]\nkind = \"replay\"\npath = \"x\"\nspeed = \"fast\"\n").unwrap_err();
        assert!(e.contains("speed") || e.contains("invalid type"), "{e}");
        let e = parse("[[feeds]]\nkind = \"kraken\"\n").unwrap_err();
        assert!(e.contains("kraken"), "{e}");
        let e = parse(
            "[[feeds]]\nkind = \"binance\"\nsymbols = [\"BTCUSDT\"]\nstreams = [\"depth\"]\n",
        )
        .unwrap_err();
        assert!(e.contains("depth"), "{e}");
    }

    #[test]
    fn validation_names_the_feed_and_the_field() {
        let field = |toml_text: &str| -> &'static str {
            let feeds = parse(toml_text).unwrap();
            validate_feeds(&feeds).unwrap_err().field
        };
        assert_eq!(
            field("[[feeds]]\nkind = \"binance\"\nsymbols = []\n"),
            "symbols"
        );
        assert_eq!(
            field("[[feeds]]\nkind = \"binance\"\nsymbols = [\"BTC/USDT\"]\n"),
            "symbols"
        );
        assert_eq!(
            field("[[feeds]]\nkind = \"binance\"\nsymbols = [\"btcusdt\", \"BTCUSDT\"]\n"),
            "symbols"
        );
        assert_eq!(
            field("[[feeds]]\nkind = \"binance\"\nsymbols = [\"A\"]\nurl = \"http://x\"\n"),
            "url"
        );
        assert_eq!(
            field("[[feeds]]\nkind = \"binance\"\nsymbols = [\"A\"]\nstreams = []\n"),
            "streams"
        );
        assert_eq!(
            field("[[feeds]]\nkind = \"binance\"\nsymbols = [\"A\"]\nsession_max_ms = 90000000\n"),
            "session_max_ms"
        );
        assert_eq!(
            field("[[feeds]]\nkind = \"binance\"\nsymbols = [\"A\"]\ntopics = { B = \"x.y\" }\n"),
            "topics"
        );
        assert_eq!(
            field("[[feeds]]\nkind = \"binance\"\nsymbols = [\"A\"]\ntopics = { A = \"x..y\" }\n"),
            "topics"
        );
        assert_eq!(
            field(
                "[[feeds]]\nkind = \"coinbase\"\nsymbols = [\"BTC-USD\"]\ntopic_prefix = \"a b\"\n"
            ),
            "topic_prefix"
        );
        assert_eq!(
            field(
                "[[feeds]]\nkind = \"coinbase\"\nsymbols = [\"BTC-USD\"]\nreconnect_base_ms = 100\nreconnect_max_ms = 50\n"
            ),
            "reconnect_max_ms"
        );
        assert_eq!(
            field("[[feeds]]\nkind = \"coinbase\"\nsymbols = [\"BTC-USD\"]\nidle_timeout_ms = 0\n"),
            "idle_timeout_ms"
        );
        assert_eq!(
            field("[[feeds]]\nkind = \"synthetic\"\nrate_hz = 0\n"),
            "rate_hz"
        );
        assert_eq!(
            field("[[feeds]]\nkind = \"synthetic\"\nrate_hz = nan\n"),
            "rate_hz"
        );
        assert_eq!(
            field("[[feeds]]\nkind = \"replay\"\npath = \"x\"\nspeed = -1\n"),
            "speed"
        );
        assert_eq!(field("[[feeds]]\nkind = \"replay\"\npath = \"\"\n"), "path");
        assert_eq!(
            field("[[feeds]]\nkind = \"synthetic\"\nname = \"a b\"\n"),
            "name"
        );
        assert_eq!(
            field("[[feeds]]\nkind = \"synthetic\"\n[[feeds]]\nkind = \"synthetic\"\n"),
            "name"
        );

        let e = validate_feeds(
            &parse("[[feeds]]\nkind = \"binance\"\nname = \"bn\"\nsymbols = []\n").unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "feed 'bn': field `symbols`: must list at least one symbol"
        );
    }

    #[test]
    fn too_many_binance_streams_are_refused() {
        let symbols: Vec<String> = (0..400).map(|i| format!("S{i}USDT")).collect();
        let mut b = BinanceConfig::new(&[]);
        b.symbols = symbols;
        assert_eq!(b.validate().unwrap_err().field, "symbols");
        b.streams = vec![BinanceStream::Trade];
        b.validate().unwrap();
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let feeds = vec![
            FeedConfig::Synthetic(SyntheticConfig::default()),
            FeedConfig::Replay(ReplayConfig::new("a.csv")),
            FeedConfig::Binance(BinanceConfig::new(&["BTCUSDT"])),
            FeedConfig::Coinbase(CoinbaseConfig::new(&["BTC-USD"])),
        ];
        validate_feeds(&feeds).unwrap();
        #[derive(Serialize, Deserialize)]
        struct Out {
            feeds: Vec<FeedConfig>,
        }
        let text = toml::to_string(&Out {
            feeds: feeds.clone(),
        })
        .unwrap();
        let back: Out = toml::from_str(&text).unwrap();
        assert_eq!(back.feeds, feeds);
        let FeedConfig::Replay(r) = &feeds[1] else {
            panic!()
        };
        assert_eq!(r.effective_format(), RecordingFormat::Csv);
    }
}
