//! Attached calls of the Containers service: `StartAttached` (a container's init started with
//! its stdio over the call, what `berth --address … run` without `-d` uses) and `ExecAttached`
//! (an extra process likewise, what `berth --address … exec` uses); also `Metrics`.
//!
//! `StartAttached`: the init gets pipes for stdout and stderr (and stdin when asked). One
//! thread per output pipe reads until EOF, appends each chunk to the container's log (so
//! `logs` works for attached containers too) and forwards it to the call's response stream;
//! when both pipes are drained the init's exit code (from the reaper, see [`crate::daemon`])
//! ends the stream. Requests after the first carry stdin bytes, which one writer thread puts
//! into the stdin pipe (a container that does not read never blocks the daemon's tasks), the
//! end of stdin, and signals, sent to the init through the runtime. A client that goes away
//! stops nothing: its stdin is closed and the output keeps going to the log.
//!
//! A container created with a terminal (`tty`) gets one from the runtime, whose master comes
//! over a console socket the daemon listens on between create and start; the master is sized
//! from the first request before the init runs, its output is streamed as stdout, stdin bytes
//! are written to it, and later requests' sizes resize it. Such a container cannot be started
//! detached (`Start` refuses it: nobody would read its terminal).
//!
//! `ExecAttached` shares all of this ([`attach`]) with three differences: the process's
//! terminal is asked for in the request (`exec.tty`) and sized as soon as its master arrives,
//! signals go to the process itself (through a pidfd opened before the reaper could reap it,
//! so a recycled pid is never hit), and its output is not written to the container's log.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use berth::metrics::{ContainerStats, Hierarchy, read_metrics};
use berth::runtime::{ExecOptions, Runtime, Stdio};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::containers::{check_exec, exec_process, find, has_terminal, spawn_exec, start_with};
use crate::daemon::{Daemon, caller};
use crate::engine::records::{self, ContainerRecord};
use crate::proto::attach_response::Event as AttachEvent;
use crate::proto::{
    AttachRequest, AttachResponse, ContainerMetrics, MetricsRequest, MetricsResponse,
};
use crate::{blocking, invalid};

/// The size of one output or log chunk.
const CHUNK: usize = 32 << 10;

/// The response stream of `StartAttached`.
pub type AttachStream = Pin<Box<dyn Stream<Item = Result<AttachResponse, Status>> + Send>>;

fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe2")
}

/// Reads `fd` to its end, appending to `log` and forwarding each chunk (as made by `wrap`)
/// to `tx` while anyone listens.
fn pump(
    fd: OwnedFd,
    log: Arc<Mutex<Option<std::fs::File>>>,
    tx: mpsc::Sender<Result<AttachResponse, Status>>,
    wrap: fn(Vec<u8>) -> AttachEvent,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(fd);
        let mut buf = vec![0u8; CHUNK];
        let mut listening = true;
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if let Ok(mut log) = log.lock()
                && let Some(file) = log.as_mut()
                && file.write_all(&buf[..n]).is_err()
            {
                *log = None;
            }
            if listening {
                let msg = AttachResponse {
                    event: Some(wrap(buf[..n].to_vec())),
                };
                listening = tx.blocking_send(Ok(msg)).is_ok();
            }
        }
    })
}

/// Writes stdin chunks into the init's stdin pipe on its own thread; dropping the sender
/// closes the pipe.
fn stdin_writer(fd: OwnedFd) -> std::sync::mpsc::Sender<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(fd);
        for chunk in rx {
            if f.write_all(&chunk).is_err() {
                break; // the container closed its stdin
            }
        }
    });
    tx
}

