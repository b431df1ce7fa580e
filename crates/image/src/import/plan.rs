//! The plan of an import: which blobs to store and which names to record.
//!
//! Small documents (indexes, manifests, configs) are read, verified and decoded while planning
//! and kept in memory, so they are read once; layers are only located and checked for presence
//! and size, to be streamed into the store afterwards (in parallel, see `ingest`).

use std::collections::{HashMap, HashSet};

use berth_oci::Digest;

use super::error::{Error, Result};
use super::source::{Source, SourceReader};

/// A document read and verified during planning, to be stored from memory.
#[derive(Debug, Clone)]
pub(crate) struct MemoryBlob {
    pub(crate) digest: Digest,
    pub(crate) bytes: Vec<u8>,
    pub(crate) kind: &'static str,
}

/// A blob to stream from the source into the store.
#[derive(Debug, Clone)]
pub(crate) struct StreamBlob {
    /// The expected digest, or `None` when it is computed while streaming (docker-archive
    /// layers, named by path only).
    pub(crate) digest: Option<Digest>,
    /// The source file name.
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) kind: &'static str,
}

/// Everything an import will store and name.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) memory: Vec<MemoryBlob>,
    pub(crate) stream: Vec<StreamBlob>,
    seen: HashSet<Digest>,
    stream_index: HashMap<String, usize>,
}

impl Plan {
    /// Adds a verified in-memory document unless the digest is already planned.
    pub(crate) fn add_memory(&mut self, digest: Digest, bytes: Vec<u8>, kind: &'static str) {
        if self.seen.insert(digest.clone()) {
            self.memory.push(MemoryBlob {
                digest,
                bytes,
                kind,
            });
        }
    }

    /// Adds a blob to stream unless the same source file is already planned; returns its
    /// index in [`Plan::stream`].
    pub(crate) fn add_stream(&mut self, blob: StreamBlob) -> usize {
        if let Some(&i) = self.stream_index.get(&blob.name) {
            return i;
        }
        if let Some(d) = &blob.digest {
            self.seen.insert(d.clone());
        }
        let i = self.stream.len();
        self.stream_index.insert(blob.name.clone(), i);
        self.stream.push(blob);
        i
    }

    /// Total bytes to move.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.memory
            .iter()
            .map(|b| b.bytes.len() as u64)
            .sum::<u64>()
            + self.stream.iter().map(|b| b.size).sum::<u64>()
    }
}

/// The name of a blob in an OCI layout.
pub(crate) fn blob_name(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.hex())
}

/// Reads a whole small file (`index.json`, `manifest.json`) refusing more than the JSON cap.
pub(crate) fn read_small_file(source: &dyn Source, name: &str) -> Result<Vec<u8>> {
    let (reader, size) = source.open(name)?.ok_or_else(|| Error::MissingFile {
        path: source.path().to_path_buf(),
        name: name.to_owned(),
    })?;
    if size > berth_oci::manifest::MAX_DOCUMENT_SIZE {
        return Err(Error::JsonTooLarge {
            what: format!("{}:{name}", source.path().display()),
            size,
            max: berth_oci::manifest::MAX_DOCUMENT_SIZE,
        });
    }
    read_exact_len(reader, size).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::Truncated {
            path: source.path().to_path_buf(),
            entry: name.to_owned(),
        },
        _ => Error::io("read", source.path().join(name), e),
    })
}

fn read_exact_len(mut reader: SourceReader<'_>, size: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    (&mut reader).take(size).read_to_end(&mut buf)?;
    if (buf.len() as u64) < size {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "short read",
        ));
    }
    Ok(buf)
}

/// Reads the document blob `digest` of declared `size` from the layout, checking the cap,
/// presence, size and digest.
pub(crate) fn read_document(
    source: &dyn Source,
    digest: &Digest,
    size: u64,
    referenced_by: &str,
) -> Result<Vec<u8>> {
    if size > berth_oci::manifest::MAX_DOCUMENT_SIZE {
        return Err(Error::JsonTooLarge {
            what: digest.to_string(),
            size,
            max: berth_oci::manifest::MAX_DOCUMENT_SIZE,
        });
    }
    let name = blob_name(digest);
    let (reader, actual) = source.open(&name)?.ok_or_else(|| Error::MissingBlob {
        digest: digest.clone(),
        referenced_by: referenced_by.to_owned(),
    })?;
    let mismatch = |source| Error::BlobMismatch {
        digest: digest.clone(),
        name: name.clone(),
        source,
    };
    if actual != size {
        return Err(mismatch(berth_oci::Error::SizeMismatch {
            digest: digest.to_string(),
            expected: size,
            actual,
        }));
    }
    let bytes = read_exact_len(reader, size).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::Truncated {
            path: source.path().to_path_buf(),
            entry: name.clone(),
        },
        _ => Error::io("read", source.path().join(&name), e),
    })?;
    let got = Digest::of(digest.algorithm(), &bytes);
    if &got != digest {
        return Err(mismatch(berth_oci::Error::DigestMismatch {
            expected: digest.to_string(),
            actual: got.to_string(),
        }));
    }
    Ok(bytes)
}

/// Checks that the layer blob `digest` is in the source with the declared size and plans it.
pub(crate) fn plan_layer(
    plan: &mut Plan,
    source: &dyn Source,
    digest: &Digest,
    size: u64,
    referenced_by: &str,
) -> Result<()> {
    let name = blob_name(digest);
    let (_, actual) = source.open(&name)?.ok_or_else(|| Error::MissingBlob {
        digest: digest.clone(),
        referenced_by: referenced_by.to_owned(),
    })?;
    if actual != size {
        return Err(Error::BlobMismatch {
            digest: digest.clone(),
            name,
            source: berth_oci::Error::SizeMismatch {
                digest: digest.to_string(),
                expected: size,
                actual,
            },
        });
    }
    let _ = plan.add_stream(StreamBlob {
        digest: Some(digest.clone()),
        name,
        size,
        kind: "layer",
    });
    Ok(())
}
