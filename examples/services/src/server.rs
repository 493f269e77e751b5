//! What the three services share: the request and reply types, a few JSON
//! and query helpers, and the HTTP server (hyper 1, HTTP/1.1 and HTTP/2).
//!
//! A service is a plain synchronous function from [`Req`] to [`Reply`]; the
//! server reads the body (bounded), calls it, and turns the reply into a JSON
//! response carrying `x-service`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Request bodies larger than this are refused with 413.
const MAX_BODY: usize = 64 * 1024;

/// One of the example services.
pub trait Service: Send + Sync + 'static {
    /// The name in `x-service` and in the logs.
    const NAME: &'static str;
    /// Answers one request. Never fails: errors are replies too.
    fn handle(&self, req: &Req) -> Reply;
}

/// A request, body already read.
#[derive(Debug)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub body: Bytes,
}

impl Req {
    #[cfg(test)]
    pub fn new(method: Method, target: &str) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (target.to_owned(), None),
        };
        Self { method, path, query, body: Bytes::new() }
    }

    /// The path's non-empty segments: `/users/7/` is `["users", "7"]`.
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }

    /// The first value of a query parameter (values are not percent-decoded;
    /// the services only take numbers).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|pair| match pair.split_once('=') {
            Some((k, v)) if k == name => Some(v),
            None if pair == name => Some(""),
            _ => None,
        })
    }
}

/// A JSON reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    /// For 405: the methods the path does take.
    pub allow: Option<&'static str>,
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Self { status: StatusCode::OK, body, allow: None }
    }

    pub fn created(body: Value) -> Self {
        Self { status: StatusCode::CREATED, body, allow: None }
    }

    pub fn error(status: StatusCode, message: &str) -> Self {
        Self { status, body: json!({ "error": message }), allow: None }
    }

    pub fn not_found() -> Self {
        Self::error(StatusCode::NOT_FOUND, "not found")
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self { allow: Some(allow), ..Self::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed") }
    }

    pub fn health(service: &str) -> Self {
        Self::ok(json!({ "status": "ok", "service": service }))
    }

    fn into_response(self, service: &'static str) -> Response<Full<Bytes>> {
        // `{:#}` pretty-prints: the demo shows these bodies in a terminal.
        let mut resp = Response::new(Full::new(Bytes::from(format!("{:#}\n", self.body))));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert("x-service", HeaderValue::from_static(service));
        if let Some(allow) = self.allow {
            h.insert(ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}

/// Formats an amount in cents as a decimal string: 1250 is `"12.50"`.
pub fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Binds `addr` and serves `service` on it in the background; returns the
/// address actually bound (port 0 picks a free one).
pub async fn start<S: Service>(addr: SocketAddr, service: S) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve(listener, Arc::new(service)));
    Ok(local)
}

async fn serve<S: Service>(listener: TcpListener, service: Arc<S>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off and go on.
                tracing::warn!(service = S::NAME, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = service.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let service = service.clone();
                async move { Ok::<_, Infallible>(respond(&*service, req).await) }
            });
            if let Err(e) = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(service = S::NAME, "connection ended: {e}");
            }
        });
    }
}

async fn respond<S: Service>(service: &S, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let reply = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => service.handle(&Req {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            body: collected.to_bytes(),
        }),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Reply::error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        }
        Err(_) => Reply::error(StatusCode::BAD_REQUEST, "could not read the request body"),
    };
    // The gateway's request id ties this line to the gateway's own log.
    let request_id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info!(service = S::NAME, request_id, "{} {} -> {}", parts.method, parts.uri.path(), reply.status.as_u16());
    reply.into_response(S::NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_ignore_empty_parts() {
        assert_eq!(Req::new(Method::GET, "/users/7/").segments(), vec!["users", "7"]);
        assert_eq!(Req::new(Method::GET, "/").segments(), Vec::<&str>::new());
    }

    #[test]
    fn query_params() {
        let req = Req::new(Method::GET, "/orders?user=1&limit=3&flag");
        assert_eq!(req.query_param("user"), Some("1"));
        assert_eq!(req.query_param("limit"), Some("3"));
        assert_eq!(req.query_param("flag"), Some(""));
        assert_eq!(req.query_param("nope"), None);
        assert_eq!(Req::new(Method::GET, "/orders").query_param("user"), None);
    }

    #[test]
    fn money_has_two_decimals() {
        assert_eq!(money(0), "0.00");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(1250), "12.50");
        assert_eq!(money(100_000), "1000.00");
    }

    #[test]
    fn replies_are_json_with_the_service_name() {
        let resp = Reply::method_not_allowed("GET, POST").into_response("users");
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.headers()["x-service"], "users");
        assert_eq!(resp.headers()["allow"], "GET, POST");
    }
}
