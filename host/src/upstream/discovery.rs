//! DNS service discovery: turns an upstream's `dns = "host:port"` or
//! `srv = "_http._tcp.name"` into endpoints, and keeps them current.
//!
//! The gateway resolves each discovered upstream once at load ([`Resolver::resolve`]),
//! so a name that does not resolve is a load error naming the name and the
//! nameservers asked. [`watch`] then re-resolves on the records' TTL (clamped to
//! `[dns] min_ttl..=max_ttl`) and hands the balancer a new endpoint set only when
//! it changed. A failed resolution (a nameserver that does not answer, or
//! answers SERVFAIL or REFUSED) never empties an upstream: the last good set
//! stays, and the name is retried with backoff. An answer that the name is
//! gone (NXDOMAIN, no records, no SRV target with an address), given twice
//! and for the TTL the name's records had, does (RFC 8767: stale data is for
//! when the authorities cannot be reached): a Service scaled to zero or
//! deleted stops receiving traffic at its old addresses, which another
//! workload may have by then. Until the name comes back, requests are
//! answered 503.
//!
//! hickory's own response cache is bypassed: every resolution asks the
//! nameservers, so the TTL that paces re-resolution is ours alone and a record
//! change is seen at the next tick, not when a second cache expires.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ProtocolConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::config::{Discovery, DnsConfig, Family};

/// One resolved endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resolved {
    pub addr: SocketAddr,
    pub weight: u32,
    /// The SRV record's priority (0 for an A/AAAA endpoint).
    pub priority: u16,
}

/// Why a name gave no endpoints.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Config validation rejects these too; checked again here because a zero
    /// `min_ttl` would make [`watch`] re-resolve in a tight loop.
    #[error("[dns] min_ttl ({min_ttl:?}) must be above zero and at most max_ttl ({max_ttl:?})")]
    TtlBounds { min_ttl: Duration, max_ttl: Duration },
    #[error("cannot read the system DNS configuration (/etc/resolv.conf): {source}")]
    SystemConfig {
        #[source]
        source: Box<NetError>,
    },
    #[error("cannot build the DNS resolver: {source}")]
    Build {
        #[source]
        source: Box<NetError>,
    },
    #[error("`{name}` does not exist (NXDOMAIN from {nameservers})")]
    NxDomain { name: String, nameservers: String },
    #[error("`{name}` has no {kind} records (asked {nameservers})")]
    NoRecords { name: String, kind: &'static str, nameservers: String },
    #[error("no target of SRV `{name}`, at any priority ({targets}), has an A or AAAA record (asked {nameservers})")]
    NoTargetAddress { name: String, targets: String, nameservers: String },
    #[error("resolving {kind} of `{name}` via {nameservers} failed: {source}")]
    Lookup {
        name: String,
        kind: &'static str,
        nameservers: String,
        /// Boxed: hickory's error is large, and this one rides every `Result`.
        #[source]
        source: Box<NetError>,
    },
}

impl DiscoveryError {
    /// Whether the nameservers answered that the name is gone, rather than
    /// failed to answer.
    pub fn says_gone(&self) -> bool {
        matches!(self, Self::NxDomain { .. } | Self::NoRecords { .. } | Self::NoTargetAddress { .. })
    }
}

/// Resolves discovery names. Cheap to clone: clones share connections, so one
/// resolver serves every upstream.
#[derive(Debug, Clone)]
pub struct Resolver {
    inner: TokioResolver,
    /// Named in errors so a load failure says which servers were asked.
    nameservers: String,
    min_ttl: Duration,
    max_ttl: Duration,
    family: Family,
}

impl Resolver {
    /// Builds a resolver on `config.nameservers` (UDP, then TCP when an answer
    /// is truncated), or on the system's configuration when there are none.
    pub fn new(config: &DnsConfig) -> Result<Self, DiscoveryError> {
        if config.min_ttl.is_zero() || config.min_ttl > config.max_ttl {
            return Err(DiscoveryError::TtlBounds { min_ttl: config.min_ttl, max_ttl: config.max_ttl });
        }
        let (resolver_config, mut options, nameservers) = if config.nameservers.is_empty() {
            let (system, options) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| DiscoveryError::SystemConfig { source: Box::new(e) })?;
            let listed = describe_system(&system);
            (system, options, listed)
        } else {
            let servers = config
                .nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::new(ProtocolConfig::Udp);
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::new(ProtocolConfig::Tcp);
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            let mut options = ResolverOpts::default();
            // Explicit nameservers are the whole truth: /etc/hosts must not
            // shadow what they answer.
            options.use_hosts_file = ResolveHosts::Never;
            let listed = config.nameservers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            (ResolverConfig::from_name_servers(servers), options, listed)
        };
        // `timeout` bounds a whole lookup, every nameserver and UDP
        // retransmission included; hickory's own retries would multiply it.
        options.timeout = config.timeout;
        options.attempts = 0;
        // The TTL that paces re-resolution is ours; a second cache would
        // serve stale answers. Each lookup also clears its entry (see
        // `lookup`), since a zero-capacity cache may still hold an entry
        // until its housekeeping runs.
        options.cache_size = 0;
        let inner = TokioResolver::builder_with_config(resolver_config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .map_err(|e| DiscoveryError::Build { source: Box::new(e) })?;
        Ok(Self { inner, nameservers, min_ttl: config.min_ttl, max_ttl: config.max_ttl, family: config.family })
    }

