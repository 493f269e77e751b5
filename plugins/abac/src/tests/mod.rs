//! The plugin through `wasmgate_sdk::testing`, as the gateway calls it, with
//! the claims a jwt plugin would have left in the context.

mod scale;

use serde_json::json;
use wasmgate_sdk::ClientCertificate;
use wasmgate_sdk::log::Level;
use wasmgate_sdk::testing::{self, TestRequest};

use super::*;
use crate::entities::{Facts, parse_claims};

/// Ten policies: roles, ownership, action groups, nested claims, groups,
/// network and clock conditions, and forbids that override permits.
const POLICIES: &str = r#"
// Administrators may do anything (unless a forbid below says otherwise).
@id("admin-all")
permit(principal, action, resource) when { principal has role && principal.role == "admin" };

// Users read their own record: /api/users/{id} with id == sub.
@id("owner-read")
permit(principal is User, action in Action::"read", resource == Route::"users")
when { resource has id && resource.id == principal.sub };

// Readers read the catalog (roles is an array claim).
@id("reader-catalog")
permit(principal, action in Action::"read", resource == Route::"catalog")
when { principal has roles && principal.roles.contains("reader") };

// Editors write the catalog of their own tenant (org is an object claim).
@id("editor-catalog")
permit(principal, action in Action::"write", resource == Route::"catalog")
when {
  principal has roles && principal.roles.contains("editor") &&
  principal has org && context.headers has "x-tenant" && principal.org.id == context.headers["x-tenant"]
};

// The ops group, from the office network, in office hours (UTC).
@id("ops-office-hours")
permit(principal in Group::"ops", action, resource == Route::"ops")
when { context.ip.isInRange(ip("10.0.0.0/8")) && context.hour >= 9 && context.hour < 17 };

// Reports need clearance level 3 (a number claim).
@id("reports-level")
permit(principal, action == Action::"GET", resource == Route::"reports")
when { principal has level && principal.level >= 3 };

// Health is public, even without a token.
@id("public-health")
permit(principal, action in Action::"read", resource == Route::"health");

// Suspended accounts are refused everything.
@id("suspended")
forbid(principal, action, resource) when { principal has suspended && principal.suspended };

// The audit log is append-only, for admins too.
@id("audit-append-only")
forbid(principal, action == Action::"DELETE", resource == Route::"audit");

// Writes need a second factor.
@id("writes-need-mfa")
forbid(principal is User, action in Action::"write", resource)
unless { principal has amr && principal.amr.contains("mfa") };
"#;

fn abac(extra: &str) -> Abac {
    let config = format!(
        r#"{{"policies":{},"resource_params":["id"],"context_headers":["X-Tenant"],"group_claim":"groups"{extra}}}"#,
        json!(POLICIES)
    );
    testing::configure::<Abac>(&config).expect("config accepted")
}

fn claims(value: serde_json::Value) {
    testing::reset();
    testing::set_context("jwt.claims", &value.to_string());
}

/// The status and the reason header of a request on `route`.
fn run(p: &Abac, route: &str, req: TestRequest) -> (u16, Option<String>) {
    let mut req = req.route(route);
    match testing::on_request(p, &mut req) {
        Decision::Continue => (200, None),
        Decision::Respond(reply) => (reply.status, reply.header_str(REASON_HEADER).map(str::to_owned)),
    }
}

#[test]
fn only_the_request_hook_is_called() {
    assert_eq!(abac("").info(), Info::default());
}

