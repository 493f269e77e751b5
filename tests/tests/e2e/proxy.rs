//! Proxying without plugins: headers and bodies intact, hygiene, routing,
//! failures mapped to the right status, bad input answered with the right 4xx.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use wasmgate_tests::upstream::{TestUpstream, echoed_header, echoed_headers};
use wasmgate_tests::{TestGateway, client, dead_addr, get, get_request, get_with, raw, send, send_with};

fn one_route(up: &TestUpstream, route_extra: &str) -> String {
    format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n\n[[routes]]\nname = \"all\"\nupstream = \"u\"\n{route_extra}\n",
        up.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_body_reach_the_upstream_intact() {
    let up = TestUpstream::echo("users").await;
    let gw = TestGateway::start(&one_route(&up, ""));
    let body = "x".repeat(100_000);
    let req = Request::post(gw.url("/api/items?q=1&q=2"))
        .header("x-custom", "value with spaces")
        .header("x-multi", "a")
        .header("x-multi", "b")
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let r = send(req).await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["method"], "POST");
    assert_eq!(doc["path"], "/api/items");
    assert_eq!(doc["query"], "q=1&q=2");
    assert_eq!(doc["body"].as_str().map(str::len), Some(100_000));
    assert_eq!(echoed_header(&doc, "x-custom").as_deref(), Some("value with spaces"));
    assert_eq!(echoed_headers(&doc, "x-multi"), vec!["a", "b"]);
    assert_eq!(r.header("x-upstream"), Some("users"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused() {
    let up = TestUpstream::echo("users").await;
    // One worker: every request of the test takes that worker's pool.
    let gw = TestGateway::start_with("workers = 1", &one_route(&up, ""));
    let client = wasmgate_tests::client();
    // Bodies of every kind end the exchange: a JSON echo, a large body read
    // in many frames, none (HEAD, 204) — each gives the connection back.
    for path in ["/a", "/bytes/300000", "/status/204", "/b"] {
        for method in ["GET", "HEAD"] {
            let req = Request::builder().method(method).uri(gw.url(path)).body(Full::new(Bytes::new())).unwrap();
            let r = wasmgate_tests::send_with(&client, req).await;
            let expected = if path == "/status/204" { 204 } else { 200 };
            assert_eq!(r.status, expected, "{method} {path}");
            if method == "GET" && path == "/bytes/300000" {
                assert_eq!(r.body.len(), 300_000);
            }
        }
    }
    assert_eq!(up.hits(), 8);
    assert_eq!(up.connections(), 1, "one upstream connection served every request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_idle_connections_costs_no_request() {
    // The upstream closes each connection right after its response, with no
    // `Connection: close`: the gateway finds it closed when it next needs it.
    let (addr, accepted, _stop) = wasmgate_tests::upstream::closing(false).await;
    let gw = TestGateway::start_with(
        "workers = 1",
        &format!("[upstreams.u]\nendpoints = [\"{addr}\"]\n\n[[routes]]\nupstream = \"u\"\n"),
    );
    for i in 0..3 {
        let r = get(&gw.url("/")).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.text(), "ok", "request {i}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3, "a closed connection is not reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_closed_without_waiting_for_a_request() {
    // Kept past the upstream's idle_timeout, a connection is closed by the
    // gateway though no request comes to look at it; one the upstream
    // closed while idle is let go of too (the connections gauge falls).
    let up = TestUpstream::echo("users").await;
    let (addr, _accepted, _stop) = wasmgate_tests::upstream::closing(false).await;
    let gw = TestGateway::start_with(
        &format!("workers = 1\n{}", wasmgate_tests::ADMIN),
        &format!(
            "[upstreams.kept]\nendpoints = [\"{}\"]\nidle_timeout = \"1s\"\n\n\
             [upstreams.closing]\nendpoints = [\"{addr}\"]\n\n\
             [[routes]]\nmatch = {{ path = \"/kept\" }}\nupstream = \"kept\"\n\n\
             [[routes]]\nmatch = {{ path = \"/closing\" }}\nupstream = \"closing\"\n",
            up.addr
        ),
    );
    for path in ["/kept", "/closing"] {
        assert_eq!(get(&gw.url(path)).await.status, 200, "{path}");
    }
    assert_eq!(up.open_connections(), 1, "kept after its response");
    let closed = wasmgate_tests::eventually(Duration::from_secs(5), || up.open_connections() == 0).await;
    assert!(closed, "closed past idle_timeout");
    let series = r#"wasmgate_upstream_connections{upstream="closing"}"#;
    let text = gw.metrics_once(series, "0", Duration::from_secs(5)).await;
    assert_eq!(wasmgate_tests::sample(&text, series), Some("0"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_closed_unanswered_sends_an_idempotent_request_again() {
    // The upstream closes a kept connection as the next request arrives
    // (its idle timer racing the request): a GET goes again on a new
    // connection, unseen by the client; a POST, which it may have acted
    // on for all the gateway knows, is a 502.
    let (addr, accepted, _stop) = wasmgate_tests::upstream::closing(true).await;
    let gw = TestGateway::start_with(
        "workers = 1",
        &format!("[upstreams.u]\nendpoints = [\"{addr}\"]\n\n[[routes]]\nupstream = \"u\"\n"),
    );
    let accepted = || accepted.load(std::sync::atomic::Ordering::SeqCst);
    for i in 0..3 {
        let r = get(&gw.url("/")).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"), "request {i}");
        assert_eq!(accepted(), i + 1, "each after the first on a new connection");
    }
    let post = Request::post(gw.url("/")).body(Full::new(Bytes::from_static(b"x"))).unwrap();
    assert_eq!(send(post).await.status, 502);
    assert_eq!(accepted(), 3, "not sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_silent_in_the_middle_of_a_body_is_given_up_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, _stop) = wasmgate_tests::upstream::stalling().await;
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{addr}\"]\nread_timeout = \"200ms\"\n\n[[routes]]\nupstream = \"u\"\n"
    ));
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    // Without a read timeout the client would wait as long as the upstream
    // holds the connection (a minute here).
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the gateway closed the connection: {}", String::from_utf8_lossy(&got));
    let text = String::from_utf8_lossy(&got);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("content-length: 10"), "{text}");
    assert_eq!(body, "abc", "cut off at what came: the client can tell");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_given_up_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start_with("send_timeout = \"300ms\"", &one_route(&up, ""));
    // A small receive window, so the response backs up into the gateway.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(gw.addr()).await.unwrap();
    let size = 32 << 20;
    s.write_all(format!("GET /bytes/{size} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes()).await.unwrap();
    // The client reads nothing for a while, then all there is: the gateway
    // gave up on it (without a send timeout it would have finished the
    // response and kept the connection, and the read would wait).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(matches!(read, Ok(Ok(_)) | Ok(Err(_))), "the connection was closed");
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got[..got.len().min(200)]));
    assert!(got.len() < size, "cut off: {} bytes of {size}", got.len());
    // The gateway keeps serving.
    assert_eq!(get(&gw.url("/bytes/3")).await.text(), "xxx");
}

/// An HTTP/2 client that takes none of a response (its flow-control window
/// never opened again) is given up on after `send_timeout` too: its
/// connection is closed (the stream, and the upstream connection feeding
/// it, were held for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_takes_nothing_is_given_up_on() {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start_with("send_timeout = \"300ms\"", &one_route(&up, ""));
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    let conn = tokio::spawn(conn);
    let start = Instant::now();
    // Past the client's windows (hyper's: 2 MiB a stream, 5 MiB in all),
    // which it opens again only as the body is read: it never is.
    let req = Request::get(gw.url(&format!("/bytes/{}", 16 << 20))).body(Full::<Bytes>::default()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let closed = tokio::time::timeout(Duration::from_secs(10), conn).await;
    let took = start.elapsed();
    assert!(closed.is_ok(), "the gateway closed the connection");
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    drop(resp);

    // One that takes it slowly but steadily, through small windows — 16 KiB
    // every 50 ms, for longer than the send timeout (which holds for what
    // the gateway keeps ready, 64 KiB, and a piece) — gets all of it.
    let gw = TestGateway::start_with("send_timeout = \"1s\"", &one_route(&up, ""));
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let size = 512 << 10;
    let req = Request::get(gw.url(&format!("/bytes/{size}"))).body(Full::<Bytes>::default()).unwrap();
    let mut body = sender.send_request(req).await.unwrap().into_body();
    let (mut got, mut paused) = (0, 0);
    while let Some(frame) = body.frame().await {
        got += frame.unwrap().into_data().map_or(0, |d| d.len());
        if got >> 14 > paused {
            paused = got >> 14;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(got, size);
}

/// The gateway's own HTTP/1 client against an upstream's raw bytes: heads
/// and bodies that arrive split, an interim 1xx, chunked bodies with
/// extensions and trailers, `HEAD`, a body delimited by the close, and what
/// it must refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_upstream_framing_on_the_wire() {
    fn answer(path: &str) -> Vec<&'static [u8]> {
        match path {
            "/split" => vec![b"HTTP/1.1 200 OK\r\ncontent-le", b"ngth: 5\r\nx-a: 1\r\n\r\nhe", b"llo"],
            "/continue" => vec![b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"],
            "/chunked" => vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n",
                b"6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
            ],
            "/head" => vec![b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n"],
            "/close" => vec![b"HTTP/1.0 200 OK\r\n\r\nuntil", b" the close", b""],
            "/garbage" => vec![b"NOT HTTP AT ALL\r\n\r\n", b""],
            "/two-lengths" => vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok", b""],
            "/short" => vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", b""],
            // Chunked wins over a length (which the client must not get).
            "/chunked-and-length" => vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n5\r\nhello\r\n",
                b"6\r\n world\r\n0\r\n\r\n",
            ],
            "/gzip-coded" => {
                vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n", b""]
            }
            "/unasked-switch" => {
                vec![b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: x\r\n\r\n", b""]
            }
            "/bare-switch" => vec![b"HTTP/1.1 101 Switching Protocols\r\n\r\n", b""],
            // A byte at a time: an interim head, the head, a chunk, trailers.
            "/trickle" => b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nx-a: 1\r\n\
                transfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-t: 1\r\n\r\n"
                .chunks(1)
                .collect(),
            _ => vec![b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"],
        }
    }
    let (addr, accepted, _stop) = wasmgate_tests::upstream::scripted(answer).await;
    let gw = TestGateway::start_with(
        "workers = 1",
        &format!("[upstreams.u]\nendpoints = [\"{addr}\"]\n\n[[routes]]\nupstream = \"u\"\n"),
    );
    let connections = || accepted.load(std::sync::atomic::Ordering::SeqCst);

    // One keep-alive upstream connection serves the well-framed answers in turn.
    let r = get(&gw.url("/split")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "hello"));
    assert_eq!(r.headers.get("x-a").map(|v| v.as_bytes()), Some(&b"1"[..]));
    let r = get(&gw.url("/continue")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"), "the interim 100 is skipped");
    let r = get(&gw.url("/chunked")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "hello world"));
    let r = send(Request::head(gw.url("/head")).body(Full::default()).unwrap()).await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 0), "a HEAD answer has no body");
    assert_eq!(connections(), 1, "all four on one connection");
    let r = get(&gw.url("/trickle")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"), "heads and trailers read as they trickle in");
    assert_eq!(r.headers.get("x-a").map(|v| v.as_bytes()), Some(&b"1"[..]));
    assert_eq!(connections(), 1, "and the connection is used again");

    // Read until the upstream closes; that connection is not reused.
    let r = get(&gw.url("/close")).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "until the close"));
    assert_eq!(get(&gw.url("/split")).await.text(), "hello");
    assert_eq!(connections(), 2);

    // Chunked wins over a length, and the connection is not used again: an
    // upstream that meant the length would have its next answer read from
    // the rest of this one (response splitting).
    let resp = raw(gw.addr(), b"GET /chunked-and-length HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200") && !resp.contains("content-length: 5"), "{resp}");
    assert_eq!(get(&gw.url("/chunked-and-length")).await.text(), "hello world");
    assert_eq!(get(&gw.url("/split")).await.text(), "hello");
    assert_eq!(connections(), 4, "each answer framed both ways closed its connection");

    // Heads that do not parse or frame are a 502; the gateway keeps serving.
    // So are a body coded in a way the gateway cannot undo (passed on
    // without its `Transfer-Encoding`, it would read as the content), and a
    // switch of protocols nobody asked for.
    for path in ["/garbage", "/two-lengths", "/gzip-coded", "/unasked-switch"] {
        assert_eq!(get(&gw.url(path)).await.status, 502, "{path}");
    }
    // A `101` that does not say what it switched to has not switched: the
    // tunnel would carry the client's next bytes to it as requests.
    let ask = b"GET /bare-switch HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n\
        GET /internal HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let resp = raw(gw.addr(), ask).await;
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    // Nor has one that switched to a protocol the client did not offer
    // (RFC 9110 §7.8): the client was told it got its own.
    let ask = b"GET /unasked-switch HTTP/1.1\r\nhost: x\r\nconnection: upgrade, close\r\nupgrade: websocket\r\n\r\n";
    let resp = raw(gw.addr(), ask).await;
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    let ask = b"GET /unasked-switch HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket, X\r\n\r\n";
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, ask).await.unwrap();
    let head = wasmgate_tests::read_head(&mut s, &mut Vec::new()).await.unwrap_or_default();
    assert!(head.starts_with("HTTP/1.1 101") && head.contains("upgrade: x"), "the one it chose: {head}");
    // A body cut short: the client's response is cut off at what came, so
    // the client can tell (its content-length says 10).
    let resp = raw(gw.addr(), b"GET /short HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("content-length: 10"), "{resp}");
    assert_eq!(body, "abc");
    assert_eq!(get(&gw.url("/split")).await.text(), "hello");
}

/// The gateway's own HTTP/1 server, on the wire: requests that follow one
/// another on a connection (pipelined too), `Expect: 100-continue`, chunked
/// request bodies, `HEAD`, HTTP/1.0, what closes a connection, and the
/// heads that are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_clients_on_the_wire() {
    use wasmgate_tests::RawConn;
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&one_route(&up, "max_body = \"1KiB\""));
    let path_of = |body: &[u8]| {
        let doc: serde_json::Value = serde_json::from_slice(body).expect("json");
        (doc["path"].as_str().unwrap_or("").to_owned(), doc["body"].as_str().unwrap_or("").to_owned())
    };
    let mut c = RawConn::connect(gw.addr()).await;

    // Two requests in one write are answered in order on the connection.
    c.write(b"GET /one HTTP/1.1\r\nhost: x\r\n\r\nGET /two HTTP/1.1\r\nhost: x\r\n\r\n").await;
    for want in ["/one", "/two"] {
        let (head, body) = c.response(false).await.expect("a response");
        assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
        assert!(head.contains("\r\ndate: ") && !head.contains("connection: close"), "{head}");
        assert_eq!(path_of(&body).0, want);
    }

    // `Expect: 100-continue`: the interim answer comes before the body is sent.
    c.write(b"POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n").await;
    let (interim, _) = c.response(true).await.expect("100 continue");
    assert!(interim.starts_with("http/1.1 100"), "{interim}");
    c.write(b"hello").await;
    let (head, body) = c.response(false).await.expect("the final response");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(path_of(&body), ("/up".into(), "hello".into()));
    // The gateway answered the expectation; the upstream is not asked (its
    // own `100` in the middle of the body would stop the upload).
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(echoed_header(&doc, "expect"), None, "{doc}");

    // A chunked request body is decoded on its way upstream.
    c.write(b"POST /chunked HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .await;
    let (_, body) = c.response(false).await.expect("a response");
    assert_eq!(path_of(&body), ("/chunked".into(), "hello world".into()));

    // `HEAD` keeps the length the body would have had, and sends no body:
    // the next response on the connection is read right after the head.
    c.write(b"HEAD /bytes/10 HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let (head, _) = c.response(true).await.expect("a response");
    assert!(head.starts_with("http/1.1 200") && head.contains("content-length: 10"), "{head}");
    c.write(b"GET /bytes/3 HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(c.response(false).await.expect("a response").1, b"xxx");

    // A body the gateway refused unread, all in the buffer already (one
    // write with its head), is skipped: the connection goes on.
    let mut big = b"POST /big HTTP/1.1\r\nhost: x\r\ncontent-length: 2000\r\n\r\n".to_vec();
    big.extend_from_slice(&[b'a'; 2000]);
    c.write(&big).await;
    let (head, _) = c.response(false).await.expect("a response");
    assert!(head.starts_with("http/1.1 413") && !head.contains("connection: close"), "{head}");
    c.write(b"GET /after HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let (head, body) = c.response(false).await.expect("a response");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(path_of(&body).0, "/after");

    // `Connection: close` is answered in kind, and the connection ends.
    c.write(b"GET /last HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    let (head, _) = c.response(false).await.expect("a response");
    assert!(head.contains("connection: close"), "{head}");
    assert!(c.closed().await, "closed after the response");

    // One refused before its body came: the rest of the body would be read
    // as a request, so the connection closes.
    let mut c = RawConn::connect(gw.addr()).await;
    c.write(b"POST /big HTTP/1.1\r\nhost: x\r\ncontent-length: 2000\r\n\r\n").await;
    let (head, _) = c.response(false).await.expect("a response");
    assert!(head.starts_with("http/1.1 413") && head.contains("connection: close"), "{head}");
    assert!(c.closed().await, "closed after the response");

    // HTTP/1.0: closed after the response unless it asked to keep alive.
    let mut c = RawConn::connect(gw.addr()).await;
    c.write(b"GET /old HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").await;
    let (head, _) = c.response(false).await.expect("a response");
    assert!(head.contains("connection: keep-alive"), "{head}");
    c.write(b"GET /old HTTP/1.0\r\n\r\n").await;
    let (head, body) = c.response(false).await.expect("a response");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(path_of(&body).0, "/old");
    assert!(c.closed().await, "closed after the response");

    // Heads that could be read two ways (request smuggling), or whose body
    // coding is unknown, are refused and the connection closed.
    for bad in [
        &b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5, 6\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: +5\r\n\r\nhello",
        b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        // And heads without their one `Host` (HTTP/1.1 requires it).
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
    ] {
        let resp = raw(gw.addr(), bad).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    }
    // A body still coded after its chunks are undone (`gzip, chunked`):
    // 501, the gateway cannot pass it on as it is (RFC 9112 §6.1).
    let coded = b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
    let resp = raw(gw.addr(), coded).await;
    assert!(resp.starts_with("HTTP/1.1 501"), "{resp}");
    assert_eq!(up.hits(), 10, "what was refused on its head never reached the upstream");
    // A malformed chunk fails the request's body (400), not the gateway.
    let resp = raw(gw.addr(), b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // So does a chunk size line ended by a bare LF: a proxy in front may
    // read the line as going on, and the bytes after as another request.
    let bare = b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n";
    assert!(raw(gw.addr(), bare).await.starts_with("HTTP/1.1 400"));
    assert_eq!(get(&gw.url("/")).await.status, 200);

    // A client that leaves before its response takes its upstream request
    // with it (the upstream sees its connection close), not held for 10 s.
    let mut c = RawConn::connect(gw.addr()).await;
    c.write(b"GET /slow/10000 HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(wasmgate_tests::eventually(Duration::from_secs(3), || up.in_flight() == 1).await);
    drop(c);
    assert!(wasmgate_tests::eventually(Duration::from_secs(3), || up.in_flight() == 0).await, "cancelled upstream");
}

/// A request refused before its body was read (a 413 on its length) is
/// answered, and the connection then read on (and dropped) until the client
/// closes its side — for up to 2 s — rather than reset: a client still
/// sending its upload would lose the answer to the reset (RFC 9112 §9.6).
/// So is a head refused with more of it to come (431).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_is_read_on_after_its_answer_not_reset() {
    use wasmgate_tests::RawConn;
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start_with("max_header_bytes = \"8KiB\"", &one_route(&up, "max_body = \"1KiB\""));
    let refusals: [(&[u8], &str); 2] = [
        (b"POST /big HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n", "http/1.1 413"),
        (&[b"GET / HTTP/1.1\r\nhost: x\r\nx-big: ".as_slice(), &[b'a'; 20_000]].concat(), "http/1.1 431"),
    ];
    for (head, status) in refusals {
        let mut c = RawConn::connect(gw.addr()).await;
        c.write(head).await;
        let (answer, _) = c.response(false).await.unwrap_or_else(|| panic!("{status}: no answer"));
        assert!(answer.starts_with(status) && answer.contains("connection: close"), "{answer}");
        // The client goes on sending a while: every write is taken.
        for i in 0..5 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let sent = c.try_write(&[b'a'; 4096]).await;
            assert!(sent.is_ok(), "{status}: write {i} after the answer: {sent:?}");
        }
        assert!(c.closed().await, "{status}: the gateway's side is closed");
    }
    assert_eq!(up.hits(), 0);
}

/// A client that sends an empty line after a request (some send a CRLF
/// after a body) has sent nothing of a next one: once the header read
/// timeout passes, its idle connection is closed without a word, not
/// answered 408 (RFC 9112 §2.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_line_after_a_request_is_not_the_start_of_another() {
    use wasmgate_tests::RawConn;
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start_with("header_read_timeout = \"1s\"", &one_route(&up, ""));
    let mut c = RawConn::connect(gw.addr()).await;
    c.write(b"POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\na\r\n").await;
    let (head, _) = c.response(false).await.expect("a response");
    assert!(head.starts_with("http/1.1 200") && !head.contains("connection: close"), "{head}");
    // Still a request after it.
    c.write(b"\r\nGET /next HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(c.response(false).await.expect("a response").0.starts_with("http/1.1 200"));
    // Endless empty lines are dropped as they come; the connection is
    // still closed quietly at the header read timeout.
    for _ in 0..20 {
        c.write(b"\r\n\r\n").await;
    }
    assert!(c.closed().await, "closed without a 408 once the header read timeout passed");
}

/// An upstream that answers before it has read the body, and then reads no
/// more, has its answer passed on (not a timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_upstream_answer_to_an_upload_is_passed_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, _stop) = wasmgate_tests::upstream::refusing_early().await;
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{addr}\"]\n\n[[routes]]\nupstream = \"u\"\nmax_body = \"64MiB\"\ntimeout = \"20s\"\n"
    ));
    // More than loopback's socket buffers hold, so the gateway's writes block.
    const LEN: usize = 48 << 20;
    let s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let head = format!("POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: {LEN}\r\n\r\n");
        let _ = wr.write_all(head.as_bytes()).await;
        let chunk = vec![b'a'; 64 << 10];
        for _ in 0..LEN / chunk.len() {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&resp).contains("too big!") {
        match tokio::time::timeout(Duration::from_secs(15), rd.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => resp.extend_from_slice(&buf[..n]),
            other => panic!("no answer ({other:?}): {}", String::from_utf8_lossy(&resp)),
        }
    }
    let resp = String::from_utf8_lossy(&resp);
    // (Within 15 s: waiting instead would have ended at the 20 s timeout.)
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    writer.abort();
}

/// An upstream's answer that comes while the gateway waits for more of a
/// client's body is passed on at once, and the connection then closed: it
/// waited for the rest (a slow client's upload) and answered 408 at the
/// route's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_upstream_answer_reaches_a_client_still_sending() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, _stop) = wasmgate_tests::upstream::refusing_early().await;
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{addr}\"]\n\n[[routes]]\nupstream = \"u\"\ntimeout = \"20s\"\n"
    ));
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    // A few bytes of a 1 MiB body, and then nothing: a slow client.
    s.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 1048576\r\n\r\nfirst bytes").await.unwrap();
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    // To the end: the gateway closes once it has answered (the rest of the
    // body will not be read).
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => resp.extend_from_slice(&buf[..n]),
            other => panic!("no answer, or no close ({other:?}): {}", String::from_utf8_lossy(&resp)),
        }
    }
    // (Within 10 s: waiting for the body would have ended at the 20 s
    // timeout.)
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.ends_with("too big!"), "{resp}");
}

