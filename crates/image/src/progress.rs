//! Progress reporting for long operations (import, export, unpack).
//!
//! The work reports each item it moves (a blob, a layer) as a [`ProgressEvent`]: which item,
//! how many bytes are done, and the total when known. Front ends render it (the `berth` CLI
//! with indicatif bars); libraries and tests can pass [`NoProgress`] or a closure.
//!
//! Contract: for each item, events arrive with `done` never decreasing; the last event of an
//! item that completed has `finished == true`. Several items may be in flight at once (import
//! hashes blobs on several threads), so a [`Progress`] must be `Sync` and is called through
//! `&self`: implementations use interior mutability. Calls are cheap for the caller to make:
//! the work reports at most every few hundred KiB per item, plus the start and the end.

use std::fmt;

/// One progress report about one item.
#[derive(Debug, Clone, Copy)]
pub struct ProgressEvent<'a> {
    /// What is being moved, e.g. a digest (`sha256:…`) or a layer name.
    pub item: &'a str,
    /// A short word for the item's role: `"index"`, `"manifest"`, `"config"`, `"layer"`,
    /// `"blob"`.
    pub kind: &'a str,
    /// Bytes done so far.
    pub done: u64,
    /// Total bytes, when known.
    pub total: Option<u64>,
    /// Whether the item is complete (written and verified, or skipped because present).
    pub finished: bool,
}

/// Receives progress reports. Implemented for every `Fn(&ProgressEvent) + Sync` closure.
pub trait Progress: Sync {
    /// Called for each report. Must not block for long: it runs on the worker's thread.
    fn on_progress(&self, event: &ProgressEvent<'_>);
}

impl<F> Progress for F
where
    F: Fn(&ProgressEvent<'_>) + Sync,
{
    fn on_progress(&self, event: &ProgressEvent<'_>) {
        self(event)
    }
}

/// A [`Progress`] that ignores every report.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn on_progress(&self, _event: &ProgressEvent<'_>) {}
}

/// Granularity of intermediate reports from [`ProgressReader`].
const REPORT_EVERY: u64 = 512 * 1024;

/// A reader adapter that reports the bytes read through it as one item's progress.
///
/// It reports when created (`done = 0`), every 512 KiB, and at end of stream;
/// call [`ProgressReader::finish`] once the item is fully processed (for example committed)
/// to report `finished = true`.
pub struct ProgressReader<'p, R> {
    inner: R,
    progress: &'p dyn Progress,
    item: String,
    kind: &'static str,
    done: u64,
    total: Option<u64>,
    last_report: u64,
}

impl<R> fmt::Debug for ProgressReader<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressReader")
            .field("item", &self.item)
            .field("kind", &self.kind)
            .field("done", &self.done)
            .field("total", &self.total)
            .finish()
    }
}

impl<'p, R: std::io::Read> ProgressReader<'p, R> {
    /// Wraps `inner`, reporting under `item`/`kind` with `total` bytes expected.
    pub fn new(
        inner: R,
        progress: &'p dyn Progress,
        item: impl Into<String>,
        kind: &'static str,
        total: Option<u64>,
    ) -> Self {
        let reader = ProgressReader {
            inner,
            progress,
            item: item.into(),
            kind,
            done: 0,
            total,
            last_report: 0,
        };
        reader.report(false);
        reader
    }

    /// Bytes read so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Reports the item as finished with `done` bytes (the total when it was skipped).
    pub fn finish(&self, done: u64) {
        self.progress.on_progress(&ProgressEvent {
            item: &self.item,
            kind: self.kind,
            done,
            total: self.total,
            finished: true,
        });
    }

    fn report(&self, finished: bool) {
        self.progress.on_progress(&ProgressEvent {
            item: &self.item,
            kind: self.kind,
            done: self.done,
            total: self.total,
            finished,
        });
    }
}

impl<R: std::io::Read> std::io::Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if n == 0 || self.done - self.last_report >= REPORT_EVERY {
            self.last_report = self.done;
            self.report(false);
        }
        Ok(n)
    }
}

/// Reports a whole item at once (for small blobs, or ones skipped because already present).
pub fn report_done(progress: &dyn Progress, item: &str, kind: &str, size: u64) {
    progress.on_progress(&ProgressEvent {
        item,
        kind,
        done: size,
        total: Some(size),
        finished: true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::Mutex;

    #[test]
    fn reader_reports_monotonic_progress_and_finish() {
        let events = Mutex::new(Vec::new());
        let sink = |e: &ProgressEvent<'_>| {
            events.lock().unwrap().push((e.done, e.total, e.finished));
        };
        let data = vec![7u8; 3 * 1024 * 1024 + 5];
        let mut r = ProgressReader::new(&data[..], &sink, "blob", "layer", Some(data.len() as u64));
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        r.finish(r.done());
        let events = events.into_inner().unwrap();
        assert_eq!(events.first(), Some(&(0, Some(data.len() as u64), false)));
        assert_eq!(
            events.last(),
            Some(&(data.len() as u64, Some(data.len() as u64), true))
        );
        assert!(events.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(events.len() >= 6, "{events:?}");
        assert_eq!(events.iter().filter(|e| e.2).count(), 1);
    }

    #[test]
    fn no_progress_and_report_done() {
        report_done(&NoProgress, "x", "blob", 3);
        let seen = Mutex::new(None);
        let sink = |e: &ProgressEvent<'_>| *seen.lock().unwrap() = Some((e.done, e.finished));
        report_done(&sink, "x", "blob", 3);
        assert_eq!(*seen.lock().unwrap(), Some((3, true)));
    }
}
