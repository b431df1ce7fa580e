//! Where an image's files come from: an OCI layout directory, or the entries of a tar archive.
//!
//! Both are presented as a [`Source`]: named files that can be opened for reading, several at
//! once from several threads. A tar archive is indexed once, reading only its headers (the
//! data of each entry is skipped by seeking), and each entry is then read in place with
//! positional reads: nothing is extracted to disk and an entry's bytes are read once. The
//! index checks every name (no absolute paths, no `..`, links stay inside the archive), refuses
//! duplicates, and detects truncation (an entry's data past the end of the file, or no
//! end-of-archive block).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{Error, Result};

/// Refuses names that could leave the image: absolute, with `..`, or not UTF-8. Returns the
/// name without `./` prefixes, empty or `.` components, or a trailing `/`.
pub(crate) fn normalize_name(path: &Path, raw: &[u8]) -> Result<String> {
    let unsafe_name = |reason| Error::UnsafeName {
        path: path.to_path_buf(),
        name: String::from_utf8_lossy(raw).into_owned(),
        reason,
    };
    let text = std::str::from_utf8(raw).map_err(|_| unsafe_name("not UTF-8"))?;
    if text.starts_with('/') {
        return Err(unsafe_name("absolute path"));
    }
    if text.contains('\0') {
        return Err(unsafe_name("NUL byte"));
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(unsafe_name("contains '..'")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(unsafe_name("empty name"));
    }
    Ok(parts.join("/"))
}

/// Resolves a symlink target found at `link` (a normalized name) to a normalized name inside
/// the archive; a target that is absolute or climbs above the archive root is refused.
fn resolve_link(path: &Path, link: &str, target: &[u8], relative: bool) -> Result<String> {
    let unsafe_name = |reason| Error::UnsafeName {
        path: path.to_path_buf(),
        name: format!("{link} -> {}", String::from_utf8_lossy(target)),
        reason,
    };
    let text = std::str::from_utf8(target).map_err(|_| unsafe_name("not UTF-8"))?;
    if text.starts_with('/') {
        return Err(unsafe_name("link target is absolute"));
    }
    let mut parts: Vec<&str> = if relative {
        let mut p: Vec<&str> = link.split('/').collect();
        p.pop();
        p
    } else {
        Vec::new()
    };
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(unsafe_name("link target leaves the archive"));
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(unsafe_name("link target is the archive root"));
    }
    Ok(parts.join("/"))
}

/// Reads a region of a file with positional reads; several can share one `File`.
#[derive(Debug)]
pub(crate) struct RegionReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for RegionReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive entry ends past the end of the file",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// A file opened from a [`Source`].
#[derive(Debug)]
pub(crate) enum SourceReader<'a> {
    /// A file in a layout directory.
    File(File),
    /// An entry of an archive.
    Region(RegionReader<'a>),
}

impl Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SourceReader::File(f) => f.read(buf),
            SourceReader::Region(r) => r.read(buf),
        }
    }
}

/// A set of named files making up an image (a layout directory or an archive).
pub(crate) trait Source: Sync {
    /// The directory or archive, for messages.
    fn path(&self) -> &Path;
    /// Opens `name` (a normalized relative name), returning the reader and the size, or
    /// `None` when there is no such file.
    fn open(&self, name: &str) -> Result<Option<(SourceReader<'_>, u64)>>;
    /// Whether `name` exists.
    fn contains(&self, name: &str) -> bool;
}

/// An OCI image layout directory. Names are resolved inside the directory
/// (`openat2(RESOLVE_IN_ROOT)`, or a no-`..`, no-final-symlink fallback).
#[derive(Debug)]
pub(crate) struct DirSource {
    path: PathBuf,
    dir: File,
}

impl DirSource {
    pub(crate) fn open_dir(path: &Path) -> Result<Self> {
        let dir = rustix::fs::open(
            path,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Error::io("open", path, e.into()))?;
        Ok(DirSource {
            path: path.to_path_buf(),
            dir: File::from(dir),
        })
    }

