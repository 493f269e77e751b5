//! The in-memory backend of the `store` capability: what a single gateway
//! uses when no Redis is configured, and what the SDK's test double runs.
//!
//! Keys live in 64 shards, each a `Mutex<HashMap>`; every operation on a key
//! runs under its shard's lock, so counters, buckets and windows are exact
//! under any concurrency. Entries expire lazily when touched; the host calls
//! [`MemStore::sweep`] now and then to drop the ones nobody touches again.
//! Time comes from a [`Clock`], so tests move it by hand ([`ManualClock`]).
//!
//! # Limits
//!
//! A violation is [`StoreError::Invalid`] naming the argument.
//!
//! * `key`: at most 512 bytes. `value`: at most 1 MiB (1 048 576 bytes).
//! * `ttl_ms`: 1 ..= 2 592 000 000 (30 days); `None` is no expiry.
//! * `take`: `capacity` 1 ..= 2^53; `refill_per_second` finite and > 0;
//!   `cost` ..= `capacity` (a bigger cost could never be granted, so it is an
//!   error rather than a refusal with a meaningless `retry_after_ms`).
//! * `hit`: `limit` >= 1; `window_ms` 1 ..= 86 400 000 (1 day); `cost` ..= `limit`,
//!   for the same reason.
//! * A `set`, `incr`, `take` or `hit` that would add a key to a store already
//!   holding `max_entries` keys, or more than `max_bytes` of keys and `set`
//!   values ([`MemStore::with_max_bytes`]), first drops that shard's expired
//!   entries (unless it did within the last second), then fails with
//!   `Invalid("store full")`; a `set` that would grow a value past
//!   `max_bytes` fails at once. (A `take` or `hit` that writes nothing, see
//!   below, adds no key.) `set` values may fill only seven eighths of either
//!   limit: the last eighth is kept for counters, buckets and windows, so
//!   values (a cache's answers) filling the store leave rate limits counting
//!   new clients.
//! * A `take` or `hit` that finds no room evicts another bucket or window
//!   first — of the first [`EVICTION_SAMPLE`] entries of its shard (or, if
//!   none is one, of the first of the next four shards that has one), the one that
//!   expires soonest: what it forgets is the least (a bucket nearly full
//!   again, a window nearly aged out), as nginx's `limit_req` zone drops its
//!   least recently used states. Otherwise a client making new keys (a
//!   path, a header, an IPv6 address each) could fill the store, and every
//!   new client after it would go unlimited.
//!
//! # Values and counters
//!
//! `set` replaces whatever the key held, with the new expiry (`None`: none).
//! `get` of a key that holds a bucket or window, and `take`/`hit`/`incr` of a
//! key that holds something else, are `Invalid`. A counter reads as its ASCII
//! decimal; `incr` accepts a value set by `set` if it is a canonical decimal
//! i64 (`0` or `-?[1-9][0-9]*`, no `+`, no `-0`, no spaces), as Redis `INCRBY`
//! does. `incr` of an absent (or expired) key creates it at 0 expiring after
//! `ttl_ms`, then adds; `incr` of an existing key keeps its expiry and ignores
//! `ttl_ms`. An addition beyond i64 is `Invalid` and leaves the counter as it
//! was, as Redis `INCRBY` errs.
//!
//! # `take`: token bucket with continuous refill
//!
//! State: `tokens` (an IEEE-754 double, as in Lua) and `last_ms`. An absent
//! or expired key is a full bucket. With `now` the clock in milliseconds:
//!
//! ```text
//! if absent:  tokens = capacity;  last = now
//! else:       tokens = min(capacity, tokens + ((max(0, now - last_ms) * refill_per_second) / 1000))
//!             last   = max(last_ms, now)
//! allowed        = tokens >= cost - 1e-6
//! if allowed:     tokens = max(0, tokens - cost)
//! remaining      = floor(tokens + 1e-6)
//! reset_ms       = ceil((max(0, capacity - tokens - 1e-9) * 1000) / refill_per_second)   -- until full
//! retry_after_ms = 0 if allowed, else ceil(((cost - tokens - 1e-9) * 1000) / refill_per_second)
//! limit          = capacity
//! ```
//!
//! Every operation is a double operation in exactly that order (multiply
//! before divide, so integral rates give exact results); a result too large
//! for a u64 saturates to `u64::MAX`. The two slacks absorb double rounding
//! (0.7 + 0.1 is 0.7999999999999999): 1e-6 of a token lets a refill that
//! should have reached `cost` grant it, and the smaller 1e-9 keeps an exact
//! 1 ms from rounding up to 2 while a take at `now + retry_after_ms` of the
//! same cost is still granted (if nothing else took meanwhile).
//!
//! When allowed with `cost > 0`, the state `(tokens, last)` is written and the
//! key expires at `now + reset_ms`: the moment the bucket is full again, which
//! an absent key means anyway, so idle buckets vanish (a `reset_ms` of 0
//! deletes the key). A refusal or a `cost` of 0 writes nothing (nor creates the
//! key): the stored state still gives the same answers later.
//!
//! # `hit`: sliding window (two-window estimate, as Cloudflare and nginx)
//!
//! Windows are aligned to multiples of `window_ms` on the store's clock. State:
//! `index` (`now / window_ms` of the window being counted), `current` and
//! `previous` hit counts, and the `window_ms` they were made with.
//!
//! ```text
//! index   = floor(now / window_ms);  elapsed = now mod window_ms;  left = window_ms - elapsed
//! (c, p)  = (current, previous)  if stored index == index
//!           (0, current)         if stored index == index - 1
//!           (0, 0)               if absent, older, or stored window_ms != window_ms
//! estimate = p * left / window_ms + c                      -- exact rational, never rounded
//! allowed  = estimate + cost <= limit
//!            (computed as p * left + (c + cost) * window_ms <= limit * window_ms in integers)
//! if allowed: c = c + cost
//! remaining = max(0, limit - (c + ceil(p * left / window_ms)))   -- c after the hit
//! reset_ms  = left + window_ms if c > 0, left if c == 0 and p > 0, else 0
//!             -- until nothing counts (remaining = limit): c weighs in as the next
//!             -- window's p until that one rolls too. Never below retry_after_ms.
//! retry_after_ms = 0 if allowed, else the smallest whole t such that a hit of
//!                  `cost` at now + t is allowed, with no other hits meanwhile:
//!   if c + cost <= limit and p > 0:       -- p's weight decays within this window
//!       t = left - min(left, floor((limit - c - cost) * window_ms / p))
//!   else:                                 -- wait for the roll, then c decays as the new p
//!       t = left + (c == 0 ? 0 : window_ms - min(window_ms, floor((limit - cost) * window_ms / c)))
//!   t = min(t, 2 * window_ms)
//! ```
//!
//! All of that is integer arithmetic without overflow (u128 here; in Lua's
//! doubles it stays exact while `limit * window_ms <= 2^53`). When allowed
//! with `cost > 0`, `(index, c, p, window_ms)` is written and the key expires
//! at `(index + 2) * window_ms`, the start of the window in which both counts
//! have aged out: at most two windows after the last counted hit. A refusal or
//! a `cost` of 0 writes nothing. If the clock steps back into an earlier window,
//! the stored window keeps being counted (a hit is never forgotten).
//!
//! Because the previous window still weighs in after the edge, a client that
//! spent the whole limit at the end of one window cannot spend it again at the
//! start of the next: the two-fixed-windows double burst is gone. (The
//! estimate assumes the previous window's hits were spread evenly, so hits
//! bunched at its very end are under-weighted: at worst just under
//! `2 * limit` land within one window-length span, but spread across it at
//! the rate the decay frees room, never as a burst at the edge.)

