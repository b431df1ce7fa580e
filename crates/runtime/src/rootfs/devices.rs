//! Device nodes and `/dev` symlinks.
//!
//! Without a user namespace, nodes are made with `mknodat` in the
//! container's `/dev` (opened as an fd, symlinks refused). Inside a user
//! namespace `mknod` is not permitted, so an empty file is created and the
//! host's node is bind-mounted over it.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::path::Path;

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use super::paths::InRootPath;
use crate::error::{Error, Result, Step};
use crate::sys::{self, FdPath};

/// One prepared device node.
#[derive(Debug, Clone)]
pub(crate) struct DevicePlan {
    pub(crate) path: InRootPath,
    /// `S_IFCHR`, `S_IFBLK` or `S_IFIFO` ORed with the permission bits.
    pub(crate) mode: libc::mode_t,
    pub(crate) dev: libc::dev_t,
    pub(crate) uid: libc::uid_t,
    pub(crate) gid: libc::gid_t,
    /// The host path to bind from (user namespace case).
    pub(crate) host: CString,
}

/// The devices every container gets (runtime-spec "Default Devices").
pub(crate) const DEFAULT_DEVICES: &[(&str, u32, u32)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// The `/dev` symlinks: (link name in /dev, target).
pub(crate) const DEV_SYMLINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

impl DevicePlan {
    /// A default character device.
    pub(crate) fn default_device(path: &str, major: u32, minor: u32) -> Result<DevicePlan> {
        Ok(DevicePlan {
            path: InRootPath::new("default device", Path::new(path))?,
            mode: libc::S_IFCHR | 0o666,
            dev: libc::makedev(major, minor),
            uid: 0,
            gid: 0,
            host: CString::new(path).map_err(|_| Error::spec("device", "NUL byte"))?,
        })
    }

    /// Prepares `linux.devices[index]`.
    pub(crate) fn from_spec(index: usize, d: &LinuxDevice) -> Result<DevicePlan> {
        let field = format!("linux.devices[{index}]");
        let p = d.path();
        if !p.is_absolute() || !p.starts_with("/dev") {
            return Err(Error::spec(
                &field,
                format!("{} must be an absolute path under /dev", p.display()),
            ));
        }
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            LinuxDeviceType::A => return Err(Error::spec(&field, "type 'a' is not a device node")),
        };
        let major =
            u32::try_from(d.major()).map_err(|_| Error::spec(&field, "major out of range"))?;
        let minor =
            u32::try_from(d.minor()).map_err(|_| Error::spec(&field, "minor out of range"))?;
        Ok(DevicePlan {
            path: InRootPath::new(&field, p)?,
            mode: kind | (d.file_mode().unwrap_or(0o666) & 0o7777),
            dev: libc::makedev(major, minor),
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
            host: CString::new(p.to_string_lossy().as_bytes())
                .map_err(|_| Error::spec(&field, "NUL byte"))?,
        })
    }

    /// Creates the node inside `rootfd` (or binds the host node when
    /// `bind`). Async-signal-safe.
    pub(crate) fn create(&self, rootfd: RawFd, bind: bool) -> std::result::Result<(), (Step, i32)> {
        let fail = |e| (Step::CreateDevice, e);
        if bind {
            let fd = self.path.create_all(rootfd, true, true).map_err(fail)?;
            let r = sys::mount(
                Some(&self.host),
                FdPath::new(fd).as_cstr(),
                None,
                libc::MS_BIND,
                None,
            );
            sys::close(fd);
            return r.map_err(fail);
        }
        let dir = self.path.open_parent(rootfd).map_err(fail)?;
        let leaf = self.path.leaf();
        let r = (|| {
            // SAFETY: leaf is NUL-terminated; dir is an fd we hold.
            let mut r = sys::cvt(unsafe { libc::mknodat(dir, leaf.as_ptr(), self.mode, self.dev) });
            if r == Err(libc::EEXIST) {
                // SAFETY: as above; removes a non-directory entry only.
                sys::cvt(unsafe { libc::unlinkat(dir, leaf.as_ptr(), 0) })?;
                // SAFETY: as above.
                r = sys::cvt(unsafe { libc::mknodat(dir, leaf.as_ptr(), self.mode, self.dev) });
            }
            r?;
            // SAFETY: never follows a symlink (AT_SYMLINK_NOFOLLOW).
            sys::cvt(unsafe {
                libc::fchownat(
                    dir,
                    leaf.as_ptr(),
                    self.uid,
                    self.gid,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            })?;
            Ok(())
        })();
        sys::close(dir);
        r.map_err(fail)
    }
}

/// Prepares the parent directories of nested device paths (before the clone).
pub(crate) fn parents_of(devices: &[DevicePlan]) -> Result<Vec<InRootPath>> {
    let mut out = Vec::new();
    for d in devices {
        let p = Path::new(&d.path.display);
        if let Some(parent) = p.parent()
            && parent != Path::new("/dev")
            && parent != Path::new("/")
        {
            out.push(InRootPath::new("device parent", parent)?);
        }
    }
    Ok(out)
}

/// Creates `/dev/<name>` → `target` symlinks in `devfd`, leaving existing
/// entries alone. Async-signal-safe. Returns the index of a failure.
pub(crate) fn create_symlinks(
    devfd: RawFd,
    links: &[(CString, CString)],
) -> std::result::Result<(), (usize, i32)> {
    for (i, (name, target)) in links.iter().enumerate() {
        // SAFETY: both strings are NUL-terminated; devfd is an fd we hold.
        let r = sys::cvt(unsafe { libc::symlinkat(target.as_ptr(), devfd, name.as_ptr()) });
        match r {
            Ok(_) | Err(libc::EEXIST) => {}
            Err(e) => return Err((i, e)),
        }
    }
    Ok(())
}

/// Replaces `/dev/ptmx` with a symlink to `pts/ptmx`. Async-signal-safe.
pub(crate) fn link_ptmx(devfd: RawFd) -> std::result::Result<(), i32> {
    // SAFETY: static NUL-terminated names; devfd is an fd we hold.
    let r = sys::cvt(unsafe { libc::unlinkat(devfd, c"ptmx".as_ptr(), 0) });
    match r {
        Ok(_) | Err(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    // SAFETY: as above.
    sys::cvt(unsafe { libc::symlinkat(c"pts/ptmx".as_ptr(), devfd, c"ptmx".as_ptr()) }).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceBuilder;

    #[test]
    fn spec_devices_are_checked() {
        let d = LinuxDeviceBuilder::default()
            .path("/dev/fuse")
            .typ(LinuxDeviceType::C)
            .major(10)
            .minor(229)
            .file_mode(0o600u32)
            .build()
            .unwrap();
        let p = DevicePlan::from_spec(0, &d).unwrap();
        assert_eq!(p.mode, libc::S_IFCHR | 0o600);
        assert_eq!(p.dev, libc::makedev(10, 229));
        let bad = LinuxDeviceBuilder::default()
            .path("/etc/passwd")
            .typ(LinuxDeviceType::C)
            .build()
            .unwrap();
        assert!(DevicePlan::from_spec(0, &bad).is_err());
    }
}
