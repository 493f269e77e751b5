//! Redis backend of the plugin `store` capability (`wit/capabilities.wit`, interface `store`):
//! the one a fleet of gateways shares, so a rate limit holds across all of them exactly.
//!
//! A plugin's `store` import lands here once the host has checked `grants.store` and prefixed
//! the key with the plugin's namespace. Every operation is one round trip, bounded by the
//! store's `timeout`, and never retried: a retried `take` that had already reached Redis would
//! take twice. When Redis is down, slow or hung, operations return [`StoreError::Unavailable`]
//! and the plugin decides what that means; the store reconnects by itself.
//!
//! # Semantics (shared with the in-memory backend)
//!
//! Both backends implement this specification; a plugin must not be able to tell them apart
//! except by the sharing.
//!
//! - Argument limits: key ≤ 512 bytes, value ≤ 1 MiB, ttl ≤ 30 days, capacity/limit ≥ 1,
//!   refill > 0 and finite, window 1 ms..=1 day, cost ≤ capacity for take (else Invalid);
//!   violations → Invalid naming the argument — checked in Rust before any network call.
//! - `take` (token bucket, continuous refill): state = (tokens: float, last_ms). On first use
//!   tokens = capacity. tokens = min(capacity, tokens + (now - last) × refill/1000). If
//!   tokens ≥ cost: tokens -= cost, allowed. remaining = floor(tokens).
//!   reset_ms = ceil((capacity - tokens) / refill × 1000). retry_after_ms = 0 when allowed,
//!   else ceil((cost - tokens)/refill × 1000). limit = capacity. The key expires (PEXPIRE)
//!   when the bucket would be full again (reset_ms, at least 1 ms).
//! - `hit` (sliding window, two-window estimate): windows aligned to multiples of window_ms
//!   (on server time); current count c, previous window count p; elapsed = now mod window;
//!   estimate = p × (window - elapsed)/window + c. If estimate + cost ≤ limit: c += cost,
//!   allowed. remaining = limit - ceil(estimate after the hit), floored at 0.
//!   reset_ms = the time until nothing counts (remaining = limit): (window - elapsed) +
//!   window when c > 0 (c weighs in as the next window's p), window - elapsed when only p > 0,
//!   else 0; never below retry_after_ms. retry_after_ms = 0 if allowed, else the time until
//!   the estimate has dropped enough for `cost` (within the current window p's weight decays;
//!   if that cannot make room before the window ends, it is the rest of this window plus the
//!   time in the next window for the then-previous count to decay enough; capped at
//!   2 × window). Keys expire after 2 × window.
//! - Keys are stored as given (the caller prefixes namespaces).
//!
//! Where the specification leaves a choice, this backend decides as follows (the in-memory
//! backend should agree):
//!
//! - Time is whole milliseconds of the Redis server clock (`TIME`, microseconds floored). A
//!   clock that steps back refills nothing and moves no window back.
//! - `ttl_ms` is 1..=30 days: Redis has no zero TTL, and "already expired" is `delete`.
//! - `retry_after_ms` of a refusal: inside the current window it is the smallest `t` with
//!   `p × (window - elapsed - t)/window + c + cost ≤ limit`, i.e.
//!   `ceil((window - elapsed) - (limit - c - cost) × window / p)`; otherwise
//!   `(window - elapsed) + ceil(window - (limit - cost) × window / c)`; at least 1, at most
//!   2 × window (the cap is what a `cost` over `limit` gets: it never fits).
//! - `take` stores its state on every call, refused or not, exactly as the rule reads.
//! - A bucket that would need more than [`MAX_BUCKET_TTL_MS`] (100 years) to refill expires
//!   after that long: Redis cannot hold an unbounded expiry.
//! - Lua numbers are doubles, so counts and capacities above 2^53 are approximate here.
//!
//! # Redis side
//!
//! `take` and `hit` are each one Lua script (`EVALSHA`; on `NOSCRIPT`, after a restart or a
//! `SCRIPT FLUSH`, the script is loaded and run again: a script that was not found has not
//! run, so that retry cannot count twice). Each uses one hash key, so it works on one
//! Redis Cluster slot. Redis ≥ 4 is needed (multi-field `HSET`).
//!
//! The connection is a [`ConnectionManager`]: one multiplexed connection per store, rebuilt
//! with a jittered exponential backoff (from 100 ms, attempts at most 1 s apart) when it drops. TCP keepalive and
//! `TCP_USER_TIMEOUT` close a connection to a host that vanished without a reset, which the
//! manager then replaces; a Redis that merely stalls keeps its connection, and its late
//! answers are dropped.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};
use redis::{IntoConnectionInfo, RedisError, RedisResult, Script};

