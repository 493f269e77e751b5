//! Plugins from OCI registries, in the CNCF Wasm artifact layout: a
//! manifest whose config is `application/vnd.wasm.config.v0+json` and whose
//! one layer is the component (`application/wasm`).
//!
//! A plugin is pinned — by the manifest's digest in its reference, or by the
//! component's sha256 — or signed by a trusted key (cosign's tag-based
//! signatures, the `signature` module), and pulled at load into the plugin cache,
//! where blobs are kept by digest: a restart or a reload goes to the
//! registry only for a digest it has not got (and, for a tag a trusted key
//! signs, to ask where the tag points, falling back on the manifest it named
//! for the last config that served), so a registry outage stops no gateway
//! that already ran its plugins. Every byte is checked against the digest
//! that named it before it is kept.

mod client;
mod proxy;
mod reference;
mod signature;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use self::client::Client;
pub use self::reference::Reference;
pub(crate) use self::reference::parse_hex;
pub use self::signature::TrustedKey;
use crate::config::RegistryConfig;

/// An OCI image manifest.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The CNCF Wasm artifact's config.
pub const CONFIG_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The config of cosign's signature manifests.
const IMAGE_CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The component layer.
pub const WASM_LAYER_TYPE: &str = "application/wasm";
/// The layer type of wasm-to-oci, read as well.
const OLD_WASM_LAYER_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// The distribution spec's manifest limit.
const MAX_MANIFEST: usize = 4 << 20;
/// The largest signature payload read (cosign's are a few hundred bytes).
const MAX_PAYLOAD: usize = 64 << 10;
/// The most signatures of one manifest looked at: a registry cannot make a
/// load fetch thousands of payloads.
const MAX_SIGNATURES: usize = 32;
/// What a signature manifest is asked for as (some are written as Docker's).
const SIGNATURES_ACCEPT: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Why a pull or a push failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The registry could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The registry refused the credentials, or asked for some.
    #[error("{0}")]
    Denied(String),
    /// No such repository, tag or digest.
    #[error("{0}")]
    NotFound(String),
    /// What the registry has is not a plugin, or not the one pinned.
    #[error("{0}")]
    Content(String),
    /// The registry answered outside the protocol.
    #[error("{0}")]
    Protocol(String),
    /// Local: the cache, a CA file.
    #[error("{0}")]
    Setup(String),
    /// No signature by a trusted key.
    #[error("{0}")]
    Unsigned(String),
    /// The egress proxy refused (its rules, or credentials it wants), or
    /// the environment names one that cannot be used.
    #[error("{0}")]
    Proxy(String),
}

impl Failure {
    /// What the operator can do about it.
    pub fn fix(&self, registry: &str) -> String {
        match self {
            Self::Unreachable(_) => format!("check that {registry} is up and reachable from here"),
            Self::Protocol(_) => format!(
                "check that {registry} is an OCI registry (and, for one without TLS, \
                 [plugins.registries.\"{registry}\"] tls = false)"
            ),
            Self::Denied(_) => format!(
                "set username and password in [plugins.registries.\"{registry}\"] for an account that may pull \
                 (behind a proxy: check that it lets {registry} through)"
            ),
            Self::NotFound(_) => "check the repository, tag and digest (`wasmgate push` prints them)".to_owned(),
            Self::Content(_) => "publish the component with `wasmgate push`, and pin the digest it prints".to_owned(),
            Self::Setup(_) => "check the plugin cache directory and the registry's `ca`".to_owned(),
            Self::Unsigned(_) => "sign the manifest with a trusted key (`wasmgate push --sign-key`, or \
                 `cosign sign --key`), or trust the key that signed it (`signed_by`)"
                .to_owned(),
            Self::Proxy(_) => format!(
                "check the proxy: HTTPS_PROXY or HTTP_PROXY (an http:// URL, its credentials in it if it asks for \
                 some) and NO_PROXY, or [plugins.registries.\"{registry}\"] proxy; it must let {registry} through"
            ),
        }
    }
}

/// What a push published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The manifest's digest: pin `registry/repository@sha256:<manifest>`.
    pub manifest: [u8; 32],
    /// The component's sha256 (the layer's digest).
    pub component: [u8; 32],
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<std::collections::BTreeMap<String, String>>,
}

