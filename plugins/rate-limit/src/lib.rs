//! `rate-limit`: counts requests against one or more limits in the gateway's
//! shared store (token buckets and sliding windows, exact across workers and,
//! with Redis, across gateways) and answers 429 when one is exhausted.
//!
//! The request hook checks the limits in order and stops at the first that
//! refuses. With `headers = true` it also leaves the tightest limit's numbers
//! as `RateLimit-*` response headers, which the gateway sets on whatever
//! response the request gets: the plugin has no response hook.

mod config;
mod key;
mod status;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::collections::BTreeSet;

use wasmgate_sdk::prelude::*;
use wasmgate_sdk::store::{self, StoreError};
use wasmgate_sdk::{Decimal, clock};

pub use config::{Algorithm, Config, Missing, OnStoreError, RawLimit};
use config::{Kind, Rule};
use key::{Facts, KeyPart, KeyText};
use status::Status;

/// Store failures are logged at most this often per instance: with Redis
/// down, every request would otherwise log the same warning.
const WARN_EVERY_MS: u64 = 10_000;

/// The plugin: its limits, in the order they are checked.
#[derive(Debug)]
pub struct RateLimit {
    rules: Vec<Rule>,
    headers: bool,
    policy_header: bool,
    /// `RateLimit-Limit` and `-Policy` are the same on every response: one
    /// limit, whose key every request has. The gateway sets them itself
    /// ([`Plugin::fixed_headers`]) and the hook leaves only `-Remaining`
    /// and `-Reset`, two host calls fewer a request.
    fixed_numbers: bool,
    on_store_error: OnStoreError,
    share_across_routes: bool,
    /// When this instance last logged a store failure at warn.
    warned_at: Cell<Option<u64>>,
}

/// What one limit's store answer means for the request.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Counted and allowed.
    Allowed(Status),
    /// Exhausted: answer 429.
    Refused(Reply),
    /// The store failed and `on_store_error = "allow"`: the request goes on
    /// without this limit. `stop`: the backend is down, so the remaining
    /// limits are not tried either (each would wait out the same timeout).
    FailOpen { stop: bool },
    /// The store failed and `on_store_error = "deny"`: answer 503.
    FailClosed(Reply),
}

impl Plugin for RateLimit {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        if config.limits.is_empty() {
            return Err("`limits` is empty; give at least one, e.g. limits = [{ name = \"per-ip\", key = [\"client-ip\"], rate = 10, per = \"1s\" }]".into());
        }
        let mut names = BTreeSet::new();
        let mut rules = Vec::with_capacity(config.limits.len());
        for raw in config.limits {
            let rule = raw.build()?;
            if !names.insert(rule.name.clone()) {
                return Err(format!(
                    "two limits are named `{}`; names must differ, as each has its own counters",
                    rule.name
                )
                .into());
            }
            rules.push(rule);
        }
        let fixed_numbers =
            config.headers && matches!(rules.as_slice(), [rule] if rule.key.iter().all(KeyPart::always_present));
        Ok(Self {
            rules,
            headers: config.headers,
            policy_header: config.policy_header,
            fixed_numbers,
            on_store_error: config.on_store_error,
            share_across_routes: config.share_across_routes,
            warned_at: Cell::new(None),
        })
    }

    fn info(&self) -> Info {
        Info::default()
    }

    fn fixed_headers(&self) -> FixedHeaders {
        let mut fixed = FixedHeaders::default();
        if self.fixed_numbers
            && let [rule] = self.rules.as_slice()
        {
            let limit = Decimal::new(rule.kind.limit());
            fixed.response.push(("ratelimit-limit".into(), HeaderEdit::Set(limit.as_str().as_bytes().to_vec())));
            if self.policy_header {
                fixed.response.push(("ratelimit-policy".into(), HeaderEdit::Set(rule.policy.clone().into_bytes())));
            }
        }
        fixed
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let now = clock::now_unix_ms();
        let route = req.route();
        let scope = if self.share_across_routes { "*" } else { route.as_str() };
        let mut facts = Facts::new(req);
        let mut tightest: Option<Status> = None;
        for rule in &self.rules {
            let text = match key::key_text(&rule.key, &mut facts) {
                KeyText::Complete(text) => text,
                KeyText::Missing { first, shared } => match rule.missing {
                    Missing::Skip => continue,
                    Missing::Shared => shared,
                    Missing::Deny => return Decision::respond(missing_part(rule, first)),
                },
            };
            let store_key = key::store_key(scope, &rule.name, rule.kind.tag(), &text);
            match self.judge(rule, count(rule, &store_key), tightest.as_ref(), now) {
                Verdict::Allowed(status) => {
                    tightest = Some(match tightest {
                        Some(t) => t.tightest(status),
                        None => status,
                    });
                }
                Verdict::Refused(reply) => return Decision::respond(reply),
                Verdict::FailClosed(reply) => {
                    self.unfix(req);
                    return Decision::respond(reply);
                }
                Verdict::FailOpen { stop: true } => break,
                Verdict::FailOpen { stop: false } => {}
            }
        }
        let Some(status) = tightest else {
            // Nothing counted (the store is down): no numbers to report.
            self.unfix(req);
            return Decision::Continue;
        };
        if self.headers {
            let mut set = |name: &str, value: &str| {
                if let Err(e) = req.set_response_header(name, value) {
                    log::warn(&format!("cannot set {name}: {e}"));
                }
            };
            let (numbers, policy) = status.headers(now, self.policy_header && !self.fixed_numbers);
            for (name, value) in &numbers {
                // With fixed numbers the gateway sets `RateLimit-Limit`.
                if !(self.fixed_numbers && *name == "ratelimit-limit") {
                    set(name, value.as_str());
                }
            }
            if let Some(policy) = policy {
                set("ratelimit-policy", &policy);
            }
        }
        Decision::Continue
    }
}

