//! Traffic management against adversarial upstreams: balancing, canary
//! splits, active health, outlier ejection, circuit breakers, retries under a
//! budget, bulkheads — with the numbers asserted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::Full;
use wasmgate_tests::upstream::{TestUpstream, resetting};
use wasmgate_tests::{ADMIN, TestGateway, client, dead_addr, eventually, get, get_request, sample, send, send_with};

async fn upstreams(n: usize) -> Vec<TestUpstream> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(TestUpstream::echo(&format!("e{i}")).await);
    }
    v
}

/// Which upstream answered each of `n` GETs to `path`.
async fn spread(gw: &TestGateway, path: &str, n: usize) -> HashMap<String, usize> {
    let c = client();
    let mut seen = HashMap::new();
    for _ in 0..n {
        let r = send_with(&c, get_request(&gw.url(path), &[])).await;
        *seen.entry(r.header("x-upstream").unwrap_or("none").to_owned()).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_follows_the_weights() {
    let ups = upstreams(3).await;
    let gw = TestGateway::start(&format!(
        r#"[upstreams.u]
balance = "weighted-round-robin"
endpoints = [{{ address = "{}", weight = 1 }}, {{ address = "{}", weight = 2 }}, {{ address = "{}", weight = 7 }}]
[[routes]]
upstream = "u"
"#,
        ups[0].addr, ups[1].addr, ups[2].addr
    ));
    let seen = spread(&gw, "/", 1000).await;
    // Smooth WRR is exact per worker cycle; two workers interleave cycles.
    for (name, expected) in [("e0", 100.0), ("e1", 200.0), ("e2", 700.0)] {
        let got = *seen.get(name).unwrap_or(&0) as f64;
        assert!((got - expected).abs() <= expected * 0.05 + 2.0, "{name}: {got} vs {expected} ({seen:?})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_split_sends_its_share() {
    let (stable, canary) = tokio::join!(TestUpstream::echo("stable"), TestUpstream::echo("canary"));
    let gw = TestGateway::start(&format!(
        r#"[upstreams.stable]
endpoints = ["{}"]
[upstreams.canary]
endpoints = ["{}"]
[[routes]]
upstreams = [{{ name = "stable", weight = 95 }}, {{ name = "canary", weight = 5 }}]
"#,
        stable.addr, canary.addr
    ));
    let seen = spread(&gw, "/", 2000).await;
    let share = *seen.get("canary").unwrap_or(&0) as f64 / 2000.0;
    // 5% of 2000 = 100, a binomial sd of ~9.7: ±4.5 sd ≈ ±2.2% fails a
    // right split about once in 150 000 runs (±3 sd failed one in 370, and
    // did), and still fails a split that is off by half.
    assert!((0.028..=0.072).contains(&share), "canary share {share:.3} ({seen:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hashing_keeps_a_key_on_one_endpoint() {
    let ups = upstreams(3).await;
    let gw = TestGateway::start(&format!(
        r#"[upstreams.u]
balance = "consistent-hash"
hash_on = "header:x-user"
endpoints = ["{}", "{}", "{}"]
[[routes]]
upstream = "u"
"#,
        ups[0].addr, ups[1].addr, ups[2].addr
    ));
    let c = client();
    let mut owners = HashMap::new();
    for user in 0..60 {
        let mut owner = None;
        for _ in 0..3 {
            let req = get_request(&gw.url("/"), &[("x-user", &format!("user-{user}"))]);
            let r = send_with(&c, req).await;
            let up = r.header("x-upstream").unwrap_or("none").to_owned();
            assert!(owner.is_none() || owner.as_deref() == Some(up.as_str()), "user-{user} moved");
            owner = Some(up);
        }
        *owners.entry(owner.unwrap_or_default()).or_insert(0) += 1;
    }
    assert_eq!(owners.len(), 3, "keys spread over every endpoint: {owners:?}");
}

/// `hash_on = "client-ip"` behind a load balancer in `trusted_proxies`
/// hashes the client it reports: every request came from the load
/// balancer's address, and went to one endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_hashing_follows_the_client_behind_a_trusted_proxy() {
    let ups = upstreams(2).await;
    let body = format!(
        "[upstreams.u]\nbalance = \"consistent-hash\"\nhash_on = \"client-ip\"\nendpoints = [\"{}\", \"{}\"]\n\
         [[routes]]\nupstream = \"u\"\n",
        ups[0].addr, ups[1].addr
    );
    let c = client();
    for (trusted, spread) in [("127.0.0.1/32", true), ("10.0.0.0/8", false)] {
        let gw = TestGateway::start_with(&format!("trusted_proxies = [\"{trusted}\"]"), &body);
        let mut owners = HashMap::new();
        for n in 0..16 {
            let client_ip = format!("198.51.100.{n}");
            let mut owner = None;
            for _ in 0..2 {
                let r = send_with(&c, get_request(&gw.url("/"), &[("x-forwarded-for", &client_ip)])).await;
                let up = r.header("x-upstream").unwrap_or("none").to_owned();
                assert!(owner.is_none() || owner.as_deref() == Some(up.as_str()), "{client_ip} moved");
                owner = Some(up);
            }
            *owners.entry(owner.unwrap_or_default()).or_insert(0) += 1;
        }
        assert_eq!(owners.len(), if spread { 2 } else { 1 }, "{trusted}: {owners:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_avoids_the_busy_endpoint() {
    let ups = upstreams(2).await;
    let gw = TestGateway::start_with(
        "workers = 1",
        &format!(
            "[upstreams.u]\nbalance = \"least-request\"\nendpoints = [\"{}\", \"{}\"]\n[[routes]]\nupstream = \"u\"\n",
            ups[0].addr, ups[1].addr
        ),
    );
    // Pin 8 slow requests on the gateway; then quick ones should mostly go
    // to whichever endpoint holds fewer of them.
    let mut slow = Vec::new();
    for _ in 0..8 {
        let url = gw.url("/slow/1500");
        slow.push(tokio::spawn(async move { get(&url).await }));
    }
    assert!(eventually(Duration::from_secs(5), || ups[0].in_flight() + ups[1].in_flight() == 8).await);
    let (busy, idle) = if ups[0].in_flight() >= ups[1].in_flight() { (0, 1) } else { (1, 0) };
    let imbalance = ups[busy].in_flight() - ups[idle].in_flight();
    let seen = spread(&gw, "/", 40).await;
    let to_idle = *seen.get(&format!("e{idle}")).unwrap_or(&0);
    if imbalance >= 2 {
        assert!(to_idle >= 30, "least-request sent {to_idle}/40 to the less busy endpoint ({seen:?})");
    }
    for s in slow {
        assert_eq!(s.await.unwrap().status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_take_an_endpoint_out_and_back() {
    let ups = upstreams(2).await;
    let gw = TestGateway::start(&format!(
        r#"[upstreams.u]
endpoints = ["{}", "{}"]
health = {{ path = "/health", interval = "100ms", timeout = "500ms", healthy_threshold = 2, unhealthy_threshold = 2 }}
[[routes]]
upstream = "u"
"#,
        ups[0].addr, ups[1].addr
    ));
    ups[1].set_healthy(false);
    // Two failed checks at 100ms intervals: give it a generous second.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let seen = spread(&gw, "/", 50).await;
    assert_eq!(seen.get("e1"), None, "the unhealthy endpoint got traffic: {seen:?}");
    ups[1].set_healthy(true);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let seen = spread(&gw, "/", 50).await;
    assert!(seen.get("e1").is_some_and(|n| *n > 10), "the endpoint came back: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_endpoint_is_503_with_retry_after_at_once() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&format!(
        r#"[upstreams.u]
endpoints = ["{}"]
health = {{ path = "/health", interval = "100ms", unhealthy_threshold = 1, all_down = "refuse" }}
[[routes]]
upstream = "u"
"#,
        up.addr
    ));
    up.set_healthy(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hits = up.hits();
    let start = Instant::now();
    let r = get(&gw.url("/")).await;
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some(), "Retry-After is set");
    assert!(start.elapsed() < Duration::from_secs(1), "answered immediately");
    // Only health checks reached it, no proxied request.
    assert!(up.hits() - hits <= 3);
}

/// With no endpoint passing its checks, the default (`all_down =
/// "try-all"`) balances over them all as if they passed — a check gone
/// wrong (here: the endpoints serve, their health path fails) took the
/// whole upstream out — while one passes, only it gets traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_endpoint_failing_its_checks_all_are_tried() {
    let ups = upstreams(2).await;
    let gw = TestGateway::start(&format!(
        r#"{ADMIN}[upstreams.u]
endpoints = ["{}", "{}"]
health = {{ path = "/health", interval = "100ms", unhealthy_threshold = 1, healthy_threshold = 1 }}
[[routes]]
upstream = "u"
"#,
        ups[0].addr, ups[1].addr
    ));
    // The spread of 20 requests, once `done` holds of it or after 5 s.
    let spread_until = |done: fn(&HashMap<String, usize>) -> bool| {
        let gw = &gw;
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let seen = spread(gw, "/", 20).await;
                if done(&seen) || Instant::now() > deadline {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    ups[0].set_healthy(false);
    let seen = spread_until(|seen| seen.get("e0").is_none()).await;
    assert_eq!(seen.get("e1"), Some(&20), "only the endpoint that passes: {seen:?}");
    ups[1].set_healthy(false);
    // Both out: both serve, in turn.
    let both = |seen: &HashMap<String, usize>| seen.get("e0") == Some(&10) && seen.get("e1") == Some(&10);
    let seen = spread_until(both).await;
    assert!(both(&seen), "every endpoint, as if it passed: {seen:?}");
    // Still counted as finding none healthy, for the alerts on it.
    let text = gw.metrics().await;
    let counted =
        sample(&text, r#"wasmgate_no_healthy_endpoint_total{upstream="u"}"#).and_then(|n| n.parse::<u64>().ok());
    assert!(counted.is_some_and(|n| n >= 20), "{text}");
}

/// With every endpoint failing its checks, an endpoint whose breaker is
/// open stays out (tried as if it passed, it failed, and its breaker
/// opened), and a consistent hash still sends a key to one endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_endpoint_failing_its_checks_a_tripped_one_stays_out_and_keys_keep_theirs() {
    let ups = upstreams(3).await;
    let gw = TestGateway::start(&format!(
        r#"{ADMIN}[upstreams.u]
endpoints = ["{}", "{}", "{}"]
health = {{ path = "/health", interval = "100ms", unhealthy_threshold = 1 }}
endpoint_breaker = {{ consecutive_failures = 1, open_for = "1m" }}
[[routes]]
match = {{ prefix = "/" }}
upstream = "u"

[upstreams.h]
endpoints = ["{}", "{}", "{}"]
balance = "consistent-hash"
hash_on = "header:x-user"
health = {{ path = "/health", interval = "100ms", unhealthy_threshold = 1 }}
[[routes]]
match = {{ prefix = "/hashed" }}
upstream = "h"
"#,
        ups[0].addr, ups[1].addr, ups[2].addr, ups[0].addr, ups[1].addr, ups[2].addr
    ));
    for up in &ups {
        up.set_healthy(false);
    }
    ups[0].set_failing(true);
    // Every endpoint of both upstreams out by its checks, before a request.
    for (upstream, up) in ["u", "h"].iter().flat_map(|u| ups.iter().map(move |up| (u, up))) {
        let gauge = format!(r#"wasmgate_upstream_endpoint_healthy{{upstream="{upstream}",endpoint="{}"}}"#, up.addr);
        let text = gw.metrics_once(&gauge, "0", Duration::from_secs(5)).await;
        assert_eq!(sample(&text, &gauge), Some("0"), "{text}");
    }
    let c = client();
    // Tried as if they passed, `e0` fails once and its breaker opens: then
    // every request goes to the other two.
    let first = spread(&gw, "/", 3).await;
    assert_eq!(first.len(), 3, "each in turn, as if they passed: {first:?}");
    let seen = spread(&gw, "/", 20).await;
    assert_eq!((seen.get("e0"), seen.get("e1"), seen.get("e2")), (None, Some(&10), Some(&10)), "{seen:?}");
    // A key goes to one endpoint, whichever, every time.
    for user in ["alice", "bob", "carol"] {
        let mut endpoints = std::collections::HashSet::new();
        for _ in 0..10 {
            let r = send_with(&c, get_request(&gw.url("/hashed"), &[("x-user", user)])).await;
            endpoints.insert(r.header("x-upstream").unwrap_or("none").to_owned());
        }
        assert!(endpoints.len() == 1 && !endpoints.contains("none"), "{user}: {endpoints:?}");
    }
}

/// A gateway (with an admin listener) over three endpoints, ejecting one
/// after 3 failures in a row for `base_ejection`, without retries.
fn ejecting(ups: &[TestUpstream], base_ejection: &str) -> TestGateway {
    TestGateway::start(&format!(
        r#"{ADMIN}[upstreams.u]
endpoints = ["{}", "{}", "{}"]
outlier = {{ consecutive_5xx = 3, base_ejection = "{base_ejection}", max_ejected_percent = 50 }}
[[routes]]
upstream = "u"
retries = {{ attempts = 0 }}
"#,
        ups[0].addr, ups[1].addr, ups[2].addr
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_an_endpoint_that_keeps_failing() {
    let ups = upstreams(3).await;
    let gw = ejecting(&ups, "30s");
    ups[2].set_failing(true);
    let seen = spread(&gw, "/", 60).await;
    // Round-robin would send 20 to e2; ejection after 3 failures (per
    // worker view of the shared state) cuts that short.
    let failures = *seen.get("e2").unwrap_or(&0);
    assert!(failures <= 8, "e2 answered {failures} times before ejection ({seen:?})");
    let seen = spread(&gw, "/", 30).await;
    assert_eq!(seen.get("e2"), None, "ejected endpoint got traffic: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejection_ends_on_time_and_the_gauge_says_so() {
    let ups = upstreams(3).await;
    let gw = ejecting(&ups, "500ms");
    let gauge = |text: &str| {
        let series = format!(r#"wasmgate_upstream_endpoint_ejected{{upstream="u",endpoint="{}"}}"#, ups[2].addr);
        sample(text, &series).map(str::to_owned)
    };
    ups[2].set_failing(true);
    spread(&gw, "/", 30).await;
    let text = gw.metrics().await;
    assert_eq!(gauge(&text).as_deref(), Some("1"), "{text}");
    ups[2].set_failing(false);
    // Its ejection ends within a second or so (a second one, if the spread
    // above outlasted the first, is twice as long).
    let start = Instant::now();
    let mut text = gw.metrics().await;
    while gauge(&text).as_deref() != Some("0") && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = gw.metrics().await;
    }
    assert_eq!(gauge(&text).as_deref(), Some("0"), "{text}");
    // And it serves again.
    let seen = spread(&gw, "/", 30).await;
    assert!(seen.get("e2").is_some_and(|&n| n > 0), "{seen:?}");
}

/// Outlier detection never ejects the last endpoint that serves: one down
/// by its health check does not count (the other was ejected, and every
/// request was a 503 for the ejection's length).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_keeps_the_last_endpoint_that_serves() {
    let ups = upstreams(2).await;
    let gw = TestGateway::start(&format!(
        r#"{ADMIN}[upstreams.u]
endpoints = ["{}", "{}"]
health = {{ path = "/health", interval = "100ms", unhealthy_threshold = 1 }}
outlier = {{ consecutive_5xx = 3, base_ejection = "30s" }}
[[routes]]
upstream = "u"
retries = {{ attempts = 0 }}
"#,
        ups[0].addr, ups[1].addr
    ));
    ups[0].set_healthy(false);
    let down = format!(r#"wasmgate_upstream_endpoint_healthy{{upstream="u",endpoint="{}"}}"#, ups[0].addr);
    let text = gw.metrics_once(&down, "0", Duration::from_secs(5)).await;
    assert_eq!(sample(&text, &down), Some("0"), "{text}");
    ups[1].set_failing(true);
    for _ in 0..10 {
        assert_eq!(get(&gw.url("/")).await.status, 503);
    }
    ups[1].set_failing(false);
    let r = get(&gw.url("/")).await;
    assert_eq!(r.status, 200, "still serving: {}", r.text());
    let text = gw.metrics().await;
    let ejected = format!(r#"wasmgate_upstream_endpoint_ejected{{upstream="u",endpoint="{}"}}"#, ups[1].addr);
    assert_eq!(sample(&text, &ejected), Some("0"), "{text}");
}

/// A reload that changes an upstream's settings (and so builds it anew)
/// keeps its endpoints' state: one its health checks took out stays out.
/// It came back healthy, and took traffic until the new checks had failed
/// it `unhealthy_threshold` times again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_what_the_upstream_knew_of_its_endpoints() {
    let ups = upstreams(2).await;
    let config = |interval: &str, threshold: u32| {
        format!(
            r#"{ADMIN}[upstreams.u]
endpoints = ["{}", "{}"]
health = {{ path = "/health", interval = "{interval}", unhealthy_threshold = {threshold} }}
[[routes]]
upstream = "u"
"#,
            ups[0].addr, ups[1].addr
        )
    };
    let gw = TestGateway::start(&config("100ms", 1));
    ups[0].set_healthy(false);
    let down = format!(r#"wasmgate_upstream_endpoint_healthy{{upstream="u",endpoint="{}"}}"#, ups[0].addr);
    let text = gw.metrics_once(&down, "0", Duration::from_secs(5)).await;
    assert_eq!(sample(&text, &down), Some("0"), "{text}");
    // Checks far apart, and three failures to go down: the endpoint's state
    // is all that keeps it out now.
    gw.write_config(&config("1h", 3));
    assert!(gw.gateway.reload().is_ok());
    let seen = spread(&gw, "/", 20).await;
    assert_eq!(seen.get("e1"), Some(&20), "only the healthy endpoint: {seen:?}");
    let text = gw.metrics().await;
    assert_eq!(sample(&text, &down), Some("0"), "{text}");
}

/// An active check whose kept connection the upstream closes as the check
/// goes out (its idle timeout racing the interval) is sent again on a new
/// connection, as a request is: it counted as a failed check, and with
/// `unhealthy_threshold = 1` the endpoint went down every other check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_check_on_a_connection_closed_under_it_goes_again() {
    let (addr, accepted, _stop) = wasmgate_tests::upstream::closing(true).await;
    let gw = TestGateway::start(&format!(
        "{ADMIN}[upstreams.u]\nendpoints = [\"{addr}\"]\n\
         health = {{ path = \"/health\", interval = \"100ms\", unhealthy_threshold = 1 }}\n[[routes]]\nupstream = \"u\"\n"
    ));
    let series = format!(r#"wasmgate_upstream_endpoint_healthy{{upstream="u",endpoint="{addr}"}}"#);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = gw.metrics().await;
        assert_eq!(sample(&text, &series), Some("1"), "healthy throughout: {text}");
    }
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) >= 5, "checks went on new connections");
}

/// `health.host` names the checks' `Host`, for an upstream that serves by
/// name (here a gateway whose one route is for `a.internal`): checked
/// with it, the endpoint stays up; checked without (`Host` its address), the
/// same endpoint answers 404 and goes down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_send_the_configured_host() {
    let origin = TestUpstream::echo("origin").await;
    let a = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nmatch = {{ host = \"a.internal\" }}\nupstream = \"u\"\n",
        origin.addr
    ));
    let check = r#"path = "/health", interval = "100ms", unhealthy_threshold = 1"#;
    let gw = TestGateway::start(&format!(
        "{ADMIN}[upstreams.named]\nendpoints = [\"{a}\"]\nhealth = {{ {check}, host = \"a.internal\" }}\n\
         [upstreams.bare]\nendpoints = [\"{a}\"]\nhealth = {{ {check} }}\n\
         [[routes]]\nupstream = \"named\"\n",
        a = a.addr()
    ));
    let gauge = |up: &str| format!(r#"wasmgate_upstream_endpoint_healthy{{upstream="{up}",endpoint="{}"}}"#, a.addr());
    let text = gw.metrics_once(&gauge("bare"), "0", Duration::from_secs(5)).await;
    assert_eq!(sample(&text, &gauge("bare")), Some("0"), "{text}");
    // Three more rounds of checks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = gw.metrics().await;
    assert_eq!(sample(&text, &gauge("named")), Some("1"), "{text}");
}

/// A refused reload leaves the health gauges as they were: building its
/// upstreams set their endpoints' gauges, and ran their health checks, for
/// a config that never served (an endpoint down showed healthy, one up
/// showed down by the refused config's check, and an upstream only the
/// refused config had kept a series).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_leaves_the_health_gauges_as_they_were() {
    let ups = upstreams(2).await;
    let config = |health_path: &str, extra: &str| {
        format!(
            r#"{ADMIN}[upstreams.u]
endpoints = ["{}", "{}"]
health = {{ path = "{health_path}", interval = "100ms", unhealthy_threshold = 1 }}
{extra}
[[routes]]
upstream = "u"
"#,
            ups[0].addr, ups[1].addr
        )
    };
    let gw = TestGateway::start(&config("/health", ""));
    ups[0].set_healthy(false);
    let gauge =
        |up: &TestUpstream| format!(r#"wasmgate_upstream_endpoint_healthy{{upstream="u",endpoint="{}"}}"#, up.addr);
    let text = gw.metrics_once(&gauge(&ups[0]), "0", Duration::from_secs(5)).await;
    assert_eq!(sample(&text, &gauge(&ups[0])), Some("0"), "{text}");
    // `u` built anew with a check every endpoint fails, an upstream of its
    // own, and a plugin that refuses its config: the reload is refused.
    let refused = "[upstreams.zz]\nendpoints = [\"127.0.0.1:9\"]\n\
        [[routes]]\nmatch = { prefix = \"/zz\" }\nupstream = \"zz\"\n\
        plugins = [{ use = \"deny\", config = { paths = [\"/a?b\"] } }]\n";
    gw.write_config(&config("/status/500", refused));
    assert!(gw.gateway.reload().is_err(), "refused");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = gw.metrics().await;
    assert_eq!(sample(&text, &gauge(&ups[0])), Some("0"), "still down: {text}");
    assert_eq!(sample(&text, &gauge(&ups[1])), Some("1"), "still up: {text}");
    let zz = r#"wasmgate_upstream_endpoint_healthy{upstream="zz""#;
    assert!(!text.contains(zz), "no health series for an upstream that never served: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_forgets_the_gauges_of_the_endpoints_it_removes() {
    let ups = upstreams(3).await;
    let config = |endpoints: &[TestUpstream]| {
        let list: Vec<String> = endpoints.iter().map(|u| format!("\"{}\"", u.addr)).collect();
        format!(
            r#"{ADMIN}[upstreams.u]
endpoints = [{}]
outlier = {{ consecutive_5xx = 3, base_ejection = "30s", max_ejected_percent = 50 }}
health = {{ path = "/", interval = "50ms" }}
[[routes]]
upstream = "u"
retries = {{ attempts = 0 }}
"#,
            list.join(", ")
        )
    };
    let series = |family: &str, up: &TestUpstream| {
        format!(r#"wasmgate_upstream_endpoint_{family}{{upstream="u",endpoint="{}"}}"#, up.addr)
    };
    let gw = TestGateway::start(&config(&ups));
    ups[2].set_failing(true);
    spread(&gw, "/", 30).await;
    let text = gw.metrics().await;
    assert_eq!(sample(&text, &series("ejected", &ups[2])), Some("1"), "{text}");
    assert!(sample(&text, &series("healthy", &ups[2])).is_some(), "{text}");

    // e2 leaves the upstream: its gauges go (they said "ejected" for the
    // rest of the process); the others stay.
    gw.write_config(&config(&ups[..2]));
    assert_eq!(gw.gateway.reload().ok(), Some(1));
    let text = gw.metrics().await;
    for family in ["ejected", "healthy"] {
        assert_eq!(sample(&text, &series(family, &ups[2])), None, "{family}: {text}");
        assert!(sample(&text, &series(family, &ups[0])).is_some(), "{family}: {text}");
    }
    // The replaced upstream's health checks stopped with the reload (a
    // check in flight then is dropped, not recorded).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let hits = ups[2].hits();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ups[2].hits(), hits, "e2 was still checked");
    assert!(ups[0].hits() > 0);
    let text = gw.metrics().await;
    assert_eq!(sample(&text, &series("healthy", &ups[2])), None, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opens_fails_fast_and_recovers() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&format!(
        r#"[upstreams.u]
endpoints = ["{}"]
breaker = {{ consecutive_failures = 5, open_for = "500ms", half_open_probes = 1 }}
[[routes]]
upstream = "u"
retries = {{ attempts = 0 }}
"#,
        up.addr
    ));
    up.set_failing(true);
    for _ in 0..5 {
        assert_eq!(get(&gw.url("/")).await.status, 503);
    }
    let hits = up.hits();
    // Open: refused without touching the network.
    for _ in 0..20 {
        let r = get(&gw.url("/")).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["error"], "upstream unavailable (circuit open)");
        assert!(r.header("retry-after").is_some());
    }
    assert_eq!(up.hits(), hits, "an open breaker sent nothing upstream");
    // After open_for, one probe; it succeeds and the breaker closes.
    up.set_failing(false);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(get(&gw.url("/")).await.status, 200);
    for _ in 0..10 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_go_to_a_different_endpoint() {
    let ups = upstreams(2).await;
    let dead = dead_addr();
    let (reset, _stop) = resetting().await;
    let gw = TestGateway::start(&format!(
        r#"[upstreams.u]
endpoints = ["{dead}", "{reset}", "{}", "{}"]
connect_timeout = "200ms"
# This test is about where retries go, not how many: no budget limit.
retry_budget = {{ percent = 100, min_per_second = 100 }}
[[routes]]
upstream = "u"
retries = {{ attempts = 3, on = ["connect-failure", "reset", "503"], backoff = "1ms" }}
"#,
        ups[0].addr, ups[1].addr
    ));
    let seen = spread(&gw, "/", 40).await;
    assert_eq!(seen.get("none"), None, "every GET succeeded despite a dead and a resetting endpoint: {seen:?}");
    // A POST is not repeated after a reset (it may have been acted on), but a
    // connect failure is safe to retry.
    let mut failed_posts = 0;
    for _ in 0..20 {
        let r = send(Request::post(gw.url("/")).body(Full::from("x")).unwrap()).await;
        if r.status != 200 {
            failed_posts += 1;
            assert_eq!(r.status, 502);
        }
    }
    assert!(failed_posts > 0, "some POSTs hit the resetting endpoint and were not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_never_exceed_the_budget() {
    let ups = upstreams(3).await;
    for u in &ups {
        u.set_failing(true);
    }
    let gw = TestGateway::start(&format!(
        r#"[upstreams.u]
endpoints = ["{}", "{}", "{}"]
retry_budget = {{ percent = 20, min_per_second = 1 }}
[[routes]]
upstream = "u"
retries = {{ attempts = 2, on = ["503"], backoff = "1ms" }}
"#,
        ups[0].addr, ups[1].addr, ups[2].addr
    ));
    let start = Instant::now();
    let n = 300;
    let seen = spread(&gw, "/", n).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    let upstream_requests: usize = ups.iter().map(TestUpstream::hits).sum();
    let retries = upstream_requests - n;
    let allowed = (n as f64 * 0.20) + start.elapsed().as_secs_f64().ceil() * 1.0 + 2.0;
    assert!(retries as f64 <= allowed, "{retries} retries for {n} requests; budget allows {allowed:.0}");
    assert!(retries > 0, "the budget allowed some retries");
}

/// A retry is decided once there is another endpoint to retry on: with
/// none, the budget is not spent (nor a backoff slept), and it stays for
/// the retries that can be made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_nowhere_to_go_spends_no_budget() {
    let up = TestUpstream::echo("u").await;
    up.set_failing(true);
    let gw = TestGateway::start_with(
        ADMIN,
        &format!(
            "[upstreams.u]\nendpoints = [\"{}\"]\nretry_budget = {{ percent = 20, min_per_second = 1 }}\n\
             [[routes]]\nupstream = \"u\"\nretries = {{ attempts = 2, on = [\"503\"], backoff = \"1ms\" }}\n",
            up.addr
        ),
    );
    for _ in 0..10 {
        assert_eq!(get(&gw.url("/")).await.status, 503);
    }
    assert_eq!(up.hits(), 10, "no retry was made");
    let text = gw.metrics().await;
    let exhausted = sample(&text, r#"wasmgate_retry_budget_exhausted_total{upstream="u"}"#);
    assert_eq!(exhausted.unwrap_or("0"), "0", "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_errors_when_one_of_three_endpoints_dies_under_load() {
    let ups = upstreams(3).await;
    let gw = TestGateway::start(&format!(
        r#"[upstreams.u]
endpoints = ["{}", "{}", "{}"]
connect_timeout = "200ms"
outlier = {{ consecutive_connect_failures = 2, consecutive_5xx = 3 }}
[[routes]]
upstream = "u"
retries = {{ attempts = 2, on = ["connect-failure", "reset", "502", "503"], backoff = "2ms" }}
"#,
        ups[0].addr, ups[1].addr, ups[2].addr
    ));
    let url = gw.url("/slow/5");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            let (mut ok, mut errors) = (0, Vec::new());
            for _ in 0..150 {
                let r = send_with(&c, get_request(&url, &[])).await;
                if r.status == 200 { ok += 1 } else { errors.push(r.status.as_u16()) }
            }
            (ok, errors)
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    ups[1].kill();
    let mut total_ok = 0;
    for t in tasks {
        let (ok, errors) = t.await.unwrap();
        assert!(errors.is_empty(), "client-visible errors: {errors:?}");
        total_ok += ok;
    }
    assert_eq!(total_ok, 8 * 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulkhead_caps_concurrency_and_refuses_overflow() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&format!(
        r#"[upstreams.u]
endpoints = ["{}"]
max_concurrent = 2
max_queue = 1
queue_timeout = "5s"
[[routes]]
upstream = "u"
"#,
        up.addr
    ));
    let mut slow = Vec::new();
    for _ in 0..3 {
        let url = gw.url("/slow/800");
        slow.push(tokio::spawn(async move { get(&url).await.status.as_u16() }));
    }
    assert!(eventually(Duration::from_secs(3), || up.in_flight() == 2).await, "two in flight");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    let r = get(&gw.url("/")).await;
    assert_eq!(r.status, 503, "the fourth is refused");
    assert_eq!(r.json()["error"], "upstream overloaded");
    // Queued, it would wait out the 5 s queue_timeout.
    assert!(start.elapsed() < Duration::from_secs(2), "refused at once, not queued");
    assert_eq!(up.in_flight(), 2, "never more than two at the upstream");
    let statuses: Vec<u16> = futures_join(slow).await;
    assert_eq!(statuses, vec![200, 200, 200], "the queued one was served");
}

/// A request whose client leaves while it waits in the bulkhead's queue
/// gives its place back: the queue's count stayed up, and once every place
/// had been abandoned so, every request that found the slots taken was
/// refused at once, until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_the_bulkhead_queue_gives_its_place_back() {
    use tokio::io::AsyncWriteExt;
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\nmax_concurrent = 1\nmax_queue = 1\nqueue_timeout = \"5s\"\n\
         [[routes]]\nupstream = \"u\"\n",
        up.addr
    ));
    // Slow enough that the slot is still taken after the three below.
    let url = gw.url("/slow/3000");
    let busy = tokio::spawn(async move { get(&url).await.status.as_u16() });
    assert!(eventually(Duration::from_secs(3), || up.in_flight() == 1).await, "one in flight");
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
        // Time for the gateway to see the client go and give the place back.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(up.in_flight(), 1, "the slot is still taken");
    let r = get(&gw.url("/")).await;
    assert_eq!(r.status, 200, "queued and served: {}", r.text());
    assert_eq!(busy.await.unwrap(), 200);
    assert_eq!(up.hits(), 2, "the abandoned ones never reached the upstream");
}

/// A request whose route's timeout runs out while it waits in the
/// bulkhead's queue is refused then, and never sent: it was sent when a
/// slot freed with no time left, abandoned at once (a 504) and held
/// against the endpoint as a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_out_of_time_in_the_bulkhead_queue_is_not_sent() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\nmax_concurrent = 1\nmax_queue = 1\nqueue_timeout = \"5s\"\n\
         [[routes]]\nmatch = {{ path = \"/slow/{{*rest}}\" }}\nupstream = \"u\"\ntimeout = \"5s\"\n\
         [[routes]]\nupstream = \"u\"\ntimeout = \"300ms\"\n",
        up.addr
    ));
    let url = gw.url("/slow/1000");
    let busy = tokio::spawn(async move { get(&url).await.status.as_u16() });
    assert!(eventually(Duration::from_secs(3), || up.in_flight() == 1).await, "one in flight");
    let start = Instant::now();
    let r = get(&gw.url("/")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(start.elapsed() < Duration::from_millis(900), "at its deadline: {:?}", start.elapsed());
    assert_eq!(busy.await.unwrap(), 200);
    assert_eq!(up.hits(), 1, "the queued request never reached the upstream");
}

/// With least-request, a request whose response is still streaming is load
/// on its endpoint: the requests that come meanwhile go to the other one.
/// (It was counted until its response head only: a long stream — a
/// download, server-sent events — weighed nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_counts_a_streaming_response_as_load() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (streamer, _stop) = wasmgate_tests::upstream::streaming_first().await;
    let other = TestUpstream::echo("other").await;
    // (The stream is still open at the end: shutdown cuts it after 1 s.)
    let gw = TestGateway::start_with(
        "workers = 1\nshutdown_timeout = \"1s\"",
        &format!(
            "[upstreams.u]\nendpoints = [\"{streamer}\", \"{}\"]\nbalance = \"least-request\"\n\
             [[routes]]\nupstream = \"u\"\nretries = {{ attempts = 0 }}\n",
            other.addr
        ),
    );
    // Requests until one lands on the streamer, whose first answer streams.
    let mut stream = None;
    for _ in 0..40 {
        let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut head = vec![0; 4096];
        let n = s.read(&mut head).await.unwrap();
        let head = String::from_utf8_lossy(&head[..n]).to_lowercase();
        if head.contains("transfer-encoding: chunked") && !head.contains("x-upstream") {
            stream = Some(s);
            break;
        }
    }
    let _stream = stream.expect("a request reached the streamer");
    let mut to_other = 0;
    for _ in 0..10 {
        let r = get(&gw.url("/")).await;
        assert_eq!(r.status, 200);
        to_other += usize::from(r.header("x-upstream") == Some("other"));
    }
    assert_eq!(to_other, 10, "the streaming endpoint counted as busy");
}

/// A bulkhead's place is held until the response body ends: a response
/// still streaming (a download, server-sent events) is load on the
/// upstream as its head was (the place went back with the head, and a
/// slow body let any number through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulkhead_holds_its_place_until_the_response_body_ends() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\nmax_concurrent = 1\nmax_queue = 0\n[[routes]]\nupstream = \"u\"\n",
        up.addr
    ));
    // A large body the client takes nothing of yet (a small receive window,
    // so it backs up into the gateway whatever the machine's buffers).
    let size = 16 << 20;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(gw.addr()).await.unwrap();
    s.write_all(format!("GET /bytes/{size} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = vec![0; 4096];
    let n = s.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "streaming");
    let r = get(&gw.url("/")).await;
    assert_eq!(r.status, 503, "the streaming response holds the only place: {}", r.text());
    // Read to its end, the body gives the place back.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(n + rest.len() > size, "the whole body came");
    assert!(eventually(Duration::from_secs(3), || up.in_flight() == 0).await);
    assert_eq!(get(&gw.url("/")).await.status, 200, "the place came back");
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<u16>>) -> Vec<u16> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
