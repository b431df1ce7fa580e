//! The snapshotter conformance suite (containerd's `core/snapshots/testsuite`), exported so
//! any [`Snapshotter`] can run it (feature `testsuite`).
//!
//! Every case is a `pub fn` taking a [`Factory`] (a closure that opens a snapshotter on a
//! given root directory) and returning [`CaseResult`]. A case makes its own temporary
//! directory with `root/` (handed to the factory) and `work/` (mount points, the flat
//! reference tree), sets the umask to 0 like containerd's `clearMask`, and on exit (also on
//! failure or panic) unmounts everything still mounted below its directory, closes the
//! snapshotter and removes the directory. All snapshots carry the label
//! `containerd.io/gc.root`.
//!
//! [`SNAPSHOTTER_SUITE`] lists the 21 cases under containerd's `t.Run` names (typos
//! included); [`overlay`] holds the overlay-specific tests. Cases need root (they mount).
//!
//! ```no_run
//! use berth_snapshot::{testsuite, NativeSnapshotter, Snapshotter};
//! let factory = |root: &std::path::Path| -> berth_snapshot::Result<Box<dyn Snapshotter>> {
//!     Ok(Box::new(NativeSnapshotter::new(root)?))
//! };
//! for (name, case) in testsuite::SNAPSHOTTER_SUITE {
//!     if let Err(e) = case(&factory) { panic!("{name}: {e}"); }
//! }
//! ```

pub mod cases;
pub mod fstest;
pub mod overlay;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::mount::{TempMount, mount_all, unmount};
use crate::{LABEL_GC_ROOT, Opts, Snapshotter};
use fstest::Applier;

/// Opens a snapshotter rooted at the given (existing, empty) directory.
pub type Factory = dyn Fn(&Path) -> crate::Result<Box<dyn Snapshotter>> + Send + Sync;

/// A conformance case.
pub type Case = fn(&Factory) -> CaseResult;

/// Outcome of one case.
pub type CaseResult = Result<(), Failure>;

/// Why a case failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong, with context.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl Failure {
    /// A failure with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
        }
    }
}

/// Adds context to any displayable error, turning it into a [`Failure`].
pub trait Context<T> {
    /// Maps the error to `Failure("<what>: <error>")`.
    fn ctx(self, what: &str) -> Result<T, Failure>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(format!("{what}: {e}")))
    }
}

/// Fails the case with a formatted message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::testsuite::Failure::new(format!($($arg)+)));
        }
    };
}
pub use ensure;

/// containerd's 21 SnapshotterSuite cases, by their `t.Run` names.
pub const SNAPSHOTTER_SUITE: &[(&str, Case)] = &[
    ("Basic", cases::basic),
    ("StatActive", cases::stat_active),
    ("StatComitted", cases::stat_committed),
    ("TransitivityTest", cases::transitivity),
    ("PreareViewFailingtest", cases::prepare_view_failing),
    ("Update", cases::update),
    ("Remove", cases::remove),
    ("Walk", cases::walk),
    ("LayerFileupdate", cases::layer_file_update),
    (
        "RemoveDirectoryInLowerLayer",
        cases::remove_directory_in_lower_layer,
    ),
    ("Chown", cases::chown),
    (
        "DirectoryPermissionOnCommit",
        cases::directory_permission_on_commit,
    ),
    (
        "RemoveIntermediateSnapshot",
        cases::remove_intermediate_snapshot,
    ),
    (
        "DeletedFilesInChildSnapshot",
        cases::deleted_files_in_child_snapshot,
    ),
    ("MoveFileFromLowerLayer", cases::move_file_from_lower_layer),
    ("ViewReadonly", cases::view_readonly),
    ("StatInWalk", cases::stat_in_walk),
    ("CloseTwice", cases::close_twice),
    ("RootPermission", cases::root_permission),
    ("Rename", cases::rename),
    ("128LayersMount", cases::layers_128_mount),
];

/// berth's extra cases, run like the containerd ones against every backend.
pub const EXTRA_CASES: &[(&str, Case)] = &[("SpecialFiles", cases::special_files)];

