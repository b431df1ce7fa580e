//! A sealed copy of the running executable (CVE-2019-5736).
//!
//! A front end that re-executes its own binary (`/proc/self/exe`) in a
//! context a container could reach must not let that binary be backed by a
//! writable host inode. [`seal_self_exe`] copies `/proc/self/exe` into a
//! `memfd`, seals it against any change and re-executes from it; call it
//! first thing in `main`. berth-runtime itself never re-executes the
//! runtime binary inside a container (the setup children are clones that
//! exec only the container's program), so library users that do not
//! re-exec need nothing; front ends that do are obliged to call this.

use std::ffi::{CString, OsString};
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

use crate::error::{Error, Result};

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// Whether the running executable is already a fully sealed memfd.
pub fn is_sealed() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: F_GET_SEALS on an fd we own.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// Copies the running executable into a sealed memfd (without executing it).
pub fn sealed_exe_copy() -> Result<OwnedFd> {
    let mut src = std::fs::File::open("/proc/self/exe")
        .map_err(|e| Error::io("open", "/proc/self/exe", e))?;
    // SAFETY: memfd_create with a static name.
    let raw = unsafe {
        libc::memfd_create(
            c"berth-sealed-exe".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if raw < 0 {
        return Err(Error::sys("memfd_create", std::io::Error::last_os_error()));
    }
    // SAFETY: raw is a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut dst = std::fs::File::from(fd);
    std::io::copy(&mut src, &mut dst).map_err(|e| Error::io("copy", "/proc/self/exe", e))?;
    dst.seek(SeekFrom::Start(0))
        .map_err(|e| Error::sys("lseek", e))?;
    // SAFETY: F_ADD_SEALS on an fd we own.
    if unsafe { libc::fcntl(dst.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(Error::sys("F_ADD_SEALS", std::io::Error::last_os_error()));
    }
    Ok(OwnedFd::from(dst))
}

/// Re-executes the program from a sealed memfd copy unless it already runs
/// from one. Returns only when already sealed (or on error).
///
/// Call it first thing in `main`, before any thread is started.
pub fn seal_self_exe() -> Result<()> {
    if is_sealed() {
        return Ok(());
    }
    let fd = sealed_exe_copy()?;
    let args: Vec<CString> = std::env::args_os()
        .map(|a: OsString| {
            CString::new(a.into_vec())
                .map_err(|_| Error::sys("argv", std::io::Error::other("NUL in argument")))
        })
        .collect::<Result<_>>()?;
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv)
                .map_err(|_| Error::sys("environ", std::io::Error::other("NUL in environment")))
        })
        .collect::<Result<_>>()?;
    let mut argv: Vec<*mut libc::c_char> = args.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv.push(std::ptr::null_mut());
    let mut envp: Vec<*mut libc::c_char> = env.iter().map(|a| a.as_ptr().cast_mut()).collect();
    envp.push(std::ptr::null_mut());
    // SAFETY: argv/envp are NULL-terminated arrays of valid C strings; the
    // empty path with AT_EMPTY_PATH executes the fd itself.
    unsafe {
        libc::execveat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    Err(Error::sys(
        "execveat sealed copy",
        std::io::Error::last_os_error(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_copy_rejects_writes() {
        let fd = sealed_exe_copy().unwrap();
        // SAFETY: F_GET_SEALS on an fd we own.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        assert_eq!(seals & SEALS, SEALS);
        let mut f = std::fs::File::from(fd);
        use std::io::Write;
        assert!(f.write_all(b"x").is_err());
        assert!(f.metadata().unwrap().len() > 1000);
        assert!(!is_sealed());
    }
}
