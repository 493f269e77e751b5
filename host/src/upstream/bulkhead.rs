//! A per-upstream concurrency limit with a bounded queue: at most
//! `max_concurrent` requests in flight, at most `max_queue` waiting (each for
//! at most `queue_timeout`); anything beyond is refused at once with 503, so
//! a slow upstream cannot take every connection of the gateway with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config;

#[derive(Debug)]
pub struct Bulkhead {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    config: config::Bulkhead,
}

/// Held while the request is in flight.
#[derive(Debug)]
pub struct Permit(#[expect(dead_code, reason = "held for its Drop")] OwnedSemaphorePermit);

impl Bulkhead {
    pub fn new(config: config::Bulkhead) -> Self {
        Self { permits: Arc::new(Semaphore::new(config.max_concurrent)), waiting: AtomicUsize::new(0), config }
    }

    /// A slot, or `None` when the limit and the queue are full or the wait
    /// timed out (after `queue_timeout`, or at the request's `deadline`).
    pub async fn acquire(&self, deadline: Instant) -> Option<Permit> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Some(Permit(p));
        }
        let queued = Queued(&self.waiting);
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.config.max_queue {
            return None;
        }
        let until = deadline.min(Instant::now() + self.config.queue_timeout);
        let waited = tokio::time::timeout_at(until, self.permits.clone().acquire_owned()).await;
        drop(queued);
        match waited {
            Ok(Ok(p)) => Some(Permit(p)),
            _ => None,
        }
    }
}

/// A place in the queue, given up when dropped — also when the request is
/// (its client left while it waited): the count stayed up, and a queue
/// whose every place was once abandoned refused all waiting for good.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    fn one_slot_one_place() -> Arc<Bulkhead> {
        Arc::new(Bulkhead::new(config::Bulkhead {
            max_concurrent: 1,
            max_queue: 1,
            queue_timeout: Duration::from_secs(1),
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_dropped_gives_its_place_back() {
        let b = one_slot_one_place();
        let held = b.acquire(far()).await;
        assert!(held.is_some());
        for _ in 0..3 {
            // Its client leaves while it waits: the request's future is dropped.
            let waiter = tokio::spawn({
                let b = b.clone();
                async move { b.acquire(far()).await.is_some() }
            });
            tokio::task::yield_now().await;
            waiter.abort();
            assert!(waiter.await.is_err_and(|e| e.is_cancelled()));
        }
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.acquire(far()).await.is_some() }
        });
        tokio::task::yield_now().await;
        drop(held);
        assert!(waiter.await.unwrap(), "the place was free again, and the slot went to it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_the_request_deadline() {
        let b = one_slot_one_place();
        let _held = b.acquire(far()).await;
        let start = Instant::now();
        assert!(b.acquire(start + Duration::from_millis(50)).await.is_none());
        assert_eq!(start.elapsed(), Duration::from_millis(50), "not queue_timeout (1 s)");
    }

    #[tokio::test(start_paused = true)]
    async fn limit_queue_and_overflow() {
        let b = Arc::new(Bulkhead::new(config::Bulkhead {
            max_concurrent: 2,
            max_queue: 1,
            queue_timeout: Duration::from_millis(100),
        }));
        let p1 = b.acquire(far()).await;
        let p2 = b.acquire(far()).await;
        assert!(p1.is_some() && p2.is_some());
        // The third waits in the queue; a fourth finds the queue full.
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.acquire(far()).await }
        });
        tokio::task::yield_now().await;
        assert!(b.acquire(far()).await.is_none(), "queue full: refused at once");
        drop(p1);
        let p3 = waiter.await.unwrap();
        assert!(p3.is_some(), "the queued request got the freed slot");
        // A queued request gives up after queue_timeout.
        let start = tokio::time::Instant::now();
        assert!(b.acquire(far()).await.is_none());
        assert!(start.elapsed() >= Duration::from_millis(100));
    }
}
