//! `[server]`, `[server.tls]`, `[admin]` and `[dns]`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderValue;
use toml::Spanned;

use super::error::Problems;
use super::raw::{self, Ambiguous, ClientAuth, TlsVersion};
use super::units::ByteSize;
use super::{POLLS, REQUEST_TIMEOUTS, WAITS, span, within, within_at};
use crate::exchange::MAX_EDITED_HEADERS;
use crate::routing::PathRules;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The plain listener; none for a gateway that serves only over TLS.
    pub listen: Option<SocketAddr>,
    pub workers: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body: u64,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// How long, after SIGTERM or SIGINT, the gateway goes on serving as
    /// before while `/health/ready` answers 503, before it stops accepting
    /// (the time a load balancer takes to stop sending it new connections).
    pub shutdown_delay: Duration,
    pub watch: bool,
    pub watch_interval: Duration,
    pub via: Via,
    /// How long a client may take between body frames (slow uploads → 408).
    pub body_read_timeout: Duration,
    /// How long a client may take none of its response (a client that
    /// stopped reading → closed).
    pub send_timeout: Duration,
    /// An upgraded connection (WebSocket) with no byte either way for this
    /// long is closed.
    pub tunnel_idle_timeout: Duration,
    /// Proxies that name the client and whose forwarding fields are kept.
    pub trusted_proxies: std::sync::Arc<[wasmgate_common::cidr::Cidr]>,
    /// Whose `X-Request-Id` is kept.
    pub request_id: super::RequestIds,
    /// What to do with paths that routes and upstreams may read as two.
    pub paths: PathRules,
    /// A request with a field that overrides its method or URL
    /// ([`crate::proxy::headers::OVERRIDES`]): 400, or served as sent.
    pub override_headers: Ambiguous,
    /// One JSON line per request on stdout.
    pub access_log: bool,
    /// Request fields whose names have `_` are kept (nginx's option of the
    /// name); dropped by default.
    pub underscores_in_headers: bool,
    pub tls: Option<ServerTls>,
}

/// This hop's `Via` entries (RFC 9110 §7.6.3), made once from
/// `server.via`: the protocol a message was received in, then the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    http10: HeaderValue,
    http11: HeaderValue,
    http2: HeaderValue,
}

impl Default for Via {
    fn default() -> Self {
        Self {
            http10: HeaderValue::from_static("1.0 wasmgate"),
            http11: HeaderValue::from_static("1.1 wasmgate"),
            http2: HeaderValue::from_static("2.0 wasmgate"),
        }
    }
}

impl Via {
    /// `None` when `name` cannot be in a header value.
    pub fn new(name: &str) -> Option<Self> {
        let entry = |version: &str| HeaderValue::from_str(&format!("{version} {name}")).ok();
        Some(Self { http10: entry("1.0")?, http11: entry("1.1")?, http2: entry("2.0")? })
    }

    /// The entry for a message received in `version`.
    pub fn of(&self, version: http::Version) -> &HeaderValue {
        match version {
            http::Version::HTTP_2 => &self.http2,
            http::Version::HTTP_10 => &self.http10,
            _ => &self.http11,
        }
    }
}

/// `[server.tls]`: the TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub listen: SocketAddr,
    pub certificates: Vec<CertConfig>,
    pub client_ca: Option<PathBuf>,
    /// Certificate revocation lists for the client certificates.
    pub client_crl: Option<PathBuf>,
    pub client_auth: ClientAuth,
    pub min_version: TlsVersion,
    /// Say the certificate a client presented upstream, in
    /// `X-Forwarded-Client-Cert`.
    pub forward_client_cert: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Names this certificate is chosen for; empty: its DNS SANs.
    pub sni: Vec<String>,
}

/// A value that must never reach a log: `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value.into_bytes())
    }

    pub fn new_bytes(value: Vec<u8>) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `[admin]`: health, readiness and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: Option<Secret>,
}

/// `[dns]`: resolution of `upstreams.*.dns` and `.srv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Empty: the system's resolvers.
    pub nameservers: Vec<SocketAddr>,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub timeout: Duration,
    pub family: raw::Family,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(300),
            timeout: Duration::from_secs(2),
            family: raw::Family::Any,
        }
    }
}

