//! `[plugins]` (where plugins come from, default limits) and `[plugin.NAME]`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{self, Problems};
use super::raw::{self, Isolation};
use super::server::Secret;
use super::units::{ByteSize, HumanDuration};
use super::{Setting, WAITS, span, within, within_at};

/// The fix for a plugin name that is not one: a name is a file's stem in
/// the plugin directory and the prefix of the plugin's store keys.
pub(crate) const PLUGIN_NAMES: &str =
    "a plugin's name is its .wasm file's name without the extension: letters, digits, `-`, `_` and `.`";

/// Where plugins come from and the limits they run under.
#[derive(Debug, Clone)]
pub struct PluginsConfig {
    /// `None` without `[plugins] dir`: then a plugin comes from its own
    /// `file` or `oci`.
    pub dir: Option<PathBuf>,
    pub cache_dir: PathBuf,
    pub max_instances: u32,
    pub max_idle_per_worker: usize,
    /// Largest `max_memory` of any plugin: the pooling allocator's slot size.
    pub max_memory_ceiling: u64,
    pub defaults: PluginLimits,
    pub settings: BTreeMap<String, PluginSettings>,
    /// `host[:port]` → how to reach that OCI registry.
    pub registries: BTreeMap<String, RegistryConfig>,
    /// The registries' CA and password files.
    pub registry_files: Vec<PathBuf>,
}

impl PluginsConfig {
    /// The trusted keys' files and the registries' CA and password files,
    /// watched for a reload.
    pub fn source_files(&self) -> impl Iterator<Item = &Path> {
        let keys = self.settings.values().flat_map(|s| s.signed_by.iter().map(|k| k.path.as_path()));
        keys.chain(self.registry_files.iter().map(PathBuf::as_path))
    }
}

/// `[plugins.registries."HOST"]`: how plugins are pulled from a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// HTTPS (the default); plain HTTP only when the config says so.
    pub tls: bool,
    /// A private CA, in place of the public roots.
    pub ca: Option<PathBuf>,
    pub credentials: Option<Credentials>,
    /// How every request to it (its token service and where it redirects
    /// too) goes out.
    pub proxy: Egress,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self { tls: true, ca: None, credentials: None, proxy: Egress::Environment }
    }
}

/// How a registry is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Egress {
    /// Through the environment's proxy (`HTTPS_PROXY`, …), if it names one
    /// for the host: the default.
    #[default]
    Environment,
    /// Directly, whatever the environment says (`proxy = "direct"`).
    Direct,
    /// Through this proxy.
    Proxy(Proxy),
}

impl Egress {
    /// `"direct"`, or a proxy's `http://host[:port]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "direct" { Ok(Self::Direct) } else { Proxy::parse(text).map(Self::Proxy) }
    }
}

/// An HTTP proxy: `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
    /// What it is sent in `Proxy-Authorization` (`Basic …`): only for a
    /// proxy from the environment whose URL has a user and password (a
    /// config names none: its text is no place for a password).
    pub(crate) authorization: Option<Secret>,
}

