//! Address ranges: `10.0.0.0/8`, `2001:db8::/32`, or a single address.
//!
//! Written with `std::net` rather than a crate: parsing and matching a
//! prefix is a mask and a compare. IPv4-mapped IPv6 addresses
//! (`::ffff:10.1.2.3`) are IPv4 here, in rules and in requests alike, so a
//! dual-stack listener does not slip a v4 client past a v4 rule.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A network: the address with its host bits clear, and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cidr {
    V4 { net: u32, len: u8 },
    V6 { net: u128, len: u8 },
}

impl Cidr {
    /// Parses `addr/len` or a single `addr` (a /32 or /128).
    pub fn parse(text: &str) -> Result<Self, String> {
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
        let cidr = match ip {
            IpAddr::V4(v4) => Self::V4 { net: u32::from(v4), len },
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                // `::ffff:10.0.0.0/104` is `10.0.0.0/8`.
                Some(v4) if len >= 96 => Self::V4 { net: u32::from(v4), len: len - 96 },
                _ => Self::V6 { net: u128::from(v6), len },
            },
        };
        let network = cidr.network();
        if network != cidr {
            return Err(format!(
                "`{text}` has bits set past its /{len} prefix, so it is unclear what is meant; \
                 write the network (\"{network}\") or the single address (without the /{len})"
            ));
        }
        Ok(cidr)
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
}
