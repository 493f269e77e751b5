//! Cache keys: what makes two requests "the same" for the cache.
//!
//! The full key is text — the method (always `GET`: a `HEAD` reads the
//! `GET` entry), the route, then one line per configured part. The store
//! key is its SHA-256 ([`store_key`]); the full key is kept nowhere.
//!
//! A request that carries one of [`OVERRIDES`] has its values in its key too,
//! whatever the configured parts: an upstream may build its answer's links,
//! redirects or method from them, so an answer made for one value is not
//! served to a request with another (cache poisoning: a client's
//! `X-Forwarded-Prefix: /evil` made the answer everyone got). Behind a proxy
//! that sets one to the same value on every request (`X-Forwarded-Port` from
//! a load balancer), every request's key holds that value: nothing changes.

use wasmgate_sdk::is_token;
use wasmgate_sdk::{Headers, Request};

/// What a key is made of. A trait, not `Request` itself, so that unit tests
/// can build keys from a `TestRequest` (the SDK makes a `Request` only
/// inside its hook runners).
pub trait Source {
    fn scheme(&self) -> String;
    fn authority(&self) -> Option<String>;
    fn path(&self) -> String;
    fn query(&self) -> Option<String>;
    fn header_all(&self, name: &str) -> Vec<Vec<u8>>;
}

impl Source for Request<'_> {
    fn scheme(&self) -> String {
        Request::scheme(self)
    }
    fn authority(&self) -> Option<String> {
        Request::authority(self)
    }
    fn path(&self) -> String {
        Request::path(self)
    }
    fn query(&self) -> Option<String> {
        Request::query(self)
    }
    fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
        Headers::header_all(self, name)
    }
}

/// One configured part of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// `scheme://authority`, lowercased.
    Host,
    Path,
    /// Verbatim: `?a=1&b=2` and `?b=2&a=1` are different keys.
    Query,
    /// A request header's values (lowercase name).
    Header(String),
}

impl Part {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "host" => Ok(Self::Host),
            "path" => Ok(Self::Path),
            "query" => Ok(Self::Query),
            _ => match text.strip_prefix("header:") {
                Some(name) if is_token(name) => Ok(Self::Header(name.to_ascii_lowercase())),
                Some(name) => Err(format!("`header:{name}`: `{name}` is not a valid header name")),
                None => {
                    Err(format!("`{text}` is not a key part; use \"host\", \"path\", \"query\" or \"header:NAME\""))
                }
            },
        }
    }
}

/// Request headers an upstream may build its answer from that may reach it
/// as a client sent them: the host and scheme a proxy in the gateway's
/// `server.trusted_proxies` says the client asked for (`X-Forwarded-Host`
/// and `-Proto` go on as it sent them, and a load balancer may pass a
/// client's on; from others the gateway replaces them), the port, prefix
/// and scheme fields (from others the gateway takes them out), and the
/// method and URL overrides with `server.override_headers = "keep"`. A
/// trusted proxy's `Forwarded` is added to, not replaced: its `host=` and
/// `proto=` are in the key too ([`forwarded_said`]).
pub const OVERRIDES: [&str; 10] = [
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-forwarded-scheme",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The full key of a request: one line per part, an absent value written
/// `!` so that "no query" and "empty query" differ; then the values of the
/// [`OVERRIDES`] it carries that no part names.
pub fn base(route: &str, parts: &[Part], req: &impl Source) -> String {
    let mut key = format!("GET {route}");
    for part in parts {
        match part {
            Part::Host => {
                let authority = req.authority().unwrap_or_default().to_ascii_lowercase();
                key.push_str(&format!("\nh={}://{authority}", req.scheme().to_ascii_lowercase()));
            }
            Part::Path => key.push_str(&format!("\np={}", req.path())),
            Part::Query => match req.query() {
                Some(q) => key.push_str(&format!("\nq={q}")),
                None => key.push_str("\nq!"),
            },
            Part::Header(name) => push_header(&mut key, "H", name, &req.header_all(name)),
        }
    }
    for name in OVERRIDES {
        if parts.iter().any(|p| matches!(p, Part::Header(h) if h == name)) {
            continue;
        }
        let values = req.header_all(name);
        if !values.is_empty() {
            push_header(&mut key, "O", name, &values);
        }
    }
    if !parts.iter().any(|p| matches!(p, Part::Header(h) if h == "forwarded")) {
        let said = forwarded_said(&req.header_all("forwarded"));
        if !said.is_empty() {
            push_header(&mut key, "O", "forwarded", &said);
        }
    }
    key
}

/// The `host=` and `proto=` pairs of `Forwarded` values (RFC 7239), as
/// sent: what an upstream builds links from. Not `for=` or `by=`, which
/// differ by client and would give every client a key of its own.
fn forwarded_said(values: &[Vec<u8>]) -> Vec<Vec<u8>> {
    values
        .iter()
        .flat_map(|v| v.split(|&b| b == b',' || b == b';'))
        .map(<[u8]>::trim_ascii)
        .filter(|pair| {
            let name = pair.split(|&b| b == b'=').next().unwrap_or_default().trim_ascii();
            name.eq_ignore_ascii_case(b"host") || name.eq_ignore_ascii_case(b"proto")
        })
        .map(<[u8]>::to_vec)
        .collect()
}

/// The key of one variant of a response that carries `Vary: names`.
pub fn variant(base: &str, generation: u64, names: &[String], req: &impl Source) -> String {
    let mut key = format!("{base}\n#vary {generation}");
    for name in names {
        push_header(&mut key, "V", name, &req.header_all(name));
    }
    key
}

fn push_header(key: &mut String, tag: &str, name: &str, values: &[Vec<u8>]) {
    if values.is_empty() {
        key.push_str(&format!("\n{tag}{name}!"));
        return;
    }
    key.push_str(&format!("\n{tag}{name}="));
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            key.push_str(", ");
        }
        escape_into(key, value);
    }
}

