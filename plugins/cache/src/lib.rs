//! `cache`: a shared response cache in the gateway's store. A `GET` (or a
//! `HEAD`, read from the `GET` entry) whose key is in the store is answered
//! in the request phase, without the upstream; otherwise the request goes on
//! and the response phase stores what came back, when it may be stored.
//! With the Redis store backend the whole fleet shares one cache.
//!
//! Every step that touches the store degrades to "no cache": an unreachable
//! store costs a warning in the log, never a failed request.

mod config;
mod directives;
mod entry;
mod key;

use std::time::Duration;

use wasmgate_sdk::prelude::*;
use wasmgate_sdk::store::{self, StoreError};
use wasmgate_sdk::{MANAGED_HEADERS, clock};

pub use crate::config::Config;
use crate::directives::{CacheControl, Freshness, Seconds};
use crate::entry::{Record, Stored, VaryIndex};
use crate::key::Part;

/// Context entry with this request's cache outcome (`hit` is never seen by
/// later plugins: a hit ends the request phase): `miss` or `bypass`.
pub const STATUS_CONTEXT: &str = "cache.status";
/// Context entry: what made the request one user's (empty when nothing
/// did), a newline, and the full key a `GET` response is to be stored
/// under. One entry: a context too full to take it takes neither, where
/// two entries could lose the reason and keep the key (and the answer made
/// for one user would be stored for everyone).
const STORE_CONTEXT: &str = "cache.key";
/// Context entry: the full key an unsafe method invalidates on success.
const INVALIDATE_CONTEXT: &str = "cache.invalidate";
/// Context entries of the plugins that identify a caller: api-key's
/// consumer name, and jwt's verified claims (which it sets whenever it
/// sets `jwt.sub`, also for a token without `sub`).
const CALLER_CONTEXT: [&str; 2] = ["consumer", "jwt.claims"];

/// The store's limits (the same for the in-process and the Redis backend).
const MAX_VALUE_BYTES: usize = wasmgate_sdk::store::MAX_VALUE_BYTES;
const MAX_TTL_MS: u64 = wasmgate_sdk::store::MAX_TTL_MS;

/// Response headers that are not replayed from the cache: the gateway's
/// framing headers, and what is per response rather than per resource.
const NOT_STORED: [&str; 4] = ["age", "x-cache", "x-request-id", "set-cookie"];

/// The plugin: what makes a key and what may be stored.
#[derive(Debug)]
pub struct Cache {
    ttl_s: u64,
    parts: Vec<Part>,
    statuses: Vec<u16>,
    max_body: usize,
    client_refresh: bool,
}

/// What a lookup found.
enum Lookup {
    Hit(Stored),
    Miss,
    Unavailable(StoreError),
}