/// `StartAttached` (see the module docs).
pub async fn start_attached(
    d: Arc<Daemon>,
    req: Request<Streaming<AttachRequest>>,
) -> Result<Response<AttachStream>, Status> {
    let who = caller(&req);
    let mut input = req.into_inner();
    let first = input
        .message()
        .await?
        .ok_or_else(|| invalid("StartAttached needs a first message naming the container"))?;
    let what = first.id.clone();
    let started = async {
        let record = find(&d.root, &first.id)?;
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(records::log_path(&d.root, &record.id))
            .ok();
        let tty = has_terminal(&records::container_dir(&d.root, &record.id));
        let _serial = d.lifecycle.lock().await;
        // Registered before the start: a follower of the log must wait for the output.
        let output_open = watch::Sender::new(true);
        if let Ok(mut o) = d.attached_output.lock() {
            o.insert(record.id.clone(), output_open.clone());
        }
        let dd = d.clone();
        let rec = record.clone();
        let started = blocking(move || {
            if tty {
                let console = Console::bind(&rec.id)?;
                let mut master = None;
                // The terminal is sized before the init runs, so it never sees 0x0.
                let receive = Box::new(|| -> anyhow::Result<()> {
                    let m = console.receive()?;
                    set_winsize(&m, first.rows, first.cols);
                    master = Some(m);
                    Ok(())
                });
                let pid = start_with(
                    &dd,
                    &rec,
                    Stdio::Null,
                    Stdio::Null,
                    Stdio::Null,
                    Some(console.path.clone()),
                    Some(receive),
                )?;
                let master = master.context("the runtime sent no terminal")?;
                return Ok((pid, Io::Tty(Arc::new(master))));
            }
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let (stdin, stdin_w) = if first.open_stdin {
                let (r, w) = pipe()?;
                (Stdio::Fd(r), Some(w))
            } else {
                (Stdio::Null, None)
            };
            let pid = start_with(
                &dd,
                &rec,
                stdin,
                Stdio::Fd(out_w),
                Stdio::Fd(err_w),
                None,
                None,
            )?;
            Ok((
                pid,
                Io::Pipes {
                    stdout: out_r,
                    stderr: err_r,
                    stdin: stdin_w,
                },
            ))
        })
        .await;
        let (pid, io) = match started {
            Ok(v) => v,
            Err(e) => {
                output_open.send_replace(false);
                return Err(e);
            }
        };
        d.event("container-start", &record.id, format!("pid {pid}"));
        Ok((record, io, log, output_open))
    }
    .await;
    let object = started.as_ref().map_or(what, |(r, ..)| r.id.clone());
    let (record, io, log, output_open) =
        d.audited(who, "containers.start-attached", &object, started)?;

    let exit = d
        .exits
        .lock()
        .ok()
        .and_then(|e| e.get(&record.id).map(watch::Sender::subscribe));
    let exit_code = async move {
        match exit {
            Some(mut rx) => rx
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|c| *c)
                .unwrap_or(-1),
            None => -1,
        }
    };
    let stream = attach(
        d.clone(),
        io,
        first.open_stdin,
        input,
        SignalTarget::Init(record),
        log,
        exit_code,
        Some(output_open),
    )?;
    Ok(Response::new(stream))
}

/// `ExecAttached`: an extra process in a running container with its stdio attached to the
/// call, through the same machinery as [`start_attached`] (pipes or a terminal, stdin, resizes,
/// signals, the exit code last). Its output is not appended to the container's log.
pub async fn exec_attached(
    d: Arc<Daemon>,
    req: Request<Streaming<AttachRequest>>,
) -> Result<Response<AttachStream>, Status> {
    let who = caller(&req);
    let mut input = req.into_inner();
    let first = input
        .message()
        .await?
        .ok_or_else(|| invalid("ExecAttached needs a first message naming the process"))?;
    let what = first
        .exec
        .as_ref()
        .map_or_else(String::new, |e| e.id.clone());
    let (open_stdin, rows, cols) = (first.open_stdin, first.rows, first.cols);
    let started = async {
        let exec = first
            .exec
            .ok_or_else(|| invalid("the first message of ExecAttached carries `exec`"))?;
        check_exec(&exec)?;
        let record = find(&d.root, &exec.id)?;
        let dd = d.clone();
        let rec = record.clone();
        let (io, spawned) = blocking(move || {
            let process = exec_process(&dd, &rec, &exec)?;
            if exec.tty {
                let console = Console::bind(&rec.id)?;
                let opts = ExecOptions {
                    stdin: Stdio::Null,
                    stdout: Stdio::Null,
                    stderr: Stdio::Null,
                    console_socket: Some(console.path.clone()),
                    ..ExecOptions::default()
                };
                let spawned = spawn_exec(&dd, &rec, &process, opts)?;
                let master = console.receive()?;
                set_winsize(&master, rows, cols);
                return Ok((Io::Tty(Arc::new(master)), spawned));
            }
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let (stdin, stdin_w) = if open_stdin {
                let (r, w) = pipe()?;
                (Stdio::Fd(r), Some(w))
            } else {
                (Stdio::Null, None)
            };
            let opts = ExecOptions {
                stdin,
                stdout: Stdio::Fd(out_w),
                stderr: Stdio::Fd(err_w),
                ..ExecOptions::default()
            };
            let spawned = spawn_exec(&dd, &rec, &process, opts)?;
            let io = Io::Pipes {
                stdout: out_r,
                stderr: err_r,
                stdin: stdin_w,
            };
            Ok((io, spawned))
        })
        .await?;
        Ok((record, io, spawned))
    }
    .await;
    let object = started.as_ref().map_or(what, |(r, ..)| r.id.clone());
    let (record, io, spawned) = d.audited(who, "containers.exec-attached", &object, started)?;
    let dd = d.clone();
    let exit_code = async move {
        let code = spawned.exit.await.unwrap_or(-1);
        dd.event("exec", &record.id, format!("exit code {code}"));
        code
    };
    let target = SignalTarget::Process(spawned.pidfd.map(Arc::new));
    let stream = attach(d, io, open_stdin, input, target, None, exit_code, None)?;
    Ok(Response::new(stream))
}

