//! The crate's error type and its containerd-`errdefs`-style classification.
//!
//! Every variant names the key, path or operation concerned; callers branch on
//! [`Error::kind`] the way containerd callers use `errdefs.IsNotFound` and friends.

use std::path::PathBuf;

/// Classification of an [`Error`], modelled on containerd's `errdefs` sentinels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The snapshot (or parent) does not exist.
    NotFound,
    /// A snapshot with that key or name already exists.
    AlreadyExists,
    /// The request is malformed (bad key, bad filter, bad field path, parent not committed, …).
    InvalidArgument,
    /// The request is valid but the snapshot is in the wrong state (not active, has children, closed).
    FailedPrecondition,
    /// The backend cannot serve the request on this host (e.g. no overlayfs).
    Unavailable,
    /// An I/O or mount syscall failed.
    Io,
    /// The metadata store is corrupt or returned an unexpected error.
    Internal,
}

/// Errors returned by snapshotters, the metadata store and [`crate::Mount`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The snapshot does not exist.
    #[error("snapshot {key:?}: not found")]
    NotFound {
        /// The missing key or name.
        key: String,
    },
    /// A snapshot with this key already exists.
    #[error("snapshot {key:?}: already exists")]
    AlreadyExists {
        /// The duplicate key or name.
        key: String,
    },
    /// The arguments are invalid.
    #[error("snapshot {key:?}: invalid argument: {reason}")]
    InvalidArgument {
        /// The key, name, filter or mount concerned.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The snapshot is not in a state that allows the operation.
    #[error("snapshot {key:?}: failed precondition: {reason}")]
    FailedPrecondition {
        /// The key concerned.
        key: String,
        /// Why the operation is refused.
        reason: String,
    },
    /// The backend is not usable here.
    #[error("snapshotter unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// A filesystem or mount operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation that failed (e.g. "mkdir", "mount overlay").
        op: &'static str,
        /// The path it acted on.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The metadata database failed.
    #[error("metadata {path}: {op}: {source}")]
    Metadata {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The redb error.
        #[source]
        source: Box<redb::Error>,
    },
    /// A metadata record could not be decoded or violates an invariant.
    #[error("metadata {path}: corrupt record {key:?}: {reason}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The record key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// The containerd-style class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Error::FailedPrecondition { .. } => ErrorKind::FailedPrecondition,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Io { .. } => ErrorKind::Io,
            Error::Metadata { .. } | Error::Corrupt { .. } => ErrorKind::Internal,
        }
    }

    /// Shorthand for [`Error::NotFound`].
    pub(crate) fn not_found(key: impl Into<String>) -> Self {
        Error::NotFound { key: key.into() }
    }

    /// Shorthand for [`Error::AlreadyExists`].
    pub(crate) fn exists(key: impl Into<String>) -> Self {
        Error::AlreadyExists { key: key.into() }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::FailedPrecondition`].
    pub(crate) fn precondition(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::FailedPrecondition {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_classify_variants() {
        assert_eq!(Error::not_found("a").kind(), ErrorKind::NotFound);
        assert_eq!(Error::exists("a").kind(), ErrorKind::AlreadyExists);
        assert_eq!(Error::invalid("a", "b").kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            Error::precondition("a", "cannot remove snapshot with child").kind(),
            ErrorKind::FailedPrecondition
        );
        let e = Error::io(
            "mkdir",
            "/x",
            std::io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(e.to_string().contains("/x"));
    }
}
