//! The edge: TLS termination (SNI, ALPN, client certificates), TLS to
//! upstreams, WebSocket and gRPC pass-through, slow clients, graceful
//! shutdown, and the admin listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmgate_tests::certs::{Ca, Issued};
use wasmgate_tests::upstream::{TestUpstream, echoed_header, grpc};
use wasmgate_tests::{TestGateway, dead_addr, eventually, get, raw};

/// One request over TLS; returns (status, negotiated ALPN, body, the
/// certificate's DER the server presented).
async fn tls_get(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(u16, Option<Vec<u8>>, String), String> {
    tls_get_with(addr, sni, config, path, &[]).await
}

/// [`tls_get`] with these request fields.
async fn tls_get_with(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    fields: &[(&str, &str)],
) -> Result<(u16, Option<Vec<u8>>, String), String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tls_over(tcp, sni, config).await?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let req = fields.iter().fold(Request::get(path).header("host", sni), |req, (n, v)| req.header(*n, *v));
    let req = req.body(Full::<Bytes>::default()).map_err(|e| e.to_string())?;
    let resp = if alpn.as_deref() == Some(b"h2") {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = req;
        *req.uri_mut() = format!("https://{sni}{path}").parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
        send.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, alpn, String::from_utf8_lossy(&body).into_owned()))
}

/// A TLS handshake over `tcp` for `sni`.
async fn tls_over(
    tcp: tokio::net::TcpStream,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| e.to_string())
}

/// A `[server.tls]` listener with `cert`, requiring client certificates
/// issued by `clients`.
fn requiring_clients(cert: &Issued, clients: &Ca) -> String {
    format!("{}client_ca = \"{}\"\n", cert.tls_listener(), clients.pem.display())
}

