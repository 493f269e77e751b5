//! `transform`: rewrites the request on its way to the upstream (headers,
//! path, query, JSON body) and the response on its way back (headers, JSON
//! body, status).
//!
//! Only the phases with rules are called, and a body is buffered only on a
//! side with body rules, so a header-only config streams both bodies. Header
//! edits that read nothing (no renames) on a side without body rules (or
//! status map) are fixed: the gateway makes them without calling the plugin,
//! so a config of such edits alone costs no call at all.

mod body;
mod headers;
mod pointer;
mod rewrite;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use wasmgate_sdk::prelude::*;

use crate::body::{BodyEdits, BodyError, RawBodyEdits};
use crate::headers::{HeaderEdits, RawHeaderEdits};
use crate::rewrite::{PathRewrite, QueryEdits, RawPathRewrite, RawQueryEdits};

/// The body limit when `max_body` is not given.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;

/// The route's `config` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Rules for the request, on its way to the upstream.
    #[serde(default)]
    request: RawRequest,
    /// Rules for the response, on its way back to the client.
    #[serde(default)]
    response: RawResponse,
    /// The largest body the body rules read: "1MiB" (default), "64KiB", or bytes.
    max_body: Option<Value>,
    /// A response body that is not JSON (or does not fit the rules): 502 instead of passing it through unchanged.
    strict: Option<bool>,
}

/// `request`: edits of the request, on its way to the upstream.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    /// Header edits.
    #[serde(default)]
    headers: RawHeaderEdits,
    /// A path rewrite; paths that do not match `from` pass unchanged.
    path: Option<RawPathRewrite>,
    /// Query parameter edits.
    #[serde(default)]
    query: RawQueryEdits,
    /// JSON body edits (the body is buffered, up to `max_body`).
    #[serde(default)]
    body: RawBodyEdits,
}

/// `response`: edits of the upstream's response.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawResponse {
    /// Header edits.
    #[serde(default)]
    headers: RawHeaderEdits,
    /// JSON body edits (the body is buffered, up to `max_body`).
    #[serde(default)]
    body: RawBodyEdits,
    /// `{ "404" = 410 }`: upstream status → status sent to the client.
    #[serde(default)]
    status_map: BTreeMap<String, u16>,
}

#[derive(Debug)]
struct RequestRules {
    headers: HeaderEdits,
    path: Option<PathRewrite>,
    query: QueryEdits,
    body: BodyEdits,
}

impl RequestRules {
    fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.path.is_none() && self.query.is_empty() && self.body.is_empty()
    }

    /// Header edits that read nothing, with no body rules that could read
    /// what they change: the gateway makes them before the request hook.
    fn headers_fixed(&self) -> bool {
        !self.headers.is_empty() && !self.headers.reads() && self.body.is_empty()
    }

    /// Whether anything is left for the request hook.
    fn needs_hook(&self) -> bool {
        (!self.headers.is_empty() && !self.headers_fixed())
            || self.path.is_some()
            || !self.query.is_empty()
            || !self.body.is_empty()
    }
}

#[derive(Debug)]
struct ResponseRules {
    headers: HeaderEdits,
    body: BodyEdits,
    status_map: Vec<(u16, u16)>,
}

impl ResponseRules {
    fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.body.is_empty() && self.status_map.is_empty()
    }

    /// Header edits that read nothing and nothing else: the gateway makes
    /// them, sparing a response hook.
    fn headers_fixed(&self) -> bool {
        !self.headers.is_empty() && !self.headers.reads() && self.body.is_empty() && self.status_map.is_empty()
    }
}

/// The plugin: the rules of each phase and the body policy.
#[derive(Debug)]
pub struct Transform {
    request: RequestRules,
    response: ResponseRules,
    max_body: u64,
    strict: bool,
}

