//! One plugin in one route's chain: its config, what it asked of the gateway,
//! and its instances.
//!
//! `pooled` links keep configured instances per worker and reuse them; a
//! call takes one, lends it the request, and puts it back (unless it trapped
//! or reached `recycle_after` uses). `per-request` links instantiate a fresh,
//! bounded store from the pooling allocator for every call. Either way the
//! call runs inline on the worker, bounded by the epoch deadline.

use std::sync::{Arc, Mutex, PoisonError};

use wasmtime::{Store, Trap};

use super::engine::EPOCH_TICK;
use super::host_api::{self, HostState, PolicyPlugin, wasmgate::plugin::types as wit};
use super::registry::Plugin;
use super::sandbox::GuestExit;
use crate::config::Isolation;
use crate::exchange::Exchange;

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
    /// No instance could be made (pool exhausted, configure refused).
    Instantiate,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trap => "trap",
            Self::Deadline => "deadline",
            Self::Memory => "memory",
            Self::Instantiate => "instantiate",
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
#[derive(Debug)]
pub enum Outcome {
    Continue,
    Respond(wit::Reply),
}

struct Warm {
    store: Store<HostState>,
    bindings: PolicyPlugin,
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
    config_json: String,
    deadline_ticks: u64,
    pool: Option<Pool>,
}

impl std::fmt::Debug for ChainLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainLink")
            .field("plugin", &self.plugin.name)
            .field("key", &self.key)
            .field("info", &self.info)
            .finish()
    }
}

impl ChainLink {
    /// Instantiates the plugin and runs its config hook once. `Err` carries
    /// the plugin's own refusal message, or why it could not run.
    pub fn configure(
        plugin: Arc<Plugin>,
        config_json: String,
        key: String,
        workers: usize,
        max_idle: usize,
    ) -> Result<Self, String> {
        let limits = plugin.settings.limits;
        let deadline_ticks =
            u64::try_from(limits.deadline.as_micros().div_ceil(EPOCH_TICK.as_micros())).unwrap_or(u64::MAX).max(1);
        let pool = (plugin.settings.isolation == Isolation::Pooled).then(|| Pool::new(workers, max_idle));
        let mut link = Self { plugin, info: Info::default(), key, config_json, deadline_ticks, pool };
        let (warm, info) = link.instantiate().map_err(|f| match f.kind {
            FaultKind::Instantiate => f.detail,
            kind => format!("its config hook failed ({}): {}", kind.as_str(), f.detail),
        })?;
        link.info = info;
        if let Some(pool) = &link.pool {
            pool.put(warm);
        }
        Ok(link)
    }

    /// A fresh, configured instance.
    fn instantiate(&self) -> Result<(Warm, Info), Fault> {
        let runtime = &self.plugin.runtime;
        let state = HostState::new(self.plugin.name.clone(), self.plugin.settings.limits.max_memory);
        let mut store = Store::new(runtime.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(self.deadline_ticks);
        let bindings = self
            .plugin
            .pre
            .instantiate(&mut store)
            .map_err(|e| Fault { kind: FaultKind::Instantiate, detail: format!("cannot instantiate: {e:#}") })?;
        let configured = bindings.wasmgate_plugin_policy().call_configure(&mut store, &self.config_json);
        match configured {
            Ok(Ok(info)) => Ok((Warm { store, bindings, uses: 0 }, info.into())),
            Ok(Err(refusal)) => Err(Fault { kind: FaultKind::Instantiate, detail: refusal }),
            Err(e) => Err(classify(&e, store.data().limiter.exceeded)),
        }
    }

    /// Runs the request hook on `exchange`.
    pub fn on_request(&self, exchange: &mut Box<Exchange>) -> Result<Outcome, Fault> {
        self.call(exchange, |b, store| b.wasmgate_plugin_policy().call_on_request(store, host_api::request_handle()))
    }

    /// Runs the response hook; `exchange.response` must be set.
    pub fn on_response(&self, exchange: &mut Box<Exchange>) -> Result<Outcome, Fault> {
        self.call(exchange, |b, store| {
            b.wasmgate_plugin_policy().call_on_response(store, host_api::request_handle(), host_api::response_handle())
        })
    }

    fn call(
        &self,
        exchange: &mut Box<Exchange>,
        hook: impl FnOnce(&PolicyPlugin, &mut Store<HostState>) -> wasmtime::Result<wit::Decision>,
    ) -> Result<Outcome, Fault> {
        let mut warm = match self.pool.as_ref().and_then(Pool::take) {
            Some(w) => w,
            None => self.instantiate()?.0,
        };
        std::mem::swap(&mut warm.store.data_mut().exchange, exchange);
        warm.store.set_epoch_deadline(self.deadline_ticks);
        let result = hook(&warm.bindings, &mut warm.store);
        std::mem::swap(&mut warm.store.data_mut().exchange, exchange);
        match result {
            Ok(decision) => {
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

fn classify(err: &wasmtime::Error, memory_exceeded: bool) -> Fault {
    let kind = if memory_exceeded {
        FaultKind::Memory
    } else if matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        FaultKind::Deadline
    } else {
        FaultKind::Trap
    };
    let detail = if err.is::<GuestExit>() { "plugin called exit".to_owned() } else { format!("{err:#}") };
    Fault { kind, detail }
}
