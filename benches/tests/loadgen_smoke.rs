//! A short run of `loadgen` against a broker started here, so the load
//! generator never rots: it must connect, subscribe, publish, and account for
//! every delivery.

use std::process::Command;

use tickwire_testkit::{KEY, TestServer};

fn json_line(stdout: &str) -> serde_json::Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line at the end");
    serde_json::from_str(line).expect("JSON")
}

fn loadgen(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadgen failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_line(&stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_fanout_delivers_everything_it_publishes() {
    let srv = TestServer::start().await;
    let url = srv.ws_url();
    let v = tokio::task::spawn_blocking(move || {
        loadgen(&[
            "fanout",
            "--url",
            &url,
            "--key",
            KEY,
            "--subs",
            "20",
            "--topics",
            "5",
            "--per-sub",
            "2",
            "--rate",
            "500",
            "--duration",
            "2",
            "--warmup",
            "0",
            "--drain",
            "2",
            "--quiet",
        ])
    })
    .await
    .unwrap();
    assert_eq!(v["scenario"], "fanout");
    let expected = v["expected"].as_u64().expect("expected");
    assert!(expected > 0, "{v}");
    assert_eq!(v["received"].as_u64(), Some(expected), "{v}");
    assert_eq!(v["lost"].as_u64(), Some(0), "{v}");
    assert_eq!(v["seq_skipped"].as_u64(), Some(0), "{v}");
    assert_eq!(v["subs_ok"].as_u64(), Some(20), "{v}");
    let ticks_in = srv
        .engine()
        .stats()
        .ticks_in
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(ticks_in >= v["published"].as_u64().unwrap(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_conns_opens_idle_subscribers() {
    let srv = TestServer::start().await;
    let url = srv.ws_url();
    let v = tokio::task::spawn_blocking(move || {
        loadgen(&[
            "conns",
            "--url",
            &url,
            "--key",
            KEY,
            "--subs",
            "50",
            "--topics",
            "5",
            "--per-sub",
            "2",
            "--duration",
            "1",
            "--quiet",
        ])
    })
    .await
    .unwrap();
    assert_eq!(v["scenario"], "conns");
    assert_eq!(v["subs_ok"].as_u64(), Some(50), "{v}");
    assert!(v["connect_per_s"].as_f64().unwrap() > 0.0, "{v}");
}
