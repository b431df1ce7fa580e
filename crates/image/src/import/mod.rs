//! Image import from OCI layout directories, oci-archives and docker-archives.
//!
//! # Flow
//! 1. **Open** the source: a directory is an OCI layout; a file is a tar archive, indexed by
//!    its headers only (see `source`): names are checked (no absolute paths, no `..`, links
//!    stay inside), duplicates and truncation are refused before anything is stored.
//! 2. **Plan**: read `index.json` (or docker's `manifest.json`) and the manifests and configs
//!    it leads to (each capped at 4 MiB and verified against its digest), select platforms,
//!    and list the layers with their expected digests and sizes.
//! 3. **Store**: under a lease, stream every planned blob once through the store's verifying
//!    writer, several at once (see `ingest`). A blob already stored is skipped.
//! 4. **Name**: only when every blob is committed, record the image names (replacing older
//!    records of the same names), then drop the lease.
//!
//! An interrupted import leaves only verified blobs (no names); rerunning it resumes partial
//! ingests and skips stored blobs, so import is idempotent. Two importers of the same source
//! share the work: a ref being written by one is waited for by the other.
//!
//! # Names
//! `--name` ([`ImportOptions::name`]) names the single image of the source. Otherwise OCI
//! layouts give names through `io.containerd.image.name` or a full-reference
//! `org.opencontainers.image.ref.name`, docker-archives through `RepoTags`; every name is
//! normalised (`busybox` → `docker.io/library/busybox:latest`).

pub mod error;

mod docker;
mod ingest;
mod oci;
mod plan;
mod select;
mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use berth_oci::Digest;

pub use error::{Error, ErrorKind, Result};
pub use oci::{ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};
pub use select::{Platform, PlatformChoice};

pub(crate) use oci::name_annotations;
pub(crate) use select::normalize_reference;

use crate::content::ContentStore;
use crate::metadata::{Descriptor, Image, LeaseResource};
use crate::progress::{NoProgress, Progress};
use source::{DirSource, Source, TarSource};

/// How long an import's lease protects its blobs if the importer dies without removing it.
const LEASE_TTL: Duration = Duration::from_secs(24 * 3600);

/// What to import and how.
#[derive(Clone)]
pub struct ImportOptions<'a> {
    /// Name for the imported image, instead of the names in the source. The source must then
    /// hold exactly one image.
    pub name: Option<&'a str>,
    /// Which platforms of a multi-platform image to import.
    pub platform: PlatformChoice,
    /// Receives per-blob progress.
    pub progress: &'a dyn Progress,
}

impl std::fmt::Debug for ImportOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportOptions")
            .field("name", &self.name)
            .field("platform", &self.platform)
            .finish_non_exhaustive()
    }
}

impl Default for ImportOptions<'_> {
    fn default() -> Self {
        ImportOptions {
            name: None,
            platform: PlatformChoice::Host,
            progress: &NoProgress,
        }
    }
}

/// The format of an image source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An OCI image layout directory.
    OciDir,
    /// A tar of an OCI image layout.
    OciArchive,
    /// A `docker save` tar.
    DockerArchive,
}

/// One image recorded by an import.
#[derive(Debug, Clone)]
pub struct ImportedImage {
    /// The normalised name.
    pub name: String,
    /// What the name points to (a manifest, or an index with [`PlatformChoice::All`]).
    pub target: Descriptor,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// The source's format.
    pub format: Format,
    /// The images named, in source order.
    pub images: Vec<ImportedImage>,
    /// Number of distinct blobs the images reference (stored now or before).
    pub blobs: usize,
    /// Their total size in bytes.
    pub bytes: u64,
}

fn open_source(path: &Path) -> Result<(Box<dyn Source>, bool)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
    if meta.is_dir() {
        Ok((Box::new(DirSource::open_dir(path)?), true))
    } else if meta.is_file() {
        Ok((Box::new(TarSource::open(path)?), false))
    } else {
        Err(Error::UnknownFormat {
            path: path.to_path_buf(),
            reason: "neither a directory nor a regular file".into(),
        })
    }
}

/// Detects the format of `path` (indexing an archive's headers).
///
/// # Errors
/// [`Error::UnknownFormat`] when it is none of the three; archive errors as [`import`].
pub fn detect(path: &Path) -> Result<Format> {
    let (source, is_dir) = open_source(path)?;
    format_of(source.as_ref(), is_dir)
}

fn format_of(source: &dyn Source, is_dir: bool) -> Result<Format> {
    if oci::is_layout(source) {
        Ok(if is_dir {
            Format::OciDir
        } else {
            Format::OciArchive
        })
    } else if !is_dir && docker::is_docker_archive(source) {
        Ok(Format::DockerArchive)
    } else {
        Err(Error::UnknownFormat {
            path: source.path().to_path_buf(),
            reason: "no oci-layout and index.json, nor a docker manifest.json".into(),
        })
    }
}

