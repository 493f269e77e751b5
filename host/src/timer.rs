//! A timer a connection keeps from one wait to the next.
//!
//! Each wait on a connection has a deadline (a request head's, a try's),
//! and most are a little later than the one before. Moving a tokio timer
//! takes it out of the runtime's timer wheel and puts it back, under the
//! driver's lock; doing that for every request costs more than the rest of
//! the timer's work. [`Kept`] is not moved forward for each deadline: it
//! stays at an earlier one, and when it fires before the deadline waited
//! for, it is moved on then (once per timeout period, not per request). A
//! deadline earlier than where it stands moves it back at once, so it never
//! fires late. Nor is it polled again by the task it already wakes, while
//! it has not fired (a poll costs as much as the rest of a wait's work).

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::time::{Instant, Sleep};

/// A connection's timer; created when first waited on.
#[derive(Debug, Default)]
pub struct Kept {
    timer: Option<Pin<Box<Sleep>>>,
    /// The task the timer was last polled by (the one it wakes).
    waker: Option<Waker>,
}

impl Kept {
    /// Ready once `deadline` has passed. Pending otherwise, with the task
    /// woken by then (perhaps earlier, to be moved on).
    pub fn poll_passed(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        } else if !timer.is_elapsed() && self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            // In the timer wheel, at or before `deadline`, waking this task.
            return Poll::Pending;
        }
        while timer.as_mut().poll(cx).is_ready() {
            if timer.deadline() >= deadline {
                return Poll::Ready(());
            }
            timer.as_mut().reset(deadline);
        }
        match &mut self.waker {
            Some(w) => w.clone_from(cx.waker()),
            None => self.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn passed(timer: &mut Kept, deadline: Instant) {
        std::future::poll_fn(|cx| timer.poll_passed(cx, deadline)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn it_fires_at_each_deadline_never_before_nor_after() {
        let mut timer = Kept::default();
        let start = Instant::now();
        passed(&mut timer, start + Duration::from_secs(10)).await;
        assert_eq!(Instant::now(), start + Duration::from_secs(10));

        // A later deadline while the timer stands at an earlier one (it has
        // fired): moved on when it fires, and passed at the later one.
        let later = Instant::now() + Duration::from_secs(30);
        passed(&mut timer, later).await;
        assert_eq!(Instant::now(), later);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_standing_at_an_earlier_deadline_is_moved_on_not_fired() {
        let mut timer = Kept::default();
        let start = Instant::now();
        let first = start + Duration::from_secs(10);
        // Registered at `first`, not waited to the end.
        assert!(std::future::poll_fn(|cx| Poll::Ready(timer.poll_passed(cx, first))).await.is_pending());
        tokio::time::advance(Duration::from_secs(5)).await;
        let second = Instant::now() + Duration::from_secs(10);
        passed(&mut timer, second).await;
        assert_eq!(Instant::now(), second, "it passed at its own deadline, not the first's");
    }

    #[tokio::test(start_paused = true)]
    async fn polled_again_by_the_task_it_wakes_it_still_fires_at_the_deadline() {
        let mut timer = Kept::default();
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        let mut polls = 0;
        // The other sleep wakes the task at 3 s and 6 s: the timer is polled
        // again (and not re-registered) then.
        let (_, ()) = tokio::join!(
            std::future::poll_fn(|cx| {
                polls += 1;
                timer.poll_passed(cx, deadline)
            }),
            async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        );
        assert_eq!(Instant::now(), deadline);
        assert!(polls >= 3, "polled at 0, 3, 6 and 10 s: {polls}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_moves_it_back_at_once() {
        let mut timer = Kept::default();
        let start = Instant::now();
        assert!(
            std::future::poll_fn(|cx| Poll::Ready(timer.poll_passed(cx, start + Duration::from_secs(60))))
                .await
                .is_pending()
        );
        let sooner = start + Duration::from_secs(2);
        passed(&mut timer, sooner).await;
        assert_eq!(Instant::now(), sooner);
    }
}
