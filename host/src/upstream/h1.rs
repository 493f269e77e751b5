//! HTTP/1.1 to upstreams, driven by the request's own task.
//!
//! hyper's client runs each connection as a task of its own and hands every
//! request to it over a channel; its dispatcher then parses the response into
//! a fresh message and hands that back. Under load that was a quarter of the
//! gateway's instructions per proxied request. Here the request's future
//! writes the head straight to the socket and parses the response head out
//! of the connection's read buffer (httparse, header values sliced from the
//! buffer without a copy); the response body reads the same socket as the
//! client's side polls it. A connection is lent to one request at a time and
//! goes back to its worker's idle stack once the body has been read to the
//! end ([`ResponseBody`]); one dropped mid-message is closed.
//!
//! What an upstream may answer, and what the gateway makes of it (RFC 9112):
//! the body of a `HEAD` response or of a 1xx, 204 or 304 is empty;
//! `Transfer-Encoding: chunked` is decoded (trailers included), and a
//! `Content-Length` beside it dropped, its connection then not reused;
//! another transfer coding is refused (the gateway cannot undo it); neither
//! header reads until the upstream closes; `Content-Length` must be one
//! number. Interim 1xx heads are
//! skipped; `101 Switching Protocols` hands the socket to the caller
//! ([`Upgraded`]). A head over [`MAX_HEAD`] bytes or [`MAX_HEADERS`]
//! headers, or anything that does not parse, is a protocol error (502).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use wasmgate_common::decimal::Decimal;

use super::pool::{Return, SendError};
use crate::proxy::Present;
use crate::proxy::body::{Body, BodyError};
use crate::proxy::headers::{self, ConnectionTokens, Forwarding, HopField, Names, SpareMap};
use crate::timer;

/// The largest response head (status line and headers) read from an upstream.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most headers a response head may carry.
pub const MAX_HEADERS: usize = 100;
/// A response body up to this size is read in one go; more in reads of this size.
const READ_CHUNK: usize = 16 * 1024;
/// A request body up to this size goes out in the same write as its head.
const INLINE_BODY: usize = 16 * 1024;
/// The write buffer an idle connection keeps for its next message, at most
/// (the client side's too): a usual head fits, and idle connections stay
/// small.
pub(crate) const KEEP_OUT: usize = 4 * 1024;

/// The socket types a connection runs over.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// The plain TCP socket this is, if it is one.
    fn tcp(&self) -> Option<&tokio::net::TcpStream>;
}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        (self as &dyn std::any::Any).downcast_ref()
    }
}

/// What went wrong on an HTTP/1 exchange with an upstream.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the request: {0}")]
    Write(#[source] io::Error),
    #[error("reading the response: {0}")]
    Read(#[source] io::Error),
    #[error("the connection closed before a response")]
    Closed,
    #[error("the connection closed in the middle of the response head")]
    ClosedMidHead,
    #[error("the connection closed before the end of the body")]
    ClosedMidBody,
    #[error("response head does not parse: {0}")]
    Parse(httparse::Error),
    #[error("response head over {MAX_HEAD} bytes or {MAX_HEADERS} headers")]
    HeadTooLarge,
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    /// The client's body failed while it was being sent on.
    #[error("request body: {0}")]
    Body(#[source] Box<BodyError>),
    #[error("the request body did not match its content-length")]
    BodyLength,
    /// The upstream answered in a way that ends the upload (an error, or an
    /// answer that closes the connection), or closed, while the request
    /// body was still going out (`Connection::poll_answered`).
    #[error("the upstream answered or closed before reading the whole request body")]
    AnsweredEarly,
    /// The try's deadline passed before the response head came.
    #[error("no response before the deadline")]
    TimedOut,
    /// The upstream went silent in the middle of the body for longer than
    /// its `read_timeout`.
    #[error("the upstream sent nothing for {0:?} in the middle of the body")]
    Stalled(std::time::Duration),
}

impl Error {
    fn into_send(self) -> SendError {
        match self {
            Self::TimedOut => SendError::TimedOut,
            e => SendError::Failed(e.into()),
        }
    }
}

/// Keeps an upstream connection counted as open until it is dropped.
struct Counted(Arc<dyn Fn(i64) + Send + Sync>);

impl Drop for Counted {
    fn drop(&mut self) {
        (self.0)(-1);
    }
}

/// One HTTP/1.1 connection to an upstream endpoint.
pub struct Connection {
    io: Box<dyn Io>,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The last request head written, kept for the next one to be written
    /// into: a head (a bearer token is enough) no longer outgrows a new
    /// buffer per request and is copied into a larger one.
    out: BytesMut,
    /// The map of the last request written, for the response read next.
    map: SpareMap,
    /// Where the last response head's fields lay, kept for the next.
    fields: Fields,
    /// The last response head's field names.
    names: Names,
    /// When the response to the request being sent must have come (or,
    /// while a body is read, when its silence is too long).
    deadline: Instant,
    /// How long the upstream may go silent in the middle of a response
    /// body.
    read_timeout: std::time::Duration,
    /// Wakes a request waiting past its deadline; kept from one request to
    /// the next rather than one timer made (and put in tokio's timer wheel)
    /// for each.
    timer: timer::Kept,
    _counted: Counted,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("buffered", &self.buf.len()).finish()
    }
}

/// How a message's body is delimited, on either side (the HTTP/1 server
/// frames its responses with it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (or, for a head-only answer, none sent).
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    Close,
}

impl Framing {
    /// The field that says so in a head (none for `Empty` and `Close`).
    pub(crate) fn encode(self, out: &mut BytesMut) {
        match self {
            Framing::Length(n) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(Decimal::new(n).as_ref());
                out.extend_from_slice(b"\r\n");
            }
            Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            Framing::Empty | Framing::Close => {}
        }
    }
}

impl Connection {
    /// A connection over `io`, counted open with `on_connection(+1)` now and
    /// `-1` when dropped.
    pub fn new(
        io: Box<dyn Io>,
        on_connection: Arc<dyn Fn(i64) + Send + Sync>,
        read_timeout: std::time::Duration,
    ) -> Box<Self> {
        on_connection(1);
        Box::new(Self {
            io,
            buf: BytesMut::new(),
            out: BytesMut::new(),
            map: SpareMap::default(),
            fields: Vec::new(),
            names: Names::default(),
            deadline: Instant::now(),
            read_timeout,
            timer: timer::Kept::default(),
            _counted: Counted(on_connection),
        })
    }

