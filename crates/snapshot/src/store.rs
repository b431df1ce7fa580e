//! The engine shared by the backends: metadata transactions around directory work.
//!
//! A backend ([`Driver`]) only knows how to fill a new snapshot directory and how to
//! describe its mounts; [`Store`] enforces the contract and the crash-safety protocol:
//!
//! * create: record inserted in a write transaction → directory built as
//!   `snapshots/new-XXXX` → renamed to `snapshots/<id>` → directory fsynced → transaction
//!   committed. A failure before the commit removes the directory; a crash leaves only an
//!   unowned directory, never a record without one.
//! * remove: record deleted and committed → directory renamed to `snapshots/rm-XXXX`
//!   (still under the root lock) → deleted after the lock is released. A crash in between
//!   leaves an orphan for [`Store::cleanup`].
//! * cleanup: under the lock, every entry of `snapshots/` that no record owns is renamed
//!   to `rm-XXXX`, then all `rm-*` directories are deleted.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::fsutil;
use crate::metadata::{MetaStore, Snapshot, WriteTx};
use crate::mount::Mount;
use crate::snapshotter::WalkFn;
use crate::types::{Capability, DirLayout, Info, Kind, Opts, Usage, WritableDir};

/// Name of the directory holding the snapshot directories.
pub(crate) const SNAPSHOTS_DIR: &str = "snapshots";

/// Backend mechanics.
pub(crate) trait Driver: Send + Sync + std::fmt::Debug {
    /// Refuses a snapshot the backend cannot represent (checked before any disk work).
    fn check(&self, key: &str, snap: &Snapshot) -> Result<()>;
    /// Fills the new directory `dir` for `snap` (its future path is `store.dir(snap.id)`).
    fn populate(&self, store: &Paths, dir: &Path, snap: &Snapshot) -> Result<()>;
    /// The mounts of an active or view snapshot.
    fn mounts(&self, store: &Paths, snap: &Snapshot) -> Vec<Mount>;
    /// Whether a capability is supported.
    fn supports(&self, cap: Capability) -> bool;
    /// How the `fs` directory of an active snapshot relates to its parents.
    fn layout(&self) -> DirLayout;
}

/// Paths of a root.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub root: PathBuf,
    pub snapshots: PathBuf,
}

impl Paths {
    /// `snapshots/<id>`.
    pub fn dir(&self, id: u64) -> PathBuf {
        self.snapshots.join(id.to_string())
    }

    /// `snapshots/<id>/fs`.
    pub fn fs(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }

    /// `snapshots/<id>/work`.
    pub fn work(&self, id: u64) -> PathBuf {
        self.dir(id).join("work")
    }
}

/// A snapshotter: metadata + directories + a driver.
#[derive(Debug)]
pub(crate) struct Store<D: Driver> {
    pub paths: Paths,
    meta: MetaStore,
    pub driver: D,
    closed: AtomicBool,
}

fn now() -> SystemTime {
    SystemTime::now()
}

impl<D: Driver> Store<D> {
    /// Opens or creates a root (mode 0700 when created).
    pub fn open(root: &Path, driver: D) -> Result<Self> {
        fsutil::ensure_dir(root)?;
        let root = fs::canonicalize(root).map_err(|e| Error::io("canonicalize", root, e))?;
        let snapshots = root.join(SNAPSHOTS_DIR);
        fsutil::ensure_dir(&snapshots)?;
        let meta = MetaStore::open(&root)?;
        Ok(Store {
            paths: Paths { root, snapshots },
            meta,
            driver,
            closed: AtomicBool::new(false),
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::precondition(
                self.paths.root.display().to_string(),
                "snapshotter is closed",
            ));
        }
        Ok(())
    }

    pub fn stat(&self, key: &str) -> Result<Info> {
        self.check_open()?;
        self.meta.session()?.info(key)
    }

    pub fn update(&self, info: &Info, fieldpaths: &[&str]) -> Result<Info> {
        self.check_open()?;
        let session = self.meta.session()?;
        let tx = session.begin_write()?;
        let out = tx.update(info, fieldpaths, now())?;
        tx.commit()?;
        Ok(out)
    }

