//! The `http` capability: requests from a plugin to the upstreams and origins
//! it was granted, through the same upstream machinery as proxied traffic
//! (pools, timeouts, breakers, balancing). The target comes only from the
//! URL, which must name a grant; the plugin's own `Host` header is dropped, so
//! no header can steer a request somewhere it was not granted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request};
use wasmtime::StoreContextMut;
use wasmtime::component::Linker;

use super::super::host_api::{self, HostState, wasmgate::plugin::http as wit};
use super::Caps;
use crate::config::{HttpGrant, RetryPolicy};
use crate::proxy::body::Body;
use crate::proxy::error::ProxyError;
use crate::upstream::{ForwardOptions, Upstream};

const INTERFACE: &str = "wasmgate:plugin/http@0.1.6";

use wasmgate_common::edit::{MAX_EDITED_HEADERS, MAX_HEADER_VALUE, MAX_SEND_ALL};

/// What a plugin may call, resolved to upstreams.
#[derive(Debug)]
pub struct HttpCaps {
    pub targets: HashMap<HttpGrant, Arc<Upstream>>,
    pub timeout: Duration,
    pub max_response: u64,
}

pub fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut i = linker.instance(INTERFACE)?;
    i.func_wrap_async("send", |mut s: StoreContextMut<'_, HostState>, (req,): (wit::OutgoingRequest,)| {
        Box::new(async move {
            let since = Instant::now();
            let caps = s.data().caps.clone();
            let left = host_api::may_wait(s.data());
            let r = send(&caps, req, &budget(&caps), left).await;
            host_api::waited(&mut s, since);
            Ok((r,))
        })
    })?;
    i.func_wrap_async(
        "send-all",
        |mut s: StoreContextMut<'_, HostState>, (mut reqs,): (Vec<wit::OutgoingRequest>,)| {
            Box::new(async move {
                let since = Instant::now();
                let caps = s.data().caps.clone();
                let left = host_api::may_wait(s.data());
                let over = reqs.split_off(reqs.len().min(MAX_SEND_ALL));
                // The answers share one budget: the plugin takes them into
                // its memory together.
                let budget = budget(&caps);
                let mut results =
                    futures::future::join_all(reqs.into_iter().map(|r| send(&caps, r, &budget, left))).await;
                results.extend(over.iter().map(|_| {
                    Err(wit::HttpError::InvalidRequest(format!("more than {MAX_SEND_ALL} requests in one send-all")))
                }));
                host_api::waited(&mut s, since);
                Ok((results,))
            })
        },
    )?;
    Ok(())
}

/// Links the interface for a plugin granted no `http`: every request is
/// refused at once, synchronously, so the plugin stays a synchronous one. A
/// plugin that calls out only in some configurations (jwt with a `jwks_url`)
/// loads without the grant it does not need.
pub fn link_ungranted(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut i = linker.instance(INTERFACE)?;
    i.func_wrap("send", |s: StoreContextMut<'_, HostState>, (_req,): (wit::OutgoingRequest,)| {
        Ok((Err::<wit::IncomingResponse, _>(not_granted(&s.data().caps)),))
    })?;
    i.func_wrap("send-all", |s: StoreContextMut<'_, HostState>, (reqs,): (Vec<wit::OutgoingRequest>,)| {
        let caps = &s.data().caps;
        Ok((reqs.iter().map(|_| Err::<wit::IncomingResponse, _>(not_granted(caps))).collect::<Vec<_>>(),))
    })?;
    Ok(())
}

fn not_granted(caps: &Caps) -> wit::HttpError {
    wit::HttpError::NotGranted(format!(
        "plugin `{}` has no http grant; add to [plugin.{}]: grants = {{ http = [...] }}",
        caps.plugin, caps.plugin
    ))
}