fn tls_body(up: &TestUpstream, server_tls: &str) -> String {
    format!("[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\n{server_tls}", up.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_picks_the_certificate_by_sni_and_speaks_h2() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_a, ca_b) = (Ca::new(dir.path(), "ca-a"), Ca::new(dir.path(), "ca-b"));
    let (a, b) = (ca_a.server("a", &["a.test"]), ca_b.server("b", &["*.b.test"]));
    let up = TestUpstream::echo("u").await;
    let server = format!(
        "[server.tls]\nlisten = \"127.0.0.1:0\"\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}, {{ cert = \"{}\", key = \"{}\" }}]\n",
        a.cert.display(),
        a.key.display(),
        b.cert.display(),
        b.key.display()
    );
    // [server.tls] must come before [upstreams]: put it in the server extra.
    let gw = TestGateway::start_with(&format!("\n{server}"), &tls_body(&up, ""));
    let addr = gw.gateway.tls_addr().expect("TLS listener");
    // Each name verifies only against its own CA: the right certificate was served.
    let (status, alpn, body) =
        tls_get(addr, "a.test", ca_a.client_config(&[b"h2", b"http/1.1"], None), "/x").await.unwrap();
    assert_eq!((status, alpn.as_deref()), (200, Some(&b"h2"[..])));
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed_header(&doc, "x-forwarded-proto").as_deref(), Some("https"));
    let (status, alpn, _) = tls_get(addr, "api.b.test", ca_b.client_config(&[b"http/1.1"], None), "/").await.unwrap();
    assert_eq!((status, alpn.as_deref()), (200, Some(&b"http/1.1"[..])));
    assert!(tls_get(addr, "api.b.test", ca_a.client_config(&[b"h2"], None), "/").await.is_err(), "wrong CA refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_once_its_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new(dir.path(), "old-ca"), Ca::new(dir.path(), "new-ca"));
    let site = old_ca.server("site", &["a.test"]);
    let up = TestUpstream::echo("u").await;
    let server = format!("watch = true\nwatch_interval = \"50ms\"\n{}", site.tls_listener());
    let gw = TestGateway::start_with(&server, &tls_body(&up, ""));
    let addr = gw.gateway.tls_addr().expect("TLS listener");
    let alpn: &[&[u8]] = &[b"http/1.1"];
    assert_eq!(tls_get(addr, "a.test", old_ca.client_config(alpn, None), "/").await.map(|r| r.0), Ok(200));

    // Renewal rewrites the same two files (the certificate first, then its
    // key): the watcher reloads, and new handshakes get the new certificate.
    let renewed = new_ca.server("site", &["a.test"]);
    assert_eq!((&renewed.cert, &renewed.key), (&site.cert, &site.key));
    let deadline = Instant::now() + Duration::from_secs(10);
    while tls_get(addr, "a.test", new_ca.client_config(alpn, None), "/").await.is_err() {
        assert!(Instant::now() < deadline, "the renewed certificate was not served within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(tls_get(addr, "a.test", old_ca.client_config(alpn, None), "/").await.is_err(), "the old one is gone");
}

/// A config that names a certificate not written yet is refused; once the
/// files are written it is tried again (the watcher watched only the files
/// the serving config named: it never was) and served. A reload that drops
/// the TLS listener is refused: its port stays bound until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_config_is_tried_again_once_the_files_it_names_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new(dir.path(), "old-ca"), Ca::new(dir.path(), "new-ca"));
    let (site, renewed) = (old_ca.server("site", &["a.test"]), new_ca.server("site", &["a.test"]));
    let up = TestUpstream::echo("u").await;
    let server = |cert: &std::path::Path, key: &std::path::Path| {
        format!(
            "watch = true\nwatch_interval = \"50ms\"\n\n[server.tls]\nlisten = \"127.0.0.1:0\"\n\
             certificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
            cert.display(),
            key.display()
        )
    };
    let admin = |tls: &str| format!("{tls}\n{}", wasmgate_tests::ADMIN);
    let gw = TestGateway::start_with(&admin(&server(&site.cert, &site.key)), &tls_body(&up, ""));
    let addr = gw.gateway.tls_addr().expect("TLS listener");
    let alpn: &[&[u8]] = &[b"http/1.1"];
    let later = dir.path().join("later");
    let (cert, key) = (later.join("site.pem"), later.join("site.key"));
    gw.write_config_with(&admin(&server(&cert, &key)), &tls_body(&up, ""));
    let refused = r#"wasmgate_config_reloads_total{result="error"}"#;
    let text = gw.metrics_once(refused, "1", Duration::from_secs(10)).await;
    assert_eq!(wasmgate_tests::sample(&text, refused), Some("1"), "refused: its files are not there");
    assert_eq!(gw.gateway.generation(), 0);
    std::fs::create_dir(&later).unwrap();
    std::fs::copy(&renewed.cert, &cert).unwrap();
    std::fs::copy(&renewed.key, &key).unwrap();
    assert!(eventually(Duration::from_secs(10), || gw.gateway.generation() == 1).await, "tried again");
    assert_eq!(tls_get(addr, "a.test", new_ca.client_config(alpn, None), "/").await.map(|r| r.0), Ok(200));

    gw.write_config_with(&admin("watch = true\nwatch_interval = \"50ms\"\n"), &tls_body(&up, ""));
    let err = gw.gateway.reload().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("server.tls: [server.tls] was removed"), "{err}");
    assert_eq!(tls_get(addr, "a.test", new_ca.client_config(alpn, None), "/").await.map(|r| r.0), Ok(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let clients = Ca::new(dir.path(), "clients");
    let other = Ca::new(dir.path(), "other");
    let server = ca.server("gw", &["gw.test"]);
    let (good, bad) = (clients.client("good"), other.client("bad"));
    let up = TestUpstream::echo("u").await;
    let tls = requiring_clients(&server, &clients);
    let gw = TestGateway::start_with(&tls, &tls_body(&up, ""));
    let addr = gw.gateway.tls_addr().unwrap();
    let anonymous = tls_get(addr, "gw.test", ca.client_config(&[b"http/1.1"], None), "/").await;
    assert!(anonymous.is_err(), "no client certificate: refused");
    let wrong = tls_get(addr, "gw.test", ca.client_config(&[b"http/1.1"], Some(&bad)), "/").await;
    assert!(wrong.is_err(), "a certificate from another CA: refused");
    let ok = tls_get(addr, "gw.test", ca.client_config(&[b"http/1.1"], Some(&good)), "/").await;
    assert_eq!(ok.map(|r| r.0), Ok(200));
}

/// A reload that replaces the TLS listener's config (here: the client CA,
/// as when a client CA is withdrawn) closes the connections it accepted,
/// gracefully, as on shutdown: they went on being served under the old
/// one for as long as their clients kept them busy. A reload that leaves
/// the TLS config and its files as they were keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_replaces_the_tls_config_closes_the_connections_it_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let (clients, others) = (Ca::new(dir.path(), "clients"), Ca::new(dir.path(), "others"));
    let server = ca.server("gw", &["gw.test"]);
    let good = clients.client("good");
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start_with(&requiring_clients(&server, &clients), &tls_body(&up, ""));
    let addr = gw.gateway.tls_addr().unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tls_over(tcp, "gw.test", ca.client_config(&[b"http/1.1"], Some(&good))).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    let conn = tokio::spawn(conn);
    let ask = |path: &str| Request::get(path).header("host", "gw.test").body(Full::<Bytes>::default()).unwrap();
    assert_eq!(send.send_request(ask("/")).await.unwrap().status(), 200);

    // Another route; the TLS config as it was: the connection is kept.
    let other_route = "[[routes]]\nname = \"other\"\nmatch = { prefix = \"/other\" }\nupstream = \"u\"\n";
    gw.write_config_with(&requiring_clients(&server, &clients), &format!("{}{other_route}", tls_body(&up, "")));
    assert!(gw.gateway.reload().is_ok());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(send.send_request(ask("/other")).await.unwrap().status(), 200, "kept");

    // Another client CA: the connection, idle, is closed.
    gw.write_config_with(&requiring_clients(&server, &others), &tls_body(&up, ""));
    assert!(gw.gateway.reload().is_ok());
    let closed = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(closed.is_ok(), "the gateway closed the connection");
    let again = tls_get(addr, "gw.test", ca.client_config(&[b"http/1.1"], Some(&good)), "/").await;
    assert!(again.is_err(), "and a new one with the withdrawn CA's certificate is refused");
}

/// A revoked client certificate is refused (`client_crl`), and a list
/// written anew is taken up by the reload its file makes (revoking a
/// leaked certificate meant replacing the whole client CA).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_client_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let clients = Ca::new(dir.path(), "clients");
    let server = ca.server("gw", &["gw.test"]);
    let (good, leaked) = (clients.client("good"), clients.client("leaked"));
    let crl = clients.revocation_list("clients.crl", &[&leaked]);
    let up = TestUpstream::echo("u").await;
    let tls = format!(
        "watch = true\nwatch_interval = \"50ms\"\n{}client_crl = \"{}\"\n",
        requiring_clients(&server, &clients),
        crl.display()
    );
    let gw = TestGateway::start_with(&tls, &tls_body(&up, ""));
    let addr = gw.gateway.tls_addr().unwrap();
    let alpn: &[&[u8]] = &[b"http/1.1"];
    let ok = tls_get(addr, "gw.test", ca.client_config(alpn, Some(&good)), "/").await;
    assert_eq!(ok.map(|r| r.0), Ok(200));
    assert!(tls_get(addr, "gw.test", ca.client_config(alpn, Some(&leaked)), "/").await.is_err(), "revoked: refused");
    // The good one revoked too, by a new list written in place.
    let _ = clients.revocation_list("clients.crl", &[&leaked, &good]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tls_get(addr, "gw.test", ca.client_config(alpn, Some(&good)), "/").await.is_ok() {
        assert!(Instant::now() < deadline, "the new list was not taken up within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gateway may serve only over TLS (no `server.listen`): with client
/// certificates required, no plain port serves the same routes without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_can_serve_only_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let clients = Ca::new(dir.path(), "clients");
    let server = ca.server("gw", &["gw.test"]);
    let up = TestUpstream::echo("u").await;
    let tls = requiring_clients(&server, &clients);
    let gw = TestGateway::start_with(&format!("listen = none\n{tls}"), &tls_body(&up, ""));
    assert_eq!(gw.gateway.addr(), None, "no plain listener");
    let addr = gw.gateway.tls_addr().unwrap();
    let ok = tls_get(addr, "gw.test", ca.client_config(&[b"http/1.1"], Some(&clients.client("c"))), "/").await;
    assert_eq!(ok.map(|r| r.0), Ok(200));
    assert!(tls_get(addr, "gw.test", ca.client_config(&[b"http/1.1"], None), "/").await.is_err());
    // And with neither listener, the config names the key.
    let none = TestGateway::try_start("listen = none", &tls_body(&up, "")).err().map(|e| e.to_string());
    assert!(none.as_deref().is_some_and(|e| e.contains("server.listen: the gateway has no listener")), "{none:?}");
}

/// Gateway B forwards over TLS (custom CA, client certificate) to gateway
/// A, which terminates TLS and requires that certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_upstreams_with_a_custom_ca_and_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let a_cert: Issued = ca.server("a", &["127.0.0.1", "a.internal"]);
    let b_identity = ca.client("b");
    let up = TestUpstream::echo("origin").await;
    let a_tls = requiring_clients(&a_cert, &ca);
    let a = TestGateway::start_with(&a_tls, &tls_body(&up, ""));
    let a_addr = a.gateway.tls_addr().unwrap();
    let b = TestGateway::start(&to_a(a_addr, &ca, &b_identity));
    let r = get(&b.url("/through")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("origin"));
    assert_eq!(echoed_header(&r.json(), "x-forwarded-proto").as_deref(), Some("https"));
}

/// A listener with `forward_client_cert` tells upstreams the certificate a
/// client presented, in `X-Forwarded-Client-Cert` as Envoy writes it, over
/// HTTP/1 and HTTP/2; a client's own is taken out — with a certificate or
/// without, and by a listener without the setting too: upstreams in a
/// mesh act on it (it went upstream as the client wrote it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_a_client_presented_is_said_upstream() {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let (site, alice) = (ca.server("site", &["gw.test"]), ca.client("alice"));
    let leaf = CertificateDer::pem_file_iter(&alice.cert).unwrap().next().unwrap().unwrap();
    let hash: String = sha2::Sha256::digest(&leaf).iter().map(|b| format!("{b:02x}")).collect();
    let up = TestUpstream::echo("origin").await;
    let spoofed = [("x-forwarded-client-cert", "Hash=00;Subject=\"CN=admin\"")];
    for forward in [true, false] {
        let server = format!(
            "{}client_ca = \"{}\"\nclient_auth = \"optional\"\nforward_client_cert = {forward}\n",
            site.tls_listener(),
            ca.pem.display()
        );
        let gw = TestGateway::start_with(&server, &tls_body(&up, ""));
        let addr = gw.gateway.tls_addr().unwrap();
        for alpn in [&b"http/1.1"[..], b"h2"] {
            for presented in [Some(&alice), None] {
                let client = ca.client_config(&[alpn], presented);
                let (status, said, body) = tls_get_with(addr, "gw.test", client, "/", &spoofed).await.unwrap();
                assert_eq!((status, said.as_deref()), (200, Some(alpn)), "{body}");
                let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
                let want = (forward && presented.is_some())
                    .then(|| format!("Hash={hash};Subject=\"CN=alice\";DNS=client.test"));
                let case =
                    format!("forward {forward}, {}, presented {}", String::from_utf8_lossy(alpn), presented.is_some());
                assert_eq!(echoed_header(&doc, "x-forwarded-client-cert"), want, "{case}");
            }
        }
    }
}

/// The forwarding fields reach an HTTP/2 upstream as an HTTP/1 one (the
/// fields are put into the request's map there, not written with its
/// head): the prefix `strip_prefix` took off, the client's certificate
/// (`forward_client_cert`) and address (`X-Real-IP`), in place of what the
/// client said of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarding_fields_reach_an_http2_upstream_too() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let (site, alice) = (ca.server("site", &["gw.test"]), ca.client("alice"));
    let (upstream, _stop) = wasmgate_tests::upstream::h2_echo("h2").await;
    let server = format!(
        "{}client_ca = \"{}\"\nclient_auth = \"optional\"\nforward_client_cert = true\n",
        site.tls_listener(),
        ca.pem.display()
    );
    let gw = TestGateway::start_with(
        &server,
        &format!(
            "[upstreams.g]\nendpoints = [\"{upstream}\"]\nprotocol = \"http2\"\n\
             [[routes]]\nmatch = {{ prefix = \"/api\" }}\nupstream = \"g\"\nstrip_prefix = \"/api\"\n"
        ),
    );
    let said = [
        ("x-real-ip", "203.0.113.9"),
        ("x-forwarded-prefix", "/evil"),
        ("x-forwarded-client-cert", "Hash=00;Subject=\"CN=admin\""),
    ];
    let addr = gw.gateway.tls_addr().unwrap();
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let client = ca.client_config(&[alpn], Some(&alice));
        let (status, _, body) = tls_get_with(addr, "gw.test", client, "/api/users", &said).await.unwrap();
        assert_eq!(status, 200, "{body}");
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!((doc["path"].as_str(), doc["version"].as_str()), (Some("/users"), Some("HTTP/2.0")));
        let field = |name: &str| echoed_header(&doc, name);
        assert_eq!(field("x-forwarded-prefix").as_deref(), Some("/api"));
        assert_eq!(field("x-real-ip").as_deref(), Some("127.0.0.1"), "the client's replaced by this hop's");
        let cert = field("x-forwarded-client-cert").unwrap_or_default();
        assert!(cert.starts_with("Hash=") && cert.ends_with(";Subject=\"CN=alice\";DNS=client.test"), "{cert}");
        assert_eq!(wasmgate_tests::upstream::echoed_headers(&doc, "x-forwarded-client-cert").len(), 1);
    }
}

