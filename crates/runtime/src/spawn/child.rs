//! The setup children: stage 1 and the container process.
//!
//! Everything here runs between `clone` and `execve` in a copy of a possibly
//! multi-threaded parent: only system calls on data prepared in
//! [`ChildPlan`], no allocation, no locks, no logging, no destructors
//! (children leave with `_exit`). Errors go back to the runtime as
//! [`Msg::error`] records naming the step and the index of the item.
//!
//! **Stage 1** closes every inherited fd it was not given, waits for the
//! runtime to place it in the cgroup, joins namespaces by fd (user first),
//! creates the user namespace (the runtime writes the id maps) and the other
//! namespaces, writes time offsets, then clones the container process with
//! `CLONE_PARENT` (so the runtime is its parent and can wait for it),
//! reports its pid and exits.
//!
//! **The container process** places stdio and preserved fds, sets hostname
//! and domainname, builds the root filesystem (init only), applies rlimits,
//! seccomp (early when `noNewPrivileges` is off, since loading then needs
//! `CAP_SYS_ADMIN`), drops the bounding set, switches user, changes to the
//! cwd and verifies it is inside the root (CVE-2024-21626), sets
//! capabilities, umask and `no_new_privs`, marks every fd beyond the
//! preserved ones close-on-exec, and — for init — reports ready and blocks
//! in `accept` on the start socket until `start` connects.

use std::os::fd::RawFd;

use super::{ChildPlan, Mode};
use crate::error::Step;
use crate::sync::{self, Msg, tag};
use crate::sys::{self, SysResult};

/// The most stdio + preserved fds a container can be given.
pub(crate) const MAX_FD_MOVES: usize = 256;

const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Sends an error record on `fd` and exits.
fn fail(fd: RawFd, step: Step, index: u32, errno: i32) -> ! {
    let _ = sync::send(fd, &Msg::error(step, index, errno));
    sys::exit_child(1)
}

fn close_range(first: libc::c_uint, last: libc::c_uint, flags: libc::c_uint) -> SysResult<()> {
    // SAFETY: close_range takes plain integers.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
    sys::cvt_long(r).map(|_| ())
}

/// Closes every fd above 2 that is not in the sorted `keep` list.
fn close_all_except(keep: &[RawFd]) -> SysResult<()> {
    let mut next: libc::c_uint = 3;
    for &fd in keep {
        if fd < 3 {
            continue;
        }
        let fd = fd as libc::c_uint;
        if fd > next {
            close_range(next, fd - 1, 0)?;
        }
        if fd + 1 > next {
            next = fd + 1;
        }
    }
    close_range(next, libc::c_uint::MAX, 0)
}

/// Dies with the parent until the container is handed over; fails if the
/// parent is already gone.
fn watch_parent(parent: libc::pid_t) -> SysResult<()> {
    // SAFETY: prctl with integer arguments.
    sys::cvt(unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    })?;
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != parent {
        return Err(libc::ESRCH);
    }
    Ok(())
}

fn clear_pdeathsig() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
}