/// An upstream that answers `200` (keeping the connection) before it has
/// read the body, and reads on, gets the whole body: a final answer that is
/// not an error ends an upload only when it closes the connection (RFC 9112
/// §9.5). A slow client's body was cut off at that answer, and the upstream
/// waited for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_success_that_keeps_the_connection_lets_the_upload_go_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, _stop, answered) = wasmgate_tests::upstream::answering_before_reading().await;
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{addr}\"]\n\n[[routes]]\nupstream = \"u\"\ntimeout = \"20s\"\n"
    ));
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"POST /stream HTTP/1.1\r\nhost: x\r\ncontent-length: 20\r\nconnection: close\r\n\r\nfirst half")
        .await
        .unwrap();
    // The upstream's answer head is written, and then has a moment to reach
    // the gateway, which reads it while it waits for the rest of the body.
    tokio::time::timeout(Duration::from_secs(10), answered.notified()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"other half").await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out)).await.unwrap().unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("got 20"), "the whole body reached the upstream: {out}");
}

/// An interim answer (`103 Early Hints`) while an upload is still being
/// sent is not the upstream's answer: the body goes on, and the final
/// answer is passed on (RFC 9110 §15.2). It stopped the upload, and the
/// request ended at its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interim_answer_during_an_upload_does_not_stop_it() {
    let (addr, _stop) = wasmgate_tests::upstream::hinting_before_the_body().await;
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{addr}\"]\n\n[[routes]]\nupstream = \"u\"\nmax_body = \"64MiB\"\ntimeout = \"10s\"\n"
    ));
    // More than loopback's socket buffers hold, so the gateway's writes
    // wait while the upstream reads nothing, its 103 already sent.
    const LEN: usize = 32 << 20;
    let resp = send(Request::post(gw.url("/upload")).body(Full::from(vec![b'a'; LEN])).unwrap()).await;
    assert_eq!((resp.status.as_u16(), resp.text()), (200, format!("got {LEN}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_request_id_and_via() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&one_route(&up, ""));
    let req = get_request(
        &gw.url("/"),
        &[
            ("host", "api.example.test"),
            ("x-forwarded-for", "203.0.113.9"),
            // A client's own `Forwarded` is replaced, as `X-Forwarded-Host`
            // and `-Proto` are: Spring reads the first `host=`.
            ("forwarded", "for=1.2.3.4;host=evil.example;proto=https"),
            ("x-forwarded-host", "evil.example"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "secret"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
        ],
    );
    let r = send(req).await;
    let doc = r.json();
    assert_eq!(echoed_header(&doc, "x-forwarded-for").as_deref(), Some("203.0.113.9, 127.0.0.1"));
    assert_eq!(echoed_header(&doc, "x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(echoed_header(&doc, "x-forwarded-host").as_deref(), Some("api.example.test"));
    assert_eq!(echoed_headers(&doc, "forwarded"), ["for=127.0.0.1;proto=http;host=api.example.test"]);
    assert_eq!(echoed_header(&doc, "host").as_deref(), Some("api.example.test"));
    assert_eq!(echoed_header(&doc, "via").as_deref(), Some("1.1 wasmgate"));
    assert_eq!(echoed_header(&doc, "x-hop"), None, "headers named by Connection are hop-by-hop");
    assert_eq!(echoed_header(&doc, "proxy-authorization"), None);
    let id = echoed_header(&doc, "x-request-id").expect("a request id is generated");
    assert_eq!(id.len(), 32);
    assert_eq!(r.header("x-request-id"), Some(id.as_str()), "the client sees the same id");

    // A host with a port is passed on as named, port and all (the route
    // matches it without the port).
    let doc = get_with(&gw.url("/"), &[("host", "api.example.test:8443")]).await.json();
    assert_eq!(echoed_header(&doc, "x-forwarded-host").as_deref(), Some("api.example.test:8443"));
    assert_eq!(
        echoed_header(&doc, "forwarded").as_deref(),
        Some(r#"for=127.0.0.1;proto=http;host="api.example.test:8443""#)
    );
    assert_eq!(r.header("via"), Some("1.1 wasmgate"));

    // A client's own id is kept.
    let r = get_with(&gw.url("/"), &[("x-request-id", "client-id-42")]).await;
    assert_eq!(echoed_header(&r.json(), "x-request-id").as_deref(), Some("client-id-42"));
    assert_eq!(r.header("x-request-id"), Some("client-id-42"));
}

/// Behind a TLS-terminating load balancer listed in `trusted_proxies`, the
/// scheme, host and port it forwards reach the upstream (which built
/// `http://` links, or redirected to https for ever), and `X-Real-IP` names
/// the client its `X-Forwarded-For` reports; from any other peer the scheme
/// and host are replaced, the port taken out, and `X-Real-IP` is the peer. The
/// prefix and Rack's scheme fields — which load balancers pass on as their
/// client wrote them — go from either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_forwarded_scheme_and_host_are_kept() {
    let up = TestUpstream::echo("u").await;
    let said = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "shop.example"),
        ("host", "api.internal"),
        ("x-forwarded-port", "8443"),
        ("x-forwarded-prefix", "/shop"),
        ("x-forwarded-ssl", "on"),
        ("x-forwarded-scheme", "https"),
        ("x-real-ip", "203.0.113.9"),
        ("x-forwarded-for", "198.51.100.4"),
    ];
    let (theirs, gone, real_ip) = (&said[3..4], &said[4..7], "x-real-ip");
    for (trusted, kept) in [("\"127.0.0.0/8\"", true), ("\"10.0.0.0/8\", \"::1\"", false)] {
        let gw = TestGateway::start_with(&format!("trusted_proxies = [{trusted}]"), &one_route(&up, ""));
        let doc = get_with(&gw.url("/"), &said).await.json();
        let (proto, host) = if kept { ("https", "shop.example") } else { ("http", "api.internal") };
        assert_eq!(echoed_header(&doc, "x-forwarded-proto").as_deref(), Some(proto), "{trusted}");
        assert_eq!(echoed_header(&doc, "x-forwarded-host").as_deref(), Some(host), "{trusted}");
        // Over HTTP/2 too (hyper's server reads the request there).
        let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http::<Full<Bytes>>();
        let over_h2 = send_with(&h2, get_request(&gw.url("/"), &said[3..])).await.json();
        for doc in [doc, over_h2] {
            for (name, value) in theirs {
                assert_eq!(echoed_header(&doc, name).as_deref(), kept.then_some(*value), "{trusted}: {name}");
            }
            for (name, _) in gone {
                assert_eq!(echoed_header(&doc, name), None, "{trusted}: {name}");
            }
            let client = if kept { "198.51.100.4" } else { "127.0.0.1" };
            assert_eq!(echoed_header(&doc, real_ip).as_deref(), Some(client), "{trusted}: the client, not its word");
        }
    }
}

/// `request_id = "generate"`: a client's `X-Request-Id` is replaced, a
/// trusted proxy's kept (the default keeps any, above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_generated_but_for_a_trusted_proxys() {
    let up = TestUpstream::echo("u").await;
    for (trusted, kept) in [("\"127.0.0.1\"", true), ("\"10.0.0.0/8\"", false)] {
        let server = format!("request_id = \"generate\"\ntrusted_proxies = [{trusted}]");
        let gw = TestGateway::start_with(&server, &one_route(&up, ""));
        let r = get_with(&gw.url("/"), &[("x-request-id", "chosen-7")]).await;
        let id = r.header("x-request-id").unwrap_or_default().to_owned();
        assert_eq!(echoed_header(&r.json(), "x-request-id").as_deref(), Some(id.as_str()), "{trusted}");
        if kept {
            assert_eq!(id, "chosen-7");
        } else {
            assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{trusted}: a new id, not {id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_fields_without_connection_never_reach_the_upstream() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&one_route(&up, ""));
    let mut conn = wasmgate_tests::RawConn::connect(gw.addr()).await;
    // On one connection (whose kept names say which are hop-by-hop): none,
    // then each hop-by-hop field alone in the place another name had.
    for field in ["X-Kept: 1", "Proxy-Authorization: Basic Zm9vOmJhcg==", "Keep-Alive: timeout=5", "X-Kept: 1"] {
        let req = format!("GET / HTTP/1.1\r\nHost: x\r\n{field}\r\nAccept: */*\r\n\r\n");
        conn.write(req.as_bytes()).await;
        let (head, body) = conn.response(false).await.expect("a response");
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let doc: serde_json::Value = serde_json::from_slice(&body).expect("an echo");
        let name = field.split(':').next().unwrap_or_default();
        let reached = echoed_header(&doc, name).is_some();
        assert_eq!(reached, name == "X-Kept", "{field}");
        assert_eq!(echoed_header(&doc, "accept").as_deref(), Some("*/*"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_request_id_and_length_are_found_in_any_place_on_a_kept_connection() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&one_route(&up, ""));
    let mut conn = wasmgate_tests::RawConn::connect(gw.addr()).await;
    // One connection (whose kept names say which field each is): the
    // client's id and `Content-Length` in the place another name had,
    // each again in the same place (its name kept), then that name again.
    let fields = [
        "X-Kept: 1",
        "X-Request-Id: mine",
        "X-Request-Id: mine",
        "Content-Length: 0",
        "Content-Length: 0",
        "X-Kept: 1",
    ];
    for field in fields {
        let req = format!("GET / HTTP/1.1\r\nHost: x\r\n{field}\r\nAccept: */*\r\n\r\n");
        conn.write(req.as_bytes()).await;
        let (head, body) = conn.response(false).await.expect("a response");
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let doc: serde_json::Value = serde_json::from_slice(&body).expect("an echo");
        let id = echoed_header(&doc, "x-request-id").unwrap_or_default();
        if field.starts_with("X-Request-Id") {
            assert_eq!(id, "mine");
        } else {
            assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{field}: a new id, not {id}");
        }
        assert!(head.split("\r\n").any(|l| l == format!("x-request-id: {id}")), "{head}");
        let length = field.starts_with("Content-Length").then_some("0");
        assert_eq!(echoed_header(&doc, "content-length").as_deref(), length, "{field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstreams_via_gets_this_hop_and_its_request_id_gives_way() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&one_route(&up, ""));
    let mut conn = wasmgate_tests::RawConn::connect(gw.addr()).await;
    for _ in 0..2 {
        conn.write(b"GET /via HTTP/1.1\r\nHost: x\r\nX-Request-Id: client-7\r\n\r\n").await;
        let (head, _) = conn.response(false).await.expect("a response");
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert!(lines.contains(&"via: 1.0 fred, 1.1 wasmgate"), "{head}");
        assert_eq!(head.matches("via:").count(), 1, "{head}");
        assert!(lines.contains(&"x-request-id: client-7"), "{head}");
        assert_eq!(head.matches("x-request-id").count(), 1, "{head}");
    }
    // Over HTTP/2 the same fields go into hyper's map.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = get_request(&gw.url("/via"), &[("x-request-id", "client-8")]);
    let r = wasmgate_tests::send_with(&client, req).await;
    assert_eq!(r.header_all("via"), ["1.0 fred, 1.1 wasmgate"]);
    assert_eq!(r.header_all("x-request-id"), ["client-8"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_hop_by_hop_headers_do_not_reach_the_client() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&one_route(&up, ""));
    let r = get(&gw.url("/hop")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-upstream-secret"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("x-upstream"), Some("u"));
    // Without a `Connection` naming one: left out as the head is read.
    let r = get(&gw.url("/hop/plain")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("proxy-authenticate"), None);
    assert_eq!(r.header("x-upstream"), Some("u"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_precedence_end_to_end() {
    let (a, b, c, d) = tokio::join!(
        TestUpstream::echo("catch-all"),
        TestUpstream::echo("users"),
        TestUpstream::echo("user-by-id"),
        TestUpstream::echo("v2")
    );
    let gw = TestGateway::start(&format!(
        r#"
[upstreams.a]
endpoints = ["{}"]
[upstreams.b]
endpoints = ["{}"]
[upstreams.c]
endpoints = ["{}"]
[upstreams.d]
endpoints = ["{}"]

[[routes]]
upstream = "a"

[[routes]]
match = {{ prefix = "/api/users" }}
upstream = "b"

[[routes]]
match = {{ path = "/api/users/{{id}}", methods = ["GET"] }}
upstream = "c"
rewrite = "/users/{{id}}"

[[routes]]
match = {{ path = "/api/users/{{id}}", methods = ["GET"], headers = {{ "x-api-version" = "2" }} }}
upstream = "d"
strip_prefix = "/api"
"#,
        a.addr, b.addr, c.addr, d.addr
    ));
    let to = |r: &wasmgate_tests::Reply| r.header("x-upstream").map(str::to_owned);
    assert_eq!(to(&get(&gw.url("/elsewhere")).await).as_deref(), Some("catch-all"));
    assert_eq!(to(&get(&gw.url("/api/users")).await).as_deref(), Some("users"));
    assert_eq!(to(&get(&gw.url("/api/users/7/orders")).await).as_deref(), Some("users"));
    let r = get(&gw.url("/api/users/7?x=1")).await;
    assert_eq!(to(&r).as_deref(), Some("user-by-id"));
    assert_eq!(r.json()["path"], "/users/7", "rewrite applies the captures");
    assert_eq!(r.json()["query"], "x=1", "the query survives a rewrite");
    let r = get_with(&gw.url("/api/users/7"), &[("x-api-version", "2")]).await;
    assert_eq!(to(&r).as_deref(), Some("v2"));
    assert_eq!(r.json()["path"], "/users/7", "strip_prefix removes /api");
    let req = Request::post(gw.url("/api/users/7")).body(Full::default()).unwrap();
    assert_eq!(to(&send(req).await).as_deref(), Some("users"), "the GET-only route does not take a POST");
}

/// A plugin may not set a request field the gateway writes or takes out
/// (its value was dropped without a word): add-header's and transform's
/// configs that do fail the load, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_setting_what_the_gateway_writes_fails_the_load() {
    let up = TestUpstream::echo("u").await;
    for plugin in [
        r#"{ use = "add-header", config = { request = { set = { "X-Forwarded-Prefix" = "/api" } } } }"#,
        r#"{ use = "transform", config = { request = { headers = { set = { "x-real-ip" = "192.0.2.1" } } } } }"#,
    ] {
        let body = format!(
            "[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\nplugins = [{plugin}]\n",
            up.addr
        );
        let err = TestGateway::try_start("", &body).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("routes[0].plugins[0].config: plugin"), "{plugin}: {err}");
        assert!(err.contains("is managed by the gateway"), "{plugin}: {err}");
    }
}

/// A route's `strip_prefix` tells the upstream what it took off, in
/// `X-Forwarded-Prefix` (Spring and ASP.NET build their links with it), on
/// routes with plugins or without; any other is replaced, a trusted
/// proxy's too. A request the prefix did not shorten,
/// or one whose path a plugin rewrote, gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripped_prefix_goes_upstream_as_x_forwarded_prefix() {
    let up = TestUpstream::echo("u").await;
    let body = |plugins: &str| {
        format!(
            r#"[upstreams.u]
endpoints = ["{}"]

[[routes]]
match = {{ prefix = "/api/v1" }}
upstream = "u"
strip_prefix = "/api/v1"
plugins = [{plugins}]

[[routes]]
match = {{ prefix = "/moved" }}
upstream = "u"
strip_prefix = "/moved"
plugins = [{{ use = "transform", config = {{ request = {{ path = {{ from = "/moved/{{*rest}}", to = "/new/{{rest}}" }} }} }} }}]
"#,
            up.addr
        )
    };
    let prefix = |r: &wasmgate_tests::Reply| echoed_header(&r.json(), "x-forwarded-prefix");
    for plugins in ["", r#"{ use = "add-header", config = { request = { set = { "x-a" = "1" } } } }"#] {
        let gw = TestGateway::start(&body(plugins));
        let r = get(&gw.url("/api/v1/users")).await;
        assert_eq!(r.json()["path"], "/users");
        assert_eq!(prefix(&r).as_deref(), Some("/api/v1"), "plugins: {plugins}");
        let r = get_with(&gw.url("/api/v1/users"), &[("x-forwarded-prefix", "/evil")]).await;
        assert_eq!(prefix(&r).as_deref(), Some("/api/v1"), "a client's is replaced");
        let r = get(&gw.url("/moved/a")).await;
        assert_eq!((r.json()["path"].as_str(), prefix(&r)), (Some("/new/a"), None), "a plugin's path stays its own");
    }
    let gw = TestGateway::start_with("trusted_proxies = [\"127.0.0.1\"]", &body(""));
    let r = get_with(&gw.url("/api/v1/users"), &[("x-forwarded-prefix", "/shop")]).await;
    assert_eq!(prefix(&r).as_deref(), Some("/api/v1"), "a trusted proxy's is replaced too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_is_404_with_request_id() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nmatch = {{ prefix = \"/api\" }}\nupstream = \"u\"\n",
        up.addr
    ));
    let r = get(&gw.url("/nothing-here")).await;
    assert_eq!(r.status, 404);
    let id = r.header("x-request-id").expect("request id").to_owned();
    assert_eq!(r.json()["request_id"], id.as_str());
    assert_eq!(r.json()["error"], "no route");
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_upstream_is_502() {
    let dead = dead_addr();
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{dead}\"]\nconnect_timeout = \"500ms\"\n[[routes]]\nupstream = \"u\"\n"
    ));
    let r = get(&gw.url("/")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "bad gateway");
    assert!(!r.text().contains("refused"), "no internal detail reaches the client: {}", r.text());
}

/// A request whose client leaves before its response is counted and
/// logged with status 499, as nginx does (it was neither: clients giving
/// up on a slow upstream left no trace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_its_client_left_is_counted_as_499() {
    use tokio::io::AsyncWriteExt;
    let up = TestUpstream::echo("slow").await;
    let gw = TestGateway::start_with(wasmgate_tests::ADMIN, &one_route(&up, ""));
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET /slow/3000 HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert!(wasmgate_tests::eventually(Duration::from_secs(3), || up.in_flight() == 1).await);
    drop(s);
    let series = r#"wasmgate_requests_total{route="all",method="GET",status="499"}"#;
    let text = gw.metrics_once(series, "1", Duration::from_secs(5)).await;
    assert_eq!(wasmgate_tests::sample(&text, series), Some("1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504_after_the_route_timeout() {
    let up = TestUpstream::echo("slow").await;
    let gw = TestGateway::start(&one_route(&up, "timeout = \"300ms\""));
    let start = Instant::now();
    let r = get(&gw.url("/slow/5000")).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "gateway timeout");
    assert!(start.elapsed() < Duration::from_secs(4), "the timeout cut the wait short");
    // A fast request on the same route is unaffected.
    assert_eq!(get(&gw.url("/fast")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstreams_request_timeout_caps_the_routes() {
    let up = TestUpstream::echo("slow").await;
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\nrequest_timeout = \"300ms\"\n\n\
         [[routes]]\nupstream = \"u\"\ntimeout = \"20s\"\n",
        up.addr
    ));
    let start = Instant::now();
    let r = get(&gw.url("/slow/5000")).await;
    assert_eq!(r.status, 504);
    assert!(start.elapsed() < Duration::from_secs(4), "the upstream's 300 ms, not the route's 20 s");
    assert_eq!(get(&gw.url("/fast")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_runs_from_each_request_on_a_kept_upstream_connection() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&one_route(&up, "timeout = \"400ms\""));
    let client = client();
    // Five requests 150 ms apart over one upstream connection: 750 ms, each
    // answered well within its own 400 ms.
    for i in 0..5 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let r = send_with(&client, get_request(&gw.url("/fast"), &[])).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert_eq!(up.connections(), 1, "the upstream connection was kept");
    // And a slow answer on it is still cut off at its request's timeout.
    let start = Instant::now();
    let r = send_with(&client, get_request(&gw.url("/slow/3000"), &[])).await;
    let waited = start.elapsed();
    assert_eq!(r.status, 504);
    assert!(waited >= Duration::from_millis(350) && waited < Duration::from_millis(2500), "{waited:?}");
}

/// The raw answer to a GET of `path` exactly as written (no client
/// library normalises it first).
async fn get_path(gw: &TestGateway, path: &str) -> String {
    raw(gw.addr(), format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_is_normalised_or_refused() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&one_route(&up, ""));
    let resp = get_path(&gw, "/public/../admin").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"path\":\"/admin\""), "forwarded normalised: {resp}");
    let resp = get_path(&gw, "/a/%2e%2e/%2E%2e/etc").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "climbing above the root is refused: {resp}");
    let resp = get_path(&gw, "//double//slash").await;
    assert!(resp.contains("\"path\":\"/double/slash\""), "{resp}");
    // Raw UTF-8 (which a request target may not carry) is escaped, and an
    // escape's hex put in capitals: one spelling of a path, routed and
    // forwarded (`/café` passed by a route for `/caf%C3%A9`).
    let resp = get_path(&gw, "/x//naïve.txt").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"path\":\"/x/na%C3%AFve.txt\""), "forwarded normalised: {resp}");
    let resp = get_path(&gw, "/caf%c3%a9").await;
    assert!(resp.contains("\"path\":\"/caf%C3%A9\""), "{resp}");
    // An escaped unreserved character is the character: routed and
    // forwarded as such.
    let resp = get_path(&gw, "/adm%69n/%7Eme").await;
    assert!(resp.contains("\"path\":\"/admin/~me\""), "{resp}");
    // A dot segment with parameters (Tomcat's `..;`): refused.
    let resp = get_path(&gw, "/public/..;/admin").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // A separator hidden from the routes (an upstream that decodes it may
    // see `/admin`): refused, unless the server keeps such paths.
    let hidden = "/public/..%2Fadmin";
    let resp = get_path(&gw, hidden).await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(get_path(&gw, "/public/..%252Fadmin").await.starts_with("HTTP/1.1 400"), "encoded twice");
    // So is a dot segment encoded twice, and (by default) a path with
    // parameters: `/admin;x/users` is `/admin/users` to Tomcat.
    assert!(get_path(&gw, "/public/%252e%252e/admin").await.starts_with("HTTP/1.1 400"));
    // A `%` without two hex digits: decoding `%32` in `%%32e` made `%2e`,
    // and `/public/%2e%2e/admin` went upstream (`/admin` to one that
    // decodes it) past every check.
    for malformed in ["/public/%%32e%%32e/admin", "/a%%32Fb", "/a%zz"] {
        let resp = get_path(&gw, malformed).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{malformed}: {resp}");
    }
    let params = "/admin;x/users";
    assert!(get_path(&gw, params).await.starts_with("HTTP/1.1 400"), "parameters");
    let gw = TestGateway::start_with("escaped_slashes = \"keep\"", &one_route(&up, ""));
    let resp = get_path(&gw, hidden).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"path\":\"/public/..%2Fadmin\""), "forwarded as sent: {resp}");
    assert!(get_path(&gw, params).await.starts_with("HTTP/1.1 400"), "a rule of its own");
    let gw = TestGateway::start_with("path_parameters = \"keep\"", &one_route(&up, ""));
    let resp = get_path(&gw, params).await;
    assert!(resp.contains("\"path\":\"/admin;x/users\""), "forwarded as sent: {resp}");
    assert!(get_path(&gw, hidden).await.starts_with("HTTP/1.1 400"), "a rule of its own");
    assert!(get_path(&gw, "/public/..;/admin").await.starts_with("HTTP/1.1 400"), "dots with parameters, still");
}

/// The gateway's own answers to a `HEAD` — an error, here a dead
/// upstream's 502 — go to an HTTP/2 client without their body, as to an
/// HTTP/1 one: DATA on a `HEAD`'s stream is malformed, and the client
/// failed reading the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_answered_by_the_gateway_has_no_body_over_http2() {
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n\n[[routes]]\nupstream = \"u\"\n",
        dead_addr()
    ));
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let r = send_with(&h2, Request::head(gw.url("/x")).body(Full::default()).unwrap()).await;
    assert_eq!(r.status, 502);
    assert!(r.body.is_empty());
    assert!(r.header("x-request-id").is_some());
    let r = send_with(&h2, Request::get(gw.url("/x")).body(Full::default()).unwrap()).await;
    assert_eq!(r.status, 502);
    assert!(!r.body.is_empty(), "a GET's has one");
}

