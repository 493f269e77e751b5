//! Where the config comes from: a file (the default), or a key in a shared
//! store — Redis — that a fleet of gateways reads and follows
//! (`-c redis://HOST:PORT/DB?key=NAME`), written by `wasmgate publish`.
//!
//! A config from the store is checked as a file's is. Relative paths in it
//! are relative to the gateway's working directory: the files it names
//! (certificates, secrets, keys, the plugin directory) are each machine's
//! own. With `--last-good FILE` a gateway keeps there a copy of the last
//! config it served from the store, and starts from that copy when the
//! store cannot be reached — a restart during a Redis outage still serves.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::{Config, ConfigError};
use crate::files::MAX_CONFIG_FILE;

/// The key read when the URL names none.
pub const DEFAULT_KEY: &str = "wasmgate:config";

/// The store's password, for a URL without one (a URL's password would
/// show in `ps` and in shell histories).
pub const PASSWORD_VAR: &str = "WASMGATE_CONFIG_STORE_PASSWORD";

/// For a `rediss://` store: the CA bundle (PEM) to trust in place of the
/// Mozilla roots, and a client certificate and key (PEM) for a Redis that
/// asks for one, as files' paths.
pub const TLS_VARS: [&str; 3] = ["WASMGATE_CONFIG_STORE_CA", "WASMGATE_CONFIG_STORE_CERT", "WASMGATE_CONFIG_STORE_KEY"];

/// Connecting to the store, and each of its answers.
const STORE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the config comes from.
#[derive(Debug)]
pub enum Source {
    File(PathBuf),
    Store(Box<Store>),
}

/// A key in Redis holding the config's text.
pub struct Store {
    client: redis::Client,
    /// `redis://host:port/db?key=NAME` without credentials: how logs,
    /// errors and metrics name it.
    shown: String,
    key: String,
    /// What relative paths in its config are relative to: the working
    /// directory when the source was named.
    base: PathBuf,
    last_good: Option<PathBuf>,
    /// Kept between reads (the watcher reads every `server.watch_interval`).
    connection: Mutex<Option<redis::Connection>>,
    /// Whether the start served the `--last-good` copy: the store had no
    /// config to give.
    started_from_copy: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("shown", &self.shown).field("last_good", &self.last_good).finish()
    }
}

/// Why the store's config was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Not reached, or no answer in time: a start may use the last good
    /// copy, the watcher looks again at its next interval.
    Unreachable(String),
    /// Reached, but it holds no config or refused us.
    Refused { what: String, fix: String },
}

impl StoreError {
    /// What the operator can do about it.
    pub fn fix(&self) -> String {
        match self {
            // TLS that does not agree (a certificate not trusted, or none
            // given): unreachable too, so that a start may use the last good
            // copy while it is mended, but said as what it is.
            Self::Unreachable(e)
                if ["certificate", "Certificate", "fatal alert"].iter().any(|marker| e.contains(marker)) =>
            {
                let [ca, cert, key] = TLS_VARS;
                format!(
                    "check TLS: {ca} must hold the CA that issued Redis's certificate (for the URL's host), and \
                     a Redis that asks for a client certificate (tls-auth-clients) needs {cert} and {key}"
                )
            }
            Self::Unreachable(_) => "check that Redis runs at that address; give --last-good FILE so that a gateway \
                                     can start from the last config it served while the store is down"
                .to_owned(),
            Self::Refused { fix, .. } => fix.clone(),
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "cannot reach the config store: {e}"),
            Self::Refused { what, .. } => f.write_str(what),
        }
    }
}

impl From<&Path> for Source {
    fn from(path: &Path) -> Self {
        Self::File(path.to_path_buf())
    }
}

