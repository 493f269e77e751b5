//! Kept outcomes of request hooks that depend only on declared facts of the
//! request (WIT `setup.memoize-request`): the gateway keeps what a call did
//! — its edits and its decision — under the values of those facts, and for
//! a later request with the same values does the same itself, without
//! calling the plugin.
//!
//! The claim is checked on every call the gateway keeps: the exchange
//! records the call ([`Recording`]), and a call that read anything it did
//! not declare, or did something that is not a function of those facts
//! (read the clock, logged a warning), is not kept. A plugin granted the
//! store or outbound HTTP may not declare at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use http::header::{HeaderName, HeaderValue};

pub use wasmgate_common::fact::{Read, RequestFact};

use super::Outcome;
use crate::exchange::{Exchange, HeaderEdit};

/// Most facts a plugin may declare.
pub const MAX_FACTS: usize = 16;
/// Most outcomes kept per (route, plugin), in two generations of half as
/// many: when the newer one is full, the older one is dropped and the newer
/// becomes it, and an outcome found in the older one moves back to the
/// newer. So outcomes in use survive, and a client sending ever new values
/// costs memory only up to this bound.
pub const MAX_KEPT: usize = 1024;
/// The longest key (the declared facts' values together) kept; a request
/// with more is simply called.
pub const MAX_KEY_BYTES: usize = 4096;
/// The most bytes of edits and reply one kept outcome may hold; a call
/// that made more is not kept. With the two bounds above, a link's kept
/// outcomes stay under ~12 MiB however its requests vary.
pub const MAX_OUTCOME_BYTES: usize = 8192;

/// A fact of the request a memoized hook declared (WIT `request-fact`),
/// its header names parsed once.
pub type Fact = RequestFact<HeaderName, String>;

/// An edit a recorded call made, checked, as the gateway makes it again.
#[derive(Debug, Clone)]
pub enum Effect {
    RequestHeader(HeaderName, HeaderEdit<HeaderValue>),
    /// A response header left for the response (`set-response-header`).
    ResponseHeader(HeaderName, HeaderEdit<HeaderValue>),
    Path(String),
    Query(Option<String>),
    ContextSet(String, String),
    ContextRemove(String),
}

impl Effect {
    /// About what it holds, for the bound on a kept outcome.
    fn bytes(&self) -> usize {
        let edit = |name: &HeaderName, edit: &HeaderEdit<HeaderValue>| {
            name.as_str().len()
                + match edit {
                    HeaderEdit::Set(v) | HeaderEdit::Append(v) => v.len(),
                    HeaderEdit::Remove => 0,
                }
        };
        match self {
            Self::RequestHeader(n, e) | Self::ResponseHeader(n, e) => edit(n, e),
            Self::Path(p) => p.len(),
            Self::Query(q) => q.as_ref().map_or(0, String::len),
            Self::ContextSet(k, v) => k.len() + v.len(),
            Self::ContextRemove(k) => k.len(),
        }
    }
}

/// One call of a memoized hook as it runs: whether it kept to its declared
/// facts, and its edits.
#[derive(Debug)]
pub struct Recording {
    facts: Arc<[Fact]>,
    effects: Vec<Effect>,
    /// The bytes `effects` hold, bounded by [`MAX_OUTCOME_BYTES`].
    bytes: usize,
    spoiled: bool,
}

impl Recording {
    pub fn new(facts: Arc<[Fact]>) -> Self {
        Self { facts, effects: Vec::new(), bytes: 0, spoiled: false }
    }

    /// Notes a read; one of an undeclared fact spoils the recording.
    pub fn reads(&mut self, read: Read<'_>) {
        if !self.facts.iter().any(|f| f.covers(&read)) {
            self.spoiled = true;
        }
    }

    pub fn spoil(&mut self) {
        self.spoiled = true;
    }

    pub fn record(&mut self, effect: Effect) {
        if self.spoiled {
            return;
        }
        self.bytes += effect.bytes();
        if self.bytes > MAX_OUTCOME_BYTES {
            self.spoiled = true;
            self.effects = Vec::new();
            return;
        }
        self.effects.push(effect);
    }

    pub fn is_spoiled(&self) -> bool {
        self.spoiled
    }
}

/// What a kept call did.
#[derive(Debug)]
pub struct Kept {
    effects: Vec<Effect>,
    outcome: Outcome,
}

