//! The request hook as the gateway calls it, with `testing::on_http`
//! answering the calls the way the example services (users, orders, cart) do.

use std::time::Duration;

use serde_json::json;
use wasmgate_sdk::log::Level;
use wasmgate_sdk::testing::{self, TestRequest};

use super::*;

/// The mobile home screen from the README.
fn home() -> Value {
    json!({
        "calls": [
            { "name": "user", "url": "upstream://users/users/{path.user_id}", "timeout": "500ms", "on_error": "fail" },
            { "name": "orders", "url": "upstream://orders/orders?user={path.user_id}&limit=3", "on_error": "omit" },
            { "name": "cart", "url": "upstream://cart/carts/{path.user_id}",
              "on_error": { "default": { "items": [], "total": "0.00" } } },
        ],
        "shape": {
            "user": "user",
            "recent_orders": "orders#/orders",
            "cart": { "items": "count(cart#/items)", "total": "cart#/total" },
        },
        "forward_headers": ["authorization", "accept-language"],
        "status_from": "user",
    })
}

fn plugin(config: &Value) -> Compose {
    testing::configure::<Compose>(&config.to_string()).expect("config accepted")
}

fn refused(config: &Value) -> String {
    testing::configure::<Compose>(&config.to_string()).err().map(|e| e.to_string()).unwrap_or_default()
}

fn ok(status: u16, body: &str) -> Result<IncomingResponse, HttpError> {
    Ok(IncomingResponse {
        status,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: body.as_bytes().to_vec(),
    })
}

/// What the example services answer for user 1.
fn services(req: &OutgoingRequest) -> Result<IncomingResponse, HttpError> {
    match req.url.as_str() {
        "upstream://users/users/1" => ok(200, r#"{"id":1,"name":"Ada Lovelace","email":"ada@example.com"}"#),
        "upstream://orders/orders?user=1&limit=3" => ok(
            200,
            r#"{"user_id":1,"limit":3,"count":2,"orders":[{"id":1010,"total":"50.80"},{"id":1009,"total":"112.30"}]}"#,
        ),
        "upstream://cart/carts/1" => ok(
            200,
            r#"{"user_id":1,"currency":"EUR","items":[{"sku":"KB-01"},{"sku":"CB-USB-C"},{"sku":"MUG-42"}],
                "total":"145.47"}"#,
        ),
        other => ok(404, &json!({ "error": format!("no route for {other}") }).to_string()),
    }
}

/// A canned answer to a call.
type Answer = fn() -> Result<IncomingResponse, HttpError>;

/// `services`, except that calls whose URL contains `broken` get `failure`.
fn services_but(broken: &'static str, failure: Answer) {
    testing::on_http(move |req| if req.url.contains(broken) { failure() } else { services(req) });
}

fn home_request(user: &str) -> TestRequest {
    TestRequest::get(&format!("/api/mobile/home/{user}")).param("user_id", user)
}

fn answer(p: &Compose, req: &mut TestRequest) -> (u16, Value) {
    let d = testing::on_request(p, req);
    let reply = d.reply().expect("compose always answers");
    assert_eq!(reply.header_str("content-type"), Some("application/json"));
    (reply.status, serde_json::from_slice(&reply.body).expect("reply is JSON"))
}

#[test]
fn parallel_calls_merge_into_the_shape() {
    testing::reset();
    testing::on_http(services);
    let p = plugin(&home());
    assert_eq!(p.info(), Info::default(), "request hook only, no bodies");
    let (status, doc) = answer(&p, &mut home_request("1"));
    assert_eq!(status, 200);
    assert_eq!(
        doc,
        json!({
            "user": { "id": 1, "name": "Ada Lovelace", "email": "ada@example.com" },
            "recent_orders": [{ "id": 1010, "total": "50.80" }, { "id": 1009, "total": "112.30" }],
            "cart": { "items": 3, "total": "145.47" },
        })
    );
}

