//! File-tree appliers and tree comparison for the conformance suite (containerd's
//! `continuity/fs/fstest`).
//!
//! [`Applier`]s describe changes (create, remove, chown, link, rename, xattr, …);
//! [`apply`] performs them under a directory (a mounted snapshot or a flat reference
//! directory); [`check_directory_equal`] compares two trees by file type, content, mode,
//! owner, xattrs, symlink targets, device numbers and hardlink structure.
//!
//! These helpers act on test directories the suite created itself; still, they never
//! follow a symlink at the final path component (`O_NOFOLLOW`, `lchown`, `l*xattr`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One change to a directory tree. Paths are relative to the tree root (a leading `/` is
/// ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applier {
    /// Write a regular file (created or truncated) and set its mode.
    CreateFile {
        /// Path of the file.
        path: String,
        /// Content.
        content: Vec<u8>,
        /// Permission bits.
        mode: u32,
    },
    /// Create a directory with a mode (an existing directory just gets the mode).
    CreateDir {
        /// Path of the directory.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// Remove a file or an empty directory.
    Remove(String),
    /// Remove a path recursively (no error when missing).
    RemoveAll(String),
    /// `lchown`.
    Chown {
        /// Path.
        path: String,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// `chmod` (not for symlinks).
    Chmod {
        /// Path.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// Create a symlink `link` pointing at `target` (verbatim).
    Symlink {
        /// The link's content.
        target: String,
        /// Where the link is created.
        link: String,
    },
    /// Create hardlink `new` to `old`.
    Link {
        /// Existing path.
        old: String,
        /// New name.
        new: String,
    },
    /// Rename `old` to `new` (replacing `new`).
    Rename {
        /// Existing path.
        old: String,
        /// New path.
        new: String,
    },
    /// Set an extended attribute (no symlink following).
    SetXattr {
        /// Path.
        path: String,
        /// Attribute name.
        name: String,
        /// Attribute value.
        value: Vec<u8>,
    },
    /// Create a device node or fifo (`kind` is `'c'`, `'b'` or `'p'`).
    Mknod {
        /// Path.
        path: String,
        /// `'c'` character device, `'b'` block device, `'p'` fifo.
        kind: char,
        /// Permission bits.
        mode: u32,
        /// Device major number (ignored for fifos).
        major: u32,
        /// Device minor number (ignored for fifos).
        minor: u32,
    },
    /// Set access and modification times (no symlink following).
    Chtimes {
        /// Path.
        path: String,
        /// Access and modification time.
        time: SystemTime,
    },
}

/// [`Applier::CreateFile`].
pub fn create_file(path: &str, content: &[u8], mode: u32) -> Applier {
    Applier::CreateFile {
        path: path.into(),
        content: content.to_vec(),
        mode,
    }
}

/// [`Applier::CreateDir`].
pub fn create_dir(path: &str, mode: u32) -> Applier {
    Applier::CreateDir {
        path: path.into(),
        mode,
    }
}

/// [`Applier::Remove`].
pub fn remove(path: &str) -> Applier {
    Applier::Remove(path.into())
}

/// [`Applier::RemoveAll`].
pub fn remove_all(path: &str) -> Applier {
    Applier::RemoveAll(path.into())
}

/// [`Applier::Chown`].
pub fn chown(path: &str, uid: u32, gid: u32) -> Applier {
    Applier::Chown {
        path: path.into(),
        uid,
        gid,
    }
}

/// [`Applier::Chmod`].
pub fn chmod(path: &str, mode: u32) -> Applier {
    Applier::Chmod {
        path: path.into(),
        mode,
    }
}

/// [`Applier::Symlink`].
pub fn symlink(target: &str, link: &str) -> Applier {
    Applier::Symlink {
        target: target.into(),
        link: link.into(),
    }
}

/// [`Applier::Link`].
pub fn link(old: &str, new: &str) -> Applier {
    Applier::Link {
        old: old.into(),
        new: new.into(),
    }
}

/// [`Applier::Rename`].
pub fn rename(old: &str, new: &str) -> Applier {
    Applier::Rename {
        old: old.into(),
        new: new.into(),
    }
}

/// [`Applier::SetXattr`].
pub fn set_xattr(path: &str, name: &str, value: &[u8]) -> Applier {
    Applier::SetXattr {
        path: path.into(),
        name: name.into(),
        value: value.to_vec(),
    }
}

/// [`Applier::Mknod`] for a character device.
pub fn create_char_device(path: &str, major: u32, minor: u32, mode: u32) -> Applier {
    Applier::Mknod {
        path: path.into(),
        kind: 'c',
        mode,
        major,
        minor,
    }
}

/// [`Applier::Mknod`] for a fifo.
pub fn create_fifo(path: &str, mode: u32) -> Applier {
    Applier::Mknod {
        path: path.into(),
        kind: 'p',
        mode,
        major: 0,
        minor: 0,
    }
}

/// [`Applier::Chtimes`].
pub fn chtimes(path: &str, time: SystemTime) -> Applier {
    Applier::Chtimes {
        path: path.into(),
        time,
    }
}

fn under(root: &Path, rel: &str) -> PathBuf {
    root.join(rel.trim_start_matches('/'))
}

fn ctx(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Applies `appliers` in order under `root`.
pub fn apply(root: &Path, appliers: &[Applier]) -> io::Result<()> {
    for a in appliers {
        apply_one(root, a)?;
    }
    Ok(())
}

fn apply_one(root: &Path, a: &Applier) -> io::Result<()> {
    match a {
        Applier::CreateFile {
            path,
            content,
            mode,
        } => {
            let p = under(root, path);
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(*mode)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&p)
                .map_err(|e| ctx(e, "create", &p))?;
            f.write_all(content).map_err(|e| ctx(e, "write", &p))?;
            f.set_permissions(Permissions::from_mode(*mode))
                .map_err(|e| ctx(e, "fchmod", &p))
        }
        Applier::CreateDir { path, mode } => {
            let p = under(root, path);
            match fs::create_dir(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(ctx(e, "mkdir", &p)),
            }
            fs::set_permissions(&p, Permissions::from_mode(*mode)).map_err(|e| ctx(e, "chmod", &p))
        }
        Applier::Remove(path) => {
            let p = under(root, path);
            let md = fs::symlink_metadata(&p).map_err(|e| ctx(e, "lstat", &p))?;
            if md.is_dir() {
                fs::remove_dir(&p)
            } else {
                fs::remove_file(&p)
            }
            .map_err(|e| ctx(e, "remove", &p))
        }
        Applier::RemoveAll(path) => {
            let p = under(root, path);
            match fs::symlink_metadata(&p) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(ctx(e, "lstat", &p)),
                Ok(md) if md.is_dir() => {
                    fs::remove_dir_all(&p).map_err(|e| ctx(e, "remove_all", &p))
                }
                Ok(_) => fs::remove_file(&p).map_err(|e| ctx(e, "remove", &p)),
            }
        }
        Applier::Chown { path, uid, gid } => {
            let p = under(root, path);
            std::os::unix::fs::lchown(&p, Some(*uid), Some(*gid)).map_err(|e| ctx(e, "lchown", &p))
        }
        Applier::Chmod { path, mode } => {
            let p = under(root, path);
            let md = fs::symlink_metadata(&p).map_err(|e| ctx(e, "lstat", &p))?;
            if md.file_type().is_symlink() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("refusing to chmod symlink {}", p.display()),
                ));
            }
            fs::set_permissions(&p, Permissions::from_mode(*mode)).map_err(|e| ctx(e, "chmod", &p))
        }
        Applier::Symlink { target, link } => {
            let p = under(root, link);
            std::os::unix::fs::symlink(target, &p).map_err(|e| ctx(e, "symlink", &p))
        }
        Applier::Link { old, new } => {
            let (o, n) = (under(root, old), under(root, new));
            fs::hard_link(&o, &n).map_err(|e| ctx(e, "link", &n))
        }
        Applier::Rename { old, new } => {
            let (o, n) = (under(root, old), under(root, new));
            fs::rename(&o, &n).map_err(|e| ctx(e, "rename", &o))
        }
        Applier::SetXattr { path, name, value } => {
            let p = under(root, path);
            xattr::set(&p, name, value).map_err(|e| ctx(e, "lsetxattr", &p))
        }
        Applier::Mknod {
            path,
            kind,
            mode,
            major,
            minor,
        } => {
            let p = under(root, path);
            let ft = match kind {
                'c' => rustix::fs::FileType::CharacterDevice,
                'b' => rustix::fs::FileType::BlockDevice,
                _ => rustix::fs::FileType::Fifo,
            };
            let dev = rustix::fs::makedev(*major, *minor);
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &p,
                ft,
                rustix::fs::Mode::from_raw_mode(*mode),
                dev,
            )
            .map_err(|e| ctx(e.into(), "mknod", &p))?;
            fs::set_permissions(&p, Permissions::from_mode(*mode)).map_err(|e| ctx(e, "chmod", &p))
        }
        Applier::Chtimes { path, time } => {
            let p = under(root, path);
            let d = time
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            let ts = rustix::fs::Timespec {
                tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(d.subsec_nanos()),
            };
            let times = rustix::fs::Timestamps {
                last_access: ts,
                last_modification: ts,
            };
            rustix::fs::utimensat(
                rustix::fs::CWD,
                &p,
                &times,
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| ctx(e.into(), "utimensat", &p))
        }
    }
}