/// The signals of an attached call go to a container's init (through the runtime) or to an
/// exec'd process (through its pidfd).
enum SignalTarget {
    Init(ContainerRecord),
    Process(Option<Arc<OwnedFd>>),
}

/// The stream of an attached process: its output (also appended to `log` when given) and, once
/// that is drained, the exit code `exit_code` resolves to; the requests of `input` feed its
/// stdin (when `open_stdin`), resize its terminal and signal `target`. `output_open`, if given,
/// is set to false once the output is drained.
#[allow(clippy::too_many_arguments)]
fn attach(
    d: Arc<Daemon>,
    io: Io,
    open_stdin: bool,
    input: Streaming<AttachRequest>,
    target: SignalTarget,
    log: Option<std::fs::File>,
    exit_code: impl Future<Output = i32> + Send + 'static,
    output_open: Option<watch::Sender<bool>>,
) -> Result<AttachStream, Status> {
    let (tx, rx) = mpsc::channel(64);
    let log = Arc::new(Mutex::new(log));
    let readers = match io {
        Io::Pipes {
            stdout,
            stderr,
            stdin,
        } => {
            forward_input(d, target, input, stdin, None);
            vec![
                pump(stdout, log.clone(), tx.clone(), AttachEvent::Stdout),
                pump(stderr, log, tx.clone(), AttachEvent::Stderr),
            ]
        }
        Io::Tty(master) => {
            let dup = |m: &OwnedFd| {
                m.try_clone()
                    .map_err(|e| Status::internal(format!("dup of the pty master: {e}")))
            };
            let reader = dup(&master)?;
            let stdin = open_stdin.then(|| dup(&master)).transpose()?;
            forward_input(d, target, input, stdin, Some(master));
            vec![pump(reader, log, tx.clone(), AttachEvent::Stdout)]
        }
    };
    tokio::spawn(async move {
        let _ = tokio::task::spawn_blocking(move || {
            for r in readers {
                let _ = r.join();
            }
        })
        .await;
        if let Some(open) = output_open {
            open.send_replace(false);
        }
        let code = exit_code.await;
        let _ = tx
            .send(Ok(AttachResponse {
                event: Some(AttachEvent::ExitCode(code)),
            }))
            .await;
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// How the init's stdio reaches the daemon.
enum Io {
    /// Pipes: the read ends of stdout and stderr, the write end of stdin if open.
    Pipes {
        stdout: OwnedFd,
        stderr: OwnedFd,
        stdin: Option<OwnedFd>,
    },
    /// The master of the init's terminal.
    Tty(Arc<OwnedFd>),
}

/// A unix socket the runtime sends a terminal's master to; removed on drop.
struct Console {
    listener: std::os::unix::net::UnixListener,
    path: std::path::PathBuf,
}

impl Console {
    /// Binds `<tmp>/berthd-console-<pid>-<n>-<id prefix>.sock` (short, to fit `sun_path`;
    /// `n` counts the binds, so concurrent starts and execs never share one), mode 0600.
    fn bind(id: &str) -> anyhow::Result<Console> {
        static BINDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = BINDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let short: String = id.chars().take(12).collect();
        let path = std::env::temp_dir().join(format!(
            "berthd-console-{}-{n}-{short}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path)
            .with_context(|| format!("binding {}", path.display()))?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        Ok(Console { listener, path })
    }

    /// Accepts the runtime's connection and receives the master.
    fn receive(&self) -> anyhow::Result<OwnedFd> {
        let (conn, _) = self
            .listener
            .accept()
            .context("accepting on the console socket")?;
        berth::runtime::console::recv_pty_master(&conn).context("receiving the pty master")
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sets the terminal size (nothing when either dimension is 0).
fn set_winsize(master: &OwnedFd, rows: u32, cols: u32) {
    let (Ok(rows), Ok(cols)) = (u16::try_from(rows), u16::try_from(cols)) else {
        return;
    };
    if rows == 0 || cols == 0 {
        return;
    }
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a valid winsize on a pty master we own.
    unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(master),
            libc::TIOCSWINSZ,
            &ws,
        )
    };
}

/// Sends `signal` to the process of `pidfd` (gone already: nothing happens).
fn send_signal(pidfd: &OwnedFd, signal: i32) {
    // SAFETY: pidfd_send_signal on a pidfd we hold, with a null siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            std::os::fd::AsRawFd::as_raw_fd(pidfd),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// Handles the requests after the first: stdin bytes, its end, terminal sizes and signals.
fn forward_input(
    d: Arc<Daemon>,
    target: SignalTarget,
    mut input: Streaming<AttachRequest>,
    stdin: Option<OwnedFd>,
    terminal: Option<Arc<OwnedFd>>,
) {
    tokio::spawn(async move {
        let mut stdin = stdin.map(stdin_writer);
        // Ends with the request stream, or with an error when the client went away.
        while let Ok(Some(m)) = input.message().await {
            if let Some(master) = &terminal {
                set_winsize(master, m.rows, m.cols);
            }
            if let Some(w) = &stdin
                && !m.stdin.is_empty()
                && w.send(m.stdin).is_err()
            {
                stdin = None;
            }
            if m.close_stdin {
                stdin = None;
            }
            if m.signal != 0 {
                let signal = m.signal;
                if signal < 1 || signal > libc::SIGRTMAX() {
                    continue;
                }
                match &target {
                    SignalTarget::Init(record) => {
                        let rec = record.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            Runtime::new(&rec.runtime_root)
                                .and_then(|rt| rt.kill(&rec.id, signal, false))
                        })
                        .await;
                        d.event("container-kill", &record.id, format!("signal {signal}"));
                    }
                    SignalTarget::Process(Some(pidfd)) => send_signal(pidfd, signal),
                    SignalTarget::Process(None) => {}
                }
            }
        }
    });
}

/// The statistics of one container, or `None` when it does not run (no state or no cgroup).
fn stats_of(h: &Hierarchy, r: &ContainerRecord) -> anyhow::Result<Option<ContainerStats>> {
    let st = match berth::runtime::read_state(&r.runtime_root, &r.id) {
        Ok(st) => st,
        Err(e) if e.kind() == berth::runtime::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if st.status == berth::runtime::Status::Stopped {
        return Ok(None);
    }
    let paths = h.paths_for(&st.cgroup_path)?;
    let metrics =
        read_metrics(&paths).with_context(|| format!("reading the cgroup of {}", r.id))?;
    Ok(Some(ContainerStats {
        id: r.id.clone(),
        namespace: "default".to_owned(),
        metrics,
    }))
}

/// `Metrics`: the named containers (each must run), or every running one.
pub async fn metrics(
    d: Arc<Daemon>,
    req: Request<MetricsRequest>,
) -> Result<Response<MetricsResponse>, Status> {
    let ids = req.into_inner().ids;
    let selected = if ids.is_empty() {
        None
    } else {
        Some(
            ids.iter()
                .map(|i| find(&d.root, i))
                .collect::<Result<Vec<_>, Status>>()?,
        )
    };
    let root = d.root.clone();
    let containers = blocking(move || {
        let h = Hierarchy::detect()?;
        let named = selected.is_some();
        let list = match selected {
            Some(l) => l,
            None => records::list(&root)?,
        };
        let mut out = Vec::new();
        for r in list {
            match stats_of(&h, &r)? {
                Some(stats) => out.push(ContainerMetrics {
                    id: r.id.clone(),
                    name: r.name.clone().unwrap_or_default(),
                    stats_json: serde_json::to_string(&stats)?,
                }),
                None if named => {
                    return Err(crate::containers::StatusError(Status::failed_precondition(
                        format!("container {} is not running: it has no cgroup", r.id),
                    ))
                    .into());
                }
                None => {}
            }
        }
        Ok(out)
    })
    .await?;
    Ok(Response::new(MetricsResponse { containers }))
}