impl Descriptor {
    fn of(media_type: &str, bytes: &[u8]) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest: format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
            size: bytes.len() as u64,
            annotations: None,
        }
    }
}

impl Manifest {
    /// The component's layer: the one Wasm layer, of at most `limit` bytes.
    fn component(&self, limit: u64) -> Result<([u8; 32], u64), Failure> {
        if let Some(other) = self.media_type.as_deref().filter(|t| *t != MANIFEST_TYPE) {
            return Err(Failure::Content(format!("it is a `{other}`, not an OCI image manifest")));
        }
        let wasm: Vec<&Descriptor> = self
            .layers
            .iter()
            .filter(|l| matches!(l.media_type.as_str(), WASM_LAYER_TYPE | OLD_WASM_LAYER_TYPE))
            .collect();
        let [layer] = wasm.as_slice() else {
            return Err(Failure::Content(format!(
                "it has {} `{WASM_LAYER_TYPE}` layers; a plugin is one component",
                wasm.len()
            )));
        };
        let digest = layer
            .digest
            .strip_prefix("sha256:")
            .and_then(reference::parse_hex)
            .ok_or_else(|| Failure::Content(format!("the layer's digest `{}` is not a sha256", layer.digest)))?;
        if layer.size > limit {
            return Err(Failure::Content(format!(
                "the component is {} bytes, over the {limit} a plugin may be",
                layer.size
            )));
        }
        Ok((digest, layer.size))
    }
}

/// The cache's blob directory.
fn blobs(cache_dir: &Path) -> PathBuf {
    cache_dir.join("oci").join("sha256")
}

/// The cached blob with this digest, if it is there and whole; marked in
/// use (a gateway sharing the cache prunes by age).
fn cached(cache_dir: &Path, digest: &[u8; 32], limit: u64) -> Option<(PathBuf, Vec<u8>)> {
    let path = blobs(cache_dir).join(hex::encode(digest));
    let bytes = crate::files::read_regular(&path, limit).ok()?;
    if <[u8; 32]>::from(Sha256::digest(&bytes)) != *digest {
        return None;
    }
    crate::plugin::engine::mark_in_use(&path, SystemTime::now());
    Some((path, bytes))
}

/// Keeps a blob whose digest was checked. One already there of its size is
/// it (named by its digest; [`cached`] checks it in full when reading it):
/// marked in use, not written and synced again at every load (a tag's
/// manifest is fetched at each).
fn keep(cache_dir: &Path, digest: &[u8; 32], bytes: &[u8]) -> Result<PathBuf, Failure> {
    let path = blobs(cache_dir).join(hex::encode(digest));
    match std::fs::symlink_metadata(&path) {
        Ok(kept) if kept.is_file() && kept.len() == bytes.len() as u64 => {
            crate::plugin::engine::mark_in_use(&path, SystemTime::now());
        }
        _ => write_atomically(&path, bytes)?,
    }
    Ok(path)
}

/// [`files::write_atomically`](crate::files::write_atomically), in the
/// plugin cache (gateways sharing it write under names of their own).
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    crate::files::write_atomically(path, bytes, 0o644)
        .map_err(|e| Failure::Setup(format!("cannot write {} in the plugin cache: {e}", path.display())))
}

/// Removes from the cache's blobs (and temporary files) those unused for
/// [`CACHE_KEEP`](crate::plugin::engine::CACHE_KEEP), as the compile cache
/// does, but those of `in_use` (which the load that used them marked, in
/// `cached` or as it wrote them). A rollback, or another gateway sharing
/// the cache, within that time finds what it pulled.
pub fn prune(cache_dir: &Path, in_use: &HashSet<[u8; 32]>) {
    let dir = blobs(cache_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let now = SystemTime::now();
    let mut removed = 0_usize;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // `<digest>`, or a temporary `.<digest>.<unique>`; nothing else is ours.
        let digest = reference::parse_hex(name);
        let temporary = name.strip_prefix('.').and_then(|n| n.get(..64)).and_then(reference::parse_hex).is_some();
        // Not followed: a link is a file of its own.
        let Ok(meta) = entry.metadata() else { continue };
        if (digest.is_none() && !temporary) || !meta.is_file() {
            continue;
        }
        if digest.is_some_and(|d| in_use.contains(&d)) {
            continue;
        }
        let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok());
        if age.is_some_and(|a| a >= crate::plugin::engine::CACHE_KEEP) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => tracing::debug!(path = %entry.path().display(), "could not prune the plugin cache: {e}"),
            }
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "removed pulled plugin blobs unused here for a week");
    }
}

