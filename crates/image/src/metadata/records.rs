//! Front ends' own records, kept in the store's metadata file beside images and leases.
//!
//! A front end (a CLI, a daemon) has records of its own — containers, say — that should live
//! and die with the store, be written atomically and be seen by every process that opens the
//! root. [`RecordStore`] gives it a **namespaced key-value table** in the same redb file:
//!
//! - one redb table, `records`, whose keys are `<namespace>/<key>` and whose values are opaque
//!   bytes (the front end picks the encoding; [`RecordStore::get_json`] and friends help with
//!   JSON);
//! - a namespace is a short name (`[a-z0-9._-]`, 1–64 characters, e.g. `berth.containers`),
//!   so two front ends never see each other's keys; a key is any non-empty UTF-8 text up to
//!   [`MAX_KEY_LEN`] bytes without NUL, so a front end can build its own prefixes
//!   (`container/<id>`, `name/<name>`) and list them with [`RecordStore::list`];
//! - [`RecordStore::update`] runs a closure in **one write transaction** ([`RecordTxn`]):
//!   several keys change together or not at all (a record and its unique-name index, for
//!   example), and a put-if-absent ([`RecordTxn::insert`]) is a real compare-and-set.
//!
//! # Concurrency
//! Write transactions are serialised across threads and processes (redb's `MultiWriter`
//! mode, see [`super`]); a read ([`RecordStore::get`], [`RecordStore::list`]) sees the last
//! committed state of any process and never a half-done transaction. Two writers racing to
//! [`RecordTxn::insert`] the same key: exactly one succeeds, the other gets
//! [`Error::RecordExists`]. The closure given to [`RecordStore::update`] must not call back
//! into any store of the same file (that would wait for its own transaction).
//!
//! # Schema
//! The `records` table is created when a file is opened; files written before it existed gain
//! it on their next open. Older code ignores the table, so adding it did not change
//! [`super::SCHEMA_VERSION`].

use std::ops::Bound;

use redb::{ReadableDatabase, ReadableTable};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{MetadataDb, RECORDS};
use crate::error::{Error, Result};

/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// The longest namespace accepted, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;
/// The largest value accepted, in bytes (records are metadata, not blobs).
pub const MAX_VALUE_LEN: usize = 16 << 20;

/// The records of one namespace in a store's metadata file. Cheap to clone; every clone (and
/// every process) sees the same records.
#[derive(Debug, Clone)]
pub struct RecordStore {
    db: MetadataDb,
    namespace: String,
}

