//! Imports across processes: two processes importing the same archive at once, and an import
//! killed in the middle of a layer and rerun. The child processes are this test binary,
//! re-executed to run the ignored `child_import` test with its instructions in the environment.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

mod import_common;

use std::path::Path;
use std::process::{Command, Stdio};

use berth_image::content::ContentStore;
use berth_image::import::{self, ImportOptions};
use berth_image::progress::ProgressEvent;
use import_common::*;

const ENV_ROOT: &str = "BERTH_TEST_CHILD_ROOT";
const ENV_SOURCE: &str = "BERTH_TEST_CHILD_SOURCE";
const ENV_ABORT_AT: &str = "BERTH_TEST_CHILD_ABORT_AT";

/// Child side: imports `$ENV_SOURCE` into `$ENV_ROOT`; with `$ENV_ABORT_AT`, dies abruptly
/// (as `kill -9` would leave things) once a layer has that many bytes in.
#[test]
#[ignore = "run by the other tests in a child process"]
fn child_import() {
    let root = std::env::var_os(ENV_ROOT).expect("child root");
    let source = std::env::var_os(ENV_SOURCE).expect("child source");
    let abort_at: Option<u64> = std::env::var(ENV_ABORT_AT).ok().map(|s| s.parse().unwrap());
    let store = ContentStore::open(Path::new(&root)).unwrap();
    let progress = |e: &ProgressEvent<'_>| {
        if let Some(at) = abort_at
            && e.kind == "layer"
            && !e.finished
            && e.done >= at
        {
            std::process::abort();
        }
    };
    let report = import::import(
        &store,
        Path::new(&source),
        &ImportOptions {
            progress: &progress,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(report.images.len(), 1);
}

fn child(root: &Path, source: &Path, abort_at: Option<u64>) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--ignored", "--exact", "child_import", "--test-threads=1"])
        .env(ENV_ROOT, root)
        .env(ENV_SOURCE, source)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(at) = abort_at {
        cmd.env(ENV_ABORT_AT, at.to_string());
    }
    cmd.spawn().unwrap()
}

fn check_store(root: &Path, blobs: usize, name: &str, manifest: &str) {
    let store = ContentStore::open(root).unwrap();
    assert_eq!(store.list_digests().unwrap().len(), blobs);
    assert!(store.verify().unwrap().is_ok());
    assert!(
        store.list_statuses(None).unwrap().is_empty(),
        "ingests left behind"
    );
    assert_eq!(
        store.images().get(name).unwrap().target.digest.to_string(),
        manifest
    );
    // Each blob exists once, as one file named by its digest.
    let files = std::fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(files, blobs);
}

#[test]
fn two_processes_import_the_same_archive() {
    let Some(fx) = fixtures() else { return };
    let t = temp_store();
    let root = t.dir.path().join("shared-root");
    let source = fx.join("debian-gzip.oci.tar");
    let a = child(&root, &source, None);
    let b = child(&root, &source, None);
    for c in [a, b] {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    }
    check_store(
        &root,
        5,
        "docker.io/anchors/debian:bookworm",
        DEBIAN_GZIP_MANIFEST,
    );
}

#[test]
fn killed_import_leaves_no_name_and_reruns() {
    let Some(fx) = fixtures() else { return };
    let t = temp_store();
    let root = t.dir.path().join("killed-root");
    let source = fx.join("debian-zstd.oci.tar");
    for abort_at in [1u64, 4 << 20, 30 << 20] {
        let out = child(&root, &source, Some(abort_at))
            .wait_with_output()
            .unwrap();
        assert!(
            !out.status.success(),
            "the child should have died at {abort_at}"
        );
        let store = ContentStore::open(&root).unwrap();
        assert!(
            store.images().list(&[]).unwrap().is_empty(),
            "a name was recorded"
        );
        assert!(store.verify().unwrap().is_ok());
        drop(store);
    }
    // Partial ingests are there to be resumed; the rerun completes them.
    let store = ContentStore::open(&root).unwrap();
    let partial = store.list_statuses(None).unwrap();
    assert!(partial.iter().any(|s| s.offset > 0), "{partial:?}");
    import::import(&store, &source, &ImportOptions::default()).unwrap();
    drop(store);
    check_store(
        &root,
        5,
        "docker.io/anchors/debian:bookworm-zstd",
        DEBIAN_ZSTD_MANIFEST,
    );
}

#[test]
fn gc_running_during_imports_never_takes_their_blobs() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let Some(fx) = fixtures() else { return };
    let t = temp_store();
    let stop = AtomicBool::new(false);
    let collections = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                t.store
                    .gc(&berth_image::content::GcOptions::default())
                    .unwrap();
                collections.fetch_add(1, Ordering::Relaxed);
            }
        });
        for round in 0..3 {
            for file in ["busybox.oci.tar", "busybox-oci", "busybox.docker.tar"] {
                let report =
                    import::import(&t.store, &fx.join(file), &ImportOptions::default()).unwrap();
                // Exporting walks the whole image and fails on any missing blob.
                let out = t.dir.path().join(format!("out-{round}-{file}"));
                let name = report.images[0].name.as_str();
                berth_image::export::export(
                    &t.store,
                    &[name],
                    &out,
                    berth_image::export::ExportFormat::OciDir,
                    &berth_image::progress::NoProgress,
                )
                .unwrap();
                // Drop the name so the next round's blobs are unreferenced again.
                t.store.images().delete(name).unwrap();
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(collections.load(Ordering::Relaxed) > 0);
    assert!(t.store.verify().unwrap().is_ok());
}
