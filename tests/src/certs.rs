//! A test PKI: a CA and certificates it issues, written as PEM files the way
//! an operator would deploy them, plus rustls client configs to match.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};

/// Serial numbers, one per certificate issued (a revocation list names them).
static SERIALS: AtomicU64 = AtomicU64::new(1000);

/// A certificate authority whose files live in `dir`.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub pem: PathBuf,
    dir: PathBuf,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("pem", &self.pem).finish()
    }
}

/// A certificate (chain: leaf then CA) and its key, as files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub serial: u64,
    /// When it stops being valid, in seconds since the Unix epoch.
    pub not_after: i64,
}

impl Issued {
    /// A `[server.tls]` table (after a newline: it goes into the server
    /// extra, before `[upstreams]`) serving this certificate on an
    /// ephemeral port.
    pub fn tls_listener(&self) -> String {
        format!(
            "\n[server.tls]\nlisten = \"127.0.0.1:0\"\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
            self.cert.display(),
            self.key.display()
        )
    }
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        let pem = dir.join(format!("{name}.pem"));
        std::fs::write(&pem, issuer.pem()).expect("write CA");
        Self { issuer, pem, dir: dir.to_path_buf() }
    }

    fn issue(&self, file: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) -> Issued {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).expect("SANs");
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let serial = SERIALS.fetch_add(1, Ordering::Relaxed);
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let (cert_path, key_path) = (self.dir.join(format!("{file}.pem")), self.dir.join(format!("{file}.key")));
        std::fs::write(&cert_path, format!("{}{}", cert.pem(), self.issuer.pem())).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        Issued { cert: cert_path, key: key_path, serial, not_after: params.not_after.unix_timestamp() }
    }

    /// A certificate revocation list of this CA naming `revoked`, as a PEM
    /// file `file`.
    pub fn revocation_list(&self, file: &str, revoked: &[&Issued]) -> PathBuf {
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(SERIALS.fetch_add(1, Ordering::Relaxed)),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|i| RevokedCertParams {
                    serial_number: SerialNumber::from(i.serial),
                    revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).expect("sign the CRL");
        let path = self.dir.join(file);
        std::fs::write(&path, crl.pem().expect("CRL PEM")).expect("write CRL");
        path
    }

    /// A server certificate for these names (DNS names or IPs).
    pub fn server(&self, file: &str, sans: &[&str]) -> Issued {
        self.issue(file, sans, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate.
    pub fn client(&self, file: &str) -> Issued {
        self.issue(file, &["client.test"], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A rustls client that trusts only this CA, offering `alpn`, with an
    /// optional client certificate.
    pub fn client_config(&self, alpn: &[&[u8]], identity: Option<&Issued>) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.pem).expect("read CA") {
            roots.add(c.expect("CA cert")).expect("add CA");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let mut config = match identity {
            Some(id) => {
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_file_iter(&id.cert).expect("cert").map(|c| c.expect("cert")).collect();
                let key = PrivateKeyDer::from_pem_file(&id.key).expect("key");
                builder.with_client_auth_cert(chain, key).expect("client auth")
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}
