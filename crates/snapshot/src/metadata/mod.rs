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
use crate::types::{Info, Kind, Labels, Usage};

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

mod txn;

#[cfg(test)]
mod tests;
