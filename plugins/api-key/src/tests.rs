use sha2::{Digest, Sha256};
use wasmgate_sdk::testing::{self, TestRequest};

use super::*;

const ACME_KEY: &str = "acme-secret-key-1";
const GLOBEX_KEY: &str = "globex-secret-key-2";

fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Keys for acme (read, write) and globex (read), plus `extra` config fields.
fn config(extra: &str) -> String {
    format!(
        r#"{{"keys":{{"{}":{{"consumer":"acme","scopes":["read","write"]}},"{}":{{"consumer":"globex","scopes":["read"]}}}}{extra}}}"#,
        digest(ACME_KEY),
        digest(GLOBEX_KEY)
    )
}

fn plugin(json: &str) -> ApiKey {
    testing::configure::<ApiKey>(json).expect("config accepted")
}

fn refusal(p: &ApiKey, req: &mut TestRequest) -> Reply {
    testing::on_request(p, req).reply().cloned().expect("refused")
}

#[test]
fn a_valid_key_names_the_consumer_and_is_hidden() {
    testing::reset();
    let p = plugin(&config(""));
    let mut req = TestRequest::get("/").header("X-Api-Key", ACME_KEY);
    assert!(testing::on_request(&p, &mut req).is_continue());
    let ctx = testing::context();
    assert_eq!(ctx.get(CONSUMER).map(String::as_str), Some("acme"));
    assert_eq!(ctx.get(SCOPES).map(String::as_str), Some(r#"["read","write"]"#));
    assert_eq!(req.headers.get("x-api-key"), None, "hide_key is on by default");
    assert_eq!(req.headers.get("x-consumer"), None, "no consumer_header configured");
}

#[test]
fn unknown_and_missing_keys_are_401_with_a_challenge() {
    testing::reset();
    let p = plugin(&config(r#","realm":"partners""#));
    let reply = refusal(&p, &mut TestRequest::get("/").header("x-api-key", "guess"));
    assert_eq!(reply.status, 401);
    assert_eq!(reply.body, br#"{"error":"invalid api key"}"#);
    assert_eq!(reply.header_str("www-authenticate"), Some(r#"ApiKey realm="partners""#));
    assert_eq!(reply.header_str("content-type"), Some("application/json"));
    // A key's digest is not the key.
    let reply = refusal(&p, &mut TestRequest::get("/").header("x-api-key", digest(ACME_KEY)));
    assert_eq!(reply.body, br#"{"error":"invalid api key"}"#);

    let reply = refusal(&p, &mut TestRequest::get("/"));
    assert_eq!(reply.status, 401);
    assert_eq!(reply.body, br#"{"error":"missing api key"}"#);
    assert_eq!(reply.header_str("www-authenticate"), Some(r#"ApiKey realm="partners""#));
    let reply = refusal(&p, &mut TestRequest::get("/").header("x-api-key", ""));
    assert_eq!(reply.body, br#"{"error":"missing api key"}"#, "an empty header is no key");
    assert!(testing::context().is_empty(), "nothing reaches the context on a refusal");
}

#[test]
fn the_key_header_is_configurable() {
    testing::reset();
    let p = plugin(&config(r#","header":"Authorization-Key""#));
    assert!(testing::on_request(&p, &mut TestRequest::get("/").header("authorization-key", GLOBEX_KEY)).is_continue());
    let reply = refusal(&p, &mut TestRequest::get("/").header("x-api-key", GLOBEX_KEY));
    assert_eq!(reply.body, br#"{"error":"missing api key"}"#);
}

#[test]
fn a_query_parameter_may_carry_the_key_and_is_removed() {
    testing::reset();
    let p = plugin(&config(r#","query":"api_key""#));
    let mut req = TestRequest::get(&format!("/items?page=2&api_key={ACME_KEY}&sort=name"));
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(testing::context().get(CONSUMER).map(String::as_str), Some("acme"));
    assert_eq!(req.query.as_deref(), Some("page=2&sort=name"), "the other parameters are untouched");

    // Only parameter: the query goes away altogether.
    let mut req = TestRequest::get(&format!("/items?api_key={GLOBEX_KEY}"));
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(req.query, None);

    // Encoded name and value are decoded as the upstream would.
    let mut req = TestRequest::get("/items?api%5Fkey=acme%2Dsecret-key-1&x=1");
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(req.query.as_deref(), Some("x=1"));

    // The header still works alongside.
    let mut req = TestRequest::get("/items?x=1").header("x-api-key", ACME_KEY);
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(req.query.as_deref(), Some("x=1"));
    assert_eq!(req.headers.get("x-api-key"), None);

    let reply = refusal(&p, &mut TestRequest::get("/items?api_key=nope"));
    assert_eq!(reply.body, br#"{"error":"invalid api key"}"#);
    // Without `query` configured, a query parameter is no key.
    let header_only = plugin(&config(""));
    let reply = refusal(&header_only, &mut TestRequest::get(&format!("/?api_key={ACME_KEY}")));
    assert_eq!(reply.body, br#"{"error":"missing api key"}"#);
}

#[test]
fn two_different_keys_are_refused_the_same_key_twice_is_one() {
    testing::reset();
    let p = plugin(&config(r#","query":"api_key""#));
    let mut req = TestRequest::get(&format!("/?api_key={GLOBEX_KEY}")).header("x-api-key", ACME_KEY);
    let reply = refusal(&p, &mut req);
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body, br#"{"error":"more than one api key"}"#);
    let mut req = TestRequest::get("/").header("x-api-key", ACME_KEY).header("x-api-key", "other");
    assert_eq!(refusal(&p, &mut req).status, 400);

    let mut req = TestRequest::get(&format!("/?api_key={ACME_KEY}")).header("x-api-key", ACME_KEY);
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(req.query, None);
    assert_eq!(req.headers.get("x-api-key"), None);
}

#[test]
fn hide_key_false_forwards_the_key() {
    testing::reset();
    let p = plugin(&config(r#","query":"api_key","hide_key":false"#));
    let mut req = TestRequest::get(&format!("/?api_key={ACME_KEY}"));
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(req.query, Some(format!("api_key={ACME_KEY}")));
    let mut req = TestRequest::get("/").header("x-api-key", ACME_KEY);
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(req.headers.get_str("x-api-key").as_deref(), Some(ACME_KEY));
}

#[test]
fn the_consumer_header_replaces_any_copy_the_client_sent() {
    testing::reset();
    let p = plugin(&config(r#","consumer_header":"X-Consumer""#));
    let mut req = TestRequest::get("/")
        .header("x-api-key", GLOBEX_KEY)
        .header("x-consumer", "acme")
        .header("X-Consumer", "admin");
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(req.headers.get_all("x-consumer"), vec![b"globex".to_vec()]);
}

#[test]
fn required_scopes_refuse_keys_without_them() {
    testing::reset();
    let p = plugin(&config(r#","required_scopes":["read","write"]"#));
    assert!(testing::on_request(&p, &mut TestRequest::get("/").header("x-api-key", ACME_KEY)).is_continue());
    testing::reset();
    let mut req = TestRequest::get("/").header("x-api-key", GLOBEX_KEY);
    let reply = refusal(&p, &mut req);
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, br#"{"error":"insufficient scope"}"#);
    assert!(testing::context().is_empty());
    assert_eq!(req.headers.get_str("x-api-key").as_deref(), Some(GLOBEX_KEY), "nothing edited on a refusal");

    let read = plugin(&config(r#","required_scopes":["read"]"#));
    assert!(testing::on_request(&read, &mut TestRequest::get("/").header("x-api-key", GLOBEX_KEY)).is_continue());
    assert_eq!(testing::context().get(SCOPES).map(String::as_str), Some(r#"["read"]"#));
}

#[test]
fn keys_come_from_a_granted_secret_too() {
    testing::reset();
    let secret = format!(r#"{{"{}": {{"consumer": "initech", "scopes": ["admin"]}}}}"#, digest("initech-key"));
    testing::set_secret("api-keys", secret);
    let p = plugin(&config(r#","keys_secret":"api-keys""#));
    assert!(testing::on_request(&p, &mut TestRequest::get("/").header("x-api-key", "initech-key")).is_continue());
    assert_eq!(testing::context().get(CONSUMER).map(String::as_str), Some("initech"));
    assert!(testing::on_request(&p, &mut TestRequest::get("/").header("x-api-key", ACME_KEY)).is_continue());
    assert_eq!(testing::context().get(CONSUMER).map(String::as_str), Some("acme"));

    // The secret alone is enough.
    let p = plugin(r#"{"keys_secret":"api-keys"}"#);
    assert!(testing::on_request(&p, &mut TestRequest::get("/").header("x-api-key", "initech-key")).is_continue());
    // Upper-case digests are the same digests.
    testing::set_secret(
        "upper",
        format!(r#"{{"{}": {{"consumer": "initech"}}}}"#, digest("initech-key").to_ascii_uppercase()),
    );
    let p = plugin(r#"{"keys_secret":"upper"}"#);
    assert!(testing::on_request(&p, &mut TestRequest::get("/").header("x-api-key", "initech-key")).is_continue());
    assert_eq!(testing::context().get(SCOPES).map(String::as_str), Some("[]"));
}

#[test]
fn bad_secrets_are_refused_without_quoting_them() {
    testing::reset();
    let err = |json: &str| testing::configure::<ApiKey>(json).err().map(|e| e.to_string()).unwrap_or_default();
    let e = err(r#"{"keys_secret":"absent"}"#);
    assert!(e.contains("keys_secret `absent` is not a secret granted"), "{e}");
    assert!(e.contains("grants = { secrets = { absent = { file ="), "{e}");

    testing::set_secret("broken", "{\"plaintext-key-123\": ");
    let e = err(r#"{"keys_secret":"broken"}"#);
    assert!(e.contains("secret `broken` ends too early"), "{e}");
    assert!(!e.contains("plaintext-key-123"), "{e}");

    testing::set_secret("shape", r#"["plaintext-key-123"]"#);
    let e = err(r#"{"keys_secret":"shape"}"#);
    assert!(e.contains("secret `shape` does not have the shape of `keys`"), "{e}");
    assert!(!e.contains("plaintext-key-123"), "{e}");

    testing::set_secret("plain", r#"{"plaintext-key-123": {"consumer": "acme"}}"#);
    let e = err(r#"{"keys_secret":"plain"}"#);
    assert!(e.contains("secret `plain`: the key of consumer `acme` is not listed by its SHA-256 digest"), "{e}");
    assert!(!e.contains("plaintext-key-123"), "{e}");

    // JSON, unlike TOML, lets a map repeat a key; the second copy is refused.
    let d = digest("k");
    testing::set_secret("twice", format!(r#"{{"{d}": {{"consumer": "a"}}, "{d}": {{"consumer": "b"}}}}"#));
    assert!(err(r#"{"keys_secret":"twice"}"#).contains("the key of consumer `b` is listed twice"));
    // So is a digest in both the config and the secret.
    testing::set_secret("dup", format!(r#"{{"{}": {{"consumer": "a"}}}}"#, digest(ACME_KEY)));
    assert!(err(&config(r#","keys_secret":"dup""#)).contains("listed twice"));
}

#[test]
fn malformed_digests_are_refused() {
    let err = |json: &str| testing::configure::<ApiKey>(json).err().map(|e| e.to_string()).unwrap_or_default();
    let one = |digest: &str| format!(r#"{{"keys":{{"{digest}":{{"consumer":"acme"}}}}}}"#);
    let short = err(&one("abc123"));
    assert!(short.contains("keys: the key of consumer `acme` is not listed by its SHA-256 digest"), "{short}");
    assert!(short.contains("the text has 6 characters"), "{short}");
    assert!(!short.contains("abc123"), "the text may be a plaintext key: never echoed");
    assert!(err(&one(&"g".repeat(64))).contains("not listed by its SHA-256 digest"), "64 chars, not hex");
    assert!(err(&one(&"a".repeat(65))).contains("the text has 65 characters"));
    assert!(testing::configure::<ApiKey>(&one(&"A".repeat(64))).is_ok());
}

#[test]
fn bad_configs_are_refused_with_a_reason() {
    let err = |json: &str| testing::configure::<ApiKey>(json).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err("{}").contains("no API keys"));
    assert!(err(&config(r#","hedaer":"x""#)).contains("unknown field `hedaer`"));
    assert!(err(&config(r#","header":"bad header""#)).contains("header: `bad header` is not a valid header name"));
    assert!(err(&config(r#","header":"Content-Length""#)).contains("managed by the gateway"));
    assert!(err(&config(r#","consumer_header":"x-api-key""#)).contains("is the header that carries the key"));
    assert!(err(&config(r#","consumer_header":"connection""#)).contains("managed by the gateway"));
    let written = err(&config(r#","consumer_header":"X-Forwarded-Client-Cert""#));
    assert!(written.contains("consumer_header: `x-forwarded-client-cert` is managed by the gateway"), "{written}");
    assert!(err(&config(r#","query":"a&b""#)).contains("not a plain parameter name"));
    assert!(err(&config(r#","required_scopes":["has space"]"#)).contains("required_scopes: scope \"has space\""));
    assert!(err(&config(r#","realm":"a\"b""#)).contains("realm must be"));
    let bad_consumer = format!(r#"{{"keys":{{"{}":{{"consumer":""}}}}}}"#, digest("k"));
    assert!(err(&bad_consumer).contains("a consumer name must be 1 to 256 bytes"));
    let bad_scope = format!(r#"{{"keys":{{"{}":{{"consumer":"a","scopes":[""]}}}}}}"#, digest("k"));
    assert!(err(&bad_scope).contains("scope \"\" is not valid"));
    let extra_field = format!(r#"{{"keys":{{"{}":{{"consumer":"a","scope":["x"]}}}}}}"#, digest("k"));
    assert!(err(&extra_field).contains("unknown field `scope`"));
}

#[test]
fn lookup_finds_every_key_and_only_those() {
    let many: Vec<String> =
        (0..50).map(|i| format!(r#""{}":{{"consumer":"c{i}"}}"#, digest(&format!("key-{i}")))).collect();
    let p = plugin(&format!(r#"{{"keys":{{{}}}}}"#, many.join(",")));
    for i in 0..50 {
        assert_eq!(p.keys.find(format!("key-{i}").as_bytes()).map(|c| c.name.clone()), Some(format!("c{i}")));
    }
    assert_eq!(p.keys.find(b"key-50"), None);
    assert_eq!(p.keys.find(b""), None);
    assert_eq!(format!("{:?}", p.keys), "KeySet { keys: 50 }", "Debug shows no digests");
}

/// Every answer depends on the presented key alone (`depends_on`), so the
/// gateway keeps each: the query is read only when keys may come there.
#[test]
fn every_answer_is_one_the_gateway_keeps() {
    testing::reset();
    let header_only = plugin(&config(r#","consumer_header":"x-consumer""#));
    let with_query = plugin(&config(r#","query":"api_key""#));
    let cases = [
        (&header_only, TestRequest::get("/?api_key=x").header("x-api-key", ACME_KEY)),
        (&header_only, TestRequest::get("/").header("x-api-key", "wrong")),
        (&header_only, TestRequest::get("/")),
        (&with_query, TestRequest::get(&format!("/?api_key={GLOBEX_KEY}&a=1"))),
    ];
    for (p, mut req) in cases {
        let (_, kept) = testing::on_request_kept(p, &mut req);
        assert_eq!(kept, Ok(()));
    }
}
