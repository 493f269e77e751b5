//! `[upstreams.NAME]`: endpoints or DNS discovery, balancing, the protocol
//! and TLS to the upstream, bulkhead, active health checks, outlier
//! detection, circuit breakers and the retry budget.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::error::Problems;
use super::raw::{self, Balance, Protocol};
use super::{Bound, POLLS, REQUEST_TIMEOUTS, WAITS, base_and_cap, span, valid_name, within};

/// How long an upstream may go silent in the middle of a response body by
/// default (nginx's `proxy_read_timeout`).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A validated upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    /// Static endpoints (empty when `discovery` is set).
    pub endpoints: Vec<EndpointConfig>,
    pub discovery: Option<Discovery>,
    pub connect_timeout: Duration,
    pub request_timeout: Option<Duration>,
    pub idle_timeout: Duration,
    /// How long the upstream may go silent in the middle of a response body.
    pub read_timeout: Duration,
    pub max_idle_per_endpoint: usize,
    pub balance: Balance,
    pub hash_on: Option<HashOn>,
    pub protocol: Protocol,
    /// HTTP/2: the requests in flight on one of a worker's connections to an
    /// endpoint before it opens another.
    pub max_streams_per_connection: usize,
    pub tls: Option<UpstreamTls>,
    pub bulkhead: Option<Bulkhead>,
    pub health: Option<HealthCheck>,
    pub outlier: Option<Outlier>,
    /// Upstream-wide breaker.
    pub breaker: Option<BreakerConfig>,
    /// One breaker per endpoint.
    pub endpoint_breaker: Option<BreakerConfig>,
    pub retry_budget: RetryBudgetConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// `host:port`.
    pub address: String,
    pub weight: u32,
}

/// Where endpoints come from when they are not listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// A/AAAA records of `host`, each on `port`.
    Dns { host: String, port: u16 },
    /// SRV records (target, port, weight).
    Srv { name: String },
}

/// What consistent hashing keys on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    ClientIp,
    Header(HeaderName),
    Cookie(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A concurrency limit with a bounded queue (503 on overflow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bulkhead {
    pub max_concurrent: usize,
    pub max_queue: usize,
    pub queue_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    /// `Host` for the checks; `None`: the endpoint's address, or over TLS
    /// the server name with the endpoint's port.
    pub host: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// Healthy statuses; empty means 200..=399.
    pub expect_status: Vec<u16>,
    pub all_down: super::AllDown,
}

impl HealthCheck {
    pub fn healthy_status(&self, status: u16) -> bool {
        if self.expect_status.is_empty() { (200..400).contains(&status) } else { self.expect_status.contains(&status) }
    }
}

/// Passive outlier detection: eject an endpoint after consecutive failures,
/// for a time that grows with each ejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    pub consecutive_5xx: u32,
    pub consecutive_connect_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejected_percent: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Open after this many failures in a row, whatever the volume.
    pub consecutive_failures: Option<u32>,
    /// Open when this share of the window's requests failed...
    pub failure_ratio: f64,
    /// ...and the window saw at least this many.
    pub min_requests: u32,
    pub window: Duration,
    /// Open for this long the first time, doubling up to `max_open_for`.
    pub open_for: Duration,
    pub max_open_for: Duration,
    /// Requests let through while half-open.
    pub half_open_probes: u32,
}

/// Retries may be at most `percent`% of requests, plus `min_per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    pub percent: f64,
    pub min_per_second: u32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self { percent: 20.0, min_per_second: 3 }
    }
}

