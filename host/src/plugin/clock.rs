//! The plugins' clock: the thread that advances the engine's epoch, at whose
//! ticks every running guest's deadline is checked.
//!
//! A guest's deadline is a time (its call's start plus the plugin's
//! `deadline`, `host_api::arm`); each tick that finds a
//! guest running compares it with the clock and interrupts the guest once
//! it has passed. The tick sets only how soon after its deadline a guest
//! is stopped: a tenth of the shortest deadline of the plugins loaded,
//! between [`MIN_TICK`] and [`MAX_TICK`] ([`Clock::resolve`]; a reload
//! that drops the plugin needing the finest tick coarsens it again). Each tick
//! wakes a thread, which cost the worker it preempts ~0.5 µs a request
//! under load at 1 ms (docs/performance.md); the default 100 ms deadline
//! ticks every 10 ms.
//!
//! It ticks while a guest call is in flight and sleeps
//! (parked, no wake-ups) once a tick has passed with no call in flight and
//! none begun: an idle gateway with plugins loaded costs no CPU for its
//! clock, and a busy one ticks as before. A call announces itself with
//! [`Clock::enter`], which wakes a sleeping ticker before the guest runs;
//! the deadline is a safety property, so the wake-up cannot be missed:
//!
//! * the ticker marks itself `parked`, then reads the in-flight counts, and
//!   sleeps only if all are zero;
//! * a call raises its count, then reads `parked`, and wakes the ticker if
//!   it is set.
//!
//! Both sides write, then read the other's word, all sequentially
//! consistent: either the ticker sees the call (and does not sleep) or the
//! call sees the mark (and wakes it; a wake-up before the sleep is kept by
//! [`std::thread::park`]'s token). The counts are per thread slot, each on
//! its own cache line, so workers calling guests at once do not contend
//! for one counter.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use wasmtime::EngineWeak;

/// The finest tick: for deadlines of 10 ms and less.
pub const MIN_TICK: Duration = Duration::from_millis(1);
/// The coarsest tick: for deadlines of 100 ms and more.
pub const MAX_TICK: Duration = Duration::from_millis(10);

/// Slots for in-flight counts; threads beyond this many share them (which is
/// correct, only no longer free of contention).
const SLOTS: usize = 16;

/// One thread slot's count of guest calls in flight, alone on its cache
/// line, and whether a call began there since the ticker last looked.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Slot {
    in_flight: AtomicUsize,
    began: AtomicBool,
}

/// The epoch clock of one engine.
#[derive(Debug)]
pub struct Clock {
    slots: [Slot; SLOTS],
    /// The tick in nanoseconds: the finest of `needed`, else [`MAX_TICK`].
    tick: AtomicU64,
    /// The ticks the plugins loaded need (nanoseconds), each with how many
    /// [`Resolution`]s hold it.
    needed: Mutex<BTreeMap<u64, usize>>,
    /// Where the tick is reported (`/metrics`), once given.
    reported: OnceLock<Gauge<f64, AtomicU64>>,
    /// Set by the ticker just before it sleeps.
    parked: AtomicBool,
    stop: AtomicBool,
    /// The ticker's thread, once started.
    ticker: OnceLock<Thread>,
    starting: Mutex<()>,
}

/// A loaded plugin's need of a tick ([`Clock::resolve`]), until dropped
/// with the route that configured it.
#[derive(Debug)]
pub struct Resolution {
    clock: Arc<Clock>,
    tick: u64,
}

impl Drop for Resolution {
    fn drop(&mut self) {
        self.clock.adjust(|needed| {
            if let Some(count) = needed.get_mut(&self.tick) {
                *count -= 1;
                if *count == 0 {
                    needed.remove(&self.tick);
                }
            }
        });
    }
}

