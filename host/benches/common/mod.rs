//! Shared by the benches: the built plugins, and a plugin configured the way
//! the gateway configures one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use wasmgate::config::{Grants, Isolation, PluginLimits, PluginSettings};
use wasmgate::exchange::Exchange;
use wasmgate::plugin::caps::Caps;
use wasmgate::plugin::caps::store::StoreBackend;
use wasmgate::plugin::{ChainLink, EngineLimits, Runtime, registry};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The plugin and guest directories, built first when missing.
pub fn built_plugins() -> (PathBuf, PathBuf) {
    let root = root();
    let (plugins, guests) = (root.join("target/plugins"), root.join("target/test-guests"));
    if !plugins.join("noop.wasm").exists() || !guests.join("read-headers.wasm").exists() {
        let status = std::process::Command::new(root.join("plugins/build.sh")).status();
        assert!(status.is_ok_and(|s| s.success()), "plugins/build.sh failed");
    }
    (plugins, guests)
}

pub fn runtime() -> Arc<Runtime> {
    Runtime::new(EngineLimits { max_instances: 100, max_memory: 64 << 20 }).expect("engine")
}

/// `wasm` configured with `config_json`, granted nothing.
pub fn link(runtime: &Arc<Runtime>, wasm: &Path, isolation: Isolation, config_json: &str) -> ChainLink {
    link_with(runtime, wasm, isolation, config_json, Grants::default(), None)
}

/// `wasm` configured with `config_json` and granted `grants`, with `store`
/// as the gateway's store. Only plugins whose calls are synchronous (no http
/// grant, no Redis) can be benched here.
pub fn link_with(
    runtime: &Arc<Runtime>,
    wasm: &Path,
    isolation: Isolation,
    config_json: &str,
    grants: Grants,
    store: Option<&StoreBackend>,
) -> ChainLink {
    let name = wasm.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin");
    let caps = match store {
        Some(store) => Caps::new(name, &grants, isolation, store, &[], &HashMap::new()).expect("caps"),
        None => Caps::none(name),
    };
    let settings = PluginSettings {
        isolation,
        file: None,
        oci: None,
        signed_by: Vec::new(),
        sha256: None,
        limits: PluginLimits { deadline: Duration::from_millis(100), max_memory: 64 << 20, recycle_after: u64::MAX },
        grants,
        line: None,
    };
    let cache = root().join("target/bench-plugin-cache");
    let plugin = registry::load(runtime, name, wasm, &settings, &cache, None, caps).expect("load plugin");
    // Only plugins that do I/O are configured on a runtime; these do none.
    let control = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    ChainLink::configure(Arc::new(plugin), config_json.to_owned(), "bench".into(), 1, 4, control.handle())
        .expect("configure")
}

/// The exchange the proxy lends a plugin for `request`, from 127.0.0.1 on
/// the route `bench`.
pub fn exchange(request: http::Request<()>) -> Box<Exchange> {
    let (request, ()) = request.into_parts();
    Box::new(Exchange::new(
        request,
        [127, 0, 0, 1].into(),
        "http",
        HeaderValue::from_static("bench"),
        Arc::from("bench"),
        Vec::new(),
        1 << 20,
    ))
}