pub(super) fn build_upstreams(
    raw: &BTreeMap<String, Spanned<raw::RawUpstream>>,
    base: &Path,
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
        let endpoints = build_endpoints(r, &key, p);
        let discovery = build_discovery(r, &key, p);
        let sources =
            usize::from(!r.endpoints.is_empty()) + usize::from(r.dns.is_some()) + usize::from(r.srv.is_some());
        if sources != 1 {
            p.at(
                span(u),
                &key,
                if sources == 0 { "an upstream needs endpoints" } else { "give only one of endpoints, dns and srv" },
                "endpoints = [\"127.0.0.1:9001\"], or dns = \"users.internal:8080\", or srv = \"_http._tcp.users.internal\"",
            );
        }
        let balance = r.balance.unwrap_or_default();
        let hash_on = match (&r.hash_on, balance) {
            (Some(h), Balance::ConsistentHash) => parse_hash_on(h, &key, p),
            (None, Balance::ConsistentHash) => {
                p.at(
                    span(u),
                    format!("{key}.hash_on"),
                    "consistent-hash needs hash_on",
                    "hash_on = \"client-ip\", \"header:x-user-id\" or \"cookie:session\"",
                );
                None
            }
            (Some(h), _) => {
                p.at(
                    span(h),
                    format!("{key}.hash_on"),
                    "hash_on only applies to balance = \"consistent-hash\"",
                    "remove it, or set balance = \"consistent-hash\"",
                );
                None
            }
            (None, _) => None,
        };
        if balance == Balance::RoundRobin && endpoints.iter().any(|e: &EndpointConfig| e.weight != 1) {
            p.at(
                span(u),
                format!("{key}.balance"),
                "endpoints have weights but round-robin ignores them",
                "set balance = \"weighted-round-robin\"",
            );
        }
        let tls = r.tls.as_ref().map(|t| {
            let raw = t.get_ref();
            let client_cert =
                super::cert_and_key(t, &format!("{key}.tls"), (raw.cert.as_ref(), raw.key.as_ref()), base, p);
            UpstreamTls { ca: raw.ca.as_ref().map(|c| base.join(c)), server_name: raw.server_name.clone(), client_cert }
        });
        let bulkhead = match (r.max_concurrent, r.max_queue, r.queue_timeout) {
            (None, None, None) => None,
            // A semaphore's permits are bounded.
            (Some(c), q, t) if c > 0 => Some(Bulkhead {
                max_concurrent: within(p, span(u), &format!("{key}.max_concurrent"), Some(c), 1..=1_000_000, 100),
                max_queue: within(p, span(u), &format!("{key}.max_queue"), q, 0..=1_000_000, 0),
                queue_timeout: within(p, span(u), &format!("{key}.queue_timeout"), t, WAITS, Duration::from_secs(1)),
            }),
            _ => {
                p.at(
                    span(u),
                    format!("{key}.max_concurrent"),
                    "a queue needs max_concurrent (at least 1)",
                    "e.g. max_concurrent = 100, max_queue = 50",
                );
                None
            }
        };
        let protocol = r.protocol.unwrap_or_default();
        let max_streams_key = format!("{key}.max_streams_per_connection");
        let max_streams_per_connection =
            within(p, span(u), &max_streams_key, r.max_streams_per_connection, 1..=10_000, 100);
        if r.max_streams_per_connection.is_some() && protocol != Protocol::Http2 {
            p.at(
                span(u),
                max_streams_key,
                "max_streams_per_connection only applies to protocol = \"http2\" (an HTTP/1 connection carries one request at a time)",
                "remove it, or set protocol = \"http2\"",
            );
        }
        let health = r.health.as_ref().and_then(|h| build_health(h, &key, p));
        let outlier = r.outlier.as_ref().map(|at| {
            let o = at.get_ref();
            let (base_ejection, max_ejection) = base_and_cap(
                p,
                span(at),
                &format!("{key}.outlier"),
                Bound {
                    name: "base_ejection",
                    written: o.base_ejection,
                    range: WAITS,
                    default: Duration::from_secs(10),
                },
                Bound {
                    name: "max_ejection",
                    written: o.max_ejection,
                    range: REQUEST_TIMEOUTS,
                    default: Duration::from_secs(300),
                },
                "each ejection lasts longer, up to it",
            );
            Outlier {
                consecutive_5xx: o.consecutive_5xx.unwrap_or(5),
                consecutive_connect_failures: o.consecutive_connect_failures.unwrap_or(3),
                base_ejection,
                max_ejection,
                max_ejected_percent: within(
                    p,
                    span(at),
                    &format!("{key}.outlier.max_ejected_percent"),
                    o.max_ejected_percent,
                    0..=100,
                    50,
                ),
            }
        });
        let breaker = r.breaker.as_ref().and_then(|b| build_breaker(b, &format!("{key}.breaker"), p));
        let endpoint_breaker =
            r.endpoint_breaker.as_ref().and_then(|b| build_breaker(b, &format!("{key}.endpoint_breaker"), p));
        let retry_budget = match &r.retry_budget {
            None => RetryBudgetConfig::default(),
            Some(b) => {
                let percent = b.get_ref().percent.unwrap_or(20.0);
                if !(0.0..=100.0).contains(&percent) {
                    p.at(
                        span(b),
                        format!("{key}.retry_budget.percent"),
                        "percent must be within 0..=100",
                        "e.g. percent = 20",
                    );
                }
                RetryBudgetConfig { percent, min_per_second: b.get_ref().min_per_second.unwrap_or(3) }
            }
        };
        index.insert(name.clone(), list.len());
        list.push(UpstreamConfig {
            name: name.clone(),
            endpoints,
            discovery,
            connect_timeout: within(
                p,
                span(u),
                &format!("{key}.connect_timeout"),
                r.connect_timeout,
                WAITS,
                Duration::from_secs(2),
            ),
            request_timeout: r.request_timeout.map(|t| {
                within(
                    p,
                    span(u),
                    &format!("{key}.request_timeout"),
                    Some(t),
                    REQUEST_TIMEOUTS,
                    Duration::from_secs(10),
                )
            }),
            idle_timeout: within(
                p,
                span(u),
                &format!("{key}.idle_timeout"),
                r.idle_timeout.map(|d| d.0),
                REQUEST_TIMEOUTS,
                Duration::from_secs(90),
            ),
            read_timeout: within(
                p,
                span(u),
                &format!("{key}.read_timeout"),
                r.read_timeout.map(|d| d.0),
                REQUEST_TIMEOUTS,
                READ_TIMEOUT,
            ),
            max_idle_per_endpoint: r.max_idle_per_endpoint.unwrap_or(256),
            balance,
            hash_on,
            protocol,
            max_streams_per_connection,
            tls,
            bulkhead,
            health,
            outlier,
            breaker,
            endpoint_breaker,
            retry_budget,
        });
    }
    (list, index)
}

