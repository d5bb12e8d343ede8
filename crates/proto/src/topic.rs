//! Topics and subscription patterns (PROTOCOL.md "Topics").

use std::fmt;
use std::sync::Arc;

/// Longest topic or pattern, in bytes.
pub const MAX_TOPIC_BYTES: usize = 128;

/// Why a topic or pattern was refused. The `Display` text is what the
/// client sees in the `invalid_topic` error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is empty")]
    Empty,
    #[error("topic is {0} bytes, over the limit of 128")]
    TooLong(usize),
    #[error("segment {segment} is empty in '{text}'")]
    EmptySegment { segment: usize, text: String },
    #[error("segment {segment} has a forbidden character {ch:?} in '{text}'")]
    BadChar {
        segment: usize,
        ch: char,
        text: String,
    },
    #[error("'>' may only be the last segment in '{0}'")]
    TailNotLast(String),
    #[error("wildcards are not allowed in a topic to publish to: '{0}'")]
    Wildcard(String),
}

fn allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':')
}

/// Checks the segments; `wild` allows `*` segments and a last `>` segment.
fn validate(text: &str, wild: bool) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    if text.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong(text.len()));
    }
    let count = text.split('.').count();
    for (i, seg) in text.split('.').enumerate() {
        let segment = i + 1;
        if seg.is_empty() {
            return Err(TopicError::EmptySegment {
                segment,
                text: text.to_owned(),
            });
        }
        if seg == "*" || seg == ">" {
            if !wild {
                return Err(TopicError::Wildcard(text.to_owned()));
            }
            if seg == ">" && segment != count {
                return Err(TopicError::TailNotLast(text.to_owned()));
            }
            continue;
        }
        if let Some(ch) = seg.chars().find(|c| !c.is_ascii() || !allowed(*c as u8)) {
            return Err(TopicError::BadChar {
                segment,
                ch,
                text: text.to_owned(),
            });
        }
    }
    Ok(())
}