mod clock;
mod limits;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

pub use clock::{Clock, ManualClock, SystemClock};
pub use limits::window_reset_ms;
use limits::{Bucket, Update, Window};

/// The outcome of a rate-limit operation: what `RateLimit-*` headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitResult {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Milliseconds until the limit is fully available again: the bucket full (`take`), or
    /// nothing counted in the window any more (`hit`). Never less than `retry_after_ms`.
    pub reset_ms: u64,
    /// When refused: milliseconds until the same call can succeed; 0 when allowed.
    pub retry_after_ms: u64,
}

/// Why a store call failed. Memory is never "unavailable", unlike Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// An argument out of range, a key holding the wrong kind of data, or a full store.
    Invalid(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Invalid(message) => write!(f, "invalid store call: {message}"),
        }
    }
}

impl std::error::Error for StoreError {}

use crate::store_args as args;
pub use crate::store_args::{MAX_CAPACITY, MAX_KEY_BYTES, MAX_TTL_MS, MAX_VALUE_BYTES, MAX_WINDOW_MS};

/// Enough shards that 2–64 cores rarely contend on one lock, few enough that
/// `sweep` stays a short walk.
const SHARDS: usize = 64;

/// How many of a shard's entries a full store looks at for a bucket or
/// window to evict: a bounded look, not a walk of the shard on every new
/// key of a flood.
pub const EVICTION_SAMPLE: usize = 64;

