//! `cors`: Cross-Origin Resource Sharing at the gateway. Preflights
//! (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) are answered
//! in the request phase without reaching the upstream. For actual requests
//! the request hook leaves `Access-Control-Allow-Origin` (and friends) for
//! the response, which the gateway sets on whatever response comes back
//! through the plugin — so with `cors` first in the chain a 401 or 403 from
//! a later plugin still carries CORS headers and the browser can read it.
//! The plugin has no response hook.

mod origin;

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::Deserialize;
use wasmgate_sdk::is_token;
use wasmgate_sdk::prelude::*;
use wasmgate_sdk::units;

use crate::origin::OriginRule;

/// The route's `config` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Exact origins, `"*"`, or wildcard subdomains (`"https://*.example.com"`).
    allowed_origins: Vec<String>,
    /// Methods a preflight may ask for (default GET, HEAD, POST); `"*"`: any.
    #[serde(default = "default_methods")]
    allowed_methods: Vec<String>,
    /// Request headers a preflight may ask for; `"*"` (the default) allows whatever it asks.
    #[serde(default = "any")]
    allowed_headers: Vec<String>,
    /// Response headers the browser may show to the page.
    #[serde(default)]
    exposed_headers: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` (cookies, HTTP auth).
    #[serde(default)]
    allow_credentials: bool,
    /// How long the browser may cache a preflight answer (default "10m").
    #[serde(default = "default_max_age")]
    max_age: String,
    /// The status of an allowed preflight answer (default 204).
    #[serde(default = "default_preflight_status")]
    preflight_status: u16,
}

fn default_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into(), "POST".into()]
}

fn any() -> Vec<String> {
    vec!["*".into()]
}

fn default_max_age() -> String {
    "10m".into()
}

fn default_preflight_status() -> u16 {
    204
}

/// Which origins may read responses.
#[derive(Debug)]
enum Origins {
    /// `"*"`: every origin, answered with `Access-Control-Allow-Origin: *`.
    Any,
    List(Vec<OriginRule>),
}

/// A configured list of methods or header names, or `"*"`.
#[derive(Debug)]
enum Allowed {
    /// Whatever the preflight asks for, echoed back.
    Any,
    List(Vec<String>),
}

impl Allowed {
    /// `names` as given, or `Any` for `["*"]`. Header names compare
    /// case-insensitively (lowercased); methods are uppercased.
    fn parse(key: &str, names: Vec<String>, upper: bool) -> Result<Self, ConfigError> {
        if names.iter().any(|n| n == "*") {
            if names.len() > 1 {
                return Err(format!("{key}: `\"*\"` already allows everything; remove the other entries").into());
            }
            return Ok(Self::Any);
        }
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if !is_token(&name) {
                return Err(format!("{key}: `{name}` is not a valid name").into());
            }
            out.push(if upper { name.to_ascii_uppercase() } else { name.to_ascii_lowercase() });
        }
        Ok(Self::List(out))
    }

    fn allows(&self, name: &str) -> bool {
        match self {
            Self::Any => true,
            Self::List(names) => names.iter().any(|n| n.eq_ignore_ascii_case(name)),
        }
    }
}

/// The plugin: the policy, and the header values that do not depend on the
/// request, built once.
#[derive(Debug)]
pub struct Cors {
    origins: Origins,
    methods: Allowed,
    headers: Allowed,
    /// `Access-Control-Expose-Headers`, when configured.
    expose: Option<String>,
    credentials: bool,
    /// `Access-Control-Max-Age`, in seconds.
    max_age: String,
    preflight_status: u16,
}

/// What a preflight answer varies on besides `Origin`, which the fixed
/// `Vary` edit adds to every response passing back through the plugin, its
/// own answers included.
const PREFLIGHT_VARY: &str = "Access-Control-Request-Method, Access-Control-Request-Headers";

/// The CORS response headers an upstream might set itself; the plugin owns
/// them on its routes.
const CORS_RESPONSE_HEADERS: [&str; 3] =
    ["access-control-allow-origin", "access-control-allow-credentials", "access-control-expose-headers"];

