//! Two tries by topic segment, so that matching under the registry's lock
//! costs what it finds, not what the broker holds:
//!
//! - [`TopicIndex`]: which topics a pattern matches (a subscribe, an
//!   unsubscribe). It was a test of the pattern on every topic: 64 wildcard
//!   patterns in a broker with 100,000 topics held every publish back about
//!   a quarter of a second.
//! - [`PatternIndex`]: which connections' wildcard patterns a new topic
//!   matches. It was a test of every wildcard pattern of every connection.
//!
//! Segments are kept as `Box<str>` keys of a std `HashMap` (SipHash: topic
//! names come from publishers and patterns from clients).

use std::collections::HashMap;

use crate::{ConnId, TopicId};

/// Topics by segment: `crypto.BTC-USD` is the node `BTC-USD` under `crypto`.
#[derive(Debug, Default)]
pub(crate) struct TopicIndex {
    root: TopicNode,
}

#[derive(Debug, Default)]
struct TopicNode {
    /// The topic that ends here, if any.
    id: Option<TopicId>,
    children: HashMap<Box<str>, TopicNode>,
}

impl TopicIndex {
    /// Adds `topic` (valid, no wildcards) as `id`.
    pub fn insert(&mut self, topic: &str, id: TopicId) {
        let mut node = &mut self.root;
        for seg in topic.split('.') {
            node = node.children.entry(seg.into()).or_default();
        }
        node.id = Some(id);
    }

    /// Every topic `pattern` (valid: `*` segments, a last `>`) matches, in
    /// no particular order.
    pub fn matches(&self, pattern: &str, out: &mut Vec<TopicId>) {
        let segs: Vec<&str> = pattern.split('.').collect();
        self.root.matches(&segs, out);
    }
}

impl TopicNode {
    fn matches(&self, segs: &[&str], out: &mut Vec<TopicId>) {
        let Some((seg, rest)) = segs.split_first() else {
            out.extend(self.id);
            return;
        };
        match *seg {
            // One or more segments: every topic below this node.
            ">" => self.children.values().for_each(|c| c.all(out)),
            "*" => self.children.values().for_each(|c| c.matches(rest, out)),
            lit => {
                if let Some(c) = self.children.get(lit) {
                    c.matches(rest, out);
                }
            }
        }
    }

    fn all(&self, out: &mut Vec<TopicId>) {
        out.extend(self.id);
        self.children.values().for_each(|c| c.all(out));
    }
}

/// Wildcard patterns by segment, each with the connections that hold it.
#[derive(Debug, Default)]
pub(crate) struct PatternIndex {
    root: PatternNode,
}

#[derive(Debug, Default)]
struct PatternNode {
    /// Holders of the pattern that ends here.
    here: Vec<ConnId>,
    /// Holders of the pattern that ends here with a further `>`.
    tail: Vec<ConnId>,
    star: Option<Box<PatternNode>>,
    children: HashMap<Box<str>, PatternNode>,
}

impl PatternNode {
    fn is_empty(&self) -> bool {
        self.here.is_empty()
            && self.tail.is_empty()
            && self.star.is_none()
            && self.children.is_empty()
    }
}

impl PatternIndex {
    /// Records that `conn` holds `pattern` (valid).
    pub fn insert(&mut self, pattern: &str, conn: ConnId) {
        let mut node = &mut self.root;
        for seg in pattern.split('.') {
            node = match seg {
                ">" => return node.tail.push(conn),
                "*" => node.star.get_or_insert_with(Box::default),
                lit => node.children.entry(lit.into()).or_default(),
            };
        }
        node.here.push(conn);
    }

    /// Forgets that `conn` holds `pattern` (once; nothing if it did not).
    /// Nodes left empty are dropped, so patterns that come and go do not
    /// leave the trie growing.
    pub fn remove(&mut self, pattern: &str, conn: ConnId) {
        let segs: Vec<&str> = pattern.split('.').collect();
        remove_in(&mut self.root, &segs, conn);
    }

    /// Calls `f` once per (pattern, holder) pair whose pattern matches
    /// `topic` (valid, no wildcards): a connection holding two matching
    /// patterns is named twice.
    pub fn matches(&self, topic: &str, f: &mut impl FnMut(ConnId)) {
        let segs: Vec<&str> = topic.split('.').collect();
        self.root.matches(&segs, f);
    }
}

