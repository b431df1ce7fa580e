//! Transactional snapshot metadata in one redb file, `<root>/metadata.redb`.
//!
//! # Schema (version [`SCHEMA_VERSION`])
//! * `meta`: `"schema_version" -> u64`, `"next_id" -> u64` (the id sequence; ids are never
//!   reused once a record using them is committed).
//! * `snapshots`: `key -> JSON record {id, kind, parent, labels, created, updated, usage}`.
//!   Active keys, view keys and committed names share this one key space.
//! * `parents`: `(parent_id, child_id) -> child key`, a back-index so "has children?" is one
//!   range probe.
//!
//! # Rules (containerd's `storage.MetaStore`)
//! Create needs kind Active or View; the parent must exist (NotFound) and be Committed
//! (InvalidArgument); a duplicate key is AlreadyExists. Remove with a child is
//! FailedPrecondition. Commit needs an Active snapshot (FailedPrecondition), a new name
//! (AlreadyExists), **replaces** the labels, resets the timestamps and keeps the numeric id.
//! A parent may be set at commit only when the active snapshot had none. Update changes
//! labels only (`labels`, `labels.<k>`).
//!
//! # Several processes
//! redb lets only one handle open a file at a time, so the store never keeps the database
//! open between operations: every operation takes an exclusive `flock` on `<root>/lock`
//! (a fresh open file description, so threads of one process exclude each other too), opens
//! the database, runs one transaction plus the directory work that belongs to it, closes the
//! database and drops the lock. Any number of processes and threads may therefore share a
//! root; operations on it are serialised. Opening costs well under a millisecond on a clean
//! file; after a crash redb repairs the file on the next open.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::{Info, Kind, Labels, Opts, Usage};

/// The schema version this code reads and writes.
pub const SCHEMA_VERSION: u64 = 1;
/// File name of the database inside the root.
pub const DB_FILE: &str = "metadata.redb";
/// File name of the lock file inside the root.
pub const LOCK_FILE: &str = "lock";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const PARENTS: TableDefinition<(u64, u64), &str> = TableDefinition::new("parents");

/// containerd's limit on one label (key + value bytes).
const MAX_LABEL_SIZE: usize = 4096;
/// Guard against a corrupt parent cycle.
const MAX_CHAIN: usize = 100_000;

/// The stored form of one snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub id: u64,
    pub kind: Kind,
    pub parent: String,
    pub labels: Labels,
    pub created: SystemTime,
    pub updated: SystemTime,
    #[serde(default)]
    pub usage: Option<Usage>,
}

impl Record {
    pub fn info(&self, name: &str) -> Info {
        Info {
            kind: self.kind,
            name: name.to_string(),
            parent: self.parent.clone(),
            labels: self.labels.clone(),
            created: self.created,
            updated: self.updated,
        }
    }
}

/// A snapshot as a backend needs it: its id, kind, and the ids of its parents, nearest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub id: u64,
    pub kind: Kind,
    pub parent_ids: Vec<u64>,
}

/// Handle on a root's metadata; cheap, holds no open file between operations.
#[derive(Debug)]
pub(crate) struct MetaStore {
    db_path: PathBuf,
    lock_path: PathBuf,
}

/// One locked operation: the root lock plus the open database.
/// Field order matters: the database closes before the lock is released.
#[derive(Debug)]
pub(crate) struct Session {
    db: redb::Database,
    _lock: File,
    path: PathBuf,
}

/// An open write transaction.
pub(crate) struct WriteTx {
    tx: redb::WriteTransaction,
    path: PathBuf,
}

impl std::fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx").field("path", &self.path).finish()
    }
}

fn db_err(path: &Path, op: &'static str, e: impl Into<redb::Error>) -> Error {
    Error::Metadata {
        path: path.to_path_buf(),
        op,
        source: Box::new(e.into()),
    }
}

fn corrupt(path: &Path, key: &str, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason: reason.into(),
    }
}

impl MetaStore {
    /// Opens (creating if needed) the metadata of `root` and checks the schema version.
    pub fn open(root: &Path) -> Result<Self> {
        let store = MetaStore {
            db_path: root.join(DB_FILE),
            lock_path: root.join(LOCK_FILE),
        };
        let session = store.session()?;
        let tx = session.begin_write()?;
        tx.init_schema()?;
        tx.commit()?;
        Ok(store)
    }

