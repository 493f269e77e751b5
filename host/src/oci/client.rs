//! The few HTTP requests of the distribution API a pull and a push make:
//! one connection a request (they happen at load, a handful each), the
//! registry's token or basic authentication, redirects (registries send
//! blobs from a CDN), and an egress proxy.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, HOST, LOCATION, USER_AGENT, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use super::Failure;
use crate::config::{Egress, Protocol, Proxy, RegistryConfig, UpstreamTls};

/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 5;
/// How long a connection may take to open.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long an answer's head may take, from the connection opened.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// The largest error body or token answer read.
const SMALL: usize = 64 << 10;

/// A client of one registry, holding the token it was given.
pub(crate) struct Client {
    /// `http://host:port` or `https://host:port`.
    base: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    settings: RegistryConfig,
    /// `Authorization` once the registry asked for one.
    authorization: Option<HeaderValue>,
}

impl Client {
    pub(crate) fn new(registry: &str, settings: &RegistryConfig) -> Result<Self, Failure> {
        let tls = if settings.tls {
            let upstream = UpstreamTls { ca: settings.ca.clone(), server_name: None, client_cert: None };
            Some(crate::tls::client_config(&upstream, Protocol::Http1).map_err(|e| Failure::Setup(e.to_string()))?)
        } else {
            None
        };
        let scheme = if settings.tls { "https" } else { "http" };
        Ok(Self { base: format!("{scheme}://{registry}"), tls, settings: settings.clone(), authorization: None })
    }

