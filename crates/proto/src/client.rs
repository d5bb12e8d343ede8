//! Client-to-server messages (PROTOCOL.md "Client to server").

use std::ops::Range;

use simd_json::prelude::*;
use simd_json::{BorrowedValue, StaticNode};

use crate::scan::{depth_within, member_span, number_end, tokens_strict};
use crate::topic::{Pattern, Topic};

/// A request id as the client sent it, kept as JSON text so it is echoed exactly
/// (a number or a string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id(Box<str>);

impl Id {
    /// The id as JSON text, ready to splice into a reply.
    pub fn json(&self) -> &str {
        &self.0
    }

    /// An id from JSON text the caller vouches for (tests, internal requests).
    pub fn from_json(text: &str) -> Id {
        Id(text.into())
    }
}

/// The error codes of PROTOCOL.md "Error codes".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    InvalidTopic,
    Forbidden,
    PayloadTooLarge,
    TooManySubscriptions,
    RateLimited,
    Unauthorized,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidTopic,
        ErrorCode::Forbidden,
        ErrorCode::PayloadTooLarge,
        ErrorCode::TooManySubscriptions,
        ErrorCode::RateLimited,
        ErrorCode::Unauthorized,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidTopic => "invalid_topic",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unauthorized => "unauthorized",
        }
    }
}

/// A request that could not be accepted: answered with an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub id: Option<Id>,
    pub code: ErrorCode,
    pub message: String,
    /// The request was a control message (subscribe, unsubscribe, ping,
    /// auth) with a bad field: refused, it still counts toward the
    /// control-message rate limit.
    pub control: bool,
}

impl ParseError {
    pub fn new(id: Option<Id>, code: ErrorCode, message: impl Into<String>) -> Self {
        ParseError {
            id,
            code,
            message: message.into(),
            control: false,
        }
    }
}

/// `{"op":"subscribe",...}` with its options.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribe {
    pub id: Option<Id>,
    pub patterns: Vec<Pattern>,
    /// Send the last value of each matching topic (default true).
    pub snapshot: bool,
    /// At most this many updates per second per topic; `None` = every tick.
    pub max_hz: Option<f64>,
    /// Recovery: the last seq seen per topic.
    pub since: Vec<(Topic, u64)>,
    /// Recovery: the epoch those seqs belong to.
    pub epoch: Option<String>,
    /// Recovery on a cluster: per-topic epochs (`"epochs":{"topic":"epoch"}`),
    /// overriding `epoch` for the topics they name.
    pub epochs: Vec<(Topic, String)>,
}

/// One parsed client message.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMsg {
    Subscribe(Subscribe),
    Unsubscribe {
        id: Option<Id>,
        patterns: Vec<Pattern>,
    },
    /// `data` is the byte range of the publisher's JSON object within the input.
    Publish {
        id: Option<Id>,
        topic: Topic,
        data: Range<usize>,
    },
    Ping {
        id: Option<Id>,
    },
    Auth {
        id: Option<Id>,
        token: String,
    },
}

impl ClientMsg {
    /// Whether the message counts toward the control-message rate limit.
    pub fn is_control(&self) -> bool {
        !matches!(self, ClientMsg::Publish { .. })
    }
}

fn bad(id: &Option<Id>, msg: impl Into<String>) -> ParseError {
    ParseError::new(id.clone(), ErrorCode::BadRequest, msg)
}

/// The number text of the `id` member as the client wrote it, if that is
/// what the scanner finds there (not so when `id` appears twice).
fn raw_number_id(input: &[u8]) -> Option<Id> {
    let raw = &input[member_span(input, "id")?];
    // Exactly one JSON number: simd-json also reads some text that is not
    // one (`1.5.5`, `7-5`), which echoed as written made the reply not JSON.
    if number_end(raw, 0) != Some(raw.len()) {
        return None;
    }
    Some(Id(std::str::from_utf8(raw).ok()?.into()))
}

