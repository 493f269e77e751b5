//! Upstream servers for the tests: real HTTP servers on ephemeral ports.
//!
//! The echo server answers with a JSON description of the request it got,
//! so a test can check what the gateway forwarded. Some paths misbehave on
//! purpose: `/slow/{ms}` waits before answering, `/status/{code}` answers
//! with that status, `/bytes/{n}` sends n bytes, `/hop` sends hop-by-hop
//! headers the gateway must strip.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// A running test upstream; stops when dropped.
#[derive(Debug)]
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub name: String,
    hits: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl TestUpstream {
    /// Starts an echo server named `name` (it says so in `x-upstream`).
    pub async fn echo(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let (stop, mut stopped) = watch::channel(false);
        let (name_c, hits_c) = (name.to_owned(), hits.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = stopped.changed() => return,
                };
                let (name, hits) = (name_c.clone(), hits_c.clone());
                let service = service_fn(move |req| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    echo(name.clone(), req)
                });
                tokio::spawn(async move {
                    let _ =
                        auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { addr, name: name.to_owned(), hits, stop }
    }

    /// Requests this upstream has received.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn echo(name: String, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut status = StatusCode::OK;
    let mut extra: Vec<(&str, String)> = Vec::new();
    match segs.as_slice() {
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
