//! Reads counters from the broker's `/metrics` (Prometheus text).
//!
//! Used by the `slow` scenario: a stuck client cannot see the broker's 4001
//! Close frame when the broker resets the TCP connection after its close
//! timeout, so the broker's own count of closes by code is the ground truth.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::wire::{SocketOpts, Target, connect_tcp};

/// Largest exposition read.
const MAX_METRICS_BYTES: usize = 4 << 20;

/// GETs `/metrics` from the broker's address; `None` on any failure.
pub async fn fetch(target: &Target) -> Option<String> {
    let get = async {
        let mut stream = connect_tcp(target, SocketOpts::default()).await.ok()?;
        let req = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            target.host
        );
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        let mut chunk = [0u8; 16 << 10];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 || body.len() > MAX_METRICS_BYTES {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        text.starts_with("HTTP/1.1 200").then_some(text)
    };
    tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .ok()
        .flatten()
}

/// Sums the samples of metric families whose name starts with `name` and
/// whose labels contain `label` (e.g. `code="4001"`).
pub fn sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_matching_samples_only() {
        let text = "# HELP tickwire_closes Connections closed\n\
                    tickwire_closes_total{code=\"4001\"} 3\n\
                    tickwire_closes_total{code=\"1000\"} 7\n\
                    tickwire_slow_consumer_closes_total{reason=\"write_timeout\"} 3\n";
        assert_eq!(sum(text, "tickwire_closes", "code=\"4001\""), 3.0);
        assert_eq!(sum(text, "tickwire_closes", "code=\"4002\""), 0.0);
    }
}
