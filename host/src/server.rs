//! Listeners and workers. Each worker is a thread with its own single-
//! threaded Tokio runtime and its own `SO_REUSEPORT` socket on the listen
//! address (and on the TLS address), so the kernel spreads connections and a
//! request never leaves the thread that accepted it: its plugin instances and
//! upstream connections are that worker's own.
//!
//! Each connection is served in a task of its own: HTTP/1 by the gateway's
//! server ([`h1`]), HTTP/2 (a connection that opens with its preface) by
//! hyper's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};

use crate::config::ServerConfig;
use crate::gateway::Shared;
use crate::proxy::body::{Body, ClientBody};
use crate::proxy::{self, ConnInfo, Present};
use crate::upstream::h1::Io;

pub mod h1;

/// Binds `workers` sockets to `addr` (port 0 picks one port for all).
pub fn bind(addr: SocketAddr, workers: usize) -> std::io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    let first = socket(addr)?;
    let local = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers.max(1) {
        listeners.push(socket(local)?);
    }
    Ok((listeners, local))
}

fn socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_tcp_nodelay(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// A worker's sockets: plain, and TLS when configured.
pub type WorkerListeners = (Option<std::net::TcpListener>, Option<std::net::TcpListener>);

/// Starts one worker thread per listener pair.
pub fn spawn_workers(
    shared: &Arc<Shared>,
    listeners: Vec<WorkerListeners>,
    shutdown: &watch::Receiver<bool>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    listeners
        .into_iter()
        .enumerate()
        .map(|(i, listener)| {
            let (shared, shutdown) = (shared.clone(), shutdown.clone());
            std::thread::Builder::new().name(format!("wasmgate-worker-{i}")).spawn(move || {
                crate::worker::set_index(i);
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(worker = i, "cannot start the worker runtime: {e}");
                        return;
                    }
                };
                rt.block_on(run(shared, listener, shutdown));
            })
        })
        .collect()
}

/// The streams an HTTP/2 client may have open at once.
const MAX_STREAMS: u32 = 128;

/// Streams an HTTP/2 client may cancel within [`PREMATURE`] of their start
/// (or have refused for its own fault: malformed, a body it reset), if
/// they are more than half of its streams, before its connection is
/// closed: each was routed, ran its plugins and may have sent its request
/// upstream, so cancelling as fast as the network allows ("rapid reset",
/// CVE-2023-44487) made work at that rate. Envoy's rule, with a lower
/// count (its default is 500 streams).
const MAX_PREMATURE: u64 = 100;

/// How young a cancelled stream is for [`MAX_PREMATURE`]: a gRPC call whose
/// deadline passed, or a download a browser gave up on, is older.
const PREMATURE: Duration = Duration::from_secs(1);

/// hyper's HTTP/2 server, for connections that open with HTTP/2's preface
/// (over TLS, those that chose `h2`).
fn http2(server: &ServerConfig) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX))
        // Each stream may hold an upstream connection and a body: as
        // nginx's 128, not hyper's 200.
        .max_concurrent_streams(MAX_STREAMS)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        // What a stream keeps ready past the client's window: hyper asks a
        // body for more once it is under this, so a client that has not
        // come back for `send_timeout` has taken less than this and a piece
        // ([`Counted`]) in that time (hyper's default: 400 KiB).
        .max_send_buf_size(SEND_BUFFER);
    b
}

/// What every connection of a worker shares: the `[server]` limits of the
/// config current when it was accepted.
struct Serving {
    shared: Arc<Shared>,
    /// The config generation the limits are from.
    generation: u64,
    limits: h1::Limits,
    http2: http2::Builder<TokioExecutor>,
    /// `server.trusted_proxies`.
    trusted: Arc<[wasmgate_common::cidr::Cidr]>,
}

