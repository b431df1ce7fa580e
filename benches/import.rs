//! Criterion benchmarks of image import (and the layer builder it pairs with).
//!
//! - `import/<fixture>`: a whole import of a fixture archive into a fresh store (oci-archive
//!   and docker-archive of busybox, the three-layer Debian oci-archive), throughput in bytes
//!   of the archive;
//! - `reimport/debian-gzip`: importing again into a store that has every blob (planning,
//!   verification of documents, names);
//! - `layer_builder/gzip|zstd`: a deterministic layer from a small tree.
//!
//! Fixtures come from `../shared/fixtures` beside the repository (or `$BERTH_FIXTURES`);
//! without them the import groups are skipped with a message. Run: `cargo bench --bench import`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth::image::build::LayerBuilder;
use berth::image::content::ContentStore;
use berth::image::import::{self, ImportOptions};
use berth::oci::Compression;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("BERTH_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    dir.join("debian-gzip.oci.tar").is_file().then_some(dir)
}

fn fresh_store() -> (tempfile::TempDir, ContentStore) {
    let dir = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir()
        .unwrap();
    let store = ContentStore::open(&dir.path().join("content")).unwrap();
    (dir, store)
}

fn bench_import(c: &mut Criterion) {
    let Some(fx) = fixtures() else {
        eprintln!("import benches skipped: no fixtures (set BERTH_FIXTURES)");
        return;
    };
    let mut group = c.benchmark_group("import");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for file in [
        "busybox.oci.tar",
        "busybox.docker.tar",
        "debian-gzip.oci.tar",
    ] {
        let path = fx.join(file);
        group.throughput(Throughput::Bytes(std::fs::metadata(&path).unwrap().len()));
        group.bench_function(file, |b| {
            b.iter_batched(
                fresh_store,
                |(dir, store)| {
                    import::import(&store, &path, &ImportOptions::default()).unwrap();
                    (dir, store)
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();

    let mut group = c.benchmark_group("reimport");
    group.sample_size(20);
    let path = fx.join("debian-gzip.oci.tar");
    let (_dir, store) = fresh_store();
    import::import(&store, &path, &ImportOptions::default()).unwrap();
    group.bench_function("debian-gzip", |b| {
        b.iter(|| import::import(&store, &path, &ImportOptions::default()).unwrap());
    });
    group.finish();
}

fn bench_layer_builder(c: &mut Criterion) {
    let tree = tempfile::Builder::new()
        .prefix("berth-bench-tree-")
        .tempdir()
        .unwrap();
    for d in 0..16 {
        let dir = tree.path().join(format!("dir{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..16 {
            let content: Vec<u8> = (0..16 * 1024u32)
                .map(|i| (i * 31 + f * 7 + d) as u8)
                .collect();
            std::fs::write(dir.join(format!("file{f}")), content).unwrap();
        }
    }
    let mut group = c.benchmark_group("layer_builder");
    group.throughput(Throughput::Bytes(16 * 16 * 16 * 1024));
    for (name, compression) in [("gzip", Compression::Gzip), ("zstd", Compression::Zstd)] {
        let builder = LayerBuilder::new(compression);
        group.bench_function(name, |b| {
            b.iter(|| builder.write(tree.path(), std::io::sink()).unwrap());
        });
    }
    group.finish();
}

criterion_group!(benches, bench_import, bench_layer_builder);
criterion_main!(benches);
