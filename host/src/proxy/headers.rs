//! Proxy hygiene: hop-by-hop headers, `X-Forwarded-*`, `Forwarded`, `Via`
//! and the request id.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use http::Version;
use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

use super::Present;
use crate::upstream::h1::push_header;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
pub const X_FORWARDED_SSL: HeaderName = HeaderName::from_static("x-forwarded-ssl");
pub const X_FORWARDED_SCHEME: HeaderName = HeaderName::from_static("x-forwarded-scheme");
const FORWARDED: HeaderName = header::FORWARDED;

/// Room a message's header map is made with beyond its own headers, for
/// what plugins add to it: a chain's edits then fill the map without
/// growing it, which would hash every header again.
pub const PLUGIN_HEADER_ROOM: usize = 8;

/// The most headers a map is kept for reuse with: one message with many
/// more does not keep that much memory on a connection.
const KEEP_MAP: usize = 48;

/// A header map kept by a connection between messages, emptied, for the
/// next message it reads: maps are made per connection, not per message.
/// A client connection keeps the map of the response it wrote; an upstream
/// connection, the map of the request it wrote. So a request's map, parsed
/// on a client connection, serves a response on an upstream connection,
/// whose map serves a later request on a client connection, and a steady
/// stream of requests allocates no maps.
#[derive(Debug, Default)]
pub struct SpareMap(Option<HeaderMap>);

impl SpareMap {
    /// Keeps `map`, emptied, unless it outgrew `KEEP_MAP`.
    pub fn keep(&mut self, mut map: HeaderMap) {
        if map.capacity() <= KEEP_MAP {
            map.clear();
            self.0 = Some(map);
        }
    }

    /// A map with room for `n` headers: the kept one, or a new one.
    pub fn take(&mut self, n: usize) -> HeaderMap {
        if let Some(mut map) = self.0.take()
            && map.try_reserve(n).is_ok()
        {
            return map;
        }
        HeaderMap::with_capacity(n)
    }
}

/// The most field places (and bytes of names) a connection keeps in
/// [`Names`]: a head with many more is parsed as it comes.
const KEEP_NAMES: usize = 32;
const KEEP_NAME_BYTES: usize = 1024;

/// The names of the fields of the last head a connection read, by place,
/// as they came (in their case) and as parsed. The heads on a connection
/// (a client's requests, an upstream's responses) mostly name the same
/// fields in the same order: a name as it was in its place is taken from
/// here, not parsed again (a parse costs several times a comparison). A
/// name not as it was there is parsed, and kept from that place on.
#[derive(Debug, Default)]
pub struct Names {
    /// The names as they came, one after another.
    raw: Vec<u8>,
    /// By place: where the name lies in `raw`, the name, and which of the
    /// fields [`Present`] tells of it is.
    names: Vec<(std::ops::Range<usize>, HeaderName, Present)>,
}

impl Names {
    /// The name that came as `raw` in place `i` of a head, and which of the
    /// fields [`Present`] tells of it is ([`Present::NONE`]: another).
    #[inline]
    pub fn name(&mut self, i: usize, raw: &[u8]) -> Result<(HeaderName, Present), http::header::InvalidHeaderName> {
        if let Some((at, name, kind)) = self.names.get(i)
            && at.len() == raw.len()
            && self.raw.get(at.clone()) == Some(raw)
        {
            return Ok((name.clone(), *kind));
        }
        self.parse(i, raw)
    }

    /// Parses a name not as it was in its place, and keeps it from that
    /// place on (a place is kept only after the one before it).
    fn parse(&mut self, i: usize, raw: &[u8]) -> Result<(HeaderName, Present), http::header::InvalidHeaderName> {
        let name = HeaderName::from_bytes(raw)?;
        let kind = if hop_by_hop(raw).is_some() {
            Present::HOP
        } else if name == X_REQUEST_ID {
            Present::REQUEST_ID
        } else if name == header::CONTENT_LENGTH {
            Present::CONTENT_LENGTH
        } else if OVERRIDES.contains(&name) {
            Present::OVERRIDE
        } else if raw.contains(&b'_') {
            Present::UNDERSCORE
        } else {
            Present::NONE
        };
        let start = match i.checked_sub(1) {
            None => Some(0),
            Some(before) => self.names.get(before).map(|(at, ..)| at.end),
        };
        if let Some(start) = start
            && i < KEEP_NAMES
            && start + raw.len() <= KEEP_NAME_BYTES
        {
            self.names.truncate(i);
            self.raw.truncate(start);
            self.raw.extend_from_slice(raw);
            self.names.push((start..self.raw.len(), name.clone(), kind));
        }
        Ok((name, kind))
    }
}

/// Fields with which a client asks the upstream for another method or URL
/// than the request line's, which routes, their `methods` and the plugins
/// decided on: Symfony and Laravel take `X-HTTP-Method-Override` on a
/// `POST`, Rails' `Rack::MethodOverride` and many others too, and IIS and
/// older Symfony serve `X-Original-URL`/`X-Rewrite-URL`'s path.
/// `server.override_headers` refuses them (400) unless `"keep"`.
pub static OVERRIDES: [HeaderName; 5] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];

/// Headers that belong to one connection (RFC 9110 §7.6.1), never forwarded,
/// and `Upgrade`; and `Expect`, which the gateway answers itself (it sends
/// the client `100 Continue` as it starts reading the body, as nginx does):
/// forwarded, an upstream's `100` in the middle of the body would stop the
/// upload. `Connection` comes first, `TE` sixth, `Transfer-Encoding` eighth.
static HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::EXPECT,
];
const TE_SLOT: usize = 5;
const TRANSFER_ENCODING_SLOT: usize = 7;

/// The slot in [`HOP_BY_HOP`] of a header name or `Connection` token, in
/// any case. By length first: most names have none of these lengths, and
/// the first byte rules out most of the rest before a comparison. Inlined
/// always: it runs for every field of every message, and with `Expect` in
/// the table the compiler stopped inlining it by itself.
#[inline(always)]
fn hop_by_hop(name: &[u8]) -> Option<usize> {
    let candidates: &[usize] = match name.len() {
        2 => &[5],
        6 => &[9],
        7 => &[6, 8],
        10 => &[0, 1],
        16 => &[2],
        17 => &[7],
        18 => &[3],
        19 => &[4],
        _ => return None,
    };
    let first = name.first().map(|b| b | 0x20);
    candidates.iter().copied().find(|&i| {
        let h = HOP_BY_HOP[i].as_str().as_bytes();
        h.first() == first.as_ref() && is_name(name, h)
    })
}

/// Whether `name` is a hop-by-hop field (RFC 9110 §7.6.1), or `Expect`:
/// one of `HOP_BY_HOP`.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_by_hop(name.as_str().as_bytes()).is_some()
}

/// Whether `name` is `lower` in any case, where `lower` is a lowercase name
/// of letters and `-`. Setting bit 5 of a byte lowercases a letter and keeps
/// `-`, and turns no other byte a field name or value may hold (no CR)
/// into either: one pass without branches, where a case-insensitive
/// comparison lowercases both sides byte by byte.
fn is_name(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len() && name.iter().zip(lower).fold(0, |diff, (a, b)| diff | ((a | 0x20) ^ b)) == 0
}

