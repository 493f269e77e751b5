//! Route lookup over a realistic table: 60 routes mixing hosts, prefixes,
//! captures, methods and header matches.

#![expect(clippy::expect_used, reason = "bench setup: a failure should stop the bench")]

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use wasmgate::routing::Router;

fn table() -> String {
    let mut t = String::from("[server]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\nendpoints = [\"127.0.0.1:1\"]\n");
    for svc in ["users", "orders", "carts", "payments", "search", "catalog", "reviews", "shipping", "auth", "media"] {
        t.push_str(&format!(
            "[[routes]]\nmatch = {{ prefix = \"/api/{svc}\" }}\nupstream = \"u\"\n\
             [[routes]]\nmatch = {{ path = \"/api/{svc}/{{id}}\", methods = [\"GET\"] }}\nupstream = \"u\"\n\
             [[routes]]\nmatch = {{ path = \"/api/{svc}/{{id}}\", methods = [\"GET\"], headers = {{ \"x-api-version\" = \"2\" }} }}\nupstream = \"u\"\n\
             [[routes]]\nmatch = {{ path = \"/api/{svc}/{{id}}/history/{{*rest}}\" }}\nupstream = \"u\"\n\
             [[routes]]\nmatch = {{ host = \"{svc}.example.com\", prefix = \"/\" }}\nupstream = \"u\"\n\
             [[routes]]\nmatch = {{ path = \"/internal/{svc}/health\" }}\nupstream = \"u\"\n"
        ));
    }
    t
}

fn routing(c: &mut Criterion) {
    let config = wasmgate::config::parse(Path::new("bench.toml"), &table()).expect("bench config");
    let router = Router::new(&config.routes);
    let plain = HeaderMap::new();
    let mut v2 = HeaderMap::new();
    v2.insert("x-api-version", HeaderValue::from_static("2"));
    let mut group = c.benchmark_group("routing");
    group.bench_function("60-routes/capture-hit", |b| {
        b.iter(|| black_box(router.find(Some("api.test"), &Method::GET, black_box("/api/media/42"), &plain)).is_some());
    });
    group.bench_function("60-routes/header-match", |b| {
        b.iter(|| black_box(router.find(Some("api.test"), &Method::GET, black_box("/api/media/42"), &v2)).is_some());
    });
    group.bench_function("60-routes/host-match", |b| {
        b.iter(|| black_box(router.find(Some("media.example.com"), &Method::GET, black_box("/x/y"), &plain)).is_some());
    });
    group.bench_function("60-routes/miss", |b| {
        b.iter(|| black_box(router.find(Some("api.test"), &Method::GET, black_box("/nothing/here"), &plain)).is_none());
    });
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
