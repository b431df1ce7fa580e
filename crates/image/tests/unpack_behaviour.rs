//! Unpack behaviour on small images built in the test: dedup (again, shared base layers,
//! concurrent threads), hardlinks into lower layers under parallel unpack, failures (corrupt
//! blob, truncated stream, diffID mismatch) that leave nothing behind, and snapshot GC.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod unpack_support;

use berth_image::ErrorKind;
use berth_image::unpack::{self, Error, LayerOutcome, UnpackOptions, gc_snapshots};
use berth_snapshot::{Kind, Opts};
use unpack_support::{
    Backend, Env, TarBuilder, assert_same_tree, files_tar, privileged, store_image, store_layer,
};

fn opts(backend: Backend) -> UnpackOptions<'static> {
    UnpackOptions::new(backend.name())
}

/// Three layers: a base, a change, a whiteout of one base file.
fn three_layer_image(env: &Env, name: &str, base: &[u8]) -> String {
    let l0 = store_layer(
        &env.store,
        &files_tar("base", &[("a", base), ("b", b"bee")]),
        true,
    );
    let l1 = store_layer(&env.store, &files_tar("top", &[("c", b"sea")]), true);
    let mut t = TarBuilder::new();
    t.dir("base/", 0o755).file("base/.wh.b", b"", 0o644);
    let l2 = store_layer(&env.store, &t.finish(), false);
    store_image(&env.store, name, &[l0, l1, l2])
}

fn both(f: impl Fn(Backend)) {
    if !privileged() {
        return;
    }
    f(Backend::Overlay);
    f(Backend::Native);
}

#[test]
fn second_unpack_skips_every_layer() {
    both(|b| {
        let env = Env::new(b);
        let name = three_layer_image(&env, "dedup:one", b"alpha");
        let first = unpack::unpack_image(&env.store, env.sn.as_ref(), &name, &opts(b)).unwrap();
        assert_eq!((first.applied(), first.skipped()), (3, 0));
        let again = unpack::unpack_image(&env.store, env.sn.as_ref(), &name, &opts(b)).unwrap();
        assert_eq!((again.applied(), again.skipped()), (0, 3));
        assert_eq!(first.chain_id, again.chain_id);
        assert_eq!(env.committed().len(), 3);
        let tree = env.chain_tree(&first.chain_id.unwrap().to_string());
        let names: Vec<String> = tree.nodes.keys().map(|p| p.display().to_string()).collect();
        assert_eq!(names, ["base", "base/a", "top", "top/c"], "{b:?}");
        env.assert_clean();
    });
}

#[test]
fn images_sharing_a_base_share_its_snapshot() {
    both(|b| {
        let env = Env::new(b);
        let a = three_layer_image(&env, "share:a", b"same base");
        let bb = three_layer_image(&env, "share:b", b"same base");
        let other = store_layer(&env.store, &files_tar("other", &[("x", b"x")]), true);
        let base = store_layer(
            &env.store,
            &files_tar("base", &[("a", b"same base"), ("b", b"bee")]),
            true,
        );
        let c = store_image(&env.store, "share:c", &[base, other]);
        let ra = unpack::unpack_image(&env.store, env.sn.as_ref(), &a, &opts(b)).unwrap();
        assert_eq!(ra.applied(), 3);
        // Same layers, another name: everything is there.
        let rb = unpack::unpack_image(&env.store, env.sn.as_ref(), &bb, &opts(b)).unwrap();
        assert_eq!(rb.skipped(), 3);
        // Same base, another top: the base is skipped.
        let rc = unpack::unpack_image(&env.store, env.sn.as_ref(), &c, &opts(b)).unwrap();
        assert_eq!(rc.layers[0].outcome, LayerOutcome::Skipped);
        assert!(matches!(rc.layers[1].outcome, LayerOutcome::Applied { .. }));
        assert_eq!(env.committed().len(), 4);
        env.assert_clean();
    });
}

#[test]
fn concurrent_threads_apply_each_layer_once() {
    both(|b| {
        let env = Env::new(b);
        let big: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        let name = three_layer_image(&env, "race:one", &big);
        let reports: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        unpack::unpack_image(&env.store, env.sn.as_ref(), &name, &opts(b)).unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let applied: usize = reports.iter().map(|r| r.applied()).sum();
        assert_eq!(applied, 3, "each layer applied exactly once ({b:?})");
        assert!(reports.iter().all(|r| r.chain_id == reports[0].chain_id));
        assert_eq!(env.committed().len(), 3);
        env.assert_clean();
    });
}

