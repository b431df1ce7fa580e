//! The store's metadata: content labels, image records, leases and front ends' own records
//! ([`records`]) in **one** redb file, `<root>/metadata.redb`, with a schema-version table.
//!
//! # Sharing the file
//! redb lets a process open a database file only once, so every [`crate::content::ContentStore`]
//! of a process that names the same file shares one handle through a process-wide registry
//! ([`MetadataDb::open`]). Across processes the file is opened in redb's
//! `ConcurrencyMode::MultiWriter`: any number of processes may have it open, write transactions
//! are serialised by redb's byte-range locks, and readers see the last commit of any process.
//! If another process holds the file in an exclusive mode (an older redb, a tool), the open is
//! retried with backoff for a few seconds before failing with `Unavailable`.
//!
//! # Values
//! Keys are strings (a digest, an image name, a lease id); values are JSON documents, so records
//! can gain optional fields without a schema migration. The schema version changes only when a
//! record can no longer be read by older code.

pub mod images;
pub mod labels;
pub mod leases;
pub mod records;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

pub use images::{Descriptor, Image, ImageStore};
pub use leases::{Lease, LeaseManager, LeaseResource};
pub use records::{RecordStore, RecordTxn};

/// The newest schema version this code writes and understands.
pub const SCHEMA_VERSION: u64 = 1;

/// `schema`: `"version"` → the schema version.
pub(crate) const SCHEMA: TableDefinition<&str, u64> = TableDefinition::new("schema");
/// `content`: digest → JSON [`labels::ContentRecord`].
pub(crate) const CONTENT: TableDefinition<&str, &[u8]> = TableDefinition::new("content");
/// `images`: name → JSON [`Image`].
pub(crate) const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
/// `leases`: id → JSON [`Lease`].
pub(crate) const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");
/// `records`: `<namespace>/<key>` → a front end's bytes (see [`records`]). Added after schema
/// version 1 without a version change: older code never opens it.
pub(crate) const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

/// How long an open waits for another process that holds the file exclusively.
const OPEN_PATIENCE: Duration = Duration::from_secs(10);

/// A shared handle on the metadata file. Cloning is cheap; every clone of a process shares the
/// same redb handle.
#[derive(Clone)]
pub struct MetadataDb {
    inner: Arc<DbInner>,
}

struct DbInner {
    path: PathBuf,
    db: Database,
}

impl std::fmt::Debug for MetadataDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataDb")
            .field("path", &self.inner.path)
            .finish()
    }
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<DbInner>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Weak<DbInner>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

impl MetadataDb {
    /// Opens (creating if needed) the metadata file at `path`, sharing the handle with every
    /// other opener of the same file in this process.
    ///
    /// # Errors
    /// `Io` if the file's directory cannot be resolved, `Database` if redb refuses the file,
    /// `SchemaVersion` if a newer berth wrote it, `Unavailable` if another process holds it
    /// exclusively for longer than a few seconds.
    pub fn open(path: &Path) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .ok_or_else(|| Error::invalid(path.display().to_string(), "not a file path"))?;
        let canonical = dir
            .canonicalize()
            .map_err(|e| Error::io("canonicalize", dir, e))?
            .join(name);
        // The registry lock is held across the open so two threads never both open the file.
        let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(inner) = reg.get(&canonical).and_then(Weak::upgrade) {
            return Ok(MetadataDb { inner });
        }
        reg.retain(|_, w| w.strong_count() > 0);
        let db = open_with_retry(&canonical)?;
        let inner = Arc::new(DbInner {
            path: canonical.clone(),
            db,
        });
        let this = MetadataDb { inner };
        this.init_schema()?;
        reg.insert(canonical, Arc::downgrade(&this.inner));
        Ok(this)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The front-end records of `namespace` in this file (see [`records`]).
    ///
    /// # Errors
    /// `InvalidArgument` for a bad namespace (see [`RecordStore::new`]).
    pub fn records(&self, namespace: &str) -> Result<RecordStore> {
        RecordStore::new(self.clone(), namespace)
    }

    fn db_err(&self, op: &'static str, e: impl Into<redb::Error>) -> Error {
        Error::Database {
            path: self.inner.path.clone(),
            op,
            source: Box::new(e.into()),
        }
    }

