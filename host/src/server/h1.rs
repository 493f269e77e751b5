//! HTTP/1.1 from clients, served in the connection's own task.
//!
//! hyper's server parses each head through its dispatcher, hands the body
//! to the request over a channel and encodes the response through buffers
//! of its own: after the gateway's own upstream client, that was the larger
//! part of what the gateway spent per request beyond nginx. Here the
//! connection's task parses a head out of its read buffer (httparse; the
//! target and the header values are slices of that buffer, not copies),
//! calls the proxy in place, and writes the response head, with a body that
//! is already whole, in one write. A request body is read from the same
//! connection as the upstream side polls it ([`RequestBody`]): while such a
//! body is in flight, the socket and its buffer sit behind a lock that only
//! the two of them take, in turn, on one worker thread; otherwise the
//! connection's task owns them, and takes no lock (`Cell`).
//!
//! What a client may send (RFC 9112) and what it gets:
//! - a head over `max_header_bytes` or with more than `max_headers` headers
//!   gets `431`; one that does not parse, a `Transfer-Encoding` that does
//!   not end in `chunked` (or comes with `Content-Length`, or in HTTP/1.0),
//!   a malformed `Content-Length`, or a `Host` missing (HTTP/1.1) or given
//!   twice gets `400`; a head that does not arrive within
//!   `header_read_timeout` gets `408` (a connection that sent nothing is
//!   just closed). Each of these closes the connection.
//! - `Expect: 100-continue` is answered when the body is first read, so a
//!   request refused on its head never has its body sent.
//! - Requests follow one another on a connection (pipelined ones too);
//!   `Connection: close`, HTTP/1.0 without `keep-alive`, a request body left
//!   unread (unless it is all in the buffer already), or shutdown end it
//!   after the response, which then says `connection: close`.
//! - A response is framed by its body's known length, its
//!   `Content-Length`, or else chunked (close-delimited for HTTP/1.0); the
//!   bodies of `HEAD` responses, 1xx, 204 and 304 are not sent. Trailers go
//!   out only to a client whose `TE` lists `trailers`. `Date` is added
//!   when the response has none.
//! - `101 Switching Protocols` to an upgrade request hands the socket, with
//!   anything the client sent after its head, to the proxy
//!   ([`ClientUpgrade`]); the connection's task lasts until the proxy's
//!   tunnel ends, so a shutdown drains tunnels as it drains requests.
//! - A connection that opens with HTTP/2's preface is handed back to the
//!   caller, for hyper's HTTP/2 server.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::gateway::Shared;
use crate::proxy::body::{Body, BodyError, ClientBody};
use crate::proxy::headers::{ConnectionTokens, Names, PLUGIN_HEADER_ROOM, SpareMap, te_takes_trailers};
use crate::proxy::{self, ConnInfo, Present, Stamp};
use crate::timer;
use crate::upstream::h1::{self as codec, Decode, Framing, Io, Step, worth_parsing};

/// HTTP/2's connection preface: a connection that opens with it is HTTP/2.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The longest request target the `http` crate's `Uri` takes.
const MAX_TARGET: usize = u16::MAX as usize - 1;

/// Header slots parsed on the stack; a larger `max_headers` uses the heap.
const STACK_HEADERS: usize = 128;
/// Response bytes gathered before they are written.
const WRITE_BATCH: usize = 64 * 1024;
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The limits a client's requests are held to (`[server]`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_head: usize,
    pub max_headers: usize,
    /// How long the client may take none of a response.
    pub send_timeout: Duration,
    /// Whether request fields whose names have `_` are kept
    /// (`server.underscores_in_headers`); dropped otherwise.
    pub underscores: bool,
}

/// A failed read of a client's request body.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the request body: {0}")]
    Io(#[source] io::Error),
    #[error("the client closed the connection before the end of the body")]
    Closed,
    #[error("malformed request body: {0}")]
    Malformed(#[source] codec::Error),
    #[error("writing 100 Continue: {0}")]
    Continue(#[source] io::Error),
}

/// The socket and what has been read from it, shared by the connection's
/// task and the body of the request in flight.
struct Conn {
    io: Box<dyn Io>,
    buf: BytesMut,
    /// Where the current request's body is (`Done`: read, or none).
    body: Decode,
    /// `100 Continue` owed to the client: how much of it has been written.
    owed_continue: Option<usize>,
    /// The response write buffer, kept between the connection's responses
    /// (not made anew for each).
    out: BytesMut,
}

/// The connection's [`Conn`]: the task's own while no request body is in
/// flight (most requests have none: no lock, no atomic operation to reach
/// the socket), shared with the body while one is.
enum Cell {
    Own(Conn),
    Shared(Arc<Mutex<Conn>>),
}

impl Cell {
    /// Shared, with a handle for a request body.
    fn share(self) -> (Self, Arc<Mutex<Conn>>) {
        let shared = match self {
            Self::Own(conn) => Arc::new(Mutex::new(conn)),
            Self::Shared(shared) => shared,
        };
        (Self::Shared(shared.clone()), shared)
    }

    /// The task's own again once no body holds it.
    fn settle(self) -> Self {
        match self {
            Self::Shared(shared) if Arc::strong_count(&shared) == 1 => match Arc::try_unwrap(shared) {
                Ok(conn) => Self::Own(conn.into_inner().unwrap_or_else(PoisonError::into_inner)),
                Err(shared) => Self::Shared(shared),
            },
            other => other,
        }
    }

    /// Whether a request body still holds the connection.
    fn held(&self) -> bool {
        matches!(self, Self::Shared(shared) if Arc::strong_count(shared) > 1)
    }
}

/// The connection's [`Conn`], reached.
enum Guard<'a> {
    Own(&'a mut Conn),
    Locked(MutexGuard<'a, Conn>),
}

impl std::ops::Deref for Guard<'_> {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        match self {
            Self::Own(c) => c,
            Self::Locked(c) => c,
        }
    }
}

impl std::ops::DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        match self {
            Self::Own(c) => c,
            Self::Locked(c) => c,
        }
    }
}

