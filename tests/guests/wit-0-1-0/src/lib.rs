//! Built against `wasmgate:plugin@0.1.0`, the WIT as it was released (kept in
//! `wit/` beside this crate), without the SDK: 0.1.1 only added functions,
//! so the gateway must load this and run both of its hooks. It sets
//! `x-wit: 0.1.0` on the request and on the response.

#[cfg(target_arch = "wasm32")]
#[expect(unsafe_code, reason = "the export glue wit-bindgen generates is unsafe")]
mod component {
    wit_bindgen::generate!({ world: "policy-plugin", path: "wit" });

    use exports::wasmgate::plugin::policy::Guest;
    use wasmgate::plugin::types::{Decision, Hooks, PluginInfo, Request, Response};

    struct Old;

    impl Guest for Old {
        fn configure(_config: String) -> Result<PluginInfo, String> {
            Ok(PluginInfo { hooks: Hooks::ON_REQUEST | Hooks::ON_RESPONSE, request_body: false, response_body: false })
        }

        fn on_request(req: &Request) -> Decision {
            let _ = req.set_header("x-wit", b"0.1.0");
            Decision::Continue
        }

        fn on_response(_req: &Request, resp: &Response) -> Decision {
            let _ = resp.set_header("x-wit", b"0.1.0");
            Decision::Continue
        }
    }

    export!(Old);
}
