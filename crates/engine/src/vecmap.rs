//! A small map kept as a sorted vector: one connection's subscriptions.
//!
//! Every connection holds its patterns and matched topics for its whole
//! life. At the sizes a dashboard subscribes (a handful to a few hundred
//! entries) a `HashMap`'s buckets and control bytes cost two to four times
//! the entries themselves; here lookups are a binary search and the vector
//! is trimmed to its length after each change (docs/performance.md).

#[derive(Debug)]
pub(crate) struct VecMap<K, V> {
    items: Vec<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap { items: Vec::new() }
    }
}

impl<K: Ord, V> VecMap<K, V> {
    fn find(&self, k: &K) -> Result<usize, usize> {
        self.items.binary_search_by(|(q, _)| q.cmp(k))
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn contains_key(&self, k: &K) -> bool {
        self.find(k).is_ok()
    }

    /// Sets `k` to `v`; returns the value it replaced.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        match self.find(&k) {
            Ok(i) => Some(std::mem::replace(&mut self.items[i].1, v)),
            Err(i) => {
                self.items.insert(i, (k, v));
                None
            }
        }
    }

    /// The value of `k`, inserted as `v` first when absent.
    pub fn get_or_insert(&mut self, k: K, v: V) -> &mut V {
        let i = match self.find(&k) {
            Ok(i) => i,
            Err(i) => {
                self.items.insert(i, (k, v));
                i
            }
        };
        &mut self.items[i].1
    }

    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        match self.find(k) {
            Ok(i) => Some(&mut self.items[i].1),
            Err(_) => None,
        }
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        match self.find(k) {
            Ok(i) => Some(self.items.remove(i).1),
            Err(_) => None,
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.items.iter().map(|(k, _)| k)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.items.iter().map(|(k, v)| (k, v))
    }

    /// Keeps the entries `keep` says yes to, in one pass.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.items.retain(|(k, v)| keep(k, v));
    }

    /// Gives back the room growth left over; call after a batch of changes.
    pub fn trim(&mut self) {
        self.items.shrink_to_fit();
    }
}

impl<K: Ord + Copy, V> VecMap<K, V> {
    /// Counts each key in `keys` into its value (a key listed `n` times:
    /// `bump(old, n)`, with `old` None for a key not yet held, which is
    /// inserted): one merge, linear in both sizes, where inserting one by
    /// one could shift the whole vector per key (a wildcard can match every
    /// topic).
    pub fn add_counts(&mut self, mut keys: Vec<K>, bump: impl Fn(Option<V>, u32) -> V) {
        if keys.is_empty() {
            return;
        }
        keys.sort_unstable();
        let old = std::mem::take(&mut self.items);
        let mut merged = Vec::with_capacity(old.len() + keys.len());
        let mut old = old.into_iter().peekable();
        let mut keys = keys.into_iter().peekable();
        while let Some(k) = keys.next() {
            let mut n = 1;
            while keys.next_if_eq(&k).is_some() {
                n += 1;
            }
            while let Some(e) = old.next_if(|(q, _)| *q < k) {
                merged.push(e);
            }
            match old.next_if(|(q, _)| *q == k) {
                Some((q, v)) => merged.push((q, bump(Some(v), n))),
                None => merged.push((k, bump(None, n))),
            }
        }
        merged.extend(old);
        self.items = merged;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(old: Option<u32>, n: u32) -> u32 {
        old.unwrap_or(0) + n
    }

    #[test]
    fn behaves_like_a_map() {
        let mut m = VecMap::default();
        assert_eq!(m.insert(5, "five"), None);
        assert_eq!(m.insert(1, "one"), None);
        assert_eq!(m.insert(3, "three"), None);
        assert_eq!(m.insert(3, "THREE"), Some("three"));
        assert_eq!(m.len(), 3);
        assert!(m.contains_key(&1) && !m.contains_key(&2));
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), vec![1, 3, 5]);
        *m.get_or_insert(2, "two") = "TWO";
        assert_eq!(*m.get_or_insert(2, "unused"), "TWO");
        *m.get_or_insert(2, "ignored") = "x";
        *m.get_mut(&2).expect("held") = "2";
        assert_eq!(m.get_mut(&4), None);
        assert_eq!(m.remove(&2), Some("2"));
        assert_eq!(m.remove(&2), None);
        assert_eq!(
            m.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
            vec![(1, "one"), (3, "THREE"), (5, "five")]
        );
    }

    #[test]
    fn add_counts_merges_and_counts_repeats() {
        let mut m: VecMap<u32, u32> = VecMap::default();
        m.insert(2, 1);
        m.insert(7, 5);
        m.add_counts(vec![9, 2, 1, 9, 5, 9], count);
        assert_eq!(
            m.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
            vec![(1, 1), (2, 2), (5, 1), (7, 5), (9, 3)]
        );
        m.add_counts(Vec::new(), count);
        assert_eq!(m.len(), 5);
        for k in [1, 2, 5, 7, 9] {
            *m.get_mut(&k).expect("key was added") -= 1;
        }
        m.retain(|_, v| *v > 0);
        assert_eq!(
            m.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
            vec![(2, 1), (7, 4), (9, 2)]
        );
    }

    #[test]
    fn add_counts_is_linear_for_a_wildcard_over_many_topics() {
        // Keys that all land in front of the existing ones: one by one this
        // would shift the vector 100,000 times.
        let mut m: VecMap<u32, u32> = VecMap::default();
        m.insert(u32::MAX, 1);
        m.add_counts((0..100_000).rev().collect(), count);
        assert_eq!(m.len(), 100_001);
        assert!(m.keys().zip(m.keys().skip(1)).all(|(a, b)| a < b));
    }

    #[test]
    fn trim_leaves_no_spare_room() {
        let mut m = VecMap::default();
        for k in 0..10u32 {
            m.insert(k, k);
        }
        m.trim();
        assert_eq!(m.items.capacity(), 10);
        assert_eq!(m.len(), 10);
    }
}