/// A full store drops a shard's expired entries on a new key at most this
/// often: a flood of new keys would otherwise walk the whole shard, under
/// its lock, for each.
const SWEEP_EVERY_MS: u64 = 1_000;

/// The in-memory store; see the module doc for the exact semantics.
pub struct MemStore<C: Clock = SystemClock> {
    clock: C,
    max_entries: usize,
    /// Entries in all shards, expired ones not yet dropped included. Only
    /// changed under the lock of the shard gaining or losing the entry.
    len: AtomicUsize,
    max_bytes: usize,
    /// The bytes of the keys and `set` values held ([`weight`]), counted as
    /// `len` is.
    bytes: AtomicUsize,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
}

struct Entry {
    value: Value,
    /// Absolute clock milliseconds; the entry is gone from this instant on.
    expires_at: Option<u64>,
}

enum Value {
    Bytes(Vec<u8>),
    Counter(i64),
    Bucket(Bucket),
    Window(Window),
}

/// One shard's entries, and when it last dropped its expired ones.
#[derive(Default)]
struct Shard {
    entries: HashMap<String, Entry>,
    swept_at: Option<u64>,
}

impl std::ops::Deref for Shard {
    type Target = HashMap<String, Entry>;

    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

impl std::ops::DerefMut for Shard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.entries
    }
}

