//! The `compose` plugin through the real gateway: one request fans out to
//! three upstreams in parallel over the `http` capability and comes back as
//! one JSON document; each failure policy, per-call timeouts, `status_from`,
//! missing template values, and a call to an upstream the plugin was not
//! granted. The upstreams are echo servers, so each field of the document
//! shows the path and headers its call arrived with.

use std::time::{Duration, Instant};

use serde_json::json;
use wasmgate_tests::upstream::{TestUpstream, echoed_header};
use wasmgate_tests::{TestGateway, get, get_request, get_with, send};

struct Services {
    users: TestUpstream,
    orders: TestUpstream,
    cart: TestUpstream,
}

impl Services {
    async fn start() -> Self {
        let (users, orders, cart) =
            tokio::join!(TestUpstream::echo("users"), TestUpstream::echo("orders"), TestUpstream::echo("cart"));
        Self { users, orders, cart }
    }

    /// The upstreams, the grant (`granted` upstream names) and a route on
    /// `/home/{user_id}` with no upstream of its own: compose answers.
    fn config(&self, granted: &str, plugin_config: &str) -> String {
        format!(
            r#"[upstreams.users]
endpoints = ["{users}"]

[upstreams.orders]
endpoints = ["{orders}"]

[upstreams.cart]
endpoints = ["{cart}"]

[plugin.compose]
grants = {{ http = [{granted}], http_timeout = "2s" }}

[[routes]]
name = "home"
match = {{ path = "/home/{{user_id}}", methods = ["GET"] }}
plugins = [{{ use = "compose", config = {{ {plugin_config} }} }}]
"#,
            users = self.users.addr,
            orders = self.orders.addr,
            cart = self.cart.addr,
        )
    }
}

const ALL: &str = r#""users", "orders", "cart""#;