    fn open_in_root(&self, name: &str) -> io::Result<File> {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY;
        match rustix::fs::openat2(
            &self.dir,
            name,
            flags,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => Ok(File::from(fd)),
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
                // No openat2 (old kernel or a seccomp filter): names carry no `..` (checked by
                // normalize_name) and the final component is never followed.
                let fd =
                    rustix::fs::openat(&self.dir, name, flags | OFlags::NOFOLLOW, Mode::empty())?;
                Ok(File::from(fd))
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Source for DirSource {
    fn path(&self) -> &Path {
        &self.path
    }

    fn open(&self, name: &str) -> Result<Option<(SourceReader<'_>, u64)>> {
        let name = normalize_name(&self.path, name.as_bytes())?;
        let file = match self.open_in_root(&name) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", self.path.join(&name), e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::io("stat", self.path.join(&name), e))?;
        if !meta.is_file() {
            return Err(Error::UnsafeName {
                path: self.path.clone(),
                name,
                reason: "not a regular file",
            });
        }
        Ok(Some((SourceReader::File(file), meta.len())))
    }

    fn contains(&self, name: &str) -> bool {
        normalize_name(&self.path, name.as_bytes())
            .ok()
            .is_some_and(|n| self.open_in_root(&n).is_ok())
    }
}

#[derive(Debug, Clone)]
enum TarEntry {
    File { offset: u64, size: u64 },
    Link { target: String },
}

/// An indexed tar archive (oci-archive or docker-archive).
#[derive(Debug)]
pub(crate) struct TarSource {
    path: PathBuf,
    file: File,
    entries: HashMap<String, TarEntry>,
}

const BLOCK: u64 = 512;

impl TarSource {
    /// Indexes the archive at `path`, reading only headers.
    ///
    /// # Errors
    /// [`Error::Corrupt`], [`Error::Truncated`], [`Error::UnsafeName`],
    /// [`Error::DuplicateEntry`], [`Error::Io`].
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        let corrupt = |entry: Option<String>, reason: String| Error::Corrupt {
            path: path.to_path_buf(),
            entry,
            reason,
        };
        let mut entries = HashMap::new();
        let mut end = 0u64;
        let mut last = String::from("(start of archive)");
        {
            let mut archive = tar::Archive::new(&file);
            let iter = archive
                .entries_with_seek()
                .map_err(|e| corrupt(None, e.to_string()))?;
            for entry in iter {
                let entry = entry.map_err(|e| corrupt(Some(last.clone()), e.to_string()))?;
                let raw_name = entry.path_bytes();
                let kind = entry.header().entry_type();
                let offset = entry.raw_file_position();
                let size = entry.size();
                if kind.is_dir() {
                    // Directories carry nothing; still refuse unsafe names.
                    if let Err(e) = normalize_name(path, &raw_name)
                        && !matches!(&*raw_name, b"./" | b".")
                    {
                        return Err(e);
                    }
                    end = offset + size.div_ceil(BLOCK) * BLOCK;
                    continue;
                }
                let name = normalize_name(path, &raw_name)?;
                last.clone_from(&name);
                if offset.checked_add(size).is_none_or(|e| e > len) {
                    return Err(Error::Truncated {
                        path: path.to_path_buf(),
                        entry: name,
                    });
                }
                end = offset + size.div_ceil(BLOCK) * BLOCK;
                let record = if kind.is_file() || kind == tar::EntryType::Continuous {
                    TarEntry::File { offset, size }
                } else if kind.is_symlink() || kind.is_hard_link() {
                    let target = entry
                        .link_name_bytes()
                        .ok_or_else(|| corrupt(Some(name.clone()), "link without target".into()))?;
                    TarEntry::Link {
                        target: resolve_link(path, &name, &target, kind.is_symlink())?,
                    }
                } else if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
                    continue;
                } else {
                    // Devices, fifos and the like have no place in an image archive; ignore.
                    continue;
                };
                if entries.insert(name.clone(), record).is_some() {
                    return Err(Error::DuplicateEntry {
                        path: path.to_path_buf(),
                        entry: name,
                    });
                }
            }
        }
        // The archive must end with a zero block right after the last entry.
        let mut block = [0u8; BLOCK as usize];
        let complete = end + BLOCK <= len
            && file.read_exact_at(&mut block, end).is_ok()
            && block.iter().all(|b| *b == 0);
        if !complete {
            return Err(Error::Truncated {
                path: path.to_path_buf(),
                entry: last,
            });
        }
        Ok(TarSource {
            path: path.to_path_buf(),
            file,
            entries,
        })
    }

    /// Follows links to a regular file entry (at most 16 hops).
    fn resolve(&self, name: &str) -> Result<Option<(u64, u64)>> {
        let mut current = name.to_owned();
        for _ in 0..16 {
            match self.entries.get(&current) {
                None => return Ok(None),
                Some(TarEntry::File { offset, size }) => return Ok(Some((*offset, *size))),
                Some(TarEntry::Link { target }) => current.clone_from(target),
            }
        }
        Err(Error::UnsafeName {
            path: self.path.clone(),
            name: name.to_owned(),
            reason: "too many levels of links",
        })
    }
}

impl Source for TarSource {
    fn path(&self) -> &Path {
        &self.path
    }

    fn open(&self, name: &str) -> Result<Option<(SourceReader<'_>, u64)>> {
        let name = normalize_name(&self.path, name.as_bytes())?;
        Ok(self.resolve(&name)?.map(|(offset, size)| {
            (
                SourceReader::Region(RegionReader {
                    file: &self.file,
                    pos: offset,
                    end: offset + size,
                }),
                size,
            )
        }))
    }

    fn contains(&self, name: &str) -> bool {
        normalize_name(&self.path, name.as_bytes())
            .ok()
            .is_some_and(|n| matches!(self.resolve(&n), Ok(Some(_))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_refuses_names() {
        let p = Path::new("x.tar");
        assert_eq!(
            normalize_name(p, b"./blobs//sha256/ab/").unwrap(),
            "blobs/sha256/ab"
        );
        for bad in [
            &b"/etc/passwd"[..],
            b"../x",
            b"a/../../b",
            b"",
            b"./",
            b"\xff",
        ] {
            assert!(
                matches!(normalize_name(p, bad), Err(Error::UnsafeName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn resolves_links_inside_only() {
        let p = Path::new("x.tar");
        assert_eq!(
            resolve_link(p, "abc/layer.tar", b"../def.tar", true).unwrap(),
            "def.tar"
        );
        assert_eq!(
            resolve_link(p, "abc/layer.tar", b"def.tar", false).unwrap(),
            "def.tar"
        );
        assert!(resolve_link(p, "abc/layer.tar", b"../../etc", true).is_err());
        assert!(resolve_link(p, "abc/layer.tar", b"/etc/passwd", true).is_err());
    }
}
