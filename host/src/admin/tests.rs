use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderMap;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;
use crate::telemetry::Metrics;

/// The tests whose listener refuses requests, one at a time: the refusal's
/// log line is a callsite that the first to hit it registers, and one
/// registered on another test's thread while the test that captures the
/// logs sets its subscriber up may be cached as wanted by none — those
/// refusals then went unlogged and that test failed, now and then.
static REFUSING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct TestState {
    ready: AtomicBool,
    stalled: AtomicBool,
    metrics: Metrics,
}

impl AdminState for TestState {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn metrics(&self) -> String {
        self.metrics.encode()
    }

    fn live(&self) -> bool {
        !self.stalled.load(Ordering::SeqCst)
    }
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(token: Option<&str>, state: Arc<dyn AdminState>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = AdminConfig { listen: addr, token: token.map(|t| Secret::new(t.to_owned())) };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, config, state, async {
            let _ = stopped.await;
        }));
        Self { addr, stop: Some(stop), task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Signals shutdown and waits for `serve` to return.
    async fn stop(mut self, within: Duration) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).unwrap();
        }
        tokio::time::timeout(within, self.task).await.expect("serve did not return in time").unwrap();
    }
}

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn call(method: Method, url: &str, auth: Option<&str>) -> (StatusCode, HeaderMap, String) {
    call_with(&client(), method, url, auth).await
}

async fn call_with(
    client: &Client<HttpConnector, Empty<Bytes>>,
    method: Method,
    url: &str,
    auth: Option<&str>,
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(auth) = auth {
        req = req.header(header::AUTHORIZATION, auth);
    }
    let resp = client.request(req.body(Empty::new()).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8(body.to_vec()).unwrap())
}

const TOKEN: &str = "s3cret-admin-token";

fn state() -> Arc<TestState> {
    Arc::new(TestState { ready: AtomicBool::new(false), stalled: AtomicBool::new(false), metrics: Metrics::new() })
}

