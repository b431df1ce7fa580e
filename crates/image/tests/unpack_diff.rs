//! `diff_snapshot` round trip on both backends: changes made in an active snapshot on an
//! unpacked image become a layer blob in the store; an image of the old layers plus that blob
//! unpacks to the same tree as the changed snapshot. Checked for the active snapshot (overlay:
//! its upper directory) and for the same snapshot once committed (mounted views).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod unpack_support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use berth_image::build::LayerInfo;
use berth_image::diff::DiffOptions;
use berth_image::unpack::{self, LABEL_UNCOMPRESSED, UnpackOptions, diff_snapshot};
use berth_snapshot::{Opts, TempMount};
use unpack_support::{Backend, Env, files_tar, privileged, store_image, store_layer, tree_diff};

fn round_trip(b: Backend) {
    let env = Env::new(b);
    let l0 = store_layer(
        &env.store,
        &files_tar(
            "etc",
            &[("keep", b"keep"), ("gone", b"gone"), ("mode", b"m")],
        ),
        true,
    );
    let l1 = store_layer(&env.store, &files_tar("usr", &[("tool", b"v1")]), true);
    let base = vec![l0, l1];
    let name = store_image(&env.store, "diff:base", &base);
    let opts = UnpackOptions::new(b.name());
    let top = unpack::unpack_image(&env.store, env.sn.as_ref(), &name, &opts)
        .unwrap()
        .chain_id
        .unwrap()
        .to_string();

    // Change things in an active snapshot.
    let mounts = env.sn.prepare("work", &top, &Opts::new()).unwrap();
    let changed = {
        let m = TempMount::new(&mounts, env.tmp.path()).unwrap();
        let root = m.path();
        std::fs::remove_file(root.join("etc/gone")).unwrap();
        std::fs::write(root.join("usr/tool"), b"v2").unwrap();
        std::fs::create_dir(root.join("opt")).unwrap();
        std::fs::write(root.join("opt/new"), b"new file").unwrap();
        std::fs::set_permissions(
            root.join("etc/mode"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let t = unpack_support::snapshot(root, true);
        m.finish().unwrap();
        t
    };

    let check = |key: &str, tag: &str| {
        let desc = diff_snapshot(
            &env.store,
            env.sn.as_ref(),
            key,
            &DiffOptions::default(),
            &BTreeMap::new(),
        )
        .unwrap();
        let info = env.store.info(&desc.digest).unwrap();
        let diff_id = info.labels[LABEL_UNCOMPRESSED].parse().unwrap();
        let layer = LayerInfo {
            digest: desc.digest.clone(),
            size: desc.size,
            diff_id,
            uncompressed_size: 0,
            media_type: berth_oci::media_type::oci_layer(berth_oci::Compression::Gzip),
        };
        assert_eq!(desc.media_type, layer.media_type);
        let mut layers = base.clone();
        layers.push(layer);
        let image = store_image(&env.store, &format!("diff:{tag}"), &layers);
        let r = unpack::unpack_image(&env.store, env.sn.as_ref(), &image, &opts).unwrap();
        assert!(r.skipped() >= 2, "the base chain is reused");
        let got = env.chain_tree(&r.chain_id.unwrap().to_string());
        let d = tree_diff(&got, &changed);
        assert!(d.is_empty(), "{b:?} {tag}: {d:?}");
        assert!(!got.nodes.contains_key(std::path::Path::new("etc/gone")));
    };
    check("work", "active");
    env.sn.commit("work-done", "work", &Opts::new()).unwrap();
    check("work-done", "committed");
    env.assert_clean();
}

#[test]
fn diff_round_trip_overlay() {
    if privileged() {
        round_trip(Backend::Overlay);
    }
}

#[test]
fn diff_round_trip_native() {
    if privileged() {
        round_trip(Backend::Native);
    }
}
