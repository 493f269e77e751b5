//! The bytes the instances of one plugin keep for each other (the `shared`
//! interface, `wit/host.wit`): what one instance fetched or built, the next
//! one finds — another worker's, one replacing a recycled instance, each
//! request's under `per-request` isolation. Bounded, so a plugin cannot grow
//! the gateway's memory: a write that would pass the bounds is refused and
//! changes nothing.
//!
//! The gateway keeps one [`SharedSpace`] per plugin and loaded config, behind
//! a lock; the SDK's test double uses this same type, so a plugin's unit
//! tests meet the same bounds.

use std::collections::HashMap;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// The most one plugin keeps: its keys and values together (4 MiB).
pub const MAX_BYTES: usize = 4 * 1024 * 1024;

/// One plugin's shared bytes.
#[derive(Debug, Default)]
pub struct SharedSpace {
    entries: HashMap<String, Box<[u8]>>,
    /// Keys and values held, in bytes.
    bytes: usize,
}

impl SharedSpace {
    /// A copy of the value at `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.entries.get(key).map(|v| v.to_vec())
    }

    /// Sets `key` to `value`; false (nothing changed) when the key is over
    /// [`MAX_KEY_BYTES`] or the space would hold more than [`MAX_BYTES`].
    pub fn set(&mut self, key: &str, value: &[u8]) -> bool {
        if key.len() > MAX_KEY_BYTES {
            return false;
        }
        let replaced = self.entries.get(key).map_or(0, |old| key.len() + old.len());
        let bytes = self.bytes - replaced + key.len() + value.len();
        if bytes > MAX_BYTES {
            return false;
        }
        self.entries.insert(key.to_owned(), value.into());
        self.bytes = bytes;
        true
    }

    /// Removes `key`; whether it was there.
    pub fn delete(&mut self, key: &str) -> bool {
        match self.entries.remove(key) {
            Some(old) => {
                self.bytes -= key.len() + old.len();
                true
            }
            None => false,
        }
    }

    /// Keys and values held, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_BYTES, MAX_KEY_BYTES, SharedSpace};

    #[test]
    fn what_is_set_is_got_until_replaced_or_deleted() {
        let mut space = SharedSpace::default();
        assert_eq!(space.get("k"), None);
        assert!(space.set("k", b"one"));
        assert_eq!(space.get("k").as_deref(), Some(&b"one"[..]));
        assert!(space.set("k", b"three"));
        assert_eq!(space.get("k").as_deref(), Some(&b"three"[..]));
        assert_eq!(space.bytes(), 1 + 5, "the replaced value no longer counts");
        assert!(space.delete("k"));
        assert!(!space.delete("k"));
        assert_eq!((space.get("k"), space.bytes()), (None, 0));
    }

    #[test]
    fn a_write_past_the_bounds_is_refused_and_changes_nothing() {
        let mut space = SharedSpace::default();
        assert!(!space.set(&"k".repeat(MAX_KEY_BYTES + 1), b"v"));
        assert!(space.set(&"k".repeat(MAX_KEY_BYTES), b"v"));
        assert!(space.delete(&"k".repeat(MAX_KEY_BYTES)));

        let half = vec![7u8; MAX_BYTES / 2];
        assert!(space.set("a", &half));
        assert!(!space.set("b", &half), "a + b and their keys are over the bound");
        assert_eq!(space.get("b"), None);
        assert_eq!(space.bytes(), 1 + MAX_BYTES / 2);
        // Replacing a value counts the new one instead of the old.
        assert!(space.set("a", &vec![1u8; MAX_BYTES - 1]));
        assert!(!space.set("a", &vec![1u8; MAX_BYTES]));
        assert_eq!(space.get("a").map(|v| v.len()), Some(MAX_BYTES - 1), "the refused write left the value");
        assert_eq!(space.bytes(), MAX_BYTES);
    }
}