    fn init_schema(&self) -> Result<()> {
        // Usually the file is set up already: check in a read transaction (no fsync).
        if let Ok(found) = self.schema_version()
            && found != 0
        {
            if found > SCHEMA_VERSION {
                return Err(Error::SchemaVersion {
                    path: self.inner.path.clone(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            if self.tables_exist() {
                return Ok(());
            }
        }
        let txn = self
            .inner
            .db
            .begin_write()
            .map_err(|e| self.db_err("begin write", e))?;
        {
            let mut schema = txn
                .open_table(SCHEMA)
                .map_err(|e| self.db_err("open schema", e))?;
            let found = schema
                .get("version")
                .map_err(|e| self.db_err("read schema", e))?
                .map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(Error::SchemaVersion {
                        path: self.inner.path.clone(),
                        found: v,
                        supported: SCHEMA_VERSION,
                    });
                }
                Some(_) => {}
                None => {
                    schema
                        .insert("version", SCHEMA_VERSION)
                        .map_err(|e| self.db_err("write schema", e))?;
                }
            }
            for def in [CONTENT, IMAGES, LEASES, RECORDS] {
                txn.open_table(def)
                    .map_err(|e| self.db_err("create table", e))?;
            }
        }
        txn.commit().map_err(|e| self.db_err("commit", e))
    }

    fn tables_exist(&self) -> bool {
        let Ok(txn) = self.inner.db.begin_read() else {
            return false;
        };
        [CONTENT, IMAGES, LEASES, RECORDS]
            .into_iter()
            .all(|def| txn.open_table(def).is_ok())
    }

    /// The schema version recorded in the file.
    ///
    /// # Errors
    /// `Database` on a redb failure.
    pub fn schema_version(&self) -> Result<u64> {
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(|e| self.db_err("begin read", e))?;
        let t = txn
            .open_table(SCHEMA)
            .map_err(|e| self.db_err("open schema", e))?;
        let v = t
            .get("version")
            .map_err(|e| self.db_err("read schema", e))?
            .map(|v| v.value())
            .unwrap_or(0);
        Ok(v)
    }

    /// Reads one JSON record.
    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>> {
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(|e| self.db_err("begin read", e))?;
        let t = txn
            .open_table(table)
            .map_err(|e| self.db_err("open table", e))?;
        let Some(v) = t.get(key).map_err(|e| self.db_err("get", e))? else {
            return Ok(None);
        };
        decode(key, v.value()).map(Some)
    }

    /// Reads every record of a table, in key order.
    pub(crate) fn scan<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<(String, T)>> {
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(|e| self.db_err("begin read", e))?;
        let t = txn
            .open_table(table)
            .map_err(|e| self.db_err("open table", e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.db_err("iterate", e))? {
            let (k, v) = row.map_err(|e| self.db_err("iterate", e))?;
            let key = k.value().to_owned();
            let rec = decode(&key, v.value())?;
            out.push((key, rec));
        }
        Ok(out)
    }

    /// Runs `f` on one table inside a write transaction; commits if `f` succeeds.
    pub(crate) fn update<R>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        f: impl FnOnce(&mut TableTxn<'_>) -> Result<R>,
    ) -> Result<R> {
        let txn = self
            .inner
            .db
            .begin_write()
            .map_err(|e| self.db_err("begin write", e))?;
        let r = {
            let t = txn
                .open_table(table)
                .map_err(|e| self.db_err("open table", e))?;
            let mut tt = TableTxn { db: self, table: t };
            f(&mut tt)?
        };
        txn.commit().map_err(|e| self.db_err("commit", e))?;
        Ok(r)
    }
}

/// One table opened inside a write transaction (see [`MetadataDb::update`]).
pub(crate) struct TableTxn<'a> {
    db: &'a MetadataDb,
    table: redb::Table<'a, &'static str, &'static [u8]>,
}

impl TableTxn<'_> {
    /// Reads a record.
    pub(crate) fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let Some(v) = self.table.get(key).map_err(|e| self.db.db_err("get", e))? else {
            return Ok(None);
        };
        decode(key, v.value()).map(Some)
    }

