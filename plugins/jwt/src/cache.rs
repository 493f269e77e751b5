//! The verified-token cache: what makes RS256 cheap per request. A token
//! seen before and still valid skips parsing and signature verification.
//!
//! Entries are keyed by the token itself (as Envoy's JWT cache is), so one
//! token can never pass for another, and a hit costs a hash and a compare
//! rather than a cryptographic digest: a [`KeyMap`] files the entry under
//! the token's seeded 64-bit hash and compares the token in full on every
//! hit (two tokens sharing a hash share a slot, and only cost each other a
//! verification). Only verified tokens are entered, and
//! the cache lives in this plugin's own linear memory, where the request
//! put the token anyway. An entry lives until the
//! token expires (leeway included) and never longer than `cache_max_age`, so
//! a key the identity provider withdrew stops being trusted in bounded time.
//! The cache is bounded by entry count and by bytes (it lives in the plugin's
//! linear memory); when full it drops expired entries, and if that is not
//! enough, everything — simple, and cheap in the amortised sense.

use std::rc::Rc;

use wasmgate_sdk::keys::KeyMap;

/// A verified token, with everything a request needs from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The claims JSON as the token carried it.
    pub claims: String,
    pub sub: Option<String>,
    /// The forwarded headers' values, in `forward_claims` order (`None`: claim absent).
    pub forwards: Vec<Option<String>>,
    pub verified_at_ms: u64,
    /// Exclusive.
    pub valid_until_ms: u64,
}

impl Verified {
    /// What an entry for a token of `token_len` bytes takes, roughly.
    fn size(&self, token_len: usize) -> usize {
        const OVERHEAD: usize = 128;
        OVERHEAD
            + token_len
            + self.claims.len()
            + self.sub.as_ref().map_or(0, String::len)
            + self.forwards.iter().flatten().map(String::len).sum::<usize>()
    }

    fn valid_at(&self, now_ms: u64) -> bool {
        // A clock that went back before the verification proves nothing.
        (self.verified_at_ms..self.valid_until_ms).contains(&now_ms)
    }
}

/// The cache itself; `capacity` 0 disables it.
#[derive(Debug)]
pub struct Cache {
    /// By the token: what its verification found.
    entries: KeyMap<Rc<Verified>>,
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
}

/// The most the cache's entries may take of the plugin's memory.
pub const MAX_BYTES: usize = 8 << 20;

impl Cache {
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Self { entries: KeyMap::default(), capacity, max_bytes, bytes: 0 }
    }

    /// The entry for `token`, if it is valid at `now_ms`.
    pub fn get(&mut self, token: &[u8], now_ms: u64) -> Option<Rc<Verified>> {
        let entry = self.entries.get(token)?;
        if entry.valid_at(now_ms) {
            return Some(entry.clone());
        }
        self.remove(token);
        None
    }

    pub fn insert(&mut self, token: &[u8], entry: Rc<Verified>, now_ms: u64) {
        let size = entry.size(token.len());
        if self.capacity == 0 || size > self.max_bytes || !entry.valid_at(now_ms) {
            return;
        }
        self.remove(token);
        if self.entries.len() >= self.capacity || self.bytes + size > self.max_bytes {
            self.entries.retain(|_, e| e.valid_at(now_ms));
            self.bytes = self.entries.iter().map(|(t, e)| e.size(t.len())).sum();
        }
        if self.entries.len() >= self.capacity || self.bytes + size > self.max_bytes {
            self.clear();
        }
        self.bytes += size;
        // What shared the token's slot gives it up.
        if let Some((held, old)) = self.entries.insert(token, entry) {
            self.bytes -= old.size(held.len());
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn remove(&mut self, token: &[u8]) {
        if let Some(old) = self.entries.remove(token) {
            self.bytes -= old.size(token.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(claims: &str, at: u64, until: u64) -> Rc<Verified> {
        Rc::new(Verified {
            claims: claims.into(),
            sub: None,
            forwards: vec![],
            verified_at_ms: at,
            valid_until_ms: until,
        })
    }

    #[test]
    fn entries_live_from_verification_until_their_deadline() {
        let mut c = Cache::new(10, MAX_BYTES);
        c.insert(b"a", entry("{}", 100, 200), 100);
        assert!(c.get(b"a", 150).is_some());
        assert!(c.get(b"a", 99).is_none(), "clock went back: not trusted, and dropped");
        c.insert(b"a", entry("{}", 100, 200), 100);
        assert!(c.get(b"a", 199).is_some());
        assert!(c.get(b"a", 200).is_none());
        assert_eq!(c.len(), 0, "expired entries are dropped when seen");
        assert!(c.get(b"b", 150).is_none());
    }

    #[test]
    fn only_the_same_token_hits() {
        // The compare and the shared slots are wasmgate_sdk::keys's (tested
        // there); here, that a near miss is a miss.
        let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";
        let mut c = Cache::new(10, MAX_BYTES);
        c.insert(token.as_bytes(), entry("{}", 0, 500), 0);
        assert!(c.get(token.as_bytes(), 10).is_some());
        let mut other = token.to_owned();
        other.replace_range(40..41, "X");
        for miss in [&token[..token.len() - 1], &other, &format!("{token}x"), ""] {
            assert!(c.get(miss.as_bytes(), 10).is_none(), "{miss:?}");
        }
        assert_eq!(c.len(), 1, "a miss drops nothing");
    }

    #[test]
    fn a_full_cache_drops_expired_entries_then_everything() {
        let mut c = Cache::new(2, MAX_BYTES);
        c.insert(b"a", entry("{}", 0, 50), 0);
        c.insert(b"b", entry("{}", 0, 500), 0);
        c.insert(b"c", entry("{}", 100, 500), 100);
        assert_eq!(c.len(), 2, "the expired `a` made room");
        assert!(c.get(b"b", 100).is_some());
        c.insert(b"d", entry("{}", 100, 500), 100);
        assert_eq!(c.len(), 1, "nothing expired: cleared, then `d` added");
        assert!(c.get(b"d", 100).is_some());
    }

    #[test]
    fn bytes_are_bounded_and_zero_capacity_disables() {
        let big = "x".repeat(300);
        let mut c = Cache::new(100, 1000);
        for name in ["a", "b", "c", "d"] {
            c.insert(name.as_bytes(), entry(&big, 0, 500), 0);
            assert!(c.bytes <= 1000);
        }
        assert!(c.len() < 4);
        let mut off = Cache::new(0, MAX_BYTES);
        off.insert(b"a", entry("{}", 0, 500), 0);
        assert_eq!(off.len(), 0);
    }
}
