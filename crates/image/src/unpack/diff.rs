//! A snapshot's changes against its parent as a layer blob in the content store (containerd's
//! diff service `Compare`): the reverse of unpacking one layer.

use std::collections::BTreeMap;
use std::path::Path;

use berth_oci::media_type::oci_layer;
use berth_snapshot::{DirLayout, Kind, Mount, Opts, Snapshotter, TempMount};

use super::LABEL_UNCOMPRESSED;
use super::error::{Error, Result};
use crate::content::{ContentStore, Expected, Writer};
use crate::diff::{self, DiffOptions, DiffStats};
use crate::metadata::Descriptor;

/// A temporary view of a committed snapshot, removed on drop.
struct TempView<'a> {
    sn: &'a dyn Snapshotter,
    key: String,
    mounts: Vec<Mount>,
}

impl<'a> TempView<'a> {
    fn new(sn: &'a dyn Snapshotter, parent: &str) -> Result<Self> {
        let key = format!("diff-view-{:016x}", rand::random::<u64>());
        let mounts = sn
            .view(&key, parent, &Opts::new())
            .map_err(|e| Error::snapshot("view", key.clone(), e))?;
        Ok(TempView { sn, key, mounts })
    }
}

impl Drop for TempView<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.sn.remove(&self.key) {
            tracing::warn!(key = %self.key, error = %e, "cannot remove temporary view");
        }
    }
}

fn mount(mounts: &[Mount], dir: &Path, key: &str) -> Result<TempMount> {
    TempMount::new(mounts, dir).map_err(|e| Error::snapshot("mount", key, e))
}

/// Writes the changes of snapshot `key` against its parent as a layer into `store` and returns
/// its descriptor (OCI layer media type for [`DiffOptions::compression`]). The blob is labelled
/// `containerd.io/uncompressed=<diffID>` plus `labels`.
///
/// An active overlay snapshot is diffed from its upper directory (whiteout devices and opaque
/// directories become `.wh.` entries); anything else (committed snapshots, the native backend,
/// views) by comparing mounted read-only views of the snapshot and of its parent. Temporary
/// views and mounts are removed before returning.
///
/// The blob is not referenced by any image: protect it (a lease, `containerd.io/gc.root` in
/// `labels`) if a content GC may run before an image references it.
///
/// # Errors
/// [`Error::Snapshot`] (unknown key, mount failures); [`Error::Diff`]; [`Error::Store`].
pub fn diff_snapshot(
    store: &ContentStore,
    snapshotter: &dyn Snapshotter,
    key: &str,
    opts: &DiffOptions,
    labels: &BTreeMap<String, String>,
) -> Result<Descriptor> {
    let info = snapshotter
        .stat(key)
        .map_err(|e| Error::snapshot("stat", key, e))?;
    let r#ref = format!("diff-{:016x}", rand::random::<u64>());
    let mut writer = store.writer(&r#ref, Some(&Expected::default()))?;
    let written = write_diff(snapshotter, key, &info, &mut writer, opts);
    let stats = match written {
        Ok(s) => s,
        Err(e) => {
            drop(writer);
            let _ = store.abort(&r#ref);
            return Err(e);
        }
    };
    let mut all = labels.clone();
    all.insert(LABEL_UNCOMPRESSED.to_owned(), stats.diff_id.to_string());
    match writer.commit(stats.size, Some(&stats.digest), &all) {
        Ok(_) => {}
        Err(crate::Error::BlobExists { .. }) => {
            let mut info = store.info(&stats.digest)?;
            info.labels.extend(all);
            store.update(&info, &[])?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Descriptor::new(
        oci_layer(stats.compression),
        stats.digest,
        stats.size,
    ))
}

fn write_diff(
    sn: &dyn Snapshotter,
    key: &str,
    info: &berth_snapshot::Info,
    out: &mut Writer,
    opts: &DiffOptions,
) -> Result<DiffStats> {
    let derr = |source| Error::Diff {
        key: key.to_owned(),
        source,
    };
    let tmp = std::env::temp_dir();
    if info.kind == Kind::Active
        && let Some(dir) = sn
            .writable_dir(key)
            .map_err(|e| Error::snapshot("writable_dir", key, e))?
        && dir.layout == DirLayout::OverlayUpper
    {
        return diff::diff_overlay_upper(&dir.path, out, opts)
            .map(|(s, _)| s)
            .map_err(derr);
    }
    // The upper tree: the snapshot itself, mounted (a committed one through a view).
    let upper_view;
    let upper_mounts = match info.kind {
        Kind::Committed => {
            upper_view = TempView::new(sn, key)?;
            upper_view.mounts.clone()
        }
        Kind::Active | Kind::View => sn
            .mounts(key)
            .map_err(|e| Error::snapshot("mounts", key, e))?,
    };
    let upper = mount(&upper_mounts, &tmp, key)?;
    let lower_view;
    let lower_mount;
    let empty;
    let lower: &Path = if info.parent.is_empty() {
        empty = tempfile_dir(&tmp)?;
        empty.path()
    } else {
        lower_view = TempView::new(sn, &info.parent)?;
        lower_mount = mount(&lower_view.mounts, &tmp, &info.parent)?;
        lower_mount.path()
    };
    diff::diff_trees(lower, upper.path(), out, opts)
        .map(|(s, _)| s)
        .map_err(derr)
}

/// An empty directory removed on drop (the lower tree of a snapshot without parent).
struct EmptyDir(std::path::PathBuf);

impl EmptyDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for EmptyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn tempfile_dir(parent: &Path) -> Result<EmptyDir> {
    let p = parent.join(format!("berth-empty-{:016x}", rand::random::<u64>()));
    std::fs::create_dir(&p).map_err(|e| Error::io("mkdir", &p, e))?;
    Ok(EmptyDir(p))
}
