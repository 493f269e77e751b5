//! The running gateway: immutable config snapshots (routes, upstreams,
//! configured plugin chains) swapped atomically on reload, the workers that
//! serve them, the watcher that reloads on a file change, and [`run`],
//! which is `wasmgate run` (signals; one worker on the calling thread).
//!
//! A request takes the snapshot current when it arrives and finishes on it,
//! whatever reloads happen meanwhile. A config that fails to load is refused
//! and logged; the previous snapshot keeps serving.

mod snapshot;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

pub use self::snapshot::{Env, Route, Snapshot, build};
use crate::config::{self, Config, ConfigError};
use crate::control::Control;
use crate::plugin::caps::store::StoreBackend;
use crate::plugin::{EngineLimits, Runtime, registry};
use crate::server;
use crate::telemetry::{AccessLogWriter, Metrics};

/// State shared by the workers and the control side.
pub struct Shared {
    current: ArcSwap<Snapshot>,
    env: Env,
    source: config::Source,
    generation: AtomicU64,
    reload_lock: Mutex<()>,
    ready: AtomicBool,
    /// Each worker's last heartbeat, in seconds since `epoch`
    /// ([`Shared::beat`]): a worker that stops beating is stalled.
    beats: Box<[AtomicU64]>,
    epoch: std::time::Instant,
}

/// How long a worker may go without beating before `/health/live` says the
/// gateway is stalled (its event loop blocked: nothing it does waits this
/// long on its thread).
const STALLED_AFTER_SECS: u64 = 10;

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("source", &self.source).field("workers", &self.env.workers).finish()
    }
}

impl Shared {
    /// The snapshot requests should use now.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Re-reads the config (its file, or the store) and swaps it in if it loads. Serialised, so
    /// a signal and a file change cannot race.
    pub fn reload(&self) -> Result<u64, ConfigError> {
        self.reload_naming().map_err(|(e, _)| e)
    }

    /// Forgets the compiled plugins the config in force does not use: in
    /// memory, and in the compile cache once old
    /// ([`CACHE_KEEP`](crate::plugin::engine::CACHE_KEEP)); and so the
    /// pulled ones' blobs.
    fn forget_unused(&self) {
        let current = self.current();
        let in_use: HashSet<[u8; 32]> = current.plugins.values().map(|p| p.sha256).collect();
        self.env.runtime.keep_compiled(&in_use);
        let cache_dir = &current.config.plugins.cache_dir;
        self.env.runtime.prune_cache(cache_dir, &in_use);
        let pulled: HashSet<[u8; 32]> = current.plugins.values().flat_map(|p| p.kept.blobs.iter().copied()).collect();
        crate::oci::prune(cache_dir, &pulled);
    }

    /// [`reload`](Self::reload); a refusal comes with the files the refused
    /// config names (none when it did not parse), for the watcher to watch.
    fn reload_naming(&self) -> Result<u64, (ConfigError, Vec<PathBuf>)> {
        let _guard = self.reload_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let result = (|| {
            let previous = self.current();
            let up = |up| self.env.metrics.config_source_up(up);
            let config = self.source.load_again(&previous.config, up).map_err(|e| (e, Vec::new()))?;
            let named: Vec<PathBuf> = config.files().into_iter().map(Path::to_path_buf).collect();
            if let Err(e) = refuse_removed_listeners(&previous.config, &config) {
                return Err((e, named));
            }
            warn_static_changes(&previous.config, &config);
            previous.drop_idle_instances();
            let generation = self.generation.load(Ordering::Relaxed) + 1;
            let snapshot = build(config, &self.env, Some(&previous), generation).map_err(|e| (e, named))?;
            self.generation.store(generation, Ordering::Relaxed);
            self.current.store(Arc::new(snapshot));
            previous.retire(&self.current());
            if !previous.store.is(&self.current().store) {
                tracing::info!("[store] changed: new connections to Redis for the new config");
            }
            self.current().start();
            Ok(generation)
        })();
        // Whether it was taken or not: a refused one may have compiled some,
        // and made series for its endpoints.
        self.forget_unused();
        self.env.metrics.forget_unheld_endpoints();
        self.env.metrics.reloads(result.is_ok());
        if let Ok(generation) = result {
            self.env.metrics.set_config_generation(generation);
            self.source.served(&self.current().config);
            tracing::info!(generation, source = %self.source.name(), "config reloaded");
        }
        result
    }