fn status_map(raw: BTreeMap<String, u16>) -> Result<Vec<(u16, u16)>, String> {
    let mut map = Vec::with_capacity(raw.len());
    for (from, to) in raw {
        let from_code = from.trim().parse::<u16>().ok().filter(|c| wasmgate_sdk::STATUSES.contains(c));
        let Some(from_code) = from_code else {
            return Err(format!("response.status_map: `{from}` is not a status code; write e.g. \"404\" = 410"));
        };
        if !wasmgate_sdk::STATUSES.contains(&to) {
            return Err(format!("response.status_map: {from} maps to {to}, which is not a final status (200..=599)"));
        }
        map.push((from_code, to));
    }
    Ok(map)
}

impl Plugin for Transform {
    type Config = Config;

    fn new(c: Config) -> Result<Self, ConfigError> {
        let request = RequestRules {
            headers: HeaderEdits::build(c.request.headers, "request.headers")?,
            path: c.request.path.as_ref().map(PathRewrite::build).transpose()?,
            query: QueryEdits::build(c.request.query)?,
            body: BodyEdits::build(c.request.body, "request.body")?,
        };
        let response = ResponseRules {
            headers: HeaderEdits::build(c.response.headers, "response.headers")?,
            body: BodyEdits::build(c.response.body, "response.body")?,
            status_map: status_map(c.response.status_map)?,
        };
        if request.is_empty() && response.is_empty() {
            return Err(concat!(
                "nothing to do: give `request` rules (headers, path, query, body) ",
                "or `response` rules (headers, body, status_map)"
            )
            .into());
        }
        let body_rules = !request.body.is_empty() || !response.body.is_empty();
        let max_body = match &c.max_body {
            None => DEFAULT_MAX_BODY,
            Some(_) if !body_rules => {
                return Err("max_body limits the bodies the body rules read, and there are none; remove it".into());
            }
            Some(v) => body::parse_size(v).map_err(|e| format!("max_body: {e}"))?,
        };
        if c.strict.is_some() && response.body.is_empty() {
            return Err(concat!(
                "strict decides what happens to a response body the rules cannot edit, ",
                "and there are no `response.body` rules; remove it"
            )
            .into());
        }
        Ok(Self { request, response, max_body, strict: c.strict.unwrap_or(false) })
    }

    fn info(&self) -> Info {
        Info {
            on_request: self.request.needs_hook(),
            on_response: !self.response.is_empty() && !self.response.headers_fixed(),
            request_body: !self.request.body.is_empty(),
            response_body: !self.response.body.is_empty(),
        }
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        if !self.request.body.is_empty()
            && let Some(refusal) = self.edit_request_body(req)
        {
            return refusal;
        }
        if !self.request.headers_fixed() {
            self.request.headers.apply(req, "request");
        }
        if let Some(rewrite) = &self.request.path
            && let Some(path) = rewrite.apply(&req.path())
            && let Err(e) = req.set_path(&path)
        {
            log::error(&format!("cannot rewrite the path to {path}: {e}"));
            return error(500, "path rewrite failed");
        }
        if !self.request.query.is_empty()
            && let Some(query) = self.request.query.apply(req.query().as_deref())
            && let Err(e) = req.set_query(query.as_deref())
        {
            log::error(&format!("cannot set the query to {query:?}: {e}"));
            return error(500, "query rewrite failed");
        }
        Decision::Continue
    }

    fn fixed_headers(&self) -> FixedHeaders {
        let fixed = |yes: bool, edits: &HeaderEdits| if yes { edits.fixed() } else { Vec::new() };
        // Response body rules read JSON: the upstream is asked for it
        // uncompressed. A compressed body is not JSON and passed through
        // unedited — for every browser (they all accept gzip), the
        // `remove` rules removed nothing. First, so that the route's own
        // header rules (fixed or in the hook) have the last word.
        let mut request = Vec::new();
        if !self.response.body.is_empty() {
            request.push(("accept-encoding".to_owned(), HeaderEdit::Set(b"identity".to_vec())));
        }
        request.extend(fixed(self.request.headers_fixed(), &self.request.headers));
        FixedHeaders { request, response: fixed(self.response.headers_fixed(), &self.response.headers) }
    }

