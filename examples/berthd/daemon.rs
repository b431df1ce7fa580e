//! The daemon's shared state: roots, the audit log, the event bus, and the reaper.
//!
//! The daemon is a child subreaper, so besides the inits and exec processes it creates,
//! orphans from inside its containers' process trees can become its children. One reaper
//! collects every child (`waitpid(-1, WNOHANG)` on SIGCHLD and on a 1 s tick) and hands the
//! statuses of the processes it tracks to their waiters. The runtime crate waits for its own
//! short-lived setup children inside `create`/`exec`/`start`/`delete`; those calls and the
//! reaper therefore hold [`Daemon::fork_lock`], so the reaper never steals their statuses,
//! and a pid is registered before the lock is released, so no exit is missed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch};
use tonic::{Request, Status};

use crate::audit::{AuditLog, Entry};
use crate::proto::Event;

/// What a tracked child is.
#[derive(Debug)]
pub enum Tracked {
    /// A container's init: its exit code goes to the container's watch channel.
    Init(String),
    /// An exec'd process: its exit code goes to the one waiter.
    Exec(tokio::sync::oneshot::Sender<i32>),
}

/// State shared by all services.
#[derive(Debug)]
pub struct Daemon {
    /// The berth root (content, snapshots, containers).
    pub root: PathBuf,
    /// The runtime's state root.
    pub runtime_root: PathBuf,
    /// The audit log.
    pub audit: AuditLog,
    /// Lifecycle and OOM events.
    pub events: broadcast::Sender<Event>,
    /// Held around runtime calls that fork and wait, and by the reaper.
    pub fork_lock: Mutex<()>,
    /// Children the reaper reports, by pid.
    pub tracked: Mutex<HashMap<i32, Tracked>>,
    /// Exit codes of containers whose init we created (None while it runs).
    pub exits: Mutex<HashMap<String, watch::Sender<Option<i32>>>>,
    /// Whether the output of an attached start is still being appended to the container's
    /// log (true until both pipes or the terminal are drained), by id: a followed log is
    /// complete once the init has exited and this is false.
    pub attached_output: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// OOM watchers of running containers, by id.
    pub oom: Mutex<HashMap<String, berth::metrics::OomWatcher>>,
    /// Serialises container creation, start and removal (names are unique), and commits.
    pub lifecycle: tokio::sync::Mutex<()>,
    /// How pulls and pushes reach registries unless a request says otherwise (the daemon's
    /// auth file and credential helpers, certificates and hosts directories, plain-HTTP
    /// hosts; see [`crate::transfer`]).
    pub registry: berth::image::registry::RegistryOptions,
}

/// Who called: SO_PEERCRED of the unix connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller {
    /// Uid.
    pub uid: Option<u32>,
    /// Pid.
    pub pid: Option<i32>,
}

/// The caller of `req` from tonic's unix-socket connect info.
pub fn caller<T>(req: &Request<T>) -> Caller {
    let info = req
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>();
    let cred = info.and_then(|i| i.peer_cred);
    Caller {
        uid: cred.map(|c| c.uid()),
        pid: cred.and_then(|c| c.pid()),
    }
}

/// Exit code of a wait status: the code, or 128 + the signal.
pub fn exit_code(status: libc::c_int) -> Option<i32> {
    if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Some(128 + libc::WTERMSIG(status))
    } else {
        None
    }
}

impl Daemon {
    /// Publishes an event (dropped when nobody listens).
    pub fn event(&self, kind: &str, object: &str, detail: String) {
        let _ = self.events.send(Event {
            time: crate::now_millis() / 1000,
            kind: kind.to_owned(),
            object: object.to_owned(),
            detail,
        });
    }

    /// Appends the audit line of a mutating call and passes its result through.
    pub fn audited<T>(
        &self,
        caller: Caller,
        operation: &str,
        object: &str,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(s) => format!("{:?}: {}", s.code(), s.message()),
        };
        self.audit.append(&Entry {
            time: crate::rfc3339_millis(crate::now_millis()),
            uid: caller.uid,
            pid: caller.pid,
            operation,
            object,
            result: outcome,
        });
        result
    }

    /// Reaps every exited child and reports the tracked ones.
    pub fn reap(&self) {
        let Ok(_guard) = self.fork_lock.lock() else {
            return;
        };
        loop {
            let mut st = 0;
            // SAFETY: waitpid for any child with a valid status pointer, non-blocking.
            let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            let Some(code) = exit_code(st) else { continue };
            let tracked = self.tracked.lock().ok().and_then(|mut t| t.remove(&pid));
            match tracked {
                Some(Tracked::Init(id)) => {
                    if let Ok(exits) = self.exits.lock()
                        && let Some(tx) = exits.get(&id)
                    {
                        tx.send_replace(Some(code));
                    }
                    if let Ok(mut oom) = self.oom.lock() {
                        oom.remove(&id);
                    }
                    self.event("container-exit", &id, format!("exit code {code}"));
                }
                Some(Tracked::Exec(tx)) => {
                    let _ = tx.send(code);
                }
                None => {}
            }
        }
    }
}

/// Runs the reaper until the process ends.
pub async fn reaper(daemon: Arc<Daemon>) {
    let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("berthd: SIGCHLD handler: {e}; reaping every second only");
            None
        }
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        match sigchld.as_mut() {
            Some(s) => {
                tokio::select! {
                    _ = s.recv() => {}
                    _ = tick.tick() => {}
                }
            }
            None => {
                tick.tick().await;
            }
        }
        let d = daemon.clone();
        let _ = tokio::task::spawn_blocking(move || d.reap()).await;
    }
}
