//! The Containers service: containers from images and their tasks.
//!
//! `Create` is `berth run`'s preparation ([`crate::engine::prepare`]: unpack, active snapshot,
//! mounted rootfs, runtime spec, record) with the output going to the container's log.
//! `Start` creates the init through the runtime (the daemon is its parent and reaps it, see
//! [`crate::daemon`]), brings up loopback in a new network namespace, starts it and watches
//! its memory cgroup for OOM kills. The runtime's state directory is the truth about a
//! container's life: after a daemon restart, containers are listed from the records plus that
//! state, and a `Wait` on one the daemon did not create polls the state until it stops.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth::runtime::{CreateOptions, ErrorKind as RtErrorKind, ExecOptions, Runtime, Stdio};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::daemon::{Daemon, Tracked, caller};
use crate::engine::records::{self, ContainerRecord};
use crate::engine::runspec::{self, BindMount, Network, RunOptions};
use crate::engine::{self, PrepareRequest};
use crate::proto::containers_server::Containers;
use crate::proto::{
    AttachRequest, Container, ContainerRequest, CreateContainerRequest, DeleteRequest,
    DeleteResponse, ExecRequest, ExecResponse, KillRequest, KillResponse, ListContainersRequest,
    ListContainersResponse, LogsRequest, MetricsRequest, MetricsResponse, WaitResponse,
};
use crate::{blocking, invalid};

/// The most output of one exec kept per stream.
const MAX_EXEC_OUTPUT: u64 = 16 << 20;

/// The Containers service.
#[derive(Debug, Clone)]
pub struct ContainersService(pub Arc<Daemon>);

/// The run options of a create request (validated).
fn run_options(r: &CreateContainerRequest) -> Result<RunOptions, Status> {
    let network = match r.network.as_str() {
        "" | "none" => Network::None,
        "host" => Network::Host,
        other => return Err(invalid(format!("network {other:?}: host or none"))),
    };
    if let Some(e) = r.env.iter().find(|e| !e.contains('=')) {
        return Err(invalid(format!("env {e:?}: expected K=V")));
    }
    if r.pids_limit < 0 {
        return Err(invalid("pids_limit must not be negative"));
    }
    if !r.cpus.is_finite() || r.cpus < 0.0 {
        return Err(invalid("cpus must be a non-negative number"));
    }
    let mounts = r
        .mounts
        .iter()
        .map(|m| BindMount::parse(m))
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(|e| invalid(format!("{e:#}")))?;
    let memory = if r.memory.is_empty() {
        None
    } else {
        Some(runspec::parse_size(&r.memory).map_err(|e| invalid(format!("{e:#}")))?)
    };
    Ok(RunOptions {
        cmd: r.command.clone(),
        env: r.env.clone(),
        user: (!r.user.is_empty()).then(|| r.user.clone()),
        workdir: (!r.workdir.is_empty()).then(|| r.workdir.clone()),
        mounts,
        memory,
        cpus: (r.cpus > 0.0).then_some(r.cpus),
        pids_limit: (r.pids_limit > 0).then_some(r.pids_limit),
        tty: r.tty,
        network: Some(network),
    })
}

/// Finds a container by id, name or unique id prefix.
pub(crate) fn find(root: &Path, what: &str) -> Result<ContainerRecord, Status> {
    if what.is_empty() {
        return Err(invalid("empty container id"));
    }
    let all = records::list(root).map_err(|e| crate::to_status(&e))?;
    if let Some(r) = all
        .iter()
        .find(|r| r.id == what || r.name.as_deref() == Some(what))
    {
        return Ok(r.clone());
    }
    let matches: Vec<&ContainerRecord> = all.iter().filter(|r| r.id.starts_with(what)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Status::not_found(format!("no such container: {what}"))),
        _ => Err(invalid(format!(
            "container id prefix {what:?} is ambiguous"
        ))),
    }
}

