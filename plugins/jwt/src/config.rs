//! The route's `config` table as serde reads it ([`Config`]), and the checked
//! [`Settings`] the request path uses. Every refusal names the key, what is
//! wrong with it and how to fix it.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use wasmgate_sdk::crypto::Algorithm;
use wasmgate_sdk::is_token;
use wasmgate_sdk::{ConfigError, EditError, units};

use crate::claims::Rules;

/// The route's `config` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The header the token is read from (default `authorization`).
    header: Option<String>,
    /// The scheme before the token in that header (default `Bearer`; `""`: none).
    scheme: Option<String>,
    /// Read the token from this cookie instead of a header.
    cookie: Option<String>,
    /// The realm in `WWW-Authenticate` (default `wasmgate`).
    realm: Option<String>,
    /// Accepted `alg` values (default: whatever the keys verify).
    algorithms: Option<Vec<String>>,
    /// A JWKS document: JSON text (as `config_files` inserts it) or a table.
    jwks: Option<Value>,
    /// PEM public keys: a list, or a table of kid → PEM.
    public_keys: Option<Value>,
    /// The name of a granted secret holding the HMAC key.
    hmac_secret: Option<String>,
    /// Where to fetch the JWKS from (`upstream://NAME/path` or a granted origin's URL).
    jwks_url: Option<String>,
    /// With `jwks_url`: fetches are at least this far apart (default `"30s"`, at least `"1s"`).
    jwks_refresh_interval: Option<String>,
    /// With `jwks_url`: keys this old are fetched again at the next request (default `"10m"`).
    jwks_max_age: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (default `"30s"`, at most `"10m"`).
    leeway: Option<String>,
    /// Accepted `iss`: a string or a list.
    issuer: Option<Value>,
    /// Accepted `aud`: a string or a list; one match is enough.
    audience: Option<Value>,
    /// Claims that must be present and not null, e.g. `["exp", "email"]`.
    #[serde(default)]
    required_claims: Vec<String>,
    /// Longer tokens are refused before any decoding (default 8192; 64 to 65536).
    max_token_bytes: Option<usize>,
    /// Verified tokens remembered (default 10000, at most 1000000; 0: no cache).
    cache_size: Option<usize>,
    /// The longest a verified token is remembered (default `"5m"`, at most `"1h"`).
    cache_max_age: Option<String>,
    /// Claim → request header set from it.
    #[serde(default)]
    forward_claims: BTreeMap<String, String>,
    /// Remove the token (its header, or just its cookie) before the upstream.
    #[serde(default)]
    strip_token: bool,
}

/// Where the token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A header; the token follows `scheme` and a space (or is the whole
    /// value when there is no scheme).
    Header {
        name: String,
        scheme: Option<String>,
    },
    Cookie {
        name: String,
    },
}

/// Where the verification keys come from; made into keys by [`crate::keys`].
#[derive(Debug, Clone, Default)]
pub struct KeySources {
    pub jwks: Option<String>,
    /// (kid, PEM).
    pub public_keys: Vec<(Option<String>, String)>,
    pub hmac_secret: Option<String>,
    pub remote: Option<RemoteSettings>,
}

/// A JWKS fetched over the `http` capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSettings {
    pub url: String,
    /// Fetches are at least this far apart, whatever tokens arrive.
    pub refresh_interval_ms: u64,
    /// Keys older than this are refreshed on the next request.
    pub max_age_ms: u64,
}

/// The checked config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub source: Source,
    pub realm: String,
    /// `None`: every algorithm the keys verify.
    pub allowed: Option<Vec<Algorithm>>,
    pub keys: KeySources,
    pub rules: Rules,
    pub max_token_bytes: usize,
    pub cache_size: usize,
    pub cache_max_age_ms: u64,
    /// (claim, header), headers lowercase.
    pub forward: Vec<(String, String)>,
    pub strip_token: bool,
}

const SECOND: u64 = 1000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;

