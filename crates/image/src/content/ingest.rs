//! The on-disk ingest directory of one ref: `ingest/<sha256(ref)>/` holding
//! `ref`, `data`, `startedat`, `updatedat`, `total` (if known), `expected` (if known) and
//! `lock`.
//!
//! # Locking
//! A writer holds an exclusive `flock` on `lock` for its whole life. `flock` locks belong to an
//! open file description, so they exclude other writers of this process and of every other
//! process alike; the kernel drops the lock when the holder dies (a `SIGKILL`ed importer leaves a
//! resumable, unlocked ingest). Because a finished ingest's directory is removed while its lock
//! is held, a locker checks after locking that the `lock` file it holds is still the one at the
//! path, and retries otherwise.
//!
//! # Crash safety
//! The small files are written to a temporary name and renamed into place; `ref` is written
//! last, so a directory without a readable `ref` is an ingest that never started and is
//! recreated. They are not fsynced: after a power loss an ingest may restart from zero, which
//! costs time, never correctness (only a commit makes content durable, and it fsyncs). The `data` file's length is the offset; whatever the kernel kept of it after a
//! crash is hashed on resume, so the digest always describes the bytes really there.
//!
//! # Saved hash state
//! A writer saves its digester state to `state` when it is dropped and every
//! [`CHECKPOINT`] bytes, always **after** fsyncing `data`, so the state never describes bytes
//! that are not durable. A resume restores the state and hashes only the bytes after it (none
//! after a clean drop, the tail written since the last checkpoint after a crash). A missing,
//! damaged or longer-than-data state falls back to hashing the whole file. The ingest directory
//! is trusted like the rest of the root: a prefix changed behind the store's back after a
//! checkpoint is not detected until `verify`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use berth_oci::Digest;

use crate::error::{Error, Result};
use crate::metadata::time_ns;

/// The file names inside an ingest directory.
pub(crate) const REF: &str = "ref";
pub(crate) const DATA: &str = "data";
pub(crate) const STARTED_AT: &str = "startedat";
pub(crate) const UPDATED_AT: &str = "updatedat";
pub(crate) const TOTAL: &str = "total";
pub(crate) const EXPECTED: &str = "expected";
pub(crate) const LOCK: &str = "lock";
/// The saved digester state (`berth_oci::Digester::save_state`) of the first N bytes of `data`.
pub(crate) const STATE: &str = "state";

/// How many bytes a writer appends between two saved hash states.
#[cfg(not(test))]
pub(crate) const CHECKPOINT: u64 = 256 << 20;
/// Small in unit tests, so they cross checkpoints.
#[cfg(test)]
pub(crate) const CHECKPOINT: u64 = (3 << 20) + 5;

/// The directory name of a ref: the hex SHA-256 of the ref (fixed length, no path tricks).
pub(crate) fn dir_name(r#ref: &str) -> String {
    Digest::sha256(r#ref.as_bytes()).hex().to_owned()
}

/// Opens a file for writing without following a symlink at the last component.
pub(crate) fn open_nofollow(path: &Path, create: bool, truncate: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(truncate)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Writes `contents` to `dir/name` atomically (a temporary file renamed into place), without
/// fsync: the small ingest files are advisory, and a reader treats a missing or garbled one as
/// absent (an ingest without a readable `ref` is recreated, a state that fails its checksum is
/// recomputed). Durability is needed, and paid for, only at commit.
pub(crate) fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut f = open_nofollow(&tmp, true, true).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(contents)
        .map_err(|e| Error::io("write", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))
}

/// Fsyncs a directory so renames and unlinks inside it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| Error::io("open", dir, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", dir, e))
}

pub(crate) fn write_time(dir: &Path, name: &str, t: SystemTime) -> Result<()> {
    write_atomic(dir, name, time_ns::to_ns(t).to_string().as_bytes())
}

/// Reads a small text file; `None` if it does not exist or is not parseable.
pub(crate) fn read_small(path: &Path) -> Option<String> {
    let s = fs::read(path).ok()?;
    String::from_utf8(s).ok()
}