    /// Whether an idle connection can take a request: the upstream has not
    /// closed it and sent nothing unasked. Does not wait.
    pub fn usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        // A plain socket: read only if the runtime has seen it readable
        // (no waker is registered, no syscall made otherwise). Over TLS,
        // what arrives may be the session's own (a ticket), which a read
        // takes in.
        // (`*`: the box is an `Io` too, and not a TCP socket.)
        if let Some(tcp) = (*self.io).tcp() {
            return tcp.try_read(&mut [0; 1]).is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock);
        }
        let mut cx = Context::from_waker(Waker::noop());
        self.poll_fill(&mut cx).is_pending()
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        poll_fill(&mut self.io, &mut self.buf, cx)
    }

    async fn fill(&mut self) -> Result<usize, Error> {
        std::future::poll_fn(|cx| self.timed(cx, |c, cx| c.poll_fill(cx).map_err(Error::Read))).await
    }

    /// A step of sending a request or reading its response's head, which
    /// fails with [`Error::TimedOut`] if it waits past the deadline.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        step: impl FnOnce(&mut Self, &mut Context<'_>) -> Poll<Result<T, Error>>,
    ) -> Poll<Result<T, Error>> {
        match step(self, cx) {
            Poll::Pending => self.timer.poll_passed(cx, self.deadline).map(|()| Err(Error::TimedOut)),
            done => done,
        }
    }

    /// Sends one request and reads the response head, which must come by
    /// `deadline`; the response body gives the connection to `ret` once
    /// read to the end (`None`: the connection is not to be reused).
    /// Returns the response with the time its head was read.
    ///
    /// `kept`: the connection served a request before. If it then closes
    /// (or is reset) before a byte of the answer, the upstream closed it idle
    /// as the request went out and never saw it (RFC 9112 §9.3.1): an
    /// idempotent request without a streamed body comes back as written
    /// ([`SendError::Unanswered`]), to be sent again on a new connection.
    pub async fn send(
        mut self: Box<Self>,
        mut req: Box<Request<Body>>,
        forwarding: Option<&Forwarding<'_>>,
        ret: Option<Return>,
        deadline: Instant,
        kept: bool,
    ) -> Result<(Box<Response<Body>>, Instant), SendError> {
        self.deadline = deadline;
        let framing = request_framing(&req, forwarding.map_or(Present::ANY, Forwarding::present));
        let head_only = matches!(req.method(), &Method::HEAD);
        // Only a request that asks to upgrade may be answered 101 (RFC 9110
        // §7.8); most requests have no hop-by-hop field to look for.
        let may_switch = forwarding.is_none_or(|f| f.present().may_have(Present::HOP))
            && req.headers().contains_key(header::UPGRADE);
        let asked = Asked { head_only, may_switch };
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        encode_head(&req, framing, forwarding, &mut out);
        let streamed = match std::mem::replace(req.body_mut(), Body::Empty) {
            Body::Empty => None,
            Body::Full(Some(b)) if b.len() <= INLINE_BODY => {
                out.extend_from_slice(&b);
                None
            }
            other => Some(other),
        };
        // An idempotent request without a streamed body, on a kept
        // connection the upstream closed, goes again as written (below).
        let again = kept && streamed.is_none() && req.method().is_idempotent();
        // The head (and a small body) in one write. The upstream cannot act
        // on a request it did not get whole, so a failure here hands it back
        // (no body has been read from yet): for another endpoint, or, when
        // the failure is a kept connection the upstream had closed (reset
        // before the pool saw it), again on a new one to this endpoint as
        // if it had been closed as the request went out: the endpoint did
        // not fail.
        match self.write(&out).await {
            Ok(()) => {}
            Err(Error::TimedOut) => return Err(SendError::TimedOut),
            Err(e) => {
                *req.body_mut() = rebuild_body(&out, framing, streamed);
                return Err(match e {
                    // Kept, should no new connection be had: then it is
                    // handed back as any request that did not go out.
                    Error::Write(e) if again && (closed(&e) || e.kind() == io::ErrorKind::BrokenPipe) => {
                        SendError::Unanswered(Unanswered { bytes: out, asked, unsent: Some(req) })
                    }
                    e => SendError::NotSent(req, e.into()),
                });
            }
        }
        self.map.keep(std::mem::take(req.headers_mut()));
        drop(req);
        if again && self.buf.is_empty() {
            match self.fill().await {
                Ok(0) => return Err(SendError::Unanswered(Unanswered { bytes: out, asked, unsent: None })),
                Err(Error::Read(e)) if closed(&e) => {
                    return Err(SendError::Unanswered(Unanswered { bytes: out, asked, unsent: None }));
                }
                Err(e) => return Err(e.into_send()),
                Ok(_) => {}
            }
        }
        if out.capacity() <= KEEP_OUT {
            self.out = out;
        }
        // Boxed: only a streamed body takes this path, and inline its
        // future made every request's future (and each layer above it,
        // copied on every request) ~470 bytes larger.
        if let Some(body) = streamed
            && let Err(e) = Box::pin(self.write_body(body, framing)).await
        {
            if !matches!(e, Error::Write(_) | Error::AnsweredEarly) {
                return Err(e.into_send());
            }
            // An upstream may answer before it has read the whole body (a
            // 413, a 401) and stop reading, or close: that answer is the one
            // to pass on, and the connection is not reused.
            return self.read_response(asked, None).await.map_err(|read| match read {
                Error::TimedOut => SendError::TimedOut,
                _ => SendError::Failed(e.into()),
            });
        }
        self.read_response(asked, ret).await.map_err(Error::into_send)
    }

    /// Sends again, on this new connection, a request a kept one closed
    /// on unanswered ([`Connection::send`]).
    pub async fn resend(
        mut self: Box<Self>,
        again: Unanswered,
        ret: Option<Return>,
        deadline: Instant,
    ) -> Result<(Box<Response<Body>>, Instant), SendError> {
        self.deadline = deadline;
        let Unanswered { bytes, asked, unsent } = again;
        match (self.write(&bytes).await, unsent) {
            (Ok(()), _) => {}
            (Err(e @ Error::TimedOut), _) | (Err(e), None) => return Err(e.into_send()),
            (Err(e), Some(req)) => return Err(SendError::NotSent(req, e.into())),
        }
        if bytes.capacity() <= KEEP_OUT {
            self.out = bytes;
        }
        self.read_response(asked, ret).await.map_err(Error::into_send)
    }

    async fn write(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        std::future::poll_fn(|cx| {
            self.timed(cx, |c, cx| {
                while !bytes.is_empty() {
                    match ready!(Pin::new(&mut c.io).poll_write(cx, bytes)) {
                        Ok(0) => return Poll::Ready(Err(Error::Write(io::ErrorKind::WriteZero.into()))),
                        Ok(n) => bytes = &bytes[n..],
                        Err(e) => return Poll::Ready(Err(Error::Write(e))),
                    }
                }
                Pin::new(&mut c.io).poll_flush(cx).map_err(Error::Write)
            })
        })
        .await
    }

    /// Streams a body the head announced with `framing`.
    async fn write_body(&mut self, mut body: Body, framing: Framing) -> Result<(), Error> {
        let mut remaining = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        let mut chunk_head = BytesMut::with_capacity(32);
        let mut watch = Watch::default();
        // The deadline passing while the body is awaited from the client is
        // the client's doing (a 408), not the upstream's (a 504 held
        // against it, and its breaker).
        let late = |e| match e {
            Error::TimedOut => Error::Body(Box::new(BodyError::Late)),
            e => e,
        };
        // While the body is awaited from the client, the upstream may
        // answer (a 401 or 413 to an upload it will not take): that answer
        // is passed on at once, not once a slow client has sent the rest
        // (or a 408 when the client took longer than the route's timeout).
        while let Some(frame) = std::future::poll_fn(|cx| {
            self.timed(cx, |c, cx| match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(frame) => Poll::Ready(Ok(frame)),
                Poll::Pending => c.poll_answered(cx, &mut watch).map(Err),
            })
        })
        .await
        .map_err(late)?
        {
            let frame = frame.map_err(|e| Error::Body(Box::new(e)))?;
            let data = match frame.into_data() {
                Ok(d) if d.is_empty() => continue,
                Ok(d) => d,
                Err(frame) => {
                    // Trailers go out only where the message can carry them.
                    if framing == Framing::Chunked
                        && let Some(trailers) = frame.trailers_ref()
                    {
                        let mut end = BytesMut::from(&b"0\r\n"[..]);
                        encode_headers(trailers, &mut end);
                        end.extend_from_slice(b"\r\n");
                        return self.send_all(&end[..], &mut watch).await;
                    }
                    continue;
                }
            };
            match framing {
                Framing::Chunked => {
                    chunk_head.clear();
                    chunk_size_line(data.len(), &mut chunk_head);
                    self.send_all(chunk_head.as_ref().chain(data).chain(&b"\r\n"[..]), &mut watch).await?;
                }
                _ => {
                    let len = data.len() as u64;
                    if len > remaining {
                        return Err(Error::BodyLength);
                    }
                    remaining -= len;
                    self.send_all(data, &mut watch).await?;
                }
            }
        }
        match framing {
            Framing::Chunked => self.send_all(&b"0\r\n\r\n"[..], &mut watch).await,
            _ if remaining > 0 => Err(Error::BodyLength),
            _ => self.io.flush().await.map_err(Error::Write),
        }
    }

    /// Writes `buf` out (and flushes), unless the upstream answers while the
    /// socket is full ([`poll_answered`](Self::poll_answered)), so that the
    /// answer can be read rather than waiting on an upstream that stopped
    /// reading. `watch`: the body's, for `poll_answered`.
    async fn send_all(&mut self, mut buf: impl Buf, watch: &mut Watch) -> Result<(), Error> {
        std::future::poll_fn(|cx| {
            self.timed(cx, |c, cx| {
                while buf.has_remaining() {
                    match Pin::new(&mut c.io).poll_write(cx, buf.chunk()) {
                        Poll::Ready(Ok(0)) => return Poll::Ready(Err(Error::Write(io::ErrorKind::WriteZero.into()))),
                        Poll::Ready(Ok(n)) => buf.advance(n),
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Write(e))),
                        Poll::Pending => return c.poll_answered(cx, watch).map(Err),
                    }
                }
                Pin::new(&mut c.io).poll_flush(cx).map_err(Error::Write)
            })
        })
        .await
    }

    /// While a request's body is still going out (and another wait, the
    /// client's or the socket's, has its waker): ready with
    /// [`Error::AnsweredEarly`] once the upstream has answered in a way that
    /// ends the upload — an error (4xx, 5xx), or an answer that closes the
    /// connection — or closed it, for the answer to be read (RFC 9112 §9.5).
    /// Another final answer (a `200` that keeps the connection, from an
    /// upstream that streams its answer as it reads) lets the body go on:
    /// keeping the connection, the upstream will read the body to its end;
    /// the answer is read once the body has gone, and the connection no
    /// longer watched meanwhile. An interim answer (`103 Early Hints`,
    /// `102`, an unasked `100`) is not the answer: it is dropped and the body
    /// goes on (RFC 9110 §15.2), or the upstream, waiting for the rest of
    /// the body, never answers.
    fn poll_answered(&mut self, cx: &mut Context<'_>, watch: &mut Watch) -> Poll<Error> {
        while !watch.goes_on {
            match ready!(self.poll_fill(cx)) {
                Ok(0) => return Poll::Ready(Error::AnsweredEarly),
                Ok(_) => match self.early_answer(&mut watch.tried) {
                    Early::Maybe => {}
                    Early::Ends => return Poll::Ready(Error::AnsweredEarly),
                    Early::GoesOn => watch.goes_on = true,
                },
                Err(e) => return Poll::Ready(Error::Read(e)),
            }
        }
        Poll::Pending
    }

    /// What the upstream has sent so far says of the upload: interim heads
    /// at its start are dropped as they come. (What does not parse ends it,
    /// for [`read_response`](Self::read_response) to refuse.) `tried`: how
    /// much had come at the last parse ([`worth_parsing`]).
    fn early_answer(&mut self, tried: &mut usize) -> Early {
        while worth_parsing(&self.buf, *tried, MAX_HEAD) {
            *tried = self.buf.len();
            match parse_head(&self.buf, &mut self.fields) {
                Ok(Some(p)) if interim(p.status) => {
                    self.buf.advance(p.len);
                    *tried = 0;
                }
                Ok(Some(p)) if p.status.as_u16() < 400 && self.leaves_the_connection(&p) => return Early::GoesOn,
                Ok(Some(_)) | Err(_) => return Early::Ends,
                Ok(None) => break,
            }
        }
        // A head begun: an error ends the upload as soon as its status has
        // come, another answer once its head is whole (its `Connection`).
        // (Not past the head's bound: read as an answer, it is refused.)
        let status = self.buf.get(9..self.buf.len().min(12)).unwrap_or_default();
        match status.first() {
            _ if self.buf.len() >= MAX_HEAD => Early::Ends,
            Some(b'4' | b'5') => Early::Ends,
            Some(b'1' | b'2' | b'3') | None => Early::Maybe,
            Some(_) => Early::Ends,
        }
    }

    /// Whether an answer head, parsed over the start of the buffer (its
    /// fields in `self.fields`), leaves the connection to a next request, as
    /// [`read_response`](Self::read_response) will judge it
    /// ([`Parsed::reusable`]): one whose body runs to the close, or that
    /// will be refused, does not.
    fn leaves_the_connection(&self, p: &Parsed) -> bool {
        let mut length = ContentLength::default();
        for (name, value) in &self.fields {
            if self.buf.get(name.clone()).is_some_and(|n| n.eq_ignore_ascii_case(b"content-length")) {
                length.add(self.buf.get(value.clone()).unwrap_or_default());
            }
        }
        // A request with a body is not a `HEAD`.
        response_framing(false, p.status, p.coding, length).is_ok_and(|framing| p.reusable(framing, &length))
    }

    /// Reads the response head (skipping interim 1xx heads) and frames its
    /// body. The response carries no hop-by-hop field: they are read
    /// (framing, `Connection`) and left out as the head is parsed. Boxed
    /// where it is made, as a request is: it goes a long way.
    async fn read_response(
        mut self: Box<Self>,
        asked: Asked,
        ret: Option<Return>,
    ) -> Result<(Box<Response<Body>>, Instant), Error> {
        // How much of the head had come at the last try ([`worth_parsing`]).
        let mut tried = 0;
        loop {
            let whole = match worth_parsing(&self.buf, tried, MAX_HEAD) {
                true => {
                    tried = self.buf.len();
                    parse_head(&self.buf, &mut self.fields)?
                }
                false => None,
            };
            let parsed = match whole {
                Some(p) => p,
                None => {
                    if self.buf.len() >= MAX_HEAD {
                        return Err(Error::HeadTooLarge);
                    }
                    if self.fill().await? == 0 {
                        return Err(if self.buf.is_empty() { Error::Closed } else { Error::ClosedMidHead });
                    }
                    continue;
                }
            };
            let head = self.buf.split_to(parsed.len).freeze();
            let status = parsed.status;
            if interim(status) {
                tried = 0;
                continue;
            }
            // The one clock reading of the answer: the upstream's latency,
            // the request's end (without plugins) and, when the body came
            // with the head, the connection's idle time all start here.
            let at = Instant::now();
            let (headers, length) = parsed.headers(&self.fields, &head, &mut self.map, &mut self.names)?;
            let framing = response_framing(asked.head_only, status, parsed.coding, length)?;
            let keep_alive = parsed.reusable(framing, &length);
            let mut resp = Box::new(Response::new(Body::Empty));
            *resp.status_mut() = status;
            *resp.version_mut() = parsed.version;
            *resp.headers_mut() = headers;
            if status == StatusCode::SWITCHING_PROTOCOLS {
                if !asked.may_switch {
                    return Err(Error::Invalid("101 Switching Protocols to a request that did not ask to upgrade"));
                }
                // A switch says what to (RFC 9110 §15.2.2): a bare `101`
                // (a status echo, say) has not switched, and the bytes the
                // client sends next would reach it as requests no route or
                // plugin saw.
                let says_to = self.fields.iter().find_map(|(n, v)| {
                    let to = head[v.clone()].trim_ascii();
                    (head[n.clone()].eq_ignore_ascii_case(b"upgrade") && !to.is_empty())
                        .then(|| HeaderValue::from_bytes(to).ok())
                        .flatten()
                });
                let Some(to) = says_to.filter(|_| parsed.connection.upgrade) else {
                    return Err(Error::Invalid("101 Switching Protocols without `Upgrade` and `Connection: upgrade`"));
                };
                resp.headers_mut().insert(header::UPGRADE, to);
                resp.extensions_mut().insert(Upgraded(Arc::new(Mutex::new(Some(self)))));
                return Ok((resp, at));
            }
            let ret = ret.filter(|_| keep_alive);
            *resp.body_mut() = match framing {
                Framing::Empty | Framing::Length(0) => {
                    done(self, ret, at);
                    Body::Empty
                }
                // Already read whole (a small body comes with its head): the
                // connection goes back now.
                Framing::Length(n) if self.buf.len() as u64 >= n => {
                    let body = self.buf.split_to(n as usize).freeze();
                    done(self, ret, at);
                    Body::full(body)
                }
                Framing::Length(n) => Body::Pooled(ResponseBody::new(self, Decode::Length(n), ret)),
                Framing::Chunked => Body::Pooled(ResponseBody::new(self, Decode::ChunkSize, ret)),
                Framing::Close => Body::Pooled(ResponseBody::new(self, Decode::UntilClose, None)),
            };
            return Ok((resp, at));
        }
    }
}