impl Plugin for Cache {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let c = config.build()?;
        Ok(Self {
            ttl_s: c.ttl_s,
            parts: c.parts,
            statuses: c.statuses,
            max_body: c.max_body,
            client_refresh: c.client_refresh,
        })
    }

    fn info(&self) -> Info {
        // The response body must be buffered to be stored.
        Info { response_body: true, ..Info::both() }
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let method = req.method();
        let head = method == "HEAD";
        if method != "GET" && !head {
            if matches!(method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE") {
                context::set(INVALIDATE_CONTEXT, &self.base_key(req));
            }
            return Decision::Continue;
        }
        // A `GET` with a body (a search query, as Elasticsearch takes one):
        // the key does not hold the body, so one body's answer would be
        // served for every other.
        if has_body(req) {
            context::set(STATUS_CONTEXT, "bypass");
            return Decision::Continue;
        }
        let base = self.base_key(req);
        let cc = request_directives(req);
        // `no-store` asks that nothing of this exchange be stored (RFC 9111
        // §5.2.1.5), not for a fresh answer: with `client_refresh` it is
        // taken as one; without, a stored answer is still served (else any
        // client could make the upstream answer at will with it).
        if cc.no_store && self.client_refresh {
            context::set(STATUS_CONTEXT, "bypass");
            return Decision::Continue;
        }
        // With `client_refresh`, `no-cache` and `max-age=0` ask for a fresh
        // answer, which then refreshes the entry; without (as nginx and
        // Varnish), any client could make the upstream answer again at
        // will, and choose the moment an entry is replaced. Range requests
        // are not served from the cache.
        let max_age = match cc.max_age {
            Some(Seconds::Valid(s)) if self.client_refresh => Some(s),
            _ => None,
        };
        let refresh = self.client_refresh && cc.no_cache;
        let lookup = !refresh && max_age != Some(0) && req.header("range").is_none();
        let mut status = "bypass";
        if lookup {
            let now = clock::now_unix_ms();
            match self.lookup(&base, req, now, max_age) {
                Lookup::Hit(stored) => return Decision::respond(hit(stored, now)),
                Lookup::Miss => status = "miss",
                Lookup::Unavailable(e) => {
                    log::warn(&format!("cache bypassed, the store failed: {e}"));
                    // Storing would only fail (or wait) again.
                    context::set(STATUS_CONTEXT, "bypass");
                    return Decision::Continue;
                }
            }
        }
        context::set(STATUS_CONTEXT, status);
        if head || cc.no_store {
            return Decision::Continue;
        }
        let why = per_user(req).unwrap_or_default();
        context::set(STORE_CONTEXT, &format!("{why}\n{base}"));
        Decision::Continue
    }

    fn on_response(&self, req: &Request<'_>, resp: &mut Response<'_>) -> Decision {
        if let Some(base) = context::get(INVALIDATE_CONTEXT) {
            if (200..400).contains(&resp.status()) {
                invalidate(&base);
            }
            return Decision::Continue;
        }
        let Some(status) = context::get(STATUS_CONTEXT) else {
            return Decision::Continue;
        };
        if let Some(entry) = context::get(STORE_CONTEXT)
            && let Some((why, base)) = entry.split_once('\n')
        {
            let per_user = (!why.is_empty()).then_some(why);
            match self.store(base, per_user, req, resp) {
                Ok(()) => {}
                Err(Skip::Because(why)) => log::debug(&format!("response not cached: {why}")),
                Err(Skip::Failed(e)) => log::warn(&format!("response not cached, the store failed: {e}")),
            }
        }
        if let Err(e) = resp.set_header("x-cache", status.as_str()) {
            log::warn(&format!("cannot set x-cache: {e}"));
        }
        Decision::Continue
    }
}

/// Why a response was not stored.
enum Skip {
    Because(String),
    Failed(StoreError),
}

impl From<StoreError> for Skip {
    fn from(e: StoreError) -> Self {
        Self::Failed(e)
    }
}

impl Cache {
    fn base_key(&self, req: &Request<'_>) -> String {
        key::base(&req.route(), &self.parts, req)
    }

