//! Moving bytes from a source into a [`Writer`]: hashing and writing overlap.
//!
//! Hashing (about 1.8 GB/s per core with SHA extensions) and copying into the page cache are
//! comparable costs, so for large content the calling thread reads and hashes while a helper
//! thread writes the previous buffers to the ingest file (three 1 MiB buffers in rotation).
//! The pipeline runs in segments of [`CHECKPOINT`](super::ingest::CHECKPOINT) bytes; between
//! segments everything is written and the hash state is saved, exactly as the plain
//! `io::Write` path does. The helper also starts writeback as it goes (`sync_file_range`), so
//! the commit's fsync overlaps with hashing instead of following it. Small content takes the
//! plain path.

use std::io::{self, Read, Write};
use std::sync::mpsc;

use super::Writer;
use super::ingest::{CHECKPOINT, DATA};
use crate::error::{Error, Result};

/// Size of one buffer.
pub(crate) const BUF: usize = 1 << 20;
/// Content at least this large (or of unknown size) goes through the pipeline.
const PIPELINE_MIN: u64 = 4 << 20;

/// The helper thread asks the kernel to start writing back every this many bytes, so the
/// commit's fsync finds little left to do.
const WRITEBACK_KICK: u64 = 8 << 20;

/// Starts asynchronous writeback of a byte range (a hint; errors are irrelevant).
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor belongs to `file`, which outlives the call; sync_file_range only
    // reads its integer arguments and starts writeback of that range, touching no memory of ours.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

/// Where a pump stopped.
enum Stop {
    /// The source ended (or the read limit was reached).
    End,
    /// The segment is full; more may follow.
    Segment,
}

/// Copies `reader` into `writer` until the source ends or `limit` bytes (counted from the start
/// of the content, including what the writer already holds) have been taken. `progress` gets
/// `(done, size)` after every buffer. Returns the bytes now in the writer.
///
/// # Errors
/// `Io` naming the source or the ingest file.
pub(crate) fn pump(
    writer: &mut Writer,
    reader: &mut dyn Read,
    limit: Option<u64>,
    size: Option<u64>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<u64> {
    let remaining = limit.map(|l| l.saturating_sub(writer.offset()));
    if remaining.is_some_and(|r| r < PIPELINE_MIN) {
        plain(writer, reader, limit, size, progress)?;
        return Ok(writer.offset());
    }
    loop {
        match segment(writer, reader, limit, size, progress)? {
            Stop::End => return Ok(writer.offset()),
            Stop::Segment => writer.checkpoint()?,
        }
    }
}

fn want(limit: Option<u64>, done: u64) -> usize {
    match limit {
        Some(l) => l.saturating_sub(done).min(BUF as u64) as usize,
        None => BUF,
    }
}

fn read_some(writer: &Writer, reader: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    loop {
        match reader.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::io(
                    "read source for",
                    format!("ingest {:?}", writer.r#ref()),
                    e,
                ));
            }
        }
    }
}