/// Runs every case of [`SNAPSHOTTER_SUITE`] in turn; returns each name with its result.
pub fn run_suite(factory: &Factory) -> Vec<(&'static str, CaseResult)> {
    SNAPSHOTTER_SUITE
        .iter()
        .map(|(name, case)| (*name, case(factory)))
        .collect()
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique name for this process (`<prefix>-<pid>-<n>`).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The per-case environment: a temporary directory with `root/` and `work/`, and the
/// snapshotter under test. Dropping it unmounts leftovers, closes and deletes everything.
#[derive(Debug)]
pub struct Harness {
    dir: PathBuf,
    /// Root handed to the factory.
    pub root: PathBuf,
    /// Scratch area for mount points and flat reference trees.
    pub work: PathBuf,
    /// The snapshotter under test.
    pub sn: Box<dyn Snapshotter>,
}

impl Harness {
    /// Creates the directories (under `$TMPDIR`), sets umask 0 and opens the snapshotter.
    pub fn new(factory: &Factory) -> Result<Self, Failure> {
        Self::with(|root| factory(root).ctx("open snapshotter"))
    }

    /// Like [`Harness::new`] with a custom opener.
    pub fn with(
        open: impl FnOnce(&Path) -> Result<Box<dyn Snapshotter>, Failure>,
    ) -> Result<Self, Failure> {
        // containerd's clearMask: modes in the suite are exact.
        rustix::process::umask(rustix::fs::Mode::empty());
        let dir = std::env::temp_dir().join(unique("berth-snapshot-suite"));
        let root = dir.join("root");
        let work = dir.join("work");
        std::fs::create_dir_all(&root).ctx("create root")?;
        std::fs::create_dir_all(&work).ctx("create work")?;
        match open(&root) {
            Ok(sn) => Ok(Harness {
                dir,
                root,
                work,
                sn,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// A fresh directory under `work/`.
    pub fn work_dir(&self, name: &str) -> Result<PathBuf, Failure> {
        let d = self.work.join(unique(name));
        std::fs::create_dir(&d).ctx("create work dir")?;
        Ok(d)
    }

    /// Mounts `mounts` on a fresh directory under `work/` (unmounted on drop).
    pub fn mount(&self, mounts: &[crate::Mount]) -> Result<TempMount, Failure> {
        TempMount::new(mounts, &self.work).ctx("mount")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.sn.close();
        let mut leftover = mounts_under(&self.dir);
        leftover.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        let mut stuck = false;
        for m in leftover {
            if unmount(&m).is_err()
                && rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH).is_err()
            {
                stuck = true;
            }
        }
        if !stuck {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Mount points (from `/proc/self/mountinfo`) at or below `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Options carrying the GC-root label every suite snapshot has.
pub fn gc_opts() -> Opts {
    Opts::new().with_label(LABEL_GC_ROOT, "testsuite")
}

/// Prepare on `parent` → mount → apply → unmount → commit as `name`.
pub fn create_snapshot(
    h: &Harness,
    name: &str,
    parent: &str,
    appliers: &[Applier],
) -> Result<(), Failure> {
    let key = format!("{name}-active");
    let mounts = h.sn.prepare(&key, parent, &gc_opts()).ctx("prepare")?;
    {
        let m = h.mount(&mounts)?;
        fstest::apply(m.path(), appliers).ctx("apply")?;
        m.finish().ctx("unmount")?;
    }
    h.sn.commit(name, &key, &gc_opts()).ctx("commit")
}

/// View `name`, mount it and compare it with `expected`.
pub fn check_snapshot(h: &Harness, name: &str, expected: &Path) -> Result<(), Failure> {
    let key = unique("check-view");
    let mounts = h.sn.view(&key, name, &gc_opts()).ctx("view")?;
    let res = (|| {
        let m = h.mount(&mounts)?;
        fstest::check_directory_equal(expected, m.path())
            .map_err(|e| Failure::new(format!("view of {name}: {e}")))?;
        m.finish().ctx("unmount view")
    })();
    h.sn.remove(&key).ctx("remove view")?;
    res
}

/// containerd's `checkSnapshots`: builds a chain layer by layer and, after each layer,
/// checks that a view of it equals a flat directory that received the same changes.
pub fn check_snapshots(h: &Harness, layers: &[Vec<Applier>]) -> Result<Vec<String>, Failure> {
    let flat = h.work_dir("flat")?;
    let mut parent = String::new();
    let mut names = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let name = unique(&format!("layer{i}"));
        create_snapshot(h, &name, &parent, layer)
            .map_err(|e| Failure::new(format!("layer {i}: {e}")))?;
        fstest::apply(&flat, layer).ctx("apply flat")?;
        check_snapshot(h, &name, &flat).map_err(|e| Failure::new(format!("layer {i}: {e}")))?;
        names.push(name.clone());
        parent = name;
    }
    Ok(names)
}

/// Mounts `mounts` at `target` for the duration of `f`.
pub fn with_mounted<T>(
    mounts: &[crate::Mount],
    target: &Path,
    f: impl FnOnce(&Path) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let guard = mount_all(mounts, target).ctx("mount")?;
    let out = f(target);
    let unmounted = guard.unmount().ctx("unmount");
    let out = out?;
    unmounted?;
    Ok(out)
}
