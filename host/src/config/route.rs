//! `[[routes]]`: matching, the upstream(s), rewrites, retries, the plugin chain.

use std::collections::HashMap;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use toml::Spanned;

use super::error::{self, Problems};
use super::plugins::PLUGIN_NAMES;
use super::plugins::PluginsConfig;
use super::raw::{self, OnPluginError};
use super::server::ServerConfig;
use super::{Bound, REQUEST_TIMEOUTS, WAITS, base_and_cap, span, valid_name, within};
use crate::routing::{HostMatch, PathPattern, PathRules, Rewrite};

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub host: HostMatch,
    pub path: PathPattern,
    pub methods: Option<Vec<Method>>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Where requests go: one upstream, or a weighted split (canary). Empty
    /// when the route's plugins answer every request themselves.
    pub targets: Vec<Target>,
    pub rewrite: Option<Rewrite>,
    /// The whole request, retries included.
    pub timeout: Duration,
    /// Each try; default: `timeout`.
    pub try_timeout: Option<Duration>,
    pub retries: RetryPolicy,
    pub max_body: u64,
    pub upgrades: Upgrades,
    pub on_plugin_error: OnPluginError,
    pub plugins: Vec<PluginUse>,
    pub line: Option<usize>,
}

/// The protocol upgrades (`Upgrade`, as WebSocket asks) a route passes
/// through; a request offering any other goes on as a plain request,
/// without its `Upgrade` (RFC 9110 §7.8 lets a server ignore it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Upgrades {
    /// Whatever the client offers and the upstream accepts (but `h2c`,
    /// never an upgrade here).
    #[default]
    Any,
    /// Only these protocols' names (`websocket`, lower case; an offer's
    /// version, `/1.2`, is not compared).
    Only(Vec<Box<[u8]>>),
}

impl Upgrades {
    /// Whether a protocol, by its name ([`Upgrades::name`] of an offer's
    /// `TLS/1.2`), may be upgraded to.
    pub fn allow(&self, name: &[u8]) -> bool {
        match self {
            Self::Any => true,
            Self::Only(names) => names.iter().any(|n| n.eq_ignore_ascii_case(name)),
        }
    }

    /// An offered protocol's name, without its version (`TLS/1.2` → `TLS`).
    pub fn name(offered: &[u8]) -> &[u8] {
        offered.split(|&b| b == b'/').next().unwrap_or_default()
    }
}

/// An upstream of a route and its share of the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Index into the config's upstreams.
    pub upstream: usize,
    pub weight: u32,
}

/// When and how a route retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries after the first.
    pub attempts: u32,
    pub on: RetryOn,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Retry POST/PATCH too on conditions where the upstream may have acted.
    pub non_idempotent: bool,
}

impl Default for RetryPolicy {
    /// One more try, on a connect failure only: nothing reached the upstream,
    /// so this is safe for every method.
    fn default() -> Self {
        Self {
            attempts: 1,
            on: RetryOn { connect_failure: true, ..RetryOn::default() },
            backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(250),
            non_idempotent: false,
        }
    }
}

/// The conditions a route retries on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub connect_failure: bool,
    pub reset: bool,
    pub timeout: bool,
    pub statuses: Vec<StatusCode>,
}

impl RetryOn {
    /// Whether a retry may follow a try that reached the upstream (which
    /// consumed the request, so a retry needs a copy of it).
    pub fn after_send(&self) -> bool {
        self.reset || self.timeout || !self.statuses.is_empty()
    }
}

/// One plugin in a route's chain.
#[derive(Debug, Clone)]
pub struct PluginUse {
    pub name: String,
    /// The route's `config` table as JSON, handed to the plugin's `configure`.
    pub config_json: String,
    /// Files read into the config (`config_files`), by key; a change reloads.
    pub files: Vec<(String, std::path::PathBuf)>,
    /// `routes[i].plugins[j]`, for messages.
    pub key: String,
    pub line: Option<usize>,
}