/// A route for a path beyond ASCII matches every spelling of it — raw
/// UTF-8, escapes in small letters or in capitals — where only the one
/// written in the route did, the others falling to the catch-all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_beyond_ascii_is_routed_however_it_is_spelled() {
    let (cafe, other) = (TestUpstream::echo("cafe").await, TestUpstream::echo("other").await);
    let gw = TestGateway::start(&format!(
        "[upstreams.cafe]\nendpoints = [\"{}\"]\n[upstreams.other]\nendpoints = [\"{}\"]\n\
         [[routes]]\nmatch = {{ prefix = \"/caf%C3%A9\" }}\nupstream = \"cafe\"\n\
         [[routes]]\nupstream = \"other\"\n",
        cafe.addr, other.addr
    ));
    for spelling in ["/café/menu", "/caf%c3%a9/menu", "/caf%C3%a9/menu", "/caf%C3%A9/menu"] {
        let resp = get_path(&gw, spelling).await;
        assert!(resp.contains("x-upstream: cafe"), "{spelling}: {resp}");
    }
    assert!(get_path(&gw, "/cafe/menu").await.contains("x-upstream: other"));
}

/// An absolute-form target with a query and no path goes upstream with
/// the path `/` (RFC 9112 §3.2.1); it went as `GET ?x=1`, which the
/// upstream refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_target_without_a_path_goes_upstream_as_root() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&one_route(&up, ""));
    let resp = get_path(&gw, &format!("http://{}?x=1", gw.addr())).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"path\":\"/\""), "{resp}");
    assert!(resp.contains("\"query\":\"x=1\""), "{resp}");
}

