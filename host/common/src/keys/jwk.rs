//! JWK (RFC 7517/7518) public keys: how a plugin hands over a key it fetched
//! from an identity provider's JWKS or read from its config.

use serde::Deserialize;

use super::{Algorithm, Curve, Key, KeyError, b64url_decode};

/// The members this parser reads. Unknown members (`kid`, `use`, `x5c`,
/// `key_ops`, …) are ignored on purpose: JWKS documents carry many of them.
#[derive(Deserialize)]
struct Jwk {
    kty: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    /// Only read to refuse private keys.
    d: Option<serde::de::IgnoredAny>,
}

pub(super) fn parse(json: &str) -> Result<Key, KeyError> {
    let jwk: Jwk = serde_json::from_str(json)
        .map_err(|error| KeyError::Invalid(format!("the JWK is not a JSON object: {error}")))?;
    if jwk.d.is_some() {
        return Err(KeyError::Invalid(
            "the JWK holds a private key (member \"d\"); give only its public members".into(),
        ));
    }
    let kty = jwk.kty.as_deref().ok_or_else(|| KeyError::Invalid("the JWK has no \"kty\" member".into()))?;
    let key = match kty {
        "RSA" => Key::rsa(&member(jwk.n.as_deref(), "n", kty)?, &member(jwk.e.as_deref(), "e", kty)?)?,
        "EC" => {
            let curve = match curve(&jwk, kty)? {
                "P-256" => Curve::P256,
                "P-384" => Curve::P384,
                other => {
                    return Err(KeyError::Unsupported(format!(
                        "EC curve \"{other}\" is not supported; use P-256 (ES256) or P-384 (ES384)"
                    )));
                }
            };
            Key::ec(curve, &member(jwk.x.as_deref(), "x", kty)?, &member(jwk.y.as_deref(), "y", kty)?)?
        }
        "OKP" => match curve(&jwk, kty)? {
            "Ed25519" => Key::ed25519(&member(jwk.x.as_deref(), "x", kty)?)?,
            other => {
                return Err(KeyError::Unsupported(format!(
                    "OKP curve \"{other}\" is not supported; only Ed25519 (EdDSA) is"
                )));
            }
        },
        "oct" => {
            return Err(KeyError::Unsupported(
                "a JWK of kty \"oct\" is a shared secret; HMAC keys come only from granted secrets, \
                 never from a JWK"
                    .into(),
            ));
        }
        other => {
            return Err(KeyError::Unsupported(format!("JWK kty \"{other}\" is not supported; use RSA, EC or OKP")));
        }
    };
    match jwk.alg.as_deref() {
        None => Ok(key),
        Some(name) => match Algorithm::from_jwt(name) {
            Some(alg) => key.restricted_to(alg),
            None => Err(KeyError::Unsupported(format!("the JWK's \"alg\" \"{name}\" is not a supported algorithm"))),
        },
    }
}

fn curve<'a>(jwk: &'a Jwk, kty: &str) -> Result<&'a str, KeyError> {
    jwk.crv.as_deref().ok_or_else(|| KeyError::Invalid(format!("the {kty} JWK has no \"crv\" member")))
}

fn member(value: Option<&str>, name: &str, kty: &str) -> Result<Vec<u8>, KeyError> {
    let text = value.ok_or_else(|| KeyError::Invalid(format!("the {kty} JWK has no \"{name}\" member")))?;
    b64url_decode(text).ok_or_else(|| KeyError::Invalid(format!("the {kty} JWK's \"{name}\" member is not base64url")))
}
