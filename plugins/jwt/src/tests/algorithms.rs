//! Every algorithm family end to end through the plugin, with real keys, and
//! the attacks on the choice of algorithm and key.

use serde_json::{Value, json};
use wasmgate_sdk::crypto::{Algorithm, Key};
use wasmgate_sdk::testing;

use super::support::*;
use crate::{CONTEXT_CLAIMS, CONTEXT_SUB};

fn assert_accepted(config: &Value, signer: &Signer, alg: &str, kid: Option<&str>) {
    let p = plugin(config);
    testing::set_context(CONTEXT_SUB, "spoofed by an earlier plugin");
    let claims = claims();
    assert_eq!(check(&p, &signer.token(alg, kid, &claims)), "continue", "{alg}");
    let ctx = testing::context();
    assert_eq!(ctx.get(CONTEXT_SUB).map(String::as_str), Some("alice"), "{alg}");
    let got: Value = serde_json::from_str(&ctx[CONTEXT_CLAIMS]).unwrap();
    assert_eq!(got, claims, "{alg}: the claims reach the context as JSON");
}

#[test]
fn rsa_pkcs1_and_pss_verify_with_a_jwk() {
    fresh();
    let rsa = Signer::rsa();
    let config = json!({ "jwks": jwks(&[rsa.jwk(Some("r1"))]) });
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        assert_accepted(&config, &rsa, alg, Some("r1"));
    }
}

#[test]
fn the_rsa_jwk_the_end_to_end_tests_embed_is_the_test_keys() {
    let jwk = Signer::rsa().jwk(None);
    assert_eq!((jwk["n"].as_str(), jwk["e"].as_str()), (Some(RSA_N), Some("AQAB")));
}

#[test]
fn rsa_verifies_with_a_pem_list_and_a_kid_map() {
    fresh();
    let rsa = Signer::rsa();
    assert_accepted(&json!({ "public_keys": [RSA_SPKI] }), &rsa, "RS256", None);
    assert_accepted(&json!({ "public_keys": [RSA_SPKI] }), &rsa, "RS256", Some("any"));
    assert_accepted(&json!({ "public_keys": { "k9": RSA_SPKI } }), &rsa, "PS256", Some("k9"));
    let p = plugin(&json!({ "public_keys": { "k9": RSA_SPKI } }));
    assert_eq!(check(&p, &rsa.token("RS256", Some("k8"), &claims())), "unknown key id (kid)");
}

#[test]
fn ecdsa_p256_and_p384() {
    fresh();
    let (p256, p384) = (Signer::es256(), Signer::es384());
    let config = json!({ "jwks": jwks(&[p256.jwk(Some("e1")), p384.jwk(Some("e2"))]) });
    assert_accepted(&config, &p256, "ES256", Some("e1"));
    assert_accepted(&config, &p384, "ES384", Some("e2"));
    // Without a kid every key that can verify ES256 is tried.
    assert_accepted(&config, &p256, "ES256", None);
    let p = plugin(&config);
    assert_eq!(check(&p, &p256.token("ES384", Some("e1"), &claims())), "no key for algorithm ES384");
}

#[test]
fn eddsa() {
    fresh();
    let ed = Signer::ed25519();
    assert_accepted(&json!({ "jwks": jwks(&[ed.jwk(None)]) }), &ed, "EdDSA", None);
}

#[test]
fn hmac_from_a_granted_secret() {
    fresh();
    let secret = b"a shared secret of 64 bytes, as long as the longest hash (SHA-512)";
    testing::set_secret("hmac", secret.to_vec());
    let hmac = Signer::hmac(secret);
    for alg in ["HS256", "HS384", "HS512"] {
        assert_accepted(&json!({ "hmac_secret": "hmac" }), &hmac, alg, None);
    }
    let p = plugin(&json!({ "hmac_secret": "hmac" }));
    assert_eq!(check(&p, &Signer::hmac(b"another secret").token("HS256", None, &claims())), "invalid signature");
}

/// A secret shorter than the hash is refused at load (RFC 7518 §3.2: one
/// token would let it be found by brute force); one shorter than SHA-512's
/// verifies only the algorithms it is long enough for.
#[test]
fn a_short_hmac_secret_refuses_the_config() {
    fresh();
    testing::set_secret("hmac", b"0123456789".to_vec());
    assert!(config_error(&json!({ "hmac_secret": "hmac" })).contains("HS256 needs at least 32"));
    let secret = [b'k'; 32];
    testing::set_secret("hmac", secret.to_vec());
    let p = plugin(&json!({ "hmac_secret": "hmac" }));
    assert_eq!(check(&p, &Signer::hmac(&secret).token("HS256", None, &claims())), "continue");
    assert_eq!(check(&p, &Signer::hmac(&secret).token("HS512", None, &claims())), "no key for algorithm HS512");
}

#[test]
fn an_hmac_secret_that_is_not_granted_refuses_the_config() {
    fresh();
    let err = config_error(&json!({ "hmac_secret": "hmac" }));
    assert!(err.contains("secret `hmac` is not granted"), "{err}");
    assert!(err.contains("secrets = { hmac = { file"), "the fix is in the message: {err}");
}

#[test]
fn alg_none_is_refused_even_when_unsigned_tokens_look_valid() {
    fresh();
    let rsa = Signer::rsa();
    let p = plugin(&json!({ "jwks": jwks(&[rsa.jwk(None)]) }));
    let body = b64(claims().to_string().as_bytes());
    for alg in ["none", "None", "NONE"] {
        let header = b64(json!({"alg": alg}).to_string().as_bytes());
        for sig in ["", ".c2ln"] {
            let token = format!("{header}.{body}.{}", sig.trim_start_matches('.'));
            assert_eq!(check(&p, &token), "unsigned tokens (alg none) are not accepted");
        }
    }
    assert!(config_error(&json!({ "hmac_secret": "x", "algorithms": ["none"] })).contains("never accepted"));
}

