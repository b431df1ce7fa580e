//! Async-signal-safe system call helpers for the setup children.
//!
//! Code that runs between `clone` and `execve` may not allocate, lock or log:
//! the parent may be multi-threaded and another thread may hold the allocator
//! lock at the moment of the clone. Everything here is a thin wrapper over a
//! `libc` call that returns the errno as a plain `i32`, plus a fixed-size
//! buffer for `/proc/self/fd/N` paths.

use std::ffi::CStr;
use std::os::fd::RawFd;

/// A child-side result: the error is a raw errno.
pub(crate) type SysResult<T> = Result<T, i32>;

/// The calling thread's errno.
pub(crate) fn errno() -> i32 {
    // SAFETY: __errno_location always returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Converts a `-1`-on-error return value.
pub(crate) fn cvt(ret: libc::c_int) -> SysResult<libc::c_int> {
    if ret == -1 { Err(errno()) } else { Ok(ret) }
}

/// Converts a `-1`-on-error `long` return value (raw `syscall`).
pub(crate) fn cvt_long(ret: libc::c_long) -> SysResult<libc::c_long> {
    if ret == -1 { Err(errno()) } else { Ok(ret) }
}

/// `setresuid(2)` as a raw system call.
///
/// glibc's wrapper broadcasts the change to every thread it knows of
/// (`__nptl_setxid`), taking its thread-list lock; in a child cloned from a
/// multi-threaded parent that list is stale and the lock may be held
/// forever. The raw call changes only the calling (single) thread.
pub(crate) fn setresuid(uid: libc::uid_t) -> SysResult<()> {
    // SAFETY: plain integer arguments.
    cvt_long(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) }).map(|_| ())
}

/// `setresgid(2)` as a raw system call (see [`setresuid`]).
pub(crate) fn setresgid(gid: libc::gid_t) -> SysResult<()> {
    // SAFETY: plain integer arguments.
    cvt_long(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) }).map(|_| ())
}

/// `setgroups(2)` as a raw system call (see [`setresuid`]).
pub(crate) fn setgroups(gids: &[libc::gid_t]) -> SysResult<()> {
    // SAFETY: the pointer and length describe a valid slice.
    cvt_long(unsafe { libc::syscall(libc::SYS_setgroups, gids.len(), gids.as_ptr()) }).map(|_| ())
}

/// Closes a raw fd, ignoring errors (setup children only).
pub(crate) fn close(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: closing an fd number we own; a bad number yields EBADF only.
        unsafe { libc::close(fd) };
    }
}

/// Terminates the calling child immediately, without running destructors
/// or atexit handlers (they may allocate or flush shared stdio buffers).
pub(crate) fn exit_child(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// A NUL-terminated `/proc/self/fd/<n>` path in a fixed stack buffer.
pub(crate) struct FdPath {
    buf: [u8; 32],
}

impl FdPath {
    /// Formats `/proc/self/fd/<fd>` without allocating.
    pub(crate) fn new(fd: RawFd) -> FdPath {
        let mut buf = [0u8; 32];
        let prefix = b"/proc/self/fd/";
        buf[..prefix.len()].copy_from_slice(prefix);
        let mut digits = [0u8; 12];
        let mut n = if fd < 0 { 0u32 } else { fd as u32 };
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            buf[prefix.len() + i] = digits[len - 1 - i];
        }
        FdPath { buf }
    }

    /// The path as a C string.
    pub(crate) fn as_cstr(&self) -> &CStr {
        // The buffer always contains a NUL (at most 14 + 10 bytes are written).
        CStr::from_bytes_until_nul(&self.buf).unwrap_or(c"/proc/self/fd/")
    }
}

/// `openat2(2)` with the given resolve flags; `ENOSYS` when unavailable.
pub(crate) fn openat2(
    dirfd: RawFd,
    path: &CStr,
    flags: libc::c_int,
    mode: u64,
    resolve: u64,
) -> SysResult<RawFd> {
    // SAFETY: open_how is plain data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.mode = mode;
    how.resolve = resolve;
    // SAFETY: `how` is a valid open_how of the size we pass; path is NUL-terminated.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            path.as_ptr(),
            &how as *const libc::open_how,
            size_of::<libc::open_how>(),
        )
    };
    cvt_long(ret).map(|fd| fd as RawFd)
}

