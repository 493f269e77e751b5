//! A 52-policy set: parsed once at configure, then evaluated per request.
//! Prints what configure and a decision cost (bench-style: measured and
//! reported, never asserted — timing assertions are flaky).

use std::time::{Duration, Instant};

use serde_json::json;
use wasmgate_sdk::testing::{self, TestRequest};

use super::*;
use crate::entities::{Facts, parse_claims};

/// 50 tenant permits, an admin permit and a forbid.
fn policy_set() -> String {
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&format!(
            "@id(\"tenant-{i}\")\npermit(principal, action in Action::\"read\", resource == Route::\"tenant-{i}\")\n\
             when {{ principal.tenants.contains(\"t{i}\") && context.hour >= 0 && resource.path like \"/t/*\" }};\n"
        ));
    }
    text.push_str("@id(\"admin\")\npermit(principal, action, resource) when { principal.role == \"admin\" };\n");
    text.push_str(
        "@id(\"blocked\")\nforbid(principal, action, resource) when { principal has blocked && principal.blocked };\n",
    );
    text
}

fn configure() -> Abac {
    let config = json!({ "policies": policy_set(), "debug": true }).to_string();
    testing::configure::<Abac>(&config).expect("52 policies accepted")
}

#[test]
fn fifty_two_policies_are_parsed_once_and_evaluated() {
    let p = configure();
    assert_eq!(p.policies.policies().count(), 52);
    testing::reset();
    testing::set_context("jwt.claims", &json!({"sub": "u", "tenants": ["t3", "t37"]}).to_string());
    let status = |route: &str| match testing::on_request(&p, &mut TestRequest::get("/t/x").route(route)) {
        Decision::Continue => 200,
        Decision::Respond(r) => r.status,
    };
    assert_eq!(status("tenant-37"), 200);
    assert_eq!(status("tenant-3"), 200);
    assert_eq!(status("tenant-4"), 403);
    testing::set_context("jwt.claims", &json!({"sub": "u", "role": "admin", "blocked": true}).to_string());
    let mut req = TestRequest::get("/t/x").route("tenant-4");
    let reply = testing::on_request(&p, &mut req).reply().cloned().expect("denied");
    assert_eq!(reply.header_str(REASON_HEADER), Some("blocked"));
}

/// The fastest of a few batches: the figure least disturbed by whatever
/// else the machine is doing.
fn per_call(mut call: impl FnMut()) -> Duration {
    const BATCHES: u32 = 7;
    const ROUNDS: u32 = 300;
    (0..BATCHES)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..ROUNDS {
                call();
            }
            started.elapsed() / ROUNDS
        })
        .min()
        .unwrap_or_default()
}

/// `cargo test --release measure -- --nocapture` prints the figures quoted
/// in the README.
#[test]
fn measure_configure_and_evaluation() {
    let started = Instant::now();
    let p = configure();
    let configure_time = started.elapsed();

    testing::reset();
    let claims = json!({"sub": "u", "tenants": ["t3", "t37"], "org": {"id": "acme"}, "amr": ["pwd"]});
    testing::set_context("jwt.claims", &claims.to_string());
    let mut toggle = false;
    let whole = per_call(|| {
        toggle = !toggle;
        let route = if toggle { "tenant-37" } else { "tenant-4" };
        let mut req = TestRequest::get("/t/x").route(route).header("x-tenant", "acme");
        assert_eq!(testing::on_request(&p, &mut req).is_continue(), toggle);
    });

    // The Cedar evaluation alone, on a request built once: all 52 policies,
    // and the slice for the route (tenant-37, admin, blocked).
    let facts = Facts { method: "GET".into(), route: "tenant-37".into(), path: "/t/x".into(), ..Facts::default() };
    let principal =
        p.model.principal(&parse_claims(&p.model, &claims.to_string()).expect("claims parse")).expect("principal");
    let built = p.model.request_for(&facts, principal.clone(), true).expect("request builds");
    let sliced = slice::slice(&p.policies, &p.model, "tenant-37", "GET");
    assert_eq!(sliced.policies().count(), 3);
    let eval = |set: &cedar_policy::PolicySet| {
        per_call(|| {
            let response = p.authorizer.is_authorized(&built.request, set, built.entities());
            assert_eq!(response.decision(), cedar_policy::Decision::Allow);
        })
    };
    let (full, slice) = (eval(&p.policies), eval(&sliced));
    let build = per_call(|| {
        let principal =
            p.model.principal(&parse_claims(&p.model, &claims.to_string()).expect("claims parse")).expect("principal");
        assert!(p.model.request_for(&facts, principal.clone(), true).is_ok());
    });
    println!(
        "abac, 52 policies ({} build): configure {configure_time:?}; per request through on_request {whole:?} \
         (claims + entities {build:?}; Cedar evaluation of all 52 policies {full:?}, of the route's 3-policy slice \
         {slice:?})",
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
}