    /// Writes a record.
    pub(crate) fn put<T: Serialize>(&mut self, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|source| Error::Json {
            what: key.to_owned(),
            source,
        })?;
        self.table
            .insert(key, bytes.as_slice())
            .map_err(|e| self.db.db_err("insert", e))?;
        Ok(())
    }

    /// Removes a record; says whether it existed.
    pub(crate) fn remove(&mut self, key: &str) -> Result<bool> {
        let old = self
            .table
            .remove(key)
            .map_err(|e| self.db.db_err("remove", e))?;
        Ok(old.is_some())
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json {
        what: key.to_owned(),
        source,
    })
}

fn open_with_retry(path: &Path) -> Result<Database> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(5);
    loop {
        let res = Database::builder()
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            .set_cache_size(16 * 1024 * 1024)
            .create(path);
        match res {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if start.elapsed() < OPEN_PATIENCE => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(250));
            }
            Err(e) => {
                return Err(Error::Database {
                    path: path.to_owned(),
                    op: "open",
                    source: Box::new(e.into()),
                });
            }
        }
    }
}

/// Serde helpers for times as nanoseconds since the Unix epoch (compact and exact).
pub(crate) mod time_ns {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn to_ns(t: SystemTime) -> i128 {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        }
    }

    pub(crate) fn from_ns(ns: i128) -> SystemTime {
        let abs = ns.unsigned_abs();
        let d = Duration::new(
            u64::try_from(abs / 1_000_000_000).unwrap_or(u64::MAX),
            u32::try_from(abs % 1_000_000_000).unwrap_or(0),
        );
        if ns >= 0 {
            UNIX_EPOCH.checked_add(d).unwrap_or(UNIX_EPOCH)
        } else {
            UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH)
        }
    }

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i128(to_ns(*t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        i128::deserialize(d).map(from_ns)
    }

    /// The same for `Option<SystemTime>`.
    pub(crate) mod option {
        use std::time::SystemTime;

        use serde::{Deserialize, Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(
            t: &Option<SystemTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_some(&super::to_ns(*t)),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            Option::<i128>::deserialize(d).map(|o| o.map(super::from_ns))
        }
    }
}

/// A consistent view of every record, read in one transaction (used by GC).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Image records by name.
    pub images: Vec<Image>,
    /// Leases by id.
    pub leases: Vec<Lease>,
    /// Blob records by digest text.
    pub content: std::collections::BTreeMap<String, labels::ContentRecord>,
}

impl MetadataDb {
    /// Reads images, leases and blob records in one read transaction.
    ///
    /// # Errors
    /// `Database` or `Json` on a damaged file.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(|e| self.db_err("begin read", e))?;
        let mut snap = Snapshot::default();
        let rows = |def: TableDefinition<&str, &[u8]>,
                    f: &mut dyn FnMut(&str, &[u8]) -> Result<()>|
         -> Result<()> {
            let t = txn
                .open_table(def)
                .map_err(|e| self.db_err("open table", e))?;
            for row in t.iter().map_err(|e| self.db_err("iterate", e))? {
                let (k, v) = row.map_err(|e| self.db_err("iterate", e))?;
                f(k.value(), v.value())?;
            }
            Ok(())
        };
        rows(IMAGES, &mut |k, v| {
            snap.images.push(decode(k, v)?);
            Ok(())
        })?;
        rows(LEASES, &mut |k, v| {
            snap.leases.push(decode(k, v)?);
            Ok(())
        })?;
        rows(CONTENT, &mut |k, v| {
            snap.content.insert(k.to_owned(), decode(k, v)?);
            Ok(())
        })?;
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use berth_oci::Digest;

    use super::*;
    use crate::error::ErrorKind;

