//! `loadgen`: load generator for the tickwire broker (wire protocol v1).
//!
//! Opens S WebSocket subscribers, each on K of T topics (`lg.t0`..`lg.t{T-1}`),
//! and P publishers that publish round-robin over the T topics at a fixed rate
//! or as fast as a window of unacknowledged publishes allows. Each tick's
//! `data` carries `ts_send` (Unix ns); subscribers time every tick against it
//! and check that `seq` rises by one per topic. At the end it prints a readable
//! summary and then one JSON line (the last line of stdout); while running it
//! prints one progress line per second to stderr.
//!
//! Everything runs on ONE current-thread tokio runtime, so pin it away from
//! the broker: `taskset -c 0 tickwire ...` and `taskset -c 1 loadgen ...`.
//! Its own CPU use is reported (`loadgen_cpu_util`): near 1.0 means loadgen,
//! not the broker, was the bottleneck.
//!
//! # Scenarios
//! * `fanout`: S subscribers, P publishers, D seconds. Reports ticks
//!   published, deliveries expected / received / lost, delivered/s, latency
//!   p50 / p99 / p99.9 / max, seq gaps.
//! * `conns`: S idle subscribed connections held for D seconds. Reports the
//!   connect rate and the broker's RSS per connection.
//! * `slow`: `fanout` plus `--slow M` subscribers with a 4 KiB SO_RCVBUF (set
//!   before connect) that never read. Reports the healthy subscribers'
//!   latency and how the stuck ones ended (the broker should close them with
//!   4001; `slow_timeout_ms` is 10 s by default, so run D > 10).
//!
//! With `--broker-pid`, the broker's CPU seconds (utime + stime over the
//! measured window) and RSS (VmRSS before connecting, once connected, and at
//! the end; VmHWM) come from `/proc/PID`. `machine_steal_pct` is the
//! hypervisor's steal over the same window, from `/proc/stat`: time the VM's
//! CPUs were ready to run and did not.
//!
//! # Reading the numbers
//! * Only ticks whose `ts_send` falls in the measured window count, on both
//!   sides: `published` is the acked publishes sent in it, `expected` is the
//!   sum over those of the topic's healthy subscribers, `received` the ticks
//!   with such a `ts_send` that arrived before the drain ended.
//! * `--rate 0` keeps `--max-inflight` publishes unacked per publisher, so
//!   latency there is mostly queueing (about window / ack rate, Little's law);
//!   use a fixed `--rate` below saturation for latency.
//! * `ts_send` is stamped when the publish is written. A rate-mode publisher
//!   that falls behind skips slots (`rate_slots_skipped`) rather than burst.
//! * `seq_skipped` counts seqs jumped over per topic per connection: loss, or
//!   conflation of a subscriber over the soft limit.
//!
//! # Client
//! Subscribers parse frames with loadgen's own minimal client (`wire`): many
//! frames per `read`, parsed in place, one clock read per `read`, fields found
//! with a SIMD substring search instead of a JSON parse. Measured against
//! fastwebsockets (`--client fws`, same scan) on one core: about 150 vs 300 ns
//! of loadgen CPU per delivery when reads carry many frames; the same (about
//! 1-2 us, syscall-bound) when each read carries one frame.
//!
//! # Examples
//! ```text
//! # build (the workspace's release profile uses fat LTO)
//! cargo build -p tickwire-benches --bin loadgen --release
//!
//! # broker on core 0, loadgen on core 1
//! taskset -c 0 tickwire --listen 127.0.0.1:8080 --publisher-key k --no-demo-feed &
//! taskset -c 1 loadgen fanout --url ws://127.0.0.1:8080/ws --key k \
//!     --subs 1000 --topics 100 --per-sub 10 --rate 0 --duration 10 --broker-pid $!
//!
//! # fixed rate, 2 publishers, 2 s warmup excluded from the stats
//! loadgen fanout --key k --rate 20000 --publishers 2 --warmup 2 --duration 10
//!
//! # memory per idle connection
//! loadgen conns --subs 10000 --per-sub 5 --duration 5 --broker-pid $PID
//!
//! # 20 stuck readers next to 500 healthy ones
//! loadgen slow --key k --subs 500 --slow 20 --duration 15 --broker-pid $PID
//!
//! # keep only the JSON line
//! loadgen fanout --key k --duration 5 2>/dev/null | tail -n 1 | jq .
//!
//! # the same load against nats-server (`websocket { listen: "127.0.0.1:8081", no_tls: true }`)
//! loadgen fanout --nats --url ws://127.0.0.1:8081 --subs 1000 --duration 10 --broker-pid $NATS_PID
//! ```

