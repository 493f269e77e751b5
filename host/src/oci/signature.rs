//! Cosign signatures (its signature spec, tag-based discovery): a manifest
//! at the tag `sha256-<digest>.sig` beside the signed one, each of whose
//! layers is a simple-signing payload naming the signed manifest's digest,
//! with the ECDSA P-256 (SHA-256, DER) signature of the payload in the
//! layer's `dev.cosignproject.cosign/signature` annotation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _, UnparsedPublicKey,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde::{Deserialize, Serialize};

/// The payload's media type.
pub const PAYLOAD_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// What a cosign payload says it is.
const PAYLOAD_KIND: &str = "cosign container image signature";

/// An ECDSA P-256 public key a plugin's publisher signs with (a PEM
/// `PUBLIC KEY`, as `cosign generate-key-pair` writes `cosign.pub` and
/// `openssl pkey -pubout` prints).
#[derive(Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The file it was read from, for messages.
    pub path: PathBuf,
    /// The uncompressed point.
    pub(crate) point: Vec<u8>,
}

impl std::fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedKey").field("path", &self.path).finish()
    }
}

/// The DER of a P-256 SubjectPublicKeyInfo before its 65-byte point:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (0 unused
/// bits) }.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

impl TrustedKey {
    /// Reads a PEM public key from `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let bytes = crate::files::read_regular(path, crate::files::MAX_CONFIG_FILE)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_pem(path, &bytes)
    }

    pub fn from_pem(path: &Path, pem: &[u8]) -> Result<Self, String> {
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem)
            .map_err(|_| format!("{} holds no PEM `PUBLIC KEY`", path.display()))?;
        match spki.as_ref().strip_prefix(P256_SPKI_PREFIX.as_slice()) {
            Some(point) if point.len() == 65 && point.first() == Some(&4) => {
                Ok(Self { path: path.to_owned(), point: point.to_vec() })
            }
            _ => Err(format!("{} is not an ECDSA P-256 public key (the one kind cosign signs with)", path.display())),
        }
    }

    fn verifies(&self, payload: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.point).verify(payload, signature).is_ok()
    }
}

/// The simple-signing payload.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    critical: Critical,
    #[serde(default)]
    optional: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Image {
    // cosign writes `docker-manifest-digest`; the containers/image spec
    // (and cosign's own spec) spell it with a capital D.
    #[serde(rename = "docker-manifest-digest", alias = "Docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// The tag a manifest's signatures are found at.
pub fn tag_of(manifest: &[u8; 32]) -> String {
    format!("sha256-{}.sig", hex::encode(manifest))
}

/// One signature of a signature manifest: its payload's digest and the
/// signature.
#[derive(Debug)]
pub struct Signed {
    pub payload: [u8; 32],
    pub signature: Vec<u8>,
}

/// The signatures a signature manifest holds (its layers of the payload
/// type with a signature annotation), as `layers` gives them: media type,
/// digest, annotations.
pub fn signatures<'a>(
    layers: impl Iterator<Item = (&'a str, &'a str, Option<&'a BTreeMap<String, String>>)>,
) -> Vec<Signed> {
    layers
        .filter(|(media_type, _, _)| *media_type == PAYLOAD_TYPE)
        .filter_map(|(_, digest, annotations)| {
            let payload = super::reference::parse_hex(digest.strip_prefix("sha256:")?)?;
            let signature = annotations?.get(SIGNATURE_ANNOTATION)?;
            let signature = base64::engine::general_purpose::STANDARD.decode(signature.trim()).ok()?;
            Some(Signed { payload, signature })
        })
        .collect()
}

/// Whether `payload` names `manifest` and `signature` is one of `keys`'s
/// over it: the key that signed it.
pub fn check<'k>(
    payload: &[u8],
    signature: &[u8],
    manifest: &[u8; 32],
    keys: &'k [TrustedKey],
) -> Option<&'k TrustedKey> {
    let parsed: Payload = serde_json::from_slice(payload).ok()?;
    let names = parsed.critical.kind == PAYLOAD_KIND
        && parsed.critical.image.docker_manifest_digest == format!("sha256:{}", hex::encode(manifest));
    if !names {
        return None;
    }
    keys.iter().find(|k| k.verifies(payload, signature))
}

/// The ECDSA P-256 key pair of a PKCS#8 PEM private key.
pub fn signing_key(key: &[u8]) -> Result<EcdsaKeyPair, String> {
    let der =
        PrivatePkcs8KeyDer::from_pem_slice(key).map_err(|_| "the key is no PEM `PRIVATE KEY` (PKCS#8)".to_owned())?;
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der.secret_pkcs8_der(), &ring::rand::SystemRandom::new())
        .map_err(|_| "the key is not an ECDSA P-256 private key".to_owned())
}

