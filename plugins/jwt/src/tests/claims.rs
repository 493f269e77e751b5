//! Claims through the plugin: the time claims at the leeway's edges on the
//! frozen clock, issuer and audience, required and wrongly typed claims.

use serde_json::{Value, json};
use wasmgate_sdk::testing;

use super::support::*;
use crate::Jwt;

fn setup(extra: Value) -> (Jwt, Signer) {
    fresh();
    let ed = Signer::ed25519();
    let mut config = json!({ "jwks": jwks(&[ed.jwk(None)]) });
    if let (Value::Object(c), Value::Object(extra)) = (&mut config, extra) {
        c.extend(extra);
    }
    (plugin(&config), ed)
}

fn with(claims_patch: Value) -> Value {
    let mut c = claims();
    if let (Value::Object(c), Value::Object(patch)) = (&mut c, claims_patch) {
        for (k, v) in patch {
            if v.is_null() {
                c.remove(&k);
            } else {
                c.insert(k, v);
            }
        }
    }
    c
}

#[test]
fn exp_at_the_default_leeway_edge() {
    let (p, key) = setup(json!({}));
    // Default leeway 30 s: valid until exp + 30 s, exclusive.
    assert_eq!(check(&p, &key.token("EdDSA", None, &with(json!({"exp": NOW_S - 29})))), "continue");
    assert_eq!(check(&p, &key.token("EdDSA", None, &with(json!({"exp": NOW_S - 30})))), "token expired");
    assert_eq!(check(&p, &key.token("EdDSA", None, &with(json!({"exp": NOW_S - 3600})))), "token expired");
}

#[test]
fn exp_with_zero_leeway_and_a_moving_clock() {
    let (p, key) = setup(json!({"leeway": "0s"}));
    let token = key.token("EdDSA", None, &with(json!({"exp": NOW_S + 1})));
    assert_eq!(check(&p, &token), "continue");
    testing::set_now_unix_ms(NOW + 999);
    assert_eq!(check(&p, &token), "continue", "a cache hit, still before exp");
    testing::set_now_unix_ms(NOW + 1000);
    assert_eq!(check(&p, &token), "token expired", "the cached entry ends at exp too");
}

#[test]
fn nbf_and_iat_at_the_leeway_edge() {
    let (p, key) = setup(json!({"leeway": "1m"}));
    assert_eq!(check(&p, &key.token("EdDSA", None, &with(json!({"nbf": NOW_S + 60})))), "continue");
    assert_eq!(check(&p, &key.token("EdDSA", None, &with(json!({"nbf": NOW_S + 61})))), "token not yet valid (nbf)");
    assert_eq!(check(&p, &key.token("EdDSA", None, &with(json!({"iat": NOW_S + 60})))), "continue");
    assert_eq!(
        check(&p, &key.token("EdDSA", None, &with(json!({"iat": NOW_S + 61})))),
        "token issued in the future (iat)"
    );
}

#[test]
fn a_token_not_yet_valid_becomes_valid_and_is_not_cached_before() {
    let (p, key) = setup(json!({"leeway": "0s"}));
    let token = key.token("EdDSA", None, &with(json!({"nbf": NOW_S + 10})));
    assert_eq!(check(&p, &token), "token not yet valid (nbf)");
    testing::set_now_unix_ms(NOW + 10_000);
    assert_eq!(check(&p, &token), "continue");
}

#[test]
fn issuer_as_a_string_or_a_list() {
    let (p, key) = setup(json!({"issuer": "https://idp.example.com"}));
    assert_eq!(check(&p, &key.token("EdDSA", None, &with(json!({"iss": "https://idp.example.com"})))), "continue");
    assert_eq!(check(&p, &key.token("EdDSA", None, &with(json!({"iss": "https://evil"})))), "issuer not accepted");
    assert_eq!(check(&p, &key.token("EdDSA", None, &claims())), "missing claim `iss`");

    let (p, key) = setup(json!({"issuer": ["https://a", "https://b"]}));
    assert_eq!(check(&p, &key.token("EdDSA", None, &with(json!({"iss": "https://b"})))), "continue");
    assert_eq!(check(&p, &key.token("EdDSA", None, &with(json!({"iss": "https://c"})))), "issuer not accepted");
}

#[test]
fn audience_against_a_string_or_an_array_aud() {
    let (p, key) = setup(json!({"audience": ["orders", "users"]}));
    let t = |aud: Value| key.token("EdDSA", None, &with(json!({ "aud": aud })));
    assert_eq!(check(&p, &t(json!("users"))), "continue");
    assert_eq!(check(&p, &t(json!(["web", "orders"]))), "continue");
    assert_eq!(check(&p, &t(json!("web"))), "audience not accepted");
    assert_eq!(check(&p, &t(json!(["web", "mobile"]))), "audience not accepted");
    assert_eq!(check(&p, &key.token("EdDSA", None, &claims())), "missing claim `aud`");
}

#[test]
fn a_missing_required_claim() {
    let (p, key) = setup(json!({"required_claims": ["email", "exp"]}));
    assert_eq!(check(&p, &key.token("EdDSA", None, &claims())), "continue");
    assert_eq!(check(&p, &key.token("EdDSA", None, &with(json!({"email": null})))), "missing required claim `email`");
    assert_eq!(check(&p, &key.token("EdDSA", None, &with(json!({"exp": null})))), "missing required claim `exp`");
}

#[test]
fn wrongly_typed_claims_get_a_precise_401() {
    let (p, key) = setup(json!({"audience": "api"}));
    let cases = [
        (json!({"exp": "1700003600", "aud": "api"}), "claim `exp` must be a number (seconds since the epoch)"),
        (json!({"aud": 42}), "claim `aud` must be a string or an array of strings"),
        (json!({"aud": ["api", 42]}), "claim `aud` must be a string or an array of strings"),
        (json!({"sub": 42, "aud": "api"}), "claim `sub` must be a string"),
        (json!({"iss": ["x"], "aud": "api"}), "claim `iss` must be a string"),
    ];
    for (patch, want) in cases {
        let token = key.token("EdDSA", None, &with(patch.clone()));
        let reply = testing::on_request(&p, &mut bearer(&token)).reply().cloned().unwrap();
        assert_eq!(reply.status, 401, "{patch}");
        let challenge = reply.header_str("www-authenticate").unwrap();
        assert!(challenge.contains(&format!("error_description=\"{want}\"")), "{patch}: {challenge}");
    }
}

#[test]
fn claims_that_are_not_an_object_after_a_valid_signature() {
    let (p, key) = setup(json!({}));
    let header = b64(json!({"alg": "EdDSA"}).to_string().as_bytes());
    for (payload, want) in [
        ("[1,2]", "token claims are not a JSON object"),
        ("not json", "token claims are not JSON"),
        (r#"{"sub":"a","sub":"admin"}"#, "token claims repeat a name"),
    ] {
        let input = format!("{header}.{}", b64(payload.as_bytes()));
        let token = format!("{input}.{}", b64(&key.sign("EdDSA", input.as_bytes())));
        assert_eq!(check(&p, &token), want);
    }
}
