//! Safe application of an OCI layer (a possibly compressed tar with whiteouts) onto a directory.
//!
//! # Design
//! One pass over the stream: `source → count → decompress → (diffID digester, size bound) → tar
//! parser → extractor`. The diffID is the digest of the decompressed bytes, computed while the
//! entries are extracted; bytes after the tar's end-of-archive marker are drained into it too.
//! The `tar` crate only parses; every filesystem change is made by our extractor through file
//! descriptors:
//!
//! - the root is opened once (`O_PATH | O_DIRECTORY | O_CLOEXEC`); each entry's parent is resolved
//!   from it with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, or a userspace walk with the
//!   same semantics ([`resolve`]), every time (no caches across entries);
//! - the final component is never followed: existing objects are removed (unless a directory
//!   meets a directory, whose metadata is then merged) and new ones are made with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW`, `mkdirat`, `symlinkat`, `linkat` (without
//!   `AT_SYMLINK_FOLLOW`), `mknodat`;
//! - hardlink targets are resolved inside the root, so `../../etc/passwd` means the root's;
//! - metadata is set without following links ([`metadata`]); directory mtimes last;
//! - whiteouts are applied or converted to overlayfs form ([`whiteout`]).
//!
//! The threat model is the layer content: a crafted layer cannot create, change or remove
//! anything outside the root. Concurrent changes to the root by other processes during apply
//! are not defended against beyond what fd-relative resolution gives.
//!
//! # Limits
//! - The userspace resolver keeps one fd per directory level of a path, so paths deeper than
//!   the fd limit fail with `EMFILE` (openat2 handles them while they fit `PATH_MAX`).
//! - xattrs of symlinks, devices and fifos, and the mode of devices and fifos, are set through
//!   `/proc/self/fd`; without a mounted procfs those entries fail with an `Io` error.
//! - zstd frames needing a window above libzstd's default limit (128 MiB, `--long=27`) are
//!   refused, which bounds the decoder's memory.
//!
//! # Concurrency
//! [`apply_layer`] is blocking and single-threaded; apply distinct layers into distinct roots in
//! parallel freely. Applying two layers into one root at once is not supported.

pub mod error;
pub mod metadata;
pub mod resolve;
pub mod whiteout;

mod entry;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

use berth_oci::{Algorithm, Compression, Digest, Digester};

pub use error::{Error, Result};

use crate::compression::Decompressor;

/// Options of [`apply_layer`]. Build with `ApplyOptions::default()` and the `with_*` methods.
#[derive(Default)]
pub struct ApplyOptions<'a> {
    /// The compression the blob's media type declares; `None` autodetects only. A disagreement
    /// with the magic bytes is an error.
    pub compression: Option<Compression>,
    /// A name for the blob in errors and progress (its digest, or a file path).
    pub blob: Option<String>,
    /// The digest of the (compressed) blob, verified over the bytes read in the same pass; a
    /// different one fails with [`Error::DigestMismatch`].
    pub expected_digest: Option<Digest>,
    /// The diffID the image config declares; a different one fails with
    /// [`Error::DiffIdMismatch`] (after the layer was applied: the caller discards the root).
    pub expected_diff_id: Option<Digest>,
    /// Upper bound on the decompressed size (decompression-bomb guard); exceeding it fails with
    /// [`Error::TooLarge`].
    pub max_uncompressed: Option<u64>,
    /// Size of the (compressed) input if known, passed to the progress callback as the total.
    pub total_size: Option<u64>,
    /// Do not set owners (files stay owned by the caller), like `tar --no-same-owner`.
    pub no_same_owner: bool,
    /// Write whiteouts in overlayfs form (char device 0/0, `trusted.overlay.opaque=y`), for
    /// applying straight into an empty overlay upper directory. Needs `CAP_MKNOD` and
    /// `CAP_SYS_ADMIN` (for `trusted.*`).
    pub overlay_whiteouts: bool,
    /// Lower layers of the root (nearest first), consulted when a missing parent directory
    /// must be created: it copies the owner, mode and mtime of the lower directory instead of
    /// defaulting to 0755 root (needed when applying into an overlay upper directory).
    pub parent_layers: Vec<std::path::PathBuf>,
    /// Use the userspace resolver even when openat2 is available (for tests and sandboxes
    /// whose seccomp profile misreports openat2).
    pub force_userspace_resolver: bool,
    /// Called after each entry with `(compressed bytes consumed, total_size)`.
    pub progress: Option<&'a mut dyn FnMut(u64, Option<u64>)>,
}

