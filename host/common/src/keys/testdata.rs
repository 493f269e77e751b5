//! Fixed keys and published vectors for the `keys` tests.
//!
//! ring cannot generate RSA keys, so the RSA keys were made once with
//! `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048` (and
//! `openssl pkey -pubout`, `openssl rsa -RSAPublicKey_out`); the 2048-bit pair lives in
//! `host/common/testdata/`, shared with the jwt tests and the benches.
//! They are test keys and protect nothing.

/// A 2048-bit RSA private key (PKCS#8), to sign with ring.
pub(super) const RSA_2048_PKCS8: &str = include_str!("../../testdata/rsa-2048.pem");

/// Its public key as SPKI (`PUBLIC KEY`), written by openssl.
pub(super) const RSA_2048_SPKI: &str = include_str!("../../testdata/rsa-2048.pub.pem");

/// Its public key as PKCS#1 (`RSA PUBLIC KEY`), written by openssl.
pub(super) const RSA_2048_PKCS1: &str = r"-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAwicnTMMvY8UK2TR98+bGO3l6oeTth1nnuBzduqCdyLRV2HXoDSwS
dZRCNoid1oucItI/DUls+8PePsR77euMrt8QeIrCJb7LknPUzn0piyJX5kvuZqZ+
doszoemxo1TGcH7AzWYz5qLVTloKCplYzuJmxIIy1r0GD/CzGacLStICIJzeu7yE
6t8WvAJf6Kh7bApZ082BVCHQbpXTiuXTDUrDkd/F25Rl+dhQ0Pti1wxDHwQo4AmD
2XIgvRPzEiuYoUtyQ8FfEa/nZWoQqK0YZiAb7IG7hDHywYBcLI/5Eo0mzxXHU1BI
hUA5IXB6Cazih6xont1qN1fct5BPkCTlGQIDAQAB
-----END RSA PUBLIC KEY-----
";

/// A 1024-bit RSA public key: too small, must be refused.
pub(super) const RSA_1024_SPKI: &str = r"-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDXJAxWgEi2f4TIecZ0UiGgKGNt
TlvTO39N2Zcshn9S+v39ASgmGY6h/A4+O/UGAZ/MFZP40/fidVwB/om0tvF4K4+g
vk/zxZb5x88M4i8axNIfKj4D9czyaGrSgWunKIV4zp1nj62ZD+B8YC0RnG7v295a
GUgFBvT5h9DSIkQXfQIDAQAB
-----END PUBLIC KEY-----
";

/// The same 1024-bit key's modulus as a JWK `n`.
pub(super) const RSA_1024_N: &str = "1yQMVoBItn-EyHnGdFIhoChjbU5b0zt_TdmXLIZ_Uvr9_QEoJhmOofwOPjv1BgGfzBWT-NP34nVcAf6JtLbxeCuPoL5P88WW-cfPDOIvGsTSHyo-A_XM8mhq0oFrpyiFeM6dZ4-tmQ_gfGAtEZxu79veWhlIBQb0-YfQ0iJEF30";

/// An EC P-521 public key (SPKI): well formed, unsupported.
pub(super) const P521_SPKI: &str = r"-----BEGIN PUBLIC KEY-----
MIGbMBAGByqGSM49AgEGBSuBBAAjA4GGAAQAFFirNgTfpJ7cXSkO14t4ndpaookt
n98ZRwUyPKqvPGifIUat4A/HgdDe2WviZlPqB8kZOp0nuSh6aNf008EWkKEAmalO
WGXvrrkOohoV5Ya2LKf2M8DhUyPub6JTs7XzxEB9JK4p2iqAe2V4e25jndQPY4SY
yBaH/4JO4H2IN4gAunE=
-----END PUBLIC KEY-----
";

/// An Ed448 public key (SPKI): well formed, unsupported.
pub(super) const ED448_SPKI: &str = r"-----BEGIN PUBLIC KEY-----
MEMwBQYDK2VxAzoA421xt6VIScdnu2voNnCHBkxwswdLYidOzXjLUFriHvliXJfE
zJX0PS40Et6ja4KLp3NplJ3lNR2A
-----END PUBLIC KEY-----
";

/// RFC 7515 A.1 payload, shared by all its examples (base64url).
pub(super) const RFC7515_PAYLOAD: &str =
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";

/// RFC 7515 A.1: HS256. The JWK `k`, protected header and signature.
pub(super) const RFC7515_A1_K: &str =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
pub(super) const RFC7515_A1_HEADER: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9";
pub(super) const RFC7515_A1_SIGNATURE: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// RFC 7515 A.2: RS256. The public JWK (the appendix also prints the private members).
pub(super) const RFC7515_A2_JWK: &str = r#"{"kty":"RSA",
 "n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
 "e":"AQAB"}"#;
pub(super) const RFC7515_A2_HEADER: &str = "eyJhbGciOiJSUzI1NiJ9";
pub(super) const RFC7515_A2_SIGNATURE: &str = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

/// RFC 7515 A.3: ES256. The public JWK (without the appendix's `d`).
pub(super) const RFC7515_A3_JWK: &str = r#"{"kty":"EC","crv":"P-256",
 "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
 "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
pub(super) const RFC7515_A3_HEADER: &str = "eyJhbGciOiJFUzI1NiJ9";
pub(super) const RFC7515_A3_SIGNATURE: &str =
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
