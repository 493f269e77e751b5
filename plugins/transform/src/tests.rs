//! The hooks as the gateway calls them (through `wasmgate_sdk::testing`).

use serde_json::json;
use wasmgate_sdk::log::Level;
use wasmgate_sdk::testing::{self, TestRequest, TestResponse};

use super::*;

fn plugin(config: Value) -> Transform {
    testing::configure::<Transform>(&config.to_string()).expect("config accepted")
}

fn refused(config: Value) -> String {
    testing::configure::<Transform>(&config.to_string()).err().map(|e| e.to_string()).unwrap_or_default()
}

fn reply(d: &Decision) -> Option<(u16, Value)> {
    d.reply().map(|r| (r.status, serde_json::from_slice(&r.body).expect("reply is JSON")))
}

fn body_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("body is JSON")
}

fn post(path: &str, body: &str) -> TestRequest {
    TestRequest::new("POST", path).header("content-type", "application/json").body(body)
}

#[test]
fn request_headers_add_set_remove_rename() {
    let p = plugin(json!({ "request": { "headers": {
        "rename": { "X-Old": "x-new" },
        "remove": ["cookie"],
        "set": { "x-tenant": "acme" },
        "add": { "x-trace": "gw" },
    } } }));
    let mut req = TestRequest::get("/")
        .header("x-old", "1")
        .header("x-old", "2")
        .header("x-new", "stale")
        .header("cookie", "s=1")
        .header("x-tenant", "other")
        .header("x-trace", "client");
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(req.headers.get("x-old"), None);
    assert_eq!(req.headers.get_all("x-new"), vec![b"1".to_vec(), b"2".to_vec()], "every value moves, in order");
    assert_eq!(req.headers.get("cookie"), None);
    assert_eq!(req.headers.get_all("x-tenant"), vec![b"acme".to_vec()]);
    assert_eq!(req.headers.get_all("x-trace"), vec![b"client".to_vec(), b"gw".to_vec()]);
}

#[test]
fn renames_move_the_headers_as_they_arrived() {
    let p = plugin(
        json!({ "request": { "headers": { "rename": { "x-a": "x-b", "x-b": "x-a", "x-c": "x-d", "x-d": "x-e" } } } }),
    );
    let mut req = TestRequest::get("/").header("x-a", "a").header("x-b", "b").header("x-c", "c").header("x-d", "d");
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(req.headers.get_str("x-a").as_deref(), Some("b"), "a swap swaps");
    assert_eq!(req.headers.get_str("x-b").as_deref(), Some("a"));
    assert_eq!(req.headers.get("x-c"), None);
    assert_eq!(req.headers.get_str("x-d").as_deref(), Some("c"), "a chain moves each value one step");
    assert_eq!(req.headers.get_str("x-e").as_deref(), Some("d"));
}

#[test]
fn rename_of_an_absent_header_leaves_the_target_alone() {
    let p = plugin(json!({ "request": { "headers": { "rename": { "x-old": "x-new" } } } }));
    let mut req = TestRequest::get("/").header("x-new", "kept");
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(req.headers.get_str("x-new").as_deref(), Some("kept"));
}

