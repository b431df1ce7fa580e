//! Downloading layers into the content store: up to `max_concurrent` at once, each resuming a
//! partial ingest with `Range`, retrying transient failures from where its ingest stands (one
//! budget per blob and host), handing a blob a host fails over to the next endpoint
//! ([`Pullers::each`]) with what its ingest holds, teeing a fresh download into its streamed
//! apply, and committing only what verifies (see the module docs of [`super`]).
//!
//! The bytes are checked against the digest before the commit, so that a host serving
//! wrong bytes hands over like any failing host: the ingest is emptied and the next host
//! starts from byte 0. A blob whose bytes came partly from an earlier host or pull (a
//! resumed ingest) and do not verify is fetched once more whole from the same host before
//! that host counts as failed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use berth_oci::Digest;
use ureq::http::Method;

use super::client::Client;
use super::error::{Error, Result};
use super::fallback::Pullers;
use super::pull::{BlobJob, PullOptions};
use super::retry::Backoff;
use super::stream::{Streamer, Tee};
use crate::content::{ContentStore, Expected};
use crate::progress::{Progress, ProgressEvent, report_done};

/// Progress is reported every this many bytes per layer.
const REPORT_EVERY: u64 = 512 * 1024;

/// The result of one blob download.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) digest: Digest,
    pub(crate) downloaded: u64,
    pub(crate) present: bool,
    pub(crate) resumed_at: Option<u64>,
}

pub(crate) fn download_all(
    store: &ContentStore,
    hosts: &Pullers<'_>,
    jobs: &[BlobJob],
    protect: &(dyn Fn(&Digest) -> Result<()> + Sync),
    opts: &PullOptions<'_>,
    streamer: Option<&Streamer<'_>>,
) -> Result<Vec<Outcome>> {
    let threads = match opts.max_concurrent {
        0 => 3,
        n => n,
    }
    .min(jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<Outcome>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(job) = jobs.get(i) else { break };
                    let res = protect(&job.digest)
                        .and_then(|()| download_blob(store, hosts, job, opts.progress, streamer));
                    if res.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut r) = results.lock() {
                        r[i] = Some(res);
                    }
                }
            });
        }
    });
    let results = results.into_inner().map_err(|_| Error::Protocol {
        url: String::new(),
        reason: "a download thread panicked".into(),
    })?;
    let mut out = Vec::with_capacity(jobs.len());
    for (job, r) in jobs.iter().zip(results) {
        match r {
            Some(Ok(o)) => out.push(o),
            Some(Err(e)) => return Err(e),
            None => {
                return Err(Error::Protocol {
                    url: job.digest.to_string(),
                    reason: "download not attempted after an earlier failure".into(),
                });
            }
        }
    }
    Ok(out)
}

