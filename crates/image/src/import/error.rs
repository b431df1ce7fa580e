//! Errors of image import, export and building: every variant names the file, archive entry or
//! blob concerned, and [`Error::kind`] classifies it like containerd's `errdefs`.

use std::io;
use std::path::PathBuf;

use berth_oci::Digest;

pub use berth_oci::ErrorKind;

/// Errors of [`crate::import`], [`crate::export`] and [`crate::build`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call on a path failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`open`, `read`, `write`, …).
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The path is neither an OCI layout directory, an oci-archive nor a docker-archive.
    #[error("{}: not an image: {reason}", path.display())]
    UnknownFormat {
        /// The path given.
        path: PathBuf,
        /// What was missing or wrong.
        reason: String,
    },
    /// The tar archive is truncated: an entry's data or the end-of-archive marker is missing.
    #[error("{}: truncated archive at entry {entry:?}", path.display())]
    Truncated {
        /// The archive.
        path: PathBuf,
        /// The entry cut short (or the last complete one).
        entry: String,
    },
    /// The tar archive is not readable (bad header checksum, bad encoding, …).
    #[error("{}: corrupt archive{}: {reason}", path.display(), entry.as_ref().map(|e| format!(" at entry {e:?}")).unwrap_or_default())]
    Corrupt {
        /// The archive.
        path: PathBuf,
        /// The entry concerned, when known.
        entry: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// An archive entry or layout file name is absolute, contains `..`, or a link escapes.
    #[error("unsafe name {name:?} in {}: {reason}", path.display())]
    UnsafeName {
        /// The image source.
        path: PathBuf,
        /// The name as found.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The same name appears twice in an archive.
    #[error("{}: duplicate entry {entry:?}", path.display())]
    DuplicateEntry {
        /// The archive.
        path: PathBuf,
        /// The entry.
        entry: String,
    },
    /// A file the format requires (`index.json`, `manifest.json`, a layer) is missing.
    #[error("{}: missing {name:?}", path.display())]
    MissingFile {
        /// The image source.
        path: PathBuf,
        /// The name looked for.
        name: String,
    },
    /// A blob referenced by an index or manifest is not in the source.
    #[error("missing blob {digest} (referenced by {referenced_by})")]
    MissingBlob {
        /// The blob.
        digest: Digest,
        /// What refers to it (`index.json`, a manifest digest).
        referenced_by: String,
    },
    /// A blob's bytes do not match its digest or declared size.
    #[error("blob {digest} ({name}) failed verification: {source}")]
    BlobMismatch {
        /// The digest it is named by.
        digest: Digest,
        /// Where the bytes came from (an entry or file name).
        name: String,
        /// The mismatch.
        #[source]
        source: berth_oci::Error,
    },
    /// A JSON document (index, manifest, config, manifest.json) is larger than allowed.
    #[error("{what} is {size} bytes, more than the {max} allowed for JSON documents")]
    JsonTooLarge {
        /// The document (a digest or a file name).
        what: String,
        /// Its size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// A JSON document does not decode.
    #[error("invalid JSON in {what}: {source}")]
    Json {
        /// The document (a digest or a file name).
        what: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A media type is not one berth knows at this position.
    #[error("unsupported media type {media_type:?} for {digest}")]
    UnsupportedMediaType {
        /// The media type found.
        media_type: String,
        /// The blob whose descriptor carries it.
        digest: Digest,
    },
    /// The document is well formed but inconsistent (layer count ≠ diffID count, a diffID
    /// mismatch, an unsupported layout version, …).
    #[error("invalid image {what}: {reason}")]
    InvalidImage {
        /// The document or blob concerned.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// Nothing in the source matches the requested platform.
    #[error("{}: no image for platform {platform}", path.display())]
    NoMatchingPlatform {
        /// The image source.
        path: PathBuf,
        /// The platform asked for.
        platform: String,
    },
    /// The source names no image and no name was given.
    #[error("{}: {reason}; give a name", path.display())]
    NoName {
        /// The image source.
        path: PathBuf,
        /// Why no name could be found.
        reason: String,
    },
    /// An argument was refused.
    #[error("invalid argument {what}: {reason}")]
    InvalidArgument {
        /// The value.
        what: String,
        /// Why.
        reason: String,
    },
    /// The content store or image store failed.
    #[error(transparent)]
    Store(#[from] crate::Error),
    /// An error of the `oci` crate (digests, references, platforms).
    #[error(transparent)]
    Oci(#[from] berth_oci::Error),
}

impl Error {
    /// Classifies the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => ErrorKind::NotFound,
                _ => ErrorKind::Io,
            },
            Error::MissingFile { .. } | Error::MissingBlob { .. } => ErrorKind::NotFound,
            Error::NoMatchingPlatform { .. } => ErrorKind::NotFound,
            Error::UnknownFormat { .. }
            | Error::Truncated { .. }
            | Error::Corrupt { .. }
            | Error::UnsafeName { .. }
            | Error::DuplicateEntry { .. }
            | Error::JsonTooLarge { .. }
            | Error::Json { .. }
            | Error::UnsupportedMediaType { .. }
            | Error::InvalidImage { .. }
            | Error::NoName { .. }
            | Error::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Error::BlobMismatch { .. } => ErrorKind::FailedPrecondition,
            Error::Store(e) => e.kind(),
            Error::Oci(e) => e.kind(),
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

/// Result of import, export and build.
pub type Result<T, E = Error> = std::result::Result<T, E>;