/// Printable ASCII as is, everything else (and `%`) as `%XX`: the key
/// stays text and stays one line, and distinct values stay distinct.
fn escape_into(out: &mut String, value: &[u8]) {
    for &b in value {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The store key for a full key: `v2:` and its SHA-256, so it has a fixed
/// length (the store caps keys at 512 bytes, namespace included), is free
/// of whatever bytes a header carried, and no client can make two keys
/// meet in one entry. A record keeps it too ([`crate::entry`]), not the
/// full key, which may hold a header's value (a token, a session cookie).
/// (`v1:` keys were a 128-bit FNV-1a hash, whose records kept the full key
/// to check: a fleet upgraded one gateway at a time keeps the two apart.)
pub fn store_key(full: &str) -> String {
    use sha2::Digest;
    format!("v2:{}", hex::encode(sha2::Sha256::digest(full.as_bytes())))
}

#[cfg(test)]
mod tests {
    use wasmgate_sdk::testing::TestRequest;

    use super::*;

    impl Source for TestRequest {
        fn scheme(&self) -> String {
            self.scheme.clone()
        }
        fn authority(&self) -> Option<String> {
            self.authority.clone()
        }
        fn path(&self) -> String {
            self.path.clone()
        }
        fn query(&self) -> Option<String> {
            self.query.clone()
        }
        fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
            self.headers.get_all(name)
        }
    }

    fn key(parts: &[&str], req: TestRequest) -> String {
        let parts: Vec<Part> = parts.iter().map(|p| Part::parse(p).expect("valid part")).collect();
        base("r", &parts, &req)
    }

    #[test]
    fn parts_make_lines() {
        let req = || TestRequest::get("/a%20b?x=1").header("accept-language", "de").header("Accept-Language", "en");
        assert_eq!(
            key(&["host", "path", "query", "header:Accept-Language"], req()),
            "GET r\nh=http://gateway.test\np=/a%20b\nq=x=1\nHaccept-language=de, en"
        );
        assert_eq!(key(&["path", "query", "header:x-none"], TestRequest::get("/")), "GET r\np=/\nq!\nHx-none!");
        assert_ne!(key(&["query"], TestRequest::get("/?")), key(&["query"], TestRequest::get("/")));
    }

    #[test]
    fn header_values_are_escaped_unambiguously() {
        let k = key(&["header:x"], TestRequest::get("/").header("x", [b'a', b' ', b'%', 0xff]));
        assert_eq!(k, "GET r\nHx=a%20%25%FF");
        assert_ne!(k, key(&["header:x"], TestRequest::get("/").header("x", "a %25%FF")));
    }

    #[test]
    fn store_keys_are_the_keys_sha256() {
        // SHA-256 of "abc", FIPS 180-2's vector.
        assert_eq!(store_key("abc"), "v2:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(store_key("GET r\np=/a"), store_key("GET r\np=/a"));
        assert_ne!(store_key("GET r\nHauthorization=Bearer a"), store_key("GET r\nHauthorization=Bearer b"));
    }

    /// What a trusted proxy passes on of the host and scheme a client asked
    /// for is in the key: an upstream builds its links from it.
    #[test]
    fn the_forwarded_host_and_scheme_are_in_the_key() {
        let plain = key(&["path"], TestRequest::get("/"));
        for (name, value) in [("x-forwarded-host", "evil.example"), ("x-forwarded-proto", "http")] {
            let k = key(&["path"], TestRequest::get("/").header(name, value));
            assert_eq!(k, format!("{plain}\nO{name}={value}"));
        }
        let forwarded = |value: &'static str| key(&["path"], TestRequest::get("/").header("forwarded", value));
        assert_eq!(
            forwarded("for=1.2.3.4;Host=evil.example;proto=https"),
            format!("{plain}\nOforwarded=Host=evil.example, proto=https")
        );
        // Who the client is does not split the key; where it asked for does.
        assert_eq!(forwarded("for=1.2.3.4;host=a.example"), forwarded("for=5.6.7.8;host=a.example"));
        assert_ne!(forwarded("for=1.2.3.4;host=a.example"), forwarded("for=1.2.3.4;host=b.example"));
        assert_eq!(forwarded("for=1.2.3.4, for=10.0.0.1"), plain);
    }

    #[test]
    fn bad_parts_are_refused() {
        assert!(Part::parse("method").err().unwrap_or_default().contains("not a key part"));
        assert!(Part::parse("header:").err().unwrap_or_default().contains("not a valid header name"));
        assert!(Part::parse("header:a b").err().unwrap_or_default().contains("not a valid header name"));
    }
}
