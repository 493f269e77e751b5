//! Plugins through the real gateway: continue, modify, respond, chain order,
//! both phases, isolation modes, and plugins that fail — each failure
//! confined to its own request.

use std::time::{Duration, Instant};

use http::Request;
use http_body_util::Full;
use wasmgate_tests::upstream::{TestUpstream, echoed_header, echoed_headers};
use wasmgate_tests::{ADMIN, TestGateway, get, get_request, get_with, raw, sample, send};

fn route(up: &TestUpstream, plugins: &str, extra: &str) -> String {
    format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\n{extra}\nplugins = [\n{plugins}\n]\n",
        up.addr
    )
}

/// A plugin's `Host` reaches the upstream whatever the client spoke: an
/// HTTP/2 client's authority (and an absolute-form target) wrote over it.
/// Without an edit, the upstream gets the host that was routed; with it
/// removed, the upstream's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_s_host_reaches_the_upstream_from_http2_clients_too() {
    use http_body_util::BodyExt;
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n\n\
         [[routes]]\nmatch = {{ prefix = \"/edit\" }}\nupstream = \"u\"\n\
         plugins = [{{ use = \"transform\", config = {{ request = {{ headers = {{ set = {{ host = \"bucket.internal\" }} }} }} }} }}]\n\n\
         [[routes]]\nmatch = {{ prefix = \"/keep\" }}\nupstream = \"u\"\n\
         plugins = [{{ use = \"noop\" }}]\n\n\
         [[routes]]\nmatch = {{ prefix = \"/drop\" }}\nupstream = \"u\"\n\
         plugins = [{{ use = \"add-header\", config = {{ request = {{ remove = [\"host\"] }} }} }}]\n",
        up.addr
    ));
    // A plugin that removes `Host`: HTTP/1.1 must carry one (without, the
    // upstream answered 400); the upstream's name, as for a request that
    // named no host.
    let dropped = get(&gw.url("/drop")).await.json();
    assert_eq!(echoed_headers(&dropped, "host"), ["u"]);
    assert_eq!(echoed_headers(&dropped, "x-forwarded-host"), [gw.addr().to_string()], "the client's host");
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<bytes::Bytes>>();
    for (path, host) in [("/edit", "bucket.internal"), ("/keep", &*gw.addr().to_string())] {
        let http1 = get(&gw.url(path)).await.json();
        assert_eq!(echoed_headers(&http1, "host"), [host], "HTTP/1 {path}");
        let resp = h2.request(Request::get(gw.url(path)).body(Full::default()).unwrap()).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echoed_headers(&doc, "host"), [host], "HTTP/2 {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_header_modifies_request_and_response() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(
        &up,
        r#"{ use = "add-header", config = { request = { set = { "x-hello" = "world" }, remove = ["x-drop"] }, response = { set = { "x-frame-options" = "DENY" }, remove = ["x-upstream"] } } },"#,
        "",
    ));
    let r = get_with(&gw.url("/"), &[("x-drop", "1"), ("x-hello", "old")]).await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(echoed_headers(&doc, "x-hello"), vec!["world"]);
    assert_eq!(echoed_header(&doc, "x-drop"), None);
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-upstream"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_calls_are_timed_per_plugin_and_phase() {
    let up = TestUpstream::echo("u").await;
    let plugins = r#"{ use = "transform", config = { response = { headers = { rename = { "x-upstream" = "x-seen" } } } } },
  { use = "deny", config = { paths = ["/no"] } },"#;
    let gw = TestGateway::start(&format!("{ADMIN}{}", route(&up, plugins, "")));
    // Three paths: deny's outcome for a path it saw is kept (it declares
    // the facts it depends on), and a kept one is given without a call.
    for i in 0..3 {
        assert_eq!(get(&gw.url(&format!("/yes/{i}"))).await.status, 200);
    }
    assert_eq!(get(&gw.url("/no")).await.status, 403);
    let text = gw.metrics().await;
    let count = |plugin: &str, phase: &str| {
        sample(&text, &format!(r#"wasmgate_plugin_call_duration_seconds_count{{plugin="{plugin}",phase="{phase}"}}"#))
    };
    // deny's request hook ran four times; it has no response hook, so its
    // response series (made when the route was configured) stays at 0.
    // transform's response hook ran for the refused request too.
    assert_eq!(count("deny", "request"), Some("4"), "{text}");
    assert_eq!(count("deny", "response"), Some("0"), "{text}");
    assert_eq!(count("transform", "response"), Some("4"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_responds_without_touching_the_upstream() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(
        &up,
        r#"{ use = "deny", config = { paths = ["/admin/*", "/debug"], headers = { "x-debug" = "*", "x-env" = "prod" }, status = 403, message = "not here" } },"#,
        "",
    ));
    let r = get(&gw.url("/admin/users")).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "not here");
    assert!(r.header("x-request-id").is_some());
    assert_eq!(get_with(&gw.url("/ok"), &[("x-debug", "1")]).await.status, 403);
    assert_eq!(get(&gw.url("/debug/")).await.status, 403, "an exact path with a trailing slash");
    // A header sent twice: any of its values denies (the first was read alone).
    let twice =
        raw(gw.addr(), b"GET /ok HTTP/1.1\r\nhost: x\r\nx-env: dev\r\nx-env: prod\r\nconnection: close\r\n\r\n");
    assert!(twice.await.starts_with("HTTP/1.1 403"));
    assert_eq!(up.hits(), 0);
    assert_eq!(get(&gw.url("/ok")).await.status, 200);
    assert_eq!(up.hits(), 1);
}

/// The SDK reads a standard method as a `method-kind` (WIT 0.1.3) and any
/// other as text: both reach the plugin as the method's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_see_standard_and_extension_methods_by_name() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(
        &up,
        r#"{ use = "deny", config = { methods = ["delete", "PURGE"], status = 405, message = "not this method" } },"#,
        "",
    ));
    for (method, status) in [("DELETE", 405), ("PURGE", 405), ("GET", 200), ("PATCH", 200), ("PURGEALL", 200)] {
        let req = Request::builder().method(method).uri(gw.url("/x")).body(Full::default()).unwrap();
        assert_eq!(send(req).await.status, status, "{method}");
    }
    assert_eq!(up.hits(), 3, "only the allowed methods reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_upstream_is_answered_by_its_plugins_or_502() {
    let gw = TestGateway::start(
        r#"[[routes]]
name = "mock"
plugins = [
  { use = "add-header", config = { response = { set = { "x-seen" = "1" } } } },
  { use = "deny", config = { paths = ["/denied"], status = 418, message = "answered by the plugin" } },
]
"#,
    );
    let r = get(&gw.url("/denied")).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.json()["error"], "answered by the plugin");
    assert_eq!(r.header("x-seen"), Some("1"));
    // Let through with nowhere to go: a clear 502, not a crash or a hang.
    let r = get(&gw.url("/other")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "no upstream for this route");

    // Without plugins the route could answer nothing: refused at load.
    let err = TestGateway::try_start("", "[[routes]]\nname = \"empty\"\n").err().map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("the route has no upstream and no plugins to answer its requests")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_runs_in_order_and_responses_in_reverse() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(
        &up,
        r#"
  { use = "add-header", config = { request = { append = { "x-order" = "first" } }, response = { append = { "x-order" = "first" } } } },
  { use = "add-header", config = { request = { append = { "x-order" = "second" } }, response = { append = { "x-order" = "second" } } } },
  { use = "noop" },
"#,
        "",
    ));
    let r = get(&gw.url("/")).await;
    assert_eq!(echoed_headers(&r.json(), "x-order"), vec!["first", "second"]);
    assert_eq!(r.header_all("x-order"), vec!["second", "first"], "response hooks run last plugin first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_reply_still_passes_the_earlier_plugins_response_hooks() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(
        &up,
        r#"
  { use = "add-header", config = { response = { set = { "x-cors-ish" = "yes" } } } },
  { use = "deny", config = { paths = ["/blocked"] } },
  { use = "add-header", config = { response = { set = { "x-after-deny" = "yes" } } } },
"#,
        "",
    ));
    let r = get(&gw.url("/blocked")).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-cors-ish"), Some("yes"), "plugins before the replier see the reply");
    assert_eq!(r.header("x-after-deny"), None, "plugins after it never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_is_shared_along_the_chain() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(
        &up,
        r#"{ use = "chaos", config = { mode = "context" } }, { use = "chaos", config = { mode = "context" } },"#,
        "",
    ));
    let r = get(&gw.url("/")).await;
    // The second plugin saw what the first one set; the first saw nothing.
    assert_eq!(echoed_header(&r.json(), "x-context").as_deref(), Some("chaos=seen"));
    // And nothing leaks into the next request.
    let r = get(&gw.url("/")).await;
    assert_eq!(echoed_header(&r.json(), "x-context").as_deref(), Some("chaos=seen"));
}

