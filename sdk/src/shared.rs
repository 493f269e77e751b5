//! Bytes every instance of this plugin shares, in the gateway's memory: what
//! one instance fetched or built (a JWKS, a compiled table), the next one
//! finds — another worker's instance, one replacing a recycled instance,
//! each request's under `per-request` isolation when the operator granted
//! `shared = true` (without it such an instance finds nothing and keeps
//! nothing). Only this plugin's own (never another plugin's, never in
//! Redis).
//!
//! It lasts as long as the config the plugin was loaded with: a reload (a
//! new build of the plugin, new grants) starts empty, and so does a
//! restart. At most [`MAX_BYTES`] a plugin, keys and values together (each
//! entry counted [`ENTRY_BYTES`] more), keys at most [`MAX_KEY_BYTES`]; a
//! write past them, or where the instances share nothing, is refused and
//! changes nothing. Instances on different workers read and write it concurrently,
//! each call whole: write what a reader can use on its own (a value with
//! its own timestamp, say), not pieces under several keys. Using it in a
//! request hook makes that call's outcome one the gateway does not keep
//! ([`crate::Plugin::depends_on`]).
//!
//! Needs a gateway of WIT 0.1.6 or later.

pub use wasmgate_common::shared::{ENTRY_BYTES, MAX_BYTES, MAX_KEY_BYTES};

#[cfg(target_arch = "wasm32")]
use crate::bindings::wasmgate::plugin::shared as backend;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::stand_in::shared as backend;

/// A copy of the value at `key`.
pub fn get(key: &str) -> Option<Vec<u8>> {
    backend::get(key)
}

/// Sets `key` to `value`; false (nothing changed) when the key is over
/// [`MAX_KEY_BYTES`], the plugin's bytes would pass [`MAX_BYTES`], or its
/// instances share nothing (`per-request` without `grants.shared`).
pub fn set(key: &str, value: &[u8]) -> bool {
    backend::set(key, value)
}

/// Removes `key`; whether it was there.
pub fn delete(key: &str) -> bool {
    backend::delete(key)
}
