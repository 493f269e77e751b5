//! Per-request cost of calling a plugin: the request hook of a no-op plugin
//! and of one that reads 20 headers, in both isolation modes. What is
//! measured is exactly what the proxy does per plugin per request: lend the
//! exchange to an instance (warm from the pool, or fresh from the pooling
//! allocator and configured), call the hook under its deadline, take the
//! exchange back.

#![expect(clippy::expect_used, clippy::panic, reason = "bench setup: a failure should stop the bench")]

mod common;

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Request};
use wasmgate::config::Isolation;
use wasmgate::exchange::Exchange;

fn exchange(headers: usize) -> Box<Exchange> {
    let mut req = Request::get("/api/users/42?x=1");
    for i in 0..headers {
        req = req.header(format!("x-h{i}"), "some header value");
    }
    common::exchange(req.body(()).expect("request"))
}

fn dispatch(c: &mut Criterion) {
    let (plugins, guests) = common::built_plugins();
    let runtime = common::runtime();
    let names: Vec<String> = (0..20).map(|i| format!("\"x-h{i}\"")).collect();
    let read20 = format!("{{\"names\":[{}]}}", names.join(","));
    let mut group = c.benchmark_group("plugin_dispatch");
    for (mode, isolation) in [("pooled", Isolation::Pooled), ("per-request", Isolation::PerRequest)] {
        let noop = common::link(&runtime, &plugins.join("noop.wasm"), isolation, "{}");
        let mut ex = exchange(20);
        group.bench_function(format!("{mode}/noop"), |b| {
            b.iter(|| black_box(noop.on_request(&mut ex)).is_ok());
        });
        let reader = common::link(&runtime, &guests.join("read-headers.wasm"), isolation, &read20);
        let mut ex = exchange(20);
        group.bench_function(format!("{mode}/read-20-headers"), |b| {
            b.iter(|| black_box(reader.on_request(&mut ex)).is_ok());
        });
        if !reader
            .on_request(&mut ex)
            .is_ok_and(|_| ex.request.headers.get("x-headers-found") == Some(&HeaderValue::from_static("20")))
        {
            panic!("read-headers did not find the 20 headers");
        }
    }
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
