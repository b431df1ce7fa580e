//! Spawning a container process: the runtime's side of the protocol.
//!
//! ```text
//!  runtime ──clone──▶ stage1 ──clone(CLONE_PARENT)──▶ init / exec process
//!     │ add stage1 to cgroup, PROCEED ▶│                      │
//!     │◀ MAP_REQUEST (new userns)      │                      │
//!     │ write uid/gid maps, MAP_DONE ▶ │                      │
//!     │◀ CHILD_PID(pid), exit          │                      │
//!     │◀───────────────── HOOKS ─ (create hooks) ─ HOOKS_DONE ▶│
//!     │◀───────────────── READY (init) / EOF on exec (exec) ──│
//! ```
//!
//! Each child has its own SEQPACKET channel ([`crate::sync`]). Everything the
//! children use is prepared in a [`ChildPlan`] before the first clone, so
//! the children never allocate. If anything fails, the runtime kills and
//! reaps whatever it started before returning the error.

pub(crate) mod child;
mod clone;

pub(crate) use clone::clone_raw;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::error::{Error, Result, Step};
use crate::namespaces::NsPlan;
use crate::process::ProcessPlan;
use crate::rootfs::RootfsPlan;
use crate::sync::{self, Channel, Msg, tag};

/// Whether the spawned process is a container's init or an exec'd process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Builds the container and waits for `start`.
    Init,
    /// Joins a running container and execs at once.
    Exec,
}

/// A source fd for the container's fd `target`.
#[derive(Debug)]
pub(crate) struct FdMove {
    pub(crate) source: OwnedFd,
    pub(crate) target: RawFd,
}

/// What the caller asks to spawn.
#[derive(Debug)]
pub(crate) struct SpawnRequest {
    pub(crate) mode: Mode,
    pub(crate) ns: NsPlan,
    pub(crate) hostname: Option<CString>,
    pub(crate) domainname: Option<CString>,
    pub(crate) rootfs: Option<RootfsPlan>,
    pub(crate) process: ProcessPlan,
    /// Fds to place (stdio and preserved fds).
    pub(crate) fd_moves: Vec<FdMove>,
    /// Number of fds the process starts with (3 + preserved).
    pub(crate) n_targets: RawFd,
    /// The start socket (init only).
    pub(crate) listen: Option<OwnedFd>,
    /// A connected console socket (terminal only).
    pub(crate) console: Option<OwnedFd>,
    pub(crate) run_create_hooks: bool,
    /// Join (or create) this named session keyring (`_ses.<id>`), unless None.
    pub(crate) session_keyring: Option<CString>,
    /// startContainer hooks (init only) and the state JSON they read.
    pub(crate) start_hooks: Vec<crate::hooks_exec::StartHook>,
    pub(crate) start_state: crate::hooks_exec::StateJson,
}

/// Everything the children read. Raw fd numbers refer to fds owned by the
/// [`SpawnRequest`] (kept alive by the runtime for the whole spawn).
#[derive(Debug)]
pub(crate) struct ChildPlan {
    pub(crate) mode: Mode,
    pub(crate) parent_pid: libc::pid_t,
    pub(crate) stage1_fd: RawFd,
    pub(crate) child_fd: RawFd,
    pub(crate) listen_fd: RawFd,
    pub(crate) console_fd: RawFd,
    pub(crate) keep_fds: Vec<RawFd>,
    pub(crate) fd_moves: Vec<(RawFd, RawFd)>,
    pub(crate) n_targets: RawFd,
    pub(crate) join_fds: Vec<(RawFd, libc::c_int)>,
    pub(crate) ns: NsPlan,
    pub(crate) hostname: Option<CString>,
    pub(crate) domainname: Option<CString>,
    pub(crate) rootfs: Option<RootfsPlan>,
    pub(crate) process: ProcessPlan,
    pub(crate) run_create_hooks: bool,
    pub(crate) session_keyring: Option<CString>,
    pub(crate) start_hooks: Vec<crate::hooks_exec::StartHook>,
    pub(crate) start_state: crate::hooks_exec::StateJson,
}

/// Kills and reaps a pid on drop unless disarmed.
struct Reaper {
    pid: libc::pid_t,
    armed: bool,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if self.armed && self.pid > 0 {
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                let mut st = 0;
                libc::waitpid(self.pid, &mut st, 0);
            }
        }
    }
}

