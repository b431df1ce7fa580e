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

    // Many small blobs (manifests, configs): the fixed cost per blob, plain and through a lease.
    let mut group = c.benchmark_group("content_ingest_small");
    group.sample_size(10);
    let blobs: Vec<(Vec<u8>, Digest)> = (0..64u32)
        .map(|i| {
            let mut b = blob(4096);
            b[..4].copy_from_slice(&i.to_le_bytes());
            let d = Digest::sha256(&b);
            (b, d)
        })
        .collect();
    group.throughput(Throughput::Elements(blobs.len() as u64));
    for leased in [false, true] {
        let name = if leased { "64x4KiB_leased" } else { "64x4KiB" };
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::Builder::new()
                        .prefix("berth-bench-small-")
                        .tempdir()
                        .unwrap();
                    let store = ContentStore::open(dir.path()).unwrap();
                    let store = if leased {
                        let lease = store.leases().create("", BTreeMap::new(), None).unwrap();
                        store.leased(&lease.id)
                    } else {
                        store
                    };
                    (dir, store)
                },
                |(dir, store)| {
                    for (i, (data, d)) in blobs.iter().enumerate() {
                        let info = store
                            .ingest(
                                &format!("small-{i}"),
                                &data[..],
                                d,
                                Some(data.len() as u64),
                                &BTreeMap::new(),
                                &mut |_, _| {},
                            )
                            .unwrap();
                        black_box(info);
                    }
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
