//! The store's documented semantics, value by value, on a hand-moved clock,
//! and its exactness under contention from several threads.

use std::sync::Arc;
use std::thread;

use super::{LimitResult, ManualClock, MemStore, StoreError};

fn store() -> (Arc<ManualClock>, MemStore<Arc<ManualClock>>) {
    store_holding(10_000)
}

/// A store of at most `max_entries` keys on a hand-moved clock at 0.
fn store_holding(max_entries: usize) -> (Arc<ManualClock>, MemStore<Arc<ManualClock>>) {
    let clock = Arc::new(ManualClock::new(0));
    (clock.clone(), MemStore::new(clock, max_entries))
}

fn invalid<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::Invalid(message)) => message,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn limit(allowed: bool, limit: u64, remaining: u64, reset_ms: u64, retry_after_ms: u64) -> LimitResult {
    LimitResult { allowed, limit, remaining, reset_ms, retry_after_ms }
}

// ---- get / set / delete ----

#[test]
fn values_are_set_read_replaced_and_deleted() {
    let (_, store) = store();
    assert_eq!(store.get("k").unwrap(), None);
    store.set("k", b"one", None).unwrap();
    assert_eq!(store.get("k").unwrap(), Some(b"one".to_vec()));
    store.set("k", b"two", None).unwrap();
    assert_eq!(store.get("k").unwrap(), Some(b"two".to_vec()));
    assert_eq!(store.len(), 1);
    assert!(store.delete("k").unwrap());
    assert!(!store.delete("k").unwrap());
    assert_eq!(store.get("k").unwrap(), None);
    assert!(store.is_empty());
}

#[test]
fn values_expire_at_their_ttl_and_set_resets_it() {
    let (clock, store) = store();
    store.set("k", b"v", Some(100)).unwrap();
    clock.advance(99);
    assert_eq!(store.get("k").unwrap(), Some(b"v".to_vec()));
    clock.advance(1);
    assert_eq!(store.get("k").unwrap(), None, "gone at exactly now + ttl");
    assert_eq!(store.len(), 0, "dropped when touched");
    assert!(!store.delete("k").unwrap(), "an expired key is not there to delete");

    store.set("k", b"v", Some(10)).unwrap();
    store.set("k", b"w", None).unwrap();
    clock.advance(1_000);
    assert_eq!(store.get("k").unwrap(), Some(b"w".to_vec()), "set without ttl removes the expiry");
}

#[test]
fn limits_are_enforced_and_named() {
    let (_, store) = store();
    let key = "k".repeat(512);
    store.set(&key, &vec![0; 1024 * 1024], Some(30 * 24 * 3_600_000)).unwrap();
    assert!(invalid(store.get(&"k".repeat(513))).starts_with("key is 513 bytes"));
    assert!(invalid(store.set("k", &vec![0; 1024 * 1024 + 1], None)).starts_with("value is 1048577 bytes"));
    assert!(invalid(store.set("k", b"v", Some(0))).starts_with("ttl_ms is 0"));
    assert!(invalid(store.incr("k", 1, Some(30 * 24 * 3_600_000 + 1))).starts_with("ttl_ms is 2592000001"));
    assert!(invalid(store.take("k", 0, 1.0, 0)).starts_with("capacity is 0"));
    assert!(invalid(store.take("k", (1 << 53) + 1, 1.0, 1)).starts_with("capacity is 9007199254740993"));
    for refill in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(invalid(store.take("k", 1, refill, 1)).starts_with("refill_per_second is"), "{refill}");
    }
    assert!(invalid(store.take("k", 5, 1.0, 6)).starts_with("cost 6 is over capacity 5"));
    assert!(invalid(store.hit("k", 0, 1_000, 0)).starts_with("limit is 0"));
    assert!(invalid(store.hit("k", 5, 0, 1)).starts_with("window_ms is 0"));
    assert!(invalid(store.hit("k", 5, 86_400_001, 1)).starts_with("window_ms is 86400001"));
    assert!(invalid(store.hit("k", 5, 1_000, 6)).starts_with("cost 6 is over limit 5"));
    assert_eq!(store.len(), 1, "refused calls store nothing");
}

