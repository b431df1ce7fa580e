//! Change detection: which paths a layer must carry.
//!
//! Two sources: an overlayfs upper directory (every object in it is a change; a character device
//! 0/0 is a deletion; a directory with `trusted.overlay.opaque=y` — or `user.overlay.opaque`
//! with `userxattr` — is opaque), or a pair of plain trees compared entry by entry (type, mode,
//! owner, device number, captured xattrs, symlink target, and for non-directories size, mtime
//! and content). Deletions are reported at their topmost path only. When a changed file has
//! other hardlinks in the upper tree, all of them are reported so the links survive apply.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::error::{Error, Result};

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    /// Added or modified: the upper object is written.
    Modify,
    /// The directory hides every lower child (written right after the directory itself).
    Opaque,
    /// Deleted: a whiteout is written.
    Delete,
}

/// One change, at a path relative to the trees' roots.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    /// Relative path (no leading `/`).
    pub path: PathBuf,
    /// The change.
    pub kind: ChangeKind,
}

fn read_err<'a>(path: &'a Path, op: &'static str) -> impl Fn(std::io::Error) -> Error + 'a {
    move |source| Error::Read {
        path: path.to_owned(),
        op,
        source,
    }
}

fn walk_err(e: walkdir::Error) -> Error {
    let path = e.path().map(Path::to_owned).unwrap_or_default();
    Error::Read {
        path,
        op: "walk",
        source: e.into(),
    }
}

/// Changes recorded in an overlayfs upper directory.
///
/// # Errors
/// [`Error::Read`] when the tree cannot be walked.
pub fn overlay_upper(upper: &Path) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(upper)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let e = e.map_err(walk_err)?;
        let rel = e.path().strip_prefix(upper).unwrap_or(e.path()).to_owned();
        let m = e
            .path()
            .symlink_metadata()
            .map_err(read_err(e.path(), "lstat"))?;
        let ft = m.file_type();
        if ft.is_char_device() && m.rdev() == 0 {
            out.push(Change {
                path: rel,
                kind: ChangeKind::Delete,
            });
            continue;
        }
        out.push(Change {
            path: rel.clone(),
            kind: ChangeKind::Modify,
        });
        if ft.is_dir() && is_opaque(e.path()) {
            out.push(Change {
                path: rel,
                kind: ChangeKind::Opaque,
            });
        }
    }
    out.sort();
    Ok(out)
}

fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|n| matches!(xattr::get(dir, n), Ok(Some(v)) if v == b"y"))
}