/// `TRACE` is not served (501): an upstream that answers it echoes the
/// request as it reached it — with what plugins added — to the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_is_not_served() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&one_route(&up, ""));
    let r = send(Request::builder().method("TRACE").uri(gw.url("/")).body(Full::<Bytes>::default()).unwrap()).await;
    assert_eq!(r.status, 501, "{}", r.text());
    assert_eq!(up.hits(), 0);
}

/// A field that asks the upstream for another method or URL than the one
/// routed (`POST` routed to a route without the `DELETE` route's plugins,
/// and Symfony, Laravel or Rails deleting) is refused, over both
/// protocols, unless `server.override_headers = "keep"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_and_url_overrides_are_refused_unless_kept() {
    let up = TestUpstream::echo("u").await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let post = |gw: &TestGateway, name: &str, value: &str| {
        Request::post(gw.url("/users/7")).header(name, value).body(Full::<Bytes>::default()).unwrap()
    };
    let gw = TestGateway::start(&one_route(&up, ""));
    for (name, value) in [
        ("X-HTTP-Method-Override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
    ] {
        let r = send(post(&gw, name, value)).await;
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        assert!(r.text().contains("overriding the method or URL"), "{}", r.text());
        let r = send_with(&h2, post(&gw, name, value)).await;
        assert_eq!(r.status, 400, "{name} over HTTP/2: {}", r.text());
    }
    let hits = up.hits();
    assert_eq!(send(post(&gw, "x-other", "DELETE")).await.status, 200);
    assert_eq!(up.hits(), hits + 1, "none of the refused reached the upstream");
    let gw = TestGateway::start_with("override_headers = \"keep\"", &one_route(&up, ""));
    let r = send(post(&gw, "X-HTTP-Method-Override", "DELETE")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(echoed_header(&r.json(), "x-http-method-override").as_deref(), Some("DELETE"));
}

/// A standard method written in other letters (`delete`) is refused: to
/// the routes and plugins it is a method of its own (no route or policy for
/// `DELETE` applies), and many upstream frameworks fold it to `DELETE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_method_in_other_letters_is_refused() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&one_route(&up, ""));
    for method in ["delete", "Get"] {
        let req = format!("{method} /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let resp = raw(gw.addr(), req.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{method}: {resp}");
    }
    // An extension method in any letters passes.
    let resp = raw(gw.addr(), b"purge /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200") && resp.contains("\"method\":\"purge\""), "{resp}");
    assert_eq!(up.hits(), 1);
}

