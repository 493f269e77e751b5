//! The `wasmgate` command: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wasmgate::config::Source;

#[derive(Debug, Parser)]
#[command(name = "wasmgate", version, about = "An API gateway whose policies are WebAssembly components")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How a key in Redis is named, for the help texts.
macro_rules! store_url {
    () => {
        "redis://[USER@]HOST[:PORT][/DB][?key=NAME] (its password, if any, in WASMGATE_CONFIG_STORE_PASSWORD)"
    };
}

/// What `-c` takes.
const CONFIG_HELP: &str = concat!("A config file, or a key in Redis that a fleet follows: ", store_url!());

/// What `publish` writes to.
const STORE_HELP: &str = concat!("The key in Redis the gateways follow: ", store_url!());

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve with this config; SIGHUP (or a change to it) reloads it.
    Run {
        #[arg(short, long, value_name = "FILE|URL", help = CONFIG_HELP)]
        config: String,
        /// With a config from Redis: keep a copy of the last config served
        /// in FILE, and start from it when Redis cannot be reached.
        #[arg(long, value_name = "FILE")]
        last_good: Option<PathBuf>,
    },
    /// Load the config and its plugins exactly as `run` would, then exit.
    Check {
        #[arg(short, long, value_name = "FILE|URL", help = CONFIG_HELP)]
        config: String,
    },
    /// Check a config as `check` does, then write it to a key in Redis for
    /// the gateways that follow it (`run -c redis://…`). Relative paths in
    /// it are checked from here; each gateway reads them from its working
    /// directory.
    Publish {
        /// The config file.
        file: PathBuf,
        #[arg(value_name = "URL", help = STORE_HELP)]
        store: String,
    },
    /// Put back the config a store held before its last publish (kept at
    /// KEY:previous), checked as publish checks one; the one it replaces
    /// is kept in its place, so a second rollback goes forward again.
    Rollback {
        #[arg(value_name = "URL", help = STORE_HELP)]
        store: String,
    },
    /// Publish a plugin to an OCI registry (the CNCF Wasm artifact layout)
    /// and print the digests to pin it by. Credentials, if the registry
    /// asks for them: WASMGATE_REGISTRY_USERNAME and WASMGATE_REGISTRY_PASSWORD.
    Push {
        /// The plugin's `.wasm` component.
        file: PathBuf,
        /// `registry/repository:tag`, e.g. ghcr.io/acme/rate-limit:1.2.0
        reference: String,
        #[command(flatten)]
        registry: Registry,
        /// Sign the pushed manifest, as cosign does, with this ECDSA P-256
        /// private key (PKCS#8 PEM: `openssl genpkey -algorithm EC -pkeyopt
        /// ec_paramgen_curve:P-256`); gateways trust its public key with
        /// `signed_by`.
        #[arg(long, value_name = "FILE")]
        sign_key: Option<PathBuf>,
    },
    /// Say what a plugin is and what it asks for: its name and version,
    /// sha256, the WIT version it was built against, the grants a config
    /// must give it, and its config's keys. A reference is pulled first
    /// (credentials as for push).
    Inspect {
        /// A `.wasm` component, or an OCI reference
        /// (`registry/repository:tag` or `…@sha256:MANIFEST`).
        plugin: String,
        /// Print only the JSON Schema of its config table, as it carries it
        /// (for an editor or a config linter).
        #[arg(long)]
        schema: bool,
        #[command(flatten)]
        registry: Registry,
    },
}

/// How `push` and `inspect` reach a registry.
#[derive(Debug, clap::Args)]
struct Registry {
    /// Plain HTTP, for a registry without TLS.
    #[arg(long)]
    plain_http: bool,
    /// A PEM file of the CA that signed the registry's certificate (in
    /// place of the public roots).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Through this HTTP proxy (`http://host:port`), or `direct`; without
    /// it, the environment's HTTPS_PROXY or HTTP_PROXY, unless NO_PROXY
    /// lists the registry.
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
}