/// Stage 1 (see the module docs). Never returns.
pub(crate) fn stage1(plan: &ChildPlan) -> ! {
    let fd = plan.stage1_fd;
    if let Err(e) = close_all_except(&plan.keep_fds) {
        fail(fd, Step::CloseFds, 0, e);
    }
    if let Err(e) = watch_parent(plan.parent_pid) {
        fail(fd, Step::ParentDied, 0, e);
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        fail(fd, Step::Dumpable, 0, sys::errno());
    }
    match sync::recv(fd) {
        Ok(Some(m)) if m.tag == tag::PROCEED => {}
        _ => sys::exit_child(1),
    }
    for (i, &(nsfd, nstype)) in plan.join_fds.iter().enumerate() {
        // SAFETY: setns on an fd we hold.
        if unsafe { libc::setns(nsfd, nstype) } != 0 {
            fail(fd, Step::JoinNamespace, i as u32, sys::errno());
        }
    }
    if plan.ns.new_user {
        // SAFETY: unshare with a flag constant.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
            fail(fd, Step::UnshareUserNamespace, 0, sys::errno());
        }
        if let Err(e) = sync::send(fd, &Msg::new(tag::MAP_REQUEST)) {
            fail(fd, Step::Sync, 0, e);
        }
        match sync::recv(fd) {
            Ok(Some(m)) if m.tag == tag::MAP_DONE => {}
            _ => sys::exit_child(1),
        }
        // Become root of the new namespace.
        if let Err(e) = sys::setresgid(0) {
            fail(fd, Step::SetGid, 0, e);
        }
        if let Err(e) = sys::setresuid(0) {
            fail(fd, Step::SetUid, 0, e);
        }
    }
    if plan.ns.unshare != 0 {
        // SAFETY: unshare with flag constants.
        if unsafe { libc::unshare(plan.ns.unshare) } != 0 {
            fail(fd, Step::UnshareNamespaces, 0, sys::errno());
        }
    }
    if let Some(offsets) = &plan.ns.time_offsets
        && let Err(e) = sys::write_file_at(
            libc::AT_FDCWD,
            c"/proc/self/timens_offsets",
            offsets.to_bytes(),
        )
    {
        fail(fd, Step::TimeOffsets, 0, e);
    }
    // SAFETY: the child branch only runs `container_process`, which is
    // async-signal-safe and never returns.
    let pid = match unsafe { super::clone::clone_raw(libc::CLONE_PARENT as libc::c_ulong) } {
        Ok(0) => container_process(plan),
        Ok(pid) => pid,
        Err(e) => fail(fd, Step::CloneInit, 0, e),
    };
    let mut m = Msg::new(tag::CHILD_PID);
    m.value = pid;
    if let Err(e) = sync::send(fd, &m) {
        fail(fd, Step::Sync, 0, e);
    }
    sys::exit_child(0)
}

/// Moves internal fds out of the way and places stdio/preserved fds.
/// Returns the (possibly renumbered) sync, listen and console fds.
fn place_fds(plan: &ChildPlan) -> SysResult<(RawFd, RawFd, RawFd)> {
    let min = plan.n_targets;
    let lift = |fd: RawFd| -> SysResult<RawFd> {
        if fd < 0 || fd >= min {
            return Ok(fd);
        }
        // SAFETY: F_DUPFD_CLOEXEC on an fd we hold.
        sys::cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) })
    };
    let child_fd = lift(plan.child_fd)?;
    let listen_fd = lift(plan.listen_fd)?;
    let console_fd = lift(plan.console_fd)?;
    let mut high = [-1 as RawFd; MAX_FD_MOVES];
    for (i, &(src, _)) in plan.fd_moves.iter().enumerate() {
        // SAFETY: F_DUPFD_CLOEXEC on an fd we hold.
        high[i] = sys::cvt(unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, min) })?;
    }
    for (i, &(_, target)) in plan.fd_moves.iter().enumerate() {
        // SAFETY: dup2 between fds we hold; the result is not close-on-exec.
        sys::cvt(unsafe { libc::dup2(high[i], target) })?;
        sys::close(high[i]);
    }
    Ok((child_fd, listen_fd, console_fd))
}

/// Checks that the cwd is reachable from the root (CVE-2024-21626).
fn verify_cwd() -> SysResult<()> {
    let mut buf = [0u8; 4096];
    // SAFETY: buf is writable for its length; the raw syscall does not
    // allocate (unlike glibc's getcwd with a NULL buffer).
    let r = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    sys::cvt_long(r)?;
    if buf[0] != b'/' {
        return Err(libc::ENOENT);
    }
    Ok(())
}

