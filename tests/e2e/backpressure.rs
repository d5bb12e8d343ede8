//! Backpressure and slow consumers (PROTOCOL.md "Backpressure and slow consumers").

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use tickwire_proto::Topic;
use tickwire_testkit::{TestServer, WAIT, small_rcvbuf_client};

/// Resident set size of this process (the broker runs in it), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Waits until `metric` reaches `at_least`, checking `/metrics` every 20 ms,
/// at most `limit`; returns how long it took.
async fn wait_metric(srv: &TestServer, metric: &str, at_least: f64, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut every = tokio::time::interval(Duration::from_millis(20));
    loop {
        every.tick().await;
        if srv.metric(metric).await >= at_least {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{metric} did not reach {at_least} within {limit:?}"
        );
    }
}

fn seq_of(raw: &str) -> u64 {
    raw.split("\"seq\":")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|s| s.parse().ok())
        .expect("seq")
}

fn topic_of(raw: &str) -> String {
    raw.split("\"topic\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("topic")
        .to_owned()
}

/// Publishes `total` ticks of about `size` bytes round-robin over `topics`,
/// paced at `per_ms` ticks per millisecond, directly into the engine.
async fn publish_paced(
    srv: &TestServer,
    topics: &[Topic],
    total: usize,
    size: usize,
    per_ms: usize,
) {
    let pad = "x".repeat(size);
    let mut every = tokio::time::interval(Duration::from_millis(1));
    let mut sent = 0;
    while sent < total {
        every.tick().await;
        for _ in 0..per_ms.min(total - sent) {
            let data = format!(r#"{{"n":{sent},"pad":"{pad}"}}"#);
            srv.engine()
                .publish(&topics[sent % topics.len()], data.as_bytes())
                .unwrap();
            sent += 1;
        }
    }
}

/// Reads every tick until each topic has reached `last`, checking seq per topic.
async fn read_all_contiguous(c: &mut tickwire_testkit::Client, topics: usize, last: u64) {
    let mut seen: HashMap<String, u64> = HashMap::new();
    while seen.len() < topics || seen.values().any(|s| *s < last) {
        let raw = c.recv_text().await;
        if !raw.starts_with(r#"{"type":"tick""#) {
            continue;
        }
        let (t, s) = (topic_of(&raw), seq_of(&raw));
        let prev = seen.insert(t.clone(), s).unwrap_or(0);
        assert_eq!(s, prev + 1, "healthy client: contiguous seq on {t}");
    }
}

/// A client with a 4 KiB receive buffer that never reads and a healthy one,
/// both on `load.>` without snapshots.
async fn stuck_and_healthy(
    srv: &TestServer,
) -> (tickwire_testkit::Client, tickwire_testkit::Client) {
    let mut stuck = small_rcvbuf_client(srv.addr, 4096).await;
    stuck
        .subscribe(json!({"op":"subscribe","topics":["load.>"],"snapshot":false}))
        .await;
    let mut healthy = srv.client().await;
    healthy
        .subscribe(json!({"op":"subscribe","topics":["load.>"],"snapshot":false}))
        .await;
    (stuck, healthy)
}

async fn stuck_client_is_closed(many_topics: bool) {
    let srv = TestServer::start_with(|e, g| {
        e.outbox.soft_limit_bytes = 256 * 1024;
        // The soft path's pending frames (about 360 KiB) plus what the blocked
        // writer had already taken (up to about the soft limit) must stay under
        // the hard limit, or the hard limit closes it first.
        e.outbox.hard_limit_bytes = if many_topics { 512 * 1024 } else { 1024 * 1024 };
        e.outbox.slow_timeout_ms = 2_000;
        e.history_per_topic = 2;
        // Only the outbox limits may close it here, not the write deadline.
        g.write_timeout_ms = 60_000;
        g.socket_send_buffer_bytes = 8 * 1024;
    })
    .await;
    // Ticks of about 400 bytes. Hard path: 2,000 topics pending once each is
    // over 512 KiB even when conflated. Soft path: 900 topics conflated sit
    // above 256 KiB (about 360 KiB), well under its 1 MiB hard limit, so only
    // the soft-limit clock can close it.
    let n_topics = if many_topics { 2000 } else { 900 };
    let topics: Vec<Topic> = (0..n_topics)
        .map(|i| Topic::parse(&format!("load.t{i}")).unwrap())
        .collect();
    let (_stuck, mut healthy) = stuck_and_healthy(&srv).await;
    let per_topic = 2u64;
    let total = n_topics * per_topic as usize;
    let started = Instant::now();
    // The healthy client reads in its own task, as a real client would.
    let reader = tokio::spawn(async move {
        read_all_contiguous(&mut healthy, n_topics, per_topic).await;
        healthy
    });
    let limit = Duration::from_millis(2_000 + 1_000);
    let over_soft_after = if many_topics {
        // Hard path: it crosses the hard limit within the first round of
        // distinct topics, before anything can be conflated.
        publish_paced(&srv, &topics, total, 300, 4).await;
        Duration::ZERO
    } else {
        // Soft path: conflation starts with the first repeated topic after the
        // outbox crossed the soft limit, at most one round (225 ms) after the
        // crossing; the healthy client never conflates (it is checked contiguous).
        let (_, t) = tokio::join!(
            publish_paced(&srv, &topics, total, 300, 4),
            wait_metric(&srv, "tickwire_conflated_frames_total", 1.0, WAIT),
        );
        t
    };
    let reason = if many_topics {
        "hard_limit"
    } else {
        "soft_timeout"
    };
    let metric = format!("tickwire_slow_consumer_closes_total{{reason=\"{reason}\"}}");
    // Within slow_timeout_ms + 1 s of going over the limit. The 20 ms polling
    // adds at most 20 ms.
    let waited = limit.saturating_sub(started.elapsed().saturating_sub(over_soft_after));
    wait_metric(&srv, &metric, 1.0, waited).await;
    let closed_after = started.elapsed().saturating_sub(over_soft_after);
    assert!(
        closed_after <= limit,
        "closed {closed_after:?} after going over the soft limit"
    );
    // Counted once, as 4001, whether a Close frame or a reset ended it.
    wait_metric(&srv, "tickwire_closes_total{code=\"4001\"}", 1.0, WAIT).await;
    assert_eq!(
        srv.metric("tickwire_closes_total{code=\"4001\"}").await,
        1.0
    );
    let mut healthy = tokio::time::timeout(WAIT, reader)
        .await
        .expect("healthy client keeps up")
        .unwrap();
    // The healthy client is still served.
    srv.engine().publish(&topics[0], b"{}").unwrap();
    assert_eq!(healthy.expect_type("tick").await["seq"], per_topic + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_client_is_closed_at_the_hard_limit_and_others_get_every_tick() {
    stuck_client_is_closed(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_client_over_the_soft_limit_too_long_is_closed() {
    stuck_client_is_closed(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_client_costs_the_broker_bounded_memory() {
    let srv = TestServer::start_with(|e, g| {
        e.history_per_topic = 1;
        // Nothing closes it during the test: only conflation bounds it.
        e.outbox.slow_timeout_ms = 600_000;
        g.write_timeout_ms = 600_000;
        g.socket_send_buffer_bytes = 8 * 1024;
    })
    .await;
    let topics: Vec<Topic> = (0..100)
        .map(|i| Topic::parse(&format!("mem.t{i}")).unwrap())
        .collect();
    let mut stuck = small_rcvbuf_client(srv.addr, 4096).await;
    stuck
        .subscribe(json!({"op":"subscribe","topics":["mem.*"],"snapshot":false}))
        .await;
    let rss_before = rss_bytes();
    // 60,000 ticks of 1 KiB: 60 MB published to a client that reads nothing.
    publish_paced(&srv, &topics, 60_000, 1000, 60).await;
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(grown < 16 * 1024 * 1024, "RSS grew by {grown} bytes");
    assert!(srv.metric("tickwire_conflated_frames_total").await > 50_000.0);
    assert_eq!(srv.gateway.connection_count(), 1, "conflated, not dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_client_is_closed_by_the_write_deadline() {
    let srv = TestServer::start_with(|_, g| {
        g.write_timeout_ms = 500;
        g.socket_send_buffer_bytes = 8 * 1024;
    })
    .await;
    let topic = [Topic::parse("w.t").unwrap()];
    let mut stuck = small_rcvbuf_client(srv.addr, 4096).await;
    stuck
        .subscribe(json!({"op":"subscribe","topics":["w.t"]}))
        .await;
    // One topic never exceeds the soft limit once conflated: the write deadline
    // is what closes it (docs/architecture.md). Publish over time, as a feed does.
    let started = Instant::now();
    publish_paced(&srv, &topic, 1000, 2000, 1).await;
    wait_metric(
        &srv,
        "tickwire_slow_consumer_closes_total{reason=\"write_timeout\"}",
        1.0,
        WAIT,
    )
    .await;
    assert!(started.elapsed() < WAIT);
    // The socket is reset (a frame is cut), and the close is counted once.
    wait_metric(&srv, "tickwire_closes_total{code=\"4001\"}", 1.0, WAIT).await;
    assert_eq!(
        srv.metric("tickwire_closes_total{code=\"4001\"}").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_stays_connected_and_ends_on_the_newest_value() {
    let srv = TestServer::start_with(|e, g| {
        e.outbox.soft_limit_bytes = 16 * 1024;
        e.outbox.hard_limit_bytes = 4 * 1024 * 1024;
        e.outbox.slow_timeout_ms = 60_000;
        g.socket_send_buffer_bytes = 8 * 1024;
    })
    .await;
    let topics: Vec<Topic> = (0..5)
        .map(|i| Topic::parse(&format!("slow.t{i}")).unwrap())
        .collect();
    let mut slow = small_rcvbuf_client(srv.addr, 4096).await;
    slow.send(json!({"op":"subscribe","topics":["slow.*"],"snapshot":false}))
        .await;
    slow.expect_type("subscribed").await;
    const PER_TOPIC: u64 = 4000;
    let publisher = async {
        publish_paced(&srv, &topics, 5 * PER_TOPIC as usize, 200, 20).await;
    };
    let reader = async {
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut gaps = 0;
        let mut frames = 0u64;
        while last.len() < 5 || last.values().any(|s| *s < PER_TOPIC) {
            let raw = slow.recv_text().await;
            if !raw.starts_with(r#"{"type":"tick""#) {
                continue;
            }
            frames += 1;
            // A slow reader: a pause every 50 frames.
            if frames % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let (t, s) = (topic_of(&raw), seq_of(&raw));
            let prev = last.insert(t, s).unwrap_or(0);
            assert!(s > prev, "seq increases");
            if s > prev + 1 {
                gaps += 1;
            }
        }
        (gaps, frames)
    };
    let ((), (gaps, frames)) = tokio::join!(publisher, reader);
    assert!(gaps > 0, "conflation skipped some seqs");
    assert!(frames < 5 * PER_TOPIC, "fewer frames than ticks: {frames}");
    assert!(srv.metric("tickwire_conflated_frames_total").await > 0.0);
    assert!(
        slow.barrier("still-here")
            .await
            .iter()
            .all(|f| f["type"] == "tick")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_hz_sends_at_most_that_rate_and_the_final_value_promptly() {
    max_hz_case(false).await;
}

/// The same through a WebSocket publisher, whose reads are corked: a max_hz
/// subscriber is still served by its writer's gate timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_hz_holds_for_a_websocket_publisher() {
    max_hz_case(true).await;
}

/// A tick waiting in a topic's max_hz gate is older than any tick sent
/// after the topic stops being gated (a pattern without max_hz now matches
/// it too): it must not be delivered after them ("always the newest value,
/// never an old one").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_held_by_max_hz_never_follows_a_newer_one() {
    let srv = TestServer::start().await;
    let topic = Topic::parse("hz.old").unwrap();
    let publish = |n: u64| {
        srv.engine()
            .publish(&topic, format!(r#"{{"n":{n}}}"#).as_bytes())
            .unwrap();
    };
    let mut c = srv.client().await;
    c.subscribe(json!({"op":"subscribe","topics":["hz.old"],"max_hz":1,"snapshot":false}))
        .await;
    publish(1);
    publish(2);
    assert_eq!(c.expect_type("tick").await["seq"], 1, "2 waits in the gate");
    c.subscribe(json!({"op":"subscribe","topics":["hz.*"],"snapshot":false}))
        .await;
    publish(3);
    assert_eq!(c.expect_type("tick").await["seq"], 3);
    // The gate's time (1 s) comes and goes: nothing older may follow.
    if let Some(v) = c.recv_within(Duration::from_millis(1500)).await {
        panic!("after seq 3: {v}");
    }
}

async fn max_hz_case(ws_publisher: bool) {
    let srv = TestServer::start().await;
    let topic = Topic::parse("hz.t").unwrap();
    let mut c = srv.client().await;
    c.subscribe(json!({"op":"subscribe","topics":["hz.t"],"max_hz":4}))
        .await;
    let mut ws = if ws_publisher {
        Some(srv.publisher().await)
    } else {
        None
    };
    let mut got: Vec<(Instant, u64)> = Vec::new();
    let publisher = async {
        // 200 ticks/s for 2.5 s.
        let mut every = tokio::time::interval(Duration::from_millis(5));
        for n in 1..=500u64 {
            every.tick().await;
            match ws.as_mut() {
                Some(p) => {
                    p.send(json!({"op":"publish","topic":"hz.t","data":{"n":n}}))
                        .await
                }
                None => {
                    srv.engine()
                        .publish(&topic, format!(r#"{{"n":{n}}}"#).as_bytes())
                        .unwrap();
                }
            }
        }
        Instant::now()
    };
    let reader = async {
        loop {
            let v = c.recv().await;
            if v["type"] == "tick" {
                let seq = v["seq"].as_u64().unwrap();
                got.push((Instant::now(), seq));
                if seq == 500 {
                    break;
                }
            }
        }
    };
    let (stopped, ()) = tokio::join!(publisher, reader);
    let (final_at, final_seq) = *got.last().unwrap();
    assert_eq!(final_seq, 500, "ends on the newest value");
    let lag = final_at.saturating_duration_since(stopped);
    assert!(
        lag <= Duration::from_millis(250 + 50),
        "final value {lag:?} after publishing stopped"
    );
    // At most 5 in any one-second window.
    for (i, (t0, _)) in got.iter().enumerate() {
        let in_window = got[i..]
            .iter()
            .take_while(|(t, _)| t.duration_since(*t0) < Duration::from_secs(1))
            .count();
        assert!(in_window <= 5, "{in_window} frames within a second");
    }
    assert!(got.len() >= 8, "about 4 a second for 2.5 s: {}", got.len());
    assert!(got.windows(2).all(|w| w[1].1 > w[0].1));
}

/// A WebSocket publisher's ticks reach idle subscribers by sends from its own
/// task (the direct path, `tickwire_direct_writes_total`); a stuck subscriber
/// still fills up and is closed at the hard limit, and a healthy one still gets
/// every tick in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_publisher_reaches_healthy_and_stuck_subscribers() {
    let srv = TestServer::start_with(|e, g| {
        e.outbox.soft_limit_bytes = 256 * 1024;
        e.outbox.hard_limit_bytes = 512 * 1024;
        e.history_per_topic = 2;
        g.write_timeout_ms = 60_000;
        g.socket_send_buffer_bytes = 8 * 1024;
    })
    .await;
    let n_topics = 2000;
    let per_topic = 2u64;
    let (_stuck, mut healthy) = stuck_and_healthy(&srv).await;
    let reader = tokio::spawn(async move {
        read_all_contiguous(&mut healthy, n_topics, per_topic).await;
    });
    let mut publisher = srv.publisher().await;
    let pad = "x".repeat(300);
    let mut every = tokio::time::interval(Duration::from_millis(1));
    let total = n_topics * per_topic as usize;
    let mut sent = 0;
    while sent < total {
        every.tick().await;
        for _ in 0..4.min(total - sent) {
            let topic = format!("load.t{}", sent % n_topics);
            publisher
                .send(json!({"op":"publish","topic":topic,"data":{"n":sent,"pad":pad}}))
                .await;
            sent += 1;
        }
    }
    tokio::time::timeout(WAIT, reader)
        .await
        .expect("healthy client gets every tick in time")
        .unwrap();
    wait_metric(
        &srv,
        "tickwire_slow_consumer_closes_total{reason=\"hard_limit\"}",
        1.0,
        WAIT,
    )
    .await;
    assert!(srv.metric("tickwire_direct_writes_total").await > 0.0);
    // Counted once, as 4001, whether a Close frame or a reset ended it.
    wait_metric(&srv, "tickwire_closes_total{code=\"4001\"}", 1.0, WAIT).await;
    assert_eq!(
        srv.metric("tickwire_closes_total{code=\"4001\"}").await,
        1.0
    );
}

/// 40 idle subscribers of one topic, ticks from a WebSocket publisher: each
/// tick reaches every subscriber, in order and intact, whether the direct
/// writes share io_uring submissions (`limits.io_uring`, where the kernel
/// allows it: `tickwire_direct_write_batches_total` counts them) or go out
/// one `send` each.
async fn every_idle_subscriber_gets_every_tick(io_uring: bool) {
    let srv = TestServer::start_with(|_, g| g.io_uring = io_uring).await;
    let mut subs = Vec::new();
    for _ in 0..40 {
        let mut c = srv.client().await;
        c.subscribe(json!({"op":"subscribe","topics":["fx.eurusd"]}))
            .await;
        subs.push(c);
    }
    let mut publisher = srv.publisher().await;
    let ticks = 30u64;
    for n in 1..=ticks {
        publisher
            .send(json!({"op":"publish","id":n,"topic":"fx.eurusd","data":{"bid":n}}))
            .await;
        // One tick per read: the publisher waits for its ack, so each tick
        // is its own fan-out to 40 idle writers.
        publisher.expect_type("ack").await;
    }
    for c in &mut subs {
        let mut last = 0;
        while last < ticks {
            let v = c.expect_type("tick").await;
            let seq = v["seq"].as_u64().expect("seq");
            assert_eq!(seq, last + 1, "in order, none missing: {v}");
            assert_eq!(v["data"]["bid"].as_u64(), Some(seq), "intact: {v}");
            last = seq;
        }
    }
    let direct = srv.metric("tickwire_direct_writes_total").await;
    let batches = srv.metric("tickwire_direct_write_batches_total").await;
    assert!(
        direct >= (40 * ticks) as f64 / 2.0,
        "mostly direct: {direct}"
    );
    if io_uring && tickwire_gateway::io_uring_supported() {
        assert!(
            batches >= 1.0,
            "{batches} batches for {direct} direct writes"
        );
        assert!(
            batches < direct / 4.0,
            "{batches} batches for {direct} direct writes"
        );
    } else {
        assert_eq!(batches, 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_writes_in_io_uring_batches_deliver_every_tick() {
    every_idle_subscriber_gets_every_tick(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_writes_one_send_each_deliver_every_tick() {
    every_idle_subscriber_gets_every_tick(false).await;
}

/// A token that expires while the connection's writer is blocked in a write
/// (a peer that stopped reading) ends the connection as 4002, token expired,
/// at its expiry: not as a slow consumer when the write deadline, far later,
/// runs out. (The frame in flight is cut, so the socket is reset; the close
/// is counted as the 4002 it stands for.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_during_a_stuck_write_closes_as_expired() {
    let srv = TestServer::start_with(|e, g| {
        g.auth.jwt_secret = Some(tickwire_testkit::JWT_SECRET.into());
        // Only the expiry can end it within the test.
        g.write_timeout_ms = 120_000;
        e.outbox.slow_timeout_ms = 120_000;
        g.socket_send_buffer_bytes = 8 * 1024;
    })
    .await;
    let mut stuck = small_rcvbuf_client(srv.addr, 4096).await;
    stuck.expect_type("welcome").await;
    let exp = tickwire_testkit::now_s() + 3;
    let token = tickwire_testkit::jwt(json!({"sub":"stuck","exp":exp,"subscribe":[">"]}));
    stuck.send(json!({"op":"auth","token":token})).await;
    stuck.expect_type("authenticated").await;
    stuck
        .subscribe(json!({"op":"subscribe","topics":["x.t"],"snapshot":false}))
        .await;
    // 2 MB to a client that reads nothing: the writer blocks in a write and
    // stays there (one topic: conflation keeps the outbox small).
    let topic = [Topic::parse("x.t").unwrap()];
    publish_paced(&srv, &topic, 1000, 2000, 4).await;
    assert!(
        tickwire_proto::now_ms() < exp * 1000,
        "published too slowly: the token expired before the write was stuck"
    );
    wait_metric(&srv, "tickwire_closes_total{code=\"4002\"}", 1.0, WAIT).await;
    assert!(tickwire_proto::now_ms() >= exp * 1000, "closed before exp");
    assert_eq!(
        srv.metric("tickwire_closes_total{code=\"4001\"}").await,
        0.0
    );
    assert_eq!(
        srv.metric("tickwire_slow_consumer_closes_total{reason=\"write_timeout\"}")
            .await,
        0.0
    );
}
