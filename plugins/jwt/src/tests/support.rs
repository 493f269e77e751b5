//! Real keys and real signatures for the tests: ring signs, and the SDK's
//! crypto double (the gateway's own ring-based code) verifies.

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{Value, json};
use wasmgate_sdk::Decision;
use wasmgate_sdk::testing::{self, TestRequest};

use crate::Jwt;

/// A fixed clock for every test: 2023-11-14T22:13:20Z.
pub const NOW: u64 = 1_700_000_000_000;
pub const NOW_S: u64 = NOW / 1000;

/// A 2048-bit RSA test key (PKCS#8), made once with openssl (ring cannot
/// generate RSA keys), shared by every test and bench that signs RS256. It
/// protects nothing.
pub const RSA_PKCS8: &str = include_str!("../../../../host/common/testdata/rsa-2048.pem");

/// Its public key as SPKI PEM (openssl `pkey -pubout`).
pub const RSA_SPKI: &str = include_str!("../../../../host/common/testdata/rsa-2048.pub.pem");

/// The RSA key's modulus as a JWK `n`: the end-to-end tests (e2e.rs) embed
/// it, since they cannot compute it; a unit test keeps the two in step.
pub const RSA_N: &str = "wicnTMMvY8UK2TR98-bGO3l6oeTth1nnuBzduqCdyLRV2HXoDSwSdZRCNoid1oucItI_DUls-8PePsR77euMrt8QeIrCJb7LknPUzn0piyJX5kvuZqZ-doszoemxo1TGcH7AzWYz5qLVTloKCplYzuJmxIIy1r0GD_CzGacLStICIJzeu7yE6t8WvAJf6Kh7bApZ082BVCHQbpXTiuXTDUrDkd_F25Rl-dhQ0Pti1wxDHwQo4AmD2XIgvRPzEiuYoUtyQ8FfEa_nZWoQqK0YZiAb7IG7hDHywYBcLI_5Eo0mzxXHU1BIhUA5IXB6Cazih6xont1qN1fct5BPkCTlGQ";

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// The DER inside a PEM block.
pub fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let url = body.replace('+', "-").replace('/', "_");
    crate::b64::decode(url.trim_end_matches('=')).expect("PEM body is base64")
}

/// A signing key of each family.
pub enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static str),
    Ed(Ed25519KeyPair),
    Hmac(Vec<u8>),
}

impl Signer {
    pub fn rsa() -> Self {
        Self::Rsa(RsaKeyPair::from_pkcs8(&pem_der(RSA_PKCS8)).expect("RSA test key"))
    }

    pub fn es256() -> Self {
        Self::ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256")
    }

    pub fn es384() -> Self {
        Self::ec(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")
    }

    fn ec(alg: &'static signature::EcdsaSigningAlgorithm, crv: &'static str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("generate EC key");
        Self::Ec(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("EC key"), crv)
    }

    pub fn ed25519() -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("generate Ed25519 key");
        Self::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 key"))
    }

    pub fn hmac(secret: &[u8]) -> Self {
        Self::Hmac(secret.to_vec())
    }

    /// The public JWK (with `kid` when given).
    pub fn jwk(&self, kid: Option<&str>) -> Value {
        let mut jwk = match self {
            Self::Rsa(k) => {
                let c = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(k.public());
                json!({"kty": "RSA", "n": b64(&c.n), "e": b64(&c.e)})
            }
            Self::Ec(k, crv) => {
                let point = k.public_key().as_ref();
                let half = (point.len() - 1) / 2;
                json!({"kty": "EC", "crv": crv, "x": b64(&point[1..=half]), "y": b64(&point[1 + half..])})
            }
            Self::Ed(k) => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.public_key().as_ref())}),
            Self::Hmac(_) => panic!("an HMAC key has no public JWK"),
        };
        if let Some(kid) = kid {
            jwk["kid"] = json!(kid);
        }
        jwk
    }

    /// Signs `input` with `alg`.
    pub fn sign(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Self::Rsa(k) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    other => panic!("RSA cannot sign {other}"),
                };
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(padding, &rng, input, &mut sig).expect("RSA sign");
                sig
            }
            Self::Ec(k, _) => k.sign(&rng, input).expect("ECDSA sign").as_ref().to_vec(),
            Self::Ed(k) => k.sign(input).as_ref().to_vec(),
            Self::Hmac(secret) => {
                let alg = match alg {
                    "HS256" => ring::hmac::HMAC_SHA256,
                    "HS384" => ring::hmac::HMAC_SHA384,
                    "HS512" => ring::hmac::HMAC_SHA512,
                    other => panic!("HMAC cannot sign {other}"),
                };
                ring::hmac::sign(&ring::hmac::Key::new(alg, secret), input).as_ref().to_vec()
            }
        }
    }

    /// A token with this header and claims.
    pub fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        let alg = header["alg"].as_str().expect("header has alg");
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let sig = self.sign(alg, input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    /// A token for `alg`, `kid` and `claims`.
    pub fn token(&self, alg: &str, kid: Option<&str>, claims: &Value) -> String {
        let mut header = json!({"alg": alg, "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        self.token_with_header(&header, claims)
    }
}

/// Claims valid at [`NOW`] for an hour.
pub fn claims() -> Value {
    json!({"sub": "alice", "iat": NOW_S - 10, "exp": NOW_S + 3600, "email": "alice@example.com"})
}

/// `{"keys": [...]}`.
pub fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// Resets the test host and freezes its clock at [`NOW`].
pub fn fresh() {
    testing::reset();
    testing::set_now_unix_ms(NOW);
}

pub fn plugin(config: &Value) -> Jwt {
    testing::configure::<Jwt>(&config.to_string()).unwrap_or_else(|e| panic!("config refused: {e}"))
}

pub fn config_error(config: &Value) -> String {
    testing::configure::<Jwt>(&config.to_string()).err().map(|e| e.to_string()).unwrap_or_default()
}

/// A request carrying `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> TestRequest {
    TestRequest::get("/").header("authorization", format!("Bearer {token}"))
}

/// Runs the plugin on `req`.
pub fn run(p: &Jwt, req: &mut TestRequest) -> Decision {
    testing::on_request(p, req)
}

/// The `error_description` of a 401, or `"continue"`.
pub fn outcome(p: &Jwt, req: &mut TestRequest) -> String {
    match run(p, req) {
        Decision::Continue => "continue".to_owned(),
        Decision::Respond(reply) => {
            assert_eq!(reply.status, 401);
            let body: Value = serde_json::from_slice(&reply.body).expect("JSON body");
            body["error_description"].as_str().unwrap_or_default().to_owned()
        }
    }
}

/// What a token gets from the plugin.
pub fn check(p: &Jwt, token: &str) -> String {
    outcome(p, &mut bearer(token))
}
