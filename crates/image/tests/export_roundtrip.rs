//! Export to OCI layouts and oci-archives: re-import round trips, and acceptance by skopeo
//! and umoci.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod import_common;

use std::path::Path;
use std::process::Command;

use berth_image::export::{self, ExportFormat};
use berth_image::import::{self, ImportOptions, PlatformChoice};
use berth_image::progress::NoProgress;
use import_common::*;

const BUSYBOX: &str = "docker.io/anchors/busybox:latest";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn reimport(path: &Path, expect_name: &str, expect_digest: &str) {
    let t = temp_store();
    let report = import::import(&t.store, path, &ImportOptions::default()).unwrap();
    assert_eq!(report.images.len(), 1);
    assert_eq!(report.images[0].name, expect_name);
    assert_eq!(report.images[0].target.digest.to_string(), expect_digest);
    assert!(t.store.verify().unwrap().is_ok());
}

#[test]
fn oci_dir_round_trip_and_peers_accept_it() {
    let Some(fx) = fixtures() else { return };
    let t = temp_store();
    import::import(
        &t.store,
        &fx.join("busybox.oci.tar"),
        &ImportOptions::default(),
    )
    .unwrap();
    let out = t.dir.path().join("exported");
    export::export(
        &t.store,
        &[BUSYBOX],
        &out,
        ExportFormat::OciDir,
        &NoProgress,
    )
    .unwrap();
    assert!(out.join("oci-layout").is_file());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(entry["digest"], BUSYBOX_MANIFEST);
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    assert_eq!(entry["annotations"]["io.containerd.image.name"], BUSYBOX);
    // The very blobs of the fixture, byte for byte.
    for blob in std::fs::read_dir(fx.join("busybox-oci/blobs/sha256")).unwrap() {
        let blob = blob.unwrap();
        let ours = std::fs::read(out.join("blobs/sha256").join(blob.file_name())).unwrap();
        assert_eq!(ours, std::fs::read(blob.path()).unwrap());
    }
    reimport(&out, BUSYBOX, BUSYBOX_MANIFEST);

    if tool("skopeo") {
        let json = run(Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:latest", out.display())));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["Digest"], BUSYBOX_MANIFEST);
        assert_eq!(v["Architecture"], "amd64");
    }
    if tool("umoci") {
        let bundle = t.dir.path().join("bundle");
        run(Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:latest", out.display()))
            .arg(&bundle));
        assert!(bundle.join("config.json").is_file());
        assert!(bundle.join("rootfs/bin/busybox").is_file());
    }
}

#[test]
fn oci_archive_round_trip_is_deterministic() {
    let Some(fx) = fixtures() else { return };
    let t = temp_store();
    import::import(&t.store, &fx.join("busybox-oci"), &ImportOptions::default()).unwrap();
    let a = t.dir.path().join("a.tar");
    let b = t.dir.path().join("b.tar");
    export::export(
        &t.store,
        &[BUSYBOX],
        &a,
        ExportFormat::OciArchive,
        &NoProgress,
    )
    .unwrap();
    export::export(
        &t.store,
        &["anchors/busybox"],
        &b,
        ExportFormat::OciArchive,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    reimport(&a, BUSYBOX, BUSYBOX_MANIFEST);
    if tool("skopeo") {
        let json = run(Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}:latest", a.display())));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["Digest"], BUSYBOX_MANIFEST);
    }
}

#[test]
fn zstd_image_round_trips_and_skopeo_reads_it() {
    let Some(fx) = fixtures() else { return };
    let t = temp_store();
    import::import(
        &t.store,
        &fx.join("debian-zstd.oci.tar"),
        &ImportOptions::default(),
    )
    .unwrap();
    let name = "docker.io/anchors/debian:bookworm-zstd";
    let out = t.dir.path().join("debian");
    export::export(&t.store, &[name], &out, ExportFormat::OciDir, &NoProgress).unwrap();
    reimport(&out, name, DEBIAN_ZSTD_MANIFEST);
    if tool("skopeo") {
        let json = run(Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:bookworm-zstd", out.display())));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["Digest"], DEBIAN_ZSTD_MANIFEST);
        assert_eq!(v["Layers"].as_array().unwrap().len(), 3);
    }
}

#[test]
fn export_into_existing_layout_adds_entries_and_unknown_names_fail() {
    let Some(fx) = fixtures() else { return };
    let t = temp_store();
    import::import(
        &t.store,
        &fx.join("busybox.oci.tar"),
        &ImportOptions {
            platform: PlatformChoice::All,
            ..Default::default()
        },
    )
    .unwrap();
    let images = t.store.images();
    let mut other = images.get(BUSYBOX).unwrap();
    other.name = "docker.io/berth-test/other:v2".into();
    images.put(other).unwrap();
    let out = t.dir.path().join("two");
    export::export(
        &t.store,
        &[BUSYBOX],
        &out,
        ExportFormat::OciDir,
        &NoProgress,
    )
    .unwrap();
    export::export(
        &t.store,
        &["berth-test/other:v2"],
        &out,
        ExportFormat::OciDir,
        &NoProgress,
    )
    .unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let tags: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(tags, ["latest", "v2"]);
    let t2 = temp_store();
    let report = import::import(&t2.store, &out, &ImportOptions::default()).unwrap();
    assert_eq!(report.images.len(), 2);

    let err = export::export(
        &t.store,
        &["nope:missing"],
        &out,
        ExportFormat::OciDir,
        &NoProgress,
    )
    .unwrap_err();
    assert_eq!(err.kind(), import::ErrorKind::NotFound, "{err}");
}