    /// Ready once the config and its plugins are loaded and the workers
    /// accept (`/health/ready`).
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.env.metrics
    }

    /// A heartbeat of the worker on this thread (every second, from its
    /// event loop).
    pub(crate) fn beat(&self) {
        let i = crate::worker::index() % self.beats.len();
        self.beats[i].store(self.epoch.elapsed().as_secs(), Ordering::Relaxed);
    }

    /// Whether every worker's event loop has run lately (`/health/live`);
    /// while starting or draining (not ready), yes.
    pub fn live(&self) -> bool {
        let now = self.epoch.elapsed().as_secs();
        !self.ready() || all_beating(self.beats.iter().map(|b| b.load(Ordering::Relaxed)), now)
    }

    /// Like [`reload`](Self::reload), logging a refused config instead of
    /// returning it; a refusal returns the files the refused config names.
    pub fn reload_or_log(&self) -> Result<(), Vec<PathBuf>> {
        self.reload_naming().map(drop).map_err(|(e, named)| {
            tracing::error!("config reload refused; the previous config keeps serving:\n{e}");
            named
        })
    }
}

/// A listener bound at start stays bound until a restart: a reload that
/// drops its table is refused rather than leave it serving (the plain one)
/// or accepting and dropping every connection (the TLS one, with no
/// certificates left).
fn refuse_removed_listeners(old: &Config, new: &Config) -> Result<(), ConfigError> {
    let removed = if old.server.tls.is_some() && new.server.tls.is_none() {
        Some(("server.tls", "[server.tls]"))
    } else if old.server.listen.is_some() && new.server.listen.is_none() {
        Some(("server.listen", "server.listen"))
    } else {
        None
    };
    match removed {
        None => Ok(()),
        Some((key, what)) => Err(ConfigError::single(config::Problem {
            file: new.file.clone(),
            line: None,
            key: key.to_owned(),
            what: format!("{what} was removed, but a listener is only closed at restart"),
            fix: format!("restart the gateway to remove it, or keep {what}"),
        })),
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
    if old.server.tls.as_ref().map(|t| t.listen) != new.server.tls.as_ref().map(|t| t.listen) {
        tracing::warn!("server.tls.listen changed; it takes effect at restart (certificates reload)");
    }
    if old.admin != new.admin {
        tracing::warn!("[admin] changed; it takes effect at restart");
    }
    if (old.server.watch, old.server.watch_interval) != (new.server.watch, new.server.watch_interval) {
        tracing::warn!("server.watch or watch_interval changed; they take effect at restart");
    }
    if old.server.access_log != new.server.access_log {
        tracing::warn!("server.access_log changed; it takes effect at restart");
    }
}

impl crate::admin::AdminState for Shared {
    fn ready(&self) -> bool {
        Shared::ready(self)
    }

    fn live(&self) -> bool {
        Shared::live(self)
    }

    fn metrics(&self) -> String {
        for upstream in self.current().all_upstreams() {
            upstream.report_ejections();
        }
        self.env.metrics.encode()
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
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
}

/// `wasmgate run`: serves the config from `source` until SIGTERM or SIGINT,
/// then drains in-flight requests; SIGHUP reloads it (on a thread of its
/// own while it runs: compiling plugins takes a while).
///
/// With one worker (`server.workers = 1`) the worker, the control work and
/// the signals all run on the calling thread (see `control.rs`): the
/// process has no other thread unless the file watcher (`server.watch`),
/// the access log, loaded plugins (their deadline ticker) or a reload in
/// progress make one. With more, each worker has a thread, and the
/// control runtime its own.
pub fn run(source: config::Source) -> Result<(), StartError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StartError::Threads)?;
    let rt = std::rc::Rc::new(rt);
    // Before anything slow (plugins compiled, names resolved): a SIGHUP
    // meanwhile reloads once the gateway serves — its default action (a
    // `systemctl reload`, a certificate renewal hook) ended the process.
    // SIGTERM and SIGINT keep theirs until then: a start can be stopped.
    let hup = {
        let _in = rt.enter();
        listen(tokio::signal::unix::SignalKind::hangup())?
    };
    let config = source.load_at_start()?;
    // Caught once the gateway serves, not before: a start can be stopped.
    let stops = || {
        use tokio::signal::unix::SignalKind;
        let _in = rt.enter();
        Ok::<_, StartError>((listen(SignalKind::terminate())?, listen(SignalKind::interrupt())?))
    };
    if config.server.workers > 1 {
        let gateway = Gateway::start_threads(source, config)?;
        let mut stopped = gateway.shutdown.subscribe();
        let (mut term, mut int) = stops()?;
        let outcome = rt.block_on(until_signalled(&gateway, hup, (&mut term, &mut int), async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }));
        // The drain, which a further signal cuts short.
        rt.block_on(async move {
            let drain = tokio::task::spawn_blocking(move || gateway.shutdown());
            tokio::select! {
                _ = drain => {}
                _ = term.recv() => exit_now(),
                _ = int.recv() => exit_now(),
            }
        });
        return outcome;
    }
    let handle = rt.handle().clone();
    let (gateway, serve) = crate::control::before_driving(&rt, || {
        crate::worker::set_index(0);
        Gateway::start_here(source, config, &handle)
    })?;
    let (mut term, mut int) = stops()?;
    let outcome = rt.block_on(until_signalled(&gateway, hup, (&mut term, &mut int), serve));
    // Joining the watcher may wait for a reload, which may wait for
    // control work: the runtime goes on meanwhile.
    rt.block_on(async move {
        let _ = tokio::task::spawn_blocking(move || drop(gateway)).await;
    });
    outcome
}

