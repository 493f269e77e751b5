//! The running gateway: immutable config snapshots (routes, upstreams,
//! configured plugin chains) swapped atomically on reload, the workers that
//! serve them, and the watcher that reloads on a file change.
//!
//! A request takes the snapshot current when it arrives and finishes on it,
//! whatever reloads happen meanwhile. A config that fails to load is refused
//! and logged; the previous snapshot keeps serving.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::{self, Config, ConfigError, OnPluginError, Problems};
use crate::plugin::{ChainLink, EngineLimits, Plugin, Runtime, registry};
use crate::routing::{Rewrite, Router};
use crate::server;
use crate::upstream::Upstream;

/// A route, ready to serve.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub upstream: Arc<Upstream>,
    pub rewrite: Option<Rewrite>,
    pub timeout: Duration,
    pub max_body: u64,
    pub on_plugin_error: OnPluginError,
    pub chain: Vec<ChainLink>,
    pub needs_request_body: bool,
    pub needs_response_body: bool,
    pub has_response_hooks: bool,
}

/// Everything a request needs, fixed for its lifetime.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub config: Config,
    pub router: Router,
    pub routes: Vec<Route>,
    pub upstreams: Vec<Arc<Upstream>>,
    pub plugins: BTreeMap<String, Arc<Plugin>>,
}

/// Builds a snapshot: loads the plugins the routes use and runs each
/// route's config hooks. Unchanged upstreams keep their connection pools.
pub fn build(
    config: Config,
    runtime: &Arc<Runtime>,
    workers: usize,
    previous: Option<&Snapshot>,
    generation: u64,
) -> Result<Snapshot, ConfigError> {
    let mut problems = Problems::new(&config.file, &config.source);
    let upstreams: Vec<Arc<Upstream>> = config
        .upstreams
        .iter()
        .map(|u| {
            previous
                .and_then(|p| p.upstreams.iter().find(|old| old.config == *u))
                .cloned()
                .unwrap_or_else(|| Arc::new(Upstream::new(u, workers)))
        })
        .collect();
    let plugins = load_plugins(&config, runtime, &mut problems);
    let max_idle = config.plugins.max_idle_per_worker;
    let mut routes = Vec::with_capacity(config.routes.len());
    for rc in &config.routes {
        let mut chain = Vec::new();
        for u in &rc.plugins {
            let Some(plugin) = plugins.get(&u.name) else {
                continue;
            };
            match ChainLink::configure(plugin.clone(), u.config_json.clone(), u.key.clone(), workers, max_idle) {
                Ok(link) => chain.push(link),
                Err(message) => problems.at_line(
                    u.line,
                    format!("{}.config", u.key),
                    format!("plugin `{}` refused its config: {message}", u.name),
                    format!("correct the `config` table for `{}` (its README lists the keys)", u.name),
                ),
            }
        }
        let Some(upstream) = upstreams.get(rc.upstream).cloned() else {
            continue;
        };
        routes.push(Route {
            name: Arc::from(rc.name.as_str()),
            upstream,
            rewrite: rc.rewrite.clone(),
            timeout: rc.timeout,
            max_body: rc.max_body,
            on_plugin_error: rc.on_plugin_error,
            needs_request_body: chain.iter().any(|l| l.info.request_body && l.info.on_request),
            needs_response_body: chain.iter().any(|l| l.info.response_body && l.info.on_response),
            has_response_hooks: chain.iter().any(|l| l.info.on_response),
            chain,
        });
    }
    if !problems.is_empty() {
        return Err(problems.into_error());
    }
    let router = Router::new(&config.routes);
    Ok(Snapshot { generation, config, router, routes, upstreams, plugins })
}

