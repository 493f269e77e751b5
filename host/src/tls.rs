//! TLS at both ends of the proxy: the listener's `rustls::ServerConfig` (certificate chosen by
//! SNI, ALPN `h2`/`http/1.1`, minimum version, client certificates) and the upstream side's
//! `rustls::ClientConfig` (trusted CA, mTLS identity, ALPN per protocol).
//!
//! Everything is read and checked here, when the config is loaded, so a bad file stops the
//! gateway (or a reload) with an error naming the file, never a failed handshake later. The
//! files are read with blocking I/O: call these from `spawn_blocking` on a runtime thread.
//!
//! Every config uses the ring provider explicitly: a process-wide default provider would make
//! the result depend on whichever crate happened to install one first.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore, SignatureScheme, SupportedProtocolVersion};
use rustls_pki_types::pem::{self, PemObject};

use crate::config::{ClientAuth, Config, Protocol, ServerTls, TlsVersion, UpstreamTls};

/// Why a TLS config could not be built. Each message names the file and the problem, for an
/// operator reading the startup log.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {problem}", path.display())]
    Pem { path: PathBuf, problem: String },
    #[error("{}: no certificate found (expected PEM `-----BEGIN CERTIFICATE-----`)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: certificate #{number} is not a valid X.509 certificate ({reason})", path.display())]
    BadCertificate { path: PathBuf, number: usize, reason: String },
    #[error(
        "{}: not a PKCS#8, PKCS#1 or SEC1 private key (expected PEM `-----BEGIN PRIVATE KEY-----`, \
         `-----BEGIN RSA PRIVATE KEY-----` or `-----BEGIN EC PRIVATE KEY-----`; encrypted keys are not supported)",
        path.display()
    )]
    NoPrivateKey { path: PathBuf },
    #[error(
        "{}: the private key cannot be used ({reason}); supported keys are RSA (2048 bits or more), \
         ECDSA P-256/P-384 and Ed25519",
        path.display()
    )]
    UnsupportedKey { path: PathBuf, reason: String },
    #[error(
        "{} does not match {} (the key is not the one the certificate was issued for)",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "{}: the certificate has no DNS names in its subjectAltName and `sni` is empty, so no client can \
         select it; list the names it should serve in `sni`",
        path.display()
    )]
    NoNames { path: PathBuf },
    #[error("{}: certificate #{number} cannot be used as a trusted CA ({reason})", path.display())]
    BadCa { path: PathBuf, number: usize, reason: String },
    #[error("{}: cannot verify client certificates against this CA ({source})", path.display())]
    ClientVerifier { path: PathBuf, source: VerifierBuilderError },
    #[error("the TLS listener has no certificates; add at least one to `server.tls.certificates`")]
    NoCertificates,
    #[error("{origin} `{name}` is not a valid DNS name or IP address to verify the upstream's certificate against")]
    ServerName { origin: &'static str, name: String },
    /// Only when the provider lacks what the config asks for, which ring does not.
    #[error("cannot build the TLS {side} config: {source}")]
    Build { side: &'static str, source: rustls::Error },
}

const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The listener's config for `[server.tls]`.
/// The TLS listener's acceptor as one config built it, and the signal that
/// a reload replaced it: connections it accepted then close gracefully (as
/// on shutdown), so that a tightened `client_ca`, a revoked client's CA or a
/// replaced key reaches the connections already open, not only new ones.
/// A reload that leaves the TLS config and its files as they were keeps it
/// (and its session cache).
pub struct Listening {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// What its files held when it was built ([`files_digest`]).
    pub files: [u8; 32],
    /// Whether a client's certificate is said upstream
    /// ([`ClientCert::element`]).
    pub forward_client_cert: bool,
    replaced: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listening").field("replaced", &*self.replaced.borrow()).finish_non_exhaustive()
    }
}

impl Listening {
    pub fn new(acceptor: tokio_rustls::TlsAcceptor, files: [u8; 32], forward_client_cert: bool) -> Self {
        Self { acceptor, files, forward_client_cert, replaced: tokio::sync::watch::channel(false).0 }
    }

