//! The one body type of the proxy, for both directions: nothing, bytes a
//! plugin or the gateway produced, or a streamed body from the other side
//! (optionally capped, so an oversized upload fails mid-stream).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

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
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
}

#[derive(Debug)]
pub enum Body {
    Empty,
    Full(Option<Bytes>),
    Stream(Incoming),
    /// A stream that fails once more than `remaining` bytes have passed.
    Capped {
        inner: Incoming,
        remaining: u64,
        limit: u64,
    },
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() { Self::Empty } else { Self::Full(Some(bytes)) }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut *self {
            Self::Empty => Poll::Ready(None),
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(inner) => Pin::new(inner).poll_frame(cx).map_err(BodyError::from),
            Self::Capped { inner, remaining, limit } => {
                let frame = match Pin::new(inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(f))) => f,
                    other => return other.map_err(BodyError::from),
                };
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

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(b) => b.is_none(),
            Self::Stream(inner) | Self::Capped { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Stream(inner) | Self::Capped { inner, .. } => inner.size_hint(),
        }
    }
}

/// Reads a whole body into memory, refusing more than `limit` bytes.
pub async fn collect(mut body: Incoming, limit: u64) -> Result<Bytes, BodyError> {
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
