//! `compose`: answers a request itself with one JSON document built from
//! several upstream calls made in parallel — a backend-for-frontend. The
//! route's own upstream is never contacted.
//!
//! Per request: render every call's URL from the request (a missing value
//! is the client's 400, before anything is sent), send them all at once
//! with `http::send_all`, apply each failed call's policy, and build the
//! document from the `shape`.

mod shape;
mod template;

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use wasmgate_sdk::http::{self, HttpError, IncomingResponse, OutgoingRequest};
use wasmgate_sdk::prelude::*;
use wasmgate_sdk::{query, units};

use crate::shape::Node;
use crate::template::{RenderError, Source, UrlTemplate, Var};

/// Forwarding fields a client may send as it likes: the gateway writes its
/// own on the request it proxies (and takes out, or appends to, the
/// client's), but a call's headers are the plugin's, so a forwarded one
/// would be the client's word, spoofed or not. (The fields the gateway
/// takes out altogether a plugin may not set: `check_request_header`.)
const CLIENT_SAYS: [&str; 4] = ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "forwarded"];

/// The route's `config` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The upstream calls, all sent at once (`GET`, no body); at most 64.
    calls: Vec<RawCall>,
    /// The response document: a table whose leaves are references such as `"user"`, `"cart#/total"`.
    shape: Value,
    /// Request headers copied to every call (`x-request-id` always is).
    #[serde(default)]
    forward_headers: Vec<String>,
    /// A call whose 4xx answer becomes the response (user not found → 404).
    status_from: Option<String>,
}

/// One entry of `calls`, as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawCall {
    /// The call's name, used by `shape` and `status_from` (letters, digits, `_`, `-`; unique).
    name: String,
    /// `upstream://NAME/path?query` (or a granted `https://` origin), `{...}` placeholders in path and query.
    url: String,
    /// "500ms", "2s": at most this long (and never longer than the grant's `http_timeout`).
    timeout: Option<String>,
    /// "fail" (default), "omit", or `{ default = <json> }`.
    on_error: Option<Value>,
}

/// What a failed call means for the response.
#[derive(Debug, Clone, PartialEq)]
enum OnError {
    /// 502 naming the call.
    Fail,
    /// The call's fields are left out.
    Omit,
    /// The call's body is taken to be this.
    Default(Value),
}

#[derive(Debug)]
struct Call {
    name: String,
    url: UrlTemplate,
    timeout: Option<Duration>,
    on_error: OnError,
}

/// The plugin: its calls, the document's shape, and what it forwards.
#[derive(Debug)]
pub struct Compose {
    calls: Vec<Call>,
    shape: Node,
    forward_headers: Vec<String>,
    status_from: Option<usize>,
}

impl Plugin for Compose {
    type Config = Config;

