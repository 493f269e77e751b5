//! The one wasmtime `Engine` of the process, its epoch clock, and the
//! compiled-component cache (in memory, and on disk keyed by the component's
//! sha256 and the engine's compatibility fingerprint). Nothing here runs on
//! the request path: compiling happens at load and reload only.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use wasmtime::component::{Component, Linker};

use super::clock::{Clock, Resolution, Running};
use super::host_api::{self, HostState};
use wasmtime::{Config as WasmConfig, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Engine-wide limits, fixed for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Instances alive at once, warm or in use, across all plugins.
    pub max_instances: u32,
    /// The largest linear memory any plugin may have.
    pub max_memory: u64,
}

/// How long an artifact in the compile cache that the config in force does
/// not use stays after it was last in use (written, or found in use by a
/// prune): a rollback, or another gateway sharing the directory, still
/// finds it; the cache does not grow with every plugin build (and every
/// engine) ever loaded.
pub const CACHE_KEEP: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The process's plugin engine.
pub struct Runtime {
    engine: Engine,
    limits: EngineLimits,
    fingerprint: String,
    compiled: Mutex<HashMap<[u8; 32], Component>>,
    linker: Linker<HostState>,
    /// The epoch's clock, started with the first component: a gateway
    /// without plugins has no guest to interrupt, and needs no thread.
    clock: Arc<Clock>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("limits", &self.limits).field("fingerprint", &self.fingerprint).finish()
    }
}

impl Runtime {
    /// A runtime to compile and check one component with
    /// (`wasmgate inspect`): one instance of 64 MiB at most.
    pub fn for_inspection() -> wasmtime::Result<Arc<Self>> {
        Self::new(EngineLimits { max_instances: 1, max_memory: 64 << 20 })
    }

    pub fn new(limits: EngineLimits) -> wasmtime::Result<Arc<Self>> {
        let mut pool = PoolingAllocationConfig::default();
        let n = limits.max_instances;
        pool.total_component_instances(n)
            // A Rust component is one main module plus small adapter shims.
            .total_core_instances(n.saturating_mul(4))
            .total_memories(n)
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .max_memory_size(usize::try_from(limits.max_memory).unwrap_or(usize::MAX))
            // Measured here: keeping the first 2 MiB of memory resident and
            // resetting with pagemap scans takes a fresh instance from ~23 µs
            // to ~10 µs and lets it scale across cores.
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10)
            .pagemap_scan(Enabled::Auto);
        let mut config = WasmConfig::new();
        config
            .wasm_component_model(true)
            // Epochs, not fuel: +3–13% guest time here, against +16–36% for fuel.
            .epoch_interruption(true)
            .max_wasm_stack(512 << 10)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // Profiling: `perf` names the plugins' functions (from their name
        // section; build them unstripped) through /tmp/perf-PID.map.
        if std::env::var_os("WASMGATE_PERF_MAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let fingerprint = format!("{:016x}", hasher.finish());

        let mut linker = Linker::new(&engine);
        host_api::add_to_linker(&mut linker)?;
        Ok(Arc::new(Self {
            engine,
            limits,
            fingerprint,
            compiled: Mutex::new(HashMap::new()),
            linker,
            clock: Arc::default(),
        }))
    }

