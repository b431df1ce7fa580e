//! `berth run`: an image to a running container, through [`crate::engine`] (unpack, snapshot,
//! mount, spec, record) and the runtime crate (create, start, wait).
//!
//! Foreground (the default): the container's stdio is ours (`-i` keeps stdin, else it reads
//! `/dev/null`), signals are forwarded, and `berth` exits with the container's status (128 +
//! signal when it was killed). `-t` gives it a pty proxied to our terminal. `-d` prints the
//! id and leaves it running with stdout/stderr appended to `<root>/containers/<id>/log`.
//! `--rm` removes the container, its runtime state, mount and snapshot when it exits (also
//! when create or start fail).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use berth::image::progress::{Progress, ProgressEvent};
use berth::runtime::{CreateOptions, Runtime, Stdio};
use berth::snapshot::Snapshotter;
use clap::Args;

use crate::engine::records::{self, ContainerRecord};
use crate::engine::runspec::{BindMount, Network, RunOptions, parse_size};
use crate::engine::{self, PrepareRequest};
use crate::foreground::{self, ConsoleSocket};
use crate::progress::Bars;

/// The default runtime state root (shared with `berth-runc` and `berth metrics`).
pub const DEFAULT_RUNTIME_ROOT: &str = berth::runtime::state::DEFAULT_ROOT;

/// Arguments of `berth run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run in the background; print the id; output goes to the container's log.
    #[arg(short, long)]
    pub detach: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Keep stdin open.
    #[arg(short, long)]
    pub interactive: bool,
    /// A unique name.
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variable K=V (or K, copied from ours); repeatable.
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Bind mount SRC:DST[:ro]; repeatable.
    #[arg(long = "mount", value_name = "SRC:DST[:ro]")]
    pub mounts: Vec<String>,
    /// Memory limit (e.g. 256m).
    #[arg(short, long)]
    pub memory: Option<String>,
    /// CPU quota in CPUs (e.g. 0.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Most processes in the container.
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// User (name or uid, optionally :group or :gid), resolved in the image.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// host, or none (a new network namespace with only loopback).
    #[arg(long, default_value = "none")]
    pub network: String,
    /// The snapshotter: overlay or native.
    #[arg(long, default_value = "overlay")]
    pub snapshotter: String,
    /// The runtime's state root.
    #[arg(long, default_value = DEFAULT_RUNTIME_ROOT)]
    pub runtime_root: PathBuf,
    /// The image.
    pub image: String,
    /// The command (default: the image's Entrypoint and Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// The [`RunOptions`] of the arguments.
pub fn run_options(args: &RunArgs) -> Result<RunOptions> {
    let network = match args.network.as_str() {
        "host" => Network::Host,
        "none" => Network::None,
        other => bail!("--network {other:?}: host or none"),
    };
    if args.pids_limit.is_some_and(|p| p < 1) {
        bail!("--pids-limit must be at least 1");
    }
    Ok(RunOptions {
        cmd: args.command.clone(),
        env: args.env.clone(),
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        mounts: args
            .mounts
            .iter()
            .map(|m| BindMount::parse(m))
            .collect::<Result<_>>()?,
        memory: args.memory.as_deref().map(parse_size).transpose()?,
        cpus: args.cpus,
        pids_limit: args.pids_limit,
        tty: args.tty,
        network: Some(network),
    })
}

/// Opens the container's log for appending (two fds: stdout and stderr).
fn log_fds(root: &Path, id: &str) -> Result<(Stdio, Stdio)> {
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

/// Progress of the unpack `run` may do: bars and summaries only for layers actually applied
/// (an unpacked image reports its layers as done without any transfer).
struct AppliedOnly {
    bars: Bars,
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Progress for AppliedOnly {
    fn on_progress(&self, e: &ProgressEvent<'_>) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        if !e.finished {
            seen.insert(e.item.to_owned());
        } else if !seen.remove(e.item) {
            return;
        }
        drop(seen);
        self.bars.on_progress(e);
    }
}

/// Removes the container on drop when armed (`--rm`, or a failed create/start).
struct RemoveOnDrop<'a> {
    root: &'a Path,
    record: Option<ContainerRecord>,
    sn: &'a dyn Snapshotter,
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.record.take()
            && let Err(e) = engine::remove_with(self.root, &r, true, Some(self.sn))
        {
            eprintln!("berth: removing container {}: {e:#}", r.id);
        }
    }
}

/// Runs `berth run`.
pub fn run(root: &Path, args: &RunArgs) -> Result<()> {
    if args.detach && args.tty {
        bail!("-d with -t is not supported: a detached container's output goes to its log");
    }
    if args.detach && args.rm {
        bail!("--rm with -d is not supported: remove a detached container with `berth rm`");
    }
    let options = run_options(args)?;
    let bars = AppliedOnly {
        bars: Bars::new(args.detach || !std::io::IsTerminal::is_terminal(&std::io::stderr())),
        seen: Default::default(),
    };
    // One handle on each database for the whole run, so removing the container (--rm) opens
    // neither again (each open and close of a database costs syncs).
    let _store = engine::open_store(root)?;
    let sn = engine::open_snapshotter(root, &args.snapshotter)?;
    let prepared = engine::prepare(
        &PrepareRequest {
            root,
            runtime_root: &args.runtime_root,
            image: &args.image,
            snapshotter: &args.snapshotter,
            name: args.name.as_deref(),
            options: &options,
            detached: args.detach,
            ephemeral: args.rm,
            sn: Some(sn.as_ref()),
        },
        &bars,
    )?;
    let id = prepared.record.id.clone();
    // Until started, any failure removes the container.
    let mut cleanup = RemoveOnDrop {
        root,
        record: Some(prepared.record.clone()),
        sn: sn.as_ref(),
    };
    let rt = Runtime::new(&args.runtime_root)
        .with_context(|| format!("runtime root {}", args.runtime_root.display()))?;
    let mut create = CreateOptions::default();
    let console = if args.tty {
        let socket = ConsoleSocket::new(&id)?;
        create.console_socket = Some(socket.path().to_path_buf());
        Some(socket)
    } else {
        None
    };
    if args.detach {
        let (out, err) = log_fds(root, &id)?;
        create.stdin = Stdio::Null;
        create.stdout = out;
        create.stderr = err;
    } else if !args.interactive {
        create.stdin = Stdio::Null;
    }
    let init = rt
        .create(&id, &prepared.bundle, create)
        .with_context(|| format!("creating container {id}"))?;
    let master = match &console {
        Some(socket) => match socket.receive() {
            Ok(m) => Some(m),
            Err(e) => {
                let _ = rt.delete(&id, true);
                let _ = init.wait();
                return Err(e);
            }
        },
        None => None,
    };
    if options.network == Some(Network::None)
        && let Err(e) = engine::loopback_up(init.pid())
    {
        let _ = rt.delete(&id, true);
        let _ = init.wait();
        return Err(e);
    }
    if !args.detach {
        // Before start: a signal that arrives once the program runs must reach it.
        foreground::forward_signals_to(init.pid());
    }
    if let Err(e) = rt.start(&id) {
        let _ = rt.delete(&id, true);
        let _ = init.wait();
        return Err(e).with_context(|| format!("starting container {id}"));
    }
    if args.detach {
        cleanup.record = None;
        println!("{id}");
        return Ok(());
    }
    if !args.rm {
        cleanup.record = None;
    }
    let status = foreground::wait(&init, master, args.interactive)?;
    drop(console);
    drop(cleanup);
    foreground::exit_result(status)
}
