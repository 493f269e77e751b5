//! The arithmetic on its own, then the store against a real `redis-server` of each test's own:
//! exactness under concurrency from two "gateways", real-time refill and decay, and the
//! failure modes (down at start, killed, hung, script cache flushed).

mod server;

#[path = "../../../../../tests/src/certs.rs"]
#[expect(dead_code, reason = "shared with the end-to-end tests: listeners and revocation are theirs")]
mod certs;

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use server::RedisServer;
use tokio::task::JoinSet;

use super::*;

/// Long enough that a loaded test machine never times out a healthy Redis, which would make an
/// exactness count wrong (a timed-out `take` may still have taken).
const PATIENT: Duration = Duration::from_secs(5);
/// The gateway's default, for the failure tests.
const HOST_DEFAULT: Duration = Duration::from_millis(50);
/// How much later than its timeout a failing call may return on a busy test machine.
const SLACK: Duration = Duration::from_millis(500);
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn store(server: &RedisServer, timeout: Duration) -> RedisStore {
    RedisStore::new(&server.url(), timeout, None).unwrap()
}

/// Polls `op` until it succeeds, for recoveries; panics with the last error after `limit`.
async fn eventually<T>(limit: Duration, mut op: impl AsyncFnMut() -> Result<T, StoreError>) -> (T, Duration) {
    let start = Instant::now();
    loop {
        match op().await {
            Ok(value) => return (value, start.elapsed()),
            Err(err) if start.elapsed() > limit => panic!("no recovery within {limit:?}; last error: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

// ---- The arithmetic, without Redis -------------------------------------------------------

#[test]
fn bucket_result_follows_the_formulas() {
    // 2.5 tokens left of 10 at 5/s: full again in 1.5 s. (Values exact in binary, so the
    // expected numbers are the formulas' and not rounding noise.)
    let allowed = bucket_result(10, 5.0, 1, true, 2.5);
    assert_eq!(allowed, LimitResult { allowed: true, limit: 10, remaining: 2, reset_ms: 1500, retry_after_ms: 0 });
    // 0.5 tokens at 4/s, cost 3: 2.5 missing = 625 ms; 9.5 missing to full = 2375 ms.
    let refused = bucket_result(10, 4.0, 3, false, 0.5);
    assert_eq!(refused, LimitResult { allowed: false, limit: 10, remaining: 0, reset_ms: 2375, retry_after_ms: 625 });
    // A full bucket after a free peek.
    assert_eq!(bucket_result(4, 1.0, 0, true, 4.0).reset_ms, 0);
}

#[test]
fn window_result_waits_for_the_previous_window_to_decay() {
    // p = 50, c = 40, 250 ms into a 1000 ms window: estimate 50 × 0.75 + 40 = 77.5, and cost 25
    // is refused (102.5 > 100). Room comes when 50 × (750 - t)/1000 ≤ 100 - 40 - 25: t ≥ 50.
    let counts = WindowCounts { prev: 50.0, cur: 40.0, elapsed: 250 };
    let refused = window_result(100, 1000, 25, false, counts);
    // Nothing counts any more once this window's 40 have decayed through the next one: 1750.
    assert_eq!(refused, LimitResult { allowed: false, limit: 100, remaining: 22, reset_ms: 1750, retry_after_ms: 50 });
}

#[test]
fn window_result_waits_into_the_next_window_when_the_current_count_is_too_high() {
    // c = 90 alone leaves no room for cost 20 this window; next window p = 90 must decay to
    // 80: 90 × (1000 - e)/1000 ≤ 80 → e ≥ 111.1 → 112; plus the 600 ms left of this one.
    let counts = WindowCounts { prev: 10.0, cur: 90.0, elapsed: 400 };
    let refused = window_result(100, 1000, 20, false, counts);
    assert_eq!(refused.retry_after_ms, 600 + 112);
    assert_eq!(refused.reset_ms, 600 + 1000, "this window's 90 count until the next one ends");
    assert_eq!(refused.remaining, 4, "100 - ceil(10 × 0.6 + 90)");
}

#[test]
fn window_result_floors_remaining_at_zero_and_rounds_the_estimate_up() {
    let full = window_result(10, 1000, 1, true, WindowCounts { prev: 3.0, cur: 9.0, elapsed: 500 });
    assert_eq!((full.remaining, full.retry_after_ms), (0, 0));
    let partial = window_result(10, 1000, 1, true, WindowCounts { prev: 1.0, cur: 5.0, elapsed: 999 });
    assert_eq!(partial.remaining, 4, "estimate 5.001 counts as 6");
}

#[test]
fn window_result_reset_is_when_nothing_counts_and_never_before_retry_after() {
    // The current window full, half-way through: a retry passes 100 ms into the next window,
    // but the ten hits weigh in until that one ends. (Before: reset 500, under retry 600.)
    let refused = window_result(10, 1000, 1, false, WindowCounts { prev: 0.0, cur: 10.0, elapsed: 500 });
    assert_eq!((refused.retry_after_ms, refused.reset_ms), (600, 1500), "{refused:?}");
    // Only the previous window's hits: they stop counting when this one ends.
    let peek = window_result(10, 1000, 0, true, WindowCounts { prev: 4.0, cur: 0.0, elapsed: 300 });
    assert_eq!((peek.remaining, peek.reset_ms), (7, 700), "{peek:?}");
    // Nothing counted: fully available now.
    let fresh = window_result(10, 1000, 0, true, WindowCounts { prev: 0.0, cur: 0.0, elapsed: 300 });
    assert_eq!((fresh.remaining, fresh.reset_ms), (10, 0), "{fresh:?}");
    for elapsed in [0, 1, 333, 500, 999] {
        for (prev, cur) in [(0.0, 10.0), (10.0, 0.0), (5.0, 5.0), (10.0, 9.0), (3.0, 10.0)] {
            for cost in 1..=10 {
                let result = window_result(10, 1000, cost, false, WindowCounts { prev, cur, elapsed });
                assert!(result.reset_ms >= result.retry_after_ms, "p={prev} c={cur} e={elapsed}: {result:?}");
            }
        }
    }
}

// ---- Arguments and construction ----------------------------------------------------------

#[tokio::test]
async fn arguments_are_checked_before_any_network_call() {
    // Nothing listens there: a call that reached the network would be Unavailable, not Invalid.
    let store = RedisStore::new(&server::url_for(RedisServer::unused_port()), PATIENT, None).unwrap();
    let long_key = "k".repeat(MAX_KEY_BYTES + 1);
    let big_value = vec![0_u8; MAX_VALUE_BYTES + 1];
    let cases: Vec<(&str, Result<(), StoreError>)> = vec![
        ("key", store.get(&long_key).await.map(drop)),
        ("key", store.delete(&long_key).await.map(drop)),
        ("value", store.set("k", &big_value, None).await),
        ("ttl_ms", store.set("k", b"v", Some(0)).await),
        ("ttl_ms", store.set("k", b"v", Some(MAX_TTL_MS + 1)).await),
        ("ttl_ms", store.incr("k", 1, Some(MAX_TTL_MS + 1)).await.map(drop)),
        ("key", store.incr(&long_key, 1, None).await.map(drop)),
        ("capacity", store.take("k", 0, 1.0, 0).await.map(drop)),
        ("refill_per_second", store.take("k", 1, 0.0, 1).await.map(drop)),
        ("refill_per_second", store.take("k", 1, -1.0, 1).await.map(drop)),
        ("refill_per_second", store.take("k", 1, f64::NAN, 1).await.map(drop)),
        ("refill_per_second", store.take("k", 1, f64::INFINITY, 1).await.map(drop)),
        ("cost", store.take("k", 5, 1.0, 6).await.map(drop)),
        ("key", store.take(&long_key, 5, 1.0, 1).await.map(drop)),
        ("limit", store.hit("k", 0, 1000, 1).await.map(drop)),
        ("cost", store.hit("k", 10, 1000, 11).await.map(drop)),
        ("window_ms", store.hit("k", 10, 0, 1).await.map(drop)),
        ("window_ms", store.hit("k", 10, MAX_WINDOW_MS + 1, 1).await.map(drop)),
        ("key", store.hit(&long_key, 10, 1000, 1).await.map(drop)),
    ];
    for (argument, result) in cases {
        match result {
            Err(StoreError::Invalid(message)) => assert!(message.contains(argument), "{message:?} names {argument}"),
            other => panic!("{argument}: expected Invalid, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn new_rejects_bad_urls_and_a_zero_timeout_but_not_a_down_redis() {
    for url in ["", "not a url", "http://127.0.0.1:6379/", "redis://127.0.0.1:6379/not-a-db"] {
        match RedisStore::new(url, HOST_DEFAULT, None) {
            Err(StoreError::Invalid(message)) => assert!(message.contains("URL"), "{url:?}: {message}"),
            other => panic!("{url:?}: expected Invalid, got {other:?}"),
        }
    }
    assert!(matches!(RedisStore::new("redis://127.0.0.1:6379/", Duration::ZERO, None), Err(StoreError::Invalid(_))));
    // TLS in any case; never without checking Redis's certificate.
    let tls = |url: &str| parse_url(url).map(|info| matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }));
    assert_eq!(tls("REDISS://h:6380/1"), Ok(true));
    assert_eq!(tls("Redis://h/0"), Ok(false));
    assert!(tls("rediss://h/0#insecure").unwrap_err().contains("#insecure"));
    assert!(tls("redis://:pa#ss@h/0").unwrap_err().contains("%23"));
    assert!(tls("redis+unix:///tmp/redis.sock").is_err());
    // A password in the URL stays out of what the store shows and of its errors.
    let store = RedisStore::new("redis://:hunter2@127.0.0.1:1/", HOST_DEFAULT, None).unwrap();
    assert!(!format!("{store:?}").contains("hunter2"), "{store:?}");
    let error = RedisStore::new("redis://:hunter2@127.0.0.1:1/x", HOST_DEFAULT, None).unwrap_err();
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

/// Over TLS (`rediss://`) to a Redis that asks for a client certificate:
/// the store trusts the CA given and gives its certificate; without one,
/// Redis refuses the handshake, and with another CA Redis is not trusted:
/// the store is unavailable, not broken, and says why.
#[tokio::test]
async fn the_store_speaks_tls_and_gives_the_client_certificate_redis_asks_for() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::Ca::new(dir.path(), "redis-ca");
    let server = ca.server("redis", &["127.0.0.1"]);
    let client = ca.client("gateway");
    let redis = RedisServer::start_tls(&ca.pem, &server.cert, &server.key);
    let tls = crate::tls::redis_tls(Some(&ca.pem), Some((&client.cert, &client.key))).unwrap();
    let store = RedisStore::new(&redis.url(), PATIENT, Some(&tls)).unwrap();
    assert_eq!(store.incr("k", 2, None).await.unwrap(), 2);
    assert_eq!(store.incr("k", 1, None).await.unwrap(), 3);

    let without = crate::tls::redis_tls(Some(&ca.pem), None).unwrap();
    let store = RedisStore::new(&redis.url(), PATIENT, Some(&without)).unwrap();
    match store.incr("k", 1, None).await {
        Err(StoreError::Unavailable(why)) => assert!(why.contains("CertificateRequired"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // Nor is a Redis whose certificate is not from the CA trusted.
    let other = certs::Ca::new(dir.path(), "other-ca");
    let untrusting = crate::tls::redis_tls(Some(&other.pem), Some((&client.cert, &client.key))).unwrap();
    let store = RedisStore::new(&redis.url(), PATIENT, Some(&untrusting)).unwrap();
    match store.incr("k", 1, None).await {
        Err(StoreError::Unavailable(why)) => assert!(why.contains("invalid peer certificate"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn new_outside_a_tokio_runtime_is_an_error_not_a_panic() {
    match RedisStore::new("redis://127.0.0.1:6379/", HOST_DEFAULT, None) {
        Err(StoreError::Invalid(message)) => assert!(message.contains("Tokio runtime"), "{message}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn the_store_is_cheap_to_share() {
    fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    send_sync_clone::<RedisStore>();
    assert!(size_of::<RedisStore>() <= size_of::<usize>(), "one Arc");
}

// ---- Key-value ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_set_delete_and_ttl() {
    let server = RedisServer::start();
    let store = store(&server, PATIENT);
    let mut redis = server.connection().await;

    assert_eq!(store.get("absent").await, Ok(None));
    let binary: Vec<u8> = (0..=255).collect();
    store.set("tenant-a/bin", &binary, None).await.unwrap();
    assert_eq!(store.get("tenant-a/bin").await, Ok(Some(binary.clone())));
    // Stored as given: the caller's prefix is the whole namespace.
    let raw: Vec<u8> = redis.get("tenant-a/bin").await.unwrap();
    assert_eq!(raw, binary);
    let pttl: i64 = redis.pttl("tenant-a/bin").await.unwrap();
    assert_eq!(pttl, -1, "no ttl_ms: no expiry");

    store.set("short", b"v", Some(1500)).await.unwrap();
    let pttl: i64 = redis.pttl("short").await.unwrap();
    assert!((1..=1500).contains(&pttl), "PTTL {pttl}");
    // A later set without a TTL replaces the expiry too.
    store.set("short", b"w", None).await.unwrap();
    assert_eq!(redis.pttl::<_, i64>("short").await.unwrap(), -1);

    store.set("gone", b"v", Some(30)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.get("gone").await, Ok(None), "expired");

    // The limits themselves are accepted.
    let max_key = "k".repeat(MAX_KEY_BYTES);
    let max_value = vec![7_u8; MAX_VALUE_BYTES];
    store.set(&max_key, &max_value, Some(MAX_TTL_MS)).await.unwrap();
    assert_eq!(store.get(&max_key).await.unwrap().map(|v| v.len()), Some(MAX_VALUE_BYTES));

    assert_eq!(store.delete("tenant-a/bin").await, Ok(true));
    assert_eq!(store.delete("tenant-a/bin").await, Ok(false));
    assert_eq!(store.get("tenant-a/bin").await, Ok(None));
}

// ---- Counters ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_is_atomic_across_two_clients_and_keeps_the_first_ttl() {
    let server = RedisServer::start();
    let gateways = [store(&server, PATIENT), store(&server, PATIENT)];
    let mut redis = server.connection().await;

    // The creator's TTL is the one that stays.
    assert_eq!(gateways[0].incr("hits", 5, Some(20_000)).await, Ok(5));
    let mut tasks = JoinSet::new();
    for task in 0..16_i64 {
        let store = gateways[usize::try_from(task % 2).unwrap()].clone();
        tasks.spawn(async move {
            for round in 0..50 {
                // Mixed signs, and a longer TTL each time that must not replace the first.
                let delta = if round % 5 == 0 { -1 } else { task + 1 };
                store.incr("hits", delta, Some(600_000)).await.unwrap();
            }
        });
    }
    tasks.join_all().await;
    let per_task = |task: i64| -10 + 40 * (task + 1);
    let expected = 5 + (0..16).map(per_task).sum::<i64>();
    assert_eq!(gateways[1].incr("hits", 0, None).await, Ok(expected));
    let pttl: i64 = redis.pttl("hits").await.unwrap();
    assert!((1..=20_000).contains(&pttl), "first TTL kept, PTTL {pttl}");

    // 16 tasks racing to create a key: one creates it, with its TTL, and the sum is exact.
    let mut tasks = JoinSet::new();
    for task in 0..16 {
        let store = gateways[task % 2].clone();
        tasks.spawn(async move { store.incr("race", 1, Some(30_000)).await.unwrap() });
    }
    let mut seen = tasks.join_all().await;
    seen.sort_unstable();
    assert_eq!(seen, (1..=16).collect::<Vec<_>>(), "each increment saw a distinct value");
    let pttl: i64 = redis.pttl("race").await.unwrap();
    assert!((1..=30_000).contains(&pttl), "PTTL {pttl}");

    // An existing key without expiry stays without: the TTL is only for a key incr creates.
    gateways[0].incr("forever", 1, None).await.unwrap();
    gateways[0].incr("forever", 1, Some(1000)).await.unwrap();
    assert_eq!(redis.pttl::<_, i64>("forever").await.unwrap(), -1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_on_the_wrong_kind_of_value_is_invalid_not_unavailable() {
    let server = RedisServer::start();
    let store = store(&server, PATIENT);
    store.set("text", b"hello", None).await.unwrap();
    assert!(matches!(store.incr("text", 1, None).await, Err(StoreError::Invalid(_))));
    let r = store.incr("text", 1, Some(1000)).await;
    assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
    store.incr("big", i64::MAX, None).await.unwrap();
    assert!(matches!(store.incr("big", 1, None).await, Err(StoreError::Invalid(_))), "overflow");
    store.take("bucket", 5, 1.0, 1).await.unwrap();
    assert!(matches!(store.get("bucket").await, Err(StoreError::Invalid(_))), "a bucket is no value");
    assert!(matches!(store.take("text", 5, 1.0, 1).await, Err(StoreError::Invalid(_))), "a value is no bucket");
}

// ---- Token bucket ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_grants_exactly_capacity_across_two_gateways() {
    let server = RedisServer::start();
    let gateways = [store(&server, PATIENT), store(&server, PATIENT)];
    // A refill of one token per ~3 hours: none arrives while the test runs.
    let (capacity, refill) = (100, 0.0001);
    let mut tasks = JoinSet::new();
    for n in 0..1000 {
        let store = gateways[n % 2].clone();
        tasks.spawn(async move { store.take("login:203.0.113.7", capacity, refill, 1).await.unwrap() });
    }
    let results = tasks.join_all().await;
    let granted: Vec<_> = results.iter().filter(|r| r.allowed).collect();
    assert_eq!(granted.len(), 100, "exactly capacity granted");
    let mut remaining: Vec<u64> = granted.iter().map(|r| r.remaining).collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..100).collect::<Vec<_>>(), "every grant saw its own token count");
    for refused in results.iter().filter(|r| !r.allowed) {
        assert_eq!((refused.limit, refused.remaining), (100, 0));
        // One token at 0.0001/s: 10_000 s, give or take what refilled meanwhile.
        assert!((9_990_000..=10_000_000).contains(&refused.retry_after_ms), "{refused:?}");
        assert!((999_000_000..=1_000_000_000).contains(&refused.reset_ms), "{refused:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_refills_over_real_time_and_expires_when_full() {
    let server = RedisServer::start();
    let store = store(&server, PATIENT);
    let mut redis = server.connection().await;
    let (capacity, refill) = (10, 10.0);

    let first = store.take("b", capacity, refill, 1).await.unwrap();
    assert_eq!(first, LimitResult { allowed: true, limit: 10, remaining: 9, reset_ms: 100, retry_after_ms: 0 });
    let pttl: i64 = redis.pttl("b").await.unwrap();
    assert!((1..=100).contains(&pttl), "expires when full again, PTTL {pttl}");

    let drained = store.take("b", capacity, refill, 9).await.unwrap();
    assert!(drained.allowed, "{drained:?}");
    assert!((900..=1000).contains(&drained.reset_ms), "{drained:?}");
    let refused = store.take("b", capacity, refill, 5).await.unwrap();
    assert!(!refused.allowed, "{refused:?}");
    assert!((400..=500).contains(&refused.retry_after_ms), "5 tokens at 10/s: {refused:?}");

    // Half a second later about 5 tokens are back (±1 for scheduling).
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = store.take("b", capacity, refill, 0).await.unwrap();
    let expected = 10.0 * start.elapsed().as_secs_f64();
    assert!((later.remaining as f64 - expected).abs() <= 1.0, "{later:?}, expected ~{expected}");

    // After a full refill the key is gone, and a fresh bucket is a full one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(!redis.exists::<_, bool>("b").await.unwrap(), "expired when full");
    assert_eq!(store.take("b", capacity, refill, 10).await.unwrap().remaining, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_retry_after_is_when_a_retry_succeeds() {
    let server = RedisServer::start();
    let store = store(&server, PATIENT);
    store.take("r", 3, 20.0, 3).await.unwrap();
    let refused = store.take("r", 3, 20.0, 2).await.unwrap();
    assert!(!refused.allowed && (1..=100).contains(&refused.retry_after_ms), "{refused:?}");
    tokio::time::sleep(Duration::from_millis(refused.retry_after_ms + 5)).await;
    let retried = store.take("r", 3, 20.0, 2).await.unwrap();
    assert!(retried.allowed, "{retried:?} after {refused:?}");
}

// ---- Sliding window ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_allows_exactly_the_limit_across_two_gateways() {
    let server = RedisServer::start();
    let gateways = [store(&server, PATIENT), store(&server, PATIENT)];
    let mut tasks = JoinSet::new();
    for n in 0..500 {
        let store = gateways[n % 2].clone();
        // A one-day window: the test cannot straddle a boundary that changes the count.
        tasks.spawn(async move { store.hit("api:tenant-7", 100, DAY_MS, 1).await.unwrap() });
    }
    let results = tasks.join_all().await;
    assert_eq!(results.iter().filter(|r| r.allowed).count(), 100, "exactly the limit");
    let mut remaining: Vec<u64> = results.iter().filter(|r| r.allowed).map(|r| r.remaining).collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..100).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_reports_sane_values_and_expires_after_two_windows() {
    let server = RedisServer::start();
    let store = store(&server, PATIENT);
    let mut redis = server.connection().await;
    for n in 1..=10 {
        let result = store.hit("w", 10, DAY_MS, 1).await.unwrap();
        assert!(result.allowed && result.remaining == 10 - n && result.retry_after_ms == 0, "{result:?}");
        assert!((DAY_MS + 1..=2 * DAY_MS).contains(&result.reset_ms), "{result:?}");
    }
    let pttl: i64 = redis.pttl("w").await.unwrap();
    assert!((2 * DAY_MS - 60_000..=2 * DAY_MS).contains(&u64::try_from(pttl).unwrap()), "PTTL {pttl}");

    let refused = store.hit("w", 10, DAY_MS, 1).await.unwrap();
    assert!(!refused.allowed && refused.remaining == 0, "{refused:?}");
    // Next window: 10 × (1 - e) + 1 ≤ 10 → e = a tenth of the window, after this one ends;
    // the ten hits count until the next window ends.
    assert_eq!(refused.retry_after_ms, refused.reset_ms - DAY_MS + DAY_MS / 10, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_retry_after_is_when_a_retry_succeeds() {
    let server = RedisServer::start();
    let store = store(&server, PATIENT);
    // 300 ms windows: the wait crosses at least one boundary, so the previous window's
    // weighting is exercised on the real server clock.
    for _ in 0..5 {
        let mut refused = None;
        for _ in 0..20 {
            let result = store.hit("short", 5, 300, 1).await.unwrap();
            if !result.allowed {
                refused = Some(result);
                break;
            }
        }
        let refused = refused.expect("a burst of hits in one window is refused");
        assert!((1..=600).contains(&refused.retry_after_ms), "{refused:?}");
        tokio::time::sleep(Duration::from_millis(refused.retry_after_ms + 5)).await;
        let retried = store.hit("short", 5, 300, 1).await.unwrap();
        assert!(retried.allowed, "{retried:?} after {refused:?}");
    }
}

/// `reset_ms` is when the limit is fully available again on the real server clock: a hit of
/// the whole limit at once passes after it (it did not after the old reset, the window's roll,
/// while the rolled window's hits still weighed in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_reset_is_when_the_whole_limit_is_available_again() {
    let server = RedisServer::start();
    let store = store(&server, PATIENT);
    for _ in 0..3 {
        let mut refused = None;
        for _ in 0..20 {
            let result = store.hit("reset", 5, 300, 1).await.unwrap();
            if !result.allowed {
                refused = Some(result);
                break;
            }
        }
        let refused = refused.expect("a burst of hits in one window is refused");
        assert!(refused.reset_ms >= refused.retry_after_ms, "{refused:?}");
        assert!((1..=600).contains(&refused.reset_ms), "{refused:?}");
        tokio::time::sleep(Duration::from_millis(refused.reset_ms + 5)).await;
        let whole = store.hit("reset", 5, 300, 5).await.unwrap();
        assert!(whole.allowed, "{whole:?} after {refused:?}");
    }
}

// ---- Failures ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_down_at_start_is_unavailable_quickly_then_used_once_it_is_up() {
    let port = RedisServer::unused_port();
    let store = RedisStore::new(&server::url_for(port), HOST_DEFAULT, None).unwrap();
    for _ in 0..3 {
        let start = Instant::now();
        let result = store.take("k", 10, 1.0, 1).await;
        assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
        assert!(start.elapsed() < HOST_DEFAULT + SLACK, "bounded by the timeout: {:?}", start.elapsed());
    }
    assert!(matches!(store.get("k").await, Err(StoreError::Unavailable(_))));

    let server = RedisServer::start_on(port);
    let (_, waited) = eventually(Duration::from_secs(10), async || store.incr("k", 1, None).await).await;
    // The reconnect backoff is capped at 1 s; the rest is slack for a busy machine.
    assert!(waited < Duration::from_secs(5), "reconnected in {waited:?}");
    // Under the host's 50 ms a loaded test machine may time out one more call.
    let (taken, _) = eventually(Duration::from_secs(5), async || store.take("t", 10, 1.0, 1).await).await;
    let (hit, _) = eventually(Duration::from_secs(5), async || store.hit("h", 10, 1000, 1).await).await;
    assert!(taken.allowed && hit.allowed, "{taken:?} {hit:?}");
    drop(server);
}

/// Values (up to a MiB each) and counters go on connections of their own:
/// queued on one, a few large cache values held every rate limit behind
/// them past its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_and_counters_go_on_connections_of_their_own() {
    let server = RedisServer::start();
    let store = store(&server, PATIENT);
    let mut admin = server.connection().await;
    let list = async |admin: &mut redis::aio::MultiplexedConnection| -> Vec<String> {
        let list: String = redis::cmd("CLIENT").arg("LIST").query_async(admin).await.unwrap();
        list.lines().map(str::to_owned).collect()
    };
    // The store's, less this one.
    let store_clients = async |admin: &mut redis::aio::MultiplexedConnection| -> Vec<String> {
        list(admin).await.into_iter().filter(|c| !c.contains("cmd=client|list")).collect()
    };
    // Its warm-up done: a ping on one, the scripts loaded on the other.
    let start = Instant::now();
    loop {
        let clients = store_clients(&mut admin).await;
        if clients.iter().any(|c| c.contains("cmd=ping")) && clients.iter().any(|c| c.contains("cmd=script|load")) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no warm-up: {clients:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.set("big", &vec![b'x'; 1 << 20], None).await.unwrap();
    store.incr("n", 1, None).await.unwrap();
    let clients = store_clients(&mut admin).await;
    assert_eq!(clients.len(), 2, "{clients:#?}");
    // Each command last on its own connection.
    assert!(clients.iter().any(|c| c.contains("cmd=set")), "{clients:#?}");
    assert!(clients.iter().any(|c| c.contains("cmd=incrby")), "{clients:#?}");
}

/// A refusal Redis answers (`WRONGTYPE`, not an integer) is an answer: a
/// lane that had timed out is reachable again after it, and its calls no
/// longer wait their turn to find out (one at a time, the rest refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_redis_answers_shows_it_is_back() {
    let server = RedisServer::start();
    let store = store(&server, HOST_DEFAULT);
    eventually(Duration::from_secs(5), async || store.set("word", b"abc", None).await).await;
    server.pause();
    assert!(matches!(store.incr("n", 1, None).await, Err(StoreError::Unavailable(_))));
    server.resume();
    let refused = eventually(Duration::from_secs(5), async || match store.incr("word", 1, None).await {
        Err(StoreError::Invalid(detail)) => Ok(detail),
        other => Err(StoreError::Unavailable(format!("{other:?}"))),
    })
    .await;
    assert!(refused.0.contains("not an integer"), "{refused:?}");
    let calls = futures::future::join_all((0..5).map(|_| store.incr("n", 1, None))).await;
    assert!(calls.iter().all(Result::is_ok), "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_is_unavailable_then_used_again_after_restart() {
    let mut server = RedisServer::start();
    let store = store(&server, HOST_DEFAULT);
    eventually(Duration::from_secs(5), async || store.set("k", b"v", None).await).await;

    server.kill();
    for _ in 0..5 {
        let start = Instant::now();
        let result = store.get("k").await;
        assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");
        assert!(start.elapsed() < HOST_DEFAULT + SLACK, "{:?}", start.elapsed());
    }
    // While it is unreachable, one call at a time asks; the others are
    // answered at once (each waited out the timeout, holding its instance).
    let calls = futures::future::join_all((0..5).map(|_| store.get("k"))).await;
    let told =
        calls.iter().filter(|r| matches!(r, Err(StoreError::Unavailable(d)) if d.contains("another call"))).count();
    // (Four, unless the probe ended before the others started.)
    assert!(told >= 3, "{calls:?}");

    server.restart();
    let (value, waited) = eventually(Duration::from_secs(10), async || store.get("k").await).await;
    assert_eq!(value, None, "a fresh server without persistence");
    assert!(waited < Duration::from_secs(5), "reconnected in {waited:?}");
    // The new server has no scripts: NOSCRIPT, load, run.
    let (taken, _) = eventually(Duration::from_secs(5), async || store.take("t", 10, 1.0, 1).await).await;
    assert!(taken.allowed, "{taken:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_a_round_of_reconnect_attempts_still_recovers() {
    let mut server = RedisServer::start();
    let store = store(&server, HOST_DEFAULT);
    eventually(Duration::from_secs(5), async || store.set("k", b"v", None).await).await;

    // One round is 7 attempts, at most ~5 s apart in total; requests keep coming meanwhile.
    server.kill();
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let start = Instant::now();
        assert!(matches!(store.get("k").await, Err(StoreError::Unavailable(_))));
        assert!(start.elapsed() < HOST_DEFAULT + SLACK, "{:?}", start.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    server.restart();
    let (_, waited) = eventually(Duration::from_secs(10), async || store.get("k").await).await;
    assert!(waited < Duration::from_secs(3), "reconnected in {waited:?}");
}

/// A limit whose `per` changed starts afresh, as in memory: the stored
/// window's index, of another length, read as a later window (a clock
/// stepped back), and its count never decayed.
#[tokio::test]
async fn hit_starts_afresh_when_the_window_length_changes() {
    let server = RedisServer::start();
    let store = store(&server, PATIENT);
    for _ in 0..10 {
        assert!(store.hit("w", 10, DAY_MS / 2, 1).await.unwrap().allowed);
    }
    assert!(!store.hit("w", 10, DAY_MS / 2, 1).await.unwrap().allowed, "the limit reached");
    let longer = store.hit("w", 10, DAY_MS, 1).await.unwrap();
    assert!(longer.allowed && longer.remaining == 9, "{longer:?}");
    let back = store.hit("w", 10, DAY_MS / 2, 1).await.unwrap();
    assert!(back.allowed && back.remaining == 9, "{back:?}");
}

#[tokio::test]
async fn a_bucket_holds_no_more_than_its_current_capacity() {
    let server = RedisServer::start();
    let store = store(&server, PATIENT);
    store.take("b", 100, 0.0001, 0).await.unwrap();
    let smaller = store.take("b", 10, 0.0001, 0).await.unwrap();
    assert_eq!((smaller.remaining, smaller.reset_ms), (10, 0), "{smaller:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_times_out_instead_of_hanging_requests() {
    let server = RedisServer::start();
    let store = store(&server, HOST_DEFAULT);
    eventually(Duration::from_secs(5), async || store.set("k", b"v", None).await).await;

    server.pause();
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.spawn(async move { store.take("k2", 10, 1.0, 1).await });
    }
    for result in tasks.join_all().await {
        assert!(matches!(result, Err(StoreError::Unavailable(ref m)) if m.contains("within")), "{result:?}");
    }
    assert!(start.elapsed() < HOST_DEFAULT + SLACK, "{:?}", start.elapsed());

    server.resume();
    let (value, _) = eventually(Duration::from_secs(5), async || store.get("k").await).await;
    assert_eq!(value, Some(b"v".to_vec()), "the same connection and data after the stall");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_script_cache_is_reloaded() {
    let server = RedisServer::start();
    let store = store(&server, PATIENT);
    let mut redis = server.connection().await;
    let hashes = [TAKE_SCRIPT.get_hash(), HIT_SCRIPT.get_hash()];

    store.take("t", 10, 1.0, 1).await.unwrap();
    store.hit("h", 10, DAY_MS, 1).await.unwrap();
    let loaded: Vec<bool> = redis::cmd("SCRIPT").arg("EXISTS").arg(&hashes).query_async(&mut redis).await.unwrap();
    assert_eq!(loaded, [true, true]);

    let () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut redis).await.unwrap();
    let loaded: Vec<bool> = redis::cmd("SCRIPT").arg("EXISTS").arg(&hashes).query_async(&mut redis).await.unwrap();
    assert_eq!(loaded, [false, false], "flushed");

    assert_eq!(store.take("t", 10, 1.0, 1).await.map(|r| r.remaining), Ok(8), "state kept, script reloaded");
    assert_eq!(store.hit("h", 10, DAY_MS, 1).await.map(|r| r.remaining), Ok(8));
    let loaded: Vec<bool> = redis::cmd("SCRIPT").arg("EXISTS").arg(&hashes).query_async(&mut redis).await.unwrap();
    assert_eq!(loaded, [true, true], "loaded again");
}

/// A store dropped at once (a reload refused after it was made) stops
/// connecting: its warm-up ends with it, here against a "Redis" that
/// accepts connections and never answers.
#[tokio::test]
async fn a_dropped_store_stops_connecting() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}/", silent.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counting = accepted.clone();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            counting.fetch_add(1, Ordering::SeqCst);
            held.push(conn);
        }
    });
    let store = RedisStore::new(&url, HOST_DEFAULT, None).unwrap();
    let start = Instant::now();
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "the warm-up never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(store);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_drop = accepted.load(Ordering::SeqCst);
    tokio::time::sleep(CONNECT_TIMEOUT * 4).await;
    assert_eq!(accepted.load(Ordering::SeqCst), after_drop, "connections made after the store was dropped");
    server.abort();
}

/// Which store a reload's snapshot holds is told by identity (a clone is the
/// store; another with the same settings is not): the gateway says "new
/// connections" by it, once the new config serves.
#[tokio::test]
async fn a_store_is_its_clones_and_not_another_alike() {
    // A port bound and never listened on: the warm-up's connections are
    // refused, by nothing else's server.
    let refusing = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    refusing.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let url = format!("redis://{}/", refusing.local_addr().unwrap().as_socket().unwrap());
    let redis = super::super::store::StoreBackend::Redis(RedisStore::new(&url, HOST_DEFAULT, None).unwrap());
    let alike = super::super::store::StoreBackend::Redis(RedisStore::new(&url, HOST_DEFAULT, None).unwrap());
    let memory = super::super::store::StoreBackend::unused();
    assert!(redis.is(&redis.clone()) && memory.is(&memory.clone()));
    assert!(!redis.is(&alike) && !redis.is(&memory) && !memory.is(&super::super::store::StoreBackend::unused()));
}
