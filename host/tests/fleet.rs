//! A fleet: two `wasmgate` processes (the real binary) sharing one rate
//! limit through a real `redis-server`. Neither process can see the other's
//! memory, so the limit holds exactly only if every count goes through
//! Redis atomically.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed setup step should stop the test"
)]

#[expect(dead_code, reason = "shared with the store tests, which use more of it")]
#[path = "../src/plugin/caps/redis/tests/server.rs"]
mod redis_server;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use redis_server::RedisServer;

const BIN: &str = env!("CARGO_BIN_EXE_wasmgate");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The built plugins; built first when `cargo test -p wasmgate` runs alone
/// (the workspace's test build builds them through the tests crate).
fn plugin_dir() -> PathBuf {
    let dir = root().join("target/plugins");
    if !dir.join("rate-limit.wasm").exists() {
        let status = Command::new(root().join("plugins/build.sh")).status().expect("run plugins/build.sh");
        assert!(status.success(), "plugins/build.sh failed");
    }
    dir
}

/// An upstream answering `200 ok` on a port of its own, counting requests.
fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let counted = hits.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let counted = counted.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        async { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok")))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    (addr, hits)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One request on a fresh connection: the status, or `None` when the
/// gateway is not answering (yet).
fn status_of(port: u16) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET / HTTP/1.1\r\nhost: fleet\r\nconnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.get(9..12)?.parse().ok()
}

/// A gateway process, killed when dropped.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gateway(dir: &Path, name: &str, port: u16, upstream: SocketAddr, redis: &str) -> Gateway {
    let config = dir.join(format!("{name}.toml"));
    let plugins = plugin_dir();
    std::fs::write(
        &config,
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
workers = 2
watch = false
access_log = false

[plugins]
dir = "{plugins}"
cache_dir = "{cache}"

[store]
backend = "redis"
url = "{redis}"
timeout = "2s"

[plugin.rate-limit]
grants = {{ store = true }}

[upstreams.u]
endpoints = ["{upstream}"]

[[routes]]
name = "fleet"
upstream = "u"
plugins = [{{ use = "rate-limit", config = {{ on_store_error = "deny", limits = [
  {{ name = "fleet", key = ["global"], rate = 40, per = "1h", algorithm = "token-bucket", burst = 40 }},
] }} }}]
"#,
            plugins = plugins.display(),
            cache = root().join("target/test-plugin-cache").display(),
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&config)
        .env("WASMGATE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start wasmgate");
    Gateway(child)
}

#[test]
fn two_gateway_processes_share_one_limit_through_redis() {
    let redis = RedisServer::start();
    let (upstream, hits) = upstream();
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port()];
    let mut gateways: Vec<Gateway> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| gateway(dir.path(), &format!("g{i}"), port, upstream, &redis.url()))
        .collect();
    // Ready: each answers the probe (which takes one token of the limit).
    let deadline = Instant::now() + Duration::from_secs(60);
    for (gateway, &port) in gateways.iter_mut().zip(&ports) {
        while status_of(port).is_none() {
            if let Ok(Some(exit)) = gateway.0.try_wait() {
                panic!("the gateway on port {port} exited ({exit}); its stderr is above");
            }
            assert!(Instant::now() < deadline, "gateway on port {port} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2, "the two probes went through");

    // 8 threads × 15 requests, alternating between the two processes: 120
    // requests for the 38 tokens left of the fleet's 40.
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..8)
            .map(|t| s.spawn(move || (0..15).map(|i| status_of(ports[(t + i) % 2]).unwrap_or(0)).collect::<Vec<_>>()))
            .collect();
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    });
    let count = |status: u16| statuses.iter().filter(|&&s| s == status).count();
    assert_eq!(statuses.len(), 120);
    assert_eq!(count(503), 0, "Redis answered every request");
    assert_eq!(count(0), 0, "every request was answered");
    assert_eq!((count(200), count(429)), (38, 82), "40 in total across both processes, probes included");
    assert_eq!(hits.load(Ordering::SeqCst), 40);
}