    /// A guest call begins: deadlines are counted until the guard drops.
    /// Every entry into a guest holds one.
    pub fn enter(&self) -> Running<'_> {
        self.clock.enter()
    }

    /// A plugin with this deadline is loaded: the clock ticks often enough
    /// to stop its guests soon after it while the returned resolution is
    /// held ([`Clock::resolve`]).
    pub fn resolve(&self, deadline: std::time::Duration) -> Resolution {
        self.clock.resolve(deadline)
    }

    /// Keeps `gauge` at the clock's tick ([`Clock::report`]).
    pub fn report_tick(&self, gauge: prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>) {
        self.clock.report(gauge);
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The host functions every plugin is linked against.
    pub fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }

    pub fn limits(&self) -> EngineLimits {
        self.limits
    }

    /// The component for these bytes: from memory, the disk cache, or a fresh
    /// compile (which is then cached).
    pub fn component(&self, sha256: &[u8; 32], bytes: &[u8], cache_dir: &Path) -> wasmtime::Result<Component> {
        self.clock.start(self.engine.weak())?;
        if let Some(c) = self.compiled.lock().unwrap_or_else(PoisonError::into_inner).get(sha256) {
            return Ok(c.clone());
        }
        let cached = self.cache_path(cache_dir, sha256);
        let component = match cached.as_deref().and_then(|p| self.load_cached(p)) {
            Some(c) => c,
            None => {
                let c = Component::new(&self.engine, bytes)?;
                if let Some(path) = &cached {
                    store_cached(path, &c);
                }
                c
            }
        };
        self.compiled.lock().unwrap_or_else(PoisonError::into_inner).insert(*sha256, component.clone());
        Ok(component)
    }

    /// Forgets the compiled components but those of `in_use` (after a
    /// reload: each plugin file rebuilt and reloaded left one behind, for
    /// the life of the process).
    pub fn keep_compiled(&self, in_use: &HashSet<[u8; 32]>) {
        self.compiled.lock().unwrap_or_else(PoisonError::into_inner).retain(|sha256, _| in_use.contains(sha256));
    }

    /// Removes from the compile cache `dir` the artifacts (and temporary
    /// files) last in use over [`CACHE_KEEP`] ago; those of `in_use` for
    /// this engine are marked in use now (their modification time), so a
    /// build used for a month is kept a week after it was swapped out.
    /// Only files named as this cache names them are touched; a link or
    /// another file is left alone.
    pub fn prune_cache(&self, dir: &Path, in_use: &HashSet<[u8; 32]>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let now = SystemTime::now();
        let mut removed = 0_usize;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((sha256, artifact)) = name.to_str().and_then(cache_name) else { continue };
            // Not followed: a link is a file of its own.
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            if artifact == Some(self.fingerprint.as_str()) && in_use.contains(&sha256) {
                mark_in_use(&entry.path(), now);
                continue;
            }
            let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok());
            if age.is_some_and(|a| a >= CACHE_KEEP) {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) => tracing::debug!(path = %entry.path().display(), "could not prune the compile cache: {e}"),
                }
            }
        }
        if removed > 0 {
            let days = CACHE_KEEP.as_secs() / 86_400;
            tracing::info!(dir = %dir.display(), removed, "removed compiled plugins unused here and older than {days} days");
        }
    }

    /// `None` when the directory cannot be trusted with precompiled code.
    fn cache_path(&self, dir: &Path, sha256: &[u8; 32]) -> Option<PathBuf> {
        if let Err(why) = ensure_private_dir(dir) {
            tracing::warn!(dir = %dir.display(), "not using the plugin compile cache: {why}");
            return None;
        }
        Some(dir.join(format!("{}-{}.cwasm", hex::encode(sha256), self.fingerprint)))
    }

    #[expect(unsafe_code, reason = "loading precompiled machine code is unsafe by nature; see the SAFETY note")]
    fn load_cached(&self, path: &Path) -> Option<Component> {
        let bytes = match read_private(path) {
            Ok(bytes) => bytes,
            Err(why) => {
                if path.exists() {
                    tracing::warn!(path = %path.display(), "recompiling plugin: not loading the cached artifact: {why}");
                }
                return None;
            }
        };
        // SAFETY: wasmtime requires the bytes to be a precompiled component
        // produced by a compatible engine and not altered since. We wrote
        // the file ourselves (atomically and synced, readable by us alone,
        // under a name that holds the source's sha256 and this engine's
        // fingerprint) into a directory that `ensure_private_dir` checked
        // is owned by us and not writable by anyone else, and
        // `read_private` read them from the file it opened (not following
        // a link) after checking that very file is a regular file of ours
        // that no one else may write — no name looked up twice, so nothing
        // swapped in between; wasmtime also checks the fingerprint and
        // refuses mismatches, which we answer by recompiling.
        match unsafe { Component::deserialize(&self.engine, &bytes) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::info!(path = %path.display(), "recompiling plugin: cached artifact unusable: {e}");
                None
            }
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.clock.stop();
    }
}

