//! Who the client is: the socket peer, or — when the peer is a proxy we
//! trust — the address that proxy reports in `X-Forwarded-For` (or the
//! configured header).
//!
//! Every proxy appends the address it received the request from, so the
//! list reads `client, proxy1, proxy2` and only its right end was written by
//! machines we trust: the leftmost entry is whatever the client sent. The
//! walk goes right to left, skipping trusted proxies, and stops at the first
//! address that is not one — the furthest hop we can vouch for.

use std::net::{IpAddr, SocketAddr};

use wasmgate_sdk::cidr::{Cidr, any_contains, canonical};

/// The outcome of resolving a request's client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Client {
    /// The socket peer: not a trusted proxy, or one that forwarded nothing.
    Peer(IpAddr),
    /// The address a trusted proxy reported.
    Forwarded(IpAddr),
    /// A trusted proxy's header had an entry that is not an address; the
    /// peer is taken as the client.
    Malformed { peer: IpAddr, entry: String },
}

impl Client {
    pub fn ip(&self) -> IpAddr {
        match self {
            Self::Peer(ip) | Self::Forwarded(ip) | Self::Malformed { peer: ip, .. } => *ip,
        }
    }
}

/// Finds the client behind `trusted` proxies.
#[derive(Debug)]
pub struct Resolver {
    pub trusted: Vec<Cidr>,
    /// The header trusted proxies report the client in (lowercase).
    pub header: String,
}

impl Resolver {
    /// `peer` is the socket address (canonical); `values` every value of the
    /// configured header, in order.
    pub fn resolve(&self, peer: IpAddr, values: &[Vec<u8>]) -> Client {
        if !any_contains(&self.trusted, peer) {
            return Client::Peer(peer);
        }
        // Several header lines make one list, in order (RFC 9110 §5.3).
        let joined: Vec<String> = values.iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect();
        let joined = joined.join(",");
        if joined.trim().is_empty() {
            return Client::Peer(peer);
        }
        let mut furthest_trusted = None;
        for entry in joined.rsplit(',').map(str::trim) {
            let Some(ip) = parse_entry(entry) else {
                return Client::Malformed { peer, entry: entry.to_owned() };
            };
            if !any_contains(&self.trusted, ip) {
                return Client::Forwarded(ip);
            }
            furthest_trusted = Some(ip);
        }
        // Every hop is one of ours: the leftmost is the client.
        furthest_trusted.map_or(Client::Peer(peer), Client::Forwarded)
    }
}

