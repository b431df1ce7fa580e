//! Unpack: an image's layers become a chain of committed snapshots named by chainID.
//!
//! # Flow (containerd's `core/unpack`, with parallel layers)
//! 1. **Resolve** the target: an index is narrowed to the best stored manifest for the
//!    platform; the manifest's config gives the diffIDs; `len(layers) == len(diff_ids)`;
//!    chainIDs follow ([`berth_oci::chain_ids`]).
//! 2. **Skip what exists**: the highest committed chainID is found with `stat`; every layer
//!    below it is reported as skipped (dedup across images sharing base layers).
//! 3. **Extract** the missing layers. With a snapshotter that can rebase
//!    ([`Capability::Rebase`]) and more than one layer to do, up to
//!    [`UnpackOptions::max_parallel`] threads each take the next layer (bottom first), lock its
//!    chainID, `prepare("extract-<random> <chainID>", parent = "")` and apply the blob straight
//!    into the snapshot's writable directory — overlay whiteouts in an overlay upper, plain ones
//!    in a full tree; with no writable directory the snapshot is mounted
//!    ([`berth_snapshot::TempMount`]). Without rebase, layers go one by one on their parent.
//!    A compressed layer of 4 MiB or more is decompressed on a thread of its own while the
//!    worker hashes and extracts the tar stream (`unpack/pipeline.rs`), so the largest
//!    layer, the critical path, uses two cores when they are free.
//! 4. **Verify** while reading: the blob's size and digest (the whole blob is read, trailing
//!    bytes included) and the diffID against `config.rootfs.diff_ids[i]`, before any commit.
//! 5. **Commit in order** on the calling thread: `commit(chainID, key, parent = chainID[i-1])`
//!    (a rebase for detached snapshots). `AlreadyExists` counts as done. A layer that
//!    hardlinks into lower layers (which a detached upper cannot see) is redone on its
//!    mounted parent once the parent is committed.
//! 6. **Label**: each layer blob gets `containerd.io/uncompressed=<diffID>`, the config blob
//!    `containerd.io/gc.ref.snapshot.<snapshotter>=<top chainID>`.
//!
//! # Failure
//! Any error cancels the other workers (their blob readers fail at the next read), removes
//! every active snapshot of this unpack, and returns the first error. Chains committed before
//! the failure stay: they are complete, verified layers that a retry or another image reuses.
//! Nothing is committed for the failed layer or any layer above it.
//!
//! # Concurrency
//! Unpacks of the same or overlapping images may run at once in threads and processes: each
//! chainID is extracted under an exclusive lock (`unpack/lock.rs`) and re-`stat`ed once held,
//! so a layer is applied once and the others skip it. Snapshot GC ([`gc_snapshots`]) keeps the
//! chains of images that have a record: unpack images after recording them (import does).

pub mod error;

mod diff;
mod gc;
mod layer;
mod lock;
mod pipeline;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

use berth_oci::manifest;
use berth_oci::media_type::{MediaKind, kind_of};
use berth_oci::{Compression, Digest, MAX_DOCUMENT_SIZE, Matcher, Platform};
use berth_snapshot::{Capability, ErrorKind as SnErrorKind, LABEL_SNAPSHOT_REF, Opts, Snapshotter};

pub use diff::diff_snapshot;
pub use error::{Error, Result};
pub use gc::{SnapshotGcOptions, SnapshotGcReport, gc_snapshots, gc_snapshots_with};

use crate::content::ContentStore;
use crate::metadata::Descriptor;
use crate::progress::{NoProgress, Progress, report_done};
use layer::{Ctx, Extracted, LayerJob, Mode};

/// Label on a layer blob naming its diffID (containerd's).
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";
/// Prefix of the config-blob label naming the top chainID per snapshotter:
/// `containerd.io/gc.ref.snapshot.<snapshotter>=<chainID>`.
pub const LABEL_GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";