/// Catches `kind` from now on (needs a runtime entered).
fn listen(kind: tokio::signal::unix::SignalKind) -> Result<tokio::signal::unix::Signal, StartError> {
    tokio::signal::unix::signal(kind).map_err(StartError::Signals)
}

/// A signal during the drain: the operator will not wait for it (a second
/// Ctrl-C), so the process ends now, requests in flight and all.
fn exit_now() -> ! {
    tracing::warn!("another signal during the drain: exiting without waiting for the requests in flight");
    std::process::exit(1)
}

/// Handles signals until `serve` (which ends once shutdown is asked and the
/// in-flight requests are done) ends; `hup` was caught since before the
/// start, `stops` (SIGTERM, SIGINT) too. A stop signal once the drain has
/// begun ends the process at once.
async fn until_signalled(
    gateway: &Gateway,
    mut hup: tokio::signal::unix::Signal,
    stops: (&mut tokio::signal::unix::Signal, &mut tokio::signal::unix::Signal),
    serve: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let (term, int) = stops;
    let mut serve = std::pin::pin!(serve);
    // While `server.shutdown_delay` runs: when it ends.
    let mut delayed: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        let delay = async {
            match delayed.as_mut() {
                Some(until) => until.await,
                None => std::future::pending().await,
            }
        };
        let stop = tokio::select! {
            () = serve.as_mut() => return Ok(()),
            () = delay => true,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                let shared = gateway.shared.clone();
                // Not waited for here: this thread may be the one serving.
                drop(tokio::task::spawn_blocking(move || shared.reload_or_log()));
                false
            }
            _ = term.recv() => gateway.stop_signal(&mut delayed),
            _ = int.recv() => gateway.stop_signal(&mut delayed),
        };
        if stop {
            delayed = None;
            gateway.begin_shutdown();
        }
    }
}

/// Whether every heartbeat (seconds since the epoch) is within
/// [`STALLED_AFTER_SECS`] of `now`.
fn all_beating(beats: impl IntoIterator<Item = u64>, now: u64) -> bool {
    beats.into_iter().all(|at| now.saturating_sub(at) < STALLED_AFTER_SECS)
}

/// Drops expired entries of the in-process store now and then (reads skip
/// them anyway; this bounds the memory they hold).
async fn sweep(store: StoreBackend) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        store.sweep();
    }
}

/// Loads a config file and its plugins exactly as `run` would, without
/// serving.
pub fn check(path: &Path) -> Result<Snapshot, StartError> {
    check_source(&config::Source::from(path))
}

/// [`check`] with the config from `source` (a file, or a store).
pub fn check_source(source: &config::Source) -> Result<Snapshot, StartError> {
    check_config(source.load()?)
}