/// One list entry: an address, optionally with a port (`192.0.2.7:4711`,
/// `[2001:db8::7]:4711`) or in brackets (`[2001:db8::7]`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse::<IpAddr>().ok())?;
    Some(canonical(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(trusted: &[&str]) -> Resolver {
        Resolver {
            trusted: trusted.iter().map(|t| Cidr::parse(t).expect("valid CIDR")).collect(),
            header: "x-forwarded-for".into(),
        }
    }

    fn ip(t: &str) -> IpAddr {
        canonical(t.parse().expect("valid IP"))
    }

    fn resolve(r: &Resolver, peer: &str, xff: &[&str]) -> Client {
        let values: Vec<Vec<u8>> = xff.iter().map(|v| v.as_bytes().to_vec()).collect();
        r.resolve(ip(peer), &values)
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_send() {
        let r = resolver(&["10.0.0.0/8"]);
        assert_eq!(resolve(&r, "203.0.113.9", &["10.1.1.1"]), Client::Peer(ip("203.0.113.9")));
        assert_eq!(resolve(&r, "203.0.113.9", &["garbage"]), Client::Peer(ip("203.0.113.9")));
        assert_eq!(resolve(&resolver(&[]), "127.0.0.1", &["10.1.1.1"]), Client::Peer(ip("127.0.0.1")));
    }

    #[test]
    fn a_trusted_proxy_without_a_header_is_the_client() {
        let r = resolver(&["10.0.0.0/8"]);
        assert_eq!(resolve(&r, "10.0.0.5", &[]), Client::Peer(ip("10.0.0.5")));
        assert_eq!(resolve(&r, "10.0.0.5", &["  "]), Client::Peer(ip("10.0.0.5")));
    }

    #[test]
    fn spoofed_entries_left_of_the_proxy_are_ignored() {
        // The client sent `X-Forwarded-For: 10.9.9.9` (an address it hopes is
        // allowed); the trusted proxy appended the address it really saw.
        let r = resolver(&["10.0.0.5/32"]);
        assert_eq!(resolve(&r, "10.0.0.5", &["10.9.9.9, 198.51.100.20"]), Client::Forwarded(ip("198.51.100.20")));
        // Even when what the client sent is garbage or a trusted address.
        assert_eq!(resolve(&r, "10.0.0.5", &["not-an-ip, 198.51.100.20"]), Client::Forwarded(ip("198.51.100.20")));
        assert_eq!(resolve(&r, "10.0.0.5", &["10.0.0.5, 198.51.100.20"]), Client::Forwarded(ip("198.51.100.20")));
        // A second header line from the client comes first too.
        assert_eq!(resolve(&r, "10.0.0.5", &["1.1.1.1", "198.51.100.20"]), Client::Forwarded(ip("198.51.100.20")));
    }

    #[test]
    fn multiple_proxies_are_skipped_right_to_left() {
        // client → CDN edge (203.0.113.0/24) → load balancer (10.0.0.0/8) → gateway
        let r = resolver(&["10.0.0.0/8", "203.0.113.0/24"]);
        assert_eq!(
            resolve(&r, "10.0.0.2", &["6.6.6.6, 198.51.100.20, 203.0.113.4"]),
            Client::Forwarded(ip("198.51.100.20"))
        );
        // Every hop trusted: the leftmost is the client.
        assert_eq!(resolve(&r, "10.0.0.2", &["10.3.3.3, 203.0.113.4"]), Client::Forwarded(ip("10.3.3.3")));
    }

    #[test]
    fn malformed_entries_from_trusted_hops_fall_back_to_the_peer() {
        let r = resolver(&["10.0.0.0/8"]);
        let m = resolve(&r, "10.0.0.2", &["198.51.100.20, unknown"]);
        assert_eq!(m, Client::Malformed { peer: ip("10.0.0.2"), entry: "unknown".into() });
        assert_eq!(m.ip(), ip("10.0.0.2"));
        assert!(matches!(resolve(&r, "10.0.0.2", &["198.51.100.20,,10.0.0.3"]), Client::Malformed { .. }));
        assert!(matches!(resolve(&r, "10.0.0.2", &["198.51.100.20, 10.0.0.256"]), Client::Malformed { .. }));
    }

    #[test]
    fn entries_with_ports_brackets_and_mapped_addresses() {
        let r = resolver(&["10.0.0.0/8"]);
        assert_eq!(resolve(&r, "10.0.0.2", &["198.51.100.20:4711"]), Client::Forwarded(ip("198.51.100.20")));
        assert_eq!(resolve(&r, "10.0.0.2", &["[2001:db8::7]:4711"]), Client::Forwarded(ip("2001:db8::7")));
        assert_eq!(resolve(&r, "10.0.0.2", &["[2001:db8::7]"]), Client::Forwarded(ip("2001:db8::7")));
        assert_eq!(resolve(&r, "10.0.0.2", &["2001:db8::7"]), Client::Forwarded(ip("2001:db8::7")));
        // A mapped proxy address is still the trusted v4 proxy; a mapped client is v4.
        assert_eq!(resolve(&r, "::ffff:10.0.0.2", &["::ffff:198.51.100.20"]), Client::Forwarded(ip("198.51.100.20")));
        assert_eq!(
            resolve(&r, "10.0.0.2", &["198.51.100.20, ::ffff:10.0.0.3"]),
            Client::Forwarded(ip("198.51.100.20"))
        );
    }
}