impl Config {
    /// Checks everything that can be checked without the gateway's help.
    pub fn build(self) -> Result<Settings, ConfigError> {
        let source = match (self.header, self.scheme, self.cookie) {
            (Some(_), _, Some(_)) => {
                return Err("`header` and `cookie` are two places for the token: give one of them".into());
            }
            (None, Some(_), Some(_)) => return Err("`scheme` applies to `header`, not to `cookie`: remove it".into()),
            (None, None, Some(cookie)) => {
                if !is_cookie_name(&cookie) {
                    return Err(format!("cookie: `{cookie}` is not a valid cookie name").into());
                }
                Source::Cookie { name: cookie }
            }
            (header, scheme, None) => {
                let name = header_name("header", header.as_deref().unwrap_or("authorization"))?;
                let scheme = scheme.unwrap_or_else(|| "Bearer".to_owned());
                if !scheme.is_empty() && !is_token(&scheme) {
                    return Err(
                        format!("scheme: `{scheme}` is not an auth scheme; e.g. \"Bearer\", or \"\" for none").into()
                    );
                }
                Source::Header { name, scheme: (!scheme.is_empty()).then_some(scheme) }
            }
        };
        let realm = self.realm.unwrap_or_else(|| "wasmgate".to_owned());
        if realm.is_empty() || !realm.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
            return Err("realm: use printable ASCII without `\"` or `\\`, e.g. \"api\"".into());
        }
        let allowed = self.algorithms.map(|names| algorithms(&names)).transpose()?;
        let keys = key_sources(
            self.jwks,
            self.public_keys,
            self.hmac_secret,
            self.jwks_url,
            &Durations { refresh: self.jwks_refresh_interval, max_age: self.jwks_max_age },
        )?;
        let leeway_ms = duration("leeway", self.leeway.as_deref(), 30 * SECOND)?;
        if leeway_ms > 10 * MINUTE {
            return Err("leeway: at most \"10m\"; clocks that far apart need fixing, not tolerating".into());
        }
        let rules = Rules {
            leeway_ms,
            issuers: string_or_list("issuer", self.issuer)?,
            audiences: string_or_list("audience", self.audience)?,
            required: self.required_claims,
        };
        if rules.required.iter().any(String::is_empty) {
            return Err("required_claims: a claim name is empty".into());
        }
        let max_token_bytes = self.max_token_bytes.unwrap_or(8192);
        if !(64..=65_536).contains(&max_token_bytes) {
            return Err(
                format!("max_token_bytes: {max_token_bytes} is out of range; use 64..=65536 (default 8192)").into()
            );
        }
        let cache_size = self.cache_size.unwrap_or(10_000);
        if cache_size > 1_000_000 {
            return Err(format!("cache_size: {cache_size} is over 1000000; use 0 to disable the cache").into());
        }
        let cache_max_age_ms = duration("cache_max_age", self.cache_max_age.as_deref(), 5 * MINUTE)?;
        if cache_max_age_ms > HOUR {
            return Err("cache_max_age: at most \"1h\", so revoked keys stop being trusted in time".into());
        }
        let mut forward = Vec::new();
        for (claim, header) in self.forward_claims {
            let header = written_header_name(&format!("forward_claims.{claim}"), &header)?;
            let token_header = match &source {
                Source::Header { name, .. } => name.as_str(),
                Source::Cookie { .. } => "cookie",
            };
            if header == token_header {
                return Err(format!(
                    "forward_claims.{claim}: `{header}` is the header the token is read from; pick another header"
                )
                .into());
            }
            if forward.iter().any(|(_, h)| *h == header) {
                return Err(format!("forward_claims: two claims are forwarded in `{header}`").into());
            }
            forward.push((claim, header));
        }
        Ok(Settings {
            source,
            realm,
            allowed,
            keys,
            rules,
            max_token_bytes,
            cache_size,
            cache_max_age_ms,
            forward,
            strip_token: self.strip_token,
        })
    }
}

struct Durations {
    refresh: Option<String>,
    max_age: Option<String>,
}

