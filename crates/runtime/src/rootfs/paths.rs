//! Paths inside the container root, resolved as fds (CVE-2021-30465).
//!
//! A destination like `/a/b/c` is prepared as the prefixes `a`, `a/b`,
//! `a/b/c` and the names `a`, `b`, `c`. The child resolves each prefix with
//! `openat2(rootfd, prefix, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so a
//! symlink planted in the rootfs can never lead outside it, creates what is
//! missing with `mkdirat`/`openat(O_CREAT|O_EXCL|O_NOFOLLOW)` on the parent's
//! fd, and returns an `O_PATH` fd of the final component. Mounts then target
//! `/proc/self/fd/N`, never a string path.
//!
//! When `openat2` is unavailable (`ENOSYS`, or blocked by a seccomp filter
//! with `EPERM`), the fallback walks component by component with
//! `O_NOFOLLOW`, refusing every symlink (`ELOOP`): safe, if less permissive.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::{Component, Path};

use crate::error::{Error, Result};
use crate::sys::{self, SysResult};

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// A path under the container root, prepared for fd-based resolution.
#[derive(Debug, Clone)]
pub(crate) struct InRootPath {
    /// The path as written in the spec, for error messages.
    pub(crate) display: String,
    prefixes: Vec<CString>,
    names: Vec<CString>,
}

