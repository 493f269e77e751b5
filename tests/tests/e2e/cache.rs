//! `cache` through the real gateway: repeats answered from the store without
//! the upstream, what bypasses it, one user's answer kept from another, and
//! — on the Redis backend — one cache for two gateways that keeps serving
//! (uncached) while Redis is down.

use http::Request;
use http_body_util::Full;
use wasmgate_tests::redis_server::RedisServer;
use wasmgate_tests::upstream::{TestUpstream, echoed_header};
use wasmgate_tests::{Reply, TestGateway, get, get_with, send};

use crate::api_key::{ACME_DIGEST, ACME_KEY, GLOBEX_DIGEST, GLOBEX_KEY};

fn config(up: &TestUpstream, plugin_config: &str, extra: &str) -> String {
    format!(
        r#"{extra}
[plugin.cache]
grants = {{ store = true }}

[upstreams.u]
endpoints = ["{}"]

[[routes]]
name = "r"
upstream = "u"
plugins = [{{ use = "cache", config = {{ {plugin_config} }} }}]
"#,
        up.addr
    )
}

async fn request(gw: &TestGateway, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method(method).uri(gw.url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(req.body(Full::default()).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_answers_repeats_without_the_upstream() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&config(&up, "ttl = \"60s\"", ""));

    let first = get(&gw.url("/items?page=1")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache"), Some("miss"));
    assert_eq!(up.hits(), 1);

    let second = get(&gw.url("/items?page=1")).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-cache"), Some("hit"));
    assert_eq!(second.body, first.body, "the stored body, byte for byte");
    assert_eq!(second.header("content-type"), Some("application/json"));
    assert!(second.header("age").is_some_and(|a| a.parse::<u64>().is_ok()));
    assert_ne!(second.header("x-request-id"), first.header("x-request-id"), "each answer has its own id");
    assert_eq!(up.hits(), 1, "answered from the cache");

    // HEAD is served from the GET entry.
    let head = request(&gw, "HEAD", "/items?page=1", &[]).await;
    assert_eq!((head.status.as_u16(), head.header("x-cache")), (200, Some("hit")));
    assert!(head.body.is_empty());
    let length = first.body.len().to_string();
    assert_eq!(head.header("content-length"), Some(length.as_str()), "the GET's length, as HEAD promises");
    assert_eq!(up.hits(), 1);

    // Over HTTP/2 too: the length, and no body (DATA on a HEAD's stream is
    // malformed: the client failed reading it).
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<bytes::Bytes>>();
    let req = Request::head(gw.url("/items?page=1")).body(Full::default()).unwrap();
    let head = wasmgate_tests::send_with(&h2, req).await;
    assert_eq!((head.status.as_u16(), head.header("x-cache")), (200, Some("hit")));
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some(length.as_str()));

    // Another query string is another resource.
    let other = get(&gw.url("/items?page=2")).await;
    assert_eq!(other.header("x-cache"), Some("miss"));
    assert_eq!(up.hits(), 2);

    // A 304 has no body, and its length is not 0 (RFC 9110 §8.6: that
    // would say the resource is empty).
    let r = get(&gw.url("/status/304")).await;
    assert_eq!(r.status, 304);
    assert_ne!(r.header("content-length"), Some("0"), "{:?}", r.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_is_bypassed_on_request_and_never_holds_a_post() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&config(&up, "", ""));
    assert_eq!(get(&gw.url("/doc")).await.header("x-cache"), Some("miss"));
    assert_eq!(get(&gw.url("/doc")).await.header("x-cache"), Some("hit"));
    assert_eq!(up.hits(), 1);

    // The client asks for a fresh answer: not its to decide (without
    // `client_refresh`); `no-store` asks only that nothing be stored.
    for value in ["no-cache", "max-age=0", "no-store"] {
        let r = request(&gw, "GET", "/doc", &[("cache-control", value)]).await;
        assert_eq!((r.status.as_u16(), r.header("x-cache")), (200, Some("hit")), "{value}");
    }
    assert_eq!(up.hits(), 1);
    // On a miss, `no-store`'s answer is not stored.
    let r = request(&gw, "GET", "/kept-not", &[("cache-control", "no-store")]).await;
    assert_eq!(r.header("x-cache"), Some("miss"));
    assert_eq!(get(&gw.url("/kept-not")).await.header("x-cache"), Some("miss"));
    assert_eq!(up.hits(), 3);

    // A POST always reaches the upstream, and its success invalidates the GET entry.
    for _ in 0..2 {
        let r = request(&gw, "POST", "/doc", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-cache"), None);
    }
    assert_eq!(up.hits(), 5);
    assert_eq!(get(&gw.url("/doc")).await.header("x-cache"), Some("miss"));
    assert_eq!(up.hits(), 6);

    // Statuses outside `statuses` are not stored (500 by default).
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/status/500")).await.header("x-cache"), Some("miss"));
    }
    assert_eq!(up.hits(), 8);
    // A 404 is.
    assert_eq!(get(&gw.url("/status/404")).await.header("x-cache"), Some("miss"));
    let r = get(&gw.url("/status/404")).await;
    assert_eq!((r.status.as_u16(), r.header("x-cache")), (404, Some("hit")));
    assert_eq!(up.hits(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_respects_max_body() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&config(&up, "max_body = \"1KiB\"", ""));
    for _ in 0..2 {
        let r = get(&gw.url("/bytes/2048")).await;
        assert_eq!((r.status.as_u16(), r.body.len(), r.header("x-cache")), (200, 2048, Some("miss")));
    }
    let _ = get(&gw.url("/bytes/1000")).await;
    let r = get(&gw.url("/bytes/1000")).await;
    assert_eq!((r.body.len(), r.header("x-cache")), (1000, Some("hit")));
    assert_eq!(up.hits(), 3);
}

/// A request api-key identified (it removes the key: no `Authorization`
/// reaches `cache`) is one consumer's: its answer is not stored unless the
/// upstream marks it `public` (here through add-header).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_keeps_one_consumers_answer_from_another() {
    let up = TestUpstream::echo("u").await;
    let api_key = format!(
        r#"{{ use = "api-key", config = {{ consumer_header = "x-consumer", keys = {{ "{ACME_DIGEST}" = {{ consumer = "acme" }}, "{GLOBEX_DIGEST}" = {{ consumer = "globex" }} }} }} }}"#
    );
    let gw = TestGateway::start(&format!(
        r#"
[plugin.cache]
grants = {{ store = true }}

[upstreams.u]
endpoints = ["{}"]

[[routes]]
name = "api"
match = {{ prefix = "/api" }}
upstream = "u"
plugins = [{api_key}, {{ use = "cache", config = {{}} }}]

[[routes]]
name = "catalog"
match = {{ prefix = "/catalog" }}
upstream = "u"
plugins = [
  {api_key},
  {{ use = "cache", config = {{}} }},
  {{ use = "add-header", config = {{ response = {{ set = {{ "cache-control" = "public, max-age=60" }} }} }} }},
]
"#,
        up.addr
    ));

    // Each consumer gets its own answer, every time from the upstream.
    for round in 0..2 {
        for (key, name) in [(ACME_KEY, "acme"), (GLOBEX_KEY, "globex")] {
            let r = get_with(&gw.url("/api/me"), &[("x-api-key", key)]).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let doc = r.json();
            let seen = (r.header("x-cache"), echoed_header(&doc, "x-consumer"));
            assert_eq!(seen, (Some("miss"), Some(name.to_owned())), "round {round}");
            assert_eq!(echoed_header(&doc, "authorization"), None);
            assert_eq!(echoed_header(&doc, "x-api-key"), None);
        }
    }
    assert_eq!(up.hits(), 4);

    // An answer the upstream marks public is stored and served to anyone.
    let first = get_with(&gw.url("/catalog/items"), &[("x-api-key", ACME_KEY)]).await;
    assert_eq!((first.header("x-cache"), first.header("cache-control")), (Some("miss"), Some("public, max-age=60")));
    let second = get_with(&gw.url("/catalog/items"), &[("x-api-key", GLOBEX_KEY)]).await;
    assert_eq!(second.header("x-cache"), Some("hit"));
    assert_eq!(second.body, first.body);
    let with_cookie = get_with(&gw.url("/catalog/items"), &[("x-api-key", GLOBEX_KEY), ("cookie", "session=b")]).await;
    assert_eq!(with_cookie.header("x-cache"), Some("hit"));
    assert_eq!(up.hits(), 5);
}

/// A request with a `Cookie` is one user's: its answer is not stored unless
/// the upstream marks it `public`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_keeps_answers_to_cookies_apart() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&config(&up, "", ""));
    for session in ["a", "b", "a"] {
        let cookie = format!("session={session}");
        let r = get_with(&gw.url("/me"), &[("cookie", &cookie)]).await;
        assert_eq!(r.header("x-cache"), Some("miss"), "{cookie}");
        assert_eq!(echoed_header(&r.json(), "cookie"), Some(cookie));
    }
    assert_eq!(up.hits(), 3);
    // Without one, the same route's answers are stored.
    assert_eq!(get(&gw.url("/page")).await.header("x-cache"), Some("miss"));
    assert_eq!(get(&gw.url("/page")).await.header("x-cache"), Some("hit"));
    assert_eq!(up.hits(), 4);
}

