//! `[plugins]` (where plugins come from, default limits) and `[plugin.NAME]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{self, Problems};
use super::raw::{self, Isolation};
use super::span;

/// Where plugins come from and the limits they run under.
#[derive(Debug, Clone)]
pub struct PluginsConfig {
    /// `None` when the file has no `[plugins]` table (then no route may use one).
    pub dir: Option<PathBuf>,
    pub cache_dir: PathBuf,
    pub max_instances: u32,
    pub max_idle_per_worker: usize,
    /// Largest `max_memory` of any plugin: the pooling allocator's slot size.
    pub max_memory_ceiling: u64,
    pub defaults: PluginLimits,
    pub settings: BTreeMap<String, PluginSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    pub deadline: Duration,
    pub max_memory: u64,
    pub recycle_after: u64,
}

/// Per-plugin settings (`[plugin.NAME]`), defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSettings {
    pub isolation: Isolation,
    pub file: Option<PathBuf>,
    pub sha256: Option<[u8; 32]>,
    pub limits: PluginLimits,
    pub line: Option<usize>,
}

fn default_cache_dir(base: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("wasmgate");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache").join("wasmgate");
    }
    base.join(".wasmgate").join("cache")
}

pub(super) fn build_plugins(raw: &raw::RawConfig, base: &Path, p: &mut Problems<'_>) -> Option<PluginsConfig> {
    let rp = raw.plugins.as_ref();
    let defaults = PluginLimits {
        deadline: rp.and_then(|r| r.deadline).map_or(Duration::from_millis(100), |d| d.0),
        max_memory: rp.and_then(|r| r.max_memory).map_or(64 << 20, |s| s.0),
        recycle_after: rp.and_then(|r| r.recycle_after).unwrap_or(10_000),
    };
    let mut ok = check_limits("plugins", &defaults, None, p);
    let mut settings = BTreeMap::new();
    for (name, s) in &raw.plugin {
        let key = format!("plugin.{name}");
        let r = s.get_ref();
        let limits = PluginLimits {
            deadline: r.deadline.map_or(defaults.deadline, |d| d.0),
            max_memory: r.max_memory.map_or(defaults.max_memory, |m| m.0),
            recycle_after: r.recycle_after.unwrap_or(defaults.recycle_after),
        };
        ok &= check_limits(&key, &limits, span(s), p);
        let sha256 = match &r.sha256 {
            None => None,
            Some(hex_digest) => match parse_sha256(hex_digest) {
                Some(d) => Some(d),
                None => {
                    p.at(
                        span(s),
                        format!("{key}.sha256"),
                        format!("`{hex_digest}` is not a sha256 digest"),
                        "write 64 hex digits, as printed by `sha256sum plugin.wasm`",
                    );
                    ok = false;
                    None
                }
            },
        };
        let line = Some(error::line_of(p.source(), s.span().start));
        settings.insert(
            name.clone(),
            PluginSettings {
                isolation: r.isolation.unwrap_or_default(),
                file: r.file.as_ref().map(|f| base.join(f)),
                sha256,
                limits,
                line,
            },
        );
    }
    let max_memory_ceiling = settings
        .values()
        .map(|s| s.limits.max_memory)
        .chain([defaults.max_memory])
        .max()
        .unwrap_or(defaults.max_memory);
    let config = PluginsConfig {
        dir: rp.map(|r| base.join(r.dir.get_ref())),
        cache_dir: rp.and_then(|r| r.cache_dir.as_ref()).map_or_else(|| default_cache_dir(base), |d| base.join(d)),
        max_instances: rp.and_then(|r| r.max_instances).unwrap_or(1000).max(1),
        max_idle_per_worker: rp.and_then(|r| r.max_idle_per_worker).unwrap_or(64),
        max_memory_ceiling,
        defaults,
        settings,
    };
    ok.then_some(config)
}

fn check_limits(key: &str, l: &PluginLimits, at: Option<std::ops::Range<usize>>, p: &mut Problems<'_>) -> bool {
    let mut ok = true;
    if l.deadline.is_zero() || l.deadline > Duration::from_secs(60) {
        p.at(at.clone(), format!("{key}.deadline"), "deadline must be between 1ms and 60s", "e.g. deadline = \"50ms\"");
        ok = false;
    }
    if l.max_memory < (1 << 20) || l.max_memory > (4 << 30) {
        p.at(
            at.clone(),
            format!("{key}.max_memory"),
            "max_memory must be between 1MiB and 4GiB",
            "e.g. max_memory = \"64MiB\"",
        );
        ok = false;
    }
    if l.recycle_after == 0 {
        p.at(at, format!("{key}.recycle_after"), "recycle_after must be at least 1", "e.g. recycle_after = 10000");
        ok = false;
    }
    ok
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let text = text.strip_prefix("sha256:").unwrap_or(text);
    let bytes = hex::decode(text).ok()?;
    bytes.try_into().ok()
}