/// The sha256 in a compile cache file's name, and the engine fingerprint
/// of an artifact (`None`: a temporary file): `<sha256>-<fp>.cwasm` or
/// `<sha256>-<fp>.tmp<pid>-<n>`, each in lowercase hex, as
/// [`Runtime::cache_path`] and [`store_cached`] name them.
fn cache_name(name: &str) -> Option<([u8; 32], Option<&str>)> {
    let (hash, rest) = name.split_at_checked(64)?;
    let sha256 = <[u8; 32]>::try_from(hex::decode(hash).ok()?).ok()?;
    let (fingerprint, kind) = rest.strip_prefix('-')?.split_at_checked(16)?;
    if !fingerprint.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    if kind == ".cwasm" {
        return Some((sha256, Some(fingerprint)));
    }
    let (pid, n) = kind.strip_prefix(".tmp")?.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(n)).then_some((sha256, None))
}

/// Sets an artifact's modification time to `now` (the file opened, not a
/// link), for [`Runtime::prune_cache`] to keep it.
pub(crate) fn mark_in_use(path: &Path, now: SystemTime) {
    let file = crate::files::open_regular(path, false);
    if let Err(e) = file.and_then(|(f, _)| f.set_modified(now)) {
        tracing::debug!(path = %path.display(), "could not mark a cached file in use: {e}");
    }
}

fn store_cached(path: &Path, component: &Component) {
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let bytes = component.serialize().map_err(std::io::Error::other)?;
        // Its own name: two runtimes of one process (two gateways, tests)
        // may write the same artifact at once.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        // One left by a crash of a process with our id: not reused as is.
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        // On disk before its name is: a crash leaves no named, torn file.
        let written = file.write_all(&bytes).and_then(|()| file.sync_all()).and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            // A full disk left one behind at every reload.
            let _ = std::fs::remove_file(&tmp);
        }
        written
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), "could not write the plugin compile cache: {e}");
    }
}

/// Creates the cache directory (0700) or checks an existing one: it must be
/// ours and not writable by group or others, since what it holds is loaded as
/// machine code.
fn ensure_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create it: {e}"))?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_dir() {
        return Err("it is not a directory".into());
    }
    ours_alone(&meta).map_err(|why| format!("{why}; make it the gateway user's, mode 700"))
}

