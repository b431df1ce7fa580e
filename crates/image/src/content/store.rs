//! [`ContentStore`]: opening a root, ingests (writer, status, abort), blob access (info, read,
//! update, delete, walk) and verification.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use berth_oci::{Algorithm, Digest, Digester};

use super::filter::{Filter, label_field};
use super::ingest::{self, OnDisk};
use super::writer::{Writer, rehash};
use super::{BlobReader, Expected, Info, Status};
use crate::error::{Error, ErrorKind, Result};
use crate::metadata::labels::ContentRecord;
use crate::metadata::{ImageStore, LeaseManager, LeaseResource, MetadataDb};

/// How long the copy helpers wait for a ref locked by another writer.
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// A content store rooted at a directory. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct ContentStore {
    inner: Arc<Inner>,
    /// The lease this handle records its ingests and commits in (see [`ContentStore::leased`]).
    lease: Option<Arc<str>>,
}

struct Inner {
    root: PathBuf,
    db: MetadataDb,
}

impl std::fmt::Debug for ContentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentStore")
            .field("root", &self.inner.root)
            .field("lease", &self.lease)
            .finish()
    }
}

/// A blob whose bytes do not hash to its name (or cannot be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptBlob {
    /// The blob's name.
    pub digest: Digest,
    /// What its bytes hash to, if they could be read.
    pub actual: Option<Digest>,
    /// Why it is reported.
    pub reason: String,
}

/// The result of [`ContentStore::verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blobs checked.
    pub checked: u64,
    /// Bytes hashed.
    pub bytes: u64,
    /// Blobs that failed.
    pub corrupt: Vec<CorruptBlob>,
}

impl VerifyReport {
    /// Whether every blob checked out.
    pub fn is_ok(&self) -> bool {
        self.corrupt.is_empty()
    }
}

impl ContentStore {
    /// Opens the store at `root`, creating the directory layout and the metadata file if needed.
    ///
    /// Any number of stores (in this or other processes) may open the same root.
    ///
    /// # Errors
    /// `Io` if the directories cannot be made; `Database`/`SchemaVersion`/`Unavailable` from the
    /// metadata file (see [`MetadataDb::open`]).
    pub fn open(root: &Path) -> Result<Self> {
        for d in [root.to_path_buf(), root.join("blobs"), root.join("ingest")] {
            fs::create_dir_all(&d).map_err(|e| Error::io("mkdir", &d, e))?;
        }
        let root = root
            .canonicalize()
            .map_err(|e| Error::io("canonicalize", root, e))?;
        let db = MetadataDb::open(&root.join("metadata.redb"))?;
        Ok(ContentStore {
            inner: Arc::new(Inner { root, db }),
            lease: None,
        })
    }

    /// A handle on the same store that records, in the lease `lease_id`, every ingest it opens
    /// (as [`LeaseResource::Ingest`]) and every blob it commits or finds already stored (as
    /// [`LeaseResource::Content`], added **before** the blob is renamed into place), like
    /// containerd's lease in a context. A GC running at any moment then keeps what this handle
    /// wrote until the lease is deleted.
    ///
    /// The lease must exist when the handle is used (operations fail with `NotFound` if not).
    pub fn leased(&self, lease_id: &str) -> ContentStore {
        ContentStore {
            inner: self.inner.clone(),
            lease: Some(Arc::from(lease_id)),
        }
    }

    /// The lease this handle records in, if any.
    pub fn lease(&self) -> Option<&str> {
        self.lease.as_deref()
    }

    /// Records a resource in this handle's lease, if it has one.
    pub(crate) fn hold(&self, resource: LeaseResource) -> Result<()> {
        match &self.lease {
            Some(id) => self.leases().add_resource(id, resource),
            None => Ok(()),
        }
    }

    /// The store's root directory (canonical).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The shared metadata database.
    pub fn db(&self) -> &MetadataDb {
        &self.inner.db
    }

    /// The image records kept in this store's metadata file.
    pub fn images(&self) -> ImageStore {
        ImageStore::new(self.inner.db.clone())
    }

    /// The leases kept in this store's metadata file.
    pub fn leases(&self) -> LeaseManager {
        LeaseManager::new(self.inner.db.clone())
    }

