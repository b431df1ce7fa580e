//! Filesystem helpers shared by the backends: tree copy (native backend), disk usage,
//! directory creation with an exact mode, directory fsync, unique names.
//!
//! The trees handled here live under the snapshotter's own root, but their *contents* come
//! from image layers, so nothing here follows a symlink found inside a tree: entries are
//! read with `lstat`, created with `O_EXCL|O_NOFOLLOW`, and owners, xattrs and times are set
//! with the no-follow variants; mode is only set on files and directories this code created.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::Rng;
use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};

use crate::error::{Error, Result};
use crate::types::Usage;

/// Creates directory `path` with exactly `mode` (the umask does not apply).
pub(crate) fn mkdir_mode(path: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(|e| Error::io("mkdir", path, e))?;
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(|e| Error::io("chmod", path, e))
}

/// Creates `path` and its parents (mode 0700) when missing.
pub(crate) fn ensure_dir(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(path)
        .map_err(|e| Error::io("mkdir", path, e))
}

/// Marks directory `path` as the top of unrelated hierarchies (`FS_TOPDIR_FL`, `chattr +T`):
/// ext4's Orlov allocator then spreads each new subdirectory (one per snapshot) over block
/// groups with free inodes as it does for directories under `/`, instead of packing every
/// snapshot next to its parent. On a filesystem without a journal ext4 skips inodes freed in
/// the last minute one by one, so after a large removal, unpacking a layer of thousands of
/// files into the same group spent most of its time scanning them (7× slower pull + unpack in
/// `benches/compare-pull.sh`). A hint only: filesystems without the flag, or without the
/// permission to set it, are left as they are.
pub(crate) fn mark_top_dir(path: &Path) {
    let set = || -> io::Result<()> {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        let flags = rustix::fs::ioctl_getflags(&dir)?;
        if !flags.contains(rustix::fs::IFlags::TOPDIR) {
            rustix::fs::ioctl_setflags(&dir, flags | rustix::fs::IFlags::TOPDIR)?;
        }
        Ok(())
    };
    if let Err(e) = set() {
        tracing::debug!(path = %path.display(), error = %e, "no top-directory hint");
    }
}

/// fsyncs a directory so renames inside it are durable.
pub(crate) fn fsync_dir(path: &Path) -> Result<()> {
    let f = File::open(path).map_err(|e| Error::io("open dir", path, e))?;
    f.sync_all().map_err(|e| Error::io("fsync dir", path, e))
}

/// Takes an exclusive `flock` on directory `path`, waiting when `wait`, else returning
/// `Ok(None)` if someone holds it (or the directory is gone).
pub(crate) fn lock_dir(path: &Path, wait: bool) -> Result<Option<File>> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if !wait && e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open dir", path, e)),
    };
    let op = if wait {
        rustix::fs::FlockOperation::LockExclusive
    } else {
        rustix::fs::FlockOperation::NonBlockingLockExclusive
    };
    match rustix::fs::flock(&f, op) {
        Ok(()) => Ok(Some(f)),
        Err(rustix::io::Errno::WOULDBLOCK) if !wait => Ok(None),
        Err(e) => Err(Error::io("flock", path, e.into())),
    }
}

/// `prefix` followed by 16 random hex digits.
pub(crate) fn unique_name(prefix: &str) -> String {
    let n: u64 = rand::rng().random();
    format!("{prefix}{n:016x}")
}

/// Disk usage of a tree: distinct inodes and allocated bytes (`st_blocks * 512`), never
/// following symlinks and not crossing into other filesystems.
pub(crate) fn disk_usage(root: &Path) -> Result<Usage> {
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .same_file_system(true)
    {
        let entry = entry.map_err(|e| walk_err("disk usage", root, e))?;
        let md = entry
            .metadata()
            .map_err(|e| walk_err("lstat", entry.path(), e))?;
        if seen.insert((md.dev(), md.ino())) {
            usage.inodes += 1;
            usage.size = usage.size.saturating_add(md.blocks().saturating_mul(512));
        }
    }
    Ok(usage)
}

