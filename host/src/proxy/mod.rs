//! The request path, in one direction:
//!
//! ```text
//! normalise path → route → request phase (plugin 1…n) → upstream (pick,
//! breaker, bulkhead, forward, retry) → response phase (plugin n…1) → client
//! ```
//!
//! A plugin that responds early ends the request phase; the response phase
//! then runs for the plugins before it, so (say) CORS headers still reach a
//! 401 from the JWT plugin. Routes without plugins skip the exchange
//! altogether.

pub mod body;
mod chain;
pub mod error;
pub mod headers;
mod upgrade;

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use tokio::time::Instant;
use wasmgate_common::cidr::{self, Cidr};

use self::body::{Body, BodyError};
use self::error::{Origin, ProxyError};
use self::headers::X_REQUEST_ID;
use crate::config::Ambiguous;
use crate::exchange::Exchange;
use crate::gateway::{Route, Snapshot};
use crate::routing;
use crate::telemetry::{AccessLog, PluginOutcome, TraceId, log_budget};
use crate::tls::ClientCert;
use crate::upstream::{ForwardOptions, Forwarded, Upstream};

/// The client side of a connection, shared by the requests on it.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub scheme: &'static str,
    /// The peer as the forwarding headers name it, and whether it is a
    /// trusted proxy (whose requests' clients are read from their
    /// `X-Forwarded-For`, [`client_of`](Self::client_of)).
    client: headers::Client,
    /// The certificate the peer presented to a listener asking for one.
    cert: Option<Arc<ClientCert>>,
}

impl ConnInfo {
    /// An IPv4 client of a dual-stack listener (`[::]`) is named by its
    /// IPv4 address, not `::ffff:a.b.c.d`: in the forwarding headers, the
    /// access log and to plugins (allow-lists, rate-limit keys).
    /// `trusted`: the proxies whose forwarding fields are kept, and which
    /// name the client (`server.trusted_proxies`).
    pub fn new(peer: SocketAddr, scheme: &'static str, trusted: &Arc<[Cidr]>) -> Self {
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let trusted = cidr::any_contains(trusted, peer.ip()).then(|| trusted.clone());
        Self { peer, scheme, client: headers::Client::new(peer.ip(), scheme, trusted), cert: None }
    }

    /// With the certificate the peer presented, for plugins; `forward`:
    /// said upstream too (`X-Forwarded-Client-Cert`).
    pub fn presenting(self, cert: ClientCert, forward: bool) -> Self {
        let client = if forward { self.client.with_cert(cert.element()) } else { self.client };
        Self { client, cert: Some(Arc::new(cert)), ..self }
    }

    /// Whether its requests' own `X-Request-Id` is kept: any client's, or
    /// (`request_id = "generate"`) a trusted proxy's only.
    fn keeps_request_id(&self, ids: crate::config::RequestIds) -> bool {
        ids == crate::config::RequestIds::Keep || self.client.trusted().is_some()
    }

    /// The client of a request on this connection: the peer, or — from a
    /// proxy in `server.trusted_proxies` (a load balancer in front) — the
    /// address its `X-Forwarded-For` reports, past any other trusted
    /// proxies, as nginx's `real_ip_recursive`. What the access log,
    /// `hash_on = "client-ip"` and plugins (ip-filter, rate-limit keys) see;
    /// the forwarding fields still name the peer as this hop's.
    fn client_of(&self, headers: &http::HeaderMap) -> IpAddr {
        let Some(trusted) = self.client.trusted() else { return self.peer.ip() };
        let values = headers.get_all(headers::X_FORWARDED_FOR).iter().map(HeaderValue::as_bytes);
        match cidr::client_behind(trusted, self.peer.ip(), values) {
            // A proxy we trust wrote what it should not, or passed on a
            // client's list without its own entry: said, within a budget.
            cidr::Client::Malformed { peer, entry } => {
                if let Some(n) = log_budget::FORWARDED_FOR.take() {
                    let entry: String = entry.chars().take(64).collect();
                    tracing::warn!(
                        %peer,
                        dropped = log_budget::dropped(n),
                        "X-Forwarded-For from a proxy in server.trusted_proxies has {entry:?}, not an address: \
                         the proxy is taken as the client"
                    );
                }
                peer
            }
            client => client.ip(),
        }
    }
}

