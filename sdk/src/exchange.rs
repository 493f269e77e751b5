//! The request and response a hook sees.
//!
//! Inside the gateway they are handles to data the host owns; in a native
//! unit test they wrap a [`TestRequest`]/[`TestResponse`]. The plugin code is
//! the same either way.

use std::net::IpAddr;
use std::sync::OnceLock;

use wasmgate_common::decimal::ip_text;

use crate::bindings::wasmgate::plugin::types as wit;
use crate::testing::{StagedHeader, TestRequest, TestResponse};
use wasmgate_common::fact::Read;

/// What an edit does to one header: a response header a request hook
/// left ([`Request::set_response_header`]), or a fixed one
/// ([`FixedHeaders`](crate::FixedHeaders)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Replaces every value.
    Set(Vec<u8>),
    /// Adds a value, keeping the others.
    Append(Vec<u8>),
    /// Removes every value.
    Remove,
}

pub use wasmgate_common::edit::{EditError, GATEWAY_REQUEST_HEADERS, MANAGED_HEADERS, STATUSES, check_request_header};

/// Whether `s` is an HTTP token (RFC 9110): what a method, a header name, an
/// auth scheme or a cookie name must be.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks a header name a plugin means to set or remove, by the gateway's
/// rules: a valid field name, not [managed](MANAGED_HEADERS). Returns it in
/// lowercase. Plugins call this on their config, so a bad name is refused at
/// load rather than on every request.
pub fn check_header_name(name: &str) -> Result<String, EditError> {
    if !is_token(name) {
        return Err(EditError::InvalidName(name.to_owned()));
    }
    let name = name.to_ascii_lowercase();
    if MANAGED_HEADERS.contains(&name.as_str()) {
        return Err(EditError::Forbidden(name));
    }
    Ok(name)
}

/// Checks a header value: no control characters other than tab, at most
/// [`MAX_HEADER_VALUE`](wasmgate_common::edit::MAX_HEADER_VALUE) bytes.
pub fn check_header_value(name: &str, value: &[u8]) -> Result<(), EditError> {
    let most = wasmgate_common::edit::MAX_HEADER_VALUE;
    if value.len() > most {
        return Err(EditError::InvalidValue(format!("value of `{name}` is {} bytes, more than {most}", value.len())));
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(EditError::InvalidValue(format!("value of `{name}` has a control character")));
    }
    Ok(())
}

/// [`check_header_name`] and [`check_header_value`] together.
pub fn check_header(name: &str, value: &[u8]) -> Result<String, EditError> {
    let name = check_header_name(name)?;
    check_header_value(&name, value)?;
    Ok(name)
}

pub(crate) fn check_path(path: &str) -> Result<(), EditError> {
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#') {
        return Err(EditError::InvalidValue(format!("`{path}` is not an origin-form path")));
    }
    Ok(())
}

pub(crate) fn check_query(query: &str) -> Result<(), EditError> {
    if query.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#') {
        return Err(EditError::InvalidValue(format!("`{query}` is not a valid query")));
    }
    Ok(())
}

/// The certificate a client presented ([`Request::client_certificate`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The SHA-256 of the certificate's DER, in lowercase hex.
    pub hash: String,
    /// Its subject as RFC 4514 writes it (`CN=alice,O=Acme`).
    pub subject: String,
    /// Its URI subject alternative names (a SPIFFE ID is one).
    pub uris: Vec<String>,
    /// Its DNS subject alternative names.
    pub dns_names: Vec<String>,
}

impl From<wit::EditError> for EditError {
    fn from(err: wit::EditError) -> Self {
        match err {
            wit::EditError::InvalidName(n) => Self::InvalidName(n),
            wit::EditError::InvalidValue(v) => Self::InvalidValue(v),
            wit::EditError::Forbidden(n) => Self::Forbidden(n),
            wit::EditError::InvalidStatus(s) => Self::InvalidStatus(s),
            wit::EditError::TooLarge(n) => Self::TooLarge(n),
            wit::EditError::BodyUnavailable => Self::BodyUnavailable,
        }
    }
}

/// The request on its way to the upstream.
#[derive(Debug)]
pub struct Request<'a> {
    inner: ReqInner<'a>,
}

#[derive(Debug)]
enum ReqInner<'a> {
    Guest(&'a wit::Request),
    Test(&'a mut TestRequest),
}

/// The text of a standard method; `None` for `other`.
fn method_name(kind: wit::MethodKind) -> Option<&'static str> {
    use wit::MethodKind as K;
    Some(match kind {
        K::Get => "GET",
        K::Head => "HEAD",
        K::Post => "POST",
        K::Put => "PUT",
        K::Delete => "DELETE",
        K::Connect => "CONNECT",
        K::Options => "OPTIONS",
        K::Trace => "TRACE",
        K::Patch => "PATCH",
        K::Other => return None,
    })
}