/// A payload for `manifest` of `repository`, its signature with the PKCS#8
/// PEM private key `key`, and the key's public half.
pub fn sign(repository: &str, manifest: &[u8; 32], key: &[u8]) -> Result<(Vec<u8>, Vec<u8>, TrustedKey), String> {
    let rng = ring::rand::SystemRandom::new();
    let pair = signing_key(key)?;
    let payload = Payload {
        critical: Critical {
            identity: Identity { docker_reference: repository.to_owned() },
            image: Image { docker_manifest_digest: format!("sha256:{}", hex::encode(manifest)) },
            kind: PAYLOAD_KIND.to_owned(),
        },
        optional: None,
    };
    let payload = serde_json::to_vec(&payload).map_err(|e| e.to_string())?;
    let signature = pair.sign(&rng, &payload).map_err(|_| "signing failed".to_owned())?;
    let public = TrustedKey { path: PathBuf::from("the signing key"), point: pair.public_key().as_ref().to_vec() };
    Ok((payload, signature.as_ref().to_vec(), public))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new P-256 key: its PKCS#8 PEM, and its public key as a
    /// [`TrustedKey`] read from PEM.
    fn key() -> (Vec<u8>, TrustedKey) {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let pem = |label: &str, der: &[u8]| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n").into_bytes()
        };
        let spki = [P256_SPKI_PREFIX.as_slice(), pair.public_key().as_ref()].concat();
        let public = TrustedKey::from_pem(Path::new("k.pub"), &pem("PUBLIC KEY", &spki)).unwrap();
        (pem("PRIVATE KEY", pkcs8.as_ref()), public)
    }

    #[test]
    fn a_signature_verifies_for_its_manifest_and_key_only() {
        let (private, public) = key();
        let (_, other) = key();
        let manifest = [7; 32];
        let (payload, signature, signer) = sign("ghcr.io/acme/p", &manifest, &private).unwrap();
        assert_eq!(signer.point, public.point, "the signing key's public half");
        let keys = [other.clone(), public.clone()];
        assert_eq!(check(&payload, &signature, &manifest, &keys), Some(&public));
        assert_eq!(check(&payload, &signature, &manifest, &[other]), None, "another key");
        assert_eq!(check(&payload, &signature, &[8; 32], &keys), None, "another manifest");
        let mut tampered = payload.clone();
        tampered[0] = b' ';
        assert_eq!(check(&tampered, &signature, &manifest, &keys), None, "another payload");
        // A payload of another kind, signed by the key, is no signature of the manifest.
        let text = String::from_utf8(payload).unwrap().replace(PAYLOAD_KIND, "something else");
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            PrivatePkcs8KeyDer::from_pem_slice(&private).unwrap().secret_pkcs8_der(),
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
        let signed = pair.sign(&ring::rand::SystemRandom::new(), text.as_bytes()).unwrap();
        assert_eq!(check(text.as_bytes(), signed.as_ref(), &manifest, &keys), None);
    }

    /// A payload as cosign writes it (`docker-manifest-digest`, `optional`
    /// null), and as its spec spells the digest's key, is read.
    #[test]
    fn cosign_s_payload_spellings_are_read() {
        let digest = "ab".repeat(32);
        for key in ["docker-manifest-digest", "Docker-manifest-digest"] {
            let text = format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"ghcr.io/acme/p"}},"image":{{"{key}":"sha256:{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
            );
            let parsed: Payload = serde_json::from_str(&text).unwrap();
            assert_eq!(parsed.critical.image.docker_manifest_digest, format!("sha256:{digest}"), "{key}");
        }
    }

    #[test]
    fn only_p256_public_keys_are_trusted() {
        let (private, _) = key();
        assert!(TrustedKey::from_pem(Path::new("k"), &private).unwrap_err().contains("no PEM `PUBLIC KEY`"));
        // An Ed25519 key's SubjectPublicKeyInfo.
        let ed25519 = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        assert!(TrustedKey::from_pem(Path::new("k"), ed25519.as_bytes()).unwrap_err().contains("not an ECDSA P-256"));
    }

    #[test]
    fn signatures_are_the_annotated_payload_layers() {
        let mut annotated = BTreeMap::new();
        annotated.insert(SIGNATURE_ANNOTATION.to_owned(), "AQID".to_owned());
        let d = format!("sha256:{}", "01".repeat(32));
        let layers = [
            (PAYLOAD_TYPE, d.as_str(), Some(&annotated)),
            (PAYLOAD_TYPE, d.as_str(), None),
            ("application/wasm", d.as_str(), Some(&annotated)),
        ];
        let found = signatures(layers.into_iter());
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].payload, found[0].signature.as_slice()), ([1; 32], [1, 2, 3].as_slice()));
    }
}