/// What the access log and metrics learn about a request on its way.
#[derive(Debug)]
struct Trace<'s> {
    /// When the request's handling began.
    started: Instant,
    /// Its client ([`ConnInfo::client_of`]).
    client: IpAddr,
    /// When its response was ready, if that is known without reading the
    /// clock: on a route without response hooks, when the upstream
    /// answered.
    ended: Option<Instant>,
    route: Option<&'s Route>,
    upstream: Option<&'s str>,
    endpoint: Option<Arc<str>>,
    upstream_time: Option<Duration>,
    /// Our `Via` entry for the upstream's response, until it is put in the
    /// map (for plugins to see) or stamped on the response as it goes out.
    via: Option<HeaderValue>,
    /// Each plugin call and its outcome, kept only for the access log.
    plugins: Vec<(Arc<str>, &'static str)>,
}

impl Trace<'_> {
    fn new(started: Instant, client: IpAddr) -> Self {
        Self {
            started,
            client,
            ended: None,
            route: None,
            upstream: None,
            endpoint: None,
            upstream_time: None,
            via: None,
            plugins: Vec::new(),
        }
    }

    /// When the request's handling ended (its response is ready).
    fn ended(&self) -> Instant {
        self.ended.unwrap_or_else(Instant::now)
    }
}

/// What this hop adds to every response it answers with: the request id,
/// and `Via` to one that came from an upstream (unless plugins handled it,
/// which see `Via` in the map). The HTTP/1 server writes them with the head
/// ([`h1`](crate::server::h1)), so no map entry is made only to be written
/// out; [`apply`](Self::apply) puts them into the map for HTTP/2.
#[derive(Debug)]
pub struct Stamp {
    pub request_id: HeaderValue,
    pub via: Option<HeaderValue>,
    /// The gateway answered for the client's fault (a malformed request, a
    /// body it cut off), not with the route's answer.
    pub client_fault: bool,
}

impl Stamp {
    /// The fields as this hop writes them: `Via` joins the response's list,
    /// the request id replaces any other.
    pub fn fields<'s>(
        &'s self,
    ) -> headers::HopFields<impl Fn(usize) -> Option<&'s HeaderValue>, impl Fn(&HeaderName) -> Option<usize>, 2> {
        /// The fields, in the order they are written.
        static STAMPED: [(HeaderName, headers::Mode); 2] =
            [(header::VIA, headers::Mode::Append), (X_REQUEST_ID, headers::Mode::Replace)];
        fn slot(name: &HeaderName) -> Option<usize> {
            STAMPED.iter().position(|(n, _)| n == name)
        }
        headers::HopFields {
            table: &STAMPED,
            value: |slot| if slot == 0 { self.via.as_ref() } else { Some(&self.request_id) },
            valued: 2,
            slot,
        }
    }

    /// Puts the fields into a response's map.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        self.fields().apply(headers);
    }
}

/// Which fields a request head may have, as the server that read it knows:
/// what an HTTP/1 head was read without needs no looking for in its map.
/// Without hop-by-hop fields there are none to take out, no
/// `Transfer-Encoding` and no upgrade; without `X-Request-Id` or
/// `Content-Length`, nothing to look up. An HTTP/2 request may have any
/// ([`Present::ANY`]); a plugin chain adds what its edits may have added
/// (`chain::run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Present(u8);

impl Present {
    /// None of the fields below.
    pub const NONE: Self = Self(0);
    /// A hop-by-hop field (RFC 9110 §7.6.1), or `Upgrade`.
    pub const HOP: Self = Self(1);
    pub const REQUEST_ID: Self = Self(1 << 1);
    pub const CONTENT_LENGTH: Self = Self(1 << 2);
    /// Not a field the proxy looks for: a name with `_`, which the HTTP/1
    /// server drops unless `server.underscores_in_headers` (it is never
    /// added to a head's set).
    pub const UNDERSCORE: Self = Self(1 << 3);
    /// A field that overrides the method or URL ([`headers::OVERRIDES`]).
    pub const OVERRIDE: Self = Self(1 << 4);
    /// Not known: any of them.
    pub const ANY: Self = Self(u8::MAX);

