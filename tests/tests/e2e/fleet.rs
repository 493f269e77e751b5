//! A fleet's config from a shared store: gateways started with
//! `-c redis://…?key=NAME` serve the config in a real redis-server's key,
//! follow it when it changes, refuse a bad one (the last good serves on),
//! ride out Redis going away, and start from their last good copy while it
//! is down.

use std::path::Path;
use std::time::Duration;

use wasmgate::Gateway;
use wasmgate::config::Source;
use wasmgate_tests::redis_server::RedisServer;
use wasmgate_tests::upstream::TestUpstream;
use wasmgate_tests::{ADMIN, eventually, get, linked_plugin_dir, metrics_of, metrics_once_of, preamble, sample};

const KEY: &str = "edge";

/// The refused reloads' count.
const REFUSED: &str = r#"wasmgate_config_reloads_total{result="error"}"#;

/// A config sending everything to `upstream`, followed every 50 ms.
fn config(plugins: &Path, upstream: &TestUpstream) -> String {
    format!(
        "{}{ADMIN}[upstreams.u]\nendpoints = [\"{}\"]\n\n[[routes]]\nmatch = {{ prefix = \"/\" }}\nupstream = \"u\"\n",
        preamble(plugins, "watch = true\nwatch_interval = \"50ms\""),
        upstream.addr
    )
}

/// The `config_info` series a gateway serving `text` from `redis` shows.
fn config_info(redis: &RedisServer, text: &str) -> String {
    use sha2::Digest as _;
    let sha256 = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    format!("wasmgate_config_info{{sha256=\"{sha256}\",source=\"{}\"}} 1", url(redis))
}

async fn publish(redis: &RedisServer, text: &str) {
    let mut c = redis.connection().await;
    redis::cmd("SET").arg(KEY).arg(text).query_async::<()>(&mut c).await.expect("SET the config");
}

/// The store's URL: credentials none, so also as the gateway shows it.
fn url(redis: &RedisServer) -> String {
    format!("{}0?key={KEY}", redis.url())
}

fn store(redis: &RedisServer) -> Source {
    Source::parse(&url(redis)).expect("a store's URL")
}

/// A Redis, two upstreams and a plugin directory.
struct Setup {
    redis: RedisServer,
    a: TestUpstream,
    b: TestUpstream,
    dir: tempfile::TempDir,
    plugins: std::path::PathBuf,
}

impl Setup {
    async fn new() -> Self {
        wasmgate_tests::init_logs();
        let redis = RedisServer::start();
        let (a, b) = tokio::join!(TestUpstream::echo("a"), TestUpstream::echo("b"));
        let dir = tempfile::tempdir().expect("tempdir");
        let plugins = linked_plugin_dir(dir.path());
        Self { redis, a, b, dir, plugins }
    }
}

/// Whether `file` holds `text` within 10 s.
async fn holds(file: &Path, text: &str) -> bool {
    eventually(Duration::from_secs(10), || std::fs::read_to_string(file).is_ok_and(|t| t == text)).await
}