    /// Resolves once: A and AAAA of host (each with `port`, weight 1), or SRV
    /// (target's A/AAAA with the SRV port; weight = SRV weight, 0 → 1; its
    /// priority, which the balancer honours). Returns the endpoints sorted
    /// (deterministic order) and the TTL to wait before the next
    /// resolution: the smallest record TTL, clamped to [min_ttl, max_ttl].
    ///
    /// Never returns an empty set: no records is an error. Any failure other
    /// than "no records" (a timeout, SERVFAIL) fails the whole resolution
    /// rather than returning part of the set, so a flaky nameserver cannot
    /// shrink an upstream — but for one address family failing while the
    /// other answered, when `current` (the set in use; none at load) holds
    /// no address of the failed family: then nothing is lost, and a resolver
    /// that fumbles AAAA for a name with only A records does not fail every
    /// resolution (the load, and after it every update). The same endpoint
    /// reached through two SRV records appears once, at the lower of their
    /// priorities, with the weights of that priority's records added.
    pub async fn resolve(
        &self,
        what: &Discovery,
        current: &[Resolved],
    ) -> Result<(Vec<Resolved>, Duration), DiscoveryError> {
        let (endpoints, ttl) = match what {
            Discovery::Dns { host, port } => {
                let (ips, ttl) = self.addresses(host, current).await?;
                (
                    ips.into_iter()
                        .map(|ip| Resolved { addr: SocketAddr::new(ip, *port), weight: 1, priority: 0 })
                        .collect(),
                    ttl,
                )
            }
            Discovery::Srv { name } => self.srv(name, current).await?,
        };
        let mut merged = BTreeMap::<SocketAddr, Resolved>::new();
        for r in endpoints {
            let kept = merged.entry(r.addr).or_insert(Resolved { weight: 0, ..r });
            if r.priority < kept.priority {
                *kept = r;
            } else if r.priority == kept.priority {
                kept.weight = kept.weight.saturating_add(r.weight);
            }
        }
        let set = merged.into_values().collect();
        // `max` then `min` rather than `clamp`: `clamp` panics when the bounds
        // are crossed, and `new` is the only guard against that.
        Ok((set, ttl.max(self.min_ttl).min(self.max_ttl)))
    }

    /// The A and AAAA addresses of `host` and their smallest TTL. One family
    /// missing is fine; both missing is an error. One failing while the
    /// other answered is an error only when `current` holds addresses of
    /// the failed family ([`resolve`](Self::resolve)).
    async fn addresses(&self, host: &str, current: &[Resolved]) -> Result<(Vec<IpAddr>, Duration), DiscoveryError> {
        // A family left out is not asked for: its lookup can neither fail
        // the resolution nor give an address.
        let asked = |family, kind| {
            let wanted = self.family == Family::Any || self.family == family;
            async move { wanted.then_some(self.lookup(host, kind).await) }
        };
        let (v4, v6) = tokio::join!(asked(Family::Ipv4, RecordType::A), asked(Family::Ipv6, RecordType::AAAA));
        let mut ips = Vec::new();
        let mut ttl = None::<u32>;
        let mut nxdomain = false;
        let mut failed = None;
        for (result, kind) in [(v4, "A"), (v6, "AAAA")] {
            let Some(result) = result else { continue };
            match result {
                Ok(lookup) => {
                    for record in lookup.answers() {
                        ttl = Some(ttl.map_or(record.ttl, |t| t.min(record.ttl)));
                        match &record.data {
                            RData::A(a) => ips.push(IpAddr::V4(a.0)),
                            RData::AAAA(aaaa) => ips.push(IpAddr::V6(aaaa.0)),
                            // CNAMEs on the way count for the TTL only.
                            _ => {}
                        }
                    }
                }
                Err(e) if e.is_no_records_found() => nxdomain |= e.is_nx_domain(),
                Err(source) => failed = failed.or(Some((kind == "AAAA", self.lookup_error(host, kind, source)))),
            }
        }
        match ttl {
            Some(ttl) if !ips.is_empty() => match failed {
                Some((v6, e)) if current.iter().any(|r| r.addr.is_ipv6() == v6) => Err(e),
                Some((_, e)) => {
                    tracing::warn!("{e}; using the addresses of the other family");
                    Ok((ips, Duration::from_secs(ttl.into())))
                }
                None => Ok((ips, Duration::from_secs(ttl.into()))),
            },
            _ if let Some((_, e)) = failed => Err(e),
            _ if nxdomain => {
                Err(DiscoveryError::NxDomain { name: host.to_owned(), nameservers: self.nameservers.clone() })
            }
            _ => Err(DiscoveryError::NoRecords {
                name: host.to_owned(),
                kind: "A or AAAA",
                nameservers: self.nameservers.clone(),
            }),
        }
    }

