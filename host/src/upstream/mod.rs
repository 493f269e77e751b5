//! Upstreams: named groups of endpoints and everything between a routed
//! request and one of them — the upstream's breaker and bulkhead, endpoint
//! selection over healthy, non-ejected, non-tripped endpoints, the forward
//! over a pooled connection with per-try and whole-request timeouts, and
//! retries to a *different* endpoint within a retry budget.

pub mod balance;
pub mod breaker;
pub(crate) mod bulkhead;
pub mod discovery;
pub mod endpoint;
pub mod h1;
mod health;
pub mod outlier;
pub mod pool;
pub mod retry_budget;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Method, Request, Response};
use tokio::sync::watch;
use tokio::time::Instant;

use self::balance::Balancer;
use self::breaker::Breaker;
use self::bulkhead::Bulkhead;
use self::discovery::Resolved;
use self::endpoint::Endpoint;
use self::outlier::Outcome;
use self::pool::{ConnectError, ConnectSettings, Pools, SendError, TlsSettings};
use self::retry_budget::RetryBudget;
use crate::config::{HashOn, Protocol, RetryPolicy, UpstreamConfig};
use crate::proxy::body::{Body, BodyError};
use crate::proxy::error::ProxyError;
use crate::proxy::headers::Forwarding;
use crate::telemetry::{EndpointSeries, Metrics, TryOutcome, UpstreamSeries, log_budget};

/// The endpoints of an upstream as of now, with the balancer built for them.
#[derive(Debug)]
pub struct EndpointSet {
    pub endpoints: Vec<Arc<Endpoint>>,
    balancer: Balancer,
    /// With endpoints of more than one SRV priority, each priority's, lowest
    /// first, balanced on their own (empty otherwise): a request picks in
    /// the lowest that has an endpoint to offer and not yet tried (RFC
    /// 2782: a higher priority serves only while no lower one can),
    /// [`EndpointSet::pick`]. One balancer over all of them would skew a
    /// priority's turns (round-robin gave each endpoint those of the
    /// others' before it) and move its keys when another's came or went.
    tiers: Vec<Tier>,
}

/// One SRV priority's endpoints: their indices in the set, and their
/// balancer (over them alone, in that order).
#[derive(Debug)]
struct Tier {
    members: Vec<usize>,
    balancer: Balancer,
}

impl EndpointSet {
    fn new(config: &UpstreamConfig, endpoints: Vec<Arc<Endpoint>>) -> Self {
        let balancer = |members: &[usize]| {
            let weights: Vec<u32> = members.iter().filter_map(|&i| endpoints.get(i)).map(|e| e.weight).collect();
            let names: Vec<&str> = members.iter().filter_map(|&i| endpoints.get(i)).map(|e| &*e.address).collect();
            Balancer::new(config.balance, &weights, &names)
        };
        let mut priorities: Vec<u16> = endpoints.iter().map(|e| e.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let tiers = match priorities.len() {
            0 | 1 => Vec::new(),
            _ => priorities
                .iter()
                .map(|&p| {
                    let members: Vec<usize> =
                        endpoints.iter().enumerate().filter(|(_, e)| e.priority == p).map(|(i, _)| i).collect();
                    Tier { balancer: balancer(&members), members }
                })
                .collect(),
        };
        // The whole set's, used only without priorities.
        let all: Vec<usize> = if tiers.is_empty() { (0..endpoints.len()).collect() } else { Vec::new() };
        Self { balancer: balancer(&all), endpoints, tiers }
    }

    /// The endpoint for a request's next try, not one it `tried`: one
    /// available (`all_down`: any, [`Upstream::all_down`]), and across SRV
    /// priorities one of the lowest priority with such an endpoint.
    fn pick(&self, all_down: bool, hash: Option<u64>, tried: &[usize]) -> Option<usize> {
        if self.tiers.is_empty() {
            if all_down {
                let all: Vec<endpoint::Decided<'_>> =
                    self.endpoints.iter().map(|e| endpoint::Decided(e, true)).collect();
                return self.balancer.pick(&all, hash, tried);
            }
            return self.balancer.pick(&self.endpoints, hash, tried);
        }
        for tier in &self.tiers {
            // Each endpoint's availability read once: the choice of the
            // tier and the pick in it see the same.
            let candidates: Vec<endpoint::Decided<'_>> = tier
                .members
                .iter()
                .filter_map(|&i| self.endpoints.get(i))
                .map(|e| endpoint::Decided(e, all_down || balance::Candidate::available(e)))
                .collect();
            let tried_here: Vec<usize> =
                tried.iter().filter_map(|t| tier.members.iter().position(|m| m == t)).collect();
            if let Some(local) = tier.balancer.pick(&candidates, hash, &tried_here) {
                return tier.members.get(local).copied();
            }
        }
        None
    }

    /// A new set from resolved addresses, keeping the state of endpoints
    /// that are still there; a new one holds the series `series` gives for
    /// its address.
    fn update(
        &self,
        config: &UpstreamConfig,
        resolved: &[Resolved],
        series: impl Fn(&str) -> Arc<EndpointSeries>,
    ) -> Self {
        let endpoints = resolved
            .iter()
            .map(|r| {
                let address: Arc<str> = Arc::from(r.addr.to_string().as_str());
                self.endpoints
                    .iter()
                    .find(|e| e.address == address && e.weight == r.weight && e.priority == r.priority)
                    .cloned()
                    .unwrap_or_else(|| {
                        let series = series(&address);
                        Arc::new(
                            Endpoint::new(address, r.weight, config.endpoint_breaker, series).at_priority(r.priority),
                        )
                    })
            })
            .collect();
        Self::new(config, endpoints)
    }
}

/// A named group of endpoints and the machinery to reach them.
pub struct Upstream {
    pub name: Arc<str>,
    pub config: UpstreamConfig,
    set: Arc<ArcSwap<EndpointSet>>,
    pools: Arc<Pools>,
    breaker: Option<Breaker>,
    bulkhead: Option<Bulkhead>,
    budget: RetryBudget,
    metrics: Arc<Metrics>,
    /// This upstream's own series, resolved once.
    series: UpstreamSeries,
    /// Its breaker's series (endpoint `*`), held as an endpoint's are.
    breaker_series: Arc<EndpointSeries>,
    /// Dropping it, or [`Upstream::stop`], stops this upstream's background
    /// tasks (health checks, DNS re-resolution).
    stop: watch::Sender<()>,
    /// A digest of the TLS files (CA, certificate, key) as they were when
    /// this upstream was built, when it has any.
    tls_files: Option<[u8; 32]>,
    /// What starts its background tasks, until [`Upstream::start`] has:
    /// an upstream of a config that a reload then refuses never runs them
    /// (its first health checks set the gauges of endpoints it never served).
    tasks: std::sync::Mutex<Option<Tasks>>,
}

/// Spawns an upstream's background tasks.
type Tasks = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("endpoints", &self.set.load().endpoints.len())
            .finish()
    }
}

