//! `berth mount REF TARGET` and `berth umount TARGET`: a read-only view of an unpacked image,
//! for inspection.
//!
//! `mount` unpacks the image first if needed, creates a view snapshot named
//! `berth-mount:<absolute target>` on the image's top chainID and mounts it on TARGET (left
//! mounted when the command exits). `umount` unmounts TARGET and removes that view.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use berth::image::content::ContentStore;
use berth::image::unpack::{self, UnpackOptions};
use berth::oci::Reference;
use berth::snapshot::{ErrorKind, Opts, mount_all, unmount_all};

use crate::snapshot::{SNAPSHOTTERS, open_snapshotter, snapshotter_root};

/// Label on a mount view naming its mount point.
const LABEL_TARGET: &str = "berth.mount/target";
/// Label on a mount view naming its image.
const LABEL_IMAGE: &str = "berth.mount/image";

fn view_key(target: &Path) -> String {
    format!("berth-mount:{}", target.display())
}

/// Runs `berth mount`.
pub fn mount(
    store: &ContentStore,
    root: &Path,
    name: &str,
    target: &Path,
    snapshotter: &str,
) -> Result<()> {
    let sn = open_snapshotter(root, snapshotter)?;
    let name = Reference::parse(name)?.to_string();
    let image = store
        .images()
        .get(&name)
        .with_context(|| format!("image {name}"))?;
    let report = unpack::unpack(
        store,
        sn.as_ref(),
        &image.target,
        &UnpackOptions::new(snapshotter),
    )
    .with_context(|| format!("unpacking {name}"))?;
    if report.applied() > 0 {
        eprintln!("unpacked {} layers of {name}", report.applied());
    }
    let parent = report.chain_id.map(|c| c.to_string()).unwrap_or_default();
    std::fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    let target = std::fs::canonicalize(target)?;
    let key = view_key(&target);
    let opts = Opts::new()
        .with_label(LABEL_TARGET, target.display().to_string())
        .with_label(LABEL_IMAGE, name.clone());
    let mounts = sn.view(&key, &parent, &opts).with_context(|| {
        format!(
            "creating the view {key} (is {} mounted already?)",
            target.display()
        )
    })?;
    match mount_all(&mounts, &target) {
        Ok(guard) => {
            let _kept = guard.disarm();
            println!("mounted {name} read-only on {}", target.display());
            Ok(())
        }
        Err(e) => {
            let _ = sn.remove(&key);
            Err(e).with_context(|| format!("mounting on {}", target.display()))
        }
    }
}

/// Runs `berth umount`.
pub fn umount(root: &Path, target: &Path) -> Result<()> {
    let target: PathBuf = std::fs::canonicalize(target)
        .with_context(|| format!("mount point {}", target.display()))?;
    let key = view_key(&target);
    let mut removed = false;
    unmount_all(&target).with_context(|| format!("unmounting {}", target.display()))?;
    for name in SNAPSHOTTERS {
        if !snapshotter_root(root, name).exists() {
            continue;
        }
        let sn = open_snapshotter(root, name)?;
        match sn.remove(&key) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing the view {key}")),
        }
    }
    if !removed {
        bail!("no berth view is mounted on {}", target.display());
    }
    println!("unmounted {}", target.display());
    Ok(())
}