/// What a pull found.
#[derive(Debug)]
pub struct Pulled {
    /// The component, in the cache.
    pub path: PathBuf,
    /// The manifest's sha256 (`None` when the pinned component was in the
    /// cache and the registry was not asked).
    pub manifest: Option<[u8; 32]>,
    /// The trusted key that signed the manifest, when signatures were asked for.
    pub signer: Option<PathBuf>,
    /// Why the registry was not asked where the tag points: the manifest it
    /// pointed to when last pulled was used.
    pub stale: Option<String>,
    /// What it keeps in the cache.
    pub kept: Kept,
}

/// What a pulled plugin keeps in the cache: the blobs it used (manifest,
/// component, signatures), for [`prune`] to keep; and what its tag named,
/// to [`remember`](Kept::remember) once it serves.
#[derive(Debug, Default)]
pub struct Kept {
    pub blobs: Vec<[u8; 32]>,
    tag: Option<TagRecord>,
}

/// What a tag named, and where that is recorded.
#[derive(Debug)]
struct TagRecord {
    record: PathBuf,
    digest: [u8; 32],
}

impl Kept {
    /// Records the manifest a tag named as the one to fall back on while
    /// the registry is down: called once the config that runs it serves (a
    /// version whose config hook refused, in a config refused, is not it).
    /// A record not written is only a fallback lost.
    pub fn remember(&self) {
        if let Some(tag) = &self.tag
            && read_record(&tag.record) != Some(tag.digest)
            && let Err(e) = write_atomically(&tag.record, hex::encode(tag.digest).as_bytes())
        {
            tracing::warn!("{e}");
        }
    }
}

/// Where the component `reference` names is, in the cache, pulled first if
/// it is not there. `pin` is the component's sha256 when the config gives
/// one; with `keys`, the manifest must carry a cosign signature by one of
/// them. At most `limit` bytes.
pub async fn pull(
    reference: &Reference,
    pin: Option<[u8; 32]>,
    keys: &[TrustedKey],
    registry: &RegistryConfig,
    cache_dir: &Path,
    limit: u64,
) -> Result<Pulled, Failure> {
    if keys.is_empty()
        && let Some(pin) = pin
        && let Some((path, _)) = cached(cache_dir, &pin, limit)
    {
        let kept = Kept { blobs: vec![pin], tag: None };
        return Ok(Pulled { path, manifest: None, signer: None, stale: None, kept });
    }
    let mut trusted: Vec<String> = keys.iter().map(|k| hex::encode(&k.point)).collect();
    trusted.sort();
    let policy = format!("{} {}", pin.map(hex::encode).unwrap_or_default(), trusted.join(","));
    let mut session = Session { remote: Remote::new(reference, registry, false), cache_dir, policy, used: Vec::new() };
    let resolved = session.manifest().await?;
    let digest = resolved.digest;
    session.used.push(digest);
    let manifest: Manifest = serde_json::from_slice(&resolved.bytes)
        .map_err(|e| Failure::Content(format!("{reference} is not an OCI image manifest: {e}")))?;
    let (layer, size) = manifest.component(limit).map_err(|e| Failure::Content(format!("{reference}: {e}")))?;
    if let Some(pin) = pin
        && pin != layer
    {
        return Err(Failure::Content(format!(
            "{reference} is the component sha256:{}, not the sha256:{} pinned",
            hex::encode(layer),
            hex::encode(pin)
        )));
    }
    let signer = if keys.is_empty() { None } else { Some(session.signer(&digest, keys).await?.path.clone()) };
    session.used.push(layer);
    let path = match cached(cache_dir, &layer, limit) {
        Some((path, _)) => path,
        None => {
            let component = session.blob(&layer, usize::try_from(size).unwrap_or(usize::MAX), "component").await?;
            if component.len() as u64 != size {
                return Err(Failure::Content(format!(
                    "the component sha256:{} is not the size its manifest says",
                    hex::encode(layer)
                )));
            }
            blobs(cache_dir).join(hex::encode(layer))
        }
    };
    let tag = resolved.record.map(|record| TagRecord { record, digest });
    let kept = Kept { blobs: session.used, tag };
    Ok(Pulled { path, manifest: Some(digest), signer, stale: resolved.stale, kept })
}