impl Plugin for Cors {
    type Config = Config;

    fn new(c: Config) -> Result<Self, ConfigError> {
        let origins = parse_origins(&c.allowed_origins, c.allow_credentials)?;
        let methods = Allowed::parse("allowed_methods", c.allowed_methods, true)?;
        let headers = Allowed::parse("allowed_headers", c.allowed_headers, false)?;
        let expose = match Allowed::parse("exposed_headers", c.exposed_headers, false)? {
            Allowed::Any if c.allow_credentials => {
                return Err("exposed_headers: `\"*\"` is not a wildcard when credentials are allowed \
                            (browsers take it as a header named `*`); list the headers"
                    .into());
            }
            Allowed::Any => Some("*".to_owned()),
            Allowed::List(names) if names.is_empty() => None,
            Allowed::List(names) => Some(names.join(", ")),
        };
        let max_age = units::parse_duration(&c.max_age).map_err(|e| ConfigError::from(format!("max_age: {e}")))?;
        if !(200..=299).contains(&c.preflight_status) {
            return Err(format!(
                "preflight_status {} is not a success status, so browsers would fail every preflight; use 200 or 204",
                c.preflight_status
            )
            .into());
        }
        Ok(Self {
            origins,
            methods,
            headers,
            expose,
            credentials: c.allow_credentials,
            max_age: max_age.as_secs().to_string(),
            preflight_status: c.preflight_status,
        })
    }

    fn info(&self) -> Info {
        Info::default()
    }

    /// Whether (and which) CORS headers a response carries depends on
    /// `Origin`, so every response passing back through the plugin says so
    /// — also one to a request without `Origin`, lest a shared cache hand it
    /// to a cross-origin request — and the gateway adds it without a call.
    fn fixed_headers(&self) -> FixedHeaders {
        FixedHeaders { request: Vec::new(), response: vec![("vary".into(), HeaderEdit::Append(b"Origin".to_vec()))] }
    }

    /// What the answer depends on: the gateway keeps it per origin and
    /// method (and, for a preflight, what it asks), so a browser's repeated
    /// requests do not call the plugin.
    fn depends_on(&self) -> Option<Vec<RequestFact>> {
        Some(vec![
            RequestFact::Method,
            RequestFact::Header("origin".into()),
            RequestFact::Header("access-control-request-method".into()),
            RequestFact::Header("access-control-request-headers".into()),
        ])
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let origin = req.header("origin").map(|o| String::from_utf8(o).unwrap_or_default());
        // Only OPTIONS with both headers is a preflight; any other OPTIONS is
        // an ordinary request for the upstream.
        if let Some(origin) = &origin
            && req.method() == "OPTIONS"
            && let Some(method) = req.header("access-control-request-method")
        {
            return self.preflight(req, origin, String::from_utf8(method).unwrap_or_default());
        }
        let Some(origin) = origin else {
            return Decision::Continue;
        };
        match self.allow_origin(&origin) {
            Some(allow_origin) => {
                leave(req.set_response_header("access-control-allow-origin", allow_origin), "allow-origin");
                // The upstream's copies go whether or not the plugin sets
                // its own: an upstream's `-Allow-Credentials: true` beside
                // this origin let the page read answers made with the
                // user's cookies, though `credentials` is off.
                if self.credentials {
                    leave(req.set_response_header("access-control-allow-credentials", "true"), "allow-credentials");
                } else {
                    leave(req.remove_response_header("access-control-allow-credentials"), "allow-credentials");
                }
                match &self.expose {
                    Some(expose) => {
                        leave(req.set_response_header("access-control-expose-headers", expose), "expose-headers")
                    }
                    None => leave(req.remove_response_header("access-control-expose-headers"), "expose-headers"),
                }
            }
            // No CORS headers: the browser keeps the response from the page.
            // The request itself goes through (CORS is not access control).
            None => {
                for name in CORS_RESPONSE_HEADERS {
                    leave(req.remove_response_header(name), name);
                }
            }
        }
        Decision::Continue
    }
}

