//! Running plugin logic natively, in ordinary `#[test]`s.
//!
//! [`TestRequest`] and [`TestResponse`] stand in for the gateway's data and
//! follow its rules (case-insensitive names, headers the gateway owns, bodies
//! available only when [`Info`](crate::Info) asks for them); [`on_request`] and
//! [`on_response`] call hooks the way the gateway does, and [`reply_sent`]
//! shows a plugin's own reply as the client gets it. The context map, log
//! and clock are per-thread stand-ins: see [`context`], [`logs`],
//! [`set_now_unix_ms`] and [`reset`].

use std::cell::RefCell;
use std::collections::HashMap;

use crate::decision::{Decision, Reply};
use crate::exchange::{EditError, Request, Response};
use crate::http::{HttpError, IncomingResponse, OutgoingRequest};
use crate::log::Level;
use wasmgate_common::fact::Read;

use crate::plugin::{ConfigError, Plugin, RequestFact};

/// Builds a plugin from JSON config text, as the gateway does with the
/// route's TOML table.
///
/// Like the gateway, it refuses a plugin whose
/// [`fixed_headers`](Plugin::fixed_headers) are not valid edits, with the
/// same message.
pub fn configure<P: Plugin>(config_json: &str) -> Result<P, ConfigError> {
    use crate::plugin::{MAX_FIXED_HEADERS, fixed_header_error};
    let plugin = crate::plugin::build::<P>(config_json)?;
    let fixed = plugin.fixed_headers();
    for (phase, edits) in [("request", &fixed.request), ("response", &fixed.response)] {
        for (i, (name, edit)) in edits.iter().enumerate() {
            let checked = match edit {
                _ if i >= MAX_FIXED_HEADERS => {
                    Err(EditError::InvalidValue(format!("more than {MAX_FIXED_HEADERS} fixed headers")))
                }
                HeaderEdit::Set(v) | HeaderEdit::Append(v) => {
                    crate::check_header(name, v).and_then(|name| match phase {
                        "request" => wasmgate_common::edit::check_request_header(&name),
                        _ => Ok(()),
                    })
                }
                HeaderEdit::Remove => crate::check_header_name(name).map(drop),
            };
            checked.map_err(|e| fixed_header_error(phase, name, &e.to_string()))?;
        }
    }
    Ok(plugin)
}

/// Calls `on_request` as the gateway would: after making the plugin's
/// fixed request header edits; not at all when the plugin's
/// [`Info`](crate::Info) leaves it out, and with the body available only when asked for.
pub fn on_request<P: Plugin>(plugin: &P, req: &mut TestRequest) -> Decision {
    for (name, edit) in plugin.fixed_headers().request {
        apply(&mut req.headers, &name, edit);
    }
    let info = plugin.info();
    if !info.on_request {
        return Decision::Continue;
    }
    req.body.buffered = info.request_body;
    plugin.on_request(&mut Request::test(req))
}

/// Calls `on_request` as [`on_request`] does and says whether the gateway
/// would keep the outcome for the facts the plugin declares
/// ([`Plugin::depends_on`]): `Ok(())` when it would, `Err` listing what the
/// call did beyond them (read another header, the query, the clock; logged
/// a warning…) — or that the plugin declares none. A test of the plugin's
/// usual requests with this catches a read that would make the gateway
/// call it every time.
pub fn on_request_kept<P: Plugin>(plugin: &P, req: &mut TestRequest) -> (Decision, Result<(), String>) {
    let Some(facts) = plugin.depends_on() else {
        return (on_request(plugin, req), Err("the plugin declares no facts (depends_on is None)".into()));
    };
    CHECK.with(|c| *c.borrow_mut() = Some(Check { facts, strays: Vec::new() }));
    let decision = on_request(plugin, req);
    let strays = CHECK.with(|c| c.borrow_mut().take()).map(|c| c.strays).unwrap_or_default();
    (decision, if strays.is_empty() { Ok(()) } else { Err(strays.join("; ")) })
}

/// What [`on_request_kept`] watches: the declared facts, and what the call
/// did beyond them.
struct Check {
    facts: Vec<RequestFact>,
    strays: Vec<String>,
}

thread_local! {
    static CHECK: RefCell<Option<Check>> = const { RefCell::new(None) };
}

/// Notes a read of a fact of the request, for [`on_request_kept`].
pub(crate) fn reads(read: Read<'_>) {
    CHECK.with(|c| {
        if let Some(check) = c.borrow_mut().as_mut()
            && !check.facts.iter().any(|d| d.covers(&read))
        {
            check.strays.push(format!("read {read:?}, not declared"));
        }
    });
}

