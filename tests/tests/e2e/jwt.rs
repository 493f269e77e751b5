//! The `jwt` plugin through the real gateway: real tokens signed with real
//! keys (RS256 from a fixed test key, ES256 from a fresh one, HS256 from a
//! secret file), verified by the gateway's `crypto` capability; a JWKS served
//! over loopback and rotated; the grants the plugin needs; and the claims
//! reaching the plugins after it.
//!
//! The component imports `wasmgate:plugin/http` (for `jwks_url`), and a
//! component's imports are static, so every config here grants `http` even
//! when it does not fetch anything.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, SigningKey as _};
use serde_json::{Value, json};
use wasmgate_tests::upstream::{TestUpstream, echoed_header};
use wasmgate_tests::{ADMIN, TestGateway, eventually, get, get_with, sample};

/// The 2048-bit RSA test key (PKCS#8) every RS256 test and bench signs
/// with, made once with openssl. It protects nothing.
const RSA_PKCS8: &str = include_str!("../../../host/common/testdata/rsa-2048.pem");

/// Its public modulus as a JWK `n` (the plugin's unit tests check it).
const RSA_N: &str = "wicnTMMvY8UK2TR98-bGO3l6oeTth1nnuBzduqCdyLRV2HXoDSwSdZRCNoid1oucItI_DUls-8PePsR77euMrt8QeIrCJb7LknPUzn0piyJX5kvuZqZ-doszoemxo1TGcH7AzWYz5qLVTloKCplYzuJmxIIy1r0GD_CzGacLStICIJzeu7yE6t8WvAJf6Kh7bApZ082BVCHQbpXTiuXTDUrDkd_F25Rl-dhQ0Pti1wxDHwQo4AmD2XIgvRPzEiuYoUtyQ8FfEa_nZWoQqK0YZiAb7IG7hDHywYBcLI_5Eo0mzxXHU1BIhUA5IXB6Cazih6xont1qN1fct5BPkCTlGQ";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Claims for `sub`, valid for an hour (or expired an hour ago).
fn claims(sub: &str, expired: bool) -> Value {
    let now = now_s();
    let exp = if expired { now - 3600 } else { now + 3600 };
    json!({ "sub": sub, "iat": now - 7200, "exp": exp, "email": format!("{sub}@example.com") })
}

