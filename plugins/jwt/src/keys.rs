//! The verification keys: those fixed by the config (inline JWKS, PEM public
//! keys, an HMAC key from a granted secret) and those fetched from
//! `jwks_url`. Every key is a handle to a key the gateway holds; signatures
//! are verified in the gateway's native code, never in Wasm.
//!
//! The fetched set is refreshed when it is older than `jwks_max_age`, or when
//! a token names a `kid` no key has — but never twice within
//! `jwks_refresh_interval`, so tokens with made-up kids cannot make the
//! gateway hammer the identity provider. A failed fetch keeps the keys it had.
//!
//! The plugin's instances share what they fetched and when they tried
//! ([`wasmgate_sdk::shared`]): an instance made later — another worker's,
//! one replacing a recycled instance, each request's under `per-request`
//! when `grants.shared` — starts from the keys already fetched instead of
//! fetching again, keeps them while the identity provider is down, and the
//! rate bound holds for the plugin, not for each instance.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use serde_json::Value;
use wasmgate_sdk::ConfigError;
use wasmgate_sdk::crypto::{Algorithm, Key, KeyError};
use wasmgate_sdk::http::{self, HttpError, OutgoingRequest};
use wasmgate_sdk::{log, shared};

use crate::config::{KeySources, RemoteSettings};

/// One key and what it may verify.
#[derive(Debug)]
pub struct Entry {
    pub kid: Option<String>,
    pub key: Rc<Key>,
    /// Asked once: `Key::algorithms` is a call into the gateway.
    pub algs: Vec<Algorithm>,
    /// The JWK text for fetched keys (to notice a withdrawn key); empty otherwise.
    id: String,
}

impl Entry {
    fn new(kid: Option<String>, key: Key, id: String) -> Self {
        let algs = key.algorithms();
        Self { kid, key: Rc::new(key), algs, id }
    }
}

/// What a refresh did to the fetched keys, in the order two outcomes
/// combine (the larger wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refresh {
    /// No fetch (not needed, or rate-bound), or a failed one.
    Unchanged,
    /// Fetched; no key that was there before is gone.
    Fetched,
    /// Fetched, and a key that was there before is gone: tokens verified
    /// with it must be verified again.
    Withdrawn,
}

/// Every key of one route's plugin.
#[derive(Debug)]
pub struct KeySet {
    fixed: Vec<Entry>,
    remote: Option<RefCell<Remote>>,
}

#[derive(Debug)]
struct Remote {
    settings: RemoteSettings,
    keys: Vec<Entry>,
    /// The JWKS `keys` were made from, to share.
    text: String,
    /// Last successful fetch (this instance's or another's).
    fetched_at: Option<u64>,
    /// Last fetch, successful or not: the rate bound.
    last_attempt: Option<u64>,
    /// Last look at what the instances share ([`Remote::adopt`]).
    looked_at: Option<u64>,
}

/// How often an instance that may not fetch (its rate bound) looks for the
/// keys another fetched: each look copies the shared JWKS into the
/// instance, so tokens with made-up kids must not cause one each.
const LOOK_INTERVAL_MS: u64 = 1_000;