/// Sends the pty master over the console socket (SCM_RIGHTS) and makes the
/// slave the controlling terminal and stdio.
fn setup_console(console_fd: RawFd, size: Option<(u16, u16)>) -> SysResult<()> {
    let master = sys::openat(
        libc::AT_FDCWD,
        c"/dev/ptmx",
        libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        0,
    )?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to an int.
    sys::cvt(unsafe { libc::ioctl(master, libc::TIOCSPTLCK, &unlock) })?;
    // SAFETY: TIOCGPTPEER returns a new fd for the slave side.
    let slave = sys::cvt(unsafe {
        libc::ioctl(
            master,
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize we own.
        sys::cvt(unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) })?;
    }
    send_fd(console_fd, master)?;
    sys::close(master);
    // SAFETY: TIOCSCTTY on our session's new terminal.
    sys::cvt(unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) })?;
    for target in 0..3 {
        // SAFETY: dup2 between fds we hold.
        sys::cvt(unsafe { libc::dup2(slave, target) })?;
    }
    sys::close(slave);
    Ok(())
}

/// Sends one fd with SCM_RIGHTS, using only stack buffers.
fn send_fd(sock: RawFd, fd: RawFd) -> SysResult<()> {
    #[repr(C)]
    union CmsgBuf {
        _align: libc::cmsghdr,
        buf: [u8; 64],
    }
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cbuf = CmsgBuf { buf: [0u8; 64] };
    // SAFETY: an all-zero msghdr is valid; pointers are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
    // SAFETY: cbuf is 64 bytes, larger than one fd's control message.
    msg.msg_control = unsafe { cbuf.buf.as_mut_ptr() }.cast();
    msg.msg_controllen = space;
    // SAFETY: msg has a control buffer of `space` bytes, so the first header fits.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    // SAFETY: msg is fully initialised and its buffers outlive the call.
    let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if r < 0 { Err(sys::errno()) } else { Ok(()) }
}

/// Resets every signal disposition to the default and unblocks all
/// signals: ignored signals survive `execve`, and the runtime's process may
/// ignore some (the Rust runtime ignores `SIGPIPE`). Async-signal-safe.
pub(crate) fn reset_signals() {
    // SAFETY: an all-zero sigaction is SIG_DFL with an empty mask.
    let dfl: libc::sigaction = unsafe { std::mem::zeroed() };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: sigaction is async-signal-safe; glibc refuses (EINVAL) its
        // internal signals, which the raw call below covers.
        unsafe { libc::sigaction(sig, &dfl, std::ptr::null_mut()) };
    }
    #[cfg(target_arch = "x86_64")]
    {
        // The kernel's x86-64 `struct sigaction`: handler, flags, restorer, mask.
        #[repr(C)]
        struct KernelSigaction {
            handler: usize,
            flags: u64,
            restorer: usize,
            mask: u64,
        }
        let k = KernelSigaction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        for sig in [32, 33] {
            // SAFETY: rt_sigaction with a valid kernel sigaction and sigset size 8.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &k as *const KernelSigaction,
                    std::ptr::null::<KernelSigaction>(),
                    8usize,
                )
            };
        }
    }
    let empty: u64 = 0;
    // SAFETY: rt_sigprocmask(SIG_SETMASK) with an 8-byte empty set.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null::<u64>(),
            8usize,
        )
    };
}