/// Notes what keeps the gateway from keeping a call, for
/// [`on_request_kept`].
pub(crate) fn strays(what: &str) {
    CHECK.with(|c| {
        if let Some(check) = c.borrow_mut().as_mut() {
            check.strays.push(what.to_owned());
        }
    });
}

/// Calls `on_response` as the gateway would: after making the plugin's
/// fixed response header edits and setting the response headers the request
/// hook set ([`TestRequest::response_headers`], which this empties), even
/// when the plugin has no response hook.
pub fn on_response<P: Plugin>(plugin: &P, req: &mut TestRequest, resp: &mut TestResponse) -> Decision {
    pass_back(plugin, req, resp);
    let info = plugin.info();
    if !info.on_response {
        return Decision::Continue;
    }
    resp.body.buffered = info.response_body;
    plugin.on_response(&Request::test(req), &mut Response::test(resp))
}

/// The response the client gets for the plugin's own reply (a
/// [`Decision::Respond`] from [`on_request`]): as the gateway passes it back
/// through the plugin, with the plugin's fixed response header edits and the
/// response headers its request hook set (which this empties). The plugin's
/// response hook does not see its own reply.
pub fn reply_sent<P: Plugin>(plugin: &P, req: &mut TestRequest, reply: Reply) -> TestResponse {
    let mut resp = TestResponse::new(reply.status).body(reply.body);
    for (name, value) in reply.headers {
        resp = resp.header(&name, value);
    }
    pass_back(plugin, req, &mut resp);
    resp
}

/// What the gateway does to a response passing back through the plugin
/// before its response hook.
fn pass_back<P: Plugin>(plugin: &P, req: &mut TestRequest, resp: &mut TestResponse) {
    for (name, edit) in plugin.fixed_headers().response {
        apply(&mut resp.headers, &name, edit);
    }
    for StagedHeader { name, edit } in std::mem::take(&mut req.response_headers) {
        apply(&mut resp.headers, &name, edit);
    }
}

/// Makes an edit the gateway makes for the plugin. Fixed edits are checked
/// by [`configure`], left ones when they were left, so none is refused here.
fn apply(headers: &mut TestHeaders, name: &str, edit: HeaderEdit) {
    match edit {
        HeaderEdit::Set(v) => _ = headers.set(name, &v),
        HeaderEdit::Append(v) => _ = headers.append(name, &v),
        HeaderEdit::Remove => _ = headers.remove(name),
    }
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
    pub client_certificate: Option<crate::ClientCertificate>,
    pub id: String,
    pub route: String,
    pub params: Vec<(String, String)>,
    pub headers: TestHeaders,
    pub body: TestBody,
    /// Response headers the request hook set, in order
    /// ([`Request::set_response_header`]).
    pub response_headers: Vec<StagedHeader>,
}

/// A response header a request hook set, added or removed, waiting for the
/// response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedHeader {
    /// Lowercase.
    pub name: String,
    pub edit: HeaderEdit,
}

pub use crate::exchange::HeaderEdit;

impl TestRequest {
    /// The value the request hook left for a response header, as text: the
    /// last one set or added (`None` when it was last removed).
    pub fn response_header_str(&self, name: &str) -> Option<String> {
        match &self.response_headers.iter().rev().find(|s| s.name.eq_ignore_ascii_case(name))?.edit {
            HeaderEdit::Set(v) | HeaderEdit::Append(v) => String::from_utf8(v.clone()).ok(),
            HeaderEdit::Remove => None,
        }
    }

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
            client_certificate: None,
            id: "test-request".to_owned(),
            route: "test".to_owned(),
            params: Vec::new(),
            headers: TestHeaders::default(),
            body: TestBody::default(),
            response_headers: Vec::new(),
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

    /// Sets the certificate the client presented.
    pub fn client_certificate(mut self, cert: crate::ClientCertificate) -> Self {
        self.client_certificate = Some(cert);
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
        let name = crate::check_header(name, value)?;
        self.entries.retain(|(n, _)| *n != name);
        self.entries.push((name, value.to_vec()));
        Ok(())
    }

    /// As the gateway appends: a request has one `Host`, so adding one
    /// replaces it.
    pub(crate) fn append(&mut self, name: &str, value: &[u8]) -> Result<(), EditError> {
        let name = crate::check_header(name, value)?;
        if name == "host" {
            self.entries.retain(|(n, _)| *n != name);
        }
        self.entries.push((name, value.to_vec()));
        Ok(())
    }

