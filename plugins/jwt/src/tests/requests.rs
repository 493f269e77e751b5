//! The request side: where the token is found, what garbage gets, the
//! verified-token cache, and what the upstream and later plugins see.

use serde_json::{Value, json};
use wasmgate_sdk::testing::{self, TestRequest};
use wasmgate_sdk::{HeaderEdit, Info, Plugin};

use super::support::*;
use crate::{CONTEXT_CLAIMS, CONTEXT_SUB, Jwt};

fn es256(extra: Value) -> (Jwt, Signer) {
    fresh();
    let ec = Signer::es256();
    let mut config = json!({ "jwks": jwks(&[ec.jwk(Some("e1"))]), "realm": "api" });
    if let (Value::Object(c), Value::Object(extra)) = (&mut config, extra) {
        c.extend(extra);
    }
    (plugin(&config), ec)
}

#[test]
fn only_the_request_hook_is_asked_for() {
    let (p, _) = es256(json!({}));
    assert_eq!(wasmgate_sdk::Plugin::info(&p), Info::default());
}

#[test]
fn no_token_gets_a_bare_challenge() {
    let (p, _) = es256(json!({}));
    for mut req in [
        TestRequest::get("/"),
        TestRequest::get("/").header("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
        TestRequest::get("/").header("authorization", "Bearerish abc"),
    ] {
        let reply = testing::on_request(&p, &mut req).reply().cloned().unwrap();
        assert_eq!(reply.status, 401);
        assert_eq!(reply.header_str("www-authenticate"), Some("Bearer realm=\"api\""));
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["error"], "unauthorized");
    }
}

#[test]
fn an_invalid_token_gets_an_rfc6750_challenge_and_json() {
    let (p, _) = es256(json!({}));
    let reply = testing::on_request(&p, &mut bearer("abc")).reply().cloned().unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.header_str("www-authenticate"),
        Some(
            "Bearer realm=\"api\", error=\"invalid_token\", \
             error_description=\"token must have 3 segments (header.payload.signature)\""
        )
    );
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        body,
        json!({"error": "invalid_token", "error_description": "token must have 3 segments (header.payload.signature)"})
    );
}

#[test]
fn the_bearer_scheme_is_case_insensitive_and_tolerates_spaces() {
    let (p, ec) = es256(json!({}));
    let token = ec.token("ES256", Some("e1"), &claims());
    for value in [format!("bearer {token}"), format!("BEARER   {token}  "), format!("Bearer\t{token}")] {
        assert_eq!(outcome(&p, &mut TestRequest::get("/").header("authorization", &value)), "continue", "{value}");
    }
    assert_eq!(outcome(&p, &mut TestRequest::get("/").header("authorization", "Bearer")), "empty token");
    assert_eq!(outcome(&p, &mut TestRequest::get("/").header("authorization", "Bearer   ")), "empty token");
    // Bytes that are not text: refused as a token after the scheme, no
    // token of ours after another one.
    let not_text = [&b"Bearer "[..], &[0xff, 0xfe, b'.', 0x80]].concat();
    assert_eq!(outcome(&p, &mut TestRequest::get("/").header("authorization", &not_text)), "token is not valid text");
    let basic = [&b"Basic "[..], &[0xe9]].concat();
    assert_eq!(outcome(&p, &mut TestRequest::get("/").header("authorization", &basic)), "missing token");
    // A cached token is compared as bytes: one byte off is not a hit.
    assert_eq!(outcome(&p, &mut bearer(&token)), "continue");
    let mut off_by_one = token.clone().into_bytes();
    *off_by_one.last_mut().unwrap() ^= 0x80;
    let value = [&b"Bearer "[..], &off_by_one].concat();
    assert_eq!(outcome(&p, &mut TestRequest::get("/").header("authorization", &value)), "token is not valid text");
}

#[test]
fn two_authorization_headers_are_refused() {
    let (p, ec) = es256(json!({}));
    let token = ec.token("ES256", Some("e1"), &claims());
    let mut req = bearer(&token).header("authorization", format!("Bearer {token}"));
    assert_eq!(outcome(&p, &mut req), "more than one token");
}

