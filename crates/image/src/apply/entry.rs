//! Applying one tar entry to the root: resolve the parent in the root, replace what is there,
//! create the new object without following its name, then set its metadata.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps};
use rustix::io::Errno;
use tar::EntryType;

use super::error::{Error, Result};
use super::metadata::{self, EntryMeta, Target};
use super::resolve::{self, Components, Root};
use super::whiteout::{self, Unpacked, Whiteout};

/// Per-layer state of the extractor. Holds no fds across entries besides the root.
pub(super) struct Applier<'r> {
    root: &'r Root,
    no_same_owner: bool,
    overlay: bool,
    unpacked: Unpacked,
    dir_times: Vec<(Components, Timestamps)>,
    root_times: Option<Timestamps>,
    buf: Vec<u8>,
    lowers: Vec<Root>,
}

impl std::fmt::Debug for Applier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("root", &self.root)
            .field("no_same_owner", &self.no_same_owner)
            .field("overlay", &self.overlay)
            .field("deferred_dir_times", &self.dir_times.len())
            .finish_non_exhaustive()
    }
}

/// Whether an entry was applied or skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Something was created, changed or removed.
    Applied,
    /// The entry was ignored (global PAX header, an entry naming the root that is not a
    /// directory).
    Skipped,
}

impl<'r> Applier<'r> {
    pub(super) fn new(
        root: &'r Root,
        no_same_owner: bool,
        overlay: bool,
        lowers: Vec<Root>,
    ) -> Self {
        Applier {
            root,
            no_same_owner,
            overlay,
            unpacked: Unpacked::default(),
            dir_times: Vec::new(),
            root_times: None,
            buf: vec![0u8; 256 * 1024],
            lowers,
        }
    }

    /// Resolves (creating if needed) the parent directory `comps`. Without lower layers missing
    /// directories get mode 0755; with them, each created directory copies the owner, mode and
    /// mtime of the same directory in the nearest lower layer that has it (so an overlay upper
    /// directory does not mask the lower one's metadata).
    fn parent_dir(&mut self, comps: &[Vec<u8>]) -> io::Result<OwnedFd> {
        if self.lowers.is_empty() {
            return self.root.resolve_dir(comps, true);
        }
        match self.root.resolve_dir(comps, false) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => return other,
        }
        for n in 1..=comps.len() {
            let prefix = &comps[..n];
            match self.root.resolve_dir(prefix, false) {
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
            let fd = self.root.resolve_dir(prefix, true)?;
            self.copy_lower_metadata(prefix, &fd)?;
        }
        self.root.resolve_dir(comps, false)
    }