fn check_namespace(ns: &str) -> Result<()> {
    if ns.is_empty() || ns.len() > MAX_NAMESPACE_LEN {
        return Err(Error::invalid(
            format!("record namespace {ns:?}"),
            format!("must be 1 to {MAX_NAMESPACE_LEN} bytes"),
        ));
    }
    if !ns
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err(Error::invalid(
            format!("record namespace {ns:?}"),
            "only a-z, 0-9, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

fn check_key(ns: &str, key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.contains('\0') {
        return Err(Error::invalid(
            format!("record key {ns}/{key:?}"),
            format!("must be 1 to {MAX_KEY_LEN} bytes without NUL"),
        ));
    }
    Ok(())
}

fn check_value(ns: &str, key: &str, value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::invalid(
            format!("record {ns}/{key}"),
            format!(
                "value of {} bytes is larger than {MAX_VALUE_LEN}",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// The full table key of `key` in `ns`.
fn full_key(ns: &str, key: &str) -> String {
    format!("{ns}/{key}")
}

impl RecordStore {
    /// The records of `namespace` in `db`.
    ///
    /// # Errors
    /// `InvalidArgument` for a namespace that is empty, longer than [`MAX_NAMESPACE_LEN`] or
    /// holds characters other than `a-z 0-9 . _ -`.
    pub fn new(db: MetadataDb, namespace: &str) -> Result<Self> {
        check_namespace(namespace)?;
        Ok(RecordStore {
            db,
            namespace: namespace.to_owned(),
        })
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The value of `key`.
    ///
    /// # Errors
    /// `NotFound` ([`Error::RecordNotFound`]); `InvalidArgument` for a bad key; `Database`.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        check_key(&self.namespace, key)?;
        let txn = self
            .db
            .inner
            .db
            .begin_read()
            .map_err(|e| self.db.db_err("begin read", e))?;
        let t = txn
            .open_table(RECORDS)
            .map_err(|e| self.db.db_err("open records", e))?;
        let v = t
            .get(full_key(&self.namespace, key).as_str())
            .map_err(|e| self.db.db_err("get record", e))?;
        match v {
            Some(v) => Ok(v.value().to_vec()),
            None => Err(self.not_found(key)),
        }
    }

    /// The value of `key` decoded from JSON.
    ///
    /// # Errors
    /// As [`RecordStore::get`], plus `Json` (InvalidArgument) if the value is not a `T`.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let bytes = self.get(key)?;
        decode(&self.namespace, key, &bytes)
    }

    /// Every `(key, value)` whose key starts with `prefix` (`""` for all), in key order, read
    /// in one read transaction (a consistent view).
    ///
    /// # Errors
    /// `InvalidArgument` for a prefix with NUL; `Database`.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        if prefix.contains('\0') {
            return Err(Error::invalid(
                format!("record prefix {prefix:?}"),
                "must not contain NUL",
            ));
        }
        let txn = self
            .db
            .inner
            .db
            .begin_read()
            .map_err(|e| self.db.db_err("begin read", e))?;
        let t = txn
            .open_table(RECORDS)
            .map_err(|e| self.db.db_err("open records", e))?;
        collect_prefix(&self.db, &t, &self.namespace, prefix)
    }

    /// [`RecordStore::list`] with every value decoded from JSON.
    ///
    /// # Errors
    /// As [`RecordStore::list`], plus `Json` for the first value that is not a `T`.
    pub fn list_json<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(String, T)>> {
        self.list(prefix)?
            .into_iter()
            .map(|(k, v)| decode(&self.namespace, &k, &v).map(|t| (k, t)))
            .collect()
    }

    /// Stores `value` under `key` unless the key exists (put-if-absent).
    ///
    /// # Errors
    /// `AlreadyExists` ([`Error::RecordExists`]); `InvalidArgument` for a bad key or a value
    /// over [`MAX_VALUE_LEN`]; `Database`.
    pub fn insert(&self, key: &str, value: &[u8]) -> Result<()> {
        self.update(|t| t.insert(key, value))
    }

    /// Stores `value` under `key`, replacing any value; returns whether one was replaced.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad key or a value over [`MAX_VALUE_LEN`]; `Database`.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<bool> {
        self.update(|t| t.put(key, value))
    }

    /// Replaces the value of an existing `key`.
    ///
    /// # Errors
    /// `NotFound` ([`Error::RecordNotFound`]) if it does not exist; otherwise as
    /// [`RecordStore::put`].
    pub fn replace(&self, key: &str, value: &[u8]) -> Result<()> {
        self.update(|t| t.replace(key, value))
    }

    /// Removes `key`.
    ///
    /// # Errors
    /// `NotFound` ([`Error::RecordNotFound`]); `InvalidArgument` for a bad key; `Database`.
    pub fn delete(&self, key: &str) -> Result<()> {
        self.update(|t| {
            if t.remove(key)? {
                Ok(())
            } else {
                Err(t.not_found(key))
            }
        })
    }

    /// Runs `f` in one write transaction over this namespace and commits if it returns `Ok`;
    /// on `Err` nothing `f` did is kept. Other writers (threads or processes) wait meanwhile,
    /// so keep `f` short, and never touch the same metadata file from inside it.
    ///
    /// # Errors
    /// What `f` returns, or `Database` (converted into `E`) if the transaction cannot begin
    /// or commit.
    pub fn update<R, E: From<Error>>(
        &self,
        f: impl FnOnce(&mut RecordTxn<'_>) -> std::result::Result<R, E>,
    ) -> std::result::Result<R, E> {
        let txn = self
            .db
            .inner
            .db
            .begin_write()
            .map_err(|e| self.db.db_err("begin write", e))?;
        let r = {
            let table = txn
                .open_table(RECORDS)
                .map_err(|e| self.db.db_err("open records", e))?;
            let mut rt = RecordTxn {
                db: &self.db,
                namespace: &self.namespace,
                table,
            };
            f(&mut rt)?
        };
        txn.commit().map_err(|e| self.db.db_err("commit", e))?;
        Ok(r)
    }

    fn not_found(&self, key: &str) -> Error {
        Error::RecordNotFound {
            namespace: self.namespace.clone(),
            key: key.to_owned(),
        }
    }
}

/// The records of one namespace inside a write transaction (see [`RecordStore::update`]).
/// Reads see this transaction's own writes.
pub struct RecordTxn<'a> {
    db: &'a MetadataDb,
    namespace: &'a str,
    table: redb::Table<'a, &'static str, &'static [u8]>,
}

impl std::fmt::Debug for RecordTxn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordTxn")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl RecordTxn<'_> {
    fn not_found(&self, key: &str) -> Error {
        Error::RecordNotFound {
            namespace: self.namespace.to_owned(),
            key: key.to_owned(),
        }
    }

    /// The value of `key`, if any.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad key; `Database`.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        check_key(self.namespace, key)?;
        let v = self
            .table
            .get(full_key(self.namespace, key).as_str())
            .map_err(|e| self.db.db_err("get record", e))?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    /// The value of `key` decoded from JSON, if any.
    ///
    /// # Errors
    /// As [`RecordTxn::get`], plus `Json` if the value is not a `T`.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.get(key)?
            .map(|b| decode(self.namespace, key, &b))
            .transpose()
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// `InvalidArgument` for a prefix with NUL; `Database`.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        if prefix.contains('\0') {
            return Err(Error::invalid(
                format!("record prefix {prefix:?}"),
                "must not contain NUL",
            ));
        }
        collect_prefix(self.db, &self.table, self.namespace, prefix)
    }

    fn write(&mut self, key: &str, value: &[u8]) -> Result<bool> {
        check_key(self.namespace, key)?;
        check_value(self.namespace, key, value)?;
        let old = self
            .table
            .insert(full_key(self.namespace, key).as_str(), value)
            .map_err(|e| self.db.db_err("insert record", e))?;
        Ok(old.is_some())
    }

    /// Stores `value` under `key` unless it exists (put-if-absent).
    ///
    /// # Errors
    /// `AlreadyExists` ([`Error::RecordExists`]); `InvalidArgument`; `Database`.
    pub fn insert(&mut self, key: &str, value: &[u8]) -> Result<()> {
        if self.get(key)?.is_some() {
            return Err(Error::RecordExists {
                namespace: self.namespace.to_owned(),
                key: key.to_owned(),
            });
        }
        self.write(key, value).map(|_| ())
    }

    /// Stores `value` under `key`, replacing any value; returns whether one was replaced.
    ///
    /// # Errors
    /// `InvalidArgument`; `Database`.
    pub fn put(&mut self, key: &str, value: &[u8]) -> Result<bool> {
        self.write(key, value)
    }

    /// Replaces the value of an existing `key`.
    ///
    /// # Errors
    /// `NotFound` ([`Error::RecordNotFound`]); `InvalidArgument`; `Database`.
    pub fn replace(&mut self, key: &str, value: &[u8]) -> Result<()> {
        if self.get(key)?.is_none() {
            return Err(self.not_found(key));
        }
        self.write(key, value).map(|_| ())
    }

    /// JSON-encodes `value` and [`RecordTxn::insert`]s it.
    ///
    /// # Errors
    /// As [`RecordTxn::insert`], plus `Json` if `value` cannot be encoded.
    pub fn insert_json<T: Serialize>(&mut self, key: &str, value: &T) -> Result<()> {
        let bytes = encode(self.namespace, key, value)?;
        self.insert(key, &bytes)
    }

    /// JSON-encodes `value` and [`RecordTxn::put`]s it.
    ///
    /// # Errors
    /// As [`RecordTxn::put`], plus `Json` if `value` cannot be encoded.
    pub fn put_json<T: Serialize>(&mut self, key: &str, value: &T) -> Result<bool> {
        let bytes = encode(self.namespace, key, value)?;
        self.put(key, &bytes)
    }

    /// Removes `key`; returns whether it existed.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad key; `Database`.
    pub fn remove(&mut self, key: &str) -> Result<bool> {
        check_key(self.namespace, key)?;
        let old = self
            .table
            .remove(full_key(self.namespace, key).as_str())
            .map_err(|e| self.db.db_err("remove record", e))?;
        Ok(old.is_some())
    }
}