    /// Where the blob `digest` lives (whether or not it exists). The digest type guarantees a
    /// plain file name, so the path never leaves the root.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.inner
            .root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    pub(crate) fn ingest_root(&self) -> PathBuf {
        self.inner.root.join("ingest")
    }

    fn ingest_dir(&self, r#ref: &str) -> PathBuf {
        self.ingest_root().join(ingest::dir_name(r#ref))
    }

    /// Opens the ingest named `ref`, resuming it if it exists.
    ///
    /// `expected` tells what the content will be: the digest picks the hashing algorithm (sha256
    /// by default) and, if the blob is already stored, makes this call fail fast with
    /// `AlreadyExists`; the size is recorded as the ingest's total.
    ///
    /// On resume the offset is the length of the data on disk; the digest state is the saved
    /// one (if any) plus the bytes written after it was saved. A damaged ingest (no readable
    /// `ref` or data) is recreated.
    ///
    /// # Errors
    /// - `InvalidArgument`: empty ref; or the ingest was started with another total or digest.
    /// - `AlreadyExists` ([`Error::BlobExists`]): the expected digest is already stored.
    /// - `Unavailable` ([`Error::RefLocked`]): another writer (any process) holds the ref.
    /// - `Io` on system failures.
    pub fn writer(&self, r#ref: &str, expected: Option<&Expected>) -> Result<Writer> {
        if r#ref.is_empty() {
            return Err(Error::invalid("ref", "a writer needs a non-empty ref"));
        }
        let none = Expected::default();
        let expected = expected.unwrap_or(&none);
        if let Some(d) = &expected.digest {
            // For a leased handle, "already there" must stay true until the lease holds it.
            let _fence = match self.lease {
                Some(_) => Some(self.gc_fence()?),
                None => None,
            };
            if self.exists(d) {
                self.hold(LeaseResource::Content(d.clone()))?;
                return Err(Error::BlobExists { digest: d.clone() });
            }
        }
        let dir = self.ingest_dir(r#ref);
        self.hold(LeaseResource::Ingest(r#ref.to_owned()))?;
        let lock = ingest::lock(&self.ingest_root(), &dir, r#ref)?;
        if let Some(disk) = ingest::read(&dir) {
            if disk.r#ref != r#ref {
                tracing::warn!(r#ref, found = %disk.r#ref, "ingest dir holds another ref; recreating");
            } else {
                check_agrees(r#ref, &disk, expected)?;
                match self.resume(&dir, disk, expected) {
                    Ok(parts) => return Ok(self.assemble(r#ref, dir, parts, lock)),
                    Err(e) => {
                        tracing::warn!(r#ref, error = %e, "cannot resume ingest; recreating");
                    }
                }
            }
        }
        let parts = self.create_ingest(&dir, r#ref, expected)?;
        Ok(self.assemble(r#ref, dir, parts, lock))
    }

    fn assemble(
        &self,
        r#ref: &str,
        dir: PathBuf,
        parts: Parts,
        lock: ingest::IngestLock,
    ) -> Writer {
        Writer {
            store: self.clone(),
            r#ref: r#ref.to_owned(),
            dir,
            data: parts.data,
            digester: parts.digester,
            checkpointed: parts.checkpointed,
            total: parts.total,
            expected: parts.expected,
            started_at: parts.started_at,
            updated_at: parts.updated_at,
            dirty: false,
            _lock: lock,
        }
    }

    fn resume(&self, dir: &Path, disk: OnDisk, expected: &Expected) -> Result<Parts> {
        let path = dir.join(ingest::DATA);
        let mut data =
            ingest::open_nofollow(&path, false, false).map_err(|e| Error::io("open", &path, e))?;
        let exp = disk.expected.clone().or_else(|| expected.digest.clone());
        let alg = exp
            .as_ref()
            .map(Digest::algorithm)
            .unwrap_or(Algorithm::Sha256);
        let data_len = data
            .metadata()
            .map_err(|e| Error::io("fstat", &path, e))?
            .len();
        // Continue from the saved hash state when it covers a prefix of the data; hash the
        // rest (everything, without a usable state).
        let saved = fs::read(dir.join(ingest::STATE))
            .ok()
            .and_then(|b| Digester::restore_state(alg, &b).ok())
            .filter(|d| d.len() <= data_len);
        let mut digester = saved.unwrap_or_else(|| Digester::new(alg));
        let checkpointed = digester.len();
        data.seek(SeekFrom::Start(digester.len()))
            .map_err(|e| Error::io("seek", &path, e))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = data
                .read(&mut buf)
                .map_err(|e| Error::io("read", &path, e))?;
            if n == 0 {
                break;
            }
            digester.update(&buf[..n]);
        }
        let total = disk.total.or(expected.size);
        if disk.total.is_none()
            && let Some(t) = total
        {
            ingest::write_atomic(dir, ingest::TOTAL, t.to_string().as_bytes())?;
        }
        if disk.expected.is_none()
            && let Some(d) = &exp
        {
            ingest::write_atomic(dir, ingest::EXPECTED, d.to_string().as_bytes())?;
        }
        Ok(Parts {
            data,
            digester,
            checkpointed,
            total,
            expected: exp,
            started_at: disk.started_at,
            updated_at: disk.updated_at,
        })
    }

    fn create_ingest(&self, dir: &Path, r#ref: &str, expected: &Expected) -> Result<Parts> {
        // Clear what a half-made or foreign ingest left (everything but the held lock).
        for name in [
            ingest::REF,
            ingest::DATA,
            ingest::TOTAL,
            ingest::EXPECTED,
            ingest::STARTED_AT,
            ingest::UPDATED_AT,
            ingest::STATE,
        ] {
            let p = dir.join(name);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("unlink", &p, e)),
            }
        }
        let now = SystemTime::now();
        let path = dir.join(ingest::DATA);
        let data =
            ingest::open_nofollow(&path, true, true).map_err(|e| Error::io("create", &path, e))?;
        ingest::write_time(dir, ingest::STARTED_AT, now)?;
        ingest::write_time(dir, ingest::UPDATED_AT, now)?;
        if let Some(t) = expected.size {
            ingest::write_atomic(dir, ingest::TOTAL, t.to_string().as_bytes())?;
        }
        if let Some(d) = &expected.digest {
            ingest::write_atomic(dir, ingest::EXPECTED, d.to_string().as_bytes())?;
        }
        // `ref` last: its presence marks a started ingest.
        ingest::write_atomic(dir, ingest::REF, r#ref.as_bytes())?;
        let alg = expected
            .digest
            .as_ref()
            .map(Digest::algorithm)
            .unwrap_or(Algorithm::Sha256);
        Ok(Parts {
            data,
            digester: Digester::new(alg),
            checkpointed: 0,
            total: expected.size,
            expected: expected.digest.clone(),
            started_at: now,
            updated_at: now,
        })
    }

    /// The status of the ingest named `ref` (read without taking its lock).
    ///
    /// # Errors
    /// `NotFound` ([`Error::IngestNotFound`]) if no such ingest exists.
    pub fn status(&self, r#ref: &str) -> Result<Status> {
        match ingest::read(&self.ingest_dir(r#ref)) {
            Some(d) if d.r#ref == r#ref => Ok(status_of(d)),
            _ => Err(Error::IngestNotFound {
                r#ref: r#ref.to_owned(),
            }),
        }
    }

    /// The statuses of all ingests, optionally filtered (containerd filter syntax over the
    /// fields `ref` and `expected`, e.g. `ref~=^layer-`), sorted by ref.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad filter; `Io` if the ingest directory cannot be listed.
    pub fn list_statuses(&self, filter: Option<&str>) -> Result<Vec<Status>> {
        let filter = Filter::parse(filter.as_slice())?;
        let mut out = Vec::new();
        for dir in ingest::list_dirs(&self.ingest_root())? {
            let Some(d) = ingest::read(&dir) else {
                continue;
            };
            let st = status_of(d);
            let keep = filter.matches(&|p: &[String]| match p {
                [f] if f == "ref" => Some(st.r#ref.clone()),
                [f] if f == "expected" => st.expected.as_ref().map(ToString::to_string),
                _ => None,
            });
            if keep {
                out.push(st);
            }
        }
        out.sort_by(|a, b| a.r#ref.cmp(&b.r#ref));
        Ok(out)
    }

    /// Removes the ingest named `ref` and its data.
    ///
    /// # Errors
    /// `NotFound` if there is no such ingest; `Unavailable` if a writer holds it; `Io`.
    pub fn abort(&self, r#ref: &str) -> Result<()> {
        let dir = self.ingest_dir(r#ref);
        let not_found = || Error::IngestNotFound {
            r#ref: r#ref.to_owned(),
        };
        if fs::symlink_metadata(&dir).is_err() {
            return Err(not_found());
        }
        let _lock = ingest::lock(&self.ingest_root(), &dir, r#ref)?;
        let started = ingest::read(&dir).is_some_and(|d| d.r#ref == r#ref);
        fs::remove_dir_all(&dir).map_err(|e| Error::io("remove", &dir, e))?;
        if started { Ok(()) } else { Err(not_found()) }
    }

    /// Whether the blob is stored.
    pub fn exists(&self, digest: &Digest) -> bool {
        fs::symlink_metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file())
    }

    /// What the store knows of a blob: size, times and labels.
    ///
    /// # Errors
    /// `NotFound` ([`Error::BlobNotFound`]); `Database` on a metadata failure.
    pub fn info(&self, digest: &Digest) -> Result<Info> {
        let meta = self.blob_meta(digest)?;
        let record = self.db().content_record(digest)?;
        Ok(info_of(digest.clone(), &meta, record))
    }

    fn blob_meta(&self, digest: &Digest) -> Result<fs::Metadata> {
        let path = self.blob_path(digest);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => Ok(m),
            Ok(_) => Err(Error::BlobNotFound {
                digest: digest.clone(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::BlobNotFound {
                digest: digest.clone(),
            }),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }

    /// Opens a blob for reading.
    ///
    /// # Errors
    /// `NotFound`; `Io`.
    pub fn reader(&self, digest: &Digest) -> Result<BlobReader> {
        let path = self.blob_path(digest);
        let file = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::BlobNotFound {
                    digest: digest.clone(),
                });
            }
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let meta = file.metadata().map_err(|e| Error::io("fstat", &path, e))?;
        if !meta.is_file() {
            return Err(Error::BlobNotFound {
                digest: digest.clone(),
            });
        }
        Ok(BlobReader {
            file,
            size: meta.len(),
            digest: digest.clone(),
        })
    }

    /// Reads a whole blob of at most `max` bytes (manifests, indexes, configs) and checks that
    /// its bytes hash to its name.
    ///
    /// # Errors
    /// `NotFound`; `FailedPrecondition` ([`Error::BlobTooLarge`] past `max`,
    /// [`Error::CorruptBlob`] if the bytes do not match); `Io`.
    pub fn read_all(&self, digest: &Digest, max: u64) -> Result<Vec<u8>> {
        let mut r = self.reader(digest)?;
        if r.size() > max {
            return Err(Error::BlobTooLarge {
                digest: digest.clone(),
                size: r.size(),
                max,
            });
        }
        let mut buf = Vec::with_capacity(usize::try_from(r.size()).unwrap_or(0));
        let path = self.blob_path(digest);
        (&mut r)
            .take(max.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| Error::io("read", &path, e))?;
        let actual = Digest::of(digest.algorithm(), &buf);
        if actual != *digest {
            return Err(Error::CorruptBlob {
                digest: digest.clone(),
                actual,
            });
        }
        Ok(buf)
    }

    /// Changes a blob's labels. With no `fieldpaths` (or `labels`) the labels are replaced by
    /// `info.labels`; `labels.<key>` sets that key from `info.labels`, or removes it when absent
    /// there. Other fields cannot change.
    ///
    /// # Errors
    /// `NotFound` if the blob is not stored; `InvalidArgument` for another field path;
    /// `Database`.
    pub fn update(&self, info: &Info, fieldpaths: &[&str]) -> Result<Info> {
        let meta = self.blob_meta(&info.digest)?;
        for fp in fieldpaths {
            if *fp != "labels" && !fp.starts_with("labels.") {
                return Err(Error::invalid(
                    format!("fieldpath {fp:?}"),
                    "only labels can be updated",
                ));
            }
        }
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let rec = self.db().modify_content_record(&info.digest, |cur| {
            let mut rec = cur.unwrap_or(ContentRecord {
                labels: BTreeMap::new(),
                created: mtime,
                updated: mtime,
            });
            apply_label_update(&mut rec.labels, &info.labels, fieldpaths);
            rec.updated = SystemTime::now();
            Ok(Some(rec))
        })?;
        Ok(info_of(info.digest.clone(), &meta, rec))
    }

    /// Removes a blob and its metadata record.
    ///
    /// Deleting content that images or leases still reference is the caller's business;
    /// [`ContentStore::gc`] deletes only what nothing reaches.
    ///
    /// # Errors
    /// `NotFound`; `Io`; `Database`.
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::BlobNotFound {
                    digest: digest.clone(),
                });
            }
            Err(e) => return Err(Error::io("unlink", &path, e)),
        }
        self.db().remove_content_record(digest)
    }

    /// Every stored blob's digest (unknown algorithms and stray files are skipped).
    ///
    /// # Errors
    /// `Io` if a directory cannot be listed.
    pub fn list_digests(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.inner.root.join("blobs").join(alg.as_str());
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("readdir", &dir, e)),
            };
            for ent in rd {
                let ent = ent.map_err(|e| Error::io("readdir", &dir, e))?;
                let Some(name) = ent.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if let Ok(d) = Digest::new(alg, &name) {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Calls `f` with the info of every blob that matches `filters` (containerd syntax over
    /// `digest`, `size` and `labels.<key>`; several strings are ORed, an empty list matches
    /// all), in digest order. An error from `f` stops the walk and is returned.
    ///
    /// # Errors
    /// `InvalidArgument` for a bad filter; `Io`; `Database`; or what `f` returns.
    pub fn walk(&self, filters: &[&str], mut f: impl FnMut(&Info) -> Result<()>) -> Result<()> {
        let filter = Filter::parse(filters)?;
        let records = self.db().content_records()?;
        for d in self.list_digests()? {
            let meta = match self.blob_meta(&d) {
                Ok(m) => m,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let info = info_of(d.clone(), &meta, records.get(&d.to_string()).cloned());
            let keep = filter.matches(&|p: &[String]| match p {
                [f] if f == "digest" => Some(info.digest.to_string()),
                [f] if f == "size" => Some(info.size.to_string()),
                _ => label_field(&info.labels, p),
            });
            if keep {
                f(&info)?;
            }
        }
        Ok(())
    }

    /// Re-hashes every blob and reports those whose bytes do not match their name.
    ///
    /// # Errors
    /// `Io` if the blob directories cannot be listed (unreadable blobs are reported, not
    /// returned as errors).
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for d in self.list_digests()? {
            let path = self.blob_path(&d);
            report.checked += 1;
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    report.checked -= 1; // deleted meanwhile
                    continue;
                }
                Err(e) => {
                    report.corrupt.push(CorruptBlob {
                        digest: d,
                        actual: None,
                        reason: format!("cannot open: {e}"),
                    });
                    continue;
                }
            };
            match rehash(&mut file, d.algorithm(), &path) {
                Ok(actual) => {
                    report.bytes += file.metadata().map(|m| m.len()).unwrap_or(0);
                    if actual != d {
                        report.corrupt.push(CorruptBlob {
                            digest: d,
                            actual: Some(actual),
                            reason: "content does not match its digest".into(),
                        });
                    }
                }
                Err(e) => report.corrupt.push(CorruptBlob {
                    digest: d,
                    actual: None,
                    reason: e.to_string(),
                }),
            }
        }
        Ok(report)
    }

    /// Copies `reader` into the store under `ref` and verifies it against `expected_digest`
    /// (and `expected_size` when known), reporting `progress(done, total)` as bytes land.
    ///
    /// Resumes an interrupted ingest of the same ref: the first `offset` bytes of `reader` are
    /// skipped (read and discarded). Waits (with backoff, up to ten minutes) while another
    /// writer holds the ref. `AlreadyExists` counts as success: the stored blob's info is
    /// returned. When the bytes fail verification the ingest is aborted, so a rerun starts
    /// clean.
    ///
    /// # Errors
    /// `FailedPrecondition` on a size or digest mismatch; `Unavailable` if the ref stays locked;
    /// `Io`; `Database`.
    pub fn ingest(
        &self,
        r#ref: &str,
        reader: impl Read,
        expected_digest: &Digest,
        expected_size: Option<u64>,
        labels: &BTreeMap<String, String>,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<Info> {
        let expected = Expected {
            digest: Some(expected_digest.clone()),
            size: expected_size,
        };
        let w = match self.open_writer_waiting(r#ref, &expected)? {
            Some(w) => w,
            None => return self.info(expected_digest),
        };
        super::copy::copy(w, reader, expected_size, expected_digest, labels, progress)
    }

    /// Opens a writer, retrying while the ref is locked; `None` when the blob already exists.
    pub(crate) fn open_writer_waiting(
        &self,
        r#ref: &str,
        expected: &Expected,
    ) -> Result<Option<Writer>> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(16);
        loop {
            match self.writer(r#ref, Some(expected)) {
                Ok(w) => return Ok(Some(w)),
                Err(Error::BlobExists { .. }) => return Ok(None),
                Err(e @ Error::RefLocked { .. }) => {
                    if start.elapsed() > LOCK_WAIT {
                        return Err(e);
                    }
                    let jitter = rand::random_range(0..=delay.as_millis() as u64 / 2);
                    std::thread::sleep(delay + Duration::from_millis(jitter));
                    delay = (delay * 2).min(Duration::from_millis(2048));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

struct Parts {
    data: File,
    digester: Digester,
    checkpointed: u64,
    total: Option<u64>,
    expected: Option<Digest>,
    started_at: SystemTime,
    updated_at: SystemTime,
}

fn check_agrees(r#ref: &str, disk: &OnDisk, expected: &Expected) -> Result<()> {
    if let (Some(have), Some(want)) = (disk.total, expected.size)
        && have != want
    {
        return Err(Error::invalid(
            format!("ref {ref:?}"),
            format!("the ingest was started with total {have}, not {want}"),
        ));
    }
    if let (Some(have), Some(want)) = (&disk.expected, &expected.digest)
        && have != want
    {
        return Err(Error::invalid(
            format!("ref {ref:?}"),
            format!("the ingest was started expecting {have}, not {want}"),
        ));
    }
    Ok(())
}

fn status_of(d: OnDisk) -> Status {
    Status {
        r#ref: d.r#ref,
        offset: d.offset,
        total: d.total,
        expected: d.expected,
        started_at: d.started_at,
        updated_at: d.updated_at,
    }
}

fn info_of(digest: Digest, meta: &fs::Metadata, record: Option<ContentRecord>) -> Info {
    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    match record {
        Some(r) => Info {
            digest,
            size: meta.len(),
            created_at: r.created,
            updated_at: r.updated,
            labels: r.labels,
        },
        None => Info {
            digest,
            size: meta.len(),
            created_at: mtime,
            updated_at: mtime,
            labels: BTreeMap::new(),
        },
    }
}

/// Applies a containerd-style label update (`labels` / `labels.<k>` field paths).
pub(crate) fn apply_label_update(
    labels: &mut BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    fieldpaths: &[&str],
) {
    if fieldpaths.is_empty() || fieldpaths.contains(&"labels") {
        labels.clone_from(new);
        return;
    }
    for fp in fieldpaths {
        if let Some(key) = fp.strip_prefix("labels.") {
            match new.get(key) {
                Some(v) => {
                    labels.insert(key.to_owned(), v.clone());
                }
                None => {
                    labels.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("berth-content-store-")
            .tempdir()
            .unwrap()
    }

    #[test]
    fn resume_uses_saved_state_and_hashes_only_the_tail() {
        let dir = tmp();
        let store = ContentStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = store.writer("s", None).unwrap();
        w.write_all(&data[..40_000]).unwrap();
        drop(w);
        let ingest_dir = store.ingest_dir("s");
        let state = fs::read(ingest_dir.join(ingest::STATE)).unwrap();
        let saved = Digester::restore_state(Algorithm::Sha256, &state).unwrap();
        assert_eq!(
            saved.len(),
            40_000,
            "the drop saved the state of every byte"
        );

        // A crashed writer appended more after the state was saved: only that tail is hashed.
        let mut f = ingest::open_nofollow(&ingest_dir.join(ingest::DATA), false, false).unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(&data[40_000..70_000]).unwrap();
        let mut w = store.writer("s", None).unwrap();
        assert_eq!(w.offset(), 70_000);
        assert_eq!(w.digest(), Digest::sha256(&data[..70_000]));
        w.write_all(&data[70_000..]).unwrap();
        let info = w
            .commit(100_000, Some(&Digest::sha256(&data)), &BTreeMap::new())
            .unwrap();
        assert_eq!(info.size, 100_000);
    }

    #[test]
    fn damaged_or_overlong_state_falls_back_to_a_full_hash() {
        let dir = tmp();
        let store = ContentStore::open(dir.path()).unwrap();
        let data = vec![42u8; 10_000];
        let mut w = store.writer("s", None).unwrap();
        w.write_all(&data).unwrap();
        drop(w);
        let ingest_dir = store.ingest_dir("s");
        let state_path = ingest_dir.join(ingest::STATE);
        let mut state = fs::read(&state_path).unwrap();
        let last = state.len() - 1;
        state[last] ^= 1;
        fs::write(&state_path, &state).unwrap();
        let w = store.writer("s", None).unwrap();
        assert_eq!(w.digest(), Digest::sha256(&data));
        drop(w);
        // A state longer than the data (the data lost its tail) is ignored too.
        let f = ingest::open_nofollow(&ingest_dir.join(ingest::DATA), false, false).unwrap();
        f.set_len(5_000).unwrap();
        let w = store.writer("s", None).unwrap();
        assert_eq!(w.offset(), 5_000);
        assert_eq!(w.digest(), Digest::sha256(&data[..5_000]));
    }

    #[test]
    fn truncate_discards_bytes_and_state() {
        let dir = tmp();
        let store = ContentStore::open(dir.path()).unwrap();
        let mut w = store.writer("t", None).unwrap();
        w.write_all(b"wrong bytes").unwrap();
        drop(w);
        let mut w = store.writer("t", None).unwrap();
        assert_eq!(
            w.truncate(3).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        w.truncate(0).unwrap();
        assert!(!store.ingest_dir("t").join(ingest::STATE).exists());
        w.write_all(b"right").unwrap();
        drop(w);
        let w = store.writer("t", None).unwrap();
        assert_eq!(w.digest(), Digest::sha256(b"right"));
    }

    #[test]
    fn blobs_are_read_only_and_bad_input_is_refused() {
        let dir = tmp();
        let store = ContentStore::open(dir.path()).unwrap();
        assert_eq!(
            store.writer("", None).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let d = Digest::sha256(b"x");
        let info = store
            .ingest(
                "x",
                &b"x"[..],
                &d,
                Some(1),
                &BTreeMap::new(),
                &mut |_, _| {},
            )
            .unwrap();
        assert_eq!(info.size, 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(store.blob_path(&d))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
        // A wrong expected size fails and leaves nothing behind.
        let d2 = Digest::sha256(b"yy");
        let err = store
            .ingest(
                "y",
                &b"yy"[..],
                &d2,
                Some(1),
                &BTreeMap::new(),
                &mut |_, _| {},
            )
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert!(!store.exists(&d2));
        assert!(store.list_statuses(None).unwrap().is_empty());
        // A resumed ingest must agree with the total it was started with.
        drop(store.writer("z", Some(&Expected::size(10))).unwrap());
        let err = store.writer("z", Some(&Expected::size(11))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(store.abort("nope").unwrap_err().kind(), ErrorKind::NotFound);
        store.abort("z").unwrap();
        assert_eq!(store.info(&d2).unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(store.reader(&d2).unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(store.delete(&d2).unwrap_err().kind(), ErrorKind::NotFound);
        store.delete(&d).unwrap();
        assert!(!store.exists(&d));
    }

    #[test]
    fn sha512_content_lands_under_its_algorithm() {
        let dir = tmp();
        let store = ContentStore::open(dir.path()).unwrap();
        let data = b"five hundred and twelve";
        let d = Digest::of(Algorithm::Sha512, data);
        let mut w = store
            .writer("s512", Some(&Expected::digest(d.clone())))
            .unwrap();
        w.write_all(data).unwrap();
        assert_eq!(w.digest(), d, "the expected digest picks the algorithm");
        drop(w);
        let w = store
            .writer("s512", Some(&Expected::digest(d.clone())))
            .unwrap();
        assert_eq!(w.digest(), d, "and a resume keeps it");
        w.commit(0, None, &BTreeMap::new()).unwrap();
        assert!(
            store
                .blob_path(&d)
                .starts_with(dir.path().canonicalize().unwrap().join("blobs/sha512"))
        );
        assert_eq!(store.read_all(&d, 100).unwrap(), data);
        // A writer hashing sha256 can still be committed against a sha512 expectation.
        let other = b"committed against another algorithm";
        let d2 = Digest::of(Algorithm::Sha512, other);
        let mut w = store.writer("mixed", None).unwrap();
        w.write_all(other).unwrap();
        assert_eq!(w.commit(0, Some(&d2), &BTreeMap::new()).unwrap().digest, d2);
        assert_eq!(store.list_digests().unwrap().len(), 2);
        assert!(store.verify().unwrap().is_ok());
    }

    #[test]
    fn a_symlink_planted_in_blobs_is_not_followed() {
        let dir = tmp();
        let store = ContentStore::open(dir.path()).unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, b"secret").unwrap();
        let d = Digest::sha256(b"secret");
        fs::create_dir_all(store.blob_path(&d).parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&secret, store.blob_path(&d)).unwrap();
        assert!(!store.exists(&d));
        assert!(store.reader(&d).is_err());
        assert!(store.read_all(&d, 100).is_err());
    }

    #[test]
    fn walk_filters_and_list_statuses() {
        let dir = tmp();
        let store = ContentStore::open(dir.path()).unwrap();
        let mut digests = Vec::new();
        for (i, lbl) in ["a", "b", "c"].iter().enumerate() {
            let body = format!("blob {i}");
            let d = Digest::sha256(body.as_bytes());
            let labels = BTreeMap::from([
                ("kind".to_owned(), (*lbl).to_owned()),
                ("containerd.io/gc.root".to_owned(), "t".to_owned()),
            ]);
            store
                .ingest(&body, body.as_bytes(), &d, None, &labels, &mut |_, _| {})
                .unwrap();
            digests.push(d);
        }
        let walk = |f: &[&str]| {
            let mut v = Vec::new();
            store
                .walk(f, |i| {
                    v.push(i.labels["kind"].clone());
                    Ok(())
                })
                .unwrap();
            v.sort();
            v
        };
        assert_eq!(walk(&[]), ["a", "b", "c"]);
        assert_eq!(walk(&["labels.kind==a"]), ["a"]);
        assert_eq!(walk(&["labels.kind==a", "labels.kind==c"]), ["a", "c"]);
        assert_eq!(
            walk(&["labels.kind!=a,labels.\"containerd.io/gc.root\""]),
            ["b", "c"]
        );
        assert_eq!(walk(&[&format!("digest=={}", digests[1])]), ["b"]);
        assert!(walk(&["labels.missing"]).is_empty());
        let err = store.walk(&["labels.kind=="], |_| Ok(())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);

        for r in ["layer-1", "layer-2", "config"] {
            drop(store.writer(r, None).unwrap());
        }
        let refs = |f: Option<&str>| -> Vec<String> {
            store
                .list_statuses(f)
                .unwrap()
                .into_iter()
                .map(|s| s.r#ref)
                .collect()
        };
        assert_eq!(refs(None), ["config", "layer-1", "layer-2"]);
        assert_eq!(refs(Some("ref~=^layer-")), ["layer-1", "layer-2"]);
        assert_eq!(refs(Some("ref==config")), ["config"]);
    }
}