    /// Says it is replaced, to every worker serving its connections.
    pub fn replace(&self) {
        self.replaced.send_replace(true);
    }

    /// Turns true when it is replaced.
    pub fn replaced(&self) -> tokio::sync::watch::Receiver<bool> {
        self.replaced.subscribe()
    }
}

/// A digest of what the files at `paths` hold now (a file that cannot be
/// read counts as such): whether a config's TLS files changed since.
pub fn files_digest<'p>(paths: impl IntoIterator<Item = &'p Path>) -> [u8; 32] {
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    for path in paths {
        match crate::files::read_regular(path, crate::files::MAX_CONFIG_FILE) {
            Ok(bytes) => {
                digest.update((bytes.len() as u64).to_le_bytes());
                digest.update(&bytes);
            }
            Err(_) => digest.update(u64::MAX.to_le_bytes()),
        }
    }
    digest.finalize().into()
}

/// The files a listener's TLS config reads.
pub fn server_files(tls: &ServerTls) -> impl Iterator<Item = &Path> {
    let certificates = tls.certificates.iter().flat_map(|c| [c.cert.as_path(), c.key.as_path()]);
    certificates.chain(tls.client_ca.as_deref()).chain(tls.client_crl.as_deref())
}

pub fn server_config(tls: &ServerTls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = SniResolver::load(tls, &provider)?;
    let versions: &[&SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|source| TlsError::Build { side: "server", source })?;
    // Without `client_ca` there is nothing to verify against; config validation already
    // rejects `client_auth` on its own, so it is simply ignored here.
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = Arc::new(load_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            // `Optional` lets anonymous clients in, but a certificate that is presented is still
            // verified: an invalid one fails the handshake rather than being ignored.
            let verifier = match tls.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            // Revoked certificates: every certificate of a client's chain
            // below its trust anchor must be covered by a list (a status
            // that cannot be told fails the handshake).
            let verifier = match &tls.client_crl {
                Some(path) => verifier.with_crls(load_crls(path)?),
                None => verifier,
            };
            let verifier = verifier.build().map_err(|source| {
                let path = match (&source, &tls.client_crl) {
                    (VerifierBuilderError::InvalidCrl(_), Some(crl)) => crl.clone(),
                    _ => ca.clone(),
                };
                TlsError::ClientVerifier { path, source }
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    // Server preference order: a client offering both gets HTTP/2.
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// The config for connecting to an upstream with `[upstreams.NAME.tls]`.
pub fn client_config(tls: &UpstreamTls, protocol: Protocol) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // A private CA replaces the public roots: an internal upstream must not be impersonable by
    // anyone who can get a public certificate for its name.
    let roots = match &tls.ca {
        Some(ca) => load_roots(ca)?,
        None => webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|source| TlsError::Build { side: "client", source })?
        .with_root_certificates(roots);
    let mut config = match &tls.client_cert {
        Some((cert, key)) => {
            builder.with_client_cert_resolver(Arc::new(ClientIdentity(load_certified_key(cert, key, &provider)?)))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match protocol {
        Protocol::Http2 => vec![ALPN_H2.to_vec()],
        Protocol::Http1 => vec![ALPN_HTTP1.to_vec()],
    };
    Ok(Arc::new(config))
}

/// The name an upstream's certificate is verified against (and sent as SNI unless it is an IP
/// address): `tls.server_name`, else the endpoint's host.
pub fn server_name(tls: &UpstreamTls, endpoint_host: &str) -> Result<ServerName<'static>, TlsError> {
    let (origin, name) = match &tls.server_name {
        Some(name) => ("tls.server_name", name.as_str()),
        None => ("the endpoint host", endpoint_host),
    };
    // `host:port` endpoints write IPv6 addresses in brackets; the name inside is what counts.
    let bare = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::ServerName { origin, name: name.to_owned() })
}

/// Picks the listener's certificate from the client's SNI.
#[derive(Debug)]
struct SniResolver {
    /// In config order; the first one answers clients without SNI or with an unknown name.
    certs: Vec<Arc<CertifiedKey>>,
    /// Lowercase names, exact (`a.test`) or wildcard (`*.b.test`), to an index into `certs`.
    names: HashMap<String, usize>,
}

impl SniResolver {
    fn load(tls: &ServerTls, provider: &CryptoProvider) -> Result<Self, TlsError> {
        if tls.certificates.is_empty() {
            return Err(TlsError::NoCertificates);
        }
        let mut certs = Vec::with_capacity(tls.certificates.len());
        let mut names = HashMap::new();
        for (index, c) in tls.certificates.iter().enumerate() {
            let key = load_certified_key(&c.cert, &c.key, provider)?;
            let own: Vec<String> = if c.sni.is_empty() { dns_names(&c.cert, &key)? } else { c.sni.clone() };
            // The first certificate is still served as the fallback, so it may have no names.
            if own.is_empty() && index > 0 {
                return Err(TlsError::NoNames { path: c.cert.clone() });
            }
            for name in own {
                // On overlap the earlier certificate keeps the name: list order is priority.
                names.entry(name.trim_end_matches('.').to_ascii_lowercase()).or_insert(index);
            }
            certs.push(key);
        }
        Ok(Self { certs, names })
    }

    fn lookup(&self, sni: &str) -> Option<usize> {
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&index) = self.names.get(&sni) {
            return Some(index);
        }
        // A wildcard stands for exactly one label (RFC 6125 §6.4.3): `*.b.test` matches
        // `x.b.test` but neither `b.test` nor `y.x.b.test`.
        let (_, parent) = sni.split_once('.')?;
        self.names.get(&format!("*.{parent}")).copied()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let index = hello.server_name().and_then(|sni| self.lookup(sni)).unwrap_or(0);
        self.certs.get(index).cloned()
    }
}

/// The upstream-facing identity: always the one configured certificate.
#[derive(Debug)]
struct ClientIdentity(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientIdentity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The DNS subjectAltNames of a loaded leaf certificate (wildcards included).
fn dns_names(path: &Path, key: &CertifiedKey) -> Result<Vec<String>, TlsError> {
    let bad = |reason: String| TlsError::BadCertificate { path: path.to_owned(), number: 1, reason };
    let der = key.end_entity_cert().map_err(|e| bad(certificate_problem(e)))?;
    let leaf = webpki::EndEntityCert::try_from(der).map_err(|e| bad(e.to_string()))?;
    // Used only to choose among our own certificates: the client still verifies the name.
    Ok(leaf.valid_dns_names().map(str::to_owned).collect())
}

/// A certificate the gateway presents, and when it stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// `listener`, or `upstream:NAME` (that upstream's client certificate).
    pub role: String,
    pub file: PathBuf,
    /// Its `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// The certificates `config` has the gateway present — the listener's, to
/// clients, and each upstream's client certificate — with when each
/// expires: the first certificate of each file, read now. A file that does
/// not hold one that parses is left out (its load fails with the reason).
pub fn presented(config: &Config) -> Vec<Presented> {
    let listener = config.server.tls.iter().flat_map(|t| &t.certificates).map(|c| ("listener".to_owned(), &c.cert));
    let upstreams = config.upstreams.iter().filter_map(|u| {
        let (cert, _) = u.tls.as_ref()?.client_cert.as_ref()?;
        Some((format!("upstream:{}", u.name), cert))
    });
    listener
        .chain(upstreams)
        .filter_map(|(role, file)| {
            let not_after = not_after(load_certs(file).ok()?.first()?)?;
            Some(Presented { role, file: file.clone(), not_after })
        })
        .collect()
}

/// The `notAfter` of a DER X.509 certificate (RFC 5280 §4.1.2.5), in
/// seconds since the Unix epoch; `None` if it is not where a certificate
/// keeps it.
pub(crate) fn not_after(cert: &[u8]) -> Option<i64> {
    let (_, _, validity) = der(Tbs::of(cert)?.validity)?;
    let (tag, time, _) = der(validity)?;
    seconds_of(tag, time)
}

/// A DER certificate's `TBSCertificate`, the parts of it read here.
struct Tbs<'c> {
    /// The contents of `validity`.
    validity: &'c [u8],
    /// The contents of `subject` (an `RDNSequence`).
    subject: &'c [u8],
    /// The contents of `extensions` (`[3]`: a `SEQUENCE` of them).
    extensions: Option<&'c [u8]>,
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

impl<'c> Tbs<'c> {
    fn of(cert: &'c [u8]) -> Option<Self> {
        const VERSION: u8 = 0xa0;
        const EXTENSIONS: u8 = 0xa3;
        let (SEQUENCE, cert, _) = der(cert)? else { return None };
        let (SEQUENCE, tbs, _) = der(cert)? else { return None };
        let (tag, _, mut rest) = der(tbs)?;
        if tag == VERSION {
            (_, _, rest) = der(rest)?;
        }
        // After the serial number: the signature algorithm and the issuer.
        let (_, _, rest) = der(rest)?;
        let (_, _, rest) = der(rest)?;
        let (SEQUENCE, validity, rest) = der(rest)? else { return None };
        let (SEQUENCE, subject, rest) = der(rest)? else { return None };
        // The public key, then the optional unique ids and extensions.
        let (_, _, mut rest) = der(rest)?;
        let mut extensions = None;
        while let Some((tag, contents, after)) = der(rest) {
            if tag == EXTENSIONS {
                extensions = Some(contents);
            }
            rest = after;
        }
        Some(Self { validity, subject, extensions })
    }

    /// The subject alternative names of `kind` (a `GeneralName`'s tag:
    /// [`DNS_NAME`], [`URI`]).
    fn alt_names(&self, kind: u8) -> Vec<&'c [u8]> {
        // id-ce-subjectAltName, 2.5.29.17.
        const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
        const BOOLEAN: u8 = 0x01;
        const OCTET_STRING: u8 = 0x04;
        let mut names = Vec::new();
        let Some((SEQUENCE, mut list, _)) = self.extensions.and_then(der) else { return names };
        while let Some((_, extension, rest)) = der(list) {
            list = rest;
            let Some((OID, SUBJECT_ALT_NAME, extension)) = der(extension) else { continue };
            let Some((mut tag, mut value, rest)) = der(extension) else { continue };
            if tag == BOOLEAN {
                let Some((t, v, _)) = der(rest) else { continue };
                (tag, value) = (t, v);
            }
            let (OCTET_STRING, Some((SEQUENCE, mut general, _))) = (tag, der(value)) else { continue };
            while let Some((tag, name, rest)) = der(general) {
                general = rest;
                if tag == kind {
                    names.push(name);
                }
            }
        }
        names
    }
}

/// `GeneralName` tags (RFC 5280 §4.2.1.6): `dNSName`, and
/// `uniformResourceIdentifier` (a SPIFFE ID is one).
const DNS_NAME: u8 = 0x82;
const URI: u8 = 0x86;

/// What the certificate a client presented says of it: read once for its
/// connection, for plugins (`request.client-certificate`) and upstreams
/// (`X-Forwarded-Client-Cert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The SHA-256 of its DER, in lowercase hex.
    pub hash: String,
    /// Its subject as RFC 4514 writes it (`CN=alice,O=Acme`).
    pub subject: String,
    /// Its URI subject alternative names (a SPIFFE ID is one).
    pub uris: Vec<String>,
    /// Its DNS subject alternative names.
    pub dns_names: Vec<String>,
}

impl ClientCert {
    /// The certificate of a client that presented `chain` (its own first);
    /// `None` for one that does not parse (a handshake verified it). A name
    /// with a byte a header value cannot carry is left out.
    pub fn of(chain: &[CertificateDer<'_>]) -> Option<Self> {
        use sha2::Digest;
        use std::fmt::Write;
        let leaf = chain.first()?;
        let tbs = Tbs::of(leaf)?;
        let mut hash = String::with_capacity(64);
        for b in sha2::Sha256::digest(leaf) {
            let _ = write!(hash, "{b:02x}");
        }
        let names = |kind| {
            let names = tbs.alt_names(kind).into_iter().filter(|n| n.iter().all(|b| b.is_ascii_graphic()));
            names.filter_map(|n| std::str::from_utf8(n).ok()).map(str::to_owned).collect()
        };
        // A subject not read here (a structure this reader does not know)
        // leaves the rest: the hash and the names still tell the client.
        let subject = rfc4514(tbs.subject).unwrap_or_else(|| {
            tracing::debug!(hash = %hash, "a client certificate's subject could not be read; it is given as empty");
            String::new()
        });
        Some(Self { hash, subject, uris: names(URI), dns_names: names(DNS_NAME) })
    }

    /// Its `X-Forwarded-Client-Cert` element, as Envoy writes it: `Hash`,
    /// `Subject`, each `URI` and `DNS` (a value with `,`, `;`, `=` or `"`
    /// quoted).
    pub fn element(&self) -> Option<http::HeaderValue> {
        let mut element = format!("Hash={};Subject=", self.hash);
        // Beyond ASCII as UTF-8 bytes in hex pairs (RFC 4514 §2.4), as
        // OpenSSL writes them for Envoy: a header's value is ASCII.
        let mut subject = String::with_capacity(self.subject.len());
        for c in self.subject.chars() {
            match c.is_ascii() {
                true => subject.push(c),
                false => {
                    for b in c.encode_utf8(&mut [0; 4]).bytes() {
                        subject.push_str(&format!("\\{b:02X}"));
                    }
                }
            }
        }
        quoted(&mut element, &subject);
        let names = self.uris.iter().map(|n| ("URI", n)).chain(self.dns_names.iter().map(|n| ("DNS", n)));
        for (key, name) in names {
            element.push(';');
            element.push_str(key);
            element.push('=');
            if name.contains([',', ';', '=', '"', '\\']) {
                quoted(&mut element, name);
            } else {
                element.push_str(name);
            }
        }
        http::HeaderValue::from_str(&element).ok()
    }
}

/// `text` as a quoted string, its `"` and `\` escaped.
fn quoted(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// A distinguished name as RFC 4514 writes it: its relative names last
/// first, joined by `,`; an attribute by its short name where the RFC has
/// one, else by its OID with its value's DER in hex (`2.5.4.5=#1303…`).
fn rfc4514(name: &[u8]) -> Option<String> {
    let mut relative = Vec::new();
    let mut rest = name;
    while !rest.is_empty() {
        let (SET, mut set, after) = der(rest)? else { return None };
        rest = after;
        let mut one = String::new();
        while !set.is_empty() {
            let (SEQUENCE, pair, after) = der(set)? else { return None };
            set = after;
            let (OID, oid, value) = der(pair)? else { return None };
            if !one.is_empty() {
                one.push('+');
            }
            attribute(&mut one, oid, value)?;
        }
        relative.push(one);
    }
    relative.reverse();
    Some(relative.join(","))
}

/// One `type=value` of a distinguished name (RFC 4514 §2.3, §2.4).
fn attribute(out: &mut String, oid: &[u8], value: &[u8]) -> Option<()> {
    const UTF8_STRING: u8 = 0x0c;
    const PRINTABLE_STRING: u8 = 0x13;
    const IA5_STRING: u8 = 0x16;
    const BMP_STRING: u8 = 0x1e;
    const PILOT: [u8; 9] = [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01];
    let short = match oid {
        [0x55, 0x04, 0x03] => Some("CN"),
        [0x55, 0x04, 0x06] => Some("C"),
        [0x55, 0x04, 0x07] => Some("L"),
        [0x55, 0x04, 0x08] => Some("ST"),
        [0x55, 0x04, 0x09] => Some("STREET"),
        [0x55, 0x04, 0x0a] => Some("O"),
        [0x55, 0x04, 0x0b] => Some("OU"),
        [p @ .., 0x19] if *p == PILOT => Some("DC"),
        [p @ .., 0x01] if *p == PILOT => Some("UID"),
        _ => None,
    };
    let (tag, contents, _) = der(value)?;
    let text = match tag {
        UTF8_STRING | PRINTABLE_STRING | IA5_STRING => std::str::from_utf8(contents).ok().map(str::to_owned),
        BMP_STRING if contents.len() % 2 == 0 => {
            char::decode_utf16(contents.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]])))
                .collect::<Result<String, _>>()
                .ok()
        }
        _ => None,
    };
    match short {
        Some(short) => out.push_str(short),
        None => out.push_str(&dotted(oid)?),
    }
    out.push('=');
    match (short, text) {
        (Some(_), Some(text)) => escape_value(out, &text),
        // A value of a type not read here, or of an attribute without a
        // short name: its DER in hex (RFC 4514 §2.4).
        _ => {
            out.push('#');
            for b in value {
                out.push_str(&format!("{b:02x}"));
            }
        }
    }
    Some(())
}

