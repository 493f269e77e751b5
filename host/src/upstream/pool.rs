//! Connections to upstream endpoints, pooled per worker.
//!
//! Not a ready-made client, so that (1) connecting is a step of its own — a
//! connect failure leaves the request untouched, so it can go to another
//! endpoint — (2) every connection is used only by the worker that opened it,
//! and (3) the gateway sees each connection's life for its metrics.
//!
//! HTTP/1.1 connections ([`h1`](super::h1), driven by the request using
//! them) are lent out one request at a time and go back to the worker's
//! idle stack when the response body has been read to the end. HTTP/2
//! connections (hyper's) are shared by the worker's requests to that
//! endpoint, up to `max_streams` each: past that the worker opens another.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use foldhash::fast::RandomState;
use http::{Request, Response};
use http_body::Frame;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Replay;
use super::h1::{Connection, Io, Unanswered};
use crate::config::Protocol;
use crate::proxy::body::{Body, BodyError};
use crate::proxy::headers::{self, Forwarding};

/// How to open a connection to this upstream's endpoints.
#[derive(Clone)]
pub struct ConnectSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long a response body may stall ([`Connection`]).
    pub read_timeout: Duration,
    pub max_idle: usize,
    pub protocol: Protocol,
    /// The requests in flight on one HTTP/2 connection before another is
    /// opened.
    pub max_streams: usize,
    pub tls: Option<TlsSettings>,
    /// Called with +1 when a connection opens and -1 when it closes.
    pub on_connection: Arc<dyn Fn(i64) + Send + Sync>,
}

impl std::fmt::Debug for ConnectSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectSettings")
            .field("connect_timeout", &self.connect_timeout)
            .field("protocol", &self.protocol)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

#[derive(Clone)]
pub struct TlsSettings {
    pub connector: tokio_rustls::TlsConnector,
    /// Overrides the endpoint's host as the name to verify.
    pub server_name: Option<rustls::pki_types::ServerName<'static>>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings").field("server_name", &self.server_name).finish()
    }
}

/// Why no connection could be had. The request was not sent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(Arc<str>, String),
    #[error("connecting to {0} timed out")]
    Timeout(Arc<str>),
    #[error("connecting to {0}: {1}")]
    Io(Arc<str>, std::io::Error),
    #[error("TLS handshake with {0}: {1}")]
    Tls(Arc<str>, String),
    #[error("HTTP handshake with {0}: {1}")]
    Handshake(Arc<str>, hyper::Error),
    /// The deadline the connection was wanted by passed first.
    #[error("no connection to {0} before the deadline")]
    Deadline(Arc<str>),
    /// The HTTP/2 connection this request waited for with others failed.
    #[error("{0}")]
    Joined(Arc<ConnectError>),
}

/// A connection being made, by `deadline`. Boxed: only new connections wait
/// on it, and inline, the TCP/TLS connect would enlarge every request's
/// future.
fn by<'a, T>(
    deadline: Instant,
    address: &'a Arc<str>,
    connect: impl Future<Output = Result<T, ConnectError>> + Send + 'a,
) -> impl Future<Output = Result<T, ConnectError>> + Send + 'a {
    let connect = Box::pin(tokio::time::timeout_at(deadline, connect));
    async move { connect.await.map_err(|_| ConnectError::Deadline(address.clone()))? }
}

/// Why a send failed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A send that failed.
#[derive(Debug)]
pub enum SendError {
    /// Nothing the upstream could act on went out (the connection was
    /// closed, or the head did not go out whole): the request comes back
    /// and may be sent elsewhere.
    NotSent(Box<Request<Body>>, BoxError),
    /// The request was (at least partly) sent.
    Failed(BoxError),
    /// The deadline passed before the response head came.
    TimedOut,
    /// A kept connection closed before any answer to an idempotent
    /// request: the upstream never saw it, and it may be sent again as it
    /// was written ([`Conn::resend`]).
    Unanswered(Unanswered),
    /// An HTTP/2 upstream did not process the request ([`TurnedAway`]).
    /// Boxed: it would widen every send's result.
    Unprocessed(Box<TurnedAway>),
}