fn lock(cell: &mut Cell) -> Guard<'_> {
    match cell {
        Cell::Own(c) => Guard::Own(c),
        Cell::Shared(shared) => Guard::Locked(lock_shared(shared)),
    }
}

fn lock_shared(shared: &Mutex<Conn>) -> MutexGuard<'_, Conn> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves HTTP/1 requests on `io` until the connection ends. A connection
/// that opens with HTTP/2's preface is returned, with the bytes read so
/// far, for an HTTP/2 server.
pub async fn serve(
    io: Box<dyn Io>,
    shared: &Shared,
    info: &Arc<ConnInfo>,
    limits: &Limits,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(Box<dyn Io>, Bytes)> {
    let mut cell =
        Cell::Own(Conn { io, buf: BytesMut::new(), body: Decode::Done, owed_continue: None, out: BytesMut::new() });
    let mut timer = timer::Kept::default();
    let mut first = true;
    let mut spare = SpareMap::default();
    let mut names = Names::default();
    let mut fields = codec::Fields::new();
    // One wait for shutdown for the whole connection, registered once
    // rather than once per request; `watching` tells meanwhile whether it
    // has changed since (a check of its version, not a read under its lock).
    let mut watching = shutdown.clone();
    let mut shutting_down = *watching.borrow_and_update();
    let mut stop = std::pin::pin!(shutdown.changed());
    // Whether nothing of the next request has been read (the last response
    // tells, as it is written).
    let mut idle = true;
    loop {
        cell = cell.settle();
        // Waiting for a request with nothing read yet: shutdown closes the
        // connection now.
        let head = if idle {
            tokio::select! {
                biased;
                head = read_head(&mut cell, limits, &mut timer, first, &mut fields) => head,
                _ = &mut stop => return None,
            }
        } else {
            read_head(&mut cell, limits, &mut timer, first, &mut fields).await
        };
        let (parsed, head) = match head {
            Ok(Head::Request(p, head)) => (p, head),
            Ok(Head::Http2) => return into_parts(cell),
            Ok(Head::Closed) => return None,
            Err(refusal) => {
                refuse(&mut cell, refusal, shared, limits.send_timeout).await;
                return None;
            }
        };
        first = false;
        let (mut req, upgrade, ask, present, body) =
            match request(parsed, &fields, &head, &mut spare, &mut names, limits.underscores) {
                Ok(r) => r,
                Err(status) => {
                    refuse(&mut cell, Refusal::Status(status), shared, limits.send_timeout).await;
                    return None;
                }
            };
        if let Some(body) = body {
            let shared;
            (cell, shared) = cell.share();
            *req.body_mut() = Body::client(body.read_from(shared));
        }
        if fields.capacity() > STACK_HEADERS {
            // One head with many fields keeps no memory on the connection.
            fields = codec::Fields::new();
        }
        // Pinned where it is made: moved into the watch instead, this
        // (large) future was copied once more per request.
        let handling = std::pin::pin!(proxy::handle(shared.current(), info, req, present));
        let Some((resp, stamp)) = unless_client_leaves(&mut cell, limits.max_head, handling).await else {
            tracing::debug!(peer = %info.peer, "the client closed its connection before the response");
            return None;
        };
        if !matches!(watching.has_changed(), Ok(false)) {
            shutting_down = *watching.borrow_and_update();
        }
        match respond(&mut cell, resp, &stamp, &ask, shutting_down, &mut spare, limits.send_timeout).await {
            Ok(Next::KeepAlive { idle: now }) => idle = now,
            Ok(Next::Upgrade) => {
                // The socket goes on alone; if a request body still holds
                // it, the upgrade fails and the connection closes.
                if let Some(tx) = upgrade
                    && let Some((io, read)) = into_parts(cell)
                {
                    let (open, closed) = oneshot::channel();
                    if tx.send((io, read, Tunnel(open))).is_ok() {
                        let _ = closed.await;
                    }
                }
                return None;
            }
            Ok(Next::Close { unread }) => {
                close(&mut cell, limits.send_timeout, unread).await;
                return None;
            }
            // A client that stopped reading, or a response cut off: the
            // socket is let go of, with no TLS `close_notify` (which waits
            // behind what the client does not read, and would tell it a
            // response delimited by the close was whole).
            Err(()) => return None,
        }
    }
}

/// Runs `handling` unless the client closes its connection first (then
/// `None`: the request is dropped, and with it any upstream exchange, as
/// hyper and nginx do). Watched only while no request body is being read
/// from the connection; bytes of a next (pipelined) request are kept, up to
/// `max_head`.
async fn unless_client_leaves<F: Future>(
    cell: &mut Cell,
    max_head: usize,
    mut handling: Pin<&mut F>,
) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = handling.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if cell.held() {
            return Poll::Pending;
        }
        let mut guard = lock(cell);
        let c = &mut *guard;
        while c.body == Decode::Done && c.buf.len() < max_head {
            match codec::poll_fill(&mut c.io, &mut c.buf, cx) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => break,
            }
        }
        Poll::Pending
    })
    .await
}

/// The socket and the bytes read from it and not yet used, when nothing
/// else holds the connection.
fn into_parts(cell: Cell) -> Option<(Box<dyn Io>, Bytes)> {
    let Cell::Own(conn) = cell.settle() else { return None };
    Some((conn.io, conn.buf.freeze()))
}

/// What the client asked of the response.
struct Asked {
    head_only: bool,
    version: Version,
    keep_alive: bool,
    /// A `TE` that lists `trailers`: the client takes trailers in a chunked
    /// body.
    trailers: bool,
}

enum Head {
    Request(Parsed, Bytes),
    Http2,
    /// The client closed (or the socket failed) between requests.
    Closed,
}

/// Why a connection ends without serving a request.
enum Refusal {
    Status(StatusCode),
    /// Nothing to answer: the client sent nothing, or left mid-head.
    Silent,
}

