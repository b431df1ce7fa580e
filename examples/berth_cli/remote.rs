//! `berth --address SOCKET …`: the commands sent to a `berthd` over its gRPC API instead of
//! working on a store in this process.
//!
//! Supported remotely: `image import|ls|rm`; `image pull|push` and `commit` (see
//! [`crate::remote_image`]: progress streamed and drawn here, the daemon's registry settings
//! and credentials unless ours are sent); `snapshot ls|info|rm`; `run` (create + start):
//! with `-d` the output goes to the container's log on the daemon's host; without it the
//! start is attached (`StartAttached`): the container's stdout and stderr are streamed back
//! and written here, `-i` streams our stdin in, SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2
//! are forwarded to the container's init, our exit status is the container's, and `--rm`
//! deletes it afterwards; `-t` gives the container a terminal on the daemon's side whose output
//! comes back here (with `-i` our terminal goes raw and our keys go in; window sizes follow).
//! `exec` goes the same way (`ExecAttached`, the same client code): output streamed, `-i`, `-t`
//! with resizes, signals forwarded to the exec'd process, its exit status ours. `ps`, `kill`,
//! `rm`, `logs` (`-f` follows the log until the container's init has exited and its output is
//! all here; Ctrl-C ends it cleanly) and `metrics` (by container id, name or prefix;
//! `--cgroup` is local only). `login` and `logout` stay the client's own (they manage the
//! credentials sent with pulls and pushes). Not remote: `image tag|export|unpack` and the
//! other command groups; they fail with a clear error naming them. Paths given to
//! `image import` are made absolute here, since the daemon resolves them.

#[allow(
    missing_docs,
    missing_debug_implementations,
    unused_qualifications,
    dead_code,
    clippy::all,
    clippy::pedantic
)]
#[rustfmt::skip]
#[path = "../berthd/proto_gen.rs"]
pub mod proto;

use std::path::Path;

use anyhow::{Context, Result, bail};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::container::{self, ContainerCommand};
use crate::foreground::ExitWith;
use crate::image::ImageCommand;
use crate::metrics::{MetricsArgs, MetricsCommand};
use crate::run::RunArgs;
use crate::snapshot::{SnapshotArgs, SnapshotCommand};
use crate::{Group, ImageGroup};
use proto::containers_client::ContainersClient;
use proto::images_client::ImagesClient;
use proto::snapshots_client::SnapshotsClient;

/// Connects to the daemon's unix socket.
pub async fn connect(socket: &Path) -> Result<Channel> {
    let path = socket.to_path_buf();
    // The URI is required by the API but unused: every connection goes to the socket.
    Endpoint::try_from("http://berthd.invalid")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .with_context(|| format!("connecting to berthd at {}", socket.display()))
}

fn unsupported(what: &str) -> Result<()> {
    bail!(
        "`berth {what}` is not supported with --address (run it without --address on the daemon's host)"
    )
}

/// A gRPC status as an error with its code.
pub(crate) fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", e.code(), e.message())
}

/// Runs `group` against the daemon at `socket`.
pub fn run(socket: &Path, group: &Group) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    rt.block_on(dispatch(socket, group))
}

async fn dispatch(socket: &Path, group: &Group) -> Result<()> {
    match group {
        Group::Image(ImageGroup::Base(cmd)) => image(socket, cmd).await,
        Group::Image(ImageGroup::Pull(args)) => crate::remote_image::pull(socket, args).await,
        Group::Image(ImageGroup::Push(args)) => crate::remote_image::push(socket, args).await,
        Group::Snapshot(args) => snapshot(socket, args).await,
        Group::Container(cmd) => containers(socket, cmd).await,
        Group::Metrics(MetricsCommand::Metrics(args)) => metrics(socket, args).await,
        other => {
            // The variant's name, e.g. `Content(…)` → `content`.
            let debug = format!("{other:?}");
            let name = debug
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or("")
                .to_lowercase();
            let name = match other {
                Group::Image(_) => "image (only import, ls, rm, pull and push)".to_owned(),
                _ => name,
            };
            unsupported(&name)
        }
    }
}