// ---- incr ----

#[test]
fn incr_creates_with_ttl_and_keeps_the_first_expiry() {
    let (clock, store) = store();
    assert_eq!(store.incr("c", 5, Some(100)).unwrap(), 5);
    clock.advance(60);
    assert_eq!(store.incr("c", -2, Some(1_000)).unwrap(), 3, "a later ttl is ignored");
    assert_eq!(store.get("c").unwrap(), Some(b"3".to_vec()), "counters read as decimal");
    clock.advance(40);
    assert_eq!(store.get("c").unwrap(), None, "still expires at the first ttl");
    assert_eq!(store.incr("c", 1, None).unwrap(), 1, "recreated at 0 after expiry");
    clock.advance(1_000_000);
    assert_eq!(store.incr("c", 1, Some(5)).unwrap(), 2, "no expiry stays no expiry");
}

#[test]
fn incr_past_the_range_is_invalid_and_changes_nothing() {
    let (_, store) = store();
    assert_eq!(store.incr("up", i64::MAX, None).unwrap(), i64::MAX);
    assert!(matches!(store.incr("up", 1, None), Err(StoreError::Invalid(_))));
    assert_eq!(store.incr("up", 0, None).unwrap(), i64::MAX);
    assert_eq!(store.incr("down", i64::MIN, None).unwrap(), i64::MIN);
    assert!(matches!(store.incr("down", -1, None), Err(StoreError::Invalid(_))));
    assert_eq!(store.incr("down", 1, None).unwrap(), i64::MIN + 1);
}

#[test]
fn incr_accepts_canonical_decimal_values_only() {
    let (_, store) = store();
    store.set("n", b"41", Some(1_000)).unwrap();
    assert_eq!(store.incr("n", 1, None).unwrap(), 42);
    store.set("n", b"-7", None).unwrap();
    assert_eq!(store.incr("n", 7, None).unwrap(), 0);
    store.set("n", b"0", None).unwrap();
    assert_eq!(store.incr("n", 1, None).unwrap(), 1);
    for bad in [&b"abc"[..], b"", b"+1", b"01", b"-0", b" 1", b"1 ", b"1.0", b"9223372036854775808", b"\xff"] {
        store.set("n", bad, None).unwrap();
        assert!(invalid(store.incr("n", 1, None)).contains("not a decimal integer"), "{bad:?}");
        assert_eq!(store.get("n").unwrap(), Some(bad.to_vec()), "a refused incr changes nothing");
    }
}

#[test]
fn kinds_do_not_mix() {
    let (_, store) = store();
    store.take("bucket", 5, 1.0, 1).unwrap();
    store.hit("window", 5, 1_000, 1).unwrap();
    store.incr("counter", 1, None).unwrap();
    assert!(invalid(store.get("bucket")).contains("token bucket"));
    assert!(invalid(store.get("window")).contains("sliding window"));
    assert!(invalid(store.incr("bucket", 1, None)).contains("token bucket"));
    assert!(invalid(store.take("window", 5, 1.0, 1)).contains("sliding window"));
    assert!(invalid(store.hit("bucket", 5, 1_000, 1)).contains("token bucket"));
    assert!(invalid(store.take("counter", 5, 1.0, 1)).contains("a counter"));
    store.set("bucket", b"plain", None).unwrap();
    assert_eq!(store.get("bucket").unwrap(), Some(b"plain".to_vec()), "set replaces any kind");
}

// ---- take: token bucket ----

#[test]
fn take_bursts_to_capacity_then_refuses() {
    let (_, store) = store();
    for taken in 1..=5 {
        assert_eq!(store.take("b", 5, 1.0, 1).unwrap(), limit(true, 5, 5 - taken, taken * 1_000, 0));
    }
    assert_eq!(store.take("b", 5, 1.0, 1).unwrap(), limit(false, 5, 0, 5_000, 1_000));
}

