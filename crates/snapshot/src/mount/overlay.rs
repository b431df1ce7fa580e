//! The three ways to mount an overlay: classic `mount(2)`, the new mount API with one
//! `lowerdir+` per lower, and relative-path compaction from a helper thread.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags};

use super::Parsed;
use crate::error::{Error, Result};

/// containerd's threshold: data of `pagesize - 512` bytes or more is compacted.
pub(super) fn page_limit() -> usize {
    rustix::param::page_size().saturating_sub(512)
}

pub(super) fn overlay_legacy(
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
pub(super) fn overlay_compacted(source: &str, target: &Path, p: &Parsed) -> Result<()> {
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
pub(super) fn common_dir(paths: &[PathBuf]) -> Option<PathBuf> {
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

pub(super) enum FsconfigError {
    /// The kernel lacks the new mount API or `lowerdir+`: try another strategy.
    Unsupported(String),
    /// The mount itself failed.
    Failed(Error),
}

pub(super) fn overlay_fsconfig(
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
pub(super) fn read_fs_log(fd: &OwnedFd) -> String {
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
