//! Errors of the registry client: one enum, every variant naming the URL, reference or digest
//! concerned, classified by [`Error::kind`].

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use berth_oci::Digest;

pub use berth_oci::ErrorKind;

/// Errors of [`super`] (pull, push, login).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection failed (refused, reset, TLS, timeout, malformed HTTP).
    #[error("{method} {url}: {reason}")]
    Transport {
        /// The HTTP method.
        method: &'static str,
        /// The URL asked for.
        url: String,
        /// The transport error.
        reason: String,
    },
    /// The registry answered with an unexpected status.
    #[error("{method} {url}: HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        /// The HTTP method.
        method: &'static str,
        /// The URL asked for.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body (registry error JSON), for the message.
        body: String,
        /// The `Retry-After` the registry asked for (429, 503), if any.
        retry_after: Option<Duration>,
    },
    /// The TLS handshake failed: the certificate does not verify (unknown CA, wrong name,
    /// expired) or the peer does not speak TLS. Never retried.
    #[error("{url}: TLS: {reason}")]
    Tls {
        /// The URL asked for.
        url: String,
        /// What the TLS layer reported, with a hint for certificate errors.
        reason: String,
    },
    /// A docker credential helper (`docker-credential-<name>`) failed.
    #[error("credential helper {helper} for {server}: {reason}")]
    CredentialHelper {
        /// The helper program.
        helper: String,
        /// The server it was asked about.
        server: String,
        /// What went wrong (not found, exit status, bad JSON).
        reason: String,
    },
    /// The registry refused our credentials (or we had none to give).
    #[error("{url}: unauthorized: {reason}")]
    Unauthorized {
        /// The URL asked for.
        url: String,
        /// What went wrong (no credentials, rejected credentials, token refused).
        reason: String,
    },
    /// The registry broke the protocol (missing header, bad challenge, bad Location, …).
    #[error("{url}: protocol error: {reason}")]
    Protocol {
        /// The URL concerned.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// Redirects went on longer than the limit (or looped).
    #[error("{url}: more than {max} redirects")]
    TooManyRedirects {
        /// The first URL.
        url: String,
        /// The limit.
        max: usize,
    },
    /// A document (manifest, index, config) is larger than the cap.
    #[error("{url}: document of {size} bytes exceeds the {max}-byte cap")]
    TooLarge {
        /// The URL concerned.
        url: String,
        /// Its declared or observed size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// Downloaded bytes do not match the digest they were asked by (nothing was stored).
    #[error("{url}: content does not match {expected}: got {actual} ({size} bytes)")]
    DigestMismatch {
        /// The URL concerned.
        url: String,
        /// The digest asked for.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
        /// How many bytes arrived.
        size: u64,
    },
    /// The body ended before the expected size (the partial ingest is kept for a resume).
    #[error("{url}: body ended after {got} of {expected} bytes")]
    Truncated {
        /// The URL concerned.
        url: String,
        /// The expected size.
        expected: u64,
        /// Bytes received in total (including a resumed prefix).
        got: u64,
    },
    /// The reference does not parse, or cannot be used as asked.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference given.
        reference: String,
        /// Why it was refused.
        reason: String,
    },
    /// A document failed to parse or validate.
    #[error("{what}: {source}")]
    Document {
        /// The digest or URL of the document.
        what: String,
        /// The parse error.
        #[source]
        source: berth_oci::Error,
    },
    /// A media type the client does not handle.
    #[error("{digest}: unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// The media type.
        media_type: String,
        /// The digest of the blob.
        digest: Digest,
    },
    /// No manifest of the index matches the platform asked for.
    #[error("{reference}: no manifest for platform {platform}")]
    NoMatchingPlatform {
        /// The reference pulled.
        reference: String,
        /// The platform asked for.
        platform: String,
    },
    /// The docker-style auth file is unreadable or malformed.
    #[error("auth file {}: {reason}", path.display())]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A containerd `hosts.toml` is unreadable or malformed.
    #[error("registry hosts file {}: {reason}", path.display())]
    HostsConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A local I/O call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] crate::Error),
    /// Unpacking the pulled image failed.
    #[error(transparent)]
    Unpack(#[from] crate::unpack::Error),
}

/// Results of the registry client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The class of the error (containerd `errdefs` style).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Transport { .. } | Error::Truncated { .. } | Error::TooManyRedirects { .. } => {
                ErrorKind::Unavailable
            }
            Error::Status { status, .. } => match *status {
                404 => ErrorKind::NotFound,
                409 => ErrorKind::AlreadyExists,
                400 | 405 | 413 | 416 => ErrorKind::InvalidArgument,
                401 | 403 => ErrorKind::FailedPrecondition,
                _ => ErrorKind::Unavailable,
            },
            Error::Unauthorized { .. } | Error::Tls { .. } => ErrorKind::FailedPrecondition,
            Error::CredentialHelper { .. } => ErrorKind::Unavailable,
            Error::Protocol { .. } => ErrorKind::Unavailable,
            Error::TooLarge { .. }
            | Error::InvalidReference { .. }
            | Error::Document { .. }
            | Error::UnsupportedMediaType { .. }
            | Error::AuthFile { .. }
            | Error::HostsConfig { .. } => ErrorKind::InvalidArgument,
            Error::DigestMismatch { .. } => ErrorKind::FailedPrecondition,
            Error::NoMatchingPlatform { .. } => ErrorKind::NotFound,
            Error::Io { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => ErrorKind::NotFound,
                _ => ErrorKind::Io,
            },
            Error::Store(e) => e.kind(),
            Error::Unpack(e) => e.kind(),
        }
    }

    /// Whether repeating the operation may succeed: a transport failure (refused, reset,
    /// timed out), a body that ended early, or HTTP 408, 429, 500, 502, 503, 504. Not 401,
    /// 403, 404, digest mismatches, protocol or TLS errors (see [`super::RetryPolicy`]).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Truncated { .. } => true,
            Error::Status { status, .. } => super::retry::transient_status(*status),
            _ => false,
        }
    }

    /// Whether the failure belongs to the host that was talked to (unreachable, refused,
    /// an error status, bad bytes, a broken protocol), so that another endpoint of the
    /// registry (a mirror, the upstream) may do better. Local failures (store, files,
    /// credential helpers, the reference, platform choice) are not.
    pub fn is_host_failure(&self) -> bool {
        matches!(
            self,
            Error::Transport { .. }
                | Error::Status { .. }
                | Error::Tls { .. }
                | Error::Unauthorized { .. }
                | Error::Protocol { .. }
                | Error::TooManyRedirects { .. }
                | Error::TooLarge { .. }
                | Error::Truncated { .. }
                | Error::DigestMismatch { .. }
                | Error::Document { .. }
                | Error::UnsupportedMediaType { .. }
        )
    }

    /// The `Retry-After` the registry asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
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