/// An attribute's value, escaped as RFC 4514 §2.4 asks, and its control
/// characters as hex pairs (a header value cannot carry them).
fn escape_value(out: &mut String, text: &str) {
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '#' if i == 0 => out.push_str("\\#"),
            c if c.is_control() => {
                let mut utf8 = [0; 4];
                for b in c.encode_utf8(&mut utf8).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
}

/// An OID's dotted decimal form (`2.5.4.5`).
fn dotted(oid: &[u8]) -> Option<String> {
    let mut arcs = Vec::new();
    let mut arc: u64 = 0;
    for &b in oid {
        arc = arc.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(arc);
            arc = 0;
        }
    }
    let (&first, rest) = arcs.split_first()?;
    if oid.last().is_none_or(|b| b & 0x80 != 0) {
        return None;
    }
    let (a, b) = if first < 80 { (first / 40, first % 40) } else { (2, first - 80) };
    let mut text = format!("{a}.{b}");
    for arc in rest {
        text.push_str(&format!(".{arc}"));
    }
    Some(text)
}

/// The DER element at the start of `input`: its tag, its contents, and what
/// follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81..=0x84 => {
            let (bytes, rest) = rest.split_at_checked(usize::from(first & 0x7f))?;
            (bytes.iter().fold(0, |n, &b| n << 8 | usize::from(b)), rest)
        }
        _ => return None,
    };
    let (contents, rest) = rest.split_at_checked(length)?;
    Some((tag, contents, rest))
}

