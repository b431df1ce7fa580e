//! berth-snapshot: containerd-style snapshotters with redb metadata.
//!
//! A *snapshot* is a directory tree built from a parent and a set of changes. This crate
//! implements containerd's snapshotter contract (see [`Snapshotter`]) with two backends:
//!
//! * [`OverlaySnapshotter`]: every snapshot owns an overlayfs upper directory; mounting
//!   stacks it over its parents' directories. Cheap prepares, shared lower layers.
//! * [`NativeSnapshotter`]: copy based. `prepare` copies the parent's tree (mode, owner,
//!   xattrs, hardlinks, symlinks, devices, times), `mounts` is a bind mount. For
//!   filesystems without overlayfs.
//!
//! # Design
//! * Policy and mechanics are split as in containerd: [`metadata`] owns the transactional
//!   records (redb, one `metadata.redb` per root, a schema version, numeric ids that never
//!   change, a parent back-index, usage cached at commit); the backends only create
//!   directories and describe mounts.
//! * Directory layout: `<root>/snapshots/<id>/fs` (+ `work` for overlay actives). A new
//!   directory is built as `snapshots/new-XXXX` and renamed to `<id>` inside the metadata
//!   transaction, so a record never points at a missing or half-made directory. Removal is
//!   two-phase: the record goes in the transaction, the directory afterwards; a crash in
//!   between leaves an orphan that [`Snapshotter::cleanup`] sweeps.
//! * Several processes may open the same root at once (redb's multi-writer mode; write
//!   transactions are serialised across processes, reads are concurrent). Two processes
//!   unpacking the same image race on `prepare`/`commit` of the same names and get
//!   `AlreadyExists`, which containerd's unpack protocol treats as "someone else has this
//!   layer". A root needs redb ≥ 4.5 in every process that opens it.
//! * [`Mount`] describes what a snapshotter returns and can mount it itself:
//!   [`Mount::mount`] handles bind, read-only bind and overlay mounts, including lowerdir
//!   lists longer than a page (the new mount API's `lowerdir+`, else relative-path
//!   compaction) and returns a [`MountGuard`] that unmounts on drop.
//!
//! # Applying a layer (for the image crate)
//! Two ways, both supported:
//! 1. Mount and write: `let m = sn.prepare(key, parent, &opts)?;` then
//!    [`TempMount::new`]`(&m, dir)?` and apply the layer with plain OCI whiteout
//!    semantics (remove paths) into [`TempMount::path`]; drop the guard; `commit`.
//! 2. Write without mounting (faster, what containerd does for a single overlay mount):
//!    [`Snapshotter::writable_dir`] returns the active snapshot's directory and its
//!    [`DirLayout`]. For [`DirLayout::OverlayUpper`] deletions must be written as overlay
//!    whiteouts (char device 0/0, `trusted.overlay.opaque=y`); for
//!    [`DirLayout::FullTree`] they are removals. A snapshot prepared *without* a parent and
//!    rebased at commit ([`Opts::parent`], [`Capability::Rebase`]) must use the overlay
//!    form, because it will be stacked over the parent later.
//!
//! # Conformance
//! The feature `testsuite` exports [`testsuite`]: containerd's 21 SnapshotterSuite cases
//! and the overlay-specific tests, each a function taking a factory, plus the file-tree
//! appliers and the tree comparison they use.

pub mod error;
pub mod filter;
mod fsutil;
pub mod metadata;
pub mod mount;
pub mod native;
pub mod overlay;
mod snapshotter;
mod store;
pub mod types;

#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use error::{Error, ErrorKind, Result};
pub use filter::Filter;
pub use mount::{Mount, MountGuard, TempMount, mount_all, unmount, unmount_all};
pub use native::NativeSnapshotter;
pub use overlay::{OverlayOptions, OverlaySnapshotter};
pub use snapshotter::{Snapshotter, WalkFn};
pub use types::{
    Capability, DirLayout, INHERITED_LABEL_PREFIX, Info, Kind, LABEL_GC_ROOT, LABEL_SNAPSHOT_REF,
    Labels, Opts, Usage, WritableDir, filter_inherited_labels,
};

/// containerd's key format for unpack snapshots: `extract-<random> <chainID>`.
pub fn unpack_key(random: &str, chain_id: &str) -> String {
    format!("extract-{random} {chain_id}")
}
