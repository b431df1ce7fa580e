//! Container records: what `berth run` made, so `ps`, `exec`, `kill`, `rm`, `logs` and
//! `commit` find it again from another process.
//!
//! One JSON file per container, `<root>/containers/<id>/container.json`, replaced atomically
//! (written to a temporary file in the same directory, fsynced, renamed, directory fsynced).
//! The image crate's metadata database (`content/metadata.redb`) has fixed tables (content,
//! images, leases) and no public API for other records, so containers cannot live there yet.
//!
//! The live status is never recorded here: it comes from the runtime's state directory.
#![allow(dead_code)] // shared by the `berth` and `demo` examples, which use different parts

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// The record of one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// The container id (also the runtime id and the snapshot key).
    pub id: String,
    /// A user-given name, unique in the root.
    #[serde(default)]
    pub name: Option<String>,
    /// The normalised image reference it was created from.
    pub image: String,
    /// The image's top chainID (the snapshot's parent); empty for an image without layers.
    pub chain_id: String,
    /// The snapshotter holding the container's active snapshot.
    pub snapshotter: String,
    /// The runtime's state root.
    pub runtime_root: PathBuf,
    /// The command line.
    pub command: Vec<String>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Whether its stdout/stderr go to the log file.
    pub detached: bool,
}

impl ContainerRecord {
    /// The snapshot key of the container's root filesystem.
    pub fn snapshot_key(&self) -> &str {
        &self.id
    }
}

/// `<root>/containers`.
pub fn containers_dir(root: &Path) -> PathBuf {
    root.join("containers")
}

/// `<root>/containers/<id>`: the bundle (config.json, rootfs/), log, volumes and record.
pub fn container_dir(root: &Path, id: &str) -> PathBuf {
    containers_dir(root).join(id)
}

/// The log file of a detached container.
pub fn log_path(root: &Path, id: &str) -> PathBuf {
    container_dir(root, id).join("log")
}

/// Writes `bytes` to `path` atomically (same-directory temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("a path without a directory")?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::from(e).context(format!("writing {}", path.display()))
    })
}

/// Saves `record` as `<root>/containers/<id>/container.json` (the directory must exist).
pub fn save(root: &Path, record: &ContainerRecord) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(record)?;
    write_atomic(
        &container_dir(root, &record.id).join("container.json"),
        &bytes,
    )
}

/// Loads the record of container `id` (exact id).
pub fn load_exact(root: &Path, id: &str) -> Result<ContainerRecord> {
    let path = container_dir(root, id).join("container.json");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Every record in the root, oldest first. Directories without a readable record (a
/// container being created, or debris) are skipped.
pub fn list(root: &Path) -> Result<Vec<ContainerRecord>> {
    let dir = containers_dir(root);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Ok(r) = load_exact(root, &id) {
            out.push(r);
        }
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Finds a container by id, name or unique id prefix.
///
/// Errors: no match, or a prefix matching several containers.
pub fn find(root: &Path, what: &str) -> Result<ContainerRecord> {
    if what.is_empty() {
        bail!("empty container id");
    }
    let all = list(root)?;
    if let Some(r) = all
        .iter()
        .find(|r| r.id == what || r.name.as_deref() == Some(what))
    {
        return Ok(r.clone());
    }
    let matches: Vec<&ContainerRecord> = all.iter().filter(|r| r.id.starts_with(what)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("no such container: {what}"),
        _ => bail!("container id prefix {what:?} is ambiguous"),
    }
}

/// A new random container id: 32 hex digits from the kernel's random source.
pub fn new_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    let mut f = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    std::io::Read::read_exact(&mut f, &mut bytes).context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
