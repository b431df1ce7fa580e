//! The state directory: `<root>/<id>/{state.json, config.json, start.sock}`.
//!
//! `state.json` holds what the runtime recorded ([`ContainerState`]); the
//! live status is derived when reading it: a recorded pid is alive only if
//! `/proc/<pid>/stat` shows the same start time and the process is not a
//! zombie; a `created` container whose start socket is gone has been
//! started (`start` removes the socket before releasing the init, so it
//! need not rewrite the state file), and a frozen cgroup means `paused`.
//! This makes the state correct from any process, long after the one that
//! created the container exited.
//!
//! Operations on one container are serialised with `flock` on the state
//! directory itself (no lock file to create and remove per container); the
//! state file is replaced atomically (write + rename), so readers that
//! take no lock never see a torn file. Nothing is fsynced: the state lives
//! in a runtime directory (`/run`, a tmpfs on a normal host) that does not
//! survive a reboot, and neither do the containers it describes. This
//! module is public (the metrics crate and front ends read it); nothing
//! here mutates a container except through [`crate::Runtime`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroups::CgroupPaths;
use crate::error::{Error, Result};

/// The default state root.
pub const DEFAULT_ROOT: &str = "/run/berth";

/// The OCI runtime-spec version this runtime reports.
pub const OCI_VERSION: &str = "1.2.0";

/// A container's lifecycle status (OCI names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `create` is running.
    Creating,
    /// Created; the user process has not started.
    Created,
    /// The user process runs.
    Running,
    /// The container's processes are frozen.
    Paused,
    /// The init process has exited.
    Stopped,
}

impl Status {
    /// The OCI name (`created`, `running`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The OCI runtime-spec `state` (oci-spec's `State` has no `paused`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    /// Runtime-spec version.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Live status.
    pub status: Status,
    /// Init pid, absent once stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
}

/// What `state.json` records about a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// Runtime-spec version.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Status (the live status when returned by [`read_state`]).
    pub status: Status,
    /// The init process's pid (host pid namespace).
    pub pid: Option<i32>,
    /// The init process's start time (clock ticks since boot, `/proc/<pid>/stat` field 22).
    pub pid_start_time: Option<u64>,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The resolved root filesystem.
    pub rootfs: PathBuf,
    /// The spec's annotations.
    pub annotations: BTreeMap<String, String>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The cgroup path relative to the hierarchy roots (`/berth/<id>`).
    pub cgroup_path: String,
    /// Whether the container has its own user namespace.
    pub user_ns: bool,
}

impl ContainerState {
    /// The OCI state (`state` output, hook stdin).
    pub fn to_oci(&self) -> OciState {
        OciState {
            oci_version: self.oci_version.clone(),
            id: self.id.clone(),
            status: self.status,
            pid: if self.status == Status::Stopped {
                None
            } else {
                self.pid
            },
            bundle: self.bundle.clone(),
            annotations: self.annotations.clone(),
        }
    }

    /// Where this container's cgroup lives on this host.
    pub fn cgroup_paths(&self) -> CgroupPaths {
        CgroupPaths::for_relative(&self.cgroup_path)
    }

    /// Re-derives the live status from `/proc`, the start socket in the
    /// container's state directory `dir`, and the freezer.
    pub(crate) fn refresh(&mut self, dir: &StateDir) {
        if matches!(self.status, Status::Creating | Status::Stopped) {
            return;
        }
        let alive = match (self.pid, self.pid_start_time) {
            (Some(pid), Some(start)) => {
                proc_start_time(pid).is_some_and(|(t, zombie)| t == start && !zombie)
            }
            _ => false,
        };
        if !alive {
            self.status = Status::Stopped;
            return;
        }
        if self.status == Status::Created && dir.was_started() {
            self.status = Status::Running;
        }
        if crate::cgroups::Cgroup::load(self.cgroup_path.trim_start_matches('/')).is_frozen() {
            self.status = Status::Paused;
        } else if self.status == Status::Paused {
            self.status = Status::Running;
        }
    }
}

/// Start time and zombie-ness of `pid` from `/proc/<pid>/stat`.
pub(crate) fn proc_start_time(pid: i32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm field may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); starttime is field 22 → index 19.
    let state = fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, matches!(*state, "Z" | "X" | "x")))
}

/// Checks a container id: 1–1024 characters of `[A-Za-z0-9_+.-]`, not `.` or `..`.
pub fn validate_id(id: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("empty");
    }
    if id.len() > 1024 {
        return bad("longer than 1024 bytes");
    }
    if id == "." || id == ".." {
        return bad("'.' and '..' are not ids");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'.' | b'-'))
    {
        return bad("only [A-Za-z0-9_+.-] are allowed");
    }
    Ok(())
}

/// The state directory of one container.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    pub(crate) id: String,
    pub(crate) dir: PathBuf,
}

/// An exclusive lock on a container (its state directory), released on drop.
#[derive(Debug)]
pub(crate) struct ContainerLock {
    _dir: File,
}

impl StateDir {
    pub(crate) fn new(root: &Path, id: &str) -> Result<StateDir> {
        validate_id(id)?;
        Ok(StateDir {
            id: id.to_string(),
            dir: root.join(id),
        })
    }

