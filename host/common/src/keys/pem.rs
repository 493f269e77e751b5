//! PEM public keys (RFC 7468): the form operators paste from `openssl` or an
//! identity provider's console.
//!
//! `PUBLIC KEY` is an X.509 SubjectPublicKeyInfo (RFC 5280 §4.1.2.7):
//!
//! ```text
//! SEQUENCE { SEQUENCE { OID algorithm, parameters OPTIONAL }, BIT STRING key }
//! ```
//!
//! whose key is a PKCS#1 `RSAPublicKey`, an uncompressed EC point, or the 32
//! bytes of an Ed25519 key. `RSA PUBLIC KEY` is the bare PKCS#1
//! `SEQUENCE { INTEGER n, INTEGER e }`.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::der::{self, Reader};
use super::{Curve, Key, KeyError};

const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]; // 1.2.840.113549.1.1.1
const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a]; // 1.2.840.113549.1.1.10
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]; // 1.2.840.10045.2.1
const PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]; // 1.2.840.10045.3.1.7
const SECP384R1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22]; // 1.3.132.0.34
const SECP521R1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23]; // 1.3.132.0.35
const X25519: &[u8] = &[0x2b, 0x65, 0x6e]; // 1.3.101.110
const X448: &[u8] = &[0x2b, 0x65, 0x6f]; // 1.3.101.111
const ED25519: &[u8] = &[0x2b, 0x65, 0x70]; // 1.3.101.112
const ED448: &[u8] = &[0x2b, 0x65, 0x71]; // 1.3.101.113

/// PEM bodies are standard base64; RFC 7468 lets parsers be lax about padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub(super) fn parse(text: &str) -> Result<Key, KeyError> {
    let (label, body) = armor(text)?;
    match label {
        "PUBLIC KEY" => spki(&decode(label, body)?),
        "RSA PUBLIC KEY" => {
            let der = decode(label, body)?;
            let mut outer = Reader::new(&der);
            let key = rsa_public_key(&mut outer)?;
            outer.finish("the RSAPublicKey")?;
            Ok(key)
        }
        _ => Err(KeyError::Unsupported(refusal(label))),
    }
}

/// Finds the one PEM block in `text`: its label and its base64 body.
/// Text before the block is explanatory text, which RFC 7468 allows.
fn armor(text: &str) -> Result<(&str, &str), KeyError> {
    const BEGIN: &str = "-----BEGIN ";
    const DASHES: &str = "-----";
    let start = text
        .find(BEGIN)
        .ok_or_else(|| KeyError::Invalid("not PEM: there is no \"-----BEGIN ...-----\" line".into()))?;
    let after_begin = &text[start + BEGIN.len()..];
    let label_end =
        after_begin.find(DASHES).ok_or_else(|| KeyError::Invalid("not PEM: the BEGIN line is not closed".into()))?;
    let label = &after_begin[..label_end];
    if label.contains(['\n', '\r']) {
        return Err(KeyError::Invalid("not PEM: the BEGIN line is not closed".into()));
    }
    let rest = &after_begin[label_end + DASHES.len()..];
    let end_line = format!("-----END {label}-----");
    let body_end = rest
        .find(&end_line)
        .ok_or_else(|| KeyError::Invalid(format!("the PEM block \"{label}\" has no \"{end_line}\" line")))?;
    if rest[body_end + end_line.len()..].contains(BEGIN) {
        return Err(KeyError::Invalid("the PEM text holds more than one block; give exactly one key".into()));
    }
    Ok((label, &rest[..body_end]))
}

fn decode(label: &str, body: &str) -> Result<Vec<u8>, KeyError> {
    if body.contains(':') {
        return Err(KeyError::Unsupported(format!(
            "the PEM block \"{label}\" has headers (an encrypted or legacy key?); give a plain public key"
        )));
    }
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    BASE64
        .decode(compact)
        .map_err(|error| KeyError::Invalid(format!("the PEM block \"{label}\" is not base64: {error}")))
}

