//! One plugin in one route's chain: its config, what it asked of the gateway,
//! and its instances.
//!
//! `pooled` links keep configured instances per worker and reuse them; a
//! call takes one, lends it the request, and puts it back (unless it trapped
//! or reached `recycle_after` uses). `per-request` links instantiate a fresh,
//! bounded store from the pooling allocator for every call. Either way the
//! call runs on the worker, bounded by the epoch deadline: synchronously
//! inline, or — for plugins that wait on I/O — as an async call that
//! suspends the plugin (not the worker) while the I/O is in flight.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use wasmtime::component::{Resource, TypedFunc};
use wasmtime::{Store, Trap};

use super::clock::Resolution;
use super::host_api::{self, HostState, RequestHandle, ResponseHandle, wasmgate::plugin::types as wit};
use super::memo::{Fact, Memo};
use super::registry::Plugin;
use super::sandbox::GuestExit;
use crate::config::Isolation;
use crate::exchange::{Exchange, FixedEdits};
use crate::telemetry::PluginSeries;

/// How far the waits on I/O of an instantiation and its config hook may
/// put their deadline off in all (a hook's waits may put its deadline off
/// by the route's timeout).
const CONFIGURE_WAITS: Duration = Duration::from_secs(30);

/// What a plugin asked for when it accepted its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Info {
    pub on_request: bool,
    pub on_response: bool,
    pub request_body: bool,
    pub response_body: bool,
}

impl From<wit::PluginInfo> for Info {
    fn from(i: wit::PluginInfo) -> Self {
        Self {
            on_request: i.hooks.contains(wit::Hooks::ON_REQUEST),
            on_response: i.hooks.contains(wit::Hooks::ON_RESPONSE),
            request_body: i.request_body,
            response_body: i.response_body,
        }
    }
}

/// How a plugin call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The guest trapped (panic, unreachable, bad memory access, exit).
    Trap,
    /// The guest ran past its deadline.
    Deadline,
    /// The guest tried to grow past its memory limit.
    Memory,
    /// No instance could be made (pool exhausted, exports that do not
    /// match, a memory the limits do not allow).
    Instantiate,
    /// No instance could be made: the engine's instance pool (`[plugins]
    /// max_instances`) is exhausted.
    PoolFull,
    /// The config hook refused the plugin's config.
    Refused,
    /// The plugin answered with a reply that is not valid HTTP (a status
    /// outside 200..=599, too many headers), or handed the gateway more
    /// bytes in one go than its memory holds (lists sharing bytes).
    Reply,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trap => "trap",
            Self::Deadline => "deadline",
            Self::Memory => "memory",
            Self::Instantiate => "instantiate",
            Self::PoolFull => "pool_full",
            Self::Refused => "refused",
            Self::Reply => "reply",
        }
    }
}

/// A failed plugin call. The detail is for the log, never for the client.
#[derive(Debug)]
pub struct Fault {
    pub kind: FaultKind,
    pub detail: String,
}

/// A plugin's answer.
#[derive(Debug, Clone)]
pub enum Outcome {
    Continue,
    Respond(wit::Reply),
}

type ConfigureFn = TypedFunc<(String,), (Result<wit::PluginInfo, String>,)>;
type RequestFn = TypedFunc<(Resource<RequestHandle>,), (wit::Decision,)>;
type ResponseFn = TypedFunc<(Resource<RequestHandle>, Resource<ResponseHandle>), (wit::Decision,)>;

/// A configured instance and its hooks.
struct Warm {
    store: Store<HostState>,
    on_request: RequestFn,
    on_response: ResponseFn,
    uses: u64,
}

/// Idle instances, one shard per worker thread so workers never contend.
struct Pool {
    shards: Box<[Mutex<Vec<Warm>>]>,
    max_idle: usize,
}

impl Pool {
    fn new(shards: usize, max_idle: usize) -> Self {
        Self { shards: (0..shards.max(1)).map(|_| Mutex::new(Vec::new())).collect(), max_idle }
    }

    fn shard(&self) -> &Mutex<Vec<Warm>> {
        &self.shards[crate::worker::index() % self.shards.len()]
    }

    fn take(&self) -> Option<Warm> {
        self.shard().lock().unwrap_or_else(PoisonError::into_inner).pop()
    }

    /// Drops every idle instance, giving its place in the engine's pool back.
    fn clear(&self) {
        for shard in &self.shards {
            drop(std::mem::take(&mut *shard.lock().unwrap_or_else(PoisonError::into_inner)));
        }
    }