fn describe(plan: &ChildPlan, step: Step, index: u32) -> Option<String> {
    let i = index as usize;
    let rootfs = plan.rootfs.as_ref();
    match step {
        Step::JoinNamespace => plan.ns.join.get(i).map(|j| j.path.display().to_string()),
        Step::BindRootfs | Step::OpenRootfs | Step::PivotRoot | Step::ReadonlyRoot => {
            rootfs.map(|r| r.rootfs_display.display().to_string())
        }
        Step::ResolveMountTarget | Step::Mount | Step::MountPropagation | Step::RemountReadonly => {
            rootfs
                .and_then(|r| r.mounts.get(i))
                .map(|m| m.dest.display.clone())
        }
        Step::CreateDevice => rootfs
            .and_then(|r| r.devices.get(i))
            .map(|d| d.path.display.clone()),
        Step::CreateSymlink => rootfs.map(|r| {
            r.symlinks.get(i).map_or("/dev/ptmx".to_string(), |(n, _)| {
                format!("/dev/{}", n.to_string_lossy())
            })
        }),
        Step::Sysctl => rootfs.and_then(|r| r.sysctl.get(i)).map(|s| s.key.clone()),
        Step::MaskPath => rootfs
            .and_then(|r| r.masked.get(i))
            .map(|p| p.display.clone()),
        Step::ReadonlyPath => rootfs
            .and_then(|r| r.readonly_paths.get(i))
            .map(|p| p.display.clone()),
        Step::Chdir | Step::VerifyCwd => Some(plan.process.cwd_display.clone()),
        Step::Exec => Some(plan.process.arg0.clone()),
        Step::Rlimit => plan
            .process
            .rlimits
            .get(i)
            .map(|r| format!("resource {}", r.resource)),
        Step::DropBoundingCapability | Step::RaiseAmbientCapability => {
            Some(format!("capability {index}"))
        }
        Step::SetHostname => plan
            .hostname
            .as_ref()
            .map(|h| h.to_string_lossy().into_owned()),
        Step::SetDomainname => plan
            .domainname
            .as_ref()
            .map(|h| h.to_string_lossy().into_owned()),
        Step::OpenProc => Some("/proc".into()),
        Step::TimeOffsets => Some("/proc/self/timens_offsets".into()),
        Step::StartContainerHook => plan.start_hooks.get(i).map(|h| h.display.clone()),
        _ => None,
    }
}

fn child_error(plan: &ChildPlan, m: &Msg) -> Error {
    match Step::from_u32(m.step) {
        Some(step) => Error::Child {
            step,
            path: describe(plan, step, m.index),
            source: io::Error::from_raw_os_error(m.value),
        },
        None => Error::protocol(format!("unknown step {} in error record", m.step)),
    }
}

/// Decodes an error record received after the sync channel (the start
/// connection), for the same plan shape.
pub(crate) fn decode_exec_error(m: &Msg, arg0: &str, cwd: &str, hooks: &[String]) -> Error {
    let step = Step::from_u32(m.step).unwrap_or(Step::Exec);
    let path = match step {
        Step::Exec => Some(arg0.to_string()),
        Step::Chdir | Step::VerifyCwd => Some(cwd.to_string()),
        Step::StartContainerHook => hooks.get(m.index as usize).cloned(),
        _ => None,
    };
    Error::Child {
        step,
        path,
        source: io::Error::from_raw_os_error(m.value),
    }
}

fn write_map(pid: libc::pid_t, name: &str, data: &[u8]) -> Result<()> {
    let path = format!("/proc/{pid}/{name}");
    std::fs::write(&path, data).map_err(|e| Error::io("write id map", path, e))
}

/// Turns a broken channel into an error that says how the child ended
/// (reaping it).
fn exited_early(reaper: &mut Reaper, who: &str, cause: Error) -> Error {
    let mut st = 0;
    // SAFETY: reaping our own child; it is dead or dying (its channel broke).
    let r = unsafe { libc::waitpid(reaper.pid, &mut st, 0) };
    reaper.armed = false;
    let how = if r != reaper.pid {
        "is gone".to_string()
    } else if libc::WIFEXITED(st) {
        format!("exited with status {}", libc::WEXITSTATUS(st))
    } else if libc::WIFSIGNALED(st) {
        format!("was killed by signal {}", libc::WTERMSIG(st))
    } else {
        "stopped".to_string()
    };
    Error::protocol(format!("{who} (pid {}) {how}: {cause}", reaper.pid))
}

