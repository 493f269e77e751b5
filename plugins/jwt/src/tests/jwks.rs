//! Keys from a JWKS: inline (text or table), and fetched from `jwks_url`
//! through the `http` capability — at configure, on an unknown kid within
//! the rate bound, when stale, with rotation, failures and withdrawn keys;
//! and shared by the plugin's instances (a test thread is one gateway: the
//! instances a test configures share the shared bytes' double).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use serde_json::{Value, json};
use wasmgate_sdk::http::{HttpError, IncomingResponse};
use wasmgate_sdk::log::Level;
use wasmgate_sdk::testing;

use super::support::*;

const URL: &str = "https://idp.example.com/.well-known/jwks.json";

/// A fake identity provider: serves `doc`, or fails while `down`.
#[derive(Clone, Default)]
struct Idp {
    doc: Rc<RefCell<String>>,
    down: Rc<Cell<bool>>,
}

impl Idp {
    fn serving(keys: &[Value]) -> Self {
        let idp = Self::default();
        idp.serve(keys);
        let handler = idp.clone();
        testing::on_http(move |req| {
            assert_eq!(req.url, URL);
            assert_eq!(req.method, "GET");
            if handler.down.get() {
                return Err(HttpError::Connect("connection refused".into()));
            }
            Ok(IncomingResponse { status: 200, headers: vec![], body: handler.doc.borrow().clone().into_bytes() })
        });
        idp
    }

    fn serve(&self, keys: &[Value]) {
        *self.doc.borrow_mut() = jwks(keys);
    }
}

fn fetches() -> usize {
    testing::http_sent().len()
}

fn remote(extra: Value) -> Value {
    let mut config = json!({ "jwks_url": URL });
    if let (Value::Object(c), Value::Object(extra)) = (&mut config, extra) {
        c.extend(extra);
    }
    config
}

#[test]
fn the_jwks_is_fetched_once_at_configure() {
    fresh();
    let k1 = Signer::es256();
    let _idp = Idp::serving(&[k1.jwk(Some("k1"))]);
    let p = plugin(&remote(json!({})));
    assert_eq!(fetches(), 1);
    let sent = testing::http_sent();
    assert_eq!(sent[0].headers, vec![("accept".to_owned(), b"application/json".to_vec())]);
    for _ in 0..3 {
        assert_eq!(check(&p, &k1.token("ES256", Some("k1"), &claims())), "continue");
    }
    assert_eq!(fetches(), 1, "known kids never cause a fetch");
}

#[test]
fn an_unknown_kid_refetches_once_and_the_rate_bound_stops_the_next() {
    fresh();
    let k1 = Signer::es256();
    let _idp = Idp::serving(&[k1.jwk(Some("k1"))]);
    let p = plugin(&remote(json!({ "jwks_refresh_interval": "30s" })));
    assert_eq!(fetches(), 1);
    testing::advance_ms(30_000);

    let stranger = Signer::es256();
    assert_eq!(check(&p, &stranger.token("ES256", Some("garbage-1"), &claims())), "unknown key id (kid)");
    assert_eq!(fetches(), 2, "exactly one refetch");
    for i in 2..50 {
        let kid = format!("garbage-{i}");
        assert_eq!(check(&p, &stranger.token("ES256", Some(&kid), &claims())), "unknown key id (kid)");
    }
    assert_eq!(fetches(), 2, "made-up kids cannot make the gateway hammer the identity provider");

    testing::advance_ms(29_999);
    assert_eq!(check(&p, &stranger.token("ES256", Some("garbage-x"), &claims())), "unknown key id (kid)");
    assert_eq!(fetches(), 2);
    testing::advance_ms(1);
    assert_eq!(check(&p, &stranger.token("ES256", Some("garbage-y"), &claims())), "unknown key id (kid)");
    assert_eq!(fetches(), 3, "one more once the interval has passed");
}

