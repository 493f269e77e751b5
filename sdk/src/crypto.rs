//! Signature verification in the gateway's native code (needs
//! `grants.crypto`). Keys are handles: an HMAC key made from a granted secret
//! never enters the plugin as bytes, and a key verifies only the algorithms
//! of its kind — an RSA public key can never pass for an HMAC secret.

use std::fmt;

/// A JWS algorithm: the gateway's own type.
pub use wasmgate_common::algorithm::Algorithm;

/// Why a key could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Invalid(String),
    Unsupported(String),
    NotGranted(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(m) => write!(f, "invalid key: {m}"),
            Self::Unsupported(m) => write!(f, "unsupported key: {m}"),
            Self::NotGranted(m) => write!(f, "not granted: {m}"),
        }
    }
}

impl std::error::Error for KeyError {}

#[cfg(target_arch = "wasm32")]
mod backend {
    use super::{Algorithm, KeyError};
    use crate::bindings::wasmgate::plugin::crypto as wit;

    pub type Key = wit::Key;

    fn err(e: wit::KeyError) -> KeyError {
        match e {
            wit::KeyError::Invalid(m) => KeyError::Invalid(m),
            wit::KeyError::Unsupported(m) => KeyError::Unsupported(m),
            wit::KeyError::NotGranted(m) => KeyError::NotGranted(m),
        }
    }

    fn to_wit(a: Algorithm) -> wit::Algorithm {
        match a {
            Algorithm::Rs256 => wit::Algorithm::Rs256,
            Algorithm::Rs384 => wit::Algorithm::Rs384,
            Algorithm::Rs512 => wit::Algorithm::Rs512,
            Algorithm::Ps256 => wit::Algorithm::Ps256,
            Algorithm::Ps384 => wit::Algorithm::Ps384,
            Algorithm::Ps512 => wit::Algorithm::Ps512,
            Algorithm::Es256 => wit::Algorithm::Es256,
            Algorithm::Es384 => wit::Algorithm::Es384,
            Algorithm::EdDsa => wit::Algorithm::Eddsa,
            Algorithm::Hs256 => wit::Algorithm::Hs256,
            Algorithm::Hs384 => wit::Algorithm::Hs384,
            Algorithm::Hs512 => wit::Algorithm::Hs512,
        }
    }

    fn from_wit(a: wit::Algorithm) -> Algorithm {
        match a {
            wit::Algorithm::Rs256 => Algorithm::Rs256,
            wit::Algorithm::Rs384 => Algorithm::Rs384,
            wit::Algorithm::Rs512 => Algorithm::Rs512,
            wit::Algorithm::Ps256 => Algorithm::Ps256,
            wit::Algorithm::Ps384 => Algorithm::Ps384,
            wit::Algorithm::Ps512 => Algorithm::Ps512,
            wit::Algorithm::Es256 => Algorithm::Es256,
            wit::Algorithm::Es384 => Algorithm::Es384,
            wit::Algorithm::Eddsa => Algorithm::EdDsa,
            wit::Algorithm::Hs256 => Algorithm::Hs256,
            wit::Algorithm::Hs384 => Algorithm::Hs384,
            wit::Algorithm::Hs512 => Algorithm::Hs512,
        }
    }

    pub fn from_jwk(jwk: &str) -> Result<Key, KeyError> {
        wit::Key::from_jwk(jwk).map_err(err)
    }
    pub fn from_pem(pem: &str) -> Result<Key, KeyError> {
        wit::Key::from_pem(pem).map_err(err)
    }
    pub fn from_secret(name: &str) -> Result<Key, KeyError> {
        wit::Key::from_secret(name).map_err(err)
    }
    pub fn algorithms(k: &Key) -> Vec<Algorithm> {
        k.algorithms().into_iter().map(from_wit).collect()
    }
    pub fn verify(k: &Key, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        k.verify(to_wit(alg), message, signature)
    }
}

#[cfg(not(target_arch = "wasm32"))]
use crate::testing::stand_in::crypto as backend;

/// A verification key held by the gateway.
#[derive(Debug)]
pub struct Key(backend::Key);

impl Key {
    /// A public key from a JWK (JSON object text).
    pub fn from_jwk(jwk: &str) -> Result<Self, KeyError> {
        backend::from_jwk(jwk).map(Self)
    }

    /// A public key from PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        backend::from_pem(pem).map(Self)
    }

    /// An HMAC key from a secret the operator granted.
    pub fn from_secret(name: &str) -> Result<Self, KeyError> {
        backend::from_secret(name).map(Self)
    }

    /// The algorithms this key verifies.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        backend::algorithms(&self.0)
    }

    /// Whether `signature` is `alg`'s signature of `message` by this key.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        backend::verify(&self.0, alg, message, signature)
    }
}