#[test]
fn send_all_gets_every_call_once_in_order() {
    testing::reset();
    testing::on_http(services);
    let _ = answer(&plugin(&home()), &mut home_request("1"));
    let sent = testing::http_sent();
    let urls: Vec<&str> = sent.iter().map(|r| r.url.as_str()).collect();
    assert_eq!(
        urls,
        vec!["upstream://users/users/1", "upstream://orders/orders?user=1&limit=3", "upstream://cart/carts/1"]
    );
    assert!(sent.iter().all(|r| r.method == "GET" && r.body.is_empty()));
    let timeouts: Vec<Option<Duration>> = sent.iter().map(|r| r.timeout).collect();
    assert_eq!(timeouts, vec![Some(Duration::from_millis(500)), None, None], "none: the grant's http_timeout");
}

#[test]
fn omit_leaves_the_field_out() {
    testing::reset();
    services_but("orders", || ok(503, "{}"));
    let (status, doc) = answer(&plugin(&home()), &mut home_request("1"));
    assert_eq!(status, 200);
    assert_eq!(doc.get("recent_orders"), None);
    assert_eq!(doc["user"]["id"], 1);
    let logs = testing::logs();
    assert!(logs.iter().any(|(l, m)| *l == Level::Warn && m.contains("call `orders` failed: status 503")), "{logs:?}");
}

#[test]
fn default_fills_in() {
    testing::reset();
    services_but("cart", || Err(HttpError::Timeout));
    let (status, doc) = answer(&plugin(&home()), &mut home_request("1"));
    assert_eq!(status, 200);
    assert_eq!(doc["cart"], json!({ "items": 0, "total": "0.00" }));
    assert_eq!(doc["recent_orders"][0]["id"], 1010);
}

#[test]
fn fail_is_a_502_naming_the_call() {
    testing::reset();
    services_but("users", || Err(HttpError::Connect("connection refused (127.0.0.1:9001)".into())));
    let (status, doc) = answer(&plugin(&home()), &mut home_request("1"));
    assert_eq!((status, doc), (502, json!({ "error": "call `user` failed: cannot connect", "call": "user" })));
    let logs = testing::logs();
    assert!(logs.iter().any(|(_, m)| m.contains("connection refused (127.0.0.1:9001)")), "detail in the log: {logs:?}");
}

/// Every failed call is logged, not only the first that fails the request
/// (another may be why it did).
#[test]
fn every_failed_call_is_logged() {
    testing::reset();
    testing::on_http(|_| ok(503, "{}"));
    let (status, doc) = answer(&plugin(&home()), &mut home_request("1"));
    assert_eq!((status, doc["call"].as_str()), (502, Some("user")), "the first call with fail answers");
    let logs = testing::logs();
    for said in [
        "call `user` failed: status 503; answering 502 (on_error = \"fail\")",
        "call `orders` failed: status 503; the request answers 502 for call `user`",
        "call `cart` failed: status 503; the request answers 502 for call `user`",
    ] {
        assert!(logs.iter().any(|(l, m)| *l == Level::Warn && m == said), "{said}: {logs:?}");
    }
}

