//! Imports of images built here for cases the fixtures do not cover: a multi-platform index
//! (host, one platform, all), and legacy docker-archives with `<id>/layer.tar` files and links.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod import_common;

use std::fs;
use std::path::Path;

use berth_image::build::{
    BuiltImage, ImageBuilder, LayerBuilder, LayerInfo, write_layer_to_layout,
};
use berth_image::export::{self, ExportFormat, LayoutWriter};
use berth_image::import::{self, ImportOptions, Platform, PlatformChoice};
use berth_image::metadata::Descriptor;
use berth_image::progress::NoProgress;
use berth_oci::Compression;
use berth_oci::media_type::{OCI_INDEX, OCI_MANIFEST};
use import_common::*;

const MULTI: &str = "docker.io/berth-test/multi:v1";

struct Multi {
    _tmp: tempfile::TempDir,
    layout: std::path::PathBuf,
    amd64: BuiltImage,
    arm64: BuiltImage,
    arm64_layer: LayerInfo,
    index: Descriptor,
}

fn platform_image(w: &mut LayoutWriter, base: &Path, p: &str) -> (BuiltImage, LayerInfo) {
    let rootfs = base.join(p.replace('/', "-"));
    fs::create_dir_all(&rootfs).unwrap();
    fs::write(rootfs.join("arch"), p.as_bytes()).unwrap();
    let layer = write_layer_to_layout(w, &LayerBuilder::new(Compression::Zstd), &rootfs).unwrap();
    let built = ImageBuilder::new()
        .platform(Platform::parse(p).unwrap())
        .layer(layer.clone(), p)
        .finish()
        .unwrap();
    w.put_bytes(&built.config).unwrap();
    w.put_bytes(&built.manifest).unwrap();
    (built, layer)
}

/// A layout whose only `index.json` entry is a nested index of linux/amd64 and linux/arm64.
fn multi_platform_layout() -> Multi {
    let tmp = tempfile::Builder::new()
        .prefix("berth-multi-")
        .tempdir()
        .unwrap();
    let layout = tmp.path().join("layout");
    let mut w = LayoutWriter::open(&layout).unwrap();
    let (amd64, _) = platform_image(&mut w, tmp.path(), "linux/amd64");
    let (arm64, arm64_layer) = platform_image(&mut w, tmp.path(), "linux/arm64");
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [&arm64.descriptor, &amd64.descriptor],
    });
    let bytes = serde_json::to_vec(&nested).unwrap();
    let digest = w.put_bytes(&bytes).unwrap();
    let index = Descriptor::new(OCI_INDEX, digest, bytes.len() as u64);
    w.add_image(MULTI, &index);
    w.finish().unwrap();
    Multi {
        _tmp: tmp,
        layout,
        amd64,
        arm64,
        arm64_layer,
        index,
    }
}

