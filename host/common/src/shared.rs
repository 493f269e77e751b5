//! The bytes the instances of one plugin keep for each other (the `shared`
//! interface, `wit/host.wit`): what one instance fetched or built, the next
//! one finds — another worker's, one replacing a recycled instance, each
//! request's under `per-request` isolation when granted. Bounded, so a plugin cannot grow
//! the gateway's memory: a write that would pass the bounds is refused and
//! changes nothing.
//!
//! The gateway keeps one [`SharedSpace`] per plugin and loaded config, behind
//! a lock; the SDK's test double uses this same type, so a plugin's unit
//! tests meet the same bounds.

use std::collections::HashMap;
use std::sync::Arc;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// The most one plugin keeps: its keys and values together, each entry
/// counted [`ENTRY_BYTES`] more (4 MiB).
pub const MAX_BYTES: usize = 4 * 1024 * 1024;
/// What an entry is counted beyond its key and value: at least what the
/// map spends on it (its slot, the key's and the value's allocations), so
/// that many small entries cannot hold more memory than the bound says.
pub const ENTRY_BYTES: usize = 128;

/// One plugin's shared bytes.
#[derive(Debug, Default)]
pub struct SharedSpace {
    entries: HashMap<String, Arc<[u8]>>,
    /// What the entries count, in bytes ([`SharedSpace::bytes`]).
    bytes: usize,
}

fn counted(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_BYTES
}

impl SharedSpace {
    /// The value at `key` (shared, so that a lock around the space is held
    /// for no copy).
    pub fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        self.entries.get(key).cloned()
    }

    /// Sets `key` to `value`; false (nothing changed) when the key is over
    /// [`MAX_KEY_BYTES`] or the space would count more than [`MAX_BYTES`].
    pub fn set(&mut self, key: &str, value: Arc<[u8]>) -> bool {
        if key.len() > MAX_KEY_BYTES {
            return false;
        }
        let replaced = self.entries.get(key).map_or(0, |old| counted(key, old));
        let bytes = self.bytes - replaced + counted(key, &value);
        if bytes > MAX_BYTES {
            return false;
        }
        self.entries.insert(key.to_owned(), value);
        self.bytes = bytes;
        true
    }

    /// Removes `key`; whether it was there.
    pub fn delete(&mut self, key: &str) -> bool {
        match self.entries.remove(key) {
            Some(old) => {
                self.bytes -= counted(key, &old);
                true
            }
            None => false,
        }
    }

    /// What the entries count: their keys and values, and [`ENTRY_BYTES`]
    /// each.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::{ENTRY_BYTES, MAX_BYTES, MAX_KEY_BYTES, SharedSpace};

    fn bytes(b: &[u8]) -> std::sync::Arc<[u8]> {
        b.into()
    }

    #[test]
    fn what_is_set_is_got_until_replaced_or_deleted() {
        let mut space = SharedSpace::default();
        assert_eq!(space.get("k"), None);
        assert!(space.set("k", bytes(b"one")));
        assert_eq!(space.get("k").as_deref(), Some(&b"one"[..]));
        assert!(space.set("k", bytes(b"three")));
        assert_eq!(space.get("k").as_deref(), Some(&b"three"[..]));
        assert_eq!(space.bytes(), 1 + 5 + ENTRY_BYTES, "the replaced value no longer counts");
        assert!(space.delete("k"));
        assert!(!space.delete("k"));
        assert_eq!((space.get("k"), space.bytes()), (None, 0));
    }

    #[test]
    fn a_write_past_the_bounds_is_refused_and_changes_nothing() {
        let mut space = SharedSpace::default();
        assert!(!space.set(&"k".repeat(MAX_KEY_BYTES + 1), bytes(b"v")));
        assert!(space.set(&"k".repeat(MAX_KEY_BYTES), bytes(b"v")));
        assert!(space.delete(&"k".repeat(MAX_KEY_BYTES)));

        let half = bytes(&vec![7u8; MAX_BYTES / 2]);
        assert!(space.set("a", half.clone()));
        assert!(!space.set("b", half), "a + b and their keys are over the bound");
        assert_eq!(space.get("b"), None);
        assert_eq!(space.bytes(), 1 + MAX_BYTES / 2 + ENTRY_BYTES);
        // Replacing a value counts the new one instead of the old.
        let most = MAX_BYTES - 1 - ENTRY_BYTES;
        assert!(space.set("a", bytes(&vec![1u8; most])));
        assert!(!space.set("a", bytes(&vec![1u8; most + 1])));
        assert_eq!(space.get("a").map(|v| v.len()), Some(most), "the refused write left the value");
        assert_eq!(space.bytes(), MAX_BYTES);
    }

    #[test]
    fn empty_entries_count_too() {
        let mut space = SharedSpace::default();
        let fit = MAX_BYTES / (ENTRY_BYTES + 3);
        let stored = (0..fit + 10).filter(|i| space.set(&format!("{i:03}"), bytes(b""))).count();
        assert!(stored <= fit, "{stored} empty entries of 3-byte keys, at most {fit}");
    }
}
