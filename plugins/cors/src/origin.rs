//! Origins: the rules `allowed_origins` names, checked once at config time,
//! and the `Origin` header browsers send, matched against them per request.
//!
//! Browsers serialise an origin as `scheme://host[:port]`, lowercase, with
//! the default port left out and no path. The rules are normalised to the
//! same form, so matching is string comparison, never a regex.

/// One entry of `allowed_origins` other than `"*"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    /// `https://app.example.com`: exactly this origin.
    Exact(String),
    /// `https://*.example.com`: any subdomain of `example.com` (at any
    /// depth), same scheme, same port — not `example.com` itself.
    Subdomains { scheme: String, suffix: String, port: Option<String> },
}

impl OriginRule {
    /// Parses one configured origin, saying what is wrong and how to write
    /// it when it is not an origin.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        // Operators paste URLs; a bare trailing slash is still clearly an origin.
        let origin = lower.strip_suffix('/').unwrap_or(&lower);
        let hint = "write it as scheme://host[:port], e.g. \"https://app.example.com\" or \"https://*.example.com\"";
        if origin == "null" {
            return Err(format!(
                "`{text}`: the `null` origin is what sandboxed iframes and file: pages send, so allowing it \
                 lets any of them in; list the real origins instead"
            ));
        }
        let (scheme, host, port) = split(origin).ok_or_else(|| format!("`{text}` is not an origin; {hint}"))?;
        if !valid_scheme(scheme) {
            return Err(format!("`{text}`: `{scheme}` is not a URL scheme; {hint}"));
        }
        // As browsers write it: a scheme's default port left out (a rule
        // with `:443` never matched), the number without leading zeros.
        let port = match port {
            None => None,
            Some(p) => {
                let n: u16 = p.parse().map_err(|_| format!("`{text}`: `{p}` is not a port; {hint}"))?;
                (!matches!((scheme, n), ("https", 443) | ("http", 80))).then(|| n.to_string())
            }
        };
        if let Some(suffix) = host.strip_prefix("*.") {
            if !valid_host(suffix) || suffix.starts_with('[') {
                return Err(format!("`{text}`: `{suffix}` is not a host name; {hint}"));
            }
            if !suffix.contains('.') {
                return Err(format!(
                    "`{text}` would allow every site under the top-level domain `{suffix}`; \
                     wildcards need a registered domain, e.g. \"https://*.example.com\""
                ));
            }
            return Ok(Self::Subdomains { scheme: scheme.to_owned(), suffix: format!(".{suffix}"), port });
        }
        if host.contains('*') {
            return Err(format!("`{text}`: only a leading `*.` label is supported, as in \"https://*.example.com\""));
        }
        if !valid_host(host) {
            return Err(format!("`{text}`: `{host}` is not a host name; {hint}"));
        }
        Ok(Self::Exact(match port {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        }))
    }

    /// Whether the browser's `Origin` value (already lowercased) matches.
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            Self::Exact(o) => o == origin,
            Self::Subdomains { scheme, suffix, port } => {
                let Some((s, host, p)) = split(origin) else {
                    return false;
                };
                // At least one label before the suffix, and only host-name
                // characters in it: `https://.example.com` and
                // `https://a/b.example.com` are not subdomains.
                let label_ok = host.strip_suffix(suffix.as_str()).is_some_and(|sub| {
                    !sub.is_empty()
                        && !sub.starts_with('.')
                        && sub.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                });
                s == scheme && label_ok && p == port.as_deref()
            }
        }
    }
}

/// `scheme://host[:port]` into its parts; `None` with a path, query,
/// fragment or user info.
fn split(origin: &str) -> Option<(&str, &str, Option<&str>)> {
    let (scheme, rest) = origin.split_once("://")?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    // `[v6]:port` keeps its colons inside the brackets.
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (inner, after) = v6.split_once(']')?;
            let host = &rest[..inner.len() + 2];
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':')?)),
            }
        }
        None => match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        },
    };
    if host.is_empty() || port.is_some_and(str::is_empty) {
        return None;
    }
    Some((scheme, host, port))
}

fn valid_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

fn valid_host(h: &str) -> bool {
    if let Some(v6) = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !h.is_empty()
        && !h.starts_with(['.', '-'])
        && !h.ends_with('.')
        && !h.contains("..")
        && h.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> OriginRule {
        OriginRule::parse(text).expect("valid origin")
    }

    #[test]
    fn exact_origins_are_normalised() {
        assert_eq!(rule("HTTPS://App.Example.com/"), OriginRule::Exact("https://app.example.com".into()));
        assert_eq!(rule("http://localhost:3000"), OriginRule::Exact("http://localhost:3000".into()));
        assert_eq!(rule("http://[::1]:8080"), OriginRule::Exact("http://[::1]:8080".into()));
        // The default port, as browsers leave it out of `Origin` (written
        // with it, the rule never matched); a port without leading zeros.
        assert_eq!(rule("https://app.example.com:443"), OriginRule::Exact("https://app.example.com".into()));
        assert_eq!(rule("http://app.example.com:0080"), OriginRule::Exact("http://app.example.com".into()));
        assert_eq!(rule("https://app.example.com:08443"), OriginRule::Exact("https://app.example.com:8443".into()));
        assert!(rule("https://*.example.com:443").matches("https://a.example.com"));
        assert!(rule("https://a.example.com").matches("https://a.example.com"));
        assert!(!rule("https://a.example.com").matches("http://a.example.com"));
        assert!(!rule("https://a.example.com").matches("https://a.example.com:8443"));
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let r = rule("https://*.example.com");
        assert!(r.matches("https://app.example.com"));
        assert!(r.matches("https://a.b.example.com"));
        assert!(!r.matches("https://example.com"), "the apex is not a subdomain");
        assert!(!r.matches("https://evil-example.com"));
        assert!(!r.matches("https://example.com.evil.org"));
        assert!(!r.matches("https://app.example.com.evil.org"));
        assert!(!r.matches("http://app.example.com"), "scheme must match");
        assert!(!r.matches("https://app.example.com:8443"), "port must match");
        assert!(!r.matches("https://.example.com"));
        assert!(!r.matches("https://a_b.example.com"));
        assert!(!r.matches("https://x.example.com/path"));
        assert!(!r.matches("https://user@x.example.com"));
        let with_port = rule("https://*.example.com:8443");
        assert!(with_port.matches("https://app.example.com:8443"));
        assert!(!with_port.matches("https://app.example.com"));
    }

    #[test]
    fn bad_origins_are_refused_with_a_reason() {
        let err = |t: &str| OriginRule::parse(t).err().unwrap_or_default();
        assert!(err("example.com").contains("not an origin"));
        assert!(err("https://example.com/app").contains("not an origin"));
        assert!(err("https://example.com:99999").contains("not a port"));
        assert!(err("https://*.com").contains("top-level domain"));
        assert!(err("https://app.*.example.com").contains("leading `*.`"));
        assert!(err("https://*example.com").contains("leading `*.`"));
        assert!(err("null").contains("sandboxed"));
        assert!(err("1http://x").contains("not a URL scheme"));
        assert!(err("https://exa mple.com").contains("not an origin"));
        assert!(err("https://-bad.com").contains("not a host name"));
    }
}
