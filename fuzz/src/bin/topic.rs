//! Fuzz target: `Topic::parse`, `Pattern::parse`, `Pattern::matches` and
//! `Pattern::covers`. The input is up to three lines: pattern, topic, and a
//! second pattern. Checks:
//! * parsing never panics, and accepts exactly what the PROTOCOL.md rules allow;
//! * `matches` agrees with a plain recursive reference matcher;
//! * `covers` is sound: if `p` covers `q` and `q` matches a topic, so does `p`.

use tickwire_proto::{Pattern, Topic};

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

fn reference_match(p: &[&str], t: &[&str]) -> bool {
    match (p.first(), t.first()) {
        (None, None) => true,
        (Some(&">"), Some(_)) => true,
        (Some(&"*"), Some(_)) => reference_match(&p[1..], &t[1..]),
        (Some(a), Some(b)) if a == b => reference_match(&p[1..], &t[1..]),
        _ => false,
    }
}

fn main() {
    afl::fuzz!(|input: &[u8]| {
        let Ok(text) = std::str::from_utf8(input) else {
            return;
        };
        let mut lines = text.splitn(3, '\n');
        let a = lines.next().unwrap_or("");
        let b = lines.next().unwrap_or("");
        let c = lines.next().unwrap_or("");
        for s in [a, b, c] {
            assert_eq!(Topic::parse(s).is_ok(), valid(s, false), "topic {s:?}");
            assert_eq!(Pattern::parse(s).is_ok(), valid(s, true), "pattern {s:?}");
        }
        let (Ok(p), Ok(t)) = (Pattern::parse(a), Topic::parse(b)) else {
            return;
        };
        let ps: Vec<&str> = p.as_str().split('.').collect();
        let ts: Vec<&str> = t.as_str().split('.').collect();
        let m = p.matches(t.as_str());
        assert_eq!(m, reference_match(&ps, &ts), "{p} vs {t}");
        if let Ok(q) = Pattern::parse(c) {
            if q.matches(t.as_str()) && p.covers(&q) {
                assert!(m, "{p} covers {q}, {q} matches {t}, but {p} does not");
            }
            // A topic read as a pattern is covered by every pattern matching it.
            if !q.is_wildcard() && p.matches(q.as_str()) {
                assert!(p.covers(&q), "{p} matches {q} but does not cover it");
            }
        }
    });
}