/// Fields a trailer section must not carry, besides hop-by-hop ones and
/// the prefixes [`strip_trailers`] names: routing, authentication, request
/// modifiers and response control data (RFC 9110 §6.5.1), and the fields
/// this gateway sets itself.
static NOT_IN_TRAILERS: [HeaderName; 20] = [
    header::HOST,
    header::AUTHORIZATION,
    header::WWW_AUTHENTICATE,
    HeaderName::from_static("authentication-info"),
    header::COOKIE,
    header::SET_COOKIE,
    header::CACHE_CONTROL,
    header::MAX_FORWARDS,
    header::PRAGMA,
    header::RANGE,
    header::AGE,
    header::EXPIRES,
    header::DATE,
    header::LOCATION,
    header::RETRY_AFTER,
    header::VARY,
    header::WARNING,
    header::VIA,
    header::FORWARDED,
    HeaderName::from_static("x-request-id"),
];

/// Removes from a trailer section what may not be there (RFC 9110 §6.5.1):
/// fields that frame or describe the content (`Content-*`,
/// `Transfer-Encoding`), route (`Host`), authenticate, modify a request
/// (`If-*`, `Range`) or control a response, hop-by-hop ones, and the
/// forwarding fields the gateway manages. Some recipients merge trailers
/// into the head: these would reach them past the checks the gateway and
/// its plugins made of it (and HTTP/2 refuses hop-by-hop fields there,
/// resetting the stream, whose `grpc-status` was then lost).
pub fn strip_trailers(trailers: &mut HeaderMap) {
    let refused = |name: &HeaderName| {
        let n = name.as_str();
        hop_by_hop(n.as_bytes()).is_some()
            || NOT_IN_TRAILERS.contains(name)
            || ["content-", "if-", "proxy-", "x-forwarded-"].iter().any(|p| n.starts_with(p))
    };
    if !trailers.keys().any(refused) {
        return;
    }
    let names: Vec<HeaderName> = trailers.keys().filter(|n| refused(n)).cloned().collect();
    for name in names {
        trailers.remove(name);
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
/// `Upgrade` is removed too; WebSocket pass-through handles it separately.
///
/// One pass over the names first: most requests carry none of these and
/// most responses only `Connection: keep-alive`, so only what is there is
/// removed rather than looking up all ten names every time, and the
/// `Connection` tokens are read in place (a list of names to remove is made
/// only when one names another header).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        if let Some(i) = hop_by_hop(name.as_str().as_bytes()) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    // Slot 0 is `Connection`: what any of its fields names goes too.
    if present[0] {
        for name in nominated(headers) {
            headers.remove(name);
        }
    }
    // `TE: trailers` is the one TE value that must survive: gRPC needs it
    // end to end (RFC 9113 §8.2.2 allows exactly it over HTTP/2).
    let te_trailers = present[TE_SLOT] && te_trailers(headers);
    for (h, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(h);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// A `TE` field lists `trailers`: the sender takes trailers (and gRPC
/// needs the header).
fn te_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|v| te_takes_trailers(v.as_bytes()))
}

/// The tokens of `Connection` field values, trimmed, empty ones skipped.
fn connection_tokens<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> impl Iterator<Item = &'a [u8]> {
    values.into_iter().flat_map(|v| v.split(|&b| b == b',')).map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

/// The headers a message's `Connection` fields name (which go with it).
fn nominated(headers: &HeaderMap) -> Vec<HeaderName> {
    connection_tokens(headers.get_all(header::CONNECTION).iter().map(HeaderValue::as_bytes))
        .filter(|t| names_header(t))
        .filter_map(|t| HeaderName::from_bytes(t).ok())
        .collect()
}

/// Whether a `Connection` token names a header that must go with it:
/// not the `close` option, not a hop-by-hop header (removed anyway), and
/// not `Host`, which an HTTP/1.1 request must carry (RFC 9112 §3.2): the
/// routes read it, and `Connection: host` sent the upstream none.
fn names_header(token: &[u8]) -> bool {
    !is_name(token, b"close") && !is_name(token, b"host") && hop_by_hop(token).is_none()
}

/// Removes the headers a `Connection` field names, and leaves in it only
/// its options (`close`, hop-by-hop names): before a route's plugins run,
/// so that what they set is not named by the client's `Connection` and
/// removed on the way upstream (`Connection: x-consumer` took api-key's
/// consumer header out). `Connection` stays for [`strip_hop_by_hop`] and
/// the upgrade check.
pub fn strip_nominated(headers: &mut HeaderMap) {
    let named = nominated(headers);
    if named.is_empty() {
        return;
    }
    let mut options: Vec<u8> = Vec::new();
    for token in connection_tokens(headers.get_all(header::CONNECTION).iter().map(HeaderValue::as_bytes)) {
        if !names_header(token) && !is_name(token, b"host") {
            if !options.is_empty() {
                options.extend_from_slice(b", ");
            }
            options.extend_from_slice(token);
        }
    }
    for name in named {
        headers.remove(name);
    }
    match HeaderValue::from_bytes(&options) {
        Ok(value) if !options.is_empty() => drop(headers.insert(header::CONNECTION, value)),
        _ => drop(headers.remove(header::CONNECTION)),
    }
}

/// What a message's `Connection` fields say (RFC 9112 §9.6), read once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionTokens {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// A token that names another header, which is hop-by-hop too and
    /// must go with `Connection` (see [`strip_hop_by_hop`]).
    pub names_other: bool,
}

impl ConnectionTokens {
    /// The tokens of the given `Connection` field values, in any case.
    pub fn read<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut t = Self::default();
        for value in values {
            t.add(value);
        }
        t
    }

    /// Adds the tokens of one more `Connection` field value.
    pub fn add(&mut self, value: &[u8]) {
        // The usual values, whole, without splitting the list.
        if is_name(value, b"keep-alive") {
            self.keep_alive = true;
            return;
        }
        if is_name(value, b"close") {
            self.close = true;
            return;
        }
        for token in connection_tokens([value]) {
            self.close |= is_name(token, b"close");
            self.keep_alive |= is_name(token, b"keep-alive");
            self.upgrade |= is_name(token, b"upgrade");
            self.names_other |= names_header(token);
        }
    }

    /// The tokens of a header map's `Connection` fields.
    pub fn of(headers: &HeaderMap) -> Self {
        Self::read(headers.get_all(header::CONNECTION).iter().map(HeaderValue::as_bytes))
    }

    /// Whether the connection may carry another message after this one:
    /// never with `close` (RFC 9112 §9.3: it wins over `keep-alive`);
    /// HTTP/1.0 only with `keep-alive`.
    pub fn keeps_alive(self, version: Version) -> bool {
        !self.close && (version != Version::HTTP_10 || self.keep_alive)
    }
}

/// Whether a `TE` field value lists `trailers` (RFC 9110 §10.1.4: a
/// client that takes trailers in a chunked response; the list may name
/// transfer codings beside it, `TE: trailers, deflate;q=0.5`).
pub fn te_takes_trailers(value: &[u8]) -> bool {
    is_name(value, b"trailers") || connection_tokens([value]).any(|t| is_name(t, b"trailers"))
}

/// A hop-by-hop field as a message parser meets it: what it must read
/// before leaving the field out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopField {
    /// Its tokens say how the connection is kept.
    Connection,
    /// It frames the body.
    TransferEncoding,
    Other,
}

