//! Writing changes as deterministic tar entries.
//!
//! Entries come in the order of the sorted change list (pre-order, siblings by name), each
//! preceded by any parent directory not written yet. Headers are ustar with PAX records for what
//! ustar cannot hold (long names and link targets, big ids, sub-second mtimes, xattrs); user and
//! group names are left empty and PAX records are sorted, so the same trees give the same bytes.
//! Hardlinks are found by inode: the first path of an inode is a file, later ones are links to
//! it. Whiteouts have mode 0, owner 0:0 and mtime 0. Sockets are skipped.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::changes::{self, Change, ChangeKind};
use super::error::{Error, Result};

/// Largest value of an 8-byte octal ustar field.
const MAX_OCTAL_7: u64 = 0o7_777_777;

/// Writes changes of the tree at `root` into a tar builder.
pub(super) struct LayerWriter<W: Write> {
    pub(super) builder: tar::Builder<W>,
    root: PathBuf,
    mtime_bound: Option<i64>,
    written_dirs: HashSet<PathBuf>,
    inodes: HashMap<(u64, u64), PathBuf>,
    pub(super) entries: u64,
}

impl<W: Write> LayerWriter<W> {
    pub(super) fn new(out: W, root: &Path, mtime_bound: Option<i64>) -> Self {
        LayerWriter {
            builder: tar::Builder::new(out),
            root: root.to_owned(),
            mtime_bound,
            written_dirs: HashSet::new(),
            inodes: HashMap::new(),
            entries: 0,
        }
    }

    /// Writes every change, parents first.
    pub(super) fn write_changes(&mut self, changes: &[Change]) -> Result<()> {
        for c in changes {
            let parent = c.path.parent().unwrap_or(Path::new(""));
            self.include_parents(parent)?;
            match c.kind {
                ChangeKind::Modify => self.write_path(&c.path)?,
                ChangeKind::Opaque => self.write_whiteout(&c.path.join(".wh..wh..opq"))?,
                ChangeKind::Delete => {
                    let mut name = b".wh.".to_vec();
                    name.extend_from_slice(c.path.file_name().unwrap_or_default().as_bytes());
                    self.write_whiteout(&parent.join(std::ffi::OsStr::from_bytes(&name)))?;
                }
            }
        }
        Ok(())
    }

    fn include_parents(&mut self, dir: &Path) -> Result<()> {
        let mut prefix = PathBuf::new();
        for comp in dir.components() {
            prefix.push(comp);
            if !self.written_dirs.contains(&prefix) {
                let p = prefix.clone();
                self.write_path(&p)?;
            }
        }
        Ok(())
    }

