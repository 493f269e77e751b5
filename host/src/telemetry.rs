//! Telemetry: the process-wide metrics the request path records into, and
//! (in `access_log`) the JSON line written once per request.
//!
//! Every worker records several series per request, so recording must not
//! contend. Series whose labels are known when something is built are
//! resolved then and held by it: a chain link's call timers, an upstream's
//! try durations, an endpoint's series ([`EndpointSeries`]). For the others,
//! a label set is resolved to its series handle once per thread and kept in
//! a thread-local cache; after warm-up a call hashes the borrowed label
//! values, looks them up in a map no other thread touches and does an atomic
//! add (histograms take their own short per-series mutex, which is how
//! `prometheus-client` stores them). A family's `RwLock` is taken only when
//! a thread first meets a label set, and by the scrape.
//!
//! Label values must come from bounded sets — route, upstream and plugin
//! names from the config, endpoint addresses, fixed outcome words — never
//! from the request: every distinct value is a series kept until forgotten.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use foldhash::fast::RandomState;

use http::Method;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};
use wasmgate_common::prehashed::BuildPrehashed;

pub use self::access_log::{AccessLog, AccessLogWriter, PluginOutcome, TraceId, access_log_line};
pub use self::log_budget::LogBudget;
use crate::plugin::FaultKind;
use crate::upstream::breaker::BreakerState;

mod access_log;
pub mod log_budget;

/// Whole requests and upstream tries: from a local answer (100 µs) to the
/// default request timeout (30 s). Written out rather than computed so the
/// bounds print as the round numbers dashboards refer to.
const REQUEST_BUCKETS: [f64; 17] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// One plugin call: a pooled instance answers in microseconds; 100 ms is the
/// default plugin deadline, past which a call has failed anyway.
const PLUGIN_BUCKETS: [f64; 16] = [
    0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1,
];

