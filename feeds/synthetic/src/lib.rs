//! Random-walk market prices: the demo's default feed. No network, no files.
//!
//! A universe of 20 instruments (`crypto.*`, `fx.*`, `eq.*`) whose prices
//! look like their markets: BTC about 64000 with 2 decimals, EUR-USD about
//! 1.08 with 5, equities in cents; a bid below an ask a few ticks apart;
//! sizes in the venue's lots; a growing volume. Ticks come as a Poisson
//! process whose intensity wanders between calm and busy regimes, with
//! occasional bursts, so the flow is uneven like a real market's while its
//! long-run mean stays at `rate_hz` per symbol.
//!
//! Entry points: [`spawn`] / [`run`] with a [`SyntheticConfig`]; [`Market`]
//! is the pure model (no clock, no IO), usable to generate recordings.
//!
//! # Layout
//! * `universe`: the instruments and their market conventions
//! * `market`: [`Market`], the price and arrival model

mod market;
mod universe;

use std::time::Duration;

use tickwire_feed::{FeedContext, Publisher, StartError, spawn_feed_task};
use tickwire_proto::now_ms;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

pub use market::Market;
pub use tickwire_feed::SyntheticConfig;
pub use universe::{Class, Instrument, UNIVERSE};

/// If the task fell this far behind its schedule (a stalled runtime), it
/// skips ahead instead of firing the whole backlog at once.
const MAX_LAG: Duration = Duration::from_secs(1);

/// Validates `cfg` and spawns the feed on the current runtime.
///
/// # Errors
/// [`StartError::Config`] for a bad config (an unknown symbol, a bad rate).
///
/// # Panics
/// Outside a tokio runtime.
pub fn spawn(cfg: SyntheticConfig, ctx: FeedContext) -> Result<JoinHandle<()>, StartError> {
    let market = Market::new(&cfg)?;
    let name = cfg.name.clone().unwrap_or_else(|| "synthetic".to_owned());
    Ok(spawn_feed_task(&name, "synthetic", drive(market, ctx)))
}

/// Runs the feed until `ctx.shutdown` is cancelled.
///
/// # Errors
/// [`StartError::Config`] for a bad config, before anything is published.
pub async fn run(cfg: SyntheticConfig, ctx: FeedContext) -> Result<(), StartError> {
    let market = Market::new(&cfg)?;
    drive(market, ctx).await;
    Ok(())
}

async fn drive(mut market: Market, ctx: FeedContext) {
    let mut out = Publisher::new(ctx.sink.clone(), ctx.stats.clone());
    ctx.stats.set_connected(true);
    let mut due = Instant::now();
    loop {
        let (delay, idx) = market.next_event();
        due += delay;
        let now = Instant::now();
        if now.saturating_duration_since(due) > MAX_LAG {
            due = now;
        }
        tokio::select! { biased;
            _ = ctx.shutdown.cancelled() => break,
            _ = sleep_until(due) => {}
        }
        let (topic, tick) = market.tick(idx, now_ms());
        out.publish(&topic, &tick);
    }
    ctx.stats.set_connected(false);
}
