//! The request path, in one direction:
//!
//! ```text
//! normalise path → route → request phase (plugin 1…n) → forward upstream
//!                → response phase (plugin n…1) → client
//! ```
//!
//! A plugin that responds early ends the request phase; the response phase
//! then runs for the plugins before it, so (say) CORS headers still reach a
//! 401 from the JWT plugin. Routes without plugins skip the exchange
//! altogether.

pub mod body;
pub mod error;
pub mod headers;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

use self::body::{Body, BodyError};
use self::error::{Origin, ProxyError};
use self::headers::X_REQUEST_ID;
use crate::config::OnPluginError;
use crate::exchange::{self, Exchange};
use crate::gateway::{Route, Snapshot};
use crate::plugin::{ChainLink, Fault, Outcome};
use crate::routing;

/// The client side of a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub scheme: &'static str,
}

/// Serves one request on the given config snapshot. Never fails: errors
/// become responses with the request id.
pub async fn handle(snapshot: Arc<Snapshot>, conn: ConnInfo, req: Request<Incoming>) -> Response<Body> {
    let request_id = headers::incoming_request_id(req.headers()).unwrap_or_else(headers::new_request_id);
    match serve(&snapshot, conn, req, &request_id).await {
        Ok(mut resp) => {
            resp.headers_mut().insert(X_REQUEST_ID, request_id);
            resp
        }
        Err(e) => {
            match e.origin() {
                // Already logged with the plugin's name where it failed.
                Origin::Plugin => {}
                Origin::Upstream | Origin::Gateway => {
                    tracing::warn!(request_id = request_id.to_str().unwrap_or("-"), "{e}");
                }
                Origin::Client => {
                    tracing::debug!(request_id = request_id.to_str().unwrap_or("-"), "{e}")
                }
            }
            e.response(&request_id)
        }
    }
}

async fn serve(
    snapshot: &Snapshot,
    conn: ConnInfo,
    req: Request<Incoming>,
    request_id: &HeaderValue,
) -> Result<Response<Body>, ProxyError> {
    let (mut parts, body) = req.into_parts();
    if let Cow::Owned(normal) = routing::normalize(parts.uri.path()).ok_or(ProxyError::BadPath)? {
        set_path(&mut parts, &normal)?;
    }
    let host = routing::request_host(&parts.uri, &parts.headers).map(str::to_owned);
    let matched = snapshot
        .router
        .find(host.as_deref(), &parts.method, parts.uri.path(), &parts.headers)
        .ok_or(ProxyError::NoRoute)?;
    let route = &snapshot.routes[matched.route];
    if content_length(&parts.headers).is_some_and(|n| n > route.max_body) {
        return Err(ProxyError::BodyTooLarge(route.max_body));
    }
    let forward = Forward { snapshot, route, conn, host: host.as_deref(), request_id };
    if route.chain.is_empty() {
        if let Some(rw) = &route.rewrite {
            let path = rw.apply(parts.uri.path(), &matched.captures).into_owned();
            set_path(&mut parts, &path)?;
        }
        let upstream_req = forward.request(parts, capped(body, route.max_body));
        return forward.send(upstream_req).await.map(|r| r.map(Body::Stream));
    }

    let mut ex = Box::new(Exchange {
        request: parts,
        request_body: None,
        client_ip: conn.peer.ip(),
        scheme: conn.scheme,
        request_id: request_id.clone(),
        route: route.name.clone(),
        captures: matched.captures,
        body_limit: route.max_body,
        response: None,
        response_body: None,
        context: HashMap::new(),
    });
    let mut body = Some(body);
    if route.needs_request_body
        && let Some(b) = body.take()
    {
        ex.request_body = Some(body::collect(b, route.max_body).await.map_err(|e| client_body_error(e, route))?);
    }
    let path_before = ex.request.uri.path().to_owned();

    // Request phase.
    let mut early = None;
    for (i, link) in route.chain.iter().enumerate() {
        if !link.info.on_request {
            continue;
        }
        match link.on_request(&mut ex) {
            Ok(Outcome::Continue) => {}
            Ok(Outcome::Respond(reply)) => {
                early = Some((i, reply_parts(link, reply)?));
                break;
            }
            Err(fault) => plugin_fault(route, link, fault, request_id)?,
        }
    }

    // Upstream, unless a plugin answered.
    let (resp_parts, resp_body, ran) = match early {
        Some((i, (parts, bytes))) => (parts, RespBody::Bytes(bytes), i),
        None => {
            if let Some(rw) = &route.rewrite
                && ex.request.uri.path() == path_before
            {
                let path = rw.apply(&path_before, &ex.captures).into_owned();
                ex.set_path(&path).map_err(|_| ProxyError::BadPath)?;
            }
            let req_body = match (ex.request_body.take(), body.take()) {
                (Some(bytes), _) => {
                    fix_length(&mut ex.request.headers, Some(bytes.len()));
                    Body::full(bytes)
                }
                (None, Some(b)) => capped(b, route.max_body),
                (None, None) => Body::Empty,
            };
            // Response hooks read the request too: keep it, send a copy.
            let head = if route.has_response_hooks {
                clone_head(&ex.request)
            } else {
                std::mem::replace(&mut ex.request, Request::new(()).into_parts().0)
            };
            let (parts, incoming) = forward.send(forward.request(head, req_body)).await?.into_parts();
            (parts, RespBody::Stream(incoming), route.chain.len())
        }
    };
    response_phase(route, ex, ran, resp_parts, resp_body, request_id).await
}