// A crate root looks for modules beside itself; these live in `loadgen/`.
#[path = "loadgen/nats.rs"]
mod nats;
#[path = "loadgen/publisher.rs"]
mod publisher;
#[path = "loadgen/scan.rs"]
mod scan;
#[path = "loadgen/scrape.rs"]
mod scrape;
#[path = "loadgen/stats.rs"]
mod stats;
#[path = "loadgen/subscriber.rs"]
mod subscriber;
#[path = "loadgen/sys.rs"]
mod sys;
#[path = "loadgen/wire.rs"]
mod wire;

use std::cell::Cell;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::scan::Keys;
use crate::stats::Stats;
use crate::sys::ProcSample;
use crate::wire::Target;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Subscribers and publishers: throughput, loss and latency.
    Fanout,
    /// Idle subscribed connections: connect rate and memory per connection.
    Conns,
    /// Fanout plus stuck subscribers that never read.
    Slow,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Conns => "conns",
            Scenario::Slow => "slow",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Client {
    Raw,
    Fws,
}

/// Load generator for the tickwire broker. See the crate docs for examples.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version)]
struct Args {
    /// What to measure.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Broker WebSocket URL (ws:// only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Publishers connect here instead of `--url` (another node of a cluster:
    /// subscribers on one node, publishers on another).
    #[arg(long)]
    pub_url: Option<String>,
    /// Publisher key, sent as `Authorization: Bearer` on the publishers' upgrade.
    #[arg(long, env = "TICKWIRE_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Send the key on the subscribers' upgrades too (brokers with auth on).
    #[arg(long)]
    auth_subscribers: bool,
    /// Healthy subscriber connections (S).
    #[arg(long, default_value_t = 1000)]
    subs: usize,
    /// Topics (T): `<prefix>0` .. `<prefix>{T-1}`.
    #[arg(long, default_value_t = 100)]
    topics: usize,
    /// Topics per subscriber (K <= T), chosen deterministically per subscriber.
    #[arg(long, default_value_t = 10)]
    per_sub: usize,
    /// Topic name prefix.
    #[arg(long, default_value = "lg.t")]
    topic_prefix: String,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Total ticks per second over all publishers; 0 = as fast as the window allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Most unacknowledged publishes per publisher.
    #[arg(long, default_value_t = 1000)]
    max_inflight: u64,
    /// Measured seconds (for `conns`: how long the connections are held).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of publishing before the measured window, excluded from the stats.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds to wait after the window for the last acks and deliveries.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Approximate size of each tick's `data` object in bytes (padded with a
    /// `pad` string); 0 = the minimal `{"ts_send":..,"price":..}`.
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// `slow` scenario: how many stuck subscribers (M).
    #[arg(long, default_value_t = 10)]
    slow: usize,
    /// `slow` scenario: SO_RCVBUF of the stuck subscribers, bytes.
    #[arg(long, default_value_t = 4096)]
    slow_rcvbuf: u32,
    /// Broker process id: report its CPU and RSS from /proc.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Seconds one connection may take to connect, upgrade and subscribe.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Spread subscribers over source addresses 127.0.0.1 ..= 127.0.0.N
    /// (about 28k connections per address fit in the ephemeral port range).
    #[arg(long, default_value_t = 1)]
    source_addrs: u8,
    /// Read buffer per subscriber, bytes [default: 16 KiB; 4 KiB for `conns`].
    #[arg(long)]
    read_buffer: Option<usize>,
    /// WebSocket client for the healthy subscribers: `raw` (loadgen's own
    /// in-place parser) or `fws` (fastwebsockets), to compare their cost.
    #[arg(long, value_enum, default_value_t = Client::Raw)]
    client: Client,
    /// Speak the NATS text protocol over WebSocket instead (to compare with
    /// nats-server's websocket port, e.g. `--url ws://127.0.0.1:8081`).
    #[arg(long)]
    nats: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

/// Settings the tasks read.
pub struct Opts {
    pub connect_timeout: Duration,
    pub drain: Duration,
    pub read_buffer_bytes: usize,
    pub slow_rcvbuf_bytes: u32,
    pub source_addrs: u8,
    pub pub_key: Option<String>,
    pub sub_key: Option<String>,
    pub pad: Option<String>,
    /// Healthy subscribers use fastwebsockets instead of the in-place parser.
    pub fws: bool,
    /// Speak NATS instead of tickwire's protocol.
    pub nats: bool,
    /// Publisher connections (NATS subscribers track seqs per publisher).
    pub publishers: usize,
}

impl Opts {
    /// Source address for connection `i`, when spreading over several.
    pub fn source_addr(&self, i: usize) -> Option<SocketAddr> {
        (self.source_addrs > 1).then(|| {
            let last = 1 + (i % usize::from(self.source_addrs)) as u8;
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 0)
        })
    }
}