    /// `method` on `path` (`/v2/...`, or an upload's absolute `Location`),
    /// authenticated as the registry asks (for `scope`), following
    /// redirects; the answer's body read up to `limit` bytes (64 KiB at
    /// least).
    pub(crate) async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(http::HeaderName, &str)],
        body: Bytes,
        scope: &str,
        limit: usize,
    ) -> Result<Response<Bytes>, Failure> {
        let mut uri: Uri = if path.starts_with('/') { format!("{}{path}", self.base) } else { path.to_owned() }
            .parse()
            .map_err(|_| Failure::Protocol("the registry named an upload location that is not a URL".to_owned()))?;
        let mut authenticated = false;
        let mut redirects = 0;
        loop {
            // A registry with TLS is spoken to over TLS only (an upload's
            // Location may say `http://` behind a TLS-terminating proxy).
            if self.tls.is_some() && uri.scheme_str() != Some("https") {
                return Err(Failure::Protocol(format!("{} is not HTTPS, and the registry is", shown(&uri))));
            }
            let to_registry = same_origin(&self.base, &uri);
            // Credentials go to the registry only, not to where it redirects.
            let auth = self.authorization.as_ref().filter(|_| to_registry);
            let response = self.once(&method, &uri, headers, body.clone(), auth, limit).await?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && to_registry && !authenticated {
                let challenge = response.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("");
                self.authorization = Some(self.authenticate(challenge, scope).await?);
                authenticated = true;
                continue;
            }
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                redirects += 1;
                let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok());
                let (Some(location), true) = (location, redirects <= MAX_REDIRECTS) else {
                    return Err(Failure::Protocol(format!("{}: {status} without a usable Location", shown(&uri))));
                };
                let next = resolve(&uri, location)?;
                // Never from HTTPS down to plain HTTP.
                if uri.scheme_str() == Some("https") && next.scheme_str() != Some("https") {
                    return Err(Failure::Protocol(format!("{} redirected to plain HTTP", shown(&uri))));
                }
                uri = next;
                continue;
            }
            return Ok(response);
        }
    }

    /// One request on a new connection.
    async fn once(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &[(http::HeaderName, &str)],
        body: Bytes,
        auth: Option<&HeaderValue>,
        limit: usize,
    ) -> Result<Response<Bytes>, Failure> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(Failure::Protocol(format!("{}: not an http(s) URL", shown(uri)))),
        };
        let authority = uri.authority().ok_or_else(|| Failure::Protocol(format!("{}: no host", shown(uri))))?;
        let host = authority.host();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        // Through a proxy (the registry's, else the environment's for this
        // host): a tunnel for HTTPS (CONNECT), the whole URL in the request
        // line for plain HTTP.
        let from_env;
        let proxy = match &self.settings.proxy {
            Egress::Proxy(proxy) => Some(proxy),
            Egress::Direct => None,
            Egress::Environment => {
                from_env = super::proxy::from_env(https, bare, port).map_err(Failure::Proxy)?;
                from_env.as_ref()
            }
        };
        let tcp = match proxy {
            Some(proxy) => {
                let mut tcp = connect(&proxy.host, proxy.port, &format!("the proxy {proxy}")).await?;
                if https {
                    tunnel(&mut tcp, bare, port, proxy).await?;
                }
                tcp
            }
            None => connect(bare, port, authority.as_str()).await?,
        };
        let target = match proxy {
            Some(_) if !https => uri.to_string(),
            _ => uri.path_and_query().map_or("/", http::uri::PathAndQuery::as_str).to_owned(),
        };
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(target)
            .header(HOST, authority.as_str())
            .header(USER_AGENT, concat!("wasmgate/", env!("CARGO_PKG_VERSION")))
            .header(CONTENT_LENGTH, body.len());
        for (name, value) in headers {
            builder = builder.header(name, *value);
        }
        if let Some(auth) = auth {
            builder = builder.header(AUTHORIZATION, auth);
        }
        if let Some(basic) = proxy.and_then(|p| p.authorization.as_ref()).filter(|_| !https) {
            let mut value = HeaderValue::from_bytes(basic.expose()).map_err(|e| Failure::Proxy(e.to_string()))?;
            value.set_sensitive(true);
            builder = builder.header(http::header::PROXY_AUTHORIZATION, value);
        }
        let request = builder.body(Full::new(body)).map_err(|e| Failure::Protocol(e.to_string()))?;
        let answered = async {
            if !https {
                return exchange(TokioIo::new(tcp), request, authority.as_str()).await;
            }
            let config = match &self.tls {
                Some(config) => config.clone(),
                // A redirect from a plain-HTTP registry to an HTTPS CDN.
                None => crate::tls::client_config(&UpstreamTls::default(), Protocol::Http1)
                    .map_err(|e| Failure::Setup(e.to_string()))?,
            };
            let name = ServerName::try_from(bare.to_owned())
                .map_err(|_| Failure::Protocol(format!("`{host}` is not a server name")))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| Failure::Unreachable(format!("TLS with {authority}: {e}")))?;
            exchange(TokioIo::new(stream), request, authority.as_str()).await
        };
        // A registry that takes connections and then says nothing is down
        // too (a load balancer in front of none).
        let response = tokio::time::timeout(ANSWER_TIMEOUT, answered).await.map_err(|_| {
            Failure::Unreachable(format!("{authority} did not answer within {} s", ANSWER_TIMEOUT.as_secs()))
        })??;
        if let Some(proxy) = proxy.filter(|_| !https)
            && response.status() == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED
        {
            return Err(Failure::Proxy(format!("the proxy {proxy} asks for credentials (407)")));
        }
        let (parts, body) = response.into_parts();
        // An error's body is only read for its message; an answer that is
        // not a manifest or a blob (an upload's) may still have a small one.
        let limit = if parts.status.is_success() { limit.max(SMALL) } else { SMALL };
        let body = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| Failure::Protocol(format!("{}: reading the answer: {e}", shown(uri))))?
            .to_bytes();
        Ok(Response::from_parts(parts, body))
    }

    /// The `Authorization` a challenge asks for: a token from the realm it
    /// names (for `scope`, with the credentials if any), or the
    /// credentials themselves.
    async fn authenticate(&self, challenge: &str, scope: &str) -> Result<HeaderValue, Failure> {
        let basic = self.settings.credentials.as_ref().map(|c| basic(c.username.as_bytes(), c.password.expose()));
        let value = match Challenge::parse(challenge) {
            Some(Challenge::Basic) => basic.ok_or(Failure::Denied(
                "the registry asks for a username and password, and none is configured".to_owned(),
            ))?,
            Some(Challenge::Bearer { realm, service }) => {
                let mut url = format!(
                    "{realm}{}scope={}",
                    if realm.contains('?') { '&' } else { '?' },
                    wasmgate_common::query::encode(scope.as_bytes())
                );
                if let Some(service) = service {
                    url.push_str("&service=");
                    url.push_str(&wasmgate_common::query::encode(service.as_bytes()));
                }
                let uri: Uri =
                    url.parse().map_err(|_| Failure::Protocol(format!("token realm `{realm}` is not a URL")))?;
                if uri.scheme_str() != Some("https") && self.settings.tls {
                    return Err(Failure::Protocol(format!("token realm {realm} is not HTTPS")));
                }
                let auth = basic.as_deref().map(HeaderValue::from_str).transpose().map_err(|_| {
                    Failure::Setup("the registry username or password is not a valid header value".to_owned())
                })?;
                let answer = self.once(&Method::GET, &uri, &[], Bytes::new(), auth.as_ref(), SMALL).await?;
                match answer.status() {
                    s if s.is_success() => {}
                    s if super::down(s) => {
                        return Err(Failure::Unreachable(format!("the token service {realm} answered {s}")));
                    }
                    s => return Err(Failure::Denied(format!("the token service {realm} answered {s}"))),
                }
                let token: Token = serde_json::from_slice(answer.body())
                    .map_err(|e| Failure::Protocol(format!("the token service {realm}: {e}")))?;
                let token = token
                    .token
                    .or(token.access_token)
                    .ok_or_else(|| Failure::Protocol(format!("the token service {realm} gave no token")))?;
                format!("Bearer {token}")
            }
            None => return Err(Failure::Protocol(format!("unsupported authentication challenge `{challenge}`"))),
        };
        HeaderValue::from_str(&value)
            .map_err(|_| Failure::Setup("the registry credentials are not a valid header value".to_owned()))
            .map(|mut v| {
                v.set_sensitive(true);
                v
            })
    }
}