    pub(crate) fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub(crate) fn config_file(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    pub(crate) fn start_socket(&self) -> PathBuf {
        self.dir.join("start.sock")
    }

    /// Creates the directory (mode 0700); `AlreadyExists` if the id is taken.
    pub(crate) fn create(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists {
                id: self.id.clone(),
            }),
            Err(e) => Err(Error::io("create state dir", &self.dir, e)),
        }
    }

    /// Whether `start` was called: it removes the start socket (see
    /// [`ContainerState::refresh`]).
    pub(crate) fn was_started(&self) -> bool {
        matches!(
            std::fs::symlink_metadata(self.start_socket()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound
        )
    }

    /// Takes the container's lock (blocking): `flock` on the state
    /// directory. `NotFound` if the container is gone, also when it was
    /// deleted while we waited (the directory then has no links left).
    pub(crate) fn lock(&self) -> Result<ContainerLock> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&self.dir)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::NotFound {
                    id: self.id.clone(),
                },
                _ => Error::io("open state dir", &self.dir, e),
            })?;
        loop {
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::io("lock", &self.dir, e));
            }
        }
        let links = dir
            .metadata()
            .map_err(|e| Error::io("lock", &self.dir, e))?
            .nlink();
        if links == 0 {
            return Err(Error::NotFound {
                id: self.id.clone(),
            });
        }
        Ok(ContainerLock { _dir: dir })
    }

    /// Reads the recorded state (not refreshed).
    pub(crate) fn read(&self) -> Result<ContainerState> {
        let path = self.state_file();
        let data = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                id: self.id.clone(),
            },
            _ => Error::io("read", &path, e),
        })?;
        serde_json::from_slice(&data).map_err(|source| Error::StateFile { path, source })
    }

    /// Replaces the state file atomically.
    pub(crate) fn write(&self, st: &ContainerState) -> Result<()> {
        let path = self.state_file();
        let tmp = self.dir.join("state.json.tmp");
        let data = serde_json::to_vec_pretty(st).map_err(|source| Error::StateFile {
            path: path.clone(),
            source,
        })?;
        let mut f = File::create(&tmp).map_err(|e| Error::io("write", &tmp, e))?;
        f.write_all(&data)
            .map_err(|e| Error::io("write", &tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))
    }

    /// Removes the directory and everything in it.
    pub(crate) fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove state dir", &self.dir, e)),
        }
    }
}

/// Reads a container's state with its live status, from any process.
///
/// Errors: [`Error::NotFound`] when there is no such container,
/// [`Error::InvalidId`], [`Error::StateFile`] for a corrupt file.
pub fn read_state(root: &Path, id: &str) -> Result<ContainerState> {
    let dir = StateDir::new(root, id)?;
    let mut st = dir.read()?;
    st.refresh(&dir);
    Ok(st)
}

/// The cgroup directories of a container, for metrics readers.
pub fn cgroup_paths(root: &Path, id: &str) -> Result<CgroupPaths> {
    Ok(StateDir::new(root, id)?.read()?.cgroup_paths())
}

/// The ids of all containers under `root` (sorted). A missing root is empty.
pub fn list(root: &Path) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read state root", root, e)),
    };
    let mut ids = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("read state root", root, e))?;
        if let Some(name) = entry.file_name().to_str()
            && validate_id(name).is_ok()
            && entry.path().join("state.json").exists()
        {
            ids.push(name.to_string());
        }
    }
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(validate_id("abc-1_2.3+x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ä"] {
            assert_eq!(
                validate_id(bad).unwrap_err().kind(),
                crate::ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn own_start_time_is_readable_and_live() {
        let (t, zombie) = proc_start_time(std::process::id() as i32).unwrap();
        assert!(t > 0);
        assert!(!zombie);
        assert!(proc_start_time(i32::MAX).is_none());
    }

    /// The lock is the directory itself: a waiter blocked on it while the
    /// holder deletes the container gets `NotFound` once it has the lock,
    /// not a lock on a removed directory.
    #[test]
    fn lock_waiter_after_delete_gets_not_found() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path(), "c2").unwrap();
        sd.create().unwrap();
        let ino = std::fs::metadata(&sd.dir).unwrap().ino();
        let held = sd.lock().unwrap();
        let waiter = {
            let sd = sd.clone();
            std::thread::spawn(move || sd.lock().map(|_| ()))
        };
        // Wait until the waiter is blocked in flock (a "->" line in /proc/locks).
        let blocked = format!(":{ino} ");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !std::fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .any(|l| l.contains(" -> ") && l.contains(&blocked))
        {
            assert!(std::time::Instant::now() < deadline, "waiter never blocked");
            std::thread::yield_now();
        }
        sd.remove().unwrap();
        drop(held);
        let err = waiter.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn state_round_trips_and_dead_pid_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path(), "c1").unwrap();
        sd.create().unwrap();
        assert_eq!(
            sd.create().unwrap_err().kind(),
            crate::ErrorKind::AlreadyExists
        );
        let _lock = sd.lock().unwrap();
        let st = ContainerState {
            oci_version: OCI_VERSION.into(),
            id: "c1".into(),
            status: Status::Running,
            pid: Some(i32::MAX),
            pid_start_time: Some(1),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            annotations: BTreeMap::new(),
            created: 0,
            cgroup_path: "/berth/c1-unit-test-none".into(),
            user_ns: false,
        };
        sd.write(&st).unwrap();
        assert_eq!(sd.read().unwrap(), st);
        let live = read_state(dir.path(), "c1").unwrap();
        assert_eq!(live.status, Status::Stopped);
        assert_eq!(live.to_oci().pid, None);
        assert_eq!(list(dir.path()).unwrap(), vec!["c1".to_string()]);
        assert_eq!(
            read_state(dir.path(), "nope").unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
    }
}