async fn upstream_of(gateway: &Gateway) -> Option<String> {
    let addr = gateway.addr().expect("a plain listener");
    get(&format!("http://{addr}/")).await.header("x-upstream").map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_follow_the_config_in_redis_and_keep_the_last_good_one() {
    let Setup { mut redis, a, b, dir: _dir, plugins } = Setup::new().await;
    publish(&redis, &config(&plugins, &a)).await;
    let fleet: Vec<Gateway> =
        (0..2).map(|_| Gateway::start_from(store(&redis)).expect("a gateway from the store")).collect();
    serving(&fleet, 0, "a", "started from the store").await;

    publish(&redis, &config(&plugins, &b)).await;
    reaching(&fleet, 1, "every gateway loaded the new config").await;
    serving(&fleet, 1, "b", "the new config").await;
    for g in &fleet {
        // Which config each runs, for a fleet's dashboards.
        let text = metrics_of(g).await;
        assert!(text.contains(&config_info(&redis, &config(&plugins, &b))), "{text}");
        assert!(!text.contains(&config_info(&redis, &config(&plugins, &a))), "{text}");
    }

    // A bad config is refused by each (counted); the last good one serves on.
    publish(
        &redis,
        &format!("{}[[routes]]\nmatch = {{ prefix = \"/x\" }}\nupstream = \"nope\"\n", config(&plugins, &b)),
    )
    .await;
    for g in &fleet {
        let text = metrics_once_of(g, REFUSED, "1", Duration::from_secs(10)).await;
        assert_eq!(sample(&text, REFUSED), Some("1"), "{text}");
    }
    serving(&fleet, 1, "b", "the bad config was refused").await;

    // Redis gone: nothing to follow, nothing reloads, everything serves on;
    // the metric an alert would watch says so.
    let up = "wasmgate_config_source_up";
    for g in &fleet {
        assert_eq!(sample(&metrics_of(g).await, up), Some("1"));
    }
    redis.kill();
    for g in &fleet {
        let text = metrics_once_of(g, up, "0", Duration::from_secs(10)).await;
        assert_eq!(sample(&text, up), Some("0"), "{text}");
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    serving(&fleet, 1, "b", "an unreachable store is no change").await;
    // Meanwhile a file the config names changes (a plugin dropped into
    // the directory; a renewed certificate would be the same): the config
    // in force is built again, with it.
    std::os::unix::fs::symlink(plugins.join("noop.wasm"), plugins.join("also-noop.wasm")).expect("a new plugin file");
    reaching(&fleet, 2, "a named file's change reloaded the config in force while the store was away").await;
    serving(&fleet, 2, "b", "the config in force, rebuilt").await;

    // Back, but empty (no persistence): a key that is not set is no config.
    // (The watcher looked: the unset key's reload was refused, the second.)
    redis.restart();
    for g in &fleet {
        let text = metrics_once_of(g, REFUSED, "2", Duration::from_secs(10)).await;
        assert_eq!(sample(&text, REFUSED), Some("2"), "{text}");
        assert_eq!(sample(&text, up), Some("0"), "a key unset is no config");
    }
    serving(&fleet, 2, "b", "an unset key unloads nothing").await;
    publish(&redis, &config(&plugins, &a)).await;
    reaching(&fleet, 3, "the gateways followed the store once it was back").await;
    serving(&fleet, 3, "a", "the store's config").await;
    for g in &fleet {
        let text = metrics_once_of(g, up, "1", Duration::from_secs(10)).await;
        assert_eq!(sample(&text, up), Some("1"), "{text}");
    }
}

/// Asserts that each gateway serves `generation`, routing to `upstream`.
async fn serving(fleet: &[Gateway], generation: u64, upstream: &str, why: &str) {
    for g in fleet {
        assert_eq!(g.generation(), generation, "{why}");
        assert_eq!(upstream_of(g).await.as_deref(), Some(upstream), "{why}");
    }
}

/// Asserts that every gateway reaches `generation` within 10 s.
async fn reaching(fleet: &[Gateway], generation: u64, why: &str) {
    assert!(eventually(Duration::from_secs(10), || fleet.iter().all(|g| g.generation() == generation)).await, "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_starts_from_its_last_good_copy_while_redis_is_down() {
    let Setup { mut redis, a, b, dir, plugins } = Setup::new().await;
    let copy = dir.path().join("state").join("last-good.toml");
    let keeping = |redis: &RedisServer| store(redis).keeping(Some(copy.clone())).expect("a store source");
    let shown = url(&redis);

    // Nothing published yet: said, with the command that publishes.
    let e = Gateway::start_from(keeping(&redis)).expect_err("no config in the store").to_string();
    assert!(e.contains(&format!("error: {shown}: the key \"edge\" is not set")), "{e}");
    assert!(e.contains("fix: publish one: wasmgate publish gateway.toml"), "{e}");

    // A config's problems name the store, with the line.
    let bad = format!("{}[[routes]]\nmatch = {{ prefix = \"/\" }}\nupstream = \"nope\"\n", preamble(&plugins, ""));
    publish(&redis, &bad).await;
    let e = Gateway::start_from(keeping(&redis)).expect_err("a bad config").to_string();
    assert!(e.contains(&format!("error: {shown}:")) && e.contains("unknown upstream `nope`"), "{e}");
    assert!(!copy.exists(), "a config that never served is not kept");

    publish(&redis, &config(&plugins, &a)).await;
    // Kept once it serves (after a line naming the store), and as it
    // follows the store.
    let kept = |text: &str| format!("# wasmgate --last-good: the last config served from {shown}\n{text}");
    let gateway = Gateway::start_from(keeping(&redis)).expect("a gateway from the store");
    assert_eq!(upstream_of(&gateway).await.as_deref(), Some("a"));
    assert!(holds(&copy, &kept(&config(&plugins, &a))).await, "kept once it served");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&copy).expect("the copy").permissions());
    assert_eq!(mode & 0o777, 0o600, "the copy is its owner's only");
    publish(&redis, &config(&plugins, &b)).await;
    reaching(std::slice::from_ref(&gateway), 1, "it followed").await;
    assert!(holds(&copy, &kept(&config(&plugins, &b))).await, "the copy follows");
    gateway.shutdown();

    redis.kill();
    let gateway = Gateway::start_from(keeping(&redis)).expect("a start from the copy");
    assert_eq!(upstream_of(&gateway).await.as_deref(), Some("b"), "the last config served");
    let text = metrics_of(&gateway).await;
    assert!(text.contains(&config_info(&redis, &config(&plugins, &b))), "the store's config, named as it: {text}");
    let e = Gateway::start_from(store(&redis)).expect_err("no copy to start from").to_string();
    assert!(e.contains(&format!("error: {shown}: cannot reach the config store")), "{e}");
    assert!(e.contains("give --last-good FILE"), "{e}");
    let elsewhere = dir.path().join("none-yet.toml");
    let e = Gateway::start_from(store(&redis).keeping(Some(elsewhere.clone())).expect("a store source"))
        .expect_err("no copy there yet")
        .to_string();
    assert!(e.contains(&format!("there is no copy at {} yet", elsewhere.display())), "{e}");
    // Another key's gateway given the same copy does not start from it.
    let other = Source::parse(&shown.replace("key=edge", "key=other")).expect("a store's URL");
    let e = Gateway::start_from(other.keeping(Some(copy.clone())).expect("a store source"))
        .expect_err("the copy is another store's")
        .to_string();
    assert!(e.contains("this is not a copy of") && e.contains("key=other"), "{e}");

    // The store back, empty: the running gateway serves on; a new start
    // refuses (the store answered, and a config it does not hold is not
    // run from a copy). Once a config is published there, it follows.
    redis.restart();
    let text = metrics_once_of(&gateway, REFUSED, "1", Duration::from_secs(10)).await;
    assert_eq!(sample(&text, REFUSED), Some("1"), "the watcher looked, and refused the unset key: {text}");
    assert_eq!(gateway.generation(), 0);
    assert_eq!(upstream_of(&gateway).await.as_deref(), Some("b"));
    let e = Gateway::start_from(keeping(&redis)).expect_err("the store holds no config").to_string();
    assert!(e.contains("is not set"), "{e}");
    publish(&redis, &config(&plugins, &a)).await;
    reaching(std::slice::from_ref(&gateway), 1, "it followed the store").await;
    serving(std::slice::from_ref(&gateway), 1, "a", "the store's config").await;

    // A start from the copy says at once that the store gave no config:
    // `config_source_up` is 0 from the start, not only after the
    // watcher's first look (here there is none: the copy says watch = false).
    let unwatched = config(&plugins, &a).replace("watch = true\nwatch_interval = \"50ms\"", "watch = false");
    assert_ne!(unwatched, config(&plugins, &a));
    publish(&redis, &unwatched).await;
    reaching(std::slice::from_ref(&gateway), 2, "it followed the store").await;
    assert!(holds(&copy, &kept(&unwatched)).await, "the copy follows");
    let up = "wasmgate_config_source_up";
    assert_eq!(sample(&metrics_of(&gateway).await, up), Some("1"), "the store has a config");
    gateway.shutdown();
    redis.kill();
    let gateway = Gateway::start_from(keeping(&redis)).expect("a start from the copy");
    assert_eq!(upstream_of(&gateway).await.as_deref(), Some("a"));
    assert_eq!(sample(&metrics_of(&gateway).await, up), Some("0"), "started without the store's config");
    // No watcher: a reload (SIGHUP's) looks at the store, and says what it found.
    redis.restart();
    publish(&redis, &unwatched).await;
    assert_eq!(gateway.reload().ok(), Some(1));
    assert_eq!(sample(&metrics_of(&gateway).await, up), Some("1"), "a reload found the store's config");
    redis.kill();
    assert!(gateway.reload().is_ok(), "the config in force, reloaded");
    assert_eq!(sample(&metrics_of(&gateway).await, up), Some("0"), "a reload found no store");
}