#[test]
fn take_refills_at_exactly_the_rate() {
    let (clock, store) = store();
    for _ in 0..10 {
        assert!(store.take("b", 10, 10.0, 1).unwrap().allowed);
    }
    assert_eq!(store.take("b", 10, 10.0, 1).unwrap(), limit(false, 10, 0, 1_000, 100));
    clock.advance(99);
    // 0.99 tokens: 1 ms short of one, 901 ms short of full (in doubles the
    // deficit is 0.010000000000000009: plain ceil would say 2 ms).
    assert_eq!(store.take("b", 10, 10.0, 1).unwrap(), limit(false, 10, 0, 901, 1));
    clock.advance(1);
    assert_eq!(store.take("b", 10, 10.0, 1).unwrap(), limit(true, 10, 0, 1_000, 0));
    clock.advance(350);
    assert_eq!(store.take("b", 10, 10.0, 1).unwrap(), limit(true, 10, 2, 750, 0));
    clock.advance(60_000);
    assert_eq!(store.take("b", 10, 10.0, 1).unwrap(), limit(true, 10, 9, 100, 0), "refill stops at capacity");
}

#[test]
fn take_retry_after_is_the_first_millisecond_that_succeeds() {
    let (clock, store) = store();
    assert!(store.take("b", 1, 3.0, 1).unwrap().allowed);
    // 1 token at 3/s: 333.33 ms, rounded up.
    let refused = store.take("b", 1, 3.0, 1).unwrap();
    assert_eq!(refused, limit(false, 1, 0, 334, 334));
    clock.advance(333);
    assert!(!store.take("b", 1, 3.0, 1).unwrap().allowed);
    clock.advance(1);
    assert!(store.take("b", 1, 3.0, 1).unwrap().allowed);
}

#[test]
fn take_with_cost_over_one() {
    let (clock, store) = store();
    assert_eq!(store.take("b", 10, 2.0, 4).unwrap(), limit(true, 10, 6, 2_000, 0));
    assert_eq!(store.take("b", 10, 2.0, 4).unwrap(), limit(true, 10, 2, 4_000, 0));
    // 2 tokens, 4 wanted: 2 more at 2/s is one second; nothing is taken.
    assert_eq!(store.take("b", 10, 2.0, 4).unwrap(), limit(false, 10, 2, 4_000, 1_000));
    assert_eq!(store.take("b", 10, 2.0, 2).unwrap(), limit(true, 10, 0, 5_000, 0), "the refusal took nothing");
    clock.advance(2_000);
    assert_eq!(store.take("b", 10, 2.0, 4).unwrap(), limit(true, 10, 0, 5_000, 0));
    assert_eq!(store.take("b", 10, 2.0, 10).unwrap(), limit(false, 10, 0, 5_000, 5_000));
}

#[test]
fn idle_buckets_vanish_when_full_and_free_takes_store_nothing() {
    let (clock, store) = store();
    assert_eq!(store.take("peek", 5, 1.0, 0).unwrap(), limit(true, 5, 5, 0, 0));
    assert_eq!(store.len(), 0, "a cost-0 take on a full bucket writes nothing");
    store.take("b", 5, 1.0, 2).unwrap();
    assert_eq!(store.len(), 1);
    clock.advance(1_999);
    store.sweep();
    assert_eq!(store.len(), 1);
    clock.advance(1);
    store.sweep();
    assert_eq!(store.len(), 0, "expired when full again (reset_ms)");
    assert_eq!(store.take("b", 5, 1.0, 1).unwrap(), limit(true, 5, 4, 1_000, 0), "and absent means full");
}

// ---- hit: sliding window ----

#[test]
fn hit_counts_up_to_the_limit_within_a_window() {
    let (clock, store) = store();
    clock.advance(200);
    for n in 1..=10 {
        // Reset: the 800 ms to the roll, then the whole next window in which this one's hits still weigh.
        assert_eq!(store.hit("w", 10, 1_000, 1).unwrap(), limit(true, 10, 10 - n, 1_800, 0));
    }
    // Nothing decays until the roll: wait for it (800), then 10 * (1000 - s) / 1000 <= 9 at s = 100.
    assert_eq!(store.hit("w", 10, 1_000, 1).unwrap(), limit(false, 10, 0, 1_800, 900));
}

