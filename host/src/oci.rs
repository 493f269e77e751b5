//! Plugins from OCI registries, in the CNCF Wasm artifact layout: a
//! manifest whose config is `application/vnd.wasm.config.v0+json` and whose
//! one layer is the component (`application/wasm`).
//!
//! A plugin is pinned — by the manifest's digest in its reference, or by the
//! component's sha256 — and pulled at load into the plugin cache, where
//! blobs are kept by digest: a restart or a reload goes to the registry only
//! for a digest it has not got, so a registry outage stops no gateway that
//! already ran its plugins. Every byte is checked against the digest that
//! named it before it is kept.

mod client;
mod reference;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use self::client::Client;
pub use self::reference::Reference;
use crate::config::RegistryConfig;

/// An OCI image manifest.
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The CNCF Wasm artifact's config.
pub const CONFIG_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The component layer.
pub const WASM_LAYER_TYPE: &str = "application/wasm";
/// The layer type of wasm-to-oci, read as well.
const OLD_WASM_LAYER_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// The distribution spec's manifest limit.
const MAX_MANIFEST: usize = 4 << 20;

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
}

impl Failure {
    /// What the operator can do about it.
    pub fn fix(&self, registry: &str) -> String {
        match self {
            Self::Unreachable(_) | Self::Protocol(_) => format!(
                "check that {registry} is reachable (and, for a registry without TLS, \
                 [plugins.registries.\"{registry}\"] tls = false)"
            ),
            Self::Denied(_) => {
                format!("set username and password in [plugins.registries.\"{registry}\"] for an account that may pull")
            }
            Self::NotFound(_) => "check the repository, tag and digest (`wasmgate push` prints them)".to_owned(),
            Self::Content(_) => "publish the component with `wasmgate push`, and pin the digest it prints".to_owned(),
            Self::Setup(_) => "check the plugin cache directory and the registry's `ca`".to_owned(),
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
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
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

/// The cached blob with this digest, if it is there and whole.
fn cached(cache_dir: &Path, digest: &[u8; 32], limit: u64) -> Option<(PathBuf, Vec<u8>)> {
    let path = blobs(cache_dir).join(hex::encode(digest));
    let bytes = crate::files::read_regular(&path, limit).ok()?;
    (<[u8; 32]>::from(Sha256::digest(&bytes)) == *digest).then_some((path, bytes))
}

/// Keeps a blob whose digest was checked: written beside, then renamed, so
/// a reader never finds half of one.
fn keep(cache_dir: &Path, digest: &[u8; 32], bytes: &[u8]) -> Result<PathBuf, Failure> {
    let dir = blobs(cache_dir);
    let setup = |e: std::io::Error| Failure::Setup(format!("cannot write to the plugin cache {}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(setup)?;
    let path = dir.join(hex::encode(digest));
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let temporary = dir.join(format!(".{}.{}-{n}", hex::encode(digest), std::process::id()));
    std::fs::write(&temporary, bytes).map_err(setup)?;
    std::fs::rename(&temporary, &path).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        setup(e)
    })?;
    Ok(path)
}

/// Where the component `reference` names is, in the cache, pulled first if
/// it is not there. `pin` is the component's sha256 when the config gives
/// one (a reference by tag must have one). At most `limit` bytes.
pub async fn pull(
    reference: &Reference,
    pin: Option<[u8; 32]>,
    registry: &RegistryConfig,
    cache_dir: &Path,
    limit: u64,
) -> Result<PathBuf, Failure> {
    if let Some(pin) = pin
        && let Some((path, _)) = cached(cache_dir, &pin, limit)
    {
        return Ok(path);
    }
    // A manifest pinned by digest names its layer for good.
    if let Some(digest) = reference.digest
        && let Some((_, bytes)) = cached(cache_dir, &digest, MAX_MANIFEST as u64)
        && let Ok(manifest) = serde_json::from_slice::<Manifest>(&bytes)
        && let Ok((layer, _)) = manifest.component(limit)
        && pin.is_none_or(|pin| pin == layer)
        && let Some((path, _)) = cached(cache_dir, &layer, limit)
    {
        return Ok(path);
    }
    let mut client = Client::new(&reference.registry, registry)?;
    let scope = format!("repository:{}:pull", reference.repository);
    let path = format!("/v2/{}/manifests/{}", reference.repository, reference.manifest_ref());
    let answer =
        client.send(Method::GET, &path, &[(ACCEPT, MANIFEST_TYPE)], Bytes::new(), &scope, MAX_MANIFEST).await?;
    check_status(answer.status(), reference, "manifest")?;
    let bytes = answer.into_body();
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    if let Some(want) = reference.digest
        && want != digest
    {
        return Err(Failure::Content(format!(
            "the registry's manifest has digest sha256:{}, not the sha256:{} pinned",
            hex::encode(digest),
            hex::encode(want)
        )));
    }
    let manifest: Manifest = serde_json::from_slice(&bytes)
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
    if reference.digest.is_some() {
        keep(cache_dir, &digest, &bytes)?;
    }
    if let Some((path, _)) = cached(cache_dir, &layer, limit) {
        return Ok(path);
    }
    let path = format!("/v2/{}/blobs/sha256:{}", reference.repository, hex::encode(layer));
    let limit = usize::try_from(size).unwrap_or(usize::MAX);
    let answer = client.send(Method::GET, &path, &[], Bytes::new(), &scope, limit).await?;
    check_status(answer.status(), reference, "component")?;
    let component = answer.into_body();
    if <[u8; 32]>::from(Sha256::digest(&component)) != layer || component.len() as u64 != size {
        return Err(Failure::Content(format!(
            "the registry served a component for sha256:{} that is not it",
            hex::encode(layer)
        )));
    }
    keep(cache_dir, &layer, &component)
}

/// Publishes `component` at `reference` (a tag) in the CNCF Wasm layout.
pub async fn push(component: &[u8], reference: &Reference, registry: &RegistryConfig) -> Result<Pushed, Failure> {
    let Some(tag) = reference.tag.as_deref().filter(|_| reference.digest.is_none()) else {
        return Err(Failure::Setup(format!("push to a tag, not a digest: {reference}")));
    };
    let layer: [u8; 32] = Sha256::digest(component).into();
    let layer_digest = format!("sha256:{}", hex::encode(layer));
    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest],
    });
    let config = Bytes::from(config.to_string());
    let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
    let mut client = Client::new(&reference.registry, registry)?;
    let scope = format!("repository:{}:pull,push", reference.repository);
    upload(&mut client, reference, &scope, &config_digest, config.clone()).await?;
    upload(&mut client, reference, &scope, &layer_digest, Bytes::copy_from_slice(component)).await?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_TYPE.to_owned()),
        config: Descriptor { media_type: CONFIG_TYPE.to_owned(), digest: config_digest, size: config.len() as u64 },
        layers: vec![Descriptor {
            media_type: WASM_LAYER_TYPE.to_owned(),
            digest: layer_digest,
            size: component.len() as u64,
        }],
    };
    let manifest = Bytes::from(serde_json::to_vec(&manifest).map_err(|e| Failure::Setup(e.to_string()))?);
    let path = format!("/v2/{}/manifests/{tag}", reference.repository);
    let answer = client.send(Method::PUT, &path, &[(CONTENT_TYPE, MANIFEST_TYPE)], manifest.clone(), &scope, 0).await?;
    check_status(answer.status(), reference, "manifest")?;
    Ok(Pushed { manifest: Sha256::digest(&manifest).into(), component: layer })
}

