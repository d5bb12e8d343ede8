//! The price and arrival model: pure, seeded, no clock.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tickwire_feed::{ConfigError, Num, SyntheticConfig, Tick};
use tickwire_proto::Topic;

use crate::universe::{Class, Instrument, UNIVERSE};

/// Seconds in a day, for turning daily volatility into per-tick steps.
const DAY_S: f64 = 86_400.0;

/// Regimes: most of the time the market's activity level is drawn
/// log-normally around 1 and lasts ~6 s; sometimes a burst at 4x lasts ~1.5 s.
const BURST_P: f64 = 0.08;
const BURST_LEVEL: f64 = 4.0;
const BURST_MEAN_S: f64 = 1.5;
const CALM_MEAN_S: f64 = 6.0;
/// Spread of the log-normal activity level; its mean is 1.
const LEVEL_SIGMA: f64 = 0.6;

/// The time-weighted mean activity of the regimes above (renewal-reward
/// mean): dividing by it keeps the long-run tick rate at `rate_hz`.
fn mean_level() -> f64 {
    let calm = (1.0 - BURST_P) * CALM_MEAN_S;
    let burst = BURST_P * BURST_MEAN_S;
    (calm * 1.0 + burst * BURST_LEVEL) / (calm + burst)
}

/// Share of non-FX updates that are trades (the rest move only the quote).
const TRADE_P: f64 = 0.6;

#[derive(Debug)]
struct State {
    inst: Instrument,
    topic: Topic,
    log_mid: f64,
    log_start: f64,
    /// Standard deviation of one tick's log-return.
    sigma: f64,
    /// Pull toward the start price per tick, so a week-long demo stays plausible.
    kappa: f64,
    /// Last trade, in price ticks.
    last: i64,
    /// Volume, in size units (`10^-size_decimals`).
    volume: i64,
}

/// The synthetic market: which instrument ticks next, and when, and what
/// its tick says.
#[derive(Debug)]
pub struct Market {
    rng: StdRng,
    states: Vec<State>,
    /// Running sum of the instruments' activity weights, to pick one.
    cum_weight: Vec<f64>,
    /// Ticks per second of all instruments together, at activity 1.
    total_rate: f64,
    /// Current activity level (1: the mean).
    activity: f64,
    /// Seconds left in the current regime.
    regime_left: f64,
}

impl Market {
    /// # Errors
    /// [`ConfigError`] when `cfg` is invalid or names a symbol that is not in
    /// [`UNIVERSE`].
    pub fn new(cfg: &SyntheticConfig) -> Result<Market, ConfigError> {
        cfg.validate()?;
        let feed = cfg.name.clone().unwrap_or_else(|| "synthetic".to_owned());
        let chosen: Vec<Instrument> = if cfg.symbols.is_empty() {
            UNIVERSE.to_vec()
        } else {
            cfg.symbols
                .iter()
                .map(|s| {
                    UNIVERSE
                        .iter()
                        .find(|i| i.topic == s)
                        .copied()
                        .ok_or_else(|| ConfigError {
                            feed: feed.clone(),
                            field: "symbols",
                            reason: format!(
                                "'{s}' is not in the synthetic universe ({})",
                                UNIVERSE.map(|i| i.topic).join(", ")
                            ),
                        })
                })
                .collect::<Result<_, _>>()?
        };
        let mean_weight = chosen.iter().map(|i| i.weight).sum::<f64>() / chosen.len() as f64;
        let mut states = Vec::with_capacity(chosen.len());
        let mut cum_weight = Vec::with_capacity(chosen.len());
        let mut sum = 0.0;
        for inst in chosen {
            let text = if cfg.topic_prefix.is_empty() {
                inst.topic.to_owned()
            } else {
                format!("{}.{}", cfg.topic_prefix, inst.topic)
            };
            let topic = Topic::parse(&text).map_err(|e| ConfigError {
                feed: feed.clone(),
                field: "topic_prefix",
                reason: e.to_string(),
            })?;
            let rate = cfg.rate_hz * inst.weight / mean_weight;
            let ticks_per_day = rate * DAY_S;
            let pow = 10f64.powi(inst.decimals as i32);
            states.push(State {
                inst,
                topic,
                log_mid: inst.start.ln(),
                log_start: inst.start.ln(),
                sigma: inst.daily_vol / ticks_per_day.sqrt(),
                kappa: 1.0 / ticks_per_day,
                last: (inst.start * pow).round() as i64,
                volume: (inst.volume_start * 10f64.powi(inst.size_decimals as i32)) as i64,
            });
            sum += inst.weight;
            cum_weight.push(sum);
        }
        let n = states.len() as f64;
        let mut rng = match cfg.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        let regime_left = exp_sample(&mut rng, 1.0 / CALM_MEAN_S);
        Ok(Market {
            rng,
            states,
            cum_weight,
            total_rate: cfg.rate_hz * n,
            activity: 1.0,
            regime_left,
        })
    }