impl<'a> Request<'a> {
    pub(crate) fn guest(req: &'a wit::Request) -> Self {
        Self { inner: ReqInner::Guest(req) }
    }

    pub(crate) fn test(req: &'a mut TestRequest) -> Self {
        Self { inner: ReqInner::Test(req) }
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> String {
        match &self.inner {
            // A standard method by kind (a value, not text copied in).
            ReqInner::Guest(r) => method_name(r.method_kind()).map_or_else(|| r.method(), str::to_owned),
            ReqInner::Test(r) => {
                crate::testing::reads(Read::Method);
                r.method.clone()
            }
        }
    }

    /// The path as received (percent-encoded), without the query.
    pub fn path(&self) -> String {
        match &self.inner {
            ReqInner::Guest(r) => r.path(),
            ReqInner::Test(r) => {
                crate::testing::reads(Read::Path);
                r.path.clone()
            }
        }
    }

    /// The query string without `?`.
    pub fn query(&self) -> Option<String> {
        match &self.inner {
            ReqInner::Guest(r) => r.query(),
            ReqInner::Test(r) => {
                crate::testing::reads(Read::Query);
                r.query.clone()
            }
        }
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> String {
        match &self.inner {
            ReqInner::Guest(r) => r.scheme(),
            ReqInner::Test(r) => {
                crate::testing::reads(Read::Scheme);
                r.scheme.clone()
            }
        }
    }

    /// The authority the client asked for.
    pub fn authority(&self) -> Option<String> {
        match &self.inner {
            ReqInner::Guest(r) => r.authority(),
            ReqInner::Test(r) => {
                crate::testing::reads(Read::Authority);
                r.authority.clone()
            }
        }
    }

    /// The client's address: the socket peer, or — behind a proxy in the
    /// gateway's `server.trusted_proxies` — the client its
    /// `X-Forwarded-For` reports.
    pub fn client_ip(&self) -> String {
        match &self.inner {
            // As an address (a value), written out here.
            ReqInner::Guest(r) => ip_text(match r.client_address() {
                wit::IpAddress::Ipv4((a, b, c, d)) => IpAddr::from([a, b, c, d]),
                wit::IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => IpAddr::from([a, b, c, d, e, f, g, h]),
            }),
            ReqInner::Test(r) => {
                crate::testing::reads(Read::ClientAddress);
                r.client_ip.clone()
            }
        }
    }

    /// The certificate the client presented on its connection, as the
    /// gateway verified it: `None` over plain HTTP, or when the listener
    /// asks for none (`client_ca`) or the client gave none. Behind a proxy
    /// in `server.trusted_proxies` it is the proxy's. Never a header's word.
    /// Needs a gateway of WIT 0.1.5 or later. Not a fact a request hook
    /// can declare ([`Plugin::depends_on`](crate::Plugin::depends_on)): a
    /// hook that reads it is called every time.
    pub fn client_certificate(&self) -> Option<ClientCertificate> {
        match &self.inner {
            ReqInner::Guest(r) => r.client_certificate().map(|c| ClientCertificate {
                hash: c.hash,
                subject: c.subject,
                uris: c.uris,
                dns_names: c.dns_names,
            }),
            ReqInner::Test(r) => {
                crate::testing::strays("read the client certificate");
                r.client_certificate.clone()
            }
        }
    }

    /// The request id (`x-request-id`).
    pub fn id(&self) -> String {
        match &self.inner {
            ReqInner::Guest(r) => r.id(),
            ReqInner::Test(r) => {
                crate::testing::strays("read the request id");
                r.id.clone()
            }
        }
    }

    /// The name of the matched route. An instance serves one route (the
    /// gateway configures one per route and plugin), so inside the gateway
    /// the host is asked once and the name kept.
    pub fn route(&self) -> String {
        match &self.inner {
            ReqInner::Guest(r) => {
                static ROUTE: OnceLock<String> = OnceLock::new();
                ROUTE.get_or_init(|| r.route()).clone()
            }
            ReqInner::Test(r) => r.route.clone(),
        }
    }

    /// A `{name}` segment captured by the route's path pattern.
    pub fn path_param(&self, name: &str) -> Option<String> {
        match &self.inner {
            ReqInner::Guest(r) => r.path_param(name),
            ReqInner::Test(r) => {
                crate::testing::reads(Read::PathParam(name));
                r.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
            }
        }
    }

    /// Sets a header on the response this request gets, without a response
    /// hook: the gateway keeps it until the response (the upstream's, or a
    /// reply from a later plugin or this one) comes back through this
    /// plugin, and sets it then, before this plugin's
    /// [`on_response`](crate::Plugin::on_response) if it has one. Responses
    /// the gateway makes for its own failures (502, 504) do not get it.
    pub fn set_response_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), EditError> {
        self.edit_response_header(name, Some(value.as_ref()), false)
    }

    /// As [`set_response_header`](Self::set_response_header), but adds the
    /// value, keeping the ones the response has.
    pub fn append_response_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), EditError> {
        self.edit_response_header(name, Some(value.as_ref()), true)
    }

