//! Loading a plugin: the `.wasm` file from the plugin directory (or the path
//! its settings name), its sha256 pin, the WIT version it was built against,
//! the imports it asks for, and the `InstancePre` every instance is made from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{ComponentExportIndex, InstancePre};

use super::caps::{self, Caps, Imports};
use super::engine::Runtime;
use super::host_api::{HostState, PolicyPluginPre};
use super::schema::ConfigSchema;
use crate::config::PluginSettings;

/// The WIT package version this gateway implements.
pub const WIT_VERSION: &str = "0.1.6";
/// The versions it loads plugins built against: each later one only adds
/// functions, so a plugin built against an earlier one runs unchanged.
const COMPATIBLE_VERSIONS: [&str; 7] = ["0.1.0", "0.1.1", "0.1.2", "0.1.3", "0.1.4", "0.1.5", WIT_VERSION];
/// `@0.1.0, @0.1.1, @0.1.2, @0.1.3, @0.1.4, @0.1.5 and @0.1.6`, for messages.
fn supported() -> String {
    let mut text = String::new();
    for (i, version) in COMPATIBLE_VERSIONS.iter().enumerate() {
        if i > 0 {
            text.push_str(if i + 1 == COMPATIBLE_VERSIONS.len() { " and " } else { ", " });
        }
        text.push('@');
        text.push_str(version);
    }
    text
}

/// The export every policy provides.
pub const POLICY_EXPORT: &str = "wasmgate:plugin/policy";
/// Host interfaces every plugin may import.
const ALWAYS_GRANTED: [&str; 6] = ["types", "log", "context", "clock", "setup", "shared"];

/// Where the policy's functions are in the component.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exports {
    pub configure: ComponentExportIndex,
    pub on_request: ComponentExportIndex,
    pub on_response: ComponentExportIndex,
}

/// A loaded plugin, ready to be instantiated.
pub struct Plugin {
    pub name: Arc<str>,
    pub path: PathBuf,
    pub sha256: [u8; 32],
    /// Its name and version, as built (`None` from a component not built
    /// with the SDK).
    pub described: Option<Described>,
    /// Whether it carries a readable config schema (`wasmgate inspect`
    /// lists its keys).
    pub has_config_schema: bool,
    /// What it keeps in the plugin cache, pulled from a registry (nothing
    /// for a file).
    pub kept: crate::oci::Kept,
    pub settings: PluginSettings,
    /// The capabilities it imports (and was granted).
    pub imports: Imports,
    /// Whether its calls are async: it may wait on I/O.
    pub async_calls: bool,
    pub(crate) caps: Arc<Caps>,
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) exports: Exports,
    pub(crate) runtime: Arc<Runtime>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("sha256", &hex::encode(self.sha256))
            .finish()
    }
}

/// What the SDK writes into a plugin: its crate's name and version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Described {
    pub name: String,
    pub version: String,
}

/// The custom section the SDK writes [`Described`] into.
const DESCRIBED: &[u8] = b"wasmgate-plugin";

/// A component's [`Described`], from the custom section of its core
/// module (or of its own), if it has one that reads.
pub fn described(component: &[u8]) -> Option<Described> {
    let described: Described = serde_json::from_slice(custom_section(component, DESCRIBED, 0)?).ok()?;
    // What a component says goes into metrics and terminals: short, printable.
    let fits = |s: &str| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    (fits(&described.name) && fits(&described.version)).then_some(described)
}

/// The payload of the custom section `name` in a component or core module,
/// looking into the modules and components a component nests (a few
/// levels down).
pub(super) fn custom_section<'w>(wasm: &'w [u8], name: &[u8], depth: usize) -> Option<&'w [u8]> {
    // `\0asm`, then a version: 1 for a core module, 0x0d + layer 1 for a component.
    let component = wasm.get(4..8)? == [0x0d, 0, 1, 0];
    let mut rest = wasm.strip_prefix(b"\0asm")?.get(4..)?;
    while let Some((&id, after)) = rest.split_first() {
        let (size, after) = leb128(after)?;
        let payload = after.get(..size)?;
        rest = after.get(size..)?;
        match id {
            0 => {
                let (length, section) = leb128(payload)?;
                if section.get(..length)? == name {
                    return section.get(length..);
                }
            }
            // A component's core modules (1) and components (4).
            1 | 4 if component && depth < 4 => {
                if let Some(found) = custom_section(payload, name, depth + 1) {
                    return Some(found);
                }
            }
            _ => {}
        }
    }
    None
}

