//! Reload: a good config is swapped in atomically, a bad one is refused and
//! the old one keeps serving; a file change and SIGHUP both trigger it.

use std::time::Duration;

use wasmgate_tests::upstream::TestUpstream;
use wasmgate_tests::{TestGateway, eventually, get};

fn routes(up_a: &TestUpstream, up_b: &TestUpstream, extra_route: &str) -> String {
    format!(
        "[upstreams.a]\nendpoints = [\"{}\"]\n[upstreams.b]\nendpoints = [\"{}\"]\n\n[[routes]]\nmatch = {{ prefix = \"/a\" }}\nupstream = \"a\"\n{extra_route}\n",
        up_a.addr, up_b.addr
    )
}

const B_ROUTE: &str = "[[routes]]\nmatch = { prefix = \"/b\" }\nupstream = \"b\"\nplugins = [{ use = \"add-header\", config = { name = \"x-gen\", value = \"2\" } }]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_config_is_swapped_in_and_a_bad_one_refused() {
    let (a, b) = tokio::join!(TestUpstream::echo("a"), TestUpstream::echo("b"));
    let gw = TestGateway::start(&routes(&a, &b, ""));
    assert_eq!(get(&gw.url("/b")).await.status, 404);
    assert_eq!(gw.gateway.generation(), 0);

    gw.write_config(&routes(&a, &b, B_ROUTE));
    assert_eq!(gw.gateway.reload().ok(), Some(1));
    let r = get(&gw.url("/b")).await;
    assert_eq!(r.header("x-upstream"), Some("b"));
    assert_eq!(wasmgate_tests::upstream::echoed_header(&r.json(), "x-gen").as_deref(), Some("2"));

    // Broken: an unknown upstream, and a plugin refusing its config.
    gw.write_config(&format!(
        "{}[[routes]]\nmatch = {{ prefix = \"/c\" }}\nupstream = \"nope\"\n",
        routes(&a, &b, B_ROUTE)
    ));
    let err = gw.gateway.reload().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("unknown upstream `nope`"), "{err}");
    gw.write_config(&routes(
        &a,
        &b,
        "[[routes]]\nmatch = { prefix = \"/b\" }\nupstream = \"b\"\nplugins = [{ use = \"add-header\" }]\n",
    ));
    let err = gw.gateway.reload().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("plugin `add-header` refused its config"), "{err}");

    // The last good config still serves.
    assert_eq!(gw.gateway.generation(), 1);
    assert_eq!(get(&gw.url("/b")).await.header("x-upstream"), Some("b"));
    assert_eq!(get(&gw.url("/a")).await.header("x-upstream"), Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_on_the_config_they_started_with() {
    let (a, b) = tokio::join!(TestUpstream::echo("a"), TestUpstream::echo("b"));
    let gw = TestGateway::start(&routes(&a, &b, ""));
    let url = gw.url("/a/slow/600");
    let slow = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Reload to a config where /a goes nowhere.
    gw.write_config(&format!(
        "[upstreams.b]\nendpoints = [\"{}\"]\n[[routes]]\nmatch = {{ prefix = \"/b\" }}\nupstream = \"b\"\n",
        b.addr
    ));
    assert!(gw.gateway.reload().is_ok());
    assert_eq!(get(&gw.url("/a")).await.status, 404, "new requests see the new config");
    let r = slow.await.expect("slow request task");
    assert_eq!(r.status, 200, "the in-flight request finished on the old config");
    assert_eq!(r.header("x-upstream"), Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_change_reloads_when_watching() {
    let (a, b) = tokio::join!(TestUpstream::echo("a"), TestUpstream::echo("b"));
    let gw = TestGateway::start_with("watch = true\nwatch_interval = \"50ms\"", &routes(&a, &b, ""));
    gw.write_config(&routes(&a, &b, B_ROUTE));
    assert!(eventually(Duration::from_secs(10), || gw.gateway.generation() == 1).await, "the watcher reloaded");
    assert_eq!(get(&gw.url("/b")).await.header("x-upstream"), Some("b"));
    // A broken file is refused; the watcher keeps the good config.
    gw.write_config("this is = not [valid toml");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.gateway.generation(), 1);
    assert_eq!(get(&gw.url("/b")).await.status, 200);
}

/// The compile cache forgets artifacts no config here uses once they are
/// old, at start and at every reload: it grew with every plugin build ever
/// loaded. (A gateway with a cache of its own: the tests' shared one is
/// pruned by every gateway they start. What it keeps is tested with the
/// engine.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_unused_compiled_plugins_leave_the_cache_at_start_and_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (plugins, cache) = (dir.path().join("plugins"), dir.path().join("cache"));
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    let config = dir.path().join("gateway.toml");
    let write_config = |generation: u32| {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\nwatch = false\nvia = \"gen-{generation}\"\n\
             [plugins]\ndir = \"{}\"\ncache_dir = \"{}\"\n",
            plugins.display(),
            cache.display()
        );
        std::fs::write(&config, text).expect("config");
    };
    let old = std::time::SystemTime::now() - wasmgate::plugin::engine::CACHE_KEEP - Duration::from_secs(60);
    let stale = |tag: u8| {
        // Named as the cache names its files, for an engine not this one.
        let path = cache.join(format!("{}-0000000000000000.cwasm", hex(tag)));
        std::fs::create_dir_all(&cache).expect("cache dir");
        std::fs::File::create(&path).and_then(|f| f.set_modified(old)).expect("a stale artifact");
        path
    };
    let first = stale(0xa1);
    write_config(0);
    let gw = wasmgate::Gateway::start(&config).expect("a gateway");
    assert!(!first.exists(), "gone at start");
    let second = stale(0xa2);
    write_config(1);
    assert_eq!(gw.reload().ok(), Some(1));
    assert!(!second.exists(), "gone at a reload");
}

/// 64 hex digits: one byte, repeated.
fn hex(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}
