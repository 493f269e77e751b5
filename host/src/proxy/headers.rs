//! Proxy hygiene: hop-by-hop headers, `X-Forwarded-*`, `Forwarded`, `Via`
//! and the request id.

use std::net::IpAddr;

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = header::FORWARDED;

/// Room a message's header map is made with beyond its own headers, for
/// what plugins add to it (on a request, besides what the proxy adds): a
/// chain's edits then fill the map without growing it, which would hash
/// every header again.
pub const PLUGIN_HEADER_ROOM: usize = 8;

/// Headers that belong to one connection (RFC 9110 §7.6.1), never forwarded,
/// and `Upgrade`. `Connection` comes first.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
/// `Upgrade` is removed too; WebSocket pass-through handles it separately.
///
/// One pass over the names first: most requests carry none of these and
/// most responses only `Connection`, so only what is there is removed
/// rather than looking up all nine names every time.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    // Slot 0 is `Connection`: what it names goes too, looked up by the
    // token itself (no header name made per request). The names above are
    // removed below anyway.
    if present[0]
        && let Some(conn) = headers.get(header::CONNECTION).cloned()
    {
        let named = conn.to_str().unwrap_or("").split(',').map(str::trim);
        for token in named.filter(|t| !HOP_BY_HOP.iter().any(|h| h.as_str().eq_ignore_ascii_case(t))) {
            headers.remove(token);
        }
    }
    // `TE: trailers` is the one TE value that must survive: gRPC needs it
    // end to end (RFC 9113 §8.2.2 allows exactly it over HTTP/2).
    let te_trailers = te_trailers(headers);
    for (h, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(h);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// `TE: trailers`: the sender takes trailers (and gRPC needs the header).
pub fn te_trailers(headers: &HeaderMap) -> bool {
    headers.get(header::TE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"))
}

/// Whether any `Connection` header lists `token` (case-insensitive).
pub fn connection_has(headers: &HeaderMap, token: &[u8]) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The message's `Content-Length`, when it is one number.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// A usable client-supplied request id (visible ASCII, at most 128 bytes).
pub fn incoming_request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    let v = headers.get(X_REQUEST_ID)?;
    let b = v.as_bytes();
    (!b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())).then(|| v.clone())
}

/// A new random request id: 32 hex digits.
pub fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; 32];
    let n = fastrand::u128(..);
    for (i, b) in buf.iter_mut().enumerate() {
        let nibble = ((n >> (124 - 4 * i)) & 0xf) as u8;
        *b = if nibble < 10 { b'0' + nibble } else { b'a' + nibble - 10 };
    }
    // 32 hex digits are always a valid header value. Reference-counted from
    // the start: the id is copied into the upstream request and the response.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf)).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A connection's client as the forwarding headers name it, written once
/// per connection rather than formatted for every request on it.
#[derive(Debug)]
pub struct Client {
    /// The address as `X-Forwarded-For` lists it.
    ip: HeaderValue,
    /// The scheme it spoke: `http` or `https`.
    proto: &'static str,
    /// `for=…;proto=…`, the start of this hop's `Forwarded` element (all of
    /// it when the request names no host).
    forwarded: HeaderValue,
}

impl Client {
    pub fn new(ip: IpAddr, proto: &'static str) -> Self {
        let text = ip.to_string();
        let forwarded = match ip {
            IpAddr::V4(_) => format!("for={text};proto={proto}"),
            IpAddr::V6(_) => format!("for=\"[{text}]\";proto={proto}"),
        };
        // An address's text, and so this, is always a valid header value.
        let value = |text: &str| HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { ip: value(&text), proto, forwarded: value(&forwarded) }
    }
}