/// How one routed request is forwarded.
#[derive(Debug)]
pub struct ForwardOptions<'a> {
    pub route: &'a str,
    /// The whole request, retries and backoff included.
    pub timeout: Duration,
    pub try_timeout: Option<Duration>,
    pub retry: &'a RetryPolicy,
    /// The consistent-hashing key, when the upstream hashes.
    pub hash: Option<u64>,
    /// What this hop adds to the request's head (`None`: a plugin's own
    /// request, sent as it was made).
    pub forwarding: Option<&'a Forwarding<'a>>,
    /// The last clock reading before the forwarding (the request's start,
    /// or its last plugin call's end), when there is one: the forwarding
    /// starts there rather than with another reading.
    pub started: Option<Instant>,
}

/// A response and where it came from.
#[derive(Debug)]
pub struct Forwarded {
    pub response: Box<Response<Body>>,
    pub endpoint: Arc<str>,
    /// Time spent on the tries, backoff included.
    pub upstream_time: Duration,
    /// When the response head arrived.
    pub answered: Instant,
}

/// What one try came to.
enum Try {
    /// The response, and when its head arrived.
    Response(Box<Response<Body>>, Instant),
    /// Nothing reached the upstream; the request came back.
    Connect(ProxyError, Box<Request<Body>>),
    Failed(ProxyError, Outcome),
    /// The client's body failed (too large, stalled, not whole in time):
    /// nothing is said of the endpoint.
    ClientFailed(ProxyError),
    /// No response head by the try's deadline.
    TimedOut,
}