    /// As [`set_response_header`](Self::set_response_header), but removes
    /// the header from the response (the upstream's own, say).
    pub fn remove_response_header(&mut self, name: &str) -> Result<(), EditError> {
        self.edit_response_header(name, None, false)
    }

    /// `value` `None`: remove. The value is borrowed down to the host call,
    /// which copies it into the gateway: nothing is allocated here.
    fn edit_response_header(&mut self, name: &str, value: Option<&[u8]>, append: bool) -> Result<(), EditError> {
        match (&mut self.inner, value) {
            (ReqInner::Guest(r), Some(v)) if append => r.append_response_header(name, v).map_err(Into::into),
            (ReqInner::Guest(r), Some(v)) => r.set_response_header(name, v).map_err(Into::into),
            (ReqInner::Guest(r), None) => r.remove_response_header(name).map_err(Into::into),
            (ReqInner::Test(r), Some(v)) => {
                let name = crate::check_header(name, v)?;
                let edit = if append { HeaderEdit::Append(v.to_vec()) } else { HeaderEdit::Set(v.to_vec()) };
                r.response_headers.push(StagedHeader { name, edit });
                Ok(())
            }
            (ReqInner::Test(r), None) => {
                let name = crate::check_header_name(name)?;
                r.response_headers.push(StagedHeader { name, edit: HeaderEdit::Remove });
                Ok(())
            }
        }
    }

    /// Replaces the path (percent-encoded, starting with `/`).
    pub fn set_path(&mut self, path: &str) -> Result<(), EditError> {
        match &mut self.inner {
            ReqInner::Guest(r) => r.set_path(path).map_err(Into::into),
            ReqInner::Test(r) => {
                check_path(path)?;
                r.path = path.to_owned();
                Ok(())
            }
        }
    }

    /// Replaces the query string; `None` removes it.
    pub fn set_query(&mut self, query: Option<&str>) -> Result<(), EditError> {
        match &mut self.inner {
            ReqInner::Guest(r) => r.set_query(query).map_err(Into::into),
            ReqInner::Test(r) => {
                if let Some(q) = query {
                    check_query(q)?;
                }
                r.query = query.map(str::to_owned);
                Ok(())
            }
        }
    }

    /// The buffered body; needs [`Info::request_body`](crate::Info).
    pub fn body(&self) -> Result<Vec<u8>, EditError> {
        match &self.inner {
            ReqInner::Guest(r) => r.body().map_err(Into::into),
            ReqInner::Test(r) => {
                crate::testing::strays("read the body");
                r.body.get()
            }
        }
    }

    /// Replaces the body; the gateway fixes `content-length`.
    pub fn set_body(&mut self, body: impl Into<Vec<u8>>) -> Result<(), EditError> {
        match &mut self.inner {
            ReqInner::Guest(r) => r.set_body(&body.into()).map_err(Into::into),
            ReqInner::Test(r) => r.body.set(body.into()),
        }
    }
}

/// The upstream's response on its way to the client.
#[derive(Debug)]
pub struct Response<'a> {
    inner: RespInner<'a>,
}