/// Says what the operator gave instead of a public key, and how to get one.
fn refusal(label: &str) -> String {
    let hint = if label.contains("PRIVATE KEY") {
        "it is a private key: give only the public key (`openssl pkey -pubout`)"
    } else if label == "CERTIFICATE" {
        "extract the certificate's key with `openssl x509 -pubkey -noout`"
    } else {
        "give a \"PUBLIC KEY\" (SPKI) or \"RSA PUBLIC KEY\" (PKCS#1) block"
    };
    format!("PEM label \"{label}\" is not supported: {hint}")
}

fn spki(der: &[u8]) -> Result<Key, KeyError> {
    let mut outer = Reader::new(der);
    let mut info = Reader::new(outer.read(der::SEQUENCE, "the SubjectPublicKeyInfo")?);
    outer.finish("the SubjectPublicKeyInfo")?;
    let mut algorithm = Reader::new(info.read(der::SEQUENCE, "the AlgorithmIdentifier")?);
    let public_key = info.read_bit_string("the subjectPublicKey")?;
    info.finish("the subjectPublicKey")?;
    let oid = algorithm.read(der::OID, "the algorithm OID")?;

    match oid {
        RSA_ENCRYPTION => {
            // The parameters must be NULL; some encoders omit them, which is harmless.
            if !algorithm.is_empty() {
                algorithm.read(der::NULL, "the rsaEncryption parameters (NULL)")?;
            }
            algorithm.finish("the rsaEncryption parameters")?;
            let mut inner = Reader::new(public_key);
            let key = rsa_public_key(&mut inner)?;
            inner.finish("the RSAPublicKey")?;
            Ok(key)
        }
        EC_PUBLIC_KEY => {
            if algorithm.peek_tag() != Some(der::OID) {
                return Err(KeyError::Unsupported(
                    "the EC key has explicit curve parameters; give a key on a named curve (P-256 or P-384)".into(),
                ));
            }
            let curve = match algorithm.read(der::OID, "the EC named curve")? {
                PRIME256V1 => Curve::P256,
                SECP384R1 => Curve::P384,
                SECP521R1 => {
                    return Err(KeyError::Unsupported(
                        "EC curve P-521 is not supported; use P-256 (ES256) or P-384 (ES384)".into(),
                    ));
                }
                other => {
                    return Err(KeyError::Unsupported(format!(
                        "EC curve with OID {} is not supported; use P-256 (ES256) or P-384 (ES384)",
                        der::dotted(other)
                    )));
                }
            };
            algorithm.finish("the EC named curve")?;
            Key::ec_point(curve, public_key.to_vec())
        }
        ED25519 => {
            algorithm.finish("the Ed25519 algorithm OID (it takes no parameters)")?;
            Key::ed25519(public_key)
        }
        ED448 => Err(KeyError::Unsupported("Ed448 keys are not supported; only Ed25519 (EdDSA) is".into())),
        X25519 | X448 => Err(KeyError::Unsupported(
            "the key is an X25519/X448 key-agreement key, which cannot verify signatures".into(),
        )),
        RSASSA_PSS => Err(KeyError::Unsupported(
            "RSASSA-PSS-restricted keys (OID 1.2.840.113549.1.1.10) are not supported; \
             give the same key as a plain rsaEncryption key"
                .into(),
        )),
        other => {
            Err(KeyError::Unsupported(format!("public key algorithm OID {} is not supported", der::dotted(other))))
        }
    }
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
fn rsa_public_key(reader: &mut Reader<'_>) -> Result<Key, KeyError> {
    let mut fields = Reader::new(reader.read(der::SEQUENCE, "the RSAPublicKey")?);
    let n = fields.read_unsigned("the RSA modulus")?;
    let e = fields.read_unsigned("the RSA public exponent")?;
    fields.finish("the RSA public exponent")?;
    Key::rsa(n, e)
}