/// The Redis backend: two gateways share one cache, and with Redis gone the
/// requests are served uncached rather than failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_on_redis_is_shared_by_gateways_and_survives_an_outage() {
    let mut redis = RedisServer::start();
    let up = TestUpstream::echo("u").await;
    let store = format!("[store]\nbackend = \"redis\"\nurl = \"{}\"\ntimeout = \"200ms\"\n", redis.url());
    let body = config(&up, "", &store);
    let (a, b) = (TestGateway::start(&body), TestGateway::start(&body));

    // Behind one load balancer, both gateways see the same Host (the default
    // key includes it; their own addresses differ).
    let host = [("host", "api.example.com")];
    let first = request(&a, "GET", "/shared", &host).await;
    assert_eq!(first.header("x-cache"), Some("miss"));
    let second = request(&b, "GET", "/shared", &host).await;
    assert_eq!(second.header("x-cache"), Some("hit"), "stored by the other gateway");
    assert_eq!(second.body, first.body);
    assert_eq!(up.hits(), 1);

    redis.kill();
    for gw in [&a, &b] {
        let r = request(gw, "GET", "/shared", &host).await;
        assert_eq!((r.status.as_u16(), r.header("x-cache")), (200, Some("bypass")));
    }
    assert_eq!(up.hits(), 3);
}

