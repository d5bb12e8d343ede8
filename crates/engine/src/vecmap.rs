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

    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        match self.find(k) {
            Ok(i) => Some(&mut self.items[i].1),
            Err(_) => None,
        }
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

    /// Gives back the room growth left over; call after a batch of changes.
    pub fn trim(&mut self) {
        self.items.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(m.get_mut(&2).map(|v| *v), Some("TWO"));
        *m.get_or_insert(2, "ignored") = "2";
        assert_eq!(m.remove(&2), Some("2"));
        assert_eq!(m.remove(&2), None);
        assert_eq!(
            m.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
            vec![(1, "one"), (3, "THREE"), (5, "five")]
        );
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
