//! `cors` through the real gateway: preflights answered without the
//! upstream, CORS headers on actual responses (none for an origin that is
//! not allowed), and on an early 403 from a later plugin in the chain.

use http::Request;
use http_body_util::Full;
use wasmgate_tests::upstream::{TestUpstream, echoed_header};
use wasmgate_tests::{Reply, TestGateway, get, get_with, send};

fn route(up: &TestUpstream, plugins: &str) -> String {
    format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\n{plugins}\n]\n",
        up.addr
    )
}

const CORS: &str = r#"{ use = "cors", config = { allowed_origins = ["https://app.example.com", "https://*.example.org"], allowed_methods = ["GET", "POST", "PUT"], allowed_headers = ["content-type", "x-token"], allow_credentials = true, exposed_headers = ["x-upstream"], max_age = "1h" } },"#;

async fn preflight(gw: &TestGateway, path: &str, origin: &str, method: &str, headers: Option<&str>) -> Reply {
    let mut req =
        Request::options(gw.url(path)).header("origin", origin).header("access-control-request-method", method);
    if let Some(h) = headers {
        req = req.header("access-control-request-headers", h);
    }
    send(req.body(Full::default()).unwrap()).await
}

async fn get_from(gw: &TestGateway, path: &str, origin: &str) -> Reply {
    get_with(&gw.url(path), &[("origin", origin)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_is_answered_by_the_gateway() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(&up, CORS));

    let r = preflight(&gw, "/api/items", "https://app.example.com", "PUT", Some("Content-Type, X-Token")).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST, PUT"));
    assert_eq!(r.header("access-control-allow-headers"), Some("content-type, x-token"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-max-age"), Some("3600"));
    // `Origin` is the plugin's fixed `Vary` edit, made on its own answer too.
    assert_eq!(r.header_all("vary"), vec!["Access-Control-Request-Method, Access-Control-Request-Headers", "Origin"]);
    assert!(r.header("x-request-id").is_some(), "the gateway's own headers still apply");

    // Refused: an origin, a method, a header. 403 and no CORS headers.
    for r in [
        preflight(&gw, "/api/items", "https://evil-example.org", "GET", None).await,
        preflight(&gw, "/api/items", "https://app.example.com", "DELETE", None).await,
        preflight(&gw, "/api/items", "https://app.example.com", "GET", Some("x-admin")).await,
    ] {
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(r.header("access-control-allow-origin"), None);
    }
    assert_eq!(up.hits(), 0, "preflights never reach the upstream");

    // A plain OPTIONS is not a preflight: it is proxied.
    let r = send(Request::options(gw.url("/api/items")).body(Full::default()).unwrap()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["method"], "OPTIONS");
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_headers_go_on_actual_responses_for_allowed_origins_only() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(&up, CORS));

    let r = get_from(&gw, "/api/items", "https://shop.example.org").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://shop.example.org"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-expose-headers"), Some("x-upstream"));
    assert_eq!(r.header_all("vary"), vec!["Origin"]);
    assert_eq!(echoed_header(&r.json(), "origin").as_deref(), Some("https://shop.example.org"));

    // Not allowed: the request still goes through (CORS is not access
    // control), but without CORS headers the browser keeps the answer from
    // the page.
    for origin in ["https://evil-example.org", "https://example.org.evil.test", "https://example.org"] {
        let r = get_from(&gw, "/api/items", origin).await;
        assert_eq!(r.status, 200, "{origin}");
        assert_eq!(r.header("access-control-allow-origin"), None, "{origin}");
        assert_eq!(r.header("access-control-allow-credentials"), None, "{origin}");
        assert_eq!(r.header_all("vary"), vec!["Origin"], "{origin}");
    }

    // No Origin: no CORS headers, but `Vary: Origin` all the same.
    let r = get(&gw.url("/api/items")).await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header_all("vary"), vec!["Origin"]);
    assert_eq!(up.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_headers_reach_an_early_403_from_a_later_plugin() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(
        &up,
        &format!("{CORS}\n{{ use = \"deny\", config = {{ paths = [\"/admin/*\"] }} }},"),
    ));

    // deny answers in the request phase; the answer passes back through
    // cors, before it in the chain, which gets the headers cors left (and its
    // fixed `Vary`), so the page can read the 403.
    let r = get_from(&gw, "/admin/users", "https://app.example.com").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "forbidden");
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header_all("vary"), vec!["Origin"]);

    // The preflight for that path is answered by cors, before deny runs.
    let r = preflight(&gw, "/admin/users", "https://app.example.com", "GET", None).await;
    assert_eq!(r.status, 204);
    assert_eq!(up.hits(), 0);

    let r = get_from(&gw, "/api", "https://app.example.com").await;
    assert_eq!((r.status.as_u16(), r.header("access-control-allow-origin")), (200, Some("https://app.example.com")));
    assert_eq!(up.hits(), 1);
}