#[test]
fn the_configure_fetch_counts_for_the_rate_bound() {
    fresh();
    let k1 = Signer::es256();
    let idp = Idp::serving(&[k1.jwk(Some("k1"))]);
    let p = plugin(&remote(json!({})));
    let k2 = Signer::es256();
    idp.serve(&[k1.jwk(Some("k1")), k2.jwk(Some("k2"))]);
    assert_eq!(check(&p, &k2.token("ES256", Some("k2"), &claims())), "unknown key id (kid)");
    assert_eq!(fetches(), 1, "within 30 s of the configure fetch");
    testing::advance_ms(30_000);
    assert_eq!(check(&p, &k2.token("ES256", Some("k2"), &claims())), "continue");
    assert_eq!(fetches(), 2);
}

#[test]
fn a_rotated_key_is_accepted_after_the_refetch() {
    fresh();
    let (old, new) = (Signer::rsa(), Signer::ed25519());
    let idp = Idp::serving(&[old.jwk(Some("2024"))]);
    let p = plugin(&remote(json!({ "jwks_refresh_interval": "1s" })));
    assert_eq!(check(&p, &old.token("RS256", Some("2024"), &claims())), "continue");
    testing::advance_ms(5_000);
    idp.serve(&[old.jwk(Some("2024")), new.jwk(Some("2025"))]);
    assert_eq!(check(&p, &new.token("EdDSA", Some("2025"), &claims())), "continue");
    assert_eq!(fetches(), 2);
    assert_eq!(check(&p, &new.token("EdDSA", Some("2025"), &json!({"sub": "bob"}))), "continue");
    assert_eq!(check(&p, &old.token("RS256", Some("2024"), &json!({"sub": "carol"}))), "continue");
    assert_eq!(fetches(), 2, "both kids are known now");
}

#[test]
fn stale_keys_are_refreshed_on_a_request_after_max_age() {
    fresh();
    let k1 = Signer::es256();
    let _idp = Idp::serving(&[k1.jwk(Some("k1"))]);
    let p = plugin(&remote(json!({ "jwks_max_age": "10m" })));
    testing::advance_ms(10 * 60_000 - 1);
    assert_eq!(check(&p, &k1.token("ES256", Some("k1"), &claims())), "continue");
    assert_eq!(fetches(), 1);
    testing::advance_ms(1);
    assert_eq!(check(&p, &k1.token("ES256", Some("k1"), &json!({"sub": "x"}))), "continue");
    assert_eq!(fetches(), 2, "ten minutes old: refreshed");
}

#[test]
fn a_failed_refresh_keeps_the_old_keys_and_warns() {
    fresh();
    let k1 = Signer::es256();
    let idp = Idp::serving(&[k1.jwk(Some("k1"))]);
    let p = plugin(&remote(json!({})));
    idp.down.set(true);
    testing::advance_ms(10 * 60_000);
    assert_eq!(check(&p, &k1.token("ES256", Some("k1"), &claims())), "continue");
    assert_eq!(fetches(), 2, "the refresh was tried");
    let warned = testing::logs()
        .into_iter()
        .any(|(level, m)| level == Level::Warn && m.contains("keeping the 1 keys") && m.contains(URL));
    assert!(warned, "{:?}", testing::logs());

    // A document that is not a JWKS is a failure too.
    idp.down.set(false);
    *idp.doc.borrow_mut() = "<html>maintenance</html>".into();
    testing::advance_ms(30_000);
    assert_eq!(check(&p, &k1.token("ES256", Some("k1"), &json!({"sub": "y"}))), "continue");
    assert_eq!(fetches(), 3);
}

#[test]
fn an_identity_provider_down_at_configure_is_retried_later() {
    fresh();
    let k1 = Signer::es256();
    let idp = Idp::serving(&[k1.jwk(Some("k1"))]);
    idp.down.set(true);
    let p = plugin(&remote(json!({})));
    assert!(testing::logs().iter().any(|(l, m)| *l == Level::Warn && m.contains("will retry")));
    let token = k1.token("ES256", Some("k1"), &claims());
    assert_eq!(check(&p, &token), "unknown key id (kid)");
    idp.down.set(false);
    assert_eq!(check(&p, &token), "unknown key id (kid)", "still within the rate bound");
    testing::advance_ms(30_000);
    assert_eq!(check(&p, &token), "continue");
    assert_eq!(fetches(), 2);
}