fn key_sources(
    jwks: Option<Value>,
    public_keys: Option<Value>,
    hmac_secret: Option<String>,
    jwks_url: Option<String>,
    durations: &Durations,
) -> Result<KeySources, ConfigError> {
    let jwks = match jwks {
        None => None,
        Some(Value::String(text)) => Some(text),
        Some(doc @ Value::Object(_)) => Some(doc.to_string()),
        Some(_) => return Err("jwks: give the JWKS as JSON text (or with config_files = { jwks = \"path\" })".into()),
    };
    let public_keys = match public_keys {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .into_iter()
            .map(|v| match v {
                Value::String(pem) => Ok((None, pem)),
                _ => Err(ConfigError::from("public_keys: every entry must be PEM text")),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Object(map)) => map
            .into_iter()
            .map(|(kid, v)| match v {
                Value::String(pem) => Ok((Some(kid), pem)),
                _ => Err(ConfigError::from(format!("public_keys.{kid}: must be PEM text"))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("public_keys: give a list of PEM keys, or a table of kid = PEM".into()),
    };
    if hmac_secret.as_deref().is_some_and(str::is_empty) {
        return Err("hmac_secret: give the name of a secret granted in [plugin.NAME] grants.secrets".into());
    }
    let remote = match jwks_url {
        None => {
            if durations.refresh.is_some() || durations.max_age.is_some() {
                return Err("jwks_refresh_interval and jwks_max_age apply only with jwks_url".into());
            }
            None
        }
        Some(url) => {
            if !["upstream://", "https://", "http://"].iter().any(|p| url.starts_with(p)) {
                return Err(format!(
                    "jwks_url: `{url}` is not upstream://NAME/path or an http(s) URL of a granted origin"
                )
                .into());
            }
            if let Some(rest) = url.strip_prefix("http://")
                && !loopback(rest)
            {
                return Err(format!(
                    "jwks_url: `{url}` would fetch the keys that verify every token in the clear, and anyone on \
                     the way could put their own in; use https://, or upstream://NAME for an identity provider \
                     on a network you trust (http:// is taken for this machine only)"
                )
                .into());
            }
            let refresh_interval_ms = duration("jwks_refresh_interval", durations.refresh.as_deref(), 30 * SECOND)?;
            if refresh_interval_ms < SECOND {
                return Err("jwks_refresh_interval: at least \"1s\"; it keeps tokens with unknown kids from \
                            making the gateway hammer the identity provider"
                    .into());
            }
            let max_age_ms = duration("jwks_max_age", durations.max_age.as_deref(), 10 * MINUTE)?;
            if max_age_ms < refresh_interval_ms {
                return Err("jwks_max_age must be at least jwks_refresh_interval".into());
            }
            Some(RemoteSettings { url, refresh_interval_ms, max_age_ms })
        }
    };
    if jwks.is_none() && public_keys.is_empty() && hmac_secret.is_none() && remote.is_none() {
        return Err("no keys: give `jwks`, `jwks_url`, `public_keys` or `hmac_secret`".into());
    }
    Ok(KeySources { jwks, public_keys, hmac_secret, remote })
}

fn algorithms(names: &[String]) -> Result<Vec<Algorithm>, ConfigError> {
    if names.is_empty() {
        return Err("algorithms: the list is empty; leave it out to accept what the keys verify".into());
    }
    let mut out = Vec::new();
    for name in names {
        if name.eq_ignore_ascii_case("none") {
            return Err("algorithms: `none` (unsigned tokens) is never accepted; remove it".into());
        }
        let alg = Algorithm::from_jwt(name).ok_or_else(|| {
            ConfigError::from(format!(
                "algorithms: `{name}` is not supported; use RS256/384/512, PS256/384/512, ES256, ES384, EdDSA or \
                 HS256/384/512 (case-sensitive)"
            ))
        })?;
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    Ok(out)
}

fn string_or_list(key: &str, value: Option<Value>) -> Result<Option<Vec<String>>, ConfigError> {
    let list = match value {
        None => return Ok(None),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(ConfigError::from(format!("{key}: every entry must be a string"))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(format!("{key}: give a string or a list of strings").into()),
    };
    if list.is_empty() || list.iter().any(String::is_empty) {
        return Err(format!("{key}: empty; leave it out to accept any {key}").into());
    }
    Ok(Some(list))
}

fn duration(key: &str, text: Option<&str>, default: u64) -> Result<u64, ConfigError> {
    match text {
        None => Ok(default),
        Some(t) => units::parse_duration(t)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .map_err(|e| format!("{key}: {e}").into()),
    }
}

fn is_cookie_name(s: &str) -> bool {
    is_token(s)
}

/// A header this plugin reads or sets, by the gateway's rules (lowercase).
fn header_name(key: &str, name: &str) -> Result<String, ConfigError> {
    wasmgate_sdk::check_header_name(name).map_err(|e| match e {
        EditError::Forbidden(name) => format!("{key}: `{name}` is managed by the gateway; pick another header").into(),
        _ => format!("{key}: `{name}` is not a valid header name").into(),
    })
}

/// [`header_name`] for a header the plugin sets on the request: not one the
/// gateway writes or takes out on the way upstream.
fn written_header_name(key: &str, name: &str) -> Result<String, ConfigError> {
    let name = header_name(key, name)?;
    wasmgate_sdk::check_request_header(&name).map_err(|e| format!("{key}: {e}; pick another header"))?;
    Ok(name)
}

/// Whether a URL's part after `http://` names this machine (`localhost`, a
/// loopback address), where nothing is on the way.
fn loopback(rest: &str) -> bool {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
