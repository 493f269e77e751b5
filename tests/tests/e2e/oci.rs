//! Plugins pulled from a real OCI registry: pinned by the manifest's digest
//! or by the component's, kept in the cache so a restart needs no
//! registry, refused when the registry holds other bytes, and with the
//! registry's accounts.

use std::path::Path;

use wasmgate::config::{Credentials, RegistryConfig, Secret};
use wasmgate::oci::{Pushed, Reference};
use wasmgate_tests::certs::Ca;
use wasmgate_tests::proxy::ForwardProxy;
use wasmgate_tests::registry::{self, Registry};
use wasmgate_tests::token_service::TokenService;
use wasmgate_tests::upstream::{TestUpstream, echoed_header};
use wasmgate_tests::{ADMIN, get, get_with, init_logs, plugin_dir, sample};

/// Publishes a plugin from `plugins/` at `registry/at` (`repository:tag`),
/// over plain HTTP.
async fn publish(registry: &Registry, plugin: &str, at: &str, credentials: Option<Credentials>) -> Pushed {
    publish_with(registry, &RegistryConfig { tls: false, credentials, ..RegistryConfig::default() }, plugin, at).await
}

async fn publish_with(registry: &Registry, settings: &RegistryConfig, plugin: &str, at: &str) -> Pushed {
    let bytes = std::fs::read(plugin_dir().join(format!("{plugin}.wasm"))).unwrap();
    let reference = Reference::parse(&format!("{}/{at}", registry.host)).unwrap();
    wasmgate::oci::push(&bytes, &reference, settings).await.unwrap()
}

fn account() -> Credentials {
    let (user, password) = registry::USER;
    Credentials { username: user.to_owned(), password: Secret::new(password.to_owned()) }
}

/// A gateway whose one route runs `add-header` as `plugin` (the lines of
/// `[plugin.add-header]`) says, its plugin cache in `cache`, without a
/// plugin directory: the plugin can only come from the registry.
fn start(
    dir: &Path,
    cache: &Path,
    registries: &str,
    plugin: &str,
    up: &TestUpstream,
) -> Result<wasmgate::Gateway, String> {
    start_watching(dir, cache, registries, plugin, up, "watch = false")
}

/// [`start`] with `watch` lines in `[server]`.
fn start_watching(
    dir: &Path,
    cache: &Path,
    registries: &str,
    plugin: &str,
    up: &TestUpstream,
    watch: &str,
) -> Result<wasmgate::Gateway, String> {
    init_logs();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n{watch}\n\n{ADMIN}\n\
         [plugins]\ncache_dir = \"{}\"\n\n{registries}\n\
         [plugin.add-header]\n{plugin}\n\n\
         [upstreams.u]\nendpoints = [\"{}\"]\n\n\
         [[routes]]\nupstream = \"u\"\n\
         plugins = [{{ use = \"add-header\", config = {{ request = {{ set = {{ \"x-pulled\" = \"yes\" }} }} }} }}]\n",
        cache.display(),
        up.addr
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    wasmgate::Gateway::start(&path).map_err(|e| e.to_string())
}

async fn runs_the_plugin(gw: &wasmgate::Gateway) -> bool {
    let addr = gw.addr().unwrap();
    let reply = get(&format!("http://{addr}/")).await;
    reply.status == 200 && echoed_header(&reply.json(), "x-pulled").as_deref() == Some("yes")
}

