//! Circuit breaker: stops the proxy sending to an endpoint (or a whole
//! upstream) that keeps failing, so requests fail fast with 503 instead of
//! piling onto it, then lets a few probes through to learn when it is back.
//!
//! The closed state is the request path and takes no lock: acquiring is one
//! atomic load, recording an outcome one compare-and-swap into a time-bucketed
//! window. A mutex guards only the transitions and the half-open probe count.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use self::window::Window;
use crate::config::BreakerConfig;

/// Shared with the retry budget, which counts requests the same way.
pub(super) mod window;

/// Its discriminant is the `breaker_state` gauge's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl BreakerState {
    pub const ALL: [Self; 3] = [Self::Closed, Self::Open, Self::HalfOpen];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }

    fn code(self) -> u64 {
        self as u64
    }

    fn from_code(code: u64) -> Self {
        match code {
            1 => Self::Open,
            2 => Self::HalfOpen,
            _ => Self::Closed,
        }
    }
}

/// A state change, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

/// Permission to send one request, handed back with its outcome to
/// [`Breaker::record`] on the breaker that issued it.
///
/// Dropping a ticket without recording (the client went away, the request
/// future was cancelled) reports nothing: a half-open probe's slot is
/// released for another request, and the breaker's state is untouched,
/// because a cancellation says nothing about the upstream. A timeout is an
/// outcome: record it as a failure.
#[must_use = "record the outcome with Breaker::record"]
pub struct Ticket {
    /// Outcomes only count in the state period they were acquired in: a slow
    /// answer to a request sent before the breaker opened must not close it.
    generation: u64,
    /// Set for half-open probes, to give the slot back if dropped.
    probe: Option<Arc<Inner>>,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket").field("generation", &self.generation).field("probe", &self.probe.is_some()).finish()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(inner) = self.probe.take() {
            inner.release_probe(self.generation);
        }
    }
}

/// One circuit breaker; cheap to share between workers.
#[derive(Debug)]
pub struct Breaker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: BreakerConfig,
    origin: Instant,
    /// `generation << 2 | state`, one word so a reader never pairs a state
    /// with another period's generation. Written only with `slow` held.
    status: AtomicU64,
    /// End of the open period, in nanoseconds since `origin`.
    open_until: AtomicU64,
    consecutive_failures: AtomicU32,
    window: Window,
    slow: Mutex<Slow>,
}

