//! Per-request cost of each policy plugin, measured the way the proxy calls
//! it: a warm pooled instance, a fresh exchange per request (built outside
//! the timing), the plugin's hooks under their deadline, with the
//! capabilities it is granted in production — the in-process store, the
//! native `crypto` import, secrets.
//!
//! `compose` is not here: its cost is its upstream calls, which need the
//! gateway's upstreams; the end-to-end tests exercise it.
//!
//! `jwt` is measured with its verified-token cache off (every request
//! verifies its signature through the host's `crypto` import) and on, beside
//! the native verification it is held against: ring, and the host's own key
//! type that the import calls.

#![expect(clippy::expect_used, reason = "bench setup: a failure should stop the bench")]

#[expect(dead_code, reason = "the no-grant `link` is for the dispatch bench")]
mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::json;
use sha2::Digest;
use wasmgate::config::{Grants, Isolation, Secret};
use wasmgate::exchange::Exchange;
use wasmgate::plugin::caps::store::StoreBackend;
use wasmgate::plugin::{ChainLink, Outcome, Runtime};
use wasmgate_common::keys::{Algorithm, Key};
use wasmgate_common::memstore::{MemStore, SystemClock};

/// The shared RSA test key (it protects nothing).
const RSA_PKCS8_PEM: &str = include_str!("../common/testdata/rsa-2048.pem");

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signing keys, their JWKS, and a token of each kind.
struct Tokens {
    jwks: String,
    rs256: String,
    es256: String,
    /// What the native baselines verify: signing input and signature of each token.
    rs256_parts: (Vec<u8>, Vec<u8>),
    es256_parts: (Vec<u8>, Vec<u8>),
    rsa_public_der: Vec<u8>,
    ec_public_point: Vec<u8>,
    rsa_jwk: String,
    ec_jwk: String,
}

impl Tokens {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = rcgen::KeyPair::from_pem(RSA_PKCS8_PEM).expect("rsa pem").serialize_der();
        let rsa = RsaKeyPair::from_pkcs8(&pkcs8).expect("rsa key");
        let ec_pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("ec key");
        let ec = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, ec_pkcs8.as_ref(), &rng)
            .expect("ec key");
        let components = signature::RsaPublicKeyComponents::<Vec<u8>>::from(rsa.public());
        let point = ec.public_key().as_ref().to_vec();
        let rsa_jwk = json!({"kty": "RSA", "kid": "rsa", "n": b64url(&components.n), "e": b64url(&components.e)});
        let ec_jwk =
            json!({"kty": "EC", "crv": "P-256", "kid": "ec", "x": b64url(&point[1..33]), "y": b64url(&point[33..])});
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
        let claims = b64url(
            json!({"sub": "alice", "iss": "https://idp.bench", "aud": "api", "iat": now, "exp": now + 3600, "role": "viewer"})
                .to_string()
                .as_bytes(),
        );
        let sign = |alg: &str, kid: &str, sign: &dyn Fn(&[u8]) -> Vec<u8>| {
            let input =
                format!("{}.{claims}", b64url(json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string().as_bytes()));
            let sig = sign(input.as_bytes());
            (format!("{input}.{}", b64url(&sig)), (input.into_bytes(), sig))
        };
        let (rs256, rs256_parts) = sign("RS256", "rsa", &|m| {
            let mut sig = vec![0; rsa.public().modulus_len()];
            rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, m, &mut sig).expect("sign");
            sig
        });
        let (es256, es256_parts) = sign("ES256", "ec", &|m| ec.sign(&rng, m).expect("sign").as_ref().to_vec());
        Self {
            jwks: json!({"keys": [rsa_jwk, ec_jwk]}).to_string(),
            rs256,
            es256,
            rs256_parts,
            es256_parts,
            rsa_public_der: rsa.public().as_ref().to_vec(),
            ec_public_point: point,
            rsa_jwk: rsa_jwk.to_string(),
            ec_jwk: ec_jwk.to_string(),
        }
    }
}

/// Everything the policy plugins are granted: the store, crypto, and the
/// `api-keys` secret.
fn grants(api_keys: &str) -> Grants {
    let mut secrets = BTreeMap::new();
    secrets.insert("api-keys".to_owned(), Secret::new(api_keys.to_owned()));
    Grants { store: true, crypto: true, secrets, ..Grants::default() }
}