/// A series' labels as its family stores them: names fixed per family,
/// values owned.
type Labels<const N: usize> = [(&'static str, String); N];

/// A histogram family's constructor; a plain `fn` keeps the family `Clone`.
type HistogramFn = fn() -> Histogram;

/// The process's metrics. Shared as `Arc<Metrics>`; built once and kept
/// across config reloads, so counters never restart while the process runs.
pub struct Metrics {
    registry: Registry,
    /// Tells this instance's thread-local caches from another's.
    id: u64,
    requests: Series<3, Counter>,
    request_duration: Series<1, Histogram, HistogramFn>,
    upstream_requests: Family<Labels<3>, Counter>,
    upstream_duration: Family<Labels<1>, Histogram, HistogramFn>,
    /// Each endpoint's (and each upstream's own breaker's, endpoint `*`)
    /// series, one for all the endpoints of a label ([`Metrics::endpoint_series`]).
    endpoints: Mutex<HashMap<(String, String), Arc<EndpointSeries>>>,
    // Held by each endpoint ([`EndpointSeries`]): no per-thread cache.
    endpoint_healthy: Family<Labels<2>, Gauge>,
    endpoint_ejected: Family<Labels<2>, Gauge>,
    breaker_state: Family<Labels<2>, Gauge>,
    breaker_transitions: Family<Labels<3>, Counter>,
    retries: Series<2, Counter>,
    retry_budget_exhausted: Series<1, Counter>,
    upstream_connections: Series<1, Gauge>,
    bulkhead_rejected: Series<1, Counter>,
    no_healthy_endpoint: Series<1, Counter>,
    refused_requests: Series<1, Counter>,
    plugin_duration: Family<Labels<2>, Histogram, HistogramFn>,
    plugin_instances: Family<Labels<1>, Counter>,
    plugin_kept: Family<Labels<1>, Counter>,
    plugin_failures: Series<2, Counter>,
    // Two fixed series each: plain handles, no cache needed.
    reloads_ok: Counter,
    reloads_failed: Counter,
    config_generation: Gauge<u64, AtomicU64>,
    config_source_up: Gauge<u64, AtomicU64>,
    plugin_clock_tick: Gauge<f64, AtomicU64>,
    /// Set whole by each config served ([`Metrics::certificates`]).
    certificate_expiry: Family<Labels<2>, Gauge>,
    /// Set whole by each config served ([`Metrics::plugins`]).
    plugin_info: Family<Labels<4>, Gauge>,
    config_info: Family<Labels<2>, Gauge>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The registry's own `Debug` would print every series.
        f.debug_struct("Metrics").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let mut registry = Registry::with_prefix("wasmgate");
        let mut r = Register(&mut registry);
        let requests = r.labelled(
            "requests",
            "Requests answered, by route, method and status",
            ["route", "method", "status"],
            |l| &mut l.requests,
        );
        let request_duration = r.histogram(
            "request_duration",
            "Time from request head to response head, by route",
            request_histogram,
            ["route"],
            |l| &mut l.request_duration,
        );
        let endpoint_healthy = r.held("upstream_endpoint_healthy", "1 while the endpoint passes its health check");
        let endpoint_ejected =
            r.held("upstream_endpoint_ejected", "1 while outlier detection keeps the endpoint out of rotation");
        let breaker_state = r.held(
            "breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open; the endpoint * is the upstream-wide breaker",
        );
        let breaker_transitions = r.held("breaker_transitions", "Circuit breaker state changes, by the state entered");
        let retries =
            r.labelled("retries", "Tries after the first, by route and upstream", ["route", "upstream"], |l| {
                &mut l.retries
            });
        let retry_budget_exhausted = r.labelled(
            "retry_budget_exhausted",
            "Retries not made because the upstream's retry budget was spent",
            ["upstream"],
            |l| &mut l.retry_budget_exhausted,
        );
        let upstream_connections =
            r.labelled("upstream_connections", "Open connections to the upstream's endpoints", ["upstream"], |l| {
                &mut l.upstream_connections
            });
        let bulkhead_rejected = r.labelled(
            "bulkhead_rejected",
            "Requests refused because the upstream's bulkhead was full",
            ["upstream"],
            |l| &mut l.bulkhead_rejected,
        );
        let no_healthy_endpoint = r.labelled(
            "no_healthy_endpoint",
            "Requests that found no healthy, untripped endpoint",
            ["upstream"],
            |l| &mut l.no_healthy_endpoint,
        );
        let refused_requests = r.labelled(
            "refused_requests",
            "Requests refused before they were routed (a head that does not parse, too large, too slow), by status",
            ["status"],
            |l| &mut l.refused_requests,
        );
        let plugin_failures = r.labelled(
            "plugin_failures",
            "Plugin calls that failed, by plugin and kind (trap, deadline, memory, instantiate, pool_full, reply)",
            ["plugin", "kind"],
            |l| &mut l.plugin_failures,
        );
        // Held by each endpoint (`upstream_try`): no per-thread cache.
        let upstream_requests = r.held(
            "upstream_requests",
            "Tries sent to upstream endpoints, by outcome (ok, 5xx, connect, timeout, reset)",
        );
        let upstream_duration = Family::<Labels<1>, Histogram, HistogramFn>::new_with_constructor(request_histogram);
        registry.register_with_unit(
            "upstream_duration",
            "Time of one try against an upstream endpoint",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        // Resolved once per chain link (`plugin_series`): no per-thread cache.
        let plugin_duration = Family::<Labels<2>, Histogram, HistogramFn>::new_with_constructor(plugin_histogram);
        registry.register_with_unit(
            "plugin_call_duration",
            "Time of one plugin call, by plugin and phase (request, response)",
            Unit::Seconds,
            plugin_duration.clone(),
        );
        let plugin_instances = Family::<Labels<1>, Counter>::default();
        registry.register(
            "plugin_instances_created",
            "Plugin instances made while serving, by plugin: a pool empty or drained by failures, \
             a recycled instance replaced, or every call under per-request isolation",
            plugin_instances.clone(),
        );
        let plugin_kept = Family::<Labels<1>, Counter>::default();
        registry.register(
            "plugin_kept_outcomes",
            "Request hook outcomes given from what the gateway kept instead of a call, by plugin \
             (plugins that declare the facts their request hook depends on)",
            plugin_kept.clone(),
        );
        let reloads = Family::<Labels<1>, Counter>::default();
        registry.register("config_reloads", "Config reloads, by result (ok, error)", reloads.clone());
        let config_generation = Gauge::<u64, AtomicU64>::default();
        registry.register("config_generation", "Generation of the config being served", config_generation.clone());
        let config_source_up = Gauge::<u64, AtomicU64>::default();
        config_source_up.set(1);
        registry.register(
            "config_source_up",
            "Whether the config's source (its file, or its key in Redis) gave a config at the last look, the \
             watcher's or a reload's (0: unreadable, unreachable, or the key unset; the config in force serves on \
             meanwhile)",
            config_source_up.clone(),
        );
        let plugin_clock_tick = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "plugin_clock_tick",
            "How often the plugins' clock checks the deadlines of running plugin calls (a call is stopped \
             at most this long after its deadline): a tenth of the shortest deadline loaded, 1-10 ms",
            Unit::Seconds,
            plugin_clock_tick.clone(),
        );
        let certificate_expiry = Family::<Labels<2>, Gauge>::default();
        registry.register_with_unit(
            "tls_certificate_expiration_timestamp",
            "When a certificate the gateway presents stops being valid (its notAfter, Unix time), by role \
             (listener, or upstream:NAME for an upstream's client certificate) and file",
            Unit::Seconds,
            certificate_expiry.clone(),
        );
        let plugin_info = Family::<Labels<4>, Gauge>::default();
        registry.register(
            "plugin_info",
            "The plugins the config being served loaded (1 each): name, the version it was built as (empty \
             if it does not say), the component's sha256, and where it came from (its file, or the OCI \
             reference it was pulled by)",
            plugin_info.clone(),
        );
        let config_info = Family::<Labels<2>, Gauge>::default();
        registry.register(
            "config_info",
            "The config being served (1): the sha256 of its text, and where it was read from (its file, or \
             the store's URL without credentials)",
            config_info.clone(),
        );
        Self {
            certificate_expiry,
            plugin_info,
            config_info,
            reloads_ok: reloads.get_or_create_owned(&[("result", "ok".to_owned())]),
            reloads_failed: reloads.get_or_create_owned(&[("result", "error".to_owned())]),
            config_generation,
            config_source_up,
            plugin_clock_tick,
            registry,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            endpoints: Mutex::new(HashMap::new()),
            requests,
            request_duration,
            upstream_requests,
            upstream_duration,
            endpoint_healthy,
            endpoint_ejected,
            breaker_state,
            breaker_transitions,
            retries,
            retry_budget_exhausted,
            upstream_connections,
            bulkhead_rejected,
            no_healthy_endpoint,
            refused_requests,
            plugin_duration,
            plugin_instances,
            plugin_kept,
            plugin_failures,
        }
    }

    /// One answered request. `route` is the route's name (or a fixed word
    /// when none matched), never the path; a `status` outside 100..=599 (an
    /// upstream's own, the gateway passes any of three digits) is labelled
    /// `other`, so that an upstream cannot make ~900 series a route.
    ///
    /// `held` is the route's own series ([`route_series`](Self::route_series)),
    /// so a routed request looks up nothing for a usual method and status;
    /// without it the series are looked up by `route`.
    pub fn request(&self, route: &str, held: Option<&RouteSeries>, method: &Method, status: u16, duration: Duration) {
        let code = http::StatusCode::from_u16(status).ok().filter(|c| c.as_u16() <= 599);
        let status_label = code.as_ref().map_or("other", http::StatusCode::as_str);
        let labels = [route, method_label(method), status_label];
        match held.zip(RouteSeries::slot(method, status)) {
            Some((h, slot)) => {
                h.requests[slot]
                    .get_or_init(|| self.requests.family.get_or_create(&owned(&self.requests.names, labels)).clone())
                    .inc();
            }
            None => self.record(&self.requests, labels, |c| {
                c.inc();
            }),
        }
        match held {
            Some(h) => h.duration.observe(duration.as_secs_f64()),
            None => self.record(&self.request_duration, [route], |h| h.observe(duration.as_secs_f64())),
        }
    }

    /// The series a route holds, its `request_duration` resolved when the
    /// route is built (the same series [`request`](Self::request) finds by
    /// name).
    pub fn route_series(&self, route: &str) -> RouteSeries {
        RouteSeries {
            duration: self.request_duration.family.get_or_create(&owned(&["route"], [route])).clone(),
            requests: Box::new(std::array::from_fn(|_| OnceLock::new())),
        }
    }

    /// The series an upstream holds, resolved when it is built.
    pub fn upstream_series(&self, upstream: &str) -> UpstreamSeries {
        UpstreamSeries { duration: self.upstream_duration.get_or_create(&owned(&["upstream"], [upstream])).clone() }
    }

    /// The series of `endpoint` of `upstream` (`*`: the upstream's own
    /// breaker), for an endpoint to hold: the same for every endpoint
    /// object of that address until it is forgotten.
    pub fn endpoint_series(&self, upstream: &str, endpoint: &str) -> Arc<EndpointSeries> {
        let mut held = self.endpoints.lock().unwrap_or_else(PoisonError::into_inner);
        held.entry((upstream.to_owned(), endpoint.to_owned())).or_default().clone()
    }

    /// Lets go of the series no endpoint holds any more: those a config that
    /// a reload refused made for its endpoints (a refused reload naming new
    /// addresses, again and again, grew the map for good). Nothing records
    /// into them, so the families hold nothing of theirs.
    pub fn forget_unheld_endpoints(&self) {
        let mut held = self.endpoints.lock().unwrap_or_else(PoisonError::into_inner);
        held.retain(|_, series| Arc::strong_count(series) > 1);
    }

    /// One try against `endpoint` of `upstream`, counted in the counter its
    /// `series` holds for the outcome (resolved at the outcome's first try,
    /// so only outcomes that happened have a series, as with every family).
    pub fn upstream_try(&self, series: &EndpointSeries, upstream: &str, endpoint: &str, outcome: TryOutcome) {
        let labels = || owned(&["upstream", "endpoint", "outcome"], [upstream, endpoint, outcome.as_str()]);
        series.held(&series.tries[outcome as usize], &self.upstream_requests, labels).inc();
    }

    pub fn endpoint_health(&self, series: &EndpointSeries, upstream: &str, endpoint: &str, healthy: bool) {
        let labels = || owned(&["upstream", "endpoint"], [upstream, endpoint]);
        series.held(&series.healthy, &self.endpoint_healthy, labels).set(i64::from(healthy));
    }

    pub fn endpoint_ejected(&self, series: &EndpointSeries, upstream: &str, endpoint: &str, ejected: bool) {
        let labels = || owned(&["upstream", "endpoint"], [upstream, endpoint]);
        series.held(&series.ejected, &self.endpoint_ejected, labels).set(i64::from(ejected));
    }

    /// A breaker entered `state`; `endpoint` is `None` for the
    /// upstream-wide breaker, whose `series` is its upstream's own.
    pub fn breaker(&self, series: &EndpointSeries, upstream: &str, endpoint: Option<&str>, state: BreakerState) {
        let endpoint = endpoint.unwrap_or("*");
        let to = state as usize;
        let labels = || owned(&["upstream", "endpoint"], [upstream, endpoint]);
        series.held(&series.breaker_state, &self.breaker_state, labels).set(to as i64);
        let labels = || owned(&["upstream", "endpoint", "to"], [upstream, endpoint, state.as_str()]);
        series.held(&series.transitions[to], &self.breaker_transitions, labels).inc();
    }

    pub fn retry(&self, route: &str, upstream: &str) {
        self.record(&self.retries, [route, upstream], |c| {
            c.inc();
        });
    }

    pub fn retry_budget_exhausted(&self, upstream: &str) {
        self.record(&self.retry_budget_exhausted, [upstream], |c| {
            c.inc();
        });
    }

    /// A connection to one of the upstream's endpoints opened (`+1`) or
    /// closed (`-1`).
    pub fn pool_connections(&self, upstream: &str, delta: i64) {
        self.record(&self.upstream_connections, [upstream], |g| {
            g.inc_by(delta);
        });
    }

    pub fn bulkhead_rejected(&self, upstream: &str) {
        self.record(&self.bulkhead_rejected, [upstream], |c| {
            c.inc();
        });
    }

    /// A request refused before it was routed, with `status`.
    pub fn refused(&self, status: http::StatusCode) {
        self.record(&self.refused_requests, [status.as_str()], |c| {
            c.inc();
        });
    }

    pub fn no_healthy_endpoint(&self, upstream: &str) {
        self.record(&self.no_healthy_endpoint, [upstream], |c| {
            c.inc();
        });
    }

    /// The series a plugin's chain link records into, resolved once (when
    /// its route is configured) so that a call never looks a series up.
    /// Plugin series are never removed, so a held handle never goes stale.
    pub fn plugin_series(&self, plugin: &str) -> PluginSeries {
        PluginSeries {
            timers: ["request", "response"]
                .map(|phase| self.plugin_duration.get_or_create(&owned(&["plugin", "phase"], [plugin, phase])).clone()),
            instances_created: self.plugin_instances.get_or_create(&owned(&["plugin"], [plugin])).clone(),
            kept: self.plugin_kept.get_or_create(&owned(&["plugin"], [plugin])).clone(),
        }
    }

    pub fn plugin_failure(&self, plugin: &str, kind: FaultKind) {
        self.record(&self.plugin_failures, [plugin, kind.as_str()], |c| {
            c.inc();
        });
    }

    pub fn reloads(&self, ok: bool) {
        let counter = if ok { &self.reloads_ok } else { &self.reloads_failed };
        counter.inc();
    }

    pub fn set_config_generation(&self, generation: u64) {
        self.config_generation.set(generation);
    }

    /// Whether the watcher's last look at the config's source found one.
    pub fn config_source_up(&self, up: bool) {
        self.config_source_up.set(u64::from(up));
    }

    /// The certificates the config being served presents: those of the
    /// config before that are gone from the series.
    pub fn certificates(&self, presented: &[crate::tls::Presented]) {
        self.certificate_expiry.clear();
        for c in presented {
            let labels: Labels<2> = [("role", c.role.clone()), ("file", c.file.display().to_string())];
            self.certificate_expiry.get_or_create(&labels).set(c.not_after);
        }
    }

    /// The config being served: the one before it is gone from the series.
    pub fn config(&self, config: &crate::config::Config) {
        self.config_info.clear();
        let labels: Labels<2> = [("sha256", config.sha256()), ("source", config.file.display().to_string())];
        self.config_info.get_or_create(&labels).set(1);
    }

    /// The plugins the config being served loaded: those of the config
    /// before that are gone from the series.
    pub fn plugins<'p>(&self, loaded: impl Iterator<Item = &'p crate::plugin::Plugin>) {
        self.plugin_info.clear();
        for p in loaded {
            let source = match &p.settings.oci {
                Some(reference) => reference.to_string(),
                None => p.path.display().to_string(),
            };
            let version = p.described.as_ref().map(|d| d.version.clone()).unwrap_or_default();
            let labels: Labels<4> = [
                ("plugin", p.name.to_string()),
                ("version", version),
                ("sha256", hex::encode(p.sha256)),
                ("source", source),
            ];
            self.plugin_info.get_or_create(&labels).set(1);
        }
    }

    /// The gauge of the plugins' clock tick, for the clock to keep
    /// ([`crate::plugin::Runtime::report_tick`]).
    pub fn plugin_clock_tick(&self) -> Gauge<f64, AtomicU64> {
        self.plugin_clock_tick.clone()
    }

    /// Drops the series of an endpoint that left its upstream (DNS change,
    /// reload): its gauges (health, ejection, breaker state), so a
    /// dashboard does not show a gone endpoint as healthy — or alert on it
    /// as down — for the rest of the process, and its counters (tries by
    /// outcome, breaker transitions), so that endpoints which come and go
    /// (pods behind DNS) do not grow the scrape for ever. Prometheus takes a
    /// counter series that ends, and one that starts again at 0 when the
    /// address comes back.
    ///
    /// What still comes for it — a try in flight as it left, a health
    /// check's or a breaker's change under way, on any endpoint object of
    /// that address (a reload or a new DNS weight makes new ones) — goes to
    /// handles no family holds ([`EndpointSeries`]), rather than making the
    /// series again for good. `endpoint` `*` is the upstream's own breaker.
    pub fn forget_endpoint(&self, upstream: &str, endpoint: &str) {
        let held = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(upstream.to_owned(), endpoint.to_owned()));
        let Some(series) = held else { return };
        let mut gone = series.gone.lock().unwrap_or_else(PoisonError::into_inner);
        *gone = true;
        let key: Labels<2> = [("upstream", upstream.to_owned()), ("endpoint", endpoint.to_owned())];
        self.endpoint_healthy.remove(&key);
        self.endpoint_ejected.remove(&key);
        self.breaker_state.remove(&key);
        let with = |name: &'static str, value: &str| -> Labels<3> {
            [("upstream", upstream.to_owned()), ("endpoint", endpoint.to_owned()), (name, value.to_owned())]
        };
        for outcome in TryOutcome::ALL {
            self.upstream_requests.remove(&with("outcome", outcome.as_str()));
        }
        for to in BreakerState::ALL {
            self.breaker_transitions.remove(&with("to", to.as_str()));
        }
    }

    /// Every series in the OpenMetrics text format, ending in `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Only a label encoder can fail, and ours write plain strings;
            // the partial text is still more use to an operator than none.
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// Applies `op` to the series with `values`, through this thread's cache
    /// when it is there.
    fn record<const N: usize, M, C>(&self, series: &Series<N, M, C>, values: [&str; N], op: impl Fn(&M))
    where
        M: Clone,
        C: MetricConstructor<M>,
    {
        let cached = LOCAL
            .try_with(|cell| {
                // Nothing called from here records again, so the cell is
                // free; if it ever is not, the family path below still counts.
                let Ok(mut slot) = cell.try_borrow_mut() else { return false };
                let local = Local::current(&mut slot, self.id);
                (series.slots)(local).with(&series.family, &series.names, values, &op);
                true
            })
            // The thread is exiting and its cache is gone.
            .unwrap_or(false);
        if !cached {
            op(&series.family.get_or_create(&owned(&series.names, values)));
        }
    }
}

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

