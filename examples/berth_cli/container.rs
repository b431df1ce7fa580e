//! Container commands: `run` (see [`crate::run`]), `ps`, `exec`, `kill`, `rm`, `logs [-f]`
//! and `commit`. Containers are found by id, unique id prefix or name in the records of
//! [`crate::engine::records`]; their live status comes from the runtime's state.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use berth::runtime::{ErrorKind as RtErrorKind, ExecOptions, Runtime, Stdio};
use clap::Subcommand;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::engine::records::{self, ContainerRecord};
use crate::engine::{self, runspec};
use crate::follow;
use crate::foreground::{self, ConsoleSocket};
use crate::run::{self, RunArgs};

/// The container commands (flattened into `berth`'s top level).
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Create and start a container from an image.
    Run(Box<RunArgs>),
    /// List containers.
    Ps {
        /// Only the ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Run a command in a running container.
    Exec {
        /// Allocate a pseudo-terminal.
        #[arg(short, long)]
        tty: bool,
        /// Keep stdin open.
        #[arg(short, long)]
        interactive: bool,
        /// Environment variable K=V; repeatable.
        #[arg(short, long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// User (name or uid, optionally :group), resolved in the container.
        #[arg(short, long)]
        user: Option<String>,
        /// Working directory.
        #[arg(short, long)]
        workdir: Option<String>,
        /// The container.
        container: String,
        /// The command.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Send a signal to a container's init (default KILL).
    Kill {
        /// The container.
        container: String,
        /// Signal name or number.
        signal: Option<String>,
    },
    /// Remove containers (their state, cgroup, mount and snapshot).
    Rm {
        /// Kill them first if they run.
        #[arg(short, long)]
        force: bool,
        /// The containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Print the output of a detached container.
    Logs {
        /// Keep printing new output until the container exits (or Ctrl-C).
        #[arg(short, long)]
        follow: bool,
        /// The container.
        container: String,
    },
    /// Make an image from a container's changes.
    Commit {
        /// The container.
        container: String,
        /// The new image's reference.
        reference: String,
        /// Layer compression: gzip, zstd or none.
        #[arg(long, default_value = "gzip")]
        compression: String,
        /// A comment for the new layer's history entry.
        #[arg(short, long)]
        message: Option<String>,
        /// The author of the image (e.g. "Name <email>").
        #[arg(short, long)]
        author: Option<String>,
        /// Freeze a running container while its changes are read (`--pause=false` not to).
        #[arg(
            short,
            long,
            default_value_t = true,
            num_args = 0..=1,
            require_equals = true,
            default_missing_value = "true",
            action = clap::ArgAction::Set
        )]
        pause: bool,
        /// A Dockerfile instruction for the new image's config (CMD, ENTRYPOINT, ENV, WORKDIR,
        /// USER, LABEL, EXPOSE, VOLUME); repeatable.
        #[arg(short, long = "change", value_name = "INSTRUCTION")]
        changes: Vec<String>,
    },
}

