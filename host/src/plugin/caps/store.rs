//! The `store` capability: key-value, counters, token buckets and sliding
//! windows, namespaced per plugin. The in-process backend is synchronous
//! (no I/O, so its plugins stay on the fast synchronous path); the Redis
//! backend is asynchronous and shared by a fleet.

use std::sync::Arc;
use std::time::Instant;

use wasmgate_common::memstore::{self, MemStore, SystemClock};
use wasmtime::StoreContextMut;
use wasmtime::component::Linker;

use super::super::host_api::{self, HostState, wasmgate::plugin::store as wit};
use super::redis::{self, RedisStore};

const INTERFACE: &str = "wasmgate:plugin/store@0.1.6";

/// The process's store backend; cheap to clone.
#[derive(Clone)]
pub enum StoreBackend {
    Memory(Arc<MemStore<SystemClock>>),
    Redis(RedisStore),
}

impl std::fmt::Debug for StoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_remote() { "StoreBackend::Redis" } else { "StoreBackend::Memory" })
    }
}

impl StoreBackend {
    /// The configured store; a Redis store's connection tasks run on `runtime`
    /// (the control runtime), whatever thread this is called from.
    pub fn from_config(config: &crate::config::StoreConfig, runtime: &tokio::runtime::Handle) -> Result<Self, String> {
        let _runtime = runtime.enter();
        Ok(match config {
            crate::config::StoreConfig::Memory { max_entries, max_bytes } => {
                let max_bytes = usize::try_from(*max_bytes).unwrap_or(usize::MAX);
                Self::Memory(Arc::new(MemStore::new(SystemClock, *max_entries).with_max_bytes(max_bytes)))
            }
            crate::config::StoreConfig::Redis { url, timeout, tls } => {
                Self::Redis(RedisStore::new(url, *timeout, tls.as_ref()).map_err(|e| e.to_string())?)
            }
        })
    }

    /// A store for a build that fails (a problem with `[store]` is
    /// reported): it never serves.
    pub fn unused() -> Self {
        Self::Memory(Arc::new(MemStore::new(SystemClock, 1)))
    }

    /// Whether `other` is this store (a clone of it), not another one.
    pub fn is(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Memory(a), Self::Memory(b)) => Arc::ptr_eq(a, b),
            (Self::Redis(a), Self::Redis(b)) => a.is(b),
            _ => false,
        }
    }

    /// Whether calls wait on the network.
    pub fn is_remote(&self) -> bool {
        matches!(self, Self::Redis(_))
    }

    /// Drops expired in-process entries; called periodically.
    pub fn sweep(&self) {
        if let Self::Memory(m) = self {
            m.sweep();
        }
    }
}

fn mem_err(e: memstore::StoreError) -> wit::StoreError {
    match e {
        memstore::StoreError::Invalid(m) => wit::StoreError::Invalid(m),
    }
}

fn redis_err(e: redis::StoreError) -> wit::StoreError {
    match e {
        redis::StoreError::Unavailable(m) => wit::StoreError::Unavailable(m),
        redis::StoreError::Invalid(m) => wit::StoreError::Invalid(m),
    }
}

/// A rate-limit outcome of either backend (they share the type).
fn limit_result(l: memstore::LimitResult) -> wit::LimitResult {
    wit::LimitResult {
        allowed: l.allowed,
        limit: l.limit,
        remaining: l.remaining,
        reset_ms: l.reset_ms,
        retry_after_ms: l.retry_after_ms,
    }
}

/// The plugin's memory store and namespaced key, or the error it gets.
fn mem(s: &HostState, key: &str) -> Result<(Arc<MemStore<SystemClock>>, String), wit::StoreError> {
    match &s.caps.store {
        Some(StoreBackend::Memory(m)) => Ok((m.clone(), namespaced("", &s.caps.namespace, key))),
        _ => Err(wit::StoreError::Invalid("the store is not granted".into())),
    }
}

fn remote(s: &HostState, key: &str) -> Result<(RedisStore, String), wit::StoreError> {
    match &s.caps.store {
        Some(StoreBackend::Redis(r)) => Ok((r.clone(), namespaced("wasmgate:", &s.caps.namespace, key))),
        _ => Err(wit::StoreError::Invalid("the store is not granted".into())),
    }
}

/// `prefix`, `namespace` and `key` in one string: a call or two per request,
/// where `format!` costs more than the store's own work.
fn namespaced(prefix: &str, namespace: &str, key: &str) -> String {
    let mut full = String::with_capacity(prefix.len() + namespace.len() + key.len());
    full.push_str(prefix);
    full.push_str(namespace);
    full.push_str(key);
    full
}

type Out<T> = wasmtime::Result<(Result<T, wit::StoreError>,)>;