/// The container process (init or exec). Never returns.
pub(crate) fn container_process(plan: &ChildPlan) -> ! {
    sys::close(plan.stage1_fd);
    let fd0 = plan.child_fd;
    // Die with the runtime during setup. The parent may be outside our pid
    // namespace (getppid() is 0 then), so a runtime that died before this
    // point is noticed by the next send on the sync channel failing instead.
    // SAFETY: prctl with integer arguments.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    } != 0
    {
        fail(fd0, Step::ParentDied, 0, sys::errno());
    }
    // The startContainer hooks need our pid as the runtime sees it.
    let mut host_pid = 0;
    if !plan.start_hooks.is_empty() {
        match sync::recv(fd0) {
            Ok(Some(m)) if m.tag == tag::INIT_PID => host_pid = m.value,
            _ => sys::exit_child(1),
        }
    }
    let (fd, listen_fd, console_fd) = match place_fds(plan) {
        Ok(v) => v,
        Err(e) => fail(fd0, Step::SetupStdio, 0, e),
    };
    // Writes to hooks' stdin must not kill us if a hook exits early;
    // dispositions are reset to defaults right before exec.
    // SAFETY: an all-zero sigaction with SIG_IGN as handler.
    unsafe {
        let mut ign: libc::sigaction = std::mem::zeroed();
        ign.sa_sigaction = libc::SIG_IGN;
        libc::sigaction(libc::SIGPIPE, &ign, std::ptr::null_mut());
    }
    // A new session: the container must not share the caller's terminal job control.
    // SAFETY: setsid has no memory preconditions.
    unsafe { libc::setsid() };
    // SAFETY: umask only sets a mask; device nodes get their exact modes.
    unsafe { libc::umask(0) };
    let p = &plan.process;

    // A session keyring of our own, so the container cannot reach the
    // runtime's (kernels without keyrings: ENOSYS, ignored).
    if let Some(name) = &plan.session_keyring {
        // SAFETY: KEYCTL_JOIN_SESSION_KEYRING with a NUL-terminated name.
        let r = unsafe { libc::syscall(libc::SYS_keyctl, 1, name.as_ptr()) };
        if r < 0 && sys::errno() != libc::ENOSYS {
            fail(fd, Step::SessionKeyring, 0, sys::errno());
        }
    }
    if let Some(h) = &plan.hostname {
        // SAFETY: h is a NUL-terminated string; the length excludes the NUL.
        if unsafe { libc::sethostname(h.as_ptr(), h.as_bytes().len()) } != 0 {
            fail(fd, Step::SetHostname, 0, sys::errno());
        }
    }
    if let Some(d) = &plan.domainname {
        // SAFETY: as above.
        if unsafe { libc::setdomainname(d.as_ptr(), d.as_bytes().len()) } != 0 {
            fail(fd, Step::SetDomainname, 0, sys::errno());
        }
    }

    // A procfs fd, verified, for /proc writes: the host's before the pivot
    // (init), the container's (exec). Only opened when something needs it,
    // so exec works in a container without /proc.
    let needs_proc = plan.rootfs.is_some() || p.oom_score_adj.is_some() || p.lsm_label.is_some();
    let procfd = if needs_proc {
        let pfd = match sys::openat(
            libc::AT_FDCWD,
            c"/proc",
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0,
        ) {
            Ok(pfd) => pfd,
            Err(e) => fail(fd, Step::OpenProc, 0, e),
        };
        match sys::fs_magic(pfd) {
            Ok(m) if m == crate::rootfs::PROC_MAGIC => {}
            Ok(_) => fail(fd, Step::OpenProc, 0, libc::EXDEV),
            Err(e) => fail(fd, Step::OpenProc, 0, e),
        }
        pfd
    } else {
        -1
    };
    if let Some(v) = &p.oom_score_adj
        && let Err(e) = sys::write_file_at(procfd, c"self/oom_score_adj", v.to_bytes())
    {
        fail(fd, Step::OomScoreAdj, 0, e);
    }
    if let Some((path, label)) = &p.lsm_label
        && let Err(e) = sys::write_file_at(procfd, path, label.to_bytes())
    {
        fail(fd, Step::LsmLabel, 0, e);
    }
    if plan.mode == Mode::Init && plan.run_create_hooks {
        if let Err(e) = sync::send(fd, &Msg::new(tag::HOOKS)) {
            fail(fd, Step::Sync, 0, e);
        }
        match sync::recv(fd) {
            Ok(Some(m)) if m.tag == tag::HOOKS_DONE => {}
            _ => sys::exit_child(1),
        }
    }
    if let Some(rootfs) = &plan.rootfs
        && let Err((step, index, e)) = crate::rootfs::setup(rootfs, procfd)
    {
        fail(fd, step, index, e);
    }
    sys::close(procfd);

    if p.terminal && console_fd >= 0 {
        if let Err(e) = setup_console(console_fd, p.console_size) {
            fail(fd, Step::Console, 0, e);
        }
        sys::close(console_fd);
    }

    if let Err((step, e)) = p.apply_scheduling() {
        fail(fd, step, 0, e);
    }
    for (i, r) in p.rlimits.iter().enumerate() {
        if let Err(e) = r.apply() {
            fail(fd, Step::Rlimit, i as u32, e);
        }
    }
    if let Some(sc) = &p.seccomp
        && !p.no_new_privileges
        && let Err(e) = sc.load()
    {
        fail(fd, Step::Seccomp, 0, e);
    }
    if let Some(caps) = &p.caps
        && let Err((cap, e)) = caps.drop_bounding()
    {
        fail(fd, Step::DropBoundingCapability, cap, e);
    }
    if let Err((step, e)) = p.switch_user() {
        fail(fd, step, 0, e);
    }
    // SAFETY: p.cwd is NUL-terminated.
    if unsafe { libc::chdir(p.cwd.as_ptr()) } != 0 {
        fail(fd, Step::Chdir, 0, sys::errno());
    }
    if let Err(e) = verify_cwd() {
        fail(fd, Step::VerifyCwd, 0, e);
    }
    if let Some(caps) = &p.caps {
        if let Err(e) = caps.set() {
            fail(fd, Step::SetCapabilities, 0, e);
        }
        if let Err((cap, e)) = caps.raise_ambient() {
            fail(fd, Step::RaiseAmbientCapability, cap, e);
        }
    }
    // SAFETY: umask only sets a mask.
    unsafe { libc::umask(p.umask.unwrap_or(0o022)) };
    if p.no_new_privileges {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            fail(fd, Step::NoNewPrivileges, 0, sys::errno());
        }
    }
    if let Err(e) = close_range(
        plan.n_targets as libc::c_uint,
        libc::c_uint::MAX,
        CLOSE_RANGE_CLOEXEC,
    ) {
        fail(fd, Step::CloseRange, 0, e);
    }

    // Where exec errors go: the sync channel (exec) or the start connection (init).
    let mut report_fd = fd;
    if plan.mode == Mode::Init {
        clear_pdeathsig();
        if let Err(e) = sync::send(fd, &Msg::new(tag::READY)) {
            fail(fd, Step::Sync, 0, e);
        }
        let conn = loop {
            // SAFETY: accept4 with null address pointers.
            let c = unsafe {
                libc::accept4(
                    listen_fd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if c >= 0 {
                break c;
            }
            let e = sys::errno();
            if e != libc::EINTR && e != libc::ECONNABORTED {
                sys::exit_child(1);
            }
        };
        let mut b = [0u8; 1];
        // SAFETY: b is writable for one byte.
        let n = unsafe { libc::read(conn, b.as_mut_ptr().cast(), 1) };
        if n != 1 {
            sys::exit_child(1);
        }
        sys::close(listen_fd);
        report_fd = conn;
        for (i, h) in plan.start_hooks.iter().enumerate() {
            if let Err(e) = h.run(&plan.start_state, host_pid) {
                fail(report_fd, Step::StartContainerHook, i as u32, e);
            }
        }
    } else {
        clear_pdeathsig();
    }

    if let Some(sc) = &p.seccomp
        && p.no_new_privileges
        && let Err(e) = sc.load()
    {
        fail(report_fd, Step::Seccomp, 0, e);
    }
    reset_signals();
    let e = p.exec();
    fail(report_fd, Step::Exec, 0, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_all_except_keeps_listed_fds() {
        // Run in a forked child so the test harness's fds are untouched.
        let keep_file = std::fs::File::open("/dev/null").unwrap();
        let drop_file = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsRawFd;
        let keep = keep_file.as_raw_fd();
        let gone = drop_file.as_raw_fd();
        // SAFETY: the child only makes raw syscalls and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ok = close_all_except(&[keep]).is_ok()
                // SAFETY: F_GETFD on fd numbers.
                && unsafe { libc::fcntl(keep, libc::F_GETFD) } >= 0
                // SAFETY: as above.
                && unsafe { libc::fcntl(gone, libc::F_GETFD) } < 0;
            sys::exit_child(if ok { 0 } else { 1 });
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
}
