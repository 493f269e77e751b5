//! The route's `config` table, and the checks that turn it into what the
//! plugin runs with.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use wasmgate_sdk::ConfigError;

use crate::key::Part;
use crate::{MAX_TTL_MS, MAX_VALUE_BYTES};

/// The route's `config` table.
#[derive(Debug, Deserialize)]
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
    max_body: Size,
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

fn default_max_body() -> Size {
    Size(MAX_VALUE_BYTES as u64)
}

/// The checked config.
#[derive(Debug)]
pub struct Built {
    pub ttl_s: u64,
    pub parts: Vec<Part>,
    pub statuses: Vec<u16>,
    pub max_body: usize,
}

impl Config {
    pub fn build(self) -> Result<Built, ConfigError> {
        let ttl = humantime::parse_duration(self.ttl.trim()).map_err(|e| {
            ConfigError::from(format!("ttl: `{}` is not a duration ({e}); write it like \"60s\" or \"5m\"", self.ttl))
        })?;
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
        })
    }
}

/// A byte size written as a number of bytes or "64KiB", "1MiB", "100KB" —
/// the gateway's own size syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64KiB\", \"1MiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v).map(Size).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a size; write it like \"64KiB\" or 65536"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        other => return Err(format!("`{text}`: unknown unit `{other}`; use B, KB, KiB, MB or MiB")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("100KB"), Ok(100_000));
        assert_eq!(parse_size(" 7 "), Ok(7));
        assert!(parse_size("1GiB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999999MiB").is_err());
    }
}
