//! Foreground processes (`run` and `exec` without `--detach`): the console socket we give the
//! runtime, the terminal proxy, signal forwarding, and the wait.
//!
//! With a terminal, the container's setup sends the pty master over the console socket
//! (SCM_RIGHTS, as runc does); we receive it, put our own terminal in raw mode, copy our stdin
//! to the master and the master to our stdout, and keep the pty's window size equal to ours
//! (SIGWINCH). Without a terminal the process shares our stdio, and the signals we receive
//! (INT, TERM, HUP, QUIT, USR1, USR2) are forwarded to it.

use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use berth_runtime::{ContainerProcess, ExitStatus};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::sys::termios::{self, SetArg, Termios};

/// A unix socket of our own, for the runtime to send a terminal's pty master to.
#[derive(Debug)]
pub struct ConsoleListener {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleListener {
    /// Binds a fresh socket in the state root (`<root>/.console-<id>-<pid>.sock`).
    pub fn new(root: &Path, id: &str) -> Result<ConsoleListener> {
        let path = root.join(format!(".console-{id}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).with_context(|| format!("bind {}", path.display()))?;
        Ok(ConsoleListener { listener, path })
    }

    /// The socket's path (for `CreateOptions::console_socket`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts the runtime's connection and receives the pty master it sends.
    pub fn receive_master(&self) -> Result<OwnedFd> {
        let (conn, _) = self
            .listener
            .accept()
            .context("accept on the console socket")?;
        receive_fd(conn.as_fd())
    }
}

impl Drop for ConsoleListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Receives one fd sent with SCM_RIGHTS on `sock`.
pub fn receive_fd(sock: BorrowedFd<'_>) -> Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("receive the pty master")?;
    let mut received = Vec::new();
    for cmsg in msg.cmsgs().context("read control messages")? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            received.extend(fds);
        }
    }
    let mut fds = received.into_iter().map(|raw| {
        // SAFETY: SCM_RIGHTS gave us these fds; nobody else owns them.
        unsafe { OwnedFd::from_raw_fd(raw) }
    });
    match fds.next() {
        Some(fd) => Ok(fd),
        None => bail!("console socket: no fd received"),
    }
}

static CHILD: AtomicI32 = AtomicI32::new(0);
/// Signals received before the child was known (bit n = signal n), delivered once it is.
static PENDING: AtomicU64 = AtomicU64::new(0);
static WINCH: AtomicBool = AtomicBool::new(false);

/// The signals a foreground `run`/`exec` passes on to its process.
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; signalling our own child.
        unsafe { libc::kill(pid, sig) };
    } else if (0..64).contains(&sig) {
        PENDING.fetch_or(1 << sig, Ordering::Relaxed);
    }
}

/// Starts catching the forwarded signals, before the process exists: what arrives before
/// [`wait`] is held and delivered to the process then.
pub fn catch_signals() {
    for sig in FORWARDED {
        install(sig, forward, true);
    }
}

extern "C" fn note_winch(_: libc::c_int) {
    WINCH.store(true, Ordering::Relaxed);
}

/// Installs `handler` for `sig`; `restart` makes interrupted system calls resume.
fn install(sig: libc::c_int, handler: extern "C" fn(libc::c_int), restart: bool) {
    // SAFETY: a zeroed sigaction with a valid handler; handlers only touch atomics and kill().
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = if restart { libc::SA_RESTART } else { 0 };
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Waits for a foreground process: forwards signals to it, proxies its terminal if one is
/// given, and returns its exit status.
pub fn wait(process: &ContainerProcess, terminal: Option<Terminal>) -> Result<ExitStatus> {
    catch_signals();
    CHILD.store(process.pid(), Ordering::Relaxed);
    let pending = PENDING.swap(0, Ordering::Relaxed);
    for sig in FORWARDED {
        if pending & (1 << sig) != 0 {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(process.pid(), sig) };
        }
    }
    if let Some(terminal) = terminal {
        proxy_terminal(terminal)?;
    }
    process.wait().context("wait for the container process")
}

/// Restores our terminal's settings on drop.
#[derive(Debug)]
struct RawMode {
    fd: BorrowedFd<'static>,
    saved: Termios,
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSANOW, &self.saved);
    }
}

fn stdin_fd() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(0) }
}

fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a valid winsize pointer on fds we hold.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// The container's terminal, attached to ours: our terminal in raw mode (restored on drop) and
/// the pty's window size equal to ours. Attach it before the process starts, so the process
/// sees the right size from its first instruction.
#[derive(Debug)]
pub struct Terminal {
    master: OwnedFd,
    _raw: Option<RawMode>,
}

impl Terminal {
    /// Attaches the pty `master` to our stdio's terminal (if stdin is one).
    pub fn attach(master: OwnedFd) -> Terminal {
        let stdin = stdin_fd();
        let raw = match termios::tcgetattr(stdin) {
            Ok(saved) => {
                let mut raw = saved.clone();
                termios::cfmakeraw(&mut raw);
                let _ = termios::tcsetattr(stdin, SetArg::TCSANOW, &raw);
                copy_window_size(stdin, master.as_fd());
                // Not restarted: a resize interrupts the proxy's read, which then applies it.
                install(libc::SIGWINCH, note_winch, false);
                Some(RawMode { fd: stdin, saved })
            }
            Err(_) => None,
        };
        Terminal { master, _raw: raw }
    }
}

/// Our terminal's size as `(rows, cols)`, if stdin is a terminal.
pub fn window_size() -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ with a valid winsize pointer on fd 0.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        (libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_row > 0)
            .then_some((ws.ws_row, ws.ws_col))
    }
}

/// Copies stdin → master (a thread) and master → stdout (here) until the pty closes.
fn proxy_terminal(terminal: Terminal) -> Result<()> {
    let stdin = stdin_fd();
    let Terminal { master, _raw } = terminal;
    let mut to_master = std::fs::File::from(master.try_clone().context("dup pty master")?);
    // The input thread ends with our stdin (or a write error once the pty is gone); it is not
    // joined: the process exits after the wait.
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            match input.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_master.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut from_master = std::fs::File::from(master);
    let mut stdout = std::io::stdout().lock();
    let mut buf = [0u8; 8192];
    loop {
        if WINCH.swap(false, Ordering::Relaxed) {
            copy_window_size(stdin, from_master.as_fd());
        }
        match from_master.read(&mut buf) {
            // EIO: every slave end is closed (the process and its children are gone).
            Ok(0) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
            Ok(n) => {
                if stdout
                    .write_all(&buf[..n])
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    Ok(())
}
