use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::Arc;
use std::thread;

use super::*;

/// `series → value` from the text exposition, e.g.
/// `wasmgate_requests_total{route="r",method="GET",status="200"} → "3"`.
fn samples(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(series, value)| (series.to_owned(), value.to_owned()))
        .collect()
}

fn value(text: &str, series: &str) -> Option<String> {
    samples(text).remove(series)
}

#[test]
fn metrics_is_send_and_sync() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<Metrics>();
    shared::<Arc<Metrics>>();
}

#[test]
fn counters_and_histograms_from_many_threads_add_up() {
    let m = Arc::new(Metrics::new());
    // As an upstream and its endpoint hold them, shared by every worker.
    let endpoint = Arc::new(EndpointSeries::default());
    let upstream = m.upstream_series("api");
    // As a route holds its duration series: the same series `request` finds
    // by name (the POSTs below), so the counts add up across both.
    let users = m.route_series("users");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (m, endpoint, upstream, users) = (m.clone(), endpoint.clone(), upstream.clone(), users.clone());
            thread::spawn(move || {
                for i in 0..1000 {
                    let (route, held) = if i % 2 == 0 { ("users", Some(&users)) } else { ("orders", None) };
                    m.request(route, held, &Method::GET, 200, Duration::from_millis(3));
                    m.upstream_try(&endpoint, "api", "10.0.0.1:80", TryOutcome::Ok);
                    upstream.duration.observe(0.002);
                    if t % 2 == 0 {
                        m.request("users", None, &Method::POST, 503, Duration::from_secs(2));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let text = m.encode();
    let s = samples(&text);
    assert_eq!(s[r#"wasmgate_requests_total{route="users",method="GET",status="200"}"#], "4000");
    assert_eq!(s[r#"wasmgate_requests_total{route="orders",method="GET",status="200"}"#], "4000");
    assert_eq!(s[r#"wasmgate_requests_total{route="users",method="POST",status="503"}"#], "4000");
    assert_eq!(s[r#"wasmgate_request_duration_seconds_count{route="users"}"#], "8000");
    assert_eq!(s[r#"wasmgate_request_duration_seconds_count{route="orders"}"#], "4000");
    // 3 ms lands in le=0.005 and above, 2 s only from le=2.5 on.
    assert_eq!(s[r#"wasmgate_request_duration_seconds_bucket{le="0.0025",route="users"}"#], "0");
    assert_eq!(s[r#"wasmgate_request_duration_seconds_bucket{le="0.005",route="users"}"#], "4000");
    assert_eq!(s[r#"wasmgate_request_duration_seconds_bucket{le="1.0",route="users"}"#], "4000");
    assert_eq!(s[r#"wasmgate_request_duration_seconds_bucket{le="2.5",route="users"}"#], "8000");
    assert_eq!(s[r#"wasmgate_request_duration_seconds_bucket{le="+Inf",route="users"}"#], "8000");
    assert_eq!(s[r#"wasmgate_upstream_requests_total{upstream="api",endpoint="10.0.0.1:80",outcome="ok"}"#], "8000");
    assert_eq!(s[r#"wasmgate_upstream_duration_seconds_count{upstream="api"}"#], "8000");
    assert!(text.contains("# TYPE wasmgate_request_duration_seconds histogram\n"));
    assert!(text.contains("# UNIT wasmgate_request_duration_seconds seconds\n"));
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text must end in # EOF");
}

#[test]
fn the_thread_cache_counts_each_call_once() {
    let m = Metrics::new();
    for _ in 0..5 {
        m.retry("users", "api");
    }
    assert_eq!(value(&m.encode(), r#"wasmgate_retries_total{route="users",upstream="api"}"#).as_deref(), Some("5"));

    // Two instances used in turn on one thread: each call lands in its own
    // registry, never in the one whose handles the cache held last.
    let a = Metrics::new();
    let b = Metrics::new();
    for _ in 0..3 {
        a.bulkhead_rejected("api");
        b.bulkhead_rejected("api");
        b.bulkhead_rejected("api");
    }
    assert_eq!(value(&a.encode(), r#"wasmgate_bulkhead_rejected_total{upstream="api"}"#).as_deref(), Some("3"));
    assert_eq!(value(&b.encode(), r#"wasmgate_bulkhead_rejected_total{upstream="api"}"#).as_deref(), Some("6"));
}

/// Every key hashes alike, so every lookup walks one bucket.
#[derive(Clone, Default)]
struct Colliding;

struct Constant;

impl Hasher for Constant {
    fn finish(&self) -> u64 {
        7
    }
    fn write(&mut self, _: &[u8]) {}
}

impl BuildHasher for Colliding {
    type Hasher = Constant;
    fn build_hasher(&self) -> Constant {
        Constant
    }
}

#[test]
fn colliding_label_hashes_keep_their_series_apart() {
    let family = Family::<Labels<2>, Counter>::default();
    let mut slots = Slots::<2, Counter, Colliding>::with_hasher(Colliding);
    let names = ["upstream", "endpoint"];
    for _ in 0..3 {
        slots.with(&family, &names, ["api", "a:80"], |c| {
            c.inc();
        });
        slots.with(&family, &names, ["api", "b:80"], |c| {
            c.inc_by(10);
        });
    }
    assert_eq!(slots.map.len(), 1, "the test needs every key in one bucket");
    let get = |e: &str| family.get_or_create_owned(&[("upstream", "api".into()), ("endpoint", e.into())]).get();
    assert_eq!((get("a:80"), get("b:80")), (3, 30));
}

#[test]
fn gauges_and_the_other_counters_carry_their_labels() {
    let m = Arc::new(Metrics::new());
    let (one, two, api) = (
        m.endpoint_series("api", "10.0.0.1:80"),
        m.endpoint_series("api", "10.0.0.2:80"),
        m.endpoint_series("api", "*"),
    );
    m.endpoint_health(&one, "api", "10.0.0.1:80", true);
    m.endpoint_health(&two, "api", "10.0.0.2:80", true);
    m.endpoint_health(&two, "api", "10.0.0.2:80", false);
    m.endpoint_ejected(&two, "api", "10.0.0.2:80", true);
    m.breaker(&api, "api", None, BreakerState::Open);
    m.breaker(&two, "api", Some("10.0.0.2:80"), BreakerState::Open);
    m.breaker(&two, "api", Some("10.0.0.2:80"), BreakerState::HalfOpen);
    m.retry_budget_exhausted("api");
    m.no_healthy_endpoint("api");
    let auth = m.plugin_series("auth");
    auth.timers[0].observe(Duration::from_micros(3).as_secs_f64());
    auth.instances_created.inc();
    m.plugin_failure("auth", FaultKind::Deadline);
    m.plugin_failure("auth", FaultKind::Deadline);
    m.reloads(true);
    m.reloads(true);
    m.reloads(false);
    m.set_config_generation(7);
    // Connections open and close on every worker.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            thread::spawn(move || {
                for i in 0..150 {
                    m.pool_connections("api", if i < 100 { 1 } else { -1 });
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = samples(&m.encode());
    let expect = [
        (r#"wasmgate_upstream_endpoint_healthy{upstream="api",endpoint="10.0.0.1:80"}"#, "1"),
        (r#"wasmgate_upstream_endpoint_healthy{upstream="api",endpoint="10.0.0.2:80"}"#, "0"),
        (r#"wasmgate_upstream_endpoint_ejected{upstream="api",endpoint="10.0.0.2:80"}"#, "1"),
        (r#"wasmgate_breaker_state{upstream="api",endpoint="*"}"#, "1"),
        (r#"wasmgate_breaker_state{upstream="api",endpoint="10.0.0.2:80"}"#, "2"),
        (r#"wasmgate_breaker_transitions_total{upstream="api",endpoint="*",to="open"}"#, "1"),
        (r#"wasmgate_breaker_transitions_total{upstream="api",endpoint="10.0.0.2:80",to="open"}"#, "1"),
        (r#"wasmgate_breaker_transitions_total{upstream="api",endpoint="10.0.0.2:80",to="half-open"}"#, "1"),
        (r#"wasmgate_retry_budget_exhausted_total{upstream="api"}"#, "1"),
        (r#"wasmgate_no_healthy_endpoint_total{upstream="api"}"#, "1"),
        (r#"wasmgate_plugin_instances_created_total{plugin="auth"}"#, "1"),
        (r#"wasmgate_upstream_connections{upstream="api"}"#, "200"),
        (r#"wasmgate_plugin_call_duration_seconds_count{plugin="auth",phase="request"}"#, "1"),
        (r#"wasmgate_plugin_call_duration_seconds_bucket{le="0.0000025",plugin="auth",phase="request"}"#, "0"),
        (r#"wasmgate_plugin_call_duration_seconds_bucket{le="0.000005",plugin="auth",phase="request"}"#, "1"),
        (r#"wasmgate_plugin_failures_total{plugin="auth",kind="deadline"}"#, "2"),
        (r#"wasmgate_config_reloads_total{result="ok"}"#, "2"),
        (r#"wasmgate_config_reloads_total{result="error"}"#, "1"),
        ("wasmgate_config_generation", "7"),
    ];
    for (series, want) in expect {
        assert_eq!(s.get(series).map(String::as_str), Some(want), "{series}");
    }
}

#[test]
fn methods_and_statuses_are_closed_sets() {
    let m = Metrics::new();
    for method in ["PURGE", "TRACE", "CONNECT", "get"] {
        m.request("r", None, &Method::from_bytes(method.as_bytes()).unwrap(), 200, Duration::ZERO);
    }
    // Not a status, and statuses an upstream may send beyond HTTP's classes.
    for status in [0, 600, 799, 999] {
        m.request("r", None, &Method::PATCH, status, Duration::ZERO);
    }
    let s = samples(&m.encode());
    assert_eq!(s[r#"wasmgate_requests_total{route="r",method="OTHER",status="200"}"#], "4");
    assert_eq!(s[r#"wasmgate_requests_total{route="r",method="PATCH",status="other"}"#], "4");
}

/// An endpoint that left its upstream leaves the scrape, and what still
/// comes for it (a try in flight, a health check's result, a breaker's
/// change under way as it left) does not bring its series back, whether it
/// had used them before or uses them first now, and from whichever endpoint
/// object of its address (a reload or a new DNS weight makes new ones):
/// they came back, and stayed for the rest of the process. An endpoint at
/// that address that comes back is a new one, with series of its own.
#[test]
fn a_forgotten_endpoint_leaves_the_scrape_and_can_come_back() {
    let m = Metrics::new();
    let (upstream, address) = ("api", "10.0.0.9:80");
    let healthy = r#"wasmgate_upstream_endpoint_healthy{upstream="api",endpoint="10.0.0.9:80"}"#;
    // What the endpoint serving holds, and what an older endpoint object of
    // the address (a request in flight holds it) was given: the same.
    let (gone, older) = (m.endpoint_series(upstream, address), m.endpoint_series(upstream, address));
    assert!(Arc::ptr_eq(&gone, &older));
    m.endpoint_health(&gone, upstream, address, true);
    m.breaker(&gone, upstream, Some(address), BreakerState::Open);
    m.upstream_try(&gone, upstream, address, TryOutcome::Ok);
    let text = m.encode();
    assert_eq!(value(&text, healthy).as_deref(), Some("1"));
    assert!(text.contains(r#"wasmgate_breaker_transitions_total{upstream="api",endpoint="10.0.0.9:80",to="open"} 1"#));
    assert!(text.contains(r#"wasmgate_upstream_requests_total{upstream="api",endpoint="10.0.0.9:80",outcome="ok"} 1"#));

    m.forget_endpoint(upstream, address);
    assert!(!m.encode().contains("10.0.0.9:80\""), "the series of a forgotten endpoint must go");
    // Late: series it held, and series it had not used yet, from either.
    m.endpoint_health(&gone, upstream, address, false);
    m.breaker(&gone, upstream, Some(address), BreakerState::HalfOpen);
    m.upstream_try(&gone, upstream, address, TryOutcome::Ok);
    m.endpoint_ejected(&gone, upstream, address, true);
    m.upstream_try(&older, upstream, address, TryOutcome::Timeout);
    m.breaker(&older, upstream, Some(address), BreakerState::Closed);
    let text = m.encode();
    assert!(!text.contains("10.0.0.9:80\""), "what came late made series again:\n{text}");

    // Back, as a new endpoint.
    let back = m.endpoint_series(upstream, address);
    m.endpoint_health(&back, upstream, address, false);
    assert_eq!(value(&m.encode(), healthy).as_deref(), Some("0"));
}

/// The series made for endpoints that no longer exist without having left
/// an upstream that served (a config a reload refused) are let go of;
/// those an endpoint holds are kept.
#[test]
fn series_no_endpoint_holds_are_let_go_of() {
    let m = Metrics::new();
    let held = m.endpoint_series("api", "10.0.0.1:80");
    drop(m.endpoint_series("api", "10.0.0.2:80"));
    m.forget_unheld_endpoints();
    let kept: Vec<(String, String)> =
        m.endpoints.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
    assert_eq!(kept, [("api".to_owned(), "10.0.0.1:80".to_owned())]);
    assert!(Arc::ptr_eq(&held, &m.endpoint_series("api", "10.0.0.1:80")));
}

#[test]
fn a_routes_held_counters_and_the_by_name_path_meet_in_one_series() {
    let m = Metrics::new();
    let held = m.route_series("users");
    let propfind = Method::from_bytes(b"PROPFIND").unwrap();
    m.request("users", Some(&held), &Method::GET, 200, Duration::from_millis(1));
    m.request("users", None, &Method::GET, 200, Duration::from_millis(1));
    // Not held: an unusual status and an unusual method, counted by name.
    m.request("users", Some(&held), &Method::GET, 418, Duration::from_millis(1));
    m.request("users", Some(&held), &propfind, 200, Duration::from_millis(1));
    // A route built again (a reload) holds the same series.
    let again = m.route_series("users");
    m.request("users", Some(&again), &Method::GET, 200, Duration::from_millis(1));
    let text = m.encode();
    let s = samples(&text);
    assert_eq!(s[r#"wasmgate_requests_total{route="users",method="GET",status="200"}"#], "3");
    assert_eq!(s[r#"wasmgate_requests_total{route="users",method="GET",status="418"}"#], "1");
    assert_eq!(s[r#"wasmgate_requests_total{route="users",method="OTHER",status="200"}"#], "1");
    assert_eq!(s[r#"wasmgate_request_duration_seconds_count{route="users"}"#], "5");
}
