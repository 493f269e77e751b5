//! The route's `config` table, and the checks that turn it into what the
//! plugin runs with.

use schemars::JsonSchema;
use serde::Deserialize;
use wasmgate_sdk::ConfigError;
use wasmgate_sdk::units::{self, ByteSize};

use crate::key::Part;
use crate::{MAX_TTL_MS, MAX_VALUE_BYTES};

/// The route's `config` table.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Freshness for responses that give none (default "60s").
    #[serde(default = "default_ttl")]
    ttl: String,
    /// What makes two requests the same (default host, path, query).
    #[serde(default = "default_key")]
    key: Vec<String>,
    /// Statuses that may be stored.
    #[serde(default = "default_statuses")]
    statuses: Vec<u16>,
    /// Largest body stored (default "1MiB").
    #[serde(default = "default_max_body")]
    max_body: ByteSize,
    /// Whether a client's `no-cache`, `max-age` (or `Pragma: no-cache`)
    /// may pass over the stored answer and refresh it (default false).
    #[serde(default)]
    client_refresh: bool,
}

fn default_ttl() -> String {
    "60s".into()
}

fn default_key() -> Vec<String> {
    vec!["host".into(), "path".into(), "query".into()]
}

fn default_statuses() -> Vec<u16> {
    vec![200, 203, 204, 300, 301, 404, 410]
}

fn default_max_body() -> ByteSize {
    ByteSize(MAX_VALUE_BYTES as u64)
}

/// The checked config.
#[derive(Debug)]
pub struct Built {
    pub ttl_s: u64,
    pub parts: Vec<Part>,
    pub statuses: Vec<u16>,
    pub max_body: usize,
    pub client_refresh: bool,
}

impl Config {
    pub fn build(self) -> Result<Built, ConfigError> {
        let ttl = units::parse_duration(&self.ttl).map_err(|e| ConfigError::from(format!("ttl: {e}")))?;
        if ttl.subsec_nanos() != 0 {
            return Err(format!(
                "ttl: `{}` is not whole seconds (freshness and `Age` are counted in seconds); use \"1s\" or more, \
                 or \"0s\" to cache only responses that state their freshness",
                self.ttl
            )
            .into());
        }
        if ttl.as_millis() > u128::from(MAX_TTL_MS) {
            return Err(format!("ttl: `{}` is over the store's limit of 30 days", self.ttl).into());
        }
        if self.key.is_empty() {
            return Err("key is empty; the default is [\"host\", \"path\", \"query\"]".into());
        }
        let mut parts = Vec::with_capacity(self.key.len());
        for text in &self.key {
            let part = Part::parse(text).map_err(|e| ConfigError::from(format!("key: {e}")))?;
            if parts.contains(&part) {
                return Err(format!("key: `{text}` is listed twice").into());
            }
            parts.push(part);
        }
        if !parts.contains(&Part::Path) {
            return Err("key must include \"path\": without it every path of the route shares one entry".into());
        }
        for &s in &self.statuses {
            let why = match s {
                206 => Some("range requests bypass the cache, so partial content is never stored"),
                304 => Some("a 304 has no body to replay"),
                200..=599 => None,
                _ => Some("only final statuses 200..=599 can be stored"),
            };
            if let Some(why) = why {
                return Err(format!("statuses: {s} cannot be cached: {why}").into());
            }
        }
        if self.max_body.0 > MAX_VALUE_BYTES as u64 {
            return Err(format!(
                "max_body: {} bytes is over the store's 1 MiB value limit (headers included); use at most \"1MiB\"",
                self.max_body.0
            )
            .into());
        }
        Ok(Built {
            ttl_s: ttl.as_secs(),
            parts,
            statuses: self.statuses,
            max_body: usize::try_from(self.max_body.0).unwrap_or(usize::MAX),
            client_refresh: self.client_refresh,
        })
    }
}