/// State every task of the run shares (one thread: no locks).
pub struct Shared {
    pub target: Target,
    /// Where publishers connect (`--pub-url`, else `target`).
    pub pub_target: Target,
    pub opts: Opts,
    pub keys: Keys,
    pub stats: Stats,
    prefix: String,
    topic_names: Vec<String>,
    /// Measured window in Unix ns, `[start, end)`; `u64::MAX` until known.
    window_start: Cell<u64>,
    window_end: Cell<u64>,
    /// Limits connections in setup at once.
    pub connect_gate: Semaphore,
    /// Publishers start.
    pub go: CancellationToken,
    /// Healthy subscribers close.
    pub stop: CancellationToken,
    /// Slow subscribers start draining.
    pub drain_slow: CancellationToken,
}

impl Shared {
    pub fn window(&self) -> (u64, u64) {
        (self.window_start.get(), self.window_end.get())
    }

    pub fn topic_name(&self, t: u32) -> &str {
        &self.topic_names[t as usize]
    }

    pub fn topic_count(&self) -> usize {
        self.topic_names.len()
    }

    /// `lg.t17` -> 17, for names loadgen made.
    pub fn topic_index(&self, name: &[u8]) -> Option<u32> {
        let digits = name.strip_prefix(self.prefix.as_bytes())?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let t = u32::try_from(scan::parse_u64(digits)?).ok()?;
        ((t as usize) < self.topic_names.len()).then_some(t)
    }
}

/// Wall-clock time in ns since the Unix epoch: the clock `ts_send` uses.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The K distinct topics of subscriber `i`: a run of consecutive topics from
/// a start drawn from `i`, so every topic gets about S*K/T subscribers.
fn topics_for(i: usize, per_sub: usize, topics: usize) -> Vec<u32> {
    let mut seed = i as u64;
    let start = (wire::splitmix(&mut seed) % topics as u64) as usize;
    let mut list: Vec<u32> = (0..per_sub)
        .map(|j| ((start + j) % topics) as u32)
        .collect();
    list.sort_unstable();
    list
}

fn main() {
    if let Err(e) = start(Args::parse()) {
        eprintln!("loadgen: error: {e:#}");
        std::process::exit(1);
    }
}

fn start(args: Args) -> anyhow::Result<()> {
    validate(&args)?;
    // One thread for everything, so `taskset -c N` pins all of loadgen.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(args))
}

fn validate(args: &Args) -> anyhow::Result<()> {
    if args.topics == 0 || args.per_sub == 0 || args.per_sub > args.topics {
        bail!("need 1 <= --per-sub <= --topics");
    }
    if args.scenario != Scenario::Conns && args.publishers == 0 {
        bail!("need at least one publisher");
    }
    if args.max_inflight == 0 || args.connect_concurrency == 0 {
        bail!("--max-inflight and --connect-concurrency must be at least 1");
    }
    if !(args.duration > 0.0 && args.warmup >= 0.0 && args.drain >= 0.0 && args.rate >= 0.0) {
        bail!("--duration must be > 0; --warmup, --drain and --rate >= 0");
    }
    if args.source_addrs == 0 {
        bail!("--source-addrs must be at least 1");
    }
    Ok(())
}

/// Samples of the broker and of loadgen itself at one moment.
#[derive(Clone, Copy, Default)]
struct Point {
    broker: Option<ProcSample>,
    me: Option<ProcSample>,
    machine: Option<sys::MachineCpu>,
    at: Option<Instant>,
}

struct Probe {
    broker_pid: Option<String>,
}