/// A plugin cannot grow the gateway's header maps without bound (memory its
/// own limit does not count): past 1 024 headers, edits are refused and the
/// request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_adding_thousands_of_headers_is_refused_past_the_limit() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(
        &up,
        r#"{ use = "chaos", config = { mode = "flood" } }, { use = "chaos", config = { mode = "flood", phase = "response" } },"#,
        "",
    ));
    // Raw, as a client library would refuse a head this large.
    let text = raw(gw.addr(), b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").await;
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head:.200}");
    // Left for the response by the first plugin's request hook: 1 024 of
    // 2 000 accepted.
    let echoed: serde_json::Value = serde_json::from_str(body).expect("the upstream's echo");
    assert_eq!(echoed_header(&echoed, "x-flood-accepted").as_deref(), Some("1024"));
    // The second plugin's response hook stopped when the response held
    // 1 024 headers; the first plugin's 1 024 (the same names) were set
    // after it.
    let flood = head.lines().filter(|l| l.starts_with("x-flood-")).count();
    assert_eq!(flood, 1024);
}

/// The WIT is versioned: 0.1.1 added `set-response-header` and 0.1.2 the
/// fixed headers, so a plugin built against 0.1.0 (without the SDK, from
/// the 0.1.0 WIT as released) still loads and both its hooks run, beside
/// one built against 0.1.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_wit_0_1_0_still_runs() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(
        &up,
        r#"{ use = "wit-0-1-0" }, { use = "add-header", config = { name = "x-sdk", value = "0.1.2" } },"#,
        "",
    ));
    let r = get(&gw.url("/")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-wit"), Some("0.1.0"), "its response hook ran");
    let doc = r.json();
    assert_eq!(echoed_header(&doc, "x-wit").as_deref(), Some("0.1.0"), "its request hook ran");
    assert_eq!(echoed_header(&doc, "x-sdk").as_deref(), Some("0.1.2"));
}

/// A plugin built against 0.1.4 (from that WIT as released, before
/// `request.client-certificate`) still loads and runs, its 0.1.3 and 0.1.4
/// imports (`method-kind`, `setup.memoize-request`) linked to the 0.1.6
/// gateway's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_wit_0_1_4_still_runs() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(&up, r#"{ use = "wit-0-1-4" },"#, ""));
    for _ in 0..2 {
        let r = get(&gw.url("/")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            echoed_header(&r.json(), "x-wit").as_deref(),
            Some("0.1.4 get"),
            "its request hook ran, or was kept"
        );
    }
}