fn plugin_histogram() -> Histogram {
    Histogram::new(PLUGIN_BUCKETS)
}

/// An upstream's own series: the time of its tries.
#[derive(Debug, Clone)]
pub struct UpstreamSeries {
    /// `upstream_duration_seconds`.
    pub duration: Histogram,
}

/// The methods and statuses whose `requests_total` counter a route holds.
const HELD_METHODS: usize = 7;
const HELD_STATUSES: usize = 17;

/// A route's series: its `request_duration`, and its `requests_total`
/// counters for the usual methods and statuses, each resolved at its first
/// use and then held, so a routed request looks no series up by its labels.
/// (Counters are never removed, so a held one never goes stale.)
#[derive(Debug, Clone)]
pub struct RouteSeries {
    duration: Histogram,
    requests: Box<[OnceLock<Counter>; HELD_METHODS * HELD_STATUSES]>,
}

impl RouteSeries {
    /// Where the counter for `method` and `status` is held, if it is.
    fn slot(method: &Method, status: u16) -> Option<usize> {
        let m = match *method {
            Method::GET => 0,
            Method::POST => 1,
            Method::HEAD => 2,
            Method::PUT => 3,
            Method::PATCH => 4,
            Method::DELETE => 5,
            Method::OPTIONS => 6,
            _ => return None,
        };
        let s = match status {
            200 => 0,
            201 => 1,
            202 => 2,
            204 => 3,
            206 => 4,
            301 => 5,
            302 => 6,
            304 => 7,
            400 => 8,
            401 => 9,
            403 => 10,
            404 => 11,
            429 => 12,
            500 => 13,
            502 => 14,
            503 => 15,
            504 => 16,
            _ => return None,
        };
        Some(m * HELD_STATUSES + s)
    }
}

