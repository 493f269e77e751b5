//! Snapshots: everything a request needs — routes with their configured
//! plugin chains, upstreams, the router, the TLS acceptor — built completely
//! from a config before it is swapped in, and immutable afterwards.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use crate::config::units::ByteSize;
use crate::config::{self, Config, ConfigError, HttpGrant, OnPluginError, Problems, RetryPolicy, Setting, StoreConfig};
use crate::plugin::caps::Caps;
use crate::plugin::caps::store::StoreBackend;
use crate::plugin::{ChainLink, ConfigureError, Plugin, Runtime, registry};
use crate::routing::{Rewrite, Router};
use crate::telemetry::{AccessLogWriter, Metrics, RouteSeries};
use crate::tls;
use crate::upstream::Upstream;
use crate::upstream::discovery::{Resolved, Resolver};
use crate::upstream::pool::TlsSettings;

/// Process-wide things snapshots are built with; they outlive every snapshot.
#[derive(Clone)]
pub struct Env {
    pub runtime: Arc<Runtime>,
    pub metrics: Arc<Metrics>,
    /// Where background tasks (health checks, DNS) run.
    pub control: tokio::runtime::Handle,
    pub workers: usize,
    pub access_log: Option<AccessLogWriter>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").field("workers", &self.workers).finish()
    }
}

/// A route, ready to serve.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    /// Upstreams with their cumulative weights, for a weighted pick.
    targets: Vec<(Arc<Upstream>, u32)>,
    pub rewrite: Option<Rewrite>,
    /// `X-Forwarded-Prefix` for a request whose path `strip_prefix`
    /// shortened: the prefix, for the upstream's links.
    pub forwarded_prefix: Option<HeaderValue>,
    pub timeout: Duration,
    pub try_timeout: Option<Duration>,
    pub retries: RetryPolicy,
    pub max_body: u64,
    /// The protocols a request may upgrade to.
    pub upgrades: config::Upgrades,
    pub on_plugin_error: OnPluginError,
    pub chain: Vec<ChainLink>,
    pub needs_request_body: bool,
    pub needs_response_body: bool,
    pub has_response_hooks: bool,
    /// Its metric series, held rather than looked up per request.
    pub series: RouteSeries,
}

impl Route {
    /// The upstream for a request, given a uniformly random `r`: the only
    /// one, or one of a weighted split (canary 5% → 25% → 100%, blue/green).
    /// None for a route whose plugins answer every request themselves.
    pub fn pick_target(&self, r: u32) -> Option<&Arc<Upstream>> {
        let total = self.targets.last().map_or(1, |(_, cumulative)| (*cumulative).max(1));
        let point = r % total;
        let i = self.targets.partition_point(|(_, cumulative)| *cumulative <= point);
        self.targets.get(i.min(self.targets.len().saturating_sub(1))).map(|(u, _)| u)
    }

    /// The upstreams of the route, with their weights.
    pub fn upstreams(&self) -> impl Iterator<Item = (&Arc<Upstream>, u32)> {
        let mut previous = 0;
        self.targets.iter().map(move |(u, c)| {
            let w = c - previous;
            previous = *c;
            (u, w)
        })
    }
}

/// Everything a request needs, fixed for its lifetime.
pub struct Snapshot {
    pub generation: u64,
    pub config: Config,
    pub router: Router,
    pub routes: Vec<Route>,
    pub upstreams: Vec<Arc<Upstream>>,
    pub plugins: BTreeMap<String, Arc<Plugin>>,
    /// Upstreams made for origins granted to plugins.
    pub origins: HashMap<HttpGrant, Arc<Upstream>>,
    pub tls: Option<Arc<tls::Listening>>,
    /// The plugins' store: the previous snapshot's while `[store]` is
    /// unchanged, or either is in memory (whose counters live in it); new
    /// connections when a Redis `[store]` changed (`store_for`).
    pub store: StoreBackend,
    /// The `[store]` that `store` was made from (a config's may differ:
    /// the in-memory store's changes wait for a restart).
    pub store_config: StoreConfig,
    /// The certificates it presents, with when each expires.
    pub certificates: Vec<tls::Presented>,
    pub metrics: Arc<Metrics>,
    pub access_log: Option<AccessLogWriter>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("routes", &self.routes.len())
            .field("upstreams", &self.upstreams.len())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Snapshot {
    /// The config's upstreams and those made for plugins' origins.
    pub fn all_upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.upstreams.iter().chain(self.origins.values())
    }