/// A hop-by-hop field a plugin may set (`Proxy-Authorization`: it may not
/// set `Connection` or the framing fields) is this hop's, as a client's is:
/// it never reaches the upstream, whether a fixed edit or a hook set it, on
/// a request whose client sent no hop-by-hop field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_plugins_set_never_reach_the_upstream() {
    let up = TestUpstream::echo("u").await;
    let fixed = r#"{ use = "add-header", config = { request = { set = { "proxy-authorization" = "Basic Zm9vOmJhcg==", "x-kept" = "1" } } } },"#;
    let hook = r#"{ use = "transform", config = { request = { headers = { rename = { "x-creds" = "proxy-authorization", "x-old" = "x-kept" } } } } },"#;
    for plugins in [fixed, hook] {
        let gw = TestGateway::start(&route(&up, plugins, ""));
        let r = get_with(&gw.url("/"), &[("x-creds", "Basic Zm9vOmJhcg=="), ("x-old", "1")]).await;
        assert_eq!(r.status, 200, "{plugins}: {}", r.text());
        let doc = r.json();
        assert_eq!(echoed_header(&doc, "x-kept").as_deref(), Some("1"), "{plugins}: the plugin ran");
        assert_eq!(echoed_header(&doc, "proxy-authorization"), None, "{plugins}");
    }
}