#[test]
fn garbage_tokens() {
    let (p, ec) = es256(json!({}));
    let good = ec.token("ES256", Some("e1"), &claims());
    let array_header = format!("{}.{}", b64(b"[\"ES256\"]"), good.split_once('.').unwrap().1);
    let cases = [
        ("a.b".to_owned(), "token must have 3 segments (header.payload.signature)"),
        (format!("{good}.x"), "token must have 3 segments (header.payload.signature)"),
        (format!("{good}.x.y"), "token must have 3 segments (header.payload.signature)"),
        (good.replacen('.', "=.", 1), "token header is not base64url"),
        (format!("!{good}"), "token header is not base64url"),
        (format!("{}.{}", b64(b"not json"), good.split_once('.').unwrap().1), "token header is not JSON"),
        (array_header, "token header is not a JSON object"),
        (format!("{good}="), "token signature is not base64url"),
        ("x".repeat(8193), "token too large"),
    ];
    for (token, want) in cases {
        assert_eq!(check(&p, &token), want, "{}", &token[..token.len().min(60)]);
    }
    assert_eq!(p.verifications(), 0, "nothing malformed reached a key");
    assert_eq!(check(&p, &good), "continue");
}

#[test]
fn max_token_bytes_applies_before_decoding() {
    let (p, ec) = es256(json!({"max_token_bytes": 100}));
    let token = ec.token("ES256", Some("e1"), &claims());
    assert!(token.len() > 100);
    assert_eq!(check(&p, &token), "token too large");
    assert_eq!(check(&p, &"a".repeat(100)), "token must have 3 segments (header.payload.signature)");
}

#[test]
fn a_custom_header_without_a_scheme() {
    let (p, ec) = es256(json!({"header": "X-Api-Token", "scheme": ""}));
    let token = ec.token("ES256", Some("e1"), &claims());
    assert_eq!(outcome(&p, &mut TestRequest::get("/").header("x-api-token", &token)), "continue");
    assert_eq!(outcome(&p, &mut bearer(&token)), "missing token");
}

#[test]
fn a_token_in_a_cookie() {
    let (p, ec) = es256(json!({"cookie": "session", "strip_token": true}));
    let token = ec.token("ES256", Some("e1"), &claims());
    let mut req = TestRequest::get("/").header("cookie", format!("theme=dark; session={token}; lang=en"));
    assert_eq!(outcome(&p, &mut req), "continue");
    assert_eq!(req.headers.get_str("cookie").as_deref(), Some("theme=dark; lang=en"), "only the token's cookie goes");

    let mut req = TestRequest::get("/").header("cookie", "theme=dark").header("cookie", format!("session={token}"));
    assert_eq!(outcome(&p, &mut req), "continue", "HTTP/2 sends cookies in several headers");
    assert_eq!(req.headers.get_all("cookie"), vec![b"theme=dark".to_vec()]);

    assert_eq!(outcome(&p, &mut TestRequest::get("/").header("cookie", "theme=dark")), "missing token");
    assert_eq!(outcome(&p, &mut bearer(&token)), "missing token", "the header is not where this route looks");
    let mut twice = TestRequest::get("/").header("cookie", format!("session={token}; session=x"));
    assert_eq!(outcome(&p, &mut twice), "more than one token");
}

#[test]
fn a_cache_hit_skips_verification() {
    let (p, ec) = es256(json!({}));
    let token = ec.token("ES256", Some("e1"), &claims());
    assert_eq!(check(&p, &token), "continue");
    assert_eq!(p.verifications(), 1);
    for _ in 0..5 {
        testing::set_context(CONTEXT_SUB, "stale");
        assert_eq!(check(&p, &token), "continue");
        assert_eq!(
            testing::context().get(CONTEXT_SUB).map(String::as_str),
            Some("alice"),
            "a hit still sets the context"
        );
    }
    assert_eq!(p.verifications(), 1, "five hits, no new verification");
    // A different token is verified on its own.
    assert_eq!(check(&p, &ec.token("ES256", Some("e1"), &json!({"sub": "bob"}))), "continue");
    assert_eq!(p.verifications(), 2);
}

