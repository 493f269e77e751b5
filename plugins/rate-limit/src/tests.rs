//! Unit tests through `wasmgate_sdk::testing`: natively the store is the
//! gateway's own in-memory backend on the test clock, so every count below is
//! what the gateway would count.

use std::time::Duration;

use wasmgate_sdk::log::Level;
use wasmgate_sdk::store::{Limit, StoreError};
use wasmgate_sdk::testing::{self, TestRequest, TestResponse};

use super::*;
use crate::key::escape;

/// A whole second (and minute): sliding windows start here.
const T0: u64 = 1_700_000_040_000;

fn plugin(json: &str) -> RateLimit {
    testing::configure::<RateLimit>(json).expect("config accepted")
}

/// A fresh store, context and log, on a frozen clock at `T0`.
fn fresh() {
    testing::reset();
    testing::set_now_unix_ms(T0);
}

fn status_of(p: &RateLimit, req: &mut TestRequest) -> u16 {
    match testing::on_request(p, req) {
        Decision::Continue => 200,
        Decision::Respond(reply) => reply.status,
    }
}

/// `n` requests like `req`; how many passed.
fn passed(p: &RateLimit, n: usize, req: impl Fn() -> TestRequest) -> usize {
    (0..n).filter(|_| status_of(p, &mut req()) == 200).count()
}

fn refusal(p: &RateLimit, req: &mut TestRequest) -> Reply {
    testing::on_request(p, req).reply().cloned().expect("refused")
}

const PER_SECOND: &str = r#"{"limits":[{"name":"per-second","key":["client-ip"],"rate":10,"per":"1s","algorithm":"token-bucket","burst":20}]}"#;

#[test]
fn token_bucket_allows_exactly_the_burst_then_refills_at_the_rate() {
    fresh();
    let p = plugin(PER_SECOND);
    assert_eq!(passed(&p, 25, || TestRequest::get("/")), 20, "a full bucket holds `burst` tokens");
    // 10/s: one token every 100 ms.
    testing::advance_ms(99);
    assert_eq!(passed(&p, 5, || TestRequest::get("/")), 0);
    testing::advance_ms(1);
    assert_eq!(passed(&p, 5, || TestRequest::get("/")), 1);
    testing::advance_ms(1000);
    assert_eq!(passed(&p, 25, || TestRequest::get("/")), 10);
    testing::advance_ms(60_000);
    assert_eq!(passed(&p, 25, || TestRequest::get("/")), 20, "refills to `burst`, never beyond");
}

