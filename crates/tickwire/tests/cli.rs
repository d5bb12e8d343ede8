//! The `tickwire` binary as a user runs it: flags, config file, environment,
//! the generated publisher key, signals.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use serde_json::json;
use tickwire_testkit::{Client, Closed, WAIT, http};

struct Broker {
    child: Option<Child>,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Broker {
    /// Starts the binary on 127.0.0.1:0 and waits for its "serving on" line.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Broker {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tickwire"));
        cmd.args(["--listen", "127.0.0.1:0"]).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tickwire");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut log = Vec::new();
        let addr = loop {
            let l = lines
                .recv_timeout(WAIT)
                .expect("tickwire prints 'serving on'");
            log.push(l.clone());
            if let Some(rest) = l.split("serving on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        Broker {
            child: Some(child),
            addr,
            lines,
            log,
        }
    }

    fn signal(&self, sig: i32) {
        let child = self.child.as_ref().expect("running");
        assert_eq!(kill(child.id() as i32, sig), 0);
    }

    /// Waits for the exit code, blocking a thread on `wait()` so the test waits
    /// on the event itself, with a timeout.
    fn wait_exit(&mut self) -> i32 {
        let mut child = self.child.take().expect("running");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait().map(|s| s.code().unwrap_or(-1)));
        });
        rx.recv_timeout(WAIT)
            .expect("tickwire exits in time")
            .expect("wait")
    }
}

#[allow(unsafe_code)]
fn kill(pid: i32, sig: i32) -> i32 {
    // SAFETY: kill(2) has no memory effects; the pid is our own child's.
    unsafe { libc::kill(pid, sig) }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tickwire-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

async fn welcome(addr: SocketAddr) -> serde_json::Value {
    let mut c = Client::connect(&format!("ws://{addr}/ws"), &[])
        .await
        .unwrap();
    c.expect_type("welcome").await
}

#[tokio::test]
async fn config_file_then_environment_then_flags() {
    let cfg = temp_file(
        "layers.toml",
        "listen = \"127.0.0.1:1\"\n[limits]\nheartbeat_ms = 1234\n[auth]\npublisher_keys = [\"from-file\"]\n",
    );
    let b = Broker::start(&["--config", cfg.to_str().unwrap(), "--no-demo-feed"], &[]);
    assert_eq!(welcome(b.addr).await["heartbeat_ms"], 1234);
    let (s, _) = http(
        b.addr,
        "POST",
        "/api/publish",
        &[("Authorization", "Bearer from-file")],
        br#"{"topic":"a","data":{}}"#,
    )
    .await;
    assert_eq!(s, 200);
    drop(b);
    let b = Broker::start(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--no-demo-feed",
            "--publisher-key",
            "from-flag",
        ],
        &[("TICKWIRE_HEARTBEAT_MS", "4321")],
    );
    assert_eq!(welcome(b.addr).await["heartbeat_ms"], 4321);
    let (s, _) = http(
        b.addr,
        "POST",
        "/api/publish",
        &[("Authorization", "Bearer from-flag")],
        br#"{"topic":"a","data":{}}"#,
    )
    .await;
    assert_eq!(s, 200);
}

#[test]
fn a_bad_config_names_the_key_and_the_file() {
    let cfg = temp_file("bad.toml", "[limits]\nheartbeat_ms = \"often\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("limits.heartbeat_ms") && err.contains("bad.toml"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .env("TICKWIRE_SOFT_LIMIT_BYTES", "-5")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TICKWIRE_SOFT_LIMIT_BYTES"));
}

