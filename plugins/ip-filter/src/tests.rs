use wasmgate_sdk::log::Level;
use wasmgate_sdk::testing::{self, TestRequest};
use wasmgate_sdk::{Info, Plugin};

use super::IpFilter;

fn filter(json: &str) -> IpFilter {
    testing::configure::<IpFilter>(json).expect("config accepted")
}

fn refused(json: &str) -> String {
    testing::configure::<IpFilter>(json).err().map(|e| e.to_string()).unwrap_or_default()
}

/// The status the request gets (`None`: let through) and the `client.ip`
/// the plugin left in the context.
fn check(p: &IpFilter, mut req: TestRequest) -> (Option<u16>, Option<String>) {
    testing::reset();
    let status = testing::on_request(p, &mut req).reply().map(|r| r.status);
    (status, testing::context().get("client.ip").cloned())
}

fn from(ip: &str) -> TestRequest {
    TestRequest::get("/").client_ip(ip)
}

#[test]
fn request_hook_only() {
    assert_eq!(filter(r#"{"deny":["10.0.0.0/8"]}"#).info(), Info::default());
}

#[test]
fn deny_wins_over_allow() {
    let p = filter(r#"{"allow":["10.0.0.0/8","2001:db8::/32"],"deny":["10.6.6.0/24","2001:db8:bad::/48"]}"#);
    assert_eq!(check(&p, from("10.1.2.3")), (None, Some("10.1.2.3".into())));
    assert_eq!(check(&p, from("10.6.6.6")).0, Some(403), "in both: deny wins");
    assert_eq!(check(&p, from("192.0.2.1")).0, Some(403), "allow is non-empty: the rest is denied");
    assert_eq!(check(&p, from("2001:db8::1")).0, None);
    assert_eq!(check(&p, from("2001:db8:bad::1")).0, Some(403));
    assert_eq!(check(&p, from("2001:db9::1")).0, Some(403));
}

#[test]
fn deny_alone_lets_the_rest_through() {
    let p = filter(r#"{"deny":["192.0.2.7","::1"],"status":451,"message":"not from there"}"#);
    assert_eq!(check(&p, from("192.0.2.8")).0, None);
    assert_eq!(check(&p, from("::2")).0, None);
    let mut req = from("192.0.2.7");
    let reply = testing::on_request(&p, &mut req).reply().cloned().expect("denied");
    assert_eq!(reply.status, 451);
    assert_eq!(reply.body, br#"{"error":"not from there"}"#);
    assert_eq!(check(&p, from("::1")).0, Some(451));
}

#[test]
fn ipv4_mapped_peers_match_ipv4_rules() {
    // A dual-stack listener reports v4 clients as ::ffff:a.b.c.d.
    let p = filter(r#"{"allow":["127.0.0.0/8"],"deny":["::ffff:127.6.0.0/112"]}"#);
    assert_eq!(check(&p, from("::ffff:127.0.0.1")), (None, Some("127.0.0.1".into())));
    assert_eq!(check(&p, from("::ffff:127.6.0.1")).0, Some(403));
    assert_eq!(check(&p, from("127.6.0.1")).0, Some(403));
}

#[test]
fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let p = filter(r#"{"allow":["192.0.2.0/24"],"trusted_proxies":["10.0.0.5"]}"#);
    // Through the proxy: the address it appended decides.
    assert_eq!(check(&p, from("10.0.0.5").header("x-forwarded-for", "192.0.2.10")), (None, Some("192.0.2.10".into())));
    // Straight from a client, its own header is ignored.
    assert_eq!(
        check(&p, from("198.51.100.20").header("x-forwarded-for", "192.0.2.10")),
        (Some(403), Some("198.51.100.20".into()))
    );
}

#[test]
fn a_spoofed_forwarded_for_through_the_proxy_does_not_get_in() {
    let p = filter(r#"{"allow":["192.0.2.0/24"],"trusted_proxies":["10.0.0.5"]}"#);
    // The client sent `X-Forwarded-For: 192.0.2.10`; the proxy appended the
    // address it saw (198.51.100.20). The leftmost entry is the client's word.
    let req = from("10.0.0.5").header("x-forwarded-for", "192.0.2.10, 198.51.100.20");
    assert_eq!(check(&p, req), (Some(403), Some("198.51.100.20".into())));
    // Claiming to be the proxy itself does not help either.
    let req = from("10.0.0.5").header("x-forwarded-for", "192.0.2.10, 10.0.0.5, 198.51.100.20");
    assert_eq!(check(&p, req).0, Some(403));
}

#[test]
fn multiple_trusted_proxies() {
    let p = filter(r#"{"deny":["198.51.100.0/24"],"trusted_proxies":["10.0.0.0/8","203.0.113.0/24"]}"#);
    let req = from("10.0.0.2")
        .header("x-forwarded-for", "192.0.2.1, 198.51.100.20")
        .header("x-forwarded-for", "203.0.113.4, 10.1.1.1");
    assert_eq!(check(&p, req), (Some(403), Some("198.51.100.20".into())));
    let req = from("10.0.0.2").header("x-forwarded-for", "198.51.100.20, 192.0.2.1, 203.0.113.4");
    assert_eq!(check(&p, req), (None, Some("192.0.2.1".into())));
}

#[test]
fn malformed_forwarded_for_uses_the_peer_and_logs() {
    let p = filter(r#"{"allow":["192.0.2.0/24"],"trusted_proxies":["10.0.0.0/8"]}"#);
    let req = from("10.0.0.2").header("x-forwarded-for", "192.0.2.10, bogus");
    assert_eq!(check(&p, req), (Some(403), Some("10.0.0.2".into())));
    let logs = testing::logs();
    assert!(
        logs.iter().any(|(level, m)| *level == Level::Warn && m.contains("\"bogus\"") && m.contains("10.0.0.2")),
        "{logs:?}"
    );
}

#[test]
fn another_header_as_the_source() {
    let p = filter(r#"{"allow":["192.0.2.0/24"],"trusted_proxies":["10.0.0.5"],"header":"X-Real-IP"}"#);
    assert_eq!(check(&p, from("10.0.0.5").header("x-real-ip", "192.0.2.10")), (None, Some("192.0.2.10".into())));
    // The default header is not consulted any more.
    assert_eq!(check(&p, from("10.0.0.5").header("x-forwarded-for", "192.0.2.10")).0, Some(403));
    assert_eq!(check(&p, from("203.0.113.1").header("x-real-ip", "192.0.2.10")).0, Some(403));
}

#[test]
fn resolve_only_sets_the_context() {
    let p = filter(r#"{"trusted_proxies":["10.0.0.0/8"]}"#);
    assert_eq!(
        check(&p, from("10.0.0.2").header("x-forwarded-for", "2001:db8::7")),
        (None, Some("2001:db8::7".into()))
    );
}

#[test]
fn bad_configs_are_refused_with_a_reason() {
    assert!(refused("{}").contains("nothing to do"));
    assert!(refused(r#"{"allow":["10.0.0.0/33"]}"#).starts_with("allow: `10.0.0.0/33`"));
    assert!(refused(r#"{"deny":["10.1.2.3/8"]}"#).contains("\"10.0.0.0/8\""));
    assert!(refused(r#"{"deny":["x"],"trusted_proxies":[]}"#).starts_with("deny: `x` is not an IP address"));
    assert!(refused(r#"{"allow":["::/0"],"trusted_proxies":["10.0.0.0/8x"]}"#).starts_with("trusted_proxies:"));
    assert!(refused(r#"{"allow":["::/0"],"header":"x-real-ip"}"#).contains("needs trusted_proxies"));
    assert!(refused(r#"{"trusted_proxies":["10.0.0.1"],"header":"bad header"}"#).contains("not a valid header name"));
    assert!(refused(r#"{"deny":["::1"],"status":200}"#).contains("not an error status"));
    assert!(refused(r#"{"denied":["::1"]}"#).contains("unknown field `denied`"));
}

/// Every answer depends on the client's address and the forwarding header
/// alone (`depends_on`), so the gateway keeps each.
#[test]
fn every_answer_is_one_the_gateway_keeps() {
    testing::reset();
    let p = filter(r#"{"allow":["203.0.113.0/24"],"trusted_proxies":["10.0.0.0/8"]}"#);
    for mut req in
        [from("203.0.113.7"), from("198.51.100.1"), from("10.1.1.1").header("x-forwarded-for", "203.0.113.9")]
    {
        let (_, kept) = testing::on_request_kept(&p, &mut req);
        assert_eq!(kept, Ok(()));
    }
    // A malformed entry from a trusted proxy is logged as a warning: that
    // answer is given by a call every time, so the warning is never lost.
    let (_, kept) = testing::on_request_kept(&p, &mut from("10.1.1.1").header("x-forwarded-for", "not-an-ip"));
    assert_eq!(kept, Err("logged a warning".into()));
}