    /// Drops its plugins' idle instances: a reload's new links need room
    /// in the engine's pool, which a burst of async calls (one instance
    /// each) could have left full of idle ones — and the reload refused.
    pub fn drop_idle_instances(&self) {
        for link in self.routes.iter().flat_map(|r| &r.chain) {
            link.drop_idle();
        }
    }

    /// Once this snapshot serves: starts its new upstreams (their gauges and
    /// background tasks, [`Upstream::start`]). Not as they are built: a
    /// build that a refused reload threw away set the gauges, and ran health
    /// checks, for a config that never served (a serving endpoint that was
    /// down showed healthy until it changed again).
    pub fn start(&self) {
        for u in self.all_upstreams() {
            u.start();
        }
        self.metrics.config(&self.config);
        self.metrics.certificates(&self.certificates);
        self.metrics.plugins(self.plugins.values().map(|p| &**p));
        // What a tag named, this config runs: the one to fall back on.
        for p in self.plugins.values() {
            p.kept.remember();
        }
    }

    /// After a reload to `next`: stops the tasks of the upstreams `next`
    /// did not carry over, and forgets the per-endpoint gauges (health,
    /// ejection, breaker) of endpoints it has not, which would otherwise
    /// show their last value for the rest of the process.
    pub fn retire(&self, next: &Snapshot) {
        let labels = |s: &Snapshot| -> HashSet<(Arc<str>, Arc<str>)> {
            s.all_upstreams()
                .flat_map(|u| {
                    let endpoints = u.endpoints().into_iter().map(|e| (u.name.clone(), e.address.clone()));
                    // The upstream-wide breaker's endpoint is `*`.
                    endpoints.chain([(u.name.clone(), Arc::from("*"))])
                })
                .collect()
        };
        for old in self.all_upstreams() {
            if !next.all_upstreams().any(|new| Arc::ptr_eq(old, new)) {
                old.stop();
            }
        }
        if let Some(old) = &self.tls
            && !next.tls.as_ref().is_some_and(|new| Arc::ptr_eq(old, new))
        {
            old.replace();
        }
        let kept = labels(next);
        for (upstream, endpoint) in labels(self).difference(&kept) {
            self.metrics.forget_endpoint(upstream, endpoint);
        }
    }
}

/// Warns when the instances the plugin pools may keep exceed `max_instances`:
/// a pooled use of a plugin that waits on I/O keeps one instance for each
/// request it had in flight at once, up to `max_idle_per_worker` a worker;
/// any other pooled use, one a worker. Once they fill the engine's pool, a
/// request that needs a new instance fails (`pool_full`).
/// `max_instances` and `workers` are those in force, `env`'s (set at start:
/// a reload's new values wait for a restart).
fn warn_if_warm_instances_may_fill_the_pool(config: &Config, routes: &[Route], env: &Env) {
    let workers = env.workers;
    let max_idle = config.plugins.max_idle_per_worker;
    let warm: usize = routes
        .iter()
        .flat_map(|r| &r.chain)
        .map(|l| match (l.is_pooled(), l.is_async()) {
            (false, _) => 0,
            (true, true) => workers.saturating_mul(max_idle),
            (true, false) => workers,
        })
        .fold(0, usize::saturating_add);
    let max = usize::try_from(env.runtime.limits().max_instances).unwrap_or(usize::MAX);
    if warm > max {
        tracing::warn!(
            warm,
            max_instances = max,
            "the plugins' warm instances may fill [plugins] max_instances (uses of plugins that wait on I/O keep \
             one a request in flight, up to max_idle_per_worker a worker): requests would then fail pool_full; \
             raise max_instances or lower max_idle_per_worker"
        );
    }
}