impl Kept {
    /// Makes the kept call's edits on `ex` (as the plugin at `ex.link`) and
    /// gives its decision.
    pub fn replay(&self, ex: &mut Exchange) -> Outcome {
        for effect in &self.effects {
            // Each was accepted when recorded; one refused now (a header
            // map full from other edits) is skipped, as the call's would be.
            match effect.clone() {
                Effect::RequestHeader(name, edit) => ex.apply_request_edit(name, edit),
                Effect::ResponseHeader(name, edit) => {
                    let _ = ex.leave_response_header(name, edit);
                }
                Effect::Path(path) => {
                    let _ = ex.set_path(&path);
                }
                Effect::Query(query) => {
                    let _ = ex.set_query(query.as_deref());
                }
                Effect::ContextSet(key, value) => {
                    let _ = ex.context_set(key, value);
                }
                Effect::ContextRemove(key) => {
                    ex.context.remove(&key);
                }
            }
        }
        self.outcome.clone()
    }
}

type Generation = HashMap<Box<[u8]>, Arc<Kept>, foldhash::fast::RandomState>;

/// A link's declared facts and its kept outcomes.
#[derive(Debug)]
pub struct Memo {
    facts: Arc<[Fact]>,
    /// The newer generation, then the older ([`MAX_KEPT`]).
    kept: Mutex<[Generation; 2]>,
}

impl Memo {
    pub fn new(facts: Vec<Fact>) -> Self {
        Self { facts: facts.into(), kept: Mutex::default() }
    }

    /// The declared facts' values in `ex`, as a key; `None` when over
    /// [`MAX_KEY_BYTES`].
    pub fn key(&self, ex: &Exchange) -> Option<Vec<u8>> {
        let mut key = Vec::with_capacity(128);
        for fact in self.facts.iter() {
            match fact {
                Fact::Method => field(&mut key, Some(ex.request.method.as_str().as_bytes())),
                Fact::Path => field(&mut key, Some(ex.request.uri.path().as_bytes())),
                Fact::Query => field(&mut key, ex.request.uri.query().map(str::as_bytes)),
                Fact::Scheme => field(&mut key, Some(ex.scheme.as_bytes())),
                Fact::Authority => field(&mut key, ex.authority().map(str::as_bytes)),
                Fact::ClientAddress => match ex.client_ip {
                    IpAddr::V4(a) => field(&mut key, Some(&a.octets())),
                    IpAddr::V6(a) => field(&mut key, Some(&a.octets())),
                },
                Fact::Header(name) => {
                    let values = ex.request.headers.get_all(name);
                    let count = values.iter().count();
                    key.extend_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
                    for v in values {
                        field(&mut key, Some(v.as_bytes()));
                    }
                }
                Fact::PathParam(name) => field(&mut key, ex.capture(name).map(str::as_bytes)),
                Fact::Context(name) => field(&mut key, ex.context.get(name).map(String::as_bytes)),
            }
            if key.len() > MAX_KEY_BYTES {
                return None;
            }
        }
        Some(key)
    }

