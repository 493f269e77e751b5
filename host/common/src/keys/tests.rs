//! Every key family signed with ring and verified through JWK and PEM, the
//! algorithm-confusion refusals, operator-facing errors, and RFC 7515's vectors.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use ring::{hmac, rsa};

use super::testdata::*;
use super::{Algorithm, Key, KeyError, b64url_decode};

const MESSAGE: &[u8] = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9";

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The DER inside a PEM block, decoded independently of the code under test.
fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

fn tampered(bytes: &[u8]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    bytes[0] ^= 0x01;
    bytes
}

fn invalid(result: Result<Key, KeyError>) -> String {
    match result {
        Err(KeyError::Invalid(message)) => message,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn unsupported(result: Result<Key, KeyError>) -> String {
    match result {
        Err(KeyError::Unsupported(message)) => message,
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

// ---- RSA ----

fn rsa_pair() -> RsaKeyPair {
    RsaKeyPair::from_pkcs8(&pem_der(RSA_2048_PKCS8)).unwrap()
}

fn rsa_jwk(pair: &RsaKeyPair, extra: &str) -> String {
    let public = rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
    format!(r#"{{"kty":"RSA","n":"{}","e":"{}"{extra}}}"#, b64url(&public.n), b64url(&public.e))
}

fn rsa_sign(pair: &RsaKeyPair, alg: Algorithm, message: &[u8]) -> Vec<u8> {
    let padding: &'static dyn signature::RsaEncoding = match alg {
        Algorithm::Rs256 => &signature::RSA_PKCS1_SHA256,
        Algorithm::Rs384 => &signature::RSA_PKCS1_SHA384,
        Algorithm::Rs512 => &signature::RSA_PKCS1_SHA512,
        Algorithm::Ps256 => &signature::RSA_PSS_SHA256,
        Algorithm::Ps384 => &signature::RSA_PSS_SHA384,
        Algorithm::Ps512 => &signature::RSA_PSS_SHA512,
        other => panic!("{other} is not an RSA algorithm"),
    };
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(padding, &SystemRandom::new(), message, &mut signature).unwrap();
    signature
}

const RSA_ALGORITHMS: [Algorithm; 6] =
    [Algorithm::Rs256, Algorithm::Rs384, Algorithm::Rs512, Algorithm::Ps256, Algorithm::Ps384, Algorithm::Ps512];

/// The same RSA key through all three encodings, for every RSA algorithm: the
/// right signature verifies, a changed message or signature does not.
#[test]
fn rsa_signatures_verify_through_jwk_spki_and_pkcs1() {
    let pair = rsa_pair();
    let keys = [
        Key::from_jwk(&rsa_jwk(&pair, "")).unwrap(),
        Key::from_pem(RSA_2048_SPKI).unwrap(),
        Key::from_pem(RSA_2048_PKCS1).unwrap(),
    ];
    for key in &keys {
        assert_eq!(key.algorithms(), RSA_ALGORITHMS);
        for alg in RSA_ALGORITHMS {
            let signature = rsa_sign(&pair, alg, MESSAGE);
            assert!(key.verify(alg, MESSAGE, &signature), "{alg} via {key:?}");
            assert!(!key.verify(alg, &tampered(MESSAGE), &signature), "{alg}: tampered message");
            assert!(!key.verify(alg, MESSAGE, &tampered(&signature)), "{alg}: tampered signature");
            assert!(!key.verify(alg, MESSAGE, &signature[1..]), "{alg}: short signature");
        }
    }
}

/// A valid signature under one RSA scheme or hash is not one under another.
#[test]
fn rsa_signature_only_verifies_under_its_own_algorithm() {
    let pair = rsa_pair();
    let key = Key::from_pem(RSA_2048_SPKI).unwrap();
    for signed_with in RSA_ALGORITHMS {
        let signature = rsa_sign(&pair, signed_with, MESSAGE);
        for asked in Algorithm::ALL {
            assert_eq!(key.verify(asked, MESSAGE, &signature), asked == signed_with, "{signed_with} asked as {asked}");
        }
    }
}

/// The classic algorithm-confusion attack: sign HS256 with the RSA public key's
/// bytes as the HMAC secret. Those tags are real HMACs (an HMAC key made from
/// the same bytes accepts them), yet the RSA key refuses every one.
#[test]
fn rsa_public_key_is_never_an_hmac_secret() {
    let pair = rsa_pair();
    let jwk = rsa_jwk(&pair, "");
    let n = rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public()).n;
    let secrets: [&[u8]; 4] = [&n, RSA_2048_SPKI.as_bytes(), &pem_der(RSA_2048_SPKI), jwk.as_bytes()];
    let keys = [Key::from_jwk(&jwk).unwrap(), Key::from_pem(RSA_2048_SPKI).unwrap()];
    for secret in secrets {
        for (alg, hmac_alg) in [
            (Algorithm::Hs256, hmac::HMAC_SHA256),
            (Algorithm::Hs384, hmac::HMAC_SHA384),
            (Algorithm::Hs512, hmac::HMAC_SHA512),
        ] {
            let tag = hmac::sign(&hmac::Key::new(hmac_alg, secret), MESSAGE);
            assert!(Key::hmac(secret).unwrap().verify(alg, MESSAGE, tag.as_ref()), "the forged tag is a real {alg}");
            for key in &keys {
                assert!(!key.verify(alg, MESSAGE, tag.as_ref()), "{key:?} accepted {alg}");
            }
        }
    }
}

#[test]
fn rsa_keys_under_2048_bits_are_refused() {
    let message = unsupported(Key::from_pem(RSA_1024_SPKI));
    assert!(message.contains("1024 bits") && message.contains("2048"), "{message}");
    let message = unsupported(Key::from_jwk(&format!(r#"{{"kty":"RSA","n":"{RSA_1024_N}","e":"AQAB"}}"#)));
    assert!(message.contains("1024 bits"), "{message}");
}

#[test]
fn rsa_moduli_and_exponents_are_checked() {
    let pair = rsa_pair();
    let public = rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
    let jwk = |n: &[u8], e: &[u8]| format!(r#"{{"kty":"RSA","n":"{}","e":"{}"}}"#, b64url(n), b64url(e));

    // A leading zero octet (some producers add DER's sign byte) is tolerated.
    let padded: Vec<u8> = [&[0u8][..], &public.n].concat();
    let key = Key::from_jwk(&jwk(&padded, &public.e)).unwrap();
    assert!(key.verify(Algorithm::Rs256, MESSAGE, &rsa_sign(&pair, Algorithm::Rs256, MESSAGE)));

    let mut even = public.n.clone();
    *even.last_mut().unwrap() &= 0xfe;
    assert!(invalid(Key::from_jwk(&jwk(&even, &public.e))).contains("even"));
    assert!(invalid(Key::from_jwk(&jwk(&public.n, &[1]))).contains("exponent is 1"));
    assert!(invalid(Key::from_jwk(&jwk(&public.n, &[4]))).contains("exponent is 4"));
    assert!(unsupported(Key::from_jwk(&jwk(&public.n, &[2, 0, 0, 0, 1]))).contains("over 33 bits"));
    assert!(invalid(Key::from_jwk(&jwk(&[0], &public.e))).contains("zero"));
    let huge = vec![0xff; 1025];
    assert!(unsupported(Key::from_jwk(&jwk(&huge, &public.e))).contains("at most 8192"));
}

// ---- EC ----

struct EcCase {
    signing: &'static signature::EcdsaSigningAlgorithm,
    asn1: &'static signature::EcdsaSigningAlgorithm,
    crv: &'static str,
    alg: Algorithm,
}

const EC_CASES: [EcCase; 2] = [
    EcCase {
        signing: &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        asn1: &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        crv: "P-256",
        alg: Algorithm::Es256,
    },
    EcCase {
        signing: &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        asn1: &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        crv: "P-384",
        alg: Algorithm::Es384,
    },
];

/// A fresh EC key: its PKCS#8 (for signing) and its public JWK and SPKI PEM.
fn ec_key(case: &EcCase) -> (Vec<u8>, String, String) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(case.signing, &rng).unwrap().as_ref().to_vec();
    let pair = EcdsaKeyPair::from_pkcs8(case.signing, &pkcs8, &rng).unwrap();
    let point = pair.public_key().as_ref();
    let half = (point.len() - 1) / 2;
    let jwk = format!(
        r#"{{"kty":"EC","crv":"{}","x":"{}","y":"{}","use":"sig","kid":"k1"}}"#,
        case.crv,
        b64url(&point[1..=half]),
        b64url(&point[1 + half..])
    );
    let pem = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap().public_key_pem();
    (pkcs8, jwk, pem)
}

fn ec_sign(algorithm: &'static signature::EcdsaSigningAlgorithm, pkcs8: &[u8], message: &[u8]) -> Vec<u8> {
    let rng = SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(algorithm, pkcs8, &rng).unwrap();
    pair.sign(&rng, message).unwrap().as_ref().to_vec()
}

#[test]
fn ecdsa_signatures_verify_through_jwk_and_pem() {
    for case in &EC_CASES {
        let (pkcs8, jwk, pem) = ec_key(case);
        let signature = ec_sign(case.signing, &pkcs8, MESSAGE);
        for key in [Key::from_jwk(&jwk).unwrap(), Key::from_pem(&pem).unwrap()] {
            assert_eq!(key.algorithms(), [case.alg]);
            assert!(key.verify(case.alg, MESSAGE, &signature), "{} via {key:?}", case.alg);
            assert!(!key.verify(case.alg, &tampered(MESSAGE), &signature));
            assert!(!key.verify(case.alg, MESSAGE, &tampered(&signature)));
            // JWS wants r || s; the ASN.1 DER form of a valid signature is refused.
            assert!(!key.verify(case.alg, MESSAGE, &ec_sign(case.asn1, &pkcs8, MESSAGE)));
        }
    }
}

/// An ES256 key asked for ES384 (or anything else) says no, even when given a
/// genuine ES384 signature of the message.
#[test]
fn ecdsa_keys_only_verify_their_own_curve() {
    let (p256_pkcs8, p256_jwk, _) = ec_key(&EC_CASES[0]);
    let (p384_pkcs8, _, _) = ec_key(&EC_CASES[1]);
    let key = Key::from_jwk(&p256_jwk).unwrap();
    let es256 = ec_sign(EC_CASES[0].signing, &p256_pkcs8, MESSAGE);
    let es384 = ec_sign(EC_CASES[1].signing, &p384_pkcs8, MESSAGE);
    assert!(!key.verify(Algorithm::Es384, MESSAGE, &es384));
    for alg in Algorithm::ALL {
        assert_eq!(key.verify(alg, MESSAGE, &es256), alg == Algorithm::Es256, "{alg}");
    }
}

#[test]
fn ec_points_are_validated_when_the_key_is_built() {
    let (_, jwk, _) = ec_key(&EC_CASES[0]);
    let mut parsed: serde_json::Value = serde_json::from_str(&jwk).unwrap();
    let y = b64url_decode(parsed["y"].as_str().unwrap()).unwrap();
    parsed["y"] = b64url(&tampered(&y)).into();
    assert!(invalid(Key::from_jwk(&parsed.to_string())).contains("not on curve P-256"));
    parsed["y"] = b64url(&y[1..]).into();
    assert!(invalid(Key::from_jwk(&parsed.to_string())).contains("\"y\" is 31 bytes; it must be exactly 32"));
    parsed["crv"] = "P-384".into();
    assert!(invalid(Key::from_jwk(&parsed.to_string())).contains("must be exactly 48"));
    parsed["crv"] = "P-521".into();
    assert!(unsupported(Key::from_jwk(&parsed.to_string())).contains("\"P-521\""));
}

// ---- Ed25519 ----

#[test]
fn ed25519_signatures_verify_through_jwk_and_pem() {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let jwk = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{}"}}"#, b64url(pair.public_key().as_ref()));
    let pem = rcgen::KeyPair::try_from(pkcs8.as_ref()).unwrap().public_key_pem();
    let signature = pair.sign(MESSAGE);
    for key in [Key::from_jwk(&jwk).unwrap(), Key::from_pem(&pem).unwrap()] {
        assert_eq!(key.algorithms(), [Algorithm::EdDsa]);
        assert!(key.verify(Algorithm::EdDsa, MESSAGE, signature.as_ref()));
        assert!(!key.verify(Algorithm::EdDsa, &tampered(MESSAGE), signature.as_ref()));
        assert!(!key.verify(Algorithm::EdDsa, MESSAGE, &tampered(signature.as_ref())));
        for alg in Algorithm::ALL.into_iter().filter(|alg| *alg != Algorithm::EdDsa) {
            assert!(!key.verify(alg, MESSAGE, signature.as_ref()), "{alg}");
        }
    }
    let short = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{}"}}"#, b64url(&[7; 31]));
    assert!(invalid(Key::from_jwk(&short)).contains("31 bytes"));
    assert!(unsupported(Key::from_jwk(r#"{"kty":"OKP","crv":"X25519","x":"AAAA"}"#)).contains("\"X25519\""));
}

// ---- HMAC ----

#[test]
fn hmac_keys_verify_hs256_hs384_hs512_only() {
    let secret = b"a-secret-of-sixty-four-bytes-so-that-hs512-may-use-it-as-well-ok";
    let key = Key::hmac(secret).unwrap();
    assert_eq!(key.algorithms(), [Algorithm::Hs256, Algorithm::Hs384, Algorithm::Hs512]);
    for (alg, hmac_alg) in [
        (Algorithm::Hs256, hmac::HMAC_SHA256),
        (Algorithm::Hs384, hmac::HMAC_SHA384),
        (Algorithm::Hs512, hmac::HMAC_SHA512),
    ] {
        let tag = hmac::sign(&hmac::Key::new(hmac_alg, secret), MESSAGE);
        assert!(key.verify(alg, MESSAGE, tag.as_ref()), "{alg}");
        assert!(!key.verify(alg, &tampered(MESSAGE), tag.as_ref()));
        assert!(!key.verify(alg, MESSAGE, &tampered(tag.as_ref())));
        assert!(!key.verify(alg, MESSAGE, &tag.as_ref()[..16]), "a truncated tag is refused");
        assert!(!Key::hmac(&[7; 64]).unwrap().verify(alg, MESSAGE, tag.as_ref()));
        for other in Algorithm::ALL.into_iter().filter(|other| *other != alg) {
            assert!(!key.verify(other, MESSAGE, tag.as_ref()), "{alg} tag as {other}");
        }
    }
    assert!(invalid(Key::hmac(b"")).contains("empty"));
}

/// A secret shorter than the hash is refused, or verifies only the
/// algorithms whose hash it is as long as (RFC 7518 §3.2).
#[test]
fn hmac_secrets_are_as_long_as_their_hash() {
    assert!(invalid(Key::hmac(b"0123456789")).contains("10 bytes; HS256 needs at least 32"));
    assert_eq!(Key::hmac(&[1; 32]).unwrap().algorithms(), [Algorithm::Hs256]);
    assert_eq!(Key::hmac(&[1; 48]).unwrap().algorithms(), [Algorithm::Hs256, Algorithm::Hs384]);
    assert_eq!(Key::hmac(&[1; 64]).unwrap().algorithms(), [Algorithm::Hs256, Algorithm::Hs384, Algorithm::Hs512]);
}

/// `Debug` must be safe to log: no secret, no key bytes.
#[test]
fn debug_output_never_shows_key_material() {
    let secret = b"do-not-log-this-secret-of-48-bytes-which-is-long";
    let shown = format!("{:?}", Key::hmac(secret).unwrap());
    assert_eq!(shown, r#"Key { kind: "an HMAC secret", algorithms: [Hs256, Hs384] }"#);
    let shown = format!("{:?}", Key::from_pem(RSA_2048_SPKI).unwrap());
    assert_eq!(
        shown,
        r#"Key { kind: "an RSA 2048-bit public key", algorithms: [Rs256, Rs384, Rs512, Ps256, Ps384, Ps512] }"#
    );
}

// ---- JWK parsing ----

#[test]
fn jwk_alg_restricts_the_key_to_that_algorithm() {
    let pair = rsa_pair();
    let key = Key::from_jwk(&rsa_jwk(&pair, r#","alg":"PS256","use":"sig","kid":"2024-01""#)).unwrap();
    assert_eq!(key.algorithms(), [Algorithm::Ps256]);
    assert!(key.verify(Algorithm::Ps256, MESSAGE, &rsa_sign(&pair, Algorithm::Ps256, MESSAGE)));
    assert!(!key.verify(Algorithm::Rs256, MESSAGE, &rsa_sign(&pair, Algorithm::Rs256, MESSAGE)));

    let message = invalid(Key::from_jwk(&rsa_jwk(&pair, r#","alg":"HS256""#)));
    assert!(message.contains("HS256") && message.contains("RSA"), "{message}");
    let (_, ec_jwk, _) = ec_key(&EC_CASES[0]);
    let ec_jwk = ec_jwk.replacen('{', r#"{"alg":"ES384","#, 1);
    assert!(invalid(Key::from_jwk(&ec_jwk)).contains("ES384"));
    assert!(unsupported(Key::from_jwk(&rsa_jwk(&pair, r#","alg":"none""#))).contains("\"none\""));
}

#[test]
fn oct_and_private_jwks_are_refused() {
    let message = unsupported(Key::from_jwk(r#"{"kty":"oct","k":"c2VjcmV0"}"#));
    assert!(message.contains("\"oct\"") && message.contains("granted secrets"), "{message}");
    let pair = rsa_pair();
    let message = invalid(Key::from_jwk(&rsa_jwk(&pair, r#","d":"AQAB""#)));
    assert!(message.contains("private key"), "{message}");
}

#[test]
fn malformed_jwks_say_what_is_wrong() {
    assert!(invalid(Key::from_jwk("not json")).contains("not a JSON object"));
    assert!(invalid(Key::from_jwk("[1,2]")).contains("not a JSON object"));
    assert!(invalid(Key::from_jwk(r#"{"kty":"RSA","n":5,"e":"AQAB"}"#)).contains("not a JSON object"));
    assert!(invalid(Key::from_jwk(r#"{"n":"AQAB"}"#)).contains("no \"kty\""));
    assert!(invalid(Key::from_jwk(r#"{"kty":"RSA","e":"AQAB"}"#)).contains("no \"n\""));
    assert!(invalid(Key::from_jwk(r#"{"kty":"RSA","n":"a+b/","e":"AQAB"}"#)).contains("\"n\" member is not base64url"));
    assert!(invalid(Key::from_jwk(r#"{"kty":"EC","x":"AA","y":"AA"}"#)).contains("no \"crv\""));
    assert!(unsupported(Key::from_jwk(r#"{"kty":"DSA"}"#)).contains("\"DSA\""));
}

// ---- PEM parsing ----

#[test]
fn pem_accepts_explanatory_text_and_crlf() {
    let text = format!("Key for the demo IdP\r\n{}", RSA_2048_SPKI.replace('\n', "\r\n"));
    assert_eq!(Key::from_pem(&text).unwrap().algorithms(), RSA_ALGORITHMS);
}

#[test]
fn pem_refusals_name_the_label() {
    let message = unsupported(Key::from_pem(RSA_2048_PKCS8));
    assert!(message.contains("\"PRIVATE KEY\"") && message.contains("public key"), "{message}");
    let message = unsupported(Key::from_pem("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"));
    assert!(message.contains("\"CERTIFICATE\"") && message.contains("openssl x509"), "{message}");
    let message = unsupported(Key::from_pem("-----BEGIN DSA PUBLIC KEY-----\nAA==\n-----END DSA PUBLIC KEY-----"));
    assert!(message.contains("\"DSA PUBLIC KEY\""), "{message}");
    assert!(unsupported(Key::from_pem(P521_SPKI)).contains("P-521"));
    assert!(unsupported(Key::from_pem(ED448_SPKI)).contains("Ed448"));
}

#[test]
fn malformed_pem_says_what_is_wrong() {
    assert!(invalid(Key::from_pem("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA")).contains("no \"-----BEGIN"));
    let no_end = RSA_2048_SPKI.replace("-----END PUBLIC KEY-----", "");
    assert!(invalid(Key::from_pem(&no_end)).contains("no \"-----END PUBLIC KEY-----\" line"));
    let two = format!("{RSA_2048_SPKI}{RSA_2048_SPKI}");
    assert!(invalid(Key::from_pem(&two)).contains("more than one block"));
    let not_base64 = "-----BEGIN PUBLIC KEY-----\nMII*\n-----END PUBLIC KEY-----";
    assert!(invalid(Key::from_pem(not_base64)).contains("not base64"));
    let headers = "-----BEGIN RSA PUBLIC KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PUBLIC KEY-----";
    assert!(unsupported(Key::from_pem(headers)).contains("headers"));

    let der = pem_der(RSA_2048_SPKI);
    let wrap = |der: &[u8]| format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", STANDARD.encode(der));
    assert!(invalid(Key::from_pem(&wrap(&der[..200]))).contains("truncated"));
    assert!(invalid(Key::from_pem(&wrap(&[&der[..], &[0]].concat()))).contains("unexpected bytes"));
    assert!(invalid(Key::from_pem(&wrap(&[0x31, 0x00]))).contains("expected the SubjectPublicKeyInfo"));
    assert!(invalid(Key::from_pem(&wrap(&[0x30, 0x80, 0x00, 0x00]))).contains("indefinite length"));
    // The same structure with a long-form length where the short form fits.
    assert!(invalid(Key::from_pem(&wrap(&[0x30, 0x81, 0x02, 0x05, 0x00]))).contains("non-minimal"));
    // An RSA public key whose modulus is negative.
    let pkcs1 = "-----BEGIN RSA PUBLIC KEY-----\nMAgCAYACAwEAAQ==\n-----END RSA PUBLIC KEY-----";
    assert!(invalid(Key::from_pem(pkcs1)).contains("negative"));
    // An SPKI naming an algorithm nobody signs JWTs with (DSA, 1.2.840.10040.4.1).
    let dsa = [0x30, 0x0f, 0x30, 0x09, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01, 0x03, 0x02, 0x00, 0x00];
    assert!(unsupported(Key::from_pem(&wrap(&dsa))).contains("OID 1.2.840.10040.4.1"));
}

// ---- Names, encodings, published vectors ----

#[test]
fn algorithm_names_round_trip_and_none_is_no_algorithm() {
    for alg in Algorithm::ALL {
        assert_eq!(Algorithm::from_jwt(alg.jwt_name()), Some(alg));
    }
    assert_eq!(Algorithm::EdDsa.jwt_name(), "EdDSA");
    for name in ["none", "None", "hs256", "ES512", ""] {
        assert_eq!(Algorithm::from_jwt(name), None, "{name}");
    }
}

#[test]
fn b64url_accepts_jws_form_and_padding_only() {
    assert_eq!(b64url_decode("_-8"), Some(vec![0xff, 0xef]));
    assert_eq!(b64url_decode("_-8="), Some(vec![0xff, 0xef]));
    assert_eq!(b64url_decode(""), Some(vec![]));
    assert_eq!(b64url_decode("/+8"), None, "standard alphabet");
    assert_eq!(b64url_decode("_-8 "), None);
}

fn signing_input(header: &str) -> Vec<u8> {
    format!("{header}.{RFC7515_PAYLOAD}").into_bytes()
}

/// RFC 7515 A.1–A.3: the published JWS examples verify, proving the signing
/// input, base64url and signature encodings are the ones JWS uses.
#[test]
fn rfc7515_examples_verify() {
    let a1 = Key::hmac(&b64url_decode(RFC7515_A1_K).unwrap()).unwrap();
    let a1_signature = b64url_decode(RFC7515_A1_SIGNATURE).unwrap();
    assert!(a1.verify(Algorithm::Hs256, &signing_input(RFC7515_A1_HEADER), &a1_signature));

    let a2 = Key::from_jwk(RFC7515_A2_JWK).unwrap();
    let a2_signature = b64url_decode(RFC7515_A2_SIGNATURE).unwrap();
    assert!(a2.verify(Algorithm::Rs256, &signing_input(RFC7515_A2_HEADER), &a2_signature));
    assert!(!a2.verify(Algorithm::Rs256, &signing_input(RFC7515_A3_HEADER), &a2_signature));

    let a3 = Key::from_jwk(RFC7515_A3_JWK).unwrap();
    let a3_signature = b64url_decode(RFC7515_A3_SIGNATURE).unwrap();
    assert!(a3.verify(Algorithm::Es256, &signing_input(RFC7515_A3_HEADER), &a3_signature));
    assert!(!a3.verify(Algorithm::Es256, &signing_input(RFC7515_A2_HEADER), &a3_signature));
}
