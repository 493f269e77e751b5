//! The config file exactly as written: serde types that refuse unknown keys.
//! Nothing here is checked beyond its type; [`super::parse`] turns it into
//! the validated [`super::Config`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::units::{ByteSize, HumanDuration};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    #[serde(default)]
    pub plugins: Option<RawPlugins>,
    #[serde(default)]
    pub plugin: BTreeMap<String, Spanned<RawPluginSettings>>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Spanned<RawUpstream>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    pub admin: Option<Spanned<RawAdmin>>,
    pub dns: Option<Spanned<RawDns>>,
    pub store: Option<Spanned<RawStore>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<Spanned<String>>,
    pub workers: Option<Spanned<usize>>,
    pub max_header_bytes: Option<Spanned<ByteSize>>,
    pub max_headers: Option<Spanned<usize>>,
    pub max_body: Option<ByteSize>,
    pub header_read_timeout: Option<Spanned<HumanDuration>>,
    pub request_timeout: Option<Spanned<HumanDuration>>,
    pub shutdown_timeout: Option<HumanDuration>,
    pub shutdown_delay: Option<Spanned<HumanDuration>>,
    pub watch: Option<bool>,
    pub watch_interval: Option<Spanned<HumanDuration>>,
    pub via: Option<String>,
    pub body_read_timeout: Option<Spanned<HumanDuration>>,
    pub send_timeout: Option<Spanned<HumanDuration>>,
    pub tunnel_idle_timeout: Option<Spanned<HumanDuration>>,
    /// Proxies in front that name the client (`X-Forwarded-For`) and whose
    /// forwarding fields are kept: `["10.0.0.0/8", "192.0.2.7"]`.
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Whose `X-Request-Id` a request keeps.
    #[serde(default)]
    pub request_id: RequestIds,
    pub access_log: Option<bool>,
    pub underscores_in_headers: Option<bool>,
    #[serde(default)]
    pub escaped_slashes: Ambiguous,
    #[serde(default)]
    pub path_parameters: Ambiguous,
    /// A request with a field that overrides its method or URL
    /// (`X-HTTP-Method-Override`, `X-Original-URL`, …).
    #[serde(default)]
    pub override_headers: Ambiguous,
    pub tls: Option<Spanned<RawServerTls>>,
}

/// What to do with a request path that routes and some upstreams read as
/// two paths: one that hides a separator (`escaped_slashes`: `%2F`, `%5C`
/// or `\`; `/public%2F..%2Fadmin` is `/admin` to an upstream that decodes
/// it), or one with parameters (`path_parameters`: `;`; `/admin;x/users`
/// is `/admin/users` to Tomcat and Jetty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Ambiguous {
    /// Answer 400.
    #[default]
    Reject,
    /// Route and forward the path as sent (for APIs whose identifiers hold
    /// encoded slashes, or whose upstreams use path parameters).
    Keep,
}

/// What an upstream does while none of its endpoints passes its health
/// checks (`health.all_down`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AllDown {
    /// Balance over them all as if they passed (Envoy's panic mode): a
    /// check gone wrong — a renamed health path, checks timing out under
    /// load — does not take the whole upstream out.
    #[default]
    TryAll,
    /// Answer 503 until one passes again.
    Refuse,
}

/// Whose `X-Request-Id` is kept (`server.request_id`); a request without
/// one, or with one that is not visible ASCII of at most 128 bytes, gets a
/// new one either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RequestIds {
    /// Any client's (a mobile app's id, followed through the logs).
    #[default]
    Keep,
    /// Only a proxy's in `server.trusted_proxies`: a client's is replaced,
    /// as Envoy does at the edge (a client chose the id its requests are
    /// logged, traced and answered under, another's too).
    Generate,
}

/// `[server.tls]`: a second listener that terminates TLS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerTls {
    pub listen: Spanned<String>,
    pub certificates: Vec<Spanned<RawCertificate>>,
    pub client_ca: Option<PathBuf>,
    /// Revoked client certificates (PEM `X509 CRL` blocks).
    pub client_crl: Option<PathBuf>,
    pub client_auth: Option<ClientAuth>,
    pub min_version: Option<TlsVersion>,
    pub forward_client_cert: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Server names this certificate answers for; default: its DNS SANs.
    #[serde(default)]
    pub sni: Vec<String>,
}

/// Whether clients must present a certificate signed by `client_ca`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    #[default]
    Required,
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// `[admin]`: health, readiness and metrics.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<Spanned<String>>,
    /// A bearer token required on every admin request.
    pub token: Option<String>,
    /// Read the token from this environment variable instead.
    pub token_env: Option<String>,
}

