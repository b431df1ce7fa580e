//! Foreground container processes (`berth run` without `-d`, `berth exec`): signal
//! forwarding, the console socket and terminal proxy for `-t`, and the wait.
//!
//! Without a terminal the process shares our stdio; SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1
//! and SIGUSR2 sent to us are forwarded to it (note that a container's init is pid 1 of its
//! namespace and so ignores signals it has no handler for, as with Docker without `--init`).
//! With a terminal, the runtime's container setup sends the pty master over a unix socket we
//! listen on ([`berth::runtime::console::recv_pty_master`]); we copy the master to our stdout,
//! and with `-i` our stdin to the master in raw mode, keeping the window size in step.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use anyhow::{Context, Result};
use berth::runtime::{ContainerProcess, ExitStatus};
use nix::sys::termios::{self, SetArg, Termios};

/// A container exited with a non-zero status: `berth` exits with it (after cleanup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitWith(pub u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the container process exited with status {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

/// `Ok` for status 0, else an [`ExitWith`] error carrying the status (128 + signal when the
/// process was killed).
pub fn exit_result(status: ExitStatus) -> Result<()> {
    match u8::try_from(status.code()).unwrap_or(255) {
        0 => Ok(()),
        n => Err(ExitWith(n).into()),
    }
}

/// A unix socket for the runtime to send a pty master to; removed on drop.
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    /// Binds `<tmp>/berth-console-<pid>-<tag>.sock` (short, to fit `sun_path`), mode 0600.
    pub fn new(tag: &str) -> Result<ConsoleSocket> {
        let short: String = tag.chars().take(12).collect();
        let path =
            std::env::temp_dir().join(format!("berth-console-{}-{short}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        Ok(ConsoleSocket { listener, path })
    }

    /// The socket's path, for `CreateOptions::console_socket` / `ExecOptions::console_socket`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts the runtime's connection and receives the pty master.
    pub fn receive(&self) -> Result<OwnedFd> {
        let (conn, _) = self
            .listener
            .accept()
            .context("accepting on the console socket")?;
        berth::runtime::console::recv_pty_master(&conn).context("receiving the pty master")
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

static TARGET: AtomicI32 = AtomicI32::new(0);
static RESIZED: AtomicBool = AtomicBool::new(false);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = TARGET.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe; the target is our own child.
        unsafe { libc::kill(pid, sig) };
    }
}

extern "C" fn on_winch(_: libc::c_int) {
    RESIZED.store(true, Ordering::Relaxed);
}

fn set_handler(sig: libc::c_int, handler: extern "C" fn(libc::c_int), restart: bool) {
    // SAFETY: a zeroed sigaction with a valid handler that only touches atomics and kill().
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as *const () as usize;
        sa.sa_flags = if restart { libc::SA_RESTART } else { 0 };
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Forwards the usual termination signals we receive to `pid` from now on.
pub fn forward_signals_to(pid: i32) {
    TARGET.store(pid, Ordering::Relaxed);
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        set_handler(sig, forward_signal, true);
    }
}

/// Waits for `process` (signals forwarded), proxying the terminal `master` if given
/// (`input`: also copy our stdin to it).
pub fn wait(
    process: &ContainerProcess,
    master: Option<OwnedFd>,
    input: bool,
) -> Result<ExitStatus> {
    forward_signals_to(process.pid());
    if let Some(master) = master {
        proxy(master, input)?;
    }
    process.wait().context("waiting for the container process")
}

/// Restores the terminal settings on drop.
struct RawMode {
    saved: Termios,
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(stdin(), SetArg::TCSANOW, &self.saved);
    }
}

fn stdin() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the whole life of the process.
    unsafe { BorrowedFd::borrow_raw(0) }
}

fn copy_winsize(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a valid winsize on descriptors we hold.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Copies the master to stdout until every slave is closed; with `input`, stdin to the master
/// on a thread (left running: the process exits after the wait).
fn proxy(master: OwnedFd, input: bool) -> Result<()> {
    let mut _raw = None;
    if let Ok(saved) = termios::tcgetattr(stdin()) {
        copy_winsize(stdin(), master.as_fd());
        set_handler(libc::SIGWINCH, on_winch, false);
        if input {
            let mut raw = saved.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(stdin(), SetArg::TCSANOW, &raw);
            _raw = Some(RawMode { saved });
        }
    }
    if input {
        let mut to_master = std::fs::File::from(master.try_clone().context("dup of the pty")?);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin().lock();
            while let Ok(n @ 1..) = stdin.read(&mut buf) {
                if to_master.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    let mut from_master = std::fs::File::from(master);
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 8192];
    loop {
        if RESIZED.swap(false, Ordering::Relaxed) {
            copy_winsize(stdin(), from_master.as_fd());
        }
        match from_master.read(&mut buf) {
            Ok(0) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO: the last slave closed.
            Err(_) => break,
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        }
    }
    Ok(())
}