    fn new(c: Config) -> Result<Self, ConfigError> {
        if c.calls.is_empty() {
            return Err(concat!(
                "calls is empty: give at least one, ",
                "e.g. { name = \"user\", url = \"upstream://users/users/{path.id}\" }"
            )
            .into());
        }
        if c.calls.len() > http::MAX_SEND_ALL {
            // The gateway sends at most that many at once and fails the rest,
            // so every request would get a 502 or an omitted field.
            return Err(format!(
                "calls: {} calls, more than the {max} the gateway sends at once for one request \
                 (every call past the {max}th would fail on every request); use at most {max}",
                c.calls.len(),
                max = http::MAX_SEND_ALL,
            )
            .into());
        }
        let mut calls: Vec<Call> = Vec::with_capacity(c.calls.len());
        for (i, raw) in c.calls.into_iter().enumerate() {
            let at = format!("calls[{i}]");
            let valid_name =
                !raw.name.is_empty() && raw.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_name {
                return Err(format!("{at}.name: `{}` is not a name; use letters, digits, `_` and `-`", raw.name).into());
            }
            if calls.iter().any(|c| c.name == raw.name) {
                return Err(format!("{at}.name: `{}` is used by two calls; names must be unique", raw.name).into());
            }
            let url = UrlTemplate::parse(&raw.url).map_err(|e| format!("{at}.url: {e}"))?;
            let timeout =
                raw.timeout.as_deref().map(parse_timeout).transpose().map_err(|e| format!("{at}.timeout: {e}"))?;
            let on_error = on_error(raw.on_error).map_err(|e| format!("{at}.on_error: {e}"))?;
            calls.push(Call { name: raw.name, url, timeout, on_error });
        }
        let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
        let shape = shape::parse(&c.shape, &names)?;
        let status_from = match &c.status_from {
            None => None,
            Some(name) => Some(
                names
                    .iter()
                    .position(|n| n == name)
                    .ok_or_else(|| format!("status_from: `{name}` is not in `calls` ({})", names.join(", ")))?,
            ),
        };
        let mut used = Vec::new();
        shape.calls(&mut used);
        used.extend(status_from);
        if let Some(unused) = calls.iter().enumerate().find(|(i, _)| !used.contains(i)).map(|(_, c)| &c.name) {
            return Err(format!(
                "call `{unused}` is not used by `shape` (or `status_from`): \
                 refer to it, e.g. {unused} = \"{unused}\", or remove it"
            )
            .into());
        }
        let mut forward_headers = Vec::with_capacity(c.forward_headers.len());
        for name in c.forward_headers {
            let lower = check_header_name(&name).map_err(|e| format!("forward_headers: {e}"))?;
            if lower == "host" {
                return Err(
                    "forward_headers: `host` is set by the gateway for each call and cannot be forwarded".into()
                );
            }
            if CLIENT_SAYS.contains(&lower.as_str()) || wasmgate_sdk::check_request_header(&lower).is_err() {
                return Err(format!(
                    "forward_headers: `{lower}` is what the client says of where it came from (or of its \
                     certificate); the gateway vouches for it only on the request it proxies, and a call \
                     would carry the client's own word: leave it out"
                )
                .into());
            }
            if lower != "x-request-id" && !forward_headers.contains(&lower) {
                forward_headers.push(lower);
            }
        }
        Ok(Self { calls, shape, forward_headers, status_from })
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let mut values = Values::new(req);
        let mut urls = Vec::with_capacity(self.calls.len());
        for call in &self.calls {
            match call.url.render(|var| values.get(var)) {
                Ok(url) => urls.push(url),
                Err(RenderError::Missing(what)) => return error(400, &format!("missing {what}")),
                Err(RenderError::Invalid(what)) => return error(400, &format!("invalid {what}")),
            }
        }
        let headers = self.forwarded(req);
        let outgoing: Vec<OutgoingRequest> = self
            .calls
            .iter()
            .zip(urls)
            .map(|(call, url)| {
                let mut out = OutgoingRequest::get(url);
                out.headers.clone_from(&headers);
                out.timeout = call.timeout;
                out
            })
            .collect();
        let results = http::send_all(outgoing);
        if results.len() != self.calls.len() {
            log::error(&format!("send_all answered {} of {} calls", results.len(), self.calls.len()));
            return error(502, "upstream calls failed");
        }
        if let Some(reply) = self.status_reply(&results) {
            return Decision::respond(reply);
        }
        let outcomes: Vec<Result<Value, Failure>> = results
            .into_iter()
            .map(|result| match result {
                Ok(resp) if (200..300).contains(&resp.status) => {
                    serde_json::from_slice::<Value>(&resp.body).map_err(|e| Failure::NotJson(e.to_string()))
                }
                Ok(resp) => Err(Failure::Status(resp.status)),
                Err(e) => Err(Failure::Http(e)),
            })
            .collect();
        // The first call with `fail` that failed answers; every failed call
        // is logged (a second one may be why the first did).
        let answering = self
            .calls
            .iter()
            .zip(&outcomes)
            .position(|(call, outcome)| matches!(call.on_error, OnError::Fail) && outcome.is_err());
        for (i, (call, outcome)) in self.calls.iter().zip(&outcomes).enumerate() {
            let Err(failure) = outcome else { continue };
            let then = match (answering, &call.on_error) {
                (Some(a), _) if a == i => "answering 502 (on_error = \"fail\")".to_owned(),
                (Some(a), _) => format!("the request answers 502 for call `{}`", self.calls[a].name),
                (None, OnError::Omit) => "its fields are left out".to_owned(),
                (None, _) => "using its default".to_owned(),
            };
            log::warn(&format!("call `{}` failed: {failure}; {then}", call.name));
        }
        if let Some((call, Err(failure))) = answering.and_then(|a| self.calls.get(a).zip(outcomes.get(a))) {
            let message = format!("call `{}` failed: {}", call.name, failure.public());
            return Decision::respond(Reply::json(502, &json!({ "error": message, "call": call.name })));
        }
        let bodies: Vec<Option<Value>> = self
            .calls
            .iter()
            .zip(outcomes)
            .map(|(call, outcome)| match (outcome, &call.on_error) {
                (Ok(body), _) => Some(body),
                (Err(_), OnError::Default(value)) => Some(value.clone()),
                (Err(_), _) => None,
            })
            .collect();
        let doc = self.shape.build(&bodies).unwrap_or_else(|| Value::Object(serde_json::Map::new()));
        Decision::respond(Reply::json(200, &doc))
    }
}

impl Compose {
    /// The headers every call carries: the forwarded ones (every value) and
    /// the request id, so the calls show up under the client's request in
    /// the upstreams' logs.
    fn forwarded(&self, req: &Request<'_>) -> Vec<(String, Vec<u8>)> {
        let mut headers = vec![("x-request-id".to_owned(), req.id().into_bytes())];
        for name in &self.forward_headers {
            headers.extend(req.header_all(name).into_iter().map(|v| (name.clone(), v)));
        }
        if !self.forward_headers.iter().any(|n| n == "accept") {
            headers.push(("accept".to_owned(), b"application/json".to_vec()));
        }
        headers
    }