    /// The endpoints of SRV `name`, each with its record's priority, and the
    /// smallest TTL of the SRV records and of the targets' addresses.
    async fn srv(&self, name: &str, current: &[Resolved]) -> Result<(Vec<Resolved>, Duration), DiscoveryError> {
        let lookup = match self.lookup(name, RecordType::SRV).await {
            Ok(lookup) => lookup,
            Err(e) if e.is_nx_domain() => {
                return Err(DiscoveryError::NxDomain { name: name.to_owned(), nameservers: self.nameservers.clone() });
            }
            Err(e) if e.is_no_records_found() => return Err(self.no_records(name, "SRV")),
            Err(source) => return Err(self.lookup_error(name, "SRV", source)),
        };
        let mut ttl = u32::MAX;
        let mut records = Vec::new();
        for record in lookup.answers() {
            ttl = ttl.min(record.ttl);
            // RFC 2782: a target of "." means the service is decidedly not
            // offered there.
            if let RData::SRV(srv) = &record.data
                && !srv.target.is_root()
            {
                records.push(srv.clone());
            }
        }
        if records.is_empty() {
            return Err(self.no_records(name, "usable SRV"));
        }
        // Every priority's targets, lowest first (RFC 2782: the
        // lowest-numbered priority the client can reach; the balancer moves
        // to a higher one while no endpoint of a lower one is available:
        // gone from DNS, failing its checks, ejected or tripped). A target
        // named twice is asked once.
        records.sort_by_key(|s| s.priority);
        let (mut endpoints, mut targets) = (Vec::new(), Vec::<String>::new());
        let mut answers: HashMap<String, Option<(Vec<IpAddr>, Duration)>> = HashMap::new();
        for srv in &records {
            let target = srv.target.to_string();
            let answer = match answers.get(&target) {
                Some(known) => Ok(known.clone()),
                None => match self.addresses(&target, current).await {
                    Ok(found) => Ok(Some(found)),
                    // A target without addresses is skipped while the others
                    // still give endpoints; it is named if none does.
                    Err(DiscoveryError::NxDomain { .. } | DiscoveryError::NoRecords { .. }) => Ok(None),
                    Err(e) => Err(e),
                },
            };
            let answer = match answer {
                Ok(answer) => answer,
                // A lookup that failed (a timeout, SERVFAIL) fails the
                // resolution — the set in use is kept — unless a lower
                // priority already gave endpoints: a backup's trouble does
                // not hold up its primaries' changes.
                Err(e) if endpoints.iter().any(|r: &Resolved| r.priority < srv.priority) => {
                    tracing::warn!(srv = name, target = %target, "{e}; its priority's endpoints left out this time");
                    answers.insert(target, None);
                    continue;
                }
                Err(e) => return Err(e),
            };
            answers.insert(target.clone(), answer.clone());
            if let Some((ips, target_ttl)) = answer {
                ttl = ttl.min(u32::try_from(target_ttl.as_secs()).unwrap_or(u32::MAX));
                let (weight, priority) = (u32::from(srv.weight.max(1)), srv.priority);
                endpoints.extend(ips.into_iter().map(|ip| Resolved {
                    addr: SocketAddr::new(ip, srv.port),
                    weight,
                    priority,
                }));
            }
            targets.push(target);
        }
        if endpoints.is_empty() {
            return Err(DiscoveryError::NoTargetAddress {
                name: name.to_owned(),
                targets: targets.join(", "),
                nameservers: self.nameservers.clone(),
            });
        }
        Ok((endpoints, Duration::from_secs(ttl.into())))
    }

    async fn lookup(&self, name: &str, kind: RecordType) -> Result<Lookup, NetError> {
        // Bypasses hickory's cache (see the module doc).
        self.inner.clear_lookup_cache(name, kind);
        self.inner.lookup(name, kind).await
    }

    fn no_records(&self, name: &str, kind: &'static str) -> DiscoveryError {
        DiscoveryError::NoRecords { name: name.to_owned(), kind, nameservers: self.nameservers.clone() }
    }

    fn lookup_error(&self, name: &str, kind: &'static str, source: NetError) -> DiscoveryError {
        DiscoveryError::Lookup {
            name: name.to_owned(),
            kind,
            nameservers: self.nameservers.clone(),
            source: Box::new(source),
        }
    }
}

