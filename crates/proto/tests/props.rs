//! Property tests for the wire protocol's parsers: topics and patterns
//! against a plain reference of PROTOCOL.md's rules, and client messages on
//! arbitrary bytes and on generated JSON. The fuzz targets in `fuzz/` check
//! the same properties with coverage guidance; these run in every `cargo test`.

use proptest::prelude::*;
use serde_json::{Value, json};
use tickwire_proto::{ClientMsg, ErrorCode, Pattern, Topic, parse_client, parse_publish};

/// PROTOCOL.md "Topics", written out as plainly as possible.
fn valid(text: &str, wild: bool) -> bool {
    let segs: Vec<&str> = text.split('.').collect();
    !text.is_empty()
        && text.len() <= 128
        && segs.iter().enumerate().all(|(i, s)| {
            (wild && *s == "*")
                || (wild && *s == ">" && i == segs.len() - 1)
                || (!s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':')))
        })
}

/// `*` is one segment, `>` one or more trailing ones, anything else itself.
fn reference_match(p: &[&str], t: &[&str]) -> bool {
    match (p.first(), t.first()) {
        (None, None) => true,
        (Some(&">"), Some(_)) => true,
        (Some(&"*"), Some(_)) => reference_match(&p[1..], &t[1..]),
        (Some(a), Some(b)) if a == b => reference_match(&p[1..], &t[1..]),
        _ => false,
    }
}

fn segments(s: &str) -> Vec<&str> {
    s.split('.').collect()
}

/// Text made mostly of topic characters, dots and wildcards, so that valid
/// and nearly valid topics are common.
fn topicish() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_:*>. \\-é\u{0}]{0,140}"
}

fn valid_topic() -> impl Strategy<Value = String> {
    prop::collection::vec("[A-Za-z0-9_:\\-]{1,12}", 1..8)
        .prop_map(|s| s.join("."))
        .prop_filter("at most 128 bytes", |s| s.len() <= 128)
}

/// Topics over a tiny alphabet, so that patterns over it match often.
fn small_topic() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..5).prop_map(|s| s.join("."))
}

fn small_pattern() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(vec!["a", "b", "*"]), 0..4),
        any::<bool>(),
    )
        .prop_filter_map("non-empty", |(mut segs, tail)| {
            if tail {
                segs.push(">");
            }
            (!segs.is_empty()).then(|| segs.join("."))
        })
}

/// Any JSON value, with strings that hold JSON's own delimiters.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        "[{}\\[\\]\",:\\\\a-z\u{e9}\u{1f600}\n]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-z\"{}]{0,6}|data", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-z\"{}]{0,6}|data|op|topic", json_value(), 0..6)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// A value that is sometimes right for a field and often wrong.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        json_value(),
        topicish().prop_map(Value::from),
        prop::collection::vec(topicish().prop_map(Value::from), 0..4).prop_map(Value::from),
    ]
}

/// Messages that look like the protocol's, with fields right, wrong or missing.
fn jsonish_message() -> impl Strategy<Value = Value> {
    let op = prop_oneof![
        Just(json!("subscribe")),
        Just(json!("unsubscribe")),
        Just(json!("publish")),
        Just(json!("ping")),
        Just(json!("auth")),
        Just(json!("dance")),
        json_value(),
    ];
    let keys = prop::sample::select(vec![
        "id", "topics", "topic", "data", "token", "snapshot", "max_hz", "since", "epoch", "epochs",
        "extra",
    ]);
    (
        op,
        prop::collection::vec((keys, field_value()), 0..7),
        any::<bool>(),
    )
        .prop_map(|(op, fields, with_op)| {
            let mut m = serde_json::Map::new();
            if with_op {
                m.insert("op".into(), op);
            }
            for (k, v) in fields {
                m.insert(k.into(), v);
            }
            Value::Object(m)
        })
}

