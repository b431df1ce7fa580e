//! Snapshot garbage collection: unpacked chains that no image record reaches are removed.
//!
//! **Roots**: for every image record, every stored manifest its target reaches (all manifests
//! of an index that are in the store) → config → every chainID prefix of its diffIDs; plus
//! every snapshot labelled `containerd.io/gc.root`. **Candidates**: committed snapshots that
//! carry `containerd.io/snapshot.ref` (made by unpack) and are not roots. Snapshots without
//! that label (committed by users, containers' actives, views) are never removed, and neither
//! is any ancestor of a snapshot that stays. Candidates are removed children first.
//!
//! **Abandoned extractions**: an unpack holds its chainID's lock (`unpack/lock.rs`) from before
//! it prepares `extract-<random> <chainID>` until that snapshot is committed or removed. An
//! active `extract-*` snapshot whose chain lock nobody holds was therefore left by an unpack
//! that crashed or was killed; the collection takes the lock itself (so no unpack can start on
//! that chain meanwhile) and removes it, before looking at committed snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use berth_oci::manifest::{self, Document};
use berth_oci::media_type::{MediaKind, kind_of};
use berth_oci::{Digest, MAX_DOCUMENT_SIZE};
use berth_snapshot::{
    ErrorKind as SnErrorKind, Kind, LABEL_GC_ROOT, LABEL_SNAPSHOT_REF, Snapshotter,
};

use super::error::{Error, Result};
use crate::content::ContentStore;
use crate::metadata::Descriptor;

use super::lock::ChainLock;

/// What [`gc_snapshots`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotGcReport {
    /// Names of the committed snapshots removed, children before parents.
    pub removed: Vec<String>,
    /// Names of the abandoned `extract-*` snapshots removed (left by an unpack that died).
    pub abandoned: Vec<String>,
    /// Number of snapshots kept.
    pub kept: usize,
}

/// Options of [`gc_snapshots_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotGcOptions<'a> {
    /// The chain-lock directory the unpacks use ([`super::UnpackOptions::lock_dir`]); default
    /// `<content root>/unpack-locks`. An extraction is known to be abandoned only through
    /// the locks its unpack takes, so this must be the directory those unpacks used.
    pub lock_dir: Option<&'a Path>,
}

/// The chainIDs every image record of `store` needs (see the module docs). Images whose
/// documents are missing or invalid contribute what could be read.
fn reachable_chains(store: &ContentStore) -> Result<BTreeSet<String>> {
    let mut keep = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut stack: Vec<Descriptor> = store
        .images()
        .list(&[])?
        .into_iter()
        .map(|i| i.target)
        .collect();
    while let Some(d) = stack.pop() {
        if !seen.insert(d.digest.clone()) || !store.exists(&d.digest) {
            continue;
        }
        let Ok(bytes) = store.read_all(&d.digest, MAX_DOCUMENT_SIZE) else {
            continue;
        };
        let what = d.digest.to_string();
        match kind_of(&d.media_type) {
            MediaKind::Index | MediaKind::Manifest => {}
            _ => continue,
        }
        match manifest::parse_document(&bytes, &what) {
            Ok(Document::Index(i)) => stack.extend(
                i.value
                    .manifests()
                    .iter()
                    .filter_map(|c| Descriptor::try_from(c).ok()),
            ),
            Ok(Document::Manifest(m)) => {
                let Ok(config) = Descriptor::try_from(m.value.config()) else {
                    continue;
                };
                let Ok(cbytes) = store.read_all(&config.digest, MAX_DOCUMENT_SIZE) else {
                    continue;
                };
                let diff_ids = manifest::parse_config(&cbytes, &config.digest.to_string())
                    .and_then(|c| manifest::diff_ids(&c));
                if let Ok(diff_ids) = diff_ids {
                    keep.extend(
                        berth_oci::chain_ids(&diff_ids)
                            .iter()
                            .map(Digest::to_string),
                    );
                }
            }
            Err(_) => {}
        }
    }
    Ok(keep)
}

/// Every snapshot of `snapshotter`.
fn all_snapshots(snapshotter: &dyn Snapshotter) -> Result<Vec<berth_snapshot::Info>> {
    let mut all: Vec<berth_snapshot::Info> = Vec::new();
    snapshotter
        .walk(&[], &mut |info| {
            all.push(info.clone());
            Ok(())
        })
        .map_err(|e| Error::snapshot("walk", "", e))?;
    Ok(all)
}

