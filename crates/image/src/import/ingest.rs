//! Storing a plan's blobs: every blob is streamed once from the source through the store's
//! verifying writer, several blobs at once.
//!
//! Blobs are independent, so they are hashed and written on a small pool of threads (one per
//! CPU but at least four, at most one per blob), largest first so the long ones start early. The first failure
//! stops the pool from taking new blobs and is returned; blobs already committed stay in the
//! store (they are verified, and the import's lease or a rerun reclaims them).
//!
//! Every blob is added to the import's lease before it is committed or found present; the
//! presence check runs under the store's GC fence, so a collection cannot sweep a blob between
//! the moment import sees it and the moment the lease holds it. A blob already in the store is
//! not read again. Ingest refs are `import-<digest>`, so an
//! interrupted import resumes its partial ingests and two importers of the same blob wait for
//! each other instead of writing it twice; blobs whose digest is only known after reading
//! (docker-archive layers) use a per-process ref.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use berth_oci::{Compression, Digest};

use super::error::{Error, Result};
use super::plan::{MemoryBlob, Plan, StreamBlob};
use super::source::Source;
use crate::content::{ContentStore, Expected};
use crate::progress::{Progress, ProgressEvent, report_done};

/// A streamed blob as stored.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    /// Compression found by the first bytes (gzip, zstd magic; otherwise none).
    pub(crate) compression: Compression,
}

/// Sniffs the compression of a layer from its first bytes (the crate's magic detection).
pub(crate) fn sniff(head: &[u8]) -> Compression {
    crate::compression::detect(head)
}

/// A reader that keeps the first bytes it passes, to sniff compression without a second read.
struct HeadKeeper<R> {
    inner: R,
    head: Vec<u8>,
}

impl<R: Read> Read for HeadKeeper<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.head.len() < 8 {
            let take = (8 - self.head.len()).min(n);
            self.head.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }
}

/// Hook called with each digest right before its bytes are committed (the import adds it to
/// its lease there) and after a computed-digest blob is committed.
pub(crate) type Protect<'a> = dyn Fn(&Digest) -> Result<()> + Sync + 'a;