/// What is compared for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    content: Option<Vec<u8>>,
    link_target: Option<PathBuf>,
    rdev: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// Other paths of the tree sharing this (non-directory) inode, sorted.
    hardlinks: Vec<PathBuf>,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} mode={:o} owner={}:{}",
            self.kind, self.mode, self.uid, self.gid
        )?;
        if let Some(c) = &self.content {
            write!(f, " size={}", c.len())?;
        }
        if let Some(t) = &self.link_target {
            write!(f, " -> {}", t.display())?;
        }
        if !self.xattrs.is_empty() {
            write!(f, " xattrs={:?}", self.xattrs.keys().collect::<Vec<_>>())?;
        }
        if !self.hardlinks.is_empty() {
            write!(f, " links={:?}", self.hardlinks)?;
        }
        Ok(())
    }
}

/// Xattrs that belong to the storage, not to the tree (overlayfs bookkeeping, the SELinux
/// label a host may stamp on new files). `security.capability` is compared.
fn ignored_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name == "security.selinux"
}

fn scan(root: &Path) -> io::Result<BTreeMap<PathBuf, Entry>> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    for item in walkdir::WalkDir::new(root).follow_links(false).min_depth(1) {
        let item = item.map_err(io::Error::other)?;
        let rel = item
            .path()
            .strip_prefix(root)
            .map_err(io::Error::other)?
            .to_path_buf();
        let md = fs::symlink_metadata(item.path())?;
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "socket"
        };
        let mut xattrs = BTreeMap::new();
        for name in xattr::list(item.path())? {
            let n = name.to_string_lossy().into_owned();
            if ignored_xattr(&n) {
                continue;
            }
            if let Some(v) = xattr::get(item.path(), &name)? {
                xattrs.insert(n, v);
            }
        }
        if !ft.is_dir() {
            inodes
                .entry((md.dev(), md.ino()))
                .or_default()
                .push(rel.clone());
        }
        let entry = Entry {
            kind,
            mode: if ft.is_symlink() {
                0
            } else {
                md.mode() & 0o7777
            },
            uid: md.uid(),
            gid: md.gid(),
            content: if ft.is_file() {
                Some(fs::read(item.path())?)
            } else {
                None
            },
            link_target: if ft.is_symlink() {
                Some(fs::read_link(item.path())?)
            } else {
                None
            },
            rdev: if ft.is_char_device() || ft.is_block_device() {
                md.rdev()
            } else {
                0
            },
            xattrs,
            hardlinks: Vec::new(),
        };
        out.insert(rel, entry);
    }
    for paths in inodes.values().filter(|p| p.len() > 1) {
        for p in paths {
            if let Some(e) = out.get_mut(p) {
                let mut others: Vec<PathBuf> = paths.iter().filter(|o| *o != p).cloned().collect();
                others.sort();
                e.hardlinks = others;
            }
        }
    }
    Ok(out)
}

