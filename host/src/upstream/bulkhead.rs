//! A per-upstream concurrency limit with a bounded queue: at most
//! `max_concurrent` requests in flight, at most `max_queue` waiting (each for
//! at most `queue_timeout`); anything beyond is refused at once with 503, so
//! a slow upstream cannot take every connection of the gateway with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    /// timed out.
    pub async fn acquire(&self) -> Option<Permit> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Some(Permit(p));
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.config.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let waited = tokio::time::timeout(self.config.queue_timeout, self.permits.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(p)) => Some(Permit(p)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limit_queue_and_overflow() {
        let b = Arc::new(Bulkhead::new(config::Bulkhead {
            max_concurrent: 2,
            max_queue: 1,
            queue_timeout: Duration::from_millis(100),
        }));
        let p1 = b.acquire().await;
        let p2 = b.acquire().await;
        assert!(p1.is_some() && p2.is_some());
        // The third waits in the queue; a fourth finds the queue full.
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.acquire().await }
        });
        tokio::task::yield_now().await;
        assert!(b.acquire().await.is_none(), "queue full: refused at once");
        drop(p1);
        let p3 = waiter.await.unwrap();
        assert!(p3.is_some(), "the queued request got the freed slot");
        // A queued request gives up after queue_timeout.
        let start = tokio::time::Instant::now();
        assert!(b.acquire().await.is_none());
        assert!(start.elapsed() >= Duration::from_millis(100));
    }
}
