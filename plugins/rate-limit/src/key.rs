//! What a limit counts by: the parts of its key, read from the request and
//! the context, and the store key they make.

use std::fmt;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use wasmgate_sdk::{Headers, Request, context};

/// One entry of a limit's `key` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The client's address as the gateway gives it: the socket peer, or
    /// the client behind a proxy in its `server.trusted_proxies`.
    ClientIp,
    /// The first value of a request header (lowercase name).
    Header(String),
    /// The `consumer` context entry (set by the api-key plugin).
    Consumer,
    /// A top-level claim of the JWT plugin's `jwt.claims` context entry.
    Claim(String),
    /// Any context entry an earlier plugin set (`client.ip` from ip-filter:
    /// the real client behind a trusted proxy).
    Context(String),
    /// The name of the matched route.
    Route,
    /// The request path.
    Path,
    /// The request method.
    Method,
    /// One counter for every request.
    Global,
}

impl KeyPart {
    /// Whether every request has this part (a header, a context entry or a
    /// claim may be missing).
    pub(crate) fn always_present(&self) -> bool {
        matches!(self, Self::ClientIp | Self::Route | Self::Path | Self::Method | Self::Global)
    }

    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if let Some(name) = text.strip_prefix("header:") {
            let valid =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid {
                return Err(format!("key part `{text}`: `{name}` is not a valid header name"));
            }
            return Ok(Self::Header(name.to_ascii_lowercase()));
        }
        if let Some(name) = text.strip_prefix("claim:") {
            if name.is_empty() {
                return Err(format!("key part `{text}` names no claim; write e.g. \"claim:sub\""));
            }
            return Ok(Self::Claim(name.to_owned()));
        }
        if let Some(name) = text.strip_prefix("context:") {
            if name.is_empty() {
                return Err(format!("key part `{text}` names no context entry; write e.g. \"context:client.ip\""));
            }
            return Ok(Self::Context(name.to_owned()));
        }
        Ok(match text {
            "client-ip" => Self::ClientIp,
            "consumer" => Self::Consumer,
            "route" => Self::Route,
            "path" => Self::Path,
            "method" => Self::Method,
            "global" => Self::Global,
            _ => {
                return Err(format!(
                    "unknown key part `{text}`; use client-ip, header:NAME, consumer, claim:NAME, context:NAME, route, path, method or global"
                ));
            }
        })
    }
}

impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientIp => f.write_str("client-ip"),
            Self::Header(name) => write!(f, "header:{name}"),
            Self::Consumer => f.write_str("consumer"),
            Self::Claim(name) => write!(f, "claim:{name}"),
            Self::Context(name) => write!(f, "context:{name}"),
            Self::Route => f.write_str("route"),
            Self::Path => f.write_str("path"),
            Self::Method => f.write_str("method"),
            Self::Global => f.write_str("global"),
        }
    }
}

/// Stands for a missing part under `missing = "shared"`. Escaped values never
/// hold a `%` that is not followed by two hex digits, so no real value
/// (not even an empty header) can equal it.
const MISSING: &str = "%-";

/// Key texts longer than this are replaced by their SHA-256, so the store
/// key stays under the store's 512 bytes whatever a client sends.
const MAX_KEY_TEXT: usize = 200;

/// The request's values for key parts; the claims are parsed once, on first use.
#[derive(Debug)]
pub(crate) struct Facts<'r, 'a> {
    req: &'r Request<'a>,
    claims: Option<Option<Map<String, Value>>>,
}

impl<'r, 'a> Facts<'r, 'a> {
    pub(crate) fn new(req: &'r Request<'a>) -> Self {
        Self { req, claims: None }
    }

    /// Appends the part's value, escaped, to `out`; `false` (and nothing
    /// appended) when the request has no such value.
    fn push_value(&mut self, part: &KeyPart, out: &mut String) -> bool {
        let value = match part {
            KeyPart::Header(name) => {
                let Some(bytes) = self.req.header(name) else { return false };
                escape_into(out, &bytes);
                return true;
            }
            KeyPart::Global => {
                out.push_str("global");
                return true;
            }
            KeyPart::ClientIp => Some(self.req.client_ip()),
            KeyPart::Consumer => context::get("consumer"),
            KeyPart::Claim(name) => self.claim(name),
            KeyPart::Context(name) => context::get(name),
            KeyPart::Route => Some(self.req.route()),
            KeyPart::Path => Some(self.req.path()),
            KeyPart::Method => Some(self.req.method()),
        };
        let Some(value) = value else { return false };
        escape_into(out, value.as_bytes());
        true
    }

    fn claim(&mut self, name: &str) -> Option<String> {
        let claims = self.claims.get_or_insert_with(|| {
            // Anything but a JSON object (no JWT plugin before us, or a broken
            // entry) has no claims: every claim part is missing.
            context::get("jwt.claims").and_then(|text| serde_json::from_str(&text).ok())
        });
        claim_text(claims.as_ref()?.get(name)?)
    }
}

/// A claim as key text: strings as they are, numbers and booleans as JSON,
/// `null` as missing, arrays and objects as compact JSON.
fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A limit's key text for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyText {
    /// Every part had a value: the parts joined with `|`.
    Complete(String),
    /// Part `first` (an index into the limit's key) had none; `shared` is the
    /// text with [`MISSING`] in place of each missing part.
    Missing { first: usize, shared: String },
}

/// The key text of a limit for this request.
pub(crate) fn key_text(parts: &[KeyPart], facts: &mut Facts<'_, '_>) -> KeyText {
    let mut first = None;
    let mut text = String::with_capacity(64);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            text.push('|');
        }
        if !facts.push_value(part, &mut text) {
            first.get_or_insert(i);
            text.push_str(MISSING);
        }
    }
    match first {
        None => KeyText::Complete(text),
        Some(first) => KeyText::Missing { first, shared: text },
    }
}

/// The store key: `scope|limit|algorithm|key text`. The scope is the route
/// name, or `*` when the limit is shared across routes. The gateway prefixes
/// the plugin's namespace.
pub(crate) fn store_key(scope: &str, limit: &str, tag: &str, text: &str) -> String {
    let digest;
    let text = if text.len() > MAX_KEY_TEXT {
        digest = format!("#{}", hex::encode(Sha256::digest(text)));
        &digest
    } else {
        text
    };
    let mut key = String::with_capacity(scope.len() + limit.len() + tag.len() + text.len() + 3);
    escape_into(&mut key, scope.as_bytes());
    for part in [limit, tag, text] {
        key.push('|');
        key.push_str(part);
    }
    key
}

/// Percent-encodes everything but visible ASCII, and the characters the key
/// layout gives a meaning (`%`, `|`, `#`). Distinct values stay distinct, and
/// joined parts cannot run into each other.
#[cfg(test)]
pub(crate) fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    escape_into(&mut out, bytes);
    out
}

/// [`escape`], appending to `out`.
fn escape_into(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_graphic() && !matches!(b, b'%' | b'|' | b'#') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}
