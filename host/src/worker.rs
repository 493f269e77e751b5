//! Which worker thread this is. Per-worker state (plugin instance pools,
//! upstream connection pools) is sharded by this index so workers never
//! contend; threads that are not workers (tests, the control runtime's
//! threads) get an index too and share a shard.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// This thread's index, assigned on first use.
pub fn index() -> usize {
    INDEX.with(|s| match s.get() {
        Some(i) => i,
        None => {
            let i = NEXT.fetch_add(1, Ordering::Relaxed);
            s.set(Some(i));
            i
        }
    })
}

/// Pins this thread to worker `i` (called when a worker thread starts, so
/// worker `i` uses shard `i`).
pub fn set_index(i: usize) {
    INDEX.with(|s| s.set(Some(i)));
}
