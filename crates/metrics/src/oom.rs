//! OOM notifications.
//!
//! - cgroup v1: an `eventfd` registered on `memory.oom_control` through
//!   `cgroup.event_control` (`"<eventfd> <oom_control fd>"`). The kernel signals the eventfd on
//!   every OOM of the cgroup **and** when the cgroup is removed; after a wake-up the watcher
//!   checks whether the cgroup still exists to tell the two apart.
//! - cgroup v2: `inotify` (`IN_MODIFY`) on `memory.events`; after each change the file is
//!   re-read and an event is delivered when `oom` or `oom_kill` grew. The watch ends when the
//!   file goes away (`IN_IGNORED`).
//!
//! A background thread (`berth-oom`) waits with `poll(2)` on the watched fd and a stop
//! eventfd. Dropping the [`OomWatcher`] signals the stop fd and joins the thread, so no thread
//! outlives it. The callback runs on that thread; the channel form hands events to a blocking
//! [`Receiver`], whose iterator ends when the cgroup is removed or the watcher is dropped.
//! All fds are `O_CLOEXEC`.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::detect::CgroupPaths;
use crate::error::{MetricsError, Result};
use crate::v1::read_oom_control;
use crate::v2::read_memory_events_file;

/// One OOM notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomEvent {
    /// The memory cgroup directory that went out of memory.
    pub cgroup: PathBuf,
    /// The cgroup's OOM-kill count read right after the event (v1 `oom_control` `oom_kill`, v2
    /// `memory.events` `oom_kill`), when the kernel reports it. On v1 the kernel signals the
    /// OOM before it kills the victim, so this count may not include the kill of this event yet.
    pub oom_kills: Option<u64>,
}

/// Watches one cgroup for OOM events from a background thread; stops on drop.
#[derive(Debug)]
pub struct OomWatcher {
    stop: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
    cgroup: PathBuf,
}

/// What the thread waits on.
enum Source {
    V1 {
        eventfd: EventFd,
        // Kept open: the kernel's registration refers to it.
        _oom_control: File,
    },
    V2 {
        inotify: Inotify,
        events_file: PathBuf,
        last_oom: u64,
        last_kill: u64,
    },
}