fn build_endpoints(r: &raw::RawUpstream, key: &str, p: &mut Problems<'_>) -> Vec<EndpointConfig> {
    let mut endpoints = Vec::new();
    for (i, e) in r.endpoints.iter().enumerate() {
        let (address, weight) = match e.get_ref() {
            raw::RawEndpoint::Address(a) => (a.as_str(), 1),
            raw::RawEndpoint::Weighted(w) => (w.address.as_str(), w.weight),
        };
        let weight = within(p, span(e), &format!("{key}.endpoints[{i}].weight"), Some(weight), 1..=10_000u32, 1);
        match check_endpoint(address) {
            Ok(address) => endpoints.push(EndpointConfig { address, weight }),
            Err(what) => p.at(
                span(e),
                format!("{key}.endpoints[{i}]"),
                what,
                "write host:port, e.g. \"127.0.0.1:9001\" or \"users.internal:80\"",
            ),
        }
    }
    endpoints
}

fn build_discovery(r: &raw::RawUpstream, key: &str, p: &mut Problems<'_>) -> Option<Discovery> {
    if let Some(d) = &r.dns {
        return match d.get_ref().rsplit_once(':').map(|(h, port)| (h, port.parse::<u16>())) {
            Some((host, Ok(port))) if !host.is_empty() => Some(Discovery::Dns { host: host.to_owned(), port }),
            _ => {
                p.at(
                    span(d),
                    format!("{key}.dns"),
                    format!("`{}` is not host:port", d.get_ref()),
                    "e.g. dns = \"users.internal:8080\"",
                );
                None
            }
        };
    }
    if let Some(s) = &r.srv {
        let name = s.get_ref();
        if name.is_empty() || name.contains([':', '/', ' ']) {
            p.at(
                span(s),
                format!("{key}.srv"),
                format!("`{name}` is not an SRV name"),
                "e.g. srv = \"_http._tcp.users.internal\"",
            );
            return None;
        }
        return Some(Discovery::Srv { name: name.clone() });
    }
    None
}

