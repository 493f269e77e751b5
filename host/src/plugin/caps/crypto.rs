//! The `crypto` capability: signature verification in native code (ring),
//! with keys held by the host. An HMAC key is made from a granted secret
//! without the secret entering the plugin, and a key verifies only the
//! algorithms of its own kind, which is what rules out algorithm confusion.

use wasmgate_common::keys::{self, Algorithm, Key};
use wasmtime::component::Resource;

use super::super::host_api::{HostState, wasmgate::plugin::crypto as wit};

/// A key in a plugin's resource table.
pub type KeyHandle = Key;

fn to_common(a: wit::Algorithm) -> Algorithm {
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

fn key_err(e: keys::KeyError) -> wit::KeyError {
    match e {
        keys::KeyError::Invalid(m) => wit::KeyError::Invalid(m),
        keys::KeyError::Unsupported(m) => wit::KeyError::Unsupported(m),
    }
}

/// Most keys one plugin instance may hold; a plugin that leaks handles gets
/// an error rather than growing the gateway's memory.
const MAX_KEYS: usize = 1024;

impl HostState {
    fn push_key(&mut self, key: Result<Key, wit::KeyError>) -> wasmtime::Result<Result<Resource<Key>, wit::KeyError>> {
        if !self.caps.crypto {
            return Ok(Err(wit::KeyError::NotGranted("crypto is not granted".into())));
        }
        let key = match key {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        if self.keys_held >= MAX_KEYS {
            return Ok(Err(wit::KeyError::Invalid(format!("more than {MAX_KEYS} keys held"))));
        }
        self.keys_held += 1;
        Ok(Ok(self.table.push(key)?))
    }
}

impl wit::Host for HostState {}

impl wit::HostKey for HostState {
    fn from_jwk(&mut self, jwk: String) -> wasmtime::Result<Result<Resource<Key>, wit::KeyError>> {
        self.push_key(Key::from_jwk(&jwk).map_err(key_err))
    }

    fn from_pem(&mut self, pem: String) -> wasmtime::Result<Result<Resource<Key>, wit::KeyError>> {
        self.push_key(Key::from_pem(&pem).map_err(key_err))
    }

    fn from_secret(&mut self, name: String) -> wasmtime::Result<Result<Resource<Key>, wit::KeyError>> {
        let key = match self.caps.secrets.get(&name) {
            Some(secret) => Key::hmac(secret.expose()).map_err(key_err),
            None => Err(wit::KeyError::NotGranted(format!("secret `{name}` is not granted"))),
        };
        self.push_key(key)
    }

    fn algorithms(&mut self, key: Resource<Key>) -> wasmtime::Result<Vec<wit::Algorithm>> {
        Ok(self.table.get(&key)?.algorithms().into_iter().map(to_wit).collect())
    }

    fn verify(
        &mut self,
        key: Resource<Key>,
        alg: wit::Algorithm,
        message: Vec<u8>,
        signature: Vec<u8>,
    ) -> wasmtime::Result<bool> {
        Ok(self.table.get(&key)?.verify(to_common(alg), &message, &signature))
    }

    fn drop(&mut self, key: Resource<Key>) -> wasmtime::Result<()> {
        self.table.delete(key)?;
        self.keys_held = self.keys_held.saturating_sub(1);
        Ok(())
    }
}