/// Plugins read the certificate a client presented
/// (`request.client-certificate`, WIT 0.1.5): abac authorizes on its
/// subject and names (`context.client_cert`), as verified at the handshake
/// — a client without one, or on the plain listener, has none, whatever
/// its fields say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_authorizes_on_the_certificate_a_client_presented() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let (site, alice, bob) = (ca.server("site", &["gw.test"]), ca.client("alice"), ca.client("bob"));
    let up = TestUpstream::echo("origin").await;
    let policy = r#"permit(principal, action, resource) when { context has client_cert && context.client_cert.subject == "CN=alice" && context.client_cert.dns_names.contains("client.test") && context.client_cert.hash != "" };"#;
    let server = format!("{}client_ca = \"{}\"\nclient_auth = \"optional\"\n", site.tls_listener(), ca.pem.display());
    let gw = TestGateway::start_with(
        &server,
        &format!(
            "[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\n\
             plugins = [{{ use = \"abac\", config = {{ policies = '{policy}', anonymous = \"evaluate\" }} }}]\n",
            up.addr
        ),
    );
    let addr = gw.gateway.tls_addr().unwrap();
    let spoofed = [("x-forwarded-client-cert", "Hash=00;Subject=\"CN=alice\";DNS=client.test")];
    for (who, presented, status) in [("alice", Some(&alice), 200), ("bob", Some(&bob), 403), ("nobody", None, 403)] {
        for alpn in [&b"http/1.1"[..], b"h2"] {
            let client = ca.client_config(&[alpn], presented);
            let (got, _, body) = tls_get_with(addr, "gw.test", client, "/", &spoofed).await.unwrap();
            assert_eq!(got, status, "{who} over {}: {body}", String::from_utf8_lossy(alpn));
        }
    }
    let plain = wasmgate_tests::send(
        Request::get(gw.url("/")).header(spoofed[0].0, spoofed[0].1).body(Full::<Bytes>::default()).unwrap(),
    )
    .await;
    assert_eq!(plain.status, 403, "no certificate over plain HTTP");
}

/// The certificates the gateway presents — the listener's and an
/// upstream's client certificate — are in `/metrics` with when they expire
/// (for an alert before they do); a reload that drops one drops its series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presented_certificates_expiry_is_a_metric() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let (site, identity) = (ca.server("site", &["gw.test"]), ca.client("b"));
    let upstream_tls = |cert: &str| {
        format!("[upstreams.a]\nendpoints = [\"127.0.0.1:9\"]\ntls = {{ ca = \"{}\"{cert} }}\n", ca.pem.display())
    };
    let with_identity = format!(", cert = \"{}\", key = \"{}\"", identity.cert.display(), identity.key.display());
    let routes = "[[routes]]\nupstream = \"a\"\n";
    let server = format!("{}{}", site.tls_listener(), wasmgate_tests::ADMIN);
    let gw = TestGateway::start_with(&server, &format!("{}{routes}", upstream_tls(&with_identity)));
    let series = |role: &str, file: &std::path::Path| {
        format!("wasmgate_tls_certificate_expiration_timestamp_seconds{{role=\"{role}\",file=\"{}\"}}", file.display())
    };
    let (listener, client) = (series("listener", &site.cert), series("upstream:a", &identity.cert));
    let text = gw.metrics().await;
    assert_eq!(wasmgate_tests::sample(&text, &listener), Some(site.not_after.to_string().as_str()), "{text}");
    assert_eq!(wasmgate_tests::sample(&text, &client), Some(identity.not_after.to_string().as_str()), "{text}");

    gw.write_config(&format!("{}{routes}", upstream_tls("")));
    assert_eq!(gw.gateway.reload().map_err(|e| e.to_string()), Ok(1));
    let text = gw.metrics().await;
    assert_eq!(wasmgate_tests::sample(&text, &listener), Some(site.not_after.to_string().as_str()), "{text}");
    assert_eq!(wasmgate_tests::sample(&text, &client), None, "gone with the certificate: {text}");
}