/// Whether a read error is the peer closing (a reset, an abort), not
/// another failure.
fn closed(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::UnexpectedEof)
}

/// A request a kept connection closed on before any answer, as it was
/// written, to be sent again ([`Connection::resend`]).
#[derive(Debug)]
pub struct Unanswered {
    bytes: BytesMut,
    asked: Asked,
    /// The request, when it is known not to have gone out whole (its write
    /// failed): should it not go again, it is handed back
    /// ([`SendError::NotSent`]) for another endpoint.
    unsent: Option<Box<Request<Body>>>,
}

impl Unanswered {
    /// The request, when its write failed (so it did not go out whole).
    pub fn unsent(self) -> Option<Box<Request<Body>>> {
        self.unsent
    }
}

/// What a request asked that decides how its response is read.
#[derive(Debug, Clone, Copy)]
struct Asked {
    /// A `HEAD`: the response has no body, whatever its head says.
    head_only: bool,
    /// It asked to upgrade: a `101` may answer it.
    may_switch: bool,
}

/// Reads what `io` has into `buf` (0: the peer closed).
pub(crate) fn poll_fill(io: &mut Box<dyn Io>, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// The body of a request that could not be sent, as it was before.
fn rebuild_body(out: &BytesMut, framing: Framing, streamed: Option<Body>) -> Body {
    match (streamed, framing) {
        (Some(body), _) => body,
        // A small body went out in the head's buffer: it is that buffer's tail.
        (None, Framing::Length(n)) if n > 0 => {
            let start = out.len().saturating_sub(usize::try_from(n).unwrap_or(usize::MAX));
            Body::full(Bytes::copy_from_slice(&out[start..]))
        }
        (None, _) => Body::Empty,
    }
}

/// A connection whose message was complete at `at` goes back to the pool,
/// or closes.
fn done(conn: Box<Connection>, ret: Option<Return>, at: Instant) {
    if let Some(ret) = ret
        && conn.buf.is_empty()
    {
        ret.give_back(conn, at);
    }
}

/// How a request body is announced (hyper's choices for a client): the
/// body's exact size when known; else the length the client declared; else
/// chunked. A `GET`, `HEAD` or `CONNECT` without a body says nothing.
fn request_framing(req: &Request<Body>, present: Present) -> Framing {
    // Looked up only when the body alone does not tell, and the request may
    // have one.
    let declared = || {
        if present.may_have(Present::CONTENT_LENGTH) { content_length(req.headers()).ok().flatten() } else { None }
    };
    match req.body().size_hint().exact() {
        Some(0) if matches!(*req.method(), Method::GET | Method::HEAD | Method::CONNECT) && declared().is_none() => {
            Framing::Empty
        }
        Some(n) => Framing::Length(n),
        None => declared().map_or(Framing::Chunked, Framing::Length),
    }
}

fn encode_head(req: &Request<Body>, framing: Framing, forwarding: Option<&Forwarding<'_>>, out: &mut BytesMut) {
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(req.uri().path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // The framing is written below, as the body is sent.
    let framing_field = |name: &HeaderName| name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING;
    match forwarding {
        Some(f) => f.encode(req.headers(), framing_field, out),
        None => {
            for (name, value) in req.headers() {
                if !framing_field(name) {
                    push_header(out, name, value);
                }
            }
        }
    }
    framing.encode(out);
    out.extend_from_slice(b"\r\n");
}

pub(crate) fn encode_headers(headers: &HeaderMap, out: &mut BytesMut) {
    for (name, value) in headers {
        push_header(out, name, value);
    }
}

pub(crate) fn push_header(out: &mut BytesMut, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A chunk's size line: `n` in hexadecimal and CRLF.
pub(crate) fn chunk_size_line(mut n: usize, out: &mut BytesMut) {
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Where a head's fields lie in its bytes: (name, value) byte ranges. Kept
/// by a connection from one head to the next.
pub(crate) type Fields = Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>;

/// How a request body's writing watches for an early answer
/// ([`Connection::poll_answered`]).
#[derive(Default)]
struct Watch {
    /// How much of an answer had come at the last look ([`worth_parsing`]).
    tried: usize,
    /// A final answer that lets the upload go on has come: the connection is
    /// not read until the body has gone.
    goes_on: bool,
}

/// What an answer begun before the request's body has gone says of the
/// upload ([`Connection::early_answer`]).
enum Early {
    /// Nothing yet, or not enough to tell.
    Maybe,
    Ends,
    GoesOn,
}

/// A parsed response head (its fields' places are in a [`Fields`]).
struct Parsed {
    len: usize,
    status: StatusCode,
    version: Version,
    /// What its `Connection` fields say.
    connection: ConnectionTokens,
    /// What its `Transfer-Encoding` fields say (`None`: it has none).
    coding: Option<Coding>,
    /// Bit i: field i is hop-by-hop (there are at most [`MAX_HEADERS`]).
    hop: u128,
}

const _: () = assert!(MAX_HEADERS <= u128::BITS as usize);

impl Parsed {
    /// Whether the connection may carry a next request after this answer,
    /// framed by `framing`: not when its body runs to the close or its
    /// `Connection` and version close it. HTTP/1.0 has no transfer
    /// codings: a message with one is faulty, and its connection is not
    /// reused (RFC 9112 §6.1). Nor is one framed both ways: its
    /// `Transfer-Encoding` frames it, but an upstream (or something before
    /// it) that meant the `Content-Length` would take what follows for the
    /// next response (RFC 9112 §6.3, response splitting).
    fn reusable(&self, framing: Framing, length: &ContentLength) -> bool {
        framing != Framing::Close
            && self.connection.keeps_alive(self.version)
            && !(self.coding.is_some() && (self.version == Version::HTTP_10 || length.is_given()))
    }

    /// The head's fields as a map, without the hop-by-hop ones (read
    /// already for framing and keep-alive): the usual `Connection:
    /// keep-alive` costs no map entry made only to be removed, and the
    /// proxy has no hygiene left to do on the response.
    fn headers(
        &self,
        fields: &Fields,
        head: &Bytes,
        spare: &mut SpareMap,
        names: &mut Names,
    ) -> Result<(HeaderMap, ContentLength), Error> {
        // Room for the `Via` and request id the proxy adds, and for what
        // plugins add.
        let mut map = spare.take(fields.len() + 2 + headers::PLUGIN_HEADER_ROOM);
        // Rarely, `Connection` names another header: then everything goes
        // into the map and the hygiene finds what goes with it.
        let named = self.connection.names_other;
        // Places among the fields kept.
        let mut place = 0;
        let mut length = ContentLength::default();
        for (i, (name, value)) in fields.iter().enumerate() {
            if !named && self.hop & (1 << i) != 0 {
                continue;
            }
            let (name, _) = names.name(place, &head[name.clone()]).map_err(|_| Error::Invalid("header name"))?;
            place += 1;
            let value = HeaderValue::from_maybe_shared(head.slice(value.clone()))
                .map_err(|_| Error::Invalid("header value"))?;
            // Read here, as it goes by, rather than looked up after. With a
            // `Transfer-Encoding`, which frames the body, it is dropped: the
            // client must not read the body by it (RFC 9112 §6.3); read
            // still, so that the connection is not used again.
            if name == header::CONTENT_LENGTH {
                length.add(value.as_bytes());
                if self.coding.is_some() {
                    continue;
                }
            }
            map.append(name, value);
        }
        if named {
            headers::strip_hop_by_hop(&mut map);
        }
        Ok((map, length))
    }
}

/// The response head at the start of `buf`, if it is all there; where its
/// fields lie goes into `fields`.
fn parse_head(buf: &[u8], fields: &mut Fields) -> Result<Option<Parsed>, Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Uninitialised: initialising 100 empty headers cost more than parsing a
    // small head.
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut headers) {
        // A read can bring more than the limit: a head that ends past it is
        // as over it as one that has not ended.
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => return Err(Error::HeadTooLarge),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooLarge),
        Err(e) => return Err(Error::Parse(e)),
    };
    let status = resp.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or(Error::Invalid("status code"))?;
    let version = if resp.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let base = buf.as_ptr() as usize;
    let range = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    // One pass: where each field lies, and the hop-by-hop ones read (the
    // framing, keep-alive) and marked to be left out of the map.
    fields.clear();
    let mut connection = ConnectionTokens::default();
    let mut codings = Codings::default();
    let mut hop = 0u128;
    for (i, h) in resp.headers.iter().enumerate() {
        fields.push((range(h.name.as_bytes()), range(h.value)));
        let Some(field) = headers::hop_field(h.name.as_bytes()) else { continue };
        hop |= 1 << i;
        match field {
            HopField::Connection => connection.add(h.value),
            HopField::TransferEncoding => codings.add(h.value),
            HopField::Other => {}
        }
    }
    Ok(Some(Parsed { len, status, version, connection, coding: codings.get(), hop }))
}

/// How the response body is delimited (RFC 9112 §6.3). `coding`: what
/// the head's `Transfer-Encoding` says. A coding other than `chunked` is
/// refused: the gateway cannot undo it, and without the field it drops as
/// hop-by-hop the client would take the coded bytes for the content.
fn response_framing(
    head_only: bool,
    status: StatusCode,
    coding: Option<Coding>,
    length: ContentLength,
) -> Result<Framing, Error> {
    if head_only || status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    match coding {
        Some(Coding::Chunked) => Ok(Framing::Chunked),
        Some(Coding::Others | Coding::NotChunked) => Err(Error::Invalid("a transfer coding other than chunked")),
        None => Ok(length.get()?.map_or(Framing::Close, Framing::Length)),
    }
}

/// What a message's `Transfer-Encoding` says, all its fields together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    /// `chunked`, alone: the one coding the gateway decodes.
    Chunked,
    /// Another coding before a final `chunked` (`gzip, chunked`, or
    /// `chunked` twice): the body is framed, but its content is still
    /// coded, and the gateway cannot undo that.
    Others,
    /// A final coding other than `chunked`: a request cannot be framed; a
    /// response is refused (it would run to the connection's close, and the
    /// gateway cannot undo the coding either).
    NotChunked,
}

