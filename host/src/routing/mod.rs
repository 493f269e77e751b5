//! Routing: which route a request takes, by host, path, method and headers.
//!
//! The most specific route wins: an exact host beats a wildcard beats none;
//! then the path, segment by segment (literal over `{param}` over `{*rest}`,
//! an exact end over a catch-all); then a method list over any method; then
//! more header matches over fewer. Two routes that could both match one
//! request with the same specificity are refused at load.

mod path;

use std::cmp::Ordering;
use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

pub use path::{Captures, PathPattern, PathRules, Rewrite, abnormal, normalize};

use crate::config::{Config, Problems, RouteConfig};

/// A route's host condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    /// `api.example.com` (stored lowercase).
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (stored as the suffix).
    Wildcard(String),
}

impl HostMatch {
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if !valid {
            return Err(format!("`{text}` is not a host name (ports and paths do not belong here)"));
        }
        Ok(if wild { Self::Wildcard(format!(".{name}")) } else { Self::Exact(name.to_owned()) })
    }

    /// `host` is the request's host without port.
    fn matches(&self, host: Option<&str>) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(h) => host.is_some_and(|x| x.eq_ignore_ascii_case(h)),
            // A label before the suffix, not empty (`..example.com`).
            Self::Wildcard(suffix) => host.is_some_and(|x| {
                x.len() > suffix.len()
                    && x.get(x.len() - suffix.len()..).is_some_and(|end| end.eq_ignore_ascii_case(suffix))
                    && x.as_bytes().get(x.len() - suffix.len() - 1) != Some(&b'.')
            }),
        }
    }

    fn rank(&self) -> (u8, usize) {
        match self {
            Self::Any => (0, 0),
            Self::Wildcard(s) => (1, s.len()),
            Self::Exact(_) => (2, 0),
        }
    }
}

/// How specific a route is; compared lexicographically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Specificity {
    host: (u8, usize),
    path: Vec<u8>,
    methods: bool,
    headers: usize,
}

#[derive(Debug)]
struct Entry {
    route: usize,
    host: HostMatch,
    path: PathPattern,
    methods: Option<Vec<Method>>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// The compiled routing table of one config snapshot.
///
/// Entries are sorted most specific first, and the first that matches wins.
/// To avoid scanning them all, they are bucketed by the literal first path
/// segment: a request only scans the bucket of its own first segment, which
/// holds (in the global order) the routes with that literal plus every route
/// whose first segment is a capture or catch-all.
#[derive(Debug)]
pub struct Router {
    entries: Vec<Entry>,
    by_first_segment: HashMap<String, Vec<u32>>,
    /// Routes whose first segment is not a literal, for any other request.
    unbucketed: Vec<u32>,
}

/// The result of routing one request.
#[derive(Debug)]
pub struct Matched {
    /// Index into the config's routes.
    pub route: usize,
    pub captures: Captures,
}

fn specificity(r: &RouteConfig) -> Specificity {
    Specificity { host: r.host.rank(), path: r.path.rank(), methods: r.methods.is_some(), headers: r.headers.len() }
}

/// Whether two routes of equal specificity can match the same request.
fn overlap(a: &RouteConfig, b: &RouteConfig) -> bool {
    let hosts = match (&a.host, &b.host) {
        (HostMatch::Any, HostMatch::Any) => true,
        (HostMatch::Exact(x), HostMatch::Exact(y)) | (HostMatch::Wildcard(x), HostMatch::Wildcard(y)) => x == y,
        _ => false,
    };
    let methods = match (&a.methods, &b.methods) {
        (Some(x), Some(y)) => x.iter().any(|m| y.contains(m)),
        _ => true,
    };
    let headers = a.headers.iter().all(|(n, v)| b.headers.iter().all(|(n2, v2)| n != n2 || v == v2));
    hosts && methods && headers && a.path.overlaps_same_rank(&b.path)
}

impl Router {
    pub fn new(routes: &[RouteConfig]) -> Self {
        let mut order: Vec<(Specificity, usize)> =
            routes.iter().enumerate().map(|(i, r)| (specificity(r), i)).collect();
        // Most specific first; equal ones keep file order (they cannot overlap).
        order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let entries = order
            .into_iter()
            .map(|(_, i)| {
                let r = &routes[i];
                Entry {
                    route: i,
                    host: r.host.clone(),
                    path: r.path.clone(),
                    methods: r.methods.clone(),
                    headers: r.headers.clone(),
                }
            })
            .collect::<Vec<Entry>>();
        let mut by_first_segment: HashMap<String, Vec<u32>> = HashMap::new();
        for e in &entries {
            if let Some(lit) = e.path.first_literal() {
                by_first_segment.entry(lit.to_owned()).or_default();
            }
        }
        let mut unbucketed = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            match e.path.first_literal() {
                Some(lit) => by_first_segment.entry(lit.to_owned()).or_default().push(i),
                None => {
                    unbucketed.push(i);
                    for bucket in by_first_segment.values_mut() {
                        bucket.push(i);
                    }
                }
            }
        }
        Self { entries, by_first_segment, unbucketed }
    }