/// A certificate's time (`UTCTime` `YYMMDDHHMMSSZ`, years 1950–2049, or
/// `GeneralizedTime` `YYYYMMDDHHMMSSZ`) in seconds since the Unix epoch.
fn seconds_of(tag: u8, text: &[u8]) -> Option<i64> {
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;
    let number = |range: std::ops::Range<usize>| {
        text.get(range)?.iter().try_fold(0, |n: i64, &b| b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0')))
    };
    let (year, at) = match (tag, text.len()) {
        (UTC_TIME, 13) => (number(0..2).map(|y| if y >= 50 { 1900 + y } else { 2000 + y })?, 2),
        (GENERALIZED_TIME, 15) => (number(0..4)?, 4),
        _ => return None,
    };
    let [month, day, hour, minute, second] = [0, 2, 4, 6, 8].map(|i| number(at + i..at + i + 2));
    let (month, day, hour, minute, second) = (month?, day?, hour?, minute?, second?);
    if text.last() != Some(&b'Z') || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Days from 1970-01-01 to the date (Howard Hinnant's `days_from_civil`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// A certificate chain and its private key, checked to belong together.
fn load_certified_key(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    certified_key_in((cert, &read(cert)?), (key, &read(key)?), provider)
}

/// [`load_certified_key`] of files already read.
fn certified_key_in(
    (cert, cert_pem): (&Path, &[u8]),
    (key, key_pem): (&Path, &[u8]),
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certs_in(cert, cert_pem)?;
    let key_der = private_key_in(key, key_pem)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsError::UnsupportedKey { path: key.to_owned(), reason: key_problem(e) })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key cannot report its public half, so there is nothing to compare.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch { cert: cert.to_owned(), key: key.to_owned() })
        }
        Err(e) => Err(TlsError::BadCertificate { path: cert.to_owned(), number: 1, reason: certificate_problem(e) }),
    }
}

