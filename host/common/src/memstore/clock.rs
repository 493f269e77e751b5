//! The store's notion of time, injectable so that tests (and the SDK's native
//! test double) decide when time passes instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Monotonic milliseconds. Only differences and window alignment matter, so
/// the epoch is whatever the clock chooses.
pub trait Clock: Send + Sync {
    /// Never less than a previous reading.
    fn now_ms(&self) -> u64;
}

/// Milliseconds since the first time any `SystemClock` was read in this
/// process, from [`Instant`], so wall-clock steps never refill a bucket.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let elapsed = EPOCH.get_or_init(Instant::now).elapsed();
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to: for deterministic tests of expiry
/// and rate limits. Share it with the store through an `Arc`.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock reading `start_ms` until moved.
    pub fn new(start_ms: u64) -> Self {
        ManualClock { now_ms: AtomicU64::new(start_ms) }
    }

    /// Moves time forward by `ms` (saturating).
    pub fn advance(&self, ms: u64) {
        // fetch_update rather than fetch_add so the clock saturates instead of
        // wrapping back to 0, which would make it non-monotonic.
        let _ = self.now_ms.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| Some(now.saturating_add(ms)));
    }

    /// Moves time forward to `ms`; an earlier `ms` is ignored, since the
    /// store relies on the clock never going back.
    pub fn advance_to(&self, ms: u64) {
        self.now_ms.fetch_max(ms, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Acquire)
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}