impl Probe {
    fn now(&self) -> Point {
        Point {
            broker: self.broker_pid.as_deref().and_then(sys::sample),
            me: sys::sample("self"),
            machine: sys::machine_cpu(),
            at: Some(Instant::now()),
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let scenario = args.scenario;
    let slow = if scenario == Scenario::Slow {
        args.slow
    } else {
        0
    };
    let publishers = if scenario == Scenario::Conns {
        0
    } else {
        args.publishers
    };
    let nofile = sys::raise_nofile_limit();
    let wanted = (args.subs + slow + publishers + 64) as u64;
    if wanted > nofile {
        eprintln!("loadgen: warning: {wanted} sockets wanted but RLIMIT_NOFILE is {nofile}");
    }
    let target = Target::resolve(&args.url).await?;
    let pub_target = match &args.pub_url {
        Some(u) => Target::resolve(u).await?,
        None => target.clone(),
    };
    let probe = Probe {
        broker_pid: args.broker_pid.map(|p| p.to_string()),
    };
    if let Some(pid) = &probe.broker_pid
        && sys::sample(pid).is_none()
    {
        bail!("cannot read /proc/{pid}: is --broker-pid right?");
    }

    let pad = (args.payload_bytes > 0).then(|| {
        // The minimal data object is about 50 bytes; `,"pad":""` adds 9.
        "x".repeat(args.payload_bytes.saturating_sub(59).max(1))
    });
    let read_buffer = args.read_buffer.unwrap_or(if scenario == Scenario::Conns {
        4 << 10
    } else {
        16 << 10
    });
    let sh = Rc::new(Shared {
        target,
        pub_target,
        opts: Opts {
            connect_timeout: Duration::from_secs_f64(args.connect_timeout),
            drain: Duration::from_secs_f64(args.drain),
            read_buffer_bytes: read_buffer,
            slow_rcvbuf_bytes: args.slow_rcvbuf,
            source_addrs: args.source_addrs,
            pub_key: args.key.clone(),
            sub_key: if args.auth_subscribers {
                args.key.clone()
            } else {
                None
            },
            pad,
            fws: args.client == Client::Fws,
            nats: args.nats,
            publishers,
        },
        keys: Keys::new(),
        stats: Stats::new(args.topics),
        prefix: args.topic_prefix.clone(),
        topic_names: (0..args.topics)
            .map(|t| format!("{}{t}", args.topic_prefix))
            .collect(),
        window_start: Cell::new(u64::MAX),
        window_end: Cell::new(u64::MAX),
        connect_gate: Semaphore::new(args.connect_concurrency),
        go: CancellationToken::new(),
        stop: CancellationToken::new(),
        drain_slow: CancellationToken::new(),
    });
    let progress = !args.quiet;

    // 1. Subscribers.
    // The broker's own count of 4001 closes (`slow`): a stuck client may be
    // reset before it can read the Close frame.
    let count_closes = scenario == Scenario::Slow && !args.nats;
    let closes_before = if count_closes {
        scrape::fetch(&sh.target).await
    } else {
        None
    };
    let before = probe.now();
    let connect_started = Instant::now();
    let mut sub_tasks = Vec::with_capacity(args.subs);
    let mut slow_tasks = Vec::with_capacity(slow);
    for i in 0..args.subs + slow {
        let kind = if i < args.subs {
            subscriber::Kind::Healthy
        } else {
            subscriber::Kind::Slow
        };
        let spec = subscriber::Spec {
            index: i,
            topics: topics_for(i, args.per_sub, args.topics),
            kind,
        };
        let task = tokio::task::spawn_local(subscriber::run(sh.clone(), spec));
        if kind == subscriber::Kind::Healthy {
            sub_tasks.push(task);
        } else {
            slow_tasks.push(task);
        }
    }
    let total = (args.subs + slow) as u64;
    let st = &sh.stats;
    let mut last_line = Instant::now();
    loop {
        let done =
            st.subs_ok.get() + st.subs_failed.get() + st.slow_ok.get() + st.slow_failed.get();
        if done >= total {
            break;
        }
        if progress && last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            eprintln!(
                "[connect {:5.1}s] {done}/{total} ({} failed)",
                connect_started.elapsed().as_secs_f64(),
                st.subs_failed.get() + st.slow_failed.get()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_s = connect_started.elapsed().as_secs_f64();
    if st.subs_ok.get() == 0 && args.subs > 0 {
        bail!("no subscriber could connect to {}", args.url);
    }
    // Let the broker finish its own bookkeeping before sampling memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connected = probe.now();
    if progress {
        eprintln!(
            "[connect] {} subscribers (+{} slow) in {connect_s:.2}s, {} failed",
            st.subs_ok.get(),
            st.slow_ok.get(),
            st.subs_failed.get() + st.slow_failed.get()
        );
    }

    // 2. Publishers (none for `conns`).
    let mut pub_tasks: Vec<JoinHandle<()>> = Vec::new();
    for p in 0..publishers {
        let spec = publisher::Spec {
            index: p,
            rate_per_s: args.rate / publishers as f64,
            max_inflight: args.max_inflight,
            topic_offset: (p * args.topics / publishers) as u64,
        };
        let sh2 = sh.clone();
        pub_tasks.push(tokio::task::spawn_local(async move {
            let res = if sh2.opts.nats {
                nats::publish(&sh2, spec).await
            } else {
                publisher::run(sh2.clone(), spec).await
            };
            if let Err(e) = res {
                sh2.stats.pubs_failed.add(1);
                sh2.stats.note_error(|| format!("{e:#}"));
            }
        }));
    }
    let deadline = Instant::now() + sh.opts.connect_timeout;
    while st.pubs_ready.get() + st.pubs_failed.get() < publishers as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if publishers > 0 && st.pubs_ready.get() == 0 {
        bail!("no publisher could connect (is --key / TICKWIRE_KEY right?)");
    }

    // 3. The run: warmup, then the measured window.
    let hold = Duration::from_secs_f64(args.duration);
    let warmup = if scenario == Scenario::Conns {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(args.warmup)
    };
    let t0 = Instant::now();
    let t0_ns = unix_nanos();
    sh.window_start.set(t0_ns + warmup.as_nanos() as u64);
    sh.window_end.set(t0_ns + (warmup + hold).as_nanos() as u64);
    sh.go.cancel();
    let measure_at = t0 + warmup;
    let end_at = measure_at + hold;
    let mut start_point = if warmup.is_zero() {
        probe.now()
    } else {
        Point::default()
    };
    let mut next_line = t0 + Duration::from_secs(1);
    let mut prev = Snapshot::take(st, &probe, t0);
    loop {
        let wake = if start_point.at.is_none() {
            next_line.min(measure_at)
        } else {
            next_line.min(end_at)
        };
        tokio::time::sleep_until(wake).await;
        let now = Instant::now();
        if start_point.at.is_none() && now >= measure_at {
            start_point = probe.now();
        }
        if now >= next_line {
            next_line += Duration::from_secs(1);
            let cur = Snapshot::take(st, &probe, now);
            if progress {
                let phase = if now <= measure_at + Duration::from_millis(5) && !warmup.is_zero() {
                    "warmup"
                } else {
                    scenario.name()
                };
                eprintln!(
                    "{}",
                    progress_line(&sh, &prev, &cur, now - t0, phase, scenario)
                );
            }
            sh.stats.latency_interval.borrow_mut().reset();
            prev = cur;
        }
        if now >= end_at {
            break;
        }
    }
    let end_point = probe.now();

    // 4. Drain: last acks, then deliveries of the measured ticks.
    for t in pub_tasks {
        let _ = t.await;
    }
    let drain_deadline = Instant::now() + sh.opts.drain;
    let mut last_seen = st.ticks_measured.get();
    let mut last_change = Instant::now();
    while publishers > 0
        && st.ticks_measured.get() < st.expected()
        && Instant::now() < drain_deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let seen = st.ticks_measured.get();
        if seen != last_seen {
            last_seen = seen;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(1) {
            break;
        }
    }
    let after = probe.now();

    // 5. Close: healthy subscribers say goodbye, slow ones drain to learn their fate.
    sh.stop.cancel();
    sh.drain_slow.cancel();
    let close_deadline = Instant::now() + Duration::from_secs(3) + sh.opts.drain;
    for t in sub_tasks.into_iter().chain(slow_tasks) {
        let _ = tokio::time::timeout_at(close_deadline, t).await;
    }

    let closes_4001 = match (&closes_before, count_closes) {
        (Some(b), true) => scrape::fetch(&sh.target).await.map(|a| {
            let code = "code=\"4001\"";
            scrape::sum(&a, "tickwire_closes", code) - scrape::sum(b, "tickwire_closes", code)
        }),
        _ => None,
    };

    let report = Report {
        args: &args,
        sh: &sh,
        closes_4001,
        connect_s,
        before,
        connected,
        start: start_point,
        end: end_point,
        after,
    };
    print!("{}", report.summary());
    println!("{}", report.json());
    Ok(())
}

/// Counters at one progress line, to print per-second rates.
struct Snapshot {
    at: Instant,
    sent: u64,
    acked: u64,
    recv: u64,
    gaps: u64,
    proc: Point,
}

impl Snapshot {
    fn take(st: &Stats, probe: &Probe, at: Instant) -> Self {
        Snapshot {
            at,
            sent: st.sent.get(),
            acked: st.acked.get(),
            recv: st.ticks_recv.get(),
            gaps: st.seq_gaps.get(),
            proc: probe.now(),
        }
    }
}

fn progress_line(
    sh: &Shared,
    prev: &Snapshot,
    cur: &Snapshot,
    since: Duration,
    phase: &str,
    sc: Scenario,
) -> String {
    let st = &sh.stats;
    let dt = (cur.at - prev.at).as_secs_f64().max(1e-9);
    let rate = |a: u64, b: u64| si(a.saturating_sub(b) as f64 / dt);
    let mut line = format!("[{:>6} {:5.1}s]", phase, since.as_secs_f64());
    if sc == Scenario::Conns {
        let ended: u64 = st.sub_endings.borrow().values().sum();
        let _ = write!(line, " open {}", st.subs_ok.get().saturating_sub(ended));
    } else {
        let lat = st.latency_interval.borrow();
        let _ = write!(
            line,
            " sent {}/s acked {}/s recv {}/s inflight {} gaps +{} | lat p50 {} p99 {} max {}",
            rate(cur.sent, prev.sent),
            rate(cur.acked, prev.acked),
            rate(cur.recv, prev.recv),
            st.inflight.get(),
            cur.gaps - prev.gaps,
            dur_ns(lat.value_at_quantile(0.5)),
            dur_ns(lat.value_at_quantile(0.99)),
            dur_ns(lat.max()),
        );
    }
    if let (Some(a), Some(b)) = (prev.proc.broker, cur.proc.broker) {
        let _ = write!(
            line,
            " | broker cpu {:3.0}% rss {}",
            (b.cpu_s - a.cpu_s) / dt * 100.0,
            mb(b.rss_kb)
        );
    }
    if let (Some(a), Some(b)) = (prev.proc.me, cur.proc.me) {
        let _ = write!(
            line,
            " | loadgen cpu {:3.0}%",
            (b.cpu_s - a.cpu_s) / dt * 100.0
        );
    }
    line
}

/// `12.3k`, `4.56M`: for rates in progress lines.
fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// A latency in ns, readable.
fn dur_ns(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.2}s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else {
        format!("{:.1}us", ns as f64 / 1e3)
    }
}

fn mb(kb: u64) -> String {
    format!("{:.1}MB", kb as f64 / 1024.0)
}

struct Report<'a> {
    args: &'a Args,
    sh: &'a Shared,
    /// 4001 closes the broker counted during the run (from `/metrics`).
    closes_4001: Option<f64>,
    connect_s: f64,
    before: Point,
    connected: Point,
    start: Point,
    end: Point,
    after: Point,
}

impl Report<'_> {
    fn window_s(&self) -> f64 {
        match (self.start.at, self.end.at) {
            (Some(a), Some(b)) => (b - a).as_secs_f64(),
            _ => self.args.duration,
        }
    }

    fn cpu(&self, pick: impl Fn(&Point) -> Option<ProcSample>) -> Option<f64> {
        Some(pick(&self.end)?.cpu_s - pick(&self.start)?.cpu_s)
    }

    /// Slow subscribers the broker ended, however they saw it (Close frame,
    /// EOF, or reset).
    fn slow_closed(&self) -> u64 {
        let endings = self.sh.stats.slow_endings.borrow();
        endings
            .iter()
            .filter(|(k, _)| k.as_str() != "still open")
            .map(|(_, n)| n)
            .sum()
    }

    /// The hypervisor's steal over the measured window, in % of the machine.
    fn steal_pct(&self) -> Option<f64> {
        sys::steal_pct(self.start.machine?, self.end.machine?)
    }

    fn rss_per_conn_bytes(&self) -> Option<f64> {
        let ok = self.sh.stats.subs_ok.get() + self.sh.stats.slow_ok.get();
        let (a, b) = (self.before.broker?, self.connected.broker?);
        (ok > 0).then(|| (b.rss_kb as f64 - a.rss_kb as f64) * 1024.0 / ok as f64)
    }

    fn connect_rate(&self) -> f64 {
        (self.sh.stats.subs_ok.get() + self.sh.stats.slow_ok.get()) as f64
            / self.connect_s.max(1e-9)
    }

    fn summary(&self) -> String {
        let a = self.args;
        let st = &self.sh.stats;
        let w = self.window_s();
        let mut s = String::new();
        let rate = if a.rate > 0.0 {
            format!("{} ticks/s", a.rate)
        } else {
            format!("max (window {})", a.max_inflight)
        };
        let _ = writeln!(
            s,
            "loadgen {}: {} ({}), {} subs x {} of {} topics",
            a.scenario.name(),
            a.url,
            if a.nats { "nats" } else { "tickwire" },
            a.subs,
            a.per_sub,
            a.topics
        );
        let _ = writeln!(
            s,
            "connect     {} ok, {} failed in {:.2} s ({:.0} conn/s)",
            st.subs_ok.get() + st.slow_ok.get(),
            st.subs_failed.get() + st.slow_failed.get(),
            self.connect_s,
            self.connect_rate()
        );
        if a.scenario == Scenario::Conns {
            let ended: u64 = st.sub_endings.borrow().values().sum();
            let _ = writeln!(
                s,
                "held        {:.1} s, {} closed by the broker meanwhile",
                w, ended
            );
        } else {
            let expected = st.expected();
            let got = st.ticks_measured.get();
            let lost = expected.saturating_sub(got);
            let lat = st.latency.borrow();
            let _ = writeln!(
                s,
                "publishers  {} at {rate}, {:.1} s measured after {:.1} s warmup",
                a.publishers, w, a.warmup
            );
            let _ = writeln!(
                s,
                "published   {} ticks ({:.0}/s), {} refused",
                st.acked_measured.get(),
                st.acked_measured.get() as f64 / w,
                st.publish_errors.get()
            );
            if st.skipped.get() > 0 {
                let _ = writeln!(
                    s,
                    "            rate not kept: {} sending slots skipped (window full or CPU busy)",
                    st.skipped.get()
                );
            }
            let _ = writeln!(
                s,
                "deliveries  expected {expected}, received {got}, lost {lost} ({:.4}%)",
                pct(lost, expected)
            );
            let _ = writeln!(s, "delivered   {:.0}/s", got as f64 / w);
            let _ = writeln!(
                s,
                "latency     p50 {}  p99 {}  p99.9 {}  max {}  (n = {})",
                dur_ns(lat.value_at_quantile(0.5)),
                dur_ns(lat.value_at_quantile(0.99)),
                dur_ns(lat.value_at_quantile(0.999)),
                dur_ns(lat.max()),
                lat.len()
            );
            let _ = writeln!(
                s,
                "seq         {} skipped, {} backwards, {} unexpected topic",
                st.seq_gaps.get(),
                st.seq_backwards.get(),
                st.ticks_unexpected.get()
            );
        }
        if !st.sub_endings.borrow().is_empty() {
            let _ = writeln!(s, "sub ends    {:?}", st.sub_endings.borrow());
        }
        if a.scenario == Scenario::Slow {
            let _ = writeln!(
                s,
                "slow subs   {} connected, {} ended by the broker, {} ticks read at the end; as seen: {:?}",
                st.slow_ok.get(),
                self.slow_closed(),
                st.slow_ticks.get(),
                st.slow_endings.borrow()
            );
            if let Some(n) = self.closes_4001 {
                let _ = writeln!(
                    s,
                    "            broker /metrics: {n} closes with 4001 during the run"
                );
            }
        }
        if let Some(b) = self.after.broker {
            let cpu = self.cpu(|p| p.broker).unwrap_or(0.0);
            let _ = writeln!(
                s,
                "broker      cpu {cpu:.2} s in {w:.1} s ({:.0}% of a core), rss {} -> {} connected -> {} end (peak {}), {} threads",
                cpu / w * 100.0,
                mb(self.before.broker.map_or(0, |p| p.rss_kb)),
                mb(self.connected.broker.map_or(0, |p| p.rss_kb)),
                mb(b.rss_kb),
                mb(b.hwm_kb),
                b.threads
            );
            if let (Some(per), Scenario::Conns) = (self.rss_per_conn_bytes(), a.scenario) {
                let _ = writeln!(s, "rss/conn    {:.0} bytes", per);
            }
        }
        if let Some(cpu) = self.cpu(|p| p.me) {
            let _ = writeln!(
                s,
                "loadgen     cpu {cpu:.2} s ({:.0}% of a core)",
                cpu / w * 100.0
            );
        }
        if let Some(p) = self.steal_pct() {
            let _ = writeln!(s, "machine     {p:.1}% of its CPU stolen by the hypervisor");
        }
        let errors = st.first_errors.borrow();
        if !errors.is_empty() {
            let _ = writeln!(s, "first errors:");
            for e in errors.iter() {
                let _ = writeln!(s, "  {e}");
            }
        }
        s
    }

    /// One JSON object on one line, keys in a fixed, readable order.
    fn json(&self) -> String {
        let a = self.args;
        let st = &self.sh.stats;
        let w = self.window_s();
        let lat = st.latency.borrow();
        let us = |q: f64| lat.value_at_quantile(q) as f64 / 1e3;
        let expected = st.expected();
        let got = st.ticks_measured.get();
        let broker_cpu = self.cpu(|p| p.broker);
        let me_cpu = self.cpu(|p| p.me);
        let endings = |e: &stats::Endings| serde_json::to_value(&*e.borrow()).unwrap_or_default();
        let mut f: Vec<(&str, serde_json::Value)> = vec![
            ("scenario", json!(a.scenario.name())),
            ("url", json!(a.url)),
            ("pub_url", json!(a.pub_url.as_deref().unwrap_or(&a.url))),
            ("subs", json!(a.subs)),
            ("topics", json!(a.topics)),
            ("per_sub", json!(a.per_sub)),
            ("subs_ok", json!(st.subs_ok.get())),
            ("subs_failed", json!(st.subs_failed.get())),
            ("connect_s", json!(self.connect_s)),
            ("connect_per_s", json!(self.connect_rate())),
            ("duration_s", json!(w)),
        ];
        if a.scenario != Scenario::Conns {
            f.extend([
                ("publishers", json!(a.publishers)),
                ("rate", json!(a.rate)),
                ("max_inflight", json!(a.max_inflight)),
                ("warmup_s", json!(a.warmup)),
                ("payload_bytes", json!(a.payload_bytes)),
                ("published", json!(st.acked_measured.get())),
                ("published_per_s", json!(st.acked_measured.get() as f64 / w)),
                ("publish_errors", json!(st.publish_errors.get())),
                ("rate_slots_skipped", json!(st.skipped.get())),
                ("expected", json!(expected)),
                ("received", json!(got)),
                ("lost", json!(expected.saturating_sub(got))),
                (
                    "loss_ratio",
                    json!(expected.saturating_sub(got) as f64 / expected.max(1) as f64),
                ),
                ("delivered_per_s", json!(got as f64 / w)),
                ("lat_p50_us", json!(us(0.5))),
                ("lat_p99_us", json!(us(0.99))),
                ("lat_p999_us", json!(us(0.999))),
                ("lat_max_us", json!(lat.max() as f64 / 1e3)),
                ("lat_mean_us", json!(lat.mean() / 1e3)),
                ("seq_skipped", json!(st.seq_gaps.get())),
                ("seq_backwards", json!(st.seq_backwards.get())),
                ("ticks_unexpected", json!(st.ticks_unexpected.get())),
            ]);
        }
        f.push(("sub_endings", endings(&st.sub_endings)));
        if a.scenario == Scenario::Slow {
            let closed_4001 = st.slow_endings.borrow().get("4001").copied().unwrap_or(0);
            f.extend([
                ("slow", json!(a.slow)),
                ("slow_ok", json!(st.slow_ok.get())),
                ("slow_closed", json!(self.slow_closed())),
                ("slow_closed_4001", json!(closed_4001)),
                ("broker_closes_4001", json!(self.closes_4001)),
                ("slow_endings", endings(&st.slow_endings)),
            ]);
        }
        if let Some(b) = self.after.broker {
            f.extend([
                ("broker_pid", json!(a.broker_pid)),
                ("broker_cpu_s", json!(broker_cpu)),
                ("broker_cpu_util", json!(broker_cpu.map(|c| c / w))),
                (
                    "broker_rss_before_kb",
                    json!(self.before.broker.map(|p| p.rss_kb)),
                ),
                (
                    "broker_rss_connected_kb",
                    json!(self.connected.broker.map(|p| p.rss_kb)),
                ),
                ("broker_rss_after_kb", json!(b.rss_kb)),
                ("broker_hwm_kb", json!(b.hwm_kb)),
                ("rss_per_conn_bytes", json!(self.rss_per_conn_bytes())),
            ]);
        }
        f.extend([
            ("loadgen_cpu_s", json!(me_cpu)),
            ("loadgen_cpu_util", json!(me_cpu.map(|c| c / w))),
            ("loadgen_rss_kb", json!(self.after.me.map(|p| p.rss_kb))),
            ("machine_steal_pct", json!(self.steal_pct())),
            (
                "client",
                json!(if self.sh.opts.fws { "fws" } else { "raw" }),
            ),
            ("protocol", json!(if a.nats { "nats" } else { "tickwire" })),
        ]);
        let mut out = String::from("{");
        for (i, (k, v)) in f.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{}:{v}", json!(k));
        }
        out.push('}');
        out
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}
