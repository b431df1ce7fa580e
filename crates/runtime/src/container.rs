//! The lifecycle API: [`Runtime`] drives containers stored under a state root.
//!
//! Every operation takes the container's lock, so separate processes (one
//! CLI invocation per step) can drive the same container safely. `create`
//! leaves the init process blocked on the start socket; `start` connects to
//! it, and the connection's close-on-exec end tells `start` whether the
//! user program was exec'd (EOF) or failed (an error record).

use std::collections::BTreeMap;
use std::io::Read;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Spec};

use crate::cgroups::{self, Cgroup};
use crate::error::{Error, Result};
use crate::namespaces::NsPlan;
use crate::process::ProcessPlan;
use crate::rootfs::RootfsPlan;
use crate::spawn::{self, Mode, SpawnRequest};
use crate::state::{ContainerState, OCI_VERSION, StateDir, Status};
use crate::stdio::{self, ContainerProcess, CreateOptions};
use crate::sync::Msg;
use crate::{hooks, preflight};

/// An OCI runtime rooted at a state directory.
///
/// Concurrency: any number of `Runtime` values, in any number of
/// processes, may share a root; per-container operations are serialised by
/// a lock file. The spawn path creates no threads.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
}

/// Removes a half-created container (cgroup, state dir) unless disarmed.
struct CreateGuard<'a> {
    dir: &'a StateDir,
    cgroup: Option<Cgroup>,
    /// The cgroup is at the runtime's default path: remove its empty parents too.
    prune_parents: bool,
    armed: bool,
}

impl Drop for CreateGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill_all(Duration::from_secs(5));
            if let Err(err) = cg.destroy() {
                tracing::warn!(%err, "cleanup after failed create: cgroup");
            } else if self.prune_parents {
                cg.remove_empty_parents();
            }
        }
        if let Err(err) = self.dir.remove() {
            tracing::warn!(%err, "cleanup after failed create: state dir");
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn cstr(field: &str, s: &str) -> Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|_| Error::spec(field, "contains a NUL byte"))
}

/// Loads and validates `<bundle>/config.json` (with `berth_oci::validate_json`,
/// which reports every problem of the document at once).
///
/// Errors: [`Error::Io`] when the file cannot be read, [`Error::InvalidSpec`]
/// listing the problems.
pub fn load_spec(bundle: &Path) -> Result<Spec> {
    load_spec_and_bytes(bundle).map(|(spec, _)| spec)
}

/// [`load_spec`], also returning the file's bytes: a valid document is
/// stored as it is (validation only reports, it never rewrites a valid
/// spec), which spares serialising it again.
fn load_spec_and_bytes(bundle: &Path) -> Result<(Spec, Vec<u8>)> {
    let path = bundle.join("config.json");
    let data = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    let spec = berth_oci::validate_json(&data)
        .map_err(|e| Error::spec(path.display().to_string(), e.to_string()))?;
    Ok((spec, data))
}

/// The part of a stored spec that `start` and `delete` need.
#[derive(serde::Deserialize)]
struct StoredHooks {
    #[serde(default)]
    hooks: Option<oci_spec::runtime::Hooks>,
}

impl Runtime {
    /// A runtime whose state lives under `root` (created with mode 0700 if missing).
    pub fn new(root: impl Into<PathBuf>) -> Result<Runtime> {
        use std::os::unix::fs::DirBuilderExt;
        let root = root.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(|e| Error::io("create state root", &root, e))?;
        Ok(Runtime { root })
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, id: &str) -> Result<StateDir> {
        StateDir::new(&self.root, id)
    }

    fn load(&self, dir: &StateDir) -> Result<ContainerState> {
        let mut st = dir.read()?;
        st.refresh(dir);
        Ok(st)
    }

    /// The spec stored at create time.
    pub fn spec(&self, id: &str) -> Result<Spec> {
        let data = self.stored_config(id)?;
        serde_json::from_slice(&data).map_err(|e| Error::spec("stored config.json", e.to_string()))
    }