use crate::config::RedisTls;

#[cfg(test)]
mod tests;

/// The outcome of `take` or `hit`: the in-memory store's, so that both
/// backends answer a plugin alike.
pub use wasmgate_common::memstore::LimitResult;
use wasmgate_common::store_args as args;
pub use wasmgate_common::store_args::{MAX_KEY_BYTES, MAX_TTL_MS, MAX_VALUE_BYTES, MAX_WINDOW_MS};
/// Longest expiry of a token bucket (100 years), far below what overflows Redis' expiry clock.
pub const MAX_BUCKET_TTL_MS: u64 = 100 * 365 * 24 * 60 * 60 * 1000;

/// First delay before reconnecting; doubled (with jitter) on each failed attempt.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);
/// Cap of the reconnect delay. The manager's jitter adds up to as much again, so attempts are
/// at most 1 s apart: once Redis is back, the store follows within a second.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);
/// Bounds one connect attempt (TCP and handshake) to a host that does not answer at all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the warm-up after `new` may try to connect and load the scripts.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long sent data may stay unacknowledged before the kernel closes the connection.
#[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(5);

static TAKE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis/take.lua")));
static HIT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("redis/hit.lua")));

/// Why a store operation failed; maps one to one onto the WIT `store-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Redis cannot be reached, did not answer within the timeout, or refused to serve.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// An argument out of range, or a key holding another kind of value.
    #[error("{0}")]
    Invalid(String),
}

/// The Redis-backed store. Cloning is cheap and clones share one connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Counters and limits (`incr`, `take`, `hit`): small replies, on a
    /// connection of their own.
    counters: Lane,
    /// Values (`get`, `set`, `delete`), up to a MiB each: queued on one
    /// connection with the limits, a few large cache values held every
    /// rate limit past its timeout (and so lifted it, or refused all).
    values: Lane,
    timeout: Duration,
    /// `host:port` (or socket path) for logs and `Debug`; never the URL, which may hold a password.
    addr: String,
    /// The warm-up after `new`, ended with the store: a store dropped at
    /// once (a reload refused after it was made) keeps no connection trying
    /// for [`WARM_UP_TIMEOUT`].
    warm_up: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.warm_up.abort();
    }
}

/// One multiplexed connection and what is known of it.
struct Lane {
    manager: ConnectionManager,
    /// Whether the last operation reached Redis, so an outage is logged once, not per request.
    reachable: AtomicBool,
    /// While Redis is unreachable, one operation at a time goes to find out
    /// whether it is back; the others are answered `Unavailable` at once,
    /// rather than each waiting out the timeout (holding its plugin
    /// instance: enough of them emptied the pool).
    probing: AtomicBool,
}

impl Lane {
    fn new(manager: ConnectionManager) -> Self {
        Self { manager, reachable: AtomicBool::new(true), probing: AtomicBool::new(false) }
    }
}

/// Ends a probe ([`Lane::probing`]) however the operation ends.
struct Probe<'a>(&'a AtomicBool);

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("addr", &self.inner.addr)
            .field("timeout", &self.inner.timeout)
            .field("reachable", &self.inner.counters.reachable.load(Ordering::Relaxed))
            .finish()
    }
}