/// Which hop-by-hop field a name (in any case) is, when it is one by itself
/// (not counting what a `Connection` field names).
pub fn hop_field(name: &[u8]) -> Option<HopField> {
    hop_by_hop(name).map(|i| match i {
        0 => HopField::Connection,
        TRANSFER_ENCODING_SLOT => HopField::TransferEncoding,
        _ => HopField::Other,
    })
}

/// A usable client-supplied request id (visible ASCII, at most 128 bytes).
pub fn incoming_request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    let v = headers.get(X_REQUEST_ID)?;
    let b = v.as_bytes();
    (!b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())).then(|| v.clone())
}

/// How many request ids share one allocation.
const IDS_PER_BLOCK: usize = 64;

thread_local! {
    /// Room for this thread's next request ids: each is split off it,
    /// sharing its allocation, rather than allocated alone.
    static ID_BLOCK: std::cell::RefCell<bytes::BytesMut> = std::cell::RefCell::new(bytes::BytesMut::new());
}

/// A new random request id: 32 hex digits.
pub fn new_request_id() -> HeaderValue {
    // Two hex digits per byte of the random number.
    static PAIRS: [[u8; 2]; 256] = {
        let digits = b"0123456789abcdef";
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [digits[i >> 4], digits[i & 0xf]];
            i += 1;
        }
        t
    };
    let mut buf = [0u8; 32];
    for (pair, byte) in buf.chunks_exact_mut(2).zip(fastrand::u128(..).to_be_bytes()) {
        pair.copy_from_slice(&PAIRS[usize::from(byte)]);
    }
    let id = ID_BLOCK.with_borrow_mut(|block| {
        if block.capacity() < buf.len() {
            *block = bytes::BytesMut::with_capacity(buf.len() * IDS_PER_BLOCK);
        }
        block.extend_from_slice(&buf);
        block.split().freeze()
    });
    // 32 hex digits are always a valid header value. Reference-counted: the
    // id is copied into the upstream request and the response.
    HeaderValue::from_maybe_shared(id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A connection's client as the forwarding headers name it, written once
/// per connection rather than formatted for every request on it.
#[derive(Debug)]
pub struct Client {
    /// The address as `X-Forwarded-For` lists it.
    ip: HeaderValue,
    /// The scheme it spoke: `http` or `https`.
    proto: HeaderValue,
    /// `for=…;proto=…`, the start of this hop's `Forwarded` element (all of
    /// it when the request names no host).
    forwarded: HeaderValue,
    /// The host-dependent headers for the last host a request on this
    /// connection named: the requests on a connection almost always name
    /// one host, and these were made (and checked) anew for each.
    last_host: Mutex<Option<Arc<ForHost>>>,
    /// `server.trusted_proxies`, when the peer is one of them: the
    /// forwarding fields it sends stay or are added to
    /// ([`FORWARDING_TRUSTED`]), and it names its requests' clients.
    trusted: Option<Arc<[wasmgate_common::cidr::Cidr]>>,
    /// Its `X-Forwarded-Client-Cert` element: the certificate it presented
    /// to a listener with `forward_client_cert`.
    cert: Option<HeaderValue>,
}

/// `X-Forwarded-Host` and the whole `Forwarded` element for one host.
#[derive(Debug)]
struct ForHost {
    host: Box<str>,
    forwarded_host: Option<HeaderValue>,
    element: HeaderValue,
}

impl Client {
    pub fn new(ip: IpAddr, proto: &'static str, trusted: Option<Arc<[wasmgate_common::cidr::Cidr]>>) -> Self {
        let text = ip.to_string();
        let forwarded = match ip {
            IpAddr::V4(_) => format!("for={text};proto={proto}"),
            IpAddr::V6(_) => format!("for=\"[{text}]\";proto={proto}"),
        };
        // An address's text, and so this, is always a valid header value.
        let value = |text: &str| HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            ip: value(&text),
            proto: HeaderValue::from_static(proto),
            forwarded: value(&forwarded),
            last_host: Mutex::new(None),
            trusted,
            cert: None,
        }
    }

    /// With the `X-Forwarded-Client-Cert` element this hop writes for it.
    pub fn with_cert(self, element: Option<HeaderValue>) -> Self {
        Self { cert: element, ..self }
    }

    /// `server.trusted_proxies`, when the peer is one of them.
    pub fn trusted(&self) -> Option<&Arc<[wasmgate_common::cidr::Cidr]>> {
        self.trusted.as_ref()
    }

    /// `X-Forwarded-Host` and this hop's `Forwarded` element for a request
    /// naming `host`, made once per host a connection's requests name in a
    /// row.
    fn for_host(&self, host: &str) -> Arc<ForHost> {
        let mut last = self.last_host.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = last.as_ref().filter(|f| *f.host == *host) {
            return f.clone();
        }
        // RFC 7239: a token as it is, anything else (a port's or an IPv6
        // address's colons) as a quoted string.
        let mut fwd = Vec::with_capacity(self.forwarded.len() + 8 + 2 * host.len());
        fwd.extend_from_slice(self.forwarded.as_bytes());
        fwd.extend_from_slice(b";host=");
        if host.bytes().all(is_tchar) {
            fwd.extend_from_slice(host.as_bytes());
        } else {
            fwd.push(b'"');
            for b in host.bytes() {
                if b == b'"' || b == b'\\' {
                    fwd.push(b'\\');
                }
                fwd.push(b);
            }
            fwd.push(b'"');
        }
        // A host a header value cannot carry leaves the element without it.
        let element =
            HeaderValue::from_maybe_shared(bytes::Bytes::from(fwd)).unwrap_or_else(|_| self.forwarded.clone());
        let f = Arc::new(ForHost { host: host.into(), forwarded_host: HeaderValue::from_str(host).ok(), element });
        *last = Some(f.clone());
        f
    }
}

/// A token character (RFC 9110, 5.6.2).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What this hop adds to a request on its way upstream: `X-Forwarded-For`,
/// `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded`, `Via`, the request
/// id, and `Host` when the request has none. Written into the head while an
/// HTTP/1 request is encoded ([`encode`](Self::encode)), so no header map
/// entry is made only to be written out; [`apply`](Self::apply) puts the same
/// fields into a header map for what takes one (HTTP/2 upstreams).
/// The values are borrowed from where they are kept (the connection's
/// client, the config, the request), not copied for each request.
#[derive(Debug)]
pub struct Forwarding<'a> {
    /// `Host` from the URI's authority, without user info: it replaces the
    /// request's `Host`, if any.
    host: Option<HeaderValue>,
    client: &'a Client,
    /// `X-Forwarded-Host` and the `Forwarded` element, for a request that
    /// names a host.
    for_host: Option<Arc<ForHost>>,
    via: &'a HeaderValue,
    request_id: &'a HeaderValue,
    /// The prefix the route's `strip_prefix` took off the path.
    prefix: Option<&'a HeaderValue>,
    /// `X-Real-IP` behind a trusted proxy: the client its `X-Forwarded-For`
    /// reports (from other peers, the peer: `client.ip`). (Boxed: it is
    /// rare, and this is part of every request's future.)
    real_ip: Option<Box<HeaderValue>>,
    /// Which fields the request may have, as its server read it (or
    /// [`Present::ANY`]): the upstream connection need not look in the map
    /// for a `Content-Length` it has not.
    present: Present,
}