/// Builds a snapshot: TLS, upstreams (resolving discovered ones once),
/// plugins and each route's config hooks. Unchanged upstreams are carried
/// over from `previous` with their pools, health state and tasks.
pub fn build(config: Config, env: &Env, previous: Option<&Snapshot>, generation: u64) -> Result<Snapshot, ConfigError> {
    let mut problems = Problems::new(&config.file, &config.source);
    let tls = match &config.server.tls {
        None => None,
        Some(t) => {
            // Before the files are read for the acceptor: a write after
            // this changes the digest, and the next reload builds it again.
            let files = tls::files_digest(tls::server_files(t));
            let kept = previous
                .and_then(|p| p.tls.as_ref().filter(|l| l.files == files && p.config.server.tls.as_ref() == Some(t)));
            match kept {
                Some(kept) => Some(kept.clone()),
                None => match tls::server_config(t) {
                    Ok(c) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(c);
                        Some(Arc::new(tls::Listening::new(acceptor, files, t.forward_client_cert)))
                    }
                    Err(e) => {
                        problems.at_line(
                            None,
                            "server.tls",
                            e.to_string(),
                            "check the certificate and key files (PEM)",
                        );
                        None
                    }
                },
            }
        }
    };
    let mut upstreams = Vec::with_capacity(config.upstreams.len());
    for u in &config.upstreams {
        // Read once, not for each upstream it is compared with.
        let files = tls_files(u);
        let unchanged = |p: &Snapshot, old: &Upstream| {
            old.config == *u
                && old.tls_files() == files
                // A discovered upstream's resolver and watch were made with `[dns]`.
                && (u.discovery.is_none() || p.config.dns == config.dns)
        };
        if let Some(old) = previous.and_then(|p| p.upstreams.iter().find(|old| unchanged(p, old))) {
            upstreams.push(old.clone());
            continue;
        }
        // Built anew (its settings changed): its endpoints' state (health,
        // ejection, breakers, latency) comes along from the one it replaces.
        let before = previous.and_then(|p| p.upstreams.iter().find(|old| old.name.as_ref() == u.name));
        match new_upstream(u, &config, env, before.map(|b| &**b)) {
            Ok(up) => upstreams.push(Arc::new(up)),
            Err((what, fix)) => problems.at_line(None, format!("upstreams.{}", u.name), what, fix),
        }
    }
    let origins = origin_upstreams(&config, env, previous, &mut problems);
    let (store, store_config) = store_for(&config, env, previous, &mut problems);
    let plugins = load_plugins(&config, env, &store, &upstreams, &origins, &mut problems);
    let max_idle = config.plugins.max_idle_per_worker;
    let mut routes = Vec::with_capacity(config.routes.len());
    for (i, rc) in config.routes.iter().enumerate() {
        let mut chain = Vec::new();
        for u in &rc.plugins {
            let Some(plugin) = plugins.get(&u.name) else { continue };
            match ChainLink::configure(
                plugin.clone(),
                u.config_json.clone(),
                u.key.clone(),
                env.workers,
                max_idle,
                &env.control,
            ) {
                Ok(link) => chain.push(link.with_series(env.metrics.plugin_series(&plugin.name))),
                Err(ConfigureError::Refused(message)) => problems.at_line(
                    u.line,
                    format!("{}.config", u.key),
                    format!("plugin `{}` refused its config: {message}{}", u.name, read_from(&u.files)),
                    config_fix(plugin),
                ),
                Err(ConfigureError::NoInstance { detail, pool_full }) => problems.at_line(
                    u.line,
                    u.key.clone(),
                    format!("no instance of plugin `{}` could be made: {detail}", u.name),
                    if pool_full {
                        format!(
                            "raise `[plugins] max_instances` ({} in force) above the plugin uses on routes ({} \
                             here), with room for the instances every worker keeps warm and in use ({} workers; \
                             a restart applies it)",
                            env.runtime.limits().max_instances,
                            config.routes.iter().map(|r| r.plugins.len()).sum::<usize>(),
                            env.workers
                        )
                    } else {
                        format!(
                            "check `{}`'s `max_memory` against what it needs at start, or rebuild it with the \
                             wasmgate SDK for this gateway's WIT world",
                            u.name
                        )
                    },
                ),
            }
        }
        check_body_fits(i, rc, &chain, &mut problems);
        let mut cumulative = 0u32;
        let targets: Vec<(Arc<Upstream>, u32)> = rc
            .targets
            .iter()
            .filter(|t| t.weight > 0)
            .filter_map(|t| {
                let name = &config.upstreams.get(t.upstream)?.name;
                let up = upstreams.iter().find(|u| u.config.name == *name)?;
                cumulative = cumulative.saturating_add(t.weight);
                Some((up.clone(), cumulative))
            })
            .collect();
        if targets.is_empty() && !rc.targets.is_empty() {
            continue;
        }
        routes.push(Route {
            name: Arc::from(rc.name.as_str()),
            targets,
            rewrite: rc.rewrite.clone(),
            forwarded_prefix: match &rc.rewrite {
                Some(Rewrite::StripPrefix(prefix)) if !prefix.is_empty() => HeaderValue::from_str(prefix).ok(),
                _ => None,
            },
            timeout: rc.timeout,
            try_timeout: rc.try_timeout,
            retries: rc.retries.clone(),
            max_body: rc.max_body,
            upgrades: rc.upgrades.clone(),
            on_plugin_error: rc.on_plugin_error,
            needs_request_body: chain.iter().any(|l| l.info.request_body && l.info.on_request),
            needs_response_body: chain.iter().any(|l| l.info.response_body && l.info.on_response),
            has_response_hooks: chain.iter().any(|l| l.info.on_response),
            series: env.metrics.route_series(&rc.name),
            chain,
        });
    }
    if !problems.is_empty() {
        return Err(problems.into_error());
    }
    warn_if_warm_instances_may_fill_the_pool(&config, &routes, env);
    let certificates = tls::presented(&config);
    warn_of_expiring(&certificates, std::time::SystemTime::now());
    let router = Router::new(&config.routes);
    Ok(Snapshot {
        generation,
        config,
        router,
        routes,
        upstreams,
        plugins,
        origins,
        tls,
        store,
        store_config,
        certificates,
        metrics: env.metrics.clone(),
        access_log: env.access_log.clone(),
    })
}