    /// With `status_from`: that call's 4xx answer, passed on as the response.
    fn status_reply(&self, results: &[Result<IncomingResponse, HttpError>]) -> Option<Reply> {
        let i = self.status_from?;
        let resp = results.get(i)?.as_ref().ok()?;
        if !(400..500).contains(&resp.status) {
            return None;
        }
        let name = self.calls.get(i).map_or("", |c| c.name.as_str());
        log::debug(&format!("call `{name}` answered {}: passing it on (status_from)", resp.status));
        if serde_json::from_slice::<serde::de::IgnoredAny>(&resp.body).is_ok() {
            return Some(Reply::new(resp.status).header("content-type", "application/json").body(resp.body.clone()));
        }
        Some(Reply::json(
            resp.status,
            &json!({ "error": format!("call `{name}` answered {}", resp.status), "call": name }),
        ))
    }
}

/// Why a call failed. `Display` is the log's detail; [`Failure::public`] is
/// what the client is told.
#[derive(Debug)]
enum Failure {
    Status(u16),
    NotJson(String),
    Http(HttpError),
}

impl Failure {
    fn public(&self) -> String {
        match self {
            Self::Status(s) => format!("status {s}"),
            Self::NotJson(_) => "response is not JSON".to_owned(),
            Self::Http(e) => match e {
                HttpError::NotGranted(_) => "not granted",
                HttpError::InvalidRequest(_) => "invalid request",
                HttpError::Timeout => "timed out",
                HttpError::Connect(_) => "cannot connect",
                HttpError::TooLarge => "response too large",
                HttpError::Unavailable(_) => "unavailable",
                HttpError::Protocol(_) => "protocol error",
            }
            .to_owned(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(s) => write!(f, "status {s}"),
            Self::NotJson(e) => write!(f, "response is not JSON ({e})"),
            Self::Http(e) => write!(f, "{e}"),
        }
    }
}

/// Template values from the request, the claims parsed at most once.
struct Values<'r, 'a> {
    req: &'r Request<'a>,
    claims: Option<Option<serde_json::Map<String, Value>>>,
}

impl<'r, 'a> Values<'r, 'a> {
    fn new(req: &'r Request<'a>) -> Self {
        Self { req, claims: None }
    }

    /// The value as text, not yet encoded.
    fn get(&mut self, var: &Var) -> Option<Vec<u8>> {
        match var.source {
            // Captures are raw path segments (still percent-encoded):
            // decoded here, encoded again once, never twice.
            Source::Path => self.req.path_param(&var.name).map(|v| query::decode(&v, false)),
            Source::Header => self.req.header(&var.name),
            Source::Query => self.req.query().and_then(|q| query::value(&q, &var.name)),
            Source::Context => context::get(&var.name).map(String::into_bytes),
            Source::Claim => {
                let claims = self
                    .claims
                    .get_or_insert_with(|| context::get("jwt.claims").and_then(|c| serde_json::from_str(&c).ok()));
                match claims.as_ref()?.get(&var.name)? {
                    Value::String(s) => Some(s.clone().into_bytes()),
                    v @ (Value::Number(_) | Value::Bool(_)) => Some(v.to_string().into_bytes()),
                    _ => None,
                }
            }
        }
    }
}

impl fmt::Debug for Values<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Values").finish_non_exhaustive()
    }
}

fn on_error(raw: Option<Value>) -> Result<OnError, String> {
    const HOW: &str = "write \"fail\", \"omit\" or { default = <value> }";
    match raw {
        None => Ok(OnError::Fail),
        Some(Value::String(s)) => match s.as_str() {
            "fail" => Ok(OnError::Fail),
            "omit" => Ok(OnError::Omit),
            other => Err(format!("`{other}` is not a policy; {HOW}")),
        },
        Some(Value::Object(mut map)) => match (map.remove("default"), map.keys().next()) {
            (Some(value), None) => Ok(OnError::Default(value)),
            (_, Some(key)) => Err(format!("unknown key `{key}`; {HOW}")),
            (None, None) => Err(format!("an empty table; {HOW}")),
        },
        Some(other) => Err(format!("{other} is not a policy; {HOW}")),
    }
}

/// A call timeout: a duration as the gateway writes them, above zero.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    match units::parse_duration(text)? {
        d if d.is_zero() => Err(format!("`{text}`: a timeout must be above zero")),
        d => Ok(d),
    }
}

fn error(status: u16, message: &str) -> Decision {
    Decision::respond(Reply::json(status, &json!({ "error": message })))
}

export_plugin!(Compose, config_schema = "config.schema.json");

#[cfg(test)]
mod tests;
