//! Listeners and workers. Each worker is a thread with its own single-
//! threaded Tokio runtime and its own `SO_REUSEPORT` socket on the listen
//! address (and on the TLS address), so the kernel spreads connections and a
//! request never leaves the thread that accepted it: its plugin instances and
//! upstream connections are that worker's own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::gateway::Shared;
use crate::proxy::{self, ConnInfo};

/// Binds `workers` sockets to `addr` (port 0 picks one port for all).
pub fn bind(addr: SocketAddr, workers: usize) -> std::io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    let first = socket(addr)?;
    let local = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers.max(1) {
        listeners.push(socket(local)?);
    }
    Ok((listeners, local))
}

fn socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_tcp_nodelay(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// A worker's sockets: plain, and TLS when configured.
pub type WorkerListeners = (std::net::TcpListener, Option<std::net::TcpListener>);

/// Starts one worker thread per listener pair.
pub fn spawn_workers(
    shared: &Arc<Shared>,
    listeners: Vec<WorkerListeners>,
    shutdown: &watch::Receiver<bool>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let server = shared.current().config.server.clone();
    listeners
        .into_iter()
        .enumerate()
        .map(|(i, listener)| {
            let (shared, shutdown, server) = (shared.clone(), shutdown.clone(), server.clone());
            std::thread::Builder::new().name(format!("wasmgate-worker-{i}")).spawn(move || {
                crate::worker::set_index(i);
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(worker = i, "cannot start the worker runtime: {e}");
                        return;
                    }
                };
                rt.block_on(run(shared, listener, server, shutdown));
            })
        })
        .collect()
}

fn builder(server: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(server.max_header_bytes)
        .max_headers(server.max_headers)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

async fn run(
    shared: Arc<Shared>,
    listeners: WorkerListeners,
    server: ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let (plain, tls) = listeners;
    let Some(plain) = tokio::net::TcpListener::from_std(plain)
        .map_err(|e| tracing::error!("cannot use the listening socket: {e}"))
        .ok()
    else {
        return;
    };
    let tls = match tls.map(tokio::net::TcpListener::from_std).transpose() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot use the TLS listening socket: {e}");
            return;
        }
    };
    let builder = Arc::new(builder(&server));
    let graceful = GracefulShutdown::new();
    loop {
        let (accepted, secure) = tokio::select! {
            a = plain.accept() => (a, false),
            a = accept_opt(tls.as_ref()) => (a, true),
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors or similar: back off briefly rather than spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        if !secure {
            let conn_info = Arc::new(ConnInfo::new(peer, "http"));
            let conn =
                builder.serve_connection_with_upgrades(TokioIo::new(stream), service(shared, conn_info)).into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, "connection ended with an error: {e}");
                }
            });
            continue;
        }
        // The handshake runs in the connection's task, bounded by the header
        // read timeout, so a slow handshake never holds up accepting.
        let Some(acceptor) = shared.current().tls.clone() else { continue };
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = server.header_read_timeout;
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let conn_info = Arc::new(ConnInfo::new(peer, "https"));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service(shared, conn_info));
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, "connection ended with an error: {e}");
            }
        });
    }
    drop(plain);
    drop(tls);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(server.shutdown_timeout) => {
            tracing::warn!("shutdown deadline passed with requests in flight; closing them");
        }
    }
}

async fn accept_opt(
    l: Option<&tokio::net::TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

fn service(
    shared: Arc<Shared>,
    conn_info: Arc<ConnInfo>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<crate::proxy::body::Body>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<hyper::Response<crate::proxy::body::Body>, Infallible>> + Send,
> + Clone {
    service_fn(move |req| {
        let snapshot = shared.current();
        proxy::handle(snapshot, conn_info.clone(), req)
    })
}
