//! One layer: lock its chainID, prepare an active snapshot, apply the verified blob into it,
//! and hand it to the committer — or clean everything up on failure.

use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use berth_oci::{Compression, Digest, VerifyingReader, verification_error};
use berth_snapshot::{
    DirLayout, ErrorKind as SnErrorKind, Kind, LABEL_SNAPSHOT_REF, Opts, Snapshotter, TempMount,
};

use super::error::{Error, Result};
use super::lock::ChainLock;
use crate::apply::{self, ApplyOptions, ApplyStats};
use crate::content::ContentStore;
use crate::metadata::Descriptor;
use crate::progress::{Progress, ProgressReader};

/// Read size from the blob file: large reads keep the hashing and decoding loops tight.
const BLOB_BUFFER: usize = 1 << 20;
/// Compressed layers from this size on are decompressed on their own thread
/// ([`super::pipeline`]).
const PIPELINE_MIN: u64 = 4 << 20;

/// What the workers need to know about one layer.
#[derive(Debug, Clone)]
pub(crate) struct LayerJob {
    /// Position in the manifest (0 = bottom).
    pub index: usize,
    /// The compressed blob.
    pub desc: Descriptor,
    /// Its compression (from the media type).
    pub compression: Compression,
    /// The diffID the config declares.
    pub diff_id: Digest,
    /// The chainID of layers `0..=index`.
    pub chain_id: Digest,
    /// The chainID of layers `0..index` (`None` for the bottom layer).
    pub parent_chain: Option<Digest>,
}

/// Shared, read-only context of one unpack.
pub(crate) struct Ctx<'a> {
    pub store: &'a ContentStore,
    pub sn: &'a dyn Snapshotter,
    pub progress: &'a dyn Progress,
    pub lock_dir: &'a Path,
    pub mount_dir: &'a Path,
    pub cancel: &'a AtomicBool,
}

/// An active snapshot that is removed on drop unless [`Active::disarm`]ed.
pub(crate) struct Active<'a> {
    sn: &'a dyn Snapshotter,
    key: Option<String>,
}

impl<'a> Active<'a> {
    pub(crate) fn key(&self) -> &str {
        self.key.as_deref().unwrap_or_default()
    }

    /// Removes the snapshot now, reporting errors.
    pub(crate) fn remove(mut self) -> Result<()> {
        match self.key.take() {
            Some(k) => self
                .sn
                .remove(&k)
                .map_err(|e| Error::snapshot("remove", k, e)),
            None => Ok(()),
        }
    }

    /// The snapshot was committed (its key no longer exists): nothing to remove.
    pub(crate) fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take()
            && let Err(e) = self.sn.remove(&k)
            && e.kind() != SnErrorKind::NotFound
        {
            tracing::warn!(key = %k, error = %e, "cannot remove unpack snapshot");
        }
    }
}

/// The result of extracting one layer.
pub(crate) enum Extracted<'a> {
    /// The chain is already committed (by an earlier or a concurrent unpack).
    Present,
    /// Applied into `active`, verified, ready to commit under `lock`.
    Applied {
        active: Active<'a>,
        stats: ApplyStats,
        lock: ChainLock,
    },
    /// The layer hardlinks to files of lower layers: it must be applied on its mounted parent.
    NeedsParent,
}

impl std::fmt::Debug for Extracted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Extracted::Present => f.write_str("Present"),
            Extracted::Applied { stats, .. } => write!(f, "Applied({})", stats.diff_id),
            Extracted::NeedsParent => f.write_str("NeedsParent"),
        }
    }
}

/// A reader that fails once the unpack is cancelled, so a worker stops mid-layer.
struct CancelReader<'c, R> {
    inner: R,
    cancel: &'c AtomicBool,
}

impl<R: Read> Read for CancelReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            // Not `Interrupted`: readers retry those, and this must stop them.
            return Err(io::Error::other("unpack cancelled"));
        }
        self.inner.read(buf)
    }
}

fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// How a layer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Prepared without a parent, rebased at commit (parallel unpack).
    Detached,
    /// Prepared on the parent chain; written through the writable directory when the backend
    /// has one, else mounted.
    OnParent,
    /// Prepared on the parent chain and always mounted (full merged view, for layers that
    /// hardlink into lower layers).
    Mounted,
}

