//! DNS discovery against a real DNS server on loopback: endpoints from SRV
//! and A records, re-resolved on the TTL, changed without dropping requests
//! in flight.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use wasmgate_tests::dns::TestDns;
use wasmgate_tests::upstream::TestUpstream;
use wasmgate_tests::{TestGateway, client, eventually, get, get_request, send_with};

async fn spread(gw: &TestGateway, n: usize) -> HashMap<String, usize> {
    let c = client();
    let mut seen = HashMap::new();
    for _ in 0..n {
        let r = send_with(&c, get_request(&gw.url("/"), &[])).await;
        *seen.entry(r.header("x-upstream").unwrap_or("none").to_owned()).or_insert(0) += 1;
    }
    seen
}

/// Whether, within `within`, a round of ten requests goes all to
/// `upstream` (rounds with a pause between).
async fn all_go_to(gw: &TestGateway, upstream: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if spread(gw, 10).await.get(upstream) == Some(&10) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_endpoints_follow_the_records_without_dropping_requests_in_flight() {
    let dns = TestDns::start("svc.test.").await;
    let (a, b) = tokio::join!(TestUpstream::echo("a"), TestUpstream::echo("b"));
    dns.set_a("host.svc.test.", &["127.0.0.1".parse::<IpAddr>().unwrap()], 60);
    dns.set_srv(
        "_http._tcp.users.svc.test.",
        &[(10, 1, a.addr.port(), "host.svc.test."), (10, 1, b.addr.port(), "host.svc.test.")],
        1,
    );
    let gw = TestGateway::start(&format!(
        r#"[dns]
nameservers = ["{}"]
min_ttl = "100ms"
max_ttl = "2s"

[upstreams.users]
srv = "_http._tcp.users.svc.test."

[[routes]]
upstream = "users"
"#,
        dns.addr
    ));
    let seen = spread(&gw, 20).await;
    assert_eq!((seen.get("a"), seen.get("b")), (Some(&10), Some(&10)), "both SRV targets serve: {seen:?}");

    // A slow request on each (round-robin) is in flight when `a` leaves
    // the records.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = gw.url("/slow/1500");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    assert!(eventually(Duration::from_secs(3), || a.in_flight() == 1 && b.in_flight() == 1).await);
    let queries = dns.queries();
    dns.set_srv("_http._tcp.users.svc.test.", &[(10, 1, b.addr.port(), "host.svc.test.")], 1);
    // The TTL is 1 s: within a few seconds only `b` is used.
    assert!(all_go_to(&gw, "b", Duration::from_secs(5)).await, "traffic moved to the remaining endpoint");
    assert!(dns.queries() > queries, "the gateway asked the DNS server again");
    for r in slow {
        assert_eq!(r.await.unwrap().status, 200, "the requests in flight finished");
    }
    // The gateway closed its connections to `a`, the idle ones and the one
    // the slow request was on (kept idle for ever before: nothing asks for
    // a gone endpoint again).
    assert!(b.open_connections() > 0);
    assert!(
        eventually(Duration::from_secs(3), || a.open_connections() == 0).await,
        "{} connections to the gone endpoint still open",
        a.open_connections()
    );
}

/// SRV priorities are a fallback (RFC 2782): the lower priority's targets
/// take every request while one of them can serve, the higher one's only
/// while none can (here: failing its health checks), and traffic goes back
/// when it recovers. The higher priority was used only when the lower's
/// targets had no address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_srv_priority_serves_only_while_the_lower_cannot() {
    let dns = TestDns::start("svc.test.").await;
    let (primary, backup) = tokio::join!(TestUpstream::echo("primary"), TestUpstream::echo("backup"));
    dns.set_a("host.svc.test.", &["127.0.0.1".parse::<IpAddr>().unwrap()], 60);
    dns.set_srv(
        "_http._tcp.users.svc.test.",
        &[(10, 1, primary.addr.port(), "host.svc.test."), (20, 100, backup.addr.port(), "host.svc.test.")],
        60,
    );
    let gw = TestGateway::start(&format!(
        r#"[dns]
nameservers = ["{}"]

[upstreams.users]
srv = "_http._tcp.users.svc.test."
health = {{ path = "/health", interval = "100ms", unhealthy_threshold = 1, healthy_threshold = 1 }}

[[routes]]
upstream = "users"
"#,
        dns.addr
    ));
    assert_eq!(spread(&gw, 20).await.get("primary"), Some(&20), "the lower priority takes them all");
    primary.set_healthy(false);
    assert!(
        all_go_to(&gw, "backup", Duration::from_secs(5)).await,
        "the higher priority serves while the lower fails its checks"
    );
    primary.set_healthy(true);
    assert!(all_go_to(&gw, "primary", Duration::from_secs(5)).await, "and hands back when it recovers");
}

