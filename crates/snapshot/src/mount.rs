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
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags,
    UnmountFlags,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;

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

/// containerd's threshold: data of `pagesize - 512` bytes or more is compacted.
fn page_limit() -> usize {
    rustix::param::page_size().saturating_sub(512)
}

fn overlay_legacy(
    source: &str,
    target: &Path,
    flags: MountFlags,
    data: &str,
    chdir: Option<&Path>,
) -> Result<()> {
    let data_c =
        std::ffi::CString::new(data).map_err(|_| Error::invalid(source, "NUL in mount options"))?;
    if data_c.as_bytes_with_nul().len() > rustix::param::page_size() {
        return Err(Error::invalid(
            target.display().to_string(),
            format!("overlay mount options are too long ({} bytes)", data.len()),
        ));
    }
    let run = || {
        rustix::mount::mount(source, target, "overlay", flags, data_c.as_c_str())
            .map_err(|e| Error::io("mount overlay", target, e.into()))
    };
    let Some(dir) = chdir else {
        return run();
    };
    // A private fs context (cwd) for one helper thread, so relative lowerdirs resolve
    // against `dir` without touching the process's working directory.
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: CLONE_FS only detaches this thread's cwd/root/umask; no file
            // descriptor table is unshared, so no fd can become invalid for other threads.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
                .map_err(|e| Error::io("unshare(CLONE_FS)", dir, e.into()))?;
            rustix::process::chdir(dir).map_err(|e| Error::io("chdir", dir, e.into()))?;
            run()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::io(
                "mount overlay",
                target,
                io::Error::other("mount thread panicked"),
            ))
        })
    })
}

