//! Pure-Rust pieces shared by the gateway host and the plugin SDK's native
//! test doubles.
//!
//! The host backs the `crypto` and in-memory `store` capabilities
//! (`wit/capabilities.wit`) with these types; the SDK's test doubles use the
//! very same code, so a plugin's unit tests check real signatures and get the
//! real rate-limit arithmetic without building Wasm. Nothing here knows about
//! Wasm, async runtimes or the network, which is what lets both sides share it.

#![forbid(unsafe_code)]

pub mod keys;
pub mod memstore;
