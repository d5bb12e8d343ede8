//! Writes `feeds/replay/data/sample.ndjson` and `sample.csv`: 30 s of the
//! synthetic market for four symbols, seeded, so the files are repeatable.
//!
//! `cargo run -p tickwire-feed-replay --example make_sample [-- OUT_DIR]`

use std::fmt::Write as _;
use std::path::PathBuf;

use tickwire_feed::SyntheticConfig;
use tickwire_feed_synthetic::Market;

/// 2025-11-26T04:32:00Z, an arbitrary fixed origin.
const START_MS: u64 = 1_764_131_520_000;
const SECONDS: f64 = 30.0;
/// The CSV sample holds the first seconds only: it exercises the reader.
const CSV_SECONDS: f64 = 10.0;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data"));
    std::fs::create_dir_all(&dir)?;
    let mut market = Market::new(&SyntheticConfig {
        symbols: ["crypto.BTC-USD", "crypto.ETH-USD", "fx.EUR-USD", "eq.AAPL"]
            .map(String::from)
            .to_vec(),
        rate_hz: 2.5,
        seed: Some(20_251_126),
        ..SyntheticConfig::default()
    })?;
    let mut ndjson = String::new();
    let mut csv = String::from("ts,topic,price,bid,ask,bid_size,ask_size,volume,source_ts\n");
    let mut t = 0.0;
    loop {
        let (delay, idx) = market.next_event();
        t += delay.as_secs_f64();
        if t > SECONDS {
            break;
        }
        let ts = START_MS + (t * 1000.0) as u64;
        let (topic, tick) = market.tick(idx, ts);
        let data = String::from_utf8(tick.to_json())?;
        // Flat form: the tick's members after `ts` and `topic`.
        writeln!(ndjson, "{{\"ts\":{ts},\"topic\":\"{topic}\",{}", &data[1..])?;
        if t <= CSV_SECONDS {
            let f = |n: Option<tickwire_feed::Num>| n.map(|n| n.to_string()).unwrap_or_default();
            writeln!(
                csv,
                "{ts},{topic},{},{},{},{},{},{},{ts}",
                f(tick.price),
                f(tick.bid),
                f(tick.ask),
                f(tick.bid_size),
                f(tick.ask_size),
                f(tick.volume)
            )?;
        }
    }
    std::fs::write(dir.join("sample.ndjson"), &ndjson)?;
    std::fs::write(dir.join("sample.csv"), &csv)?;
    println!(
        "wrote {} NDJSON and {} CSV records to {}",
        ndjson.lines().count(),
        csv.lines().count() - 1,
        dir.display()
    );
    Ok(())
}
