//! Push: an image record's blobs and manifests from the store to a registry (see the module
//! docs of [`super`]).

use std::io::{Read, Seek, SeekFrom};

use berth_oci::manifest::{self, Document};
use berth_oci::media_type::{MediaKind, kind_of};
use berth_oci::{Digest, MAX_DOCUMENT_SIZE};
use ureq::http::Method;

use super::client::{Client, query_escape, status_error};
use super::error::{Error, Result};
use super::retry::Backoff;
use super::{RegistryOptions, parse_reference};
use crate::content::{BlobReader, ContentStore};
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
    /// Chunked uploads that went on from the offset the registry reported after a failure.
    pub resumed: usize,
    /// Uploads started again from byte 0 after a failure (the registry had lost the session,
    /// or a monolithic `PUT` failed).
    pub restarted: usize,
}

/// The separator before a query parameter appended to `url`.
fn sep(url: &str) -> char {
    if url.contains('?') { '&' } else { '?' }
}

/// The bytes received according to an upload status `Range: 0-LAST` (`LAST + 1`); `None` for
/// `0-0` (zero or one byte: ambiguous) and anything malformed.
fn parse_upload_range(v: &str) -> Option<u64> {
    let v = v.trim();
    let v = v.strip_prefix("bytes=").unwrap_or(v);
    let (start, last) = v.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    let last: u64 = last.trim().parse().ok()?;
    if last == 0 {
        return None;
    }
    last.checked_add(1)
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
    // The first endpoint that may push (the upstream unless a `hosts.toml` says otherwise).
    let endpoints = super::hosts::endpoints(&opts.registry, target_ref.domain())?;
    let ep = endpoints
        .iter()
        .find(|e| e.capabilities.push)
        .ok_or_else(|| Error::HostsConfig {
            path: opts
                .registry
                .hosts_dir
                .clone()
                .unwrap_or_default()
                .join(target_ref.domain())
                .join("hosts.toml"),
            reason: "no endpoint has the \"push\" capability".into(),
        })?;
    let mut client = opts.registry.client_at(&target_ref, ep, "pull,push")?;
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
        let mut backoff = self.client.backoff();
        let Some(mut location) = self.start_upload(&mut backoff, desc, report)? else {
            return Ok(());
        };
        let mut reader = self.store.reader(&desc.digest)?;
        if desc.size <= self.chunk {
            self.client.retrying(&mut backoff, &item, |b| {
                let r = self.put_whole(&mut reader, desc, &location);
                match &r {
                    Err(e) if e.is_transient() => {
                        // The PUT may have been committed before the answer was lost; else
                        // the registry may hold part of the body: start a new upload.
                        if self.blob_exists(desc).unwrap_or(false) {
                            return Ok(());
                        }
                        location = self.fresh_upload(b)?;
                        report.restarted += 1;
                    }
                    _ => {}
                }
                r
            })?;
        } else {
            self.upload_chunks(&mut backoff, &mut reader, desc, location, report)?;
            report.chunked += 1;
        }
        report.uploaded += 1;
        report_done(self.progress, &item, "blob", desc.size);
        Ok(())
    }

    /// Starts an upload session (`POST uploads/`, with `mount`/`from` when asked for). `None`
    /// when the registry mounted the blob instead (counted in `report`).
    fn start_upload(
        &self,
        backoff: &mut Backoff,
        desc: &Descriptor,
        report: &mut PushReport,
    ) -> Result<Option<String>> {
        let item = desc.digest.to_string();
        let start_url = match self.mount_from {
            Some(from) if from != self.client.repo => self
                .client
                .url_with_query("blobs/uploads/", &[("mount", &item), ("from", from)]),
            _ => self.client.url("blobs/uploads/"),
        };
        let resp = self.client.send_expect_with(
            backoff,
            Method::POST,
            &start_url,
            &[],
            Some(&[]),
            &[201, 202],
        )?;
        if resp.status.as_u16() == 201 {
            report.mounted += 1;
            report_done(self.progress, &item, "blob", desc.size);
            return Ok(None);
        }
        self.location(&resp).map(Some)
    }

    /// A new upload session (no mount): its location.
    fn fresh_upload(&self, backoff: &mut Backoff) -> Result<String> {
        let resp = self.client.send_expect_with(
            backoff,
            Method::POST,
            &self.client.url("blobs/uploads/"),
            &[],
            Some(&[]),
            &[202],
        )?;
        self.location(&resp)
    }

    /// One monolithic `PUT ?digest=` with the whole blob (sent once: a failure is handled by
    /// the caller).
    fn put_whole(&self, reader: &mut BlobReader, desc: &Descriptor, location: &str) -> Result<()> {
        let item = desc.digest.to_string();
        reader
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("seek", self.store.blob_path(&desc.digest), e))?;
        let mut body = Vec::with_capacity(usize::try_from(desc.size).unwrap_or(0));
        reader
            .take(desc.size)
            .read_to_end(&mut body)
            .map_err(|e| Error::io("read", self.store.blob_path(&desc.digest), e))?;
        let url = format!("{location}{}digest={}", sep(location), query_escape(&item));
        self.client.send_expect(
            Method::PUT,
            &url,
            &[("content-type", "application/octet-stream")],
            Some(&body),
            &[201],
        )?;
        Ok(())
    }

    /// `PATCH` chunks from the start, then `PUT ?digest=`. After a transient failure the
    /// registry is asked where the upload stands (`GET` on the upload URL, its `Range: 0-LAST`)
    /// and the upload goes on from there; a registry that lost or cancelled the session (it
    /// answers 404, or 400 as distribution does when a cut `PATCH` left it at an offset its
    /// signed state does not know) gets a new upload from byte 0.
    fn upload_chunks(
        &self,
        backoff: &mut Backoff,
        reader: &mut BlobReader,
        desc: &Descriptor,
        mut location: String,
        report: &mut PushReport,
    ) -> Result<()> {
        let item = desc.digest.to_string();
        let blob_path = || self.store.blob_path(&desc.digest);
        let mut offset = 0u64;
        let mut buf = vec![0u8; usize::try_from(self.chunk).unwrap_or(16 << 20)];
        while offset < desc.size {
            let want = (desc.size - offset).min(self.chunk) as usize;
            reader
                .seek(SeekFrom::Start(offset))
                .map_err(|e| Error::io("seek", blob_path(), e))?;
            reader
                .read_exact(&mut buf[..want])
                .map_err(|e| Error::io("read", blob_path(), e))?;
            let range = format!("{offset}-{}", offset + want as u64 - 1);
            let sent = self.client.send_expect_with(
                backoff,
                Method::PATCH,
                &location,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", &range),
                ],
                Some(&buf[..want]),
                &[202],
            );
            let err = match sent.and_then(|resp| self.location(&resp)) {
                Ok(next) => {
                    location = next;
                    offset += want as u64;
                    self.progress.on_progress(&ProgressEvent {
                        item: &item,
                        kind: "blob",
                        done: offset,
                        total: Some(desc.size),
                        finished: false,
                    });
                    continue;
                }
                Err(e) => e,
            };
            if !err.is_transient() {
                return Err(err);
            }
            let Some(wait) = backoff.next_delay(err.retry_after()) else {
                return Err(err);
            };
            tracing::debug!(%item, offset, error = %err, ?wait, "chunk upload failed; asking the registry where it stands");
            std::thread::sleep(wait);
            match self.upload_status(backoff, &location, offset + want as u64)? {
                Some((next_location, received)) => {
                    location = next_location;
                    offset = received;
                    report.resumed += 1;
                }
                None => {
                    location = self.fresh_upload(backoff)?;
                    offset = 0;
                    report.restarted += 1;
                }
            }
        }
        let url = format!("{location}{}digest={}", sep(&location), query_escape(&item));
        match self
            .client
            .send_expect_with(backoff, Method::PUT, &url, &[], Some(&[]), &[201])
        {
            Ok(_) => Ok(()),
            // A commit whose answer was lost: the repeated PUT finds no session, but the blob
            // is there.
            Err(e) if self.blob_exists(desc).unwrap_or(false) => {
                tracing::debug!(%item, error = %e, "upload already committed");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Where the upload at `location` stands: its new location and the bytes received, or
    /// `None` when the registry no longer has a usable session (404, 400, an ambiguous
    /// `Range: 0-0`). `sent_through` bounds a believable answer.
    fn upload_status(
        &self,
        backoff: &mut Backoff,
        location: &str,
        sent_through: u64,
    ) -> Result<Option<(String, u64)>> {
        let resp = self
            .client
            .send_with(backoff, Method::GET, location, &[], None)?;
        match resp.status.as_u16() {
            204 | 200 => {}
            400 | 404 | 416 => {
                tracing::debug!(
                    location,
                    status = resp.status.as_u16(),
                    "upload session gone"
                );
                return Ok(None);
            }
            _ => return Err(status_error("GET", resp)),
        }
        let received = match resp.header("range").map(parse_upload_range) {
            Some(Some(n)) => n,
            // "0-0" cannot tell 0 bytes from 1: start again rather than guess.
            Some(None) => return Ok(None),
            None => {
                return Err(Error::Protocol {
                    url: location.to_owned(),
                    reason: "upload status without a Range header".into(),
                });
            }
        };
        if received > sent_through {
            return Err(Error::Protocol {
                url: location.to_owned(),
                reason: format!(
                    "the registry reports {received} bytes received, only {sent_through} were sent"
                ),
            });
        }
        let next = match resp.header("location") {
            Some(_) => self.location(&resp)?,
            None => location.to_owned(),
        };
        Ok(Some((next, received)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ranges() {
        assert_eq!(parse_upload_range("0-1023"), Some(1024));
        assert_eq!(parse_upload_range("bytes=0-9"), Some(10));
        assert_eq!(parse_upload_range("0-0"), None);
        assert_eq!(parse_upload_range("5-9"), None);
        assert_eq!(parse_upload_range("junk"), None);
        assert_eq!(parse_upload_range("0-18446744073709551615"), None);
        assert_eq!(sep("http://h/x?a=1"), '&');
        assert_eq!(sep("http://h/x"), '?');
    }
}
