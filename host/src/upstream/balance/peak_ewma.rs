//! Latency measurement for the peak-EWMA balancer: one estimate per
//! endpoint, fed by every response and read by every pick that considers the
//! endpoint (as `Candidate::latency_cost` in the balancer).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// An endpoint's peak-EWMA round-trip time, the latency behind
/// `Candidate::latency_cost`.
///
/// Each observation sets the cost to `max(rtt, previous × k + rtt × (1 − k))`
/// with `k = e^(−Δt/decay)`, Δt being the time since the previous
/// observation: a slower answer shows at once (the "peak"), faster ones pull
/// the cost down over `decay` of wall time however busy the endpoint is.
/// Read between observations, the cost decays toward zero as
/// `e^(−idle/decay)` (as in Finagle and Linkerd): an endpoint that was slow
/// once and then got no traffic becomes worth trying again instead of being
/// shunned forever. Reads do not change the state, so the cost does not
/// depend on how often the balancer looks.
///
/// A mutex rather than atomics: the value and its timestamp change together,
/// the section is a few float operations, and each endpoint has its own.
#[derive(Debug)]
pub struct PeakEwma {
    decay_nanos: f64,
    estimate: Mutex<Estimate>,
}

#[derive(Debug, Clone, Copy)]
struct Estimate {
    seconds: f64,
    at: Option<Instant>,
}

impl PeakEwma {
    pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

    pub fn new(decay: Duration) -> Self {
        Self {
            decay_nanos: (decay.as_nanos() as f64).max(1.0),
            estimate: Mutex::new(Estimate { seconds: 0.0, at: None }),
        }
    }

    pub fn observe(&self, rtt: Duration) {
        self.observe_at(rtt, Instant::now());
    }

    /// [`observe`](Self::observe) for a caller that already read the clock.
    pub fn observe_at(&self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_secs_f64();
        let mut estimate = self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = estimate.at.map_or(0.0, |at| self.weight_kept(at, now));
        estimate.seconds = rtt.max(estimate.seconds * kept + rtt * (1.0 - kept));
        estimate.at = Some(now);
    }

    /// Latency in seconds as of `now`; 0.0 before the first observation.
    pub fn cost(&self, now: Instant) -> f64 {
        let estimate = *self.estimate.lock().unwrap_or_else(PoisonError::into_inner);
        estimate.at.map_or(0.0, |at| estimate.seconds * self.weight_kept(at, now))
    }

    fn weight_kept(&self, since: Instant, now: Instant) -> f64 {
        (-(now.saturating_duration_since(since).as_nanos() as f64) / self.decay_nanos).exp()
    }
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self::new(Self::DEFAULT_DECAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_peak_shows_at_once_and_an_idle_cost_decays() {
        let ewma = PeakEwma::default();
        assert_eq!(ewma.cost(Instant::now()), 0.0, "unknown until observed");
        ewma.observe(Duration::from_millis(100));
        assert!((ewma.cost(Instant::now()) - 0.1).abs() < 1e-9);
        ewma.observe(Duration::from_secs(1));
        assert!((ewma.cost(Instant::now()) - 1.0).abs() < 1e-9, "a peak replaces the estimate at once");
        tokio::time::advance(Duration::from_secs(10)).await;
        let idle = ewma.cost(Instant::now());
        assert!((idle - (-1f64).exp()).abs() < 1e-9, "one decay window idle: {idle}");
        assert!((ewma.cost(Instant::now()) - idle).abs() < 1e-12, "reading does not change it");
    }

    #[tokio::test(start_paused = true)]
    async fn faster_answers_pull_the_cost_down_over_the_decay_window() {
        let ewma = PeakEwma::new(Duration::from_secs(5));
        ewma.observe(Duration::from_secs(2));
        tokio::time::advance(Duration::from_millis(100)).await;
        ewma.observe(Duration::from_millis(50));
        let soon = ewma.cost(Instant::now());
        assert!(soon > 1.9, "one quick answer does not erase a peak: {soon}");
        for _ in 0..300 {
            tokio::time::advance(Duration::from_millis(100)).await;
            ewma.observe(Duration::from_millis(50));
        }
        let settled = ewma.cost(Instant::now());
        assert!((settled - 0.05).abs() < 0.01, "after six decay windows: {settled}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_observation_after_a_gap_is_credited_with_the_gap() {
        let ewma = PeakEwma::default();
        ewma.observe(Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(10)).await;
        ewma.observe(Duration::from_millis(100));
        let k = (-1f64).exp();
        let expected = k + 0.1 * (1.0 - k);
        assert!((ewma.cost(Instant::now()) - expected).abs() < 1e-9);
    }

    struct Live(PeakEwma);

    impl super::super::Candidate for Live {
        fn weight(&self) -> u32 {
            1
        }
        fn available(&self) -> bool {
            true
        }
        fn in_flight(&self) -> u32 {
            0
        }
        fn latency_cost(&self) -> f64 {
            self.0.cost(Instant::now())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_balancer_leaves_a_spiking_endpoint_and_retries_it_once_the_spike_fades() {
        use super::super::Balancer;
        use crate::config::Balance;

        let b = Balancer::new(Balance::PeakEwma, &[1, 1], &["a", "b"]);
        let endpoints = [Live(PeakEwma::default()), Live(PeakEwma::default())];
        endpoints[0].0.observe(Duration::from_secs(1));
        endpoints[1].0.observe(Duration::from_millis(10));
        for second in 1..=50 {
            for _ in 0..10 {
                tokio::time::advance(Duration::from_millis(100)).await;
                endpoints[1].0.observe(Duration::from_millis(10));
            }
            let picked = b.pick(&endpoints, None, &[]);
            // 1 s × e^(−t/10 s) falls under 10 ms after ln(100) × 10 s ≈ 46 s.
            assert_eq!(picked, Some(usize::from(second <= 46)), "at {second} s");
        }
    }

    #[test]
    fn shared_across_workers() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<PeakEwma>();
    }
}
