//! Maps keyed by long byte strings (a token, a claims document with a
//! path), for the caches a policy keeps in its own memory.
//!
//! A [`KeyMap`] files each entry under a seeded 64-bit hash of its key and
//! keeps the key beside the value, compared in full on every lookup: two
//! keys that share a hash share a slot (the newer replaces the older) and
//! only cost each other a rebuild, never one's value for the other. Hashing
//! and comparing go eight bytes at a time; on wasm32 std's SipHash and
//! `memcmp` (one byte at a time) were a visible share of a cache hit.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

pub use wasmgate_common::prehashed::{BuildPrehashed, Prehashed};

/// Hashes keys with a seed chosen per instance, so which keys share a slot
/// is not known in advance.
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher {
    seed: u64,
}

impl Default for KeyHasher {
    fn default() -> Self {
        Self { seed: RandomState::new().hash_one(0x5eed_u64) | 1 }
    }
}

impl KeyHasher {
    /// The 64-bit hash of `key`: a multiply and rotate per eight bytes.
    pub fn hash(&self, key: &[u8]) -> u64 {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mix = |h: u64, word: u64| (h ^ word).wrapping_mul(K).rotate_left(29);
        let (words, rest) = key.as_chunks::<8>();
        let mut h = mix(self.seed, key.len() as u64);
        for word in words {
            h = mix(h, u64::from_le_bytes(*word));
        }
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = mix(h, u64::from_le_bytes(last));
        // Spread the high bits down: hash maps index by the low ones.
        (h ^ (h >> 31)).wrapping_mul(K) ^ (h >> 29)
    }
}

/// Whether two keys are equal: 32 bytes a step (the differences of four
/// eight-byte words or-ed together, one branch), then eight at a time.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |w: &[u8; 8]| u64::from_ne_bytes(*w);
    let ((a_blocks, a_tail), (b_blocks, b_tail)) = (a.as_chunks::<32>(), b.as_chunks::<32>());
    for (x, y) in a_blocks.iter().zip(b_blocks) {
        let (x, y) = (x.as_chunks::<8>().0, y.as_chunks::<8>().0);
        if x.iter().zip(y).fold(0, |diff, (p, q)| diff | (word(p) ^ word(q))) != 0 {
            return false;
        }
    }
    let ((a_words, a_rest), (b_words, b_rest)) = (a_tail.as_chunks::<8>(), b_tail.as_chunks::<8>());
    a_words.iter().zip(b_words).all(|(x, y)| word(x) == word(y)) && a_rest == b_rest
}

/// A set of key hashes (what [`KeyHasher::hash`] returns).
pub type HashSet = std::collections::HashSet<u64, BuildPrehashed>;

/// A map from long byte keys to `V`; see the module docs.
#[derive(Debug)]
pub struct KeyMap<V> {
    entries: HashMap<u64, (Box<[u8]>, V), BuildPrehashed>,
    hasher: KeyHasher,
}

impl<V> Default for KeyMap<V> {
    fn default() -> Self {
        Self { entries: HashMap::default(), hasher: KeyHasher::default() }
    }
}

impl<V> KeyMap<V> {
    /// The hash `key` is filed under.
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash(key)
    }

    pub fn get(&self, key: &[u8]) -> Option<&V> {
        self.get_hashed(self.hash(key), key)
    }

    /// [`KeyMap::get`] with the key's [`KeyMap::hash`] already known.
    pub fn get_hashed(&self, hash: u64, key: &[u8]) -> Option<&V> {
        let (held, value) = self.entries.get(&hash)?;
        same(held, key).then_some(value)
    }

    /// Files `value` under `key`, replacing what shared its slot; returns
    /// what was replaced, with its key.
    pub fn insert(&mut self, key: &[u8], value: V) -> Option<(Box<[u8]>, V)> {
        self.entries.insert(self.hash(key), (key.into(), value))
    }

    /// Removes the entry for `key`, if that is the key in its slot.
    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        let hash = self.hash(key);
        match self.entries.get(&hash) {
            Some((held, _)) if same(held, key) => self.entries.remove(&hash).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Keeps the entries for which `keep` answers true.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &V) -> bool) {
        self.entries.retain(|_, (key, value)| keep(key, value));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.entries.values().map(|(k, v)| (&**k, v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_compared_in_full() {
        assert!(same(b"", b""));
        assert!(same(b"abcdefgh-ijk", b"abcdefgh-ijk"));
        assert!(!same(b"abcdefgh-ijk", b"abcdefgh-ijl"), "in the tail");
        assert!(!same(b"abcdefgX-ijk", b"abcdefgh-ijk"), "in a word");
        assert!(!same(b"abc", b"abcd"));
        // Long keys: a difference in any byte of a 32-byte block, of an
        // eight-byte word after the blocks, or of the last few bytes.
        let long: Vec<u8> = (0..=255u8).cycle().take(803).collect();
        assert!(same(&long, &long.clone()));
        for i in 0..long.len() {
            let mut other = long.clone();
            other[i] ^= 0x20;
            assert!(!same(&long, &other), "byte {i}");
        }
    }

    #[test]
    fn the_hash_depends_on_every_byte_and_the_length() {
        let h = KeyHasher { seed: 7 };
        let base = b"0123456789abcdefghij".to_vec();
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(h.hash(&base)));
        for i in 0..base.len() {
            let mut k = base.clone();
            k[i] ^= 1;
            assert!(seen.insert(h.hash(&k)), "byte {i}");
        }
        assert!(seen.insert(h.hash(&base[..19])));
        assert!(seen.insert(h.hash(b"0123456789abcdefghij\0")), "a trailing zero is not the length");
        assert_ne!(KeyHasher { seed: 7 }.hash(b"k"), KeyHasher { seed: 9 }.hash(b"k"), "the seed matters");
    }

    #[test]
    fn a_slot_holds_one_key_and_never_answers_for_another() {
        let mut map = KeyMap { entries: HashMap::default(), hasher: KeyHasher { seed: 3 } };
        map.insert(b"token-a", 1);
        assert_eq!(map.get(b"token-a"), Some(&1));
        assert_eq!(map.get(b"token-b"), None);
        // Force a collision: file `b` under `a`'s hash.
        let hash = map.hash(b"token-a");
        map.entries.insert(hash, (Box::from(&b"token-b"[..]), 2));
        assert_eq!(map.get(b"token-a"), None, "the slot holds b now");
        assert_eq!(map.get_hashed(hash, b"token-b"), Some(&2));
        assert_eq!(map.remove(b"token-a"), None, "a is not what the slot holds");
        assert_eq!(map.len(), 1);
        map.retain(|k, _| k != b"token-b");
        assert!(map.is_empty());
    }
}