    /// Takes the root lock and opens the database.
    pub fn session(&self) -> Result<Session> {
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&self.lock_path)
            .map_err(|e| Error::io("open lock file", &self.lock_path, e))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io("flock", &self.lock_path, e.into()))?;
        // Under the lock nobody else should hold the file; a handle still closing in this
        // process (a dropped transaction) can linger for a moment, so retry briefly.
        let mut delay = Duration::from_millis(1);
        let db = loop {
            let mut builder = redb::Database::builder();
            builder.set_cache_size(8 << 20);
            match builder.create(&self.db_path) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if delay < Duration::from_secs(2) => {
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(e) => return Err(db_err(&self.db_path, "open", e)),
            }
        };
        Ok(Session {
            db,
            _lock: lock,
            path: self.db_path.clone(),
        })
    }
}

impl Session {
    /// Starts a write transaction (committed by [`WriteTx::commit`], aborted on drop).
    pub fn begin_write(&self) -> Result<WriteTx> {
        let tx = self
            .db
            .begin_write()
            .map_err(|e| db_err(&self.path, "begin write", e))?;
        Ok(WriteTx {
            tx,
            path: self.path.clone(),
        })
    }

    /// Runs `f` over the `snapshots` table in a read transaction.
    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadOnlyTable<&'static str, &'static [u8]>) -> Result<T>,
    ) -> Result<T> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| db_err(&self.path, "begin read", e))?;
        let table = tx
            .open_table(SNAPSHOTS)
            .map_err(|e| db_err(&self.path, "open snapshots", e))?;
        f(&table)
    }

    /// Info of `key`. NotFound when missing.
    pub fn info(&self, key: &str) -> Result<Info> {
        self.read(|t| Ok(get_record(t, &self.path, key)?.info(key)))
    }

    /// Record of `key`. NotFound when missing.
    pub fn record(&self, key: &str) -> Result<Record> {
        self.read(|t| get_record(t, &self.path, key))
    }

    /// Id, kind and parent chain of `key`.
    pub fn snapshot(&self, key: &str) -> Result<Snapshot> {
        self.read(|t| snapshot_of(t, &self.path, key))
    }

    /// Every snapshot's info, in key order.
    pub fn all(&self) -> Result<Vec<Info>> {
        self.read(|t| {
            let mut out = Vec::new();
            for item in t.iter().map_err(|e| db_err(&self.path, "iterate", e))? {
                let (k, v) = item.map_err(|e| db_err(&self.path, "iterate", e))?;
                let rec = decode(&self.path, k.value(), v.value())?;
                out.push(rec.info(k.value()));
            }
            Ok(out)
        })
    }

    /// The set of ids in use (for the orphan sweep).
    pub fn ids(&self) -> Result<HashSet<u64>> {
        self.read(|t| {
            let mut out = HashSet::new();
            for item in t.iter().map_err(|e| db_err(&self.path, "iterate", e))? {
                let (k, v) = item.map_err(|e| db_err(&self.path, "iterate", e))?;
                out.insert(decode(&self.path, k.value(), v.value())?.id);
            }
            Ok(out)
        })
    }
}

fn decode(path: &Path, key: &str, bytes: &[u8]) -> Result<Record> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(path, key, e.to_string()))
}

fn get_record(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    path: &Path,
    key: &str,
) -> Result<Record> {
    match t.get(key).map_err(|e| db_err(path, "get", e))? {
        Some(v) => decode(path, key, v.value()),
        None => Err(Error::not_found(key)),
    }
}

fn try_record(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    path: &Path,
    key: &str,
) -> Result<Option<Record>> {
    match get_record(t, path, key) {
        Ok(r) => Ok(Some(r)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn snapshot_of(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    path: &Path,
    key: &str,
) -> Result<Snapshot> {
    let rec = get_record(t, path, key)?;
    let mut parent_ids = Vec::new();
    let mut parent = rec.parent.clone();
    while !parent.is_empty() {
        if parent_ids.len() > MAX_CHAIN {
            return Err(corrupt(path, key, "parent chain too long or cyclic"));
        }
        let p = get_record(t, path, &parent).map_err(|e| match e {
            Error::NotFound { .. } => corrupt(path, key, format!("missing parent {parent:?}")),
            other => other,
        })?;
        parent_ids.push(p.id);
        parent = p.parent;
    }
    Ok(Snapshot {
        id: rec.id,
        kind: rec.kind,
        parent_ids,
    })
}

fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid(key, "empty key"));
    }
    Ok(())
}

