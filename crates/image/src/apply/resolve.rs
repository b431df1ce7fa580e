//! Resolution of entry paths inside the apply root, through file descriptors only.
//!
//! Every entry name is first cleaned lexically ([`clean`]): leading slashes dropped, `.` and
//! empty components removed, `..` clamped at the root. Then the entry's *parent* directory is
//! resolved from the root fd each time — nothing is cached across entries, so an entry that turns
//! `foo` into a symlink cannot redirect a later entry through a stale lookup (CVE-2025-47290).
//!
//! The fast path is `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: the kernel treats the root
//! fd as `/` for absolute symlinks and `..`. When openat2 is unavailable (ENOSYS, or EPERM under a
//! seccomp filter), or when missing parents must be created, a userspace walk does the same
//! job: one component at a time with `openat(O_PATH | O_NOFOLLOW)`, `readlinkat` on symlinks,
//! absolute targets re-rooted, `..` clamped at the root through a stack of directory fds, at most
//! [`MAX_SYMLINKS`] links. The final component of an entry is never resolved here; callers act on
//! it with `*at` calls that do not follow it.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// The most symlinks one resolution may traverse (the kernel's own limit is 40; containerd's
/// lexical resolver allows 255).
pub const MAX_SYMLINKS: usize = 255;

/// A cleaned entry path: its components, none empty, `.` or `..`.
pub type Components = Vec<Vec<u8>>;

/// Cleans a tar entry name lexically, as `filepath.Clean("/" + name)` would, and returns its
/// components. An empty result denotes the root itself.
pub fn clean(name: &[u8]) -> Components {
    let mut out: Components = Vec::new();
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c.to_vec()),
        }
    }
    out
}

/// Joins components with `/` (for messages and bookkeeping).
pub fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

/// The apply root: an `O_PATH` directory fd all resolution starts from.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    openat2: AtomicBool,
}

