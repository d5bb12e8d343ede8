//! Server-to-client frames (PROTOCOL.md "Server to client"), each encoded once
//! into [`Bytes`]. Topics and patterns need no escaping (their alphabet is
//! `A-Z a-z 0-9 _ - : . * >`); free text goes through [`push_json_str`].

use bytes::{BufMut, Bytes, BytesMut};

use crate::client::{ErrorCode, Id};

/// Appends `s` as a JSON string literal, quotes included.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn num(b: &mut BytesMut, n: u64) {
    b.put_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn id_field(b: &mut BytesMut, id: Option<&Id>) {
    if let Some(id) = id {
        b.put_slice(b",\"id\":");
        b.put_slice(id.json().as_bytes());
    }
}

fn value_frame(
    kind: &str,
    topic: &str,
    epoch: Option<&str>,
    seq: u64,
    ts: u64,
    data: &[u8],
) -> Bytes {
    let extra = epoch.map_or(0, |e| e.len() + 12);
    let mut b = BytesMut::with_capacity(48 + kind.len() + topic.len() + extra + data.len());
    b.put_slice(b"{\"type\":\"");
    b.put_slice(kind.as_bytes());
    b.put_slice(b"\",\"topic\":\"");
    b.put_slice(topic.as_bytes());
    if let Some(e) = epoch {
        // Epochs are ours (hex, or a peer node's, checked on receipt): no escaping needed.
        b.put_slice(b"\",\"epoch\":\"");
        b.put_slice(e.as_bytes());
    }
    b.put_slice(b"\",\"seq\":");
    num(&mut b, seq);
    b.put_slice(b",\"ts\":");
    num(&mut b, ts);
    b.put_slice(b",\"data\":");
    b.put_slice(data);
    b.put_u8(b'}');
    b.freeze()
}

/// `{"type":"tick",...}` with `data` spliced in byte for byte.
pub fn tick(topic: &str, seq: u64, ts: u64, data: &[u8]) -> Bytes {
    value_frame("tick", topic, None, seq, ts, data)
}

/// `{"type":"snapshot",...}`: the last value of a topic.
pub fn snapshot(topic: &str, seq: u64, ts: u64, data: &[u8]) -> Bytes {
    value_frame("snapshot", topic, None, seq, ts, data)
}

/// A `tick` that names its topic's epoch (clustered brokers, docs/protocol.md).
pub fn tick_in(topic: &str, epoch: &str, seq: u64, ts: u64, data: &[u8]) -> Bytes {
    value_frame("tick", topic, Some(epoch), seq, ts, data)
}

/// A `snapshot` that names its topic's epoch (clustered brokers).
pub fn snapshot_in(topic: &str, epoch: &str, seq: u64, ts: u64, data: &[u8]) -> Bytes {
    value_frame("snapshot", topic, Some(epoch), seq, ts, data)
}

/// An epoch is safe to splice into a frame: 1 to 64 bytes of `A-Z a-z 0-9 _ -`.
pub fn valid_epoch(e: &str) -> bool {
    !e.is_empty()
        && e.len() <= 64
        && e.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `{"type":"status","topic":..,"state":"stale"|"live","since":..}`.
pub fn status(topic: &str, live: bool, since_ms: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(64 + topic.len());
    b.put_slice(b"{\"type\":\"status\",\"topic\":\"");
    b.put_slice(topic.as_bytes());
    b.put_slice(if live {
        b"\",\"state\":\"live\",\"since\":"
    } else {
        b"\",\"state\":\"stale\",\"since\":"
    });
    num(&mut b, since_ms);
    b.put_u8(b'}');
    b.freeze()
}

/// `{"type":"welcome",...}`, the first frame of a connection.
pub fn welcome(epoch: &str, heartbeat_ms: u64, server_time: u64) -> Bytes {
    let mut s = String::from("{\"type\":\"welcome\",\"epoch\":");
    push_json_str(&mut s, epoch);
    s.push_str(&format!(
        ",\"heartbeat_ms\":{heartbeat_ms},\"server_time\":{server_time}}}"
    ));
    Bytes::from(s)
}

fn topics_reply<'a>(
    kind: &str,
    id: Option<&Id>,
    topics: impl IntoIterator<Item = &'a str>,
    recovered: Option<bool>,
) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_slice(b"{\"type\":\"");
    b.put_slice(kind.as_bytes());
    b.put_u8(b'"');
    id_field(&mut b, id);
    b.put_slice(b",\"topics\":[");
    for (i, t) in topics.into_iter().enumerate() {
        if i > 0 {
            b.put_u8(b',');
        }
        b.put_u8(b'"');
        b.put_slice(t.as_bytes());
        b.put_u8(b'"');
    }
    b.put_u8(b']');
    if let Some(r) = recovered {
        b.put_slice(if r {
            b",\"recovered\":true"
        } else {
            b",\"recovered\":false"
        });
    }
    b.put_u8(b'}');
    b.freeze()
}