/// Downloads one blob into the store, resuming a partial ingest with `Range`; transient
/// failures are retried (one budget for the blob per host), each retry resuming from what the
/// ingest already holds; a host that fails hands the blob over to the next.
fn download_blob(
    store: &ContentStore,
    hosts: &Pullers<'_>,
    job: &BlobJob,
    progress: &dyn Progress,
    streamer: Option<&Streamer<'_>>,
) -> Result<Outcome> {
    let item = job.digest.to_string();
    let present = |store: &ContentStore| -> Result<Outcome> {
        let info = store.info(&job.digest)?;
        if info.size != job.size {
            return Err(Error::Protocol {
                url: item.clone(),
                reason: format!(
                    "stored blob has {} bytes, the descriptor says {}",
                    info.size, job.size
                ),
            });
        }
        report_done(progress, &item, job.kind, job.size);
        Ok(Outcome {
            digest: job.digest.clone(),
            downloaded: 0,
            present: true,
            resumed_at: None,
        })
    };
    if store.exists(&job.digest) {
        return present(store);
    }
    let r#ref = format!("pull-{}", job.digest);
    let expected = Expected::new(job.digest.clone(), job.size);
    let Some(mut w) = store.open_writer_waiting(&r#ref, &expected)? else {
        return present(store);
    };
    if w.offset() > job.size {
        w.truncate(0)?;
    }
    // Dropped on every path: hands the streamed layer's outcome to the streamer.
    let mut fetch = Fetch {
        store,
        job,
        progress,
        streamer,
        item: item.clone(),
        resumed_at: None,
        downloaded: 0,
        guard: TeeGuard {
            streamer,
            tee: None,
            blob_ok: false,
        },
    };
    let fetched = hosts.each(&item, |client| fetch.fetch_whole_from(client, &mut w));
    if let Err(e) = fetched {
        // Bytes that did not verify are not kept for a resume (the writer holds the ingest).
        drop(w);
        if matches!(e, Error::DigestMismatch { .. })
            && let Err(abort) = store.abort(&r#ref)
        {
            tracing::warn!(r#ref, error = %abort, "cannot abort failed ingest");
        }
        return Err(e);
    }
    let actual = w.digest();
    match w.commit(job.size, Some(&job.digest), &BTreeMap::new()) {
        Ok(_) => {}
        Err(crate::Error::BlobExists { .. }) => {}
        Err(e) if e.kind() == berth_oci::ErrorKind::FailedPrecondition => {
            if let Err(abort) = store.abort(&r#ref) {
                tracing::warn!(r#ref, error = %abort, "cannot abort failed ingest");
            }
            return Err(Error::DigestMismatch {
                url: item,
                expected: job.digest.clone(),
                actual,
                size: job.size,
            });
        }
        Err(e) => return Err(e.into()),
    }
    fetch.guard.blob_ok = true;
    let Fetch {
        guard,
        downloaded,
        resumed_at,
        ..
    } = fetch;
    drop(guard);
    report_done(progress, &item, job.kind, job.size);
    Ok(Outcome {
        digest: job.digest.clone(),
        downloaded,
        present: false,
        resumed_at,
    })
}

/// One blob download across its attempts.
struct Fetch<'s, 'a> {
    store: &'s ContentStore,
    job: &'s BlobJob,
    progress: &'s dyn Progress,
    streamer: Option<&'s Streamer<'a>>,
    item: String,
    /// The offset of the first ranged request, if any.
    resumed_at: Option<u64>,
    /// Bytes received over every attempt.
    downloaded: u64,
    guard: TeeGuard<'s, 'a>,
}

impl Fetch<'_, '_> {
    /// Fetches the whole blob from the host of `client` into `w` (what it lacks, with its
    /// retries), and checks the digest. Bytes that do not verify are discarded (the ingest
    /// emptied, a streamed apply abandoned); when they came partly from elsewhere (an
    /// earlier host or pull), the host is asked once more for the whole blob.
    fn fetch_whole_from(&mut self, client: &Client, w: &mut crate::content::Writer) -> Result<()> {
        let url = client.url(&format!("blobs/{}", self.job.digest));
        let mut backoff = client.backoff();
        let mut whole_from_here = w.offset() == 0;
        loop {
            client.retrying(&mut backoff, &url, |b| self.attempt(client, &url, b, w))?;
            let actual = w.digest();
            if actual == self.job.digest {
                return Ok(());
            }
            w.truncate(0)?;
            if let (Some(s), Some(t)) = (self.streamer, self.guard.tee.take()) {
                s.finish(t, false);
            }
            if whole_from_here {
                return Err(Error::DigestMismatch {
                    url,
                    expected: self.job.digest.clone(),
                    actual,
                    size: self.job.size,
                });
            }
            tracing::debug!(%url, "resumed bytes do not verify; fetching the whole blob again");
            whole_from_here = true;
        }
    }

    /// Fetches what the ingest lacks (`Range: bytes=OFFSET-` when it holds a prefix) and
    /// writes it. Leaves everything received in the ingest whatever happens; `Ok` when the
    /// ingest holds `job.size` bytes.
    fn attempt(
        &mut self,
        client: &Client,
        url: &str,
        backoff: &mut Backoff,
        w: &mut crate::content::Writer,
    ) -> Result<()> {
        let job = self.job;
        let mut offset = w.offset();
        if offset >= job.size {
            return Ok(());
        }
        let range = format!("bytes={offset}-");
        let headers: Vec<(&str, &str)> = if offset > 0 {
            vec![("range", range.as_str())]
        } else {
            Vec::new()
        };
        let resp =
            client.send_expect_with(backoff, Method::GET, url, &headers, None, &[200, 206])?;
        if resp.status.as_u16() == 206 {
            let ok = resp
                .header("content-range")
                .is_some_and(|v| v.trim().starts_with(&format!("bytes {offset}-")));
            if !ok {
                return Err(Error::Protocol {
                    url: url.to_owned(),
                    reason: format!(
                        "206 with Content-Range {:?} for a request from {offset}",
                        resp.header("content-range")
                    ),
                });
            }
            self.resumed_at.get_or_insert(offset);
        } else if offset > 0 {
            // The registry ignored Range: start over (a streamed apply cannot follow).
            w.truncate(0)?;
            offset = 0;
            if let (Some(s), Some(t)) = (self.streamer, self.guard.tee.take()) {
                s.finish(t, false);
            }
        }
        let remaining = job.size - offset;
        if let Some(n) = resp.content_length()
            && n != remaining
        {
            return Err(Error::Protocol {
                url: url.to_owned(),
                reason: format!(
                    "Content-Length {n} but {remaining} bytes are expected (descriptor size {})",
                    job.size
                ),
            });
        }
        if offset == 0 && self.guard.tee.is_none() {
            self.guard.tee = self.streamer.and_then(|s| s.start(&job.digest));
        }
        let final_url = resp.url.clone();
        let mut reader = resp.into_reader().take(remaining);
        let mut buf = vec![0u8; 256 * 1024];
        let mut last_report = 0u64;
        self.progress.on_progress(&ProgressEvent {
            item: &self.item,
            kind: job.kind,
            done: offset,
            total: Some(job.size),
            finished: false,
        });
        let mut failure = None;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            };
            w.write_all(&buf[..n])
                .map_err(|e| Error::io("write", self.store.root().join("ingest"), e))?;
            self.downloaded += n as u64;
            if let Some(t) = self.guard.tee.as_mut() {
                t.feed(&buf[..n]);
            }
            if w.offset() - last_report >= REPORT_EVERY {
                last_report = w.offset();
                self.progress.on_progress(&ProgressEvent {
                    item: &self.item,
                    kind: job.kind,
                    done: w.offset(),
                    total: Some(job.size),
                    finished: false,
                });
            }
        }
        if w.offset() < job.size {
            // Keep the partial ingest: the next attempt (or pull) resumes it.
            tracing::debug!(url = %final_url, got = w.offset(), failure, "blob body ended early");
            return Err(Error::Truncated {
                url: final_url,
                expected: job.size,
                got: w.offset(),
            });
        }
        Ok(())
    }
}

/// Finishes a streamed layer whatever way its download ends.
struct TeeGuard<'s, 'a> {
    streamer: Option<&'s Streamer<'a>>,
    tee: Option<Tee>,
    blob_ok: bool,
}

impl Drop for TeeGuard<'_, '_> {
    fn drop(&mut self) {
        if let (Some(s), Some(t)) = (self.streamer, self.tee.take()) {
            s.finish(t, self.blob_ok);
        }
    }
}