/// Gateway B's config: one route to gateway A at `a_addr` over TLS (A's
/// certificate from `ca`, for `a.internal`), with `identity` as B's client
/// certificate.
fn to_a(a_addr: SocketAddr, ca: &Ca, identity: &Issued) -> String {
    format!(
        r#"[upstreams.a]
endpoints = ["{a_addr}"]
tls = {{ ca = "{}", server_name = "a.internal", cert = "{}", key = "{}" }}
[[routes]]
upstream = "a"
"#,
        ca.pem.display(),
        identity.cert.display(),
        identity.key.display()
    )
}

/// A connection not made within a try's timeout, with the request's time
/// left, is a connect failure: nothing was sent, so the request goes to
/// another endpoint under the default retry policy. It was a timeout: a
/// 504, never retried, whenever the silent endpoint was picked first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_not_made_within_a_try_is_a_connect_failure() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let cert = ca.server("a", &["a.internal"]);
    let up = TestUpstream::echo("origin").await;
    let a = TestGateway::start_with(&cert.tls_listener(), &tls_body(&up, ""));
    let good = a.gateway.tls_addr().unwrap();
    // Accepts, and never answers the TLS handshake.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let b = TestGateway::start(&format!(
        "[upstreams.a]\nendpoints = [\"{silent_addr}\", \"{good}\"]\nconnect_timeout = \"5s\"\n\
         tls = {{ ca = \"{}\", server_name = \"a.internal\" }}\n\
         [[routes]]\nupstream = \"a\"\ntimeout = \"5s\"\ntry_timeout = \"300ms\"\n",
        ca.pem.display()
    ));
    for i in 0..4 {
        let r = get(&b.url("/")).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    held.abort();
}

