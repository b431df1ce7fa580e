//! The set-up most registry tests share: a registry seeded with a fixture, a scratch content
//! store with an auth file of its own, a source store holding an imported fixture, pull
//! options around given registry options, and the check that a pulled image is complete.

use std::path::{Path, PathBuf};

use berth_image::content::ContentStore;
use berth_image::import::{self, ImportOptions};
use berth_image::registry::{PullOptions, RegistryOptions};
use berth_image::unpack;

use super::{Registry, fixture, tempdir};

/// `started` (what a `Registry::start*` returned) holding the fixture `archive` as `repo_tag`,
/// and the fixture's path. `None` after a skip (a missing tool or fixture).
pub fn seeded(
    started: Option<Registry>,
    archive: &str,
    repo_tag: &str,
) -> Option<(Registry, PathBuf)> {
    let (Some(reg), Some(path)) = (started, fixture(archive)) else {
        return None;
    };
    reg.seed(&path, repo_tag);
    Some((reg, path))
}

/// A plain-HTTP registry (htpasswd basic auth with `auth`) holding the busybox fixture as
/// `repo_tag`. `None` after a skip.
pub fn busybox_registry(auth: Option<(&str, &str)>, repo_tag: &str) -> Option<Registry> {
    seeded(Registry::start(auth), "busybox.oci.tar", repo_tag).map(|(reg, _)| reg)
}

/// A content store in a temp dir of its own, with an auth file path there (absent until a
/// test writes it; never the user's).
pub struct Store {
    _dir: tempfile::TempDir,
    pub store: ContentStore,
    pub auth_file: PathBuf,
}

/// A fresh [`Store`].
pub fn store() -> Store {
    let dir = tempdir("berth-registry-store-");
    let store = ContentStore::open(&dir.path().join("content")).unwrap();
    let auth_file = dir.path().join("docker/config.json");
    Store {
        _dir: dir,
        store,
        auth_file,
    }
}

/// The content store `dir/name` (created when missing).
pub fn open_store(dir: &Path, name: &str) -> ContentStore {
    ContentStore::open(&dir.join(name)).unwrap()
}

/// Imports the oci-archive `archive` into `store` as `name` (the source of a push).
pub fn import_as(store: &ContentStore, archive: &Path, name: &str) {
    import::import(
        store,
        archive,
        &ImportOptions {
            name: Some(name),
            ..ImportOptions::default()
        },
    )
    .unwrap();
}

/// Pull options with `registry` and every other field at its default.
pub fn pull_with(registry: RegistryOptions) -> PullOptions<'static> {
    PullOptions {
        registry,
        ..PullOptions::default()
    }
}

/// The image `name` in `store` is complete: its manifest, its config and every layer at its
/// size are stored, no pull ingest of a layer is left, and the store verifies.
pub fn assert_complete(store: &ContentStore, name: &str) {
    let image = store.images().get(name).unwrap();
    let resolved = unpack::resolve(store, &image.target, None).unwrap();
    assert!(store.exists(&resolved.manifest));
    assert!(store.exists(&resolved.config));
    for (l, _) in &resolved.layers {
        assert_eq!(store.info(&l.digest).unwrap().size, l.size);
        assert!(
            store.status(&format!("pull-{}", l.digest)).is_err(),
            "ingest left"
        );
    }
    let report = store.verify().unwrap();
    assert!(report.corrupt.is_empty(), "{report:?}");
}