/// Loads every plugin a route uses or `[plugin.NAME]` configures.
fn load_plugins(config: &Config, runtime: &Arc<Runtime>, problems: &mut Problems<'_>) -> BTreeMap<String, Arc<Plugin>> {
    let pc = &config.plugins;
    // name → (line, key) of its first mention, for messages.
    let mut wanted: BTreeMap<&str, (Option<usize>, String)> = BTreeMap::new();
    for r in &config.routes {
        for u in &r.plugins {
            wanted.entry(u.name.as_str()).or_insert_with(|| (u.line, format!("{}.use", u.key)));
        }
    }
    for (name, s) in &pc.settings {
        wanted.entry(name.as_str()).or_insert_with(|| (s.line, format!("plugin.{name}")));
    }
    let default_settings = config::PluginSettings {
        isolation: config::Isolation::Pooled,
        file: None,
        sha256: None,
        limits: pc.defaults,
        line: None,
    };
    let mut loaded = BTreeMap::new();
    for (name, (line, key)) in wanted {
        let settings = pc.settings.get(name).unwrap_or(&default_settings);
        if settings.limits.max_memory > runtime.limits().max_memory {
            problems.at_line(
                line,
                format!("plugin.{name}.max_memory"),
                format!(
                    "max_memory {} is above the {} bytes the plugin engine was started with",
                    settings.limits.max_memory,
                    runtime.limits().max_memory
                ),
                "restart the gateway to raise the engine's memory ceiling, or lower max_memory",
            );
            continue;
        }
        let Some(path) = registry::plugin_path(pc.dir.as_deref(), name, settings) else {
            continue;
        };
        match registry::load(runtime, name, &path, settings, &pc.cache_dir, pc.dir.as_deref()) {
            Ok(p) => {
                loaded.insert(name.to_owned(), Arc::new(p));
            }
            Err(e) => problems.at_line(line, key, format!("plugin `{name}`: {}", e.what), e.fix),
        }
    }
    loaded
}

/// State shared by the workers and the control side.
pub struct Shared {
    current: ArcSwap<Snapshot>,
    runtime: Arc<Runtime>,
    config_path: PathBuf,
    workers: usize,
    generation: AtomicU64,
    reload_lock: Mutex<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("config_path", &self.config_path).field("workers", &self.workers).finish()
    }
}

impl Shared {
    /// The snapshot requests should use now.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Re-reads the config file and swaps it in if it loads. Serialised, so
    /// a signal and a file change cannot race.
    pub fn reload(&self) -> Result<u64, ConfigError> {
        let _guard = self.reload_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let config = config::load(&self.config_path)?;
        let previous = self.current();
        warn_static_changes(&previous.config, &config);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot = build(config, &self.runtime, self.workers, Some(&previous), generation)?;
        self.current.store(Arc::new(snapshot));
        tracing::info!(generation, file = %self.config_path.display(), "config reloaded");
        Ok(generation)
    }

    /// Like [`reload`](Self::reload), logging a refused config instead of
    /// returning it.
    pub fn reload_or_log(&self) {
        if let Err(e) = self.reload() {
            tracing::error!("config reload refused; the previous config keeps serving:\n{e}");
        }
    }
}

/// Settings bound at start cannot change on reload; say so rather than
/// pretend they did.
fn warn_static_changes(old: &Config, new: &Config) {
    if old.server.listen != new.server.listen {
        tracing::warn!("server.listen changed; it takes effect at restart");
    }
    if old.server.workers != new.server.workers {
        tracing::warn!("server.workers changed; it takes effect at restart");
    }
    if old.plugins.max_instances != new.plugins.max_instances {
        tracing::warn!("plugins.max_instances changed; it takes effect at restart");
    }
}

/// Why the gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the plugin engine: {0}")]
    Engine(String),
    #[error("cannot start worker threads: {0}")]
    Threads(std::io::Error),
}

/// Loads a config and its plugins exactly as `run` would, without serving.
pub fn check(path: &Path) -> Result<Snapshot, StartError> {
    let config = config::load(path)?;
    let runtime = engine_for(&config)?;
    Ok(build(config, &runtime, 1, None, 0)?)
}

fn engine_for(config: &Config) -> Result<Arc<Runtime>, StartError> {
    Runtime::new(EngineLimits {
        max_instances: config.plugins.max_instances,
        max_memory: config.plugins.max_memory_ceiling,
    })
    .map_err(|e| StartError::Engine(format!("{e:#}")))
}

