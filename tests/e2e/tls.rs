//! TLS: the broker serves `wss://` and `https://` with a certificate from
//! PEM files; a self-signed one is generated per test run (rcgen).

use serde_json::json;
use tickwire_gateway::{TlsConfig, TlsError};
use tickwire_testkit::tls::{client_config, https, wss_url};
use tickwire_testkit::{Client, Closed, KEY, TestServer, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM
/// files the way an operator would pass them to `--tls-cert`/`--tls-key`.
struct TestCert {
    _dir: tempfile::TempDir,
    config: TlsConfig,
    der: Vec<u8>,
}

fn test_cert() -> TestCert {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("generate certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.key_pair.serialize_pem()).expect("write key");
    let config = TlsConfig::from_pem_files(&cert, &key).expect("load PEM files");
    TestCert {
        _dir: dir,
        config,
        der: ck.cert.der().to_vec(),
    }
}

async fn tls_server(cert: &TestCert) -> TestServer {
    let tls = cert.config.clone();
    TestServer::start_with(move |_, g| g.tls = Some(tls)).await
}

/// A `wss://` client that has read its `welcome`.
async fn wss_client(server: &TestServer, cert: &TestCert) -> Client {
    let mut c = Client::connect_tls(&wss_url(server.addr), client_config(&cert.der))
        .await
        .expect("wss connect");
    c.expect_type("welcome").await;
    c
}

#[tokio::test]
async fn wss_client_subscribes_and_receives_every_tick() {
    let cert = test_cert();
    let server = tls_server(&cert).await;
    let mut sub = wss_client(&server, &cert).await;
    sub.subscribe(json!({"op":"subscribe","id":1,"topics":["crypto.*"]}))
        .await;
    let mut publisher = wss_client(&server, &cert).await;
    publisher
        .send(json!({"op":"auth","id":"a","token":KEY}))
        .await;
    publisher.expect_type("authenticated").await;
    // Enough ticks, some large, that the writer batches many frames per
    // write and rustls splits them over several records.
    let big = "x".repeat(3000);
    for i in 1..=300u64 {
        publisher
            .send(json!({"op":"publish","topic":"crypto.BTC-USD","data":{"i":i,"pad":if i % 10 == 0 { big.as_str() } else { "" }}}))
            .await;
    }
    for i in 1..=300u64 {
        let t = sub.expect_type("tick").await;
        assert_eq!(t["seq"], i);
        assert_eq!(t["data"]["i"], i);
    }
    server.stop().await;
}

#[tokio::test]
async fn https_healthz_and_api_work() {
    let cert = test_cert();
    let server = tls_server(&cert).await;
    let cfg = client_config(&cert.der);
    let (status, body) = https(server.addr, cfg.clone(), "GET", "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"{"status":"ok"}"#);
    let (status, _) = https(server.addr, cfg, "GET", "/api/topics").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn plain_client_on_the_tls_port_fails_without_hurting_tls_clients() {
    let cert = test_cert();
    let server = tls_server(&cert).await;
    let mut good = wss_client(&server, &cert).await;
    // A plain WebSocket upgrade on the TLS port: the handshake fails, the
    // broker answers with a TLS alert at most and closes; no 101, no hang.
    let mut plain = TcpStream::connect(server.addr).await.expect("connect");
    plain
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .expect("write");
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, plain.read_to_end(&mut got))
        .await
        .expect("the broker closes a plain client on the TLS port");
    // Either EOF or a reset; never an HTTP answer.
    let _ = read;
    assert!(!got.starts_with(b"HTTP/"), "{got:?}");
    assert_eq!(server.gateway.connection_count(), 1);
    // The TLS client is unaffected.
    good.barrier("still-here").await;
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_dropped_after_the_header_timeout() {
    let cert = test_cert();
    let tls = cert.config.clone();
    let server = TestServer::start_with(move |_, g| {
        g.tls = Some(tls);
        g.header_read_timeout_ms = 200;
    })
    .await;
    // Connect and say nothing: no ClientHello ever comes.
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, idle.read(&mut buf))
        .await
        .expect("the broker gives up on a silent handshake")
        .unwrap_or(0);
    assert_eq!(n, 0, "no bytes, just the close");
    server.stop().await;
}

#[tokio::test]
async fn tls_connections_close_cleanly_on_shutdown_and_on_client_close() {
    let cert = test_cert();
    let server = tls_server(&cert).await;
    // Client-initiated close: the broker echoes the Close over TLS.
    let mut c = wss_client(&server, &cert).await;
    c.inner().close(None).await.expect("send Close");
    let (closed, _) = c.until_closed(WAIT).await;
    assert_eq!(closed, Closed::Code(1000, String::new()));
    // Broker shutdown: `shutdown`, then Close 1001, over TLS.
    let mut c = wss_client(&server, &cert).await;
    server.shutdown.cancel();
    let (closed, seen) = c.until_closed(WAIT).await;
    assert_eq!(closed, Closed::Code(1001, "shutting down".into()));
    assert!(seen.iter().any(|v| v["type"] == "shutdown"), "{seen:?}");
    server.stop().await;
}

#[test]
fn bad_pem_files_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, "not a certificate").expect("write");
    std::fs::write(&key, "not a key").expect("write");
    let e = TlsConfig::from_pem_files(&cert, &key).unwrap_err();
    assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
    assert!(e.to_string().contains("cert.pem"), "{e}");
    let missing = dir.path().join("missing.pem");
    let e = TlsConfig::from_pem_files(&missing, &key).unwrap_err();
    assert!(e.to_string().contains("missing.pem"), "{e}");
    // A real certificate with a key that does not belong to it.
    let a = rcgen::generate_simple_self_signed(vec!["a".into()]).expect("cert");
    let b = rcgen::generate_simple_self_signed(vec!["b".into()]).expect("cert");
    std::fs::write(&cert, a.cert.pem()).expect("write");
    std::fs::write(&key, b.key_pair.serialize_pem()).expect("write");
    let e = TlsConfig::from_pem_files(&cert, &key);
    assert!(e.is_err(), "mismatched key accepted");
}
