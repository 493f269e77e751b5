//! The numbers behind the `RateLimit-*` headers.

use wasmgate_sdk::Decimal;
use wasmgate_sdk::store::Limit;

use crate::config::Rule;

/// Where a request stands against one limit, or the tightest of several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub limit: u64,
    pub remaining: u64,
    /// Unix milliseconds at which the limit is fully available again.
    pub reset_at: u64,
    /// `RateLimit-Policy` items: the reported limit's first, then the others
    /// that applied, in the order they were checked.
    pub policy: Vec<String>,
}

impl Status {
    pub(crate) fn new(rule: &Rule, result: &Limit, now_ms: u64) -> Self {
        Self {
            limit: result.limit,
            remaining: result.remaining,
            reset_at: now_ms.saturating_add(millis(result.reset)),
            policy: vec![rule.policy.clone()],
        }
    }

    /// The more restrictive of two statuses — fewer requests remaining, and on
    /// a tie the later reset — carrying both policies.
    pub(crate) fn tightest(self, other: Self) -> Self {
        let (mut first, second) = if (other.remaining, std::cmp::Reverse(other.reset_at))
            < (self.remaining, std::cmp::Reverse(self.reset_at))
        {
            (other, self)
        } else {
            (self, other)
        };
        for item in second.policy {
            if !first.policy.contains(&item) {
                first.policy.push(item);
            }
        }
        first
    }

    /// `RateLimit-Limit`, `-Remaining`, `-Reset` (seconds from `now_ms`,
    /// rounded up) and, when asked for, `-Policy`. The numbers are written
    /// on the stack: this runs on every allowed request.
    pub(crate) fn headers(&self, now_ms: u64, policy: bool) -> ([(&'static str, Decimal); 3], Option<String>) {
        let numbers = [
            ("ratelimit-limit", Decimal::new(self.limit)),
            ("ratelimit-remaining", Decimal::new(self.remaining)),
            ("ratelimit-reset", Decimal::new(ceil_secs(self.reset_at.saturating_sub(now_ms)))),
        ];
        let policy = (policy && !self.policy.is_empty()).then(|| self.policy.join(", "));
        (numbers, policy)
    }
}

/// Whole seconds, rounded up.
pub(crate) fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// `Retry-After`: whole seconds, rounded up, and at least 1 — a refused
/// client retrying at once would only be refused again.
pub(crate) fn retry_after_secs(ms: u64) -> u64 {
    ceil_secs(ms).max(1)
}

pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
