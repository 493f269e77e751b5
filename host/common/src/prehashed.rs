//! A hasher for map keys that are hashes already (`u64`s from a seeded
//! hash): it passes the value through, since hashing it again only costs
//! time. The gateway's per-thread metric cache and the SDK's `keys::KeyMap`
//! both key their maps this way.

use std::hash::{BuildHasherDefault, Hasher};

/// Passes a `u64` key through as its own hash.
#[derive(Debug, Default, Clone, Copy)]
pub struct Prehashed(u64);

/// What a `HashMap<u64, _, _>` of prehashed keys is built with.
pub type BuildPrehashed = BuildHasherDefault<Prehashed>;

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is meant to be used; fold anything else in
        // rather than lose it, so another key type stays correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn a_u64_is_its_own_hash_and_other_keys_still_hash() {
        let build = BuildPrehashed::default();
        assert_eq!(build.hash_one(0xdead_beef_u64), 0xdead_beef);
        assert_ne!(build.hash_one("ab"), build.hash_one("ba"));
    }
}