/// A record with its live status from the runtime's state.
pub(crate) fn container(r: &ContainerRecord) -> Container {
    let (status, pid) = match berth::runtime::read_state(&r.runtime_root, &r.id) {
        Ok(st) => (st.status.as_str().to_owned(), st.pid.unwrap_or(0)),
        Err(e) if e.kind() == RtErrorKind::NotFound => ("unknown".to_owned(), 0),
        Err(e) => (format!("unknown ({e})"), 0),
    };
    Container {
        id: r.id.clone(),
        name: r.name.clone().unwrap_or_default(),
        image: r.image.clone(),
        command: r.command.clone(),
        status,
        pid,
        created: r.created,
    }
}

/// The container's log, opened for appending twice (stdout and stderr).
fn log_fds(root: &Path, id: &str) -> anyhow::Result<(Stdio, Stdio)> {
    let path = records::log_path(root, id);
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let second = file.try_clone()?;
    Ok((Stdio::Fd(file.into()), Stdio::Fd(second.into())))
}

/// Whether the bundle's spec gives the init a terminal.
pub(crate) fn has_terminal(bundle: &Path) -> bool {
    berth::runtime::load_spec(bundle)
        .ok()
        .and_then(|spec| spec.process().as_ref().and_then(|p| p.terminal()))
        .unwrap_or(false)
}

/// Whether the bundle's spec asks for a new network namespace (so loopback needs raising).
fn new_netns(bundle: &Path) -> bool {
    let Ok(spec) = berth::runtime::load_spec(bundle) else {
        return false;
    };
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
        .iter()
        .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network && n.path().is_none())
}

/// Creates and starts the init of a prepared container with its output going to its log
/// (blocking).
fn start(d: &Daemon, record: &ContainerRecord) -> anyhow::Result<i32> {
    if has_terminal(&records::container_dir(&d.root, &record.id)) {
        return Err(StatusError(Status::failed_precondition(format!(
            "container {} has a terminal: start it with StartAttached",
            record.id
        )))
        .into());
    }
    let (out, err) = log_fds(&d.root, &record.id)?;
    start_with(d, record, Stdio::Null, out, err, None, None)
}

/// Work between the runtime's create and start (e.g. receiving a terminal and sizing it).
pub(crate) type BeforeStart<'a> = Box<dyn FnOnce() -> anyhow::Result<()> + 'a>;

/// Creates and starts the init of a prepared container with the given stdio, or a terminal
/// whose master the runtime sends to `console_socket` (blocking):
/// registers it with the reaper (its exit code goes to `d.exits`), raises loopback in a new
/// network namespace, runs `before_start`, starts it and watches its memory cgroup for OOM
/// kills. Returns the init's pid.
pub(crate) fn start_with(
    d: &Daemon,
    record: &ContainerRecord,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
    console_socket: Option<std::path::PathBuf>,
    before_start: Option<BeforeStart<'_>>,
) -> anyhow::Result<i32> {
    let id = &record.id;
    let bundle = records::container_dir(&d.root, id);
    let rt = Runtime::new(&record.runtime_root)?;
    let opts = CreateOptions {
        stdin,
        stdout,
        stderr,
        console_socket,
        ..CreateOptions::default()
    };
    let pid = {
        let _fork = d
            .fork_lock
            .lock()
            .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
        let init = rt
            .create(id, &bundle, opts)
            .with_context(|| format!("creating container {id}"))?;
        let (tx, _) = watch::channel(None);
        if let Ok(mut exits) = d.exits.lock() {
            exits.insert(id.clone(), tx);
        }
        if let Ok(mut t) = d.tracked.lock() {
            t.insert(init.pid(), Tracked::Init(id.clone()));
        }
        init.pid()
    };
    let started = (|| {
        if new_netns(&bundle) {
            engine::loopback_up(pid)?;
        }
        if let Some(f) = before_start {
            f()?;
        }
        let _fork = d
            .fork_lock
            .lock()
            .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
        rt.start(id)
            .with_context(|| format!("starting container {id}"))
    })();
    if let Err(e) = started {
        let _fork = d.fork_lock.lock();
        let _ = rt.delete(id, true);
        return Err(e);
    }
    watch_oom(d, record);
    Ok(pid)
}

