//! The crate's error type and its containerd-errdefs-like classification.
//!
//! Policy (decided for the whole crate):
//! - a **missing** cgroup file (controller not enabled, kernel too old, cgroup removed while it
//!   is read) is never an error: the figure it feeds is `None`;
//! - a file that exists but holds **malformed** content is an error ([`MetricsError::Parse`])
//!   naming the file and the line, so a kernel format change is loud rather than silently zero.
//!   The [`crate::collector::CgroupCollector`] logs such an error, counts it and leaves that one
//!   container out of the scrape; the other containers are still exported.

use std::path::PathBuf;

/// Classification of an error, in the style of containerd's `errdefs`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The thing asked for does not exist.
    NotFound,
    /// The thing to create already exists.
    AlreadyExists,
    /// The caller passed an argument that can never work.
    InvalidArgument,
    /// The system is not in a state where the operation can work.
    FailedPrecondition,
    /// A resource is temporarily unavailable.
    Unavailable,
    /// An I/O error from the kernel.
    Io,
    /// A bug or an unexpected kernel answer.
    Internal,
}

/// Errors of the metrics crate. Every variant names the path (or pid) concerned.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Reading or opening a file failed for a reason other than its absence.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A cgroup file exists but its content does not follow the kernel's format.
    #[error("malformed {path} (line {line}): {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the offending line (0 when not line-specific).
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// No cgroup hierarchy (neither v1 controllers nor a cgroup2 tree) was found under `root`.
    #[error("no cgroup hierarchy under {root}")]
    NoHierarchy {
        /// The cgroupfs root that was inspected.
        root: PathBuf,
    },
    /// The process has no readable `/proc/<pid>/cgroup`.
    #[error("process {pid} not found ({path})")]
    ProcessNotFound {
        /// The pid.
        pid: u32,
        /// The file that was looked for.
        path: PathBuf,
    },
    /// A cgroup path or argument given by the caller is unusable.
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidPath {
        /// The offending path.
        path: PathBuf,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The cgroup (directory) does not exist.
    #[error("cgroup {path} does not exist")]
    CgroupNotFound {
        /// The cgroup directory.
        path: PathBuf,
    },
    /// A system call of the OOM watcher failed.
    #[error("{op} on {path}: {source}")]
    Sys {
        /// The operation (`eventfd`, `inotify_add_watch`, …).
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
}

impl MetricsError {
    /// Classifies the error (containerd errdefs style).
    pub fn kind(&self) -> ErrorKind {
        match self {
            MetricsError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                std::io::ErrorKind::PermissionDenied => ErrorKind::FailedPrecondition,
                _ => ErrorKind::Io,
            },
            MetricsError::Parse { .. } => ErrorKind::Internal,
            MetricsError::NoHierarchy { .. } => ErrorKind::FailedPrecondition,
            MetricsError::ProcessNotFound { .. } | MetricsError::CgroupNotFound { .. } => {
                ErrorKind::NotFound
            }
            MetricsError::InvalidPath { .. } => ErrorKind::InvalidArgument,
            MetricsError::Sys { source, .. } => match source {
                nix::Error::ENOENT => ErrorKind::NotFound,
                nix::Error::EMFILE | nix::Error::ENFILE | nix::Error::ENOSPC => {
                    ErrorKind::Unavailable
                }
                nix::Error::EINVAL => ErrorKind::InvalidArgument,
                _ => ErrorKind::Io,
            },
        }
    }

    pub(crate) fn parse(path: &std::path::Path, line: usize, reason: impl Into<String>) -> Self {
        MetricsError::Parse {
            path: path.to_path_buf(),
            line,
            reason: reason.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = MetricsError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_classify_variants() {
        let nf = MetricsError::Io {
            path: "/x".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(nf.kind(), ErrorKind::NotFound);
        let p = MetricsError::parse(std::path::Path::new("/a/memory.stat"), 3, "bad");
        assert_eq!(p.kind(), ErrorKind::Internal);
        assert!(p.to_string().contains("/a/memory.stat"));
        assert!(p.to_string().contains("line 3"));
        let inv = MetricsError::InvalidPath {
            path: "../x".into(),
            reason: "contains ..",
        };
        assert_eq!(inv.kind(), ErrorKind::InvalidArgument);
        let sys = MetricsError::Sys {
            op: "eventfd",
            path: "/x".into(),
            source: nix::Error::EMFILE,
        };
        assert_eq!(sys.kind(), ErrorKind::Unavailable);
    }
}
