//! The config's checks: durations, defaults, and refusals that say what
//! is wrong and how to fix it.

use crate::config::*;

fn build(json: &str) -> Result<Settings, String> {
    serde_json::from_str::<Config>(json).map_err(|e| e.to_string())?.build().map_err(|e| e.to_string())
}

#[test]
fn durations() {
    let leeway = |text: &str| build(&format!(r#"{{"hmac_secret":"k","leeway":"{text}"}}"#)).map(|s| s.rules.leeway_ms);
    assert_eq!(leeway("250ms"), Ok(250));
    assert_eq!(leeway("1m 30s"), Ok(90_000));
    assert_eq!(leeway("0s"), Ok(0));
    for bad in ["", "30", "s", "-1s", "30x"] {
        assert!(leeway(bad).is_err_and(|e| e.starts_with("leeway: ") && e.contains("is not a duration")), "{bad:?}");
    }
}

#[test]
fn defaults() {
    let s = build(r#"{"hmac_secret":"k"}"#).unwrap();
    assert_eq!(s.source, Source::Header { name: "authorization".into(), scheme: Some("Bearer".into()) });
    assert_eq!(s.realm, "wasmgate");
    assert_eq!(s.allowed, None);
    assert_eq!(
        (s.rules.leeway_ms, s.max_token_bytes, s.cache_size, s.cache_max_age_ms),
        (30_000, 8192, 10_000, 300_000)
    );
    let s = build(r#"{"jwks_url":"upstream://idp/keys"}"#).unwrap();
    assert_eq!(
        s.keys.remote,
        Some(RemoteSettings { url: "upstream://idp/keys".into(), refresh_interval_ms: 30_000, max_age_ms: 600_000 })
    );
    let s = build(r#"{"hmac_secret":"k","header":"X-Token","scheme":""}"#).unwrap();
    assert_eq!(s.source, Source::Header { name: "x-token".into(), scheme: None });
}

#[test]
fn bad_configs_say_what_and_how_to_fix() {
    let cases = [
        ("{}", "no keys"),
        (r#"{"hmac_secret":"k","cookie":"c","header":"h"}"#, "give one of them"),
        (r#"{"hmac_secret":"k","algorithms":["none"]}"#, "never accepted"),
        (r#"{"hmac_secret":"k","algorithms":["rs256"]}"#, "not supported"),
        (r#"{"hmac_secret":"k","algorithms":[]}"#, "list is empty"),
        (r#"{"hmac_secret":"k","leeway":"30"}"#, "not a duration"),
        (r#"{"hmac_secret":"k","leeway":"1h"}"#, "at most"),
        (r#"{"hmac_secret":"k","issuer":3}"#, "string or a list"),
        (r#"{"hmac_secret":"k","audience":[]}"#, "empty"),
        (r#"{"hmac_secret":"k","forward_claims":{"sub":"content-length"}}"#, "managed by the gateway"),
        (r#"{"hmac_secret":"k","forward_claims":{"sub":"X-Real-IP"}}"#, "`x-real-ip` is managed by the gateway"),
        (r#"{"hmac_secret":"k","forward_claims":{"sub":"authorization"}}"#, "token is read from"),
        (r#"{"hmac_secret":"k","cookie":"s","forward_claims":{"sub":"Cookie"}}"#, "token is read from"),
        (r#"{"hmac_secret":"k","forward_claims":{"a":"x-a","b":"X-A"}}"#, "two claims"),
        (r#"{"hmac_secret":"k","realm":"a\"b"}"#, "realm"),
        (r#"{"hmac_secret":"k","max_token_bytes":10}"#, "out of range"),
        (r#"{"jwks_url":"ftp://idp/keys"}"#, "not upstream://"),
        // Keys fetched in the clear from elsewhere: anyone on the way could add theirs.
        (r#"{"jwks_url":"http://idp.example.com/keys"}"#, "in the clear"),
        (r#"{"jwks_url":"http://10.0.0.5:8080/keys"}"#, "in the clear"),
        (r#"{"jwks_url":"upstream://idp/k","jwks_refresh_interval":"10ms"}"#, "at least \"1s\""),
        (r#"{"hmac_secret":"k","jwks_max_age":"1m"}"#, "only with jwks_url"),
        (r#"{"public_keys":[1]}"#, "PEM text"),
        (r#"{"jwks":[1]}"#, "JSON text"),
        (r#"{"hmac_secret":"k","issuer":"a","isuer":"b"}"#, "unknown field `isuer`"),
    ];
    for (json, want) in cases {
        let err = build(json).err().unwrap_or_default();
        assert!(err.contains(want), "{json}: {err:?} does not contain {want:?}");
    }
}

/// http:// is this machine's only: nothing is on the way there.
#[test]
fn a_jwks_url_over_plain_http_is_this_machines_only() {
    for url in
        ["http://127.0.0.1:8080/keys", "http://localhost/keys", "http://[::1]:9000/k", "https://idp.example.com/k"]
    {
        let err = build(&format!(r#"{{"jwks_url":"{url}"}}"#)).err().unwrap_or_default();
        assert!(!err.contains("in the clear"), "{url}: {err}");
    }
}
