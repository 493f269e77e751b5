//! Exports `wasmgate:plugin/policy@0.2.0`, so the gateway (which speaks
//! 0.1.0) must refuse it by name at load time.

#[cfg(target_arch = "wasm32")]
#[expect(unsafe_code, reason = "the export glue wit-bindgen generates is unsafe")]
mod component {
    wit_bindgen::generate!({ world: "future-plugin", path: "wit" });

    struct Future;

    impl exports::wasmgate::plugin::policy::Guest for Future {
        fn configure(_config: String) -> Result<(), String> {
            Ok(())
        }
    }

    export!(Future);
}