impl RedisStore {
    /// Connects lazily: building never fails on a down Redis (the gateway must start and serve
    /// with Redis down); operations then return Unavailable until Redis is back, and
    /// reconnection is automatic (with a bounded reconnect backoff). `timeout` bounds every
    /// operation (a hung Redis must not hang requests): default 50ms in the host.
    ///
    /// Must be called inside a Tokio runtime with timers enabled, which then runs the
    /// reconnects. A `rediss://` URL is TLS: trusting `tls`'s CA (else the Mozilla roots),
    /// giving its client certificate.
    pub fn new(url: &str, timeout: Duration, tls: Option<&RedisTls>) -> Result<Self, StoreError> {
        if timeout.is_zero() {
            return Err(StoreError::Invalid("timeout must be more than 0 ms".to_owned()));
        }
        // The connection manager spawns its tasks on the current runtime and would panic without one.
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| StoreError::Invalid("RedisStore::new must be called inside a Tokio runtime".to_owned()))?;
        let info = parse_url(url).map_err(|e| StoreError::Invalid(format!("invalid redis URL: {e}")))?;
        let addr = info.addr().to_string();
        let client = client(info.set_tcp_settings(tcp_settings()), tls).map_err(|err| invalid_url(&err))?;
        let config = ConnectionManagerConfig::new()
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY)
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            // Every operation runs under `timeout` as a whole (connection wait, script load
            // included). A per-response clock would add nothing: its expiry does not make the
            // manager reconnect; keepalive and TCP_USER_TIMEOUT catch dead connections instead.
            .set_response_timeout(None);
        let counters =
            ConnectionManager::new_lazy_with_config(client.clone(), config.clone()).map_err(|err| invalid_url(&err))?;
        let values = ConnectionManager::new_lazy_with_config(client, config).map_err(|err| invalid_url(&err))?;
        let warm_up = runtime.spawn(warm_up(counters.clone(), values.clone())).abort_handle();
        let (counters, values) = (Lane::new(counters), Lane::new(values));
        Ok(Self { inner: Arc::new(Inner { counters, values, timeout, addr, warm_up }) })
    }

    /// Whether `other` is a clone of this store (one set of connections).
    pub fn is(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The value under `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check(args::key(key))?;
        self.run(&self.inner.values, "get", |mut conn| async move {
            redis::cmd("GET").arg(key).query_async(&mut conn).await
        })
        .await
    }

    /// Stores `value` under `key`, replacing any value and expiry; `ttl_ms` none: no expiry.
    pub async fn set(&self, key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), StoreError> {
        check(args::key(key).and(args::value(value)).and(args::ttl(ttl_ms)))?;
        self.run(&self.inner.values, "set", |mut conn| async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key).arg(value);
            if let Some(ttl) = ttl_ms {
                cmd.arg("PX").arg(ttl);
            }
            cmd.query_async(&mut conn).await
        })
        .await
    }

    /// Removes `key`; whether it was there.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check(args::key(key))?;
        let removed: u64 = self
            .run(&self.inner.values, "delete", |mut conn| async move {
                redis::cmd("DEL").arg(key).query_async(&mut conn).await
            })
            .await?;
        Ok(removed > 0)
    }

    /// Adds `delta` to the counter under `key` (created at 0 when absent, expiring after
    /// `ttl_ms` only if this call created it) and returns the new value.
    ///
    /// `MULTI; SET key 0 NX PX ttl; INCRBY key delta; EXEC` rather than a script: the
    /// transaction is just as atomic and as cheap (one round trip), needs no script cache (so
    /// no `NOSCRIPT` path), and `SET NX` states "only when created" directly, where a script
    /// would need an `EXISTS` first. `INCRBY` keeps the TTL a creator set.
    pub async fn incr(&self, key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, StoreError> {
        check(args::key(key).and(args::ttl(ttl_ms)))?;
        self.run(&self.inner.counters, "incr", |mut conn| async move {
            match ttl_ms {
                None => redis::cmd("INCRBY").arg(key).arg(delta).query_async(&mut conn).await,
                Some(ttl) => {
                    let (value,): (i64,) = redis::pipe()
                        .atomic()
                        .cmd("SET")
                        .arg(key)
                        .arg(0)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl)
                        .ignore()
                        .cmd("INCRBY")
                        .arg(key)
                        .arg(delta)
                        .query_async(&mut conn)
                        .await?;
                    Ok(value)
                }
            }
        })
        .await
    }

    /// Token bucket: takes `cost` tokens from a bucket of `capacity` that refills
    /// `refill_per_second` tokens a second; refused (nothing taken) when there are not enough.
    pub async fn take(
        &self,
        key: &str,
        capacity: u64,
        refill_per_second: f64,
        cost: u64,
    ) -> Result<LimitResult, StoreError> {
        check(args::key(key).and(args::take(capacity, refill_per_second, cost)))?;
        let (allowed, tokens): (i64, String) = self
            .run(&self.inner.counters, "take", |mut conn| async move {
                TAKE_SCRIPT
                    .key(key)
                    // f64's Display is the shortest text that parses back to the same double.
                    .arg(capacity)
                    .arg(refill_per_second.to_string())
                    .arg(cost)
                    .arg(MAX_BUCKET_TTL_MS)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let tokens = parse_number("take", &tokens)?;
        Ok(bucket_result(capacity, refill_per_second, cost, allowed == 1, tokens))
    }

    /// Sliding window: counts `cost` hits against `limit` per `window_ms` (the previous window
    /// weighted by its overlap); refused when over.
    pub async fn hit(&self, key: &str, limit: u64, window_ms: u64, cost: u64) -> Result<LimitResult, StoreError> {
        check(args::key(key).and(args::hit(limit, window_ms, cost)))?;
        let (allowed, prev, cur, elapsed): (i64, String, String, u64) = self
            .run(&self.inner.counters, "hit", |mut conn| async move {
                HIT_SCRIPT.key(key).arg(limit).arg(window_ms).arg(cost).invoke_async(&mut conn).await
            })
            .await?;
        let counts = WindowCounts { prev: parse_number("hit", &prev)?, cur: parse_number("hit", &cur)?, elapsed };
        Ok(window_result(limit, window_ms, cost, allowed == 1, counts))
    }

    /// Runs one operation under the store's timeout and classifies its failure.
    async fn run<T, F>(
        &self,
        lane: &Lane,
        op: &'static str,
        call: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = RedisResult<T>>,
    {
        // Load first: the common case stays a read of a shared cache line.
        let _probe = if lane.reachable.load(Ordering::Relaxed) {
            None
        } else if lane.probing.swap(true, Ordering::Acquire) {
            return Err(StoreError::Unavailable(format!(
                "{op}: redis unreachable (another call is finding out if it is back)"
            )));
        } else {
            Some(Probe(&lane.probing))
        };
        let outcome = tokio::time::timeout(self.inner.timeout, call(lane.manager.clone())).await;
        let answered = || {
            if !lane.reachable.load(Ordering::Relaxed) && !lane.reachable.swap(true, Ordering::Relaxed) {
                tracing::info!(addr = %self.inner.addr, "redis store reachable again");
            }
        };
        let error = match outcome {
            Ok(Ok(value)) => {
                answered();
                return Ok(value);
            }
            Ok(Err(err)) => classify(op, err),
            Err(_elapsed) => {
                StoreError::Unavailable(format!("{op}: no answer from redis within {:?}", self.inner.timeout))
            }
        };
        match &error {
            StoreError::Unavailable(detail) => {
                if lane.reachable.swap(false, Ordering::Relaxed) {
                    tracing::warn!(addr = %self.inner.addr, error = %detail, "redis store unavailable");
                } else {
                    tracing::debug!(addr = %self.inner.addr, error = %detail, "redis store still unavailable");
                }
            }
            // The plugin's own mistake, not the store's state: the plugin gets the message.
            StoreError::Invalid(detail) => {
                // Redis answered (`WRONGTYPE`, an overflow): it is there.
                answered();
                tracing::debug!(op, error = %detail, "redis store refused an argument");
            }
        }
        Err(error)
    }
}

/// Drives both lazy connections once and loads both scripts (on the counters'), so the first
/// requests neither wait for the TCP handshake nor all miss the script cache at once. Failures
/// are left for the requests to report.
async fn warm_up(mut counters: ConnectionManager, mut values: ConnectionManager) {
    let load = async {
        TAKE_SCRIPT.load_async(&mut counters).await?;
        HIT_SCRIPT.load_async(&mut counters).await?;
        redis::cmd("PING").query_async::<()>(&mut values).await
    };
    match tokio::time::timeout(WARM_UP_TIMEOUT, load).await {
        Ok(Ok(_)) => tracing::debug!("redis store connected, scripts loaded"),
        Ok(Err(err)) => tracing::debug!(error = %err, "redis store warm-up failed"),
        Err(_) => tracing::debug!("redis store warm-up timed out"),
    }
}

/// No Nagle delay (it alone can exceed a 50 ms budget), and a connection to a vanished host is
/// closed by the kernel rather than left waiting for answers that will never come.
fn tcp_settings() -> TcpSettings {
    let keepalive = TcpKeepalive::new().with_time(Duration::from_secs(5)).with_interval(Duration::from_secs(1));
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    let keepalive = keepalive.with_retries(3);
    let settings = TcpSettings::default().set_nodelay(true).set_keepalive(keepalive);
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    let settings = settings.set_user_timeout(TCP_USER_TIMEOUT);
    settings
}

/// A client for `info`; a `rediss://` one trusts `tls`'s CA (else the
/// Mozilla roots) and presents its client certificate, if it has them.
pub(crate) fn client(info: redis::ConnectionInfo, tls: Option<&RedisTls>) -> redis::RedisResult<redis::Client> {
    // redis builds its rustls configs with the process's provider: ring, as
    // every config of the gateway's own, unless one was installed before
    // (an error then, and nothing to do).
    if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    match tls {
        Some(RedisTls { ca, client, .. }) if ca.is_some() || client.is_some() => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: client.as_ref().map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.expose().to_vec(),
                }),
                root_cert: ca.clone(),
            },
        ),
        _ => redis::Client::open(info),
    }
}

