//! A forward HTTP proxy on an ephemeral port, as egress proxies work: a
//! tunnel for `CONNECT host:port`, and a request whose line names the whole
//! URL (`GET http://host:port/path`) forwarded to that host. It counts both.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug)]
pub struct ForwardProxy {
    pub addr: SocketAddr,
    tunnels: Arc<AtomicUsize>,
    forwarded: Arc<AtomicUsize>,
    /// `host:port` of every tunnel and request, in order.
    targets: Arc<Mutex<Vec<String>>>,
}

impl ForwardProxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("its address");
        let (tunnels, forwarded) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let targets = Arc::new(Mutex::new(Vec::new()));
        let counts = (tunnels.clone(), forwarded.clone(), targets.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counts = counts.clone();
                tokio::spawn(async move {
                    let _ = serve(client, &counts.0, &counts.1, &counts.2).await;
                });
            }
        });
        Self { addr, tunnels, forwarded, targets }
    }

    /// `proxy = "http://…"` for a registry table.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// CONNECT tunnels opened.
    pub fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::Relaxed)
    }

    /// Plain-HTTP requests forwarded.
    pub fn forwarded(&self) -> usize {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Whether a tunnel or request went to `authority` (`host:port`).
    pub fn reached(&self, authority: &str) -> bool {
        self.targets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().any(|t| t == authority)
    }
}

async fn serve(
    mut client: TcpStream,
    tunnels: &AtomicUsize,
    forwarded: &AtomicUsize,
    targets: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(client.read_u8().await?);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut line = text.split(' ');
    let (method, target) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
    let seen = |authority: &str| {
        targets.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(authority.to_owned());
    };
    if method == "CONNECT" {
        seen(target);
        let mut upstream = TcpStream::connect(target).await?;
        tunnels.fetch_add(1, Ordering::Relaxed);
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
    let mut upstream = TcpStream::connect(authority).await?;
    forwarded.fetch_add(1, Ordering::Relaxed);
    upstream.write_all(&head).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}