    /// The outcome kept under `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<Arc<Kept>> {
        let mut kept = self.kept.lock().ok()?;
        if let Some(found) = kept[0].get(key) {
            return Some(found.clone());
        }
        let (key, found) = kept[1].remove_entry(key)?;
        Self::insert(&mut kept, key, found.clone());
        Some(found)
    }

    /// Files an outcome in the newer generation, turning it into the older
    /// one first when it is full.
    fn insert(kept: &mut [Generation; 2], key: Box<[u8]>, outcome: Arc<Kept>) {
        if kept[0].len() >= MAX_KEPT / 2 {
            kept[1] = std::mem::take(&mut kept[0]);
        }
        kept[0].insert(key, outcome);
    }

    /// A recording to lend the exchange for a call whose outcome may be kept.
    pub fn recording(&self) -> Recording {
        Recording::new(self.facts.clone())
    }

    /// Keeps what the recorded call did, unless it strayed from its facts.
    pub fn keep(&self, key: Vec<u8>, recording: Recording, outcome: &Outcome) {
        let reply = match outcome {
            Outcome::Continue => 0,
            Outcome::Respond(r) => r.body.len() + r.headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>(),
        };
        if recording.spoiled || recording.bytes + reply > MAX_OUTCOME_BYTES {
            return;
        }
        let Ok(mut kept) = self.kept.lock() else { return };
        Self::insert(&mut kept, key.into(), Arc::new(Kept { effects: recording.effects, outcome: outcome.clone() }));
    }

    /// How many outcomes are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.lock().map_or(0, |k| k[0].len() + k[1].len())
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One value of a key: its length and bytes, or a marker when absent (so
/// an absent header differs from an empty one).
fn field(key: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(v) => {
            key.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes());
            key.extend_from_slice(v);
        }
        None => key.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(headers: &[(&str, &str)]) -> Exchange {
        let mut ex = Exchange::placeholder();
        for (n, v) in headers {
            ex.request.headers.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        ex
    }

    fn origin_memo() -> Memo {
        Memo::new(vec![Fact::Method, Fact::Header(HeaderName::from_static("origin"))])
    }

    #[test]
    fn keys_tell_absent_empty_and_repeated_values_apart() {
        let memo = origin_memo();
        let keys: Vec<Vec<u8>> = [
            exchange(&[]),
            exchange(&[("origin", "")]),
            exchange(&[("origin", "a")]),
            exchange(&[("origin", "a"), ("origin", "b")]),
            exchange(&[("origin", "ab")]),
            exchange(&[("Origin", "a"), ("x-other", "1")]),
        ]
        .iter()
        .map(|ex| memo.key(ex).unwrap())
        .collect();
        for (i, a) in keys.iter().enumerate().take(5) {
            for b in &keys[i + 1..5] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(keys[2], keys[5], "an undeclared header is not part of the key");
        let long = "a".repeat(MAX_KEY_BYTES);
        assert_eq!(memo.key(&exchange(&[("origin", &long)])), None);
    }

    #[test]
    fn a_read_of_an_undeclared_fact_spoils_the_recording() {
        let memo = origin_memo();
        let mut r = memo.recording();
        r.reads(Read::Method);
        r.reads(Read::Header("Origin"));
        assert!(!r.is_spoiled(), "header names compare without case");
        r.reads(Read::Path);
        assert!(r.is_spoiled());
        let mut r = memo.recording();
        r.spoil();
        memo.keep(b"k".to_vec(), r, &Outcome::Continue);
        assert!(memo.get(b"k").is_none(), "a spoiled call is not kept");
    }

    #[test]
    fn a_kept_call_is_replayed_edit_for_edit() {
        let memo = origin_memo();
        let mut ex = exchange(&[("origin", "a")]);
        ex.link = 2;
        ex.recording = Some(memo.recording());
        ex.edit_request_header(HeaderName::from_static("x-seen"), HeaderEdit::Set(b"a".to_vec())).unwrap();
        ex.edit_response_header(HeaderName::from_static("x-left"), HeaderEdit::Append(b"1".to_vec())).unwrap();
        ex.context_set("k".into(), "v".into()).unwrap();
        ex.set_path("/new").unwrap();
        let key = memo.key(&ex).unwrap();
        memo.keep(key.clone(), ex.recording.take().unwrap(), &Outcome::Continue);

        let mut again = exchange(&[("origin", "a")]);
        again.link = 2;
        let kept = memo.get(&key).unwrap();
        assert!(matches!(kept.replay(&mut again), Outcome::Continue));
        assert_eq!(again.request.headers["x-seen"], "a");
        assert_eq!(again.context.get("k").map(String::as_str), Some("v"));
        assert_eq!(again.request.uri.path(), "/new");
        assert_eq!(again.staged.len(), 1);
        assert_eq!((again.staged[0].link, again.staged[0].name.as_str()), (2, "x-left"));
    }

    #[test]
    fn a_call_whose_edits_are_too_large_is_not_kept() {
        let memo = origin_memo();
        let mut r = memo.recording();
        r.record(Effect::ContextSet("k".into(), "v".repeat(MAX_OUTCOME_BYTES)));
        assert!(r.is_spoiled());
        let reply = crate::plugin::host_api::wasmgate::plugin::types::Reply {
            status: 403,
            headers: Vec::new(),
            body: vec![b'x'; MAX_OUTCOME_BYTES + 1],
        };
        memo.keep(b"k".to_vec(), memo.recording(), &Outcome::Respond(reply));
        assert!(memo.is_empty());
    }

    #[test]
    fn kept_outcomes_are_bounded_and_those_in_use_survive() {
        let memo = origin_memo();
        let key = |i: usize| i.to_le_bytes().to_vec();
        for i in 0..MAX_KEPT * 3 {
            memo.keep(key(i), memo.recording(), &Outcome::Continue);
            // Key 0 is asked for all along: it is never dropped.
            assert!(memo.get(&key(0)).is_some(), "after {i}");
            assert!(memo.len() <= MAX_KEPT);
        }
        assert!(memo.len() > MAX_KEPT / 2, "the older generation is kept beside the newer");
        assert!(memo.get(&key(1)).is_none(), "one not asked for went with its generation");
        assert!(memo.get(&key(MAX_KEPT * 3 - 1)).is_some());
    }
}