/// `[dns]`: how names in `upstreams.*.dns` / `.srv` are resolved.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// Name servers (`ip:port`); default: the system's (/etc/resolv.conf).
    #[serde(default)]
    pub nameservers: Vec<Spanned<String>>,
    pub min_ttl: Option<HumanDuration>,
    pub max_ttl: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    #[serde(default)]
    pub family: Family,
}

/// Which addresses a `dns` or `srv` name gives (nginx's `resolver …
/// ipv6=off`, Envoy's `dns_lookup_family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// A and AAAA.
    #[default]
    Any,
    /// A only: a host without an IPv6 route (a container on Docker's
    /// default bridge) could reach none of the AAAA addresses.
    Ipv4,
    /// AAAA only.
    Ipv6,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugins {
    pub dir: Option<Spanned<PathBuf>>,
    pub cache_dir: Option<PathBuf>,
    pub deadline: Option<HumanDuration>,
    pub max_memory: Option<ByteSize>,
    pub recycle_after: Option<u64>,
    pub max_idle_per_worker: Option<usize>,
    pub max_instances: Option<Spanned<u32>>,
    /// `"host[:port]"` → how to reach an OCI registry plugins are pulled from.
    #[serde(default)]
    pub registries: BTreeMap<String, Spanned<RawRegistry>>,
    /// Public keys one of which must have signed every plugin pulled from a registry.
    pub signed_by: Option<Spanned<Vec<PathBuf>>>,
}

/// `[plugins.registries."HOST"]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistry {
    pub tls: Option<bool>,
    pub ca: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<RawSecretSource>,
    pub proxy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPluginSettings {
    pub isolation: Option<Isolation>,
    pub file: Option<PathBuf>,
    /// `registry/repository:tag` or `...@sha256:DIGEST`.
    pub oci: Option<String>,
    /// Public keys one of which must have signed it (in place of `[plugins] signed_by`).
    pub signed_by: Option<Vec<PathBuf>>,
    pub sha256: Option<String>,
    pub deadline: Option<HumanDuration>,
    pub max_memory: Option<ByteSize>,
    pub recycle_after: Option<u64>,
    pub grants: Option<Spanned<RawGrants>>,
}

/// `[plugin.NAME] grants`: the capabilities a plugin may use.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrants {
    #[serde(default)]
    pub store: bool,
    #[serde(default)]
    pub crypto: bool,
    /// Under `per-request` isolation, its instances share its `shared`
    /// bytes (pooled ones always do).
    #[serde(default)]
    pub shared: bool,
    /// Upstream names and origins (`https://idp.example.com`) it may call.
    #[serde(default)]
    pub http: Vec<String>,
    pub http_timeout: Option<HumanDuration>,
    pub http_max_response: Option<ByteSize>,
    /// Secret name → where its value comes from.
    #[serde(default)]
    pub secrets: BTreeMap<String, RawSecretSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecretSource {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
    /// What the plugin may do with it (default: read its bytes).
    #[serde(rename = "use")]
    pub use_: Option<SecretUse>,
}

/// What a plugin may do with a granted secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SecretUse {
    /// Read its bytes (`secrets::get`), and make a key of it.
    #[default]
    Read,
    /// Only make an HMAC key of it (`Key::from_secret`): its bytes never
    /// enter the plugin.
    Verify,
}

/// `[store]`: where the plugins' key-value store lives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub backend: StoreBackendKind,
    /// `redis://host:port/db` (or `rediss://` for TLS), for the Redis backend.
    pub url: Option<Spanned<String>>,
    pub timeout: Option<HumanDuration>,
    pub max_entries: Option<usize>,
    pub max_bytes: Option<ByteSize>,
    /// With `rediss://`: whom to trust and the client certificate.
    pub tls: Option<Spanned<RawRedisTls>>,
}

/// `[store.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisTls {
    /// CA bundle (PEM) to verify Redis; default: the Mozilla roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for a Redis with `tls-auth-clients`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreBackendKind {
    Memory,
    Redis,
}

/// How a plugin's instances are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Warm, configured instances per worker, reused across requests.
    #[default]
    Pooled,
    /// A fresh instance for every request.
    PerRequest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    #[serde(default)]
    pub endpoints: Vec<Spanned<RawEndpoint>>,
    /// `host:port`, re-resolved (A/AAAA) on the record's TTL.
    pub dns: Option<Spanned<String>>,
    /// An SRV name (`_http._tcp.users.internal`), re-resolved on its TTL.
    pub srv: Option<Spanned<String>>,
    pub connect_timeout: Option<HumanDuration>,
    pub request_timeout: Option<HumanDuration>,
    pub idle_timeout: Option<HumanDuration>,
    pub read_timeout: Option<HumanDuration>,
    pub max_idle_per_endpoint: Option<usize>,
    pub balance: Option<Balance>,
    pub hash_on: Option<Spanned<String>>,
    pub protocol: Option<Protocol>,
    pub max_streams_per_connection: Option<usize>,
    pub tls: Option<Spanned<RawUpstreamTls>>,
    pub max_concurrent: Option<usize>,
    pub max_queue: Option<usize>,
    pub queue_timeout: Option<HumanDuration>,
    pub health: Option<Spanned<RawHealth>>,
    pub outlier: Option<Spanned<RawOutlier>>,
    pub breaker: Option<Spanned<RawBreaker>>,
    pub endpoint_breaker: Option<Spanned<RawBreaker>>,
    pub retry_budget: Option<Spanned<RawRetryBudget>>,
}