/// The answer to a head over the limit, whose first `max_head` bytes are
/// `start`: 414 when the request line alone does not fit (RFC 9112 §3: a
/// target too long for the server), 431 when the fields make it too large.
fn too_large(start: &[u8]) -> Refusal {
    Refusal::Status(if start.contains(&b'\n') {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    } else {
        StatusCode::URI_TOO_LONG
    })
}

/// Waits for a whole request head in the connection's buffer; where its
/// fields lie goes into `fields`.
async fn read_head(
    cell: &mut Cell,
    limits: &Limits,
    timer: &mut timer::Kept,
    first: bool,
    fields: &mut codec::Fields,
) -> Result<Head, Refusal> {
    // When this head is late; set when it is first waited for.
    let mut deadline = None;
    // How much of the buffer the last parse saw without finding the head's
    // end (0: none yet).
    let mut tried = 0;
    std::future::poll_fn(|cx| {
        let mut guard = lock(cell);
        let c = &mut *guard;
        loop {
            // Empty lines before a request are dropped as they come (a
            // client may send one after a body): kept, each read parsed
            // them again, and endless ones made the buffer grow to the limit.
            if matches!(c.buf.first(), Some(b'\r' | b'\n')) {
                let blank = empty_lines(&c.buf);
                if blank > 0 {
                    c.buf.advance(blank);
                    tried = 0;
                }
            }
            if !c.buf.is_empty() {
                let n = c.buf.len().min(PREFACE.len());
                if first && c.buf[..n] == PREFACE[..n] {
                    if n == PREFACE.len() {
                        return Poll::Ready(Ok(Head::Http2));
                    }
                } else if worth_parsing(&c.buf, tried, limits.max_head) {
                    tried = c.buf.len();
                    match parse(&c.buf, limits.max_headers, fields) {
                        Ok(Some(p)) if p.len > limits.max_head => {
                            return Poll::Ready(Err(too_large(&c.buf[..limits.max_head])));
                        }
                        Ok(Some(p)) => {
                            let head = c.buf.split_to(p.len).freeze();
                            return Poll::Ready(Ok(Head::Request(p, head)));
                        }
                        Ok(None) if c.buf.len() >= limits.max_head => {
                            return Poll::Ready(Err(too_large(&c.buf[..limits.max_head])));
                        }
                        Ok(None) => {}
                        Err(status) => return Poll::Ready(Err(Refusal::Status(status))),
                    }
                }
            }
            match codec::poll_fill(&mut c.io, &mut c.buf, cx) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) if nothing_yet(&c.buf) => {
                    return Poll::Ready(Ok(Head::Closed));
                }
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(Refusal::Silent)),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => {
                    // One timer per connection, not moved on for each head.
                    let deadline = *deadline.get_or_insert_with(|| Instant::now() + limits.header_read_timeout);
                    ready!(timer.poll_passed(cx, deadline));
                    let refusal = if nothing_yet(&c.buf) {
                        Refusal::Silent
                    } else {
                        Refusal::Status(StatusCode::REQUEST_TIMEOUT)
                    };
                    return Poll::Ready(Err(refusal));
                }
            }
        }
    })
    .await
}

/// A parsed request head: where its parts lie in the head's bytes (its
/// fields' places are in a [`codec::Fields`]).
struct Parsed {
    len: usize,
    method: Method,
    target: Range<usize>,
    version: Version,
}

/// The request head at the start of `buf`, if it is all there; where its
/// fields lie goes into `fields`.
fn parse(buf: &[u8], max_headers: usize, fields: &mut codec::Fields) -> Result<Option<Parsed>, StatusCode> {
    if max_headers <= STACK_HEADERS {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
        parse_into(buf, &mut slots[..max_headers], fields)
    } else {
        let mut slots = Vec::with_capacity(max_headers);
        slots.resize_with(max_headers, MaybeUninit::uninit);
        parse_into(buf, &mut slots, fields)
    }
}

fn parse_into<'b>(
    buf: &'b [u8],
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
    fields: &mut codec::Fields,
) -> Result<Option<Parsed>, StatusCode> {
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, buf, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(_) => return Err(StatusCode::BAD_REQUEST),
    };
    let base = buf.as_ptr() as usize;
    let range = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let method = req.method.and_then(|m| Method::from_bytes(m.as_bytes()).ok()).ok_or(StatusCode::BAD_REQUEST)?;
    let target = req.path.map(|p| range(p.as_bytes())).ok_or(StatusCode::BAD_REQUEST)?;
    let version = if req.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    fields.clear();
    fields.extend(req.headers.iter().map(|h| (range(h.name.as_bytes()), range(h.value))));
    Ok(Some(Parsed { len, method, target, version }))
}

type UpgradeSlot = oneshot::Sender<(Box<dyn Io>, Bytes, Tunnel)>;
type UpgradeWait = oneshot::Receiver<(Box<dyn Io>, Bytes, Tunnel)>;

