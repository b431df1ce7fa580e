//! The sync channel between the runtime and its setup children.
//!
//! One `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)` per child. Each
//! message is one fixed-size [`Msg`] record, so the child side needs no
//! allocation or serialisation: it `send`s a plain struct. A read of zero
//! bytes means the peer closed its end — exited, or `execve`d (the child's
//! end is close-on-exec, which is how the runtime learns that an exec
//! succeeded).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::error::{Error, Result, Step};
use crate::sys::{self, SysResult};

/// Message tags.
pub(crate) mod tag {
    /// runtime → child: the cgroup is set up; go on.
    pub(crate) const PROCEED: u32 = 1;
    /// stage1 → runtime: write my uid/gid maps.
    pub(crate) const MAP_REQUEST: u32 = 2;
    /// runtime → stage1: maps written.
    pub(crate) const MAP_DONE: u32 = 3;
    /// stage1 → runtime: the init (or exec) process was cloned; `value` is its pid.
    pub(crate) const CHILD_PID: u32 = 4;
    /// init → runtime: set up, waiting for start.
    pub(crate) const READY: u32 = 5;
    /// child → runtime: `step` failed at item `index` with errno `value`.
    pub(crate) const ERROR: u32 = 6;
    /// init → runtime: run the hooks of list `index` now.
    pub(crate) const HOOKS: u32 = 7;
    /// runtime → init: the hooks ran.
    pub(crate) const HOOKS_DONE: u32 = 8;
    /// runtime → init: your pid in the runtime's pid namespace is `value`.
    pub(crate) const INIT_PID: u32 = 9;
}

/// One sync record.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Msg {
    pub(crate) tag: u32,
    pub(crate) step: u32,
    pub(crate) index: u32,
    pub(crate) value: i32,
}

impl Msg {
    pub(crate) const fn new(tag: u32) -> Msg {
        Msg {
            tag,
            step: 0,
            index: 0,
            value: 0,
        }
    }

    pub(crate) const fn error(step: Step, index: u32, errno: i32) -> Msg {
        Msg {
            tag: tag::ERROR,
            step: step as u32,
            index,
            value: errno,
        }
    }
}

const MSG_LEN: usize = size_of::<Msg>();

/// Creates a close-on-exec SEQPACKET socket pair: (runtime end, child end).
pub(crate) fn pair() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints for socketpair to fill.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(Error::sys("socketpair", io::Error::last_os_error()));
    }
    // SAFETY: socketpair succeeded, so both fds are fresh and owned by us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Child side: sends one record. Async-signal-safe.
pub(crate) fn send(fd: RawFd, msg: &Msg) -> SysResult<()> {
    loop {
        // SAFETY: msg is a plain repr(C) struct of MSG_LEN readable bytes.
        let n = unsafe { libc::send(fd, (msg as *const Msg).cast(), MSG_LEN, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = sys::errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// Child side: receives one record; `None` when the peer closed. Async-signal-safe.
pub(crate) fn recv(fd: RawFd) -> SysResult<Option<Msg>> {
    let mut msg = Msg::default();
    loop {
        // SAFETY: msg is a plain repr(C) struct with MSG_LEN writable bytes.
        let n = unsafe { libc::recv(fd, (&mut msg as *mut Msg).cast(), MSG_LEN, 0) };
        if n == 0 {
            return Ok(None);
        }
        if n as usize == MSG_LEN {
            return Ok(Some(msg));
        }
        if n > 0 {
            return Err(libc::EPROTO);
        }
        let e = sys::errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// Runtime side of a channel.
#[derive(Debug)]
pub(crate) struct Channel {
    fd: OwnedFd,
}

/// How long the runtime waits for any single message from a setup child
/// before giving up on it.
const RECV_TIMEOUT: Duration = Duration::from_secs(120);

impl Channel {
    pub(crate) fn new(fd: OwnedFd) -> Channel {
        Channel { fd }
    }

    pub(crate) fn send(&self, msg: Msg) -> Result<()> {
        send(self.fd.as_raw_fd(), &msg)
            .map_err(|e| Error::sys("send sync message", io::Error::from_raw_os_error(e)))
    }

    /// Receives one record from process `peer`, `None` on EOF, an error
    /// (with the peer's kernel state, for diagnosis) after [`RECV_TIMEOUT`].
    pub(crate) fn recv(&self, peer: libc::pid_t) -> Result<Option<Msg>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout_ms = std::env::var("BERTH_SYNC_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(RECV_TIMEOUT.as_millis() as libc::c_int);
        loop {
            // SAFETY: pfd is a valid pollfd array of length 1.
            let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::sys("poll sync channel", e));
            }
            if r == 0 {
                let wchan =
                    std::fs::read_to_string(format!("/proc/{peer}/wchan")).unwrap_or_default();
                let stack =
                    std::fs::read_to_string(format!("/proc/{peer}/stack")).unwrap_or_default();
                return Err(Error::protocol(format!(
                    "no message from setup child {peer} within {timeout_ms}ms (wchan {wchan:?}, stack {stack:?})"
                )));
            }
            break;
        }
        recv(self.fd.as_raw_fd())
            .map_err(|e| Error::sys("receive sync message", io::Error::from_raw_os_error(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_cross_the_pair_and_eof_is_none() {
        let (a, b) = pair().unwrap();
        let ch = Channel::new(a);
        send(b.as_raw_fd(), &Msg::error(Step::Mount, 3, libc::EPERM)).unwrap();
        let m = ch.recv(0).unwrap().unwrap();
        assert_eq!(m.tag, tag::ERROR);
        assert_eq!(Step::from_u32(m.step), Some(Step::Mount));
        assert_eq!(m.index, 3);
        assert_eq!(m.value, libc::EPERM);
        drop(b);
        assert_eq!(ch.recv(0).unwrap(), None);
    }
}