/// The point of a sliding window: spending the whole limit just before a
/// window edge does not buy a second full limit just after it. Fixed windows
/// would grant 20 hits within 11 ms here; this grants the next hit only once
/// the previous window's weight has decayed, at one hit per 100 ms.
#[test]
fn hit_allows_no_double_burst_across_a_window_edge() {
    let (clock, store) = store();
    clock.advance_to(990);
    for _ in 0..10 {
        assert!(store.hit("w", 10, 1_000, 1).unwrap().allowed);
    }
    assert!(!store.hit("w", 10, 1_000, 1).unwrap().allowed);
    let mut granted_at = Vec::new();
    for now in 991..2_000 {
        clock.advance_to(now);
        if store.hit("w", 10, 1_000, 1).unwrap().allowed {
            granted_at.push(now);
        }
    }
    assert_eq!(granted_at, [1_100, 1_200, 1_300, 1_400, 1_500, 1_600, 1_700, 1_800, 1_900]);
}

#[test]
fn hit_results_at_chosen_times() {
    let (clock, store) = store();
    assert_eq!(store.hit("w", 10, 1_000, 4).unwrap(), limit(true, 10, 6, 2_000, 0));
    clock.advance_to(1_250);
    // previous 4 weighted by 750/1000 = 3; + 1 now: 4 used.
    assert_eq!(store.hit("w", 10, 1_000, 1).unwrap(), limit(true, 10, 6, 1_750, 0));
    // 3 + 1 + 7 > 10. At 1500 the weight is 2: 2 + 1 + 7 = 10 fits.
    assert_eq!(store.hit("w", 10, 1_000, 7).unwrap(), limit(false, 10, 6, 1_750, 250));
    clock.advance_to(1_499);
    assert_eq!(store.hit("w", 10, 1_000, 7).unwrap(), limit(false, 10, 6, 1_501, 1));
    clock.advance_to(1_500);
    assert_eq!(store.hit("w", 10, 1_000, 7).unwrap(), limit(true, 10, 0, 1_500, 0));
    // remaining rounds the weighted part up: 4 * 333 / 1000 = 1.332 -> 2, + 8.
    clock.advance_to(1_667);
    assert_eq!(store.hit("w", 10, 1_000, 0).unwrap(), limit(true, 10, 0, 1_333, 0));
    // Only the previous window's 8 hits left (8 * 0.6 = 4.8 -> 5): they stop counting at this window's end.
    clock.advance_to(2_400);
    assert_eq!(store.hit("w", 10, 1_000, 0).unwrap(), limit(true, 10, 5, 600, 0));
    assert_eq!(store.hit("never", 10, 1_000, 0).unwrap(), limit(true, 10, 10, 0, 0), "nothing counted");
}

#[test]
fn hit_retry_after_when_the_current_window_alone_is_full() {
    let (clock, store) = store();
    for _ in 0..10 {
        store.hit("w", 10, 1_000, 1).unwrap();
    }
    clock.advance_to(500);
    // Wait 500 for the roll, then 100 until 10 * (1000 - s) / 1000 + 1 <= 10. The
    // ten hits count until the next window ends, 1500 ms on: a client following
    // `RateLimit-Reset` rather than `Retry-After` is not refused again.
    assert_eq!(store.hit("w", 10, 1_000, 1).unwrap(), limit(false, 10, 0, 1_500, 600));
    clock.advance_to(1_099);
    assert!(!store.hit("w", 10, 1_000, 1).unwrap().allowed);
    clock.advance_to(1_100);
    assert!(store.hit("w", 10, 1_000, 1).unwrap().allowed);
}

#[test]
fn hit_retry_after_is_at_most_two_windows() {
    let (clock, store) = store();
    assert!(store.hit("w", 10, 1_000, 10).unwrap().allowed);
    // The whole limit again needs both windows to age out.
    assert_eq!(store.hit("w", 10, 1_000, 10).unwrap(), limit(false, 10, 0, 2_000, 2_000));
    clock.advance_to(1_999);
    assert!(!store.hit("w", 10, 1_000, 10).unwrap().allowed);
    clock.advance_to(2_000);
    assert!(store.hit("w", 10, 1_000, 10).unwrap().allowed);
}