/// A request an HTTP/2 upstream turned away unprocessed (refused its
/// stream, or went away gracefully before it), or that did not go out (its
/// connection closing): it may go again, whatever its method.
#[derive(Debug)]
pub struct TurnedAway {
    /// The request (built again when it went out).
    pub again: Box<Request<Body>>,
    /// The connection that is done with, if it is (`GOAWAY`, closing); a
    /// refused stream's connection stays good.
    pub done: Option<u64>,
    pub error: BoxError,
}

/// How an HTTP/2 upstream said it did not process a stream (RFC 9113
/// §8.7): it reset it with `REFUSED_STREAM` (`Some(false)`: the connection
/// stays good), or went away gracefully (`GOAWAY` with `NO_ERROR`) before
/// it (`Some(true)`). h2 fails with a `GOAWAY` only the streams past the
/// last one the upstream says it processes; one with an error code is not
/// taken as such (its upstream may be in no state to be asked again at
/// once).
fn turned_away(e: &hyper::Error) -> Option<bool> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            if !h2.is_remote() {
                return None;
            }
            return match h2.reason() {
                Some(h2::Reason::REFUSED_STREAM) if h2.is_reset() => Some(false),
                Some(h2::Reason::NO_ERROR) if h2.is_go_away() => Some(true),
                _ => None,
            };
        }
        source = s.source();
    }
    None
}

struct Idle {
    conn: Box<Connection>,
    since: Instant,
    /// Its address, the key it goes back under after its next response:
    /// kept with it, not copied for each request.
    key: Arc<str>,
}

impl Idle {
    /// Whether it may still be lent at `now`: idle no longer than `timeout`,
    /// and neither closed by the upstream nor holding bytes nobody asked for.
    fn fresh(&mut self, now: Instant, timeout: Duration) -> bool {
        now.duration_since(self.since) <= timeout && self.conn.usable()
    }
}

/// One worker's connections to one upstream, by endpoint address. The
/// addresses come from the config or DNS, never from a client, so they are
/// hashed with foldhash: SipHash's resistance to chosen keys would cost two
/// hashes of ~240 instructions on every request for nothing.
#[derive(Default)]
pub struct Shard {
    http1: Mutex<HashMap<Arc<str>, Vec<Idle>, RandomState>>,
    /// Oldest first: a request takes the first with room, so the newer ones
    /// empty and idle out when the load falls.
    http2: Mutex<HashMap<Arc<str>, Vec<Http2Conn>, RandomState>>,
}

/// One of a worker's HTTP/2 connections to an address.
struct Http2Conn {
    id: u64,
    state: Http2State,
    /// When a request last took it (the idle timeout counts from there; its
    /// streams may still be running).
    used: Instant,
    /// Its requests in flight, waiting for the handshake included: taken
    /// until `max_streams`, then the next request opens a connection of its
    /// own. An upstream's `SETTINGS_MAX_CONCURRENT_STREAMS` is not known to
    /// hyper's client: without this every request of the worker went on one
    /// connection, and those past the upstream's limit (100 is common)
    /// waited in h2's queue for a stream to end, however many cores the
    /// upstream had to answer them with.
    streams: Arc<AtomicUsize>,
}

/// An HTTP/2 connection ready, or being made: the requests that take it
/// meanwhile wait for that one handshake together.
enum Http2State {
    Ready(http2::SendRequest<Sent>),
    Connecting(Handshake),
}