/// An unsigned LEB128 `u32` and what follows it.
fn leb128(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let mut value: u32 = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= u32::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((usize::try_from(value).ok()?, bytes.get(i + 1..)?));
        }
    }
    None
}

/// Why a plugin could not be loaded, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub what: String,
    pub fix: String,
}

impl LoadError {
    fn new(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { what: what.into(), fix: fix.into() }
    }
}

/// The plugin names (file stems of `*.wasm`) in a directory, sorted.
pub fn available(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension().is_some_and(|x| x == "wasm")).then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    names
}

/// Where plugin `name` is read from.
pub fn plugin_path(dir: Option<&Path>, name: &str, settings: &PluginSettings) -> Option<PathBuf> {
    settings.file.clone().or_else(|| dir.map(|d| d.join(format!("{name}.wasm"))))
}

/// The largest plugin file read (Python components are tens of MiB).
pub const MAX_PLUGIN_BYTES: u64 = 512 << 20;

/// A plugin file's bytes ([`crate::files::read_regular`]).
fn read_plugin(path: &Path) -> std::io::Result<Vec<u8>> {
    crate::files::read_regular(path, MAX_PLUGIN_BYTES)
}

/// Loads and checks one plugin.
pub fn load(
    runtime: &Arc<Runtime>,
    name: &str,
    path: &Path,
    settings: &PluginSettings,
    cache_dir: &Path,
    dir: Option<&Path>,
    caps: Caps,
) -> Result<Plugin, LoadError> {
    let bytes = read_plugin(path).map_err(|e| {
        let fix = if settings.oci.is_some() {
            "check the plugin cache directory (the pulled component was there a moment ago)".to_owned()
        } else if settings.file.is_some() {
            format!("build it (`cargo build --target wasm32-wasip2`) and check plugin.{name}.file")
        } else {
            let found = dir.map(available).unwrap_or_default();
            let found = if found.is_empty() { "none".to_owned() } else { found.join(", ") };
            format!(
                "build it (`cargo build --target wasm32-wasip2`) and put {name}.wasm in the plugin directory, \
                 or use a plugin that is there: {found}"
            )
        };
        LoadError::new(format!("cannot read {}: {e}", path.display()), fix)
    })?;
    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
    if let Some(pin) = settings.sha256
        && pin != sha256
    {
        return Err(LoadError::new(
            format!(
                "{} has sha256 {}, but [plugin.{name}] pins {}",
                path.display(),
                hex::encode(sha256),
                hex::encode(pin)
            ),
            format!(
                "if the new file is the one you trust, set sha256 = \"{}\" in [plugin.{name}]",
                hex::encode(sha256)
            ),
        ));
    }
    let (component, imports, policy_export) = compile(runtime, name, path, &bytes, &sha256, cache_dir)?;
    caps::check(name, &imports, &settings.grants)
        .map_err(|(what, fix)| LoadError::new(format!("{}: {what}", path.display()), fix))?;
    let remote_store = caps.store.as_ref().is_some_and(caps::store::StoreBackend::is_remote);
    let async_calls = caps.needs_async(&imports);
    let mut linker = runtime.linker().clone();
    caps::link(&mut linker, &imports, remote_store, caps.http.is_some()).map_err(|e| {
        LoadError::new(
            format!("{}: cannot link its capabilities: {e:#}", path.display()),
            "rebuild it with the wasmgate SDK",
        )
    })?;
    super::sandbox::stub_unprovided(&mut linker, runtime.engine(), &component).map_err(|e| {
        LoadError::new(
            format!("{}: cannot link its imports: {e:#}", path.display()),
            "rebuild it with the wasmgate SDK",
        )
    })?;
    let pre = linker
        .instantiate_pre(&component)
        .and_then(|pre| PolicyPluginPre::new(pre.clone()).map(|_| pre))
        .map_err(|e| {
            LoadError::new(
                format!("{} does not fit the wasmgate:plugin@{WIT_VERSION} world: {e:#}", path.display()),
                "rebuild it against this gateway's SDK version",
            )
        })?;
    let index = |parent: Option<&ComponentExportIndex>, n: &str| {
        component.get_export_index(parent, n).ok_or_else(|| {
            LoadError::new(
                format!("{} does not export `{n}` of {policy_export}", path.display()),
                "rebuild it with the wasmgate SDK",
            )
        })
    };
    let policy = index(None, &policy_export)?;
    let exports = Exports {
        configure: index(Some(&policy), "configure")?,
        on_request: index(Some(&policy), "on-request")?,
        on_response: index(Some(&policy), "on-response")?,
    };
    Ok(Plugin {
        name: Arc::from(name),
        path: path.to_path_buf(),
        sha256,
        described: described(&bytes),
        has_config_schema: super::schema::config_schema(&bytes).is_some_and(|s| s.is_ok()),
        kept: crate::oci::Kept::default(),
        settings: settings.clone(),
        imports,
        async_calls,
        caps: Arc::new(caps),
        pre,
        exports,
        runtime: runtime.clone(),
    })
}