#[test]
fn a_remembered_principal_is_the_one_its_claims_make() {
    let p = abac("");
    let admin = json!({"sub": "ada", "role": "admin", "amr": ["mfa"]});
    let viewer = json!({"sub": "bob", "role": "viewer"});
    // The same instance alternates between two tokens' claims: each request
    // is judged by its own claims, remembered or not.
    for _ in 0..3 {
        claims(admin.clone());
        assert_eq!(run(&p, "users", TestRequest::new("DELETE", "/api/users/7").param("id", "7")).0, 200);
        claims(viewer.clone());
        assert_eq!(run(&p, "users", TestRequest::new("DELETE", "/api/users/7").param("id", "7")).0, 403);
    }
    assert_eq!(p.principals.len(), 2, "one entry per claims text");
    // A remembered entity is the one the claims build.
    let text = admin.to_string();
    let built = p.model.principal(&parse_claims(&p.model, &text).expect("claims")).expect("principal");
    assert_eq!(p.principals.get_or_build(&text, || unreachable!("remembered")).expect("remembered"), built);
    // Claims that are not a JSON object are refused, remembered or not.
    claims(json!(["not", "an", "object"]));
    assert_eq!(run(&p, "users", TestRequest::get("/api/users/7").param("id", "7")).0, 403);
    assert_eq!(p.principals.len(), 2);
}

