//! [`BlobReader`]: ranged and streaming reads of one committed blob.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use berth_oci::Digest;

/// An open committed blob: `Read + Seek`, plus positional [`BlobReader::read_at`] that does not
/// move the cursor (so one reader can serve ranged reads from several threads through `&self`).
///
/// Blobs are immutable once committed, so the size is fixed. A blob deleted while open stays
/// readable through this handle.
#[derive(Debug)]
pub struct BlobReader {
    pub(crate) file: File,
    pub(crate) size: u64,
    pub(crate) digest: Digest,
}

impl BlobReader {
    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns 0 at or past the end.
    ///
    /// # Errors
    /// The OS error of `pread`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        self.file.read_at(buf, offset)
    }

    /// Fills `buf` from `offset`, failing with `UnexpectedEof` if the blob ends first.
    ///
    /// # Errors
    /// `UnexpectedEof`, or the OS error of `pread`.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Seek for BlobReader {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}
