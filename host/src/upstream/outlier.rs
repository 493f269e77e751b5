//! Passive outlier detection: an endpoint that keeps answering 5xx or
//! refusing connections is taken out of the balancer's rotation for a while,
//! longer each time it happens again. It judges from proxied traffic alone;
//! active health checks are a separate signal the host combines with it in
//! the balancer's `Candidate::available`.
//!
//! The request path reads [`OutlierState::is_ejected`] for every candidate
//! and records every response, so both are plain atomics; a mutex is taken
//! only to eject (or take an ejection back).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::time::Instant;

use crate::config::Outlier;

/// What a proxied request told us about its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Anything but the two below, 4xx included: the endpoint answered.
    Success,
    /// A 5xx response.
    ServerError,
    /// No connection (refused, reset during connect, connect timeout).
    ConnectFailure,
}

/// Outlier detection state of one endpoint. Internally synchronised: share
/// it by reference, no outer lock needed.
#[derive(Debug)]
pub struct OutlierState {
    origin: Instant,
    server_errors: AtomicU32,
    connect_failures: AtomicU32,
    /// End of the current ejection in nanoseconds since `origin`; 0 when never ejected.
    ejected_until: AtomicU64,
    history: Mutex<History>,
}

#[derive(Debug, Default)]
struct History {
    /// Ejections counted toward the next one's length.
    times: u32,
    last_until: Option<Instant>,
    /// What the latest ejection replaced, for `cancel_ejection`.
    undo: Option<Undo>,
}

#[derive(Debug)]
struct Undo {
    times: u32,
    last_until: Option<Instant>,
    ejected_until: u64,
}

impl Default for OutlierState {
    fn default() -> Self {
        Self::new()
    }
}