    fn put(&self, warm: Warm) {
        let mut idle = self.shard().lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(warm);
        }
    }
}

/// A configured plugin in a route's chain.
pub struct ChainLink {
    pub plugin: Arc<Plugin>,
    pub info: Info,
    /// `routes[i].plugins[j]`, for logs.
    pub key: String,
    /// The header edits the gateway makes for this plugin without calling
    /// it, as its first configured instance declared them.
    pub fixed: FixedEdits,
    /// The outcomes of its request hook, kept by the facts it declared it
    /// depends on (`setup.memoize-request`), when it declared them.
    pub memo: Option<Memo>,
    config_json: String,
    pool: Option<Pool>,
    /// Where the proxy records the time of each call and the link counts
    /// the instances it makes: the gateway's series for this plugin once
    /// [`ChainLink::with_series`] gave them, unregistered ones until then.
    pub series: PluginSeries,
    /// The clock ticks often enough for this link's deadline while the link
    /// is loaded (until a reload drops its route).
    _resolution: Resolution,
}

impl std::fmt::Debug for ChainLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainLink")
            .field("plugin", &self.plugin.name)
            .field("key", &self.key)
            .field("info", &self.info)
            .field("async", &self.plugin.async_calls)
            .finish()
    }
}

enum Phase {
    Request,
    Response,
}

impl ChainLink {
    /// Instantiates the plugin and runs its config hook once. `Err` carries
    /// the plugin's own refusal message, or why no instance could be made.
    /// Plugins with async calls are configured on `control` (they may do
    /// I/O there).
    pub fn configure(
        plugin: Arc<Plugin>,
        config_json: String,
        key: String,
        workers: usize,
        max_idle: usize,
        control: &tokio::runtime::Handle,
    ) -> Result<Self, ConfigureError> {
        let resolution = plugin.runtime.resolve(plugin.settings.limits.deadline);
        let pool = (plugin.settings.isolation == Isolation::Pooled).then(|| Pool::new(workers, max_idle));
        let series = PluginSeries::unregistered();
        let link = Self {
            plugin,
            info: Info::default(),
            key,
            fixed: FixedEdits::default(),
            memo: None,
            config_json,
            pool,
            series,
            _resolution: resolution,
        };
        let (mut link, made) = if link.plugin.async_calls {
            // The control runtime drives the async instantiation; the link
            // travels there and back.
            let configuring = async move {
                let made = link.instantiate_async().await;
                (link, made)
            };
            crate::control::wait(control, None, configuring).ok_or_else(|| ConfigureError::NoInstance {
                detail: "the control runtime stopped during configure".to_owned(),
                pool_full: false,
            })?
        } else {
            let made = link.instantiate();
            (link, made)
        };
        let (warm, info, fixed, memo_facts) = made.map_err(|f| match f.kind {
            FaultKind::Refused => ConfigureError::Refused(f.detail),
            FaultKind::Instantiate => ConfigureError::NoInstance { detail: f.detail, pool_full: false },
            FaultKind::PoolFull => ConfigureError::NoInstance { detail: f.detail, pool_full: true },
            kind => ConfigureError::Refused(format!("its config hook failed ({}): {}", kind.as_str(), f.detail)),
        })?;
        link.info = info;
        link.fixed = fixed;
        link.memo = memo_facts.map(Memo::new);
        // A link with no hook (its edits all fixed) is never called: its
        // instance would only hold a slot of the engine's instance pool.
        if let Some(pool) = &link.pool
            && (link.info.on_request || link.info.on_response)
        {
            pool.put(warm);
        }
        Ok(link)
    }

    /// Records this link's calls in the gateway's series (from
    /// [`crate::telemetry::Metrics::plugin_series`]).
    pub fn with_series(mut self, series: PluginSeries) -> Self {
        self.series = series;
        self
    }

    fn store(&self) -> Store<HostState> {
        let limits = self.plugin.settings.limits;
        let state = HostState::new(self.plugin.caps.clone(), limits.max_memory, limits.deadline);
        let mut store = Store::new(self.plugin.runtime.engine(), state);
        store.limiter(|s| &mut s.limiter);
        // What wasmtime may copy out of the plugin's memory in one lift (a
        // host call's arguments, a hook's result): no more than the plugin
        // can hold. Entries of a list may point at the same bytes, so a
        // reply of 1 000 headers sharing one 1 MiB value would otherwise be
        // copied into 1 GiB (wasmtime's default stops at 128 MiB).
        store.set_hostcall_fuel(usize::try_from(limits.max_memory).unwrap_or(usize::MAX));
        store.epoch_deadline_callback(host_api::on_tick);
        // Instantiation and the config hook share one deadline.
        host_api::arm(&mut store, Instant::now(), CONFIGURE_WAITS);
        store
    }