impl KeySet {
    /// Makes the configured keys and fetches `jwks_url` once.
    pub fn build(sources: &KeySources, allowed: Option<&[Algorithm]>, now_ms: u64) -> Result<Self, ConfigError> {
        let mut fixed = Vec::new();
        if let Some(text) = &sources.jwks {
            let (entries, _) = parse_jwks(text, true).map_err(|e| format!("jwks: {e}"))?;
            fixed.extend(entries);
        }
        for (i, (kid, pem)) in sources.public_keys.iter().enumerate() {
            let at = kid.as_ref().map_or_else(|| format!("public_keys[{i}]"), |kid| format!("public_keys.{kid}"));
            let key =
                Key::from_pem(pem).map_err(|e| format!("{at}: {e}; give a PEM `PUBLIC KEY` or `RSA PUBLIC KEY`"))?;
            fixed.push(Entry::new(kid.clone(), key, String::new()));
        }
        if let Some(name) = &sources.hmac_secret {
            let key = Key::from_secret(name).map_err(|e| match e {
                KeyError::NotGranted(_) => format!(
                    "hmac_secret: secret `{name}` is not granted to this plugin; add to its [plugin.NAME] table: \
                     grants = {{ crypto = true, secrets = {{ {name} = {{ file = \"/path/to/secret\" }} }} }}"
                ),
                other => format!("hmac_secret: {other}"),
            })?;
            fixed.push(Entry::new(None, key, String::new()));
        }
        if let (Some(allowed), None) = (allowed, &sources.remote) {
            let verifiable = fixed.iter().flat_map(|e| &e.algs).any(|a| allowed.contains(a));
            if !verifiable {
                let have: Vec<&str> = fixed.iter().flat_map(|e| &e.algs).map(|a| a.jwt_name()).collect();
                return Err(format!(
                    "algorithms: no configured key verifies any of them (the keys verify {}); \
                     fix the list or the keys",
                    have.join(", ")
                )
                .into());
            }
        }
        let remote = match &sources.remote {
            None => None,
            Some(settings) => Some(RefCell::new(Remote::first(settings.clone(), now_ms)?)),
        };
        Ok(Self { fixed, remote })
    }

    /// Refreshes the fetched keys if they are stale or `kid` is unknown:
    /// from what another instance fetched since (looked for at most once
    /// every [`LOOK_INTERVAL_MS`]), or, within the rate bound, from the
    /// identity provider.
    pub fn refresh(&self, kid: Option<&str>, now_ms: u64) -> Refresh {
        let Some(remote) = &self.remote else { return Refresh::Unchanged };
        let mut remote = remote.borrow_mut();
        let needed = |remote: &Remote| {
            let unknown = kid.is_some_and(|kid| !self.knows(kid) && !has_kid(&remote.keys, kid));
            unknown || remote.stale(now_ms)
        };
        if !needed(&remote) {
            return Refresh::Unchanged;
        }
        // Another instance's fetch, or its try, counts as this one's. Looked
        // for even when this one may not fetch: at a key's rotation, the
        // tokens signed with the new key reach every worker at once, and an
        // instance that looked while another's fetch was under way would
        // otherwise refuse them until its own rate bound passed.
        if !remote.may_fetch(now_ms) {
            return if remote.may_look(now_ms) { remote.adopt(now_ms) } else { Refresh::Unchanged };
        }
        let adopted = remote.adopt(now_ms);
        if !(needed(&remote) && remote.may_fetch(now_ms)) {
            return adopted;
        }
        // A refusal is the config's, which its load checked: not expected here.
        let fetched = remote.fetch(now_ms).unwrap_or_else(|refused| {
            log::warn(&format!("jwks: {refused}"));
            Refresh::Unchanged
        });
        adopted.max(fetched)
    }

    /// The keys that may verify a token with `alg` and `kid`: keys with that
    /// kid, and keys without one.
    pub fn candidates(&self, alg: Algorithm, kid: Option<&str>) -> Vec<Rc<Key>> {
        let remote = self.remote.as_ref().map(RefCell::borrow);
        let fetched = remote.as_ref().map_or(&[][..], |r| r.keys.as_slice());
        self.fixed
            .iter()
            .chain(fetched)
            .filter(|e| e.algs.contains(&alg))
            .filter(|e| match (kid, &e.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .map(|e| e.key.clone())
            .collect()
    }

    /// Whether any key (fixed or fetched) has this kid.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.knows(kid) || self.remote.as_ref().is_some_and(|r| has_kid(&r.borrow().keys, kid))
    }

    fn knows(&self, kid: &str) -> bool {
        has_kid(&self.fixed, kid)
    }
}

fn has_kid(entries: &[Entry], kid: &str) -> bool {
    entries.iter().any(|e| e.kid.as_deref() == Some(kid))
}

impl Remote {
    /// The first fetch, at configure. An operator's mistake (a URL that is
    /// not granted or not valid) refuses the config; anything that may be
    /// transient (the identity provider is down) is logged, and the next
    /// request after the rate bound tries again.
    ///
    /// When another instance of the plugin fetched the keys within
    /// `jwks_max_age`, or tried within `jwks_refresh_interval`, this one
    /// starts from that and does not fetch.
    fn first(settings: RemoteSettings, now_ms: u64) -> Result<Self, ConfigError> {
        let mut remote = Self {
            settings,
            keys: Vec::new(),
            text: String::new(),
            fetched_at: None,
            last_attempt: None,
            looked_at: None,
        };
        remote.adopt(now_ms);
        if !remote.stale(now_ms) || !remote.may_fetch(now_ms) {
            return Ok(remote);
        }
        remote.fetch(now_ms)?;
        Ok(remote)
    }

