//! HTTP routes: the `/ws` upgrade, the JSON API, `/metrics`, `/healthz` and
//! the dashboard's static files. Errors are JSON: `{"error":code,"message":..}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tickwire_proto::{ErrorCode, Topic, encode::push_json_str, parse_publish};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::Gateway;
use crate::auth::{Principal, Rights};
use crate::deadline::WriteDeadline;
use crate::metrics::ReasonLabel;
use crate::transport::Stream;

pub(crate) type Response = hyper::Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response {
    let mut r = hyper::Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response {
    respond(status, "application/json", body)
}

/// Decodes a query value's `%XX` escapes (and `+`, a space in a form's
/// encoding); `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !s.contains(['%', '+']) {
        return Some(std::borrow::Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
                // Two hex digits: from_str_radix alone would take "+f" too.
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(std::borrow::Cow::Owned)
}

/// Every JSON error answer of the HTTP side: `{"error":code,"message":..}`
/// plus `"line":k` when given, counted in `tickwire_errors_total{code}` as a
/// WebSocket `error` reply is. The only way to build one, so that no answer
/// goes uncounted.
pub(crate) fn error_reply(
    gw: &Gateway,
    status: StatusCode,
    code: &str,
    message: &str,
    line: Option<usize>,
) -> Response {
    gw.metrics.error(code);
    let mut s = String::from("{\"error\":");
    push_json_str(&mut s, code);
    s.push_str(",\"message\":");
    push_json_str(&mut s, message);
    if let Some(l) = line {
        s.push_str(&format!(",\"line\":{l}"));
    }
    s.push('}');
    json(status, s)
}

const INDEX_HTML: &str = include_str!("../static/index.html");
const TICKWIRE_JS: &str = include_str!("../static/tickwire.js");
const DASHBOARD_JS: &str = include_str!("../static/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("../static/dashboard.css");

pub(crate) async fn handle(
    gw: Arc<Gateway>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response, Infallible> {
    let path = req.uri().path().to_owned();
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    let resp = match (path.as_str(), get, req.method() == Method::POST) {
        ("/ws", true, _) => upgrade(gw, peer, req),
        ("/api/publish", _, true) => publish(gw, req).await,
        ("/api/topics", true, _) => topics(&gw),
        ("/api/snapshot", true, _) => snapshot(&gw, &req),
        ("/metrics", true, _) => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            gw.metrics.render(),
        ),
        ("/healthz", true, _) => json(StatusCode::OK, "{\"status\":\"ok\"}"),
        ("/" | "/index.html", true, _) => {
            respond(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML)
        }
        ("/tickwire.js", true, _) => respond(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            TICKWIRE_JS,
        ),
        ("/dashboard.js", true, _) => respond(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            DASHBOARD_JS,
        ),
        ("/dashboard.css", true, _) => {
            respond(StatusCode::OK, "text/css; charset=utf-8", DASHBOARD_CSS)
        }
        (
            "/ws" | "/api/publish" | "/api/topics" | "/api/snapshot" | "/metrics" | "/healthz"
            | "/" | "/index.html" | "/tickwire.js" | "/dashboard.js" | "/dashboard.css",
            _,
            _,
        ) => error_reply(
            &gw,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed here",
            None,
        ),
        _ => error_reply(
            &gw,
            StatusCode::NOT_FOUND,
            "not_found",
            "no such path",
            None,
        ),
    };
    Ok(resp)
}

/// The token of an `Authorization: Bearer` header: `Ok(None)` without the header.
fn bearer(req: &Request<Incoming>) -> Result<Option<&str>, &'static str> {
    let Some(v) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| "Authorization header is not text")?;
    match v.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim()))
        }
        _ => Err("Authorization must be 'Bearer <token>'"),
    }
}

fn reject(gw: &Gateway, reason: &str, status: StatusCode, code: &str, message: &str) -> Response {
    gw.metrics
        .rejected_upgrades
        .get_or_create(&ReasonLabel {
            reason: reason.into(),
        })
        .inc();
    error_reply(gw, status, code, message, None)
}

