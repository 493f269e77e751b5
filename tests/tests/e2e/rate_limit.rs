//! The rate-limit plugin through the real gateway: exact counts under
//! concurrency (two workers, one in-process store), one limit shared by two
//! gateways through a real Redis, and Redis outages — fail open, fail
//! closed, and the limit back once Redis is.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use wasmgate_tests::certs::{Ca, Issued};
use wasmgate_tests::redis_server::RedisServer;
use wasmgate_tests::upstream::TestUpstream;
use wasmgate_tests::{Reply, TestGateway, client, get, get_request, send_with};

/// `[plugin.rate-limit]` with its grant, an upstream, and one route per
/// `(name, prefix, config)`.
fn config(up: &TestUpstream, store: &str, routes: &[(&str, &str, &str)]) -> String {
    let mut out = format!(
        "{store}\n[plugin.rate-limit]\ngrants = {{ store = true }}\n\n[upstreams.u]\nendpoints = [\"{}\"]\n",
        up.addr
    );
    for (name, prefix, plugin_config) in routes {
        out.push_str(&format!(
            "\n[[routes]]\nname = \"{name}\"\nmatch = {{ prefix = \"{prefix}\" }}\nupstream = \"u\"\nplugins = [{{ use = \"rate-limit\", config = {{ {plugin_config} }} }}]\n"
        ));
    }
    out
}

/// Sliding windows are aligned to the clock. A burst that straddles a window
/// edge is still limited exactly (the previous window weighs in), but the
/// per-request `RateLimit-Remaining` values asserted below assume one window:
/// start well inside one.
async fn away_from_a_window_edge(window: Duration) {
    let window_ms = u64::try_from(window.as_millis()).unwrap();
    let now_ms = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
    let left = window_ms - now_ms % window_ms;
    if left < 10_000 {
        tokio::time::sleep(Duration::from_millis(left + 50)).await;
    }
}

/// `tasks` tasks, each sending `per_task` GETs to `url` at once.
async fn burst(urls: &[String], tasks: usize, per_task: usize) -> Vec<Reply> {
    let handles = (0..tasks).map(|t| {
        let url = urls[t % urls.len()].clone();
        tokio::spawn(async move {
            let client = client();
            join_all((0..per_task).map(|_| send_with(&client, get_request(&url, &[])))).await
        })
    });
    join_all(handles).await.into_iter().flat_map(|r| r.expect("burst task")).collect()
}

fn count(replies: &[Reply], status: u16) -> usize {
    replies.iter().filter(|r| r.status.as_u16() == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_is_exact_under_concurrency() {
    let up = TestUpstream::echo("u").await;
    let limit =
        r#"limits = [{ name = "per-minute", key = ["global"], rate = 50, per = "1m", algorithm = "sliding-window" }]"#;
    let gw = TestGateway::start(&config(&up, "", &[("limited", "/", limit)]));
    away_from_a_window_edge(Duration::from_secs(60)).await;

    let replies = burst(&[gw.url("/")], 8, 25).await;
    assert_eq!(replies.len(), 200);
    assert_eq!((count(&replies, 200), count(&replies, 429)), (50, 150), "exactly the limit passes");
    assert_eq!(up.hits(), 50, "and only that reaches the upstream");

    // Each allowed request saw its own count: Remaining 49 down to 0, once each.
    let mut remaining: Vec<u64> = replies
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.header("ratelimit-remaining").and_then(|v| v.parse().ok()).expect("RateLimit-Remaining"))
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..50).collect::<Vec<u64>>());
    for r in replies.iter().filter(|r| r.status == 200) {
        assert_eq!(r.header("ratelimit-limit"), Some("50"));
        assert_eq!(r.header("ratelimit-policy"), Some("50;w=60"));
        assert!(r.header("retry-after").is_none());
    }
    for r in replies.iter().filter(|r| r.status == 429) {
        assert_eq!(r.json()["error"], "rate limited");
        assert_eq!(r.json()["limit"], "per-minute");
        assert_eq!(r.header("ratelimit-remaining"), Some("0"));
        let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
        assert!((1..=120).contains(&retry), "{retry}");
        assert!(r.header("x-request-id").is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_count_apart_and_a_token_bucket_refills() {
    let up = TestUpstream::echo("u").await;
    let bucket = r#"limits = [{ name = "per-ip", key = ["client-ip"], rate = 1, per = "1s", algorithm = "token-bucket", burst = 5 }]"#;
    let gw = TestGateway::start(&config(&up, "", &[("a", "/a", bucket), ("b", "/b", bucket)]));
    let mut statuses = Vec::new();
    let mut refusal = None;
    for _ in 0..6 {
        let r = get(&gw.url("/a")).await;
        statuses.push(r.status.as_u16());
        if r.status == 429 {
            refusal = Some(r);
        }
    }
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 429], "the burst, then a refusal");
    let refusal = refusal.unwrap();
    assert_eq!(refusal.header("retry-after"), Some("1"), "the next token is under a second away, rounded up");
    assert_eq!(refusal.header("ratelimit-limit"), Some("5"));
    assert_eq!(refusal.header("ratelimit-policy"), Some("1;w=1;burst=5"));
    assert_eq!(refusal.json()["limit"], "per-ip");
    // Another route has counters of its own.
    assert_eq!(get(&gw.url("/b")).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(&gw.url("/a")).await.status, 200, "refilled");
    assert_eq!(up.hits(), 7);
}