/// The codings of a message's `Transfer-Encoding` fields, read one value
/// at a time.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Codings {
    fields: usize,
    count: usize,
    last_chunked: bool,
}

impl Codings {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut codings = Self::default();
        for value in headers.get_all(header::TRANSFER_ENCODING) {
            codings.add(value.as_bytes());
        }
        codings
    }

    pub(crate) fn add(&mut self, value: &[u8]) {
        self.fields += 1;
        for coding in value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|c| !c.is_empty()) {
            self.count += 1;
            self.last_chunked = coding.eq_ignore_ascii_case(b"chunked");
        }
    }

    /// `None`: no `Transfer-Encoding`. An empty one names no final
    /// coding: [`Coding::NotChunked`].
    pub(crate) fn get(self) -> Option<Coding> {
        match (self.count, self.last_chunked) {
            _ if self.fields == 0 => None,
            (1, true) => Some(Coding::Chunked),
            (_, true) => Some(Coding::Others),
            (_, false) => Some(Coding::NotChunked),
        }
    }
}

/// A message's `Content-Length`, strictly: one number (repeated values must
/// agree), or an error.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    ContentLength::of(headers).get()
}

/// A message's `Content-Length`, read from each of its values in turn: one
/// number, however often it is repeated (`7, 7`), or refused.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContentLength(Result<Option<u64>, &'static str>);