impl Http2Conn {
    /// Whether a request may take it at `now`. A handshake that failed is
    /// taken out by its task; one whose task ended without (cancelled at
    /// shutdown) is not taken either.
    fn open(&self, now: Instant, idle_timeout: Duration) -> bool {
        match &self.state {
            Http2State::Ready(sender) => !sender.is_closed() && now.duration_since(self.used) <= idle_timeout,
            Http2State::Connecting(made) => made.peek().is_none_or(Result::is_ok),
        }
    }
}

/// A request's stream on an HTTP/2 connection, counted from its checkout
/// until its response body is done or dropped.
#[derive(Debug)]
pub struct Http2Stream(Arc<AtomicUsize>);

impl Http2Stream {
    fn on(streams: &Arc<AtomicUsize>) -> Self {
        streams.fetch_add(1, Ordering::Relaxed);
        Self(streams.clone())
    }
}

impl Drop for Http2Stream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An HTTP/2 connection being made, awaited by every request that wants it.
type Handshake =
    futures::future::Shared<Pin<Box<dyn Future<Output = Result<http2::SendRequest<Sent>, Arc<ConnectError>>> + Send>>>;

/// What an HTTP/2 checkout found: a connection, or a handshake to wait for.
enum Http2Taken {
    Ready(Conn),
    Connecting(Handshake, u64, Http2Stream),
}

/// All workers' connections to one upstream.
pub struct Pools {
    shards: Box<[Arc<Shard>]>,
    settings: ConnectSettings,
    /// Names each HTTP/2 connection made ([`Http2Conn`]).
    ids: AtomicU64,
    /// The addresses of endpoints that left ([`Pools::forget`]): no
    /// connection to them is kept.
    gone: Arc<Mutex<HashSet<Arc<str>, RandomState>>>,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools").field("shards", &self.shards.len()).field("settings", &self.settings).finish()
    }
}

/// A connection ready for one request.
#[derive(Debug)]
pub enum Conn {
    Http1 { conn: Box<Connection>, home: Return, reused: bool },
    Http2 { sender: http2::SendRequest<Sent>, id: u64, reused: bool, read_timeout: Duration, stream: Http2Stream },
}

impl Pools {
    pub fn new(workers: usize, settings: ConnectSettings) -> Self {
        let shards = (0..workers.max(1)).map(|_| Arc::new(Shard::default())).collect();
        Self { shards, settings, ids: AtomicU64::new(0), gone: Arc::default() }
    }

    /// Drops every worker's idle connections to `address` (an endpoint
    /// gone), and keeps none made from now on; those in use finish their
    /// request, and are then dropped (an HTTP/1 connection goes back only
    /// to an address its pool keeps, which a new connection adds unless the
    /// address is gone).
    pub fn forget(&self, address: &Arc<str>) {
        self.gone.lock().unwrap_or_else(PoisonError::into_inner).insert(address.clone());
        for shard in &self.shards {
            let idle = shard.http1.lock().unwrap_or_else(PoisonError::into_inner).remove(&**address);
            let shared = shard.http2.lock().unwrap_or_else(PoisonError::into_inner).remove(&**address);
            // Closed with no lock held.
            drop((idle, shared));
        }
    }

    /// An endpoint at `address` is (back) in the set: its connections are
    /// kept again.
    pub fn remember(&self, address: &str) {
        let mut gone = self.gone.lock().unwrap_or_else(PoisonError::into_inner);
        if !gone.is_empty() {
            gone.remove(address);
        }
    }