/// `Via` is in the response a plugin chain sees, so a plugin can remove it;
/// the request id is written after the chain, always.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_may_remove_via_but_not_the_request_id() {
    let up = TestUpstream::echo("u").await;
    // The same chain removing something else: the response has its `Via`.
    let keeping = r#"{ use = "transform", config = { response = { headers = { remove = ["x-upstream"] } } } },"#;
    let gw = TestGateway::start(&route(&up, keeping, ""));
    let r = get(&gw.url("/")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("via"), Some("1.1 wasmgate"));
    // Removing it: as a fixed edit, and from a response hook (renames make
    // transform's edits a hook's).
    let fixed = r#"{ use = "transform", config = { response = { headers = { remove = ["via", "x-request-id"] } } } },"#;
    let hook = r#"{ use = "transform", config = { response = { headers = { rename = { "x-upstream" = "x-up" }, remove = ["via", "x-request-id"] } } } },"#;
    for plugins in [fixed, hook] {
        let gw = TestGateway::start(&route(&up, plugins, ""));
        let r = get(&gw.url("/")).await;
        assert_eq!(r.status, 200, "{plugins}: {}", r.text());
        assert_eq!(r.header("via"), None, "{plugins}");
        assert_eq!(r.header("x-request-id").map(str::len), Some(32), "{plugins}");
        assert_eq!(r.header("x-up").is_some(), plugins == hook, "{plugins}: the hook ran");
    }
    // A `Via` a request hook left for the response replaces the list, this
    // hop's entry with it, as a fixed edit would.
    let gw = TestGateway::start(&route(&up, r#"{ use = "chaos", config = { mode = "leave-via" } },"#, ""));
    let r = get(&gw.url("/")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header_all("via"), ["1.1 chaos"]);
}

/// Header edits a plugin declared fixed when configured (add-header's, and
/// transform's without renames) are made by the gateway at the plugin's
/// place in the chain — on the way in, and on every response that passes
/// back through it, a later plugin's reply included — and the plugin is
/// never called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_headers_are_made_without_calling_the_plugin() {
    let up = TestUpstream::echo("u").await;
    let plugins = r#"{ use = "add-header", config = { request = { set = { "x-tenant" = "acme" } }, response = { set = { "x-order" = "add-header" } } } },
  { use = "transform", config = { request = { headers = { remove = ["cookie"], add = { "x-tenant" = "second" } } }, response = { headers = { remove = ["x-upstream"], set = { "x-order" = "transform" } } } } },
  { use = "chaos", config = { mode = "context" } },
  { use = "deny", config = { paths = ["/no"] } },"#;
    let gw = TestGateway::start(&format!("{ADMIN}{}", route(&up, plugins, "")));
    let r = get_with(&gw.url("/yes"), &[("cookie", "s=1")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json();
    assert_eq!(echoed_headers(&doc, "x-tenant"), vec!["acme", "second"], "in chain order");
    assert_eq!(echoed_header(&doc, "cookie"), None);
    assert!(echoed_header(&doc, "x-context").is_some(), "the plugin behind them ran");
    // transform's are made first on the way back, add-header's after them.
    assert_eq!(r.header_all("x-order"), vec!["add-header"]);
    assert_eq!(r.header("x-upstream"), None);

    // deny's reply passes back through both.
    let r = get(&gw.url("/no")).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.header_all("x-order"), vec!["add-header"]);
    assert_eq!(up.hits(), 1);

    let text = gw.metrics().await;
    for plugin in ["add-header", "transform"] {
        for phase in ["request", "response"] {
            let series = format!(r#"wasmgate_plugin_call_duration_seconds_count{{plugin="{plugin}",phase="{phase}"}}"#);
            assert_eq!(sample(&text, &series), Some("0"), "{plugin} {phase}: {text}");
        }
    }
    let series = r#"wasmgate_plugin_call_duration_seconds_count{plugin="deny",phase="request"}"#;
    assert_eq!(sample(&text, series), Some("2"), "{text}");
}

/// Fixed headers are checked when the plugin is configured: one the gateway
/// manages, or too many, refuse the config with a message that says which.
/// From a hook, declaring one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_headers_are_checked_at_load_and_refused_from_a_hook() {
    let up = TestUpstream::echo("u").await;
    let refusal = |mode: &str| {
        let body = route(&up, &format!(r#"{{ use = "chaos", config = {{ mode = "{mode}" }} }},"#), "");
        TestGateway::try_start("", &body).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let err = refusal("bad-fixed");
    assert!(err.contains("routes[0].plugins[0].config: plugin `chaos` refused its config"), "{err}");
    assert!(err.contains("the fixed response header `content-length` was refused"), "{err}");
    assert!(err.contains("`content-length` is managed by the gateway"), "{err}");
    let err = refusal("many-fixed");
    assert!(err.contains("the fixed request header `x-fixed-64` was refused"), "{err}");
    assert!(err.contains("more than 64 fixed headers"), "{err}");

    let gw = TestGateway::start(&route(&up, r#"{ use = "chaos", config = { mode = "late-fixed" } },"#, ""));
    let r = get(&gw.url("/")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        echoed_header(&r.json(), "x-fixed-late").as_deref(),
        Some("refused: invalid value: fixed headers are declared from configure only")
    );
}

async fn assert_fails_only_its_request(gw: &TestGateway, failing: &str) {
    let r = get(&gw.url(failing)).await;
    assert_eq!(r.status, 500, "{}", r.text());
    let id = r.header("x-request-id").expect("request id").to_owned();
    assert_eq!(r.json()["request_id"], id.as_str());
    assert_eq!(r.json()["error"], "internal error");
    assert!(!r.text().contains("chaos"), "no trap text reaches the client: {}", r.text());
    // Other routes keep working, and so does the failing route next time.
    assert_eq!(get(&gw.url("/healthy")).await.status, 200);
}

fn chaos_routes(up: &TestUpstream, mode: &str, settings: &str) -> String {
    format!(
        r#"[upstreams.u]
endpoints = ["{addr}"]

[plugin.chaos]
{settings}

[[routes]]
name = "chaos"
match = {{ prefix = "/chaos" }}
upstream = "u"
plugins = [{{ use = "chaos", config = {{ mode = "{mode}" }} }}]

[[routes]]
name = "healthy"
match = {{ prefix = "/healthy" }}
upstream = "u"
plugins = [{{ use = "noop" }}]
"#,
        addr = up.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_plugin_fails_only_its_request() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&chaos_routes(&up, "trap", ""));
    for _ in 0..3 {
        assert_fails_only_its_request(&gw, "/chaos").await;
    }
    assert_eq!(up.hits(), 3, "only the healthy route reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_plugin_is_stopped_at_its_deadline() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&format!("{ADMIN}{}", chaos_routes(&up, "loop", "deadline = \"50ms\"")));
    // Each time after the gateway sat idle: the deadline's clock sleeps
    // while no plugin runs (plugin::clock), and the call must wake it.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = Instant::now();
        assert_fails_only_its_request(&gw, "/chaos").await;
        // The deadline is a time, checked at the clock's ticks: never
        // sooner, and soon after (here within seconds, on a busy machine).
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(50), "stopped before its deadline, after {took:?}");
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
    let text = gw.metrics().await;
    assert_eq!(sample(&text, r#"wasmgate_plugin_failures_total{plugin="chaos",kind="deadline"}"#), Some("2"), "{text}");
}

/// The plugins' clock ticks every tenth of the shortest deadline loaded, as
/// `/metrics` tells; a reload that drops that plugin's deadline coarsens it
/// again once the old config is no longer used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_follows_the_shortest_deadline_loaded_across_reloads() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&format!("{ADMIN}{}", chaos_routes(&up, "ok", "deadline = \"20ms\"")));
    let tick = |text: &str| sample(text, "wasmgate_plugin_clock_tick_seconds").and_then(|v| v.parse::<f64>().ok());
    let text = gw.metrics().await;
    assert_eq!(tick(&text), Some(0.002), "{text}");
    // Both plugins at the default 100 ms deadline now.
    gw.write_config(&format!("{ADMIN}{}", chaos_routes(&up, "ok", "")));
    assert_eq!(gw.gateway.reload().ok(), Some(1));
    let start = Instant::now();
    loop {
        assert_eq!(get(&gw.url("/chaos")).await.status, 200);
        let text = gw.metrics().await;
        if tick(&text) == Some(0.01) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the tick stayed fine after the reload: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hungry_plugin_is_stopped_at_its_limit() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&chaos_routes(&up, "grow", "max_memory = \"16MiB\""));
    assert_fails_only_its_request(&gw, "/chaos").await;
    assert_fails_only_its_request(&gw, "/chaos").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_skips_the_failed_plugin() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(
        &up,
        r#"{ use = "chaos", config = { mode = "trap" } }, { use = "add-header", config = { name = "x-after", value = "ran" } },"#,
        "on_plugin_error = \"fail-open\"",
    ));
    let r = get(&gw.url("/")).await;
    assert_eq!(r.status, 200);
    assert_eq!(echoed_header(&r.json(), "x-after").as_deref(), Some("ran"));
}

/// A plugin skipped by fail-open is skipped as if it had not run: what it
/// changed before it failed — a request header, a response header left
/// for later, a context entry, its fixed request header; in the response
/// phase, a response header — is put back (an identity header set before
/// a trap went upstream), and one whose request hook failed is skipped in
/// the response phase too (its fixed response header, its response hook).
/// Its fixed removals stay: they scrub what the client sent (a client's
/// copy of jwt's claim header reached the upstream when jwt failed open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_puts_back_what_the_failed_plugin_changed() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&format!(
        "{}{}",
        chaos_as(&["seer"], ""),
        route(
            &up,
            r#"{ use = "chaos", config = { mode = "edit-then-trap" } }, { use = "seer", config = { mode = "context" } },"#,
            "on_plugin_error = \"fail-open\""
        )
    ));
    let r = send(get_request(&gw.url("/"), &[("x-half-removed", "forged")])).await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(echoed_header(&doc, "x-half-removed"), None, "the client's header it removes");
    assert_eq!(echoed_header(&doc, "x-half"), None, "the request header it set");
    assert_eq!(echoed_header(&doc, "x-half-fixed"), None, "its fixed request header");
    assert_eq!(echoed_header(&doc, "x-context").as_deref(), Some(""), "the context entry it set");
    assert_eq!(r.header("x-half-left"), None, "the response header it left");
    // Skipped in the response phase too.
    assert_eq!(r.header("x-half-fixed"), None, "its fixed response header");
    assert_eq!(r.header("x-half-hook"), None, "its response hook");
    let gw = TestGateway::start(&route(
        &up,
        r#"{ use = "chaos", config = { mode = "edit-then-trap", phase = "response" } },"#,
        "on_plugin_error = \"fail-open\"",
    ));
    let r = get(&gw.url("/")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-half"), None, "the response header it set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_the_response_phase_is_confined_too() {
    let up = TestUpstream::echo("u").await;
    let gw =
        TestGateway::start(&route(&up, r#"{ use = "chaos", config = { mode = "trap", phase = "response" } },"#, ""));
    assert_eq!(get(&gw.url("/")).await.status, 500);
    assert_eq!(up.hits(), 1, "the upstream answered; the plugin failed after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reply_is_a_500_not_a_crash() {
    let up = TestUpstream::echo("u").await;
    // Not a status at all, and interim ones: after a 1xx the client would
    // wait on for an answer (a 101 would close its connection).
    // Each is a plugin failure of its own kind: counted, and skipped with
    // fail-open (it was a 500 either way, and not counted).
    for status in [0, 100, 101, 103, 600] {
        let plugin = format!(r#"{{ use = "chaos", config = {{ mode = "bad-status", status = {status} }} }},"#);
        let gw = TestGateway::start(&format!("{}{}", wasmgate_tests::ADMIN, route(&up, &plugin, "")));
        for _ in 0..2 {
            let r = get(&gw.url("/")).await;
            assert_eq!(r.status, 500, "status {status}: {}", r.text());
        }
        let metrics = gw.metrics().await;
        let series = r#"wasmgate_plugin_failures_total{plugin="chaos",kind="reply"}"#;
        assert_eq!(wasmgate_tests::sample(&metrics, series), Some("2"), "status {status}");
    }
    let plugin = r#"{ use = "chaos", config = { mode = "bad-status", status = 600 } },"#;
    let gw = TestGateway::start(&route(&up, plugin, "on_plugin_error = \"fail-open\""));
    assert_eq!(get(&gw.url("/")).await.status, 200, "fail-open skips the plugin");
    assert_eq!(up.hits(), 1);
    // Too many headers (past ~24 500 a header map panicked); as many as an
    // edit may leave pass.
    for (headers, expected) in [(1025, "500"), (25_000, "500"), (1024, "200")] {
        let plugin = format!(r#"{{ use = "chaos", config = {{ mode = "many-reply-headers", status = {headers} }} }},"#);
        let gw = TestGateway::start(&route(&up, &plugin, ""));
        for _ in 0..2 {
            let resp = raw(gw.addr(), b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
            assert!(
                resp.starts_with(&format!("HTTP/1.1 {expected} ")),
                "{headers} headers: {}",
                &resp[..resp.len().min(200)]
            );
        }
    }
    assert_eq!(up.hits(), 1, "only the fail-open request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printing_plugins_do_not_disturb_the_gateway() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&route(&up, r#"{ use = "chaos", config = { mode = "print" } },"#, ""));
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
}

/// `x-chaos-calls` counts calls on one instance: it grows in a pooled
/// instance and is always 1 in a fresh one.
async fn calls(gw: &TestGateway) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..4 {
        let r = get(&gw.url("/")).await;
        out.push(echoed_header(&r.json(), "x-chaos-calls").and_then(|c| c.parse().ok()).unwrap_or(0));
    }
    out
}

/// A plugin's shared bytes (WIT 0.1.6) outlive its instances — under
/// `per-request` isolation, where every request is a new one, when granted
/// (without the grant nothing is kept) — are its own (the same component
/// under another name has others), and a reload starts them afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_bytes_outlive_instances_not_a_reload_and_are_the_plugins_own() {
    let up = TestUpstream::echo("u").await;
    let mut body = format!(
        "{ADMIN}{}{}[upstreams.u]\nendpoints = [\"{}\"]\n",
        chaos_as(&["one", "two"], "isolation = \"per-request\"\ngrants = { shared = true }"),
        chaos_as(&["ungranted"], "isolation = \"per-request\""),
        up.addr
    );
    for name in ["one", "two", "ungranted"] {
        body.push_str(&format!(
            "[[routes]]\nname = \"{name}\"\nmatch = {{ prefix = \"/{name}\" }}\nupstream = \"u\"\n\
             plugins = [{{ use = \"{name}\", config = {{ mode = \"shared\" }} }}]\n"
        ));
    }
    let gw = TestGateway::start(&body);
    let count = async |path: &str| echoed_header(&get(&gw.url(path)).await.json(), "x-shared");
    for n in 1..=3 {
        assert_eq!(count("/one").await.as_deref(), Some(n.to_string().as_str()), "one instance after another");
    }
    assert_eq!(count("/two").await.as_deref(), Some("1"), "the same component under another name");
    for _ in 0..2 {
        assert_eq!(count("/ungranted").await.as_deref(), Some("refused"), "per-request without the grant");
    }
    assert_eq!(instances_created(&gw, "one").await, Some(3), "a new instance for each request");

    assert_eq!(gw.gateway.reload().ok(), Some(1));
    assert_eq!(count("/one").await.as_deref(), Some("1"), "a reload starts afresh");
}

/// `wasmgate_plugin_instances_created_total` for `plugin`.
async fn instances_created(gw: &TestGateway, plugin: &str) -> Option<u64> {
    let series = format!(r#"wasmgate_plugin_instances_created_total{{plugin="{plugin}"}}"#);
    sample(&gw.metrics().await, &series).and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_request_isolation_gives_every_request_a_fresh_instance() {
    let up = TestUpstream::echo("u").await;
    let body = route(&up, r#"{ use = "chaos", config = { mode = "ok" } },"#, "");
    let gw =
        TestGateway::start_with("workers = 1", &format!("{ADMIN}[plugin.chaos]\nisolation = \"per-request\"\n{body}"));
    assert_eq!(calls(&gw).await, vec![1, 1, 1, 1]);
    assert_eq!(instances_created(&gw, "chaos").await, Some(4), "one per call");
}

/// A fresh instance's hook has its whole deadline: making the instance (its
/// config hook, here 200 ms of a 300 ms deadline) was bounded on its own,
/// and counted against the hook too, which failed every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_instances_hook_has_its_own_deadline() {
    let up = TestUpstream::echo("u").await;
    let body = route(&up, r#"{ use = "chaos", config = { mode = "ok", spin_ms = 200 } },"#, "");
    let plugin = "[plugin.chaos]\nisolation = \"per-request\"\ndeadline = \"300ms\"\n";
    let gw = TestGateway::start_with("workers = 1", &format!("{ADMIN}{plugin}{body}"));
    for _ in 0..2 {
        let r = get(&gw.url("/")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_instances_are_reused_and_recycled() {
    let up = TestUpstream::echo("u").await;
    let body = route(&up, r#"{ use = "chaos", config = { mode = "ok" } },"#, "");
    let gw = TestGateway::start_with("workers = 1", &format!("{ADMIN}[plugin.chaos]\nrecycle_after = 2\n{body}"));
    // An instance serves two requests, then a fresh one takes over.
    assert_eq!(calls(&gw).await, vec![1, 2, 1, 2]);
    // The first came warm from the load; the second was made while serving.
    assert_eq!(instances_created(&gw, "chaos").await, Some(1));
    let gw = TestGateway::start_with("workers = 1", &format!("{ADMIN}{body}"));
    assert_eq!(calls(&gw).await, vec![1, 2, 3, 4]);
    assert_eq!(instances_created(&gw, "chaos").await, Some(0), "the warm instance served them all");
}

/// A plugin file that is not a regular file fails the load at once: a FIFO
/// blocked it (and with it every later reload) until something wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_file_that_is_a_fifo_fails_the_load_at_once() {
    let up = TestUpstream::echo("u").await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.wasm");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let body = format!("[plugin.fifo]\nfile = \"{}\"\n{}", fifo.display(), route(&up, r#"{ use = "fifo" },"#, ""));
    let started = tokio::task::spawn_blocking(move || TestGateway::try_start("", &body).err().map(|e| e.to_string()));
    let err = tokio::time::timeout(Duration::from_secs(20), started).await.expect("the load ended").unwrap();
    let err = err.unwrap_or_default();
    assert!(err.contains("fifo.wasm: not a regular file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_refusing_its_config_fails_the_load_with_its_message() {
    let up = TestUpstream::echo("u").await;
    let err = TestGateway::try_start(
        "",
        &route(&up, r#"{ use = "chaos", config = { mode = "refuse", message = "threshold must be positive" } },"#, ""),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("plugin `chaos` refused its config: threshold must be positive"), "{err}");
    assert!(err.contains("routes[0].plugins[0].config"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_reads_many_headers_through_the_resource() {
    let up = TestUpstream::echo("u").await;
    let names: Vec<String> = (0..20).map(|i| format!("\"x-h{i}\"")).collect();
    let gw = TestGateway::start(&route(
        &up,
        &format!(r#"{{ use = "read-headers", config = {{ names = [{}] }} }},"#, names.join(", ")),
        "",
    ));
    let mut req = Request::get(gw.url("/"));
    for i in 0..15 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let r = send(req.body(Full::default()).unwrap()).await;
    assert_eq!(echoed_header(&r.json(), "x-headers-found").as_deref(), Some("15"));
}

/// `[plugin.NAME]` tables loading the chaos guest under other names, so
/// each has its own call series.
fn chaos_as(names: &[&str], extra: &str) -> String {
    let file = wasmgate_tests::guest_dir().join("chaos.wasm");
    names.iter().map(|n| format!("[plugin.{n}]\nfile = \"{}\"\n{extra}\n", file.display())).collect()
}

/// How many times `plugin`'s request hook was called.
async fn request_calls(gw: &TestGateway, plugin: &str) -> Option<String> {
    let series = format!(r#"wasmgate_plugin_call_duration_seconds_count{{plugin="{plugin}",phase="request"}}"#);
    sample(&gw.metrics().await, &series).map(str::to_owned)
}

/// How many of `plugin`'s outcomes the gateway gave without a call.
async fn kept_outcomes(gw: &TestGateway, plugin: &str) -> Option<String> {
    let series = format!(r#"wasmgate_plugin_kept_outcomes_total{{plugin="{plugin}"}}"#);
    sample(&gw.metrics().await, &series).map(str::to_owned)
}

fn keyed(gw: &TestGateway, path: &str, key: &str) -> Request<Full<bytes::Bytes>> {
    get_request(&gw.url(path), &[("x-key", key)])
}

/// A request hook that declares the facts it depends on (WIT
/// `setup.memoize-request`) is called once per value of them: the gateway
/// makes the kept edits — request header, response header, context entry —
/// and gives the kept answer itself for a repeat, on either worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_declaring_its_facts_is_called_once_per_value() {
    let up = TestUpstream::echo("u").await;
    let body = format!(
        "{ADMIN}{}{}",
        chaos_as(&["memo"], ""),
        route(
            &up,
            r#"{ use = "memo", config = { mode = "memo" } }, { use = "chaos", config = { mode = "context" } },"#,
            ""
        )
    );
    let gw = TestGateway::start(&body);
    for key in ["a", "a", "b", "a", "b", "a"] {
        let r = send(keyed(&gw, "/", key)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-memo-key"), Some(key));
        let doc = r.json();
        assert_eq!(echoed_header(&doc, "x-memo-seen").as_deref(), Some(key));
        assert_eq!(echoed_header(&doc, "x-context"), Some(format!("memo.key={key}")), "the next plugin sees the entry");
    }
    for _ in 0..3 {
        let r = send(keyed(&gw, "/", "deny")).await;
        assert_eq!(r.status, 403);
        assert_eq!(r.text(), "denied by key");
    }
    assert_eq!(up.hits(), 6);
    assert_eq!(request_calls(&gw, "memo").await.as_deref(), Some("3"), "called for a, b and deny only");
    assert_eq!(kept_outcomes(&gw, "memo").await.as_deref(), Some("6"));
    // The plugin after it has no such declaration: called every time.
    assert_eq!(request_calls(&gw, "chaos").await.as_deref(), Some("6"));
}

/// The claim is checked: a call that reads an undeclared header, a clock
/// (the gateway's or WASI's) or the shared bytes, or logs a warning (or
/// writes to stderr), is not kept, so every request calls the hook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_straying_from_its_facts_is_called_every_time() {
    let up = TestUpstream::echo("u").await;
    const STRAYS: [&str; 7] = ["header", "clock", "warn", "wasi-clock", "monotonic", "stderr", "shared"];
    let mut body = format!("{ADMIN}{}[upstreams.u]\nendpoints = [\"{}\"]\n", chaos_as(&STRAYS, ""), up.addr);
    for stray in STRAYS {
        body.push_str(&format!(
            "[[routes]]\nname = \"{stray}\"\nmatch = {{ prefix = \"/{stray}\" }}\nupstream = \"u\"\n\
             plugins = [{{ use = \"{stray}\", config = {{ mode = \"memo\", stray = \"{stray}\" }} }}]\n"
        ));
    }
    let gw = TestGateway::start(&body);
    for stray in STRAYS {
        for _ in 0..3 {
            let r = send(keyed(&gw, &format!("/{stray}"), "a")).await;
            assert_eq!(r.header("x-memo-key"), Some("a"), "{stray}");
        }
        assert_eq!(request_calls(&gw, stray).await.as_deref(), Some("3"), "{stray}");
        assert_eq!(kept_outcomes(&gw, stray).await.as_deref(), Some("0"), "{stray}");
    }
}

/// A plugin granted the store or outbound HTTP gets answers that change
/// over time: its declaration refuses the config, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_granted_the_store_cannot_declare_its_facts() {
    let up = TestUpstream::echo("u").await;
    let body = format!(
        "{}{}",
        chaos_as(&["memo"], "grants = { store = true }"),
        route(&up, r#"{ use = "memo", config = { mode = "memo" } },"#, "")
    );
    let err = TestGateway::try_start("", &body).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("plugin `memo` refused its config"), "{err}");
    assert!(err.contains("a plugin granted `store` or `http`"), "{err}");
}

/// The plugins that declare the facts they depend on, as built from
/// `plugins/`, through the gateway: each is called once for a client's
/// repeated requests and its outcome given for the rest — the answers and
/// edits the same as a call's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_declaring_plugins_are_called_once_for_repeated_requests() {
    let up = TestUpstream::echo("u").await;
    let digest = "9b346041bc9a49574eb2665b2ad2a0a3f9f9cce4e42f5d1f26deb8a256b5966a"; // sha256("key-one")
    let plugins = format!(
        r#"{{ use = "cors", config = {{ allowed_origins = ["https://app.example.com"] }} }},
  {{ use = "ip-filter", config = {{ allow = ["127.0.0.0/8"] }} }},
  {{ use = "api-key", config = {{ keys = {{ "{digest}" = {{ consumer = "acme" }} }}, consumer_header = "x-consumer" }} }},
  {{ use = "deny", config = {{ paths = ["/admin"] }} }},"#
    );
    let gw = TestGateway::start(&format!("{ADMIN}{}", route(&up, &plugins, "")));
    let request = |path: &str, key: &str| {
        get_request(&gw.url(path), &[("origin", "https://app.example.com"), ("x-api-key", key)])
    };
    for _ in 0..4 {
        let r = send(request("/items", "key-one")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example.com"));
        let doc = r.json();
        assert_eq!(echoed_header(&doc, "x-consumer").as_deref(), Some("acme"));
        assert_eq!(echoed_header(&doc, "x-api-key"), None, "the key is hidden from the upstream");
        assert_eq!(send(request("/items", "wrong")).await.status, 401);
        assert_eq!(send(request("/admin", "key-one")).await.status, 403);
    }
    // Twelve requests: cors and ip-filter see one set of facts, api-key two
    // keys, deny two paths (the wrong key never reaches it).
    for (plugin, called, given) in
        [("cors", "1", "11"), ("ip-filter", "1", "11"), ("api-key", "2", "10"), ("deny", "2", "6")]
    {
        let counts = (request_calls(&gw, plugin).await, kept_outcomes(&gw, plugin).await);
        assert_eq!(counts, (Some(called.to_owned()), Some(given.to_owned())), "{plugin}");
    }
}

/// What wasmtime copies out of a plugin's memory in one go (a hook's
/// reply, a host call's arguments) is bounded by the plugin's
/// `max_memory`: entries of a list may point at the same bytes. A reply of
/// 1 000 headers sharing one 60 KiB value (60 MiB as copies, built by hand)
/// from a plugin of 8 MiB is a plugin failure of kind `reply`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_whose_headers_share_bytes_is_bounded_by_the_plugins_memory() {
    let up = TestUpstream::echo("u").await;
    let body = format!(
        "{}{}{}",
        wasmgate_tests::ADMIN,
        chaos_as(&["aliased"], "max_memory = \"8MiB\""),
        route(&up, r#"{ use = "aliased", config = { mode = "aliased-reply", status = 1000 } },"#, "")
    );
    let gw = TestGateway::start(&body);
    assert_eq!(get(&gw.url("/")).await.status, 500);
    let series = r#"wasmgate_plugin_failures_total{plugin="aliased",kind="reply"}"#;
    assert_eq!(wasmgate_tests::sample(&gw.metrics().await, series), Some("1"));
    assert_eq!(up.hits(), 0);
}

/// So are the facts a plugin declares to `memoize-request`: 200 header
/// names sharing one 60 KiB string (12 MiB as copies) from a plugin of
/// 8 MiB fail its config hook, and so its load, before they are copied; 4
/// of them are copied (and refused as names no request carries only past
/// 16 facts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facts_sharing_bytes_are_bounded_by_the_plugins_memory() {
    let up = TestUpstream::echo("u").await;
    let start = |entries: usize| {
        let plugin = format!(r#"{{ use = "aliased", config = {{ mode = "aliased-facts", status = {entries} }} }},"#);
        let body = format!("{}{}", chaos_as(&["aliased"], "max_memory = \"8MiB\""), route(&up, &plugin, ""));
        TestGateway::try_start("", &body).err().map(|e| format!("{e:#}"))
    };
    let err = start(200).unwrap_or_default();
    assert!(err.contains("too much data is being copied between the host and the guest"), "{err}");
    assert_eq!(start(4), None);
}

/// `send`'s arguments are bounded the same way: a request whose headers
/// all point at the same bytes (built by hand: 1 024 headers sharing one
/// 60 KiB value, 60 MiB as copies) from a plugin of 8 MiB fails the call,
/// a plugin failure of kind `reply`; a few of them go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_entries_share_bytes_is_bounded_by_the_plugins_memory() {
    let up = TestUpstream::echo("u").await;
    for (entries, status, failures) in [(4, 200, None), (1024, 500, Some("1"))] {
        let body = format!(
            "{}{}{}",
            wasmgate_tests::ADMIN,
            chaos_as(&["aliased"], "max_memory = \"8MiB\"\ngrants = { http = [\"u\"], http_max_response = \"1MiB\" }"),
            route(
                &up,
                &format!(r#"{{ use = "aliased", config = {{ mode = "aliased-fetch", status = {entries} }} }},"#),
                ""
            )
        );
        let gw = TestGateway::start(&body);
        let r = get(&gw.url("/")).await;
        assert_eq!(r.status, status, "{entries} entries: {}", r.text());
        if status == 200 {
            assert_eq!(echoed_header(&r.json(), "x-fetch").as_deref(), Some("200"), "{entries} entries went out");
        }
        let series = r#"wasmgate_plugin_failures_total{plugin="aliased",kind="reply"}"#;
        assert_eq!(wasmgate_tests::sample(&gw.metrics().await, series), failures, "{entries} entries");
    }
}

/// `wasmgate inspect`'s account of a plugin, from its component alone: its
/// name and version, sha256, WIT version, the grants a config must give it
/// (what it imports; jwt: http for its JWKS, crypto to verify), and the
/// keys of its config, from the schema it carries.
#[test]
fn inspect_says_what_a_plugin_is_and_the_grants_it_needs() {
    let runtime = wasmgate::plugin::Runtime::for_inspection().expect("an engine");
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = wasmgate_tests::plugin_dir();
    let inspect = |name: &str| {
        let file = dir.join(format!("{name}.wasm"));
        let origin = wasmgate::plugin::registry::Origin::File(file.clone());
        wasmgate::plugin::registry::inspect(&runtime, &file, origin, scratch.path())
            .unwrap_or_else(|e| panic!("{name}: {}", e.what))
    };

    let add_header = inspect("add-header");
    let said = add_header.to_string();
    let bytes = std::fs::read(dir.join("add-header.wasm")).expect("add-header.wasm");
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    assert!(said.starts_with(&format!("{}\n", dir.join("add-header.wasm").display())), "{said}");
    assert!(said.contains(&format!("  sha256:  {sha256}\n")), "{said}");
    assert!(said.contains(&format!("  pin:     sha256 = \"{sha256}\"\n  config:  these keys")), "{said}");
    assert!(said.contains("  plugin:  add-header 0."), "{said}");
    assert!(said.contains(&format!("  WIT:     wasmgate:plugin@{}\n", wasmgate::plugin::WIT_VERSION)), "{said}");
    assert!(said.contains("  grants:  none needed"), "{said}");
    assert!(!said.contains("  shared:"), "add-header shares nothing: {said}");

    // Its config's keys, their kinds and descriptions, inner tables' under
    // them, from the schema in plugins/add-header/config.schema.json; and
    // `--schema` gives that file as it is.
    assert!(said.contains("  config:  these keys (others are refused); --schema prints its JSON Schema\n"), "{said}");
    assert!(said.contains("\n    name (string)\n      Shorthand for one request header"), "{said}");
    assert!(said.contains("\n    request (table)\n      Edits of the request"), "{said}");
    assert!(said.contains("\n      remove (array of string, default [])\n        Names of headers"), "{said}");
    let file = wasmgate_tests::root().join("plugins/add-header/config.schema.json");
    let written = std::fs::read_to_string(&file).expect("add-header's config schema");
    assert_eq!(add_header.config_schema_text().map_err(|e| e.what).as_deref(), Ok(written.as_str()));

    // A plugin built without a schema (a test guest) says so, and `--schema` has nothing to give.
    let guest = wasmgate_tests::guest_dir().join("wit-0-1-4.wasm");
    let origin = wasmgate::plugin::registry::Origin::File(guest.clone());
    let bare = wasmgate::plugin::registry::inspect(&runtime, &guest, origin, scratch.path()).expect("wit-0-1-4");
    let said = bare.to_string();
    assert!(said.ends_with("  config:  (it carries no schema: its README says what its config takes)\n"), "{said}");
    let refused = bare.config_schema_text().expect_err("no schema");
    assert!(refused.what.ends_with("wit-0-1-4.wasm carries no config schema"), "{}", refused.what);
    assert!(refused.fix.contains("export_plugin!(P, config_schema = \"config.schema.json\")"), "{}", refused.fix);

    let said = inspect("rate-limit").to_string();
    assert!(said.contains("  grants:  [plugin.NAME] grants = { store = true }"), "{said}");
    let jwt = inspect("jwt");
    assert!(jwt.imports.http && jwt.imports.crypto && !jwt.imports.store, "{jwt:?}");
    let said = jwt.to_string();
    assert!(said.contains("grants = { http = [") && said.contains("crypto = true }"), "{said}");
    assert!(jwt.imports.shared, "jwt keeps its JWKS in the shared bytes");
    assert!(said.contains("  shared:  its instances share bytes"), "{said}");
    assert!(said.contains("only with grants = { shared = true }"), "{said}");
}