/// A TCP connection to `host:port` (`what`, for messages). A registry
/// whose packets are dropped is down, not slow: said as unreachable (a tag
/// then falls back to its last manifest) well within the pull's bound.
async fn connect(host: &str, port: u16, what: &str) -> Result<TcpStream, Failure> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(e)) => Err(Failure::Unreachable(format!("cannot connect to {what}: {e}"))),
        Err(_) => Err(Failure::Unreachable(format!(
            "cannot connect to {what}: no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// `Basic base64(user:password)` (RFC 7617), as an `Authorization` or
/// `Proxy-Authorization` value.
pub(super) fn basic(user: &[u8], password: &[u8]) -> String {
    let mut plain = user.to_vec();
    plain.push(b':');
    plain.extend_from_slice(password);
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(plain))
}

/// Asks the proxy on `tcp` for a tunnel to `host:port` (HTTP CONNECT).
async fn tunnel(tcp: &mut TcpStream, host: &str, port: u16, proxy: &Proxy) -> Result<(), Failure> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let mut ask = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
    if let Some(basic) = &proxy.authorization {
        ask.extend_from_slice(b"Proxy-Authorization: ");
        ask.extend_from_slice(basic.expose());
        ask.extend_from_slice(b"\r\n");
    }
    ask.extend_from_slice(b"\r\n");
    let asking = async {
        tcp.write_all(&ask).await?;
        // The answer's head, read a byte at a time: what follows it is the
        // tunnel's, and nothing may be read past it.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= SMALL {
                return Err(std::io::Error::other("its answer's head is over 64 KiB"));
            }
            head.push(tcp.read_u8().await?);
        }
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(ANSWER_TIMEOUT, asking)
        .await
        .map_err(|_| {
            Failure::Unreachable(format!("the proxy {proxy} did not answer within {} s", ANSWER_TIMEOUT.as_secs()))
        })?
        .map_err(|e| Failure::Unreachable(format!("the proxy {proxy}: {e}")))?;
    let status = head.split(|b| *b == b' ').nth(1).and_then(|s| std::str::from_utf8(s).ok()?.parse::<u16>().ok());
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line: String = String::from_utf8_lossy(line).chars().take(120).collect();
    match status {
        Some(200..=299) => Ok(()),
        // The proxy down for the while, or the registry behind it.
        Some(502..=504) => Err(Failure::Unreachable(format!("the proxy {proxy} could not reach {target}: {line}"))),
        // Refused: its rules, or credentials it wants (a fallback would
        // hide that for as long as it lasts).
        _ => Err(Failure::Proxy(format!("the proxy {proxy} refused a tunnel to {target}: {line}"))),
    }
}

