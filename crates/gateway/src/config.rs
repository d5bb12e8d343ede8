//! Gateway settings. Names and defaults follow PROTOCOL.md "Configuration names".

use std::net::SocketAddr;

use crate::tls::TlsConfig;

/// Everything the gateway needs to serve; built and validated by the binary.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// A WebSocket Ping every this often; silence for this + 10 s closes with 4000.
    pub heartbeat_ms: u64,
    /// A socket write that takes longer closes the connection as a slow consumer.
    pub write_timeout_ms: u64,
    /// Largest `data` object of a tick, counted on its raw bytes.
    pub max_tick_bytes: usize,
    /// Largest frame or reassembled message from a client.
    pub max_message_bytes: usize,
    /// Most fragments one message may arrive in (a cap fastwebsockets lacks).
    pub max_fragments: usize,
    /// With auth on, the first `auth` must arrive within this.
    pub auth_timeout_ms: u64,
    pub max_connections: usize,
    /// WebSocket connections one IP address may hold.
    pub max_connections_per_ip: usize,
    /// SO_SNDBUF of each accepted socket. Left to autotune, the kernel buffers
    /// megabytes for a stuck peer before any limit of ours can see them.
    pub socket_send_buffer_bytes: usize,
    /// Write a frame from the publishing task when the connection's writer is
    /// idle (plain TCP): saves a task wake-up per delivery at low rates.
    pub direct_writes: bool,
    /// Direct writes of one read share one `io_uring_enter` (where the kernel
    /// allows io_uring) instead of one `send` each.
    pub io_uring: bool,
    /// An HTTP request's headers must arrive within this (slowloris guard),
    /// and a publish's body too.
    pub header_read_timeout_ms: u64,
    /// Largest body of `POST /api/publish`.
    pub max_http_body_bytes: usize,
    /// Control messages per second per connection (and burst).
    pub control_rate_per_sec: u32,
    /// A client that sends this many control messages within one second is closed with 4003.
    pub control_flood_per_sec: u32,
    /// Wait this long for the peer's Close after sending ours.
    pub close_timeout_ms: u64,
    /// Whole-broker shutdown: how long connections get to close.
    pub shutdown_timeout_ms: u64,
    /// `retry_ms` in the `shutdown` message.
    pub shutdown_retry_ms: u64,
    /// How often topics are checked for staleness.
    pub stale_check_ms: u64,
    pub auth: AuthConfig,
    /// Serve HTTPS and `wss://` with this certificate; `None` serves plain
    /// HTTP (behind a TLS-terminating proxy, or on loopback). The TLS
    /// handshake must finish within `header_read_timeout_ms`.
    pub tls: Option<TlsConfig>,
    /// Echo every message back instead of speaking the protocol: the
    /// Autobahn conformance server (`examples/echo.rs`). Only with the
    /// non-default `conformance` feature.
    #[cfg(feature = "conformance")]
    pub echo: bool,
}

/// `[auth]`: who may connect, subscribe and publish.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Keys that may publish and subscribe to anything.
    pub publisher_keys: Vec<String>,
    /// With a secret, auth is on: every connection must authenticate (HS256 JWTs).
    pub jwt_secret: Option<String>,
    /// When set, an upgrade whose `Origin` is not listed gets 403.
    pub allowed_origins: Vec<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            heartbeat_ms: 15_000,
            write_timeout_ms: 5_000,
            max_tick_bytes: 4096,
            max_message_bytes: 64 * 1024,
            max_fragments: 1024,
            auth_timeout_ms: 5_000,
            max_connections: 100_000,
            max_connections_per_ip: 100_000,
            // About 100 KB went into a stuck peer with this bound, versus 2.9 MB
            // autotuned (docs/architecture.md).
            socket_send_buffer_bytes: 64 * 1024,
            direct_writes: true,
            io_uring: true,
            header_read_timeout_ms: 10_000,
            max_http_body_bytes: 4 * 1024 * 1024,
            control_rate_per_sec: 100,
            control_flood_per_sec: 1000,
            close_timeout_ms: 2_000,
            shutdown_timeout_ms: 5_000,
            shutdown_retry_ms: 2_500,
            stale_check_ms: 250,
            auth: AuthConfig::default(),
            tls: None,
            #[cfg(feature = "conformance")]
            echo: false,
        }
    }
}