/// The store a config's plugins use, and the `[store]` it was made from.
/// The first build makes it. A reload keeps the one running unless it is
/// Redis and the config's is another Redis `[store]` (its URL, timeout or
/// TLS files: a rotated client certificate), which gets new connections:
/// the counters are in Redis either way. A change to or from the in-memory
/// store, or of its limits, waits for a restart (its counters live in it)
/// and says so. (A new store is said once its config serves: `reload`.)
fn store_for(
    config: &Config,
    env: &Env,
    previous: Option<&Snapshot>,
    problems: &mut Problems<'_>,
) -> (StoreBackend, StoreConfig) {
    let running = previous.map(|p| (&p.store, &p.store_config));
    if let Some((store, made_from)) = running {
        if *made_from == config.store {
            return (store.clone(), made_from.clone());
        }
        if !(store.is_remote() && matches!(config.store, StoreConfig::Redis { .. })) {
            tracing::warn!("[store] changed from or to the in-memory store, or its limits; it takes effect at restart");
            return (store.clone(), made_from.clone());
        }
    }
    match StoreBackend::from_config(&config.store, &env.control) {
        Ok(store) => (store, config.store.clone()),
        Err(e) => {
            problems.at_line(None, "store", e, "check [store] url and [store.tls]");
            // The build fails with the problem: what it holds is never used.
            running.map_or_else(|| (StoreBackend::unused(), config.store.clone()), |(s, m)| (s.clone(), m.clone()))
        }
    }
}