/// Locks the chain, and unless it already exists, prepares and fills an active snapshot.
pub(crate) fn extract<'a>(ctx: &Ctx<'a>, job: &LayerJob, mode: Mode) -> Result<Extracted<'a>> {
    let lock = ChainLock::acquire(ctx.lock_dir, &job.chain_id)?;
    let chain = job.chain_id.to_string();
    match ctx.sn.stat(&chain) {
        Ok(info) if info.kind == Kind::Committed => return Ok(Extracted::Present),
        Ok(_) => {
            return Err(Error::snapshot(
                "stat",
                chain.clone(),
                snapshot_name_taken(&chain),
            ));
        }
        Err(e) if e.kind() == SnErrorKind::NotFound => {}
        Err(e) => return Err(Error::snapshot("stat", chain, e)),
    }
    if ctx.cancel.load(Ordering::Relaxed) {
        return Err(Error::Cancelled {
            digest: job.desc.digest.clone(),
        });
    }
    let parent = match (mode, &job.parent_chain) {
        (Mode::Detached, _) | (_, None) => String::new(),
        (_, Some(p)) => p.to_string(),
    };
    let labels = Opts::new().with_label(LABEL_SNAPSHOT_REF, chain.clone());
    let mut attempt = 0;
    let (active, mounts) = loop {
        let key = berth_snapshot::unpack_key(&random_suffix(), &chain);
        match ctx.sn.prepare(&key, &parent, &labels) {
            Ok(m) => {
                break (
                    Active {
                        sn: ctx.sn,
                        key: Some(key),
                    },
                    m,
                );
            }
            Err(e) if e.kind() == SnErrorKind::AlreadyExists && attempt < 3 => attempt += 1,
            Err(e) => return Err(Error::snapshot("prepare", key, e)),
        }
    };
    let writable = if mode == Mode::Mounted {
        None
    } else {
        ctx.sn
            .writable_dir(active.key())
            .map_err(|e| Error::snapshot("writable_dir", active.key(), e))?
    };
    let stats = match writable {
        Some(dir) => {
            // Overlay form only where something may lie below: a bottom layer has nothing to
            // hide, and plain removals keep its directory a clean tree for bind views.
            let overlay = dir.layout == DirLayout::OverlayUpper && job.index > 0;
            apply_blob(ctx, job, &dir.path, overlay)
        }
        None => {
            let mount = TempMount::new(&mounts, ctx.mount_dir)
                .map_err(|e| Error::snapshot("mount", active.key(), e))?;
            let res = apply_blob(ctx, job, mount.path(), false);
            mount
                .finish()
                .map_err(|e| Error::snapshot("unmount", active.key(), e))?;
            res
        }
    };
    match stats {
        Ok(stats) => Ok(Extracted::Applied {
            active,
            stats,
            lock,
        }),
        Err(e) if mode != Mode::Mounted && job.index > 0 && is_missing_link_target(&e) => {
            active.remove()?;
            Ok(Extracted::NeedsParent)
        }
        Err(e) => {
            active.remove()?;
            Err(e)
        }
    }
}

fn snapshot_name_taken(chain: &str) -> berth_snapshot::Error {
    berth_snapshot::Error::FailedPrecondition {
        key: chain.to_owned(),
        reason: "the chainID names a snapshot that is not committed".into(),
    }
}

/// Whether an apply failed because a hardlink points at a file this layer does not carry
/// (it lives in a lower layer, invisible in a detached upper directory).
fn is_missing_link_target(e: &Error) -> bool {
    matches!(e, Error::Apply { source: apply::Error::Io { op, source, .. }, .. }
        if matches!(*op, "linkat" | "resolve hardlink target")
            && source.kind() == io::ErrorKind::NotFound)
}

/// Streams the blob through size/digest verification, decompression and the applier into
/// `root`, then drains and verifies the rest of the blob.
fn apply_blob(ctx: &Ctx<'_>, job: &LayerJob, root: &Path, overlay: bool) -> Result<ApplyStats> {
    let digest = &job.desc.digest;
    let blob = ctx.store.reader(digest)?;
    if blob.size() != job.desc.size {
        return Err(Error::BlobVerification {
            digest: digest.clone(),
            reason: format!(
                "stored size {} differs from the descriptor's {}",
                blob.size(),
                job.desc.size
            ),
        });
    }
    let verifying = VerifyingReader::new(
        CancelReader {
            inner: blob,
            cancel: ctx.cancel,
        },
        digest.clone(),
        Some(job.desc.size),
    );
    let mut buffered = BufReader::with_capacity(BLOB_BUFFER, verifying);
    let opts = ApplyOptions::default()
        .with_blob(digest.to_string())
        .with_expected_diff_id(job.diff_id.clone())
        .with_total_size(job.desc.size)
        .with_overlay_whiteouts(overlay);
    if job.compression != Compression::None && job.desc.size >= PIPELINE_MIN {
        return super::pipeline::apply_decoupled(ctx, job, root, buffered, opts);
    }
    let mut reader = ProgressReader::new(
        &mut buffered,
        ctx.progress,
        digest.to_string(),
        "layer",
        Some(job.desc.size),
    );
    let opts = opts.with_compression(job.compression);
    let map = |source: apply::Error| map_apply_error(ctx, job, source);
    let stats = apply::apply_layer(root, &mut reader, opts).map_err(map)?;
    // Whatever the decoder left unread (trailing bytes) still counts for the digest.
    io::copy(&mut reader, &mut io::sink()).map_err(|e| verify_error(ctx, job, e))?;
    drop(reader);
    if !buffered.get_ref().is_verified() {
        return Err(Error::BlobVerification {
            digest: digest.clone(),
            reason: "the blob was not read to its end".into(),
        });
    }
    Ok(stats)
}

pub(crate) fn map_apply_error(ctx: &Ctx<'_>, job: &LayerJob, source: apply::Error) -> Error {
    if ctx.cancel.load(Ordering::Relaxed) {
        return Error::Cancelled {
            digest: job.desc.digest.clone(),
        };
    }
    if let apply::Error::Read { source: io, .. } = &source
        && let Some(v) = verification_error(io)
    {
        return Error::BlobVerification {
            digest: job.desc.digest.clone(),
            reason: v.to_string(),
        };
    }
    Error::Apply {
        digest: job.desc.digest.clone(),
        chain_id: job.chain_id.clone(),
        source,
    }
}

/// Classifies a read error of the blob stream.
fn verify_error(ctx: &Ctx<'_>, job: &LayerJob, e: io::Error) -> Error {
    if ctx.cancel.load(Ordering::Relaxed) {
        return Error::Cancelled {
            digest: job.desc.digest.clone(),
        };
    }
    if let Some(v) = verification_error(&e) {
        return Error::BlobVerification {
            digest: job.desc.digest.clone(),
            reason: v.to_string(),
        };
    }
    Error::io("read", ctx.store.blob_path(&job.desc.digest), e)
}