/// Held by an upgraded connection's tunnel while it runs: the client
/// connection's task (which keeps a shutdown waiting, up to
/// `shutdown_timeout`) ends when it is dropped.
#[derive(Debug)]
pub struct Tunnel(#[expect(dead_code, reason = "held for its drop")] oneshot::Sender<()>);

/// A request made from a parsed head (boxed: it is moved a long way), the
/// slot its upgraded connection would go into, what it asks of the
/// response, which fields it has that the proxy would look for
/// ([`Present`]), and its body on the connection, if it has one (the
/// request's own body is empty until that is read from the connection).
type NewRequest = (Box<Request<Body>>, Option<UpgradeSlot>, Asked, Present, Option<BodyToRead>);

/// A request body on the connection, not yet read.
struct BodyToRead {
    decode: Decode,
    expects_continue: bool,
}

impl BodyToRead {
    /// The body, read from the connection `shared` with it.
    fn read_from(self, shared: Arc<Mutex<Conn>>) -> ClientBody {
        {
            let mut c = lock_shared(&shared);
            c.body = self.decode;
            c.owed_continue = self.expects_continue.then_some(0);
        }
        let hint = match self.decode {
            Decode::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        };
        ClientBody::H1(RequestBody { cell: shared, ended: false, hint })
    }
}

/// The request for a parsed head, its body's framing on the connection,
/// and what it asks of the response (read while its fields are, not looked
/// up in the map after).
fn request(
    p: Parsed,
    fields: &codec::Fields,
    head: &Bytes,
    spare: &mut SpareMap,
    names: &mut Names,
    underscores: bool,
) -> Result<NewRequest, StatusCode> {
    // The `http` crate takes no longer target; a `max_header_bytes` over
    // 64 KiB lets one through the head's limit, and it is still too long
    // for this server (RFC 9112 §3), not malformed.
    if p.target.len() > MAX_TARGET {
        return Err(StatusCode::URI_TOO_LONG);
    }
    let uri = Uri::from_maybe_shared(head.slice(p.target)).map_err(|_| StatusCode::BAD_REQUEST)?;
    // Room for what plugins add, without growing the map. (What the proxy
    // adds on the way upstream is written with the head:
    // `headers::Forwarding`.)
    let mut headers = spare.take(fields.len() + PLUGIN_HEADER_ROOM);
    let mut hosts = 0;
    let mut connection = ConnectionTokens::default();
    // Whether a `TE` field lists `trailers`; whether an `Upgrade` field is
    // there.
    let mut trailers = false;
    let mut upgrade_field = false;
    let mut present = Present::NONE;
    let mut length = codec::ContentLength::default();
    for (i, (name, value)) in fields.iter().enumerate() {
        let (name, kind) = names.name(i, &head[name.clone()]).map_err(|_| StatusCode::BAD_REQUEST)?;
        // `X_Forwarded_For` is `X-Forwarded-For` to CGI-style upstreams
        // (Rack, WSGI, PHP): kept, it would stand beside the one this hop
        // sets, or one a plugin sets, and may be read instead (nginx drops
        // them too).
        if kind == Present::UNDERSCORE {
            if !underscores {
                continue;
            }
        } else {
            present |= kind;
        }
        let value = HeaderValue::from_maybe_shared(head.slice(value.clone())).map_err(|_| StatusCode::BAD_REQUEST)?;
        if name == header::HOST {
            hosts += 1;
        } else if name == header::CONTENT_LENGTH {
            length.add(value.as_bytes());
        } else if kind == Present::HOP {
            if name == header::CONNECTION {
                connection.add(value.as_bytes());
            } else if name == header::TE {
                trailers |= te_takes_trailers(value.as_bytes());
            } else if name == header::UPGRADE {
                upgrade_field = true;
            }
        }
        headers.append(name, value);
    }
    // RFC 9112 §3.2: one `Host`, required in HTTP/1.1. Two could be routed
    // by one and read by the upstream as the other.
    if hosts > 1 || (hosts == 0 && p.version == Version::HTTP_11) {
        return Err(StatusCode::BAD_REQUEST);
    }
    let decode = body_framing(p.version, &headers, present, length)?;
    let body = (decode != Decode::Done).then(|| BodyToRead {
        decode,
        expects_continue: p.version == Version::HTTP_11
            && headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue")),
    });
    // An upgrade this connection can make: not in HTTP/1.0 (RFC 9110 §7.8),
    // nor with a body, which would be lost (sent as the new protocol's
    // bytes, or not at all).
    let upgrade = upgrade_field && connection.upgrade && p.version == Version::HTTP_11 && body.is_none();
    let ask = Asked {
        head_only: p.method == Method::HEAD,
        version: p.version,
        keep_alive: connection.keeps_alive(p.version),
        trailers,
    };
    // Boxed where it is made: it goes a long way (to the upstream
    // connection it is written on), and unboxed each layer moved a copy.
    let mut req = Box::new(Request::new(Body::client(ClientBody::Empty)));
    *req.method_mut() = p.method;
    *req.uri_mut() = uri;
    *req.version_mut() = p.version;
    *req.headers_mut() = headers;
    let upgrade = upgrade.then(|| {
        let (tx, rx) = oneshot::channel();
        req.extensions_mut().insert(ClientUpgrade(Arc::new(Mutex::new(Some(rx)))));
        tx
    });
    Ok((req, upgrade, ask, present, body))
}

/// How a request body is delimited (RFC 9112 §6.3), refusing what could be
/// read two ways (request smuggling). Without hop-by-hop fields, it has no
/// `Transfer-Encoding`; `length` was read from its fields as they were.
fn body_framing(
    version: Version,
    headers: &HeaderMap,
    present: Present,
    length: codec::ContentLength,
) -> Result<Decode, StatusCode> {
    if present.may_have(Present::HOP)
        && let Some(coding) = codec::Codings::of(headers).get()
    {
        if coding == codec::Coding::NotChunked
            || version == Version::HTTP_10
            || headers.contains_key(header::CONTENT_LENGTH)
        {
            return Err(StatusCode::BAD_REQUEST);
        }
        // Framed, but still coded (`gzip, chunked`): the gateway cannot
        // undo it, and the upstream would not know (RFC 9112 §6.1).
        if coding == codec::Coding::Others {
            return Err(StatusCode::NOT_IMPLEMENTED);
        }
        return Ok(Decode::ChunkSize);
    }
    match length.get() {
        Ok(Some(0) | None) => Ok(Decode::Done),
        Ok(Some(n)) => Ok(Decode::Length(n)),
        Err(_) => Err(StatusCode::BAD_REQUEST),
    }
}

/// A client's HTTP/1 request body, read from its connection as the
/// upstream side polls it.
pub struct RequestBody {
    cell: Arc<Mutex<Conn>>,
    ended: bool,
    hint: SizeHint,
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody").field("ended", &self.ended).finish()
    }
}

