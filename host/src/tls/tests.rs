//! Real handshakes over loopback TCP with tokio-rustls, against certificates that rcgen issues
//! into a temporary directory as PEM files, exactly as an operator would deploy them.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ProtocolVersion};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::config::CertConfig;

/// Test PKI in a temporary directory: each file is named after what it holds.
struct Pki {
    dir: TempDir,
}

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: PathBuf,
}

struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("tempdir") }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn write(&self, file: &str, contents: &str) -> PathBuf {
        let path = self.path(file);
        std::fs::write(&path, contents).expect("write test file");
        path
    }

    fn ca(&self, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        let pem = self.write(&format!("{name}.pem"), &issuer.pem());
        Ca { issuer, pem }
    }

    /// A leaf for `sans` (DNS names or IP addresses), written with its CA after it as a chain.
    fn leaf(&self, ca: &Ca, file: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("SANs");
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca.issuer).expect("sign leaf");
        Leaf {
            cert: self.write(&format!("{file}.pem"), &format!("{}{}", cert.pem(), ca.issuer.pem())),
            key: self.write(&format!("{file}.key"), &key.serialize_pem()),
            der: cert.der().clone(),
        }
    }

    fn server(&self, ca: &Ca, file: &str, sans: &[&str]) -> Leaf {
        self.leaf(ca, file, sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client(&self, ca: &Ca, file: &str) -> Leaf {
        self.leaf(ca, file, &["client.test"], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

fn cert(leaf: &Leaf, sni: &[&str]) -> CertConfig {
    CertConfig { cert: leaf.cert.clone(), key: leaf.key.clone(), sni: sni.iter().map(|s| s.to_string()).collect() }
}

fn listener(certificates: Vec<CertConfig>) -> ServerTls {
    ServerTls {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        certificates,
        client_ca: None,
        client_crl: None,
        client_auth: ClientAuth::Required,
        min_version: TlsVersion::Tls12,
        forward_client_cert: false,
    }
}

fn upstream(ca: Option<&Ca>, client: Option<&Leaf>) -> UpstreamTls {
    UpstreamTls {
        ca: ca.map(|c| c.pem.clone()),
        server_name: None,
        client_cert: client.map(|l| (l.cert.clone(), l.key.clone())),
    }
}

fn trusting(ca: &Ca) -> Arc<ClientConfig> {
    client_config(&upstream(Some(ca), None), Protocol::Http1).expect("client config")
}

fn name(s: &str) -> ServerName<'static> {
    ServerName::try_from(s.to_owned()).expect("server name")
}

/// What the client saw of a handshake that completed and carried data.
#[derive(Debug)]
struct Seen {
    leaf: CertificateDer<'static>,
    alpn: Option<Vec<u8>>,
    version: Option<ProtocolVersion>,
}

/// One connection: the server accepts, sends `ok` and closes. Returns the client's view and the
/// client certificate the server saw. A rejection surfaces on the client either in the handshake
/// or, in TLS 1.3 where the server judges the client's certificate last, when reading.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<ClientConfig>,
    sni: ServerName<'static>,
) -> (io::Result<Seen>, io::Result<Option<CertificateDer<'static>>>) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let server_side = tokio::spawn(async move {
        let (socket, _) = tcp.accept().await?;
        let mut tls = TlsAcceptor::from(server).accept(socket).await?;
        let client_cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first().cloned());
        tls.write_all(b"ok").await?;
        tls.shutdown().await?;
        Ok(client_cert)
    });
    let client_side = async {
        let socket = TcpStream::connect(addr).await?;
        let mut tls = TlsConnector::from(client).connect(sni, socket).await?;
        let mut buf = [0u8; 2];
        tls.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ok");
        let conn = tls.get_ref().1;
        let leaf = conn.peer_certificates().and_then(|c| c.first().cloned()).expect("server certificate");
        Ok(Seen { leaf, alpn: conn.alpn_protocol().map(<[u8]>::to_vec), version: conn.protocol_version() })
    };
    let limit = Duration::from_secs(10);
    let client_result = tokio::time::timeout(limit, client_side).await.expect("client timed out");
    let server_result = tokio::time::timeout(limit, server_side).await.expect("server timed out").expect("join");
    (client_result, server_result)
}