/// The grant a URL falls under, and its path and query.
fn target(url: &str) -> Result<(HttpGrant, String), wit::HttpError> {
    let invalid = |why: &str| wit::HttpError::InvalidRequest(format!("`{url}`: {why}"));
    if let Some(rest) = url.strip_prefix("upstream://") {
        // The name ends at the path or, with none, at the query.
        let (name, pq) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let pq = if pq.starts_with('/') { pq.to_owned() } else { format!("/{pq}") };
        if name.is_empty() {
            return Err(invalid("no upstream name"));
        }
        return Ok((HttpGrant::Upstream(name.to_owned()), pq));
    }
    let uri: http::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(invalid("use upstream://NAME/path, https:// or http://")),
    };
    let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
    if authority.as_str().contains('@') {
        return Err(invalid("credentials in the URL are not allowed"));
    }
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let pq = uri.path_and_query().map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    Ok((HttpGrant::Origin { https, host: authority.host().to_ascii_lowercase(), port }, pq))
}

/// The bytes of response bodies one `send` or `send-all` may bring:
/// `http_max_response`, for one response or for all of a batch's together.
fn budget(caps: &Caps) -> AtomicU64 {
    AtomicU64::new(caps.http.as_ref().map_or(0, |h| h.max_response))
}

/// Reads a response body into memory, taking its bytes from `budget`; past
/// it, the response is [`wit::HttpError::TooLarge`]. A response that fails
/// (or is dropped, at its timeout) gives back what it took.
async fn collect_within(mut body: Body, budget: &AtomicU64) -> Result<Vec<u8>, wit::HttpError> {
    use http_body_util::BodyExt;
    let mut taken = Taken { budget, bytes: 0 };
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| wit::HttpError::Protocol(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            let n = data.len() as u64;
            if budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(n)).is_err() {
                return Err(wit::HttpError::TooLarge);
            }
            taken.bytes += n;
            buf.extend_from_slice(&data);
        }
    }
    taken.bytes = 0;
    Ok(buf)
}

/// Bytes a response took from its budget, given back unless it is kept.
struct Taken<'b> {
    budget: &'b AtomicU64,
    bytes: u64,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.budget.fetch_add(self.bytes, Ordering::AcqRel);
    }
}

/// Sends `req` and reads its answer, within its timeout (the grant's
/// `http_timeout`, or shorter as the plugin asks) and `left` (what the
/// plugin may still wait, when known).
async fn send(
    caps: &Caps,
    req: wit::OutgoingRequest,
    budget: &AtomicU64,
    left: Option<Duration>,
) -> Result<wit::IncomingResponse, wit::HttpError> {
    let Some(http) = &caps.http else { return Err(not_granted(caps)) };
    let (grant, pq) = target(&req.url)?;
    let Some(upstream) = http.targets.get(&grant) else {
        return Err(wit::HttpError::NotGranted(format!("`{}` is not granted to plugin `{}`", req.url, caps.plugin)));
    };
    let method = Method::from_bytes(req.method.as_bytes())
        .map_err(|_| wit::HttpError::InvalidRequest(format!("`{}` is not a method", req.method)))?;
    let mut request = Request::new(Body::full(req.body));
    *request.method_mut() = method;
    *request.uri_mut() = pq.parse().map_err(|_| wit::HttpError::InvalidRequest(format!("bad path `{pq}`")))?;
    // Copied out of the plugin's memory within its `max_memory` (the
    // store's hostcall fuel), whatever its lists' entries share.
    if req.headers.len() > MAX_EDITED_HEADERS {
        let n = req.headers.len();
        return Err(wit::HttpError::InvalidRequest(format!("{n} headers, more than {MAX_EDITED_HEADERS}")));
    }
    let h = request.headers_mut();
    for (name, value) in req.headers {
        if value.len() > MAX_HEADER_VALUE {
            let n = value.len();
            return Err(wit::HttpError::InvalidRequest(format!(
                "header `{name}` is {n} bytes, more than {MAX_HEADER_VALUE}"
            )));
        }
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(&value)) else {
            return Err(wit::HttpError::InvalidRequest(format!("invalid header `{name}`")));
        };
        // The gateway decides where this goes and how it is framed.
        if name == header::HOST || crate::exchange::MANAGED_HEADERS.contains(&name) {
            continue;
        }
        h.append(name, value);
    }
    // An origin's host, or the upstream's name (as the proxy sends for a
    // request that named no host, and nginx for its `proxy_pass` group's):
    // an HTTP/1.1 request without `Host` is a 400 to most servers.
    let host = match &grant {
        HttpGrant::Origin { https, host, port } => {
            let default = if *https { 443 } else { 80 };
            if *port == default { host.clone() } else { format!("{host}:{port}") }
        }
        HttpGrant::Upstream(name) => name.clone(),
    };
    if let Ok(v) = HeaderValue::from_str(&host) {
        h.insert(header::HOST, v);
    }
    let timeout = req.timeout_ms.map_or(http.timeout, |ms| Duration::from_millis(u64::from(ms)).min(http.timeout));
    // A wait past what the plugin may still wait would end with the plugin
    // stopped at its deadline right after, the answer thrown away: it gets
    // a timeout it can act on instead. Cut by dropping the exchange (below),
    // not by its own deadline: that would be held against the upstream (its
    // breaker, outlier detection), which is shared with other routes.
    let cut = left.map_or(timeout, |left| timeout.min(left));
    let route = format!("plugin:{}", caps.plugin);
    let retry = RetryPolicy::default();
    let opts = ForwardOptions {
        route: &route,
        timeout,
        try_timeout: None,
        retry: &retry,
        hash: None,
        forwarding: None,
        started: None,
    };
    let exchange = async {
        let fwd = upstream.forward(Box::new(request), &opts).await.map_err(from_proxy)?;
        let (parts, body) = fwd.response.into_parts();
        let body = collect_within(body, budget).await?;
        let headers = parts
            .headers
            .iter()
            .filter(|(n, _)| !crate::exchange::MANAGED_HEADERS.contains(n))
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        Ok(wit::IncomingResponse { status: parts.status.as_u16(), headers, body })
    };
    tokio::time::timeout(cut, exchange).await.unwrap_or(Err(wit::HttpError::Timeout))
}

