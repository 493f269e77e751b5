//! Bindings generated from `wit/` once, here; plugin authors never depend on
//! wit-bindgen themselves.

wit_bindgen::generate!({
    world: "policy-plugin",
    path: "../wit",
    pub_export_macro: true,
    export_macro_name: "export",
    default_bindings_module: "wasmgate_sdk::__private::bindings",
    generate_all,
});