    /// Whether the head may have `field` (one of the above).
    pub fn may_have(self, field: Self) -> bool {
        self.0 & field.0 != 0
    }

    /// Known not to have `field`.
    #[must_use]
    pub fn without(self, field: Self) -> Self {
        Self(self.0 & !field.0)
    }
}

impl std::ops::BitOr for Present {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl std::ops::BitOrAssign for Present {
    fn bitor_assign(&mut self, other: Self) {
        self.0 |= other.0;
    }
}

/// Serves one request on the given config snapshot. Never fails: errors
/// become responses with the request id. Request and response are boxed
/// where they are made (a server, an upstream connection) and moved as
/// pointers from there: each layer between moved a copy of ~300 bytes.
/// The response comes with the [`Stamp`] the server puts on it.
pub async fn handle(
    snapshot: Arc<Snapshot>,
    conn: &ConnInfo,
    req: Box<Request<Body>>,
    present: Present,
) -> (Box<Response<Body>>, Stamp) {
    let start = Instant::now();
    let keep = present.may_have(Present::REQUEST_ID) && conn.keeps_request_id(snapshot.config.server.request_id);
    let request_id =
        keep.then(|| headers::incoming_request_id(req.headers())).flatten().unwrap_or_else(headers::new_request_id);
    let mut record = Record {
        snapshot: &snapshot,
        conn,
        method: req.method().clone(),
        log_path: snapshot.access_log.is_some().then(|| req.uri().path().to_owned()),
        trace_id: snapshot.access_log.as_ref().and_then(|_| TraceId::of(req.headers())).map(Box::new),
        request_id: &request_id,
        trace: Trace::new(start, conn.client_of(req.headers())),
        recorded: false,
    };
    let (mut via, mut client_fault) = (None, false);
    let resp = match serve(&snapshot, conn, req, present, &request_id, &mut record.trace).await {
        Ok(resp) => {
            via = record.trace.via.take();
            resp
        }
        Err(e) => {
            let id = request_id.to_str().unwrap_or("-");
            match e.origin() {
                // Already logged with the plugin's name where it failed.
                Origin::Plugin => {}
                Origin::Upstream | Origin::Gateway => {
                    if let Some(n) = log_budget::REQUEST_FAILURES.take() {
                        tracing::warn!(request_id = id, dropped = log_budget::dropped(n), "{e}");
                    }
                }
                Origin::Client => {
                    client_fault = true;
                    tracing::debug!(request_id = id, "{e}");
                }
            }
            Box::new(e.response(&request_id))
        }
    };
    record.write(resp.status().as_u16(), http_body::Body::size_hint(resp.body()).exact());
    drop(record);
    (resp, Stamp { request_id, via, client_fault })
}

/// A request's line in the metrics and the access log, written once: with
/// its response, or — when its client left first (the request's future
/// dropped: a closed connection, a reset stream) — with status 499, as
/// nginx does. Those were neither counted nor logged, so a slow upstream
/// that clients gave up on looked healthy.
struct Record<'a> {
    snapshot: &'a Snapshot,
    conn: &'a ConnInfo,
    method: Method,
    log_path: Option<String>,
    /// For the access log. (Boxed: most requests have none, and this is
    /// part of every request's future.)
    trace_id: Option<Box<TraceId>>,
    request_id: &'a HeaderValue,
    trace: Trace<'a>,
    recorded: bool,
}

/// The status of a request whose client left before its response.
const CLIENT_CLOSED: u16 = 499;