/// Uploads one blob unless the registry has it (a monolithic upload: a
/// POST for a session, a PUT of the bytes).
async fn upload(
    client: &mut Client,
    reference: &Reference,
    scope: &str,
    digest: &str,
    bytes: Bytes,
) -> Result<(), Failure> {
    let blob = format!("/v2/{}/blobs/{digest}", reference.repository);
    if client.send(Method::HEAD, &blob, &[], Bytes::new(), scope, 0).await?.status().is_success() {
        return Ok(());
    }
    let uploads = format!("/v2/{}/blobs/uploads/", reference.repository);
    let answer = client.send(Method::POST, &uploads, &[], Bytes::new(), scope, 0).await?;
    check_status(answer.status(), reference, "upload")?;
    let location = answer
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Failure::Protocol("the registry began an upload without a Location".to_owned()))?;
    // A path on the registry, or a URL (`send` takes either).
    let mut url = location.to_owned();
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str("digest=");
    url.push_str(&digest.replace(':', "%3A"));
    let octets = [(CONTENT_TYPE, "application/octet-stream")];
    let answer = client.send(Method::PUT, &url, &octets, bytes, scope, 0).await?;
    check_status(answer.status(), reference, "upload")
}

/// A status other than success, as a failure naming what was asked for.
fn check_status(status: StatusCode, reference: &Reference, what: &str) -> Result<(), Failure> {
    match status {
        s if s.is_success() => Ok(()),
        StatusCode::NOT_FOUND => Err(Failure::NotFound(format!("{reference}: the registry has no such {what} (404)"))),
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
                media_type: CONFIG_TYPE.to_owned(),
                digest: format!("sha256:{}", "0".repeat(64)),
                size: 2,
            },
            layers: layers
                .iter()
                .map(|(t, d, size)| Descriptor {
                    media_type: (*t).to_owned(),
                    digest: format!("sha256:{}", hex::encode(d)),
                    size: *size,
                })
                .collect(),
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