/// Sends `request` over a fresh HTTP/1.1 connection.
async fn exchange<I>(
    io: I,
    request: Request<Full<Bytes>>,
    authority: &str,
) -> Result<Response<hyper::body::Incoming>, Failure>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| Failure::Unreachable(format!("{authority}: {e}")))?;
    tokio::spawn(connection);
    sender.send_request(request).await.map_err(|e| Failure::Unreachable(format!("{authority}: {e}")))
}

#[derive(serde::Deserialize)]
struct Token {
    token: Option<String>,
    access_token: Option<String>,
}

/// A `WWW-Authenticate` challenge the client answers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String> },
}

impl Challenge {
    /// The first challenge, if Basic or Bearer (with its realm).
    pub(crate) fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Self::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = params(rest);
        let find = |name: &str| params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        Some(Self::Bearer { realm: find("realm")?, service: find("service") })
    }
}

/// `key="value", key=token, ...` (a quoted value may hold commas and `\"`).
fn params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, quoted.get(end..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.push((key, value));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// Whether `uri` is on the origin `base` (`scheme://host:port`): scheme,
/// host and port the same.
fn same_origin(base: &str, uri: &Uri) -> bool {
    let Ok(base) = base.parse::<Uri>() else { return false };
    let origin = |u: &Uri| {
        let port = u.port_u16().or(match u.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        (u.scheme_str().map(str::to_owned), u.host().map(str::to_ascii_lowercase), port)
    };
    origin(&base) == origin(uri)
}

/// A URL for messages: without its query, which for a CDN's redirect is a
/// signature (a credential for a while), or a user and password.
pub(crate) fn shown(uri: &Uri) -> String {
    let host = uri.authority().map_or("", |a| a.as_str().rsplit('@').next().unwrap_or(""));
    format!("{}://{host}{}", uri.scheme_str().unwrap_or(""), uri.path())
}

/// `location` (absolute, or a path on `base`'s origin) as a URI.
fn resolve(base: &Uri, location: &str) -> Result<Uri, Failure> {
    let text = if location.starts_with('/') && !location.starts_with("//") {
        let (scheme, authority) = (base.scheme_str().unwrap_or("http"), base.authority().map_or("", |a| a.as_str()));
        format!("{scheme}://{authority}{location}")
    } else {
        location.to_owned()
    };
    let not_a_url = || Failure::Protocol(format!("{} redirected to a Location that is not a URL", shown(base)));
    let uri: Uri = text.parse().map_err(|_| not_a_url())?;
    if uri.scheme().is_none() || uri.authority().is_none() {
        return Err(not_a_url());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tunnel is asked for with the proxy's credentials, if it has any;
    /// its refusal is the proxy's (not the registry's, not "down").
    #[tokio::test]
    async fn a_tunnel_carries_the_proxys_credentials_and_its_refusal_is_the_proxys() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for (answer, credentials) in
            [("200 Connection established", true), ("407 Proxy Authentication Required", false)]
        {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let asked = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    head.push(s.read_u8().await.unwrap());
                }
                s.write_all(format!("HTTP/1.1 {answer}\r\n\r\n").as_bytes()).await.unwrap();
                String::from_utf8(head).unwrap()
            });
            let mut proxy = Proxy::parse(&format!("http://{addr}")).unwrap();
            if credentials {
                proxy.authorization = Some(crate::config::Secret::new(basic(b"fleet", b"pw")));
            }
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let tunnelled = tunnel(&mut tcp, "registry.example", 443, &proxy).await;
            let head = asked.await.unwrap();
            assert!(head.starts_with("CONNECT registry.example:443 HTTP/1.1\r\n"), "{head}");
            if credentials {
                assert_eq!(tunnelled, Ok(()));
                assert!(head.contains(&format!("Proxy-Authorization: {}\r\n", basic(b"fleet", b"pw"))), "{head}");
            } else {
                assert!(matches!(tunnelled, Err(Failure::Proxy(ref e)) if e.contains("407")), "{tunnelled:?}");
                assert!(!head.to_ascii_lowercase().contains("proxy-authorization"), "{head}");
            }
        }
    }

    #[test]
    fn challenges_are_read_as_registries_write_them() {
        assert_eq!(Challenge::parse("Basic realm=\"Registry Realm\""), Some(Challenge::Basic));
        assert_eq!(
            Challenge::parse(r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull""#),
            Some(Challenge::Bearer { realm: "https://ghcr.io/token".to_owned(), service: Some("ghcr.io".to_owned()) })
        );
        // Spaces, unquoted values, a quoted comma and an escaped quote.
        assert_eq!(
            Challenge::parse(r#"bearer service=reg, realm="https://auth.example/t?a=1,2&q=\"x\"""#),
            Some(Challenge::Bearer {
                realm: r#"https://auth.example/t?a=1,2&q="x""#.to_owned(),
                service: Some("reg".to_owned())
            })
        );
        assert_eq!(Challenge::parse("Bearer service=\"x\""), None, "no realm: nowhere to ask");
        assert_eq!(Challenge::parse("Negotiate abc"), None);
        assert_eq!(Challenge::parse(""), None);
    }

    #[test]
    fn locations_resolve_against_the_request() {
        let base: Uri = "http://127.0.0.1:5000/v2/a/blobs/uploads/".parse().unwrap();
        assert_eq!(
            resolve(&base, "/v2/a/blobs/uploads/u?_state=x").unwrap().to_string(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=x"
        );
        assert_eq!(resolve(&base, "https://cdn.example/b?sig=1").unwrap().to_string(), "https://cdn.example/b?sig=1");
        assert!(resolve(&base, "relative/path").is_err());
        assert!(resolve(&base, "//cdn.example/b").is_err());
    }

    #[test]
    fn credentials_go_to_the_registry_s_origin_only() {
        let on = |base: &str, uri: &str| same_origin(base, &uri.parse().unwrap());
        assert!(on("https://ghcr.io", "https://ghcr.io/v2/a/manifests/1"));
        assert!(on("https://Registry.example:5000", "https://registry.example:5000/v2/"));
        assert!(!on("https://ghcr.io", "http://ghcr.io/v2/a/blobs/uploads/u"), "another scheme");
        assert!(!on("https://ghcr.io", "https://pkg-containers.githubusercontent.com/ghcr1/blobs/x"), "a CDN");
        assert!(!on("https://ghcr.io", "https://ghcr.io:8443/v2/"), "another port");
        assert!(on("https://ghcr.io", "https://ghcr.io:443/v2/"), "the default port, said");
        assert!(on("http://127.0.0.1:80", "http://127.0.0.1/v2/"));
        assert!(!on("http://127.0.0.1:5000", "http://127.0.0.1:5001/v2/"));
    }

    #[test]
    fn urls_are_shown_without_their_query() {
        let uri: Uri = "https://cdn.example/blobs/x?X-Amz-Signature=secret&X-Amz-Credential=c".parse().unwrap();
        assert_eq!(shown(&uri), "https://cdn.example/blobs/x");
        let uri: Uri = "https://user:secret@cdn.example:8443/b".parse().unwrap();
        assert_eq!(shown(&uri), "https://cdn.example:8443/b");
    }

    #[test]
    fn scopes_are_percent_encoded() {
        assert_eq!(
            wasmgate_common::query::encode(b"repository:acme/x:pull,push"),
            "repository%3Aacme%2Fx%3Apull%2Cpush"
        );
    }
}
