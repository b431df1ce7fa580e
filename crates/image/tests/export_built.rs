//! Images written with the builder API straight into a store, then exported: the store holds
//! a consistent image that survives GC, and peers read the export.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod import_common;

use std::collections::BTreeMap;
use std::process::Command;

use berth_image::build::{ImageBuilder, LayerBuilder, write_layer_to_store};
use berth_image::content::GcOptions;
use berth_image::export::{self, ExportFormat};
use berth_image::progress::NoProgress;
use berth_oci::Compression;
use import_common::*;

#[test]
fn build_into_store_survives_gc_and_exports() {
    let t = temp_store();
    let rootfs = t.dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::write(rootfs.join("bin/hello"), b"#!/bin/sh\necho hello\n").unwrap();
    let lease = t.store.leases().create("", BTreeMap::new(), None).unwrap();
    let builder = LayerBuilder::new(Compression::Gzip).owner(0, 0);
    let base = write_layer_to_store(&t.store, &builder, &rootfs, Some(&lease.id)).unwrap();
    std::fs::write(rootfs.join("bin/extra"), b"x").unwrap();
    let top = write_layer_to_store(&t.store, &builder, &rootfs, Some(&lease.id)).unwrap();
    assert_ne!(base.digest, top.digest);
    // Same tree, same bytes: writing it again stores nothing new.
    let again = write_layer_to_store(&t.store, &builder, &rootfs, Some(&lease.id)).unwrap();
    assert_eq!(again, top);

    let built = ImageBuilder::new()
        .cmd(["/bin/hello"])
        .layer(base.clone(), "base")
        .layer(top.clone(), "extra")
        .finish()
        .unwrap();
    let image = built
        .write_to_store(&t.store, "berth-test/built:1")
        .unwrap();
    assert_eq!(image.name, "docker.io/berth-test/built:1");
    t.store.leases().delete(&lease.id).unwrap();

    let report = t.store.gc(&GcOptions::default()).unwrap();
    assert!(report.removed_blobs.is_empty(), "{report:?}");
    for d in [
        &base.digest,
        &top.digest,
        &built.config_digest,
        &built.descriptor.digest,
    ] {
        assert!(t.store.exists(d), "{d}");
    }
    assert!(t.store.verify().unwrap().is_ok());

    let out = t.dir.path().join("built-oci");
    export::export(
        &t.store,
        &["berth-test/built:1"],
        &out,
        ExportFormat::OciDir,
        &NoProgress,
    )
    .unwrap();
    if tool("skopeo") {
        let o = Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:1", out.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["Digest"], built.descriptor.digest.to_string());
        assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
    }
    if tool("umoci") {
        let bundle = t.dir.path().join("bundle");
        let o = Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:1", out.display()))
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            std::fs::read(bundle.join("rootfs/bin/hello")).unwrap(),
            b"#!/bin/sh\necho hello\n"
        );
        assert!(bundle.join("rootfs/bin/extra").is_file());
    }

    // Removing the name lets GC take everything.
    t.store
        .images()
        .delete("docker.io/berth-test/built:1")
        .unwrap();
    let report = t.store.gc(&GcOptions::default()).unwrap();
    assert_eq!(report.removed_blobs.len(), 4);
}
