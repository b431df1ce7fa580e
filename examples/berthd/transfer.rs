//! The Images service's registry transfers and commit: `Pull` and `Push` stream the
//! library's progress reports to the client, `Commit` makes an image from a container.
//!
//! All three run the engine code the in-process CLI runs ([`crate::engine::transfer`],
//! [`crate::engine::commit`]) on tokio's blocking pool. A transfer's progress callback sends
//! each report into an unbounded channel whose receiver is the response stream (the registry
//! client reports at most every 512 KiB per blob, so the queue stays short even for a slow
//! client, and the transfer never waits for the network to the client). The last message is
//! the result, or the stream ends with the error's status. A client that goes away does not
//! cancel the transfer: it completes, and is audited, as if the client had stayed.
//!
//! # Registry settings and credentials
//! The daemon reaches registries with its own settings ([`Daemon::registry`]: `--auth-file`
//! with its credential helpers, `--certs-dir`, `--hosts-dir`, `--insecure-registry`), as
//! containerd's daemon does. A request may add plain-HTTP hosts and CA files, replace the
//! certificates or hosts directory, tune retries, and carry credentials for the registry of
//! its reference: those are used for that request only, instead of the daemon's, and are
//! never stored, logged or audited. Paths in a request are read by the daemon on its host
//! (like `Import`'s path); a caller of the socket can already run containers with any bind
//! mount, so this gives it nothing new.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use berth::image::progress::{Progress, ProgressEvent};
use berth::image::registry::{
    Credentials, PlatformChoice, PushOptions, PushReport, RegistryOptions,
};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;

use crate::daemon::{Caller, Daemon};
use crate::engine::transfer::{self, PullRequest, PullSummary};
use crate::engine::{self, changes, commit};
use crate::proto::{self, Image, TransferProgress, transfer_progress};
use crate::{blocking, invalid};

/// The response stream of `Pull` and `Push`.
pub type TransferStream = Pin<Box<dyn Stream<Item = Result<TransferProgress, Status>> + Send>>;

type Sender = mpsc::UnboundedSender<Result<TransferProgress, Status>>;

/// Forwards the library's progress reports of one phase into the response stream.
struct Forward {
    tx: Sender,
    phase: &'static str,
}

impl Progress for Forward {
    fn on_progress(&self, e: &ProgressEvent<'_>) {
        // A client that went away no longer reads: the transfer goes on regardless.
        let _ = self.tx.send(Ok(TransferProgress {
            event: Some(transfer_progress::Event::Progress(proto::ProgressEvent {
                phase: self.phase.to_owned(),
                item: e.item.to_owned(),
                kind: e.kind.to_owned(),
                done: e.done,
                total: e.total,
                finished: e.finished,
            })),
        }));
    }
}

/// An absolute path of a request, or InvalidArgument naming `what`.
fn absolute(what: &str, path: &str) -> Result<PathBuf, Status> {
    let p = PathBuf::from(path);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(invalid(format!(
            "{what} {path:?} is not an absolute path (paths are the daemon's)"
        )))
    }
}

/// The daemon's registry settings with a request's on top (see the module docs).
fn registry_options(
    base: &RegistryOptions,
    r: Option<proto::RegistryOptions>,
) -> Result<RegistryOptions, Status> {
    let mut o = base.clone();
    let Some(r) = r else {
        return Ok(o);
    };
    o.plain_http |= r.plain_http;
    o.insecure_hosts.extend(r.insecure_registries);
    for f in &r.ca_files {
        o.ca_files.push(absolute("CA file", f)?);
    }
    if !r.certs_dir.is_empty() {
        o.certs_dir = Some(absolute("certificates directory", &r.certs_dir)?);
    }
    if !r.hosts_dir.is_empty() {
        o.hosts_dir = Some(absolute("hosts directory", &r.hosts_dir)?);
    }
    if r.retries > 0 {
        o.retry.max_attempts = r.retries;
    }
    if r.retry_delay_ms > 0 {
        o.retry.base_delay = Duration::from_millis(r.retry_delay_ms);
    }
    if let Some(c) = r.credentials {
        if c.username.is_empty() {
            return Err(invalid("registry credentials without a user name"));
        }
        o.credentials = Some(Credentials {
            username: c.username,
            password: c.password,
        });
    }
    Ok(o)
}

fn pulled(s: PullSummary) -> TransferProgress {
    let u = s.unpacked.clone().unwrap_or_default();
    TransferProgress {
        event: Some(transfer_progress::Event::Pulled(proto::PullResult {
            image: Some(Image {
                name: s.name,
                digest: s.digest,
                media_type: s.media_type,
                size: s.size,
            }),
            blobs: s.blobs,
            present: s.present,
            downloaded: s.downloaded,
            resumed: s.resumed,
            unpacked: s.unpacked.is_some(),
            streamed: u.streamed,
            applied: u.applied,
            unpacked_present: u.present,
            chain_id: u.chain_id,
        })),
    }
}

fn pushed(r: PushReport) -> TransferProgress {
    TransferProgress {
        event: Some(transfer_progress::Event::Pushed(proto::PushResult {
            reference: r.reference,
            digest: r.digest.map(|d| d.to_string()).unwrap_or_default(),
            uploaded: r.uploaded as u64,
            chunked: r.chunked as u64,
            mounted: r.mounted as u64,
            existing: r.existing as u64,
            manifests: r.manifests as u64,
            resumed: r.resumed as u64,
            restarted: r.restarted as u64,
        })),
    }
}

/// Audits a request refused before its work began, and returns the refusal.
fn refused(d: &Daemon, who: Caller, operation: &str, object: &str, e: Status) -> Status {
    let _ = d.audited::<()>(who, operation, object, Err(e.clone()));
    e
}

