//! Every shared fixture, imported and unpacked with both snapshotters, mounts (through a
//! read-only view of the top chain) as the same tree as `umoci raw unpack` gives: content,
//! mode, owner, symlink targets, hardlink groups, xattrs, non-directory mtimes. umoci refuses
//! zstd layers, so the zstd image is compared with umoci's tree of the gzip image (same
//! diffIDs). Also checks chain names, labels and that nothing is left behind.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod unpack_support;

use std::path::Path;
use std::sync::Mutex;

use berth_image::progress::ProgressEvent;
use berth_image::unpack::{
    self, LABEL_GC_REF_SNAPSHOT, LABEL_UNCOMPRESSED, LayerOutcome, UnpackOptions,
};
use berth_snapshot::{Kind, LABEL_SNAPSHOT_REF};
use unpack_support::{Backend, Env, assert_same_tree, fixture, have_umoci, privileged, umoci_tree};

/// Imports `name`, unpacks it on `backend`, compares with umoci's tree of `reference`.
fn check(name: &str, reference: &str, tag: &str, backend: Backend, max_parallel: usize) {
    if !privileged() || !have_umoci() {
        return;
    }
    let (Some(src), Some(reference)) = (fixture(name), fixture(reference)) else {
        return;
    };
    let env = Env::new(backend);
    let image = env.import(&src);
    let events = Mutex::new(Vec::new());
    let sink = |e: &ProgressEvent<'_>| {
        events
            .lock()
            .unwrap()
            .push((e.item.to_owned(), e.kind.to_owned(), e.finished));
    };
    let mut opts = UnpackOptions::new(backend.name());
    opts.progress = &sink;
    opts.max_parallel = max_parallel;
    let report = unpack::unpack_image(&env.store, env.sn.as_ref(), &image, &opts).unwrap();
    assert_eq!(report.applied(), report.layers.len());
    assert!(!report.layers.is_empty());

    // The chain: one committed snapshot per layer, named by chainID, parented in order.
    let resolved = {
        let img = env.store.images().get(&image).unwrap();
        unpack::resolve(&env.store, &img.target, None).unwrap()
    };
    let chains = resolved.chain_ids();
    assert_eq!(report.chain_id.as_ref(), chains.last());
    for (i, chain) in chains.iter().enumerate() {
        let info = env.sn.stat(&chain.to_string()).unwrap();
        assert_eq!(info.kind, Kind::Committed);
        let parent = if i == 0 {
            String::new()
        } else {
            chains[i - 1].to_string()
        };
        assert_eq!(info.parent, parent, "parent of layer {i}");
        assert_eq!(
            info.labels.get(LABEL_SNAPSHOT_REF),
            Some(&chain.to_string())
        );
        assert!(matches!(
            report.layers[i].outcome,
            LayerOutcome::Applied { .. }
        ));
    }
    assert_eq!(env.committed().len(), chains.len());
    // Labels on the blobs.
    for (l, d) in resolved.layers.iter().zip(&resolved.diff_ids) {
        let info = env.store.info(&l.0.digest).unwrap();
        assert_eq!(info.labels.get(LABEL_UNCOMPRESSED), Some(&d.to_string()));
    }
    let config = env.store.info(&resolved.config).unwrap();
    assert_eq!(
        config
            .labels
            .get(&format!("{LABEL_GC_REF_SNAPSHOT}{}", backend.name())),
        Some(&chains.last().unwrap().to_string())
    );
    // Progress: every layer finished exactly once.
    let events = events.into_inner().unwrap();
    for (l, _) in &resolved.layers {
        let finished = events
            .iter()
            .filter(|e| e.0 == l.digest.to_string() && e.2)
            .count();
        assert_eq!(finished, 1, "finished events of {}", l.digest);
        assert!(events.iter().all(|e| e.1 == "layer"));
    }

    let ours = env.chain_tree(&chains.last().unwrap().to_string());
    let theirs = umoci_tree(&reference, tag);
    assert_same_tree(&ours, theirs, &format!("{name} on {}", backend.name()));
    env.assert_clean();
}

fn path_is_dir(p: &Path) -> bool {
    p.is_dir()
}

#[test]
fn busybox_dir_overlay() {
    check("busybox-oci", "busybox-oci", "latest", Backend::Overlay, 0);
}

#[test]
fn busybox_dir_native() {
    check("busybox-oci", "busybox-oci", "latest", Backend::Native, 0);
}

#[test]
fn busybox_archive_overlay() {
    check(
        "busybox.oci.tar",
        "busybox-oci",
        "latest",
        Backend::Overlay,
        0,
    );
}

#[test]
fn busybox_archive_native() {
    check(
        "busybox.oci.tar",
        "busybox-oci",
        "latest",
        Backend::Native,
        0,
    );
}

#[test]
fn debian_gzip_overlay_parallel() {
    check(
        "debian-gzip.oci.tar",
        "debian-gzip.oci.tar",
        "bookworm",
        Backend::Overlay,
        3,
    );
}

#[test]
fn debian_gzip_overlay_one_thread() {
    check(
        "debian-gzip.oci.tar",
        "debian-gzip.oci.tar",
        "bookworm",
        Backend::Overlay,
        1,
    );
}

#[test]
fn debian_gzip_native() {
    check(
        "debian-gzip.oci.tar",
        "debian-gzip.oci.tar",
        "bookworm",
        Backend::Native,
        0,
    );
}

#[test]
fn debian_zstd_overlay() {
    check(
        "debian-zstd.oci.tar",
        "debian-gzip.oci.tar",
        "bookworm",
        Backend::Overlay,
        0,
    );
}

#[test]
fn debian_zstd_native() {
    check(
        "debian-zstd.oci.tar",
        "debian-gzip.oci.tar",
        "bookworm",
        Backend::Native,
        0,
    );
}

#[test]
fn fixtures_directory_is_complete() {
    // Guards against a fixture silently disappearing from the list above.
    let Some(dir) = fixture("busybox-oci") else {
        return;
    };
    assert!(path_is_dir(&dir));
    for f in [
        "busybox.oci.tar",
        "debian-gzip.oci.tar",
        "debian-zstd.oci.tar",
    ] {
        assert!(fixture(f).is_some(), "{f}");
    }
}
