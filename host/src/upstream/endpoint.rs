//! One upstream endpoint and what the gateway knows about it: active health,
//! passive outlier ejection, its circuit breaker, load in flight and latency.
//! Shared by every worker (atomics and short locks), and carried over when a
//! DNS re-resolution returns the same address, so its history survives.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::balance::{Candidate, PeakEwma};
use super::breaker::Breaker;
use super::outlier::{Outcome, OutlierState};
use crate::config::{BreakerConfig, Outlier};
use crate::telemetry::EndpointSeries;

#[derive(Debug)]
pub struct Endpoint {
    /// `host:port`, as configured or resolved.
    pub address: Arc<str>,
    pub weight: u32,
    /// Its SRV record's priority (0 for any other endpoint): an endpoint is
    /// picked only while none of a lower priority can be
    /// ([`super::EndpointSet`]).
    pub priority: u16,
    /// Active health: false after `unhealthy_threshold` failed checks.
    healthy: AtomicBool,
    /// Consecutive check results, for the thresholds (only the health task writes).
    streak: Mutex<(u32, u32)>,
    outlier: OutlierState,
    pub breaker: Option<Breaker>,
    in_flight: AtomicU32,
    ewma: PeakEwma,
    /// Its series, shared with every endpoint object of its address
    /// ([`crate::telemetry::Metrics::endpoint_series`]).
    pub series: Arc<EndpointSeries>,
}

impl Endpoint {
    pub fn new(address: Arc<str>, weight: u32, breaker: Option<BreakerConfig>, series: Arc<EndpointSeries>) -> Self {
        Self {
            address,
            weight: weight.max(1),
            priority: 0,
            healthy: AtomicBool::new(true),
            streak: Mutex::new((0, 0)),
            outlier: OutlierState::new(),
            breaker: breaker.map(Breaker::new),
            in_flight: AtomicU32::new(0),
            ewma: PeakEwma::default(),
            series,
        }
    }

    /// At SRV priority `priority`.
    pub fn at_priority(self, priority: u16) -> Self {
        Self { priority, ..self }
    }

    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn ejected(&self) -> bool {
        self.outlier.is_ejected_now()
    }

    /// Whether it would take traffic if outlier detection had not ejected
    /// it: its health check passes and its breaker is not open.
    pub fn serving_but_for_ejection(&self) -> bool {
        self.healthy() && self.breaker.as_ref().is_none_or(|b| b.state() != super::breaker::BreakerState::Open)
    }

    /// Records an active check; returns the new health when it flipped.
    pub fn record_check(&self, ok: bool, healthy_threshold: u32, unhealthy_threshold: u32) -> Option<bool> {
        let mut streak = self.streak.lock().unwrap_or_else(PoisonError::into_inner);
        let (ok_run, fail_run) = &mut *streak;
        if ok {
            *ok_run += 1;
            *fail_run = 0;
        } else {
            *fail_run += 1;
            *ok_run = 0;
        }
        let was = self.healthy();
        let now = if was { *fail_run < unhealthy_threshold } else { *ok_run >= healthy_threshold };
        (now != was).then(|| {
            self.healthy.store(now, Ordering::Relaxed);
            now
        })
    }

    /// Records a request's outcome for outlier detection. Returns the
    /// ejection deadline when this outcome ejects the endpoint; `may_eject`
    /// is asked first, so an upstream never ejects too many endpoints.
    pub fn record_outcome(
        &self,
        outcome: Outcome,
        config: &Outlier,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Duration> {
        let now = Instant::now();
        let until = self.outlier.record(outcome, now, config)?;
        if !may_eject() {
            self.outlier.cancel_ejection();
            return None;
        }
        Some(until.saturating_duration_since(now))
    }

    /// A request to this endpoint, started at `now` (the caller has read
    /// the clock already).
    pub fn start_request(&self, now: Instant) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { endpoint: self, start: now }
    }
}

/// A request in flight to an endpoint; records its latency when finished.
#[derive(Debug)]
pub struct InFlight<'a> {
    endpoint: &'a Endpoint,
    start: Instant,
}

