//! The overlayfs backend.
//!
//! Each snapshot owns `snapshots/<id>/fs` (its layer: the upper directory while active, a
//! lower directory once committed) and, while active, `snapshots/<id>/work` (mode 0711).
//! Mounts follow containerd's overlay snapshotter:
//!
//! * no parent → a `bind` of the snapshot's own `fs` (`rw`/`ro` + `rbind`): overlay needs
//!   at least one lower;
//! * a view with one parent → a read-only `bind` of the parent's `fs`;
//! * otherwise `overlay` with options `workdir=…, upperdir=…` (active only), then
//!   `lowerdir=p0:p1:…` with the **nearest parent first**, then the configured options:
//!   `index=off` is added when `/sys/module/overlay/parameters/index` exists and the user
//!   did not set `index` themselves; `userxattr` is added inside a user namespace.
//!
//! The root must be on a filesystem that reports `d_type` (checked at construction).
//!
//! More than [`crate::mount::MAX_LOWERS`] parents are refused at `prepare`/`view` time with
//! `InvalidArgument`. Long lowerdir lists are handled by [`Mount::mount`].
//!
//! Not done (containerd has them): id-mapped (`uidmap=`) mounts, asynchronous removal.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::metadata::Snapshot;
use crate::mount::{MAX_LOWERS, Mount};
use crate::store::{Driver, Paths, Store, delegate_snapshotter};
use crate::types::{Capability, DirLayout, Kind};

/// Where the kernel advertises the overlay `index` feature.
pub const INDEX_PARAMETER: &str = "/sys/module/overlay/parameters/index";

/// Label exposing the upper directory of a snapshot when
/// [`OverlayOptions::upperdir_label`] is set (containerd's `WithUpperdirLabel`).
pub const LABEL_UPPERDIR: &str = "containerd.io/snapshot/overlay.upperdir";

/// Construction options of [`OverlaySnapshotter`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlayOptions {
    /// Extra overlay options appended to every overlay mount (containerd's `mount_options`).
    /// Setting `index=…` here disables the automatic `index=off`.
    pub mount_options: Vec<String>,
    /// Do not add `index=off` even when the kernel supports the parameter.
    pub no_auto_index_off: bool,
    /// Report each snapshot's upper directory in the label [`LABEL_UPPERDIR`] of the infos
    /// returned by stat, walk and update (not stored).
    pub upperdir_label: bool,
}

/// overlayfs snapshotter. See the module docs.
#[derive(Debug)]
pub struct OverlaySnapshotter {
    store: Store<OverlayDriver>,
}

#[derive(Debug)]
struct OverlayDriver {
    options: Vec<String>,
    upperdir_label: bool,
}

impl OverlaySnapshotter {
    /// Opens (creating if needed) an overlay snapshotter rooted at `root`, with default
    /// options. Errors: `Unavailable` when the kernel has no overlayfs, `InvalidArgument`
    /// when the root path contains `:` or `,` (they would break `lowerdir=`), `Io`/`Internal`
    /// for filesystem or metadata failures.
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        Self::with_options(root, OverlayOptions::default())
    }

    /// Like [`OverlaySnapshotter::new`] with explicit options.
    pub fn with_options(root: impl AsRef<Path>, opts: OverlayOptions) -> Result<Self> {
        let root = root.as_ref();
        if !overlay_supported() {
            return Err(Error::Unavailable {
                reason: "overlayfs is not available (not listed in /proc/filesystems)".into(),
            });
        }
        check_root_path(root)?;
        let store = Store::open(root, OverlayDriver::new(opts))?;
        // The canonical path (symlinks resolved) is what goes into the options.
        check_root_path(&store.paths.root)?;
        if !supports_d_type(&store.paths.snapshots)? {
            return Err(Error::Unavailable {
                reason: format!(
                    "{}: the filesystem does not report d_type (e.g. xfs with ftype=0), \
                     which overlayfs needs",
                    store.paths.root.display()
                ),
            });
        }
        Ok(OverlaySnapshotter { store })
    }

    /// The root directory (canonical).
    pub fn root(&self) -> &Path {
        &self.store.paths.root
    }

    /// Checks that every record has its directories (an fsck). Returns the problems found;
    /// empty means consistent. Unowned directories are not problems: see `cleanup`.
    pub fn verify(&self) -> Result<Vec<String>> {
        self.store.verify()
    }

    /// The options appended to every overlay mount (after automatic `index=off`).
    pub fn mount_options(&self) -> &[String] {
        &self.store.driver.options
    }
}

delegate_snapshotter!(OverlaySnapshotter);

fn check_root_path(root: &Path) -> Result<()> {
    let text = root.to_string_lossy();
    if text.contains([':', ',', '\n']) {
        return Err(Error::invalid(
            text.into_owned(),
            "overlay root path must not contain ':', ',' or newlines",
        ));
    }
    Ok(())
}

