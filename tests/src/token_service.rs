//! A registry token service (the Docker token protocol, as ghcr.io, Docker
//! Hub and Harbor speak it) over HTTPS on an ephemeral port: it hands
//! [`registry::USER`](crate::registry::USER) a token for any scope it asks,
//! and anyone a pull-only token for repositories under `public/`. Tokens
//! are ES256 JWTs whose signing certificate (in `x5c`) the test CA issued;
//! the real registry verifies them against that CA.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::certs::{Ca, Issued};
use crate::registry::USER;

/// The registry's name for itself, which a token's audience must be.
const SERVICE: &str = "wasmgate-tests";
const ISSUER: &str = "wasmgate-test-tokens";

#[derive(Debug)]
pub struct TokenService {
    /// Where tokens are asked for: `https://127.0.0.1:PORT/token`.
    pub realm: String,
    /// The CA whose certificates sign tokens (the registry's `rootcertbundle`).
    roots: std::path::PathBuf,
    /// Tokens handed out.
    issued: Arc<AtomicU64>,
}

impl TokenService {
    /// Serves with `certificate` (for 127.0.0.1) and signs with a new
    /// certificate of `ca`'s.
    pub fn start(ca: &Ca, certificate: &Issued) -> Self {
        let signer = ca.client("token-signer");
        let signer_cert = CertificateDer::pem_file_iter(&signer.cert)
            .expect("signer certificate")
            .next()
            .expect("a signer certificate")
            .expect("signer certificate PEM");
        let key = PrivatePkcs8KeyDer::from_pem_file(&signer.key).expect("signer key (PKCS#8)");
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            key.secret_pkcs8_der(),
            &ring::rand::SystemRandom::new(),
        )
        .expect("a P-256 signer key");
        let header = serde_json::json!({ "typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&signer_cert)] });
        let header = URL_SAFE_NO_PAD.encode(header.to_string());

        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&certificate.cert).expect("cert").map(|c| c.expect("cert")).collect();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, PrivateKeyDer::from_pem_file(&certificate.key).expect("key"))
            .expect("token service TLS");
        let tls = Arc::new(tls);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token service");
        let realm = format!("https://{}/token", listener.local_addr().expect("its address"));
        let issued = Arc::new(AtomicU64::new(0));
        let counted = issued.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let Ok(conn) = rustls::ServerConnection::new(tls.clone()) else { continue };
                let mut stream = rustls::StreamOwned::new(conn, stream);
                let answer = answer(&mut stream, &header, &key, &counted);
                let _ = stream.write_all(answer.as_bytes());
                let _ = stream.flush();
                stream.conn.send_close_notify();
                let _ = stream.flush();
            }
        });
        Self { realm, roots: ca.pem.clone(), issued }
    }

    /// The registry config's `auth:` section trusting this service.
    pub fn registry_auth(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm,
            self.roots.display()
        )
    }

    /// How many tokens it has handed out.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }
}

/// The HTTP answer to one request read from `stream`.
fn answer(stream: &mut impl std::io::Read, header: &str, key: &EcdsaKeyPair, issued: &AtomicU64) -> String {
    let mut reader = BufReader::new(stream);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => lines.push(line.trim_end().to_owned()),
        }
    }
    let target = lines.first().and_then(|l| l.split(' ').nth(1)).unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(|v| String::from_utf8_lossy(&wasmgate_common::query::decode(v, false)).into_owned())
            .unwrap_or_default()
    };
    let basic = format!("Basic {}", STANDARD.encode(format!("{}:{}", USER.0, USER.1)));
    let authenticated = lines
        .iter()
        .any(|l| l.split_once(':').is_some_and(|(k, v)| k.eq_ignore_ascii_case("authorization") && v.trim() == basic));
    let claimed = lines.iter().any(|l| l.to_ascii_lowercase().starts_with("authorization:"));
    if claimed && !authenticated {
        return respond("401 Unauthorized", "{\"details\":\"incorrect username or password\"}");
    }
    // `repository:NAME:ACTIONS`
    let scope = param("scope");
    let mut parts = scope.splitn(3, ':');
    let (kind, name, actions) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let actions: Vec<&str> = actions
        .split(',')
        .filter(|a| !a.is_empty())
        .filter(|a| authenticated || (name.starts_with("public/") && *a == "pull"))
        .collect();
    if param("service") != SERVICE || kind != "repository" {
        return respond("400 Bad Request", "{\"details\":\"unknown service or scope\"}");
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let n = issued.fetch_add(1, Ordering::Relaxed);
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": if authenticated { USER.0 } else { "" },
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("token-{n}"),
        "access": [{ "type": "repository", "name": name, "actions": actions }],
    });
    let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let Ok(signature) = key.sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes()) else {
        return respond("500 Internal Server Error", "{}");
    };
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
    respond("200 OK", &serde_json::json!({ "token": token, "expires_in": 300 }).to_string())
}

fn respond(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}
