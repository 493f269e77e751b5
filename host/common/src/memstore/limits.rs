//! The arithmetic of `take` and `hit`, as pure functions of the stored state
//! and the time, kept apart from locking and expiry so that it reads like the
//! specification in the module doc of [`super`] (which the Redis script must
//! match) and can be tested value by value.

use super::LimitResult;

/// A token bucket as stored between calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Bucket {
    pub(super) tokens: f64,
    pub(super) last_ms: u64,
}

/// A sliding window's two counters as stored between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Window {
    /// The window length these counts were made with.
    pub(super) window_ms: u64,
    /// `now / window_ms` of the window `current` counts.
    pub(super) index: u64,
    pub(super) current: u64,
    pub(super) previous: u64,
}

/// What the store must do with the entry after a rate-limit decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Update<S> {
    /// Leave the entry as it is: its stored state still yields the same answers.
    Keep,
    /// Write `state`, expiring at `expires_at` (absolute clock milliseconds).
    Store { state: S, expires_at: u64 },
}

/// How far below `cost` a bucket may be and still grant it. Refill adds
/// `elapsed * rate / 1000`, which in doubles lands a hair under the exact value
/// (0.7 + 0.1 is 0.7999999999999999); without slack a take at exactly
/// `retry_after_ms` could be refused. A millionth of a token is no real grant.
const TOKEN_SLACK: f64 = 1e-6;
/// Taken off a deficit before converting it to milliseconds, so float noise
/// does not round an exact 1 ms up to 2. Smaller than `TOKEN_SLACK`, so a take
/// at `now + retry_after_ms` is still granted.
const MS_SLACK_TOKENS: f64 = 1e-9;

/// Token bucket with continuous refill; see the module doc for the exact rules.
/// The caller has checked `1 <= capacity <= 2^53`, `cost <= capacity` and that
/// `refill_per_second` is finite and positive.
pub(super) fn take(
    state: Option<Bucket>,
    now: u64,
    capacity: u64,
    refill_per_second: f64,
    cost: u64,
) -> (LimitResult, Update<Bucket>) {
    // Exact: the caller keeps both at or under 2^53.
    let capacity_f = capacity as f64;
    let cost_f = cost as f64;
    let (tokens, last_ms) = match state {
        None => (capacity_f, now),
        Some(bucket) => {
            let elapsed = now.saturating_sub(bucket.last_ms) as f64;
            ((bucket.tokens + elapsed * refill_per_second / 1000.0).min(capacity_f), now.max(bucket.last_ms))
        }
    };
    let allowed = tokens >= cost_f - TOKEN_SLACK;
    let tokens = if allowed { (tokens - cost_f).max(0.0) } else { tokens };
    let reset_ms = ceil_ms((capacity_f - tokens - MS_SLACK_TOKENS).max(0.0) * 1000.0 / refill_per_second);
    let retry_after_ms =
        if allowed { 0 } else { ceil_ms((cost_f - tokens - MS_SLACK_TOKENS) * 1000.0 / refill_per_second) };
    let result = LimitResult {
        allowed,
        limit: capacity,
        remaining: (tokens + TOKEN_SLACK).floor() as u64,
        reset_ms,
        retry_after_ms,
    };
    // A refusal and a free take change nothing that the stored state would not
    // recompute identically, so they do not write (and create no entry).
    let update = if allowed && cost > 0 {
        Update::Store { state: Bucket { tokens, last_ms }, expires_at: now.saturating_add(reset_ms) }
    } else {
        Update::Keep
    };
    (result, update)
}

/// Sliding window (two fixed windows, the previous one weighted by its
/// overlap); see the module doc for the exact rules. The caller has checked
/// `1 <= limit`, `cost <= limit` and `1 <= window_ms`.
pub(super) fn hit(
    state: Option<Window>,
    now: u64,
    limit: u64,
    window_ms: u64,
    cost: u64,
) -> (LimitResult, Update<Window>) {
    let mut index = now / window_ms;
    let elapsed = now % window_ms;
    let (mut current, previous) = match state {
        Some(stored) if stored.window_ms == window_ms && stored.index >= index => {
            // Equal: the same window. Greater: the clock went back; keep
            // counting in the stored window rather than forgetting hits.
            index = stored.index;
            (stored.current, stored.previous)
        }
        Some(stored) if stored.window_ms == window_ms && stored.index + 1 == index => (0, stored.current),
        // Absent, two or more windows old, or made with another window length.
        _ => (0, 0),
    };

    // All in exact integers: estimate = previous * left / window + current,
    // so `estimate + cost <= limit` is `previous * left + (current + cost) * window <= limit * window`.
    let window = u128::from(window_ms);
    let left = u128::from(window_ms - elapsed);
    let weighted = u128::from(previous) * left;
    let allowed = weighted + (u128::from(current) + u128::from(cost)) * window <= u128::from(limit) * window;
    if allowed {
        current = current.saturating_add(cost);
    }
    let used = u128::from(current) + weighted.div_ceil(window);
    let reset_ms = window_reset_ms(previous > 0, current > 0, window_ms, elapsed);
    let retry_after_ms = if allowed { 0 } else { retry_after(previous, current, limit, cost, window, left) };
    let result = LimitResult {
        allowed,
        limit,
        remaining: u64::try_from(u128::from(limit).saturating_sub(used)).unwrap_or(0),
        reset_ms,
        retry_after_ms,
    };
    let update = if allowed && cost > 0 {
        let state = Window { window_ms, index, current, previous };
        Update::Store { state, expires_at: index.saturating_add(2).saturating_mul(window_ms) }
    } else {
        Update::Keep
    };
    (result, update)
}

/// A sliding window's `reset_ms`: milliseconds until it counts nothing, as
/// if never hit (`remaining == limit`), given whether its previous and
/// current counts (after the hit) are above zero. The current count becomes
/// the previous one at the roll and weighs in until the next roll; a
/// previous count alone weighs in until this window's end. Never below the
/// `retry_after` of a refusal, which only waits for room for one `cost`.
/// The in-memory and the Redis store both answer with it.
pub fn window_reset_ms(previous: bool, current: bool, window_ms: u64, elapsed: u64) -> u64 {
    let left = window_ms.saturating_sub(elapsed);
    if current {
        left.saturating_add(window_ms)
    } else if previous {
        left
    } else {
        0
    }
}

/// The first whole millisecond at which a refused hit of `cost` would fit,
/// assuming no other hits meanwhile. `left` is the time to the window's end.
fn retry_after(previous: u64, current: u64, limit: u64, cost: u64, window: u128, left: u128) -> u64 {
    let (previous, current, limit, cost) =
        (u128::from(previous), u128::from(current), u128::from(limit), u128::from(cost));
    let wait = match limit.checked_sub(current + cost) {
        // In this window the estimate falls as `previous` loses weight; we need
        // `previous * (left - t) <= room * window`.
        Some(room) if previous > 0 => left - left.min(room * window / previous),
        // `current` alone is over: wait for the roll, after which `current`
        // becomes the previous window and decays; at `s` ms into the next
        // window we need `current * (window - s) <= (limit - cost) * window`.
        _ => {
            let room = limit.saturating_sub(cost);
            let into_next = (room * window).checked_div(current).map_or(0, |fits| window - window.min(fits));
            left + into_next
        }
    };
    u64::try_from(wait.min(2 * window)).unwrap_or(u64::MAX)
}

/// Rounds a non-negative millisecond count up; `as` saturates huge values
/// (a bucket that refills absurdly slowly) to `u64::MAX`.
fn ceil_ms(ms: f64) -> u64 {
    ms.ceil() as u64
}
