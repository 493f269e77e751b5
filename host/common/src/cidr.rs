//! Address ranges: `10.0.0.0/8`, `2001:db8::/32`, or a single address.
//!
//! Written with `std::net` rather than a crate: parsing and matching a
//! prefix is a mask and a compare. IPv4-mapped IPv6 addresses
//! (`::ffff:10.1.2.3`) are IPv4 here, in rules and in requests alike, so a
//! dual-stack listener does not slip a v4 client past a v4 rule.
//!
//! [`client_behind`] finds a request's client behind proxies in such ranges:
//! the gateway's `server.trusted_proxies` and ip-filter's walk the same way.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A network: the address with its host bits clear, and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cidr {
    V4 { net: u32, len: u8 },
    V6 { net: u128, len: u8 },
}

impl Cidr {
    /// Parses `addr/len` or a single `addr` (a /32 or /128).
    pub fn parse(text: &str) -> Result<Self, String> {
        let cidr = Self::parse_any(text)?;
        let network = cidr.network();
        if network != cidr {
            let len = match cidr {
                Self::V4 { len, .. } | Self::V6 { len, .. } => len,
            };
            return Err(format!(
                "`{text}` has bits set past its /{len} prefix, so it is unclear what is meant; \
                 write the network (\"{network}\") or the single address (without the /{len})"
            ));
        }
        Ok(cidr)
    }

    /// [`parse`](Self::parse), with bits set past the prefix cleared rather
    /// than refused (`10.1.0.0/8` is `10.0.0.0/8`), as `NO_PROXY` lists are
    /// read.
    pub fn parse_masked(text: &str) -> Result<Self, String> {
        Self::parse_any(text).map(Self::network)
    }

    fn parse_any(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let (addr, len) = match t.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (t, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| {
            format!("`{text}` is not an IP address or CIDR; write it like \"10.0.0.0/8\", \"2001:db8::/32\" or \"192.0.2.7\"")
        })?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max && l.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("`{text}`: the prefix length must be a number from 0 to {max}")),
            },
        };
        Ok(match ip {
            IpAddr::V4(v4) => Self::V4 { net: u32::from(v4), len },
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                // `::ffff:10.0.0.0/104` is `10.0.0.0/8`.
                Some(v4) if len >= 96 => Self::V4 { net: u32::from(v4), len: len - 96 },
                _ => Self::V6 { net: u128::from(v6), len },
            },
        })
    }

    /// The same prefix with the host bits cleared.
    fn network(self) -> Self {
        match self {
            Self::V4 { net, len } => Self::V4 { net: net & mask32(len), len },
            Self::V6 { net, len } => Self::V6 { net: net & mask128(len), len },
        }
    }

    /// Whether `ip` (made canonical with [`canonical`]) is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Self::V4 { net, len }, IpAddr::V4(a)) => u32::from(a) & mask32(*len) == *net,
            (Self::V6 { net, len }, IpAddr::V6(a)) => u128::from(a) & mask128(*len) == *net,
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::V4 { net, len } => write!(f, "{}/{len}", Ipv4Addr::from(net)),
            Self::V6 { net, len } => write!(f, "{}/{len}", Ipv6Addr::from(net)),
        }
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is; others unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether any range in `list` holds `ip`.
pub fn any_contains(list: &[Cidr], ip: IpAddr) -> bool {
    list.iter().any(|c| c.contains(ip))
}

/// Who a request's client is ([`client_behind`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Client {
    /// The socket peer: not a trusted proxy, or one that forwarded nothing.
    Peer(IpAddr),
    /// The address a trusted proxy reported.
    Forwarded(IpAddr),
    /// A trusted proxy's list had an entry that is not an address; the
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

/// The client behind the proxies in `trusted`: `peer` (the socket's
/// address, canonical) when it is not one of them; otherwise the address
/// its forwarding list (`values`, every line of `X-Forwarded-For` or the
/// like, in order) reports.
///
/// Every proxy appends the address it received the request from, so the
/// list reads `client, proxy1, proxy2` and only its right end was written
/// by machines we trust: the leftmost entry is whatever the client sent.
/// The walk goes right to left, skipping trusted proxies, and stops at the
/// first address that is not one — the furthest hop we can vouch for.
/// Several lines make one list (RFC 9110 §5.3).
pub fn client_behind<'v, I>(trusted: &[Cidr], peer: IpAddr, values: I) -> Client
where
    I: IntoIterator<Item = &'v [u8]>,
    I::IntoIter: DoubleEndedIterator,
{
    if !any_contains(trusted, peer) {
        return Client::Peer(peer);
    }
    let mut furthest_trusted = None;
    // An empty entry met with none but empty ones to its right: a list
    // that is all blank is no list (the peer is the client); in one with
    // addresses, it is malformed.
    let mut blank = false;
    for entry in values.into_iter().rev().flat_map(|v| v.rsplit(|b| *b == b',')).map(<[u8]>::trim_ascii) {
        if entry.is_empty() && furthest_trusted.is_none() {
            blank = true;
            continue;
        }
        if blank {
            return Client::Malformed { peer, entry: String::new() };
        }
        let Some(ip) = parse_entry(entry) else {
            return Client::Malformed { peer, entry: String::from_utf8_lossy(entry).into_owned() };
        };
        if !any_contains(trusted, ip) {
            return Client::Forwarded(ip);
        }
        furthest_trusted = Some(ip);
    }
    // Every hop is one of ours: the leftmost is the client.
    furthest_trusted.map_or(Client::Peer(peer), Client::Forwarded)
}