/// Lowerdirs rewritten relative to their common directory, mounted from that directory.
fn overlay_compacted(source: &str, target: &Path, p: &Parsed) -> Result<()> {
    let lowers: Vec<PathBuf> = p
        .data
        .iter()
        .filter_map(|o| o.strip_prefix("lowerdir="))
        .flat_map(|v| v.split(':').filter(|l| !l.is_empty()).map(PathBuf::from))
        .collect();
    let common = common_dir(&lowers).ok_or_else(|| {
        Error::invalid(
            target.display().to_string(),
            "overlay options too long and lowerdirs share no common directory",
        )
    })?;
    let rel: Vec<String> = lowers
        .iter()
        .map(|l| {
            l.strip_prefix(&common)
                .map(|r| r.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    // Keep the original option order with the compacted lowerdir in place.
    let mut data = Vec::new();
    for o in &p.data {
        if o.starts_with("lowerdir=") {
            if !data.iter().any(|d: &String| d.starts_with("lowerdir=")) {
                data.push(format!("lowerdir={}", rel.join(":")));
            }
        } else {
            data.push(o.clone());
        }
    }
    overlay_legacy(source, target, p.flags, &data.join(","), Some(&common))
}

/// The deepest directory containing all `paths` that is a proper ancestor of each.
fn common_dir(paths: &[PathBuf]) -> Option<PathBuf> {
    let first = paths.first()?;
    let mut common: Vec<Component<'_>> = first.parent()?.components().collect();
    for p in &paths[1..] {
        let comps: Vec<Component<'_>> = p.parent()?.components().collect();
        let n = common
            .iter()
            .zip(comps.iter())
            .take_while(|(a, b)| a == b)
            .count();
        common.truncate(n);
    }
    // Each lower is `<common>/<id>/fs`; going up to the shared `snapshots/` directory
    // gives the shortest relative paths. Never compact to "/" (nothing saved).
    let dir: PathBuf = common.iter().collect();
    if dir.as_os_str().is_empty() || dir == Path::new("/") {
        return None;
    }
    Some(dir)
}

enum FsconfigError {
    /// The kernel lacks the new mount API or `lowerdir+`: try another strategy.
    Unsupported(String),
    /// The mount itself failed.
    Failed(Error),
}

fn overlay_fsconfig(
    source: &str,
    target: &Path,
    p: &Parsed,
) -> std::result::Result<(), FsconfigError> {
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| FsconfigError::Unsupported(format!("fsopen: {e}")))?;
    let fail = |op: &'static str, fd: &OwnedFd, e: rustix::io::Errno| {
        let log = read_fs_log(fd);
        let err = io::Error::from(e);
        let err = if log.is_empty() {
            err
        } else {
            io::Error::new(err.kind(), format!("{err} ({log})"))
        };
        FsconfigError::Failed(Error::io(op, target, err))
    };
    let mut first_lower = true;
    for o in &p.data {
        if let Some(v) = o.strip_prefix("lowerdir=") {
            for l in v.split(':').filter(|l| !l.is_empty()) {
                if let Err(e) = rustix::mount::fsconfig_set_string(&fs, "lowerdir+", l) {
                    if first_lower {
                        return Err(FsconfigError::Unsupported(format!("lowerdir+: {e}")));
                    }
                    return Err(fail("fsconfig lowerdir+", &fs, e));
                }
                first_lower = false;
            }
        } else if let Some((k, v)) = o.split_once('=') {
            rustix::mount::fsconfig_set_string(&fs, k, v).map_err(|e| fail("fsconfig", &fs, e))?;
        } else {
            rustix::mount::fsconfig_set_flag(&fs, o.as_str())
                .map_err(|e| fail("fsconfig flag", &fs, e))?;
        }
    }
    rustix::mount::fsconfig_set_string(&fs, "source", source)
        .map_err(|e| fail("fsconfig source", &fs, e))?;
    rustix::mount::fsconfig_create(&fs).map_err(|e| fail("fsconfig create", &fs, e))?;
    let mut attrs = MountAttrFlags::empty();
    for (flag, attr) in [
        (MountFlags::RDONLY, MountAttrFlags::MOUNT_ATTR_RDONLY),
        (MountFlags::NOSUID, MountAttrFlags::MOUNT_ATTR_NOSUID),
        (MountFlags::NODEV, MountAttrFlags::MOUNT_ATTR_NODEV),
        (MountFlags::NOEXEC, MountAttrFlags::MOUNT_ATTR_NOEXEC),
        (MountFlags::NOATIME, MountAttrFlags::MOUNT_ATTR_NOATIME),
        (
            MountFlags::NODIRATIME,
            MountAttrFlags::MOUNT_ATTR_NODIRATIME,
        ),
        (
            MountFlags::STRICTATIME,
            MountAttrFlags::MOUNT_ATTR_STRICTATIME,
        ),
    ] {
        if p.flags.contains(flag) {
            attrs |= attr;
        }
    }
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .map_err(|e| fail("fsmount", &fs, e))?;
    rustix::mount::move_mount(
        mnt.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| FsconfigError::Failed(Error::io("move_mount", target, e.into())))
}

/// Reads the kernel's messages for an fs context (`e …`/`w …` lines), for error context.
fn read_fs_log(fd: &OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = rustix::io::read(fd, &mut buf) {
        if n == 0 {
            break;
        }
        out.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
        if out.len() > 16 {
            break;
        }
    }
    out.join("; ")
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
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let p = parse_options(&[
            "ro".into(),
            "rbind".into(),
            "nosuid".into(),
            "index=off".into(),
            "rprivate".into(),
        ]);
        assert!(
            p.flags
                .contains(MountFlags::RDONLY | MountFlags::BIND | MountFlags::REC)
        );
        assert!(p.flags.contains(MountFlags::NOSUID));
        assert_eq!(p.data, vec!["index=off".to_string()]);
        assert!(p.propagation.contains(MountPropagationFlags::PRIVATE));
        let p = parse_options(&["ro".into(), "rw".into()]);
        assert!(!p.flags.contains(MountFlags::RDONLY));
    }

    #[test]
    fn accessors_read_overlay_options() {
        let m = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: None,
            options: vec![
                "workdir=/r/1/work".into(),
                "upperdir=/r/1/fs".into(),
                "lowerdir=/r/3/fs:/r/2/fs".into(),
            ],
        };
        assert_eq!(m.workdir().unwrap(), Path::new("/r/1/work"));
        assert_eq!(m.upperdir().unwrap(), Path::new("/r/1/fs"));
        assert_eq!(
            m.lowerdirs(),
            vec![PathBuf::from("/r/3/fs"), PathBuf::from("/r/2/fs")]
        );
        assert!(!m.is_readonly());
        assert!(Mount::bind("/x", true).is_readonly());
        assert!(Mount::bind("/x", true).is_bind());
    }

    #[test]
    fn common_dir_finds_snapshots_dir() {
        let p = vec![
            PathBuf::from("/a/snapshots/10/fs"),
            PathBuf::from("/a/snapshots/1/fs"),
        ];
        assert_eq!(common_dir(&p).unwrap(), Path::new("/a/snapshots"));
        assert!(common_dir(&[PathBuf::from("/x/fs"), PathBuf::from("/y/fs")]).is_none());
    }

    #[test]
    fn too_many_lowers_is_invalid_argument() {
        let lowers: Vec<String> = (0..=MAX_LOWERS)
            .map(|i| format!("/nonexistent/{i}/fs"))
            .collect();
        let m = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: None,
            options: vec![format!("lowerdir={}", lowers.join(":"))],
        };
        let err = m.mount(Path::new("/nonexistent-target")).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("500"));
    }

    /// Root and overlayfs are needed; outside CI their absence skips with a reason.
    fn privileged() -> bool {
        let ok = rustix::process::geteuid().is_root() && crate::overlay::overlay_supported();
        if !ok {
            assert!(
                std::env::var_os("CI").is_none(),
                "mount tests need root and overlayfs (CI is set)"
            );
            eprintln!("skipping: needs root and overlayfs");
        }
        ok
    }

    /// 128 lowers under a long directory name, so the plain lowerdir list exceeds a page.
    fn deep_stack() -> (tempfile::TempDir, Mount, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("x".repeat(60)).join("snapshots");
        let mut lowers = Vec::new();
        for i in 0..128 {
            let fs_dir = base.join(i.to_string()).join("fs");
            fs::create_dir_all(&fs_dir).unwrap();
            fs::write(fs_dir.join(format!("f{i}")), i.to_string()).unwrap();
            fs::write(fs_dir.join("top"), i.to_string()).unwrap();
            lowers.push(fs_dir.to_string_lossy().into_owned());
        }
        lowers.reverse(); // nearest (127) first
        let upper = base.join("up/fs");
        let work = base.join("up/work");
        fs::create_dir_all(&upper).unwrap();
        fs::create_dir_all(&work).unwrap();
        let m = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: None,
            options: vec![
                format!("workdir={}", work.display()),
                format!("upperdir={}", upper.display()),
                format!("lowerdir={}", lowers.join(":")),
            ],
        };
        assert!(m.options.join(",").len() > rustix::param::page_size());
        let target = tmp.path().join("mnt");
        fs::create_dir(&target).unwrap();
        (tmp, m, target)
    }

    fn check_stack(target: &Path) {
        assert_eq!(fs::read_to_string(target.join("top")).unwrap(), "127");
        assert_eq!(fs::read_to_string(target.join("f0")).unwrap(), "0");
        assert_eq!(fs::read_to_string(target.join("f77")).unwrap(), "77");
        fs::write(target.join("new"), b"upper").unwrap();
    }

    #[test]
    fn deep_overlay_mounts_with_fsconfig_lowerdir_plus() {
        if !privileged() {
            return;
        }
        let (_tmp, m, target) = deep_stack();
        let p = parse_options(&m.options);
        match overlay_fsconfig(&m.source, &target, &p) {
            Ok(()) => {}
            Err(FsconfigError::Unsupported(why)) => {
                eprintln!("kernel lacks lowerdir+ ({why}); compaction covers this kernel");
                return;
            }
            Err(FsconfigError::Failed(e)) => panic!("{e}"),
        }
        let guard = MountGuard::new(target.clone());
        check_stack(&target);
        guard.unmount().unwrap();
    }

    #[test]
    fn deep_overlay_mounts_with_compacted_relative_lowerdirs() {
        if !privileged() {
            return;
        }
        let (tmp, m, target) = deep_stack();
        let p = parse_options(&m.options);
        overlay_compacted(&m.source, &target, &p).unwrap();
        let guard = MountGuard::new(target.clone());
        check_stack(&target);
        guard.unmount().unwrap();
        // The process working directory is untouched by the helper thread's chdir.
        assert_ne!(
            std::env::current_dir().unwrap(),
            tmp.path().join("x".repeat(60))
        );
    }

    #[test]
    fn mount_picks_a_strategy_for_deep_overlays() {
        if !privileged() {
            return;
        }
        let (_tmp, m, target) = deep_stack();
        let guard = m.mount(&target).unwrap();
        check_stack(&target);
        drop(guard);
        assert!(
            fs::read_dir(&target).unwrap().next().is_none(),
            "still mounted"
        );
    }

    #[test]
    fn readonly_bind_rejects_writes_and_guard_unmounts() {
        if !privileged() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let dst = tmp.path().join("dst");
        fs::create_dir(&src).unwrap();
        fs::create_dir(&dst).unwrap();
        fs::write(src.join("f"), b"x").unwrap();
        {
            let _g = Mount::bind(src.to_string_lossy(), true)
                .mount(&dst)
                .unwrap();
            assert_eq!(fs::read(dst.join("f")).unwrap(), b"x");
            let err = fs::write(dst.join("g"), b"y").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EROFS));
        }
        assert!(!dst.join("f").exists(), "guard did not unmount");
        unmount_all(&dst).unwrap();
    }

    #[test]
    fn temp_mount_removes_its_directory() {
        if !privileged() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        let tm = TempMount::new(&[Mount::bind(src.to_string_lossy(), false)], tmp.path()).unwrap();
        let p = tm.path().to_path_buf();
        fs::write(p.join("w"), b"1").unwrap();
        tm.finish().unwrap();
        assert!(!p.exists());
        assert_eq!(fs::read(src.join("w")).unwrap(), b"1");
    }
}
