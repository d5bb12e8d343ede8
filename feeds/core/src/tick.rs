//! The normalized tick: the fields every feed fills in as far as its venue
//! knows them, written as one compact JSON object.
//!
//! Numbers are kept as the venue wrote them: Binance and Coinbase send prices
//! as strings (`"64012.50"`), and [`Num`] keeps those digits and writes them
//! out as a JSON number (`64012.50`), so no precision is lost or invented on
//! the way through the broker.

use std::fmt;

/// Longest number text a [`Num`] holds, in bytes. Venues send at most about
/// 20 (`"12345678901.12345678"`); this leaves room without a heap allocation.
pub const MAX_NUM_BYTES: usize = 31;

/// Why some text or value is not a [`Num`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NumError {
    #[error("number is empty")]
    Empty,
    #[error("number is over {MAX_NUM_BYTES} bytes")]
    TooLong,
    #[error("not a JSON number")]
    NotANumber,
    #[error("not a finite number")]
    NotFinite,
}

/// A decimal number as JSON text, stored inline (no allocation, `Copy`).
///
/// Always valid JSON number grammar (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`),
/// so it can be written into a JSON object as it is.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Num {
    len: u8,
    buf: [u8; MAX_NUM_BYTES],
}

impl Num {
    /// Keeps `text` as it is when it is a JSON number: `"64012.50"` stays
    /// `64012.50`, trailing zeros and all.
    ///
    /// # Errors
    /// [`NumError`] when `text` is empty, too long, or not JSON number grammar
    /// (`"abc"`, `"1."`, `"+1"`, `"01"`, `"NaN"`).
    pub fn parse(text: &str) -> Result<Num, NumError> {
        let b = text.as_bytes();
        if b.is_empty() {
            return Err(NumError::Empty);
        }
        if b.len() > MAX_NUM_BYTES {
            return Err(NumError::TooLong);
        }
        if !is_json_number(b) {
            return Err(NumError::NotANumber);
        }
        Ok(Num::from_valid(b))
    }

    /// The shortest text that reads back as `v` (`0.1`, `64012.5`, `1e-7`).
    ///
    /// # Errors
    /// [`NumError::NotFinite`] for NaN and infinities.
    pub fn from_f64(v: f64) -> Result<Num, NumError> {
        if !v.is_finite() {
            return Err(NumError::NotFinite);
        }
        let mut w = StackWriter::default();
        // `{:?}` is the shortest round-trip form, with an exponent for very
        // large or small values (`1e300`), unlike `{}` which spells out every digit.
        fmt::Write::write_fmt(&mut w, format_args!("{v:?}")).map_err(|_| NumError::TooLong)?;
        Num::parse(w.as_str())
    }

    pub fn from_u64(v: u64) -> Num {
        let mut w = StackWriter::default();
        fmt::Write::write_fmt(&mut w, format_args!("{v}")).expect("a u64 has at most 20 digits");
        Num::from_valid(w.as_bytes())
    }

    /// `units / 10^decimals` written with exactly `decimals` digits after the
    /// point: `from_scaled(6401250, 2)` is `64012.50`, `from_scaled(-5, 3)` is `-0.005`.
    ///
    /// # Panics
    /// When `decimals > 18` (an invariant of the callers: prices have a fixed
    /// number of decimals, never more than 18).
    pub fn from_scaled(units: i64, decimals: u32) -> Num {
        assert!(decimals <= 18, "at most 18 decimals");
        let pow = 10u64.pow(decimals);
        let abs = units.unsigned_abs();
        let mut w = StackWriter::default();
        let sign = if units < 0 { "-" } else { "" };
        let r = if decimals == 0 {
            fmt::Write::write_fmt(&mut w, format_args!("{sign}{abs}"))
        } else {
            let (int, frac) = (abs / pow, abs % pow);
            let d = decimals as usize;
            fmt::Write::write_fmt(&mut w, format_args!("{sign}{int}.{frac:0d$}"))
        };
        r.expect("19 integer digits, a point and 18 decimals fit in 31 bytes");
        Num::from_valid(w.as_bytes())
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len as usize]).expect("a Num is ASCII")
    }

    /// The value as a float (for arithmetic and tests; the text stays the truth).
    pub fn to_f64(&self) -> f64 {
        self.as_str().parse().unwrap_or(f64::NAN)
    }

    fn from_valid(b: &[u8]) -> Num {
        let mut buf = [0u8; MAX_NUM_BYTES];
        buf[..b.len()].copy_from_slice(b);
        Num {
            len: b.len() as u8,
            buf,
        }
    }
}

impl fmt::Debug for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Num {
    type Err = NumError;
    fn from_str(s: &str) -> Result<Num, NumError> {
        Num::parse(s)
    }
}