impl Upstream {
    /// Builds an upstream; `resolved` holds the first DNS answer when the
    /// upstream is discovered. Background tasks go on `control`, when given.
    pub fn new(
        config: &UpstreamConfig,
        workers: usize,
        metrics: Arc<Metrics>,
        tls: Option<TlsSettings>,
        resolved: Option<(Vec<Resolved>, Duration)>,
        control: Option<(&tokio::runtime::Handle, &crate::config::DnsConfig)>,
        carried: Vec<Arc<Endpoint>>,
    ) -> Self {
        let name: Arc<str> = Arc::from(config.name.as_str());
        let series = |address: &str| metrics.endpoint_series(&name, address);
        let endpoints: Vec<Arc<Endpoint>> = match &resolved {
            Some((r, _)) => EndpointSet::new(config, carried).update(config, r, series).endpoints,
            None => config
                .endpoints
                .iter()
                .map(|e| {
                    carried.iter().find(|c| *c.address == *e.address && c.weight == e.weight).cloned().unwrap_or_else(
                        || {
                            let address = Arc::from(e.address.as_str());
                            Arc::new(Endpoint::new(address, e.weight, config.endpoint_breaker, series(&e.address)))
                        },
                    )
                })
                .collect(),
        };
        let set = Arc::new(ArcSwap::from_pointee(EndpointSet::new(config, endpoints)));
        let pool_metrics = (metrics.clone(), name.clone());
        let settings = ConnectSettings {
            connect_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            read_timeout: config.read_timeout,
            max_idle: config.max_idle_per_endpoint,
            max_streams: config.max_streams_per_connection,
            protocol: config.protocol,
            tls: tls.clone(),
            on_connection: Arc::new(move |delta| pool_metrics.0.pool_connections(&pool_metrics.1, delta)),
        };
        let (stop, stopped) = watch::channel(());
        let pools = Arc::new(Pools::new(workers, settings.clone()));
        let tasks = control.map(|(handle, dns)| {
            let (handle, dns) = (handle.clone(), dns.clone());
            let (config, name, set, pools, metrics) =
                (config.clone(), name.clone(), set.clone(), pools.clone(), metrics.clone());
            Box::new(move || {
                // Where connections to an endpoint are kept: dropped when it leaves.
                let mut kept = vec![pools.clone()];
                if let Some(check) = &config.health {
                    // Health-check connections are not proxy connections: keep them out of the metric.
                    let health_pools =
                        Arc::new(Pools::new(1, ConnectSettings { on_connection: Arc::new(|_| {}), ..settings }));
                    kept.push(health_pools.clone());
                    handle.spawn(health::run(
                        name.clone(),
                        check.clone(),
                        set.clone(),
                        health_pools,
                        metrics.clone(),
                        stopped.clone(),
                    ));
                }
                handle.spawn(pool::tidy(kept.clone(), stopped.clone()));
                if let (Some(what), Some(first)) = (&config.discovery, resolved) {
                    match discovery::Resolver::new(&dns) {
                        Ok(resolver) => {
                            let on_change =
                                endpoint_updater(config.clone(), name.clone(), set.clone(), metrics.clone(), kept);
                            let mut stop = stopped.clone();
                            let stop = async move {
                                let _ = stop.changed().await;
                            };
                            handle.spawn(discovery::watch(resolver, what.clone(), dns.clone(), first, on_change, stop));
                        }
                        Err(e) => tracing::warn!(upstream = &*name, "DNS re-resolution disabled: {e}"),
                    }
                }
            }) as Tasks
        });
        Self {
            series: metrics.upstream_series(&name),
            breaker_series: metrics.endpoint_series(&name, "*"),
            name,
            config: config.clone(),
            set,
            pools,
            breaker: config.breaker.map(Breaker::new),
            bulkhead: config.bulkhead.map(Bulkhead::new),
            budget: RetryBudget::new(config.retry_budget),
            metrics,
            stop,
            tls_files: None,
            tasks: std::sync::Mutex::new(tasks),
        }
    }

    /// Once its config serves: its endpoints' health gauges (healthy, to
    /// start with), then its background tasks (health checks, DNS
    /// re-resolution, the pools' sweep). Again, nothing: an upstream a
    /// reload carries over goes on as it was.
    pub fn start(&self) {
        let tasks = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(spawn) = tasks {
            for e in &self.set.load().endpoints {
                self.metrics.endpoint_health(&e.series, &self.name, &e.address, e.healthy());
            }
            spawn();
        }
    }

    /// Its endpoints, for an upstream of the same name that `config` builds
    /// anew to carry on with (their health, ejection, breaker and latency
    /// go on as they were): none when what they hold would be wrong for it —
    /// another endpoint breaker, or health state with no checks left to
    /// change it.
    pub fn endpoints_for(&self, config: &UpstreamConfig) -> Vec<Arc<Endpoint>> {
        let same_breaker = self.config.endpoint_breaker == config.endpoint_breaker;
        let health_kept = config.health.is_some() || self.config.health.is_none();
        if same_breaker && health_kept { self.endpoints() } else { Vec::new() }
    }

    /// Records the digest of the TLS files it was built from
    /// ([`Upstream::tls_files`]).
    pub fn with_tls_files(mut self, digest: Option<[u8; 32]>) -> Self {
        self.tls_files = digest;
        self
    }

    /// The digest of the TLS files it was built from: a reload rebuilds an
    /// upstream whose files changed since, though its config did not.
    pub fn tls_files(&self) -> Option<[u8; 32]> {
        self.tls_files
    }

    /// Stops the background tasks now, rather than when the last request
    /// holding this upstream ends: a reload replaced it, and its tasks
    /// would keep probing and recording the gauges of endpoints that may
    /// be gone.
    pub fn stop(&self) {
        self.stop.send_replace(());
    }

