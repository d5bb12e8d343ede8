//! The kernel's floor for a fan-out at a fixed rate: what one `send` per
//! delivery costs on this machine when nothing else is done.
//!
//! `sendfloor send` accepts `--conns` TCP connections and, `--rate` times a
//! second, stamps the time and writes one `--bytes` record to each of
//! `--burst` of them (the next `--burst` connections each time, round-robin),
//! exactly as a broker fans one tick out to a topic's subscribers, but with
//! no parsing, no queues and no event loop: a timer, then `write` after
//! `write`. It prints its own CPU use over the measured window.
//! `sendfloor recv` opens the connections (one current-thread runtime, a read
//! per readiness, like loadgen) and prints the latency from the stamp to
//! receipt.
//!
//! Run each pinned like the broker and loadgen (docs/performance.md):
//!
//! ```sh
//! taskset -c 0 target/release/sendfloor send --listen 127.0.0.1:29900 --rate 500 &
//! taskset -c 1 target/release/sendfloor recv --connect 127.0.0.1:29900
//! ```
//!
//! Whatever CPU and latency it shows, no server that sends each delivery on
//! its own can do better on this machine.
//!
//! `--io-uring` makes the same sends, but queues each burst's in an io_uring
//! and submits them with one `io_uring_enter`, as the broker's direct writes
//! do (`limits.io_uring`): the floor for one system call per burst instead
//! of per send.