/// `bytes` (of `path`, whose sha256 they have) checked and compiled as a
/// policy: the component, the capabilities it imports, its policy export.
fn compile(
    runtime: &Runtime,
    name: &str,
    path: &Path,
    bytes: &[u8],
    sha256: &[u8; 32],
    cache_dir: &Path,
) -> Result<(wasmtime::component::Component, Imports, String), LoadError> {
    check_header(path, bytes)?;
    let component = runtime.component(sha256, bytes, cache_dir).map_err(|e| {
        LoadError::new(
            format!("{} is not a valid component: {e:#}", path.display()),
            "rebuild it with the wasmgate SDK for the wasm32-wasip2 target",
        )
    })?;
    let (imports, policy_export) = check_world(name, path, runtime, &component)?;
    Ok((component, imports, policy_export))
}

/// What a plugin is and asks for, read from its component
/// (`wasmgate inspect`): checked as a load checks it, not configured.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// Where it came from: its file, or the reference it was pulled by.
    pub origin: Origin,
    pub sha256: [u8; 32],
    pub described: Option<Described>,
    /// The WIT version it was built against.
    pub wit: String,
    /// The capabilities it imports: a config must grant them.
    pub imports: Imports,
    /// The JSON Schema of its config table, if it carries one (or what is
    /// wrong with the one it carries).
    pub config_schema: Option<Result<ConfigSchema, String>>,
}

/// Where an inspected component came from.
#[derive(Debug, Clone)]
pub enum Origin {
    File(PathBuf),
    /// Pulled by this reference, whose manifest had this sha256.
    Pulled(crate::oci::Reference, [u8; 32]),
}

impl std::fmt::Display for Origin {
    /// The file's path, or the reference.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(file) => write!(f, "{}", file.display()),
            Origin::Pulled(reference, _) => write!(f, "{reference}"),
        }
    }
}

/// [`Inspected`] of the component at `path` (a file, or where a pull from
/// `origin` put it), compiled into `cache_dir`. Problems name the origin.
pub fn inspect(runtime: &Runtime, path: &Path, origin: Origin, cache_dir: &Path) -> Result<Inspected, LoadError> {
    let (shown, name) = match &origin {
        Origin::File(file) => {
            (file.clone(), file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default())
        }
        Origin::Pulled(reference, _) => (
            PathBuf::from(reference.to_string()),
            reference.repository.rsplit('/').next().unwrap_or_default().to_owned(),
        ),
    };
    let bytes = read_plugin(path).map_err(|e| {
        LoadError::new(format!("cannot read {}: {e}", shown.display()), "name a plugin's .wasm component")
    })?;
    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
    let (_, imports, policy_export) = compile(runtime, &name, &shown, &bytes, &sha256, cache_dir)?;
    let wit = policy_export.rsplit_once('@').map(|(_, v)| v.to_owned()).unwrap_or_default();
    let config_schema = super::schema::config_schema(&bytes);
    Ok(Inspected { origin, sha256, described: described(&bytes), wit, imports, config_schema })
}

impl Inspected {
    /// The JSON Schema of its config as it carries it (`inspect --schema`),
    /// or why there is none to give.
    pub fn config_schema_text(&self) -> Result<&str, LoadError> {
        match &self.config_schema {
            Some(Ok(schema)) => Ok(&schema.text),
            Some(Err(e)) => Err(LoadError::new(
                format!("{}: {e}", self.origin),
                "its author rebuilds it with the SDK, which writes the schema from the config type",
            )),
            None => Err(LoadError::new(
                format!("{} carries no config schema", self.origin),
                "read its README for its config; an SDK plugin carries one with \
                 export_plugin!(P, config_schema = \"config.schema.json\")",
            )),
        }
    }
}

