//! Unsigned integers (and IP addresses) in decimal, written on the stack:
//! for the hot paths (HTTP heads, plugin headers and cache keys) where
//! `fmt` into a new `String` costs more than the rest of the work.

/// An address as text, as `Display` writes it; an IPv4 one (the common
/// case) without `fmt`'s machinery, which costs several times the rest.
pub fn ip_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else { return ip.to_string() };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        text.push_str(Decimal::new(u64::from(octet)).as_str());
    }
    text
}

/// A `u64` in decimal.
#[derive(Debug, Clone, Copy)]
pub struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    pub fn new(mut n: u64) -> Self {
        let mut digits = [b'0'; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                return Self { digits, start };
            }
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_ref()).unwrap_or("0")
    }
}

impl AsRef<[u8]> for Decimal {
    fn as_ref(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

impl From<Decimal> for Vec<u8> {
    fn from(d: Decimal) -> Self {
        d.as_ref().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::{Decimal, ip_text};

    #[test]
    fn addresses_read_as_their_display_form() {
        for ip in ["0.0.0.0", "127.0.0.1", "10.20.30.4", "255.255.255.255", "::1", "2001:db8::7", "::ffff:10.0.0.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn plain_decimals() {
        for n in [0, 7, 10, 999, 1_000_000_007, u64::MAX] {
            let d = Decimal::new(n);
            assert_eq!(d.as_str(), n.to_string());
            assert_eq!(d.as_ref(), n.to_string().as_bytes());
            assert_eq!(Vec::<u8>::from(d), n.to_string().into_bytes());
        }
    }
}
