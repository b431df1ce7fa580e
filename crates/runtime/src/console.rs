//! Console sockets: receiving the pty master a container sends when
//! `process.terminal` is set.
//!
//! The runtime connects to the caller's unix socket (`console_socket` in
//! [`crate::CreateOptions`] / [`crate::ExecOptions`]); the container's init
//! allocates a pty from the container's own devpts instance, sends the
//! master with `SCM_RIGHTS` (one byte of payload) and makes the slave its
//! controlling terminal and stdio. A front end accepts on its socket and
//! calls [`recv_pty_master`].

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::error::{Error, Result};

/// Receives one fd sent with `SCM_RIGHTS` on `stream` (close-on-exec).
///
/// Errors: [`Error::Sys`] when the read fails, [`Error::Protocol`] when the
/// peer closed or sent no fd.
pub fn recv_pty_master(stream: &UnixStream) -> Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid; the pointers are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&cbuf);
    // SAFETY: msg points at live buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(Error::sys(
            "recvmsg console",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: msg was filled by recvmsg; CMSG_FIRSTHDR checks the length.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if cmsg.is_null() {
        return Err(Error::protocol("console socket: no fd received"));
    }
    // SAFETY: cmsg is a valid header inside cbuf.
    let (level, typ) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type) };
    if level != libc::SOL_SOCKET || typ != libc::SCM_RIGHTS {
        return Err(Error::protocol(
            "console socket: unexpected control message",
        ));
    }
    // SAFETY: an SCM_RIGHTS message carries at least one fd after the header.
    let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>()) };
    // SAFETY: the kernel installed this fd for us; we own it now.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