fn validate_labels(key: &str, labels: &Labels) -> Result<()> {
    for (k, v) in labels {
        if k.is_empty() {
            return Err(Error::invalid(key, "empty label key"));
        }
        if k.len() + v.len() > MAX_LABEL_SIZE {
            return Err(Error::invalid(
                key,
                format!("label {k:?} exceeds {MAX_LABEL_SIZE} bytes"),
            ));
        }
    }
    Ok(())
}

impl WriteTx {
    fn err(&self, op: &'static str) -> impl Fn(redb::TableError) -> Error + '_ {
        move |e| db_err(&self.path, op, e)
    }

    fn serr(&self, op: &'static str) -> impl Fn(redb::StorageError) -> Error + '_ {
        move |e| db_err(&self.path, op, e)
    }

    /// Creates the tables and checks/records the schema version.
    fn init_schema(&self) -> Result<()> {
        let mut meta = self.tx.open_table(META).map_err(self.err("open meta"))?;
        let version = meta
            .get("schema_version")
            .map_err(self.serr("read version"))?
            .map(|v| v.value());
        match version {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION)
                    .map_err(self.serr("write version"))?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(Error::Unavailable {
                    reason: format!(
                        "{}: schema version {other}, this build understands {SCHEMA_VERSION}",
                        self.path.display()
                    ),
                });
            }
        }
        drop(meta);
        self.tx
            .open_table(SNAPSHOTS)
            .map_err(self.err("open snapshots"))?;
        self.tx
            .open_table(PARENTS)
            .map_err(self.err("open parents"))?;
        Ok(())
    }

    /// Commits the transaction.
    pub fn commit(self) -> Result<()> {
        let path = self.path;
        self.tx.commit().map_err(|e| db_err(&path, "commit", e))
    }

    fn put(&self, key: &str, rec: &Record) -> Result<()> {
        let bytes = serde_json::to_vec(rec).map_err(|e| corrupt(&self.path, key, e.to_string()))?;
        let mut t = self.tx.open_table(SNAPSHOTS).map_err(self.err("open"))?;
        t.insert(key, bytes.as_slice())
            .map_err(self.serr("insert"))?;
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Record>> {
        let t = self.tx.open_table(SNAPSHOTS).map_err(self.err("open"))?;
        try_record(&t, &self.path, key)
    }

    /// The snapshot of `key` as seen inside this transaction.
    pub fn snapshot(&self, key: &str) -> Result<Snapshot> {
        let t = self.tx.open_table(SNAPSHOTS).map_err(self.err("open"))?;
        snapshot_of(&t, &self.path, key)
    }

    fn next_id(&self) -> Result<u64> {
        let mut meta = self.tx.open_table(META).map_err(self.err("open meta"))?;
        let id = meta
            .get("next_id")
            .map_err(self.serr("read next_id"))?
            .map_or(1, |v| v.value());
        let next = id
            .checked_add(1)
            .ok_or_else(|| corrupt(&self.path, "next_id", "id sequence exhausted"))?;
        meta.insert("next_id", next)
            .map_err(self.serr("write next_id"))?;
        Ok(id)
    }

    fn has_children(&self, id: u64) -> Result<bool> {
        let t = self
            .tx
            .open_table(PARENTS)
            .map_err(self.err("open parents"))?;
        let mut r = t
            .range((id, 0)..=(id, u64::MAX))
            .map_err(self.serr("range parents"))?;
        Ok(r.next().is_some())
    }

    fn link(&self, parent_id: u64, child_id: u64, child: &str) -> Result<()> {
        let mut t = self
            .tx
            .open_table(PARENTS)
            .map_err(self.err("open parents"))?;
        t.insert((parent_id, child_id), child)
            .map_err(self.serr("insert parent link"))?;
        Ok(())
    }

    fn unlink(&self, parent_id: u64, child_id: u64) -> Result<()> {
        let mut t = self
            .tx
            .open_table(PARENTS)
            .map_err(self.err("open parents"))?;
        t.remove((parent_id, child_id))
            .map_err(self.serr("remove parent link"))?;
        Ok(())
    }

    /// Creates an Active or View record. Returns its snapshot (fresh id, parent chain).
    pub fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: &Labels,
        now: SystemTime,
    ) -> Result<Snapshot> {
        validate_key(key)?;
        validate_labels(key, labels)?;
        if kind == Kind::Committed {
            return Err(Error::invalid(
                key,
                format!("cannot create a {kind} snapshot"),
            ));
        }
        if self.get(key)?.is_some() {
            return Err(Error::exists(key));
        }
        let mut parent_id = None;
        if !parent.is_empty() {
            let p = self.get(parent)?.ok_or_else(|| Error::not_found(parent))?;
            if p.kind != Kind::Committed {
                return Err(Error::invalid(
                    parent,
                    format!("parent of {key:?} is not a committed snapshot"),
                ));
            }
            parent_id = Some(p.id);
        }
        let id = self.next_id()?;
        let rec = Record {
            id,
            kind,
            parent: parent.to_string(),
            labels: labels.clone(),
            created: now,
            updated: now,
            usage: None,
        };
        self.put(key, &rec)?;
        if let Some(pid) = parent_id {
            self.link(pid, id, key)?;
        }
        self.snapshot(key)
    }

