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
            let l = lines.recv_timeout(WAIT).expect("tickwire prints 'serving on'");
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
        rx.recv_timeout(WAIT).expect("tickwire exits in time").expect("wait")
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
    let mut c = Client::connect(&format!("ws://{addr}/ws"), &[]).await.unwrap();
    c.expect_type("welcome").await
}

#[tokio::test]
async fn config_file_then_environment_then_flags() {
    let cfg = temp_file("layers.toml", "listen = \"127.0.0.1:1\"\n[limits]\nheartbeat_ms = 1234\n[auth]\npublisher_keys = [\"from-file\"]\n");
    let b = Broker::start(&["--config", cfg.to_str().unwrap(), "--no-demo-feed"], &[]);
    assert_eq!(welcome(b.addr).await["heartbeat_ms"], 1234);
    let (s, _) = http(b.addr, "POST", "/api/publish", &[("Authorization", "Bearer from-file")], br#"{"topic":"a","data":{}}"#).await;
    assert_eq!(s, 200);
    drop(b);
    let b = Broker::start(
        &["--config", cfg.to_str().unwrap(), "--no-demo-feed", "--publisher-key", "from-flag"],
        &[("TICKWIRE_HEARTBEAT_MS", "4321")],
    );
    assert_eq!(welcome(b.addr).await["heartbeat_ms"], 4321);
    let (s, _) = http(b.addr, "POST", "/api/publish", &[("Authorization", "Bearer from-flag")], br#"{"topic":"a","data":{}}"#).await;
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
    assert!(err.contains("limits.heartbeat_ms") && err.contains("bad.toml"), "{err}");
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
    let line = b.log.iter().find(|l| l.contains("publisher_key=")).expect("key logged");
    let key = line.split("publisher_key=").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let auth = format!("Bearer {key}");
    let (s, body) = http(b.addr, "POST", "/api/publish", &[("Authorization", &auth)], br#"{"topic":"a","data":{}}"#).await;
    assert_eq!(s, 200, "{body}");
}

#[tokio::test]
async fn sigterm_sends_shutdown_closes_1001_and_exits_0() {
    let mut b = Broker::start(&["--no-demo-feed"], &[]);
    let mut c = Client::connect(&format!("ws://{}/ws", b.addr), &[]).await.unwrap();
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