/// Whether directory entries under `dir` carry their file type (containerd refuses an
/// overlay root without d_type: whiteouts would go unnoticed).
fn supports_d_type(dir: &Path) -> Result<bool> {
    let probe = dir.join(fsutil::unique_name("dtype-probe-"));
    fsutil::mkdir_mode(&probe, 0o700)?;
    let result = (|| {
        fs::write(probe.join("f"), b"").map_err(|e| Error::io("create", &probe, e))?;
        let fd = fs::File::open(&probe).map_err(|e| Error::io("open", &probe, e))?;
        let entries =
            rustix::fs::Dir::read_from(&fd).map_err(|e| Error::io("readdir", &probe, e.into()))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("readdir", &probe, e.into()))?;
            if entry.file_name().to_bytes() == b"f" {
                return Ok(entry.file_type() != rustix::fs::FileType::Unknown);
            }
        }
        Ok(false)
    })();
    let _ = fs::remove_dir_all(&probe);
    result
}

/// Whether this process runs in a user namespace other than the initial one, where overlay
/// must use `user.overlay.*` xattrs (`userxattr`, containerd's `NeedsUserXAttr`).
pub fn in_user_namespace() -> bool {
    fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
        .unwrap_or(false)
}

/// Whether the running kernel offers overlayfs.
pub fn overlay_supported() -> bool {
    fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false)
}

impl OverlayDriver {
    fn new(opts: OverlayOptions) -> Self {
        let mut options = opts.mount_options;
        let user_index = options.iter().any(|o| o.starts_with("index="));
        if !user_index && !opts.no_auto_index_off && Path::new(INDEX_PARAMETER).exists() {
            options.push("index=off".into());
        }
        if in_user_namespace() && !options.iter().any(|o| o == "userxattr") {
            options.push("userxattr".into());
        }
        OverlayDriver {
            options,
            upperdir_label: opts.upperdir_label,
        }
    }
}

fn path_string(p: PathBuf) -> String {
    p.to_string_lossy().into_owned()
}

impl Driver for OverlayDriver {
    fn check(&self, key: &str, snap: &Snapshot) -> Result<()> {
        if snap.parent_ids.len() > MAX_LOWERS {
            return Err(Error::invalid(
                key,
                format!(
                    "{} parents exceed the overlay limit of {MAX_LOWERS} lower directories",
                    snap.parent_ids.len()
                ),
            ));
        }
        Ok(())
    }

    fn populate(&self, paths: &Paths, dir: &Path, snap: &Snapshot) -> Result<()> {
        let fs_dir = dir.join("fs");
        fsutil::mkdir_mode(&fs_dir, 0o755)?;
        if snap.kind == Kind::Active {
            fsutil::mkdir_mode(&dir.join("work"), 0o711)?;
        }
        // The layer root takes the owner of the parent's root, as in containerd.
        if let Some(parent) = snap.parent_ids.first() {
            let pfs = paths.fs(*parent);
            let md = fs::symlink_metadata(&pfs).map_err(|e| Error::io("stat", &pfs, e))?;
            std::os::unix::fs::lchown(&fs_dir, Some(md.uid()), Some(md.gid()))
                .map_err(|e| Error::io("lchown", &fs_dir, e))?;
        }
        Ok(())
    }

    fn mounts(&self, paths: &Paths, snap: &Snapshot) -> Vec<Mount> {
        let readonly = snap.kind == Kind::View;
        if snap.parent_ids.is_empty() {
            return vec![Mount::bind(path_string(paths.fs(snap.id)), readonly)];
        }
        if readonly && snap.parent_ids.len() == 1 {
            return vec![Mount::bind(path_string(paths.fs(snap.parent_ids[0])), true)];
        }
        let mut options = Vec::with_capacity(3 + self.options.len());
        if snap.kind == Kind::Active {
            options.push(format!("workdir={}", path_string(paths.work(snap.id))));
            options.push(format!("upperdir={}", path_string(paths.fs(snap.id))));
        }
        let lowers: Vec<String> = snap
            .parent_ids
            .iter()
            .map(|id| path_string(paths.fs(*id)))
            .collect();
        options.push(format!("lowerdir={}", lowers.join(":")));
        options.extend(self.options.iter().cloned());
        vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: None,
            options,
        }]
    }

    fn supports(&self, cap: Capability) -> bool {
        matches!(cap, Capability::Rebase)
    }

    fn decorate(&self, paths: &Paths, id: u64, info: &mut crate::Info) {
        if self.upperdir_label {
            info.labels
                .insert(LABEL_UPPERDIR.into(), path_string(paths.fs(id)));
        }
    }

    fn verify(&self, paths: &Paths, snap: &Snapshot) -> Option<String> {
        let work = paths.work(snap.id);
        (snap.kind == Kind::Active && !work.is_dir()).then(|| format!("missing {}", work.display()))
    }

    fn layout(&self) -> DirLayout {
        DirLayout::OverlayUpper
    }
}
