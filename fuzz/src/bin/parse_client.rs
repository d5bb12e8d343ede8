//! Fuzz target: `parse_client` and `parse_publish` on arbitrary bytes (one
//! text frame, one HTTP publish line). Beyond "never panics", it checks what
//! the broker relies on downstream:
//! * a publish's `data` range lies inside the input and is exactly one JSON
//!   object by a strict parser (serde_json), since it is spliced into every
//!   subscriber's frame byte for byte. (This found simd-json accepting
//!   `{"a":6000000000000000000x}`: see docs/security.md.)
//! * every topic and pattern handed back re-parses to itself.

use tickwire_proto::{ClientMsg, Pattern, Topic, parse_client, parse_publish};

fn check_data(input: &[u8], range: std::ops::Range<usize>) {
    assert!(
        range.start <= range.end && range.end <= input.len(),
        "data range out of bounds"
    );
    let data = &input[range];
    assert!(
        data.first() == Some(&b'{') && data.last() == Some(&b'}'),
        "data is not an object: {data:?}"
    );
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(data) {
        panic!(
            "data is not strict JSON ({e}): {:?}",
            String::from_utf8_lossy(data)
        );
    }
}

fn check_topic(t: &Topic) {
    assert_eq!(Topic::parse(t.as_str()).as_ref(), Ok(t));
}

fn check_pattern(p: &Pattern) {
    assert_eq!(Pattern::parse(p.as_str()).as_ref(), Ok(p));
}

fn main() {
    let mut scratch = Vec::new();
    afl::fuzz!(|input: &[u8]| {
        match parse_client(input, &mut scratch) {
            Ok(ClientMsg::Publish { topic, data, .. }) => {
                check_topic(&topic);
                check_data(input, data);
            }
            Ok(ClientMsg::Subscribe(s)) => {
                s.patterns.iter().for_each(check_pattern);
                s.since.iter().for_each(|(t, _)| check_topic(t));
            }
            Ok(ClientMsg::Unsubscribe { patterns, .. }) => patterns.iter().for_each(check_pattern),
            Ok(ClientMsg::Ping { .. } | ClientMsg::Auth { .. }) | Err(_) => {}
        }
        if let Ok((topic, data)) = parse_publish(input, &mut scratch) {
            check_topic(&topic);
            check_data(input, data);
        }
    });
}