/// JSON number grammar (RFC 8259 section 6), on the whole of `b`.
pub(crate) fn is_json_number(b: &[u8]) -> bool {
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

/// A `fmt::Write` into a fixed stack buffer; fails instead of growing.
#[derive(Default)]
struct StackWriter {
    len: usize,
    buf: [u8; MAX_NUM_BYTES],
}

impl StackWriter {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl fmt::Write for StackWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > MAX_NUM_BYTES {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// One normalized update for a topic. Every field is optional: a trade has a
/// price, a book ticker has bid and ask, a 24 h ticker has all of them.
///
/// Encoded as `{"price":..,"bid":..,"ask":..,"bid_size":..,"ask_size":..,"volume":..,"source_ts":..}`
/// in that order, absent fields left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tick {
    /// Last trade price (or mid, where the venue has no trades, as in FX).
    pub price: Option<Num>,
    pub bid: Option<Num>,
    pub ask: Option<Num>,
    pub bid_size: Option<Num>,
    pub ask_size: Option<Num>,
    /// Traded volume in base units: the venue's rolling 24 h volume where it
    /// sends one.
    pub volume: Option<Num>,
    /// The venue's event time, ms since the Unix epoch.
    pub source_ts: Option<u64>,
}

/// The JSON member names a [`Tick`] is written with, in order.
pub const TICK_FIELDS: [&str; 7] = [
    "price",
    "bid",
    "ask",
    "bid_size",
    "ask_size",
    "volume",
    "source_ts",
];

impl Tick {
    /// True when no field is set (nothing worth publishing).
    pub fn is_empty(&self) -> bool {
        self.nums().iter().all(Option::is_none) && self.source_ts.is_none()
    }

    /// True when no price-like field is set (only `source_ts`, if anything).
    pub fn has_no_values(&self) -> bool {
        self.nums().iter().all(Option::is_none)
    }

    fn nums(&self) -> [Option<Num>; 6] {
        [
            self.price,
            self.bid,
            self.ask,
            self.bid_size,
            self.ask_size,
            self.volume,
        ]
    }

    /// Appends the tick as one compact JSON object to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        let mut member = |out: &mut Vec<u8>, name: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
        };
        for (name, n) in TICK_FIELDS.iter().zip(self.nums()) {
            if let Some(n) = n {
                member(out, name);
                out.extend_from_slice(n.as_str().as_bytes());
            }
        }
        if let Some(ts) = self.source_ts {
            member(out, "source_ts");
            out.extend_from_slice(Num::from_u64(ts).as_str().as_bytes());
        }
        out.push(b'}');
    }

    /// The tick as a JSON object, in a new buffer.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.encode_into(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Num {
        Num::parse(s).unwrap()
    }

    #[test]
    fn venue_digits_are_kept_exactly() {
        for s in [
            "64012.50",
            "0.00100000",
            "0",
            "-0.5",
            "1e-7",
            "2.5E+3",
            "12345678901.12345678",
        ] {
            assert_eq!(n(s).as_str(), s);
        }
    }

    #[test]
    fn text_that_is_not_a_json_number_is_refused() {
        for s in [
            "abc", "1.", ".5", "+1", "01", "1e", "1e+", "NaN", "inf", "1,5", " 1", "1 ", "--1", "-",
        ] {
            assert_eq!(Num::parse(s), Err(NumError::NotANumber), "{s:?}");
        }
        assert_eq!(Num::parse(""), Err(NumError::Empty));
        assert_eq!(Num::parse(&"1".repeat(32)), Err(NumError::TooLong));
        assert!(Num::parse(&"1".repeat(31)).is_ok());
    }

    #[test]
    fn floats_are_written_shortest_and_finite_only() {
        assert_eq!(Num::from_f64(0.1).unwrap().as_str(), "0.1");
        assert_eq!(Num::from_f64(64012.5).unwrap().as_str(), "64012.5");
        assert_eq!(Num::from_f64(1.0).unwrap().as_str(), "1.0");
        assert_eq!(Num::from_f64(1e300).unwrap().as_str(), "1e300");
        assert_eq!(Num::from_f64(f64::NAN), Err(NumError::NotFinite));
        assert_eq!(Num::from_f64(f64::INFINITY), Err(NumError::NotFinite));
    }

    #[test]
    fn scaled_integers_keep_their_decimals() {
        assert_eq!(Num::from_scaled(6_401_250, 2).as_str(), "64012.50");
        assert_eq!(Num::from_scaled(108_123, 5).as_str(), "1.08123");
        assert_eq!(Num::from_scaled(5, 3).as_str(), "0.005");
        assert_eq!(Num::from_scaled(-5, 3).as_str(), "-0.005");
        assert_eq!(Num::from_scaled(42, 0).as_str(), "42");
        assert_eq!(
            Num::from_scaled(i64::MIN, 18).as_str(),
            "-9.223372036854775808"
        );
        assert_eq!(Num::from_u64(u64::MAX).as_str(), "18446744073709551615");
    }

    #[test]
    fn a_tick_encodes_compactly_in_field_order() {
        let t = Tick {
            price: Some(n("64012.50")),
            bid: Some(n("64012.00")),
            ask: Some(n("64013.00")),
            bid_size: None,
            ask_size: Some(n("0.25")),
            volume: Some(n("12000.123")),
            source_ts: Some(1_764_131_520_123),
        };
        assert_eq!(
            String::from_utf8(t.to_json()).unwrap(),
            r#"{"price":64012.50,"bid":64012.00,"ask":64013.00,"ask_size":0.25,"volume":12000.123,"source_ts":1764131520123}"#
        );
        assert_eq!(Tick::default().to_json(), b"{}");
        assert!(Tick::default().is_empty());
        let only_ts = Tick {
            source_ts: Some(5),
            ..Tick::default()
        };
        assert_eq!(only_ts.to_json(), br#"{"source_ts":5}"#);
        assert!(only_ts.has_no_values());
        assert!(!only_ts.is_empty());
    }

    #[test]
    fn encoded_ticks_are_valid_json_with_the_same_values() {
        let t = Tick {
            price: Some(n("-1.5e-3")),
            bid: Some(n("0")),
            ..Tick::default()
        };
        let v: serde_json::Value = serde_json::from_slice(&t.to_json()).unwrap();
        assert_eq!(v["price"].as_f64(), Some(-0.0015));
        assert_eq!(v["bid"].as_f64(), Some(0.0));
    }
}
