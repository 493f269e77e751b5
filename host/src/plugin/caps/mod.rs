//! Capabilities: what a plugin may reach beyond its own request, each granted
//! by the operator in `[plugin.NAME] grants` and enforced here.
//!
//! A component imports only the interfaces it uses, so its import list is its
//! request for capabilities. At load, every `wasmgate:plugin` import is
//! checked against the grants ([`check`]); an ungranted one refuses the
//! plugin with the grant to add. Granted interfaces are then linked for that
//! plugin alone ([`link`]), with the plugin's [`Caps`] — its store namespace,
//! secrets, and the upstreams and origins it may call — in its store data.
//!
//! Plugins that wait on I/O (outbound HTTP, the Redis store) are linked with
//! async host functions and called with `call_async`, so a worker is never
//! blocked; everything else stays synchronous and inline.

pub mod crypto;
pub mod http;
pub mod redis;
pub mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use wasmgate_common::shared::SharedSpace;
use wasmtime::component::{HasSelf, Linker};

use self::store::StoreBackend;
use super::host_api::{HostState, wasmgate::plugin as wit};
use crate::config::{Grants, HttpGrant, Isolation, Secret};
use crate::upstream::Upstream;

/// Everything a plugin was granted, as the host functions need it.
pub struct Caps {
    pub plugin: Arc<str>,
    /// The plugin's keys live under this prefix in the shared store.
    pub namespace: String,
    pub store: Option<StoreBackend>,
    pub crypto: bool,
    pub secrets: BTreeMap<String, Secret>,
    /// Secrets granted only to make keys of ([`Grants::sealed_secrets`]).
    pub sealed_secrets: BTreeSet<String>,
    pub http: Option<http::HttpCaps>,
    /// The bytes its instances share (the `shared` interface): one space a
    /// plugin and loaded config, so a reload starts it afresh. `None` under
    /// `per-request` isolation without `grants.shared`: every request's
    /// instance then finds nothing and keeps nothing.
    pub shared: Option<Mutex<SharedSpace>>,
}

impl std::fmt::Debug for Caps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caps")
            .field("plugin", &self.plugin)
            .field("store", &self.store.is_some())
            .field("crypto", &self.crypto)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("http", &self.http.is_some())
            .finish()
    }
}

impl Caps {
    /// No capabilities (tests, benches).
    pub fn none(plugin: &str) -> Self {
        Self {
            plugin: Arc::from(plugin),
            namespace: format!("{plugin}:"),
            store: None,
            crypto: false,
            secrets: BTreeMap::new(),
            sealed_secrets: BTreeSet::new(),
            http: None,
            shared: Some(Mutex::default()),
        }
    }

    /// The capabilities `grants` gives `plugin` (run with `isolation`),
    /// resolved against this snapshot's upstreams and the origins built for
    /// it.
    pub fn new(
        plugin: &str,
        grants: &Grants,
        isolation: Isolation,
        store: &StoreBackend,
        upstreams: &[Arc<Upstream>],
        origins: &HashMap<HttpGrant, Arc<Upstream>>,
    ) -> Result<Self, String> {
        let http = if grants.http.is_empty() {
            None
        } else {
            let mut targets = HashMap::new();
            for g in &grants.http {
                let up = match g {
                    HttpGrant::Upstream(name) => upstreams
                        .iter()
                        .find(|u| &*u.name == name.as_str())
                        .cloned()
                        .ok_or_else(|| format!("grants.http names upstream `{name}`, which is not defined"))?,
                    origin => origins.get(origin).cloned().ok_or_else(|| format!("no client for {origin:?}"))?,
                };
                targets.insert(g.clone(), up);
            }
            Some(http::HttpCaps { targets, timeout: grants.http_timeout, max_response: grants.http_max_response })
        };
        Ok(Self {
            plugin: Arc::from(plugin),
            namespace: format!("{plugin}:"),
            store: grants.store.then(|| store.clone()),
            crypto: grants.crypto,
            secrets: grants.secrets.clone(),
            sealed_secrets: grants.sealed_secrets.clone(),
            http,
            shared: (isolation == Isolation::Pooled || grants.shared).then(Mutex::default),
        })
    }

    /// Its instances' shared bytes, to read or write; `None` when its
    /// instances share none.
    pub fn shared(&self) -> Option<std::sync::MutexGuard<'_, SharedSpace>> {
        // A panic holding the lock cannot leave the space half-written:
        // each operation changes it in one step at its end.
        self.shared.as_ref().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether calls into this plugin must be async (it may wait on I/O).
    pub fn needs_async(&self, imports: &Imports) -> bool {
        (imports.http && self.http.is_some())
            || (imports.store && self.store.as_ref().is_some_and(StoreBackend::is_remote))
    }
}

/// The capability interfaces a component imports, and whether it imports
/// `shared` (no capability: granted to pooled plugins, to per-request ones
/// with `grants.shared`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imports {
    pub store: bool,
    pub http: bool,
    pub secrets: bool,
    pub crypto: bool,
    pub shared: bool,
}

impl Imports {
    /// Records `interface` (`store`, `http`, ...); false when it is not a
    /// capability.
    pub fn add(&mut self, interface: &str) -> bool {
        match interface {
            "store" => self.store = true,
            "http" => self.http = true,
            "secrets" => self.secrets = true,
            "crypto" => self.crypto = true,
            _ => return false,
        }
        true
    }
}

/// The grant an import needs that `grants` lacks: `(what, fix)`.
///
/// `secrets` and `http` need none to load: without the grant the plugin sees
/// no secret and every request it sends is refused `not-granted`, so a plugin
/// that only may use them (api-key's `keys_secret`, jwt's `jwks_url`) loads
/// without a grant it does not need. `store` and `crypto` must be granted.
pub fn check(plugin: &str, imports: &Imports, grants: &Grants) -> Result<(), (String, String)> {
    let missing = |what: &str, example: &str| {
        (
            format!("it imports wasmgate:plugin/{what}, which it was not granted"),
            format!("if it may, add to [plugin.{plugin}]: grants = {{ {example} }}"),
        )
    };
    if imports.store && !grants.store {
        return Err(missing("store", "store = true"));
    }
    if imports.crypto && !grants.crypto {
        return Err(missing("crypto", "crypto = true"));
    }
    Ok(())
}

/// Links the capabilities a component imports. `remote_store` says whether
/// the store backend does I/O (then its functions are async); `http_granted`
/// whether the plugin may send requests (then they are async too).
pub fn link(
    linker: &mut Linker<HostState>,
    imports: &Imports,
    remote_store: bool,
    http_granted: bool,
) -> wasmtime::Result<()> {
    type D = HasSelf<HostState>;
    if imports.secrets {
        wit::secrets::add_to_linker::<HostState, D>(linker, |s| s)?;
    }
    if imports.crypto {
        wit::crypto::add_to_linker::<HostState, D>(linker, |s| s)?;
    }
    if imports.store {
        if remote_store { store::link_async(linker)? } else { store::link_sync(linker)? }
    }
    if imports.http {
        if http_granted { http::link(linker)? } else { http::link_ungranted(linker)? }
    }
    Ok(())
}

impl wit::secrets::Host for HostState {
    fn get(&mut self, name: String) -> Option<Vec<u8>> {
        if self.caps.sealed_secrets.contains(&name) {
            return None;
        }
        self.caps.secrets.get(&name).map(|s| s.expose().to_vec())
    }
}
