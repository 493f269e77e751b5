//! Signature verification behind the `crypto` capability.
//!
//! A plugin that checks a JWT hands the gateway a key (a JWK, a PEM public key,
//! or the name of a granted HMAC secret) and asks it to verify the signing
//! input against the signature. Verification runs here, in native code, with
//! `ring`; the plugin never holds an HMAC secret's bytes.
//!
//! A [`Key`] knows the exact set of algorithms it may verify ([`Key::algorithms`])
//! and [`Key::verify`] refuses every other one. That set is what stops algorithm
//! confusion: an RSA public key is never an HMAC secret, so a token signed with
//! HS256 using the public key's bytes as the secret can never pass.

mod der;
mod jwk;
mod pem;
#[cfg(test)]
mod testdata;
#[cfg(test)]
mod tests;

use std::fmt;

pub use crate::algorithm::Algorithm;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ring::{agreement, hmac, rand, signature};

/// Why a key could not be built. The message is for the operator who
/// configured the key: it says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The key is malformed or not a valid key of its kind.
    Invalid(String),
    /// The key is well formed but of a kind or size the gateway refuses.
    Unsupported(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Invalid(message) => write!(f, "invalid key: {message}"),
            KeyError::Unsupported(message) => write!(f, "unsupported key: {message}"),
        }
    }
}

impl std::error::Error for KeyError {}

/// A verification key: an RSA, EC or Ed25519 public key, or an HMAC secret.
///
/// `Debug` names the kind of key and its algorithms, never its material.
#[derive(Clone)]
pub struct Key {
    material: Material,
    algorithms: Vec<Algorithm>,
}

#[derive(Clone)]
enum Material {
    /// Big-endian `n` and `e` without leading zeros, as `ring` wants them.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        bits: usize,
    },
    /// The uncompressed SEC1 point `04 || x || y`.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Ed25519 {
        public: Vec<u8>,
    },
    /// Boxed: three HMAC states are ten times the size of the other variants.
    Hmac(Box<HmacKeys>),
}

/// One `ring` key per hash, so the secret is hashed into the HMAC state once.
#[derive(Clone)]
struct HmacKeys {
    sha256: hmac::Key,
    sha384: hmac::Key,
    sha512: hmac::Key,
    /// The secret's length, which decides the algorithms it may verify.
    len: usize,
}

/// The shortest HMAC secret each algorithm takes: its hash's size (RFC 7518
/// §3.2 — a shorter one can be found from a single token by brute force).
const HMAC_MIN_BYTES: [(Algorithm, usize); 3] =
    [(Algorithm::Hs256, 32), (Algorithm::Hs384, 48), (Algorithm::Hs512, 64)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }

    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

/// ring verifies RSA moduli of 2048..=8192 bits; smaller keys are also refused
/// as too weak, larger ones would make every `verify` fail silently.
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;
/// ring's bound on public exponents (it refuses larger ones as a DoS vector).
const RSA_MAX_EXPONENT: u64 = (1 << 33) - 1;
const ED25519_KEY_LEN: usize = 32;

impl Key {
    /// A public key from a JWK (RFC 7517/7518): `kty` RSA (`n`, `e`), EC
    /// (`crv` P-256 or P-384, `x`, `y`) or OKP (`crv` Ed25519, `x`).
    ///
    /// An `alg` member restricts the key to that one algorithm. `use`, `kid`
    /// and other members are ignored. `oct` keys are refused: HMAC keys come
    /// only from granted secrets, so a secret never travels in plugin config.
    /// JWKs with private members (`d`) are refused too, so a private key pasted
    /// by mistake is caught instead of silently reduced to its public half.
    pub fn from_jwk(json: &str) -> Result<Key, KeyError> {
        jwk::parse(json)
    }

    /// A public key from PEM: `PUBLIC KEY` (SPKI: RSA, EC P-256/P-384,
    /// Ed25519) or `RSA PUBLIC KEY` (PKCS#1).
    pub fn from_pem(pem: &str) -> Result<Key, KeyError> {
        pem::parse(pem)
    }

