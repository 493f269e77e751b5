//! The `transform` plugin through the real gateway: request headers, path
//! and query reach the upstream rewritten; JSON bodies are edited both ways
//! with the framing fixed by the gateway; statuses are mapped; oversized and
//! non-JSON bodies are refused (or passed, for a lenient response side).

use http::Request;
use http_body_util::Full;
use wasmgate_tests::upstream::{TestUpstream, echoed_header};
use wasmgate_tests::{TestGateway, get, get_with, send};

fn route(up: &TestUpstream, config: &str) -> String {
    format!(
        r#"[upstreams.u]
endpoints = ["{addr}"]

[[routes]]
name = "r"
upstream = "u"
plugins = [{{ use = "transform", config = {{ {config} }} }}]
"#,
        addr = up.addr
    )
}

fn post(url: &str, body: impl Into<bytes::Bytes>) -> Request<Full<bytes::Bytes>> {
    Request::post(url).header("content-type", "application/json").body(Full::new(body.into())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_rewrites_request_headers_path_and_query() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(
        &up,
        r#"request = {
  headers = { rename = { "x-old" = "x-new" }, remove = ["x-drop"], set = { "x-gateway" = "wasmgate" } },
  path = { from = "/v1/users/{id}", to = "/users/{id}" },
  query = { set = { "version" = "2" }, remove = ["debug"], add = { "tag" = "a b" } },
}"#,
    ));
    let r = get_with(&gw.url("/v1/users/42?debug=1&keep=yes"), &[("x-old", "moved"), ("x-drop", "1")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json();
    assert_eq!(doc["path"], "/users/42");
    assert_eq!(doc["query"], "keep=yes&version=2&tag=a%20b");
    assert_eq!(echoed_header(&doc, "x-new").as_deref(), Some("moved"));
    assert_eq!(echoed_header(&doc, "x-old"), None);
    assert_eq!(echoed_header(&doc, "x-drop"), None);
    assert_eq!(echoed_header(&doc, "x-gateway").as_deref(), Some("wasmgate"));

    // A path the pattern does not match goes through as it came.
    let doc = get(&gw.url("/v1/orders/7")).await.json();
    assert_eq!(doc["path"], "/v1/orders/7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_edits_the_request_json_body() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(
        &up,
        r#"request = { body = {
  set = { "/meta/source" = "gateway", "/roles/-" = "member" },
  remove = ["/password"],
  rename = { "/userName" = "/user_name" },
} }"#,
    ));
    let r = send(post(&gw.url("/signup"), r#"{"userName":"ada","password":"hunter2","roles":["admin"]}"#)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json();
    let sent = doc["body"].as_str().expect("echoed body");
    let body: serde_json::Value = serde_json::from_str(sent).expect("the upstream got JSON");
    assert_eq!(
        body,
        serde_json::json!({ "user_name": "ada", "meta": { "source": "gateway" }, "roles": ["admin", "member"] })
    );
    let length = echoed_header(&doc, "content-length").expect("framed with a length");
    assert_eq!(length, sent.len().to_string(), "the gateway fixed content-length for the new body");
    assert!(!sent.contains("hunter2"));

    // A GET without a body passes untouched.
    assert_eq!(get(&gw.url("/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_edits_the_response_body_and_maps_the_status() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(
        &up,
        r#"response = {
  body = { remove = ["/headers", "/version"], set = { "/gateway" = "wasmgate" }, rename = { "/upstream" = "/served_by" } },
  status_map = { "404" = 410 },
  headers = { remove = ["x-upstream"] },
}"#,
    ));
    let r = get(&gw.url("/status/404")).await;
    assert_eq!(r.status, 410, "{}", r.text());
    assert_eq!(r.header("x-upstream"), None);
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()));
    let doc = r.json();
    assert_eq!(doc["gateway"], "wasmgate");
    assert_eq!(doc["served_by"], "u");
    assert_eq!(doc["path"], "/status/404");
    assert!(doc.get("headers").is_none() && doc.get("upstream").is_none(), "{doc}");

    let ok = get(&gw.url("/fine")).await;
    assert_eq!(ok.status, 200, "unmapped statuses pass");
    assert_eq!(ok.json()["gateway"], "wasmgate");

    // A HEAD through the buffering plugin keeps the upstream's length
    // rather than the length of the (absent) body.
    let head = send(Request::head(gw.url("/fine")).body(Full::default()).unwrap()).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let length = head.header("content-length").and_then(|l| l.parse::<usize>().ok());
    assert!(length.is_some_and(|l| l > 0), "the upstream's content-length: {:?}", head.header("content-length"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_refuses_oversized_bodies() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(
        &up,
        r#"max_body = "1KiB", request = { body = { remove = ["/password"] } }, response = { body = { set = { "/a" = 1 } } }"#,
    ));
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2048));
    let r = send(post(&gw.url("/upload"), big)).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"], "request body too large");
    assert_eq!(up.hits(), 0, "refused before the upstream");

    // The upstream's 2 KiB answer is over the limit on the way back: 502.
    let r = get(&gw.url("/bytes/2048")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream response too large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_and_bodies_that_are_not_json() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(
        &up,
        r#"request = { body = { set = { "/a" = 1 } } }, response = { body = { set = { "/b" = 2 } } }"#,
    ));
    let req = Request::post(gw.url("/form"))
        .header("content-type", "text/plain")
        .body(Full::new(bytes::Bytes::from_static(b"name=ada")))
        .unwrap();
    let r = send(req).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({ "error": "request body is not JSON" }));
    assert_eq!(up.hits(), 0);

    // Lenient by default: a response that is not JSON passes unchanged...
    let r = get(&gw.url("/bytes/10")).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "x".repeat(10)));

    // ...and with `strict = true` it is a 502.
    let strict = TestGateway::start(&route(&up, r#"strict = true, response = { body = { set = { "/b" = 2 } } }"#));
    let r = get(&strict.url("/bytes/10")).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"], "upstream response is not JSON");
}