#[test]
fn hardlink_into_a_lower_layer_survives_parallel_unpack() {
    if !privileged() {
        return;
    }
    let build = |env: &Env| {
        let l0 = store_layer(
            &env.store,
            &files_tar("data", &[("orig", b"linked content")]),
            true,
        );
        let filler = store_layer(&env.store, &files_tar("mid", &[("m", b"m")]), true);
        let mut t = TarBuilder::new();
        t.dir("data/", 0o755).link("data/orig", "data/link");
        let l2 = store_layer(&env.store, &t.finish(), false);
        store_image(&env.store, "links:one", &[l0, filler, l2])
    };
    let overlay = Env::new(Backend::Overlay);
    let name = build(&overlay);
    let mut o = opts(Backend::Overlay);
    o.max_parallel = 3;
    let r = unpack::unpack_image(&overlay.store, overlay.sn.as_ref(), &name, &o).unwrap();
    assert_eq!(r.applied(), 3);
    let ours = overlay.chain_tree(&r.chain_id.clone().unwrap().to_string());
    let link = &ours.nodes[std::path::Path::new("data/link")];
    assert_eq!(
        link.content,
        ours.nodes[std::path::Path::new("data/orig")].content
    );
    // Same tree as the copy-based backend, which applies on the full parent tree.
    let native = Env::new(Backend::Native);
    let name = build(&native);
    let rn = unpack::unpack_image(
        &native.store,
        native.sn.as_ref(),
        &name,
        &opts(Backend::Native),
    )
    .unwrap();
    assert_eq!(rn.chain_id, r.chain_id);
    let theirs = native.chain_tree(&rn.chain_id.unwrap().to_string());
    assert_eq!(theirs.links.len(), 1, "native keeps the hardlink");
    let diff = unpack_support::tree_diff(&ours, &theirs);
    // overlayfs reports copied-up hardlinks as one inode only with index=on; compare the rest.
    let diff: Vec<_> = diff
        .into_iter()
        .filter(|d| !d.starts_with("hardlink groups differ"))
        .collect();
    assert!(diff.is_empty(), "{diff:?}");
    overlay.assert_clean();
    native.assert_clean();
}

/// Unpacks `name`, expects an error of `kind`, and checks nothing of the failed chain or above
/// was committed and no active snapshot, lock or mount is left.
fn expect_failure(
    env: &Env,
    b: Backend,
    name: &str,
    failing_layer: usize,
    kinds: &[ErrorKind],
) -> Error {
    let img = env.store.images().get(name).unwrap();
    let resolved = unpack::resolve(&env.store, &img.target, None).unwrap();
    let chains = resolved.chain_ids();
    let err = unpack::unpack_image(&env.store, env.sn.as_ref(), name, &opts(b)).unwrap_err();
    assert!(kinds.contains(&err.kind()), "{err}");
    for c in &chains[failing_layer..] {
        assert!(
            env.sn.stat(&c.to_string()).is_err(),
            "chain {c} committed despite the failure"
        );
    }
    assert!(env.committed().len() <= failing_layer);
    env.assert_clean();
    err
}

#[test]
fn corrupt_blob_fails_verification_and_leaves_nothing() {
    both(|b| {
        let env = Env::new(b);
        let l0 = store_layer(&env.store, &files_tar("a", &[("f", b"one")]), true);
        let tar = files_tar("b", &[("g", &[7u8; 100_000])]);
        let l1 = store_layer(&env.store, &tar, false);
        let name = store_image(&env.store, "bad:blob", &[l0, l1.clone()]);
        // Flip bytes inside a file's content: the tar still parses, the digest does not match.
        let path = env.store.blob_path(&l1.digest);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[2048] ^= 0xff;
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let err = expect_failure(&env, b, &name, 1, &[ErrorKind::FailedPrecondition]);
        assert!(matches!(err, Error::BlobVerification { .. }), "{err}");
    });
}

/// Incompressible bytes (a 64-bit LCG), so a gzip layer is as large as its content.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 56) as u8
        })
        .collect()
}

/// A gzip layer cut in half, stored under the digest of the cut bytes: blob verification
/// passes, decoding fails. `len` decides whether the layer goes through the decoder thread
/// (large) or the single-threaded path (small).
fn truncated(len: usize) {
    both(|b| {
        let env = Env::new(b);
        let tar = files_tar("t", &[("big", &noise(len))]);
        let mut gz = store_layer(&env.store, &tar, true);
        let bytes = std::fs::read(env.store.blob_path(&gz.digest)).unwrap();
        let cut = &bytes[..bytes.len() / 2];
        let digest = berth_oci::Digest::sha256(cut);
        env.store
            .ingest(
                "cut",
                cut,
                &digest,
                Some(cut.len() as u64),
                &Default::default(),
                &mut |_, _| {},
            )
            .unwrap();
        gz.digest = digest;
        gz.size = cut.len() as u64;
        let name = store_image(&env.store, "bad:cut", &[gz]);
        let err = expect_failure(&env, b, &name, 0, &[ErrorKind::InvalidArgument]);
        assert!(matches!(err, Error::Apply { .. }), "{err}");
        assert!(env.committed().is_empty());
    });
}

#[test]
fn truncated_small_layer_is_refused() {
    truncated(300_000);
}

#[test]
fn truncated_large_layer_is_refused() {
    truncated(12 << 20);
}