impl Proxy {
    /// Parses `http://host[:port]` (port 80 by default).
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{}` is not http://host:port", without_userinfo(text)))?;
        let (host, port) = origin_authority(text, rest)?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(Self { host, port: port.unwrap_or(80), authorization: None })
    }
}

impl std::fmt::Display for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

/// A registry account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    pub deadline: Duration,
    pub max_memory: u64,
    pub recycle_after: u64,
}

/// Per-plugin settings (`[plugin.NAME]`), defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSettings {
    pub isolation: Isolation,
    pub file: Option<PathBuf>,
    /// Pulled from this OCI reference (pinned: by its digest or `sha256`).
    pub oci: Option<crate::oci::Reference>,
    /// With `oci`: the keys one of which must have signed its manifest
    /// (its own `signed_by`, else `[plugins] signed_by`).
    pub signed_by: Vec<crate::oci::TrustedKey>,
    pub sha256: Option<[u8; 32]>,
    pub limits: PluginLimits,
    pub grants: Grants,
    pub line: Option<usize>,
}

/// `[store]`: the backend of the plugins' key-value store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// In this process (the default): exact, but not shared with other
    /// gateways; at most `max_entries` keys and `max_bytes` of keys and
    /// values.
    Memory { max_entries: usize, max_bytes: u64 },
    /// Shared by every gateway using the same Redis.
    Redis { url: String, timeout: Duration, tls: Option<RedisTls> },
}

/// TLS to Redis (`rediss://`) beyond the URL: the files, read and checked
/// once at load.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// The CA bundle (PEM) to trust in place of the Mozilla roots.
    pub ca: Option<Vec<u8>>,
    /// A client certificate chain and its key (PEM), for a Redis that asks
    /// for one (its default, `tls-auth-clients yes`).
    pub client: Option<(Vec<u8>, super::Secret)>,
    /// Where they were read from.
    pub files: Vec<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self::Memory { max_entries: 1_000_000, max_bytes: STORE_MAX_BYTES }
    }
}

/// The default of `store.max_bytes`.
const STORE_MAX_BYTES: u64 = 256 << 20;

pub(super) fn build_store(
    s: Option<&toml::Spanned<raw::RawStore>>,
    base: &std::path::Path,
    p: &mut Problems<'_>,
) -> StoreConfig {
    let Some(s) = s else { return StoreConfig::default() };
    let r = s.get_ref();
    // A key of the other backend would be ignored: `url` without `backend
    // = "redis"` would leave a fleet's limits in each process.
    let (backend, foreign) = match r.backend {
        raw::StoreBackendKind::Memory => {
            ("memory", vec![("url", r.url.is_some()), ("timeout", r.timeout.is_some()), ("tls", r.tls.is_some())])
        }
        raw::StoreBackendKind::Redis => {
            ("redis", vec![("max_entries", r.max_entries.is_some()), ("max_bytes", r.max_bytes.is_some())])
        }
    };
    for (key, _) in foreign.into_iter().filter(|(_, set)| *set) {
        p.at(
            span(s),
            format!("store.{key}"),
            format!("{key} does not apply to the {backend} backend"),
            if backend == "memory" { "set backend = \"redis\" to use Redis, or remove it" } else { "remove it" },
        );
    }
    match r.backend {
        raw::StoreBackendKind::Memory => StoreConfig::Memory {
            max_entries: within(p, span(s), "store.max_entries", r.max_entries, 1..=1_000_000_000, 1_000_000),
            max_bytes: within(
                p,
                span(s),
                "store.max_bytes",
                r.max_bytes,
                // At least room for one value of the largest size.
                ByteSize(2 << 20)..=ByteSize(64 << 30),
                ByteSize(STORE_MAX_BYTES),
            )
            .0,
        },
        raw::StoreBackendKind::Redis => {
            match r.url.as_ref().map(|u| (u, crate::plugin::caps::redis::parse_url(u.get_ref()))) {
                Some((url, Err(e))) => {
                    p.at(
                        Some(url.span()),
                        "store.url",
                        e,
                        "url = \"redis://127.0.0.1:6379/0\" (or, for TLS, \"rediss://HOST:PORT/0\")",
                    );
                    StoreConfig::default()
                }
                Some((url, Ok(info))) => {
                    let over_tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
                    let tls = match &r.tls {
                        Some(t) if !over_tls => {
                            p.at(
                                span(t),
                                "store.tls",
                                "[store.tls] applies to TLS, and the URL is redis://",
                                "write the URL as rediss://, or remove [store.tls]",
                            );
                            None
                        }
                        Some(t) => redis_tls(t, base, p),
                        None => None,
                    };
                    StoreConfig::Redis {
                        url: url.get_ref().clone(),
                        timeout: within(
                            p,
                            span(s),
                            "store.timeout",
                            r.timeout.map(|d| d.0),
                            WAITS,
                            Duration::from_millis(50),
                        ),
                        tls,
                    }
                }
                None => {
                    p.at(
                        span(s),
                        "store.url",
                        "the redis backend needs a redis:// (or, for TLS, rediss://) URL",
                        "url = \"redis://127.0.0.1:6379\"",
                    );
                    StoreConfig::default()
                }
            }
        }
    }
}