async fn image(socket: &Path, cmd: &ImageCommand) -> Result<()> {
    let mut c = ImagesClient::new(connect(socket).await?);
    match cmd {
        ImageCommand::Import { path, name, .. } => {
            let abs = std::path::absolute(path)
                .with_context(|| format!("resolving {}", path.display()))?;
            let r = c
                .import(proto::ImportImageRequest {
                    path: abs.to_string_lossy().into_owned(),
                    name: name.clone().unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            for i in r.images {
                println!("imported {} {}", i.name, i.digest);
            }
            Ok(())
        }
        ImageCommand::Ls => {
            let r = c
                .list(proto::ListImagesRequest {})
                .await
                .map_err(status)?
                .into_inner();
            println!("{:<50}  {:<71}  {:>10}", "NAME", "DIGEST", "SIZE");
            for i in r.images {
                println!("{:<50}  {:<71}  {:>10}", i.name, i.digest, i.size);
            }
            Ok(())
        }
        ImageCommand::Rm { names } => {
            for name in names {
                let r = c
                    .remove(proto::RemoveImageRequest { name: name.clone() })
                    .await
                    .map_err(status)?
                    .into_inner();
                println!("untagged {name} (gc removed {} blobs)", r.removed_blobs);
            }
            Ok(())
        }
        _ => unsupported("image (only import, ls, rm, pull and push)"),
    }
}

async fn snapshot(socket: &Path, args: &SnapshotArgs) -> Result<()> {
    let mut c = SnapshotsClient::new(connect(socket).await?);
    let snapshotter = args.snapshotter.clone();
    match &args.command {
        SnapshotCommand::Ls => {
            let r = c
                .list(proto::ListSnapshotsRequest { snapshotter })
                .await
                .map_err(status)?
                .into_inner();
            println!("{:<72}  {:<9}  PARENT", "KEY", "KIND");
            for s in r.snapshots {
                println!("{:<72}  {:<9}  {}", s.name, s.kind, s.parent);
            }
            Ok(())
        }
        SnapshotCommand::Info { key } => {
            let s = c
                .stat(proto::StatSnapshotRequest {
                    snapshotter,
                    key: key.clone(),
                })
                .await
                .map_err(status)?
                .into_inner();
            let v = serde_json::json!({
                "name": s.name, "kind": s.kind, "parent": s.parent,
                "labels": s.labels, "created": s.created, "updated": s.updated,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        SnapshotCommand::Rm { keys } => {
            for key in keys {
                c.remove(proto::RemoveSnapshotRequest {
                    snapshotter: snapshotter.clone(),
                    key: key.clone(),
                })
                .await
                .map_err(status)?;
                println!("removed {key}");
            }
            Ok(())
        }
        _ => unsupported("snapshot (only ls, info and rm)"),
    }
}

async fn containers(socket: &Path, cmd: &ContainerCommand) -> Result<()> {
    let mut c = ContainersClient::new(connect(socket).await?);
    match cmd {
        ContainerCommand::Run(args) => run_container(&mut c, args).await,
        ContainerCommand::Ps { quiet } => {
            let r = c
                .list(proto::ListContainersRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if !quiet {
                println!(
                    "{:<12}  {:<40}  {:<24}  {:<10}  NAME",
                    "CONTAINER ID", "IMAGE", "COMMAND", "STATUS"
                );
            }
            for x in r.containers {
                if *quiet {
                    println!("{}", x.id);
                    continue;
                }
                let mut command = x.command.join(" ");
                if command.chars().count() > 22 {
                    command = format!("{}…", command.chars().take(21).collect::<String>());
                }
                println!(
                    "{:<12}  {:<40}  {:<24}  {:<10}  {}",
                    &x.id[..x.id.len().min(12)],
                    x.image,
                    format!("{command:?}"),
                    x.status,
                    x.name
                );
            }
            Ok(())
        }
        ContainerCommand::Exec {
            tty,
            interactive,
            env,
            user,
            workdir,
            container,
            command,
        } => {
            let first = proto::AttachRequest {
                exec: Some(proto::ExecRequest {
                    id: container.clone(),
                    args: command.clone(),
                    env: env.clone(),
                    user: user.clone().unwrap_or_default(),
                    workdir: workdir.clone().unwrap_or_default(),
                    tty: *tty,
                }),
                ..Default::default()
            };
            match attached(&mut c, Call::Exec, first, *interactive, *tty).await? {
                0 => Ok(()),
                n => Err(ExitWith(u8::try_from(n).unwrap_or(255)).into()),
            }
        }
        ContainerCommand::Kill { container, signal } => {
            let signal = signal
                .as_deref()
                .map(container::parse_signal)
                .transpose()?
                .unwrap_or(libc::SIGKILL);
            c.kill(proto::KillRequest {
                id: container.clone(),
                signal,
                all: false,
            })
            .await
            .map_err(status)?;
            Ok(())
        }
        ContainerCommand::Rm { force, containers } => {
            for id in containers {
                c.delete(proto::DeleteRequest {
                    id: id.clone(),
                    force: *force,
                })
                .await
                .map_err(status)?;
                println!("{id}");
            }
            Ok(())
        }
        ContainerCommand::Logs { follow, container } => logs(&mut c, container, *follow).await,
        ContainerCommand::Commit {
            container,
            reference,
            compression,
            message,
            author,
            pause,
            changes,
        } => {
            let req = proto::CommitImageRequest {
                container: container.clone(),
                reference: reference.clone(),
                compression: compression.clone(),
                message: message.clone().unwrap_or_default(),
                author: author.clone().unwrap_or_default(),
                no_pause: !pause,
                changes: changes.clone(),
            };
            crate::remote_image::commit(socket, req).await
        }
        #[allow(unreachable_patterns)]
        _ => unsupported("this container command"),
    }
}

/// The create request of `berth run`'s arguments.
fn create_request(args: &RunArgs) -> proto::CreateContainerRequest {
    proto::CreateContainerRequest {
        image: args.image.clone(),
        name: args.name.clone().unwrap_or_default(),
        command: args.command.clone(),
        env: args.env.clone(),
        mounts: args.mounts.clone(),
        memory: args.memory.clone().unwrap_or_default(),
        cpus: args.cpus.unwrap_or(0.0),
        pids_limit: args.pids_limit.unwrap_or(0),
        user: args.user.clone().unwrap_or_default(),
        workdir: args.workdir.clone().unwrap_or_default(),
        network: args.network.clone(),
        snapshotter: args.snapshotter.clone(),
        tty: args.tty,
    }
}

/// `berth run` through the daemon: create, then start detached (`-d`) or attached.
async fn run_container(c: &mut ContainersClient<Channel>, args: &RunArgs) -> Result<()> {
    if args.detach && (args.interactive || args.rm || args.tty) {
        bail!(
            "-d takes no -i, -t or --rm (a detached container's output goes to its log; remove it with `berth rm`)"
        );
    }
    let created = c
        .create(create_request(args))
        .await
        .map_err(status)?
        .into_inner();
    let id = created.id;
    if args.detach {
        let started = c.start(proto::ContainerRequest { id: id.clone() }).await;
        if let Err(e) = started {
            let _ = c
                .delete(proto::DeleteRequest {
                    id: id.clone(),
                    force: true,
                })
                .await;
            return Err(status(e));
        }
        println!("{id}");
        return Ok(());
    }
    let first = proto::AttachRequest {
        id: id.clone(),
        ..Default::default()
    };
    let result = attached(c, Call::Start, first, args.interactive, args.tty).await;
    // A failed start leaves a container that never ran: remove it whatever --rm says.
    if args.rm || matches!(result, Err(ref e) if e.downcast_ref::<NotStarted>().is_some()) {
        c.delete(proto::DeleteRequest {
            id: id.clone(),
            force: true,
        })
        .await
        .map_err(status)
        .with_context(|| format!("removing container {id}"))?;
    }
    match result? {
        0 => Ok(()),
        n => Err(ExitWith(u8::try_from(n).unwrap_or(255)).into()),
    }
}

/// The attached start was refused: the container never ran.
#[derive(Debug)]
struct NotStarted(tonic::Status);

impl std::fmt::Display for NotStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.0.code(), self.0.message())
    }
}

impl std::error::Error for NotStarted {}

/// Signals forwarded to the container's init while attached.
const FORWARDED: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The attached calls: a container's start, or an exec in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Start,
    Exec,
}

/// Runs `call` attached, `first` being its first request (the container for a start, the
/// process for an exec; stdin and the terminal size are filled in here): our stdin goes in
/// with `interactive`, its output comes out here, our signals are forwarded, and with `tty`
/// our terminal's size follows. Returns the exit code (-1 when the daemon does not know it,
/// e.g. a container's after a daemon restart).
async fn attached(
    c: &mut ContainersClient<Channel>,
    call: Call,
    first: proto::AttachRequest,
    interactive: bool,
    tty: bool,
) -> Result<i32> {
    use std::io::Write;
    use tokio::signal::unix::{SignalKind, signal};

    let (tx, rx) = tokio::sync::mpsc::channel::<proto::AttachRequest>(16);
    let (rows, cols) = if tty { terminal_size() } else { (0, 0) };
    tx.send(proto::AttachRequest {
        open_stdin: interactive,
        rows,
        cols,
        ..first
    })
    .await
    .context("queueing the attach request")?;
    // With -t -i on a terminal, ours goes raw (keys pass through, ^C included) until we return.
    let _raw = (tty && interactive).then(RawMode::enter).flatten();
    if tty {
        let mut winch = signal(SignalKind::window_change())?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while winch.recv().await.is_some() {
                let (rows, cols) = terminal_size();
                let msg = proto::AttachRequest {
                    rows,
                    cols,
                    ..Default::default()
                };
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
        });
    }
    // Signal handlers before the start, so none is lost to the default action.
    let mut signals = Vec::new();
    for sig in FORWARDED {
        signals.push((sig, signal(SignalKind::from_raw(sig))?));
    }
    let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut responses = match call {
        Call::Start => c.start_attached(requests).await,
        Call::Exec => c.exec_attached(requests).await,
    }
    .map_err(|e| anyhow::Error::new(NotStarted(e)))?
    .into_inner();
    if interactive {
        let tx = tx.clone();
        // A plain thread: a blocking read of our stdin must not hold up the runtime's exit.
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; 32 << 10];
            loop {
                let n = match std::io::Read::read(&mut stdin, &mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => 0,
                };
                let msg = proto::AttachRequest {
                    stdin: buf[..n].to_vec(),
                    close_stdin: n == 0,
                    ..Default::default()
                };
                if tx.blocking_send(msg).is_err() || n == 0 {
                    break;
                }
            }
        });
    }
    for (sig, mut stream) in signals {
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                let msg = proto::AttachRequest {
                    signal: sig,
                    ..Default::default()
                };
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut code = None;
    while let Some(m) = responses.message().await.map_err(status)? {
        match m.event {
            Some(proto::attach_response::Event::Stdout(b)) => {
                let mut out = std::io::stdout().lock();
                out.write_all(&b)?;
                out.flush()?;
            }
            Some(proto::attach_response::Event::Stderr(b)) => {
                let mut err = std::io::stderr().lock();
                err.write_all(&b)?;
                err.flush()?;
            }
            Some(proto::attach_response::Event::ExitCode(n)) => code = Some(n),
            None => {}
        }
    }
    code.context("the daemon ended the attached stream without an exit code")
}

