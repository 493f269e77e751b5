//! The admin listener: liveness, readiness and the Prometheus scrape, on
//! their own socket so that probes and scrapes never queue behind proxied
//! traffic.
//!
//! `GET /health/live`, `GET /health/ready` and `GET /metrics`; other paths
//! are 404 and other methods on these paths 405. With `[admin] token` set,
//! every request — the 404s included, so an unauthenticated client cannot
//! map the listener — needs `authorization: Bearer <token>`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{AdminConfig, Secret};

/// Admin requests are a few hundred bytes; a client slower than this is
/// holding a connection open, not sending a probe. Also closes idle
/// keep-alive connections, since hyper times the wait for the next head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once; more are closed on accept. Probes and
/// scrapers need a handful, and the listener may face a network.
const MAX_CONNECTIONS: usize = 128;

/// Connections served at once from one address: a client that is not a
/// probe (any pod of the cluster, when the listener faces it) cannot take
/// every place and lock the probes out.
const MAX_PER_PEER: usize = 16;

/// How long an admin connection stays open for new requests. Exchanges are
/// tiny, but a client that pipelines requests and reads none of the answers
/// stalls hyper's writes, and no read timer runs then: without this, 128
/// such connections would lock the probes out. At this age the next answer
/// closes the connection (a scrape on a kept connection that came at that
/// moment was cut), and [`DRAIN_TIMEOUT`] later it is dropped. (Shorter
/// under test, to see it.)
#[cfg(not(test))]
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(30);
#[cfg(test)]
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(2);

/// How long shutdown waits for requests already being answered.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Content type of the text `prometheus_client::encoding::text::encode`
/// writes (OpenMetrics 1.0: `# EOF`, `_total`, `# UNIT`).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin listener asks of the running gateway.
pub trait AdminState: Send + Sync {
    /// Whether the gateway should be sent traffic: config loaded, listeners
    /// bound, not draining.
    fn ready(&self) -> bool;
    /// The metrics in the OpenMetrics text format.
    fn metrics(&self) -> String;
    /// Whether the gateway's workers are running (not stalled).
    fn live(&self) -> bool {
        true
    }
}

struct Admin {
    token: Option<Secret>,
    state: Arc<dyn AdminState>,
}

/// Serves the admin endpoints on `listener` until `shutdown` completes, then
/// stops accepting, lets requests in flight finish (up to 5 s) and returns.
/// `config.listen` is not used: the caller has bound `listener` already, so
/// that a bind error surfaces at startup.
pub async fn serve(
    listener: TcpListener,
    config: AdminConfig,
    state: Arc<dyn AdminState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if config.token.as_ref().is_some_and(|t| t.expose().is_empty()) {
        // An empty token would let `Bearer ` through: fail closed.
        tracing::warn!("admin token is empty; every admin request will be refused");
    }
    let admin = Arc::new(Admin { token: config.token, state });
    let (stop, stopping) = watch::channel(());
    let mut connections = JoinSet::new();
    let per_peer = Arc::new(Mutex::new(HashMap::new()));
    tokio::pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, auth = admin.token.is_some(), "admin listener serving");
    }
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            // Reap finished connections so the set tracks live ones only.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let slot = (connections.len() < MAX_CONNECTIONS).then(|| PeerSlot::take(&per_peer, peer.ip())).flatten();
                    match slot {
                        Some(slot) => {
                            let (admin, stopping) = (admin.clone(), stopping.clone());
                            connections.spawn(async move {
                                connection(stream, peer, admin, stopping).await;
                                drop(slot);
                            });
                        }
                        None => tracing::debug!(%peer, "admin connection refused: too many open"),
                    }
                }
                Err(e) => {
                    // Out of descriptors, most likely; retrying at once would spin.
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    drop(stop);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::warn!(open = connections.len(), "admin connections still open after the drain timeout; closing them");
        connections.shutdown().await;
    }
    tracing::info!("admin listener stopped");
}

