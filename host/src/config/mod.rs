//! Configuration: the TOML file, read in two stages.
//!
//! [`raw`] is the file as written (serde, unknown keys refused); [`load`]
//! checks it and builds [`Config`], the validated form the gateway runs on.
//! Every problem names the file, line and key, what is wrong and the fix.
//! Plugins are loaded later, by [`crate::gateway`], which reports its
//! problems in the same form.

pub mod error;
mod plugins;
pub mod raw;
mod route;
mod server;
pub mod source;
pub use wasmgate_common::units;
mod upstream;

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

pub use error::{ConfigError, Problem, Problems};
pub use plugins::{
    Credentials, Egress, Grants, HttpGrant, PluginLimits, PluginSettings, PluginsConfig, Proxy, RedisTls,
    RegistryConfig, StoreConfig,
};
pub use raw::{
    AllDown, Ambiguous, Balance, ClientAuth, Family, Isolation, OnPluginError, Protocol, RequestIds, TlsVersion,
};
pub use route::{PluginUse, RetryOn, RetryPolicy, RouteConfig, Target, Upgrades};
pub use server::{AdminConfig, CertConfig, DnsConfig, Secret, ServerConfig, ServerTls, Via};
pub use source::Source;
pub use upstream::{
    BreakerConfig, Bulkhead, Discovery, EndpointConfig, HashOn, HealthCheck, Outlier, READ_TIMEOUT, RetryBudgetConfig,
    UpstreamConfig, UpstreamTls,
};

/// The validated config the gateway runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// The file's text, kept so later stages can point at lines.
    pub source: String,
    pub server: ServerConfig,
    pub plugins: PluginsConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    /// `None` when the file has no `[admin]` table.
    pub admin: Option<AdminConfig>,
    pub dns: DnsConfig,
    pub store: StoreConfig,
}

impl Config {
    /// The sha256 of its text, in hex: which config a gateway runs
    /// (`config_info`, `wasmgate publish`).
    pub fn sha256(&self) -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(self.source.as_bytes()))
    }

    /// Every file the config names and the gateway reads at load, besides
    /// the config itself and the plugins' `.wasm`: certificates, keys and
    /// CA bundles (the listener's, the upstreams' and the store's), secret
    /// files, and plugins' `config_files`. A change to one reloads when
    /// watching, so a renewed certificate or a rotated secret needs no
    /// `SIGHUP` (the store's: new connections to Redis with them).
    pub fn files(&self) -> Vec<&Path> {
        let mut files = Vec::new();
        if let Some(tls) = &self.server.tls {
            files.extend(crate::tls::server_files(tls));
        }
        for tls in self.upstreams.iter().filter_map(|u| u.tls.as_ref()) {
            files.extend(tls.ca.as_deref());
            files.extend(tls.client_cert.iter().flat_map(|(cert, key)| [cert.as_path(), key.as_path()]));
        }
        if let StoreConfig::Redis { tls: Some(tls), .. } = &self.store {
            files.extend(tls.files.iter().map(PathBuf::as_path));
        }
        files.extend(self.plugins.settings.values().flat_map(|s| s.grants.secret_files.iter().map(PathBuf::as_path)));
        files.extend(self.plugins.source_files());
        files
            .extend(self.routes.iter().flat_map(|r| &r.plugins).flat_map(|u| u.files.iter().map(|(_, p)| p.as_path())));
        files
    }
}

/// Reads and checks a config file.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    parse(file, &read_text(file)?)
}

/// A config file's text.
pub fn read_text(file: &Path) -> Result<String, ConfigError> {
    crate::files::read_regular_text(file, crate::files::MAX_CONFIG_FILE).map_err(|e| {
        ConfigError::whole(
            file,
            format!("cannot read the config file: {e}"),
            "check the path and that the file is readable",
        )
    })
}

/// Checks config text as if it were read from `file` (relative paths in it
/// are relative to `file`'s directory).
pub fn parse(file: &Path, source: &str) -> Result<Config, ConfigError> {
    parse_in(file, file.parent().unwrap_or(Path::new("")), source)
}