/// Compares the trees under `expected` and `actual` (roots themselves excluded). Returns a
/// description of every difference found (up to 20).
pub fn check_directory_equal(expected: &Path, actual: &Path) -> Result<(), String> {
    let a = scan(expected).map_err(|e| format!("scan {}: {e}", expected.display()))?;
    let b = scan(actual).map_err(|e| format!("scan {}: {e}", actual.display()))?;
    let mut diffs = Vec::new();
    for (path, ea) in &a {
        match b.get(path) {
            None => diffs.push(format!("missing {}: {ea}", path.display())),
            Some(eb) if eb != ea => {
                let detail = if ea.content != eb.content && ea.kind == eb.kind {
                    " (content differs)"
                } else {
                    ""
                };
                diffs.push(format!(
                    "differs {}: expected {ea}, got {eb}{detail}",
                    path.display()
                ));
            }
            Some(_) => {}
        }
    }
    for (path, eb) in &b {
        if !a.contains_key(path) {
            diffs.push(format!("unexpected {}: {eb}", path.display()));
        }
    }
    if diffs.is_empty() {
        return Ok(());
    }
    let n = diffs.len();
    diffs.truncate(20);
    Err(format!(
        "{n} difference(s) between {} and {}:\n  {}",
        expected.display(),
        actual.display(),
        diffs.join("\n  ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_and_compare_detect_differences() {
        if !rustix::process::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "needs root (chown) and CI is set"
            );
            eprintln!("skipping: needs root (chown)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        let changes = [
            create_dir("/d", 0o755),
            create_file("/d/f", b"x", 0o644),
            link("/d/f", "/d/g"),
            symlink("../etc", "/d/s"),
            set_xattr("/d/f", "user.a", b"1"),
            chown("/d", 5, 6),
        ];
        apply(&a, &changes).unwrap();
        apply(&b, &changes).unwrap();
        check_directory_equal(&a, &b).unwrap();
        apply(&b, &[create_file("/d/f", b"y", 0o644)]).unwrap();
        let err = check_directory_equal(&a, &b).unwrap_err();
        assert!(err.contains("d/f"), "{err}");
        apply(&a, &[create_file("/d/f", b"y", 0o644)]).unwrap();
        check_directory_equal(&a, &b).unwrap();
        apply(&b, &[remove("/d/g"), create_file("/d/g", b"y", 0o644)]).unwrap();
        let err = check_directory_equal(&a, &b).unwrap_err();
        assert!(err.contains("links"), "{err}");
    }
}