fn sys<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> MetricsError + 'a {
    move |source| MetricsError::Sys {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl OomWatcher {
    /// Starts watching the memory cgroup of `paths`: v1 when it has a `memory` controller
    /// directory, else v2 through its unified directory. `on_oom` is called on the watcher's
    /// thread for each OOM; it must not block for long, since dropping the watcher waits for
    /// the thread (and so for a running callback) to finish.
    ///
    /// Errors: [`MetricsError::CgroupNotFound`] when the memory cgroup (v1 `memory.oom_control`
    /// or v2 `memory.events`) does not exist; [`MetricsError::Sys`] / [`MetricsError::Io`] when
    /// registering the notification fails.
    pub fn spawn<F>(paths: &CgroupPaths, mut on_oom: F) -> Result<Self>
    where
        F: FnMut(OomEvent) + Send + 'static,
    {
        let (dir, source) = match paths.controller("memory") {
            Some(dir) => (dir.to_path_buf(), register_v1(dir)?),
            None => match paths.unified() {
                Some(dir) => (dir.to_path_buf(), register_v2(dir)?),
                None => {
                    return Err(MetricsError::InvalidPath {
                        path: PathBuf::new(),
                        reason: "no memory cgroup directory given",
                    });
                }
            },
        };
        let stop = Arc::new(
            EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(sys("eventfd", &dir))?,
        );
        let thread_stop = stop.clone();
        let thread_dir = dir.clone();
        let thread = std::thread::Builder::new()
            .name("berth-oom".into())
            .spawn(move || run(source, &thread_stop, &thread_dir, &mut on_oom))
            .map_err(|source| MetricsError::Io {
                path: dir.clone(),
                source,
            })?;
        Ok(OomWatcher {
            stop,
            thread: Some(thread),
            cgroup: dir,
        })
    }

    /// Like [`OomWatcher::spawn`], delivering events to a channel. The receiver's iterator ends
    /// when the cgroup is removed or the watcher is dropped.
    pub fn channel(paths: &CgroupPaths) -> Result<(Self, Receiver<OomEvent>)> {
        let (tx, rx) = mpsc::channel();
        let watcher = Self::spawn(paths, move |ev| {
            let _ = tx.send(ev);
        })?;
        Ok((watcher, rx))
    }

    /// The watched memory cgroup directory.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// True while the background thread runs (false after the cgroup was removed).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for OomWatcher {
    fn drop(&mut self) {
        // A failed write leaves the counter non-zero or the thread already gone; either way
        // the join below cannot block forever unless the write failed with the thread alive,
        // which for a non-full eventfd cannot happen.
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn register_v1(dir: &Path) -> Result<Source> {
    let oom_path = dir.join("memory.oom_control");
    let oom_control = File::open(&oom_path).map_err(|source| {
        if crate::files::is_missing(&source) {
            MetricsError::CgroupNotFound {
                path: dir.to_path_buf(),
            }
        } else {
            MetricsError::Io {
                path: oom_path.clone(),
                source,
            }
        }
    })?;
    // Only ever write to a real cgroup v1 filesystem.
    let fs = nix::sys::statfs::fstatfs(&oom_control).map_err(sys("fstatfs", &oom_path))?;
    if fs.filesystem_type() != nix::sys::statfs::CGROUP_SUPER_MAGIC {
        return Err(MetricsError::InvalidPath {
            path: oom_path,
            reason: "not on a cgroup v1 filesystem",
        });
    }
    let eventfd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(sys("eventfd", dir))?;
    let control = dir.join("cgroup.event_control");
    let line = format!("{} {}", eventfd.as_raw_fd(), oom_control.as_raw_fd());
    let io_err = |source| MetricsError::Io {
        path: control.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&control)
        .map_err(io_err)?;
    file.write_all(line.as_bytes()).map_err(io_err)?;
    Ok(Source::V1 {
        eventfd,
        _oom_control: oom_control,
    })
}

fn register_v2(dir: &Path) -> Result<Source> {
    let events_file = dir.join("memory.events");
    let Some(initial) = read_memory_events_file(&events_file)? else {
        return Err(MetricsError::CgroupNotFound {
            path: dir.to_path_buf(),
        });
    };
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(sys("inotify_init1", dir))?;
    inotify
        .add_watch(&events_file, AddWatchFlags::IN_MODIFY)
        .map_err(sys("inotify_add_watch", &events_file))?;
    // Re-read after the watch exists so an OOM between the first read and the watch is seen.
    let now = read_memory_events_file(&events_file)?.unwrap_or(initial);
    Ok(Source::V2 {
        inotify,
        events_file,
        last_oom: now.oom,
        last_kill: now.oom_kill,
    })
}

/// The watcher thread: returns when stopped or when the cgroup goes away.
fn run(mut source: Source, stop: &EventFd, dir: &Path, on_oom: &mut dyn FnMut(OomEvent)) {
    loop {
        let (watch_ready, stop_ready) = {
            let watched = match &source {
                Source::V1 { eventfd, .. } => eventfd.as_fd(),
                Source::V2 { inotify, .. } => inotify.as_fd(),
            };
            let mut fds = [
                PollFd::new(watched, PollFlags::POLLIN),
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::Error::EINTR) => continue,
                Err(err) => {
                    tracing::warn!(%err, cgroup = %dir.display(), "OOM watcher poll failed");
                    return;
                }
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if stop_ready {
            return;
        }
        if !watch_ready {
            continue;
        }
        match &mut source {
            Source::V1 { eventfd, .. } => {
                if eventfd.read().is_err() {
                    continue;
                }
                // Removal of the cgroup also signals the eventfd.
                if !dir.join("cgroup.event_control").exists() {
                    return;
                }
                let oom_kills = read_oom_control(dir)
                    .ok()
                    .flatten()
                    .and_then(|o| o.oom_kill);
                on_oom(OomEvent {
                    cgroup: dir.to_path_buf(),
                    oom_kills,
                });
            }
            Source::V2 {
                inotify,
                events_file,
                last_oom,
                last_kill,
            } => {
                let events = match inotify.read_events() {
                    Ok(e) => e,
                    Err(nix::Error::EAGAIN) => continue,
                    Err(_) => return,
                };
                let gone = events
                    .iter()
                    .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED));
                match read_memory_events_file(events_file) {
                    Ok(Some(now)) => {
                        if now.oom > *last_oom || now.oom_kill > *last_kill {
                            *last_oom = now.oom;
                            *last_kill = now.oom_kill;
                            on_oom(OomEvent {
                                cgroup: dir.to_path_buf(),
                                oom_kills: Some(now.oom_kill),
                            });
                        }
                    }
                    Ok(None) => return,
                    Err(err) => {
                        tracing::warn!(%err, "reading memory.events failed");
                    }
                }
                if gone {
                    return;
                }
            }
        }
    }
}

/// Reads the current v1 `memory.oom_control` `oom_kill` or v2 `memory.events` `oom_kill` of
/// `paths` (a convenience for callers that poll instead of watching).
pub fn oom_kills(paths: &CgroupPaths) -> Result<Option<u64>> {
    if let Some(dir) = paths.controller("memory") {
        return Ok(read_oom_control(dir)?.and_then(|o| o.oom_kill));
    }
    match paths.unified() {
        Some(dir) => Ok(read_memory_events_file(&dir.join("memory.events"))?.map(|e| e.oom_kill)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watcher_is_send_and_sync() {
        fn is<T: Send + Sync>() {}
        is::<OomWatcher>();
    }

    #[test]
    fn missing_memory_cgroup_is_not_found() {
        let t = tempfile::tempdir().unwrap();
        let v1 = CgroupPaths::v1([("memory", t.path().join("gone"))]);
        let err = OomWatcher::spawn(&v1, |_| {}).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::NotFound, "{err}");
        // A directory that is not on cgroupfs is refused before anything is written.
        std::fs::write(t.path().join("memory.oom_control"), "oom_kill 0\n").unwrap();
        let fake = CgroupPaths::v1([("memory", t.path())]);
        let err = OomWatcher::spawn(&fake, |_| {}).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{err}");
        assert!(!t.path().join("cgroup.event_control").exists());
        let v2 = CgroupPaths::v2(t.path().join("gone"));
        let err = OomWatcher::channel(&v2).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::NotFound, "{err}");
        assert!(OomWatcher::spawn(&CgroupPaths::default(), |_| {}).is_err());
    }

    #[test]
    fn v2_watch_fires_on_oom_growth_and_ends_on_removal() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("cg");
        std::fs::create_dir(&dir).unwrap();
        let events = dir.join("memory.events");
        std::fs::write(&events, "low 0\nhigh 0\nmax 1\noom 0\noom_kill 0\n").unwrap();
        let (watcher, rx) = OomWatcher::channel(&CgroupPaths::v2(&dir)).unwrap();
        // A change that is not an OOM does not produce an event.
        std::fs::write(&events, "low 0\nhigh 3\nmax 2\noom 0\noom_kill 0\n").unwrap();
        std::fs::write(&events, "low 0\nhigh 3\nmax 2\noom 1\noom_kill 1\n").unwrap();
        let ev = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(ev.oom_kills, Some(1));
        assert_eq!(ev.cgroup, dir);
        std::fs::remove_file(&events).unwrap();
        // Removal ends the stream.
        assert!(rx.recv_timeout(std::time::Duration::from_secs(10)).is_err());
        drop(watcher);
    }

    #[test]
    fn drop_stops_the_thread() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("memory.events"), "oom 0\noom_kill 0\n").unwrap();
        let (watcher, rx) = OomWatcher::channel(&CgroupPaths::v2(t.path())).unwrap();
        assert!(watcher.is_running());
        drop(watcher);
        assert!(rx.recv().is_err(), "sender dropped with the thread");
    }
}
