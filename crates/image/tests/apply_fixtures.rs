//! Differential test against umoci: every layer of the shared fixture images applied with
//! `apply_layer` must give the same tree as `umoci raw unpack` (content, mode, owner, symlink
//! targets, hardlink groups, xattrs, non-directory mtimes), and each layer's diffID must match
//! the image config.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod apply_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use apply_support::{is_root, skip_or_fail, snapshot, tree_diff};
use berth_image::apply::{ApplyOptions, apply_layer_file};
use berth_oci::Digest;

fn fixtures() -> PathBuf {
    std::env::var_os("BERTH_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"))
}

fn have_umoci() -> bool {
    Command::new("umoci")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(alg).join(hex)
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Applies every layer of the image tagged `tag` in `layout` onto a fresh dir, checks the
/// diffIDs, unpacks the same image with umoci and compares the trees.
fn compare_with_umoci(layout: &Path, tag: &str, also_fallback: bool) {
    let index = read_json(&layout.join("index.json"));
    let manifest_desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .expect("tag in index");
    let manifest = read_json(&blob_path(
        layout,
        manifest_desc["digest"].as_str().unwrap(),
    ));
    let config = read_json(&blob_path(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());

    let work = tempfile::Builder::new()
        .prefix("berth-apply-fixture-")
        .tempdir()
        .unwrap();
    let ours = work.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let digest = layer["digest"].as_str().unwrap();
        let media_type = layer["mediaType"].as_str().unwrap();
        let compression = match berth_oci::media_type::kind_of(media_type) {
            berth_oci::MediaKind::Layer(c) => c,
            other => panic!("not a layer: {other:?}"),
        };
        let expected: Digest = diff_id.as_str().unwrap().parse().unwrap();
        let stats = apply_layer_file(
            &blob_path(layout, digest),
            &ours,
            ApplyOptions::default()
                .with_compression(compression)
                .with_expected_diff_id(expected.clone()),
        )
        .unwrap_or_else(|e| panic!("applying {digest}: {e}"));
        assert_eq!(stats.diff_id, expected);
        assert_eq!(stats.compressed_size, layer["size"].as_u64().unwrap());
    }

    if also_fallback {
        // The userspace resolver must build the very same tree.
        let fallback = work.path().join("fallback");
        std::fs::create_dir(&fallback).unwrap();
        for layer in layers {
            let digest = layer["digest"].as_str().unwrap();
            apply_layer_file(
                &blob_path(layout, digest),
                &fallback,
                ApplyOptions::default().with_userspace_resolver(true),
            )
            .unwrap();
        }
        let d = tree_diff(&snapshot(&ours, true), &snapshot(&fallback, true));
        assert!(
            d.is_empty(),
            "openat2 and fallback resolvers differ: {d:#?}"
        );
    }

    let theirs = work.path().join("umoci");
    let out = Command::new("umoci")
        .args(["raw", "unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&theirs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci raw unpack failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = snapshot(&ours, true);
    let b = snapshot(&theirs, true);
    assert!(a.nodes.len() > 10, "suspiciously small tree");
    let diff = tree_diff(&a, &b);
    assert!(
        diff.is_empty(),
        "{} differences with umoci, first ones:\n{}",
        diff.len(),
        diff.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

fn preconditions(what: &Path) -> bool {
    if !what.exists() {
        skip_or_fail(&format!("fixture {} is missing", what.display()));
        return false;
    }
    if !have_umoci() {
        skip_or_fail("umoci is not installed (apt-get install umoci)");
        return false;
    }
    if !is_root() {
        skip_or_fail("owners can only be compared when running as root");
        return false;
    }
    true
}

#[test]
fn busybox_matches_umoci() {
    let src = fixtures().join("busybox-oci");
    if !preconditions(&src) {
        return;
    }
    // umoci takes a lock in the layout: work on a copy, the fixtures are read-only.
    let copy = tempfile::Builder::new()
        .prefix("berth-apply-layout-")
        .tempdir()
        .unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    make_writable(copy.path());
    compare_with_umoci(copy.path(), "latest", true);
}

#[test]
fn debian_gzip_matches_umoci() {
    let archive = fixtures().join("debian-gzip.oci.tar");
    if !preconditions(&archive) {
        return;
    }
    let layout = tempfile::Builder::new()
        .prefix("berth-apply-layout-")
        .tempdir()
        .unwrap();
    let mut a = tar::Archive::new(std::fs::File::open(&archive).unwrap());
    a.unpack(layout.path()).unwrap();
    make_writable(layout.path());
    compare_with_umoci(layout.path(), "bookworm", false);
}

/// The zstd Debian image (written by skopeo; umoci refuses it) has the same diffIDs as the gzip
/// one: every layer must decode and apply to exactly those diffIDs and blob digests.
#[test]
fn debian_zstd_layers_apply_with_the_configs_diff_ids() {
    let archive = fixtures().join("debian-zstd.oci.tar");
    if !archive.exists() {
        return skip_or_fail(&format!("fixture {} is missing", archive.display()));
    }
    let layout = tempfile::Builder::new()
        .prefix("berth-apply-layout-")
        .tempdir()
        .unwrap();
    tar::Archive::new(std::fs::File::open(&archive).unwrap())
        .unpack(layout.path())
        .unwrap();
    let index = read_json(&layout.path().join("index.json"));
    let manifest = read_json(&blob_path(
        layout.path(),
        index["manifests"][0]["digest"].as_str().unwrap(),
    ));
    let config = read_json(&blob_path(
        layout.path(),
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let root = layout.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    for (layer, diff_id) in layers
        .iter()
        .zip(config["rootfs"]["diff_ids"].as_array().unwrap())
    {
        assert_eq!(layer["mediaType"], berth_oci::media_type::OCI_LAYER_ZSTD);
        let digest: Digest = layer["digest"].as_str().unwrap().parse().unwrap();
        let stats = apply_layer_file(
            &blob_path(layout.path(), layer["digest"].as_str().unwrap()),
            &root,
            ApplyOptions::default()
                .with_compression(berth_oci::Compression::Zstd)
                .with_expected_digest(digest)
                .with_expected_diff_id(diff_id.as_str().unwrap().parse().unwrap())
                .with_no_same_owner(!is_root()),
        )
        .unwrap();
        assert_eq!(stats.compression, berth_oci::Compression::Zstd);
    }
    assert!(root.join("usr/bin/bash").is_file() || root.join("bin/bash").exists());
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for e in walkdir::WalkDir::new(dir) {
        let e = e.unwrap();
        if e.file_type().is_dir() {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}