/// An HTTP/1.0 request without `Host` (HAProxy's default health check)
/// goes upstream as HTTP/1.1 with one — the upstream's name, as nginx does
/// — and without the client's `X-Forwarded-Host` (no host was named).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_names_no_host_gets_the_upstream_s_name() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&one_route(&up, ""));
    let resp = raw(gw.addr(), b"GET /check HTTP/1.0\r\nx-forwarded-host: evil.test\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200"), "{resp}");
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    let doc: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    assert_eq!(echoed_headers(&doc, "host"), ["u"], "{body}");
    assert!(echoed_headers(&doc, "x-forwarded-host").is_empty(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_names_the_host_and_a_bad_host_is_refused() {
    let (public, admin) = tokio::join!(TestUpstream::echo("public"), TestUpstream::echo("admin"));
    let gw = TestGateway::start(&format!(
        "[upstreams.public]\nendpoints = [\"{}\"]\n[upstreams.admin]\nendpoints = [\"{}\"]\n\n\
         [[routes]]\nmatch = {{ host = \"*.example.com\" }}\nupstream = \"public\"\n\n\
         [[routes]]\nmatch = {{ host = \"admin.internal\" }}\nupstream = \"admin\"\n\n\
         [[routes]]\nmatch = {{ host = \"*.plugged.test\" }}\nupstream = \"public\"\n\
         plugins = [{{ use = \"deny\", config = {{ headers = {{ host = \"admin.internal\" }} }} }}]\n",
        public.addr, admin.addr
    ));
    // A plugin sees the host that was routed too: the deny of `Host:
    // admin.internal` does not fire for a request routed as www.plugged.test
    // (it saw the client's `Host`, though the upstream got the target's).
    let resp =
        raw(gw.addr(), b"GET http://www.plugged.test/x HTTP/1.1\r\nhost: admin.internal\r\nconnection: close\r\n\r\n")
            .await;
    assert!(resp.starts_with("HTTP/1.1 200") && resp.contains("\"www.plugged.test\""), "{resp}");
    // An absolute-form target names the host; the `Host` it carries is
    // replaced by it (RFC 9112 §3.2.2), so the upstream serves what was routed.
    let resp =
        raw(gw.addr(), b"GET http://www.example.com/x HTTP/1.1\r\nhost: admin.internal\r\nconnection: close\r\n\r\n")
            .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("x-upstream: public"), "{resp}");
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    let doc: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    assert_eq!(echoed_headers(&doc, "host"), ["www.example.com"], "{body}");
    // A `Host` that is not host[:port] is a 400, not a wildcard match.
    for host in ["evil.test#.example.com", "evil.test/.example.com", "user@www.example.com", "www.example.com:8x"] {
        let req = format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
        let resp = raw(gw.addr(), req.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{host}: {resp}");
    }
    // The DNS root's trailing dot names the same host: its route, not one
    // for any host (here none: a 404 before).
    let resp = raw(gw.addr(), b"GET / HTTP/1.1\r\nhost: admin.internal.\r\nconnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200") && resp.contains("x-upstream: admin"), "{resp}");
    assert_eq!(public.hits() + admin.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_and_never_reach_the_upstream() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&one_route(&up, "max_body = \"1KiB\""));
    // Declared length over the limit: refused before anything is forwarded.
    let req = Request::post(gw.url("/")).body(Full::new(Bytes::from(vec![b'a'; 2048]))).unwrap();
    let r = send(req).await;
    assert_eq!(r.status, 413);
    assert_eq!(up.hits(), 0);
    // The same length declared twice in one field (RFC 9110 §8.6 allows
    // it): the same early refusal.
    let mut twice = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2048, 2048\r\nconnection: close\r\n\r\n".to_vec();
    twice.extend_from_slice(&[b'a'; 2048]);
    let resp = raw(gw.addr(), &twice).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert_eq!(up.hits(), 0);
    // Chunked, no declared length: cut off mid-stream.
    let mut chunked = b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    for _ in 0..4 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'b'; 0x200]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let resp = raw(gw.addr(), &chunked).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    // Under the limit: fine.
    let req = Request::post(gw.url("/")).body(Full::new(Bytes::from(vec![b'a'; 1000]))).unwrap();
    assert_eq!(send(req).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_get_4xx() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start_with("max_header_bytes = \"8KiB\"", &one_route(&up, ""));
    let resp = raw(gw.addr(), b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let mut big = b"GET / HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    big.extend_from_slice(b"\r\n\r\n");
    let resp = raw(gw.addr(), &big).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    // Over the limit, though whole in one read.
    let mut big = b"GET / HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 10_000));
    big.extend_from_slice(b"\r\n\r\n");
    let resp = raw(gw.addr(), &big).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    // A target too long for the limit is a 414, not a 431 (RFC 9112 §3),
    // whether the head arrives whole or the request line never ends.
    for (len, end) in [(20_000, &b" HTTP/1.1\r\nhost: x\r\n\r\n"[..]), (9_000, b"")] {
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', len));
        long.extend_from_slice(end);
        let resp = raw(gw.addr(), &long).await;
        assert!(resp.starts_with("HTTP/1.1 414"), "{len}: {resp}");
    }
    // The gateway keeps serving.
    assert_eq!(get(&gw.url("/")).await.status, 200);
}

/// With a head limit over 64 KiB, a target longer than a URI may be here
/// (65 534 bytes) is still a 414, as one over the head limit is; it was a
/// 400, as if malformed. One just under it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_longer_than_a_uri_may_be_is_414_under_a_large_head_limit() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start_with("max_header_bytes = \"256KiB\"", &one_route(&up, ""));
    for (len, status) in [(65_534, "200"), (65_535, "414"), (100_000, "414")] {
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', len - 1));
        long.extend_from_slice(b" HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let resp = raw(gw.addr(), &long).await;
        assert!(resp.starts_with(&format!("HTTP/1.1 {status}")), "{len}: {}", &resp[..resp.len().min(200)]);
    }
}

/// A route whose plugin answers `418` to a head read whole (an upstream's
/// HTTP server would refuse as many fields as the gateway may be allowed).
const ANSWERING_HEADS: &str =
    "[[routes]]\nplugins = [{ use = \"deny\", config = { headers = { \"x-last\" = \"*\" }, status = 418 } }]\n";

/// A request head of `fields` fields, the last `x-last`.
fn head_of(fields: usize) -> Vec<u8> {
    let mut head = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n".to_vec();
    for i in 0..fields - 3 {
        head.extend_from_slice(format!("x-field-{i}: {i}\r\n").as_bytes());
    }
    head.extend_from_slice(b"x-last: 1\r\n\r\n");
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_may_have_max_headers_fields_and_no_more() {
    // The default, 100; and the most the config allows, 1 024.
    for (server, most) in [("", 100), ("max_headers = 1024\nmax_header_bytes = \"1MiB\"", 1024)] {
        let gw = TestGateway::start_with(server, ANSWERING_HEADS);
        let resp = raw(gw.addr(), &head_of(most)).await;
        assert!(resp.starts_with("HTTP/1.1 418"), "{most} fields: {resp}");
        let resp = raw(gw.addr(), &head_of(most + 1)).await;
        assert!(resp.starts_with("HTTP/1.1 431"), "{} fields: {resp}", most + 1);
        // HTTP/2 too (its own limit is on bytes).
        let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http::<Full<Bytes>>();
        for (fields, status) in [(most, 418), (most + 1, 431)] {
            // 200 cookie fields count as the one `Cookie` they are joined into.
            let mut req = Request::get(gw.url("/")).header("x-last", "1");
            for i in 0..200 {
                req = req.header("cookie", format!("c{i}=1"));
            }
            for i in 0..fields - 2 {
                req = req.header(format!("x-field-{i}"), "1");
            }
            let r = wasmgate_tests::send_with(&h2, req.body(Full::default()).unwrap()).await;
            assert_eq!(r.status, status, "HTTP/2, {fields} fields");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_head_limits_of_the_connections_accepted_after_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = TestGateway::start_with("max_headers = 20", ANSWERING_HEADS);
    assert!(raw(gw.addr(), &head_of(30)).await.starts_with("HTTP/1.1 431"));
    // A connection open before the reload keeps the limits it was accepted with.
    let mut before = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    // (Accepted before the reload: its first request is read before it.)
    before.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-last: 1\r\n\r\n").await.unwrap();
    let mut pending = Vec::new();
    let first = wasmgate_tests::read_head(&mut before, &mut pending).await.unwrap_or_default();
    assert!(first.starts_with("HTTP/1.1 418"), "{first}");

    gw.write_config_with("max_headers = 40", ANSWERING_HEADS);
    assert_eq!(gw.gateway.reload().ok(), Some(1));
    let resp = raw(gw.addr(), &head_of(30)).await;
    assert!(resp.starts_with("HTTP/1.1 418"), "the new limit: {resp}");
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut req = Request::get(gw.url("/")).header("x-last", "1");
    for i in 0..28 {
        req = req.header(format!("x-field-{i}"), "1");
    }
    assert_eq!(wasmgate_tests::send_with(&h2, req.body(Full::default()).unwrap()).await.status, 418, "HTTP/2");
    before.write_all(&head_of(30)).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), before.read_to_end(&mut rest)).await;
    // After the first answer's body, still in `pending`.
    pending.extend_from_slice(&rest);
    let resp = String::from_utf8_lossy(&pending);
    assert!(resp.contains("HTTP/1.1 431") && !resp.contains("418"), "the old limit: {resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_proxied_to_http1_upstreams() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&one_route(&up, ""));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    // Cookies as separate fields, as HTTP/2 allows (and browsers do): one
    // `Cookie` for the HTTP/1.1 upstream (RFC 9113 §8.2.3).
    let req = get_request(&gw.url("/h2?x=1"), &[("x-h2", "yes"), ("cookie", "a=1"), ("cookie", "b=2")]);
    let r = wasmgate_tests::send_with(&client, req).await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(echoed_headers(&doc, "cookie"), vec!["a=1; b=2"]);
    assert_eq!(doc["version"], "HTTP/1.1");
    assert_eq!(doc["path"], "/h2");
    assert_eq!(echoed_header(&doc, "x-h2").as_deref(), Some("yes"));
    assert_eq!(echoed_header(&doc, "host").as_deref(), Some(gw.addr().to_string().as_str()));
    // Each hop's `Via` names the protocol it received the message in: the
    // client's HTTP/2 upstream, the upstream's HTTP/1.1 back.
    assert_eq!(echoed_header(&doc, "via").as_deref(), Some("2.0 wasmgate"));
    assert_eq!(r.header("via"), Some("1.1 wasmgate"));
    // An HTTP/1.0 request's, `1.0` (it said `1.1` whatever came in).
    let out = raw(gw.addr(), b"GET /h1 HTTP/1.0\r\nHost: a\r\n\r\n").await;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default();
    let doc: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    assert_eq!(echoed_header(&doc, "via").as_deref(), Some("1.0 wasmgate"), "{out}");
}

/// Trailers pass with only what a trailer section may carry (RFC 9110
/// §6.5.1), both ways: a `Host`, `Authorization` or `Content-Length` among a
/// request's trailers went upstream after the head the route and the
/// plugins had checked; hop-by-hop and framing fields among a response's
/// went to the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_without_the_fields_a_trailer_may_not_carry() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const FORBIDDEN: &str = "host: internal\r\nauthorization: Bearer x\r\ncontent-length: 0\r\nconnection: close\r\n\
        x-forwarded-for: 10.0.0.1\r\nif-match: *\r\nset-cookie: a=1\r\n";
    // `TE` may list codings beside `trailers` (RFC 9110 §10.1.4).
    for te in ["trailers", "deflate;q=0.5, Trailers"] {
        // An upstream that reads a chunked request to its end, keeps the bytes,
        // and answers chunked with the same trailers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<String>();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // The head's blank line, then the trailers'.
            while got.windows(4).filter(|w| *w == b"\r\n\r\n").count() < 2 {
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let _ = seen_tx.send(String::from_utf8_lossy(&got).into_owned());
            let answer = format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n{FORBIDDEN}grpc-status: 0\r\n\r\n"
            );
            let _ = s.write_all(answer.as_bytes()).await;
            let _ = s.read(&mut buf).await;
        });
        let gw =
            TestGateway::start(&format!("[upstreams.u]\nendpoints = [\"{addr}\"]\n\n[[routes]]\nupstream = \"u\"\n"));
        let req = format!(
            "POST / HTTP/1.1\r\nhost: x\r\nte: {te}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
             5\r\nhello\r\n0\r\n{FORBIDDEN}grpc-status: 0\r\n\r\n"
        );
        let out = raw(gw.addr(), req.as_bytes()).await;
        let seen = tokio::time::timeout(Duration::from_secs(5), seen_rx).await.unwrap().unwrap();
        // The list's `trailers` goes on, alone (gRPC needs it end to end).
        assert!(seen.to_ascii_lowercase().contains("\r\nte: trailers\r\n"), "{seen}");
        let request_trailers = seen.split("\r\n0\r\n").nth(1).unwrap_or_default();
        let response_trailers = out.split("\r\n0\r\n").nth(1).unwrap_or_default();
        for (what, trailers) in [("request", request_trailers), ("response", response_trailers)] {
            assert!(trailers.contains("grpc-status: 0"), "{what} ({te}): {trailers:?}");
            for field in FORBIDDEN.split("\r\n").filter(|f| !f.is_empty()) {
                assert!(!trailers.contains(field), "{what} trailers keep {field:?}: {trailers:?}");
            }
        }
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
}

/// Requests refused before they are routed are counted by status: a flood
/// of malformed or oversized heads shows on `/metrics` (no route, no
/// access log line sees them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_refused_before_routing_are_counted() {
    let gw = TestGateway::start(&format!("{}{}", wasmgate_tests::ADMIN, ANSWERING_HEADS));
    assert!(raw(gw.addr(), b"GET / HTTP/1.1\r\n\x01: x\r\n\r\n").await.starts_with("HTTP/1.1 400"));
    assert!(raw(gw.addr(), &head_of(101)).await.starts_with("HTTP/1.1 431"));
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut req = Request::get(gw.url("/"));
    for i in 0..101 {
        req = req.header(format!("x-field-{i}"), "1");
    }
    assert_eq!(send_with(&h2, req.body(Full::default()).unwrap()).await.status, 431);
    let metrics = gw.metrics().await;
    let refused = |status: &str| {
        wasmgate_tests::sample(&metrics, &format!("wasmgate_refused_requests_total{{status=\"{status}\"}}"))
            .map(str::to_owned)
    };
    assert_eq!((refused("400"), refused("431")), (Some("1".into()), Some("2".into())), "{metrics}");
}

/// An HTTP/2 request whose fields HTTP/1's parser would refuse or trim is a
/// 400: two `Host` fields (routed by the first, both went to the HTTP/1
/// upstream, which may read the other), a value with white space at an end
/// (HTTP/1's are trimmed: `x-env: prod\t` passed a header match for `prod`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http2_fields_are_refused() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&one_route(&up, ""));
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let status = |fields: &[(&str, &str)], authority: bool| {
        let send = send.clone();
        let uri = if authority { format!("http://{}/x", gw.addr()) } else { "/x".to_owned() };
        let mut req = Request::get(uri);
        for (name, value) in fields {
            req = req.header(*name, *value);
        }
        let req = req.body(()).unwrap();
        async move {
            let mut send = send.ready().await.unwrap();
            let (resp, _) = send.send_request(req, true).unwrap();
            resp.await.unwrap().status().as_u16()
        }
    };
    assert_eq!(status(&[("host", "a.example")], false).await, 200);
    assert_eq!(status(&[("host", "a.example"), ("host", "b.example")], false).await, 400);
    assert_eq!(status(&[("x-env", "prod\t")], true).await, 400);
    assert_eq!(status(&[("x-env", " prod")], true).await, 400);
    assert_eq!(status(&[("x-env", "pr od")], true).await, 200, "inner white space is a value's own");
    assert_eq!(up.hits(), 2);
}