fn parse_addr(s: &Spanned<String>, key: &str, p: &mut Problems<'_>) -> Option<SocketAddr> {
    match s.get_ref().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            p.at(
                span(s),
                key,
                format!("`{}` is not an address with a port", s.get_ref()),
                "write an IP address and port, e.g. \"127.0.0.1:8080\" (port 0 picks a free one)",
            );
            None
        }
    }
}

pub(super) fn build_server(raw: &raw::RawServer, base: &Path, p: &mut Problems<'_>) -> Option<ServerConfig> {
    let listen = match &raw.listen {
        Some(l) => parse_addr(l, "server.listen", p).map(Some),
        None if raw.tls.is_none() => {
            p.at(
                None,
                "server.listen",
                "the gateway has no listener",
                "listen = \"0.0.0.0:8080\" (or a [server.tls] listener alone, to serve only over TLS)",
            );
            None
        }
        None => Some(None),
    };
    let tls = match &raw.tls {
        None => Some(None),
        Some(t) => build_tls(t, base, p).map(Some),
    };
    // One per core unless said.
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let workers = within_at(p, "server.workers", raw.workers.as_ref(), 1..=1024, cores);
    let via = raw.via.clone().unwrap_or_else(|| "wasmgate".to_owned());
    let via = match Via::new(&via) {
        Some(v) => v,
        None => {
            p.at(
                None,
                "server.via",
                format!("`{via}` is not a valid header value"),
                "use a plain token such as \"wasmgate\"",
            );
            Via::default()
        }
    };
    Some(ServerConfig {
        listen: listen?,
        workers,
        // A head is parsed again as more of it comes: its size is bounded.
        max_header_bytes: within_at(
            p,
            "server.max_header_bytes",
            raw.max_header_bytes.as_ref(),
            ByteSize(8 << 10)..=ByteSize(1 << 20),
            ByteSize(64 << 10),
        )
        .as_usize(),
        // As many as a plugin's edit may leave (the header maps' own limit
        // is ~24 000).
        max_headers: within_at(p, "server.max_headers", raw.max_headers.as_ref(), 1..=MAX_EDITED_HEADERS, 100),
        max_body: raw.max_body.map_or(10 << 20, |s| s.0),
        header_read_timeout: within_at(
            p,
            "server.header_read_timeout",
            raw.header_read_timeout.as_ref(),
            WAITS,
            Duration::from_secs(10),
        ),
        request_timeout: within_at(
            p,
            "server.request_timeout",
            raw.request_timeout.as_ref(),
            REQUEST_TIMEOUTS,
            Duration::from_secs(30),
        ),
        shutdown_timeout: raw.shutdown_timeout.map_or(Duration::from_secs(30), |d| d.0),
        shutdown_delay: within_at(
            p,
            "server.shutdown_delay",
            raw.shutdown_delay.as_ref(),
            Duration::ZERO..=Duration::from_secs(3600),
            Duration::ZERO,
        ),
        watch: raw.watch.unwrap_or(true),
        watch_interval: within_at(
            p,
            "server.watch_interval",
            raw.watch_interval.as_ref(),
            POLLS,
            Duration::from_secs(1),
        ),
        via,
        send_timeout: within_at(p, "server.send_timeout", raw.send_timeout.as_ref(), WAITS, Duration::from_secs(60)),
        trusted_proxies: raw
            .trusted_proxies
            .iter()
            .filter_map(|t| {
                wasmgate_common::cidr::Cidr::parse(t.get_ref())
                    .map_err(|what| {
                        p.at(span(t), "server.trusted_proxies", what, "e.g. trusted_proxies = [\"10.0.0.0/8\"]")
                    })
                    .ok()
            })
            .collect(),
        tunnel_idle_timeout: within_at(
            p,
            "server.tunnel_idle_timeout",
            raw.tunnel_idle_timeout.as_ref(),
            REQUEST_TIMEOUTS,
            Duration::from_secs(3600),
        ),
        body_read_timeout: within_at(
            p,
            "server.body_read_timeout",
            raw.body_read_timeout.as_ref(),
            WAITS,
            Duration::from_secs(30),
        ),
        access_log: raw.access_log.unwrap_or(true),
        underscores_in_headers: raw.underscores_in_headers.unwrap_or(false),
        paths: PathRules { escaped_slashes: raw.escaped_slashes, parameters: raw.path_parameters },
        override_headers: raw.override_headers,
        request_id: raw.request_id,
        tls: tls?,
    })
}

