//! The shared key-value and counter store (needs `grants.store = true`).
//!
//! Keys are namespaced per plugin by the gateway. Counters, token buckets and
//! sliding windows are atomic in the backend — in-process, or Redis for a
//! fleet — so limits are exact under concurrency. When the backend cannot be
//! reached the call returns [`StoreError::Unavailable`] and the plugin
//! decides whether that lets the request through.
//!
//! Limits, the same on either backend: keys up to [`MAX_KEY_BYTES`] counting
//! the gateway's prefix (`NAME:`, and `wasmgate:NAME:` on Redis), values up to
//! [`MAX_VALUE_BYTES`], TTLs up to [`MAX_TTL_MS`], windows up to
//! [`MAX_WINDOW_MS`]; a call outside them is [`StoreError::Invalid`].

use std::fmt;
use std::time::Duration;

pub use wasmgate_common::store_args::{MAX_CAPACITY, MAX_KEY_BYTES, MAX_TTL_MS, MAX_VALUE_BYTES, MAX_WINDOW_MS};

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The backend is down or did not answer in time.
    Unavailable(String),
    /// A key, value or argument out of range, a key holding another kind
    /// of data, or the in-memory store full (`"store full"`).
    Invalid(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(m) => write!(f, "store unavailable: {m}"),
            Self::Invalid(m) => write!(f, "invalid store call: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The outcome of a rate-limit operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Until the limit is fully available again.
    pub reset: Duration,
    /// When refused: until a retry can succeed.
    pub retry_after: Duration,
}

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(target_arch = "wasm32")]
mod backend {
    use super::{Limit, StoreError};
    use crate::bindings::wasmgate::plugin::store as wit;

    fn err(e: wit::StoreError) -> StoreError {
        match e {
            wit::StoreError::Unavailable(m) => StoreError::Unavailable(m),
            wit::StoreError::Invalid(m) => StoreError::Invalid(m),
        }
    }

    fn limit(l: wit::LimitResult) -> Limit {
        Limit {
            allowed: l.allowed,
            limit: l.limit,
            remaining: l.remaining,
            reset: std::time::Duration::from_millis(l.reset_ms),
            retry_after: std::time::Duration::from_millis(l.retry_after_ms),
        }
    }

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        wit::get(key).map_err(err)
    }
    pub fn set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), StoreError> {
        wit::set(key, value, ttl_ms).map_err(err)
    }
    pub fn delete(key: &str) -> Result<bool, StoreError> {
        wit::delete(key).map_err(err)
    }
    pub fn incr(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, StoreError> {
        wit::incr(key, delta, ttl_ms).map_err(err)
    }
    pub fn take(key: &str, capacity: u64, refill: f64, cost: u64) -> Result<Limit, StoreError> {
        wit::take(key, capacity, refill, cost).map(limit).map_err(err)
    }
    pub fn hit(key: &str, max: u64, window_ms: u64, cost: u64) -> Result<Limit, StoreError> {
        wit::hit(key, max, window_ms, cost).map(limit).map_err(err)
    }
}

#[cfg(not(target_arch = "wasm32"))]
use crate::testing::stand_in::store as backend;

/// The value at `key`.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    backend::get(key)
}

/// Sets `key`, expiring after `ttl` (never, when `None`).
pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
    backend::set(key, value, ms(ttl))
}

/// Removes `key`; whether it was there.
pub fn delete(key: &str) -> Result<bool, StoreError> {
    backend::delete(key)
}

/// Adds `delta` to the counter at `key` (created at 0, expiring after `ttl`,
/// when absent) and returns the new value.
pub fn incr(key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, StoreError> {
    backend::incr(key, delta, ms(ttl))
}

/// Token bucket: takes `cost` tokens from a bucket of `capacity` refilling
/// at `refill_per_second`.
pub fn take(key: &str, capacity: u64, refill_per_second: f64, cost: u64) -> Result<Limit, StoreError> {
    backend::take(key, capacity, refill_per_second, cost)
}

/// Sliding window: counts `cost` hits against `limit` per `window`.
pub fn hit(key: &str, limit: u64, window: Duration, cost: u64) -> Result<Limit, StoreError> {
    backend::hit(key, limit, ms(Some(window)).unwrap_or(0), cost)
}