fn plain(
    writer: &mut Writer,
    reader: &mut dyn Read,
    limit: Option<u64>,
    size: Option<u64>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<()> {
    let mut buf = vec![0u8; BUF];
    loop {
        let w = want(limit, writer.offset());
        if w == 0 {
            return Ok(());
        }
        let n = read_some(writer, reader, &mut buf[..w])?;
        if n == 0 {
            return Ok(());
        }
        writer
            .write_all(&buf[..n])
            .map_err(|e| Error::io("write", writer.dir.join(DATA), e))?;
        progress(writer.offset(), size);
    }
}

/// One pipelined segment of at most `CHECKPOINT` bytes.
fn segment(
    writer: &mut Writer,
    reader: &mut dyn Read,
    limit: Option<u64>,
    size: Option<u64>,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Stop> {
    let start = writer.offset();
    let segment_end = start + CHECKPOINT;
    let limit = Some(limit.map_or(segment_end, |l| l.min(segment_end)));
    let data_path = writer.dir.join(DATA);
    let name = writer.r#ref().to_owned();
    let file = &mut writer.data;
    let digester = &mut writer.digester;
    let mut stop = Stop::End;
    let mut read_err = None;
    let write_res: io::Result<()> = std::thread::scope(|s| {
        let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(2);
        let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
        for _ in 0..3 {
            // The receiver is alive: it is `empty_rx` below.
            let _ = empty_tx.send(vec![0u8; BUF]);
        }
        let writer_thread = s.spawn(move || -> io::Result<()> {
            let mut pos = start;
            let mut kicked = start;
            for (buf, n) in full_rx {
                file.write_all(&buf[..n])?;
                pos += n as u64;
                if pos - kicked >= WRITEBACK_KICK {
                    start_writeback(file, kicked, pos - kicked);
                    kicked = pos;
                }
                if empty_tx.send(buf).is_err() {
                    break;
                }
            }
            Ok(())
        });
        loop {
            let done = digester.len();
            let w = want(limit, done);
            if w == 0 {
                if done >= segment_end {
                    stop = Stop::Segment;
                }
                break;
            }
            // An empty pool means the writer thread stopped: its error is reported below.
            let Ok(mut buf) = empty_rx.recv() else { break };
            let n = loop {
                match reader.read(&mut buf[..w]) {
                    Ok(n) => break Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => break Err(e),
                }
            };
            let n = match n {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    read_err = Some(e);
                    break;
                }
            };
            digester.update(&buf[..n]);
            if full_tx.send((buf, n)).is_err() {
                break;
            }
            progress(digester.len(), size);
        }
        drop(full_tx);
        writer_thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("ingest writer thread panicked")))
    });
    writer.touch();
    let failed = |w: &mut Writer| {
        // The digester may be ahead of the file: never save that state.
        w.checkpointed = w.digester.len();
    };
    if let Err(e) = write_res {
        failed(writer);
        return Err(Error::io("write", data_path, e));
    }
    if let Some(e) = read_err {
        failed(writer);
        return Err(Error::io("read source for", format!("ingest {name:?}"), e));
    }
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use berth_oci::{Algorithm, Digest, Digester};

    use super::*;
    use crate::content::{ContentStore, Expected, ingest};

    fn data(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i * 31 % 253) as u8).collect()
    }

    /// A source that fails after `fail_at` bytes.
    struct Flaky<'a> {
        data: &'a [u8],
        pos: usize,
        fail_at: usize,
    }

    impl Read for Flaky<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos >= self.fail_at {
                return Err(io::Error::other("source broke"));
            }
            let n = buf
                .len()
                .min(self.fail_at - self.pos)
                .min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn pipelined_ingest_crosses_checkpoints_and_saves_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let body = data(10 * (1 << 20) + 333);
        let d = Digest::sha256(&body);
        let mut seen = Vec::new();
        let info = store
            .ingest(
                "big",
                &body[..],
                &d,
                Some(body.len() as u64),
                &BTreeMap::new(),
                &mut |done, total| seen.push((done, total)),
            )
            .unwrap();
        assert_eq!(info.digest, d);
        assert_eq!(store.read_all(&d, u64::MAX).unwrap(), body);
        assert_eq!(seen.first(), Some(&(0, Some(body.len() as u64))));
        assert_eq!(
            seen.last(),
            Some(&(body.len() as u64, Some(body.len() as u64)))
        );
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));

        // A source failing mid-way leaves a resumable ingest whose saved state (taken at a
        // checkpoint) is consistent with the file.
        let d2 = Digest::of(Algorithm::Sha512, &body);
        let mut w = store
            .writer("flaky", Some(&Expected::digest(d2.clone())))
            .unwrap();
        let mut src = Flaky {
            data: &body,
            pos: 0,
            fail_at: 7 * (1 << 20) + 11,
        };
        let err = pump(&mut w, &mut src, None, None, &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("source broke"), "{err}");
        drop(w);
        let state = std::fs::read(
            store
                .ingest_root()
                .join(ingest::dir_name("flaky"))
                .join(ingest::STATE),
        )
        .unwrap();
        let saved = Digester::restore_state(Algorithm::Sha512, &state).unwrap();
        assert!(saved.len() <= 7 * (1 << 20) + 11);
        assert_eq!(saved.len() % CHECKPOINT, 0, "state from a checkpoint");
        let info = store
            .ingest(
                "flaky",
                &body[..],
                &d2,
                None,
                &BTreeMap::new(),
                &mut |_, _| {},
            )
            .unwrap();
        assert_eq!(info.digest, d2);
        assert!(store.verify().unwrap().is_ok());
    }

    #[test]
    fn overrun_is_caught_after_one_extra_byte() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let body = data(6 << 20);
        let d = Digest::sha256(&body[..5 << 20]);
        let mut reads = 0u64;
        let err = store
            .ingest(
                "over",
                &body[..],
                &d,
                Some(5 << 20),
                &BTreeMap::new(),
                &mut |done, _| reads = done,
            )
            .unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::FailedPrecondition);
        assert_eq!(reads, (5 << 20) + 1, "read exactly one byte past the size");
        assert!(store.list_statuses(None).unwrap().is_empty());
        assert!(store.list_digests().unwrap().is_empty());
    }
}