#[test]
fn hit_entries_expire_when_both_windows_have_aged_out() {
    let (clock, store) = store();
    clock.advance_to(1_300);
    store.hit("w", 10, 1_000, 1).unwrap();
    assert_eq!(store.hit("w2", 10, 1_000, 0).unwrap(), limit(true, 10, 10, 0, 0));
    assert_eq!(store.len(), 1, "a cost-0 hit writes nothing");
    clock.advance_to(2_999);
    store.sweep();
    assert_eq!(store.len(), 1);
    clock.advance_to(3_000);
    store.sweep();
    assert_eq!(store.len(), 0, "expires at (index + 2) * window");
}

#[test]
fn hit_starts_afresh_when_the_window_length_changes() {
    let (_, store) = store();
    assert!(store.hit("w", 10, 1_000, 10).unwrap().allowed);
    assert_eq!(store.hit("w", 10, 60_000, 1).unwrap(), limit(true, 10, 9, 120_000, 0));
}

// ---- capacity and sweeping ----

#[test]
fn a_full_store_refuses_new_keys_only() {
    let (clock, store) = store_holding(3);
    store.set("a", b"1", Some(100)).unwrap();
    store.incr("b", 1, None).unwrap();
    store.incr("c", 1, None).unwrap();
    assert_eq!(invalid(store.set("d", b"1", None)), "store full");
    assert_eq!(invalid(store.incr("d", 1, None)), "store full");
    // No bucket or window to evict.
    assert_eq!(invalid(store.take("d", 5, 1.0, 1)), "store full");
    assert_eq!(invalid(store.hit("d", 5, 1_000, 1)), "store full");
    assert!(store.take("d", 5, 1.0, 0).unwrap().allowed, "a take that stores nothing needs no room");
    assert!(store.delete("c").unwrap());
    store.take("c", 5, 1.0, 1).unwrap();
    store.set("a", b"2", Some(100)).unwrap();
    assert_eq!(store.incr("b", 1, None).unwrap(), 2);
    assert!(store.take("c", 5, 1.0, 1).unwrap().allowed);
    assert_eq!(store.len(), 3);

    clock.advance(100);
    store.sweep();
    assert_eq!(store.len(), 2, "sweep dropped the expired value");
    store.set("d", b"1", None).unwrap();
    assert!(store.delete("b").unwrap());
    store.hit("e", 5, 1_000, 1).unwrap();
    assert_eq!(store.len(), 3);
}