/// A TLS upstream's health checks name its server name (with the
/// endpoint's port), as its requests' certificate check does: an upstream
/// that serves by name (here a gateway whose one route is for
/// `a.internal`) answered checks sent to its address 404, and went down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_to_a_tls_upstream_name_its_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let cert = ca.server("a", &["a.internal"]);
    let up = TestUpstream::echo("origin").await;
    let a = TestGateway::start_with(
        &cert.tls_listener(),
        &format!(
            "[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nmatch = {{ host = \"a.internal\" }}\nupstream = \"u\"\n",
            up.addr
        ),
    );
    let a_addr = a.gateway.tls_addr().unwrap();
    let b = TestGateway::start_with(
        wasmgate_tests::ADMIN,
        &format!(
            "[upstreams.a]\nendpoints = [\"{a_addr}\"]\ntls = {{ ca = \"{}\", server_name = \"a.internal\" }}\n\
             health = {{ path = \"/health\", interval = \"100ms\", unhealthy_threshold = 1 }}\n\
             [[routes]]\nupstream = \"a\"\n",
            ca.pem.display()
        ),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gauge = format!(r#"wasmgate_upstream_endpoint_healthy{{upstream="a",endpoint="{a_addr}"}}"#);
    let text = b.metrics().await;
    assert_eq!(wasmgate_tests::sample(&text, &gauge), Some("1"), "{text}");
    // (Proxied requests carry their client's `Host`.)
    let r = wasmgate_tests::send(wasmgate_tests::get_request(&b.url("/through"), &[("host", "a.internal")])).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// An upstream's client certificate rotated in place (the same files, a
/// new identity): the reload that follows connects with the new one,
/// though the config did not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_upstream_client_certificate_is_used_after_the_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, trusted, untrusted) =
        (Ca::new(dir.path(), "ca"), Ca::new(dir.path(), "trusted"), Ca::new(dir.path(), "untrusted"));
    let a_cert = ca.server("a", &["a.internal"]);
    let up = TestUpstream::echo("origin").await;
    let a_tls = requiring_clients(&a_cert, &trusted);
    let a = TestGateway::start_with(&a_tls, &tls_body(&up, ""));
    let a_addr = a.gateway.tls_addr().unwrap();
    // B's identity is first from a CA that A does not trust.
    let b_identity = untrusted.client("b");
    let b_body = to_a(a_addr, &ca, &b_identity);
    let b = TestGateway::start(&b_body);
    assert_eq!(get(&b.url("/")).await.status, 502, "A refuses B's certificate");
    let renewed = trusted.client("b");
    assert_eq!((&renewed.cert, &renewed.key), (&b_identity.cert, &b_identity.key));
    assert_eq!(b.gateway.reload().ok(), Some(1));
    let r = get(&b.url("/")).await;
    assert_eq!(r.status, 200, "the rotated certificate: {}", r.text());
    assert_eq!(r.header("x-upstream"), Some("origin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_through() {
    let up = TestUpstream::echo("ws").await;
    let gw = TestGateway::start(&tls_body(&up, ""));
    let (head, mut s) =
        ask_upgrade(&gw, "sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    // The tunnel is open: bytes go to the upstream and come back.
    tunnel_echoes(&mut s).await;

    // Bytes the client sends right behind its upgrade request, in the same
    // write, reach the upstream once the tunnel is open.
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /chat HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nearly bytes")
        .await
        .unwrap();
    let mut pending = Vec::new();
    let head = wasmgate_tests::read_head(&mut s, &mut pending).await.unwrap_or_default();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    while pending.len() < 11 {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the echo: {}", String::from_utf8_lossy(&pending));
        pending.extend_from_slice(&buf[..n]);
    }
    assert_eq!(pending, b"early bytes");

    // An upgrade its connection cannot make — with a body (it would be
    // lost), or in HTTP/1.0 (RFC 9110 §7.8) — goes as a plain request, its
    // body whole and without its `Upgrade`.
    // And so does one that offers `h2c`: an HTTP/2 connection made by
    // upgrade would carry requests no route or plugin sees.
    for ask in [
        &b"POST /h2c HTTP/1.1\r\nhost: x\r\nconnection: upgrade, close\r\nupgrade: h2c\r\ncontent-length: 5\r\n\r\nhello"[..],
        b"GET /old HTTP/1.0\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        b"GET /h2c HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings, close\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    ] {
        let resp = raw(gw.addr(), ask).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        let doc: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(echoed_header(&doc, "upgrade"), None, "{body}");
        let sent = if ask.starts_with(b"POST") { "hello" } else { "" };
        assert_eq!(doc["body"].as_str(), Some(sent), "{body}");
    }
}

/// A route's `upgrades` lists the protocols it passes: an offer naming any
/// other goes on as a plain request without its `Upgrade`, and
/// `upgrades = []` passes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_passes_only_the_upgrades_it_lists() {
    let up = TestUpstream::echo("ws").await;
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n\
         [[routes]]\nmatch = {{ prefix = \"/chat\" }}\nupstream = \"u\"\nupgrades = [\"WebSocket\"]\n\
         [[routes]]\nmatch = {{ prefix = \"/plain\" }}\nupstream = \"u\"\nupgrades = []\n",
        up.addr
    ));
    let (head, mut s) = ask_upgrade(&gw, "").await;
    assert!(head.starts_with("http/1.1 101"), "websocket is listed: {head}");
    tunnel_echoes(&mut s).await;
    for (path, offer) in [("/chat", "foo"), ("/chat", "websocket, foo"), ("/plain", "websocket")] {
        let ask = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: upgrade, close\r\nupgrade: {offer}\r\n\r\n");
        let resp = raw(gw.addr(), ask.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{path} {offer}: {resp}");
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        let doc: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(echoed_header(&doc, "upgrade"), None, "{path} {offer}: {body}");
    }
}

/// A tunnel is a request in flight for as long as it is open: it holds its
/// upstream's bulkhead place (a thousand tunnels counted as none). And one
/// with no byte either way for `tunnel_idle_timeout` is closed (a peer gone
/// without a word held both connections for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_holds_its_bulkhead_place_and_closes_when_idle() {
    let up = TestUpstream::echo("ws").await;
    let gw = TestGateway::start_with(
        "tunnel_idle_timeout = \"600ms\"",
        &format!(
            "[upstreams.u]\nendpoints = [\"{}\"]\nmax_concurrent = 1\nmax_queue = 0\n[[routes]]\nupstream = \"u\"\n",
            up.addr
        ),
    );
    let (head, mut s) = ask_upgrade(&gw, "").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    tunnel_echoes(&mut s).await;
    assert_eq!(get(&gw.url("/")).await.status, 503, "the tunnel holds the one place");
    // Kept open while bytes pass: 1.2 s in all, 300 ms apart.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tunnel_echoes(&mut s).await;
    }
    // Then idle: closed, and its place free again.
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("closed within 5 s");
    assert!(read.is_err() || read.is_ok_and(|n| n == 0), "the gateway closed the tunnel");
    assert_eq!(get(&gw.url("/")).await.status, 200, "the place is free again");
}

/// Asks `gw` to upgrade `/chat` to WebSocket, with `extra` header lines;
/// the response head (lowercased) and the connection.
async fn ask_upgrade(gw: &TestGateway, extra: &str) -> (String, tokio::net::TcpStream) {
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let ask = format!("GET /chat HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n{extra}\r\n");
    s.write_all(ask.as_bytes()).await.unwrap();
    let mut pending = Vec::new();
    let head = wasmgate_tests::read_head(&mut s, &mut pending).await.unwrap_or_default();
    assert!(pending.is_empty() || !head.starts_with("HTTP/1.1 101"), "bytes before the tunnel's: {pending:?}");
    (head.to_lowercase(), s)
}

/// Bytes written into an upgraded connection come back from the echoing upstream.
async fn tunnel_echoes(s: &mut tokio::net::TcpStream) {
    s.write_all(b"ping over the tunnel").await.unwrap();
    let mut buf = [0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"ping over the tunnel");
}

/// A route's plugins see an upgrade request like any other: one that
/// answers refuses the upgrade; otherwise the `101` carries the response
/// edits of the chain, fixed ones and a response hook's alike, and the
/// tunnel opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_through_a_plugin_chain() {
    let up = TestUpstream::echo("ws").await;
    let fixed = r#"plugins = [
  { use = "deny", config = { headers = { "x-deny" = "*" } } },
  { use = "add-header", config = { response = { set = { "x-frame-options" = "DENY" } } } },
]
"#;
    let gw = TestGateway::start(&tls_body(&up, fixed));
    let (head, mut s) = ask_upgrade(&gw, "").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket") && head.contains("x-frame-options: deny"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    tunnel_echoes(&mut s).await;
    let (head, _) = ask_upgrade(&gw, "x-deny: 1\r\n").await;
    assert!(head.starts_with("http/1.1 403"), "the plugin's answer, not an upgrade: {head}");
    assert_eq!(up.hits(), 1, "the refused upgrade never reached the upstream");

    // A response hook keeps the request for the response phase and sends a
    // copy: the copy carries the client's socket for the tunnel.
    let hook = r#"plugins = [
  { use = "transform", config = { response = { headers = { rename = { "x-upstream" = "x-was-upstream" } } } } },
]
"#;
    let gw = TestGateway::start(&tls_body(&up, hook));
    let (head, mut s) = ask_upgrade(&gw, "").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("x-was-upstream: ws") && !head.contains("x-upstream:"), "the hook ran: {head}");
    tunnel_echoes(&mut s).await;
}