/// The platform choice, snapshotter and registry options of a pull request (validated).
fn pull_settings(
    d: &Daemon,
    r: &mut proto::PullImageRequest,
) -> Result<(PlatformChoice, String, RegistryOptions), Status> {
    if r.reference.is_empty() {
        return Err(invalid("empty image reference"));
    }
    let platform = (!r.platform.is_empty()).then_some(r.platform.as_str());
    let platform = transfer::platform_choice(platform, r.all_platforms)
        .map_err(|e| invalid(format!("{e:#}")))?;
    let snapshotter = match r.snapshotter.as_str() {
        "" => "overlay".to_owned(),
        s if engine::SNAPSHOTTERS.contains(&s) => s.to_owned(),
        other => {
            return Err(invalid(format!(
                "unknown snapshotter {other:?} ({})",
                engine::SNAPSHOTTERS.join(" or ")
            )));
        }
    };
    let registry = registry_options(&d.registry, r.registry.take())?;
    Ok((platform, snapshotter, registry))
}

/// `Images.Pull`.
pub fn pull(
    d: Arc<Daemon>,
    who: Caller,
    mut r: proto::PullImageRequest,
) -> Result<TransferStream, Status> {
    const OP: &str = "images.pull";
    let reference = r.reference.clone();
    let (platform, snapshotter, registry) = match pull_settings(&d, &mut r) {
        Ok(v) => v,
        Err(e) => return Err(refused(&d, who, OP, &reference, e)),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let root = d.root.clone();
        let progress = tx.clone();
        let name = reference.clone();
        let result = blocking(move || {
            let store = engine::open_store(&root)?;
            let req = PullRequest {
                reference: &name,
                registry,
                platform,
                unpack: !r.no_unpack,
                snapshotter: &snapshotter,
                max_concurrent: r.max_concurrent as usize,
            };
            let download = Forward {
                tx: progress.clone(),
                phase: "download",
            };
            let unpack = Forward {
                tx: progress,
                phase: "unpack",
            };
            transfer::pull(&root, &store, &req, &download, &unpack)
        })
        .await;
        if let Ok(s) = &result {
            d.event("image-pull", &s.name, s.digest.clone());
        }
        let result = d.audited(who, OP, &reference, result);
        let _ = tx.send(result.map(pulled));
    });
    Ok(Box::pin(
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
    ))
}

/// `Images.Push`.
pub fn push(
    d: Arc<Daemon>,
    who: Caller,
    r: proto::PushImageRequest,
) -> Result<TransferStream, Status> {
    const OP: &str = "images.push";
    let object = if r.target.is_empty() || r.target == r.reference {
        r.reference.clone()
    } else {
        format!("{} -> {}", r.reference, r.target)
    };
    let checked = if r.reference.is_empty() {
        Err(invalid("empty image reference"))
    } else {
        registry_options(&d.registry, r.registry)
    };
    let registry = match checked {
        Ok(v) => v,
        Err(e) => return Err(refused(&d, who, OP, &object, e)),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let root = d.root.clone();
        let progress = tx.clone();
        let (local, target) = (r.reference, r.target);
        let result = blocking(move || {
            let store = engine::open_store(&root)?;
            let upload = Forward {
                tx: progress,
                phase: "upload",
            };
            let opts = PushOptions {
                registry,
                chunk_size: r.chunk_size,
                mount_from: (!r.mount_from.is_empty()).then_some(r.mount_from),
                progress: &upload,
            };
            let target = (!target.is_empty()).then_some(target.as_str());
            transfer::push(&store, &local, target, &opts)
        })
        .await;
        if let Ok(report) = &result {
            let digest = report.digest.as_ref().map(ToString::to_string);
            d.event("image-push", &report.reference, digest.unwrap_or_default());
        }
        let result = d.audited(who, OP, &object, result);
        let _ = tx.send(result.map(pushed));
    });
    Ok(Box::pin(
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
    ))
}

/// `Images.Commit`: serialised with container creation and removal, so the container's
/// snapshot stays while its diff is read.
pub async fn commit(
    d: Arc<Daemon>,
    who: Caller,
    r: proto::CommitImageRequest,
) -> Result<Image, Status> {
    let object = format!("{} -> {}", r.container, r.reference);
    let result = async {
        if r.reference.is_empty() {
            return Err(invalid("empty image reference"));
        }
        let compression = match r.compression.as_str() {
            "" => "gzip",
            c => c,
        };
        let compression =
            commit::parse_compression(compression).map_err(|e| invalid(format!("{e:#}")))?;
        let changes = r
            .changes
            .iter()
            .map(|c| changes::parse(c))
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(|e| invalid(format!("{e:#}")))?;
        let record = crate::containers::find(&d.root, &r.container)?;
        let _serial = d.lifecycle.lock().await;
        let root = d.root.clone();
        blocking(move || {
            let opts = commit::CommitOptions {
                compression,
                message: (!r.message.is_empty()).then_some(r.message.as_str()),
                author: (!r.author.is_empty()).then_some(r.author.as_str()),
                pause: !r.no_pause,
                changes: &changes,
            };
            let image = commit::commit(&root, &record, &r.reference, &opts)?;
            Ok(Image {
                name: image.name,
                digest: image.target.digest.to_string(),
                media_type: image.target.media_type,
                size: image.target.size,
            })
        })
        .await
    }
    .await;
    if let Ok(image) = &result {
        d.event("image-commit", &image.name, image.digest.clone());
    }
    d.audited(who, "images.commit", &object, result)
}