impl Record<'_> {
    fn write(&mut self, status: u16, bytes_out: Option<u64>) {
        self.recorded = true;
        let Self { snapshot, conn, method, log_path, trace_id, request_id, trace, .. } = self;
        let elapsed = trace.ended().saturating_duration_since(trace.started);
        let route = trace.route.map_or("-", |r| &*r.name);
        snapshot.metrics.request(route, trace.route.map(|r| &r.series), method, status, elapsed);
        if let (Some(writer), Some(path)) = (&snapshot.access_log, log_path.as_deref()) {
            let plugins: Vec<PluginOutcome<'_>> =
                trace.plugins.iter().map(|(plugin, outcome)| PluginOutcome { plugin, outcome }).collect();
            writer.write(&AccessLog {
                ts: std::time::SystemTime::now(),
                request_id: request_id.to_str().unwrap_or("-"),
                trace_id: trace_id.as_deref(),
                client: trace.client,
                peer: (trace.client != conn.peer.ip()).then(|| conn.peer.ip()),
                method,
                path,
                route: trace.route.map(|r| &*r.name),
                upstream: trace.upstream,
                endpoint: trace.endpoint.as_deref(),
                status,
                duration: elapsed,
                upstream_time: trace.upstream_time,
                bytes_out,
                plugins: &plugins,
            });
        }
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            // Its response was never made: the time is until now.
            self.trace.ended = None;
            self.write(CLIENT_CLOSED, Some(0));
        }
    }
}

async fn serve<'s>(
    snapshot: &'s Snapshot,
    conn: &ConnInfo,
    mut req: Box<Request<Body>>,
    present: Present,
    request_id: &HeaderValue,
    trace: &mut Trace<'s>,
) -> Result<Box<Response<Body>>, ProxyError> {
    if other_case_of_a_standard_method(req.method()) {
        return Err(ProxyError::BadMethod);
    }
    // An upstream that answers `TRACE` (Apache's default) echoes the
    // request as it reached it — with what plugins added (jwt's claims, an
    // api-key's consumer) — back to the client: refused, as nginx does.
    if req.method() == Method::TRACE {
        return Err(ProxyError::Trace);
    }
    // Routes, methods and plugins decide on the request line; an upstream
    // framework that honours one of these fields acts on another.
    if present.may_have(Present::OVERRIDE)
        && snapshot.config.server.override_headers == Ambiguous::Reject
        && let Some(name) = headers::OVERRIDES.iter().find(|n| req.headers().contains_key(*n))
    {
        return Err(ProxyError::Override(name.as_str().to_owned()));
    }
    // The request stays in its box and is changed there: taken apart and
    // put back together, as it was, it was copied at each step.
    if let Cow::Owned(normal) =
        routing::normalize(req.uri().path(), snapshot.config.server.paths).ok_or(ProxyError::BadPath)?
    {
        set_path(req.uri_mut(), &normal)?;
    }
    // An absolute-form target, or an HTTP/2 `:path`, with a query and no
    // path (`http://h?x=1`): its path is `/` (RFC 9112 §3.2.1), which went
    // upstream as `GET ?x=1`.
    if req.uri().path_and_query().is_some_and(|pq| pq.as_str().starts_with('?')) {
        set_path(req.uri_mut(), "/")?;
    }
    let host_source = routing::HostSource::of(req.uri(), req.headers());
    // As named (port and all) for the forwarding fields; without the port
    // for the routes. A host that is not `host[:port]`
    // (`evil.test#.example.com` would match `*.example.com`) is refused
    // (RFC 9112 §3.2).
    let (named, host) = match &host_source {
        None => (None, None),
        Some(source) => {
            // `let … else`: an `ok_or` made (and dropped) the error on
            // every request.
            let Some((named, host)) = source.as_named().and_then(|n| Some((n, routing::host_name(n)?))) else {
                return Err(ProxyError::BadHost);
            };
            (Some(named), Some(host))
        }
    };
    let matched =
        snapshot.router.find(host, req.method(), req.uri().path(), req.headers()).ok_or(ProxyError::NoRoute)?;
    let route = &snapshot.routes[matched.route];
    trace.route = Some(route);
    if present.may_have(Present::CONTENT_LENGTH)
        && let Ok(Some(n)) = crate::upstream::h1::content_length(req.headers())
        && n > route.max_body
    {
        return Err(ProxyError::BodyTooLarge(route.max_body));
    }
    // A stream over the route's limit, or stalled, fails mid-way.
    req.body_mut().cap(route.max_body, snapshot.config.server.body_read_timeout);
    let forward = Forward {
        snapshot,
        route,
        conn,
        host: named,
        request_id,
        host_removed: Default::default(),
        prefix_stripped: Default::default(),
    };
    if route.chain.is_empty() {
        if let Some(rw) = &route.rewrite {
            let path = rw.apply(req.uri().path(), &matched.captures).into_owned();
            forward.rewrote(req.uri().path(), &path);
            set_path(req.uri_mut(), &path)?;
        }
        if upgrade::asked(&req, present, &route.upgrades) {
            return Box::pin(upgrade::proxy(&forward, req, present, trace.started, trace)).await;
        }
        let forwarding = forward.head(&mut req, present, trace.client);
        return forward.send(req, &forwarding, trace.started, trace).await;
    }
    let (mut parts, body) = (*req).into_parts();
    if present.may_have(Present::HOP) {
        headers::strip_nominated(&mut parts.headers);
    }
    // The routed host is the target's authority when there is one (absolute
    // form, HTTP/2): it goes into `Host` (replacing one that says otherwise,
    // or as the `Host` an HTTP/2 request does not carry), so a plugin reading
    // `Host` sees what was routed, and one that sets it decides what goes
    // upstream ([`chain::run`] drops the authority).
    if let (Some(routing::HostSource::Authority(_)), Some(named)) = (&host_source, named)
        && parts.headers.get(header::HOST).is_none_or(|h| h.as_bytes() != named.as_bytes())
        && let Ok(value) = HeaderValue::from_str(named)
    {
        parts.headers.insert(header::HOST, value);
    }
    let mut ex = Box::new(Exchange::new(
        parts,
        trace.client,
        conn.scheme,
        request_id.clone(),
        route.name.clone(),
        matched.captures,
        route.max_body,
    ));
    ex.client_cert = conn.cert.clone();
    Box::pin(chain::run(&forward, ex, body, present, trace)).await
}

