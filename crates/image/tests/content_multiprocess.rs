//! Several processes sharing one store root: ref locks across processes, two processes
//! ingesting the same blob at once (same ref and different refs), and concurrent metadata
//! writes through the shared redb file.
//!
//! The children are this test binary re-executed with `BERTH_MP_CHILD` set.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_image::ErrorKind;
use berth_image::content::{ContentStore, Expected, GcOptions};
use berth_image::metadata::{Descriptor, Image, LeaseResource};
use berth_oci::Digest;

const CHILD_ENV: &str = "BERTH_MP_CHILD";

fn content(seed: u64, size: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut b = Vec::with_capacity(size + 8);
    while b.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.extend_from_slice(&x.to_le_bytes());
    }
    b.truncate(size);
    b
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct TempRoot(PathBuf);

impl TempRoot {
    fn new(tag: &str) -> Self {
        use std::hash::{BuildHasher, RandomState};
        let p = std::env::temp_dir().join(format!(
            "berth-content-mp-{tag}-{}-{:x}",
            std::process::id(),
            RandomState::new().hash_one(std::time::SystemTime::now())
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempRoot(p)
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Child roles:
/// - `hold|root|ref`: open a writer on `ref`, announce, sleep (to be killed).
/// - `ingest|root|ref|seed|size|go-file|id`: wait for `go-file`, then in a lease ingest the
///   blob, record an image `example.com/<id>:latest` and a second small blob, and exit 0.
fn child_main(spec: &str) {
    let p: Vec<&str> = spec.split('|').collect();
    let mut out = std::io::stdout();
    match p.as_slice() {
        ["hold", root, r#ref] => {
            let store = ContentStore::open(Path::new(root)).unwrap();
            let mut w = store.writer(r#ref, None).unwrap();
            w.write_all(b"held by another process").unwrap();
            writeln!(out, "\nBERTH-READY").unwrap();
            out.flush().unwrap();
            std::thread::sleep(Duration::from_secs(120));
        }
        ["ingest", root, r#ref, seed, size, go, id] => {
            let data = content(seed.parse().unwrap(), size.parse().unwrap());
            let d = Digest::sha256(&data);
            let start = Instant::now();
            while !Path::new(go).exists() {
                assert!(start.elapsed() < Duration::from_secs(60), "no go signal");
                std::thread::sleep(Duration::from_millis(1));
            }
            let store = ContentStore::open(Path::new(root)).unwrap();
            let leases = store.leases();
            let lease = leases.create("", BTreeMap::new(), None).unwrap();
            leases
                .add_resource(&lease.id, LeaseResource::Content(d.clone()))
                .unwrap();
            let info = store
                .ingest(
                    r#ref,
                    &data[..],
                    &d,
                    Some(data.len() as u64),
                    &BTreeMap::new(),
                    &mut |_, _| {},
                )
                .unwrap();
            assert_eq!(info.digest, d);
            let own = format!("own blob of {id}");
            let own_d = Digest::sha256(own.as_bytes());
            store
                .ingest(
                    &format!("own-{id}"),
                    own.as_bytes(),
                    &own_d,
                    None,
                    &BTreeMap::new(),
                    &mut |_, _| {},
                )
                .unwrap();
            let target = Descriptor::new("application/octet-stream", d, data.len() as u64);
            store
                .images()
                .put(Image::new(format!("example.com/{id}:latest"), target))
                .unwrap();
            leases.delete(&lease.id).unwrap();
            writeln!(out, "\nBERTH-DONE").unwrap();
            out.flush().unwrap();
        }
        ["exclusive", path, release] => {
            // Another program holding the metadata file the old way (whole-file lock) until
            // the parent creates `release`.
            let db = redb::Database::create(path).unwrap();
            writeln!(out, "\nBERTH-READY").unwrap();
            out.flush().unwrap();
            let start = Instant::now();
            while !Path::new(release).exists() {
                assert!(start.elapsed() < Duration::from_secs(60), "never released");
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(db);
        }
        ["gcloop", root, stop] => {
            let store = ContentStore::open(Path::new(root)).unwrap();
            writeln!(out, "\nBERTH-READY").unwrap();
            out.flush().unwrap();
            let mut runs = 0u64;
            while !Path::new(stop).exists() || runs == 0 {
                store.gc(&GcOptions::default()).unwrap();
                runs += 1;
            }
            writeln!(out, "\ncollections run: {runs}\nBERTH-DONE").unwrap();
            out.flush().unwrap();
        }
        _ => panic!("bad child spec {spec}"),
    }
}

fn spawn(test: &str, spec: &str) -> (ChildGuard, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (ChildGuard(child), out)
}

fn wait_line(out: &mut BufReader<std::process::ChildStdout>, marker: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child exited before {marker}"
        );
        if line.trim_end().ends_with(marker) {
            return;
        }
    }
}

#[test]
fn ref_locked_by_another_process_is_unavailable_until_it_dies() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child_main(&spec);
        return;
    }
    let tmp = TempRoot::new("lock");
    let (mut guard, mut out) = spawn(
        "ref_locked_by_another_process_is_unavailable_until_it_dies",
        &format!("hold|{}|shared-ref", tmp.0.display()),
    );
    wait_line(&mut out, "BERTH-READY");
    let store = ContentStore::open(&tmp.0).unwrap();
    let err = store.writer("shared-ref", None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(
        store.abort("shared-ref").unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    // Other refs are free.
    drop(store.writer("other-ref", None).unwrap());
    guard.0.kill().unwrap();
    guard.0.wait().unwrap();
    // The kernel released the dead writer's lock: the ingest resumes with its bytes.
    let w = store.writer("shared-ref", None).unwrap();
    assert_eq!(w.offset(), "held by another process".len() as u64);
    assert_eq!(w.digest(), Digest::sha256(b"held by another process"));
}

#[test]
fn two_processes_ingesting_the_same_blob_both_succeed() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child_main(&spec);
        return;
    }
    let size = 4 * 1024 * 1024 + 17;
    for (round, same_ref) in [true, false, true].into_iter().enumerate() {
        let tmp = TempRoot::new("same");
        let root = tmp.0.join("store");
        let go = tmp.0.join("go");
        let seed = 40 + round as u64;
        let mut children = Vec::new();
        for id in ["a", "b"] {
            let r#ref = if same_ref {
                "blob".to_owned()
            } else {
                format!("blob-{id}")
            };
            children.push(spawn(
                "two_processes_ingesting_the_same_blob_both_succeed",
                &format!(
                    "ingest|{}|{ref}|{seed}|{size}|{}|{id}",
                    root.display(),
                    go.display()
                ),
            ));
        }
        std::fs::write(&go, b"go").unwrap();
        for (mut guard, mut out) in children {
            wait_line(&mut out, "BERTH-DONE");
            let status = guard.0.wait().unwrap();
            assert!(status.success(), "child failed: {status}");
        }
        let data = content(seed, size);
        let d = Digest::sha256(&data);
        let store = ContentStore::open(&root).unwrap();
        let digests = store.list_digests().unwrap();
        assert_eq!(digests.iter().filter(|x| **x == d).count(), 1);
        assert_eq!(
            digests.len(),
            3,
            "the shared blob once, plus one own blob each"
        );
        assert!(
            store.list_statuses(None).unwrap().is_empty(),
            "no ingest left"
        );
        assert!(store.verify().unwrap().is_ok());
        let names: Vec<String> = store
            .images()
            .list(&[])
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names, ["example.com/a:latest", "example.com/b:latest"]);
        assert!(store.leases().list().unwrap().is_empty());
        assert_eq!(store.read_all(&d, u64::MAX).unwrap(), data);
    }
}

