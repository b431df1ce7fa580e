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
//! The database is opened once per handle in redb's `ConcurrencyMode::MultiWriter` (redb ≥
//! 4.5): any number of processes and handles may have it open; write transactions are
//! serialised across all of them (open-file-description locks, so two handles in one process
//! exclude each other too), reads run concurrently on MVCC snapshots. Directory work that
//! must be atomic with a record change (create's rename into place, the cleanup sweep) runs
//! inside the write transaction, which therefore acts as the root-wide critical section.
//!
//! `<root>/lock` serialises only the opening of a root (database creation and the schema
//! check), so two processes initialising a fresh root do not race. It is held exclusively
//! while a handle opens the root and not afterwards: open handles never block
//! each other through it.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

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

/// Handle on a root's metadata: the open database.
#[derive(Debug)]
pub(crate) struct MetaStore {
    db_path: PathBuf,
    db: Mutex<Option<Arc<redb::Database>>>,
}

/// Access to the database for one operation (keeps it open even across a `close`).
#[derive(Debug)]
pub(crate) struct Session {
    db: Arc<redb::Database>,
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
        let lock_path = root.join(LOCK_FILE);
        let db_path = root.join(DB_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|e| Error::io("open lock file", &lock_path, e))?;
        let flock =
            |op| rustix::fs::flock(&lock, op).map_err(|e| Error::io("flock", &lock_path, e.into()));
        flock(rustix::fs::FlockOperation::LockExclusive)?;
        let mut builder = redb::Database::builder();
        builder
            .set_cache_size(8 << 20)
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
        let db = builder.create(&db_path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => Error::Unavailable {
                reason: format!(
                    "{} is held exclusively by another process",
                    db_path.display()
                ),
            },
            e => db_err(&db_path, "open", e),
        })?;
        let store = MetaStore {
            db_path,
            db: Mutex::new(Some(Arc::new(db))),
        };
        // A file already at this schema needs no write: opening then costs no commit (and
        // no fsync), which every short-lived front-end process would otherwise pay.
        if !store.schema_ready()? {
            let session = store.session()?;
            let tx = session.begin_write()?;
            tx.init_schema()?;
            tx.commit()?;
        }
        flock(rustix::fs::FlockOperation::Unlock)?;
        Ok(store)
    }

    /// Whether the file records this build's schema version and has every table. A newer
    /// version is refused (Unavailable) here too, so nothing older writes to it.
    fn schema_ready(&self) -> Result<bool> {
        let session = self.session()?;
        let tx = session
            .db
            .begin_read()
            .map_err(|e| db_err(&self.db_path, "begin read", e))?;
        let version = match tx.open_table(META) {
            Ok(meta) => meta
                .get("schema_version")
                .map_err(|e| db_err(&self.db_path, "read schema version", e))?
                .map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(db_err(&self.db_path, "open meta", e)),
        };
        match version {
            Some(SCHEMA_VERSION) => {}
            Some(other) if other > SCHEMA_VERSION => {
                return Err(Error::Unavailable {
                    reason: format!(
                        "{}: schema version {other}, this build understands {SCHEMA_VERSION}",
                        self.db_path.display()
                    ),
                });
            }
            _ => return Ok(false),
        }
        let has = |r: std::result::Result<(), redb::TableError>| r.is_ok();
        Ok(has(tx.open_table(SNAPSHOTS).map(drop)) && has(tx.open_table(PARENTS).map(drop)))
    }

    /// The database for one operation. FailedPrecondition after [`MetaStore::close`].
    pub fn session(&self) -> Result<Session> {
        let db = self
            .db
            .lock()
            .map_err(|_| corrupt(&self.db_path, "", "metadata handle lock poisoned"))?
            .clone()
            .ok_or_else(|| {
                Error::precondition(self.db_path.display().to_string(), "snapshotter is closed")
            })?;
        Ok(Session {
            db,
            path: self.db_path.clone(),
        })
    }

    /// Closes the database once in-flight operations finish. Idempotent.
    pub fn close(&self) {
        if let Ok(mut db) = self.db.lock() {
            db.take();
        }
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
    #[cfg(test)]
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

    /// Every snapshot's key and record, in key order.
    pub fn all_records(&self) -> Result<Vec<(String, Record)>> {
        self.read(|t| {
            let mut out = Vec::new();
            for item in t.iter().map_err(|e| db_err(&self.path, "iterate", e))? {
                let (k, v) = item.map_err(|e| db_err(&self.path, "iterate", e))?;
                out.push((
                    k.value().to_string(),
                    decode(&self.path, k.value(), v.value())?,
                ));
            }
            Ok(out)
        })
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