proptest! {
    // No failure files: a failing case is printed, and belongs in a unit test.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn topic_and_pattern_parsing_never_panics_and_follows_the_rules(
        s in prop_oneof![any::<String>(), topicish()]
    ) {
        prop_assert_eq!(Topic::parse(&s).is_ok(), valid(&s, false), "topic {:?}", s);
        prop_assert_eq!(Pattern::parse(&s).is_ok(), valid(&s, true), "pattern {:?}", s);
    }

    #[test]
    fn valid_topics_round_trip(s in valid_topic()) {
        let t = Topic::parse(&s).expect("valid topic");
        prop_assert_eq!(t.as_str(), s.as_str());
        prop_assert_eq!(t.to_string(), s.clone());
        let p = Pattern::parse(&s).expect("a topic is a pattern");
        prop_assert!(!p.is_wildcard());
        prop_assert!(p.matches(&s));
        prop_assert_eq!(Pattern::from(t.clone()), p);
    }

    #[test]
    fn matching_agrees_with_the_reference(p in small_pattern(), t in small_topic()) {
        let pat = Pattern::parse(&p).expect("generated pattern is valid");
        prop_assert_eq!(
            pat.matches(&t),
            reference_match(&segments(&p), &segments(&t)),
            "{} vs {}", p, t
        );
    }

    #[test]
    fn covering_implies_matching(
        p in small_pattern(),
        q in small_pattern(),
        topics in prop::collection::vec(small_topic(), 1..24),
    ) {
        let (p, q) = (Pattern::parse(&p).unwrap(), Pattern::parse(&q).unwrap());
        if p.covers(&q) {
            for t in &topics {
                prop_assert!(!q.matches(t) || p.matches(t), "{} covers {} but not {}", p, q, t);
            }
        }
        // A topic (no wildcard) is covered exactly by the patterns matching it.
        for t in &topics {
            let tp = Pattern::parse(t).unwrap();
            prop_assert_eq!(p.covers(&tp), p.matches(t), "{} and topic {}", p, t);
        }
    }

    #[test]
    fn parse_client_never_panics_on_bytes(input in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_client(&input, &mut Vec::new());
        let _ = parse_publish(&input, &mut Vec::new());
    }

    #[test]
    fn parse_client_on_jsonish_messages(msg in jsonish_message()) {
        let text = msg.to_string();
        let mut scratch = Vec::new();
        match parse_client(text.as_bytes(), &mut scratch) {
            Ok(m) => {
                let op = msg["op"].as_str().unwrap_or("");
                match m {
                    ClientMsg::Subscribe(s) => {
                        prop_assert_eq!(op, "subscribe");
                        let given: Vec<&str> =
                            msg["topics"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
                        for p in &s.patterns {
                            prop_assert!(given.contains(&p.as_str()));
                        }
                    }
                    ClientMsg::Unsubscribe { .. } => prop_assert_eq!(op, "unsubscribe"),
                    ClientMsg::Publish { topic, data, .. } => {
                        prop_assert_eq!(op, "publish");
                        prop_assert_eq!(Some(topic.as_str()), msg["topic"].as_str());
                        let d: Value = serde_json::from_slice(&text.as_bytes()[data]).expect("data is JSON");
                        prop_assert_eq!(&d, &msg["data"]);
                    }
                    ClientMsg::Ping { .. } => prop_assert_eq!(op, "ping"),
                    ClientMsg::Auth { token, .. } => {
                        prop_assert_eq!(op, "auth");
                        prop_assert_eq!(Some(token.as_str()), msg["token"].as_str());
                    }
                }
            }
            Err(e) => {
                // An unknown op, a missing or wrong field: never a panic,
                // always a code the protocol lists.
                prop_assert!(ErrorCode::ALL.contains(&e.code));
            }
        }
    }

    #[test]
    fn publish_data_range_is_exactly_the_embedded_object(
        data in json_object(),
        pretty in any::<bool>(),
        before in prop::collection::vec(("x_[a-z]{0,5}", json_value()), 0..3),
        after in prop::collection::vec(("x_[a-z]{0,5}", json_value()), 0..3),
        topic in valid_topic(),
        ws in "[ \t\r\n]{0,3}",
    ) {
        let data_text = if pretty {
            serde_json::to_string_pretty(&data).unwrap()
        } else {
            data.to_string()
        };
        // Build the message by hand, so `data`'s text is embedded exactly as
        // generated, among other members (which may hold objects with their
        // own "data" keys) before and after it.
        let member = |(k, v): &(String, Value)| {
            format!("{}:{}", Value::from(k.as_str()), v)
        };
        let mut members: Vec<String> = vec![
            r#""op":"publish""#.into(),
            format!(r#""topic":{}"#, Value::from(topic.as_str())),
        ];
        members.extend(before.iter().map(member));
        members.push(format!(r#""data"{ws}:{ws}{data_text}"#));
        members.extend(after.iter().map(member));
        let text = format!("{{{ws}{}{ws}}}", members.join(&format!("{ws},{ws}")));

        let ClientMsg::Publish { topic: t, data: range, .. } =
            parse_client(text.as_bytes(), &mut Vec::new()).expect("a valid publish")
        else {
            panic!("not a publish: {text}");
        };
        prop_assert_eq!(t.as_str(), topic.as_str());
        prop_assert_eq!(&text[range], data_text.as_str());
        // The HTTP path finds the same bytes.
        let (_, range) = parse_publish(text.as_bytes(), &mut Vec::new()).expect("valid publish line");
        prop_assert_eq!(&text[range], data_text.as_str());
    }
}

#[test]
fn data_that_only_simd_json_accepts_is_refused() {
    // simd-json accepts these `data` objects (cargo-afl found them, fuzz/);
    // the broker must not pass them on to subscribers.
    for data in [
        r#"{"a":6000000000000000000x}"#,
        r#"{"a":60000000000000000000\"}"#,
        r#"{"a":6210000000000000000000007-5}"#,
        r#"{"a":95111112.51111111109.5}"#,
        r#"{"a":64011111111111111111111111+112E5}"#,
        "{\"a\":false\0}",
    ] {
        let text = format!(r#"{{"op":"publish","topic":"a","data":{data}}}"#);
        let e = parse_client(text.as_bytes(), &mut Vec::new()).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{text}");
        let e = parse_publish(text.as_bytes(), &mut Vec::new()).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{text}");
    }
    let ok = r#"{"op":"publish","topic":"a","data":{"a":60000000000000000000}}"#;
    assert!(parse_client(ok.as_bytes(), &mut Vec::new()).is_ok());
}

#[test]
fn a_duplicated_data_member_is_refused() {
    // simd-json's `get` sees the first `data`, the byte scanner the last:
    // without the check, `[1]` would go out as a tick's data (props found it).
    let many: String = (0..64).map(|i| format!(r#""k{i}":{i},"#)).collect();
    for text in [
        r#"{"op":"publish","topic":"a","data":{},"data":[1]}"#.to_owned(),
        r#"{"op":"publish","topic":"a","data":{},"d\u0061ta":5}"#.to_owned(),
        format!(r#"{{"op":"publish","topic":"a",{many}"data":{{}},"data":[1]}}"#),
        format!(r#"{{"op":"publish","topic":"a","data":{{}},{many}"data":{{"x":1}}}}"#),
    ] {
        let e = parse_client(text.as_bytes(), &mut Vec::new()).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{text}");
        let e = parse_publish(text.as_bytes(), &mut Vec::new()).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest, "{text}");
    }
}