/// Which certificate the listener serves for `sni`; panics when the handshake fails.
async fn served(server: &Arc<rustls::ServerConfig>, client: &Arc<ClientConfig>, sni: &str) -> CertificateDer<'static> {
    let sni = match sni.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => name(sni),
    };
    let (seen, _) = handshake(server.clone(), client.clone(), sni.clone()).await;
    seen.unwrap_or_else(|e| panic!("handshake for {sni:?}: {e}")).leaf
}

/// Accepts any server certificate (signatures still checked), so a test can look at which
/// certificate was served for a name that certificate is not valid for.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn accept_any() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// The usual SNI fixture: certificate A for `a.test` (and 127.0.0.1), B for `*.b.test`.
fn two_certs(pki: &Pki) -> (Ca, Leaf, Leaf) {
    let ca = pki.ca("ca");
    let a = pki.server(&ca, "a", &["a.test", "127.0.0.1"]);
    let b = pki.server(&ca, "b", &["*.b.test"]);
    (ca, a, b)
}

#[tokio::test]
async fn sni_chooses_the_certificate_named_in_its_san() {
    let pki = Pki::new();
    let (ca, a, b) = two_certs(&pki);
    let server = server_config(&listener(vec![cert(&a, &[]), cert(&b, &[])])).expect("server config");
    // A verifying client: the served certificate must also be valid for the name asked.
    let client = trusting(&ca);
    assert_eq!(served(&server, &client, "a.test").await, a.der);
    assert_eq!(served(&server, &client, "x.b.test").await, b.der);
    assert_eq!(served(&server, &client, "API.B.Test").await, b.der, "SNI is case-insensitive");
}

#[tokio::test]
async fn unknown_or_absent_sni_gets_the_first_certificate() {
    let pki = Pki::new();
    let (_, a, b) = two_certs(&pki);
    let client = accept_any();
    let server = server_config(&listener(vec![cert(&a, &[]), cert(&b, &[])])).expect("server config");
    assert_eq!(served(&server, &client, "unknown.test").await, a.der);
    assert_eq!(served(&server, &client, "b.test").await, a.der, "`*.b.test` does not cover `b.test`");
    assert_eq!(served(&server, &client, "y.x.b.test").await, a.der, "a wildcard is one label");
    // An IP address as the server name means the client sends no SNI at all.
    assert_eq!(served(&server, &client, "127.0.0.1").await, a.der);
    // "First" is list order, not anything about A.
    let swapped = server_config(&listener(vec![cert(&b, &[]), cert(&a, &[])])).expect("server config");
    assert_eq!(served(&swapped, &client, "unknown.test").await, b.der);
}

#[tokio::test]
async fn sni_list_replaces_the_certificate_names() {
    let pki = Pki::new();
    let (_, a, b) = two_certs(&pki);
    let client = accept_any();
    let server = server_config(&listener(vec![cert(&a, &[]), cert(&b, &["api.example", "*.wild.example"])]))
        .expect("server config");
    assert_eq!(served(&server, &client, "api.example").await, b.der);
    assert_eq!(served(&server, &client, "one.wild.example").await, b.der);
    assert_eq!(served(&server, &client, "x.b.test").await, a.der, "SANs are not used when `sni` is set");
}

