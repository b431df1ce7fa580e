//! Push: an image record's blobs and manifests from the store to a registry (see the module
//! docs of [`super`]).

use std::io::Read;

use berth_oci::manifest::{self, Document};
use berth_oci::media_type::{MediaKind, kind_of};
use berth_oci::{Digest, MAX_DOCUMENT_SIZE};
use ureq::http::Method;

use super::client::{Client, query_escape, status_error};
use super::error::{Error, Result};
use super::{RegistryOptions, parse_reference};
use crate::content::ContentStore;
use crate::metadata::Descriptor;
use crate::progress::{NoProgress, Progress, ProgressEvent, report_done};

/// Options of [`push`].
#[derive(Clone)]
pub struct PushOptions<'a> {
    /// How to reach the registry.
    pub registry: RegistryOptions,
    /// Blobs up to this size go in one `PUT`; larger ones in `PATCH` chunks of this size
    /// (`0` means 16 MiB).
    pub chunk_size: u64,
    /// A repository of the same registry that may hold the blobs: missing blobs are first
    /// mounted from it (`POST uploads/?mount=<digest>&from=<repo>`).
    pub mount_from: Option<String>,
    /// Receives per-blob progress.
    pub progress: &'a dyn Progress,
}

impl std::fmt::Debug for PushOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushOptions")
            .field("registry", &self.registry)
            .field("chunk_size", &self.chunk_size)
            .field("mount_from", &self.mount_from)
            .finish_non_exhaustive()
    }
}

impl Default for PushOptions<'_> {
    fn default() -> Self {
        PushOptions {
            registry: RegistryOptions::default(),
            chunk_size: 0,
            mount_from: None,
            progress: &NoProgress,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Default)]
pub struct PushReport {
    /// The reference pushed to.
    pub reference: String,
    /// The digest of the pushed root (manifest or index).
    pub digest: Option<Digest>,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs mounted from another repository.
    pub mounted: usize,
    /// Blobs the registry already had.
    pub existing: usize,
    /// Uploads that went in chunks.
    pub chunked: usize,
    /// Manifests and indexes put.
    pub manifests: usize,
}

/// Pushes the image record `local` (a reference, normalised) to `target` (default: the same
/// reference).
///
/// # Errors
/// [`Error::InvalidReference`]; [`Error::Store`] (`NotFound` for no such image or a missing
/// blob); [`Error::Unauthorized`]; [`Error::Status`]; [`Error::Transport`];
/// [`Error::Document`]; [`Error::Protocol`] when the registry reports another digest.
pub fn push(
    store: &ContentStore,
    local: &str,
    target: Option<&str>,
    opts: &PushOptions<'_>,
) -> Result<PushReport> {
    let local = parse_reference(local)?.to_string();
    let image = store.images().get(&local)?;
    let target_ref = parse_reference(target.unwrap_or(&local))?;
    let mut client = opts.registry.client(&target_ref, "pull,push")?;
    if let Some(from) = &opts.mount_from {
        // A token must also allow reading the repository blobs are mounted from.
        client.add_scope(format!("repository:{from}:pull"));
    }
    let mut report = PushReport {
        reference: target_ref.to_string(),
        ..PushReport::default()
    };
    let chunk = match opts.chunk_size {
        0 => 16 << 20,
        n => n,
    };
    let pusher = Pusher {
        store,
        client: &client,
        chunk,
        mount_from: opts.mount_from.as_deref(),
        progress: opts.progress,
    };
    pusher.push_tree(&image.target, &mut report, 0)?;
    let tag_or_digest = match (target_ref.digest(), target_ref.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_owned(),
        (None, None) => image.target.digest.to_string(),
    };
    pusher.put_manifest(&image.target, &tag_or_digest)?;
    report.manifests += 1;
    report.digest = Some(image.target.digest.clone());
    Ok(report)
}

struct Pusher<'a> {
    store: &'a ContentStore,
    client: &'a Client,
    chunk: u64,
    mount_from: Option<&'a str>,
    progress: &'a dyn Progress,
}