    fn funcs(
        &self,
        store: &mut Store<HostState>,
        instance: &wasmtime::component::Instance,
    ) -> Result<(ConfigureFn, RequestFn, ResponseFn), Fault> {
        let e = &self.plugin.exports;
        let mut lookup = || -> wasmtime::Result<_> {
            Ok((
                instance.get_typed_func(&mut *store, e.configure)?,
                instance.get_typed_func(&mut *store, e.on_request)?,
                instance.get_typed_func(&mut *store, e.on_response)?,
            ))
        };
        lookup().map_err(|e| Fault { kind: FaultKind::Instantiate, detail: format!("exports do not match: {e:#}") })
    }

    /// A fresh, configured instance (synchronous plugins).
    fn instantiate(&self) -> Result<Made, Fault> {
        let _running = self.plugin.runtime.enter();
        let mut store = self.store();
        let instance = self.plugin.pre.instantiate(&mut store).map_err(instantiate_fault)?;
        let (configure, on_request, on_response) = self.funcs(&mut store, &instance)?;
        let configured = configure.call(&mut store, (self.config_json.clone(),));
        finish_configure(store, configured, on_request, on_response)
    }

    /// A fresh, configured instance (plugins that wait on I/O).
    async fn instantiate_async(&self) -> Result<Made, Fault> {
        let _running = self.plugin.runtime.enter();
        let mut store = self.store();
        let instance = self.plugin.pre.instantiate_async(&mut store).await.map_err(instantiate_fault)?;
        let (configure, on_request, on_response) = self.funcs(&mut store, &instance)?;
        let configured = configure.call_async(&mut store, (self.config_json.clone(),)).await;
        finish_configure(store, configured, on_request, on_response)
    }

    /// Drops its idle instances (a reload about to make new ones: the
    /// engine's `max_instances` counts these too, until this link's
    /// snapshot is gone).
    pub fn drop_idle(&self) {
        if let Some(pool) = &self.pool {
            pool.clear();
        }
    }

    /// Whether it keeps instances between calls (`isolation = "pooled"`).
    pub fn is_pooled(&self) -> bool {
        self.pool.is_some()
    }

    /// Whether calls are async (the plugin may wait on I/O).
    pub fn is_async(&self) -> bool {
        self.plugin.async_calls
    }

    /// Runs the request hook on `exchange` (synchronous plugins); its
    /// deadline counts from `started`, the caller's last clock reading.
    pub fn on_request(&self, exchange: &mut Box<Exchange>, started: Instant) -> Result<Outcome, Fault> {
        self.call(exchange, Phase::Request, started)
    }

    /// Runs the response hook; `exchange.response` must be set.
    pub fn on_response(&self, exchange: &mut Box<Exchange>, started: Instant) -> Result<Outcome, Fault> {
        self.call(exchange, Phase::Response, started)
    }

    fn call(&self, exchange: &mut Box<Exchange>, phase: Phase, started: Instant) -> Result<Outcome, Fault> {
        let _running = self.plugin.runtime.enter();
        let (mut warm, started) = match self.pool.as_ref().and_then(Pool::take) {
            Some(w) => (w, started),
            None => {
                self.series.instances_created.inc();
                // Making it (its config hook included) had a deadline of
                // its own: the hook's counts from now.
                (self.instantiate()?.0, Instant::now())
            }
        };
        std::mem::swap(&mut warm.store.data_mut().exchange, exchange);
        host_api::arm(&mut warm.store, started, Duration::ZERO);
        let result = match phase {
            Phase::Request => warm.on_request.call(&mut warm.store, (host_api::request_handle(),)),
            Phase::Response => {
                warm.on_response.call(&mut warm.store, (host_api::request_handle(), host_api::response_handle()))
            }
        };
        warm.store.data_mut().flush_stdio();
        std::mem::swap(&mut warm.store.data_mut().exchange, exchange);
        self.finish(warm, result)
    }

