//! `berth --address SOCKET image pull|push` and `commit`: the registry transfers and commits
//! done by a `berthd` (`Images.Pull`, `Images.Push`, `Images.Commit`), printed as the
//! in-process commands print them.
//!
//! The daemon streams the library's progress reports; they are rendered here with the same
//! bars ([`crate::progress::Bars`]) as a local pull or push, and the final counts with the same
//! summary lines ([`crate::registry::print_pull`], [`crate::registry::print_push`]). A transfer
//! is the daemon's once asked for: interrupting this client (Ctrl-C) stops the display, not the
//! pull or push, which completes in the daemon (and is audited there).
//!
//! # Registry settings and credentials
//! The daemon pulls and pushes with its own settings (auth file and credential helpers,
//! certificates and hosts directories, plain-HTTP hosts), as containerd's daemon does. What
//! the command line names is passed along for the one request: `--plain-http`,
//! `--insecure-registry`, `--retries`, `--retry-delay-ms`, and the paths of `--ca-file`,
//! `--certs-dir` and `--hosts-dir` (made absolute here; the daemon reads them on its host).
//! Credentials work as with docker: when our auth file (`--auth-file`, else the default one,
//! with its credential helpers) has credentials for the registry of the reference (of the
//! push's target), they are sent with the request and the daemon uses them instead of its
//! own, for that request only. Without any, the daemon's own apply. A credential helper of
//! ours that fails is reported as a warning and the daemon's credentials are used.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use berth::image::progress::{Progress, ProgressEvent};
use berth::image::registry::{self, PushReport, RegistryOptions};

use crate::engine::transfer::{PullSummary, UnpackSummary};
use crate::progress::Bars;
use crate::registry::{PullArgs, PushArgs, RegistryArgs, print_pull, print_push};
use crate::remote::proto::images_client::ImagesClient;
use crate::remote::proto::{self, transfer_progress};
use crate::remote::{connect, status};

fn absolute(path: &Path) -> Result<String> {
    let abs = std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
    Ok(abs.to_string_lossy().into_owned())
}