/// An HTTP/2 client that cancels most of its streams young ("rapid reset",
/// CVE-2023-44487: each was routed and sent upstream) has its connection
/// closed past 100; one whose cancelled streams are fewer than half of its
/// streams is served on, whatever its answers say (an upstream's 400s are
/// answers, not the client's fault).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_cancelling_its_streams_is_cut_off() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(&one_route(&up, ""));
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        let (send, conn) = h2::client::handshake(tcp).await.unwrap();
        (send, tokio::spawn(conn))
    };
    let url = |path: &str| format!("http://{}{path}", gw.addr());
    // Sends `n` requests for a slow answer, each reset once it has left.
    let cancel = |send: h2::client::SendRequest<bytes::Bytes>, n: usize| {
        let url = url("/slow/5000");
        async move {
            for i in 0..n {
                let Ok(mut ready) = send.clone().ready().await else { return };
                // Half with the request ended, half with its body to come.
                let Ok((_, mut stream)) = ready.send_request(Request::get(&url).body(()).unwrap(), i % 2 == 0) else {
                    return;
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
                stream.send_reset(h2::Reason::CANCEL);
            }
        }
    };
    let answered = |send: h2::client::SendRequest<bytes::Bytes>| {
        let url = url("/status/400");
        async move {
            let mut ready = send.ready().await.ok()?;
            let (resp, _) = ready.send_request(Request::get(&url).body(()).unwrap(), true).ok()?;
            Some(resp.await.ok()?.status().as_u16())
        }
    };

    let (send, conn) = connect().await;
    for _ in 0..120 {
        assert_eq!(answered(send.clone()).await, Some(400));
    }
    cancel(send.clone(), 110).await;
    assert_eq!(answered(send.clone()).await, Some(400), "fewer cancelled than answered: served on");
    assert!(!conn.is_finished());

    let hits = up.hits();
    let (send, conn) = connect().await;
    cancel(send.clone(), 200).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(closed.is_ok(), "the connection was closed");
    assert!(up.hits() - hits < 150, "the rest never reached the upstream: {}", up.hits() - hits);
}