/// An endpoint's series — its try counters, one per [`TryOutcome`], its
/// health and ejection gauges, its breaker's state and transitions — each
/// resolved at its first use and then held: a try never looks a series up.
/// One for every endpoint object of an address ([`Metrics::endpoint_series`]),
/// and one for an upstream's own breaker (endpoint `*`). They are removed
/// from their families only when their endpoint has left its upstream
/// ([`Metrics::forget_endpoint`]): what still comes for it then
/// (a try in flight, a health check's result, a breaker's change) counts
/// into a series no scrape shows — made again, it stayed for the rest of
/// the process, an endpoint long gone shown down —, and an endpoint that
/// comes back is a new one, with series of its own.
#[derive(Debug, Default)]
pub struct EndpointSeries {
    tries: [OnceLock<Counter>; 6],
    healthy: OnceLock<Gauge>,
    ejected: OnceLock<Gauge>,
    breaker_state: OnceLock<Gauge>,
    /// By the state entered (its discriminant).
    transitions: [OnceLock<Counter>; 3],
    /// Set, under its lock, as the series leave their families: one first
    /// used after that is a handle of no family.
    gone: Mutex<bool>,
}

impl EndpointSeries {
    /// The series `slot` holds, resolved in `family` under `labels` at its
    /// first use (unless its endpoint is gone).
    fn held<'s, const N: usize, M>(
        &'s self,
        slot: &'s OnceLock<M>,
        family: &Family<Labels<N>, M>,
        labels: impl FnOnce() -> Labels<N>,
    ) -> &'s M
    where
        M: Clone + Default,
        Family<Labels<N>, M>: Metric,
    {
        slot.get_or_init(|| {
            // Held while the series is made: the endpoint cannot be
            // forgotten between the look and the making.
            let gone = self.gone.lock().unwrap_or_else(PoisonError::into_inner);
            if *gone { M::default() } else { family.get_or_create(&labels()).clone() }
        })
    }
}