/// A cached artifact's bytes, if it is a regular file (not a link to one
/// elsewhere), ours, and not writable by group or others: a file left
/// from a laxer directory, or made group-writable by a umask, could be
/// rewritten by someone else and run as our code. The checks are of the
/// file opened, whose bytes are then read.
fn read_private(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let (mut file, meta) = crate::files::open_regular(path, false).map_err(|e| e.to_string())?;
    ours_alone(&meta)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// Whether a file or directory is ours and not writable by group or
/// others: what the compile cache asks of its directory and its artifacts.
fn ours_alone(meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let uid = current_uid();
    if meta.uid() != uid {
        return Err(format!("it is owned by uid {} rather than {uid}", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err("it is writable by group or others".into());
    }
    Ok(())
}

/// The effective uid, from `/proc/self/status` (no unsafe libc call). Not
/// the owner of `/proc/self`: that is root for a process that is not
/// dumpable (one given a capability, `setcap cap_net_bind_service`), and
/// the cache then never passed as ours.
fn current_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status").ok().as_deref().and_then(effective_uid).unwrap_or(u32::MAX)
}

/// The effective uid in a `/proc/PID/status` text: `Uid:` real, effective,
/// saved, filesystem.
fn effective_uid(status: &str) -> Option<u32> {
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_uid_is_the_second_of_the_status_uids() {
        assert_eq!(effective_uid("Name:\twasmgate\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n"), Some(0));
        assert_eq!(effective_uid("Name:\tx\n"), None);
        assert!(current_uid() != u32::MAX, "this process's own");
    }

    #[test]
    fn the_epoch_ticker_starts_with_the_first_component() {
        let runtime = Runtime::new(EngineLimits { max_instances: 2, max_memory: 1 << 20 }).unwrap();
        assert!(!runtime.clock.started(), "no plugin, no clock thread");
        let cache = tempfile::tempdir().unwrap();
        // The smallest component: its preamble and nothing else.
        let empty = b"\0asm\x0d\x00\x01\x00";
        runtime.component(&[0; 32], empty, cache.path()).unwrap();
        assert!(runtime.clock.started());
    }

    #[test]
    fn compiled_components_not_in_use_are_forgotten() {
        let runtime = Runtime::new(EngineLimits { max_instances: 2, max_memory: 1 << 20 }).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let empty = b"\0asm\x0d\x00\x01\x00";
        for sha256 in [[1; 32], [2; 32]] {
            runtime.component(&sha256, empty, cache.path()).unwrap();
        }
        runtime.keep_compiled(&HashSet::from([[2; 32]]));
        let kept = runtime.compiled.lock().unwrap().keys().copied().collect::<Vec<_>>();
        assert_eq!(kept, [[2; 32]]);
    }

    /// The cache keeps what is in use and what is recent; the rest of its
    /// own files go, and nothing else in the directory.
    #[test]
    fn the_compile_cache_forgets_old_artifacts_not_in_use() {
        let runtime = Runtime::new(EngineLimits { max_instances: 2, max_memory: 1 << 20 }).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let fp = &runtime.fingerprint;
        let (used, unused) = (hex::encode([1; 32]), hex::encode([2; 32]));
        let old = SystemTime::now() - CACHE_KEEP - Duration::from_secs(60);
        let files = [
            (format!("{used}-{fp}.cwasm"), old, true),
            (format!("{unused}-{fp}.cwasm"), old, false),
            (format!("{}-{fp}.cwasm", hex::encode([3; 32])), SystemTime::now(), true),
            (format!("{used}-0123456789abcdef.cwasm"), old, false),
            (format!("{used}-{fp}.tmp42-0"), old, false),
            (format!("{used}-{fp}.tmp.txt"), old, true),
            (format!("{}-{fp}.cwasm", "g".repeat(64)), old, true),
            ("notes.cwasm".to_owned(), old, true),
        ];
        for (name, modified, _) in &files {
            let f = std::fs::File::create(cache.path().join(name)).unwrap();
            f.set_modified(*modified).unwrap();
        }
        std::os::unix::fs::symlink("/dev/null", cache.path().join(format!("{unused}-{fp}.tmp1-1"))).unwrap();
        runtime.prune_cache(cache.path(), &HashSet::from([[1; 32]]));
        for (name, _, kept) in &files {
            assert_eq!(cache.path().join(name).exists(), *kept, "{name}");
        }
        // The one in use is marked so: swapped out, it stays a week more.
        let in_use = std::fs::metadata(cache.path().join(&files[0].0)).unwrap().modified().unwrap();
        assert!(in_use > old + CACHE_KEEP, "marked in use now");
        assert!(cache.path().join(format!("{unused}-{fp}.tmp1-1")).symlink_metadata().is_ok(), "a link stays");
    }

    /// A cached artifact is written readable by us alone, and one that
    /// others could have written (group-writable, or a link) is not
    /// loaded: it is compiled again and replaced.
    #[test]
    fn the_compile_cache_loads_only_private_files() {
        use std::os::unix::fs::PermissionsExt;
        let cache = tempfile::tempdir().unwrap();
        let empty = b"\0asm\x0d\x00\x01\x00";
        let compile = || {
            let runtime = Runtime::new(EngineLimits { max_instances: 2, max_memory: 1 << 20 }).unwrap();
            runtime.component(&[7; 32], empty, cache.path()).unwrap();
        };
        let artifact = || {
            let found = std::fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().path());
            found.filter(|p| p.extension().is_some_and(|x| x == "cwasm")).collect::<Vec<_>>()
        };
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
        compile();
        let [path] = artifact().try_into().unwrap();
        assert_eq!(mode(&path), 0o600);
        assert!(read_private(&path).is_ok());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        assert!(read_private(&path).unwrap_err().contains("writable by group"));
        compile();
        assert_eq!(mode(&path), 0o600, "compiled again and replaced");

        let elsewhere = cache.path().join("elsewhere");
        std::fs::rename(&path, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert!(read_private(&path).is_err(), "a link is not followed");
        compile();
        assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_file(), "replaced by a file");

        // A write that fails (here a directory in the artifact's place)
        // leaves no temporary file behind.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        compile();
        let names: Vec<_> = std::fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(!names.iter().any(|n| n.to_string_lossy().contains(".tmp")), "{names:?}");
    }
}
