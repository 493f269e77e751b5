//! Pure-Rust pieces shared by the gateway host and the plugin SDK: the units
//! of the config language (durations, sizes), path patterns and templates,
//! and the native test doubles.
//!
//! The host backs the `crypto` and in-memory `store` capabilities
//! (`wit/capabilities.wit`) and the `shared` interface with these types; the
//! SDK's test doubles use the very same code, so a plugin's unit tests check
//! real signatures and get the real rate-limit arithmetic without building
//! Wasm. Nothing here knows about
//! Wasm, async runtimes or the network, which is what lets both sides share it.
//! Without the `native` feature, `units`, `path`, `prehashed`, `query`,
//! `store_args`, `shared`, `algorithm` and `edit` build for Wasm too, so plugins read
//! durations, sizes and path patterns in their config exactly as the gateway
//! reads its own, and name signature algorithms with the gateway's type.

#![forbid(unsafe_code)]

pub mod algorithm;
pub mod cidr;
pub mod decimal;
pub mod edit;
pub mod fact;
#[cfg(feature = "native")]
pub mod keys;
#[cfg(feature = "native")]
pub mod memstore;
pub mod path;
pub mod prehashed;
pub mod query;
pub mod shared;
pub mod store_args;
pub mod units;