#[derive(Debug)]
struct Slow {
    /// Length of the current (or last) open period, the base for doubling.
    open_for: Duration,
    probes_in_flight: u32,
    probes_passed: u32,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        let origin = Instant::now();
        Self {
            inner: Arc::new(Inner {
                config,
                origin,
                status: AtomicU64::new(pack(0, BreakerState::Closed)),
                open_until: AtomicU64::new(0),
                consecutive_failures: AtomicU32::new(0),
                window: Window::new(config.window, origin),
                slow: Mutex::new(Slow { open_for: config.open_for, probes_in_flight: 0, probes_passed: 0 }),
            }),
        }
    }

    /// Ask to send a request. Closed: always `Ok`. Open: `Err(retry_after)`
    /// until `open_for` has elapsed; then the breaker turns half-open and lets
    /// up to `half_open_probes` requests through at once. Other requests while
    /// half-open get `Err(open_for)`: the probes decide soon, and `open_for`
    /// is the configured scale of "soon".
    pub fn try_acquire(&self) -> Result<Ticket, Duration> {
        let now = Instant::now();
        let (generation, state) = unpack(self.inner.status.load(Ordering::Acquire));
        match state {
            BreakerState::Closed => Ok(Ticket { generation, probe: None }),
            BreakerState::Open => match self.inner.open_remaining(now) {
                Some(left) => Err(left),
                None => self.acquire_slow(now),
            },
            BreakerState::HalfOpen => self.acquire_slow(now),
        }
    }

    /// Report the outcome of an acquired request; returns the transition it
    /// caused, if any.
    pub fn record(&self, mut ticket: Ticket, success: bool) -> Option<Transition> {
        // Taken so the drop does not release the slot: the outcome settles it.
        let probe = ticket.probe.take().is_some();
        let now = Instant::now();
        let (generation, state) = unpack(self.inner.status.load(Ordering::Acquire));
        if ticket.generation != generation {
            return None;
        }
        match state {
            BreakerState::Closed => self.record_closed(generation, success, now),
            BreakerState::HalfOpen if probe => self.record_probe(generation, success, now),
            _ => None,
        }
    }

    /// The state a request would meet now. An open breaker whose time is up
    /// reads as half-open before any request has turned it: a balancer that
    /// skipped "open" endpoints would otherwise never send the probe that
    /// moves it on.
    pub fn state(&self) -> BreakerState {
        let (_, state) = unpack(self.inner.status.load(Ordering::Acquire));
        if state == BreakerState::Open && self.inner.open_remaining(Instant::now()).is_none() {
            return BreakerState::HalfOpen;
        }
        state
    }

    fn acquire_slow(&self, now: Instant) -> Result<Ticket, Duration> {
        let inner = &self.inner;
        let mut slow = inner.lock();
        let (mut generation, state) = unpack(inner.status.load(Ordering::Acquire));
        match state {
            BreakerState::Closed => return Ok(Ticket { generation, probe: None }),
            BreakerState::Open => {
                if let Some(left) = inner.open_remaining(now) {
                    return Err(left);
                }
                slow.probes_in_flight = 0;
                slow.probes_passed = 0;
                generation += 1;
                inner.publish(generation, BreakerState::HalfOpen);
            }
            BreakerState::HalfOpen => {}
        }
        if slow.probes_in_flight + slow.probes_passed >= inner.config.half_open_probes.max(1) {
            return Err(inner.config.open_for);
        }
        slow.probes_in_flight += 1;
        Ok(Ticket { generation, probe: Some(Arc::clone(inner)) })
    }

    fn record_closed(&self, generation: u64, success: bool, now: Instant) -> Option<Transition> {
        let inner = &self.inner;
        inner.window.add(now, u32::from(success), u32::from(!success));
        if success {
            // Read first: a store on every success would bounce the cache line
            // between workers for nothing.
            if inner.consecutive_failures.load(Ordering::Relaxed) != 0 {
                inner.consecutive_failures.store(0, Ordering::Relaxed);
            }
            return None;
        }
        let streak = inner.consecutive_failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let by_streak = inner.config.consecutive_failures.is_some_and(|limit| streak >= limit);
        if !by_streak && !inner.ratio_exceeded(now) {
            return None;
        }
        let mut slow = inner.lock();
        if inner.status.load(Ordering::Acquire) != pack(generation, BreakerState::Closed) {
            return None;
        }
        inner.open(&mut slow, generation + 1, now, inner.config.open_for);
        Some(Transition { from: BreakerState::Closed, to: BreakerState::Open })
    }

    fn record_probe(&self, generation: u64, success: bool, now: Instant) -> Option<Transition> {
        let inner = &self.inner;
        let mut slow = inner.lock();
        if inner.status.load(Ordering::Acquire) != pack(generation, BreakerState::HalfOpen) {
            return None;
        }
        slow.probes_in_flight = slow.probes_in_flight.saturating_sub(1);
        if !success {
            let longer = slow.open_for.saturating_mul(2).min(inner.config.max_open_for).max(inner.config.open_for);
            inner.open(&mut slow, generation + 1, now, longer);
            return Some(Transition { from: BreakerState::HalfOpen, to: BreakerState::Open });
        }
        slow.probes_passed += 1;
        if slow.probes_passed < inner.config.half_open_probes.max(1) {
            return None;
        }
        // A fresh start: failures from before the outage must not reopen it.
        inner.window.clear();
        inner.consecutive_failures.store(0, Ordering::Relaxed);
        slow.open_for = inner.config.open_for;
        inner.publish(generation + 1, BreakerState::Closed);
        Some(Transition { from: BreakerState::HalfOpen, to: BreakerState::Closed })
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Slow> {
        self.slow.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Time left in the open period, `None` once it is over.
    fn open_remaining(&self, now: Instant) -> Option<Duration> {
        let (now, until) = (self.nanos(now), self.open_until.load(Ordering::Acquire));
        (now < until).then(|| Duration::from_nanos(until - now))
    }

    fn ratio_exceeded(&self, now: Instant) -> bool {
        let (successes, failures) = self.window.sum(now);
        let total = successes + failures;
        total >= u64::from(self.config.min_requests.max(1))
            && failures as f64 >= self.config.failure_ratio * total as f64
    }

    fn open(&self, slow: &mut Slow, generation: u64, now: Instant, length: Duration) {
        slow.open_for = length;
        let length = u64::try_from(length.as_nanos()).unwrap_or(u64::MAX);
        // Before the status, so whoever sees "open" also sees its deadline.
        self.open_until.store(self.nanos(now).saturating_add(length), Ordering::Release);
        self.publish(generation, BreakerState::Open);
    }

    fn publish(&self, generation: u64, state: BreakerState) {
        self.status.store(pack(generation, state), Ordering::Release);
    }

    fn release_probe(&self, generation: u64) {
        let mut slow = self.lock();
        if self.status.load(Ordering::Acquire) == pack(generation, BreakerState::HalfOpen) {
            slow.probes_in_flight = slow.probes_in_flight.saturating_sub(1);
        }
    }
}

fn pack(generation: u64, state: BreakerState) -> u64 {
    generation << 2 | state.code()
}

fn unpack(word: u64) -> (u64, BreakerState) {
    (word >> 2, BreakerState::from_code(word & 3))
}

#[cfg(test)]
mod tests {
    use tokio::time::advance;

    use super::*;

    const CLOSED_TO_OPEN: Option<Transition> = Some(Transition { from: BreakerState::Closed, to: BreakerState::Open });
    const HALF_TO_OPEN: Option<Transition> = Some(Transition { from: BreakerState::HalfOpen, to: BreakerState::Open });
    const HALF_TO_CLOSED: Option<Transition> =
        Some(Transition { from: BreakerState::HalfOpen, to: BreakerState::Closed });

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: Some(3),
            failure_ratio: 0.5,
            min_requests: 10,
            window: secs(10),
            open_for: secs(5),
            max_open_for: secs(20),
            half_open_probes: 2,
        }
    }

    /// Only the failure ratio can open it.
    fn ratio_only() -> BreakerConfig {
        BreakerConfig { consecutive_failures: None, ..config() }
    }

    fn outcome(b: &Breaker, success: bool) -> Option<Transition> {
        let ticket = b.try_acquire().unwrap();
        b.record(ticket, success)
    }

    fn fail(b: &Breaker) -> Option<Transition> {
        outcome(b, false)
    }

    fn pass(b: &Breaker) -> Option<Transition> {
        outcome(b, true)
    }

    /// Opens `b` by consecutive failures.
    fn trip(b: &Breaker) {
        assert_eq!((fail(b), fail(b), fail(b)), (None, None, CLOSED_TO_OPEN));
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures() {
        let b = Breaker::new(config());
        assert_eq!((fail(&b), fail(&b), pass(&b)), (None, None, None), "a success ends the streak");
        assert_eq!((fail(&b), fail(&b)), (None, None));
        assert_eq!(fail(&b), CLOSED_TO_OPEN);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.try_acquire().unwrap_err(), secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_the_failure_ratio_once_the_window_has_enough_requests() {
        let b = Breaker::new(ratio_only());
        for _ in 0..4 {
            assert_eq!(pass(&b), None);
        }
        for _ in 0..5 {
            assert_eq!(fail(&b), None, "9 requests are below min_requests");
        }
        assert_eq!(fail(&b), CLOSED_TO_OPEN, "6 of 10 failed");

        let b = Breaker::new(ratio_only());
        for _ in 0..10 {
            assert_eq!(pass(&b), None);
        }
        for _ in 0..9 {
            assert_eq!(fail(&b), None, "9 of 19 is below half");
        }
        assert_eq!(fail(&b), CLOSED_TO_OPEN, "10 of 20 is half");
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_forgets_old_failures() {
        let b = Breaker::new(ratio_only());
        for _ in 0..9 {
            assert_eq!(fail(&b), None);
        }
        advance(secs(11)).await;
        for _ in 0..9 {
            assert_eq!(fail(&b), None, "the first nine have left the window");
        }
        // Within the window they still count.
        let b = Breaker::new(ratio_only());
        for _ in 0..9 {
            assert_eq!(fail(&b), None);
        }
        advance(secs(5)).await;
        assert_eq!(fail(&b), CLOSED_TO_OPEN);
    }

    #[tokio::test(start_paused = true)]
    async fn open_rejects_until_open_for_has_passed_then_turns_half_open() {
        let b = Breaker::new(config());
        trip(&b);
        advance(secs(2)).await;
        assert_eq!(b.try_acquire().unwrap_err(), secs(3));
        assert_eq!(b.state(), BreakerState::Open);
        advance(secs(3)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen, "reads half-open before a request arrives");
        let probe = b.try_acquire().unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        drop(probe);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_through_only_the_probe_limit() {
        let b = Breaker::new(config());
        trip(&b);
        advance(secs(5)).await;
        let (one, two) = (b.try_acquire().unwrap(), b.try_acquire().unwrap());
        assert_eq!(b.try_acquire().unwrap_err(), secs(5));
        assert_eq!(b.record(one, true), None, "one of two probes passed");
        assert!(b.try_acquire().is_err(), "a passed probe still uses its slot");
        assert_eq!(b.record(two, true), HALF_TO_CLOSED);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_clears_the_window() {
        let b = Breaker::new(ratio_only());
        for _ in 0..10 {
            fail(&b);
        }
        assert_eq!(b.state(), BreakerState::Open);
        advance(secs(5)).await;
        assert_eq!((pass(&b), pass(&b)), (None, HALF_TO_CLOSED));
        // Ten failures 5 s ago would still be in the window: 10 of 11.
        assert_eq!(fail(&b), None);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_twice_as_long_up_to_the_cap() {
        let b = Breaker::new(config());
        trip(&b);
        for expected in [10, 20, 20] {
            advance(b.try_acquire().unwrap_err()).await;
            assert_eq!(fail(&b), HALF_TO_OPEN);
            assert_eq!(b.try_acquire().unwrap_err(), secs(expected));
        }
        advance(secs(20)).await;
        assert_eq!((pass(&b), pass(&b)), (None, HALF_TO_CLOSED));
        trip(&b);
        assert_eq!(b.try_acquire().unwrap_err(), secs(5), "back to open_for once it closed");
    }

    #[tokio::test(start_paused = true)]
    async fn any_failed_probe_reopens_even_after_others_passed() {
        let b = Breaker::new(config());
        trip(&b);
        advance(secs(5)).await;
        let (one, two) = (b.try_acquire().unwrap(), b.try_acquire().unwrap());
        assert_eq!(b.record(one, true), None);
        assert_eq!(b.record(two, false), HALF_TO_OPEN);
        assert_eq!(b.try_acquire().unwrap_err(), secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_gives_its_slot_back_without_an_outcome() {
        let b = Breaker::new(config());
        trip(&b);
        advance(secs(5)).await;
        let (one, two) = (b.try_acquire().unwrap(), b.try_acquire().unwrap());
        assert!(b.try_acquire().is_err());
        drop(one);
        assert_eq!(b.state(), BreakerState::HalfOpen, "a cancellation is not a failure");
        let three = b.try_acquire().unwrap();
        assert_eq!(b.record(two, true), None);
        assert_eq!(b.record(three, true), HALF_TO_CLOSED);
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_from_an_earlier_period_are_ignored() {
        let b = Breaker::new(config());
        let early = b.try_acquire().unwrap();
        let late = b.try_acquire().unwrap();
        trip(&b);
        assert_eq!(b.record(early, true), None, "a success sent before the outage");
        assert_eq!(b.state(), BreakerState::Open);
        advance(secs(5)).await;
        let probe = b.try_acquire().unwrap();
        assert_eq!(b.record(late, false), None, "not a probe: no reopening");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        drop(probe);
        // A probe from a half-open period that has ended changes nothing.
        let (one, two) = (b.try_acquire().unwrap(), b.try_acquire().unwrap());
        assert_eq!(b.record(one, false), HALF_TO_OPEN);
        assert_eq!(b.record(two, true), None);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn states_have_stable_names() {
        let names = [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen].map(BreakerState::as_str);
        assert_eq!(names, ["closed", "open", "half-open"]);
    }

    #[test]
    fn shared_across_workers() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Breaker>();
        send_sync::<Ticket>();
    }
}