/// Within one process, two threads committing the same content under different refs: one
/// commit succeeds, the other is `AlreadyExists`, and the store holds the blob once.
#[test]
fn racing_commits_in_threads_end_with_one_already_exists() {
    let tmp = TempRoot::new("threads");
    let store = ContentStore::open(&tmp.0).unwrap();
    let data = content(9, 1 << 20);
    let d = Digest::sha256(&data);
    for round in 0..5 {
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|i| {
                    let (store, data, barrier) = (&store, &data, &barrier);
                    s.spawn(move || {
                        let mut w = store.writer(&format!("race-{round}-{i}"), None).unwrap();
                        w.write_all(data).unwrap();
                        barrier.wait();
                        w.commit(data.len() as u64, None, &BTreeMap::new())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let exists = results
            .iter()
            .filter(|r| {
                r.as_ref()
                    .is_err_and(|e| e.kind() == ErrorKind::AlreadyExists)
            })
            .count();
        if round == 0 {
            assert_eq!((ok, exists), (1, 1), "{results:?}");
        } else {
            assert_eq!((ok, exists), (0, 2), "{results:?}");
        }
        assert_eq!(store.list_digests().unwrap(), std::slice::from_ref(&d));
        assert!(store.list_statuses(None).unwrap().is_empty());
    }
    // With an expected digest the writer itself refuses early.
    let err = store
        .writer("late", Some(&Expected::digest(d)))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
}

/// A process holding the metadata file exclusively makes `open` wait (with backoff) instead of
/// failing at once; the open succeeds as soon as the holder lets go.
#[test]
fn open_waits_for_an_exclusive_holder_of_the_metadata_file() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child_main(&spec);
        return;
    }
    let tmp = TempRoot::new("exclusive");
    let root = tmp.0.join("store");
    ContentStore::open(&root).unwrap();
    let release = tmp.0.join("release");
    let (mut guard, mut out) = spawn(
        "open_waits_for_an_exclusive_holder_of_the_metadata_file",
        &format!(
            "exclusive|{}|{}",
            root.join("metadata.redb").display(),
            release.display()
        ),
    );
    wait_line(&mut out, "BERTH-READY");
    let start = Instant::now();
    let store = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(&release, b"go").unwrap();
        });
        ContentStore::open(&root).unwrap()
    });
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "the open waited for the holder"
    );
    assert!(guard.0.wait().unwrap().success());
    let d = Digest::sha256(b"after");
    store
        .ingest(
            "after",
            &b"after"[..],
            &d,
            None,
            &BTreeMap::new(),
            &mut |_, _| {},
        )
        .unwrap();
    assert!(store.images().list(&[]).unwrap().is_empty());
}

