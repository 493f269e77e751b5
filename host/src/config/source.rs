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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{Config, ConfigError, Problem};
use crate::files::MAX_CONFIG_FILE;

/// The key read when the URL names none.
pub const DEFAULT_KEY: &str = "wasmgate:config";

/// The store's password, for a URL without one (a URL's password would
/// show in `ps` and in shell histories).
pub const PASSWORD_VAR: &str = "WASMGATE_CONFIG_STORE_PASSWORD";

/// Connecting to the store, and each of its answers.
const STORE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the config comes from.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Store(Box<Store>),
}

/// A key in Redis holding the config's text.
#[derive(Clone)]
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
    connection: Arc<Mutex<Option<redis::Connection>>>,
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

impl Source {
    /// `-c`'s argument: a `redis://` URL, or a file's path. The URL may
    /// name the key (`?key=NAME`, else [`DEFAULT_KEY`]); its password may
    /// come from [`PASSWORD_VAR`].
    pub fn parse(arg: &str) -> Result<Self, String> {
        if arg.starts_with("rediss://") {
            return Err("TLS to Redis (rediss://) is not supported; use redis:// to a Redis on a trusted network \
                        (or through a local TLS proxy such as stunnel)"
                .into());
        }
        let Some(rest) = arg.strip_prefix("redis://") else {
            return Ok(Self::File(PathBuf::from(arg)));
        };
        let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
        if let Some((name, _)) = wasmgate_common::query::pairs(query).find(|(name, _)| name != b"key") {
            return Err(format!(
                "unknown parameter {:?} in the store's URL: only ?key=NAME is read",
                String::from_utf8_lossy(&name)
            ));
        }
        let key = match wasmgate_common::query::values(query, "key").as_slice() {
            [] => DEFAULT_KEY.to_owned(),
            [key] if !key.is_empty() => {
                String::from_utf8(key.clone()).map_err(|_| "the key is not UTF-8".to_owned())?
            }
            _ => return Err("give the key once, not empty: ?key=NAME".into()),
        };
        let info = redis::IntoConnectionInfo::into_connection_info(format!("redis://{address}"))
            .map_err(|e| format!("not a Redis URL: {e}"))?;
        let info = match std::env::var(PASSWORD_VAR) {
            Ok(password) if info.redis_settings().password().is_none() => {
                let settings = info.redis_settings().clone().set_password(password);
                info.set_redis_settings(settings)
            }
            _ => info,
        };
        let client = redis::Client::open(info).map_err(|e| format!("not a Redis URL: {e}"))?;
        // Everything after the last `@` of the authority: no credentials.
        let (authority, path) = address.split_once('/').map_or((address, ""), |(a, p)| (a, p));
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let path = if path.is_empty() { String::new() } else { format!("/{path}") };
        let shown = format!("redis://{host}{path}?key={}", wasmgate_common::query::encode(key.as_bytes()));
        let base = std::env::current_dir().map_err(|e| format!("cannot read the working directory: {e}"))?;
        let connection = Arc::new(Mutex::new(None));
        Ok(Self::Store(Box::new(Store { client, shown, key, base, last_good: None, connection })))
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
            (Err(e @ StoreError::Unreachable(_)), Some(copy)) if copy.exists() => {
                tracing::warn!(
                    store = %store.shown,
                    copy = %copy.display(),
                    error = %e,
                    "starting from the last config served, kept in --last-good: the store cannot be reached"
                );
                let text = crate::files::read_regular_text(copy, MAX_CONFIG_FILE).map_err(|e| {
                    ConfigError::single(Problem {
                        file: copy.clone(),
                        line: None,
                        key: String::new(),
                        what: format!("cannot read the last good copy: {e}"),
                        fix: "bring the store back, or remove the copy and start once the store is reachable".into(),
                    })
                })?;
                super::parse_in(copy, &store.base, &text)
            }
            (Err(e), _) => Err(store.problem(&e)),
        }
    }

    /// The config's bytes as they are now, for the watcher (`None` for a
    /// file that cannot be read or a key that is not set; the next load
    /// says why). `Err` while the store cannot be reached.
    pub fn current(&self) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Self::File(path) => Ok(crate::files::read_regular(path, MAX_CONFIG_FILE).ok()),
            Self::Store(store) => match store.read() {
                Ok(text) => Ok(Some(text.into_bytes())),
                Err(e @ StoreError::Unreachable(_)) => Err(e),
                Err(StoreError::Refused { .. }) => Ok(None),
            },
        }
    }

    /// `config` serves: a store's is copied to `--last-good`, if given.
    pub fn served(&self, config: &Config) {
        let Self::Store(store) = self else { return };
        let Some(copy) = &store.last_good else { return };
        if std::fs::read(copy).is_ok_and(|kept| kept == config.source.as_bytes()) {
            return;
        }
        // Its owner's only: a config may hold credentials (a store's URL).
        if let Err(e) = crate::files::write_atomically(copy, config.source.as_bytes(), 0o600) {
            tracing::warn!(copy = %copy.display(), error = %e, "cannot keep the last good config (--last-good)");
        }
    }
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

    /// Writes `text` to the key (`wasmgate publish`, once it is checked):
    /// the gateways following it load it at their next look.
    pub fn publish(&self, text: &str) -> Result<(), StoreError> {
        self.with_connection(|c| redis::cmd("SET").arg(&self.key).arg(text).query::<()>(c))
    }

    fn parse(&self, text: &str) -> Result<Config, ConfigError> {
        super::parse_in(Path::new(&self.shown), &self.base, text)
    }

    fn problem(&self, e: &StoreError) -> ConfigError {
        let fix = match e {
            StoreError::Unreachable(_) => "check that Redis runs at that address; give --last-good FILE so that a \
                                           gateway can start from the last config it served while the store is down"
                .to_owned(),
            StoreError::Refused { fix, .. } => fix.clone(),
        };
        ConfigError::single(Problem {
            file: PathBuf::from(&self.shown),
            line: None,
            key: String::new(),
            what: e.to_string(),
            fix,
        })
    }

    /// The key's text: its length, then at most [`MAX_CONFIG_FILE`] of it
    /// (or, for none, whether it is set). Commands a read-only ACL user
    /// may be given: `+strlen +getrange +exists`.
    fn read(&self) -> Result<String, StoreError> {
        let publish = format!("publish one: wasmgate publish gateway.toml '{}'", self.shown);
        let len: u64 = self.with_connection(|c| redis::cmd("STRLEN").arg(&self.key).query(c))?;
        if len == 0 && !self.with_connection(|c| redis::cmd("EXISTS").arg(&self.key).query::<bool>(c))? {
            return Err(StoreError::Refused { what: format!("the key {:?} is not set", self.key), fix: publish });
        }
        let bytes: Vec<u8> =
            self.with_connection(|c| redis::cmd("GETRANGE").arg(&self.key).arg(0).arg(MAX_CONFIG_FILE - 1).query(c))?;
        if len > MAX_CONFIG_FILE {
            return Err(StoreError::Refused {
                what: format!("the config is larger than {} MiB", MAX_CONFIG_FILE >> 20),
                fix: publish,
            });
        }
        String::from_utf8(bytes)
            .map_err(|_| StoreError::Refused { what: "the config is not UTF-8 text".into(), fix: publish })
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

    fn error(&self, e: &redis::RedisError) -> StoreError {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
            return StoreError::Unreachable(e.to_string());
        }
        let auth =
            e.kind() == redis::ErrorKind::AuthenticationFailed || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"));
        let fix = if auth {
            format!("give the store's password in {PASSWORD_VAR} (and its user in the URL: redis://USER@HOST)")
        } else {
            format!("the key {:?} must hold the config's text (a Redis string)", self.key)
        };
        StoreError::Refused { what: format!("the config store refused: {e}"), fix }
    }
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
        let s = store("redis://cache.internal");
        assert_eq!((s.key.as_str(), s.shown.as_str()), (DEFAULT_KEY, "redis://cache.internal?key=wasmgate%3Aconfig"));
    }

    #[test]
    fn credentials_never_show() {
        let s = store("redis://fleet:s3cret@10.0.0.5:6379/1?key=k");
        assert_eq!(s.shown, "redis://10.0.0.5:6379/1?key=k");
        assert!(!format!("{s:?}").contains("s3cret"));
        assert_eq!(s.client.get_connection_info().redis_settings().password(), Some("s3cret"));
    }

    #[test]
    fn what_cannot_be_a_store_is_said() {
        for (arg, said) in [
            ("rediss://h", "not supported"),
            ("redis://h?db=2", "unknown parameter"),
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
