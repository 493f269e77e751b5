//! A forward HTTP proxy on an ephemeral port, as egress proxies work: a
//! tunnel for `CONNECT host:port`, and a request whose line names the whole
//! URL (`GET http://host:port/path`) forwarded to that host. It counts both,
//! and keeps the `Proxy-Authorization` each came with. Names it is told of
//! ([`ForwardProxy::alias`]) it reaches at their address, as an egress
//! proxy reaches hosts its clients cannot resolve.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug)]
pub struct ForwardProxy {
    pub addr: SocketAddr,
    seen: Arc<Seen>,
}

/// What the proxy was asked.
#[derive(Debug, Default)]
struct Seen {
    tunnels: AtomicUsize,
    forwarded: AtomicUsize,
    /// `host:port` of every tunnel and request, in order.
    targets: Mutex<Vec<String>>,
    /// The `Proxy-Authorization` of each (empty: none), in order.
    authorizations: Mutex<Vec<String>>,
    /// `host:port` → where it is.
    aliases: Mutex<Vec<(String, SocketAddr)>>,
}

impl ForwardProxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("its address");
        let seen = Arc::new(Seen::default());
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = serve(client, &log).await;
                });
            }
        });
        Self { addr, seen }
    }

    /// `proxy = "http://…"` for a registry table.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// CONNECT tunnels opened.
    pub fn tunnels(&self) -> usize {
        self.seen.tunnels.load(Ordering::Relaxed)
    }

    /// Plain-HTTP requests forwarded.
    pub fn forwarded(&self) -> usize {
        self.seen.forwarded.load(Ordering::Relaxed)
    }

    /// Whether a tunnel or request went to `authority` (`host:port`).
    pub fn reached(&self, authority: &str) -> bool {
        locked(&self.seen.targets).iter().any(|t| t == authority)
    }

    /// Reaches `authority` (`name:port`) at `addr`.
    pub fn alias(&self, authority: &str, addr: SocketAddr) {
        locked(&self.seen.aliases).push((authority.to_owned(), addr));
    }

    /// The `Proxy-Authorization` of every tunnel and request, in order
    /// (empty for one without).
    pub fn authorizations(&self) -> Vec<String> {
        locked(&self.seen.authorizations).clone()
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn serve(mut client: TcpStream, log: &Seen) -> std::io::Result<()> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(client.read_u8().await?);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut line = text.split(' ');
    let (method, target) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
    let seen = |authority: &str| {
        locked(&log.targets).push(authority.to_owned());
        let authorization = text.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("proxy-authorization").then(|| value.trim().to_owned())
        });
        locked(&log.authorizations).push(authorization.unwrap_or_default());
    };
    let at = |authority: &str| {
        let alias = locked(&log.aliases).iter().find(|(name, _)| name == authority).map(|(_, addr)| addr.to_string());
        alias.unwrap_or_else(|| authority.to_owned())
    };
    if method == "CONNECT" {
        seen(target);
        let mut upstream = TcpStream::connect(at(target)).await?;
        log.tunnels.fetch_add(1, Ordering::Relaxed);
        client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }
    // `GET http://host:port/path HTTP/1.1`: to host:port, as it came (the
    // registry takes a URL in the request line).
    let Some(authority) = target.strip_prefix("http://").and_then(|rest| rest.split('/').next()) else {
        client.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await?;
        return Ok(());
    };
    seen(authority);
    let mut upstream = TcpStream::connect(at(authority)).await?;
    log.forwarded.fetch_add(1, Ordering::Relaxed);
    upstream.write_all(&head).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}