    pub fn usage(&self, key: &str) -> Result<Usage> {
        self.check_open()?;
        let (rec, id) = {
            let session = self.meta.session()?;
            let rec = session.record(key)?;
            let id = rec.id;
            (rec, id)
        };
        match rec.kind {
            Kind::Active => fsutil::disk_usage(&self.paths.fs(id)),
            Kind::Committed => Ok(rec.usage.unwrap_or_default()),
            Kind::View => Ok(Usage::default()),
        }
    }

    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        self.check_open()?;
        let snap = self.meta.session()?.snapshot(key)?;
        if snap.kind == Kind::Committed {
            return Err(Error::precondition(
                key,
                "a committed snapshot has no mounts; prepare or view it",
            ));
        }
        Ok(self.driver.mounts(&self.paths, &snap))
    }

    pub fn create(&self, kind: Kind, key: &str, parent: &str, opts: &Opts) -> Result<Vec<Mount>> {
        self.check_open()?;
        let session = self.meta.session()?;
        let tx = session.begin_write()?;
        let snap = tx.create(kind, key, parent, &opts.labels, now())?;
        self.driver.check(key, &snap)?;
        let tmp = self.paths.snapshots.join(fsutil::unique_name("new-"));
        let target = self.paths.dir(snap.id);
        let built = (|| {
            fsutil::mkdir_mode(&tmp, 0o700)?;
            self.driver.populate(&self.paths, &tmp, &snap)?;
            // An unowned directory with this id can only be a crash leftover: the id
            // sequence had not been committed. Move it out of the way.
            if fs::symlink_metadata(&target).is_ok() {
                let stale = self.paths.snapshots.join(fsutil::unique_name("rm-"));
                fs::rename(&target, &stale).map_err(|e| Error::io("rename", &target, e))?;
                remove_dir_logged(&stale);
            }
            fs::rename(&tmp, &target).map_err(|e| Error::io("rename", &tmp, e))?;
            fsutil::fsync_dir(&self.paths.snapshots)
        })();
        if let Err(e) = built {
            remove_dir_logged(&tmp);
            return Err(e);
        }
        if let Err(e) = tx.commit() {
            remove_dir_logged(&target);
            return Err(e);
        }
        drop(session);
        Ok(self.driver.mounts(&self.paths, &snap))
    }

    pub fn commit(&self, name: &str, key: &str, opts: &Opts) -> Result<()> {
        self.check_open()?;
        let mut attempts = 0;
        loop {
            // Measure the layer before taking the lock: the walk is O(size) and the active
            // snapshot belongs to the caller, so nobody else changes it meanwhile.
            let first = self.meta.session()?.snapshot(key)?;
            let usage = match first.kind {
                Kind::Active => fsutil::disk_usage(&self.paths.fs(first.id))?,
                _ => Usage::default(),
            };
            let session = self.meta.session()?;
            let tx = session.begin_write()?;
            let snap = tx.snapshot(key)?;
            if snap.id != first.id && attempts < 3 {
                // Removed and re-prepared under the same key in between: measure again.
                attempts += 1;
                continue;
            }
            return self.commit_locked(tx, &snap, name, key, opts, usage);
        }
    }

    fn commit_locked(
        &self,
        tx: WriteTx,
        snap: &Snapshot,
        name: &str,
        key: &str,
        opts: &Opts,
        usage: Usage,
    ) -> Result<()> {
        if snap.kind != Kind::Active {
            return Err(Error::precondition(
                key,
                format!(
                    "snapshot is {}, only an active snapshot can be committed",
                    snap.kind
                ),
            ));
        }
        let rebase = opts.parent.as_deref().unwrap_or("");
        if !rebase.is_empty() && snap.parent_ids.is_empty() {
            if !self.driver.supports(Capability::Rebase) {
                return Err(Error::invalid(
                    key,
                    "this snapshotter cannot rebase a snapshot at commit",
                ));
            }
            let parent = tx.snapshot(rebase)?;
            let rebased = Snapshot {
                id: snap.id,
                kind: snap.kind,
                parent_ids: std::iter::once(parent.id)
                    .chain(parent.parent_ids)
                    .collect(),
            };
            self.driver.check(key, &rebased)?;
        }
        tx.commit_active(key, name, usage, opts, now())?;
        tx.commit()
    }

    pub fn remove(&self, key: &str) -> Result<()> {
        self.check_open()?;
        let doomed = {
            let session = self.meta.session()?;
            let tx = session.begin_write()?;
            let (id, _kind) = tx.remove(key)?;
            tx.commit()?;
            // Still under the lock: move the directory out of the id namespace, so a later
            // create (or cleanup) never sees it under a live name.
            let dir = self.paths.dir(id);
            let doomed = self.paths.snapshots.join(fsutil::unique_name("rm-"));
            match fs::rename(&dir, &doomed) {
                Ok(()) => Some(doomed),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot move removed snapshot; cleanup will retry");
                    None
                }
            }
        };
        if let Some(d) = doomed {
            remove_dir_logged(&d);
        }
        Ok(())
    }

    pub fn walk(&self, filters: &[&str], f: &mut WalkFn<'_>) -> Result<()> {
        self.check_open()?;
        let filter = Filter::parse(filters)?;
        let all = self.meta.session()?.all()?;
        for info in all.iter().filter(|i| filter.matches(i)) {
            f(info)?;
        }
        Ok(())
    }

    pub fn cleanup(&self) -> Result<()> {
        self.check_open()?;
        let mut doomed = Vec::new();
        {
            let session = self.meta.session()?;
            let ids = session.ids()?;
            let entries = fs::read_dir(&self.paths.snapshots)
                .map_err(|e| Error::io("readdir", &self.paths.snapshots, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("readdir", &self.paths.snapshots, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                if name.starts_with("rm-") {
                    doomed.push(path);
                    continue;
                }
                let owned = name.parse::<u64>().is_ok_and(|id| ids.contains(&id));
                if owned {
                    continue;
                }
                if name.starts_with("new-") || name.parse::<u64>().is_ok() {
                    let to = self.paths.snapshots.join(fsutil::unique_name("rm-"));
                    fs::rename(&path, &to).map_err(|e| Error::io("rename", &path, e))?;
                    tracing::info!(dir = %path.display(), "sweeping orphaned snapshot directory");
                    doomed.push(to);
                } else {
                    tracing::warn!(entry = %path.display(), "unknown entry in snapshots directory left alone");
                }
            }
        }
        let mut first = None;
        for d in doomed {
            if let Err(e) = remove_dir(&d) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    pub fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }

    pub fn writable_dir(&self, key: &str) -> Result<Option<WritableDir>> {
        self.check_open()?;
        let snap = self.meta.session()?.snapshot(key)?;
        if snap.kind != Kind::Active {
            return Err(Error::precondition(
                key,
                format!("snapshot is {}, not active", snap.kind),
            ));
        }
        Ok(Some(WritableDir {
            path: self.paths.fs(snap.id),
            layout: self.driver.layout(),
        }))
    }
}

fn remove_dir(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

fn remove_dir_logged(path: &Path) {
    if let Err(e) = remove_dir(path) {
        tracing::warn!(dir = %path.display(), error = %e, "cannot remove directory; cleanup will retry");
    }
}

/// Implements [`crate::Snapshotter`] for a newtype around `Store<D>` (field `store`).
macro_rules! delegate_snapshotter {
    ($ty:ty) => {
        impl $crate::Snapshotter for $ty {
            fn stat(&self, key: &str) -> $crate::Result<$crate::Info> {
                self.store.stat(key)
            }
            fn update(
                &self,
                info: &$crate::Info,
                fieldpaths: &[&str],
            ) -> $crate::Result<$crate::Info> {
                self.store.update(info, fieldpaths)
            }
            fn usage(&self, key: &str) -> $crate::Result<$crate::Usage> {
                self.store.usage(key)
            }
            fn mounts(&self, key: &str) -> $crate::Result<Vec<$crate::Mount>> {
                self.store.mounts(key)
            }
            fn prepare(
                &self,
                key: &str,
                parent: &str,
                opts: &$crate::Opts,
            ) -> $crate::Result<Vec<$crate::Mount>> {
                self.store.create($crate::Kind::Active, key, parent, opts)
            }
            fn view(
                &self,
                key: &str,
                parent: &str,
                opts: &$crate::Opts,
            ) -> $crate::Result<Vec<$crate::Mount>> {
                self.store.create($crate::Kind::View, key, parent, opts)
            }
            fn commit(&self, name: &str, key: &str, opts: &$crate::Opts) -> $crate::Result<()> {
                self.store.commit(name, key, opts)
            }
            fn remove(&self, key: &str) -> $crate::Result<()> {
                self.store.remove(key)
            }
            fn walk(&self, filters: &[&str], f: &mut $crate::WalkFn<'_>) -> $crate::Result<()> {
                self.store.walk(filters, f)
            }
            fn cleanup(&self) -> $crate::Result<()> {
                self.store.cleanup()
            }
            fn close(&self) -> $crate::Result<()> {
                self.store.close()
            }
            fn supports(&self, cap: $crate::Capability) -> bool {
                self.store.driver.supports(cap)
            }
            fn writable_dir(&self, key: &str) -> $crate::Result<Option<$crate::WritableDir>> {
                self.store.writable_dir(key)
            }
        }
    };
}
pub(crate) use delegate_snapshotter;
