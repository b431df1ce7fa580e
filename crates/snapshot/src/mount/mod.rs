//! [`Mount`]: a mount description as snapshotters return it, and the code to perform it.
//!
//! A `Mount` is containerd's `{type, source, target, options}`. Options mix mount flags
//! (`ro`, `rbind`, `nosuid`, …, parsed like `mount(8)`) and filesystem data
//! (`lowerdir=…`, `index=off`). There is no length limit on the options a `Mount` carries;
//! [`Mount::mount`] decides how to hand them to the kernel:
//!
//! * `bind`/`rbind`: `mount(2)` with `MS_BIND[|MS_REC]`, then a bind remount for `ro` and
//!   the other flags (a bind mount ignores them on creation).
//! * `overlay`: if the data fits the kernel's one-page limit (with containerd's 512-byte
//!   margin), classic `mount(2)`. Otherwise the new mount API: `fsopen("overlay")`, one
//!   `fsconfig(lowerdir+)` per lower (Linux ≥ 6.8; no page limit), `fsmount` and
//!   `move_mount`. Where that is unavailable, the lowerdirs are rewritten relative to their
//!   common directory and mounted from a helper thread that `unshare(CLONE_FS)`s and
//!   `chdir`s there (containerd's `compactLowerdirOption`). More than [`MAX_LOWERS`] lowers
//!   are refused with `InvalidArgument` (the kernel's stack limit).
//! * anything else: `mount(2)` with the type, flags and joined data.
//!
//! [`MountGuard`] unmounts on drop; [`TempMount`] also creates and removes the mount point.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;

mod overlay;

use overlay::{FsconfigError, overlay_compacted, overlay_fsconfig, overlay_legacy, page_limit};

/// The most lower directories an overlay mount may stack (kernel `OVL_MAX_STACK`).
pub const MAX_LOWERS: usize = 500;

/// One mount: containerd's `mount.Mount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Filesystem type: `bind`, `overlay`, `tmpfs`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Source: a path for binds, a label (`overlay`) for overlay.
    pub source: String,
    /// Optional sub-path of the mount point this mount goes to (for stacked mounts);
    /// `None` mounts at the target itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PathBuf>,
    /// Flags and data options, in order.
    pub options: Vec<String>,
}

#[derive(Debug)]
struct Parsed {
    flags: MountFlags,
    propagation: MountPropagationFlags,
    data: Vec<String>,
}

fn parse_options(options: &[String]) -> Parsed {
    let mut p = Parsed {
        flags: MountFlags::empty(),
        propagation: MountPropagationFlags::empty(),
        data: Vec::new(),
    };
    for o in options {
        let (set, clear) = match o.as_str() {
            "defaults" => (MountFlags::empty(), MountFlags::empty()),
            "ro" => (MountFlags::RDONLY, MountFlags::empty()),
            "rw" => (MountFlags::empty(), MountFlags::RDONLY),
            "bind" => (MountFlags::BIND, MountFlags::empty()),
            "rbind" => (MountFlags::BIND | MountFlags::REC, MountFlags::empty()),
            "nosuid" => (MountFlags::NOSUID, MountFlags::empty()),
            "suid" => (MountFlags::empty(), MountFlags::NOSUID),
            "nodev" => (MountFlags::NODEV, MountFlags::empty()),
            "dev" => (MountFlags::empty(), MountFlags::NODEV),
            "noexec" => (MountFlags::NOEXEC, MountFlags::empty()),
            "exec" => (MountFlags::empty(), MountFlags::NOEXEC),
            "sync" => (MountFlags::SYNCHRONOUS, MountFlags::empty()),
            "async" => (MountFlags::empty(), MountFlags::SYNCHRONOUS),
            "dirsync" => (MountFlags::DIRSYNC, MountFlags::empty()),
            "noatime" => (MountFlags::NOATIME, MountFlags::empty()),
            "atime" => (MountFlags::empty(), MountFlags::NOATIME),
            "nodiratime" => (MountFlags::NODIRATIME, MountFlags::empty()),
            "diratime" => (MountFlags::empty(), MountFlags::NODIRATIME),
            "relatime" => (MountFlags::RELATIME, MountFlags::empty()),
            "norelatime" => (MountFlags::empty(), MountFlags::RELATIME),
            "strictatime" => (MountFlags::STRICTATIME, MountFlags::empty()),
            "nostrictatime" => (MountFlags::empty(), MountFlags::STRICTATIME),
            "private" => {
                p.propagation |= MountPropagationFlags::PRIVATE;
                continue;
            }
            "rprivate" => {
                p.propagation |= MountPropagationFlags::PRIVATE | MountPropagationFlags::REC;
                continue;
            }
            "shared" | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable" => {
                let base = match o.trim_start_matches('r') {
                    "shared" => MountPropagationFlags::SHARED,
                    "slave" => MountPropagationFlags::DOWNSTREAM,
                    _ => MountPropagationFlags::UNBINDABLE,
                };
                p.propagation |= base;
                if o.starts_with('r') {
                    p.propagation |= MountPropagationFlags::REC;
                }
                continue;
            }
            _ => {
                p.data.push(o.clone());
                continue;
            }
        };
        p.flags = (p.flags | set) & !clear;
    }
    p
}