/// A response body: as the upstream streams it, or in memory.
enum RespBody {
    Stream(Incoming),
    Bytes(Bytes),
}

/// Runs the response hooks of the first `ran` plugins, last first. A plugin
/// that replies replaces the response; the plugins before it still see it.
async fn response_phase(
    route: &Route,
    mut ex: Box<Exchange>,
    ran: usize,
    parts: http::response::Parts,
    mut body: RespBody,
    request_id: &HeaderValue,
) -> Result<Response<Body>, ProxyError> {
    let links = &route.chain[..ran];
    if !links.iter().any(|l| l.info.on_response) {
        return Ok(into_response(parts, body));
    }
    if route.needs_response_body {
        let bytes = match body {
            RespBody::Bytes(b) => b,
            RespBody::Stream(s) => {
                let limit = route.max_body;
                body::collect(s, limit).await.map_err(|e| match e {
                    BodyError::TooLarge(_) => {
                        ProxyError::UpstreamBodyTooLarge { upstream: route.upstream.name.clone(), limit }
                    }
                    BodyError::Hyper(e) => {
                        ProxyError::UpstreamProtocol { upstream: route.upstream.name.clone(), detail: e.to_string() }
                    }
                })?
            }
        };
        ex.response_body = Some(bytes);
        body = RespBody::Bytes(Bytes::new());
    }
    ex.response = Some(parts);
    for link in links.iter().rev() {
        if !link.info.on_response {
            continue;
        }
        match link.on_response(&mut ex) {
            Ok(Outcome::Continue) => {}
            Ok(Outcome::Respond(reply)) => {
                let (parts, bytes) = reply_parts(link, reply)?;
                ex.response = Some(parts);
                match &mut ex.response_body {
                    Some(b) => *b = bytes,
                    None => body = RespBody::Bytes(bytes),
                }
            }
            Err(fault) => plugin_fault(route, link, fault, request_id)?,
        }
    }
    if let Some(b) = ex.response_body.take() {
        body = RespBody::Bytes(b);
    }
    let parts = ex.response.take().ok_or(ProxyError::Internal("response lost in the response phase"))?;
    Ok(into_response(parts, body))
}

fn into_response(parts: http::response::Parts, body: RespBody) -> Response<Body> {
    match body {
        RespBody::Stream(s) => Response::from_parts(parts, Body::Stream(s)),
        RespBody::Bytes(b) => buffered_response(parts, b),
    }
}

