//! `api-key`: authenticates a request by the API key it carries (a header,
//! or a query parameter) against keys the operator lists as SHA-256
//! digests, then names the consumer for the plugins after it (`consumer` in
//! the context) and, optionally, for the upstream (a header).

mod keys;
#[cfg(test)]
mod tests;

use schemars::JsonSchema;
use serde::Deserialize;
use wasmgate_sdk::prelude::*;
use wasmgate_sdk::{check_request_header, query, secrets};

use keys::{Consumer, KeySet};
pub use keys::{KeyMap, RawEntry};

/// The route's `config` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The header that carries the key.
    #[serde(default = "default_header")]
    header: String,
    /// A query parameter that may carry the key instead.
    query: Option<String>,
    /// Accepted keys: SHA-256 hex digest → consumer and scopes.
    #[serde(default)]
    keys: KeyMap,
    /// A granted secret holding more keys, as the same map in JSON.
    keys_secret: Option<String>,
    /// Remove the key from the request before the upstream sees it.
    #[serde(default = "yes")]
    hide_key: bool,
    /// A request header set to the consumer's name (any client copy replaced).
    consumer_header: Option<String>,
    /// Scopes the key must have, all of them, on this route.
    #[serde(default)]
    required_scopes: Vec<String>,
    /// The realm in `WWW-Authenticate`.
    #[serde(default = "default_realm")]
    realm: String,
}

fn default_header() -> String {
    "x-api-key".to_owned()
}

fn default_realm() -> String {
    "api".to_owned()
}

fn yes() -> bool {
    true
}

/// The plugin: where the key is, the keys it accepts, and what it tells the
/// upstream.
#[derive(Debug)]
pub struct ApiKey {
    header: String,
    query: Option<String>,
    keys: KeySet,
    hide_key: bool,
    consumer_header: Option<String>,
    required_scopes: Vec<String>,
    /// `ApiKey realm="..."`.
    challenge: String,
}

/// The context entry holding the consumer's name.
pub const CONSUMER: &str = "consumer";
/// The context entry holding the key's scopes, as a JSON array.
pub const SCOPES: &str = "api_key.scopes";

/// What the request carries.
#[derive(Debug, PartialEq, Eq)]
enum Presented {
    None,
    One(Vec<u8>),
    /// Two different keys: which one counts would be up to whoever reads them.
    Several,
}

impl Plugin for ApiKey {
    type Config = Config;

    fn new(c: Config) -> Result<Self, ConfigError> {
        let header = header_name("header", &c.header)?;
        if let Some(q) = &c.query {
            let valid = !q.is_empty() && q.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            if !valid {
                return Err(format!(
                    "query `{q}` is not a plain parameter name; use letters, digits, `-`, `.`, `_` or `~`"
                )
                .into());
            }
        }
        let consumer_header = match c.consumer_header {
            Some(h) => {
                let h = header_name("consumer_header", &h)?;
                check_request_header(&h)
                    .map_err(|e| ConfigError::new(format!("consumer_header: {e}; pick another header")))?;
                if h == header {
                    return Err(format!(
                        "consumer_header `{h}` is the header that carries the key; pick another name (e.g. \"x-consumer\")"
                    )
                    .into());
                }
                Some(h)
            }
            None => None,
        };
        for scope in &c.required_scopes {
            keys::check_scope(scope).map_err(|e| ConfigError::new(format!("required_scopes: {e}")))?;
        }
        let realm_ok =
            !c.realm.is_empty() && c.realm.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
        if !realm_ok {
            return Err("realm must be non-empty visible text without `\"` or `\\`".into());
        }
        let mut sources = vec![("keys".to_owned(), c.keys)];
        if let Some(name) = &c.keys_secret {
            // Read once, here: rotating keys is a config reload.
            let bytes = secrets::get(name).ok_or_else(|| {
                ConfigError::new(format!(
                    "keys_secret `{name}` is not a secret granted to this plugin; add grants = {{ secrets = {{ {name} = {{ file = \"/path/to/keys.json\" }} }} }} to its [plugin.NAME] table"
                ))
            })?;
            sources.push((format!("secret `{name}`"), keys::parse_secret(name, &bytes)?));
        }
        let keys = KeySet::build(sources)?;
        Ok(Self {
            header,
            query: c.query,
            keys,
            hide_key: c.hide_key,
            consumer_header,
            required_scopes: c.required_scopes,
            challenge: format!("ApiKey realm=\"{}\"", c.realm),
        })
    }