/// How one try against an endpoint ended, as `upstream_requests_total`
/// labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryOutcome {
    Ok = 0,
    ServerError = 1,
    Connect = 2,
    Timeout = 3,
    Reset = 4,
    /// The client's request body failed (too large, stalled, late).
    Client = 5,
}

impl TryOutcome {
    const ALL: [Self; 6] = [Self::Ok, Self::ServerError, Self::Connect, Self::Timeout, Self::Reset, Self::Client];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ServerError => "5xx",
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Client => "client",
        }
    }
}

/// One plugin's series, as a chain link holds them.
#[derive(Debug, Clone)]
pub struct PluginSeries {
    /// `plugin_call_duration_seconds`, request phase then response phase.
    pub timers: [Histogram; 2],
    /// `plugin_instances_created_total`.
    pub instances_created: Counter,
    /// `plugin_kept_outcomes_total`.
    pub kept: Counter,
}

impl PluginSeries {
    /// Series registered nowhere, for a link no gateway serves (benches).
    pub fn unregistered() -> Self {
        Self {
            timers: [plugin_histogram(), plugin_histogram()],
            instances_created: Counter::default(),
            kept: Counter::default(),
        }
    }
}

/// A method label from a closed set: a client can send any token as the
/// method, and each would otherwise become a series.
fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