#[tokio::test]
async fn without_a_key_one_is_generated_and_logged() {
    let b = Broker::start(&["--no-demo-feed"], &[]);
    let line = b
        .log
        .iter()
        .find(|l| l.contains("publisher_key="))
        .expect("key logged");
    let key = line
        .split("publisher_key=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let auth = format!("Bearer {key}");
    let (s, body) = http(
        b.addr,
        "POST",
        "/api/publish",
        &[("Authorization", &auth)],
        br#"{"topic":"a","data":{}}"#,
    )
    .await;
    assert_eq!(s, 200, "{body}");
}

#[tokio::test]
async fn sigterm_sends_shutdown_closes_1001_and_exits_0() {
    let mut b = Broker::start(&["--no-demo-feed"], &[]);
    let mut c = Client::connect(&format!("ws://{}/ws", b.addr), &[])
        .await
        .unwrap();
    c.expect_type("welcome").await;
    c.subscribe(json!({"op":"subscribe","topics":["x"]})).await;
    b.signal(libc::SIGTERM);
    let (closed, frames) = c.until_closed(WAIT).await;
    assert_eq!(closed, Closed::Code(1001, "shutting down".into()));
    assert_eq!(frames.last().unwrap()["type"], "shutdown");
    assert_eq!(b.wait_exit(), 0);
    while let Ok(l) = b.lines.try_recv() {
        b.log.push(l);
    }
}

#[tokio::test]
async fn the_default_run_serves_the_synthetic_feed() {
    let b = Broker::start(&[], &[]);
    // Wait until the feed has given every crypto symbol a value.
    let mut every = tokio::time::interval(std::time::Duration::from_millis(50));
    let deadline = std::time::Instant::now() + WAIT;
    let crypto = loop {
        every.tick().await;
        let (_, body) = http(b.addr, "GET", "/api/topics", &[], b"").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let n = v["topics"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["topic"].as_str().unwrap().starts_with("crypto."))
            .count();
        if n >= 5 {
            break n;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the demo feed publishes"
        );
    };
    let mut c = Client::connect(&format!("ws://{}/ws", b.addr), &[])
        .await
        .unwrap();
    assert_eq!(c.recv().await["type"], "welcome");
    c.send(json!({"op":"subscribe","id":1,"topics":["crypto.*"]}))
        .await;
    assert_eq!(c.recv().await["type"], "subscribed");
    let mut snapshots = 0;
    let mut ticks = 0;
    while ticks < 20 {
        let v = c.recv().await;
        assert!(v["topic"].as_str().unwrap().starts_with("crypto."), "{v}");
        match v["type"].as_str().unwrap() {
            "snapshot" => {
                assert_eq!(ticks, 0, "snapshots come before live ticks");
                snapshots += 1;
            }
            "tick" => ticks += 1,
            other => panic!("unexpected {other}"),
        }
        let d = &v["data"];
        assert!(
            d["bid"].as_f64().unwrap() < d["ask"].as_f64().unwrap(),
            "{d}"
        );
    }
    assert!(
        snapshots >= crypto,
        "a snapshot per crypto symbol: {snapshots} of {crypto}"
    );
}

#[tokio::test]
async fn a_replay_feed_from_the_config_file_publishes_its_recording() {
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../feeds/replay/data/sample.ndjson");
    let cfg = temp_file(
        "replay.toml",
        &format!(
            "demo_feed = false\n[[feeds]]\nkind = \"replay\"\npath = {:?}\nspeed = 0\ntopic_prefix = \"rec\"\n",
            sample.to_str().unwrap()
        ),
    );
    let b = Broker::start(&["--config", cfg.to_str().unwrap()], &[]);
    let lines = std::fs::read_to_string(&sample)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    let mut c = Client::connect(&format!("ws://{}/ws", b.addr), &[])
        .await
        .unwrap();
    c.expect_type("welcome").await;
    // Speed 0 replays at once: every line is a tick by the time we look.
    let mut every = tokio::time::interval(std::time::Duration::from_millis(50));
    let total = loop {
        every.tick().await;
        let (_, body) = http(b.addr, "GET", "/api/topics", &[], b"").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let sum: u64 = v["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["seq"].as_u64().unwrap())
            .sum();
        if sum as usize >= lines {
            assert!(
                v["topics"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|t| t["topic"].as_str().unwrap().starts_with("rec."))
            );
            break sum;
        }
    };
    assert_eq!(total as usize, lines);
    let (_, m) = http(b.addr, "GET", "/metrics", &[], b"").await;
    let feed_ticks = m
        .lines()
        .find(|l| l.starts_with("tickwire_feed_ticks_total{feed="))
        .expect("feed metrics");
    assert!(feed_ticks.ends_with(&format!(" {lines}")), "{feed_ticks}");
}

#[test]
fn a_bad_feed_config_is_an_error_at_start() {
    let cfg = temp_file(
        "badfeed.toml",
        "[[feeds]]\nkind = \"binance\"\nsymbols = []\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tickwire"))
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("badfeed.toml") && err.contains("symbols"),
        "{err}"
    );
}
