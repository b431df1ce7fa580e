//! Errors of the `image` crate: one enum, every variant naming the blob, ref, path, image or
//! lease concerned, classified by [`Error::kind`] in the manner of containerd's `errdefs`.

use std::io;
use std::path::PathBuf;

use berth_oci::Digest;

pub use berth_oci::ErrorKind;

/// Errors of the `image` crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call on a path failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`open`, `rename`, `fsync`, …).
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No blob with this digest is in the store.
    #[error("blob {digest} not found")]
    BlobNotFound {
        /// The digest asked for.
        digest: Digest,
    },
    /// A blob with this digest is already in the store.
    #[error("blob {digest} already exists")]
    BlobExists {
        /// The digest of the existing blob.
        digest: Digest,
    },
    /// No ingest is in progress under this ref.
    #[error("ingest ref {ref:?} not found")]
    IngestNotFound {
        /// The ref asked for.
        r#ref: String,
    },
    /// The ref is being written by another writer (in this process or another one).
    #[error("ref {ref:?} is locked by another writer")]
    RefLocked {
        /// The ref concerned.
        r#ref: String,
    },
    /// An argument was refused (an empty ref, a bad name, a bad truncate size, …).
    #[error("invalid argument: {what}: {reason}")]
    InvalidArgument {
        /// The offending value.
        what: String,
        /// Why it was refused.
        reason: String,
    },
    /// The bytes written do not have the size they were declared to have.
    #[error("size mismatch for ingest {ref:?}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The ref of the ingest.
        r#ref: String,
        /// The declared size.
        expected: u64,
        /// The size written (or read).
        actual: u64,
    },
    /// The bytes written do not hash to the digest they were declared to have.
    #[error("digest mismatch for ingest {ref:?}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The ref of the ingest.
        r#ref: String,
        /// The declared digest.
        expected: Digest,
        /// The digest of the bytes written.
        actual: Digest,
    },
    /// A blob is larger than the caller allows (manifests, configs, indexes are capped).
    #[error("blob {digest} is {size} bytes, more than the {max} allowed")]
    BlobTooLarge {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// A stored blob no longer hashes to its name.
    #[error("blob {digest} is corrupt: its content hashes to {actual}")]
    CorruptBlob {
        /// The blob's name.
        digest: Digest,
        /// What its bytes hash to.
        actual: Digest,
    },
    /// A filter string does not parse.
    #[error("invalid filter {filter:?}: {reason}")]
    InvalidFilter {
        /// The filter text.
        filter: String,
        /// Why it was refused.
        reason: String,
    },
    /// No image record has this name.
    #[error("image {name:?} not found")]
    ImageNotFound {
        /// The name asked for.
        name: String,
    },
    /// An image record with this name exists already.
    #[error("image {name:?} already exists")]
    ImageExists {
        /// The name.
        name: String,
    },
    /// No lease has this id.
    #[error("lease {id:?} not found")]
    LeaseNotFound {
        /// The id asked for.
        id: String,
    },
    /// A lease with this id exists already.
    #[error("lease {id:?} already exists")]
    LeaseExists {
        /// The id.
        id: String,
    },
    /// No front-end record has this key in this namespace.
    #[error("record {namespace}/{key} not found")]
    RecordNotFound {
        /// The record namespace.
        namespace: String,
        /// The key asked for.
        key: String,
    },
    /// A front-end record with this key exists already in this namespace.
    #[error("record {namespace}/{key} already exists")]
    RecordExists {
        /// The record namespace.
        namespace: String,
        /// The key.
        key: String,
    },
    /// The metadata database failed.
    #[error("metadata database {}: {op}: {source}", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// redb's error.
        #[source]
        source: Box<redb::Error>,
    },
    /// The metadata database was written by a newer berth with a schema this one does not know.
    #[error("metadata database {} has schema version {found}; this berth supports {supported}", path.display())]
    SchemaVersion {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: u64,
        /// The newest version this code understands.
        supported: u64,
    },
    /// A record or document could not be encoded or decoded as JSON.
    #[error("invalid JSON in {what}: {source}")]
    Json {
        /// What was being encoded or decoded (a digest, an image name, a table key).
        what: String,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// An error of the `oci` crate (digests, media types, references).
    #[error(transparent)]
    Oci(#[from] berth_oci::Error),
}

impl Error {
    /// Classifies the error so callers can branch as containerd's `errdefs` allow.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => ErrorKind::NotFound,
                io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
                io::ErrorKind::WouldBlock => ErrorKind::Unavailable,
                _ => ErrorKind::Io,
            },
            Error::BlobNotFound { .. }
            | Error::IngestNotFound { .. }
            | Error::ImageNotFound { .. }
            | Error::LeaseNotFound { .. }
            | Error::RecordNotFound { .. } => ErrorKind::NotFound,
            Error::BlobExists { .. }
            | Error::ImageExists { .. }
            | Error::LeaseExists { .. }
            | Error::RecordExists { .. } => ErrorKind::AlreadyExists,
            Error::RefLocked { .. } => ErrorKind::Unavailable,
            Error::InvalidArgument { .. } | Error::InvalidFilter { .. } | Error::Json { .. } => {
                ErrorKind::InvalidArgument
            }
            Error::SizeMismatch { .. }
            | Error::DigestMismatch { .. }
            | Error::BlobTooLarge { .. }
            | Error::CorruptBlob { .. }
            | Error::SchemaVersion { .. } => ErrorKind::FailedPrecondition,
            Error::Database { source, .. } => match **source {
                redb::Error::DatabaseAlreadyOpen => ErrorKind::Unavailable,
                redb::Error::Io(_) => ErrorKind::Io,
                _ => ErrorKind::Internal,
            },
            Error::Oci(e) => e.kind(),
        }
    }

    /// Wraps an I/O error with the operation and path concerned.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// An [`Error::InvalidArgument`].
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// The `image` crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