impl RequestBody {
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let mut guard = lock_shared(&self.cell);
        let c = &mut *guard;
        if let Some(sent) = c.owed_continue {
            // Owed only until the body starts coming anyway.
            if c.buf.is_empty()
                && let Err(e) = ready!(write_continue(c, sent, cx))
            {
                self.ended = true;
                return Poll::Ready(Some(Err(BodyError::Client(ReadError::Continue(e)))));
            }
            c.owed_continue = None;
        }
        loop {
            let step = match codec::decode(&mut c.body, &mut c.buf) {
                Ok(s) => s,
                Err(e) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(BodyError::Client(ReadError::Malformed(e)))));
                }
            };
            match step {
                Step::Frame(f) => {
                    if let Some(d) = f.data_ref() {
                        self.hint = match self.hint.exact() {
                            Some(n) => SizeHint::with_exact(n.saturating_sub(d.len() as u64)),
                            None => SizeHint::default(),
                        };
                    }
                    self.ended = c.body == Decode::Done;
                    return Poll::Ready(Some(Ok(f)));
                }
                Step::Again => {}
                Step::End => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
                Step::More => {
                    let failed = match ready!(codec::poll_fill(&mut c.io, &mut c.buf, cx)) {
                        Ok(0) => ReadError::Closed,
                        Ok(_) => continue,
                        Err(e) => ReadError::Io(e),
                    };
                    self.ended = true;
                    return Poll::Ready(Some(Err(BodyError::Client(failed))));
                }
            }
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.ended
    }

    pub fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// Writes what is left of `100 Continue`, from byte `sent` on.
fn write_continue(c: &mut Conn, sent: usize, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    let mut rest = CONTINUE.get(sent..).unwrap_or_default();
    let written = poll_write_out(&mut c.io, &mut rest, cx);
    c.owed_continue = Some(CONTINUE.len() - rest.len());
    written
}

/// The socket of a client whose upgrade request was answered `101`, with
/// what it sent after its head; rides in the request's extensions.
#[derive(Clone)]
pub struct ClientUpgrade(Arc<Mutex<Option<UpgradeWait>>>);

impl std::fmt::Debug for ClientUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientUpgrade")
    }
}