/// rate-limit has no response hook: its request hook leaves the headers
/// (`set-response-header`), and the gateway sets them when the response
/// passes back through it — on the upstream's answer, on a later plugin's
/// early reply, before the response hooks of the plugins in front of it and
/// after those behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_left_by_the_request_hook_reach_every_response_in_chain_order() {
    let up = TestUpstream::echo("u").await;
    let limit =
        r#"{ use = "rate-limit", config = { limits = [{ name = "g", key = ["global"], rate = 100, per = "1m" }] } }"#;
    let overwrite =
        r#"{ use = "add-header", config = { response = { set = { "ratelimit-limit" = "add-header's" } } } }"#;
    let deny = r#"{ use = "deny", config = { paths = ["/behind/denied"] } }"#;
    let gw = TestGateway::start(&format!(
        "[plugin.rate-limit]\ngrants = {{ store = true }}\n\n[upstreams.u]\nendpoints = [\"{}\"]\n\n\
         [[routes]]\nname = \"behind\"\nmatch = {{ prefix = \"/behind\" }}\nupstream = \"u\"\n\
         plugins = [{limit}, {deny}, {overwrite}]\n\n\
         [[routes]]\nname = \"in-front\"\nmatch = {{ prefix = \"/in-front\" }}\nupstream = \"u\"\n\
         plugins = [{overwrite}, {limit}]\n",
        up.addr
    ));

    // add-header is behind rate-limit: its response hook runs first, and
    // rate-limit's header replaces what it set.
    let r = get(&gw.url("/behind/ok")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header_all("ratelimit-limit"), vec!["100"]);
    assert_eq!(r.header("ratelimit-remaining"), Some("99"));
    assert_eq!(r.header("ratelimit-policy"), Some("100;w=60"));

    // A later plugin's reply gets them too (add-header never ran for it).
    let r = get(&gw.url("/behind/denied")).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header_all("ratelimit-limit"), vec!["100"]);
    assert_eq!(r.header("ratelimit-remaining"), Some("98"));

    // add-header is in front: rate-limit's headers are set first, and its
    // response hook replaces one of them.
    let r = get(&gw.url("/in-front")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header_all("ratelimit-limit"), vec!["add-header's"]);
    assert_eq!(r.header("ratelimit-remaining"), Some("99"), "another route, its own counter");
    assert_eq!(up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_limit_through_redis() {
    let redis = RedisServer::start();
    let up = TestUpstream::echo("u").await;
    // A generous timeout and fail-closed: a slow answer on a busy test
    // machine shows as a 503 here rather than as an uncounted request.
    let store = format!("[store]\nbackend = \"redis\"\nurl = \"{}\"\ntimeout = \"2s\"\n", redis.url());
    let limit = r#"on_store_error = "deny", limits = [{ name = "fleet", key = ["global"], rate = 40, per = "1m" }]"#;
    let body = config(&up, &store, &[("limited", "/", limit)]);
    let (a, b) = (TestGateway::start(&body), TestGateway::start(&body));
    away_from_a_window_edge(Duration::from_secs(60)).await;

    let replies = burst(&[a.url("/"), b.url("/")], 8, 15).await;
    assert_eq!(replies.len(), 120);
    assert_eq!(count(&replies, 503), 0, "Redis answered every request");
    assert_eq!((count(&replies, 200), count(&replies, 429)), (40, 80), "40 in total, across both gateways");
    assert_eq!(up.hits(), 40);
    let mut remaining: Vec<u64> = replies
        .iter()
        .filter(|r| r.status == 200)
        .filter_map(|r| r.header("ratelimit-remaining").and_then(|v| v.parse().ok()))
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..40).collect::<Vec<u64>>(), "one counter, not one per gateway");
}