impl fmt::Debug for ApplyOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApplyOptions")
            .field("compression", &self.compression)
            .field("blob", &self.blob)
            .field("expected_digest", &self.expected_digest)
            .field("expected_diff_id", &self.expected_diff_id)
            .field("max_uncompressed", &self.max_uncompressed)
            .field("total_size", &self.total_size)
            .field("no_same_owner", &self.no_same_owner)
            .field("overlay_whiteouts", &self.overlay_whiteouts)
            .field("parent_layers", &self.parent_layers)
            .field("force_userspace_resolver", &self.force_userspace_resolver)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl<'a> ApplyOptions<'a> {
    /// Sets [`ApplyOptions::compression`].
    pub fn with_compression(mut self, c: Compression) -> Self {
        self.compression = Some(c);
        self
    }
    /// Sets [`ApplyOptions::blob`].
    pub fn with_blob(mut self, blob: impl Into<String>) -> Self {
        self.blob = Some(blob.into());
        self
    }
    /// Sets [`ApplyOptions::expected_digest`].
    pub fn with_expected_digest(mut self, d: Digest) -> Self {
        self.expected_digest = Some(d);
        self
    }
    /// Sets [`ApplyOptions::expected_diff_id`].
    pub fn with_expected_diff_id(mut self, d: Digest) -> Self {
        self.expected_diff_id = Some(d);
        self
    }
    /// Sets [`ApplyOptions::max_uncompressed`].
    pub fn with_max_uncompressed(mut self, bytes: u64) -> Self {
        self.max_uncompressed = Some(bytes);
        self
    }
    /// Sets [`ApplyOptions::total_size`].
    pub fn with_total_size(mut self, bytes: u64) -> Self {
        self.total_size = Some(bytes);
        self
    }
    /// Sets [`ApplyOptions::no_same_owner`].
    pub fn with_no_same_owner(mut self, v: bool) -> Self {
        self.no_same_owner = v;
        self
    }
    /// Sets [`ApplyOptions::overlay_whiteouts`].
    pub fn with_overlay_whiteouts(mut self, v: bool) -> Self {
        self.overlay_whiteouts = v;
        self
    }
    /// Sets [`ApplyOptions::parent_layers`].
    pub fn with_parent_layers(mut self, lowers: Vec<std::path::PathBuf>) -> Self {
        self.parent_layers = lowers;
        self
    }
    /// Sets [`ApplyOptions::force_userspace_resolver`].
    pub fn with_userspace_resolver(mut self, v: bool) -> Self {
        self.force_userspace_resolver = v;
        self
    }
    /// Sets [`ApplyOptions::progress`].
    pub fn with_progress(mut self, f: &'a mut dyn FnMut(u64, Option<u64>)) -> Self {
        self.progress = Some(f);
        self
    }
}

/// What [`apply_layer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// Digest of the decompressed stream (the layer's diffID).
    pub diff_id: Digest,
    /// Size of the decompressed stream in bytes.
    pub uncompressed_size: u64,
    /// Bytes read from the (compressed) source.
    pub compressed_size: u64,
    /// The compression found.
    pub compression: Compression,
    /// Entries applied (whiteouts included, skipped entries not).
    pub entries: u64,
}

/// Failure flags shared by the reader stages so an `io::Error` surfacing from the tar parser
/// can be attributed to the stage that caused it.
#[derive(Debug, Default)]
struct Probe {
    compressed: Cell<u64>,
    source_failed: Cell<bool>,
    decode_failed: Cell<bool>,
    too_large: Cell<bool>,
    digester: RefCell<Option<Digester>>,
}

/// The caller's reader, counted.
struct SourceReader<R> {
    inner: R,
    probe: Rc<Probe>,
}

impl<R: Read> Read for SourceReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.probe
                    .compressed
                    .set(self.probe.compressed.get() + n as u64);
                if let Some(d) = self.probe.digester.borrow_mut().as_mut() {
                    d.update(&buf[..n]);
                }
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.probe.source_failed.set(true);
                }
                Err(e)
            }
        }
    }
}

/// The decompressed stream, hashed and bounded.
struct TeeReader<R> {
    inner: R,
    digester: Digester,
    limit: Option<u64>,
    probe: Rc<Probe>,
}

impl<R: Read> Read for TeeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted && !self.probe.source_failed.get() {
                    self.probe.decode_failed.set(true);
                }
                return Err(e);
            }
        };
        self.digester.update(&buf[..n]);
        if let Some(limit) = self.limit
            && self.digester.len() > limit
        {
            self.probe.too_large.set(true);
            return Err(io::Error::other("uncompressed size bound exceeded"));
        }
        Ok(n)
    }
}