    /// The topics this market publishes to, in universe order.
    pub fn topics(&self) -> Vec<Topic> {
        self.states.iter().map(|s| s.topic.clone()).collect()
    }

    /// The current activity level (1 is the long-run mean).
    pub fn activity(&self) -> f64 {
        self.activity
    }

    /// How long after the previous tick the next one comes, and for which
    /// instrument (an index into [`Market::topics`]).
    pub fn next_event(&mut self) -> (Duration, usize) {
        let mut elapsed = 0.0;
        loop {
            let dt = exp_sample(&mut self.rng, self.total_rate * self.activity);
            if dt <= self.regime_left {
                self.regime_left -= dt;
                elapsed += dt;
                break;
            }
            // Memoryless: when the regime ends first, draw again from there.
            elapsed += self.regime_left;
            self.new_regime();
        }
        let total = *self.cum_weight.last().expect("a market has instruments");
        let x = self.rng.random_range(0.0..total);
        let idx = self
            .cum_weight
            .partition_point(|&c| c <= x)
            .min(self.states.len() - 1);
        (Duration::from_secs_f64(elapsed), idx)
    }

    fn new_regime(&mut self) {
        let norm = mean_level();
        if self.rng.random_bool(BURST_P) {
            self.activity = BURST_LEVEL / norm;
            self.regime_left = exp_sample(&mut self.rng, 1.0 / BURST_MEAN_S);
        } else {
            let z = normal(&mut self.rng);
            let level = (LEVEL_SIGMA * z - LEVEL_SIGMA * LEVEL_SIGMA / 2.0).exp();
            self.activity = level / norm;
            self.regime_left = exp_sample(&mut self.rng, 1.0 / CALM_MEAN_S);
        }
    }

    /// Moves instrument `idx` one step and returns its topic and tick, stamped
    /// `source_ts` (ms since the Unix epoch).
    ///
    /// # Panics
    /// When `idx` is not an index from [`Market::next_event`].
    pub fn tick(&mut self, idx: usize, source_ts: u64) -> (Topic, Tick) {
        let rng = &mut self.rng;
        let s = &mut self.states[idx];
        let inst = s.inst;
        s.log_mid += s.sigma * normal(rng) - s.kappa * (s.log_mid - s.log_start);
        let pow = 10f64.powi(inst.decimals as i32);
        let mid = (s.log_mid.exp() * pow).round() as i64;
        let spread = rng
            .random_range(inst.spread_ticks.0..=inst.spread_ticks.1)
            .max(1);
        let bid = (mid - spread / 2).max(1);
        let ask = bid + spread;
        match inst.class {
            // FX has no trades on a feed like this: the price is the mid.
            Class::Fx => {
                s.last = (bid + ask) / 2;
                s.volume += size(rng, &inst);
            }
            Class::Crypto | Class::Equity => {
                if rng.random_bool(TRADE_P) {
                    s.last = if rng.random_bool(0.5) { ask } else { bid };
                    s.volume += size(rng, &inst);
                }
            }
        }
        let d = inst.decimals;
        let sd = inst.size_decimals;
        let tick = Tick {
            price: Some(Num::from_scaled(s.last, d)),
            bid: Some(Num::from_scaled(bid, d)),
            ask: Some(Num::from_scaled(ask, d)),
            bid_size: Some(Num::from_scaled(size(rng, &inst), sd)),
            ask_size: Some(Num::from_scaled(size(rng, &inst), sd)),
            volume: Some(Num::from_scaled(s.volume, sd)),
            source_ts: Some(source_ts),
        };
        (s.topic.clone(), tick)
    }
}

/// A size in units of `10^-size_decimals`, log-uniform in the instrument's
/// range; FX in whole thousands.
fn size(rng: &mut StdRng, inst: &Instrument) -> i64 {
    let (lo, hi) = inst.size_range;
    let v = rng.random_range(lo.ln()..hi.ln()).exp();
    let units = (v * 10f64.powi(inst.size_decimals as i32)).round() as i64;
    match inst.class {
        Class::Fx => ((units + 500) / 1000).max(1) * 1000,
        Class::Crypto | Class::Equity => units.max(1),
    }
}

/// An exponential variate with rate `lambda` (mean `1/lambda`).
fn exp_sample(rng: &mut StdRng, lambda: f64) -> f64 {
    let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    -u.ln() / lambda
}