#[test]
fn an_instance_made_later_starts_from_the_keys_another_fetched() {
    fresh();
    let k1 = Signer::es256();
    let _idp = Idp::serving(&[k1.jwk(Some("k1"))]);
    let first = plugin(&remote(json!({})));
    testing::advance_ms(5_000);
    // Another worker's instance, or one replacing a recycled instance.
    let later = plugin(&remote(json!({})));
    assert_eq!(fetches(), 1, "the later instance did not fetch");
    for p in [&first, &later] {
        assert_eq!(check(p, &k1.token("ES256", Some("k1"), &claims())), "continue");
    }
    // Another URL is another JWKS.
    let other = "https://other.example.com/jwks.json";
    testing::on_http(move |req| {
        assert_eq!(req.url, other);
        Ok(IncomingResponse { status: 200, headers: vec![], body: jwks(&[k1.jwk(Some("k1"))]).into_bytes() })
    });
    plugin(&json!({ "jwks_url": other }));
    assert_eq!(fetches(), 2);
}

#[test]
fn an_instance_made_while_the_identity_provider_is_down_keeps_the_shared_keys() {
    fresh();
    let k1 = Signer::es256();
    let idp = Idp::serving(&[k1.jwk(Some("k1"))]);
    plugin(&remote(json!({ "jwks_max_age": "1m", "jwks_refresh_interval": "30s" })));
    testing::advance_ms(60_000);
    idp.down.set(true);
    // Stale: the new instance tries, fails, and keeps the keys it found.
    let p = plugin(&remote(json!({ "jwks_max_age": "1m", "jwks_refresh_interval": "30s" })));
    assert_eq!(fetches(), 2);
    assert!(
        testing::logs().iter().any(|(l, m)| *l == Level::Warn && m.contains("keeping the 1 keys")),
        "{:?}",
        testing::logs()
    );
    assert_eq!(check(&p, &k1.token("ES256", Some("k1"), &claims())), "continue");
    // Its try counts for the next instance's rate bound: no fetch within 30 s.
    testing::advance_ms(29_999);
    let q = plugin(&remote(json!({ "jwks_max_age": "1m", "jwks_refresh_interval": "30s" })));
    assert_eq!(check(&q, &k1.token("ES256", Some("k1"), &json!({"sub": "q"}))), "continue");
    assert_eq!(fetches(), 2, "the identity provider is asked once an interval, not once an instance");
    testing::advance_ms(1);
    assert_eq!(check(&q, &k1.token("ES256", Some("k1"), &json!({"sub": "r"}))), "continue");
    assert_eq!(fetches(), 3, "the interval has passed");
}

#[test]
fn a_refetch_by_one_instance_serves_the_others() {
    fresh();
    let (k1, k2) = (Signer::es256(), Signer::es256());
    let idp = Idp::serving(&[k1.jwk(Some("k1"))]);
    let (a, b) = (plugin(&remote(json!({}))), plugin(&remote(json!({}))));
    assert_eq!(fetches(), 1);
    let old = k1.token("ES256", Some("k1"), &claims());
    assert_eq!(check(&b, &old), "continue", "b has verified and cached it");
    idp.serve(&[k2.jwk(Some("k2"))]);
    testing::advance_ms(30_000);
    let rotated = k2.token("ES256", Some("k2"), &claims());
    assert_eq!(check(&a, &rotated), "continue");
    assert_eq!(fetches(), 2, "a fetched the new key");
    assert_eq!(check(&b, &rotated), "continue");
    assert_eq!(fetches(), 2, "b took the keys a fetched");
    // b noticed k1 withdrawn too, as if it had fetched itself: its cache
    // was cleared.
    assert_eq!(check(&b, &old), "unknown key id (kid)");
}