/// Options of [`unpack`].
#[derive(Clone, Copy)]
pub struct UnpackOptions<'a> {
    /// The snapshotter's name (`overlay`, `native`), used in the config blob's
    /// `containerd.io/gc.ref.snapshot.<name>` label.
    pub snapshotter_name: &'a str,
    /// Platform to pick from an index; `None` is the host's ([`Matcher::host`]).
    pub platform: Option<&'a Platform>,
    /// Receives per-layer progress (kind `"layer"`, item = the layer digest).
    pub progress: &'a dyn Progress,
    /// Most layers extracted at once; `0` means the number of CPUs. (Each large compressed
    /// layer adds its decoder thread.)
    pub max_parallel: usize,
    /// Extract layer by layer on their parents even when the snapshotter can rebase.
    pub sequential: bool,
    /// Where chain locks live; default `<content root>/unpack-locks`. Unpacks that must not
    /// duplicate work have to share it.
    pub lock_dir: Option<&'a Path>,
}

impl std::fmt::Debug for UnpackOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnpackOptions")
            .field("snapshotter_name", &self.snapshotter_name)
            .field("platform", &self.platform)
            .field("max_parallel", &self.max_parallel)
            .field("sequential", &self.sequential)
            .field("lock_dir", &self.lock_dir)
            .finish_non_exhaustive()
    }
}

impl<'a> UnpackOptions<'a> {
    /// Defaults for the snapshotter called `snapshotter_name`: host platform, no progress,
    /// one thread per CPU, parallel when possible.
    pub fn new(snapshotter_name: &'a str) -> Self {
        UnpackOptions {
            snapshotter_name,
            platform: None,
            progress: &NoProgress,
            max_parallel: 0,
            sequential: false,
            lock_dir: None,
        }
    }
}

/// Where unpacks keep their chain locks unless told otherwise.
pub(crate) fn default_lock_dir(store: &ContentStore) -> PathBuf {
    store.root().join("unpack-locks")
}

/// What happened to one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerOutcome {
    /// Applied and committed by this unpack.
    Applied {
        /// Bytes of the uncompressed tar.
        uncompressed_size: u64,
        /// Entries applied.
        entries: u64,
    },
    /// Already committed (by an earlier or a concurrent unpack).
    Skipped,
}

/// One layer of an [`UnpackReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerReport {
    /// The compressed blob.
    pub digest: Digest,
    /// Its diffID.
    pub diff_id: Digest,
    /// The chainID of the stack up to this layer (the snapshot name).
    pub chain_id: Digest,
    /// Applied or skipped.
    pub outcome: LayerOutcome,
}

/// What [`unpack`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackReport {
    /// The manifest unpacked.
    pub manifest: Digest,
    /// Its config.
    pub config: Digest,
    /// The top chainID: the committed snapshot to prepare containers on (`None` for an image
    /// without layers).
    pub chain_id: Option<Digest>,
    /// Every layer, bottom first.
    pub layers: Vec<LayerReport>,
}

impl UnpackReport {
    /// Layers applied by this unpack.
    pub fn applied(&self) -> usize {
        self.layers
            .iter()
            .filter(|l| matches!(l.outcome, LayerOutcome::Applied { .. }))
            .count()
    }

    /// Layers that were already there.
    pub fn skipped(&self) -> usize {
        self.layers.len() - self.applied()
    }
}

/// A manifest resolved for unpacking.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The manifest.
    pub manifest: Digest,
    /// The config blob.
    pub config: Digest,
    /// The layers with their compression, bottom first.
    pub layers: Vec<(Descriptor, Compression)>,
    /// The diffIDs of the config, bottom first.
    pub diff_ids: Vec<Digest>,
}

impl ResolvedImage {
    /// The chainIDs of every prefix of the layers.
    pub fn chain_ids(&self) -> Vec<Digest> {
        berth_oci::chain_ids(&self.diff_ids)
    }
}

fn doc_err(what: &Digest) -> impl FnOnce(berth_oci::Error) -> Error + '_ {
    move |source| Error::Document {
        what: what.to_string(),
        source,
    }
}

