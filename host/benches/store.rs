//! What TLS to Redis costs the gateway: the process's CPU time for one
//! rate-limit `take` on the Redis store, over `redis://` and over
//! `rediss://` (with a client certificate), each against a real
//! `redis-server` on loopback. The figure is CPU, not wall time: the round
//! trip to Redis is waiting, the same either way; what TLS adds is the
//! gateway's encryption of each command and reply.

#![expect(clippy::expect_used, clippy::panic, reason = "bench setup: a failure should stop the bench")]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use wasmgate::plugin::caps::redis::RedisStore;

#[path = "../src/plugin/caps/redis/tests/server.rs"]
#[expect(dead_code, reason = "shared with the store's tests: restarts and pauses are theirs")]
mod server;

#[path = "../../tests/src/certs.rs"]
#[expect(dead_code, reason = "shared with the end-to-end tests: listeners and revocation are theirs")]
mod certs;

/// This process's CPU time (user and system, every thread).
fn cpu() -> Duration {
    // SAFETY: getrusage writes only into the struct it is given.
    #[expect(unsafe_code, reason = "getrusage: the one way to read the process's CPU time")]
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn store(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let ca = certs::Ca::new(dir.path(), "redis-ca");
    let issued = ca.server("redis", &["127.0.0.1"]);
    let client = ca.client("gateway");
    let plain = server::RedisServer::start();
    let tls = server::RedisServer::start_tls(&ca.pem, &issued.cert, &issued.key);
    let files = wasmgate::tls::redis_tls(Some(&ca.pem), Some((&client.cert, &client.key))).expect("TLS files");

    let mut group = c.benchmark_group("redis_store_take_cpu");
    for (name, server, files) in [("redis", &plain, None), ("rediss", &tls, Some(&files))] {
        let store = {
            let _runtime = runtime.enter();
            RedisStore::new(&server.url(), Duration::from_secs(5), files).expect("store")
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let start = cpu();
                    for _ in 0..iters {
                        let taken = store.take("bench", 1_000_000_000, 1_000_000.0, 1).await;
                        assert!(taken.is_ok(), "{taken:?}");
                    }
                    cpu().saturating_sub(start)
                })
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = store
}
criterion_main!(benches);
