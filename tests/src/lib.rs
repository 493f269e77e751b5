//! The test harness: the real gateway started in-process on an ephemeral
//! port, real plugin components (built by `build.rs`), real upstream servers
//! on ephemeral ports, and a plain HTTP client.

#![expect(clippy::expect_used, clippy::panic, reason = "test harness: a failed setup step should stop the test")]

pub mod certs;
/// A real DNS server on loopback with records a test can change (shared with the host's unit tests).
#[path = "../../host/src/upstream/test_dns.rs"]
pub mod dns;
pub mod proxy;
/// A real redis-server on a free port, killed on drop (shared with the host's unit tests).
#[path = "../../host/src/plugin/caps/redis/tests/server.rs"]
pub mod redis_server;
pub mod registry;
pub mod token_service;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Where `build.rs` put the plugins from `plugins/`.
pub fn plugin_dir() -> PathBuf {
    PathBuf::from(env!("WASMGATE_PLUGIN_DIR"))
}

/// Where `build.rs` put the test guests from `tests/guests/`.
pub fn guest_dir() -> PathBuf {
    PathBuf::from(env!("WASMGATE_GUEST_DIR"))
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("WASMGATE_ROOT"))
}

/// A compile cache shared by every test in the run: each plugin is compiled
/// once, not once per test.
pub fn cache_dir() -> PathBuf {
    root().join("target").join("test-plugin-cache")
}

/// Names of the plugins and guests the tests can use.
pub fn all_plugins() -> Vec<String> {
    let mut names = Vec::new();
    for dir in [plugin_dir(), guest_dir()] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "wasm")
                && let Some(stem) = p.file_stem().and_then(|s| s.to_str())
            {
                names.push(stem.to_owned());
            }
        }
    }
    names.sort();
    names
}

/// An admin listener on an ephemeral port, for the tests that read
/// `/metrics`.
pub const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// The value of one series (its name and labels as exposed) in `/metrics`'
/// `text`.
pub fn sample<'t>(text: &'t str, series: &str) -> Option<&'t str> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
}

/// A gateway running in this process, with its config in a temp dir.
pub struct TestGateway {
    pub gateway: wasmgate::Gateway,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    server_extra: String,
}

impl std::fmt::Debug for TestGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestGateway").field("addr", &self.gateway.addr()).finish()
    }
}

/// A plugin directory holding links to every plugin and test guest.
pub fn linked_plugin_dir(dir: &Path) -> PathBuf {
    let out = dir.join("plugins");
    std::fs::create_dir_all(&out).expect("create plugin dir");
    for src in [plugin_dir(), guest_dir()] {
        for e in std::fs::read_dir(&src).expect("read plugin dir").flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "wasm") {
                std::os::unix::fs::symlink(&p, out.join(e.file_name())).expect("link plugin");
            }
        }
    }
    out
}

/// The `[server]` and `[plugins]` tables the harness writes before a test's
/// own config.
/// `server_extra` lines override the harness's defaults for the same keys.
pub fn preamble(plugins: &Path, server_extra: &str) -> String {
    // Only the lines before a nested table (e.g. `[server.tls]`) are `[server]` keys.
    // `listen = none`: no plain listener (a gateway serving only over TLS).
    const NO_LISTEN: &str = "listen = none";
    let server_keys: Vec<&str> = server_extra.lines().take_while(|l| !l.trim_start().starts_with('[')).collect();
    let overridden = |key: &str| server_keys.iter().any(|l| l.split('=').next().is_some_and(|k| k.trim() == key));
    let server_extra: String =
        server_extra.lines().filter(|l| l.trim() != NO_LISTEN).map(|l| format!("{l}\n")).collect();
    let mut server = String::from("[server]\n");
    for (key, value) in [("listen", "\"127.0.0.1:0\""), ("workers", "2"), ("watch", "false")] {
        if !overridden(key) {
            server.push_str(&format!("{key} = {value}\n"));
        }
    }
    format!(
        "{server}{server_extra}\n\n[plugins]\ndir = \"{}\"\ncache_dir = \"{}\"\nmax_instances = 64\n\n",
        plugins.display(),
        cache_dir().display()
    )
}

impl TestGateway {
    /// Starts a gateway whose config is the harness preamble plus `body`
    /// (upstreams, routes, `[plugin.NAME]` tables).
    pub fn start(body: &str) -> Self {
        Self::try_start("", body).unwrap_or_else(|e| panic!("gateway did not start:\n{e}"))
    }

    /// Like [`start`](Self::start) with extra `[server]` keys.
    pub fn start_with(server_extra: &str, body: &str) -> Self {
        Self::try_start(server_extra, body).unwrap_or_else(|e| panic!("gateway did not start:\n{e}"))
    }