/// Checks config text read from `file` (a path, or a store's URL: what
/// problems name), its relative paths relative to `base`.
fn parse_in(file: &Path, base: &Path, source: &str) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig =
        toml::from_str(source).map_err(|e| ConfigError::single(error::from_toml(file, source, &e)))?;
    let mut problems = Problems::new(file, source);
    let server = server::build_server(&raw.server, base, &mut problems);
    let admin = raw.admin.as_ref().and_then(|a| server::build_admin(a, &mut problems));
    server::check_listeners(&raw, server.as_ref(), admin.as_ref(), &mut problems);
    let dns = server::build_dns(raw.dns.as_ref(), &mut problems);
    let store = plugins::build_store(raw.store.as_ref(), base, &mut problems);
    let plugins = plugins::build_plugins(&raw, base, &mut problems);
    let (upstreams, upstream_index) = upstream::build_upstreams(&raw.upstreams, base, &mut problems);
    let routes = route::build_routes(&raw, base, &upstream_index, plugins.as_ref(), server.as_ref(), &mut problems);
    if server.as_ref().is_some_and(|s| !s.underscores_in_headers) {
        for u in &upstreams {
            if let Some(upstream::HashOn::Header(name)) = &u.hash_on {
                let at = raw.upstreams.get(&u.name).and_then(span);
                never_carried(&mut problems, at, &format!("upstreams.{}.hash_on", u.name), name.as_str());
            }
        }
    }
    let config = match (server, plugins) {
        (Some(server), Some(plugins)) => Some(Config {
            file: file.to_path_buf(),
            source: source.to_owned(),
            server,
            plugins,
            upstreams,
            routes,
            admin,
            dns,
            store,
        }),
        _ => None,
    };
    // Ties are only meaningful once every route parsed: a broken pattern
    // stands in as "match all" and would tie spuriously.
    if let Some(config) = config.as_ref().filter(|_| problems.is_empty()) {
        crate::routing::Router::check(config, &mut problems);
    }
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(problems.into_error()),
    }
}

pub(crate) fn span<T>(s: &Spanned<T>) -> Option<std::ops::Range<usize>> {
    Some(s.span())
}

/// A TLS table's client `cert` and `key` (from `base`): both, or neither;
/// one alone is said (at `table`, named `name`) and taken as neither.
pub(crate) fn cert_and_key<T>(
    table: &Spanned<T>,
    name: &str,
    (cert, key): (Option<&PathBuf>, Option<&PathBuf>),
    base: &Path,
    p: &mut Problems<'_>,
) -> Option<(PathBuf, PathBuf)> {
    match (cert, key) {
        (Some(cert), Some(key)) => Some((base.join(cert), base.join(key))),
        (None, None) => None,
        _ => {
            p.at(span(table), name, "`cert` and `key` go together", "give both (PEM files), or neither");
            None
        }
    }
}

/// What a whole request may be given: up to a day (a longer value is a
/// typo, and one past ~292 billion years overflowed the clock).
pub(crate) const REQUEST_TIMEOUTS: RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(24 * 3600);

/// What any other wait may be given (a connect, a head or body read, a
/// health check, a DNS query, a plugin's outbound call): up to an hour.
pub(crate) const WAITS: RangeInclusive<Duration> = Duration::from_millis(1)..=Duration::from_secs(3600);

/// How often something may be polled (a file, a health check): a shorter
/// period is a busy loop.
pub(crate) const POLLS: RangeInclusive<Duration> = Duration::from_millis(10)..=Duration::from_secs(3600);

/// A number, size or duration a setting takes, as the file writes it.
pub(crate) trait Setting: Copy + PartialOrd {
    /// As a TOML value.
    fn written(self) -> String;

    /// In a sentence.
    fn shown(self) -> String {
        self.written().trim_matches('"').to_owned()
    }

    /// Whether it is the type's largest value: a range up to it has no
    /// upper bound worth naming.
    fn unbounded(self) -> bool {
        false
    }
}

macro_rules! counts {
    ($($t:ty),*) => {$(
        impl Setting for $t {
            fn written(self) -> String {
                self.to_string()
            }

            fn unbounded(self) -> bool {
                self == <$t>::MAX
            }
        }
    )*};
}

counts!(usize, u32, u64);

