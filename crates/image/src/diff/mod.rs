//! Layer creation, the reverse of [`apply`](crate::apply): an OCI layer tar from the changes
//! between two trees or from an overlayfs upper directory.
//!
//! # Design
//! Two steps: [`changes`] lists what changed (sorted, deletions at their topmost path), then a
//! writer turns each change into tar entries (parents included, hardlinks by inode, whiteouts
//! for deletions and opaque directories) through `tar → diffID digester → compressor →
//! compressed digester → output`, so the layer's diffID and its blob digest and size come out of
//! the same single pass.
//!
//! The output is deterministic: sorted entries, no user/group names, sorted PAX records,
//! whiteouts at mtime 0, reproducible gzip headers, and mtimes clamped to
//! [`DiffOptions::mtime_upper_bound`] (like `SOURCE_DATE_EPOCH`). Captured xattrs are
//! `security.capability` and `user.*` (overlay's own `user.overlay.*` excluded).
//!
//! Round trip: [`apply_layer`](crate::apply::apply_layer) of the produced layer onto a copy of
//! `lower` reproduces `upper` (content, mode, owner, captured xattrs, symlinks, hardlinks).
//!
//! Overlay uppers written with `redirect_dir=on` or `metacopy=on` are not supported (a renamed
//! directory or a metadata-only copy-up would need the lower layers to resolve); berth's
//! overlay snapshotter mounts without them.
//!
//! # Concurrency
//! Blocking. The trees must not change during the diff (diff a committed or unmounted
//! snapshot); a file that shrinks while being read is reported as an error instead of producing
//! a corrupt layer.

pub mod changes;
pub mod error;

mod write;

use std::io::{self, Write};
use std::path::Path;

use berth_oci::{Algorithm, Compression, Digest, Digester};

pub use changes::{Change, ChangeKind};
pub use error::{Error, Result};

use crate::compression::Compressor;

/// Options of the diff functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffOptions {
    /// Compression of the produced blob.
    pub compression: Compression,
    /// Codec level (gzip 0–9, zstd 1–22); the codec's default when `None`.
    pub level: Option<i32>,
    /// Latest mtime written (seconds since the epoch); later ones are clamped to it
    /// (reproducible builds' `SOURCE_DATE_EPOCH`).
    pub mtime_upper_bound: Option<i64>,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            compression: Compression::Gzip,
            level: None,
            mtime_upper_bound: None,
        }
    }
}

/// What a diff produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffStats {
    /// Digest of the written (compressed) blob.
    pub digest: Digest,
    /// Size of the written blob in bytes.
    pub size: u64,
    /// Digest of the uncompressed tar (the layer's diffID).
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// The compression used.
    pub compression: Compression,
    /// Tar entries written (PAX headers not counted).
    pub entries: u64,
}

/// Writes the layer that turns the plain tree `lower` into the plain tree `upper` (the native
/// snapshotter's diff) to `out`; returns its stats and the writer.
///
/// # Errors
/// [`Error::Read`] for unreadable trees, [`Error::Unrepresentable`], [`Error::Write`].
pub fn diff_trees<W: Write>(
    lower: &Path,
    upper: &Path,
    out: W,
    opts: &DiffOptions,
) -> Result<(DiffStats, W)> {
    let changes = changes::between_trees(lower, upper)?;
    write_layer(upper, &changes, out, opts)
}

/// Writes the layer recorded in the overlayfs upper directory `upper` (character devices 0/0
/// become `.wh.` entries, opaque directories get `.wh..wh..opq`) to `out`.
///
/// # Errors
/// As [`diff_trees`].
pub fn diff_overlay_upper<W: Write>(
    upper: &Path,
    out: W,
    opts: &DiffOptions,
) -> Result<(DiffStats, W)> {
    let changes = changes::overlay_upper(upper)?;
    write_layer(upper, &changes, out, opts)
}

/// A writer that hashes and counts what passes through.
struct HashingWriter<W> {
    inner: W,
    digester: Digester,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digester.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_layer<W: Write>(
    root: &Path,
    changes: &[Change],
    out: W,
    opts: &DiffOptions,
) -> Result<(DiffStats, W)> {
    let werr = |source| Error::Write { source };
    let compressed = HashingWriter {
        inner: out,
        digester: Digester::new(Algorithm::Sha256),
    };
    let encoder = Compressor::new(compressed, opts.compression, opts.level).map_err(werr)?;
    let raw = HashingWriter {
        inner: encoder,
        digester: Digester::new(Algorithm::Sha256),
    };
    let mut lw = write::LayerWriter::new(raw, root, opts.mtime_upper_bound);
    lw.write_changes(changes)?;
    let entries = lw.entries;
    let raw = lw.builder.into_inner().map_err(werr)?;
    let uncompressed_size = raw.digester.len();
    let diff_id = raw.digester.finalize();
    let mut compressed = raw.inner.finish().map_err(werr)?;
    compressed.flush().map_err(werr)?;
    let size = compressed.digester.len();
    Ok((
        DiffStats {
            digest: compressed.digester.finalize(),
            size,
            diff_id,
            uncompressed_size,
            compression: opts.compression,
            entries,
        },
        compressed.inner,
    ))
}
