//! Retry budget: how many retries an upstream may receive, as a share of the
//! requests it actually gets (Finagle's `RetryBudget`). Retries help when one
//! endpoint blips; when the whole upstream struggles they multiply its load,
//! and the budget is what stops that retry storm.
//!
//! Two sources pay for a retry. The share: each original request deposits
//! `percent`/100 of a retry, and deposits older than ~10 s expire, so the
//! budget follows current traffic. The floor: `min_per_second` retries a
//! second accrue on their own, so a quiet upstream can still retry at all.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::window::Window;
use crate::config::RetryBudgetConfig;

/// How far back deposits count.
const SPAN: Duration = Duration::from_secs(10);

/// One retry in fixed-point units, so percent shares add up exactly.
const UNIT: u64 = 1_000_000;

/// The retry budget of one upstream; cheap to share between workers.
///
/// Granted retries never exceed `requests × percent/100 + min_per_second ×
/// (seconds since creation + 1)`: shares are rounded down, and the floor
/// starts with one second's worth, so a gateway that just started can retry
/// its first failures (a reload keeps an unchanged upstream's budget, so it
/// cannot be used to mint bursts).
#[derive(Debug)]
pub struct RetryBudget {
    /// Units each request deposits.
    share: u64,
    min_per_second: u64,
    origin: Instant,
    /// `a` counts requests, `b` the retries paid from their share.
    window: Window,
    /// Held only to withdraw: deposits stay lock-free, and serialising the
    /// rare withdrawals is what keeps two racing retries from spending the
    /// same unit.
    floor: Mutex<Floor>,
}

#[derive(Debug)]
struct Floor {
    /// Unspent units, at most one second's worth: the floor keeps a trickle
    /// flowing, it is not a reserve for a burst.
    units: u64,
    /// Units accrued since `origin` as of the last withdrawal.
    accrued: u64,
}

impl RetryBudget {
    pub fn new(config: RetryBudgetConfig) -> Self {
        let origin = Instant::now();
        Self {
            // Rounded down so the granted share never exceeds the configured one;
            // a NaN percent becomes 0.
            share: (config.percent.clamp(0.0, 100.0) * (UNIT / 100) as f64).floor() as u64,
            min_per_second: u64::from(config.min_per_second),
            origin,
            window: Window::new(SPAN, origin),
            floor: Mutex::new(Floor { units: u64::from(config.min_per_second).saturating_mul(UNIT), accrued: 0 }),
        }
    }

    /// Once per original request, before it is sent; `now` is when the
    /// request started (a clock the caller has read already).
    pub fn deposit(&self, now: Instant) {
        self.window.add(now, 1, 0);
    }

    /// Before each retry: whether the budget pays for it. A `true` is spent.
    pub fn try_withdraw(&self) -> bool {
        let now = Instant::now();
        let mut floor = self.floor.lock().unwrap_or_else(PoisonError::into_inner);
        let (requests, retries) = self.window.sum(now);
        if u128::from(requests) * u128::from(self.share) >= u128::from(retries + 1) * u128::from(UNIT) {
            self.window.add(now, 0, 1);
            return true;
        }
        let accrued = self.accrued(now);
        let fresh = accrued.saturating_sub(floor.accrued);
        floor.accrued = accrued;
        floor.units = floor.units.saturating_add(fresh).min(self.min_per_second.saturating_mul(UNIT));
        if floor.units < UNIT {
            return false;
        }
        floor.units -= UNIT;
        true
    }

    /// Floor units earned from `origin` to `now`. Recomputed from the total
    /// rather than added per call, so no fraction is lost to rounding however
    /// often it is asked.
    fn accrued(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.origin).as_nanos();
        let units = nanos * u128::from(self.min_per_second) * u128::from(UNIT) / 1_000_000_000;
        u64::try_from(units).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::advance;

    use super::*;

    fn budget(percent: f64, min_per_second: u32) -> RetryBudget {
        RetryBudget::new(RetryBudgetConfig { percent, min_per_second })
    }

    /// `per_second` requests a second for `seconds`, each wanting a retry;
    /// returns the retries granted.
    async fn drive(b: &RetryBudget, per_second: u32, seconds: u32) -> u64 {
        let mut granted = 0;
        for _ in 0..per_second * seconds {
            advance(Duration::from_secs(1) / per_second).await;
            b.deposit(Instant::now());
            granted += u64::from(b.try_withdraw());
        }
        granted
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stay_within_the_share_plus_the_floor() {
        let b = budget(20.0, 3);
        let granted = drive(&b, 1_000, 5).await;
        // 5 000 requests × 20% + 3/s × (5 s + 1) (+1 for rounding).
        assert!(granted <= 1_000 + 18 + 1, "{granted}");
        assert!(granted >= 1_000, "the whole share is usable: {granted}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_bound_holds_at_odd_percentages_and_over_longer_runs() {
        for (percent, min, rate, seconds) in
            [(10.0, 0, 97, 30), (33.3, 1, 300, 25), (0.5, 10, 1_000, 12), (100.0, 0, 50, 4)]
        {
            let b = budget(percent, min);
            let granted = drive(&b, rate, seconds).await;
            let requests = f64::from(rate * seconds);
            let bound = requests * percent / 100.0 + f64::from(min * (seconds + 1)) + 1.0;
            assert!(granted as f64 <= bound, "{percent}% {min}/s: {granted} > {bound}");
            assert!(granted as f64 >= bound * 0.9 - 2.0, "{percent}% {min}/s: only {granted} of {bound}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_alone_allows_min_per_second() {
        let b = budget(20.0, 3);
        let mut granted = 0;
        for _ in 0..100 {
            advance(Duration::from_millis(100)).await;
            granted += u32::from(b.try_withdraw());
        }
        // 3 at start, then 3/s over 10 s; what accrues while the floor is
        // already full (before the first withdrawals) is not kept.
        assert!((32..=33).contains(&granted), "{granted}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_does_not_save_up_a_burst() {
        let b = budget(20.0, 3);
        advance(Duration::from_secs(60)).await;
        let burst = (0..10).filter(|_| b.try_withdraw()).count();
        assert_eq!(burst, 3, "at most one second's worth after a quiet minute");
        assert!(!b.try_withdraw());
        advance(Duration::from_millis(334)).await;
        assert!(b.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_starts_with_one_seconds_worth() {
        let b = budget(0.0, 3);
        assert_eq!((0..10).filter(|_| b.try_withdraw()).count(), 3);
        advance(Duration::from_millis(333)).await;
        assert!(!b.try_withdraw(), "a third of a retry is not a retry");
        advance(Duration::from_millis(1)).await;
        assert!(b.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_the_window() {
        let b = budget(20.0, 0);
        for _ in 0..100 {
            b.deposit(Instant::now());
        }
        advance(Duration::from_secs(11)).await;
        assert!(!b.try_withdraw(), "old traffic does not pay for new retries");
        for _ in 0..5 {
            b.deposit(Instant::now());
        }
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_budget_never_retries() {
        let b = budget(0.0, 0);
        assert_eq!(drive(&b, 100, 3).await, 0);
        assert_eq!(budget(f64::NAN, 0).share, 0);
    }

    #[test]
    fn racing_workers_never_spend_the_same_retry_twice() {
        let b = budget(20.0, 0);
        let granted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..500 {
                        b.deposit(Instant::now());
                        if b.try_withdraw() {
                            granted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let left = (0..10).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted.into_inner() as usize + left, 800, "20% of 4 000, each retry paid once");
    }

    #[test]
    fn shared_across_workers() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<RetryBudget>();
    }
}