/// Every certificate in a PEM file, in order; at least one.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs_in(path, &read(path)?)
}

/// [`load_certs`] of a file already read.
fn certs_in(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: path.to_owned(), problem: pem_problem(&e) })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}

/// TLS to Redis's files, read once and checked as an upstream's are (a CA
/// bundle whose every certificate can be a trust anchor; a certificate
/// chain with its key): the bytes checked are the bytes the client gets.
pub fn redis_tls(ca: Option<&Path>, client: Option<(&Path, &Path)>) -> Result<crate::config::RedisTls, TlsError> {
    let mut tls = crate::config::RedisTls::default();
    if let Some(ca) = ca {
        let pem = read(ca)?;
        roots_in(ca, &pem)?;
        tls.ca = Some(pem);
        tls.files.push(ca.to_owned());
    }
    if let Some((cert, key)) = client {
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        certified_key_in((cert, &cert_pem), (key, &key_pem), &rustls::crypto::ring::default_provider())?;
        tls.client = Some((cert_pem, crate::config::Secret::new_bytes(key_pem)));
        tls.files.extend([cert.to_owned(), key.to_owned()]);
    }
    Ok(tls)
}

/// The first private key in a PEM file.
fn private_key_in(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey { path: path.to_owned() },
        e => TlsError::Pem { path: path.to_owned(), problem: pem_problem(&e) },
    })
}