impl Default for ContentLength {
    fn default() -> Self {
        Self(Ok(None))
    }
}

impl ContentLength {
    /// From a map's `Content-Length` fields.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut length = Self::default();
        for value in headers.get_all(header::CONTENT_LENGTH) {
            length.add(value.as_bytes());
        }
        length
    }

    /// Reads one more value.
    pub(crate) fn add(&mut self, value: &[u8]) {
        let Ok(length) = &mut self.0 else { return };
        for item in value.split(|&b| b == b',') {
            let Some(n) = decimal(item.trim_ascii()) else {
                self.0 = Err("content-length");
                return;
            };
            if length.is_some_and(|l| l != n) {
                self.0 = Err("content-length values differ");
                return;
            }
            *length = Some(n);
        }
    }

    /// Whether the message had the field at all (valid or not).
    pub(crate) fn is_given(&self) -> bool {
        !matches!(self.0, Ok(None))
    }

    pub(crate) fn get(self) -> Result<Option<u64>, Error> {
        self.0.map_err(Error::Invalid)
    }
}

/// Digits only (no sign, no space), as a number that fits.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// The socket of an upstream that answered `101 Switching Protocols`, with
/// any bytes it sent after the head. Rides in the response's extensions.
#[derive(Clone)]
pub struct Upgraded(Arc<Mutex<Option<Box<Connection>>>>);

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upgraded")
    }
}

impl Upgraded {
    /// The socket and the bytes already read from it; `None` once taken.
    pub fn take(&self) -> Option<(Box<dyn Io>, Bytes)> {
        let conn = self.0.lock().unwrap_or_else(PoisonError::into_inner).take()?;
        let Connection { io, buf, _counted, .. } = *conn;
        // Still counted open while the upgraded stream runs.
        Some((Box::new(CountedIo { io, _counted }), buf.freeze()))
    }
}

/// An upgraded socket that keeps its connection counted open.
struct CountedIo {
    io: Box<dyn Io>,
    _counted: Counted,
}

impl AsyncRead for CountedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Whether a head (or trailer section) that was not whole when `tried`
/// bytes of it had come is worth parsing again now: parsed again from its
/// start after each read, a head sent a byte at a time cost the square of
/// its length (a 64 KiB one, ~2 GiB of scanning). Again when the new
/// bytes may end it, when it has doubled (a malformed start is still
/// found early), or at the limit.
pub(crate) fn worth_parsing(buf: &[u8], tried: usize, max_head: usize) -> bool {
    if tried == 0 || buf.len() >= tried.saturating_mul(2) || buf.len() >= max_head {
        return true;
    }
    // A blank line, `\n\n` or `\n\r\n`, in what came since (and the two
    // bytes before, where one may have begun).
    let new = buf.get(tried.saturating_sub(2)..).unwrap_or_default();
    new.windows(2)
        .enumerate()
        .any(|(i, w)| w[0] == b'\n' && (w[1] == b'\n' || (w[1] == b'\r' && new.get(i + 2) == Some(&b'\n'))))
}

/// Whether a response with `status` is an interim one, to be skipped: 1xx
/// but `101 Switching Protocols` (RFC 9110 §15.2).
fn interim(status: StatusCode) -> bool {
    status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS
}

/// Whether every line of `bytes` ends in CRLF: no LF without its CR.
fn crlf_lines(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, &b)| b != b'\n' || (i > 0 && bytes[i - 1] == b'\r'))
}

/// Where the body decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decode {
    /// This many bytes left.
    Length(u64),
    /// At a chunk-size line.
    ChunkSize,
    /// Inside a chunk, this many bytes left.
    ChunkData(u64),
    /// At the CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailers, then an empty line; `tried`, how
    /// many bytes of them had come at the last try ([`worth_parsing`]).
    Trailers {
        tried: usize,
    },
    UntilClose,
    Done,
}

/// The longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// An upstream's HTTP/1 response body, read from the connection as the
/// client's side polls it; the connection goes back to its pool when the
/// body ends (if the response allows reuse).
pub struct ResponseBody {
    conn: Option<Box<Connection>>,
    decode: Decode,
    ret: Option<Return>,
    /// A read is waiting, since before the connection's deadline minus its
    /// `read_timeout` (the clock is read when a read first waits, not for
    /// every read).
    waiting: bool,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").field("decode", &self.decode).field("returns", &self.ret.is_some()).finish()
    }
}

pub(crate) enum Step {
    Frame(Frame<Bytes>),
    /// Needs more bytes from the socket.
    More,
    /// Decoded something that is not a frame (a chunk's size or end).
    Again,
    End,
}