    pub(crate) fn remove(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        before != self.entries.len()
    }
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

/// What a test's plugin sends with [`crate::http`]: the handler answers.
type HttpHandler = Box<dyn Fn(&OutgoingRequest) -> Result<IncomingResponse, HttpError>>;

/// The per-thread stand-in for the gateway's host functions.
#[derive(Default)]
struct TestHost {
    context: HashMap<String, String>,
    logs: Vec<(Level, String)>,
    now_unix_ms: Option<u64>,
    secrets: HashMap<String, Vec<u8>>,
    http: Option<HttpHandler>,
    sent: Vec<OutgoingRequest>,
}

impl std::fmt::Debug for TestHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHost").field("context", &self.context).field("sent", &self.sent.len()).finish()
    }
}

thread_local! {
    static HOST: RefCell<TestHost> = RefCell::new(TestHost::default());
}

/// The JSON Schema of a plugin's config type `C`, as the file
/// `export_plugin!`'s `config_schema` names holds it (pretty, one newline at
/// the end). It is derived from the serde attributes the config is read by
/// (`deny_unknown_fields`, `default`, `rename_all`, …); doc comments become
/// descriptions. TOML has no null, so an `Option` is a key that may be left
/// out, not one that may be null. Keys are sorted: the text is the same
/// whichever way serde_json was built (`preserve_order` or not).
pub fn config_schema<C: schemars::JsonSchema>() -> String {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.transforms.push(Box::new(no_null)))
        .into_generator()
        .into_root_schema_for::<C>();
    let mut text = serde_json::to_string_pretty(&sorted(schema.to_value())).unwrap_or_default();
    text.push('\n');
    text
}