    /// Turns active `key` into committed `name` (same id). Returns the id.
    pub fn commit_active(
        &self,
        key: &str,
        name: &str,
        usage: Usage,
        opts: &Opts,
        now: SystemTime,
    ) -> Result<u64> {
        validate_key(name)?;
        validate_labels(name, &opts.labels)?;
        if self.get(name)?.is_some() {
            return Err(Error::exists(name));
        }
        let mut rec = self.get(key)?.ok_or_else(|| Error::not_found(key))?;
        if rec.kind != Kind::Active {
            return Err(Error::precondition(
                key,
                format!(
                    "snapshot is {}, only an active snapshot can be committed",
                    rec.kind
                ),
            ));
        }
        let rebase = opts.parent.as_deref().unwrap_or("");
        if rec.parent != rebase && !rebase.is_empty() {
            if !rec.parent.is_empty() {
                return Err(Error::invalid(
                    key,
                    format!(
                        "cannot change parent {:?} to {rebase:?} on commit",
                        rec.parent
                    ),
                ));
            }
            rec.parent = rebase.to_string();
        }
        rec.kind = Kind::Committed;
        rec.created = now;
        rec.updated = now;
        rec.labels = opts.labels.clone();
        rec.usage = Some(usage);
        {
            let mut t = self.tx.open_table(SNAPSHOTS).map_err(self.err("open"))?;
            t.remove(key).map_err(self.serr("remove"))?;
        }
        if !rec.parent.is_empty() {
            let p = self
                .get(&rec.parent)?
                .ok_or_else(|| Error::not_found(rec.parent.clone()))?;
            if p.kind != Kind::Committed {
                return Err(Error::precondition(
                    rec.parent.clone(),
                    format!("parent of {name:?} is not committed"),
                ));
            }
            self.link(p.id, rec.id, name)?;
        }
        self.put(name, &rec)?;
        Ok(rec.id)
    }

    /// Removes `key`; FailedPrecondition while it has children. Returns (id, kind).
    pub fn remove(&self, key: &str) -> Result<(u64, Kind)> {
        let rec = self.get(key)?.ok_or_else(|| Error::not_found(key))?;
        if self.has_children(rec.id)? {
            return Err(Error::precondition(
                key,
                "cannot remove snapshot with child",
            ));
        }
        if !rec.parent.is_empty() {
            let p = self
                .get(&rec.parent)?
                .ok_or_else(|| corrupt(&self.path, key, "missing parent"))?;
            self.unlink(p.id, rec.id)?;
        }
        let mut t = self.tx.open_table(SNAPSHOTS).map_err(self.err("open"))?;
        t.remove(key).map_err(self.serr("remove"))?;
        Ok((rec.id, rec.kind))
    }