impl std::fmt::Debug for RedisTls {
    /// The files it was read from, not their bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls").field("files", &self.files).finish_non_exhaustive()
    }
}

/// `[store.tls]`'s files, read and checked (relative paths from the
/// config's directory).
fn redis_tls(t: &toml::Spanned<raw::RawRedisTls>, base: &std::path::Path, p: &mut Problems<'_>) -> Option<RedisTls> {
    let raw = t.get_ref();
    let client = super::cert_and_key(t, "store.tls", (raw.cert.as_ref(), raw.key.as_ref()), base, p);
    let ca = raw.ca.as_ref().map(|c| base.join(c));
    match crate::tls::redis_tls(ca.as_deref(), client.as_ref().map(|(c, k)| (c.as_path(), k.as_path()))) {
        Ok(tls) => Some(tls),
        Err(e) => {
            p.at(span(t), "store.tls", e.to_string(), "give PEM files readable by the gateway");
            None
        }
    }
}

/// What a plugin may reach beyond its request (`[plugin.NAME] grants`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub store: bool,
    pub crypto: bool,
    /// Under `per-request` isolation: the `shared` bytes survive from one
    /// request's instance to the next.
    pub shared: bool,
    pub http: Vec<HttpGrant>,
    pub http_timeout: Duration,
    pub http_max_response: u64,
    /// Resolved at load: name → value.
    pub secrets: BTreeMap<String, Secret>,
    /// The secrets granted with `use = "verify"`: only keys are made of
    /// them, their bytes never enter the plugin.
    pub sealed_secrets: BTreeSet<String>,
    /// The files `secrets` were read from (see [`Config::files`](super::Config::files)).
    pub secret_files: Vec<PathBuf>,
}

/// Something a plugin may send HTTP requests to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HttpGrant {
    Upstream(String),
    /// `scheme://host:port`, normalised (default ports filled in).
    Origin {
        https: bool,
        host: String,
        port: u16,
    },
}

impl HttpGrant {
    pub fn origin_string(https: bool, host: &str, port: u16) -> String {
        format!("{}://{host}:{port}", if https { "https" } else { "http" })
    }

    /// Parses an origin; anything else is an upstream name.
    fn parse(text: &str) -> Result<Self, String> {
        let (https, rest) = if let Some(r) = text.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("http://") {
            (false, r)
        } else if super::valid_name(text) {
            return Ok(Self::Upstream(text.to_owned()));
        } else {
            return Err(format!("`{text}` is neither an upstream name nor an origin"));
        };
        let (host, port) = origin_authority(text, rest)?;
        Ok(Self::Origin { https, host, port: port.unwrap_or(if https { 443 } else { 80 }) })
    }
}

/// The host (lowercase) and port of an origin, `text`, from what follows
/// its scheme, `rest`: `host[:port]`, a trailing `/` allowed, no path and no
/// credentials (an origin with either would never be the one asked for).
fn origin_authority(text: &str, rest: &str) -> Result<(String, Option<u16>), String> {
    let rest = rest.trim_end_matches('/');
    let shown = without_userinfo(text);
    let authority: http::uri::Authority = rest.parse().map_err(|_| format!("`{shown}` is not scheme://host[:port]"))?;
    if rest.contains(['/', '@']) {
        return Err(format!("`{shown}`: an origin is scheme://host[:port], without a path or credentials"));
    }
    Ok((authority.host().to_ascii_lowercase(), authority.port_u16()))
}