impl Setting for Duration {
    fn written(self) -> String {
        format!("\"{}\"", humantime::format_duration(self))
    }
}

impl Setting for units::ByteSize {
    fn written(self) -> String {
        match self.0 {
            n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("\"{}GiB\"", n >> 30),
            n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("\"{}MiB\"", n >> 20),
            n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("\"{}KiB\"", n >> 10),
            n => n.to_string(),
        }
    }
}

/// One of a pair of durations for [`base_and_cap`]: its key's last part, as
/// written (if it is), its range and its default.
pub(crate) struct Bound {
    pub name: &'static str,
    pub written: Option<units::HumanDuration>,
    pub range: RangeInclusive<Duration>,
    pub default: Duration,
}

/// A duration and the longer one that caps it (`open_for` and
/// `max_open_for`, `base_ejection` and `max_ejection`, `backoff` and
/// `max_backoff`) under `key`: each within its range; the cap, left out, is
/// its default or the base, whichever is longer (a base set past the cap's
/// default was refused over a key not written); a cap written shorter than
/// its base is a problem `why` explains. A default standing in for a value
/// out of range is not compared: the range problem is the one to read.
pub(crate) fn base_and_cap(
    p: &mut Problems<'_>,
    at: Option<std::ops::Range<usize>>,
    key: &str,
    base: Bound,
    cap: Bound,
    why: &str,
) -> (Duration, Duration) {
    let key_of = |b: &Bound| format!("{key}.{}", b.name);
    let base_value = within(p, at.clone(), &key_of(&base), base.written, base.range.clone(), base.default);
    let cap_value = within(p, at.clone(), &key_of(&cap), cap.written, cap.range.clone(), cap.default.max(base_value));
    let in_range = |b: &Bound| b.written.is_none_or(|d| b.range.contains(&d.0));
    if cap_value < base_value && in_range(&base) && in_range(&cap) {
        p.at(
            at,
            key_of(&cap),
            format!("{} must be at least {} ({why})", cap.name, base.name),
            format!("e.g. {} = {}, {} = {}", base.name, base.default.written(), cap.name, cap.default.written()),
        );
    }
    (base_value, cap_value)
}

/// A problem for a field name that requests never carry, if `name` has a
/// `_` (such fields are dropped as requests are read, unless
/// `server.underscores_in_headers`); the caller knows that option is off.
pub(crate) fn never_carried(p: &mut Problems<'_>, at: Option<std::ops::Range<usize>>, key: &str, name: &str) {
    if name.contains('_') {
        p.at(
            at,
            key,
            format!("requests never carry `{name}`: fields whose names have `_` are dropped as they are read"),
            "name it with `-`, or set server.underscores_in_headers = true",
        );
    }
}

/// [`within`] for a value that knows its place in the file.
pub(crate) fn within_at<T: Setting, V: Copy + Into<T>>(
    p: &mut Problems<'_>,
    key: &str,
    value: Option<&Spanned<V>>,
    range: RangeInclusive<T>,
    default: T,
) -> T {
    within(p, value.and_then(span), key, value.map(|v| *v.get_ref()), range, default)
}

