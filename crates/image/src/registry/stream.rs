//! Unpack while downloading: each fresh layer download is teed into the content writer and,
//! through a bounded channel, into an applier thread that extracts it into a detached active
//! snapshot (prepared without a parent, as the parallel unpack does). A layer is committed as a
//! snapshot only after its blob committed (size and digest verified by the content store) and
//! its applier verified the diffID; commits go bottom-up in layer order, each rebased onto the
//! chain below ([`Capability::Rebase`]).
//!
//! This is a separate path because [`crate::unpack`] reads layers only from the store (the API
//! gap noted in the module docs of [`super`]). It handles the common case and leaves the rest
//! to a normal [`crate::unpack::unpack`] run afterwards, which skips the committed chains and
//! labels the blobs: layers resumed from an earlier pull's ingest or already stored (a retry
//! within the pull keeps feeding its applier from where it was), snapshotters without
//! rebase or without a writable directory, and layers that hardlink into lower layers (their
//! streamed snapshot fails and is removed). Unlike `unpack`, this path takes no chain locks: a
//! concurrent unpack of the same chain makes our commit `AlreadyExists`, which counts as done.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use berth_oci::{Compression, Digest};
use berth_snapshot::{
    Capability, DirLayout, ErrorKind as SnErrorKind, Kind, LABEL_SNAPSHOT_REF, Opts, Snapshotter,
};

use crate::apply::{self, ApplyOptions, ApplyStats};

/// Chunks in flight between a download and its applier.
const IN_FLIGHT: usize = 16;

/// One layer of the image being unpacked.
#[derive(Debug, Clone)]
pub(crate) struct StreamLayer {
    pub index: usize,
    pub digest: Digest,
    pub size: u64,
    pub compression: Compression,
    pub diff_id: Digest,
    pub chain_id: Digest,
    pub parent_chain: Option<Digest>,
}

/// The streaming unpack of one pull.
pub(crate) struct Streamer<'a> {
    sn: &'a dyn Snapshotter,
    layers: HashMap<Digest, StreamLayer>,
    /// Verified, applied active snapshots by layer index.
    ready: Mutex<BTreeMap<usize, String>>,
}

impl std::fmt::Debug for Streamer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamer")
            .field("layers", &self.layers.len())
            .finish_non_exhaustive()
    }
}

fn committed(sn: &dyn Snapshotter, chain: &Digest) -> bool {
    matches!(sn.stat(&chain.to_string()), Ok(info) if info.kind == Kind::Committed)
}

impl<'a> Streamer<'a> {
    /// A streamer for `layers`, or `None` when the snapshotter cannot rebase.
    pub(crate) fn new(sn: &'a dyn Snapshotter, layers: Vec<StreamLayer>) -> Option<Self> {
        if !sn.supports(Capability::Rebase) {
            return None;
        }
        let layers = layers
            .into_iter()
            .filter(|l| !committed(sn, &l.chain_id))
            .map(|l| (l.digest.clone(), l))
            .collect();
        Some(Streamer {
            sn,
            layers,
            ready: Mutex::new(BTreeMap::new()),
        })
    }

