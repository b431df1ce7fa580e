//! Ingest throughput of the content store: a large blob streamed from memory into a fresh
//! store (hash + write + fsync + rename), next to hashing the same bytes alone, so the cost of
//! the store over the hashing limit is visible. Run: `cargo bench -p berth-image --bench ingest`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;

use berth_image::content::ContentStore;
use berth_oci::{Algorithm, Digest, Digester};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn blob(size: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
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

fn bench_ingest(c: &mut Criterion) {
    let mut group = c.benchmark_group("content_ingest");
    group.sample_size(10);
    for (name, size) in [("1MiB", 1usize << 20), ("256MiB", 256usize << 20)] {
        let data = blob(size);
        let d = Digest::sha256(&data);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("sha256_only/{name}"), |b| {
            b.iter(|| {
                let mut h = Digester::new(Algorithm::Sha256);
                for chunk in data.chunks(1 << 20) {
                    h.update(chunk);
                }
                black_box(h.finalize())
            });
        });
        group.bench_function(format!("ingest/{name}"), |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::Builder::new()
                        .prefix("berth-bench-ingest-")
                        .tempdir()
                        .unwrap();
                    let store = ContentStore::open(dir.path()).unwrap();
                    (dir, store)
                },
                |(dir, store)| {
                    let info = store
                        .ingest(
                            "bench",
                            &data[..],
                            &d,
                            Some(size as u64),
                            &BTreeMap::new(),
                            &mut |_, _| {},
                        )
                        .unwrap();
                    black_box(info);
                    (dir, store)
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench_ingest);
criterion_main!(benches);