#[test]
fn response_headers_add_set_remove_rename() {
    let p = plugin(json!({ "response": { "headers": {
        "rename": { "x-upstream": "x-served-by" },
        "remove": ["server"],
        "set": { "x-frame-options": "DENY" },
        "add": { "vary": "accept-language" },
    } } }));
    assert_eq!(p.info(), Info { on_request: false, on_response: true, request_body: false, response_body: false });
    let mut req = TestRequest::get("/");
    let mut resp = TestResponse::new(200).header("x-upstream", "u1").header("server", "nginx").header("vary", "accept");
    assert!(testing::on_response(&p, &mut req, &mut resp).is_continue());
    assert_eq!(resp.headers.get_str("x-served-by").as_deref(), Some("u1"));
    assert_eq!(resp.headers.get("x-upstream"), None);
    assert_eq!(resp.headers.get("server"), None);
    assert_eq!(resp.headers.get_str("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(resp.headers.get_all("vary"), vec![b"accept".to_vec(), b"accept-language".to_vec()]);
}

#[test]
fn header_edits_without_renames_are_fixed_and_need_no_call() {
    let p = plugin(json!({
        "request": { "headers": { "remove": ["cookie"], "set": { "x-tenant": "acme" } } },
        "response": { "headers": {
            "remove": ["server"],
            "set": { "x-frame-options": "DENY" },
            "add": { "vary": "accept-language" },
        } },
    }));
    assert_eq!(p.info(), Info { on_request: false, ..Info::default() }, "no hook at all");
    let fixed = p.fixed_headers();
    assert_eq!(
        fixed.request,
        [("cookie".into(), HeaderEdit::Remove), ("x-tenant".into(), HeaderEdit::Set(b"acme".to_vec()))]
    );
    assert_eq!(
        fixed.response,
        [
            ("server".into(), HeaderEdit::Remove),
            ("x-frame-options".into(), HeaderEdit::Set(b"DENY".to_vec())),
            ("vary".into(), HeaderEdit::Append(b"accept-language".to_vec())),
        ],
        "in the order remove, set, add"
    );
    // The gateway makes them, in order, on the way in and on the way back.
    let mut req = TestRequest::get("/").header("cookie", "s=1").header("x-tenant", "other");
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(req.headers.get("cookie"), None);
    assert_eq!(req.headers.get_str("x-tenant").as_deref(), Some("acme"));
    let mut resp = TestResponse::new(200).header("server", "nginx").header("vary", "accept");
    assert!(testing::on_response(&p, &mut req, &mut resp).is_continue());
    assert_eq!(resp.headers.get("server"), None);
    assert_eq!(resp.headers.get_str("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(resp.headers.get_all("vary"), vec![b"accept".to_vec(), b"accept-language".to_vec()]);
}

/// Response body rules read JSON: the upstream is asked for it
/// uncompressed (a browser's gzip answer passed through unedited).
#[test]
fn response_body_rules_ask_the_upstream_for_an_uncompressed_answer() {
    let p = plugin(json!({ "response": { "body": { "remove": ["/internal"] } } }));
    assert_eq!(p.fixed_headers().request, [("accept-encoding".to_owned(), HeaderEdit::Set(b"identity".to_vec()))]);
    let p = plugin(json!({ "request": { "body": { "remove": ["/internal"] } } }));
    assert!(p.fixed_headers().is_empty(), "only for the response's body");
}

#[test]
fn header_edits_beside_body_rules_stay_with_the_hooks() {
    let p = plugin(json!({
        "request": { "headers": { "set": { "content-type": "application/json" } }, "body": { "set": { "/a": 1 } } },
        "response": { "headers": { "set": { "x-b": "2" } }, "status_map": { "404": 410 } },
    }));
    assert!(p.fixed_headers().is_empty(), "a body rule or status map could read what they change");
    assert_eq!(p.info(), Info { on_request: true, on_response: true, request_body: true, response_body: false });
    let mut req = post("/", r#"{"a":0}"#);
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(req.headers.get_str("content-type").as_deref(), Some("application/json"));
    let mut resp = TestResponse::new(404);
    assert!(testing::on_response(&p, &mut req, &mut resp).is_continue());
    assert_eq!((resp.status, resp.headers.get_str("x-b").as_deref()), (410, Some("2")));
}

#[test]
fn path_rewrite_with_captures() {
    let p = plugin(json!({ "request": { "path": { "from": "/v1/users/{id}", "to": "/users/{id}" } } }));
    let mut req = TestRequest::get("/v1/users/42?x=1");
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!((req.path.as_str(), req.query.as_deref()), ("/users/42", Some("x=1")), "the query is kept");
    let mut other = TestRequest::get("/v1/orders/42");
    assert!(testing::on_request(&p, &mut other).is_continue());
    assert_eq!(other.path, "/v1/orders/42", "a path that does not match is left alone");
}

#[test]
fn query_edits() {
    let p = plugin(
        json!({ "request": { "query": { "set": { "version": "2" }, "remove": ["debug"], "add": { "src": "gw" } } } }),
    );
    let mut req = TestRequest::get("/search?q=a%20b&debug=1&version=1");
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(req.query.as_deref(), Some("q=a%20b&version=2&src=gw"));

    let only_remove = plugin(json!({ "request": { "query": { "remove": ["debug"] } } }));
    let mut req = TestRequest::get("/search?debug=1");
    assert!(testing::on_request(&only_remove, &mut req).is_continue());
    assert_eq!(req.query, None, "an emptied query is removed, not left as `?`");
}

#[test]
fn request_body_edits() {
    let p = plugin(json!({ "request": { "body": {
        "set": { "/meta/source": "gateway", "/items/-": { "sku": "gift" } },
        "remove": ["/password"],
        "rename": { "/userName": "/user_name" },
    } } }));
    assert_eq!(p.info(), Info { on_request: true, on_response: false, request_body: true, response_body: false });
    let mut req = post("/signup", r#"{"userName":"ada","password":"hunter2","items":[{"sku":"kb"}]}"#);
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(
        body_json(req.body.bytes()),
        json!({ "user_name": "ada", "meta": { "source": "gateway" }, "items": [{ "sku": "kb" }, { "sku": "gift" }] })
    );
}

#[test]
fn content_length_is_left_to_the_gateway() {
    // The plugin only replaces the body; the gateway recomputes the framing
    // (here the test double keeps the client's stale value, proving the
    // plugin never tried to set it — a managed header it may not touch).
    let p = plugin(json!({ "request": { "body": { "remove": ["/password"] } } }));
    let body = r#"{"user":"ada","password":"hunter2"}"#;
    let mut req = post("/", body).header("content-length", body.len().to_string());
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(req.body.bytes(), br#"{"user":"ada"}"#);
    assert_eq!(req.headers.get_str("content-length"), Some(body.len().to_string()));
    assert!(testing::logs().iter().all(|(level, _)| *level < Level::Warn), "{:?}", testing::logs());
}

#[test]
fn request_body_unchanged_keeps_its_bytes() {
    let p = plugin(json!({ "request": { "body": { "remove": ["/password"] } } }));
    let body = r#"{ "z": 1, "a": [1,2] }"#;
    let mut req = post("/", body);
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(req.body.bytes(), body.as_bytes(), "no edit applied: no re-serialisation");
}

#[test]
fn non_json_request_body_is_400() {
    let p = plugin(json!({ "request": { "body": { "set": { "/a": 1 } }, "headers": { "set": { "x-a": "1" } } } }));
    let mut req = TestRequest::new("POST", "/").header("content-type", "text/plain").body("name=ada");
    let d = testing::on_request(&p, &mut req);
    assert_eq!(reply(&d), Some((400, json!({ "error": "request body is not JSON" }))));
    assert_eq!(req.body.bytes(), b"name=ada");
}

#[test]
fn request_body_that_does_not_fit_is_400_naming_the_pointer() {
    let p = plugin(json!({ "request": { "body": { "set": { "/meta/source": "gateway" } } } }));
    let d = testing::on_request(&p, &mut post("/", r#"{"meta":"flat"}"#));
    assert_eq!(
        reply(&d),
        Some((400, json!({ "error": "request body does not fit the transform", "pointer": "/meta/source" })))
    );
}

#[test]
fn empty_request_body_passes_untouched() {
    let p = plugin(json!({ "request": { "body": { "set": { "/a": 1 } } } }));
    let mut req = TestRequest::get("/");
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert!(req.body.bytes().is_empty());
}

#[test]
fn oversized_request_body_is_413() {
    let p = plugin(json!({ "max_body": 16, "request": { "body": { "set": { "/a": 1 } } } }));
    let at_limit = r#"{"b":"123456789"}"#;
    assert_eq!(at_limit.len(), 17);
    let d = testing::on_request(&p, &mut post("/", at_limit));
    assert_eq!(reply(&d), Some((413, json!({ "error": "request body too large" }))));
    let small = r#"{"b":"12345678"}"#;
    assert!(testing::on_request(&p, &mut post("/", small)).is_continue(), "16 bytes is within the limit");
}

#[test]
fn default_max_body_is_one_mib() {
    let p = plugin(json!({ "request": { "body": { "set": { "/a": 1 } } } }));
    assert_eq!(p.max_body, 1 << 20);
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1 << 20));
    assert_eq!(reply(&testing::on_request(&p, &mut post("/", &big))).map(|r| r.0), Some(413));
}

#[test]
fn response_body_edits_and_status_map() {
    let p = plugin(json!({ "response": {
        "body": { "remove": ["/internal"], "set": { "/source": "gateway" }, "rename": { "/userName": "/user_name" } },
        "status_map": { "404": 410 },
    } }));
    assert_eq!(p.info(), Info { on_request: false, on_response: true, request_body: false, response_body: true });
    let mut req = TestRequest::get("/");
    let mut resp = TestResponse::new(404)
        .header("content-type", "application/json")
        .body(r#"{"userName":"ada","internal":{"shard":3}}"#);
    assert!(testing::on_response(&p, &mut req, &mut resp).is_continue());
    assert_eq!(resp.status, 410);
    assert_eq!(body_json(resp.body.bytes()), json!({ "user_name": "ada", "source": "gateway" }));

    let mut ok = TestResponse::new(200).body("{}");
    assert!(testing::on_response(&p, &mut req, &mut ok).is_continue());
    assert_eq!(ok.status, 200, "unmapped statuses pass");
}

#[test]
fn non_json_response_passes_unchanged_with_a_warning() {
    let p = plugin(json!({ "response": { "body": { "set": { "/a": 1 } }, "status_map": { "500": 502 } } }));
    let mut req = TestRequest::get("/");
    let mut resp = TestResponse::new(500).header("content-type", "text/html").body("<h1>oops</h1>");
    assert!(testing::on_response(&p, &mut req, &mut resp).is_continue());
    assert_eq!(resp.body.bytes(), b"<h1>oops</h1>");
    assert_eq!(resp.status, 502, "the other rules still apply");
    let logs = testing::logs();
    assert!(
        logs.iter().any(|(l, m)| *l == Level::Warn && m.contains("is not JSON") && m.contains("text/html")),
        "{logs:?}"
    );
}

#[test]
fn strict_turns_a_non_json_response_into_502() {
    let p = plugin(json!({ "strict": true, "response": { "body": { "set": { "/a/b": 1 } } } }));
    let mut req = TestRequest::get("/");
    let mut resp = TestResponse::new(200).body("plain text");
    let d = testing::on_response(&p, &mut req, &mut resp);
    assert_eq!(reply(&d), Some((502, json!({ "error": "upstream response is not JSON" }))));
    let mut resp = TestResponse::new(200).body(r#"{"a":"flat"}"#);
    let d = testing::on_response(&p, &mut req, &mut resp);
    assert_eq!(reply(&d), Some((502, json!({ "error": "upstream response does not fit the rule at /a/b" }))));
}

#[test]
fn oversized_response_body_is_502() {
    let p = plugin(json!({ "max_body": "1KiB", "response": { "body": { "set": { "/a": 1 } } } }));
    let mut req = TestRequest::get("/");
    let mut resp = TestResponse::new(200).body(vec![b'x'; 1025]);
    let d = testing::on_response(&p, &mut req, &mut resp);
    assert_eq!(reply(&d), Some((502, json!({ "error": "upstream response too large" }))));
}

#[test]
fn empty_response_body_is_left_alone() {
    let p = plugin(json!({ "strict": true, "response": { "body": { "set": { "/a": 1 } } } }));
    let mut resp = TestResponse::new(204);
    assert!(testing::on_response(&p, &mut TestRequest::get("/"), &mut resp).is_continue());
    assert!(resp.body.bytes().is_empty());
}

#[test]
fn only_the_needed_hooks_and_bodies_are_asked_for() {
    let p = plugin(json!({ "request": { "query": { "remove": ["debug"] } } }));
    assert_eq!(p.info(), Info::default(), "request hook only, nothing buffered");
    let p = plugin(json!({ "response": { "status_map": { "404": 410 } } }));
    assert_eq!(p.info(), Info { on_request: false, ..Info::both() });
    let p = plugin(
        json!({ "request": { "headers": { "set": { "x": "1" } } }, "response": { "body": { "set": { "/a": 1 } } } }),
    );
    assert_eq!(
        p.info(),
        Info { on_request: false, on_response: true, request_body: false, response_body: true },
        "the request header is fixed"
    );
}

#[test]
fn bad_configs_are_refused_with_a_reason() {
    assert!(refused(json!({})).starts_with("nothing to do"));
    assert!(refused(json!({ "request": { "headres": {} } })).contains("unknown field `headres`"));
    assert!(
        refused(json!({ "request": { "headers": { "set": { "content-length": "1" } } } }))
            .contains("request.headers.set: `content-length` is managed by the gateway")
    );
    assert!(
        refused(json!({ "response": { "headers": { "remove": ["bad name"] } } })).contains("not a valid header name")
    );
    assert!(refused(json!({ "request": { "headers": { "rename": { "x-a": "X-A" } } } })).contains("renamed to itself"));
    // What the gateway writes or takes out on a request: not a name to
    // write there (renamed to, set, added); removed, or on a response, it is.
    for edit in
        [json!({ "rename": { "x-prefix": "X-Forwarded-Prefix" } }), json!({ "add": { "x-real-ip": "192.0.2.1" } })]
    {
        let why = refused(json!({ "request": { "headers": edit } }));
        assert!(why.contains("is managed by the gateway: it writes or takes out that field"), "{why}");
    }
    let fine = json!({ "request": { "headers": { "remove": ["x-real-ip"] } }, "response": { "headers": { "set": { "x-real-ip": "1" } } } });
    assert!(testing::configure::<Transform>(&fine.to_string()).is_ok());
    assert!(refused(json!({ "request": { "headers": { "add": { "x-a": "a\nb" } } } })).contains("control character"));
    assert!(refused(json!({ "request": { "body": { "remove": ["password"] } } })).contains("must start with `/`"));
    assert!(
        refused(json!({ "request": { "path": { "from": "/a/{id}", "to": "/b/{x}" } } })).contains("does not capture")
    );
    assert!(
        refused(json!({ "request": { "path": { "from": "/café/{id}", "to": "/b/{id}" } } })).contains("never match")
    );
    assert!(refused(json!({ "response": { "status_map": { "four": 410 } } })).contains("`four` is not a status code"));
    assert!(
        refused(json!({ "response": { "status_map": { "404": 999 } } })).contains("not a final status (200..=599)")
    );
    assert!(
        refused(json!({ "max_body": "1MiB", "request": { "headers": { "set": { "x": "1" } } } }))
            .contains("there are none")
    );
    assert!(
        refused(json!({ "strict": true, "request": { "body": { "set": { "/a": 1 } } } }))
            .contains("no `response.body` rules")
    );
    assert!(
        refused(json!({ "max_body": "lots", "request": { "body": { "set": { "/a": 1 } } } })).starts_with("max_body:")
    );
}
