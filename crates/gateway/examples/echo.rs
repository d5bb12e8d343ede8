//! An echo server made of the gateway's own frame layer, for the Autobahn
//! conformance suite (`.ci/autobahn.sh`, docs/security.md): the same accept
//! loop, upgrade, reader frame hygiene, writer framing and close handshake
//! as the broker, with messages echoed instead of read as the protocol's JSON.
//!
//! Needs the non-default `conformance` feature, so no normal build has it:
//! `cargo run -p tickwire-gateway --features conformance --example echo -- 127.0.0.1:9001`
//!
//! Prints `listening on ADDR` once bound (port 0 picks a free port).

use std::sync::Arc;

use tickwire_engine::{Engine, EngineConfig};
use tickwire_gateway::{Gateway, GatewayConfig};
use tokio_util::sync::CancellationToken;

fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        let addr = listener.local_addr()?;
        let cfg = GatewayConfig {
            listen: addr,
            echo: true,
            // Autobahn's 9.x cases send messages of up to 16 MiB, in up to
            // 64 Ki fragments; the broker's limits would close them with 1009.
            max_message_bytes: 32 << 20,
            max_fragments: 1 << 20,
            // No heartbeat Pings in the middle of a case's expected frames.
            heartbeat_ms: 3_600_000,
            write_timeout_ms: 60_000,
            ..GatewayConfig::default()
        };
        let engine = Arc::new(Engine::new(EngineConfig::default()));
        let shutdown = CancellationToken::new();
        let gateway = Gateway::new(cfg, engine, shutdown.clone(), |_| {});
        println!("listening on {addr}");
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                let _ = tokio::signal::ctrl_c().await;
                shutdown.cancel();
            }
        });
        gateway.serve(listener).await;
        Ok(())
    })
}
