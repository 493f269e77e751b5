//! The egress proxy a registry is reached through when its config names
//! none: the environment's, as Go (and so Docker) reads it —
//! `HTTPS_PROXY`/`https_proxy` for HTTPS, `HTTP_PROXY`/`http_proxy` for
//! plain HTTP, except for loopback and `localhost` and the hosts
//! `NO_PROXY`/`no_proxy` lists. Registry traffic only: upstreams and
//! plugins' calls never take it.

use std::net::IpAddr;

use wasmgate_common::cidr::{self, Cidr};

use crate::config::{Proxy, Secret};

/// The environment's proxy for `host:port` (`None` without one, or for a
/// host `NO_PROXY` lists); `Err` says what is wrong with the variable,
/// without its value (it may hold a password).
pub fn from_env(https: bool, host: &str, port: u16) -> Result<Option<Proxy>, String> {
    let names = if https { ["HTTPS_PROXY", "https_proxy"] } else { ["HTTP_PROXY", "http_proxy"] };
    let Some((name, url)) = variable(names) else { return Ok(None) };
    if local(host) || variable(["NO_PROXY", "no_proxy"]).is_some_and(|(_, hosts)| bypassed(&hosts, host, port)) {
        return Ok(None);
    }
    parse(&url).map(Some).map_err(|e| format!("{name}: {e}"))
}

/// The first of `names` set and not empty, with its name.
fn variable(names: [&'static str; 2]) -> Option<(&'static str, String)> {
    names.into_iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
}

/// `[http://][USER[:PASSWORD]@]HOST[:PORT][/]`: a proxy's URL as the
/// environment writes it (no scheme means `http://`).
fn parse(url: &str) -> Result<Proxy, String> {
    let url = url.trim();
    let rest = match url.split_once("://") {
        None => url,
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err("a proxy reached over TLS (https://) is not supported: give its http:// address".into());
        }
        Some(_) => return Err("only an HTTP proxy (http://HOST:PORT) is supported".into()),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let (userinfo, address) = match authority.rsplit_once('@') {
        Some((userinfo, address)) => (Some(userinfo), address),
        None => (None, authority),
    };
    let mut proxy = Proxy::parse(&format!("http://{address}")).map_err(|_| "not [http://]HOST[:PORT]".to_owned())?;
    proxy.authorization = userinfo.map(|userinfo| {
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let decode = |part: &str| wasmgate_common::query::decode(part, false);
        Secret::new(super::client::basic(&decode(user), &decode(password)))
    });
    Ok(proxy)
}

/// Loopback and `localhost`, which no proxy is asked for (as Go does).
fn local(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `NO_PROXY`'s `hosts` (comma-separated) take `host:port` out:
/// `*`; a name and its subdomains (`.example.com`: the subdomains only); an
/// address or CIDR block (its host bits ignored); any of them with `:PORT`
/// for that port only.
fn bypassed(hosts: &str, host: &str, port: u16) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.');
    let ip = host.parse::<IpAddr>().ok();
    hosts.split(',').map(str::trim).filter(|e| !e.is_empty()).any(|entry| {
        if entry == "*" {
            return true;
        }
        let (name, only) = split_port(entry);
        if only.is_some_and(|p| p != port) {
            return false;
        }
        if let Some(ip) = ip {
            let name = name.trim_start_matches('[').trim_end_matches(']');
            return Cidr::parse_masked(name).is_ok_and(|block| block.contains(cidr::canonical(ip)));
        }
        let lower = name.to_ascii_lowercase();
        let (name, subdomains_only) = match lower.strip_prefix("*.").or_else(|| lower.strip_prefix('.')) {
            Some(name) => (name.trim_end_matches('.'), true),
            None => (lower.trim_end_matches('.'), false),
        };
        let host = host.to_ascii_lowercase();
        !name.is_empty() && ((host == name && !subdomains_only) || host.ends_with(&format!(".{name}")))
    })
}

/// `name:PORT` as the name and port; a bare IPv6 address has no port.
fn split_port(entry: &str) -> (&str, Option<u16>) {
    match entry.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') || name.ends_with(']') => match port.parse() {
            Ok(port) => (name, Some(port)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_url_as_the_environment_writes_it() {
        let p = parse("http://proxy.corp:3128/").unwrap();
        assert_eq!((p.host.as_str(), p.port, p.authorization.is_none()), ("proxy.corp", 3128, true));
        let p = parse("proxy.corp:3128").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        let p = parse("HTTP://alice:p%40ss@10.0.0.1:8080").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("10.0.0.1", 8080));
        let basic = super::super::client::basic(b"alice", b"p@ss");
        assert_eq!(p.authorization, Some(Secret::new(basic.clone())));
        let user_only = parse("http://alice@proxy:3128").unwrap().authorization;
        assert_eq!(user_only, Some(Secret::new(super::super::client::basic(b"alice", b""))), "user: as curl sends it");
        // Shown, logged: never the password.
        assert!(!format!("{p} {p:?}").contains("p@ss") && !format!("{p:?}").contains(&basic), "{p:?}");
        for (url, said) in [
            ("https://proxy:3128", "over TLS"),
            ("socks5://proxy:1080", "only an HTTP proxy"),
            ("http://:s3cret@", "not [http://]HOST[:PORT]"),
        ] {
            let e = parse(url).unwrap_err();
            assert!(e.contains(said) && !e.contains("s3cret"), "{url}: {e}");
        }
    }

    #[test]
    fn no_proxy_takes_out_names_their_subdomains_addresses_blocks_and_ports() {
        let hosts = "corp.example, .internal.example,registry.corp:5000 ,10.1.0.0/8,fd00::1,[fd00::2]:443,fc00::/7";
        for (host, port, out) in [
            ("corp.example", 443, true),
            ("ghcr.corp.example", 443, true),
            ("GHCR.Corp.Example.", 443, true),
            ("badcorp.example", 443, false),
            ("internal.example", 443, false),
            ("ghcr.internal.example", 443, true),
            ("notinternal.example", 443, false),
            ("registry.corp", 5000, true),
            ("registry.corp", 443, false),
            ("10.200.2.3", 443, true),
            ("11.1.2.3", 443, false),
            ("[fd00::1]", 5000, true),
            ("fd00::2", 443, true),
            ("fd00::2", 80, true),
            ("fe80::1", 80, false),
            ("ghcr.io", 443, false),
        ] {
            assert_eq!(bypassed(hosts, host, port), out, "{host}:{port}");
        }
        assert!(bypassed("*", "ghcr.io", 443));
        assert!(!bypassed(" , ", "ghcr.io", 443));
        assert!(!bypassed("10.0.0.0/33,10.0.0.0/x,::/129", "10.0.0.1", 443));
    }

    #[test]
    fn loopback_and_localhost_never_take_a_proxy() {
        for host in ["localhost", "LOCALHOST.", "127.0.0.1", "127.9.9.9", "[::1]", "::1"] {
            assert!(local(host), "{host}");
        }
        for host in ["localhost.example", "10.0.0.1", "registry.test"] {
            assert!(!local(host), "{host}");
        }
    }
}