    /// Refuses routes that tie: equally specific and able to match the same request.
    pub fn check(config: &Config, problems: &mut Problems<'_>) {
        let specs: Vec<Specificity> = config.routes.iter().map(specificity).collect();
        for (i, a) in config.routes.iter().enumerate() {
            for (j, b) in config.routes.iter().enumerate().skip(i + 1) {
                if specs[i].cmp(&specs[j]) == Ordering::Equal && overlap(a, b) {
                    problems.at_line(
                        b.line,
                        format!("routes[{j}]"),
                        format!(
                            "route `{}` ties with route `{}` (routes[{i}]): both match `{}` equally specifically",
                            b.name,
                            a.name,
                            b.path.as_str()
                        ),
                        "make one more specific (a host, methods, or a header match), or merge them",
                    );
                }
            }
        }
    }

    /// Finds the route for a request. `path` must already be normalised.
    pub fn find(&self, host: Option<&str>, method: &Method, path: &str, headers: &HeaderMap) -> Option<Matched> {
        let first = path.strip_prefix('/').unwrap_or(path);
        let first = first.split_once('/').map_or(first, |(f, _)| f);
        let bucket = self.by_first_segment.get(first).unwrap_or(&self.unbucketed);
        for e in bucket.iter().filter_map(|&i| self.entries.get(i as usize)) {
            if !e.host.matches(host) {
                continue;
            }
            if let Some(methods) = &e.methods
                && !methods.contains(method)
            {
                continue;
            }
            // A field sent more than once matches no condition on it: which
            // value an upstream reads is its own choice (two routes, for
            // `x-v: 1` and `x-v: 2`, both matched a request with both).
            if !e.headers.iter().all(|(n, v)| {
                let mut values = headers.get_all(n).iter();
                values.next() == Some(v) && values.next().is_none()
            }) {
                continue;
            }
            if let Some(captures) = e.path.matches(path) {
                return Some(Matched { route: e.route, captures });
            }
        }
        None
    }
}

/// Where a request names the host it is for: `:authority` (HTTP/2, or an
/// absolute-form target) or `Host`. Holds the request's own bytes (a
/// reference count, not a copy), so the host outlives the borrow of the
/// head it came from, which moves on to the upstream.
#[derive(Debug)]
pub enum HostSource {
    Authority(http::uri::Authority),
    Header(http::HeaderValue),
}

impl HostSource {
    pub fn of(uri: &http::Uri, headers: &HeaderMap) -> Option<Self> {
        match uri.authority() {
            Some(a) => Some(Self::Authority(a.clone())),
            None => headers.get(http::header::HOST).cloned().map(Self::Header),
        }
    }

    /// The host as the request named it, port and all (what `Forwarded`
    /// and `X-Forwarded-Host` pass on); an authority's user info, which an
    /// HTTP URI must not carry, left out.
    pub fn as_named(&self) -> Option<&str> {
        match self {
            Self::Authority(a) => Some(a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, host)| host)),
            Self::Header(v) => v.to_str().ok(),
        }
    }
}

/// The bytes of a registered name or IPv4 address: unreserved, `%` (of an
/// escape) and sub-delimiters (RFC 3986 §3.2.2). A table: the check runs
/// on every request's host.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        c += 1;
    }
    table
};

/// What routes match of a named host (`Host`, or the target's authority):
/// the host without its port, an IPv6 literal without brackets. `None`
/// when it is not `uri-host [":" port]` (RFC 3986 §3.2.2, RFC 9112 §3.2):
/// a registered name or IPv4 address (unreserved characters, escapes,
/// sub-delimiters) or an IP literal in brackets, then an optional port of
/// digits. Empty is a host (a `Host` for a target without one). A name's
/// one trailing dot (the DNS root, `admin.example.com.`) is left out: the
/// same host, which a route for `admin.example.com` must match (it fell to
/// the routes for any host). One pass: it runs for every request.
pub fn host_name(host: &str) -> Option<&str> {
    let b = host.as_bytes();
    let (name, port) = match b.strip_prefix(b"[") {
        Some(inner) => {
            // An IPv6 address, with a zone (RFC 6874: `fe80::1%25eth0`) or
            // not: `[admin.example.com]` was routed as the name. (An
            // IPvFuture, `[v1.x]`, is refused too: no client sends one, and
            // `[v1.admin.example.com]` routed as the name.)
            let end = inner.iter().position(|&c| c == b']')?;
            let literal = host.get(1..=end)?;
            let ipv6 = |l: &str| {
                let (address, zone) = l.split_once("%25").unwrap_or((l, "x"));
                address.parse::<std::net::Ipv6Addr>().is_ok()
                    && !zone.is_empty()
                    && zone.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
            };
            if !ipv6(literal) {
                return None;
            }
            (literal, &inner[end + 1..])
        }
        None => {
            let end = b.iter().position(|&c| !REG_NAME[usize::from(c)]).unwrap_or(b.len());
            let name = host.get(..end)?;
            (name.strip_suffix('.').unwrap_or(name), &b[end..])
        }
    };
    match port.split_first() {
        None => Some(name),
        Some((b':', digits)) if digits.iter().all(u8::is_ascii_digit) => Some(name),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests;
