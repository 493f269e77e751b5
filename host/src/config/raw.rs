//! The config file exactly as written: serde types that refuse unknown keys.
//! Nothing here is checked beyond its type; [`super::build`] turns it into
//! the validated [`super::Config`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::units::{ByteSize, HumanDuration};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    #[serde(default)]
    pub plugins: Option<RawPlugins>,
    #[serde(default)]
    pub plugin: BTreeMap<String, Spanned<RawPluginSettings>>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Spanned<RawUpstream>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Spanned<String>,
    pub workers: Option<Spanned<usize>>,
    pub max_header_bytes: Option<ByteSize>,
    pub max_headers: Option<usize>,
    pub max_body: Option<ByteSize>,
    pub header_read_timeout: Option<HumanDuration>,
    pub request_timeout: Option<HumanDuration>,
    pub shutdown_timeout: Option<HumanDuration>,
    pub watch: Option<bool>,
    pub watch_interval: Option<HumanDuration>,
    pub via: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugins {
    pub dir: Spanned<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub deadline: Option<HumanDuration>,
    pub max_memory: Option<ByteSize>,
    pub recycle_after: Option<u64>,
    pub max_idle_per_worker: Option<usize>,
    pub max_instances: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPluginSettings {
    pub isolation: Option<Isolation>,
    pub file: Option<PathBuf>,
    pub sha256: Option<String>,
    pub deadline: Option<HumanDuration>,
    pub max_memory: Option<ByteSize>,
    pub recycle_after: Option<u64>,
}

/// How a plugin's instances are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Warm, configured instances per worker, reused across requests.
    #[default]
    Pooled,
    /// A fresh instance for every request.
    PerRequest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub endpoints: Vec<Spanned<String>>,
    pub connect_timeout: Option<HumanDuration>,
    pub request_timeout: Option<HumanDuration>,
    pub idle_timeout: Option<HumanDuration>,
    pub max_idle_per_endpoint: Option<usize>,
    pub balance: Option<Balance>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    #[default]
    RoundRobin,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<Spanned<String>>,
    #[serde(rename = "match")]
    pub matcher: Option<Spanned<RawMatch>>,
    pub upstream: Spanned<String>,
    pub strip_prefix: Option<Spanned<String>>,
    pub rewrite: Option<Spanned<String>>,
    pub timeout: Option<HumanDuration>,
    pub max_body: Option<ByteSize>,
    #[serde(default)]
    pub on_plugin_error: OnPluginError,
    #[serde(default)]
    pub plugins: Vec<Spanned<RawPluginUse>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub host: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub methods: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// What a route does when one of its plugins fails (trap, deadline, memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnPluginError {
    /// Answer 500 with the request id.
    #[default]
    FailClosed,
    /// Skip the failed plugin and go on.
    FailOpen,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPluginUse {
    #[serde(rename = "use")]
    pub name: Spanned<String>,
    #[serde(default)]
    pub config: Option<Spanned<toml::Table>>,
}