/// `text` with what a URL's authority has before an `@` (credentials) left
/// out, for messages.
fn without_userinfo(text: &str) -> std::borrow::Cow<'_, str> {
    let start = text.find("://").map_or(0, |i| i + 3);
    let end = text[start..].find(['/', '?', '#']).map_or(text.len(), |i| start + i);
    match text[start..end].rfind('@') {
        Some(at) => format!("{}…{}", &text[..start], &text[start + at..]).into(),
        None => text.into(),
    }
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self { deadline: Duration::from_millis(100), max_memory: 64 << 20, recycle_after: 10_000 }
    }
}

fn default_cache_dir(base: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("wasmgate");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache").join("wasmgate");
    }
    base.join(".wasmgate").join("cache")
}

pub(super) fn build_plugins(raw: &raw::RawConfig, base: &Path, p: &mut Problems<'_>) -> Option<PluginsConfig> {
    let rp = raw.plugins.as_ref();
    let defaults = limits(
        "plugins",
        None,
        (rp.and_then(|r| r.deadline), rp.and_then(|r| r.max_memory), rp.and_then(|r| r.recycle_after)),
        &PluginLimits::default(),
        p,
    );
    let mut ok = true;
    let signed_by = match rp.and_then(|r| r.signed_by.as_ref()) {
        Some(keys) => trusted_keys(keys.get_ref(), "plugins.signed_by", span(keys), base, p, &mut ok),
        None => Vec::new(),
    };
    let mut settings = BTreeMap::new();
    for (name, s) in &raw.plugin {
        let key = format!("plugin.{name}");
        if !super::valid_name(name) {
            p.at(span(s), &key, format!("`{name}` is not a plugin name"), PLUGIN_NAMES);
            ok = false;
        }
        let r = s.get_ref();
        let limits = limits(&key, span(s), (r.deadline, r.max_memory, r.recycle_after), &defaults, p);
        let sha256 = match &r.sha256 {
            None => None,
            Some(hex_digest) => match parse_sha256(hex_digest) {
                Some(d) => Some(d),
                None => {
                    p.at(
                        span(s),
                        format!("{key}.sha256"),
                        format!("`{hex_digest}` is not a sha256 digest"),
                        "write 64 hex digits, as printed by `sha256sum plugin.wasm`",
                    );
                    ok = false;
                    None
                }
            },
        };
        let oci = match &r.oci {
            None => None,
            Some(text) => match crate::oci::Reference::parse(text) {
                Ok(reference) => Some(reference),
                Err(what) => {
                    p.at(
                        span(s),
                        format!("{key}.oci"),
                        what,
                        "write registry/repository:tag or registry/repository@sha256:DIGEST",
                    );
                    ok = false;
                    None
                }
            },
        };
        let signed_by = match (&r.signed_by, &oci) {
            (Some(keys), Some(_)) => trusted_keys(keys, &format!("{key}.signed_by"), span(s), base, p, &mut ok),
            (None, Some(_)) => signed_by.clone(),
            (Some(_), None) => {
                p.at(
                    span(s),
                    format!("{key}.signed_by"),
                    "signed_by is for a plugin pulled from a registry (signatures are kept there)",
                    "set `oci`, or pin the file with sha256",
                );
                ok = false;
                Vec::new()
            }
            (None, None) => Vec::new(),
        };
        if let Some(reference) = &oci {
            if r.file.is_some() {
                p.at(
                    span(s),
                    format!("{key}.oci"),
                    "both `oci` and `file` are set",
                    "keep one: where the plugin comes from",
                );
                ok = false;
            }
            // Nothing runs that was not pinned or signed by a trusted key:
            // a tag may name other bytes tomorrow.
            if reference.digest.is_none() && r.sha256.is_none() && signed_by.is_empty() {
                p.at(
                    span(s),
                    format!("{key}.oci"),
                    format!("`{reference}` is a tag, and nothing pins what it names"),
                    "pin the manifest (`...@sha256:DIGEST`) or the component (sha256 = \"...\"), as `wasmgate push` prints them, \
                     or trust its publisher's key (signed_by)",
                );
                ok = false;
            }
        }
        let line = Some(error::line_of(p.source(), s.span().start));
        let grants = match &r.grants {
            None => Grants::default(),
            Some(g) => match build_grants(g, &key, base, p) {
                Some(g) => g,
                None => {
                    ok = false;
                    Grants::default()
                }
            },
        };
        // An answer to an outbound call is read whole, then copied into the
        // plugin's memory beside its own data (as a body it reads is).
        if !grants.http.is_empty() && grants.http_max_response > limits.max_memory / 2 {
            p.at(
                r.grants.as_ref().and_then(span),
                format!("{key}.grants.http_max_response"),
                format!(
                    "answers of up to {} would not fit in the plugin's memory ({}) beside it",
                    ByteSize(grants.http_max_response).shown(),
                    ByteSize(limits.max_memory).shown()
                ),
                format!(
                    "http_max_response = {} (at most), or raise max_memory",
                    ByteSize(limits.max_memory / 2).written()
                ),
            );
            ok = false;
        }
        settings.insert(
            name.clone(),
            PluginSettings {
                isolation: r.isolation.unwrap_or_default(),
                file: r.file.as_ref().map(|f| base.join(f)),
                oci,
                signed_by,
                sha256,
                limits,
                grants,
                line,
            },
        );
    }
    let max_memory_ceiling = settings
        .values()
        .map(|s| s.limits.max_memory)
        .chain([defaults.max_memory])
        .max()
        .unwrap_or(defaults.max_memory);
    let mut registry_files = Vec::new();
    let registries =
        rp.map(|r| build_registries(&r.registries, base, &mut registry_files, p, &mut ok)).unwrap_or_default();
    let config = PluginsConfig {
        dir: rp.and_then(|r| r.dir.as_ref()).map(|d| base.join(d.get_ref())),
        cache_dir: rp.and_then(|r| r.cache_dir.as_ref()).map_or_else(|| default_cache_dir(base), |d| base.join(d)),
        // Each instance reserves its memory's address space up front.
        max_instances: within_at(
            p,
            "plugins.max_instances",
            rp.and_then(|r| r.max_instances.as_ref()),
            1..=10_000,
            1000,
        ),
        max_idle_per_worker: rp.and_then(|r| r.max_idle_per_worker).unwrap_or(64),
        max_memory_ceiling,
        defaults,
        settings,
        registries,
        registry_files,
    };
    ok.then_some(config)
}

