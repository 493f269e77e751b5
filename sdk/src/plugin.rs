//! The trait a policy implements, and the glue [`export_plugin!`] uses to
//! call it from the component's exports.
//!
//! [`export_plugin!`]: crate::export_plugin

use std::cell::RefCell;
use std::fmt;
use std::thread::LocalKey;

use serde::de::DeserializeOwned;

use crate::bindings::wasmgate::plugin::types as wit;
use crate::decision::{Decision, Reply};
use crate::exchange::{EditError, HeaderEdit, Request, Response};

/// A policy.
///
/// The gateway builds one value per route that uses the plugin, from that
/// route's `config` table, and calls its hooks for every request on the route.
/// Hooks take `&self`: a plugin that keeps state across requests (a cache)
/// uses interior mutability, and must remember that a pooled instance is
/// reused while a `per-request` one starts fresh every time.
pub trait Plugin: Sized + 'static {
    /// The plugin's config, deserialised from the route's TOML table.
    /// `#[serde(deny_unknown_fields)]` is recommended so typos are refused.
    type Config: DeserializeOwned;

    /// Checks the config and builds the plugin. An error refuses the config
    /// and fails the gateway's load with the message.
    fn new(config: Self::Config) -> Result<Self, ConfigError>;

    /// Which hooks the gateway calls and which bodies it buffers. The default
    /// calls `on_request` only.
    fn info(&self) -> Info {
        Info::default()
    }

    /// Header edits that do not depend on the request, which the gateway
    /// makes itself on every request and response passing this plugin,
    /// without calling it: a plugin whose edits are all fixed needs no hook
    /// at all (`Info { on_request: false, ..Info::default() }`). Asked once,
    /// when the plugin accepts its config; an edit the gateway refuses (a
    /// managed header, a bad value) refuses the config. The default has
    /// none.
    fn fixed_headers(&self) -> FixedHeaders {
        FixedHeaders::default()
    }

    /// The facts of the request [`Plugin::on_request`] depends on, when it
    /// depends on nothing else but the config: whenever they have the same
    /// values, it makes the same edits and takes the same decision. The
    /// gateway then keeps the outcome of a call and makes the same edits and
    /// decision itself for a later request with the same values, without
    /// calling the plugin (WIT `setup.memoize-request`).
    ///
    /// The gateway keeps only calls that kept the claim: one that read an
    /// undeclared fact (another header, [`Headers::headers`](crate::Headers::headers),
    /// [`Request::id`], a body), read the clock or logged at `warn` or above
    /// is not kept. A plugin granted `store` or `http` is refused. Log lines
    /// come only from calls actually made; state kept in the plugin's memory
    /// between calls is not seen by replays. More than
    /// [`MAX_REQUEST_FACTS`] are not declared (every request calls the
    /// plugin, as with `None`, the default).
    fn depends_on(&self) -> Option<Vec<RequestFact>> {
        None
    }

    /// The request phase. The default continues.
    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let _ = req;
        Decision::Continue
    }

    /// The response phase; called only when [`Info::on_response`] is set.
    /// The default continues.
    fn on_response(&self, req: &Request<'_>, resp: &mut Response<'_>) -> Decision {
        let _ = (req, resp);
        Decision::Continue
    }
}

/// What a plugin asks of the gateway, once, when it accepts its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// Call [`Plugin::on_request`].
    pub on_request: bool,
    /// Call [`Plugin::on_response`].
    pub on_response: bool,
    /// Buffer the request body so [`Request::body`] works.
    pub request_body: bool,
    /// Buffer the response body so [`Response::body`] works.
    pub response_body: bool,
}

impl Default for Info {
    fn default() -> Self {
        Self { on_request: true, on_response: false, request_body: false, response_body: false }
    }
}

impl Info {
    /// Both hooks, no bodies.
    pub fn both() -> Self {
        Self { on_response: true, ..Self::default() }
    }
}

/// Most facts [`Plugin::depends_on`] may give.
pub const MAX_REQUEST_FACTS: usize = 16;

/// A fact of the request ([`Plugin::depends_on`]): `Method`, `Path`,
/// `Query`, `Scheme`, `Authority`, `ClientAddress` (what
/// [`Request::client_ip`] gives), `Header(name)` (every value of it: read,
/// or removed), `PathParam(name)` ([`Request::path_param`]), `Context(key)`
/// ([`crate::context::get`], `remove`). The gateway checks a call's reads
/// against the same type.
pub use wasmgate_common::fact::RequestFact;

/// Most fixed header edits a plugin may declare for each phase.
pub const MAX_FIXED_HEADERS: usize = 64;

/// Header edits the gateway makes for a plugin without calling it
/// ([`Plugin::fixed_headers`]), at most [`MAX_FIXED_HEADERS`] each way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FixedHeaders {
    /// Made on every request that reaches the plugin, after the plugins
    /// before it and before its own [`Plugin::on_request`].
    pub request: Vec<(String, HeaderEdit)>,
    /// Made on every response that passes back through the plugin,
    /// whoever gave it: after the plugins behind it, before the response
    /// headers its request hook left and before its [`Plugin::on_response`].
    pub response: Vec<(String, HeaderEdit)>,
}

impl FixedHeaders {
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }

    /// One side's edits from a config written as header lists: every
    /// `remove`, then every `set`, then every `append`, in that order.
    pub fn edits<'a>(
        remove: impl IntoIterator<Item = &'a String>,
        set: impl IntoIterator<Item = (&'a String, &'a String)>,
        append: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Vec<(String, HeaderEdit)> {
        let remove = remove.into_iter().map(|n| (n.clone(), HeaderEdit::Remove));
        let set = set.into_iter().map(|(n, v)| (n.clone(), HeaderEdit::Set(v.clone().into_bytes())));
        let append = append.into_iter().map(|(n, v)| (n.clone(), HeaderEdit::Append(v.clone().into_bytes())));
        remove.chain(set).chain(append).collect()
    }
}