impl Pusher<'_> {
    /// Pushes everything `desc` references (not `desc` itself): blobs, then child manifests.
    fn push_tree(&self, desc: &Descriptor, report: &mut PushReport, depth: usize) -> Result<()> {
        if depth > 4 {
            return Err(Error::Protocol {
                url: desc.digest.to_string(),
                reason: "indexes nested too deep".into(),
            });
        }
        let bytes = self.store.read_all(&desc.digest, MAX_DOCUMENT_SIZE)?;
        let what = desc.digest.to_string();
        let doc = manifest::parse_document(&bytes, &what).map_err(|source| Error::Document {
            what: what.clone(),
            source,
        })?;
        match doc {
            Document::Manifest(m) => {
                let mut blobs = vec![Descriptor::try_from(m.value.config())?];
                for l in m.value.layers() {
                    blobs.push(Descriptor::try_from(l)?);
                }
                for b in &blobs {
                    self.push_blob(b, report)?;
                }
            }
            Document::Index(i) => {
                for child in i.value.manifests() {
                    let child = Descriptor::try_from(child)?;
                    if !matches!(
                        kind_of(&child.media_type),
                        MediaKind::Index | MediaKind::Manifest
                    ) {
                        self.push_blob(&child, report)?;
                        continue;
                    }
                    self.push_tree(&child, report, depth + 1)?;
                    self.put_manifest(&child, &child.digest.to_string())?;
                    report.manifests += 1;
                }
            }
        }
        Ok(())
    }

    fn blob_exists(&self, desc: &Descriptor) -> Result<bool> {
        let url = self.client.url(&format!("blobs/{}", desc.digest));
        let resp = self.client.send(Method::HEAD, &url, &[], None)?;
        match resp.status.as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(status_error("HEAD", resp)),
        }
    }

    fn push_blob(&self, desc: &Descriptor, report: &mut PushReport) -> Result<()> {
        let item = desc.digest.to_string();
        // Fail before talking to the registry when the blob is not ours to push.
        let info = self.store.info(&desc.digest)?;
        if info.size != desc.size {
            return Err(Error::Protocol {
                url: item,
                reason: format!(
                    "stored size {} but descriptor says {}",
                    info.size, desc.size
                ),
            });
        }
        if self.blob_exists(desc)? {
            report.existing += 1;
            report_done(self.progress, &item, "blob", desc.size);
            return Ok(());
        }
        let uploads = self.client.url("blobs/uploads/");
        let start_url = match self.mount_from {
            Some(from) if from != self.client.repo => format!(
                "{uploads}?mount={}&from={}",
                query_escape(&item),
                query_escape(from)
            ),
            _ => uploads,
        };
        let resp =
            self.client
                .send_expect(Method::POST, &start_url, &[], Some(&[]), &[201, 202])?;
        if resp.status.as_u16() == 201 {
            report.mounted += 1;
            report_done(self.progress, &item, "blob", desc.size);
            return Ok(());
        }
        let mut location = self.location(&resp)?;
        let mut reader = self.store.reader(&desc.digest)?;
        let sep = |loc: &str| if loc.contains('?') { '&' } else { '?' };
        if desc.size <= self.chunk {
            let mut body = Vec::with_capacity(desc.size as usize);
            (&mut reader)
                .take(desc.size)
                .read_to_end(&mut body)
                .map_err(|e| Error::io("read", self.store.blob_path(&desc.digest), e))?;
            let url = format!("{location}{}digest={}", sep(&location), query_escape(&item));
            self.client.send_expect(
                Method::PUT,
                &url,
                &[("content-type", "application/octet-stream")],
                Some(&body),
                &[201],
            )?;
        } else {
            let mut offset = 0u64;
            let mut buf = vec![0u8; self.chunk as usize];
            while offset < desc.size {
                let want = (desc.size - offset).min(self.chunk) as usize;
                reader
                    .read_exact(&mut buf[..want])
                    .map_err(|e| Error::io("read", self.store.blob_path(&desc.digest), e))?;
                let range = format!("{offset}-{}", offset + want as u64 - 1);
                let resp = self.client.send_expect(
                    Method::PATCH,
                    &location,
                    &[
                        ("content-type", "application/octet-stream"),
                        ("content-range", &range),
                    ],
                    Some(&buf[..want]),
                    &[202],
                )?;
                location = self.location(&resp)?;
                offset += want as u64;
                self.progress.on_progress(&ProgressEvent {
                    item: &item,
                    kind: "blob",
                    done: offset,
                    total: Some(desc.size),
                    finished: false,
                });
            }
            let url = format!("{location}{}digest={}", sep(&location), query_escape(&item));
            self.client
                .send_expect(Method::PUT, &url, &[], Some(&[]), &[201])?;
            report.chunked += 1;
        }
        report.uploaded += 1;
        report_done(self.progress, &item, "blob", desc.size);
        Ok(())
    }

    fn location(&self, resp: &super::client::Response) -> Result<String> {
        let loc = resp.header("location").ok_or_else(|| Error::Protocol {
            url: resp.url.clone(),
            reason: "upload answer without Location".into(),
        })?;
        self.client.absolute(loc)
    }

    /// Puts the manifest or index `desc` under `reference` (a tag or its digest).
    fn put_manifest(&self, desc: &Descriptor, reference: &str) -> Result<()> {
        let bytes = self.store.read_all(&desc.digest, MAX_DOCUMENT_SIZE)?;
        let url = self.client.url(&format!("manifests/{reference}"));
        let resp = self.client.send_expect(
            Method::PUT,
            &url,
            &[("content-type", desc.media_type.as_str())],
            Some(&bytes),
            &[201, 200],
        )?;
        if let Some(d) = resp.header("docker-content-digest")
            && d != desc.digest.to_string()
        {
            return Err(Error::Protocol {
                url,
                reason: format!(
                    "registry stored the manifest as {d}, expected {}",
                    desc.digest
                ),
            });
        }
        report_done(
            self.progress,
            &desc.digest.to_string(),
            "manifest",
            desc.size,
        );
        Ok(())
    }
}