fn walk_err(op: &'static str, path: &Path, e: walkdir::Error) -> Error {
    let p = e
        .path()
        .map_or_else(|| path.to_path_buf(), Path::to_path_buf);
    Error::io(
        op,
        p,
        e.into_io_error()
            .unwrap_or_else(|| io::Error::other("filesystem loop")),
    )
}

/// Copies the tree `src` to the new directory `dst` (which must not exist), preserving file
/// types, content, mode (incl. setuid/setgid/sticky), owner, xattrs, hardlinks, symlinks,
/// devices, fifos, sockets, and access/modification times.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    // Directory metadata is applied last, deepest first, so children do not disturb it.
    let mut dirs: Vec<(PathBuf, fs::Metadata)> = Vec::new();
    let walker = walkdir::WalkDir::new(src)
        .follow_links(false)
        .same_file_system(true)
        .sort_by_file_name();
    for entry in walker {
        let entry = entry.map_err(|e| walk_err("copy", src, e))?;
        let rel = entry
            .path()
            .strip_prefix(src)
            .map_err(|_| Error::invalid(entry.path().display().to_string(), "outside source"))?;
        let to = if rel.as_os_str().is_empty() {
            dst.to_path_buf()
        } else {
            dst.join(rel)
        };
        let md = entry
            .metadata()
            .map_err(|e| walk_err("lstat", entry.path(), e))?;
        let ft = md.file_type();
        if ft.is_dir() {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&to)
                .map_err(|e| Error::io("mkdir", &to, e))?;
            dirs.push((to, md));
            continue;
        }
        if md.nlink() > 1 {
            let id = (md.dev(), md.ino());
            if let Some(first) = links.get(&id) {
                fs::hard_link(first, &to).map_err(|e| Error::io("link", &to, e))?;
                continue;
            }
            links.insert(id, to.clone());
        }
        let from = entry.path();
        if ft.is_symlink() {
            let target = fs::read_link(from).map_err(|e| Error::io("readlink", from, e))?;
            std::os::unix::fs::symlink(&target, &to).map_err(|e| Error::io("symlink", &to, e))?;
        } else if ft.is_file() {
            copy_file(from, &to)?;
        } else {
            let kind = FileType::from_raw_mode(md.mode());
            rustix::fs::mknodat(CWD, &to, kind, Mode::from_raw_mode(0o600), md.rdev())
                .map_err(|e| Error::io("mknod", &to, e.into()))?;
        }
        copy_metadata(from, &to, &md)?;
    }
    for (to, md) in dirs.iter().rev() {
        let from = src.join(to.strip_prefix(dst).unwrap_or(Path::new("")));
        copy_metadata(&from, to, md)?;
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let mut input = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(from)
        .map_err(|e| Error::io("open", from, e))?;
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(to)
        .map_err(|e| Error::io("create", to, e))?;
    // std::io::copy uses copy_file_range / sendfile between files on Linux.
    io::copy(&mut input, &mut output).map_err(|e| Error::io("copy", to, e))?;
    Ok(())
}

