//! The host's cgroup mounts, read once per process and mount namespace.
//!
//! Every container operation needs to know where the cgroup hierarchies are
//! mounted, and reading `/proc/self/mountinfo` costs as much as the mount
//! table is long (hundreds of lines on a host running containers). The
//! parsed table is therefore shared by the whole process and read again
//! only when it may have changed:
//! - the process is in another mount namespace than the one it was read in
//!   (compared by the inode of `/proc/self/ns/mnt`), or
//! - the kernel reports a change: `poll(2)` on an open mountinfo file
//!   returns `POLLPRI | POLLERR` once after any mount or unmount in its
//!   namespace (the mechanism libmount and systemd use).
//!
//! The file is kept open for that (close-on-exec; the runtime's setup
//! children close every fd they were not given). The cache is behind a
//! mutex taken only by the runtime's own process, never between clone and
//! exec. Should anything fail (no `/proc`), the table is read afresh and
//! not cached.

use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use cgroups_rs::fs::Hierarchy;
use cgroups_rs::fs::hierarchies::{self, V1, V2};

use super::CgroupPaths;

/// The cgroup side of the host's mount table.
#[derive(Debug)]
pub(crate) struct HostCgroups {
    /// Whether `/sys/fs/cgroup` is a pure cgroup2 mount.
    pub(crate) unified: bool,
    /// The mount table as read (`/proc/self/mountinfo`).
    pub(crate) mountinfo: String,
    /// The mount points of the visible hierarchies (`relative` empty).
    pub(crate) mounts: CgroupPaths,
    /// cgroups-rs's view of the v1 hierarchies (`None` on a unified host).
    v1: Option<V1>,
}

impl HostCgroups {
    /// A cgroups-rs hierarchy for this host.
    pub(crate) fn hierarchy(&self) -> Box<dyn Hierarchy> {
        match &self.v1 {
            Some(v1) => Box::new(v1.clone()),
            None => Box::new(V2::new()),
        }
    }

    fn read(file: &mut File) -> Option<HostCgroups> {
        let mut mountinfo = String::new();
        file.rewind().ok()?;
        file.read_to_string(&mut mountinfo).ok()?;
        Some(HostCgroups::from_table(mountinfo))
    }

    fn from_table(mountinfo: String) -> HostCgroups {
        let unified = hierarchies::is_cgroup2_unified_mode();
        let mut mounts = CgroupPaths::default();
        if !unified {
            mounts.add_mounts(&mountinfo, "", super::mount_is_visible);
        }
        HostCgroups {
            unified,
            mountinfo,
            mounts,
            v1: (!unified).then(V1::new),
        }
    }
}

struct Cache {
    mount_ns: u64,
    file: File,
    host: Arc<HostCgroups>,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// The inode of this process's mount namespace.
fn mount_ns() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/mnt").ok().map(|m| m.ino())
}

/// Whether the mount table of `file`'s namespace changed since the last
/// poll (or the open).
fn changed(file: &File) -> bool {
    let mut pfd = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: pfd is a valid pollfd array of length 1; a zero timeout never blocks.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    // 0: no change (the file is always readable, but only POLLPRI was asked
    // for); an error counts as a change.
    r < 0 || (r > 0 && pfd.revents & (libc::POLLPRI | libc::POLLERR) != 0)
}

/// The host's cgroup mounts (see the module docs for when they are re-read).
pub(crate) fn get() -> Arc<HostCgroups> {
    let ns = mount_ns();
    let Ok(mut cache) = CACHE.lock() else {
        return uncached();
    };
    if let (Some(c), Some(ns)) = (cache.as_ref(), ns)
        && c.mount_ns == ns
        && !changed(&c.file)
    {
        return Arc::clone(&c.host);
    }
    *cache = None;
    let Some(ns) = ns else {
        return uncached();
    };
    let Ok(mut file) = File::open("/proc/self/mountinfo") else {
        return uncached();
    };
    // Opening records the table's change count: a change from here on is
    // reported by the next poll, so reading after the open misses none.
    let Some(host) = HostCgroups::read(&mut file).map(Arc::new) else {
        return uncached();
    };
    *cache = Some(Cache {
        mount_ns: ns,
        file,
        host: Arc::clone(&host),
    });
    host
}

fn uncached() -> Arc<HostCgroups> {
    Arc::new(HostCgroups::from_table(
        std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unmounts a test mount on drop.
    struct Unmount(std::ffi::CString);

    impl Drop for Unmount {
        fn drop(&mut self) {
            // SAFETY: umount2 with a valid C string.
            unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
        }
    }

    /// Lookups share one table while nothing is mounted; a mount (here a
    /// tmpfs on a temp dir, unmounted again) is seen by the next lookup,
    /// and so is its removal. Other processes mounting meanwhile only cause
    /// extra re-reads, so the sharing is checked over a few tries.
    #[test]
    fn mounts_invalidate_the_shared_table() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs the tests as root"
            );
            eprintln!("skipping: needs root (mount)");
            return;
        }
        assert!((0..20).any(|_| Arc::ptr_eq(&get(), &get())));
        let dir = tempfile::tempdir().unwrap();
        let shown = format!(" {} ", dir.path().display());
        assert!(!get().mountinfo.contains(&shown));
        let target = std::ffi::CString::new(dir.path().to_str().unwrap()).unwrap();
        // SAFETY: mount with valid C strings.
        let r = unsafe {
            libc::mount(
                c"berth-test".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        let guard = Unmount(target);
        assert!(get().mountinfo.contains(&shown));
        drop(guard);
        assert!(!get().mountinfo.contains(&shown));
    }
}
