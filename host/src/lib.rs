//! wasmgate: an API gateway whose native core is small and fast and whose
//! every policy is a sandboxed WebAssembly component.
//!
//! The request path, one module per step:
//!
//! ```text
//! server (accept, HTTP/1.1 + HTTP/2) → routing → proxy (request phase:
//! plugin 1…n) → upstream (balance, forward) → proxy (response phase:
//! plugin n…1) → client
//! ```
//!
//! [`config`] reads the TOML; [`gateway`] builds immutable snapshots from it
//! (routes, upstreams, configured plugin chains) and swaps them atomically on
//! reload; [`plugin`] is the Wasm runtime; [`exchange`] is the request as
//! plugins see it.

pub mod admin;
pub mod config;
mod control;
pub mod exchange;
pub mod files;
pub mod gateway;
pub mod oci;
pub mod plugin;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod telemetry;
pub(crate) mod timer;
pub mod tls;
pub mod upstream;
pub mod worker;

pub use gateway::{Gateway, StartError};