#[tokio::test]
async fn alpn_prefers_h2_and_offers_http1() {
    let pki = Pki::new();
    let (ca, a, _) = two_certs(&pki);
    let server = server_config(&listener(vec![cert(&a, &[])])).expect("server config");
    let h2 = client_config(&upstream(Some(&ca), None), Protocol::Http2).expect("client config");
    let (seen, _) = handshake(server.clone(), h2, name("a.test")).await;
    assert_eq!(seen.expect("h2 handshake").alpn.as_deref(), Some(&b"h2"[..]));
    let (seen, _) = handshake(server.clone(), trusting(&ca), name("a.test")).await;
    assert_eq!(seen.expect("http/1.1 handshake").alpn.as_deref(), Some(&b"http/1.1"[..]));
    // Offered in the other order, the server's preference still wins.
    let mut both = (*trusting(&ca)).clone();
    both.alpn_protocols = vec![b"http/1.1".to_vec(), b"h2".to_vec()];
    let (seen, _) = handshake(server, Arc::new(both), name("a.test")).await;
    assert_eq!(seen.expect("handshake offering both").alpn.as_deref(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn min_version_13_refuses_a_tls12_only_client() {
    let pki = Pki::new();
    let (ca, a, _) = two_certs(&pki);
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&ca.pem).expect("CA")).expect("root");
    let tls12_only = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls12_only = Arc::new(tls12_only);

    let mut tls = listener(vec![cert(&a, &[])]);
    let default_server = server_config(&tls).expect("server config");
    let (seen, _) = handshake(default_server, tls12_only.clone(), name("a.test")).await;
    assert_eq!(seen.expect("TLS 1.2 allowed by default").version, Some(ProtocolVersion::TLSv1_2));

    tls.min_version = TlsVersion::Tls13;
    let strict = server_config(&tls).expect("server config");
    let (seen, server_seen) = handshake(strict.clone(), tls12_only, name("a.test")).await;
    assert!(seen.is_err() && server_seen.is_err(), "a TLS 1.2-only client must be refused");
    let (seen, _) = handshake(strict, trusting(&ca), name("a.test")).await;
    assert_eq!(seen.expect("TLS 1.3 client").version, Some(ProtocolVersion::TLSv1_3));
}

/// A listener for `a.test` whose client certificates are checked against `client_ca`.
fn mtls_listener(a: &Leaf, client_ca: &Ca, auth: ClientAuth) -> Arc<rustls::ServerConfig> {
    let mut tls = listener(vec![cert(a, &[])]);
    tls.client_ca = Some(client_ca.pem.clone());
    tls.client_auth = auth;
    server_config(&tls).expect("server config")
}

fn with_identity(ca: &Ca, client: &Leaf) -> Arc<ClientConfig> {
    client_config(&upstream(Some(ca), Some(client)), Protocol::Http1).expect("client config")
}

#[tokio::test]
async fn required_client_auth_accepts_only_certificates_from_client_ca() {
    let pki = Pki::new();
    let (ca, a, _) = two_certs(&pki);
    let clients_ca = pki.ca("clients-ca");
    let rogue_ca = pki.ca("rogue-ca");
    let good = pki.client(&clients_ca, "good-client");
    let rogue = pki.client(&rogue_ca, "rogue-client");
    let server = mtls_listener(&a, &clients_ca, ClientAuth::Required);

    let (seen, server_seen) = handshake(server.clone(), trusting(&ca), name("a.test")).await;
    assert!(seen.is_err() && server_seen.is_err(), "a client without a certificate must be refused");

    let (seen, server_seen) = handshake(server.clone(), with_identity(&ca, &good), name("a.test")).await;
    seen.expect("client with a certificate from client_ca");
    assert_eq!(server_seen.expect("server side"), Some(good.der));

    let (seen, server_seen) = handshake(server, with_identity(&ca, &rogue), name("a.test")).await;
    assert!(seen.is_err(), "a certificate from another CA must be refused");
    let err = server_seen.expect_err("server must reject the rogue certificate").to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn optional_client_auth_lets_anonymous_in_but_still_checks_certificates() {
    let pki = Pki::new();
    let (ca, a, _) = two_certs(&pki);
    let clients_ca = pki.ca("clients-ca");
    let rogue_ca = pki.ca("rogue-ca");
    let good = pki.client(&clients_ca, "good-client");
    let rogue = pki.client(&rogue_ca, "rogue-client");
    let server = mtls_listener(&a, &clients_ca, ClientAuth::Optional);

    let (seen, server_seen) = handshake(server.clone(), trusting(&ca), name("a.test")).await;
    seen.expect("anonymous client");
    assert_eq!(server_seen.expect("server side"), None);

    let (seen, server_seen) = handshake(server.clone(), with_identity(&ca, &good), name("a.test")).await;
    seen.expect("client with a valid certificate");
    assert_eq!(server_seen.expect("server side"), Some(good.der));

    let (seen, server_seen) = handshake(server, with_identity(&ca, &rogue), name("a.test")).await;
    assert!(seen.is_err() && server_seen.is_err(), "an invalid certificate is refused even when optional");
}

#[tokio::test]
async fn upstream_ca_is_the_only_trust() {
    let pki = Pki::new();
    let (ca, a, _) = two_certs(&pki);
    let other_ca = pki.ca("other-ca");
    let impostor = pki.server(&other_ca, "impostor", &["a.test"]);
    let client = trusting(&ca);

    let genuine = server_config(&listener(vec![cert(&a, &[])])).expect("server config");
    let (seen, _) = handshake(genuine, client.clone(), name("a.test")).await;
    assert_eq!(seen.expect("server signed by the configured CA").leaf, a.der);

    let impostor = server_config(&listener(vec![cert(&impostor, &[])])).expect("server config");
    let (seen, _) = handshake(impostor, client, name("a.test")).await;
    let err = seen.expect_err("server signed by another CA").to_string();
    assert!(err.contains("invalid peer certificate: UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn upstream_without_ca_uses_public_roots_only() {
    let pki = Pki::new();
    let (_, a, _) = two_certs(&pki);
    let server = server_config(&listener(vec![cert(&a, &[])])).expect("server config");
    let client = client_config(&upstream(None, None), Protocol::Http1).expect("client config");
    let (seen, _) = handshake(server, client, name("a.test")).await;
    let err = seen.expect_err("a private CA is not a Mozilla root").to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn upstream_mtls_presents_the_configured_certificate() {
    let pki = Pki::new();
    let (ca, a, _) = two_certs(&pki);
    let gateway_ca = pki.ca("gateway-ca");
    let gateway = pki.client(&gateway_ca, "gateway");
    let server = mtls_listener(&a, &gateway_ca, ClientAuth::Required);
    let (seen, server_seen) = handshake(server, with_identity(&ca, &gateway), name("a.test")).await;
    seen.expect("mTLS to an upstream that requires it");
    assert_eq!(server_seen.expect("server side"), Some(gateway.der));
}

#[test]
fn server_name_prefers_the_configured_name_and_accepts_ips() {
    let mut tls = upstream(None, None);
    assert_eq!(server_name(&tls, "users.internal").expect("host"), name("users.internal"));
    assert_eq!(
        server_name(&tls, "10.0.0.7").expect("IPv4"),
        ServerName::IpAddress(std::net::IpAddr::from([10, 0, 0, 7]).into())
    );
    assert_eq!(
        server_name(&tls, "[::1]").expect("bracketed IPv6"),
        ServerName::IpAddress(std::net::Ipv6Addr::LOCALHOST.into())
    );
    let err = server_name(&tls, "bad name").expect_err("space in a host");
    assert_eq!(
        err.to_string(),
        "the endpoint host `bad name` is not a valid DNS name or IP address \
         to verify the upstream's certificate against"
    );
    tls.server_name = Some("api.example".to_owned());
    assert_eq!(server_name(&tls, "10.0.0.7").expect("configured"), name("api.example"));
}

fn server_error(certificates: Vec<CertConfig>) -> String {
    server_config(&listener(certificates)).expect_err("config must be refused").to_string()
}

#[test]
fn missing_file_names_the_path() {
    let pki = Pki::new();
    let (_, a, _) = two_certs(&pki);
    let missing = pki.path("missing.pem");
    let err = server_error(vec![CertConfig { cert: missing.clone(), key: a.key, sni: vec![] }]);
    assert!(err.starts_with(&format!("{}: cannot read: ", missing.display())), "{err}");
}

#[test]
fn pem_without_certificate_is_reported() {
    let pki = Pki::new();
    let (_, a, _) = two_certs(&pki);
    // The classic mix-up: the key file given as the certificate.
    let err = server_error(vec![CertConfig { cert: a.key.clone(), key: a.key.clone(), sni: vec![] }]);
    assert_eq!(err, format!("{}: no certificate found (expected PEM `-----BEGIN CERTIFICATE-----`)", a.key.display()));
}

#[test]
fn key_that_does_not_match_is_reported() {
    let pki = Pki::new();
    let (_, a, b) = two_certs(&pki);
    let err = server_error(vec![CertConfig { cert: a.cert.clone(), key: b.key.clone(), sni: vec![] }]);
    assert!(err.starts_with(&format!("{} does not match {}", b.key.display(), a.cert.display())), "{err}");
}

#[test]
fn file_without_a_private_key_is_reported() {
    let pki = Pki::new();
    let (_, a, _) = two_certs(&pki);
    let err = server_error(vec![CertConfig { cert: a.cert.clone(), key: a.cert.clone(), sni: vec![] }]);
    assert!(err.starts_with(&format!("{}: not a PKCS#8, PKCS#1 or SEC1 private key", a.cert.display())), "{err}");
}

#[test]
fn malformed_pem_is_reported_as_text() {
    let pki = Pki::new();
    let (_, a, _) = two_certs(&pki);
    let truncated = pki.write("truncated.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
    let err = server_error(vec![CertConfig { cert: truncated.clone(), key: a.key, sni: vec![] }]);
    assert_eq!(
        err,
        format!("{}: malformed PEM: a section is not closed by `-----END CERTIFICATE-----`", truncated.display())
    );
}

#[test]
fn undecodable_certificate_and_key_are_reported() {
    let pki = Pki::new();
    let (_, a, _) = two_certs(&pki);
    let junk_cert = pki.write("junk.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    let err = server_error(vec![CertConfig { cert: junk_cert.clone(), key: a.key.clone(), sni: vec![] }]);
    assert_eq!(err, format!("{}: certificate #1 is not a valid X.509 certificate (BadEncoding)", junk_cert.display()));

    let junk_key = pki.write("junk.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    let err = server_error(vec![CertConfig { cert: a.cert.clone(), key: junk_key.clone(), sni: vec![] }]);
    assert!(
        err.starts_with(&format!("{}: the private key cannot be used (failed to parse", junk_key.display())),
        "{err}"
    );
}

#[test]
fn a_later_certificate_without_names_is_refused() {
    let pki = Pki::new();
    let (ca, a, _) = two_certs(&pki);
    let ip_only = pki.server(&ca, "ip-only", &["127.0.0.1"]);
    // As the first certificate it is the fallback, so that is fine...
    server_config(&listener(vec![cert(&ip_only, &[]), cert(&a, &[])])).expect("fallback may be unnamed");
    // ...but after another one nothing could ever select it.
    let err = server_error(vec![cert(&a, &[]), cert(&ip_only, &[])]);
    assert!(err.starts_with(&format!("{}: the certificate has no DNS names", ip_only.cert.display())), "{err}");
    // Naming it in `sni` fixes that.
    server_config(&listener(vec![cert(&a, &[]), cert(&ip_only, &["ip.test"])])).expect("named via sni");
}

#[test]
fn client_ca_problems_name_the_file() {
    let pki = Pki::new();
    let (_, a, _) = two_certs(&pki);
    let mut tls = listener(vec![cert(&a, &[])]);
    tls.client_ca = Some(a.key.clone());
    let err = server_config(&tls).expect_err("a key is not a CA").to_string();
    assert!(err.starts_with(&format!("{}: no certificate found", a.key.display())), "{err}");

    let missing = pki.path("missing-ca.pem");
    let err = client_config(
        &UpstreamTls { ca: Some(missing.clone()), server_name: None, client_cert: None },
        Protocol::Http1,
    )
    .expect_err("missing CA")
    .to_string();
    assert!(err.starts_with(&format!("{}: cannot read: ", missing.display())), "{err}");
}

#[test]
fn listener_without_certificates_is_refused() {
    assert_eq!(
        server_error(vec![]),
        "the TLS listener has no certificates; add at least one to `server.tls.certificates`"
    );
}

/// A certificate's `notAfter` is read as rcgen wrote it: `UTCTime` through
/// 2049, `GeneralizedTime` from 2050 (RFC 5280 §4.1.2.5).
#[test]
fn not_after_is_read_from_the_certificate() {
    let key = KeyPair::generate().expect("key");
    for (year, month, day) in [(2030, 6, 15), (2049, 12, 31), (2050, 1, 1), (2024, 2, 29), (4096, 1, 1)] {
        let mut params = CertificateParams::new(vec!["a.test".to_owned()]).expect("SANs");
        params.not_after = rcgen::date_time_ymd(year, month, day) + Duration::from_secs(12 * 3600 + 34 * 60 + 56);
        let cert = params.self_signed(&key).expect("self-signed");
        let want = params.not_after.unix_timestamp();
        assert_eq!(not_after(cert.der()), Some(want), "{year}-{month}-{day}");
    }
    // 2030-06-15T12:34:56Z, as `date -u -d 2030-06-15T12:34:56Z +%s` has it.
    assert_eq!(seconds_of(0x17, b"300615123456Z"), Some(1_907_757_296));
    assert_eq!(seconds_of(0x18, b"19700101000000Z"), Some(0));
    assert_eq!(seconds_of(0x17, b"700101000000Z"), Some(0));
}

/// What is not a certificate's time, or not a certificate, gives no time
/// (and no panic): truncated at every byte, wrong tags, bad digits.
#[test]
fn not_after_of_what_is_not_a_certificate_is_none() {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["a.test".to_owned()]).expect("SANs").self_signed(&key).expect("cert");
    let der = cert.der().to_vec();
    for end in 0..der.len() {
        assert_eq!(not_after(&der[..end]), None, "truncated at {end}");
    }
    assert_eq!(not_after(b""), None);
    assert_eq!(not_after(&[0x30, 0x85, 0, 0, 0, 0, 1]), None, "a length of five bytes");
    for bad in
        [&b"301315123456Z"[..], b"300632123456Z", b"300615243456Z", b"3006151234560", b"30061512345Z", b"3o0615123456Z"]
    {
        assert_eq!(seconds_of(0x17, bad), None, "{}", String::from_utf8_lossy(bad));
    }
    assert_eq!(seconds_of(0x04, b"300615123456Z"), None, "not a time's tag");
}

/// What a client's certificate says upstream (`X-Forwarded-Client-Cert`):
/// its SHA-256, its subject as RFC 4514 writes it (as `openssl x509
/// -subject -nameopt RFC2253,-esc_msb` does: last relative name first, `,`
/// and a leading `#` escaped; but an attribute without a short name in the
/// RFC, which openssl names its own way, as its OID and DER), its URI and
/// DNS names.
#[test]
fn a_client_certificate_is_said_as_envoy_says_it() {
    use sha2::Digest;
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["web.test".to_owned(), "api.test".to_owned()]).expect("SANs");
    params.subject_alt_names.push(rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from("spiffe://example.org/ns/default/sa/web").expect("IA5"),
    ));
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CountryName, "DE");
    params.distinguished_name.push(DnType::OrganizationName, "#Acme; \"Ltd\"");
    params.distinguished_name.push(
        DnType::CustomDnType(vec![2, 5, 4, 5]),
        rcgen::DnValue::PrintableString(rcgen::string::PrintableString::try_from("42").expect("printable")),
    );
    params.distinguished_name.push(DnType::CommonName, "web, Zürich ");
    let cert = params.self_signed(&key).expect("self-signed");
    let presented = ClientCert::of(std::slice::from_ref(cert.der())).expect("a certificate");
    let element = presented.element().expect("an element");
    let hash: String = sha2::Sha256::digest(cert.der()).iter().map(|b| format!("{b:02x}")).collect();
    // To plugins as RFC 4514 has it.
    assert_eq!(presented.subject, r#"CN=web\, Zürich\ ,2.5.4.5=#13023432,O=\#Acme\; \"Ltd\",C=DE"#);
    assert_eq!(presented.uris, ["spiffe://example.org/ns/default/sa/web"]);
    assert_eq!(presented.dns_names, ["web.test", "api.test"]);
    // Upstream, quoted, and beyond ASCII as hex pairs: `CN=web\, Z\C3\BCrich\ ,…`.
    let subject = r#""CN=web\\, Z\\C3\\BCrich\\ ,2.5.4.5=#13023432,O=\\#Acme\\; \\\"Ltd\\\",C=DE""#;
    let want =
        format!("Hash={hash};Subject={subject};URI=spiffe://example.org/ns/default/sa/web;DNS=web.test;DNS=api.test");
    assert_eq!(String::from_utf8_lossy(element.as_bytes()), want);
}

#[test]
fn names_escape_and_oids_read_as_rfc_4514_has_them() {
    let mut out = String::new();
    escape_value(&mut out, " a\u{1}b ");
    assert_eq!(out, r"\ a\01b\ ");
    assert_eq!(dotted(&[0x55, 0x04, 0x05]).as_deref(), Some("2.5.4.5"));
    assert_eq!(
        dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]).as_deref(),
        Some("1.2.840.113549.1.9.1")
    );
    assert_eq!(dotted(&[0x2a, 0x86]), None, "an arc not ended");
    assert_eq!(dotted(&[]), None);
    // A known attribute in a string type not read here keeps its name, its
    // value in hex; two in one relative name join with `+`.
    let t61 = [0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x03, 0x14, 0x02, b'a', b'b'];
    assert_eq!(rfc4514(&t61).as_deref(), Some("CN=#14026162"));
    let two = [
        0x31, 0x12, 0x30, 0x07, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x00, 0x30, 0x07, 0x06, 0x03, 0x55, 0x04, 0x0b,
        0x0c, 0x00,
    ];
    assert_eq!(rfc4514(&two).as_deref(), Some("CN=+OU="));
    assert_eq!(rfc4514(&t61[..12]), None, "cut short");
    assert_eq!(ClientCert::of(&[]), None);
    assert_eq!(ClientCert::of(&[CertificateDer::from(vec![0x30, 0x00])]), None);
}