pub(super) fn build_routes(
    raw: &raw::RawConfig,
    base: &std::path::Path,
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
        let mut lookup = |name: &str, at: Option<std::ops::Range<usize>>, k: String| match upstreams.get(name) {
            Some(&u) => Some(u),
            None => {
                p.at(
                    at,
                    k,
                    format!("unknown upstream `{name}`"),
                    format!("define [upstreams.{name}] or use one of: {}", known_upstreams()),
                );
                None
            }
        };
        let targets: Vec<Target> = match (&route.upstream, &route.upstreams) {
            (Some(u), None) => lookup(u.get_ref(), span(u), format!("{key}.upstream"))
                .map(|u| Target { upstream: u, weight: 1 })
                .into_iter()
                .collect(),
            (None, Some(list)) if !list.is_empty() => list
                .iter()
                .enumerate()
                .filter_map(|(j, t)| {
                    lookup(&t.get_ref().name, span(t), format!("{key}.upstreams[{j}]"))
                        .map(|u| Target { upstream: u, weight: t.get_ref().weight })
                })
                .collect(),
            // A route whose plugins answer every request (compose, a mock).
            (None, None) if !route.plugins.is_empty() => Vec::new(),
            (None, None) => {
                p.at(
                    span(r),
                    format!("{key}.upstream"),
                    "the route has no upstream and no plugins to answer its requests",
                    "upstream = \"users\", or upstreams = [{ name = \"v1\", weight = 95 }, { name = \"v2\", weight = 5 }]",
                );
                Vec::new()
            }
            _ => {
                p.at(
                    span(r),
                    format!("{key}.upstream"),
                    "a route takes one of `upstream` and `upstreams`, not both (and `upstreams` not empty)",
                    "upstream = \"users\", or upstreams = [{ name = \"v1\", weight = 95 }, { name = \"v2\", weight = 5 }]",
                );
                Vec::new()
            }
        };
        // The split adds the weights up in a u32.
        for (j, t) in route.upstreams.iter().flatten().enumerate() {
            let weight = Some(t.get_ref().weight);
            within(p, span(t), &format!("{key}.upstreams[{j}].weight"), weight, 0..=10_000u32, 1);
        }
        if let Some(list) = &route.upstreams
            && list.iter().map(|t| u64::from(t.get_ref().weight)).sum::<u64>() == 0
        {
            p.at(
                span(r),
                format!("{key}.upstreams"),
                "the weights add up to zero",
                "give at least one upstream a weight above zero",
            );
        }
        let retries = match &route.retries {
            None => RetryPolicy::default(),
            Some(rr) => build_retries(rr, &key, p),
        };
        // Text no request path meets once normalised: a route that would
        // guard it guarded nothing, its traffic falling to another.
        let rules = server.map_or_else(PathRules::default, |s| s.paths);
        let normal = |p: &mut Problems<'_>, at: Option<std::ops::Range<usize>>, what: &str, text: &str, rules| {
            if let Some((problem, fix)) = crate::routing::abnormal(text, rules) {
                p.at(at, format!("{key}.{what}"), problem, fix);
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
            (Some(path), None) => PathPattern::parse(path.get_ref())
                .inspect(|_| normal(p, span(path), "match.path", path.get_ref(), rules))
                .unwrap_or_else(|what| {
                    p.at(
                        span(path),
                        format!("{key}.match.path"),
                        what,
                        "e.g. \"/users\", \"/users/{id}\" or \"/api/{*rest}\"",
                    );
                    PathPattern::any()
                }),
            (None, Some(prefix)) => PathPattern::prefix(prefix.get_ref())
                .inspect(|_| normal(p, span(prefix), "match.prefix", prefix.get_ref(), rules))
                .unwrap_or_else(|what| {
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
                (Ok(_), Ok(_)) if hname.contains('_') && server.is_some_and(|s| !s.underscores_in_headers) => {
                    super::never_carried(p, match_span.clone(), &format!("{key}.match.headers.{hname}"), hname);
                }
                (Ok(n), _) if n == http::header::HOST => p.at(
                    match_span.clone(),
                    format!("{key}.match.headers.{hname}"),
                    "`Host` is matched by `match.host` (a header condition compared the field's bytes: \
                     other letters, a port, an absolute target or an HTTP/2 `:authority` passed it by)",
                    format!("match = {{ host = \"{}\" }}", hvalue.trim()),
                ),
                (Ok(_), Ok(_)) if hvalue.trim_matches([' ', '\t']) != hvalue => p.at(
                    match_span.clone(),
                    format!("{key}.match.headers.{hname}"),
                    format!("`{hvalue}` starts or ends with white space, which a field's value never does"),
                    format!("\"{hname}\" = \"{}\"", hvalue.trim_matches([' ', '\t'])),
                ),
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
                Ok(r) => {
                    normal(p, span(sp), "strip_prefix", sp.get_ref(), rules);
                    // The route's literal leading segments and the prefix's
                    // must agree where both are written: otherwise nothing
                    // the route matches starts with the prefix, and every
                    // request went upstream unstripped.
                    let literal = path.as_str().split('/').skip(1).take_while(|s| !s.starts_with('{') && *s != "*");
                    let stripped = sp.get_ref().trim_end_matches('/').split('/').skip(1);
                    if let Some((route_seg, strip_seg)) = literal.zip(stripped).find(|(a, b)| a != b) {
                        p.at(
                            span(sp),
                            format!("{key}.strip_prefix"),
                            format!(
                                "`{}` never starts the paths this route matches (`{}`: `{route_seg}` where it has `{strip_seg}`), so nothing would be stripped",
                                sp.get_ref(),
                                path.as_str()
                            ),
                            "strip a prefix of the route's path, e.g. the route's `prefix` itself",
                        );
                    }
                    Some(r)
                }
                Err(what) => {
                    p.at(span(sp), format!("{key}.strip_prefix"), what, "e.g. strip_prefix = \"/api\"");
                    None
                }
            },
            (None, Some(rw)) => match Rewrite::template(rw.get_ref(), &path) {
                Ok(r) => {
                    // What the gateway sends, not what a client may: the
                    // server's rules for clients' paths are not its.
                    normal(p, span(rw), "rewrite", rw.get_ref(), PathRules::KEEP);
                    Some(r)
                }
                Err((what, fix)) => {
                    p.at(span(rw), format!("{key}.rewrite"), what, fix);
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
            if !valid_name(pname) {
                p.at(span(&pu.name), format!("{ukey}.use"), format!("`{pname}` is not a plugin name"), PLUGIN_NAMES);
            }
            let has_source = |pl: &PluginsConfig| {
                pl.dir.is_some() || pl.settings.get(pname).is_some_and(|s| s.file.is_some() || s.oci.is_some())
            };
            if plugins.is_some_and(|pl| !has_source(pl)) {
                p.at(
                    span(&pu.name),
                    format!("{ukey}.use"),
                    format!(
                        "route uses plugin `{pname}`, which comes from nowhere: the config has no plugin \
                         directory, and no `file` or `oci` for it in [plugin.{pname}]"
                    ),
                    "add [plugins] with dir = \"path/to/plugins\" (the directory holding the .wasm files), \
                     or say where this plugin comes from",
                );
            }
            let mut table = pu.config.as_ref().map(|t| t.get_ref().clone()).unwrap_or_default();
            let mut files = Vec::new();
            for (k, file) in &pu.config_files {
                let path = base.join(file);
                match crate::files::read_regular_text(&path, crate::files::MAX_CONFIG_FILE) {
                    Ok(text) => {
                        table.insert(k.clone(), toml::Value::String(text));
                        files.push((k.clone(), path));
                    }
                    Err(e) => p.at(
                        span(u),
                        format!("{ukey}.config_files.{k}"),
                        format!("cannot read {}: {e}", path.display()),
                        "give a path relative to this config file, readable by the gateway",
                    ),
                }
            }
            let config_json = serde_json::to_string(&table).unwrap_or_else(|_| "{}".to_owned());
            uses.push(PluginUse {
                name: pname.clone(),
                config_json,
                files,
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
            targets,
            rewrite,
            timeout: within(
                p,
                span(r),
                &format!("{key}.timeout"),
                route.timeout,
                REQUEST_TIMEOUTS,
                server.map_or(Duration::from_secs(30), |s| s.request_timeout),
            ),
            try_timeout: route.try_timeout.map(|t| {
                within(p, span(r), &format!("{key}.try_timeout"), Some(t), REQUEST_TIMEOUTS, Duration::from_secs(2))
            }),
            retries,
            max_body: route.max_body.map_or(server.map_or(10 << 20, |s| s.max_body), |s| s.0),
            upgrades: route.upgrades.as_ref().map_or(Upgrades::Any, |u| upgrades(u, &key, p)),
            on_plugin_error: route.on_plugin_error,
            plugins: uses,
            line: Some(error::line_of(p.source(), r.span().start)),
        });
    }
    routes
}

/// A route's `upgrades`: protocol names (tokens, RFC 9110 §5.6.2), not
/// `h2c`.
fn upgrades(list: &Spanned<Vec<String>>, key: &str, p: &mut Problems<'_>) -> Upgrades {
    let mut names = Vec::with_capacity(list.get_ref().len());
    for name in list.get_ref() {
        let at = format!("{key}.upgrades");
        if name.eq_ignore_ascii_case("h2c") {
            p.at(
                span(list),
                at,
                "`h2c` is never an upgrade here: an HTTP/2 connection made by upgrade would carry requests no \
                 route or plugin sees",
                "leave it out: clients speak HTTP/2 to the gateway from their first bytes (prior knowledge) \
                 or by TLS's ALPN",
            );
        } else if name.is_empty() || !name.bytes().all(crate::proxy::headers::is_tchar) {
            p.at(
                span(list),
                at,
                format!("`{name}` is not a protocol name (a token: letters, digits, `-`, `.`, ...; no version)"),
                "e.g. upgrades = [\"websocket\"]",
            );
        } else {
            names.push(name.to_ascii_lowercase().into_bytes().into_boxed_slice());
        }
    }
    Upgrades::Only(names)
}

fn build_retries(rr: &Spanned<raw::RawRetries>, key: &str, p: &mut Problems<'_>) -> RetryPolicy {
    let r = rr.get_ref();
    let mut on = RetryOn::default();
    let conditions = r.on.clone().unwrap_or_else(|| vec!["connect-failure".to_owned()]);
    for c in &conditions {
        match c.as_str() {
            "connect-failure" => on.connect_failure = true,
            "reset" => on.reset = true,
            "timeout" => on.timeout = true,
            code => match code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
                Some(s) if s.is_server_error() => on.statuses.push(s),
                _ => p.at(
                    span(rr),
                    format!("{key}.retries.on"),
                    format!("`{c}` is not a retry condition"),
                    "use connect-failure, reset, timeout, or a 5xx status such as \"503\"",
                ),
            },
        }
    }
    if r.attempts > 10 {
        p.at(
            span(rr),
            format!("{key}.retries.attempts"),
            format!("{} retries is too many", r.attempts),
            "use 0..=10; the retry budget bounds them anyway",
        );
    }
    let (backoff, max_backoff) = base_and_cap(
        p,
        span(rr),
        &format!("{key}.retries"),
        Bound { name: "backoff", written: r.backoff, range: WAITS, default: Duration::from_millis(25) },
        Bound { name: "max_backoff", written: r.max_backoff, range: WAITS, default: Duration::from_millis(250) },
        "the backoff doubles each try, up to it",
    );
    RetryPolicy {
        attempts: r.attempts.min(10),
        on,
        backoff,
        max_backoff,
        non_idempotent: r.non_idempotent.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_retries_after_a_send_need_a_copy_of_the_request() {
        assert!(!RetryPolicy::default().on.after_send(), "the default retries connect failures only");
        let sent = [
            RetryOn { reset: true, ..RetryOn::default() },
            RetryOn { timeout: true, ..RetryOn::default() },
            RetryOn { statuses: vec![StatusCode::SERVICE_UNAVAILABLE], ..RetryOn::default() },
        ];
        assert!(sent.iter().all(RetryOn::after_send));
    }
}