fn collect_prefix(
    db: &MetadataDb,
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    ns: &str,
    prefix: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let start = full_key(ns, prefix);
    let ns_len = ns.len() + 1;
    let mut out = Vec::new();
    let range = table
        .range::<&str>((Bound::Included(start.as_str()), Bound::Unbounded))
        .map_err(|e| db.db_err("list records", e))?;
    for row in range {
        let (k, v) = row.map_err(|e| db.db_err("list records", e))?;
        let full = k.value();
        if !full.starts_with(start.as_str()) {
            break;
        }
        out.push((full[ns_len..].to_owned(), v.value().to_vec()));
    }
    Ok(out)
}

fn encode<T: Serialize>(ns: &str, key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|source| Error::Json {
        what: format!("record {ns}/{key}"),
        source,
    })
}

fn decode<T: DeserializeOwned>(ns: &str, key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json {
        what: format!("record {ns}/{key}"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;
    use crate::error::ErrorKind;

    fn tmp() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("berth-records-")
            .tempdir()
            .unwrap()
    }

    fn store(dir: &tempfile::TempDir, ns: &str) -> RecordStore {
        RecordStore::new(MetadataDb::open(&dir.path().join("m.redb")).unwrap(), ns).unwrap()
    }

    #[test]
    fn insert_get_replace_delete() {
        let dir = tmp();
        let s = store(&dir, "test.records");
        s.insert("a", b"1").unwrap();
        let err = s.insert("a", b"2").unwrap_err();
        assert!(
            matches!(&err, Error::RecordExists { namespace, key } if namespace == "test.records" && key == "a")
        );
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(s.get("a").unwrap(), b"1");
        s.replace("a", b"3").unwrap();
        assert_eq!(s.get("a").unwrap(), b"3");
        assert_eq!(
            s.replace("b", b"x").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert!(!s.put("b", b"4").unwrap());
        assert!(s.put("b", b"5").unwrap());
        s.delete("a").unwrap();
        let err = s.get("a").unwrap_err();
        assert!(matches!(&err, Error::RecordNotFound { key, .. } if key == "a"));
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(s.delete("a").unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(s.get("b").unwrap(), b"5");
    }

    #[test]
    fn bad_namespaces_keys_and_values_are_refused() {
        let dir = tmp();
        let db = MetadataDb::open(&dir.path().join("m.redb")).unwrap();
        for ns in ["", "Upper", "a/b", "spa ce", &"x".repeat(65)] {
            assert_eq!(
                RecordStore::new(db.clone(), ns).unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{ns:?}"
            );
        }
        let s = RecordStore::new(db, "ok").unwrap();
        for key in ["", "a\0b", &"k".repeat(MAX_KEY_LEN + 1)] {
            assert_eq!(
                s.insert(key, b"").unwrap_err().kind(),
                ErrorKind::InvalidArgument
            );
            assert_eq!(s.get(key).unwrap_err().kind(), ErrorKind::InvalidArgument);
        }
        let big = vec![0u8; MAX_VALUE_LEN + 1];
        assert_eq!(
            s.put("big", &big).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            s.list("a\0").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert!(s.list("").unwrap().is_empty());
    }

    #[test]
    fn namespaces_and_prefixes_are_separate() {
        let dir = tmp();
        let a = store(&dir, "a");
        let ab = store(&dir, "a.b");
        a.insert("container/1", b"one").unwrap();
        a.insert("container/2", b"two").unwrap();
        a.insert("containers", b"not a container").unwrap();
        a.insert("name/web", b"1").unwrap();
        ab.insert("container/9", b"other namespace").unwrap();
        let keys = |v: Vec<(String, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            keys(a.list("container/").unwrap()),
            ["container/1", "container/2"]
        );
        assert_eq!(
            keys(a.list("").unwrap()),
            ["container/1", "container/2", "containers", "name/web"]
        );
        assert_eq!(keys(ab.list("").unwrap()), ["container/9"]);
        assert_eq!(
            a.get("container/9").unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn a_failed_transaction_keeps_nothing() {
        let dir = tmp();
        let s = store(&dir, "txn");
        s.insert("name/web", b"c1").unwrap();
        // A record plus its unique name: the name is taken, so the record is not kept either.
        let err = s
            .update(|t| {
                t.insert("container/c2", b"{}")?;
                assert_eq!(t.get("container/c2")?.as_deref(), Some(&b"{}"[..]));
                t.insert("name/web", b"c2")
            })
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(
            s.get("container/c2").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(s.get("name/web").unwrap(), b"c1");
        // A caller's own error type aborts too.
        #[derive(Debug)]
        enum Mine {
            Store(#[allow(dead_code)] Error),
            Refused,
        }
        impl From<Error> for Mine {
            fn from(e: Error) -> Self {
                Mine::Store(e)
            }
        }
        let r: std::result::Result<(), Mine> = s.update(|t| {
            t.put("x", b"1")?;
            Err(Mine::Refused)
        });
        assert!(matches!(r, Err(Mine::Refused)));
        assert!(matches!(
            s.update(|t| t.remove("nope").map_err(Mine::from)),
            Ok(false)
        ));
        assert_eq!(s.get("x").unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn json_helpers_round_trip() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Rec {
            id: String,
            n: u32,
        }
        let dir = tmp();
        let s = store(&dir, "json");
        let r = Rec {
            id: "c1".into(),
            n: 7,
        };
        s.update(|t| t.insert_json("c/1", &r)).unwrap();
        assert_eq!(s.get_json::<Rec>("c/1").unwrap(), r);
        assert_eq!(s.list_json::<Rec>("c/").unwrap(), [("c/1".to_owned(), r)]);
        s.put("c/2", b"not json").unwrap();
        assert_eq!(
            s.get_json::<Rec>("c/2").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert!(s.list_json::<Rec>("c/").is_err());
    }

    #[test]
    fn concurrent_writers_insert_a_key_exactly_once() {
        let dir = tmp();
        let s = store(&dir, "race");
        let threads = 8;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let s = s.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    // Each also writes its own key, read-modify-writes a counter, and tries the
                    // shared unique name.
                    s.insert(&format!("own/{i}"), b"x").unwrap();
                    s.update(|t| {
                        let n = t
                            .get("counter")?
                            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
                        t.put("counter", &(n + 1).to_le_bytes()).map(|_| ())
                    })
                    .unwrap();
                    s.insert("name/shared", i.to_string().as_bytes())
                })
            })
            .collect();
        let results: Vec<Result<()>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(r.kind(), ErrorKind::AlreadyExists);
        }
        assert_eq!(s.list("own/").unwrap().len(), threads);
        assert_eq!(
            s.get("counter").unwrap(),
            u64::try_from(threads).unwrap().to_le_bytes()
        );
    }

    #[test]
    fn records_survive_reopen_and_the_table_is_added_to_old_files() {
        let dir = tmp();
        let path = dir.path().join("m.redb");
        // A file as written before the records table existed: schema + the fixed tables.
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(super::super::SCHEMA)
                .unwrap()
                .insert("version", super::super::SCHEMA_VERSION)
                .unwrap();
            for def in [
                super::super::CONTENT,
                super::super::IMAGES,
                super::super::LEASES,
            ] {
                txn.open_table(def).unwrap();
            }
            txn.commit().unwrap();
        }
        {
            let s = RecordStore::new(MetadataDb::open(&path).unwrap(), "keep").unwrap();
            assert!(s.list("").unwrap().is_empty());
            s.insert("k", b"v").unwrap();
        }
        let db = MetadataDb::open(&path).unwrap();
        assert_eq!(db.schema_version().unwrap(), super::super::SCHEMA_VERSION);
        assert_eq!(
            RecordStore::new(db, "keep").unwrap().get("k").unwrap(),
            b"v"
        );
    }
}
