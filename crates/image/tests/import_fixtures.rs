//! Imports every fixture image made by other tools (skopeo, umoci) and checks names, digests,
//! platforms and that the store holds exactly the verified blobs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod import_common;

use std::sync::Mutex;

use berth_image::import::{self, Format, ImportOptions, Platform, PlatformChoice};
use berth_image::progress::ProgressEvent;
use berth_oci::Digest;
use berth_oci::media_type::{DOCKER_LAYER_TAR, DOCKER_MANIFEST, OCI_MANIFEST};
use import_common::*;

fn digest(s: &str) -> Digest {
    s.parse().unwrap()
}

fn blobs(store: &berth_image::content::ContentStore) -> Vec<Digest> {
    let mut v = store.list_digests().unwrap();
    v.sort();
    v
}

#[test]
fn busybox_layout_dir_and_oci_archive() {
    let Some(fx) = fixtures() else { return };
    for (path, format) in [
        (fx.join("busybox-oci"), Format::OciDir),
        (fx.join("busybox.oci.tar"), Format::OciArchive),
    ] {
        let t = temp_store();
        assert_eq!(import::detect(&path).unwrap(), format);
        let events = Mutex::new(Vec::new());
        let sink = |e: &ProgressEvent<'_>| {
            if e.finished {
                events
                    .lock()
                    .unwrap()
                    .push((e.item.to_owned(), e.kind.to_owned(), e.done));
            }
        };
        let report = import::import(
            &t.store,
            &path,
            &ImportOptions {
                progress: &sink,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(report.format, format);
        assert_eq!(report.images.len(), 1);
        let img = &report.images[0];
        assert_eq!(img.name, "docker.io/anchors/busybox:latest");
        assert_eq!(img.target.digest, digest(BUSYBOX_MANIFEST));
        assert_eq!(img.target.media_type, OCI_MANIFEST);
        let platform = img.target.platform.as_ref().unwrap();
        assert_eq!(platform.os().to_string(), "linux");
        assert_eq!(platform.architecture().to_string(), "amd64");

        let record = t
            .store
            .images()
            .get("docker.io/anchors/busybox:latest")
            .unwrap();
        assert_eq!(record.target.digest, digest(BUSYBOX_MANIFEST));
        let want = {
            let mut v = vec![
                digest(BUSYBOX_MANIFEST),
                digest(BUSYBOX_CONFIG),
                digest("sha256:c35cc138a9a70f4dfeab8c49e0457a1e070faeba69fc3a02d593dae5b2773981"),
            ];
            v.sort();
            v
        };
        assert_eq!(blobs(&t.store), want);
        assert!(t.store.verify().unwrap().is_ok());
        let events = events.into_inner().unwrap();
        let layer = events.iter().find(|e| e.1 == "layer").unwrap();
        assert_eq!(layer.2, 1_036_102);
        assert!(events.iter().any(|e| e.1 == "config"));
        assert!(
            t.store.leases().list().unwrap().is_empty(),
            "lease left behind"
        );
    }
}

#[test]
fn busybox_docker_archive_gets_a_built_manifest() {
    let Some(fx) = fixtures() else { return };
    let t = temp_store();
    let path = fx.join("busybox.docker.tar");
    let report = import::import(&t.store, &path, &ImportOptions::default()).unwrap();
    assert_eq!(report.format, Format::DockerArchive);
    let img = &report.images[0];
    assert_eq!(img.name, "docker.io/anchors/busybox:latest");
    assert_eq!(img.target.media_type, DOCKER_MANIFEST);
    let manifest = t.store.read_all(&img.target.digest, 4 << 20).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(m["config"]["digest"], BUSYBOX_CONFIG);
    assert_eq!(m["layers"][0]["digest"], BUSYBOX_DIFF_ID);
    assert_eq!(m["layers"][0]["mediaType"], DOCKER_LAYER_TAR);
    assert_eq!(m["layers"][0]["size"], 2_140_160);
    let p = img.target.platform.as_ref().unwrap();
    assert_eq!(p.architecture().to_string(), "amd64");
    // Config, layer and the built manifest; nothing else (VERSION, json, repositories).
    assert_eq!(blobs(&t.store).len(), 3);
    assert!(t.store.verify().unwrap().is_ok());
}

#[test]
fn debian_gzip_and_zstd_archives() {
    let Some(fx) = fixtures() else { return };
    for (file, name, manifest, layers) in [
        (
            "debian-gzip.oci.tar",
            "docker.io/anchors/debian:bookworm",
            DEBIAN_GZIP_MANIFEST,
            [48_763_335u64, 554_561, 14_361_346],
        ),
        (
            "debian-zstd.oci.tar",
            "docker.io/anchors/debian:bookworm-zstd",
            DEBIAN_ZSTD_MANIFEST,
            [39_869_297, 551_745, 14_316_448],
        ),
    ] {
        let t = temp_store();
        let report = import::import(&t.store, &fx.join(file), &ImportOptions::default()).unwrap();
        assert_eq!(report.images.len(), 1, "{file}");
        assert_eq!(report.images[0].name, name);
        assert_eq!(report.images[0].target.digest, digest(manifest));
        assert_eq!(report.blobs, 5);
        let doc = t.store.read_all(&digest(manifest), 4 << 20).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(m["config"]["digest"], DEBIAN_CONFIG);
        for (i, size) in layers.iter().enumerate() {
            let d = digest(m["layers"][i]["digest"].as_str().unwrap());
            assert_eq!(t.store.info(&d).unwrap().size, *size, "{file} layer {i}");
        }
        assert_eq!(blobs(&t.store).len(), 5);
    }
}

#[test]
fn reimport_is_idempotent_and_keeps_names() {
    let Some(fx) = fixtures() else { return };
    let t = temp_store();
    let path = fx.join("busybox.oci.tar");
    import::import(&t.store, &path, &ImportOptions::default()).unwrap();
    let before = blobs(&t.store);
    let created = t
        .store
        .images()
        .get("docker.io/anchors/busybox:latest")
        .unwrap()
        .created;
    // Also through the other two formats of the same image: same blobs (docker adds its
    // built manifest and its uncompressed layer).
    import::import(&t.store, &path, &ImportOptions::default()).unwrap();
    import::import(&t.store, &fx.join("busybox-oci"), &ImportOptions::default()).unwrap();
    assert_eq!(blobs(&t.store), before);
    let again = t
        .store
        .images()
        .get("docker.io/anchors/busybox:latest")
        .unwrap();
    assert_eq!(again.created, created);
    assert_eq!(t.store.images().list(&[]).unwrap().len(), 1);
}

#[test]
fn name_option_and_platform_choice() {
    let Some(fx) = fixtures() else { return };
    let t = temp_store();
    let path = fx.join("busybox.oci.tar");
    let report = import::import(
        &t.store,
        &path,
        &ImportOptions {
            name: Some("berth-test/bb:v1"),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(report.images[0].name, "docker.io/berth-test/bb:v1");
    assert!(
        t.store
            .images()
            .get("docker.io/anchors/busybox:latest")
            .is_err()
    );

    // The fixture is linux/amd64 only: another platform finds nothing and stores nothing new.
    let arm = PlatformChoice::Only(Platform::parse("linux/arm64").unwrap());
    let t2 = temp_store();
    let err = import::import(
        &t2.store,
        &path,
        &ImportOptions {
            platform: arm,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, import::Error::NoMatchingPlatform { .. }),
        "{err}"
    );
    assert_eq!(err.kind(), import::ErrorKind::NotFound);
    assert!(t2.store.images().list(&[]).unwrap().is_empty());
    let all = import::import(
        &t2.store,
        &fx.join("busybox.docker.tar"),
        &ImportOptions {
            platform: PlatformChoice::All,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(all.images.len(), 1);
}