struct Bench<'a> {
    runtime: Arc<Runtime>,
    plugins: &'a Path,
    store: StoreBackend,
    api_keys: String,
}

impl Bench<'_> {
    fn link(&self, name: &str, config: serde_json::Value) -> ChainLink {
        let wasm = self.plugins.join(format!("{name}.wasm"));
        let grants = grants(&self.api_keys);
        common::link_with(&self.runtime, &wasm, Isolation::Pooled, &config.to_string(), grants, Some(&self.store))
    }
}

fn get(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut req = Request::get(uri).header("host", "api.example.com");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(()).expect("request")
}

/// Runs `link` as the chain does: its fixed request headers and request
/// hook (if it has one) and, when the request went on, gives it `response`:
/// its fixed response headers and those the request hook left set on it,
/// then the response hook, if the plugin has one. `"continue"`,
/// `"respond"` or `"fault"`.
fn run(link: &ChainLink, ex: &mut Box<Exchange>, response: Option<&Response<Bytes>>) -> &'static str {
    let outcome = |o: Result<Outcome, _>| match o {
        Ok(Outcome::Continue) => "continue",
        Ok(Outcome::Respond(_)) => "respond",
        Err(_) => "fault",
    };
    ex.apply_fixed_request(&link.fixed.request);
    let first = if link.info.on_request { outcome(link.on_request(ex, Instant::now())) } else { "continue" };
    match response {
        Some(resp) if first == "continue" => {
            let (parts, ()) = clone_response(resp).into_parts();
            ex.response = Some(parts);
            ex.pass_back(&link.fixed, 0);
            if !link.info.on_response {
                return first;
            }
            ex.response_body = Some(resp.body().clone());
            outcome(link.on_response(ex, Instant::now()))
        }
        _ => first,
    }
}

fn clone_response(resp: &Response<Bytes>) -> Response<()> {
    let mut out = Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        out = out.header(name, value);
    }
    out.body(()).expect("response")
}

fn bench_plugin(
    c: &mut Criterion,
    id: &str,
    link: &ChainLink,
    request: impl Fn() -> Request<()>,
    setup: impl Fn(&mut Exchange),
    response: Option<&Response<Bytes>>,
    expected: &str,
) {
    let fresh = || {
        let mut ex = common::exchange(request());
        setup(&mut ex);
        ex
    };
    let mut ex = fresh();
    assert_eq!(run(link, &mut ex, response), expected, "{id}: unexpected outcome");
    c.bench_function(id, |b| {
        b.iter_batched_ref(fresh, |ex| black_box(run(link, ex, response)), BatchSize::SmallInput);
    });
}

