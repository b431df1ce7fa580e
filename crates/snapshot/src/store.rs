//! The engine shared by the backends: metadata transactions around directory work.
//!
//! A backend ([`Driver`]) only knows how to fill a new snapshot directory and how to
//! describe its mounts; [`Store`] enforces the contract and the crash-safety protocol. A
//! metadata write transaction is exclusive across all threads and processes sharing the
//! root (see [`crate::metadata`]), so it doubles as the root-wide critical section:
//!
//! * create: record inserted in a write transaction → directory built as
//!   `snapshots/new-XXXX` (flocked while it is built) → renamed to `snapshots/<id>` →
//!   directory fsynced → transaction committed. A failure before the commit removes the
//!   directory; a crash leaves only an unowned directory, never a record without one.
//!   Slow backends (the native copy) build *outside* any write transaction, between a
//!   validating (aborted) transaction and the publishing one, so a long copy never blocks
//!   other writers.
//! * remove: record deleted and committed → directory renamed to `snapshots/rm-XXXX` →
//!   deleted (holding its flock). A crash in between leaves an orphan for
//!   [`Store::cleanup`].
//! * cleanup: inside a write transaction, every entry of `snapshots/` that no record owns
//!   and that is not being built (its flock is free) is renamed to `rm-XXXX`; afterwards
//!   all `rm-*` directories nobody else is deleting are removed.

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
    /// Adds backend labels to an info returned by stat, walk or update.
    fn decorate(&self, _paths: &Paths, _id: u64, _info: &mut Info) {}
    /// Backend-specific consistency problem of one snapshot's directory, if any.
    fn verify(&self, _paths: &Paths, _snap: &Snapshot) -> Option<String> {
        None
    }
    /// Whether `populate` is slow enough (a copy) to run outside the write transaction.
    fn slow_populate(&self) -> bool {
        false
    }
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
        fsutil::mark_top_dir(&snapshots);
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
        let rec = self.meta.session()?.record(key)?;
        let mut info = rec.info(key);
        self.driver.decorate(&self.paths, rec.id, &mut info);
        Ok(info)
    }

    pub fn update(&self, info: &Info, fieldpaths: &[&str]) -> Result<Info> {
        self.check_open()?;
        let session = self.meta.session()?;
        let tx = session.begin_write()?;
        let mut out = tx.update(info, fieldpaths, now())?;
        let id = tx.snapshot(&info.name)?.id;
        tx.commit()?;
        self.driver.decorate(&self.paths, id, &mut out);
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
        if !self.driver.slow_populate() {
            let built = None;
            return self
                .create_locked(kind, key, parent, opts, built)?
                .ok_or_else(|| Error::precondition(key, "parent chain changed during create"));
        }
        // Slow backends (a tree copy) build the directory outside any write transaction:
        // validate and learn the parent chain in an aborted transaction, build, then
        // re-validate and publish. Committed parents are immutable and their ids never
        // reused, so an unchanged chain proves the copy read a stable tree.
        for _ in 0..3 {
            let (preview, building) = {
                let session = self.meta.session()?;
                let tx = session.begin_write()?;
                let snap = tx.create(kind, key, parent, &opts.labels, now())?;
                self.driver.check(key, &snap)?;
                // Made and flocked inside the transaction, so cleanup never sees it
                // unlocked.
                (snap, self.start_building()?)
            };
            self.driver.populate(&self.paths, &building.dir, &preview)?;
            let prebuilt = Some((building, preview.parent_ids));
            if let Some(mounts) = self.create_locked(kind, key, parent, opts, prebuilt)? {
                return Ok(mounts);
            }
        }
        Err(Error::precondition(
            key,
            "parent chain kept changing during create",
        ))
    }

    /// Makes `snapshots/new-XXXX`, flocked until it is published or removed, so a
    /// concurrent [`Store::cleanup`] leaves it alone.
    fn start_building(&self) -> Result<Building> {
        let dir = self.paths.snapshots.join(fsutil::unique_name("new-"));
        fsutil::mkdir_mode(&dir, 0o700)?;
        let mut building = Building {
            lock: None,
            dir,
            keep: false,
        };
        building.lock = fsutil::lock_dir(&building.dir, true)?;
        Ok(building)
    }

    /// The locked part of create: insert the record, build (unless `prebuilt`), rename into
    /// place, commit. `Ok(None)` when `prebuilt` was made for a different parent chain.
    fn create_locked(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        opts: &Opts,
        prebuilt: Option<(Building, Vec<u64>)>,
    ) -> Result<Option<Vec<Mount>>> {
        let session = self.meta.session()?;
        let tx = session.begin_write()?;
        let snap = tx.create(kind, key, parent, &opts.labels, now())?;
        self.driver.check(key, &snap)?;
        let mut building = match prebuilt {
            Some((b, chain)) if chain == snap.parent_ids => b,
            Some(_) => return Ok(None),
            None => {
                let b = self.start_building()?;
                self.driver.populate(&self.paths, &b.dir, &snap)?;
                b
            }
        };
        let target = self.paths.dir(snap.id);
        // An unowned directory with this id can only be a crash leftover: the id sequence
        // had not been committed. Move it out of the way.
        if fs::symlink_metadata(&target).is_ok() {
            let stale = self.paths.snapshots.join(fsutil::unique_name("rm-"));
            fs::rename(&target, &stale).map_err(|e| Error::io("rename", &target, e))?;
            remove_dir_logged(&stale);
        }
        fs::rename(&building.dir, &target).map_err(|e| Error::io("rename", &building.dir, e))?;
        building.dir = target.clone();
        fsutil::fsync_dir(&self.paths.snapshots)?;
        tx.commit()?;
        building.keep = true;
        drop(building);
        drop(session);
        Ok(Some(self.driver.mounts(&self.paths, &snap)))
    }

    pub fn commit(&self, name: &str, key: &str, opts: &Opts) -> Result<()> {
        self.check_open()?;
        let mut attempts = 0;
        loop {
            // Measure the layer before the write transaction: the walk is O(size) and the active
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
        let id = {
            let session = self.meta.session()?;
            let tx = session.begin_write()?;
            let (id, _kind) = tx.remove(key)?;
            tx.commit()?;
            id
        };
        // Phase two: the directory is now unowned. Move it out of the id namespace and
        // delete it; a concurrent cleanup may have swept it already, which is fine.
        let dir = self.paths.dir(id);
        let doomed = self.paths.snapshots.join(fsutil::unique_name("rm-"));
        match fs::rename(&dir, &doomed) {
            Ok(()) => remove_doomed(&doomed, true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot move removed snapshot; cleanup will retry");
            }
        }
        Ok(())
    }

    pub fn walk(&self, filters: &[&str], f: &mut WalkFn<'_>) -> Result<()> {
        self.check_open()?;
        let filter = Filter::parse(filters)?;
        let all = self.meta.session()?.all_records()?;
        for (key, rec) in all {
            let mut info = rec.info(&key);
            self.driver.decorate(&self.paths, rec.id, &mut info);
            if filter.matches(&info) {
                f(&info)?;
            }
        }
        Ok(())
    }

    pub fn cleanup(&self) -> Result<()> {
        self.check_open()?;
        let mut doomed = Vec::new();
        {
            // The write transaction is the root-wide critical section: no create can
            // publish a directory while the sweep decides what is unowned.
            let session = self.meta.session()?;
            let tx = session.begin_write()?;
            let ids = tx.ids()?;
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
                if name.starts_with("new-") && fsutil::lock_dir(&path, false)?.is_none() {
                    // Being built by another process or thread right now.
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
            // Nothing to write: dropping the transaction aborts it.
        }
        for d in doomed {
            remove_doomed(&d, false);
        }
        Ok(())
    }

    pub fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.meta.close();
        Ok(())
    }

    /// Problems found by comparing records with directories: a record whose directory (or
    /// `fs`) is missing, or an active overlay snapshot without `work`. Unowned directories
    /// are not problems (cleanup removes them).
    pub fn verify(&self) -> Result<Vec<String>> {
        self.check_open()?;
        let session = self.meta.session()?;
        let mut problems = Vec::new();
        for info in session.all()? {
            let snap = session.snapshot(&info.name)?;
            let fs_dir = self.paths.fs(snap.id);
            if !fs_dir.is_dir() {
                problems.push(format!(
                    "{:?} (id {}): missing {}",
                    info.name,
                    snap.id,
                    fs_dir.display()
                ));
            }
            if let Some(p) = self.driver.verify(&self.paths, &snap) {
                problems.push(format!("{:?} (id {}): {p}", info.name, snap.id));
            }
        }
        Ok(problems)
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

/// A snapshot directory being built: removed on drop unless published (`keep`).
#[derive(Debug)]
struct Building {
    lock: Option<fs::File>,
    dir: PathBuf,
    keep: bool,
}

impl Drop for Building {
    fn drop(&mut self) {
        if !self.keep {
            remove_dir_logged(&self.dir);
        }
        self.lock.take();
    }
}

/// Deletes an `rm-*` directory while holding its flock, so two deleters (a remove and a
/// cleanup, possibly in different processes) never work on the same tree. With `wait`
/// false, a directory someone else is deleting is skipped.
fn remove_doomed(path: &Path, wait: bool) {
    match fsutil::lock_dir(path, wait) {
        Ok(Some(_lock)) => remove_dir_logged(path),
        Ok(None) => {}
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %path.display(), error = %e, "cannot lock directory for removal")
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, Sender, channel};

    /// A slow driver whose populate blocks until the test releases it.
    #[derive(Debug)]
    struct Gated {
        entered: Mutex<Sender<()>>,
        gate: Mutex<Receiver<()>>,
    }

    impl Driver for Gated {
        fn check(&self, _key: &str, _snap: &Snapshot) -> Result<()> {
            Ok(())
        }
        fn populate(&self, _paths: &Paths, dir: &Path, _snap: &Snapshot) -> Result<()> {
            fsutil::mkdir_mode(&dir.join("fs"), 0o755)?;
            let _ = self.entered.lock().map(|s| s.send(()));
            let _ = self.gate.lock().map(|g| g.recv());
            Ok(())
        }
        fn mounts(&self, paths: &Paths, snap: &Snapshot) -> Vec<Mount> {
            vec![Mount::bind(paths.fs(snap.id).to_string_lossy(), false)]
        }
        fn supports(&self, _cap: Capability) -> bool {
            false
        }
        fn layout(&self) -> DirLayout {
            DirLayout::FullTree
        }
        fn slow_populate(&self) -> bool {
            true
        }
    }

    #[test]
    fn slow_populate_runs_without_the_root_lock_and_survives_cleanup() {
        let tmp = tempfile::tempdir().unwrap();
        let (entered_tx, entered_rx) = channel();
        let (gate_tx, gate_rx) = channel();
        let store = Store::open(
            tmp.path(),
            Gated {
                entered: Mutex::new(entered_tx),
                gate: Mutex::new(gate_rx),
            },
        )
        .unwrap();
        std::thread::scope(|s| {
            let t = s.spawn(|| store.create(Kind::Active, "slow", "", &Opts::new()));
            entered_rx.recv().unwrap();
            // While the build is in progress no write transaction is held: other operations run,
            // and cleanup leaves the flocked new-* directory alone.
            assert_eq!(
                store.stat("slow").unwrap_err().kind(),
                crate::ErrorKind::NotFound
            );
            store.cleanup().unwrap();
            let building = fs::read_dir(&store.paths.snapshots)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("new-")
                })
                .count();
            assert_eq!(building, 1);
            gate_tx.send(()).unwrap();
            let r = t.join().unwrap();
            r.unwrap();
        });
        let info = store.stat("slow").unwrap();
        assert_eq!(info.kind, Kind::Active);
        let names: Vec<String> = fs::read_dir(&store.paths.snapshots)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["1".to_string()]);
    }

    #[test]
    fn slow_create_losing_the_race_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let (entered_tx, entered_rx) = channel();
        let (gate_tx, gate_rx) = channel();
        let store = Store::open(
            tmp.path(),
            Gated {
                entered: Mutex::new(entered_tx),
                gate: Mutex::new(gate_rx),
            },
        )
        .unwrap();
        std::thread::scope(|s| {
            let t = s.spawn(|| store.create(Kind::Active, "k", "", &Opts::new()));
            entered_rx.recv().unwrap();
            let t2 = s.spawn(|| store.create(Kind::Active, "k", "", &Opts::new()));
            entered_rx.recv().unwrap();
            gate_tx.send(()).unwrap();
            gate_tx.send(()).unwrap();
            let results = [t.join().unwrap(), t2.join().unwrap()];
            let ok = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(ok, 1, "{results:?}");
            let err = results.iter().find_map(|r| r.as_ref().err()).unwrap();
            assert_eq!(err.kind(), crate::ErrorKind::AlreadyExists);
        });
        let count = fs::read_dir(&store.paths.snapshots).unwrap().count();
        assert_eq!(count, 1, "the loser's directory was not removed");
    }
}