    fn copy_lower_metadata(&mut self, prefix: &[Vec<u8>], fd: &OwnedFd) -> io::Result<()> {
        for lower in &self.lowers {
            let lfd = match lower.resolve_dir(prefix, false) {
                Ok(lfd) => lfd,
                Err(e) if is_absent(&e) => continue,
                Err(e) => return Err(e),
            };
            let st = rustix::fs::fstat(&lfd)?;
            let dir = open_dir(fd, OsStr::new("."))?;
            if !self.no_same_owner {
                rustix::fs::fchown(
                    &dir,
                    Some(rustix::fs::Uid::from_raw(st.st_uid)),
                    Some(rustix::fs::Gid::from_raw(st.st_gid)),
                )?;
            }
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(st.st_mode & 0o7777))?;
            let t = rustix::fs::Timespec {
                tv_sec: st.st_mtime,
                tv_nsec: st.st_mtime_nsec as _,
            };
            self.dir_times.push((
                prefix.to_vec(),
                Timestamps {
                    last_access: t,
                    last_modification: t,
                },
            ));
            break;
        }
        Ok(())
    }

    /// Applies one entry. `stream_err` turns an error reading the entry's data into the right
    /// typed error (decompression, tar, source or size bound).
    pub(super) fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        stream_err: &dyn Fn(io::Error) -> Error,
    ) -> Result<Outcome> {
        let raw_name = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader) {
            return Ok(Outcome::Skipped);
        }
        let pax: Vec<(Vec<u8>, Vec<u8>)> = match entry.pax_extensions().map_err(stream_err)? {
            Some(exts) => exts
                .map(|e| {
                    e.map(|e| (e.key_bytes().to_vec(), e.value_bytes().to_vec()))
                        .map_err(|e| Error::InvalidArchive {
                            entry: name.clone(),
                            reason: format!("malformed PAX record: {e}"),
                        })
                })
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let header = entry.header().clone();
        let meta = EntryMeta::parse(&name, &header, &pax)?;
        let comps = resolve::clean(&raw_name);
        let io_err = |op: &'static str| {
            let name = name.clone();
            move |e: io::Error| Error::Io {
                entry: name.clone(),
                op,
                source: e,
            }
        };
        let errno = |op: &'static str| {
            let f = io_err(op);
            move |e: Errno| f(e.into())
        };

        let Some((base, parent_comps)) = comps.split_last() else {
            // The entry names the root itself: only a directory's metadata applies.
            if kind != EntryType::Directory {
                return Ok(Outcome::Skipped);
            }
            let fd = self.root.dup_dir().map_err(io_err("open root"))?;
            metadata::apply(
                &name,
                Target::Fd(fd.as_fd()),
                &meta,
                self.no_same_owner,
                true,
            )?;
            self.root_times = Some(meta.timestamps());
            return Ok(Outcome::Applied);
        };
        let base_os = OsStr::from_bytes(base);

        match whiteout::classify(&name, base)? {
            Whiteout::None => {}
            Whiteout::Opaque => {
                self.opaque(&name, parent_comps)?;
                return Ok(Outcome::Applied);
            }
            Whiteout::Remove(target) => {
                self.remove(&name, parent_comps, OsStr::from_bytes(target), &meta)?;
                return Ok(Outcome::Applied);
            }
        }

        let parent = self
            .parent_dir(parent_comps)
            .map_err(io_err("resolve parent"))?;
        let is_dir = kind == EntryType::Directory;
        let merge = match resolve::lstat_at(parent.as_fd(), base_os).map_err(io_err("lstat"))? {
            Some(st) if is_dir && FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                true
            }
            Some(_) => {
                whiteout::remove_all(parent.as_fd(), base_os).map_err(errno("remove existing"))?;
                false
            }
            None => false,
        };

        match kind {
            EntryType::Directory => {
                if !merge {
                    rustix::fs::mkdirat(&parent, base_os, Mode::from_raw_mode(0o700))
                        .map_err(errno("mkdirat"))?;
                }
                let fd = open_dir(&parent, base_os).map_err(errno("open directory"))?;
                metadata::apply(
                    &name,
                    Target::Fd(fd.as_fd()),
                    &meta,
                    self.no_same_owner,
                    true,
                )?;
                self.dir_times.push((comps.clone(), meta.timestamps()));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let fd = rustix::fs::openat(
                    &parent,
                    base_os,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(errno("create file"))?;
                let mut file = std::fs::File::from(fd);
                copy_data(
                    entry,
                    &mut file,
                    &mut self.buf,
                    stream_err,
                    &io_err("write"),
                )?;
                metadata::apply(
                    &name,
                    Target::Fd(file.as_fd()),
                    &meta,
                    self.no_same_owner,
                    false,
                )?;
            }
            EntryType::Symlink => {
                let target = link.ok_or_else(|| Error::InvalidArchive {
                    entry: name.clone(),
                    reason: "symlink without a target".to_owned(),
                })?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &parent, base_os)
                    .map_err(errno("symlinkat"))?;
                let target = Target::At {
                    parent: parent.as_fd(),
                    name: base_os,
                    file_type: FileType::Symlink,
                };
                metadata::apply(&name, target, &meta, self.no_same_owner, false)?;
            }
            EntryType::Link => {
                let target = link.ok_or_else(|| Error::InvalidArchive {
                    entry: name.clone(),
                    reason: "hardlink without a target".to_owned(),
                })?;
                let tcomps = resolve::clean(&target);
                let Some((tbase, tparent_comps)) = tcomps.split_last() else {
                    return Err(Error::InvalidArchive {
                        entry: name,
                        reason: "hardlink to the root directory".to_owned(),
                    });
                };
                let tparent = self
                    .root
                    .resolve_dir(tparent_comps, false)
                    .map_err(io_err("resolve hardlink target"))?;
                // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
                rustix::fs::linkat(
                    &tparent,
                    OsStr::from_bytes(tbase),
                    &parent,
                    base_os,
                    AtFlags::empty(),
                )
                .map_err(errno("linkat"))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (file_type, dev) = match kind {
                    EntryType::Char => {
                        let (maj, min) = metadata::device_numbers(&name, &header)?;
                        (FileType::CharacterDevice, rustix::fs::makedev(maj, min))
                    }
                    EntryType::Block => {
                        let (maj, min) = metadata::device_numbers(&name, &header)?;
                        (FileType::BlockDevice, rustix::fs::makedev(maj, min))
                    }
                    _ => (FileType::Fifo, 0),
                };
                rustix::fs::mknodat(
                    &parent,
                    base_os,
                    file_type,
                    Mode::from_raw_mode(meta.mode & 0o777),
                    dev,
                )
                .map_err(errno("mknodat"))?;
                let target = Target::At {
                    parent: parent.as_fd(),
                    name: base_os,
                    file_type,
                };
                metadata::apply(&name, target, &meta, self.no_same_owner, false)?;
            }
            other => {
                return Err(Error::InvalidArchive {
                    entry: name,
                    reason: format!("unsupported entry type {:?}", other.as_byte() as char),
                });
            }
        }
        self.unpacked.insert(&comps);
        Ok(Outcome::Applied)
    }

    /// `.wh..wh..opq` in `dir`.
    fn opaque(&mut self, name: &str, dir: &[Vec<u8>]) -> Result<()> {
        let errno = |op: &'static str| {
            move |e: Errno| Error::Io {
                entry: name.to_owned(),
                op,
                source: e.into(),
            }
        };
        if self.overlay {
            let fd = self.root.resolve_dir(dir, true).map_err(|e| Error::Io {
                entry: name.to_owned(),
                op: "resolve opaque directory",
                source: e,
            })?;
            let rd = open_dir(&fd, OsStr::new(".")).map_err(errno("open directory"))?;
            return whiteout::overlay_opaque(rd.as_fd()).map_err(errno("set opaque xattr"));
        }
        let fd = match self.root.resolve_dir(dir, false) {
            Ok(fd) => fd,
            Err(e) if is_absent(&e) => return Ok(()),
            Err(e) => {
                return Err(Error::Io {
                    entry: name.to_owned(),
                    op: "resolve opaque directory",
                    source: e,
                });
            }
        };
        let rd = open_dir(&fd, OsStr::new(".")).map_err(errno("open directory"))?;
        let unpacked = &self.unpacked;
        whiteout::clear_dir(rd.as_fd(), &|child| unpacked.contains_child(dir, child))
            .map_err(errno("clear opaque directory"))
    }

    /// `.wh.<target>` in `dir`.
    fn remove(
        &mut self,
        name: &str,
        dir: &[Vec<u8>],
        target: &OsStr,
        meta: &EntryMeta,
    ) -> Result<()> {
        let io = |op: &'static str| {
            move |e: io::Error| Error::Io {
                entry: name.to_owned(),
                op,
                source: e,
            }
        };
        if self.overlay {
            let parent = self
                .root
                .resolve_dir(dir, true)
                .map_err(io("resolve whiteout parent"))?;
            whiteout::overlay_whiteout(parent.as_fd(), target)
                .map_err(|e| io("mknodat whiteout")(e.into()))?;
            if !self.no_same_owner {
                rustix::fs::chownat(
                    &parent,
                    target,
                    Some(rustix::fs::Uid::from_raw(meta.uid)),
                    Some(rustix::fs::Gid::from_raw(meta.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| io("fchownat")(e.into()))?;
            }
            return Ok(());
        }
        let parent = match self.root.resolve_dir(dir, false) {
            Ok(fd) => fd,
            Err(e) if is_absent(&e) => return Ok(()),
            Err(e) => return Err(io("resolve whiteout parent")(e)),
        };
        whiteout::remove_all(parent.as_fd(), target).map_err(|e| io("remove")(e.into()))
    }

    /// Sets the deferred directory times (children would have bumped them).
    pub(super) fn finish(self) -> Result<()> {
        for (comps, times) in &self.dir_times {
            let Some((base, parent)) = comps.split_last() else {
                continue;
            };
            let Ok(pfd) = self.root.resolve_dir(parent, false) else {
                continue; // removed later in the layer
            };
            match metadata::set_times_at(pfd.as_fd(), OsStr::from_bytes(base), times) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => {
                    return Err(Error::Io {
                        entry: String::from_utf8_lossy(&resolve::join(comps)).into_owned(),
                        op: "utimensat",
                        source: e.into(),
                    });
                }
            }
        }
        if let Some(times) = self.root_times {
            let fd = self.root.dup_dir().map_err(|e| Error::Io {
                entry: "./".to_owned(),
                op: "open root",
                source: e,
            })?;
            rustix::fs::futimens(&fd, &times).map_err(|e| Error::Io {
                entry: "./".to_owned(),
                op: "futimens",
                source: e.into(),
            })?;
        }
        Ok(())
    }
}

/// Opens `name` in `parent` as a readable directory, not following a symlink.
fn open_dir(parent: &OwnedFd, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Whether a resolution error means "the path is not there" (so a whiteout is a no-op).
fn is_absent(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

/// Copies an entry's data into `file`, classifying read and write errors apart.
fn copy_data<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    file: &mut std::fs::File,
    buf: &mut [u8],
    stream_err: &dyn Fn(io::Error) -> Error,
    write_err: &dyn Fn(io::Error) -> Error,
) -> Result<()> {
    loop {
        let n = match entry.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_err(e)),
        };
        file.write_all(&buf[..n]).map_err(write_err)?;
    }
}