fn upgrade(gw: Arc<Gateway>, peer: SocketAddr, mut req: Request<Incoming>) -> Response {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return error_reply(
            &gw,
            StatusCode::UPGRADE_REQUIRED,
            "bad_request",
            "expected a WebSocket upgrade",
            None,
        );
    }
    let origin = req.headers().get(header::ORIGIN).map(|o| o.as_bytes());
    if !gw.auth.origin_allowed(origin) {
        return reject(
            &gw,
            "origin",
            StatusCode::FORBIDDEN,
            "forbidden",
            "origin not allowed",
        );
    }
    // Tokens in the URL are never honoured: only the header or the `auth` message.
    let principal = match bearer(&req) {
        Err(m) => {
            return reject(
                &gw,
                "unauthorized",
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                m,
            );
        }
        Ok(None) => None,
        Ok(Some(token)) => match gw.auth.verify(token) {
            Ok(p) => Some(p),
            Err(e) => {
                return reject(
                    &gw,
                    "unauthorized",
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    &e.to_string(),
                );
            }
        },
    };
    if !gw.admit_ip(peer.ip()) {
        return reject(
            &gw,
            "per_ip",
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "too many connections from this address",
        );
    }
    let (resp, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(x) => x,
        Err(e) => {
            gw.release_ip(peer.ip());
            return error_reply(
                &gw,
                StatusCode::BAD_REQUEST,
                "bad_request",
                &e.to_string(),
                None,
            );
        }
    };
    let tracker = gw.tracker.clone();
    tracker.spawn(async move {
        let ws = match fut.await {
            Ok(ws) => ws,
            Err(e) => {
                gw.release_ip(peer.ip());
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        // hyper hands back the stream it served, plain or TLS, with any bytes
        // it read past the upgrade request.
        let upgraded = ws.into_inner().into_inner();
        let (mut stream, pre) = match upgraded.downcast::<TokioIo<WriteDeadline<TcpStream>>>() {
            Ok(p) => (Stream::Tcp(p.io.into_inner().into_inner()), p.read_buf),
            Err(upgraded) => {
                match upgraded.downcast::<TokioIo<WriteDeadline<TlsStream<TcpStream>>>>() {
                    Ok(p) => (
                        Stream::Tls(Box::new(p.io.into_inner().into_inner())),
                        p.read_buf,
                    ),
                    Err(_) => {
                        gw.release_ip(peer.ip());
                        tracing::error!("upgraded stream is neither TCP nor TLS");
                        return;
                    }
                }
            }
        };
        // `pre` is a view into hyper's read buffer (8 KiB): kept, it would keep
        // that buffer alive for the connection's whole life. Moved into this
        // block so that the view is dropped here, not at the end of the task.
        let pre = {
            let view = pre;
            if view.is_empty() {
                Bytes::new()
            } else {
                Bytes::copy_from_slice(&view)
            }
        };
        if !gw.admit_connection() {
            // PROTOCOL.md: over max_connections, close with 1013 (try again later).
            gw.metrics
                .rejected_upgrades
                .get_or_create(&ReasonLabel {
                    reason: "max_connections".into(),
                })
                .inc();
            gw.metrics.close(1013);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                let mut f = Vec::new();
                crate::writer::put_header(&mut f, 0x8, 2 + 11);
                f.extend_from_slice(&1013u16.to_be_bytes());
                f.extend_from_slice(b"over limits");
                stream.write_all(&f).await?;
                stream.shutdown().await
            })
            .await;
            gw.release_ip(peer.ip());
            return;
        }
        crate::connection::start(gw, stream, pre, peer, principal);
    });
    resp.map(|_| Full::new(Bytes::new()))
}