impl ClientUpgrade {
    /// Resolves to the socket once the `101` has gone out (an error if the
    /// connection ended first), with what the client sent after its head
    /// and the [`Tunnel`] to hold while it is used; `None` once taken.
    pub fn take(&self) -> Option<UpgradeWait> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// What the connection does after a response.
enum Next {
    /// `idle`: no bytes of a next request have come yet.
    KeepAlive {
        idle: bool,
    },
    /// `unread`: the request's body, or bytes after it, may not all have
    /// been read.
    Close {
        unread: bool,
    },
    Upgrade,
}

/// Writes a response, keeping its header map in `spare` once written.
/// `Err` when the connection failed, the client took none of it for
/// `send_timeout`, or the body could not be sent whole (the client sees it
/// cut short).
async fn respond(
    cell: &mut Cell,
    resp: Box<Response<Body>>,
    stamp: &Stamp,
    ask: &Asked,
    shutting_down: bool,
    spare: &mut SpareMap,
    send_timeout: Duration,
) -> Result<Next, ()> {
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    let bodiless = crate::proxy::bodiless(ask.head_only, status);
    let framing = if bodiless {
        Framing::Empty
    } else if let Some(n) = body.size_hint().exact() {
        Framing::Length(n)
    } else if let Ok(Some(n)) = codec::content_length(&parts.headers) {
        Framing::Length(n)
    } else if ask.version == Version::HTTP_11 {
        Framing::Chunked
    } else {
        Framing::Close
    };
    let held = cell.held();
    let (mut out, body_read) = {
        let mut c = lock(cell);
        let mut out = std::mem::take(&mut c.out);
        out.clear();
        out.reserve(512);
        if let Some(sent) = c.owed_continue.take()
            && sent > 0
        {
            // A `100 Continue` begun must be finished before anything else.
            out.extend_from_slice(&CONTINUE[sent..]);
        }
        // The request body, if unread and no longer wanted, can be skipped
        // when it is all here; else the connection cannot carry another
        // request.
        let body_read = c.body == Decode::Done || (!held && skip_buffered(&mut c));
        (out, body_read)
    };
    let keep_alive = ask.keep_alive && body_read && !shutting_down && framing != Framing::Close && !upgrade;
    encode_head(&parts, stamp, framing, bodiless, keep_alive, ask.version, &mut out);
    spare.keep(parts.headers);
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    if framing != Framing::Empty {
        let mut trailers = None;
        loop {
            let frame = match &mut body {
                Body::Empty => None,
                Body::Full(b) => b.take().map(|b| Ok(Frame::data(b))),
                _ => std::future::poll_fn(|cx| poll_frame_flushing(&mut body, cell, &mut out, cx)).await?,
            };
            let frame = match frame {
                None => break,
                Some(Ok(f)) => f,
                Some(Err(e)) => {
                    tracing::debug!("response body failed: {e}");
                    let _ = write_all(cell, &mut out, send_timeout).await;
                    return Err(());
                }
            };
            match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) => {
                    match framing {
                        Framing::Chunked => {
                            codec::chunk_size_line(data.len(), &mut out);
                            out.extend_from_slice(&data);
                            out.extend_from_slice(b"\r\n");
                        }
                        Framing::Length(_) => {
                            let n = data.len() as u64;
                            if n > left {
                                tracing::debug!("response body longer than its content-length");
                                let _ = write_all(cell, &mut out, send_timeout).await;
                                return Err(());
                            }
                            left -= n;
                            out.extend_from_slice(&data);
                        }
                        Framing::Close | Framing::Empty => out.extend_from_slice(&data),
                    }
                    if out.len() >= WRITE_BATCH {
                        write_all(cell, &mut out, send_timeout).await?;
                    }
                }
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        if framing == Framing::Chunked {
            out.extend_from_slice(b"0\r\n");
            if let Some(t) = trailers.filter(|_| ask.trailers) {
                codec::encode_headers(&t, &mut out);
            }
            out.extend_from_slice(b"\r\n");
        }
    }
    let idle = write_last(cell, out, send_timeout).await?;
    if left > 0 {
        tracing::debug!("response body shorter than its content-length");
        return Err(());
    }
    Ok(if upgrade {
        Next::Upgrade
    } else if keep_alive {
        Next::KeepAlive { idle }
    } else {
        // A body still held (an upstream's task reading it on) is its
        // reader's, not to be read away.
        Next::Close { unread: (!body_read || !idle) && !held }
    })
}

/// Reads past a request body that is all in the buffer already.
fn skip_buffered(c: &mut Conn) -> bool {
    loop {
        match codec::decode(&mut c.body, &mut c.buf) {
            Ok(Step::End) => return true,
            Ok(Step::Frame(_) | Step::Again) => {}
            Ok(Step::More) | Err(_) => return false,
        }
    }
}

fn encode_head(
    parts: &http::response::Parts,
    stamp: &Stamp,
    framing: Framing,
    bodiless: bool,
    keep_alive: bool,
    version: Version,
    out: &mut BytesMut,
) {
    let status = parts.status;
    status_line(status, out);
    let upgrade = status == StatusCode::SWITCHING_PROTOCOLS;
    let mut dated = false;
    // A bodiless answer to `HEAD`, or a 304, keeps the length the body
    // would have had; otherwise the framing below says it.
    let skip = |name: &http::HeaderName| {
        dated |= name == header::DATE;
        if name == header::CONTENT_LENGTH {
            !(bodiless && crate::proxy::may_state_length(status))
        } else {
            name == header::TRANSFER_ENCODING || (name == header::CONNECTION && !upgrade)
        }
    };
    // This hop's `Via` joins the response's list, its request id replaces
    // the response's.
    stamp.fields().encode(&parts.headers, skip, out);
    if !dated {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    if !upgrade {
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    framing.encode(out);
    out.extend_from_slice(b"\r\n");
}

fn status_line(status: StatusCode, out: &mut BytesMut) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The current time as an HTTP date, formatted once a second per thread.
fn date(out: &mut BytesMut) {
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(c.1.as_bytes());
    });
}

type NextFrame = Option<Result<Frame<Bytes>, BodyError>>;

/// The body's next frame; while it is not ready, what has been gathered
/// goes out, so a slow body never holds back the head.
fn poll_frame_flushing(
    body: &mut Body,
    cell: &mut Cell,
    out: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<Result<NextFrame, ()>> {
    if let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(cx) {
        return Poll::Ready(Ok(frame));
    }
    if !out.is_empty() {
        match poll_write_out(&mut lock(cell).io, out, cx) {
            Poll::Ready(Err(e)) => {
                tracing::debug!("writing to the client: {e}");
                return Poll::Ready(Err(()));
            }
            Poll::Ready(Ok(())) | Poll::Pending => {}
        }
    }
    Poll::Pending
}

/// Writes `out` and flushes, keeping what is not written yet in `out`.
fn poll_write_out(io: &mut Box<dyn Io>, out: &mut impl Buf, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    while out.has_remaining() {
        match ready!(Pin::new(&mut *io).poll_write(cx, out.chunk())) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => out.advance(n),
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    Pin::new(io).poll_flush(cx)
}

/// Writes `out` and flushes, unless the client takes none of it for
/// `stall`.
async fn write_all(cell: &mut Cell, out: &mut BytesMut, stall: Duration) -> Result<(), ()> {
    let mut stalled = Stall::new(stall);
    std::future::poll_fn(|cx| match poll_write_out(&mut lock(cell).io, out, cx) {
        Poll::Pending => stalled.poll(cx, out.remaining()).map(Err),
        done => done,
    })
    .await
    .map_err(write_failed)
}

/// Writes a response's last bytes (unless the client takes none of them
/// for `stall`), and in the same lock keeps the buffer (if small) for the
/// next response and tells whether the connection is idle: no bytes of a
/// next request have come yet.
async fn write_last(cell: &mut Cell, mut out: BytesMut, stall: Duration) -> Result<bool, ()> {
    let mut stalled = Stall::new(stall);
    std::future::poll_fn(|cx| {
        let mut c = lock(cell);
        let c = &mut *c;
        if poll_write_out(&mut c.io, &mut out, cx)?.is_pending() {
            return stalled.poll(cx, out.remaining()).map(Err);
        }
        if out.capacity() <= codec::KEEP_OUT {
            c.out = std::mem::take(&mut out);
        }
        Poll::Ready(Ok(nothing_yet(&c.buf)))
    })
    .await
    .map_err(write_failed)
}

/// Whether `buf` holds nothing of a request yet: at most the empty lines a
/// client may send between requests (after a body, some send a CRLF more),
/// which a server ignores before a request line (RFC 9112 §2.2).
fn nothing_yet(buf: &[u8]) -> bool {
    buf.iter().all(|b| matches!(b, b'\r' | b'\n'))
}

/// The length of the whole empty lines (`\r\n`, or a bare `\n` as httparse
/// takes one) at the start of `buf`.
fn empty_lines(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match buf.get(at..at + 2) {
            Some(b"\r\n") => at += 2,
            _ if buf.get(at) == Some(&b'\n') => at += 1,
            _ => return at,
        }
    }
}

/// A write to a client that may have stopped reading (one holds its
/// connection, and an upstream's, for as long as it is let; nginx's
/// `send_timeout`): ready with an error once the client has taken none of
/// it for `limit`. The timer is made only when the write first waits, and
/// moved on when the client takes some.
struct Stall {
    limit: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// What was left to write when the timer was last set.
    left: usize,
}

impl Stall {
    fn new(limit: Duration) -> Self {
        Self { limit, timer: None, left: 0 }
    }

    /// For a write that waits with `left` bytes to go.
    fn poll(&mut self, cx: &mut Context<'_>, left: usize) -> Poll<io::Error> {
        let timer = match &mut self.timer {
            Some(timer) if left < self.left => {
                timer.as_mut().reset(tokio::time::Instant::now() + self.limit);
                timer
            }
            Some(timer) => timer,
            None => self.timer.insert(Box::pin(tokio::time::sleep(self.limit))),
        };
        self.left = left;
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, format!("the client took nothing for {:?}", self.limit)))
    }
}

fn write_failed(e: io::Error) {
    tracing::debug!("writing to the client: {e}");
}

