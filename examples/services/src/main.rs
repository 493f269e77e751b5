//! `example-services`: three small JSON services for the wasmgate demo,
//! each on its own address.
//!
//! ```text
//! example-services --users 127.0.0.1:9001 --orders 127.0.0.1:9002 --cart 127.0.0.1:9003
//! ```
//!
//! Prints `users listening on 127.0.0.1:9001` (one line per service) once
//! bound, logs requests to stderr (`RUST_LOG` filters), and runs until
//! Ctrl-C or SIGTERM. The data is in memory and the same on every start.

mod cart;
mod orders;
mod server;
mod users;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

use crate::server::Service;

#[derive(Debug, Parser)]
#[command(name = "example-services", version, about = "Example upstream services for the wasmgate demo")]
struct Args {
    /// Serve the users service on this address (e.g. 127.0.0.1:9001; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    users: Option<SocketAddr>,
    /// Serve the orders service on this address.
    #[arg(long, value_name = "ADDR")]
    orders: Option<SocketAddr>,
    /// Serve the cart service on this address.
    #[arg(long, value_name = "ADDR")]
    cart: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let args = Args::parse();
    if args.users.is_none() && args.orders.is_none() && args.cart.is_none() {
        eprintln!(
            "error: nothing to serve; give at least one of --users, --orders, --cart (e.g. --users 127.0.0.1:9001)"
        );
        return ExitCode::from(2);
    }
    let started = async {
        start(args.users, users::Users::seeded()).await?;
        start(args.orders, orders::Orders::seeded()).await?;
        start(args.cart, cart::Carts::seeded()).await
    };
    if let Err(message) = started.await {
        eprintln!("error: {message}");
        return ExitCode::FAILURE;
    }
    wait_for_shutdown().await;
    ExitCode::SUCCESS
}

/// Starts `service` if it was given an address, and says where it listens.
async fn start<S: Service>(addr: Option<SocketAddr>, service: S) -> Result<(), String> {
    let Some(addr) = addr else { return Ok(()) };
    match server::start(addr, service).await {
        Ok(bound) => {
            println!("{} listening on {bound}", S::NAME);
            Ok(())
        }
        Err(e) => Err(format!("{} cannot listen on {addr} (port {}): {e}", S::NAME, addr.port())),
    }
}

async fn wait_for_shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM ({e}); stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

fn init_logging() {
    use std::io::IsTerminal;

    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal (the demo writes this log to a file), and
    // not when NO_COLOR is set.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{Method, Request, StatusCode};
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    use serde_json::Value;

    use super::*;

    struct Got {
        status: StatusCode,
        service: String,
        content_type: String,
        body: Value,
    }

    async fn call(client: &Client<HttpConnector, Full<Bytes>>, method: Method, url: String, body: &str) -> Got {
        let req = Request::builder().method(method).uri(url).body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let resp = client.request(req).await.unwrap();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let (status, service, content_type) = (resp.status(), header("x-service"), header("content-type"));
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Got { status, service, content_type, body: serde_json::from_slice(&bytes).unwrap() }
    }

    #[tokio::test]
    async fn three_servers_answer_real_requests() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let users = server::start(any, users::Users::seeded()).await.unwrap();
        let orders = server::start(any, orders::Orders::seeded()).await.unwrap();
        let cart = server::start(any, cart::Carts::seeded()).await.unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let url = |addr: SocketAddr, path: &str| format!("http://{addr}{path}");

        let cases = [
            (Method::GET, url(users, "/users"), "", 200, "users"),
            (Method::GET, url(users, "/users/1"), "", 200, "users"),
            (Method::GET, url(users, "/users/99"), "", 404, "users"),
            (
                Method::POST,
                url(users, "/users"),
                r#"{"name":"Barbara Liskov","email":"barbara@example.com"}"#,
                201,
                "users",
            ),
            (Method::POST, url(users, "/users"), "{", 400, "users"),
            (Method::GET, url(users, "/health"), "", 200, "users"),
            (Method::GET, url(orders, "/orders?user=1&limit=3"), "", 200, "orders"),
            (Method::GET, url(orders, "/orders/1002"), "", 200, "orders"),
            (Method::GET, url(orders, "/health"), "", 200, "orders"),
            (Method::GET, url(cart, "/carts/1"), "", 200, "cart"),
            (Method::GET, url(cart, "/health"), "", 200, "cart"),
            (Method::GET, url(cart, "/nowhere"), "", 404, "cart"),
        ];
        for (method, url, body, status, service) in cases {
            let got = call(&client, method.clone(), url.clone(), body).await;
            assert_eq!(got.status, status, "{method} {url}: {}", got.body);
            assert_eq!(got.service, service, "{method} {url}");
            assert_eq!(got.content_type, "application/json", "{method} {url}");
        }

        let created = call(&client, Method::GET, url(users, "/users/4"), "").await;
        assert_eq!(created.body["name"], "Barbara Liskov");
        let recent = call(&client, Method::GET, url(orders, "/orders?user=1&limit=3"), "").await;
        assert_eq!(recent.body["count"], 3);
        assert_eq!(recent.body["orders"][0]["id"], 1010);
        let c = call(&client, Method::GET, url(cart, "/carts/1"), "").await;
        assert_eq!(c.body["total"], "145.47");
        let unknown = call(&client, Method::GET, url(cart, "/nowhere"), "").await;
        assert_eq!(unknown.body, serde_json::json!({ "error": "not found" }));
    }
}
