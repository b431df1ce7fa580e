//! Errors of the `oci` crate and the error classification shared by convention across berth.

use std::fmt;

/// How an error is classified, in the manner of containerd's `errdefs`, so callers can branch
/// on the kind instead of on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The object (blob, image, snapshot, container, file) does not exist.
    NotFound,
    /// The object exists already.
    AlreadyExists,
    /// The input is malformed or not allowed.
    InvalidArgument,
    /// The input is well formed but the system is not in a state that allows the operation
    /// (a digest or size mismatch, a commit on a closed writer, children still present).
    FailedPrecondition,
    /// The object is busy (locked by another writer or process); retrying later may succeed.
    Unavailable,
    /// An operating-system I/O error.
    Io,
    /// A bug or an unexpected state inside berth.
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::FailedPrecondition => "failed precondition",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Io => "i/o error",
            ErrorKind::Internal => "internal error",
        };
        f.write_str(s)
    }
}

/// Errors of the `oci` crate. Every variant names the value it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A digest string is not `algorithm:hex` with a supported algorithm and valid hex.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The offending text.
        digest: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Content did not hash to the digest it was named by.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the content was expected to have.
        expected: String,
        /// The digest the content has.
        actual: String,
    },
    /// Content was shorter or longer than its declared size.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The digest of the content concerned.
        digest: String,
        /// The declared size.
        expected: u64,
        /// The size seen (for an overrun: at least this much).
        actual: u64,
    },
    /// A platform string could not be parsed.
    #[error("invalid platform {platform:?}: {reason}")]
    InvalidPlatform {
        /// The offending text.
        platform: String,
        /// Why it was refused.
        reason: String,
    },
    /// An image reference could not be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The offending text.
        reference: String,
        /// Why it was refused.
        reason: String,
    },
    /// A media type is not one berth knows for this position.
    #[error("unsupported media type {media_type:?}{}", context.as_ref().map(|c| format!(" for {c}")).unwrap_or_default())]
    UnsupportedMediaType {
        /// The media type found.
        media_type: String,
        /// What it was found on (a digest or a path), if known.
        context: Option<String>,
    },
    /// A JSON document (manifest, index, config, spec) could not be decoded.
    #[error("invalid JSON in {what}: {source}")]
    Json {
        /// What was being decoded (a digest, a path).
        what: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A saved digester state (see `Digester::save_state`) could not be restored: it is
    /// truncated, corrupt, from another algorithm, or from an incompatible berth version.
    #[error("invalid saved {algorithm} digester state: {reason}")]
    InvalidDigesterState {
        /// The algorithm the caller asked to restore (`sha256`, `sha512`).
        algorithm: String,
        /// Why it was refused.
        reason: String,
    },
    /// A JSON document is larger than berth accepts for its kind (manifests, indexes and configs
    /// are capped like containerd does, to bound memory on hostile input).
    #[error("{what} is too large: {size} bytes, the limit is {limit}")]
    TooLarge {
        /// What was being read (a digest or a path).
        what: String,
        /// Its size (declared or seen).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A JSON document decoded but breaks the rules of its specification (wrong schema
    /// version, fields of another document kind, an unsupported digest in a descriptor…).
    #[error("invalid {what}: {reason}")]
    InvalidDocument {
        /// What was being decoded (a digest or a path).
        what: String,
        /// Why it was refused.
        reason: String,
    },
    /// A path named inside an archive is absolute, climbs out with `..`, or is otherwise unsafe.
    #[error("unsafe path {path:?} in archive: {reason}")]
    InvalidArchivePath {
        /// The offending path as written in the archive.
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A runtime spec failed validation; every problem found is listed.
    #[error("invalid runtime spec: {}", problems.join("; "))]
    InvalidSpec {
        /// One line per problem found.
        problems: Vec<String>,
    },
}

impl Error {
    /// Classifies the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => {
                ErrorKind::FailedPrecondition
            }
            Error::InvalidDigest { .. }
            | Error::InvalidPlatform { .. }
            | Error::InvalidReference { .. }
            | Error::UnsupportedMediaType { .. }
            | Error::Json { .. }
            | Error::InvalidDigesterState { .. }
            | Error::TooLarge { .. }
            | Error::InvalidDocument { .. }
            | Error::InvalidArchivePath { .. }
            | Error::InvalidSpec { .. } => ErrorKind::InvalidArgument,
        }
    }
}

/// The `oci` crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
