//! `Cache-Control` and the freshness rules the cache applies (a practical
//! subset of RFC 9111 for a shared cache; README.md lists what is left out).

use std::time::{Duration, UNIX_EPOCH};

/// A delta-seconds argument: a number, or present but unreadable (which
/// RFC 9111 §1.2.2 says to treat as already stale).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seconds {
    Valid(u64),
    Invalid,
}

/// The directives the cache acts on, from every `Cache-Control` line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub max_age: Option<Seconds>,
    pub s_maxage: Option<Seconds>,
}

/// The largest delta-seconds kept; bigger values mean "as long as you like"
/// (RFC 9111 §1.2.2).
const MAX_DELTA: u64 = 1 << 31;

impl CacheControl {
    pub fn parse(values: &[Vec<u8>]) -> Self {
        let mut cc = Self::default();
        for value in values {
            for directive in String::from_utf8_lossy(value).split(',') {
                let (name, arg) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                match name.to_ascii_lowercase().as_str() {
                    // `no-cache="set-cookie"` and `private="x"` qualify the
                    // directive to some fields; treating them as the whole
                    // directive is the conservative reading.
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = true,
                    // The first occurrence counts.
                    "max-age" if cc.max_age.is_none() => cc.max_age = Some(seconds(arg)),
                    "s-maxage" if cc.s_maxage.is_none() => cc.s_maxage = Some(seconds(arg)),
                    _ => {}
                }
            }
        }
        cc
    }
}

fn seconds(arg: Option<&str>) -> Seconds {
    match arg {
        Some(a) if !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) => {
            Seconds::Valid(a.parse::<u64>().unwrap_or(MAX_DELTA).min(MAX_DELTA))
        }
        _ => Seconds::Invalid,
    }
}

/// How long a response may be served from the cache, or why it may not be
/// stored at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Fresh for this many seconds from its creation (before subtracting
    /// its `Age`).
    Lifetime(u64),
    NotStorable(&'static str),
}

/// The response's freshness lifetime: `s-maxage`, else `max-age`, else
/// `Expires` − `Date`, else `default_s` (the configured `ttl`).
pub fn freshness(
    cc: &CacheControl,
    expires: Option<&[u8]>,
    date: Option<&[u8]>,
    now_ms: u64,
    default_s: u64,
) -> Freshness {
    if cc.no_store {
        return Freshness::NotStorable("no-store");
    }
    if cc.private {
        return Freshness::NotStorable("private");
    }
    // Storing and revalidating every time would need conditional requests
    // to the upstream; not storing gives the same answers.
    if cc.no_cache {
        return Freshness::NotStorable("no-cache");
    }
    let lifetime = match (cc.s_maxage, cc.max_age) {
        (Some(Seconds::Valid(s)), _) | (None, Some(Seconds::Valid(s))) => s,
        (Some(Seconds::Invalid), _) | (None, Some(Seconds::Invalid)) => {
            return Freshness::NotStorable("unreadable max-age");
        }
        (None, None) => match expires {
            // An unreadable Expires means "already expired" (RFC 9111 §5.3).
            Some(e) => match http_date_ms(e) {
                Some(expires_ms) => {
                    let base = date.and_then(http_date_ms).unwrap_or(now_ms);
                    expires_ms.saturating_sub(base) / 1000
                }
                None => 0,
            },
            None => default_s,
        },
    };
    if lifetime == 0 { Freshness::NotStorable("stale when received") } else { Freshness::Lifetime(lifetime) }
}

/// An HTTP-date as milliseconds since the epoch.
fn http_date_ms(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let t = httpdate::parse_http_date(text.trim()).ok()?;
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    u64::try_from(since.as_millis()).ok()
}

/// A response's `Age` (whole seconds); absent or unreadable is 0.
pub fn age_s(value: Option<&[u8]>) -> u64 {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0)
        .min(MAX_DELTA)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(lines: &[&str]) -> CacheControl {
        CacheControl::parse(&lines.iter().map(|l| l.as_bytes().to_vec()).collect::<Vec<_>>())
    }

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn directives_from_every_line() {
        let c = cc(&["public, Max-Age=60", "S-MAXAGE=\"30\", must-revalidate"]);
        assert!(c.public && c.must_revalidate && !c.no_store && !c.private);
        assert_eq!(c.max_age, Some(Seconds::Valid(60)));
        assert_eq!(c.s_maxage, Some(Seconds::Valid(30)));
        assert_eq!(cc(&["max-age=10, max-age=99"]).max_age, Some(Seconds::Valid(10)));
        assert_eq!(cc(&["max-age=abc"]).max_age, Some(Seconds::Invalid));
        assert_eq!(cc(&["max-age"]).max_age, Some(Seconds::Invalid));
        assert_eq!(cc(&["max-age=-1"]).max_age, Some(Seconds::Invalid));
        assert_eq!(cc(&["max-age=99999999999999999999999"]).max_age, Some(Seconds::Valid(1 << 31)));
        assert!(cc(&["no-cache=\"set-cookie\""]).no_cache);
        assert!(cc(&["private=\"x-user\""]).private);
        assert_eq!(cc(&[]), CacheControl::default());
    }

    #[test]
    fn lifetime_precedence() {
        let f = |lines: &[&str], expires: Option<&str>, date: Option<&str>| {
            freshness(&cc(lines), expires.map(str::as_bytes), date.map(str::as_bytes), NOW, 60)
        };
        assert_eq!(f(&["s-maxage=10, max-age=100"], None, None), Freshness::Lifetime(10));
        assert_eq!(f(&["max-age=100"], Some("Thu, 01 Jan 1970 00:00:00 GMT"), None), Freshness::Lifetime(100));
        assert_eq!(f(&[], None, None), Freshness::Lifetime(60), "the configured ttl");
        assert_eq!(f(&["public"], None, None), Freshness::Lifetime(60));
        assert_eq!(
            f(&[], Some("Sun, 06 Nov 1994 08:50:37 GMT"), Some("Sun, 06 Nov 1994 08:49:37 GMT")),
            Freshness::Lifetime(60),
            "Expires - Date"
        );
        assert_eq!(
            f(&[], Some("Sunday, 06-Nov-94 08:50:37 GMT"), Some("Sun Nov  6 08:49:37 1994")),
            Freshness::Lifetime(60)
        );
        assert_eq!(f(&[], Some("Sun, 06 Nov 1994 08:49:37 GMT"), None), Freshness::NotStorable("stale when received"));
        assert_eq!(f(&[], Some("0"), None), Freshness::NotStorable("stale when received"));
        assert_eq!(f(&["max-age=0"], None, None), Freshness::NotStorable("stale when received"));
        assert_eq!(f(&["max-age=x"], None, None), Freshness::NotStorable("unreadable max-age"));
        assert_eq!(f(&["max-age=60, no-store"], None, None), Freshness::NotStorable("no-store"));
        assert_eq!(f(&["private, max-age=60"], None, None), Freshness::NotStorable("private"));
        assert_eq!(f(&["no-cache"], None, None), Freshness::NotStorable("no-cache"));
        assert_eq!(freshness(&cc(&[]), None, None, NOW, 0), Freshness::NotStorable("stale when received"));
    }

    #[test]
    fn age_header() {
        assert_eq!(age_s(Some(b"25")), 25);
        assert_eq!(age_s(Some(b" 7 ")), 7);
        assert_eq!(age_s(Some(b"-3")), 0);
        assert_eq!(age_s(None), 0);
    }
}
