//! Child side of the root filesystem setup (see the module docs of `rootfs`).
//!
//! Runs in the container's init, between clone and exec: system calls only,
//! no allocation. Failures return `(step, index, errno)`; the runtime maps
//! the index back to the spec item.

use std::os::fd::RawFd;

use super::RootfsPlan;
use crate::error::Step;
use crate::sys::{self, FdPath};

/// A child-side failure: step, item index, errno.
pub(crate) type Failure = (Step, u32, i32);

fn at(step: Step, index: usize) -> impl Fn(i32) -> Failure {
    move |e| (step, index as u32, e)
}

/// Builds the root filesystem and switches into it. `procfd` is an `O_PATH`
/// fd of the host's `/proc`, already verified to be procfs.
pub(crate) fn setup(plan: &RootfsPlan, procfd: RawFd) -> Result<(), Failure> {
    sys::mount(None, c"/", None, plan.root_propagation, None)
        .map_err(at(Step::RootPropagation, 0))?;
    sys::mount(
        Some(&plan.rootfs),
        &plan.rootfs,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(at(Step::BindRootfs, 0))?;
    let rootfd = sys::openat(
        libc::AT_FDCWD,
        &plan.rootfs,
        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        0,
    )
    .map_err(at(Step::OpenRootfs, 0))?;
    let r = setup_in(plan, rootfd, procfd);
    sys::close(rootfd);
    r
}

fn setup_in(plan: &RootfsPlan, rootfd: RawFd, procfd: RawFd) -> Result<(), Failure> {
    for (i, m) in plan.mounts.iter().enumerate() {
        m.apply(rootfd).map_err(|(step, e)| (step, i as u32, e))?;
    }

    if plan.setup_dev {
        for (i, p) in plan.device_parents.iter().enumerate() {
            let fd = p
                .create_all(rootfd, false, true)
                .map_err(at(Step::CreateDevice, i))?;
            sys::close(fd);
        }
        for (i, d) in plan.devices.iter().enumerate() {
            d.create(rootfd, plan.bind_devices)
                .map_err(|(s, e)| (s, i as u32, e))?;
        }
        let devfd = plan
            .dev
            .create_all(rootfd, false, true)
            .map_err(at(Step::CreateSymlink, 0))?;
        let r = super::devices::create_symlinks(devfd, &plan.symlinks)
            .map_err(|(i, e)| (Step::CreateSymlink, i as u32, e))
            .and_then(|()| {
                if plan.ptmx {
                    super::devices::link_ptmx(devfd)
                        .map_err(at(Step::CreateSymlink, plan.symlinks.len()))
                } else {
                    Ok(())
                }
            });
        sys::close(devfd);
        r?;
    }

    for (i, s) in plan.sysctl.iter().enumerate() {
        sys::write_file_at(procfd, &s.path, s.value.to_bytes()).map_err(at(Step::Sysctl, i))?;
    }

    for (i, p) in plan.masked.iter().enumerate() {
        mask(p, rootfd).map_err(at(Step::MaskPath, i))?;
    }
    for (i, p) in plan.readonly_paths.iter().enumerate() {
        readonly(p, rootfd).map_err(at(Step::ReadonlyPath, i))?;
    }

    switch_root(plan, rootfd)?;

    if plan.readonly_root {
        let fd = sys::openat(libc::AT_FDCWD, c"/", libc::O_PATH | libc::O_CLOEXEC, 0)
            .map_err(at(Step::ReadonlyRoot, 0))?;
        let locked = sys::locked_mount_flags(fd);
        sys::close(fd);
        let flags = libc::MS_BIND
            | libc::MS_REMOUNT
            | libc::MS_RDONLY
            | locked.map_err(at(Step::ReadonlyRoot, 0))?;
        sys::mount(None, c"/", None, flags, None).map_err(at(Step::ReadonlyRoot, 0))?;
    }
    if let Some(p) = plan.rootfs_propagation {
        sys::mount(None, c"/", None, p, None).map_err(at(Step::RootfsPropagation, 0))?;
    }
    Ok(())
}

/// Hides a path: `/dev/null` over files, an empty read-only tmpfs over
/// directories. A missing path is not an error.
fn mask(p: &super::InRootPath, rootfd: RawFd) -> Result<(), i32> {
    let fd = match p.open(rootfd, false) {
        Ok(fd) => fd,
        Err(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    // SAFETY: an all-zero stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is writable and fd is ours.
    let r = sys::cvt(unsafe { libc::fstat(fd, &mut st) }).and_then(|_| {
        let target = FdPath::new(fd);
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            sys::mount(
                Some(c"tmpfs"),
                target.as_cstr(),
                Some(c"tmpfs"),
                libc::MS_RDONLY,
                Some(c"size=0k,nr_inodes=1"),
            )
        } else {
            sys::mount(
                Some(c"/dev/null"),
                target.as_cstr(),
                None,
                libc::MS_BIND,
                None,
            )
        }
    });
    sys::close(fd);
    r
}

/// Makes a path read-only with a recursive self-bind and a read-only
/// remount. A missing path is not an error.
fn readonly(p: &super::InRootPath, rootfd: RawFd) -> Result<(), i32> {
    let fd = match p.open(rootfd, false) {
        Ok(fd) => fd,
        Err(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    let target = FdPath::new(fd);
    let r = sys::mount(
        Some(target.as_cstr()),
        target.as_cstr(),
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    );
    sys::close(fd);
    r?;
    let fd = p.open(rootfd, false)?;
    let target = FdPath::new(fd);
    let r = sys::locked_mount_flags(fd).and_then(|locked| {
        sys::mount(
            None,
            target.as_cstr(),
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC | locked,
            None,
        )
    });
    sys::close(fd);
    r
}

/// `pivot_root` into the rootfs (or move it over `/` and chroot).
fn switch_root(plan: &RootfsPlan, rootfd: RawFd) -> Result<(), Failure> {
    let fail = at(Step::PivotRoot, 0);
    // SAFETY: fchdir on an fd we hold.
    sys::cvt(unsafe { libc::fchdir(rootfd) }).map_err(&fail)?;
    if plan.no_pivot {
        sys::mount(Some(c"."), c"/", None, libc::MS_MOVE, None).map_err(&fail)?;
        // SAFETY: static NUL-terminated path.
        sys::cvt(unsafe { libc::chroot(c".".as_ptr()) }).map_err(&fail)?;
    } else {
        // SAFETY: pivot_root with two NUL-terminated paths.
        let r = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
        sys::cvt_long(r).map_err(&fail)?;
        // The old root now sits on top of "."; keep its unmount from
        // propagating to the host, then detach it.
        sys::mount(None, c".", None, libc::MS_SLAVE | libc::MS_REC, None).map_err(&fail)?;
        // SAFETY: static NUL-terminated path.
        sys::cvt(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) }).map_err(&fail)?;
    }
    // SAFETY: static NUL-terminated path.
    sys::cvt(unsafe { libc::chdir(c"/".as_ptr()) }).map_err(&fail)?;
    Ok(())
}
