//! Export of images to OCI layout directories and oci-archives, in the form skopeo
//! (`oci:DIR:TAG`), umoci (`--image DIR:TAG`) and berth's own import accept.
//!
//! The blobs of each image are collected by walking its target (index → manifests → config
//! and layers); each is copied from the store as it is, so digests are preserved. `index.json`
//! lists each image's target with `io.containerd.image.name` (the full name) and
//! `org.opencontainers.image.ref.name` (its tag).
//!
//! - **oci-dir**: blobs are written atomically, then `index.json` last; exporting into an
//!   existing layout adds or replaces entries.
//! - **oci-archive**: a deterministic tar (`oci-layout`, `index.json`, then blobs in digest
//!   order; mode 0644, mtime 0, owner 0) streamed from the store to a temporary file beside
//!   the destination, renamed into place when complete.

pub mod layout;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use berth_oci::manifest::{self, Document};
use berth_oci::media_type::{MediaKind, kind_of};
use berth_oci::{Digest, MAX_DOCUMENT_SIZE};

pub use layout::LayoutWriter;

use crate::content::ContentStore;
use crate::import::error::{Error, Result};
use crate::metadata::Descriptor;
use crate::progress::{Progress, report_done};

/// The shape of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportFormat {
    /// An OCI image layout directory.
    #[default]
    OciDir,
    /// A tar of an OCI image layout.
    OciArchive,
}

impl std::str::FromStr for ExportFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "oci-dir" | "oci" => Ok(ExportFormat::OciDir),
            "oci-archive" => Ok(ExportFormat::OciArchive),
            other => Err(Error::InvalidArgument {
                what: other.to_owned(),
                reason: "export format must be oci-dir or oci-archive".into(),
            }),
        }
    }
}

/// A blob to export.
#[derive(Debug, Clone)]
struct Blob {
    digest: Digest,
    size: u64,
    kind: &'static str,
}

/// Collects every blob `target` reaches, checking each is stored with its declared size.
fn collect(store: &ContentStore, target: &Descriptor, out: &mut Vec<Blob>) -> Result<()> {
    let mut stack: Vec<(Descriptor, String)> = vec![(target.clone(), "image".to_owned())];
    while let Some((desc, referenced_by)) = stack.pop() {
        if out.iter().any(|b| b.digest == desc.digest) {
            continue;
        }
        let info = store.info(&desc.digest).map_err(|e| match e.kind() {
            crate::ErrorKind::NotFound => Error::MissingBlob {
                digest: desc.digest.clone(),
                referenced_by: referenced_by.clone(),
            },
            _ => Error::Store(e),
        })?;
        if info.size != desc.size {
            return Err(Error::BlobMismatch {
                digest: desc.digest.clone(),
                name: "store".into(),
                source: berth_oci::Error::SizeMismatch {
                    digest: desc.digest.to_string(),
                    expected: desc.size,
                    actual: info.size,
                },
            });
        }
        let kind = match kind_of(&desc.media_type) {
            MediaKind::Index => "index",
            MediaKind::Manifest => "manifest",
            MediaKind::Config => "config",
            MediaKind::Layer(_) => "layer",
            MediaKind::Other => "blob",
        };
        out.push(Blob {
            digest: desc.digest.clone(),
            size: desc.size,
            kind,
        });
        if matches!(kind, "index" | "manifest") {
            let what = desc.digest.to_string();
            let bytes = store.read_all(&desc.digest, MAX_DOCUMENT_SIZE)?;
            let doc = manifest::parse_document(&bytes, &what)?;
            let children: Vec<&berth_oci::Descriptor> = match &doc {
                Document::Index(i) => i.value.manifests().iter().collect(),
                Document::Manifest(m) => std::iter::once(m.value.config())
                    .chain(m.value.layers().iter())
                    .collect(),
            };
            for child in children {
                stack.push((Descriptor::try_from(child)?, what.clone()));
            }
        }
    }
    Ok(())
}

/// Exports the images named `names` (normalised references) from `store` to `dest`.
///
/// # Errors
/// [`Error::Store`] with `NotFound` for an unknown name; [`Error::MissingBlob`] when a blob an
/// image needs is not stored (an index imported for one platform only is exported as such,
/// so this means the store lost content); [`Error::Io`] writing `dest`.
pub fn export(
    store: &ContentStore,
    names: &[&str],
    dest: &Path,
    format: ExportFormat,
    progress: &dyn Progress,
) -> Result<()> {
    let images = store.images();
    let mut targets = Vec::new();
    let mut blobs = Vec::new();
    for name in names {
        let normalized = crate::import::normalize_reference(name)?;
        let image = images.get(&normalized)?;
        collect(store, &image.target, &mut blobs)?;
        targets.push((normalized, image.target));
    }
    match format {
        ExportFormat::OciDir => {
            let mut w = LayoutWriter::open(dest)?;
            for b in &blobs {
                w.put_file(&b.digest, b.size, &store.blob_path(&b.digest))?;
                report_done(progress, &b.digest.to_string(), b.kind, b.size);
            }
            for (name, target) in &targets {
                w.add_image(name, target);
            }
            w.finish()
        }
        ExportFormat::OciArchive => write_archive(store, &blobs, &targets, dest, progress),
    }
}

fn write_archive(
    store: &ContentStore,
    blobs: &[Blob],
    targets: &[(String, Descriptor)],
    dest: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    let manifests: Vec<Descriptor> = targets
        .iter()
        .map(|(name, target)| layout::annotated(name, target))
        .collect();
    let index_json = layout::index_json(&manifests)?;
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp-{}", file_name(dest), std::process::id()));
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        let io_err = |e| Error::io("write", &tmp, e);
        let mut tar = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, file));
        let header = |size: u64, mode: u32, kind: tar::EntryType| {
            let mut h = tar::Header::new_ustar();
            h.set_size(size);
            h.set_mode(mode);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(kind);
            h
        };
        let mut h = header(
            layout::OCI_LAYOUT.len() as u64,
            0o644,
            tar::EntryType::Regular,
        );
        tar.append_data(&mut h, "oci-layout", layout::OCI_LAYOUT)
            .map_err(io_err)?;
        let mut h = header(index_json.len() as u64, 0o644, tar::EntryType::Regular);
        tar.append_data(&mut h, "index.json", &index_json[..])
            .map_err(io_err)?;
        for d in ["blobs/", "blobs/sha256/"] {
            let mut h = header(0, 0o755, tar::EntryType::Directory);
            tar.append_data(&mut h, d, io::empty()).map_err(io_err)?;
        }
        let mut sorted: Vec<&Blob> = blobs.iter().collect();
        sorted.sort_by(|a, b| a.digest.cmp(&b.digest));
        for b in sorted {
            let reader = store.reader(&b.digest)?;
            let name = format!("blobs/{}/{}", b.digest.algorithm(), b.digest.hex());
            let mut h = header(b.size, 0o644, tar::EntryType::Regular);
            let item = b.digest.to_string();
            let mut reader = crate::progress::ProgressReader::new(
                io::Read::take(reader, b.size),
                progress,
                item,
                b.kind,
                Some(b.size),
            );
            tar.append_data(&mut h, &name, &mut reader)
                .map_err(io_err)?;
            reader.finish(b.size);
        }
        let mut w = tar.into_inner().map_err(io_err)?;
        w.flush().map_err(io_err)?;
        w.get_ref()
            .sync_all()
            .map_err(|e| Error::io("fsync", &tmp, e))?;
        fs::rename(&tmp, dest).map_err(|e| Error::io("rename", dest, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".to_owned())
}
