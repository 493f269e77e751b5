//! The cache through the SDK's test runners: the store double is the
//! gateway's own in-memory store, on a frozen test clock.

use wasmgate_sdk::log::Level;
use wasmgate_sdk::testing::{self, TestRequest, TestResponse};
use wasmgate_sdk::{Decision, Info, Plugin, Reply, context, store};

use super::{Cache, STATUS_CONTEXT, STORE_CONTEXT, key};

const T0: u64 = 1_700_000_000_000;

fn cache(json: &str) -> Cache {
    testing::reset();
    testing::set_now_unix_ms(T0);
    testing::configure::<Cache>(json).expect("config accepted")
}

fn refused(json: &str) -> String {
    testing::configure::<Cache>(json).err().map(|e| e.to_string()).unwrap_or_default()
}

/// How a request was answered.
#[derive(Debug)]
enum Served {
    /// From the cache, in the request phase.
    Cache(Reply),
    /// By the "upstream" (the response given), after the response phase.
    Upstream(TestResponse),
}

impl Served {
    fn x_cache(&self) -> Option<String> {
        match self {
            Self::Cache(r) => r.header_str("x-cache").map(str::to_owned),
            Self::Upstream(r) => r.headers.get_str("x-cache"),
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        match self {
            Self::Cache(r) => r.header_str(name).map(str::to_owned),
            Self::Upstream(r) => r.headers.get_str(name),
        }
    }

    fn body(&self) -> String {
        match self {
            Self::Cache(r) => String::from_utf8_lossy(&r.body).into_owned(),
            Self::Upstream(r) => String::from_utf8_lossy(r.body.bytes()).into_owned(),
        }
    }

    fn status(&self) -> u16 {
        match self {
            Self::Cache(r) => r.status,
            Self::Upstream(r) => r.status,
        }
    }

    fn is_hit(&self) -> bool {
        matches!(self, Self::Cache(_))
    }
}

/// One request through the plugin as the gateway runs it: a fresh context,
/// the request hook, and — unless it answered — the upstream's `resp` through
/// the response hook. The store and the clock carry over between requests.
fn serve(p: &Cache, req: TestRequest, resp: TestResponse) -> Served {
    serve_with(p, &[], req, resp)
}

/// Context entries: (key, value).
type Entries<'a> = &'a [(&'a str, &'a str)];

/// As [`serve`], with the context entries the plugins before it left.
fn serve_with(p: &Cache, entries: Entries<'_>, mut req: TestRequest, resp: TestResponse) -> Served {
    new_context(entries);
    match testing::on_request(p, &mut req) {
        Decision::Respond(reply) => Served::Cache(reply),
        Decision::Continue => {
            let mut resp = resp;
            assert!(testing::on_response(p, &mut req, &mut resp).is_continue());
            Served::Upstream(resp)
        }
    }
}

/// A new request's context, with these entries from earlier plugins.
fn new_context(entries: Entries<'_>) {
    for k in context::keys() {
        context::remove(&k);
    }
    for (key, value) in entries {
        testing::set_context(key, value);
    }
}

fn ok(body: &str) -> TestResponse {
    TestResponse::new(200).header("content-type", "text/plain").body(body)
}

fn get(path: &str) -> TestRequest {
    TestRequest::get(path)
}

fn advance_s(s: u64) {
    testing::advance_ms(s * 1000);
}

#[test]
fn miss_then_hit() {
    let p = cache("{}");
    assert_eq!(p.info(), Info { on_request: true, on_response: true, request_body: false, response_body: true });
    let upstream = ok("one")
        .header("etag", "\"v1\"")
        .header("content-length", "3")
        .header("x-request-id", "first")
        .header("age", "0");
    let first = serve(&p, get("/items?page=1"), upstream);
    assert!(!first.is_hit());
    assert_eq!(first.x_cache().as_deref(), Some("miss"));

    advance_s(3);
    let second = serve(&p, get("/items?page=1"), ok("two"));
    let Served::Cache(reply) = &second else { panic!("expected a hit, got {second:?}") };
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"one");
    assert_eq!(reply.header_str("x-cache"), Some("hit"));
    assert_eq!(reply.header_str("age"), Some("3"));
    assert_eq!(reply.header_str("etag"), Some("\"v1\""));
    assert_eq!(reply.header_str("content-type"), Some("text/plain"));
    // Framing and per-response headers are the gateway's to set afresh.
    for name in ["content-length", "x-request-id"] {
        assert_eq!(reply.header_str(name), None, "{name}");
    }
    assert_eq!(reply.headers.iter().filter(|(n, _)| n == "age").count(), 1);
}