fn import_with(t: &TempStore, path: &Path, platform: PlatformChoice) -> import::ImportReport {
    import::import(
        &t.store,
        path,
        &ImportOptions {
            platform,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn multi_platform_index_host_one_or_all() {
    let m = multi_platform_layout();
    assert_eq!(
        Platform::host().to_string(),
        "linux/amd64",
        "the test assumes an amd64 host"
    );

    // Host: the amd64 manifest becomes the target; nothing of arm64 is stored.
    let t = temp_store();
    let r = import_with(&t, &m.layout, PlatformChoice::Host);
    assert_eq!(r.images[0].name, MULTI);
    assert_eq!(r.images[0].target.digest, m.amd64.descriptor.digest);
    assert_eq!(r.images[0].target.media_type, OCI_MANIFEST);
    assert!(!t.store.exists(&m.arm64.descriptor.digest));
    assert!(!t.store.exists(&m.arm64_layer.digest));
    assert_eq!(t.store.list_digests().unwrap().len(), 3);

    // One chosen platform (given as an alias).
    let t = temp_store();
    let only = PlatformChoice::Only(Platform::parse("linux/aarch64").unwrap());
    let r = import_with(&t, &m.layout, only);
    assert_eq!(r.images[0].target.digest, m.arm64.descriptor.digest);
    assert!(t.store.exists(&m.arm64_layer.digest));
    assert!(!t.store.exists(&m.amd64.descriptor.digest));

    // A platform the index does not have.
    let t = temp_store();
    let err = import::import(
        &t.store,
        &m.layout,
        &ImportOptions {
            platform: PlatformChoice::Only(Platform::parse("linux/s390x").unwrap()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, import::Error::NoMatchingPlatform { .. }),
        "{err}"
    );

    // All: the index is the target and everything is stored; export and re-import keep it.
    let t = temp_store();
    let r = import_with(&t, &m.layout, PlatformChoice::All);
    assert_eq!(r.images[0].target.digest, m.index.digest);
    assert_eq!(r.images[0].target.media_type, OCI_INDEX);
    assert_eq!(t.store.list_digests().unwrap().len(), 7);
    let out = t.dir.path().join("multi.tar");
    export::export(
        &t.store,
        &[MULTI],
        &out,
        ExportFormat::OciArchive,
        &NoProgress,
    )
    .unwrap();
    let t2 = temp_store();
    let r = import_with(&t2, &out, PlatformChoice::All);
    assert_eq!(r.images[0].target.digest, m.index.digest);
    assert!(t2.store.verify().unwrap().is_ok());
    // The exported index imports for the host only, too.
    let t3 = temp_store();
    let r = import_with(&t3, &out, PlatformChoice::Host);
    assert_eq!(r.images[0].target.digest, m.amd64.descriptor.digest);
}

/// An archive member: name, file data or symlink target.
type Member<'a> = (&'a str, Option<&'a [u8]>, Option<&'a str>);

fn tar_of(path: &Path, entries: &[Member<'_>]) {
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    for (name, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        match (data, link) {
            (Some(d), _) => {
                h.set_size(d.len() as u64);
                b.append_data(&mut h, name, *d).unwrap();
            }
            (None, Some(target)) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, name, target).unwrap();
            }
            (None, None) => unreachable!(),
        }
    }
    b.finish().unwrap();
}

#[test]
fn legacy_docker_archive_layer_files_and_links() {
    let tmp = tempfile::Builder::new()
        .prefix("berth-legacy-")
        .tempdir()
        .unwrap();
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::write(rootfs.join("etc/motd"), b"legacy\n").unwrap();
    let mut tar_bytes = Vec::new();
    let layer = LayerBuilder::new(Compression::None)
        .write(&rootfs, &mut tar_bytes)
        .unwrap();
    let mut gz = Vec::new();
    let gz_layer = LayerBuilder::new(Compression::Gzip)
        .write(&rootfs, &mut gz)
        .unwrap();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
        layer.diff_id, gz_layer.diff_id
    );
    let config_name = format!(
        "{}.json",
        berth_oci::Digest::sha256(config.as_bytes()).hex()
    );
    let manifest = format!(
        r#"[{{"Config":"{config_name}","RepoTags":["legacy:1","berth-test/legacy:latest"],"Layers":["0123/layer.tar","4567/layer.tar"]}}]"#
    );
    let path = tmp.path().join("legacy.tar");
    let real = format!("{}.tar", layer.digest.hex());
    tar_of(
        &path,
        &[
            ("0123/VERSION", Some(b"1.0"), None),
            ("0123/layer.tar", None, Some(&format!("../{real}"))),
            (&real, Some(&tar_bytes), None),
            ("4567/layer.tar", Some(&gz), None),
            (&config_name, Some(config.as_bytes()), None),
            ("manifest.json", Some(manifest.as_bytes()), None),
            ("repositories", Some(b"{}"), None),
        ],
    );
    let t = temp_store();
    let r = import::import(&t.store, &path, &ImportOptions::default()).unwrap();
    let names: Vec<&str> = r.images.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "docker.io/library/legacy:1",
            "docker.io/berth-test/legacy:latest"
        ]
    );
    let m: serde_json::Value = serde_json::from_slice(
        &t.store
            .read_all(&r.images[0].target.digest, 1 << 20)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(m["layers"][0]["digest"], layer.digest.to_string());
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar"
    );
    assert_eq!(m["layers"][1]["digest"], gz_layer.digest.to_string());
    assert_eq!(
        m["layers"][1]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    // Config, two layers, the built manifest.
    assert_eq!(t.store.list_digests().unwrap().len(), 4);
    // Importing again is a no-op that yields the same manifest.
    let again = import::import(&t.store, &path, &ImportOptions::default()).unwrap();
    assert_eq!(again.images[0].target.digest, r.images[0].target.digest);
    assert_eq!(t.store.list_digests().unwrap().len(), 4);
    assert!(t.store.verify().unwrap().is_ok());
}