impl std::fmt::Display for Inspected {
    /// What `wasmgate inspect` prints: where it came from, its name and
    /// version, sha256, WIT version, the grants a config must give it, the
    /// pin to trust it by (a file's sha256, a pull's manifest), and the keys
    /// of its config table, from its schema.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.origin)?;
        match &self.described {
            Some(d) => writeln!(f, "  plugin:  {} {}", d.name, d.version)?,
            None => writeln!(f, "  plugin:  (says no name or version: not built with the wasmgate SDK)")?,
        }
        writeln!(f, "  sha256:  {}", hex::encode(self.sha256))?;
        writeln!(f, "  WIT:     wasmgate:plugin@{}", self.wit)?;
        let Imports { store, http, secrets, crypto, shared } = self.imports;
        let grants: Vec<&str> = [
            (store, "store = true"),
            (http, "http = [\"UPSTREAM\" or \"https://HOST\", …]"),
            (secrets, "secrets = { NAME = { env = \"VAR\" } or { file = \"PATH\" }, … }"),
            (crypto, "crypto = true"),
        ]
        .into_iter()
        .filter_map(|(asked, grant)| asked.then_some(grant))
        .collect();
        if grants.is_empty() {
            writeln!(f, "  grants:  none needed (it imports no capability)")?;
        } else {
            writeln!(f, "  grants:  [plugin.NAME] grants = {{ {} }}", grants.join(", "))?;
        }
        if shared {
            writeln!(
                f,
                "  shared:  its instances share bytes (wasmgate:plugin/shared); under isolation = \"per-request\" \
                 only with grants = {{ shared = true }}"
            )?;
        }
        match &self.origin {
            Origin::File(_) => writeln!(f, "  pin:     sha256 = \"{}\"", hex::encode(self.sha256))?,
            Origin::Pulled(reference, manifest) => writeln!(
                f,
                "  pin:     oci = \"{}/{}@sha256:{}\"",
                reference.registry,
                reference.repository,
                hex::encode(manifest)
            )?,
        }
        match &self.config_schema {
            None => writeln!(f, "  config:  (it carries no schema: its README says what its config takes)"),
            Some(Err(e)) => writeln!(f, "  config:  (unreadable: {e})"),
            Some(Ok(schema)) => {
                let table = schema.table();
                let others = if table.closed { "others are refused" } else { "others are let through" };
                match table.keys.is_empty() {
                    true => writeln!(f, "  config:  no keys ({others}); --schema prints its JSON Schema")?,
                    false => writeln!(f, "  config:  these keys ({others}); --schema prints its JSON Schema")?,
                }
                write_keys(f, &table.keys, 4)?;
                match table.cut {
                    true => writeln!(f, "    … and more (--schema prints them all)"),
                    false => Ok(()),
                }
            }
        }
    }
}

/// `keys` a line each, their descriptions and inner tables' keys under them.
fn write_keys(f: &mut std::fmt::Formatter<'_>, keys: &[super::schema::Key], indent: usize) -> std::fmt::Result {
    for key in keys {
        let required = if key.required { ", required" } else { "" };
        let default = key.default.as_ref().map(|d| format!(", default {d}")).unwrap_or_default();
        writeln!(f, "{:indent$}{} ({}{required}{default})", "", key.name, key.kind)?;
        if let Some(line) = &key.about {
            writeln!(f, "{:indent$}  {line}", "")?;
        }
        write_keys(f, &key.keys, indent + 2)?;
    }
    Ok(())
}

/// A component starts with `\0asm` and layer 1; a core module has layer 0.
fn check_header(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::new(
            format!("{} is not WebAssembly", path.display()),
            "point the config at the .wasm file that `cargo build --target wasm32-wasip2` produced",
        ));
    }
    if bytes[6..8] != [1, 0] {
        return Err(LoadError::new(
            format!("{} is a core Wasm module, not a component", path.display()),
            "build it for the wasm32-wasip2 target (which produces a component), not wasm32-unknown-unknown or wasip1",
        ));
    }
    Ok(())
}