/// Adds `X-Forwarded-For/Proto/Host`, `Forwarded` and `Via` for the upstream.
pub fn add_forwarded(headers: &mut HeaderMap, client: &Client, host: Option<&str>, via: &HeaderValue) {
    append_list(headers, X_FORWARDED_FOR, &client.ip);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(client.proto));
    // The `Host` header itself when it is the host (no port): shared, not copied.
    let forwarded_host = host.and_then(|h| {
        let same = headers.get(header::HOST).filter(|v| v.as_bytes() == h.as_bytes()).cloned();
        same.or_else(|| HeaderValue::from_str(h).ok())
    });
    if let Some(host) = forwarded_host {
        headers.insert(X_FORWARDED_HOST, host);
    }
    let host = host.filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b)));
    let element = match host {
        Some(h) => {
            let mut fwd = Vec::with_capacity(client.forwarded.len() + 6 + h.len());
            fwd.extend_from_slice(client.forwarded.as_bytes());
            fwd.extend_from_slice(b";host=");
            fwd.extend_from_slice(h.as_bytes());
            HeaderValue::from_maybe_shared(bytes::Bytes::from(fwd)).ok()
        }
        None => Some(client.forwarded.clone()),
    };
    if let Some(element) = element {
        append_list(headers, FORWARDED, &element);
    }
    add_via(headers, via, Version::HTTP_11);
}

/// Appends our `Via` entry (`1.1 wasmgate`, or `2.0 wasmgate` for HTTP/2).
pub fn add_via(headers: &mut HeaderMap, via: &HeaderValue, version: Version) {
    let entry = if version == Version::HTTP_2 {
        let name = via.to_str().unwrap_or("1.1 wasmgate").trim_start_matches("1.1 ");
        HeaderValue::from_str(&format!("2.0 {name}")).unwrap_or_else(|_| via.clone())
    } else {
        via.clone()
    };
    match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(existing) => {
            if let Ok(v) = HeaderValue::from_str(&format!("{existing}, {}", entry.to_str().unwrap_or(""))) {
                headers.insert(header::VIA, v);
            }
        }
        None => {
            headers.insert(header::VIA, entry);
        }
    }
}

/// Appends `item` to the list header `name`: the item alone when the header
/// is absent (no copy), else the existing values and it joined by `, `.
fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &HeaderValue) {
    let joined = {
        let mut existing = headers.get_all(&name).iter().filter_map(|v| v.to_str().ok()).peekable();
        if existing.peek().is_none() {
            None
        } else {
            let mut s = existing.collect::<Vec<_>>().join(", ");
            s.push_str(", ");
            s.push_str(item.to_str().unwrap_or(""));
            Some(s)
        }
    };
    let value = match joined {
        None => Some(item.clone()),
        Some(s) => HeaderValue::from_str(&s).ok(),
    };
    if let Some(v) = value {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret, close"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn te_trailers_survives_and_upgrade_goes() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        assert_eq!(h[header::TE], "trailers");
        let mut clean = HeaderMap::new();
        clean.insert(header::HOST, HeaderValue::from_static("a.test"));
        strip_hop_by_hop(&mut clean);
        assert_eq!(clean.len(), 1);
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        let via = HeaderValue::from_static("1.1 wasmgate");
        let client = Client::new(IpAddr::from([127, 0, 0, 1]), "http");
        add_forwarded(&mut h, &client, Some("api.test"), &via);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "api.test");
        assert_eq!(h[header::FORWARDED], "for=127.0.0.1;proto=http;host=api.test");
        assert_eq!(h[header::VIA], "1.1 wasmgate");
    }

    #[test]
    fn forwarded_headers_for_an_ipv6_client_and_a_host_with_a_port() {
        let via = HeaderValue::from_static("1.1 wasmgate");
        let client = Client::new(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]), "https");
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("api.test:8443"));
        add_forwarded(&mut h, &client, Some("api.test"), &via);
        assert_eq!(h[&X_FORWARDED_HOST], "api.test");
        assert_eq!(h[&X_FORWARDED_FOR], "2001:db8::1");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[header::FORWARDED], "for=\"[2001:db8::1]\";proto=https;host=api.test");
        let mut bare = HeaderMap::new();
        add_forwarded(&mut bare, &client, None, &via);
        assert_eq!(bare[header::FORWARDED], "for=\"[2001:db8::1]\";proto=https");
        assert!(!bare.contains_key(&X_FORWARDED_HOST));
    }

    #[test]
    fn request_ids() {
        let id = new_request_id();
        assert_eq!(id.len(), 32);
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(incoming_request_id(&h), Some(HeaderValue::from_static("abc-123")));
        h.insert(X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_eq!(incoming_request_id(&h), None);
    }
}