/// How long before a certificate expires a load warns of it.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// Warns of each certificate presented that has expired (clients and
/// upstreams refuse it), or expires within [`EXPIRY_WARNING`] of `now`.
fn warn_of_expiring(certificates: &[tls::Presented], now: std::time::SystemTime) {
    let now = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    for (c, days) in expiring(certificates, now) {
        let (role, file) = (&c.role, c.file.display());
        match days {
            None => tracing::warn!(%role, %file, "the certificate has expired: peers refuse it; replace it"),
            Some(days) => tracing::warn!(%role, %file, days, "the certificate expires in under 30 days; renew it"),
        }
    }
}

/// The certificates a load warns of at `now` (Unix seconds): each expired
/// (`None`), or expiring within [`EXPIRY_WARNING`] (`Some`: whole days
/// left).
fn expiring(certificates: &[tls::Presented], now: i64) -> Vec<(&tls::Presented, Option<i64>)> {
    let within = i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX);
    certificates
        .iter()
        .filter_map(|c| match c.not_after.saturating_sub(now) {
            left if left <= 0 => Some((c, None)),
            left if left < within => Some((c, Some(left / 86_400))),
            _ => None,
        })
        .collect()
}

/// One upstream per origin granted to a plugin (`https://idp.example.com`),
/// so plugin requests get the same pools, timeouts and breakers as proxied
/// traffic. Carried over from the previous snapshot when unchanged.
fn origin_upstreams(
    config: &Config,
    env: &Env,
    previous: Option<&Snapshot>,
    problems: &mut Problems<'_>,
) -> HashMap<HttpGrant, Arc<Upstream>> {
    let mut out = HashMap::new();
    for settings in config.plugins.settings.values() {
        for grant in &settings.grants.http {
            let HttpGrant::Origin { https, host, port } = grant else { continue };
            if out.contains_key(grant) {
                continue;
            }
            if let Some(old) = previous.and_then(|p| p.origins.get(grant)) {
                out.insert(grant.clone(), old.clone());
                continue;
            }
            let origin = HttpGrant::origin_string(*https, host, *port);
            let upstream = config::UpstreamConfig {
                name: origin.clone(),
                endpoints: vec![config::EndpointConfig { address: format!("{host}:{port}"), weight: 1 }],
                discovery: None,
                connect_timeout: Duration::from_secs(2),
                request_timeout: None,
                idle_timeout: Duration::from_secs(90),
                read_timeout: config::READ_TIMEOUT,
                max_idle_per_endpoint: 16,
                max_streams_per_connection: 100,
                balance: config::Balance::RoundRobin,
                hash_on: None,
                protocol: config::Protocol::Http1,
                tls: https.then(|| config::UpstreamTls { ca: None, server_name: None, client_cert: None }),
                bulkhead: None,
                health: None,
                outlier: None,
                breaker: None,
                endpoint_breaker: None,
                retry_budget: config::RetryBudgetConfig::default(),
            };
            match new_upstream(&upstream, config, env, None) {
                Ok(u) => {
                    out.insert(grant.clone(), Arc::new(u));
                }
                Err((what, fix)) => problems.at_line(None, format!("grants.http: {origin}"), what, fix),
            }
        }
    }
    out
}