/// Resolves `target` (a manifest, or an index narrowed by `platform`) to its manifest, config,
/// layers and diffIDs, reading the documents from `store`.
///
/// # Errors
/// [`Error::Store`] for missing blobs; [`Error::Document`] for bad documents;
/// [`Error::NoMatchingPlatform`]; [`Error::UnsupportedTarget`]; [`Error::UnsupportedLayer`];
/// [`Error::LayerCount`].
pub fn resolve(
    store: &ContentStore,
    target: &Descriptor,
    platform: Option<&Platform>,
) -> Result<ResolvedImage> {
    let mut desc = target.clone();
    // An index may point at another index; bound the walk.
    for _ in 0..4 {
        match kind_of(&desc.media_type) {
            MediaKind::Manifest => return resolve_manifest(store, &desc),
            MediaKind::Index => {
                let bytes = store.read_all(&desc.digest, MAX_DOCUMENT_SIZE)?;
                let index = manifest::parse_index(&bytes, &desc.digest.to_string())
                    .map_err(doc_err(&desc.digest))?;
                let matcher = platform.map_or_else(Matcher::host, Matcher::only);
                let chosen = matcher
                    .select(&index.value)
                    .into_iter()
                    .filter_map(|d| Descriptor::try_from(d).ok())
                    .find(|d| store.exists(&d.digest));
                desc = chosen.ok_or_else(|| Error::NoMatchingPlatform {
                    index: desc.digest.clone(),
                    platform: platform.map_or_else(
                        || format!("{} (host)", Platform::host()),
                        ToString::to_string,
                    ),
                })?;
            }
            _ => {
                return Err(Error::UnsupportedTarget {
                    digest: desc.digest.clone(),
                    media_type: desc.media_type.clone(),
                });
            }
        }
    }
    Err(Error::UnsupportedTarget {
        digest: desc.digest.clone(),
        media_type: format!("{} (indexes nested too deep)", desc.media_type),
    })
}