    /// Closes the idle HTTP/1 connections past `idle_timeout` at `now`, and
    /// those the upstream closed while idle: without it they were dropped
    /// only when next looked at, so an endpoint's burst left its sockets
    /// (many in `CLOSE_WAIT`, the upstream having timed them out) open until
    /// its next request on that worker ([`tidy`] calls it). An HTTP/2
    /// connection no request has taken for `idle_timeout` is let go of
    /// (hyper closes it when its streams still running are done; its pings
    /// kept it open for ever), and one that closed is forgotten, whatever
    /// its streams.
    pub fn sweep(&self, now: Instant) {
        let timeout = self.settings.idle_timeout;
        for shard in &self.shards {
            let mut closed = Vec::new();
            let mut idle = shard.http1.lock().unwrap_or_else(PoisonError::into_inner);
            for list in idle.values_mut() {
                closed.extend(list.extract_if(.., |i| !i.fresh(now, timeout)));
            }
            drop(idle);
            let mut conns = shard.http2.lock().unwrap_or_else(PoisonError::into_inner);
            let mut idle = Vec::new();
            for list in conns.values_mut() {
                idle.extend(list.extract_if(.., |c| !c.open(now, timeout)));
            }
            conns.retain(|_, list| !list.is_empty());
            drop(conns);
            // Closed with no lock held.
            drop((closed, idle));
        }
    }

    /// Whether connections speak HTTP/2 (requests then need an absolute URI).
    pub fn http2(&self) -> bool {
        self.settings.protocol == Protocol::Http2
    }

    /// Whether connections use TLS.
    pub fn tls(&self) -> bool {
        self.settings.tls.is_some()
    }

    /// The authority a request of the gateway's own (a health check) names
    /// for `address`: the TLS server name with the endpoint's port, when
    /// connections verify one (a virtual-hosted upstream serves that name,
    /// not its address), else the address.
    pub fn authority_for(&self, address: &str) -> String {
        let name = self.settings.tls.as_ref().and_then(|t| match &t.server_name {
            Some(rustls::pki_types::ServerName::DnsName(name)) => Some(name.as_ref().to_owned()),
            _ => None,
        });
        match (name, address.rsplit_once(':')) {
            (Some(name), Some((_, port))) => format!("{name}:{port}"),
            (Some(name), None) => name,
            (None, _) => address.to_owned(),
        }
    }

    fn shard(&self) -> &Arc<Shard> {
        &self.shards[crate::worker::index() % self.shards.len()]
    }

    /// A connection to `address` (`host:port`) at `now`: an idle one of this
    /// worker's, or a new one made by `deadline`.
    pub async fn checkout(&self, address: &Arc<str>, now: Instant, deadline: Instant) -> Result<Conn, ConnectError> {
        let shard = self.shard();
        match self.settings.protocol {
            Protocol::Http1 => {
                if let Some((conn, key)) = take_idle(shard, address, now, self.settings.idle_timeout) {
                    let home = Return { shard: shard.clone(), key, max_idle: self.settings.max_idle };
                    return Ok(Conn::Http1 { conn, home, reused: true });
                }
                self.new_http1(address, deadline).await
            }
            Protocol::Http2 => self.stream(address, now, deadline, None).await,
        }
    }

    /// A send that `address` never saw, sent once more on a new connection
    /// (not a retry: no try, budget or failure is counted); other outcomes
    /// as they are. An HTTP/1 connection the upstream closed as the request
    /// went out (its idle timeout racing it, [`SendError::Unanswered`]): on
    /// a new connection. An HTTP/2 stream turned away unprocessed
    /// ([`SendError::Unprocessed`]): when the upstream went away, on another
    /// of the worker's connections (that one let go of); when it only
    /// refused the stream, on the oldest with room (the same one unless it
    /// is full); if that fails too, it is handed back as a connect failure is
    /// ([`SendError::NotSent`]), for another endpoint. Proxied requests and
    /// health checks alike.
    pub async fn again_if_unseen(
        &self,
        address: &Arc<str>,
        forwarding: Option<&Forwarding<'_>>,
        deadline: Instant,
        sent: Result<(Box<Response<Body>>, Instant), SendError>,
    ) -> Result<(Box<Response<Body>>, Instant), SendError> {
        match sent {
            Err(SendError::Unanswered(again)) => match Box::pin(self.new_http1(address, deadline)).await {
                Ok(conn) => Box::pin(conn.resend(again, deadline)).await,
                Err(ConnectError::Deadline(_)) => Err(SendError::TimedOut),
                // Known not to have gone out: for another endpoint, as a
                // connect failure's.
                Err(e) => match again.unsent() {
                    Some(req) => Err(SendError::NotSent(req, e.into())),
                    None => Err(SendError::Failed(e.into())),
                },
            },
            Err(SendError::Unprocessed(turned)) => {
                let TurnedAway { again, done, error } = *turned;
                match Box::pin(self.stream(address, Instant::now(), deadline, done)).await {
                    Ok(conn) => match Box::pin(conn.send(again, forwarding, deadline)).await {
                        Err(SendError::Unprocessed(turned)) => Err(SendError::NotSent(turned.again, turned.error)),
                        sent => sent,
                    },
                    Err(ConnectError::Deadline(_)) => Err(SendError::TimedOut),
                    Err(e) => Err(SendError::NotSent(again, format!("{error}; then {e}").into())),
                }
            }
            sent => sent,
        }
    }