/// A new bucket or window finding the store full evicts the one that
/// expires soonest (nothing else): a client making new keys cannot fill the
/// store and leave every new client after it unlimited.
#[test]
fn a_full_store_evicts_the_limit_state_expiring_soonest() {
    let (_, store) = store_holding(4);
    // Three keys of one shard: the soonest is chosen within the shard.
    let first = store.index("k0");
    let mut keys = (1..).map(|n| format!("k{n}")).filter(|k| store.index(k) == first);
    let (slow, soon, new) = ("k0".to_owned(), keys.next().unwrap(), keys.next().unwrap());
    store.set("value", b"1", None).unwrap();
    store.incr("counter", 1, None).unwrap();
    // Full again in 3 s and in 1 s.
    assert!(store.take(&slow, 3, 1.0, 3).unwrap().allowed);
    assert!(store.take(&soon, 3, 1.0, 1).unwrap().allowed);
    assert_eq!(store.len(), 4);
    // Counted at once: its window is stored, and `soon` went.
    assert!(store.hit(&new, 1, 60_000, 1).unwrap().allowed);
    assert_eq!(store.len(), 4);
    assert!(!store.hit(&new, 1, 60_000, 1).unwrap().allowed, "counted: the next hit is refused");
    assert!(!store.take(&slow, 3, 1.0, 3).unwrap().allowed, "the other bucket is kept");
    // Values and counters are never evicted: with no bucket or window
    // left but the one the key holds, a new one finds the store full.
    assert_eq!(store.get("value").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(store.incr("counter", 1, None).unwrap(), 2);

    let (_, store) = store_holding(2);
    store.set("value", b"1", None).unwrap();
    store.incr("counter", 1, None).unwrap();
    assert_eq!(invalid(store.hit("w", 5, 1_000, 1)), "store full", "nothing to evict");
    // In a next shard to the new key's, the one there goes.
    let (_, store) = store_holding(1);
    let next = (store.index("w") + 1) % super::SHARDS;
    let other = (0..).map(|n| format!("o{n}")).find(|k| store.index(k) == next).unwrap();
    assert!(store.take(&other, 3, 1.0, 1).unwrap().allowed);
    assert!(store.hit("w", 5, 1_000, 1).unwrap().allowed);
    assert_eq!(store.len(), 1);
}

/// Values (a cache's answers) filling the store leave the last eighth to
/// counters, buckets and windows: rate limits go on counting new clients.
#[test]
fn values_leave_room_for_counters_and_limits() {
    let (_, store) = store_holding(16);
    for n in 0..14 {
        store.set(&format!("v{n}"), b"x", None).unwrap();
    }
    assert_eq!(invalid(store.set("v14", b"x", None)), "store full", "values fill 14 of 16 keys");
    assert!(store.hit("w", 5, 1_000, 1).unwrap().allowed, "a new window still fits");
    assert!(store.take("t", 5, 1.0, 1).unwrap().allowed);
    assert_eq!(invalid(store.incr("n", 1, None)), "store full", "and then the store is full");

    let clock = Arc::new(ManualClock::new(0));
    let store = MemStore::new(clock, 100).with_max_bytes(800);
    store.set("v", &[1; 699], None).unwrap();
    assert_eq!(invalid(store.set("u", &[1; 1], None)), "store full", "values fill 700 of 800 bytes");
    assert!(store.hit("w", 5, 1_000, 1).unwrap().allowed);
}

#[test]
fn a_store_holds_so_many_bytes_of_keys_and_values() {
    let clock = Arc::new(ManualClock::new(0));
    // Values may fill 88 of the 100 bytes (seven eighths).
    let store = MemStore::new(clock.clone(), 100).with_max_bytes(100);
    // "a" + 50 bytes, "b" + 30: 82.
    store.set("a", &[1; 50], Some(100)).unwrap();
    store.set("b", &[1; 30], None).unwrap();
    assert_eq!(invalid(store.set("c", &[1; 20], None)), "store full", "a new key past the bytes");
    assert_eq!(invalid(store.set("b", &[1; 40], None)), "store full", "a larger value past them");
    store.set("b", &[1; 36], None).unwrap();
    assert_eq!(store.bytes.load(std::sync::atomic::Ordering::Acquire), 88);
    // A counter or a limit costs its key; a value made a counter frees its bytes.
    store.set("b", b"5", None).unwrap();
    assert_eq!(store.incr("b", 1, None).unwrap(), 6);
    store.take("t", 5, 1.0, 1).unwrap();
    assert_eq!(store.bytes.load(std::sync::atomic::Ordering::Acquire), 51 + 1 + 1);
    // Deleted and swept entries free theirs.
    assert!(store.delete("t").unwrap());
    clock.advance(100);
    store.sweep();
    store.set("c", &[1; 80], None).unwrap();
    assert_eq!(store.bytes.load(std::sync::atomic::Ordering::Acquire), 1 + 81, "the expired `a` went");
    assert_eq!(store.len(), 2);
}

#[test]
fn limits_refuse_a_live_value_of_another_kind_and_replace_an_expired_one_in_place() {
    let (clock, store) = store_holding(2);
    store.set("v", b"1", Some(100)).unwrap();
    store.hit("w", 5, 1_000, 1).unwrap();
    assert_eq!(invalid(store.take("v", 5, 1.0, 1)), "take: the key holds a value");
    assert_eq!(invalid(store.hit("v", 5, 1_000, 1)), "hit: the key holds a value");
    assert_eq!(invalid(store.take("w", 5, 1.0, 1)), "take: the key holds a sliding window (hit)");

    // Expired, the value is no longer there: the bucket takes its place,
    // in the full store, without needing room for a new key.
    clock.advance(100);
    assert_eq!(store.take("v", 5, 1.0, 1).unwrap(), limit(true, 5, 4, 1_000, 0));
    assert_eq!(store.len(), 2);
    assert_eq!(invalid(store.get("v")), "get: the key holds a token bucket (take)");
    // An expired entry the decision leaves as it is goes: a free take
    // stores nothing.
    clock.advance(1_000);
    assert!(store.take("v", 5, 1.0, 0).unwrap().allowed);
    assert_eq!(store.len(), 1, "the refilled bucket went; the window lives on");
}

#[test]
fn sweep_drops_exactly_the_expired_entries() {
    let (clock, store) = store();
    for i in 0..200u64 {
        store.set(&format!("k{i}"), b"v", Some(100 + i)).unwrap();
    }
    store.set("forever", b"v", None).unwrap();
    clock.advance(150);
    store.sweep();
    assert_eq!(store.len(), 150, "k51..k199 and forever remain");
    assert_eq!(store.get("k50").unwrap(), None);
    assert_eq!(store.get("k51").unwrap(), Some(b"v".to_vec()));
    clock.advance(1_000);
    store.sweep();
    assert_eq!(store.len(), 1);
}

// ---- concurrency ----

const THREADS: usize = 8;

/// Runs `op` `per_thread` times on each of 8 threads started together and
/// returns how many calls returned true.
fn contend(per_thread: usize, op: impl Fn() -> bool + Sync) -> usize {
    let barrier = std::sync::Barrier::new(THREADS);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    (0..per_thread).filter(|_| op()).count()
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).sum()
    })
}

