//! Running plugin logic natively, in ordinary `#[test]`s.
//!
//! [`TestRequest`] and [`TestResponse`] stand in for the gateway's data and
//! follow its rules (case-insensitive names, headers the gateway owns, bodies
//! available only when [`Info`] asks for them); [`on_request`] and
//! [`on_response`] call hooks the way the gateway does. The context map, log
//! and clock are per-thread stand-ins: see [`context`], [`logs`],
//! [`set_now_unix_ms`] and [`reset`].

use std::cell::RefCell;
use std::collections::HashMap;

use crate::decision::Decision;
use crate::exchange::{EditError, Request, Response};
use crate::log::Level;
use crate::plugin::{ConfigError, Plugin};

/// Builds a plugin from JSON config text, as the gateway does with the
/// route's TOML table.
pub fn configure<P: Plugin>(config_json: &str) -> Result<P, ConfigError> {
    crate::plugin::build::<P>(config_json)
}

/// Calls `on_request` as the gateway would: not at all when the plugin's
/// [`Info`] leaves it out, and with the body available only when asked for.
pub fn on_request<P: Plugin>(plugin: &P, req: &mut TestRequest) -> Decision {
    let info = plugin.info();
    if !info.on_request {
        return Decision::Continue;
    }
    req.body.buffered = info.request_body;
    plugin.on_request(&mut Request::test(req))
}

/// Calls `on_response` as the gateway would.
pub fn on_response<P: Plugin>(plugin: &P, req: &mut TestRequest, resp: &mut TestResponse) -> Decision {
    let info = plugin.info();
    if !info.on_response {
        return Decision::Continue;
    }
    resp.body.buffered = info.response_body;
    plugin.on_response(&Request::test(req), &mut Response::test(resp))
}

/// A request for tests.
#[derive(Debug, Clone)]
pub struct TestRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub scheme: String,
    pub authority: Option<String>,
    pub client_ip: String,
    pub id: String,
    pub route: String,
    pub params: Vec<(String, String)>,
    pub headers: TestHeaders,
    pub body: TestBody,
}

impl TestRequest {
    /// A request with this method and path (which may carry `?query`).
    pub fn new(method: &str, path_and_query: &str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path_and_query.to_owned(), None),
        };
        Self {
            method: method.to_owned(),
            path,
            query,
            scheme: "http".to_owned(),
            authority: Some("gateway.test".to_owned()),
            client_ip: "127.0.0.1".to_owned(),
            id: "test-request".to_owned(),
            route: "test".to_owned(),
            params: Vec::new(),
            headers: TestHeaders::default(),
            body: TestBody::default(),
        }
    }

    /// A `GET` request.
    pub fn get(path_and_query: &str) -> Self {
        Self::new("GET", path_and_query)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.entries.push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }

    /// Adds a captured path parameter.
    pub fn param(mut self, name: &str, value: &str) -> Self {
        self.params.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body.bytes = body.into();
        self
    }

    /// Sets the client address.
    pub fn client_ip(mut self, ip: &str) -> Self {
        self.client_ip = ip.to_owned();
        self
    }

    /// Sets the route name.
    pub fn route(mut self, name: &str) -> Self {
        self.route = name.to_owned();
        self
    }
}

/// A response for tests.
#[derive(Debug, Clone)]
pub struct TestResponse {
    pub status: u16,
    pub headers: TestHeaders,
    pub body: TestBody,
}

impl TestResponse {
    pub fn new(status: u16) -> Self {
        Self { status, headers: TestHeaders::default(), body: TestBody::default() }
    }

    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.entries.push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body.bytes = body.into();
        self
    }
}

/// Headers with the gateway's rules: case-insensitive names, valid values,
/// framing and hop-by-hop headers refused.
#[derive(Debug, Clone, Default)]
pub struct TestHeaders {
    entries: Vec<(String, Vec<u8>)>,
}