fn remove_in(node: &mut PatternNode, segs: &[&str], conn: ConnId) {
    let drop_one = |v: &mut Vec<ConnId>| {
        if let Some(i) = v.iter().position(|c| *c == conn) {
            v.remove(i);
        }
    };
    let Some((seg, rest)) = segs.split_first() else {
        return drop_one(&mut node.here);
    };
    match *seg {
        ">" => drop_one(&mut node.tail),
        "*" => {
            if let Some(star) = node.star.as_deref_mut() {
                remove_in(star, rest, conn);
                if star.is_empty() {
                    node.star = None;
                }
            }
        }
        lit => {
            if let Some(child) = node.children.get_mut(lit) {
                remove_in(child, rest, conn);
                if child.is_empty() {
                    node.children.remove(lit);
                }
            }
        }
    }
}

impl PatternNode {
    fn matches(&self, segs: &[&str], f: &mut impl FnMut(ConnId)) {
        let Some((seg, rest)) = segs.split_first() else {
            self.here.iter().copied().for_each(f);
            return;
        };
        // At least one segment is left: `>` here matches it and the rest.
        self.tail.iter().copied().for_each(&mut *f);
        if let Some(c) = self.children.get(*seg) {
            c.matches(rest, f);
        }
        if let Some(star) = &self.star {
            star.matches(rest, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_proto::Pattern;

    /// A small deterministic generator (xorshift), so a failure repeats.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    const SEGS: [&str; 4] = ["a", "b", "c", "dd"];

    fn topic(r: &mut Rng) -> String {
        let n = 1 + r.below(4) as usize;
        (0..n)
            .map(|_| SEGS[r.below(SEGS.len() as u64) as usize])
            .collect::<Vec<_>>()
            .join(".")
    }

    fn pattern(r: &mut Rng) -> String {
        let n = 1 + r.below(4) as usize;
        (0..n)
            .map(|i| match r.below(6) {
                0 => "*",
                1 if i + 1 == n => ">",
                _ => SEGS[r.below(SEGS.len() as u64) as usize],
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    #[test]
    fn a_pattern_finds_exactly_the_topics_it_matches() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let mut index = TopicIndex::default();
        let mut topics: Vec<String> = Vec::new();
        for _ in 0..200 {
            let t = topic(&mut r);
            if !topics.contains(&t) {
                index.insert(&t, TopicId(topics.len() as u32));
                topics.push(t);
            }
        }
        assert!(topics.len() > 50, "the generator makes varied topics");
        let mut nonempty = 0;
        for _ in 0..2000 {
            let p = Pattern::parse(&pattern(&mut r)).expect("generated patterns are valid");
            let mut found = Vec::new();
            index.matches(p.as_str(), &mut found);
            found.sort();
            let want: Vec<TopicId> = topics
                .iter()
                .enumerate()
                .filter(|(_, t)| p.matches(t))
                .map(|(i, _)| TopicId(i as u32))
                .collect();
            assert_eq!(found, want, "pattern {p}");
            nonempty += usize::from(!want.is_empty());
        }
        assert!(nonempty > 500, "most generated patterns match something");
    }

    #[test]
    fn a_topic_finds_exactly_the_held_patterns_that_match_it() {
        let mut r = Rng(0x2545_f491_4f6c_dd1d);
        let mut index = PatternIndex::default();
        // (pattern, holder) pairs held, as the registry would have them.
        let mut held: Vec<(Pattern, ConnId)> = Vec::new();
        for step in 0..4000 {
            if held.len() > 40 && r.below(3) == 0 {
                let (p, c) = held.swap_remove(r.below(held.len() as u64) as usize);
                index.remove(p.as_str(), c);
            } else {
                let p = Pattern::parse(&pattern(&mut r)).expect("generated patterns are valid");
                let c = ConnId(r.below(8));
                if !held.contains(&(p.clone(), c)) {
                    index.insert(p.as_str(), c);
                    held.push((p, c));
                }
            }
            let t = topic(&mut r);
            let mut found = Vec::new();
            index.matches(&t, &mut |c| found.push(c));
            found.sort();
            let mut want: Vec<ConnId> = held
                .iter()
                .filter(|(p, _)| p.matches(&t))
                .map(|(_, c)| *c)
                .collect();
            want.sort();
            assert_eq!(found, want, "topic {t} at step {step}");
        }
        // Everything removed leaves an empty trie behind.
        for (p, c) in held.drain(..) {
            index.remove(p.as_str(), c);
        }
        assert!(index.root.is_empty(), "{:?}", index.root);
    }

    #[test]
    fn removing_a_pattern_not_held_changes_nothing() {
        let mut index = PatternIndex::default();
        index.insert("a.*.>", ConnId(1));
        index.remove("a.*.>", ConnId(2));
        index.remove("a.b.>", ConnId(1));
        index.remove("a.*", ConnId(1));
        let mut found = Vec::new();
        index.matches("a.x.y", &mut |c| found.push(c));
        assert_eq!(found, [ConnId(1)]);
    }
}