impl ResponseBody {
    fn new(conn: Box<Connection>, decode: Decode, ret: Option<Return>) -> Self {
        Self { conn: Some(conn), decode, ret, waiting: false }
    }

    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else { return Poll::Ready(None) };
            let step = match decode(&mut self.decode, &mut conn.buf) {
                Ok(s) => s,
                Err(e) => return Poll::Ready(Some(Err(self.fail(e)))),
            };
            match step {
                Step::Frame(f) => {
                    if self.decode == Decode::Done {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(f)));
                }
                Step::Again => {}
                Step::End => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Step::More => match conn.poll_fill(cx) {
                    Poll::Pending => {
                        if !self.waiting {
                            self.waiting = true;
                            conn.deadline = Instant::now() + conn.read_timeout;
                        }
                        let (timer, deadline, stalled) = (&mut conn.timer, conn.deadline, conn.read_timeout);
                        ready!(timer.poll_passed(cx, deadline));
                        return Poll::Ready(Some(Err(self.fail(Error::Stalled(stalled)))));
                    }
                    Poll::Ready(read) => {
                        self.waiting = false;
                        match read {
                            Ok(0) if self.decode == Decode::UntilClose => {
                                self.decode = Decode::Done;
                                self.conn = None;
                                return Poll::Ready(None);
                            }
                            Ok(0) => return Poll::Ready(Some(Err(self.fail(Error::ClosedMidBody)))),
                            Ok(_) => {}
                            Err(e) => return Poll::Ready(Some(Err(self.fail(Error::Read(e))))),
                        }
                    }
                },
            }
        }
    }

    fn finish(&mut self) {
        self.decode = Decode::Done;
        if let Some(conn) = self.conn.take() {
            done(conn, self.ret.take(), Instant::now());
        }
    }

    fn fail(&mut self, e: Error) -> BodyError {
        self.decode = Decode::Done;
        self.conn = None;
        self.ret = None;
        BodyError::Upstream(e)
    }

    pub fn is_end_stream(&self) -> bool {
        self.decode == Decode::Done
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.decode {
            Decode::Length(n) => SizeHint::with_exact(n),
            Decode::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// One step of decoding a body out of `buf`.
pub(crate) fn decode(state: &mut Decode, buf: &mut BytesMut) -> Result<Step, Error> {
    match *state {
        Decode::Done => Ok(Step::End),
        Decode::Length(n) | Decode::ChunkData(n) => {
            if buf.is_empty() {
                return Ok(Step::More);
            }
            let take = usize::try_from(n).map_or(buf.len(), |n| n.min(buf.len()));
            let data = buf.split_to(take).freeze();
            let left = n - take as u64;
            *state = match *state {
                Decode::Length(_) if left == 0 => Decode::Done,
                Decode::Length(_) => Decode::Length(left),
                _ if left == 0 => Decode::ChunkEnd,
                _ => Decode::ChunkData(left),
            };
            Ok(Step::Frame(Frame::data(data)))
        }
        Decode::UntilClose => {
            if buf.is_empty() {
                return Ok(Step::More);
            }
            Ok(Step::Frame(Frame::data(buf.split().freeze())))
        }
        Decode::ChunkSize => {
            let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                return if buf.len() > MAX_CHUNK_LINE {
                    Err(Error::Invalid("chunk size line"))
                } else {
                    Ok(Step::More)
                };
            };
            // CRLF (RFC 9112 §7.1): a bare LF ends the line for some
            // parsers and not for others, which lets a request be read as
            // two by a proxy in front ("funky chunks"); and the line is
            // bounded however it came.
            let line = buf[..end].strip_suffix(b"\r").ok_or(Error::Invalid("chunk size line without CRLF"))?;
            if end > MAX_CHUNK_LINE {
                return Err(Error::Invalid("chunk size line"));
            }
            // `1*HEXDIG`, then nothing or extensions (RFC 9112 §7.1): no
            // sign or spaces before the size (a `+5` another parser may
            // read otherwise), no control bytes in the extensions.
            let (digits, rest) = line.split_at(line.iter().take_while(|b| b.is_ascii_hexdigit()).count());
            let size = std::str::from_utf8(digits)
                .ok()
                .filter(|d| !d.is_empty() && d.len() <= 16)
                .and_then(|d| u64::from_str_radix(d, 16).ok())
                .ok_or(Error::Invalid("chunk size"))?;
            let extensions = &rest[rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count()..];
            let visible = |&b: &u8| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80;
            if !(rest.is_empty() || (extensions.first() == Some(&b';') && extensions.iter().all(visible))) {
                return Err(Error::Invalid("chunk extension"));
            }
            buf.advance(end + 1);
            *state = if size == 0 { Decode::Trailers { tried: 0 } } else { Decode::ChunkData(size) };
            Ok(Step::Again)
        }
        Decode::ChunkEnd => {
            if buf.len() < 2 {
                return Ok(Step::More);
            }
            if &buf[..2] != b"\r\n" {
                return Err(Error::Invalid("chunk not followed by CRLF"));
            }
            buf.advance(2);
            *state = Decode::ChunkSize;
            Ok(Step::Again)
        }
        Decode::Trailers { tried } => {
            if buf.starts_with(b"\r\n") {
                buf.advance(2);
                *state = Decode::Done;
                return Ok(Step::End);
            }
            if !worth_parsing(buf, tried, MAX_HEAD) {
                return Ok(Step::More);
            }
            *state = Decode::Trailers { tried: buf.len() };
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::parse_headers(buf, &mut fields) {
                Ok(httparse::Status::Complete((len, _))) if len > MAX_HEAD => Err(Error::HeadTooLarge),
                // As the chunk lines: a bare LF, which another reader may
                // not take as a line's end, could hide a request after it.
                Ok(httparse::Status::Complete((len, _))) if !crlf_lines(&buf[..len]) => {
                    Err(Error::Invalid("trailer line not ended by CRLF"))
                }
                Ok(httparse::Status::Complete((len, parsed))) => {
                    let mut trailers = HeaderMap::with_capacity(parsed.len());
                    for f in parsed {
                        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| Error::Invalid("trailer"))?;
                        let value = HeaderValue::from_bytes(f.value).map_err(|_| Error::Invalid("trailer"))?;
                        trailers.append(name, value);
                    }
                    buf.advance(len);
                    *state = Decode::Done;
                    Ok(Step::Frame(Frame::trailers(trailers)))
                }
                Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => Ok(Step::More),
                Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => Err(Error::HeadTooLarge),
                Err(e) => Err(Error::Parse(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle connection over loopback and the upstream's end of it.
    async fn idle_pair() -> (Box<Connection>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ours = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (theirs, _) = listener.accept().await.unwrap();
        (Connection::new(Box::new(ours), Arc::new(|_| {}), crate::config::READ_TIMEOUT), theirs)
    }

    /// What an answer that has come before the request's body has gone says
    /// of the upload: an error, or an answer that closes the connection
    /// (by its `Connection`, HTTP/1.0, or a body that runs to the close),
    /// ends it; an answer that frames its body and keeps the connection lets
    /// it go on; an interim one is dropped; a head not whole yet, but for an
    /// error's status, tells nothing yet.
    #[tokio::test]
    async fn an_early_answer_ends_the_upload_only_as_an_error_or_a_close() {
        let (mut conn, _theirs) = idle_pair().await;
        let cases: [(&[u8], &str); 14] = [
            (b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n", "ends"),
            (b"HTTP/1.1 401", "ends"),
            (b"HTTP/1.1 503 Unavailable\r\n", "ends"),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", "goes on"),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", "goes on"),
            (b"HTTP/1.1 204 No Content\r\n\r\n", "goes on"),
            (b"HTTP/1.1 200 OK\r\n\r\n", "ends"),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n", "ends"),
            (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n", "ends"),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 2\r\n\r\n", "ends"),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n", "nothing yet"),
            (b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n", "nothing yet"),
            (b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 404 Not Found\r\n", "ends"),
            (b"HTTP/1.1 abc", "ends"),
        ];
        for (answer, says) in cases {
            conn.buf = BytesMut::from(answer);
            let got = match conn.early_answer(&mut 0) {
                Early::Ends => "ends",
                Early::GoesOn => "goes on",
                Early::Maybe => "nothing yet",
            };
            assert_eq!(got, says, "{}", String::from_utf8_lossy(answer));
        }
    }

    /// Whether the connection is found unusable once the runtime has seen
    /// what happened on its socket (it is asked again as the runtime turns,
    /// for up to 5 s).
    async fn found_unusable(conn: &mut Connection) -> bool {
        for _ in 0..500 {
            if !conn.usable() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn an_idle_connection_is_usable_until_the_upstream_closes_it_or_sends_unasked() {
        let (mut conn, theirs) = idle_pair().await;
        assert!((*conn.io).tcp().is_some());
        assert!(conn.usable(), "open and quiet");
        assert!(conn.usable(), "still");
        drop(theirs);
        assert!(found_unusable(&mut conn).await, "closed by the upstream");

        let (mut conn, mut theirs) = idle_pair().await;
        assert!(conn.usable());
        theirs.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        assert!(found_unusable(&mut conn).await, "bytes nobody asked for");

        // Not a plain socket (here one end of a pipe): read as before.
        let (ours, theirs) = tokio::io::duplex(64);
        let mut conn = Connection::new(Box::new(ours), Arc::new(|_| {}), crate::config::READ_TIMEOUT);
        assert!((*conn.io).tcp().is_none());
        assert!(conn.usable());
        drop(theirs);
        assert!(!conn.usable(), "the pipe's other end closed");
    }

    /// A kept connection the upstream reset before the pool noticed: a
    /// `GET` written on it comes back to go again as written (not as a
    /// connect failure of the endpoint, for another one), a `POST` comes
    /// back unsent, and on a new connection either is unsent.
    #[tokio::test]
    async fn a_write_on_a_kept_connection_the_upstream_reset_goes_again() {
        let deadline = || Instant::now() + std::time::Duration::from_secs(5);
        for (method, kept, again) in
            [(Method::GET, true, true), (Method::POST, true, false), (Method::GET, false, false)]
        {
            let (conn, theirs) = idle_pair().await;
            theirs.set_zero_linger().unwrap();
            drop(theirs);
            // The reset has reached our socket (loopback: at once).
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let req = Box::new(request(method.clone(), Body::Empty, None));
            let sent = conn.send(req, None, None, deadline(), kept).await;
            match sent {
                Err(SendError::Unanswered(u)) => {
                    assert!(again, "{method} kept={kept}: went again");
                    assert!(u.bytes.starts_with(format!("{method} /").as_bytes()), "as written");
                    // Should it not go again, it is handed back, unsent.
                    assert!(u.unsent().is_some_and(|req| req.method() == method));
                }
                Err(SendError::NotSent(req, _)) => assert!(!again, "{method} kept={kept}: unsent: {:?}", req.method()),
                other => panic!("{method} kept={kept}: {:?}", other.map(|_| ())),
            }
        }
    }

    #[tokio::test]
    async fn a_response_head_that_ends_past_the_limit_is_refused() {
        let head = |pad: usize| format!("HTTP/1.1 200 OK\r\nx: {}\r\ncontent-length: 0\r\n\r\n", "a".repeat(pad));
        let fixed = head(0).len();
        for (pad, fits) in [(MAX_HEAD - fixed, true), (MAX_HEAD - fixed + 1, false)] {
            let (conn, mut theirs) = idle_pair().await;
            // All but its last 100 bytes first, then the rest: the read
            // that crosses the limit brings the head's end.
            let bytes = head(pad).into_bytes();
            tokio::spawn(async move {
                let (first, rest) = bytes.split_at(bytes.len() - 100);
                theirs.write_all(first).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                theirs.write_all(rest).await.unwrap();
                theirs
            });
            let req = Box::new(request(Method::GET, Body::Empty, None));
            let sent = conn.send(req, None, None, Instant::now() + std::time::Duration::from_secs(5), false).await;
            match sent {
                Ok(_) => assert!(fits, "a head of {} bytes passed", fixed + pad),
                Err(SendError::Failed(e)) => {
                    assert!(!fits, "a head of exactly the limit was refused: {e}");
                    assert!(matches!(e.downcast_ref::<Error>(), Some(Error::HeadTooLarge)), "{e}");
                }
                Err(_) => panic!("neither answered nor refused"),
            }
        }
    }

    fn decode_all(mut state: Decode, input: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>, Decode, usize), Error> {
        let mut buf = BytesMut::from(input);
        let (mut data, mut trailers) = (Vec::new(), None);
        loop {
            match decode(&mut state, &mut buf)? {
                Step::Frame(f) => match f.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => trailers = f.into_trailers().ok(),
                },
                Step::Again => {}
                Step::More | Step::End => return Ok((data, trailers, state, buf.len())),
            }
        }
    }

    #[test]
    fn chunk_size_lines_are_hex() {
        for n in [0, 1, 15, 16, 255, 4096, usize::MAX] {
            let mut out = BytesMut::new();
            chunk_size_line(n, &mut out);
            assert_eq!(&out[..], format!("{n:x}\r\n").as_bytes());
        }
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let (data, trailers, state, left) =
            decode_all(Decode::ChunkSize, b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\ngrpc-status: 0\r\n\r\n").unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
        assert_eq!((state, left), (Decode::Done, 0));

        let (data, trailers, state, _) = decode_all(Decode::ChunkSize, b"A\r\n0123456789\r\n0\r\n\r\n").unwrap();
        assert_eq!((data.len(), trailers.is_none(), state), (10, true, Decode::Done));
    }

    #[test]
    fn a_chunked_body_cut_short_asks_for_more_and_garbage_is_refused() {
        let (data, _, state, _) = decode_all(Decode::ChunkSize, b"5\r\nhel").unwrap();
        assert_eq!((data.as_slice(), state), (&b"hel"[..], Decode::ChunkData(2)));
        assert!(matches!(decode_all(Decode::ChunkSize, b"zz\r\n"), Err(Error::Invalid("chunk size"))));
        assert!(matches!(decode_all(Decode::ChunkSize, b"2\r\nabXY"), Err(Error::Invalid(_))));
        assert!(decode_all(Decode::ChunkSize, b"11111111111111111\r\n").is_err(), "over 16 hex digits");
        // Only hex digits make a size, and extensions are visible text.
        for bad in
            [&b"+5\r\n"[..], b" 5\r\n", b"\t5\r\n", b"5 \r\n", b"5\r\r\n", b"5;a\x00\r\n", b"5;a\rb\r\n", b"0x5\r\n"]
        {
            assert!(decode_all(Decode::ChunkSize, bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // A bare LF, and a line past the limit even when it ends.
        let long = [&b"5;"[..], &[b'a'; MAX_CHUNK_LINE][..], b"\r\nhello\r\n0\r\n\r\n"].concat();
        for bad in [&b"5\nhello\r\n0\r\n\r\n"[..], b"5\r\nhello\r\n0\n\r\n", &long] {
            assert!(decode_all(Decode::ChunkSize, bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        for good in [&b"5\r\nhello\r\n0\r\n\r\n"[..], b"5 ; a=\"b c\"\r\nhello\r\n0\r\n\r\n"] {
            let (data, _, state, _) = decode_all(Decode::ChunkSize, good).unwrap();
            assert_eq!((data.as_slice(), state), (&b"hello"[..], Decode::Done), "{}", String::from_utf8_lossy(good));
        }
    }

    #[test]
    fn trailers_that_end_past_the_limit_are_refused() {
        let trailers = |pad: usize| format!("0\r\nx: {}\r\n\r\n", "a".repeat(pad));
        let fixed = trailers(0).len() - 3; // the trailers start after "0\r\n"
        let (_, t, state, _) = decode_all(Decode::ChunkSize, trailers(MAX_HEAD - fixed).as_bytes()).unwrap();
        assert_eq!((t.is_some(), state), (true, Decode::Done));
        let over = decode_all(Decode::ChunkSize, trailers(MAX_HEAD - fixed + 1).as_bytes());
        assert!(matches!(over, Err(Error::HeadTooLarge)));
    }

    #[test]
    fn trailer_lines_end_in_crlf_and_trailers_sent_a_byte_at_a_time_are_read() {
        // A bare LF ending the trailer section, or a trailer line: another
        // reader may take the bytes after as the section going on.
        for bad in [&b"0\r\n\nGET /admin HTTP/1.1\r\n\r\n"[..], b"0\r\nx: y\n\r\n", b"0\r\nx: y\r\n\n"] {
            let refused = decode_all(Decode::ChunkSize, bad);
            assert!(matches!(refused, Err(Error::Invalid(_))), "{}: {refused:?}", String::from_utf8_lossy(bad));
        }
        // One byte a read: each read asks for more until the section ends.
        let input = b"0\r\nx-a: 1\r\nx-b: 22\r\n\r\nnext";
        let (mut state, mut buf, mut trailers) = (Decode::ChunkSize, BytesMut::new(), None);
        for &b in input {
            buf.extend_from_slice(&[b]);
            loop {
                match decode(&mut state, &mut buf).unwrap() {
                    Step::Frame(f) => trailers = f.into_trailers().ok(),
                    Step::Again => continue,
                    Step::More | Step::End => break,
                }
            }
        }
        let trailers = trailers.expect("the trailers");
        assert_eq!((trailers["x-a"].as_bytes(), trailers["x-b"].as_bytes()), (&b"1"[..], &b"22"[..]));
        assert_eq!((state, &buf[..]), (Decode::Done, &b"next"[..]));
    }

    #[test]
    fn a_length_body_stops_at_its_length() {
        let (data, _, state, left) = decode_all(Decode::Length(3), b"abcHTTP/1.1").unwrap();
        assert_eq!((data.as_slice(), state, left), (&b"abc"[..], Decode::Done, 8));
    }

    /// A parsed head, its map, and its length as read with the map (the
    /// same as read from the map after).
    fn head(raw: &[u8]) -> (Parsed, HeaderMap, ContentLength) {
        let mut fields = Fields::new();
        let parsed = parse_head(raw, &mut fields).unwrap().unwrap();
        let bytes = Bytes::copy_from_slice(&raw[..parsed.len]);
        let (headers, length) =
            parsed.headers(&fields, &bytes, &mut SpareMap::default(), &mut Names::default()).unwrap();
        if parsed.coding.is_none() {
            assert_eq!(length.0, ContentLength::of(&headers).0);
        }
        (parsed, headers, length)
    }

    /// The framing of a parsed head.
    fn framing(p: &Parsed, length: ContentLength, head_only: bool) -> Result<Framing, Error> {
        response_framing(head_only, p.status, p.coding, length)
    }

    #[test]
    fn response_heads_parse_and_frame_their_bodies() {
        let (p, h, l) = head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nx-a: 2\r\n\r\nok");
        assert_eq!((p.status, p.version, p.len), (StatusCode::OK, Version::HTTP_11, 54));
        assert_eq!(h.get_all("x-a").iter().count(), 2);
        assert_eq!(framing(&p, l, false).unwrap(), Framing::Length(2));
        assert_eq!(framing(&p, l, true).unwrap(), Framing::Empty, "HEAD");
        assert!(p.connection.keeps_alive(p.version));

        let (p, h, l) = head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\n\r\n");
        assert_eq!(framing(&p, l, false).unwrap(), Framing::Chunked, "TE wins over CL");
        assert!(h.get(header::CONTENT_LENGTH).is_none(), "and the CL is dropped, not passed on");
        // Codings the gateway cannot undo: refused, however they are listed.
        for coded in [
            &b"transfer-encoding: gzip, chunked\r\n"[..],
            b"transfer-encoding: gzip\r\n",
            b"Transfer-Encoding: chunked\r\ntransfer-encoding: gzip\r\n",
            b"transfer-encoding: chunked, chunked\r\n",
        ] {
            let (p, _, l) = head(&[&b"HTTP/1.1 200 OK\r\n"[..], coded, b"\r\n"].concat());
            assert!(matches!(framing(&p, l, false), Err(Error::Invalid(_))), "{}", String::from_utf8_lossy(coded));
            assert_eq!(framing(&p, l, true).unwrap(), Framing::Empty, "HEAD: no body to decode");
        }
        let (p, _, l) = head(b"HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!(framing(&p, l, false).unwrap(), Framing::Close);
        assert!(!p.connection.keeps_alive(p.version), "HTTP/1.0 closes unless asked");
        let (p, _, l) = head(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n");
        assert_eq!(framing(&p, l, false).unwrap(), Framing::Empty);
        let (p, _, l) = head(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\ncontent-length: 1, 1\r\n\r\n");
        assert_eq!(framing(&p, l, false).unwrap(), Framing::Length(1));
        assert!(!p.connection.keeps_alive(p.version));
        // `close` wins over `keep-alive` in HTTP/1.0 too (RFC 9112 §9.3), in
        // one field or two.
        for raw in [
            &b"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\n\r\n"[..],
            b"HTTP/1.0 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
        ] {
            let (p, _, _) = head(raw);
            assert!(!p.connection.keeps_alive(p.version), "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn hop_by_hop_fields_are_read_at_parse_and_never_reach_the_map() {
        let raw = b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\n\
            Transfer-Encoding: chunked\r\nTrailer: x-t\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\n\r\n";
        let (p, h, _) = head(raw);
        assert!(p.connection.keeps_alive(p.version), "HTTP/1.0 asked to keep alive");
        assert_eq!(p.coding, Some(Coding::Chunked));
        let names: Vec<_> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-a"], "nothing in the map only to be removed");

        // What `Connection` names goes too.
        let raw = b"HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nKeep-Alive: timeout=5\r\nX-Secret: 1\r\n\
            X-B: 2\r\n\r\n";
        let (p, h, _) = head(raw);
        assert!(!p.connection.keeps_alive(p.version));
        assert!(p.connection.names_other);
        let names: Vec<_> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-b"]);
    }

    #[test]
    fn bad_response_heads_are_refused() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-len", &mut Fields::new()).unwrap().is_none(), "partial");
        assert!(matches!(parse_head(b"HTTP/9.9 200 OK\r\n\r\n", &mut Fields::new()), Err(Error::Parse(_))));
        assert!(parse_head(b"HTTP/1.1 2000 OK\r\n\r\n", &mut Fields::new()).is_err());
        let (p, _, l) = head(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n");
        assert!(framing(&p, l, false).is_err(), "differing lengths");
        for bad in ["-1", "+1", "1 2", "0x10", "1,", "", "18446744073709551616"] {
            let (p, _, l) = head(format!("HTTP/1.1 200 OK\r\ncontent-length: {bad}\r\n\r\n").as_bytes());
            assert!(framing(&p, l, false).is_err(), "{bad:?}");
        }
        let (p, _, l) = head(b"HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551615\r\n\r\n");
        assert_eq!(framing(&p, l, false).unwrap(), Framing::Length(u64::MAX));
        let many: Vec<u8> = [&b"HTTP/1.1 200 OK\r\n"[..], &b"a: b\r\n".repeat(MAX_HEADERS + 1), b"\r\n"].concat();
        assert!(matches!(parse_head(&many, &mut Fields::new()), Err(Error::HeadTooLarge)));
    }

    fn request(method: Method, body: Body, declared: Option<&str>) -> Request<Body> {
        let mut r = Request::new(body);
        *r.method_mut() = method;
        *r.uri_mut() = http::Uri::from_static("/a/b?x=1");
        r.headers_mut().insert(header::HOST, HeaderValue::from_static("up"));
        r.headers_mut().insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        if let Some(d) = declared {
            r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_str(d).unwrap());
        }
        r
    }

    #[test]
    fn request_heads_announce_their_bodies() {
        let head = |r: &Request<Body>| {
            let mut out = BytesMut::new();
            encode_head(r, request_framing(r, Present::ANY), None, &mut out);
            String::from_utf8(out.to_vec()).unwrap()
        };
        let get = request(Method::GET, Body::Empty, None);
        assert_eq!(head(&get), "GET /a/b?x=1 HTTP/1.1\r\nhost: up\r\n\r\n");
        let post = request(Method::POST, Body::Empty, None);
        assert_eq!(head(&post), "POST /a/b?x=1 HTTP/1.1\r\nhost: up\r\ncontent-length: 0\r\n\r\n");
        let put = request(Method::PUT, Body::full("hello"), Some("99"));
        assert_eq!(
            head(&put),
            "PUT /a/b?x=1 HTTP/1.1\r\nhost: up\r\ncontent-length: 5\r\n\r\n",
            "the body's size wins"
        );
        let mut long = request(Method::DELETE, Body::Empty, None);
        long.headers_mut().insert(header::AUTHORIZATION, HeaderValue::from_str(&"t".repeat(900)).unwrap());
        long.headers_mut().append("x-many", HeaderValue::from_static("1"));
        long.headers_mut().append("x-many", HeaderValue::from_static("2"));
        let text = head(&long);
        assert!(text.contains("x-many: 1\r\nx-many: 2\r\n"), "{text}");
        assert_eq!(Decimal::new(0).as_ref(), b"0");
        assert_eq!(Decimal::new(u64::MAX).as_ref(), u64::MAX.to_string().as_bytes());
    }

    #[test]
    fn the_framing_looks_for_a_declared_length_only_where_there_may_be_one() {
        // A GET's declared `Content-Length: 0` is kept when the request may
        // have one, and not looked for when its server read none.
        let get = request(Method::GET, Body::Empty, Some("0"));
        assert_eq!(request_framing(&get, Present::ANY), Framing::Length(0));
        assert_eq!(request_framing(&get, Present::CONTENT_LENGTH), Framing::Length(0));
        assert_eq!(request_framing(&get, Present::HOP | Present::REQUEST_ID), Framing::Empty);
        // A body of known size needs no lookup: it is its own length.
        let post = request(Method::POST, Body::full("hello"), Some("5"));
        assert_eq!(request_framing(&post, Present::NONE), Framing::Length(5));
        assert_eq!(request_framing(&request(Method::GET, Body::Empty, None), Present::ANY), Framing::Empty);
        assert_eq!(request_framing(&request(Method::DELETE, Body::Empty, None), Present::NONE), Framing::Length(0));
    }

    #[test]
    fn a_small_body_sent_with_its_head_comes_back_whole() {
        let req = request(Method::POST, Body::full("hello"), None);
        let framing = request_framing(&req, Present::ANY);
        let mut out = BytesMut::new();
        encode_head(&req, framing, None, &mut out);
        out.extend_from_slice(b"hello");
        let Body::Full(Some(b)) = rebuild_body(&out, framing, None) else { panic!("not a full body") };
        assert_eq!(b, "hello");
    }
}