/// `url` as the store connects to it: `redis://` or, for TLS, `rediss://`
/// (in any case), to a host; what is wrong is said without the URL (it may
/// carry a password).
pub(crate) fn parse_url(url: &str) -> Result<redis::ConnectionInfo, String> {
    match url.split_once('#') {
        Some((_, "insecure")) => {
            return Err("#insecure (Redis's certificate not checked) is not offered: give the CA that issued it \
                        ([store.tls] ca)"
                .into());
        }
        Some(_) => return Err("a `#` ends the URL (percent-encode one in a password: %23)".into()),
        None => {}
    }
    let info = url.into_connection_info().map_err(|e| format!("not a Redis URL ({e})"))?;
    match info.addr() {
        redis::ConnectionAddr::Tcp(..) | redis::ConnectionAddr::TcpTls { insecure: false, .. } => Ok(info),
        _ => Err("a Redis URL here is redis://HOST:PORT/DB or, for TLS, rediss://HOST:PORT/DB".into()),
    }
}

fn invalid_url(err: &RedisError) -> StoreError {
    StoreError::Invalid(format!("invalid redis URL: {err}"))
}

fn check(args: Result<(), String>) -> Result<(), StoreError> {
    args.map_err(StoreError::Invalid)
}

/// Redis' own refusals that are the caller's doing are `Invalid`; everything else means the
/// store cannot serve right now (down, loading, read-only replica, out of memory, busy).
fn classify(op: &'static str, err: RedisError) -> StoreError {
    let message = err.to_string();
    // A refusal inside MULTI/EXEC (incr) arrives as a pipeline error, not a plain server error.
    let server_errors = err.into_server_errors();
    let caller_error = server_errors.iter().flat_map(|errors| errors.iter()).find_map(|(_, error)| {
        let detail = error.details().unwrap_or_default();
        match error.code() {
            "WRONGTYPE" => Some("the key holds another kind of value".to_owned()),
            "ERR" if detail.contains("not an integer") || detail.contains("overflow") => Some(detail.to_owned()),
            _ => None,
        }
    });
    match caller_error {
        Some(detail) => StoreError::Invalid(format!("{op}: {detail}")),
        None => StoreError::Unavailable(format!("{op}: {message}")),
    }
}