    /// The endpoints now.
    pub fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.set.load().endpoints.clone()
    }

    /// Brings the ejection gauges up to date. An ejection ends when its time
    /// is up, not at an event the gauge could follow: it is read whenever
    /// the metrics are.
    pub fn report_ejections(&self) {
        if self.config.outlier.is_some() {
            for ep in &self.set.load().endpoints {
                self.metrics.endpoint_ejected(&ep.series, &self.name, &ep.address, ep.ejected());
            }
        }
    }

    /// The consistent-hashing key of a request, when this upstream hashes.
    pub fn hash_key(&self, headers: &http::HeaderMap, client: IpAddr) -> Option<u64> {
        let on = self.config.hash_on.as_ref()?;
        match on {
            HashOn::ClientIp => Some(balance::hash_key(client.to_string().as_bytes())),
            HashOn::Header(name) => headers.get(name).map(|v| balance::hash_key(v.as_bytes())),
            HashOn::Cookie(name) => headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|c| c.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| balance::hash_key(v.as_bytes())),
        }
    }

    /// Forwards `req` (its URI carries path and query only) and waits for the
    /// response head, retrying per the route's policy. The request comes
    /// boxed and stays in its box to the connection it is written on,
    /// rather than being copied at each layer it passes (it is ~300 bytes).
    pub async fn forward(
        &self,
        mut req: Box<Request<Body>>,
        opts: &ForwardOptions<'_>,
    ) -> Result<Forwarded, ProxyError> {
        let start = opts.started.unwrap_or_else(Instant::now);
        // HTTP/1 writes the forwarding fields with the head; HTTP/2 (hyper's
        // client) takes them in the map, once for every try.
        let forwarding = match (self.config.protocol, opts.forwarding) {
            (Protocol::Http2, Some(f)) => {
                f.apply(req.headers_mut());
                None
            }
            (_, f) => f,
        };
        // The route's timeout, capped by the upstream's own.
        let deadline = start + self.config.request_timeout.map_or(opts.timeout, |t| t.min(opts.timeout));
        let upstream_ticket = match &self.breaker {
            None => None,
            Some(b) => match b.try_acquire() {
                Ok(t) => Some(t),
                Err(retry_after) => {
                    return Err(ProxyError::BreakerOpen { upstream: self.name.clone(), retry_after });
                }
            },
        };
        let permit = match &self.bulkhead {
            None => None,
            Some(b) => match b.acquire(deadline).await {
                Some(p) => Some(p),
                None => {
                    self.metrics.bulkhead_rejected(&self.name);
                    return Err(ProxyError::Overloaded { upstream: self.name.clone() });
                }
            },
        };
        self.budget.deposit(start);
        let idempotent = is_idempotent(req.method());
        let may_repeat = idempotent || opts.retry.non_idempotent;
        // A copy of the request only for a retry after it was sent: a
        // connect failure hands the request back, so the default policy
        // (connect failures only) copies nothing. Boxed: it would take
        // ~240 bytes of every request's future.
        let replay = (may_repeat && opts.retry.attempts > 0 && opts.retry.on.after_send())
            .then(|| Replay::capture(&req).map(Box::new))
            .flatten();
        let mut pending = Some(req);
        let mut tried = Tried::default();
        let mut tries = 0u32;
        // What to answer if no further try happens: the last 5xx response
        // (a retry is only decided once another endpoint is there) or error.
        let mut last: Option<Result<Forwarded, ProxyError>> = None;
        // Nothing was sent (no time was left for a first try): the answer
        // says nothing about the upstream, and its breaker is not told.
        let mut unsent = false;
        // Or the client's body failed: nor does it say anything.
        let mut client_failed = false;
        // One endpoint set for the whole request: `tried` holds its indices,
        // which a set swapped in by DNS meanwhile would give other meanings
        // (a retry went back to the endpoint it had just tried).
        let set = self.set.load_full();
        let all_down = self.all_down(&set);
        let result = loop {
            let Some(i) = set.pick(all_down, opts.hash, tried.as_slice()) else {
                break last.take().unwrap_or_else(|| {
                    // (Counted already when it found none passing.)
                    if !all_down {
                        self.metrics.no_healthy_endpoint(&self.name);
                    }
                    Err(ProxyError::NoHealthyEndpoint { upstream: self.name.clone() })
                });
            };
            tried.push(i);
            let Some(ep) = set.endpoints.get(i) else { continue };
            let ep_ticket = match &ep.breaker {
                None => None,
                // A tripped endpoint is skipped, not counted as a try.
                Some(b) => match b.try_acquire() {
                    Ok(t) => Some(t),
                    Err(_) => continue,
                },
            };
            if tries > 0 {
                // A retry: decided once there is an endpoint to retry on.
                if !self.budget_allows_retry() {
                    break last.take().unwrap_or(Err(ProxyError::Internal("no outcome")));
                }
                let wait = backoff(opts.retry, tries).min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(wait).await;
            }
            let Some(req) = pending.take().or_else(|| replay.as_deref().map(Replay::build)) else {
                break last.take().unwrap_or(Err(ProxyError::Internal("request body already consumed")));
            };
            // The first try starts when the request does, unless it waited
            // for the bulkhead: then one clock read serves the deadline, the
            // try's timeout and its latency.
            let now = if tries == 0 && self.bulkhead.is_none() { start } else { Instant::now() };
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                // The bulkhead's queue or a backoff took the time that was
                // left: no try is made (it would be sent and abandoned at
                // once, held against a healthy endpoint).
                unsent = tries == 0;
                break last.take().unwrap_or_else(|| {
                    Err(ProxyError::UpstreamTimeout {
                        upstream: self.name.clone(),
                        timeout_ms: deadline.saturating_duration_since(start).as_millis(),
                    })
                });
            }
            if tries > 0 {
                self.metrics.retry(opts.route, &self.name);
            }
            tries += 1;
            let try_timeout = opts.try_timeout.unwrap_or(opts.timeout).min(left);
            let flight = ep.start_request(now);
            // The try boxed: inline, it made this future (boxed by the
            // proxy) too large for the allocator's per-thread cache. It
            // keeps its own deadline: an HTTP/1 connection waits with the
            // timer it keeps, rather than one made for each request.
            let attempt = Box::pin(self.try_once(ep, req, forwarding, now, now + try_timeout, deadline)).await;
            let retry = match attempt {
                Try::Response(mut resp, done) => {
                    let status = resp.status();
                    let observed = set.balancer.uses_latency();
                    let elapsed = if set.balancer.weighs_load() {
                        let (elapsed, outstanding) = flight.finish_held(done, observed, ep);
                        let inner = Box::new(std::mem::replace(resp.body_mut(), Body::Empty));
                        *resp.body_mut() = Body::Held { inner, outstanding: Some(outstanding), permit: None };
                        elapsed
                    } else {
                        flight.finish_at(done, observed)
                    };
                    let (outcome, label) = if status.is_server_error() {
                        (Outcome::ServerError, TryOutcome::ServerError)
                    } else {
                        (Outcome::Success, TryOutcome::Ok)
                    };
                    self.record(ep, ep_ticket, outcome, label, elapsed);
                    let retry = opts.retry.on.statuses.contains(&status) && may_repeat && replay.is_some();
                    let endpoint = ep.address.clone();
                    let upstream_time = done.saturating_duration_since(start);
                    last = Some(Ok(Forwarded { response: resp, endpoint, upstream_time, answered: done }));
                    retry
                }
                Try::Connect(err, req) => {
                    let elapsed = flight.finish_failed(set.balancer.uses_latency(), try_timeout);
                    self.record(ep, ep_ticket, Outcome::ConnectFailure, TryOutcome::Connect, elapsed);
                    pending = Some(req);
                    last = Some(Err(err));
                    // Nothing reached the upstream: safe to retry for any method.
                    opts.retry.on.connect_failure
                }
                Try::Failed(err, outcome) => {
                    let elapsed = flight.finish_failed(set.balancer.uses_latency(), try_timeout);
                    self.record(ep, ep_ticket, outcome, TryOutcome::Reset, elapsed);
                    let retry = opts.retry.on.reset && may_repeat && replay.is_some() && err.counts_against_upstream();
                    last = Some(Err(err));
                    retry
                }
                Try::ClientFailed(err) => {
                    // Neither breaker nor outlier detection hears of it (a
                    // client's slow or oversized bodies would otherwise open
                    // the breaker, or mask an endpoint's failures as
                    // successes); a half-open probe's place is given back.
                    flight.finish(false);
                    drop(ep_ticket);
                    self.metrics.upstream_try(&ep.series, &self.name, &ep.address, TryOutcome::Client);
                    client_failed = true;
                    last = Some(Err(err));
                    false
                }
                Try::TimedOut => {
                    let elapsed = flight.finish_failed(set.balancer.uses_latency(), try_timeout);
                    self.record(ep, ep_ticket, Outcome::ServerError, TryOutcome::Timeout, elapsed);
                    last = Some(Err(ProxyError::UpstreamTimeout {
                        upstream: self.name.clone(),
                        timeout_ms: try_timeout.as_millis(),
                    }));
                    opts.retry.on.timeout && may_repeat && replay.is_some()
                }
            };
            // Tries and time left; the budget is asked once another
            // endpoint is there.
            if !retry || tries > opts.retry.attempts || Instant::now() >= deadline {
                break last.take().unwrap_or(Err(ProxyError::Internal("no outcome")));
            }
        };
        if let (Some(b), Some(t)) = (&self.breaker, upstream_ticket.filter(|_| !unsent && !client_failed)) {
            let ok = match &result {
                Ok(f) => !f.response.status().is_server_error(),
                Err(e) => !e.counts_against_upstream(),
            };
            if let Some(tr) = b.record(t, ok) {
                self.log_transition(None, &tr);
            }
        }
        // The bulkhead's place is held until the response body ends: a slow
        // or long body is as much load on the upstream as a slow head.
        match (result, permit) {
            (Ok(mut forwarded), Some(permit)) => {
                Body::hold_permit(&mut forwarded.response, permit);
                Ok(forwarded)
            }
            (result, _) => result,
        }
    }

    /// With no endpoint of `set` available — some failing their health
    /// checks, the rest ejected or tripped — and `health.all_down =
    /// "try-all"`: whether to balance over every endpoint as if it passed
    /// ([`endpoint::Decided`]; an open breaker still keeps its endpoint
    /// out, where a try takes its ticket). Decided once a request, before
    /// its first pick: a pick that found none would have moved the balancer
    /// on a turn.
    fn all_down(&self, set: &EndpointSet) -> bool {
        if self.config.health.as_ref().is_none_or(|h| h.all_down != crate::config::AllDown::TryAll)
            || set.endpoints.is_empty()
            || set.endpoints.iter().any(balance::Candidate::available)
            // Every breaker open, or every endpoint ejected: not the
            // checks' doing, and not theirs to override.
            || set.endpoints.iter().all(|e| e.healthy())
        {
            return false;
        }
        // It found none healthy, whatever the tries then answer: the
        // count operators alert on stays true.
        self.metrics.no_healthy_endpoint(&self.name);
        if let Some(n) = log_budget::ALL_DOWN.take() {
            tracing::warn!(
                upstream = %self.name,
                dropped = log_budget::dropped(n),
                "no endpoint passes its health checks: trying them all (health.all_down = \"try-all\")"
            );
        }
        true
    }

    /// Whether the retry budget allows another try (and it is taken).
    fn budget_allows_retry(&self) -> bool {
        if !self.budget.try_withdraw() {
            self.metrics.retry_budget_exhausted(&self.name);
            tracing::debug!(upstream = &*self.name, "retry budget exhausted; not retrying");
            return false;
        }
        true
    }

    /// One try against one endpoint, started at `now` and answered by
    /// `deadline`, within the request's `overall` deadline.
    async fn try_once(
        &self,
        ep: &Endpoint,
        mut req: Box<Request<Body>>,
        forwarding: Option<&Forwarding<'_>>,
        now: Instant,
        deadline: Instant,
        overall: Instant,
    ) -> Try {
        self.prepare(&mut req, ep);
        let conn = match self.pools.checkout(&ep.address, now, deadline).await {
            Ok(c) => c,
            // No connection within the try's timeout, with the request's
            // time left: nothing was sent, so it is a connect failure (for
            // another endpoint, and outlier detection), not a timeout.
            Err(ConnectError::Deadline(_)) if deadline < overall => {
                return Try::Connect(
                    ProxyError::UpstreamConnect {
                        upstream: self.name.clone(),
                        detail: format!("no connection to {} within the try's timeout", ep.address),
                    },
                    req,
                );
            }
            Err(ConnectError::Deadline(_)) => return Try::TimedOut,
            Err(e) => {
                return Try::Connect(
                    ProxyError::UpstreamConnect { upstream: self.name.clone(), detail: e.to_string() },
                    req,
                );
            }
        };
        let reused = conn.reused();
        let sent = match conn.send(req, forwarding, deadline).await {
            // Boxed: rare, and inline its future would make every try's larger.
            unseen @ Err(SendError::Unanswered(_) | SendError::Unprocessed(_)) => {
                Box::pin(self.pools.again_if_unseen(&ep.address, forwarding, deadline, unseen)).await
            }
            sent => sent,
        };
        match sent {
            Ok((resp, at)) => Try::Response(resp, at),
            Err(SendError::TimedOut) => Try::TimedOut,
            Err(SendError::NotSent(req, e)) => {
                Try::Connect(ProxyError::UpstreamConnect { upstream: self.name.clone(), detail: e.to_string() }, req)
            }
            Err(SendError::Failed(e)) => {
                // The client's body failing (too large, stalled, not whole
                // in time) fails the send: that is the client's doing, not
                // the upstream's.
                if let Some(err) = client_body_failure(&*e) {
                    return Try::ClientFailed(err);
                }
                let detail = if reused { format!("{e} (on a reused connection)") } else { e.to_string() };
                Try::Failed(ProxyError::UpstreamProtocol { upstream: self.name.clone(), detail }, Outcome::ServerError)
            }
            // `resend` does not give it back.
            Err(SendError::Unanswered(_)) => Try::Failed(
                ProxyError::UpstreamProtocol { upstream: self.name.clone(), detail: "closed before a response".into() },
                Outcome::ServerError,
            ),
            // Handed back above.
            Err(SendError::Unprocessed(turned)) => Try::Connect(
                ProxyError::UpstreamConnect { upstream: self.name.clone(), detail: turned.error.to_string() },
                turned.again,
            ),
        }
    }

    /// HTTP/1 takes the origin-form URI and `Host`; HTTP/2 takes an absolute
    /// URI whose authority becomes `:authority`.
    fn prepare(&self, req: &mut Request<Body>, ep: &Endpoint) {
        match self.config.protocol {
            Protocol::Http1 => *req.version_mut() = http::Version::HTTP_11,
            Protocol::Http2 => {
                *req.version_mut() = http::Version::HTTP_2;
                let host = req.headers_mut().remove(http::header::HOST);
                let mut parts = std::mem::take(req.uri_mut()).into_parts();
                // A request prepared for an endpoint that it did not reach
                // (no connection, a stream turned away) comes back without
                // `Host`, its authority in the URI: kept for the next one
                // (the endpoint's address went instead).
                parts.authority = host
                    .and_then(|h| h.to_str().ok().and_then(|h| h.parse::<http::uri::Authority>().ok()))
                    .or(parts.authority)
                    .or_else(|| ep.address.parse().ok());
                parts.scheme =
                    Some(if self.config.tls.is_some() { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP });
                if parts.path_and_query.is_none() {
                    parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
                }
                if let Ok(uri) = http::Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
            }
        }
    }

    /// Feeds one try's outcome to the endpoint's breaker, outlier detection
    /// and the metrics.
    fn record(
        &self,
        ep: &Endpoint,
        ticket: Option<breaker::Ticket>,
        outcome: Outcome,
        label: TryOutcome,
        elapsed: Duration,
    ) {
        self.metrics.upstream_try(&ep.series, &self.name, &ep.address, label);
        self.series.duration.observe(elapsed.as_secs_f64());
        if let (Some(b), Some(t)) = (&ep.breaker, ticket)
            && let Some(tr) = b.record(t, outcome == Outcome::Success)
        {
            self.log_transition(Some(ep), &tr);
        }
        if let Some(config) = &self.config.outlier {
            let set = self.set.load();
            let may_eject = || {
                // Of the endpoints that would serve but for ejection (not
                // those down by health check or with an open breaker: the
                // last one serving is never ejected). `ep` is already marked
                // by the time this is asked: count the others.
                let (mut serving, mut ejected) = (1, 0);
                for e in set.endpoints.iter().filter(|e| !std::ptr::eq(&***e, ep) && e.serving_but_for_ejection()) {
                    serving += 1;
                    ejected += usize::from(e.ejected());
                }
                outlier::may_eject(ejected, serving, config.max_ejected_percent)
            };
            if let Some(for_) = ep.record_outcome(outcome, config, may_eject) {
                tracing::warn!(
                    upstream = &*self.name,
                    endpoint = &*ep.address,
                    seconds = for_.as_secs_f64(),
                    "endpoint ejected (outlier detection)"
                );
            }
        }
    }

    /// `endpoint`: `None` for the upstream-wide breaker.
    fn log_transition(&self, endpoint: Option<&Endpoint>, tr: &breaker::Transition) {
        let address = endpoint.map(|e| &*e.address);
        tracing::warn!(
            upstream = &*self.name,
            endpoint = address.unwrap_or("*"),
            from = tr.from.as_str(),
            to = tr.to.as_str(),
            "circuit breaker changed state"
        );
        let series = endpoint.map_or(&self.breaker_series, |e| &e.series);
        self.metrics.breaker(series, &self.name, address, tr.to);
    }
}

