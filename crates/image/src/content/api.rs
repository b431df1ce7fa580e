//! The content-store contract as traits, so the conformance suite (`testsuite`, feature `testsuite`) and
//! the copy helpers ([`super::copy()`]) work with any implementation, not only
//! [`ContentStore`]: containerd's `content.Store` and `content.Writer`, reduced to what they
//! exercise. Errors are this crate's [`Error`], whose [`kind`](crate::Error::kind)
//! carries the contract (`NotFound`, `AlreadyExists`, `Unavailable`, `FailedPrecondition`, …).

use std::collections::BTreeMap;
use std::io::{Read, Write};

use berth_oci::Digest;

use super::{ContentStore, Expected, Info, Status, Writer};
use crate::error::{Error, Result};

/// A content store. See [`ContentStore`] for the reference implementation and the contract of
/// each method (same names, same errors).
pub trait Store {
    /// The writer of an ingest.
    type Writer: ContentWriter;

    /// Opens or resumes the ingest named `ref` (`Unavailable` while another writer holds it;
    /// `AlreadyExists` if the expected digest is stored).
    ///
    /// # Errors
    /// As [`ContentStore::writer`].
    fn writer(&self, r#ref: &str, expected: Option<&Expected>) -> Result<Self::Writer>;

    /// The status of an ingest (`NotFound` if there is none).
    ///
    /// # Errors
    /// As [`ContentStore::status`].
    fn status(&self, r#ref: &str) -> Result<Status>;

    /// Removes an ingest.
    ///
    /// # Errors
    /// As [`ContentStore::abort`].
    fn abort(&self, r#ref: &str) -> Result<()>;

    /// What the store knows of a blob.
    ///
    /// # Errors
    /// As [`ContentStore::info`].
    fn info(&self, digest: &Digest) -> Result<Info>;

    /// Changes a blob's labels.
    ///
    /// # Errors
    /// As [`ContentStore::update`].
    fn update(&self, info: &Info, fieldpaths: &[&str]) -> Result<Info>;

    /// Removes a blob.
    ///
    /// # Errors
    /// As [`ContentStore::delete`].
    fn delete(&self, digest: &Digest) -> Result<()>;

    /// Reads up to `buf.len()` bytes of a blob at `offset` (0 at or past the end).
    ///
    /// # Errors
    /// `NotFound`; `Io`.
    fn read_at(&self, digest: &Digest, offset: u64, buf: &mut [u8]) -> Result<usize>;
}

/// The writer of one ingest. See [`Writer`] for the contract.
pub trait ContentWriter: Write + Sized + std::fmt::Debug {
    /// The ref of the ingest.
    fn ingest_ref(&self) -> &str;
    /// The digest of the bytes written so far.
    fn digest(&self) -> Digest;
    /// Bytes written so far.
    fn offset(&self) -> u64;
    /// The ingest's status.
    fn status(&self) -> Status;
    /// Discards what was written (only `size == 0` must be supported).
    ///
    /// # Errors
    /// As [`Writer::truncate`].
    fn truncate(&mut self, size: u64) -> Result<()>;
    /// Verifies and stores the content; consumes the writer even on error.
    ///
    /// # Errors
    /// As [`Writer::commit`].
    fn commit(
        self,
        size: u64,
        expected: Option<&Digest>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Info>;

    /// Appends from `reader` until it ends or the writer holds `limit` bytes, reporting
    /// `progress(offset, size)`. The default copies through `io::Write`; implementations may do
    /// better ([`Writer`] overlaps hashing and writing).
    ///
    /// # Errors
    /// `Io` from the source or the ingest.
    fn fill_from(
        &mut self,
        reader: &mut dyn Read,
        limit: Option<u64>,
        size: Option<u64>,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let want = match limit {
                Some(l) => l.saturating_sub(self.offset()).min(buf.len() as u64) as usize,
                None => buf.len(),
            };
            if want == 0 {
                return Ok(());
            }
            let n = match reader.read(&mut buf[..want]) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::io(
                        "read source for",
                        format!("ingest {:?}", self.ingest_ref()),
                        e,
                    ));
                }
            };
            self.write_all(&buf[..n])
                .map_err(|e| Error::io("write", format!("ingest {:?}", self.ingest_ref()), e))?;
            progress(self.offset(), size);
        }
    }
}

impl Store for ContentStore {
    type Writer = Writer;

    fn writer(&self, r#ref: &str, expected: Option<&Expected>) -> Result<Writer> {
        ContentStore::writer(self, r#ref, expected)
    }

    fn status(&self, r#ref: &str) -> Result<Status> {
        ContentStore::status(self, r#ref)
    }

    fn abort(&self, r#ref: &str) -> Result<()> {
        ContentStore::abort(self, r#ref)
    }

    fn info(&self, digest: &Digest) -> Result<Info> {
        ContentStore::info(self, digest)
    }

    fn update(&self, info: &Info, fieldpaths: &[&str]) -> Result<Info> {
        ContentStore::update(self, info, fieldpaths)
    }

    fn delete(&self, digest: &Digest) -> Result<()> {
        ContentStore::delete(self, digest)
    }

    fn read_at(&self, digest: &Digest, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let r = self.reader(digest)?;
        r.read_at(offset, buf)
            .map_err(|e| Error::io("read", self.blob_path(digest), e))
    }
}

impl ContentWriter for Writer {
    fn ingest_ref(&self) -> &str {
        Writer::r#ref(self)
    }

    fn digest(&self) -> Digest {
        Writer::digest(self)
    }

    fn offset(&self) -> u64 {
        Writer::offset(self)
    }

    fn status(&self) -> Status {
        Writer::status(self)
    }

    fn truncate(&mut self, size: u64) -> Result<()> {
        Writer::truncate(self, size)
    }

    fn commit(
        self,
        size: u64,
        expected: Option<&Digest>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Info> {
        Writer::commit(self, size, expected, labels)
    }

    fn fill_from(
        &mut self,
        reader: &mut dyn Read,
        limit: Option<u64>,
        size: Option<u64>,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<()> {
        super::pump::pump(self, reader, limit, size, progress).map(|_| ())
    }
}