impl<C: Clock> MemStore<C> {
    /// An empty store holding at most `max_entries` keys.
    pub fn new(clock: C, max_entries: usize) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::default()).collect();
        MemStore {
            clock,
            max_entries,
            len: AtomicUsize::new(0),
            max_bytes: usize::MAX,
            bytes: AtomicUsize::new(0),
            hasher: RandomState::new(),
            shards,
        }
    }

    /// The store holding at most `max_bytes` of keys and values in all: a
    /// `set` or a new key past it fails as a store over `max_entries` does.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The value (or counter, as decimal) under `key`, if it has not expired.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check(args::key(key))?;
        let now = self.clock.now_ms();
        let mut shard = self.shard(key);
        let Some(entry) = self.live(&mut shard, key, now) else { return Ok(None) };
        match &entry.value {
            Value::Bytes(bytes) => Ok(Some(bytes.clone())),
            Value::Counter(count) => Ok(Some(count.to_string().into_bytes())),
            other => Err(wrong_kind("get", other)),
        }
    }

    /// Stores `value`, replacing whatever `key` held; `ttl_ms` none: no expiry.
    pub fn set(&self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), StoreError> {
        check(args::key(key).and(args::value(value)).and(args::ttl(ttl_ms)))?;
        let now = self.clock.now_ms();
        let entry =
            Entry { value: Value::Bytes(value.to_vec()), expires_at: ttl_ms.map(|ttl| now.saturating_add(ttl)) };
        let mut shard = self.shard(key);
        match self.live(&mut shard, key, now) {
            Some(existing) => {
                let (old, new) = (payload(&existing.value), value.len());
                if new > old && !reserve(&self.bytes, for_values(self.max_bytes), new - old) {
                    return Err(full());
                }
                self.bytes.fetch_sub(old.saturating_sub(new), Ordering::AcqRel);
                *existing = entry;
            }
            None => self.insert(&mut shard, key, entry, now)?,
        }
        Ok(())
    }

    /// Removes `key`; whether it was there (and not expired).
    pub fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check(args::key(key))?;
        let now = self.clock.now_ms();
        let mut shard = self.shard(key);
        if self.live(&mut shard, key, now).is_none() {
            return Ok(false);
        }
        self.remove(&mut shard, key);
        Ok(true)
    }

    /// Adds `delta` to the counter (created at 0 with `ttl_ms` when absent) and returns it.
    pub fn incr(&self, key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, StoreError> {
        check(args::key(key).and(args::ttl(ttl_ms)))?;
        let now = self.clock.now_ms();
        let mut shard = self.shard(key);
        let Some(entry) = self.live(&mut shard, key, now) else {
            let entry = Entry { value: Value::Counter(delta), expires_at: ttl_ms.map(|ttl| now.saturating_add(ttl)) };
            self.insert(&mut shard, key, entry, now)?;
            return Ok(delta);
        };
        let count = match &entry.value {
            Value::Counter(count) => *count,
            Value::Bytes(bytes) => parse_counter(bytes)
                .ok_or_else(|| invalid("incr: the key holds a value that is not a decimal integer".into()))?,
            other => return Err(wrong_kind("incr", other)),
        };
        // As Redis's `INCRBY`: an error, the counter as it was (saturated,
        // the two backends told a plugin different things).
        let count = count.checked_add(delta).ok_or_else(|| invalid("incr: the counter would overflow".into()))?;
        self.bytes.fetch_sub(payload(&entry.value), Ordering::AcqRel);
        entry.value = Value::Counter(count);
        Ok(count)
    }

    /// Token bucket: takes `cost` tokens, or refuses and takes nothing.
    pub fn take(&self, key: &str, capacity: u64, refill_per_second: f64, cost: u64) -> Result<LimitResult, StoreError> {
        check(args::key(key).and(args::take(capacity, refill_per_second, cost)))?;
        let bucket = |value: &Value| match value {
            Value::Bucket(bucket) => Some(*bucket),
            _ => None,
        };
        self.limit("take", key, bucket, Value::Bucket, |state, now| {
            limits::take(state, now, capacity, refill_per_second, cost)
        })
    }

    /// Sliding window: counts `cost` hits against `limit` per `window_ms`, or refuses.
    pub fn hit(&self, key: &str, limit: u64, window_ms: u64, cost: u64) -> Result<LimitResult, StoreError> {
        check(args::key(key).and(args::hit(limit, window_ms, cost)))?;
        let window = |value: &Value| match value {
            Value::Window(window) => Some(*window),
            _ => None,
        };
        self.limit("hit", key, window, Value::Window, |state, now| limits::hit(state, now, limit, window_ms, cost))
    }

    /// A rate-limit decision on `key`: its live state read (`state`: this
    /// algorithm's, `None` for another kind of value), `decide`d, and the
    /// update written, with one lookup of the key under the shard's lock —
    /// a limited route makes this call on every request.
    fn limit<S>(
        &self,
        operation: &str,
        key: &str,
        state: impl Fn(&Value) -> Option<S>,
        value: impl FnOnce(S) -> Value,
        decide: impl FnOnce(Option<S>, u64) -> (LimitResult, Update<S>),
    ) -> Result<LimitResult, StoreError> {
        let now = self.clock.now_ms();
        let mut shard = self.shard(key);
        let Some(entry) = shard.get_mut(key) else {
            let (result, update) = decide(None, now);
            if let Update::Store { state, expires_at } = update
                && expires_at > now
            {
                self.insert(&mut shard, key, Entry { value: value(state), expires_at: Some(expires_at) }, now)?;
            }
            return Ok(result);
        };
        let live = !entry.expired(now);
        let current =
            if live { Some(state(&entry.value).ok_or_else(|| wrong_kind(operation, &entry.value))?) } else { None };
        let (result, update) = decide(current, now);
        match update {
            Update::Store { state, expires_at } if expires_at > now => {
                // The entry replaced may be an expired value.
                self.bytes.fetch_sub(payload(&entry.value), Ordering::AcqRel);
                *entry = Entry { value: value(state), expires_at: Some(expires_at) };
            }
            // Back to what an absent key means, or an expired entry left
            // as it was: either way it goes.
            Update::Store { .. } => self.remove(&mut shard, key),
            Update::Keep if !live => self.remove(&mut shard, key),
            Update::Keep => {}
        }
        Ok(result)
    }

    /// Drops every expired entry. Lazy expiry alone would keep keys that are
    /// never touched again (one per client IP, say) forever.
    pub fn sweep(&self) {
        let now = self.clock.now_ms();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            self.sweep_shard(&mut shard, now);
        }
    }

    /// Entries held, including expired ones that no access or sweep has dropped yet.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Whether [`MemStore::len`] is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        lock(&self.shards[self.index(key)])
    }

    fn index(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    /// The entry for `key` if it has not expired; an expired one is dropped.
    fn live<'s>(&self, shard: &'s mut Shard, key: &str, now: u64) -> Option<&'s mut Entry> {
        if shard.get(key).is_some_and(|entry| entry.expired(now)) {
            self.remove(shard, key);
        }
        shard.get_mut(key)
    }

    /// Adds a key the shard does not hold, within `max_entries` and
    /// `max_bytes`.
    fn insert(&self, shard: &mut Shard, key: &str, entry: Entry, now: u64) -> Result<(), StoreError> {
        let weight = weight(key, &entry.value);
        let (entries, bytes) = match entry.value {
            Value::Bytes(_) => (for_values(self.max_entries), for_values(self.max_bytes)),
            _ => (self.max_entries, self.max_bytes),
        };
        if !self.reserve_entry(weight, entries, bytes) {
            // Only this shard: sweeping others would mean taking a second lock.
            if shard.swept_at.is_none_or(|at| now.abs_diff(at) >= SWEEP_EVERY_MS) {
                self.sweep_shard(shard, now);
            }
            let limit = matches!(entry.value, Value::Bucket(_) | Value::Window(_));
            let room = self.reserve_entry(weight, entries, bytes)
                || (limit && self.evict_limit(shard, key) && self.reserve_entry(weight, entries, bytes));
            if !room {
                return Err(full());
            }
        }
        shard.insert(key.to_owned(), entry);
        Ok(())
    }

    /// Makes room for a new bucket or window by evicting the one expiring
    /// soonest among the first [`EVICTION_SAMPLE`] entries of `shard` (the
    /// one of `key`, held), or else of the first of the next few shards
    /// that has one and is not locked now (waiting for a second lock could
    /// deadlock; a store full of values and counters is not walked whole
    /// for every new key). Whether one was.
    fn evict_limit(&self, shard: &mut Shard, key: &str) -> bool {
        const NEIGHBOURS: usize = 4;
        if self.evict_in(shard) {
            return true;
        }
        let own = self.index(key);
        (1..=NEIGHBOURS).any(|i| match self.shards[(own + i) % SHARDS].try_lock() {
            Ok(mut other) => self.evict_in(&mut other),
            Err(std::sync::TryLockError::Poisoned(p)) => self.evict_in(&mut p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => false,
        })
    }

    fn evict_in(&self, shard: &mut Shard) -> bool {
        let victim = shard
            .iter()
            .take(EVICTION_SAMPLE)
            .filter(|(_, e)| matches!(e.value, Value::Bucket(_) | Value::Window(_)))
            .min_by_key(|(_, e)| e.expires_at.unwrap_or(u64::MAX))
            .map(|(k, _)| k.clone());
        match victim {
            Some(k) => {
                self.remove(shard, &k);
                true
            }
            None => false,
        }
    }

    /// Counts one more entry of `weight` bytes if there is room for both
    /// under these limits.
    fn reserve_entry(&self, weight: usize, max_entries: usize, max_bytes: usize) -> bool {
        if !reserve(&self.len, max_entries, 1) {
            return false;
        }
        if !reserve(&self.bytes, max_bytes, weight) {
            self.len.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn remove(&self, shard: &mut Shard, key: &str) {
        if let Some(entry) = shard.remove(key) {
            self.len.fetch_sub(1, Ordering::AcqRel);
            self.bytes.fetch_sub(weight(key, &entry.value), Ordering::AcqRel);
        }
    }

    fn sweep_shard(&self, shard: &mut Shard, now: u64) {
        shard.swept_at = Some(now);
        let (before, mut freed) = (shard.len(), 0);
        shard.retain(|key, entry| {
            let expired = entry.expired(now);
            if expired {
                freed += weight(key, &entry.value);
            }
            !expired
        });
        self.len.fetch_sub(before - shard.len(), Ordering::AcqRel);
        self.bytes.fetch_sub(freed, Ordering::AcqRel);
    }
}

impl<C: Clock> fmt::Debug for MemStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemStore").field("len", &self.len()).field("max_entries", &self.max_entries).finish()
    }
}

