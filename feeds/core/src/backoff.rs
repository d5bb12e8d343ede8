//! Reconnect delays: exponential backoff with full jitter.
//!
//! The n-th delay after a failure is uniform in `[0, min(cap, base * 2^n)]`
//! ("full jitter", as in the AWS architecture blog's comparison): many feeds
//! or many broker instances that lost a venue at the same moment spread their
//! reconnects out instead of arriving together.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Backoff bounds. Defaults: 0.5 s base, 20 s cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Ceiling of the first delay.
    pub base: Duration,
    /// Ceiling no delay goes over, however many failures in a row.
    pub cap: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(20),
        }
    }
}

impl BackoffConfig {
    pub fn from_ms(base_ms: u64, cap_ms: u64) -> BackoffConfig {
        BackoffConfig {
            base: Duration::from_millis(base_ms),
            cap: Duration::from_millis(cap_ms),
        }
    }
}

/// Failures in a row and the delay before the next try.
#[derive(Debug)]
pub struct Backoff {
    cfg: BackoffConfig,
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    pub fn new(cfg: BackoffConfig) -> Backoff {
        Backoff {
            cfg,
            attempt: 0,
            rng: StdRng::from_rng(&mut rand::rng()),
        }
    }

    /// Like [`Backoff::new`] with a fixed seed, for repeatable tests.
    pub fn with_seed(cfg: BackoffConfig, seed: u64) -> Backoff {
        Backoff {
            cfg,
            attempt: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Failures since the last [`Backoff::reset`].
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The upper bound of the next delay: `min(cap, base * 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let base = self.cfg.base.as_nanos();
        let cap = self.cfg.cap.as_nanos();
        // 2^attempt overflows u128 only past 2^127; base is far below 2^64 ns.
        let grown = base.saturating_mul(1u128 << self.attempt.min(64));
        Duration::from_nanos(grown.min(cap).min(u64::MAX as u128) as u64)
    }

    /// The delay before the next try, and counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling().as_nanos() as u64;
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_nanos(self.rng.random_range(0..=ceiling))
    }

    /// Back to the first delay, after a connection proved healthy.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn the_ceiling_doubles_from_base_up_to_cap() {
        let mut b = Backoff::with_seed(BackoffConfig::default(), 1);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling());
            b.next_delay();
        }
        assert_eq!(
            ceilings,
            [
                500, 1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000, 20000
            ]
            .map(ms)
        );
    }

    #[test]
    fn every_delay_is_within_zero_and_the_ceiling() {
        let mut b = Backoff::with_seed(BackoffConfig::default(), 7);
        for _ in 0..1000 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(d <= ceiling, "{d:?} > {ceiling:?}");
            assert!(d <= ms(20_000));
        }
    }

    #[test]
    fn delays_are_jittered_over_the_whole_range() {
        // Full jitter: uniform in [0, ceiling], so the mean is about half of it
        // and both low and high delays occur.
        let cfg = BackoffConfig::from_ms(1000, 1000);
        let mut b = Backoff::with_seed(cfg, 42);
        let samples: Vec<f64> = (0..4000)
            .map(|_| b.next_delay().as_secs_f64() * 1000.0)
            .collect();
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        assert!((450.0..550.0).contains(&mean), "mean {mean}");
        assert!(samples.iter().any(|&s| s < 100.0));
        assert!(samples.iter().any(|&s| s > 900.0));
    }

    #[test]
    fn reset_goes_back_to_the_base() {
        let mut b = Backoff::with_seed(BackoffConfig::default(), 3);
        for _ in 0..5 {
            b.next_delay();
        }
        assert_eq!(b.attempt(), 5);
        assert_eq!(b.ceiling(), ms(16_000));
        b.reset();
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.ceiling(), ms(500));
        assert!(b.next_delay() <= ms(500));
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let cfg = BackoffConfig::from_ms(10, 50);
        let mut a = Backoff::with_seed(cfg, 9);
        let mut b = Backoff::with_seed(cfg, 9);
        for _ in 0..20 {
            assert_eq!(a.next_delay(), b.next_delay());
        }
    }

    #[test]
    fn many_failures_never_overflow() {
        let mut b = Backoff::with_seed(BackoffConfig::from_ms(u64::MAX / 4, u64::MAX / 2), 0);
        for _ in 0..200 {
            b.next_delay();
        }
        // Clamped to what a `Duration` of u64 nanoseconds holds.
        assert_eq!(b.ceiling(), Duration::from_nanos(u64::MAX));
    }
}