/// `berth logs [-f]` through the daemon. A follow ends with the stream (the container's init
/// exited and its output is all here) or cleanly on SIGINT, SIGTERM or SIGHUP.
async fn logs(c: &mut ContainersClient<Channel>, container: &str, follow: bool) -> Result<()> {
    use std::io::Write;
    use tokio::signal::unix::{SignalKind, signal};
    let mut stop = Vec::new();
    for kind in [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ] {
        stop.push(signal(kind)?);
    }
    let stopped = async {
        let [a, b, h] = stop.as_mut_slice() else {
            return;
        };
        tokio::select! {
            _ = a.recv() => {}
            _ = b.recv() => {}
            _ = h.recv() => {}
        }
    };
    let copy = async {
        let mut stream = c
            .logs(proto::LogsRequest {
                id: container.to_owned(),
                follow,
            })
            .await
            .map_err(status)?
            .into_inner();
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = stream.message().await.map_err(status)? {
            match out.write_all(&chunk.data).and_then(|()| out.flush()) {
                // A reader that went away (`| head`) ends the follow, as it ends `tail -f`.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                other => other?,
            }
        }
        Ok(())
    };
    tokio::select! {
        r = copy => r,
        () = stopped => Ok(()),
    }
}

/// The size of the terminal on our stdin ((0, 0) when it is not one).
fn terminal_size() -> (u32, u32) {
    // SAFETY: TIOCGWINSZ with a valid winsize on fd 0; the result is checked.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            (u32::from(ws.ws_row), u32::from(ws.ws_col))
        } else {
            (0, 0)
        }
    }
}

/// Our terminal in raw mode; the saved settings come back on drop.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    /// Raw mode on our stdin, if it is a terminal.
    fn enter() -> Option<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

/// `berth metrics` through the daemon.
async fn metrics(socket: &Path, args: &MetricsArgs) -> Result<()> {
    if !args.cgroups.is_empty() {
        bail!("with --address, `berth metrics` takes container ids, not --cgroup");
    }
    let mut c = ContainersClient::new(connect(socket).await?);
    let r = c
        .metrics(proto::MetricsRequest {
            ids: args.ids.clone(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let stats = r
        .containers
        .iter()
        .map(|m| {
            serde_json::from_str::<berth::metrics::ContainerStats>(&m.stats_json)
                .with_context(|| format!("the statistics of {}", m.id))
        })
        .collect::<Result<Vec<_>>>()?;
    crate::metrics::print(args, &stats)
}
