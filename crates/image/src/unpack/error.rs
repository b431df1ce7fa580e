//! Errors of [`unpack`](super::unpack), [`gc_snapshots`](super::gc_snapshots) and
//! [`diff_snapshot`](super::diff_snapshot).

use std::io;
use std::path::PathBuf;

use berth_oci::Digest;

use crate::error::ErrorKind;

/// Errors of the unpack module. Every variant names the image, layer, snapshot or path
/// concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The content store failed (a missing blob is `NotFound`).
    #[error(transparent)]
    Store(#[from] crate::Error),
    /// A manifest, index or config could not be decoded.
    #[error("image document {what}: {source}")]
    Document {
        /// The document (its digest).
        what: String,
        /// The decoding error.
        #[source]
        source: berth_oci::Error,
    },
    /// The image target is neither a manifest nor an index.
    #[error("image target {digest} has media type {media_type:?}, not a manifest or an index")]
    UnsupportedTarget {
        /// The target's digest.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// A layer's media type is not a (gzip, zstd or plain) tar layer.
    #[error("layer {digest} has media type {media_type:?}, which berth cannot unpack")]
    UnsupportedLayer {
        /// The layer's digest.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// No manifest of the index matches the requested platform (among those stored).
    #[error("index {index} has no stored manifest for platform {platform}")]
    NoMatchingPlatform {
        /// The index digest.
        index: Digest,
        /// The platform asked for.
        platform: String,
    },
    /// The manifest lists a different number of layers than the config has diffIDs.
    #[error("manifest {manifest} has {layers} layers but its config lists {diff_ids} diff_ids")]
    LayerCount {
        /// The manifest's digest.
        manifest: Digest,
        /// Number of layers.
        layers: usize,
        /// Number of diffIDs.
        diff_ids: usize,
    },
    /// The compressed layer blob does not hash to its digest (or has the wrong size).
    #[error("layer blob {digest} failed verification: {reason}")]
    BlobVerification {
        /// The layer's digest.
        digest: Digest,
        /// What did not match.
        reason: String,
    },
    /// Applying a layer failed (corrupt stream, invalid entry, diffID mismatch, I/O).
    #[error("applying layer {digest} (chain {chain_id}): {source}")]
    Apply {
        /// The layer's digest.
        digest: Digest,
        /// The chainID the layer was to become.
        chain_id: Digest,
        /// The apply error.
        #[source]
        source: crate::apply::Error,
    },
    /// A snapshotter operation failed.
    #[error("snapshot {op} {key:?}: {source}")]
    Snapshot {
        /// The operation (`prepare`, `commit`, `remove`, `mount`, …).
        op: &'static str,
        /// The key or name concerned.
        key: String,
        /// The snapshotter's error.
        #[source]
        source: berth_snapshot::Error,
    },
    /// Producing a layer from a snapshot failed.
    #[error("diff of snapshot {key:?}: {source}")]
    Diff {
        /// The snapshot key.
        key: String,
        /// The diff error.
        #[source]
        source: crate::diff::Error,
    },
    /// A local filesystem operation (lock files, temporary directories) failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The unpack was abandoned because another layer failed first.
    #[error("layer {digest}: cancelled after another layer failed")]
    Cancelled {
        /// The layer whose work was abandoned.
        digest: Digest,
    },
    /// A worker thread died unexpectedly.
    #[error("unpack worker failed: {reason}")]
    Internal {
        /// What happened.
        reason: String,
    },
}

impl Error {
    /// Classifies the error (containerd `errdefs` style).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Store(e) => e.kind(),
            Error::Document { source, .. } => source.kind(),
            Error::UnsupportedTarget { .. }
            | Error::UnsupportedLayer { .. }
            | Error::LayerCount { .. } => ErrorKind::InvalidArgument,
            Error::NoMatchingPlatform { .. } => ErrorKind::NotFound,
            Error::BlobVerification { .. } => ErrorKind::FailedPrecondition,
            Error::Apply { source, .. } => source.kind(),
            Error::Snapshot { source, .. } => match source.kind() {
                berth_snapshot::ErrorKind::NotFound => ErrorKind::NotFound,
                berth_snapshot::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
                berth_snapshot::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
                berth_snapshot::ErrorKind::FailedPrecondition => ErrorKind::FailedPrecondition,
                berth_snapshot::ErrorKind::Unavailable => ErrorKind::Unavailable,
                berth_snapshot::ErrorKind::Io => ErrorKind::Io,
                _ => ErrorKind::Internal,
            },
            Error::Diff { source, .. } => source.kind(),
            Error::Io { .. } => ErrorKind::Io,
            Error::Cancelled { .. } => ErrorKind::FailedPrecondition,
            Error::Internal { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn snapshot(
        op: &'static str,
        key: impl Into<String>,
        source: berth_snapshot::Error,
    ) -> Self {
        Error::Snapshot {
            op,
            key: key.into(),
            source,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Result of the unpack module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