    fn write_whiteout(&mut self, rel: &Path) -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        let mut pax = Vec::new();
        set_name(&mut h, rel.as_os_str().as_bytes(), &mut pax);
        self.append(h, pax, io::empty())
    }

    fn write_path(&mut self, rel: &Path) -> Result<()> {
        let full = self.root.join(rel);
        let read_err = |op: &'static str| {
            let full = full.clone();
            move |source: io::Error| Error::Read {
                path: full,
                op,
                source,
            }
        };
        let m = full.symlink_metadata().map_err(read_err("lstat"))?;
        let ft = m.file_type();
        if ft.is_socket() {
            return Ok(());
        }
        let mut h = tar::Header::new_ustar();
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut name = rel.as_os_str().as_bytes().to_vec();
        if ft.is_dir() {
            name.push(b'/');
        }
        set_name(&mut h, &name, &mut pax);
        h.set_mode(m.mode() & 0o7777);
        for (key, v) in [("uid", u64::from(m.uid())), ("gid", u64::from(m.gid()))] {
            let fits = v <= MAX_OCTAL_7;
            let field = if fits { v } else { 0 };
            if key == "uid" {
                h.set_uid(field);
            } else {
                h.set_gid(field);
            }
            if !fits {
                pax.push((key.to_owned(), v.to_string().into_bytes()));
            }
        }
        let (mut secs, mut nanos) = (m.mtime(), m.mtime_nsec());
        if let Some(bound) = self.mtime_bound
            && secs > bound
        {
            (secs, nanos) = (bound, 0);
        }
        if secs < 0 {
            (secs, nanos) = (0, 0);
        }
        h.set_mtime(secs.unsigned_abs());
        if nanos != 0 {
            pax.push((
                "mtime".to_owned(),
                format!("{secs}.{nanos:09}").into_bytes(),
            ));
        }
        for (n, v) in changes::xattrs_of(&full)? {
            match String::from_utf8(n) {
                Ok(n) => pax.push((format!("SCHILY.xattr.{n}"), v)),
                Err(n) => {
                    tracing::warn!(path = %full.display(), xattr = ?n.as_bytes(), "non-UTF-8 xattr name not stored")
                }
            }
        }
        let unrepresentable = |reason: String| Error::Unrepresentable {
            path: full.clone(),
            reason,
        };
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            self.written_dirs.insert(rel.to_owned());
            return self.append(h, pax, io::empty());
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(&full).map_err(read_err("readlink"))?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            set_link(&mut h, target.as_os_str().as_bytes(), &mut pax);
            return self.append(h, pax, io::empty());
        }
        if ft.is_file() {
            if m.nlink() > 1 {
                let key = (m.dev(), m.ino());
                if let Some(first) = self.inodes.get(&key).cloned() {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    set_link(&mut h, first.as_os_str().as_bytes(), &mut pax);
                    return self.append(h, pax, io::empty());
                }
                self.inodes.insert(key, rel.to_owned());
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(m.len());
            if m.len() > 0o77_777_777_777 {
                pax.push(("size".to_owned(), m.len().to_string().into_bytes()));
            }
            let file = changes::open_nofollow(&full)?;
            let data = ExactReader {
                inner: file.take(m.len()),
                left: m.len(),
            };
            return self.append(h, pax, data);
        }
        let (kind, dev) = if ft.is_char_device() {
            (tar::EntryType::Char, true)
        } else if ft.is_block_device() {
            (tar::EntryType::Block, true)
        } else {
            (tar::EntryType::Fifo, false)
        };
        h.set_entry_type(kind);
        h.set_size(0);
        if dev {
            let (maj, min) = (rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev()));
            if u64::from(maj) > MAX_OCTAL_7 || u64::from(min) > MAX_OCTAL_7 {
                return Err(unrepresentable(format!("device {maj}:{min} too large")));
            }
            h.set_device_major(maj)
                .and_then(|()| h.set_device_minor(min))
                .map_err(|e| unrepresentable(e.to_string()))?;
        }
        self.append(h, pax, io::empty())
    }

    fn append(
        &mut self,
        mut h: tar::Header,
        mut pax: Vec<(String, Vec<u8>)>,
        data: impl Read,
    ) -> Result<()> {
        if !pax.is_empty() {
            pax.sort();
            self.builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(|source| Error::Write { source })?;
        }
        h.set_cksum();
        self.builder.append(&h, data).map_err(|source| {
            match source.get_ref().and_then(|e| e.downcast_ref::<ShortRead>()) {
                Some(_) => Error::Read {
                    path: PathBuf::from(
                        String::from_utf8_lossy(h.path_bytes().as_ref()).into_owned(),
                    ),
                    op: "read (file changed size during diff)",
                    source,
                },
                None => Error::Write { source },
            }
        })?;
        self.entries += 1;
        Ok(())
    }
}

/// Stores `name` in the ustar name field, or in a PAX `path` record when longer than 100 bytes.
fn set_name(h: &mut tar::Header, name: &[u8], pax: &mut Vec<(String, Vec<u8>)>) {
    let Some(ustar) = h.as_ustar_mut() else {
        return;
    };
    ustar.name = [0; 100];
    let n = name.len().min(100);
    ustar.name[..n].copy_from_slice(&name[..n]);
    if name.len() > 100 {
        pax.push(("path".to_owned(), name.to_vec()));
    }
}

/// Stores a link target in the linkname field, or in a PAX `linkpath` record when too long.
fn set_link(h: &mut tar::Header, target: &[u8], pax: &mut Vec<(String, Vec<u8>)>) {
    let Some(ustar) = h.as_ustar_mut() else {
        return;
    };
    ustar.linkname = [0; 100];
    let n = target.len().min(100);
    ustar.linkname[..n].copy_from_slice(&target[..n]);
    if target.len() > 100 {
        pax.push(("linkpath".to_owned(), target.to_vec()));
    }
}

/// Marker error: a file ended before its recorded size.
#[derive(Debug)]
struct ShortRead;

impl std::fmt::Display for ShortRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("file shorter than its recorded size")
    }
}

impl std::error::Error for ShortRead {}

/// Yields exactly `left` bytes or fails, so a file that shrinks while it is read cannot corrupt
/// the archive.
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, ShortRead));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