/// A running gateway. Dropping it shuts it down gracefully.
pub struct Gateway {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    /// Dropping it wakes and stops the watcher.
    watch_stop: Option<std::sync::mpsc::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("addr", &self.addr).finish()
    }
}

impl Gateway {
    /// Loads the config, binds, and starts the workers (and the file
    /// watcher when `server.watch` is on). Returns once it is serving.
    pub fn start(path: impl AsRef<Path>) -> Result<Self, StartError> {
        let path = path.as_ref().to_path_buf();
        let config = config::load(&path)?;
        let runtime = engine_for(&config)?;
        let workers = config.server.workers;
        let listen = config.server.listen;
        let (watch_on, interval) = (config.server.watch, config.server.watch_interval);
        let snapshot = build(config, &runtime, workers, None, 0)?;
        let (listeners, addr) =
            server::bind(listen, workers).map_err(|source| StartError::Bind { addr: listen, source })?;
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(snapshot),
            runtime,
            config_path: path,
            workers,
            generation: AtomicU64::new(0),
            reload_lock: Mutex::new(()),
        });
        let (tx, rx) = watch::channel(false);
        let mut threads = server::spawn_workers(&shared, listeners, &rx).map_err(StartError::Threads)?;
        let mut watch_stop = None;
        if watch_on {
            let (stop_tx, stop_rx) = std::sync::mpsc::channel();
            threads.push(spawn_watcher(shared.clone(), interval, stop_rx).map_err(StartError::Threads)?);
            watch_stop = Some(stop_tx);
        }
        tracing::info!(%addr, workers, "wasmgate listening");
        Ok(Self { shared, addr, shutdown: tx, watch_stop, threads })
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Reloads the config file now (what SIGHUP does).
    pub fn reload(&self) -> Result<u64, ConfigError> {
        self.shared.reload()
    }

    /// The generation of the snapshot serving now (0 at start, +1 per reload).
    pub fn generation(&self) -> u64 {
        self.shared.current().generation
    }

    /// Stops accepting, lets in-flight requests finish (up to the shutdown
    /// timeout), and waits for the workers.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        self.watch_stop.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the watcher compares: the config file's content and each plugin
/// file's size and modification time.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    config: Option<Vec<u8>>,
    plugins: HashMap<PathBuf, (u64, Option<SystemTime>)>,
}

fn fingerprint(shared: &Shared) -> Fingerprint {
    let config = std::fs::read(&shared.config_path).ok();
    let snapshot = shared.current();
    let mut plugins = HashMap::new();
    let mut files: Vec<PathBuf> = snapshot.plugins.values().map(|p| p.path.clone()).collect();
    if let Some(dir) = &snapshot.config.plugins.dir {
        files.extend(registry::available(dir).into_iter().map(|n| dir.join(format!("{n}.wasm"))));
    }
    for f in files {
        let meta = std::fs::metadata(&f).ok();
        plugins.insert(f, (meta.as_ref().map_or(0, |m| m.len()), meta.and_then(|m| m.modified().ok())));
    }
    Fingerprint { config, plugins }
}

fn spawn_watcher(
    shared: Arc<Shared>,
    interval: Duration,
    stop: std::sync::mpsc::Receiver<()>,
) -> std::io::Result<JoinHandle<()>> {
    use std::sync::mpsc::RecvTimeoutError;
    // Taken now, not in the thread: a change made right after `start`
    // returns must count as a change.
    let mut last = fingerprint(&shared);
    std::thread::Builder::new().name("wasmgate-watch".into()).spawn(move || {
        loop {
            match stop.recv_timeout(interval) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = fingerprint(&shared);
            if now != last {
                tracing::info!("config or plugin files changed; reloading");
                shared.reload_or_log();
                // Re-read after the reload: it may have changed what to watch.
                last = fingerprint(&shared);
            }
        }
    })
}