/// A guest call in flight: the clock keeps ticking until it is dropped.
#[derive(Debug)]
#[must_use = "the clock ticks only while this is held"]
pub struct Running<'a> {
    count: &'a AtomicUsize,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Release);
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self {
            slots: Default::default(),
            tick: AtomicU64::new(nanos(MAX_TICK)),
            needed: Mutex::default(),
            reported: OnceLock::new(),
            parked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            ticker: OnceLock::new(),
            starting: Mutex::new(()),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Clock {
    /// Ticks often enough for `deadline` while the returned [`Resolution`]
    /// is held: a tenth of it, within [`MIN_TICK`]..=[`MAX_TICK`]. The
    /// clock ticks at the finest resolution held; a deadline is a time, so
    /// a finer tick than a plugin needs only stops its guests sooner after
    /// it.
    pub fn resolve(self: &Arc<Self>, deadline: Duration) -> Resolution {
        let tick = nanos((deadline / 10).clamp(MIN_TICK, MAX_TICK));
        self.adjust(|needed| *needed.entry(tick).or_default() += 1);
        Resolution { clock: self.clone(), tick }
    }

    /// Changes the ticks needed and sets the tick to the finest of them.
    fn adjust(&self, change: impl FnOnce(&mut BTreeMap<u64, usize>)) {
        let mut needed = self.needed.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut needed);
        let finest = needed.keys().next().copied().unwrap_or(nanos(MAX_TICK));
        self.tick.store(finest, Ordering::Relaxed);
        if let Some(gauge) = self.reported.get() {
            gauge.set(Duration::from_nanos(finest).as_secs_f64());
        }
    }

    /// Keeps `gauge` at the tick from now on (the first gauge given).
    pub fn report(&self, gauge: Gauge<f64, AtomicU64>) {
        if self.reported.set(gauge).is_ok() {
            // Under the lock, as `adjust` sets it: the two cannot interleave.
            self.adjust(|_| {});
        }
    }

    /// The current tick.
    pub fn tick_period(&self) -> Duration {
        Duration::from_nanos(self.tick.load(Ordering::Relaxed))
    }

    /// Starts the ticker for `engine`, once: before the first component, so
    /// before any guest can run.
    pub fn start(self: &Arc<Self>, engine: EngineWeak) -> std::io::Result<()> {
        let _starting = self.starting.lock().unwrap_or_else(PoisonError::into_inner);
        if self.ticker.get().is_some() {
            return Ok(());
        }
        let clock = self.clone();
        let handle = std::thread::Builder::new().name("wasmgate-epoch".into()).spawn(move || clock.tick(&engine))?;
        // Set once, under `starting`: it cannot already hold a thread.
        let _ = self.ticker.set(handle.thread().clone());
        Ok(())
    }

    /// Whether the ticker was started.
    pub fn started(&self) -> bool {
        self.ticker.get().is_some()
    }

    /// A guest call begins: the clock ticks until the guard is dropped.
    pub fn enter(&self) -> Running<'_> {
        let slot = &self.slots[slot_index()];
        slot.in_flight.fetch_add(1, Ordering::SeqCst);
        slot.began.store(true, Ordering::Relaxed);
        if self.parked.load(Ordering::SeqCst) {
            self.wake();
        }
        Running { count: &slot.in_flight }
    }

    /// Stops the ticker (at its next tick, or now if it sleeps).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn wake(&self) {
        if let Some(ticker) = self.ticker.get() {
            ticker.unpark();
        }
    }

    fn idle(&self) -> bool {
        self.slots.iter().all(|s| s.in_flight.load(Ordering::SeqCst) == 0)
    }

    /// Whether no call began since the last look (and forgets those that
    /// did). Under steady traffic some call always has: the ticker keeps
    /// ticking rather than going to sleep between calls and being woken by
    /// the next one, a system call each time.
    fn quiet(&self) -> bool {
        let mut quiet = true;
        for slot in &self.slots {
            if slot.began.swap(false, Ordering::Relaxed) {
                quiet = false;
            }
        }
        quiet
    }

    /// Whether the ticker sleeps (for tests).
    #[cfg(test)]
    fn sleeping(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }

    fn tick(&self, engine: &EngineWeak) {
        loop {
            std::thread::sleep(self.tick_period());
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            match engine.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
            // `quiet` is a heuristic; what makes sleeping safe is the second
            // look at the counts after the mark (module docs).
            if self.quiet() && self.idle() {
                self.parked.store(true, Ordering::SeqCst);
                // Spurious returns are harmless: the loop ticks and looks again.
                if self.idle() && !self.stop.load(Ordering::SeqCst) {
                    std::thread::park();
                }
                self.parked.store(false, Ordering::SeqCst);
            }
        }
    }
}