/// A new upstream: its TLS client config, and for discovered upstreams the
/// first resolution (a name that does not resolve fails the load).
fn new_upstream(
    u: &config::UpstreamConfig,
    config: &Config,
    env: &Env,
    before: Option<&Upstream>,
) -> Result<Upstream, (String, String)> {
    // Before the files are read for the connector: a write after this
    // changes the digest, and the next reload builds it again.
    let files = tls_files(u);
    let tls = match &u.tls {
        None => None,
        Some(t) => {
            let client = tls::client_config(t, u.protocol)
                .map_err(|e| (e.to_string(), "check the CA, certificate and key files (PEM)".to_owned()))?;
            // A name resolved by `dns` is the name its endpoints' certificates
            // carry (nginx's `proxy_ssl_name`), not the addresses it resolved
            // to; static and SRV endpoints are checked as they are written.
            let named = match (&t.server_name, &u.discovery) {
                (Some(n), _) => Some(n.as_str()),
                // Fully qualified (`users.svc.cluster.local.`): certificates
                // name it without the root's dot.
                (None, Some(config::Discovery::Dns { host, .. })) => Some(host.strip_suffix('.').unwrap_or(host)),
                (None, _) => None,
            };
            let server_name = match named {
                Some(n) => {
                    Some(tls::server_name(t, n).map_err(|e| (e.to_string(), "set a valid server_name".to_owned()))?)
                }
                None => None,
            };
            Some(TlsSettings { connector: tokio_rustls::TlsConnector::from(client), server_name })
        }
    };
    // A reload that rebuilds a discovered upstream (its settings, its TLS
    // files or `[dns]` changed) while the nameservers fail starts from the
    // set the one it replaces has, as a failed re-resolution keeps it, and
    // its watch goes on asking: the whole reload (a rotated certificate,
    // new routes) was refused, and not tried again until the next change.
    let previous: Option<Vec<Resolved>> =
        before.filter(|b| b.config.discovery.is_some() && b.config.discovery == u.discovery).map(|b| {
            b.endpoints()
                .iter()
                .filter_map(|e| {
                    Some(Resolved { addr: e.address.parse().ok()?, weight: e.weight, priority: e.priority })
                })
                .collect()
        });
    let resolved = match &u.discovery {
        None => None,
        Some(what) => match (resolve_now(&config.dns, what, &env.control, previous.as_deref()), previous) {
            (Ok(resolved), _) => Some(resolved),
            (Err((why, _)), Some(previous)) => {
                tracing::warn!(
                    upstream = %u.name,
                    "{why}; keeping the endpoints it had ({}) and asking again",
                    previous.len()
                );
                Some((previous, config.dns.min_ttl))
            }
            (Err(e), None) => return Err(e),
        },
    };
    let control = Some((&env.control, &config.dns));
    let carried = before.map(|b| b.endpoints_for(u)).unwrap_or_default();
    Ok(Upstream::new(u, env.workers, env.metrics.clone(), tls, resolved, control, carried).with_tls_files(files))
}

/// A digest of an upstream's TLS files (CA, client certificate and key) as
/// they are on disk now; `None` without TLS. A file that cannot be read
/// counts as its own content, so that it changes when the file appears.
fn tls_files(u: &config::UpstreamConfig) -> Option<[u8; 32]> {
    let t = u.tls.as_ref()?;
    let files = t.ca.iter().chain(t.client_cert.iter().flat_map(|(cert, key)| [cert, key]));
    Some(tls::files_digest(files.map(PathBuf::as_path)))
}