/// Changes that turn the tree `lower` into the tree `upper`.
///
/// # Errors
/// [`Error::Read`] when either tree cannot be read.
pub fn between_trees(lower: &Path, upper: &Path) -> Result<Vec<Change>> {
    let mut changed: BTreeSet<PathBuf> = BTreeSet::new();
    let mut groups: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    let mut new_dir: Option<PathBuf> = None;
    for e in walkdir::WalkDir::new(upper)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let e = e.map_err(walk_err)?;
        let rel = e.path().strip_prefix(upper).unwrap_or(e.path()).to_owned();
        let um = e
            .path()
            .symlink_metadata()
            .map_err(read_err(e.path(), "lstat"))?;
        if !um.is_dir() && um.nlink() > 1 {
            groups
                .entry((um.dev(), um.ino()))
                .or_default()
                .push(rel.clone());
        }
        // Below a directory that is new (or replaced a non-directory) everything is new, and
        // the lower tree is not consulted (its path could run through a symlink).
        if let Some(prefix) = &new_dir
            && rel.starts_with(prefix)
        {
            changed.insert(rel);
            continue;
        }
        let lpath = lower.join(&rel);
        let (differs, lower_is_dir) = match lpath.symlink_metadata() {
            Ok(lm) => (differs(&lpath, &lm, e.path(), &um)?, lm.is_dir()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => (true, false),
            Err(err) => return Err(read_err(&lpath, "lstat")(err)),
        };
        if um.is_dir() && !lower_is_dir {
            new_dir = Some(rel.clone());
        }
        if differs {
            changed.insert(rel);
        }
    }
    // Keep hardlink groups whole: one changed member brings the others.
    for members in groups.values() {
        if members.iter().any(|p| changed.contains(p)) {
            changed.extend(members.iter().cloned());
        }
    }
    let mut out: Vec<Change> = changed
        .into_iter()
        .map(|path| Change {
            path,
            kind: ChangeKind::Modify,
        })
        .collect();

    let mut it = walkdir::WalkDir::new(lower)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter();
    while let Some(e) = it.next() {
        let e = e.map_err(walk_err)?;
        let rel = e.path().strip_prefix(lower).unwrap_or(e.path()).to_owned();
        let upath = upper.join(&rel);
        match upath.symlink_metadata() {
            Ok(um) => {
                // A lower directory replaced by a non-directory is removed whole by apply.
                if e.file_type().is_dir() && !um.is_dir() {
                    it.skip_current_dir();
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                out.push(Change {
                    path: rel,
                    kind: ChangeKind::Delete,
                });
                if e.file_type().is_dir() {
                    it.skip_current_dir();
                }
            }
            Err(err) => return Err(read_err(&upath, "lstat")(err)),
        }
    }
    out.sort();
    Ok(out)
}

/// Whether the xattr is carried by layers.
pub fn captured_xattr(name: &[u8]) -> bool {
    name == b"security.capability"
        || (name.starts_with(b"user.") && !name.starts_with(b"user.overlay."))
}

/// The captured xattrs of a path (not following it), sorted by name.
pub fn xattrs_of(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    use std::os::unix::ffi::OsStrExt;
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(read_err(path, "llistxattr")(e)),
    };
    let mut out = Vec::new();
    for n in names {
        if !captured_xattr(n.as_bytes()) {
            continue;
        }
        if let Some(v) = xattr::get(path, &n).map_err(read_err(path, "lgetxattr"))? {
            out.push((n.as_bytes().to_vec(), v));
        }
    }
    out.sort();
    Ok(out)
}

fn differs(
    lpath: &Path,
    lm: &std::fs::Metadata,
    upath: &Path,
    um: &std::fs::Metadata,
) -> Result<bool> {
    let (lt, ut) = (lm.file_type(), um.file_type());
    let same_type = lt.is_dir() == ut.is_dir()
        && lt.is_file() == ut.is_file()
        && lt.is_symlink() == ut.is_symlink()
        && lt.is_char_device() == ut.is_char_device()
        && lt.is_block_device() == ut.is_block_device()
        && lt.is_fifo() == ut.is_fifo()
        && lt.is_socket() == ut.is_socket();
    if !same_type
        || (!ut.is_symlink() && lm.mode() & 0o7777 != um.mode() & 0o7777)
        || lm.uid() != um.uid()
        || lm.gid() != um.gid()
        || lm.rdev() != um.rdev()
    {
        return Ok(true);
    }
    if xattrs_of(lpath)? != xattrs_of(upath)? {
        return Ok(true);
    }
    if ut.is_dir() {
        return Ok(false);
    }
    if (lm.mtime(), lm.mtime_nsec()) != (um.mtime(), um.mtime_nsec()) || lm.size() != um.size() {
        return Ok(true);
    }
    if ut.is_symlink() {
        let a = std::fs::read_link(lpath).map_err(read_err(lpath, "readlink"))?;
        let b = std::fs::read_link(upath).map_err(read_err(upath, "readlink"))?;
        return Ok(a != b);
    }
    if ut.is_file() && (lm.dev(), lm.ino()) != (um.dev(), um.ino()) {
        return Ok(!same_content(lpath, upath)?);
    }
    Ok(false)
}

fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let mut fa = open_nofollow(a)?;
    let mut fb = open_nofollow(b)?;
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(read_err(a, "read"))?;
        let nb = read_full(&mut fb, &mut bb).map_err(read_err(b, "read"))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Opens a regular file for reading without following a symlink at its final component.
pub fn open_nofollow(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(read_err(path, "open"))
}
