//! The JWS signature algorithms (RFC 7518 §3.1) the `crypto` capability
//! names: one type for the gateway, which verifies with them natively
//! (`keys`), and for plugins, which read them from tokens.

use std::fmt;

/// A JWS signature algorithm (RFC 7518 §3.1), as named by the `crypto` interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
    Hs256,
    Hs384,
    Hs512,
}

impl Algorithm {
    /// Every algorithm, in the order of the WIT enum.
    pub const ALL: [Algorithm; 12] = [
        Algorithm::Rs256,
        Algorithm::Rs384,
        Algorithm::Rs512,
        Algorithm::Ps256,
        Algorithm::Ps384,
        Algorithm::Ps512,
        Algorithm::Es256,
        Algorithm::Es384,
        Algorithm::EdDsa,
        Algorithm::Hs256,
        Algorithm::Hs384,
        Algorithm::Hs512,
    ];

    /// The algorithm a JWS `alg` header names. `"none"` and anything unknown
    /// give `None`, so an unsigned token has no algorithm to verify with.
    pub fn from_jwt(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.jwt_name() == name)
    }

    /// The JWS `alg` name (case-sensitive, as RFC 7515 requires).
    pub fn jwt_name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
            Algorithm::Ps256 => "PS256",
            Algorithm::Ps384 => "PS384",
            Algorithm::Ps512 => "PS512",
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Hs256 => "HS256",
            Algorithm::Hs384 => "HS384",
            Algorithm::Hs512 => "HS512",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.jwt_name())
    }
}
