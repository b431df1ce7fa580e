//! Copy helpers (containerd's `content.Copy`): continue an ingest from its offset, verify, and
//! treat `AlreadyExists` as success. They work with any [`ContentWriter`].
//!
//! Three flavours position the source at the writer's offset in the cheapest way the source
//! allows: [`copy`] reads and discards the first `offset` bytes, [`copy_seek`] seeks, and
//! [`copy_at`] reads positionally.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use berth_oci::Digest;

use super::api::ContentWriter;
use super::{BlobReader, Info};
use crate::error::{Error, ErrorKind, Result};

/// A source that can be read at any offset without a cursor.
pub trait ReadAt {
    /// Reads up to `buf.len()` bytes at `offset`; 0 means end of data.
    ///
    /// # Errors
    /// The source's I/O error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
}

impl ReadAt for [u8] {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.as_slice().read_at(offset, buf)
    }
}

impl ReadAt for File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
}

impl ReadAt for BlobReader {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        BlobReader::read_at(self, offset, buf)
    }
}

/// What a copy ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Copied {
    /// The content was committed.
    Committed(Info),
    /// The store already held it (the ingest was removed); this counts as success.
    AlreadyExists(Digest),
}

/// Finishes `writer` from `reader`, whose first `writer.offset()` bytes are skipped by reading
/// and discarding them. See [`copy_seek`] for the contract.
///
/// # Errors
/// As [`copy_seek`].
pub fn copy<W: ContentWriter>(
    mut writer: W,
    mut reader: impl Read,
    size: Option<u64>,
    expected: &Digest,
    labels: &BTreeMap<String, String>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Copied> {
    restart_if_overlong(&mut writer, size)?;
    let offset = writer.offset();
    if offset > 0 {
        let skipped = io::copy(&mut (&mut reader).take(offset), &mut io::sink())
            .map_err(|e| source_err(&writer, e))?;
        if skipped != offset {
            return Err(Error::SizeMismatch {
                r#ref: writer.ingest_ref().to_owned(),
                expected: offset,
                actual: skipped,
            });
        }
    }
    finish(writer, &mut reader, size, expected, labels, progress)
}

/// Finishes `writer` from a seekable `reader`, positioned at `writer.offset()` by a seek.
///
/// Bytes are copied until the end of `reader` (or one byte past `size` when known, which is
/// enough to prove an overrun), then the writer is committed with `size` and `expected`.
/// `progress(done, total)` is called as bytes land, `done` counting from the start of the
/// content. An ingest longer than `size` is restarted from zero. `AlreadyExists` is success
/// ([`Copied::AlreadyExists`]). A failed verification leaves the ingest to the caller (the
/// store's own [`ContentStore::ingest`](super::ContentStore::ingest) aborts it).
///
/// # Errors
/// `FailedPrecondition` on a size or digest mismatch; `Io` from the source or the store;
/// `Database`.
pub fn copy_seek<W: ContentWriter>(
    mut writer: W,
    mut reader: impl Read + Seek,
    size: Option<u64>,
    expected: &Digest,
    labels: &BTreeMap<String, String>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Copied> {
    restart_if_overlong(&mut writer, size)?;
    let offset = writer.offset();
    reader
        .seek(SeekFrom::Start(offset))
        .map_err(|e| source_err(&writer, e))?;
    finish(writer, &mut reader, size, expected, labels, progress)
}

/// Finishes `writer` from a positional source, starting at `writer.offset()`.
///
/// # Errors
/// As [`copy_seek`].
pub fn copy_at<W: ContentWriter, R: ReadAt + ?Sized>(
    mut writer: W,
    reader: &R,
    size: Option<u64>,
    expected: &Digest,
    labels: &BTreeMap<String, String>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Copied> {
    restart_if_overlong(&mut writer, size)?;
    let mut pos = AtCursor {
        inner: reader,
        pos: writer.offset(),
    };
    finish(writer, &mut pos, size, expected, labels, progress)
}

struct AtCursor<'a, R: ?Sized> {
    inner: &'a R,
    pos: u64,
}

impl<R: ReadAt + ?Sized> Read for AtCursor<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read_at(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn restart_if_overlong<W: ContentWriter>(writer: &mut W, size: Option<u64>) -> Result<()> {
    if let Some(size) = size
        && writer.offset() > size
    {
        writer.truncate(0)?;
    }
    Ok(())
}

fn source_err<W: ContentWriter>(writer: &W, e: io::Error) -> Error {
    Error::io(
        "read source for",
        format!("ingest {:?}", writer.ingest_ref()),
        e,
    )
}

fn finish<W: ContentWriter>(
    mut writer: W,
    reader: &mut dyn Read,
    size: Option<u64>,
    expected: &Digest,
    labels: &BTreeMap<String, String>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Copied> {
    progress(writer.offset(), size);
    // Read at most one byte past the declared size: that byte proves an overrun.
    writer.fill_from(reader, size.map(|s| s + 1), size, progress)?;
    match writer.commit(size.unwrap_or(0), Some(expected), labels) {
        Ok(info) => Ok(Copied::Committed(info)),
        Err(Error::BlobExists { digest }) => Ok(Copied::AlreadyExists(digest)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            Ok(Copied::AlreadyExists(expected.clone()))
        }
        Err(e) => Err(e),
    }
}