#[test]
fn token_bucket_burst_defaults_to_the_rate() {
    fresh();
    let p = plugin(r#"{"limits":[{"name":"b","key":["global"],"rate":3,"per":"1m","algorithm":"token-bucket"}]}"#);
    assert_eq!(passed(&p, 10, || TestRequest::get("/")), 3);
    let reply = refusal(&p, &mut TestRequest::get("/"));
    assert_eq!(reply.header_str("retry-after"), Some("20"), "3 per minute: a token every 20 s");
    assert_eq!(reply.header_str("ratelimit-policy"), Some("3;w=60"));
}

#[test]
fn sliding_window_counts_exactly_and_allows_no_double_burst_at_the_edge() {
    fresh();
    let p = plugin(r#"{"limits":[{"name":"w","key":["global"],"rate":10,"per":"1s","algorithm":"sliding-window"}]}"#);
    // The whole limit, spent at the very end of one window...
    testing::advance_ms(900);
    assert_eq!(passed(&p, 15, || TestRequest::get("/")), 10);
    // ...is not available again just after the edge, as two fixed windows
    // would allow: the previous window still weighs in in full.
    testing::advance_ms(100);
    assert_eq!(passed(&p, 15, || TestRequest::get("/")), 0);
    // Half-way into the new window the previous one weighs half.
    testing::advance_ms(500);
    assert_eq!(passed(&p, 15, || TestRequest::get("/")), 5);
    // Two windows on, it is all forgotten.
    testing::advance_ms(1500);
    assert_eq!(passed(&p, 15, || TestRequest::get("/")), 10);
}

#[test]
fn sliding_window_refusal_says_when_a_retry_succeeds() {
    fresh();
    let p = plugin(r#"{"limits":[{"name":"w","key":["global"],"rate":2,"per":"1m"}]}"#);
    testing::advance_ms(15_000);
    assert_eq!(passed(&p, 2, || TestRequest::get("/")), 2);
    let reply = refusal(&p, &mut TestRequest::get("/"));
    assert_eq!(reply.status, 429);
    assert_eq!(reply.body, br#"{"error":"rate limited","limit":"w"}"#);
    assert_eq!(reply.header_str("content-type"), Some("application/json"));
    // Both hits count in this window until it rolls (45 s), then decay: the
    // first retry that can pass is once one hit's weight has gone, 30 s later.
    assert_eq!(reply.header_str("retry-after"), Some("75"));
    assert_eq!(reply.header_str("ratelimit-limit"), Some("2"));
    assert_eq!(reply.header_str("ratelimit-remaining"), Some("0"));
    // Fully available once they weigh nothing: at the end of the next window.
    assert_eq!(reply.header_str("ratelimit-reset"), Some("105"));
    assert_eq!(reply.header_str("ratelimit-policy"), Some("2;w=60"));
    testing::advance_ms(74_999);
    assert_eq!(status_of(&p, &mut TestRequest::get("/")), 429);
    testing::advance_ms(1);
    assert_eq!(status_of(&p, &mut TestRequest::get("/")), 200);
}

/// `RateLimit-Reset` is when the limit is fully available again, so never
/// before `Retry-After`: the previous window still counts after the roll.
/// (It was the time to the roll: `ratelimit-reset: 10` beside `retry-after:
/// 16`, and a client waiting 10 s was refused again.)
#[test]
fn sliding_window_reset_is_never_before_retry_after() {
    fresh();
    let p = plugin(r#"{"limits":[{"name":"w","key":["global"],"rate":10,"per":"1m"}]}"#);
    testing::advance_ms(50_000);
    assert_eq!(passed(&p, 10, || TestRequest::get("/")), 10);
    let reply = refusal(&p, &mut TestRequest::get("/"));
    // 10 s to the roll, then 10 × (60 - s) / 60 + 1 <= 10 at s = 6.
    assert_eq!(reply.header_str("retry-after"), Some("16"));
    assert_eq!(reply.header_str("ratelimit-reset"), Some("70"));
    // Waiting for Reset, the whole limit is there again.
    testing::advance_ms(70_000);
    assert_eq!(passed(&p, 11, || TestRequest::get("/")), 10);
}

#[test]
fn header_numbers_are_plain_decimals() {
    for n in [0, 7, 10, 999, 1_000_000_007, u64::MAX] {
        let d = wasmgate_sdk::Decimal::new(n);
        assert_eq!(d.as_str(), n.to_string());
        assert_eq!(Vec::<u8>::from(d), n.to_string().into_bytes());
    }
}

#[test]
fn retry_after_and_reset_round_up_to_whole_seconds() {
    assert_eq!(status::retry_after_secs(0), 1, "never `Retry-After: 0` on a refusal");
    assert_eq!(status::retry_after_secs(1), 1);
    assert_eq!(status::retry_after_secs(999), 1);
    assert_eq!(status::retry_after_secs(1000), 1);
    assert_eq!(status::retry_after_secs(1001), 2);
    assert_eq!(status::ceil_secs(0), 0);
    assert_eq!(status::ceil_secs(1), 1);
    assert_eq!(status::ceil_secs(59_001), 60);

    fresh();
    let p = plugin(PER_SECOND);
    assert_eq!(passed(&p, 20, || TestRequest::get("/")), 20);
    let reply = refusal(&p, &mut TestRequest::get("/"));
    assert_eq!(reply.header_str("retry-after"), Some("1"), "the next token is 100 ms away");
    assert_eq!(reply.header_str("ratelimit-reset"), Some("2"), "the bucket is full again in 2 s");
    assert_eq!(reply.header_str("ratelimit-limit"), Some("20"));
    assert_eq!(reply.header_str("ratelimit-policy"), Some("10;w=1;burst=20"));
}

const TWO_LIMITS: &str = r#"{"limits":[
    {"name":"per-second","key":["client-ip"],"rate":10,"per":"1s","algorithm":"token-bucket","burst":20},
    {"name":"per-hour","key":["header:x-api-key","route"],"rate":30,"per":"1h","algorithm":"sliding-window"}]}"#;

#[test]
fn a_request_must_pass_every_limit() {
    fresh();
    let p = plugin(TWO_LIMITS);
    let req = || TestRequest::get("/").header("x-api-key", "k1");
    assert_eq!(passed(&p, 20, req), 20);
    let reply = refusal(&p, &mut req());
    assert_eq!(reply.body, br#"{"error":"rate limited","limit":"per-second"}"#, "the burst is spent");
    testing::advance_ms(2000);
    assert_eq!(passed(&p, 12, req), 10, "30 per hour: 20 were counted, 10 remain");
    let reply = refusal(&p, &mut req());
    assert_eq!(reply.body, br#"{"error":"rate limited","limit":"per-hour"}"#);
    assert_eq!(reply.header_str("ratelimit-policy"), Some("30;w=3600, 10;w=1;burst=20"));
}

#[test]
fn earlier_limits_are_charged_when_a_later_one_refuses() {
    fresh();
    let p = plugin(
        r#"{"limits":[
        {"name":"wide","key":["global"],"rate":100,"per":"1m"},
        {"name":"narrow","key":["client-ip"],"rate":2,"per":"1m"}]}"#,
    );
    assert_eq!(passed(&p, 10, || TestRequest::get("/")), 2);
    // 10 requests reached `wide` (8 of them then refused by `narrow`): 90 left.
    let mut req = TestRequest::get("/").client_ip("10.0.0.2");
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(req.response_header_str("ratelimit-remaining").as_deref(), Some("1"), "left for the response");
    let mut resp = TestResponse::new(200);
    let _ = testing::on_response(&p, &mut req, &mut resp);
    assert_eq!(resp.headers.get_str("ratelimit-remaining").as_deref(), Some("1"), "narrow is the tightest");
    assert_eq!(resp.headers.get_str("ratelimit-policy").as_deref(), Some("2;w=60, 100;w=60"));

    // The other way round, a refusal by the first limit charges nothing after it.
    fresh();
    let p = plugin(
        r#"{"limits":[
        {"name":"narrow","key":["client-ip"],"rate":2,"per":"1m"},
        {"name":"wide","key":["global"],"rate":100,"per":"1m"}]}"#,
    );
    assert_eq!(passed(&p, 10, || TestRequest::get("/")), 2);
    let mut req = TestRequest::get("/").client_ip("10.0.0.2");
    assert!(testing::on_request(&p, &mut req).is_continue());
    let mut resp = TestResponse::new(200);
    let _ = testing::on_response(&p, &mut req, &mut resp);
    assert_eq!(resp.headers.get_str("ratelimit-remaining").as_deref(), Some("1"));
    let wide =
        testing::configure::<RateLimit>(r#"{"limits":[{"name":"wide","key":["global"],"rate":100,"per":"1m"}]}"#)
            .expect("config");
    let mut req = TestRequest::get("/");
    let _ = testing::on_request(&wide, &mut req);
    let mut resp = TestResponse::new(200);
    let _ = testing::on_response(&wide, &mut req, &mut resp);
    assert_eq!(resp.headers.get_str("ratelimit-remaining").as_deref(), Some("96"), "3 counted before this one");
}

#[test]
fn client_ip_keys_count_each_client_apart() {
    fresh();
    let p = plugin(r#"{"limits":[{"name":"ip","key":["client-ip"],"rate":3,"per":"1m"}]}"#);
    assert_eq!(passed(&p, 5, || TestRequest::get("/").client_ip("10.0.0.1")), 3);
    assert_eq!(passed(&p, 5, || TestRequest::get("/").client_ip("10.0.0.2")), 3);
    assert_eq!(passed(&p, 5, || TestRequest::get("/").client_ip("2001:db8::1")), 3);
}

#[test]
fn header_combinations_key_on_every_part() {
    fresh();
    let p = plugin(r#"{"limits":[{"name":"t","key":["header:X-Tenant","method","path"],"rate":2,"per":"1m"}]}"#);
    let req = |tenant: &str, method: &str, path: &str| {
        let tenant = tenant.to_owned();
        let (method, path) = (method.to_owned(), path.to_owned());
        move || TestRequest::new(&method, &path).header("x-tenant", &tenant)
    };
    assert_eq!(passed(&p, 5, req("a", "GET", "/x")), 2);
    assert_eq!(passed(&p, 5, req("b", "GET", "/x")), 2);
    assert_eq!(passed(&p, 5, req("a", "POST", "/x")), 2);
    assert_eq!(passed(&p, 5, req("a", "GET", "/y")), 2);
    assert_eq!(passed(&p, 5, req("a", "GET", "/x")), 0);
}

#[test]
fn values_containing_the_separator_do_not_collide() {
    fresh();
    let p = plugin(r#"{"limits":[{"name":"t","key":["header:a","header:b"],"rate":1,"per":"1m"}]}"#);
    assert_eq!(passed(&p, 2, || TestRequest::get("/").header("a", "x|y").header("b", "z")), 1);
    assert_eq!(passed(&p, 2, || TestRequest::get("/").header("a", "x").header("b", "y|z")), 1);
    assert_eq!(passed(&p, 2, || TestRequest::get("/").header("a", "x%7Cy").header("b", "z")), 1);
    assert_eq!(escape(b"a|b%c#d e\xff"), "a%7Cb%25c%23d%20e%FF");
}

#[test]
fn long_keys_are_hashed_and_still_counted_apart() {
    fresh();
    let p = plugin(r#"{"limits":[{"name":"t","key":["header:x-token"],"rate":1,"per":"1m"}]}"#);
    let long_a = "a".repeat(8000);
    let long_b = format!("{}b", "a".repeat(7999));
    assert_eq!(passed(&p, 3, || TestRequest::get("/").header("x-token", &long_a)), 1);
    assert_eq!(passed(&p, 3, || TestRequest::get("/").header("x-token", &long_b)), 1);
    let key = key::store_key("r", "t", "sw", &long_a);
    assert!(key.len() < 100, "{key}");
    assert!(key.starts_with("r|t|sw|#"), "{key}");
}

#[test]
fn claims_and_consumer_come_from_the_context() {
    fresh();
    let p = plugin(r#"{"limits":[{"name":"c","key":["claim:sub","claim:tier","consumer"],"rate":2,"per":"1m"}]}"#);
    let as_user = |sub: &str| {
        testing::set_context("jwt.claims", &format!(r#"{{"sub":"{sub}","tier":3,"exp":1}}"#));
        testing::set_context("consumer", "acme");
    };
    as_user("alice");
    assert_eq!(passed(&p, 5, || TestRequest::get("/")), 2);
    as_user("bob");
    assert_eq!(passed(&p, 5, || TestRequest::get("/")), 2);
    testing::set_context("consumer", "globex");
    assert_eq!(passed(&p, 5, || TestRequest::get("/")), 2);
    // No such claim, a null claim, or claims that are not an object: the
    // part is missing, and by default the limit does not apply.
    testing::set_context("jwt.claims", r#"{"sub":"alice","tier":null}"#);
    assert_eq!(passed(&p, 5, || TestRequest::get("/")), 5);
    testing::set_context("jwt.claims", "not json");
    assert_eq!(passed(&p, 5, || TestRequest::get("/")), 5);

    // Any context entry: here the real client an ip-filter found behind a proxy.
    let p = plugin(r#"{"limits":[{"name":"real-ip","key":["context:client.ip"],"rate":2,"per":"1m"}]}"#);
    testing::set_context("client.ip", "203.0.113.7");
    assert_eq!(passed(&p, 5, || TestRequest::get("/").client_ip("10.0.0.1")), 2);
    testing::set_context("client.ip", "203.0.113.8");
    assert_eq!(passed(&p, 5, || TestRequest::get("/").client_ip("10.0.0.1")), 2, "same proxy, another client");
}

#[test]
fn missing_parts_skip_share_or_deny() {
    let config = |missing: &str| {
        format!(r#"{{"limits":[{{"name":"k","key":["header:x-api-key"],"rate":2,"per":"1m","missing":"{missing}"}}]}}"#)
    };

    fresh();
    let skip = plugin(&config("skip"));
    assert_eq!(passed(&skip, 10, || TestRequest::get("/")), 10, "skip: the limit does not apply");
    let mut req = TestRequest::get("/");
    assert_eq!(status_of(&skip, &mut req), 200);
    assert!(req.response_headers.is_empty(), "no limit applied, so no headers");
    assert_eq!(passed(&skip, 10, || TestRequest::get("/").header("x-api-key", "k")), 2);

    fresh();
    let shared = plugin(&config("shared"));
    assert_eq!(passed(&shared, 10, || TestRequest::get("/")), 2, "shared: all keyless requests count together");
    assert_eq!(passed(&shared, 10, || TestRequest::get("/").header("x-api-key", "")), 2, "empty is not missing");
    assert_eq!(passed(&shared, 10, || TestRequest::get("/").header("x-api-key", "%-")), 2, "nor is the marker");

    fresh();
    let deny = plugin(&config("deny"));
    let reply = refusal(&deny, &mut TestRequest::get("/"));
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body, br#"{"error":"missing rate limit key","limit":"k","part":"header:x-api-key"}"#);
    assert_eq!(passed(&deny, 10, || TestRequest::get("/").header("x-api-key", "k")), 2);
}

#[test]
fn route_path_method_and_global_parts() {
    fresh();
    let p = plugin(r#"{"limits":[{"name":"g","key":["global"],"rate":3,"per":"1m"}]}"#);
    assert_eq!(passed(&p, 5, || TestRequest::get("/a").client_ip("10.0.0.1")), 3);
    assert_eq!(passed(&p, 5, || TestRequest::new("POST", "/b").client_ip("10.0.0.2")), 0, "one counter for all");

    fresh();
    let p = plugin(
        r#"{"limits":[{"name":"r","key":["route"],"rate":1,"per":"1m"}],"share_across_routes":true,"headers":false}"#,
    );
    assert_eq!(passed(&p, 3, || TestRequest::get("/").route("a")), 1);
    assert_eq!(passed(&p, 3, || TestRequest::get("/").route("b")), 1, "keyed on the route even when shared");
}

#[test]
fn counters_are_per_route_unless_shared() {
    let config = |share: bool| {
        format!(r#"{{"limits":[{{"name":"g","key":["global"],"rate":2,"per":"1m"}}],"share_across_routes":{share}}}"#)
    };
    fresh();
    let p = plugin(&config(false));
    assert_eq!(passed(&p, 5, || TestRequest::get("/").route("users")), 2);
    assert_eq!(passed(&p, 5, || TestRequest::get("/").route("orders")), 2, "another route, other counters");

    fresh();
    let p = plugin(&config(true));
    assert_eq!(passed(&p, 5, || TestRequest::get("/").route("users")), 2);
    assert_eq!(passed(&p, 5, || TestRequest::get("/").route("orders")), 0, "shared across routes");
}

#[test]
fn allowed_responses_carry_the_tightest_limit_in_headers() {
    fresh();
    let p = plugin(TWO_LIMITS);
    assert_eq!(p.info(), Info::default(), "the headers are left by the request hook: no response hook");
    let mut req = TestRequest::get("/").header("x-api-key", "k");
    assert!(testing::on_request(&p, &mut req).is_continue());
    let mut resp = TestResponse::new(200).header("ratelimit-limit", "upstream's own");
    assert!(testing::on_response(&p, &mut req, &mut resp).is_continue());
    // per-second: 19 of 20 left; per-hour: 29 of 30. The first is tighter.
    assert_eq!(resp.headers.get_all("ratelimit-limit"), vec![b"20".to_vec()], "replaces the upstream's");
    assert_eq!(resp.headers.get_str("ratelimit-remaining").as_deref(), Some("19"));
    assert_eq!(resp.headers.get_str("ratelimit-reset").as_deref(), Some("1"), "full again 100 ms after the request");
    assert_eq!(resp.headers.get_str("ratelimit-policy").as_deref(), Some("10;w=1;burst=20, 30;w=3600"));
    assert_eq!(resp.headers.get("retry-after"), None);
}

#[test]
fn one_limit_on_an_ever_present_key_has_its_limit_and_policy_fixed() {
    fresh();
    let p = plugin(PER_SECOND);
    let fixed = p.fixed_headers();
    assert!(fixed.request.is_empty());
    assert_eq!(
        fixed.response,
        vec![
            ("ratelimit-limit".to_owned(), HeaderEdit::Set(b"20".to_vec())),
            ("ratelimit-policy".to_owned(), HeaderEdit::Set(b"10;w=1;burst=20".to_vec())),
        ],
        "the same on every response: the gateway sets them"
    );
    let mut req = TestRequest::get("/");
    assert!(testing::on_request(&p, &mut req).is_continue());
    let left: Vec<&str> = req.response_headers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(left, ["ratelimit-remaining", "ratelimit-reset"], "the hook leaves only what changes");
    let mut resp = TestResponse::new(200).header("ratelimit-limit", "upstream's own");
    assert!(testing::on_response(&p, &mut req, &mut resp).is_continue());
    assert_eq!(resp.headers.get_all("ratelimit-limit"), vec![b"20".to_vec()], "replaces the upstream's");
    assert_eq!(resp.headers.get_str("ratelimit-remaining").as_deref(), Some("19"));
    assert_eq!(resp.headers.get_str("ratelimit-policy").as_deref(), Some("10;w=1;burst=20"));

    // A refusal carries the same values, from the hook and fixed alike.
    for _ in 0..19 {
        assert!(testing::on_request(&p, &mut TestRequest::get("/")).is_continue());
    }
    let mut req = TestRequest::get("/");
    let reply = refusal(&p, &mut req);
    let sent = testing::reply_sent(&p, &mut req, reply);
    assert_eq!(sent.headers.get_all("ratelimit-limit"), vec![b"20".to_vec()]);
    assert_eq!(sent.headers.get_str("ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(sent.headers.get_all("ratelimit-policy"), vec![b"10;w=1;burst=20".to_vec()]);

    // Not fixed: a key part a request may lack, several limits, no headers.
    for config in [
        r#"{"limits":[{"name":"k","key":["header:x-api-key"],"rate":1,"per":"1s"}]}"#,
        TWO_LIMITS,
        r#"{"headers":false,"limits":[{"name":"g","key":["global"],"rate":1,"per":"1s"}]}"#,
    ] {
        assert!(plugin(config).fixed_headers().is_empty(), "{config}");
    }
    // Without the policy header, only the limit is fixed.
    let p = plugin(r#"{"policy_header":false,"limits":[{"name":"g","key":["global"],"rate":5,"per":"1s"}]}"#);
    assert_eq!(p.fixed_headers().response, vec![("ratelimit-limit".to_owned(), HeaderEdit::Set(b"5".to_vec()))]);
    let mut req = TestRequest::get("/");
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(req.response_header_str("ratelimit-policy"), None);
}

#[test]
fn headers_false_leaves_allowed_responses_alone_but_not_refusals() {
    fresh();
    let p = plugin(
        r#"{"headers":false,"policy_header":false,"limits":[{"name":"g","key":["global"],"rate":1,"per":"1s"}]}"#,
    );
    assert_eq!(p.info(), Info::default(), "no response hook");
    let mut req = TestRequest::get("/");
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert!(req.response_headers.is_empty());
    let reply = refusal(&p, &mut TestRequest::get("/"));
    assert_eq!(reply.header_str("ratelimit-limit"), Some("1"));
    assert_eq!(reply.header_str("ratelimit-remaining"), Some("0"));
    assert_eq!(reply.header_str("ratelimit-policy"), None, "policy_header = false");
}

fn rule(p: &RateLimit) -> &Rule {
    p.rules.first().expect("one rule")
}

#[test]
fn store_errors_fail_open_by_default_and_log_a_throttled_warning() {
    fresh();
    let p = plugin(r#"{"limits":[{"name":"g","key":["global"],"rate":1,"per":"1s"}]}"#);
    let down = || Err(StoreError::Unavailable("connection refused".into()));
    assert!(matches!(p.judge(rule(&p), down(), None, T0), Verdict::FailOpen { stop: true }));
    assert!(matches!(p.judge(rule(&p), down(), None, T0 + 1), Verdict::FailOpen { stop: true }));
    let invalid = Err(StoreError::Invalid("store full".into()));
    assert!(matches!(p.judge(rule(&p), invalid, None, T0 + 2), Verdict::FailOpen { stop: false }));
    assert!(matches!(p.judge(rule(&p), down(), None, T0 + WARN_EVERY_MS), Verdict::FailOpen { stop: true }));
    let logs = testing::logs();
    let warnings: Vec<&String> = logs.iter().filter(|(l, _)| *l == Level::Warn).map(|(_, m)| m).collect();
    assert_eq!(warnings.len(), 2, "one warning per 10 s, the rest at debug: {logs:?}");
    assert!(warnings[0].contains("limit `g` not applied, request allowed: store unavailable: connection refused"));
    assert_eq!(logs.iter().filter(|(l, _)| *l == Level::Debug).count(), 2);
}

#[test]
fn store_errors_fail_closed_with_503_when_asked() {
    fresh();
    let p = plugin(r#"{"on_store_error":"deny","limits":[{"name":"g","key":["global"],"rate":1,"per":"1s"}]}"#);
    for error in [StoreError::Unavailable("timeout".into()), StoreError::Invalid("store full".into())] {
        let Verdict::FailClosed(reply) = p.judge(rule(&p), Err(error), None, T0) else { panic!("not closed") };
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header_str("retry-after"), Some("1"));
        assert_eq!(reply.body, br#"{"error":"rate limiter unavailable"}"#);
    }
}

#[test]
fn judge_turns_store_answers_into_replies() {
    fresh();
    let p = plugin(r#"{"limits":[{"name":"g","key":["global"],"rate":10,"per":"1s","algorithm":"token-bucket"}]}"#);
    let answer = |allowed: bool, remaining: u64, reset_ms: u64, retry_ms: u64| {
        Ok(Limit {
            allowed,
            limit: 10,
            remaining,
            reset: Duration::from_millis(reset_ms),
            retry_after: Duration::from_millis(retry_ms),
        })
    };
    let Verdict::Allowed(status) = p.judge(rule(&p), answer(true, 7, 300, 0), None, T0) else { panic!("allowed") };
    assert_eq!(status.remaining, 7);
    assert_eq!(status.reset_at, T0 + 300);
    let earlier = Status { limit: 5, remaining: 3, reset_at: T0, policy: vec!["5;w=60".into()] };
    let Verdict::Refused(reply) = p.judge(rule(&p), answer(false, 0, 1001, 1), Some(&earlier), T0) else {
        panic!("refused")
    };
    assert_eq!(reply.header_str("retry-after"), Some("1"));
    assert_eq!(reply.header_str("ratelimit-reset"), Some("2"));
    assert_eq!(reply.header_str("ratelimit-policy"), Some("10;w=1, 5;w=60"));
}

#[test]
fn tightest_prefers_fewer_remaining_then_the_later_reset() {
    let s = |remaining: u64, reset_at: u64, policy: &str| Status {
        limit: 10,
        remaining,
        reset_at,
        policy: vec![policy.to_owned()],
    };
    assert_eq!(s(3, 10, "a").tightest(s(2, 5, "b")).policy, vec!["b", "a"]);
    assert_eq!(s(2, 5, "a").tightest(s(2, 10, "b")).policy, vec!["b", "a"]);
    assert_eq!(s(2, 10, "a").tightest(s(2, 10, "b")).policy, vec!["a", "b"]);
    assert_eq!(s(2, 10, "a").tightest(s(2, 10, "a")).policy, vec!["a"]);
}

#[test]
fn bad_configs_are_refused_with_a_reason() {
    let err = |json: &str| testing::configure::<RateLimit>(json).err().map(|e| e.to_string()).unwrap_or_default();
    let limit = |fields: &str| format!(r#"{{"limits":[{{"name":"l","key":["global"],"rate":1,"per":"1s"{fields}}}]}}"#);
    assert!(err(r#"{"limits":[]}"#).contains("`limits` is empty"));
    assert!(err("{}").contains("missing field `limits`"));
    assert!(err(&limit(r#","brust":2"#)).contains("unknown field `brust`"));
    assert!(err(r#"{"limits":[{"name":"a b","key":["global"],"rate":1,"per":"1s"}]}"#).contains("not valid"));
    assert!(
        err(r#"{"limits":[{"name":"l","key":["global"],"rate":1,"per":"1s"},{"name":"l","key":["path"],"rate":1,"per":"1s"}]}"#)
            .contains("two limits are named `l`")
    );
    assert!(err(r#"{"limits":[{"name":"l","key":[],"rate":1,"per":"1s"}]}"#).contains("`key` is empty"));
    assert!(err(r#"{"limits":[{"name":"l","key":["ip"],"rate":1,"per":"1s"}]}"#).contains("unknown key part `ip`"));
    assert!(
        err(r#"{"limits":[{"name":"l","key":["header:a b"],"rate":1,"per":"1s"}]}"#).contains("not a valid header")
    );
    assert!(err(r#"{"limits":[{"name":"l","key":["claim:"],"rate":1,"per":"1s"}]}"#).contains("names no claim"));
    assert!(err(r#"{"limits":[{"name":"l","key":["context:"],"rate":1,"per":"1s"}]}"#).contains("names no context"));
    assert!(err(r#"{"limits":[{"name":"l","key":["global"],"rate":0,"per":"1s"}]}"#).contains("`rate` is 0"));
    assert!(err(r#"{"limits":[{"name":"l","key":["global"],"rate":1,"per":"soon"}]}"#).contains("not a duration"));
    assert!(
        err(r#"{"limits":[{"name":"l","key":["global"],"rate":1,"per":"1m 30s"}]}"#).is_empty(),
        "the gateway's durations"
    );
    assert!(err(r#"{"limits":[{"name":"l","key":["global"],"rate":1,"per":"1500ms"}]}"#).contains("whole number"));
    assert!(err(&limit(r#","burst":5"#)).contains("`burst` applies to algorithm = \"token-bucket\" only"));
    assert!(err(r#"{"limits":[{"name":"l","key":["global"],"rate":1,"per":"2d"}]}"#).contains("at most one day"));
    assert!(
        err(r#"{"limits":[{"name":"l","key":["global"],"rate":9007199254740993,"per":"1d"}]}"#)
            .contains("too large to count exactly")
    );
    assert!(
        err(r#"{"limits":[{"name":"l","key":["global"],"rate":1,"per":"1s","algorithm":"token-bucket","burst":0}]}"#)
            .contains("`burst` must be between 1")
    );
    assert!(err(&limit(r#","algorithm":"leaky-bucket""#)).contains("unknown variant `leaky-bucket`"));
    assert!(err(&limit(r#","missing":"ignore""#)).contains("unknown variant `ignore`"));
    assert!(
        err(r#"{"limits":[{"name":"l","key":["global"],"rate":1,"per":"1s"}],"on_store_error":"open"}"#)
            .contains("unknown variant `open`")
    );
}