    fn stale(&self, now_ms: u64) -> bool {
        elapsed(self.fetched_at, now_ms).is_none_or(|age| age >= self.settings.max_age_ms)
    }

    fn may_look(&self, now_ms: u64) -> bool {
        elapsed(self.looked_at, now_ms).is_none_or(|since| since >= LOOK_INTERVAL_MS)
    }

    fn may_fetch(&self, now_ms: u64) -> bool {
        elapsed(self.last_attempt, now_ms).is_none_or(|since| since >= self.settings.refresh_interval_ms)
    }

    /// Fetches the keys, claiming the try first and sharing the keys
    /// fetched. What may be transient (the identity provider down, a bad
    /// document) is logged, the keys fetched before kept, and the next
    /// request after the rate bound tries again; an operator's mistake (a
    /// URL not granted or not valid) is returned, said as a config error.
    fn fetch(&mut self, now_ms: u64) -> Result<Refresh, String> {
        self.claim(now_ms);
        let url = &self.settings.url;
        match fetch(url) {
            Ok((keys, text)) => {
                log::info(&format!("jwks: {} keys from {url}", keys.len()));
                let refresh = self.replace(keys, text, Some(now_ms));
                self.publish(true, now_ms);
                Ok(refresh)
            }
            Err(FetchError::Http(HttpError::NotGranted(_))) => Err(format!(
                "jwks_url: `{url}` is not granted to this plugin; add its upstream name or origin to \
                 [plugin.NAME] grants.http, e.g. grants = {{ http = [\"https://idp.example.com\"] }}"
            )),
            Err(FetchError::Http(HttpError::InvalidRequest(m))) => {
                Err(format!("jwks_url: `{url}` cannot be requested: {m}"))
            }
            Err(e) => {
                let kept = match self.keys.len() {
                    0 => String::new(),
                    n => format!("keeping the {n} keys fetched before; "),
                };
                log::warn(&format!("jwks: cannot fetch {url}: {e}; {kept}will retry on a later request"));
                Ok(Refresh::Unchanged)
            }
        }
    }

    /// Notes a fetch about to be made, and shares it before it is: the
    /// other instances wait for the rate bound rather than fetch too while
    /// it is under way (up to the grant's `http_timeout`).
    fn claim(&mut self, now_ms: u64) {
        self.last_attempt = Some(now_ms);
        self.publish(false, now_ms);
    }

    /// Makes `keys` (from `text`, fetched at `fetched_at`: `None`, unknown,
    /// is stale) the fetched ones.
    fn replace(&mut self, keys: Vec<Entry>, text: String, fetched_at: Option<u64>) -> Refresh {
        let withdrawn = self.keys.iter().any(|old| !keys.iter().any(|new| new.id == old.id));
        self.keys = keys;
        self.text = text;
        self.fetched_at = fetched_at;
        if withdrawn { Refresh::Withdrawn } else { Refresh::Fetched }
    }

    /// The key the plugin's instances share this URL's JWKS under.
    fn shared_key(&self) -> String {
        format!("jwks {}", self.settings.url)
    }

