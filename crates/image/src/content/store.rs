//! [`ContentStore`]: opening a root, handles (plain and leased), the shared metadata, and the
//! copy-helper entry point. Ingests are in `ingest_manager`, blob access in `blobs`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_oci::Digest;

use super::copy::Copied;
use super::ingest;
use super::{Expected, Info, Writer};
use crate::error::{Error, ErrorKind, Result};
use crate::metadata::{ImageStore, LeaseManager, LeaseResource, MetadataDb, RecordStore};

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

    /// The front-end records of `namespace` kept in this store's metadata file (see
    /// [`crate::metadata::records`]).
    ///
    /// # Errors
    /// `InvalidArgument` for a bad namespace.
    pub fn records(&self, namespace: &str) -> Result<RecordStore> {
        RecordStore::new(self.inner.db.clone(), namespace)
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

    pub(crate) fn ingest_dir(&self, r#ref: &str) -> PathBuf {
        self.ingest_root().join(ingest::dir_name(r#ref))
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
        match super::copy::copy(w, reader, expected_size, expected_digest, labels, progress) {
            Ok(Copied::Committed(info)) => Ok(info),
            Ok(Copied::AlreadyExists(d)) => self.info(&d),
            Err(e) if e.kind() == ErrorKind::FailedPrecondition => {
                // The bytes in the ingest can never become the expected content: start clean
                // next time.
                if let Err(abort) = self.abort(r#ref) {
                    tracing::warn!(r#ref, error = %abort, "cannot abort failed ingest");
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_cross_threads() {
        fn send_sync<T: Send + Sync + Clone>() {}
        fn send<T: Send>() {}
        send_sync::<ContentStore>();
        send::<Writer>();
        send::<super::super::BlobReader>();
    }
}
