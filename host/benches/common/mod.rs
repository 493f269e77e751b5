//! Shared by the benches: the built plugins, and a plugin configured the way
//! the gateway configures one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmgate::config::{Isolation, PluginLimits, PluginSettings};
use wasmgate::plugin::caps::Caps;
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

pub fn link(runtime: &Arc<Runtime>, wasm: &Path, isolation: Isolation, config_json: &str) -> ChainLink {
    let settings = PluginSettings {
        isolation,
        file: None,
        sha256: None,
        limits: PluginLimits { deadline: Duration::from_millis(100), max_memory: 64 << 20, recycle_after: u64::MAX },
        grants: Default::default(),
        line: None,
    };
    let name = wasm.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin");
    let cache = root().join("target/bench-plugin-cache");
    let plugin = registry::load(runtime, name, wasm, &settings, &cache, None, Caps::none(name)).expect("load plugin");
    // Only plugins that do I/O are configured on a runtime; these do none.
    let control = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    ChainLink::configure(Arc::new(plugin), config_json.to_owned(), "bench".into(), 1, 4, control.handle())
        .expect("configure")
}
