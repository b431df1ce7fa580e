//! Entry metadata: reading it from tar headers and PAX records, and setting it without ever
//! following the final component.
//!
//! Order per entry (as containerd): owner, then xattrs, then mode (after chown, which clears
//! set-id bits), then times. Regular files and directories are changed through an fd opened on
//! them (`fchown`, `fsetxattr`, `fchmod`, `futimens`). Symlinks, devices and fifos are changed
//! relative to their parent fd with `AT_SYMLINK_NOFOLLOW` calls; their xattrs go through
//! `lsetxattr` on `/proc/self/fd/<parent>/<name>`, which never follows the final component. A
//! symlink's mode is never changed (CVE-2021-32760); a device's or fifo's mode is set through an
//! `O_PATH | O_NOFOLLOW` fd after checking its type.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use super::error::{Error, Result};

/// Latest mtime accepted (9999-12-31T23:59:59Z); later ones are clamped to the epoch.
pub const MAX_MTIME: i64 = 253_402_300_799;

const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// Metadata of one tar entry, with PAX records applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// Permission bits including set-id and sticky (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds, nanoseconds), clamped into `[epoch, MAX_MTIME]`.
    pub mtime: (i64, u32),
    /// Extended attributes from `SCHILY.xattr.*` records, in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl EntryMeta {
    /// Reads the metadata of an entry from its header and PAX records.
    ///
    /// # Errors
    /// [`Error::InvalidArchive`] when a numeric field is malformed or an id exceeds 32 bits.
    pub fn parse(entry: &str, header: &tar::Header, pax: &[(Vec<u8>, Vec<u8>)]) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidArchive {
            entry: entry.to_owned(),
            reason,
        };
        // Numeric fields are parsed leniently (empty = 0, octal or base-256), as Go's tar does;
        // PAX `uid`/`gid` were already folded into the header by the parser.
        let raw = header.as_bytes();
        let num = |range: std::ops::Range<usize>, what: &str| -> Result<i128> {
            raw.get(range)
                .and_then(parse_numeric)
                .ok_or_else(|| invalid(format!("malformed {what} field")))
        };
        let mode = u32::try_from(num(100..108, "mode")? & 0o7777)
            .map_err(|_| invalid("negative mode".to_owned()))?;
        let id = |range: std::ops::Range<usize>, what: &str| -> Result<u32> {
            let v = num(range, what)?;
            u32::try_from(v).map_err(|_| invalid(format!("{what} {v} outside 0..={}", u32::MAX)))
        };
        let uid = id(108..116, "uid")?;
        let gid = id(116..124, "gid")?;
        let mut mtime = None;
        let mut xattrs = Vec::new();
        for (key, value) in pax {
            if key == b"mtime" {
                mtime = parse_pax_time(value);
            } else if let Some(name) = key.strip_prefix(XATTR_PREFIX) {
                xattrs.push((name.to_vec(), value.clone()));
            }
        }
        let mtime = match mtime {
            Some(t) => t,
            None => (
                i64::try_from(num(136..148, "mtime")?).unwrap_or(i64::MAX),
                0,
            ),
        };
        Ok(EntryMeta {
            mode,
            uid,
            gid,
            mtime: clamp_time(mtime),
            xattrs,
        })
    }

    /// The mtime as rustix timestamps (atime = mtime).
    pub fn timestamps(&self) -> Timestamps {
        let t = Timespec {
            tv_sec: self.mtime.0,
            tv_nsec: i64::from(self.mtime.1),
        };
        Timestamps {
            last_access: t,
            last_modification: t,
        }
    }
}

/// Clamps a time into `[epoch, MAX_MTIME]`; anything outside becomes the epoch.
pub fn clamp_time((secs, nanos): (i64, u32)) -> (i64, u32) {
    if !(0..=MAX_MTIME).contains(&secs) || nanos >= 1_000_000_000 {
        (0, 0)
    } else {
        (secs, nanos)
    }
}