impl Registry {
    /// The settings, with credentials from WASMGATE_REGISTRY_USERNAME and
    /// WASMGATE_REGISTRY_PASSWORD (both, or neither); what is wrong is
    /// said.
    fn config(self) -> Option<wasmgate::config::RegistryConfig> {
        use wasmgate::config::{Credentials, Egress, RegistryConfig, Secret};
        let credentials =
            match (std::env::var("WASMGATE_REGISTRY_USERNAME"), std::env::var("WASMGATE_REGISTRY_PASSWORD")) {
                (Ok(username), Ok(password)) => Some(Credentials { username, password: Secret::new(password) }),
                (Err(_), Err(_)) => None,
                _ => {
                    fail(
                        "only one of WASMGATE_REGISTRY_USERNAME and WASMGATE_REGISTRY_PASSWORD is set",
                        "set both, or neither for anonymous access",
                        2,
                    );
                    return None;
                }
            };
        let proxy = match self.proxy.as_deref().map(Egress::parse).transpose() {
            Ok(proxy) => proxy.unwrap_or_default(),
            Err(e) => {
                fail(format!("--proxy: {e}"), "write --proxy http://HOST:PORT, or --proxy direct", 2);
                return None;
            }
        };
        Some(RegistryConfig { tls: !self.plain_http, ca: self.ca, credentials, proxy })
    }
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => {
            let Some(source) = source(&config, None) else { return ExitCode::from(2) };
            check(&source)
        }
        Command::Run { config, last_good } => {
            let Some(source) = source(&config, last_good) else { return ExitCode::from(2) };
            run(source)
        }
        Command::Publish { file, store } => publish(&file, &store),
        Command::Rollback { store } => rollback(&store),
        Command::Push { file, reference, registry, sign_key } => push(&file, &reference, registry, sign_key.as_deref()),
        Command::Inspect { plugin, schema, registry } => inspect(&plugin, schema, registry),
    }
}

/// `-c`'s argument, or `None` once what is wrong with it is said (not the
/// argument itself: a URL may carry a password).
fn source(config: &str, last_good: Option<PathBuf>) -> Option<Source> {
    match Source::parse(config).and_then(|s| s.keeping(last_good)) {
        Ok(source) => Some(source),
        Err(e) => {
            fail(format!("-c: {e}"), format!("give a config file's path, or {STORE_URL}"), 2);
            None
        }
    }
}

/// How a store is named, in messages.
const STORE_URL: &str = "name the store as redis://[USER@]HOST[:PORT][/DB][?key=NAME]";

/// Says what went wrong and how to fix it, as config errors do; the exit
/// code is `code`.
fn fail(what: impl std::fmt::Display, fix: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("error: {what}\n  fix: {fix}");
    ExitCode::from(code)
}

/// The fix for a registry's refusal of `push` or `inspect`, in their terms
/// (flags and variables; the gateway's [`Failure::fix`] names its config);
/// `may` is what the account must be allowed.
///
/// [`Failure::fix`]: wasmgate::oci::Failure::fix
fn registry_fix(e: &wasmgate::oci::Failure, registry: &str, may: &str) -> String {
    use wasmgate::oci::Failure;
    match e {
        Failure::Denied(_) => {
            format!("export WASMGATE_REGISTRY_USERNAME and WASMGATE_REGISTRY_PASSWORD for an account that may {may}")
        }
        Failure::Unreachable(_) | Failure::Protocol(_) => {
            format!("check that {registry} is reachable (--plain-http for a registry without TLS)")
        }
        Failure::Proxy(_) => format!(
            "check --proxy, or HTTPS_PROXY/HTTP_PROXY and NO_PROXY: an http:// proxy that lets {registry} through, \
             its credentials in its URL (--proxy direct goes around it)"
        ),
        e => e.fix(registry),
    }
}

