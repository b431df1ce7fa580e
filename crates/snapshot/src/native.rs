//! The native (copy-based) backend, for filesystems without overlayfs.
//!
//! `prepare`/`view` copy the parent's complete tree into the new snapshot's
//! `snapshots/<id>/fs` (file types, content, mode, owner, xattrs, hardlinks, symlinks,
//! devices, times); mounts are bind mounts of that directory (`ro` for views). The
//! directory is the whole tree, so layer deletions are plain removals
//! ([`crate::DirLayout::FullTree`]). Rebase at commit is not supported: the copied tree
//! cannot be re-based onto another parent without a diff.
//!
//! Usage of a snapshot counts its whole tree (parents included), as containerd's native
//! snapshotter does.

use std::path::Path;

use crate::error::Result;
use crate::fsutil;
use crate::metadata::Snapshot;
use crate::mount::Mount;
use crate::store::{Driver, Paths, Store, delegate_snapshotter};
use crate::types::{Capability, DirLayout, Kind};

/// Copy-based snapshotter. See the module docs.
#[derive(Debug)]
pub struct NativeSnapshotter {
    store: Store<NativeDriver>,
}

#[derive(Debug)]
struct NativeDriver;

impl NativeSnapshotter {
    /// Opens (creating if needed) a native snapshotter rooted at `root`.
    /// Errors: `Io`/`Internal` for filesystem or metadata failures.
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        Ok(NativeSnapshotter {
            store: Store::open(root.as_ref(), NativeDriver)?,
        })
    }

    /// Checks that every record has its directory (an fsck). Returns the problems found;
    /// empty means consistent. Unowned directories are not problems: see `cleanup`.
    pub fn verify(&self) -> Result<Vec<String>> {
        self.store.verify()
    }

    /// The root directory (canonical).
    pub fn root(&self) -> &Path {
        &self.store.paths.root
    }
}

delegate_snapshotter!(NativeSnapshotter);

impl Driver for NativeDriver {
    fn check(&self, _key: &str, _snap: &Snapshot) -> Result<()> {
        Ok(())
    }

    fn populate(&self, paths: &Paths, dir: &Path, snap: &Snapshot) -> Result<()> {
        let fs_dir = dir.join("fs");
        match snap.parent_ids.first() {
            Some(parent) => fsutil::copy_tree(&paths.fs(*parent), &fs_dir),
            None => fsutil::mkdir_mode(&fs_dir, 0o755),
        }
    }

    fn mounts(&self, paths: &Paths, snap: &Snapshot) -> Vec<Mount> {
        vec![Mount::bind(
            paths.fs(snap.id).to_string_lossy().into_owned(),
            snap.kind == Kind::View,
        )]
    }

    fn supports(&self, _cap: Capability) -> bool {
        false
    }

    fn layout(&self) -> DirLayout {
        DirLayout::FullTree
    }

    fn slow_populate(&self) -> bool {
        true
    }
}