/// `value` with every object's keys in order.
fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(list) => Value::Array(list.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Takes `null` out of a schema's types, alternatives and defaults (what
/// schemars writes for an `Option`).
fn no_null(schema: &mut schemars::Schema) {
    use serde_json::Value;
    let null_type: fn(&Value) -> bool = |v| v == "null";
    let null_schema: fn(&Value) -> bool = |v| v.get("type").is_some_and(|t| t == "null");
    if let Some(object) = schema.as_object_mut() {
        if object.get("default") == Some(&Value::Null) {
            object.remove("default");
        }
        let lists = [("type", null_type), ("enum", Value::is_null), ("anyOf", null_schema), ("oneOf", null_schema)];
        for (key, null) in lists {
            if let Some(Value::Array(list)) = object.get_mut(key) {
                list.retain(|v| !null(v));
                if let [only] = list.as_slice() {
                    let only = only.clone();
                    match (key, only) {
                        ("type", only) => {
                            object.insert(key.to_owned(), only);
                        }
                        // `anyOf: [{$ref}]` is the `$ref` (the key's own
                        // description kept).
                        ("anyOf" | "oneOf", Value::Object(only)) => {
                            object.remove(key);
                            for (k, v) in only {
                                object.entry(k).or_insert(v);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    schemars::transform::transform_subschemas(&mut no_null, schema);
}

/// Whether the file at `path` holds [`config_schema`]`::<C>()`: what
/// `export_plugin!`'s test calls. With `WASMGATE_BLESS=1`, writes it
/// there instead (any other value, `0` say, checks).
pub fn check_config_schema<C: schemars::JsonSchema>(path: &str) -> Result<(), String> {
    let schema = config_schema::<C>();
    let bless = "run the plugin's tests with WASMGATE_BLESS=1 to write it";
    if std::env::var_os("WASMGATE_BLESS").is_some_and(|v| v == "1") {
        return std::fs::write(path, schema).map_err(|e| format!("cannot write {path}: {e}"));
    }
    match std::fs::read_to_string(path) {
        Ok(text) if text == schema => Ok(()),
        Ok(_) => Err(format!("{path} is not the schema of the plugin's config type (it changed); {bless}")),
        Err(e) => Err(format!("cannot read {path}: {e}; {bless}")),
    }
}

/// Clears the context map, the captured logs, secrets, the HTTP handler,
/// the store and the shared bytes, and unfreezes the clock. Call it at the start of a test that
/// depends on them.
pub fn reset() {
    HOST.with(|h| *h.borrow_mut() = TestHost::default());
    #[cfg(not(target_arch = "wasm32"))]
    {
        stand_in::store::clear();
        stand_in::shared::clear();
    }
}

/// Moves the frozen clock forward (freezing it first at the current time).
pub fn advance_ms(ms: u64) {
    HOST.with(|h| {
        let mut h = h.borrow_mut();
        let now = h.now_unix_ms.unwrap_or_else(real_unix_ms);
        h.now_unix_ms = Some(now.saturating_add(ms));
    });
}

fn real_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Grants a secret, as `grants.secrets` would.
pub fn set_secret(name: &str, value: impl Into<Vec<u8>>) {
    HOST.with(|h| h.borrow_mut().secrets.insert(name.to_owned(), value.into()));
}

/// Answers the plugin's outbound requests with `handler`. Without one,
/// every request fails with `HttpError::NotGranted`.
pub fn on_http(handler: impl Fn(&OutgoingRequest) -> Result<IncomingResponse, HttpError> + 'static) {
    HOST.with(|h| h.borrow_mut().http = Some(Box::new(handler)));
}

/// The requests the plugin sent, in order.
pub fn http_sent() -> Vec<OutgoingRequest> {
    HOST.with(|h| h.borrow().sent.clone())
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
        super::reads(wasmgate_common::fact::Read::Context(key));
        HOST.with(|h| h.borrow().context.get(key).cloned())
    }

    pub fn context_set(key: &str, value: &str) {
        super::set_context(key, value);
    }

    pub fn context_remove(key: &str) -> Option<String> {
        super::reads(wasmgate_common::fact::Read::Context(key));
        HOST.with(|h| h.borrow_mut().context.remove(key))
    }

    pub fn context_keys() -> Vec<String> {
        super::strays("read the context's keys");
        HOST.with(|h| h.borrow().context.keys().cloned().collect())
    }

    pub fn log(level: Level, message: &str) {
        if matches!(level, Level::Warn | Level::Error) {
            super::strays("logged a warning");
        }
        HOST.with(|h| h.borrow_mut().logs.push((level, message.to_owned())));
    }

    pub fn secret(name: &str) -> Option<Vec<u8>> {
        HOST.with(|h| h.borrow().secrets.get(name).cloned())
    }

    /// The store double: the gateway's own in-memory backend, on the test clock.
    pub mod store {
        use std::cell::RefCell;

        use wasmgate_common::memstore::{self, Clock, MemStore};

        use crate::store::{Limit, StoreError};

        struct TestClock;

        impl Clock for TestClock {
            fn now_ms(&self) -> u64 {
                super::now_unix_ms()
            }
        }

        thread_local! {
            static STORE: RefCell<MemStore<TestClock>> = RefCell::new(MemStore::new(TestClock, 100_000));
        }

        pub fn clear() {
            STORE.with(|s| *s.borrow_mut() = MemStore::new(TestClock, 100_000));
        }

        fn err(e: memstore::StoreError) -> StoreError {
            match e {
                memstore::StoreError::Invalid(m) => StoreError::Invalid(m),
            }
        }

        fn limit(l: memstore::LimitResult) -> Limit {
            Limit {
                allowed: l.allowed,
                limit: l.limit,
                remaining: l.remaining,
                reset: std::time::Duration::from_millis(l.reset_ms),
                retry_after: std::time::Duration::from_millis(l.retry_after_ms),
            }
        }

        /// For [`crate::testing::on_request_kept`].
        fn used() {
            crate::testing::strays("used the store, which a plugin that declares facts may not be granted");
        }

        pub fn get(key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            used();
            STORE.with(|s| s.borrow().get(key)).map_err(err)
        }
        pub fn set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), StoreError> {
            used();
            STORE.with(|s| s.borrow().set(key, value, ttl_ms)).map_err(err)
        }
        pub fn delete(key: &str) -> Result<bool, StoreError> {
            used();
            STORE.with(|s| s.borrow().delete(key)).map_err(err)
        }
        pub fn incr(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, StoreError> {
            used();
            STORE.with(|s| s.borrow().incr(key, delta, ttl_ms)).map_err(err)
        }
        pub fn take(key: &str, capacity: u64, refill: f64, cost: u64) -> Result<Limit, StoreError> {
            used();
            STORE.with(|s| s.borrow().take(key, capacity, refill, cost)).map(limit).map_err(err)
        }
        pub fn hit(key: &str, max: u64, window_ms: u64, cost: u64) -> Result<Limit, StoreError> {
            used();
            STORE.with(|s| s.borrow().hit(key, max, window_ms, cost)).map(limit).map_err(err)
        }
    }

    /// The shared bytes' double: the gateway's own bounded space. A test
    /// thread is one gateway: the instances a test makes share it, as a
    /// plugin's instances do.
    pub mod shared {
        use std::cell::RefCell;

        use wasmgate_common::shared::SharedSpace;

        thread_local! {
            static SPACE: RefCell<SharedSpace> = RefCell::default();
        }

        pub fn clear() {
            SPACE.with(|s| *s.borrow_mut() = SharedSpace::default());
        }

        /// For [`crate::testing::on_request_kept`].
        fn used() {
            crate::testing::strays("used the shared bytes");
        }

        pub fn get(key: &str) -> Option<Vec<u8>> {
            used();
            SPACE.with(|s| s.borrow().get(key)).map(|v| v.to_vec())
        }
        pub fn set(key: &str, value: &[u8]) -> bool {
            used();
            SPACE.with(|s| s.borrow_mut().set(key, value.into()))
        }
        pub fn delete(key: &str) -> bool {
            used();
            SPACE.with(|s| s.borrow_mut().delete(key))
        }
    }

    /// The HTTP double: the handler a test registered with `on_http`.
    pub mod http {
        use wasmgate_common::edit::{MAX_EDITED_HEADERS, MAX_SEND_ALL};

        use super::HOST;
        use crate::http::{HttpError, IncomingResponse, OutgoingRequest};

        pub fn send(req: OutgoingRequest) -> Result<IncomingResponse, HttpError> {
            crate::testing::strays("sent an HTTP request, which a plugin that declares facts may not be granted");
            // As the gateway refuses it.
            if req.headers.len() > MAX_EDITED_HEADERS {
                let n = req.headers.len();
                return Err(HttpError::InvalidRequest(format!("{n} headers, more than {MAX_EDITED_HEADERS}")));
            }
            // The handler is called with the host released: it may use the
            // other helpers (`http_sent`, `set_secret`, ...).
            let handler = HOST.with(|h| {
                let mut h = h.borrow_mut();
                h.sent.push(req.clone());
                h.http.take()
            });
            let result = match &handler {
                Some(handler) => handler(&req),
                None => Err(HttpError::NotGranted("no testing::on_http handler".into())),
            };
            // Back, unless the handler registered another.
            HOST.with(|h| {
                let mut h = h.borrow_mut();
                if h.http.is_none() {
                    h.http = handler;
                }
            });
            result
        }

        pub fn send_all(reqs: Vec<OutgoingRequest>) -> Vec<Result<IncomingResponse, HttpError>> {
            crate::testing::strays("sent an HTTP request, which a plugin that declares facts may not be granted");
            let n = reqs.len();
            let mut results: Vec<_> = reqs.into_iter().take(MAX_SEND_ALL).map(send).collect();
            results.extend(
                (MAX_SEND_ALL..n).map(|_| {
                    Err(HttpError::InvalidRequest(format!("more than {MAX_SEND_ALL} requests in one send-all")))
                }),
            );
            results
        }
    }

    /// The crypto double: the gateway's own key code, natively.
    pub mod crypto {
        use wasmgate_common::keys;

        use crate::crypto::{Algorithm, KeyError};

        pub type Key = keys::Key;

        fn err(e: keys::KeyError) -> KeyError {
            match e {
                keys::KeyError::Invalid(m) => KeyError::Invalid(m),
                keys::KeyError::Unsupported(m) => KeyError::Unsupported(m),
            }
        }

        pub fn from_jwk(jwk: &str) -> Result<Key, KeyError> {
            Key::from_jwk(jwk).map_err(err)
        }
        pub fn from_pem(pem: &str) -> Result<Key, KeyError> {
            Key::from_pem(pem).map_err(err)
        }
        pub fn from_secret(name: &str) -> Result<Key, KeyError> {
            let secret = super::secret(name).ok_or_else(|| KeyError::NotGranted(format!("secret `{name}`")))?;
            Key::hmac(&secret).map_err(err)
        }
        pub fn algorithms(k: &Key) -> Vec<Algorithm> {
            k.algorithms()
        }
        pub fn verify(k: &Key, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
            k.verify(alg, message, signature)
        }
    }

    pub fn now_unix_ms() -> u64 {
        super::strays("read the clock");
        HOST.with(|h| h.borrow().now_unix_ms).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0)
        })
    }

    pub fn monotonic_ns() -> u64 {
        super::strays("read the clock");
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        let start = START.get_or_init(std::time::Instant::now);
        u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{self, IncomingResponse, OutgoingRequest};

    #[test]
    fn an_http_handler_may_use_the_other_helpers() {
        reset();
        on_http(|req| {
            // Borrowed the host while it was held: a panic before.
            let sent = http_sent().len();
            Ok(IncomingResponse { status: 200, headers: Vec::new(), body: format!("{sent} {}", req.url).into_bytes() })
        });
        let first = http::send(OutgoingRequest::get("upstream://u/a")).map(|r| r.body);
        let second = http::send(OutgoingRequest::get("upstream://u/b")).map(|r| r.body);
        assert_eq!(first, Ok(b"1 upstream://u/a".to_vec()));
        assert_eq!(second, Ok(b"2 upstream://u/b".to_vec()), "the handler stays registered");
    }

    #[test]
    fn the_http_double_refuses_what_the_gateway_refuses() {
        reset();
        on_http(|_| Ok(IncomingResponse { status: 200, headers: Vec::new(), body: Vec::new() }));
        let results = http::send_all(vec![OutgoingRequest::get("upstream://u/"); 70]);
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 64);
        assert!(matches!(&results[64], Err(http::HttpError::InvalidRequest(_))));
        let mut req = OutgoingRequest::get("upstream://u/");
        for i in 0..1025 {
            req = req.header(&format!("x-{i}"), "1");
        }
        assert!(matches!(http::send(req), Err(http::HttpError::InvalidRequest(_))));
    }
}

#[cfg(test)]
mod schema_tests {
    use super::{check_config_schema, config_schema};

    /// Whichever way it is named.
    #[derive(Debug, Default, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
    #[serde(rename_all = "kebab-case")]
    enum Mode {
        #[default]
        Fast,
        Careful,
    }

    #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only its schema is looked at")]
    struct Inner {
        /// A name.
        name: String,
    }

    /// The config.
    #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only its schema is looked at")]
    struct Config {
        /// Optional text.
        #[serde(default)]
        text: Option<String>,
        /// An optional table, described here.
        inner: Option<Inner>,
        /// An optional choice.
        choice: Option<Mode>,
        #[serde(default)]
        mode: Mode,
    }

    #[test]
    fn a_config_schema_has_no_null_and_its_keys_in_order() {
        let text = config_schema::<Config>();
        assert!(!text.contains("null"), "TOML has no null: {text}");
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        let properties = &schema["properties"];
        assert_eq!(properties["text"]["type"], "string");
        assert_eq!(properties["text"].get("default"), None);
        // `Option<Inner>`: the table itself, its own description kept.
        assert_eq!(properties["inner"]["$ref"], "#/$defs/Inner");
        assert_eq!(properties["inner"]["description"], "An optional table, described here.");
        assert_eq!(properties["choice"]["$ref"], "#/$defs/Mode");
        assert_eq!(properties["mode"]["default"], "fast");
        assert_eq!(schema["additionalProperties"], false);
        // Keys sorted at every level, so the text is one however serde_json was built.
        let at_depth = |indent: &str| -> Vec<&str> {
            text.lines().filter_map(|l| l.strip_prefix(indent)?.strip_prefix('"')?.split('"').next()).collect()
        };
        let top = at_depth("  ");
        assert_eq!(top, ["$defs", "$schema", "additionalProperties", "description", "properties", "title", "type"]);
        let properties: Vec<&str> =
            at_depth("    ").into_iter().filter(|k| !k.starts_with(char::is_uppercase)).collect();
        assert_eq!(properties, ["choice", "inner", "mode", "text"]);
    }

    #[test]
    fn a_schema_file_that_is_not_the_types_fails_and_says_how_to_mend_it() {
        let dir = std::env::temp_dir().join(format!("wasmgate-sdk-schema-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.schema.json");
        let path = file.to_str().unwrap();
        let missing = check_config_schema::<Config>(path).unwrap_err();
        assert!(missing.contains("cannot read") && missing.contains("WASMGATE_BLESS=1"), "{missing}");
        std::fs::write(&file, config_schema::<Inner>()).unwrap();
        let stale = check_config_schema::<Config>(path).unwrap_err();
        assert!(stale.contains("is not the schema of the plugin's config type"), "{stale}");
        assert!(stale.contains("WASMGATE_BLESS=1"), "{stale}");
        std::fs::write(&file, config_schema::<Config>()).unwrap();
        assert_eq!(check_config_schema::<Config>(path), Ok(()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