impl Serving {
    /// For connections accepted now: made again after a reload, so new
    /// limits hold for the connections accepted after it (those open keep
    /// theirs).
    fn current(shared: &Arc<Shared>, last: Option<&Arc<Self>>) -> Arc<Self> {
        let snapshot = shared.current();
        match last {
            Some(s) if s.generation == snapshot.generation => s.clone(),
            _ => {
                let server = &snapshot.config.server;
                Arc::new(Self {
                    shared: shared.clone(),
                    generation: snapshot.generation,
                    limits: h1::Limits {
                        header_read_timeout: server.header_read_timeout,
                        max_head: server.max_header_bytes,
                        max_headers: server.max_headers,
                        send_timeout: server.send_timeout,
                        underscores: server.underscores_in_headers,
                    },
                    http2: http2(server),
                    trusted: server.trusted_proxies.clone(),
                })
            }
        }
    }
}

/// Serves one worker's listeners until `shutdown`, then drains its
/// connections (up to `shutdown_timeout`, as the config says then).
pub(crate) async fn run(shared: Arc<Shared>, listeners: WorkerListeners, mut shutdown: watch::Receiver<bool>) {
    let (plain, tls) = listeners;
    let (plain, tls) = match (
        plain.map(tokio::net::TcpListener::from_std).transpose(),
        tls.map(tokio::net::TcpListener::from_std).transpose(),
    ) {
        (Ok(plain), Ok(tls)) => (plain, tls),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cannot use a listening socket: {e}");
            return;
        }
    };
    let mut serving = Serving::current(&shared, None);
    // The worker's heartbeat, which `/health/live` reads: a worker whose
    // event loop is blocked stops beating.
    let beating = tokio::spawn({
        let shared = shared.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                shared.beat();
            }
        }
    });
    // Every connection holds a sender; when all are gone, so are the
    // connections (graceful shutdown waits for that).
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    // Accepts failed in a row (out of file descriptors, say).
    let mut failed: u32 = 0;
    // The TLS connections of the acceptor they were accepted with: told to
    // close, as on shutdown, when a reload replaces it.
    let mut tls_generation: Option<TlsGeneration> = None;
    loop {
        let (accepted, secure) = tokio::select! {
            a = accept_opt(plain.as_ref()) => (a, false),
            a = accept_opt(tls.as_ref()) => (a, true),
            _ = shutdown.changed() => break,
            () = TlsGeneration::replaced(&mut tls_generation) => {
                if let Some(old) = tls_generation.take() {
                    old.close();
                }
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors or similar: back off rather than
                // spin, longer while it lasts (10 ms, doubling, up to 1 s),
                // and say so once, not on every try (every 10 ms on every
                // worker and listener, before).
                if failed == 0 {
                    tracing::warn!("accept failed: {e}; backing off until it succeeds");
                }
                failed = failed.saturating_add(1);
                let wait = Duration::from_millis(10).saturating_mul(1 << (failed - 1).min(7));
                tokio::select! {
                    () = tokio::time::sleep(wait.min(Duration::from_secs(1))) => continue,
                    _ = shutdown.changed() => break,
                }
            }
        };
        if failed > 0 {
            tracing::info!(failed, "accepting again");
            failed = 0;
        }
        let _ = stream.set_nodelay(true);
        serving = Serving::current(&shared, Some(&serving));
        let (serving, shutdown, open) = (serving.clone(), shutdown.clone(), open.clone());
        if !secure {
            tokio::spawn(async move {
                connection(Box::new(stream), ConnInfo::new(peer, "http", &serving.trusted), &serving, shutdown).await;
                drop(open);
            });
            continue;
        }
        // The handshake runs in the connection's task, bounded by the header
        // read timeout, so a slow handshake never holds up accepting.
        let Some(listening) = shared.current().tls.clone() else { continue };
        let shutdown = TlsGeneration::of(&mut tls_generation, listening.clone(), &shutdown);
        let acceptor = listening.acceptor.clone();
        let handshake_timeout = serving.limits.header_read_timeout;
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let mut info = ConnInfo::new(peer, "https", &serving.trusted);
            // Read once for the connection's requests.
            if let Some(cert) = stream.get_ref().1.peer_certificates().and_then(crate::tls::ClientCert::of) {
                info = info.presenting(cert, listening.forward_client_cert);
            }
            connection(Box::new(stream), info, &serving, shutdown).await;
            drop(open);
        });
    }
    drop(plain);
    drop(tls);
    if let Some(generation) = tls_generation.take() {
        generation.close();
    }
    drop(open);
    tokio::select! {
        _ = all_closed.recv() => {}
        () = tokio::time::sleep(shared.current().config.server.shutdown_timeout) => {
            tracing::warn!("shutdown deadline passed with requests in flight; closing them");
        }
    }
    beating.abort();
}