use std::cell::RefCell;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use tokio::io::AsyncReadExt;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Accept the connections, then send bursts at a fixed rate.
    Send {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// Connections written per burst (a topic's subscribers).
        #[arg(long, default_value_t = 100)]
        burst: usize,
        /// Bursts per second (ticks per second).
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        /// Bytes per record (a tick frame is about 150).
        #[arg(long, default_value_t = 150)]
        bytes: usize,
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// One io_uring submission per burst instead of a `write` per send.
        #[arg(long)]
        io_uring: bool,
    },
    /// Open the connections and time every record.
    Recv {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// Must match the sender's.
        #[arg(long, default_value_t = 150)]
        bytes: usize,
        /// Records stamped earlier than this after the first are not timed.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
    },
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// utime + stime of this process, in clock ticks (100 per second on Linux).
fn cpu_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after = &stat[stat.rfind(')').context("bad /proc/self/stat")? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// One burst of sends through an io_uring: `Ok(n)` per send is what it took.
#[allow(unsafe_code)]
fn uring_burst(
    ring: &mut io_uring::IoUring,
    fds: impl Iterator<Item = i32>,
    rec: &[u8],
    results: &mut Vec<std::io::Result<usize>>,
) -> anyhow::Result<()> {
    results.clear();
    let len = u32::try_from(rec.len())?;
    let mut queued = 0;
    {
        let mut sq = ring.submission();
        for fd in fds {
            let e = io_uring::opcode::Send::new(io_uring::types::Fd(fd), rec.as_ptr(), len)
                .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                .build()
                .user_data(queued as u64);
            // SAFETY: `rec` outlives the sends: this function waits below for
            // every queued entry's completion before it returns (an error
            // while waiting ends the program, with `rec` still alive in the
            // caller, which then exits).
            unsafe { sq.push(&e) }.map_err(|_| anyhow::anyhow!("ring full"))?;
            queued += 1;
        }
    }
    results.resize_with(queued, || Ok(0));
    let mut done = 0;
    while done < queued {
        match ring.submit_and_wait(queued - done) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Entries may still point at `rec`: never return to free it.
                eprintln!("io_uring_enter: {e}");
                std::process::exit(1);
            }
        }
        for c in ring.completion() {
            let r = c.result();
            results[c.user_data() as usize] = if r >= 0 {
                Ok(r as usize)
            } else {
                Err(std::io::Error::from_raw_os_error(-r))
            };
            done += 1;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn send(
    listen: SocketAddr,
    conns: usize,
    burst: usize,
    rate: f64,
    bytes: usize,
    warmup: f64,
    duration: f64,
    io_uring: bool,
) -> anyhow::Result<()> {
    if bytes < 8 || burst == 0 || burst > conns || rate <= 0.0 {
        bail!("need --bytes >= 8, 0 < --burst <= --conns and --rate > 0");
    }
    let mut ring = if io_uring {
        Some(
            io_uring::IoUring::new(u32::try_from(burst.next_power_of_two())?)
                .context("io_uring")?,
        )
    } else {
        None
    };
    let l = TcpListener::bind(listen).context("bind")?;
    // First line: where to connect (`--listen 127.0.0.1:0` picks a port).
    println!(
        "{{\"mode\":\"listening\",\"addr\":\"{}\"}}",
        l.local_addr()?
    );
    std::io::stdout().flush()?;
    let mut socks = Vec::with_capacity(conns);
    while socks.len() < conns {
        let (s, _) = l.accept()?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        socks.push(s);
    }
    let mut rec = vec![b'x'; bytes];
    let mut results: Vec<std::io::Result<usize>> = Vec::with_capacity(burst);
    let every = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(duration);
    let (mut sent, mut would_block, mut next) = (0u64, 0u64, 0usize);
    let mut measured: Option<(u64, u64)> = None; // (cpu ticks, sends) at the window start
    let mut slot = start;
    while slot < end {
        if measured.is_none() && slot >= measure_from {
            measured = Some((cpu_ticks()?, sent));
        }
        rec[..8].copy_from_slice(&unix_nanos().to_le_bytes());
        if let Some(ring) = ring.as_mut() {
            let fds = (0..burst).map(|i| socks[(next + i) % conns].as_raw_fd());
            uring_burst(ring, fds, &rec, &mut results)?;
            next = (next + burst) % conns;
        } else {
            results.clear();
            for _ in 0..burst {
                results.push(socks[next].write(&rec));
                next = (next + 1) % conns;
            }
        }
        for r in results.drain(..) {
            match r {
                Ok(n) if n == rec.len() => sent += 1,
                Ok(_) => bail!("short write: the receiver is not reading"),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => would_block += 1,
                Err(e) => return Err(e).context("write"),
            }
        }
        slot += every;
        if let Some(wait) = slot.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let (t0, s0) = measured.context("no measured window")?;
    let cpu_s = (cpu_ticks()? - t0) as f64 / 100.0;
    let sends = sent - s0;
    println!(
        "{{\"mode\":\"{}\",\"sends_per_s\":{:.0},\"cpu_util\":{:.4},\"us_per_send\":{:.2},\"would_block\":{}}}",
        if ring.is_some() {
            "send_io_uring"
        } else {
            "send"
        },
        sends as f64 / duration,
        cpu_s / duration,
        cpu_s * 1e6 / sends.max(1) as f64,
        would_block
    );
    Ok(())
}

async fn recv(connect: SocketAddr, conns: usize, bytes: usize, warmup: f64) -> anyhow::Result<()> {
    let hist = Rc::new(RefCell::new(Histogram::<u64>::new_with_bounds(
        1_000,
        10_000_000_000,
        3,
    )?));
    let first = Rc::new(std::cell::Cell::new(0u64));
    let warm_ns = (warmup * 1e9) as u64;
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut s = tokio::net::TcpStream::connect(connect).await?;
        let (hist, first) = (hist.clone(), first.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let mut buf = vec![0u8; 4096];
            // Bytes of the current record seen so far, and its stamp.
            let (mut at, mut stamp) = (0usize, [0u8; 8]);
            loop {
                let n = match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let now = unix_nanos();
                for &b in &buf[..n] {
                    if at < 8 {
                        stamp[at] = b;
                    }
                    at += 1;
                    if at == bytes {
                        at = 0;
                        let ts = u64::from_le_bytes(stamp);
                        if first.get() == 0 {
                            first.set(ts);
                        }
                        if ts >= first.get() + warm_ns {
                            let _ = hist.borrow_mut().record(now.saturating_sub(ts).max(1_000));
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let h = hist.borrow();
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    println!(
        "{{\"mode\":\"recv\",\"records\":{},\"lat_p50_us\":{:.1},\"lat_p99_us\":{:.1},\"lat_p999_us\":{:.1},\"lat_max_us\":{:.1}}}",
        h.len(),
        us(0.5),
        us(0.99),
        us(0.999),
        h.max() as f64 / 1e3
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Send {
            listen,
            conns,
            burst,
            rate,
            bytes,
            warmup,
            duration,
            io_uring,
        } => send(
            listen, conns, burst, rate, bytes, warmup, duration, io_uring,
        ),
        Cmd::Recv {
            connect,
            conns,
            bytes,
            warmup,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            tokio::task::LocalSet::new().block_on(&rt, recv(connect, conns, bytes, warmup))
        }
    }
}
