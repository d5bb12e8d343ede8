//! Maps keyed by ids the broker assigns itself (topic ids, connection ids).
//!
//! `std`'s default hasher, SipHash, resists keys chosen to collide; these
//! keys are never chosen by a client, so that protection buys nothing here,
//! and SipHash costs tens of nanoseconds per lookup on the conflation path
//! (every push of a slow consumer). One multiply by an odd constant instead:
//! distinct ids stay distinct in the low bits the table indexes by, and the
//! high bits it keeps as tags are well mixed. Maps keyed by text a client
//! sent (topic names, patterns) keep SipHash.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// 2^64 / the golden ratio, odd.
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// A `HashMap` for broker-assigned integer ids.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// The hasher of [`IdMap`].
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // The integer keys never come here; any other input still hashes.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(29) ^ n).wrapping_mul(MIX);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    fn hash(n: u64) -> u64 {
        BuildHasherDefault::<IdHasher>::default().hash_one(n)
    }

    #[test]
    fn sequential_ids_spread_over_buckets_and_tags() {
        // 4,096 consecutive ids in a table of 4,096 buckets: every bucket
        // once (the low bits are a bijection), and the 7-bit tags hashbrown
        // keeps from the top bits all used.
        let mut buckets = vec![0u32; 4096];
        let mut tags = [0u32; 128];
        for id in 1_000..1_000 + 4096u64 {
            let h = hash(id);
            buckets[(h & 4095) as usize] += 1;
            tags[(h >> 57) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| n == 1));
        assert!(tags.iter().all(|&n| n > 0), "{tags:?}");
    }

    #[test]
    fn the_map_works_as_a_map() {
        let mut m: IdMap<u32, usize> = IdMap::default();
        for i in 0..10_000u32 {
            m.insert(i * 7, i as usize);
        }
        assert_eq!(m.len(), 10_000);
        assert_eq!(m.get(&(70)), Some(&10));
        assert_eq!(m.remove(&0), Some(0));
        assert!(!m.contains_key(&0));
    }
}
