//! Helpers of the unpack integration tests: fixtures, temporary store + snapshotter pairs,
//! mounted views of chains, umoci reference trees, leftover checks.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use berth_image::content::ContentStore;
use berth_image::import::{self, ImportOptions};
use berth_snapshot::{Kind, NativeSnapshotter, Opts, OverlaySnapshotter, Snapshotter, TempMount};

#[path = "../apply_support/mod.rs"]
pub mod apply_support;

pub use apply_support::{Tree, is_root, skip_or_fail, snapshot, tree_diff};

/// The repository root (the workspace directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// `../shared/fixtures` relative to the repository root (or `$BERTH_FIXTURES`).
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("BERTH_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/fixtures"))
}

/// The fixture `name`, or `None` (skip with a reason; a failure under CI).
pub fn fixture(name: &str) -> Option<PathBuf> {
    let p = fixtures_dir().join(name);
    if p.exists() {
        Some(p)
    } else {
        skip_or_fail(&format!("fixture {} is missing", p.display()));
        None
    }
}

/// Root and overlay are needed for real snapshots; skip (or fail under CI) otherwise.
pub fn privileged() -> bool {
    if !is_root() {
        skip_or_fail("unpack tests need root (mounts, owners, whiteout devices)");
        return false;
    }
    true
}

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Overlay,
    Native,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Overlay => "overlay",
            Backend::Native => "native",
        }
    }

    pub fn open(self, root: &Path) -> Box<dyn Snapshotter> {
        match self {
            Backend::Overlay => Box::new(OverlaySnapshotter::new(root).unwrap()),
            Backend::Native => Box::new(NativeSnapshotter::new(root).unwrap()),
        }
    }
}

/// A content store and a snapshotter under one temporary berth root.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub store: ContentStore,
    pub sn: Box<dyn Snapshotter>,
    pub backend: Backend,
}

impl Env {
    pub fn new(backend: Backend) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("berth-unpack-test-")
            .tempdir()
            .unwrap();
        let store = ContentStore::open(&tmp.path().join("content")).unwrap();
        let sn = backend.open(&Self::sn_root_of(tmp.path(), backend));
        Env {
            tmp,
            store,
            sn,
            backend,
        }
    }

    pub fn sn_root_of(root: &Path, backend: Backend) -> PathBuf {
        root.join("snapshots").join(backend.name())
    }

    pub fn sn_root(&self) -> PathBuf {
        Self::sn_root_of(self.tmp.path(), self.backend)
    }

    /// Imports `path` and returns the (first) image name.
    pub fn import(&self, path: &Path) -> String {
        let r = import::import(&self.store, path, &ImportOptions::default()).unwrap();
        r.images[0].name.clone()
    }

    /// Every snapshot as (name, kind, parent).
    pub fn snapshots(&self) -> Vec<(String, Kind, String)> {
        let mut out = Vec::new();
        self.sn
            .walk(&[], &mut |i| {
                out.push((i.name.clone(), i.kind, i.parent.clone()));
                Ok(())
            })
            .unwrap();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn committed(&self) -> Vec<String> {
        self.snapshots()
            .into_iter()
            .filter(|s| s.1 == Kind::Committed)
            .map(|s| s.0)
            .collect()
    }

    /// Asserts no active or view snapshot, no lock file and no mount is left.
    pub fn assert_clean(&self) {
        let leftovers: Vec<_> = self
            .snapshots()
            .into_iter()
            .filter(|s| s.1 != Kind::Committed)
            .collect();
        assert!(
            leftovers.is_empty(),
            "non-committed snapshots left: {leftovers:?}"
        );
        let locks = self.store.root().join("unpack-locks");
        if locks.exists() {
            let n = std::fs::read_dir(&locks).unwrap().count();
            assert_eq!(n, 0, "lock files left in {}", locks.display());
        }
        assert_no_mounts(self.tmp.path());
    }

    /// The tree of committed chain `chain`, read through a mounted read-only view.
    pub fn chain_tree(&self, chain: &str) -> Tree {
        let key = format!("test-view-{}", std::process::id());
        let key = format!("{key}-{:x}", rand_u64());
        let mounts = self.sn.view(&key, chain, &Opts::new()).unwrap();
        let tree = {
            let m = TempMount::new(&mounts, self.tmp.path()).unwrap();
            let t = snapshot(m.path(), true);
            m.finish().unwrap();
            t
        };
        self.sn.remove(&key).unwrap();
        tree
    }
}

