//! Reading the files a config names: the config itself, plugins, secrets,
//! plugins' config files, TLS certificates, keys and lists.

use std::io::Read;
use std::path::Path;

/// The most a config, a secret, a plugin's config file or a TLS file may
/// hold (a CA's revocation list can run to tens of MiB).
pub const MAX_CONFIG_FILE: u64 = 64 << 20;

/// The bytes of the regular file at `path`, of at most `limit` bytes. A
/// FIFO (which would block the load, and with it every later reload under
/// the reload lock), a device (`/dev/zero` would never end) or a directory
/// is refused; so is a file over the limit. The checks are of the file
/// opened (without waiting, should it be a FIFO), whose bytes are read.
pub fn read_regular(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let (file, meta) = open_regular(path, true)?;
    if meta.len() > limit {
        return Err(std::io::Error::other(format!("larger than {} MiB", limit >> 20)));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // Bounded still: the file may grow as it is read.
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::other(format!("larger than {} MiB", limit >> 20)));
    }
    Ok(bytes)
}

/// The regular file at `path`, opened for reading without waiting (should it
/// be a FIFO) and, unless `follow`, not through a link; with its metadata,
/// read from the file opened — what is checked is what is then read.
pub fn open_regular(path: &Path, follow: bool) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = if follow { libc::O_NONBLOCK } else { libc::O_NONBLOCK | libc::O_NOFOLLOW };
    let file = std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok((file, meta))
}

/// [`read_regular`] as UTF-8 text.
pub fn read_regular_text(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_regular(path, limit)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Writes `bytes` to `path` (and the directories above it), a file of
/// `mode` (less the umask): beside it first, under a name no other writer
/// uses (even the same pid in another container sharing the directory),
/// synced, then renamed, so a reader never finds half of it — nor, after a
/// power loss, an empty file.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::other("not a file's path"));
    };
    std::fs::create_dir_all(dir)?;
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let unique =
        format!("{}-{}-{:016x}", std::process::id(), WRITES.fetch_add(1, Ordering::Relaxed), fastrand::u64(..));
    let temporary = dir.join(format!(".{}.{unique}", name.to_string_lossy()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()))
        .and_then(|()| std::fs::rename(&temporary, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&temporary);
        })?;
    // The rename itself, on disk (best effort: not every file system
    // syncs a directory).
    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(read_regular(&file, 5).unwrap(), b"12345");
        assert!(read_regular(&file, 4).unwrap_err().to_string().contains("larger than"));
        assert!(read_regular(dir.path(), 5).is_err(), "a directory");
        assert!(read_regular(Path::new("/dev/zero"), 5).unwrap_err().to_string().contains("not a regular file"));
        // A FIFO with no writer: refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        assert!(read_regular(&fifo, 5).unwrap_err().to_string().contains("not a regular file"));
        assert_eq!(read_regular_text(&file, 5).unwrap(), "12345");
    }
}
