//! `tickwire`: the broker binary. Reads top to bottom: args, tracing, config,
//! runtime, then [`run`]. Everything it wires lives in the library crates.

mod cluster;
mod config;
mod feeds;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use tickwire_engine::Engine;
use tickwire_gateway::Gateway;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Overrides};

// mimalloc: the fan-out allocates and frees many small buffers across threads;
// it was faster than the system allocator on it (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A live market price broker: feeds in, WebSocket dashboards out.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to serve on.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// TOML configuration file (docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Do not run the synthetic demo feed.
    #[arg(long)]
    no_demo_feed: bool,
    /// Add a publisher key (may be given more than once).
    #[arg(long = "publisher-key", value_name = "KEY")]
    publisher_keys: Vec<String>,
    /// Serve HTTPS and wss:// with this PEM certificate chain (leaf first).
    /// Without it the broker speaks plain HTTP: put it behind a TLS proxy.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Join a cluster through this NATS server: every node delivers every
    /// node's ticks (docs/cluster.md). Overrides `[cluster] url`.
    #[arg(long, value_name = "URL")]
    cluster_nats: Option<String>,
    /// This node's name in the cluster (default: the host name).
    #[arg(long, value_name = "NAME")]
    cluster_node: Option<String>,
    /// Print the default configuration file and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.print_config {
        print!("{}", Config::default_file());
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // async-nats logs every client event at info, one per dropped
                // message under load: the cluster crate logs them, throttled.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn")),
        )
        .init();
    let overrides = Overrides {
        listen: args.listen,
        config: args.config,
        no_demo_feed: args.no_demo_feed,
        publisher_keys: args.publisher_keys,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        cluster_nats: args.cluster_nats,
        cluster_node: args.cluster_node,
    };
    let config = Config::load(&overrides, |k| std::env::var(k).ok())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let shutdown = CancellationToken::new();
    runtime.block_on(async {
        tokio::spawn(signals(shutdown.clone()));
        run(config, shutdown).await
    })
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn signals(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}

/// A 128-bit random key, hex: `RandomState` is seeded from the OS.
fn generate_key() -> String {
    let a = RandomState::new().hash_one(1u8);
    let b = RandomState::new().hash_one(2u8);
    format!("tw_{a:016x}{b:016x}")
}

/// Runs the broker until `shutdown`: stop accepting, stop feeds, close every
/// connection with 1001, wait with a deadline.
async fn run(mut config: Config, shutdown: CancellationToken) -> Result<()> {
    if config.auth.publisher_keys.is_empty() {
        let key = generate_key();
        // PROTOCOL.md: with no key configured one is generated and logged, once.
        tracing::info!(publisher_key = %key, "no publisher key configured; generated one");
        config.auth.publisher_keys.push(key);
    }
    let engine = Arc::new(Engine::new(config.engine()));
    // Joined before any feed or client publishes, so every tick is replicated.
    let member = match &config.cluster {
        Some(c) => {
            if config.demo_feed {
                tracing::warn!(
                    "the demo feed runs on this clustered node: run it on one node only \
                     (--no-demo-feed on the others), or they publish the same topics"
                );
            }
            Some(cluster::start(c, &engine).await?)
        }
        None => None,
    };
    let cluster_collector = member.as_ref().map(cluster::Member::collector);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let feeds = feeds::configure(&config)?;
    let collector = feeds::FeedCollector(
        feeds
            .iter()
            .map(|f| (f.name.clone(), f.stats.clone()))
            .collect(),
    );
    let gateway = Gateway::new(config.gateway(), engine.clone(), shutdown.clone(), |r| {
        r.register_collector(Box::new(collector));
        if let Some(c) = cluster_collector {
            r.register_collector(Box::new(c));
        }
    });
    // Feeds stop before the gateway closes connections (shutdown order in docs/architecture.md).
    let feeds_token = CancellationToken::new();
    let tasks = feeds::start(&feeds, engine.clone(), &feeds_token)?;
    for f in &feeds {
        tracing::info!(feed = %f.name, kind = f.cfg.kind(), "feed started");
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%addr, epoch = engine.epoch(), "serving on {scheme}://{addr}");
    let stop_feeds = {
        let shutdown = shutdown.clone();
        let feeds_token = feeds_token.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            feeds_token.cancel();
        })
    };
    gateway.serve(listener).await;
    feeds_token.cancel();
    let _ = stop_feeds.await;
    for t in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), t).await;
    }
    // Last: what the feeds and clients published still goes to the peers.
    if let Some(m) = member {
        m.stop().await;
    }
    tracing::info!("stopped");
    Ok(())
}
