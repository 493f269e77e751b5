//! Per-request cost of calling a plugin: the request hook of a no-op plugin
//! and of one that reads 20 headers, in both isolation modes. What is
//! measured is exactly what the proxy does per plugin per request: lend the
//! exchange to an instance (warm from the pool, or fresh from the pooling
//! allocator and configured), call the hook under its deadline, take the
//! exchange back. And what a kept outcome costs instead of a call (cors,
//! which declares the facts it depends on): the key, the lookup, the
//! replay.

#![expect(clippy::expect_used, clippy::panic, reason = "bench setup: a failure should stop the bench")]

mod common;

use std::hint::black_box;
use std::time::Instant;

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
            b.iter(|| black_box(noop.on_request(&mut ex, Instant::now())).is_ok());
        });
        let reader = common::link(&runtime, &guests.join("read-headers.wasm"), isolation, &read20);
        let mut ex = exchange(20);
        group.bench_function(format!("{mode}/read-20-headers"), |b| {
            b.iter(|| black_box(reader.on_request(&mut ex, Instant::now())).is_ok());
        });
        if !reader
            .on_request(&mut ex, Instant::now())
            .is_ok_and(|_| ex.request.headers.get("x-headers-found") == Some(&HeaderValue::from_static("20")))
        {
            panic!("read-headers did not find the 20 headers");
        }
    }
    group.finish();
    kept(c, &runtime, &plugins);
}

/// cors called, and its kept outcome given instead (what `proxy::chain`
/// does for a plugin that declared its facts and saw them before).
fn kept(c: &mut Criterion, runtime: &std::sync::Arc<wasmgate::plugin::Runtime>, plugins: &std::path::Path) {
    let config = r#"{"allowed_origins":["https://app.example.com"],"allow_credentials":true}"#;
    let cors = common::link(runtime, &plugins.join("cors.wasm"), Isolation::Pooled, config);
    let memo = cors.memo.as_ref().expect("cors declares the facts it depends on");
    let request = Request::get("/api/users/42").header("origin", "https://app.example.com");
    let mut ex = common::exchange(request.body(()).expect("request"));
    let mut group = c.benchmark_group("plugin_kept");
    group.bench_function("pooled/cors-call", |b| {
        b.iter(|| {
            ex.staged.clear();
            black_box(cors.on_request(&mut ex, Instant::now())).is_ok()
        });
    });
    let key = memo.key(&ex).expect("a short key");
    ex.staged.clear();
    ex.recording = Some(memo.recording());
    let outcome = cors.on_request(&mut ex, Instant::now()).expect("cors continues");
    memo.keep(key, ex.recording.take().expect("the recording"), &outcome);
    group.bench_function("kept/cors", |b| {
        b.iter(|| {
            ex.staged.clear();
            let key = memo.key(&ex).expect("a short key");
            black_box(memo.get(&key).map(|kept| kept.replay(&mut ex)))
        });
    });
    if ex.staged.len() != 2 {
        panic!("the kept outcome left {} response headers, not cors's two", ex.staged.len());
    }
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
