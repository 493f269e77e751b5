//! The numbers behind the `RateLimit-*` headers, and how the request phase
//! hands them to the response phase through the context.

use wasmgate_sdk::store::Limit;
use wasmgate_sdk::{Decimal, context};

use crate::config::Rule;

/// The context entry the request hook writes and the response hook reads.
pub(crate) const CONTEXT_KEY: &str = "rate_limit.status";

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
    /// on the stack: this runs on every allowed response.
    pub(crate) fn headers(&self, now_ms: u64, policy: bool) -> ([(&'static str, Decimal); 3], Option<String>) {
        let numbers = [
            ("ratelimit-limit", Decimal::new(self.limit)),
            ("ratelimit-remaining", Decimal::new(self.remaining)),
            ("ratelimit-reset", Decimal::new(ceil_secs(self.reset_at.saturating_sub(now_ms)))),
        ];
        let policy = (policy && !self.policy.is_empty()).then(|| self.policy.join(", "));
        (numbers, policy)
    }

    /// Records this status for the response hook. Another rate-limit entry
    /// earlier in the chain may have written one already: the tighter wins, so
    /// every entry's response hook sets the same headers.
    pub(crate) fn publish(self) {
        let status = match Self::published() {
            Some(earlier) => earlier.tightest(self),
            None => self,
        };
        context::set(CONTEXT_KEY, &status.encode());
    }

    /// What the request hook recorded, if any limit applied.
    pub(crate) fn published() -> Option<Self> {
        context::get(CONTEXT_KEY).and_then(|text| Self::decode(&text))
    }

    /// The context entry's text: `limit remaining reset_at` on the first
    /// line, then one policy item per line (items are header text, which
    /// holds no line break). A fixed form, cheaper than JSON on every request.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::with_capacity(48 + self.policy.iter().map(|p| p.len() + 1).sum::<usize>());
        for (i, n) in [self.limit, self.remaining, self.reset_at].into_iter().enumerate() {
            if i > 0 {
                text.push(' ');
            }
            text.push_str(Decimal::new(n).as_str());
        }
        for item in &self.policy {
            text.push('\n');
            text.push_str(item);
        }
        text
    }

    /// Reads [`Status::encode`]'s text; `None` for anything else.
    pub(crate) fn decode(text: &str) -> Option<Self> {
        let mut lines = text.split('\n');
        let mut numbers = lines.next()?.split(' ').map(str::parse::<u64>);
        let (limit, remaining, reset_at) = (numbers.next()?.ok()?, numbers.next()?.ok()?, numbers.next()?.ok()?);
        if numbers.next().is_some() {
            return None;
        }
        Some(Self { limit, remaining, reset_at, policy: lines.map(str::to_owned).collect() })
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
