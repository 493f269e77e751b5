//! The route's `config` table: raw serde types, then the checks that turn
//! them into the [`Rule`]s the request path runs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use wasmgate_sdk::{ConfigError, units};

use crate::key::KeyPart;

/// The route's `config` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The limits; a request must pass every one of them.
    pub(crate) limits: Vec<RawLimit>,
    /// `RateLimit-*` headers on allowed responses (refusals always carry them).
    #[serde(default = "yes")]
    pub(crate) headers: bool,
    /// Add `RateLimit-Policy` next to the other `RateLimit-*` headers.
    #[serde(default = "yes")]
    pub(crate) policy_header: bool,
    /// What a store failure (Redis down) means for the request.
    #[serde(default)]
    pub(crate) on_store_error: OnStoreError,
    /// Count a limit across every route that uses it under the same name.
    #[serde(default)]
    pub(crate) share_across_routes: bool,
}

fn yes() -> bool {
    true
}

/// One entry of `limits`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    /// 1 to 64 letters, digits, `-`, `_` or `.`; unique in the list, named in the 429 body.
    name: String,
    /// What to count by, a list of parts whose values are joined; `["global"]`: one counter for everyone.
    /// Parts: `client-ip`, `header:NAME`, `consumer`, `claim:NAME`, `context:NAME`, `route`, `path`, `method`.
    key: Vec<String>,
    /// `rate` requests per `per` (at least 1).
    rate: u64,
    /// The span `rate` counts over, a whole number of seconds: `"1s"`, `"1m"`, `"1h"`.
    per: String,
    /// How the limit counts.
    #[serde(default)]
    algorithm: Algorithm,
    /// `token-bucket` only: the bucket's size (default `rate`).
    burst: Option<u64>,
    /// What happens to a request that lacks a part of `key`.
    #[serde(default)]
    missing: Missing,
}

/// `algorithm`: how a limit counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// At most `rate` requests in any `per`-long span (two-window estimate).
    #[default]
    SlidingWindow,
    /// A bucket of `burst` tokens refilling `rate` per `per`.
    TokenBucket,
}

/// What a limit does when its key cannot be built (no such header or claim).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Missing {
    /// The limit does not apply to the request.
    #[default]
    Skip,
    /// Every request missing the part shares one counter.
    Shared,
    /// The request is refused (400).
    Deny,
}

/// Fail open or closed when the store cannot answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnStoreError {
    /// Let the request through, unlimited, and log a warning.
    #[default]
    Allow,
    /// Answer 503 with `Retry-After: 1`.
    Deny,
}

/// A checked limit, as the request path uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub key: Vec<KeyPart>,
    pub missing: Missing,
    pub kind: Kind,
    /// This limit's `RateLimit-Policy` item, e.g. `10;w=1`.
    pub policy: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    TokenBucket { capacity: u64, refill_per_second: f64 },
    SlidingWindow { limit: u64, window_ms: u64 },
}

impl Kind {
    /// Part of the store key, so a limit whose algorithm changes on reload
    /// starts afresh instead of finding the other algorithm's state.
    pub fn tag(&self) -> &'static str {
        match self {
            Self::TokenBucket { .. } => "tb",
            Self::SlidingWindow { .. } => "sw",
        }
    }

    /// What `RateLimit-Limit` says of this limit, as the store answers it:
    /// the bucket's capacity (its burst), or the window's limit.
    pub fn limit(&self) -> u64 {
        match self {
            Self::TokenBucket { capacity, .. } => *capacity,
            Self::SlidingWindow { limit, .. } => *limit,
        }
    }
}

/// The store's bounds (`host/common/src/memstore`): a window is at most a
/// day, a bucket holds at most 2^53 tokens, and the Redis script counts a
/// window exactly while `limit * window_ms` stays within 2^53.
const MAX_WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
const MAX_EXACT: u64 = 1 << 53;
/// A bucket refilling more slowly than this many seconds is a typo.
const MAX_BUCKET_PER_SECS: u64 = 366 * 24 * 60 * 60;

impl RawLimit {
    pub(crate) fn build(self) -> Result<Rule, ConfigError> {
        let name = self.name;
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !valid_name {
            return Err(format!(
                "limit name `{name}` is not valid: use 1 to 64 letters, digits, `-`, `_` or `.` (e.g. \"per-second\")"
            )
            .into());
        }
        let at = format!("limit `{name}`");
        if self.key.is_empty() {
            return Err(format!(
                "{at}: `key` is empty; name what to count by (e.g. [\"client-ip\"]), or [\"global\"] for one counter for everyone"
            )
            .into());
        }
        let key = self
            .key
            .iter()
            .map(|p| KeyPart::parse(p).map_err(|e| ConfigError::new(format!("{at}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if self.rate == 0 {
            return Err(
                format!("{at}: `rate` is 0; it must be at least 1 (to block everything, use the deny plugin)").into()
            );
        }
        let per_ms = units::parse_duration(&self.per)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .map_err(|e| ConfigError::new(format!("{at}: `per`: {e}")))?;
        if per_ms % 1000 != 0 || per_ms == 0 {
            return Err(format!(
                "{at}: `per` is \"{}\"; it must be a whole number of seconds (\"1s\", \"1m\", \"1h\"), as RateLimit headers count in seconds",
                self.per
            )
            .into());
        }
        let per_secs = per_ms / 1000;
        let (kind, policy) = match self.algorithm {
            Algorithm::SlidingWindow => {
                if self.burst.is_some() {
                    return Err(format!(
                        "{at}: `burst` applies to algorithm = \"token-bucket\" only; remove it or switch the algorithm"
                    )
                    .into());
                }
                if per_ms > MAX_WINDOW_MS {
                    return Err(format!(
                        "{at}: a sliding window is at most one day (`per` is \"{}\"); use a shorter `per` with a proportional `rate`",
                        self.per
                    )
                    .into());
                }
                if self.rate.checked_mul(per_ms).is_none_or(|n| n > MAX_EXACT) {
                    return Err(format!(
                        "{at}: `rate` {} over `per` \"{}\" is too large to count exactly; use a shorter `per`",
                        self.rate, self.per
                    )
                    .into());
                }
                (Kind::SlidingWindow { limit: self.rate, window_ms: per_ms }, format!("{};w={per_secs}", self.rate))
            }
            Algorithm::TokenBucket => {
                let capacity = self.burst.unwrap_or(self.rate);
                if !(1..=MAX_EXACT).contains(&capacity) {
                    return Err(format!("{at}: `burst` must be between 1 and 2^53, not {capacity}").into());
                }
                if self.rate > MAX_EXACT {
                    return Err(format!("{at}: `rate` must be at most 2^53").into());
                }
                if per_secs > MAX_BUCKET_PER_SECS {
                    return Err(format!("{at}: `per` \"{}\" is over a year", self.per).into());
                }
                #[expect(clippy::cast_precision_loss, reason = "both are at most 2^53, exact in an f64")]
                let refill_per_second = self.rate as f64 / per_secs as f64;
                let mut policy = format!("{};w={per_secs}", self.rate);
                if capacity != self.rate {
                    policy.push_str(&format!(";burst={capacity}"));
                }
                (Kind::TokenBucket { capacity, refill_per_second }, policy)
            }
        };
        Ok(Rule { name, key, missing: self.missing, kind, policy })
    }
}