/// A worker's TLS connections accepted with one [`tls::Listening`]: their
/// shutdown signal, sent when a reload replaces it (or on shutdown).
struct TlsGeneration {
    listening: Arc<crate::tls::Listening>,
    replaced: watch::Receiver<bool>,
    close: watch::Sender<bool>,
}

impl TlsGeneration {
    /// The shutdown signal for a connection accepted with `listening`: its
    /// generation's, a new one if the last was another's.
    fn of(
        current: &mut Option<Self>,
        listening: Arc<crate::tls::Listening>,
        shutdown: &watch::Receiver<bool>,
    ) -> watch::Receiver<bool> {
        if let Some(g) = current.as_ref()
            && !Arc::ptr_eq(&g.listening, &listening)
            && let Some(old) = current.take()
        {
            old.close();
        }
        let g = current.get_or_insert_with(|| Self {
            replaced: listening.replaced(),
            listening,
            close: watch::channel(*shutdown.borrow()).0,
        });
        g.close.subscribe()
    }

    /// Completes when the current generation's acceptor is replaced.
    async fn replaced(current: &mut Option<Self>) {
        match current {
            Some(g) => {
                let _ = g.replaced.wait_for(|replaced| *replaced).await;
            }
            None => std::future::pending().await,
        }
    }

    /// Tells its connections to close (gracefully).
    fn close(self) {
        self.close.send_replace(true);
    }
}

/// Serves one client connection: HTTP/1 on the gateway's own server, or
/// HTTP/2 (its preface seen) on hyper's. On shutdown, an idle connection
/// closes at once and a busy one after its response.
async fn connection(io: Box<dyn Io>, info: ConnInfo, serving: &Serving, mut shutdown: watch::Receiver<bool>) {
    let info = Arc::new(info);
    let peer = info.peer;
    let Some((io, read)) = h1::serve(io, &serving.shared, &info, &serving.limits, &mut shutdown).await else {
        return;
    };
    let io = TokioIo::new(Rewind { read, io });
    let streams = Arc::new(Streams::new());
    let limits = &serving.limits;
    let service = service(serving.shared.clone(), info, (limits.max_headers, limits.underscores), streams.clone());
    let conn = serving.http2.serve_connection(io, service);
    let (idle, send) = (serving.limits.header_read_timeout, serving.limits.send_timeout);
    if let Err(e) = until_idle_or_stopped(conn, &mut shutdown, &streams, idle, send).await {
        tracing::debug!(%peer, "connection ended with an error: {e}");
    }
}

/// The streams of a client's HTTP/2 connection: how many it has started,
/// how many are open (their response not yet all sent), and since when
/// each open one has waited on the client.
struct Streams {
    started: AtomicU64,
    open: AtomicUsize,
    /// Streams the client cancelled young ([`Unanswered`]); past
    /// [`MAX_PREMATURE`], `abuse` is notified.
    premature: AtomicU64,
    abuse: tokio::sync::Notify,
    /// Each open stream's [`Open::waiting`] (and, until the next prune,
    /// those of streams gone: the list holds their only reference).
    waiting: Mutex<Vec<Arc<AtomicU64>>>,
    /// What the waits count from.
    epoch: Instant,
}

impl Streams {
    fn new() -> Self {
        Self {
            started: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            premature: AtomicU64::new(0),
            abuse: tokio::sync::Notify::new(),
            waiting: Mutex::default(),
            epoch: Instant::now(),
        }
    }