#[test]
fn the_default_ttl_expires() {
    let p = cache(r#"{"ttl":"30s"}"#);
    assert!(!serve(&p, get("/a"), ok("v1")).is_hit());
    testing::advance_ms(29_999);
    let hit = serve(&p, get("/a"), ok("v2"));
    assert_eq!((hit.is_hit(), hit.header("age").as_deref()), (true, Some("29")));
    testing::advance_ms(1);
    let expired = serve(&p, get("/a"), ok("v2"));
    assert_eq!((expired.x_cache().as_deref(), expired.body().as_str()), (Some("miss"), "v2"));
    // ...and the fresh answer is cached again.
    assert_eq!(serve(&p, get("/a"), ok("v3")).body(), "v2");
}

#[test]
fn max_age_and_s_maxage_override_the_ttl() {
    let p = cache(r#"{"ttl":"1s"}"#);
    let _ = serve(&p, get("/max-age"), ok("m").header("cache-control", "public, max-age=5"));
    let _ = serve(&p, get("/s-maxage"), ok("s").header("cache-control", "s-maxage=2, max-age=100"));
    advance_s(1);
    assert!(serve(&p, get("/max-age"), ok("")).is_hit(), "max-age, not the 1s ttl");
    assert!(serve(&p, get("/s-maxage"), ok("")).is_hit());
    advance_s(1);
    assert!(!serve(&p, get("/s-maxage"), ok("")).is_hit(), "s-maxage comes first for a shared cache");
    assert!(serve(&p, get("/max-age"), ok("")).is_hit());
    advance_s(3);
    assert!(!serve(&p, get("/max-age"), ok("")).is_hit());
}

#[test]
fn the_upstreams_age_counts_against_freshness() {
    let p = cache("{}");
    let _ = serve(&p, get("/aged"), ok("a").header("cache-control", "max-age=30").header("age", "20"));
    let hit = serve(&p, get("/aged"), ok(""));
    assert_eq!(hit.header("age").as_deref(), Some("20"));
    advance_s(9);
    assert_eq!(serve(&p, get("/aged"), ok("")).header("age").as_deref(), Some("29"));
    advance_s(1);
    assert!(!serve(&p, get("/aged"), ok("")).is_hit());
    // Already older than its max-age: never stored.
    let _ = serve(&p, get("/old"), ok("o").header("cache-control", "max-age=30").header("age", "31"));
    assert!(!serve(&p, get("/old"), ok("")).is_hit());
}

#[test]
fn responses_that_forbid_or_defeat_caching_are_not_stored() {
    let p = cache("{}");
    for (i, cc) in [
        "no-store",
        "private",
        "no-cache",
        "max-age=0",
        "private, max-age=60",
        "max-age=soon",
        "no-cache=\"set-cookie\"",
    ]
    .iter()
    .enumerate()
    {
        let path = format!("/r{i}");
        let first = serve(&p, get(&path), ok("x").header("cache-control", cc));
        assert_eq!(first.x_cache().as_deref(), Some("miss"), "{cc}");
        assert!(!serve(&p, get(&path), ok("y")).is_hit(), "{cc} must not be cached");
    }
}

#[test]
fn expires_is_honoured_without_max_age() {
    let p = cache("{}");
    let date = "Tue, 14 Nov 2023 22:13:20 GMT"; // T0
    let _ = serve(&p, get("/e"), ok("e").header("date", date).header("expires", "Tue, 14 Nov 2023 22:13:40 GMT"));
    advance_s(19);
    assert!(serve(&p, get("/e"), ok("")).is_hit());
    advance_s(1);
    assert!(!serve(&p, get("/e"), ok("")).is_hit());
    let _ = serve(&p, get("/past"), ok("p").header("expires", "Thu, 01 Jan 1970 00:00:00 GMT"));
    assert!(!serve(&p, get("/past"), ok("")).is_hit());
    let _ = serve(&p, get("/invalid"), ok("i").header("expires", "0"));
    assert!(!serve(&p, get("/invalid"), ok("")).is_hit(), "an unreadable Expires means expired");
}

#[test]
fn vary_keeps_one_entry_per_variant() {
    // (A client refresh below replaces an entry.)
    let p = cache(r#"{"client_refresh":true}"#);
    let lang = |l: &str| get("/greeting").header("accept-language", l);
    let greeting = |body: &str| ok(body).header("vary", "Accept-Language").header("vary", "accept-encoding");
    assert!(!serve(&p, lang("en"), greeting("hello")).is_hit());
    assert!(!serve(&p, lang("de"), greeting("hallo")).is_hit(), "another variant is a miss");
    let en = serve(&p, lang("en"), greeting("?"));
    assert_eq!((en.is_hit(), en.body().as_str()), (true, "hello"));
    assert_eq!(en.header("vary").as_deref(), Some("Accept-Language"), "stored headers are replayed");
    assert_eq!(serve(&p, lang("de"), greeting("?")).body(), "hallo");
    assert!(!serve(&p, get("/greeting"), greeting("hi")).is_hit(), "no header is a variant of its own");
    assert_eq!(serve(&p, get("/greeting"), greeting("?")).body(), "hi");
    // A header the response does not vary on does not split the entry.
    let other = lang("en").header("accept", "text/html");
    assert_eq!(serve(&p, other, greeting("?")).body(), "hello");
    // The upstream changes what it varies on: a new index, and the old
    // variants (still in the store until they expire) are out of reach.
    let _ = serve(&p, lang("en").header("cache-control", "no-cache"), ok("v2").header("vary", "accept"));
    assert_eq!(serve(&p, lang("en"), ok("?")).body(), "v2");
    assert_eq!(serve(&p, lang("de"), ok("?")).body(), "v2", "accept-language no longer matters");
}

#[test]
fn vary_star_is_not_cached() {
    let p = cache("{}");
    let _ = serve(&p, get("/star"), ok("s").header("vary", "accept, *"));
    assert!(!serve(&p, get("/star"), ok("")).is_hit());
}

#[test]
fn only_configured_statuses_are_stored() {
    let p = cache("{}");
    for (status, cached) in [
        (200, true),
        (203, true),
        (204, true),
        (301, true),
        (404, true),
        (410, true),
        (302, false),
        (500, false),
        (503, false),
    ] {
        let path = format!("/s{status}");
        let _ = serve(&p, get(&path), TestResponse::new(status).body("b"));
        let again = serve(&p, get(&path), TestResponse::new(299));
        assert_eq!(again.is_hit(), cached, "{status}");
        if cached {
            assert_eq!(again.status(), status);
        }
    }
    let p = cache(r#"{"statuses":[200]}"#);
    let _ = serve(&p, get("/nf"), TestResponse::new(404));
    assert!(!serve(&p, get("/nf"), TestResponse::new(404)).is_hit());
}

/// By default a client cannot pass over a stored answer (as nginx and
/// Varnish): any client could make the upstream answer again at will, and
/// choose the moment an entry is replaced (with a poisoned answer).
#[test]
fn a_client_cannot_refresh_an_entry_unless_allowed() {
    let p = cache("{}");
    let _ = serve(&p, get("/b"), ok("old"));
    for (name, value) in [("cache-control", "no-cache"), ("cache-control", "max-age=0"), ("pragma", "no-cache")] {
        let r = serve(&p, get("/b").header(name, value), ok("new"));
        assert_eq!((r.x_cache().as_deref(), r.body().as_str()), (Some("hit"), "old"), "{name}: {value}");
    }
    advance_s(10);
    assert!(serve(&p, get("/b").header("cache-control", "max-age=5"), ok("new")).is_hit());
}

/// A request carrying a header an upstream may build its answer from has
/// its value in its key: its answer is served only to requests with the
/// same value (one made for `X-Forwarded-Prefix: /x` was everyone's).
#[test]
fn an_override_header_is_part_of_the_key() {
    let p = cache("{}");
    for (name, value) in [("x-http-method", "DELETE"), ("x-forwarded-prefix", "/x"), ("x-original-url", "/admin")] {
        let path = format!("/o/{name}");
        let r = serve(&p, get(&path).header(name, value), ok("poison"));
        assert_eq!(r.x_cache().as_deref(), Some("miss"));
        let clean = serve(&p, get(&path), ok("clean"));
        assert!(!clean.is_hit(), "{name}: not served to a request without it");
        assert_eq!(serve(&p, get(&path), ok("?")).body(), "clean");
        assert_eq!(serve(&p, get(&path).header(name, value), ok("?")).body(), "poison", "{name}: its own entry");
    }
    // A value every request carries (a load balancer's port): one entry.
    let _ = serve(&p, get("/lb").header("x-forwarded-port", "443"), ok("lb"));
    assert!(serve(&p, get("/lb").header("x-forwarded-port", "443"), ok("?")).is_hit());
    // Named in the key, it is keyed as configured.
    let p = cache(r#"{"key":["host","path","query","header:x-forwarded-prefix"]}"#);
    let _ = serve(&p, get("/k").header("x-forwarded-prefix", "/x"), ok("for /x"));
    assert_eq!(serve(&p, get("/k").header("x-forwarded-prefix", "/x"), ok("?")).body(), "for /x");
    assert!(!serve(&p, get("/k"), ok("plain")).is_hit(), "another key");
}

#[test]
fn request_cache_control_bypasses_the_cache() {
    let p = cache(r#"{"client_refresh":true}"#);
    let _ = serve(&p, get("/b"), ok("old"));
    // no-cache: a fresh answer, which refreshes the entry.
    let fresh = serve(&p, get("/b").header("cache-control", "no-cache"), ok("new"));
    assert_eq!((fresh.x_cache().as_deref(), fresh.body().as_str()), (Some("bypass"), "new"));
    assert_eq!(serve(&p, get("/b"), ok("?")).body(), "new");
    for (name, value) in [("cache-control", "max-age=0"), ("pragma", "no-cache"), ("range", "bytes=0-1")] {
        let r = serve(&p, get("/b").header(name, value), ok("newer"));
        assert_eq!(r.x_cache().as_deref(), Some("bypass"), "{name}: {value}");
    }
    // Pragma is HTTP/1.0's: Cache-Control wins when both are there.
    let both = serve(&p, get("/b").header("pragma", "no-cache").header("cache-control", "max-age=60"), ok("?"));
    assert!(both.is_hit());
    // no-store: bypassed, and the answer is not stored either.
    let before = serve(&p, get("/b"), ok("?")).body();
    let r = serve(&p, get("/b").header("cache-control", "no-store"), ok("secret"));
    assert_eq!((r.x_cache().as_deref(), r.body().as_str()), (Some("bypass"), "secret"));
    assert_eq!(serve(&p, get("/b"), ok("?")).body(), before);
}

/// Without `client_refresh`, `no-store` does not make the upstream answer:
/// a stored answer is served; on a miss, the answer is not stored.
#[test]
fn no_store_without_client_refresh_is_served_but_never_stored() {
    let p = cache("{}");
    let no_store = |path: &str| get(path).header("cache-control", "no-store");
    let r = serve(&p, no_store("/n"), ok("not kept"));
    assert_eq!((r.x_cache().as_deref(), r.body().as_str()), (Some("miss"), "not kept"));
    assert_eq!(serve(&p, get("/n"), ok("kept")).x_cache().as_deref(), Some("miss"), "nothing was stored");
    let r = serve(&p, no_store("/n"), ok("?"));
    assert_eq!((r.is_hit(), r.body().as_str()), (true, "kept"));
}

#[test]
fn request_max_age_refuses_older_entries() {
    let p = cache(r#"{"client_refresh":true}"#);
    let _ = serve(&p, get("/m"), ok("old"));
    advance_s(10);
    assert!(serve(&p, get("/m").header("cache-control", "max-age=10"), ok("?")).is_hit());
    let r = serve(&p, get("/m").header("cache-control", "max-age=9"), ok("new"));
    assert_eq!((r.x_cache().as_deref(), r.body().as_str()), (Some("miss"), "new"));
    let again = serve(&p, get("/m"), ok("?"));
    assert_eq!((again.body().as_str(), again.header("age").as_deref()), ("new", Some("0")));
}

#[test]
fn set_cookie_responses_are_never_cached() {
    let p = cache("{}");
    let _ = serve(
        &p,
        get("/login"),
        ok("welcome").header("set-cookie", "session=abc").header("cache-control", "public, max-age=600"),
    );
    assert!(!serve(&p, get("/login"), ok("")).is_hit());
}

#[test]
fn oversized_bodies_are_not_cached() {
    let p = cache(r#"{"max_body":8}"#);
    let _ = serve(&p, get("/big"), ok("123456789"));
    assert!(!serve(&p, get("/big"), ok("")).is_hit());
    let _ = serve(&p, get("/fits"), ok("12345678"));
    assert!(serve(&p, get("/fits"), ok("")).is_hit());
    let p = cache(r#"{"max_body":"1KiB"}"#);
    let _ = serve(&p, get("/kib"), ok(&"x".repeat(1025)));
    assert!(!serve(&p, get("/kib"), ok("")).is_hit());
}

#[test]
fn head_is_served_from_the_get_entry() {
    let p = cache("{}");
    let _ = serve(&p, get("/doc"), ok("the document").header("etag", "\"d\""));
    advance_s(2);
    let head = serve(&p, TestRequest::new("HEAD", "/doc"), ok(""));
    let Served::Cache(reply) = &head else { panic!("expected a hit, got {head:?}") };
    assert_eq!(reply.body, b"the document", "the body gives the gateway the length; it sends none for HEAD");
    assert_eq!(reply.header_str("etag"), Some("\"d\""));
    assert_eq!(reply.header_str("age"), Some("2"));
    assert_eq!(reply.header_str("x-cache"), Some("hit"));
    // A HEAD miss goes upstream and stores nothing (there is no body).
    let miss = serve(&p, TestRequest::new("HEAD", "/other"), ok(""));
    assert_eq!(miss.x_cache().as_deref(), Some("miss"));
    assert!(!serve(&p, get("/other"), ok("body")).is_hit());
}

#[test]
fn authorised_answers_are_stored_only_when_public() {
    let p = cache("{}");
    let authed = |path: &str| get(path).header("authorization", "Bearer alice");
    let _ = serve(&p, authed("/me"), ok("alice's data"));
    assert!(!serve(&p, get("/me"), ok("?")).is_hit(), "not shared with the next user");
    let _ = serve(&p, authed("/catalog"), ok("for everyone").header("cache-control", "public, max-age=60"));
    assert!(serve(&p, get("/catalog"), ok("?")).is_hit());
}

#[test]
fn requests_with_a_cookie_are_stored_only_when_public() {
    let p = cache("{}");
    let as_user = |path: &str, session: &str| get(path).header("cookie", format!("session={session}"));
    let alice = serve(&p, as_user("/me", "alice"), ok("alice's data"));
    assert_eq!(alice.x_cache().as_deref(), Some("miss"));
    let bob = serve(&p, as_user("/me", "bob"), ok("bob's data"));
    assert_eq!((bob.is_hit(), bob.body().as_str()), (false, "bob's data"), "not shared with the next user");
    assert!(!serve(&p, get("/me"), ok("anonymous")).is_hit(), "nor with a request without the cookie");
    let logs = testing::logs();
    let why = "response not cached: the request was per-user (it carried `Cookie`) and the response is not marked \
               public, s-maxage or must-revalidate";
    assert!(logs.iter().any(|(l, m)| *l == Level::Debug && m == why), "{logs:?}");
    // What the upstream marks as shareable is stored and served to anyone.
    for (i, cc) in ["public", "s-maxage=60", "must-revalidate, max-age=60"].iter().enumerate() {
        let path = format!("/shared{i}");
        let _ = serve(&p, as_user(&path, "alice"), ok("for everyone").header("cache-control", cc));
        let hit = serve(&p, as_user(&path, "bob"), ok("?"));
        assert_eq!((hit.is_hit(), hit.body().as_str()), (true, "for everyone"), "{cc}");
    }
}

#[test]
fn requests_of_a_caller_an_earlier_plugin_identified_are_stored_only_when_public() {
    let p = cache("{}");
    // api-key (which removes its `x-api-key`) and jwt (with `strip_token`,
    // or reading a cookie) leave no `Authorization`, only who the caller is.
    let jwt = |sub: &'static str, claims: &'static str| [("jwt.claims", claims), ("jwt.sub", sub)];
    let cases: [(&str, Entries<'_>, Entries<'_>); 3] = [
        ("consumer", &[("consumer", "alice")], &[("consumer", "bob")]),
        ("jwt.claims", &jwt("alice", r#"{"sub":"alice"}"#), &jwt("bob", r#"{"sub":"bob"}"#)),
        // A token without `sub`: jwt sets only `jwt.claims`.
        ("jwt.claims", &[("jwt.claims", r#"{"org":"a"}"#)], &[("jwt.claims", r#"{"org":"b"}"#)]),
    ];
    for (i, (key, alice, bob)) in cases.into_iter().enumerate() {
        let path = format!("/me/{i}");
        let first = serve_with(&p, alice, get(&path), ok("alice's data"));
        assert_eq!(first.x_cache().as_deref(), Some("miss"), "{i}");
        let second = serve_with(&p, bob, get(&path), ok("bob's data"));
        assert_eq!((second.is_hit(), second.body().as_str()), (false, "bob's data"), "{i}");
        let why = format!("(an earlier plugin identified the caller in context `{key}`)");
        assert!(testing::logs().iter().any(|(_, m)| m.contains(&why)), "{i}: {:?}", testing::logs());
    }
    let _ = serve_with(&p, &[("consumer", "alice")], get("/catalog"), ok("all").header("cache-control", "public"));
    let hit = serve_with(&p, &[("consumer", "bob")], get("/catalog"), ok("?"));
    assert_eq!((hit.is_hit(), hit.body().as_str()), (true, "all"));
    // Other context entries identify nobody.
    let _ = serve_with(&p, &[("tenant", "acme")], get("/plain"), ok("plain"));
    assert!(serve(&p, get("/plain"), ok("?")).is_hit());
}

#[test]
fn whether_a_request_is_per_user_is_decided_in_the_request_phase() {
    let p = cache("{}");
    // A plugin after this one removes the cookie or the consumer before the
    // response phase: the request this plugin keyed was still one user's.
    let mut req = get("/me").header("cookie", "session=alice");
    new_context(&[]);
    assert!(testing::on_request(&p, &mut req).is_continue());
    let mut resp = ok("alice's data");
    assert!(testing::on_response(&p, &mut get("/me"), &mut resp).is_continue());
    assert!(!serve(&p, get("/me"), ok("?")).is_hit());

    let mut req = get("/me2");
    new_context(&[("consumer", "alice")]);
    assert!(testing::on_request(&p, &mut req).is_continue());
    context::remove("consumer");
    assert!(testing::on_response(&p, &mut req, &mut ok("alice's data")).is_continue());
    assert!(!serve(&p, get("/me2"), ok("?")).is_hit());

    // A client certificate identifies its client as `Authorization` does.
    let alice = wasmgate_sdk::ClientCertificate { subject: "CN=alice".to_owned(), ..Default::default() };
    let mut req = get("/me3").client_certificate(alice);
    new_context(&[]);
    assert!(testing::on_request(&p, &mut req).is_continue());
    assert!(testing::on_response(&p, &mut req, &mut ok("alice's data")).is_continue());
    assert!(!serve(&p, get("/me3"), ok("?")).is_hit());
}

#[test]
fn unsafe_methods_invalidate_on_success() {
    let p = cache("{}");
    let _ = serve(&p, get("/items"), ok("list v1"));
    let failed = serve(&p, TestRequest::new("POST", "/items"), TestResponse::new(500));
    assert_eq!(failed.x_cache(), None, "a POST is not the cache's business");
    assert!(serve(&p, get("/items"), ok("?")).is_hit(), "a failed POST changed nothing");
    let created = serve(&p, TestRequest::new("POST", "/items"), TestResponse::new(201));
    assert_eq!(created.x_cache(), None);
    let after = serve(&p, get("/items"), ok("list v2"));
    assert_eq!((after.is_hit(), after.body().as_str()), (false, "list v2"));
    // With Vary: deleting the index drops every variant.
    let _ = serve(&p, get("/v").header("accept", "a"), ok("va").header("vary", "accept"));
    assert!(serve(&p, get("/v").header("accept", "a"), ok("?")).is_hit());
    let _ = serve(&p, TestRequest::new("DELETE", "/v"), TestResponse::new(204));
    assert!(!serve(&p, get("/v").header("accept", "a"), ok("?")).is_hit());
}

#[test]
fn the_key_is_configurable() {
    let p = cache("{}");
    let _ = serve(&p, get("/k?page=1"), ok("page 1"));
    assert!(!serve(&p, get("/k?page=2"), ok("page 2")).is_hit(), "the query is part of the default key");
    assert!(!serve(&p, get("/k"), ok("no page")).is_hit());
    let mut other_host = get("/k?page=1");
    other_host.authority = Some("other.test".into());
    assert!(!serve(&p, other_host, ok("other")).is_hit(), "so is the host");
    assert!(!serve(&p, get("/k?page=1").route("other-route"), ok("")).is_hit(), "and always the route");
    assert!(serve(&p, get("/k?page=1"), ok("")).is_hit());

    let p = cache(r#"{"key":["path","header:Accept-Language"]}"#);
    let _ = serve(&p, get("/k?page=1").header("accept-language", "en"), ok("en"));
    assert!(serve(&p, get("/k?page=2").header("accept-language", "en"), ok("?")).is_hit(), "query left out");
    assert!(!serve(&p, get("/k").header("accept-language", "de"), ok("de")).is_hit());
    assert!(!serve(&p, get("/k"), ok("none")).is_hit());
}

/// A `GET` with a body is neither served from the cache nor stored: the
/// key does not hold the body. One without (or of length 0) is.
#[test]
fn a_get_with_a_body_bypasses_the_cache() {
    let p = cache("{}");
    for (name, value) in [("content-length", "17"), ("transfer-encoding", "chunked")] {
        let r = serve(&p, get("/search").header(name, value), ok("for one body"));
        assert_eq!(r.x_cache().as_deref(), Some("bypass"), "{name}");
    }
    let r = serve(&p, get("/search").header("content-length", "0"), ok("stored"));
    assert_eq!(r.x_cache().as_deref(), Some("miss"));
    let r = serve(&p, get("/search").header("content-length", "17"), ok("for another body"));
    assert_eq!((r.x_cache().as_deref(), r.body().as_str()), (Some("bypass"), "for another body"));
    assert!(serve(&p, get("/search"), ok("?")).is_hit(), "without a body: served");
}

/// A record keeps the SHA-256 of its full key, not the key: a key that
/// holds a request's `Authorization` leaves no token in the store. Each
/// token still has its own entry.
#[test]
fn records_keep_no_header_value_of_their_key() {
    let p = cache(r#"{ "key": ["path", "header:authorization"] }"#);
    let public = || ok("mine").header("cache-control", "public, max-age=60");
    let mine = || get("/me").header("authorization", "Bearer s3cret-token");
    assert_eq!(serve(&p, mine(), public()).x_cache().as_deref(), Some("miss"));
    let full = stored_key();
    assert!(full.contains("s3cret-token"), "the key holds the header: {full}");
    let record = store::get(&key::store_key(&full)).expect("store").expect("stored");
    assert!(!record.windows(12).any(|w| w == b"s3cret-token"), "the token is in the store");
    assert!(serve(&p, mine(), ok("?")).is_hit());
    let theirs = get("/me").header("authorization", "Bearer other-token");
    assert!(!serve(&p, theirs, ok("theirs")).is_hit());
}

/// The full key the last request left to be stored under.
fn stored_key() -> String {
    let entry = testing::context().get(STORE_CONTEXT).cloned().expect("key in context");
    entry.split_once('\n').expect("reason, newline, key").1.to_owned()
}

#[test]
fn store_failures_bypass_the_cache_with_a_warning() {
    let p = cache("{}");
    let _ = serve(&p, get("/s"), ok("v1"));
    let base = stored_key();
    // Turn the entry's key into a token bucket: the store refuses to `get` it.
    store::delete(&key::store_key(&base)).expect("delete");
    store::take(&key::store_key(&base), 5, 1.0, 1).expect("bucket");
    let r = serve(&p, get("/s"), ok("from upstream"));
    assert_eq!((r.status(), r.x_cache().as_deref(), r.body().as_str()), (200, Some("bypass"), "from upstream"));
    assert_eq!(testing::context().get(STATUS_CONTEXT).map(String::as_str), Some("bypass"));
    let logs = testing::logs();
    assert!(logs.iter().any(|(l, m)| *l == Level::Warn && m.contains("the store failed")), "{logs:?}");
}

#[test]
fn unreadable_records_are_misses() {
    let p = cache("{}");
    let _ = serve(&p, get("/c"), ok("v1"));
    let base = stored_key();
    store::set(&key::store_key(&base), b"{\"not\":\"ours\"}", None).expect("set");
    let r = serve(&p, get("/c"), ok("v2"));
    assert_eq!((r.x_cache().as_deref(), r.body().as_str()), (Some("miss"), "v2"));
    assert!(testing::logs().iter().any(|(l, m)| *l == Level::Warn && m.contains("unreadable cache record")));
    assert_eq!(serve(&p, get("/c"), ok("?")).body(), "v2", "overwritten with a good record");
}

#[test]
fn other_methods_are_untouched() {
    let p = cache("{}");
    for method in ["OPTIONS", "TRACE", "CONNECT"] {
        let r = serve(&p, TestRequest::new(method, "/x"), TestResponse::new(200));
        assert_eq!(r.x_cache(), None, "{method}");
    }
}

#[test]
fn bad_configs_are_refused_with_a_reason() {
    assert!(refused(r#"{"ttl":"soon"}"#).contains("ttl: `soon` is not a duration"));
    assert!(refused(r#"{"ttl":"31days"}"#).contains("30 days"));
    assert!(refused(r#"{"ttl":"500ms"}"#).contains("not whole seconds"));
    assert!(refused(r#"{"ttl":"1500ms"}"#).contains("not whole seconds"));
    assert!(refused(r#"{"key":[]}"#).contains("key is empty"));
    assert!(refused(r#"{"key":["host","query"]}"#).contains("must include \"path\""));
    assert!(refused(r#"{"key":["path","path"]}"#).contains("listed twice"));
    assert!(refused(r#"{"key":["path","cookie:sid"]}"#).contains("not a key part"));
    assert!(refused(r#"{"statuses":[200,206]}"#).contains("206 cannot be cached"));
    assert!(refused(r#"{"statuses":[304]}"#).contains("304 cannot be cached"));
    assert!(refused(r#"{"statuses":[101]}"#).contains("101 cannot be cached"));
    assert!(refused(r#"{"max_body":"2MiB"}"#).contains("over the store's 1 MiB"));
    assert!(refused(r#"{"max_body":"lots"}"#).contains("not a size"));
    assert!(refused(r#"{"max_body":-1}"#).contains("cannot be negative"));
    assert!(refused(r#"{"tll":"1s"}"#).contains("unknown field `tll`"));
}