/// A concrete topic such as `crypto.BTC-USD`: valid, no wildcards.
/// Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// # Errors
    /// [`TopicError`] when `text` breaks PROTOCOL.md's topic rules or holds a wildcard.
    pub fn parse(text: &str) -> Result<Topic, TopicError> {
        validate(text, false)?;
        Ok(Topic(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A subscription pattern: a topic, or one with `*` segments and a last `>`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pattern {
    text: Arc<str>,
    wild: bool,
}

impl Pattern {
    /// # Errors
    /// [`TopicError`] when `text` breaks PROTOCOL.md's pattern rules.
    pub fn parse(text: &str) -> Result<Pattern, TopicError> {
        validate(text, true)?;
        let wild = text.split('.').any(|s| s == "*" || s == ">");
        Ok(Pattern {
            text: Arc::from(text),
            wild,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the pattern has a `*` or `>` segment.
    pub fn is_wildcard(&self) -> bool {
        self.wild
    }

    /// Whether `topic` is matched: `*` is exactly one segment, `>` one or more trailing ones.
    pub fn matches(&self, topic: &str) -> bool {
        if !self.wild {
            return &*self.text == topic;
        }
        let mut t = topic.split('.');
        for p in self.text.split('.') {
            match p {
                ">" => return t.next().is_some(),
                "*" => {
                    if t.next().is_none() {
                        return false;
                    }
                }
                lit => {
                    if t.next() != Some(lit) {
                        return false;
                    }
                }
            }
        }
        t.next().is_none()
    }

    /// Whether every topic `other` can match is also matched by `self`
    /// (used for auth rights: `crypto.>` covers `crypto.*` but not `>`).
    pub fn covers(&self, other: &Pattern) -> bool {
        let mut o = other.text.split('.');
        for p in self.text.split('.') {
            match (p, o.next()) {
                (">", Some(_)) => return true,
                (_, None) => return false,
                ("*", Some(seg)) => {
                    if seg == ">" {
                        return false;
                    }
                }
                (lit, Some(seg)) => {
                    if lit != seg {
                        return false;
                    }
                }
            }
        }
        o.next().is_none()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

// Hash the text alone (`wild` follows from it) so that `Borrow<str>` is sound.
impl std::hash::Hash for Pattern {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state)
    }
}

impl std::borrow::Borrow<str> for Pattern {
    fn borrow(&self) -> &str {
        &self.text
    }
}

impl From<Topic> for Pattern {
    fn from(t: Topic) -> Pattern {
        Pattern {
            text: t.0,
            wild: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn topics_follow_the_segment_rules() {
        assert!(Topic::parse("crypto.BTC-USD").is_ok());
        assert!(Topic::parse("binance.btcusdt.trade").is_ok());
        assert!(Topic::parse("a").is_ok());
        assert!(Topic::parse("A-Z_a:z.0-9").is_ok());
        assert_eq!(Topic::parse(""), Err(TopicError::Empty));
        assert!(matches!(
            Topic::parse("crypto..x"),
            Err(TopicError::EmptySegment { segment: 2, .. })
        ));
        assert_eq!(
            Topic::parse("crypto..x").unwrap_err().to_string(),
            "segment 2 is empty in 'crypto..x'"
        );
        assert!(matches!(
            Topic::parse(".a"),
            Err(TopicError::EmptySegment { segment: 1, .. })
        ));
        assert!(matches!(
            Topic::parse("a."),
            Err(TopicError::EmptySegment { segment: 2, .. })
        ));
        for bad in [
            "a b", "a/b", "a$", "é", "a\u{0}", "a+b", "a#", "a,b", "\"", "a\\b",
        ] {
            assert!(
                matches!(Topic::parse(bad), Err(TopicError::BadChar { .. })),
                "{bad:?} should be refused"
            );
        }
        assert!(matches!(
            Topic::parse("crypto.*"),
            Err(TopicError::Wildcard(_))
        ));
        assert!(matches!(Topic::parse(">"), Err(TopicError::Wildcard(_))));
    }

    #[test]
    fn every_allowed_character_is_accepted() {
        let all: String = (b'A'..=b'Z')
            .chain(b'a'..=b'z')
            .chain(b'0'..=b'9')
            .chain([b'_', b'-', b':'])
            .map(char::from)
            .collect();
        assert!(Topic::parse(&all).is_ok());
        for b in 0u8..=127 {
            let s = (b as char).to_string();
            let ok = Topic::parse(&s).is_ok();
            assert_eq!(ok, all.contains(b as char), "char {b}");
        }
    }

    #[test]
    fn length_limit_is_128_bytes() {
        let t128 = "a".repeat(128);
        let t129 = "a".repeat(129);
        assert!(Topic::parse(&t128).is_ok());
        assert_eq!(Topic::parse(&t129), Err(TopicError::TooLong(129)));
        assert!(Pattern::parse(&t128).is_ok());
        assert!(Pattern::parse(&t129).is_err());
    }

    #[test]
    fn tail_wildcard_only_last() {
        assert!(Pattern::parse("crypto.>").is_ok());
        assert!(Pattern::parse(">").is_ok());
        assert!(matches!(
            Pattern::parse("crypto.>.x"),
            Err(TopicError::TailNotLast(_))
        ));
        assert!(Pattern::parse("*.*.>").is_ok());
        assert!(matches!(
            Pattern::parse("cry*"),
            Err(TopicError::BadChar { .. })
        ));
        assert!(matches!(
            Pattern::parse("a>"),
            Err(TopicError::BadChar { .. })
        ));
    }

    #[test]
    fn wildcard_matching_as_in_the_protocol() {
        assert!(p("crypto.*").matches("crypto.BTC-USD"));
        assert!(!p("crypto.*").matches("crypto.BTC-USD.book"));
        assert!(p("crypto.>").matches("crypto.BTC-USD"));
        assert!(p("crypto.>").matches("crypto.BTC-USD.book"));
        assert!(!p("crypto.>").matches("crypto"));
        assert!(!p("crypto.*").matches("crypto"));
        assert!(p(">").matches("a"));
        assert!(p(">").matches("a.b.c"));
        assert!(p("*.x").matches("a.x"));
        assert!(!p("*.x").matches("a.y"));
        assert!(p("a.b").matches("a.b"));
        assert!(!p("a.b").matches("a.bc"));
        assert!(!p("a.*").matches("b.c"));
    }

    #[test]
    fn covering_for_rights() {
        assert!(p("crypto.>").covers(&p("crypto.BTC-USD")));
        assert!(p("crypto.>").covers(&p("crypto.*")));
        assert!(p("crypto.>").covers(&p("crypto.>")));
        assert!(!p("crypto.>").covers(&p(">")));
        assert!(!p("crypto.>").covers(&p("fx.*")));
        assert!(!p("crypto.>").covers(&p("crypto")));
        assert!(p("crypto.*").covers(&p("crypto.BTC")));
        assert!(!p("crypto.*").covers(&p("crypto.>")));
        assert!(!p("crypto.*").covers(&p("crypto.a.b")));
        assert!(p(">").covers(&p("*")));
        assert!(p("*.b").covers(&p("*.b")));
        assert!(!p("a.b").covers(&p("a.*")));
    }
}