#[test]
fn corrupt_large_blob_fails_verification() {
    both(|b| {
        let env = Env::new(b);
        let l0 = store_layer(
            &env.store,
            &files_tar("n", &[("big", &noise(10 << 20))]),
            true,
        );
        let name = store_image(&env.store, "bad:large", std::slice::from_ref(&l0));
        let path = env.store.blob_path(&l0.digest);
        let mut bytes = std::fs::read(&path).unwrap();
        // Inside a stored (uncompressed) deflate block: the stream still decodes.
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let err = expect_failure(
            &env,
            b,
            &name,
            0,
            &[ErrorKind::FailedPrecondition, ErrorKind::InvalidArgument],
        );
        // gzip's CRC or the blob digest catches it, whichever comes first.
        assert!(
            matches!(
                err,
                Error::BlobVerification { .. }
                    | Error::Apply {
                        source: berth_image::apply::Error::Decompress { .. },
                        ..
                    }
            ),
            "{err}"
        );
    });
}

#[test]
fn diff_id_mismatch_commits_nothing() {
    both(|b| {
        let env = Env::new(b);
        let l0 = store_layer(&env.store, &files_tar("a", &[("f", b"one")]), true);
        let mut l1 = store_layer(&env.store, &files_tar("b", &[("g", b"two")]), true);
        let l2 = store_layer(&env.store, &files_tar("c", &[("h", b"three")]), true);
        l1.diff_id = berth_oci::Digest::sha256(b"not this layer");
        let name = store_image(&env.store, "bad:diffid", &[l0, l1, l2]);
        let err = expect_failure(&env, b, &name, 1, &[ErrorKind::FailedPrecondition]);
        assert!(
            matches!(
                err,
                Error::Apply {
                    source: berth_image::apply::Error::DiffIdMismatch { .. },
                    ..
                }
            ),
            "{err}"
        );
    });
}

#[test]
fn gc_keeps_reachable_chains_and_removes_the_rest() {
    both(|b| {
        let env = Env::new(b);
        let base = || files_tar("base", &[("a", b"shared"), ("b", b"bee")]);
        let l0 = store_layer(&env.store, &base(), true);
        let la = store_layer(&env.store, &files_tar("a", &[("x", b"a")]), true);
        let lb = store_layer(&env.store, &files_tar("b", &[("x", b"b")]), true);
        let a = store_image(&env.store, "gc:a", &[l0.clone(), la]);
        let bb = store_image(&env.store, "gc:b", &[l0, lb]);
        let ra = unpack::unpack_image(&env.store, env.sn.as_ref(), &a, &opts(b)).unwrap();
        let rb = unpack::unpack_image(&env.store, env.sn.as_ref(), &bb, &opts(b)).unwrap();
        let base_chain = ra.layers[0].chain_id.to_string();
        let top_a = ra.chain_id.clone().unwrap().to_string();
        let top_b = rb.chain_id.clone().unwrap().to_string();
        // A snapshot committed by a user (no snapshot.ref label) is never collected.
        env.sn
            .prepare("user-work", &base_chain, &Opts::new())
            .unwrap();
        env.sn
            .commit("user-layer", "user-work", &Opts::new())
            .unwrap();

        let r = gc_snapshots(&env.store, env.sn.as_ref()).unwrap();
        assert!(r.removed.is_empty(), "{r:?}");

        env.store.images().delete(&bb).unwrap();
        let r = gc_snapshots(&env.store, env.sn.as_ref()).unwrap();
        assert_eq!(r.removed, vec![top_b.clone()]);

        // A container's active snapshot on A's top keeps A's chain after A is deleted.
        env.sn.prepare("container", &top_a, &Opts::new()).unwrap();
        env.store.images().delete(&a).unwrap();
        let r = gc_snapshots(&env.store, env.sn.as_ref()).unwrap();
        assert!(r.removed.is_empty(), "{r:?}");
        env.sn.remove("container").unwrap();
        env.sn.remove("user-layer").unwrap();
        let r = gc_snapshots(&env.store, env.sn.as_ref()).unwrap();
        assert_eq!(r.removed, vec![top_a, base_chain], "children first");
        let left: Vec<_> = env
            .snapshots()
            .into_iter()
            .filter(|s| s.1 == Kind::Committed)
            .collect();
        assert!(left.is_empty(), "{left:?}");
        env.assert_clean();
    });
}

#[test]
fn layer_apply_and_unpack_agree() {
    // The mounted view of a chain equals the layers applied one by one onto a plain dir.
    both(|b| {
        let env = Env::new(b);
        let name = three_layer_image(&env, "agree:one", b"content");
        let r = unpack::unpack_image(&env.store, env.sn.as_ref(), &name, &opts(b)).unwrap();
        let plain = env.tmp.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        let img = env.store.images().get(&name).unwrap();
        for (l, _) in unpack::resolve(&env.store, &img.target, None)
            .unwrap()
            .layers
        {
            berth_image::apply::apply_layer_file(
                &env.store.blob_path(&l.digest),
                &plain,
                Default::default(),
            )
            .unwrap();
        }
        let want = unpack_support::snapshot(&plain, true);
        let got = env.chain_tree(&r.chain_id.unwrap().to_string());
        assert!(want.nodes.len() >= 4);
        let diff = unpack_support::tree_diff(&got, &want);
        assert!(diff.is_empty(), "{b:?}: {diff:?}");
        let _ = assert_same_tree;
        env.assert_clean();
    });
}