/// Pinned by the manifest's digest: pulled once, then served from the
/// cache — a restart with the registry gone still runs it; a fresh cache
/// without the registry cannot start, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_pinned_by_its_manifest_is_pulled_once_and_kept() {
    let up = TestUpstream::echo("u").await;
    let registry = Registry::start();
    let pushed = publish(&registry, "add-header", "plugins/add-header:1.0", None).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let table = registry.table("");
    let pin = format!("oci = \"{}/plugins/add-header@sha256:{}\"", registry.host, hex::encode(pushed.manifest));

    let gw = start(dir.path(), &cache, &table, &pin, &up).unwrap();
    assert!(runs_the_plugin(&gw).await);
    // Which component each gateway of a fleet runs, and from where.
    let metrics = get(&format!("http://{}/metrics", gw.admin_addr().unwrap())).await.text();
    let series = format!(
        "wasmgate_plugin_info{{plugin=\"add-header\",version=\"0.1.0\",sha256=\"{}\",source=\"{}/plugins/add-header@sha256:{}\"}}",
        hex::encode(pushed.component),
        registry.host,
        hex::encode(pushed.manifest)
    );
    assert_eq!(sample(&metrics, &series), Some("1"), "{metrics}");
    drop(gw);
    let kept = cache.join("oci/sha256").join(hex::encode(pushed.component));
    assert_eq!(std::fs::read(&kept).unwrap(), std::fs::read(plugin_dir().join("add-header.wasm")).unwrap());

    drop(registry);
    let gw = start(dir.path(), &cache, &table, &pin, &up).expect("the cache serves a pinned manifest");
    assert!(runs_the_plugin(&gw).await);
    drop(gw);

    // Watching the config: the cache's files (marked in use at each load)
    // are not the config's, and do not reload it.
    let watching = "watch = true\nwatch_interval = \"50ms\"";
    let gw = start_watching(dir.path(), &cache, &table, &pin, &up, watching).unwrap();
    let generation = gw.generation();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(gw.generation(), generation, "no reload without a change");
    drop(gw);

    let e = start(dir.path(), &dir.path().join("fresh-cache"), &table, &pin, &up).unwrap_err();
    for part in ["plugin.add-header.oci", "cannot pull", "cannot connect to 127.0.0.1:", "fix: check that 127.0.0.1:"] {
        assert!(e.contains(part), "{part}: {e}");
    }
}

/// A tag pinned by the component's sha256 runs what was pinned: moved to
/// another plugin, it is refused before the other is downloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_runs_only_the_component_it_is_pinned_to() {
    let up = TestUpstream::echo("u").await;
    let registry = Registry::start();
    let pushed = publish(&registry, "add-header", "plugins/policy:stable", None).await;
    let dir = tempfile::tempdir().unwrap();
    let table = registry.table("");
    let pin =
        format!("oci = \"{}/plugins/policy:stable\"\nsha256 = \"{}\"", registry.host, hex::encode(pushed.component));
    let gw = start(dir.path(), &dir.path().join("a"), &table, &pin, &up).unwrap();
    assert!(runs_the_plugin(&gw).await);
    drop(gw);

    let moved = publish(&registry, "deny", "plugins/policy:stable", None).await;
    let e = start(dir.path(), &dir.path().join("b"), &table, &pin, &up).unwrap_err();
    let said = format!(
        "is the component sha256:{}, not the sha256:{} pinned",
        hex::encode(moved.component),
        hex::encode(pushed.component)
    );
    assert!(e.contains(&said), "{e}");
    assert!(!dir.path().join("b/oci/sha256").join(hex::encode(moved.component)).exists(), "not downloaded");

    // A digest that is in no manifest of the repository.
    let missing = format!("oci = \"{}/plugins/policy@sha256:{}\"", registry.host, "ab".repeat(32));
    let e = start(dir.path(), &dir.path().join("c"), &table, &missing, &up).unwrap_err();
    assert!(e.contains("the registry has no such manifest (404)"), "{e}");
}