fn plugins(c: &mut Criterion) {
    let (plugins, _) = common::built_plugins();
    let api_key = "bench-key-0123456789abcdef";
    let api_key_hash = hex::encode(sha2::Sha256::digest(api_key.as_bytes()));
    let bench = Bench {
        runtime: common::runtime(),
        plugins: &plugins,
        store: StoreBackend::Memory(Arc::new(MemStore::new(SystemClock, 1_000_000))),
        api_keys: json!({ api_key_hash.clone(): { "consumer": "acme", "scopes": ["read"] } }).to_string(),
    };
    let tokens = Tokens::new();
    let upstream_response = Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("server", "upstream")
        .header("cache-control", "max-age=600")
        .body(Bytes::from_static(br#"{"id":42,"name":"Ada","internal":{"shard":3}}"#))
        .expect("response");
    let no_setup = |_: &mut Exchange| {};

    // jwt: RS256 and ES256, every request verified (cache off), and cached.
    let rs_auth = format!("Bearer {}", tokens.rs256);
    let es_auth = format!("Bearer {}", tokens.es256);
    for (cache, cache_size) in [("verify", 0), ("cached", 10_000)] {
        let jwt = bench.link(
            "jwt",
            json!({"jwks": tokens.jwks, "issuer": "https://idp.bench", "audience": "api", "cache_size": cache_size}),
        );
        for (alg, auth) in [("rs256", &rs_auth), ("es256", &es_auth)] {
            let id = format!("plugin/jwt/{alg}/{cache}");
            bench_plugin(c, &id, &jwt, || get("/api/users/42", &[("authorization", auth)]), no_setup, None, "continue");
        }
    }
    // What the plugin is held against: one native verification.
    let (rs_msg, rs_sig) = &tokens.rs256_parts;
    let (es_msg, es_sig) = &tokens.es256_parts;
    let rsa = signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &tokens.rsa_public_der);
    let ec = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &tokens.ec_public_point);
    assert!(rsa.verify(rs_msg, rs_sig).is_ok() && ec.verify(es_msg, es_sig).is_ok(), "native verify");
    c.bench_function("native/ring/rs256", |b| b.iter(|| black_box(rsa.verify(rs_msg, rs_sig)).is_ok()));
    c.bench_function("native/ring/es256", |b| b.iter(|| black_box(ec.verify(es_msg, es_sig)).is_ok()));
    let rsa_key = Key::from_jwk(&tokens.rsa_jwk).expect("rsa jwk");
    let ec_key = Key::from_jwk(&tokens.ec_jwk).expect("ec jwk");
    assert!(rsa_key.verify(Algorithm::Rs256, rs_msg, rs_sig) && ec_key.verify(Algorithm::Es256, es_msg, es_sig));
    c.bench_function("native/host-key/rs256", |b| {
        b.iter(|| black_box(rsa_key.verify(Algorithm::Rs256, rs_msg, rs_sig)))
    });
    c.bench_function("native/host-key/es256", |b| {
        b.iter(|| black_box(ec_key.verify(Algorithm::Es256, es_msg, es_sig)))
    });

    // abac: the claims jwt leaves in the context; three policies on the
    // principal, and in the first two cases a fourth that reads a header.
    const ROLES: &str = r#"
        permit(principal, action in Action::"read", resource) when { principal has role && principal.role == "viewer" };
        permit(principal, action, resource) when { principal has role && principal.role == "admin" };
        forbid(principal == User::"mallory", action, resource);
    "#;
    let abac = bench.link(
        "abac",
        json!({
            "policies": format!(r#"{ROLES} forbid(principal, action, resource) when {{ context.headers has "x-blocked" }};"#),
            "context_headers": ["x-blocked"],
        }),
    );
    let claims = json!({"sub": "alice", "role": "viewer", "exp": 4_102_444_800u64}).to_string();
    let with_claims = |ex: &mut Exchange| {
        ex.context.insert("jwt.claims".into(), claims.clone());
    };
    bench_plugin(c, "plugin/abac/permit", &abac, || get("/api/users/42", &[]), with_claims, None, "continue");
    // The same, each request on a path abac has not seen: its entities are
    // built (the principal is still remembered), as for a client that never
    // repeats a request.
    let seen = std::cell::Cell::new(0u64);
    let new_path = || {
        seen.set(seen.get() + 1);
        get(&format!("/api/users/{}", seen.get()), &[])
    };
    bench_plugin(c, "plugin/abac/permit-new-path", &abac, new_path, with_claims, None, "continue");
    // Policies that never read the context: a repeated request's verdict is
    // kept with its entity set, and Cedar is not asked again.
    let abac_no_context = bench.link("abac", json!({ "policies": ROLES }));
    bench_plugin(
        c,
        "plugin/abac/permit-no-context",
        &abac_no_context,
        || get("/api/users/42", &[]),
        with_claims,
        None,
        "continue",
    );

    // rate-limit: never limiting here, so every request pays the full path
    // (and its request hook leaves the RateLimit-* headers for the response).
    for algorithm in ["token-bucket", "sliding-window"] {
        let limit = bench.link(
            "rate-limit",
            json!({"limits": [{"name": "s", "key": ["client-ip"], "rate": 1_000_000_000u64, "per": "1s", "algorithm": algorithm}]}),
        );
        bench_plugin(
            c,
            &format!("plugin/rate-limit/{algorithm}"),
            &limit,
            || get("/api/x", &[]),
            no_setup,
            Some(&upstream_response),
            "continue",
        );
    }

    // transform: headers, path and query on the way in; headers and a JSON
    // body on the way out.
    let transform = bench.link(
        "transform",
        json!({
            "request": {
                "headers": {"remove": ["cookie"], "set": {"x-tenant": "acme"}, "rename": {"x-old": "x-new"}},
                "path": {"from": "/v1/users/{id}", "to": "/users/{id}"},
                "query": {"remove": ["debug"], "set": {"version": "2"}},
            },
            "response": {"headers": {"remove": ["server"], "set": {"x-frame-options": "DENY"}}},
        }),
    );
    let get_v1 = || get("/v1/users/42?debug=1", &[("cookie", "a=b"), ("x-old", "1")]);
    bench_plugin(
        c,
        "plugin/transform/headers-path-query",
        &transform,
        get_v1,
        no_setup,
        Some(&upstream_response),
        "continue",
    );
    let transform_body =
        bench.link("transform", json!({"response": {"body": {"remove": ["/internal"], "set": {"/api_version": 2}}}}));
    bench_plugin(
        c,
        "plugin/transform/response-json-body",
        &transform_body,
        || get("/users/42", &[]),
        no_setup,
        Some(&upstream_response),
        "continue",
    );

    // cors: an actual cross-origin request, and a preflight.
    let cors = bench.link(
        "cors",
        json!({"allowed_origins": ["https://app.example.com", "https://*.example.org"], "allow_credentials": true}),
    );
    let origin = [("origin", "https://app.example.com")];
    bench_plugin(
        c,
        "plugin/cors/request",
        &cors,
        || get("/api/x", &origin),
        no_setup,
        Some(&upstream_response),
        "continue",
    );
    let preflight = || {
        Request::options("/api/x")
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "GET")
            .body(())
            .expect("request")
    };
    bench_plugin(c, "plugin/cors/preflight", &cors, preflight, no_setup, None, "respond");

    // ip-filter: 20 CIDRs each way, behind a trusted proxy.
    let allow: Vec<String> = (0..20).map(|i| format!("10.{i}.0.0/16")).chain(["127.0.0.0/8".into()]).collect();
    let deny: Vec<String> = (0..20).map(|i| format!("192.0.2.{i}")).collect();
    let ip_filter = bench.link("ip-filter", json!({"allow": allow, "deny": deny, "trusted_proxies": ["127.0.0.1"]}));
    let xff = [("x-forwarded-for", "203.0.113.9, 10.3.4.5")];
    bench_plugin(c, "plugin/ip-filter/xff", &ip_filter, || get("/api/x", &xff), no_setup, None, "continue");

    // api-key: a key from the granted secret.
    let api = bench.link("api-key", json!({"keys_secret": "api-keys", "required_scopes": ["read"]}));
    bench_plugin(
        c,
        "plugin/api-key/valid",
        &api,
        || get("/api/x", &[("x-api-key", api_key)]),
        no_setup,
        None,
        "continue",
    );

    // add-header: two request and two response edits.
    let add_header = bench.link(
        "add-header",
        json!({"request": {"set": {"x-gateway": "wasmgate"}, "remove": ["x-internal"]},
               "response": {"set": {"x-powered-by": "wasmgate"}, "remove": ["server"]}}),
    );
    bench_plugin(
        c,
        "plugin/add-header/both",
        &add_header,
        || get("/api/x", &[]),
        no_setup,
        Some(&upstream_response),
        "continue",
    );

    // deny: a request that matches none of its rules goes on.
    let deny = bench
        .link("deny", json!({"paths": ["/admin", "/internal/*"], "methods": ["DELETE"], "headers": {"x-debug": "*"}}));
    bench_plugin(c, "plugin/deny/pass", &deny, || get("/api/x", &[("accept", "*/*")]), no_setup, None, "continue");

    // cache: a hit, answered from the in-process store.
    let cache = bench.link("cache", json!({"ttl": "10m"}));
    let mut warm = common::exchange(get("/catalog/1", &[]));
    assert_eq!(run(&cache, &mut warm, Some(&upstream_response)), "continue", "cache: the miss stores the response");
    bench_plugin(c, "plugin/cache/hit", &cache, || get("/catalog/1", &[]), no_setup, None, "respond");
}

criterion_group!(benches, plugins);
criterion_main!(benches);
