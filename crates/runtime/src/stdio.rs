//! Options for create/exec, stdio passing, and the handle of a spawned process.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::spawn::FdMove;

/// Where one of the container process's standard fds comes from.
#[derive(Debug, Default)]
pub enum Stdio {
    /// The calling process's fd of the same number.
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// This fd (moved into the container process).
    Fd(OwnedFd),
}

/// Options of [`crate::Runtime::create`].
#[derive(Debug, Default)]
pub struct CreateOptions {
    /// The container's stdin.
    pub stdin: Stdio,
    /// The container's stdout.
    pub stdout: Stdio,
    /// The container's stderr.
    pub stderr: Stdio,
    /// Extra fds passed as 3, 4, ... in order (`LISTEN_FDS` style).
    pub preserve_fds: Vec<OwnedFd>,
    /// A unix socket to send the pty master to when `process.terminal` is set.
    pub console_socket: Option<PathBuf>,
    /// Write the init pid here after create.
    pub pid_file: Option<PathBuf>,
    /// Move the rootfs over `/` and `chroot` instead of `pivot_root`
    /// (for ramfs roots; weaker isolation).
    pub no_pivot: bool,
    /// Keep the caller's session keyring instead of joining a new
    /// `_ses.<id>` keyring (runc's `--no-new-keyring`).
    pub no_new_keyring: bool,
}

/// Options of [`crate::Runtime::exec`].
#[derive(Debug, Default)]
pub struct ExecOptions {
    /// The process's stdin.
    pub stdin: Stdio,
    /// The process's stdout.
    pub stdout: Stdio,
    /// The process's stderr.
    pub stderr: Stdio,
    /// Extra fds passed as 3, 4, ...
    pub preserve_fds: Vec<OwnedFd>,
    /// A unix socket to send the pty master to when `process.terminal` is set.
    pub console_socket: Option<PathBuf>,
    /// Write the process's pid here.
    pub pid_file: Option<PathBuf>,
}

/// How a container process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + signal.
    pub fn code(&self) -> i32 {
        match *self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled(s) => 128 + s,
        }
    }

    fn from_raw(st: libc::c_int) -> Option<ExitStatus> {
        if libc::WIFEXITED(st) {
            Some(ExitStatus::Exited(libc::WEXITSTATUS(st)))
        } else if libc::WIFSIGNALED(st) {
            Some(ExitStatus::Signaled(libc::WTERMSIG(st)))
        } else {
            None
        }
    }
}

/// A container process (init or exec'd) that is a child of the calling process.
///
/// Only the process that called `create`/`exec` can wait for it; other
/// processes observe it through [`crate::Runtime::state`]. If it is never
/// waited for, it stays a zombie until the caller exits.
#[derive(Debug)]
pub struct ContainerProcess {
    pid: libc::pid_t,
}

impl ContainerProcess {
    pub(crate) fn new(pid: libc::pid_t) -> ContainerProcess {
        ContainerProcess { pid }
    }

    /// The process's pid in the caller's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Blocks until the process exits and reaps it.
    ///
    /// Errors: [`Error::Sys`] (e.g. `ECHILD` when called from another
    /// process or twice).
    pub fn wait(&self) -> Result<ExitStatus> {
        loop {
            let mut st = 0;
            // SAFETY: waiting for a specific pid with a valid status pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut st, 0) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::sys("waitpid", e));
            }
            if let Some(s) = ExitStatus::from_raw(st) {
                return Ok(s);
            }
        }
    }

    /// Reaps the process if it has exited.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        let mut st = 0;
        // SAFETY: as in `wait`, with WNOHANG.
        let r = unsafe { libc::waitpid(self.pid, &mut st, libc::WNOHANG) };
        if r < 0 {
            return Err(Error::sys("waitpid", std::io::Error::last_os_error()));
        }
        Ok(if r == 0 {
            None
        } else {
            ExitStatus::from_raw(st)
        })
    }
}

fn dup_cloexec(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    fd.try_clone_to_owned().map_err(|e| Error::sys("dup", e))
}

/// Turns stdio choices and preserved fds into fd moves. Inherited fds that
/// are closed in the caller become `/dev/null`.
pub(crate) fn fd_moves(stdio: [Stdio; 3], preserve: Vec<OwnedFd>) -> Result<(Vec<FdMove>, RawFd)> {
    let mut moves = Vec::new();
    for (target, s) in stdio.into_iter().enumerate() {
        let target = target as RawFd;
        let source = match s {
            Stdio::Fd(fd) => fd,
            Stdio::Null => null()?,
            Stdio::Inherit => {
                // SAFETY: F_GETFD on a plain fd number only queries it.
                if unsafe { libc::fcntl(target, libc::F_GETFD) } < 0 {
                    null()?
                } else {
                    // SAFETY: the fd is open (checked above) and only
                    // borrowed for the duration of the dup.
                    dup_cloexec(unsafe { BorrowedFd::borrow_raw(target) })?
                }
            }
        };
        moves.push(FdMove { source, target });
    }
    let n = 3 + preserve.len() as RawFd;
    for (i, fd) in preserve.into_iter().enumerate() {
        moves.push(FdMove {
            source: fd,
            target: 3 + i as RawFd,
        });
    }
    Ok((moves, n))
}

fn null() -> Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| Error::io("open", "/dev/null", e))
}

/// Connects to a console socket (paths longer than `sun_path` go through
/// `/proc/self/fd`).
pub(crate) fn connect_console(path: &Path) -> Result<OwnedFd> {
    connect_unix(path).map(OwnedFd::from)
}

/// Connects to a unix socket, working around the 108-byte `sun_path` limit.
pub(crate) fn connect_unix(path: &Path) -> Result<UnixStream> {
    if path.as_os_str().len() < 100 {
        return UnixStream::connect(path).map_err(|e| Error::io("connect", path, e));
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let dir = std::fs::File::open(parent).map_err(|e| Error::io("open", parent, e))?;
    let name = path.file_name().unwrap_or_default();
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    UnixStream::connect(&short).map_err(|e| Error::io("connect", path, e))
}

/// Binds a listening unix socket, working around the `sun_path` limit.
pub(crate) fn bind_unix(path: &Path) -> Result<std::os::unix::net::UnixListener> {
    use std::os::unix::net::UnixListener;
    if path.as_os_str().len() < 100 {
        return UnixListener::bind(path).map_err(|e| Error::io("bind", path, e));
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let dir = std::fs::File::open(parent).map_err(|e| Error::io("open", parent, e))?;
    let name = path.file_name().unwrap_or_default();
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    UnixListener::bind(&short).map_err(|e| Error::io("bind", path, e))
}

/// Writes `pid` to `path` atomically.
pub(crate) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("tmp-berth");
    std::fs::write(&tmp, pid.to_string()).map_err(|e| Error::io("write pid file", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename pid file", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn unix_sockets_work_beyond_sun_path_length() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&long).unwrap();
        let path = long.join("start.sock");
        assert!(path.as_os_str().len() > 108);
        let listener = bind_unix(&path).unwrap();
        assert!(path.exists());
        let mut client = connect_unix(&path).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        server.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
    }

    #[test]
    fn exit_status_codes() {
        assert_eq!(ExitStatus::Exited(3).code(), 3);
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
    }
}
