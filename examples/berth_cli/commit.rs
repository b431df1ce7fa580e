//! `berth commit` as every front end does it (the CLI in-process, berthd's `Images.Commit`):
//! a container's changes become a new image.
//!
//! The diff of the container's active snapshot is written as a new layer blob (protected by a
//! GC-root label until the image references it), the base image's config gains the layer's
//! diffID and a history entry, and a new manifest pointing at both is stored and named.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use berth::image::diff::DiffOptions;
use berth::image::metadata::{Descriptor, Image};
use berth::image::unpack::{self, LABEL_UNCOMPRESSED};
use berth::oci::{Compression, Digest, MAX_DOCUMENT_SIZE, Reference};
use berth::snapshot::LABEL_GC_ROOT;
use serde_json::{Value, json};

use super::records::{self, ContainerRecord};

/// The layer compression named `name`: `gzip`, `zstd` or `none`.
///
/// # Errors
/// Any other name.
pub fn parse_compression(name: &str) -> Result<Compression> {
    Ok(match name {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        "none" => Compression::None,
        other => bail!("unknown compression {other:?} (gzip, zstd or none)"),
    })
}

/// RFC 3339 UTC time of `secs` since the epoch.
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn put_document(store: &berth::image::content::ContentStore, bytes: &[u8]) -> Result<Digest> {
    let digest = Digest::sha256(bytes);
    store.ingest(
        &format!("commit-{digest}"),
        bytes,
        &digest,
        Some(bytes.len() as u64),
        &BTreeMap::new(),
        &mut |_, _| {},
    )?;
    Ok(digest)
}

/// How [`commit`] makes the image (`docker commit`'s options).
#[derive(Debug, Clone)]
pub struct CommitOptions<'a> {
    /// The new layer's compression.
    pub compression: Compression,
    /// The history entry's comment (`-m`).
    pub message: Option<&'a str>,
    /// The image's author (`-a`), also in the history entry.
    pub author: Option<&'a str>,
    /// Freeze a running container while its changes are read, so the layer is one moment's
    /// state (docker's default); it is thawed as soon as the diff is written.
    pub pause: bool,
    /// Dockerfile instructions applied to the new image's config (`-c`, see
    /// [`super::changes`]).
    pub changes: &'a [super::changes::Change],
}

impl Default for CommitOptions<'_> {
    fn default() -> Self {
        CommitOptions {
            compression: Compression::Gzip,
            message: None,
            author: None,
            pause: true,
            changes: &[],
        }
    }
}

/// A container frozen by [`commit`], thawed on drop.
struct Paused<'a> {
    runtime: berth::runtime::Runtime,
    id: &'a str,
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.runtime.resume(self.id) {
            eprintln!(
                "berth: resuming container {} after the commit: {e}",
                self.id
            );
        }
    }
}

/// Freezes the container of `record` if it runs (a container paused by someone else, or not
/// running, is left as it is).
fn pause_if_running(record: &ContainerRecord) -> Result<Option<Paused<'_>>> {
    let running = berth::runtime::read_state(&record.runtime_root, &record.id)
        .is_ok_and(|st| st.status == berth::runtime::Status::Running);
    if !running {
        return Ok(None);
    }
    let runtime = berth::runtime::Runtime::new(&record.runtime_root)?;
    runtime
        .pause(&record.id)
        .with_context(|| format!("pausing container {} for the commit", record.id))?;
    Ok(Some(Paused {
        runtime,
        id: &record.id,
    }))
}