/// The registry side of a pull, a push or a signing: one client (made when
/// first needed, keeping its token) and the scope it asks for.
struct Remote<'a> {
    reference: &'a Reference,
    registry: &'a RegistryConfig,
    scope: String,
    client: Option<Client>,
}

impl<'a> Remote<'a> {
    fn new(reference: &'a Reference, registry: &'a RegistryConfig, push: bool) -> Self {
        let actions = if push { "pull,push" } else { "pull" };
        Self { reference, registry, scope: format!("repository:{}:{actions}", reference.repository), client: None }
    }

    fn client(&mut self) -> Result<&mut Client, Failure> {
        match &mut self.client {
            Some(client) => Ok(client),
            slot @ None => Ok(slot.insert(Client::new(&self.reference.registry, self.registry)?)),
        }
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(http::HeaderName, &str)],
        body: Bytes,
        limit: usize,
    ) -> Result<http::Response<Bytes>, Failure> {
        let scope = self.scope.clone();
        self.client()?.send(method, path, headers, body, &scope, limit).await
    }

    /// GETs `/v2/<repository>/<path>`, up to `limit` bytes, as `what`.
    async fn get(&mut self, path: &str, accept: &str, limit: usize, what: &str) -> Result<Bytes, Failure> {
        let path = format!("/v2/{}/{path}", self.reference.repository);
        let answer = self.send(Method::GET, &path, &[(ACCEPT, accept)], Bytes::new(), limit).await?;
        check_status(answer.status(), self.reference, what)?;
        Ok(answer.into_body())
    }

    /// Uploads a blob unless the registry has it (a monolithic upload: a
    /// POST for a session, a PUT of the bytes): its descriptor.
    async fn upload(&mut self, media_type: &str, bytes: Bytes) -> Result<Descriptor, Failure> {
        let descriptor = Descriptor::of(media_type, &bytes);
        let repository = &self.reference.repository;
        let blob = format!("/v2/{repository}/blobs/{}", descriptor.digest);
        if self.send(Method::HEAD, &blob, &[], Bytes::new(), 0).await?.status().is_success() {
            return Ok(descriptor);
        }
        let uploads = format!("/v2/{repository}/blobs/uploads/");
        let answer = self.send(Method::POST, &uploads, &[], Bytes::new(), 0).await?;
        check_status(answer.status(), self.reference, "upload")?;
        let location = answer
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Failure::Protocol("the registry began an upload without a Location".to_owned()))?;
        // A path on the registry, or a URL (`send` takes either).
        let mut url = location.to_owned();
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("digest=");
        url.push_str(&descriptor.digest.replace(':', "%3A"));
        let octets = [(CONTENT_TYPE, "application/octet-stream")];
        let answer = self.send(Method::PUT, &url, &octets, bytes, 0).await?;
        check_status(answer.status(), self.reference, "upload")?;
        Ok(descriptor)
    }

    /// PUTs an OCI image manifest of `config` and `layers` at `tag`: its digest.
    async fn put_manifest(
        &mut self,
        tag: &str,
        config: Descriptor,
        layers: Vec<Descriptor>,
        annotations: Option<std::collections::BTreeMap<String, String>>,
    ) -> Result<[u8; 32], Failure> {
        let media_type = Some(MANIFEST_TYPE.to_owned());
        let manifest = Manifest { schema_version: 2, media_type, config, layers, annotations };
        let manifest = Bytes::from(serde_json::to_vec(&manifest).map_err(|e| Failure::Setup(e.to_string()))?);
        let path = format!("/v2/{}/manifests/{tag}", self.reference.repository);
        let answer = self.send(Method::PUT, &path, &[(CONTENT_TYPE, MANIFEST_TYPE)], manifest.clone(), 0).await?;
        check_status(answer.status(), self.reference, "manifest")?;
        Ok(Sha256::digest(&manifest).into())
    }
}