impl InRootPath {
    /// Prepares `path` (absolute or relative to the root; `..` is refused).
    pub(crate) fn new(field: &str, path: &Path) -> Result<InRootPath> {
        let mut names = Vec::new();
        for c in path.components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(n) => {
                    let s = n
                        .to_str()
                        .ok_or_else(|| Error::spec(field, "path is not valid UTF-8"))?;
                    names.push(s.to_string());
                }
                Component::ParentDir => {
                    return Err(Error::spec(
                        field,
                        format!("{} contains '..'", path.display()),
                    ));
                }
                Component::Prefix(_) => return Err(Error::spec(field, "unexpected path prefix")),
            }
        }
        if names.is_empty() {
            return Err(Error::spec(
                field,
                format!("{} names the root itself", path.display()),
            ));
        }
        let mut prefixes = Vec::with_capacity(names.len());
        let mut acc = String::new();
        for n in &names {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(n);
            prefixes.push(
                CString::new(acc.clone()).map_err(|_| Error::spec(field, "NUL byte in path"))?,
            );
        }
        let names = names
            .into_iter()
            .map(|n| CString::new(n).map_err(|_| Error::spec(field, "NUL byte in path")))
            .collect::<Result<Vec<_>>>()?;
        Ok(InRootPath {
            display: format!(
                "/{}",
                prefixes
                    .last()
                    .map(|p| p.to_string_lossy())
                    .unwrap_or_default()
            ),
            prefixes,
            names,
        })
    }

    /// The path relative to the root, as a C string (`a/b/c`).
    #[cfg(test)]
    pub(crate) fn relative(&self) -> &std::ffi::CStr {
        self.prefixes.last().map_or(c".", |c| c.as_c_str())
    }

    /// Whether the path is exactly `name` below the root (`/name`).
    pub(crate) fn is_top(&self, name: &str) -> bool {
        self.names.len() == 1 && self.names[0].to_bytes() == name.as_bytes()
    }

    /// Whether the path is `name` or below it.
    pub(crate) fn starts_with_top(&self, name: &str) -> bool {
        self.names
            .first()
            .is_some_and(|n| n.to_bytes() == name.as_bytes())
    }

    /// Opens the first `depth` components (`O_PATH`), resolving inside `rootfd`.
    fn open_prefix(&self, rootfd: RawFd, depth: usize, no_symlinks: bool) -> SysResult<RawFd> {
        if depth == 0 {
            // SAFETY: F_DUPFD_CLOEXEC on an fd we hold.
            return sys::cvt(unsafe { libc::fcntl(rootfd, libc::F_DUPFD_CLOEXEC, 3) });
        }
        let flags = libc::O_PATH | libc::O_CLOEXEC;
        let mut resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
        if no_symlinks {
            resolve |= RESOLVE_NO_SYMLINKS;
        }
        // openat2 returns EAGAIN when a concurrent rename or mount may have
        // raced the in-root lookup: retry a few times.
        let mut tries = 0;
        loop {
            match sys::openat2(rootfd, &self.prefixes[depth - 1], flags, 0, resolve) {
                Err(libc::ENOSYS) | Err(libc::EPERM) => return self.walk_nofollow(rootfd, depth),
                Err(libc::EAGAIN) if tries < 16 => tries += 1,
                other => return other,
            }
        }
    }

    /// Fallback resolution: component by component, refusing symlinks.
    fn walk_nofollow(&self, rootfd: RawFd, depth: usize) -> SysResult<RawFd> {
        // SAFETY: F_DUPFD_CLOEXEC on an fd we hold.
        let mut cur = sys::cvt(unsafe { libc::fcntl(rootfd, libc::F_DUPFD_CLOEXEC, 3) })?;
        for name in &self.names[..depth] {
            let next = sys::openat(
                cur,
                name,
                libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                0,
            );
            sys::close(cur);
            let next = next?;
            // SAFETY: an all-zero stat is a valid out-parameter.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: st is writable; next is an fd we own.
            if unsafe { libc::fstat(next, &mut st) } != 0 {
                let e = sys::errno();
                sys::close(next);
                return Err(e);
            }
            if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                sys::close(next);
                return Err(libc::ELOOP);
            }
            cur = next;
        }
        Ok(cur)
    }

    /// Opens the path (`O_PATH`) inside `rootfd`. Async-signal-safe.
    pub(crate) fn open(&self, rootfd: RawFd, no_symlinks: bool) -> SysResult<RawFd> {
        self.open_prefix(rootfd, self.names.len(), no_symlinks)
    }

    /// Opens the parent directory of the path inside `rootfd`.
    pub(crate) fn open_parent(&self, rootfd: RawFd) -> SysResult<RawFd> {
        self.open_prefix(rootfd, self.names.len() - 1, false)
    }

    /// The last component.
    pub(crate) fn leaf(&self) -> &std::ffi::CStr {
        self.names.last().map_or(c".", |c| c.as_c_str())
    }

    /// Opens the path inside `rootfd`, creating missing directories (mode
    /// 0755) and, if `leaf_is_file`, an empty regular file as the last
    /// component. `no_symlinks` refuses any symlink on the way. Returns an
    /// `O_PATH` fd. Async-signal-safe.
    pub(crate) fn create_all(
        &self,
        rootfd: RawFd,
        leaf_is_file: bool,
        no_symlinks: bool,
    ) -> SysResult<RawFd> {
        let n = self.names.len();
        for depth in 1..=n {
            match self.open_prefix(rootfd, depth, no_symlinks) {
                Ok(fd) => {
                    if depth == n {
                        return Ok(fd);
                    }
                    sys::close(fd);
                }
                Err(libc::ENOENT) => {
                    let parent = self.open_prefix(rootfd, depth - 1, no_symlinks)?;
                    let name = &self.names[depth - 1];
                    let r = if depth == n && leaf_is_file {
                        sys::openat(
                            parent,
                            name,
                            libc::O_CREAT
                                | libc::O_EXCL
                                | libc::O_WRONLY
                                | libc::O_NOFOLLOW
                                | libc::O_CLOEXEC,
                            0o644,
                        )
                        .map(sys::close)
                    } else {
                        // SAFETY: name is NUL-terminated; parent is an fd we hold.
                        sys::cvt(unsafe { libc::mkdirat(parent, name.as_ptr(), 0o755) }).map(|_| ())
                    };
                    sys::close(parent);
                    match r {
                        Ok(()) | Err(libc::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                    let fd = self.open_prefix(rootfd, depth, no_symlinks)?;
                    if depth == n {
                        return Ok(fd);
                    }
                    sys::close(fd);
                }
                Err(e) => return Err(e),
            }
        }
        Err(libc::EINVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::symlink;

    #[test]
    fn prepares_prefixes_and_refuses_dotdot() {
        let p = InRootPath::new("t", Path::new("/a/./b/c")).unwrap();
        assert_eq!(p.display, "/a/b/c");
        assert_eq!(p.relative(), c"a/b/c");
        assert_eq!(p.leaf(), c"c");
        assert!(InRootPath::new("t", Path::new("/a/../etc")).is_err());
        assert!(InRootPath::new("t", Path::new("/")).is_err());
        assert!(
            InRootPath::new("t", Path::new("/proc"))
                .unwrap()
                .is_top("proc")
        );
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("real")).unwrap();
        // An absolute symlink that would escape if followed on the host.
        symlink("/", root.join("escape")).unwrap();
        let rootf = std::fs::File::open(&root).unwrap();
        let p = InRootPath::new("t", Path::new("/escape/newdir")).unwrap();
        let fd = p.create_all(rootf.as_raw_fd(), false, false).unwrap();
        sys::close(fd);
        // The directory was created inside the root, not on the host.
        assert!(root.join("newdir").is_dir());
        assert!(!Path::new("/newdir").exists());
        // With no_symlinks the same path is refused.
        let p2 = InRootPath::new("t", Path::new("/escape/other")).unwrap();
        assert_eq!(
            p2.create_all(rootf.as_raw_fd(), false, true),
            Err(libc::ELOOP)
        );
        // The fallback walk refuses symlinks too.
        assert_eq!(p2.walk_nofollow(rootf.as_raw_fd(), 1), Err(libc::ELOOP));
        // Files are created as leaves.
        let f = InRootPath::new("t", Path::new("/real/file")).unwrap();
        let fd = f.create_all(rootf.as_raw_fd(), true, false).unwrap();
        sys::close(fd);
        assert!(root.join("real/file").is_file());
    }
}