/// Owner, xattrs, mode (not for symlinks) and times of `from` onto `to`, never following
/// `to` if it is a symlink.
fn copy_metadata(from: &Path, to: &Path, md: &fs::Metadata) -> Result<()> {
    std::os::unix::fs::lchown(to, Some(md.uid()), Some(md.gid()))
        .map_err(|e| Error::io("lchown", to, e))?;
    // The xattr crate's get/set/list use the l* syscalls (no symlink following).
    let names = xattr::list(from).map_err(|e| Error::io("llistxattr", from, e))?;
    for name in names {
        if let Some(value) = xattr::get(from, &name).map_err(|e| Error::io("lgetxattr", from, e))? {
            xattr::set(to, &name, &value).map_err(|e| Error::io("lsetxattr", to, e))?;
        }
    }
    if !md.file_type().is_symlink() {
        // `to` was created by us as a non-symlink, so chmod by path cannot be redirected.
        fs::set_permissions(to, Permissions::from_mode(md.mode() & 0o7777))
            .map_err(|e| Error::io("chmod", to, e))?;
    }
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(CWD, to, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| Error::io("utimensat", to, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_directory_is_marked_top_dir_where_supported() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("snapshots");
        ensure_dir(&dir).unwrap();
        let f = File::open(&dir).unwrap();
        let Ok(before) = rustix::fs::ioctl_getflags(&f) else {
            eprintln!(
                "skipping: the filesystem of {} has no inode flags",
                dir.display()
            );
            return;
        };
        assert!(!before.contains(rustix::fs::IFlags::TOPDIR));
        mark_top_dir(&dir);
        let after = rustix::fs::ioctl_getflags(&f).unwrap();
        if !after.contains(rustix::fs::IFlags::TOPDIR) {
            // tmpfs and others keep no such flag; ext4 must.
            let ext4 = rustix::fs::statfs(&dir).unwrap().f_type == 0xEF53;
            assert!(!ext4, "ext4 but the flag was not set: {after:?}");
            eprintln!("skipping: the filesystem does not keep FS_TOPDIR_FL");
            return;
        }
        // The other flags are kept, and marking again changes nothing.
        assert_eq!(after, before | rustix::fs::IFlags::TOPDIR);
        mark_top_dir(&dir);
        assert_eq!(rustix::fs::ioctl_getflags(&f).unwrap(), after);
    }

    #[test]
    fn copy_tree_preserves_links_modes_and_xattrs() {
        if !rustix::process::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "needs root (chown) and CI is set"
            );
            eprintln!("skipping: needs root (chown)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::create_dir(src.join("d")).unwrap();
        fs::write(src.join("d/f"), b"hello").unwrap();
        fs::set_permissions(src.join("d/f"), Permissions::from_mode(0o4751)).unwrap();
        fs::hard_link(src.join("d/f"), src.join("h")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("s")).unwrap();
        xattr::set(src.join("d/f"), "user.k", b"v").unwrap();
        std::os::unix::fs::lchown(src.join("d"), Some(12), Some(34)).unwrap();
        fs::set_permissions(src.join("d"), Permissions::from_mode(0o750)).unwrap();
        rustix::fs::mknodat(
            CWD,
            src.join("p"),
            FileType::Fifo,
            Mode::from_raw_mode(0o640),
            0,
        )
        .unwrap();

        let dst = tmp.path().join("dst");
        copy_tree(&src, &dst).unwrap();
        assert_eq!(fs::read(dst.join("d/f")).unwrap(), b"hello");
        let f = fs::symlink_metadata(dst.join("d/f")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o4751);
        let h = fs::symlink_metadata(dst.join("h")).unwrap();
        assert_eq!(f.ino(), h.ino());
        assert_eq!(
            fs::read_link(dst.join("s")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            xattr::get(dst.join("d/f"), "user.k").unwrap().unwrap(),
            b"v"
        );
        let d = fs::symlink_metadata(dst.join("d")).unwrap();
        assert_eq!((d.uid(), d.gid(), d.mode() & 0o7777), (12, 34, 0o750));
        assert!(
            fs::symlink_metadata(dst.join("p"))
                .unwrap()
                .file_type()
                .is_fifo_like()
        );
        let u = disk_usage(&dst).unwrap();
        // root, d, d/f (= h), s, p
        assert_eq!(u.inodes, 5);
    }

    trait FifoLike {
        fn is_fifo_like(&self) -> bool;
    }
    impl FifoLike for fs::FileType {
        fn is_fifo_like(&self) -> bool {
            use std::os::unix::fs::FileTypeExt;
            self.is_fifo()
        }
    }
}