    /// An HMAC key from a secret's bytes: HS256 from 32 bytes, HS384 from
    /// 48, HS512 from 64 (RFC 7518 §3.2); a shorter secret is refused.
    pub fn hmac(secret: &[u8]) -> Result<Key, KeyError> {
        if secret.is_empty() {
            return Err(KeyError::Invalid("the HMAC secret is empty".into()));
        }
        if secret.len() < 32 {
            return Err(KeyError::Invalid(format!(
                "the HMAC secret is {} bytes; HS256 needs at least 32 (HS384 48, HS512 64: RFC 7518 §3.2), \
                 as a shorter one can be found from one token by brute force; use a longer random secret \
                 (`openssl rand -base64 48`)",
                secret.len()
            )));
        }
        let material = Material::Hmac(Box::new(HmacKeys {
            sha256: hmac::Key::new(hmac::HMAC_SHA256, secret),
            sha384: hmac::Key::new(hmac::HMAC_SHA384, secret),
            sha512: hmac::Key::new(hmac::HMAC_SHA512, secret),
            len: secret.len(),
        }));
        Ok(Key::new(material))
    }

    /// What this key can verify.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        self.algorithms.clone()
    }

    /// Whether `signature` is a valid `alg` signature of `message` under this
    /// key. False, without any cryptography, when `alg` is not one of
    /// [`Key::algorithms`]. ECDSA signatures are JWS's fixed-size `r || s`.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        if !self.algorithms.contains(&alg) {
            return false;
        }
        // The match repeats the key-kind check on purpose: even if `algorithms`
        // were ever built wrong, a key of one kind has no arm for another's.
        match (&self.material, alg) {
            (Material::Rsa { n, e, .. }, alg) => {
                let Some(params) = rsa_params(alg) else { return false };
                signature::RsaPublicKeyComponents { n, e }.verify(params, message, signature).is_ok()
            }
            (Material::Ec { curve: Curve::P256, point }, Algorithm::Es256) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            (Material::Ec { curve: Curve::P384, point }, Algorithm::Es384) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            (Material::Ed25519 { public }, Algorithm::EdDsa) => {
                signature::UnparsedPublicKey::new(&signature::ED25519, public).verify(message, signature).is_ok()
            }
            // `hmac::verify` compares in constant time.
            (Material::Hmac(keys), Algorithm::Hs256) => hmac::verify(&keys.sha256, message, signature).is_ok(),
            (Material::Hmac(keys), Algorithm::Hs384) => hmac::verify(&keys.sha384, message, signature).is_ok(),
            (Material::Hmac(keys), Algorithm::Hs512) => hmac::verify(&keys.sha512, message, signature).is_ok(),
            _ => false,
        }
    }

    fn new(material: Material) -> Key {
        let algorithms = Algorithm::ALL.into_iter().filter(|alg| material.fits(*alg)).collect();
        Key { material, algorithms }
    }

    /// Narrows the key to the one algorithm a JWK's `alg` names.
    fn restricted_to(mut self, alg: Algorithm) -> Result<Key, KeyError> {
        if !self.algorithms.contains(&alg) {
            return Err(KeyError::Invalid(format!(
                "the JWK's \"alg\" is {alg}, which {} cannot verify (it verifies {})",
                self.material.describe(),
                names(&self.algorithms)
            )));
        }
        self.algorithms = vec![alg];
        Ok(self)
    }

    /// An RSA public key from its modulus and exponent (big-endian, leading
    /// zeros allowed: DER and some JWK producers add them).
    fn rsa(n: &[u8], e: &[u8]) -> Result<Key, KeyError> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        let Some(&top) = n.first() else {
            return Err(KeyError::Invalid("the RSA modulus is zero".into()));
        };
        let bits = n.len() * 8 - top.leading_zeros() as usize;
        if bits < RSA_MIN_BITS {
            return Err(KeyError::Unsupported(format!(
                "the RSA key has {bits} bits; at least {RSA_MIN_BITS} are required"
            )));
        }
        if bits > RSA_MAX_BITS {
            return Err(KeyError::Unsupported(format!(
                "the RSA key has {bits} bits; at most {RSA_MAX_BITS} are supported"
            )));
        }
        if n.last().is_some_and(|low| low & 1 == 0) {
            return Err(KeyError::Invalid("the RSA modulus is even, so it is not an RSA modulus".into()));
        }
        let exponent = if e.len() > 8 { u64::MAX } else { e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)) };
        if exponent > RSA_MAX_EXPONENT {
            return Err(KeyError::Unsupported("the RSA public exponent is over 33 bits".into()));
        }
        if exponent < 3 || exponent & 1 == 0 {
            return Err(KeyError::Invalid(format!(
                "the RSA public exponent is {exponent}; it must be odd and at least 3"
            )));
        }
        Ok(Key::new(Material::Rsa { n: n.to_vec(), e: e.to_vec(), bits }))
    }

    /// An EC public key from its affine coordinates, each the curve's full size.
    fn ec(curve: Curve, x: &[u8], y: &[u8]) -> Result<Key, KeyError> {
        let len = curve.coordinate_len();
        for (name, coordinate) in [("x", x), ("y", y)] {
            if coordinate.len() != len {
                return Err(KeyError::Invalid(format!(
                    "the {} coordinate \"{name}\" is {} bytes; it must be exactly {len}",
                    curve.name(),
                    coordinate.len()
                )));
            }
        }
        let mut point = Vec::with_capacity(1 + 2 * len);
        point.push(0x04);
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        Key::ec_point(curve, point)
    }

    /// An EC public key from an uncompressed SEC1 point.
    fn ec_point(curve: Curve, point: Vec<u8>) -> Result<Key, KeyError> {
        let len = curve.coordinate_len();
        match point.first() {
            Some(0x04) if point.len() == 1 + 2 * len => {}
            Some(0x02 | 0x03) => {
                return Err(KeyError::Unsupported(format!(
                    "the {} point is compressed; give the uncompressed form",
                    curve.name()
                )));
            }
            _ => return Err(KeyError::Invalid(format!("the {} point is not a valid SEC1 point", curve.name()))),
        }
        // ring has no public "parse this ECDSA key" call: verification would
        // just return false for a point off the curve. An ECDH agreement with a
        // throwaway key runs ring's full public-key validation, so a bad key is
        // reported when it is configured, not as mysteriously failing tokens.
        let ecdh = match curve {
            Curve::P256 => &agreement::ECDH_P256,
            Curve::P384 => &agreement::ECDH_P384,
        };
        let valid = agreement::EphemeralPrivateKey::generate(ecdh, &rand::SystemRandom::new())
            .and_then(|ours| agreement::agree_ephemeral(ours, &agreement::UnparsedPublicKey::new(ecdh, &point), |_| ()))
            .is_ok();
        if !valid {
            return Err(KeyError::Invalid(format!("the point is not on curve {}", curve.name())));
        }
        Ok(Key::new(Material::Ec { curve, point }))
    }

    fn ed25519(public: &[u8]) -> Result<Key, KeyError> {
        if public.len() != ED25519_KEY_LEN {
            return Err(KeyError::Invalid(format!(
                "the Ed25519 public key is {} bytes; it must be exactly {ED25519_KEY_LEN}",
                public.len()
            )));
        }
        Ok(Key::new(Material::Ed25519 { public: public.to_vec() }))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key").field("kind", &self.material.describe()).field("algorithms", &self.algorithms).finish()
    }
}