#[test]
fn a_fetch_under_way_holds_the_other_instances_back() {
    fresh();
    let k1 = Signer::es256();
    let idp = Idp::serving(&[k1.jwk(Some("k1"))]);
    let a = plugin(&remote(json!({})));
    testing::advance_ms(10 * 60_000);
    // While a refreshes its stale keys, another instance is made (another
    // worker's): it finds a's try under way and does not fetch too — here
    // it could not, the handler being busy with a's request.
    let made = Rc::new(RefCell::new(None));
    let (doc, made_in) = (idp.doc.clone(), made.clone());
    testing::on_http(move |_| {
        let b = testing::configure::<crate::Jwt>(&remote(json!({})).to_string());
        *made_in.borrow_mut() = Some(b.map(drop).map_err(|e| e.to_string()));
        Ok(IncomingResponse { status: 200, headers: vec![], body: doc.borrow().clone().into_bytes() })
    });
    assert_eq!(check(&a, &k1.token("ES256", Some("k1"), &claims())), "continue");
    assert_eq!(made.borrow().clone(), Some(Ok(())), "made without a fetch of its own");
    assert_eq!(fetches(), 2);
}

#[test]
fn an_instance_that_looked_while_another_fetched_takes_its_keys_a_second_later() {
    fresh();
    let (k1, k2) = (Signer::es256(), Signer::es256());
    let idp = Idp::serving(&[k1.jwk(Some("k1"))]);
    let a = plugin(&remote(json!({})));
    let b = Rc::new(plugin(&remote(json!({}))));
    assert_eq!(fetches(), 1);
    idp.serve(&[k2.jwk(Some("k2"))]);
    testing::advance_ms(60_000);
    // The key is rotated; the first tokens signed with the new one reach
    // every worker at once. While a fetches, b sees one: it finds a's try
    // under way (so it does not fetch too) and no new key yet.
    let token = |sub: &str| k2.token("ES256", Some("k2"), &json!({ "sub": sub }));
    let (bob, carol, dave, erin) = (token("bob"), token("carol"), token("dave"), token("erin"));
    let seen = Rc::new(RefCell::new(String::new()));
    let (doc, b_in, seen_in) = (idp.doc.clone(), b.clone(), seen.clone());
    testing::on_http(move |_| {
        *seen_in.borrow_mut() = check(&b_in, &bob);
        Ok(IncomingResponse { status: 200, headers: vec![], body: doc.borrow().clone().into_bytes() })
    });
    assert_eq!(check(&a, &carol), "continue");
    assert_eq!(*seen.borrow(), "unknown key id (kid)", "a's keys were not there yet");
    assert_eq!(fetches(), 2);
    // Looks are bounded (each copies the shared JWKS): not again at once.
    assert_eq!(check(&b, &erin), "unknown key id (kid)", "b looked a moment ago");
    // A second later b looks again and takes a's keys, not waiting out its
    // rate bound (30 s) for a fetch of its own.
    testing::advance_ms(1_000);
    assert_eq!(check(&b, &dave), "continue");
    assert_eq!(fetches(), 2, "b took the keys a fetched");
}

#[test]
fn times_from_before_the_clock_was_set_back_are_not_taken() {
    fresh();
    let k1 = Signer::es256();
    let idp = Idp::serving(&[k1.jwk(Some("k1"))]);
    plugin(&remote(json!({})));
    testing::set_now_unix_ms(NOW - 3_600_000);
    idp.down.set(true);
    // The record's times are from the future: its keys are taken as stale
    // ones, so b tries to fetch, and keeps them when that fails.
    let b = plugin(&remote(json!({})));
    assert_eq!(fetches(), 2);
    let c = plugin(&remote(json!({})));
    assert_eq!(fetches(), 2, "b's try counts for c");
    let token = k1.token("ES256", Some("k1"), &json!({"sub": "bob"}));
    for p in [&b, &c] {
        assert_eq!(check(p, &token), "continue", "the keys fetched before the clock was set back");
    }
    // Back: the next fetch after the rate bound, and the others take it.
    idp.down.set(false);
    testing::advance_ms(30_000);
    assert_eq!(check(&c, &k1.token("ES256", Some("k1"), &json!({"sub": "carol"}))), "continue");
    assert_eq!(fetches(), 3);
    plugin(&remote(json!({})));
    assert_eq!(fetches(), 3, "a fresh record");
}