/// Parses a PAX time (`1234`, `1234.5`, `-1.25`) into seconds and nanoseconds.
fn parse_pax_time(value: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(value).ok()?;
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = int.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: u32 = digits.parse().ok()?;
    if s.starts_with('-') && nanos > 0 {
        // -1.25 is 1.25 s before the epoch: floor the seconds, keep nanos positive.
        return Some((secs - 1, 1_000_000_000 - nanos));
    }
    Some((secs, nanos))
}

/// Parses a tar numeric field: octal text, or base-256 binary (GNU; `0x80` positive, `0xFF`
/// negative two's complement).
pub fn parse_numeric(field: &[u8]) -> Option<i128> {
    let first = *field.first()?;
    if first & 0x80 != 0 {
        if field.len() > 15 {
            return None;
        }
        let negative = first == 0xFF;
        let mut u: i128 = 0;
        for (i, &b) in field.iter().enumerate() {
            let b = if i == 0 && !negative { b & 0x7F } else { b };
            u = (u << 8) | i128::from(b);
        }
        if negative {
            return Some(u - (1i128 << (field.len() * 8)));
        }
        return Some(u);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|&b| b != 0)
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    i128::from_str_radix(std::str::from_utf8(&text).ok()?, 8).ok()
}

/// Reads the device numbers of a block or character device entry, refusing values outside
/// `0..=u32::MAX`.
///
/// # Errors
/// [`Error::InvalidArchive`] for malformed, negative or too large numbers.
pub fn device_numbers(entry: &str, header: &tar::Header) -> Result<(u32, u32)> {
    let raw = header.as_bytes();
    let field = |range: std::ops::Range<usize>, what: &str| -> Result<u32> {
        let v = raw
            .get(range)
            .and_then(parse_numeric)
            .ok_or_else(|| Error::InvalidArchive {
                entry: entry.to_owned(),
                reason: format!("malformed device {what} number"),
            })?;
        u32::try_from(v).map_err(|_| Error::InvalidArchive {
            entry: entry.to_owned(),
            reason: format!("device {what} number {v} outside 0..={}", u32::MAX),
        })
    };
    Ok((field(329..337, "major")?, field(337..345, "minor")?))
}

/// What metadata is applied to.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A regular file or directory opened by us (a real, non-`O_PATH` fd).
    Fd(BorrowedFd<'a>),
    /// A symlink, device or fifo: `name` in the directory `parent`, never followed.
    At {
        /// The parent directory.
        parent: BorrowedFd<'a>,
        /// The final component.
        name: &'a OsStr,
        /// The file type created there.
        file_type: FileType,
    },
}

/// Applies owner (unless `no_same_owner`), xattrs, mode and — unless `skip_times` (directories
/// get theirs at the end of the layer) — times.
///
/// # Errors
/// [`Error::ForbiddenXattr`] for `trusted.*`; [`Error::Io`] for failed syscalls.
pub fn apply(
    entry: &str,
    target: Target<'_>,
    meta: &EntryMeta,
    no_same_owner: bool,
    skip_times: bool,
) -> Result<()> {
    let io = |op: &'static str| {
        move |e: Errno| Error::Io {
            entry: entry.to_owned(),
            op,
            source: e.into(),
        }
    };
    // Refuse forbidden xattrs before changing anything.
    for (name, _) in &meta.xattrs {
        if name.starts_with(b"trusted.") {
            return Err(Error::ForbiddenXattr {
                entry: entry.to_owned(),
                name: String::from_utf8_lossy(name).into_owned(),
            });
        }
    }
    let uid = Some(Uid::from_raw(meta.uid));
    let gid = Some(Gid::from_raw(meta.gid));
    match target {
        Target::Fd(fd) => {
            if !no_same_owner {
                rustix::fs::fchown(fd, uid, gid).map_err(io("fchown"))?;
            }
            for (name, value) in &meta.xattrs {
                let r = rustix::fs::fsetxattr(
                    fd,
                    OsStr::from_bytes(name),
                    value,
                    rustix::fs::XattrFlags::empty(),
                );
                tolerate_xattr(entry, name, r, true)?;
            }
            rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(io("fchmod"))?;
            if !skip_times {
                rustix::fs::futimens(fd, &meta.timestamps()).map_err(io("futimens"))?;
            }
        }
        Target::At {
            parent,
            name,
            file_type,
        } => {
            if !no_same_owner {
                rustix::fs::chownat(parent, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io("fchownat"))?;
            }
            if !meta.xattrs.is_empty() {
                let path = proc_path(parent, name);
                for (xname, value) in &meta.xattrs {
                    let r = rustix::fs::lsetxattr(
                        path.as_os_str(),
                        OsStr::from_bytes(xname),
                        value,
                        rustix::fs::XattrFlags::empty(),
                    );
                    tolerate_xattr(entry, xname, r, false)?;
                }
            }
            if file_type != FileType::Symlink {
                chmod_no_follow(parent, name, meta.mode).map_err(io("chmod"))?;
            }
            if !skip_times {
                set_times_at(parent, name, &meta.timestamps()).map_err(io("utimensat"))?;
            }
        }
    }
    Ok(())
}

