//! The one error type of the request path, classified by kind and origin and
//! mapped to a status code in one place.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use super::body::Body;
use crate::plugin::FaultKind;

/// Where a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Upstream,
    Plugin,
    Gateway,
}

/// A request that could not be served. The `Display` text is for logs; the
/// client gets only [`ProxyError::public_message`] and the request id.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches")]
    NoRoute,
    #[error("bad request path")]
    BadPath,
    #[error("bad Host")]
    BadHost,
    /// A standard method's name in other letters (`delete`, `Get`).
    #[error("a standard method's name in other letters")]
    BadMethod,
    /// `TRACE`, which is not served.
    #[error("TRACE is not served")]
    Trace,
    /// A field overriding the method or URL (`server.override_headers`).
    #[error("`{0}` overrides the request's method or URL")]
    Override(String),
    #[error("request body over the limit of {0} bytes")]
    BodyTooLarge(u64),
    #[error("reading the request body failed: {0}")]
    ClientBody(String),
    #[error("cannot connect to upstream `{upstream}`: {detail}")]
    UpstreamConnect { upstream: Arc<str>, detail: String },
    #[error("upstream `{upstream}` did not answer within {timeout_ms} ms")]
    UpstreamTimeout { upstream: Arc<str>, timeout_ms: u128 },
    #[error("upstream `{upstream}` failed: {detail}")]
    UpstreamProtocol { upstream: Arc<str>, detail: String },
    #[error("upstream `{upstream}` response body over the limit of {limit} bytes")]
    UpstreamBodyTooLarge { upstream: Arc<str>, limit: u64 },
    #[error("plugin `{plugin}` failed ({}): {detail}", kind.as_str())]
    Plugin { plugin: Arc<str>, kind: FaultKind, detail: String },
    #[error("upstream `{upstream}` has no healthy endpoint")]
    NoHealthyEndpoint { upstream: Arc<str> },
    #[error("upstream `{upstream}`: circuit breaker open")]
    BreakerOpen { upstream: Arc<str>, retry_after: Duration },
    #[error("upstream `{upstream}`: concurrency limit and queue full")]
    Overloaded { upstream: Arc<str> },
    #[error("request body not received within {0} ms")]
    BodyTimeout(u128),
    /// The request's timeout ran out while its body was still awaited from
    /// the client.
    #[error("request body not whole within the request's timeout")]
    BodyLate,
    #[error("route `{route}` has no upstream and no plugin answered")]
    NoUpstream { route: Arc<str> },
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::BadPath | Self::BadHost | Self::BadMethod | Self::Override(_) | Self::ClientBody(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            // For any resource: 501 (RFC 9110 §15.6.2), not a 405 owing an `Allow`.
            Self::Trace => StatusCode::NOT_IMPLEMENTED,
            Self::UpstreamConnect { .. } | Self::UpstreamProtocol { .. } | Self::UpstreamBodyTooLarge { .. } => {
                StatusCode::BAD_GATEWAY
            }
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::NoHealthyEndpoint { .. } | Self::BreakerOpen { .. } | Self::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::BodyTimeout(_) | Self::BodyLate => StatusCode::REQUEST_TIMEOUT,
            Self::NoUpstream { .. } => StatusCode::BAD_GATEWAY,
            Self::Plugin { .. } | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn origin(&self) -> Origin {
        match self {
            Self::NoRoute
            | Self::BadPath
            | Self::BadHost
            | Self::BadMethod
            | Self::Override(_)
            | Self::Trace
            | Self::BodyTooLarge(_)
            | Self::ClientBody(_)
            | Self::BodyTimeout(_)
            | Self::BodyLate => Origin::Client,
            Self::NoHealthyEndpoint { .. } | Self::BreakerOpen { .. } | Self::Overloaded { .. } => Origin::Upstream,
            Self::UpstreamConnect { .. }
            | Self::UpstreamTimeout { .. }
            | Self::UpstreamProtocol { .. }
            | Self::UpstreamBodyTooLarge { .. } => Origin::Upstream,
            Self::Plugin { .. } => Origin::Plugin,
            Self::NoUpstream { .. } | Self::Internal(_) => Origin::Gateway,
        }
    }

    /// Whether this failure says something about the upstream's health
    /// (for breakers): a client's oversized or slow body does not.
    pub fn counts_against_upstream(&self) -> bool {
        matches!(
            self,
            Self::UpstreamConnect { .. }
                | Self::UpstreamTimeout { .. }
                | Self::UpstreamProtocol { .. }
                | Self::NoHealthyEndpoint { .. }
        )
    }

    /// `Retry-After` for a 503 the gateway decided itself.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::BreakerOpen { retry_after, .. } => Some((*retry_after).max(Duration::from_secs(1))),
            Self::NoHealthyEndpoint { .. } | Self::Overloaded { .. } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// What the client is told: never internal detail.
    pub fn public_message(&self) -> &'static str {
        match self {
            Self::NoRoute => "no route",
            Self::BadPath => "bad request path",
            Self::BadHost => "bad host",
            Self::BadMethod => "method names are case-sensitive: send standard methods in capitals",
            Self::Trace => "TRACE is not served",
            Self::Override(_) => {
                "fields overriding the method or URL (X-HTTP-Method-Override, X-Original-URL) are refused"
            }
            Self::BodyTooLarge(_) => "request body too large",
            Self::ClientBody(_) => "bad request body",
            Self::UpstreamConnect { .. } | Self::UpstreamProtocol { .. } => "bad gateway",
            Self::UpstreamBodyTooLarge { .. } => "upstream response too large",
            Self::UpstreamTimeout { .. } => "gateway timeout",
            Self::NoHealthyEndpoint { .. } => "no healthy upstream",
            Self::BreakerOpen { .. } => "upstream unavailable (circuit open)",
            Self::Overloaded { .. } => "upstream overloaded",
            Self::BodyTimeout(_) | Self::BodyLate => "request body timeout",
            Self::NoUpstream { .. } => "no upstream for this route",
            Self::Plugin { .. } | Self::Internal(_) => "internal error",
        }
    }

    /// The response the client gets.
    pub fn response(&self, request_id: &HeaderValue) -> Response<Body> {
        let mut resp = error_response(self.status(), self.public_message(), request_id);
        if let Some(after) = self.retry_after() {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// A small JSON error body with the request id, so a client can quote it.
pub fn error_response(status: StatusCode, message: &str, request_id: &HeaderValue) -> Response<Body> {
    let id = request_id.to_str().unwrap_or("-");
    let body = serde_json::json!({ "error": message, "request_id": id }).to_string();
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(super::headers::X_REQUEST_ID, request_id.clone());
    resp
}