/// The store over TLS (`rediss://` and `[store.tls]`): counters kept in a
/// Redis that speaks only TLS and asks for a client certificate, as Redis
/// does by default. A gateway that does not trust Redis's certificate, or
/// has none of its own to give, counts nothing (and fails closed here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reaches_redis_over_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "redis-ca");
    let server = ca.server("redis", &["127.0.0.1"]);
    let client = ca.client("gateway");
    let redis = RedisServer::start_tls(&ca.pem, &server.cert, &server.key);
    assert!(redis.url().starts_with("rediss://"));
    let up = TestUpstream::echo("u").await;
    let store = |ca: &std::path::Path, client: Option<&Issued>| {
        let mut store = format!(
            "[store]\nbackend = \"redis\"\nurl = \"{}\"\ntimeout = \"2s\"\n\n[store.tls]\nca = \"{}\"\n",
            redis.url(),
            ca.display()
        );
        if let Some(client) = client {
            store.push_str(&format!("cert = \"{}\"\nkey = \"{}\"\n", client.cert.display(), client.key.display()));
        }
        store
    };
    let limit = r#"on_store_error = "deny", limits = [{ name = "tls", key = ["global"], rate = 3, per = "1m" }]"#;
    let gw = TestGateway::start(&config(&up, &store(&ca.pem, Some(&client)), &[("limited", "/", limit)]));
    away_from_a_window_edge(Duration::from_secs(60)).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get(&gw.url("/")).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429], "counted in Redis, over TLS");

    let other = Ca::new(dir.path(), "other-ca");
    let untrusted = TestGateway::start(&config(&up, &store(&other.pem, Some(&client)), &[("limited", "/", limit)]));
    let anonymous = TestGateway::start(&config(&up, &store(&ca.pem, None), &[("limited", "/", limit)]));
    for (gw, why) in
        [(&untrusted, "Redis's certificate is not from the CA trusted"), (&anonymous, "no client certificate")]
    {
        let r = get(&gw.url("/")).await;
        assert_eq!(r.status, 503, "{why}: {}", r.text());
        assert_eq!(r.json()["error"], "rate limiter unavailable", "{why}");
    }
    assert_eq!(up.hits(), 3);

    // A reload mends them: a changed Redis [store] (here its TLS files, as
    // a rotated certificate changes them) gets new connections, without a
    // restart. The limit is the one in Redis, spent above.
    for gw in [&untrusted, &anonymous] {
        gw.write_config(&config(&up, &store(&ca.pem, Some(&client)), &[("limited", "/", limit)]));
        assert_eq!(gw.gateway.reload().ok(), Some(1));
        let r = get(&gw.url("/")).await;
        assert_eq!(r.status, 429, "counted in Redis again: {}", r.text());
        assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    }
    assert_eq!(up.hits(), 3);

    // A client certificate rotated in place (the same files): the reload
    // that follows connects with the new one — here from a CA Redis does
    // not trust, so the store is unavailable again.
    let rotating = ca.client("rotating");
    let gw = TestGateway::start(&config(&up, &store(&ca.pem, Some(&rotating)), &[("limited", "/", limit)]));
    assert_eq!(get(&gw.url("/")).await.status, 429, "counted in Redis");
    let rotated = other.client("rotating");
    assert_eq!((&rotated.cert, &rotated.key), (&rotating.cert, &rotating.key), "the same files");
    assert_eq!(gw.gateway.reload().ok(), Some(1));
    assert_eq!(get(&gw.url("/")).await.status, 503, "the rotated certificate, which Redis refuses");
}

