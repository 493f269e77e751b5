//! `jwt`: JWT bearer authentication. Reads the token from a header or a
//! cookie, verifies its signature through the gateway's `crypto` capability
//! (never in Wasm), checks its claims, and hands them to the rest of the
//! chain in the context (`jwt.claims`, `jwt.sub`) and, if configured, in
//! request headers. Anything else is answered 401 (RFC 6750).
//!
//! The request path: [`Jwt::on_request`] → token from the request → the
//! verified-token `cache` (a hit skips everything below) → `token` shape
//! and `alg` → `keys` (refreshing a fetched JWKS when needed) → signature
//! → `claims` → cache, context and headers.

mod b64;
mod cache;
mod claims;
mod config;
mod json;
mod keys;
mod reply;
mod token;

#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use serde_json::Value;
use wasmgate_sdk::clock;
use wasmgate_sdk::prelude::*;

use crate::cache::{Cache, Verified};
use crate::config::{Config, Settings, Source};
use crate::keys::{KeySet, Refresh};
use crate::reply::Rejection;

/// The context key holding the verified claims (JSON text).
pub const CONTEXT_CLAIMS: &str = "jwt.claims";
/// The context key holding the `sub` claim.
pub const CONTEXT_SUB: &str = "jwt.sub";

/// The plugin: one per route that uses it.
#[derive(Debug)]
pub struct Jwt {
    settings: Settings,
    keys: KeySet,
    cache: RefCell<Cache>,
    verifications: Cell<u64>,
}

impl Plugin for Jwt {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let settings = config.build()?;
        let keys = KeySet::build(&settings.keys, settings.allowed.as_deref(), clock::now_unix_ms())?;
        let cache = RefCell::new(Cache::new(settings.cache_size, cache::MAX_BYTES));
        Ok(Self { settings, keys, cache, verifications: Cell::new(0) })
    }

    fn info(&self) -> Info {
        Info::default()
    }

    /// Whatever happens next, the client's own copies of the headers claims
    /// are forwarded in never reach the upstream: the gateway removes them
    /// before the request hook, without a call of their own.
    fn fixed_headers(&self) -> FixedHeaders {
        let request = self.settings.forward.iter().map(|(_, header)| (header.clone(), HeaderEdit::Remove)).collect();
        FixedHeaders { request, response: Vec::new() }
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        match self.authenticate(req) {
            Ok(verified) => {
                self.apply(req, &verified);
                Decision::Continue
            }
            Err(rejection) => {
                if let Rejection::Invalid(reason) = &rejection
                    && log::enabled(log::Level::Debug)
                {
                    log::debug(&format!("token refused: {reason}"));
                }
                Decision::respond(reply::unauthorized(&self.settings.realm, &rejection))
            }
        }
    }
}

impl Jwt {
    /// How many signature checks this instance has asked the gateway for
    /// (a cache hit asks for none).
    pub fn verifications(&self) -> u64 {
        self.verifications.get()
    }

    fn authenticate(&self, req: &Request<'_>) -> Result<Rc<Verified>, Rejection> {
        let token = self.extract(req)?;
        if token.len() > self.settings.max_token_bytes {
            return Err("token too large".into());
        }
        let now = clock::now_unix_ms();
        // A hit compares the bytes; only a token not seen before is checked
        // as text (the cache holds none that is not).
        if let Some(hit) = self.cache.borrow_mut().get(&token, now) {
            return Ok(hit);
        }
        let text = std::str::from_utf8(&token).map_err(|_| "token is not valid text")?;
        let parsed = token::parse(text, self.settings.allowed.as_deref())?;
        let kid = parsed.kid.as_deref();
        if self.keys.refresh(kid, now) == Refresh::Withdrawn {
            self.cache.borrow_mut().clear();
        }
        let candidates = self.keys.candidates(parsed.alg, kid);
        if candidates.is_empty() {
            return Err(match kid {
                Some(kid) if !self.keys.has_kid(kid) => "unknown key id (kid)".into(),
                _ => format!("no key for algorithm {}", parsed.alg.jwt_name()).into(),
            });
        }
        let verified = candidates.iter().any(|key| {
            self.verifications.set(self.verifications.get() + 1);
            key.verify(parsed.alg, parsed.signing_input.as_bytes(), &parsed.signature)
        });
        if !verified {
            return Err("invalid signature".into());
        }
        let claims = json::parse_object(&parsed.payload).map_err(|e| match e {
            json::ObjectError::NotJson => "token claims are not JSON",
            json::ObjectError::NotObject => "token claims are not a JSON object",
            json::ObjectError::Duplicate => "token claims repeat a name",
        })?;
        let checked = claims::check(&claims, &self.settings.rules, now)?;
        let forwards =
            self.settings.forward.iter().map(|(claim, _)| claims.get(claim).and_then(header_value)).collect();
        let entry = Rc::new(Verified {
            // parse_object accepted it, so it is UTF-8.
            claims: String::from_utf8(parsed.payload).map_err(|_| "token claims are not JSON")?,
            sub: checked.sub,
            forwards,
            verified_at_ms: now,
            valid_until_ms: checked
                .valid_until_ms
                .unwrap_or(u64::MAX)
                .min(now.saturating_add(self.settings.cache_max_age_ms)),
        });
        self.cache.borrow_mut().insert(&token, entry.clone(), now);
        Ok(entry)
    }