/// One list entry: an address, optionally with a port (`192.0.2.7:4711`,
/// `[2001:db8::7]:4711`) or in brackets (`[2001:db8::7]`).
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry).ok()?;
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

    fn cidr(t: &str) -> Cidr {
        Cidr::parse(t).expect("valid CIDR")
    }

    fn ip(t: &str) -> IpAddr {
        canonical(t.parse().expect("valid IP"))
    }

    #[test]
    fn host_bits_are_refused_or_masked() {
        assert!(Cidr::parse("10.1.0.0/8").unwrap_err().contains("write the network (\"10.0.0.0/8\")"));
        assert_eq!(Cidr::parse_masked("10.1.0.0/8"), Ok(cidr("10.0.0.0/8")));
        assert_eq!(Cidr::parse_masked("fd00::1/7"), Ok(cidr("fc00::/7")));
        assert!(Cidr::parse_masked("10.0.0.0/33").is_err());
    }

    #[test]
    fn v4_edges() {
        assert_eq!(cidr("0.0.0.0/0"), Cidr::V4 { net: 0, len: 0 });
        assert!(cidr("0.0.0.0/0").contains(ip("255.255.255.255")));
        assert!(cidr("0.0.0.0/0").contains(ip("0.0.0.0")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")), "a v4 range never holds a v6 address");
        assert_eq!(cidr("192.0.2.7"), cidr("192.0.2.7/32"));
        assert!(cidr("192.0.2.7/32").contains(ip("192.0.2.7")));
        assert!(!cidr("192.0.2.7/32").contains(ip("192.0.2.8")));
        assert!(cidr("10.0.0.0/8").contains(ip("10.255.255.255")));
        assert!(!cidr("10.0.0.0/8").contains(ip("11.0.0.0")));
        assert!(cidr("172.16.0.0/12").contains(ip("172.31.0.1")));
        assert!(!cidr("172.16.0.0/12").contains(ip("172.32.0.1")));
        assert!(cidr(" 10.0.0.0/31 ").contains(ip("10.0.0.1")));
    }

    #[test]
    fn v6_edges() {
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
        assert!(!cidr("::/0").contains(ip("10.0.0.1")), "a v6 range never holds a v4 address");
        assert_eq!(cidr("2001:db8::1"), cidr("2001:db8::1/128"));
        assert!(cidr("2001:db8::1/128").contains(ip("2001:db8::1")));
        assert!(!cidr("2001:db8::1/128").contains(ip("2001:db8::2")));
        assert!(cidr("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!cidr("2001:db8::/32").contains(ip("2001:db9::1")));
        assert!(cidr("fe80::/10").contains(ip("febf::1")));
        assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        assert_eq!(ip("::ffff:10.1.2.3"), ip("10.1.2.3"));
        assert_eq!(cidr("::ffff:10.0.0.0/104"), cidr("10.0.0.0/8"));
        assert_eq!(cidr("::ffff:192.0.2.7"), cidr("192.0.2.7/32"));
        assert!(cidr("10.0.0.0/8").contains(ip("::ffff:10.9.9.9")));
        assert!(cidr("::ffff:10.0.0.0/104").contains(ip("10.9.9.9")));
    }

    #[test]
    fn bad_input_is_refused_with_a_message() {
        let err = |t: &str| Cidr::parse(t).err().unwrap_or_default();
        assert!(err("10.0.0.0/33").contains("from 0 to 32"));
        assert!(err("::/129").contains("from 0 to 128"));
        assert!(err("10.0.0.0/").contains("from 0 to 32"));
        assert!(err("10.0.0.0/-1").contains("from 0 to 32"));
        assert!(err("10.0.0.0/+8").contains("from 0 to 32"));
        assert!(err("10.0.0.0/8/8").contains("from 0 to 32"));
        assert!(err("10.0.0/8").contains("not an IP address"));
        assert!(err("256.0.0.1").contains("not an IP address"));
        assert!(err("010.0.0.1").contains("not an IP address"), "leading zeros could be octal");
        assert!(err("example.com").contains("not an IP address"));
        assert!(err("").contains("not an IP address"));
        assert!(err("fe80::1%eth0").contains("not an IP address"));
        let host_bits = err("10.1.2.3/8");
        assert!(host_bits.contains("\"10.0.0.0/8\""), "{host_bits}");
        assert!(err("2001:db8::1/32").contains("\"2001:db8::/32\""));
    }

    fn trusted(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|t| cidr(t)).collect()
    }

    fn resolve(trusted: &[Cidr], peer: &str, xff: &[&str]) -> Client {
        client_behind(trusted, ip(peer), xff.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_send() {
        let r = &trusted(&["10.0.0.0/8"]);
        assert_eq!(resolve(r, "203.0.113.9", &["10.1.1.1"]), Client::Peer(ip("203.0.113.9")));
        assert_eq!(resolve(r, "203.0.113.9", &["garbage"]), Client::Peer(ip("203.0.113.9")));
        assert_eq!(resolve(&[], "127.0.0.1", &["10.1.1.1"]), Client::Peer(ip("127.0.0.1")));
    }

    #[test]
    fn a_trusted_proxy_without_a_header_is_the_client() {
        let r = &trusted(&["10.0.0.0/8"]);
        assert_eq!(resolve(r, "10.0.0.5", &[]), Client::Peer(ip("10.0.0.5")));
        assert_eq!(resolve(r, "10.0.0.5", &["  "]), Client::Peer(ip("10.0.0.5")));
    }

    #[test]
    fn spoofed_entries_left_of_the_proxy_are_ignored() {
        // The client sent `X-Forwarded-For: 10.9.9.9` (an address it hopes is
        // allowed); the trusted proxy appended the address it really saw.
        let r = &trusted(&["10.0.0.5/32"]);
        assert_eq!(resolve(r, "10.0.0.5", &["10.9.9.9, 198.51.100.20"]), Client::Forwarded(ip("198.51.100.20")));
        // Even when what the client sent is garbage or a trusted address.
        assert_eq!(resolve(r, "10.0.0.5", &["not-an-ip, 198.51.100.20"]), Client::Forwarded(ip("198.51.100.20")));
        assert_eq!(resolve(r, "10.0.0.5", &["10.0.0.5, 198.51.100.20"]), Client::Forwarded(ip("198.51.100.20")));
        // A second header line from the client comes first too.
        assert_eq!(resolve(r, "10.0.0.5", &["1.1.1.1", "198.51.100.20"]), Client::Forwarded(ip("198.51.100.20")));
    }

    #[test]
    fn multiple_proxies_are_skipped_right_to_left() {
        // client → CDN edge (203.0.113.0/24) → load balancer (10.0.0.0/8) → gateway
        let r = &trusted(&["10.0.0.0/8", "203.0.113.0/24"]);
        assert_eq!(
            resolve(r, "10.0.0.2", &["6.6.6.6, 198.51.100.20, 203.0.113.4"]),
            Client::Forwarded(ip("198.51.100.20"))
        );
        // Every hop trusted: the leftmost is the client.
        assert_eq!(resolve(r, "10.0.0.2", &["10.3.3.3, 203.0.113.4"]), Client::Forwarded(ip("10.3.3.3")));
    }

    #[test]
    fn malformed_entries_from_trusted_hops_fall_back_to_the_peer() {
        let r = &trusted(&["10.0.0.0/8"]);
        let m = resolve(r, "10.0.0.2", &["198.51.100.20, unknown"]);
        assert_eq!(m, Client::Malformed { peer: ip("10.0.0.2"), entry: "unknown".into() });
        assert_eq!(m.ip(), ip("10.0.0.2"));
        assert!(matches!(resolve(r, "10.0.0.2", &["198.51.100.20,,10.0.0.3"]), Client::Malformed { .. }));
        assert!(matches!(resolve(r, "10.0.0.2", &["198.51.100.20, 10.0.0.256"]), Client::Malformed { .. }));
        // A line that ends in a comma has an empty entry; bytes beyond ASCII are no address.
        assert!(matches!(resolve(r, "10.0.0.2", &["198.51.100.20", "10.0.0.3,"]), Client::Malformed { .. }));
        let bytes: [&[u8]; 1] = [b"198.51.100.20, 10.0.0.\xff"];
        assert!(matches!(client_behind(r, ip("10.0.0.2"), bytes), Client::Malformed { .. }));
    }

    #[test]
    fn entries_with_ports_brackets_and_mapped_addresses() {
        let r = &trusted(&["10.0.0.0/8"]);
        assert_eq!(resolve(r, "10.0.0.2", &["198.51.100.20:4711"]), Client::Forwarded(ip("198.51.100.20")));
        assert_eq!(resolve(r, "10.0.0.2", &["[2001:db8::7]:4711"]), Client::Forwarded(ip("2001:db8::7")));
        assert_eq!(resolve(r, "10.0.0.2", &["[2001:db8::7]"]), Client::Forwarded(ip("2001:db8::7")));
        assert_eq!(resolve(r, "10.0.0.2", &["2001:db8::7"]), Client::Forwarded(ip("2001:db8::7")));
        // A mapped proxy address is still the trusted v4 proxy; a mapped client is v4.
        assert_eq!(resolve(r, "::ffff:10.0.0.2", &["::ffff:198.51.100.20"]), Client::Forwarded(ip("198.51.100.20")));
        assert_eq!(resolve(r, "10.0.0.2", &["198.51.100.20, ::ffff:10.0.0.3"]), Client::Forwarded(ip("198.51.100.20")));
    }
}
