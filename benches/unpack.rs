//! Criterion benchmarks of unpack: an imported image into a fresh snapshotter.
//!
//! - `unpack/debian-gzip/parallel|sequential` and `unpack/debian-zstd/parallel`: the
//!   three-layer Debian image onto the overlay snapshotter, layers in parallel (detached,
//!   rebased at commit) or one by one on their parents;
//! - `unpack/busybox/overlay|native`: the one-layer busybox image on both backends;
//! - `unpack/again`: unpacking an image that is already there (stat of the top chain, labels).
//!
//! The images are imported once per group; each iteration gets an empty snapshotter root (made
//! and removed outside the timing). Throughput is the compressed size of the layers. Fixtures
//! come from `../shared/fixtures` (or `$BERTH_FIXTURES`); without them, or without root and
//! overlayfs, the benches are skipped with a message. Run: `cargo bench --bench unpack`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth::image::content::ContentStore;
use berth::image::import::{self, ImportOptions};
use berth::image::unpack::{self, UnpackOptions};
use berth::snapshot::{NativeSnapshotter, OverlaySnapshotter, Snapshotter};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("BERTH_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    dir.join("debian-gzip.oci.tar").is_file().then_some(dir)
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

/// A store holding `fixture`, its image name and the compressed size of its layers.
fn imported(fx: &Path, fixture: &str) -> (tempfile::TempDir, ContentStore, String, u64) {
    let dir = tempdir("berth-bench-unpack-store-");
    let store = ContentStore::open(&dir.path().join("content")).unwrap();
    let report = import::import(&store, &fx.join(fixture), &ImportOptions::default()).unwrap();
    let name = report.images[0].name.clone();
    let target = store.images().get(&name).unwrap().target;
    let resolved = unpack::resolve(&store, &target, None).unwrap();
    let bytes = resolved.layers.iter().map(|(d, _)| d.size).sum();
    (dir, store, name, bytes)
}

fn open(kind: &str, root: &Path) -> Box<dyn Snapshotter> {
    match kind {
        "native" => Box::new(NativeSnapshotter::new(root).unwrap()),
        _ => Box::new(OverlaySnapshotter::new(root).unwrap()),
    }
}

/// Benchmarks unpacking `name` from `store` into a fresh `kind` snapshotter.
fn bench_case(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    store: &ContentStore,
    name: &str,
    kind: &'static str,
    sequential: bool,
) {
    group.bench_function(id, |b| {
        b.iter_batched(
            || {
                let dir = tempdir("berth-bench-unpack-sn-");
                let sn = open(kind, dir.path());
                (dir, sn)
            },
            |(dir, sn)| {
                let mut opts = UnpackOptions::new(kind);
                opts.sequential = sequential;
                let r = unpack::unpack_image(store, sn.as_ref(), name, &opts).unwrap();
                assert!(r.applied() > 0);
                (dir, sn)
            },
            BatchSize::PerIteration,
        );
    });
}

fn bench_unpack(c: &mut Criterion) {
    let Some(fx) = fixtures() else {
        eprintln!("unpack benches skipped: no fixtures (set BERTH_FIXTURES)");
        return;
    };
    if !nix::unistd::geteuid().is_root() || !berth::snapshot::overlay::overlay_supported() {
        eprintln!("unpack benches skipped: they need root and overlayfs");
        return;
    }
    let mut group = c.benchmark_group("unpack");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30));

    let (_gz_dir, gz, gz_name, gz_bytes) = imported(&fx, "debian-gzip.oci.tar");
    group.throughput(Throughput::Bytes(gz_bytes));
    bench_case(
        &mut group,
        "debian-gzip/parallel",
        &gz,
        &gz_name,
        "overlay",
        false,
    );
    bench_case(
        &mut group,
        "debian-gzip/sequential",
        &gz,
        &gz_name,
        "overlay",
        true,
    );

    let (_zs_dir, zs, zs_name, zs_bytes) = imported(&fx, "debian-zstd.oci.tar");
    group.throughput(Throughput::Bytes(zs_bytes));
    bench_case(
        &mut group,
        "debian-zstd/parallel",
        &zs,
        &zs_name,
        "overlay",
        false,
    );

    let (_bb_dir, bb, bb_name, bb_bytes) = imported(&fx, "busybox.oci.tar");
    group.throughput(Throughput::Bytes(bb_bytes));
    bench_case(
        &mut group,
        "busybox/overlay",
        &bb,
        &bb_name,
        "overlay",
        false,
    );
    bench_case(&mut group, "busybox/native", &bb, &bb_name, "native", false);

    let sn_dir = tempdir("berth-bench-unpack-again-");
    let sn = open("overlay", sn_dir.path());
    let opts = UnpackOptions::new("overlay");
    unpack::unpack_image(&gz, sn.as_ref(), &gz_name, &opts).unwrap();
    group.bench_function("again", |b| {
        b.iter(|| {
            let r = unpack::unpack_image(&gz, sn.as_ref(), &gz_name, &opts).unwrap();
            assert_eq!(r.applied(), 0);
        });
    });
    group.finish();
}

criterion_group!(benches, bench_unpack);
criterion_main!(benches);
