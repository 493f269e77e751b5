//! A real `redis-server` per test, on a port of its own, killed when dropped.
//!
//! Redis cannot pick a free port itself, so one is found by binding `127.0.0.1:0` and closing
//! it; if another process wins the port in between, the start is retried on a new one. No
//! persistence, so a killed server comes back empty, like a fresh one.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const INSTALL_HINT: &str = "redis-server is needed by the redis store tests and was not found on PATH; \
     install it (Debian/Ubuntu: `apt-get install -y redis-server`, macOS: `brew install redis`)";

/// How long a started server may take to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Working directory and log of the server; removed on drop.
    dir: TempDir,
    /// TLS only, with these files: CA (of the clients), certificate, key.
    tls: Option<[PathBuf; 3]>,
}

impl RedisServer {
    /// Starts a server on a free port; fails the test (never skips it) if there is no redis-server.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a server that speaks only TLS, with this certificate and key, and asks
    /// clients for a certificate issued by `ca` (Redis's default, `tls-auth-clients yes`).
    pub fn start_tls(ca: &Path, cert: &Path, key: &Path) -> Self {
        Self::start_with(Some([ca.to_owned(), cert.to_owned(), key.to_owned()]))
    }

    fn start_with(tls: Option<[PathBuf; 3]>) -> Self {
        let mut dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let mut last_error = String::new();
        for _ in 0..5 {
            let mut server = Self { port: free_port(), child: None, dir, tls: tls.clone() };
            match server.spawn() {
                Ok(()) => return server,
                Err(err) => {
                    last_error = err;
                    dir = server.take_dir();
                }
            }
        }
        panic!("redis-server did not start on a free port after 5 tries: {last_error}");
    }

    /// A port on which nothing listens (yet), for a Redis that is down when the store is built.
    pub fn unused_port() -> u16 {
        free_port()
    }

    /// Starts a server on `port`, for a Redis that comes up after the store was built.
    pub fn start_on(port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let mut server = Self { port, child: None, dir, tls: None };
        if let Err(err) = server.spawn() {
            panic!("redis-server did not start on port {port}: {err}");
        }
        server
    }

    /// `redis://` (`rediss://` for a TLS server) to it.
    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("rediss://127.0.0.1:{}/", self.port),
            None => url_for(self.port),
        }
    }

    /// A plain connection of the test's own, to look at what the store wrote
    /// (a plain server's: a TLS one asks for a certificate).
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("test connection to redis-server")
    }

    /// SIGKILL: no goodbye to clients, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(err) = self.spawn() {
            panic!("redis-server did not restart on port {}: {err}", self.port);
        }
    }

    /// SIGSTOP: the kernel still accepts and acknowledges, Redis answers nothing (a hung Redis).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let status = Command::new("kill").arg(signal).arg(child.id().to_string()).status().expect("run kill");
        assert!(status.success(), "kill {signal} {} failed", child.id());
    }

    fn take_dir(self) -> TempDir {
        let mut this = self;
        this.kill();
        let placeholder = tempfile::tempdir().expect("temporary directory");
        std::mem::replace(&mut this.dir, placeholder)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("redis.log");
        // A restart's readiness is read from its own lines only.
        let _ = std::fs::remove_file(&log);
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some([ca, cert, key]) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-ca-cert-file")
                .arg(ca)
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key),
        };
        let spawned = command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL_HINT}"),
            Err(err) => panic!("could not run redis-server: {err}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            // The log line, not only PING: another test's server may have taken the port.
            let ready = std::fs::read_to_string(&log).is_ok_and(|log| log.contains("Ready to accept connections"));
            // (A TLS server's port is its own once the log says it listens.)
            if ready && (self.tls.is_some() || ping(self.port)) {
                return Ok(());
            }
            let exited = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                self.kill();
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("exit {exited:?}; log:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn url_for(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0_u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
