//! Errors of layer apply.

use std::io;
use std::path::PathBuf;

use berth_oci::{Compression, Digest, ErrorKind};

/// Errors of [`apply_layer`](super::apply_layer). Every variant names the layer entry, path or
/// digest it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Compression detection failed or disagreed with the declared media type.
    #[error(transparent)]
    Compression(#[from] crate::compression::Error),
    /// The apply root could not be opened as a directory.
    #[error("opening apply root {path}: {source}")]
    Root {
        /// The root directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reading the layer's (compressed) source stream failed.
    #[error("reading layer {blob}: {source}")]
    Read {
        /// The layer (digest or path).
        blob: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The compressed stream is corrupt or truncated.
    #[error("layer {blob}: corrupt or truncated {compression:?} stream: {source}")]
    Decompress {
        /// The layer (digest or path).
        blob: String,
        /// The codec that failed.
        compression: Compression,
        /// The codec's error.
        #[source]
        source: io::Error,
    },
    /// The decompressed stream is not a well-formed tar archive (or is truncated).
    #[error("layer {blob}: malformed tar stream: {source}")]
    Tar {
        /// The layer (digest or path).
        blob: String,
        /// The parser's error.
        #[source]
        source: io::Error,
    },
    /// An entry is not allowed in a layer (invalid whiteout, device number out of range, …).
    #[error("layer entry {entry:?}: {reason}")]
    InvalidArchive {
        /// The entry name as found in the tar.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// An entry carries an extended attribute that layers may not set (`trusted.*`).
    #[error("layer entry {entry:?}: extended attribute {name:?} is not allowed")]
    ForbiddenXattr {
        /// The entry name.
        entry: String,
        /// The attribute name.
        name: String,
    },
    /// A filesystem operation on the apply root failed.
    #[error("layer entry {entry:?}: {op}: {source}")]
    Io {
        /// The entry name.
        entry: String,
        /// The operation (`mkdirat`, `linkat`, …).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The decompressed stream grew past the configured bound (a decompression bomb, or a
    /// declared uncompressed size that is wrong).
    #[error("layer {blob}: uncompressed stream exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The layer (digest or path).
        blob: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The digest of the (compressed) blob is not the expected one.
    #[error("layer {blob}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The layer (path or label).
        blob: String,
        /// The digest the manifest declares (boxed to keep the error small).
        expected: Box<Digest>,
        /// The digest of the bytes read.
        actual: Box<Digest>,
    },
    /// The diffID of the decompressed stream is not the expected one.
    #[error("layer {blob}: diffID mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch {
        /// The layer (digest or path).
        blob: String,
        /// The diffID the image config declares (boxed to keep the error small).
        expected: Box<Digest>,
        /// The diffID of what was applied.
        actual: Box<Digest>,
    },
}

impl Error {
    /// Classifies the error (containerd errdefs style).
    ///
    /// Bad layer content is `InvalidArgument`; a diffID mismatch or a size bound exceeded is
    /// `FailedPrecondition`; a missing apply root is `NotFound`; other OS failures are `Io`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Compression(e) => e.kind(),
            Error::Root { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            Error::Root { .. } | Error::Read { .. } | Error::Io { .. } => ErrorKind::Io,
            Error::Decompress { .. }
            | Error::Tar { .. }
            | Error::InvalidArchive { .. }
            | Error::ForbiddenXattr { .. } => ErrorKind::InvalidArgument,
            Error::TooLarge { .. }
            | Error::DigestMismatch { .. }
            | Error::DiffIdMismatch { .. } => ErrorKind::FailedPrecondition,
        }
    }

    /// Whether the layer itself was refused as invalid (as opposed to an I/O failure).
    pub fn is_invalid_archive(&self) -> bool {
        matches!(
            self,
            Error::InvalidArchive { .. } | Error::ForbiddenXattr { .. }
        )
    }
}

/// Result of layer apply.
pub type Result<T, E = Error> = std::result::Result<T, E>;