    /// The bytes of the spec stored at create time.
    fn stored_config(&self, id: &str) -> Result<Vec<u8>> {
        let dir = self.dir(id)?;
        let path = dir.config_file();
        std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound { id: id.to_string() },
            _ => Error::io("read", &path, e),
        })
    }

    /// The hooks of the spec stored at create time (only they are
    /// decoded: `start` and `delete` need nothing else).
    fn stored_hooks(&self, id: &str) -> Result<Option<oci_spec::runtime::Hooks>> {
        let data = self.stored_config(id)?;
        serde_json::from_slice::<StoredHooks>(&data)
            .map(|s| s.hooks)
            .map_err(|e| Error::spec("stored config.json", e.to_string()))
    }

    /// Creates container `id` from `bundle`: namespaces, cgroup, root
    /// filesystem; the init process then waits for [`Runtime::start`].
    ///
    /// Returns the init process (a child of the caller: wait for it there).
    /// Errors: [`Error::AlreadyExists`], [`Error::InvalidSpec`],
    /// [`Error::Unsupported`], [`Error::Child`] naming the failed setup step,
    /// [`Error::Cgroup`]. On error no process, cgroup or state is left.
    pub fn create(&self, id: &str, bundle: &Path, opts: CreateOptions) -> Result<ContainerProcess> {
        let dir = self.dir(id)?;
        let bundle = bundle
            .canonicalize()
            .map_err(|e| Error::io("resolve bundle", bundle, e))?;
        let (spec, spec_json) = load_spec_and_bytes(&bundle)?;
        preflight::validate(&spec)?;
        dir.create()?;
        let mut guard = CreateGuard {
            dir: &dir,
            cgroup: None,
            prune_parents: false,
            armed: true,
        };
        let _lock = dir.lock()?;
        let linux = spec.linux().as_ref();
        let annotations: BTreeMap<String, String> = spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let cgroup_rel =
            cgroups::resolve_path(linux.and_then(|l| l.cgroups_path().as_deref()), id)?;
        let ns = NsPlan::new(&spec)?;
        let user_ns = ns.new_user || ns.join.iter().any(|j| j.nstype == libc::CLONE_NEWUSER);
        let rootfs = RootfsPlan::new(&spec, &bundle, user_ns, opts.no_pivot)?;
        let mut state = ContainerState {
            oci_version: OCI_VERSION.to_string(),
            id: id.to_string(),
            status: Status::Creating,
            pid: None,
            pid_start_time: None,
            bundle: bundle.clone(),
            rootfs: rootfs.rootfs_display.clone(),
            annotations,
            created: now(),
            cgroup_path: format!("/{cgroup_rel}"),
            user_ns,
        };
        dir.write(&state)?;
        std::fs::write(dir.config_file(), spec_json)
            .map_err(|e| Error::io("write", dir.config_file(), e))?;

        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| Error::spec("process", "missing"))?;
        let mut process_plan = ProcessPlan::new(process, linux.and_then(|l| l.seccomp().as_ref()))?;
        process_plan.set_personality(linux.and_then(|l| l.personality().as_ref()));
        let creates_uts = ns.unshare & libc::CLONE_NEWUTS != 0;
        let hostname = match spec.hostname().as_deref() {
            Some(h) if !h.is_empty() => {
                if !creates_uts {
                    return Err(Error::spec(
                        "hostname",
                        "setting a hostname needs a new UTS namespace",
                    ));
                }
                Some(cstr("hostname", h)?)
            }
            _ => None,
        };
        let domainname = match spec.domainname().as_deref() {
            Some(d) if !d.is_empty() => {
                if !creates_uts {
                    return Err(Error::spec(
                        "domainname",
                        "setting a domainname needs a new UTS namespace",
                    ));
                }
                Some(cstr("domainname", d)?)
            }
            _ => None,
        };
        let console = if process_plan.terminal {
            let path = opts.console_socket.as_deref().ok_or_else(|| {
                Error::spec("process.terminal", "a terminal needs a console socket")
            })?;
            Some(stdio::connect_console(path)?)
        } else {
            None
        };
        let (fd_moves, n_targets) =
            stdio::fd_moves([opts.stdin, opts.stdout, opts.stderr], opts.preserve_fds)?;
        let listener = stdio::bind_unix(&dir.start_socket())?;
        let hooks_spec = spec.hooks().clone();
        let run_create_hooks = hooks_spec.as_ref().is_some_and(|h| {
            h.create_runtime().is_some() || h.prestart().is_some() || h.create_container().is_some()
        });

        let start_hooks = hooks_spec
            .as_ref()
            .and_then(|h| h.start_container().as_ref())
            .into_iter()
            .flatten()
            .map(crate::hooks_exec::StartHook::new)
            .collect::<Result<Vec<_>>>()?;
        let start_state = if start_hooks.is_empty() {
            Default::default()
        } else {
            let mut st = state.clone();
            st.status = Status::Created;
            crate::hooks_exec::state_json(&st)?
        };

        // A cgroup that already holds processes belongs to someone else:
        // refuse it (and leave it alone) rather than share or destroy it.
        let cg = Cgroup::load(&cgroup_rel);
        if !cg.pids()?.is_empty() {
            return Err(Error::CgroupBusy {
                path: format!("/{cgroup_rel}"),
            });
        }
        cg.create(linux.and_then(|l| l.resources().as_ref()))?;
        let cg = &*guard.cgroup.insert(cg);
        guard.prune_parents = cgroups::is_default_path(&cgroup_rel, id);

        let req = SpawnRequest {
            mode: Mode::Init,
            ns,
            hostname,
            domainname,
            rootfs: Some(rootfs),
            process: process_plan,
            fd_moves,
            n_targets,
            listen: Some(OwnedFd::from(listener)),
            console,
            run_create_hooks,
            session_keyring: if opts.no_new_keyring {
                None
            } else {
                Some(cstr("id", &format!("_ses.{id}"))?)
            },
            start_hooks,
            start_state,
        };
        let pid = spawn::spawn(
            req,
            |pid| cg.add(pid),
            |pid| {
                let mut st = state.clone();
                st.pid = Some(pid);
                let h = hooks_spec.as_ref();
                hooks::run_all(
                    "createRuntime",
                    h.and_then(|h| h.create_runtime().as_ref()),
                    &st,
                )?;
                hooks::run_all("prestart", h.and_then(|h| h.prestart().as_ref()), &st)?;
                hooks::run_all(
                    "createContainer",
                    h.and_then(|h| h.create_container().as_ref()),
                    &st,
                )
            },
        )?;
        let init = ContainerProcess::new(pid);
        state.pid = Some(pid);
        state.pid_start_time = crate::state::proc_start_time(pid).map(|(t, _)| t);
        state.status = Status::Created;
        if let Err(e) = dir.write(&state) {
            // SAFETY: killing our own child before giving up.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = init.wait();
            return Err(e);
        }
        if let Some(p) = &opts.pid_file
            && let Err(e) = stdio::write_pid_file(p, pid)
        {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = init.wait();
            return Err(e);
        }
        guard.armed = false;
        Ok(init)
    }

    /// `create` followed by `start` (what `runc run` does).
    ///
    /// If `start` fails the container is deleted before the error is returned.
    pub fn run(&self, id: &str, bundle: &Path, opts: CreateOptions) -> Result<ContainerProcess> {
        let init = self.create(id, bundle, opts)?;
        if let Err(e) = self.start(id) {
            let _ = self.delete(id, true);
            let _ = init.wait();
            return Err(e);
        }
        Ok(init)
    }

    /// Starts the user program of a created container.
    ///
    /// Returns once the program was exec'd. Errors: [`Error::InvalidState`]
    /// unless `created`; [`Error::Child`] (step `Exec`, `Seccomp`) when the
    /// exec failed — the container is then stopped.
    pub fn start(&self, id: &str) -> Result<()> {
        let dir = self.dir(id)?;
        let _lock = dir.lock()?;
        let mut st = self.load(&dir)?;
        if st.status != Status::Created {
            return Err(Error::InvalidState {
                id: id.to_string(),
                status: st.status.to_string(),
                op: "start",
            });
        }
        let sock = dir.start_socket();
        let mut conn = stdio::connect_unix(&sock)?;
        // The socket's absence records that the container was started
        // (`refresh` derives `running` from it), so the state file is not
        // rewritten; it is removed before the init is released. Should the
        // removal fail, the state file records `running` instead.
        let recorded_by_socket = match std::fs::remove_file(&sock) {
            Ok(()) => true,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        conn.write_all(&[0])
            .map_err(|e| Error::io("write", &sock, e))?;
        let mut buf = Vec::new();
        conn.read_to_end(&mut buf)
            .map_err(|e| Error::io("read", &sock, e))?;
        if buf.len() >= size_of::<Msg>() {
            // SAFETY: Msg is a plain repr(C) struct of integers; any bytes are valid.
            let m: Msg = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
            let spec = self.spec(id).ok();
            let proc_ = spec.as_ref().and_then(|s| s.process().as_ref());
            let arg0 = proc_
                .and_then(|p| p.args().as_ref())
                .and_then(|a| a.first().cloned())
                .unwrap_or_default();
            let cwd = proc_
                .map(|p| p.cwd().display().to_string())
                .unwrap_or_default();
            let hooks: Vec<String> = spec
                .as_ref()
                .and_then(|s| s.hooks().as_ref())
                .and_then(|h| h.start_container().as_ref())
                .into_iter()
                .flatten()
                .map(|h| h.path().display().to_string())
                .collect();
            st.status = Status::Stopped;
            dir.write(&st)?;
            return Err(spawn::decode_exec_error(&m, &arg0, &cwd, &hooks));
        }
        st.status = Status::Running;
        if !recorded_by_socket {
            dir.write(&st)?;
        }
        if let Ok(Some(h)) = self.stored_hooks(id) {
            hooks::run_all_logged("poststart", h.poststart().as_ref(), &st);
        }
        Ok(())
    }

    /// The container's state with its live status.
    pub fn state(&self, id: &str) -> Result<ContainerState> {
        let dir = self.dir(id)?;
        self.load(&dir)
    }

    /// The ids of all containers under the root.
    pub fn list(&self) -> Result<Vec<String>> {
        crate::state::list(&self.root)
    }

    /// Sends `signal` to the init process, or to every process of the
    /// container when `all`.
    ///
    /// Errors: [`Error::InvalidState`] when stopped; [`Error::Sys`] for a bad signal.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        let dir = self.dir(id)?;
        let _lock = dir.lock()?;
        let st = self.load(&dir)?;
        if all {
            return Cgroup::load(st.cgroup_path.trim_start_matches('/')).signal_all(signal);
        }
        if matches!(st.status, Status::Stopped | Status::Creating) {
            return Err(Error::InvalidState {
                id: id.to_string(),
                status: st.status.to_string(),
                op: "kill",
            });
        }
        let (Some(pid), Some(start)) = (st.pid, st.pid_start_time) else {
            return Err(Error::protocol("state has no pid"));
        };
        signal_pid(pid, start, signal)
    }

    /// Deletes the container: its processes (with `force`), cgroup and state.
    ///
    /// Without `force`, only `created` or `stopped` containers can be
    /// deleted. Poststop hooks run after the cgroup is gone.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let dir = self.dir(id)?;
        let _lock = dir.lock()?;
        let st = self.load(&dir)?;
        if matches!(st.status, Status::Running | Status::Paused) && !force {
            return Err(Error::InvalidState {
                id: id.to_string(),
                status: st.status.to_string(),
                op: "delete without force",
            });
        }
        let cg = Cgroup::load(st.cgroup_path.trim_start_matches('/'));
        if st.status != Status::Stopped
            && let (Some(pid), Some(start)) = (st.pid, st.pid_start_time)
        {
            let _ = signal_pid(pid, start, libc::SIGKILL);
        }
        cg.kill_all(Duration::from_secs(10))?;
        cg.destroy()?;
        if cgroups::is_default_path(&st.cgroup_path, id) {
            cg.remove_empty_parents();
        }
        if let Ok(Some(h)) = self.stored_hooks(id) {
            let mut stopped = st.clone();
            stopped.status = Status::Stopped;
            hooks::run_all_logged("poststop", h.poststop().as_ref(), &stopped);
        }
        dir.remove()
    }

    /// Freezes every process of a running container.
    pub fn pause(&self, id: &str) -> Result<()> {
        let dir = self.dir(id)?;
        let _lock = dir.lock()?;
        let st = self.load(&dir)?;
        if st.status != Status::Running {
            return Err(Error::InvalidState {
                id: id.to_string(),
                status: st.status.to_string(),
                op: "pause",
            });
        }
        Cgroup::load(st.cgroup_path.trim_start_matches('/')).freeze()
    }

    /// Thaws a paused container.
    pub fn resume(&self, id: &str) -> Result<()> {
        let dir = self.dir(id)?;
        let _lock = dir.lock()?;
        let st = self.load(&dir)?;
        if st.status != Status::Paused {
            return Err(Error::InvalidState {
                id: id.to_string(),
                status: st.status.to_string(),
                op: "resume",
            });
        }
        Cgroup::load(st.cgroup_path.trim_start_matches('/')).thaw()
    }

    /// Applies new resource limits to a live container.
    pub fn update(&self, id: &str, resources: &LinuxResources) -> Result<()> {
        let dir = self.dir(id)?;
        let _lock = dir.lock()?;
        let st = self.load(&dir)?;
        if st.status == Status::Stopped {
            return Err(Error::InvalidState {
                id: id.to_string(),
                status: st.status.to_string(),
                op: "update",
            });
        }
        Cgroup::load(st.cgroup_path.trim_start_matches('/')).apply(resources)
    }

    /// The pids of every process in the container (host pid namespace).
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let st = self.state(id)?;
        Cgroup::load(st.cgroup_path.trim_start_matches('/')).pids()
    }

    /// Runs `process` inside a created or running container: joins its
    /// namespaces and cgroup, applies the process's user, capabilities,
    /// rlimits and the container's seccomp profile, and execs.
    ///
    /// Returns once the program was exec'd; the process is a child of the
    /// caller. Errors: [`Error::InvalidState`] unless created/running,
    /// [`Error::Child`] naming the failed step.
    pub fn exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        opts: crate::ExecOptions,
    ) -> Result<ContainerProcess> {
        let dir = self.dir(id)?;
        let st = {
            let _lock = dir.lock()?;
            self.load(&dir)?
        };
        if !matches!(st.status, Status::Created | Status::Running) {
            return Err(Error::InvalidState {
                id: id.to_string(),
                status: st.status.to_string(),
                op: "exec",
            });
        }
        let spec = self.spec(id)?;
        let pid = st.pid.ok_or_else(|| Error::protocol("state has no pid"))?;
        let ns = exec_namespaces(&spec, pid)?;
        let linux = spec.linux().as_ref();
        let mut plan = ProcessPlan::new(process, linux.and_then(|l| l.seccomp().as_ref()))?;
        plan.set_personality(linux.and_then(|l| l.personality().as_ref()));
        let console = if plan.terminal {
            let path = opts.console_socket.as_deref().ok_or_else(|| {
                Error::spec("process.terminal", "a terminal needs a console socket")
            })?;
            Some(stdio::connect_console(path)?)
        } else {
            None
        };
        let (fd_moves, n_targets) =
            stdio::fd_moves([opts.stdin, opts.stdout, opts.stderr], opts.preserve_fds)?;
        let cg = Cgroup::load(st.cgroup_path.trim_start_matches('/'));
        let req = SpawnRequest {
            mode: Mode::Exec,
            ns,
            hostname: None,
            domainname: None,
            rootfs: None,
            process: plan,
            fd_moves,
            n_targets,
            listen: None,
            console,
            run_create_hooks: false,
            // Join the container's keyring (created by its init), as runc does.
            session_keyring: Some(cstr("id", &format!("_ses.{id}"))?),
            start_hooks: Vec::new(),
            start_state: Default::default(),
        };
        let child = spawn::spawn(req, |p| cg.add(p), |_| Ok(()))?;
        let proc_ = ContainerProcess::new(child);
        if let Some(p) = &opts.pid_file {
            stdio::write_pid_file(p, child)?;
        }
        Ok(proc_)
    }
}