/// How a routed request reaches its upstream: what it borrows from the
/// config snapshot (`'s`, which the trace may borrow too) and from the
/// request (`'a`).
struct Forward<'s, 'a> {
    snapshot: &'s Snapshot,
    route: &'s Route,
    conn: &'a ConnInfo,
    /// The host as the request named it, with its port.
    host: Option<&'a str>,
    request_id: &'a HeaderValue,
    /// A plugin removed the request's `Host` (set by the chain).
    host_removed: std::sync::atomic::AtomicBool,
    /// The route's `strip_prefix` shortened the path: its prefix goes
    /// upstream as `X-Forwarded-Prefix`.
    prefix_stripped: std::sync::atomic::AtomicBool,
}

impl<'s> Forward<'s, '_> {
    /// The request head as it goes upstream: hop-by-hop headers out (when
    /// it may have any), and the forwarding fields this hop adds, which go
    /// in as the head is written.
    fn head(&self, req: &mut Request<Body>, present: Present, client: IpAddr) -> headers::Forwarding<'_> {
        if present.may_have(Present::HOP) {
            headers::strip_hop_by_hop(req.headers_mut());
        }
        let mut forwarding = headers::Forwarding::new(
            &self.conn.client,
            self.host,
            req.uri().authority(),
            // The protocol the client's request came in.
            self.snapshot.config.server.via.of(req.version()),
            self.request_id,
            present,
        );
        let prefix = self.route.forwarded_prefix.as_ref().filter(|_| self.prefix_stripped.load(Relaxed));
        let trusted = self.conn.client.trusted().is_some();
        if prefix.is_some() || trusted {
            // Behind a trusted proxy, `X-Real-IP` says who the client is.
            let real_ip = trusted.then(|| HeaderValue::from_str(&client.to_string()).ok()).flatten();
            forwarding.naming(prefix, real_ip);
        }
        // The upstream gets origin-form (what an HTTP/1 client sends
        // already); the upstream module adds what its protocol needs.
        origin_form(req.uri_mut());
        forwarding
    }

    /// Notes the route's rewrite of `before` into `after`: a `strip_prefix`
    /// that shortened it is said upstream ([`head`](Self::head)).
    fn rewrote(&self, before: &str, after: &str) {
        if self.route.forwarded_prefix.is_some() && after.len() < before.len() {
            self.prefix_stripped.store(true, Relaxed);
        }
    }

    /// The upstream for this request: the route's one, or a weighted pick
    /// among its targets (canary, blue/green).
    fn upstream(&self) -> Result<&'s Arc<Upstream>, ProxyError> {
        self.route
            .pick_target(fastrand::u32(..))
            .ok_or_else(|| ProxyError::NoUpstream { route: self.route.name.clone() })
    }

    /// Sends a request whose head [`head`](Self::head) prepared (not one
    /// call for both: an upgrade adds to the head in between). `started` is
    /// the last clock reading before it (the request's start, or the end of
    /// its last plugin call): the forwarding starts there rather than with
    /// another reading.
    async fn send(
        &self,
        req: Box<Request<Body>>,
        forwarding: &headers::Forwarding<'_>,
        started: Instant,
        trace: &mut Trace<'s>,
    ) -> Result<Box<Response<Body>>, ProxyError> {
        let mut req = req;
        let upstream = self.upstream()?;
        trace.upstream = Some(&upstream.name);
        // A request that named no host (HTTP/1.0 without `Host`, as
        // HAProxy's default health check sends) goes upstream as HTTP/1.1,
        // which must carry one: the upstream's name, as nginx sends its
        // `proxy_pass` group's (an upstream answered 400 to the hostless
        // HTTP/1.1 request); so does one whose `Host` a plugin removed. The
        // client's `X-Forwarded-Host` goes when no host was named for it to
        // say. A plugin's `Host` stays.
        let removed = self.host_removed.load(std::sync::atomic::Ordering::Relaxed);
        if (self.host.is_none() || removed) && !req.headers().contains_key(header::HOST) {
            if let Ok(name) = HeaderValue::from_str(&upstream.name) {
                req.headers_mut().insert(header::HOST, name);
            }
            if self.host.is_none() {
                req.headers_mut().remove(headers::X_FORWARDED_HOST);
            }
        }
        let hash = upstream.hash_key(req.headers(), trace.client);
        let opts = ForwardOptions {
            route: &self.route.name,
            timeout: self.route.timeout,
            try_timeout: self.route.try_timeout,
            retry: &self.route.retries,
            hash,
            forwarding: Some(forwarding),
            started: Some(started),
        };
        // Boxed, as are the plugin chain and upgrades in `serve`: the
        // futures of the request path are moved into their callers' state
        // when awaited, and inline they made the connection's request
        // future ~58 KB, copied several times per request.
        let Forwarded { mut response, endpoint, upstream_time, answered } =
            Box::pin(upstream.forward(req, &opts)).await?;
        // Without response hooks, nothing runs once the upstream answered.
        trace.ended = (!self.route.has_response_hooks).then_some(answered);
        trace.endpoint = Some(endpoint);
        trace.upstream_time = Some(upstream_time);
        let version = response.version();
        // The client's connection decides the version hyper writes.
        *response.version_mut() = http::Version::HTTP_11;
        // The upstream module leaves out hop-by-hop fields as it reads a
        // response; this hop adds `Via` (and the request id) as the
        // response goes out, or for plugins now (`chain`).
        trace.via = Some(self.snapshot.config.server.via.of(version).clone());
        Ok(response)
    }
}