/// A client's body that fails on its way to an HTTP/2 upstream is the
/// client's answer (413, 408), not a 502 counted against the upstream: hyper
/// resets the stream and reports only that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_body_failing_towards_an_http2_upstream_is_the_clients_error() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start_with(
        "body_read_timeout = \"300ms\"",
        &format!(
            "[upstreams.u]\nendpoints = [\"{}\"]\nprotocol = \"http2\"\nbreaker = {{ consecutive_failures = 1 }}\n[[routes]]\nupstream = \"u\"\nmax_body = \"1KiB\"\n",
            up.addr
        ),
    );
    // Chunked, so the limit is found as the body streams.
    let chunk = format!("800\r\n{}\r\n", "x".repeat(0x800));
    let big = format!("POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n");
    let out = raw(gw.addr(), big.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    let stalled = "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n";
    let out = raw(gw.addr(), stalled.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    // Neither counted against the upstream: its breaker, which opens on one
    // failure, lets a body within the limit through.
    let small =
        "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let out = raw(gw.addr(), small.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200") && out.contains(r#""body":"hello""#), "{out}");
}

/// A request whose time runs out while its body is still awaited from the
/// client is the client's 408, over either protocol to the upstream: it was
/// a 504, a failure held against the endpoint and its breaker, so a few
/// slow uploads from anyone opened the breaker for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_late_from_the_client_is_not_held_against_the_upstream() {
    let up = TestUpstream::echo("u").await;
    for protocol in ["http1", "http2"] {
        let gw = TestGateway::start_with(
            &format!("body_read_timeout = \"10s\"\n{}", wasmgate_tests::ADMIN),
            &format!(
                "[upstreams.u]\nendpoints = [\"{}\"]\nprotocol = \"{protocol}\"\nbreaker = {{ consecutive_failures = 1 }}\n\
                 [[routes]]\nupstream = \"u\"\ntimeout = \"500ms\"\n",
                up.addr
            ),
        );
        for stalled in [
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly part",
            "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        ] {
            let out = raw(gw.addr(), stalled.as_bytes()).await;
            assert!(out.starts_with("HTTP/1.1 408"), "{protocol}: {out}");
        }
        // The breaker, which opens on one failure, is still closed.
        let whole = "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";
        let out = raw(gw.addr(), whole.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 200") && out.contains(r#""body":"hello""#), "{protocol}: {out}");
        let series =
            format!(r#"wasmgate_upstream_requests_total{{upstream="u",endpoint="{}",outcome="client"}}"#, up.addr);
        let text = gw.metrics_once(&series, "2", Duration::from_secs(5)).await;
        assert_eq!(wasmgate_tests::sample(&text, &series), Some("2"), "{protocol}: {text}");
    }
}

/// An HTTP/2 upstream that goes silent in the middle of a body for its
/// `read_timeout` is given up on, as an HTTP/1 one is: the client's
/// response is cut off (it waited for ever, the upstream answering pings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_upstream_silent_mid_body_is_given_up_on() {
    let (upstream, _stop) = wasmgate_tests::upstream::h2_stalling().await;
    let gw = TestGateway::start(&format!(
        "[upstreams.g]\nendpoints = [\"{upstream}\"]\nprotocol = \"http2\"\nread_timeout = \"300ms\"\n[[routes]]\nupstream = \"g\"\n"
    ));
    let start = Instant::now();
    // `raw` reads until the gateway closes, or for 5 s.
    let out = raw(gw.addr(), b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let took = start.elapsed();
    assert!(out.starts_with("HTTP/1.1 200") && out.contains("part"), "{out}");
    assert!(!out.ends_with("0\r\n\r\n"), "cut off, not ended: {out}");
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(4), "closed after {took:?}");
}

/// The first requests to an HTTP/2 upstream, arriving together, wait for
/// one connection together: each made its own (all but the last dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_arriving_together_share_one_new_http2_connection() {
    let (upstream, accepted, _stop) = wasmgate_tests::upstream::h2_ok().await;
    let gw = TestGateway::start_with(
        "workers = 1",
        &format!("[upstreams.g]\nendpoints = [\"{upstream}\"]\nprotocol = \"http2\"\n[[routes]]\nupstream = \"g\"\n"),
    );
    let url = gw.url("/");
    let answers = futures::future::join_all((0..20).map(|_| get(&url))).await;
    assert!(answers.iter().all(|r| r.status == 200 && r.text() == "ok"));
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "one worker, one connection");
}

/// A worker puts at most `max_streams_per_connection` requests in flight on
/// one HTTP/2 connection to an endpoint and opens another for more: an
/// upstream allowing 2 streams a connection answers 6 requests at once only
/// if they come on 3 connections (on one, 4 waited in h2's queue for a
/// stream that never ended: 503 from the upstream); then the connections
/// are reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_http2_upstream_connection_makes_the_worker_open_another() {
    let (upstream, accepted, _stop) = wasmgate_tests::upstream::h2_gathering(2, 6).await;
    let gw = TestGateway::start_with(
        "workers = 1",
        &format!(
            "[upstreams.g]\nendpoints = [\"{upstream}\"]\nprotocol = \"http2\"\nmax_streams_per_connection = 2\n\
             [[routes]]\nupstream = \"g\"\n"
        ),
    );
    let url = gw.url("/");
    let answers = futures::future::join_all((0..6).map(|_| get(&url))).await;
    for r in &answers {
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"), "all six in flight at once");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3, "two streams a connection");
    // One at a time: a stream is counted until the gateway drops its
    // response body, which may be just after the client has it all.
    for _ in 0..4 {
        assert_eq!(get(&url).await.status, 200);
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3, "reused");
}

/// A stream given up on (its request timed out) frees its place on the
/// connection: the next request goes on the same one, with one stream a
/// connection (it opened another for each, had the place stayed taken).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_stream_frees_its_place_on_the_connection() {
    // Answers no request (it waits for 100 at once).
    let (upstream, accepted, _stop) = wasmgate_tests::upstream::h2_gathering(1, 100).await;
    let gw = TestGateway::start_with(
        "workers = 1",
        &format!(
            "[upstreams.g]\nendpoints = [\"{upstream}\"]\nprotocol = \"http2\"\nmax_streams_per_connection = 1\n\
             [[routes]]\nupstream = \"g\"\ntimeout = \"200ms\"\n"
        ),
    );
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/")).await.status, 504);
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1, "one connection, its place freed each time");
}

/// An HTTP/2 upstream connection no request has taken for the upstream's
/// `idle_timeout` is closed (hyper's pings kept it open for ever); the next
/// request makes a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_upstream_connection_is_closed() {
    let (upstream, accepted, _stop) = wasmgate_tests::upstream::h2_ok().await;
    let gw = TestGateway::start_with(
        &format!("workers = 1\n{}", wasmgate_tests::ADMIN),
        &format!(
            "[upstreams.g]\nendpoints = [\"{upstream}\"]\nprotocol = \"http2\"\nidle_timeout = \"1s\"\n\
             [[routes]]\nupstream = \"g\"\n"
        ),
    );
    let series = r#"wasmgate_upstream_connections{upstream="g"}"#;
    assert_eq!(get(&gw.url("/")).await.status, 200);
    let text = gw.metrics().await;
    assert_eq!(wasmgate_tests::sample(&text, series), Some("1"), "{text}");
    let text = gw.metrics_once(series, "0", Duration::from_secs(5)).await;
    assert_eq!(wasmgate_tests::sample(&text, series), Some("0"), "closed: {text}");
    assert_eq!(get(&gw.url("/")).await.status, 200);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2, "a new connection");
}