/// Checks the WIT version of the policy export and every `wasmgate:plugin`
/// import, and that each import is one this gateway provides; returns the
/// capabilities it imports and the policy export's name.
fn check_world(
    name: &str,
    path: &Path,
    runtime: &Runtime,
    component: &wasmtime::component::Component,
) -> Result<(Imports, String), LoadError> {
    let mut imports = Imports::default();
    let engine = runtime.engine();
    let ty = component.component_type();
    let rebuild = format!("rebuild `{name}` with a wasmgate SDK for wasmgate:plugin@{WIT_VERSION}");
    let mut policy_export = None;
    for (export, _) in ty.exports(engine) {
        if let Some(version) = export.strip_prefix(POLICY_EXPORT).and_then(|v| v.strip_prefix('@')) {
            if !COMPATIBLE_VERSIONS.contains(&version) {
                return Err(LoadError::new(
                    format!(
                        "{} was built against wasmgate:plugin@{version}; this gateway supports {}",
                        path.display(),
                        supported()
                    ),
                    rebuild,
                ));
            }
            policy_export = Some(export.to_owned());
        }
    }
    let Some(policy_export) = policy_export else {
        return Err(LoadError::new(
            format!("{} does not export {POLICY_EXPORT}@{WIT_VERSION}; it is not a wasmgate policy", path.display()),
            "implement wasmgate_sdk::Plugin and call export_plugin!",
        ));
    };
    for (import, item) in ty.imports(engine) {
        if let Some(rest) = import.strip_prefix("wasmgate:plugin/") {
            let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
            if !COMPATIBLE_VERSIONS.contains(&version) {
                return Err(LoadError::new(
                    format!("{} imports {import}; this gateway supports {}", path.display(), supported()),
                    rebuild,
                ));
            }
            imports.shared |= iface == "shared";
            if !ALWAYS_GRANTED.contains(&iface) && !imports.add(iface) {
                return Err(LoadError::new(
                    format!("{} imports {import}, which this gateway does not provide", path.display()),
                    rebuild,
                ));
            }
        } else if !import.starts_with("wasi:") || !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
            return Err(LoadError::new(
                format!("{} imports `{import}`, which this gateway does not provide", path.display()),
                "plugins may import only wasmgate:plugin and WASI interfaces",
            ));
        }
    }
    Ok((imports, policy_export))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder::{Component, CustomSection, Module, ModuleSection, NestedComponentSection};

    fn section(data: &str) -> CustomSection<'_> {
        CustomSection { name: "wasmgate-plugin".into(), data: data.as_bytes().into() }
    }

    /// The SDK's section is found in the component's core module, in a
    /// component it nests, or in its own sections; anything else is none.
    #[test]
    fn a_plugin_s_name_and_version_are_read_from_its_component() {
        let info = r#"{"name":"add-header","version":"1.2.3"}"#;
        let want = Some(Described { name: "add-header".into(), version: "1.2.3".into() });
        let mut module = Module::new();
        module.section(&CustomSection { name: "other".into(), data: b"{}".as_slice().into() });
        module.section(&section(info));
        let mut component = Component::new();
        component.section(&ModuleSection(&module));
        let bytes = component.finish();
        assert_eq!(described(&bytes), want, "in its core module");

        let mut inner = Component::new();
        inner.section(&ModuleSection(&module));
        let mut outer = Component::new();
        outer.section(&NestedComponentSection(&inner));
        assert_eq!(described(&outer.finish()), want, "in a nested component");

        let mut own = Component::new();
        own.section(&section(info));
        assert_eq!(described(&own.finish()), want, "in its own sections");

        assert_eq!(described(&Component::new().finish()), None);
        for garbled in ["not json", r#"{"name":"a\u001b[2J","version":"1"}"#, r#"{"name":"a","version":""}"#] {
            let mut component = Component::new();
            component.section(&section(garbled));
            assert_eq!(described(&component.finish()), None, "{garbled}");
        }
        for end in 0..bytes.len() {
            // Cut anywhere: none, or what it is, never a panic.
            let _ = described(&bytes[..end]);
        }
        assert_eq!(described(b"\0asm\x0d\0\x01\0\x00\xff\xff\xff\xff\xff"), None, "a size past five bytes");
    }
}