/// The parts of a request that go upstream, and how they get there.
struct Forward<'a> {
    snapshot: &'a Snapshot,
    route: &'a Route,
    conn: ConnInfo,
    host: Option<&'a str>,
    request_id: &'a HeaderValue,
}

impl Forward<'_> {
    fn request(&self, mut parts: http::request::Parts, body: Body) -> Request<Body> {
        let h = &mut parts.headers;
        headers::strip_hop_by_hop(h);
        if !h.contains_key(header::HOST)
            && let Some(v) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            h.insert(header::HOST, v);
        }
        headers::add_forwarded(h, self.conn.peer.ip(), self.conn.scheme, self.host, &self.snapshot.config.server.via);
        h.insert(X_REQUEST_ID, self.request_id.clone());
        Request::from_parts(parts, body)
    }

    async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, ProxyError> {
        let mut resp = self.route.upstream.forward(req, self.route.timeout).await?;
        let version = resp.version();
        // The client's connection decides the version hyper writes.
        *resp.version_mut() = http::Version::HTTP_11;
        let h = resp.headers_mut();
        headers::strip_hop_by_hop(h);
        headers::add_via(h, &self.snapshot.config.server.via, version);
        Ok(resp)
    }
}

fn buffered_response(mut parts: http::response::Parts, bytes: Bytes) -> Response<Body> {
    fix_length(&mut parts.headers, Some(bytes.len()));
    Response::from_parts(parts, Body::full(bytes))
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

/// Logs a plugin failure and applies the route's choice.
fn plugin_fault(route: &Route, link: &ChainLink, fault: Fault, request_id: &HeaderValue) -> Result<(), ProxyError> {
    let open = route.on_plugin_error == OnPluginError::FailOpen;
    tracing::warn!(
        plugin = &*link.plugin.name,
        route = &*route.name,
        key = link.key,
        kind = fault.kind.as_str(),
        request_id = request_id.to_str().unwrap_or("-"),
        detail = fault.detail,
        "plugin failed; {}",
        if open { "skipping it (fail-open)" } else { "failing the request (fail-closed)" }
    );
    if open {
        Ok(())
    } else {
        Err(ProxyError::Plugin { plugin: link.plugin.name.clone(), kind: fault.kind, detail: fault.detail })
    }
}

/// A plugin's reply as response parts, refusing what is not valid HTTP.
fn reply_parts(
    link: &ChainLink,
    reply: crate::plugin::host_api::wasmgate::plugin::types::Reply,
) -> Result<(http::response::Parts, Bytes), ProxyError> {
    let status = exchange::status(reply.status).map_err(|_| ProxyError::PluginReply {
        plugin: link.plugin.name.clone(),
        detail: format!("status {} is outside 100..=599", reply.status),
    })?;
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = status;
    for (name, value) in reply.headers {
        match exchange::header_edit(&name, Some(&value)) {
            Ok((n, Some(v))) => {
                parts.headers.append(n, v);
            }
            _ => {
                tracing::warn!(plugin = &*link.plugin.name, header = %exchange_name(&name), "dropped an invalid or gateway-managed header from a plugin reply")
            }
        }
    }
    Ok((parts, Bytes::from(reply.body)))
}

fn exchange_name(name: &str) -> &str {
    crate::plugin::host_api::truncate(name)
}

fn client_body_error(e: BodyError, route: &Route) -> ProxyError {
    match e {
        BodyError::TooLarge(_) => ProxyError::BodyTooLarge(route.max_body),
        BodyError::Hyper(e) => ProxyError::ClientBody(e.to_string()),
    }
}

fn capped(body: Incoming, limit: u64) -> Body {
    Body::Capped { inner: body, remaining: limit, limit }
}

fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn set_path(parts: &mut http::request::Parts, path: &str) -> Result<(), ProxyError> {
    let pq = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut up = std::mem::take(&mut parts.uri).into_parts();
    up.path_and_query = Some(pq.parse().map_err(|_| ProxyError::BadPath)?);
    parts.uri = http::Uri::from_parts(up).map_err(|_| ProxyError::BadPath)?;
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
    req.into_parts().0
}