    fn lookup(&self, base: &str, req: &Request<'_>, now: u64, max_age: Option<u64>) -> Lookup {
        let found = match read(&key::store_key(base)) {
            Ok(None) => return Lookup::Miss,
            Ok(Some(Record::Response(stored))) => Ok(Some(stored)),
            Ok(Some(Record::Vary(index))) => {
                match read(&key::store_key(&key::variant(base, index.generation, &index.names, req))) {
                    Ok(Some(Record::Response(stored))) => Ok(Some(stored)),
                    Ok(_) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match found {
            Err(e) => Lookup::Unavailable(e),
            Ok(None) => Lookup::Miss,
            // The store expires the key at the same moment; this covers a
            // store whose clock runs behind the gateway's.
            Ok(Some(stored)) if now >= stored.expires_at_ms => Lookup::Miss,
            // The client will not take an answer this old.
            Ok(Some(stored)) if max_age.is_some_and(|m| stored.age_s(now) > m) => Lookup::Miss,
            Ok(Some(stored)) => Lookup::Hit(stored),
        }
    }

    /// Stores the response under `base` (or one of its variants) when it
    /// may be.
    /// `per_user`: what made the request one user's.
    fn store(&self, base: &str, per_user: Option<&str>, req: &Request<'_>, resp: &Response<'_>) -> Result<(), Skip> {
        let status = resp.status();
        if !self.statuses.contains(&status) {
            return Err(Skip::Because(format!("status {status} is not in `statuses`")));
        }
        if resp.header("set-cookie").is_some() {
            return Err(Skip::Because("it sets a cookie".into()));
        }
        let cc = CacheControl::parse(&resp.header_all("cache-control"));
        // A shared cache must not hand one user's authorised answer to
        // another unless the upstream says it may (RFC 9111 §3.5).
        if !(cc.public || cc.must_revalidate || cc.s_maxage.is_some())
            && let Some(why) = per_user
        {
            return Err(Skip::Because(format!(
                "the request was per-user ({why}) and the response is not marked public, s-maxage or must-revalidate"
            )));
        }
        let Some(vary) = vary_names(&resp.header_all("vary")) else {
            return Err(Skip::Because("Vary: *".into()));
        };
        let now = clock::now_unix_ms();
        let lifetime = match directives::freshness(
            &cc,
            resp.header("expires").as_deref(),
            resp.header("date").as_deref(),
            now,
            self.ttl_s,
        ) {
            Freshness::Lifetime(s) => s,
            Freshness::NotStorable(why) => return Err(Skip::Because(why.into())),
        };
        let initial_age_s = directives::age_s(resp.header("age").as_deref());
        let fresh_s = lifetime.saturating_sub(initial_age_s);
        if fresh_s == 0 {
            return Err(Skip::Because(format!("Age {initial_age_s} is past its freshness of {lifetime}s")));
        }
        let ttl_ms = fresh_s.saturating_mul(1000).min(MAX_TTL_MS);
        let body = resp.body().map_err(|e| Skip::Because(format!("body not readable: {e}")))?;
        if body.len() > self.max_body {
            return Err(Skip::Because(format!("body of {} bytes is over max_body", body.len())));
        }
        let headers = resp
            .headers()
            .into_iter()
            .filter(|(n, _)| !NOT_STORED.contains(&n.as_str()) && !MANAGED_HEADERS.contains(&n.as_str()))
            .collect();
        let expires_at_ms = now.saturating_add(ttl_ms);
        let mut stored = Stored {
            key: key::store_key(base),
            stored_at_ms: now,
            expires_at_ms,
            initial_age_s,
            status,
            headers,
            body,
        };
        if vary.is_empty() {
            return write(&Record::Response(stored), ttl_ms);
        }
        // Keep the index when it names the same headers (its variants stay
        // reachable); otherwise start a new generation.
        let index = match read(&stored.key)? {
            Some(Record::Vary(ix)) if ix.names == vary && ix.expires_at_ms > now => {
                VaryIndex { expires_at_ms: ix.expires_at_ms.max(expires_at_ms), ..ix }
            }
            _ => VaryIndex { key: stored.key.clone(), generation: generation(now), expires_at_ms, names: vary },
        };
        stored.key = key::store_key(&key::variant(base, index.generation, &index.names, req));
        // The variant first: an index without its variant is only a miss.
        write(&Record::Response(stored), ttl_ms)?;
        let index_ttl = index.expires_at_ms.saturating_sub(now).clamp(1, MAX_TTL_MS);
        write(&Record::Vary(index), index_ttl)
    }
}

/// The cached response as a reply: its status, headers and body (none for
/// `HEAD`), with its `Age` and `x-cache: hit`.
/// The stored response, body included even for a `HEAD`: the gateway sets
/// `content-length` from it and sends no body for a `HEAD`.
fn hit(stored: Stored, now: u64) -> Reply {
    let age = stored.age_s(now);
    let mut reply = Reply::new(stored.status);
    for (name, value) in stored.headers {
        reply = reply.header(name, value);
    }
    reply = reply.header("age", age.to_string()).header("x-cache", "hit");
    reply.body(stored.body)
}

/// Why the request is one user's, if it is: it carries `Authorization` or
/// `Cookie`, its client presented a certificate (which the upstream may be
/// told, `X-Forwarded-Client-Cert`, and answer by), or a plugin before this
/// one identified its caller (api-key, and jwt with `strip_token` or
/// reading a cookie, leave no `Authorization`).
/// Asked in the request phase, of the request as this plugin keys it; only
/// for a request whose response may be stored, so a hit costs nothing.
fn per_user(req: &Request<'_>) -> Option<String> {
    for (name, text) in [("authorization", "Authorization"), ("cookie", "Cookie")] {
        if req.header(name).is_some() {
            return Some(format!("it carried `{text}`"));
        }
    }
    if req.client_certificate().is_some() {
        return Some("its client presented a certificate".to_owned());
    }
    CALLER_CONTEXT
        .into_iter()
        .find(|key| context::get(key).is_some())
        .map(|key| format!("an earlier plugin identified the caller in context `{key}`"))
}

/// Whether the request carries a body: a length other than 0, or a
/// transfer coding (HTTP/1's chunked).
fn has_body(req: &Request<'_>) -> bool {
    req.header("transfer-encoding").is_some()
        || req.header_all("content-length").iter().any(|v| v.iter().any(|&b| b != b'0'))
}

/// The request's `Cache-Control`, with HTTP/1.0's `Pragma: no-cache` when
/// there is none.
fn request_directives(req: &Request<'_>) -> CacheControl {
    let lines = req.header_all("cache-control");
    let mut cc = CacheControl::parse(&lines);
    if lines.is_empty() {
        cc.no_cache = req.header_all("pragma").iter().any(|v| v.eq_ignore_ascii_case(b"no-cache"));
    }
    cc
}

/// The request headers a response varies on (lowercase, sorted, once
/// each); `None` for `Vary: *`, which no cache can match.
fn vary_names(lines: &[Vec<u8>]) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for line in lines {
        for name in String::from_utf8_lossy(line).split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            names.push(name.to_ascii_lowercase());
        }
    }
    names.sort();
    names.dedup();
    Some(names)
}

/// The record under a store key ([`key::store_key`]), if it is one this
/// cache wrote there.
fn read(store_key: &str) -> Result<Option<Record>, StoreError> {
    let Some(bytes) = store::get(store_key)? else {
        return Ok(None);
    };
    let Some(record) = Record::decode(&bytes) else {
        log::warn("unreadable cache record (another version?); treating it as a miss");
        return Ok(None);
    };
    // A record written for another key (by hand, by a foreign writer): a
    // miss, never the wrong answer.
    Ok((record.key() == store_key).then_some(record))
}

/// Writes `record` under its store key.
fn write(record: &Record, ttl_ms: u64) -> Result<(), Skip> {
    let bytes = record.encode();
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(Skip::Because(format!("entry of {} bytes is over the store's 1 MiB", bytes.len())));
    }
    store::set(record.key(), &bytes, Some(Duration::from_millis(ttl_ms.max(1))))?;
    Ok(())
}

fn invalidate(base: &str) {
    if let Err(e) = store::delete(&key::store_key(base)) {
        log::warn(&format!("cache entry not invalidated, the store failed: {e}"));
    }
}

/// A new vary generation: the time, with the monotonic clock's low bits so
/// two gateways starting one in the same millisecond still differ.
fn generation(now_ms: u64) -> u64 {
    (now_ms << 16) | (clock::monotonic_ns() & 0xffff)
}

export_plugin!(Cache, config_schema = "config.schema.json");

#[cfg(test)]
mod tests;