    /// How long the stream that has waited longest on the client has; the
    /// streams gone are dropped from the list.
    fn longest_wait(&self) -> Duration {
        let now = self.millis();
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        waiting.retain(|w| Arc::strong_count(w) > 1);
        let oldest = waiting.iter().map(|w| w.load(Ordering::Relaxed)).filter(|&at| at != 0).min();
        Duration::from_millis(oldest.map_or(0, |at| now.saturating_sub(at)))
    }

    /// Milliseconds since the epoch, at least 1 (0 is "not waiting").
    fn millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }
}

/// A stream, counted open until it is dropped with its response body.
struct Open {
    streams: Arc<Streams>,
    /// When its body last gave hyper a frame that hyper has not come back
    /// for ([`Streams::millis`]; 0 when not): hyper asks for the next frame
    /// only once the client has room for it (HTTP/2 flow control), so a
    /// client that takes nothing leaves this set.
    waiting: Arc<AtomicU64>,
}

impl Open {
    fn new(streams: &Arc<Streams>) -> Self {
        streams.started.fetch_add(1, Ordering::Relaxed);
        streams.open.fetch_add(1, Ordering::Relaxed);
        let waiting = Arc::new(AtomicU64::new(0));
        let mut all = streams.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        // Pruned here too, so a connection whose streams come and go
        // between checks keeps about as many as are open.
        if all.len() >= 64 && all.len() >= 2 * streams.open.load(Ordering::Relaxed) {
            all.retain(|w| Arc::strong_count(w) > 1);
        }
        all.push(waiting.clone());
        drop(all);
        Self { streams: streams.clone(), waiting }
    }
}

/// A stream being handled: dropped before [`Unanswered::answered`], it was
/// cancelled (the client reset it, or the connection ended).
struct Unanswered {
    streams: Option<Arc<Streams>>,
    started: Instant,
}

impl Unanswered {
    fn new(streams: &Arc<Streams>) -> Self {
        Self { streams: Some(streams.clone()), started: Instant::now() }
    }