/// Keeps resolving on the TTL and calls `on_change` with the new set whenever
/// it differs from the last one. A failed resolution keeps the previous set
/// (a warning with the name and the error) and retries after min_ttl (with
/// backoff doubling up to max_ttl). An answer that the name is gone, given
/// at least twice and for at least the TTL its records had (a negative
/// answer a resolver cached a moment is not taken for a deletion), calls it
/// with an empty set; the name is then asked every min_ttl, so that it is
/// served again soon after it comes back. Ends when `stop` resolves.
///
/// `first` is what the caller's own first [`Resolver::resolve`] returned at
/// load: its set is the one changes are measured against (it is not passed to
/// `on_change` again), and its TTL is the first wait. `config` should be the
/// one `resolver` was built from; its TTL bounds pace the retries.
pub async fn watch(
    resolver: Resolver,
    what: Discovery,
    config: DnsConfig,
    first: (Vec<Resolved>, Duration),
    mut on_change: impl FnMut(Vec<Resolved>) + Send + 'static,
    stop: impl Future<Output = ()> + Send,
) {
    let name = match &what {
        Discovery::Dns { host, port } => format!("{host}:{port}"),
        Discovery::Srv { name } => name.clone(),
    };
    // The resolver's bounds were checked in `new`; flooring by them keeps a
    // stray zero `min_ttl` here from turning retries into a busy loop.
    let min_retry = config.min_ttl.max(resolver.min_ttl);
    let (mut current, mut wait) = first;
    let mut backoff = min_retry;
    // The TTL of the last good answer, and since when (and how many
    // answers in a row) the name has been said to be gone.
    let mut good_ttl = wait;
    let mut gone: Option<(tokio::time::Instant, u32)> = None;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(wait) => {}
        }
        // A stop during a slow lookup (a dead nameserver) ends at once too.
        let result = tokio::select! {
            () = &mut stop => return,
            result = resolver.resolve(&what, &current) => result,
        };
        gone = match (&result, gone) {
            (Err(e), Some((since, n))) if e.says_gone() => Some((since, n.saturating_add(1))),
            (Err(e), None) if e.says_gone() => Some((tokio::time::Instant::now(), 1)),
            _ => None,
        };
        let confirmed = gone.is_some_and(|(since, n)| n >= 2 && since.elapsed() >= good_ttl);
        match result {
            // Gone and dropped: asked again every min_ttl, not backing off
            // (nothing is served meanwhile).
            Err(error) if current.is_empty() => {
                wait = min_retry;
                tracing::debug!(name = %name, error = %error, "DNS discovery: still no endpoints");
            }
            Err(error) if confirmed => {
                wait = min_retry;
                tracing::warn!(
                    name = %name,
                    error = %error,
                    retry_in = ?wait,
                    "DNS discovery: the name is gone; its endpoints are dropped"
                );
                current.clear();
                on_change(Vec::new());
            }
            Ok((set, ttl)) => {
                backoff = min_retry;
                wait = ttl;
                good_ttl = ttl;
                if set != current {
                    tracing::info!(name = %name, endpoints = set.len(), "DNS discovery: endpoints changed");
                    current.clone_from(&set);
                    on_change(set);
                }
            }
            Err(error) => {
                wait = backoff;
                tracing::warn!(
                    name = %name,
                    error = %error,
                    retry_in = ?wait,
                    "DNS discovery failed; keeping the previous endpoints"
                );
                backoff = backoff.saturating_mul(2).min(config.max_ttl).max(min_retry);
            }
        }
    }
}

/// "the system resolvers (10.0.0.2:53, …)", for error messages.
fn describe_system(config: &ResolverConfig) -> String {
    let servers = config
        .name_servers()
        .iter()
        .map(|ns| SocketAddr::new(ns.ip, ns.connections.first().map_or(53, |c| c.port)).to_string())
        .collect::<Vec<_>>();
    if servers.is_empty() {
        "the system resolvers (none in /etc/resolv.conf)".to_owned()
    } else {
        format!("the system resolvers ({})", servers.join(", "))
    }
}