#[test]
fn an_algorithm_outside_the_allow_list_is_refused_before_any_key() {
    fresh();
    let rsa = Signer::rsa();
    let p = plugin(&json!({ "jwks": jwks(&[rsa.jwk(None)]), "algorithms": ["RS256"] }));
    assert_eq!(check(&p, &rsa.token("RS256", None, &claims())), "continue");
    assert_eq!(check(&p, &rsa.token("PS256", None, &claims())), "algorithm PS256 is not allowed");
    assert_eq!(p.verifications(), 1, "the refused token cost no verification");
}

#[test]
fn an_allow_list_no_key_can_satisfy_is_a_config_error() {
    fresh();
    let err = config_error(&json!({ "public_keys": [RSA_SPKI], "algorithms": ["ES256", "HS256"] }));
    assert!(err.contains("no configured key verifies any of them"), "{err}");
    assert!(err.contains("RS256"), "it says what the keys do verify: {err}");
}

/// The classic confusion attack: the RSA public key (which the attacker
/// knows) used as an HMAC secret.
#[test]
fn an_rsa_public_key_never_serves_as_an_hmac_secret() {
    fresh();
    let rsa = Signer::rsa();
    let jwk = rsa.jwk(Some("r1"));
    let forged_pem = Signer::hmac(RSA_SPKI.as_bytes());
    let forged_der = Signer::hmac(&pem_der(RSA_SPKI));
    let forged_jwk = Signer::hmac(jwk.to_string().as_bytes());
    for config in [
        json!({ "jwks": jwks(std::slice::from_ref(&jwk)) }),
        json!({ "public_keys": { "r1": RSA_SPKI } }),
        // Even with HS256 explicitly allowed.
        json!({ "jwks": jwks(std::slice::from_ref(&jwk)), "algorithms": ["RS256", "HS256"] }),
    ] {
        let p = plugin(&config);
        for forged in [&forged_pem, &forged_der, &forged_jwk] {
            for kid in [Some("r1"), None] {
                assert_eq!(check(&p, &forged.token("HS256", kid, &claims())), "no key for algorithm HS256", "{config}");
            }
        }
        assert_eq!(check(&p, &rsa.token("RS256", Some("r1"), &claims())), "continue");
    }
    // And the key itself refuses, whatever the plugin asks of it.
    let key = Key::from_jwk(&jwk.to_string()).unwrap();
    let input = b"header.payload";
    assert!(!key.verify(Algorithm::Hs256, input, &forged_pem.sign("HS256", input)));
    assert!(!key.verify(Algorithm::Hs256, input, &forged_jwk.sign("HS256", input)));
    assert!(key.verify(Algorithm::Rs256, input, &rsa.sign("RS256", input)));
}

#[test]
fn a_jwk_pinned_to_one_alg_verifies_only_that_alg() {
    fresh();
    let rsa = Signer::rsa();
    let mut jwk = rsa.jwk(Some("r1"));
    jwk["alg"] = json!("PS256");
    let p = plugin(&json!({ "jwks": jwks(&[jwk]) }));
    assert_eq!(check(&p, &rsa.token("PS256", Some("r1"), &claims())), "continue");
    assert_eq!(check(&p, &rsa.token("RS256", Some("r1"), &claims())), "no key for algorithm RS256");
}

#[test]
fn tampered_tokens_fail_the_signature() {
    fresh();
    let ec = Signer::es256();
    let p = plugin(&json!({ "jwks": jwks(&[ec.jwk(Some("e1"))]) }));
    let good = ec.token("ES256", Some("e1"), &claims());
    let parts: Vec<&str> = good.split('.').collect();

    let mut admin = claims();
    admin["sub"] = json!("admin");
    let payload = b64(admin.to_string().as_bytes());
    assert_eq!(check(&p, &format!("{}.{payload}.{}", parts[0], parts[2])), "invalid signature");

    let mut sig = crate::b64::decode(parts[2]).unwrap();
    sig[10] ^= 1;
    assert_eq!(check(&p, &format!("{}.{}.{}", parts[0], parts[1], b64(&sig))), "invalid signature");
    // A signature from another key of the same kind.
    let other = Signer::es256().token("ES256", Some("e1"), &claims());
    assert_eq!(check(&p, &other), "invalid signature");
    assert_eq!(check(&p, &good), "continue");
}

#[test]
fn a_key_embedded_in_the_token_header_is_ignored() {
    fresh();
    let (trusted, attacker) = (Signer::es256(), Signer::es256());
    let p = plugin(&json!({ "jwks": jwks(&[trusted.jwk(None)]) }));
    let header = json!({"alg": "ES256", "jwk": attacker.jwk(None), "jku": "https://evil.example/jwks"});
    assert_eq!(check(&p, &attacker.token_with_header(&header, &claims())), "invalid signature");
    assert!(testing::http_sent().is_empty(), "no URL from a token is ever fetched");
}

#[test]
fn the_token_never_reaches_the_reply() {
    fresh();
    let rsa = Signer::rsa();
    let p = plugin(&json!({ "jwks": jwks(&[rsa.jwk(None)]) }));
    let mut expired = claims();
    expired["exp"] = json!(NOW_S - 3600);
    for token in [rsa.token("RS256", None, &expired), format!("{}x", rsa.token("RS256", None, &claims()))] {
        let reply = testing::on_request(&p, &mut bearer(&token)).reply().cloned().unwrap();
        let all = format!("{:?}{}", reply.headers, String::from_utf8_lossy(&reply.body));
        for part in token.split('.') {
            assert!(!all.contains(part), "a token segment was echoed: {all}");
        }
    }
}