fn build_tls(t: &Spanned<raw::RawServerTls>, base: &Path, p: &mut Problems<'_>) -> Option<ServerTls> {
    let r = t.get_ref();
    let listen = parse_addr(&r.listen, "server.tls.listen", p);
    if r.certificates.is_empty() {
        p.at(
            span(t),
            "server.tls.certificates",
            "a TLS listener needs at least one certificate",
            "certificates = [{ cert = \"certs/api.pem\", key = \"certs/api.key\" }]",
        );
        return None;
    }
    if r.client_crl.is_some() && r.client_ca.is_none() {
        p.at(
            span(t),
            "server.tls.client_crl",
            "client_crl is set but there is no client_ca: no client certificate is asked for",
            "add client_ca = \"path/to/ca.pem\", or remove client_crl",
        );
    }
    if r.forward_client_cert == Some(true) && r.client_ca.is_none() {
        p.at(
            span(t),
            "server.tls.forward_client_cert",
            "forward_client_cert is set but there is no client_ca: no client certificate is asked for",
            "add client_ca = \"path/to/ca.pem\", or remove forward_client_cert",
        );
    }
    if r.client_auth.is_some() && r.client_ca.is_none() {
        p.at(
            span(t),
            "server.tls.client_auth",
            "client_auth is set but there is no client_ca to verify client certificates against",
            "add client_ca = \"path/to/ca.pem\", or remove client_auth",
        );
    }
    let certificates = r
        .certificates
        .iter()
        .map(|c| {
            let c = c.get_ref();
            CertConfig {
                cert: base.join(&c.cert),
                key: base.join(&c.key),
                sni: c.sni.iter().map(|n| n.to_ascii_lowercase()).collect(),
            }
        })
        .collect();
    Some(ServerTls {
        listen: listen?,
        certificates,
        client_ca: r.client_ca.as_ref().map(|c| base.join(c)),
        client_crl: r.client_crl.as_ref().map(|c| base.join(c)),
        client_auth: r.client_auth.unwrap_or_default(),
        min_version: r.min_version.unwrap_or_default(),
        forward_client_cert: r.forward_client_cert.unwrap_or(false),
    })
}

/// Whether a socket bound to `a` takes connections to `b`'s address: the
/// same address, or `a` on all addresses of `b`'s family — `[::]` on both
/// families (dual-stack), `0.0.0.0` on IPv4 only.
fn covers(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.ip() == b.ip() || (a.ip().is_unspecified() && (a.is_ipv6() || a.is_ipv4() == b.is_ipv4()))
}

/// Refuses two listeners on one port: the plain and TLS listeners bind
/// with `SO_REUSEPORT`, so both binds succeed and the kernel spreads the
/// connections between them — half the TLS handshakes met the plain
/// parser. One on all addresses (`0.0.0.0`, `::`) clashes with any on its
/// port; port 0 picks a free port for each.
pub(super) fn check_listeners(
    raw: &raw::RawConfig,
    server: Option<&ServerConfig>,
    admin: Option<&AdminConfig>,
    p: &mut Problems<'_>,
) {
    let Some(server) = server else { return };
    let mut listeners = Vec::new();
    if let (Some(listen), Some(at)) = (server.listen, &raw.server.listen) {
        listeners.push(("server.listen", listen, span(at)));
    }
    if let (Some(tls), Some(t)) = (&server.tls, &raw.server.tls) {
        listeners.push(("server.tls.listen", tls.listen, span(&t.get_ref().listen)));
    }
    if let Some(a) = admin {
        let at = raw.admin.as_ref().and_then(|r| r.get_ref().listen.as_ref()).and_then(span);
        listeners.push(("admin.listen", a.listen, at));
    }
    for (i, (key, addr, at)) in listeners.iter().enumerate() {
        let clash = listeners[..i].iter().find(|(_, other, _)| {
            addr.port() != 0 && addr.port() == other.port() && (covers(addr, other) || covers(other, addr))
        });
        if let Some((other_key, other, _)) = clash {
            p.at(
                at.clone(),
                *key,
                format!("{addr} is on the same port as {other_key} ({other})"),
                format!("give {key} a port of its own"),
            );
        }
    }
}

