//! Container records: what `berth run` made, so `ps`, `exec`, `kill`, `rm`, `logs` and
//! `commit` find it again from another process.
//!
//! The records live in the store's metadata database (`<root>/content/metadata.redb`, the
//! same file as the image records) through the image crate's
//! [`RecordStore`](berth::image::metadata::RecordStore), namespace [`NAMESPACE`]:
//! `container/<id>` holds the JSON record and `name/<name>` the id of the container holding
//! a name. A record and its name are written and removed in one transaction, so names stay
//! unique across every process that uses the root ([`migrate_legacy`] moves the JSON files of
//! older berths in). The per-container directory
//! (`<root>/containers/<id>`: bundle, rootfs mount, volumes, log) stays on disk.
//!
//! The live status is never recorded here: it comes from the runtime's state directory.
#![allow(dead_code)] // shared by the `berth` and `demo` examples, which use different parts

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use berth::image::content::ContentStore;
use berth::image::metadata::RecordStore;
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

/// `<root>/containers/<id>`: the bundle (config.json, rootfs/), log and volumes.
pub fn container_dir(root: &Path, id: &str) -> PathBuf {
    containers_dir(root).join(id)
}

/// The log file of a detached container.
pub fn log_path(root: &Path, id: &str) -> PathBuf {
    container_dir(root, id).join("log")
}

/// Writes `bytes` to `path` atomically (same-directory temporary file, rename); with `durable`
/// the file is fsynced before and its directory after the rename.
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
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
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if durable {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::from(e).context(format!("writing {}", path.display()))
    })
}

/// The record namespace of berth's front ends in the store's metadata file.
pub const NAMESPACE: &str = "berth.containers";
/// Key prefix of container records (`container/<id>` → JSON [`ContainerRecord`]).
const CONTAINER: &str = "container/";
/// Key prefix of the unique-name index (`name/<name>` → the container id).
const NAME: &str = "name/";

/// The container records of the store at `<root>/content`.
pub fn open(root: &Path) -> Result<RecordStore> {
    let dir = root.join("content");
    let store = ContentStore::open(&dir)
        .with_context(|| format!("opening the content store at {}", dir.display()))?;
    Ok(store.records(NAMESPACE)?)
}

/// Why a record could not be created.
#[derive(Debug)]
pub enum CreateError {
    /// Another container has the name.
    NameInUse {
        /// The name.
        name: String,
        /// The id of the container holding it.
        holder: String,
    },
    /// The store failed (an id collision shows as AlreadyExists).
    Store(berth::image::Error),
}

impl CreateError {
    /// The error kind: AlreadyExists for a name in use, else the store's.
    pub fn kind(&self) -> berth::image::ErrorKind {
        match self {
            CreateError::NameInUse { .. } => berth::image::ErrorKind::AlreadyExists,
            CreateError::Store(e) => e.kind(),
        }
    }
}

impl std::fmt::Display for CreateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CreateError::NameInUse { name, holder } => write!(
                f,
                "the container name {name:?} is already in use by container {holder}"
            ),
            CreateError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CreateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CreateError::NameInUse { .. } => None,
            CreateError::Store(e) => e.source(),
        }
    }
}

impl From<berth::image::Error> for CreateError {
    fn from(e: berth::image::Error) -> Self {
        CreateError::Store(e)
    }
}

/// Records a new container and claims its name, in one transaction: either both are stored
/// or neither (a name another container holds fails with [`CreateError::NameInUse`], whose
/// cause has kind AlreadyExists).
pub fn create(root: &Path, record: &ContainerRecord) -> Result<()> {
    let records = open(root)?;
    records
        .update(|t| -> std::result::Result<(), CreateError> {
            if let Some(name) = &record.name {
                let key = format!("{NAME}{name}");
                if let Some(holder) = t.get(&key)? {
                    return Err(CreateError::NameInUse {
                        name: name.clone(),
                        holder: String::from_utf8_lossy(&holder).into_owned(),
                    });
                }
                t.insert(&key, record.id.as_bytes())?;
            }
            t.insert_json(&format!("{CONTAINER}{}", record.id), record)?;
            Ok(())
        })
        .with_context(|| format!("recording container {}", record.id))
}

/// The id of the container holding `name`, if any.
pub fn name_holder(root: &Path, name: &str) -> Result<Option<String>> {
    match open(root)?.get(&format!("{NAME}{name}")) {
        Ok(id) => Ok(Some(String::from_utf8_lossy(&id).into_owned())),
        Err(e) if e.kind() == berth::image::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context("looking up a container name"),
    }
}

/// Removes the record of container `id` and releases its name (nothing if it has none).
pub fn delete(root: &Path, id: &str) -> Result<()> {
    let records = open(root)?;
    records
        .update(|t| -> berth::image::Result<()> {
            let key = format!("{CONTAINER}{id}");
            if let Some(r) = t.get_json::<ContainerRecord>(&key)? {
                if let Some(name) = &r.name {
                    let name_key = format!("{NAME}{name}");
                    if t.get(&name_key)?.as_deref() == Some(id.as_bytes()) {
                        t.remove(&name_key)?;
                    }
                }
                t.remove(&key)?;
            }
            Ok(())
        })
        .with_context(|| format!("removing the record of container {id}"))
}

/// Loads the record of container `id` (exact id).
pub fn load_exact(root: &Path, id: &str) -> Result<ContainerRecord> {
    open(root)?
        .get_json(&format!("{CONTAINER}{id}"))
        .with_context(|| format!("container {id}"))
}

/// The file older berths kept each record in, `<root>/containers/<id>/container.json`.
const LEGACY_FILE: &str = "container.json";

/// Moves records from [`LEGACY_FILE`]s (written before the records moved into the database)
/// into the database, then removes the files. A record whose id or name is taken already is
/// left in its file and reported. Idempotent; a root without such files costs one directory
/// read.
pub fn migrate_legacy(root: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(containers_dir(root)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context("listing the container directories"),
    };
    for entry in entries.flatten() {
        let file = entry.path().join(LEGACY_FILE);
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(_) => continue,
        };
        let record: ContainerRecord = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("berth: skipping the unreadable {}: {e}", file.display());
                continue;
            }
        };
        if entry.file_name().to_str() != Some(record.id.as_str()) {
            eprintln!(
                "berth: skipping {}: it names container {}",
                file.display(),
                record.id
            );
            continue;
        }
        match create(root, &record) {
            Ok(()) => {}
            Err(e) => {
                eprintln!("berth: keeping {}: {e:#}", file.display());
                continue;
            }
        }
        std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
    }
    Ok(())
}

/// Every record in the root, oldest first (after [`migrate_legacy`]). A record that does not
/// decode (written by something else) is reported on stderr and skipped.
pub fn list(root: &Path) -> Result<Vec<ContainerRecord>> {
    migrate_legacy(root)?;
    let mut out = Vec::new();
    for (key, bytes) in open(root)?.list(CONTAINER)? {
        match serde_json::from_slice::<ContainerRecord>(&bytes) {
            Ok(r) => out.push(r),
            Err(e) => eprintln!("berth: skipping the unreadable record {key}: {e}"),
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