/// A request carrying a header an upstream may build links from
/// (`X-Forwarded-Prefix`, a client's `Forwarded`) has its value in its key:
/// one client's answer, built from its own header, was served to everyone —
/// and a client's `no-cache` no longer chooses when an entry is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_poison_the_cache_with_an_unkeyed_header() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&config(&up, "", ""));
    for (name, value) in [("x-forwarded-prefix", "/evil"), ("x-forwarded-scheme", "evil")] {
        let r = request(&gw, "GET", "/page", &[(name, value), ("cache-control", "no-cache")]).await;
        assert_eq!(r.header("x-cache"), Some("miss"), "{name}");
    }
    let clean = get(&gw.url("/page")).await;
    assert_eq!(clean.header("x-cache"), Some("miss"), "not the poisoned entries");
    assert!(!clean.text().contains("evil"));
    let again = get(&gw.url("/page")).await;
    assert_eq!(again.header("x-cache"), Some("hit"));
    assert!(!again.text().contains("evil"), "{}", again.text());
    // The host a request says it was forwarded for is in its key (from a
    // trusted proxy it reaches the upstream as sent; from a client the
    // gateway replaces it, and the entry is only one of its own).
    for (name, value) in [("forwarded", "for=10.0.0.1;host=evil.example"), ("x-forwarded-host", "evil.example")] {
        let r = request(&gw, "GET", "/other", &[(name, value)]).await;
        assert_eq!(r.header("x-cache"), Some("miss"), "{name}");
        assert!(!r.text().contains("evil"), "{}", r.text());
    }
    assert_eq!(get(&gw.url("/other")).await.header("x-cache"), Some("miss"), "not the entries above");
    assert_eq!(get(&gw.url("/other")).await.header("x-cache"), Some("hit"));
}