fn from_proxy(e: ProxyError) -> wit::HttpError {
    match e {
        ProxyError::UpstreamConnect { detail, .. } => wit::HttpError::Connect(detail),
        ProxyError::UpstreamTimeout { .. } => wit::HttpError::Timeout,
        ProxyError::NoHealthyEndpoint { .. } | ProxyError::BreakerOpen { .. } | ProxyError::Overloaded { .. } => {
            wit::HttpError::Unavailable(e.to_string())
        }
        other => wit::HttpError::Protocol(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_that_fails_gives_its_share_of_the_budget_back() {
        let budget = AtomicU64::new(1000);
        {
            let taken = Taken { budget: &budget, bytes: 600 };
            budget.fetch_sub(600, Ordering::AcqRel);
            assert_eq!(budget.load(Ordering::Acquire), 400);
            drop(taken);
        }
        assert_eq!(budget.load(Ordering::Acquire), 1000, "given back");
        {
            let mut kept = Taken { budget: &budget, bytes: 600 };
            budget.fetch_sub(600, Ordering::AcqRel);
            kept.bytes = 0;
        }
        assert_eq!(budget.load(Ordering::Acquire), 400, "kept");
    }

    #[test]
    fn urls_map_to_grants() {
        let (g, pq) = target("upstream://users/users/7?x=1").unwrap();
        assert_eq!((g, pq.as_str()), (HttpGrant::Upstream("users".into()), "/users/7?x=1"));
        let (g, pq) = target("https://IdP.example.com/.well-known/jwks.json").unwrap();
        assert_eq!(g, HttpGrant::Origin { https: true, host: "idp.example.com".into(), port: 443 });
        assert_eq!(pq, "/.well-known/jwks.json");
        let (g, _) = target("http://127.0.0.1:8080").unwrap();
        assert_eq!(g, HttpGrant::Origin { https: false, host: "127.0.0.1".into(), port: 8080 });
        assert!(target("ftp://x/").is_err());
        assert!(target("https://user:pw@idp.example.com/").is_err());
        assert!(target("upstream:///x").is_err());
        // A query right after the name (it was read as part of the name).
        let (g, pq) = target("upstream://users?id=7").unwrap();
        assert_eq!((g, pq.as_str()), (HttpGrant::Upstream("users".into()), "/?id=7"));
        let (g, pq) = target("upstream://users").unwrap();
        assert_eq!((g, pq.as_str()), (HttpGrant::Upstream("users".into()), "/"));
    }
}