/// A plugin's limits as written (deadline, max_memory, recycle_after),
/// each in its range, `defaults` where one is absent.
fn limits(
    key: &str,
    at: Option<std::ops::Range<usize>>,
    (deadline, max_memory, recycle_after): (Option<HumanDuration>, Option<ByteSize>, Option<u64>),
    defaults: &PluginLimits,
    p: &mut Problems<'_>,
) -> PluginLimits {
    let deadlines = Duration::from_millis(1)..=Duration::from_secs(60);
    let memories = ByteSize(1 << 20)..=ByteSize(4 << 30);
    PluginLimits {
        deadline: within(p, at.clone(), &format!("{key}.deadline"), deadline, deadlines, defaults.deadline),
        max_memory: within(
            p,
            at.clone(),
            &format!("{key}.max_memory"),
            max_memory,
            memories,
            ByteSize(defaults.max_memory),
        )
        .0,
        // u64::MAX: never.
        recycle_after: within(
            p,
            at,
            &format!("{key}.recycle_after"),
            recycle_after,
            1..=u64::MAX,
            defaults.recycle_after,
        ),
    }
}

/// The public keys at `paths` (relative to `base`).
fn trusted_keys(
    paths: &[PathBuf],
    key: &str,
    at: Option<std::ops::Range<usize>>,
    base: &Path,
    p: &mut Problems<'_>,
    ok: &mut bool,
) -> Vec<crate::oci::TrustedKey> {
    let mut keys = Vec::new();
    for path in paths {
        match crate::oci::TrustedKey::load(&base.join(path)) {
            Ok(k) => keys.push(k),
            Err(what) => {
                p.at(at.clone(), key, what, "name a PEM public key file (cosign.pub, or `openssl pkey -pubout`)");
                *ok = false;
            }
        }
    }
    keys
}