/// A standard normal variate (Box-Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn market(seed: u64) -> Market {
        Market::new(&SyntheticConfig {
            seed: Some(seed),
            ..SyntheticConfig::default()
        })
        .unwrap()
    }

    fn decimals_of(n: &Num) -> usize {
        n.as_str().split_once('.').map_or(0, |(_, f)| f.len())
    }

    #[test]
    fn the_default_universe_spans_three_classes() {
        let m = market(1);
        let topics: Vec<String> = m.topics().iter().map(|t| t.to_string()).collect();
        assert_eq!(topics.len(), 20);
        for class in ["crypto.", "fx.", "eq."] {
            assert!(
                topics.iter().filter(|t| t.starts_with(class)).count() >= 6,
                "{class}"
            );
        }
        assert!(topics.contains(&"crypto.BTC-USD".to_owned()));
        assert!(topics.contains(&"fx.EUR-USD".to_owned()));
        assert!(topics.contains(&"eq.AAPL".to_owned()));
    }

    #[test]
    fn prices_look_like_their_markets() {
        let mut m = market(2);
        let topics = m.topics();
        let mut last_volume = vec![0.0; topics.len()];
        for _ in 0..40_000 {
            let (_, idx) = m.next_event();
            let (topic, t) = m.tick(idx, 1);
            let inst = UNIVERSE.iter().find(|i| i.topic == topic.as_str()).unwrap();
            let (price, bid, ask) = (t.price.unwrap(), t.bid.unwrap(), t.ask.unwrap());
            for n in [price, bid, ask] {
                assert_eq!(decimals_of(&n), inst.decimals as usize, "{topic} {n}");
            }
            assert!(bid.to_f64() < ask.to_f64(), "{topic} {bid} {ask}");
            let p = price.to_f64();
            assert!(
                p > inst.start * 0.7 && p < inst.start * 1.3,
                "{topic} wandered to {p}"
            );
            for n in [t.bid_size.unwrap(), t.ask_size.unwrap(), t.volume.unwrap()] {
                assert_eq!(decimals_of(&n), inst.size_decimals as usize, "{topic} {n}");
                assert!(n.to_f64() > 0.0);
            }
            let v = t.volume.unwrap().to_f64();
            assert!(v >= last_volume[idx], "volume only grows");
            last_volume[idx] = v;
            assert_eq!(t.source_ts, Some(1));
        }
        let btc = topics
            .iter()
            .position(|t| t.as_str() == "crypto.BTC-USD")
            .unwrap();
        let (_, t) = m.tick(btc, 1);
        let p = t.price.unwrap().to_f64();
        assert!((50_000.0..80_000.0).contains(&p), "{p}");
        let eur = topics
            .iter()
            .position(|t| t.as_str() == "fx.EUR-USD")
            .unwrap();
        let (_, t) = m.tick(eur, 1);
        assert!((1.0..1.2).contains(&t.price.unwrap().to_f64()));
    }

    #[test]
    fn the_long_run_rate_is_rate_hz_per_symbol() {
        let mut m = market(3);
        let n = 200_000;
        let secs: f64 = (0..n).map(|_| m.next_event().0.as_secs_f64()).sum();
        let per_symbol = n as f64 / secs / 20.0;
        assert!((3.4..4.6).contains(&per_symbol), "{per_symbol} Hz");
    }

    #[test]
    fn arrivals_are_bursty_not_a_plain_poisson_process() {
        // Ticks per second: a Poisson process has variance == mean; regimes
        // and bursts make it much larger.
        let mut m = market(4);
        let mut counts = vec![0u32; 2000];
        let mut t = 0.0;
        loop {
            t += m.next_event().0.as_secs_f64();
            let s = t as usize;
            if s >= counts.len() {
                break;
            }
            counts[s] += 1;
        }
        let mean = counts.iter().map(|&c| c as f64).sum::<f64>() / counts.len() as f64;
        let var = counts
            .iter()
            .map(|&c| (c as f64 - mean).powi(2))
            .sum::<f64>()
            / counts.len() as f64;
        assert!(var / mean > 3.0, "dispersion {} (mean {mean})", var / mean);
        let max = *counts.iter().max().unwrap() as f64;
        assert!(max > mean * 2.5, "no burst: max {max}, mean {mean}");
    }

    #[test]
    fn the_same_seed_gives_the_same_market() {
        let (mut a, mut b) = (market(5), market(5));
        for _ in 0..100 {
            let (da, ia) = a.next_event();
            let (db, ib) = b.next_event();
            assert_eq!((da, ia), (db, ib));
            assert_eq!(a.tick(ia, 0), b.tick(ib, 0));
        }
    }

    #[test]
    fn symbols_choose_a_subset_and_unknown_ones_are_named() {
        let m = Market::new(&SyntheticConfig {
            symbols: vec!["fx.EUR-USD".into(), "eq.AAPL".into()],
            topic_prefix: "demo".into(),
            ..SyntheticConfig::default()
        })
        .unwrap();
        let topics: Vec<String> = m.topics().iter().map(|t| t.to_string()).collect();
        assert_eq!(topics, ["demo.fx.EUR-USD", "demo.eq.AAPL"]);
        let e = Market::new(&SyntheticConfig {
            symbols: vec!["crypto.NOPE".into()],
            ..SyntheticConfig::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "symbols");
        assert!(e.reason.contains("crypto.NOPE"));
    }
}
