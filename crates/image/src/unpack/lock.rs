//! Per-chainID locks shared by threads and processes.
//!
//! A lock is an exclusive `flock` on `<dir>/<alg>-<hex>.lock`. `flock` locks belong to an open
//! file description, so two opens of the same file conflict even inside one process: one
//! mechanism serves threads and processes alike. The file is unlinked by the holder before it
//! releases the lock; a waiter that then gets the lock checks that the path still names the
//! file it locked and starts over otherwise, so lock files never accumulate and no two holders
//! can ever hold "the same" lock through different inodes.
//!
//! The lock only avoids duplicate work; correctness never depends on it (a commit that finds
//! its name taken counts as done).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use berth_oci::Digest;

use super::error::{Error, Result};

/// An exclusive lock on one chainID; released (and its file removed) on drop.
#[derive(Debug)]
pub(crate) struct ChainLock {
    file: Option<File>,
    path: PathBuf,
}

impl ChainLock {
    /// Blocks until the lock on `chain_id` in `dir` is held.
    pub(crate) fn acquire(dir: &Path, chain_id: &Digest) -> Result<Self> {
        match Self::lock(dir, chain_id, true)? {
            Some(lock) => Ok(lock),
            // A blocking lock only returns once held.
            None => Err(Error::io(
                "flock",
                dir,
                io::Error::other("blocking lock returned without the lock"),
            )),
        }
    }

    /// Takes the lock on `chain_id` in `dir` if nobody holds it; `None` when somebody does.
    pub(crate) fn try_acquire(dir: &Path, chain_id: &Digest) -> Result<Option<Self>> {
        Self::lock(dir, chain_id, false)
    }

    fn lock(dir: &Path, chain_id: &Digest, wait: bool) -> Result<Option<Self>> {
        fs::create_dir_all(dir).map_err(|e| Error::io("mkdir", dir, e))?;
        let path = dir.join(format!(
            "{}-{}.lock",
            chain_id.algorithm().as_str(),
            chain_id.hex()
        ));
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| Error::io("open", &path, e))?;
            if wait {
                file.lock().map_err(|e| Error::io("flock", &path, e))?;
            } else {
                match file.try_lock() {
                    Ok(()) => {}
                    Err(fs::TryLockError::WouldBlock) => return Ok(None),
                    Err(fs::TryLockError::Error(e)) => return Err(Error::io("flock", &path, e)),
                }
            }
            let held = file.metadata().map_err(|e| Error::io("fstat", &path, e))?;
            match fs::symlink_metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(Some(ChainLock {
                        file: Some(file),
                        path,
                    }));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("stat", &path, e)),
            }
        }
    }
}

impl Drop for ChainLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock (see the module docs), then release.
        if let Err(e) = fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove lock file");
        }
        drop(self.file.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn excludes_threads_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let chain = Digest::sha256(b"chain");
        let inside = AtomicUsize::new(0);
        let max = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..20 {
                        let _g = ChainLock::acquire(dir.path(), &chain).unwrap();
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(n, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(max.load(Ordering::SeqCst), 1);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn try_acquire_fails_while_held_and_succeeds_after() {
        let dir = tempfile::tempdir().unwrap();
        let chain = Digest::sha256(b"chain");
        let held = ChainLock::acquire(dir.path(), &chain).unwrap();
        assert!(
            ChainLock::try_acquire(dir.path(), &chain)
                .unwrap()
                .is_none()
        );
        drop(held);
        let again = ChainLock::try_acquire(dir.path(), &chain).unwrap();
        assert!(again.is_some());
        drop(again);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