fn id_of(v: &BorrowedValue<'_>, input: &[u8]) -> Result<Option<Id>, ParseError> {
    match v.get("id") {
        None => Ok(None),
        Some(BorrowedValue::String(s)) => {
            let mut out = String::with_capacity(s.len() + 2);
            crate::encode::push_json_str(&mut out, s);
            Ok(Some(Id(out.into())))
        }
        Some(BorrowedValue::Static(StaticNode::I64(n))) => Ok(Some(Id(n.to_string().into()))),
        Some(BorrowedValue::Static(StaticNode::U64(n))) => Ok(Some(Id(n.to_string().into()))),
        // A fraction, an exponent, or an integer past 64 bits: simd-json
        // reads it as an f64, which keeps about 17 digits. The id is echoed
        // as written, so a client that reads numbers exactly finds its own.
        Some(BorrowedValue::Static(StaticNode::F64(n))) if n.is_finite() => Ok(Some(
            raw_number_id(input).unwrap_or_else(|| Id(n.to_string().into())),
        )),
        Some(_) => Err(bad(&None, "field 'id' must be a number or a string")),
    }
}

fn patterns(id: &Option<Id>, v: &BorrowedValue<'_>) -> Result<Vec<Pattern>, ParseError> {
    let arr = match v.get("topics") {
        None => return Err(bad(id, "missing field 'topics'")),
        Some(a) => a
            .as_array()
            .ok_or_else(|| bad(id, "field 'topics' must be an array of strings"))?,
    };
    if arr.is_empty() {
        return Err(bad(id, "field 'topics' must not be empty"));
    }
    let mut out = Vec::with_capacity(arr.len());
    // Duplicates found by hash: comparing each pattern with all before it
    // made one 64 KiB message of 8000 patterns cost ~100x its parse.
    let mut seen = std::collections::HashSet::with_capacity(arr.len());
    for t in arr {
        let s = t
            .as_str()
            .ok_or_else(|| bad(id, "field 'topics' must be an array of strings"))?;
        let p = Pattern::parse(s)
            .map_err(|e| ParseError::new(id.clone(), ErrorCode::InvalidTopic, e.to_string()))?;
        // A pattern's text is the string it was parsed from.
        if seen.insert(s) {
            out.push(p);
        }
    }
    Ok(out)
}