/// Loads a config's plugins exactly as `run` would, without serving.
pub fn check_config(config: Config) -> Result<Snapshot, StartError> {
    let control = Control::start().map_err(StartError::Threads)?;
    let env = Env {
        runtime: engine_for(&config)?,
        metrics: Arc::new(Metrics::new()),
        control: control.handle.clone(),
        workers: 1,
        access_log: None,
    };
    Ok(build(config, &env, None, 0)?)
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
    addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    control: Option<Control>,
    shutdown: watch::Sender<bool>,
    /// Stops the admin listener, once the workers are done.
    admin_stop: watch::Sender<bool>,
    /// Ends (its sender dropped) when the admin listener has drained.
    admin_done: Option<std::sync::mpsc::Receiver<()>>,
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
    /// watcher when `server.watch` is on), each on a thread of its own, and
    /// the control runtime on threads of its own. Returns once it is
    /// serving.
    pub fn start(path: impl AsRef<Path>) -> Result<Self, StartError> {
        Self::start_from(config::Source::from(path.as_ref()))
    }

    /// [`start`](Self::start) with the config from `source` (a file, or a
    /// store: see [`Source`](config::Source)).
    pub fn start_from(source: config::Source) -> Result<Self, StartError> {
        let config = source.load_at_start()?;
        Self::start_threads(source, config)
    }

    fn start_threads(source: config::Source, config: Config) -> Result<Self, StartError> {
        let control = Control::start().map_err(StartError::Threads)?;
        let (mut gateway, listeners) = Self::assemble(source, config, &control.handle)?;
        gateway.control = Some(control);
        let workers = server::spawn_workers(&gateway.shared, listeners, &gateway.shutdown.subscribe());
        gateway.threads.extend(workers.map_err(StartError::Threads)?);
        gateway.serving();
        Ok(gateway)
    }

    /// Like [`start`](Self::start) for a config of one worker, with the
    /// worker and the control work on `control`, a runtime the caller
    /// drives: the future serves until shutdown.
    fn start_here(
        source: config::Source,
        config: Config,
        control: &tokio::runtime::Handle,
    ) -> Result<(Self, impl Future<Output = ()> + use<>), StartError> {
        let (gateway, listeners) = Self::assemble(source, config, control)?;
        let Some(listeners) = listeners.into_iter().next() else {
            return Err(StartError::Threads(std::io::Error::other("no listening socket for the worker")));
        };
        let serve = server::run(gateway.shared.clone(), listeners, gateway.shutdown.subscribe());
        gateway.serving();
        Ok((gateway, serve))
    }

    /// Everything but the workers: the snapshot, the listening sockets (one
    /// set per worker), the admin listener and the watcher.
    fn assemble(
        source: config::Source,
        config: Config,
        control: &tokio::runtime::Handle,
    ) -> Result<(Self, Vec<server::WorkerListeners>), StartError> {
        let workers = config.server.workers;
        let listen = config.server.listen;
        if let (Some(plain), Some(tls)) = (listen, &config.server.tls)
            && tls.client_ca.is_some()
            && tls.client_auth == config::ClientAuth::Required
            && !plain.ip().is_loopback()
        {
            tracing::warn!(
                %plain,
                "server.listen serves every route without a client certificate, beside a TLS listener that \
                 requires one: leave server.listen out to serve only over TLS"
            );
        }
        let tls_listen = config.server.tls.as_ref().map(|t| t.listen);
        let admin = config.admin.clone();
        let (watch_on, interval) = (config.server.watch, config.server.watch_interval);
        let env = Env {
            runtime: engine_for(&config)?,
            metrics: Arc::new(Metrics::new()),
            control: control.clone(),
            workers,
            access_log: config.server.access_log.then(AccessLogWriter::stdout),
        };
        env.runtime.report_tick(env.metrics.plugin_clock_tick());
        env.metrics.config_source_up(source.found_at_start());
        let snapshot = build(config, &env, None, 0)?;
        // The in-memory store lasts as long as the process (a reload keeps
        // it); Redis expires its own keys.
        if !snapshot.store.is_remote() {
            control.spawn(sweep(snapshot.store.clone()));
        }
        // A set of sockets, one a worker, for each listener configured.
        let bind = |addr: Option<SocketAddr>| match addr {
            Some(addr) => {
                let (ls, a) = server::bind(addr, workers).map_err(|source| StartError::Bind { addr, source })?;
                Ok::<_, StartError>((ls.into_iter().map(Some).collect::<Vec<_>>(), Some(a)))
            }
            None => Ok(((0..workers).map(|_| None).collect(), None)),
        };
        let (plain, addr) = bind(listen)?;
        let (tls, tls_addr) = bind(tls_listen)?;
        snapshot.start();
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(snapshot),
            env,
            source,
            generation: AtomicU64::new(0),
            reload_lock: Mutex::new(()),
            ready: AtomicBool::new(false),
            beats: (0..workers.max(1)).map(|_| AtomicU64::new(0)).collect(),
            epoch: std::time::Instant::now(),
        });
        let (shutdown, _) = watch::channel(false);
        // The admin listener outlasts the drain: probes see 503 meanwhile,
        // and the last metrics can be read.
        let (admin_stop, stopped) = watch::channel(false);
        let (admin_addr, admin_done) = match admin {
            Some(a) => {
                let (addr, done) = crate::admin::start(control, a, shared.clone(), stopped)?;
                (Some(addr), Some(done))
            }
            None => (None, None),
        };
        let mut gateway = Self {
            shared,
            addr,
            tls_addr,
            admin_addr,
            control: None,
            shutdown,
            admin_stop,
            admin_done,
            watch_stop: None,
            threads: Vec::new(),
        };
        if watch_on {
            let (stop_tx, stop_rx) = std::sync::mpsc::channel();
            let watcher = spawn_watcher(gateway.shared.clone(), interval, stop_rx).map_err(StartError::Threads)?;
            gateway.threads.push(watcher);
            gateway.watch_stop = Some(stop_tx);
        }
        Ok((gateway, plain.into_iter().zip(tls).collect()))
    }

    /// Marks it ready (`/health/ready`) and says where it listens.
    fn serving(&self) {
        self.shared.forget_unused();
        self.shared.source.served(&self.shared.current().config);
        self.shared.ready.store(true, Ordering::Relaxed);
        let workers = self.shared.env.workers;
        let (addr, tls, admin) = (self.addr, self.tls_addr, self.admin_addr);
        tracing::info!(?addr, ?tls, ?admin, workers, "wasmgate listening");
    }

    /// The TLS listener's address, when `[server.tls]` is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The admin listener's address, when `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The plain listener's address, unless it serves only over TLS.
    pub fn addr(&self) -> Option<SocketAddr> {
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

    /// What a SIGTERM or SIGINT does: whether the drain begins now (not
    /// during `server.shutdown_delay`); once it has, the process ends.
    fn stop_signal(&self, delayed: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) -> bool {
        if *self.shutdown.borrow() {
            exit_now();
        }
        delayed.is_some() || !self.delay_shutdown(delayed)
    }

    /// On a first SIGTERM or SIGINT with a `server.shutdown_delay`: out of
    /// rotation (`/health/ready` answers 503) while serving on as before
    /// until `delayed` ends. Returns whether there is a delay (without, or
    /// on a second signal, the shutdown begins at once).
    fn delay_shutdown(&self, delayed: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) -> bool {
        let delay = self.shared.current().config.server.shutdown_delay;
        if delay.is_zero() || *self.shutdown.borrow() {
            return false;
        }
        self.shared.ready.store(false, Ordering::Relaxed);
        tracing::info!(
            delay = %humantime::format_duration(delay),
            "shutting down after server.shutdown_delay: not ready meanwhile; a second signal starts the drain at once"
        );
        *delayed = Some(Box::pin(tokio::time::sleep(delay)));
        true
    }

    /// Stops accepting and tells the connections to finish (each closes
    /// once idle, or after the response in flight).
    fn begin_shutdown(&self) {
        self.shared.ready.store(false, Ordering::Relaxed);
        if !self.shutdown.send_replace(true) {
            tracing::info!("shutting down: draining in-flight requests");
        }
    }

    fn stop(&mut self) {
        self.begin_shutdown();
        self.watch_stop.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.admin_stop.send_replace(true);
        // Its requests in flight (a last scrape) finish before the control
        // runtime, which runs it, goes.
        if let Some(done) = self.admin_done.take() {
            let _ = done.recv_timeout(crate::admin::DRAIN_TIMEOUT + Duration::from_secs(1));
        }
        // Last: the workers' in-flight requests may still have needed it.
        self.control.take();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the watcher compares: the config's text (the file's, or the
/// store's), and the size and modification time of each plugin file and
/// each file the config names ([`Config::files`](crate::config::Config::files)).
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    config: Option<Vec<u8>>,
    files: HashMap<PathBuf, Stamp>,
}

/// The files to watch as they are now: the plugins', those the config in
/// force names, and `extra` (those a refused config names).
fn watched(shared: &Shared, extra: &[PathBuf]) -> HashMap<PathBuf, Stamp> {
    let snapshot = shared.current();
    // A pulled plugin's file is the cache's, named by its digest (and
    // marked in use at every load, which a watch would take for a change).
    let mut paths: Vec<PathBuf> =
        snapshot.plugins.values().filter(|p| p.settings.oci.is_none()).map(|p| p.path.clone()).collect();
    paths.extend(snapshot.config.files().into_iter().map(Path::to_path_buf));
    if let Some(dir) = &snapshot.config.plugins.dir {
        paths.extend(registry::available(dir).into_iter().map(|n| dir.join(format!("{n}.wasm"))));
    }
    paths.extend(extra.iter().cloned());
    paths
        .into_iter()
        .map(|f| {
            let stamp = stamp(&f);
            (f, stamp)
        })
        .collect()
}

impl Fingerprint {
    /// What to compare with after a reload that `self` (taken before it)
    /// set off: the files as they were before it, so that a write made
    /// while it ran (a key written after its certificate) still counts as
    /// a change; and the files the new config names that the old did not,
    /// as they are `after` it.
    fn settled(self, after: HashMap<PathBuf, Stamp>) -> Self {
        let mut before = self.files;
        let files = after
            .into_iter()
            .map(|(f, stamp)| {
                let stamp = before.remove(&f).unwrap_or(stamp);
                (f, stamp)
            })
            .collect();
        Self { config: self.config, files }
    }
}

/// What tells that a file changed: its size and modification time, and its
/// device, inode and change time — a file replaced by one of the same size
/// with its time kept (`cp -p`, `rsync -a`, a Nix or Bazel build's fixed
/// times) or a link turned to another file has the same size and
/// modification time, never the same inode and change time. All zero when
/// it cannot be read.
type Stamp = (u64, Option<SystemTime>, u64, u64, i64, i64);

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => (m.len(), m.modified().ok(), m.dev(), m.ino(), m.ctime(), m.ctime_nsec()),
        Err(_) => (0, None, 0, 0, 0, 0),
    }
}