impl InFlight<'_> {
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Ends the request; `observed` feeds the latency average (false for
    /// failures that say nothing about the endpoint's speed).
    pub fn finish(self, observed: bool) -> Duration {
        self.finish_at(Instant::now(), observed)
    }

    /// [`finish_at`](Self::finish_at) for the latency, with the request
    /// still counted in flight until the [`Outstanding`] returned is
    /// dropped (when its response body ends): a long stream is load.
    pub fn finish_held(self, now: Instant, observed: bool, endpoint: &Arc<Endpoint>) -> (Duration, Outstanding) {
        debug_assert!(std::ptr::eq(self.endpoint, &**endpoint));
        let elapsed = self.observe(now, observed);
        // The count is handed over, not taken and given again.
        std::mem::forget(self);
        (elapsed, Outstanding(endpoint.clone()))
    }

    /// The latency until `now`, fed to the average when `observed`.
    fn observe(&self, now: Instant, observed: bool) -> Duration {
        let elapsed = now.saturating_duration_since(self.start);
        if observed {
            self.endpoint.ewma.observe_at(elapsed, now);
        }
        elapsed
    }

    /// Ends a try that failed (no answer in time, no connection, a reset):
    /// when `observed`, the latency average takes it as at least `penalty`
    /// (the try's timeout). Unobserved, an endpoint that stopped answering
    /// would look ever faster as its last answers aged, and a latency
    /// balancer would send it more.
    pub fn finish_failed(self, observed: bool, penalty: Duration) -> Duration {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.start);
        if observed {
            self.endpoint.ewma.observe_at(elapsed.max(penalty), now);
        }
        elapsed
    }

    /// [`finish`](Self::finish) at `now`, for a caller that already read the
    /// clock.
    pub fn finish_at(self, now: Instant, observed: bool) -> Duration {
        self.observe(now, observed)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request whose response head has come, still counted in flight at its
/// endpoint until dropped ([`InFlight::finish_held`]).
#[derive(Debug)]
pub struct Outstanding(Arc<Endpoint>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Candidate for Arc<Endpoint> {
    fn weight(&self) -> u32 {
        self.weight
    }

    fn available(&self) -> bool {
        self.serving_but_for_ejection() && !self.ejected()
    }

    fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn latency_cost(&self) -> f64 {
        self.ewma.cost(Instant::now())
    }
}

/// An endpoint as one request's pick sees it, its availability decided for
/// that request: every endpoint while none of its upstream's passes its
/// health checks (`health.all_down = "try-all"`), or only those of the
/// lowest SRV priority that has one to offer.
#[derive(Debug)]
pub struct Decided<'a>(pub &'a Arc<Endpoint>, pub bool);

impl Candidate for Decided<'_> {
    fn weight(&self) -> u32 {
        self.0.weight()
    }

    fn available(&self) -> bool {
        self.1
    }

    fn in_flight(&self) -> u32 {
        self.0.in_flight()
    }

    fn latency_cost(&self) -> f64 {
        self.0.latency_cost()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A try that failed weighs in a latency balancer as slow as its
    /// penalty (the try's timeout): unobserved, an endpoint that stopped
    /// answering looked ever faster as its last answers aged.
    #[test]
    fn a_failed_try_weighs_as_at_least_its_penalty() {
        let ep = Endpoint::new("a:1".into(), 1, None, Arc::default());
        ep.start_request(Instant::now()).finish_failed(true, Duration::from_secs(2));
        assert!(ep.ewma.cost(Instant::now()) > 1.9, "{}", ep.ewma.cost(Instant::now()));
        assert_eq!(ep.in_flight.load(Ordering::Relaxed), 0);
        // Not observed (another balancer): nothing recorded.
        let ep = Endpoint::new("b:1".into(), 1, None, Arc::default());
        ep.start_request(Instant::now()).finish_failed(false, Duration::from_secs(2));
        assert_eq!(ep.ewma.cost(Instant::now()), 0.0);
    }
}