/// The scripts return doubles as `%.17g` text, which Lua-to-Redis integer replies would truncate.
fn parse_number(op: &'static str, text: &str) -> Result<f64, StoreError> {
    text.parse().map_err(|_| StoreError::Unavailable(format!("{op}: unexpected reply from redis: {text:?}")))
}

/// Rounds a non-negative number of milliseconds up; NaN and negatives become 0, overflow saturates.
fn ceil_ms(ms: f64) -> u64 {
    ms.ceil() as u64
}

/// What `take` reports, from the script's decision and the tokens left.
fn bucket_result(capacity: u64, refill_per_second: f64, cost: u64, allowed: bool, tokens: f64) -> LimitResult {
    let retry_after_ms = if allowed { 0 } else { ceil_ms((cost as f64 - tokens) / refill_per_second * 1000.0).max(1) };
    LimitResult {
        allowed,
        limit: capacity,
        remaining: tokens.floor() as u64,
        reset_ms: ceil_ms((capacity as f64 - tokens) / refill_per_second * 1000.0),
        retry_after_ms,
    }
}

/// The state `hit` read and wrote: `cur` includes the hit when it was allowed.
#[derive(Debug, Clone, Copy)]
struct WindowCounts {
    prev: f64,
    cur: f64,
    elapsed: u64,
}

/// What `hit` reports, from the script's decision and the window it saw.
fn window_result(limit: u64, window_ms: u64, cost: u64, allowed: bool, counts: WindowCounts) -> LimitResult {
    let WindowCounts { prev, cur, elapsed } = counts;
    let window = window_ms as f64;
    let left = window_ms.saturating_sub(elapsed);
    let reset_ms = wasmgate_common::memstore::window_reset_ms(prev > 0.0, cur > 0.0, window_ms, elapsed);
    let estimate = prev * (window - elapsed as f64) / window + cur;
    let remaining = limit.saturating_sub(ceil_ms(estimate));
    let retry_after_ms = if allowed {
        0
    } else {
        let (limit, cost) = (limit as f64, cost as f64);
        let room_now = limit - cur - cost;
        let wait = if room_now >= 0.0 && prev > 0.0 {
            // The previous window's weight alone decays enough before this window ends.
            ceil_ms((window - elapsed as f64) - room_now * window / prev)
        } else if cur > 0.0 {
            // Next window: this window's count becomes the previous one and decays in turn.
            left + ceil_ms(window - (limit - cost) * window / cur)
        } else {
            left
        };
        wait.clamp(1, 2 * window_ms)
    };
    LimitResult { allowed, limit, remaining, reset_ms, retry_after_ms }
}