fn spawn_watcher(
    shared: Arc<Shared>,
    interval: Duration,
    stop: std::sync::mpsc::Receiver<()>,
) -> std::io::Result<JoinHandle<()>> {
    use std::sync::mpsc::RecvTimeoutError;
    // Taken now, not in the thread: a change made right after `start`
    // returns must count as a change. The config's text is the one that
    // serves, not read again: a change made while the gateway started (or
    // the store back, holding another, after a start from the last good
    // copy) is a change.
    let mut last =
        Fingerprint { config: Some(shared.current().config.source.clone().into_bytes()), files: watched(&shared, &[]) };
    // Whether the store could not be reached at the last look (said once).
    let mut unreachable = false;
    // The files the config last refused names, watched as well as the
    // serving config's: one it could not read yet (a certificate named
    // before it was copied in) is tried again once it is written, not only
    // when the config changes again.
    let mut refused: Vec<PathBuf> = Vec::new();
    // A change seen once, reloaded only when the next look finds it the
    // same: a file written in place in several steps (`cat >`, an editor
    // that does not rename) is not loaded half-written — a prefix that
    // parses would serve without its last routes until the next look.
    let mut seen: Option<Fingerprint> = None;
    std::thread::Builder::new().name("wasmgate-watch".into()).spawn(move || {
        loop {
            match stop.recv_timeout(interval) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
            // The store away: its text as last seen, so that a change to
            // a file the config names still reloads (from the config in
            // force: `load_again`).
            let config = match shared.source.current() {
                Ok(config) => {
                    if std::mem::take(&mut unreachable) {
                        tracing::info!(source = %shared.source.name(), "the config store is reachable again");
                    }
                    shared.env.metrics.config_source_up(config.is_some());
                    config
                }
                Err(e) => {
                    if !std::mem::replace(&mut unreachable, true) {
                        tracing::warn!(source = %shared.source.name(), "{e}; the config in force keeps serving");
                    }
                    shared.env.metrics.config_source_up(false);
                    last.config.clone()
                }
            };
            let now = Fingerprint { config, files: watched(&shared, &refused) };
            if now == last {
                seen = None;
                continue;
            }
            if seen.as_ref() != Some(&now) {
                seen = Some(now);
                continue;
            }
            seen = None;
            tracing::info!("config, plugin or named files changed; reloading");
            refused = shared.reload_or_log().err().unwrap_or_default();
            // The reload may have changed what to watch.
            last = now.settled(watched(&shared, &refused));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_stalled_once_its_heartbeat_is_ten_seconds_old() {
        assert!(all_beating([100, 95], 100));
        assert!(all_beating([100, 91], 100));
        assert!(!all_beating([100, 90], 100), "one worker ten seconds behind");
        assert!(all_beating([5], 3), "a beat after the reading is fresh");
    }
}