impl Root {
    /// Opens `path` as the root (`O_PATH | O_DIRECTORY | O_CLOEXEC`; the root path itself is
    /// trusted and may be reached through symlinks).
    ///
    /// # Errors
    /// The directory cannot be opened.
    pub fn open(path: &Path) -> std::io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            openat2: AtomicBool::new(true),
        })
    }

    /// Opens the root as a fresh fd (`O_PATH`).
    pub fn dup_path(&self) -> std::io::Result<OwnedFd> {
        Ok(rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// Opens the root as a readable directory fd (for `fchmod`, `fsetxattr`, listing).
    pub fn dup_dir(&self) -> std::io::Result<OwnedFd> {
        Ok(rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// The root fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Disables the openat2 fast path (tests of the fallback use this).
    pub fn force_fallback(&self) {
        self.openat2.store(false, Ordering::Relaxed);
    }

    /// Resolves the directory `comps` inside the root and returns an `O_PATH` fd to it.
    ///
    /// Symlinks in `comps` are followed *inside* the root. With `create`, missing directories
    /// (including the targets of dangling symlinks, re-rooted) are made with mode 0755.
    ///
    /// # Errors
    /// `ENOENT` (without `create`), `ENOTDIR` when a component is not a directory, `ELOOP` past
    /// [`MAX_SYMLINKS`], or the error of the failing syscall.
    pub fn resolve_dir(&self, comps: &[Vec<u8>], create: bool) -> std::io::Result<OwnedFd> {
        if comps.is_empty() {
            return self.dup_path();
        }
        if self.openat2.load(Ordering::Relaxed) {
            let path = join(comps);
            for _ in 0..8 {
                match rustix::fs::openat2(
                    &self.fd,
                    OsStr::from_bytes(&path),
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
                ) {
                    Ok(fd) => return Ok(fd),
                    // A concurrent rename in the tree; the kernel asks to retry.
                    Err(Errno::AGAIN) => continue,
                    Err(Errno::NOSYS) | Err(Errno::PERM) => {
                        self.openat2.store(false, Ordering::Relaxed);
                        break;
                    }
                    // Missing components are resolved lexically (and created) by the walk,
                    // which also has no PATH_MAX limit.
                    Err(Errno::NOENT) | Err(Errno::NAMETOOLONG) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.walk(comps, create)
    }

    /// The userspace resolver: see the module docs.
    ///
    /// Components that do not exist are kept lexically (a later `..` cancels them, as
    /// continuity's `RootPath` does); with `create` the remaining ones are made at the end.
    fn walk(&self, comps: &[Vec<u8>], create: bool) -> std::io::Result<OwnedFd> {
        let mut stack: Vec<OwnedFd> = vec![self.dup_path()?];
        let mut missing: Vec<Vec<u8>> = Vec::new();
        let mut queue: VecDeque<Vec<u8>> = comps.iter().cloned().collect();
        let mut links = 0usize;
        while let Some(comp) = queue.pop_front() {
            match comp.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if missing.pop().is_none() && stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            if !missing.is_empty() {
                missing.push(comp);
                continue;
            }
            let cur = stack.last().ok_or(Errno::NOENT)?;
            match rustix::fs::openat(
                cur,
                OsStr::from_bytes(&comp),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => {
                    let st = rustix::fs::fstat(&fd)?;
                    match FileType::from_raw_mode(st.st_mode) {
                        FileType::Directory => stack.push(fd),
                        FileType::Symlink => {
                            links += 1;
                            if links > MAX_SYMLINKS {
                                return Err(Errno::LOOP.into());
                            }
                            let target = rustix::fs::readlinkat(&fd, "", Vec::new())?;
                            let target = target.as_bytes();
                            if target.first() == Some(&b'/') {
                                stack.truncate(1);
                            }
                            for part in target.split(|&b| b == b'/').rev() {
                                queue.push_front(part.to_vec());
                            }
                        }
                        _ => return Err(Errno::NOTDIR.into()),
                    }
                }
                Err(Errno::NOENT) => missing.push(comp),
                Err(e) => return Err(e.into()),
            }
        }
        let mut dir = stack.pop().ok_or(Errno::NOENT)?;
        if missing.is_empty() {
            return Ok(dir);
        }
        if !create {
            return Err(Errno::NOENT.into());
        }
        for comp in &missing {
            let name = OsStr::from_bytes(comp);
            match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            dir = rustix::fs::openat(
                &dir,
                name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
        }
        Ok(dir)
    }
}

/// `lstat` of `name` in `dir` without following it; `None` when it does not exist.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn comps(s: &str) -> Components {
        clean(s.as_bytes())
    }

    #[test]
    fn clean_matches_go_filepath_clean() {
        assert_eq!(
            comps("/a/b/../c/./d/"),
            vec![b"a".to_vec(), b"c".to_vec(), b"d".to_vec()]
        );
        assert!(comps("..").is_empty());
        assert!(comps("").is_empty());
        assert!(comps("./").is_empty());
        assert_eq!(comps("../../etc/passwd"), comps("etc/passwd"));
        assert_eq!(comps("localetc/sub/.."), comps("localetc"));
        assert_eq!(comps("dne/../.wh.etc"), comps(".wh.etc"));
    }

    fn tmp() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("berth-resolve-")
            .tempdir()
            .unwrap()
    }

    fn check_resolution(force_fallback: bool) {
        let t = tmp();
        let base = t.path();
        std::fs::create_dir_all(base.join("root/etc")).unwrap();
        std::fs::create_dir_all(base.join("etc")).unwrap();
        symlink("/etc", base.join("root/abs")).unwrap();
        symlink("../../../../etc", base.join("root/rel")).unwrap();
        symlink("/missing/dir", base.join("root/dangling")).unwrap();
        let root = Root::open(&base.join("root")).unwrap();
        if force_fallback {
            root.force_fallback();
        }
        let inside = std::fs::metadata(base.join("root/etc")).unwrap();
        for p in ["abs", "rel", "etc", "abs/../etc", "rel/../../etc"] {
            let fd = root.resolve_dir(&comps(p), false).unwrap();
            let st = rustix::fs::fstat(&fd).unwrap();
            assert_eq!(
                st.st_ino,
                std::os::unix::fs::MetadataExt::ino(&inside),
                "{p}"
            );
        }
        assert_eq!(
            root.resolve_dir(&comps("dangling"), false)
                .unwrap_err()
                .kind(),
            std::io::ErrorKind::NotFound
        );
        root.resolve_dir(&comps("dangling/sub"), true).unwrap();
        assert!(base.join("root/missing/dir/sub").is_dir());
        assert!(!base.join("missing").exists());
    }

    #[test]
    fn resolves_inside_root_with_openat2() {
        check_resolution(false);
    }

    #[test]
    fn resolves_inside_root_with_fallback_walk() {
        check_resolution(true);
    }

    #[test]
    fn symlink_loops_are_refused() {
        let t = tmp();
        symlink("b", t.path().join("a")).unwrap();
        symlink("a", t.path().join("b")).unwrap();
        let root = Root::open(t.path()).unwrap();
        root.force_fallback();
        let err = root.resolve_dir(&comps("a"), false).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
    }
}