/// Runs a container command.
pub fn run(root: &Path, cmd: &ContainerCommand) -> Result<()> {
    match cmd {
        ContainerCommand::Run(args) => run::run(root, args),
        ContainerCommand::Ps { quiet } => ps(root, *quiet),
        ContainerCommand::Exec {
            tty,
            interactive,
            env,
            user,
            workdir,
            container,
            command,
        } => {
            let record = records::find(root, container)?;
            exec(
                root,
                &record,
                command,
                env,
                user.as_deref(),
                workdir.as_deref(),
                *tty,
                *interactive,
            )
        }
        ContainerCommand::Kill { container, signal } => {
            let record = records::find(root, container)?;
            let sig = parse_signal(signal.as_deref().unwrap_or("KILL"))?;
            Runtime::new(&record.runtime_root)?
                .kill(&record.id, sig, false)
                .with_context(|| format!("signalling container {}", record.id))
        }
        ContainerCommand::Rm { force, containers } => {
            let mut failed = 0;
            for c in containers {
                let result = records::find(root, c).and_then(|r| engine::remove(root, &r, *force));
                match result {
                    Ok(()) => println!("{c}"),
                    Err(e) => {
                        eprintln!("berth: rm {c}: {e:#}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} container(s) not removed");
            }
            Ok(())
        }
        ContainerCommand::Logs { follow, container } => {
            let record = records::find(root, container)?;
            logs(root, &record, *follow)
        }
        ContainerCommand::Commit {
            container,
            reference,
            compression,
            message,
            author,
            pause,
            changes,
        } => {
            let changes = changes
                .iter()
                .map(|c| engine::changes::parse(c))
                .collect::<Result<Vec<_>>>()?;
            let record = records::find(root, container)?;
            let opts = engine::commit::CommitOptions {
                compression: engine::commit::parse_compression(compression)?,
                message: message.as_deref(),
                author: author.as_deref(),
                pause: *pause,
                changes: &changes,
            };
            let image = engine::commit::commit(root, &record, reference, &opts)?;
            println!("{} {}", image.name, image.target.digest);
            Ok(())
        }
    }
}

/// `berth logs [-f]`: the log of a detached container; with `follow_output`, then what it writes
/// until its init exits (see [`crate::follow`]) or we get SIGINT, SIGTERM or SIGHUP, which end
/// the follow cleanly (status 0).
///
/// The end is the init's exit, which is exact for the containers this CLI starts (their
/// processes write the log themselves). A container a berthd started attached on the same
/// root has its output appended by the daemon, which may still be copying when the init has
/// exited: follow those through the daemon (`--address`), which waits for its copy.
fn logs(root: &Path, record: &ContainerRecord, follow_output: bool) -> Result<()> {
    let path = records::log_path(root, &record.id);
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path);
    let mut file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !record.detached => {
            bail!("container {} was not detached: it has no log", record.id)
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut out = std::io::stdout().lock();
    if !follow_output {
        std::io::copy(&mut file, &mut out)
            .with_context(|| format!("reading {}", path.display()))?;
        return Ok(());
    }
    // The stop signals arrive on a signalfd polled with the log (this process has no other
    // threads, so blocking them here blocks them everywhere).
    let mut stop = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        stop.add(sig);
    }
    stop.thread_block().context("blocking the stop signals")?;
    let signals = SignalFd::with_flags(&stop, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("signalfd")?;
    let init = follow::watch_init(&record.runtime_root, &record.id);
    let mut ends = vec![signals.as_fd()];
    if let follow::InitWatch::Pidfd(fd) = &init {
        ends.push(fd.as_fd());
    }
    let mut stopped = || follow::init_stopped(&record.runtime_root, &record.id);
    let ended: Option<&mut dyn FnMut() -> bool> = match &init {
        follow::InitWatch::Poll => Some(&mut stopped),
        _ => None,
    };
    let result = if matches!(init, follow::InitWatch::Stopped) {
        // Nothing more will come: print what is there.
        std::io::copy(&mut file, &mut out).map(|_| ())
    } else {
        follow::follow(&mut file, &ends, ended, &mut |chunk| {
            out.write_all(chunk)?;
            out.flush()
        })
    };
    match result {
        // A reader that went away (`| head`) ends the follow, as it ends `tail -f`.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.with_context(|| format!("following {}", path.display())),
    }
}

/// Parses a signal name (`TERM`, `SIGTERM`) or number.
pub fn parse_signal(text: &str) -> Result<i32> {
    if let Ok(n) = text.parse::<i32>() {
        if n < 1 || n > libc::SIGRTMAX() {
            bail!("invalid signal number {n}");
        }
        return Ok(n);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    Signal::from_str(&format!("SIG{name}"))
        .map(|s| s as i32)
        .with_context(|| format!("unknown signal {text:?}"))
}

/// The live status of a container from the runtime's state.
fn status(record: &ContainerRecord) -> String {
    match berth::runtime::read_state(&record.runtime_root, &record.id) {
        Ok(st) => st.status.as_str().to_owned(),
        Err(e) if e.kind() == RtErrorKind::NotFound => "no runtime state".to_owned(),
        Err(e) => format!("unknown ({e})"),
    }
}

fn ago(secs: u64) -> String {
    let d = records::now_secs().saturating_sub(secs);
    match d {
        0..60 => format!("{d} seconds ago"),
        60..3600 => format!("{} minutes ago", d / 60),
        3600..86400 => format!("{} hours ago", d / 3600),
        _ => format!("{} days ago", d / 86400),
    }
}

fn ps(root: &Path, quiet: bool) -> Result<()> {
    let all = records::list(root)?;
    if quiet {
        for r in &all {
            println!("{}", r.id);
        }
        return Ok(());
    }
    println!(
        "{:<12}  {:<40}  {:<24}  {:<16}  {:<16}  NAME",
        "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS"
    );
    for r in &all {
        let mut command = r.command.join(" ");
        if command.chars().count() > 22 {
            command = format!("{}…", command.chars().take(21).collect::<String>());
        }
        println!(
            "{:<12}  {:<40}  {:<24}  {:<16}  {:<16}  {}",
            &r.id[..r.id.len().min(12)],
            r.image,
            format!("{command:?}"),
            ago(r.created),
            status(r),
            r.name.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn exec(
    root: &Path,
    record: &ContainerRecord,
    command: &[String],
    env: &[String],
    user: Option<&str>,
    workdir: Option<&str>,
    tty: bool,
    interactive: bool,
) -> Result<()> {
    let rt = Runtime::new(&record.runtime_root)?;
    let spec = rt.spec(&record.id)?;
    let base = spec
        .process()
        .clone()
        .context("the container's spec has no process")?;
    let user = user
        .map(|u| runspec::resolve_user(&records::container_dir(root, &record.id).join("rootfs"), u))
        .transpose()?;
    let process = runspec::exec_process(&base, command, env, tty, user.as_ref(), workdir)?;
    let mut opts = ExecOptions::default();
    if !interactive {
        opts.stdin = Stdio::Null;
    }
    let console = if tty {
        let socket = ConsoleSocket::new(&format!("x{}", record.id))?;
        opts.console_socket = Some(socket.path().to_path_buf());
        Some(socket)
    } else {
        None
    };
    let proc = rt
        .exec(&record.id, &process, opts)
        .with_context(|| format!("exec in container {}", record.id))?;
    let master = console.as_ref().map(ConsoleSocket::receive).transpose()?;
    let status = foreground::wait(&proc, master, interactive)?;
    foreground::exit_result(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("sigkill").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("15").unwrap(), 15);
        assert!(parse_signal("NOPE").is_err() && parse_signal("0").is_err());
    }
}