    /// Starts applying the layer `digest` as its download starts from byte 0; `None` when it
    /// is not a layer of the image, or no detached snapshot with a writable directory can be
    /// had (the later `unpack` does it then).
    pub(crate) fn start(&self, digest: &Digest) -> Option<Tee> {
        let layer = self.layers.get(digest)?.clone();
        let chain = layer.chain_id.to_string();
        let labels = Opts::new().with_label(LABEL_SNAPSHOT_REF, chain.clone());
        let key = berth_snapshot::unpack_key(&format!("{:016x}", rand::random::<u64>()), &chain);
        if let Err(e) = self.sn.prepare(&key, "", &labels) {
            tracing::debug!(%key, error = %e, "no streamed unpack for this layer");
            return None;
        }
        let dir = match self.sn.writable_dir(&key) {
            Ok(Some(d)) => d,
            _ => {
                self.remove(&key);
                return None;
            }
        };
        let overlay = dir.layout == DirLayout::OverlayUpper && layer.index > 0;
        let (tx, rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
        let root = dir.path.clone();
        let opts_layer = layer.clone();
        let handle = std::thread::spawn(move || {
            let mut reader = ChannelReader {
                rx,
                chunk: Vec::new(),
                pos: 0,
            };
            let opts = ApplyOptions::default()
                .with_blob(opts_layer.digest.to_string())
                .with_compression(opts_layer.compression)
                .with_expected_diff_id(opts_layer.diff_id.clone())
                .with_total_size(opts_layer.size)
                .with_overlay_whiteouts(overlay);
            let res = apply::apply_layer(&root, &mut reader, opts);
            // Keep the download flowing whatever happened.
            let _ = io::copy(&mut reader, &mut io::sink());
            res
        });
        Some(Tee {
            tx: Some(tx),
            handle: Some(handle),
            key,
            index: layer.index,
        })
    }

    fn remove(&self, key: &str) {
        if let Err(e) = self.sn.remove(key)
            && e.kind() != SnErrorKind::NotFound
        {
            tracing::warn!(%key, error = %e, "cannot remove streamed unpack snapshot");
        }
    }

    /// Records the outcome of a tee: `blob_ok` when the blob committed verified.
    pub(crate) fn finish(&self, mut tee: Tee, blob_ok: bool) {
        tee.tx = None;
        let applied: Option<ApplyStats> = tee
            .handle
            .take()
            .and_then(|h| h.join().ok())
            .and_then(|r| match r {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::debug!(key = %tee.key, error = %e, "streamed apply failed; unpack will redo the layer");
                    None
                }
            });
        if blob_ok
            && applied.is_some()
            && let Ok(mut ready) = self.ready.lock()
        {
            ready.insert(tee.index, std::mem::take(&mut tee.key));
            return;
        }
        let key = std::mem::take(&mut tee.key);
        self.remove(&key);
    }

    /// Commits the applied layers bottom-up while each one's parent chain is committed; removes
    /// every other active snapshot. Returns how many layers were committed here.
    pub(crate) fn commit_in_order(&self, all: &[StreamLayer]) -> usize {
        let mut ready = match self.ready.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(_) => BTreeMap::new(),
        };
        let mut n = 0;
        for layer in all {
            let chain = layer.chain_id.to_string();
            let have = ready.remove(&layer.index);
            if committed(self.sn, &layer.chain_id) {
                if let Some(k) = have {
                    self.remove(&k);
                }
                continue;
            }
            let Some(key) = have else { break };
            let mut opts = Opts::new().with_label(LABEL_SNAPSHOT_REF, chain.clone());
            if let Some(p) = &layer.parent_chain {
                opts = opts.with_parent(p.to_string());
            }
            match self.sn.commit(&chain, &key, &opts) {
                Ok(()) => n += 1,
                Err(e) if e.kind() == SnErrorKind::AlreadyExists => self.remove(&key),
                Err(e) => {
                    tracing::debug!(%key, error = %e, "cannot commit streamed layer");
                    self.remove(&key);
                    break;
                }
            }
        }
        for (_, key) in ready {
            self.remove(&key);
        }
        n
    }
}

/// The download's side of a streamed layer.
pub(crate) struct Tee {
    tx: Option<SyncSender<Vec<u8>>>,
    handle: Option<JoinHandle<apply::Result<ApplyStats>>>,
    key: String,
    index: usize,
}

impl std::fmt::Debug for Tee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tee")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Tee {
    /// Hands downloaded bytes to the applier (blocking while its queue is full). An applier
    /// that stopped is not fed further.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        if let Some(tx) = &self.tx
            && tx.send(bytes.to_vec()).is_err()
        {
            self.tx = None;
        }
    }
}

/// The applier's side: a `Read` over the chunks.
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