/// The manifest a reference names.
struct Resolved {
    digest: [u8; 32],
    bytes: Bytes,
    /// Why the manifest the tag last named was taken.
    stale: Option<String>,
    /// The tag's record, to name this manifest once it passed.
    record: Option<PathBuf>,
}

/// One pull: the cache first, then the registry.
struct Session<'a> {
    remote: Remote<'a>,
    cache_dir: &'a Path,
    /// What the plugin must be (its pin and trusted keys), as text.
    policy: String,
    /// The blobs of the cache this pull used.
    used: Vec<[u8; 32]>,
}

impl Session<'_> {
    /// The blob `digest` (checked), from the cache or the registry (then kept).
    async fn blob(&mut self, digest: &[u8; 32], limit: usize, what: &str) -> Result<Bytes, Failure> {
        self.used.push(*digest);
        if let Some((_, bytes)) = cached(self.cache_dir, digest, limit as u64) {
            return Ok(bytes.into());
        }
        let bytes = self.remote.get(&format!("blobs/sha256:{}", hex::encode(digest)), "*/*", limit, what).await?;
        if <[u8; 32]>::from(Sha256::digest(&bytes)) != *digest {
            return Err(Failure::Content(format!(
                "the registry served a {what} for sha256:{} that is not it",
                hex::encode(digest)
            )));
        }
        keep(self.cache_dir, digest, &bytes)?;
        Ok(bytes)
    }

    /// The manifest the reference names. A digest names it for good (the
    /// cache answers); a tag is asked of the registry each time, and while
    /// the registry cannot be reached, the manifest the tag named at the
    /// last pull that passed is taken.
    async fn manifest(&mut self) -> Result<Resolved, Failure> {
        let reference = self.remote.reference;
        if let Some(digest) = reference.digest {
            if let Some((_, bytes)) = cached(self.cache_dir, &digest, MAX_MANIFEST as u64) {
                return Ok(Resolved { digest, bytes: bytes.into(), stale: None, record: None });
            }
            let path = format!("manifests/sha256:{}", hex::encode(digest));
            let bytes = self.remote.get(&path, MANIFEST_TYPE, MAX_MANIFEST, "manifest").await?;
            let served: [u8; 32] = Sha256::digest(&bytes).into();
            if served != digest {
                return Err(Failure::Content(format!(
                    "the registry's manifest has digest sha256:{}, not the sha256:{} pinned",
                    hex::encode(served),
                    hex::encode(digest)
                )));
            }
            keep(self.cache_dir, &digest, &bytes)?;
            return Ok(Resolved { digest, bytes, stale: None, record: None });
        }
        // Per policy too: a manifest one plugin's pin or keys accepted may be
        // another's to refuse.
        let record = records(self.cache_dir, "tags", &format!("{reference} {}", self.policy));
        let path = format!("manifests/{}", reference.manifest_ref());
        match self.remote.get(&path, MANIFEST_TYPE, MAX_MANIFEST, "manifest").await {
            Ok(bytes) => {
                let digest: [u8; 32] = Sha256::digest(&bytes).into();
                keep(self.cache_dir, &digest, &bytes)?;
                Ok(Resolved { digest, bytes, stale: None, record: Some(record) })
            }
            Err(e @ Failure::Unreachable(_)) => {
                let last =
                    read_record(&record).and_then(|d| Some((d, cached(self.cache_dir, &d, MAX_MANIFEST as u64)?)));
                match last {
                    Some((digest, (_, bytes))) => {
                        let stale =
                            format!("{e}; using sha256:{}, which it named when last pulled", hex::encode(digest));
                        Ok(Resolved { digest, bytes: bytes.into(), stale: Some(stale), record: None })
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The trusted key that signed manifest `digest`: the signatures last
    /// verified for it if one of them is by a key of `keys`, else those the
    /// registry has now.
    async fn signer<'k>(&mut self, digest: &[u8; 32], keys: &'k [TrustedKey]) -> Result<&'k TrustedKey, Failure> {
        let reference = self.remote.reference;
        let record = records(self.cache_dir, "signatures", &hex::encode(digest));
        if let Some(kept) = read_record(&record)
            && let Some((_, bytes)) = cached(self.cache_dir, &kept, MAX_MANIFEST as u64)
            && let Ok((Some(key), _)) = self.signed_by(&bytes, digest, keys).await
        {
            self.used.push(kept);
            return Ok(key);
        }
        let tag = signature::tag_of(digest);
        let bytes =
            match self.remote.get(&format!("manifests/{tag}"), SIGNATURES_ACCEPT, MAX_MANIFEST, "signature").await {
                Ok(bytes) => bytes,
                Err(Failure::NotFound(_)) => {
                    return Err(Failure::Unsigned(format!(
                        "{reference} (sha256:{}) has no signatures (no {tag})",
                        hex::encode(digest)
                    )));
                }
                Err(e) => return Err(e),
            };
        match self.signed_by(&bytes, digest, keys).await? {
            (Some(key), _) => {
                let kept: [u8; 32] = Sha256::digest(&bytes).into();
                keep(self.cache_dir, &kept, &bytes)?;
                write_atomically(&record, hex::encode(kept).as_bytes())?;
                self.used.push(kept);
                Ok(key)
            }
            (None, unread) => {
                let trusted: Vec<String> = keys.iter().map(|k| k.path.display().to_string()).collect();
                let unread = match unread {
                    None => String::new(),
                    Some(e) => format!("; a signature could not be read: {e}"),
                };
                Err(Failure::Unsigned(format!(
                    "{reference} (sha256:{}) has no signature by a trusted key ({}){unread}",
                    hex::encode(digest),
                    trusted.join(", ")
                )))
            }
        }
    }

    /// The key of `keys` that made one of the signatures (the first
    /// [`MAX_SIGNATURES`]) in signature manifest `bytes` of manifest
    /// `digest`, if any; and why a signature could not be read, if one
    /// could not (the others are still tried).
    async fn signed_by<'k>(
        &mut self,
        bytes: &[u8],
        digest: &[u8; 32],
        keys: &'k [TrustedKey],
    ) -> Result<(Option<&'k TrustedKey>, Option<Failure>), Failure> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            Failure::Content(format!("the signatures of {} are not a manifest: {e}", self.remote.reference))
        })?;
        let layers = manifest.layers.iter().map(|l| (l.media_type.as_str(), l.digest.as_str(), l.annotations.as_ref()));
        let mut unread = None;
        for signed in signature::signatures(layers).into_iter().take(MAX_SIGNATURES) {
            match self.blob(&signed.payload, MAX_PAYLOAD, "signature payload").await {
                Ok(payload) => {
                    if let Some(key) = signature::check(&payload, &signed.signature, digest, keys) {
                        return Ok((Some(key), None));
                    }
                }
                // A payload that is not there or not what its digest says
                // is passed over; a registry gone down is said as such.
                Err(e @ (Failure::NotFound(_) | Failure::Content(_))) => unread = Some(e),
                Err(e) => return Err(e),
            }
        }
        Ok((None, unread))
    }
}

