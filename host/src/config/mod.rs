//! Configuration: the TOML file, read in two stages.
//!
//! [`raw`] is the file as written (serde, unknown keys refused); [`load`]
//! checks it and builds [`Config`], the validated form the gateway runs on.
//! Every problem names the file, line and key, what is wrong and the fix.
//! Plugins are loaded later, by [`crate::gateway`], which reports its
//! problems in the same form.

pub mod error;
pub mod raw;
pub mod units;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use toml::Spanned;

pub use error::{ConfigError, Problem, Problems};
pub use raw::{Balance, Isolation, OnPluginError};

use crate::routing::{HostMatch, PathPattern, Rewrite};

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
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub workers: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body: u64,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub watch: bool,
    pub watch_interval: Duration,
    pub via: HeaderValue,
}

/// Where plugins come from and the limits they run under.
#[derive(Debug, Clone)]
pub struct PluginsConfig {
    /// `None` when the file has no `[plugins]` table (then no route may use one).
    pub dir: Option<PathBuf>,
    pub cache_dir: PathBuf,
    pub max_instances: u32,
    pub max_idle_per_worker: usize,
    /// Largest `max_memory` of any plugin: the pooling allocator's slot size.
    pub max_memory_ceiling: u64,
    pub defaults: PluginLimits,
    pub settings: BTreeMap<String, PluginSettings>,
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
    pub sha256: Option<[u8; 32]>,
    pub limits: PluginLimits,
    pub line: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub name: String,
    pub endpoints: Vec<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Option<Duration>,
    pub idle_timeout: Duration,
    pub max_idle_per_endpoint: usize,
    pub balance: Balance,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub host: HostMatch,
    pub path: PathPattern,
    pub methods: Option<Vec<Method>>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub upstream: usize,
    pub rewrite: Option<Rewrite>,
    pub timeout: Duration,
    pub max_body: u64,
    pub on_plugin_error: OnPluginError,
    pub plugins: Vec<PluginUse>,
    pub line: Option<usize>,
}

/// One plugin in a route's chain.
#[derive(Debug, Clone)]
pub struct PluginUse {
    pub name: String,
    /// The route's `config` table as JSON, handed to the plugin's `configure`.
    pub config_json: String,
    /// `routes[i].plugins[j]`, for messages.
    pub key: String,
    pub line: Option<usize>,
}

/// Reads and checks a config file.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(file).map_err(|e| {
        ConfigError::single(Problem {
            file: file.to_path_buf(),
            line: None,
            key: String::new(),
            what: format!("cannot read the config file: {e}"),
            fix: "check the path given with -c and that the file is readable".into(),
        })
    })?;
    parse(file, &source)
}

/// Checks config text as if it were read from `file` (relative paths in it
/// are relative to `file`'s directory).
pub fn parse(file: &Path, source: &str) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig =
        toml::from_str(source).map_err(|e| ConfigError::single(error::from_toml(file, source, &e)))?;
    let mut problems = Problems::new(file, source);
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let server = build_server(&raw.server, &mut problems);
    let plugins = build_plugins(&raw, &base, &mut problems);
    let (upstreams, upstream_index) = build_upstreams(&raw.upstreams, &mut problems);
    let routes = build_routes(&raw, &upstream_index, plugins.as_ref(), server.as_ref(), &mut problems);
    let config = match (server, plugins) {
        (Some(server), Some(plugins)) => {
            Some(Config { file: file.to_path_buf(), source: source.to_owned(), server, plugins, upstreams, routes })
        }
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

fn span<T>(s: &Spanned<T>) -> Option<std::ops::Range<usize>> {
    Some(s.span())
}

fn build_server(raw: &raw::RawServer, p: &mut Problems<'_>) -> Option<ServerConfig> {
    let listen = match raw.listen.get_ref().parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            p.at(
                span(&raw.listen),
                "server.listen",
                format!("`{}` is not an address with a port", raw.listen.get_ref()),
                "write an IP address and port, e.g. \"127.0.0.1:8080\" (port 0 picks a free one)",
            );
            None
        }
    };
    let workers = match &raw.workers {
        Some(w) if *w.get_ref() == 0 || *w.get_ref() > 1024 => {
            p.at(
                span(w),
                "server.workers",
                format!("{} workers is out of range", w.get_ref()),
                "use 1 to 1024, or leave it out to use one worker per core",
            );
            1
        }
        Some(w) => *w.get_ref(),
        None => std::thread::available_parallelism().map(usize::from).unwrap_or(1),
    };
    let via = raw.via.clone().unwrap_or_else(|| "wasmgate".to_owned());
    let via = match HeaderValue::from_str(&format!("1.1 {via}")) {
        Ok(v) => v,
        Err(_) => {
            p.at(
                None,
                "server.via",
                format!("`{via}` is not a valid header value"),
                "use a plain token such as \"wasmgate\"",
            );
            HeaderValue::from_static("1.1 wasmgate")
        }
    };
    Some(ServerConfig {
        listen: listen?,
        workers,
        max_header_bytes: raw.max_header_bytes.map_or(64 * 1024, |s| s.as_usize()).max(8192),
        max_headers: raw.max_headers.unwrap_or(100),
        max_body: raw.max_body.map_or(10 << 20, |s| s.0),
        header_read_timeout: raw.header_read_timeout.map_or(Duration::from_secs(10), |d| d.0),
        request_timeout: raw.request_timeout.map_or(Duration::from_secs(30), |d| d.0),
        shutdown_timeout: raw.shutdown_timeout.map_or(Duration::from_secs(30), |d| d.0),
        watch: raw.watch.unwrap_or(true),
        watch_interval: raw.watch_interval.map_or(Duration::from_secs(1), |d| d.0),
        via,
    })
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