    /// What the instances share of this URL, as of `now_ms`: the last
    /// try, and the keys' text and fetch time when they are to replace this
    /// instance's (fetched later, or this one has none). Times ahead of this
    /// instance's clock (written before the clock was set back) are not
    /// taken: such keys count as stale.
    fn shared(&self, now_ms: u64) -> Shared {
        let bytes = shared::get(&self.shared_key());
        let Some(record) = bytes.as_deref().and_then(Record::decode) else { return Shared::default() };
        let fetched_at = record.fetched_at.and_then(|at| as_of(at, now_ms));
        let newer = !record.text.is_empty() && (fetched_at > self.fetched_at || self.text.is_empty());
        Shared {
            attempted_at: as_of(record.attempted_at, now_ms),
            newer: newer.then(|| (record.text.to_owned(), fetched_at)),
        }
    }

    /// Takes the keys another instance fetched after this one's, or any
    /// when this one has none, and counts its last try towards the rate
    /// bound.
    fn adopt(&mut self, now_ms: u64) -> Refresh {
        self.looked_at = Some(now_ms);
        let theirs = self.shared(now_ms);
        self.last_attempt = self.last_attempt.max(theirs.attempted_at);
        let Some((text, fetched_at)) = theirs.newer else { return Refresh::Unchanged };
        // It was a usable JWKS when fetched; its keys are made again here,
        // each instance holding its own.
        match parse_jwks(&text, false) {
            Ok((keys, _)) if !keys.is_empty() => self.replace(keys, text, fetched_at),
            _ => Refresh::Unchanged,
        }
    }

    /// Shares this instance's last try (or another's later one), and its
    /// keys: always when it has just `fetched` them (the newest, whatever
    /// the record says); otherwise unless the record's are to replace them
    /// (as [`adopt`](Self::adopt) would take them). A write the gateway
    /// refuses (a URL over the key bound, the plugin's space full,
    /// `per-request` isolation without `grants.shared`) leaves each
    /// instance fetching its own.
    fn publish(&self, fetched: bool, now_ms: u64) {
        let Some(attempted_at) = self.last_attempt else { return };
        let theirs = self.shared(now_ms);
        let attempted_at = attempted_at.max(theirs.attempted_at.unwrap_or(0));
        let record = match &theirs.newer {
            Some((text, fetched_at)) if !fetched => Record { attempted_at, fetched_at: *fetched_at, text },
            _ => Record { attempted_at, fetched_at: self.fetched_at, text: &self.text },
        };
        let _ = shared::set(&self.shared_key(), &record.encode());
    }
}

/// What [`Remote::shared`] found.
#[derive(Debug, Default)]
struct Shared {
    attempted_at: Option<u64>,
    /// Keys to replace the instance's: the JWKS text, and when it was fetched.
    newer: Option<(String, Option<u64>)>,
}

/// How far ahead of this instance's clock reading another's record may be
/// and still count as written now: instances read the clock at different
/// moments (another worker's claim a millisecond after this request began).
const SKEW_MS: u64 = 5_000;

/// Another instance's time `at` as this one's: at most `now_ms`; `None`
/// when it is further ahead than [`SKEW_MS`] (written before the clock was
/// set back).
fn as_of(at: u64, now_ms: u64) -> Option<u64> {
    (at <= now_ms.saturating_add(SKEW_MS)).then(|| at.min(now_ms))
}

/// A URL's JWKS as the instances share it: when it was last tried and last
/// fetched, then the document (empty before a first successful fetch).
#[derive(Debug, PartialEq, Eq)]
struct Record<'a> {
    attempted_at: u64,
    fetched_at: Option<u64>,
    text: &'a str,
}

