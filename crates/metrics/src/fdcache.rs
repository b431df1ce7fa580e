//! An optional cache of open cgroup files for repeated scrapes.
//!
//! Opening a cgroupfs file costs several microseconds (path walk plus kernfs `seq_file` set-up)
//! while re-reading an already open one with `pread(fd, buf, 0)` costs well under one: reading
//! at offset 0 makes the kernel regenerate the content (`seq_read_iter` restarts at
//! `ki_pos == 0`). A collector that scrapes the same cgroups again and again can therefore keep
//! the files open between scrapes. [`OpenFiles`] does that within a fixed budget of fds.
//!
//! Correctness rules:
//! - a cached fd whose cgroup was removed reads `ENODEV`: the entry is dropped and the path is
//!   opened afresh (so a cgroup re-created under the same path is read, not the dead one);
//! - files not read during a scrape are closed at the end of it
//!   ([`OpenFiles::end_scrape`]), so containers that went away do not pin fds;
//! - when the budget is used up, further files are read without caching.
//!
//! The readers find the cache through a thread-local set for the duration of one call
//! ([`with_open_files`]); without it they open and close each file.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{MetricsError, Result};
use crate::files::{is_missing, read_file_at};

/// A bounded cache of open cgroup files. Thread-safe; see the module docs.
#[derive(Debug)]
pub struct OpenFiles {
    budget: usize,
    generation: AtomicU64,
    files: Mutex<HashMap<PathBuf, (File, u64)>>,
}

impl OpenFiles {
    /// A cache keeping at most `budget` files open.
    pub fn new(budget: usize) -> Self {
        OpenFiles {
            budget,
            generation: AtomicU64::new(0),
            files: Mutex::new(HashMap::new()),
        }
    }

    /// A budget derived from the soft `RLIMIT_NOFILE`: a quarter of it, at most 8192.
    pub fn default_budget() -> usize {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own and has no other effect.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
        if !ok {
            return 256;
        }
        usize::try_from(lim.rlim_cur / 4).map_or(8192, |n| n.min(8192))
    }

    /// Number of files currently open.
    pub fn len(&self) -> usize {
        self.files.lock().map_or(0, |f| f.len())
    }

    /// True when no file is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a scrape: files read from now on are marked as in use.
    pub fn begin_scrape(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends a scrape: closes every file not read since [`OpenFiles::begin_scrape`].
    pub fn end_scrape(&self) {
        let current = self.generation.load(Ordering::Relaxed);
        if let Ok(mut files) = self.files.lock() {
            files.retain(|_, (_, generation)| *generation == current);
        }
    }

    /// Reads `path` into `buf` through the cache; `Ok(None)` when it does not exist.
    pub(crate) fn read(&self, path: &Path, buf: &mut Vec<u8>) -> Result<Option<usize>> {
        let cached = self
            .files
            .lock()
            .ok()
            .and_then(|mut f| f.remove_entry(path));
        if let Some((key, (file, _))) = cached {
            match read_file_at(&file, path, buf)? {
                Some(n) => {
                    self.put(key, file);
                    return Ok(Some(n));
                }
                // ENODEV/ENOENT: the cgroup behind this fd is gone; try the path afresh.
                None => drop(file),
            }
        }
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(source) => {
                return Err(MetricsError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let n = read_file_at(&file, path, buf)?;
        if n.is_some() {
            self.put(path.to_path_buf(), file);
        }
        Ok(n)
    }

    fn put(&self, key: PathBuf, file: File) {
        let generation = self.generation.load(Ordering::Relaxed);
        if let Ok(mut files) = self.files.lock()
            && files.len() < self.budget
        {
            files.insert(key, (file, generation));
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<OpenFiles>>> = const { RefCell::new(None) };
}

/// Runs `f` with `cache` as this thread's open-file cache (none when `cache` is `None`).
pub fn with_open_files<R>(cache: Option<&Arc<OpenFiles>>, f: impl FnOnce() -> R) -> R {
    let previous = CURRENT.with(|c| c.replace(cache.cloned()));
    let out = f();
    CURRENT.with(|c| c.replace(previous));
    out
}

/// This thread's cache, if any.
pub(crate) fn current() -> Option<Arc<OpenFiles>> {
    CURRENT.with(|c| c.borrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::read_u64;

    #[test]
    fn cached_reads_see_new_content_and_unused_files_close() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        std::fs::write(&a, "1\n").unwrap();
        std::fs::write(&b, "2\n").unwrap();
        let cache = Arc::new(OpenFiles::new(1));
        cache.begin_scrape();
        let (va, vb) = with_open_files(Some(&cache), || {
            (read_u64(&a).unwrap(), read_u64(&b).unwrap())
        });
        assert_eq!((va, vb), (Some(1), Some(2)));
        assert_eq!(cache.len(), 1, "budget of one fd");
        cache.end_scrape();
        assert_eq!(cache.len(), 1);

        // Rewritten in place (same inode): the cached fd reads the new content.
        std::fs::write(&a, "10\n").unwrap();
        cache.begin_scrape();
        let v = with_open_files(Some(&cache), || read_u64(&a).unwrap());
        assert_eq!(v, Some(10));
        cache.end_scrape();

        // A scrape that does not read `a` closes it.
        cache.begin_scrape();
        cache.end_scrape();
        assert!(cache.is_empty());
        // Outside `with_open_files` nothing is cached.
        assert!(current().is_none());
        assert_eq!(read_u64(&b).unwrap(), Some(2));
        assert!(OpenFiles::default_budget() >= 1);
    }
}
