//! The default instruments and their market conventions.

/// Asset class: decides the topic's first segment and how trades look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Crypto,
    Fx,
    Equity,
}

/// One instrument of the synthetic universe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Instrument {
    /// Topic without prefix: `crypto.BTC-USD`.
    pub topic: &'static str,
    pub class: Class,
    /// Starting mid price; the walk is pulled back toward it, slowly.
    pub start: f64,
    /// Decimals of the price (its tick is `10^-decimals`).
    pub decimals: u32,
    /// Spread in ticks, drawn from this range on each quote.
    pub spread_ticks: (i64, i64),
    /// Decimals of sizes and volume.
    pub size_decimals: u32,
    /// Quote and trade sizes, drawn log-uniformly from this range.
    pub size_range: (f64, f64),
    /// Daily volatility of the mid (0.03: 3 % a day).
    pub daily_vol: f64,
    /// Volume at start, in base units (a plausible 24 h volume).
    pub volume_start: f64,
    /// Relative activity: BTC ticks more often than ADA.
    pub weight: f64,
}

// One row of the table below per call: the arguments are its columns.
#[allow(clippy::too_many_arguments)]
const fn crypto(
    topic: &'static str,
    start: f64,
    decimals: u32,
    spread_ticks: (i64, i64),
    size_decimals: u32,
    size_range: (f64, f64),
    volume_start: f64,
    weight: f64,
) -> Instrument {
    Instrument {
        topic,
        class: Class::Crypto,
        start,
        decimals,
        spread_ticks,
        size_decimals,
        size_range,
        daily_vol: 0.035,
        volume_start,
        weight,
    }
}

const fn fx(topic: &'static str, start: f64, decimals: u32, weight: f64) -> Instrument {
    Instrument {
        topic,
        class: Class::Fx,
        start,
        decimals,
        // 0.1 to 0.8 pips on a 5-decimal pair.
        spread_ticks: (1, 8),
        size_decimals: 0,
        size_range: (100_000.0, 10_000_000.0),
        daily_vol: 0.005,
        volume_start: 2.0e9,
        weight,
    }
}

const fn equity(topic: &'static str, start: f64, weight: f64) -> Instrument {
    Instrument {
        topic,
        class: Class::Equity,
        start,
        decimals: 2,
        spread_ticks: (1, 4),
        size_decimals: 0,
        size_range: (1.0, 2_000.0),
        daily_vol: 0.018,
        volume_start: 2.0e7,
        weight,
    }
}

/// The default universe: 7 crypto pairs, 6 FX pairs, 7 US equities.
pub const UNIVERSE: [Instrument; 20] = [
    crypto(
        "crypto.BTC-USD",
        64_000.0,
        2,
        (1, 60),
        4,
        (0.0005, 2.5),
        15_000.0,
        2.0,
    ),
    crypto(
        "crypto.ETH-USD",
        3_400.0,
        2,
        (1, 20),
        4,
        (0.005, 40.0),
        180_000.0,
        1.6,
    ),
    crypto(
        "crypto.SOL-USD",
        150.0,
        2,
        (1, 5),
        3,
        (0.05, 500.0),
        2_500_000.0,
        1.2,
    ),
    crypto(
        "crypto.XRP-USD",
        0.5234,
        4,
        (1, 3),
        1,
        (10.0, 50_000.0),
        4.0e8,
        0.8,
    ),
    crypto(
        "crypto.DOGE-USD",
        0.15123,
        5,
        (1, 5),
        0,
        (100.0, 500_000.0),
        2.0e9,
        0.7,
    ),
    crypto(
        "crypto.ADA-USD",
        0.4512,
        4,
        (1, 3),
        1,
        (10.0, 50_000.0),
        3.0e8,
        0.6,
    ),
    crypto(
        "crypto.AVAX-USD",
        35.12,
        2,
        (1, 4),
        3,
        (0.1, 800.0),
        5_000_000.0,
        0.6,
    ),
    fx("fx.EUR-USD", 1.0832, 5, 1.5),
    fx("fx.GBP-USD", 1.2715, 5, 1.2),
    fx("fx.USD-JPY", 151.42, 3, 1.2),
    fx("fx.USD-CHF", 0.8845, 5, 0.7),
    fx("fx.AUD-USD", 0.6612, 5, 0.8),
    fx("fx.USD-CAD", 1.3648, 5, 0.7),
    equity("eq.AAPL", 189.5, 1.2),
    equity("eq.MSFT", 421.3, 1.0),
    equity("eq.NVDA", 121.8, 1.5),
    equity("eq.AMZN", 181.2, 0.9),
    equity("eq.GOOGL", 165.4, 0.8),
    equity("eq.TSLA", 174.6, 1.3),
    equity("eq.META", 502.1, 0.8),
];