    /// The stream was answered — unless by the gateway for the client's
    /// fault (`client_fault`: a malformed request, or one whose body the
    /// client reset after its head), which counts as cancelled.
    fn answered(mut self, client_fault: bool) {
        if !client_fault {
            self.streams = None;
        }
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(streams) = self.streams.take() else { return };
        if self.started.elapsed() >= PREMATURE {
            return;
        }
        let premature = streams.premature.fetch_add(1, Ordering::Relaxed) + 1;
        if premature >= MAX_PREMATURE && premature.saturating_mul(2) > streams.started.load(Ordering::Relaxed) {
            streams.abuse.notify_one();
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.streams.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its stream counted open, and notes when it
/// waits on the client. Its data goes to hyper in pieces of at most
/// [`PIECE`] bytes, so that hyper asking for the next is the client having
/// taken about that much: one 1 MiB chunk would be one wait, as long as a
/// slow client takes to read all of it.
struct Counted {
    body: Body,
    open: Open,
    /// What is left of the last chunk.
    rest: Bytes,
}

/// The most a response body gives hyper at once (an HTTP/2 frame's
/// default size).
const PIECE: usize = 16 * 1024;

/// What an HTTP/2 stream keeps ready past the client's window.
const SEND_BUFFER: usize = 4 * PIECE;

impl Counted {
    fn new(body: Body, open: Open) -> Self {
        Self { body, open, rest: Bytes::new() }
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = crate::proxy::body::BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = if this.rest.is_empty() {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(mut data) if data.len() > PIECE => {
                        this.rest = data.split_off(PIECE);
                        Poll::Ready(Some(Ok(http_body::Frame::data(data))))
                    }
                    Ok(data) => Poll::Ready(Some(Ok(http_body::Frame::data(data)))),
                    Err(frame) => Poll::Ready(Some(Ok(frame))),
                },
                other => other,
            }
        } else {
            let piece = this.rest.split_to(PIECE.min(this.rest.len()));
            Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
        };
        let waiting = match &polled {
            Poll::Ready(Some(Ok(_))) => this.open.streams.millis(),
            _ => 0,
        };
        this.open.waiting.store(waiting, Ordering::Relaxed);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let hint = self.body.size_hint();
        let rest = self.rest.len() as u64;
        let mut with_rest = http_body::SizeHint::new();
        with_rest.set_lower(hint.lower().saturating_add(rest));
        if let Some(upper) = hint.upper() {
            with_rest.set_upper(upper.saturating_add(rest));
        }
        with_rest
    }
}

/// Drives a client's HTTP/2 connection to its end, shut down gracefully
/// (busy streams finish, idle ones close) once the gateway stops, and
/// closes it once it has been idle (no stream open, none started) for
/// `idle`, as an HTTP/1 connection is closed when its next head is late:
/// gracefully, then at once if it is still idle `idle` later (a client that
/// does not answer the `GOAWAY`'s ping). Without it, a client could hold a
/// connection, and its task, for ever by opening it and asking nothing.
/// A connection one of whose streams has waited on the client for `send`
/// (checked every `idle` or `send`, the shorter) is closed, as an HTTP/1
/// client that takes none of its response is: a client that never opens
/// its flow-control window held the stream, and the upstream connection
/// feeding it, for ever. Gracefully first (its other streams may finish),
/// then at once once the stream has waited twice that.
async fn until_idle_or_stopped<C: GracefulConnection>(
    conn: C,
    stop: &mut watch::Receiver<bool>,
    streams: &Streams,
    idle: Duration,
    send: Duration,
) -> Result<(), C::Error> {
    let mut conn = std::pin::pin!(conn);
    let mut seen = streams.started.load(Ordering::Relaxed);
    let mut closing = false;
    // Checked every `tick`; idle (no stream open, none started) for `quiet`.
    let tick = idle.min(send);
    let mut quiet = Duration::ZERO;
    loop {
        tokio::select! {
            r = conn.as_mut() => return r,
            _ = stop.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = streams.abuse.notified() => {
                let (premature, streams) =
                    (streams.premature.load(Ordering::Relaxed), streams.started.load(Ordering::Relaxed));
                tracing::warn!(
                    premature,
                    streams,
                    "closing an HTTP/2 connection whose client cancelled most of its streams within a second of \
                     their start (rapid reset)"
                );
                return Ok(());
            }
            () = tokio::time::sleep(tick) => {
                let waited = streams.longest_wait();
                if waited >= send.saturating_mul(2) {
                    return Ok(());
                }
                if waited >= send && !closing {
                    let waited_ms = waited.as_millis();
                    tracing::debug!(waited_ms, "an HTTP/2 client took none of a response; closing its connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                let started = streams.started.load(Ordering::Relaxed);
                let idle_now = started == seen && streams.open.load(Ordering::Relaxed) == 0;
                quiet = if idle_now { quiet + tick } else { Duration::ZERO };
                seen = started;
                if quiet >= idle {
                    if closing {
                        return Ok(());
                    }
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    quiet = Duration::ZERO;
                }
            }
        }
    }
}

/// A socket whose first bytes were already read: they are read again first.
struct Rewind {
    read: Bytes,
    io: Box<dyn Io>,
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

async fn accept_opt(
    l: Option<&tokio::net::TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

fn service(
    shared: Arc<Shared>,
    conn_info: Arc<ConnInfo>,
    (max_headers, underscores): (usize, bool),
    streams: Arc<Streams>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<Counted>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<hyper::Response<Counted>, Infallible>> + Send,
> + Clone {
    service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let open = Open::new(&streams);
        let unanswered = Unanswered::new(&streams);
        let snapshot = shared.current();
        let conn_info = conn_info.clone();
        join_cookies(req.headers_mut());
        if !underscores {
            drop_underscored(req.headers_mut());
        }
        // HTTP/2 bounds a head by its bytes only (`max_header_bytes`); the
        // count is bounded as HTTP/1's is (the cookies as the one field
        // they were joined into).
        let refused = if req.headers().len() > max_headers {
            Some(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        } else {
            malformed(req.headers()).then_some(http::StatusCode::BAD_REQUEST)
        };
        let head = req.method() == http::Method::HEAD;
        // One pass over the names rather than a lookup of each override
        // field in the map on every request.
        let present = if req.headers().keys().any(|n| proxy::headers::OVERRIDES.contains(n)) {
            Present::ANY
        } else {
            Present::ANY.without(Present::OVERRIDE)
        };
        let req = Box::new(req.map(|b| Body::client(ClientBody::H2(b))));
        async move {
            if let Some(status) = refused {
                unanswered.answered(true);
                snapshot.metrics.refused(status);
                let mut resp = hyper::Response::new(Counted::new(Body::Empty, open));
                *resp.status_mut() = status;
                return Ok(resp);
            }
            let (mut resp, stamp) = proxy::handle(snapshot, &conn_info, req, present).await;
            unanswered.answered(stamp.client_fault);
            bodiless(&mut resp, head);
            let mut resp = resp.map(|body| Counted::new(body, open));
            stamp.apply(resp.headers_mut());
            Ok(resp)
        }
    })
}

/// An answer to a `HEAD`, a 204 or a 304 ([`proxy::bodiless`]) goes to an
/// HTTP/2 client without its body, as the HTTP/1 server sends it: hyper's
/// HTTP/2 server sends what it is given, and a client takes DATA on such a
/// stream as malformed (RFC 9113 §8.1.1) — the gateway's own error bodies
/// and a plugin's answer (a cache hit) have one. The length it states is
/// kept, but a 204's ([`proxy::may_state_length`]), as the HTTP/1 server
/// does.
fn bodiless(resp: &mut http::Response<Body>, head: bool) {
    use hyper::body::Body as _;
    let status = resp.status();
    if !proxy::bodiless(head, status) {
        return;
    }
    if !proxy::may_state_length(status) {
        resp.headers_mut().remove(http::header::CONTENT_LENGTH);
    }
    if !resp.body().is_end_stream() {
        *resp.body_mut() = Body::Empty;
    }
}

/// Whether an HTTP/2 request's fields are malformed in a way HTTP/1's
/// parser would not let through: two `Host` fields (routed by the first,
/// both sent to an HTTP/1 upstream, which may read the other), or a value
/// with leading or trailing white space (RFC 9113 §8.2.1; HTTP/1's are
/// trimmed, so `x-env: prod\t` passed a rule for `prod` and reached the
/// upstream as `prod`).
fn malformed(headers: &http::HeaderMap) -> bool {
    let mut hosts = headers.get_all(http::header::HOST).iter();
    if hosts.next().is_some() && hosts.next().is_some() {
        return true;
    }
    let padded = |v: &[u8]| matches!(v.first(), Some(b' ' | b'\t')) || matches!(v.last(), Some(b' ' | b'\t'));
    headers.values().any(|v| padded(v.as_bytes()))
}

/// Drops the fields whose names have `_`, as the HTTP/1 server does (unless
/// `server.underscores_in_headers`).
fn drop_underscored(headers: &mut http::HeaderMap) {
    if headers.keys().any(|n| n.as_str().contains('_')) {
        let names: Vec<http::HeaderName> = headers.keys().filter(|n| n.as_str().contains('_')).cloned().collect();
        for name in names {
            headers.remove(name);
        }
    }
}

/// Joins the `cookie` fields of an HTTP/2 request into one, as RFC 9113
/// §8.2.3 asks of a request forwarded to HTTP/1.1 (where a request carries
/// one `Cookie`): an HTTP/2 client may send each cookie as its own field.
fn join_cookies(headers: &mut http::HeaderMap) {
    let mut all = headers.get_all(http::header::COOKIE).iter();
    let (Some(first), Some(_)) = (all.next(), all.next()) else { return };
    let mut joined = first.as_bytes().to_vec();
    for value in headers.get_all(http::header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(value.as_bytes());
    }
    // Valid values joined by "; ": valid.
    if let Ok(value) = http::HeaderValue::from_bytes(&joined) {
        headers.insert(http::header::COOKIE, value);
    }
}
