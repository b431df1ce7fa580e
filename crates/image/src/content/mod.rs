//! The content store: content-addressed blobs with resumable, verified ingests, following
//! containerd's `core/content` contract (`docs: containerd-contracts.md §1`).
//!
//! # Layout of a store root
//! ```text
//! <root>/blobs/<alg>/<hex>          committed blobs, read-only (0444), named by their digest
//! <root>/ingest/<sha256(ref)>/      one in-progress ingest: ref, data, startedat, updatedat,
//!                                   total, expected, state (saved hash state), lock
//! <root>/metadata.redb              labels, image records, leases, front ends' records
//!                                   (see [`crate::metadata`])
//! <root>/gc.lock                    exclusive during a collection, shared around commits
//! ```
//!
//! # Writing
//! [`ContentStore::writer`] opens (or reopens) the ingest named by a ref and locks it with
//! `flock`, so a ref being written is `Unavailable` to every other writer, in this process or
//! another. Bytes are appended and hashed; [`Writer::commit`] verifies size and digest, fsyncs,
//! renames the data into `blobs/` with `RENAME_NOREPLACE` (so two commits of the same content
//! racing end with exactly one `AlreadyExists`), fsyncs the directory and makes the blob
//! read-only. A writer dropped without commit, or a process killed mid-write, leaves an ingest
//! that the next `writer` call with the same ref resumes at its offset, restoring the saved hash
//! state and hashing only the bytes written after it. [`ContentStore::ingest`] and [`copy()`] are
//! the copy helpers: they resume, verify, and treat `AlreadyExists` as success; for large
//! content they hash and write on two threads. Only a commit makes content durable: the other
//! ingest files are written without fsync, so a power loss can cost a restart, never a wrong
//! blob.
//!
//! # Reading
//! Blobs are immutable: [`ContentStore::reader`] gives `Read + Seek` and positional reads;
//! [`ContentStore::read_all`] reads small documents with a size cap and checks their digest.
//!
//! # Metadata and GC
//! Labels live in the shared metadata file, as do image records ([`ContentStore::images`]) and
//! leases ([`ContentStore::leases`]). [`ContentStore::gc`] marks from images, live leases and
//! `containerd.io/gc.root` blobs along manifest/index references and
//! `containerd.io/gc.ref.content.*` labels, then sweeps the rest (see [`gc`]). A handle from
//! [`ContentStore::leased`] records everything it ingests and commits in a lease, so a
//! multi-step import is safe from a collection running at the same time.
//!
//! # Implementations
//! The contract is also expressed as traits ([`Store`], [`ContentWriter`]); the copy helpers and
//! the conformance suite (module `testsuite`, feature `testsuite`) are generic over them.
//!
//! # Concurrency
//! [`ContentStore`] is `Clone + Send + Sync` (an `Arc` inside); [`Writer`] is `Send`. Several
//! processes may open the same root at once: refs are locked with `flock`, the metadata file is
//! shared through redb's multi-writer mode, and commits race safely.

pub mod api;
mod blobs;
pub mod copy;
pub mod filter;
pub mod gc;
pub(crate) mod ingest;
mod ingest_manager;
mod pump;
pub mod reader;
mod store;
#[cfg(feature = "testsuite")]
pub mod testsuite;
pub mod writer;

use std::collections::BTreeMap;
use std::time::SystemTime;

use berth_oci::Digest;

pub use api::{ContentWriter, Store};
pub use blobs::{CorruptBlob, VerifyReport};
pub use copy::{Copied, ReadAt, copy, copy_at, copy_seek};
pub use filter::Filter;
pub use gc::{GcOptions, GcReport};
pub use reader::BlobReader;
pub use store::ContentStore;
pub use writer::Writer;

/// What is known in advance about the content an ingest will receive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// The expected digest (it also chooses the hashing algorithm).
    pub digest: Option<Digest>,
    /// The expected size in bytes.
    pub size: Option<u64>,
}

impl Expected {
    /// Both digest and size.
    pub fn new(digest: Digest, size: u64) -> Self {
        Expected {
            digest: Some(digest),
            size: Some(size),
        }
    }

    /// Only the digest.
    pub fn digest(digest: Digest) -> Self {
        Expected {
            digest: Some(digest),
            size: None,
        }
    }

    /// Only the size.
    pub fn size(size: u64) -> Self {
        Expected {
            digest: None,
            size: Some(size),
        }
    }
}

/// What the store knows of a committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was committed.
    pub created_at: SystemTime,
    /// When it was committed or its labels last changed.
    pub updated_at: SystemTime,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// The state of an ingest in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The ref the ingest is named by.
    pub r#ref: String,
    /// Bytes written so far.
    pub offset: u64,
    /// The expected total size, if it was given.
    pub total: Option<u64>,
    /// The expected digest, if it was given.
    pub expected: Option<Digest>,
    /// When the ingest was started.
    pub started_at: SystemTime,
    /// When bytes were last written.
    pub updated_at: SystemTime,
}

/// The label that makes a blob a GC root (value conventionally an RFC 3339 time).
pub const LABEL_GC_ROOT: &str = "containerd.io/gc.root";
/// The prefix of labels whose value is a digest the labelled blob references
/// (`containerd.io/gc.ref.content`, `containerd.io/gc.ref.content.<anything>`).
pub const LABEL_GC_REF_CONTENT: &str = "containerd.io/gc.ref.content";
/// The cap on manifests, indexes and configs read whole (as containerd: 4 MiB).
pub const MAX_DOCUMENT_SIZE: u64 = 4 << 20;