/// Whether an answer has no body on the wire (RFC 9110 §6.4.1): one to a
/// `HEAD`, a 1xx, a 204 or a 304. Both servers and a route that buffers
/// bodies go by it.
pub fn bodiless(head: bool, status: http::StatusCode) -> bool {
    head || status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED
}

/// Whether a bodiless answer may say the length of the body it describes
/// (a `HEAD`'s, a 304's): a 1xx or 204 has none (RFC 9110 §8.6).
pub fn may_state_length(status: http::StatusCode) -> bool {
    !(status.is_informational() || status == http::StatusCode::NO_CONTENT)
}

/// Sets `content-length` for a body of known size (or removes it when the
/// body will be streamed), and drops `transfer-encoding`.
fn fix_length(h: &mut http::HeaderMap, len: Option<usize>) {
    h.remove(header::TRANSFER_ENCODING);
    match len {
        Some(n) => {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        None => {
            h.remove(header::CONTENT_LENGTH);
        }
    }
}

fn client_body_error(e: BodyError, route: &Route) -> ProxyError {
    match e {
        BodyError::TooLarge(_) => ProxyError::BodyTooLarge(route.max_body),
        BodyError::Timeout(ms) => ProxyError::BodyTimeout(ms),
        BodyError::Late => ProxyError::BodyLate,
        BodyError::Hyper(e) => ProxyError::ClientBody(e.to_string()),
        BodyError::Client(e) => ProxyError::ClientBody(e.to_string()),
        BodyError::Upstream(e) => ProxyError::ClientBody(e.to_string()),
    }
}

fn set_path(uri: &mut http::Uri, path: &str) -> Result<(), ProxyError> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut up = std::mem::take(uri).into_parts();
    up.path_and_query = Some(pq.parse().map_err(|_| ProxyError::BadPath)?);
    *uri = http::Uri::from_parts(up).map_err(|_| ProxyError::BadPath)?;
    Ok(())
}