/// Opens the namespaces of `pid` that the container has (user first, and
/// only when it differs from ours).
fn exec_namespaces(spec: &Spec, pid: i32) -> Result<NsPlan> {
    use crate::namespaces::{JoinNs, clone_flag, ns_inode, proc_name};
    let mut plan = NsPlan::default();
    let types: Vec<LinuxNamespaceType> = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
        .map(|n| n.typ())
        .collect();
    let pid_s = pid.to_string();
    let mut ordered = types.clone();
    ordered.sort_by_key(|t| *t != LinuxNamespaceType::User);
    for t in ordered {
        let name = proc_name(t);
        if ns_inode(&pid_s, name).is_some() && ns_inode(&pid_s, name) == ns_inode("self", name) {
            continue;
        }
        let path = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
        let f = std::fs::File::open(&path).map_err(|e| Error::io("open namespace", &path, e))?;
        plan.join.push(JoinNs {
            fd: OwnedFd::from(f),
            nstype: clone_flag(t),
            path,
        });
    }
    Ok(plan)
}

/// Signals `pid` through a pidfd after checking its start time, so a
/// recycled pid is never signalled.
fn signal_pid(pid: i32, start: u64, signal: i32) -> Result<()> {
    // SAFETY: pidfd_open with plain integers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Error::sys("pidfd_open", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh pidfd we own.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    if crate::state::proc_start_time(pid).map(|(t, _)| t) != Some(start) {
        return Err(Error::sys(
            "kill",
            std::io::Error::from_raw_os_error(libc::ESRCH),
        ));
    }
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal on our pidfd with a null siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(Error::sys(
            "pidfd_send_signal",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