/// A client's `Connection` cannot name away `Host` (the upstream got none)
/// or a header a route's plugins set (`Connection: x-consumer` took an
/// identity header out after the plugins ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_name_away_host_or_what_plugins_set() {
    let up = TestUpstream::echo("u").await;
    let plugin = r#"plugins = [{ use = "add-header", config = { request = { set = { "x-consumer" = "alice" } } } }]"#;
    let gw = TestGateway::start(&format!(
        "[upstreams.u]\nendpoints = [\"{}\"]\n\n[[routes]]\nmatch = {{ prefix = \"/plain\" }}\nupstream = \"u\"\n\n\
         [[routes]]\nmatch = {{ prefix = \"/plugin\" }}\nupstream = \"u\"\n{plugin}\n",
        up.addr
    ));
    let addr = gw.addr();
    let echo = |path: &str| {
        let req = format!(
            "GET {path} HTTP/1.1\r\nhost: a.example\r\nconnection: host, x-consumer, close\r\nx-consumer: spoofed\r\n\r\n"
        );
        async move {
            let out = raw(addr, req.as_bytes()).await;
            let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
            serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default()
        }
    };
    let plain = echo("/plain").await;
    assert_eq!(echoed_headers(&plain, "host"), ["a.example"]);
    assert_eq!(echoed_headers(&plain, "x-consumer"), Vec::<String>::new(), "named: gone");
    let plugin = echo("/plugin").await;
    assert_eq!(echoed_headers(&plugin, "host"), ["a.example"]);
    assert_eq!(echoed_headers(&plugin, "x-consumer"), ["alice"], "the plugin's, not named away");
}

/// Request fields whose names have `_` are dropped (as nginx does): to
/// CGI-style upstreams `X_Forwarded_For` is `X-Forwarded-For`, and would
/// stand beside the one this hop sets. `underscores_in_headers` keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_with_underscores_are_dropped_unless_kept() {
    let up = TestUpstream::echo("u").await;
    let fields = [("x_forwarded_for", "10.6.6.6"), ("x_consumer", "admin"), ("x-kept", "1")];
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    for (extra, kept) in [("", false), ("underscores_in_headers = true", true)] {
        let gw = TestGateway::start_with(extra, &one_route(&up, ""));
        for doc in [
            get_with(&gw.url("/"), &fields).await.json(),
            send_with(&h2, get_request(&gw.url("/"), &fields)).await.json(),
        ] {
            assert_eq!(echoed_header(&doc, "x-kept").as_deref(), Some("1"));
            for name in ["x_forwarded_for", "x_consumer"] {
                assert_eq!(echoed_header(&doc, name).is_some(), kept, "{name} ({extra:?}): {doc}");
            }
        }
    }
}