#[test]
fn a_remembered_entity_set_is_reused_only_for_the_same_request() {
    let p = abac(r#","debug":true,"anonymous":"evaluate""#);
    let get = |id: &str| TestRequest::get(&format!("/api/users/{id}")).param("id", id);
    // One user alternating between their own record and another's: each
    // request is judged on its own resource, remembered or not.
    claims(json!({"sub": "42", "role": "user"}));
    for _ in 0..3 {
        assert_eq!(run(&p, "users", get("42")).0, 200);
        assert_eq!(run(&p, "users", get("43")).0, 403);
    }
    assert_eq!(p.sets.len(), 2, "one set per path and captures");
    // Another token on the same path, no token at all, and another method
    // (another action) are sets of their own, kept from their second request.
    let others = || {
        claims(json!({"sub": "43", "role": "user"}));
        assert_eq!(run(&p, "users", get("43")).0, 200);
        testing::reset();
        assert_eq!(run(&p, "users", get("43")).0, 403);
        claims(json!({"sub": "42", "role": "user"}));
        assert_eq!(run(&p, "users", TestRequest::new("PUT", "/api/users/42").param("id", "42")).0, 403);
    };
    others();
    assert_eq!(p.sets.len(), 2, "a request seen once is not kept");
    others();
    assert_eq!(p.sets.len(), 5);
    others();
    assert_eq!(p.sets.len(), 5);
}

#[test]
fn a_verdict_is_kept_only_where_no_policy_reads_the_context() {
    let p = abac(r#","debug":true"#);
    let kept = |p: &Abac| p.sets.values().iter().map(|set| set.verdict.get().cloned()).collect::<Vec<_>>();
    // No policy that can apply to GET on `users` reads the context: from its
    // second request on, the verdict is kept with the entities.
    claims(json!({"sub": "42", "role": "user"}));
    for _ in 0..3 {
        assert_eq!(run(&p, "users", TestRequest::get("/api/users/42").param("id", "42")).0, 200);
        assert_eq!(run(&p, "users", TestRequest::get("/api/users/43").param("id", "43")).0, 403);
    }
    let mut verdicts = kept(&p);
    verdicts.sort_by_key(|v| format!("{v:?}"));
    assert_eq!(verdicts, vec![Some(Verdict::Allow), Some(Verdict::Deny("no policy permits".into()))]);
    // `ops-office-hours` reads the client address and the clock: the same
    // request, remembered, is judged again on every context.
    let p = abac(r#","debug":true"#);
    claims(json!({"sub": "o", "groups": ["ops"]}));
    let ten_am = 1_767_261_600_000; // 2026-01-01T10:00:00Z
    let from = |ip: &str| TestRequest::get("/ops").client_ip(ip);
    testing::set_now_unix_ms(ten_am);
    for _ in 0..3 {
        assert_eq!(run(&p, "ops", from("10.1.2.3")).0, 200);
    }
    assert_eq!(run(&p, "ops", from("203.0.113.9")).0, 403);
    testing::set_now_unix_ms(ten_am + 8 * 3_600_000);
    assert_eq!(run(&p, "ops", from("10.1.2.3")).0, 403);
    assert_eq!(kept(&p), vec![None], "the set is kept, its verdict is not");
}

/// The gateway may keep abac's outcomes only when no policy reads the
/// context: then they depend on the claims, method, path and captures.
#[test]
fn the_facts_are_declared_only_where_no_policy_reads_the_context() {
    assert_eq!(abac("").depends_on(), None, "ops-office-hours reads the client address and the clock");
    let plain =
        r#"{"policies":"permit(principal, action, resource) when { principal has role };","resource_params":["id"]}"#;
    let p = testing::configure::<Abac>(plain).expect("config accepted");
    assert_eq!(
        p.depends_on(),
        Some(vec![
            RequestFact::Context("jwt.claims".into()),
            RequestFact::Method,
            RequestFact::Path,
            RequestFact::PathParam("id".into()),
        ])
    );
}

/// With such policies every answer — allow, deny, anonymous — is one the
/// gateway keeps; a refused principal is logged as a warning, so its
/// answer is given by a call every time.
#[test]
fn every_answer_without_context_is_one_the_gateway_keeps() {
    let plain = r#"{"policies":"permit(principal, action, resource) when { principal has role && principal.role == \"admin\" };","resource_params":["id"]}"#;
    let p = testing::configure::<Abac>(plain).expect("config accepted");
    for claims_json in [json!({"sub": "1", "role": "admin"}), json!({"sub": "2", "role": "user"})] {
        claims(claims_json);
        let (_, kept) =
            testing::on_request_kept(&p, &mut TestRequest::get("/api/users/7").param("id", "7").route("users"));
        assert_eq!(kept, Ok(()));
    }
    testing::reset();
    let (_, kept) = testing::on_request_kept(&p, &mut TestRequest::get("/api/users/7").param("id", "7").route("users"));
    assert_eq!(kept, Ok(()), "no claims: denied by the claims entry being absent");
    claims(json!({"role": "user"}));
    let (decision, kept) = testing::on_request_kept(&p, &mut TestRequest::get("/x").route("users"));
    assert_eq!(decision.reply().map(|r| r.status), Some(403));
    assert_eq!(kept, Err("logged a warning".into()), "claims without a principal id");
}

#[test]
fn entity_set_keys_keep_their_parts_apart() {
    let facts = |route: &str, path: &str| Facts {
        route: route.into(),
        method: "GET".into(),
        path: path.into(),
        ..Facts::default()
    };
    let key = entities::set_key;
    assert_ne!(key(Some("ab"), &facts("c", "/")), key(Some("a"), &facts("bc", "/")));
    assert_ne!(key(Some("a"), &facts("r", "/")), key(None, &facts("r", "/")));
    assert_ne!(key(Some(""), &facts("r", "/")), key(None, &facts("r", "/")));
    let mut with_param = facts("r", "/x");
    with_param.params = vec![("id".into(), "1".into())];
    assert_ne!(key(None, &with_param), key(None, &facts("r", "/x")));
    assert_eq!(key(Some("{}"), &with_param), key(Some("{}"), &with_param.clone()));
    // The length prefixes, written out.
    assert_eq!(key(None, &with_param), "a1:r3:GET2:/x2:id1:1");
    let long = "p".repeat(1234);
    assert_eq!(key(Some(""), &facts("", &long)), format!("c0:0:3:GET1234:{long}"));
}

#[test]
fn an_admin_may_do_anything_but_what_a_forbid_refuses() {
    let p = abac(r#","debug":true"#);
    claims(json!({"sub": "ada", "role": "admin", "amr": ["pwd", "mfa"]}));
    assert_eq!(run(&p, "users", TestRequest::new("DELETE", "/api/users/7").param("id", "7")), (200, None));
    assert_eq!(run(&p, "ops", TestRequest::get("/ops")), (200, None));
    // forbid overrides permit: the audit log cannot be deleted, and the header says which policy decided.
    assert_eq!(run(&p, "audit", TestRequest::new("DELETE", "/audit")), (403, Some("audit-append-only".into())));
    assert_eq!(run(&p, "audit", TestRequest::new("POST", "/audit")), (200, None));
    // Without a second factor the write is forbidden, admin or not.
    claims(json!({"sub": "ada", "role": "admin"}));
    assert_eq!(run(&p, "users", TestRequest::new("DELETE", "/x")), (403, Some("writes-need-mfa".into())));
    // Two forbids: both are named.
    claims(json!({"sub": "ada", "role": "admin", "suspended": true}));
    assert_eq!(run(&p, "users", TestRequest::new("PUT", "/x")), (403, Some("suspended, writes-need-mfa".into())));
}

#[test]
fn a_user_reads_only_their_own_record() {
    let p = abac(r#","debug":true"#);
    claims(json!({"sub": "42", "role": "user"}));
    let get = |id: &str| TestRequest::get(&format!("/api/users/{id}")).param("id", id);
    assert_eq!(run(&p, "users", get("42")), (200, None));
    assert_eq!(run(&p, "users", get("43")), (403, Some("no policy permits".into())));
    // Ownership is a read permission: writing one's own record is not.
    let put = TestRequest::new("PUT", "/api/users/42").param("id", "42");
    assert_eq!(run(&p, "users", put).0, 403);
    // An integer `sub` names the principal by its decimal text; the attribute stays a Long.
    claims(json!({"sub": 42}));
    assert_eq!(run(&p, "users", get("42")).0, 403, "resource.id is a string, principal.sub a Long");
}

#[test]
fn action_groups_split_reads_from_writes() {
    let p = abac("");
    claims(json!({"sub": "r", "roles": ["reader"], "amr": ["mfa"]}));
    for method in ["GET", "HEAD", "OPTIONS"] {
        assert_eq!(run(&p, "catalog", TestRequest::new(method, "/catalog")).0, 200, "{method}");
    }
    for method in ["POST", "PUT", "PATCH", "DELETE", "TRACE"] {
        assert_eq!(run(&p, "catalog", TestRequest::new(method, "/catalog")).0, 403, "{method}");
    }
}

#[test]
fn nested_claims_and_headers_reach_the_policies() {
    let p = abac("");
    claims(json!({"sub": "e", "roles": ["editor"], "amr": ["mfa"], "org": {"id": "acme", "plan": {"seats": 5}}}));
    let post = |tenant: Option<&str>| {
        let req = TestRequest::new("POST", "/catalog");
        tenant.map_or(req.clone(), |t| req.header("x-tenant", t))
    };
    assert_eq!(run(&p, "catalog", post(Some("acme"))).0, 200);
    assert_eq!(run(&p, "catalog", post(Some("globex"))).0, 403);
    assert_eq!(run(&p, "catalog", post(None)).0, 403);
}

#[test]
fn network_and_clock_conditions() {
    let p = abac(r#","debug":true"#);
    let ten_am = 1_767_261_600_000; // 2026-01-01T10:00:00Z
    claims(json!({"sub": "o", "groups": ["staff", "ops"]}));
    testing::set_now_unix_ms(ten_am);
    let from = |ip: &str| TestRequest::get("/ops").client_ip(ip);
    assert_eq!(run(&p, "ops", from("10.1.2.3")).0, 200);
    assert_eq!(run(&p, "ops", from("::ffff:10.1.2.3")).0, 200, "IPv4-mapped addresses are IPv4");
    assert_eq!(run(&p, "ops", from("203.0.113.9")).0, 403);
    assert_eq!(run(&p, "ops", from("2001:db8::1")).0, 403);
    testing::set_now_unix_ms(ten_am + 8 * 3_600_000); // 18:00
    assert_eq!(run(&p, "ops", from("10.1.2.3")), (403, Some("no policy permits".into())));
    // The group comes from `group_claim`; a single string works too.
    claims(json!({"sub": "o", "groups": "ops"}));
    testing::set_now_unix_ms(ten_am);
    assert_eq!(run(&p, "ops", from("10.1.2.3")).0, 200);
    claims(json!({"sub": "o", "groups": ["staff"]}));
    testing::set_now_unix_ms(ten_am);
    assert_eq!(run(&p, "ops", from("10.1.2.3")).0, 403);
}

#[test]
fn numbers_compare_as_longs_and_floats_are_left_out() {
    let p = abac("");
    claims(json!({"sub": "x", "level": 3}));
    assert_eq!(run(&p, "reports", TestRequest::get("/reports")).0, 200);
    claims(json!({"sub": "x", "level": 3.0}));
    assert_eq!(run(&p, "reports", TestRequest::get("/reports")).0, 200, "an integral float is a Long");
    claims(json!({"sub": "x", "level": 3.5}));
    assert_eq!(run(&p, "reports", TestRequest::get("/reports")).0, 403, "a fractional one is left out");
}

#[test]
fn default_deny_and_the_reason_header_only_in_debug() {
    for (debug, header) in [("", None), (r#","debug":false"#, None), (r#","debug":true"#, Some("no policy permits"))] {
        let p = abac(debug);
        claims(json!({"sub": "nobody"}));
        let mut req = TestRequest::get("/elsewhere").route("other");
        let reply = testing::on_request(&p, &mut req).reply().cloned().expect("denied");
        assert_eq!(reply.status, 403);
        assert_eq!(reply.body, br#"{"error":"forbidden"}"#);
        assert_eq!(reply.header_str("content-type"), Some("application/json"));
        assert_eq!(reply.header_str(REASON_HEADER), header, "debug config {debug:?}");
    }
}

#[test]
fn missing_claims_are_denied_or_evaluated_as_anonymous() {
    let p = abac(r#","debug":true"#);
    testing::reset();
    let health = || TestRequest::get("/health");
    assert_eq!(run(&p, "health", health()), (403, Some("no claims in `jwt.claims`".into())));

    let p = abac(r#","debug":true,"anonymous":"evaluate""#);
    testing::reset();
    assert_eq!(run(&p, "health", health()), (200, None));
    assert_eq!(run(&p, "users", TestRequest::get("/api/users/1").param("id", "1")).0, 403);
    assert_eq!(run(&p, "health", TestRequest::new("POST", "/health")).0, 403, "health is read-only");
    // `has` guards keep attribute-free Anonymous from making policies fail.
    assert_eq!(run(&p, "catalog", TestRequest::get("/catalog")), (403, Some("no policy permits".into())));
    assert!(testing::logs().iter().all(|(l, _)| *l < Level::Warn), "{:?}", testing::logs());
}

#[test]
fn claims_that_name_no_principal_are_refused_and_logged() {
    let p = abac(r#","debug":true"#);
    for (text, reason) in [
        ("not json", "the claims in `jwt.claims` are not JSON"),
        ("[1,2]", "the claims in `jwt.claims` are not a JSON object"),
        (r#"{"role":"admin"}"#, "the claims have no `sub`"),
        (r#"{"sub":""}"#, "the claims have no `sub`"),
    ] {
        testing::reset();
        testing::set_context("jwt.claims", text);
        let (status, header) = run(&p, "users", TestRequest::get("/"));
        assert_eq!(status, 403);
        assert!(header.is_some_and(|h| h.starts_with(reason)), "{text}");
        assert!(testing::logs().iter().any(|(l, m)| *l == Level::Warn && m.starts_with(reason)), "{text}");
    }
}

#[test]
fn the_principal_is_configurable() {
    let p = testing::configure::<Abac>(
        r#"{"policies":"permit(principal == Member::\"ada@x\", action, resource);","principal_type":"Member",
            "principal_id_claim":"email","claims_key":"oidc"}"#,
    )
    .expect("accepted");
    testing::reset();
    testing::set_context("oidc", r#"{"sub":"1","email":"ada@x"}"#);
    assert_eq!(run(&p, "r", TestRequest::get("/")).0, 200);
    testing::set_context("oidc", r#"{"sub":"1","email":"bob@x"}"#);
    assert_eq!(run(&p, "r", TestRequest::get("/")).0, 403);
}

#[test]
fn route_method_actions_name_the_route() {
    let policies = r#"permit(principal, action == Action::"users:GET", resource);
                      permit(principal, action in Action::"write", resource == Route::"orders");"#;
    let config = json!({"policies": policies, "action": "route-method"}).to_string();
    let p = testing::configure::<Abac>(&config).expect("accepted");
    claims(json!({"sub": "u"}));
    assert_eq!(run(&p, "users", TestRequest::get("/u")).0, 200);
    assert_eq!(run(&p, "orders", TestRequest::get("/o")).0, 403);
    assert_eq!(run(&p, "orders", TestRequest::new("POST", "/o")).0, 200, "Action::\"orders:POST\" is in write");
}

#[test]
fn a_policy_that_fails_to_evaluate_counts_as_denying() {
    let policies = r#"
        @id("everyone") permit(principal, action, resource);
        @id("tenant-check") forbid(principal, action, resource) when { resource.id != principal.tenant };
        @id("buggy-permit") permit(principal, action, resource) when { principal.level > "3" };
    "#;
    let config = json!({"policies": policies, "resource_params": ["id"], "debug": true}).to_string();
    let p = testing::configure::<Abac>(&config).expect("accepted");
    claims(json!({"sub": "u", "tenant": "t1", "level": 5}));
    let req = |id: Option<&str>| id.map_or(TestRequest::get("/"), |id| TestRequest::get("/").param("id", id));
    assert_eq!(run(&p, "r", req(Some("t1"))).0, 200, "buggy-permit errs, but everyone permits");
    assert_eq!(run(&p, "r", req(Some("t2"))), (403, Some("tenant-check".into())));
    // No `id` capture: the forbid cannot be evaluated. Cedar would skip it;
    // abac denies — and says so on every request: a verdict Cedar reached
    // with errors is not kept, though no policy reads the context.
    for _ in 0..3 {
        assert_eq!(run(&p, "r", req(None)), (403, Some("tenant-check (error)".into())));
    }
    let logs = testing::logs();
    let logged = |id: &str| {
        logs.iter().filter(|(l, m)| *l == Level::Warn && m.starts_with(&format!("policy `{id}` failed"))).count()
    };
    assert_eq!((logged("tenant-check"), logged("buggy-permit")), (3, 5), "{logs:?}");
}

#[test]
fn malformed_policies_are_refused_with_the_cedar_message() {
    let err = |policies: &str| {
        let config = json!({ "policies": policies }).to_string();
        testing::configure::<Abac>(&config).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let e = err(
        "@id(\"ok\") permit(principal, action, resource);\n@id(\"broken\")\npermit(principal, action, resource) whenn { true };",
    );
    assert!(e.starts_with("`policies`: policy `broken` (line 3, column 37) does not parse:"), "{e}");
    assert!(e.contains("whenn"), "{e}");
    assert!(err("").contains("has no policy"));
    assert!(err("permit(principal, action, resource) when { principal.x like 3 };").contains("does not parse"));
}

#[test]
fn the_policy_set_validates_against_a_schema() {
    let schema = r#"
        entity Group;
        entity User in [Group] = { sub: String, role?: String, roles?: Set<String>, level?: Long, suspended?: Bool,
                                   amr?: Set<String>, org?: { id: String } };
        entity Anonymous;
        entity Route = { path: String, id?: String };
        type Ctx = { ip: ipaddr, ip_text: String, time: Long, hour: Long, method: String, route: String,
                     authenticated: Bool, headers: { "x-tenant"?: String } };
        action read, write;
        action GET, HEAD, OPTIONS in [read] appliesTo { principal: [User, Anonymous], resource: Route, context: Ctx };
        action POST, PUT, PATCH, DELETE in [write]
            appliesTo { principal: [User, Anonymous], resource: Route, context: Ctx };
    "#;
    let config = |policies: &str| json!({"policies": policies, "schema": schema}).to_string();
    let accepted = testing::configure::<Abac>(&config(POLICIES)).err().map(|e| e.to_string());
    assert_eq!(accepted, None);
    let typo = POLICIES.replace("principal.role ==", "principal.rol ==");
    let e = testing::configure::<Abac>(&config(&typo)).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.starts_with("the policies do not validate against `schema`: line 4, column"), "{e}");
    assert!(e.contains("for policy `admin-all`") && e.contains("`rol`"), "{e}");
}

#[test]
fn slicing_never_changes_a_verdict() {
    let p = abac("");
    let people = [
        json!({"sub": "ada", "role": "admin", "amr": ["mfa"]}),
        json!({"sub": "ada", "role": "admin", "suspended": true}),
        json!({"sub": "42", "roles": ["reader", "editor"], "org": {"id": "acme"}, "amr": ["mfa"]}),
        json!({"sub": "o", "groups": ["ops"], "level": 4}),
    ];
    let routes = ["users", "catalog", "ops", "reports", "health", "audit", "other"];
    let methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "BREW"];
    let mut allowed = 0;
    for claims in people {
        let principal =
            p.model.principal(&parse_claims(&p.model, &claims.to_string()).expect("claims parse")).expect("principal");
        for route in routes {
            for method in methods {
                let facts = Facts {
                    method: method.into(),
                    route: route.into(),
                    path: "/x".into(),
                    client_ip: "10.0.0.1".into(),
                    params: vec![("id".into(), "42".into())],
                    headers: vec![("x-tenant".into(), "acme".into())],
                    now_unix_ms: 1_767_261_600_000,
                    client_cert: None,
                };
                let built = p.model.request_for(&facts, principal.clone(), true).expect("request builds");
                let full = p.judge(&p.authorizer.is_authorized(&built.request, &p.policies, built.entities()));
                let sliced = slice::slice(&p.policies, &p.model, route, method);
                let cut = p.judge(&p.authorizer.is_authorized(&built.request, &sliced, built.entities()));
                assert_eq!(full, cut, "{claims} {method} {route}");
                allowed += usize::from(full == Verdict::Allow);
            }
        }
    }
    assert!(allowed > 20, "the matrix exercises permits too ({allowed})");
}

#[test]
fn the_readme_policy_set_validates_against_the_readme_schema() {
    let readme = include_str!("../../README.md");
    let blocks: Vec<&str> = readme.split("```cedar\n").skip(1).filter_map(|b| b.split("```").next()).collect();
    assert_eq!(blocks.len(), 2, "the README's policy set and schema");
    let config = json!({"policies": blocks[0], "schema": blocks[1], "context_headers": ["x-tenant"]}).to_string();
    let p = testing::configure::<Abac>(&config).map_err(|e| e.to_string());
    assert_eq!(p.as_ref().err(), None);
}

/// A policy may read the certificate the client presented
/// (`context.client_cert`): a SPIFFE ID, a subject. A request without one
/// has no `client_cert`, and `has` tells.
#[test]
fn a_client_certificate_is_in_the_context_for_policies_that_read_it() {
    let policies = r#"permit(principal, action, resource == Route::"mesh") when {
  context has client_cert && context.client_cert.uris.contains("spiffe://example.org/web") &&
  context.client_cert.subject == "CN=web,O=Acme" && context.client_cert.dns_names.isEmpty()
};"#;
    let config = format!(r#"{{"policies":{},"anonymous":"evaluate"}}"#, json!(policies));
    let p = testing::configure::<Abac>(&config).expect("config accepted");
    assert!(p.model.context_client_cert);
    testing::reset();
    let web = ClientCertificate {
        hash: "ab".repeat(32),
        subject: "CN=web,O=Acme".to_owned(),
        uris: vec!["spiffe://example.org/web".to_owned()],
        dns_names: Vec::new(),
    };
    let request = |cert: Option<&ClientCertificate>| {
        let req = TestRequest::get("/mesh");
        match cert {
            Some(c) => req.client_certificate(c.clone()),
            None => req,
        }
    };
    assert_eq!(run(&p, "mesh", request(Some(&web))).0, 200);
    let other = ClientCertificate { uris: vec!["spiffe://example.org/batch".to_owned()], ..web.clone() };
    assert_eq!(run(&p, "mesh", request(Some(&other))).0, 403);
    assert_eq!(run(&p, "mesh", request(None)).0, 403);
    // Policies that never mention it do not ask for it.
    assert!(!abac("").model.context_client_cert);
}