/// `<cache_dir>/oci/<kind>/<sha256 of name>`: a small file naming a digest.
fn records(cache_dir: &Path, kind: &str, name: &str) -> PathBuf {
    cache_dir.join("oci").join(kind).join(hex::encode(Sha256::digest(name.as_bytes())))
}

fn read_record(path: &Path) -> Option<[u8; 32]> {
    let text = crate::files::read_regular_text(path, 128).ok()?;
    reference::parse_hex(text.trim())
}

/// Publishes `component` at `reference` (a tag) in the CNCF Wasm layout.
pub async fn push(component: &[u8], reference: &Reference, registry: &RegistryConfig) -> Result<Pushed, Failure> {
    let Some(tag) = reference.tag.as_deref().filter(|_| reference.digest.is_none()) else {
        return Err(Failure::Setup(format!("push to a tag, not a digest: {reference}")));
    };
    let mut remote = Remote::new(reference, registry, true);
    let layer = remote.upload(WASM_LAYER_TYPE, Bytes::copy_from_slice(component)).await?;
    let config = serde_json::json!({ "architecture": "wasm", "os": "wasip2", "layerDigests": [layer.digest] });
    let config = remote.upload(CONFIG_TYPE, config.to_string().into()).await?;
    // The standard annotations, from what the SDK wrote into the component.
    let annotations = crate::plugin::registry::described(component).map(|d| {
        [
            ("org.opencontainers.image.title".to_owned(), d.name),
            ("org.opencontainers.image.version".to_owned(), d.version),
        ]
        .into()
    });
    let manifest = remote.put_manifest(tag, config, vec![layer], annotations).await?;
    Ok(Pushed { manifest, component: Sha256::digest(component).into() })
}

