use wasmgate_sdk::testing::{self, TestRequest, TestResponse};
use wasmgate_sdk::{Decision, HeaderEdit, Info, Plugin, Reply};

use super::Cors;

fn cors(json: &str) -> Cors {
    testing::configure::<Cors>(json).expect("config accepted")
}

fn refused(json: &str) -> String {
    testing::configure::<Cors>(json).err().map(|e| e.to_string()).unwrap_or_default()
}

fn preflight(origin: &str, method: &str) -> TestRequest {
    TestRequest::new("OPTIONS", "/api/items").header("origin", origin).header("access-control-request-method", method)
}

fn answer(p: &Cors, req: &mut TestRequest) -> Reply {
    match testing::on_request(p, req) {
        Decision::Respond(reply) => reply,
        Decision::Continue => panic!("expected the preflight to be answered"),
    }
}

fn cors_headers(reply: &Reply) -> Vec<&str> {
    reply.headers.iter().map(|(n, _)| n.as_str()).filter(|n| n.starts_with("access-control-")).collect()
}

/// The response phase for a request, returning the response as the client gets it.
fn respond(p: &Cors, mut req: TestRequest, resp: TestResponse) -> TestResponse {
    assert!(testing::on_request(p, &mut req).is_continue(), "actual requests go to the upstream");
    let mut resp = resp;
    assert!(testing::on_response(p, &mut req, &mut resp).is_continue());
    resp
}

const APP: &str = r#"{"allowed_origins":["https://app.example.com"],"allowed_methods":["GET","PUT"],
                      "allowed_headers":["X-Token","content-type"]}"#;