impl RateLimit {
    /// Takes back the fixed `RateLimit-Limit` and `-Policy` from the
    /// response of a request no limit counted (the gateway makes fixed
    /// edits first, then the ones a hook left).
    fn unfix(&self, req: &mut Request<'_>) {
        if !self.fixed_numbers {
            return;
        }
        for name in ["ratelimit-limit", "ratelimit-policy"] {
            if let Err(e) = req.remove_response_header(name) {
                log::warn(&format!("cannot remove {name}: {e}"));
            }
        }
    }

    /// Decides what one limit's store answer means. `earlier` is the tightest
    /// status of the limits that already passed (their policies join a
    /// refusal's `RateLimit-Policy`).
    pub(crate) fn judge(
        &self,
        rule: &Rule,
        outcome: Result<store::Limit, StoreError>,
        earlier: Option<&Status>,
        now_ms: u64,
    ) -> Verdict {
        match outcome {
            Ok(result) if result.allowed => Verdict::Allowed(Status::new(rule, &result, now_ms)),
            Ok(result) => {
                let mut status = Status::new(rule, &result, now_ms);
                for item in earlier.into_iter().flat_map(|s| &s.policy) {
                    if !status.policy.contains(item) {
                        status.policy.push(item.clone());
                    }
                }
                let body = serde_json::json!({ "error": "rate limited", "limit": rule.name });
                let mut reply = Reply::json(429, &body)
                    .header("retry-after", Decimal::new(status::retry_after_secs(status::millis(result.retry_after))));
                let (numbers, policy) = status.headers(now_ms, self.policy_header);
                for (name, value) in numbers {
                    reply = reply.header(name, value);
                }
                if let Some(policy) = policy {
                    reply = reply.header("ratelimit-policy", policy);
                }
                Verdict::Refused(reply)
            }
            Err(error) => {
                let stop = matches!(error, StoreError::Unavailable(_));
                match self.on_store_error {
                    OnStoreError::Allow => {
                        self.warn(now_ms, &format!("limit `{}` not applied, request allowed: {error}", rule.name));
                        Verdict::FailOpen { stop }
                    }
                    OnStoreError::Deny => {
                        self.warn(now_ms, &format!("limit `{}` not applied, request refused: {error}", rule.name));
                        let body = serde_json::json!({ "error": "rate limiter unavailable" });
                        Verdict::FailClosed(Reply::json(503, &body).header("retry-after", "1"))
                    }
                }
            }
        }
    }

    /// Logs a store failure at warn, at most once per [`WARN_EVERY_MS`]; in
    /// between at debug.
    fn warn(&self, now_ms: u64, message: &str) {
        let due = self.warned_at.get().is_none_or(|at| now_ms.saturating_sub(at) >= WARN_EVERY_MS || now_ms < at);
        if due {
            self.warned_at.set(Some(now_ms));
            log::warn(message);
        } else {
            log::debug(message);
        }
    }
}

/// One request against one limit, in the store.
fn count(rule: &Rule, key: &str) -> Result<store::Limit, StoreError> {
    match rule.kind {
        Kind::TokenBucket { capacity, refill_per_second } => store::take(key, capacity, refill_per_second, 1),
        Kind::SlidingWindow { limit, window_ms } => {
            store::hit(key, limit, std::time::Duration::from_millis(window_ms), 1)
        }
    }
}

/// `missing = "deny"`: the request lacks what the limit counts by.
fn missing_part(rule: &Rule, index: usize) -> Reply {
    let part = rule.key.get(index).map(ToString::to_string).unwrap_or_default();
    let body = serde_json::json!({ "error": "missing rate limit key", "limit": rule.name, "part": part });
    Reply::json(400, &body)
}

export_plugin!(RateLimit, config_schema = "config.schema.json");