/// Links the in-process backend: plain synchronous functions.
pub fn link_sync(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut i = linker.instance(INTERFACE)?;
    i.func_wrap("get", |s: StoreContextMut<'_, HostState>, (key,): (String,)| -> Out<Option<Vec<u8>>> {
        Ok((mem(s.data(), &key).and_then(|(m, k)| m.get(&k).map_err(mem_err)),))
    })?;
    i.func_wrap(
        "set",
        |s: StoreContextMut<'_, HostState>, (key, value, ttl): (String, Vec<u8>, Option<u64>)| -> Out<()> {
            Ok((mem(s.data(), &key).and_then(|(m, k)| m.set(&k, &value, ttl).map_err(mem_err)),))
        },
    )?;
    i.func_wrap("delete", |s: StoreContextMut<'_, HostState>, (key,): (String,)| -> Out<bool> {
        Ok((mem(s.data(), &key).and_then(|(m, k)| m.delete(&k).map_err(mem_err)),))
    })?;
    i.func_wrap(
        "incr",
        |s: StoreContextMut<'_, HostState>, (key, delta, ttl): (String, i64, Option<u64>)| -> Out<i64> {
            Ok((mem(s.data(), &key).and_then(|(m, k)| m.incr(&k, delta, ttl).map_err(mem_err)),))
        },
    )?;
    i.func_wrap(
        "take",
        |s: StoreContextMut<'_, HostState>,
         (key, cap, refill, cost): (String, u64, f64, u64)|
         -> Out<wit::LimitResult> {
            Ok((
                mem(s.data(), &key).and_then(|(m, k)| m.take(&k, cap, refill, cost).map(limit_result).map_err(mem_err)),
            ))
        },
    )?;
    i.func_wrap(
        "hit",
        |s: StoreContextMut<'_, HostState>,
         (key, limit, window, cost): (String, u64, u64, u64)|
         -> Out<wit::LimitResult> {
            Ok((mem(s.data(), &key)
                .and_then(|(m, k)| m.hit(&k, limit, window, cost).map(limit_result).map_err(mem_err)),))
        },
    )?;
    Ok(())
}

/// Links the Redis backend: async functions (the plugin is called with
/// `call_async`, so waiting on Redis suspends it without blocking a worker).
pub fn link_async(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut i = linker.instance(INTERFACE)?;
    i.func_wrap_async("get", |mut s: StoreContextMut<'_, HostState>, (key,): (String,)| {
        Box::new(async move {
            let since = Instant::now();
            let r = match remote(s.data(), &key) {
                Ok((r, k)) => r.get(&k).await.map_err(redis_err),
                Err(e) => Err(e),
            };
            host_api::waited(&mut s, since);
            Ok((r,))
        })
    })?;
    i.func_wrap_async(
        "set",
        |mut s: StoreContextMut<'_, HostState>, (key, value, ttl): (String, Vec<u8>, Option<u64>)| {
            Box::new(async move {
                let since = Instant::now();
                let r = match remote(s.data(), &key) {
                    Ok((r, k)) => r.set(&k, &value, ttl).await.map_err(redis_err),
                    Err(e) => Err(e),
                };
                host_api::waited(&mut s, since);
                Ok((r,))
            })
        },
    )?;
    i.func_wrap_async("delete", |mut s: StoreContextMut<'_, HostState>, (key,): (String,)| {
        Box::new(async move {
            let since = Instant::now();
            let r = match remote(s.data(), &key) {
                Ok((r, k)) => r.delete(&k).await.map_err(redis_err),
                Err(e) => Err(e),
            };
            host_api::waited(&mut s, since);
            Ok((r,))
        })
    })?;
    i.func_wrap_async(
        "incr",
        |mut s: StoreContextMut<'_, HostState>, (key, delta, ttl): (String, i64, Option<u64>)| {
            Box::new(async move {
                let since = Instant::now();
                let r = match remote(s.data(), &key) {
                    Ok((r, k)) => r.incr(&k, delta, ttl).await.map_err(redis_err),
                    Err(e) => Err(e),
                };
                host_api::waited(&mut s, since);
                Ok((r,))
            })
        },
    )?;
    i.func_wrap_async(
        "take",
        |mut s: StoreContextMut<'_, HostState>, (key, cap, refill, cost): (String, u64, f64, u64)| {
            Box::new(async move {
                let since = Instant::now();
                let r = match remote(s.data(), &key) {
                    Ok((r, k)) => r.take(&k, cap, refill, cost).await.map(limit_result).map_err(redis_err),
                    Err(e) => Err(e),
                };
                host_api::waited(&mut s, since);
                Ok((r,))
            })
        },
    )?;
    i.func_wrap_async(
        "hit",
        |mut s: StoreContextMut<'_, HostState>, (key, limit, window, cost): (String, u64, u64, u64)| {
            Box::new(async move {
                let since = Instant::now();
                let r = match remote(s.data(), &key) {
                    Ok((r, k)) => r.hit(&k, limit, window, cost).await.map(limit_result).map_err(redis_err),
                    Err(e) => Err(e),
                };
                host_api::waited(&mut s, since);
                Ok((r,))
            })
        },
    )?;
    Ok(())
}