/// Applies one layer read from `reader` onto the directory `root`.
///
/// The compression is detected from the stream (and checked against
/// [`ApplyOptions::compression`]). Returns the diffID and sizes. On error the root may hold a
/// partly applied layer: callers apply into a fresh snapshot and discard it on failure. Nothing
/// outside `root` is ever modified.
///
/// # Errors
/// See [`Error`]: bad compression, corrupt streams and invalid entries are `InvalidArgument`;
/// a diffID mismatch or an exceeded size bound `FailedPrecondition`; filesystem failures `Io`.
pub fn apply_layer<R: Read>(
    root: &Path,
    reader: R,
    mut opts: ApplyOptions<'_>,
) -> Result<ApplyStats> {
    let blob = opts.blob.clone().unwrap_or_else(|| "<stream>".to_owned());
    let root_dir = resolve::Root::open(root).map_err(|source| Error::Root {
        path: root.to_owned(),
        source,
    })?;
    if opts.force_userspace_resolver {
        root_dir.force_fallback();
    }
    let probe = Rc::new(Probe {
        digester: RefCell::new(
            opts.expected_digest
                .as_ref()
                .map(|d| Digester::new(d.algorithm())),
        ),
        ..Probe::default()
    });
    let source = SourceReader {
        inner: reader,
        probe: Rc::clone(&probe),
    };
    let decoder = Decompressor::new(source, opts.compression, &blob).map_err(|e| {
        if probe.source_failed.get() {
            match e {
                crate::compression::Error::Read { blob, source } => Error::Read { blob, source },
                other => other.into(),
            }
        } else {
            e.into()
        }
    })?;
    let compression = decoder.compression();
    let algorithm = opts
        .expected_diff_id
        .as_ref()
        .map_or(Algorithm::Sha256, Digest::algorithm);
    let tee = TeeReader {
        inner: decoder,
        digester: Digester::new(algorithm),
        limit: opts.max_uncompressed,
        probe: Rc::clone(&probe),
    };
    let stream_err = |source: io::Error| -> Error {
        if probe.too_large.get() {
            Error::TooLarge {
                blob: blob.clone(),
                limit: opts.max_uncompressed.unwrap_or(0),
            }
        } else if probe.source_failed.get() {
            Error::Read {
                blob: blob.clone(),
                source,
            }
        } else if probe.decode_failed.get() {
            Error::Decompress {
                blob: blob.clone(),
                compression,
                source,
            }
        } else {
            Error::Tar {
                blob: blob.clone(),
                source,
            }
        }
    };

    let mut archive = tar::Archive::new(tee);
    let mut lowers = Vec::with_capacity(opts.parent_layers.len());
    for path in &opts.parent_layers {
        let lower = resolve::Root::open(path).map_err(|source| Error::Root {
            path: path.clone(),
            source,
        })?;
        if opts.force_userspace_resolver {
            lower.force_fallback();
        }
        lowers.push(lower);
    }
    let mut applier = entry::Applier::new(
        &root_dir,
        opts.no_same_owner,
        opts.overlay_whiteouts,
        lowers,
    );
    let mut entries = 0u64;
    for item in archive.entries().map_err(&stream_err)? {
        let mut item = item.map_err(&stream_err)?;
        if applier.apply(&mut item, &stream_err)? == entry::Outcome::Applied {
            entries += 1;
        }
        if let Some(progress) = opts.progress.as_mut() {
            progress(probe.compressed.get(), opts.total_size);
        }
    }
    applier.finish()?;
    let mut tee = archive.into_inner();
    io::copy(&mut tee, &mut io::sink()).map_err(&stream_err)?;
    let uncompressed_size = tee.digester.len();
    let diff_id = tee.digester.finalize();
    if let Some(progress) = opts.progress.as_mut() {
        progress(probe.compressed.get(), opts.total_size);
    }
    // The decoders read their source to the end (a gzip member list or zstd frame sequence
    // ends only at EOF), so the blob digest covers the whole blob.
    if let (Some(expected), Some(d)) = (opts.expected_digest.take(), probe.digester.take()) {
        let actual = d.finalize();
        if expected != actual {
            return Err(Error::DigestMismatch {
                blob,
                expected: Box::new(expected),
                actual: Box::new(actual),
            });
        }
    }
    if let Some(expected) = opts.expected_diff_id.take()
        && expected != diff_id
    {
        return Err(Error::DiffIdMismatch {
            blob,
            expected: Box::new(expected),
            actual: Box::new(diff_id),
        });
    }
    Ok(ApplyStats {
        diff_id,
        uncompressed_size,
        compressed_size: probe.compressed.get(),
        compression,
        entries,
    })
}

/// Applies the layer blob in `file` (gzip, zstd or plain, detected) onto the plain directory
/// `root` with OCI whiteout semantics — the library side of `berth layer apply FILE DIR`.
///
/// [`ApplyOptions::blob`] defaults to the file path and [`ApplyOptions::total_size`] to its
/// size.
///
/// # Errors
/// [`Error::Read`] when the file cannot be opened, otherwise as [`apply_layer`].
pub fn apply_layer_file(
    file: &Path,
    root: &Path,
    mut opts: ApplyOptions<'_>,
) -> Result<ApplyStats> {
    let blob = opts
        .blob
        .get_or_insert_with(|| file.display().to_string())
        .clone();
    let f = std::fs::File::open(file).map_err(|source| Error::Read {
        blob: blob.clone(),
        source,
    })?;
    if opts.total_size.is_none() {
        opts.total_size = f.metadata().ok().map(|m| m.len());
    }
    apply_layer(root, io::BufReader::with_capacity(256 * 1024, f), opts)
}
