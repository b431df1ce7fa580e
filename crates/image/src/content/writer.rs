//! [`Writer`]: one open ingest, appending bytes and hashing them as they pass.
//!
//! The contract follows containerd's `content.Writer`: `commit` always consumes the writer, even
//! on error; a commit that finds the content already stored removes the ingest and returns
//! `AlreadyExists`; a failed verification (size or digest) leaves the ingest in place so it can
//! be reopened, truncated or aborted; dropping a writer without committing leaves the ingest
//! resumable under its ref.

use std::collections::BTreeMap;
use std::fs::{self, File, FileTimes, Permissions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::SystemTime;

use berth_oci::{Algorithm, Digest, Digester};

use super::ingest::{self, IngestLock};
use super::{ContentStore, Info, Status};
use crate::error::{Error, Result};
use crate::metadata::LeaseResource;
use crate::metadata::labels::ContentRecord;

/// An open ingest. Created by [`ContentStore::writer`]; holds the ref's lock until it is
/// committed or dropped.
///
/// Writes append at [`Writer::offset`] and feed the digester. A write error leaves the ingest
/// as it is on disk (its length is the offset a reopen continues from).
pub struct Writer {
    pub(crate) store: ContentStore,
    pub(crate) r#ref: String,
    pub(crate) dir: PathBuf,
    pub(crate) data: File,
    pub(crate) digester: Digester,
    /// The offset of the last saved hash state.
    pub(crate) checkpointed: u64,
    pub(crate) total: Option<u64>,
    pub(crate) expected: Option<Digest>,
    pub(crate) started_at: SystemTime,
    pub(crate) updated_at: SystemTime,
    pub(crate) dirty: bool,
    pub(crate) _lock: IngestLock,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("ref", &self.r#ref)
            .field("offset", &self.digester.len())
            .field("total", &self.total)
            .field("expected", &self.expected)
            .finish()
    }
}

impl Writer {
    /// The ref this writer ingests under.
    pub fn r#ref(&self) -> &str {
        &self.r#ref
    }

    /// The digest of the bytes written so far.
    pub fn digest(&self) -> Digest {
        self.digester.current()
    }

    /// Bytes written so far (including those of earlier writers of the same ref).
    pub fn offset(&self) -> u64 {
        self.digester.len()
    }

    /// The ingest's status.
    pub fn status(&self) -> Status {
        Status {
            r#ref: self.r#ref.clone(),
            offset: self.offset(),
            total: self.total,
            expected: self.expected.clone(),
            started_at: self.started_at,
            updated_at: self.updated_at,
        }
    }

    /// Discards what was written. Only `size == 0` is supported, as in containerd.
    ///
    /// # Errors
    /// `InvalidArgument` for another size; `Io` if the file cannot be truncated.
    pub fn truncate(&mut self, size: u64) -> Result<()> {
        if size != 0 {
            return Err(Error::invalid(
                format!("truncate {} to {size}", self.r#ref),
                "only truncation to 0 is supported",
            ));
        }
        let path = self.dir.join(ingest::DATA);
        self.data
            .set_len(0)
            .map_err(|e| Error::io("truncate", &path, e))?;
        self.data
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("seek", &path, e))?;
        self.digester = Digester::new(self.digester.algorithm());
        self.checkpointed = 0;
        let state = self.dir.join(ingest::STATE);
        match fs::remove_file(&state) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("unlink", &state, e)),
        }
        self.touch();
        Ok(())
    }

    /// Makes the data durable, then saves the hash state describing it.
    pub(crate) fn checkpoint(&mut self) -> Result<()> {
        let path = self.dir.join(ingest::DATA);
        self.data
            .sync_data()
            .map_err(|e| Error::io("fsync", &path, e))?;
        ingest::write_atomic(&self.dir, ingest::STATE, &self.digester.save_state())?;
        self.checkpointed = self.digester.len();
        Ok(())
    }

    pub(crate) fn touch(&mut self) {
        self.updated_at = SystemTime::now();
        self.dirty = true;
    }

    /// Verifies the bytes written and moves them into the store as a read-only blob.
    ///
    /// `size` is the expected size (0 = unknown); `expected` the expected digest (when `None`,
    /// the digest given to [`ContentStore::writer`], if any, is checked). `labels` are recorded
    /// on the new blob.
    ///
    /// Steps: fsync the data; check size and digest (re-hashing if `expected` uses another
    /// algorithm than the writer's); make the file read-only and stamp its times; rename it to
    /// `blobs/<alg>/<hex>` without replacing anything; fsync the directory; remove the ingest;
    /// record the labels.
    ///
    /// # Errors
    /// - `FailedPrecondition` ([`Error::SizeMismatch`], [`Error::DigestMismatch`]): the ingest
    ///   is kept and can be reopened.
    /// - `AlreadyExists` ([`Error::BlobExists`]): the blob is already stored (perhaps committed
    ///   a moment ago by another process); the ingest is removed. Copy helpers treat this as
    ///   success.
    /// - `Io`/`Database` on system failures.
    pub fn commit(
        mut self,
        size: u64,
        expected: Option<&Digest>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Info> {
        let data_path = self.dir.join(ingest::DATA);
        self.data
            .flush()
            .map_err(|e| Error::io("flush", &data_path, e))?;
        self.data
            .sync_all()
            .map_err(|e| Error::io("fsync", &data_path, e))?;
        let actual_size = self
            .data
            .metadata()
            .map_err(|e| Error::io("fstat", &data_path, e))?
            .len();
        if actual_size != self.offset() {
            return Err(Error::SizeMismatch {
                r#ref: self.r#ref.clone(),
                expected: self.offset(),
                actual: actual_size,
            });
        }
        if size > 0 && size != actual_size {
            return Err(Error::SizeMismatch {
                r#ref: self.r#ref.clone(),
                expected: size,
                actual: actual_size,
            });
        }
        let expected = expected.cloned().or_else(|| self.expected.clone());
        let digest = match &expected {
            Some(exp) if exp.algorithm() != self.digester.algorithm() => {
                rehash(&mut self.data, exp.algorithm(), &data_path)?
            }
            _ => self.digester.current(),
        };
        if let Some(exp) = &expected
            && *exp != digest
        {
            return Err(Error::DigestMismatch {
                r#ref: self.r#ref.clone(),
                expected: exp.clone(),
                actual: digest,
            });
        }
        // Protect the blob before it becomes visible, and keep collections out until it is in
        // place with its labels, so no GC can see it unreferenced.
        let _fence = self.store.gc_fence()?;
        self.store.hold(LeaseResource::Content(digest.clone()))?;
        let target = self.store.blob_path(&digest);
        let alg_dir = self
            .store
            .root()
            .join("blobs")
            .join(digest.algorithm().as_str());
        fs::create_dir_all(&alg_dir).map_err(|e| Error::io("mkdir", &alg_dir, e))?;
        if fs::symlink_metadata(&target).is_ok() {
            self.remove_ingest();
            return Err(Error::BlobExists { digest });
        }
        let now = SystemTime::now();
        self.data
            .set_permissions(Permissions::from_mode(0o444))
            .map_err(|e| Error::io("fchmod", &data_path, e))?;
        self.data
            .set_times(FileTimes::new().set_accessed(now).set_modified(now))
            .map_err(|e| Error::io("futimens", &data_path, e))?;
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &data_path,
            rustix::fs::CWD,
            &target,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                // Another writer won the race with the same content.
                self.remove_ingest();
                return Err(Error::BlobExists { digest });
            }
            Err(e) => {
                // Undo the mode change so the ingest stays writable and resumable.
                let _ = self.data.set_permissions(Permissions::from_mode(0o644));
                return Err(Error::io("rename", &target, e.into()));
            }
        }
        // After the rename the blob is in the store; what follows cannot be rolled back.
        ingest::sync_dir(&alg_dir)?;
        self.remove_ingest();
        if !labels.is_empty() {
            self.store.db().put_content_record(
                &digest,
                &ContentRecord {
                    labels: labels.clone(),
                    created: now,
                    updated: now,
                },
            )?;
        }
        Ok(Info {
            digest,
            size: actual_size,
            created_at: now,
            updated_at: now,
            labels: labels.clone(),
        })
    }

    fn remove_ingest(&mut self) {
        self.dirty = false;
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            tracing::warn!(r#ref = %self.r#ref, dir = %self.dir.display(), error = %e, "cannot remove ingest");
        }
    }
}

/// Hashes a whole file with `algorithm`.
pub(crate) fn rehash(
    file: &mut File,
    algorithm: Algorithm,
    path: &std::path::Path,
) -> Result<Digest> {
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("seek", path, e))?;
    let mut d = Digester::new(algorithm);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        d.update(&buf[..n]);
    }
    file.seek(SeekFrom::End(0))
        .map_err(|e| Error::io("seek", path, e))?;
    Ok(d.finalize())
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.data.write(buf)?;
        self.digester.update(&buf[..n]);
        self.touch();
        if self.digester.len() - self.checkpointed >= ingest::CHECKPOINT {
            self.checkpoint().map_err(io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.data.flush()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.dirty {
            return;
        }
        if let Err(e) = ingest::write_time(&self.dir, ingest::UPDATED_AT, self.updated_at) {
            tracing::debug!(r#ref = %self.r#ref, error = %e, "cannot record ingest update time");
        }
        if self.digester.len() != self.checkpointed
            && let Err(e) = self.checkpoint()
        {
            tracing::debug!(r#ref = %self.r#ref, error = %e, "cannot save ingest hash state");
        }
    }
}