    pub fn try_start(server_extra: &str, body: &str) -> Result<Self, wasmgate::StartError> {
        init_logs();
        let dir = tempfile::tempdir().expect("tempdir");
        let plugins = linked_plugin_dir(dir.path());
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, format!("{}{body}", preamble(&plugins, server_extra))).expect("write config");
        let gateway = wasmgate::Gateway::start(&config_path)?;
        Ok(Self { gateway, dir, config_path, server_extra: server_extra.to_owned() })
    }

    /// The plain listener's address (every harness config has one, unless
    /// a test asked for none with `listen = none`).
    pub fn addr(&self) -> SocketAddr {
        self.gateway.addr().expect("a plain listener")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// The admin listener's `/metrics` text (the config's body has
    /// [`ADMIN`]).
    pub async fn metrics(&self) -> String {
        metrics_of(&self.gateway).await
    }

    /// `/metrics` once `series` reads `value`, or after `within` (the last
    /// text read, for the caller's assertion to show).
    pub async fn metrics_once(&self, series: &str, value: &str, within: Duration) -> String {
        metrics_once_of(&self.gateway, series, value, within).await
    }

    /// Replaces the config file's body (the preamble stays).
    pub fn write_config(&self, body: &str) {
        self.write_config_with(&self.server_extra, body);
    }

    /// Replaces the config file, with these extra `[server]` keys.
    pub fn write_config_with(&self, server_extra: &str, body: &str) {
        let plugins = self.dir.path().join("plugins");
        let text = format!("{}{body}", preamble(&plugins, server_extra));
        let tmp = self.dir.path().join("gateway.toml.tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("replace config");
    }
}

/// `gateway`'s admin listener's `/metrics` text (its config has [`ADMIN`]).
pub async fn metrics_of(gateway: &wasmgate::Gateway) -> String {
    let admin = gateway.admin_addr().expect("an admin listener: the config needs ADMIN");
    get(&format!("http://{admin}/metrics")).await.text()
}

/// [`metrics_of`] once `series` reads `value`, or after `within` (the last
/// text read, for the caller's assertion to show).
pub async fn metrics_once_of(gateway: &wasmgate::Gateway, series: &str, value: &str, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let text = metrics_of(gateway).await;
        if sample(&text, series) == Some(value) || tokio::time::Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends the gateway's logs to the test's output (shown when a test fails);
/// `WASMGATE_LOG` filters them as it does for the binary.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WASMGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// A simple response, body read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect()
    }
}

/// An HTTP/1.1 keep-alive client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request and reads the whole response (10 s at most).
pub async fn send(req: Request<Full<Bytes>>) -> Reply {
    send_with(&client(), req).await
}

pub async fn send_with(client: &Client<HttpConnector, Full<Bytes>>, req: Request<Full<Bytes>>) -> Reply {
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("response within 10 s")
        .expect("request sent");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("read body").to_bytes();
    Reply { status: parts.status, headers: parts.headers, body }
}

pub async fn get(url: &str) -> Reply {
    get_with(url, &[]).await
}

/// Sends a GET of `url` with these header fields.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    send(get_request(url, headers)).await
}

/// A GET of `url` with these header fields, for [`send_with`].
pub fn get_request(url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Full::default()).expect("request")
}

/// Writes raw bytes to `addr` and returns everything read until the server
/// closes the connection (or 5 s pass).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The next message head on `s` (without its blank line), read through
/// `pending`, which keeps what arrived after it; `None` once the peer closes.
pub async fn read_head(s: &mut tokio::net::TcpStream, pending: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(pending.get(..end).unwrap_or_default()).into_owned();
            pending.drain(..end + 4);
            return Some(head);
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
    }
}

/// A raw HTTP/1.1 client connection, for tests of what goes over the wire:
/// requests are written as given, responses read one at a time.
#[derive(Debug)]
pub struct RawConn {
    s: tokio::net::TcpStream,
    pending: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self { s: tokio::net::TcpStream::connect(addr).await.expect("connect"), pending: Vec::new() }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.try_write(bytes).await.expect("write");
    }

    /// Writes `bytes`, an error if the connection is gone (reset).
    pub async fn try_write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.s.write_all(bytes).await
    }

    /// The next response head (lower-cased) and body, the body framed by
    /// `content-length` or chunked (none when `bodiless`, for `HEAD`);
    /// `None` if the connection closes first or nothing comes within 5 s.
    pub async fn response(&mut self, bodiless: bool) -> Option<(String, Vec<u8>)> {
        tokio::time::timeout(Duration::from_secs(5), self.read_response(bodiless)).await.ok().flatten()
    }

    async fn read_response(&mut self, bodiless: bool) -> Option<(String, Vec<u8>)> {
        let head = read_head(&mut self.s, &mut self.pending).await?.to_lowercase();
        let field = |name: &str| {
            head.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')).map(str::trim))
        };
        if bodiless {
            return Some((head.clone(), Vec::new()));
        }
        let mut body = Vec::new();
        if let Some(n) = field("content-length").and_then(|v| v.parse::<usize>().ok()) {
            self.fill(n).await?;
            body.extend(self.pending.drain(..n));
        } else if field("transfer-encoding") == Some("chunked") {
            loop {
                let line = self.line().await?;
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).ok()?;
                if size == 0 {
                    while !self.line().await?.is_empty() {}
                    break;
                }
                self.fill(size + 2).await?;
                body.extend(self.pending.drain(..size));
                self.pending.drain(..2);
            }
        }
        Some((head, body))
    }

    async fn fill(&mut self, n: usize) -> Option<()> {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        while self.pending.len() < n {
            match self.s.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(k) => self.pending.extend_from_slice(buf.get(..k).unwrap_or_default()),
            }
        }
        Some(())
    }

    async fn line(&mut self) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(self.pending.get(..end).unwrap_or_default()).into_owned();
                self.pending.drain(..end + 2);
                return Some(line);
            }
            match self.s.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(k) => self.pending.extend_from_slice(buf.get(..k).unwrap_or_default()),
            }
        }
    }

    /// Whether the server closes the connection (within 5 s) without
    /// sending anything more.
    pub async fn closed(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        self.pending.is_empty()
            && matches!(tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
    }
}

/// A port nothing listens on: connections to it are refused. Bound and
/// never listened on, for the life of the test process: a port bound and
/// released could be taken by another test's server, running meanwhile,
/// and answer (or, out of descriptors, hang).
pub fn dead_addr() -> SocketAddr {
    // One for all the tests of a process.
    static DEAD: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();
    *DEAD.get_or_init(|| {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind");
        let addr = socket.local_addr().expect("addr").as_socket().expect("an IP address");
        std::mem::forget(socket);
        addr
    })
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}