/// Stores the plan's in-memory documents and streams its blobs; returns the streamed blobs as
/// stored, in plan order.
pub(crate) fn store_plan(
    store: &ContentStore,
    source: &dyn Source,
    plan: &Plan,
    protect: &Protect<'_>,
    progress: &dyn Progress,
) -> Result<Vec<Stored>> {
    let no_labels = BTreeMap::new();
    // One queue: streamed blobs largest first, then the small documents.
    let mut order: Vec<Job> = (0..plan.stream.len()).map(Job::Stream).collect();
    order.sort_by_key(|j| match j {
        Job::Stream(i) => std::cmp::Reverse(plan.stream[*i].size),
        Job::Memory(_) => std::cmp::Reverse(0),
    });
    order.extend((0..plan.memory.len()).map(Job::Memory));
    let results: Vec<Mutex<Option<Stored>>> =
        plan.stream.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    // Hashing is CPU-bound, but each blob also waits on fsyncs at commit: a few more threads
    // than CPUs keep the CPUs busy while others wait.
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(MIN_WORKERS)
        .min(order.len())
        .max(1);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = order.get(i) else { break };
                    let r = match *job {
                        Job::Stream(index) => store_stream(
                            store,
                            source,
                            &plan.stream[index],
                            protect,
                            progress,
                            &no_labels,
                        )
                        .map(|stored| {
                            if let Ok(mut slot) = results[index].lock() {
                                *slot = Some(stored);
                            }
                        }),
                        Job::Memory(index) => {
                            store_memory(store, &plan.memory[index], protect, progress, &no_labels)
                        }
                    };
                    if let Err(e) = r {
                        failed.store(true, Ordering::Relaxed);
                        if let Ok(mut slot) = first_error.lock()
                            && slot.is_none()
                        {
                            *slot = Some(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    results
        .into_iter()
        .zip(&plan.stream)
        .map(|(slot, blob)| {
            slot.into_inner()
                .ok()
                .flatten()
                .ok_or_else(|| Error::InvalidImage {
                    what: blob.name.clone(),
                    reason: "blob was not stored (internal error)".into(),
                })
        })
        .collect()
}

/// Threads used at least, when there are that many blobs.
const MIN_WORKERS: usize = 4;

/// One unit of work: a blob to stream or a document to store.
#[derive(Debug, Clone, Copy)]
enum Job {
    Stream(usize),
    Memory(usize),
}

fn store_memory(
    store: &ContentStore,
    doc: &MemoryBlob,
    protect: &Protect<'_>,
    progress: &dyn Progress,
    labels: &BTreeMap<String, String>,
) -> Result<()> {
    {
        // As for streamed blobs: lease and presence check under the GC fence.
        let _fence = store.gc_fence()?;
        protect(&doc.digest)?;
        if let Ok(info) = store.info(&doc.digest) {
            report_done(progress, &doc.digest.to_string(), doc.kind, info.size);
            return Ok(());
        }
    }
    let info = store
        .ingest(
            &format!("import-{}", doc.digest),
            &doc.bytes[..],
            &doc.digest,
            Some(doc.bytes.len() as u64),
            labels,
            &mut |_, _| {},
        )
        .map_err(|e| map_store_error(e, &doc.digest, doc.kind))?;
    report_done(progress, &doc.digest.to_string(), doc.kind, info.size);
    Ok(())
}

/// Turns a store verification failure into one that names the blob.
fn map_store_error(e: crate::Error, digest: &Digest, name: &str) -> Error {
    match e {
        crate::Error::DigestMismatch {
            expected, actual, ..
        } => Error::BlobMismatch {
            digest: digest.clone(),
            name: name.to_owned(),
            source: berth_oci::Error::DigestMismatch {
                expected: expected.to_string(),
                actual: actual.to_string(),
            },
        },
        crate::Error::SizeMismatch {
            expected, actual, ..
        } => Error::BlobMismatch {
            digest: digest.clone(),
            name: name.to_owned(),
            source: berth_oci::Error::SizeMismatch {
                digest: digest.to_string(),
                expected,
                actual,
            },
        },
        other => Error::Store(other),
    }
}

fn store_stream(
    store: &ContentStore,
    source: &dyn Source,
    blob: &StreamBlob,
    protect: &Protect<'_>,
    progress: &dyn Progress,
    labels: &BTreeMap<String, String>,
) -> Result<Stored> {
    let open = || {
        source.open(&blob.name)?.ok_or_else(|| Error::MissingFile {
            path: source.path().to_path_buf(),
            name: blob.name.clone(),
        })
    };
    let item = blob
        .digest
        .as_ref()
        .map_or_else(|| blob.name.clone(), ToString::to_string);
    let report = |done: u64, finished: bool| {
        progress.on_progress(&ProgressEvent {
            item: &item,
            kind: blob.kind,
            done,
            total: Some(blob.size),
            finished,
        });
    };
    match &blob.digest {
        Some(digest) => {
            let stored_size = {
                // Hold collections off while the lease takes the digest and presence is
                // checked, so a blob found present cannot be swept before the lease holds it.
                let _fence = store.gc_fence()?;
                protect(digest)?;
                store.info(digest).ok().map(|i| i.size)
            };
            if let Some(actual) = stored_size
                && actual != blob.size
            {
                // The store's blob is verified, so the source's declared size is wrong.
                return Err(Error::BlobMismatch {
                    digest: digest.clone(),
                    name: blob.name.clone(),
                    source: berth_oci::Error::SizeMismatch {
                        digest: digest.to_string(),
                        expected: blob.size,
                        actual,
                    },
                });
            }
            if stored_size.is_some() {
                // Already stored and verified at its commit: only the compression is needed.
                let mut head = [0u8; 8];
                let n = store
                    .reader(digest)
                    .ok()
                    .and_then(|r| r.read_at(0, &mut head).ok())
                    .unwrap_or(0);
                report_done(progress, &item, blob.kind, blob.size);
                return Ok(Stored {
                    digest: digest.clone(),
                    size: blob.size,
                    compression: sniff(&head[..n]),
                });
            }
            let (reader, _) = open()?;
            let mut reader = HeadKeeper {
                inner: reader,
                head: Vec::new(),
            };
            report(0, false);
            let info = store
                .ingest(
                    &format!("import-{digest}"),
                    &mut reader,
                    digest,
                    Some(blob.size),
                    labels,
                    &mut |done, _| report(done, false),
                )
                .map_err(|e| map_store_error(e, digest, &blob.name))?;
            report(info.size, true);
            Ok(Stored {
                digest: info.digest,
                size: info.size,
                compression: sniff(&reader.head),
            })
        }
        None => {
            let (reader, _) = open()?;
            let r#ref = format!(
                "import-{}-{}-{}",
                std::process::id(),
                unique(),
                blob.name.replace('/', "_")
            );
            let writer = store.writer(&r#ref, Some(&Expected::size(blob.size)))?;
            let mut reader = HeadKeeper {
                inner: reader,
                head: Vec::new(),
            };
            report(0, false);
            let info = match stream_into(
                store,
                source,
                blob,
                writer,
                &mut reader,
                protect,
                labels,
                &report,
            ) {
                Ok(info) => info,
                Err(e) => {
                    // This ref is ours alone and cannot be resumed by a rerun: drop it.
                    let _ = store.abort(&r#ref);
                    return Err(e);
                }
            };
            report(info.size, true);
            Ok(Stored {
                digest: info.digest,
                size: info.size,
                compression: sniff(&reader.head),
            })
        }
    }
}

/// Copies `reader` into `writer`, hashing as it goes, and commits under the digest found.
#[allow(clippy::too_many_arguments)]
fn stream_into(
    store: &ContentStore,
    source: &dyn Source,
    blob: &StreamBlob,
    mut writer: crate::content::Writer,
    reader: &mut impl Read,
    protect: &Protect<'_>,
    labels: &BTreeMap<String, String>,
    report: &dyn Fn(u64, bool),
) -> Result<crate::content::Info> {
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Error::Truncated {
                path: source.path().to_path_buf(),
                entry: blob.name.clone(),
            },
            _ => Error::io("read", source.path().join(&blob.name), e),
        })?;
        if n == 0 {
            break;
        }
        std::io::Write::write_all(&mut writer, &buf[..n])
            .map_err(|e| Error::io("write", store.root(), e))?;
        done += n as u64;
        report(done, false);
    }
    let digest = writer.digest();
    protect(&digest)?;
    match writer.commit(blob.size, None, labels) {
        Ok(info) => Ok(info),
        Err(crate::Error::BlobExists { digest }) => Ok(store.info(&digest)?),
        Err(e) => Err(map_store_error(e, &digest, &blob.name)),
    }
}

fn unique() -> usize {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic() {
        assert_eq!(sniff(&[0x1f, 0x8b, 0x08, 0]), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(sniff(&[0x50, 0x2a, 0x4d, 0x18]), Compression::Zstd);
        assert_eq!(sniff(b"etc/passwd"), Compression::None);
        assert_eq!(sniff(b""), Compression::None);
    }
}