    /// A stream on one of the worker's HTTP/2 connections to `address`, by
    /// `deadline`: the oldest with room for it (open, and not `stale`: the
    /// upstream went away from that one), else one being made, else a new
    /// one.
    pub async fn stream(
        &self,
        address: &Arc<str>,
        now: Instant,
        deadline: Instant,
        stale: Option<u64>,
    ) -> Result<Conn, ConnectError> {
        match self.take_http2(address, now, stale) {
            Http2Taken::Ready(conn) => Ok(conn),
            Http2Taken::Connecting(made, id, stream) => {
                let sender = by(deadline, address, async { made.await.map_err(ConnectError::Joined) }).await?;
                let read_timeout = self.settings.read_timeout;
                Ok(Conn::Http2 { sender, id, reused: false, read_timeout, stream })
            }
        }
    }

    /// [`Pools::stream`]'s choice, made under the shard's lock.
    fn take_http2(&self, address: &Arc<str>, now: Instant, stale: Option<u64>) -> Http2Taken {
        let (shard, max) = (self.shard(), self.settings.max_streams);
        let mut conns = shard.http2.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = conns.get_mut(&**address) {
            // Those done with are let go of here too (with the lock held: a
            // sender's drop only tells its connection task).
            list.retain(|c| Some(c.id) != stale && c.open(now, self.settings.idle_timeout));
            if let Some(conn) = list.iter_mut().find(|c| c.streams.load(Ordering::Relaxed) < max) {
                let stream = Http2Stream::on(&conn.streams);
                return match &conn.state {
                    Http2State::Ready(sender) => {
                        conn.used = now;
                        let (sender, id, read_timeout) = (sender.clone(), conn.id, self.settings.read_timeout);
                        Http2Taken::Ready(Conn::Http2 { sender, id, reused: true, read_timeout, stream })
                    }
                    Http2State::Connecting(made) => Http2Taken::Connecting(made.clone(), conn.id, stream),
                };
            }
        }
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let made = self.handshake(address, shard, id);
        let streams = Arc::new(AtomicUsize::new(0));
        let stream = Http2Stream::on(&streams);
        let conn = Http2Conn { id, state: Http2State::Connecting(made.clone()), used: now, streams };
        conns.entry(address.clone()).or_default().push(conn);
        Http2Taken::Connecting(made, id, stream)
    }

