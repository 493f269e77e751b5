//! `abac` through the real gateway, behind the real `jwt` plugin: HS256
//! tokens made here are verified by `jwt`, whose claims (`jwt.claims` in the
//! context) become the Cedar principal that `abac` authorizes.
//!
//! Needs `sha2.workspace = true` in tests/Cargo.toml (for the HMAC that
//! signs the test tokens).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use http::Request;
use http_body_util::Full;
use serde_json::json;
use wasmgate_tests::upstream::TestUpstream;
use wasmgate_tests::{TestGateway, get_request, send};

const SECRET: &[u8] = b"abac-e2e-hmac-secret-0123456789abcdef";

/// Admins may do anything; a user may read their own record.
const POLICIES: &str = r#"
@id("admin-all")
permit(principal, action, resource) when { principal has role && principal.role == "admin" };

@id("owner-read")
permit(principal is User, action in Action::"read", resource == Route::"users")
when { resource has id && resource.id == principal.sub };
"#;

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new().chain_update(block.map(|b| b ^ 0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(block.map(|b| b ^ 0x5c)).chain_update(inner).finalize().into()
}

/// Unpadded base64url, as JWTs use.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// An HS256 token for `claims`, valid for an hour.
fn token(mut claims: serde_json::Value) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    claims["iat"] = json!(now);
    claims["exp"] = json!(now + 3600);
    let signing_input =
        format!("{}.{}", b64url(br#"{"alg":"HS256","typ":"JWT"}"#), b64url(claims.to_string().as_bytes()));
    let signature = hmac_sha256(SECRET, signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(&signature))
}

/// `abac_source` is the rest of abac's plugin entry: `config = { ... }` and
/// optionally `config_files = { ... }`.
fn gateway_config(up: &TestUpstream, secret_file: &Path, abac_source: &str) -> String {
    format!(
        r#"[upstreams.u]
endpoints = ["{addr}"]

[plugin.jwt]
grants = {{ crypto = true, secrets = {{ hmac = {{ file = "{secret}" }} }} }}

[[routes]]
name = "users"
match = {{ path = "/api/users/{{id}}" }}
upstream = "u"
plugins = [
  {{ use = "jwt", config = {{ hmac_secret = "hmac", algorithms = ["HS256"] }} }},
  {{ use = "abac", {abac_source} }},
]
"#,
        addr = up.addr,
        secret = secret_file.display(),
    )
}

/// The inline config: the policies as a TOML string (JSON escapes are TOML escapes).
fn inline(extra: &str) -> String {
    format!(r#"config = {{ policies = {}, resource_params = ["id"]{extra} }}"#, json!(POLICIES))
}

/// A directory holding the HMAC secret (and whatever a test adds).
fn secrets_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hmac.key");
    std::fs::write(&file, SECRET).unwrap();
    (dir, file)
}

async fn call(gw: &TestGateway, method: &str, path: &str, claims: serde_json::Value) -> wasmgate_tests::Reply {
    let req = Request::builder()
        .method(method)
        .uri(gw.url(path))
        .header("authorization", format!("Bearer {}", token(claims)))
        .body(Full::default())
        .unwrap();
    send(req).await
}

#[test]
fn the_test_hmac_is_rfc_4231() {
    // RFC 4231, test case 2.
    let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    assert_eq!(b64url(b"\xfb\xff"), "-_8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_can_delete() {
    let up = TestUpstream::echo("u").await;
    let (_dir, secret) = secrets_dir();
    let gw = TestGateway::start(&gateway_config(&up, &secret, &inline("")));
    let r = call(&gw, "DELETE", "/api/users/7", json!({"sub": "ada", "role": "admin"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["method"], "DELETE");
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_reads_only_their_own_record() {
    let up = TestUpstream::echo("u").await;
    let (_dir, secret) = secrets_dir();
    let gw = TestGateway::start(&gateway_config(&up, &secret, &inline("")));
    let user = || json!({"sub": "42", "role": "user", "org": {"id": "acme"}, "scopes": ["read"]});

    let own = call(&gw, "GET", "/api/users/42", user()).await;
    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(own.json()["path"], "/api/users/42");

    let other = call(&gw, "GET", "/api/users/43", user()).await;
    assert_eq!(other.status, 403);
    assert_eq!(other.json(), json!({ "error": "forbidden" }));
    assert_eq!(other.header("x-abac-reason"), None, "no reason outside debug mode");
    assert!(other.header("x-request-id").is_some());
    assert_eq!(up.hits(), 1, "the denied request never reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_by_a_non_admin_are_forbidden() {
    let up = TestUpstream::echo("u").await;
    let (_dir, secret) = secrets_dir();
    let gw = TestGateway::start(&gateway_config(&up, &secret, &inline(", debug = true")));
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        // Even on their own record: ownership grants reads only.
        let r = call(&gw, method, "/api/users/42", json!({"sub": "42", "role": "user"})).await;
        assert_eq!(r.status, 403, "{method}: {}", r.text());
        assert_eq!(r.json()["error"], "forbidden");
        assert_eq!(r.header("x-abac-reason"), Some("no policy permits"), "{method}");
    }
    assert_eq!(up.hits(), 0);
    let r = call(&gw, "PUT", "/api/users/42", json!({"sub": "ada", "role": "admin"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_can_come_from_a_file() {
    let up = TestUpstream::echo("u").await;
    let (dir, secret) = secrets_dir();
    let policies = dir.path().join("policies.cedar");
    std::fs::write(&policies, POLICIES).unwrap();
    let source =
        format!(r#"config = {{ resource_params = ["id"] }}, config_files = {{ policies = "{}" }}"#, policies.display());
    let gw = TestGateway::start(&gateway_config(&up, &secret, &source));
    assert_eq!(call(&gw, "GET", "/api/users/42", json!({"sub": "42"})).await.status, 200);
    assert_eq!(call(&gw, "GET", "/api/users/43", json!({"sub": "42"})).await.status, 403);
    assert_eq!(call(&gw, "DELETE", "/api/users/43", json!({"sub": "ada", "role": "admin"})).await.status, 200);
    assert_eq!(up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_syntax_error_fails_the_load_with_the_cedar_message() {
    let up = TestUpstream::echo("u").await;
    let broken = "@id(\"ok\")\npermit(principal, action, resource);\n@id(\"broken\")\npermit(principal, action, resource) whenn { true };\n";
    let body = format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [{{ use = \"abac\", config = {{ policies = {} }} }}]\n",
        up.addr,
        json!(broken)
    );
    let err = TestGateway::try_start("", &body).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("routes[0].plugins[0].config: plugin `abac` refused its config"), "{err}");
    assert!(err.contains("policy `broken` (line 4, column 37) does not parse"), "{err}");
    assert!(err.contains("whenn"), "{err}");

    // From a file: the message names the file the policies came from.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.cedar");
    std::fs::write(&file, broken).unwrap();
    let body = format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [{{ use = \"abac\", config_files = {{ policies = {} }} }}]\n",
        up.addr,
        json!(file.display().to_string())
    );
    let err = TestGateway::try_start("", &body).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("policy `broken` (line 4, column 37) does not parse"), "{err}");
    assert!(err.contains(&format!("(read `policies` from {})", file.display())), "{err}");
}

/// abac's policies here read no `context`, so it declares the facts it
/// depends on (the claims, method, path and `id`): the same token on the
/// same path calls it once, and the gateway gives the kept answer — allow
/// or the 403 — for the repeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_requests_get_the_kept_decision_without_a_call() {
    let up = TestUpstream::echo("u").await;
    let (_dir, secret) = secrets_dir();
    let config = format!("{}{}", wasmgate_tests::ADMIN, gateway_config(&up, &secret, &inline("")));
    let gw = TestGateway::start(&config);
    // One token for every request: its claims are the key.
    let bearer = format!("Bearer {}", token(json!({"sub": "42", "role": "user"})));
    let get = |path: &str| get_request(&gw.url(path), &[("authorization", bearer.as_str())]);
    for _ in 0..3 {
        assert_eq!(send(get("/api/users/42")).await.status, 200);
        let denied = send(get("/api/users/43")).await;
        assert_eq!((denied.status, denied.json()), (http::StatusCode::FORBIDDEN, json!({ "error": "forbidden" })));
    }
    assert_eq!(up.hits(), 3);
    let text = gw.metrics().await;
    let sample = |series: &str| wasmgate_tests::sample(&text, series);
    let calls = sample(r#"wasmgate_plugin_call_duration_seconds_count{plugin="abac",phase="request"}"#);
    assert_eq!(calls, Some("2"), "{text}");
    assert_eq!(sample(r#"wasmgate_plugin_kept_outcomes_total{plugin="abac"}"#), Some("4"), "{text}");
    // jwt reads the clock: called every time.
    let jwt = sample(r#"wasmgate_plugin_call_duration_seconds_count{plugin="jwt",phase="request"}"#);
    assert_eq!(jwt, Some("6"), "{text}");
}
