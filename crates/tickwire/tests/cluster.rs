//! Clustered brokers as an operator runs them: a real `nats-server` and two or
//! three `tickwire` processes. Needs `nats-server` (`NATS_SERVER`, else
//! /usr/sbin/nats-server, else the PATH), so every test is ignored by default:
//! `cargo test -p tickwire --test cluster -- --ignored`.
//!
//! Every wait is on an event (a frame, a log line, a process exit) with a
//! timeout; every process is killed on drop.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tickwire_testkit::{Client, WAIT, http, metric_value};

const KEY: &str = "k";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Reads a child's output lines into a channel, so the pipe never fills.
fn pipe_lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`; returns the lines read up to it.
fn wait_line(lines: &mpsc::Receiver<String>, needle: &str, what: &str) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => {
                let hit = l.contains(needle);
                seen.push(l);
                if hit {
                    return seen;
                }
            }
            Err(_) => panic!("{what}: no line with '{needle}' within {WAIT:?}; saw {seen:#?}"),
        }
    }
}

/// A `nats-server` on 127.0.0.1, killed on drop.
struct Nats {
    port: u16,
    child: Option<Child>,
}

impl Nats {
    fn start() -> Nats {
        let mut n = Nats {
            port: free_port(),
            child: None,
        };
        n.restart();
        n
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and waits until it is ready.
    fn restart(&mut self) {
        // Debian puts it in /usr/sbin, which a non-root PATH may lack.
        let bin = std::env::var("NATS_SERVER").unwrap_or_else(|_| {
            let sbin = "/usr/sbin/nats-server";
            if std::path::Path::new(sbin).exists() {
                sbin.into()
            } else {
                "nats-server".into()
            }
        });
        let mut child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nats-server (is it installed? apt-get install nats-server)");
        let lines = pipe_lines(child.stderr.take().expect("stderr"));
        self.child = Some(child);
        wait_line(&lines, "Server is ready", "nats-server");
    }

    /// SIGKILL: the nodes see their connections drop, with no goodbye.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `tickwire` process in cluster mode, killed on drop.
struct Node {
    name: String,
    child: Option<Child>,
    addr: SocketAddr,
    epoch: String,
    lines: mpsc::Receiver<String>,
    /// Lines read but not yet waited for (a "connected" line may come before
    /// "serving on").
    backlog: Vec<String>,
}

impl Node {
    /// Starts a node and waits for its "serving on" line (not for NATS).
    fn start(name: &str, nats_url: &str) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tickwire"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--no-demo-feed",
                "--publisher-key",
                KEY,
                "--cluster-nats",
                nats_url,
                "--cluster-node",
                name,
            ])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tickwire");
        let lines = pipe_lines(child.stdout.take().expect("stdout"));
        let seen = wait_line(&lines, "serving on http://", name);
        let l = seen.last().expect("the line");
        let addr = l
            .split("serving on http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .expect("address after 'serving on'");
        let epoch = l
            .split("epoch=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("epoch in the 'serving on' line")
            .to_owned();
        Node {
            name: name.to_owned(),
            child: Some(child),
            addr,
            epoch,
            lines,
            backlog: seen,
        }
    }

    /// Waits for this node's `connects`-th connection to NATS.
    fn wait_connected(&mut self, connects: u32) {
        self.wait_log(&format!("connects={connects}"));
    }

    /// Waits for a log line containing `needle`, looking first at the lines
    /// read already (a node may connect to NATS before it logs "serving on").
    fn wait_log(&mut self, needle: &str) {
        if let Some(i) = self.backlog.iter().position(|l| l.contains(needle)) {
            self.backlog.drain(..=i);
            return;
        }
        self.backlog.clear();
        wait_line(&self.lines, needle, &self.name);
    }

    fn ws(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    async fn client(&self) -> Client {
        let mut c = Client::connect(&self.ws(), &[]).await.expect("connect");
        let w = c.expect_type("welcome").await;
        assert_eq!(w["epoch"], self.epoch.as_str());
        c
    }

    /// Publishes `data` to `topic` over HTTP, one tick per element; returns the seqs.
    async fn publish(&self, topic: &str, data: &[Value]) -> Vec<u64> {
        let body: String = data
            .iter()
            .map(|d| format!("{}\n", json!({"topic": topic, "data": d})))
            .collect();
        let auth = format!("Bearer {KEY}");
        let (status, body) = http(
            self.addr,
            "POST",
            "/api/publish",
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/x-ndjson"),
            ],
            body.as_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{}: {body}", self.name);
        let v: Value = serde_json::from_str(&body).expect("JSON");
        v["seqs"]
            .as_array()
            .expect("seqs")
            .iter()
            .map(|s| s.as_u64().expect("seq"))
            .collect()
    }

    async fn snapshot(&self, topic: &str) -> Value {
        let (status, body) = http(
            self.addr,
            "GET",
            &format!("/api/snapshot?topics={topic}"),
            &[],
            b"",
        )
        .await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).expect("JSON");
        v["snapshots"][0].clone()
    }

    async fn metric(&self, name: &str) -> f64 {
        let (status, body) = http(self.addr, "GET", "/metrics", &[], b"").await;
        assert_eq!(status, 200);
        metric_value(&body, name)
    }

    /// Waits (polling /metrics, within `WAIT`) until `name` is at least `at_least`.
    async fn wait_metric(&self, name: &str, at_least: f64) {
        let deadline = Instant::now() + WAIT;
        let mut every = tokio::time::interval(Duration::from_millis(20));
        loop {
            every.tick().await;
            let v = self.metric(name).await;
            if v >= at_least {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {name} is {v}, not {at_least}, within {WAIT:?}",
                self.name
            );
        }
    }

    /// SIGTERM, and waits for the exit: a node that stops cleanly.
    fn stop(&mut self) {
        let mut c = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .expect("kill(1)");
        assert!(status.success());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(c.wait());
        });
        let code = rx.recv_timeout(WAIT).expect("exits in time").expect("wait");
        assert!(code.success(), "{}: {code}", self.name);
    }

    /// SIGKILL: a node that dies, as opposed to one that stops.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads ticks of `topic` until one with `seq`; returns them all (in order).
async fn ticks_until(c: &mut Client, topic: &str, seq: u64) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let v = c.recv().await;
        if v["type"] == "tick" && v["topic"] == topic {
            let s = v["seq"].as_u64().expect("seq");
            got.push(v);
            if s >= seq {
                return got;
            }
        }
    }
}

/// Proves `from`'s ticks reach `to` (both connected and subscribed in NATS):
/// publishes a probe on `from` until a subscriber on `to` sees one. A node's
/// subscription reaches the server a moment after its "connected" line.
async fn until_linked(from: &Node, to: &Node) {
    let mut c = to.client().await;
    let topic = format!("probe.{}", from.name);
    // No snapshot: only a tick that crossed NATS now proves the link.
    c.subscribe(json!({"op":"subscribe","topics":[topic],"snapshot":false}))
        .await;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        from.publish(&topic, &[json!({})]).await;
        if let Some(v) = c.recv_within(Duration::from_millis(200)).await {
            assert_eq!(v["type"], "tick", "{v}");
            return;
        }
    }
    panic!("{}'s ticks never reached {}", from.name, to.name);
}

/// A nats-server and two nodes, a and b, connected to it, with a's ticks
/// proven to reach b.
async fn two_linked_nodes() -> (Nats, Node, Node) {
    let nats = Nats::start();
    let mut a = Node::start("a", &nats.url());
    let mut b = Node::start("b", &nats.url());
    a.wait_connected(1);
    b.wait_connected(1);
    until_linked(&a, &b).await;
    (nats, a, b)
}

fn prices(n: usize, from: usize) -> Vec<Value> {
    (from..from + n)
        .map(|i| json!({"price": format!("64{i:03}.50"), "i": i}))
        .collect()
}

/// Every tick `seq` in `first..=last`, once, in order, in `epoch`, with its data.
fn assert_contiguous(got: &[Value], first: u64, last: u64, epoch: &str, data: &[Value]) {
    let seqs: Vec<u64> = got.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (first..=last).collect::<Vec<_>>());
    for (v, d) in got.iter().zip(data) {
        assert_eq!(v["epoch"], epoch, "{v}");
        assert_eq!(&v["data"], d);
    }
}

#[tokio::test]
#[ignore = "needs nats-server"]
async fn ticks_published_on_one_node_reach_subscribers_on_every_other_in_order() {
    let nats = Nats::start();
    let mut a = Node::start("a", &nats.url());
    let mut b = Node::start("b", &nats.url());
    let mut c = Node::start("c", &nats.url());
    for n in [&mut a, &mut b, &mut c] {
        n.wait_connected(1);
    }
    until_linked(&a, &b).await;
    until_linked(&a, &c).await;
    let mut on_b = b.client().await;
    let mut on_c = c.client().await;
    for s in [&mut on_b, &mut on_c] {
        s.subscribe(json!({"op":"subscribe","topics":["crypto.*"]}))
            .await;
    }
    let data = prices(200, 0);
    let seqs = a.publish("crypto.BTC-USD", &data).await;
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    for s in [&mut on_b, &mut on_c] {
        let got = ticks_until(s, "crypto.BTC-USD", 200).await;
        assert_contiguous(&got, 1, 200, &a.epoch, &data);
    }
    // Every node's last value is the last tick published, in a's epoch.
    for n in [&a, &b, &c] {
        let snap = n.snapshot("crypto.BTC-USD").await;
        assert_eq!(snap["seq"], 200, "{}", n.name);
        assert_eq!(snap["data"], data[199], "{}", n.name);
    }
    // And a fresh subscriber on b gets it as a snapshot that names a's epoch.
    let mut late = b.client().await;
    late.subscribe(json!({"op":"subscribe","topics":["crypto.BTC-USD"]}))
        .await;
    let snap = late.expect_type("snapshot").await;
    assert_eq!(
        (&snap["seq"], &snap["epoch"]),
        (&json!(200), &json!(a.epoch))
    );
    assert!(b.metric("tickwire_cluster_received_total").await >= 200.0);
    assert!(a.metric("tickwire_cluster_published_total").await >= 200.0);
    assert_eq!(b.metric("tickwire_cluster_remote_gaps_total").await, 0.0);
    assert_eq!(b.metric("tickwire_cluster_nats_connected").await, 1.0);
}

#[tokio::test]
#[ignore = "needs nats-server"]
async fn a_client_of_a_node_that_dies_recovers_on_another_by_epoch_and_seq() {
    let (_nats, mut a, b) = two_linked_nodes().await;

    // A dashboard on a sees ticks 1..=50.
    let mut dash = a.client().await;
    dash.subscribe(json!({"op":"subscribe","topics":["fx.EUR-USD"]}))
        .await;
    let data = prices(80, 0);
    a.publish("fx.EUR-USD", &data[..50]).await;
    let seen = ticks_until(&mut dash, "fx.EUR-USD", 50).await;
    let epoch = seen.last().unwrap()["epoch"].as_str().unwrap().to_owned();
    assert_eq!(epoch, a.epoch);
    dash.close().await;

    // It misses 51..=80; they reach b; then a dies.
    let mut watch = b.client().await;
    watch
        .subscribe(json!({"op":"subscribe","topics":["fx.EUR-USD"]}))
        .await;
    a.publish("fx.EUR-USD", &data[50..]).await;
    ticks_until(&mut watch, "fx.EUR-USD", 80).await;
    a.kill();

    // Reconnected to b, it asks for what came after 50 in a's epoch.
    let mut dash = b.client().await;
    let r = dash
        .subscribe(json!({"op":"subscribe","id":1,"topics":["fx.EUR-USD"],
            "epochs":{"fx.EUR-USD": epoch},"since":{"fx.EUR-USD":50}}))
        .await;
    assert_eq!(r["recovered"], true, "{r}");
    let got = ticks_until(&mut dash, "fx.EUR-USD", 80).await;
    assert_contiguous(&got, 51, 80, &a.epoch, &data[50..]);

    // A client that saw less than b holds is told so and gets a snapshot.
    let mut old = b.client().await;
    let r = old
        .subscribe(json!({"op":"subscribe","id":2,"topics":["fx.EUR-USD"],
            "epochs":{"fx.EUR-USD": "not-this-epoch"},"since":{"fx.EUR-USD":50}}))
        .await;
    assert_eq!(r["recovered"], false, "{r}");
    let snap = old.expect_type("snapshot").await;
    assert_eq!(snap["seq"], 80);

    // The publisher moves to b too: b takes the topic over in its own epoch,
    // seq going on, and its subscribers see the epoch change.
    b.publish("fx.EUR-USD", &[json!({"price":"1.5"})]).await;
    let t = ticks_until(&mut dash, "fx.EUR-USD", 81).await;
    assert_eq!(
        (&t[0]["seq"], &t[0]["epoch"]),
        (&json!(81), &json!(b.epoch))
    );
}

#[tokio::test]
#[ignore = "needs nats-server"]
async fn nodes_serve_without_nats_and_deliver_again_once_it_is_back() {
    // NATS is down when the nodes start: they serve their own clients.
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let mut a = Node::start("a", &url);
    let mut b = Node::start("b", &url);
    let mut on_a = a.client().await;
    on_a.subscribe(json!({"op":"subscribe","topics":["eq.*"]}))
        .await;
    a.publish("eq.ACME", &[json!({"p":1})]).await;
    assert_eq!(ticks_until(&mut on_a, "eq.ACME", 1).await.len(), 1);
    assert_eq!(a.metric("tickwire_cluster_nats_connected").await, 0.0);

    let mut nats = Nats { port, child: None };
    nats.restart();
    a.wait_connected(1);
    b.wait_connected(1);
    until_linked(&a, &b).await;
    let mut on_b = b.client().await;
    on_b.subscribe(json!({"op":"subscribe","topics":["eq.*"]}))
        .await;
    a.publish("eq.ACME", &[json!({"p":2})]).await;
    let got = ticks_until(&mut on_b, "eq.ACME", 2).await;
    assert_eq!(got.last().unwrap()["data"], json!({"p":2}));

    // NATS dies mid-stream: both nodes keep serving their own clients.
    nats.kill();
    a.publish("eq.ACME", &[json!({"p":3})]).await;
    ticks_until(&mut on_a, "eq.ACME", 3).await;
    b.publish("eq.LOCAL", &[json!({"p":"b"})]).await;
    ticks_until(&mut on_b, "eq.LOCAL", 1).await;
    let (s, _) = http(b.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(s, 200);

    // Back on the same port: both reconnect and b delivers a's ticks again.
    nats.restart();
    a.wait_connected(2);
    b.wait_connected(2);
    until_linked(&a, &b).await;
    a.publish("eq.ACME", &[json!({"p":4})]).await;
    let got = ticks_until(&mut on_b, "eq.ACME", 4).await;
    // Seqs go up; any tick lost while NATS was down is a counted gap, not silence.
    let seqs: Vec<u64> = got.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // (Probes lost while b resubscribed count too: at least, not exactly.)
    let missed = 4 - 2 - seqs.len() as u64;
    assert!(
        b.metric("tickwire_cluster_remote_gaps_total").await >= missed as f64,
        "{seqs:?}"
    );
    for n in [&a, &b] {
        let snap = n.snapshot("eq.ACME").await;
        assert_eq!((&snap["seq"], &snap["data"]), (&json!(4), &json!({"p":4})));
        assert_eq!(n.metric("tickwire_cluster_nats_connected").await, 1.0);
    }
}

#[tokio::test]
#[ignore = "needs nats-server"]
async fn two_nodes_publishing_one_topic_is_counted_as_a_conflict() {
    let (_nats, a, b) = two_linked_nodes().await;
    let mut on_b = b.client().await;
    on_b.subscribe(json!({"op":"subscribe","topics":["dup"]}))
        .await;
    a.publish("dup", &[json!({"from":"a"})]).await;
    ticks_until(&mut on_b, "dup", 1).await;
    // b publishes the topic a published a moment ago.
    b.publish("dup", &[json!({"from":"b"})]).await;
    assert_eq!(
        b.metric("tickwire_cluster_epoch_conflicts_total").await,
        1.0
    );
}

#[tokio::test]
#[ignore = "needs nats-server"]
async fn a_node_that_joins_late_takes_the_last_values_from_a_peer() {
    let nats = Nats::start();
    let mut a = Node::start("a", &nats.url());
    a.wait_connected(1);
    a.publish("quiet.one", &prices(3, 0)).await;
    a.publish("quiet.two", &[json!({"p":2})]).await;
    // a sends a quiet topic's last tick once more; b must not get these
    // values that way, but by the state transfer.
    a.wait_metric("tickwire_cluster_repeated_total", 2.0).await;

    let mut b = Node::start("b", &nats.url());
    b.wait_connected(1);
    b.wait_log("took the last values from a peer");
    let snap = b.snapshot("quiet.one").await;
    assert_eq!((&snap["seq"], &snap["data"]), (&json!(3), &prices(3, 0)[2]));
    assert_eq!(b.snapshot("quiet.two").await["data"], json!({"p":2}));
    assert_eq!(b.metric("tickwire_cluster_sync_topics_total").await, 2.0);

    // Its subscribers get the snapshot in a's epoch, then a's next tick.
    let mut on_b = b.client().await;
    on_b.subscribe(json!({"op":"subscribe","topics":["quiet.one"]}))
        .await;
    let s = on_b.expect_type("snapshot").await;
    assert_eq!((&s["seq"], &s["epoch"]), (&json!(3), &json!(a.epoch)));
    until_linked(&a, &b).await;
    a.publish("quiet.one", &[json!({"p":4})]).await;
    let got = ticks_until(&mut on_b, "quiet.one", 4).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(b.metric("tickwire_cluster_remote_gaps_total").await, 0.0);
}

#[tokio::test]
#[ignore = "needs nats-server"]
async fn a_node_that_stops_cleanly_sends_its_last_ticks_first() {
    let (_nats, mut a, b) = two_linked_nodes().await;
    let data = prices(1000, 0);
    a.publish("burst", &data).await;
    // Straight after: what a still has queued goes out before it exits.
    // (1000: b's history holds 1024, so all of it can be replayed below.)
    a.stop();
    let mut on_b = b.client().await;
    let r = on_b
        .subscribe(json!({"op":"subscribe","topics":["burst"],"snapshot":false,
        "epochs":{"burst": a.epoch},"since":{"burst":0}}))
        .await;
    assert_eq!(r["recovered"], true, "{r}");
    let got = ticks_until(&mut on_b, "burst", 1000).await;
    assert_contiguous(&got, 1, 1000, &a.epoch, &data);
}

/// NATS delivers at most once: a peer that lost the last tick of a topic
/// that then went quiet would serve the tick before it until the next one.
/// So a node sends a quiet topic's last tick once more (1 s after it), seen
/// here on NATS itself; a peer that has it drops it as a duplicate, and its
/// subscribers get nothing twice.
#[tokio::test]
#[ignore = "needs nats-server"]
async fn a_quiet_topics_last_tick_is_sent_once_more() {
    use futures_util::StreamExt;

    let (nats, a, b) = two_linked_nodes().await;
    let raw = async_nats::connect(nats.url())
        .await
        .expect("a plain NATS client connects");
    let mut watch = raw
        .subscribe("tickwire.*.quiet.>")
        .await
        .expect("subscribe on NATS");
    raw.flush()
        .await
        .expect("the subscription reached the server");
    let mut on_b = b.client().await;
    on_b.subscribe(json!({"op":"subscribe","topics":["quiet.px"],"snapshot":false}))
        .await;
    let duplicates = b.metric("tickwire_cluster_remote_duplicates_total").await;

    a.publish("quiet.px", &[json!({"p":1}), json!({"p":2})])
        .await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let m = tokio::time::timeout(WAIT, watch.next())
            .await
            .expect("a message on NATS within WAIT")
            .expect("the subscription is open");
        seen.push((m.subject.to_string(), m.payload));
    }
    let subjects: Vec<&str> = seen.iter().map(|(s, _)| s.as_str()).collect();
    // Ticks on `.t.`, the repeat on `.r.`: a node applies a repeat only to
    // the epoch it holds (Engine::apply_repeat).
    assert_eq!(
        subjects,
        [
            "tickwire.t.quiet.px",
            "tickwire.t.quiet.px",
            "tickwire.r.quiet.px"
        ]
    );
    assert_ne!(seen[0].1, seen[1].1, "two different ticks");
    assert_eq!(
        seen[2].1, seen[1].1,
        "then the last one again, not the first"
    );
    assert!(a.metric("tickwire_cluster_repeated_total").await >= 1.0);

    // b had both: the repeat is a duplicate there, delivered to no one.
    b.wait_metric("tickwire_cluster_remote_duplicates_total", duplicates + 1.0)
        .await;
    let got = ticks_until(&mut on_b, "quiet.px", 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(on_b.recv_within(Duration::from_millis(300)).await, None);
}
