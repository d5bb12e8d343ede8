//! Recovery by epoch and `since` from the history ring (PROTOCOL.md "Recovery").

use serde_json::json;
use tickwire_testkit::{TestServer, publish_http};

#[tokio::test]
async fn reconnecting_client_gets_missed_ticks_replayed() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    c.subscribe(json!({"op":"subscribe","topics":["crypto.BTC-USD"]}))
        .await;
    for n in 1..=3 {
        publish_http(srv.addr, "crypto.BTC-USD", json!({"n":n})).await;
    }
    let mut last = 0;
    while last < 3 {
        last = c.expect_type("tick").await["seq"].as_u64().unwrap();
    }
    let epoch = srv.engine().epoch().to_owned();
    c.close().await;
    // Missed while away.
    for n in 4..=7 {
        publish_http(srv.addr, "crypto.BTC-USD", json!({"n":n})).await;
    }
    let mut c = tickwire_testkit::Client::connect(&srv.ws_url(), &[])
        .await
        .unwrap();
    let w = c.recv().await;
    assert_eq!(w["epoch"], epoch);
    c.send(json!({"op":"subscribe","id":1,"topics":["crypto.*"],"epoch":epoch,"since":{"crypto.BTC-USD":3}}))
        .await;
    let sub = c.recv().await;
    assert_eq!(sub["type"], "subscribed");
    assert_eq!(sub["recovered"], true);
    for n in 4..=7u64 {
        let t = c.recv().await;
        assert_eq!(t["type"], "tick", "replayed as ticks, no snapshot");
        assert_eq!(t["seq"], n);
        assert_eq!(t["data"]["n"], n);
    }
    publish_http(srv.addr, "crypto.BTC-USD", json!({"n":8})).await;
    assert_eq!(c.recv().await["seq"], 8, "then live");
}

#[tokio::test]
async fn wrong_epoch_is_not_recovered_and_gets_a_snapshot() {
    let srv = TestServer::start().await;
    for n in 1..=5 {
        publish_http(srv.addr, "a.b", json!({"n":n})).await;
    }
    let mut c = srv.client().await;
    c.send(json!({"op":"subscribe","topics":["a.b"],"epoch":"not-this-one","since":{"a.b":2}}))
        .await;
    let sub = c.recv().await;
    assert_eq!(sub["recovered"], false);
    let s = c.recv().await;
    assert_eq!(s["type"], "snapshot");
    assert_eq!(s["seq"], 5);
    assert!(c.barrier("b").await.is_empty());
}