/// The message a plugin's refused fixed header gives the operator.
pub(crate) fn fixed_header_error(phase: &str, name: &str, why: &str) -> ConfigError {
    ConfigError(format!("the fixed {phase} header `{name}` was refused: {why}"))
}

/// A refused config: the message the operator sees, naming what is wrong and
/// how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl From<String> for ConfigError {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<&str> for ConfigError {
    fn from(message: &str) -> Self {
        Self(message.to_owned())
    }
}

/// Parses the JSON the gateway passes to `configure` and builds the plugin.
pub(crate) fn build<P: Plugin>(config: &str) -> Result<P, ConfigError> {
    let config: P::Config = serde_json::from_str(config).map_err(config_error)?;
    P::new(config)
}

/// serde_json's message without its "at line 1 column 17" suffix: the
/// operator wrote TOML, and the JSON positions would only mislead.
fn config_error(err: serde_json::Error) -> ConfigError {
    let text = err.to_string();
    let text = match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    };
    ConfigError(text)
}

type Slot<P> = LocalKey<RefCell<Option<P>>>;

#[doc(hidden)]
pub fn configure<P: Plugin>(slot: &'static Slot<P>, config: &str) -> Result<wit::PluginInfo, String> {
    let plugin = build::<P>(config).map_err(|e| e.0)?;
    declare_fixed(&plugin.fixed_headers()).map_err(|e| e.0)?;
    if let Some(facts) = plugin.depends_on().filter(|f| f.len() <= MAX_REQUEST_FACTS) {
        declare_facts(&facts).map_err(|e| e.0)?;
    }
    let info = plugin.info();
    slot.with(|cell| *cell.borrow_mut() = Some(plugin));
    let mut hooks = wit::Hooks::empty();
    if info.on_request {
        hooks |= wit::Hooks::ON_REQUEST;
    }
    if info.on_response {
        hooks |= wit::Hooks::ON_RESPONSE;
    }
    Ok(wit::PluginInfo { hooks, request_body: info.request_body, response_body: info.response_body })
}

/// Hands the plugin's fixed header edits to the gateway.
fn declare_fixed(fixed: &FixedHeaders) -> Result<(), ConfigError> {
    use crate::bindings::wasmgate::plugin::setup;
    for (phase, edits) in [("request", &fixed.request), ("response", &fixed.response)] {
        for (name, edit) in edits {
            let edit = match edit {
                HeaderEdit::Set(v) => setup::HeaderEdit::Set(v.clone()),
                HeaderEdit::Append(v) => setup::HeaderEdit::Append(v.clone()),
                HeaderEdit::Remove => setup::HeaderEdit::Remove,
            };
            let declared = match phase {
                "request" => setup::fixed_request_header(name, &edit),
                _ => setup::fixed_response_header(name, &edit),
            };
            declared.map_err(|e| fixed_header_error(phase, name, &EditError::from(e).to_string()))?;
        }
    }
    Ok(())
}

/// Hands the facts the request hook depends on to the gateway.
fn declare_facts(facts: &[RequestFact]) -> Result<(), ConfigError> {
    use crate::bindings::wasmgate::plugin::setup::{self, RequestFact as F};
    let facts: Vec<F> = facts
        .iter()
        .map(|f| match f {
            RequestFact::Method => F::Method,
            RequestFact::Path => F::Path,
            RequestFact::Query => F::Query,
            RequestFact::Scheme => F::Scheme,
            RequestFact::Authority => F::Authority,
            RequestFact::ClientAddress => F::ClientAddress,
            RequestFact::Header(n) => F::Header(n.clone()),
            RequestFact::PathParam(n) => F::PathParam(n.clone()),
            RequestFact::Context(k) => F::Context(k.clone()),
        })
        .collect();
    setup::memoize_request(&facts)
        .map_err(|e| ConfigError(format!("the gateway refused the request facts: {}", EditError::from(e))))
}

#[doc(hidden)]
pub fn on_request<P: Plugin>(slot: &'static Slot<P>, req: &wit::Request) -> wit::Decision {
    let mut req = Request::guest(req);
    with_plugin(slot, |plugin| plugin.on_request(&mut req))
}

#[doc(hidden)]
pub fn on_response<P: Plugin>(slot: &'static Slot<P>, req: &wit::Request, resp: &wit::Response) -> wit::Decision {
    let req = Request::guest(req);
    let mut resp = Response::guest(resp);
    with_plugin(slot, |plugin| plugin.on_response(&req, &mut resp))
}

/// Runs a hook on the configured plugin. The gateway always configures an
/// instance before calling a hook; should that ever not hold, the request
/// gets a 500 rather than the instance a trap.
fn with_plugin<P: Plugin>(slot: &'static Slot<P>, hook: impl FnOnce(&P) -> Decision) -> wit::Decision {
    let decision = slot.with(|cell| match cell.try_borrow() {
        Ok(plugin) => match plugin.as_ref() {
            Some(plugin) => hook(plugin),
            None => Decision::Respond(Reply::text(500, "plugin not configured")),
        },
        Err(_) => Decision::Respond(Reply::text(500, "plugin re-entered")),
    });
    decision.into()
}

impl From<Decision> for wit::Decision {
    fn from(decision: Decision) -> Self {
        match decision {
            Decision::Continue => wit::Decision::Continue,
            Decision::Respond(reply) => {
                wit::Decision::Respond(wit::Reply { status: reply.status, headers: reply.headers, body: reply.body })
            }
        }
    }
}
