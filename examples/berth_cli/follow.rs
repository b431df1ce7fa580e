//! Following a container's log as it grows (`berth logs -f`, berthd's `Logs` with `follow`).
//!
//! [`follow`] copies the log from where the reader stands to its end, then waits for more
//! without spinning: an inotify watch on the open file (`IN_MODIFY`, taken on
//! `/proc/self/fd/N`, so it is the very file read, whatever happens to its path) wakes it when
//! something is appended, and a set of *end* descriptors wakes it when the follow is over.
//! Once an end descriptor is readable (or hung up), what the log holds by then is copied and
//! the follow returns: the writer is known to be done, so nothing is lost and nothing waits.
//!
//! The end descriptors are the caller's: a pidfd of the container's init ([`watch_init`]; a
//! pidfd is readable once the process has exited, and a pid namespace's init exits only after
//! every other process in it), a signalfd (Ctrl-C), or a pipe whose write end is dropped when
//! the daemon knows the output is complete or the client is gone.
//!
//! Fallbacks, for kernels or limits that refuse the efficient path: without inotify (e.g.
//! `max_user_instances` reached) the log is re-read every [`TICK`]; without pidfds (before
//! Linux 5.3) the caller passes an `ended` check that is asked every [`TICK`].
#![allow(dead_code)] // `berth` and `berthd` use different parts

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// How often the fallbacks look again.
pub const TICK: Duration = Duration::from_millis(100);

/// The size of one read of the log.
const CHUNK: usize = 32 << 10;

/// Where a follow's output goes: each chunk as read. An error ends the follow with it.
pub type Sink<'a> = &'a mut dyn FnMut(&[u8]) -> io::Result<()>;

/// Copies `file` from its offset to its end through `out`.
fn drain(file: &mut File, buf: &mut [u8], out: Sink<'_>) -> io::Result<()> {
    loop {
        match file.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => out(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Copies `file` from its offset to its end through `out` (a log that is not followed).
///
/// Errors: reading the log, or `out`'s own error.
pub fn copy_to_end(file: &mut File, out: Sink<'_>) -> io::Result<()> {
    drain(file, &mut vec![0u8; CHUNK], out)
}

/// An inotify instance watching `file` for appends, or `None` when the kernel refuses one.
fn watch_appends(file: &File) -> Option<Inotify> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok()?;
    let by_fd = format!("/proc/self/fd/{}", file.as_raw_fd());
    inotify
        .add_watch(by_fd.as_str(), AddWatchFlags::IN_MODIFY)
        .ok()?;
    Some(inotify)
}

/// Copies `file` to `out` from its offset, then whatever is appended to it, until one of
/// `ends` is readable or hung up, or `ended` (asked every [`TICK`] when given) says so; then
/// copies what is left and returns. `out` is called from this thread only.
///
/// Errors: reading the log, polling, or `out`'s own error (e.g. the reader went away).
pub fn follow(
    file: &mut File,
    ends: &[BorrowedFd<'_>],
    mut ended: Option<&mut dyn FnMut() -> bool>,
    out: Sink<'_>,
) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    // Watch before the first read, so an append between that read and the wait wakes us.
    let inotify = watch_appends(file);
    let timeout = if inotify.is_some() && ended.is_none() {
        PollTimeout::NONE
    } else {
        PollTimeout::try_from(TICK).unwrap_or(PollTimeout::NONE)
    };
    loop {
        drain(file, &mut buf, out)?;
        let mut fds: Vec<PollFd<'_>> = ends
            .iter()
            .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        if let Some(i) = &inotify {
            fds.push(PollFd::new(i.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let over = fds[..ends.len()]
            .iter()
            .any(|p| p.revents().is_some_and(|r| !r.is_empty()));
        drop(fds);
        if let Some(i) = &inotify {
            // Empty the queue; the events only say "look again".
            while let Ok(events) = i.read_events() {
                if events.is_empty() {
                    break;
                }
            }
        }
        if over || ended.as_mut().is_some_and(|f| f()) {
            return drain(file, &mut buf, out);
        }
    }
}

/// Whether a container's init still runs, and how to learn when it stops.
#[derive(Debug)]
pub enum InitWatch {
    /// It does not run (stopped, never started, or gone).
    Stopped,
    /// It runs; the pidfd becomes readable when it exits.
    Pidfd(OwnedFd),
    /// It runs (or is being created), but no pidfd could be had: ask [`init_stopped`].
    Poll,
}

/// Whether the container's init does not run: stopped, or no runtime state.
pub fn init_stopped(runtime_root: &Path, id: &str) -> bool {
    match berth::runtime::read_state(runtime_root, id) {
        Ok(st) => st.status == berth::runtime::Status::Stopped,
        Err(e) => e.kind() == berth::runtime::ErrorKind::NotFound,
    }
}

/// Watches the init of container `id` through a pidfd. The state is read again after the
/// pidfd is opened, so a pid recycled in between is never mistaken for the init (the state's
/// liveness check compares the process's start time).
pub fn watch_init(runtime_root: &Path, id: &str) -> InitWatch {
    let pid = match berth::runtime::read_state(runtime_root, id) {
        Ok(st) if st.status == berth::runtime::Status::Stopped => return InitWatch::Stopped,
        Ok(st) => st.pid,
        Err(e) if e.kind() == berth::runtime::ErrorKind::NotFound => return InitWatch::Stopped,
        Err(_) => None,
    };
    let Some(pid) = pid.filter(|p| *p > 0) else {
        return InitWatch::Poll;
    };
    // SAFETY: pidfd_open with plain integers; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return match io::Error::last_os_error().raw_os_error() {
            Some(libc::ESRCH) => InitWatch::Stopped,
            _ => InitWatch::Poll,
        };
    }
    // SAFETY: `fd` is a new pidfd that nothing else owns (pidfds are always O_CLOEXEC).
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if init_stopped(runtime_root, id) {
        return InitWatch::Stopped;
    }
    InitWatch::Pidfd(pidfd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_log(tag: &str) -> (std::path::PathBuf, File) {
        let path = std::env::temp_dir().join(format!(
            "berth-follow-{}-{tag}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let writer = File::create(&path).unwrap();
        (path, writer)
    }

    #[test]
    fn follow_copies_appends_until_the_end_fd_fires() {
        let (path, mut writer) = temp_log("appends");
        writer.write_all(b"first\n").unwrap();
        let mut reader = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let (end_r, end_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let writer_thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            writer.write_all(b"second\n").unwrap();
            std::thread::sleep(Duration::from_millis(200));
            writer.write_all(b"third\n").unwrap();
            drop(end_w); // hangs up the end pipe: the writer is done
        });
        let mut got = Vec::new();
        follow(&mut reader, &[end_r.as_fd()], None, &mut |b| {
            got.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        writer_thread.join().unwrap();
        assert_eq!(got, b"first\nsecond\nthird\n");
    }

    #[test]
    fn follow_asks_the_fallback_check() {
        let (path, mut writer) = temp_log("fallback");
        writer.write_all(b"only\n").unwrap();
        let mut reader = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut asked = 0;
        let mut ended = || {
            asked += 1;
            asked == 3
        };
        let mut got = Vec::new();
        follow(&mut reader, &[], Some(&mut ended), &mut |b| {
            got.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, b"only\n");
        assert_eq!(asked, 3);
    }

    #[test]
    fn follow_stops_on_the_sinks_error() {
        let (path, mut writer) = temp_log("sink");
        writer.write_all(b"x").unwrap();
        let mut reader = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let e = follow(&mut reader, &[], None, &mut |_| {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        })
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
