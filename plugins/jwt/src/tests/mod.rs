//! The plugin's tests through `wasmgate_sdk::testing`, with real keys: ring
//! signs, the gateway's own key code verifies.

mod algorithms;
mod claims;
mod config;
mod jwks;
mod requests;
pub mod support;
