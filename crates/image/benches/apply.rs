//! Layer apply throughput: a synthetic layer (many small files, some large ones, symlinks and
//! hardlinks) as plain tar, gzip and zstd, applied into a fresh directory per iteration; plus the
//! busybox fixture layer when the shared fixtures are present.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};

use berth_image::apply::{ApplyOptions, apply_layer};
use berth_image::compression::Compressor;
use berth_oci::Compression;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn synthetic_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |kind: tar::EntryType, path: &str, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_path(path).unwrap();
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    let mut seed = 0x2545_f491_u32;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                // Half text-like, half random: compresses roughly like a root filesystem.
                if i % 2 == 0 {
                    b'a' + (seed % 26) as u8
                } else {
                    seed as u8
                }
            })
            .collect()
    };
    for d in 0..40 {
        add(tar::EntryType::Directory, &format!("d{d}"), &[], None);
        for f in 0..50 {
            let size = if f == 0 { 512 * 1024 } else { 2048 + f * 97 };
            add(
                tar::EntryType::Regular,
                &format!("d{d}/f{f}"),
                &noise(size),
                None,
            );
        }
        add(
            tar::EntryType::Symlink,
            &format!("d{d}/sl"),
            &[],
            Some("f1"),
        );
        add(
            tar::EntryType::Link,
            &format!("d{d}/hl"),
            &[],
            Some(&format!("d{d}/f2")),
        );
    }
    b.into_inner().unwrap()
}

fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
    let mut w = Compressor::new(Vec::new(), c, None).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

fn fresh_root(base: &Path, n: &mut u64) -> PathBuf {
    *n += 1;
    let p = base.join(format!("root-{n}"));
    std::fs::create_dir(&p).unwrap();
    p
}

fn bench_apply(c: &mut Criterion) {
    let tar = synthetic_tar();
    let work = tempfile::Builder::new()
        .prefix("berth-bench-apply-")
        .tempdir()
        .unwrap();
    let mut n = 0u64;
    let mut group = c.benchmark_group("apply_layer");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(tar.len() as u64));
    for comp in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let blob = compress(comp, &tar);
        group.bench_with_input(
            BenchmarkId::new("synthetic", format!("{comp:?}")),
            &blob,
            |b, blob| {
                b.iter(|| {
                    let root = fresh_root(work.path(), &mut n);
                    apply_layer(&root, &blob[..], ApplyOptions::default()).unwrap();
                    std::fs::remove_dir_all(&root).unwrap();
                });
            },
        );
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../../shared/fixtures/busybox-oci/blobs/sha256/c35cc138a9a70f4dfeab8c49e0457a1e070faeba69fc3a02d593dae5b2773981",
    );
    if let Ok(blob) = std::fs::read(&fixture) {
        group.throughput(Throughput::Bytes(blob.len() as u64));
        group.bench_function("busybox_fixture_gzip", |b| {
            b.iter(|| {
                let root = fresh_root(work.path(), &mut n);
                apply_layer(&root, &blob[..], ApplyOptions::default()).unwrap();
                std::fs::remove_dir_all(&root).unwrap();
            });
        });
    } else {
        eprintln!(
            "busybox fixture not found at {}: skipped",
            fixture.display()
        );
    }
    group.finish();
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