/// Makes the image `reference` from the container of `record`: its changes (the diff of its
/// active snapshot against the image's top chain) become a layer on top of its image's
/// layers; the config gains the diffID, a history entry (with the message and author), the
/// author and the `changes`; a new manifest (with the base image's platform) is recorded as `reference`,
/// replacing an image of that name. The container may be running (frozen during the diff
/// with `opts.pause`); callers that can remove it concurrently serialise the two.
///
/// # Errors
/// An invalid reference; the container's image gone (NotFound); the runtime's pause, the
/// diff's, the store's and the snapshotter's errors (their kinds in the chain).
pub fn commit(
    root: &Path,
    record: &ContainerRecord,
    reference: &str,
    opts: &CommitOptions<'_>,
) -> Result<Image> {
    let name = Reference::parse(reference)
        .with_context(|| format!("image reference {reference:?}"))?
        .to_string();
    let store = super::open_store(root)?;
    let sn = super::open_snapshotter(root, &record.snapshotter)?;
    let base = store
        .images()
        .get(&record.image)
        .with_context(|| format!("the container's image {}", record.image))?;
    let resolved = unpack::resolve(&store, &base.target, None)?;
    let now = records::now_secs();
    // Protect the new blob from a concurrent content GC until the image references it.
    let labels = BTreeMap::from([(LABEL_GC_ROOT.to_owned(), now.to_string())]);
    let diff_opts = DiffOptions {
        compression: opts.compression,
        ..DiffOptions::default()
    };
    let paused = if opts.pause {
        pause_if_running(record)?
    } else {
        None
    };
    let layer = unpack::diff_snapshot(
        &store,
        sn.as_ref(),
        record.snapshot_key(),
        &diff_opts,
        &labels,
    )
    .with_context(|| format!("diff of container {}", record.id))?;
    drop(paused);
    let info = store.info(&layer.digest)?;
    let diff_id = info
        .labels
        .get(LABEL_UNCOMPRESSED)
        .cloned()
        .context("the new layer has no diffID label")?;

    let mut config: Value =
        serde_json::from_slice(&store.read_all(&resolved.config, MAX_DOCUMENT_SIZE)?)?;
    let created = rfc3339(now);
    config["created"] = json!(created);
    match config["rootfs"]["diff_ids"].as_array_mut() {
        Some(ids) => ids.push(json!(diff_id)),
        None => bail!("the image config has no rootfs.diff_ids"),
    }
    let mut entry = json!({
        "created": created,
        "created_by": format!("berth commit {} ({})", record.id, record.command.join(" ")),
    });
    if let Some(author) = opts.author {
        config["author"] = json!(author);
        entry["author"] = json!(author);
    }
    if let Some(message) = opts.message {
        entry["comment"] = json!(message);
    }
    super::changes::apply_all(&mut config, opts.changes)?;
    match config["history"].as_array_mut() {
        Some(h) => h.push(entry),
        None => config["history"] = json!([entry]),
    }
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = put_document(&store, &config_bytes)?;

    let mut manifest: Value =
        serde_json::from_slice(&store.read_all(&resolved.manifest, MAX_DOCUMENT_SIZE)?)?;
    manifest["config"]["digest"] = json!(config_digest.to_string());
    manifest["config"]["size"] = json!(config_bytes.len());
    match manifest["layers"].as_array_mut() {
        Some(l) => l.push(json!({
            "mediaType": layer.media_type,
            "digest": layer.digest.to_string(),
            "size": layer.size,
        })),
        None => bail!("the image manifest has no layers"),
    }
    let media_type = manifest["mediaType"]
        .as_str()
        .unwrap_or(berth::oci::media_type::OCI_MANIFEST)
        .to_owned();
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = put_document(&store, &manifest_bytes)?;
    let mut target = Descriptor::new(media_type, manifest_digest, manifest_bytes.len() as u64);
    target.platform = base.target.platform.clone();
    let image = store.images().put(Image::new(name, target))?;
    // The image references the layer now: drop the temporary GC root.
    let mut unlabelled = info.clone();
    unlabelled.labels.remove(LABEL_GC_ROOT);
    store.update(&unlabelled, &[&format!("labels.{LABEL_GC_ROOT}")])?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn compressions() {
        assert!(matches!(
            parse_compression("gzip").unwrap(),
            Compression::Gzip
        ));
        assert!(matches!(
            parse_compression("zstd").unwrap(),
            Compression::Zstd
        ));
        assert!(matches!(
            parse_compression("none").unwrap(),
            Compression::None
        ));
        assert!(parse_compression("lz4").is_err());
    }
}