/// A registry with accounts: without credentials the load says the
/// registry asks for them, with a wrong password that it refused them, and
/// with the right one (from a file) the plugin runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_accounts_is_pulled_from_with_the_configured_password() {
    let up = TestUpstream::echo("u").await;
    let registry = Registry::with_accounts();
    let (user, password) = registry::USER;
    let pushed = publish(&registry, "add-header", "private/add-header:1", Some(account())).await;
    let dir = tempfile::tempdir().unwrap();
    let pin = format!("oci = \"{}/private/add-header@sha256:{}\"", registry.host, hex::encode(pushed.manifest));

    let e = start(dir.path(), &dir.path().join("a"), &registry.table(""), &pin, &up).unwrap_err();
    assert!(e.contains("the registry asks for a username and password, and none is configured"), "{e}");

    std::fs::write(dir.path().join("wrong"), "not-the-password\n").unwrap();
    let wrong = registry.table(&format!("username = \"{user}\"\npassword = {{ file = \"wrong\" }}"));
    let e = start(dir.path(), &dir.path().join("b"), &wrong, &pin, &up).unwrap_err();
    assert!(e.contains("the registry refused the manifest (401 Unauthorized)"), "{e}");
    assert!(!e.contains("not-the-password"), "a password is never said: {e}");

    std::fs::write(dir.path().join("password"), format!("{password}\n")).unwrap();
    let right = registry.table(&format!("username = \"{user}\"\npassword = {{ file = \"password\" }}"));
    let gw = start(dir.path(), &dir.path().join("c"), &right, &pin, &up).unwrap();
    assert!(runs_the_plugin(&gw).await);
    drop(gw);

    // Plain HTTP through an egress proxy: the URL in the request line,
    // the credentials still sent (to the registry, through it).
    let proxy = ForwardProxy::start().await;
    let proxied = registry
        .table(&format!("username = \"{user}\"\npassword = {{ file = \"password\" }}\nproxy = \"{}\"", proxy.url()));
    let gw = start(dir.path(), &dir.path().join("d"), &proxied, &pin, &up).unwrap();
    assert!(runs_the_plugin(&gw).await);
    assert!(proxy.forwarded() >= 2, "the manifest and the component: {}", proxy.forwarded());
    drop(gw);
    drop(proxy);
    let gone = registry.table(&format!("proxy = \"http://{}\"", wasmgate_tests::dead_addr()));
    let e = start(dir.path(), &dir.path().join("e"), &gone, &pin, &up).unwrap_err();
    assert!(e.contains("cannot connect to the proxy http://127.0.0.1:"), "{e}");
}

/// A registry over HTTPS with a private CA, whose tokens come from a token
/// service (as ghcr.io, Docker Hub and Harbor work): a public repository
/// is pulled with an anonymous token, a private one with the account's; the
/// registry's certificate is checked against the configured CA (the public
/// roots do not know it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_with_tokens_and_a_private_ca_is_pulled_from_over_https() {
    let up = TestUpstream::echo("u").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "registry-ca");
    let certificate = ca.server("registry", &["127.0.0.1"]);
    let tokens = TokenService::start(&ca, &certificate);
    let registry = Registry::with_tls(&certificate.cert, &certificate.key, &tokens.registry_auth());
    let publisher =
        RegistryConfig { ca: Some(ca.pem.clone()), credentials: Some(account()), ..RegistryConfig::default() };
    let public = publish_with(&registry, &publisher, "add-header", "public/add-header:1").await;
    let private = publish_with(&registry, &publisher, "add-header", "private/add-header:2").await;
    let pin = |repository: &str, pushed: &Pushed| {
        format!("oci = \"{}/{repository}@sha256:{}\"", registry.host, hex::encode(pushed.manifest))
    };
    let trusting = registry.table(&format!("ca = \"{}\"", ca.pem.display()));

    let before = tokens.issued();
    let gw = start(dir.path(), &dir.path().join("a"), &trusting, &pin("public/add-header", &public), &up).unwrap();
    assert!(runs_the_plugin(&gw).await);
    drop(gw);
    assert!(tokens.issued() > before, "pulled with a token");

    let e = start(dir.path(), &dir.path().join("b"), &trusting, &pin("private/add-header", &private), &up).unwrap_err();
    assert!(
        e.contains("the registry refused the manifest (401 Unauthorized)"),
        "an anonymous token does not reach it: {e}"
    );

    let (user, password) = registry::USER;
    std::fs::write(dir.path().join("password"), password).unwrap();
    let with_account = registry
        .table(&format!("ca = \"{}\"\nusername = \"{user}\"\npassword = {{ file = \"password\" }}", ca.pem.display()));
    let gw =
        start(dir.path(), &dir.path().join("c"), &with_account, &pin("private/add-header", &private), &up).unwrap();
    assert!(runs_the_plugin(&gw).await);
    drop(gw);

    // Through an egress proxy: tunnels to the registry and its token service.
    let proxy = ForwardProxy::start().await;
    let proxied = registry.table(&format!("ca = \"{}\"\nproxy = \"{}\"", ca.pem.display(), proxy.url()));
    let gw = start(dir.path(), &dir.path().join("p"), &proxied, &pin("public/add-header", &public), &up).unwrap();
    assert!(runs_the_plugin(&gw).await);
    drop(gw);
    let token_service = tokens.realm.trim_start_matches("https://").trim_end_matches("/token");
    assert!(proxy.reached(&registry.host) && proxy.reached(token_service), "the registry and its token service");

    let e = start(dir.path(), &dir.path().join("d"), &registry.table(""), &pin("public/add-header", &public), &up)
        .unwrap_err();
    assert!(e.contains(&format!("TLS with {}", registry.host)) && e.contains("UnknownIssuer"), "{e}");
}

