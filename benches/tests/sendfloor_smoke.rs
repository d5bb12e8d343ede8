//! A short run of `sendfloor`, sender and receiver, so the floor experiment
//! of docs/performance.md never rots: every record sent must be received and
//! timed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn parse(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn sendfloor_sends_and_times_every_record() {
    run(false);
}

/// The same with one io_uring submission per burst, where the kernel allows
/// io_uring; where it does not, the sender says so and fails.
#[test]
fn sendfloor_io_uring_sends_and_times_every_record() {
    if io_uring::IoUring::new(2).is_ok() {
        run(true);
    } else {
        let out = Command::new(env!("CARGO_BIN_EXE_sendfloor"))
            .args(["send", "--listen", "127.0.0.1:0", "--io-uring"])
            .args(["--conns", "1", "--burst", "1"])
            .stdin(Stdio::null())
            .output()
            .expect("run sendfloor send");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("io_uring"));
    }
}

fn run(io_uring: bool) {
    let mut send = Command::new(env!("CARGO_BIN_EXE_sendfloor"))
        .args([
            "send",
            "--listen",
            "127.0.0.1:0",
            "--conns",
            "20",
            "--burst",
            "5",
        ])
        .args(["--rate", "200", "--warmup", "0.2", "--duration", "0.5"])
        .args(if io_uring { &["--io-uring"][..] } else { &[] })
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sendfloor send");
    let mut lines = BufReader::new(send.stdout.take().expect("piped")).lines();
    let first = parse(&lines.next().expect("a first line").expect("read"));
    assert_eq!(first["mode"], "listening");
    let addr = first["addr"].as_str().expect("addr").to_string();
    let recv = Command::new(env!("CARGO_BIN_EXE_sendfloor"))
        .args([
            "recv",
            "--connect",
            &addr,
            "--conns",
            "20",
            "--warmup",
            "0.2",
        ])
        .output()
        .expect("run sendfloor recv");
    assert!(
        recv.status.success(),
        "{}",
        String::from_utf8_lossy(&recv.stderr)
    );
    let sent = parse(&lines.next().expect("a result line").expect("read"));
    assert!(send.wait().expect("wait").success());
    let got = parse(String::from_utf8_lossy(&recv.stdout).trim());
    // 0.7 s of bursts of 5 at 200 a second: about 700 records in all, of
    // which the measured 0.5 s carry about 500.
    assert_eq!(
        sent["mode"],
        if io_uring { "send_io_uring" } else { "send" }
    );
    assert_eq!(sent["would_block"], 0);
    let per_s = sent["sends_per_s"].as_f64().expect("sends_per_s");
    assert!((900.0..=1100.0).contains(&per_s), "{sent}");
    let timed = got["records"].as_u64().expect("records");
    assert!((400..=700).contains(&timed), "{got}");
    assert!(got["lat_p50_us"].as_f64().expect("p50") > 0.0);
}