/// A reload that moves `[dns]` to another nameserver re-resolves the
/// discovered upstreams there (they kept the resolver they were made with).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_another_nameserver_resolves_there() {
    let (old_dns, new_dns) = tokio::join!(TestDns::start("svc.test."), TestDns::start("svc.test."));
    let (a, b) = tokio::join!(TestUpstream::echo("a"), TestUpstream::echo("b"));
    let localhost = ["127.0.0.1".parse::<IpAddr>().unwrap()];
    for dns in [&old_dns, &new_dns] {
        dns.set_a("host.svc.test.", &localhost, 60);
    }
    old_dns.set_srv("_http._tcp.users.svc.test.", &[(10, 1, a.addr.port(), "host.svc.test.")], 60);
    new_dns.set_srv("_http._tcp.users.svc.test.", &[(10, 1, b.addr.port(), "host.svc.test.")], 60);
    let config = |dns: &TestDns| {
        format!(
            "[dns]\nnameservers = [\"{}\"]\n\n[upstreams.users]\nsrv = \"_http._tcp.users.svc.test.\"\n\n[[routes]]\nupstream = \"users\"\n",
            dns.addr
        )
    };
    let gw = TestGateway::start(&config(&old_dns));
    assert_eq!(spread(&gw, 4).await.get("a"), Some(&4));
    gw.write_config(&config(&new_dns));
    assert_eq!(gw.gateway.reload().ok(), Some(1));
    assert_eq!(spread(&gw, 4).await.get("b"), Some(&4), "the new nameserver's answer");
    assert!(new_dns.queries() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_are_resolved_with_the_configured_port() {
    let dns = TestDns::start("svc.test.").await;
    let first = TestUpstream::echo("first").await;
    let port = first.addr.port();
    // A second server on another loopback address, same port.
    let second = TestUpstream::echo_on("second", format!("127.0.0.2:{port}").parse().unwrap()).await;
    dns.set_a("web.svc.test.", &["127.0.0.1".parse::<IpAddr>().unwrap()], 1);
    let gw = TestGateway::start(&format!(
        "[dns]\nnameservers = [\"{}\"]\nmin_ttl = \"100ms\"\n[upstreams.web]\ndns = \"web.svc.test.:{port}\"\n[[routes]]\nupstream = \"web\"\n",
        dns.addr
    ));
    assert_eq!(spread(&gw, 5).await.get("first"), Some(&5));
    dns.set_a("web.svc.test.", &["127.0.0.2".parse::<IpAddr>().unwrap()], 1);
    let moved = async {
        for _ in 0..40 {
            if spread(&gw, 5).await.get("second") == Some(&5) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(moved.await, "the new address took over");
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_fails_the_load_by_name() {
    let dns = TestDns::start("svc.test.").await;
    let err = TestGateway::try_start(
        "",
        &format!(
            "[dns]\nnameservers = [\"{}\"]\n[upstreams.ghost]\ndns = \"ghost.svc.test.:80\"\n[[routes]]\nupstream = \"ghost\"\n",
            dns.addr
        ),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("upstreams.ghost") && err.contains("ghost.svc.test"), "{err}");
}

/// A `dns` upstream over TLS checks its endpoints' certificates against
/// the name it resolves (and sends it as SNI), as nginx's `proxy_ssl_name`
/// does: they were checked against the resolved addresses, which a
/// certificate for the name does not carry (every request a 502).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_upstream_over_tls_is_checked_against_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = wasmgate_tests::certs::Ca::new(dir.path(), "ca");
    let cert = ca.server("a", &["a.svc.test"]);
    let up = TestUpstream::echo("origin").await;
    let a = TestGateway::start_with(
        &cert.tls_listener(),
        &format!("[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\n", up.addr),
    );
    let port = a.gateway.tls_addr().expect("TLS listener").port();
    let dns = TestDns::start("svc.test.").await;
    dns.set_a("a.svc.test.", &["127.0.0.1".parse::<IpAddr>().unwrap()], 60);
    let b = TestGateway::start(&format!(
        "[dns]\nnameservers = [\"{}\"]\n[upstreams.a]\ndns = \"a.svc.test.:{port}\"\ntls = {{ ca = \"{}\" }}\n[[routes]]\nupstream = \"a\"\n",
        dns.addr,
        ca.pem.display()
    ));
    let r = get(&b.url("/through")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("origin"));
}

/// A reload that rebuilds a discovered upstream while its nameservers are
/// down starts from the endpoints the upstream had (and keeps asking): the
/// whole reload was refused — new routes, a rotated certificate — and not
/// tried again until the next change. With no upstream to take them from
/// (a new name), a name that does not resolve still fails the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_while_dns_is_down_keeps_a_discovered_upstreams_endpoints() {
    let dns = TestDns::start("svc.test.").await;
    let up = TestUpstream::echo("a").await;
    dns.set_a("users.svc.test.", &["127.0.0.1".parse::<IpAddr>().unwrap()], 60);
    let nameserver = dns.addr;
    let body = |connect_timeout: &str, extra: &str| {
        format!(
            "[dns]\nnameservers = [\"{}\"]\ntimeout = \"200ms\"\n\n[upstreams.users]\ndns = \"users.svc.test:{}\"\n\
             connect_timeout = \"{connect_timeout}\"\n{extra}\n[[routes]]\nupstream = \"users\"\n",
            nameserver,
            up.addr.port()
        )
    };
    let gw = TestGateway::start(&body("1s", ""));
    assert_eq!(get(&gw.url("/")).await.status, 200);
    drop(dns);
    gw.write_config(&body("2s", ""));
    assert!(gw.gateway.reload().is_ok(), "the reload goes through");
    assert_eq!(get(&gw.url("/")).await.header("x-upstream"), Some("a"), "on the endpoints it had");
    let new_name = "[upstreams.orders]\ndns = \"orders.svc.test:80\"\n";
    gw.write_config(&body("2s", new_name));
    assert!(gw.gateway.reload().is_err(), "a new name must resolve");
}