    fn tmp() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("berth-metadata-")
            .tempdir()
            .unwrap()
    }

    fn target(n: u8) -> Descriptor {
        Descriptor::new(
            berth_oci::media_type::OCI_MANIFEST,
            Digest::sha256(&[n]),
            n.into(),
        )
    }

    #[test]
    fn one_handle_per_file_per_process() {
        let dir = tmp();
        let path = dir.path().join("metadata.redb");
        let a = MetadataDb::open(&path).unwrap();
        // A second open in the same process shares the handle instead of failing.
        let b = MetadataDb::open(&dir.path().join(".").join("metadata.redb")).unwrap();
        assert!(Arc::ptr_eq(&a.inner, &b.inner));
        assert_eq!(a.schema_version().unwrap(), SCHEMA_VERSION);
        drop((a, b));
        // After the last handle is gone the file can be opened again.
        let c = MetadataDb::open(&path).unwrap();
        assert_eq!(c.schema_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tmp();
        let path = dir.path().join("metadata.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(SCHEMA)
                .unwrap()
                .insert("version", SCHEMA_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let err = MetadataDb::open(&path).unwrap_err();
        assert!(matches!(err, Error::SchemaVersion { found, .. } if found == SCHEMA_VERSION + 1));
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    }

    #[test]
    fn image_records_lifecycle_and_filters() {
        let dir = tmp();
        let images = ImageStore::new(MetadataDb::open(&dir.path().join("m.redb")).unwrap());
        let before = SystemTime::now();
        let mut img = Image::new("docker.io/library/busybox:latest", target(1));
        img.labels.insert("team".into(), "core".into());
        let created = images.create(img.clone()).unwrap();
        assert!(created.created >= before && created.created == created.updated);
        let err = images.create(img.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(images.get(&img.name).unwrap(), created);
        assert_eq!(images.get("nope").unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(
            images.create(Image::new("", target(1))).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );

        std::thread::sleep(Duration::from_millis(2));
        img.target = target(2);
        let updated = images.update(img.clone()).unwrap();
        assert_eq!(updated.created, created.created);
        assert!(updated.updated > created.updated);
        assert_eq!(updated.target, target(2));
        assert_eq!(
            images
                .update(Image::new("missing", target(3)))
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
        );
        images
            .put(Image::new("example.com/app:1", target(3)))
            .unwrap();
        let replaced = images
            .put(Image::new("example.com/app:1", target(4)))
            .unwrap();
        assert_eq!(replaced.target, target(4));

        let names = |f: &[&str]| -> Vec<String> {
            images
                .list(f)
                .unwrap()
                .into_iter()
                .map(|i| i.name)
                .collect()
        };
        assert_eq!(
            names(&[]),
            ["docker.io/library/busybox:latest", "example.com/app:1"]
        );
        assert_eq!(
            names(&["labels.team==core"]),
            ["docker.io/library/busybox:latest"]
        );
        assert_eq!(names(&["name~=^example\\.com/"]), ["example.com/app:1"]);
        assert_eq!(
            names(&[&format!("target.digest=={}", target(4).digest)]),
            ["example.com/app:1"]
        );
        images.delete("example.com/app:1").unwrap();
        assert_eq!(
            images.delete("example.com/app:1").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(names(&[]), ["docker.io/library/busybox:latest"]);
    }

    #[test]
    fn leases_lifecycle() {
        let dir = tmp();
        let leases = LeaseManager::new(MetadataDb::open(&dir.path().join("m.redb")).unwrap());
        let l = leases.create("imp", BTreeMap::new(), None).unwrap();
        assert_eq!(
            leases
                .create("imp", BTreeMap::new(), None)
                .unwrap_err()
                .kind(),
            ErrorKind::AlreadyExists
        );
        let d = Digest::sha256(b"x");
        leases
            .add_resource(&l.id, LeaseResource::Content(d.clone()))
            .unwrap();
        leases
            .add_resource(&l.id, LeaseResource::Content(d.clone()))
            .unwrap();
        leases
            .add_resource(&l.id, LeaseResource::Ingest("ref".into()))
            .unwrap();
        assert_eq!(leases.get("imp").unwrap().resources.len(), 2);
        leases
            .delete_resource(&l.id, &LeaseResource::Ingest("ref".into()))
            .unwrap();
        assert_eq!(
            leases
                .get("imp")
                .unwrap()
                .resources
                .into_iter()
                .collect::<Vec<_>>(),
            [LeaseResource::Content(d.clone())]
        );
        assert_eq!(
            leases
                .add_resource("nope", LeaseResource::Content(d))
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
        );
        let random = leases
            .create("", BTreeMap::new(), Some(SystemTime::now()))
            .unwrap();
        assert!(random.id.starts_with("lease-"));
        assert!(random.is_expired(SystemTime::now() + Duration::from_secs(1)));
        assert!(!l.is_expired(SystemTime::now()));
        assert_eq!(leases.list().unwrap().len(), 2);
        leases.delete("imp").unwrap();
        assert_eq!(
            leases.delete("imp").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(leases.list().unwrap(), [random]);
    }
}