fn absolute_opt(path: Option<&PathBuf>) -> Result<String> {
    path.map(|p| absolute(p))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Our credentials for the registry of `reference`, if our auth file (or its helper) has any.
fn our_credentials(args: &RegistryArgs, reference: &str) -> Option<proto::RegistryCredentials> {
    let parsed = registry::parse_reference(reference).ok()?;
    let ours = RegistryOptions {
        auth_file: args.auth_file.clone(),
        ..RegistryOptions::default()
    };
    match ours.credentials_for(parsed.domain()) {
        Ok(found) => found.map(|c| proto::RegistryCredentials {
            username: c.username,
            password: c.password,
        }),
        Err(e) => {
            eprintln!(
                "berth: warning: our credentials for {}: {e}; the daemon's apply",
                parsed.domain()
            );
            None
        }
    }
}

/// The registry options of a request (see the module docs); `reference` names the registry
/// whose credentials of ours are sent.
fn request_options(args: &RegistryArgs, reference: &str) -> Result<proto::RegistryOptions> {
    Ok(proto::RegistryOptions {
        plain_http: args.plain_http,
        insecure_registries: args.insecure.clone(),
        ca_files: args
            .ca_files
            .iter()
            .map(|p| absolute(p))
            .collect::<Result<_>>()?,
        certs_dir: absolute_opt(args.certs_dir.as_ref())?,
        hosts_dir: absolute_opt(args.hosts_dir.as_ref())?,
        retries: args.retries,
        retry_delay_ms: args.retry_delay_ms,
        credentials: our_credentials(args, reference),
    })
}

/// Renders one streamed progress report with the local bars.
fn render(bars: &Bars, p: &proto::ProgressEvent) {
    bars.on_progress(&ProgressEvent {
        item: &p.item,
        kind: &p.kind,
        done: p.done,
        total: p.total,
        finished: p.finished,
    });
}

/// Reads a transfer's stream to its end: progress rendered, the result returned.
async fn follow(
    stream: &mut tonic::Streaming<proto::TransferProgress>,
    bars: &Bars,
) -> Result<Option<transfer_progress::Event>> {
    let mut last = None;
    while let Some(m) = stream.message().await.map_err(status)? {
        match m.event {
            Some(transfer_progress::Event::Progress(p)) => render(bars, &p),
            Some(other) => last = Some(other),
            None => {}
        }
    }
    Ok(last)
}

/// `berth image pull` through the daemon.
pub async fn pull(socket: &Path, args: &PullArgs) -> Result<()> {
    let req = proto::PullImageRequest {
        reference: args.reference.clone(),
        registry: Some(request_options(&args.registry, &args.reference)?),
        platform: args.platform.clone().unwrap_or_default(),
        all_platforms: args.all_platforms,
        no_unpack: args.no_unpack,
        snapshotter: args.snapshotter.clone(),
        max_concurrent: u32::try_from(args.max_concurrent).unwrap_or(u32::MAX),
    };
    let mut c = ImagesClient::new(connect(socket).await?);
    let bars = Bars::new(args.quiet);
    let started = Instant::now();
    let mut stream = c.pull(req).await.map_err(status)?.into_inner();
    let Some(transfer_progress::Event::Pulled(r)) = follow(&mut stream, &bars).await? else {
        anyhow::bail!("the daemon ended the pull without its result");
    };
    let image = r.image.unwrap_or_default();
    let summary = PullSummary {
        name: image.name,
        digest: image.digest,
        media_type: image.media_type,
        size: image.size,
        blobs: r.blobs,
        present: r.present,
        downloaded: r.downloaded,
        resumed: r.resumed,
        unpacked: r.unpacked.then_some(UnpackSummary {
            streamed: r.streamed,
            applied: r.applied,
            present: r.unpacked_present,
            chain_id: r.chain_id,
        }),
    };
    print_pull(&summary, args.quiet, started);
    Ok(())
}

/// `berth image push` through the daemon.
pub async fn push(socket: &Path, args: &PushArgs) -> Result<()> {
    let target = args.target.as_deref().unwrap_or(&args.reference);
    let req = proto::PushImageRequest {
        reference: args.reference.clone(),
        target: args.target.clone().unwrap_or_default(),
        registry: Some(request_options(&args.registry, target)?),
        mount_from: args.mount_from.clone().unwrap_or_default(),
        chunk_size: args.chunk_mib.max(1) << 20,
    };
    let mut c = ImagesClient::new(connect(socket).await?);
    let bars = Bars::new(args.quiet);
    let mut stream = c.push(req).await.map_err(status)?.into_inner();
    let Some(transfer_progress::Event::Pushed(r)) = follow(&mut stream, &bars).await? else {
        anyhow::bail!("the daemon ended the push without its result");
    };
    let digest = if r.digest.is_empty() {
        None
    } else {
        Some(
            r.digest
                .parse()
                .with_context(|| format!("the pushed digest {:?}", r.digest))?,
        )
    };
    let report = PushReport {
        reference: r.reference,
        digest,
        uploaded: r.uploaded as usize,
        mounted: r.mounted as usize,
        existing: r.existing as usize,
        chunked: r.chunked as usize,
        manifests: r.manifests as usize,
        resumed: r.resumed as usize,
        restarted: r.restarted as usize,
    };
    print_push(&report, args.quiet);
    Ok(())
}

/// `berth commit` through the daemon.
pub async fn commit(socket: &Path, req: proto::CommitImageRequest) -> Result<()> {
    let mut c = ImagesClient::new(connect(socket).await?);
    let image = c.commit(req).await.map_err(status)?.into_inner();
    println!("{} {}", image.name, image.digest);
    Ok(())
}