/// The endpoints a request has tried or skipped, which the balancer must
/// not pick again: one or two in practice, so held inline, spilling to the
/// heap only past four (an allocation per request otherwise).
#[derive(Debug, Default)]
struct Tried {
    inline: [usize; 4],
    len: usize,
    spill: Vec<usize>,
}

impl Tried {
    fn push(&mut self, i: usize) {
        if self.spill.is_empty()
            && let Some(slot) = self.inline.get_mut(self.len)
        {
            *slot = i;
            self.len += 1;
            return;
        }
        if self.spill.is_empty() {
            let inline = self.inline;
            self.spill.extend_from_slice(inline.get(..self.len).unwrap_or_default());
        }
        self.spill.push(i);
    }

    fn as_slice(&self) -> &[usize] {
        if self.spill.is_empty() { self.inline.get(..self.len).unwrap_or_default() } else { &self.spill }
    }
}

/// Methods that may be repeated without changing the outcome (RFC 9110 §9.2.2).
fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// Exponential backoff with full jitter.
fn backoff(policy: &RetryPolicy, tries: u32) -> Duration {
    let exp = policy.backoff.saturating_mul(1u32 << tries.saturating_sub(1).min(16));
    let cap = exp.min(policy.max_backoff);
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(if nanos == 0 { 0 } else { fastrand::u64(0..=nanos) })
}