impl Entry {
    fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Bytes(_) => "a value",
            Value::Counter(_) => "a counter",
            Value::Bucket(_) => "a token bucket (take)",
            Value::Window(_) => "a sliding window (hit)",
        }
    }
}

/// Adds `n` to `count` if it stays within `max`. A compare-and-swap rather
/// than check-then-add, because shards under different locks insert at once.
fn reserve(count: &AtomicUsize, max: usize, n: usize) -> bool {
    count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_add(n).filter(|&after| after <= max)).is_ok()
}

/// What `set` values may fill of a limit: all but an eighth, kept for
/// counters, buckets and windows (see the module doc).
fn for_values(max: usize) -> usize {
    max - max / 8
}

/// The bytes of a `set` value (other kinds are a few words).
fn payload(value: &Value) -> usize {
    match value {
        Value::Bytes(bytes) => bytes.len(),
        _ => 0,
    }
}

/// What an entry counts against `max_bytes`: its key and its value.
fn weight(key: &str, value: &Value) -> usize {
    key.len() + payload(value)
}

fn full() -> StoreError {
    invalid("store full".into())
}

/// A poisoned shard is still consistent: no code holding the lock can panic
/// between two writes that belong together, so the guard is taken back.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

fn check(args: Result<(), String>) -> Result<(), StoreError> {
    args.map_err(StoreError::Invalid)
}

/// Redis's rule for an integer held as a string: canonical decimal i64.
fn parse_counter(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let canonical = match digits {
        [b'0'] => bytes.len() == 1,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn wrong_kind(operation: &str, value: &Value) -> StoreError {
    invalid(format!("{operation}: the key holds {}", value.kind()))
}

fn invalid(message: String) -> StoreError {
    StoreError::Invalid(message)
}