    /// The token's bytes, from where the config says it is.
    fn extract(&self, req: &Request<'_>) -> Result<Vec<u8>, Rejection> {
        match &self.settings.source {
            Source::Header { name, scheme } => {
                let Some(mut value) = req.header_single(name).map_err(|_| "more than one token")? else {
                    return Err(Rejection::Missing);
                };
                let blank = |b: &u8| matches!(b, b' ' | b'\t');
                let value_at = trimmed(&value, blank);
                let token_at = match scheme {
                    None => value_at,
                    Some(scheme) => {
                        let (word, rest) = match value[value_at.clone()].iter().position(blank) {
                            Some(gap) => (value_at.start..value_at.start + gap, value_at.start + gap..value_at.end),
                            None => (value_at.clone(), value_at.end..value_at.end),
                        };
                        if !value[word].eq_ignore_ascii_case(scheme.as_bytes()) {
                            // Another scheme (Basic, ...): no token of ours.
                            return Err(Rejection::Missing);
                        }
                        let start = rest.start + value[rest.clone()].iter().take_while(|b| blank(b)).count();
                        start..rest.end
                    }
                };
                if token_at.is_empty() {
                    return Err(if scheme.is_some() { "empty token".into() } else { Rejection::Missing });
                }
                value.truncate(token_at.end);
                value.drain(..token_at.start);
                Ok(value)
            }
            Source::Cookie { name } => {
                let mut found = cookies(req).into_iter().filter(|(n, _)| n == name).map(|(_, v)| v);
                let token = found.next();
                if found.next().is_some() {
                    return Err("more than one token".into());
                }
                token.filter(|t| !t.is_empty()).map(String::into_bytes).ok_or(Rejection::Missing)
            }
        }
    }

    /// Hands the verified token to the rest of the chain.
    fn apply(&self, req: &mut Request<'_>, verified: &Verified) {
        context::set(CONTEXT_CLAIMS, &verified.claims);
        match &verified.sub {
            Some(sub) => context::set(CONTEXT_SUB, sub),
            None => {
                context::remove(CONTEXT_SUB);
            }
        }
        for ((claim, header), value) in self.settings.forward.iter().zip(&verified.forwards) {
            if let Some(value) = value
                && req.set_header(header, value).is_err()
            {
                // The value is the client's data: say which claim, not what it held.
                log::warn(&format!("forward_claims.{claim}: its value cannot be sent in `{header}`; not forwarded"));
            }
        }
        if self.settings.strip_token {
            match &self.settings.source {
                Source::Header { name, .. } => {
                    req.remove_header(name);
                }
                Source::Cookie { name } => strip_cookie(req, name),
            }
        }
    }
}

/// A claim as a header value: strings as they are, anything else as JSON.
fn header_value(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Every `name=value` pair of every `Cookie` header (HTTP/2 may send several).
fn cookies(req: &Request<'_>) -> Vec<(String, String)> {
    req.header_all("cookie")
        .iter()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

/// Where `bytes` is once what `blank` matches is cut from both ends.
fn trimmed(bytes: &[u8], blank: impl Fn(&u8) -> bool) -> std::ops::Range<usize> {
    let start = bytes.iter().position(|b| !blank(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !blank(b)).map_or(start, |last| last + 1);
    start..end
}

/// Removes the token's cookie and keeps the others.
fn strip_cookie(req: &mut Request<'_>, name: &str) {
    let rest: Vec<String> = req
        .header_all("cookie")
        .iter()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .map(|v| {
            v.split(';')
                .filter(|pair| pair.split_once('=').is_none_or(|(n, _)| n.trim() != name))
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|v| !v.is_empty())
        .collect();
    req.remove_header("cookie");
    for value in rest {
        if req.append_header("cookie", &value).is_err() {
            log::warn("strip_token: could not put back the other cookies");
        }
    }
}

export_plugin!(Jwt, config_schema = "config.schema.json");