/// `[plugins.registries]`, each key a registry as references name it.
fn build_registries(
    raw: &BTreeMap<String, toml::Spanned<raw::RawRegistry>>,
    base: &Path,
    files: &mut Vec<PathBuf>,
    p: &mut Problems<'_>,
    ok: &mut bool,
) -> BTreeMap<String, RegistryConfig> {
    let mut registries = BTreeMap::new();
    for (host, r) in raw {
        let key = format!("plugins.registries.\"{host}\"");
        let mut problem = |what: String, fix: &str| {
            p.at(span(r), &key, what, fix);
            *ok = false;
        };
        // The registry part of a reference, which is what finds this entry.
        match crate::oci::Reference::parse(&format!("{host}/x:y")) {
            Ok(reference) if reference.registry == host.to_ascii_lowercase() => {}
            _ => {
                problem(format!("`{host}` is not a registry host"), "write host or host:port, as in the plugins' `oci`")
            }
        }
        if let Some(other) = raw.keys().find(|k| *k < host && k.eq_ignore_ascii_case(host)) {
            problem(format!("`{host}` and `{other}` are one registry (host names are not case-sensitive)"), "keep one");
        }
        let r = r.get_ref();
        let credentials = match (&r.username, &r.password) {
            (None, None) => None,
            (Some(username), Some(source)) => {
                if source.use_.is_some() {
                    problem("`use` does not apply to a registry password".to_owned(), "remove `use`");
                }
                if username.contains(':') {
                    problem(
                        "`username` may not contain `:` (Basic authentication splits at it)".to_owned(),
                        "write the account's name",
                    );
                }
                match read_secret(&format!("{key}.password"), "password", source, base, files) {
                    Ok(password) => {
                        Some(Credentials { username: username.clone(), password: Secret::new_bytes(password) })
                    }
                    Err((what, fix)) => {
                        problem(what, &fix);
                        None
                    }
                }
            }
            _ => {
                problem("`username` and `password` go together".to_owned(), "set both, or neither for anonymous pulls");
                None
            }
        };
        let tls = r.tls.unwrap_or(true);
        let ca = r.ca.as_ref().map(|c| base.join(c));
        if !tls && ca.is_some() {
            problem(
                "`ca` is set on a registry without TLS".to_owned(),
                "remove `ca` (it is for TLS), or remove `tls = false`",
            );
        }
        if let Some(ca) = ca.as_ref().filter(|_| tls) {
            files.push(ca.clone());
            // Read now: a CA that cannot be used is said at load, not at the pull.
            let upstream = super::UpstreamTls { ca: Some(ca.clone()), ..Default::default() };
            if let Err(e) = crate::tls::client_config(&upstream, raw::Protocol::Http1) {
                problem(e.to_string(), "name a PEM file of the CA that signed the registry's certificate");
            }
        }
        let proxy = match r.proxy.as_deref().map(Egress::parse) {
            None => Egress::Environment,
            Some(Ok(egress)) => egress,
            Some(Err(what)) => {
                problem(
                    what,
                    "write proxy = \"http://host:port\" (an HTTP proxy; HTTPS goes through it by CONNECT), or \
                     \"direct\" to go around the environment's",
                );
                Egress::Environment
            }
        };
        registries.insert(host.to_ascii_lowercase(), RegistryConfig { tls, ca, credentials, proxy });
    }
    registries
}

