//! Capabilities through the real gateway: what a grant gives, what the
//! absence of one refuses, and that outbound requests reach only what was
//! granted (whatever `Host` the plugin sends). The `capabilities` test guest
//! uses each one as its config says and reports in request headers.

use std::time::Duration;

use wasmgate_tests::redis_server::RedisServer;
use wasmgate_tests::upstream::{TestUpstream, echoed_header};
use wasmgate_tests::{TestGateway, get};

fn config(grants: &str, plugin_config: &str, extra: &str, up: &TestUpstream) -> String {
    format!(
        r#"{extra}
[plugin.capabilities]
grants = {{ {grants} }}

[upstreams.u]
endpoints = ["{}"]

[[routes]]
upstream = "u"
plugins = [{{ use = "capabilities", config = {{ {plugin_config} }} }}]
"#,
        up.addr
    )
}

const ALL: &str = "store = true, crypto = true, http = [\"u\"], secrets = { s = { file = \"SECRET\" } }";

fn all_grants(dir: &std::path::Path) -> String {
    let secret = dir.join("secret");
    std::fs::write(&secret, "hunter22\n").unwrap();
    ALL.replace("SECRET", &secret.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_without_its_grants_does_not_load() {
    let up = TestUpstream::echo("u").await;
    let err = TestGateway::try_start("", &config("store = true", "", "", &up))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("which it was not granted"), "{err}");
    assert!(err.contains("grants = {"), "the fix names the grant: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_secrets_and_crypto_work_when_granted() {
    let up = TestUpstream::echo("u").await;
    let dir = tempfile::tempdir().unwrap();
    let jwk = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
    let body = config(&all_grants(dir.path()), &format!("counter = \"hits\", secret = \"s\", jwk = '{jwk}'"), "", &up);
    let gw = TestGateway::start_with("workers = 1", &body);
    let first = get(&gw.url("/")).await.json();
    let second = get(&gw.url("/")).await.json();
    assert_eq!(echoed_header(&first, "x-count").as_deref(), Some("1"));
    assert_eq!(echoed_header(&second, "x-count").as_deref(), Some("2"));
    assert_eq!(echoed_header(&first, "x-secret-len").as_deref(), Some("8"), "file secret, trailing newline trimmed");
    assert_eq!(echoed_header(&first, "x-key").as_deref(), Some("ES256"));
}

/// A secret granted with `use = "verify"` makes keys, but its bytes never
/// enter the plugin: `secrets::get` does not see it (a secret granted to
/// verify tokens could be read, and sent anywhere the plugin may send).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_granted_to_verify_with_cannot_be_read() {
    let up = TestUpstream::echo("u").await;
    let dir = tempfile::tempdir().unwrap();
    let grants = all_grants(dir.path()).replace("} }", ", use = \"verify\" } }");
    assert!(grants.contains("use = \"verify\""), "{grants}");
    let gw = TestGateway::start(&config(&grants, "secret = \"s\"", "", &up));
    let doc = get(&gw.url("/")).await.json();
    assert_eq!(echoed_header(&doc, "x-secret-len").as_deref(), Some("none"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_reaches_only_what_was_granted() {
    let (up, other) = tokio::join!(TestUpstream::echo("u"), TestUpstream::echo("other"));
    let dir = tempfile::tempdir().unwrap();
    let grants = all_grants(dir.path());
    let extra = format!("[upstreams.other]\nendpoints = [\"{}\"]\n", other.addr);
    let fetch = |cfg: &str| config(&grants, cfg, &extra, &up);

    // The granted upstream, whatever Host the plugin claims.
    let gw = TestGateway::start(&fetch(&format!("fetch = \"upstream://u/x\", fetch_host = \"{}\"", other.addr)));
    let doc = get(&gw.url("/")).await.json();
    assert_eq!(echoed_header(&doc, "x-fetch").as_deref(), Some("200 u"));
    drop(gw);
    // Too many headers (past ~24 500 the request's map panicked), and a
    // batch past 64.
    for headers in [1025, 25_000] {
        let gw = TestGateway::start(&fetch(&format!("fetch = \"upstream://u/x\", fetch_headers = {headers}")));
        let doc = get(&gw.url("/")).await.json();
        let out = echoed_header(&doc, "x-fetch").unwrap_or_default();
        assert_eq!(out, format!("error: invalid request: {headers} headers, more than 1024"));
    }
    let gw = TestGateway::start(&fetch("fetch = \"upstream://u/x\", fetch_copies = 70"));
    let doc = get(&gw.url("/")).await.json();
    let out = echoed_header(&doc, "x-fetch").unwrap_or_default();
    assert_eq!(out, "64 of 70 sent, then error: invalid request: more than 64 requests in one send-all");
    // An upstream that exists but was not granted.
    let gw = TestGateway::start(&fetch("fetch = \"upstream://other/x\""));
    let doc = get(&gw.url("/")).await.json();
    let out = echoed_header(&doc, "x-fetch").unwrap_or_default();
    assert!(out.starts_with("error: not granted"), "{out}");
    drop(gw);
    // An origin that was not granted (the other upstream's address).
    let gw = TestGateway::start(&fetch(&format!("fetch = \"http://{}/x\"", other.addr)));
    let doc = get(&gw.url("/")).await.json();
    let out = echoed_header(&doc, "x-fetch").unwrap_or_default();
    assert!(out.starts_with("error: not granted"), "{out}");
    drop(gw);
    // No http grant at all: the plugin loads (it may call out only in some
    // configurations), and every request it sends is refused.
    let gw = TestGateway::start(&config("store = true, crypto = true", "fetch = \"upstream://u/x\"", &extra, &up));
    let before = up.hits();
    let doc = get(&gw.url("/")).await.json();
    let out = echoed_header(&doc, "x-fetch").unwrap_or_default();
    assert!(out.starts_with("error: not granted") && out.contains("has no http grant"), "{out}");
    assert_eq!(other.hits(), 0, "nothing reached the ungranted upstream");
    assert_eq!(up.hits() - before, 1, "only the proxied request reached u, not the plugin's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_origin_is_reachable() {
    let (up, origin) = tokio::join!(TestUpstream::echo("u"), TestUpstream::echo("origin"));
    let dir = tempfile::tempdir().unwrap();
    let grants =
        all_grants(dir.path()).replace("http = [\"u\"]", &format!("http = [\"u\", \"http://{}\"]", origin.addr));
    let gw = TestGateway::start(&config(&grants, &format!("fetch = \"http://{}/jwks\"", origin.addr), "", &up));
    let doc = get(&gw.url("/")).await.json();
    assert_eq!(echoed_header(&doc, "x-fetch").as_deref(), Some("200 origin"));
}

/// `http_max_response` bounds one response, and a `send-all`'s responses
/// together: the plugin takes them into its memory at once (64 of them
/// were held whole, each up to the limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_all_brings_at_most_one_responses_worth() {
    let up = TestUpstream::echo("u").await;
    let dir = tempfile::tempdir().unwrap();
    let grants = all_grants(dir.path()) + ", http_max_response = \"1KiB\"";
    for (fetch, expected) in [
        ("fetch = \"upstream://u/bytes/600\"", "200 u"),
        ("fetch = \"upstream://u/bytes/2000\"", "error: response too large"),
        ("fetch = \"upstream://u/bytes/600\", fetch_copies = 1", "1 of 1 sent"),
        ("fetch = \"upstream://u/bytes/600\", fetch_copies = 3", "1 of 3 sent, then error: response too large"),
    ] {
        let gw = TestGateway::start(&config(&grants, fetch, "", &up));
        let doc = get(&gw.url("/")).await.json();
        assert_eq!(echoed_header(&doc, "x-fetch").as_deref(), Some(expected), "{fetch}");
    }
}

/// A plugin that calls out in a loop is stopped: its waits on I/O put its
/// deadline off by the time waited (up to the route's timeout), a call that
/// fails at once by nothing. Each wait used to give it its whole deadline
/// again, so a loop of refused sends ran for ever and held its worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_calling_out_for_ever_is_stopped() {
    let up = TestUpstream::echo("u").await;
    let dir = tempfile::tempdir().unwrap();
    let grants = all_grants(dir.path());
    for (url, within) in [("upstream://other/x", Duration::from_secs(1)), ("upstream://u/x", Duration::from_secs(3))] {
        let body = format!(
            r#"{}
[plugin.capabilities]
grants = {{ {grants} }}
deadline = "50ms"

[upstreams.u]
endpoints = ["{}"]

[[routes]]
upstream = "u"
timeout = "500ms"
plugins = [{{ use = "capabilities", config = {{ fetch = "{url}", fetch_forever = true }} }}]
"#,
            wasmgate_tests::ADMIN,
            up.addr
        );
        let gw = TestGateway::start(&body);
        let start = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(10), get(&gw.url("/"))).await;
        let status = r.map(|r| r.status.as_u16());
        assert_eq!(status.ok(), Some(500), "{url}: fails closed");
        assert!(start.elapsed() < within, "{url}: stopped after {:?}", start.elapsed());
        let metrics = gw.metrics().await;
        let failures = r#"wasmgate_plugin_failures_total{plugin="capabilities",kind="deadline"} 1"#;
        assert!(metrics.contains(failures), "{url}: {metrics}");
    }
}

/// A call out waits no longer than the plugin may still wait (its route's
/// timeout): the plugin gets a timeout it can act on. It waited the grant's
/// `http_timeout` (2 s here), and the plugin was then stopped at its
/// deadline with the answer in hand: a 500. The cut is not held against the
/// upstream: its breaker (open after one failure) lets the request through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_out_waits_no_longer_than_the_plugin_may() {
    let up = TestUpstream::echo("u").await;
    let dir = tempfile::tempdir().unwrap();
    let grants = all_grants(dir.path()).replace("http = [", "http_timeout = \"2s\", http = [");
    let body = format!(
        r#"[plugin.capabilities]
grants = {{ {grants} }}

[upstreams.u]
endpoints = ["{}"]
breaker = {{ consecutive_failures = 1 }}

[[routes]]
upstream = "u"
timeout = "300ms"
plugins = [{{ use = "capabilities", config = {{ fetch = "upstream://u/slow/1000" }} }}]
"#,
        up.addr
    );
    let gw = TestGateway::start(&body);
    let r = get(&gw.url("/")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(echoed_header(&r.json(), "x-fetch").as_deref(), Some("error: timed out"));
}

/// The Redis backend: async calls into the plugin, a store shared by two
/// gateways, and a Redis that goes away and comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_is_shared_by_gateways_and_survives_an_outage() {
    let mut redis = RedisServer::start();
    let up = TestUpstream::echo("u").await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("[store]\nbackend = \"redis\"\nurl = \"{}\"\ntimeout = \"200ms\"\n", redis.url());
    let body = config(&all_grants(dir.path()), "counter = \"shared\"", &store, &up);
    let (a, b) = (TestGateway::start(&body), TestGateway::start(&body));
    let mut seen = Vec::new();
    for gw in [&a, &b, &a, &b] {
        let doc = get(&gw.url("/")).await.json();
        seen.push(echoed_header(&doc, "x-count").unwrap_or_default());
    }
    assert_eq!(seen, vec!["1", "2", "3", "4"], "one counter across both gateways");

    redis.kill();
    let doc = get(&a.url("/")).await.json();
    let out = echoed_header(&doc, "x-count").unwrap_or_default();
    assert!(out.starts_with("error: store unavailable"), "{out}");
    redis.restart();
    let mut back = false;
    for _ in 0..50 {
        let doc = get(&a.url("/")).await.json();
        if echoed_header(&doc, "x-count").as_deref() == Some("1") {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the store reconnected to the restarted (empty) Redis");
}