/// This thread's slot.
fn slot_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    }
    INDEX.with(|i| *i)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn until(what: &str, f: impl Fn() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(start.elapsed() < Duration::from_secs(5), "{what}: not within 5 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_clock_sleeps_while_no_guest_runs_and_ticks_while_one_does() {
        let engine = wasmtime::Engine::default();
        let clock = Arc::new(Clock::default());
        clock.start(engine.weak()).unwrap();
        until("the idle clock sleeps", || clock.sleeping());

        let running = clock.enter();
        until("a call wakes it", || !clock.sleeping());
        // It keeps ticking while any call runs, on any thread.
        let elsewhere = std::thread::scope(|s| s.spawn(|| clock.enter()).join().unwrap());
        drop(running);
        std::thread::sleep(clock.tick_period() * 20);
        assert!(!clock.sleeping(), "a call is still in flight");
        drop(elsewhere);
        until("the clock sleeps again", || clock.sleeping());

        clock.stop();
        assert!(clock.started());
    }

    #[test]
    fn a_call_wakes_the_ticker_whenever_it_begins() {
        let engine = wasmtime::Engine::default();
        let clock = Arc::new(Clock::default());
        let _fine = clock.resolve(Duration::from_millis(10));
        clock.start(engine.weak()).unwrap();
        // Calls after pauses of 0 to 3 ticks (of 1 ms), landing at every
        // point of the ticker's cycle (awake, going to sleep, asleep): each
        // must find the clock ticking.
        for i in 0..200u64 {
            let running = clock.enter();
            until("a call in flight has a ticking clock", || !clock.sleeping());
            drop(running);
            std::thread::sleep(Duration::from_micros(i * 137 % 3000));
        }
        clock.stop();
    }

    #[test]
    fn the_tick_is_a_tenth_of_the_shortest_deadline_held_within_its_bounds() {
        let clock = Arc::new(Clock::default());
        let ms = Duration::from_millis;
        assert_eq!(clock.tick_period(), MAX_TICK, "no plugin yet");
        let slow = clock.resolve(Duration::from_secs(1));
        assert_eq!(clock.tick_period(), MAX_TICK);
        let thirty = clock.resolve(ms(30));
        assert_eq!(clock.tick_period(), ms(3));
        let _default = clock.resolve(ms(100));
        assert_eq!(clock.tick_period(), ms(3), "the finest held sets it");
        let fast = clock.resolve(Duration::from_micros(500));
        assert_eq!(clock.tick_period(), MIN_TICK);
        // Two plugins with one deadline: the tick stays while either is held.
        let thirty_again = clock.resolve(ms(30));
        drop(fast);
        assert_eq!(clock.tick_period(), ms(3), "the plugin needing 1 ms is gone");
        drop(thirty);
        assert_eq!(clock.tick_period(), ms(3), "another still needs 3 ms");
        drop(thirty_again);
        assert_eq!(clock.tick_period(), MAX_TICK);
        drop(slow);
        assert_eq!(clock.tick_period(), MAX_TICK);
    }

    #[test]
    fn the_tick_is_reported_as_it_changes() {
        let clock = Arc::new(Clock::default());
        let gauge = Gauge::<f64, AtomicU64>::default();
        let fine = clock.resolve(Duration::from_millis(20));
        clock.report(gauge.clone());
        assert_eq!(gauge.get(), 0.002, "the tick when reporting began");
        drop(fine);
        assert_eq!(gauge.get(), 0.01);
    }

    #[test]
    fn a_tick_is_quiet_when_no_call_began_since_the_last() {
        let clock = Clock::default();
        assert!(clock.quiet());
        drop(clock.enter());
        assert!(!clock.quiet(), "a call began (and ended) since the last look");
        assert!(clock.quiet(), "and none since");
        let running = clock.enter();
        assert!(!clock.quiet());
        assert!(clock.quiet() && !clock.idle(), "quiet, but a call is still in flight");
        drop(running);
        assert!(clock.idle());
    }
}
