//! Reads the busybox OCI layout that skopeo wrote (`../shared/fixtures/busybox-oci`) with this
//! crate's decoders, matcher and verifying reader, as an importer would.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use berth_oci::manifest::{descriptor_digest, diff_ids, parse_config, parse_index, parse_manifest};
use berth_oci::{Digest, Format, Matcher, Platform, Reference, VerifyingReader, chain_id};

fn layout() -> Option<PathBuf> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/busybox-oci");
    if dir.join("index.json").is_file() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("fixture {} is missing (required in CI)", dir.display());
    }
    eprintln!("skipping: fixture {} is missing", dir.display());
    None
}

/// Reads a blob through a verifying reader, as an importer would.
fn read_blob(dir: &std::path::Path, digest: &Digest, size: u64) -> Vec<u8> {
    let path = dir
        .join("blobs")
        .join(digest.algorithm().as_str())
        .join(digest.hex());
    let mut reader = VerifyingReader::new(File::open(&path).unwrap(), digest.clone(), Some(size));
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    assert!(reader.is_verified());
    out
}

#[test]
fn decodes_the_busybox_oci_layout() {
    let Some(dir) = layout() else { return };
    let index_bytes = std::fs::read(dir.join("index.json")).unwrap();
    let index = parse_index(&index_bytes, "index.json").unwrap();
    assert_eq!(index.format, Format::Oci);
    assert_eq!(index.value.manifests().len(), 1);

    // The fixture is linux/amd64: a linux/amd64 matcher picks it, an arm64 one does not.
    let amd64 = Matcher::only(&"linux/amd64".parse::<Platform>().unwrap());
    let chosen = amd64.select(&index.value);
    assert_eq!(chosen.len(), 1);
    let arm64 = Matcher::strict(&"linux/arm64".parse::<Platform>().unwrap());
    assert!(arm64.select(&index.value).is_empty());
    let descriptor = chosen[0];
    let annotations = descriptor.annotations().clone().unwrap();
    let name: Reference = annotations["io.containerd.image.name"].parse().unwrap();
    assert_eq!(name.familiar(), "anchors/busybox:latest");

    let manifest_digest = descriptor_digest(descriptor).unwrap();
    assert_eq!(
        manifest_digest.to_string(),
        "sha256:fc9ccb2f83219abb8405e0f2fbe32cc78376cf9c53e3fbe483fd1ded71143710"
    );
    let manifest_bytes = read_blob(&dir, &manifest_digest, descriptor.size());
    let manifest = parse_manifest(&manifest_bytes, &manifest_digest.to_string()).unwrap();
    assert_eq!(manifest.format, Format::Oci);

    let config_descriptor = manifest.value.config();
    let config_digest = descriptor_digest(config_descriptor).unwrap();
    let config_bytes = read_blob(&dir, &config_digest, config_descriptor.size());
    let config = parse_config(&config_bytes, &config_digest.to_string()).unwrap();
    let platform = Platform::from_config(&config);
    assert!(amd64.matches(&platform));
    assert_eq!(
        Platform::from(descriptor.platform().as_ref().unwrap()),
        platform
    );

    let ids = diff_ids(&config).unwrap();
    assert_eq!(ids.len(), manifest.value.layers().len());
    // One layer: its chain ID is its diffID.
    assert_eq!(chain_id(&ids), Some(ids[0].clone()));
    for layer in manifest.value.layers() {
        let digest = descriptor_digest(layer).unwrap();
        let blob = read_blob(&dir, &digest, layer.size());
        assert_eq!(blob.len() as u64, layer.size());
        assert_eq!(&blob[..2], b"\x1f\x8b", "gzip layer");
    }
}
