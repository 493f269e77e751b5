//! Upstreams: named groups of endpoints, a keep-alive connection pool per
//! worker, endpoint selection, and the forward itself with its timeouts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::UpstreamConfig;
use crate::proxy::body::{Body, BodyError};
use crate::proxy::error::ProxyError;

/// One address of an upstream.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub authority: Authority,
}

/// A named group of endpoints and the pools that reach them.
#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    pub config: UpstreamConfig,
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    /// One client (connection pool) per worker, so a connection is always
    /// driven by the worker that uses it.
    clients: Box<[Client<HttpConnector, Body>]>,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig, workers: usize) -> Self {
        let endpoints = config
            .endpoints
            .iter()
            .filter_map(|e| e.parse::<Authority>().ok())
            .map(|authority| Endpoint { authority })
            .collect();
        let clients = (0..workers.max(1)).map(|_| client(config)).collect();
        Self {
            name: Arc::from(config.name.as_str()),
            config: config.clone(),
            endpoints,
            next: AtomicUsize::new(0),
            clients,
        }
    }

    /// Round-robin over the endpoints.
    fn pick(&self) -> Option<&Endpoint> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        self.endpoints.get(i)
    }

    fn client(&self) -> &Client<HttpConnector, Body> {
        &self.clients[crate::worker::index() % self.clients.len()]
    }

    /// Sends `req` (whose URI carries only path and query) to an endpoint and
    /// waits for the response head, at most `timeout`.
    pub async fn forward(&self, mut req: Request<Body>, timeout: Duration) -> Result<Response<Incoming>, ProxyError> {
        let Some(endpoint) = self.pick() else {
            return Err(ProxyError::UpstreamConnect { upstream: self.name.clone(), detail: "no endpoints".into() });
        };
        let pq = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(endpoint.authority.clone());
        parts.path_and_query = Some(pq);
        *req.uri_mut() = Uri::from_parts(parts).map_err(|e| ProxyError::UpstreamProtocol {
            upstream: self.name.clone(),
            detail: format!("cannot build the upstream URI: {e}"),
        })?;
        *req.version_mut() = http::Version::HTTP_11;
        let timeout = self.config.request_timeout.map_or(timeout, |t| t.min(timeout));
        match tokio::time::timeout(timeout, self.client().request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(self.classify(&e)),
            Err(_) => Err(ProxyError::UpstreamTimeout { upstream: self.name.clone(), timeout_ms: timeout.as_millis() }),
        }
    }

    fn classify(&self, e: &hyper_util::client::legacy::Error) -> ProxyError {
        // A request body that went over the limit fails the send; that is the
        // client's fault, not the upstream's.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = source {
            if let Some(BodyError::TooLarge(t)) = s.downcast_ref::<BodyError>() {
                return ProxyError::BodyTooLarge(t.limit);
            }
            source = s.source();
        }
        let detail = error_chain(e);
        if e.is_connect() {
            ProxyError::UpstreamConnect { upstream: self.name.clone(), detail }
        } else {
            ProxyError::UpstreamProtocol { upstream: self.name.clone(), detail }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn client(config: &UpstreamConfig) -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.connect_timeout));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(config.idle_timeout)
        .pool_max_idle_per_host(config.max_idle_per_endpoint)
        .build(connector)
}