#[test]
fn the_cache_ends_at_cache_max_age_and_can_be_disabled() {
    let (p, ec) = es256(json!({"cache_max_age": "1m"}));
    let token = ec.token("ES256", Some("e1"), &claims());
    assert_eq!(check(&p, &token), "continue");
    testing::advance_ms(59_999);
    assert_eq!(check(&p, &token), "continue");
    assert_eq!(p.verifications(), 1);
    testing::advance_ms(1);
    assert_eq!(check(&p, &token), "continue");
    assert_eq!(p.verifications(), 2, "a minute later it is verified again");

    let (p, ec) = es256(json!({"cache_size": 0}));
    let token = ec.token("ES256", Some("e1"), &claims());
    assert_eq!(check(&p, &token), "continue");
    assert_eq!(check(&p, &token), "continue");
    assert_eq!(p.verifications(), 2);
}

#[test]
fn a_failed_token_is_not_cached() {
    let (p, ec) = es256(json!({"issuer": "https://idp"}));
    let token = ec.token("ES256", Some("e1"), &claims());
    assert_eq!(check(&p, &token), "missing claim `iss`");
    assert_eq!(check(&p, &token), "missing claim `iss`");
    assert_eq!(p.verifications(), 2);
}

#[test]
fn forward_claims_replace_whatever_the_client_sent() {
    let (p, ec) = es256(
        json!({"forward_claims": {"sub": "X-User-Id", "email": "x-user-email", "roles": "x-roles", "tenant": "x-tenant"}}),
    );
    let mut c = claims();
    c["roles"] = json!(["admin", "dev"]);
    let token = ec.token("ES256", Some("e1"), &c);
    let mut req = bearer(&token)
        .header("x-user-id", "root")
        .header("X-User-Id", "root2")
        .header("x-user-email", "root@evil")
        .header("x-tenant", "other-tenant");
    assert_eq!(outcome(&p, &mut req), "continue");
    assert_eq!(req.headers.get_all("x-user-id"), vec![b"alice".to_vec()]);
    assert_eq!(req.headers.get_all("x-user-email"), vec![b"alice@example.com".to_vec()]);
    assert_eq!(req.headers.get_str("x-roles").as_deref(), Some(r#"["admin","dev"]"#));
    assert_eq!(req.headers.get("x-tenant"), None, "absent claim: the injected header is removed, not kept");
    assert!(req.headers.get("authorization").is_some(), "strip_token is off by default");

    // Injected headers are removed even when the token is refused: the
    // gateway removes them before the hook, as fixed edits.
    let fixed: Vec<_> =
        p.fixed_headers().request.into_iter().map(|(name, edit)| (name, edit == HeaderEdit::Remove)).collect();
    assert_eq!(
        fixed,
        [
            ("x-user-email".into(), true),
            ("x-roles".into(), true),
            ("x-user-id".into(), true),
            ("x-tenant".into(), true)
        ]
    );
    let mut bad = TestRequest::get("/").header("x-user-id", "root");
    assert_eq!(outcome(&p, &mut bad), "missing token");
    assert_eq!(bad.headers.get("x-user-id"), None);
}

#[test]
fn a_claim_value_that_cannot_be_a_header_is_not_forwarded() {
    let (p, ec) = es256(json!({"forward_claims": {"name": "x-user-name"}}));
    let mut c = claims();
    c["name"] = json!("line\nbreak");
    assert_eq!(check(&p, &ec.token("ES256", Some("e1"), &c)), "continue");
    assert!(testing::logs().iter().any(|(_, m)| m.contains("forward_claims.name") && !m.contains("line")));
}

#[test]
fn strip_token_removes_the_authorization_header() {
    let (p, ec) = es256(json!({"strip_token": true}));
    let mut req = bearer(&ec.token("ES256", Some("e1"), &claims())).header("x-other", "kept");
    assert_eq!(outcome(&p, &mut req), "continue");
    assert_eq!(req.headers.get("authorization"), None);
    assert!(req.headers.get("x-other").is_some());
}

#[test]
fn a_token_without_sub_clears_a_stale_sub_from_the_context() {
    let (p, ec) = es256(json!({}));
    testing::set_context(CONTEXT_SUB, "mallory");
    assert_eq!(check(&p, &ec.token("ES256", Some("e1"), &json!({"scope": "read"}))), "continue");
    let ctx = testing::context();
    assert_eq!(ctx.get(CONTEXT_SUB), None);
    assert_eq!(ctx.get(CONTEXT_CLAIMS).map(String::as_str), Some(r#"{"scope":"read"}"#));
}
