//! The one body type of the proxy, for both directions: nothing, bytes a
//! plugin or the gateway produced, or a streamed body from the other side
//! (optionally capped, so an oversized upload fails mid-stream).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;

use super::headers;
use crate::server::h1::{ReadError, RequestBody};
use crate::upstream::bulkhead::Permit;
use crate::upstream::endpoint::Outstanding;
use crate::upstream::h1::{self, ResponseBody};
use crate::upstream::pool::Http2Stream;

/// A streamed request body went over the route's limit.
#[derive(Debug, thiserror::Error)]
#[error("body exceeds the limit of {limit} bytes")]
pub struct TooLarge {
    pub limit: u64,
}

/// Errors a [`Body`] can yield.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// An upstream's HTTP/1 response body failed (closed early, bad chunking).
    #[error(transparent)]
    Upstream(h1::Error),
    /// A client's HTTP/1 request body failed (closed early, bad chunking).
    #[error(transparent)]
    Client(ReadError),
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// The client sent nothing for this many milliseconds mid-body.
    #[error("no body data for {0} ms")]
    Timeout(u128),
    /// The request's time ran out while its body was still awaited from
    /// the client (not while the upstream was slow to take it).
    #[error("the request body was not whole by the request's timeout")]
    Late,
}

#[derive(Debug)]
pub enum Body {
    Empty,
    Full(Option<Bytes>),
    /// An upstream's HTTP/2 response, failing when the upstream sends
    /// nothing for `idle` (its `read_timeout`) in the middle of it.
    Stream {
        inner: Incoming,
        idle: Duration,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        /// Counted on its connection until the body is dropped.
        stream: Http2Stream,
    },
    /// An upstream's HTTP/1 response, which returns its connection to the
    /// pool when it ends.
    Pooled(ResponseBody),
    /// An upstream's response whose request stays counted in flight at its
    /// endpoint (for the balancers that weigh load), and in its upstream's
    /// bulkhead, until the body ends.
    Held {
        inner: Box<Body>,
        outstanding: Option<Outstanding>,
        permit: Option<Permit>,
    },
    /// A client's stream, failing once more than `limit` bytes have passed
    /// or when the client sends nothing for `idle` (slow-body attacks).
    Capped {
        inner: ClientBody,
        remaining: u64,
        limit: u64,
        idle: Duration,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    },
}

/// A client's request body, from either protocol's server.
#[derive(Debug)]
pub enum ClientBody {
    Empty,
    /// From the gateway's own HTTP/1 server.
    H1(RequestBody),
    /// From hyper's HTTP/2 server.
    H2(Incoming),
}

impl ClientBody {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self {
            Self::Empty => Poll::Ready(None),
            Self::H1(b) => b.poll_frame(cx),
            Self::H2(b) => Pin::new(b).poll_frame(cx).map_err(BodyError::from),
        }
    }

    pub fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::H1(b) => b.is_end_stream(),
            Self::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::H1(b) => b.size_hint(),
            Self::H2(b) => b.size_hint(),
        }
    }
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() { Self::Empty } else { Self::Full(Some(bytes)) }
    }

    /// A client's request body as a server hands it to the proxy: nothing
    /// when the client sent none, else a stream the proxy [`cap`](Self::cap)s
    /// once the request's route is known.
    pub fn client(inner: ClientBody) -> Self {
        if inner.is_end_stream() {
            return Self::Empty;
        }
        Self::Capped { inner, remaining: u64::MAX, limit: u64::MAX, idle: Duration::MAX, timer: None }
    }

    /// Holds `permit` (an upstream bulkhead's place) in `resp`'s body until
    /// the body ends; an empty body lets it go at once, but a `101`'s, which
    /// the tunnel that follows takes (see `proxy::upgrade`).
    pub fn hold_permit(resp: &mut http::Response<Body>, permit: Permit) {
        let switching = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
        let body = resp.body_mut();
        if body.is_end_stream() && !switching {
            return;
        }
        match body {
            Self::Held { permit: held, .. } => *held = Some(permit),
            _ => {
                let inner = Box::new(std::mem::replace(body, Self::Empty));
                *body = Self::Held { inner, outstanding: None, permit: Some(permit) };
            }
        }
    }

    /// Caps a client's stream at `max` bytes, failing it when the client
    /// sends nothing for `stall`. Other bodies are left as they are.
    pub fn cap(&mut self, max: u64, stall: Duration) {
        if let Self::Capped { remaining, limit, idle, .. } = self {
            *remaining = max;
            *limit = max;
            *idle = stall;
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut polled = self.get_mut().poll_inner(cx);
        // Trailers pass only with fields a trailer section may carry,
        // whichever way they go.
        if let Poll::Ready(Some(Ok(frame))) = &mut polled
            && let Some(trailers) = frame.trailers_mut()
        {
            headers::strip_trailers(trailers);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(b) => b.is_none(),
            Self::Stream { inner, .. } => inner.is_end_stream(),
            Self::Capped { inner, .. } => inner.is_end_stream(),
            Self::Pooled(inner) => inner.is_end_stream(),
            Self::Held { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Stream { inner, .. } => inner.size_hint(),
            Self::Capped { inner, .. } => inner.size_hint(),
            Self::Pooled(inner) => inner.size_hint(),
            Self::Held { inner, .. } => inner.size_hint(),
        }
    }
}

impl Body {
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self {
            Self::Empty => Poll::Ready(None),
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream { inner, idle, timer, .. } => match Pin::new(inner).poll_frame(cx) {
                Poll::Pending if stalled(timer, *idle, cx) => {
                    Poll::Ready(Some(Err(BodyError::Upstream(h1::Error::Stalled(*idle)))))
                }
                Poll::Pending => Poll::Pending,
                other => {
                    *timer = None;
                    other.map_err(BodyError::from)
                }
            },
            Self::Pooled(inner) => inner.poll_frame(cx),
            Self::Held { inner, outstanding, permit } => {
                let polled = inner.poll_inner(cx);
                // Ended or failed: no longer in flight, whenever the body
                // itself is dropped.
                if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
                    *outstanding = None;
                    *permit = None;
                }
                polled
            }
            Self::Capped { inner, remaining, limit, idle, timer } => {
                let frame = match inner.poll_frame(cx) {
                    Poll::Ready(Some(Ok(f))) => f,
                    Poll::Pending if stalled(timer, *idle, cx) => {
                        return Poll::Ready(Some(Err(BodyError::Timeout(idle.as_millis()))));
                    }
                    Poll::Pending => return Poll::Pending,
                    other => return other.map_err(BodyError::from),
                };
                *timer = None;
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *remaining {
                        return Poll::Ready(Some(Err(TooLarge { limit: *limit }.into())));
                    }
                    *remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }
}

/// Whether a body waiting for its other side has waited `idle` since it
/// last got a frame. The timer is made only while waiting (and cleared on
/// a frame), so a body that keeps flowing never allocates one.
fn stalled(timer: &mut Option<Pin<Box<tokio::time::Sleep>>>, idle: Duration, cx: &mut Context<'_>) -> bool {
    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
    sleep.as_mut().poll(cx).is_ready()
}

/// Reads a whole body into memory, refusing more than `limit` bytes.
pub async fn collect<B>(mut body: B, limit: u64) -> Result<Bytes, BodyError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    BodyError: From<B::Error>,
{
    use http_body_util::BodyExt;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                return Err(TooLarge { limit }.into());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}