/// A secret's bytes from the environment or a file (whose path is pushed
/// on `files`, to be watched); `what` names it in messages, `key` is its key
/// in the fix.
fn read_secret(
    what: &str,
    key: &str,
    source: &raw::RawSecretSource,
    base: &Path,
    files: &mut Vec<PathBuf>,
) -> Result<Vec<u8>, (String, String)> {
    match (&source.env, &source.file) {
        (Some(var), None) => {
            std::env::var(var).ok().filter(|v| !v.is_empty()).map(String::into_bytes).ok_or_else(|| {
                (
                    format!("{what}: environment variable `{var}` is not set (or empty)"),
                    format!("export {var}=... before starting the gateway"),
                )
            })
        }
        (None, Some(file)) => {
            let path = base.join(file);
            files.push(path.clone());
            crate::files::read_regular(&path, crate::files::MAX_CONFIG_FILE)
                .map(|mut v| {
                    // A trailing newline from `echo secret > file` is not part of the secret.
                    while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        v.pop();
                    }
                    v
                })
                .map_err(|e| {
                    (
                        format!("{what}: cannot read {}: {e}", path.display()),
                        "check the path and its permissions".to_owned(),
                    )
                })
        }
        _ => Err((
            format!("{what} needs exactly one of `env` and `file`"),
            format!("{key} = {{ env = \"VAR\" }} or {key} = {{ file = \"path\" }}"),
        )),
    }
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    crate::oci::parse_hex(text.strip_prefix("sha256:").unwrap_or(text))
}

fn build_grants(g: &toml::Spanned<raw::RawGrants>, key: &str, base: &Path, p: &mut Problems<'_>) -> Option<Grants> {
    let r = g.get_ref();
    let mut ok = true;
    let mut http = Vec::new();
    for target in &r.http {
        match HttpGrant::parse(target) {
            Ok(t) => http.push(t),
            Err(what) => {
                p.at(
                    span(g),
                    format!("{key}.grants.http"),
                    what,
                    "list upstream names (\"users\") or origins (\"https://idp.example.com\")",
                );
                ok = false;
            }
        }
    }
    let mut secrets = BTreeMap::new();
    let mut secret_files = Vec::new();
    let mut sealed_secrets = BTreeSet::new();
    for (name, source) in &r.secrets {
        if source.use_ == Some(raw::SecretUse::Verify) {
            sealed_secrets.insert(name.clone());
        }
        let value = read_secret(&format!("secret `{name}`"), name, source, base, &mut secret_files);
        match value {
            Ok(v) => {
                secrets.insert(name.clone(), Secret::new_bytes(v));
            }
            Err((what, fix)) => {
                p.at(span(g), format!("{key}.grants.secrets.{name}"), what, fix);
                ok = false;
            }
        }
    }
    let grants = Grants {
        store: r.store,
        crypto: r.crypto,
        shared: r.shared,
        http,
        http_timeout: within(
            p,
            span(g),
            &format!("{key}.grants.http_timeout"),
            r.http_timeout,
            WAITS,
            Duration::from_secs(5),
        ),
        http_max_response: r.http_max_response.map_or(10 << 20, |s| s.0),
        secrets,
        sealed_secrets,
        secret_files,
    };
    ok.then_some(grants)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_are_http_host_and_port() {
        let proxy = |text: &str| Proxy::parse(text).map(|p| (p.host.clone(), p.port, p.to_string()));
        assert_eq!(
            proxy("http://proxy.internal:3128"),
            Ok(("proxy.internal".into(), 3128, "http://proxy.internal:3128".into()))
        );
        assert_eq!(
            proxy("http://proxy.internal/"),
            Ok(("proxy.internal".into(), 80, "http://proxy.internal:80".into()))
        );
        assert_eq!(proxy("http://[fd00::1]:3128"), Ok(("fd00::1".into(), 3128, "http://[fd00::1]:3128".into())));
        for refused in
            ["https://proxy:3128", "proxy:3128", "http://user:pass@proxy:3128", "http://proxy:3128/path", "http://"]
        {
            let e = Proxy::parse(refused).unwrap_err();
            assert!(!e.contains("pass"), "{refused}: {e}");
        }
        assert_eq!(Egress::parse("direct"), Ok(Egress::Direct));
        assert!(matches!(Egress::parse("http://p:1"), Ok(Egress::Proxy(_))));
        let e = Egress::parse("https://u:s3cret@p:1/x").unwrap_err();
        assert!(e.contains("https://…@p:1/x") && !e.contains("s3cret"), "{e}");
    }
}