#[test]
fn concurrent_takes_grant_exactly_the_capacity() {
    let (_, store) = store();
    let granted = contend(10_000, || store.take("b", 1_000, 1.0, 1).unwrap().allowed);
    assert_eq!(granted, 1_000);
}

#[test]
fn concurrent_hits_grant_exactly_the_limit() {
    let (_, store) = store();
    let granted = contend(10_000, || store.hit("w", 1_000, 60_000, 1).unwrap().allowed);
    assert_eq!(granted, 1_000);
}

#[test]
fn concurrent_incrs_sum_exactly() {
    let (_, store) = store();
    contend(10_000, || store.incr("c", 1, Some(60_000)).is_ok());
    assert_eq!(store.get("c").unwrap(), Some(b"80000".to_vec()));
}

#[test]
fn concurrent_inserts_never_overfill_the_store() {
    let (_, store) = store_holding(100);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let stored = contend(1_000, || {
        let key = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        store.incr(&format!("k{key}"), 1, None).is_ok()
    });
    assert_eq!(stored, 100);
    assert_eq!(store.len(), 100);
}

#[test]
fn concurrent_values_never_overfill_their_share() {
    let (_, store) = store_holding(100);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let stored = contend(1_000, || {
        let key = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        store.set(&format!("k{key}"), b"v", None).is_ok()
    });
    assert_eq!(stored, 88, "seven eighths of 100, rounded up");
    assert_eq!(store.len(), 88);
}

#[test]
fn system_clock_is_monotonic() {
    use super::{Clock, SystemClock};
    let first = SystemClock.now_ms();
    thread::sleep(std::time::Duration::from_millis(5));
    assert!(SystemClock.now_ms() >= first + 5);
}

// ---- retry_after, exhaustively ----