pub(crate) fn read_time(path: &Path) -> Option<SystemTime> {
    read_small(path)?
        .trim()
        .parse::<i128>()
        .ok()
        .map(time_ns::from_ns)
}

pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    read_small(path)?.trim().parse().ok()
}

pub(crate) fn read_digest(path: &Path) -> Option<Digest> {
    read_small(path)?.trim().parse().ok()
}

/// A held lock on an ingest directory (released on drop, or when the process dies).
#[derive(Debug)]
pub(crate) struct IngestLock {
    _file: File,
}

/// Locks the ingest directory `dir` of `ref`, creating it if needed.
///
/// # Errors
/// [`Error::RefLocked`] if another writer holds it; `Io` otherwise.
pub(crate) fn lock(ingest_root: &Path, dir: &Path, r#ref: &str) -> Result<IngestLock> {
    let lock_path = dir.join(LOCK);
    for _ in 0..16 {
        fs::create_dir_all(ingest_root).map_err(|e| Error::io("mkdir", ingest_root, e))?;
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("mkdir", dir, e)),
        }
        // Never write through a symlink planted where an ingest directory belongs.
        match fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::invalid(
                    dir.display().to_string(),
                    "ingest path is not a directory (symlink?)",
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("stat", dir, e)),
        }
        let file = match open_nofollow(&lock_path, true, false) {
            Ok(f) => f,
            // The directory vanished between mkdir and open (a commit finished): retry.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("open", &lock_path, e)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::RefLocked {
                    r#ref: r#ref.to_owned(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("flock", &lock_path, e)),
        }
        // Still the lock file at the path? (The previous holder may have removed the directory.)
        let held = file
            .metadata()
            .map_err(|e| Error::io("fstat", &lock_path, e))?;
        match fs::symlink_metadata(&lock_path) {
            Ok(m) if m.ino() == held.ino() && m.dev() == held.dev() => {
                return Ok(IngestLock { _file: file });
            }
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("stat", &lock_path, e)),
        }
    }
    Err(Error::RefLocked {
        r#ref: r#ref.to_owned(),
    })
}

/// Whether some writer currently holds the ingest directory's lock.
pub(crate) fn is_locked(dir: &Path) -> bool {
    let Ok(f) = File::open(dir.join(LOCK)) else {
        return false;
    };
    match f.try_lock() {
        Ok(()) => false,
        Err(fs::TryLockError::WouldBlock) => true,
        Err(fs::TryLockError::Error(_)) => false,
    }
}

/// The recorded state of an ingest directory, read without locking.
#[derive(Debug, Clone)]
pub(crate) struct OnDisk {
    pub(crate) r#ref: String,
    pub(crate) offset: u64,
    pub(crate) total: Option<u64>,
    pub(crate) expected: Option<Digest>,
    pub(crate) started_at: SystemTime,
    pub(crate) updated_at: SystemTime,
}

/// Reads an ingest directory; `None` if it holds no started ingest (no readable `ref`).
pub(crate) fn read(dir: &Path) -> Option<OnDisk> {
    let r#ref = read_small(&dir.join(REF))?;
    let data = fs::symlink_metadata(dir.join(DATA)).ok()?;
    let mtime = data.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let started_at = read_time(&dir.join(STARTED_AT)).unwrap_or(mtime);
    let updated_at = read_time(&dir.join(UPDATED_AT))
        .map(|t| t.max(mtime))
        .unwrap_or(mtime);
    Some(OnDisk {
        r#ref,
        offset: data.len(),
        total: read_u64(&dir.join(TOTAL)),
        expected: read_digest(&dir.join(EXPECTED)),
        started_at,
        updated_at,
    })
}

/// Every ingest directory under `ingest_root`.
pub(crate) fn list_dirs(ingest_root: &Path) -> Result<Vec<PathBuf>> {
    let rd = match fs::read_dir(ingest_root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("readdir", ingest_root, e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io("readdir", ingest_root, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push(ent.path());
        }
    }
    out.sort();
    Ok(out)
}
