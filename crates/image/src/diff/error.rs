//! Errors of layer diff.

use std::io;
use std::path::PathBuf;

use berth_oci::ErrorKind;

/// Errors of [`diff_trees`](super::diff_trees) and
/// [`diff_overlay_upper`](super::diff_overlay_upper).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file or directory of the source trees failed.
    #[error("diff: {op} {path}: {source}")]
    Read {
        /// The path concerned.
        path: PathBuf,
        /// The operation.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file cannot be represented in a layer (device number too large for the header, …).
    #[error("diff: {path} cannot be stored in a layer: {reason}")]
    Unrepresentable {
        /// The path concerned.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Writing the layer to the output failed.
    #[error("diff: writing the layer: {source}")]
    Write {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Classifies the error: a missing source tree is `NotFound`, a file that cannot be stored
    /// `InvalidArgument`, everything else `Io`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Read { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            Error::Unrepresentable { .. } => ErrorKind::InvalidArgument,
            Error::Read { .. } | Error::Write { .. } => ErrorKind::Io,
        }
    }
}

/// Result of layer diff.
pub type Result<T, E = Error> = std::result::Result<T, E>;