/// A reload keeps the in-memory store, and its counts, when the config
/// moves `[store]` to Redis (that waits for a restart) — and still after a
/// further change to that Redis `[store]`, which a running Redis store
/// would reconnect for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_in_memory_store_whatever_the_config_says_of_redis() {
    let redis = RedisServer::start();
    let up = TestUpstream::echo("u").await;
    let limit = r#"limits = [{ name = "kept", key = ["global"], rate = 2, per = "1m" }]"#;
    let gw = TestGateway::start(&config(&up, "", &[("limited", "/", limit)]));
    away_from_a_window_edge(Duration::from_secs(60)).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get(&gw.url("/")).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    for timeout in ["2s", "3s"] {
        let store = format!("[store]\nbackend = \"redis\"\nurl = \"{}\"\ntimeout = \"{timeout}\"\n", redis.url());
        gw.write_config(&config(&up, &store, &[("limited", "/", limit)]));
        assert!(gw.gateway.reload().is_ok());
        assert_eq!(get(&gw.url("/")).await.status, 429, "still counted in memory (timeout {timeout})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_open_or_closed_and_the_limit_returns_with_it() {
    let port = RedisServer::unused_port();
    let up = TestUpstream::echo("u").await;
    let store = format!("[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\ntimeout = \"200ms\"\n");
    let limit = r#"limits = [{ name = "three", key = ["global"], rate = 3, per = "1m" }]"#;
    let closed = format!("on_store_error = \"deny\", {limit}");
    // Redis is not running: the gateway starts and serves anyway.
    let gw = TestGateway::start(&config(&up, &store, &[("open", "/open", limit), ("closed", "/closed", &closed)]));

    for _ in 0..5 {
        let r = get(&gw.url("/open")).await;
        assert_eq!(r.status, 200, "fail open: past the limit, since nothing can count");
        // One limit on a key every request has: the gateway sets its
        // `RateLimit-Limit` and `-Policy` itself, and the hook takes them
        // back when nothing counted.
        assert_eq!(r.header("ratelimit-limit"), None, "no numbers to report");
        assert_eq!(r.header("ratelimit-policy"), None);
    }
    assert_eq!(up.hits(), 5);
    for _ in 0..2 {
        let r = get(&gw.url("/closed")).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.json()["error"], "rate limiter unavailable");
        assert_eq!(r.header("ratelimit-limit"), None);
        assert_eq!(r.header("ratelimit-policy"), None);
    }
    assert_eq!(up.hits(), 5, "fail closed: nothing reached the upstream");

    let _redis = RedisServer::start_on(port);
    away_from_a_window_edge(Duration::from_secs(60)).await;
    let mut back = false;
    for _ in 0..100 {
        if get(&gw.url("/closed")).await.status == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the store reconnected once Redis came up");
    // The limit applies again: /open has not counted anything yet.
    let mut statuses = Vec::new();
    for i in 0..5 {
        let r = get(&gw.url("/open")).await;
        if i == 0 {
            let numbers = ["limit", "remaining", "policy"].map(|n| r.header(&format!("ratelimit-{n}")));
            assert_eq!(numbers, [Some("3"), Some("2"), Some("3;w=60")], "counted again: the numbers are back");
        }
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
    // And /closed counted the request that found Redis back: at most two
    // more pass. (Fewer if one that timed out on the way back had counted
    // too: on a busy machine a reply can come after the 200 ms.)
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get(&gw.url("/closed")).await.status.as_u16());
    }
    assert!(matches!(statuses[..], [200, 200, 429] | [200, 429, 429]), "{statuses:?}");
}

/// A client making a new key on every request (here each path is one) fills
/// the store; new clients after it are still limited: their windows evict
/// the ones closest to aging out. (Every new key was refused as "store
/// full", which the plugin took as a store failure: with the default
/// `on_store_error = "allow"`, no limit held for anyone new.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_filled_by_new_keys_still_limits_new_clients() {
    let up = TestUpstream::echo("u").await;
    let limit = r#"limits = [{ name = "per-path", key = ["path"], rate = 1, per = "1h" }]"#;
    let gw = TestGateway::start(&config(
        &up,
        "[store]\nbackend = \"memory\"\nmax_entries = 64\n",
        &[("limited", "/", limit)],
    ));
    let c = client();
    for n in 0..100 {
        let r = send_with(&c, get_request(&gw.url(&format!("/flood/{n}")), &[])).await;
        assert_eq!(r.status, 200, "each new path once: {n}");
    }
    let first = send_with(&c, get_request(&gw.url("/victim"), &[])).await;
    assert_eq!(first.status, 200);
    let second = send_with(&c, get_request(&gw.url("/victim"), &[])).await;
    assert_eq!(second.status, 429, "limited though the store is full");
}
