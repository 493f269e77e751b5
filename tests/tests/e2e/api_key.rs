//! The api-key plugin through the real gateway: a valid key reaches the
//! upstream (without the key, with the consumer), others are refused; keys
//! from a granted secret file, rotated when the file changes; and api-key
//! in front of rate-limit, which then counts each consumer apart.

use std::time::{Duration, Instant};

use http::Request;
use http_body_util::Full;
use wasmgate_tests::upstream::{TestUpstream, echoed_header};
use wasmgate_tests::{TestGateway, eventually, get, get_request, get_with, send};

/// SHA-256 of the test keys (`printf %s KEY | sha256sum`).
pub(crate) const ACME_KEY: &str = "acme-0123456789";
pub(crate) const ACME_DIGEST: &str = "af91bb523b812f61b4bc561f81919a23ad1ce8db0737aab2bd2fe31b66d2aa19";
pub(crate) const GLOBEX_KEY: &str = "globex-9876543210";
pub(crate) const GLOBEX_DIGEST: &str = "d0df0be682cb44a51a0475b1de291ae2750b172746cf8eb1f949865f2e093976";

fn route(up: &TestUpstream, grants: &str, plugins: &str) -> String {
    format!(
        "{grants}\n[upstreams.u]\nendpoints = [\"{}\"]\n\n[[routes]]\nname = \"api\"\nupstream = \"u\"\nplugins = [\n{plugins}\n]\n",
        up.addr
    )
}

fn with_key(url: &str, header: &str, key: &str) -> Request<Full<bytes::Bytes>> {
    get_request(url, &[(header, key)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_key_reaches_the_upstream_as_its_consumer() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(
        &up,
        "",
        &format!(
            r#"{{ use = "api-key", config = {{ consumer_header = "x-consumer", query = "api_key", keys = {{ "{ACME_DIGEST}" = {{ consumer = "acme", scopes = ["read"] }} }} }} }},"#
        ),
    ));

    let r = get_with(&gw.url("/orders"), &[("x-api-key", ACME_KEY), ("x-consumer", "admin")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json();
    assert_eq!(echoed_header(&doc, "x-api-key"), None, "the key never reaches the upstream");
    assert_eq!(echoed_header(&doc, "x-consumer").as_deref(), Some("acme"), "the client's copy was replaced");

    // In the query, the key is removed and the rest kept.
    let r = get(&gw.url(&format!("/orders?page=2&api_key={ACME_KEY}"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["query"], "page=2");
    assert_eq!(up.hits(), 2);

    for (req, error) in [
        (with_key(&gw.url("/orders"), "x-api-key", "acme-wrong"), "invalid api key"),
        (with_key(&gw.url("/orders"), "x-other", ACME_KEY), "missing api key"),
    ] {
        let r = send(req).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["error"], error);
        assert_eq!(r.header("www-authenticate"), Some(r#"ApiKey realm="api""#));
    }
    let r = get(&gw.url(&format!("/orders?api_key={ACME_DIGEST}"))).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (401, Some("invalid api key")), "a digest is no key");
    assert_eq!(up.hits(), 2, "refused requests never reach the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_come_from_a_granted_secret_file_and_rotate_when_it_changes() {
    let up = TestUpstream::echo("u").await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("api-keys.json");
    let keys = |digest: &str, consumer: &str| format!("{{\"{digest}\": {{\"consumer\": \"{consumer}\"}}}}\n");
    std::fs::write(&secret, keys(ACME_DIGEST, "acme")).unwrap();
    let body = route(
        &up,
        &format!("[plugin.api-key]\ngrants = {{ secrets = {{ keys = {{ file = \"{}\" }} }} }}\n", secret.display()),
        r#"{ use = "api-key", config = { keys_secret = "keys", consumer_header = "x-consumer", required_scopes = [] } },"#,
    );
    let gw = TestGateway::start_with("watch = true\nwatch_interval = \"50ms\"", &body);
    let r = send(with_key(&gw.url("/"), "x-api-key", ACME_KEY)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(echoed_header(&r.json(), "x-consumer").as_deref(), Some("acme"));

    // Rotation: writing the file is enough; the watcher reloads.
    std::fs::write(&secret, keys(GLOBEX_DIGEST, "globex")).unwrap();
    assert!(eventually(Duration::from_secs(10), || gw.gateway.generation() >= 1).await, "the watcher reloaded");
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = send(with_key(&gw.url("/"), "x-api-key", GLOBEX_KEY)).await;
        if r.status == 200 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(echoed_header(&r.json(), "x-consumer").as_deref(), Some("globex"));
    assert_eq!(send(with_key(&gw.url("/"), "x-api-key", ACME_KEY)).await.status, 401);

    // Without the grant the plugin sees no secret, and refuses its config
    // naming the grant to add.
    let plugin = r#"{ use = "api-key", config = { keys_secret = "keys" } },"#;
    let err = TestGateway::try_start("", &route(&up, "", plugin)).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("keys_secret `keys` is not a secret granted to this plugin"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_after_api_key_counts_each_consumer_apart() {
    let up = TestUpstream::echo("u").await;
    let grants = "[plugin.rate-limit]\ngrants = { store = true }\n";
    let gw = TestGateway::start(&route(
        &up,
        grants,
        &format!(
            r#"{{ use = "api-key", config = {{ keys = {{ "{ACME_DIGEST}" = {{ consumer = "acme" }}, "{GLOBEX_DIGEST}" = {{ consumer = "globex" }} }} }} }},
  {{ use = "rate-limit", config = {{ limits = [{{ name = "per-consumer", key = ["consumer"], rate = 3, per = "1h", missing = "deny" }}] }} }},"#
        ),
    ));
    let mut seen = Vec::new();
    for key in [ACME_KEY, ACME_KEY, ACME_KEY, ACME_KEY, GLOBEX_KEY, GLOBEX_KEY, GLOBEX_KEY, GLOBEX_KEY, "nope"] {
        let r = send(with_key(&gw.url("/"), "x-api-key", key)).await;
        seen.push(r.status.as_u16());
        if r.status == 200 {
            assert!(r.header("ratelimit-remaining").is_some(), "the allowed response carries the numbers");
        }
    }
    assert_eq!(seen, vec![200, 200, 200, 429, 200, 200, 200, 429, 401], "three each; an unknown key never counts");
    assert_eq!(up.hits(), 6);
}