fn resolve_manifest(store: &ContentStore, desc: &Descriptor) -> Result<ResolvedImage> {
    let bytes = store.read_all(&desc.digest, MAX_DOCUMENT_SIZE)?;
    let parsed = manifest::parse_manifest(&bytes, &desc.digest.to_string())
        .map_err(doc_err(&desc.digest))?;
    let m = &parsed.value;
    let config_desc = Descriptor::try_from(m.config())?;
    let config_bytes = store.read_all(&config_desc.digest, MAX_DOCUMENT_SIZE)?;
    let config = manifest::parse_config(&config_bytes, &config_desc.digest.to_string())
        .map_err(doc_err(&config_desc.digest))?;
    let diff_ids = manifest::diff_ids(&config).map_err(doc_err(&config_desc.digest))?;
    let mut layers = Vec::with_capacity(m.layers().len());
    for l in m.layers() {
        let d = Descriptor::try_from(l)?;
        match kind_of(&d.media_type) {
            MediaKind::Layer(c) => layers.push((d, c)),
            _ => {
                return Err(Error::UnsupportedLayer {
                    media_type: d.media_type.clone(),
                    digest: d.digest,
                });
            }
        }
    }
    if layers.len() != diff_ids.len() {
        return Err(Error::LayerCount {
            manifest: desc.digest.clone(),
            layers: layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    Ok(ResolvedImage {
        manifest: desc.digest.clone(),
        config: config_desc.digest,
        layers,
        diff_ids,
    })
}

/// Unpacks the image record `name` (a normalised reference) with [`unpack`].
///
/// # Errors
/// `NotFound` ([`Error::Store`]) when no record has this name; otherwise as [`unpack`].
pub fn unpack_image(
    store: &ContentStore,
    snapshotter: &dyn Snapshotter,
    name: &str,
    opts: &UnpackOptions<'_>,
) -> Result<UnpackReport> {
    let image = store.images().get(name)?;
    unpack(store, snapshotter, &image.target, opts)
}

/// Unpacks `target` (a manifest or an index; see the [module docs](self)) into `snapshotter`.
///
/// Blocking; runs up to [`UnpackOptions::max_parallel`] worker threads. Safe to call
/// concurrently (threads and processes) for the same or overlapping images.
///
/// # Errors
/// As [`resolve`]; [`Error::BlobVerification`] when a layer blob does not match its
/// descriptor; [`Error::Apply`] for a corrupt layer, an invalid entry or a diffID mismatch;
/// [`Error::Snapshot`] for snapshotter failures; [`Error::Io`] for lock files. On error no
/// active snapshot of this unpack is left and the failed layer is not committed.
pub fn unpack(
    store: &ContentStore,
    snapshotter: &dyn Snapshotter,
    target: &Descriptor,
    opts: &UnpackOptions<'_>,
) -> Result<UnpackReport> {
    let image = resolve(store, target, opts.platform)?;
    let chains = image.chain_ids();
    let jobs: Vec<LayerJob> = image
        .layers
        .iter()
        .enumerate()
        .map(|(i, (desc, compression))| LayerJob {
            index: i,
            desc: desc.clone(),
            compression: *compression,
            diff_id: image.diff_ids[i].clone(),
            chain_id: chains[i].clone(),
            parent_chain: i.checked_sub(1).map(|p| chains[p].clone()),
        })
        .collect();

    let present = committed_prefix(snapshotter, &chains)?;
    let mut outcomes: Vec<LayerOutcome> = vec![LayerOutcome::Skipped; jobs.len()];
    for job in &jobs[..present] {
        report_done(
            opts.progress,
            &job.desc.digest.to_string(),
            "layer",
            job.desc.size,
        );
    }
    let todo = &jobs[present..];
    if !todo.is_empty() {
        let default_locks: PathBuf;
        let lock_dir = match opts.lock_dir {
            Some(d) => d,
            None => {
                default_locks = default_lock_dir(store);
                &default_locks
            }
        };
        let mount_dir = std::env::temp_dir();
        let cancel = AtomicBool::new(false);
        let ctx = Ctx {
            store,
            sn: snapshotter,
            progress: opts.progress,
            lock_dir,
            mount_dir: &mount_dir,
            cancel: &cancel,
        };
        let parallel = !opts.sequential
            && todo.len() > 1
            && snapshotter.supports(Capability::Rebase)
            && workers(opts.max_parallel) > 1;
        let done = if parallel {
            extract_parallel(&ctx, todo, workers(opts.max_parallel).min(todo.len()))?
        } else {
            extract_sequential(&ctx, todo)?
        };
        for (job, outcome) in todo.iter().zip(done) {
            outcomes[job.index] = outcome;
        }
    }

    label_blobs(store, &image, &jobs, opts.snapshotter_name)?;
    Ok(UnpackReport {
        manifest: image.manifest,
        config: image.config,
        chain_id: chains.last().cloned(),
        layers: jobs
            .into_iter()
            .zip(outcomes)
            .map(|(j, outcome)| LayerReport {
                digest: j.desc.digest,
                diff_id: j.diff_id,
                chain_id: j.chain_id,
                outcome,
            })
            .collect(),
    })
}

fn workers(max_parallel: usize) -> usize {
    if max_parallel > 0 {
        max_parallel
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

/// How many bottom layers are already committed (a committed chain implies its parents).
fn committed_prefix(sn: &dyn Snapshotter, chains: &[Digest]) -> Result<usize> {
    for (i, chain) in chains.iter().enumerate().rev() {
        match sn.stat(&chain.to_string()) {
            Ok(info) if info.kind == berth_snapshot::Kind::Committed => return Ok(i + 1),
            Ok(_) => {}
            Err(e) if e.kind() == SnErrorKind::NotFound => {}
            Err(e) => return Err(Error::snapshot("stat", chain.to_string(), e)),
        }
    }
    Ok(0)
}

/// Commits an extracted layer (or notes that it was present). Returns the outcome.
fn commit_one(ctx: &Ctx<'_>, job: &LayerJob, extracted: Extracted<'_>) -> Result<LayerOutcome> {
    match extracted {
        Extracted::Present => {
            report_done(
                ctx.progress,
                &job.desc.digest.to_string(),
                "layer",
                job.desc.size,
            );
            Ok(LayerOutcome::Skipped)
        }
        Extracted::NeedsParent => {
            let again = layer::extract(ctx, job, Mode::Mounted)?;
            commit_one(ctx, job, again)
        }
        Extracted::Applied {
            active,
            stats,
            lock,
        } => {
            let chain = job.chain_id.to_string();
            let mut opts = Opts::new().with_label(LABEL_SNAPSHOT_REF, chain.clone());
            if let Some(parent) = &job.parent_chain {
                opts = opts.with_parent(parent.to_string());
            }
            let res = ctx.sn.commit(&chain, active.key(), &opts);
            let outcome = match res {
                Ok(()) => {
                    active.disarm();
                    LayerOutcome::Applied {
                        uncompressed_size: stats.uncompressed_size,
                        entries: stats.entries,
                    }
                }
                Err(e) if e.kind() == SnErrorKind::AlreadyExists => {
                    active.remove()?;
                    LayerOutcome::Skipped
                }
                Err(e) => {
                    let key = active.key().to_owned();
                    drop(active);
                    return Err(Error::snapshot("commit", key, e));
                }
            };
            drop(lock);
            report_done(
                ctx.progress,
                &job.desc.digest.to_string(),
                "layer",
                job.desc.size,
            );
            Ok(outcome)
        }
    }
}

fn extract_sequential(ctx: &Ctx<'_>, todo: &[LayerJob]) -> Result<Vec<LayerOutcome>> {
    let mut out = Vec::with_capacity(todo.len());
    for job in todo {
        let extracted = layer::extract(ctx, job, Mode::OnParent)?;
        out.push(commit_one(ctx, job, extracted)?);
    }
    Ok(out)
}

/// Workers extract detached snapshots; the calling thread commits them in order.
fn extract_parallel(ctx: &Ctx<'_>, todo: &[LayerJob], threads: usize) -> Result<Vec<LayerOutcome>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel::<(usize, Result<Extracted<'_>>)>();
        for _ in 0..threads {
            let tx = tx.clone();
            let next = &next;
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(job) = todo.get(i) else { break };
                    let res = if ctx.cancel.load(Ordering::Relaxed) {
                        Err(Error::Cancelled {
                            digest: job.desc.digest.clone(),
                        })
                    } else {
                        layer::extract(ctx, job, Mode::Detached)
                    };
                    if tx.send((i, res)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut pending: BTreeMap<usize, Result<Extracted<'_>>> = BTreeMap::new();
        let mut out = Vec::with_capacity(todo.len());
        let mut first_err: Option<Error> = None;
        for (i, res) in rx {
            pending.insert(i, res);
            while first_err.is_none()
                && let Some(res) = pending.remove(&out.len())
            {
                let job = &todo[out.len()];
                match res.and_then(|x| commit_one(ctx, job, x)) {
                    Ok(o) => out.push(o),
                    Err(e) => {
                        ctx.cancel.store(true, Ordering::SeqCst);
                        first_err = Some(e);
                    }
                }
            }
            if first_err.is_some() {
                // Dropping the results removes their active snapshots.
                pending.clear();
            }
        }
        match first_err {
            Some(e) => Err(e),
            None if out.len() == todo.len() => Ok(out),
            None => Err(Error::Internal {
                reason: format!("{} of {} layers reported back", out.len(), todo.len()),
            }),
        }
    })
}

/// Sets `containerd.io/uncompressed` on the layer blobs and the snapshot GC reference on the
/// config blob, skipping labels that are already right.
fn label_blobs(
    store: &ContentStore,
    image: &ResolvedImage,
    jobs: &[LayerJob],
    snapshotter_name: &str,
) -> Result<()> {
    let set = |digest: &Digest, key: String, value: String| -> Result<()> {
        let mut info = store.info(digest)?;
        if info.labels.get(&key) == Some(&value) {
            return Ok(());
        }
        info.labels.insert(key.clone(), value);
        store.update(&info, &[&format!("labels.{key}")])?;
        Ok(())
    };
    for job in jobs {
        set(
            &job.desc.digest,
            LABEL_UNCOMPRESSED.to_owned(),
            job.diff_id.to_string(),
        )?;
    }
    if let Some(top) = jobs.last() {
        set(
            &image.config,
            format!("{LABEL_GC_REF_SNAPSHOT}{snapshotter_name}"),
            top.chain_id.to_string(),
        )?;
    }
    Ok(())
}
