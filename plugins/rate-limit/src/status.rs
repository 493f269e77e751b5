//! The numbers behind the `RateLimit-*` headers, and how the request phase
//! hands them to the response phase through the context.

use serde::{Deserialize, Serialize};
use wasmgate_sdk::context;
use wasmgate_sdk::store::Limit;

use crate::config::Rule;

/// The context entry the request hook writes and the response hook reads.
pub(crate) const CONTEXT_KEY: &str = "rate_limit.status";

/// Where a request stands against one limit, or the tightest of several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// rounded up) and, when asked for, `-Policy`.
    pub(crate) fn headers(&self, now_ms: u64, policy: bool) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("ratelimit-limit", self.limit.to_string()),
            ("ratelimit-remaining", self.remaining.to_string()),
            ("ratelimit-reset", ceil_secs(self.reset_at.saturating_sub(now_ms)).to_string()),
        ];
        if policy && !self.policy.is_empty() {
            headers.push(("ratelimit-policy", self.policy.join(", ")));
        }
        headers
    }

    /// Records this status for the response hook. Another rate-limit entry
    /// earlier in the chain may have written one already: the tighter wins, so
    /// every entry's response hook sets the same headers.
    pub(crate) fn publish(self) {
        let status = match context::get(CONTEXT_KEY).and_then(|text| serde_json::from_str::<Status>(&text).ok()) {
            Some(earlier) => earlier.tightest(self),
            None => self,
        };
        if let Ok(text) = serde_json::to_string(&status) {
            context::set(CONTEXT_KEY, &text);
        }
    }

    /// What the request hook recorded, if any limit applied.
    pub(crate) fn published() -> Option<Self> {
        context::get(CONTEXT_KEY).and_then(|text| serde_json::from_str(&text).ok())
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
