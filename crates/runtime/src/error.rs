//! The runtime's error type.
//!
//! Every variant names what it concerns (container id, path, step), and
//! [`Error::kind`] classifies it in containerd's errdefs style so callers can
//! branch without matching on variants. Failures inside the container's setup
//! processes arrive as [`Error::Child`], naming the [`Step`] that failed and,
//! where one exists, the path it was working on.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A classification of [`Error`]s (containerd errdefs style).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The container (or a file it needs) does not exist.
    NotFound,
    /// A container with that id already exists.
    AlreadyExists,
    /// The caller passed something invalid (id, spec, signal, ...).
    InvalidArgument,
    /// The container is not in a state that allows the operation.
    FailedPrecondition,
    /// The host lacks a feature the spec asks for.
    Unavailable,
    /// An I/O or system call failure.
    Io,
    /// A bug or an unexpected condition inside the runtime.
    Internal,
}

/// Declares [`Step`] and the table that decodes its numbers, from one list of names.
macro_rules! steps {
    ($first:ident, $($name:ident),+ $(,)?) => {
        /// A step of the container setup performed in a child process.
        ///
        /// Sent across the sync channel as a number, so the enum is `repr(u32)`.
        #[allow(missing_docs)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum Step {
            $first = 1,
            $($name,)+
        }

        impl Step {
            /// Every step, in numbering order.
            const ALL: &'static [Step] = &[Step::$first, $(Step::$name,)+];
        }
    };
}

steps!(
    CloseFds,
    SetupStdio,
    Dumpable,
    JoinNamespace,
    UnshareUserNamespace,
    UnshareNamespaces,
    TimeOffsets,
    CloneInit,
    SetHostname,
    SetDomainname,
    RootPropagation,
    BindRootfs,
    OpenRootfs,
    ResolveMountTarget,
    Mount,
    MountPropagation,
    RemountReadonly,
    CreateDevice,
    CreateSymlink,
    PivotRoot,
    ReadonlyRoot,
    RootfsPropagation,
    Sysctl,
    MaskPath,
    ReadonlyPath,
    OomScoreAdj,
    Rlimit,
    Seccomp,
    DropBoundingCapability,
    KeepCaps,
    SetGroups,
    SetGid,
    SetUid,
    Chdir,
    VerifyCwd,
    SetCapabilities,
    RaiseAmbientCapability,
    NoNewPrivileges,
    Umask,
    CloseRange,
    LsmLabel,
    Console,
    WaitStart,
    Exec,
    Sync,
    OpenProc,
    ParentDied,
    StartContainerHook,
    IoPriority,
    Personality,
    Scheduler,
    SessionKeyring,
);

impl Step {
    /// Decodes a step number received from a child.
    pub(crate) fn from_u32(v: u32) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| *s as u32 == v)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The container id is not acceptable.
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId {
        /// The rejected id.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// No container with that id exists under the state root.
    #[error("container {id:?} does not exist")]
    NotFound {
        /// The container id.
        id: String,
    },
    /// A container with that id already exists.
    #[error("container {id:?} already exists")]
    AlreadyExists {
        /// The container id.
        id: String,
    },
    /// The bundle's config.json asks for something invalid.
    #[error("invalid spec: {field}: {reason}")]
    InvalidSpec {
        /// Which part of the spec (e.g. `mounts[2].destination`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The spec asks for a feature this host or build does not support.
    #[error("unsupported: {feature}: {reason}")]
    Unsupported {
        /// The feature requested.
        feature: String,
        /// Why it is unavailable.
        reason: String,
    },
    /// The container's state forbids the operation.
    #[error("container {id:?} is {status}; cannot {op}")]
    InvalidState {
        /// The container id.
        id: String,
        /// Its current status (OCI name).
        status: String,
        /// The refused operation.
        op: &'static str,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A system call that concerns no path failed.
    #[error("{op}: {source}")]
    Sys {
        /// The operation (usually the syscall name).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A container setup step failed in a child process.
    #[error("container setup failed at step {step}{}: {source}", path_suffix(.path))]
    Child {
        /// The step that failed.
        step: Step,
        /// The path (or name) the step concerned, when there is one.
        path: Option<String>,
        /// The errno reported by the child.
        #[source]
        source: io::Error,
    },
    /// The setup processes died or broke the sync protocol.
    #[error("container setup process failed: {reason}")]
    Protocol {
        /// What went wrong.
        reason: String,
    },
    /// A cgroup operation failed.
    #[error("cgroup {op} {path}: {reason}")]
    Cgroup {
        /// The operation.
        op: &'static str,
        /// The cgroup path.
        path: String,
        /// The error text from cgroups-rs or the kernel.
        reason: String,
    },
    /// The container's cgroup already holds processes of something else.
    #[error("cgroup {path} is in use: it already has processes")]
    CgroupBusy {
        /// The cgroup path.
        path: String,
    },
    /// The seccomp profile could not be compiled.
    #[error("seccomp: {reason}")]
    Seccomp {
        /// What failed.
        reason: String,
    },
    /// A state file could not be parsed or written.
    #[error("state file {path}: {source}")]
    StateFile {
        /// The state file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A hook failed or timed out.
    #[error("{hook} hook {path}: {reason}")]
    Hook {
        /// Which hook list (e.g. `createRuntime`).
        hook: &'static str,
        /// The hook's program.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

fn path_suffix(path: &Option<String>) -> String {
    match path {
        Some(p) => format!(" ({p})"),
        None => String::new(),
    }
}

impl Error {
    /// Classifies the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidId { .. } | Error::InvalidSpec { .. } => ErrorKind::InvalidArgument,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::InvalidState { .. } | Error::CgroupBusy { .. } => ErrorKind::FailedPrecondition,
            Error::Unsupported { .. } => ErrorKind::Unavailable,
            Error::Io { source, .. } | Error::Sys { source, .. } => io_kind(source),
            Error::Child { source, .. } => io_kind(source),
            Error::Cgroup { .. } | Error::Hook { .. } => ErrorKind::Io,
            Error::Seccomp { .. } => ErrorKind::InvalidArgument,
            Error::Protocol { .. } | Error::StateFile { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sys(op: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Sys {
            op,
            source: source.into(),
        }
    }

    pub(crate) fn spec(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidSpec {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn protocol(reason: impl Into<String>) -> Self {
        Error::Protocol {
            reason: reason.into(),
        }
    }
}

fn io_kind(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
        io::ErrorKind::InvalidInput => ErrorKind::InvalidArgument,
        _ => ErrorKind::Io,
    }
}

/// The runtime's result type.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_round_trips_through_u32() {
        for v in 1..=52u32 {
            let s = Step::from_u32(v).unwrap();
            assert_eq!(s as u32, v);
        }
        assert!(Step::from_u32(0).is_none());
        assert!(Step::from_u32(53).is_none());
    }

    #[test]
    fn child_error_names_step_and_path() {
        let e = Error::Child {
            step: Step::Chdir,
            path: Some("/nonexistent".into()),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        let s = e.to_string();
        assert!(s.contains("Chdir"), "{s}");
        assert!(s.contains("/nonexistent"), "{s}");
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
}