#[tokio::test]
async fn seq_older_than_history_is_not_recovered() {
    let srv = TestServer::start_with(|e, _| e.history_per_topic = 4).await;
    for n in 1..=10 {
        publish_http(srv.addr, "a.b", json!({"n":n})).await;
    }
    let epoch = srv.engine().epoch().to_owned();
    let mut c = srv.client().await;
    // History holds 7..=10: since 6 is just recoverable, since 5 is not.
    c.send(json!({"op":"subscribe","topics":["a.b"],"epoch":epoch,"since":{"a.b":6}}))
        .await;
    assert_eq!(c.recv().await["recovered"], true);
    let seqs: Vec<u64> = c
        .barrier("x")
        .await
        .iter()
        .map(|t| t["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![7, 8, 9, 10]);
    let mut c2 = srv.client().await;
    c2.send(json!({"op":"subscribe","topics":["a.b"],"epoch":epoch,"since":{"a.b":5}}))
        .await;
    assert_eq!(c2.recv().await["recovered"], false);
    let s = c2.recv().await;
    assert_eq!(
        (s["type"].as_str(), s["seq"].as_u64()),
        (Some("snapshot"), Some(10))
    );
}

#[tokio::test]
async fn up_to_date_client_recovers_with_nothing_to_replay() {
    let srv = TestServer::start().await;
    publish_http(srv.addr, "a.b", json!({"n":1})).await;
    let epoch = srv.engine().epoch().to_owned();
    let mut c = srv.client().await;
    c.send(json!({"op":"subscribe","topics":["a.b"],"epoch":epoch,"since":{"a.b":1}}))
        .await;
    assert_eq!(c.recv().await["recovered"], true);
    assert!(c.barrier("b").await.is_empty());
}

/// The frames up to a barrier, as (type, topic, seq).
async fn frames(c: &mut tickwire_testkit::Client) -> Vec<(String, String, u64)> {
    c.barrier("end")
        .await
        .iter()
        .map(|f| {
            (
                f["type"].as_str().unwrap_or("").to_owned(),
                f["topic"].as_str().unwrap_or("").to_owned(),
                f["seq"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_replay_bigger_than_the_soft_limit_is_not_claimed_recovered() {
    // Default limits: 1,000 missed ticks of about 470 bytes, all held in the
    // history (1,024), are about 470 KB to replay: over the 256 KiB soft limit.
    let srv = TestServer::start().await;
    let topic = tickwire_proto::Topic::parse("a.b").unwrap();
    let data = format!(r#"{{"pad":"{}"}}"#, "x".repeat(400));
    for _ in 0..1001 {
        srv.engine().publish(&topic, data.as_bytes()).unwrap();
    }
    let epoch = srv.engine().epoch().to_owned();
    let mut c = srv.client().await;
    // The client saw seq 1 and missed 2..=1001.
    c.send(json!({"op":"subscribe","topics":["a.b"],"epoch":epoch,"since":{"a.b":1}}))
        .await;
    let sub = c.expect_type("subscribed").await;
    let got = frames(&mut c).await;
    let seqs: Vec<u64> = got.iter().map(|f| f.2).collect();
    assert_eq!(seqs.last(), Some(&1001), "ends on the newest");
    if sub["recovered"] == true {
        assert!(
            seqs == (2..=1001).collect::<Vec<u64>>(),
            "recovered:true, yet {} of the 1,000 missed ticks came (first seqs {:?})",
            seqs.len(),
            &seqs[..seqs.len().min(5)]
        );
    }
}

#[tokio::test]
async fn a_topic_born_while_away_is_not_claimed_recovered() {
    let srv = TestServer::start().await;
    let epoch = srv.engine().epoch().to_owned();
    let mut c = srv.client().await;
    c.subscribe(json!({"op":"subscribe","topics":["crypto.*"]}))
        .await;
    publish_http(srv.addr, "crypto.BTC-USD", json!({"n":1})).await;
    assert_eq!(c.expect_type("tick").await["seq"], 1);
    c.close().await;
    // While away: crypto.ETH-USD appears and ticks three times.
    for n in 1..=3 {
        publish_http(srv.addr, "crypto.ETH-USD", json!({"n":n})).await;
    }
    let mut c = srv.client().await;
    c.send(json!({"op":"subscribe","id":1,"topics":["crypto.*"],"epoch":epoch,"since":{"crypto.BTC-USD":1}}))
        .await;
    let sub = c.expect_type("subscribed").await;
    let got = frames(&mut c).await;
    let eth: Vec<&(String, String, u64)> = got.iter().filter(|f| f.1 == "crypto.ETH-USD").collect();
    assert_eq!(
        eth.last().map(|f| f.2),
        Some(3),
        "ends on the newest: {got:?}"
    );
    if sub["recovered"] == true {
        assert!(
            eth.iter().all(|f| f.0 == "tick") && eth.len() == 3,
            "recovered:true, yet the client missed ETH-USD ticks: {got:?}"
        );
    }
}

/// A replay to a subscription with `max_hz` goes through its gate, which
/// keeps only the newest of the ticks it holds: "recovered":true would claim
/// missed ticks the client never gets (PROTOCOL.md: the client "knows whether
/// it saw every tick").
#[tokio::test]
async fn a_replay_thinned_by_max_hz_is_not_claimed_recovered() {
    let srv = TestServer::start().await;
    for n in 1..=6 {
        publish_http(srv.addr, "hz.r", json!({"n":n})).await;
    }
    let epoch = srv.engine().epoch().to_owned();
    let mut c = srv.client().await;
    // The client saw seq 2 and missed 3..=6.
    c.send(json!({"op":"subscribe","topics":["hz.r"],"max_hz":1,"epoch":epoch,"since":{"hz.r":2}}))
        .await;
    let sub = c.expect_type("subscribed").await;
    // Everything up to the newest value (a held one comes within 1/max_hz).
    let mut got = Vec::new();
    while got.last() != Some(&6) {
        let f = c.recv().await;
        assert!(f["type"] == "tick" || f["type"] == "snapshot", "{f}");
        got.push(f["seq"].as_u64().unwrap());
    }
    if sub["recovered"] == true {
        assert_eq!(
            got,
            vec![3, 4, 5, 6],
            "recovered:true, yet not every missed tick came"
        );
    }
}
