//! Secrets the operator granted the plugin (`grants.secrets`). Prefer
//! [`crate::crypto::Key::from_secret`] for HMAC keys: it keeps the bytes out
//! of the plugin.

/// The secret's bytes, when granted.
pub fn get(name: &str) -> Option<Vec<u8>> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::wasmgate::plugin::secrets::get(name);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::stand_in::secret(name);
}
