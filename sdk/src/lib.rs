//! The wasmgate plugin SDK: everything a policy author depends on.
//!
//! A policy is a type that implements [`Plugin`], plus one call to
//! [`export_plugin!`]. It is built with `cargo build --target wasm32-wasip2`
//! into a component that the gateway loads from its plugin directory.
//!
//! ```
//! use wasmgate_sdk::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! struct Config {
//!     header: String,
//! }
//!
//! struct RequireHeader {
//!     header: String,
//! }
//!
//! impl Plugin for RequireHeader {
//!     type Config = Config;
//!
//!     fn new(config: Config) -> Result<Self, ConfigError> {
//!         Ok(Self { header: config.header.to_ascii_lowercase() })
//!     }
//!
//!     fn on_request(&self, req: &mut Request<'_>) -> Decision {
//!         match req.header(&self.header) {
//!             Some(_) => Decision::Continue,
//!             None => Decision::respond(Reply::text(400, "missing header")),
//!         }
//!     }
//! }
//!
//! export_plugin!(RequireHeader);
//!
//! // Plugin logic runs natively in unit tests, without building Wasm:
//! let plugin = wasmgate_sdk::testing::configure::<RequireHeader>(r#"{"header":"x-tenant"}"#).unwrap();
//! let mut req = wasmgate_sdk::testing::TestRequest::get("/");
//! let decision = wasmgate_sdk::testing::on_request(&plugin, &mut req);
//! assert_eq!(decision.reply().map(|r| r.status), Some(400));
//! ```
//!
//! Nothing in the SDK panics: accessors return `Option`/`Result`, and a
//! refused edit is an [`EditError`] the plugin can handle.

#[doc(hidden)]
// The plugins' allocator: installed on wasm32, tested natively.
#[cfg(any(test, all(target_arch = "wasm32", feature = "allocator")))]
mod alloc;
pub mod bindings;
pub mod crypto;
mod decision;
mod exchange;
pub mod host;
pub mod http;
pub mod keys;
mod plugin;
pub use wasmgate_common::query;
pub mod secrets;
pub mod shared;
pub mod store;
pub mod testing;

/// Numbers in decimal without `fmt` (header values, cache keys).
pub use wasmgate_common::decimal::Decimal;
/// Durations (`"250ms"`, `"1h 30m"`) and sizes (`"64KiB"`, `"10MB"`, or a
/// number of bytes) written as the gateway's own config writes them:
/// `HumanDuration` and `ByteSize` deserialize from config fields, and
/// `parse_duration`/`parse_size` read text, with messages that say how to
/// write one.
pub use wasmgate_common::units;

/// Address ranges (`10.0.0.0/8`), as the gateway's `trusted_proxies` reads them.
pub use wasmgate_common::cidr;
/// Path patterns (`/v1/users/{id}`, `/api/{*rest}`) and templates
/// (`/users/{id}`) in the gateway's route syntax: a plugin that rewrites
/// paths reads them exactly as the router does.
pub use wasmgate_common::path;

pub use decision::{Decision, Reply};
pub use exchange::{
    ClientCertificate, EditError, GATEWAY_REQUEST_HEADERS, HeaderEdit, Headers, MANAGED_HEADERS, Request, Response,
    STATUSES, check_header, check_header_name, check_header_value, check_request_header, is_token,
};
pub use host::{clock, context, log};
pub use plugin::{ConfigError, FixedHeaders, Info, MAX_FIXED_HEADERS, MAX_REQUEST_FACTS, Plugin, RequestFact};

/// The WIT package this SDK builds plugins against.
pub const WIT_PACKAGE: &str = "wasmgate:plugin@0.1.6";

/// The names most plugins need, in one `use`.
pub mod prelude {
    pub use crate::{
        ConfigError, Decision, EditError, FixedHeaders, HeaderEdit, Headers, Info, Plugin, Reply, Request, RequestFact,
        Response, check_header_name, check_header_value, context, export_plugin, log,
    };
}

