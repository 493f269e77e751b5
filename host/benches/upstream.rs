//! Per-request cost of the traffic-management decisions: picking an
//! endpoint with each balancer, a breaker's acquire/record, the retry
//! budget's deposit, and the in-process store's rate-limit operations.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use wasmgate::config::{Balance, BreakerConfig, RetryBudgetConfig};
use wasmgate::upstream::balance::{Balancer, Candidate};
use wasmgate::upstream::breaker::Breaker;
use wasmgate::upstream::retry_budget::RetryBudget;
use wasmgate_common::memstore::{MemStore, SystemClock};

struct Ep {
    weight: u32,
    in_flight: u32,
    cost: f64,
}

impl Candidate for Ep {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn available(&self) -> bool {
        true
    }
    fn in_flight(&self) -> u32 {
        self.in_flight
    }
    fn latency_cost(&self) -> f64 {
        self.cost
    }
}

fn balancers(c: &mut Criterion) {
    let endpoints: Vec<Ep> =
        (0..10).map(|i| Ep { weight: 1 + i % 3, in_flight: i % 4, cost: 0.001 * f64::from(i + 1) }).collect();
    let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
    let names: Vec<String> = (0..endpoints.len()).map(|i| format!("10.0.0.{i}:80")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut group = c.benchmark_group("balance/10-endpoints");
    for (name, kind) in [
        ("round-robin", Balance::RoundRobin),
        ("weighted-round-robin", Balance::WeightedRoundRobin),
        ("least-request", Balance::LeastRequest),
        ("peak-ewma", Balance::PeakEwma),
        ("consistent-hash", Balance::ConsistentHash),
    ] {
        let b = Balancer::new(kind, &weights, &names);
        let mut key = 0u64;
        group.bench_function(name, |bench| {
            bench.iter(|| {
                key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                black_box(b.pick(&endpoints, Some(key), &[]))
            });
        });
    }
    group.finish();
}

fn resilience(c: &mut Criterion) {
    let mut group = c.benchmark_group("resilience");
    let breaker = Breaker::new(BreakerConfig {
        consecutive_failures: Some(5),
        failure_ratio: 0.5,
        min_requests: 20,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(5),
        max_open_for: Duration::from_secs(60),
        half_open_probes: 1,
    });
    group.bench_function("breaker/acquire+record", |b| {
        b.iter(|| {
            if let Ok(t) = breaker.try_acquire() {
                black_box(breaker.record(t, true));
            }
        });
    });
    let budget = RetryBudget::new(RetryBudgetConfig { percent: 20.0, min_per_second: 3 });
    group.bench_function("retry-budget/deposit", |b| b.iter(|| budget.deposit(tokio::time::Instant::now())));
    let store = MemStore::new(SystemClock, 1_000_000);
    let keys: Vec<String> = (0..1000).map(|i| format!("rate-limit:route:client-{i}")).collect();
    let mut i = 0usize;
    group.bench_function("memstore/take", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(store.take(&keys[i], 100, 10.0, 1))
        });
    });
    group.bench_function("memstore/hit", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(store.hit(&keys[i], 100, 60_000, 1))
        });
    });
    group.finish();
}

criterion_group!(benches, balancers, resilience);
criterion_main!(benches);