/// `{"type":"subscribed",...}`; `recovered` is present when the request asked for recovery.
pub fn subscribed<'a>(
    id: Option<&Id>,
    topics: impl IntoIterator<Item = &'a str>,
    recovered: Option<bool>,
) -> Bytes {
    topics_reply("subscribed", id, topics, recovered)
}

/// `{"type":"unsubscribed",...}`.
pub fn unsubscribed<'a>(id: Option<&Id>, topics: impl IntoIterator<Item = &'a str>) -> Bytes {
    topics_reply("unsubscribed", id, topics, None)
}

/// `{"type":"ack","id":..,"topic":..,"seq":..}`.
pub fn ack(id: &Id, topic: &str, seq: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(48 + topic.len());
    b.put_slice(b"{\"type\":\"ack\"");
    id_field(&mut b, Some(id));
    b.put_slice(b",\"topic\":\"");
    b.put_slice(topic.as_bytes());
    b.put_slice(b"\",\"seq\":");
    num(&mut b, seq);
    b.put_u8(b'}');
    b.freeze()
}

/// `{"type":"pong","id":..,"server_time":..}`.
pub fn pong(id: Option<&Id>, server_time: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(48);
    b.put_slice(b"{\"type\":\"pong\"");
    id_field(&mut b, id);
    b.put_slice(b",\"server_time\":");
    num(&mut b, server_time);
    b.put_u8(b'}');
    b.freeze()
}

/// `{"type":"error","id":..,"code":..,"message":..}`.
pub fn error(id: Option<&Id>, code: ErrorCode, message: &str) -> Bytes {
    let mut s = String::with_capacity(64 + message.len());
    s.push_str("{\"type\":\"error\"");
    if let Some(id) = id {
        s.push_str(",\"id\":");
        s.push_str(id.json());
    }
    s.push_str(",\"code\":\"");
    s.push_str(code.as_str());
    s.push_str("\",\"message\":");
    push_json_str(&mut s, message);
    s.push('}');
    Bytes::from(s)
}

/// `{"type":"authenticated","id":..,"sub":..,"exp":..}`; `exp` is null for a publisher key.
pub fn authenticated(id: Option<&Id>, sub: &str, exp: Option<u64>) -> Bytes {
    let mut s = String::from("{\"type\":\"authenticated\"");
    if let Some(id) = id {
        s.push_str(",\"id\":");
        s.push_str(id.json());
    }
    s.push_str(",\"sub\":");
    push_json_str(&mut s, sub);
    match exp {
        Some(e) => s.push_str(&format!(",\"exp\":{e}}}")),
        None => s.push_str(",\"exp\":null}"),
    }
    Bytes::from(s)
}

/// `{"type":"shutdown","retry_ms":..}`, sent just before a 1001 close.
pub fn shutdown(retry_ms: u64) -> Bytes {
    Bytes::from(format!("{{\"type\":\"shutdown\",\"retry_ms\":{retry_ms}}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(b: Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn frames_match_the_protocol() {
        assert_eq!(
            s(tick(
                "crypto.BTC-USD",
                1042,
                1764131520150,
                br#"{"price":64012.50}"#
            )),
            r#"{"type":"tick","topic":"crypto.BTC-USD","seq":1042,"ts":1764131520150,"data":{"price":64012.50}}"#
        );
        assert_eq!(
            s(status("a.b", false, 5)),
            r#"{"type":"status","topic":"a.b","state":"stale","since":5}"#
        );
        let id = Id::from_json("1");
        assert_eq!(
            s(subscribed(Some(&id), ["a", "b.*"], Some(true))),
            r#"{"type":"subscribed","id":1,"topics":["a","b.*"],"recovered":true}"#
        );
        assert_eq!(
            s(error(None, ErrorCode::InvalidTopic, "bad \"x\"\n")),
            r#"{"type":"error","code":"invalid_topic","message":"bad \"x\"\n"}"#
        );
        assert_eq!(
            s(ack(&Id::from_json("\"q\""), "a", 3)),
            r#"{"type":"ack","id":"q","topic":"a","seq":3}"#
        );
        for b in [
            welcome("e\"", 15000, 1),
            pong(None, 2),
            shutdown(2500),
            authenticated(Some(&id), "me", Some(9)),
            authenticated(None, "key", None),
        ] {
            serde_json_check(&b);
        }
    }

    fn serde_json_check(b: &Bytes) {
        let mut v = b.to_vec();
        assert!(simd_json::to_borrowed_value(&mut v).is_ok(), "{b:?}");
    }
}
