//! Containers from images, composed from the crates' public APIs: the part of `berth run`
//! that the demo shares.
//!
//! [`prepare`] turns an image into a ready bundle:
//! 1. unpack the image (a no-op when its chain exists) into the snapshotter;
//! 2. `prepare` an active snapshot keyed by the container id on the image's top chainID and
//!    mount it at `<root>/containers/<id>/rootfs` (it stays mounted while the container exists);
//! 3. resolve the user against the image's `/etc/passwd`/`/etc/group`, create the image's
//!    Volumes as directories under `<root>/containers/<id>/volumes/`, and write the runtime
//!    spec (`config.json`) of [`runspec`];
//! 4. record the container ([`records`]: the store's metadata database, name claimed in the
//!    same transaction).
//!
//! Creating and starting through the runtime is the caller's part (stdio differs). [`remove`]
//! undoes everything — runtime state and cgroup, mount, snapshot, directory — and tolerates
//! each piece being gone already, so it also cleans up after a half-made container.
#![allow(dead_code)] // shared by the `berth` and `demo` examples, which use different parts

#[path = "changes.rs"]
pub mod changes;
#[path = "commit.rs"]
pub mod commit;
#[path = "records.rs"]
pub mod records;
#[path = "runspec.rs"]
pub mod runspec;
#[path = "transfer.rs"]
pub mod transfer;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use berth::image::content::ContentStore;
use berth::image::progress::{NoProgress, Progress};
use berth::image::unpack::{self, UnpackOptions};
use berth::oci::{MAX_DOCUMENT_SIZE, Reference};
use berth::runtime::{ErrorKind as RtErrorKind, Runtime};
use berth::snapshot::{
    ErrorKind as SnErrorKind, NativeSnapshotter, Opts, OverlaySnapshotter, Snapshotter, mount_all,
    unmount_all,
};
use oci_spec::image::ImageConfiguration;

use records::ContainerRecord;
use runspec::RunOptions;

/// Label on a container's snapshot naming the container.
pub const LABEL_CONTAINER: &str = "berth.container/id";

/// Opens the snapshotter `name` (`overlay` or `native`) at `<root>/snapshots/<name>`.
pub fn open_snapshotter(root: &Path, name: &str) -> Result<Box<dyn Snapshotter>> {
    let dir = root.join("snapshots").join(name);
    Ok(match name {
        "overlay" => Box::new(
            OverlaySnapshotter::new(&dir)
                .with_context(|| format!("opening the overlay snapshotter at {}", dir.display()))?,
        ),
        "native" => Box::new(
            NativeSnapshotter::new(&dir)
                .with_context(|| format!("opening the native snapshotter at {}", dir.display()))?,
        ),
        other => bail!("unknown snapshotter {other:?} (overlay or native)"),
    })
}

/// Opens the content store at `<root>/content`.
pub fn open_store(root: &Path) -> Result<ContentStore> {
    let dir = root.join("content");
    ContentStore::open(&dir)
        .with_context(|| format!("opening the content store at {}", dir.display()))
}

/// An image resolved for running: its name, config and top chainID.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The normalised reference.
    pub name: String,
    /// The parsed config.
    pub config: ImageConfiguration,
    /// The top chainID ("" without layers).
    pub chain_id: String,
}

/// Unpacks image `name` into `sn` (nothing to do when already unpacked) and reads its config.
pub fn unpack_image(
    store: &ContentStore,
    sn: &dyn Snapshotter,
    snapshotter: &str,
    name: &str,
    progress: &dyn Progress,
) -> Result<ImageInfo> {
    let name = Reference::parse(name)
        .with_context(|| format!("image reference {name:?}"))?
        .to_string();
    let image = store
        .images()
        .get(&name)
        .with_context(|| format!("image {name}"))?;
    let mut opts = UnpackOptions::new(snapshotter);
    opts.progress = progress;
    let report = unpack::unpack(store, sn, &image.target, &opts)
        .with_context(|| format!("unpacking {name}"))?;
    let bytes = store
        .read_all(&report.config, MAX_DOCUMENT_SIZE)
        .with_context(|| format!("reading the config of {name}"))?;
    let config = berth::oci::manifest::parse_config(&bytes, &report.config.to_string())?;
    Ok(ImageInfo {
        name,
        config,
        chain_id: report.chain_id.map(|c| c.to_string()).unwrap_or_default(),
    })
}