/// For every small state, a refused `hit` is granted at `now + retry_after_ms`
/// and still refused one millisecond earlier: the formula is exact, not a bound.
#[test]
fn hit_retry_after_is_exact_for_every_small_state() {
    use super::limits::{Window, hit};
    let mut refusals = 0;
    for window_ms in [1, 7, 10, 1_000] {
        for limit in [1, 2, 3, 7, 10] {
            for previous in 0..=limit {
                for current in 0..=limit {
                    for elapsed in [0, 1, window_ms / 3, window_ms / 2, window_ms - 1] {
                        for cost in 1..=limit {
                            let state = Some(Window { window_ms, index: 5, current, previous });
                            let now = 5 * window_ms + elapsed;
                            let (result, _) = hit(state, now, limit, window_ms, cost);
                            if result.allowed {
                                continue;
                            }
                            refusals += 1;
                            let wait = result.retry_after_ms;
                            let case =
                                format!("w={window_ms} l={limit} p={previous} c={current} e={elapsed} cost={cost}");
                            assert!(wait >= 1 && wait <= 2 * window_ms, "{case}: {wait}");
                            assert!(hit(state, now + wait, limit, window_ms, cost).0.allowed, "{case}: at {wait}");
                            assert!(
                                !hit(state, now + wait - 1, limit, window_ms, cost).0.allowed,
                                "{case}: before {wait}"
                            );
                        }
                    }
                }
            }
        }
    }
    assert!(refusals > 1_000, "the grid exercised few refusals: {refusals}");
}

/// For every small state, `reset_ms` is exactly when the window counts
/// nothing any more — a free hit then sees `remaining == limit`, one
/// millisecond earlier it does not — and a refusal's `reset_ms` is never
/// before its `retry_after_ms` (a client waiting for `RateLimit-Reset` is
/// not refused again).
#[test]
fn hit_reset_is_when_the_limit_is_fully_available_again() {
    use super::limits::{Update, Window, hit};
    let mut cases = 0;
    for window_ms in [1, 7, 10, 1_000] {
        for limit in [1, 2, 3, 7, 10] {
            for previous in 0..=limit {
                for current in 0..=limit {
                    for elapsed in [0, 1, window_ms / 3, window_ms / 2, window_ms - 1] {
                        for cost in 0..=limit {
                            let state = Some(Window { window_ms, index: 5, current, previous });
                            let now = 5 * window_ms + elapsed;
                            let (result, update) = hit(state, now, limit, window_ms, cost);
                            let after = match update {
                                Update::Store { state, .. } => Some(state),
                                Update::Keep => state,
                            };
                            let case =
                                format!("w={window_ms} l={limit} p={previous} c={current} e={elapsed} cost={cost}");
                            cases += 1;
                            assert!(result.reset_ms >= result.retry_after_ms, "{case}: {result:?}");
                            assert!(result.reset_ms <= 2 * window_ms, "{case}: {result:?}");
                            let at = |t: u64| hit(after, now + t, limit, window_ms, 0).0.remaining;
                            assert_eq!(at(result.reset_ms), limit, "{case}: at {}", result.reset_ms);
                            if result.reset_ms > 0 {
                                assert!(at(result.reset_ms - 1) < limit, "{case}: before {}", result.reset_ms);
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(cases > 10_000, "the grid exercised few cases: {cases}");
}

/// The same for `take`, over awkward rates, after a burst and partial refills.
#[test]
fn take_retry_after_is_exact_for_many_rates() {
    use super::limits::{Bucket, take};
    let mut refusals = 0;
    for refill in [0.1, 0.3, 0.7, 1.0, 3.0, 7.0, 10.0, 33.3, 999.0, 2_500.0] {
        for capacity in [1u64, 5, 10, 100] {
            for drained_ago in [0u64, 1, 7, 99, 333, 1_001] {
                for cost in [1, capacity / 2 + 1, capacity] {
                    let state = Some(Bucket { tokens: 0.0, last_ms: 1_000 });
                    let now = 1_000 + drained_ago;
                    let (result, _) = take(state, now, capacity, refill, cost);
                    if result.allowed {
                        continue;
                    }
                    refusals += 1;
                    let wait = result.retry_after_ms;
                    let case = format!("refill={refill} capacity={capacity} ago={drained_ago} cost={cost}");
                    assert!(take(state, now + wait, capacity, refill, cost).0.allowed, "{case}: at {wait}");
                    assert!(!take(state, now + wait - 1, capacity, refill, cost).0.allowed, "{case}: before {wait}");
                }
            }
        }
    }
    assert!(refusals > 300, "the grid exercised few refusals: {refusals}");
}
