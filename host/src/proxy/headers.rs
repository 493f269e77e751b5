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

/// Headers that belong to one connection (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
/// `Upgrade` is removed too; WebSocket pass-through handles it separately.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(conn) = headers.get(header::CONNECTION) {
        let named: Vec<HeaderName> = conn
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    // `TE: trailers` is the one TE value that must survive: gRPC needs it
    // end to end (RFC 9113 §8.2.2 allows exactly it over HTTP/2).
    let te_trailers = headers.get(header::TE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
    headers.remove(header::UPGRADE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
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
    // 32 hex digits are always a valid header value.
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Adds `X-Forwarded-For/Proto/Host`, `Forwarded` and `Via` for the upstream.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: IpAddr,
    proto: &'static str,
    host: Option<&str>,
    via: &HeaderValue,
) {
    let ip = client.to_string();
    append_list(headers, X_FORWARDED_FOR, &ip);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(host) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(X_FORWARDED_HOST, host);
    }
    let node = match client {
        IpAddr::V4(_) => ip,
        IpAddr::V6(_) => format!("\"[{ip}]\""),
    };
    let mut fwd = format!("for={node};proto={proto}");
    if let Some(h) = host.filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))) {
        fwd.push_str(";host=");
        fwd.push_str(h);
    }
    append_list(headers, FORWARDED, &fwd);
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

fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &str) {
    let joined = {
        let mut existing = headers.get_all(&name).iter().filter_map(|v| v.to_str().ok()).peekable();
        if existing.peek().is_none() {
            None
        } else {
            let mut s = existing.collect::<Vec<_>>().join(", ");
            s.push_str(", ");
            s.push_str(item);
            Some(s)
        }
    };
    let value = joined.as_deref().unwrap_or(item);
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        let via = HeaderValue::from_static("1.1 wasmgate");
        add_forwarded(
            &mut h,
            "127.0.0.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            "http",
            Some("api.test"),
            &via,
        );
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "api.test");
        assert_eq!(h[header::FORWARDED], "for=127.0.0.1;proto=http;host=api.test");
        assert_eq!(h[header::VIA], "1.1 wasmgate");
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