/// A copy of a request that can be sent again: only bodies held in memory
/// can be replayed.
pub(super) struct Replay {
    method: Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    body: Option<bytes::Bytes>,
}

impl Replay {
    pub(super) fn capture(req: &Request<Body>) -> Option<Self> {
        let body = match req.body() {
            Body::Empty => None,
            Body::Full(b) => b.clone(),
            _ if http_body::Body::is_end_stream(req.body()) => None,
            _ => return None,
        };
        Some(Self { method: req.method().clone(), uri: req.uri().clone(), headers: req.headers().clone(), body })
    }

    pub(super) fn build(&self) -> Box<Request<Body>> {
        let mut r = Box::new(Request::new(self.body.clone().map_or(Body::Empty, Body::full)));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }
}

/// The client's side of a failed send, when the cause was its body.
fn client_body_failure(e: &(dyn std::error::Error + 'static)) -> Option<ProxyError> {
    let mut source = Some(e);
    while let Some(s) = source {
        // hyper's error chain holds the body's error; ours holds it boxed.
        let body = match s.downcast_ref::<h1::Error>() {
            Some(h1::Error::Body(b)) => Some(&**b),
            _ => s.downcast_ref::<BodyError>(),
        };
        match body {
            Some(BodyError::TooLarge(t)) => return Some(ProxyError::BodyTooLarge(t.limit)),
            Some(BodyError::Timeout(ms)) => return Some(ProxyError::BodyTimeout(*ms)),
            Some(BodyError::Late) => return Some(ProxyError::BodyLate),
            Some(BodyError::Hyper(e)) => return Some(ProxyError::ClientBody(e.to_string())),
            Some(BodyError::Client(e)) => return Some(ProxyError::ClientBody(e.to_string())),
            Some(BodyError::Upstream(_)) => return None,
            None => {}
        }
        source = s.source();
    }
    None
}

/// What DNS re-resolution does with a new answer: a new endpoint set that
/// keeps the state of endpoints still there. Requests in flight hold their
/// endpoint and finish on it.
fn endpoint_updater(
    config: UpstreamConfig,
    name: Arc<str>,
    set: Arc<ArcSwap<EndpointSet>>,
    metrics: Arc<Metrics>,
    pools: Vec<Arc<Pools>>,
) -> impl FnMut(Vec<Resolved>) + Send + 'static {
    move |resolved| {
        let old = set.load();
        let new = old.update(&config, &resolved, |address| metrics.endpoint_series(&name, address));
        for e in &new.endpoints {
            metrics.endpoint_health(&e.series, &name, &e.address, e.healthy());
            for p in &pools {
                p.remember(&e.address);
            }
        }
        let addresses: Vec<&str> = new.endpoints.iter().map(|e| &*e.address).collect();
        tracing::info!(upstream = &*name, endpoints = ?addresses, "endpoints changed (DNS)");
        let new = Arc::new(new);
        set.store(new.clone());
        // After the new set is in place: requests that picked a gone
        // endpoint before finish on it, and no connection to it is kept
        // (nothing would ask for that address again).
        for gone in old.endpoints.iter().filter(|e| !new.endpoints.iter().any(|n| n.address == e.address)) {
            metrics.forget_endpoint(&name, &gone.address);
            for p in &pools {
                p.forget(&gone.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tried;

    #[test]
    fn tried_keeps_every_endpoint_in_order_past_its_inline_room() {
        let mut tried = Tried::default();
        assert!(tried.as_slice().is_empty());
        for i in [3, 1, 4, 0, 5, 9] {
            tried.push(i);
        }
        assert_eq!(tried.as_slice(), [3, 1, 4, 0, 5, 9]);
        let mut few = Tried::default();
        few.push(7);
        few.push(2);
        assert_eq!(few.as_slice(), [7, 2]);
    }
}

#[cfg(test)]
mod priority_tests {
    use std::path::Path;

    use super::*;

    /// An upstream's config, with `balance`.
    fn config(balance: &str) -> UpstreamConfig {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\nendpoints = [\"127.0.0.1:1\"]\nbalance = \"{balance}\"\n\
             hash_on = \"header:x-k\"\n[[routes]]\nupstream = \"u\"\n"
        );
        let text = if balance == "consistent-hash" { text } else { text.replace("hash_on = \"header:x-k\"\n", "") };
        let parsed = crate::config::parse(Path::new("test.toml"), &text);
        parsed.map(|c| c.upstreams.into_iter().next()).ok().flatten().unwrap_or_else(|| panic!("{text}"))
    }

    /// `(address, priority)`: a set in address order, priorities interleaved
    /// as DNS gives them.
    fn set(config: &UpstreamConfig, endpoints: &[(&str, u16)]) -> EndpointSet {
        let endpoints = endpoints
            .iter()
            .map(|(a, p)| Arc::new(Endpoint::new(Arc::from(*a), 1, None, Arc::default()).at_priority(*p)))
            .collect();
        EndpointSet::new(config, endpoints)
    }

    /// Across SRV priorities, round-robin takes the lowest priority's
    /// endpoints in turn, evenly (one balancer over all of them gave each
    /// the turns of the others' before it: 1 to 4 here), a retry goes to
    /// the next untried one and then to the next priority, and with every
    /// endpoint down (`all_down`) it still keeps to the lowest priority.
    #[test]
    fn a_request_picks_in_the_lowest_priority_that_can_serve() {
        let c = config("round-robin");
        let s = set(&c, &[("a:1", 10), ("b:1", 20), ("c:1", 20), ("d:1", 20), ("e:1", 10)]);
        let mut counts = [0usize; 5];
        for _ in 0..100 {
            if let Some(i) = s.pick(false, None, &[]) {
                counts[i] += 1;
            }
        }
        assert_eq!(counts, [50, 0, 0, 0, 50]);
        assert_eq!(s.pick(false, None, &[0, 4]).map(|i| s.endpoints[i].priority), Some(20), "the lower ones tried");
        assert_eq!(s.pick(false, None, &[0, 1, 2, 3, 4]), None);
        for _ in 0..10 {
            assert!(matches!(s.pick(true, None, &[]), Some(0 | 4)), "all down: still the lowest priority");
        }
        // A consistent hash keeps a key within the priority that serves.
        let h = config("consistent-hash");
        let s = set(&h, &[("a:1", 10), ("b:1", 20), ("c:1", 10)]);
        let picks: std::collections::HashSet<_> = (0..20).filter_map(|_| s.pick(false, Some(42), &[])).collect();
        assert!(picks.len() == 1 && !picks.contains(&1), "{picks:?}");
    }
}
