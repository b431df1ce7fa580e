//! OCI whiteouts: `.wh.<name>` deletes `<name>` from lower layers, `.wh..wh..opq` hides every
//! lower child of its directory.
//!
//! Applied mode removes the targets: the whiteout's parent is resolved in the root (never
//! created; a parent that does not resolve makes the whiteout a no-op) and the target, which is
//! never followed, is removed recursively through directory fds. An opaque marker clears the
//! children of its directory that this layer has not unpacked (markers may come after entries of
//! the same directory). Overlay mode instead writes the overlayfs form into an upper directory: a
//! character device 0/0 for a removal and `trusted.overlay.opaque=y` for an opaque directory.
//!
//! Names that would whiteout the directory itself or its parent (`.wh..`, `.wh...`) or nothing
//! (`.wh.`) are refused as invalid archives.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::error::{Error, Result};

/// Prefix of whiteout entries.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the opaque-directory marker.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// The overlayfs xattr marking an opaque directory.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What a base name means as a whiteout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whiteout<'a> {
    /// Not a whiteout: a normal entry.
    None,
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// `.wh.<name>`: remove `<name>`.
    Remove(&'a [u8]),
}

/// Classifies a base name.
///
/// # Errors
/// [`Error::InvalidArchive`] for `.wh.`, `.wh..` and `.wh...`.
pub fn classify<'a>(entry: &str, base: &'a [u8]) -> Result<Whiteout<'a>> {
    if base == OPAQUE_MARKER {
        return Ok(Whiteout::Opaque);
    }
    let Some(target) = base.strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(Whiteout::None);
    };
    if target.is_empty() || target == b"." || target == b".." {
        return Err(Error::InvalidArchive {
            entry: entry.to_owned(),
            reason: "whiteout names the directory itself, its parent or nothing".to_owned(),
        });
    }
    Ok(Whiteout::Remove(target))
}

/// Removes `name` in `dir` and, if it is a directory, everything below it, never following
/// symlinks. A missing `name` is not an error.
///
/// # Errors
/// The failing syscall's error.
pub fn remove_all(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<()> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e),
        };
    }
    let child = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    clear_dir(child.as_fd(), &|_| false)?;
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes every child of the directory `dir` (a readable fd) for which `keep` is false.
///
/// # Errors
/// The failing syscall's error.
pub fn clear_dir(dir: BorrowedFd<'_>, keep: &dyn Fn(&[u8]) -> bool) -> rustix::io::Result<()> {
    let names = list_dir(dir)?;
    for name in names {
        if !keep(&name) {
            remove_all(dir, OsStr::from_bytes(&name))?;
        }
    }
    Ok(())
}

/// The names in a directory (without `.` and `..`), read through a duplicate of `dir`.
pub fn list_dir(dir: BorrowedFd<'_>) -> rustix::io::Result<Vec<Vec<u8>>> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = rustix::fs::Dir::new(fd)?;
    let mut names = Vec::new();
    while let Some(ent) = d.read() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    Ok(names)
}

/// Paths (cleaned, `/`-joined) unpacked so far by the current layer, with their ancestors, so
/// an opaque marker spares them.
#[derive(Debug, Default)]
pub struct Unpacked {
    paths: HashSet<Vec<u8>>,
}

impl Unpacked {
    /// Records a path and its ancestors.
    pub fn insert(&mut self, comps: &[Vec<u8>]) {
        for n in (1..=comps.len()).rev() {
            if !self.paths.insert(comps[..n].join(&b'/')) {
                break;
            }
        }
    }

    /// Whether `dir/name` was unpacked by this layer.
    pub fn contains_child(&self, dir: &[Vec<u8>], name: &[u8]) -> bool {
        let mut key = dir.join(&b'/');
        if !key.is_empty() {
            key.push(b'/');
        }
        key.extend_from_slice(name);
        self.paths.contains(&key)
    }
}

/// Writes an overlayfs whiteout (character device 0/0) for `name` in `parent`, replacing
/// whatever is there.
///
/// # Errors
/// The failing syscall's error.
pub fn overlay_whiteout(parent: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<()> {
    remove_all(parent, name)?;
    rustix::fs::mknodat(
        parent,
        name,
        FileType::CharacterDevice,
        Mode::from_raw_mode(0),
        0,
    )
}

/// Marks the directory `dir` (a readable fd) opaque for overlayfs.
///
/// # Errors
/// The failing syscall's error.
pub fn overlay_opaque(dir: BorrowedFd<'_>) -> rustix::io::Result<()> {
    rustix::fs::fsetxattr(
        dir,
        OVERLAY_OPAQUE_XATTR,
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_names() {
        assert_eq!(classify("x", b"file").unwrap(), Whiteout::None);
        assert_eq!(classify("x", b".wh..wh..opq").unwrap(), Whiteout::Opaque);
        assert_eq!(classify("x", b".wh.foo").unwrap(), Whiteout::Remove(b"foo"));
        assert_eq!(
            classify("x", b".wh..foo").unwrap(),
            Whiteout::Remove(b".foo")
        );
        for bad in [&b".wh."[..], b".wh..", b".wh..."] {
            assert!(classify("x", bad).unwrap_err().is_invalid_archive());
        }
    }

    #[test]
    fn unpacked_tracks_ancestors() {
        let mut u = Unpacked::default();
        u.insert(&[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert!(u.contains_child(&[b"a".to_vec()], b"b"));
        assert!(u.contains_child(&[], b"a"));
        assert!(!u.contains_child(&[b"a".to_vec()], b"x"));
    }

    #[test]
    fn remove_all_does_not_follow_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        let inside = t.path().join("inside");
        std::fs::create_dir_all(inside.join("d/e")).unwrap();
        std::os::unix::fs::symlink(&outside, inside.join("d/link")).unwrap();
        let fd =
            rustix::fs::open(&inside, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        remove_all(fd.as_fd(), OsStr::new("d")).unwrap();
        assert!(!inside.join("d").exists());
        assert!(outside.join("keep").exists());
        remove_all(fd.as_fd(), OsStr::new("missing")).unwrap();
    }
}