/// Spawns the process described by `req`.
///
/// `attach(stage1_pid)` must put the pid in the container's cgroup (the
/// container process inherits it). `hooks(pid)` runs the create-phase
/// hooks when the init asks for them. Returns the container process's pid
/// (a child of the calling process). On error nothing stays running.
pub(crate) fn spawn(
    req: SpawnRequest,
    attach: impl FnOnce(libc::pid_t) -> Result<()>,
    mut hooks: impl FnMut(libc::pid_t) -> Result<()>,
) -> Result<libc::pid_t> {
    if req.fd_moves.len() > child::MAX_FD_MOVES {
        return Err(Error::spec("preserve_fds", "too many fds to pass"));
    }
    let (p1, c1) = sync::pair()?;
    let (p2, c2) = sync::pair()?;
    let listen_fd = req.listen.as_ref().map_or(-1, |f| f.as_raw_fd());
    let console_fd = req.console.as_ref().map_or(-1, |f| f.as_raw_fd());
    let mut keep_fds: Vec<RawFd> = vec![c1.as_raw_fd(), c2.as_raw_fd(), listen_fd, console_fd];
    keep_fds.extend(req.fd_moves.iter().map(|m| m.source.as_raw_fd()));
    keep_fds.extend(req.ns.raw_fds());
    keep_fds.retain(|&fd| fd >= 0);
    keep_fds.sort_unstable();
    keep_fds.dedup();
    let join_fds = req
        .ns
        .join
        .iter()
        .map(|j| (j.fd.as_raw_fd(), j.nstype))
        .collect();
    let plan = ChildPlan {
        mode: req.mode,
        // SAFETY: getpid has no preconditions.
        parent_pid: unsafe { libc::getpid() },
        stage1_fd: c1.as_raw_fd(),
        child_fd: c2.as_raw_fd(),
        listen_fd,
        console_fd,
        keep_fds,
        fd_moves: req
            .fd_moves
            .iter()
            .map(|m| (m.source.as_raw_fd(), m.target))
            .collect(),
        n_targets: req.n_targets,
        join_fds,
        ns: req.ns,
        hostname: req.hostname,
        domainname: req.domainname,
        rootfs: req.rootfs,
        process: req.process,
        run_create_hooks: req.run_create_hooks,
        session_keyring: req.session_keyring,
        start_hooks: req.start_hooks,
        start_state: req.start_state,
    };

    // SAFETY: the child branch runs only `child::stage1`, which is
    // async-signal-safe, touches only the prepared plan and never returns.
    let stage1 = match unsafe { clone_raw(0) } {
        Ok(0) => child::stage1(&plan),
        Ok(pid) => pid,
        Err(e) => return Err(Error::sys("clone", io::Error::from_raw_os_error(e))),
    };
    let mut stage1_reaper = Reaper {
        pid: stage1,
        armed: true,
    };
    drop(c1);
    drop(c2);
    let ch1 = Channel::new(p1);
    let ch2 = Channel::new(p2);

    attach(stage1)?;
    if let Err(e) = ch1.send(Msg::new(tag::PROCEED)) {
        return Err(exited_early(&mut stage1_reaper, "stage 1", e));
    }

    let mut child_pid = None;
    while child_pid.is_none() {
        match ch1.recv(stage1)? {
            Some(m) if m.tag == tag::MAP_REQUEST => {
                write_map(stage1, "uid_map", &plan.ns.uid_map)?;
                write_map(stage1, "gid_map", &plan.ns.gid_map)?;
                ch1.send(Msg::new(tag::MAP_DONE))?;
            }
            Some(m) if m.tag == tag::CHILD_PID => child_pid = Some(m.value),
            Some(m) if m.tag == tag::ERROR => return Err(child_error(&plan, &m)),
            Some(m) => {
                return Err(Error::protocol(format!(
                    "unexpected message {} from stage 1",
                    m.tag
                )));
            }
            None => {
                return Err(exited_early(
                    &mut stage1_reaper,
                    "stage 1",
                    Error::protocol(
                        "it closed the sync channel before cloning the container process",
                    ),
                ));
            }
        }
    }
    let pid = child_pid.unwrap_or(-1);
    if !plan.start_hooks.is_empty() {
        let mut m = Msg::new(tag::INIT_PID);
        m.value = pid;
        ch2.send(m)?;
    }
    let mut child_reaper = Reaper { pid, armed: true };
    // Reap stage 1.
    stage1_reaper.armed = false;
    let mut st = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(stage1, &mut st, 0) };

    loop {
        match ch2.recv(pid)? {
            Some(m) if m.tag == tag::HOOKS => {
                hooks(pid)?;
                ch2.send(Msg::new(tag::HOOKS_DONE))?;
            }
            Some(m) if m.tag == tag::READY && plan.mode == Mode::Init => break,
            Some(m) if m.tag == tag::ERROR => return Err(child_error(&plan, &m)),
            Some(m) => {
                return Err(Error::protocol(format!(
                    "unexpected message {} from container process",
                    m.tag
                )));
            }
            None if plan.mode == Mode::Exec => break,
            None => {
                return Err(exited_early(
                    &mut child_reaper,
                    "container init",
                    Error::protocol("it closed the sync channel during setup"),
                ));
            }
        }
    }
    child_reaper.armed = false;
    Ok(pid)
}
