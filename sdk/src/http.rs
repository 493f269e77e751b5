//! Outbound HTTP through the gateway (needs `grants.http`): to named
//! upstreams (`upstream://NAME/path`) and granted origins
//! (`https://idp.example.com/...`), over the gateway's pools and timeouts
//! (and a named upstream's breakers). A call waits no longer than the
//! plugin may still wait (its route's timeout). [`send_all`] runs requests
//! concurrently.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;

/// Most requests one [`send_all`] sends (64): those past it fail with
/// [`HttpError::InvalidRequest`]. The gateway's own limit.
pub use wasmgate_common::edit::MAX_SEND_ALL;

/// A request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct OutgoingRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub timeout: Option<Duration>,
}

impl OutgoingRequest {
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        Self { method: method.to_owned(), url: url.into(), headers: Vec::new(), body: Vec::new(), timeout: None }
    }

    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// A response received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl IncomingResponse {
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body).map_err(|e| e.to_string())
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    NotGranted(String),
    InvalidRequest(String),
    Timeout,
    Connect(String),
    TooLarge,
    Unavailable(String),
    Protocol(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotGranted(m) => write!(f, "not granted: {m}"),
            Self::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            Self::Timeout => f.write_str("timed out"),
            Self::Connect(m) => write!(f, "cannot connect: {m}"),
            Self::TooLarge => f.write_str("response too large"),
            Self::Unavailable(m) => write!(f, "unavailable: {m}"),
            Self::Protocol(m) => write!(f, "protocol error: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

#[cfg(target_arch = "wasm32")]
mod backend {
    use super::{HttpError, IncomingResponse, OutgoingRequest};
    use crate::bindings::wasmgate::plugin::http as wit;

    fn out(r: OutgoingRequest) -> wit::OutgoingRequest {
        wit::OutgoingRequest {
            method: r.method,
            url: r.url,
            headers: r.headers,
            body: r.body,
            timeout_ms: r.timeout.map(|t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX)),
        }
    }

    fn back(r: Result<wit::IncomingResponse, wit::HttpError>) -> Result<IncomingResponse, HttpError> {
        match r {
            Ok(r) => Ok(IncomingResponse { status: r.status, headers: r.headers, body: r.body }),
            Err(e) => Err(match e {
                wit::HttpError::NotGranted(m) => HttpError::NotGranted(m),
                wit::HttpError::InvalidRequest(m) => HttpError::InvalidRequest(m),
                wit::HttpError::Timeout => HttpError::Timeout,
                wit::HttpError::Connect(m) => HttpError::Connect(m),
                wit::HttpError::TooLarge => HttpError::TooLarge,
                wit::HttpError::Unavailable(m) => HttpError::Unavailable(m),
                wit::HttpError::Protocol(m) => HttpError::Protocol(m),
            }),
        }
    }

    pub fn send(req: OutgoingRequest) -> Result<IncomingResponse, HttpError> {
        back(wit::send(&out(req)))
    }

    pub fn send_all(reqs: Vec<OutgoingRequest>) -> Vec<Result<IncomingResponse, HttpError>> {
        let reqs: Vec<wit::OutgoingRequest> = reqs.into_iter().map(out).collect();
        wit::send_all(&reqs).into_iter().map(back).collect()
    }
}

#[cfg(not(target_arch = "wasm32"))]
use crate::testing::stand_in::http as backend;

/// Sends one request and waits for the whole response. More than 1 024
/// headers make it [`HttpError::InvalidRequest`].
pub fn send(req: OutgoingRequest) -> Result<IncomingResponse, HttpError> {
    backend::send(req)
}

/// Sends all concurrently; results in the same order. At most
/// [`MAX_SEND_ALL`] (64) are sent: those past the 64th fail with
/// [`HttpError::InvalidRequest`].
pub fn send_all(reqs: Vec<OutgoingRequest>) -> Vec<Result<IncomingResponse, HttpError>> {
    backend::send_all(reqs)
}