/// A copy of a request head for the upstream, keeping the original for the
/// response phase.
fn clone_head(p: &http::request::Parts) -> http::request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    *req.version_mut() = p.version;
    *req.headers_mut() = p.headers.clone();
    // An upgrade's client socket rides here (shared: one side takes it).
    *req.extensions_mut() = p.extensions.clone();
    req.into_parts().0
}

/// Makes `uri` origin-form: its path and query only.
fn origin_form(uri: &mut http::Uri) {
    if (uri.scheme().is_some() || uri.authority().is_some())
        && let Some(pq) = uri.path_and_query().cloned()
    {
        *uri = http::Uri::from(pq);
    }
}

/// Whether `method` is a standard one written in other letters (`delete`,
/// `Get`): a method of its own to the routes and plugins (a route for
/// `DELETE`, abac's action groups) while many upstream frameworks fold it
/// to the standard one — a way past every rule written for it.
fn other_case_of_a_standard_method(method: &Method) -> bool {
    // A static, not a const: a const array of methods (which have drop
    // glue) was built and dropped on every request.
    static STANDARD: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
        Method::CONNECT,
        Method::TRACE,
    ];
    !STANDARD.contains(method) && STANDARD.iter().any(|s| s.as_str().eq_ignore_ascii_case(method.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_in_other_letters_are_told_apart() {
        for m in ["delete", "Get", "pOST", "patch"] {
            assert!(other_case_of_a_standard_method(&Method::from_bytes(m.as_bytes()).unwrap()), "{m}");
        }
        for m in ["GET", "DELETE", "PURGE", "purge", "MKCOL"] {
            assert!(!other_case_of_a_standard_method(&Method::from_bytes(m.as_bytes()).unwrap()), "{m}");
        }
    }

    #[test]
    fn an_ipv4_client_of_a_dual_stack_listener_is_named_by_its_ipv4_address() {
        let mapped: SocketAddr = "[::ffff:203.0.113.5]:4000".parse().unwrap();
        assert_eq!(ConnInfo::new(mapped, "http", &Arc::from([])).peer, "203.0.113.5:4000".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        assert_eq!(ConnInfo::new(v6, "http", &Arc::from([])).peer, v6);
    }

    #[test]
    fn the_client_is_read_from_x_forwarded_for_only_behind_a_trusted_proxy() {
        let trusted: Arc<[Cidr]> = Arc::from([Cidr::parse("10.0.0.0/8").unwrap()]);
        let mut h = http::HeaderMap::new();
        h.append(headers::X_FORWARDED_FOR, HeaderValue::from_static("192.0.2.9, 198.51.100.7"));
        h.append(headers::X_FORWARDED_FOR, HeaderValue::from_static("10.1.1.1"));
        let lb = ConnInfo::new("[::ffff:10.0.0.2]:4000".parse().unwrap(), "http", &trusted);
        assert_eq!(lb.client_of(&h), "198.51.100.7".parse::<IpAddr>().unwrap(), "past the trusted hops");
        assert_eq!(lb.client_of(&http::HeaderMap::new()), "10.0.0.2".parse::<IpAddr>().unwrap());
        h.insert(headers::X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.7, unknown"));
        assert_eq!(lb.client_of(&h), "10.0.0.2".parse::<IpAddr>().unwrap(), "malformed: the proxy");
        let other = ConnInfo::new("192.0.2.1:4000".parse().unwrap(), "http", &trusted);
        assert_eq!(other.client_of(&h), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