impl OutlierState {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            server_errors: AtomicU32::new(0),
            connect_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            history: Mutex::new(History::default()),
        }
    }

    /// Count an outcome; returns the end of the ejection it caused, if any.
    ///
    /// `consecutive_5xx` 5xx in a row, or `consecutive_connect_failures`
    /// connect failures in a row (0 disables either signal), eject the
    /// endpoint for `base_ejection × times ejected`, capped at
    /// `max_ejection`. A success ends both streaks; a 5xx ends the connect
    /// streak (the connection worked) but a connect failure does not end the
    /// 5xx streak (it is no sign of recovery). Once an endpoint has stayed in
    /// for `max_ejection` after an ejection, its count starts over.
    ///
    /// The ejection applies at once. The upstream-wide cap needs the other
    /// endpoints, so it is the caller's next step: on `Some`, ask
    /// [`may_eject`] (not counting this endpoint) and call
    /// [`cancel_ejection`](Self::cancel_ejection) if it refuses. Either way
    /// the streaks restart, so a refused endpoint asks again only after
    /// another full streak, and the O(endpoints) count happens only then.
    ///
    /// Outcomes arriving while the endpoint is ejected (requests sent before)
    /// are ignored: the ejection already acted on them.
    pub fn record(&self, outcome: Outcome, now: Instant, config: &Outlier) -> Option<Instant> {
        if self.is_ejected(now) {
            return None;
        }
        let due = match outcome {
            Outcome::Success => {
                reset(&self.server_errors);
                reset(&self.connect_failures);
                false
            }
            Outcome::ServerError => {
                reset(&self.connect_failures);
                streak(&self.server_errors, config.consecutive_5xx)
            }
            Outcome::ConnectFailure => streak(&self.connect_failures, config.consecutive_connect_failures),
        };
        if due { self.eject(now, config) } else { None }
    }

    /// Take back the ejection the last [`record`](Self::record) returned,
    /// as if it had not happened (its streak stays spent). Call it right
    /// after that `record`, before other outcomes of this endpoint; a no-op
    /// when there is nothing to take back.
    pub fn cancel_ejection(&self) {
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(undo) = history.undo.take() {
            history.times = undo.times;
            history.last_until = undo.last_until;
            self.ejected_until.store(undo.ejected_until, Ordering::Release);
        }
    }

    pub fn is_ejected(&self, now: Instant) -> bool {
        self.nanos(now) < self.ejected_until.load(Ordering::Acquire)
    }

    /// Whether ejected at this moment; reads the clock only for an endpoint
    /// that was ever ejected, not on every pick of a healthy one.
    pub fn is_ejected_now(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        until != 0 && self.nanos(Instant::now()) < until
    }

    fn eject(&self, now: Instant, config: &Outlier) -> Option<Instant> {
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        // Another worker's failure may have ejected it since we checked.
        if self.is_ejected(now) {
            return None;
        }
        self.server_errors.store(0, Ordering::Relaxed);
        self.connect_failures.store(0, Ordering::Relaxed);
        history.undo = Some(Undo {
            times: history.times,
            last_until: history.last_until,
            ejected_until: self.ejected_until.load(Ordering::Acquire),
        });
        let max = config.max_ejection;
        if history.last_until.is_some_and(|last| now.saturating_duration_since(last) >= max) {
            history.times = 0;
        }
        history.times = history.times.saturating_add(1);
        let length = config.base_ejection.saturating_mul(history.times).min(max);
        // Only an absurd length overflows the clock; not ejecting is the safe side.
        let until = now.checked_add(length).unwrap_or(now);
        history.last_until = Some(until);
        self.ejected_until.store(self.nanos(until), Ordering::Release);
        Some(until)
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Extends a streak; whether it reached `limit` (never, for a limit of 0).
fn streak(counter: &AtomicU32, limit: u32) -> bool {
    let length = counter.fetch_add(1, Ordering::Relaxed).saturating_add(1);
    limit != 0 && length >= limit
}

fn reset(counter: &AtomicU32) {
    // Read first: most responses succeed, and a store on each would bounce
    // the cache line between workers for nothing.
    if counter.load(Ordering::Relaxed) != 0 {
        counter.store(0, Ordering::Relaxed);
    }
}

/// Whether one more of `total` endpoints may be ejected while `ejected_now`
/// already are.
///
/// The rule: never eject the last endpoint still in (`ejected_now + 1 <
/// total`), since a degraded endpoint serves better than none; then allow it
/// if afterwards at most `max_ejected_percent`% are ejected, or if it would
/// be the only one ejected (as Envoy does, so a low percentage on a small
/// upstream, 10% of 3, still lets one bad endpoint go). A percentage of 0
/// disables ejection. So 1 of 2 may go at any percentage above 0, and 2 of 3
/// need at least 67%.
///
/// Pass as `total` the endpoints that could take traffic otherwise (not
/// those down by health check), so "last" means the last one serving.
pub fn may_eject(ejected_now: usize, total: usize, max_ejected_percent: u32) -> bool {
    let after = ejected_now.saturating_add(1);
    if max_ejected_percent == 0 || after >= total {
        return false;
    }
    ejected_now == 0 || after as u128 * 100 <= total as u128 * u128::from(max_ejected_percent.min(100))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn config() -> Outlier {
        Outlier {
            consecutive_5xx: 5,
            consecutive_connect_failures: 3,
            base_ejection: secs(10),
            max_ejection: secs(35),
            max_ejected_percent: 50,
        }
    }

    /// Records `n` of `outcome` at `now`; the last record's result.
    fn repeat(state: &OutlierState, outcome: Outcome, n: u32, now: Instant) -> Option<Instant> {
        (0..n).map(|_| state.record(outcome, now, &config())).last().flatten()
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_5xx_eject_for_the_base_time() {
        let state = OutlierState::new();
        let now = Instant::now();
        assert_eq!(repeat(&state, Outcome::ServerError, 4, now), None);
        assert!(!state.is_ejected(now));
        assert_eq!(state.record(Outcome::ServerError, now, &config()), Some(now + secs(10)));
        assert!(state.is_ejected(now + secs(9)));
        assert!(!state.is_ejected(now + secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_connect_failures_eject_too() {
        let state = OutlierState::new();
        let now = Instant::now();
        assert_eq!(repeat(&state, Outcome::ConnectFailure, 3, now), Some(now + secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_streaks() {
        let state = OutlierState::new();
        let now = Instant::now();
        repeat(&state, Outcome::ServerError, 4, now);
        repeat(&state, Outcome::ConnectFailure, 2, now);
        state.record(Outcome::Success, now, &config());
        assert_eq!(repeat(&state, Outcome::ServerError, 4, now), None);
        assert_eq!(repeat(&state, Outcome::ConnectFailure, 2, now), None);
        assert!(!state.is_ejected(now));
    }

    #[tokio::test(start_paused = true)]
    async fn a_5xx_ends_a_connect_streak_but_not_the_reverse() {
        let state = OutlierState::new();
        let now = Instant::now();
        repeat(&state, Outcome::ConnectFailure, 2, now);
        state.record(Outcome::ServerError, now, &config());
        assert_eq!(state.record(Outcome::ConnectFailure, now, &config()), None, "the connection had worked");
        repeat(&state, Outcome::ServerError, 3, now);
        assert_eq!(
            state.record(Outcome::ServerError, now, &config()),
            Some(now + secs(10)),
            "5 5xx, connect failures between"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ejections_grow_with_each_one_and_stop_at_the_cap() {
        let state = OutlierState::new();
        let mut now = Instant::now();
        for expected in [10, 20, 30, 35, 35] {
            let until = repeat(&state, Outcome::ConnectFailure, 3, now).unwrap();
            assert_eq!(until - now, secs(expected));
            assert_eq!(state.record(Outcome::ConnectFailure, now, &config()), None, "ignored while ejected");
            now = until;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_count_starts_over_after_max_ejection_in_service() {
        let state = OutlierState::new();
        let now = Instant::now();
        let first = repeat(&state, Outcome::ConnectFailure, 3, now).unwrap();
        let second = repeat(&state, Outcome::ConnectFailure, 3, first + secs(34)).unwrap();
        assert_eq!(second - (first + secs(34)), secs(20), "34 s in is not long enough");
        let later = second + secs(35);
        assert_eq!(repeat(&state, Outcome::ConnectFailure, 3, later), Some(later + secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_ejection_leaves_no_trace_but_spends_the_streak() {
        let state = OutlierState::new();
        let now = Instant::now();
        let first = repeat(&state, Outcome::ServerError, 5, now).unwrap();
        let later = first + secs(1);
        assert!(repeat(&state, Outcome::ServerError, 5, later).is_some());
        state.cancel_ejection();
        assert!(!state.is_ejected(later));
        assert_eq!(repeat(&state, Outcome::ServerError, 4, later), None, "a whole new streak is needed");
        assert_eq!(
            state.record(Outcome::ServerError, later, &config()),
            Some(later + secs(20)),
            "the cancelled one did not count: this is the second ejection"
        );
        state.cancel_ejection();
        state.cancel_ejection();
        assert!(!state.is_ejected(later));
        assert!(state.is_ejected(first - secs(1)), "the second cancel did not reach the first ejection");
        assert_eq!(repeat(&state, Outcome::ServerError, 5, later), Some(later + secs(20)));
    }

    #[test]
    fn zero_thresholds_disable_a_signal() {
        let state = OutlierState::new();
        let now = Instant::now();
        let config = Outlier { consecutive_5xx: 0, ..config() };
        assert!((0..100).all(|_| state.record(Outcome::ServerError, now, &config).is_none()));
        assert!((0..3).filter_map(|_| state.record(Outcome::ConnectFailure, now, &config)).next().is_some());
    }

    #[test]
    fn the_percent_rule_never_ejects_the_last_endpoint() {
        for percent in [0, 10, 50, 100] {
            assert!(!may_eject(0, 0, percent));
            assert!(!may_eject(0, 1, percent));
            assert!(!may_eject(1, 2, percent));
            assert!(!may_eject(9, 10, percent));
        }
    }

    #[test]
    fn the_percent_rule_allows_one_of_two_or_more() {
        assert!(may_eject(0, 2, 50));
        assert!(may_eject(0, 2, 1));
        assert!(may_eject(0, 3, 10), "at least one, as in Envoy");
        assert!(!may_eject(0, 2, 0), "0% disables ejection");
    }

    #[test]
    fn the_percent_rule_caps_the_share_ejected() {
        assert!(may_eject(4, 10, 50), "5 of 10 is 50%");
        assert!(!may_eject(5, 10, 50), "6 of 10 is 60%");
        assert!(!may_eject(1, 3, 50), "2 of 3 is 67%");
        assert!(may_eject(1, 3, 67));
        assert!(may_eject(1, 3, 100));
        assert!(!may_eject(2, 3, 100));
        assert!(may_eject(1, 10, 20));
        assert!(!may_eject(2, 10, 20));
        assert!(!may_eject(2, 3, 250), "a percentage above 100 still keeps one in");
    }

    #[test]
    fn shared_across_workers() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<OutlierState>();
    }
}
