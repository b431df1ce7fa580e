//! Garbage collection: what images, leases and `containerd.io/gc.root` reach is kept (through
//! index → manifest → config/layers edges and `gc.ref.content` labels); the rest, stale ingests
//! and expired leases go.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::tests_outside_test_module
)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use berth_image::content::{ContentStore, GcOptions, Info, LABEL_GC_ROOT};
use berth_image::metadata::{Descriptor, Image, LeaseResource};
use berth_oci::Digest;
use berth_oci::media_type::{OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST};

struct TempRoot(PathBuf);

impl TempRoot {
    fn new(tag: &str) -> Self {
        use std::hash::{BuildHasher, RandomState};
        let p = std::env::temp_dir().join(format!(
            "berth-content-gc-{tag}-{}-{:x}",
            std::process::id(),
            RandomState::new().hash_one(SystemTime::now())
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

fn put(store: &ContentStore, bytes: &[u8], labels: &[(&str, String)]) -> Info {
    let d = Digest::sha256(bytes);
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    store
        .ingest(
            &format!("put-{d}"),
            bytes,
            &d,
            Some(bytes.len() as u64),
            &labels,
            &mut |_, _| {},
        )
        .unwrap()
}

fn desc(media_type: &str, info: &Info) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": info.digest.to_string(), "size": info.size})
}

fn manifest(config: &Info, layers: &[&Info]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(OCI_CONFIG, config),
        "layers": layers.iter().map(|l| desc(OCI_LAYER_GZIP, l)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// Makes the ingest of `ref` look untouched for two days.
fn age_ingest(root: &std::path::Path, r#ref: &str) {
    let dir = root
        .join("ingest")
        .join(Digest::sha256(r#ref.as_bytes()).hex());
    let old = SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    let ns = old
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::fs::write(dir.join("updatedat"), ns.to_string()).unwrap();
    filetime::set_file_mtime(dir.join("data"), filetime::FileTime::from_system_time(old)).unwrap();
}

#[test]
fn gc_keeps_what_roots_reach_and_sweeps_the_rest() {
    let tmp = TempRoot::new("sweep");
    let store = ContentStore::open(&tmp.0).unwrap();

    // An image: index → manifest → config + two layers.
    let l1 = put(&store, b"layer one", &[]);
    let l2 = put(&store, b"layer two", &[]);
    let config = put(
        &store,
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}"#,
        &[],
    );
    let m = put(&store, &manifest(&config, &[&l1, &l2]), &[]);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc(OCI_MANIFEST, &m)],
    }))
    .unwrap();
    let idx = put(&store, &index, &[]);
    store
        .images()
        .create(Image::new(
            "example.com/app:1",
            Descriptor::new(OCI_INDEX, idx.digest.clone(), idx.size),
        ))
        .unwrap();

    // A lease holding a manifest (no media type known: GC sniffs it) and an ingest.
    let l3 = put(&store, b"layer three", &[]);
    let c3 = put(&store, br#"{"os":"linux"}"#, &[]);
    let m3 = put(&store, &manifest(&c3, &[&l3]), &[]);
    let leases = store.leases();
    let lease = leases.create("import-1", BTreeMap::new(), None).unwrap();
    leases
        .add_resource(&lease.id, LeaseResource::Content(m3.digest.clone()))
        .unwrap();
    leases
        .add_resource(&lease.id, LeaseResource::Ingest("leased-ingest".into()))
        .unwrap();

    // A gc.root blob whose gc.ref.content labels pin two more.
    let y = put(&store, b"pinned by label", &[]);
    let y2 = put(&store, b"pinned by bare label", &[]);
    let root_blob = put(
        &store,
        b"a root",
        &[
            (LABEL_GC_ROOT, "2026-11-26T00:00:00Z".into()),
            ("containerd.io/gc.ref.content.child", y.digest.to_string()),
            ("containerd.io/gc.ref.content", y2.digest.to_string()),
        ],
    );

    // An expired lease and unreferenced blobs.
    let z = put(&store, b"held by an expired lease", &[]);
    let expired = leases
        .create(
            "old",
            BTreeMap::new(),
            Some(SystemTime::now() - Duration::from_secs(60)),
        )
        .unwrap();
    leases
        .add_resource(&expired.id, LeaseResource::Content(z.digest.clone()))
        .unwrap();
    let u1 = put(&store, b"garbage one", &[]);
    let u2 = put(&store, b"garbage two", &[("not-a-root", "x".into())]);

    // Ingests: stale, fresh, stale but held by a writer, stale but leased.
    for r in ["old-ingest", "new-ingest", "busy-ingest", "leased-ingest"] {
        let mut w = store.writer(r, None).unwrap();
        w.write_all(b"partial").unwrap();
    }
    for r in ["old-ingest", "busy-ingest", "leased-ingest"] {
        age_ingest(&tmp.0, r);
    }
    let busy = store.writer("busy-ingest", None).unwrap();

    let kept = [
        &l1, &l2, &config, &m, &idx, &l3, &c3, &m3, &y, &y2, &root_blob,
    ];
    let mut removed = vec![z.digest.clone(), u1.digest.clone(), u2.digest.clone()];
    removed.sort();

    let dry = store
        .gc(&GcOptions {
            dry_run: true,
            ..GcOptions::default()
        })
        .unwrap();
    let mut dry_removed = dry.removed_blobs.clone();
    dry_removed.sort();
    assert_eq!(dry_removed, removed);
    assert_eq!(dry.removed_ingests, ["old-ingest"]);
    assert_eq!(dry.expired_leases, ["old"]);
    assert!(
        removed.iter().all(|d| store.exists(d)),
        "a dry run removes nothing"
    );
    assert!(store.status("old-ingest").is_ok());

    let report = store.gc(&GcOptions::default()).unwrap();
    let mut got = report.removed_blobs.clone();
    got.sort();
    assert_eq!(got, removed);
    assert_eq!(report.removed_bytes, z.size + u1.size + u2.size);
    assert_eq!(report.kept_blobs, kept.len());
    assert_eq!(report.removed_ingests, ["old-ingest"]);
    assert_eq!(report.expired_leases, ["old"]);
    for k in kept {
        assert!(store.exists(&k.digest), "{} should be kept", k.digest);
    }
    for r in &removed {
        assert!(!store.exists(r), "{r} should be removed");
        assert!(
            store.db().content_record(r).unwrap().is_none(),
            "record of {r} removed"
        );
    }
    let refs: Vec<String> = store
        .list_statuses(None)
        .unwrap()
        .into_iter()
        .map(|s| s.r#ref)
        .collect();
    assert_eq!(refs, ["busy-ingest", "leased-ingest", "new-ingest"]);
    assert_eq!(leases.list().unwrap().len(), 1);
    drop(busy);

    // Untag and unlease: everything but the gc.root family goes.
    store.images().delete("example.com/app:1").unwrap();
    leases.delete("import-1").unwrap();
    let report = store
        .gc(&GcOptions {
            ingest_max_age: Duration::ZERO,
            dry_run: false,
        })
        .unwrap();
    assert_eq!(report.removed_blobs.len(), 8);
    let mut left = store.list_digests().unwrap();
    left.sort();
    let mut want = vec![y.digest, y2.digest, root_blob.digest.clone()];
    want.sort();
    assert_eq!(left, want);
    assert!(
        store.list_statuses(None).unwrap().is_empty(),
        "all ingests were stale"
    );

    // Dropping the root label frees the rest.
    let mut info = store.info(&root_blob.digest).unwrap();
    info.labels.clear();
    store.update(&info, &[]).unwrap();
    store.gc(&GcOptions::default()).unwrap();
    assert!(store.list_digests().unwrap().is_empty());
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn gc_keeps_a_blob_committed_inside_a_lease_during_an_import() {
    let tmp = TempRoot::new("lease");
    let store = ContentStore::open(&tmp.0).unwrap();
    let leases = store.leases();
    let lease = leases.create("", BTreeMap::new(), None).unwrap();
    let data = b"imported layer".to_vec();
    let d = Digest::sha256(&data);
    // Lease first, then ingest: a GC at any moment keeps it.
    leases
        .add_resource(&lease.id, LeaseResource::Content(d.clone()))
        .unwrap();
    assert!(
        store
            .gc(&GcOptions::default())
            .unwrap()
            .removed_blobs
            .is_empty()
    );
    put(&store, &data, &[]);
    assert!(
        store
            .gc(&GcOptions::default())
            .unwrap()
            .removed_blobs
            .is_empty()
    );
    assert!(store.exists(&d));
    leases.delete(&lease.id).unwrap();
    assert_eq!(
        store.gc(&GcOptions::default()).unwrap().removed_blobs,
        std::slice::from_ref(&d)
    );
    assert!(!store.exists(&d));
}

#[test]
fn a_leased_handle_protects_everything_it_writes() {
    let tmp = TempRoot::new("leased");
    let store = ContentStore::open(&tmp.0).unwrap();
    let lease = store.leases().create("", BTreeMap::new(), None).unwrap();
    let leased = store.leased(&lease.id);
    assert_eq!(leased.lease(), Some(lease.id.as_str()));
    let a = put(&leased, b"written through the lease", &[]);
    // Already stored content found through the lease is recorded too.
    let b = put(&store, b"already there", &[]);
    put(&leased, b"already there", &[]);
    let mut w = leased.writer("half-done", None).unwrap();
    w.write_all(b"partial").unwrap();
    drop(w);
    age_ingest(&tmp.0, "half-done");
    let held = store.leases().get(&lease.id).unwrap().resources;
    assert!(held.contains(&LeaseResource::Content(a.digest.clone())));
    assert!(held.contains(&LeaseResource::Content(b.digest.clone())));
    assert!(held.contains(&LeaseResource::Ingest("half-done".into())));

    let report = store.gc(&GcOptions::default()).unwrap();
    assert!(report.removed_blobs.is_empty(), "{report:?}");
    assert!(report.removed_ingests.is_empty(), "{report:?}");
    store.leases().delete(&lease.id).unwrap();
    let report = store.gc(&GcOptions::default()).unwrap();
    assert_eq!(report.removed_blobs.len(), 2);
    assert_eq!(report.removed_ingests, ["half-done"]);
    // A handle whose lease is gone refuses to write unprotected content.
    let err = leased.writer("late", None).unwrap_err();
    assert_eq!(err.kind(), berth_image::ErrorKind::NotFound);
}

/// An importer working through leased handles while collections run back to back: every image
/// it records ends up complete, whether its blobs were new or already present (and perhaps
/// being swept) when it found them.
#[test]
fn gc_running_concurrently_with_leased_imports_never_loses_recorded_content() {
    let tmp = TempRoot::new("concurrent");
    let store = ContentStore::open(&tmp.0).unwrap();
    // Half the blobs are already present but unreferenced: fair game for the collector.
    let blobs: Vec<Vec<u8>> = (0..40)
        .map(|i| format!("blob number {i}").into_bytes())
        .collect();
    for b in blobs.iter().step_by(2) {
        put(&store, b, &[]);
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut runs = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || runs == 0 {
                store.gc(&GcOptions::default()).unwrap();
                runs += 1;
            }
        });
        for (i, b) in blobs.iter().enumerate() {
            let lease = store.leases().create("", BTreeMap::new(), None).unwrap();
            let info = put(&store.leased(&lease.id), b, &[]);
            let target = Descriptor::new("application/octet-stream", info.digest, info.size);
            store
                .images()
                .put(Image::new(format!("example.com/blob:{i}"), target))
                .unwrap();
            store.leases().delete(&lease.id).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    store.gc(&GcOptions::default()).unwrap();
    for (i, b) in blobs.iter().enumerate() {
        let d = Digest::sha256(b);
        assert!(store.exists(&d), "image {i}'s blob was swept");
    }
    assert_eq!(store.list_digests().unwrap().len(), blobs.len());
    assert!(store.verify().unwrap().is_ok());
}