/// Whether `key` (PKCS#8 PEM) is a key [`sign`] can sign with: checked
/// before a push, so a bad key does not leave the push unsigned.
pub fn check_signing_key(key: &[u8]) -> Result<(), Failure> {
    signature::signing_key(key).map(drop).map_err(Failure::Setup)
}

/// Signs manifest `manifest` of `reference`'s repository with `key` (an
/// ECDSA P-256 private key, PKCS#8 PEM), as cosign does: a payload naming
/// the manifest, and its signature, added to the signature manifest at
/// `sha256-<manifest>.sig` (other keys' signatures kept; this key's
/// earlier one replaced).
pub async fn sign(
    reference: &Reference,
    manifest: &[u8; 32],
    key: &[u8],
    registry: &RegistryConfig,
) -> Result<(), Failure> {
    let repository = format!("{}/{}", reference.registry, reference.repository);
    let (payload, signed, signer) = signature::sign(&repository, manifest, key).map_err(Failure::Setup)?;
    let mut remote = Remote::new(reference, registry, true);
    let tag = signature::tag_of(manifest);
    let mut layers = match remote.get(&format!("manifests/{tag}"), SIGNATURES_ACCEPT, MAX_MANIFEST, "signature").await {
        Ok(bytes) => {
            serde_json::from_slice::<Manifest>(&bytes)
                .map_err(|e| Failure::Content(format!("the signatures at {tag} are not a manifest: {e}")))?
                .layers
        }
        Err(Failure::NotFound(_)) => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut layer = remote.upload(signature::PAYLOAD_TYPE, payload.clone().into()).await?;
    // Every key signs the same payload (a layer per signature, all of one
    // digest); an ECDSA signature differs each time, so this key's earlier
    // one is found by verifying, not by comparing.
    layers.retain(|l| {
        let found =
            signature::signatures(std::iter::once((l.media_type.as_str(), l.digest.as_str(), l.annotations.as_ref())));
        !(l.digest == layer.digest
            && found
                .iter()
                .any(|s| signature::check(&payload, &s.signature, manifest, std::slice::from_ref(&signer)).is_some()))
    });
    let encoded = base64::engine::general_purpose::STANDARD.encode(signed);
    layer.annotations = Some([(signature::SIGNATURE_ANNOTATION.to_owned(), encoded)].into());
    layers.push(layer);
    let config = remote.upload(IMAGE_CONFIG_TYPE, Bytes::from_static(b"{}")).await?;
    remote.put_manifest(&tag, config, layers, None).await?;
    Ok(())
}

/// Whether a registry (or its token service) answering `status` is down
/// for the while, failing or holding back: a tag falls back.
pub(crate) fn down(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// A status other than success, as a failure naming what was asked for.
fn check_status(status: StatusCode, reference: &Reference, what: &str) -> Result<(), Failure> {
    match status {
        s if s.is_success() => Ok(()),
        StatusCode::NOT_FOUND => Err(Failure::NotFound(format!("{reference}: the registry has no such {what} (404)"))),
        s if down(s) => Err(Failure::Unreachable(format!("{reference}: the registry answered {s} for the {what}"))),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Err(Failure::Denied(format!("{reference}: the registry refused the {what} ({status})")))
        }
        s => Err(Failure::Protocol(format!("{reference}: the registry answered {s} for the {what}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(layers: &[(&str, [u8; 32], u64)]) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(MANIFEST_TYPE.to_owned()),
            config: Descriptor {
                annotations: None,
                media_type: CONFIG_TYPE.to_owned(),
                digest: format!("sha256:{}", "0".repeat(64)),
                size: 2,
            },
            layers: layers
                .iter()
                .map(|(t, d, size)| Descriptor {
                    annotations: None,
                    media_type: (*t).to_owned(),
                    digest: format!("sha256:{}", hex::encode(d)),
                    size: *size,
                })
                .collect(),
            annotations: None,
        }
    }

    #[test]
    fn a_manifest_names_one_component_within_the_limit() {
        assert_eq!(manifest(&[(WASM_LAYER_TYPE, [1; 32], 10)]).component(10), Ok(([1; 32], 10)));
        assert_eq!(
            manifest(&[("text/plain", [2; 32], 1), (OLD_WASM_LAYER_TYPE, [1; 32], 10)]).component(10),
            Ok(([1; 32], 10))
        );
        let refused = |m: Manifest, because: &str| {
            let e = m.component(10).unwrap_err().to_string();
            assert!(e.contains(because), "{e}");
        };
        refused(manifest(&[(WASM_LAYER_TYPE, [1; 32], 11)]), "over the 10");
        refused(manifest(&[]), "0 `application/wasm` layers");
        refused(
            manifest(&[(WASM_LAYER_TYPE, [1; 32], 1), (WASM_LAYER_TYPE, [2; 32], 1)]),
            "2 `application/wasm` layers",
        );
        let mut index = manifest(&[(WASM_LAYER_TYPE, [1; 32], 1)]);
        index.media_type = Some("application/vnd.oci.image.index.v1+json".to_owned());
        refused(index, "not an OCI image manifest");
    }

    /// A blob read from the cache is marked in use; blobs in use stay,
    /// others (and temporary files) go once a week unused; files the cache
    /// did not name are left alone.
    /// A blob already kept is marked in use, not written again; one of
    /// another size (cut short) is written anew.
    #[test]
    fn a_blob_kept_already_is_marked_not_rewritten() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"{\"schemaVersion\":2}";
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let path = keep(dir.path(), &digest, bytes).unwrap();
        let week_ago = SystemTime::now() - std::time::Duration::from_secs(8 * 24 * 3600);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(week_ago).unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        keep(dir.path(), &digest, bytes).unwrap();
        let again = std::fs::metadata(&path).unwrap();
        assert_eq!(again.ino(), inode, "not written again");
        assert!(again.modified().unwrap() > week_ago + std::time::Duration::from_secs(24 * 3600), "marked in use");
        std::fs::write(&path, &bytes[..4]).unwrap();
        keep(dir.path(), &digest, bytes).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "a short one written anew");
    }

    #[test]
    fn the_cache_is_pruned_of_blobs_unused_for_a_week() {
        let dir = tempfile::tempdir().unwrap();
        let week_ago = SystemTime::now() - crate::plugin::engine::CACHE_KEEP - std::time::Duration::from_secs(60);
        let age =
            |path: &Path| std::fs::File::options().write(true).open(path).unwrap().set_modified(week_ago).unwrap();
        let mut paths = Vec::new();
        for content in [b"in use".as_slice(), b"old", b"recent"] {
            let digest: [u8; 32] = Sha256::digest(content).into();
            paths.push((digest, keep(dir.path(), &digest, content).unwrap()));
        }
        let temporary = blobs(dir.path()).join(format!(".{}.1-2-3", hex::encode(paths[1].0)));
        let foreign = blobs(dir.path()).join("README");
        for path in [&temporary, &foreign] {
            std::fs::write(path, b"x").unwrap();
            age(path);
        }
        age(&paths[0].1);
        age(&paths[1].1);
        // The load that uses a blob reads it.
        assert!(cached(dir.path(), &paths[0].0, 100).is_some());
        let marked = std::fs::metadata(&paths[0].1).unwrap().modified().unwrap();
        assert!(marked > week_ago, "marked in use now");
        age(&paths[0].1);
        prune(dir.path(), &HashSet::from([paths[0].0]));
        assert!(paths[0].1.exists(), "in use");
        assert!(!paths[1].1.exists(), "unused for a week");
        assert!(paths[2].1.exists(), "unused, but recent");
        assert!(!temporary.exists(), "an old temporary file");
        assert!(foreign.exists(), "not the cache's");
    }

    #[test]
    fn the_cache_gives_back_only_whole_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"component";
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        assert!(cached(dir.path(), &digest, 100).is_none());
        let path = keep(dir.path(), &digest, bytes).unwrap();
        assert_eq!(cached(dir.path(), &digest, 100), Some((path.clone(), bytes.to_vec())));
        assert!(cached(dir.path(), &digest, 5).is_none(), "over the limit");
        std::fs::write(&path, b"componen").unwrap();
        assert!(cached(dir.path(), &digest, 100).is_none(), "a blob that is not its digest is not it");
    }
}