/// Answers a request that cannot be served, and closes.
async fn refuse(cell: &mut Cell, refusal: Refusal, shared: &Shared, send_timeout: Duration) {
    if let Refusal::Status(status) = refusal {
        shared.current().metrics.refused(status);
        let mut out = BytesMut::with_capacity(128);
        status_line(status, &mut out);
        out.extend_from_slice(b"content-length: 0\r\nconnection: close\r\ndate: ");
        date(&mut out);
        out.extend_from_slice(b"\r\n\r\n");
        if write_all(cell, &mut out, send_timeout).await.is_err() {
            return;
        }
        // What follows a refused head (its body, more of the head) is
        // unread; but a client too slow to send its head (408) is not one to
        // wait for longer.
        return close(cell, send_timeout, status != StatusCode::REQUEST_TIMEOUT).await;
    }
    close(cell, send_timeout, false).await;
}

/// Ends a connection whose last response went out whole: a TLS connection
/// says so (`close_notify`), within `send_timeout` (a client that reads
/// nothing more would hold it for ever). With bytes of the client's
/// possibly `unread`, the connection goes on reading (and dropping) them
/// for up to [`LINGER`] after that, until the client closes its side: a
/// socket closed with bytes unread, or that more arrive at, is reset, and
/// a client still sending (the rest of an upload refused with a 413) may
/// then lose the response to the reset (RFC 9112 §9.6: nginx's lingering
/// close).
async fn close(cell: &mut Cell, send_timeout: Duration, unread: bool) {
    let mut shutdown = std::pin::pin!(std::future::poll_fn(|cx| Pin::new(&mut lock(cell).io).poll_shutdown(cx)));
    // A plain socket shuts down at once: no timer for it.
    if futures::poll!(shutdown.as_mut()).is_pending() && tokio::time::timeout(send_timeout, shutdown).await.is_err() {
        return;
    }
    if !unread {
        return;
    }
    let discard = std::future::poll_fn(|cx| {
        let mut c = lock(cell);
        let c = &mut *c;
        loop {
            c.buf.clear();
            match ready!(codec::poll_fill(&mut c.io, &mut c.buf, cx)) {
                Ok(0) | Err(_) => return Poll::Ready(()),
                Ok(_) => {}
            }
        }
    });
    let _ = tokio::time::timeout(LINGER, discard).await;
}

