//! The plugins' clock: the thread that advances the engine's epoch, on which
//! every guest's deadline is counted.
//!
//! It ticks every [`EPOCH_TICK`] while a guest call is in flight and sleeps
//! (parked, no wake-ups) while none is: an idle gateway with plugins loaded
//! costs no CPU for its clock. A call announces itself with
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

use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::EngineWeak;

/// How often the epoch advances: the resolution of plugin deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Slots for in-flight counts; threads beyond this many share them (which is
/// correct, only no longer free of contention).
const SLOTS: usize = 16;

/// One thread slot's count of guest calls in flight, alone on its cache line.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Slot(AtomicIsize);

/// The epoch clock of one engine.
#[derive(Debug, Default)]
pub struct Clock {
    slots: [Slot; SLOTS],
    /// Set by the ticker just before it sleeps.
    parked: AtomicBool,
    stop: AtomicBool,
    /// The ticker's thread, once started.
    ticker: OnceLock<Thread>,
    starting: Mutex<()>,
}

/// A guest call in flight: the clock keeps ticking until it is dropped.
#[derive(Debug)]
#[must_use = "the clock ticks only while this is held"]
pub struct Running<'a> {
    count: &'a AtomicIsize,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Release);
    }
}

impl Clock {
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
        let count = &self.slots[slot_index()].0;
        count.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            self.wake();
        }
        Running { count }
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
        self.slots.iter().all(|s| s.0.load(Ordering::SeqCst) == 0)
    }

    /// Whether the ticker sleeps (for tests).
    #[cfg(test)]
    fn sleeping(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }

    fn tick(&self, engine: &EngineWeak) {
        loop {
            std::thread::sleep(EPOCH_TICK);
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            match engine.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
            if self.idle() {
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
        std::thread::sleep(EPOCH_TICK * 20);
        assert!(!clock.sleeping(), "a call is still in flight");
        drop(elsewhere);
        until("the clock sleeps again", || clock.sleeping());

        clock.stop();
        assert!(clock.started());
    }

    #[test]
    fn a_call_that_begins_as_the_ticker_goes_to_sleep_wakes_it() {
        let engine = wasmtime::Engine::default();
        let clock = Arc::new(Clock::default());
        clock.start(engine.weak()).unwrap();
        // Many short calls, each landing at some point of the ticker's
        // cycle; after each, a call in flight must see the clock awake.
        for _ in 0..200 {
            let running = clock.enter();
            until("a call in flight has a ticking clock", || !clock.sleeping());
            drop(running);
            std::thread::sleep(Duration::from_micros(300));
        }
        clock.stop();
    }
}