/// A publisher's signing key: its private key and public key as PEM files
/// `NAME.key` and `NAME.pub` in `dir` (ECDSA P-256, as cosign makes them).
fn signing_key(dir: &Path, name: &str) -> (Vec<u8>, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.join(format!("{name}.pub")), key.public_key_pem()).unwrap();
    (key.serialize_pem().into_bytes(), format!("{name}.pub"))
}

/// With `signed_by`, a plugin runs only when its manifest carries a cosign
/// signature by a trusted key: then a tag needs no pin (the publisher is
/// trusted), and a tag moved to an unsigned manifest is refused. More
/// signatures are added beside those there; signatures verified once are
/// kept, so a restart without the registry runs the manifest the tag last
/// named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_runs_only_when_signed_by_a_trusted_key() {
    let up = TestUpstream::echo("u").await;
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let (a_private, a) = signing_key(dir.path(), "a");
    let (b_private, b) = signing_key(dir.path(), "b");
    let settings = RegistryConfig { tls: false, ..RegistryConfig::default() };
    let pushed = publish(&registry, "add-header", "signed/add-header:1", None).await;
    let at = |repository: &str| Reference::parse(&format!("{}/{repository}", registry.host)).unwrap();
    wasmgate::oci::sign(&at("signed/add-header:1"), &pushed.manifest, &a_private, &settings).await.unwrap();
    let table = registry.table("");
    let tag = format!("oci = \"{}/signed/add-header:1\"", registry.host);
    let trusting = |keys: &[&str]| format!("{tag}\nsigned_by = {keys:?}");

    let gw = start(dir.path(), &dir.path().join("a"), &table, &trusting(&[&a]), &up).unwrap();
    assert!(runs_the_plugin(&gw).await, "signed by a trusted key, a tag needs no pin");
    drop(gw);
    let e = start(dir.path(), &dir.path().join("b"), &table, &trusting(&[&b]), &up).unwrap_err();
    assert!(e.contains("has no signature by a trusted key") && e.contains("b.pub"), "{e}");
    assert!(e.contains("fix: sign the manifest with a trusted key"), "{e}");

    // A second signature joins the first; signing again with a key replaces
    // its own (an ECDSA signature differs each time).
    wasmgate::oci::sign(&at("signed/add-header:1"), &pushed.manifest, &b_private, &settings).await.unwrap();
    wasmgate::oci::sign(&at("signed/add-header:1"), &pushed.manifest, &a_private, &settings).await.unwrap();
    let signatures =
        format!("http://{}/v2/signed/add-header/manifests/sha256-{}.sig", registry.host, hex::encode(pushed.manifest));
    let accept = [("accept", "application/vnd.oci.image.manifest.v1+json")];
    let layers = get_with(&signatures, &accept).await.json()["layers"].as_array().map(Vec::len);
    assert_eq!(layers, Some(2), "one signature of each key");
    for (cache, key) in [("c", &b), ("d", &a)] {
        let gw = start(dir.path(), &dir.path().join(cache), &table, &trusting(&[key]), &up).unwrap();
        assert!(runs_the_plugin(&gw).await, "{key}");
    }

    // `[plugins] signed_by` holds for every plugin from a registry.
    let everywhere = format!("signed_by = [\"{a}\"]\n{table}");
    let gw = start(dir.path(), &dir.path().join("e"), &everywhere, &tag, &up).unwrap();
    assert!(runs_the_plugin(&gw).await);
    drop(gw);
    let (_, c) = signing_key(dir.path(), "c");
    let e =
        start(dir.path(), &dir.path().join("e"), &format!("signed_by = [\"{c}\"]\n{table}"), &tag, &up).unwrap_err();
    assert!(e.contains("has no signature by a trusted key") && e.contains("c.pub"), "{e}");

    // Moved to a signed plugin that refuses the route's config: the load
    // fails, and the tag's fallback stays the one that served.
    let refusing = publish(&registry, "deny", "signed/add-header:1", None).await;
    wasmgate::oci::sign(&at("signed/add-header:1"), &refusing.manifest, &a_private, &settings).await.unwrap();
    let e = start(dir.path(), &dir.path().join("a"), &table, &trusting(&[&a]), &up).unwrap_err();
    assert!(e.contains("plugin `add-header`") && !e.contains("cannot pull"), "pulled, then refused its config: {e}");

    // Moved to an unsigned manifest, the tag is refused (by a gateway that
    // ran the signed one: its cache keeps that one as the tag's last).
    let moved = publish(&registry, "cors", "signed/add-header:1", None).await;
    let e = start(dir.path(), &dir.path().join("a"), &table, &trusting(&[&a, &b]), &up).unwrap_err();
    let unsigned = format!(
        "(sha256:{}) has no signatures (no sha256-{}.sig)",
        hex::encode(moved.manifest),
        hex::encode(moved.manifest)
    );
    assert!(e.contains(&unsigned), "{e}");

    // Without the registry, the manifest the tag last named that passed runs
    // (not the unsigned one it names now).
    drop(registry);
    let gw =
        start(dir.path(), &dir.path().join("a"), &table, &trusting(&[&a]), &up).expect("the last verified manifest");
    assert!(runs_the_plugin(&gw).await);
}