fn check(source: &Source) -> ExitCode {
    match wasmgate::gateway::check_source(source) {
        Ok(snapshot) => {
            let plugins: Vec<String> = snapshot
                .plugins
                .iter()
                .map(|(name, p)| match &p.described {
                    Some(d) if d.name == *name => format!("{name} {}", d.version),
                    Some(d) => format!("{name} ({} {})", d.name, d.version),
                    None => name.clone(),
                })
                .collect();
            println!(
                "{}: ok ({} routes, {} upstreams, plugins: {})",
                source.name(),
                snapshot.routes.len(),
                snapshot.upstreams.len(),
                if plugins.is_empty() { "none".to_owned() } else { plugins.join(", ") }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// `wasmgate publish`: nothing is written unless the config loads, with
/// its plugins, as the gateways will load it.
fn publish(file: &std::path::Path, store: &str) -> ExitCode {
    let store = match store_of(store, "publish") {
        Ok(store) => store,
        Err(code) => return code,
    };
    let text = match wasmgate::config::read_text(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let parsed = store.parse_file(file, &text);
    checked_and_published(&store, &text, parsed, None, "nothing was published", |digest| {
        format!("{}: published to {} (sha256 {digest})", file.display(), store.shown())
    })
}

/// `wasmgate rollback`: the store's previous config, checked, published.
fn rollback(store: &str) -> ExitCode {
    let store = match store_of(store, "rollback") {
        Ok(store) => store,
        Err(code) => return code,
    };
    let (current, text) = match store.read().and_then(|current| Ok((current, store.previous()?))) {
        Ok(texts) => texts,
        Err(e) => return store_failure(&store, &e),
    };
    if text == current {
        let what = format!("{}: the config kept at {} is the one in force", store.shown(), store.previous_key());
        return fail(what, "nothing to roll back to: publish the config to go back to", 2);
    }
    // Checked as the gateways read it: relative paths from here.
    let parsed = store.parse(&text);
    let not_done = format!("nothing was rolled back (that is the config kept at {})", store.previous_key());
    checked_and_published(&store, &text, parsed, Some(&current), &not_done, |digest| {
        format!("{}: rolled back (sha256 {digest})", store.shown())
    })
}

/// `publish` and `rollback`: `text` (`parsed`) loaded as the gateways will
/// load it, then written over `expected` (if given), saying `done` with
/// its sha256 and where the config it replaced was kept — or what is
/// wrong, and `not_done`.
fn checked_and_published(
    store: &wasmgate::config::source::Store,
    text: &str,
    parsed: Result<wasmgate::config::Config, wasmgate::config::ConfigError>,
    expected: Option<&str>,
    not_done: &str,
    done: impl FnOnce(&str) -> String,
) -> ExitCode {
    use sha2::Digest as _;
    let config = match parsed {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}\n{not_done}");
            return ExitCode::from(2);
        }
    };
    let digest = config.sha256();
    if let Err(e) = wasmgate::gateway::check_config(config) {
        eprintln!("{e}\n{not_done}");
        return ExitCode::from(2);
    }
    let replaced = match store.publish(text, expected) {
        Ok(replaced) => replaced,
        Err(e) => return store_failure(store, &e),
    };
    println!("{}", done(&digest));
    if let Some(old) = replaced {
        println!(
            "the config it replaced (sha256 {}) is kept at {}: `wasmgate rollback` puts it back",
            hex::encode(sha2::Sha256::digest(old)),
            store.previous_key()
        );
    }
    ExitCode::SUCCESS
}

/// What a store's failure is said as: exit 1 while it cannot be reached
/// (try again), 2 when it refused (mend first).
fn store_failure(store: &wasmgate::config::source::Store, e: &wasmgate::config::source::StoreError) -> ExitCode {
    let code = match e {
        wasmgate::config::source::StoreError::Unreachable(_) => 1,
        wasmgate::config::source::StoreError::Refused { .. } => 2,
    };
    fail(format!("{}: {e}", store.shown()), e.fix(), code)
}

/// The store a command writes to, or the exit code once what is wrong is said.
fn store_of(store: &str, command: &str) -> Result<Box<wasmgate::config::source::Store>, ExitCode> {
    match Source::parse(store) {
        Ok(Source::Store(store)) => Ok(store),
        Ok(Source::File(_)) => Err(fail(format!("{store}: {command} writes to a store"), STORE_URL, 2)),
        Err(e) => Err(fail(format!("the store's URL: {e}"), STORE_URL, 2)),
    }
}

/// The most a push, or an inspection's pull, may take.
const REGISTRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// `wasmgate inspect`, in a scratch directory (a pull's blobs, the compiled
/// component) of its own, removed after.
fn inspect(plugin: &str, schema: bool, registry: Registry) -> ExitCode {
    use wasmgate::plugin::registry::{MAX_PLUGIN_BYTES, Origin};
    let scratch = match Scratch::new() {
        Ok(scratch) => scratch,
        Err(e) => return fail(format!("cannot make a scratch directory: {e}"), "check TMPDIR (or /tmp)", 1),
    };
    let file = std::path::Path::new(plugin);
    let (path, origin) = if file.is_file() {
        (file.to_path_buf(), Origin::File(file.to_path_buf()))
    } else {
        let reference = match wasmgate::oci::Reference::parse(plugin) {
            Ok(r) => r,
            Err(e) => {
                return fail(
                    format!("{plugin} is not a file, nor a reference: {e}"),
                    "give a .wasm file's path, or registry/repository:tag (or @sha256:MANIFEST)",
                    2,
                );
            }
        };
        let Some(registry) = registry.config() else { return ExitCode::from(2) };
        let pull = wasmgate::oci::pull(&reference, None, &[], &registry, &scratch.0, MAX_PLUGIN_BYTES);
        match with_registry(pull) {
            // Without a pin, the registry is always asked: the manifest is known.
            Ok(wasmgate::oci::Pulled { path, manifest: Some(manifest), .. }) => {
                (path, Origin::Pulled(reference, manifest))
            }
            Ok(_) => return fail(format!("{reference}: pulled without its manifest"), "try again", 1),
            Err(e) => {
                return fail(format!("cannot pull {reference}: {e}"), registry_fix(&e, &reference.registry, "pull"), 1);
            }
        }
    };
    let runtime = match wasmgate::plugin::Runtime::for_inspection() {
        Ok(runtime) => runtime,
        Err(e) => {
            let fix = "check the memory the process may map (ulimit -v)";
            return fail(format!("cannot start the plugin engine: {e:#}"), fix, 1);
        }
    };
    match wasmgate::plugin::registry::inspect(&runtime, &path, origin, &scratch.0) {
        Ok(inspected) if schema => match inspected.config_schema_text() {
            Ok(text) => {
                print!("{text}");
                if !text.ends_with('\n') {
                    println!();
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e.what, e.fix, 1),
        },
        Ok(inspected) => {
            print!("{inspected}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.what, e.fix, 2),
    }
}

/// A directory of this process's own (made, not found: mode 0700, under
/// a name no one had), removed with what is in it when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        let mut tries = 0;
        loop {
            let name = format!("wasmgate-inspect-{}-{:016x}", std::process::id(), fastrand::u64(..));
            let path = std::env::temp_dir().join(name);
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 3 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A command's registry calls, run to their end on a runtime of their own
/// — bounded: a registry that stops answering does not hold the shell.
fn with_registry<T>(
    calls: impl std::future::Future<Output = Result<T, wasmgate::oci::Failure>>,
) -> Result<T, wasmgate::oci::Failure> {
    use wasmgate::oci::Failure;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Setup(format!("cannot start a runtime: {e}")))?;
    runtime
        .block_on(async { tokio::time::timeout(REGISTRY_TIMEOUT, calls).await })
        .unwrap_or_else(|_| Err(Failure::Unreachable(format!("no answer within {} s", REGISTRY_TIMEOUT.as_secs()))))
}

fn push(file: &std::path::Path, reference: &str, to: Registry, sign_key: Option<&std::path::Path>) -> ExitCode {
    let reference = match wasmgate::oci::Reference::parse(reference) {
        Ok(r) if r.digest.is_none() => r,
        Ok(_) => {
            let what = format!("{reference}: push to a tag; the digest is the registry's to give");
            return fail(what, "write registry/repository:tag", 2);
        }
        Err(e) => return fail(e, "write registry/repository:tag, e.g. ghcr.io/acme/rate-limit:1.2.0", 2),
    };
    let component = match wasmgate::files::read_regular(file, wasmgate::plugin::registry::MAX_PLUGIN_BYTES) {
        Ok(bytes) => bytes,
        Err(e) => return fail(format!("cannot read {}: {e}", file.display()), "name the plugin's .wasm file", 2),
    };
    // A component's preamble: `\0asm`, version 0x0d, layer 1 (a core
    // module's layer is 0).
    if !component.starts_with(b"\0asm\x0d\0\x01\0") {
        let fix = "build the plugin with `cargo build --release --target wasm32-wasip2`";
        return fail(format!("{} is not a WebAssembly component", file.display()), fix, 2);
    }
    let key = match sign_key.map(|k| (k, wasmgate::files::read_regular(k, wasmgate::files::MAX_CONFIG_FILE))) {
        None => None,
        Some((path, Ok(bytes))) => match wasmgate::oci::check_signing_key(&bytes) {
            Ok(()) => Some(bytes),
            Err(e) => {
                let fix = "give a PKCS#8 PEM P-256 key: convert one (`openssl pkcs8 -topk8 -nocrypt -in KEY -out \
                           KEY.pk8`) or make a new one (`openssl genpkey -algorithm EC -pkeyopt \
                           ec_paramgen_curve:P-256 -out NEW.key`)";
                return fail(format!("{}: {e}", path.display()), fix, 2);
            }
        },
        Some((path, Err(e))) => {
            return fail(format!("cannot read {}: {e}", path.display()), "name the signing key's PEM file", 2);
        }
    };
    let Some(registry) = to.config() else { return ExitCode::from(2) };
    let pushed = with_registry(async {
        let pushed = wasmgate::oci::push(&component, &reference, &registry).await?;
        if let Some(key) = &key {
            wasmgate::oci::sign(&reference, &pushed.manifest, key, &registry).await?;
        }
        Ok(pushed)
    });
    match pushed {
        Ok(pushed) => {
            let repository = format!("{}/{}", reference.registry, reference.repository);
            match wasmgate::plugin::registry::described(&component) {
                Some(d) => println!("pushed {reference} ({} {})", d.name, d.version),
                None => println!("pushed {reference}"),
            }
            if let Some(key) = sign_key {
                println!("signed sha256:{} with {}", hex::encode(pushed.manifest), key.display());
            }
            println!("pin it in [plugin.NAME] by the manifest:");
            println!("  oci = \"{repository}@sha256:{}\"", hex::encode(pushed.manifest));
            println!("or by the component (sha256 of {}):", file.display());
            println!("  oci = \"{reference}\"");
            println!("  sha256 = \"{}\"", hex::encode(pushed.component));
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("cannot push {reference}: {e}"), registry_fix(&e, &reference.registry, "push"), 1),
    }
}

fn run(source: Source) -> ExitCode {
    raise_open_files_limit();
    match wasmgate::gateway::run(source) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ wasmgate::gateway::StartError::Signals(_)) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Raises the soft limit on open files to the hard one, as Go's runtime
/// does: a gateway holds two sockets a request, and systemd's default soft
/// limit (1 024, under a hard limit of 524 288) runs out at a few hundred
/// clients — then accepts fail and upstream connects with them.
#[expect(unsafe_code, reason = "getrlimit and setrlimit: libc calls on a plain struct")]
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    // Linux caps the hard limit at `fs.nr_open`; a soft limit past a
    // million would only make a larger descriptor table.
    let want = limit.rlim_max.min(1 << 20);
    if limit.rlim_cur >= want {
        return;
    }
    let raised = libc::rlimit { rlim_cur: want, rlim_max: limit.rlim_max };
    // SAFETY: `raised` is a valid rlimit, read by the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        tracing::debug!(from = limit.rlim_cur, to = want, "raised the open files limit");
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WASMGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("WASMGATE_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colour only on a terminal: log files should not fill with escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