    /// Makes HTTP/2 connection `id` to `address` in a task of its own, which
    /// leaves it in `home`'s list, ready (or takes it out on a failure): it
    /// goes on when the requests waiting for it stop waiting.
    fn handshake(&self, address: &Arc<str>, home: &Arc<Shard>, id: u64) -> Handshake {
        let (settings, to, home, gone) = (self.settings.clone(), address.clone(), home.clone(), self.gone.clone());
        let task = tokio::spawn(async move {
            let made = async {
                let io = settings.connect(&to).await?;
                settings.handshake_http2(&to, io).await
            }
            .await
            .map_err(Arc::new);
            let mut conns = home.http2.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(list) = conns.get_mut(&to)
                && let Some(at) = list.iter().position(|c| c.id == id)
            {
                match &made {
                    Ok(sender) if !gone.lock().unwrap_or_else(PoisonError::into_inner).contains(&to) => {
                        list[at].state = Http2State::Ready(sender.clone());
                    }
                    _ => drop(list.remove(at)),
                }
            }
            made
        });
        let to = address.clone();
        let handshake: Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(async move {
            task.await.unwrap_or_else(|e| Err(Arc::new(ConnectError::Io(to, std::io::Error::other(e)))))
        });
        futures::FutureExt::shared(handshake)
    }

    /// A new HTTP/1 connection to `address`, made by `deadline`.
    pub async fn new_http1(&self, address: &Arc<str>, deadline: Instant) -> Result<Conn, ConnectError> {
        let io = by(deadline, address, self.settings.connect(address)).await?;
        // Where it goes back ([`Return::give_back`]), unless its endpoint
        // left (checked under the shard's lock: `forget` marks it, then
        // empties the shards).
        {
            let mut idle = self.shard().http1.lock().unwrap_or_else(PoisonError::into_inner);
            if !self.gone.lock().unwrap_or_else(PoisonError::into_inner).contains(&**address) {
                idle.entry(address.clone()).or_default();
            }
        }
        let max_idle = self.settings.max_idle;
        Ok(Conn::Http1 {
            conn: Connection::new(io, self.settings.on_connection.clone(), self.settings.read_timeout),
            home: Return { shard: self.shard().clone(), key: address.clone(), max_idle },
            reused: false,
        })
    }
}

impl ConnectSettings {
    async fn connect(&self, address: &Arc<str>) -> Result<Box<dyn Io>, ConnectError> {
        let timeout = self.connect_timeout;
        let connect = async {
            let addrs: Vec<SocketAddr> = match address.parse::<SocketAddr>() {
                Ok(a) => vec![a],
                Err(_) => tokio::net::lookup_host(&**address)
                    .await
                    .map_err(|e| ConnectError::Resolve(address.clone(), e.to_string()))?
                    .collect(),
            };
            let mut last = None;
            for a in addrs {
                match TcpStream::connect(a).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(s);
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(match last {
                Some(e) => ConnectError::Io(address.clone(), e),
                None => ConnectError::Resolve(address.clone(), "no addresses".into()),
            })
        };
        let tcp =
            tokio::time::timeout(timeout, connect).await.map_err(|_| ConnectError::Timeout(address.clone()))??;
        let Some(tls) = &self.tls else { return Ok(Box::new(tcp)) };
        let name = match &tls.server_name {
            Some(n) => n.clone(),
            None => {
                let host = address.rsplit_once(':').map_or(&**address, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                rustls::pki_types::ServerName::try_from(host.to_owned())
                    .map_err(|e| ConnectError::Tls(address.clone(), format!("`{host}` is not a server name: {e}")))?
            }
        };
        let stream = tokio::time::timeout(timeout, tls.connector.connect(name, tcp))
            .await
            .map_err(|_| ConnectError::Timeout(address.clone()))?
            .map_err(|e| ConnectError::Tls(address.clone(), e.to_string()))?;
        Ok(Box::new(stream))
    }

    async fn handshake_http2(
        &self,
        address: &Arc<str>,
        io: Box<dyn Io>,
    ) -> Result<http2::SendRequest<Sent>, ConnectError> {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| ConnectError::Handshake(address.clone(), e))?;
        let on_connection = self.on_connection.clone();
        on_connection(1);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream HTTP/2 connection ended: {e}");
            }
            on_connection(-1);
        });
        Ok(sender)
    }
}