/// How a field this hop writes meets one the message already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A list: this hop's item joins the values before it, in one field.
    Append,
    /// This hop's value replaces the message's.
    Replace,
    /// The message's value stays; this hop's is set when it has none (what
    /// a trusted proxy in front said of the client's scheme, host, port).
    Default,
    /// The message's field is taken out, whether or not this hop has a
    /// value to put in its place (a client's word on where it came from,
    /// which an upstream would believe).
    Drop,
}

/// Fields this hop writes into a message: a table of their names, each
/// with how it meets the message's own field ([`Mode`]), in the order they
/// are written when the message has none of them; this hop's value of each
/// (`None`: this hop sets nothing there and leaves the message's as it is);
/// and which of them a name is. The request's forwarding fields
/// ([`Forwarding`]) and the response's `Via` and request id
/// ([`super::Stamp`]) are both written this way. (`value` and `slot` are
/// types of their own, not function pointers, so they are inlined: `slot`
/// runs for every field of every message.)
#[derive(Debug)]
pub struct HopFields<V, S, const N: usize> {
    pub table: &'static [(HeaderName, Mode); N],
    /// This hop's value of the field in a slot of `table`.
    pub value: V,
    /// The slot in `table` of a name, if it is one of them.
    pub slot: S,
    /// The slots from this one on have no value of this hop (`value` is
    /// `None` there): only the message's fields to take out.
    pub valued: usize,
}

impl<'v, V, S, const N: usize> HopFields<V, S, N>
where
    V: Fn(usize) -> Option<&'v HeaderValue>,
    S: Fn(&HeaderName) -> Option<usize>,
{
    /// Puts the fields into a header map.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let _ = headers.try_reserve(N);
        for (slot, (name, mode)) in self.table.iter().enumerate() {
            let Some(value) = (self.value)(slot) else {
                if *mode == Mode::Drop {
                    headers.remove(name);
                }
                continue;
            };
            match mode {
                Mode::Append => append_list(headers, name.clone(), value),
                Mode::Replace | Mode::Drop => {
                    headers.insert(name.clone(), value.clone());
                }
                Mode::Default => {
                    if !headers.contains_key(name) {
                        headers.insert(name.clone(), value.clone());
                    }
                }
            }
        }
    }

    /// Writes `headers` as HTTP/1 field lines with the fields in (as
    /// [`apply`](Self::apply) would put them), skipping the names `skip`
    /// says the caller writes itself. One pass: a map yields the values of
    /// one name in a row, so a list is joined as it is written.
    pub fn encode(&self, headers: &HeaderMap, mut skip: impl FnMut(&HeaderName) -> bool, out: &mut bytes::BytesMut) {
        let mut seen = [false; N];
        // The list being written: its slot and name.
        let mut open: Option<(usize, &HeaderName)> = None;
        for (name, value) in headers {
            if let Some((slot, open_name)) = open {
                if open_name == name {
                    out.extend_from_slice(b", ");
                    out.extend_from_slice(value.as_bytes());
                    continue;
                }
                self.close(slot, out);
                open = None;
            }
            if skip(name) {
                continue;
            }
            if let Some(slot) = (self.slot)(name)
                && let Some((_, mode)) = self.table.get(slot)
            {
                seen[slot] = true;
                if *mode == Mode::Drop {
                    continue;
                }
                if (self.value)(slot).is_some() {
                    match mode {
                        Mode::Replace | Mode::Drop => continue,
                        Mode::Default => {}
                        Mode::Append => {
                            out.extend_from_slice(name.as_str().as_bytes());
                            out.extend_from_slice(b": ");
                            out.extend_from_slice(value.as_bytes());
                            open = Some((slot, name));
                            continue;
                        }
                    }
                }
            }
            push_header(out, name, value);
        }
        if let Some((slot, _)) = open {
            self.close(slot, out);
        }
        for (slot, ((name, mode), seen)) in self.table.iter().zip(seen).enumerate().take(self.valued) {
            if let Some(value) = (self.value)(slot)
                && (!seen || matches!(mode, Mode::Replace | Mode::Drop))
            {
                push_header(out, name, value);
            }
        }
    }

    /// Ends a list field with this hop's item.
    fn close(&self, slot: usize, out: &mut bytes::BytesMut) {
        if let Some(item) = (self.value)(slot) {
            out.extend_from_slice(b", ");
            out.extend_from_slice(item.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// [`FORWARDING`] for a request from a trusted proxy
/// (`server.trusted_proxies`): the scheme, host and port it says the client
/// asked for stay (a TLS-terminating load balancer's `X-Forwarded-Proto:
/// https`); its `Forwarded` is added to; `X-Real-IP` names the client its
/// `X-Forwarded-For` reports. The prefix and Rack's scheme fields go as a
/// client's do: load balancers (AWS's, Google's) set none of them and pass
/// a client's on, and so is `X-Forwarded-Client-Cert` (Envoy's default,
/// `SANITIZE`: a load balancer in front passes a client's on as it came).
static FORWARDING_TRUSTED: [(HeaderName, Mode); 13] = [
    (header::HOST, Mode::Replace),
    (X_FORWARDED_FOR, Mode::Append),
    (X_FORWARDED_PROTO, Mode::Default),
    (X_FORWARDED_HOST, Mode::Default),
    (FORWARDED, Mode::Append),
    (header::VIA, Mode::Append),
    (X_REQUEST_ID, Mode::Replace),
    (X_REAL_IP, Mode::Replace),
    (X_FORWARDED_PREFIX, Mode::Drop),
    (X_FORWARDED_CLIENT_CERT, Mode::Drop),
    (X_FORWARDED_PORT, Mode::Default),
    (X_FORWARDED_SSL, Mode::Drop),
    (X_FORWARDED_SCHEME, Mode::Drop),
];

/// The fields of [`Forwarding`], in the order they are written when the
/// request has none of them.
static FORWARDING: [(HeaderName, Mode); 13] = [
    // The request target's authority, when it had one, is the host: it
    // replaces a `Host` that says otherwise (RFC 9112 §3.2.2).
    (header::HOST, Mode::Replace),
    (X_FORWARDED_FOR, Mode::Append),
    (X_FORWARDED_PROTO, Mode::Replace),
    (X_FORWARDED_HOST, Mode::Replace),
    (FORWARDED, Mode::Replace),
    (header::VIA, Mode::Append),
    (X_REQUEST_ID, Mode::Replace),
    // What a client says of the port and path prefix it asked for, of its
    // own address and of the scheme: upstreams build links on the port and
    // prefix (Spring's `ForwardedHeaderFilter`), take `X-Real-IP` as the
    // client (Echo's `RealIP`, nginx's `real_ip_header`), and Rack takes
    // `X-Forwarded-Ssl: on` and `X-Forwarded-Scheme` over
    // `X-Forwarded-Proto`; and a client certificate's identity (Envoy's
    // `X-Forwarded-Client-Cert`), which upstreams in a mesh act on. This
    // hop writes `X-Real-IP` (the client, as nginx's common
    // `proxy_set_header X-Real-IP $remote_addr`, Kong and Traefik do), the
    // prefix of a route's `strip_prefix`, and the certificate the client
    // presented to a listener with `forward_client_cert` (the three with
    // values first: see `VALUED`).
    (X_REAL_IP, Mode::Drop),
    (X_FORWARDED_PREFIX, Mode::Drop),
    (X_FORWARDED_CLIENT_CERT, Mode::Drop),
    (X_FORWARDED_PORT, Mode::Drop),
    (X_FORWARDED_SSL, Mode::Drop),
    (X_FORWARDED_SCHEME, Mode::Drop),
];

/// The slot in [`FORWARDING`] of a header name. By length first, as
/// [`hop_by_hop`]: most names have none of these lengths.
fn forwarding_slot(name: &HeaderName) -> Option<usize> {
    // The slot of the name of that length, and another's (two of a length).
    let (slot, other) = match name.as_str().len() {
        4 => (0, None),
        15 => (1, Some(11)),
        17 => (2, None),
        16 => (3, Some(10)),
        9 => (4, Some(7)),
        3 => (5, None),
        12 => (6, None),
        18 => (8, Some(12)),
        23 => (9, None),
        _ => return None,
    };
    if FORWARDING[slot].0 == name {
        return Some(slot);
    }
    other.filter(|&o| FORWARDING[o].0 == name)
}

/// The slots of [`FORWARDING`] this hop may have a value for
/// ([`Forwarding::value`]): those before.
const VALUED: usize = 10;

impl<'a> Forwarding<'a> {
    /// The fields for a request from `client` naming `host` (its `Host` or
    /// URI authority as received, port included), whose URI carried
    /// `authority`, and which has the fields `present` tells of.
    pub fn new(
        client: &'a Client,
        host: Option<&str>,
        authority: Option<&http::uri::Authority>,
        via: &'a HeaderValue,
        request_id: &'a HeaderValue,
        present: Present,
    ) -> Self {
        Self {
            host: authority.and_then(|a| {
                let host = a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, host)| host);
                HeaderValue::from_str(host).ok()
            }),
            client,
            for_host: host.map(|h| client.for_host(h)),
            via,
            request_id,
            prefix: None,
            real_ip: None,
            present,
        }
    }

    /// With `X-Forwarded-Prefix` (a route's stripped prefix) and
    /// `X-Real-IP` (the client behind a trusted proxy) to say.
    pub fn naming(&mut self, prefix: Option<&'a HeaderValue>, real_ip: Option<HeaderValue>) {
        (self.prefix, self.real_ip) = (prefix, real_ip.map(Box::new));
    }

    /// Which fields the request may have ([`Present`]).
    pub fn present(&self) -> Present {
        self.present
    }

    /// The value (or list item) of [`FORWARDING`]'s field `slot`; `None`:
    /// this hop sets nothing there and leaves the client's field as it is.
    fn value(&self, slot: usize) -> Option<&HeaderValue> {
        match slot {
            0 => self.host.as_ref(),
            1 => Some(&self.client.ip),
            2 => Some(&self.client.proto),
            3 => self.for_host.as_ref().and_then(|f| f.forwarded_host.as_ref()),
            4 => Some(self.for_host.as_ref().map_or(&self.client.forwarded, |f| &f.element)),
            5 => Some(self.via),
            6 => Some(self.request_id),
            7 => Some(self.real_ip.as_deref().unwrap_or(&self.client.ip)),
            8 => self.prefix,
            9 => self.client.cert.as_ref(),
            _ => None,
        }
    }

    /// [`FORWARDING`]'s fields with their values.
    fn fields<'s>(
        &'s self,
    ) -> HopFields<impl Fn(usize) -> Option<&'s HeaderValue>, impl Fn(&HeaderName) -> Option<usize>, 13> {
        let table = if self.client.trusted.is_some() { &FORWARDING_TRUSTED } else { &FORWARDING };
        HopFields { table, value: |slot| self.value(slot), slot: forwarding_slot, valued: VALUED }
    }

    /// Puts the fields into a header map.
    pub fn apply(&self, headers: &mut HeaderMap) {
        self.fields().apply(headers);
    }

    /// Writes `headers` as HTTP/1 field lines with these fields in
    /// ([`HopFields::encode`]).
    pub fn encode(&self, headers: &HeaderMap, skip: impl FnMut(&HeaderName) -> bool, out: &mut bytes::BytesMut) {
        self.fields().encode(headers, skip, out);
    }
}