/// Imports the image(s) at `path` (OCI layout directory, oci-archive or docker-archive) into
/// `store` and records their names.
///
/// Concurrency: safe to run from several threads and processes on one store, also on the same
/// source; blobs are stored once.
///
/// # Errors
/// Every error names the entry or blob concerned: [`Error::UnsafeName`],
/// [`Error::DuplicateEntry`], [`Error::Truncated`], [`Error::Corrupt`] for bad archives;
/// [`Error::JsonTooLarge`], [`Error::Json`], [`Error::Oci`] for bad documents;
/// [`Error::UnsupportedMediaType`]; [`Error::MissingBlob`] / [`Error::MissingFile`];
/// [`Error::BlobMismatch`] when bytes do not match their digest or size;
/// [`Error::NoMatchingPlatform`]; [`Error::NoName`] when nothing names the image;
/// [`Error::Store`] for store failures. On error no name is recorded.
pub fn import(store: &ContentStore, path: &Path, opts: &ImportOptions<'_>) -> Result<ImportReport> {
    let (source, is_dir) = open_source(path)?;
    let source = source.as_ref();
    let format = format_of(source, is_dir)?;
    let name = opts.name.map(normalize_reference).transpose()?;

    // Plan (documents verified and in memory, layers located).
    let (mut plan, docker_images, mut found) = match format {
        Format::OciDir | Format::OciArchive => {
            let (plan, found) = oci::plan_layout(source, &opts.platform)?;
            (plan, Vec::new(), found)
        }
        Format::DockerArchive => {
            let (plan, images) = docker::plan_archive(source, &opts.platform)?;
            (plan, images, Vec::new())
        }
    };
    let mut blob_count = plan.memory.len() + plan.stream.len();
    let mut total_bytes = plan.total_bytes();

    // Store, under a lease.
    let leases = store.leases();
    let mut lease_labels = BTreeMap::new();
    lease_labels.insert("berth.import.source".to_owned(), path.display().to_string());
    // Every digest the plan knows already (all of them for OCI sources) goes into the lease
    // as it is created: one commit instead of one per blob, and each blob is protected
    // before any byte of it is stored. Blobs whose digest is only found while streaming
    // (docker-archive layers) are added one by one by `protect` before their commit.
    let known: BTreeSet<Digest> = plan
        .memory
        .iter()
        .map(|m| m.digest.clone())
        .chain(plan.stream.iter().filter_map(|s| s.digest.clone()))
        .collect();
    let up_front: Vec<LeaseResource> = known.iter().cloned().map(LeaseResource::Content).collect();
    let lease = leases.create_with_resources(
        "",
        lease_labels,
        Some(SystemTime::now() + LEASE_TTL),
        &up_front,
    )?;
    let result = (|| {
        let protect = |d: &Digest| -> Result<()> {
            if !known.contains(d) {
                leases.add_resource(&lease.id, LeaseResource::Content(d.clone()))?;
            }
            Ok(())
        };
        let stored = ingest::store_plan(store, source, &plan, &protect, opts.progress)?;
        if format == Format::DockerArchive {
            let (docs, images) = docker::build_manifests(&docker_images, &stored)?;
            plan = plan::Plan::default();
            for (digest, bytes) in docs {
                plan.add_memory(digest, bytes, "manifest");
            }
            blob_count += plan.memory.len();
            total_bytes += plan.total_bytes();
            ingest::store_plan(store, source, &plan, &protect, opts.progress)?;
            found = images;
        }
        record_names(store, source, &found, name.as_deref())
    })();
    let cleanup = leases.delete(&lease.id);
    let images = result?;
    cleanup?;
    Ok(ImportReport {
        format,
        images,
        blobs: blob_count,
        bytes: total_bytes,
    })
}

/// Records the names last, once every blob is in.
fn record_names(
    store: &ContentStore,
    source: &dyn Source,
    found: &[oci::Found],
    name: Option<&str>,
) -> Result<Vec<ImportedImage>> {
    let mut named: Vec<(String, Descriptor)> = Vec::new();
    if let Some(name) = name {
        let mut targets: Vec<&oci::Found> = Vec::new();
        for f in found {
            if !targets
                .iter()
                .any(|t| t.target.digest() == f.target.digest())
            {
                targets.push(f);
            }
        }
        if targets.len() != 1 {
            return Err(Error::InvalidArgument {
                what: name.to_owned(),
                reason: format!(
                    "{} holds {} images; a name can only be given to one",
                    source.path().display(),
                    targets.len()
                ),
            });
        }
        named.push((name.to_owned(), Descriptor::try_from(&targets[0].target)?));
    } else {
        for f in found {
            for n in &f.names {
                if !named.iter().any(|(existing, _)| existing == n) {
                    named.push((n.clone(), Descriptor::try_from(&f.target)?));
                }
            }
        }
        if named.is_empty() {
            return Err(Error::NoName {
                path: source.path().to_path_buf(),
                reason: "the source names no image (no io.containerd.image.name, full \
                         org.opencontainers.image.ref.name or RepoTags)"
                    .into(),
            });
        }
    }
    let images = store.images();
    let mut out = Vec::new();
    for (name, target) in named {
        let record = images.put(Image::new(name.clone(), target.clone()))?;
        out.push(ImportedImage {
            name: record.name,
            target,
        });
    }
    Ok(out)
}
