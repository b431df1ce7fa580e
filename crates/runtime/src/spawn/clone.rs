//! A fork-like raw `clone`.

use crate::sys::{self, SysResult};

/// Clones the calling thread into a new process, fork style (the child
/// continues on a copy of the stack), with extra `CLONE_*` flags.
///
/// Returns `Ok(0)` in the child and the child's pid in the parent.
///
/// # Safety
///
/// The caller may be multi-threaded: in the child, only async-signal-safe
/// code may run (no allocation, locks or destructors), and the child must
/// leave through `execve` or `_exit`, never by returning into code that
/// expects the parent's threads to exist.
pub(crate) unsafe fn clone_raw(flags: libc::c_ulong) -> SysResult<libc::pid_t> {
    // SAFETY: a NULL stack makes clone behave like fork: the child runs on a
    // copy-on-write copy of the caller's stack. The caller upholds the
    // post-fork restrictions documented above.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    sys::cvt_long(r).map(|pid| pid as libc::pid_t)
}