/// Starts an OOM watcher on the container's memory cgroup (best effort: reported on stderr).
fn watch_oom(d: &Daemon, record: &ContainerRecord) {
    let id = record.id.clone();
    let events = d.events.clone();
    let watcher = (|| -> anyhow::Result<berth::metrics::OomWatcher> {
        let st = berth::runtime::read_state(&record.runtime_root, &id)?;
        let paths = berth::metrics::Hierarchy::detect()?.paths_for(&st.cgroup_path)?;
        let object = id.clone();
        Ok(berth::metrics::OomWatcher::spawn(&paths, move |ev| {
            let _ = events.send(crate::proto::Event {
                time: crate::now_millis() / 1000,
                kind: "oom".to_owned(),
                object: object.clone(),
                detail: ev
                    .oom_kills
                    .map_or_else(String::new, |n| format!("oom_kills {n}")),
            });
        })?)
    })();
    match watcher {
        Ok(w) => {
            if let Ok(mut oom) = d.oom.lock() {
                oom.insert(id, w);
            }
        }
        Err(e) => eprintln!("berthd: OOM watch of {id}: {e:#}"),
    }
}

/// Reads a pipe to its end, keeping at most [`MAX_EXEC_OUTPUT`] bytes.
fn drain(fd: OwnedFd) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut f = std::fs::File::from(fd);
        let _ = (&mut f).take(MAX_EXEC_OUTPUT).read_to_end(&mut out);
        let _ = std::io::copy(&mut f, &mut std::io::sink());
        out
    })
}

/// Checks an exec request's command and environment.
pub(crate) fn check_exec(r: &ExecRequest) -> Result<(), Status> {
    if r.args.is_empty() {
        return Err(invalid("exec needs a command"));
    }
    if let Some(e) = r.env.iter().find(|e| !e.contains('=')) {
        return Err(invalid(format!("env {e:?}: expected K=V")));
    }
    Ok(())
}

/// The process an exec request runs in `record`: the init's, with the request's command,
/// environment, user (resolved in the container's rootfs), working directory and terminal.
pub(crate) fn exec_process(
    d: &Daemon,
    record: &ContainerRecord,
    r: &ExecRequest,
) -> anyhow::Result<oci_spec::runtime::Process> {
    let base = Runtime::new(&record.runtime_root)?
        .spec(&record.id)?
        .process()
        .clone()
        .context("the container's spec has no process")?;
    let rootfs = records::container_dir(&d.root, &record.id).join("rootfs");
    let user = (!r.user.is_empty())
        .then(|| runspec::resolve_user(&rootfs, &r.user))
        .transpose()?;
    let workdir = (!r.workdir.is_empty()).then_some(r.workdir.as_str());
    runspec::exec_process(&base, &r.args, &r.env, r.tty, user.as_ref(), workdir)
}

/// An exec'd process the reaper watches.
#[derive(Debug)]
pub(crate) struct Spawned {
    /// Its exit code (128 + signal when killed), sent when it is reaped.
    pub exit: tokio::sync::oneshot::Receiver<i32>,
    /// A pidfd of it, to signal it without any risk of a recycled pid (`None` before 5.3).
    pub pidfd: Option<OwnedFd>,
}

/// Runs `process` in the container (blocking). The runtime's exec and the registration with
/// the reaper happen under the fork lock, as does opening the pidfd, so the pid is still ours.
pub(crate) fn spawn_exec(
    d: &Daemon,
    record: &ContainerRecord,
    process: &oci_spec::runtime::Process,
    opts: ExecOptions,
) -> anyhow::Result<Spawned> {
    let rt = Runtime::new(&record.runtime_root)?;
    let (tx, exit) = tokio::sync::oneshot::channel();
    let _fork = d
        .fork_lock
        .lock()
        .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
    let proc = rt
        .exec(&record.id, process, opts)
        .with_context(|| format!("exec in container {}", record.id))?;
    // SAFETY: pidfd_open with plain integers; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, proc.pid(), 0) };
    // SAFETY: a non-negative result is a new pidfd that nothing else owns.
    let pidfd =
        (fd >= 0).then(|| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) });
    if let Ok(mut t) = d.tracked.lock() {
        t.insert(proc.pid(), Tracked::Exec(tx));
    }
    Ok(Spawned { exit, pidfd })
}