fn rand_u64() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    u64::from(t) ^ (N.fetch_add(1, std::sync::atomic::Ordering::SeqCst) << 32)
}

/// Asserts nothing is mounted at or below `dir`.
pub fn assert_no_mounts(dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = dir.to_string_lossy().into_owned();
    let left: Vec<&str> = info
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&prefix)))
        .collect();
    assert!(left.is_empty(), "mounts left under {prefix}: {left:?}");
}

/// Whether umoci is installed (skip/fail otherwise).
pub fn have_umoci() -> bool {
    let ok = Command::new("umoci")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip_or_fail("umoci is not installed (apt-get install umoci)");
    }
    ok
}

/// Makes every directory of an extracted layout writable (umoci takes a lock inside it).
fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for e in walkdir::WalkDir::new(dir) {
        let e = e.unwrap();
        if e.file_type().is_dir() {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

/// A writable OCI layout copy of a fixture (a directory, or an oci-archive extracted).
pub fn layout_copy(src: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    if src.is_dir() {
        let ok = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", src.display()))
            .arg(into)
            .status()
            .unwrap();
        assert!(ok.success());
    } else {
        let mut a = tar::Archive::new(std::fs::File::open(src).unwrap());
        a.unpack(into).unwrap();
    }
    make_writable(into);
}

/// `umoci raw unpack` of `fixture:tag`, as a tree; computed once per fixture per test binary.
pub fn umoci_tree(fixture: &Path, tag: &str) -> &'static Tree {
    static CACHE: OnceLock<Mutex<Vec<(PathBuf, &'static Tree)>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    let mut cache = cache.lock().unwrap();
    if let Some((_, t)) = cache.iter().find(|(p, _)| p == fixture) {
        return t;
    }
    let work = tempfile::Builder::new()
        .prefix("berth-unpack-umoci-")
        .tempdir()
        .unwrap();
    let layout = work.path().join("layout");
    layout_copy(fixture, &layout);
    let rootfs = work.path().join("rootfs");
    let out = Command::new("umoci")
        .args(["raw", "unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci raw unpack {}: {}",
        fixture.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let tree: &'static Tree = Box::leak(Box::new(snapshot(&rootfs, true)));
    cache.push((fixture.to_path_buf(), tree));
    tree
}

/// Asserts two trees are equal, listing the first differences.
pub fn assert_same_tree(ours: &Tree, theirs: &Tree, what: &str) {
    assert!(ours.nodes.len() > 10, "{what}: suspiciously small tree");
    let diff = tree_diff(ours, theirs);
    assert!(
        diff.is_empty(),
        "{what}: {} differences, first ones:\n{}",
        diff.len(),
        diff.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

pub use apply_support::TarBuilder;

/// Stores `tar` as a layer blob (gzip-compressed when `gzip`) and describes it.
pub fn store_layer(store: &ContentStore, tar: &[u8], gzip: bool) -> berth_image::build::LayerInfo {
    use berth_oci::{Compression, Digest, media_type::oci_layer};
    use std::io::Write;
    let (bytes, compression) = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(tar).unwrap();
        (enc.finish().unwrap(), Compression::Gzip)
    } else {
        (tar.to_vec(), Compression::None)
    };
    let digest = Digest::sha256(&bytes);
    match store.ingest(
        &format!("test-{digest}"),
        &bytes[..],
        &digest,
        Some(bytes.len() as u64),
        &Default::default(),
        &mut |_, _| {},
    ) {
        Ok(_) => {}
        Err(e) if e.kind() == berth_image::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("storing layer: {e}"),
    }
    berth_image::build::LayerInfo {
        digest,
        size: bytes.len() as u64,
        diff_id: Digest::sha256(tar),
        uncompressed_size: tar.len() as u64,
        media_type: oci_layer(compression),
    }
}

/// Records an image `name` made of `layers` (bottom first) in `store`; returns its full name.
pub fn store_image(
    store: &ContentStore,
    name: &str,
    layers: &[berth_image::build::LayerInfo],
) -> String {
    let mut b = berth_image::build::ImageBuilder::new();
    for (i, l) in layers.iter().enumerate() {
        b = b.layer(l.clone(), format!("layer {i}"));
    }
    b.finish()
        .unwrap()
        .write_to_store(store, name)
        .unwrap()
        .name
}

/// A small layer: directory `dir` with files `files` (name, content).
pub fn files_tar(dir: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.dir(&format!("{dir}/"), 0o755);
    for (name, content) in files {
        t.file(&format!("{dir}/{name}"), content, 0o644);
    }
    t.finish()
}