fn parse_hash_on(h: &Spanned<String>, key: &str, p: &mut Problems<'_>) -> Option<HashOn> {
    let text = h.get_ref();
    let parsed = match text.split_once(':') {
        None if text == "client-ip" => Some(HashOn::ClientIp),
        Some(("header", name)) => HeaderName::from_bytes(name.trim().as_bytes()).ok().map(HashOn::Header),
        Some(("cookie", name)) if !name.trim().is_empty() => Some(HashOn::Cookie(name.trim().to_owned())),
        _ => None,
    };
    if parsed.is_none() {
        p.at(
            span(h),
            format!("{key}.hash_on"),
            format!("`{text}` is not a hash key"),
            "use \"client-ip\", \"header:NAME\" or \"cookie:NAME\"",
        );
    }
    parsed
}

fn build_health(h: &Spanned<raw::RawHealth>, key: &str, p: &mut Problems<'_>) -> Option<HealthCheck> {
    let r = h.get_ref();
    if !r.path.starts_with('/') {
        p.at(
            span(h),
            format!("{key}.health.path"),
            format!("`{}` must start with `/`", r.path),
            "e.g. path = \"/health\"",
        );
        return None;
    }
    let host = match r.host.as_deref().map(|text| (text, text.parse::<http::uri::Authority>())) {
        None => None,
        Some((text, Ok(authority))) if authority.as_str() == text && !text.contains('@') => Some(text.to_owned()),
        Some((text, _)) => {
            p.at(
                span(h),
                format!("{key}.health.host"),
                format!("`{text}` is not a host name or host:port"),
                "e.g. host = \"users.internal\"",
            );
            return None;
        }
    };
    let check = HealthCheck {
        path: r.path.clone(),
        host,
        interval: within(p, span(h), &format!("{key}.health.interval"), r.interval, POLLS, Duration::from_secs(5)),
        timeout: within(p, span(h), &format!("{key}.health.timeout"), r.timeout, WAITS, Duration::from_secs(1)),
        healthy_threshold: within(
            p,
            span(h),
            &format!("{key}.health.healthy_threshold"),
            r.healthy_threshold,
            1..=1000,
            2,
        ),
        unhealthy_threshold: within(
            p,
            span(h),
            &format!("{key}.health.unhealthy_threshold"),
            r.unhealthy_threshold,
            1..=1000,
            3,
        ),
        expect_status: r.expect_status.clone().unwrap_or_default(),
        all_down: r.all_down,
    };
    if check.expect_status.iter().any(|s| !(100..=599).contains(s)) {
        p.at(
            span(h),
            format!("{key}.health.expect_status"),
            "statuses must be within 100..=599",
            "e.g. expect_status = [200, 204]",
        );
        return None;
    }
    Some(check)
}

fn build_breaker(b: &Spanned<raw::RawBreaker>, key: &str, p: &mut Problems<'_>) -> Option<BreakerConfig> {
    let r = b.get_ref();
    let (open_for, max_open_for) = base_and_cap(
        p,
        span(b),
        key,
        Bound { name: "open_for", written: r.open_for, range: REQUEST_TIMEOUTS, default: Duration::from_secs(5) },
        Bound {
            name: "max_open_for",
            written: r.max_open_for,
            range: REQUEST_TIMEOUTS,
            default: Duration::from_secs(60),
        },
        "it doubles on each re-open, up to it",
    );
    let config = BreakerConfig {
        consecutive_failures: r.consecutive_failures,
        failure_ratio: r.failure_ratio.unwrap_or(0.5),
        min_requests: r.min_requests.unwrap_or(20).max(1),
        window: within(
            p,
            span(b),
            &format!("{key}.window"),
            r.window,
            Duration::from_millis(100)..=Duration::from_secs(3600),
            Duration::from_secs(10),
        ),
        open_for,
        max_open_for,
        half_open_probes: r.half_open_probes.unwrap_or(1).max(1),
    };
    if !(config.failure_ratio > 0.0 && config.failure_ratio <= 1.0) {
        p.at(
            span(b),
            format!("{key}.failure_ratio"),
            "failure_ratio must be within (0, 1]",
            "e.g. failure_ratio = 0.5",
        );
        return None;
    }
    if config.consecutive_failures == Some(0) {
        p.at(
            span(b),
            format!("{key}.consecutive_failures"),
            "consecutive_failures must be at least 1",
            "e.g. consecutive_failures = 5",
        );
        return None;
    }
    Some(config)
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