#[cfg(test)]
#[path = "test_dns.rs"]
mod test_dns;

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::{Duration, Instant};

    use tokio::sync::{mpsc, oneshot};
    use tokio::task::JoinHandle;

    use super::test_dns::TestDns;
    use super::*;

    const ZONE: &str = "svc.test.";

    fn config(nameserver: SocketAddr) -> DnsConfig {
        DnsConfig {
            nameservers: vec![nameserver],
            min_ttl: Duration::from_millis(200),
            max_ttl: Duration::from_secs(300),
            timeout: Duration::from_millis(500),
            family: Family::Any,
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ep(addr: &str, weight: u32) -> Resolved {
        Resolved { addr: addr.parse().unwrap(), weight, priority: 0 }
    }

    fn host(host: &str, port: u16) -> Discovery {
        Discovery::Dns { host: host.to_owned(), port }
    }

    fn srv(name: &str) -> Discovery {
        Discovery::Srv { name: name.to_owned() }
    }

    /// Waits until `cond` holds; fails the test after `within`.
    async fn eventually(within: Duration, what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + within;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    struct Watching {
        changes: mpsc::UnboundedReceiver<Vec<Resolved>>,
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    }

    /// Resolves `what` once as the gateway does at load, then hands over to
    /// `watch`, whose `on_change` calls arrive on `changes`.
    async fn start_watch(dns: &TestDns, what: Discovery) -> (Vec<Resolved>, Watching) {
        let config = config(dns.addr);
        let resolver = Resolver::new(&config).unwrap();
        let first = resolver.resolve(&what, &[]).await.unwrap();
        let initial = first.0.clone();
        let (tx, changes) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(watch(resolver, what, config, first, move |set| tx.send(set).unwrap(), async move {
            let _ = stopped.await;
        }));
        (initial, Watching { changes, stop, task })
    }

    #[tokio::test]
    async fn a_records_resolve_with_the_port() {
        let dns = TestDns::start(ZONE).await;
        dns.set_a("web.svc.test.", &ips(&["127.0.0.2", "127.0.0.1"]), 30);
        let resolver = Resolver::new(&config(dns.addr)).unwrap();

        let (set, ttl) = resolver.resolve(&host("web.svc.test", 8080), &[]).await.unwrap();

        assert_eq!(set, [ep("127.0.0.1:8080", 1), ep("127.0.0.2:8080", 1)]);
        assert_eq!(ttl, Duration::from_secs(30));
    }

    #[tokio::test]
    async fn aaaa_records_resolve_too() {
        let dns = TestDns::start(ZONE).await;
        dns.set_a("v6.svc.test.", &ips(&["::1"]), 30);
        dns.set_a("dual.svc.test.", &ips(&["::1", "127.0.0.1"]), 30);
        let resolver = Resolver::new(&config(dns.addr)).unwrap();

        let (v6, _) = resolver.resolve(&host("v6.svc.test", 9000), &[]).await.unwrap();
        let (dual, _) = resolver.resolve(&host("dual.svc.test", 9000), &[]).await.unwrap();

        assert_eq!(v6, [ep("[::1]:9000", 1)]);
        assert_eq!(dual, [ep("127.0.0.1:9000", 1), ep("[::1]:9000", 1)]);
    }

    /// `[dns] family` leaves the other family out: not asked for, so its
    /// failure fails nothing (a host without an IPv6 route could reach
    /// none of the AAAA addresses).
    #[tokio::test]
    async fn a_family_left_out_is_not_asked_for() {
        let dns = TestDns::start(ZONE).await;
        dns.set_a("dual.svc.test.", &ips(&["::1", "127.0.0.1"]), 30);
        dns.set_a("v6.svc.test.", &ips(&["::1"]), 30);
        let v4 = Resolver::new(&DnsConfig { family: Family::Ipv4, ..config(dns.addr) }).unwrap();
        let v6 = Resolver::new(&DnsConfig { family: Family::Ipv6, ..config(dns.addr) }).unwrap();

        let (only_v4, _) = v4.resolve(&host("dual.svc.test", 9000), &[]).await.unwrap();
        let (only_v6, _) = v6.resolve(&host("dual.svc.test", 9000), &[]).await.unwrap();
        dns.fail_aaaa(true);
        let (still_v4, _) = v4.resolve(&host("dual.svc.test", 9000), &[ep("127.0.0.1:9000", 1)]).await.unwrap();
        let none = v4.resolve(&host("v6.svc.test", 9000), &[]).await.unwrap_err();

        assert_eq!(only_v4, [ep("127.0.0.1:9000", 1)]);
        assert_eq!(only_v6, [ep("[::1]:9000", 1)]);
        assert_eq!(still_v4, [ep("127.0.0.1:9000", 1)]);
        assert!(matches!(none, DiscoveryError::NoRecords { .. }), "{none:?}");
    }

    #[tokio::test]
    async fn one_family_failing_leaves_the_other_family_s_addresses() {
        let dns = TestDns::start(ZONE).await;
        dns.set_a("web.svc.test.", &ips(&["127.0.0.1"]), 30);
        dns.fail_aaaa(true);
        let resolver = Resolver::new(&config(dns.addr)).unwrap();

        let (set, _) = resolver.resolve(&host("web.svc.test", 8080), &[]).await.unwrap();
        assert_eq!(set, [ep("127.0.0.1:8080", 1)], "the A answer, though AAAA failed");

        // With nothing from the other family, the failure is the answer.
        dns.set_a("v6.svc.test.", &ips(&["::1"]), 30);
        let err = resolver.resolve(&host("v6.svc.test", 8080), &[]).await.unwrap_err().to_string();
        assert!(err.contains("AAAA"), "{err}");

        // A set in use with addresses of the failed family is not shrunk by
        // a passing failure: the resolution fails (the set is kept).
        dns.set_a("dual.svc.test.", &ips(&["127.0.0.1", "::1"]), 30);
        dns.fail_aaaa(false);
        let (dual, _) = resolver.resolve(&host("dual.svc.test", 8080), &[]).await.unwrap();
        assert_eq!(dual.len(), 2);
        dns.fail_aaaa(true);
        let err = resolver.resolve(&host("dual.svc.test", 8080), &dual).await.unwrap_err().to_string();
        assert!(err.contains("AAAA"), "{err}");
        let (only_v4, _) = resolver.resolve(&host("dual.svc.test", 8080), &dual[..1]).await.unwrap();
        assert_eq!(only_v4, [ep("127.0.0.1:8080", 1)], "none of the failed family in use: nothing lost");
    }

    /// Every priority's endpoints, each with its priority and weight: the
    /// balancer keeps to the lowest that can serve.
    #[tokio::test]
    async fn srv_endpoints_keep_their_priorities_and_weights() {
        let dns = TestDns::start(ZONE).await;
        dns.set_srv(
            "_http._tcp.api.svc.test.",
            &[(10, 5, 9001, "a.svc.test."), (10, 0, 9002, "b.svc.test."), (20, 100, 9003, "c.svc.test.")],
            30,
        );
        dns.set_a("a.svc.test.", &ips(&["127.0.0.1"]), 30);
        dns.set_a("b.svc.test.", &ips(&["127.0.0.2", "::1"]), 30);
        dns.set_a("c.svc.test.", &ips(&["127.0.0.3"]), 30);
        let resolver = Resolver::new(&config(dns.addr)).unwrap();

        let (set, _) = resolver.resolve(&srv("_http._tcp.api.svc.test"), &[]).await.unwrap();

        // Weight 0 counts as 1.
        let at = |addr, weight, priority| Resolved { priority, ..ep(addr, weight) };
        assert_eq!(
            set,
            [
                at("127.0.0.1:9001", 5, 10),
                at("127.0.0.2:9002", 1, 10),
                at("127.0.0.3:9003", 100, 20),
                at("[::1]:9002", 1, 10)
            ]
        );
    }

    /// A priority whose targets are all gone gives no endpoint, and is no
    /// error while another's resolve (it was, though a higher one resolved);
    /// one address reached at two priorities is at the lower.
    #[tokio::test]
    async fn srv_falls_back_to_the_next_priority_whose_targets_resolve() {
        let dns = TestDns::start(ZONE).await;
        dns.set_srv(
            "_http._tcp.api.svc.test.",
            &[
                (10, 1, 9001, "gone.svc.test."),
                (20, 1, 9002, "b.svc.test."),
                (30, 1, 9003, "c.svc.test."),
                (40, 7, 9002, "b.svc.test."),
                (20, 2, 9002, "b.svc.test."),
            ],
            30,
        );
        dns.set_a("b.svc.test.", &ips(&["127.0.0.2"]), 30);
        dns.set_a("c.svc.test.", &ips(&["127.0.0.3"]), 30);
        let resolver = Resolver::new(&config(dns.addr)).unwrap();

        let (set, _) = resolver.resolve(&srv("_http._tcp.api.svc.test"), &[]).await.unwrap();

        let at = |addr, weight, priority| Resolved { priority, ..ep(addr, weight) };
        assert_eq!(set, [at("127.0.0.2:9002", 3, 20), at("127.0.0.3:9003", 1, 30)]);
    }

    /// A higher priority's target whose lookup fails (SERVFAIL) is left out
    /// while a lower priority gave endpoints (it failed the resolution,
    /// holding up the primaries' changes); a lower one's failing still
    /// fails it (the set in use is kept).
    #[tokio::test]
    async fn a_backup_target_failing_to_resolve_leaves_the_primaries() {
        let dns = TestDns::start(ZONE).await;
        dns.set_a("a.svc.test.", &ips(&["127.0.0.1"]), 30);
        dns.set_a("v6.svc.test.", &ips(&["::1"]), 30);
        dns.set_srv("_http._tcp.api.svc.test.", &[(10, 1, 9001, "a.svc.test."), (20, 1, 9002, "v6.svc.test.")], 30);
        dns.set_srv("_http._tcp.flip.svc.test.", &[(10, 1, 9002, "v6.svc.test."), (20, 1, 9001, "a.svc.test.")], 30);
        dns.fail_aaaa(true);
        let resolver = Resolver::new(&config(dns.addr)).unwrap();

        let (set, _) = resolver.resolve(&srv("_http._tcp.api.svc.test"), &[]).await.unwrap();
        let flipped = resolver.resolve(&srv("_http._tcp.flip.svc.test"), &[]).await;

        assert_eq!(set, [Resolved { priority: 10, ..ep("127.0.0.1:9001", 1) }]);
        assert!(flipped.is_err(), "the lowest priority's failure fails it: {flipped:?}");
    }

    #[tokio::test]
    async fn srv_targets_without_addresses_are_skipped_and_named_when_none_is_left() {
        let dns = TestDns::start(ZONE).await;
        dns.set_srv("_http._tcp.api.svc.test.", &[(1, 1, 9001, "a.svc.test."), (1, 1, 9002, "gone.svc.test.")], 30);
        dns.set_srv("_http._tcp.dead.svc.test.", &[(1, 1, 9002, "gone.svc.test.")], 30);
        dns.set_a("a.svc.test.", &ips(&["127.0.0.1"]), 30);
        let resolver = Resolver::new(&config(dns.addr)).unwrap();

        let (set, _) = resolver.resolve(&srv("_http._tcp.api.svc.test"), &[]).await.unwrap();
        let err = resolver.resolve(&srv("_http._tcp.dead.svc.test"), &[]).await.unwrap_err();

        assert_eq!(set, [Resolved { priority: 1, ..ep("127.0.0.1:9001", 1) }]);
        assert!(matches!(err, DiscoveryError::NoTargetAddress { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("_http._tcp.dead.svc.test") && message.contains("gone.svc.test."), "{message}");
    }

    #[tokio::test]
    async fn ttl_is_the_smallest_record_ttl_clamped_to_min_and_max() {
        let dns = TestDns::start(ZONE).await;
        dns.set_a("zero.svc.test.", &ips(&["127.0.0.1"]), 0);
        dns.set_a("long.svc.test.", &ips(&["127.0.0.1"]), 1_000_000);
        dns.set_srv("_a._tcp.svc.test.", &[(1, 1, 80, "short.svc.test."), (1, 1, 81, "mid.svc.test.")], 50);
        dns.set_a("short.svc.test.", &ips(&["127.0.0.1"]), 7);
        dns.set_a("mid.svc.test.", &ips(&["127.0.0.2"]), 60);
        dns.set_srv("_b._tcp.svc.test.", &[(1, 1, 80, "mid.svc.test.")], 5);
        let resolver = Resolver::new(&config(dns.addr)).unwrap();
        let ttl = async |what: Discovery| resolver.resolve(&what, &[]).await.unwrap().1;

        assert_eq!(ttl(host("zero.svc.test", 80)).await, Duration::from_millis(200), "raised to min_ttl");
        assert_eq!(ttl(host("long.svc.test", 80)).await, Duration::from_secs(300), "lowered to max_ttl");
        assert_eq!(ttl(srv("_a._tcp.svc.test")).await, Duration::from_secs(7), "a target's A record");
        assert_eq!(ttl(srv("_b._tcp.svc.test")).await, Duration::from_secs(5), "the SRV record");
    }

    #[tokio::test]
    async fn every_resolution_asks_the_server_despite_a_long_ttl() {
        let dns = TestDns::start(ZONE).await;
        dns.set_a("web.svc.test.", &ips(&["127.0.0.1"]), 300);
        let resolver = Resolver::new(&config(dns.addr)).unwrap();
        let what = host("web.svc.test", 80);

        let (before, _) = resolver.resolve(&what, &[]).await.unwrap();
        let asked = dns.queries();
        dns.set_a("web.svc.test.", &ips(&["127.0.0.2"]), 300);
        let (after, _) = resolver.resolve(&what, &[]).await.unwrap();

        assert_eq!(before, [ep("127.0.0.1:80", 1)]);
        assert_eq!(after, [ep("127.0.0.2:80", 1)], "hickory's cache must not answer");
        assert_eq!(dns.queries(), asked + 2, "one A and one AAAA query");
    }

    #[tokio::test]
    async fn an_answer_too_big_for_udp_comes_over_tcp() {
        let dns = TestDns::start(ZONE).await;
        let many: Vec<IpAddr> = (0..300u16).map(|i| IpAddr::from([10, 0, (i >> 8) as u8, i as u8])).collect();
        dns.set_a("big.svc.test.", &many, 30);
        let resolver = Resolver::new(&config(dns.addr)).unwrap();

        let (set, _) = resolver.resolve(&host("big.svc.test", 80), &[]).await.unwrap();

        assert_eq!(set.len(), 300);
        // The truncated UDP answer, then the TCP retry, plus the AAAA query.
        assert!(dns.queries() >= 3, "{} queries", dns.queries());
    }

    #[tokio::test]
    async fn a_name_that_never_existed_is_an_error_naming_it_and_the_server() {
        let dns = TestDns::start(ZONE).await;
        dns.set_srv("_http._tcp.only-srv.svc.test.", &[(1, 1, 80, "a.svc.test.")], 30);
        let resolver = Resolver::new(&config(dns.addr)).unwrap();

        for (what, name) in [
            (host("nope.svc.test", 80), "nope.svc.test"),
            (srv("_http._tcp.nope.svc.test"), "_http._tcp.nope.svc.test"),
            (host("_http._tcp.only-srv.svc.test", 80), "_http._tcp.only-srv.svc.test"),
        ] {
            let err = resolver.resolve(&what, &[]).await.unwrap_err();
            let message = err.to_string();
            assert!(message.contains(&format!("`{name}`")), "{message}");
            assert!(message.contains(&dns.addr.to_string()), "{message}");
        }
        let err = resolver.resolve(&host("nope.svc.test", 80), &[]).await.unwrap_err();
        assert!(matches!(err, DiscoveryError::NxDomain { .. }), "{err:?}");
        let err = resolver.resolve(&host("_http._tcp.only-srv.svc.test", 80), &[]).await.unwrap_err();
        assert!(matches!(err, DiscoveryError::NoRecords { kind: "A or AAAA", .. }), "{err:?}");
    }

    #[tokio::test]
    async fn crossed_ttl_bounds_are_refused() {
        let bad =
            DnsConfig { min_ttl: Duration::from_secs(10), max_ttl: Duration::from_secs(1), ..DnsConfig::default() };
        let zero = DnsConfig { min_ttl: Duration::ZERO, ..DnsConfig::default() };

        assert!(matches!(Resolver::new(&bad), Err(DiscoveryError::TtlBounds { .. })));
        assert!(matches!(Resolver::new(&zero), Err(DiscoveryError::TtlBounds { .. })));
    }

    #[tokio::test]
    async fn watch_follows_a_change_after_the_ttl_and_reports_only_real_changes() {
        let dns = TestDns::start(ZONE).await;
        dns.set_a("web.svc.test.", &ips(&["127.0.0.1"]), 1);
        let (initial, mut w) = start_watch(&dns, host("web.svc.test", 80)).await;
        assert_eq!(initial, [ep("127.0.0.1:80", 1)]);

        // The same answer again after the 1 s TTL: resolved, but no change.
        let asked = dns.queries();
        eventually(Duration::from_secs(3), "a re-resolution", || dns.queries() >= asked + 2).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(w.changes.try_recv().is_err(), "on_change called without a change");

        dns.set_a("web.svc.test.", &ips(&["127.0.0.1", "127.0.0.2"]), 1);
        let changed = tokio::time::timeout(Duration::from_secs(3), w.changes.recv()).await.unwrap().unwrap();
        assert_eq!(changed, [ep("127.0.0.1:80", 1), ep("127.0.0.2:80", 1)]);

        w.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(1), w.task).await.unwrap().unwrap();
    }

    /// A name answered gone (NXDOMAIN) drops its endpoints once that has
    /// been said twice and for the TTL its records had (their addresses may
    /// be another workload's by now; they were kept for ever), and is then
    /// asked every min_ttl until it comes back.
    #[tokio::test]
    async fn a_name_gone_for_its_ttl_drops_its_endpoints_and_is_asked_again() {
        let dns = TestDns::start(ZONE).await;
        dns.set_a("web.svc.test.", &ips(&["127.0.0.1"]), 1);
        let (_, mut w) = start_watch(&dns, host("web.svc.test", 80)).await;
        let start = Instant::now();

        // NXDOMAIN from now on.
        dns.set_a("web.svc.test.", &[], 1);
        let asked = dns.queries();
        eventually(Duration::from_secs(5), "three failed resolutions", || dns.queries() >= asked + 6).await;
        // 1 s TTL, then retries after 200 ms and 400 ms: 1.6 s at least. With
        // no backoff it would be 1.4 s.
        assert!(start.elapsed() >= Duration::from_millis(1550), "retried too fast: {:?}", start.elapsed());
        assert!(w.changes.try_recv().is_err(), "gone for 0.6 s of the records' 1 s: kept");
        let dropped = tokio::time::timeout(Duration::from_secs(3), w.changes.recv()).await.unwrap().unwrap();
        assert_eq!(dropped, Vec::new(), "dropped once gone for the TTL");
        assert!(start.elapsed() >= Duration::from_millis(2000), "{:?}", start.elapsed());

        // Still retrying: the name coming back is picked up.
        dns.set_a("web.svc.test.", &ips(&["127.0.0.3"]), 1);
        let back = tokio::time::timeout(Duration::from_secs(3), w.changes.recv()).await.unwrap().unwrap();
        assert_eq!(back, [ep("127.0.0.3:80", 1)]);
        w.stop.send(()).unwrap();
    }

    #[tokio::test]
    async fn a_stopped_server_keeps_the_previous_set_and_stop_ends_the_watch() {
        let dns = TestDns::start(ZONE).await;
        let addr = dns.addr;
        // A name no other test uses. (Should another test's server get this
        // port once it is free, it would answer NXDOMAIN: but not for the
        // records' 1 s TTL within the 1.3 s below, which a drop takes.)
        dns.set_a("stopped.svc.test.", &ips(&["127.0.0.1"]), 1);
        let (_, mut w) = start_watch(&dns, host("stopped.svc.test", 80)).await;

        drop(dns);
        // The failure the watch will meet, seen directly: it names the server.
        let resolver = Resolver::new(&config(addr)).unwrap();
        let err = resolver.resolve(&host("stopped.svc.test", 80), &[]).await.unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");

        // Past the TTL (1 s) and the failed lookup's timeout (500 ms).
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert!(w.changes.try_recv().is_err(), "a dead server must not change the set");
        assert!(!w.task.is_finished());

        w.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(1), w.task).await.unwrap().unwrap();
    }
}
