//! Replays a recording (CSV or NDJSON ticks) into the broker, at the
//! recorded pace times a speed factor, or as fast as possible, once or in a
//! loop. For demos without a network, for tests, and to reproduce a market
//! moment.
//!
//! The recording is read whole when the feed starts, so a bad file is
//! reported at start-up with its line, not minutes later. Each record's
//! data is published byte for byte (a recorded `source_ts` is kept as it is,
//! so ingest latency is not measured for replays).
//!
//! Entry points: [`spawn`] / [`run`] with a [`ReplayConfig`]; [`Recording`]
//! reads a file without playing it.
//!
//! # Layout
//! * `recording`: [`Recording`], the NDJSON and CSV readers (formats there)

mod recording;

use std::time::Duration;

use tickwire_feed::{FeedContext, Publisher, RecordingFormat, StartError, spawn_feed_task};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tracing::info;

pub use recording::{BadLine, Record, Recording};
pub use tickwire_feed::ReplayConfig;

/// At speed 0, how many records go out between two yields to the runtime,
/// so an as-fast-as-possible replay never starves other tasks.
const BATCH_AT_FULL_SPEED: usize = 256;

/// Reads the recording `cfg` names.
///
/// # Errors
/// [`StartError::Config`] for a bad config, [`StartError::Recording`] when the
/// file cannot be read (line 0) or a line is bad.
pub fn load(cfg: &ReplayConfig) -> Result<Recording, StartError> {
    cfg.validate()?;
    let bad = |line: usize, reason: String| StartError::Recording {
        path: cfg.path.clone(),
        line,
        reason,
    };
    let text = std::fs::read_to_string(&cfg.path).map_err(|e| bad(0, e.to_string()))?;
    let parsed = match cfg.effective_format() {
        RecordingFormat::Csv => Recording::from_csv(&text, &cfg.topic_prefix),
        RecordingFormat::Ndjson => Recording::from_ndjson(&text, &cfg.topic_prefix),
    };
    let rec = parsed.map_err(|e| bad(e.line, e.reason))?;
    if rec.is_empty() {
        return Err(bad(0, "the recording has no records".to_owned()));
    }
    Ok(rec)
}

/// Reads the recording (on the calling thread: it is read once, at start)
/// and spawns the replay on the current runtime.
///
/// # Errors
/// As [`load`].
///
/// # Panics
/// Outside a tokio runtime.
pub fn spawn(cfg: ReplayConfig, ctx: FeedContext) -> Result<JoinHandle<()>, StartError> {
    let rec = load(&cfg)?;
    let name = cfg.name.clone().unwrap_or_else(|| "replay".to_owned());
    Ok(spawn_feed_task(
        &name,
        "replay",
        play(rec, cfg.speed, cfg.looping, ctx),
    ))
}

/// Plays the recording until its end (or forever with `loop`), or until
/// `ctx.shutdown` is cancelled.
///
/// # Errors
/// As [`load`], before anything is published.
pub async fn run(cfg: ReplayConfig, ctx: FeedContext) -> Result<(), StartError> {
    let rec = load(&cfg)?;
    play(rec, cfg.speed, cfg.looping, ctx).await;
    Ok(())
}

/// Plays `rec`: record `i` goes out at `start + at_ms / speed`; with
/// `speed == 0` as fast as possible. A loop starts again one mean record
/// interval after the last record, so the seam keeps the pace.
pub async fn play(rec: Recording, speed: f64, looping: bool, ctx: FeedContext) {
    let mut out = Publisher::new(ctx.sink.clone(), ctx.stats.clone());
    ctx.stats.set_connected(true);
    let records = rec.records();
    let n = records.len().max(1) as u64;
    let seam_ms = if n > 1 {
        rec.duration_ms() / (n - 1)
    } else {
        1000
    };
    let scaled = |ms: u64| Duration::from_secs_f64(ms as f64 / 1000.0 / speed);
    let mut start = Instant::now();
    let mut passes = 0u64;
    'replay: loop {
        for (i, r) in records.iter().enumerate() {
            if speed > 0.0 {
                tokio::select! { biased;
                    _ = ctx.shutdown.cancelled() => break 'replay,
                    _ = sleep_until(start + scaled(r.at_ms)) => {}
                }
            } else if i % BATCH_AT_FULL_SPEED == 0 {
                tokio::task::yield_now().await;
                if ctx.shutdown.is_cancelled() {
                    break 'replay;
                }
            }
            out.publish_raw(&r.topic, &r.data);
        }
        passes += 1;
        if !looping {
            break;
        }
        if speed > 0.0 {
            start += scaled(rec.duration_ms() + seam_ms);
        }
    }
    info!(records = records.len(), passes, "replay ended");
    ctx.stats.set_connected(false);
}
