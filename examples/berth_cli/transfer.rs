//! Registry transfers as every front end does them: `berth image pull|push` in-process and
//! berthd's `Images.Pull`/`Images.Push` call these, so both resolve options, pick the
//! platform, pull with or without unpacking and summarise the result the same way.
//!
//! The work is the registry client's (`berth::image::registry`); what lives here is only the
//! composition: the default certificates directory, the platform choice of the command-line
//! flags, the pull that unpacks into the named snapshotter (layers applied while they
//! download), and [`PullSummary`], the numbers the front ends print.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use berth::image::content::ContentStore;
use berth::image::progress::Progress;
use berth::image::registry::{
    self, PlatformChoice, PullOptions, PullReport, PushOptions, PushReport, RegistryOptions,
};
use berth::image::unpack::UnpackOptions;
use berth::oci::Platform;

/// The docker-style certificates directory used when none is named (when it exists).
pub const DOCKER_CERTS_DIR: &str = "/etc/docker/certs.d";

/// [`DOCKER_CERTS_DIR`] when it is a directory on this host.
pub fn default_certs_dir() -> Option<PathBuf> {
    let dir = Path::new(DOCKER_CERTS_DIR);
    dir.is_dir().then(|| dir.to_path_buf())
}

/// The platform choice of `--platform P` / `--all-platforms` (neither: the host's).
///
/// # Errors
/// A platform that does not parse (`os/arch[/variant]`).
pub fn platform_choice(platform: Option<&str>, all: bool) -> Result<PlatformChoice> {
    Ok(match (platform, all) {
        (_, true) => PlatformChoice::All,
        (Some(p), false) => {
            PlatformChoice::Only(Platform::parse(p).with_context(|| format!("platform {p:?}"))?)
        }
        (None, false) => PlatformChoice::Host,
    })
}

/// What [`pull`] needs.
#[derive(Debug)]
pub struct PullRequest<'a> {
    /// The reference to pull.
    pub reference: &'a str,
    /// How to reach the registry.
    pub registry: RegistryOptions,
    /// The platform(s) to pull; [`PlatformChoice::All`] never unpacks.
    pub platform: PlatformChoice,
    /// Unpack into `snapshotter` (layers applied while they download).
    pub unpack: bool,
    /// The snapshotter to unpack into (`overlay`, `native`).
    pub snapshotter: &'a str,
    /// Most layers downloaded at once (`0`: the client's default).
    pub max_concurrent: usize,
}

/// What a pull did, in the numbers the front ends print (the daemon sends them to its client).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullSummary {
    /// The name recorded.
    pub name: String,
    /// The digest of its target.
    pub digest: String,
    /// The media type of its target (manifest or index).
    pub media_type: String,
    /// The size of its target.
    pub size: u64,
    /// Distinct blobs the image references.
    pub blobs: u64,
    /// Blobs already stored.
    pub present: u64,
    /// Bytes downloaded.
    pub downloaded: u64,
    /// Layer downloads that resumed a partial ingest.
    pub resumed: u64,
    /// The unpack, when there was one.
    pub unpacked: Option<UnpackSummary>,
}

/// The unpack part of a [`PullSummary`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackSummary {
    /// Layers applied while they downloaded.
    pub streamed: u64,
    /// Layers applied after the downloads.
    pub applied: u64,
    /// Layers that were unpacked already.
    pub present: u64,
    /// The top chainID ("" for an image without layers).
    pub chain_id: String,
}

fn summary(report: &PullReport, unpacked: Option<UnpackSummary>) -> PullSummary {
    PullSummary {
        name: report.name.clone(),
        digest: report.target.digest.to_string(),
        media_type: report.target.media_type.clone(),
        size: report.target.size,
        blobs: report.blobs as u64,
        present: report.present as u64,
        downloaded: report.downloaded,
        resumed: report.resumed.len() as u64,
        unpacked,
    }
}

/// Pulls `req.reference` into `store` and, with `req.unpack` (and a single platform), unpacks
/// it into the snapshotter under `root` as it downloads. `progress` receives the downloads'
/// reports, `unpack_progress` the unpack's (both may be the same renderer).
///
/// # Errors
/// The registry client's errors (a [`registry::Error`] in the chain, with its kind), the
/// snapshotter's; the context names the reference.
pub fn pull(
    root: &Path,
    store: &ContentStore,
    req: &PullRequest<'_>,
    progress: &dyn Progress,
    unpack_progress: &dyn Progress,
) -> Result<PullSummary> {
    let opts = PullOptions {
        registry: req.registry.clone(),
        platform: req.platform.clone(),
        progress,
        max_concurrent: req.max_concurrent,
    };
    let context = || format!("pulling {}", req.reference);
    if !req.unpack || matches!(req.platform, PlatformChoice::All) {
        let report = registry::pull(store, req.reference, &opts).with_context(context)?;
        return Ok(summary(&report, None));
    }
    let sn = super::open_snapshotter(root, req.snapshotter)?;
    let mut uo = UnpackOptions::new(req.snapshotter);
    uo.progress = unpack_progress;
    let (report, unpacked) =
        registry::pull_and_unpack(store, sn.as_ref(), req.reference, &opts, &uo)
            .with_context(context)?;
    let streamed = report.streamed as u64;
    let unpack = UnpackSummary {
        streamed,
        applied: unpacked.applied() as u64,
        present: (unpacked.skipped() as u64).saturating_sub(streamed),
        chain_id: unpacked.chain_id.map(|c| c.to_string()).unwrap_or_default(),
    };
    Ok(summary(&report, Some(unpack)))
}

/// Pushes the image `local` from `store` to `target` (default: the same reference).
///
/// # Errors
/// The registry client's errors; the context names the image.
pub fn push(
    store: &ContentStore,
    local: &str,
    target: Option<&str>,
    opts: &PushOptions<'_>,
) -> Result<PushReport> {
    registry::push(store, local, target, opts).with_context(|| format!("pushing {local}"))
}