async fn publish(gw: Arc<Gateway>, req: Request<Incoming>) -> Response {
    let unauthorized =
        |m: &str| error_reply(&gw, StatusCode::UNAUTHORIZED, "unauthorized", m, None);
    let principal: Principal = match bearer(&req) {
        Err(m) => return unauthorized(m),
        Ok(None) => {
            return unauthorized("publishing needs 'Authorization: Bearer <publisher key>'");
        }
        Ok(Some(t)) => match gw.auth.verify(t) {
            Ok(p) if p.publish != Rights::None => p,
            Ok(_) => {
                return error_reply(
                    &gw,
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this token may not publish",
                    None,
                );
            }
            Err(e) => return unauthorized(&e.to_string()),
        },
    };
    let ndjson = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let v = v.to_ascii_lowercase();
            v.starts_with("application/x-ndjson") || v.starts_with("application/ndjson")
        })
        .unwrap_or(false);
    // The body, like the headers, within `header_read_timeout_ms`: a
    // publisher that never sends it all would hold its connection for good.
    let limit = std::time::Duration::from_millis(gw.cfg.header_read_timeout_ms);
    let read = Limited::new(req.into_body(), gw.cfg.max_http_body_bytes).collect();
    let Ok(read) = tokio::time::timeout(limit, read).await else {
        let m = format!(
            "the body did not arrive within header_read_timeout_ms ({} ms)",
            gw.cfg.header_read_timeout_ms
        );
        let mut resp = error_reply(&gw, StatusCode::REQUEST_TIMEOUT, "bad_request", &m, None);
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return resp;
    };
    let body = match read {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let m = format!("body over {} bytes", gw.cfg.max_http_body_bytes);
            return error_reply(
                &gw,
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                &m,
                None,
            );
        }
        // A body hyper could not read (bad chunked encoding, a cut stream):
        // the request's fault, not its size.
        Err(e) => {
            let m = format!("cannot read the body: {e}");
            return error_reply(&gw, StatusCode::BAD_REQUEST, "bad_request", &m, None);
        }
    };
    let lines: Vec<(usize, &[u8])> = if ndjson {
        body.split(|b| *b == b'\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
            .filter(|(_, l)| l.iter().any(|b| !b.is_ascii_whitespace()))
            .collect()
    } else {
        vec![(1, &body[..])]
    };
    if lines.is_empty() {
        return error_reply(
            &gw,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "empty body",
            Some(1),
        );
    }
    // Validate every line first: a bad line publishes nothing of the request.
    let mut scratch = Vec::new();
    let mut parsed: Vec<(Topic, &[u8])> = Vec::with_capacity(lines.len());
    for (n, line) in &lines {
        let (topic, range) = match parse_publish(line, &mut scratch) {
            Ok(x) => x,
            Err(e) => {
                return error_reply(
                    &gw,
                    StatusCode::BAD_REQUEST,
                    e.code.as_str(),
                    &e.message,
                    Some(*n),
                );
            }
        };
        let data = &line[range];
        if data.len() > gw.cfg.max_tick_bytes {
            let m = format!(
                "data is {} bytes, over max_tick_bytes {}",
                data.len(),
                gw.cfg.max_tick_bytes
            );
            return error_reply(
                &gw,
                StatusCode::BAD_REQUEST,
                ErrorCode::PayloadTooLarge.as_str(),
                &m,
                Some(*n),
            );
        }
        if !principal.publish.allows_topic(&topic) {
            let m = format!("not allowed to publish to '{topic}'");
            return error_reply(
                &gw,
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden.as_str(),
                &m,
                Some(*n),
            );
        }
        parsed.push((topic, data));
    }
    // The topics the request would create must fit under max_topics, checked
    // before anything is published: a line refused while publishing would
    // leave the lines before it published. This first check names the line;
    // `create_topics` below then creates them all or none under one lock, so
    // topics another publisher creates meanwhile cannot refuse the batch
    // halfway through.
    let room = gw
        .engine
        .config()
        .max_topics
        .saturating_sub(gw.engine.topic_count());
    let mut new = std::collections::HashSet::new();
    for (i, (topic, _)) in parsed.iter().enumerate() {
        if !gw.engine.has_topic(topic) && new.insert(topic.as_str()) && new.len() > room {
            let e = tickwire_engine::PublishError::TooManyTopics(gw.engine.config().max_topics);
            return error_reply(
                &gw,
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest.as_str(),
                &e.to_string(),
                Some(lines[i].0),
            );
        }
    }
    if let Err(e) = gw.engine.create_topics(parsed.iter().map(|(t, _)| t)) {
        return error_reply(
            &gw,
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest.as_str(),
            &e.to_string(),
            None,
        );
    }
    let mut seqs = Vec::with_capacity(parsed.len());
    let published = {
        // Corked (nothing awaits in this block): idle subscribers get the
        // batch's frames by direct writes, many per send.
        let _corked = gw.cfg.direct_writes.then(|| crate::uring::corked(&gw));
        parsed
            .iter()
            .enumerate()
            .try_for_each(|(i, (topic, data))| {
                gw.engine
                    .publish(topic, data)
                    .map(|p| seqs.push(p.seq))
                    .map_err(|e| (i, e))
            })
    };
    if let Err((i, e)) = published {
        return error_reply(
            &gw,
            StatusCode::BAD_REQUEST,
            "bad_request",
            &e.to_string(),
            Some(lines[i].0),
        );
    }
    gw.metrics.http_published.inc_by(seqs.len() as u64);
    let body = serde_json::json!({ "accepted": seqs.len(), "seqs": seqs });
    json(StatusCode::OK, body.to_string())
}

