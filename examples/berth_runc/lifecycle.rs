//! `create`, `start`, `run`, `kill`, `delete`: the container lifecycle over
//! [`berth_runtime::Runtime`].
//!
//! `create` leaves the container's init waiting for `start` and exits: the init is then
//! reparented to whoever waits for it (containerd's shim and conmon make themselves child
//! subreapers for this). Foreground `run` keeps the init as its child instead, forwards signals
//! to it (or proxies its terminal), waits for it, deletes the container and exits with its
//! status, as runc does.
//!
//! Error messages keep the phrases runc's callers look for: containerd's shim treats an error
//! containing "does not exist" on delete, and "container not running" or "no such process" on
//! kill, as "already gone".

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use berth_runtime::{CreateOptions, ErrorKind, Runtime, Stdio};

use crate::cli::{CreateOpts, KillArgs, RunArgs};
use crate::foreground::{self, ConsoleListener};
use crate::signal::parse_signal;

/// Opens the runtime at `root`.
pub fn runtime(root: &Path) -> Result<Runtime> {
    Runtime::new(root).with_context(|| format!("state root {}", root.display()))
}

/// Duplicates fds 3..3+n of this process for `--preserve-fds`.
pub fn preserved_fds(n: u32) -> Result<Vec<OwnedFd>> {
    let mut fds = Vec::new();
    for i in 0..n {
        let raw = 3 + i32::try_from(i).context("--preserve-fds too large")?;
        // SAFETY: F_GETFD only queries the fd number; a closed fd yields -1.
        if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
            bail!("--preserve-fds={n}: fd {raw} is not open");
        }
        // SAFETY: the fd is open (checked above) and only borrowed for the duplication.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        fds.push(
            fd.try_clone_to_owned()
                .with_context(|| format!("dup fd {raw}"))?,
        );
    }
    Ok(fds)
}

/// Whether the bundle's process asks for a terminal (false when config.json cannot be read:
/// `create` then reports that error itself).
fn wants_terminal(bundle: &Path) -> bool {
    berth_runtime::load_spec(bundle)
        .ok()
        .and_then(|s| s.process().as_ref().and_then(|p| p.terminal()))
        .unwrap_or(false)
}

/// The stdio of a container: ours, unless it gets a terminal. Its stdio is then the pty, and
/// it must hold no copy of ours: a caller reading our output to EOF (containerd's shim does
/// for a terminal container) would wait for the container.
pub fn container_stdio(terminal: bool) -> [Stdio; 3] {
    if terminal {
        [Stdio::Null, Stdio::Null, Stdio::Null]
    } else {
        [Stdio::Inherit, Stdio::Inherit, Stdio::Inherit]
    }
}

fn create_options(opts: &CreateOpts) -> Result<CreateOptions> {
    let [stdin, stdout, stderr] = container_stdio(wants_terminal(&opts.bundle));
    Ok(CreateOptions {
        stdin,
        stdout,
        stderr,
        preserve_fds: preserved_fds(opts.preserve_fds)?,
        console_socket: opts.console_socket.clone(),
        pid_file: opts.pid_file.clone(),
        no_pivot: opts.no_pivot,
        no_new_keyring: opts.no_new_keyring,
    })
}

/// `create`: builds the container; its init waits for `start`.
pub fn create(root: &Path, id: &str, opts: &CreateOpts) -> Result<()> {
    let rt = runtime(root)?;
    rt.create(id, &opts.bundle, create_options(opts)?)
        .map_err(|e| runtime_error(e, "create"))?;
    Ok(())
}

/// `start`: runs the user program of a created container.
pub fn start(root: &Path, id: &str) -> Result<()> {
    runtime(root)?
        .start(id)
        .map_err(|e| runtime_error(e, "start"))
}

/// `run`: create and start; in the foreground, wait, delete and exit with the status.
pub fn run(root: &Path, args: &RunArgs) -> Result<ExitCode> {
    let rt = runtime(root)?;
    let mut options = create_options(&args.opts)?;
    let terminal = wants_terminal(&args.opts.bundle);
    if args.detach {
        if terminal && args.opts.console_socket.is_none() {
            bail!("cannot allocate tty if berth-runc will detach without setting console socket");
        }
        rt.create(&args.id, &args.opts.bundle, options)
            .map_err(|e| runtime_error(e, "create"))?;
        if let Err(e) = rt.start(&args.id) {
            let _ = rt.delete(&args.id, true);
            return Err(runtime_error(e, "start"));
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Foreground: signals that arrive from now on are passed to the container's process.
    foreground::catch_signals();
    // Our own console socket when the process wants a terminal.
    let console = match (terminal, &args.opts.console_socket) {
        (true, None) => {
            let listener = ConsoleListener::new(root, &args.id)?;
            options.console_socket = Some(listener.path().to_path_buf());
            Some(listener)
        }
        _ => None,
    };
    let init = rt
        .create(&args.id, &args.opts.bundle, options)
        .map_err(|e| runtime_error(e, "create"))?;
    let master = match &console {
        Some(listener) => match listener.receive_master() {
            Ok(fd) => Some(foreground::Terminal::attach(fd)),
            Err(e) => {
                let _ = rt.delete(&args.id, true);
                let _ = init.wait();
                return Err(e);
            }
        },
        None => None,
    };
    drop(console);
    if let Err(e) = rt.start(&args.id) {
        let _ = rt.delete(&args.id, true);
        let _ = init.wait();
        return Err(runtime_error(e, "start"));
    }
    let status = foreground::wait(&init, master);
    if !args.keep
        && let Err(e) = rt.delete(&args.id, true)
    {
        crate::log::log(
            crate::log::Level::Warning,
            &format!("delete {}: {e}", args.id),
        );
    }
    let status = status?;
    Ok(ExitCode::from(
        u8::try_from(status.code() & 0xff).unwrap_or(1),
    ))
}

/// `kill`: signals the init (or, with `--all`, every process of the container).
pub fn kill(root: &Path, args: &KillArgs) -> Result<()> {
    let signal = parse_signal(args.signal.as_deref().unwrap_or("SIGTERM"))?;
    runtime(root)?
        .kill(&args.id, signal, args.all)
        .map_err(|e| match e.kind() {
            ErrorKind::FailedPrecondition => anyhow!("container not running: {e}"),
            _ => runtime_error(e, "kill"),
        })
}

/// `delete`: removes the container; `--force` kills it first and succeeds when it is gone.
pub fn delete(root: &Path, id: &str, force: bool) -> Result<()> {
    let rt = runtime(root)?;
    match rt.delete(id, force) {
        Ok(()) => Ok(()),
        Err(e) if force && e.kind() == ErrorKind::NotFound => {
            // As runc: a state directory without a state file (an aborted create) is removed,
            // and a container that is gone is not an error for --force.
            if berth_runtime::state::validate_id(id).is_ok() {
                let dir = root.join(id);
                if dir.is_dir() && !dir.join("state.json").exists() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            Ok(())
        }
        Err(e) => Err(runtime_error(e, "delete")),
    }
}

/// Turns a library error into the message runc would print for `op`.
pub fn runtime_error(e: berth_runtime::Error, op: &str) -> anyhow::Error {
    match e.kind() {
        // containerd's shim looks for "does not exist"; the library's message says it.
        ErrorKind::NotFound if matches!(e, berth_runtime::Error::NotFound { .. }) => {
            anyhow!("{e}")
        }
        _ => anyhow!("{op}: {e}"),
    }
}