    /// The answer is a function of the presented key (its header, and the
    /// query when keys may come there): the gateway keeps it per key, so a
    /// client's repeated requests do not call the plugin.
    fn depends_on(&self) -> Option<Vec<RequestFact>> {
        let mut facts = vec![RequestFact::Header(self.header.clone())];
        if self.query.is_some() {
            facts.push(RequestFact::Query);
        }
        Some(facts)
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        let key = match self.presented(req) {
            Presented::One(key) => key,
            Presented::None => return Decision::respond(self.unauthorized("missing api key")),
            Presented::Several => {
                return Decision::respond(Reply::json(400, &error_body("more than one api key")));
            }
        };
        let Some(consumer) = self.keys.find(&key) else {
            log::debug("unknown api key");
            return Decision::respond(self.unauthorized("invalid api key"));
        };
        if !self.required_scopes.iter().all(|s| consumer.scopes.contains(s)) {
            log::debug(&format!("consumer `{}` lacks a required scope", consumer.name));
            return Decision::respond(Reply::json(403, &error_body("insufficient scope")));
        }
        self.admit(req, consumer);
        Decision::Continue
    }
}

impl ApiKey {
    /// The key the request carries: every value of the header, then every
    /// `query` parameter. Empty values are no key; the same key twice is one.
    fn presented(&self, req: &Request<'_>) -> Presented {
        let mut found = req.header_all(&self.header);
        // The query only when keys may come there: reading it otherwise
        // would be a fact the plugin did not declare (`depends_on`).
        if let Some(name) = &self.query
            && let Some(q) = req.query()
        {
            found.extend(query::values(&q, name));
        }
        found.retain(|k| !k.is_empty());
        found.sort_unstable();
        found.dedup();
        match found.len() {
            0 => Presented::None,
            1 => found.pop().map_or(Presented::None, Presented::One),
            _ => Presented::Several,
        }
    }

    /// Tells the rest of the chain, and the upstream, who the consumer is.
    fn admit(&self, req: &mut Request<'_>, consumer: &Consumer) {
        context::set(CONSUMER, &consumer.name);
        context::set(SCOPES, &consumer.scopes_json);
        if let Some(h) = &self.consumer_header
            && let Err(e) = req.set_header(h, &consumer.name)
        {
            log::warn(&format!("cannot set {h}: {e}"));
        }
        if self.hide_key {
            req.remove_header(&self.header);
            if let Some(name) = &self.query
                && let Some(q) = req.query()
            {
                let rest = query::without(&q, name);
                if rest.as_deref() != Some(q.as_str())
                    && let Err(e) = req.set_query(rest.as_deref())
                {
                    log::warn(&format!("cannot remove the key from the query: {e}"));
                }
            }
        }
    }

    fn unauthorized(&self, message: &str) -> Reply {
        Reply::json(401, &error_body(message)).header("www-authenticate", self.challenge.as_str())
    }
}

fn error_body(message: &str) -> serde_json::Value {
    serde_json::json!({ "error": message })
}

/// A header name from the config, by the gateway's rules (valid, and not one
/// it manages), in lowercase.
fn header_name(key: &str, name: &str) -> Result<String, ConfigError> {
    check_header_name(name).map_err(|e| ConfigError::new(format!("{key}: {e}; pick another header")))
}

export_plugin!(ApiKey, config_schema = "config.schema.json");
