//! Snapshot garbage collection: unpacked chains that no image record reaches are removed.
//!
//! **Roots**: for every image record, every stored manifest its target reaches (all manifests
//! of an index that are in the store) → config → every chainID prefix of its diffIDs; plus
//! every snapshot labelled `containerd.io/gc.root`. **Candidates**: committed snapshots that
//! carry `containerd.io/snapshot.ref` (made by unpack) and are not roots. Snapshots without
//! that label (committed by users, containers' actives, views) are never removed, and neither
//! is any ancestor of a snapshot that stays. Candidates are removed children first.

use std::collections::{BTreeMap, BTreeSet};

use berth_oci::manifest::{self, Document};
use berth_oci::media_type::{MediaKind, kind_of};
use berth_oci::{Digest, MAX_DOCUMENT_SIZE};
use berth_snapshot::{
    ErrorKind as SnErrorKind, Kind, LABEL_GC_ROOT, LABEL_SNAPSHOT_REF, Snapshotter,
};

use super::error::{Error, Result};
use crate::content::ContentStore;
use crate::metadata::Descriptor;

/// What [`gc_snapshots`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotGcReport {
    /// Names of the snapshots removed, children before parents.
    pub removed: Vec<String>,
    /// Number of snapshots kept.
    pub kept: usize,
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

/// Removes the committed unpack snapshots of `snapshotter` that no image record of `store`
/// reaches (see the module docs).
///
/// Concurrency: run it while no unpack of an image *without* a record is in progress (such an
/// unpack's lower chains are not reachable yet). A snapshot that gains a child during the
/// collection is kept (its removal fails with `FailedPrecondition` and is skipped).
///
/// # Errors
/// [`Error::Store`] reading image records; [`Error::Snapshot`] for walk or removal failures
/// other than "has children".
pub fn gc_snapshots(
    store: &ContentStore,
    snapshotter: &dyn Snapshotter,
) -> Result<SnapshotGcReport> {
    let keep = reachable_chains(store)?;
    let mut all: Vec<berth_snapshot::Info> = Vec::new();
    snapshotter
        .walk(&[], &mut |info| {
            all.push(info.clone());
            Ok(())
        })
        .map_err(|e| Error::snapshot("walk", "", e))?;
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
    let mut report = SnapshotGcReport::default();
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
