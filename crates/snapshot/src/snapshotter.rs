//! The [`Snapshotter`] trait: containerd's snapshot contract.

use crate::error::Result;
use crate::mount::Mount;
use crate::types::{Capability, Info, Opts, Usage, WritableDir};

/// Callback of [`Snapshotter::walk`]; returning an error stops the walk with that error.
pub type WalkFn<'a> = dyn FnMut(&Info) -> Result<()> + 'a;

/// A snapshotter manages a set of snapshots: directory trees built on top of each other.
///
/// All methods are blocking and may be called concurrently from several threads (and, for
/// the backends of this crate, several processes on one root). Keys of active and view
/// snapshots and names of committed snapshots share **one** key space.
///
/// # Importing a layer
/// To import a layer, prepare an active snapshot on top of the previous layer (or of `""`,
/// the empty tree, for the first one), write the layer's changes into it, and commit it
/// under a name, usually the layer's chainID:
///
/// ```no_run
/// # use berth_snapshot::*;
/// # fn f(sn: &dyn Snapshotter, parent: &str, chain_id: &str, tmp: &std::path::Path) -> Result<()> {
/// let key = unpack_key("a1b2", chain_id);
/// let mounts = sn.prepare(&key, parent, &Opts::new().with_label(LABEL_SNAPSHOT_REF, chain_id))?;
/// {
///     let m = TempMount::new(&mounts, tmp)?;      // mounted until dropped
///     // apply the layer tar into m.path() ...
/// }
/// sn.commit(chain_id, &key, &Opts::new())?;       // `key` is gone, `chain_id` is Committed
/// # Ok(()) }
/// ```
///
/// `commit` creates a **new** record (same parent, same storage) and removes the active
/// key; an active snapshot never turns into a committed one in place. Committing a name
/// that exists fails with `AlreadyExists`, which an unpacker treats as "already unpacked".
///
/// # Running a container
/// Prepare an active snapshot on the image's top layer and mount it as the root
/// filesystem. Changes go to the active snapshot only; its parents never change:
///
/// ```no_run
/// # use berth_snapshot::*;
/// # fn f(sn: &dyn Snapshotter, top: &str, rootfs: &std::path::Path) -> Result<()> {
/// let mounts = sn.prepare("my-container", top, &Opts::new())?;
/// let guard = mount_all(&mounts, rootfs)?;
/// // ... run the container on `rootfs` ...
/// drop(guard);                                   // unmounts
/// sn.remove("my-container")?;                    // or commit it to save the changes
/// # Ok(()) }
/// ```
///
/// Use [`Snapshotter::view`] instead of `prepare` for a read-only tree (inspection,
/// `berth mount`); a view can never be committed.
///
/// # Removing
/// [`Snapshotter::remove`] fails with `FailedPrecondition` while another snapshot (active,
/// view or committed) has the snapshot as its parent. Remove children first.
/// Directory removal can lag behind the record; [`Snapshotter::cleanup`] sweeps leftovers.
pub trait Snapshotter: Send + Sync + std::fmt::Debug {
    /// Information about the snapshot `key` (any kind). NotFound when missing.
    fn stat(&self, key: &str) -> Result<Info>;

    /// Updates the mutable fields (labels only) of the snapshot `info.name`.
    ///
    /// With no field paths, the labels are replaced by `info.labels` (other fields of `info`,
    /// such as `parent`, are ignored). Field paths `labels` (replace all) and `labels.<k>`
    /// (set `k` from `info.labels`, or delete it when absent there) select what changes; any
    /// other field path is `InvalidArgument`. `updated` moves, `created` stays.
    fn update(&self, info: &Info, fieldpaths: &[&str]) -> Result<Info>;

    /// Disk usage of the snapshot's own layer (parents excluded). For active snapshots this
    /// walks the directory (O(size)); committed snapshots return the value cached at commit.
    fn usage(&self, key: &str) -> Result<Usage>;

    /// The mounts of an active or view snapshot (FailedPrecondition for committed ones).
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;

    /// Creates an active snapshot `key` on top of the committed `parent` (`""` = empty tree)
    /// and returns its mounts. AlreadyExists if `key` is taken, NotFound if the parent is
    /// missing, InvalidArgument if the parent is not committed.
    fn prepare(&self, key: &str, parent: &str, opts: &Opts) -> Result<Vec<Mount>>;

    /// Like [`Snapshotter::prepare`] but read-only; the view can be mounted, never committed.
    fn view(&self, key: &str, parent: &str, opts: &Opts) -> Result<Vec<Mount>>;

    /// Commits active `key` as `name`: `key` disappears, `name` appears as Committed with the
    /// same parent, labels replaced by `opts.labels` and usage cached. With `opts.parent`
    /// set (and [`Capability::Rebase`]) a snapshot prepared without parent is rebased onto
    /// that committed parent. Errors: NotFound (`key`), AlreadyExists (`name`),
    /// FailedPrecondition (`key` not active), InvalidArgument (parent change not allowed).
    fn commit(&self, name: &str, key: &str, opts: &Opts) -> Result<()>;

    /// Removes a snapshot of any kind. FailedPrecondition while it has children.
    fn remove(&self, key: &str) -> Result<()>;

    /// Calls `f` for every snapshot matching `filters` (containerd syntax, see
    /// [`crate::filter`]; several strings are OR-ed). The callback runs without locks held,
    /// so it may call other methods of the snapshotter.
    fn walk(&self, filters: &[&str], f: &mut WalkFn<'_>) -> Result<()>;

    /// Removes directories that no record owns (crash leftovers, deferred removals).
    fn cleanup(&self) -> Result<()>;

    /// Releases the snapshotter; later calls fail with FailedPrecondition. Idempotent.
    fn close(&self) -> Result<()>;

    /// Whether an optional capability is supported.
    fn supports(&self, cap: Capability) -> bool;

    /// The writable directory of active snapshot `key`, for appliers that write without
    /// mounting (see the crate docs). `Ok(None)` when the backend has no such directory;
    /// FailedPrecondition when `key` is not active.
    fn writable_dir(&self, key: &str) -> Result<Option<WritableDir>> {
        let _ = key;
        Ok(None)
    }
}
