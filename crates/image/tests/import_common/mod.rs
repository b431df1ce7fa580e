//! Helpers shared by the import/export integration tests: fixture location, temporary stores.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use berth_image::content::ContentStore;

/// Manifest digests listed in the fixtures' README.
pub const BUSYBOX_MANIFEST: &str =
    "sha256:fc9ccb2f83219abb8405e0f2fbe32cc78376cf9c53e3fbe483fd1ded71143710";
pub const BUSYBOX_CONFIG: &str =
    "sha256:950d134c0b0a85899d5b75248118c49d439133b1c9cbf9c1aee4ddbb65645cc6";
pub const BUSYBOX_DIFF_ID: &str =
    "sha256:e04b8368a29b96c7f3e69eab0b9676a015895e91850348f946579d371186359e";
pub const DEBIAN_GZIP_MANIFEST: &str =
    "sha256:910487ce5ca5ef02e15beab78457a3348126cc3fdd3f0116136447980baf13a8";
pub const DEBIAN_ZSTD_MANIFEST: &str =
    "sha256:96a8f649ce3b2a688c6f05036874dc6d2e45274f402fe8c33fc890dbbf0f0ae2";
pub const DEBIAN_CONFIG: &str =
    "sha256:167bc46d91ab487c999a7955b609dab10d8d5a346e9a338da63d8b0a4f0485fa";

/// The workspace root (the directory holding `Cargo.lock`).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|a| a.join("Cargo.lock").is_file() || a.join("crates").is_dir())
        .unwrap_or(here)
        .to_path_buf()
}

/// `../shared/fixtures` beside the repository (or `$BERTH_FIXTURES`), or `None` with a printed
/// reason outside CI. Under `CI` a missing fixtures directory fails the test.
pub fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("BERTH_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/fixtures"));
    if dir.join("busybox.oci.tar").is_file() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("fixtures missing at {} (required under CI)", dir.display());
    }
    eprintln!("skipping: fixtures missing at {}", dir.display());
    None
}

/// Whether an external tool is on PATH; under CI its absence fails the test.
pub fn tool(name: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{name} is not installed (required under CI)");
        }
        eprintln!("skipping: {name} is not installed");
    }
    found
}

/// A store in a fresh temporary directory (removed on drop).
pub struct TempStore {
    pub dir: tempfile::TempDir,
    pub store: ContentStore,
}

pub fn temp_store() -> TempStore {
    let dir = tempfile::Builder::new()
        .prefix("berth-import-test-")
        .tempdir()
        .unwrap();
    let store = ContentStore::open(&dir.path().join("root")).unwrap();
    TempStore { dir, store }
}
