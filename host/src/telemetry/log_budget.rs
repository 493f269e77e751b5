//! Bounds on log lines that come once per request.
//!
//! The diagnostic log is written as it happens, by the worker that logs (to
//! stderr, which may be a pipe to a slow reader). A line for every failed
//! request during an upstream's outage, a breaker open or a flood — or for
//! every plugin call that logs — would make the log's volume the failure
//! rate, and each worker wait on the writer: the failures metrics count
//! already. So each kind of such line has a budget of lines a second; past
//! it lines are dropped, and the next one written says how many were.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Lines a second a budget lets through.
pub const LINES_PER_SECOND: u32 = 10;

/// One kind of per-request line's budget: [`LINES_PER_SECOND`], process-wide.
#[derive(Debug)]
pub struct LogBudget {
    /// The second (since the process's first use of a budget) being counted.
    second: AtomicU64,
    /// Lines written in it.
    written: AtomicU32,
    /// Lines dropped since the last one written.
    dropped: AtomicU64,
}

/// Failed requests the gateway or an upstream failed (502, 503, 504, 500).
pub static REQUEST_FAILURES: LogBudget = LogBudget::new();
/// Plugin failures (traps, deadlines, memory, bad replies).
pub static PLUGIN_FAILURES: LogBudget = LogBudget::new();
/// What plugins log.
pub static PLUGIN_LINES: LogBudget = LogBudget::new();
/// A trusted proxy's `X-Forwarded-For` that names no client.
pub static FORWARDED_FOR: LogBudget = LogBudget::new();
/// Requests balanced over an upstream none of whose endpoints passes its
/// health checks (`health.all_down`).
pub static ALL_DOWN: LogBudget = LogBudget::new();

impl LogBudget {
    pub const fn new() -> Self {
        Self { second: AtomicU64::new(0), written: AtomicU32::new(0), dropped: AtomicU64::new(0) }
    }

    /// Whether a line may be written now: `Some` with the lines dropped
    /// since the last one written (to say so, when not 0), or `None`.
    pub fn take(&self) -> Option<u64> {
        self.take_at(seconds())
    }

    fn take_at(&self, now: u64) -> Option<u64> {
        let counted = self.second.load(Ordering::Relaxed);
        if counted != now && self.second.compare_exchange(counted, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.written.store(0, Ordering::Relaxed);
        }
        if self.written.fetch_add(1, Ordering::Relaxed) < LINES_PER_SECOND {
            Some(self.dropped.swap(0, Ordering::Relaxed))
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Default for LogBudget {
    fn default() -> Self {
        Self::new()
    }
}

/// Whole seconds since the first call.
fn seconds() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs()
}

/// `Some(n)` when `n` lines were dropped: a log field that is left out
/// when there were none.
pub fn dropped(n: u64) -> Option<u64> {
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_lets_so_many_lines_a_second_through_and_counts_the_rest() {
        let budget = LogBudget::new();
        for _ in 0..LINES_PER_SECOND {
            assert_eq!(budget.take_at(5), Some(0));
        }
        assert_eq!(budget.take_at(5), None);
        assert_eq!(budget.take_at(5), None);
        assert_eq!(budget.take_at(6), Some(2), "the next second's first line says two were dropped");
        assert_eq!(budget.take_at(6), Some(0));
    }
}