fn owned<const N: usize>(names: &[&'static str; N], values: [&str; N]) -> Labels<N> {
    std::array::from_fn(|i| (names[i], values[i].to_owned()))
}

/// One labelled family and where its handles live in a thread's cache.
struct Series<const N: usize, M, C = fn() -> M> {
    names: [&'static str; N],
    family: Family<Labels<N>, M, C>,
    slots: fn(&mut Local) -> &mut Slots<N, M>,
}

/// Registers a family and returns its [`Series`]; the metric type follows
/// from the cache slots it is paired with.
struct Register<'r>(&'r mut Registry);

impl Register<'_> {
    fn labelled<const N: usize, M>(
        &mut self,
        name: &str,
        help: &str,
        names: [&'static str; N],
        slots: fn(&mut Local) -> &mut Slots<N, M>,
    ) -> Series<N, M>
    where
        M: Default,
        Family<Labels<N>, M>: Metric + Clone,
    {
        let family = Family::default();
        self.0.register(name, help, family.clone());
        Series { names, family, slots }
    }

    /// A family whose series are held where they are recorded
    /// ([`EndpointSeries`]), not cached per thread.
    fn held<L, M>(&mut self, name: &str, help: &str) -> Family<L, M>
    where
        Family<L, M>: Metric + Clone + Default,
    {
        let family = Family::default();
        self.0.register(name, help, family.clone());
        family
    }

    /// A histogram family in seconds (the name gets `_seconds`).
    fn histogram<const N: usize>(
        &mut self,
        name: &str,
        help: &str,
        buckets: HistogramFn,
        names: [&'static str; N],
        slots: fn(&mut Local) -> &mut Slots<N, Histogram>,
    ) -> Series<N, Histogram, HistogramFn> {
        let family = Family::new_with_constructor(buckets);
        self.0.register_with_unit(name, help, Unit::Seconds, family.clone());
        Series { names, family, slots }
    }
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// One thread's resolved handles, for one [`Metrics`].
struct Local {
    owner: u64,
    requests: Slots<3, Counter>,
    request_duration: Slots<1, Histogram>,
    retries: Slots<2, Counter>,
    retry_budget_exhausted: Slots<1, Counter>,
    upstream_connections: Slots<1, Gauge>,
    bulkhead_rejected: Slots<1, Counter>,
    no_healthy_endpoint: Slots<1, Counter>,
    refused_requests: Slots<1, Counter>,
    plugin_failures: Slots<2, Counter>,
}

impl Local {
    fn new(owner: u64) -> Self {
        Self {
            owner,
            requests: Slots::default(),
            request_duration: Slots::default(),
            retries: Slots::default(),
            retry_budget_exhausted: Slots::default(),
            upstream_connections: Slots::default(),
            bulkhead_rejected: Slots::default(),
            no_healthy_endpoint: Slots::default(),
            refused_requests: Slots::default(),
            plugin_failures: Slots::default(),
        }
    }

    /// This thread's cache for `owner`, started afresh when it belonged to
    /// another instance (tests make many).
    fn current(slot: &mut Option<Local>, owner: u64) -> &mut Local {
        if !matches!(slot, Some(l) if l.owner == owner) {
            *slot = None;
        }
        slot.get_or_insert_with(|| Local::new(owner))
    }
}

/// One family's handles as one thread has resolved them, keyed by a hash of
/// the borrowed label values so a lookup needs no owned key. Entries under
/// one hash are compared value by value: a collision costs a comparison,
/// never a wrong series.
struct Slots<const N: usize, M, S = RandomState> {
    hasher: S,
    map: HashMap<u64, Vec<(Labels<N>, M)>, BuildPrehashed>,
}

impl<const N: usize, M> Default for Slots<N, M> {
    fn default() -> Self {
        Self::with_hasher(RandomState::default())
    }
}

impl<const N: usize, M, S> Slots<N, M, S> {
    fn with_hasher(hasher: S) -> Self {
        Self { hasher, map: HashMap::default() }
    }
}

impl<const N: usize, M: Clone, S: BuildHasher> Slots<N, M, S> {
    fn with<C: MetricConstructor<M>>(
        &mut self,
        family: &Family<Labels<N>, M, C>,
        names: &[&'static str; N],
        values: [&str; N],
        op: impl FnOnce(&M),
    ) {
        let hash = self.hasher.hash_one(values);
        let entries = self.map.entry(hash).or_default();
        if let Some((_, metric)) = entries.iter().find(|(labels, _)| labels.iter().map(|l| &*l.1).eq(values)) {
            return op(metric);
        }
        let labels = owned(names, values);
        let metric = family.get_or_create_owned(&labels);
        op(&metric);
        entries.push((labels, metric));
    }
}

#[cfg(test)]
mod tests;
