//! Upstream servers for the tests: real HTTP servers on ephemeral ports.
//!
//! The echo server answers with a JSON description of the request it got,
//! so a test can check what the gateway forwarded. Some paths misbehave on
//! purpose: `/slow/{ms}` waits before answering, `/status/{code}` answers
//! with that status, `/bytes/{n}` sends n bytes, `/hop` sends hop-by-hop
//! headers the gateway must strip (`/hop/plain`: without `Connection`), `/via` answers with its
//! own `Via` and `X-Request-Id`, `/health` answers 200 or 500 as the test
//! sets it. A request with `Upgrade` is switched (101) and its bytes echoed.
//! [`Control`] lets a test make the server fail, go unhealthy or die.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What a test can change in a running upstream.
#[derive(Debug, Default)]
pub struct Control {
    hits: AtomicUsize,
    /// Connections accepted.
    connections: AtomicUsize,
    /// Connections accepted and not yet closed.
    open: AtomicUsize,
    unhealthy: AtomicBool,
    /// Answer this many requests with 503 before behaving again.
    fail_next: AtomicU32,
    /// Answer every request with 503 while set.
    failing: AtomicBool,
    in_flight: AtomicUsize,
}

/// A running test upstream; stops (and drops its connections) when dropped
/// or killed.
#[derive(Debug)]
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub name: String,
    pub control: Arc<Control>,
    stop: watch::Sender<bool>,
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl TestUpstream {
    /// An echo server named `name` (it says so in `x-upstream`), HTTP/1.1
    /// and HTTP/2 (prior knowledge).
    pub async fn echo(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        Self::serve(name, listener)
    }

    /// An echo server on a given address (to bring an endpoint back).
    pub async fn echo_on(name: &str, addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.expect("rebind upstream");
        Self::serve(name, listener)
    }

    fn serve(name: &str, listener: TcpListener) -> Self {
        let addr = listener.local_addr().expect("upstream addr");
        let control = Arc::new(Control::default());
        let (stop, stopped) = watch::channel(false);
        let (name_c, control_c) = (name.to_owned(), control.clone());
        tokio::spawn(async move {
            let mut stopped_accept = stopped.clone();
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = stopped_accept.changed() => return,
                };
                control_c.connections.fetch_add(1, Ordering::SeqCst);
                control_c.open.fetch_add(1, Ordering::SeqCst);
                let (name, control, mut stopped) = (name_c.clone(), control_c.clone(), stopped.clone());
                let open = control.clone();
                let service = service_fn(move |req| echo(name.clone(), control.clone(), req));
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    // Dropping the connection future on stop closes the
                    // socket: the upstream "dies" with requests in flight.
                    tokio::select! {
                        _ = conn => {}
                        _ = stopped.changed() => {}
                    }
                    open.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { addr, name: name.to_owned(), control, stop }
    }

    /// Requests this upstream has received.
    pub fn hits(&self) -> usize {
        self.control.hits.load(Ordering::SeqCst)
    }

    /// Connections this upstream has accepted.
    pub fn connections(&self) -> usize {
        self.control.connections.load(Ordering::SeqCst)
    }

    /// Connections accepted that neither side has closed yet.
    pub fn open_connections(&self) -> usize {
        self.control.open.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes every connection, mid-request or not.
    pub fn kill(&self) {
        let _ = self.stop.send(true);
    }

    /// Makes `/health` answer 500 (false) or 200 (true).
    pub fn set_healthy(&self, healthy: bool) {
        self.control.unhealthy.store(!healthy, Ordering::SeqCst);
    }

    /// Answers the next `n` requests with 503.
    pub fn fail_next(&self, n: u32) {
        self.control.fail_next.store(n, Ordering::SeqCst);
    }

    /// Answers every request with 503 until set back.
    pub fn set_failing(&self, failing: bool) {
        self.control.failing.store(failing, Ordering::SeqCst);
    }

    /// Requests being served right now.
    pub fn in_flight(&self) -> usize {
        self.control.in_flight.load(Ordering::SeqCst)
    }
}

/// Accepts connections and closes them at once, unanswered: an upstream
/// that resets.
pub async fn resetting() -> (SocketAddr, watch::Sender<bool>) {
    raw(|s| async move {
        // Read a little so the request is "sent", then drop. Zero linger
        // makes the close a reset (RST), not a FIN; with zero there is
        // nothing to block on.
        #[expect(deprecated, reason = "SO_LINGER 0 is exactly the reset we want")]
        let _ = s.set_linger(Some(Duration::ZERO));
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(s);
    })
    .await
}

/// Answers the first request on each connection with `200 ok` — keep-alive,
/// no `Connection: close` — and then closes the connection, as an upstream
/// whose idle timeout is shorter than the gateway's: at once, or (with
/// `on_next`) when the next request's head arrives, unanswered, as if its
/// idle timer fired as that request went out. Counts the connections it
/// accepted.
pub async fn closing(on_next: bool) -> (SocketAddr, Arc<AtomicUsize>, watch::Sender<bool>) {
    use tokio::io::AsyncWriteExt;
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let (addr, stop) = raw(move |mut s| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut pending = Vec::new();
            if crate::read_head(&mut s, &mut pending).await.is_some() {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
            }
            if on_next {
                let _ = crate::read_head(&mut s, &mut pending).await;
            }
        }
    })
    .await;
    (addr, accepted, stop)
}