fn build_plugins(raw: &raw::RawConfig, base: &Path, p: &mut Problems<'_>) -> Option<PluginsConfig> {
    let rp = raw.plugins.as_ref();
    let defaults = PluginLimits {
        deadline: rp.and_then(|r| r.deadline).map_or(Duration::from_millis(100), |d| d.0),
        max_memory: rp.and_then(|r| r.max_memory).map_or(64 << 20, |s| s.0),
        recycle_after: rp.and_then(|r| r.recycle_after).unwrap_or(10_000),
    };
    let mut ok = check_limits("plugins", &defaults, None, p);
    let mut settings = BTreeMap::new();
    for (name, s) in &raw.plugin {
        let key = format!("plugin.{name}");
        let r = s.get_ref();
        let limits = PluginLimits {
            deadline: r.deadline.map_or(defaults.deadline, |d| d.0),
            max_memory: r.max_memory.map_or(defaults.max_memory, |m| m.0),
            recycle_after: r.recycle_after.unwrap_or(defaults.recycle_after),
        };
        ok &= check_limits(&key, &limits, span(s), p);
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
        let line = Some(error::line_of(p.source(), s.span().start));
        settings.insert(
            name.clone(),
            PluginSettings {
                isolation: r.isolation.unwrap_or_default(),
                file: r.file.as_ref().map(|f| base.join(f)),
                sha256,
                limits,
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
    let config = PluginsConfig {
        dir: rp.map(|r| base.join(r.dir.get_ref())),
        cache_dir: rp.and_then(|r| r.cache_dir.as_ref()).map_or_else(|| default_cache_dir(base), |d| base.join(d)),
        max_instances: rp.and_then(|r| r.max_instances).unwrap_or(1000).max(1),
        max_idle_per_worker: rp.and_then(|r| r.max_idle_per_worker).unwrap_or(64),
        max_memory_ceiling,
        defaults,
        settings,
    };
    ok.then_some(config)
}

fn check_limits(key: &str, l: &PluginLimits, at: Option<std::ops::Range<usize>>, p: &mut Problems<'_>) -> bool {
    let mut ok = true;
    if l.deadline.is_zero() || l.deadline > Duration::from_secs(60) {
        p.at(at.clone(), format!("{key}.deadline"), "deadline must be between 1ms and 60s", "e.g. deadline = \"50ms\"");
        ok = false;
    }
    if l.max_memory < (1 << 20) || l.max_memory > (4 << 30) {
        p.at(
            at.clone(),
            format!("{key}.max_memory"),
            "max_memory must be between 1MiB and 4GiB",
            "e.g. max_memory = \"64MiB\"",
        );
        ok = false;
    }
    if l.recycle_after == 0 {
        p.at(at, format!("{key}.recycle_after"), "recycle_after must be at least 1", "e.g. recycle_after = 10000");
        ok = false;
    }
    ok
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let text = text.strip_prefix("sha256:").unwrap_or(text);
    let bytes = hex::decode(text).ok()?;
    bytes.try_into().ok()
}

fn build_upstreams(
    raw: &BTreeMap<String, Spanned<raw::RawUpstream>>,
    p: &mut Problems<'_>,
) -> (Vec<UpstreamConfig>, HashMap<String, usize>) {
    let mut list = Vec::new();
    let mut index = HashMap::new();
    for (name, u) in raw {
        let key = format!("upstreams.{name}");
        if !valid_name(name) {
            p.at(span(u), &key, format!("`{name}` is not a valid name"), "use letters, digits, `-` and `_`");
        }
        let r = u.get_ref();
        if r.endpoints.is_empty() {
            p.at(
                span(u),
                format!("{key}.endpoints"),
                "an upstream needs at least one endpoint",
                "e.g. endpoints = [\"127.0.0.1:9001\"]",
            );
        }
        let mut endpoints = Vec::new();
        for (i, e) in r.endpoints.iter().enumerate() {
            match check_endpoint(e.get_ref()) {
                Ok(ep) => endpoints.push(ep),
                Err(what) => p.at(
                    span(e),
                    format!("{key}.endpoints[{i}]"),
                    what,
                    "write host:port, e.g. \"127.0.0.1:9001\" or \"users.internal:80\"",
                ),
            }
        }
        index.insert(name.clone(), list.len());
        list.push(UpstreamConfig {
            name: name.clone(),
            endpoints,
            connect_timeout: r.connect_timeout.map_or(Duration::from_secs(2), |d| d.0),
            request_timeout: r.request_timeout.map(|d| d.0),
            idle_timeout: r.idle_timeout.map_or(Duration::from_secs(90), |d| d.0),
            max_idle_per_endpoint: r.max_idle_per_endpoint.unwrap_or(256),
            balance: r.balance.unwrap_or_default(),
        });
    }
    (list, index)
}

fn check_endpoint(text: &str) -> Result<String, String> {
    let authority: http::uri::Authority = text.parse().map_err(|_| format!("`{text}` is not host:port"))?;
    if authority.port_u16().is_none() {
        return Err(format!("`{text}` has no port"));
    }
    if text.contains('@') || text.contains('/') {
        return Err(format!("`{text}` must be only host:port"));
    }
    Ok(authority.as_str().to_owned())
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn build_routes(
    raw: &raw::RawConfig,
    upstreams: &HashMap<String, usize>,
    plugins: Option<&PluginsConfig>,
    server: Option<&ServerConfig>,
    p: &mut Problems<'_>,
) -> Vec<RouteConfig> {
    let mut routes = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    let known_upstreams = || {
        let mut v: Vec<&str> = upstreams.keys().map(String::as_str).collect();
        v.sort_unstable();
        if v.is_empty() { "none are defined".to_owned() } else { v.join(", ") }
    };
    for (i, r) in raw.routes.iter().enumerate() {
        let key = format!("routes[{i}]");
        let route = r.get_ref();
        let name = match &route.name {
            Some(n) => {
                if !valid_name(n.get_ref()) {
                    p.at(
                        span(n),
                        format!("{key}.name"),
                        format!("`{}` is not a valid route name", n.get_ref()),
                        "use letters, digits, `-`, `_` and `.`",
                    );
                }
                n.get_ref().clone()
            }
            None => format!("route-{i}"),
        };
        if let Some(first) = names.insert(name.clone(), i) {
            p.at(
                route.name.as_ref().map(|n| n.span()),
                format!("{key}.name"),
                format!("route name `{name}` is already used by routes[{first}]"),
                "give every route its own name",
            );
        }
        let upstream = match upstreams.get(route.upstream.get_ref()) {
            Some(&u) => u,
            None => {
                p.at(
                    span(&route.upstream),
                    format!("{key}.upstream"),
                    format!("unknown upstream `{}`", route.upstream.get_ref()),
                    format!("define [upstreams.{}] or use one of: {}", route.upstream.get_ref(), known_upstreams()),
                );
                0
            }
        };
        let default_match = raw::RawMatch::default();
        let m = route.matcher.as_ref().map_or(&default_match, |m| m.get_ref());
        let match_span = route.matcher.as_ref().map(|m| m.span()).or(Some(r.span()));
        let host = match &m.host {
            None => HostMatch::Any,
            Some(h) => HostMatch::parse(h.get_ref()).unwrap_or_else(|what| {
                p.at(
                    span(h),
                    format!("{key}.match.host"),
                    what,
                    "write a host name such as \"api.example.com\" or \"*.example.com\"",
                );
                HostMatch::Any
            }),
        };
        let path = match (&m.path, &m.prefix) {
            (Some(_), Some(prefix)) => {
                p.at(
                    span(prefix),
                    format!("{key}.match"),
                    "`path` and `prefix` are both set",
                    "keep one: `prefix = \"/api\"` is the same as `path = \"/api/{*rest}\"`",
                );
                PathPattern::any()
            }
            (Some(path), None) => PathPattern::parse(path.get_ref()).unwrap_or_else(|what| {
                p.at(
                    span(path),
                    format!("{key}.match.path"),
                    what,
                    "e.g. \"/users\", \"/users/{id}\" or \"/api/{*rest}\"",
                );
                PathPattern::any()
            }),
            (None, Some(prefix)) => PathPattern::prefix(prefix.get_ref()).unwrap_or_else(|what| {
                p.at(span(prefix), format!("{key}.match.prefix"), what, "e.g. prefix = \"/api\"");
                PathPattern::any()
            }),
            (None, None) => PathPattern::any(),
        };
        let methods = m.methods.as_ref().map(|ms| {
            let mut out = Vec::new();
            for (j, mth) in ms.iter().enumerate() {
                let upper = mth.get_ref().to_ascii_uppercase();
                match Method::from_bytes(upper.as_bytes()) {
                    Ok(method) if !mth.get_ref().is_empty() => out.push(method),
                    _ => p.at(
                        span(mth),
                        format!("{key}.match.methods[{j}]"),
                        format!("`{}` is not an HTTP method", mth.get_ref()),
                        "e.g. methods = [\"GET\", \"POST\"]",
                    ),
                }
            }
            if out.is_empty() {
                p.at(
                    match_span.clone(),
                    format!("{key}.match.methods"),
                    "the method list is empty",
                    "list at least one method, or remove `methods` to match all",
                );
            }
            out
        });
        let mut headers = Vec::new();
        for (hname, hvalue) in &m.headers {
            match (HeaderName::from_bytes(hname.as_bytes()), HeaderValue::from_str(hvalue)) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                _ => p.at(
                    match_span.clone(),
                    format!("{key}.match.headers.{hname}"),
                    "not a valid header name and value",
                    "e.g. headers = { \"x-api-version\" = \"2\" }",
                ),
            }
        }
        let rewrite = match (&route.strip_prefix, &route.rewrite) {
            (Some(_), Some(rw)) => {
                p.at(
                    span(rw),
                    format!("{key}.rewrite"),
                    "`strip_prefix` and `rewrite` are both set",
                    "keep one: a rewrite template can express any prefix strip",
                );
                None
            }
            (Some(sp), None) => match Rewrite::strip_prefix(sp.get_ref()) {
                Ok(r) => Some(r),
                Err(what) => {
                    p.at(span(sp), format!("{key}.strip_prefix"), what, "e.g. strip_prefix = \"/api\"");
                    None
                }
            },
            (None, Some(rw)) => match Rewrite::template(rw.get_ref(), &path) {
                Ok(r) => Some(r),
                Err(what) => {
                    p.at(
                        span(rw),
                        format!("{key}.rewrite"),
                        what,
                        "use only {name} captures that the path pattern defines, e.g. rewrite = \"/v2/users/{id}\"",
                    );
                    None
                }
            },
            (None, None) => None,
        };
        let mut uses = Vec::new();
        for (j, u) in route.plugins.iter().enumerate() {
            let ukey = format!("{key}.plugins[{j}]");
            let pu = u.get_ref();
            let pname = pu.name.get_ref();
            let has_source =
                |pl: &PluginsConfig| pl.dir.is_some() || pl.settings.get(pname).is_some_and(|s| s.file.is_some());
            if plugins.is_some_and(|pl| !has_source(pl)) {
                p.at(
                    span(&pu.name),
                    format!("{ukey}.use"),
                    format!("route uses plugin `{pname}` but the config has no [plugins] table"),
                    "add [plugins] with dir = \"path/to/plugins\" (the directory holding the .wasm files)",
                );
            }
            let config_json = match &pu.config {
                None => "{}".to_owned(),
                Some(t) => serde_json::to_string(t.get_ref()).unwrap_or_else(|_| "{}".to_owned()),
            };
            uses.push(PluginUse {
                name: pname.clone(),
                config_json,
                key: ukey,
                line: Some(error::line_of(p.source(), u.span().start)),
            });
        }
        routes.push(RouteConfig {
            name,
            host,
            path,
            methods,
            headers,
            upstream,
            rewrite,
            timeout: route.timeout.map_or(server.map_or(Duration::from_secs(30), |s| s.request_timeout), |d| d.0),
            max_body: route.max_body.map_or(server.map_or(10 << 20, |s| s.max_body), |s| s.0),
            on_plugin_error: route.on_plugin_error,
            plugins: uses,
            line: Some(error::line_of(p.source(), r.span().start)),
        });
    }
    routes
}