impl Cors {
    /// Answers a preflight: the browser asks whether `origin` may send a
    /// `method` request (with the headers it lists).
    fn preflight(&self, req: &Request<'_>, origin: &str, method: String) -> Decision {
        let Some(allow_origin) = self.allow_origin(origin) else {
            return refuse("origin not allowed");
        };
        if !is_token(&method) || !self.methods.allows(&method) {
            return refuse("method not allowed");
        }
        let mut asked = Vec::new();
        for value in req.header_all("access-control-request-headers") {
            let Ok(value) = String::from_utf8(value) else {
                return refuse("header not allowed");
            };
            for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if !is_token(name) || !self.headers.allows(name) {
                    return refuse("header not allowed");
                }
                asked.push(name.to_ascii_lowercase());
            }
        }
        let mut reply = Reply::new(self.preflight_status).header("access-control-allow-origin", allow_origin).header(
            "access-control-allow-methods",
            match &self.methods {
                Allowed::Any => method,
                Allowed::List(m) => m.join(", "),
            },
        );
        let allow_headers = match &self.headers {
            Allowed::Any => asked.join(", "),
            Allowed::List(h) => h.join(", "),
        };
        if !allow_headers.is_empty() {
            reply = reply.header("access-control-allow-headers", allow_headers);
        }
        if self.credentials {
            reply = reply.header("access-control-allow-credentials", "true");
        }
        Decision::respond(reply.header("access-control-max-age", self.max_age.as_str()).header("vary", PREFLIGHT_VARY))
    }

    /// The `Access-Control-Allow-Origin` value for this request's origin, or
    /// `None` when the origin is not allowed.
    fn allow_origin<'o>(&self, origin: &'o str) -> Option<&'o str> {
        if origin.is_empty() {
            return None;
        }
        match &self.origins {
            Origins::Any => Some("*"),
            Origins::List(rules) => {
                // Browsers send origins in lower case: a copy only when not.
                let lower = if origin.bytes().any(|b| b.is_ascii_uppercase()) {
                    Cow::Owned(origin.to_ascii_lowercase())
                } else {
                    Cow::Borrowed(origin)
                };
                rules.iter().any(|r| r.matches(&lower)).then_some(origin)
            }
        }
    }
}

fn parse_origins(origins: &[String], credentials: bool) -> Result<Origins, ConfigError> {
    if origins.is_empty() {
        return Err("allowed_origins is empty, so no origin could ever be allowed; list origins, \
                    e.g. [\"https://app.example.com\"]"
            .into());
    }
    if origins.iter().any(|o| o.trim() == "*") {
        if origins.len() > 1 {
            return Err("allowed_origins: `\"*\"` already allows every origin; remove the other entries".into());
        }
        // Fetch forbids `*` with credentials, and reflecting every origin
        // instead would let any site make credentialed requests and read the
        // answers: refuse rather than guess.
        if credentials {
            return Err("allow_credentials = true cannot be combined with allowed_origins = [\"*\"]: \
                        that would let every website act with your users' cookies; list the origins \
                        (wildcard subdomains such as \"https://*.example.com\" work)"
                .into());
        }
        return Ok(Origins::Any);
    }
    let mut rules = Vec::with_capacity(origins.len());
    for o in origins {
        rules.push(OriginRule::parse(o).map_err(|e| ConfigError::from(format!("allowed_origins: {e}")))?);
    }
    Ok(Origins::List(rules))
}

/// A 403 without CORS headers: the browser reports the preflight failed.
fn refuse(why: &str) -> Decision {
    log::debug(&format!("CORS preflight refused: {why}"));
    Decision::respond(Reply::json(403, &ErrorBody { error: format!("CORS preflight refused: {why}") }))
}

#[derive(serde::Serialize)]
struct ErrorBody {
    error: String,
}

/// Logs a response header the gateway refused (the names are fixed and the
/// values checked, so this is not expected).
fn leave(result: Result<(), EditError>, what: &str) {
    if let Err(e) = result {
        log::warn(&format!("cannot leave {what} for the response: {e}"));
    }
}

export_plugin!(Cors, config_schema = "config.schema.json");

#[cfg(test)]
mod tests;