/// A `rediss://` store's TLS files, from [`TLS_VARS`]; none set for
/// `redis://`.
fn tls_from_env(scheme: &str) -> Result<Option<crate::config::RedisTls>, String> {
    let [ca, cert, key] = TLS_VARS.map(|var| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from));
    if scheme == "redis" {
        return match TLS_VARS.iter().zip([&ca, &cert, &key]).find(|(_, set)| set.is_some()) {
            Some((var, _)) => Err(format!("{var} is for TLS, and the store's URL is redis://: write it as rediss://")),
            None => Ok(None),
        };
    }
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err(format!("give {} and {} both, or neither", TLS_VARS[1], TLS_VARS[2])),
    };
    crate::tls::redis_tls(ca.as_deref(), client.as_ref().map(|(c, k)| (c.as_path(), k.as_path())))
        .map(Some)
        .map_err(|e| format!("the store's TLS files: {e}"))
}

impl Source {
    /// `-c`'s argument: a `redis://` (or, for TLS, `rediss://`) URL, or a
    /// file's path. The URL may name the key (`?key=NAME`, else
    /// [`DEFAULT_KEY`]); its password may come from [`PASSWORD_VAR`], its
    /// TLS files from [`TLS_VARS`].
    ///
    /// What is wrong with a URL is said without repeating it (it may carry
    /// a password).
    pub fn parse(arg: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = split_scheme(arg) else {
            return Ok(Self::File(PathBuf::from(arg)));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "redis" => "redis",
            "rediss" => "rediss",
            _ => return Err("a store is named by a redis:// URL (and a file by a path without a scheme)".into()),
        };
        let tls = tls_from_env(scheme)?;
        let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
        if rest.contains('#') || wasmgate_common::query::pairs(query).any(|(name, _)| name != b"key") {
            return Err(format!(
                "only ?key=NAME may follow the store's address; a password's `?`, `#`, `@` or `/` must be \
                 percent-encoded (or given in {PASSWORD_VAR})"
            ));
        }
        let key = match wasmgate_common::query::values(query, "key").as_slice() {
            [] => DEFAULT_KEY.to_owned(),
            [key] if !key.is_empty() => {
                String::from_utf8(key.clone()).map_err(|_| "the key is not UTF-8".to_owned())?
            }
            _ => return Err("give the key once, not empty: ?key=NAME".into()),
        };
        let not_a_url = |e: redis::RedisError| format!("not a Redis URL (redis://[USER@]HOST[:PORT][/DB]): {e}");
        let info =
            redis::IntoConnectionInfo::into_connection_info(format!("{scheme}://{address}")).map_err(not_a_url)?;
        let info = match std::env::var(PASSWORD_VAR) {
            Ok(password) if info.redis_settings().password().is_none() => {
                let settings = info.redis_settings().clone().set_password(password);
                info.set_redis_settings(settings)
            }
            _ => info,
        };
        // What is connected to, as parsed: no credentials.
        let host = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) | redis::ConnectionAddr::TcpTls { host, port, .. }
                if host.contains(':') =>
            {
                format!("[{host}]:{port}")
            }
            addr => addr.to_string(),
        };
        let shown = format!(
            "{scheme}://{host}/{}?key={}",
            info.redis_settings().db(),
            wasmgate_common::query::encode(key.as_bytes())
        );
        let client = crate::plugin::caps::redis::client(info, tls.as_ref()).map_err(not_a_url)?;
        let base = std::env::current_dir().map_err(|e| format!("cannot read the working directory: {e}"))?;
        let connection = Mutex::new(None);
        let started_from_copy = std::sync::atomic::AtomicBool::new(false);
        Ok(Self::Store(Box::new(Store { client, shown, key, base, last_good: None, connection, started_from_copy })))
    }

    /// Where to keep the last config served from the store (`--last-good`).
    pub fn keeping(self, last_good: Option<PathBuf>) -> Result<Self, String> {
        match (self, last_good) {
            (Self::File(_), Some(_)) => Err("--last-good is for a config from a store (-c redis://…)".into()),
            (Self::Store(mut store), Some(path)) => {
                store.last_good = Some(path);
                Ok(Self::Store(store))
            }
            (source, None) => Ok(source),
        }
    }

    /// The file's path, or the store's URL without credentials.
    pub fn name(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Store(store) => store.shown.clone(),
        }
    }

    /// Reads and checks the config.
    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            Self::File(path) => super::load(path),
            Self::Store(store) => match store.read() {
                Ok(text) => store.parse(&text),
                Err(e) => Err(store.problem(&e)),
            },
        }
    }

    /// [`load`](Self::load), at start: a store that cannot be reached gives
    /// the last good copy, if one was kept, with a warning.
    pub fn load_at_start(&self) -> Result<Config, ConfigError> {
        let Self::Store(store) = self else { return self.load() };
        match (store.read(), &store.last_good) {
            (Ok(text), _) => store.parse(&text),
            (Err(e @ StoreError::Unreachable(_)), Some(copy)) => {
                let problem = |what: String| {
                    let fix = "bring the store back, or give --last-good a path of this store's own";
                    ConfigError::whole(copy, what, fix)
                };
                let kept = match store.kept(copy) {
                    Ok(kept) => kept,
                    Err(none) if none.kind() == std::io::ErrorKind::NotFound => {
                        let fix = format!(
                            "bring the store back: there is no copy at {} yet (it is written once a config from \
                             the store serves)",
                            copy.display()
                        );
                        return Err(store.problem_with(&e, fix));
                    }
                    Err(unread) => return Err(problem(format!("cannot read the last good copy: {unread}"))),
                };
                tracing::warn!(
                    store = %store.shown,
                    copy = %copy.display(),
                    error = %e,
                    "starting from the last config served, kept in --last-good: the store cannot be reached"
                );
                let text = kept.strip_prefix(&store.copy_header()).ok_or_else(|| {
                    problem(format!("this is not a copy of {}'s config (another store's, or not a copy)", store.shown))
                })?;
                let config = store.parse(text)?;
                store.started_from_copy.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(config)
            }
            (Err(e), _) => Err(store.problem(&e)),
        }
    }

    /// Whether a config was found where it says: a store's start from its
    /// `--last-good` copy found none (`config_source_up` starts from this).
    pub fn found_at_start(&self) -> bool {
        match self {
            Self::File(_) => true,
            Self::Store(store) => !store.started_from_copy.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// [`load`](Self::load), for a reload while `in_force` serves: a store
    /// that cannot be reached gives `in_force`'s text again (with the files
    /// it names as they are now: a renewed certificate, a rotated secret).
    ///
    /// `up` is told, for a store, whether it gave a config
    /// (`config_source_up`), as the watcher's looks tell it.
    pub(crate) fn load_again(&self, in_force: &Config, up: impl FnOnce(bool)) -> Result<Config, ConfigError> {
        let Self::Store(store) = self else { return self.load() };
        let read = store.read();
        up(read.is_ok());
        match read {
            Ok(text) => store.parse(&text),
            Err(e @ StoreError::Unreachable(_)) => {
                tracing::warn!(store = %store.shown, error = %e, "reloading the config in force: the store cannot be reached");
                store.parse(&in_force.source)
            }
            Err(e) => Err(store.problem(&e)),
        }
    }

    /// The config's bytes as they are now, for the watcher (`None` for a
    /// file that cannot be read or a key that is not set; the next load
    /// says why). `Err` while the store cannot be reached.
    pub(crate) fn current(&self) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Self::File(path) => Ok(crate::files::read_regular(path, MAX_CONFIG_FILE).ok()),
            Self::Store(store) => match store.read() {
                Ok(text) => Ok(Some(text.into_bytes())),
                Err(e @ StoreError::Unreachable(_)) => Err(e),
                Err(StoreError::Refused { .. }) => Ok(None),
            },
        }
    }

    /// `config` serves: a store's is copied to `--last-good`, if given,
    /// after a line naming the store (a start reads only its own store's).
    pub(crate) fn served(&self, config: &Config) {
        let Self::Store(store) = self else { return };
        let Some(copy) = &store.last_good else { return };
        let kept = format!("{}{}", store.copy_header(), config.source);
        if store.kept(copy).is_ok_and(|was| was == kept) {
            return;
        }
        // Its owner's only: a config may hold credentials (`[store] url`
        // may carry Redis's password).
        if let Err(e) = crate::files::write_atomically(copy, kept.as_bytes(), 0o600) {
            tracing::warn!(copy = %copy.display(), error = %e, "cannot keep the last good config (--last-good)");
        }
    }
}