impl Mount {
    /// A bind mount of `source`, read-only when `readonly`, recursive (`rbind`).
    pub fn bind(source: impl Into<String>, readonly: bool) -> Self {
        Mount {
            kind: "bind".into(),
            source: source.into(),
            target: None,
            options: vec![if readonly { "ro" } else { "rw" }.into(), "rbind".into()],
        }
    }

    /// The value of the data option `key=` (last occurrence), if any.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find_map(|o| o.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }

    /// Whether the mount is read-only (`ro` given after any `rw`).
    pub fn is_readonly(&self) -> bool {
        parse_options(&self.options)
            .flags
            .contains(MountFlags::RDONLY)
    }

    /// Whether this is a bind mount (type `bind` or a `bind`/`rbind` option).
    pub fn is_bind(&self) -> bool {
        self.kind == "bind"
            || parse_options(&self.options)
                .flags
                .contains(MountFlags::BIND)
    }

    /// Overlay lower directories, highest (nearest parent) first; empty when none.
    pub fn lowerdirs(&self) -> Vec<PathBuf> {
        self.option("lowerdir")
            .map(|v| {
                v.split(':')
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Overlay upper directory, if any.
    pub fn upperdir(&self) -> Option<PathBuf> {
        self.option("upperdir").map(PathBuf::from)
    }

    /// Overlay work directory, if any.
    pub fn workdir(&self) -> Option<PathBuf> {
        self.option("workdir").map(PathBuf::from)
    }

    /// Mounts onto `target` (joined with [`Mount::target`] when set). Returns a guard that
    /// unmounts on drop. Errors: `InvalidArgument` for an unusable description (too many
    /// lowers, options too long for every strategy), `Io` for a failed syscall.
    pub fn mount(&self, target: &Path) -> Result<MountGuard> {
        let target = match &self.target {
            Some(sub) => target.join(strip_root(sub)),
            None => target.to_path_buf(),
        };
        let parsed = parse_options(&self.options);
        if self.is_bind() {
            self.mount_bind(&target, &parsed)?;
        } else if self.kind == "overlay" {
            self.mount_overlay(&target, &parsed)?;
        } else {
            let data = std::ffi::CString::new(parsed.data.join(","))
                .map_err(|_| Error::invalid(&self.source, "NUL in mount options"))?;
            rustix::mount::mount(
                self.source.as_str(),
                &target,
                self.kind.as_str(),
                parsed.flags,
                data.as_c_str(),
            )
            .map_err(|e| Error::io("mount", &target, e.into()))?;
        }
        let guard = MountGuard::new(target.clone());
        if !parsed.propagation.is_empty() {
            rustix::mount::mount_change(&target, parsed.propagation)
                .map_err(|e| Error::io("mount propagation", &target, e.into()))?;
        }
        Ok(guard)
    }

    /// Unmounts what [`Mount::mount`] mounted at `target` (joined with [`Mount::target`]):
    /// the top mount there, retrying while busy. Prefer dropping the [`MountGuard`].
    pub fn unmount(&self, target: &Path) -> Result<()> {
        match &self.target {
            Some(sub) => unmount(&target.join(strip_root(sub))),
            None => unmount(target),
        }
    }

    fn mount_bind(&self, target: &Path, p: &Parsed) -> Result<()> {
        let src = Path::new(&self.source);
        if p.flags.contains(MountFlags::REC) {
            rustix::mount::mount_bind_recursive(src, target)
        } else {
            rustix::mount::mount_bind(src, target)
        }
        .map_err(|e| Error::io("bind mount", target, e.into()))?;
        let extra = p.flags & !(MountFlags::BIND | MountFlags::REC);
        if !extra.is_empty()
            && let Err(e) = rustix::mount::mount_remount(target, extra | MountFlags::BIND, "")
        {
            let _ = unmount_all(target);
            return Err(Error::io("bind remount", target, e.into()));
        }
        Ok(())
    }

    fn mount_overlay(&self, target: &Path, p: &Parsed) -> Result<()> {
        let lowers = self.lowerdirs();
        if lowers.len() > MAX_LOWERS {
            return Err(Error::invalid(
                target.display().to_string(),
                format!(
                    "overlay with {} lower directories exceeds the kernel limit of {MAX_LOWERS}",
                    lowers.len()
                ),
            ));
        }
        let data = p.data.join(",");
        if data.len() < page_limit() {
            return overlay_legacy(&self.source, target, p.flags, &data, None);
        }
        match overlay_fsconfig(&self.source, target, p) {
            Ok(()) => Ok(()),
            Err(FsconfigError::Unsupported(why)) => {
                tracing::debug!(target = %target.display(), %why, "lowerdir+ unavailable, compacting lowerdir");
                overlay_compacted(&self.source, target, p)
            }
            Err(FsconfigError::Failed(e)) => Err(e),
        }
    }
}

fn strip_root(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// Unmounts the top mount at `target`, retrying while it is busy (up to ~1 s).
/// Errors with `Io` (`EINVAL` when nothing is mounted there).
pub fn unmount(target: &Path) -> Result<()> {
    let mut delay = Duration::from_millis(5);
    loop {
        match rustix::mount::unmount(target, UnmountFlags::NOFOLLOW) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::BUSY) if delay < Duration::from_millis(640) => {
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(e) => return Err(Error::io("unmount", target, e.into())),
        }
    }
}

/// Unmounts every mount stacked at `target` until none is left. A path that is not a mount
/// point (or does not exist) is success.
pub fn unmount_all(target: &Path) -> Result<()> {
    for _ in 0..64 {
        match unmount(target) {
            Ok(()) => continue,
            Err(Error::Io { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EINVAL) | Some(libc::ENOENT)
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::io(
        "unmount",
        target,
        io::Error::other("more than 64 stacked mounts"),
    ))
}

/// Mounts all `mounts` in order onto `target` (each at its [`Mount::target`] sub-path).
/// On failure the mounts already made are undone. The guard unmounts in reverse order.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<MountGuard> {
    let mut all = MountGuard {
        targets: Vec::new(),
    };
    for m in mounts {
        let mut g = m.mount(target)?;
        all.targets.append(&mut g.targets);
    }
    Ok(all)
}

/// Unmounts what it guards when dropped (errors are logged). Call [`MountGuard::unmount`]
/// to see errors, or [`MountGuard::disarm`] to keep the mounts.
#[derive(Debug)]
#[must_use = "dropping the guard unmounts immediately"]
pub struct MountGuard {
    targets: Vec<PathBuf>,
}

impl MountGuard {
    /// A guard for a mount made elsewhere at `target`.
    pub fn new(target: PathBuf) -> Self {
        MountGuard {
            targets: vec![target],
        }
    }

    /// The mount points, in mount order.
    pub fn targets(&self) -> &[PathBuf] {
        &self.targets
    }

    /// Unmounts now, reporting the first error.
    pub fn unmount(mut self) -> Result<()> {
        self.unmount_inner()
    }

    /// Keeps the mounts; returns their mount points.
    pub fn disarm(mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.targets)
    }

    fn unmount_inner(&mut self) -> Result<()> {
        let mut first = None;
        while let Some(t) = self.targets.pop() {
            if let Err(e) = unmount(&t) {
                tracing::warn!(target = %t.display(), error = %e, "unmount failed");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = self.unmount_inner();
    }
}

/// Mounts `mounts` on a fresh directory under a parent directory; on drop unmounts and
/// removes the (then empty) directory. Never deletes contents: if the unmount fails, the
/// directory stays.
#[derive(Debug)]
pub struct TempMount {
    guard: Option<MountGuard>,
    dir: PathBuf,
}

impl TempMount {
    /// Creates `<parent>/berth-mount-XXXX` (mode 0700) and mounts `mounts` there.
    pub fn new(mounts: &[Mount], parent: &Path) -> Result<Self> {
        let dir = parent.join(fsutil::unique_name("berth-mount-"));
        fsutil::mkdir_mode(&dir, 0o700)?;
        match mount_all(mounts, &dir) {
            Ok(guard) => Ok(TempMount {
                guard: Some(guard),
                dir,
            }),
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// Where the mounts are visible.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Unmounts and removes the directory, reporting errors.
    pub fn finish(mut self) -> Result<()> {
        self.finish_inner()
    }

    fn finish_inner(&mut self) -> Result<()> {
        if let Some(g) = self.guard.take() {
            g.unmount()?;
        }
        match fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("rmdir", &self.dir, e)),
        }
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if let Err(e) = self.finish_inner() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "temporary mount cleanup failed");
        }
    }
}

#[cfg(test)]
mod tests;