/// An endpoint: `"host:port"` or `{ address = "host:port", weight = 3 }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawEndpoint {
    Address(String),
    Weighted(RawWeightedEndpoint),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeightedEndpoint {
    pub address: String,
    pub weight: u32,
}

/// How an upstream picks an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    #[default]
    RoundRobin,
    /// Smooth weighted round-robin (nginx's algorithm).
    WeightedRoundRobin,
    /// Fewest requests in flight, by the power of two random choices.
    LeastRequest,
    /// Lowest peak-EWMA latency × load (Finagle/Linkerd).
    PeakEwma,
    /// Maglev consistent hashing on `hash_on`.
    ConsistentHash,
}

/// The protocol spoken to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    #[default]
    Http1,
    /// HTTP/2: prior knowledge over plain TCP (h2c), or ALPN h2 with `tls`.
    Http2,
}

/// `[upstreams.NAME.tls]`: connect with TLS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// CA bundle (PEM) to verify the upstream; default: the Mozilla roots.
    pub ca: Option<PathBuf>,
    /// Name to verify and send as SNI; default: the endpoint's host.
    pub server_name: Option<String>,
    /// Client certificate and key (PEM) for mTLS to the upstream.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub path: String,
    /// The checks' `Host` (HTTP/2 `:authority`), for an upstream that
    /// serves by name.
    pub host: Option<String>,
    pub interval: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    /// Statuses that count as healthy, e.g. `[200, 204]`; default 200..=399.
    pub expect_status: Option<Vec<u16>>,
    #[serde(default)]
    pub all_down: AllDown,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_connect_failures: Option<u32>,
    pub base_ejection: Option<HumanDuration>,
    pub max_ejection: Option<HumanDuration>,
    pub max_ejected_percent: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub consecutive_failures: Option<u32>,
    pub failure_ratio: Option<f64>,
    pub min_requests: Option<u32>,
    pub window: Option<HumanDuration>,
    pub open_for: Option<HumanDuration>,
    pub max_open_for: Option<HumanDuration>,
    pub half_open_probes: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetryBudget {
    pub percent: Option<f64>,
    pub min_per_second: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<Spanned<String>>,
    #[serde(rename = "match")]
    pub matcher: Option<Spanned<RawMatch>>,
    pub upstream: Option<Spanned<String>>,
    /// Weighted split between upstreams (canary, blue/green).
    pub upstreams: Option<Vec<Spanned<RawWeightedUpstream>>>,
    pub try_timeout: Option<HumanDuration>,
    pub retries: Option<Spanned<RawRetries>>,
    pub strip_prefix: Option<Spanned<String>>,
    pub rewrite: Option<Spanned<String>>,
    pub timeout: Option<HumanDuration>,
    pub max_body: Option<ByteSize>,
    /// The protocols a request may upgrade to (`websocket`); absent: any.
    pub upgrades: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub on_plugin_error: OnPluginError,
    #[serde(default)]
    pub plugins: Vec<Spanned<RawPluginUse>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeightedUpstream {
    pub name: String,
    pub weight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    /// Retries after the first try (0 disables retries).
    pub attempts: u32,
    /// What to retry: `connect-failure`, `reset`, `timeout`, or a 5xx status.
    pub on: Option<Vec<String>>,
    pub backoff: Option<HumanDuration>,
    pub max_backoff: Option<HumanDuration>,
    /// Retry non-idempotent methods too (POST, PATCH).
    pub non_idempotent: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub host: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub methods: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// What a route does when one of its plugins fails (trap, deadline, memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnPluginError {
    /// Answer 500 with the request id.
    #[default]
    FailClosed,
    /// Skip the failed plugin and go on.
    FailOpen,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPluginUse {
    #[serde(rename = "use")]
    pub name: Spanned<String>,
    #[serde(default)]
    pub config: Option<Spanned<toml::Table>>,
    /// Config keys whose value is read from a file (relative to the config
    /// file): plugins cannot read files themselves.
    #[serde(default)]
    pub config_files: BTreeMap<String, PathBuf>,
}