/// How one try of [`Store::publish`] ended.
enum Swap {
    /// Written; what it replaced, if another config.
    Done(Option<Vec<u8>>),
    /// Another write came between the read and the transaction.
    Raced,
    /// Not what the caller checked against (`expected`).
    Changed,
    /// The key holds more than a config can be.
    TooLarge,
}

impl Store {
    /// Its URL without credentials.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Checks `text`, read from `file`, as a gateway would read it from
    /// this store (relative paths from the working directory), naming
    /// `file` in problems: what `wasmgate publish` checks first.
    pub fn parse_file(&self, file: &Path, text: &str) -> Result<Config, ConfigError> {
        super::parse_in(file, &self.base, text)
    }

    /// Where the config before the last publish is kept: `KEY:previous`.
    pub fn previous_key(&self) -> String {
        format!("{}:previous", self.key)
    }

    /// Writes `text` to the key (`wasmgate publish` and `rollback`, once it
    /// is checked), keeping the config it replaces, if another, at
    /// [`previous_key`](Self::previous_key); returns what it replaced.
    /// With `expected`, only over that text (a rollback checked against
    /// what was in force). One transaction: both keys written or neither,
    /// and what is kept is what was replaced, whoever else publishes.
    pub fn publish(&self, text: &str, expected: Option<&str>) -> Result<Option<Vec<u8>>, StoreError> {
        let previous = self.previous_key();
        let changed = || StoreError::Refused {
            what: "the config changed while this was checked (another publish meanwhile); nothing was written".into(),
            fix: "look at what is there now (wasmgate check -c URL), and run it again if still wanted".into(),
        };
        for _ in 0..3 {
            let swapped = self.with_connection(|c| {
                redis::cmd("WATCH").arg(&self.key).query::<()>(c)?;
                let len: u64 = redis::cmd("STRLEN").arg(&self.key).query(c)?;
                let old: Option<Vec<u8>> = match len > MAX_CONFIG_FILE {
                    true => None,
                    false => redis::cmd("GET").arg(&self.key).query(c)?,
                };
                let refused = if len > MAX_CONFIG_FILE {
                    Some(Swap::TooLarge)
                } else if expected.is_some_and(|e| old.as_deref() != Some(e.as_bytes())) {
                    Some(Swap::Changed)
                } else {
                    None
                };
                if let Some(refused) = refused {
                    redis::cmd("UNWATCH").query::<()>(c)?;
                    return Ok(refused);
                }
                let kept = old.filter(|old| old.as_slice() != text.as_bytes());
                let mut transaction = redis::pipe();
                transaction.atomic().cmd("SET").arg(&self.key).arg(text).ignore();
                if let Some(old) = &kept {
                    transaction.cmd("SET").arg(&previous).arg(old.as_slice()).ignore();
                }
                // Nothing (nil) when the key changed since WATCH.
                let done: Option<()> = transaction.query(c)?;
                Ok(done.map_or(Swap::Raced, |()| Swap::Done(kept)))
            })?;
            match swapped {
                Swap::Done(kept) => return Ok(kept),
                Swap::Raced if expected.is_none() => continue,
                Swap::Raced | Swap::Changed => return Err(changed()),
                Swap::TooLarge => {
                    return Err(StoreError::Refused {
                        what: format!("the key {:?} holds over {} MiB: not a config", self.key, MAX_CONFIG_FILE >> 20),
                        fix: format!("delete it first (redis-cli DEL {})", self.key),
                    });
                }
            }
        }
        Err(StoreError::Unreachable("the key kept changing while the config was published".into()))
    }