/// An optional object field of topic -> value, such as `since` and `epochs`.
fn topic_map<T>(
    id: &Option<Id>,
    v: &BorrowedValue<'_>,
    field: &str,
    expected: &str,
    value: impl Fn(&BorrowedValue<'_>) -> Option<T>,
) -> Result<Vec<(Topic, T)>, ParseError> {
    let obj = match v.get(field) {
        None | Some(BorrowedValue::Static(StaticNode::Null)) => return Ok(Vec::new()),
        Some(obj) => obj.as_object().ok_or_else(|| {
            bad(
                id,
                format!("field '{field}' must be an object of topic to {expected}"),
            )
        })?,
    };
    obj.iter()
        .map(|(k, x)| {
            let topic = Topic::parse(k)
                .map_err(|e| ParseError::new(id.clone(), ErrorCode::InvalidTopic, e.to_string()))?;
            let x =
                value(x).ok_or_else(|| bad(id, format!("{field}['{k}'] must be {expected}")))?;
            Ok((topic, x))
        })
        .collect()
}

fn subscribe(id: Option<Id>, v: &BorrowedValue<'_>) -> Result<ClientMsg, ParseError> {
    let patterns = patterns(&id, v)?;
    let snapshot = match v.get("snapshot") {
        None => true,
        Some(b) => b
            .as_bool()
            .ok_or_else(|| bad(&id, "field 'snapshot' must be a boolean"))?,
    };
    let max_hz = match v.get("max_hz") {
        None | Some(BorrowedValue::Static(StaticNode::Null)) => None,
        Some(n) => match n.cast_f64() {
            Some(hz) if hz.is_finite() && hz > 0.0 => Some(hz),
            _ => return Err(bad(&id, "field 'max_hz' must be a number above 0")),
        },
    };
    let epoch = match v.get("epoch") {
        None | Some(BorrowedValue::Static(StaticNode::Null)) => None,
        Some(e) => Some(
            e.as_str()
                .ok_or_else(|| bad(&id, "field 'epoch' must be a string"))?
                .to_owned(),
        ),
    };
    let since = topic_map(&id, v, "since", "a whole number", |x| x.as_u64())?;
    let epochs = topic_map(&id, v, "epochs", "a string", |x| {
        x.as_str().map(str::to_owned)
    })?;
    Ok(ClientMsg::Subscribe(Subscribe {
        id,
        patterns,
        snapshot,
        max_hz,
        since,
        epoch,
        epochs,
    }))
}

fn publish_fields(
    id: &Option<Id>,
    v: &BorrowedValue<'_>,
    input: &[u8],
) -> Result<(Topic, Range<usize>), ParseError> {
    let topic = match v.get("topic") {
        None => return Err(bad(id, "missing field 'topic'")),
        Some(t) => t
            .as_str()
            .ok_or_else(|| bad(id, "field 'topic' must be a string"))?,
    };
    let topic = Topic::parse(topic)
        .map_err(|e| ParseError::new(id.clone(), ErrorCode::InvalidTopic, e.to_string()))?;
    match v.get("data") {
        None => return Err(bad(id, "missing field 'data'")),
        Some(d) if !d.is_object() => {
            return Err(bad(id, "field 'data' must be a JSON object"));
        }
        Some(_) => {}
    }
    // simd-json keeps every member of a duplicated key and `get` finds the
    // first, while the scanner below finds the last: with two `data` members
    // the one checked (an object) and the one passed on (`[1]`, `5`) would
    // differ. So `data` must be there once (found by tests/props.rs).
    let count = v
        .as_object()
        .map_or(0, |o| o.iter().filter(|(k, _)| *k == "data").count());
    if count > 1 {
        return Err(bad(id, "field 'data' appears more than once"));
    }
    let data = member_span(input, "data").ok_or_else(|| bad(id, "missing field 'data'"))?;
    // simd-json lets some malformed numbers and literals through; `data`
    // is passed on byte for byte, so it gets a strict look (see scan.rs).
    if !tokens_strict(&input[data.clone()]) {
        return Err(bad(id, "field 'data' is not valid JSON"));
    }
    Ok((topic, data))
}

/// How deep a message's arrays and objects may nest: far more than any
/// message or tick needs, far less than what overflows a thread's stack.
pub const MAX_JSON_DEPTH: usize = 128;

fn check_depth(input: &[u8]) -> Result<(), ParseError> {
    if depth_within(input, MAX_JSON_DEPTH) {
        Ok(())
    } else {
        Err(bad(
            &None,
            format!("JSON nested more than {MAX_JSON_DEPTH} levels deep"),
        ))
    }
}

/// Parses one publish body of `POST /api/publish`: `{"topic":..,"data":{..}}`,
/// with an optional `"op":"publish"`. `data` is a range into `input`.
///
/// # Errors
/// [`ParseError`] with the code to report for this line.
pub fn parse_publish(
    input: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<(Topic, Range<usize>), ParseError> {
    check_depth(input)?;
    scratch.clear();
    scratch.extend_from_slice(input);
    let v =
        simd_json::to_borrowed_value(scratch).map_err(|e| bad(&None, format!("not JSON: {e}")))?;
    if !v.is_object() {
        return Err(bad(&None, "a message must be a JSON object"));
    }
    match v.get("op") {
        None => {}
        Some(op) if op.as_str() == Some("publish") => {}
        Some(_) => return Err(bad(&None, "field 'op' must be \"publish\" here")),
    }
    publish_fields(&None, &v, input)
}

/// Parses one text frame from a client.
///
/// `scratch` is a reusable buffer: simd-json parses in place, so the input is
/// copied there first and `input` itself stays untouched (the publisher's
/// `data` is returned as a range into `input`, never re-serialized).
///
/// # Errors
/// [`ParseError`] with the code and message to send back; the request's `id`
/// is filled in whenever it could be read.
pub fn parse_client(input: &[u8], scratch: &mut Vec<u8>) -> Result<ClientMsg, ParseError> {
    check_depth(input)?;
    scratch.clear();
    scratch.extend_from_slice(input);
    let v =
        simd_json::to_borrowed_value(scratch).map_err(|e| bad(&None, format!("not JSON: {e}")))?;
    if !v.is_object() {
        return Err(bad(&None, "a message must be a JSON object"));
    }
    let control = matches!(
        v.get("op").and_then(|op| op.as_str()),
        Some("subscribe" | "unsubscribe" | "ping" | "auth")
    );
    let id = id_of(&v, input).map_err(|e| ParseError { control, ..e })?;
    let op = match v.get("op") {
        None => return Err(bad(&id, "missing field 'op'")),
        Some(op) => op
            .as_str()
            .ok_or_else(|| bad(&id, "field 'op' must be a string"))?,
    };
    op_msg(op, id, &v, input).map_err(|e| ParseError { control, ..e })
}

/// The message of a known `op` (or the error for an unknown one).
fn op_msg(
    op: &str,
    id: Option<Id>,
    v: &BorrowedValue<'_>,
    input: &[u8],
) -> Result<ClientMsg, ParseError> {
    match op {
        "subscribe" => subscribe(id, v),
        "unsubscribe" => {
            let patterns = patterns(&id, v)?;
            Ok(ClientMsg::Unsubscribe { id, patterns })
        }
        "publish" => {
            let (topic, data) = publish_fields(&id, v, input)?;
            Ok(ClientMsg::Publish { id, topic, data })
        }
        "ping" => Ok(ClientMsg::Ping { id }),
        "auth" => {
            let token = match v.get("token") {
                None => return Err(bad(&id, "missing field 'token'")),
                Some(t) => t
                    .as_str()
                    .ok_or_else(|| bad(&id, "field 'token' must be a string"))?,
            };
            Ok(ClientMsg::Auth {
                id,
                token: token.to_owned(),
            })
        }
        other => {
            let mut shown = String::new();
            crate::encode::push_json_str(&mut shown, &other.chars().take(32).collect::<String>());
            Err(bad(&id, format!("unknown op {shown}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ClientMsg, ParseError> {
        parse_client(s.as_bytes(), &mut Vec::new())
    }

    #[test]
    fn subscribe_with_all_options() {
        let m = parse(
            r#"{"op":"subscribe","id":1,"topics":["crypto.BTC-USD","fx.*"],"snapshot":false,"max_hz":4,"since":{"crypto.BTC-USD":1041},"epoch":"k3v9","extra":[1]}"#,
        )
        .unwrap();
        let ClientMsg::Subscribe(s) = m else { panic!() };
        assert_eq!(s.id.unwrap().json(), "1");
        assert_eq!(s.patterns.len(), 2);
        assert!(!s.snapshot);
        assert_eq!(s.max_hz, Some(4.0));
        assert_eq!(s.since[0].0.as_str(), "crypto.BTC-USD");
        assert_eq!(s.since[0].1, 1041);
        assert_eq!(s.epoch.as_deref(), Some("k3v9"));
    }

    #[test]
    fn publish_keeps_data_bytes() {
        let s = r#"{"op":"publish","id":"a\"b","topic":"crypto.BTC-USD","data":{"price":64012.50000000000001,"bid":1e3}}"#;
        let ClientMsg::Publish { id, topic, data } = parse(s).unwrap() else {
            panic!()
        };
        assert_eq!(id.unwrap().json(), r#""a\"b""#);
        assert_eq!(topic.as_str(), "crypto.BTC-USD");
        assert_eq!(&s[data], r#"{"price":64012.50000000000001,"bid":1e3}"#);
    }

    #[test]
    fn errors_carry_codes_and_ids() {
        let e = parse("not json").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.id.is_none());
        let e = parse("[1,2]").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = parse(r#"{"op":"dance","id":7}"#).unwrap_err();
        assert_eq!((e.code, e.id.unwrap().json()), (ErrorCode::BadRequest, "7"));
        let e = parse(r#"{"op":"subscribe","id":2,"topics":["crypto..x"]}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTopic);
        assert_eq!(e.message, "segment 2 is empty in 'crypto..x'");
        let e = parse(r#"{"op":"subscribe","id":2,"topics":"a"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = parse(r#"{"op":"publish","id":3,"topic":"a.*","data":{}}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTopic);
        let e = parse(r#"{"op":"publish","id":3,"topic":"a","data":[1]}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = parse(r#"{"op":"auth","id":3}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = parse(r#"{"op":"ping","id":{"x":1}}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = parse(r#"{"op":"subscribe","topics":["a"],"max_hz":0}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
    }

    /// simd-json reads some text that is no JSON number as one (the lax
    /// slow paths `tokens_strict` is there for): such an id must not be
    /// echoed as written, which would make the reply itself not JSON.
    #[test]
    fn an_id_simd_json_lets_through_is_never_echoed_as_written() {
        let mut accepted = 0;
        for raw in [
            "95111112.51111111109.5",
            "6210000000000000000000007-5",
            "1.5e5e5",
            "6000000000000000000.1.1",
        ] {
            let Ok(m) = parse(&format!(r#"{{"op":"ping","id":{raw}}}"#)) else {
                continue;
            };
            let ClientMsg::Ping { id: Some(id) } = m else {
                panic!("{raw}: {m:?}")
            };
            let text = id.json();
            assert_eq!(
                crate::scan::number_end(text.as_bytes(), 0),
                Some(text.len()),
                "{raw} echoed as {text}, not a JSON number"
            );
            accepted += 1;
        }
        assert!(accepted > 0, "simd-json refused them all: nothing tested");
    }

    #[test]
    fn number_ids_keep_every_digit() {
        for id in [
            "12345678901234567890123",
            "1.50",
            "-1e3",
            "3.14159265358979323846",
        ] {
            let m = parse(&format!(r#"{{"op":"ping","id": {id} }}"#)).unwrap();
            assert_eq!(
                m,
                ClientMsg::Ping {
                    id: Some(Id::from_json(id))
                }
            );
        }
        // `id` twice: the scanner's (the last) is not what was checked.
        let m = parse(r#"{"op":"ping","id":1.5,"id":"x"}"#).unwrap();
        assert_eq!(
            m,
            ClientMsg::Ping {
                id: Some(Id::from_json("1.5"))
            }
        );
    }

    #[test]
    fn refused_control_messages_say_so() {
        for s in [
            r#"{"op":"subscribe","topics":["a..b"]}"#,
            r#"{"op":"unsubscribe","topics":[]}"#,
            r#"{"op":"ping","id":[1]}"#,
            r#"{"op":"auth"}"#,
        ] {
            assert!(parse(s).unwrap_err().control, "{s}");
        }
        for s in [
            "nope",
            r#"{"op":"publish","topic":"a..b","data":{}}"#,
            r#"{"op":"fly"}"#,
            r#"{"id":1}"#,
        ] {
            assert!(!parse(s).unwrap_err().control, "{s}");
        }
    }

    #[test]
    fn ping_auth_unsubscribe() {
        assert_eq!(
            parse(r#"{"op":"ping"}"#).unwrap(),
            ClientMsg::Ping { id: None }
        );
        assert!(matches!(
            parse(r#"{"op":"auth","token":"t"}"#).unwrap(),
            ClientMsg::Auth { .. }
        ));
        assert!(matches!(
            parse(r#"{"op":"unsubscribe","topics":["fx.*"]}"#).unwrap(),
            ClientMsg::Unsubscribe { .. }
        ));
    }
}