#[test]
fn non_2xx_counts_as_a_failure() {
    testing::reset();
    services_but("users", || ok(500, r#"{"error":"boom"}"#));
    let (status, doc) = answer(&plugin(&home()), &mut home_request("1"));
    assert_eq!((status, doc["error"].as_str()), (502, Some("call `user` failed: status 500")));
}

#[test]
fn garbage_is_a_precise_502_and_logged() {
    testing::reset();
    services_but("users", || ok(200, "<html>oops</html>"));
    let (status, doc) = answer(&plugin(&home()), &mut home_request("1"));
    assert_eq!((status, doc), (502, json!({ "error": "call `user` failed: response is not JSON", "call": "user" })));
    let logs = testing::logs();
    assert!(
        logs.iter().any(|(l, m)| *l == Level::Warn && m.contains("call `user` failed: response is not JSON (")),
        "{logs:?}"
    );

    // With `omit`, the same garbage just drops the field.
    testing::reset();
    services_but("orders", || ok(200, "not json"));
    let (status, doc) = answer(&plugin(&home()), &mut home_request("1"));
    assert_eq!((status, doc.get("recent_orders")), (200, None));
}

#[test]
fn every_transport_error_is_named() {
    let cases: [(Answer, &str); 6] = [
        (|| Err(HttpError::NotGranted("`upstream://users/x` is not granted".into())), "not granted"),
        (|| Err(HttpError::Timeout), "timed out"),
        (|| Err(HttpError::TooLarge), "response too large"),
        (|| Err(HttpError::Unavailable("breaker open".into())), "unavailable"),
        (|| Err(HttpError::Protocol("reset".into())), "protocol error"),
        (|| Err(HttpError::InvalidRequest("bad".into())), "invalid request"),
    ];
    for (failure, reason) in cases {
        testing::reset();
        services_but("users", failure);
        let (status, doc) = answer(&plugin(&home()), &mut home_request("1"));
        assert_eq!((status, doc["error"].as_str()), (502, Some(format!("call `user` failed: {reason}").as_str())));
    }
}

#[test]
fn status_from_passes_on_the_calls_4xx() {
    testing::reset();
    testing::on_http(services);
    let (status, doc) = answer(&plugin(&home()), &mut home_request("42"));
    assert_eq!((status, doc), (404, json!({ "error": "no route for upstream://users/users/42" })));

    // Not JSON: a body of its own. 5xx: the call's policy, as usual.
    testing::reset();
    services_but("users", || ok(410, "gone"));
    let (status, doc) = answer(&plugin(&home()), &mut home_request("1"));
    assert_eq!((status, doc), (410, json!({ "error": "call `user` answered 410", "call": "user" })));
    testing::reset();
    services_but("users", || ok(503, "{}"));
    assert_eq!(answer(&plugin(&home()), &mut home_request("1")).0, 502);

    // Without status_from a 404 is a failure like any other.
    let mut config = home();
    config.as_object_mut().map(|c| c.remove("status_from"));
    testing::reset();
    testing::on_http(services);
    let (status, doc) = answer(&plugin(&config), &mut home_request("42"));
    assert_eq!((status, doc["error"].as_str()), (502, Some("call `user` failed: status 404")));
}

#[test]
fn forwards_the_chosen_headers_and_the_request_id() {
    testing::reset();
    testing::on_http(services);
    let mut req = home_request("1")
        .header("authorization", "Bearer t0k3n")
        .header("accept-language", "fr")
        .header("accept-language", "en;q=0.5")
        .header("cookie", "session=secret");
    req.id = "req-123".into();
    let _ = answer(&plugin(&home()), &mut req);
    let sent = testing::http_sent();
    assert_eq!(sent.len(), 3);
    for call in sent {
        let values = |name: &str| -> Vec<&[u8]> {
            call.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_slice()).collect()
        };
        assert_eq!(values("x-request-id"), vec![&b"req-123"[..]]);
        assert_eq!(values("authorization"), vec![&b"Bearer t0k3n"[..]]);
        assert_eq!(values("accept-language"), vec![&b"fr"[..], &b"en;q=0.5"[..]]);
        assert_eq!(values("accept"), vec![&b"application/json"[..]]);
        assert!(values("cookie").is_empty(), "only what forward_headers names");
    }
}

fn one_call(url: &str) -> Compose {
    plugin(&json!({ "calls": [{ "name": "c", "url": url }], "shape": { "c": "c" } }))
}

fn sent_url(p: &Compose, req: &mut TestRequest) -> String {
    testing::reset();
    testing::on_http(|_| ok(200, "{}"));
    let ctx = [("jwt.claims", r#"{"sub":"user 7","org":42,"admin":true,"roles":["a"]}"#), ("tenant", "acme/eu")];
    for (k, v) in ctx {
        testing::set_context(k, v);
    }
    let (status, doc) = answer(p, req);
    assert_eq!(status, 200, "{doc}");
    testing::http_sent().first().map(|r| r.url.clone()).unwrap_or_default()
}

#[test]
fn templates_fill_in_and_percent_encode() {
    let p = one_call(concat!(
        "upstream://users/t/{context.tenant}/u/{path.id}",
        "?sub={claim.sub}&org={claim.org}&admin={claim.admin}&q={query.q}&lang={header.accept-language}",
    ));
    let mut req = TestRequest::get("/x/a%20b%2Fc?q=caf%C3%A9+au+lait&x=1")
        .param("id", "a%20b%2Fc")
        .header("accept-language", "fr-CA,fr;q=0.9");
    assert_eq!(
        sent_url(&p, &mut req),
        concat!(
            "upstream://users/t/acme%2Feu/u/a%20b%2Fc",
            "?sub=user%207&org=42&admin=true&q=caf%C3%A9%20au%20lait&lang=fr-CA%2Cfr%3Bq%3D0.9"
        )
    );
}

#[test]
fn missing_template_values_are_400_and_nothing_is_sent() {
    let cases = [
        ("upstream://u/{path.id}", "missing path.id"),
        ("upstream://u/x?t={header.x-tenant}", "missing header.x-tenant"),
        ("upstream://u/x?q={query.q}", "missing query.q"),
        ("upstream://u/x?r={claim.roles}", "missing claim.roles"),
        ("upstream://u/x?e={claim.email}", "missing claim.email"),
        ("upstream://u/x?k={context.nope}", "missing context.nope"),
    ];
    for (url, message) in cases {
        testing::reset();
        testing::set_context("jwt.claims", r#"{"roles":["a"]}"#);
        testing::on_http(|_| ok(200, "{}"));
        let d = testing::on_request(&one_call(url), &mut TestRequest::get("/x?other=1"));
        let reply = d.reply().expect("answered");
        assert_eq!((reply.status, reply.body.as_slice()), (400, json!({ "error": message }).to_string().as_bytes()));
        assert!(testing::http_sent().is_empty(), "{url}: nothing sent");
    }

    testing::reset();
    let d = testing::on_request(&one_call("upstream://u/x?s={claim.sub}"), &mut TestRequest::get("/"));
    assert_eq!(d.reply().map(|r| r.status), Some(400), "no jwt.claims at all: the claim is missing");
}

#[test]
fn path_values_cannot_leave_their_segment() {
    let p = one_call("upstream://users/users/{header.x-user}");
    for (value, message) in [
        ("..", "invalid header.x-user"),
        ("", "missing header.x-user"),
        // `..%2Fadmin` is `../admin` to an upstream that decodes it first.
        ("../admin", "invalid header.x-user"),
        ("a\\b", "invalid header.x-user"),
        ("%2e%2e", "invalid header.x-user"),
    ] {
        testing::reset();
        let d = testing::on_request(&p, &mut TestRequest::get("/").header("x-user", value));
        let reply = d.reply().expect("answered");
        assert_eq!((reply.status, reply.body.as_slice()), (400, json!({ "error": message }).to_string().as_bytes()));
    }
    let mut req = TestRequest::get("/").header("x-user", "jo hn..x");
    assert_eq!(sent_url(&p, &mut req), "upstream://users/users/jo%20hn..x");
    let by_query = one_call("upstream://users/users/{query.id}");
    testing::reset();
    let d = testing::on_request(&by_query, &mut TestRequest::get("/?id=..%2F..%2Finternal"));
    assert_eq!(d.reply().map(|r| r.status), Some(400), "from the query too");
    // In the query a `/` is only data.
    let q = one_call("upstream://users/users?next={header.x-user}");
    let mut req = TestRequest::get("/").header("x-user", "../admin");
    assert_eq!(sent_url(&q, &mut req), "upstream://users/users?next=..%2Fadmin");
}

#[test]
fn bad_configs_are_refused_with_a_reason() {
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = home();
        change(&mut c);
        refused(&c)
    };
    assert!(refused(&json!({ "calls": [], "shape": {} })).starts_with("calls is empty"));
    assert!(with(&|c| c["calls"][1]["name"] = json!("user")).contains("calls[1].name: `user` is used by two calls"));
    assert!(with(&|c| c["calls"][0]["name"] = json!("a b")).contains("calls[0].name: `a b` is not a name"));
    assert!(with(&|c| c["calls"][0]["url"] = json!("upstream://{path.x}/y")).contains("calls[0].url:"));
    assert!(with(&|c| c["calls"][0]["timeout"] = json!("soon")).contains("calls[0].timeout: `soon` is not a duration"));
    assert!(with(&|c| c["calls"][0]["timeout"] = json!("0ms")).contains("above zero"));
    assert!(
        with(&|c| c["calls"][1]["on_error"] = json!("ignore")).contains("calls[1].on_error: `ignore` is not a policy")
    );
    assert!(with(&|c| c["calls"][1]["on_error"] = json!({ "defualt": 1 })).contains("unknown key `defualt`"));
    assert!(with(&|c| c["shape"]["extra"] = json!("payments")).contains("shape.extra: `payments` refers to call"));
    assert!(with(&|c| c["status_from"] = json!("payments")).contains("status_from: `payments` is not in `calls`"));
    assert!(with(&|c| c["forward_headers"] = json!(["Host"])).contains("`host` is set by the gateway"));
    assert!(with(&|c| c["forward_headers"] = json!(["content-length"])).contains("managed by the gateway"));
    assert!(with(&|c| c["forward_headers"] = json!(["bad header"])).contains("not a valid header name"));
    for spoofable in ["X-Forwarded-For", "forwarded", "x-forwarded-host", "x-real-ip", "x-forwarded-client-cert"] {
        let err = with(&|c| c["forward_headers"] = json!([spoofable]));
        assert!(err.contains("what the client says of where it came from"), "{spoofable}: {err}");
    }
    assert!(with(&|c| c["calls"][0]["method"] = json!("POST")).contains("unknown field `method`"));
    let unused = with(&|c| {
        c["shape"] = json!({ "user": "user", "cart": "cart" });
        c.as_object_mut().map(|c| c.remove("status_from"));
    });
    assert!(unused.contains("call `orders` is not used by `shape`"), "{unused}");
}

/// `send_all` sends at most 64 and fails the rest with `invalid-request`:
/// 65 calls would fail the 65th on every request, so the config is refused.
#[test]
fn more_calls_than_send_all_sends_are_refused() {
    let config = |n: usize| {
        let calls: Vec<Value> =
            (0..n).map(|i| json!({ "name": format!("c{i}"), "url": format!("upstream://users/users/{i}") })).collect();
        let shape: serde_json::Map<String, Value> = (0..n).map(|i| (format!("c{i}"), json!(format!("c{i}")))).collect();
        json!({ "calls": calls, "shape": shape })
    };
    assert_eq!(http::MAX_SEND_ALL, 64);
    let err = refused(&config(65));
    assert!(err.starts_with("calls: 65 calls, more than the 64"), "{err}");
    assert!(err.contains("use at most 64"), "{err}");
    assert!(refused(&config(200)).starts_with("calls: 200 calls"));

    // 64 is fine, and every one of them is answered.
    testing::reset();
    testing::on_http(|req| ok(200, &json!({ "url": req.url }).to_string()));
    let p = plugin(&config(64));
    let (status, doc) = answer(&p, &mut TestRequest::get("/"));
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc.as_object().map(serde_json::Map::len), Some(64));
    assert_eq!(doc["c63"]["url"], "upstream://users/users/63");
}

#[test]
fn a_call_used_only_by_status_from_is_fine() {
    let config = json!({
        "calls": [
            { "name": "user", "url": "upstream://users/users/{path.user_id}" },
            { "name": "cart", "url": "upstream://cart/carts/{path.user_id}" },
        ],
        "shape": { "cart": "cart" },
        "status_from": "user",
    });
    testing::reset();
    testing::on_http(services);
    let (status, doc) = answer(&plugin(&config), &mut home_request("1"));
    assert_eq!((status, doc["cart"]["total"].as_str()), (200, Some("145.47")));
}

#[test]
fn durations() {
    assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_timeout("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(parse_timeout("1m 30s"), Ok(Duration::from_secs(90)));
    assert!(parse_timeout("5").is_err());
    assert!(parse_timeout("0ms").is_err_and(|e| e.contains("above zero")));
}