    /// The config before the last publish, for a rollback.
    pub fn previous(&self) -> Result<String, StoreError> {
        self.read_key(&self.previous_key()).map_err(|e| match e {
            StoreError::Refused { what, .. } if what.ends_with("is not set") => StoreError::Refused {
                what: format!("nothing to roll back to: {what} (it is written by a publish that replaces a config)"),
                fix: "publish the config to go back to: wasmgate publish FILE URL".into(),
            },
            e => e,
        })
    }

    /// Checks `text` as a gateway reads it from this store (relative paths
    /// from the working directory), naming the store in problems.
    pub fn parse(&self, text: &str) -> Result<Config, ConfigError> {
        super::parse_in(Path::new(&self.shown), &self.base, text)
    }

    /// The first line of its `--last-good` copy.
    fn copy_header(&self) -> String {
        format!("# wasmgate --last-good: the last config served from {}\n", self.shown)
    }

    /// What the `--last-good` copy at `copy` holds (its header and a
    /// config), bounded as a config file is.
    fn kept(&self, copy: &Path) -> std::io::Result<String> {
        crate::files::read_regular_text(copy, MAX_CONFIG_FILE + self.copy_header().len() as u64)
    }

    fn problem(&self, e: &StoreError) -> ConfigError {
        self.problem_with(e, e.fix())
    }

