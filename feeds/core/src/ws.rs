//! The connection loop every WebSocket venue shares: connect, subscribe, read,
//! answer Pings, notice silence, reconnect with backoff, and reconnect on
//! purpose before a venue's session limit. A venue adapter only says what to
//! send after connecting and how to read one message ([`WsVenue`]).

use std::future::pending;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

use crate::FeedContext;
use crate::backoff::{Backoff, BackoffConfig};
use crate::publisher::Publisher;

/// A venue message the adapter could not read; counted in `parse_errors` and
/// skipped. The reason is static so that a flood of them costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed venue message: {0}")]
pub struct Malformed(pub &'static str);

/// A venue's side of the conversation.
pub trait WsVenue: Send + 'static {
    /// Text frames to send after each connect: the subscription requests.
    /// Also the place to forget per-connection state (sequence numbers).
    fn on_connect(&mut self) -> Vec<String>;

    /// Reads one text (or binary) message and publishes what it carries.
    /// `msg` may be modified (simd-json parses in place).
    ///
    /// # Errors
    /// [`Malformed`] when the message cannot be read; the loop counts it and
    /// goes on with the next one.
    fn on_message(&mut self, msg: &mut [u8], out: &mut Publisher) -> Result<(), Malformed>;
}

/// How to hold a venue connection.
#[derive(Debug, Clone)]
pub struct WsOptions {
    /// `ws://` or `wss://` (the latter with the `tls` feature).
    pub url: String,
    pub backoff: BackoffConfig,
    pub connect_timeout: Duration,
    /// Reconnect when no frame at all arrived for this long.
    pub idle_timeout: Duration,
    /// Reconnect on purpose after this long (Binance cuts at 24 h); `None`: never.
    pub max_session: Option<Duration>,
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a session ended.
enum End {
    Shutdown,
    /// A planned reconnect: go again at once.
    Planned,
    /// Lost or never made: go again after a backoff delay.
    Lost,
}

/// Holds a connection to the venue until `ctx.shutdown`: connects, sends
/// [`WsVenue::on_connect`]'s frames, hands each message to
/// [`WsVenue::on_message`], and reconnects after any failure with
/// full-jitter backoff (reset once a connection delivered a good message).
///
/// # Cancel safety
/// Runs until cancelled through `ctx.shutdown`, then sends a Close frame
/// (waiting at most a second) and returns.
pub async fn run_ws<V: WsVenue>(mut venue: V, opts: WsOptions, ctx: FeedContext) {
    let mut backoff = Backoff::new(opts.backoff);
    let mut out = Publisher::new(ctx.sink.clone(), ctx.stats.clone());
    let mut first = true;
    loop {
        if !first {
            ctx.stats
                .reconnects
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        first = false;
        let end = session(&mut venue, &opts, &ctx, &mut out, &mut backoff).await;
        ctx.stats.set_connected(false);
        match end {
            End::Shutdown => return,
            End::Planned => {}
            End::Lost => {
                let delay = backoff.next_delay();
                debug!(
                    delay_ms = delay.as_millis() as u64,
                    attempt = backoff.attempt(),
                    "reconnecting after a delay"
                );
                tokio::select! { biased;
                    _ = ctx.shutdown.cancelled() => return,
                    _ = sleep(delay) => {}
                }
            }
        }
    }
}

/// What the read loop saw next.
enum Event {
    Shutdown,
    Planned,
    Idle,
    Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
}

async fn session<V: WsVenue>(
    venue: &mut V,
    opts: &WsOptions,
    ctx: &FeedContext,
    out: &mut Publisher,
    backoff: &mut Backoff,
) -> End {
    let connected = tokio::select! { biased;
        _ = ctx.shutdown.cancelled() => return End::Shutdown,
        r = timeout(opts.connect_timeout, connect(&opts.url)) => r,
    };
    let mut ws = match connected {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            warn!(url = %opts.url, error = %e, "connect failed");
            return End::Lost;
        }
        Err(_) => {
            warn!(url = %opts.url, timeout_ms = opts.connect_timeout.as_millis() as u64, "connect timed out");
            return End::Lost;
        }
    };
    info!(url = %opts.url, "connected");
    ctx.stats.set_connected(true);
    for text in venue.on_connect() {
        if let Err(e) = ws.send(Message::text(text)).await {
            warn!(error = %e, "subscribe failed");
            return End::Lost;
        }
    }
    let deadline = opts.max_session.map(|d| Instant::now() + d);
    let mut healthy = false;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let planned = async {
            match deadline {
                Some(d) => sleep_until(d).await,
                None => pending().await,
            }
        };
        // `next()` is cancel-safe: tungstenite keeps partial frames in the
        // stream, so losing the race to a timer loses no data.
        let event = tokio::select! { biased;
            _ = ctx.shutdown.cancelled() => Event::Shutdown,
            _ = planned => Event::Planned,
            r = timeout(opts.idle_timeout, ws.next()) => match r {
                Ok(frame) => Event::Frame(frame),
                Err(_) => Event::Idle,
            },
        };
        let msg = match event {
            Event::Shutdown => {
                close(&mut ws).await;
                return End::Shutdown;
            }
            Event::Planned => {
                info!("planned reconnect before the venue's session limit");
                close(&mut ws).await;
                return End::Planned;
            }
            Event::Idle => {
                warn!(
                    idle_ms = opts.idle_timeout.as_millis() as u64,
                    "venue went silent; reconnecting"
                );
                close(&mut ws).await;
                return End::Lost;
            }
            Event::Frame(None) => {
                warn!("venue closed the connection");
                return End::Lost;
            }
            Event::Frame(Some(Err(e))) => {
                warn!(error = %e, "connection lost");
                return End::Lost;
            }
            Event::Frame(Some(Ok(m))) => m,
        };
        let payload: &[u8] = match &msg {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
            Message::Ping(_) => {
                // tungstenite queued the Pong (same payload); push it out now
                // rather than with the next read.
                if let Err(e) = ws.flush().await {
                    warn!(error = %e, "pong failed");
                    return End::Lost;
                }
                continue;
            }
            Message::Close(frame) => {
                info!(?frame, "venue sent Close");
                continue;
            }
            Message::Pong(_) | Message::Frame(_) => continue,
        };
        buf.clear();
        buf.extend_from_slice(payload);
        match venue.on_message(&mut buf, out) {
            Ok(()) => {
                if !healthy {
                    healthy = true;
                    backoff.reset();
                }
            }
            Err(Malformed(reason)) => out.parse_error(reason),
        }
    }
}

/// Sends Close and waits briefly for the venue's; a stuck venue is dropped.
async fn close(ws: &mut Ws) {
    let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
}

async fn connect(url: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    #[cfg(feature = "tls")]
    let r = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        true,
        Some(tokio_tungstenite::Connector::Rustls(tls::client_config())),
    )
    .await;
    #[cfg(not(feature = "tls"))]
    let r = tokio_tungstenite::connect_async_with_config(url, None, true).await;
    r.map(|(ws, _response)| ws)
}

#[cfg(feature = "tls")]
mod tls {
    use std::sync::{Arc, OnceLock};

    use rustls::{ClientConfig, RootCertStore};

    /// One client config for all feeds, with the ring provider named
    /// explicitly: `ClientConfig::builder()` would panic if some other crate in
    /// the binary enabled a second rustls provider.
    pub(super) fn client_config() -> Arc<ClientConfig> {
        static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
        CONFIG
            .get_or_init(|| {
                let roots = RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("the ring provider supports TLS 1.2 and 1.3")
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Arc::new(config)
            })
            .clone()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_tls_config_builds_with_roots() {
            let c = super::client_config();
            assert!(c.alpn_protocols.is_empty());
        }
    }
}