/// A request body on its way to an HTTP/2 upstream. hyper's client answers
/// a body that fails by resetting the stream, and the failure reaches the
/// sender only as the reset; a client's stream keeps its failure here, so
/// that a body over its limit or stalled is the client's 413 or 408, not a
/// 502 counted against the upstream. So is a request whose time runs out
/// while its body is awaited from the client.
#[derive(Debug)]
pub struct Sent {
    body: Body,
    client: Option<Arc<ClientBody>>,
}

/// How a client's body being sent on is doing.
#[derive(Debug, Default)]
struct ClientBody {
    /// Its error, once it failed.
    failure: Mutex<Option<BodyError>>,
    /// Whether it was last polled to no frame: awaited from the client (a
    /// stream waiting for the upstream's flow-control window is not
    /// polled).
    awaited: AtomicBool,
}

impl Sent {
    /// The request with its body wrapped, and how the body is doing (for a
    /// client's stream; other bodies cannot fail nor keep anyone waiting).
    fn new(req: Request<Body>) -> (Request<Self>, Option<Arc<ClientBody>>) {
        let client = matches!(req.body(), Body::Capped { .. }).then(Arc::default);
        let kept = client.clone();
        (req.map(|body| Self { body, client }), kept)
    }
}

impl http_body::Body for Sent {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Some(client) = &this.client {
            client.awaited.store(polled.is_pending(), Ordering::Relaxed);
        }
        match polled {
            Poll::Ready(Some(Err(e))) => {
                let said = e.to_string();
                if let Some(client) = &this.client {
                    *client.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                }
                Poll::Ready(Some(Err(said.into())))
            }
            other => other.map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A send that failed because the request's body did.
#[derive(Debug, thiserror::Error)]
#[error("the request body failed: {0}")]
struct BodyFailed(#[source] BodyError);

/// Sweeps `pools` ([`Pools::sweep`]) every second, until `stop` is sent or
/// dropped (the upstream was replaced or is gone): an idle connection is
/// closed within a second of its idle timeout, or of the upstream closing it.
pub async fn tidy(pools: Vec<Arc<Pools>>, mut stop: tokio::sync::watch::Receiver<()>) {
    const EVERY: Duration = Duration::from_secs(1);
    let mut ticks = tokio::time::interval_at(Instant::now() + EVERY, EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            now = ticks.tick() => pools.iter().for_each(|p| p.sweep(now)),
        }
    }
}

/// An idle connection to `address`, with the key it is kept under.
fn take_idle(
    shard: &Shard,
    address: &Arc<str>,
    now: Instant,
    idle_timeout: Duration,
) -> Option<(Box<Connection>, Arc<str>)> {
    let mut idle = shard.http1.lock().unwrap_or_else(PoisonError::into_inner);
    let list = idle.get_mut(address)?;
    // Most recently returned first: it is the least likely to have been
    // closed by the upstream's own idle timer.
    // A connection the upstream closed while idle is dropped here.
    while let Some(mut idle) = list.pop() {
        if idle.fresh(now, idle_timeout) {
            return Some((idle.conn, idle.key));
        }
    }
    None
}

impl Conn {
    /// Whether this connection was used before (a failure on it may be the
    /// upstream having closed it while idle).
    pub fn reused(&self) -> bool {
        match self {
            Self::Http1 { reused, .. } | Self::Http2 { reused, .. } => *reused,
        }
    }

    /// Sends one request; the response body returns an HTTP/1 connection to
    /// the pool once it has been read to the end. The response carries no
    /// hop-by-hop field.
    /// `forwarding`: the fields an HTTP/1 head is written with (an HTTP/2
    /// request carries them in its map). The response head must come by
    /// `deadline`; it comes with the time it arrived.
    pub async fn send(
        self,
        req: Box<Request<Body>>,
        forwarding: Option<&Forwarding<'_>>,
        deadline: Instant,
    ) -> Result<(Box<Response<Body>>, Instant), SendError> {
        match self {
            Self::Http1 { conn, home, reused } => conn.send(req, forwarding, Some(home), deadline, reused).await,
            // Boxed: what it keeps for a request turned away would widen
            // every send's future, HTTP/1 ones too.
            Self::Http2 { sender, id, read_timeout, stream, .. } => {
                Box::pin(send_http2(sender, id, read_timeout, stream, req, deadline)).await
            }
        }
    }

    /// Sends again what a kept connection closed on unanswered
    /// ([`SendError::Unanswered`]); on an HTTP/1 connection only.
    pub async fn resend(
        self,
        again: Unanswered,
        deadline: Instant,
    ) -> Result<(Box<Response<Body>>, Instant), SendError> {
        match self {
            Self::Http1 { conn, home, .. } => conn.resend(again, Some(home), deadline).await,
            Self::Http2 { .. } => Err(SendError::Failed("an HTTP/1 request cannot go on an HTTP/2 connection".into())),
        }
    }
}

/// Sends one request on HTTP/2 connection `id` ([`Conn::send`]).
async fn send_http2(
    mut sender: http2::SendRequest<Sent>,
    id: u64,
    read_timeout: Duration,
    stream: Http2Stream,
    req: Box<Request<Body>>,
    deadline: Instant,
) -> Result<(Box<Response<Body>>, Instant), SendError> {
    // What goes again if the upstream turns the stream away unprocessed: a
    // request without a body, or with one held whole (a stream is sent as
    // it is read, and not kept).
    let again = Replay::capture(&req);
    let (req, client) = Sent::new(*req);
    let Ok(result) = tokio::time::timeout_at(deadline, sender.try_send_request(req)).await else {
        if client.is_some_and(|c| c.awaited.load(Ordering::Relaxed)) {
            return Err(SendError::Failed(Box::new(BodyFailed(BodyError::Late))));
        }
        return Err(SendError::TimedOut);
    };
    match result {
        Ok(mut resp) => {
            // HTTP/2 forbids them; what a lax upstream sends anyway goes.
            headers::strip_hop_by_hop(resp.headers_mut());
            let resp = resp.map(|inner| Body::Stream { inner, idle: read_timeout, timer: None, stream });
            Ok((Box::new(resp), Instant::now()))
        }
        Err(mut e) => match e.take_message() {
            // Not sent: the connection was closing.
            Some(req) => Err(SendError::Unprocessed(Box::new(TurnedAway {
                again: Box::new(req.map(|s| s.body)),
                done: Some(id),
                error: e.into_error().into(),
            }))),
            None => match client.and_then(|c| c.failure.lock().unwrap_or_else(PoisonError::into_inner).take()) {
                Some(body) => Err(SendError::Failed(Box::new(BodyFailed(body)))),
                None => {
                    let e = e.into_error();
                    match (again, turned_away(&e)) {
                        (Some(again), Some(gone)) => Err(SendError::Unprocessed(Box::new(TurnedAway {
                            again: again.build(),
                            done: gone.then_some(id),
                            error: e.into(),
                        }))),
                        _ => Err(SendError::Failed(e.into())),
                    }
                }
            },
        },
    }
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shard")
    }
}

/// Where a connection goes back to when its response is done.
#[derive(Debug)]
pub struct Return {
    shard: Arc<Shard>,
    key: Arc<str>,
    max_idle: usize,
}

impl Return {
    /// Keeps `conn`, idle since `since`.
    pub(super) fn give_back(self, conn: Box<Connection>, since: Instant) {
        let Self { shard, key, max_idle } = self;
        let mut idle = shard.http1.lock().unwrap_or_else(PoisonError::into_inner);
        // Found by the address the connection keeps; none when the endpoint
        // left while it was in use ([`Pools::forget`]): it is dropped.
        let Some(list) = idle.get_mut(&key) else { return };
        if list.len() < max_idle {
            list.push(Idle { conn, since, key });
        }
    }
}
