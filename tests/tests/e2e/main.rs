//! End-to-end tests: the gateway in-process, real plugin components, real
//! upstream servers, real sockets, ephemeral ports only.

#![expect(clippy::expect_used, clippy::unwrap_used, reason = "test code: a failed step should stop the test")]

mod abac;
mod api_key;
mod cache;
mod capabilities;
mod compose;
mod config_errors;
mod cors;
mod discovery;
mod edge;
mod fleet;
mod ip_filter;
mod jwt;
mod oci;
mod plugins;
mod proxy;
mod rate_limit;
mod reload;
mod traffic;
mod transform;

/// Every plugin and test guest must be exercised by a test here.
#[test]
fn every_plugin_has_an_end_to_end_test() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    let mut sources = String::new();
    for e in std::fs::read_dir(&dir).expect("read tests").flatten() {
        sources.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
    }
    let plugins = wasmgate_tests::all_plugins();
    assert!(plugins.len() >= 4, "expected the built plugins, found {plugins:?}");
    let untested: Vec<&String> = plugins
        .iter()
        .filter(|p| !sources.contains(&format!("use = \"{p}\"")) && !sources.contains(&format!("\"{p}.wasm\"")))
        .collect();
    assert!(untested.is_empty(), "plugins without an end-to-end test: {untested:?}");
}