    fn problem_with(&self, e: &StoreError, fix: String) -> ConfigError {
        ConfigError::whole(&self.shown, e.to_string(), fix)
    }

    /// The key's text: its length (for none, whether it is set), then its
    /// bytes, of at most [`MAX_CONFIG_FILE`]. Commands a read-only ACL user
    /// may be given: `+strlen +getrange +exists`.
    pub fn read(&self) -> Result<String, StoreError> {
        self.read_key(&self.key)
    }

    /// [`read`](Self::read) of `key`.
    fn read_key(&self, key: &str) -> Result<String, StoreError> {
        let publish = || format!("publish one: wasmgate publish gateway.toml '{}'", self.shown);
        for _ in 0..3 {
            let len: u64 = self.with_connection(|c| redis::cmd("STRLEN").arg(key).query(c))?;
            if len == 0 && !self.with_connection(|c| redis::cmd("EXISTS").arg(key).query::<bool>(c))? {
                return Err(StoreError::Refused { what: format!("the key {key:?} is not set"), fix: publish() });
            }
            if len > MAX_CONFIG_FILE {
                return Err(StoreError::Refused {
                    what: format!("the config is larger than {} MiB", MAX_CONFIG_FILE >> 20),
                    fix: publish(),
                });
            }
            // A byte past its end, if it has one: a value that grew (a
            // publish between the two) is told from one of this length.
            let bytes: Vec<u8> = self.with_connection(|c| redis::cmd("GETRANGE").arg(key).arg(0).arg(len).query(c))?;
            // Changed between the two (a publish meanwhile): read again.
            if bytes.len() as u64 != len {
                continue;
            }
            return String::from_utf8(bytes)
                .map_err(|_| StoreError::Refused { what: "the config is not UTF-8 text".into(), fix: publish() });
        }
        Err(StoreError::Unreachable("the key kept changing while it was read".into()))
    }

    /// Runs `op` on the kept connection, or a new one; a connection that
    /// failed is not kept.
    fn with_connection<T>(
        &self,
        op: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut kept = self.connection.lock().unwrap_or_else(PoisonError::into_inner);
        let mut connection = match kept.take() {
            Some(c) => c,
            None => {
                let c = self.client.get_connection_with_timeout(STORE_TIMEOUT).map_err(|e| self.error(&e))?;
                c.set_read_timeout(Some(STORE_TIMEOUT)).map_err(|e| self.error(&e))?;
                c.set_write_timeout(Some(STORE_TIMEOUT)).map_err(|e| self.error(&e))?;
                c
            }
        };
        let result = op(&mut connection).map_err(|e| self.error(&e))?;
        *kept = Some(connection);
        Ok(result)
    }