/// Headers the gateway manages itself; plugins may not set or remove them.
/// The gateway applies the same list.
pub const MANAGED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl TestHeaders {
    pub fn get(&self, name: &str) -> Option<Vec<u8>> {
        self.entries.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    }

    pub fn get_str(&self, name: &str) -> Option<String> {
        self.get(name).and_then(|v| String::from_utf8(v).ok())
    }

    pub fn get_all(&self, name: &str) -> Vec<Vec<u8>> {
        self.entries.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).collect()
    }

    pub fn all(&self) -> Vec<(String, Vec<u8>)> {
        self.entries.clone()
    }

    pub(crate) fn set(&mut self, name: &str, value: &[u8]) -> Result<(), EditError> {
        let name = check_header(name, value)?;
        self.entries.retain(|(n, _)| *n != name);
        self.entries.push((name, value.to_vec()));
        Ok(())
    }

    pub(crate) fn append(&mut self, name: &str, value: &[u8]) -> Result<(), EditError> {
        let name = check_header(name, value)?;
        self.entries.push((name, value.to_vec()));
        Ok(())
    }

    pub(crate) fn remove(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        before != self.entries.len()
    }
}

fn check_header(name: &str, value: &[u8]) -> Result<String, EditError> {
    let valid_name =
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid_name {
        return Err(EditError::InvalidName(name.to_owned()));
    }
    let name = name.to_ascii_lowercase();
    if MANAGED_HEADERS.contains(&name.as_str()) {
        return Err(EditError::Forbidden(name));
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(EditError::InvalidValue(format!("value of `{name}` has a control character")));
    }
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

/// A body that, as in the gateway, reads only when the plugin asked for it.
#[derive(Debug, Clone, Default)]
pub struct TestBody {
    bytes: Vec<u8>,
    buffered: bool,
}

impl TestBody {
    /// The bytes, whether or not the plugin could read them.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn get(&self) -> Result<Vec<u8>, EditError> {
        if self.buffered { Ok(self.bytes.clone()) } else { Err(EditError::BodyUnavailable) }
    }

    pub(crate) fn set(&mut self, body: Vec<u8>) -> Result<(), EditError> {
        if !self.buffered {
            return Err(EditError::BodyUnavailable);
        }
        self.bytes = body;
        Ok(())
    }
}

/// The per-thread stand-in for the gateway's host functions.
#[derive(Debug, Default)]
struct TestHost {
    context: HashMap<String, String>,
    logs: Vec<(Level, String)>,
    now_unix_ms: Option<u64>,
}

thread_local! {
    static HOST: RefCell<TestHost> = RefCell::new(TestHost::default());
}

/// Clears the context map and the captured logs, and unfreezes the clock.
/// Call it at the start of a test that depends on them.
pub fn reset() {
    HOST.with(|h| *h.borrow_mut() = TestHost::default());
}

/// The context map as plugins left it.
pub fn context() -> HashMap<String, String> {
    HOST.with(|h| h.borrow().context.clone())
}

/// Sets a context entry, as an earlier plugin in the chain would.
pub fn set_context(key: &str, value: &str) {
    HOST.with(|h| h.borrow_mut().context.insert(key.to_owned(), value.to_owned()));
}

/// The messages plugins logged.
pub fn logs() -> Vec<(Level, String)> {
    HOST.with(|h| h.borrow().logs.clone())
}

/// Freezes the wall clock at this time.
pub fn set_now_unix_ms(ms: u64) {
    HOST.with(|h| h.borrow_mut().now_unix_ms = Some(ms));
}

/// What `crate::host` calls when the plugin runs natively.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod stand_in {
    use super::HOST;
    use crate::log::Level;

    pub fn context_get(key: &str) -> Option<String> {
        HOST.with(|h| h.borrow().context.get(key).cloned())
    }

    pub fn context_set(key: &str, value: &str) {
        super::set_context(key, value);
    }

    pub fn context_remove(key: &str) -> Option<String> {
        HOST.with(|h| h.borrow_mut().context.remove(key))
    }

    pub fn context_keys() -> Vec<String> {
        HOST.with(|h| h.borrow().context.keys().cloned().collect())
    }

    pub fn log(level: Level, message: &str) {
        HOST.with(|h| h.borrow_mut().logs.push((level, message.to_owned())));
    }

    pub fn now_unix_ms() -> u64 {
        HOST.with(|h| h.borrow().now_unix_ms).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0)
        })
    }

    pub fn monotonic_ns() -> u64 {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        let start = START.get_or_init(std::time::Instant::now);
        u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}