/// A compact JWS: `sign` gets the signing input and returns the raw signature.
fn token(alg: &str, kid: Option<&str>, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let mut header = json!({ "alg": alg, "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

fn rs256(kid: &str, claims: &Value) -> String {
    let key = KeyPair::from_pkcs8_pem_and_sign_algo(RSA_PKCS8, &PKCS_RSA_SHA256).unwrap();
    token("RS256", Some(kid), claims, |input| key.sign(input).unwrap())
}

fn rsa_jwk(kid: &str) -> Value {
    json!({ "kty": "RSA", "kid": kid, "use": "sig", "n": RSA_N, "e": "AQAB" })
}

/// HMAC-SHA256 with ring, reached through rustls (the tests crate has no
/// direct ring dependency): its TLS 1.3 HKDF provider signs with
/// `ring::hmac`. Like HMAC itself, a key over the block size (64 bytes) is
/// hashed first.
fn hs256(secret: &[u8], claims: &Value) -> String {
    use rustls::SupportedCipherSuite;
    use rustls::crypto::tls13::OkmBlock;
    let SupportedCipherSuite::Tls13(suite) = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256 else {
        unreachable!("TLS13_AES_128_GCM_SHA256 is a TLS 1.3 suite")
    };
    let key = if secret.len() > 64 {
        OkmBlock::new(suite.common.hash_provider.hash(secret).as_ref())
    } else {
        OkmBlock::new(secret)
    };
    token("HS256", None, claims, |input| suite.hkdf_provider.hmac_sign(&key, input).as_ref().to_vec())
}

/// An ES256 key (fresh for each test) and its JWK.
struct Es256 {
    key: KeyPair,
    kid: String,
}

impl Es256 {
    fn new(kid: &str) -> Self {
        Self { key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(), kid: kid.to_owned() }
    }

    fn jwk(&self) -> Value {
        let point = self.key.public_key_raw();
        assert_eq!(point.len(), 65, "uncompressed P-256 point");
        json!({ "kty": "EC", "crv": "P-256", "kid": self.kid, "x": b64(&point[1..33]), "y": b64(&point[33..]) })
    }

    /// rcgen signs ECDSA as X.509 does (ASN.1 DER); JWS wants `r || s`.
    fn token(&self, claims: &Value) -> String {
        token("ES256", Some(&self.kid), claims, |input| {
            let der = self.key.sign(input).unwrap();
            let mut fixed = Vec::with_capacity(64);
            let mut at = 2; // SEQUENCE tag and (short) length
            for _ in 0..2 {
                assert_eq!(der[at], 0x02, "INTEGER");
                let len = usize::from(der[at + 1]);
                let int = &der[at + 2..at + 2 + len];
                let int = &int[int.len().saturating_sub(32)..];
                fixed.extend(std::iter::repeat_n(0u8, 32 - int.len()));
                fixed.extend_from_slice(int);
                at += 2 + len;
            }
            fixed
        })
    }
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// An identity provider on loopback serving a JWKS it can change, counting fetches.
struct JwksServer {
    addr: SocketAddr,
    doc: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    async fn start(doc: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (doc, hits) = (Arc::new(Mutex::new(doc)), Arc::new(AtomicUsize::new(0)));
        let (served, counted) = (doc.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (served, counted) = (served.clone(), counted.clone());
                let service = service_fn(move |_req: Request<Incoming>| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = served.lock().unwrap().clone();
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, doc, hits, task }
    }

    fn serve(&self, doc: String) {
        *self.doc.lock().unwrap() = doc;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// One upstream, one route guarded by `plugins`, and `[plugin.jwt]` with `grants`.
fn gateway_config(up: &TestUpstream, grants: &str, plugins: &str) -> String {
    format!(
        "[plugin.jwt]\ngrants = {{ {grants} }}\n\n[upstreams.u]\nendpoints = [\"{}\"]\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\n{plugins}\n]\n",
        up.addr
    )
}

async fn with_bearer(gw: &TestGateway, token: &str, extra: &[(&str, &str)]) -> wasmgate_tests::Reply {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![("authorization", bearer.as_str())];
    headers.extend_from_slice(extra);
    get_with(&gw.url("/orders"), &headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_rs256_with_an_inline_jwks_guards_the_route() {
    let up = TestUpstream::echo("u").await;
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks(&[rsa_jwk("rsa-1")])).unwrap();
    let gw = TestGateway::start(&gateway_config(
        &up,
        "crypto = true",
        &format!(
            r#"{{ use = "jwt", config = {{ realm = "orders", forward_claims = {{ sub = "x-user-id" }}, strip_token = true }}, config_files = {{ jwks = "{}" }} }},"#,
            jwks_file.display()
        ),
    ));

    // Valid: the upstream sees who the user is (not who the client claimed), and no token.
    let r = with_bearer(&gw, &rs256("rsa-1", &claims("alice", false)), &[("x-user-id", "root")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json();
    assert_eq!(echoed_header(&doc, "x-user-id").as_deref(), Some("alice"));
    assert_eq!(echoed_header(&doc, "authorization"), None, "strip_token");
    // Again: a cache hit, same answer.
    let r = with_bearer(&gw, &rs256("rsa-1", &claims("alice", false)), &[]).await;
    assert_eq!(echoed_header(&r.json(), "x-user-id").as_deref(), Some("alice"));
    assert_eq!(up.hits(), 2);

    // Expired: 401 with an RFC 6750 challenge and a JSON body; the upstream never hears of it.
    let r = with_bearer(&gw, &rs256("rsa-1", &claims("alice", true)), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="orders", error="invalid_token", error_description="token expired""#)
    );
    assert_eq!(r.json(), json!({ "error": "invalid_token", "error_description": "token expired" }));

    // No token: a bare challenge.
    let r = get(&gw.url("/orders")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some(r#"Bearer realm="orders""#));

    // Garbage, and the confusion attack: HS256 "signed" with the public JWK as the secret.
    let forged = hs256(jwks(&[rsa_jwk("rsa-1")]).as_bytes(), &claims("admin", false));
    for bad in ["not-a-token", forged.as_str()] {
        let r = with_bearer(&gw, bad, &[]).await;
        assert_eq!(r.status, 401);
        assert!(r.header("www-authenticate").unwrap().contains("error=\"invalid_token\""));
        assert!(!r.text().contains(bad), "the token is never echoed");
    }
    // A valid token beside another `Authorization` field: ambiguous, refused.
    let valid = format!("Bearer {}", rs256("rsa-1", &claims("alice", false)));
    let r = with_bearer(&gw, "forged", &[("authorization", valid.as_str())]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error_description"], "more than one token");
    assert_eq!(up.hits(), 2, "no refused request reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_hs256_with_a_secret_from_a_file() {
    let up = TestUpstream::echo("u").await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("hmac.key");
    // The gateway trims the trailing newline `echo secret > file` leaves.
    std::fs::write(&secret_file, "an HMAC secret for the e2e tests, 256 bits+\n").unwrap();
    let gw = TestGateway::start(&gateway_config(
        &up,
        // Granted to make a key of only: its bytes never enter the plugin.
        &format!("crypto = true, secrets = {{ hmac = {{ file = \"{}\", use = \"verify\" }} }}", secret_file.display()),
        r#"{ use = "jwt", config = { hmac_secret = "hmac", algorithms = ["HS256"], forward_claims = { email = "x-user-email" } } },"#,
    ));
    let good = hs256(b"an HMAC secret for the e2e tests, 256 bits+", &claims("bob", false));
    let r = with_bearer(&gw, &good, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(echoed_header(&r.json(), "x-user-email").as_deref(), Some("bob@example.com"));

    let wrong = hs256(b"another secret", &claims("bob", false));
    let r = with_bearer(&gw, &wrong, &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error_description"], "invalid signature");
    assert_eq!(up.hits(), 1);
}

/// A secret file rotated by one of the same size with its modification
/// time kept (`cp -p`, `rsync -a`, a build with fixed times) is a change
/// to the watcher: it compared size and time alone, and the old secret
/// kept serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_file_replaced_with_its_size_and_time_kept_is_reloaded() {
    let up = TestUpstream::echo("u").await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("hmac.key");
    let (old, new) = ("an HMAC secret for the e2e tests, 256 bits+", "an HMAC secret for the E2E tests, 256 bits+");
    std::fs::write(&secret_file, old).unwrap();
    let gw = TestGateway::start_with(
        "watch = true\nwatch_interval = \"50ms\"",
        &gateway_config(
            &up,
            &format!(
                "crypto = true, secrets = {{ hmac = {{ file = \"{}\", use = \"verify\" }} }}",
                secret_file.display()
            ),
            r#"{ use = "jwt", config = { hmac_secret = "hmac", algorithms = ["HS256"] } },"#,
        ),
    );
    let signed = |secret: &str| hs256(secret.as_bytes(), &claims("bob", false));
    assert_eq!(with_bearer(&gw, &signed(old), &[]).await.status, 200);
    let before = std::fs::metadata(&secret_file).unwrap();
    let tmp = dir.path().join("hmac.key.new");
    std::fs::write(&tmp, new).unwrap();
    std::fs::File::options().write(true).open(&tmp).unwrap().set_modified(before.modified().unwrap()).unwrap();
    std::fs::rename(&tmp, &secret_file).unwrap();
    let after = std::fs::metadata(&secret_file).unwrap();
    assert_eq!((after.len(), after.modified().unwrap()), (before.len(), before.modified().unwrap()));
    assert!(eventually(Duration::from_secs(10), || gw.gateway.generation() == 1).await, "the watcher reloaded");
    assert_eq!(with_bearer(&gw, &signed(new), &[]).await.status, 200);
    assert_eq!(with_bearer(&gw, &signed(old), &[]).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_es256_from_a_jwks_url_follows_a_key_rotation() {
    let up = TestUpstream::echo("u").await;
    let (old, new) = (Es256::new("2025-01"), Es256::new("2025-02"));
    let idp = JwksServer::start(jwks(&[old.jwk()])).await;
    let origin = format!("http://{}", idp.addr);
    let body = gateway_config(
        &up,
        &format!("crypto = true, http = [\"{origin}\"], http_timeout = \"2s\""),
        &format!(
            r#"{{ use = "jwt", config = {{ jwks_url = "{origin}/.well-known/jwks.json", jwks_refresh_interval = "1s", forward_claims = {{ sub = "x-user-id" }} }} }},"#
        ),
    );
    // One worker, requests one at a time: one pooled instance, one key cache.
    let gw = TestGateway::start_with("workers = 1", &body);
    assert_eq!(idp.hits(), 1, "the JWKS is fetched when the config is loaded");

    let r = with_bearer(&gw, &old.token(&claims("carol", false)), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(echoed_header(&r.json(), "x-user-id").as_deref(), Some("carol"));
    assert_eq!(idp.hits(), 1, "a known kid needs no fetch");

    // The identity provider adds a key and starts signing with it.
    idp.serve(jwks(&[old.jwk(), new.jwk()]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = with_bearer(&gw, &new.token(&claims("dave", false)), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(echoed_header(&r.json(), "x-user-id").as_deref(), Some("dave"));
    assert_eq!(idp.hits(), 2, "the unknown kid caused exactly one refetch");

    // Made-up kids right after: refused, and the rate bound spares the identity provider.
    for i in 0..5 {
        let stranger = Es256::new(&format!("made-up-{i}"));
        let r = with_bearer(&gw, &stranger.token(&claims("eve", false)), &[]).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["error_description"], "unknown key id (kid)");
    }
    assert_eq!(idp.hits(), 2);
    let r = with_bearer(&gw, &old.token(&claims("carol", false)), &[]).await;
    assert_eq!(r.status, 200, "the old key still works");
}

/// The plugin's instances share the JWKS one of them fetched (WIT 0.1.6's
/// `shared`): under `per-request` isolation (with `grants.shared`) every
/// request is a new instance, configured anew, and none fetches again; once the keys are stale and the
/// identity provider down, a new instance keeps the keys fetched before, and
/// the provider is asked once an interval, not once a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_instances_share_the_jwks_one_fetched() {
    let up = TestUpstream::echo("u").await;
    let key = Es256::new("2025-01");
    let idp = JwksServer::start(jwks(&[key.jwk()])).await;
    let origin = format!("http://{}", idp.addr);
    let body = gateway_config(
        &up,
        &format!("crypto = true, shared = true, http = [\"{origin}\"], http_timeout = \"2s\""),
        &format!(
            r#"{{ use = "jwt", config = {{ jwks_url = "{origin}/.well-known/jwks.json", jwks_max_age = "2s", jwks_refresh_interval = "2s" }} }},"#
        ),
    );
    let body = body.replacen("[plugin.jwt]\n", "[plugin.jwt]\nisolation = \"per-request\"\n", 1);
    let gw = TestGateway::start(&format!("{ADMIN}{body}"));
    assert_eq!(idp.hits(), 1, "fetched when the config was loaded");
    for i in 0..5 {
        let r = with_bearer(&gw, &key.token(&claims(&format!("user-{i}"), false)), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let created = |metrics: &str| {
        sample(metrics, r#"wasmgate_plugin_instances_created_total{plugin="jwt"}"#).and_then(|v| v.parse::<u64>().ok())
    };
    assert_eq!(created(&gw.metrics().await), Some(5), "a new instance for each request");
    assert_eq!(idp.hits(), 1, "none of them fetched the JWKS again");

    // Stale, and the identity provider answers what is not a JWKS.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    idp.serve(String::new());
    for i in 0..5 {
        let r = with_bearer(&gw, &key.token(&claims(&format!("late-{i}"), false)), &[]).await;
        assert_eq!(r.status, 200, "the keys fetched before still verify: {}", r.text());
    }
    assert_eq!(created(&gw.metrics().await), Some(10));
    assert_eq!(idp.hits(), 2, "one try for them all, within jwks_refresh_interval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_without_the_crypto_grant_does_not_load() {
    let up = TestUpstream::echo("u").await;
    let plugins = r#"{ use = "jwt", config = { hmac_secret = "unused" } },"#;
    let err =
        TestGateway::try_start("", &gateway_config(&up, "", plugins)).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("wasmgate:plugin/crypto"), "{err}");
    assert!(err.contains("grants = { crypto = true }"), "the fix names the grant: {err}");
    assert!(err.contains("[plugin.jwt]"), "{err}");

    // http needs no grant to load, but a jwks_url outside the grants is
    // refused at config, not left to fail on every request.
    let plugins = r#"{ use = "jwt", config = { jwks_url = "upstream://u/jwks.json" } },"#;
    let err = TestGateway::try_start("", &gateway_config(&up, "crypto = true", plugins))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("plugin `jwt` refused its config") && err.contains("not granted"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_claims_reach_the_plugins_after_it() {
    let up = TestUpstream::echo("u").await;
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks(&[rsa_jwk("rsa-1")])).unwrap();
    let gw = TestGateway::start(&gateway_config(
        &up,
        "crypto = true",
        &format!(
            r#"
  {{ use = "jwt", config = {{}}, config_files = {{ jwks = "{}" }} }},
  {{ use = "chaos", config = {{ mode = "context" }} }},
  {{ use = "add-header", config = {{ name = "x-after-jwt", value = "yes" }} }},
"#,
            jwks_file.display()
        ),
    ));
    let r = with_bearer(&gw, &rs256("rsa-1", &claims("frank", false)), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json();
    let context = echoed_header(&doc, "x-context").unwrap_or_default();
    assert!(context.contains("jwt.sub=frank"), "{context}");
    assert!(context.contains(r#"jwt.claims={"#) && context.contains(r#""email":"frank@example.com""#), "{context}");
    assert_eq!(echoed_header(&doc, "x-after-jwt").as_deref(), Some("yes"));

    // A refused token stops the chain: nothing after jwt runs.
    let r = get(&gw.url("/orders")).await;
    assert_eq!(r.status, 401);
    assert_eq!(up.hits(), 1);
}