/// `openat(2)`.
pub(crate) fn openat(dirfd: RawFd, path: &CStr, flags: libc::c_int, mode: u32) -> SysResult<RawFd> {
    // SAFETY: path is NUL-terminated; the kernel validates the rest.
    cvt(unsafe { libc::openat(dirfd, path.as_ptr(), flags, mode as libc::c_uint) })
}

/// `mount(2)` with optional C-string arguments.
pub(crate) fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> SysResult<()> {
    let p = |c: Option<&CStr>| c.map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null or a NUL-terminated string that
    // outlives the call.
    cvt(unsafe {
        libc::mount(
            p(source),
            target.as_ptr(),
            p(fstype),
            flags,
            p(data).cast::<libc::c_void>(),
        )
    })
    .map(|_| ())
}

/// Writes all of `data` to `fd`.
pub(crate) fn write_all(fd: RawFd, mut data: &[u8]) -> SysResult<()> {
    while !data.is_empty() {
        // SAFETY: data points to `data.len()` readable bytes.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// Opens `path` relative to `dirfd` for writing and writes `data` to it.
pub(crate) fn write_file_at(dirfd: RawFd, path: &CStr, data: &[u8]) -> SysResult<()> {
    let fd = openat(
        dirfd,
        path,
        libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        0,
    )?;
    let r = write_all(fd, data);
    close(fd);
    r
}

/// `fstatfs(2)`'s filesystem magic for `fd`.
pub(crate) fn fs_magic(fd: RawFd) -> SysResult<i64> {
    // SAFETY: an all-zero statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid, writable statfs.
    cvt(unsafe { libc::fstatfs(fd, &mut st) })?;
    Ok(st.f_type as i64)
}

/// The mount flags (`ST_*` translated to `MS_*`) of the filesystem at `fd`,
/// restricted to the ones that are locked in a user namespace.
///
/// glibc's `fstatvfs` takes the flags from the kernel's `f_flags` (marked
/// `ST_VALID` since Linux 2.6.36) without reading `/proc/mounts`, so it
/// stays a plain system call here.
pub(crate) fn locked_mount_flags(fd: RawFd) -> SysResult<libc::c_ulong> {
    // SAFETY: an all-zero statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid, writable statvfs.
    cvt(unsafe { libc::fstatvfs(fd, &mut st) })?;
    let flags = st.f_flag;
    let pairs: [(libc::c_ulong, libc::c_ulong); 6] = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    let mut out = 0;
    for (st_flag, ms_flag) in pairs {
        if flags & st_flag != 0 {
            out |= ms_flag;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_flags_match_the_mount_table() {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let opts = mounts
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(1) == Some(&"/proc")).then(|| f[3].to_string())
            })
            .unwrap();
        let f = std::fs::File::open("/proc").unwrap();
        use std::os::fd::AsRawFd;
        let flags = locked_mount_flags(f.as_raw_fd()).unwrap();
        for (name, bit) in [
            ("nosuid", libc::MS_NOSUID),
            ("nodev", libc::MS_NODEV),
            ("noexec", libc::MS_NOEXEC),
        ] {
            assert_eq!(
                opts.split(',').any(|o| o == name),
                flags & bit != 0,
                "{name} in {opts}"
            );
        }
    }

    #[test]
    fn fd_path_formats_numbers() {
        assert_eq!(FdPath::new(0).as_cstr(), c"/proc/self/fd/0");
        assert_eq!(FdPath::new(7).as_cstr(), c"/proc/self/fd/7");
        assert_eq!(FdPath::new(1234).as_cstr(), c"/proc/self/fd/1234");
        assert_eq!(FdPath::new(i32::MAX).as_cstr(), c"/proc/self/fd/2147483647");
    }
}
