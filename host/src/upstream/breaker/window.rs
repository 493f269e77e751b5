//! Sliding-window counters for the breaker's failure ratio and the retry
//! budget's request count. Every proxied request adds to one, so adding is a
//! single compare-and-swap on one word: no lock, and no count lost at a bucket
//! boundary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Ten buckets: the window slides in tenths, so it covers between 90% and
/// 100% of its nominal span.
const BUCKETS: usize = 10;

/// A bucket's word is `[tick:22][a:21][b:21]`. The counters and the tick that
/// owns them must change together, or a rotation racing an add would drop the
/// add or resurrect old counts.
const TICK_BITS: u32 = 22;
const COUNT_BITS: u32 = 21;
const TICK_MASK: u64 = (1 << TICK_BITS) - 1;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;

/// Two counters (`a`, `b`) summed over the last `span`.
///
/// Limits, both far outside what one gateway sees: a bucket (a tenth of the
/// span) holds about two million of each counter — past that both are
/// halved, which keeps their ratio (what the breaker reads) where saturating
/// the one would skew it — and the tick is kept modulo 2^22, so a bucket
/// left untouched for exactly a multiple of 2^22 ticks could be read as
/// current (a few counts resurface for one window).
#[derive(Debug)]
pub struct Window {
    origin: Instant,
    bucket_nanos: u128,
    buckets: [AtomicU64; BUCKETS],
}

impl Window {
    pub fn new(span: Duration, origin: Instant) -> Self {
        let bucket_nanos = (span / BUCKETS as u32).as_nanos().max(1);
        Self { origin, bucket_nanos, buckets: Default::default() }
    }

    /// Add `a` and `b` to the bucket of `now`.
    pub fn add(&self, now: Instant, a: u32, b: u32) {
        let tick = self.tick(now);
        let bucket = &self.buckets[(tick % BUCKETS as u64) as usize];
        let tick = tick & TICK_MASK;
        let mut word = bucket.load(Ordering::Acquire);
        loop {
            let (owner, old_a, old_b) = unpack(word);
            let next = if owner == tick {
                let (mut new_a, mut new_b) = (old_a + u64::from(a), old_b + u64::from(b));
                while new_a > COUNT_MAX || new_b > COUNT_MAX {
                    (new_a, new_b) = (new_a / 2, new_b / 2);
                }
                pack(tick, new_a, new_b)
            } else if is_newer(owner, tick) {
                // A caller that read `now` a whole window ago and was descheduled
                // since: its sample has already left the window.
                return;
            } else {
                pack(tick, u64::from(a).min(COUNT_MAX), u64::from(b).min(COUNT_MAX))
            };
            match bucket.compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(current) => word = current,
            }
        }
    }

    /// The counters summed over the window ending at `now`.
    pub fn sum(&self, now: Instant) -> (u64, u64) {
        let tick = self.tick(now) & TICK_MASK;
        self.buckets.iter().fold((0, 0), |(a, b), bucket| {
            let (owner, ba, bb) = unpack(bucket.load(Ordering::Acquire));
            let age = tick.wrapping_sub(owner) & TICK_MASK;
            if age < BUCKETS as u64 { (a + ba, b + bb) } else { (a, b) }
        })
    }

    pub fn clear(&self) {
        for bucket in &self.buckets {
            bucket.store(0, Ordering::Release);
        }
    }

    fn tick(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(elapsed / self.bucket_nanos).unwrap_or(u64::MAX)
    }
}

fn pack(tick: u64, a: u64, b: u64) -> u64 {
    (tick & TICK_MASK) << (2 * COUNT_BITS) | a.min(COUNT_MAX) << COUNT_BITS | b.min(COUNT_MAX)
}

fn unpack(word: u64) -> (u64, u64, u64) {
    (word >> (2 * COUNT_BITS), (word >> COUNT_BITS) & COUNT_MAX, word & COUNT_MAX)
}

/// Whether `owner` is a later tick than `tick` (modulo 2^22).
fn is_newer(owner: u64, tick: u64) -> bool {
    let ahead = owner.wrapping_sub(tick) & TICK_MASK;
    ahead != 0 && ahead < TICK_MASK / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_within_the_window_and_forgets_after_it() {
        let origin = Instant::now();
        let w = Window::new(Duration::from_secs(10), origin);
        w.add(origin, 3, 1);
        w.add(origin + Duration::from_secs(5), 2, 2);
        assert_eq!(w.sum(origin + Duration::from_secs(5)), (5, 3));
        // At 10 s the first bucket (0..1 s) has slid out; the 5 s bucket stays.
        assert_eq!(w.sum(origin + Duration::from_secs(10)), (2, 2));
        assert_eq!(w.sum(origin + Duration::from_secs(16)), (0, 0));
    }

    #[test]
    fn a_reused_slot_starts_from_zero() {
        let origin = Instant::now();
        let w = Window::new(Duration::from_secs(10), origin);
        w.add(origin, 7, 7);
        w.add(origin + Duration::from_secs(10), 1, 0);
        assert_eq!(w.sum(origin + Duration::from_secs(10)), (1, 0));
    }

    #[test]
    fn a_stale_add_does_not_roll_a_bucket_back() {
        let origin = Instant::now();
        let w = Window::new(Duration::from_secs(10), origin);
        w.add(origin + Duration::from_secs(10), 1, 0);
        w.add(origin, 5, 5);
        assert_eq!(w.sum(origin + Duration::from_secs(10)), (1, 0));
    }

    #[test]
    fn counters_never_spill_into_each_other() {
        let origin = Instant::now();
        let w = Window::new(Duration::from_secs(10), origin);
        w.add(origin, u32::MAX, 0);
        w.add(origin, 1, 1);
        let (a, b) = w.sum(origin);
        assert!(a <= COUNT_MAX && b <= 1, "{a} {b}");
    }

    /// A full bucket halves both counters: their ratio holds. (One
    /// saturating while the other counted on made 5% failures read as 20%
    /// at 30 000 requests a second with an hour's window.)
    #[test]
    fn a_full_bucket_keeps_the_ratio_of_its_counters() {
        let origin = Instant::now();
        let w = Window::new(Duration::from_secs(3600), origin);
        for _ in 0..3_000 {
            w.add(origin, 1_000, 0);
            w.add(origin, 0, 100);
        }
        let (successes, failures) = w.sum(origin);
        let ratio = failures as f64 / (successes + failures) as f64;
        assert!((0.085..0.095).contains(&ratio), "{successes} {failures}: {ratio}");
    }

    #[test]
    fn clear_empties_every_bucket() {
        let origin = Instant::now();
        let w = Window::new(Duration::from_secs(10), origin);
        w.add(origin, 1, 1);
        w.add(origin + Duration::from_secs(3), 1, 1);
        w.clear();
        assert_eq!(w.sum(origin + Duration::from_secs(3)), (0, 0));
    }

    #[test]
    fn concurrent_adds_are_all_counted() {
        let origin = Instant::now();
        let w = Window::new(Duration::from_secs(3600), origin);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        w.add(origin, 1, 2);
                    }
                });
            }
        });
        assert_eq!(w.sum(origin), (80_000, 160_000));
    }
}