/// Resolves once on the control runtime, waiting here (this may run inside
/// another runtime, e.g. a test's, where `block_on` is not allowed).
fn resolve_now(
    dns: &config::DnsConfig,
    what: &config::Discovery,
    control: &tokio::runtime::Handle,
    current: Option<&[Resolved]>,
) -> Result<(Vec<Resolved>, Duration), (String, String)> {
    let (dns, what, current) = (dns.clone(), what.clone(), current.unwrap_or_default().to_vec());
    let resolving = async move {
        match Resolver::new(&dns) {
            Ok(r) => r.resolve(&what, &current).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    };
    let fix = "check the name and the [dns] nameservers".to_owned();
    match crate::control::wait(control, Some(Duration::from_secs(30)), resolving) {
        Some(Ok((set, ttl))) if !set.is_empty() => Ok((set, ttl)),
        Some(Ok(_)) => Err(("the name resolved to no addresses".to_owned(), fix)),
        Some(Err(e)) => Err((format!("cannot resolve: {e}"), fix)),
        None => Err(("DNS resolution did not finish within 30 s".to_owned(), fix)),
    }
}

/// Loads every plugin a route uses or `[plugin.NAME]` configures, each with
/// the capabilities it was granted.
fn load_plugins(
    config: &Config,
    env: &Env,
    store: &StoreBackend,
    upstreams: &[Arc<Upstream>],
    origins: &HashMap<HttpGrant, Arc<Upstream>>,
    problems: &mut Problems<'_>,
) -> BTreeMap<String, Arc<Plugin>> {
    let runtime: &Arc<Runtime> = &env.runtime;
    let pc = &config.plugins;
    // name → (line, key) of its first mention, for messages.
    let mut wanted: BTreeMap<&str, (Option<usize>, String)> = BTreeMap::new();
    for r in &config.routes {
        for u in &r.plugins {
            wanted.entry(u.name.as_str()).or_insert_with(|| (u.line, format!("{}.use", u.key)));
        }
    }
    for (name, s) in &pc.settings {
        wanted.entry(name.as_str()).or_insert_with(|| (s.line, format!("plugin.{name}")));
    }
    let default_settings = config::PluginSettings {
        isolation: config::Isolation::Pooled,
        file: None,
        oci: None,
        signed_by: Vec::new(),
        sha256: None,
        limits: pc.defaults,
        grants: config::Grants::default(),
        line: None,
    };
    let mut pulled = pull_all(pc, &env.control);
    let mut loaded = BTreeMap::new();
    for (name, (line, key)) in wanted {
        let settings = pc.settings.get(name).unwrap_or(&default_settings);
        if settings.limits.max_memory > runtime.limits().max_memory {
            problems.at_line(
                line,
                format!("plugin.{name}.max_memory"),
                format!(
                    "max_memory {} is above the {} bytes the plugin engine was started with",
                    settings.limits.max_memory,
                    runtime.limits().max_memory
                ),
                "restart the gateway to raise the engine's memory ceiling, or lower max_memory",
            );
            continue;
        }
        let (path, pulled) = match &settings.oci {
            Some(reference) => match pulled.remove(name).unwrap_or_else(|| {
                Err((
                    "the pull did not complete (the gateway's control runtime stopped)".to_owned(),
                    "start the gateway again".to_owned(),
                ))
            }) {
                Ok(pulled) => {
                    if let Some(why) = &pulled.stale {
                        tracing::warn!(plugin = name, reference = %reference, "the registry was not reached: {why}");
                    }
                    if let Some(signer) = &pulled.signer {
                        tracing::info!(plugin = name, reference = %reference, key = %signer.display(), "signature verified");
                    }
                    (pulled.path.clone(), Some(pulled))
                }
                Err((what, fix)) => {
                    problems.at_line(
                        settings.line.or(line),
                        format!("plugin.{name}.oci"),
                        format!("plugin `{name}`: {what}"),
                        fix,
                    );
                    continue;
                }
            },
            None => match registry::plugin_path(pc.dir.as_deref(), name, settings) {
                Some(path) => (path, None),
                None => continue,
            },
        };
        let caps = match Caps::new(name, &settings.grants, settings.isolation, store, upstreams, origins) {
            Ok(c) => c,
            Err(what) => {
                problems.at_line(
                    line,
                    format!("plugin.{name}.grants"),
                    what,
                    "define the upstream, or grant an origin",
                );
                continue;
            }
        };
        match registry::load(runtime, name, &path, settings, &pc.cache_dir, pc.dir.as_deref(), caps) {
            Ok(mut p) => {
                if let Some(pulled) = pulled {
                    p.kept = pulled.kept;
                }
                loaded.insert(name.to_owned(), Arc::new(p));
            }
            Err(e) => problems.at_line(line, key, format!("plugin `{name}`: {}", e.what), e.fix),
        }
    }
    loaded
}

/// The most a pull may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(60);

/// Pulls every plugin from a registry into the cache (or finds it there),
/// at once on the control runtime: each within [`PULL_TIMEOUT`], and so all
/// of them.
fn pull_all(
    pc: &config::PluginsConfig,
    control: &tokio::runtime::Handle,
) -> BTreeMap<String, Result<crate::oci::Pulled, (String, String)>> {
    let pulls: Vec<_> = pc
        .settings
        .iter()
        .filter_map(|(name, settings)| {
            let reference = settings.oci.clone()?;
            let registry = pc.registries.get(&reference.registry).cloned().unwrap_or_default();
            let (pin, keys, cache_dir) = (settings.sha256, settings.signed_by.clone(), pc.cache_dir.clone());
            let name = name.clone();
            Some(async move {
                let limit = registry::MAX_PLUGIN_BYTES;
                let pulling = crate::oci::pull(&reference, pin, &keys, &registry, &cache_dir, limit);
                let pulled = match tokio::time::timeout(PULL_TIMEOUT, pulling).await {
                    Ok(Ok(pulled)) => Ok(pulled),
                    Ok(Err(e)) => Err((format!("cannot pull {reference}: {e}"), e.fix(&reference.registry))),
                    Err(_) => Err((
                        format!("pulling {reference} did not finish within {} s", PULL_TIMEOUT.as_secs()),
                        "check that the registry is reachable and answers".to_owned(),
                    )),
                };
                (name, pulled)
            })
        })
        .collect();
    if pulls.is_empty() {
        return BTreeMap::new();
    }
    crate::control::wait(control, None, futures::future::join_all(pulls)).unwrap_or_default().into_iter().collect()
}

/// The fix for a config `plugin` refused: where its keys are listed (for
/// a pulled plugin, the component in the cache: the bytes that refused).
fn config_fix(plugin: &Plugin) -> String {
    let listed = match plugin.has_config_schema {
        true => format!("`wasmgate inspect {}` lists the keys it takes", plugin.path.display()),
        false => "its README lists the keys".to_owned(),
    };
    format!("correct the `config` table for `{}` ({listed})", plugin.name)
}

/// Which config keys came from files (`config_files`), for a plugin's
/// refusal: its message names a key, and the fix is in the file.
fn read_from(files: &[(String, std::path::PathBuf)]) -> String {
    if files.is_empty() {
        return String::new();
    }
    let list: Vec<String> = files.iter().map(|(key, path)| format!("`{key}` from {}", path.display())).collect();
    format!(" (read {})", list.join(", "))
}

/// A body a plugin reads is collected whole and copied into the plugin's
/// memory, beside the plugin's own data: a route whose plugins read bodies
/// may take bodies of at most half the smallest memory among them (a
/// larger one is buffered by the gateway only to fail in the plugin).
fn check_body_fits(i: usize, rc: &config::RouteConfig, chain: &[ChainLink], problems: &mut Problems<'_>) {
    let reads_body =
        |l: &&ChainLink| (l.info.request_body && l.info.on_request) || (l.info.response_body && l.info.on_response);
    let Some(link) = chain.iter().filter(reads_body).min_by_key(|l| l.plugin.settings.limits.max_memory) else {
        return;
    };
    let memory = link.plugin.settings.limits.max_memory;
    if rc.max_body > memory / 2 {
        let name = &link.plugin.name;
        problems.at_line(
            rc.line,
            format!("routes[{i}].max_body"),
            format!(
                "plugin `{name}` reads bodies into its memory ({}): a max_body of {} would not fit beside it",
                ByteSize(memory).shown(),
                ByteSize(rc.max_body).shown()
            ),
            format!(
                "max_body = {} (at most) on this route, or raise plugin.{name}.max_memory",
                ByteSize(memory / 2).written()
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A load warns of a certificate that has expired, or expires within
    /// 30 days (with the whole days left), and of no other.
    #[test]
    fn a_load_warns_of_certificates_expired_or_expiring_soon() {
        const DAY: i64 = 86_400;
        let now = 1_800_000_000;
        let cert = |file: &str, not_after| tls::Presented {
            role: "listener".to_owned(),
            file: PathBuf::from(file),
            not_after,
        };
        let certs = [
            cert("expired", now - DAY),
            cert("this-second", now),
            cert("tomorrow", now + DAY + 1),
            cert("in-29-days", now + 30 * DAY - 1),
            cert("in-30-days", now + 30 * DAY),
            cert("next-year", now + 365 * DAY),
        ];
        let warned: Vec<(&str, Option<i64>)> =
            expiring(&certs, now).into_iter().map(|(c, days)| (c.file.to_str().unwrap_or_default(), days)).collect();
        assert_eq!(warned, [("expired", None), ("this-second", None), ("tomorrow", Some(1)), ("in-29-days", Some(29))]);
    }
}
