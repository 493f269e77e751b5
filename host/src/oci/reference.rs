//! An OCI reference: `registry/repository[:tag][@sha256:digest]`.

use std::fmt;

/// Where a plugin is published: a repository of a registry, at a tag, a
/// manifest digest, or both (then the digest decides and the tag is only
/// read by people).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`, lowercase.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// The manifest's sha256.
    pub digest: Option<[u8; 32]>,
}

impl Reference {
    /// Parses `registry/repository[:tag][@sha256:digest]`. The registry is
    /// always named (no Docker Hub default): a gateway should not fetch code
    /// from a registry its config does not spell out.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, digest) = match text.split_once('@') {
            None => (text, None),
            Some((name, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| format!("`{text}`: a digest is `@sha256:` and 64 hex digits"))?;
                (name, Some(parse_hex(hex).ok_or_else(|| format!("`{text}`: `{hex}` is not 64 hex digits"))?))
            }
        };
        let (registry, path) = name.split_once('/').ok_or_else(|| {
            format!("`{text}` names no registry: write registry/repository, e.g. ghcr.io/acme/rate-limit:1.0")
        })?;
        if !looks_like_host(registry) {
            return Err(format!(
                "`{text}`: `{registry}` is not a registry host: write the registry in full \
                 (ghcr.io/..., registry.example.com:5000/...)"
            ));
        }
        // A tag is after the last `/` (a port is in the registry, already split off).
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag)),
            _ => (path, None),
        };
        if !valid_repository(repository) {
            return Err(format!(
                "`{text}`: `{repository}` is not a repository name (lowercase letters, digits and \
                 `.`, `_`, `-` between them, components joined by `/`)"
            ));
        }
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(format!(
                "`{text}`: `{tag}` is not a tag (up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`)"
            ));
        }
        if tag.is_none() && digest.is_none() {
            return Err(format!("`{text}` names neither a tag nor a digest: add :TAG or @sha256:DIGEST"));
        }
        Ok(Self {
            registry: registry.to_ascii_lowercase(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// What to ask the registry for: the digest when there is one.
    pub(crate) fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("sha256:{}", hex::encode(d)),
            (None, Some(tag)) => tag.clone(),
            (None, None) => "latest".to_owned(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@sha256:{}", hex::encode(d))?;
        }
        Ok(())
    }
}

/// 64 hex digits (either case) as 32 bytes.
pub(crate) fn parse_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    <[u8; 32]>::try_from(hex::decode(text).ok()?).ok()
}

/// A registry is a host with a dot, a port, or `localhost` (as Docker tells
/// one from a repository's first component): a DNS name or IPv4 address,
/// or an IPv6 address in brackets, with an optional port.
fn looks_like_host(text: &str) -> bool {
    let port_ok = |port: &str| port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|n| n > 0);
    if let Some(rest) = text.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else { return false };
        return v6.parse::<std::net::Ipv6Addr>().is_ok()
            && (after.is_empty() || after.strip_prefix(':').is_some_and(port_ok));
    }
    let (host, port) = match text.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    port.is_none_or(port_ok)
        && host.split('.').all(label_ok)
        && (host.contains('.') || port.is_some() || host.eq_ignore_ascii_case("localhost"))
}

/// The distribution spec's repository name: components of lowercase
/// letters and digits with `.`, `_`, `__` or runs of `-` between them.
fn valid_repository(text: &str) -> bool {
    text.len() <= 255
        && text.split('/').all(|component| {
            let b = component.as_bytes();
            let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            !b.is_empty()
                && b.first().is_some_and(alnum)
                && b.last().is_some_and(alnum)
                && b.iter().all(|c| alnum(c) || matches!(c, b'.' | b'_' | b'-'))
                && !component.contains("..")
                && !component.contains("___")
                && !component.contains("._")
                && !component.contains("_.")
        })
}

fn valid_tag(text: &str) -> bool {
    let b = text.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.first().is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_parse_with_tag_digest_or_both() {
        let r = Reference::parse("ghcr.io/acme/rate-limit:1.2.0").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("ghcr.io", "acme/rate-limit", Some("1.2.0"))
        );
        assert_eq!(r.digest, None);
        assert_eq!(r.manifest_ref(), "1.2.0");

        let r = Reference::parse(&format!("Registry.Example.com:5000/a/b/c@sha256:{D}")).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("registry.example.com:5000", "a/b/c", None)
        );
        assert_eq!(r.manifest_ref(), format!("sha256:{D}"));
        assert_eq!(r.to_string(), format!("registry.example.com:5000/a/b/c@sha256:{D}"));

        let r = Reference::parse(&format!("127.0.0.1:5000/p:v1@sha256:{D}")).unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()), ("127.0.0.1:5000", "p", Some("v1")));
        assert_eq!(r.manifest_ref(), format!("sha256:{D}"), "the digest decides");
        assert_eq!(Reference::parse("localhost/p:v1").unwrap().registry, "localhost");
        assert_eq!(Reference::parse("[::1]:5000/p:v1").unwrap().registry, "[::1]:5000");
    }

    #[test]
    fn what_is_not_a_reference_is_refused_with_the_reason() {
        let refused = |text: &str, because: &str| {
            let e = Reference::parse(text).unwrap_err();
            assert!(e.contains(because), "{text}: {e}");
        };
        refused("rate-limit", "names no registry");
        refused("acme/rate-limit:1.0", "is not a registry host");
        refused("ghcr.io/acme/rate-limit", "neither a tag nor a digest");
        refused("ghcr.io/Acme/x:1", "not a repository name");
        refused("ghcr.io/acme//x:1", "not a repository name");
        refused("ghcr.io/acme/x-:1", "not a repository name");
        refused("ghcr.io/acme/x:-1", "not a tag");
        refused(&format!("ghcr.io/acme/x:{}", "a".repeat(129)), "not a tag");
        refused("ghcr.io/acme/x@sha512:00", "a digest is `@sha256:`");
        refused("ghcr.io/acme/x@sha256:00", "not 64 hex digits");
        for registry in ["host:", "host:abc", "host:0", "host:70000", "::1", "[::1", "[nope]:5000", "a..b", "-a.b"] {
            refused(&format!("{registry}/x:1"), "is not a registry host");
        }
    }
}