    /// Runs a hook of a plugin that waits on I/O: the plugin is suspended,
    /// not the worker, while its host calls are in flight. Its waits may
    /// put its deadline off by `waits` in all.
    pub async fn call_async(
        &self,
        exchange: &mut Box<Exchange>,
        request_phase: bool,
        started: Instant,
        waits: Duration,
    ) -> Result<Outcome, Fault> {
        let _running = self.plugin.runtime.enter();
        let (mut warm, started) = match self.pool.as_ref().and_then(Pool::take) {
            Some(w) => (w, started),
            None => {
                self.series.instances_created.inc();
                (self.instantiate_async().await?.0, Instant::now())
            }
        };
        std::mem::swap(&mut warm.store.data_mut().exchange, exchange);
        host_api::arm(&mut warm.store, started, waits);
        let result = if request_phase {
            warm.on_request.call_async(&mut warm.store, (host_api::request_handle(),)).await
        } else {
            warm.on_response
                .call_async(&mut warm.store, (host_api::request_handle(), host_api::response_handle()))
                .await
        };
        warm.store.data_mut().flush_stdio();
        std::mem::swap(&mut warm.store.data_mut().exchange, exchange);
        self.finish(warm, result)
    }

    fn finish(&self, mut warm: Warm, result: wasmtime::Result<(wit::Decision,)>) -> Result<Outcome, Fault> {
        match result {
            Ok((decision,)) => {
                warm.uses += 1;
                if let Some(pool) = &self.pool
                    && warm.uses < self.plugin.settings.limits.recycle_after
                {
                    pool.put(warm);
                }
                Ok(match decision {
                    wit::Decision::Continue => Outcome::Continue,
                    wit::Decision::Respond(reply) => Outcome::Respond(reply),
                })
            }
            // The instance is dropped: after a trap its state is suspect.
            Err(e) => Err(classify(&e, warm.store.data().limiter.exceeded)),
        }
    }
}

fn instantiate_fault(e: wasmtime::Error) -> Fault {
    let pool_full = e.chain().any(|c| c.is::<wasmtime::PoolConcurrencyLimitError>());
    let kind = if pool_full { FaultKind::PoolFull } else { FaultKind::Instantiate };
    Fault { kind, detail: format!("cannot instantiate: {e:#}") }
}

/// Why a route's plugin could not be configured.
#[derive(Debug)]
pub enum ConfigureError {
    /// The plugin refused its config (its own message), or its config hook
    /// failed.
    Refused(String),
    /// No instance of it could be made; `pool_full` when the engine's
    /// instance pool (`[plugins] max_instances`) was exhausted.
    NoInstance { detail: String, pool_full: bool },
}

/// A configured instance, what it asked for, and the fixed header edits and
/// request facts it declared (kept from the first instance of a link, the
/// same in the rest).
type Made = (Warm, Info, FixedEdits, Option<Vec<Fact>>);

fn finish_configure(
    mut store: Store<HostState>,
    configured: wasmtime::Result<(Result<wit::PluginInfo, String>,)>,
    on_request: RequestFn,
    on_response: ResponseFn,
) -> Result<Made, Fault> {
    // What the config hook printed and left unfinished is its own.
    store.data_mut().flush_stdio();
    // Fixed headers are declared while configuring only.
    let fixed = store.data_mut().fixed.take().unwrap_or_default();
    let memo_facts = store.data_mut().memo_facts.take();
    match configured {
        Ok((Ok(info),)) => Ok((Warm { store, on_request, on_response, uses: 0 }, info.into(), fixed, memo_facts)),
        Ok((Err(refusal),)) => Err(Fault { kind: FaultKind::Refused, detail: refusal }),
        Err(e) => Err(classify(&e, store.data().limiter.exceeded)),
    }
}

/// Whether a call failed on wasmtime's hostcall fuel ([`ChainLink::store`]):
/// the plugin handed over more than its memory holds. wasmtime's error type
/// for it is private; its text is fixed in the pinned version.
fn handed_too_much(err: &wasmtime::Error) -> bool {
    err.chain().any(|e| e.to_string().starts_with("too much data is being copied between the host and the guest"))
}

fn classify(err: &wasmtime::Error, memory_exceeded: bool) -> Fault {
    let kind = if memory_exceeded {
        FaultKind::Memory
    } else if handed_too_much(err) {
        FaultKind::Reply
    } else if matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        FaultKind::Deadline
    } else {
        FaultKind::Trap
    };
    let detail = if err.is::<GuestExit>() { "plugin called exit".to_owned() } else { format!("{err:#}") };
    Fault { kind, detail }
}
