//! `ip-filter` through the real gateway. The test client connects from
//! 127.0.0.1, so that is the socket peer every rule sees — unless the peer
//! is configured as a trusted proxy, when `X-Forwarded-For` decides.

use wasmgate_tests::upstream::{TestUpstream, echoed_header};
use wasmgate_tests::{Reply, TestGateway, get, get_with};

fn route(up: &TestUpstream, plugins: &str) -> String {
    format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n\n[[routes]]\nname = \"r\"\nupstream = \"u\"\nplugins = [\n{plugins}\n]\n",
        up.addr
    )
}

fn ip_filter(config: &str) -> String {
    format!(r#"{{ use = "ip-filter", config = {{ {config} }} }},"#)
}

async fn get_forwarded_for(gw: &TestGateway, xff: &str) -> Reply {
    get_with(&gw.url("/"), &[("x-forwarded-for", xff)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_filter_allows_and_denies_the_socket_peer() {
    let up = TestUpstream::echo("u").await;
    for (config, status) in [
        ("deny = [\"127.0.0.1/32\"]", 403),
        ("allow = [\"10.0.0.0/8\"]", 403),
        ("allow = [\"127.0.0.0/8\"]", 200),
        ("allow = [\"127.0.0.0/8\"], deny = [\"127.0.0.1\"]", 403),
        ("deny = [\"10.0.0.0/8\", \"::1\"]", 200),
    ] {
        let gw = TestGateway::start(&route(&up, &ip_filter(config)));
        let r = get(&gw.url("/")).await;
        assert_eq!(r.status, status, "{config}: {}", r.text());
        if status == 403 {
            assert_eq!(r.json()["error"], "forbidden");
        }
    }
    assert_eq!(up.hits(), 2, "denied requests never reach the upstream");

    // Without trusted proxies, a client's own X-Forwarded-For counts for nothing.
    let gw = TestGateway::start(&route(&up, &ip_filter("allow = [\"10.0.0.0/8\"], status = 401, message = \"nope\"")));
    let r = get_forwarded_for(&gw, "10.1.2.3").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "nope");
}

/// Behind a load balancer in the gateway's own `server.trusted_proxies`,
/// plugins are given the client it reports: ip-filter needs no list of its
/// own (it judged the load balancer's address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_see_the_client_behind_the_gateways_trusted_proxies() {
    let up = TestUpstream::echo("u").await;
    let allow = ip_filter("allow = [\"10.0.0.0/8\"]");
    let gw = TestGateway::start_with("trusted_proxies = [\"127.0.0.1/32\"]", &route(&up, &allow));
    assert_eq!(get_forwarded_for(&gw, "10.1.2.3").await.status, 200);
    // The proxy without the header is itself the client.
    assert_eq!(get(&gw.url("/")).await.status, 403);
    // What stands left of the last untrusted entry is the client's own word.
    assert_eq!(get_forwarded_for(&gw, "10.1.2.3, 192.0.2.1").await.status, 403);
    // A malformed entry from the trusted hop: the peer is the client.
    assert_eq!(get_forwarded_for(&gw, "10.1.2.3, garbage").await.status, 403);
    // The upstream still sees this hop's entry for the proxy appended.
    let r = get_forwarded_for(&gw, "10.1.2.3").await;
    assert_eq!(echoed_header(&r.json(), "x-forwarded-for").as_deref(), Some("10.1.2.3, 127.0.0.1"));

    // From a peer not in the list, its X-Forwarded-For counts for nothing.
    let gw = TestGateway::start_with("trusted_proxies = [\"10.0.0.0/8\"]", &route(&up, &allow));
    assert_eq!(get_forwarded_for(&gw, "10.1.2.3").await.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_filter_takes_the_client_from_a_trusted_proxy() {
    let up = TestUpstream::echo("u").await;
    let trusted = "trusted_proxies = [\"127.0.0.1/32\"]";

    let gw = TestGateway::start(&route(&up, &ip_filter(&format!("{trusted}, allow = [\"10.0.0.0/8\"]"))));
    assert_eq!(get_forwarded_for(&gw, "10.1.2.3").await.status, 200);
    // The proxy (127.0.0.1, trusted) without the header is itself the client.
    assert_eq!(get(&gw.url("/")).await.status, 403);
    // Spoofing: the rightmost untrusted entry is the one the last trusted
    // proxy appended; what stands left of it is the client's own word.
    assert_eq!(get_forwarded_for(&gw, "10.1.2.3, 192.0.2.1").await.status, 403);
    // Trusted hops are skipped, right to left.
    assert_eq!(get_forwarded_for(&gw, "192.0.2.1, 10.1.2.3, 127.0.0.1").await.status, 200);
    // A malformed entry from the trusted hop: the peer is the client.
    assert_eq!(get_forwarded_for(&gw, "10.1.2.3, garbage").await.status, 403);

    let gw = TestGateway::start(&route(&up, &ip_filter(&format!("{trusted}, deny = [\"10.1.2.3\"]"))));
    assert_eq!(get_forwarded_for(&gw, "10.1.2.3").await.status, 403);
    assert_eq!(get_forwarded_for(&gw, "10.1.2.4").await.status, 200);

    // Another header as the source.
    let gw = TestGateway::start(&route(
        &up,
        &ip_filter(&format!("{trusted}, header = \"x-real-ip\", allow = [\"2001:db8::/32\"]")),
    ));
    let r = get_with(&gw.url("/"), &[("x-real-ip", "2001:db8::7")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(get_forwarded_for(&gw, "2001:db8::7").await.status, 403, "x-forwarded-for is not the source now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_filter_hands_the_client_address_to_later_plugins() {
    let up = TestUpstream::echo("u").await;
    // chaos in `context` mode copies the context into an `x-context` request header.
    let plugins = format!(
        "{}\n{{ use = \"chaos\", config = {{ mode = \"context\" }} }},",
        ip_filter("trusted_proxies = [\"127.0.0.1/32\"], allow = [\"10.0.0.0/8\"]")
    );
    let gw = TestGateway::start(&route(&up, &plugins));
    let r = get_forwarded_for(&gw, "10.1.2.3").await;
    assert_eq!(r.status, 200);
    assert_eq!(echoed_header(&r.json(), "x-context").as_deref(), Some("client.ip=10.1.2.3"));
}