#[tokio::test]
async fn health_flips_with_readiness_and_metrics_serve_recorded_series() {
    let state = state();
    state.metrics.request("users", None, &Method::GET, 200, Duration::from_millis(4));
    let server = Server::start(None, state.clone()).await;

    let (status, headers, body) = call(Method::GET, &server.url("/health/live"), None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"status":"live"}"#));
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    // A worker stalled: not live, so an orchestrator restarts the process.
    state.stalled.store(true, Ordering::SeqCst);
    let (status, _, body) = call(Method::GET, &server.url("/health/live"), None).await;
    assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"stalled"}"#));
    state.stalled.store(false, Ordering::SeqCst);

    let (status, _, body) = call(Method::GET, &server.url("/health/ready"), None).await;
    assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"not ready"}"#));
    state.ready.store(true, Ordering::SeqCst);
    let (status, _, body) = call(Method::GET, &server.url("/health/ready"), None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"status":"ready"}"#));
    state.ready.store(false, Ordering::SeqCst);
    let (status, _, _) = call(Method::GET, &server.url("/health/ready"), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "draining takes the gateway out of rotation");

    let (status, headers, body) = call(Method::GET, &server.url("/metrics?name[]=x"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], OPENMETRICS);
    assert!(body.contains("wasmgate_requests_total{route=\"users\",method=\"GET\",status=\"200\"} 1\n"), "{body}");
    assert!(body.ends_with("# EOF\n"));

    server.stop(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_405() {
    let server = Server::start(None, state()).await;
    for path in ["/", "/nope", "/metrics/", "/health", "/health/live/x"] {
        let (status, _, _) = call(Method::GET, &server.url(path), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::HEAD] {
        let (status, headers, _) = call(method.clone(), &server.url("/metrics"), None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(headers[header::ALLOW], "GET");
    }
    let (status, _, _) = call(Method::POST, &server.url("/nope"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop(Duration::from_secs(2)).await;
}

/// Collects everything logged, to look for the token in it.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_bearer_token_is_required_checked_and_never_echoed() {
    let _alone = REFUSING.lock().await;
    // The default runtime is single-threaded: the server's tasks log on this
    // thread, into this subscriber.
    let logs = Capture::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // A callsite first hit by a parallel test, with no subscriber that
    // wants it, may have cached "never" as this one was being registered:
    // asked again now, it is "sometimes" (the refusals went unlogged).
    tracing::callsite::rebuild_interest_cache();

    let state = state();
    state.ready.store(true, Ordering::SeqCst);
    let server = Server::start(Some(TOKEN), state).await;
    let refused = [
        None,
        Some(""),
        Some("Bearer"),
        Some("Bearer "),
        Some("Bearer wrong"),
        Some("Bearer s3cret-admin-toke"),
        Some("Bearer s3cret-admin-token-and-more"),
        Some("Bearer  s3cret-admin-tokeN"),
        Some("Basic czNjcmV0LWFkbWluLXRva2Vu"),
        Some("s3cret-admin-token"),
    ];
    for auth in refused {
        for path in ["/metrics", "/health/live", "/nope"] {
            let (status, headers, body) = call(Method::GET, &server.url(path), auth).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?} {path}");
            assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
            assert!(!body.contains(TOKEN));
        }
    }
    for auth in ["Bearer s3cret-admin-token", "bearer s3cret-admin-token", "BEARER   s3cret-admin-token"] {
        let (status, _, body) = call(Method::GET, &server.url("/health/ready"), Some(auth)).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"status":"ready"}"#), "{auth}");
    }
    let (status, _, _) = call(Method::GET, &server.url("/nope"), Some("Bearer s3cret-admin-token")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "past auth, routing as usual");
    // Two credentials are ambiguous, even if one is right.
    let req = Request::get(server.url("/metrics"))
        .header(header::AUTHORIZATION, "Bearer wrong")
        .header(header::AUTHORIZATION, "Bearer s3cret-admin-token")
        .body(Empty::new())
        .unwrap();
    assert_eq!(client().request(req).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    server.stop(Duration::from_secs(2)).await;

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("admin request refused"), "the refusals are logged:\n{logs}");
    assert!(!logs.contains("s3cret"), "the token (or part of it) reached the log:\n{logs}");
}

#[tokio::test]
async fn an_empty_token_refuses_everything() {
    let _alone = REFUSING.lock().await;
    let server = Server::start(Some(""), state()).await;
    for auth in [None, Some("Bearer "), Some("Bearer")] {
        let (status, _, _) = call(Method::GET, &server.url("/health/live"), auth).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
    }
    server.stop(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_stops_accepting() {
    let server = Server::start(None, state()).await;
    let addr = server.addr;
    // The client keeps this connection open and idle in its pool.
    let keep_alive = client();
    let (status, _, _) = call_with(&keep_alive, Method::GET, &server.url("/health/live"), None).await;
    assert_eq!(status, StatusCode::OK);
    // Well under DRAIN_TIMEOUT: the idle connection did not hold shutdown up.
    server.stop(Duration::from_secs(1)).await;
    assert!(TcpStream::connect(addr).await.is_err(), "the listener is closed");
}

/// Blocks `metrics()` until the test lets it go, to hold a request in flight.
struct Slow {
    entered: Mutex<Option<oneshot::Sender<()>>>,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl AdminState for Slow {
    fn ready(&self) -> bool {
        true
    }

    fn metrics(&self) -> String {
        if let Some(entered) = self.entered.lock().unwrap().take() {
            entered.send(()).unwrap();
        }
        self.release.lock().unwrap().recv().unwrap();
        "# EOF\n".to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_request_in_flight_finish() {
    let (entered_tx, entered) = oneshot::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let state = Arc::new(Slow { entered: Mutex::new(Some(entered_tx)), release: Mutex::new(release_rx) });
    let server = Server::start(None, state).await;
    let url = server.url("/metrics");
    let request = tokio::spawn(async move { call(Method::GET, &url, None).await });
    entered.await.unwrap();
    let stopping = tokio::spawn(server.stop(Duration::from_secs(3)));
    // Give `serve` time to see the signal while the request is still held.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!stopping.is_finished(), "serve must wait for the request in flight");
    release.send(()).unwrap();
    let (status, _, body) = request.await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "# EOF\n"));
    stopping.await.unwrap();
}

#[test]
fn token_comparison() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abd", b"abc"));
    assert!(!constant_time_eq(b"ab", b"abc"));
    assert!(!constant_time_eq(b"abcabc", b"abc"), "a repeat of the token is not the token");
    assert!(!constant_time_eq(b"", b"abc"));
    assert!(!constant_time_eq(b"", b""), "an empty token matches nothing");
}

#[test]
fn without_a_token_the_listener_must_be_asked_for_by_address() {
    for host in ["127.0.0.1:9901", "127.0.0.1", "[::1]:9901", "[::1]", "localhost", "LOCALHOST:9901", "10.1.2.3:80"] {
        assert!(by_address(Some(host)), "{host}");
    }
    assert!(by_address(None), "no Host at all (HTTP/1.0)");
    for host in ["rebind.example:9901", "rebind.example", "localhost.evil.example", "127.0.0.1.nip.io", ""] {
        assert!(!by_address(Some(host)), "{host}");
    }
}

#[tokio::test]
async fn a_request_for_a_name_is_refused_without_a_token() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _alone = REFUSING.lock().await;
    async fn ask(addr: SocketAddr, host: &str, auth: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET /health/live HTTP/1.1\r\nhost: {host}\r\n{auth}connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
    let open = Server::start(None, state()).await;
    assert!(ask(open.addr, "rebind.example:9901", "").await.starts_with("HTTP/1.1 403"), "a name");
    assert!(ask(open.addr, "localhost:9901", "").await.starts_with("HTTP/1.1 200"), "localhost");
    // A Host that is not text names no address either.
    let mut s = TcpStream::connect(open.addr).await.unwrap();
    s.write_all(b"GET /health/live HTTP/1.1\r\nhost: \xff\xfe\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(out.starts_with(b"HTTP/1.1 403"), "{}", String::from_utf8_lossy(&out));
    // With a token, the token decides.
    let guarded = Server::start(Some("t0ken"), state()).await;
    let out = ask(guarded.addr, "admin.example", "authorization: Bearer t0ken\r\n").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

/// A kept connection that reaches its age answers its next request, with
/// `Connection: close`, and then closes: it was closed (gracefully, which
/// for a kept connection between exchanges is at once), and a scrape whose
/// head was on its way went unanswered.
#[tokio::test]
async fn an_old_connection_answers_its_next_request_then_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(None, state()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let ask = b"GET /health/live HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";
    s.write_all(ask).await.unwrap();
    let mut first = Vec::new();
    let mut buf = [0u8; 1024];
    while !first.ends_with(br#"{"status":"live"}"#) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed after the first answer: {}", String::from_utf8_lossy(&first));
        first.extend_from_slice(&buf[..n]);
    }
    // Kept, idle, past its age: the next request comes.
    tokio::time::sleep(MAX_CONNECTION_AGE + Duration::from_millis(300)).await;
    s.write_all(ask).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await.unwrap().unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.to_ascii_lowercase().contains("connection: close"), "{out}");
    server.stop(Duration::from_secs(6)).await;
}

/// One address cannot take every place (16 of 128 each), and a refused
/// request closes its connection: a client that is not a probe — any pod
/// of a cluster the listener faces — locked the probes out by holding 128
/// connections, silent or asking without the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_lock_the_probes_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _alone = REFUSING.lock().await;
    let server = Server::start(Some(TOKEN), state()).await;
    // The other client, from 127.0.0.2: silent connections, as many as the
    // listener held.
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        held.push(socket.connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _, _) = call(Method::GET, &server.url("/health/live"), Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, StatusCode::OK, "the probe from 127.0.0.1 is served");
    // A request without the token is refused and its connection closed.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /nope HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out)).await.unwrap().unwrap();
    assert!(out.starts_with("HTTP/1.1 401") && out.to_ascii_lowercase().contains("connection: close"), "{out}");
    drop(held);
    server.stop(Duration::from_secs(6)).await;
}
