//! From a venue's symbol to a broker topic: `BTCUSDT` on Binance becomes
//! `binance.BTCUSDT`, unless the config maps it somewhere explicitly.

use std::collections::{BTreeMap, HashMap};

use tickwire_proto::{Topic, TopicError};

/// Makes `symbol` one topic segment: characters of the topic alphabet
/// (`A-Z a-z 0-9 _ - :`) are kept, the usual pair and class separators
/// (`/`, `.`, space) become `-` (`BTC/USD` -> `BTC-USD`, `BRK.B` -> `BRK-B`),
/// anything else becomes `_`. An empty symbol stays empty, which
/// [`Topic::parse`] then refuses.
pub fn sanitize_segment(symbol: &str) -> String {
    symbol
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '-' | ':' => c,
            '/' | '.' | ' ' => '-',
            _ => '_',
        })
        .collect()
}

/// Venue symbol -> topic: an explicit map first, else `prefix.SYMBOL` with
/// the symbol sanitized into one segment (just `SYMBOL` with an empty prefix).
#[derive(Debug, Clone, Default)]
pub struct TopicMap {
    prefix: String,
    explicit: HashMap<String, Topic>,
}

impl TopicMap {
    /// # Errors
    /// [`TopicError`] when `prefix` (unless empty) or a mapped topic is not a
    /// valid topic.
    pub fn new(prefix: &str, explicit: &BTreeMap<String, String>) -> Result<TopicMap, TopicError> {
        if !prefix.is_empty() {
            Topic::parse(prefix)?;
        }
        let explicit = explicit
            .iter()
            .map(|(sym, t)| Ok((sym.clone(), Topic::parse(t)?)))
            .collect::<Result<_, TopicError>>()?;
        Ok(TopicMap {
            prefix: prefix.to_owned(),
            explicit,
        })
    }

    /// The topic for `symbol`.
    ///
    /// # Errors
    /// [`TopicError`] when the symbol is empty or the result is over 128 bytes.
    pub fn topic(&self, symbol: &str) -> Result<Topic, TopicError> {
        if let Some(t) = self.explicit.get(symbol) {
            return Ok(t.clone());
        }
        let seg = sanitize_segment(symbol);
        if self.prefix.is_empty() {
            Topic::parse(&seg)
        } else {
            Topic::parse(&format!("{}.{seg}", self.prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_become_one_valid_segment() {
        assert_eq!(sanitize_segment("BTCUSDT"), "BTCUSDT");
        assert_eq!(sanitize_segment("BTC-USD"), "BTC-USD");
        assert_eq!(sanitize_segment("BTC/USD"), "BTC-USD");
        assert_eq!(sanitize_segment("BRK.B"), "BRK-B");
        assert_eq!(sanitize_segment("ES:H5"), "ES:H5");
        assert_eq!(sanitize_segment("a$b*c>d"), "a_b_c_d");
        assert_eq!(sanitize_segment("€UR"), "_UR");
        for s in ["BTC/USD", "a$b", "x y", "BRK.B", "é"] {
            assert!(Topic::parse(&sanitize_segment(s)).is_ok(), "{s}");
        }
    }

    #[test]
    fn prefix_then_symbol_unless_mapped() {
        let mut explicit = BTreeMap::new();
        explicit.insert("BTCUSDT".to_owned(), "crypto.BTC-USDT".to_owned());
        let m = TopicMap::new("binance", &explicit).unwrap();
        assert_eq!(m.topic("BTCUSDT").unwrap().as_str(), "crypto.BTC-USDT");
        assert_eq!(m.topic("ETHUSDT").unwrap().as_str(), "binance.ETHUSDT");
        assert_eq!(m.topic("ETH/BTC").unwrap().as_str(), "binance.ETH-BTC");
        assert!(m.topic("").is_err());
        assert!(m.topic(&"A".repeat(130)).is_err());

        let bare = TopicMap::new("", &BTreeMap::new()).unwrap();
        assert_eq!(bare.topic("BTC-USD").unwrap().as_str(), "BTC-USD");
        let deep = TopicMap::new("venue.cb", &BTreeMap::new()).unwrap();
        assert_eq!(deep.topic("BTC-USD").unwrap().as_str(), "venue.cb.BTC-USD");
    }

    #[test]
    fn bad_prefixes_and_mapped_topics_are_refused() {
        assert!(TopicMap::new("bad prefix", &BTreeMap::new()).is_err());
        assert!(TopicMap::new("a.", &BTreeMap::new()).is_err());
        assert!(TopicMap::new("crypto.*", &BTreeMap::new()).is_err());
        let mut explicit = BTreeMap::new();
        explicit.insert("X".to_owned(), "not a topic".to_owned());
        assert!(TopicMap::new("p", &explicit).is_err());
    }
}