/// Appends a `Via` entry to the map's list.
pub fn add_via(headers: &mut HeaderMap, entry: &HeaderValue) {
    append_list(headers, header::VIA, entry);
}

/// Appends `item` to the list header `name`: the item alone when the header
/// is absent (no copy), else the existing values and it joined by `, `.
/// One lookup of the name either way.
fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &HeaderValue) {
    match headers.entry(name) {
        Entry::Vacant(e) => {
            e.insert(item.clone());
        }
        Entry::Occupied(mut e) => {
            let mut joined = Vec::new();
            for v in e.iter().chain([item]) {
                if !joined.is_empty() {
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(v.as_bytes());
            }
            if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
                e.insert(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static ID: HeaderValue = HeaderValue::from_static("id-1");

    #[test]
    fn names_compare_in_any_case_and_only_to_themselves() {
        for name in &HOP_BY_HOP {
            let lower = name.as_str();
            assert_eq!(hop_by_hop(lower.as_bytes()).map(|i| HOP_BY_HOP[i].as_str()), Some(lower));
            assert_eq!(hop_by_hop(lower.to_ascii_uppercase().as_bytes()).map(|i| HOP_BY_HOP[i].as_str()), Some(lower));
        }
        assert!(is_name(b"Keep-Alive", b"keep-alive"));
        for other in [&b"keep_alive"[..], b"keep-alivf", b"keep-aliv", b"keep-alive2", b"keep alive", b"k\xc5ep-alive"]
        {
            assert!(!is_name(other, b"keep-alive"), "{}", String::from_utf8_lossy(other));
            assert_eq!(hop_by_hop(other), None);
        }
        // Same length and first letter as a hop-by-hop name, not one.
        assert_eq!(hop_by_hop(b"Content-Length"), None);
        assert_eq!(hop_by_hop(b"trailers"), None);
        assert_eq!(hop_by_hop(b"Upgrades"), None);
        assert_eq!(hop_by_hop(b"Connectio2"), None);
    }

    fn head(names: &mut Names, raw: &[&str]) -> Vec<String> {
        raw.iter().enumerate().map(|(i, r)| names.name(i, r.as_bytes()).unwrap().0.as_str().to_owned()).collect()
    }

    #[test]
    fn names_are_kept_by_place_as_they_came_and_any_change_is_parsed() {
        let mut names = Names::default();
        let first = ["Host", "User-Agent", "X-Trace-Id"];
        assert_eq!(head(&mut names, &first), ["host", "user-agent", "x-trace-id"]);
        assert_eq!(names.raw, b"HostUser-AgentX-Trace-Id");
        // The same head again: the same names, from what was kept.
        assert_eq!(head(&mut names, &first), ["host", "user-agent", "x-trace-id"]);
        assert_eq!(names.names.len(), 3);
        // A name not as it was in its place (another name, another case, a
        // prefix of it) is parsed, and kept from that place on.
        assert_eq!(head(&mut names, &["Host", "ACCEPT", "X-Trace-Id"]), ["host", "accept", "x-trace-id"]);
        assert_eq!(names.raw, b"HostACCEPTX-Trace-Id");
        assert_eq!(head(&mut names, &["HOST", "Accept"]), ["host", "accept"]);
        assert_eq!(head(&mut names, &["Ho"]), ["ho"]);
        assert_eq!(names.raw, b"Ho");
        // A bad name is refused, not kept; a place after one not kept is
        // parsed and not kept.
        assert!(names.name(1, b"bad name").is_err());
        assert_eq!(names.name(3, b"Via").unwrap(), (header::VIA, Present::NONE));
        assert_eq!(names.names.len(), 1);
        // Which field a name is comes with it, parsed or kept.
        for _ in 0..2 {
            assert_eq!(names.name(0, b"Host").unwrap(), (header::HOST, Present::NONE));
            assert_eq!(names.name(1, b"Keep-Alive").unwrap(), (HeaderName::from_static("keep-alive"), Present::HOP));
            assert_eq!(names.name(2, b"TE").unwrap(), (header::TE, Present::HOP));
            assert_eq!(names.name(3, b"X-Request-ID").unwrap(), (X_REQUEST_ID, Present::REQUEST_ID));
            assert_eq!(names.name(4, b"content-length").unwrap(), (header::CONTENT_LENGTH, Present::CONTENT_LENGTH));
            assert_eq!(names.name(5, b"Upgrade").unwrap(), (header::UPGRADE, Present::HOP));
            assert_eq!(
                names.name(6, b"X-Request-Idx").unwrap(),
                (HeaderName::from_static("x-request-idx"), Present::NONE)
            );
            assert_eq!(
                names.name(7, b"X-HTTP-Method-Override").unwrap(),
                (HeaderName::from_static("x-http-method-override"), Present::OVERRIDE)
            );
        }
    }

    #[test]
    fn a_head_with_many_or_long_names_keeps_only_so_many() {
        let mut names = Names::default();
        let many: Vec<String> = (0..KEEP_NAMES + 8).map(|i| format!("X-{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let parsed = head(&mut names, &many);
        assert_eq!(parsed.len(), KEEP_NAMES + 8);
        assert_eq!(parsed[KEEP_NAMES + 7], format!("x-{}", KEEP_NAMES + 7));
        assert_eq!(names.names.len(), KEEP_NAMES);
        let long = "X".repeat(KEEP_NAME_BYTES);
        assert_eq!(head(&mut names, &["Host", &long, "Accept"]), ["host", &long.to_lowercase(), "accept"]);
        assert_eq!(names.names.len(), 1, "the long name and those after it are not kept");
    }

    #[test]
    fn a_kept_map_comes_back_empty_with_its_room_and_a_large_one_is_not_kept() {
        let mut spare = SpareMap::default();
        let mut map = spare.take(12);
        assert!(map.capacity() >= 12);
        map.insert(header::HOST, HeaderValue::from_static("a"));
        map.append(header::ACCEPT, HeaderValue::from_static("b"));
        map.append(header::ACCEPT, HeaderValue::from_static("c"));
        let room = map.capacity();
        spare.keep(map);
        let again = spare.take(4);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room, "the kept map, not a new one");
        assert!(spare.take(4).capacity() < room, "taken once: the next is new");
        // Room asked beyond the kept map's grows it.
        spare.keep(again);
        assert!(spare.take(room * 2).capacity() >= room * 2);
        // A map grown past the bound is dropped, not kept.
        spare.keep(HeaderMap::with_capacity(KEEP_MAP * 2));
        assert!(spare.take(1).capacity() < KEEP_MAP);
    }

    /// The forwarding fields put into `h` as for an HTTP/2 upstream.
    fn forward(h: &mut HeaderMap, client: &Client, host: Option<&str>, via: &HeaderValue) {
        Forwarding::new(client, host, None, via, &ID, Present::ANY).apply(h);
    }

    /// The field lines of an encoded head, one (name, value) per line,
    /// sorted.
    fn lines(encoded: &[u8]) -> Vec<(String, String)> {
        let text = std::str::from_utf8(encoded).unwrap();
        let mut lines: Vec<_> = text
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_owned(), v.to_owned())
            })
            .collect();
        lines.sort();
        lines
    }

    /// A map's fields as [`lines`] gives an encoded head's.
    fn map_lines(h: &HeaderMap) -> Vec<(String, String)> {
        let mut lines: Vec<_> =
            h.iter().map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned())).collect();
        lines.sort();
        lines
    }

    #[test]
    fn an_encoded_head_carries_the_fields_a_map_is_given() {
        let via = HeaderValue::from_static("1.1 wasmgate");
        let cert = HeaderValue::from_static("Hash=ab;Subject=\"CN=c\"");
        let clients = [
            Client::new(IpAddr::from([192, 0, 2, 9]), "https", None),
            Client::new(IpAddr::from([192, 0, 2, 9]), "https", None).with_cert(Some(cert.clone())),
            Client::new(IpAddr::from([192, 0, 2, 9]), "https", Some(Arc::from([]))).with_cert(Some(cert)),
        ];
        let authority: http::uri::Authority = "api.test:8443".parse().unwrap();
        let (prefix, real_ip) = (HeaderValue::from_static("/api"), HeaderValue::from_static("203.0.113.9"));
        let heads: [&[(&str, &str)]; 9] = [
            &[],
            &[("host", "api.test"), ("user-agent", "curl")],
            &[("x-forwarded-for", "10.0.0.1"), ("x-forwarded-for", "10.0.0.2"), ("accept", "*/*")],
            &[("forwarded", "for=10.0.0.1"), ("via", "1.0 fred"), ("via", "1.1 p.example.net")],
            &[("x-request-id", "client-chosen"), ("x-forwarded-proto", "http"), ("x-forwarded-host", "spoof")],
            &[("content-length", "3"), ("x-forwarded-for", "10.0.0.1"), ("x-kept", "1"), ("x-kept", "2")],
            &[("x-real-ip", "10.0.0.1"), ("x-forwarded-port", "443"), ("x-forwarded-prefix", "/a"), ("x-b", "1")],
            &[("x-forwarded-ssl", "on"), ("x-forwarded-scheme", "https"), ("x-forwarded-prefix", "/a")],
            &[("x-forwarded-client-cert", "Hash=cd"), ("x-forwarded-client-cert", "Hash=ef"), ("x-b", "1")],
        ];
        for (pairs, client) in heads.into_iter().flat_map(|h| clients.iter().map(move |c| (h, c))) {
            for (host, authority) in [(Some("api.test"), None), (None, Some(&authority)), (None, None)] {
                let mut h = HeaderMap::new();
                for (n, v) in pairs {
                    h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
                }
                for (prefix, real_ip) in [(None, None), (Some(&prefix), Some(real_ip.clone()))] {
                    let mut f = Forwarding::new(client, host, authority, &via, &ID, Present::ANY);
                    f.naming(prefix, real_ip);
                    let mut out = bytes::BytesMut::new();
                    f.encode(&h, |n| n == header::CONTENT_LENGTH, &mut out);
                    let mut applied = h.clone();
                    applied.remove(header::CONTENT_LENGTH);
                    f.apply(&mut applied);
                    assert_eq!(lines(&out), map_lines(&applied), "{pairs:?} host {host:?}");
                }
            }
        }
    }

    #[test]
    fn forwarding_fields_join_replace_or_keep_what_the_request_has() {
        let via = HeaderValue::from_static("1.1 wasmgate");
        let client = Client::new(IpAddr::from([127, 0, 0, 1]), "http", None);
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.2"));
        h.insert(X_FORWARDED_HOST, HeaderValue::from_static("spoof"));
        h.insert(X_REQUEST_ID, HeaderValue::from_static("client"));
        h.insert(header::HOST, HeaderValue::from_static("a.test"));
        let authority: http::uri::Authority = "b.test".parse().unwrap();
        let mut out = bytes::BytesMut::new();
        Forwarding::new(&client, None, Some(&authority), &via, &ID, Present::ANY).encode(&h, |_| false, &mut out);
        let lines = lines(&out);
        let get = |name: &str| lines.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        assert_eq!(get("x-forwarded-for"), ["10.0.0.1, 10.0.0.2, 127.0.0.1"]);
        assert_eq!(get("x-forwarded-host"), ["spoof"], "no host named: the client's is left");
        assert_eq!(get("x-request-id"), ["id-1"]);
        assert_eq!(get("host"), ["b.test"], "the target's authority replaces `Host`");
        assert_eq!(get("forwarded"), ["for=127.0.0.1;proto=http"]);
        assert_eq!(get("via"), ["1.1 wasmgate"]);
    }

    /// From a trusted proxy the scheme and host it forwards stay, and its
    /// `Forwarded` is added to; this hop's are set only where it said
    /// nothing. Written into a head or put into a map alike.
    #[test]
    fn a_trusted_proxys_scheme_and_host_stay() {
        let via = HeaderValue::from_static("1.1 wasmgate");
        for trusted in [true, false] {
            let cert = HeaderValue::from_static("Hash=ab");
            let client =
                Client::new(IpAddr::from([10, 0, 0, 7]), "http", trusted.then(|| Arc::from([]))).with_cert(Some(cert));
            for said in [true, false] {
                let mut h = HeaderMap::new();
                if said {
                    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
                    h.insert(X_FORWARDED_HOST, HeaderValue::from_static("shop.example"));
                    h.insert(FORWARDED, HeaderValue::from_static("for=203.0.113.9;proto=https"));
                    h.insert(X_FORWARDED_PORT, HeaderValue::from_static("443"));
                    h.insert(X_REAL_IP, HeaderValue::from_static("203.0.113.9"));
                    h.append(X_FORWARDED_PREFIX, HeaderValue::from_static("/shop"));
                    h.append(X_FORWARDED_PREFIX, HeaderValue::from_static("/v1"));
                    h.insert(X_FORWARDED_SSL, HeaderValue::from_static("on"));
                    h.insert(X_FORWARDED_SCHEME, HeaderValue::from_static("https"));
                    h.insert(X_FORWARDED_CLIENT_CERT, HeaderValue::from_static("Hash=cd"));
                }
                // The values of `name` the fields of `f` leave, written into
                // a head or put into a map alike.
                let written = |f: &Forwarding<'_>, name: &str| {
                    let mut out = bytes::BytesMut::new();
                    f.encode(&h, |_| false, &mut out);
                    let mut applied = h.clone();
                    f.apply(&mut applied);
                    assert_eq!(lines(&out), map_lines(&applied), "trusted {trusted}, said {said}");
                    lines(&out).into_iter().filter(|(n, _)| n == name).map(|(_, v)| v).collect::<Vec<_>>()
                };
                let f = Forwarding::new(&client, Some("api.test"), None, &via, &ID, Present::ANY);
                let get = |name: &str| written(&f, name);
                let kept = trusted && said;
                assert_eq!(get("x-forwarded-proto"), [if kept { "https" } else { "http" }]);
                assert_eq!(get("x-forwarded-host"), [if kept { "shop.example" } else { "api.test" }]);
                let ours = "for=10.0.0.7;proto=http;host=api.test";
                let forwarded = if kept { format!("for=203.0.113.9;proto=https, {ours}") } else { ours.to_owned() };
                assert_eq!(get("forwarded"), [forwarded]);
                // Fields this hop writes none of: a trusted proxy's port
                // stays, a client's goes; the prefix and Rack's scheme fields
                // go from either. `X-Real-IP` is this hop's: the peer, unless
                // named (below).
                let theirs = |v: &[&str]| if kept { v.iter().map(|v| (*v).to_owned()).collect() } else { vec![] };
                assert_eq!(get("x-forwarded-port"), theirs(&["443"]));
                assert_eq!(get("x-real-ip"), ["10.0.0.7"]);
                for gone in ["x-forwarded-prefix", "x-forwarded-ssl", "x-forwarded-scheme"] {
                    assert_eq!(get(gone), Vec::<String>::new(), "{gone}");
                }
                // What this hop says: its prefix replaces any other;
                // `X-Real-IP` is said behind a trusted proxy.
                let real_ip = trusted.then(|| HeaderValue::from_static("198.51.100.4"));
                let prefix = HeaderValue::from_static("/api");
                let mut f = Forwarding::new(&client, Some("api.test"), None, &via, &ID, Present::ANY);
                f.naming(Some(&prefix), real_ip);
                assert_eq!(written(&f, "x-forwarded-prefix"), ["/api"], "trusted {trusted}, said {said}");
                let real_ip = if trusted { "198.51.100.4" } else { "10.0.0.7" };
                assert_eq!(written(&f, "x-real-ip"), [real_ip]);
                // The certificate the peer presented is said; what a peer
                // says of one goes, a trusted proxy's too (a load balancer
                // passes a client's on).
                assert_eq!(written(&f, "x-forwarded-client-cert"), ["Hash=ab"], "trusted {trusted}, said {said}");
            }
        }
    }

    /// Both tables name the same field in each slot, and each name is found
    /// in its own.
    #[test]
    fn the_forwarding_tables_agree_on_their_slots() {
        for (slot, ((name, _), (trusted, _))) in FORWARDING.iter().zip(&FORWARDING_TRUSTED).enumerate() {
            assert_eq!(name, trusted);
            assert_eq!(forwarding_slot(name), Some(slot), "{name}");
        }
        for other in [
            "x-forwarded-fox",
            "x-real-ix",
            "content-language",
            "x-forwarded-prefi",
            "forwarde",
            "x-forwarded-client-cerv",
        ] {
            assert_eq!(forwarding_slot(&HeaderName::from_static(other)), None, "{other}");
        }
    }

    /// The request fields a plugin may not set are those this hop takes
    /// out or writes in a client's place (`Drop` in the forwarding table):
    /// two lists, held in step here.
    #[test]
    fn plugins_are_refused_the_fields_the_forwarding_table_drops() {
        let mut dropped: Vec<&str> =
            FORWARDING.iter().filter(|(_, mode)| *mode == Mode::Drop).map(|(name, _)| name.as_str()).collect();
        let mut refused = wasmgate_common::edit::GATEWAY_REQUEST_HEADERS.to_vec();
        dropped.sort_unstable();
        refused.sort_unstable();
        assert_eq!(refused, dropped);
    }

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

    /// `Host` cannot be named away; what `Connection` names goes before
    /// the plugins run, and `Connection` keeps only its options.
    #[test]
    fn connection_names_go_before_the_plugins_and_never_host() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("Upgrade, X-Consumer, host"));
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.insert(header::HOST, HeaderValue::from_static("a.example"));
        h.insert("x-consumer", HeaderValue::from_static("spoofed"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_nominated(&mut h);
        assert_eq!(h.get_all(header::CONNECTION).iter().collect::<Vec<_>>(), ["Upgrade, close"]);
        assert!(!h.contains_key("x-consumer"));
        // A plugin sets it now; the strip on the way upstream keeps it.
        h.insert("x-consumer", HeaderValue::from_static("alice"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get("x-consumer").map(HeaderValue::as_bytes), Some(&b"alice"[..]));
        assert_eq!(h.get(header::HOST).map(HeaderValue::as_bytes), Some(&b"a.example"[..]));
        assert!(!h.contains_key(header::CONNECTION) && !h.contains_key(header::UPGRADE));
    }

    #[test]
    fn every_connection_field_counts_and_tokens_match_in_any_case() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        h.append(header::CONNECTION, HeaderValue::from_static(" x-Second ,close,"));
        h.insert("x-second", HeaderValue::from_static("1"));
        h.insert("close", HeaderValue::from_static("kept: a name, not a token here"));
        h.insert("Proxy-Connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::TRAILER, HeaderValue::from_static("x-sum"));
        h.insert(header::USER_AGENT, HeaderValue::from_static("curl"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["close", "user-agent"]);
    }

    #[test]
    fn connection_values_read_the_same_whole_or_in_a_list() {
        let read = |values: &[&str]| ConnectionTokens::read(values.iter().map(|v| v.as_bytes()));
        let keep = ConnectionTokens { keep_alive: true, ..Default::default() };
        let close = ConnectionTokens { close: true, ..Default::default() };
        for v in ["keep-alive", "Keep-Alive", "KEEP-ALIVE", " keep-alive ", "keep-alive,", ", keep-alive"] {
            assert_eq!(read(&[v]), keep, "{v:?}");
        }
        for v in ["close", "Close", "close, close", " CLOSE"] {
            assert_eq!(read(&[v]), close, "{v:?}");
        }
        assert_eq!(read(&["keep-alive", "close"]), ConnectionTokens { close: true, ..keep });
        assert_eq!(read(&["Upgrade"]), ConnectionTokens { upgrade: true, ..Default::default() });
        assert_eq!(
            read(&["keep-alive, x-secret"]),
            ConnectionTokens { names_other: true, ..keep },
            "a list is read token by token"
        );
        // Near misses are other names, not the options.
        for v in ["keep-alivE2", "keep_alive", "closed", "clos"] {
            let t = read(&[v]);
            assert!(!t.keep_alive && !t.close && t.names_other, "{v:?}");
        }
    }

    #[test]
    fn hop_by_hop_names_by_length_and_case() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop(name.as_str().as_bytes()), Some(i));
            assert_eq!(hop_by_hop(name.as_str().to_ascii_uppercase().as_bytes()), Some(i));
        }
        for other in ["user-agent", "te-x", "t", "upgraded", "content-length", ""] {
            assert_eq!(hop_by_hop(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn via_joins_every_earlier_hop() {
        let via = crate::config::Via::new("wasmgate").unwrap();
        let mut h = HeaderMap::new();
        h.append(header::VIA, HeaderValue::from_static("1.0 fred"));
        h.append(header::VIA, HeaderValue::from_static("1.1 p.example.net"));
        add_via(&mut h, via.of(Version::HTTP_2));
        assert_eq!(h.get_all(header::VIA).iter().count(), 1);
        assert_eq!(h[header::VIA], "1.0 fred, 1.1 p.example.net, 2.0 wasmgate");
    }

    #[test]
    fn te_trailers_is_found_in_a_list() {
        for (value, takes) in [
            (&b"trailers"[..], true),
            (b"Trailers", true),
            (b"trailers, deflate;q=0.5", true),
            (b"gzip ,  TRAILERS ", true),
            (b"deflate", false),
            (b"trailersx", false),
            (b"", false),
        ] {
            assert_eq!(te_takes_trailers(value), takes, "{:?}", String::from_utf8_lossy(value));
        }
        let mut h = HeaderMap::new();
        h.append(header::TE, HeaderValue::from_static("deflate"));
        h.append(header::TE, HeaderValue::from_static("trailers, gzip"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h[header::TE], "trailers", "the list's trailers survives, alone");
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
        let client = Client::new(IpAddr::from([127, 0, 0, 1]), "http", None);
        forward(&mut h, &client, Some("api.test"), &via);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "api.test");
        assert_eq!(h[header::FORWARDED], "for=127.0.0.1;proto=http;host=api.test");
        assert_eq!(h[header::VIA], "1.1 wasmgate");
    }

    #[test]
    fn forwarded_headers_for_an_ipv6_client_and_a_host_with_a_port() {
        let via = HeaderValue::from_static("1.1 wasmgate");
        let client = Client::new(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]), "https", None);
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("api.test:8443"));
        forward(&mut h, &client, Some("api.test:8443"), &via);
        // The host as the client named it: the port is part of it (RFC
        // 7239, 5.3), and makes `Forwarded` quote it.
        assert_eq!(h[&X_FORWARDED_HOST], "api.test:8443");
        assert_eq!(h[&X_FORWARDED_FOR], "2001:db8::1");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[header::FORWARDED], "for=\"[2001:db8::1]\";proto=https;host=\"api.test:8443\"");
        let mut literal = HeaderMap::new();
        forward(&mut literal, &client, Some("[2001:db8::2]:8080"), &via);
        assert_eq!(literal[&X_FORWARDED_HOST], "[2001:db8::2]:8080");
        assert_eq!(literal[header::FORWARDED], "for=\"[2001:db8::1]\";proto=https;host=\"[2001:db8::2]:8080\"");
        let mut bare = HeaderMap::new();
        forward(&mut bare, &client, None, &via);
        assert_eq!(bare[header::FORWARDED], "for=\"[2001:db8::1]\";proto=https");
        assert!(!bare.contains_key(&X_FORWARDED_HOST));
    }

    #[test]
    fn a_connection_whose_requests_change_host_gets_each_its_own() {
        let via = HeaderValue::from_static("1.1 wasmgate");
        let client = Client::new(IpAddr::from([10, 0, 0, 7]), "http", None);
        for host in ["a.test", "a.test", "b.test", "a \"quoted\" one", "a.test"] {
            let mut h = HeaderMap::new();
            forward(&mut h, &client, Some(host), &via);
            assert_eq!(h[&X_FORWARDED_HOST], host);
            let element = h[header::FORWARDED].to_str().unwrap();
            if host.contains(' ') {
                assert_eq!(element, r#"for=10.0.0.7;proto=http;host="a \"quoted\" one""#, "quoted, and escaped");
            } else {
                assert_eq!(element, format!("for=10.0.0.7;proto=http;host={host}"));
            }
        }
    }

    #[test]
    fn request_ids() {
        let ids: Vec<HeaderValue> = (0..IDS_PER_BLOCK * 3).map(|_| new_request_id()).collect();
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(id.as_bytes().iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)), "{id:?}");
        }
        let distinct: std::collections::HashSet<&[u8]> = ids.iter().map(HeaderValue::as_bytes).collect();
        assert_eq!(distinct.len(), ids.len(), "ids sharing a block are each their own");
        // Every digit shows up: the pairs table covers all 16.
        let digits: std::collections::HashSet<u8> = ids.iter().flat_map(|id| id.as_bytes().to_vec()).collect();
        assert_eq!(digits.len(), 16);
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(incoming_request_id(&h), Some(HeaderValue::from_static("abc-123")));
        h.insert(X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_eq!(incoming_request_id(&h), None);
    }
}