    /// Refused: what only the operator can mend (credentials, the ACL, a
    /// key of another type). Anything else is the store unable to answer
    /// for now (down, loading, busy, out of clients): unreachable, as the
    /// plugins' store takes it.
    fn error(&self, e: &redis::RedisError) -> StoreError {
        let text = e.to_string();
        let said = |codes: &[&str]| codes.iter().any(|c| text.contains(c));
        let fix = if e.kind() == redis::ErrorKind::AuthenticationFailed
            || said(&["NOAUTH", "WRONGPASS", "Authentication required"])
        {
            format!("give the store's password in {PASSWORD_VAR} (and its user in the URL: redis://USER@HOST)")
        } else if said(&["NOPERM", "NoPerm"]) {
            format!(
                "let the store's user read the key: +strlen +getrange +exists (and +select for a database other \
                 than 0); to publish and roll back, also +watch +get +multi +exec +set on it and {}",
                self.previous_key()
            )
        } else if said(&["WRONGTYPE"]) {
            format!("the key {:?} (and {:?}) must hold config text (a Redis string)", self.key, self.previous_key())
        } else {
            return StoreError::Unreachable(text);
        };
        StoreError::Refused { what: format!("the config store refused: {text}"), fix }
    }
}

/// `scheme://rest` (a path has no scheme: `./a://b` is a path).
fn split_scheme(arg: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = arg.split_once("://")?;
    let mut letters = scheme.chars();
    let named = letters.next().is_some_and(|c| c.is_ascii_alphabetic())
        && letters.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    named.then_some((scheme, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(arg: &str) -> Store {
        match Source::parse(arg).unwrap() {
            Source::Store(s) => *s,
            Source::File(f) => panic!("{arg} read as the file {}", f.display()),
        }
    }

    #[test]
    fn a_redis_url_names_a_store_and_anything_else_a_file() {
        assert!(matches!(Source::parse("gateway.toml").unwrap(), Source::File(p) if p == Path::new("gateway.toml")));
        assert!(matches!(Source::parse("./redis://x").unwrap(), Source::File(_)));
        let s = store("redis://127.0.0.1:6380/2?key=edge%2Fprod");
        assert_eq!(s.key, "edge/prod");
        assert_eq!(s.shown, "redis://127.0.0.1:6380/2?key=edge%2Fprod");
        let s = store("REDIS://cache.internal");
        assert_eq!(
            (s.key.as_str(), s.shown.as_str()),
            (DEFAULT_KEY, "redis://cache.internal:6379/0?key=wasmgate%3Aconfig")
        );
        assert_eq!(store("redis://[::1]:7000/").shown, "redis://[::1]:7000/0?key=wasmgate%3Aconfig");
    }

    #[test]
    fn credentials_never_show() {
        let s = store("redis://fleet:s3cret@10.0.0.5:6379/1?key=k");
        assert_eq!(s.shown, "redis://10.0.0.5:6379/1?key=k");
        assert!(!format!("{s:?}").contains("s3cret"));
        assert_eq!(s.client.get_connection_info().redis_settings().password(), Some("s3cret"));
        // What is shown is what is connected to, however the URL is spelt.
        let s = store("redis://h:12%23x@host/0");
        assert_eq!(s.shown, "redis://host:6379/0?key=wasmgate%3Aconfig");
        // TLS: shown as such (its files, if any, from the environment).
        let s = store("rediss://host:6380/2");
        assert_eq!(s.shown, "rediss://host:6380/2?key=wasmgate%3Aconfig");
        for arg in ["redis://h:12#x@host/0", "redis://:pa?ss@host/0", "valkey://:s3cret@host", "redis://:s3cret@h?db=1"]
        {
            let e = Source::parse(arg).unwrap_err();
            assert!(!e.contains("s3cret") && !e.contains("ss@host"), "{arg}: {e}");
        }
    }

    #[test]
    fn what_cannot_be_a_store_is_said() {
        for (arg, said) in [
            ("Redis://h?db=2", "only ?key=NAME"),
            ("http://h", "a store is named by a redis:// URL"),
            ("redis://h?key=a&key=b", "once"),
            ("redis://h?key=", "once"),
            ("redis://h/x", "not a Redis URL"),
        ] {
            let e = Source::parse(arg).unwrap_err();
            assert!(e.contains(said), "{arg}: {e}");
        }
        let e = Source::parse("gateway.toml").unwrap().keeping(Some("copy.toml".into())).unwrap_err();
        assert!(e.contains("--last-good"), "{e}");
    }
}
