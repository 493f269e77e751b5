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
use wasmgate_tests::{ADMIN, eventually, get, linked_plugin_dir, preamble};

const KEY: &str = "edge";

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

async fn metrics(gateway: &Gateway) -> String {
    let admin = gateway.admin_addr().expect("an admin listener");
    get(&format!("http://{admin}/metrics")).await.text()
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

async fn upstream_of(gateway: &Gateway) -> Option<String> {
    let addr = gateway.addr().expect("a plain listener");
    get(&format!("http://{addr}/")).await.header("x-upstream").map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_follow_the_config_in_redis_and_keep_the_last_good_one() {
    wasmgate_tests::init_logs();
    let mut redis = RedisServer::start();
    let (a, b) = tokio::join!(TestUpstream::echo("a"), TestUpstream::echo("b"));
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = linked_plugin_dir(dir.path());
    publish(&redis, &config(&plugins, &a)).await;
    let fleet: Vec<Gateway> =
        (0..2).map(|_| Gateway::start_from(store(&redis)).expect("a gateway from the store")).collect();
    for g in &fleet {
        assert_eq!(upstream_of(g).await.as_deref(), Some("a"));
    }

    publish(&redis, &config(&plugins, &b)).await;
    let followed = eventually(Duration::from_secs(10), || fleet.iter().all(|g| g.generation() == 1)).await;
    assert!(followed, "every gateway loaded the new config");
    for g in &fleet {
        assert_eq!(upstream_of(g).await.as_deref(), Some("b"));
        // Which config each runs, for a fleet's dashboards.
        let text = metrics(g).await;
        assert!(text.contains(&config_info(&redis, &config(&plugins, &b))), "{text}");
        assert!(!text.contains(&config_info(&redis, &config(&plugins, &a))), "{text}");
    }

    // Redis gone a while: everything serves on; back with the same
    // config (its key written again at once): nothing reloads.
    redis.kill();
    tokio::time::sleep(Duration::from_millis(400)).await;
    for g in &fleet {
        assert_eq!(upstream_of(g).await.as_deref(), Some("b"));
    }
    redis.restart();
    publish(&redis, &config(&plugins, &b)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(fleet.iter().all(|g| g.generation() == 1), "the same config is not loaded again");

    // A bad config is refused by each; the last good one serves on.
    publish(
        &redis,
        &format!("{}[[routes]]\nmatch = {{ prefix = \"/x\" }}\nupstream = \"nope\"\n", config(&plugins, &b)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    for g in &fleet {
        assert_eq!(g.generation(), 1, "the bad config was refused");
        assert_eq!(upstream_of(g).await.as_deref(), Some("b"));
    }

    // Back, but empty (no persistence): a key that is not set is no config.
    redis.restart();
    tokio::time::sleep(Duration::from_millis(400)).await;
    for g in &fleet {
        assert_eq!(g.generation(), 1, "an unset key unloads nothing");
        assert_eq!(upstream_of(g).await.as_deref(), Some("b"));
    }
    publish(&redis, &config(&plugins, &a)).await;
    let followed = eventually(Duration::from_secs(10), || fleet.iter().all(|g| g.generation() == 2)).await;
    assert!(followed, "the gateways followed the store once it was back");
    for g in &fleet {
        assert_eq!(upstream_of(g).await.as_deref(), Some("a"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_starts_from_its_last_good_copy_while_redis_is_down() {
    wasmgate_tests::init_logs();
    let mut redis = RedisServer::start();
    let (a, b) = tokio::join!(TestUpstream::echo("a"), TestUpstream::echo("b"));
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = linked_plugin_dir(dir.path());
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
    let gateway = Gateway::start_from(keeping(&redis)).expect("a gateway from the store");
    assert_eq!(upstream_of(&gateway).await.as_deref(), Some("a"));
    assert_eq!(std::fs::read_to_string(&copy).ok(), Some(config(&plugins, &a)), "kept once it served");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&copy).expect("the copy").permissions());
    assert_eq!(mode & 0o777, 0o600, "the copy is its owner's only");
    publish(&redis, &config(&plugins, &b)).await;
    assert!(eventually(Duration::from_secs(10), || gateway.generation() == 1).await, "it followed");
    assert_eq!(std::fs::read_to_string(&copy).ok(), Some(config(&plugins, &b)), "the copy follows");
    gateway.shutdown();

    redis.kill();
    let gateway = Gateway::start_from(keeping(&redis)).expect("a start from the copy");
    assert_eq!(upstream_of(&gateway).await.as_deref(), Some("b"), "the last config served");
    let e = Gateway::start_from(store(&redis)).expect_err("no copy to start from").to_string();
    assert!(e.contains(&format!("error: {shown}: cannot reach the config store")), "{e}");
    assert!(e.contains("--last-good"), "{e}");

    // The store back, empty: the running gateway serves on; a new start
    // refuses (the store answered, and a config it does not hold is not
    // run from a copy).
    redis.restart();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(gateway.generation(), 0);
    assert_eq!(upstream_of(&gateway).await.as_deref(), Some("b"));
    let e = Gateway::start_from(keeping(&redis)).expect_err("the store holds no config").to_string();
    assert!(e.contains("is not set"), "{e}");
}