impl Material {
    fn fits(&self, alg: Algorithm) -> bool {
        match self {
            Material::Rsa { .. } => rsa_params(alg).is_some(),
            Material::Ec { curve: Curve::P256, .. } => alg == Algorithm::Es256,
            Material::Ec { curve: Curve::P384, .. } => alg == Algorithm::Es384,
            Material::Ed25519 { .. } => alg == Algorithm::EdDsa,
            Material::Hmac(keys) => HMAC_MIN_BYTES.iter().any(|(a, min)| *a == alg && keys.len >= *min),
        }
    }

    /// What kind of key this is, without any of its material.
    fn describe(&self) -> String {
        match self {
            Material::Rsa { bits, .. } => format!("an RSA {bits}-bit public key"),
            Material::Ec { curve, .. } => format!("an EC {} public key", curve.name()),
            Material::Ed25519 { .. } => "an Ed25519 public key".into(),
            Material::Hmac(_) => "an HMAC secret".into(),
        }
    }
}

fn rsa_params(alg: Algorithm) -> Option<&'static signature::RsaParameters> {
    Some(match alg {
        Algorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn names(algorithms: &[Algorithm]) -> String {
    algorithms.iter().map(|alg| alg.jwt_name()).collect::<Vec<_>>().join(", ")
}

/// JWS and JWK use unpadded base64url; some producers pad anyway, which is harmless.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// base64url without padding, as JWS uses (padding is accepted too).
/// `None` for anything else, including the standard alphabet's `+` and `/`.
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    BASE64URL.decode(s).ok()
}