/// One of [`MAX_PER_PEER`] places of an address, given back when dropped.
struct PeerSlot {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PeerSlot {
    fn take(open: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<Self> {
        let mut map = open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(ip).or_default();
        if *n >= MAX_PER_PEER {
            return None;
        }
        *n += 1;
        Some(Self { open: open.clone(), ip })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// One HTTP/1.1 connection, closed gracefully (after the response in
/// flight, at once when idle) once `stopping` fires. At
/// [`MAX_CONNECTION_AGE`] its next answer says `Connection: close` (a
/// graceful close of a kept connection between exchanges would drop a
/// scrape whose head is on its way); either way it is dropped
/// [`DRAIN_TIMEOUT`] later.
async fn connection(stream: TcpStream, peer: SocketAddr, admin: Arc<Admin>, mut stopping: watch::Receiver<()>) {
    let aged = Arc::new(AtomicBool::new(false));
    let service = service_fn({
        let aged = aged.clone();
        move |req| {
            let mut resp = admin.handle(&req, peer);
            if aged.load(Ordering::Relaxed) {
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            std::future::ready(Ok::<_, Infallible>(resp))
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    // The stop signal is the sender going away.
    let stop = tokio::select! {
        r = conn.as_mut() => return ended(peer, r),
        _ = stopping.changed() => true,
        () = tokio::time::sleep(MAX_CONNECTION_AGE) => false,
    };
    let mut stopped = stop;
    if stopped {
        conn.as_mut().graceful_shutdown();
    } else {
        aged.store(true, Ordering::Relaxed);
    }
    let drained = tokio::time::sleep(DRAIN_TIMEOUT);
    tokio::pin!(drained);
    loop {
        tokio::select! {
            r = conn.as_mut() => return ended(peer, r),
            // Stopping while aged: an idle connection goes at once.
            _ = stopping.changed(), if !stopped => {
                stopped = true;
                conn.as_mut().graceful_shutdown();
            }
            () = &mut drained => return tracing::debug!(%peer, "admin connection closed: open too long"),
        }
    }
}

fn ended(peer: SocketAddr, result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "admin connection ended with an error");
    }
}

impl Admin {
    /// Answers `req`; a refusal (401, 403, 404, 405) closes the connection,
    /// so that a client that is not a probe cannot keep a place asking.
    fn handle(&self, req: &Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let mut resp = self.answer(req, peer);
        if resp.status().is_client_error() {
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    fn answer(&self, req: &Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        if let Some(token) = &self.token
            && !authorized(req, token)
        {
            // Neither the expected nor the presented credential is logged.
            tracing::debug!(%peer, path = req.uri().path(), "admin request refused: bad or missing bearer token");
            let mut resp = json(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#);
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
        // Without a token the listener is on loopback, where a browser's
        // page could still reach it under a name of its own that resolves
        // to 127.0.0.1 (DNS rebinding): it must be asked for by address.
        // A `Host` that is not text names no address: refused, as a name is.
        let host = match (req.uri().host(), req.headers().get(header::HOST)) {
            (Some(host), _) => Some(host),
            (None, Some(h)) => Some(h.to_str().unwrap_or("")),
            (None, None) => None,
        };
        if self.token.is_none() && !by_address(host) {
            tracing::debug!(%peer, "admin request refused: Host is not an address or localhost");
            return json(StatusCode::FORBIDDEN, r#"{"error":"host not allowed"}"#);
        }
        let known = matches!(req.uri().path(), "/health/live" | "/health/ready" | "/metrics");
        if !known {
            return json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#);
        }
        if req.method() != Method::GET {
            let mut resp = json(StatusCode::METHOD_NOT_ALLOWED, r#"{"error":"method not allowed"}"#);
            resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
            return resp;
        }
        match req.uri().path() {
            "/health/live" if self.state.live() => json(StatusCode::OK, r#"{"status":"live"}"#),
            "/health/live" => json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"stalled"}"#),
            "/health/ready" if self.state.ready() => json(StatusCode::OK, r#"{"status":"ready"}"#),
            "/health/ready" => json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"not ready"}"#),
            _ => respond(StatusCode::OK, OPENMETRICS, Bytes::from(self.state.metrics())),
        }
    }
}

/// Whether a request's host names the listener by address
/// (`127.0.0.1:9901`, `[::1]`) or as `localhost`, or is not there (HTTP/1.0).
fn by_address(host: Option<&str>) -> bool {
    let Some(host) = host else { return true };
    // The host without its port (and an IP literal without its brackets),
    // as the proxy reads a `Host`; one that is not `host[:port]` is refused.
    crate::routing::host_name(host)
        .is_some_and(|name| name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok())
}

/// Whether the request carries exactly one `Bearer` credential equal to
/// `token`.
fn authorized(req: &Request<Incoming>, token: &Secret) -> bool {
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else { return false };
    let value = value.as_bytes();
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let Some(presented) = value.get(..7).filter(|s| s.eq_ignore_ascii_case(b"bearer ")).and(value.get(7..)) else {
        return false;
    };
    let presented = presented.trim_ascii_start();
    constant_time_eq(presented, token.expose())
}

/// Compares in time that depends only on the presented length, which the
/// client knows anyway: no early exit at the first wrong byte, and the
/// expected token's length is not revealed either. An empty expected token
/// matches nothing.
fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let mut diff = u8::from(presented.len() != expected.len());
    for (a, b) in presented.iter().zip(expected.iter().cycle()) {
        diff |= a ^ b;
    }
    // Keeps the optimiser from turning the loop back into an early exit.
    std::hint::black_box(diff) == 0
}

fn json(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    respond(status, "application/json", Bytes::from_static(body.as_bytes()))
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Health and metrics are live values; a cache in between would lie.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests;

/// Binds the admin listener and serves it on the control runtime until
/// `shutdown` turns true. Returns the bound address (port 0 picks one).
pub fn start(
    control: &tokio::runtime::Handle,
    config: AdminConfig,
    state: Arc<dyn AdminState>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(SocketAddr, std::sync::mpsc::Receiver<()>), crate::gateway::StartError> {
    let bind_err = |source| crate::gateway::StartError::Bind { addr: config.listen, source };
    let std_listener = std::net::TcpListener::bind(config.listen).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let addr = std_listener.local_addr().map_err(bind_err)?;
    // Dropped when the listener has stopped, its drain done (or the task
    // with the runtime): what the caller waits on.
    let (done, stopped) = std::sync::mpsc::channel();
    control.spawn(async move {
        let _done = done;
        let listener = match TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot use the admin socket: {e}");
                return;
            }
        };
        let stop = async move {
            while !*shutdown.borrow_and_update() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        };
        serve(listener, config, state, stop).await;
    });
    Ok((addr, stopped))
}