/// `/proc/self/fd/<parent>/<name>`: the parent through its magic link, the final component
/// left for an `l*` call not to follow.
pub fn proc_path(parent: BorrowedFd<'_>, name: &OsStr) -> std::path::PathBuf {
    let mut p = std::path::PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd()));
    p.push(name);
    p
}

/// Changes the mode of a non-symlink `name` in `parent` without following it: an
/// `O_PATH | O_NOFOLLOW` fd is opened, its type checked, and the mode set through its
/// `/proc/self/fd` entry. A symlink is left alone.
pub fn chmod_no_follow(parent: BorrowedFd<'_>, name: &OsStr, mode: u32) -> rustix::io::Result<()> {
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
        return Ok(());
    }
    let path = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    rustix::fs::chmod(path.as_str(), Mode::from_raw_mode(mode))
}

/// `utimensat(parent, name, times, AT_SYMLINK_NOFOLLOW)`.
pub fn set_times_at(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    times: &Timestamps,
) -> rustix::io::Result<()> {
    rustix::fs::utimensat(parent, name, times, AtFlags::SYMLINK_NOFOLLOW)
}

/// Xattr errors that are tolerated: `ENOTSUP` (the filesystem has no xattrs of that namespace)
/// and `EPERM` for `user.*` on anything but regular files and directories (the kernel forbids
/// them there).
fn tolerate_xattr(
    entry: &str,
    name: &[u8],
    r: rustix::io::Result<()>,
    reg_or_dir: bool,
) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(Errno::OPNOTSUPP) => {
            tracing::warn!(entry, xattr = %String::from_utf8_lossy(name), "xattr not supported by the filesystem; skipped");
            Ok(())
        }
        Err(Errno::PERM) if !reg_or_dir && name.starts_with(b"user.") => Ok(()),
        Err(e) => Err(Error::Io {
            entry: entry.to_owned(),
            op: "setxattr",
            source: e.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields() {
        assert_eq!(parse_numeric(b"0000012\0"), Some(0o12));
        assert_eq!(parse_numeric(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(parse_numeric(b"      7 "), Some(7));
        let mut big = [0u8; 8];
        big[0] = 0x80;
        big[3] = 0x01; // 1 << 32
        assert_eq!(parse_numeric(&big), Some(1i128 << 32));
        assert_eq!(parse_numeric(&[0xFF; 8]), Some(-1));
        let mut neg = [0xFFu8; 8];
        neg[7] = 0xFE;
        assert_eq!(parse_numeric(&neg), Some(-2));
        assert_eq!(parse_numeric(b"9x\0\0\0\0\0\0"), None);
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(parse_pax_time(b"1.5"), Some((1, 500_000_000)));
        assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    #[test]
    fn times_are_clamped() {
        assert_eq!(clamp_time((-5, 0)), (0, 0));
        assert_eq!(clamp_time((MAX_MTIME + 1, 0)), (0, 0));
        assert_eq!(clamp_time((42, 7)), (42, 7));
    }
}