fn topics(gw: &Gateway) -> Response {
    let rows: Vec<serde_json::Value> = gw
        .engine
        .topics()
        .into_iter()
        .map(|t| {
            serde_json::json!({
                "topic": t.topic.as_str(),
                "seq": t.seq,
                "subscribers": t.subscribers,
                "last_ts": t.last_ts,
                "rate_hz": (t.rate_hz * 10.0).round() / 10.0,
                "state": if t.stale { "stale" } else { "live" },
            })
        })
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({ "topics": rows }).to_string(),
    )
}

fn snapshot(gw: &Gateway, req: &Request<Incoming>) -> Response {
    // With auth on, a snapshot is a subscribe's first answer: it needs a
    // token whose subscribe rights cover every topic asked for.
    let principal = if gw.auth.required() {
        let unauthorized =
            |m: &str| error_reply(gw, StatusCode::UNAUTHORIZED, "unauthorized", m, None);
        match bearer(req) {
            Err(m) => return unauthorized(m),
            Ok(None) => return unauthorized("auth is on: give 'Authorization: Bearer <token>'"),
            Ok(Some(t)) => match gw.auth.verify(t) {
                Ok(p) => Some(p),
                Err(e) => return unauthorized(&e.to_string()),
            },
        }
    } else {
        None
    };
    let query = req.uri().query().unwrap_or("");
    let raw = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("topics="))
        .unwrap_or("");
    // A browser's URLSearchParams sends `fx%3AEUR%2Cfx%3AUSD`.
    let Some(list) = percent_decode(raw) else {
        return error_reply(
            gw,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "topics: a broken %-escape, or not UTF-8 once decoded",
            None,
        );
    };
    let mut topics = Vec::new();
    // Each topic once: a short query naming one topic thousands of times
    // would otherwise build thousands of copies of its value.
    let mut seen = std::collections::HashSet::new();
    for t in list.split(',').filter(|t| !t.is_empty() && seen.insert(*t)) {
        match Topic::parse(t) {
            Ok(t) => topics.push(t),
            Err(e) => {
                return error_reply(
                    gw,
                    StatusCode::BAD_REQUEST,
                    "invalid_topic",
                    &e.to_string(),
                    None,
                );
            }
        }
    }
    if topics.is_empty() {
        return error_reply(
            gw,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "give ?topics=a,b",
            None,
        );
    }
    if let Some(p) = &principal
        && let Some(t) = topics.iter().find(|t| !p.subscribe.allows_topic(t))
    {
        return error_reply(
            gw,
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden.as_str(),
            &format!("not allowed to subscribe to '{t}'"),
            None,
        );
    }
    let mut s = String::from("{\"snapshots\":[");
    for (i, snap) in gw.engine.snapshot(&topics).iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"topic\":\"{}\",\"seq\":{},\"ts\":{},\"data\":",
            snap.topic, snap.seq, snap.ts
        ));
        // Byte for byte, as published (validated JSON, so valid UTF-8).
        s.push_str(std::str::from_utf8(&snap.data).unwrap_or("{}"));
        s.push('}');
    }
    s.push_str("]}");
    json(StatusCode::OK, s)
}