    fn on_response(&self, _req: &Request<'_>, resp: &mut Response<'_>) -> Decision {
        if !self.response.body.is_empty()
            && let Some(refusal) = self.edit_response_body(resp)
        {
            return refusal;
        }
        let status = resp.status();
        if let Some((_, to)) = self.response.status_map.iter().find(|(from, _)| *from == status)
            && let Err(e) = resp.set_status(*to)
        {
            log::warn(&format!("cannot map status {status} to {to}: {e}"));
        }
        self.response.headers.apply(resp, "response");
        Decision::Continue
    }
}

impl Transform {
    /// Edits the request body; a reply when the request is refused. An empty
    /// body (a GET) has nothing to edit and passes.
    fn edit_request_body(&self, req: &mut Request<'_>) -> Option<Decision> {
        let body = match req.body() {
            Ok(b) => b,
            Err(e) => {
                log::error(&format!("request body unavailable: {e}"));
                return Some(error(500, "request body unavailable"));
            }
        };
        if body.is_empty() {
            return None;
        }
        if body.len() as u64 > self.max_body {
            return Some(error(413, "request body too large"));
        }
        let edited = match self.request.body.apply(&body) {
            Ok(None) => return None,
            Ok(Some(edited)) => edited,
            Err(BodyError::NotJson) => return Some(error(400, "request body is not JSON")),
            Err(BodyError::Conflict(at)) => {
                return Some(Decision::respond(Reply::json(
                    400,
                    &json!({ "error": "request body does not fit the transform", "pointer": at }),
                )));
            }
        };
        match req.set_body(edited) {
            Ok(()) => None,
            Err(EditError::TooLarge(_)) => Some(error(413, "request body too large")),
            Err(e) => {
                log::error(&format!("cannot replace the request body: {e}"));
                Some(error(500, "request body could not be edited"))
            }
        }
    }

    /// Edits the response body; a reply (502) when the response is refused.
    fn edit_response_body(&self, resp: &mut Response<'_>) -> Option<Decision> {
        let body = match resp.body() {
            Ok(b) => b,
            Err(e) => {
                log::error(&format!("response body unavailable: {e}"));
                return Some(error(502, "upstream response unavailable"));
            }
        };
        if body.is_empty() {
            return None;
        }
        if body.len() as u64 > self.max_body {
            log::warn(&format!("response body of {} bytes is over max_body ({})", body.len(), self.max_body));
            return Some(error(502, "upstream response too large"));
        }
        let why = match self.response.body.apply(&body) {
            Ok(None) => return None,
            Ok(Some(edited)) => {
                return match resp.set_body(edited) {
                    Ok(()) => None,
                    Err(e) => {
                        log::error(&format!("cannot replace the response body: {e}"));
                        Some(error(502, "upstream response could not be edited"))
                    }
                };
            }
            Err(BodyError::NotJson) => "is not JSON".to_owned(),
            Err(BodyError::Conflict(at)) => format!("does not fit the rule at {at}"),
        };
        let status = resp.status();
        let content_type = resp.header_str("content-type").unwrap_or_default();
        if self.strict {
            log::warn(&format!("response body ({status}, content-type {content_type:?}) {why}: 502 (strict)"));
            return Some(error(502, &format!("upstream response {why}")));
        }
        log::warn(&format!("response body ({status}, content-type {content_type:?}) {why}: passed through unchanged"));
        None
    }
}

fn error(status: u16, message: &str) -> Decision {
    Decision::respond(Reply::json(status, &json!({ "error": message })))
}

export_plugin!(Transform, config_schema = "config.schema.json");

#[cfg(test)]
mod tests;