/// A stream an HTTP/2 upstream turns away unprocessed (RFC 9113 §8.7) —
/// refused (sent again on the same connection), or past the last one of a
/// graceful `GOAWAY`, as an upstream shutting down for a deploy does (on a
/// new connection) — goes again, whatever its method: no retry is
/// configured, and the client gets the answer (it got a 502). A stream
/// reset otherwise may have been processed, and is not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_an_http2_upstream_turns_away_goes_again() {
    use wasmgate_tests::upstream::{TurnAway, h2_turning_away};
    for how in [TurnAway::Refuse, TurnAway::GoAway] {
        for (method, body, sent) in [("GET", "", ""), ("POST", "{}", r#"{"k":"v"}"#)] {
            let (upstream, accepted, _stop) = h2_turning_away(how).await;
            let gw = TestGateway::start(&format!(
                "[upstreams.g]\nendpoints = [\"{upstream}\"]\nprotocol = \"http2\"\n[[routes]]\nupstream = \"g\"\nmax_body = \"1KiB\"\n{}",
                // A body held whole (a plugin editing it) can go again.
                if body.is_empty() {
                    ""
                } else {
                    "plugins = [{ use = \"transform\", config = { request = { body = { set = { \"/k\" = \"v\" } } } } }]\n"
                }
            ));
            let head = format!(
                "{method} / HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let out = raw(gw.addr(), head.as_bytes()).await;
            assert!(out.starts_with("HTTP/1.1 200"), "{how:?} {method}: {out}");
            assert!(out.contains(&format!("x-method: {method}")) && out.contains(&format!("x-body: {sent}")), "{out}");
            // Refused: again on the same connection; gone away: on a new one.
            let connections = if how == TurnAway::Refuse { 1 } else { 2 };
            assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), connections, "{how:?} {method}");
        }
    }
    // An upstream that went away and stopped listening: the request, sent
    // again, cannot be; it goes to the other endpoint, as after a connect
    // failure (both requests answered, whichever endpoint the first picks).
    let (leaving, _, _stop) = h2_turning_away(TurnAway::Leave).await;
    let (other, _, _stop) = h2_turning_away(TurnAway::Refuse).await;
    let gw = TestGateway::start_with(
        "workers = 1",
        &format!(
            "[upstreams.g]\nendpoints = [\"{leaving}\", \"{other}\"]\nprotocol = \"http2\"\n[[routes]]\nupstream = \"g\"\n"
        ),
    );
    for _ in 0..2 {
        let out = raw(gw.addr(), b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    let (upstream, accepted, _stop) = h2_turning_away(TurnAway::Reset).await;
    let gw = TestGateway::start(&format!(
        "[upstreams.g]\nendpoints = [\"{upstream}\"]\nprotocol = \"http2\"\n[[routes]]\nupstream = \"g\"\n"
    ));
    let out = raw(gw.addr(), b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_passes_through_over_h2c_with_trailers() {
    let (upstream, _stop) = grpc().await;
    let gw = TestGateway::start(&format!(
        "[upstreams.g]\nendpoints = [\"{upstream}\"]\nprotocol = \"http2\"\n[[routes]]\nupstream = \"g\"\n"
    ));
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let req = Request::post(gw.url("/helloworld.Greeter/SayHello"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-forwarded-for", "203.0.113.9")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi")))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("x-te").map(|v| v.as_bytes()), Some(&b"trailers"[..]), "te: trailers kept");
    assert_eq!(resp.headers().get("x-path").map(|v| v.as_bytes()), Some(&b"/helloworld.Greeter/SayHello"[..]));
    assert_eq!(
        resp.headers().get("x-seen-forwarded-for").map(|v| v.as_bytes()),
        Some(&b"203.0.113.9, 127.0.0.1"[..]),
        "an HTTP/2 upstream gets the forwarding fields too"
    );
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
    assert_eq!(collected.to_bytes().len(), 10);
}

/// A request to an HTTP/2 upstream retried after a connect failure keeps
/// its `:authority`: it had been prepared for the first endpoint, and went
/// to the next with that endpoint's address (a virtual-hosted upstream
/// answers it 404 just when the retry should rescue it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_to_an_http2_upstream_keeps_the_authority() {
    let (upstream, _stop) = grpc().await;
    let gw = TestGateway::start(&format!(
        "{}[upstreams.g]\nendpoints = [\"{}\", \"{upstream}\"]\nprotocol = \"http2\"\n\
         [[routes]]\nname = \"r\"\nupstream = \"g\"\n",
        wasmgate_tests::ADMIN,
        dead_addr()
    ));
    // Three (the retry budget's floor a second): some try the dead
    // endpoint first.
    for i in 0..3 {
        let r = wasmgate_tests::get_with(&gw.url("/x"), &[("host", "api.example")]).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("x-authority"), Some("api.example"), "request {i}");
    }
    let text = gw.metrics().await;
    let retried = wasmgate_tests::sample(&text, r#"wasmgate_retries_total{route="r",upstream="g"}"#);
    assert!(retried.and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n >= 1), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_timeout_runs_from_each_head_on_a_kept_connection() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start_with("header_read_timeout = \"400ms\"", &tls_body(&up, ""));
    let mut conn = wasmgate_tests::RawConn::connect(gw.addr()).await;
    // Five requests 150 ms apart: 750 ms on one connection, each head well
    // within its own 400 ms.
    for i in 0..5 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        conn.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
        let head = conn.response(false).await.map(|(head, _)| head).unwrap_or_default();
        assert!(head.starts_with("http/1.1 200"), "request {i}: {head}");
    }
    // Then idle: the connection is closed once the next head is late.
    let start = Instant::now();
    assert_eq!(conn.response(false).await, None, "closed while idle");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(350) && waited < Duration::from_secs(3), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_after_the_header_timeout() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start_with("header_read_timeout = \"300ms\"", &tls_body(&up, ""));
    // The preface and an empty SETTINGS frame, then nothing (not even the
    // ack of the server's ping): closed, with a GOAWAY first.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got)).await;
    assert!(matches!(read, Ok(Ok(_))), "closed: {read:?}");
    assert!(start.elapsed() >= Duration::from_millis(250), "{:?}", start.elapsed());
    let mut frames = Vec::new();
    let mut rest = &got[..];
    while let [a, b, c, kind, ..] = *rest {
        let len = 9 + (usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c));
        frames.push(kind);
        rest = rest.get(len.min(rest.len())..).unwrap_or_default();
    }
    assert!(frames.contains(&7), "a GOAWAY among the frames {frames:?}");

    // A stream in flight longer than that keeps its connection; once it
    // has ended and the connection is idle, it is closed.
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get(gw.url("/slow/900")).body(Full::<Bytes>::default()).unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.into_body().collect().await.is_ok());
    let closed = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(matches!(closed, Ok(Ok(Ok(())))), "closed once idle: {closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_on_a_kept_connection_carries_its_own_header_names() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&tls_body(&up, ""));
    let mut conn = wasmgate_tests::RawConn::connect(gw.addr()).await;
    // The connection keeps the names of the last head by place: the same
    // places with another name of the same length, another case, a prefix,
    // fewer and more.
    let heads: [&[&str]; 5] = [
        &["X-One: 1", "X-Two: 2"],
        &["X-One: 1", "X-Six: 6"],
        &["X-ONE: 1", "X-Si: 6"],
        &["X-Four: 4"],
        &["X-Four: 4", "X-Two: 2", "X-One: 1"],
    ];
    for fields in heads {
        let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for f in fields {
            req.push_str(f);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        conn.write(req.as_bytes()).await;
        let (head, body) = conn.response(false).await.expect("a response");
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let doc: serde_json::Value = serde_json::from_slice(&body).expect("an echo");
        let sent: Vec<String> = doc["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pair| pair[0].as_str().filter(|n| n.starts_with("x-") && !n.starts_with("x-forwarded")))
            // This hop's.
            .filter(|n| !["x-request-id", "x-real-ip"].contains(n))
            .map(str::to_owned)
            .collect();
        let asked: Vec<String> =
            fields.iter().map(|f| f.split(':').next().unwrap_or_default().to_ascii_lowercase()).collect();
        assert_eq!(sent, asked, "{req}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let up = TestUpstream::echo("u").await;
    let gw =
        TestGateway::start_with("header_read_timeout = \"300ms\"\nbody_read_timeout = \"300ms\"", &tls_body(&up, ""));
    // Slowloris: a head that never ends. The connection is closed.
    let start = Instant::now();
    let out = raw(gw.addr(), b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ").await;
    assert!(start.elapsed() < Duration::from_secs(3), "closed by the header timeout");
    assert!(!out.contains("200 OK"), "{out}");
    // A body that stalls: 408.
    let out = raw(gw.addr(), b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly part").await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert_eq!(up.hits(), 1, "the stalled body reached the upstream as a stream, then failed");
}

/// A TLS client that stops reading is let go of after `send_timeout`, as a
/// plain one is: the connection was closed by a `close_notify` that waited
/// behind the bytes the client did not take, for ever (holding its socket,
/// and the shutdown for its whole `shutdown_timeout`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_stops_reading_is_let_go_of() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let site = ca.server("site", &["a.test"]);
    let up = TestUpstream::echo("u").await;
    let server = format!("send_timeout = \"300ms\"\nshutdown_timeout = \"60s\"\n{}", site.tls_listener());
    let gw = TestGateway::start_with(&server, &tls_body(&up, ""));
    let addr = gw.gateway.tls_addr().expect("TLS listener");
    // A small receive window, so the response backs up into the gateway.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let mut tls = tls_over(tcp, "a.test", ca.client_config(&[b"http/1.1"], None)).await.unwrap();
    tls.write_all(format!("GET /bytes/{} HTTP/1.1\r\nhost: a.test\r\n\r\n", 32 << 20).as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    // Reading nothing, well past the send timeout: the connection is gone
    // by now, so the shutdown has nothing to wait for.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped = tokio::time::timeout(Duration::from_secs(20), tokio::task::spawn_blocking(move || drop(gw))).await;
    assert!(stopped.is_ok(), "stopped without waiting for the 60 s shutdown_timeout");
    // And the client, reading at last, is not told the response was whole.
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut got)).await.unwrap();
    assert!(read.is_err(), "cut off without close_notify: {} bytes", got.len());
    assert!(got.starts_with(b"HTTP/1.1 200") && got.len() < 32 << 20, "{} bytes", got.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_in_flight() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start_with("shutdown_timeout = \"60s\"", &tls_body(&up, ""));
    // A keep-alive connection between requests does not hold shutdown up.
    let mut idle = wasmgate_tests::RawConn::connect(gw.addr()).await;
    idle.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(idle.response(false).await.is_some_and(|(head, _)| head.starts_with("http/1.1 200")));
    let url = gw.url("/slow/500");
    let in_flight = tokio::spawn(async move {
        let r = get(&url).await;
        (r.status.as_u16(), r.headers.get("connection").map(|v| v.as_bytes().to_vec()))
    });
    assert!(wasmgate_tests::eventually(Duration::from_secs(3), || up.in_flight() == 1).await);
    let addr = gw.addr();
    let stopped = tokio::time::timeout(Duration::from_secs(20), tokio::task::spawn_blocking(move || drop(gw))).await;
    assert!(stopped.is_ok(), "stopped without waiting for the 60 s deadline");
    assert!(idle.closed().await, "the idle connection was closed");
    let (status, connection) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the in-flight request finished");
    assert_eq!(connection.as_deref(), Some(&b"close"[..]), "and its connection is not kept");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

/// An open WebSocket tunnel is drained like a request in flight: it goes on
/// working after shutdown begins, and is closed at `shutdown_timeout`
/// (it was cut at once). Meanwhile the admin listener still answers, with
/// `/health/ready` 503 (it closed with the others).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_tunnels_up_to_its_deadline_and_the_admin_listener_outlasts_it() {
    let up = TestUpstream::echo("ws").await;
    let body = format!("[admin]\nlisten = \"127.0.0.1:0\"\n{}", tls_body(&up, ""));
    let gw = TestGateway::start_with("shutdown_timeout = \"2s\"", &body);
    let admin = gw.gateway.admin_addr().unwrap();
    let (head, mut s) = ask_upgrade(&gw, "").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    tunnel_echoes(&mut s).await;
    assert_eq!(get(&format!("http://{admin}/health/ready")).await.status, 200);
    let stopping = tokio::task::spawn_blocking(move || drop(gw));
    // The readiness probe's status, `None` once nothing answers.
    let ready = || async move {
        let mut probe = tokio::net::TcpStream::connect(admin).await.ok()?;
        probe.write_all(b"GET /health/ready HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").await.ok()?;
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), probe.read_to_string(&mut out)).await.ok()?.ok()?;
        out.get(9..12)?.parse::<u16>().ok()
    };
    let mut seen = ready().await;
    for _ in 0..100 {
        if seen != Some(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen = ready().await;
    }
    assert_eq!(seen, Some(503), "out of rotation while draining");
    tunnel_echoes(&mut s).await;
    assert!(!stopping.is_finished(), "the open tunnel holds the drain");
    tokio::time::timeout(Duration::from_secs(15), stopping).await.unwrap().unwrap();
    let mut buf = [0u8; 8];
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "the tunnel is closed at the deadline: {closed:?}");
    assert_eq!(ready().await, None, "the admin listener is closed once the drain is over");
}

/// `/health/live` reads the workers' heartbeats: past ten seconds of a
/// gateway serving, with two workers beating, it is still live (a worker
/// whose event loop is blocked stops beating, and after ten seconds the
/// answer is 503 `stalled`, so an orchestrator restarts the process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_follows_the_workers_heartbeats() {
    let up = TestUpstream::echo("u").await;
    let gw =
        TestGateway::start_with("workers = 2", &format!("[admin]\nlisten = \"127.0.0.1:0\"\n{}", tls_body(&up, "")));
    let admin = gw.gateway.admin_addr().unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    let r = get(&format!("http://{admin}/health/live")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, r#"{"status":"live"}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_serves_health_and_metrics_behind_a_token() {
    let up = TestUpstream::echo("u").await;
    let body = format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret-token\"\n{}", tls_body(&up, ""));
    let gw = TestGateway::start(&body);
    let admin = gw.gateway.admin_addr().expect("admin listener");
    assert_eq!(get(&gw.url("/some/path")).await.status, 200);
    let c = wasmgate_tests::client();
    let call = |path: &str, token: Option<&str>| {
        let mut req = Request::get(format!("http://{admin}{path}"));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        wasmgate_tests::send_with(&c, req.body(Full::default()).unwrap())
    };
    assert_eq!(call("/health/live", None).await.status, 401);
    assert_eq!(call("/health/live", Some("wrong")).await.status, 401);
    assert_eq!(call("/health/live", Some("s3cret-token")).await.status, 200);
    assert_eq!(call("/health/ready", Some("s3cret-token")).await.status, 200);
    let metrics = call("/metrics", Some("s3cret-token")).await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(text.contains("wasmgate_requests_total{"), "{text}");
    assert!(text.contains("route=\"route-0\""), "{text}");
    assert!(text.contains("status=\"200\""), "{text}");
    assert!(text.contains("wasmgate_upstream_endpoint_healthy{"), "{text}");
    assert!(!text.contains("s3cret"), "the token never shows");
}
