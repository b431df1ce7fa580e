//! A two-stage layer pipeline: one thread reads, verifies and decompresses the blob while the
//! calling thread hashes the tar stream (diffID) and extracts it.
//!
//! For a large compressed layer decompression is about a third of the CPU work of applying it;
//! moving it to its own thread shortens the critical path of an unpack (the biggest layer)
//! when a core is free. The stages talk through a bounded channel of chunks, so memory stays
//! at a few MiB. The applier is told the stream is uncompressed (a decompressed stream that
//! itself starts with a compression magic is refused rather than decoded twice).
//!
//! Errors: a failure of the reading stage (blob verification, corrupt compressed data,
//! cancellation) is the cause of whatever the applier then reports, so it wins; otherwise the
//! applier's error is returned. If the applier stops early, the reading stage notices the
//! closed channel and ends.

use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use berth_oci::{Compression, VerifyingReader, verification_error};

use super::error::{Error, Result};
use super::layer::{Ctx, LayerJob};
use crate::apply::{self, ApplyOptions, ApplyStats};
use crate::compression::Decompressor;
use crate::progress::ProgressReader;

/// Bytes per chunk handed from the decoder to the applier.
const CHUNK: usize = 512 * 1024;
/// Chunks in flight between the stages.
const IN_FLIGHT: usize = 4;

/// The applier's side of the channel: a plain `Read` over the decoded chunks.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Classifies an error of the reading stage.
fn source_error(ctx: &Ctx<'_>, job: &LayerJob, e: io::Error) -> Error {
    if ctx.cancel.load(Ordering::Relaxed) {
        return Error::Cancelled {
            digest: job.desc.digest.clone(),
        };
    }
    if let Some(v) = verification_error(&e) {
        return Error::BlobVerification {
            digest: job.desc.digest.clone(),
            reason: v.to_string(),
        };
    }
    Error::Apply {
        digest: job.desc.digest.clone(),
        chain_id: job.chain_id.clone(),
        source: apply::Error::Decompress {
            blob: job.desc.digest.to_string(),
            compression: job.compression,
            source: e,
        },
    }
}

/// Applies the compressed `blob` stream into `root` with decompression on its own thread.
pub(crate) fn apply_decoupled<R: Read + Send>(
    ctx: &Ctx<'_>,
    job: &LayerJob,
    root: &Path,
    mut blob: BufReader<VerifyingReader<R>>,
    opts: ApplyOptions<'_>,
) -> Result<ApplyStats> {
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(IN_FLIGHT);
    std::thread::scope(|s| {
        let decoder = s.spawn(move || -> Result<()> {
            let name = job.desc.digest.to_string();
            let mut progress = ProgressReader::new(
                &mut blob,
                ctx.progress,
                name.clone(),
                "layer",
                Some(job.desc.size),
            );
            let mut dec = Decompressor::new(&mut progress, Some(job.compression), &name).map_err(
                |e| match e {
                    crate::compression::Error::Read { source, .. } => {
                        source_error(ctx, job, source)
                    }
                    other => Error::Apply {
                        digest: job.desc.digest.clone(),
                        chain_id: job.chain_id.clone(),
                        source: other.into(),
                    },
                },
            )?;
            loop {
                let mut buf = vec![0u8; CHUNK];
                match read_full(&mut dec, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Ok(buf)).is_err() {
                            // The applier stopped; its error is the one to report.
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                        return Err(source_error(ctx, job, e));
                    }
                }
            }
            drop(dec);
            // Trailing bytes after the compressed stream still count for the digest.
            io::copy(&mut progress, &mut io::sink()).map_err(|e| source_error(ctx, job, e))?;
            drop(progress);
            drop(tx);
            if !blob.get_ref().is_verified() {
                return Err(Error::BlobVerification {
                    digest: job.desc.digest.clone(),
                    reason: "the blob was not read to its end".into(),
                });
            }
            Ok(())
        });
        let reader = ChannelReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        };
        let applied = apply::apply_layer(root, reader, opts.with_compression(Compression::None));
        let decoded = decoder.join().map_err(|_| Error::Internal {
            reason: format!("decoder thread of layer {} panicked", job.desc.digest),
        })?;
        match (applied, decoded) {
            (_, Err(e)) => Err(e),
            (Err(e), Ok(())) => Err(super::layer::map_apply_error(ctx, job, e)),
            (Ok(stats), Ok(())) => Ok(stats),
        }
    })
}