pub(super) fn build_admin(a: &Spanned<raw::RawAdmin>, p: &mut Problems<'_>) -> Option<AdminConfig> {
    let r = a.get_ref();
    let listen = match &r.listen {
        Some(l) => parse_addr(l, "admin.listen", p)?,
        None => SocketAddr::from(([127, 0, 0, 1], 9901)),
    };
    let token = match (&r.token, &r.token_env) {
        (Some(_), Some(_)) => {
            p.at(span(a), "admin.token", "both `token` and `token_env` are set", "keep one");
            return None;
        }
        (Some(t), None) => Some(admin_token(t, span(a), "admin.token", "", p)?),
        (None, Some(var)) => match std::env::var(var) {
            Ok(t) => Some(admin_token(&t, span(a), "admin.token_env", &format!(" (in `{var}`)"), p)?),
            Err(std::env::VarError::NotUnicode(_)) => {
                p.at(
                    span(a),
                    "admin.token_env",
                    format!("environment variable `{var}` is not valid UTF-8"),
                    "use a token of letters, digits and punctuation (`openssl rand -hex 32`)",
                );
                return None;
            }
            Err(std::env::VarError::NotPresent) => {
                p.at(
                    span(a),
                    "admin.token_env",
                    format!("environment variable `{var}` is not set"),
                    format!("export {var}=<token> before starting the gateway"),
                );
                return None;
            }
        },
        (None, None) => None,
    };
    if !listen.ip().is_loopback() && token.is_none() {
        p.at(
            r.listen.as_ref().map(|l| l.span()),
            "admin.listen",
            format!("the admin listener on {listen} is reachable from other machines but has no token"),
            "set token_env = \"WASMGATE_ADMIN_TOKEN\" (or token), or listen on 127.0.0.1",
        );
        return None;
    }
    Some(AdminConfig { listen, token })
}

/// The admin token as a client can send it: without surrounding
/// whitespace (a secret file's trailing newline; an `Authorization` value
/// cannot end in one, so a token kept with it never matched), and only of
/// visible ASCII and inner spaces or tabs (what a header value carries as
/// sent).
fn admin_token(
    text: &str,
    at: Option<std::ops::Range<usize>>,
    key: &'static str,
    from: &str,
    p: &mut Problems<'_>,
) -> Option<Secret> {
    let token = text.trim_ascii();
    if token.is_empty() {
        p.at(at, key, format!("the token{from} is empty"), "set a long random token, or remove it to go without");
        return None;
    }
    if !token.bytes().all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic()) {
        p.at(
            at,
            key,
            format!("the token{from} has a control character or a byte beyond ASCII, which a client cannot send"),
            "use a token of letters, digits and punctuation (`openssl rand -hex 32`)",
        );
        return None;
    }
    Some(Secret::new(token.to_owned()))
}

pub(super) fn build_dns(d: Option<&Spanned<raw::RawDns>>, p: &mut Problems<'_>) -> DnsConfig {
    let mut dns = DnsConfig::default();
    let Some(d) = d else { return dns };
    let r = d.get_ref();
    dns.nameservers = r.nameservers.iter().filter_map(|n| parse_addr(n, "dns.nameservers", p)).collect();
    if let Some(t) = r.min_ttl {
        dns.min_ttl = t.0;
    }
    if let Some(t) = r.max_ttl {
        dns.max_ttl = t.0;
    }
    dns.timeout = within(p, span(d), "dns.timeout", r.timeout, WAITS, dns.timeout);
    dns.family = r.family;
    if dns.min_ttl > dns.max_ttl || dns.min_ttl.is_zero() {
        p.at(
            span(d),
            "dns.min_ttl",
            "min_ttl must be above zero and at most max_ttl",
            "e.g. min_ttl = \"1s\", max_ttl = \"5m\"",
        );
    }
    dns
}