/// A collector in another process running back to back while this process imports through a
/// leased handle (half the blobs already present and unreferenced): every recorded image stays
/// complete. The `gc.lock` fence works across processes.
#[test]
fn gc_in_another_process_never_sweeps_a_leased_import() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child_main(&spec);
        return;
    }
    let tmp = TempRoot::new("gcproc");
    let root = tmp.0.join("store");
    let stop = tmp.0.join("stop");
    let store = ContentStore::open(&root).unwrap();
    let blobs: Vec<Vec<u8>> = (0..30)
        .map(|i| content(500 + i, 3000 + i as usize))
        .collect();
    for (i, b) in blobs.iter().enumerate().step_by(2) {
        let d = Digest::sha256(b);
        store
            .ingest(
                &format!("pre-{i}"),
                &b[..],
                &d,
                None,
                &BTreeMap::new(),
                &mut |_, _| {},
            )
            .unwrap();
    }
    let (mut guard, mut out) = spawn(
        "gc_in_another_process_never_sweeps_a_leased_import",
        &format!("gcloop|{}|{}", root.display(), stop.display()),
    );
    wait_line(&mut out, "BERTH-READY");
    for (i, b) in blobs.iter().enumerate() {
        let d = Digest::sha256(b);
        let lease = store.leases().create("", BTreeMap::new(), None).unwrap();
        let info = store
            .leased(&lease.id)
            .ingest(
                &format!("imp-{i}"),
                &b[..],
                &d,
                None,
                &BTreeMap::new(),
                &mut |_, _| {},
            )
            .unwrap();
        let target = Descriptor::new("application/octet-stream", info.digest, info.size);
        store
            .images()
            .put(Image::new(format!("example.com/gc:{i}"), target))
            .unwrap();
        store.leases().delete(&lease.id).unwrap();
    }
    std::fs::write(&stop, b"stop").unwrap();
    wait_line(&mut out, "BERTH-DONE");
    assert!(guard.0.wait().unwrap().success());
    store.gc(&GcOptions::default()).unwrap();
    for (i, b) in blobs.iter().enumerate() {
        assert!(
            store.exists(&Digest::sha256(b)),
            "image {i}'s blob was swept"
        );
    }
    assert_eq!(store.list_digests().unwrap().len(), blobs.len());
    assert!(store.verify().unwrap().is_ok());
}