#[tonic::async_trait]
impl Containers for ContainersService {
    type StartAttachedStream = crate::attach::AttachStream;
    type LogsStream = crate::logs::LogStream;
    type ExecAttachedStream = crate::attach::AttachStream;

    async fn start_attached(
        &self,
        req: Request<tonic::Streaming<AttachRequest>>,
    ) -> Result<Response<Self::StartAttachedStream>, Status> {
        crate::attach::start_attached(self.0.clone(), req).await
    }

    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        crate::logs::logs(self.0.clone(), req).await
    }

    async fn metrics(
        &self,
        req: Request<MetricsRequest>,
    ) -> Result<Response<MetricsResponse>, Status> {
        crate::attach::metrics(self.0.clone(), req).await
    }

    async fn create(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<Container>, Status> {
        let who = caller(&req);
        let r = req.into_inner();
        let d = self.0.clone();
        let image = r.image.clone();
        let result = async {
            let options = run_options(&r)?;
            if r.image.is_empty() {
                return Err(invalid("empty image reference"));
            }
            let snapshotter = match r.snapshotter.as_str() {
                "" => "overlay".to_owned(),
                "overlay" | "native" => r.snapshotter.clone(),
                other => return Err(invalid(format!("unknown snapshotter {other:?}"))),
            };
            let _serial = d.lifecycle.lock().await;
            let dd = d.clone();
            blocking(move || {
                let prepared = engine::prepare_quiet(&PrepareRequest {
                    root: &dd.root,
                    runtime_root: &dd.runtime_root,
                    image: &r.image,
                    snapshotter: &snapshotter,
                    name: (!r.name.is_empty()).then_some(r.name.as_str()),
                    options: &options,
                    detached: true,
                    ephemeral: false,
                    sn: None,
                })?;
                Ok(container(&prepared.record))
            })
            .await
        }
        .await;
        let object = result.as_ref().map_or(image, |c| c.id.clone());
        if result.is_ok() {
            d.event("container-create", &object, String::new());
        }
        d.audited(who, "containers.create", &object, result)
            .map(Response::new)
    }

    async fn start(&self, req: Request<ContainerRequest>) -> Result<Response<Container>, Status> {
        let who = caller(&req);
        let what = req.into_inner().id;
        let d = self.0.clone();
        let result = async {
            let record = find(&d.root, &what)?;
            let _serial = d.lifecycle.lock().await;
            let dd = d.clone();
            blocking(move || {
                let pid = start(&dd, &record)?;
                dd.event("container-start", &record.id, format!("pid {pid}"));
                Ok(container(&record))
            })
            .await
        }
        .await;
        let object = result.as_ref().map_or(what, |c| c.id.clone());
        d.audited(who, "containers.start", &object, result)
            .map(Response::new)
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<KillResponse>, Status> {
        let who = caller(&req);
        let r = req.into_inner();
        let d = self.0.clone();
        let what = r.id.clone();
        let result = async {
            let signal = if r.signal == 0 {
                libc::SIGKILL
            } else {
                r.signal
            };
            if signal < 1 || signal > libc::SIGRTMAX() {
                return Err(invalid(format!("invalid signal {signal}")));
            }
            let record = find(&d.root, &r.id)?;
            let dd = d.clone();
            blocking(move || {
                Runtime::new(&record.runtime_root)?.kill(&record.id, signal, r.all)?;
                dd.event("container-kill", &record.id, format!("signal {signal}"));
                Ok(record.id)
            })
            .await
        }
        .await;
        let object = result.as_ref().map_or(what, String::clone);
        d.audited(who, "containers.kill", &object, result)
            .map(|_| Response::new(KillResponse {}))
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let who = caller(&req);
        let r = req.into_inner();
        let d = self.0.clone();
        let what = r.id.clone();
        let result = async {
            let record = find(&d.root, &r.id)?;
            let _serial = d.lifecycle.lock().await;
            let dd = d.clone();
            blocking(move || {
                {
                    let _fork = dd
                        .fork_lock
                        .lock()
                        .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
                    engine::remove(&dd.root, &record, r.force)?;
                }
                if let Ok(mut oom) = dd.oom.lock() {
                    oom.remove(&record.id);
                }
                if let Ok(mut exits) = dd.exits.lock() {
                    exits.remove(&record.id);
                }
                if let Ok(mut open) = dd.attached_output.lock() {
                    open.remove(&record.id);
                }
                dd.event("container-delete", &record.id, String::new());
                Ok(record.id)
            })
            .await
        }
        .await;
        let object = result.as_ref().map_or(what, String::clone);
        d.audited(who, "containers.delete", &object, result)
            .map(|_| Response::new(DeleteResponse {}))
    }

    async fn exec(&self, req: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let who = caller(&req);
        let r = req.into_inner();
        let d = self.0.clone();
        let what = r.id.clone();
        let result = async {
            check_exec(&r)?;
            if r.tty {
                return Err(invalid("a terminal needs ExecAttached"));
            }
            let record = find(&d.root, &r.id)?;
            let dd = d.clone();
            let id = record.id.clone();
            let (out, err, rx) = blocking(move || {
                let process = exec_process(&dd, &record, &r)?;
                let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                let opts = ExecOptions {
                    stdin: Stdio::Null,
                    stdout: Stdio::Fd(out_w),
                    stderr: Stdio::Fd(err_w),
                    ..ExecOptions::default()
                };
                let spawned = spawn_exec(&dd, &record, &process, opts)?;
                Ok((drain(out_r), drain(err_r), spawned.exit))
            })
            .await?;
            let code = rx
                .await
                .map_err(|_| Status::internal("the exec'd process was not reaped"))?;
            let join = |h: std::thread::JoinHandle<Vec<u8>>| h.join().unwrap_or_default();
            let (stdout, stderr) = tokio::task::spawn_blocking(move || (join(out), join(err)))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            d.event("exec", &id, format!("exit code {code}"));
            Ok((
                id,
                ExecResponse {
                    exit_code: code,
                    stdout,
                    stderr,
                },
            ))
        }
        .await;
        let object = result.as_ref().map_or(what, |(id, _)| id.clone());
        d.audited(who, "containers.exec", &object, result)
            .map(|(_, r)| Response::new(r))
    }

    async fn exec_attached(
        &self,
        req: Request<tonic::Streaming<AttachRequest>>,
    ) -> Result<Response<Self::ExecAttachedStream>, Status> {
        crate::attach::exec_attached(self.0.clone(), req).await
    }

    async fn wait(&self, req: Request<ContainerRequest>) -> Result<Response<WaitResponse>, Status> {
        let record = find(&self.0.root, &req.into_inner().id)?;
        let rx = self
            .0
            .exits
            .lock()
            .ok()
            .and_then(|e| e.get(&record.id).map(watch::Sender::subscribe));
        if let Some(mut rx) = rx {
            let code = rx
                .wait_for(Option::is_some)
                .await
                .map_err(|_| Status::aborted("the container was deleted while waited for"))?;
            return Ok(Response::new(WaitResponse {
                exit_code: code.unwrap_or(-1),
            }));
        }
        // Not our child (created before a restart): poll the runtime's state.
        loop {
            match berth::runtime::read_state(&record.runtime_root, &record.id) {
                Ok(st) if st.status == berth::runtime::Status::Stopped => break,
                Ok(_) => {}
                Err(e) if e.kind() == RtErrorKind::NotFound => break,
                Err(e) => return Err(crate::to_status(&anyhow::Error::from(e))),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(Response::new(WaitResponse { exit_code: -1 }))
    }

    async fn list(
        &self,
        _req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let root = self.0.root.clone();
        let containers =
            blocking(move || Ok(records::list(&root)?.iter().map(container).collect())).await?;
        Ok(Response::new(ListContainersResponse { containers }))
    }

    async fn get(&self, req: Request<ContainerRequest>) -> Result<Response<Container>, Status> {
        let root = self.0.root.clone();
        let what = req.into_inner().id;
        let c = blocking(move || {
            let r = find(&root, &what).map_err(StatusError)?;
            Ok(container(&r))
        })
        .await?;
        Ok(Response::new(c))
    }
}

/// A [`Status`] carried through `anyhow` (so [`crate::to_status`] can return it as is).
#[derive(Debug)]
pub struct StatusError(pub Status);

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.message())
    }
}

impl std::error::Error for StatusError {}