impl<'a> Record<'a> {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(16 + self.text.len());
        bytes.extend_from_slice(&self.attempted_at.to_le_bytes());
        // Never fetched: 0 (the epoch, which no fetch happens at).
        bytes.extend_from_slice(&self.fetched_at.unwrap_or(0).to_le_bytes());
        bytes.extend_from_slice(self.text.as_bytes());
        bytes
    }

    fn decode(bytes: &'a [u8]) -> Option<Self> {
        let (attempted, rest) = bytes.split_first_chunk::<8>()?;
        let (fetched, text) = rest.split_first_chunk::<8>()?;
        let fetched_at = u64::from_le_bytes(*fetched);
        Some(Self {
            attempted_at: u64::from_le_bytes(*attempted),
            fetched_at: (fetched_at != 0).then_some(fetched_at),
            text: std::str::from_utf8(text).ok()?,
        })
    }
}

/// Time since `then`; `None` when there was no `then`, or the clock went
/// back past it (then it is as if it never happened).
fn elapsed(then: Option<u64>, now_ms: u64) -> Option<u64> {
    then.and_then(|t| now_ms.checked_sub(t))
}

#[derive(Debug)]
enum FetchError {
    Http(HttpError),
    Status(u16),
    Document(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(e) => write!(f, "{e}"),
            Self::Status(s) => write!(f, "status {s}"),
            Self::Document(m) => f.write_str(m),
        }
    }
}

/// The usable keys of the JWKS at `url`, and its text.
fn fetch(url: &str) -> Result<(Vec<Entry>, String), FetchError> {
    let resp = http::send(OutgoingRequest::get(url).header("accept", "application/json")).map_err(FetchError::Http)?;
    if resp.status != 200 {
        return Err(FetchError::Status(resp.status));
    }
    let text = String::from_utf8(resp.body).map_err(|_| FetchError::Document("the JWKS is not UTF-8".into()))?;
    let (keys, skipped) = parse_jwks(&text, false).map_err(FetchError::Document)?;
    for problem in skipped {
        log::warn(&format!("jwks: {url}: skipping {problem}"));
    }
    if keys.is_empty() {
        return Err(FetchError::Document("the JWKS has no usable signing keys".into()));
    }
    Ok((keys, text))
}

/// The keys of a JWKS document. Keys marked `"use": "enc"` are not for
/// signatures and are left out. A key the gateway cannot use is an error
/// when `strict` (the operator's own config), and skipped (returned as a
/// problem to log) otherwise: an identity provider may publish kinds of keys
/// this gateway does not verify.
pub fn parse_jwks(text: &str, strict: bool) -> Result<(Vec<Entry>, Vec<String>), String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Err("not a JWKS: it needs a `keys` array, as in {\"keys\": [{\"kty\": ...}]}".into());
    };
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (i, jwk) in keys.iter().enumerate() {
        let kid = match jwk.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => {
                problems.push(format!("keys[{i}]: `kid` must be a string"));
                continue;
            }
        };
        if jwk.get("use").and_then(Value::as_str) == Some("enc") {
            continue;
        }
        let id = jwk.to_string();
        match Key::from_jwk(&id) {
            Ok(key) => entries.push(Entry::new(kid, key, id)),
            Err(e) => {
                let named = kid.map_or_else(String::new, |kid| format!(" (kid \"{kid}\")"));
                problems.push(format!("keys[{i}]{named}: {e}"));
            }
        }
    }
    if strict && let Some(first) = problems.first() {
        return Err(format!("{first}; fix or remove that key"));
    }
    Ok((entries, problems))
}

#[cfg(test)]
mod record_tests {
    use super::Record;

    #[test]
    fn a_record_reads_back_as_written_and_a_short_or_broken_one_not_at_all() {
        for fetched_at in [None, Some(1_700_000_000_000)] {
            let record = Record { attempted_at: 1_700_000_000_500, fetched_at, text: "{\"keys\":[]}" };
            let bytes = record.encode();
            assert_eq!(Record::decode(&bytes), Some(record));
        }
        assert_eq!(Record::decode(&[0; 15]), None);
        let mut not_text = Record { attempted_at: 1, fetched_at: Some(1), text: "" }.encode();
        not_text.push(0xff);
        assert_eq!(Record::decode(&not_text), None);
    }
}