/// A CA bundle as trust anchors; each certificate in it must be usable as one.
fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    roots_in(path, &read(path)?)
}

/// [`load_roots`] of a file already read.
fn roots_in(path: &Path, bytes: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (index, cert) in certs_in(path, bytes)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_owned(),
            number: index + 1,
            reason: certificate_problem(e),
        })?;
    }
    Ok(roots)
}

/// The certificate revocation lists in a PEM file (`X509 CRL` blocks).
fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: path.to_owned(), problem: e.to_string() })?;
    if crls.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            problem: "no certificate revocation list found (expected PEM `-----BEGIN X509 CRL-----`)".into(),
        });
    }
    Ok(crls)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    crate::files::read_regular(path, crate::files::MAX_CONFIG_FILE)
        .map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

/// rustls words certificate errors for a peer ("invalid peer certificate: ..."); these are ours.
fn certificate_problem(e: rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(problem) => format!("{problem:?}"),
        other => other.to_string(),
    }
}

/// ring reports an unusable key as a `General` error, which rustls displays as "unexpected".
fn key_problem(e: rustls::Error) -> String {
    match e {
        rustls::Error::General(problem) => problem,
        other => other.to_string(),
    }
}

/// pki-types prints offending lines as byte arrays; an operator needs them as text.
fn pem_problem(e: &pem::Error) -> String {
    match e {
        // `end_marker` is only the label, e.g. `CERTIFICATE`.
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("malformed PEM: a section is not closed by `-----END {}-----`", String::from_utf8_lossy(end_marker))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed PEM: bad `-----BEGIN` line `{}`", String::from_utf8_lossy(line).trim())
        }
        pem::Error::Base64Decode(detail) => format!("malformed PEM: a section is not valid base64 ({detail})"),
        other => format!("malformed PEM: {other}"),
    }
}

#[cfg(test)]
mod tests;