/// How long a connection closed with a client's bytes unread keeps
/// reading them ([`close`]).
const LINGER: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn empty_lines_before_a_request_are_counted_whole() {
        for (buf, n) in [
            (&b""[..], 0),
            (b"\r\n", 2),
            (b"\n\r\n\r", 3),
            (b"\r\n\r\nGET / HTTP/1.1\r\n", 4),
            (b"\rGET", 0),
            (b"GET", 0),
        ] {
            assert_eq!(empty_lines(buf), n, "{}", String::from_utf8_lossy(buf).escape_debug());
        }
        assert!(nothing_yet(b"\r") && nothing_yet(b"") && !nothing_yet(b"\r\nG"));
    }

    #[test]
    fn a_connection_is_shared_only_while_a_body_holds_it() {
        let (io, _peer) = tokio::io::duplex(64);
        let conn = Conn {
            io: Box::new(io),
            buf: BytesMut::new(),
            body: Decode::Done,
            owed_continue: None,
            out: BytesMut::new(),
        };
        let cell = Cell::Own(conn).settle();
        assert!(matches!(cell, Cell::Own(_)) && !cell.held());
        let (cell, body) = cell.share();
        assert!(cell.held());
        // Still held by the body: it stays shared.
        let cell = cell.settle();
        assert!(matches!(cell, Cell::Shared(_)) && cell.held());
        drop(body);
        let cell = cell.settle();
        assert!(matches!(cell, Cell::Own(_)) && !cell.held());
        assert!(into_parts(cell).is_some());
    }

    #[test]
    fn request_bodies_are_framed_one_way_only() {
        let framing = |v, h: &HeaderMap| body_framing(v, h, Present::ANY, codec::ContentLength::of(h));
        let v11 = Version::HTTP_11;
        assert_eq!(framing(v11, &headers(&[])), Ok(Decode::Done));
        assert_eq!(framing(v11, &headers(&[("content-length", "0")])), Ok(Decode::Done));
        assert_eq!(framing(v11, &headers(&[("content-length", "7, 7")])), Ok(Decode::Length(7)));
        assert_eq!(framing(v11, &headers(&[("transfer-encoding", "chunked")])), Ok(Decode::ChunkSize));
        assert_eq!(framing(v11, &headers(&[("transfer-encoding", " Chunked ")])), Ok(Decode::ChunkSize));
        for coded in [
            headers(&[("transfer-encoding", "gzip, chunked")]),
            headers(&[("transfer-encoding", "gzip"), ("transfer-encoding", "chunked")]),
            headers(&[("transfer-encoding", "chunked, chunked")]),
        ] {
            assert_eq!(framing(v11, &coded), Err(StatusCode::NOT_IMPLEMENTED), "{coded:?}");
        }
        for bad in [
            headers(&[("content-length", "7, 8")]),
            headers(&[("content-length", "-1")]),
            headers(&[("transfer-encoding", "chunked, gzip")]),
            headers(&[("transfer-encoding", "chunked"), ("content-length", "3")]),
            headers(&[("transfer-encoding", ""), ("content-length", "3")]),
            headers(&[("transfer-encoding", " , ")]),
        ] {
            assert_eq!(framing(v11, &bad), Err(StatusCode::BAD_REQUEST), "{bad:?}");
        }
        assert_eq!(
            framing(Version::HTTP_10, &headers(&[("transfer-encoding", "chunked")])),
            Err(StatusCode::BAD_REQUEST)
        );
    }

    /// A head that comes in pieces is parsed again only when it may have
    /// ended, or has doubled: not after every byte.
    #[test]
    fn a_head_in_pieces_is_parsed_again_only_when_it_may_have_ended() {
        let head = b"GET / HTTP/1.1\r\nhost: x\r\nx-long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let mut parses = 0;
        let mut tried = 0;
        for end in 1..=head.len() {
            if worth_parsing(&head[..end], tried, 1 << 16) {
                parses += 1;
                tried = end;
            }
        }
        assert_eq!(tried, head.len(), "parsed once whole");
        assert!(parses <= 9, "{parses} parses of {} pieces", head.len());
        // Either ending, the blank line split across reads.
        assert!(worth_parsing(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", 26, 1 << 16));
        assert!(worth_parsing(b"GET / HTTP/1.1\nhost: x\n\n", 24, 1 << 16));
        assert!(!worth_parsing(b"GET / HTTP/1.1\r\nhost: x\r\nx", 26, 1 << 16));
        assert!(worth_parsing(b"GET / HTTP/1.1\r\nhost: x\r\nx", 26, 20), "at the limit");
    }

    #[test]
    fn heads_parse_or_are_refused() {
        let mut fields = codec::Fields::new();
        let raw = b"GET /a?b HTTP/1.0\r\nHost: x\r\nX-A:  1 \r\n\r\nnext";
        let p = parse(raw, 100, &mut fields).unwrap().unwrap();
        assert_eq!((p.method, p.version, p.len), (Method::GET, Version::HTTP_10, 40));
        let text = |r: &Range<usize>| std::str::from_utf8(&raw[r.clone()]).unwrap();
        let pairs: Vec<_> = fields.iter().map(|(n, v)| (text(n), text(v))).collect();
        assert_eq!(pairs, [("Host", "x"), ("X-A", "1")]);
        assert!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n", 100, &mut fields).unwrap().is_none(), "partial");
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\n\r\n", 1, &mut fields).err(),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\x01: 1\r\n\r\n", 100, &mut fields).err(), Some(StatusCode::BAD_REQUEST));
        // More headers than fit on the stack.
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..200 {
            many.extend_from_slice(format!("x-{i}: {i}\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        parse(&many, 300, &mut fields).unwrap().unwrap();
        assert_eq!(fields.len(), 200, "the fields of this head only");
        assert_eq!(parse(&many, 199, &mut fields).err(), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
    }

    fn head(status: u16, pairs: &[(&'static str, &'static str)], framing: Framing, bodiless: bool) -> String {
        let stamp = Stamp { request_id: HeaderValue::from_static("id-1"), via: None, client_fault: false };
        stamped(status, pairs, &stamp, framing, bodiless)
    }

    fn stamped(
        status: u16,
        pairs: &[(&'static str, &'static str)],
        stamp: &Stamp,
        framing: Framing,
        bodiless: bool,
    ) -> String {
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
        *resp.headers_mut() = headers(pairs);
        let (parts, ()) = resp.into_parts();
        let mut out = BytesMut::new();
        encode_head(&parts, stamp, framing, bodiless, true, Version::HTTP_11, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn the_stamp_goes_out_with_the_head_via_joining_the_list_and_the_id_replacing() {
        let stamp = Stamp {
            request_id: HeaderValue::from_static("id-1"),
            via: Some(HeaderValue::from_static("1.1 wasmgate")),
            client_fault: false,
        };
        let lines = |h: &str| h.split("\r\n").map(str::to_owned).collect::<Vec<_>>();
        let h = stamped(200, &[("x-a", "1")], &stamp, Framing::Length(0), false);
        assert!(lines(&h).contains(&"via: 1.1 wasmgate".to_owned()), "{h}");
        assert!(lines(&h).contains(&"x-request-id: id-1".to_owned()), "{h}");
        // The upstream's list, in the middle of the head or at its end, gets
        // this hop's entry last; the upstream's id gives way to ours.
        for pairs in [
            &[("via", "1.0 fred"), ("via", "1.1 p.example.net"), ("x-request-id", "theirs"), ("x-b", "2")][..],
            &[("x-request-id", "theirs"), ("x-b", "2"), ("via", "1.0 fred"), ("via", "1.1 p.example.net")],
        ] {
            let h = stamped(200, pairs, &stamp, Framing::Length(0), false);
            let l = lines(&h);
            assert!(l.contains(&"via: 1.0 fred, 1.1 p.example.net, 1.1 wasmgate".to_owned()), "{h}");
            assert_eq!(h.matches("via:").count(), 1, "{h}");
            assert!(l.contains(&"x-b: 2".to_owned()), "{h}");
            assert_eq!(h.matches("x-request-id").count(), 1, "{h}");
            assert!(l.contains(&"x-request-id: id-1".to_owned()), "{h}");
        }
        // Without a `Via` of ours (plugins had it in the map), the list is
        // written as it is.
        let h = head(200, &[("via", "1.0 fred, 1.1 wasmgate")], Framing::Length(0), false);
        assert!(lines(&h).contains(&"via: 1.0 fred, 1.1 wasmgate".to_owned()), "{h}");
    }

    #[test]
    fn response_heads_say_their_framing_once() {
        let h = head(200, &[("content-length", "99"), ("transfer-encoding", "chunked")], Framing::Length(3), false);
        assert!(h.starts_with("HTTP/1.1 200 OK\r\n") && h.ends_with("content-length: 3\r\n\r\n"), "{h}");
        assert_eq!(h.matches("content-length").count(), 1, "{h}");
        assert!(!h.contains("transfer-encoding") && h.contains("\r\ndate: "), "{h}");
        // `HEAD` and 304 keep the length the body would have had; 204 has none.
        assert!(head(200, &[("content-length", "10")], Framing::Empty, true).contains("content-length: 10"));
        assert!(head(304, &[("content-length", "10")], Framing::Empty, true).contains("content-length: 10"));
        assert!(!head(204, &[("content-length", "0")], Framing::Empty, true).contains("content-length"));
        let h = head(200, &[("date", "Thu, 03 Dec 2026 00:00:00 GMT")], Framing::Chunked, false);
        assert!(h.ends_with("transfer-encoding: chunked\r\n\r\n") && h.matches("date").count() == 1, "{h}");
        // 101 keeps its `Connection: upgrade`.
        assert!(head(101, &[("connection", "upgrade")], Framing::Empty, true).contains("connection: upgrade"));
    }
}