    /// Applies a label update (containerd `UpdateInfo`). Returns the new info.
    pub fn update(&self, info: &Info, fieldpaths: &[&str], now: SystemTime) -> Result<Info> {
        let key = info.name.as_str();
        let mut rec = self.get(key)?.ok_or_else(|| Error::not_found(key))?;
        if fieldpaths.is_empty() {
            rec.labels = info.labels.clone();
        } else {
            for path in fieldpaths {
                if let Some(label) = path.strip_prefix("labels.") {
                    match info.labels.get(label) {
                        Some(v) => {
                            rec.labels.insert(label.to_string(), v.clone());
                        }
                        None => {
                            rec.labels.remove(label);
                        }
                    }
                } else if *path == "labels" {
                    rec.labels = info.labels.clone();
                } else {
                    return Err(Error::invalid(
                        key,
                        format!("cannot update field {path:?}: only labels are mutable"),
                    ));
                }
            }
        }
        validate_labels(key, &rec.labels)?;
        rec.updated = now;
        self.put(key, &rec)?;
        Ok(rec.info(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn store() -> (tempfile::TempDir, MetaStore) {
        let tmp = tempfile::tempdir().unwrap();
        let m = MetaStore::open(tmp.path()).unwrap();
        (tmp, m)
    }

    fn write<T>(m: &MetaStore, f: impl FnOnce(&WriteTx) -> Result<T>) -> Result<T> {
        let s = m.session()?;
        let tx = s.begin_write()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    fn labels(k: &str, v: &str) -> Labels {
        [(k.to_string(), v.to_string())].into_iter().collect()
    }

    fn now() -> SystemTime {
        SystemTime::now()
    }

    fn committed(m: &MetaStore, name: &str, parent: &str) -> u64 {
        let key = format!("{name}-active");
        write(m, |tx| {
            tx.create(Kind::Active, &key, parent, &Labels::new(), now())
        })
        .unwrap();
        write(m, |tx| {
            tx.commit_active(&key, name, Usage::default(), &Opts::new(), now())
        })
        .unwrap()
    }

    #[test]
    fn create_enforces_kind_parent_and_uniqueness() {
        let (_t, m) = store();
        let e = write(&m, |tx| {
            tx.create(Kind::Committed, "x", "", &Labels::new(), now())
        });
        assert_eq!(e.unwrap_err().kind(), ErrorKind::InvalidArgument);
        let e = write(&m, |tx| {
            tx.create(Kind::Active, "", "", &Labels::new(), now())
        });
        assert_eq!(e.unwrap_err().kind(), ErrorKind::InvalidArgument);
        let e = write(&m, |tx| {
            tx.create(Kind::Active, "x", "nope", &Labels::new(), now())
        });
        assert_eq!(e.unwrap_err().kind(), ErrorKind::NotFound);
        write(&m, |tx| {
            tx.create(Kind::Active, "a", "", &Labels::new(), now())
        })
        .unwrap();
        let e = write(&m, |tx| {
            tx.create(Kind::View, "a", "", &Labels::new(), now())
        });
        assert_eq!(e.unwrap_err().kind(), ErrorKind::AlreadyExists);
        let e = write(&m, |tx| {
            tx.create(Kind::Active, "b", "a", &Labels::new(), now())
        });
        assert_eq!(
            e.unwrap_err().kind(),
            ErrorKind::InvalidArgument,
            "parent not committed"
        );
        let big = labels("k", &"v".repeat(MAX_LABEL_SIZE));
        let e = write(&m, |tx| tx.create(Kind::Active, "c", "", &big, now()));
        assert_eq!(e.unwrap_err().kind(), ErrorKind::InvalidArgument);
        // Nothing of the failed attempts was recorded.
        assert_eq!(m.session().unwrap().all().unwrap().len(), 1);
    }

    #[test]
    fn commit_keeps_id_replaces_labels_and_moves_the_parent_link() {
        let (_t, m) = store();
        let base = committed(&m, "base", "");
        let snap = write(&m, |tx| {
            tx.create(Kind::Active, "child", "base", &labels("old", "1"), now())
        })
        .unwrap();
        assert_eq!(snap.parent_ids, vec![base]);
        let id = write(&m, |tx| {
            tx.commit_active(
                "child",
                "child-c",
                Usage {
                    inodes: 3,
                    size: 4096,
                },
                &Opts::new().with_label("new", "2"),
                now(),
            )
        })
        .unwrap();
        assert_eq!(id, snap.id, "commit keeps the numeric id");
        let s = m.session().unwrap();
        let rec = s.record("child-c").unwrap();
        assert_eq!(rec.kind, Kind::Committed);
        assert_eq!(rec.labels, labels("new", "2"));
        assert_eq!(
            rec.usage,
            Some(Usage {
                inodes: 3,
                size: 4096
            })
        );
        assert_eq!(s.info("child").unwrap_err().kind(), ErrorKind::NotFound);
        drop(s);
        // The back-index now names the committed child: the parent is still pinned.
        let e = write(&m, |tx| tx.remove("base"));
        assert_eq!(e.unwrap_err().kind(), ErrorKind::FailedPrecondition);
        write(&m, |tx| tx.remove("child-c")).unwrap();
        write(&m, |tx| tx.remove("base")).unwrap();
        assert!(m.session().unwrap().ids().unwrap().is_empty());
    }

    #[test]
    fn commit_errors_and_rebase_rules() {
        let (_t, m) = store();
        committed(&m, "base", "");
        committed(&m, "other", "");
        write(&m, |tx| {
            tx.create(Kind::View, "v", "base", &Labels::new(), now())
        })
        .unwrap();
        let e = write(&m, |tx| {
            tx.commit_active("v", "v-c", Usage::default(), &Opts::new(), now())
        });
        assert_eq!(e.unwrap_err().kind(), ErrorKind::FailedPrecondition);
        let e = write(&m, |tx| {
            tx.commit_active("missing", "m-c", Usage::default(), &Opts::new(), now())
        });
        assert_eq!(e.unwrap_err().kind(), ErrorKind::NotFound);
        write(&m, |tx| {
            tx.create(Kind::Active, "a", "base", &Labels::new(), now())
        })
        .unwrap();
        let e = write(&m, |tx| {
            tx.commit_active("a", "base", Usage::default(), &Opts::new(), now())
        });
        assert_eq!(e.unwrap_err().kind(), ErrorKind::AlreadyExists);
        let e = write(&m, |tx| {
            tx.commit_active(
                "a",
                "a-c",
                Usage::default(),
                &Opts::new().with_parent("other"),
                now(),
            )
        });
        assert_eq!(
            e.unwrap_err().kind(),
            ErrorKind::InvalidArgument,
            "base -> other"
        );
        write(&m, |tx| {
            tx.commit_active(
                "a",
                "a-c",
                Usage::default(),
                &Opts::new().with_parent(""),
                now(),
            )
        })
        .unwrap();
        assert_eq!(m.session().unwrap().info("a-c").unwrap().parent, "base");
        // Rebase of a parentless snapshot onto a committed parent.
        write(&m, |tx| {
            tx.create(Kind::Active, "np", "", &Labels::new(), now())
        })
        .unwrap();
        write(&m, |tx| {
            tx.commit_active(
                "np",
                "np-c",
                Usage::default(),
                &Opts::new().with_parent("a-c"),
                now(),
            )
        })
        .unwrap();
        let s = m.session().unwrap();
        let snap = s.snapshot("np-c").unwrap();
        let a = s.record("a-c").unwrap().id;
        let b = s.record("base").unwrap().id;
        assert_eq!(snap.parent_ids, vec![a, b], "nearest parent first");
        drop(s);
        let e = write(&m, |tx| tx.remove("a-c"));
        assert_eq!(
            e.unwrap_err().kind(),
            ErrorKind::FailedPrecondition,
            "rebase linked"
        );
    }

    #[test]
    fn update_changes_labels_only() {
        let (_t, m) = store();
        write(&m, |tx| {
            tx.create(Kind::Active, "a", "", &labels("l1", "v1"), now())
        })
        .unwrap();
        let mut info = m.session().unwrap().info("a").unwrap();
        info.labels.insert("l2".into(), "v2".into());
        info.labels.remove("l1");
        let out = write(&m, |tx| {
            tx.update(&info, &["labels.l2", "labels.l1"], now())
        })
        .unwrap();
        assert_eq!(out.labels, labels("l2", "v2"));
        let e = write(&m, |tx| tx.update(&info, &["kind"], now()));
        assert_eq!(e.unwrap_err().kind(), ErrorKind::InvalidArgument);
        info.name = "nope".into();
        let e = write(&m, |tx| tx.update(&info, &[], now()));
        assert_eq!(e.unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn ids_are_never_reused_after_commit() {
        let (_t, m) = store();
        let a = committed(&m, "a", "");
        write(&m, |tx| tx.remove("a")).unwrap();
        let b = committed(&m, "b", "");
        assert!(b > a, "{b} <= {a}");
    }

    #[test]
    fn corrupt_record_is_internal() {
        let (t, m) = store();
        {
            let db = redb::Database::create(t.path().join(DB_FILE)).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(SNAPSHOTS)
                .unwrap()
                .insert("bad", b"{not json".as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let e = m.session().unwrap().info("bad").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal);
    }
}