/// Makes a [`Plugin`] type the component's export. Use it once per plugin
/// crate, at the top level.
///
/// With `config_schema = "FILE"` (a path from the crate's directory) the
/// component carries that file, the JSON Schema of the plugin's
/// [`Config`](Plugin::Config), for `wasmgate inspect` and whoever writes
/// its config; the config type must then derive `schemars::JsonSchema`
/// beside `Deserialize`. The macro writes a unit test that fails when the
/// file is not the config type's schema (the one
/// [`testing::config_schema`] makes) and rewrites the file when
/// `WASMGATE_BLESS` is set: the file and the type cannot drift apart.
///
/// ```
/// use wasmgate_sdk::prelude::*;
///
/// /// The route's `config` table.
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// #[serde(deny_unknown_fields)]
/// struct Config {
///     /// The header every request must carry.
///     header: String,
/// }
///
/// struct RequireHeader(String);
///
/// impl Plugin for RequireHeader {
///     type Config = Config;
///
///     fn new(config: Config) -> Result<Self, ConfigError> {
///         Ok(Self(config.header))
///     }
/// }
///
/// export_plugin!(RequireHeader, config_schema = "config.schema.json");
///
/// // What the file must hold (and `WASMGATE_BLESS=1` writes):
/// let schema = wasmgate_sdk::testing::config_schema::<Config>();
/// assert!(schema.contains(r#""additionalProperties": false"#));
/// assert!(schema.contains("The header every request must carry."));
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty, config_schema = $file:literal) => {
        $crate::export_plugin!($plugin);

        // Read by the gateway without running the plugin (a custom section;
        // kept for its `link_section`, like the name's below).
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[unsafe(link_section = "wasmgate-config-schema")]
            static CONFIG_SCHEMA: [u8; ::std::include_bytes!(::std::concat!(
                ::std::env!("CARGO_MANIFEST_DIR"),
                "/",
                $file
            ))
            .len()] = *::std::include_bytes!(::std::concat!(::std::env!("CARGO_MANIFEST_DIR"), "/", $file));
        };

        #[cfg(all(test, not(target_arch = "wasm32")))]
        mod wasmgate_config_schema {
            use super::*;

            #[test]
            fn the_file_is_the_config_types_schema() {
                let file = ::std::concat!(::std::env!("CARGO_MANIFEST_DIR"), "/", $file);
                if let Err(e) = $crate::testing::check_config_schema::<<$plugin as $crate::Plugin>::Config>(file) {
                    panic!("{e}");
                }
            }
        }
    };
    ($plugin:ty) => {
        // Only a component has exports; natively the plugin is a library whose
        // logic unit tests call through `wasmgate_sdk::testing`.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            // Who the plugin is, for the gateway's logs and metrics and for
            // `wasmgate push` (a custom section: no code, no import).
            const INFO: &str = ::std::concat!(
                "{\"name\":\"",
                ::std::env!("CARGO_PKG_NAME"),
                "\",\"version\":\"",
                ::std::env!("CARGO_PKG_VERSION"),
                "\"}"
            );
            // A `link_section` static is kept as it is; `#[used]` would also
            // copy it into the plugin's memory image, which never reads it.
            #[unsafe(link_section = "wasmgate-plugin")]
            static PLUGIN_INFO: [u8; INFO.len()] = $crate::__private::bytes(INFO);

            ::std::thread_local! {
                static PLUGIN: ::std::cell::RefCell<::std::option::Option<$plugin>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }

            struct Export;

            impl $crate::__private::Guest for Export {
                fn configure(
                    config: ::std::string::String,
                ) -> ::std::result::Result<$crate::__private::PluginInfo, ::std::string::String> {
                    $crate::__private::configure::<$plugin>(&PLUGIN, &config)
                }

                fn on_request(req: &$crate::__private::WitRequest) -> $crate::__private::WitDecision {
                    $crate::__private::on_request::<$plugin>(&PLUGIN, req)
                }

                fn on_response(
                    req: &$crate::__private::WitRequest,
                    resp: &$crate::__private::WitResponse,
                ) -> $crate::__private::WitDecision {
                    $crate::__private::on_response::<$plugin>(&PLUGIN, req, resp)
                }
            }

    $crate::__private::export!(Export with_types_in $crate::__private::bindings);
        };
    };
}

/// Used by [`export_plugin!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings;
    pub use crate::bindings::export;
    pub use crate::bindings::exports::wasmgate::plugin::policy::Guest;
    pub use crate::bindings::wasmgate::plugin::types::{
        Decision as WitDecision, PluginInfo, Request as WitRequest, Response as WitResponse,
    };
    pub use crate::plugin::{configure, on_request, on_response};

    /// `text`'s bytes as an array, for a custom section.
    pub const fn bytes<const N: usize>(text: &str) -> [u8; N] {
        let mut out = [0; N];
        let mut i = 0;
        while i < N && i < text.len() {
            out[i] = text.as_bytes()[i];
            i += 1;
        }
        out
    }
}
