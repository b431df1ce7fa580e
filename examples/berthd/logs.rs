//! `Logs`: a container's log (its init's stdout and stderr), whole or followed.
//!
//! One thread per call reads the log file and sends it in chunks. With `follow` it then keeps
//! sending what is appended ([`crate::follow::follow`]: inotify, no polling) until the output
//! is complete:
//! - for an init this daemon started, when the reaper has its exit code and, for an attached
//!   start, its output pumps have drained (`Daemon::attached_output`), since they append to
//!   the log after the init may have exited;
//! - for any other container (started by an earlier daemon or by the in-process CLI, whose
//!   init writes the log itself), when a pidfd of its init says it exited.
//!
//! A task waits for the first case (or for the client to go away, or the thread to end) and
//! then hangs up a pipe the thread polls, so the thread never outlives the call's interest.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::containers::find;
use crate::daemon::Daemon;
use crate::engine::records;
use crate::follow::{self, InitWatch};
use crate::proto::{LogChunk, LogsRequest};

/// The response stream of `Logs`.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk, Status>> + Send>>;

/// `Logs` (see the module docs).
pub async fn logs(
    d: Arc<Daemon>,
    req: Request<LogsRequest>,
) -> Result<Response<LogStream>, Status> {
    let r = req.into_inner();
    let record = find(&d.root, &r.id)?;
    let path = records::log_path(&d.root, &record.id);
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Status::failed_precondition(format!(
                "container {} has no log",
                record.id
            )));
        }
        Err(e) => return Err(Status::internal(format!("opening {}: {e}", path.display()))),
    };
    let (tx, rx) = mpsc::channel(16);
    // The daemon's own inits: their end is known here (the thread watches the others).
    let exit = d
        .exits
        .lock()
        .ok()
        .and_then(|e| e.get(&record.id).map(watch::Sender::subscribe));
    let output = d
        .attached_output
        .lock()
        .ok()
        .and_then(|o| o.get(&record.id).map(watch::Sender::subscribe));
    let own = exit.is_some();
    // Hung up when the follow is over (see the module docs); none without `follow`.
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let end = if r.follow {
        let (end_r, end_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Status::internal(format!("pipe2: {e}")))?;
        let client = tx.clone();
        tokio::spawn(async move {
            let complete = async {
                match exit {
                    Some(mut rx) => {
                        let _ = rx.wait_for(Option::is_some).await;
                    }
                    None => std::future::pending::<()>().await,
                }
                if let Some(mut rx) = output {
                    let _ = rx.wait_for(|open| !open).await;
                }
            };
            tokio::select! {
                () = complete => {}
                () = client.closed() => {}
                _ = done_rx => {}
            }
            drop(end_w);
        });
        Some(end_r)
    } else {
        None
    };
    let runtime_root = record.runtime_root.clone();
    let id = record.id.clone();
    std::thread::spawn(move || {
        let mut send = |chunk: &[u8]| {
            tx.blocking_send(Ok(LogChunk {
                data: chunk.to_vec(),
            }))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
        };
        let init = if r.follow && !own {
            follow::watch_init(&runtime_root, &id)
        } else {
            InitWatch::Stopped
        };
        let mut ends: Vec<_> = end.iter().map(AsFd::as_fd).collect();
        if let InitWatch::Pidfd(fd) = &init {
            ends.push(fd.as_fd());
        }
        let mut stopped = || follow::init_stopped(&runtime_root, &id);
        let ended: Option<&mut dyn FnMut() -> bool> = match &init {
            InitWatch::Poll => Some(&mut stopped),
            _ => None,
        };
        let result = if r.follow && (own || !matches!(init, InitWatch::Stopped)) {
            follow::follow(&mut file, &ends, ended, &mut send)
        } else {
            follow::copy_to_end(&mut file, &mut send)
        };
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(Status::internal(format!("reading the log: {e}"))));
            }
        }
        drop(done_tx);
    });
    Ok(Response::new(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}