/// `wasmgate inspect REFERENCE`'s account of a pulled plugin: named by its
/// reference (not the scratch cache's path), with the manifest's pin — the
/// one `push` printed — and the config schema it carried through the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inspected_pull_is_named_by_its_reference_and_pinned_by_its_manifest() {
    let registry = Registry::start();
    let pushed = publish(&registry, "rate-limit", "acme/limits:2", None).await;
    let scratch = tempfile::tempdir().unwrap();
    let reference = Reference::parse(&format!("{}/acme/limits:2", registry.host)).unwrap();
    let settings = RegistryConfig { tls: false, ..RegistryConfig::default() };
    let pulled = wasmgate::oci::pull(&reference, None, &[], &settings, scratch.path(), 512 << 20).await.unwrap();
    assert_eq!(pulled.manifest, Some(pushed.manifest), "a pull without a pin asks the registry");
    let runtime = wasmgate::plugin::Runtime::for_inspection().unwrap();
    let origin = wasmgate::plugin::registry::Origin::Pulled(reference.clone(), pushed.manifest);
    let said = wasmgate::plugin::registry::inspect(&runtime, &pulled.path, origin, scratch.path()).unwrap().to_string();
    let pin = format!("{}/acme/limits@sha256:{}", registry.host, hex::encode(pushed.manifest));
    assert!(said.starts_with(&format!("{reference}\n  plugin:  rate-limit 0.")), "{said}");
    assert!(said.contains(&format!("  sha256:  {}\n", hex::encode(pushed.component))), "{said}");
    assert!(said.contains("grants = { store = true }"), "{said}");
    assert!(said.contains(&format!("  pin:     oci = \"{pin}\"\n  config:  these keys")), "{said}");
    assert!(said.contains("\n    limits (array of table, required)\n"), "{said}");
}
