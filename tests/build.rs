//! Builds every plugin and test guest to wasm32-wasip2 (through the same
//! script the demo uses) so the tests run the real components.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest.parent().map(PathBuf::from).unwrap_or_default();
    for dir in ["plugins", "sdk", "wit", "tests/guests", "target/plugins", "target/test-guests"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let mut cmd = Command::new(root.join("plugins/build.sh"));
    // The outer cargo's settings are for the host; the plugins get their own.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            println!("cargo:warning=plugins/build.sh failed ({s}); the tests need the real plugins");
            std::process::exit(1);
        }
        Err(e) => {
            println!("cargo:warning=cannot run plugins/build.sh: {e}");
            std::process::exit(1);
        }
    }
    println!("cargo:rustc-env=WASMGATE_PLUGIN_DIR={}", root.join("target/plugins").display());
    println!("cargo:rustc-env=WASMGATE_GUEST_DIR={}", root.join("target/test-guests").display());
    println!("cargo:rustc-env=WASMGATE_ROOT={}", root.display());
}