/// What [`prepare`] needs.
#[derive(Debug, Clone)]
pub struct PrepareRequest<'a> {
    /// The berth root (content, snapshots, containers).
    pub root: &'a Path,
    /// The runtime's state root.
    pub runtime_root: &'a Path,
    /// The image reference.
    pub image: &'a str,
    /// The snapshotter name.
    pub snapshotter: &'a str,
    /// A unique name, if any.
    pub name: Option<&'a str>,
    /// The run options.
    pub options: &'a RunOptions,
    /// Whether output goes to the log file.
    pub detached: bool,
    /// The container is removed when it exits (`--rm`): its overlay is mounted `volatile`
    /// (no syncs to the upper layer, so neither writes nor the unmount wait for the disk),
    /// as podman does for `--rm`. Kernels without the option get a normal mount.
    pub ephemeral: bool,
    /// The snapshotter `snapshotter` names, if the caller has it open already (else it is
    /// opened here for the preparation only).
    pub sn: Option<&'a dyn Snapshotter>,
}

/// A prepared container: the bundle is ready for `Runtime::create`.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Its record (saved).
    pub record: ContainerRecord,
    /// The bundle directory.
    pub bundle: PathBuf,
}

/// Removes a half-made container when dropped unless disarmed.
struct Undo<'a> {
    root: &'a Path,
    record: Option<ContainerRecord>,
    sn: &'a dyn Snapshotter,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.record.take()
            && let Err(e) = remove_with(self.root, &r, true, Some(self.sn))
        {
            eprintln!("berth: cleaning up container {}: {e:#}", r.id);
        }
    }
}

/// Prepares a container from an image (see the module docs). On error nothing is left.
pub fn prepare(req: &PrepareRequest<'_>, progress: &dyn Progress) -> Result<Prepared> {
    let store = open_store(req.root)?;
    let opened;
    let sn: &dyn Snapshotter = match req.sn {
        Some(sn) => sn,
        None => {
            opened = open_snapshotter(req.root, req.snapshotter)?;
            opened.as_ref()
        }
    };
    if let Some(name) = req.name {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            bail!("invalid container name {name:?} (letters, digits, _ . -)");
        }
        // Early, before any work; the claim in `records::create` below is the one that counts.
        if let Some(holder) = records::name_holder(req.root, name)? {
            return Err(records::CreateError::NameInUse {
                name: name.to_owned(),
                holder,
            }
            .into());
        }
    }
    let image = unpack_image(&store, sn, req.snapshotter, req.image, progress)?;
    let id = records::new_id()?;
    let dir = records::container_dir(req.root, &id);
    std::fs::create_dir_all(records::containers_dir(req.root))?;
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let record = ContainerRecord {
        id: id.clone(),
        name: req.name.map(str::to_owned),
        image: image.name.clone(),
        chain_id: image.chain_id.clone(),
        snapshotter: req.snapshotter.to_owned(),
        runtime_root: req.runtime_root.to_path_buf(),
        command: runspec::command(&image.config, req.options)?,
        created: records::now_secs(),
        detached: req.detached,
    };
    let mut undo = Undo {
        root: req.root,
        record: Some(record.clone()),
        sn,
    };
    // Claims the name atomically: two runs racing for one name, one of them fails here.
    records::create(req.root, &record)?;

    let rootfs = dir.join("rootfs");
    std::fs::create_dir(&rootfs)?;
    let opts = Opts::new().with_label(LABEL_CONTAINER, id.clone());
    let mounts = sn
        .prepare(record.snapshot_key(), &image.chain_id, &opts)
        .with_context(|| format!("preparing the snapshot {id}"))?;
    let mut mounts = mounts;
    let volatile = req.ephemeral && mounts.iter().any(|m| m.kind == "overlay");
    if volatile {
        for m in mounts.iter_mut().filter(|m| m.kind == "overlay") {
            m.options.push("volatile".to_owned());
        }
    }
    let mounted = match mount_all(&mounts, &rootfs) {
        Err(_) if volatile => {
            for m in &mut mounts {
                m.options.retain(|o| o != "volatile");
            }
            mount_all(&mounts, &rootfs)
        }
        other => other,
    };
    let _kept = mounted
        .with_context(|| format!("mounting the root filesystem on {}", rootfs.display()))?
        .disarm();

    let run = image.config.config().clone().unwrap_or_default();
    let user_spec = req
        .options
        .user
        .clone()
        .or_else(|| run.user().clone())
        .unwrap_or_default();
    let user = runspec::resolve_user(&rootfs, &user_spec)?;
    let hostname: String = id.chars().take(12).collect();
    let mut volumes = Vec::new();
    for (i, dst) in run.volumes().iter().flatten().enumerate() {
        if !dst.starts_with('/') {
            continue;
        }
        let host = dir.join("volumes").join(i.to_string());
        std::fs::create_dir_all(&host)?;
        volumes.push((dst.clone(), host.display().to_string()));
    }
    let process = runspec::process(&image.config, req.options, &user, &hostname)?;
    let spec = runspec::spec(process, &hostname, req.options, &volumes)?;
    // An ephemeral container's bundle need not survive a crash (its overlay is volatile too).
    records::write_atomic(
        &dir.join("config.json"),
        &serde_json::to_vec_pretty(&spec)?,
        !req.ephemeral,
    )?;
    undo.record = None;
    Ok(Prepared {
        record,
        bundle: dir,
    })
}