/// `value` if it lies in `range`, or `default` when it is absent. A value
/// outside its range (one that would panic, spin or refuse every request
/// at run time) is a problem naming the range, and `default` stands in so
/// the rest of the file is still checked.
pub(crate) fn within<T: Setting>(
    p: &mut Problems<'_>,
    at: Option<std::ops::Range<usize>>,
    key: &str,
    value: Option<impl Into<T>>,
    range: RangeInclusive<T>,
    default: T,
) -> T {
    match value.map(Into::into) {
        None => default,
        Some(v) if range.contains(&v) => v,
        Some(v) => {
            let name = key.rsplit('.').next().unwrap_or(key);
            let (low, high) = (range.start().written(), range.end().written());
            let what = if range.end().unbounded() {
                format!("{name} must be at least {low}")
            } else {
                format!("{name} must be between {low} and {high}")
            };
            p.at(at, key, format!("{what} (it is {})", v.written()), format!("e.g. {name} = {}", default.written()));
            default
        }
    }
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token is kept as a client can send it: a secret file's trailing
    /// newline (or a space) around it is not part of it.
    #[test]
    fn an_admin_token_is_kept_without_surrounding_whitespace() {
        for token in [r#""s3cret token\n""#, r#"" s3cret token ""#, r#""s3cret token""#] {
            let text = format!("[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\ntoken = {token}\n");
            let config = parse(Path::new("gw.toml"), &text).unwrap();
            let kept = config.admin.and_then(|a| a.token).map(|t| t.expose().to_vec());
            assert_eq!(kept.as_deref(), Some(&b"s3cret token"[..]), "{token}");
        }
        // A tab inside, as a header value may carry one.
        let text = "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\ntoken = \"a\\tb\"\n";
        let kept = parse(Path::new("gw.toml"), text).unwrap().admin.and_then(|a| a.token).map(|t| t.expose().to_vec());
        assert_eq!(kept.as_deref(), Some(&b"a\tb"[..]));
        for token in [r#""\n""#, r#"" \t ""#, r#""s3cret\u0007""#, r#""s3crét""#] {
            let text = format!("[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\ntoken = {token}\n");
            assert!(parse(Path::new("gw.toml"), &text).is_err(), "{token}");
        }
    }

    #[test]
    fn files_names_every_file_the_config_reads_besides_itself() {
        let dir = tempfile::tempdir().unwrap();
        // Secrets and `config_files` are read while parsing; the rest at start.
        std::fs::write(dir.path().join("key.txt"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("jwks.json"), "{}").unwrap();
        // As are the store's TLS files (read once, for the Redis client).
        let redis = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        std::fs::write(dir.path().join("redis-ca.pem"), redis.cert.pem()).unwrap();
        std::fs::write(dir.path().join("client.pem"), redis.cert.pem()).unwrap();
        std::fs::write(dir.path().join("client.key"), redis.signing_key.serialize_pem()).unwrap();
        let text = r#"
[server]
listen = "127.0.0.1:0"
[server.tls]
listen = "127.0.0.1:0"
certificates = [{ cert = "site.pem", key = "site.key" }]
client_ca = "clients.pem"

[plugins]
dir = "."

[store]
backend = "redis"
url = "rediss://127.0.0.1:6380/0"
tls = { ca = "redis-ca.pem", cert = "client.pem", key = "client.key" }

[plugin.jwt]
grants = { secrets = { hmac = { file = "key.txt" }, other = { env = "PATH" } } }

[upstreams.u]
endpoints = ["127.0.0.1:1"]
tls = { ca = "upstream-ca.pem", cert = "mtls.pem", key = "mtls.key" }

[[routes]]
upstream = "u"
plugins = [{ use = "jwt", config = {}, config_files = { jwks = "jwks.json" } }]
"#;
        let config = parse(&dir.path().join("gateway.toml"), text).unwrap();
        let names: Vec<_> =
            config.files().iter().map(|f| f.strip_prefix(dir.path()).unwrap().display().to_string()).collect();
        assert_eq!(
            names,
            [
                "site.pem",
                "site.key",
                "clients.pem",
                "upstream-ca.pem",
                "mtls.pem",
                "mtls.key",
                "redis-ca.pem",
                "client.pem",
                "client.key",
                "key.txt",
                "jwks.json"
            ]
        );
    }

    /// A cap left out is at least the base written: a base set past the
    /// cap's default is not refused over a key that was never written.
    #[test]
    fn a_cap_left_out_is_at_least_its_base() {
        let text = r#"
[server]
listen = "127.0.0.1:0"
[upstreams.u]
endpoints = ["127.0.0.1:9001"]
outlier = { base_ejection = "10m" }
breaker = { open_for = "2m" }
[[routes]]
upstream = "u"
retries = { attempts = 2, backoff = "500ms" }
"#;
        let config = parse(Path::new("gateway.toml"), text).unwrap();
        let u = &config.upstreams[0];
        let outlier = u.outlier.as_ref().unwrap();
        assert_eq!(outlier.max_ejection, outlier.base_ejection);
        let breaker = u.breaker.as_ref().unwrap();
        assert_eq!(breaker.max_open_for, breaker.open_for);
        let retries = &config.routes[0].retries;
        assert_eq!(retries.max_backoff, retries.backoff);
    }
}