#[test]
fn a_claim_from_a_moment_later_on_another_clock_reading_counts() {
    fresh();
    let k1 = Signer::es256();
    let _idp = Idp::serving(&[k1.jwk(Some("k1"))]);
    plugin(&remote(json!({})));
    // An instance whose request read the clock a second before the record
    // was written (another worker, a moment earlier) takes it as written now.
    testing::set_now_unix_ms(NOW - 1_000);
    let b = plugin(&remote(json!({})));
    assert_eq!(fetches(), 1);
    assert_eq!(check(&b, &k1.token("ES256", Some("k1"), &json!({"sub": "bob"}))), "continue");
}

#[test]
fn a_url_that_is_not_granted_refuses_the_config() {
    fresh();
    // No on_http handler: the double answers NotGranted, as the gateway does.
    let err = config_error(&remote(json!({})));
    assert!(err.contains("is not granted") && err.contains("grants.http"), "{err}");
}

#[test]
fn a_withdrawn_key_stops_being_trusted_even_for_cached_tokens() {
    fresh();
    let (k1, k2) = (Signer::es256(), Signer::es256());
    let idp = Idp::serving(&[k1.jwk(Some("k1")), k2.jwk(Some("k2"))]);
    let p = plugin(&remote(json!({ "cache_max_age": "1h", "jwks_max_age": "10m" })));
    let leaked = k2.token("ES256", Some("k2"), &claims());
    assert_eq!(check(&p, &leaked), "continue");
    idp.serve(&[k1.jwk(Some("k1"))]);
    testing::advance_ms(10 * 60_000);
    assert_eq!(check(&p, &k1.token("ES256", Some("k1"), &claims())), "continue");
    assert_eq!(fetches(), 2);
    assert_eq!(check(&p, &leaked), "unknown key id (kid)", "the cache was cleared with the key");
}

#[test]
fn unusable_keys_in_a_fetched_jwks_are_skipped_with_a_warning() {
    fresh();
    let k1 = Signer::es256();
    let oct = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "sym"});
    let enc = json!({"kty": "EC", "crv": "P-256", "use": "enc", "kid": "enc", "x": "AA", "y": "AA"});
    let _idp = Idp::serving(&[oct, enc, k1.jwk(Some("k1"))]);
    let p = plugin(&remote(json!({})));
    assert_eq!(check(&p, &k1.token("ES256", Some("k1"), &claims())), "continue");
    let logs = testing::logs();
    assert!(logs.iter().any(|(_, m)| m.contains("skipping keys[0] (kid \"sym\")")), "{logs:?}");
    assert!(!logs.iter().any(|(_, m)| m.contains("kid \"enc\"")), "encryption keys are left out silently");
}

#[test]
fn inline_jwks_as_text_or_as_a_table() {
    fresh();
    let k1 = Signer::ed25519();
    let text = jwks(&[k1.jwk(Some("k1"))]);
    let table: Value = serde_json::from_str(&text).unwrap();
    for jwks in [json!(text), table] {
        let p = plugin(&json!({ "jwks": jwks }));
        assert_eq!(check(&p, &k1.token("EdDSA", Some("k1"), &claims())), "continue");
    }
    assert!(testing::http_sent().is_empty());
}

#[test]
fn a_bad_inline_jwks_refuses_the_config_naming_the_key() {
    fresh();
    let err = config_error(&json!({ "jwks": jwks(&[json!({"kty": "oct", "k": "c2VjcmV0", "kid": "s"})]) }));
    assert!(err.starts_with("jwks: keys[0] (kid \"s\")") && err.contains("oct"), "{err}");
    let err = config_error(&json!({ "jwks": "{\"kty\":\"RSA\"}" }));
    assert!(err.contains("needs a `keys` array"), "{err}");
    let err = config_error(&json!({ "jwks": "not json" }));
    assert!(err.contains("not JSON"), "{err}");
}