#[test]
fn allowed_preflight_is_answered_at_the_gateway() {
    let p = cors(APP);
    assert_eq!(p.info(), Info::default(), "a request hook only");
    let mut req =
        preflight("https://app.example.com", "PUT").header("access-control-request-headers", "x-token, Content-Type");
    let reply = answer(&p, &mut req);
    assert!(req.response_headers.is_empty(), "nothing left to add to its own answer: {:?}", req.response_headers);
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header_str("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(reply.header_str("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(reply.header_str("access-control-allow-headers"), Some("x-token, content-type"));
    assert_eq!(reply.header_str("access-control-max-age"), Some("600"), "default 10m");
    assert_eq!(reply.header_str("access-control-allow-credentials"), None);
    assert!(reply.body.is_empty());
    // As the client gets it: the fixed `Vary: Origin` is added to the
    // plugin's own answer too.
    let sent = testing::reply_sent(&p, &mut req, reply);
    assert_eq!(
        sent.headers.get_all("vary"),
        vec![b"Access-Control-Request-Method, Access-Control-Request-Headers".to_vec(), b"Origin".to_vec()]
    );
    assert_eq!(sent.headers.get_str("access-control-allow-origin").as_deref(), Some("https://app.example.com"));
}

#[test]
fn preflight_refusals_carry_no_cors_headers() {
    let p = cors(APP);
    for (mut req, why) in [
        (preflight("https://evil.example.org", "GET"), "origin"),
        (preflight("https://app.example.com", "DELETE"), "method"),
        (
            preflight("https://app.example.com", "GET").header("access-control-request-headers", "x-token, x-admin"),
            "header",
        ),
        (preflight("https://app.example.com", "GET").header("access-control-request-headers", "bad header"), "header"),
        (preflight("https://app.example.com", "G E T"), "method"),
    ] {
        let reply = answer(&p, &mut req);
        assert_eq!(reply.status, 403, "{why}");
        assert!(cors_headers(&reply).is_empty(), "{why}: {:?}", reply.headers);
        assert!(String::from_utf8_lossy(&reply.body).contains(&format!("{why} not allowed")), "{why}");
    }
}

#[test]
fn defaults_allow_simple_methods_and_echo_requested_headers() {
    let p = cors(r#"{"allowed_origins":["https://app.example.com"]}"#);
    let mut req = preflight("https://app.example.com", "POST")
        .header("access-control-request-headers", "Authorization")
        .header("access-control-request-headers", "x-b,,x-c");
    let reply = answer(&p, &mut req);
    assert_eq!(reply.header_str("access-control-allow-methods"), Some("GET, HEAD, POST"));
    assert_eq!(reply.header_str("access-control-allow-headers"), Some("authorization, x-b, x-c"));
    assert_eq!(answer(&p, &mut preflight("https://app.example.com", "PATCH")).status, 403);
    // Nothing asked, nothing to echo.
    let reply = answer(&p, &mut preflight("https://app.example.com", "GET"));
    assert_eq!(reply.header_str("access-control-allow-headers"), None);
}

#[test]
fn any_origin_and_any_method() {
    let p = cors(r#"{"allowed_origins":["*"],"allowed_methods":["*"],"max_age":"1h","preflight_status":200}"#);
    let reply = answer(&p, &mut preflight("https://anyone.test", "PURGE"));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header_str("access-control-allow-origin"), Some("*"));
    assert_eq!(reply.header_str("access-control-allow-methods"), Some("PURGE"));
    assert_eq!(reply.header_str("access-control-max-age"), Some("3600"));
    let resp = respond(&p, TestRequest::get("/").header("origin", "https://anyone.test"), TestResponse::new(200));
    assert_eq!(resp.headers.get_str("access-control-allow-origin").as_deref(), Some("*"));
}

#[test]
fn wildcard_subdomains() {
    let p = cors(r#"{"allowed_origins":["https://*.example.com","http://localhost:3000"]}"#);
    for origin in ["https://api.example.com", "https://a.b.example.com", "http://localhost:3000"] {
        let reply = answer(&p, &mut preflight(origin, "GET"));
        assert_eq!(reply.status, 204, "{origin}");
        assert_eq!(reply.header_str("access-control-allow-origin"), Some(origin), "the specific origin, not *");
    }
    for origin in [
        "https://evil-example.com",
        "https://example.com.evil.org",
        "https://example.com",
        "http://api.example.com",
        "https://api.example.com:444",
        "http://localhost:3001",
        "null",
    ] {
        assert_eq!(answer(&p, &mut preflight(origin, "GET")).status, 403, "{origin}");
        let resp = respond(&p, TestRequest::get("/").header("origin", origin), TestResponse::new(200));
        assert_eq!(resp.headers.get("access-control-allow-origin"), None, "{origin}");
    }
}

#[test]
fn credentials_reflect_the_origin_and_refuse_star() {
    let p = cors(
        r#"{"allowed_origins":["https://*.example.com"],"allow_credentials":true,"exposed_headers":["X-Total","etag"]}"#,
    );
    let reply = answer(&p, &mut preflight("https://app.example.com", "GET"));
    assert_eq!(reply.header_str("access-control-allow-credentials"), Some("true"));
    assert_eq!(reply.header_str("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(reply.header_str("access-control-expose-headers"), None, "exposed headers are for actual responses");

    let resp = respond(&p, TestRequest::get("/").header("origin", "https://app.example.com"), TestResponse::new(200));
    assert_eq!(resp.headers.get_str("access-control-allow-origin").as_deref(), Some("https://app.example.com"));
    assert_eq!(resp.headers.get_str("access-control-allow-credentials").as_deref(), Some("true"));
    assert_eq!(resp.headers.get_str("access-control-expose-headers").as_deref(), Some("x-total, etag"));

    assert!(refused(r#"{"allowed_origins":["*"],"allow_credentials":true}"#).contains("cannot be combined"));
    assert!(
        refused(r#"{"allowed_origins":["https://a.test"],"allow_credentials":true,"exposed_headers":["*"]}"#)
            .contains("not a wildcard when credentials")
    );
}

#[test]
fn actual_requests_get_cors_headers_and_vary_is_merged() {
    let p = cors(APP);
    let origin = "https://app.example.com";
    // Existing Vary values are kept; Origin is added.
    let resp = respond(
        &p,
        TestRequest::get("/").header("origin", origin),
        TestResponse::new(200).header("vary", "Accept-Encoding").header("vary", "Accept-Language"),
    );
    assert_eq!(resp.headers.get_str("access-control-allow-origin").as_deref(), Some(origin));
    assert_eq!(
        resp.headers.get_all("vary"),
        vec![b"Accept-Encoding".to_vec(), b"Accept-Language".to_vec(), b"Origin".to_vec()]
    );
    assert_eq!(resp.headers.get("access-control-expose-headers"), None);

    let resp = respond(
        &p,
        TestRequest::get("/").header("origin", origin),
        TestResponse::new(200).header("vary", "accept, origin"),
    );
    // The plugin leaves Vary for the response without reading it: a
    // response that varies on Origin already names it twice, which means
    // the same to a cache.
    assert_eq!(
        resp.headers.get_all("vary"),
        vec![b"accept, origin".to_vec(), b"Origin".to_vec()],
        "appended, not merged"
    );
    // The request hook leaves the CORS headers (there is no response hook);
    // `Vary: Origin` is a fixed edit, which the gateway makes without a call.
    let mut req = TestRequest::get("/").header("origin", origin);
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert_eq!(req.response_header_str("access-control-allow-origin").as_deref(), Some(origin));
    assert_eq!(req.response_header_str("vary"), None);
    assert_eq!(p.fixed_headers().response, [("vary".to_owned(), HeaderEdit::Append(b"Origin".to_vec()))]);
    assert!(p.fixed_headers().request.is_empty());
}

/// For an allowed origin the plugin's policy replaces the upstream's: its
/// `-Allow-Credentials: true` would let the page read answers made with the
/// user's cookies though `allow_credentials` is off.
#[test]
fn allowed_origin_drops_the_upstream_s_credentials_and_exposed_headers() {
    let p = cors(APP);
    let resp = respond(
        &p,
        TestRequest::new("GET", "/").header("origin", "https://app.example.com"),
        TestResponse::new(200)
            .header("access-control-allow-credentials", "true")
            .header("access-control-expose-headers", "x-secret"),
    );
    assert_eq!(resp.headers.get_str("access-control-allow-origin").as_deref(), Some("https://app.example.com"));
    assert_eq!(resp.headers.get("access-control-allow-credentials"), None);
    assert_eq!(resp.headers.get("access-control-expose-headers"), None);
}

#[test]
fn disallowed_origin_proceeds_without_cors_headers() {
    let p = cors(APP);
    // The upstream's own CORS headers do not leak past the gateway's policy.
    let resp = respond(
        &p,
        TestRequest::new("POST", "/").header("origin", "https://evil.test"),
        TestResponse::new(201)
            .header("access-control-allow-origin", "*")
            .header("access-control-allow-credentials", "true"),
    );
    assert_eq!(resp.status, 201);
    assert_eq!(resp.headers.get("access-control-allow-origin"), None);
    assert_eq!(resp.headers.get("access-control-allow-credentials"), None);
    assert_eq!(resp.headers.get_str("vary").as_deref(), Some("Origin"));
}

#[test]
fn an_error_from_a_later_plugin_gets_cors_headers() {
    // The gateway sets what this plugin's request hook left on any response
    // that comes back through it, such as an early 401 from a later plugin.
    let p = cors(APP);
    let resp = respond(
        &p,
        TestRequest::get("/").header("origin", "https://app.example.com"),
        TestResponse::new(401).header("content-type", "application/json"),
    );
    assert_eq!(resp.status, 401);
    assert_eq!(resp.headers.get_str("access-control-allow-origin").as_deref(), Some("https://app.example.com"));
}

#[test]
fn options_without_preflight_headers_is_not_a_preflight() {
    let p = cors(APP);
    assert!(testing::on_request(&p, &mut TestRequest::new("OPTIONS", "/")).is_continue());
    let mut only_origin = TestRequest::new("OPTIONS", "/").header("origin", "https://app.example.com");
    assert!(testing::on_request(&p, &mut only_origin).is_continue());
    let mut only_method = TestRequest::new("OPTIONS", "/").header("access-control-request-method", "GET");
    assert!(testing::on_request(&p, &mut only_method).is_continue());
    // A GET with preflight-looking headers is still an actual request.
    let mut get = TestRequest::get("/")
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "PUT");
    assert!(testing::on_request(&p, &mut get).is_continue());
    // The plain OPTIONS' response is an actual response: ACAO for an allowed origin.
    let resp = respond(&p, only_origin, TestResponse::new(200));
    assert_eq!(resp.headers.get_str("access-control-allow-origin").as_deref(), Some("https://app.example.com"));
}

#[test]
fn requests_without_origin_get_no_cors_headers() {
    let p = cors(APP);
    let resp = respond(&p, TestRequest::get("/"), TestResponse::new(200).header("x-upstream", "u"));
    let cors: Vec<String> =
        resp.headers.all().into_iter().map(|(n, _)| n).filter(|n| n.starts_with("access-control-")).collect();
    assert!(cors.is_empty(), "{cors:?}");
    assert_eq!(resp.headers.get_str("x-upstream").as_deref(), Some("u"));
    // Only Vary: a shared cache must not hand this response to a cross-origin request.
    assert_eq!(resp.headers.get_str("vary").as_deref(), Some("Origin"));
}

#[test]
fn bad_configs_are_refused_with_a_reason() {
    assert!(refused("{}").contains("missing field `allowed_origins`"));
    assert!(refused(r#"{"allowed_origins":[]}"#).contains("allowed_origins is empty"));
    assert!(refused(r#"{"allowed_origins":["*","https://a.test"]}"#).contains("already allows every origin"));
    assert!(refused(r#"{"allowed_origins":["https://a.test/app"]}"#).contains("not an origin"));

    assert!(refused(r#"{"allowed_origins":["https://*.com"]}"#).contains("top-level domain"));
    assert!(
        refused(r#"{"allowed_origins":["*"],"allowed_methods":["GET","bad method"]}"#).contains("not a valid name")
    );
    assert!(
        refused(r#"{"allowed_origins":["*"],"allowed_headers":["*","x-a"]}"#).contains("already allows everything")
    );
    assert!(refused(r#"{"allowed_origins":["*"],"max_age":"soon"}"#).contains("max_age: `soon` is not a duration"));
    assert!(refused(r#"{"allowed_origins":["*"],"preflight_status":403}"#).contains("not a success status"));
    assert!(refused(r#"{"allowed_origins":["*"],"allow_origin":["x"]}"#).contains("unknown field `allow_origin`"));
}

#[test]
fn origins_match_in_any_case_and_are_echoed_as_sent() {
    let p = cors(APP);
    for origin in ["https://app.example.com", "HTTPS://App.Example.COM"] {
        let mut req = preflight(origin, "GET");
        let reply = answer(&p, &mut req);
        assert_eq!(reply.status, 204, "{origin}");
        assert_eq!(reply.header_str("access-control-allow-origin"), Some(origin));
    }
    let mut req = preflight("https://APP.example.org", "GET");
    assert_eq!(answer(&p, &mut req).status, 403, "another host in any case is still another host");
}

/// Every answer — actual requests, preflights, refusals — depends on the
/// method and the three CORS request headers alone (`depends_on`), so the
/// gateway keeps each.
#[test]
fn every_answer_is_one_the_gateway_keeps() {
    let p = cors(r#"{"allowed_origins":["https://app.example.com"],"allow_credentials":true}"#);
    let cases = [
        TestRequest::get("/").header("origin", "https://app.example.com"),
        TestRequest::get("/").header("origin", "https://evil.example"),
        TestRequest::get("/"),
        preflight("https://app.example.com", "PUT").header("access-control-request-headers", "x-a, x-b"),
        preflight("https://evil.example", "GET"),
    ];
    for mut req in cases {
        let (_, kept) = testing::on_request_kept(&p, &mut req);
        assert_eq!(kept, Ok(()));
    }
}