/// Prepares with no progress output.
pub fn prepare_quiet(req: &PrepareRequest<'_>) -> Result<Prepared> {
    prepare(req, &NoProgress)
}

/// Removes a container: its runtime state and cgroup (killing its processes with `force`),
/// the rootfs mount, the snapshot, `<root>/containers/<id>` and finally its record. Pieces
/// already gone are skipped.
///
/// Errors: without `force`, a container that still runs.
pub fn remove(root: &Path, record: &ContainerRecord, force: bool) -> Result<()> {
    remove_with(root, record, force, None)
}

/// [`remove`] with the container's snapshotter already open (`None`: open it here).
pub fn remove_with(
    root: &Path,
    record: &ContainerRecord,
    force: bool,
    sn: Option<&dyn Snapshotter>,
) -> Result<()> {
    let id = &record.id;
    if record.runtime_root.exists() {
        let rt = Runtime::new(&record.runtime_root)?;
        match rt.delete(id, force) {
            Ok(()) => {}
            Err(e) if e.kind() == RtErrorKind::NotFound => {}
            Err(e) if !force => {
                return Err(e).with_context(|| {
                    format!("container {id} is running: stop it first or use rm -f")
                });
            }
            Err(e) => return Err(e).with_context(|| format!("deleting container {id}")),
        }
    }
    let dir = records::container_dir(root, id);
    let rootfs = dir.join("rootfs");
    unmount_all(&rootfs).with_context(|| format!("unmounting {}", rootfs.display()))?;
    let opened;
    let sn: &dyn Snapshotter = match sn {
        Some(sn) => sn,
        None => {
            opened = open_snapshotter(root, &record.snapshotter)?;
            opened.as_ref()
        }
    };
    match sn.remove(record.snapshot_key()) {
        Ok(()) => {}
        Err(e) if e.kind() == SnErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing the snapshot {id}")),
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
    }
    // Last, so a removal that failed half-way can be retried by id or name.
    records::delete(root, id)
}

/// The snapshotters a root may hold, as named by `--snapshotter`.
pub const SNAPSHOTTERS: [&str; 2] = ["overlay", "native"];

/// What [`collect_garbage`] removed.
#[derive(Debug, Clone, Default)]
pub struct GarbageReport {
    /// Unpacked snapshots no image needs any more, plus abandoned extractions.
    pub snapshots: usize,
    /// Blobs no image, lease or gc.root label reaches.
    pub blobs: usize,
    /// Bytes of those blobs.
    pub bytes: u64,
}

/// Collects what removing images left unreachable, as containerd's GC does after an image is
/// deleted: first the unpacked snapshots of every snapshotter present in the root (chains still
/// under a container's snapshot stay), then the content blobs.
pub fn collect_garbage(root: &Path, store: &ContentStore) -> Result<GarbageReport> {
    let mut report = GarbageReport::default();
    for name in SNAPSHOTTERS {
        if !root.join("snapshots").join(name).is_dir() {
            continue;
        }
        let sn = open_snapshotter(root, name)?;
        let r = unpack::gc_snapshots(store, sn.as_ref())
            .with_context(|| format!("collecting {name} snapshots"))?;
        report.snapshots += r.removed.len() + r.abandoned.len();
    }
    let r = store.gc(&berth::image::content::GcOptions::default())?;
    report.blobs = r.removed_blobs.len();
    report.bytes = r.removed_bytes;
    Ok(report)
}

/// Brings the loopback interface up in the network namespace of `pid` (a new network
/// namespace has `lo` down). Runs on a short-lived thread that joins the namespace, so the
/// calling thread's namespace never changes.
pub fn loopback_up(pid: i32) -> Result<()> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .with_context(|| format!("opening the network namespace of {pid}"))?;
    let worker = std::thread::spawn(move || -> std::io::Result<()> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        // SAFETY: plain socket(2); the result is checked and owned below.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new socket that nothing else owns.
        let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
        // SAFETY: an all-zero ifreq is valid; the name is set below.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS with a valid ifreq on our socket.
        unsafe {
            if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    });
    match worker.join() {
        Ok(r) => r.context("bringing up lo in the container's network namespace"),
        Err(_) => bail!("the loopback thread panicked"),
    }
}