/// Streams its first answer: a chunked head and one chunk, then silence
/// (the stream held open, for up to a minute); every later request on any
/// connection gets `200 quick` at once. Neither carries `x-upstream`.
pub async fn streaming_first() -> (SocketAddr, watch::Sender<bool>) {
    use tokio::io::AsyncWriteExt;
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    raw(move |mut s| {
        let first = first.clone();
        async move {
            let mut pending = Vec::new();
            while crate::read_head(&mut s, &mut pending).await.is_some() {
                if first.swap(false, Ordering::SeqCst) {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n").await;
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nquick").await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

/// Answers each request with a head announcing ten bytes and three of
/// them, then goes silent with the connection open: an upstream stalled in
/// the middle of a body.
pub async fn stalling() -> (SocketAddr, watch::Sender<bool>) {
    answering_then_silent(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc").await
}

/// Answers `413` as soon as a request head has arrived and then holds the
/// connection open without reading the body, as an upstream that refuses an
/// upload early.
pub async fn refusing_early() -> (SocketAddr, watch::Sender<bool>) {
    answering_then_silent(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo big!").await
}

/// Answers `103 Early Hints` as soon as a request head has arrived, waits
/// 300 ms before it reads the body (so a large one fills the sockets on its
/// way), reads all of it (`Content-Length`), then answers `200` with
/// `got N`, N the bytes read.
pub async fn hinting_before_the_body() -> (SocketAddr, watch::Sender<bool>) {
    sending_before_reading(
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n",
        Duration::from_millis(300),
        |body| format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()),
        Arc::default(),
    )
    .await
}

/// Answers `200` (chunked, the connection kept) as soon as a request head
/// has arrived, before it reads the body, then reads all of it
/// (`Content-Length`) and ends the answer with `got N`, N the bytes read:
/// an upstream that streams its answer as it reads. The `Notify` is told
/// once the answer's head has been written.
pub async fn answering_before_reading() -> (SocketAddr, watch::Sender<bool>, Arc<tokio::sync::Notify>) {
    let answered = Arc::new(tokio::sync::Notify::new());
    let (addr, stop) = sending_before_reading(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        Duration::ZERO,
        |body| format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()),
        answered.clone(),
    )
    .await;
    (addr, stop, answered)
}

/// Sends `first` as soon as a request head has arrived (and tells `sent`),
/// waits `wait`, reads all of the body (`Content-Length`), then sends
/// `last("got N")`, N the bytes read.
async fn sending_before_reading(
    first: &'static [u8],
    wait: Duration,
    last: fn(&str) -> String,
    sent: Arc<tokio::sync::Notify>,
) -> (SocketAddr, watch::Sender<bool>) {
    use tokio::io::AsyncWriteExt;
    raw(move |mut s| {
        let sent = sent.clone();
        async move {
            let mut pending = Vec::new();
            let Some(head) = crate::read_head(&mut s, &mut pending).await else { return };
            if s.write_all(first).await.is_err() {
                return;
            }
            sent.notify_one();
            tokio::time::sleep(wait).await;
            let Some(got) = read_body(&mut s, &head, pending.len()).await else { return };
            let _ = s.write_all(last(&format!("got {got}")).as_bytes()).await;
        }
    })
    .await
}

/// Reads the rest of a body of `head`'s `Content-Length`, `already` bytes
/// of which came with the head: how many bytes it had, or `None` when the
/// connection ended first.
async fn read_body(s: &mut tokio::net::TcpStream, head: &str, already: usize) -> Option<usize> {
    use tokio::io::AsyncReadExt;
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut got = already;
    let mut buf = vec![0u8; 64 << 10];
    while got < length {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => got += n,
        }
    }
    Some(got)
}

/// Writes `answer` once a request head has arrived, then holds the
/// connection open, reading nothing more and sending nothing more.
async fn answering_then_silent(answer: &'static [u8]) -> (SocketAddr, watch::Sender<bool>) {
    use tokio::io::AsyncWriteExt;
    raw(move |mut s| async move {
        if crate::read_head(&mut s, &mut Vec::new()).await.is_none() {
            return;
        }
        let _ = s.write_all(answer).await;
        // Longer than any test waits: the socket stays open, silent.
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await
}

/// An HTTP/1 upstream that answers each request head (bodies are not read)
/// with the bytes `answer` gives for its path, written in the pieces given,
/// a few milliseconds apart (so a head or body arrives split); closes the
/// connection after a piece list that ends with an empty piece. Counts the
/// connections it accepted.
pub async fn scripted(answer: fn(&str) -> Vec<&'static [u8]>) -> (SocketAddr, Arc<AtomicUsize>, watch::Sender<bool>) {
    use tokio::io::AsyncWriteExt;
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let (addr, stop) = raw(move |mut s| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut pending = Vec::new();
            while let Some(head) = crate::read_head(&mut s, &mut pending).await {
                let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                for piece in answer(&path) {
                    if piece.is_empty() {
                        return;
                    }
                    if s.write_all(piece).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    })
    .await;
    (addr, accepted, stop)
}

/// A TCP server on an ephemeral port that hands each connection to `serve`
/// (in a task of its own) until told to stop.
async fn raw<F, Fut>(serve: F) -> (SocketAddr, watch::Sender<bool>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                a = listener.accept() => {
                    if let Ok((s, _)) = a {
                        tokio::spawn(serve(s));
                    }
                }
                _ = stopped.changed() => return,
            }
        }
    });
    (addr, stop)
}

struct InFlight(Arc<Control>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn echo(
    name: String,
    control: Arc<Control>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    control.hits.fetch_add(1, Ordering::SeqCst);
    control.in_flight.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlight(control.clone());
    if req.headers().contains_key(http::header::UPGRADE) {
        return Ok(switch(&name, &mut req));
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut status = StatusCode::OK;
    let mut extra: Vec<(&str, String)> = Vec::new();
    let failing = control.failing.load(Ordering::SeqCst)
        || control.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    match segs.as_slice() {
        ["health"] if control.unhealthy.load(Ordering::SeqCst) => status = StatusCode::INTERNAL_SERVER_ERROR,
        ["health"] => {}
        _ if failing => status = StatusCode::SERVICE_UNAVAILABLE,
        ["slow", ms, ..] => {
            let ms: u64 = ms.parse().unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        ["status", code, ..] => {
            status = code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::OK);
        }
        ["bytes", n, ..] => {
            let n: usize = n.parse().unwrap_or(0);
            return Ok(Response::builder()
                .header("x-upstream", name)
                .body(Full::new(Bytes::from(vec![b'x'; n])))
                .unwrap_or_default());
        }
        ["via"] => {
            extra.push(("via", "1.0 fred".into()));
            extra.push(("x-request-id", "upstream-id".into()));
        }
        ["hop", "plain"] => {
            extra.push(("keep-alive", "timeout=5".into()));
            extra.push(("proxy-authenticate", "Basic realm=\"up\"".into()));
        }
        ["hop", ..] => {
            extra.push(("connection", "x-upstream-secret".into()));
            extra.push(("x-upstream-secret", "must-not-leak".into()));
            extra.push(("keep-alive", "timeout=5".into()));
        }
        _ => {}
    }
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let doc = serde_json::json!({
        "upstream": name,
        "method": parts.method.as_str(),
        "path": path,
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut resp =
        Response::builder().status(status).header("content-type", "application/json").header("x-upstream", name);
    for (k, v) in extra {
        resp = resp.header(k, v);
    }
    Ok(resp.body(Full::new(Bytes::from(doc.to_string()))).unwrap_or_default())
}

/// Agrees to any upgrade and echoes the raw bytes back.
fn switch(name: &str, req: &mut Request<Incoming>) -> Response<Full<Bytes>> {
    let protocol = req.headers().get(http::header::UPGRADE).cloned();
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("x-upstream", name);
    if let Some(p) = protocol {
        resp = resp.header("upgrade", p);
    }
    resp.body(Full::default()).unwrap_or_default()
}

/// The first value of `name` in an echo document's `headers` list.
pub fn echoed_header(doc: &serde_json::Value, name: &str) -> Option<String> {
    echoed_headers(doc, name).into_iter().next()
}

/// Every value of `name` in an echo document's `headers` list.
pub fn echoed_headers(doc: &serde_json::Value, name: &str) -> Vec<String> {
    doc["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pair| pair[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .filter_map(|pair| pair[1].as_str().map(str::to_owned))
        .collect()
}

/// A gRPC-shaped upstream over h2c (HTTP/2 prior knowledge): every request
/// is answered 200 with a body and `grpc-status: 0` trailers, echoing the
/// request's `te` header, path, `x-forwarded-for` and `:authority` in `x-te` /
/// `x-path` / `x-seen-forwarded-for` / `x-authority`.
pub async fn grpc() -> (SocketAddr, watch::Sender<bool>) {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    h2c(|req: Request<Incoming>| async move {
        let te = req.headers().get("te").cloned();
        let xff = req.headers().get("x-forwarded-for").cloned();
        let path = req.uri().path().to_owned();
        let authority = req.uri().authority().map(|a| a.to_string());
        let _ = req.into_body().collect().await;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        trailers.insert("grpc-message", http::HeaderValue::from_static("ok"));
        let frames: Vec<Result<Frame<Bytes>, Infallible>> =
            vec![Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x05hello"))), Ok(Frame::trailers(trailers))];
        let mut resp = Response::new(StreamBody::new(futures::stream::iter(frames)));
        resp.headers_mut().insert("content-type", http::HeaderValue::from_static("application/grpc"));
        if let Some(te) = te {
            resp.headers_mut().insert("x-te", te);
        }
        if let Some(xff) = xff {
            resp.headers_mut().insert("x-seen-forwarded-for", xff);
        }
        if let Ok(p) = http::HeaderValue::from_str(&path) {
            resp.headers_mut().insert("x-path", p);
        }
        if let Some(a) = authority.and_then(|a| http::HeaderValue::from_str(&a).ok()) {
            resp.headers_mut().insert("x-authority", a);
        }
        Ok::<_, Infallible>(resp)
    })
    .await
}

/// The echo upstream ([`TestUpstream::echo`]'s document) over h2c.
pub async fn h2_echo(name: &str) -> (SocketAddr, watch::Sender<bool>) {
    let (name, control) = (name.to_owned(), Arc::new(Control::default()));
    h2c(move |req: Request<Incoming>| echo(name.clone(), control.clone(), req)).await
}

/// An upstream over h2c that answers every request with a head and the
/// first bytes of a body (`part`), then sends nothing more, its connection
/// kept alive (it answers pings).
pub async fn h2_stalling() -> (SocketAddr, watch::Sender<bool>) {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    h2c(|_req: Request<Incoming>| async move {
        let first = futures::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"part")))]);
        let body = StreamBody::new(futures::StreamExt::chain(first, futures::stream::pending()));
        Ok::<_, Infallible>(Response::new(body))
    })
    .await
}

/// How [`h2_turning_away`] turns its first request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnAway {
    /// `RST_STREAM` with `REFUSED_STREAM`; the connection then serves
    /// the next streams.
    Refuse,
    /// `GOAWAY` with `NO_ERROR`, the last stream processed 0.
    GoAway,
    /// `RST_STREAM` with `INTERNAL_ERROR`: it may have been processed.
    Reset,
    /// As `GoAway`, then it stops listening (as a server shutting down).
    Leave,
}

/// An upstream over h2c whose first connection turns its first request
/// away — the frames written by hand — and whose later connections (unless
/// it left) answer
/// every request 200, echoing its method and body in `x-method` /
/// `x-body`. Counts the connections it accepted.
pub async fn h2_turning_away(how: TurnAway) -> (SocketAddr, Arc<AtomicUsize>, watch::Sender<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let (stop, mut stopped) = watch::channel(false);
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = tokio::select! {
                a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                _ = stopped.changed() => return,
            };
            if count.fetch_add(1, Ordering::SeqCst) > 0 {
                let service = service_fn(|req: Request<Incoming>| async move {
                    let method = req.method().to_string();
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                    resp.headers_mut().insert("x-method", method.parse().expect("method"));
                    resp.headers_mut().insert("x-body", http::HeaderValue::from_bytes(&body).expect("body"));
                    Ok::<_, Infallible>(resp)
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                continue;
            }
            if how == TurnAway::Refuse {
                tokio::spawn(refuse_first(stream));
                continue;
            }
            tokio::spawn(async move {
                // The client's preface, then frames until its first HEADERS.
                let mut preface = [0u8; 24];
                stream.read_exact(&mut preface).await.ok()?;
                stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.ok()?; // SETTINGS
                loop {
                    let mut head = [0u8; 9];
                    stream.read_exact(&mut head).await.ok()?;
                    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                    let mut payload = vec![0u8; len];
                    stream.read_exact(&mut payload).await.ok()?;
                    if head[3] == 4 && head[4] & 1 == 0 {
                        stream.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await.ok()?; // SETTINGS ack
                    }
                    if head[3] == 1 {
                        let id = [head[5] & 0x7f, head[6], head[7], head[8]];
                        // RST_STREAM(INTERNAL_ERROR), or GOAWAY(0, NO_ERROR).
                        let frame: Vec<u8> = if how == TurnAway::Reset {
                            [&[0, 0, 4, 3, 0][..], &id, &[0, 0, 0, 2]].concat()
                        } else {
                            vec![0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
                        };
                        stream.write_all(&frame).await.ok()?;
                        break;
                    }
                }
                // Held open until the client closes it.
                let _ = stream.read_to_end(&mut Vec::new()).await;
                Some(())
            });
            if how == TurnAway::Leave {
                return;
            }
        }
    });
    (addr, accepted, stop)
}

/// Serves an h2c connection with the h2 crate: its first stream is refused
/// (`REFUSED_STREAM`), the next answered as [`h2_turning_away`]'s later
/// connections answer.
async fn refuse_first(stream: tokio::net::TcpStream) -> Option<()> {
    let mut conn = h2::server::handshake(stream).await.ok()?;
    let mut first = true;
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        if std::mem::take(&mut first) {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            continue;
        }
        tokio::spawn(async move {
            let method = req.method().to_string();
            let mut body = req.into_body();
            let mut got = Vec::new();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                got.extend_from_slice(&chunk);
            }
            let resp = Response::builder()
                .header("x-method", method)
                .header("x-body", http::HeaderValue::from_bytes(&got).ok()?)
                .body(())
                .ok()?;
            let mut send = respond.send_response(resp, false).ok()?;
            send.send_data(Bytes::from_static(b"ok"), true).ok()
        });
    }
    Some(())
}

/// Serves `service` over h2c (HTTP/2 prior knowledge) on an ephemeral port
/// until told to stop.
async fn h2c<S, F, B>(service: S) -> (SocketAddr, watch::Sender<bool>)
where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (addr, _, stop) = h2c_counted(None, service).await;
    (addr, stop)
}

/// An upstream over h2c that answers every request 200 (`ok`), counting
/// the connections it accepted.
pub async fn h2_ok() -> (SocketAddr, Arc<AtomicUsize>, watch::Sender<bool>) {
    h2c_counted(None, |_req: Request<Incoming>| async move {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    })
    .await
}

/// An upstream over h2c that allows `max_streams` streams on a connection
/// (`SETTINGS_MAX_CONCURRENT_STREAMS`) and answers no request until
/// `together` are in flight at once (200 `ok`; 503 when they are not within
/// 5 s), counting the connections it accepted.
pub async fn h2_gathering(max_streams: u32, together: usize) -> (SocketAddr, Arc<AtomicUsize>, watch::Sender<bool>) {
    let (arrived, _) = watch::channel(0usize);
    let arrived = Arc::new(arrived);
    h2c_counted(Some(max_streams), move |_req: Request<Incoming>| {
        let arrived = arrived.clone();
        async move {
            arrived.send_modify(|n| *n += 1);
            let mut seen = arrived.subscribe();
            let wait = seen.wait_for(|n| *n >= together);
            let gathered = matches!(tokio::time::timeout(Duration::from_secs(5), wait).await, Ok(Ok(_)));
            let answer = match gathered {
                true => Response::new(Full::new(Bytes::from_static(b"ok"))),
                false => {
                    let mut r = Response::new(Full::new(Bytes::from(format!("only {} of {together}", *seen.borrow()))));
                    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    r
                }
            };
            Ok::<_, Infallible>(answer)
        }
    })
    .await
}

/// [`h2c`], counting the connections it accepted; at most `max_streams`
/// streams a connection when given (hyper's default otherwise).
async fn h2c_counted<S, F, B>(
    max_streams: Option<u32>,
    service: S,
) -> (SocketAddr, Arc<AtomicUsize>, watch::Sender<bool>)
where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, mut stopped) = watch::channel(false);
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                _ = stopped.changed() => return,
            };
            count.fetch_add(1, Ordering::SeqCst);
            let service = service_fn(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(max_streams)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted, stop)
}