/// The mobile home screen of the README, against echo servers: each field
/// holds (part of) the echo of its call.
const HOME: &str = r#"
  calls = [
    { name = "user", url = "upstream://users/users/{path.user_id}", timeout = "500ms", on_error = "fail" },
    { name = "orders", url = "upstream://orders/orders?user={path.user_id}&limit=3", on_error = "omit" },
    { name = "cart", url = "upstream://cart/carts/{path.user_id}", on_error = { default = { items = [], total = "0.00" } } },
  ],
  shape = {
    user = "user",
    recent_orders = "orders",
    cart = { path = "cart#/path", items = "count(cart#/items)", total = "cart#/total", headers = "count(cart#/headers)" },
  },
  forward_headers = ["authorization", "accept-language"],
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_merges_parallel_calls_into_one_document() {
    let s = Services::start().await;
    let gw = TestGateway::start(&s.config(ALL, HOME));
    let req = get_request(
        &gw.url("/home/42"),
        &[("authorization", "Bearer t0k3n"), ("accept-language", "fr"), ("cookie", "session=secret")],
    );
    let r = send(req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let id = r.header("x-request-id").expect("request id").to_owned();
    let doc = r.json();

    let user = &doc["user"];
    assert_eq!((user["upstream"].as_str(), user["path"].as_str()), (Some("users"), Some("/users/42")));
    assert_eq!(user["method"], "GET");
    assert_eq!(echoed_header(user, "authorization").as_deref(), Some("Bearer t0k3n"));
    assert_eq!(echoed_header(user, "accept-language").as_deref(), Some("fr"));
    assert_eq!(echoed_header(user, "x-request-id").as_deref(), Some(id.as_str()), "calls carry the request id");
    assert_eq!(echoed_header(user, "cookie"), None, "only forward_headers are forwarded");
    // HTTP/1.1 needs a `Host`: the upstream's name (there was none).
    assert_eq!(echoed_header(user, "host").as_deref(), Some("users"));

    let orders = &doc["recent_orders"];
    assert_eq!((orders["path"].as_str(), orders["query"].as_str()), (Some("/orders"), Some("user=42&limit=3")));
    // The echo has no items or total: those fields are left out.
    assert_eq!(doc["cart"]["path"], "/carts/42");
    assert!(doc["cart"]["headers"].as_u64().is_some_and(|n| n >= 3), "{doc}");
    assert_eq!(doc["cart"].get("total"), None);

    // One call each; the route's own upstream was not called beyond `user`.
    assert_eq!((s.users.hits(), s.orders.hits(), s.cart.hits()), (1, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_calls_run_in_parallel() {
    let s = Services::start().await;
    let gw = TestGateway::start(&s.config(
        ALL,
        r#"calls = [
    { name = "a", url = "upstream://users/slow/400" },
    { name = "b", url = "upstream://orders/slow/400" },
    { name = "c", url = "upstream://cart/slow/400" },
  ], shape = { a = "a#/path", b = "b#/path", c = "c#/path" }"#,
    ));
    let start = Instant::now();
    let r = get(&gw.url("/home/1")).await;
    let took = start.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({ "a": "/slow/400", "b": "/slow/400", "c": "/slow/400" }));
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_millis(1100), "three 400 ms calls one after another take 1.2 s; took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_applies_each_calls_failure_policy() {
    let s = Services::start().await;
    let gw = TestGateway::start(&s.config(ALL, HOME));

    // `omit`: orders answers 503, its field is left out.
    s.orders.set_failing(true);
    let r = get(&gw.url("/home/1")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json();
    assert!(doc.get("recent_orders").is_none(), "{doc}");
    assert_eq!(doc["user"]["path"], "/users/1");
    s.orders.set_failing(false);

    // `default`: cart answers 503, its default stands in.
    s.cart.fail_next(1);
    let doc = get(&gw.url("/home/1")).await.json();
    assert_eq!(doc["cart"], json!({ "items": 0, "total": "0.00" }));
    assert_eq!(doc["recent_orders"]["path"], "/orders");

    // `fail`: user answers 503, the whole request is a 502 naming it.
    s.users.set_failing(true);
    let r = get(&gw.url("/home/1")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json(), json!({ "error": "call `user` failed: status 503", "call": "user" }));
    s.users.set_failing(false);
    assert_eq!(get(&gw.url("/home/1")).await.status, 200, "and it recovers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cuts_a_slow_call_at_its_timeout() {
    let s = Services::start().await;
    let calls = |policy: &str| {
        format!(
            r#"calls = [
    {{ name = "user", url = "upstream://users/users/{{path.user_id}}" }},
    {{ name = "orders", url = "upstream://orders/slow/1500", timeout = "200ms", on_error = {policy} }},
  ], shape = {{ user = "user#/path", orders = "orders#/path" }}"#
        )
    };
    let gw = TestGateway::start(&s.config(ALL, &calls("\"omit\"")));
    let start = Instant::now();
    let r = get(&gw.url("/home/7")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({ "user": "/users/7" }), "the slow call is omitted");
    assert!(start.elapsed() < Duration::from_millis(1200), "did not wait for the slow call: {:?}", start.elapsed());
    drop(gw);

    let gw = TestGateway::start(&s.config(ALL, &calls("{ default = { path = \"(unavailable)\" } }")));
    assert_eq!(get(&gw.url("/home/7")).await.json(), json!({ "user": "/users/7", "orders": "(unavailable)" }));
    drop(gw);

    let gw = TestGateway::start(&s.config(ALL, &calls("\"fail\"")));
    let r = get(&gw.url("/home/7")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json(), json!({ "error": "call `orders` failed: timed out", "call": "orders" }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_status_from_passes_on_a_calls_404() {
    let s = Services::start().await;
    // The echo answers `/status/{code}` with that code: the user call's
    // status follows the client's path.
    let gw = TestGateway::start(&s.config(
        ALL,
        r#"calls = [
    { name = "user", url = "upstream://users/status/{path.user_id}" },
    { name = "cart", url = "upstream://cart/carts/{path.user_id}" },
  ], shape = { user = "user#/path", cart = "cart#/path" }, status_from = "user""#,
    ));
    let r = get(&gw.url("/home/404")).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["path"], "/status/404", "the call's own body");
    let r = get(&gw.url("/home/200")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({ "user": "/status/200", "cart": "/carts/200" }));
    let r = get(&gw.url("/home/503")).await;
    assert_eq!(r.status, 502, "a 5xx follows the call's policy (fail): {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_missing_template_value_is_400() {
    let s = Services::start().await;
    let gw = TestGateway::start(&s.config(
        ALL,
        r#"calls = [{ name = "user", url = "upstream://users/users/{path.user_id}?tenant={header.x-tenant}" }],
  shape = { user = "user" }"#,
    ));
    let r = get(&gw.url("/home/1")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json(), json!({ "error": "missing header.x-tenant" }));
    assert_eq!(s.users.hits(), 0, "nothing was called");

    let doc = get_with(&gw.url("/home/1"), &[("x-tenant", "acme & co")]).await.json();
    assert_eq!(doc["user"]["query"], "tenant=acme%20%26%20co", "percent-encoded into the query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_call_to_an_ungranted_upstream_is_refused() {
    let s = Services::start().await;
    let gw = TestGateway::start(&s.config(
        r#""users", "orders""#,
        HOME.replace("on_error = { default = { items = [], total = \"0.00\" } }", "on_error = \"fail\"").as_str(),
    ));
    let r = get(&gw.url("/home/1")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json(), json!({ "error": "call `cart` failed: not granted", "call": "cart" }));
    assert_eq!(s.cart.hits(), 0, "nothing reached the ungranted upstream");
}

/// A burst of requests leaves an async plugin's instances idle in its pool
/// (one a request in flight): with the engine's pool (`max_instances`, 64
/// here) full of them, a reload could make no instance for its own links
/// and was refused until a restart. The reload drops the idle ones first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_after_a_burst_finds_room_for_its_instances() {
    let s = Services::start().await;
    let calls = r#"calls = [{ name = "user", url = "upstream://users/slow/400" }], shape = { user = "user" }"#;
    let gw = TestGateway::start(&format!("{}{}", wasmgate_tests::ADMIN, s.config(ALL, calls)));
    let url = gw.url("/home/1");
    let burst: Vec<_> = (0..70)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    for r in burst {
        r.await.unwrap();
    }
    let series = r#"wasmgate_plugin_failures_total{plugin="compose",kind="pool_full"}"#;
    assert!(wasmgate_tests::sample(&gw.metrics().await, series).is_some_and(|n| n != "0"), "the pool was full");
    assert_eq!(gw.gateway.reload().map_err(|e| e.to_string()), Ok(1));
    assert_eq!(get(&gw.url("/home/1")).await.status, 200);
}