#[derive(Debug)]
enum RespInner<'a> {
    Guest(&'a wit::Response),
    Test(&'a mut TestResponse),
}

impl<'a> Response<'a> {
    pub(crate) fn guest(resp: &'a wit::Response) -> Self {
        Self { inner: RespInner::Guest(resp) }
    }

    pub(crate) fn test(resp: &'a mut TestResponse) -> Self {
        Self { inner: RespInner::Test(resp) }
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        match &self.inner {
            RespInner::Guest(r) => r.status(),
            RespInner::Test(r) => r.status,
        }
    }

    /// Replaces the status code (a final one: [`STATUSES`]).
    pub fn set_status(&mut self, status: u16) -> Result<(), EditError> {
        match &mut self.inner {
            RespInner::Guest(r) => r.set_status(status).map_err(Into::into),
            RespInner::Test(r) => {
                if !STATUSES.contains(&status) {
                    return Err(EditError::InvalidStatus(status));
                }
                r.status = status;
                Ok(())
            }
        }
    }

    /// The buffered body; needs [`Info::response_body`](crate::Info).
    pub fn body(&self) -> Result<Vec<u8>, EditError> {
        match &self.inner {
            RespInner::Guest(r) => r.body().map_err(Into::into),
            RespInner::Test(r) => r.body.get(),
        }
    }

    /// Replaces the body; the gateway fixes `content-length`.
    pub fn set_body(&mut self, body: impl Into<Vec<u8>>) -> Result<(), EditError> {
        match &mut self.inner {
            RespInner::Guest(r) => r.set_body(&body.into()).map_err(Into::into),
            RespInner::Test(r) => r.body.set(body.into()),
        }
    }
}

/// The headers of a [`Request`] or a [`Response`]: header logic written
/// against this trait serves both sides. In the prelude.
pub trait Headers {
    /// The first value of a header.
    fn header(&self, name: &str) -> Option<Vec<u8>>;

    /// The first value of a header, when it is UTF-8 text.
    fn header_str(&self, name: &str) -> Option<String> {
        self.header(name).and_then(|v| String::from_utf8(v).ok())
    }

    /// Every value of a header.
    fn header_all(&self, name: &str) -> Vec<Vec<u8>>;

    /// A header that may appear at most once: `Ok(None)` when absent, its
    /// value when it appears once, `Err(n)` when it appears `n` times. For
    /// credentials, which are ambiguous when repeated; cheaper than
    /// [`header_all`](Self::header_all), which copies every value in.
    fn header_single(&self, name: &str) -> Result<Option<Vec<u8>>, usize>;

    /// All headers in order.
    fn headers(&self) -> Vec<(String, Vec<u8>)>;

    /// Replaces every value of a header.
    fn set_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), EditError>;

    /// Adds a value to a header.
    fn append_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), EditError>;

    /// Removes a header; `true` if it was there.
    fn remove_header(&mut self, name: &str) -> bool;
}

/// One implementation for both sides: the guest resources have the same
/// header functions, and so do the test doubles.
/// `request`: the headers are a request's, on which a plugin may not set
/// the fields the gateway writes ([`check_request_header`](wasmgate_common::edit::check_request_header)).
macro_rules! impl_headers {
    ($ty:ident, $inner:ident, $request:literal) => {
        impl Headers for $ty<'_> {
            fn header(&self, name: &str) -> Option<Vec<u8>> {
                match &self.inner {
                    $inner::Guest(r) => r.header(name),
                    $inner::Test(r) => {
                        crate::testing::reads(Read::Header(name));
                        r.headers.get(name)
                    }
                }
            }

            fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
                match &self.inner {
                    $inner::Guest(r) => r.header_all(name),
                    $inner::Test(r) => {
                        crate::testing::reads(Read::Header(name));
                        r.headers.get_all(name)
                    }
                }
            }

            fn header_single(&self, name: &str) -> Result<Option<Vec<u8>>, usize> {
                match &self.inner {
                    $inner::Guest(r) => r.header_single(name).map_err(|n| n as usize),
                    $inner::Test(r) => {
                        crate::testing::reads(Read::Header(name));
                        let mut values = r.headers.get_all(name);
                        match values.len() {
                            0 | 1 => Ok(values.pop()),
                            n => Err(n),
                        }
                    }
                }
            }

            fn headers(&self) -> Vec<(String, Vec<u8>)> {
                match &self.inner {
                    $inner::Guest(r) => r.headers(),
                    $inner::Test(r) => {
                        crate::testing::strays("read every header");
                        r.headers.all()
                    }
                }
            }

            fn set_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), EditError> {
                match &mut self.inner {
                    $inner::Guest(r) => r.set_header(name, value.as_ref()).map_err(Into::into),
                    $inner::Test(r) => {
                        if $request {
                            wasmgate_common::edit::check_request_header(&name.to_ascii_lowercase())?;
                        }
                        r.headers.set(name, value.as_ref())
                    }
                }
            }

            fn append_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), EditError> {
                match &mut self.inner {
                    $inner::Guest(r) => r.append_header(name, value.as_ref()).map_err(Into::into),
                    $inner::Test(r) => {
                        if $request {
                            wasmgate_common::edit::check_request_header(&name.to_ascii_lowercase())?;
                        }
                        r.headers.append(name, value.as_ref())
                    }
                }
            }

            fn remove_header(&mut self, name: &str) -> bool {
                match &mut self.inner {
                    $inner::Guest(r) => r.remove_header(name),
                    $inner::Test(r) => {
                        crate::testing::reads(Read::Header(name));
                        r.headers.remove(name)
                    }
                }
            }
        }
    };
}

impl_headers!(Request, ReqInner, true);
impl_headers!(Response, RespInner, false);
