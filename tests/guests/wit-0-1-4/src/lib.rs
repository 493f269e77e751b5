//! Built against `wasmgate:plugin@0.1.4`, the WIT as it was released (kept in
//! `wit/` beside this crate), without the SDK: 0.1.5 only added functions,
//! so the gateway must load this and run it, its 0.1.3 and 0.1.4 imports
//! too. Its request hook declares (`setup.memoize-request`, 0.1.4) that it
//! depends on the method alone, reads it as a value (`method-kind`, 0.1.3)
//! and sets `x-wit: 0.1.4 <method>` on the request.

#[cfg(target_arch = "wasm32")]
#[expect(unsafe_code, reason = "the export glue wit-bindgen generates is unsafe")]
mod component {
    wit_bindgen::generate!({ world: "policy-plugin", path: "wit" });

    use exports::wasmgate::plugin::policy::Guest;
    use wasmgate::plugin::setup::{self, RequestFact};
    use wasmgate::plugin::types::{Decision, Hooks, MethodKind, PluginInfo, Request, Response};

    struct Old;

    impl Guest for Old {
        fn configure(_config: String) -> Result<PluginInfo, String> {
            setup::memoize_request(&[RequestFact::Method]).map_err(|e| format!("memoize-request: {e:?}"))?;
            Ok(PluginInfo { hooks: Hooks::ON_REQUEST, request_body: false, response_body: false })
        }

        fn on_request(req: &Request) -> Decision {
            let method = match req.method_kind() {
                MethodKind::Get => "get",
                _ => "other",
            };
            let _ = req.set_header("x-wit", format!("0.1.4 {method}").as_bytes());
            Decision::Continue
        }

        fn on_response(_req: &Request, _resp: &Response) -> Decision {
            Decision::Continue
        }
    }

    export!(Old);
}