/// The chainID an active snapshot is being extracted for, when it is one of unpack's.
fn extraction_chain(info: &berth_snapshot::Info) -> Option<Digest> {
    if info.kind != Kind::Active || !info.name.starts_with("extract-") {
        return None;
    }
    let chain = info.labels.get(LABEL_SNAPSHOT_REF)?;
    if !info.name.ends_with(&format!(" {chain}")) {
        return None;
    }
    chain.parse().ok()
}

/// Removes the `extract-*` snapshots whose chain lock nobody holds (see the module docs).
fn remove_abandoned(
    snapshotter: &dyn Snapshotter,
    all: &[berth_snapshot::Info],
    lock_dir: &Path,
) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for info in all {
        let Some(chain) = extraction_chain(info) else {
            continue;
        };
        // Held: an unpack is working on this chain right now.
        let Some(_lock) = ChainLock::try_acquire(lock_dir, &chain)? else {
            continue;
        };
        match snapshotter.remove(&info.name) {
            Ok(()) => removed.push(info.name.clone()),
            Err(e)
                if matches!(
                    e.kind(),
                    SnErrorKind::FailedPrecondition | SnErrorKind::NotFound
                ) => {}
            Err(e) => return Err(Error::snapshot("remove", &info.name, e)),
        }
    }
    Ok(removed)
}

/// [`gc_snapshots_with`] with the default options.
///
/// # Errors
/// As [`gc_snapshots_with`].
pub fn gc_snapshots(
    store: &ContentStore,
    snapshotter: &dyn Snapshotter,
) -> Result<SnapshotGcReport> {
    gc_snapshots_with(store, snapshotter, &SnapshotGcOptions::default())
}

/// Removes the abandoned extractions and the committed unpack snapshots of `snapshotter` that
/// no image record of `store` reaches (see the module docs).
///
/// Concurrency: run it while no unpack of an image *without* a record is in progress (such an
/// unpack's lower chains are not reachable yet); unpacks in progress keep their extractions
/// (their chain locks are held). A snapshot that gains a child during the collection is kept
/// (its removal fails with `FailedPrecondition` and is skipped).
///
/// # Errors
/// [`Error::Store`] reading image records; [`Error::Io`] on the lock directory;
/// [`Error::Snapshot`] for walk or removal failures other than "has children".
pub fn gc_snapshots_with(
    store: &ContentStore,
    snapshotter: &dyn Snapshotter,
    opts: &SnapshotGcOptions<'_>,
) -> Result<SnapshotGcReport> {
    let default_locks;
    let lock_dir = match opts.lock_dir {
        Some(d) => d,
        None => {
            default_locks = super::default_lock_dir(store);
            &default_locks
        }
    };
    let mut all = all_snapshots(snapshotter)?;
    let abandoned = remove_abandoned(snapshotter, &all, lock_dir)?;
    if !abandoned.is_empty() {
        all = all_snapshots(snapshotter)?;
    }
    let keep = reachable_chains(store)?;
    let parent_of: BTreeMap<&str, &str> = all
        .iter()
        .map(|i| (i.name.as_str(), i.parent.as_str()))
        .collect();
    let is_candidate = |i: &berth_snapshot::Info| {
        i.kind == Kind::Committed
            && i.labels.contains_key(LABEL_SNAPSHOT_REF)
            && !i.labels.contains_key(LABEL_GC_ROOT)
            && !keep.contains(&i.name)
    };
    // Everything that stays protects its ancestors.
    let mut protected: BTreeSet<&str> = BTreeSet::new();
    for i in all.iter().filter(|i| !is_candidate(i)) {
        let mut p = i.parent.as_str();
        while !p.is_empty() && protected.insert(p) {
            p = parent_of.get(p).copied().unwrap_or("");
        }
    }
    let depth = |name: &str| {
        let mut d = 0usize;
        let mut p = parent_of.get(name).copied().unwrap_or("");
        while !p.is_empty() && d <= all.len() {
            d += 1;
            p = parent_of.get(p).copied().unwrap_or("");
        }
        d
    };
    let mut doomed: Vec<(usize, &str)> = all
        .iter()
        .filter(|i| is_candidate(i) && !protected.contains(i.name.as_str()))
        .map(|i| (depth(&i.name), i.name.as_str()))
        .collect();
    doomed.sort_by(|a, b| b.cmp(a));
    let mut report = SnapshotGcReport {
        abandoned,
        ..SnapshotGcReport::default()
    };
    for (_, name) in doomed {
        match snapshotter.remove(name) {
            Ok(()) => report.removed.push(name.to_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    SnErrorKind::FailedPrecondition | SnErrorKind::NotFound
                ) => {}
            Err(e) => return Err(Error::snapshot("remove", name, e)),
        }
    }
    report.kept = all.len() - report.removed.len();
    Ok(report)
}
